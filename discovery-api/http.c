/*
 * HTTP routes and the libmicrohttpd daemon (see http.h).
 *
 * libmicrohttpd calls the handler once with the headers, then once per
 * chunk of body, then once more when the body is complete. Everything the
 * service means to keep the connection for is answered on the last call:
 * libmicrohttpd 0.9.75 closes a connection whose response was queued on the
 * first one (only 404 and 405 are answered that early). POST and DELETE
 * decide their verdict on the first call (401, 413 by Content-Length, 400
 * for a bad id) but answer once the body has been read, since closing with
 * unread data can make the client see a reset instead of the status.
 * At most POS_ENTRY_MAX_BODY bytes are kept; the rest is counted and
 * dropped, and past POS_HTTP_DISCARD_MAX the connection is closed.
 */
#include "http.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char *text = pos_metrics_render(&a->s->metrics, &st);
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

/* first_call answers what it can at once, else keeps a request for the body. */
static enum MHD_Result first_call(pos_server *s, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **con_cls)
{
    answer a = {s, conn, route_of(url), method_of(method)};

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

static enum MHD_Result finish_register(const answer *a, request *rq)
{
    pos_entry e;
    char err[POS_ERR_LEN];
    int rc = pos_entry_parse(rq->body, rq->len, &e, err, sizeof(err));
    if (rc == POS_ENTRY_ERR_TOO_LARGE)
        return send_error(a, MHD_HTTP_CONTENT_TOO_LARGE, err);
    if (rc != 0)
        return send_error(a, MHD_HTTP_BAD_REQUEST, err);
    if (pos_server_register(a->s, &e, err, sizeof(err)) != 0) {
        pos_log_warn("cannot register relay %s: %s", e.id, err);
        return send_error(a, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    }
    pos_log_debug("registered relay %s", e.id);
    return send_json(
        a, MHD_HTTP_OK,
        json_pack("{s:s,s:i}", "id", e.id, "ttl",
                  (int)pos_entry_ttl_s(&e, a->s->opt->ttl_s, a->s->opt->spacedrive_ttl_s)),
        NULL, NULL);
}

static enum MHD_Result finish_remove(const answer *a, request *rq)
{
    char err[POS_ERR_LEN];
    if (pos_server_remove(a->s, rq->id, err, sizeof(err)) != 0) {
        pos_log_warn("cannot remove relay %s: %s", rq->id, err);
        return send_error(a, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    }
    pos_log_debug("removed relay %s", rq->id);
    return send_bytes(a, MHD_HTTP_NO_CONTENT, NULL, "", 0, NULL, NULL);
}

static enum MHD_Result finish(pos_server *s, struct MHD_Connection *conn, request *rq)
{
    answer a = {s, conn, rq->route, rq->method};
    if (rq->verdict)
        return send_error(&a, rq->verdict, rq->error);
    if (rq->method == POS_METHOD_POST)
        return finish_register(&a, rq);
    return finish_remove(&a, rq);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    pos_server *s = cls;
    request *rq = *con_cls;

    if (!rq)
        return first_call(s, conn, url, method, con_cls);
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
    request *rq = *con_cls;
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

static struct MHD_Daemon *start_daemon(pos_server *s)
{
    const pos_discovery_options *o = s->opt;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    if (o->listen_addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (s->tls_cert_pem)
        flags |= MHD_USE_TLS;
    /* The TLS options are last so that without TLS the list simply ends there. */
    return MHD_start_daemon(
        flags, 0, NULL, NULL, handle, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)NULL,
        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&o->listen_addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)o->threads, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)POS_HTTP_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)POS_HTTP_CONNECTION_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)POS_HTTP_PER_IP_LIMIT,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u, MHD_OPTION_NOTIFY_COMPLETED, completed, (void *)NULL,
        s->tls_cert_pem ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, s->tls_cert_pem,
        MHD_OPTION_HTTPS_MEM_KEY, s->tls_key_pem, MHD_OPTION_END);
}

int pos_http_start(pos_server *s, char *err, size_t errlen)
{
    if (load_tls(s, err, errlen) != 0) {
        free_tls(s);
        return -1;
    }
    s->daemon = start_daemon(s);
    if (!s->daemon) {
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
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    free_tls(s);
}
