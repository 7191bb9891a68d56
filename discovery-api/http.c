/*
 * HTTP routes and the libmicrohttpd daemon (see http.h).
 *
 * libmicrohttpd calls the handler once with the headers, then once per
 * chunk of body, then once more when the body is complete. Everything the
 * service means to keep the connection for is answered on the last call:
 * libmicrohttpd 0.9.75 closes a connection whose response was queued on the
 * first one (only 404 and 405 are answered that early, and requests whose
 * framing is ambiguous, which are meant to be closed). POST and DELETE
 * decide their verdict on the first call (401, 413 by Content-Length, 400
 * for a bad id) but answer once the body has been read, since closing with
 * unread data can make the client see a reset instead of the status.
 * At most POS_ENTRY_MAX_BODY bytes are kept; the rest is counted and
 * dropped, and past POS_HTTP_DISCARD_MAX the connection is closed.
 *
 * A valid POST or DELETE then suspends its connection and hands its Redis
 * work to the writer thread (writes.h); the handler is called once more
 * when the writer resumes it, and answers. The last call of every request
 * tells the connection guard (guard.h) that the request has arrived, and
 * the end of each answer restarts its deadline.
 */
#include "http.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "log.h"
#include "secret.h"
#include "server.h"

#define RELAYS_PATH "/api/p2p/relays"

/* Marks a GET between its first call and its answer (never written). */
static const char get_marker;

typedef struct request {
    enum pos_route route;
    enum pos_method method;
    unsigned verdict; /* 0 while acceptable, else the status to answer with */
    char error[192];  /* the sentence for |verdict| */
    char id[POS_UUID_STRLEN];
    unsigned long long declared; /* Content-Length, when given */
    size_t len;                  /* body bytes received, kept or not */
    char *body;                  /* POST only: POS_ENTRY_MAX_BODY bytes */
    pos_write_job job;           /* the Redis work, handed to the writer thread */
} request;

/* One answer: where it goes and what it counts as in the metrics. */
typedef struct answer {
    pos_server *s;
    struct MHD_Connection *conn;
    enum pos_route route;
    enum pos_method method;
} answer;

static enum pos_route route_of(const char *url)
{
    if (!strcmp(url, RELAYS_PATH))
        return POS_ROUTE_RELAYS;
    if (!strncmp(url, RELAYS_PATH "/", sizeof(RELAYS_PATH)))
        return POS_ROUTE_RELAY_ID;
    if (!strcmp(url, "/healthz"))
        return POS_ROUTE_HEALTHZ;
    if (!strcmp(url, "/metrics"))
        return POS_ROUTE_METRICS;
    return POS_ROUTE_OTHER;
}

static enum pos_method method_of(const char *m)
{
    if (!strcmp(m, MHD_HTTP_METHOD_GET) || !strcmp(m, MHD_HTTP_METHOD_HEAD))
        return POS_METHOD_GET;
    if (!strcmp(m, MHD_HTTP_METHOD_POST))
        return POS_METHOD_POST;
    if (!strcmp(m, MHD_HTTP_METHOD_DELETE))
        return POS_METHOD_DELETE;
    return POS_METHOD_OTHER;
}

static void counted(const answer *a, unsigned status)
{
    pos_metrics_request(&a->s->metrics, a->route, a->method, status);
    pos_log_debug("%s %s -> %u", pos_metrics_method_name(a->method),
                  pos_metrics_route_name(a->route), status);
}

/* send_bytes answers with a copy of |body|, a type and one optional header. */
static enum MHD_Result send_bytes(const answer *a, unsigned status, const char *type,
                                  const char *body, size_t len, const char *hname,
                                  const char *hvalue)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    enum MHD_Result ok = MHD_YES;
    if (type)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES && hname)
        ok = MHD_add_response_header(r, hname, hvalue);
    if (ok == MHD_YES)
        ok = MHD_queue_response(a->conn, status, r);
    MHD_destroy_response(r);
    counted(a, ok == MHD_YES ? status : 500);
    return ok;
}

static enum MHD_Result send_json(const answer *a, unsigned status, json_t *doc, const char *hname,
                                 const char *hvalue)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return send_bytes(a, 500, "application/json", "{\"error\":\"out of memory\"}", 25, NULL,
                          NULL);
    enum MHD_Result rc =
        send_bytes(a, status, "application/json", text, strlen(text), hname, hvalue);
    free(text);
    return rc;
}

