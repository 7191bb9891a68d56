/*
 * The pos-discovery server: everything one running instance holds, passed
 * to the HTTP handlers as their closure (no global state). It owns
 *   - the snapshot GETs are answered from, and the background thread that
 *     refreshes it from Redis every POS_SERVER_REFRESH_MS;
 *   - the Redis connection for writes (POST, DELETE), used under a mutex by
 *     the writer thread (writes.c), which refreshes the snapshot right
 *     after a write so the next GET sees it; HTTP threads never wait on it;
 *   - the connection guard (guard.c): request deadline and connection slots;
 *   - the p2p secret (wiped on stop) and the metrics;
 *   - the libmicrohttpd daemon (http.c).
 */
#ifndef POS_DISCOVERY_SERVER_H
#define POS_DISCOVERY_SERVER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>

#include "entry.h"
#include "metrics.h"
#include "options.h"
#include "snapshot.h"
#include "store.h"
#include "guard.h"
#include "writes.h"

#define POS_SERVER_REFRESH_MS 250
/* A POST or DELETE gets this long, from its last byte, for its Redis work. */
#define POS_SERVER_WRITE_TIMEOUT_MS 1000

typedef struct pos_server {
    const pos_discovery_options *opt;
    char *secret; /* owned; wiped by pos_server_stop */
    size_t secret_len;
    pos_snapshot snapshot;
    pos_metrics metrics;

    pthread_mutex_t write_lock; /* guards |writer| */
    pos_store writer;
    pos_store reader; /* the refresher thread's own connection */

    pthread_t refresher;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    int stopping;

    pos_writes writes; /* the writer thread POSTs and DELETEs are handed to */
    pos_guard guard;   /* request deadline, per-client and total connection limits */
    struct MHD_Daemon *daemon;
    char *tls_cert_pem; /* PEM text while HTTPS runs; the key is wiped on stop */
    char *tls_key_pem;
} pos_server;

/*
 * pos_server_start reads the first snapshot (a Redis that is down only
 * logs a warning), starts the refresher and the HTTP daemon. It takes
 * ownership of |secret| (from pos_secret_read_file or a copy of the
 * environment) in every case. Returns 0, or -1 with a sentence in |err|;
 * then nothing is left running.
 */
int pos_server_start(pos_server *s, const pos_discovery_options *o, char *secret, char *err,
                     size_t errlen);

/* pos_server_stop stops the daemon and the refresher and frees everything. */
void pos_server_stop(pos_server *s);

/*
 * pos_server_authorized says whether the Authorization header value |v|
 * (|len| bytes, NULL when absent) is "Bearer <secret>"; the comparison takes
 * the same time wherever the values differ.
 */
int pos_server_authorized(const pos_server *s, const char *v, size_t len);

/*
 * pos_server_register stores |e| under the TTL and refreshes the snapshot,
 * giving up at |deadline_ms| (pos_now_ms). It blocks on Redis: only the
 * writer thread calls it. Returns 0, or -1 with a sentence in |err| when
 * Redis failed or did not answer in time.
 */
int pos_server_register(pos_server *s, const pos_entry *e, uint64_t deadline_ms, char *err,
                        size_t errlen);

/* pos_server_remove deletes relay |id| and refreshes the snapshot; same rules. */
int pos_server_remove(pos_server *s, const char *id, uint64_t deadline_ms, char *err,
                      size_t errlen);

#endif
