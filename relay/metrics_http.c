/* /healthz, /metrics and /circuits for the relay (see metrics_http.h). */
#include "metrics_http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

struct relay_http {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    int published;
    int redis_ok;
    relay_server_stats srv;
    relay_services_stats svc;
};

static const char *const refusal_names[] = {
    [RELAY_REFUSED_UNKNOWN_TOKEN - 0x100] = "unknown_token",
    [RELAY_REFUSED_REVOKED - 0x100] = "revoked",
    [RELAY_REFUSED_EXPIRED - 0x100] = "expired",
    [RELAY_REFUSED_RATE_LIMITED - 0x100] = "rate_limited",
    [RELAY_REFUSED_TOO_MANY_CONNS - 0x100] = "too_many_connections",
    [RELAY_REFUSED_UNAVAILABLE - 0x100] = "unavailable",
    [RELAY_REFUSED_BAD_REQUEST - 0x100] = "bad_request",
};

/* A bounded text buffer the render_* functions append to (truncated, never overrun). */
struct mout {
    char *out;
    size_t n, cap;
};

__attribute__((format(printf, 2, 3))) static void emit(struct mout *m, const char *fmt, ...)
{
    va_list ap;
    int w;
    if (m->cap == 0)
        return;
    va_start(ap, fmt);
    w = vsnprintf(m->out + m->n, m->cap - m->n, fmt, ap);
    va_end(ap);
    if (w > 0)
        m->n = m->n + (size_t)w < m->cap ? m->n + (size_t)w : m->cap - 1;
}

#define EMIT(...) emit(m, __VA_ARGS__)

/* Connections, handshakes, refusals, packets, Redis and registration. */
static void render_conns(struct mout *m, const struct relay_http *h)
{
    EMIT("# HELP pos_relay_connections Authenticated clients connected now.\n"
         "# TYPE pos_relay_connections gauge\npos_relay_connections %llu\n",
         (unsigned long long)h->srv.conns_active);
    EMIT("# HELP pos_relay_handshaking Connections not yet authenticated.\n"
         "# TYPE pos_relay_handshaking gauge\npos_relay_handshaking %llu\n",
         (unsigned long long)h->srv.conns_handshaking);
    EMIT("# TYPE pos_relay_handshakes_total counter\n"
         "pos_relay_handshakes_total{result=\"ok\"} %llu\n"
         "pos_relay_handshakes_total{result=\"failed\"} %llu\n",
         (unsigned long long)h->srv.handshakes_ok, (unsigned long long)h->srv.handshakes_failed);
    EMIT("# HELP pos_relay_handshakes_resumed_total Handshakes of returning clients that resumed "
         "with a session ticket (counted in result=\"ok\" too).\n"
         "# TYPE pos_relay_handshakes_resumed_total counter\npos_relay_handshakes_resumed_total "
         "%llu\n",
         (unsigned long long)h->srv.handshakes_resumed);
    EMIT("# TYPE pos_relay_auth_ok_total counter\npos_relay_auth_ok_total %llu\n",
         (unsigned long long)h->srv.auth_ok);
    EMIT("# HELP pos_relay_auth_failures_total Clients refused, by reason.\n"
         "# TYPE pos_relay_auth_failures_total counter\n");
    for (size_t i = 1; i < sizeof(refusal_names) / sizeof(refusal_names[0]); i++)
        if (refusal_names[i])
            EMIT("pos_relay_auth_failures_total{reason=\"%s\"} %llu\n", refusal_names[i],
                 (unsigned long long)h->srv.refused[i]);
    EMIT("# TYPE pos_relay_retries_total counter\npos_relay_retries_total %llu\n",
         (unsigned long long)h->srv.retries_sent);
    EMIT("# TYPE pos_relay_version_negotiations_total counter\n"
         "pos_relay_version_negotiations_total %llu\n",
         (unsigned long long)h->srv.version_negotiations);
    EMIT("# TYPE pos_relay_pending_per_addr_drops_total counter\n"
         "pos_relay_pending_per_addr_drops_total %llu\n",
         (unsigned long long)h->srv.pending_per_addr_drops);
    EMIT("# TYPE pos_relay_packets_total counter\n"
         "pos_relay_packets_total{dir=\"in\"} %llu\npos_relay_packets_total{dir=\"out\"} %llu\n"
         "pos_relay_packets_total{dir=\"dropped\"} %llu\n",
         (unsigned long long)h->srv.packets_in, (unsigned long long)h->srv.packets_out,
         (unsigned long long)h->srv.packets_dropped);
    EMIT("# HELP pos_relay_data_frames_dropped_total Frames of no circuit and no QUIC "
         "connection, dropped.\n"
         "# TYPE pos_relay_data_frames_dropped_total counter\n"
         "pos_relay_data_frames_dropped_total %llu\n",
         (unsigned long long)h->srv.data_frames_dropped);
    EMIT("# HELP pos_relay_heap_bytes Heap bytes in use (malloc).\n"
         "# TYPE pos_relay_heap_bytes gauge\npos_relay_heap_bytes %llu\n",
         /* read here, per scrape: mallinfo2 walks every free chunk of the heap, which
          * after thousands of freed connections costs milliseconds (not twice a second) */
         (unsigned long long)mallinfo2().uordblks);
    EMIT("# HELP pos_relay_heap_trims_total Times the heap of freed connections was given back "
         "to the system (after connections stayed down for 5 s).\n"
         "# TYPE pos_relay_heap_trims_total counter\npos_relay_heap_trims_total %llu\n",
         (unsigned long long)h->srv.heap_trims);
    EMIT("# TYPE pos_relay_redis_errors_total counter\npos_relay_redis_errors_total %llu\n",
         (unsigned long long)h->svc.redis_errors);
    EMIT("# TYPE pos_relay_redis_up gauge\npos_relay_redis_up %d\n", h->redis_ok ? 1 : 0);
    EMIT("# TYPE pos_relay_registrations_total counter\n"
         "pos_relay_registrations_total{result=\"ok\"} %llu\n"
         "pos_relay_registrations_total{result=\"failed\"} %llu\n",
         (unsigned long long)h->svc.registrations_ok,
         (unsigned long long)h->svc.registrations_failed);
}

