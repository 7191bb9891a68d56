/*
 * The connection guard of pos-discovery: what keeps slow or greedy clients
 * from taking the HTTP service down. libmicrohttpd's own limits count per
 * address and its timeout is an idle timeout (every byte resets it), so:
 *
 *   - request deadline: a connection must deliver a whole request (request
 *     line, headers and body) within |request_timeout| of its accept or of
 *     the end of its previous answer; otherwise a sweep thread shuts its
 *     socket down and libmicrohttpd closes it. A request that has arrived
 *     (being answered, or waiting for the writer thread) is not cut.
 *   - per-client limit: at most |max_per_client| connections from one
 *     client, which is one IPv4 address or one IPv6 /64 (the smallest
 *     network a site is given; IPv4-mapped IPv6 counts as IPv4, and each
 *     link-local address, all being in fe80::/64, as a client). More are
 *     refused at accept.
 *   - reserve: when the open connections reach |max_total| minus a reserve
 *     (1/16 of it), each new connection first closes the connection that
 *     has waited longest for its request (idle keep-alive or incomplete),
 *     or, when none is waiting, the oldest being answered (a slow reader),
 *     so that new clients are still served while others hold slots.
 *
 * The callbacks are libmicrohttpd's accept policy, connection notifier and
 * two calls from the access handler; every one takes the guard's mutex for
 * a few list operations. A connection's socket is only shut down (never
 * closed) here, under the mutex, between its STARTED and CLOSED
 * notifications, so the descriptor is always the connection's own.
 */
#ifndef POS_DISCOVERY_GUARD_H
#define POS_DISCOVERY_GUARD_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct pos_guard_client pos_guard_client;
typedef struct pos_guard_conn pos_guard_conn;

typedef struct pos_guard {
    pthread_mutex_t lock;
    unsigned max_total, max_per_client, reserve;
    uint64_t timeout_ms;
    unsigned total;                  /* connections between STARTED and CLOSED */
    unsigned closing;                /* of those, shut down here and not yet closed */
    pos_guard_conn *oldest, *newest; /* ordered by the start of their wait */
    pos_guard_client **buckets;      /* clients with connections, by key */
    size_t nbuckets;                 /* a power of two */
    /* Counted for /metrics. */
    uint64_t timed_out, evicted, refused;

    pthread_t sweeper;
    pthread_cond_t cond;
    int stopping;
    int running;
} pos_guard;

/*
 * pos_guard_start prepares |g| and starts its sweep thread. Returns 0 or -1
 * (out of memory or threads).
 */
int pos_guard_start(pos_guard *g, unsigned max_total, unsigned max_per_client,
                    unsigned request_timeout_s);

/* pos_guard_stop stops the sweep thread; call after the daemon has stopped. */
void pos_guard_stop(pos_guard *g);

/* libmicrohttpd's accept policy (MHD_start_daemon's apc); |cls| is the guard. */
enum MHD_Result pos_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);

/* MHD_OPTION_NOTIFY_CONNECTION; |cls| is the guard. */
void pos_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);

/* pos_guard_request_arrived: the whole request is in; its deadline no longer applies. */
void pos_guard_request_arrived(pos_guard *g, struct MHD_Connection *conn);

/* pos_guard_answered: the answer is sent (keep-alive); the next request's deadline starts. */
void pos_guard_answered(pos_guard *g, struct MHD_Connection *conn);

/* pos_guard_counts reads the counters and the open connections. */
void pos_guard_counts(pos_guard *g, unsigned *open, uint64_t *timed_out, uint64_t *evicted,
                      uint64_t *refused);

#endif