/* send_error answers {"error": msg}; |msg| is ASCII, so json_pack cannot refuse it. */
static enum MHD_Result send_error(const answer *a, unsigned status, const char *msg)
{
    if (status == MHD_HTTP_UNAUTHORIZED)
        return send_json(a, status, json_pack("{s:s}", "error", msg), "WWW-Authenticate", "Bearer");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        return send_json(a, status, json_pack("{s:s}", "error", msg), "Allow",
                         a->route == POS_ROUTE_RELAYS     ? "GET, HEAD, POST"
                         : a->route == POS_ROUTE_RELAY_ID ? "DELETE"
                                                          : "GET, HEAD");
    return send_json(a, status, json_pack("{s:s}", "error", msg), NULL, NULL);
}

static enum MHD_Result get_relays(const answer *a)
{
    int rc = pos_snapshot_queue(&a->s->snapshot, a->conn);
    if (rc == 200) {
        counted(a, 200);
        return MHD_YES;
    }
    if (rc < 0) {
        counted(a, 500);
        return MHD_NO;
    }
    pos_snapshot_state st;
    pos_snapshot_get_state(&a->s->snapshot, &st);
    char msg[400];
    snprintf(msg, sizeof(msg), "the relay list has not been loaded yet: %s", st.reason);
    return send_error(a, MHD_HTTP_SERVICE_UNAVAILABLE, msg);
}

static enum MHD_Result get_healthz(const answer *a)
{
    pos_snapshot_state st;
    char msg[400];
    pos_snapshot_get_state(&a->s->snapshot, &st);
    if (!st.loaded || !st.redis_ok)
        snprintf(msg, sizeof(msg), "unhealthy: %s\n", st.reason);
    else if (st.age_s * 1000 > POS_SNAPSHOT_STALE_MS)
        snprintf(msg, sizeof(msg),
                 "unhealthy: the relay list was last read from Redis %.1f s ago\n", st.age_s);
    else
        snprintf(msg, sizeof(msg), "ok\n");
    unsigned status = strcmp(msg, "ok\n") ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
    return send_bytes(a, status, "text/plain; charset=utf-8", msg, strlen(msg), NULL, NULL);
}

static enum MHD_Result get_metrics(const answer *a)
{
    pos_snapshot_state st;
    pos_snapshot_get_state(&a->s->snapshot, &st);
    pos_metrics_connections c;
    uint64_t timed_out, evicted, refused;
    pos_guard_counts(&a->s->guard, &c.open, &timed_out, &evicted, &refused);
    c.timed_out = timed_out;
    c.evicted = evicted;
    c.refused = refused;
    char *text = pos_metrics_render(&a->s->metrics, &st, &c);
    if (!text)
        return send_error(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result rc =
        send_bytes(a, MHD_HTTP_OK, "text/plain; version=0.0.4", text, strlen(text), NULL, NULL);
    free(text);
    return rc;
}

static enum MHD_Result answer_get(const answer *a)
{
    switch (a->route) {
    case POS_ROUTE_RELAYS:
        return get_relays(a);
    case POS_ROUTE_HEALTHZ:
        return get_healthz(a);
    case POS_ROUTE_METRICS:
        return get_metrics(a);
    default:
        return send_error(a, MHD_HTTP_METHOD_NOT_ALLOWED, "use DELETE on this path");
    }
}

static void set_verdict(request *rq, unsigned status, const char *msg)
{
    rq->verdict = status;
    snprintf(rq->error, sizeof(rq->error), "%s", msg);
}

/* judge_headers sets the verdict the headers alone decide. */
static void judge_headers(pos_server *s, struct MHD_Connection *conn, const char *url, request *rq)
{
    const char *auth = NULL, *clen;
    size_t auth_len = 0;
    MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                  sizeof(MHD_HTTP_HEADER_AUTHORIZATION) - 1, &auth, &auth_len);
    clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    rq->declared = clen ? strtoull(clen, NULL, 10) : 0;
    if (!pos_server_authorized(s, auth, auth_len)) {
        set_verdict(rq, MHD_HTTP_UNAUTHORIZED,
                    auth ? "wrong credentials: expected Authorization: Bearer <p2p secret>"
                         : "missing header Authorization: Bearer <p2p secret>");
    } else if (rq->declared > POS_ENTRY_MAX_BODY) {
        set_verdict(rq, MHD_HTTP_CONTENT_TOO_LARGE, "the body is larger than 16384 bytes");
    } else if (rq->method == POS_METHOD_DELETE) {
        const char *id = url + sizeof(RELAYS_PATH);
        if (pos_entry_id_parse(id, strlen(id), rq->id) != 0)
            set_verdict(rq, MHD_HTTP_BAD_REQUEST,
                        "the path must end with the relay id, a UUID: /api/p2p/relays/<uuid>");
    } else if (!(rq->body = malloc(POS_ENTRY_MAX_BODY))) {
        set_verdict(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory; try again later");
    }
}

/* Counts Content-Length headers and notes whether two of them differ. */
typedef struct length_headers {
    unsigned count;
    int differ;
    const char *first;
} length_headers;

static enum MHD_Result count_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    length_headers *lh = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0)
        return MHD_YES;
    if (lh->count++ == 0)
        lh->first = value ? value : "";
    else if (strcmp(lh->first, value ? value : "") != 0)
        lh->differ = 1;
    return MHD_YES;
}

