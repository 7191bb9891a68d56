/*
 * Counters for /metrics, updated from every libmicrohttpd thread with
 * relaxed atomics (no lock on the request path), and their Prometheus text
 * form. Requests are counted by route, method and status; the route is a
 * template ("/api/p2p/relays/{id}"), never the raw path, so a client cannot
 * grow the label set.
 */
#ifndef POS_DISCOVERY_METRICS_H
#define POS_DISCOVERY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "snapshot.h"

enum pos_route {
    POS_ROUTE_RELAYS,   /* /api/p2p/relays */
    POS_ROUTE_RELAY_ID, /* /api/p2p/relays/{id} */
    POS_ROUTE_HEALTHZ,
    POS_ROUTE_METRICS,
    POS_ROUTE_OTHER,
    POS_ROUTE_COUNT
};

enum pos_method {
    POS_METHOD_GET,
    POS_METHOD_POST,
    POS_METHOD_DELETE,
    POS_METHOD_OTHER,
    POS_METHOD_COUNT
};

#define POS_METRICS_STATUSES 11 /* the statuses this service sends, and "other" */

typedef struct pos_metrics {
    atomic_ulong requests[POS_ROUTE_COUNT][POS_METHOD_COUNT][POS_METRICS_STATUSES];
    atomic_ulong redis_errors;
} pos_metrics;

/* pos_metrics_init zeroes every counter. */
void pos_metrics_init(pos_metrics *m);

/* pos_metrics_request counts one answered request. */
void pos_metrics_request(pos_metrics *m, enum pos_route route, enum pos_method method,
                         unsigned status);

/* pos_metrics_route_name and pos_metrics_method_name: the label values (static strings). */
const char *pos_metrics_route_name(enum pos_route route);
const char *pos_metrics_method_name(enum pos_method method);

/* pos_metrics_redis_error counts one failed Redis operation. */
void pos_metrics_redis_error(pos_metrics *m);

/*
 * pos_metrics_render writes the Prometheus text exposition of |m| and of the
 * snapshot state |st| into a new string (caller frees). Returns NULL when out
 * of memory.
 */
/* The connection guard's figures (guard.h), rendered with the rest. */
typedef struct pos_metrics_connections {
    unsigned open;
    unsigned long long timed_out, evicted, refused;
} pos_metrics_connections;

char *pos_metrics_render(pos_metrics *m, const pos_snapshot_state *st,
                         const pos_metrics_connections *c);

#endif
