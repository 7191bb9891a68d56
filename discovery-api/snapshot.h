/*
 * The in-memory relay list that GET requests are answered from. A snapshot
 * is the list's JSON bytes already wrapped in a libmicrohttpd response with
 * its headers, so a GET only queues it: no Redis, no allocation. Refreshing
 * builds a new snapshot aside and swaps it in under a short mutex; the old
 * response is released, and libmicrohttpd's own reference count keeps it
 * alive for connections still sending it.
 *
 * Refreshes may race (the background refresher and a POST that refreshes
 * at once). Each takes a ticket before reading Redis and a snapshot is
 * installed only when its ticket is newer than the installed one, so a
 * slower, older read never replaces a newer list.
 */
#ifndef POS_DISCOVERY_SNAPSHOT_H
#define POS_DISCOVERY_SNAPSHOT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* A list older than this (or whose last refresh failed) is served as stale. */
#define POS_SNAPSHOT_STALE_MS 2000

typedef struct pos_snapshot {
    pthread_mutex_t lock;
    struct MHD_Response *response; /* NULL until the first successful refresh */
    const char *body;              /* owned by |response| */
    size_t len;
    size_t count;
    uint64_t installed_ticket;
    uint64_t next_ticket;
    uint64_t refreshed_ms; /* monotonic time of the last successful refresh */
    int redis_ok;          /* did the last refresh succeed? */
    char reason[256];      /* why not, when redis_ok is 0 */
} pos_snapshot;

/* Facts about the current snapshot, for /healthz and /metrics. */
typedef struct pos_snapshot_state {
    int loaded;
    int redis_ok;
    size_t count;
    double age_s; /* since the last successful refresh; 0 when never loaded */
    char reason[256];
} pos_snapshot_state;

/* pos_snapshot_init: an empty store (nothing loaded yet). Returns 0 or -1. */
int pos_snapshot_init(pos_snapshot *s);

/* pos_snapshot_free releases the current response. */
void pos_snapshot_free(pos_snapshot *s);

/* pos_snapshot_ticket is taken before reading the list from Redis. */
uint64_t pos_snapshot_ticket(pos_snapshot *s);

/*
 * pos_snapshot_install takes ownership of |body| (malloc'ed, |len| bytes,
 * |count| entries) read under |ticket|, and makes it current unless a newer
 * one already is. Returns 0, or -1 when out of memory (|body| is freed).
 */
int pos_snapshot_install(pos_snapshot *s, uint64_t ticket, char *body, size_t len, size_t count);

/* pos_snapshot_failed records that a refresh failed and why (no secret in |reason|). */
void pos_snapshot_failed(pos_snapshot *s, const char *reason);

/* pos_snapshot_state reads the facts above. */
void pos_snapshot_get_state(pos_snapshot *s, pos_snapshot_state *st);

/*
 * pos_snapshot_queue answers a GET on |conn| with the current list: the
 * pre-built response, or when stale a copy with an X-Pos-Stale header
 * giving its age in seconds. Returns the status sent (200), 503 when no
 * list was ever loaded (the caller answers then), or -1 when
 * libmicrohttpd refused.
 */
int pos_snapshot_queue(pos_snapshot *s, struct MHD_Connection *conn);

#endif