static void render_circuits(struct mout *m, const struct relay_http *h)
{
    EMIT("# HELP pos_relay_circuits Circuits open now.\n"
         "# TYPE pos_relay_circuits gauge\npos_relay_circuits %llu\n"
         "# TYPE pos_relay_circuit_requests_pending gauge\n"
         "pos_relay_circuit_requests_pending %llu\n"
         "# TYPE pos_relay_circuit_requests_total counter\n"
         "pos_relay_circuit_requests_total %llu\n"
         "# TYPE pos_relay_circuits_opened_total counter\n"
         "pos_relay_circuits_opened_total %llu\n"
         "# TYPE pos_relay_circuits_closed_total counter\n"
         "pos_relay_circuits_closed_total %llu\n"
         "# TYPE pos_relay_circuit_redirects_total counter\n"
         "pos_relay_circuit_redirects_total %llu\n"
         "# TYPE pos_relay_circuit_errors_total counter\n"
         "pos_relay_circuit_errors_total %llu\n"
         "# HELP pos_relay_circuits_refused_limit_total CONNECTs refused by a circuit cap.\n"
         "# TYPE pos_relay_circuits_refused_limit_total counter\n"
         "pos_relay_circuits_refused_limit_total %llu\n",
         (unsigned long long)h->srv.circuits_open,
         (unsigned long long)h->srv.circuit_requests_pending,
         (unsigned long long)h->srv.circuit_requests, (unsigned long long)h->srv.circuits_opened,
         (unsigned long long)h->srv.circuits_closed, (unsigned long long)h->srv.circuit_redirects,
         (unsigned long long)h->srv.circuit_errors,
         (unsigned long long)h->srv.circuits_refused_limit);
}

