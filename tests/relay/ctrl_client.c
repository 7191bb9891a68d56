/*
 * ctrl_client: a bare control-protocol client of the relay (QUIC with
 * ngtcp2, TLS, common/ctrl.c: no client library), for the integration test
 * of hole punching (test_relay_punch.py). It speaks pos-relay/2 (offering
 * pos-relay/2 then pos-relay/1, as the library did before pos-relay/3: the
 * relay must keep serving such clients; --v1-first: the other order) or, with --v1, only
 * pos-relay/1, and prints what the relay sends as JSON lines on stdout:
 *
 *   {"event":"welcome","version":V,"peer_id":..,"observed":..}
 *   {"event":"incoming","peer_id":..,"observed":..}   (answered with ACCEPT)
 *   {"event":"circuit","circuit":ID,"peer_id":..,"observed":..}
 *   {"event":"punch_start","circuit":..,"peer_circuit":..,"role":..,
 *    "attempt":..,"start_in_ms":..,"key_fp":..,"candidates":[..]}
 *   {"event":"error"|"closed"|"relay_closed", ...}
 *
 * key_fp is a BLAKE2b fingerprint of the punch key (the key itself is never
 * printed), so a test can see that both sides got the same one.
 *
 *   ctrl_client --to IP:PORT --token T [--v1 | --v1-first] [--local ADDR]...
 *               [--connect PEERID] [--request-after MS] [--report]
 *               [--seconds S]
 *
 * --local: an address for HELLO (repeatable). --connect: CONNECT to that
 * peer (else it waits and accepts). --request-after: once a circuit is
 * open, send PUNCH_REQUEST that many ms later (with the --local addresses).
 * --report: answer each PUNCH_START with PUNCH_REPORT(direct, 42 ms). Runs
 * --seconds (default 5) then closes; exit 0, 1 when the relay closed it or
 * the handshake failed, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "ctrl.h"
#include "identity.h"
#include "quic_common.h"
#include "quic_glue.h"
#include "tls.h"

#define OUT_CAP 65536 /* bytes one stream may ever send: plenty for a test */

static pos_tls_creds *creds;

struct ostream {
    int64_t id;
    uint8_t buf[OUT_CAP];
    size_t len, sent; /* kept whole: ngtcp2 may retransmit from it */
};

static struct cl {
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    uint8_t creating;
    int fd, version, handshaken, closed, welcomed;
    struct sockaddr_storage to, local;
    struct ostream s0, req;
    pos_ctrl_reader rd;
    const char *token, *connect;
    pos_ctrl_addrs locals;
    long request_after_ms, seconds;
    int report, v1_first;
    uint32_t circuit;
    int64_t circuit_at_ms;
    int requested;
    char peer_id[POS_PEER_ID_STRLEN];
} c;

static int64_t now_ms(void)
{
    return (int64_t)(pos_quic_now() / 1000000);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    (void)ref;
    return c.qc;
}

/* queue: |m| at this connection's version on stream |s|, opening it when needed. */
static void queue(struct ostream *s, const pos_ctrl_msg *m)
{
    int n;
    if (s->id < 0 && ngtcp2_conn_open_bidi_stream(c.qc, &s->id, NULL) != 0) {
        fprintf(stderr, "ctrl_client: cannot open a stream\n");
        return;
    }
    n = pos_ctrl_encode_version(m, c.version, s->buf + s->len, OUT_CAP - s->len);
    if (n < 0) {
        fprintf(stderr, "ctrl_client: cannot encode %s: %d\n", pos_ctrl_type_name(m->type), n);
        return;
    }
    s->len += (size_t)n;
}

static void print_addrs(const pos_ctrl_addrs *a)
{
    printf("[");
    for (int i = 0; i < a->n; i++)
        printf("%s\"%s\"", i ? "," : "", a->a[i]);
    printf("]");
}

