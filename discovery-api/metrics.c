/* Request and Redis counters and their Prometheus text form (see metrics.h). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>

static const unsigned statuses[POS_METRICS_STATUSES] = {200, 204, 400, 401, 404, 405,
                                                        413, 500, 503, 0,   0};
static const char *const route_names[POS_ROUTE_COUNT] = {"/api/p2p/relays", "/api/p2p/relays/{id}",
                                                         "/healthz", "/metrics", "other"};
static const char *const method_names[POS_METHOD_COUNT] = {"GET", "POST", "DELETE", "other"};

enum { STATUS_OTHER = POS_METRICS_STATUSES - 1 };

void pos_metrics_init(pos_metrics *m)
{
    for (int r = 0; r < POS_ROUTE_COUNT; r++)
        for (int k = 0; k < POS_METHOD_COUNT; k++)
            for (int s = 0; s < POS_METRICS_STATUSES; s++)
                atomic_init(&m->requests[r][k][s], 0);
    atomic_init(&m->redis_errors, 0);
}

static int status_index(unsigned status)
{
    for (int i = 0; i < STATUS_OTHER; i++)
        if (statuses[i] == status)
            return i;
    return STATUS_OTHER;
}

void pos_metrics_request(pos_metrics *m, enum pos_route route, enum pos_method method,
                         unsigned status)
{
    atomic_fetch_add_explicit(&m->requests[route][method][status_index(status)], 1,
                              memory_order_relaxed);
}

const char *pos_metrics_route_name(enum pos_route route)
{
    return route_names[route];
}

const char *pos_metrics_method_name(enum pos_method method)
{
    return method_names[method];
}

void pos_metrics_redis_error(pos_metrics *m)
{
    atomic_fetch_add_explicit(&m->redis_errors, 1, memory_order_relaxed);
}

static void render_requests(pos_metrics *m, FILE *f)
{
    fputs("# HELP pos_discovery_requests_total HTTP requests answered, by route, method and "
          "status.\n# TYPE pos_discovery_requests_total counter\n",
          f);
    for (int r = 0; r < POS_ROUTE_COUNT; r++) {
        for (int k = 0; k < POS_METHOD_COUNT; k++) {
            for (int s = 0; s < POS_METRICS_STATUSES; s++) {
                unsigned long v = atomic_load_explicit(&m->requests[r][k][s], memory_order_relaxed);
                if (!v)
                    continue;
                char status[8];
                if (s == STATUS_OTHER)
                    snprintf(status, sizeof(status), "other");
                else
                    snprintf(status, sizeof(status), "%u", statuses[s]);
                fprintf(f,
                        "pos_discovery_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} "
                        "%lu\n",
                        route_names[r], method_names[k], status, v);
            }
        }
    }
}

static void render_state(pos_metrics *m, const pos_snapshot_state *st, FILE *f)
{
    fprintf(f,
            "# HELP pos_discovery_relays Relays in the list served to clients.\n"
            "# TYPE pos_discovery_relays gauge\n"
            "pos_discovery_relays %zu\n"
            "# HELP pos_discovery_redis_errors_total Redis operations that failed.\n"
            "# TYPE pos_discovery_redis_errors_total counter\n"
            "pos_discovery_redis_errors_total %lu\n"
            "# HELP pos_discovery_redis_up Whether the last refresh from Redis succeeded.\n"
            "# TYPE pos_discovery_redis_up gauge\n"
            "pos_discovery_redis_up %d\n"
            "# HELP pos_discovery_snapshot_age_seconds Time since the list was last read from "
            "Redis (-1 when never).\n"
            "# TYPE pos_discovery_snapshot_age_seconds gauge\n"
            "pos_discovery_snapshot_age_seconds %.3f\n",
            st->count, atomic_load_explicit(&m->redis_errors, memory_order_relaxed), st->redis_ok,
            st->loaded ? st->age_s : -1.0);
}

static void render_connections(const pos_metrics_connections *c, FILE *f)
{
    fprintf(f,
            "# HELP pos_discovery_connections Open HTTP connections.\n"
            "# TYPE pos_discovery_connections gauge\n"
            "pos_discovery_connections %u\n"
            "# HELP pos_discovery_connections_timed_out_total Connections closed because a "
            "whole request did not arrive within request_timeout.\n"
            "# TYPE pos_discovery_connections_timed_out_total counter\n"
            "pos_discovery_connections_timed_out_total %llu\n"
            "# HELP pos_discovery_connections_evicted_total Connections waiting for a request "
            "closed to keep room for new clients.\n"
            "# TYPE pos_discovery_connections_evicted_total counter\n"
            "pos_discovery_connections_evicted_total %llu\n"
            "# HELP pos_discovery_connections_refused_total Connections refused at accept "
            "(max_connections_per_client, max_connections).\n"
            "# TYPE pos_discovery_connections_refused_total counter\n"
            "pos_discovery_connections_refused_total %llu\n",
            c->open, c->timed_out, c->evicted, c->refused);
}

char *pos_metrics_render(pos_metrics *m, const pos_snapshot_state *st,
                         const pos_metrics_connections *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    render_requests(m, f);
    render_state(m, st, f);
    render_connections(c, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