/* The data plane (forwarder) and the token budgets behind it. */
static void render_forwarding(struct mout *m, const struct relay_http *h)
{
    const relay_forward_stats *f = &h->srv.fw;
    EMIT("# HELP pos_relay_forwarded_total Data frames forwarded (datagrams, bytes).\n"
         "# TYPE pos_relay_forwarded_total counter\n"
         "pos_relay_forwarded_total %llu\n"
         "# TYPE pos_relay_forwarded_bytes_total counter\n"
         "pos_relay_forwarded_bytes_total %llu\n"
         "# TYPE pos_relay_forward_send_failed_total counter\n"
         "pos_relay_forward_send_failed_total %llu\n"
         "# TYPE pos_relay_keepalives_total counter\npos_relay_keepalives_total %llu\n"
         "# TYPE pos_relay_quic_datagrams_total counter\n"
         "pos_relay_quic_datagrams_total %llu\n",
         (unsigned long long)f->forwarded, (unsigned long long)f->forwarded_bytes,
         (unsigned long long)h->srv.forward_send_failed, (unsigned long long)f->keepalives,
         (unsigned long long)f->quic);
    EMIT("# HELP pos_relay_frames_dropped_total Data frames dropped by the forwarder, by "
         "reason (quic_fallback: handed to the QUIC path, which drops what is no QUIC).\n"
         "# TYPE pos_relay_frames_dropped_total counter\n"
         "pos_relay_frames_dropped_total{reason=\"truncated\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"malformed\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"unknown_type\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"unexpected_type\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"unknown_circuit\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"wrong_source\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"budget\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"unroutable\"} %llu\n"
         "pos_relay_frames_dropped_total{reason=\"quic_fallback\"} %llu\n",
         (unsigned long long)f->drop_truncated, (unsigned long long)f->drop_malformed,
         (unsigned long long)f->drop_unknown_type, (unsigned long long)f->drop_unexpected_type,
         (unsigned long long)f->drop_unknown_circuit, (unsigned long long)f->drop_wrong_source,
         (unsigned long long)f->drop_budget, (unsigned long long)f->drop_unroutable,
         (unsigned long long)f->quic_fallback);
    EMIT("# HELP pos_relay_leases_total Bandwidth lease scripts answered, by result.\n"
         "# TYPE pos_relay_leases_total counter\n"
         "pos_relay_leases_total{result=\"granted\"} %llu\n"
         "pos_relay_leases_total{result=\"empty\"} %llu\n"
         "pos_relay_leases_total{result=\"failed\"} %llu\n"
         "# TYPE pos_relay_lease_bytes_total counter\npos_relay_lease_bytes_total %llu\n"
         "# TYPE pos_relay_usage_flushes_total counter\n"
         "pos_relay_usage_flushes_total{result=\"ok\"} %llu\n"
         "pos_relay_usage_flushes_total{result=\"failed\"} %llu\n",
         (unsigned long long)(h->svc.leases - h->svc.leases_empty),
         (unsigned long long)h->svc.leases_empty, (unsigned long long)h->svc.leases_failed,
         (unsigned long long)h->svc.lease_bytes, (unsigned long long)h->svc.usage_flushes,
         (unsigned long long)h->svc.usage_failures);
}

/* Hole punching coordinated by the broker, and what clients reported of it (PUNCH_REPORT). */
static void render_punch(struct mout *m, const struct relay_http *h)
{
    EMIT("# HELP pos_relay_punches_total Punch attempts coordinated (PUNCH_START sent to both "
         "sides of a circuit).\n"
         "# TYPE pos_relay_punches_total counter\npos_relay_punches_total %llu\n"
         "# HELP pos_relay_punch_requests_total PUNCH_REQUEST received, by result (ignored: "
         "sooner than punch_min_interval_ms, the peer on pos-relay/1, punching off, or a "
         "closed circuit).\n"
         "# TYPE pos_relay_punch_requests_total counter\n"
         "pos_relay_punch_requests_total{result=\"started\"} %llu\n"
         "pos_relay_punch_requests_total{result=\"ignored\"} %llu\n",
         (unsigned long long)h->srv.punches_started,
         (unsigned long long)(h->srv.punch_requests - h->srv.punch_requests_ignored),
         (unsigned long long)h->srv.punch_requests_ignored);
    EMIT("# HELP pos_relay_punch_reports_total PUNCH_REPORT received, by outcome (ignored: for "
         "a circuit not the sender's).\n"
         "# TYPE pos_relay_punch_reports_total counter\n"
         "pos_relay_punch_reports_total{outcome=\"direct\"} %llu\n"
         "pos_relay_punch_reports_total{outcome=\"failed\"} %llu\n"
         "pos_relay_punch_reports_total{outcome=\"fell_back\"} %llu\n"
         "pos_relay_punch_reports_total{outcome=\"ignored\"} %llu\n",
         (unsigned long long)h->srv.punch_reports[0], (unsigned long long)h->srv.punch_reports[1],
         (unsigned long long)h->srv.punch_reports[2],
         (unsigned long long)h->srv.punch_reports_ignored);
    EMIT("# HELP pos_relay_punch_time_to_direct_seconds Time to direct that clients reported "
         "(outcome direct).\n"
         "# TYPE pos_relay_punch_time_to_direct_seconds summary\n"
         "pos_relay_punch_time_to_direct_seconds_sum %.3f\n"
         "pos_relay_punch_time_to_direct_seconds_count %llu\n",
         (double)h->srv.punch_direct_ms_sum / 1000.0, (unsigned long long)h->srv.punch_reports[0]);
    EMIT("# HELP pos_relay_punch_moves_total A client's control connection moved to a new "
         "address (NAT rebinding, migration): punch attempts it started on its circuits, and "
         "circuits left alone (an attempt began less than punch_min_interval_ms before).\n"
         "# TYPE pos_relay_punch_moves_total counter\n"
         "pos_relay_punch_moves_total{result=\"started\"} %llu\n"
         "pos_relay_punch_moves_total{result=\"ignored\"} %llu\n",
         (unsigned long long)h->srv.punches_on_move,
         (unsigned long long)h->srv.punch_moves_ignored);
}