static void on_punch_start(const pos_ctrl_msg *m)
{
    uint8_t fp[8];
    crypto_generichash(fp, sizeof(fp), m->punch_key, sizeof(m->punch_key), NULL, 0);
    printf("{\"event\":\"punch_start\",\"circuit\":%u,\"peer_circuit\":%u,\"role\":%u,"
           "\"attempt\":%u,\"start_in_ms\":%u,\"key_fp\":\"",
           m->circuit_id, m->peer_circuit_id, m->role, m->attempt, m->start_in_ms);
    for (size_t i = 0; i < sizeof(fp); i++)
        printf("%02x", fp[i]);
    printf("\",\"candidates\":");
    print_addrs(&m->addrs);
    printf("}\n");
    if (c.report) {
        pos_ctrl_msg r;
        memset(&r, 0, sizeof(r));
        r.type = POS_CTRL_PUNCH_REPORT;
        r.circuit_id = m->circuit_id;
        r.attempt = m->attempt;
        r.outcome = POS_CTRL_PUNCH_DIRECT;
        r.ms_to_direct = 42;
        queue(&c.req, &r);
    }
}

static void on_msg(pos_ctrl_msg *m)
{
    pos_ctrl_msg a;
    switch (m->type) {
    case POS_CTRL_WELCOME:
        c.welcomed = 1;
        printf("{\"event\":\"welcome\",\"version\":%d,\"peer_id\":\"%s\",\"observed\":\"%s\"}\n",
               c.version, c.peer_id, m->observed);
        if (c.connect) {
            memset(&a, 0, sizeof(a));
            a.type = POS_CTRL_CONNECT;
            a.req_id = 1;
            snprintf(a.peer_id, sizeof(a.peer_id), "%s", c.connect);
            queue(&c.req, &a);
        }
        break;
    case POS_CTRL_INCOMING:
        printf("{\"event\":\"incoming\",\"peer_id\":\"%s\",\"observed\":\"%s\"}\n", m->peer_id,
               m->observed);
        memset(&a, 0, sizeof(a));
        a.type = POS_CTRL_ACCEPT;
        a.req_id = m->req_id;
        queue(&c.req, &a);
        break;
    case POS_CTRL_CIRCUIT:
        printf("{\"event\":\"circuit\",\"circuit\":%u,\"peer_id\":\"%s\",\"observed\":\"%s\"}\n",
               m->circuit_id, m->peer_id, m->observed);
        c.circuit = m->circuit_id;
        c.circuit_at_ms = now_ms();
        break;
    case POS_CTRL_PUNCH_START:
        on_punch_start(m);
        break;
    case POS_CTRL_ERROR:
        printf("{\"event\":\"error\",\"code\":%u,\"text\":\"%s\"}\n", m->code, m->text);
        break;
    default:
        printf("{\"event\":\"%s\"}\n", pos_ctrl_type_name(m->type));
        break;
    }
    fflush(stdout);
}