/*
 * ambiguous_framing says why the request's body length is ambiguous
 * (Content-Length with Transfer-Encoding, or Content-Length values that
 * differ), or NULL. Such a request could hide a second one in its body
 * (request smuggling), so it is refused and the connection closed.
 */
static const char *ambiguous_framing(struct MHD_Connection *conn)
{
    length_headers lh = {0, 0, NULL};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_length, &lh);
    if (lh.count &&
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return "a request may not have both Content-Length and Transfer-Encoding";
    if (lh.differ)
        return "a request may not have Content-Length headers with different values";
    return NULL;
}

/* send_refusal answers 400 with Connection: close; libmicrohttpd then closes. */
static enum MHD_Result send_refusal(const answer *a, const char *msg)
{
    return send_json(a, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", msg),
                     MHD_HTTP_HEADER_CONNECTION, "close");
}

/* first_call answers what it can at once, else keeps a request for the body. */
static enum MHD_Result first_call(pos_server *s, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **con_cls)
{
    answer a = {s, conn, route_of(url), method_of(method)};

    const char *ambiguous = ambiguous_framing(conn);
    if (ambiguous)
        return send_refusal(&a, ambiguous);
    if (a.route == POS_ROUTE_OTHER)
        return send_error(&a, MHD_HTTP_NOT_FOUND,
                          "no such path; the relay list is at " RELAYS_PATH);
    if (a.method == POS_METHOD_GET) {
        /* Answered on the next call: a response queued on this first call
         * makes libmicrohttpd 0.9.75 close the connection (no keep-alive). */
        *con_cls = (void *)&get_marker;
        return MHD_YES;
    }
    int writes = (a.route == POS_ROUTE_RELAYS && a.method == POS_METHOD_POST) ||
                 (a.route == POS_ROUTE_RELAY_ID && a.method == POS_METHOD_DELETE);
    if (!writes)
        return send_error(&a, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed on this path");
    request *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return send_error(&a, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory; try again later");
    rq->route = a.route;
    rq->method = a.method;
    judge_headers(s, conn, url, rq);
    if (rq->declared > POS_HTTP_DISCARD_MAX) {
        /* Not worth reading: answer now (401 or 413); libmicrohttpd then closes. */
        enum MHD_Result rc = send_error(&a, rq->verdict, rq->error);
        free(rq->body);
        free(rq);
        return rc;
    }
    *con_cls = rq;
    return MHD_YES;
}

/* receive keeps body bytes while they fit; returns MHD_NO past the discard limit. */
static enum MHD_Result receive(request *rq, const char *data, size_t n)
{
    if (rq->len > POS_HTTP_DISCARD_MAX || n > POS_HTTP_DISCARD_MAX - rq->len)
        return MHD_NO;
    if (rq->body && !rq->verdict && n <= POS_ENTRY_MAX_BODY - rq->len)
        memcpy(rq->body + rq->len, data, n);
    else if (rq->body && !rq->verdict)
        set_verdict(rq, MHD_HTTP_CONTENT_TOO_LARGE, "the body is larger than 16384 bytes");
    rq->len += n;
    return MHD_YES;
}

/* submit hands the Redis work to the writer thread and suspends the connection. */
static enum MHD_Result submit(const answer *a, request *rq)
{
    rq->job.conn = a->conn;
    rq->job.remove = rq->method == POS_METHOD_DELETE;
    rq->job.deadline_ms = pos_now_ms() + POS_SERVER_WRITE_TIMEOUT_MS;
    if (!rq->job.remove)
        snprintf(rq->job.id, sizeof(rq->job.id), "%s", rq->job.entry.id);
    else
        snprintf(rq->job.id, sizeof(rq->job.id), "%s", rq->id);
    if (pos_writes_submit(&a->s->writes, &rq->job) != 0)
        return send_error(a, MHD_HTTP_SERVICE_UNAVAILABLE, "the service is stopping");
    return MHD_YES; /* answered by written() once the writer resumes the connection */
}

/* written answers a POST or DELETE whose Redis work the writer has done. */
static enum MHD_Result written(const answer *a, request *rq)
{
    const char *what = rq->job.remove ? "remove" : "register";
    if (rq->job.rc != 0) {
        pos_log_warn("cannot %s relay %s: %s", what, rq->job.id, rq->job.err);
        return send_error(a, MHD_HTTP_SERVICE_UNAVAILABLE, rq->job.err);
    }
    pos_log_debug("%s relay %s", rq->job.remove ? "removed" : "registered", rq->job.id);
    if (rq->job.remove)
        return send_bytes(a, MHD_HTTP_NO_CONTENT, NULL, "", 0, NULL, NULL);
    return send_json(a, MHD_HTTP_OK,
                     json_pack("{s:s,s:i}", "id", rq->job.id, "ttl",
                               (int)pos_entry_ttl_s(&rq->job.entry, a->s->opt->ttl_s,
                                                    a->s->opt->spacedrive_ttl_s)),
                     NULL, NULL);
}

static enum MHD_Result finish(pos_server *s, struct MHD_Connection *conn, request *rq)
{
    answer a = {s, conn, rq->route, rq->method};
    if (rq->job.queued) {
        if (!pos_writes_done(&s->writes, &rq->job))
            return MHD_NO; /* resumed without an outcome: cannot happen */
        return written(&a, rq);
    }
    if (rq->verdict)
        return send_error(&a, rq->verdict, rq->error);
    if (rq->method == POS_METHOD_POST) {
        char err[POS_ERR_LEN];
        int rc = pos_entry_parse(rq->body, rq->len, &rq->job.entry, err, sizeof(err));
        if (rc == POS_ENTRY_ERR_TOO_LARGE)
            return send_error(&a, MHD_HTTP_CONTENT_TOO_LARGE, err);
        if (rc != 0)
            return send_error(&a, MHD_HTTP_BAD_REQUEST, err);
    }
    return submit(&a, rq);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    pos_server *s = cls;
    request *rq = *con_cls;

    if (!rq)
        return first_call(s, conn, url, method, con_cls);
    if (!*upload_data_size)
        pos_guard_request_arrived(&s->guard, conn); /* the request deadline no longer applies */
    if (*con_cls == &get_marker) {
        if (*upload_data_size)
            return MHD_NO; /* a GET with a body: nonsense, close */
        answer a = {s, conn, route_of(url), POS_METHOD_GET};
        return answer_get(&a);
    }
    if (*upload_data_size) {
        enum MHD_Result rc = receive(rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc;
    }
    return finish(s, conn, rq);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    pos_server *s = cls;
    request *rq = *con_cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        pos_guard_answered(&s->guard, conn); /* keep-alive: the next request's deadline starts */
    if (!rq || *con_cls == &get_marker)
        return;
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    pos_log_warn("libmicrohttpd: %s", line);
}

/* read_pem reads a whole PEM file (at most 1 MiB) into a new string. */
static char *read_pem(const char *path, const char *what, char *err, size_t errlen)
{
    enum { PEM_MAX = 1 << 20 };
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    if (!f) {
        snprintf(err, errlen, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    text = malloc(PEM_MAX + 1);
    size_t n = text ? fread(text, 1, PEM_MAX + 1, f) : 0;
    int bad = !text || ferror(f) || n == 0 || n > PEM_MAX || memchr(text, '\0', n);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "the TLS %s %s is empty, unreadable or larger than 1 MiB", what,
                 path);
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}

static int load_tls(pos_server *s, char *err, size_t errlen)
{
    if (!s->opt->tls_cert[0])
        return 0;
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        snprintf(err, errlen, "this libmicrohttpd was built without TLS: HTTPS is unavailable");
        return -1;
    }
    s->tls_cert_pem = read_pem(s->opt->tls_cert, "certificate", err, errlen);
    if (s->tls_cert_pem)
        s->tls_key_pem = read_pem(s->opt->tls_key, "key", err, errlen);
    return s->tls_key_pem ? 0 : -1;
}

static void free_tls(pos_server *s)
{
    free(s->tls_cert_pem);
    pos_secret_free(s->tls_key_pem);
    s->tls_cert_pem = s->tls_key_pem = NULL;
}

/*
 * fit_open_files raises the open-file limit (up to the hard limit) so that
 * |want| connections fit; when they cannot, it returns how many do and
 * says so. A process that runs out of descriptors stops accepting, which
 * would lock every new client out instead of making room.
 */
static unsigned fit_open_files(unsigned want)
{
    const rlim_t spare = 64; /* Redis connections, listen socket, epoll, pipes, logs */
    const rlim_t need = (rlim_t)want + spare;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return want;
    struct rlimit raised = {need, rl.rlim_max};
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
        rl.rlim_cur = raised.rlim_cur;
    if (rl.rlim_cur >= need)
        return want;
    unsigned fit = rl.rlim_cur > spare + 16 ? (unsigned)(rl.rlim_cur - spare) : 16;
    pos_log_warn("max_connections %u needs %llu open files but this process may open only %llu: "
                 "serving at most %u connections (raise the limit, e.g. LimitNOFILE= in the "
                 "systemd unit or ulimit -n)",
                 want, (unsigned long long)need, (unsigned long long)rl.rlim_cur, fit);
    return fit;
}

static struct MHD_Daemon *start_daemon(pos_server *s, unsigned max_connections)
{
    const pos_discovery_options *o = s->opt;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (o->listen_addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD_USE_TURBO skips the TLS close_notify (gnutls_bye) when closing, so
     * HTTPS goes without it: a client must be able to tell the end of an
     * answer from a cut connection. */
    if (s->tls_cert_pem)
        flags |= MHD_USE_TLS;
    else
        flags |= MHD_USE_TURBO;
    /* The TLS options are last so that without TLS the list simply ends there. */
    return MHD_start_daemon(
        flags, 0, pos_guard_accept, &s->guard, handle, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        (void *)NULL, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&o->listen_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)POS_HTTP_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT, max_connections,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u, MHD_OPTION_NOTIFY_COMPLETED, completed, (void *)s,
        MHD_OPTION_NOTIFY_CONNECTION, pos_guard_notify, (void *)&s->guard,
        s->tls_cert_pem ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, s->tls_cert_pem,
        MHD_OPTION_HTTPS_MEM_KEY, s->tls_key_pem, MHD_OPTION_HTTPS_PRIORITIES,
        POS_HTTP_TLS_PRIORITIES, MHD_OPTION_END);
}

int pos_http_start(pos_server *s, char *err, size_t errlen)
{
    if (load_tls(s, err, errlen) != 0) {
        free_tls(s);
        return -1;
    }
    unsigned max_connections = fit_open_files(s->opt->max_connections);
    if (pos_guard_start(&s->guard, max_connections, s->opt->max_connections_per_client,
                        s->opt->request_timeout_s) != 0) {
        snprintf(err, errlen, "cannot start the connection guard: out of memory or threads");
        free_tls(s);
        return -1;
    }
    if (pos_writes_start(&s->writes, s) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        pos_guard_stop(&s->guard);
        free_tls(s);
        return -1;
    }
    s->daemon = start_daemon(s, max_connections);
    if (!s->daemon) {
        pos_writes_stop(&s->writes);
        pos_guard_stop(&s->guard);
        if (s->tls_cert_pem)
            snprintf(err, errlen,
                     "cannot serve HTTPS on %s: is it an address of this machine, free, and "
                     "are %s and %s a PEM certificate and its private key?",
                     s->opt->listen, s->opt->tls_cert, s->opt->tls_key);
        else
            snprintf(err, errlen, "cannot listen on %s: is it an address of this machine and free?",
                     s->opt->listen);
        free_tls(s);
        return -1;
    }
    char redis[600];
    pos_redis_target_format(&s->opt->redis, redis, sizeof(redis));
    pos_log_info("listening on %s://%s (Redis %s, prefix \"%s\", TTL %u s)",
                 s->tls_cert_pem ? "https" : "http", s->opt->listen, redis, s->opt->prefix,
                 s->opt->ttl_s);
    return 0;
}

void pos_http_stop(pos_server *s)
{
    /* The writer first: it answers what is queued and resumes those
     * connections, so none is left suspended when the daemon stops. */
    pos_writes_stop(&s->writes);
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    pos_guard_stop(&s->guard);
    free_tls(s);
}