/* Per worker (relay/workers.h): how the steering spreads the load. */
static const struct worker_metric {
    const char *name, *type;
    size_t off; /* of a uint64_t in relay_worker_stats */
} worker_metrics[] = {
    {"pos_relay_worker_packets_total", "counter", offsetof(relay_worker_stats, packets_in)},
    {"pos_relay_worker_connections", "gauge", offsetof(relay_worker_stats, conns)},
    {"pos_relay_worker_circuit_sides", "gauge", offsetof(relay_worker_stats, circuit_sides)},
    {"pos_relay_worker_accepted_total", "counter", offsetof(relay_worker_stats, accepted)},
    {"pos_relay_worker_forwarded_total", "counter", offsetof(relay_worker_stats, forwarded)},
};

/* Parked clients (docs/protocol.md "Parking"). */
static void render_park(struct mout *m, const struct relay_http *h)
{
    static const char *const ends[] = {"home", "expired", "revoked", "shutdown", "bye"};
    const relay_server_stats *s = &h->srv;
    EMIT("# HELP pos_relay_parked Parked clients: records kept instead of QUIC connections.\n"
         "# TYPE pos_relay_parked gauge\npos_relay_parked %llu\n",
         (unsigned long long)s->parked);
    EMIT("# HELP pos_relay_awake Authenticated home connections live (not parked).\n"
         "# TYPE pos_relay_awake gauge\npos_relay_awake %llu\n",
         (unsigned long long)s->awake);
    EMIT("# TYPE pos_relay_parks_total counter\npos_relay_parks_total %llu\n"
         "# TYPE pos_relay_park_refused_total counter\npos_relay_park_refused_total %llu\n",
         (unsigned long long)s->parks, (unsigned long long)s->parks_refused);
    EMIT("# HELP pos_relay_parked_ended_total Parked records ended, by reason.\n"
         "# TYPE pos_relay_parked_ended_total counter\n");
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        EMIT("pos_relay_parked_ended_total{reason=\"%s\"} %llu\n", ends[i],
             (unsigned long long)s->park_ended[i]);
    EMIT("# HELP pos_relay_park_keepalives_total Parked keep-alives: taken, or dropped "
         "silently (malformed, unknown record, too soon, bad mac, replayed).\n"
         "# TYPE pos_relay_park_keepalives_total counter\n"
         "pos_relay_park_keepalives_total{result=\"ok\"} %llu\n"
         "pos_relay_park_keepalives_total{result=\"dropped\"} %llu\n",
         (unsigned long long)s->park_keepalives_ok, (unsigned long long)s->park_keepalives_drop);
    EMIT("# TYPE pos_relay_park_roams_total counter\npos_relay_park_roams_total %llu\n",
         (unsigned long long)s->park_roams);
    EMIT("# HELP pos_relay_park_acks_total PARK_ACKs sent (to the keep-alives that asked).\n"
         "# TYPE pos_relay_park_acks_total counter\npos_relay_park_acks_total %llu\n",
         (unsigned long long)s->park_acks);
    EMIT("# HELP pos_relay_wakes_sent_total WAKE datagrams sent to parked clients.\n"
         "# TYPE pos_relay_wakes_sent_total counter\npos_relay_wakes_sent_total %llu\n",
         (unsigned long long)s->wakes_sent);
    EMIT("# HELP pos_relay_wake_seconds From the first WAKE to the woken client's HELLO.\n"
         "# TYPE pos_relay_wake_seconds summary\npos_relay_wake_seconds_sum %.3f\n"
         "pos_relay_wake_seconds_count %llu\n",
         (double)s->wake_ms_sum / 1000.0, (unsigned long long)s->wake_count);
}

static void render_workers(struct mout *m, const struct relay_http *h)
{
    unsigned n = h->srv.n_workers ? h->srv.n_workers : 1;
    EMIT("# HELP pos_relay_workers Threads serving the UDP port (config workers).\n"
         "# TYPE pos_relay_workers gauge\npos_relay_workers %u\n",
         n);
    for (size_t f = 0; f < sizeof(worker_metrics) / sizeof(worker_metrics[0]); f++) {
        const struct worker_metric *wm = &worker_metrics[f];
        EMIT("# TYPE %s %s\n", wm->name, wm->type);
        for (unsigned k = 0; k < n && k < RELAY_MAX_WORKERS; k++) {
            uint64_t v;
            memcpy(&v, (const char *)&h->srv.worker[k] + wm->off, sizeof(v));
            EMIT("%s{worker=\"%u\"} %llu\n", wm->name, k, (unsigned long long)v);
        }
    }
}