static int cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    pos_ctrl_msg m;
    int rv;
    (void)flags;
    (void)offset;
    (void)user_data;
    (void)stream_user_data;
    ngtcp2_conn_extend_max_stream_offset(qc, stream_id, datalen);
    ngtcp2_conn_extend_max_offset(qc, datalen);
    if (stream_id != c.s0.id)
        return 0;
    if (pos_ctrl_reader_feed(&c.rd, data, datalen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    while ((rv = pos_ctrl_reader_next_version(&c.rd, c.version, &m)) == 1)
        on_msg(&m);
    if (rv < 0) {
        printf("{\"event\":\"bad_message\"}\n");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    const uint8_t *alpn;
    size_t len;
    pos_ctrl_msg m;
    (void)qc;
    (void)user_data;
    if (pos_tls_alpn_selected(c.tls, &alpn, &len) != 0 ||
        (c.version = pos_ctrl_version_of_alpn(alpn, len)) == 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    c.handshaken = 1;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    m.token_len = strlen(c.token);
    memcpy(m.token, c.token, m.token_len);
    m.addrs = c.locals;
    queue(&c.s0, &m);
    pos_ctrl_msg_wipe(&m);
    return 0;
}

static void write_out(void)
{
    uint8_t buf[1500];
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n, used;

    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        struct ostream *s = c.s0.sent < c.s0.len ? &c.s0 : c.req.sent < c.req.len ? &c.req : NULL;
        ngtcp2_vec v = {s ? s->buf + s->sent : NULL, s ? s->len - s->sent : 0};
        used = -1;
        n = ngtcp2_conn_writev_stream(c.qc, &ps.path, &pi, buf, sizeof(buf), &used,
                                      s == &c.s0 ? NGTCP2_WRITE_STREAM_FLAG_FIN
                                                 : NGTCP2_WRITE_STREAM_FLAG_NONE,
                                      s ? s->id : -1, s ? &v : NULL, s ? 1 : 0, pos_quic_now());
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR)
            break;
        if (n < 0) {
            fprintf(stderr, "ctrl_client: write: %s\n", ngtcp2_strerror((int)n));
            c.closed = 1;
            return;
        }
        if (s && used > 0)
            s->sent += (size_t)used;
        if (n == 0)
            break;
        sendto(c.fd, buf, (size_t)n, 0, (struct sockaddr *)&c.to, pos_addr_len(&c.to));
    }
}

static int setup(void)
{
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;
    socklen_t len = sizeof(c.local);
    pos_identity id;
    static const char *const v1_only[] = {POS_CTRL_ALPN_V1};
    static const char *const v1_first[] = {POS_CTRL_ALPN_V1, POS_CTRL_ALPN_V2};
    /* a client of pos-relay/2 (before /3): the relay must keep serving it as before */
    static const char *const v2_client[] = {POS_CTRL_ALPN_V2, POS_CTRL_ALPN_V1};
    int v1 = c.version == POS_CTRL_V1;
    const char *const *offer = v1 ? v1_only : c.v1_first ? v1_first : v2_client;

    c.fd = socket(c.to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&c.local, 0, sizeof(c.local));
    c.local.ss_family = c.to.ss_family;
    if (c.fd < 0 || bind(c.fd, (struct sockaddr *)&c.local, pos_addr_len(&c.local)) != 0 ||
        getsockname(c.fd, (struct sockaddr *)&c.local, &len) != 0)
        return -1;
    pos_identity_generate(&id);
    pos_peer_id_format(id.public_key, c.peer_id);
    if (pos_tls_creds_new(&creds, &id) != 0)
        return -1;
    pos_quic_callbacks_init(&cbs, 0);
    cbs.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cbs.get_new_connection_id = qglue_get_new_cid;
    cbs.recv_stream_data = cb_recv_stream_data;
    cbs.handshake_completed = cb_handshake_completed;
    pos_quic_settings_init(&settings, &c.creating);
    ngtcp2_transport_params_default(&params);
    params.initial_max_streams_bidi = 4;
    params.initial_max_data = 1 << 20;
    params.initial_max_stream_data_bidi_local = 1 << 20;
    params.initial_max_stream_data_bidi_remote = 1 << 20;
    dcid.datalen = scid.datalen = 16;
    randombytes_buf(dcid.data, 16);
    randombytes_buf(scid.data, 16);
    path.local.addr = (ngtcp2_sockaddr *)&c.local;
    path.local.addrlen = pos_addr_len(&c.local);
    path.remote.addr = (ngtcp2_sockaddr *)&c.to;
    path.remote.addrlen = pos_addr_len(&c.to);
    path.user_data = NULL;
    c.creating = 1;
    int rv = ngtcp2_conn_client_new(&c.qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs,
                                    &settings, &params, NULL, &c);
    c.creating = 0;
    if (rv != 0 || pos_tls_session_new_alpns(&c.tls, creds, 0, offer, v1 ? 1 : 2) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(c.tls) != 0)
        return -1;
    c.version = 0;
    c.ref.get_conn = get_conn;
    c.ref.user_data = &c.pin;
    gnutls_session_set_ptr(c.tls, &c.ref);
    ngtcp2_conn_set_tls_native_handle(c.qc, c.tls);
    pos_identity_free(&id);
    return 0;
}

/* maybe_request: PUNCH_REQUEST once, --request-after ms after the circuit opened. */
static void maybe_request(void)
{
    pos_ctrl_msg m;
    if (c.request_after_ms < 0 || c.requested || !c.circuit ||
        now_ms() < c.circuit_at_ms + c.request_after_ms)
        return;
    c.requested = 1;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_REQUEST;
    m.circuit_id = c.circuit;
    m.addrs = c.locals;
    queue(&c.req, &m);
}

static int run(void)
{
    int64_t end = now_ms() + c.seconds * 1000;
    uint8_t buf[2048];

    write_out();
    while (!c.closed && now_ms() < end) {
        ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c.qc), now = pos_quic_now();
        int64_t wait = exp > now ? (int64_t)((exp - now) / 1000000) + 1 : 0;
        struct pollfd p = {c.fd, POLLIN, 0};
        if (wait > 50)
            wait = 50;
        if (poll(&p, 1, (int)wait) > 0) {
            struct sockaddr_storage from;
            socklen_t fl = sizeof(from);
            ssize_t n = recvfrom(c.fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
            ngtcp2_path path = {{(ngtcp2_sockaddr *)&c.local, pos_addr_len(&c.local)},
                                {(ngtcp2_sockaddr *)&from, fl},
                                NULL};
            ngtcp2_pkt_info pi = {0};
            if (n > 0) {
                int rv = ngtcp2_conn_read_pkt(c.qc, &path, &pi, buf, (size_t)n, pos_quic_now());
                if (rv != 0) {
                    ngtcp2_connection_close_error e;
                    ngtcp2_conn_get_connection_close_error(c.qc, &e);
                    printf("{\"event\":\"relay_closed\",\"code\":%llu,\"rv\":\"%s\"}\n",
                           (unsigned long long)e.error_code, ngtcp2_strerror(rv));
                    fflush(stdout);
                    return 1;
                }
            }
        }
        if (ngtcp2_conn_get_expiry(c.qc) <= pos_quic_now() &&
            ngtcp2_conn_handle_expiry(c.qc, pos_quic_now()) != 0) {
            printf("{\"event\":\"relay_closed\",\"code\":0,\"rv\":\"timeout\"}\n");
            fflush(stdout);
            return 1;
        }
        maybe_request();
        write_out();
    }
    return c.handshaken && c.welcomed ? 0 : 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"token", required_argument, NULL, 'k'},
        {"v1", no_argument, NULL, '1'},
        {"local", required_argument, NULL, 'l'},
        {"connect", required_argument, NULL, 'c'},
        {"request-after", required_argument, NULL, 'r'},
        {"report", no_argument, NULL, 'R'},
        {"v1-first", no_argument, NULL, 'F'},
        {"seconds", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int ch, rc;
    const char *to = NULL;

    if (sodium_init() < 0)
        return 2;
    c.version = POS_CTRL_V2;
    c.seconds = 5;
    c.request_after_ms = -1;
    c.s0.id = c.req.id = -1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            to = optarg;
            break;
        case 'k':
            c.token = optarg;
            break;
        case '1':
            c.version = POS_CTRL_V1;
            break;
        case 'l':
            if (c.locals.n >= POS_CTRL_MAX_ADDRS || strlen(optarg) >= POS_ADDR_STRLEN)
                return 2;
            snprintf(c.locals.a[c.locals.n++], POS_ADDR_STRLEN, "%s", optarg);
            break;
        case 'c':
            c.connect = optarg;
            break;
        case 'r':
            c.request_after_ms = atol(optarg);
            break;
        case 'R':
            c.report = 1;
            break;
        case 'F':
            c.v1_first = 1;
            break;
        case 's':
            c.seconds = atol(optarg);
            break;
        default:
            return 2;
        }
    }
    if (!to || !c.token || strlen(c.token) > POS_CTRL_MAX_TOKEN ||
        pos_addr_parse(to, strlen(to), 0, &c.to) != 0) {
        fprintf(stderr, "usage: ctrl_client --to IP:PORT --token T [--v1] [--local ADDR]... "
                        "[--v1-first] [--connect PEERID] [--request-after MS] [--report] "
                        "[--seconds S]\n");
        return 2;
    }
    if (setup() != 0) {
        fprintf(stderr, "ctrl_client: set-up failed: %s\n", strerror(errno));
        return 2;
    }
    rc = run();
    printf("{\"event\":\"done\"}\n");
    fflush(stdout);
    pos_ctrl_reader_wipe(&c.rd);
    ngtcp2_conn_del(c.qc);
    gnutls_deinit(c.tls);
    pos_tls_creds_del(creds);
    close(c.fd);
    return rc;
}