static size_t render_metrics(const struct relay_http *h, char *out, size_t cap)
{
    struct mout mo = {out, 0, cap};
    if (cap > 0)
        out[0] = 0;
    render_conns(&mo, h);
    render_circuits(&mo, h);
    render_forwarding(&mo, h);
    render_punch(&mo, h);
    render_park(&mo, h);
    render_workers(&mo, h);
    return mo.n;
}

#undef EMIT

/*
 * render_circuits_json: the forwarder's recent circuits (forward.h) as JSON, most
 * recently active first. Only numbers: nothing from the network is quoted.
 */
static size_t render_circuits_json(const struct relay_http *h, char *out, size_t cap)
{
    const relay_forward_circuit *rc = h->srv.fw.recent;
    unsigned order[RELAY_FORWARD_RECENT], n_order = 0;
    size_t n = 0;
    for (unsigned i = 0; i < RELAY_FORWARD_RECENT; i++) {
        if (rc[i].id[0] == 0)
            continue;
        unsigned j = n_order++;
        for (; j > 0 && rc[order[j - 1]].last_batch < rc[i].last_batch; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    int w = snprintf(out, cap, "{\"max\":%u,\"circuits\":[", (unsigned)RELAY_FORWARD_RECENT);
    n = w > 0 ? (size_t)w : 0;
    for (unsigned k = 0; k < n_order && n < cap; k++) {
        const relay_forward_circuit *c = &rc[order[k]];
        w = snprintf(out + n, cap - n,
                     "%s{\"ids\":[%lu,%lu],\"packets\":[%llu,%llu],\"bytes\":[%llu,%llu]}",
                     k ? "," : "", (unsigned long)c->id[0], (unsigned long)c->id[1],
                     (unsigned long long)c->packets[0], (unsigned long long)c->packets[1],
                     (unsigned long long)c->bytes[0], (unsigned long long)c->bytes[1]);
        if (w > 0)
            n += (size_t)w;
    }
    if (n < cap) {
        w = snprintf(out + n, cap - n, "]}\n");
        if (w > 0)
            n += (size_t)w;
    }
    return n < cap ? n : cap - 1;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **ctx)
{
    struct relay_http *h = cls;
    char body[32768]; /* 64 workers add about 13 KB */
    size_t n;
    unsigned status = 200;
    (void)version;
    (void)upload;
    (void)ctx;

    if (*upload_len)
        return MHD_NO;
    if (strcmp(method, "GET") != 0)
        return reply(conn, 405, "text/plain", "method not allowed\n", 19);
    pthread_mutex_lock(&h->mu);
    if (!strcmp(url, "/healthz")) {
        if (!h->published) {
            status = 503;
            n = (size_t)snprintf(body, sizeof(body), "starting\n");
        } else if (!h->redis_ok) {
            status = 503;
            n = (size_t)snprintf(body, sizeof(body),
                                 "redis unreachable: new clients are refused\n");
        } else {
            n = (size_t)snprintf(body, sizeof(body), "ok\n");
        }
        pthread_mutex_unlock(&h->mu);
        return reply(conn, status, "text/plain", body, n);
    }
    if (!strcmp(url, "/metrics")) {
        n = render_metrics(h, body, sizeof(body));
        pthread_mutex_unlock(&h->mu);
        return reply(conn, 200, "text/plain; version=0.0.4", body, n);
    }
    if (!strcmp(url, "/circuits")) {
        n = render_circuits_json(h, body, sizeof(body));
        pthread_mutex_unlock(&h->mu);
        return reply(conn, 200, "application/json", body, n);
    }
    pthread_mutex_unlock(&h->mu);
    return reply(conn, 404, "text/plain", "not found\n", 10);
}

relay_http *relay_http_new(const char *listen, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    struct relay_http *h;

    if (pos_addr_parse(listen, strlen(listen), 0, &ss) != 0) {
        snprintf(err, errlen, "http_listen \"%s\" is not ip:port", listen);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                                (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                            0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)16, MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot listen for HTTP on %s (address in use?)", listen);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void relay_http_publish(relay_http *h, const relay_server_stats *srv,
                        const relay_services_stats *svc, int redis_ok)
{
    pthread_mutex_lock(&h->mu);
    h->srv = *srv;
    h->svc = *svc;
    h->redis_ok = redis_ok;
    h->published = 1;
    pthread_mutex_unlock(&h->mu);
}

void relay_http_del(relay_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
