/*
 * libFuzzer target for the QUIC receive paths: whole datagrams through the
 * relay's server (relay_server_input, relay/quic_server.c) and through a
 * listening endpoint (ep_input, client-lib/src/endpoint.c + session.c),
 * ngtcp2 and GnuTLS included, the sockets replaced by an in-memory sink (the
 * I/O seams relay_io and ep_io).
 *
 * Mutated bytes die at Initial decryption, so most of the input does not go
 * on the wire as such: each run completes a real handshake with an
 * in-process ngtcp2 client (one or two for the relay), and the input is a
 * list of operations whose payloads the client encrypts: stream data on the
 * control stream (HELLO and later), on request streams, with FIN, stream
 * resets, key updates, a NAT rebinding, clock steps; plus raw datagrams, as
 * they are and with a live connection id patched in. ngtcp2 0.12 offers no
 * way to inject arbitrary frames through its public API, so frames are what
 * its client writes; our code's parsers (control messages, stream and
 * connection callbacks) see fuzzer-chosen bytes.
 *
 * Input: byte 0 picks the target (bit 0: 0 relay, 1 endpoint) and, for the
 * relay, whether the harness sends a valid HELLO first (bit 1); bit 2 makes
 * client A a draft-29 stack (transport parameters in TLS extension 0xffa5)
 * and bit 3 makes it speak draft-29 itself; bit 4 makes the relay ask every
 * client for a Retry first (as under load); bit 5 makes the relay's clients
 * offer pos-relay/1 only (else pos-relay/2 and /1, so PUNCH_* is spoken).
 * Then records
 * of [op][len hi][len lo][payload]: see enum op. The relay's services answer
 * synchronously without Redis (fuzz_services.c). Time is a fake clock for
 * the relay and the clients (the endpoint reads CLOCK_MONOTONIC).
 *
 * POS_FUZZ_WRITE_SEEDS=DIR writes the seed corpus into DIR and exits.
 */
#include <errno.h>
#include <ev.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctrl.h"
#include "identity.h"
#include "internal.h"
#include "quic_common.h"
#include "quic_glue.h"
#include "quic_server.h"
#include "tls.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* fuzz_services.c: deliver the queued verdicts / forget them */
void fuzz_services_pump(void);
void fuzz_services_reset(void);

#define MAX_QUEUE 64
#define STREAM_BUF (16 * 1024) /* per stream: ngtcp2 keeps pointers into it until acked */
#define N_STREAMS 3
#define MAX_ROUNDS 40

enum op {
    OP_RAW = 0,        /* payload as one datagram, from the client's address */
    OP_RAW_CID = 1,    /* same, with the server's connection id written at the DCID place */
    OP_STREAM = 2,     /* payload on stream payload[0] % 3 (0, 4, 8) */
    OP_STREAM_FIN = 3, /* same, then FIN */
    OP_RESET = 4,      /* reset stream payload[0] % 3 with code payload[1] */
    OP_KEY_UPDATE = 5, /* client starts a key update */
    OP_REBIND = 6,     /* the client's packets now come from another port (NAT rebinding) */
    OP_CLOCK = 7,      /* payload[0] * 16 ms pass; the client's timers run */
    OP_CLOSE = 8,      /* the client closes with application code payload[0] */
    N_OPS
};
#define OP_CLIENT_B 0x80 /* relay: the operation is client B's (made on first use) */

struct stream_out {
    int64_t id;
    uint8_t buf[STREAM_BUF];
    size_t len, sent;
    int fin, fin_sent;
};

struct client {
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    uint8_t creating;
    int made, dead, hello_sent;
    struct sockaddr_storage local; /* what the client believes */
    struct sockaddr_storage wire;  /* what the server sees */
    size_t got0;                   /* bytes the server sent on stream 0 */
    struct stream_out st[N_STREAMS];
};

struct dgram {
    struct sockaddr_storage to;
    size_t len;
    uint8_t data[1500];
};

static struct {
    struct ev_loop *loop;
    relay_config cfg;
    pos_identity client_id[2];
    pos_p2p_identity *ep_id;
    pos_tls_creds *client_creds[2];
    struct sockaddr_storage server_addr;
    uint64_t now;
    struct dgram q[MAX_QUEUE];
    size_t nq;
    int endpoint;      /* this run's target */
    unsigned tp_draft; /* client A: transport parameters as TLS extension 0xffa5 */
    uint32_t version;  /* client A's QUIC version */
    int retry_all;     /* the relay asks every client for a Retry */
    int relay_v1;      /* relay clients offer pos-relay/1 only (else /2 and /1: punching) */
    relay_server *relay;
    pos_p2p_endpoint *ep;
    struct client c[2];
} g;

static void set_addr(struct sockaddr_storage *ss, uint32_t ip, uint16_t port)
{
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(ip);
    a->sin_port = htons(port);
}

static uint64_t fake_now(void *arg)
{
    (void)arg;
    return g.now;
}

/* the servers' send: into the queue towards the clients */
static int sink_send(void *arg, int sock, const uint8_t *data, size_t len,
                     const struct sockaddr *to, socklen_t tolen)
{
    (void)arg;
    (void)sock;
    if (g.nq >= MAX_QUEUE || len > sizeof(g.q[0].data) || tolen > sizeof(g.q[0].to))
        return -1;
    memset(&g.q[g.nq].to, 0, sizeof(g.q[g.nq].to));
    memcpy(&g.q[g.nq].to, to, tolen);
    memcpy(g.q[g.nq].data, data, len);
    g.q[g.nq].len = len;
    g.nq++;
    return 0;
}

static void server_input(const struct client *c, const uint8_t *data, size_t len)
{
    if (len == 0 || len > 1500)
        return;
    if (g.endpoint)
        ep_input(g.ep, 0, data, len, (const struct sockaddr *)&c->wire, sizeof(struct sockaddr_in));
    else {
        relay_server_input(g.relay, 0, data, len, (const struct sockaddr *)&c->wire,
                           sizeof(struct sockaddr_in));
        fuzz_services_pump(); /* verdicts come from the loop, after the call */
    }
}

/* ---- the in-process client ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct client *c = (struct client *)((char *)ref->user_data - offsetof(struct client, pin));
    return c->qc;
}

static int cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    struct client *c = user_data;
    (void)flags;
    (void)offset;
    (void)data;
    (void)stream_user_data;
    if (stream_id == 0)
        c->got0 += datalen;
    ngtcp2_conn_extend_max_stream_offset(qc, stream_id, datalen);
    ngtcp2_conn_extend_max_offset(qc, datalen);
    return 0;
}

static void client_free(struct client *c)
{
    if (c->qc)
        ngtcp2_conn_del(c->qc);
    if (c->tls)
        gnutls_deinit(c->tls);
    memset(c, 0, sizeof(*c));
}

static int client_make(struct client *c, int which, uint32_t version)
{
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;

    memset(c, 0, sizeof(*c));
    c->made = 1;
    set_addr(&c->local, 0x0a000001u + (uint32_t)which, (uint16_t)(40000 + which));
    c->wire = c->local;
    pos_quic_callbacks_init(&cbs, 0);
    cbs.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cbs.get_new_connection_id = qglue_get_new_cid;
    cbs.recv_stream_data = cb_recv_stream_data;
    pos_quic_settings_init(&settings, &c->creating);
    settings.initial_ts = g.now;
    settings.log_printf = NULL;
    ngtcp2_transport_params_default(&params);
    params.initial_max_streams_bidi = 8;
    params.initial_max_stream_data_bidi_local = 256 * 1024;
    params.initial_max_stream_data_bidi_remote = 256 * 1024;
    params.initial_max_data = 1024 * 1024;
    dcid.datalen = 16;
    randombytes_buf(dcid.data, dcid.datalen);
    scid.datalen = 16;
    randombytes_buf(scid.data, scid.datalen);
    path.local.addr = (ngtcp2_sockaddr *)&c->local;
    path.local.addrlen = sizeof(struct sockaddr_in);
    path.remote.addr = (ngtcp2_sockaddr *)&g.server_addr;
    path.remote.addrlen = sizeof(struct sockaddr_in);
    path.user_data = NULL;
    c->creating = 1;
    int rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &path, version, &cbs, &settings, &params,
                                    NULL, c);
    c->creating = 0;
    if (rv != 0 ||
        (g.endpoint || g.relay_v1
             ? pos_tls_session_new(&c->tls, g.client_creds[which], 0,
                                   g.endpoint ? POS_P2P_SESSION_ALPN : POS_CTRL_ALPN)
             : pos_tls_session_new_alpns(&c->tls, g.client_creds[which], 0, pos_ctrl_alpns,
                                         POS_CTRL_N_ALPNS)) != 0 ||
        qglue_configure_client(c->tls, which == 0 && g.tp_draft
                                           ? NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_DRAFT
                                           : NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1) != 0) {
        c->dead = 1;
        return -1;
    }
    c->ref.get_conn = get_conn;
    c->ref.user_data = &c->pin;
    gnutls_session_set_ptr(c->tls, &c->ref);
    ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
    for (int i = 0; i < N_STREAMS; i++)
        c->st[i].id = -1;
    return 0;
}

static struct stream_out *pending_stream(struct client *c)
{
    for (int i = 0; i < N_STREAMS; i++) {
        struct stream_out *s = &c->st[i];
        if (s->id >= 0 && (s->sent < s->len || (s->fin && !s->fin_sent)))
            return s;
    }
    return NULL;
}

/* client_flush writes what the client has and feeds it to the server. Returns packets sent. */
static int client_flush(struct client *c)
{
    uint8_t buf[1500];
    int sent = 0;
    if (!c->qc || c->dead)
        return 0;
    for (int i = 0; i < 16; i++) {
        ngtcp2_path_storage ps;
        ngtcp2_pkt_info pi;
        ngtcp2_ssize wlen = -1, n;
        struct stream_out *s =
            ngtcp2_conn_get_handshake_completed(c->qc) ? pending_stream(c) : NULL;
        ngtcp2_vec v = {NULL, 0};
        uint32_t flags = 0;
        ngtcp2_path_storage_zero(&ps);
        if (s) {
            v.base = s->buf + s->sent;
            v.len = s->len - s->sent;
            if (s->fin)
                flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        n = ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, buf, sizeof(buf), &wlen, flags,
                                      s ? s->id : -1, s ? &v : NULL, s ? 1 : 0, g.now);
        if (n < 0) {
            if (s && (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
                      n == NGTCP2_ERR_STREAM_NOT_FOUND)) {
                s->sent = s->len; /* give up on this stream's rest */
                s->fin_sent = 1;
                continue;
            }
            c->dead = 1;
            break;
        }
        if (s && wlen >= 0) {
            s->sent += (size_t)wlen;
            if (s->fin && s->sent == s->len)
                s->fin_sent = 1;
        }
        if (n == 0)
            break;
        server_input(c, buf, (size_t)n);
        sent++;
    }
    return sent;
}

/* deliver hands the queued server datagrams to the clients they are addressed to. */
static int deliver(void)
{
    struct dgram q[MAX_QUEUE];
    size_t n = g.nq;
    memcpy(q, g.q, n * sizeof(q[0]));
    g.nq = 0;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            struct client *c = &g.c[k];
            ngtcp2_path path;
            ngtcp2_pkt_info pi = {0};
            if (!c->qc || c->dead || memcmp(&q[i].to, &c->wire, sizeof(struct sockaddr_in)) != 0)
                continue;
            path.local.addr = (ngtcp2_sockaddr *)&c->local;
            path.local.addrlen = sizeof(struct sockaddr_in);
            path.remote.addr = (ngtcp2_sockaddr *)&g.server_addr;
            path.remote.addrlen = sizeof(struct sockaddr_in);
            path.user_data = NULL;
            if (ngtcp2_conn_read_pkt(c->qc, &path, &pi, q[i].data, q[i].len, g.now) != 0)
                c->dead = 1;
        }
    }
    return (int)n;
}

static void pump(void)
{
    for (int round = 0; round < MAX_ROUNDS; round++) {
        int moved = client_flush(&g.c[0]) + client_flush(&g.c[1]);
        moved += deliver();
        g.now += NGTCP2_MILLISECONDS;
        if (!moved)
            break;
    }
}

static struct stream_out *stream_get(struct client *c, unsigned which)
{
    struct stream_out *s = &c->st[which % N_STREAMS];
    if (s->id < 0 && ngtcp2_conn_get_handshake_completed(c->qc)) {
        /* streams are opened in order so that their ids are 0, 4, 8 */
        for (unsigned i = 0; i <= which % N_STREAMS; i++) {
            if (c->st[i].id >= 0)
                continue;
            if (ngtcp2_conn_open_bidi_stream(c->qc, &c->st[i].id, NULL) != 0) {
                c->st[i].id = -1;
                return NULL;
            }
        }
    }
    return s->id >= 0 ? s : NULL;
}

static void stream_append(struct client *c, unsigned which, const uint8_t *data, size_t len,
                          int fin)
{
    struct stream_out *s = stream_get(c, which);
    if (!s || s->fin)
        return;
    if (len > STREAM_BUF - s->len)
        len = STREAM_BUF - s->len;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->fin = fin;
}

static void send_hello(struct client *c)
{
    pos_ctrl_msg m;
    uint8_t buf[POS_CTRL_MAX_MSG];
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    memcpy(m.token, "pos_fuzz_token", 14);
    m.token_len = 14;
    int n = pos_ctrl_encode(&m, buf, sizeof(buf));
    if (n > 0)
        stream_append(c, 0, buf, (size_t)n, 0);
    c->hello_sent = 1;
}

/* client_start makes client |which| and runs its handshake (and HELLO, for the relay). */
static struct client *client_start(int which, int hello)
{
    struct client *c = &g.c[which];
    if (c->made)
        return c->dead ? NULL : c;
    if (client_make(c, which, which == 0 ? g.version : NGTCP2_PROTO_VER_V1) != 0)
        return NULL;
    pump();
    if (c->dead || !ngtcp2_conn_get_handshake_completed(c->qc))
        return NULL;
    if (hello) {
        send_hello(c);
        pump();
    }
    return c;
}

/* ---- operations ---- */

static void op_raw(struct client *c, int patch, const uint8_t *p, size_t len)
{
    uint8_t buf[1500];
    if (len == 0 || len > sizeof(buf))
        return;
    memcpy(buf, p, len);
    if (patch && c->qc) {
        /* a live connection id at the short header's DCID place, or the long header's */
        const ngtcp2_cid *dcid = ngtcp2_conn_get_dcid(c->qc);
        size_t at = (buf[0] & 0x80) ? 6 : 1;
        if (at + dcid->datalen <= len) {
            memcpy(buf + at, dcid->data, dcid->datalen);
            if (at == 6)
                buf[5] = (uint8_t)dcid->datalen;
        }
    }
    server_input(c, buf, len);
}

static void run_op(uint8_t op, const uint8_t *p, size_t len, int hello)
{
    int b = (op & OP_CLIENT_B) && !g.endpoint;
    struct client *c = client_start(b, b || hello); /* B always says HELLO: it is the target */
    if (!c)
        return;
    switch ((op & 0x7f) % N_OPS) {
    case OP_RAW:
        op_raw(c, 0, p, len);
        break;
    case OP_RAW_CID:
        op_raw(c, 1, p, len);
        break;
    case OP_STREAM:
    case OP_STREAM_FIN:
        if (len > 0)
            stream_append(c, p[0], p + 1, len - 1, (op & 0x7f) % N_OPS == OP_STREAM_FIN);
        break;
    case OP_RESET: {
        struct stream_out *s = len > 0 ? stream_get(c, p[0]) : NULL;
        if (s)
            ngtcp2_conn_shutdown_stream(c->qc, s->id, len > 1 ? p[1] : 0);
        break;
    }
    case OP_KEY_UPDATE:
        ngtcp2_conn_initiate_key_update(c->qc, g.now);
        break;
    case OP_REBIND:
        ((struct sockaddr_in *)&c->wire)->sin_port =
            htons((uint16_t)(50000 + (len > 0 ? p[0] : 1)));
        break;
    case OP_CLOCK:
        g.now += (uint64_t)(len > 0 ? p[0] : 1) * 16 * NGTCP2_MILLISECONDS;
        if (ngtcp2_conn_handle_expiry(c->qc, g.now) != 0)
            c->dead = 1;
        break;
    case OP_CLOSE: {
        uint8_t buf[1500];
        ngtcp2_path_storage ps;
        ngtcp2_pkt_info pi;
        ngtcp2_connection_close_error ccerr;
        ngtcp2_connection_close_error_set_application_error(&ccerr, len > 0 ? p[0] : 0, NULL, 0);
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, buf, sizeof(buf),
                                                            &ccerr, g.now);
        if (n > 0)
            server_input(c, buf, (size_t)n);
        c->dead = 1;
        break;
    }
    }
    pump();
}

/* ---- the endpoint's application: echo what arrives ---- */

static void on_session_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    (void)arg;
    if (ev->type == POS_P2P_SESSION_EV_DATA && ev->len > 0) {
        size_t room = pos_p2p_session_write_room(s, ev->stream);
        size_t taken;
        pos_p2p_session_write(s, ev->stream, ev->data, ev->len < room ? ev->len : room, ev->fin,
                              &taken);
    }
}

static void on_session(void *arg, pos_p2p_session *s)
{
    (void)arg;
    pos_p2p_session_set_callback(s, on_session_event, NULL);
}

/* ---- set-up ---- */

static void make_identity(pos_identity *id, uint8_t fill)
{
    uint8_t seed[32];
    memset(seed, fill, sizeof(seed));
    pos_identity_from_seed(id, seed);
}

static int setup(void)
{
    if (sodium_init() < 0)
        return -1;
    g.loop = ev_loop_new(EVFLAG_AUTO);
    memset(&g.cfg, 0, sizeof(g.cfg));
    make_identity(&g.cfg.identity, 0x11);
    snprintf(g.cfg.id, sizeof(g.cfg.id), "6ba7b810-9dad-41d1-80b4-00c04fd430c8");
    g.cfg.port = 7373;
    g.cfg.idle_timeout_s = 30;
    g.cfg.max_pending_per_addr = 16;
    make_identity(&g.client_id[0], 0x22);
    make_identity(&g.client_id[1], 0x33);
    {
        pos_identity k;
        make_identity(&k, 0x44);
        g.ep_id = p2p_identity_new(&k);
        pos_identity_free(&k);
        if (!g.ep_id)
            return -1;
    }
    for (int i = 0; i < 2; i++)
        if (pos_tls_creds_new(&g.client_creds[i], &g.client_id[i]) != 0)
            return -1;
    set_addr(&g.server_addr, 0x0a000064u, 7373);
    return g.loop ? 0 : -1;
}

static int start_server(void)
{
    char err[256];
    if (g.endpoint) {
        ep_io io = {sink_send, NULL};
        if (ep_new_io(&g.ep, g.ep_id, &io, &g.server_addr) != 0)
            return -1;
        return pos_p2p_endpoint_listen(g.ep, NULL, on_session, NULL);
    }
    relay_io io = {sink_send, fake_now, NULL};
    g.cfg.retry_above = g.retry_all ? 0 : 256;
    g.cfg.punch = 1; /* PUNCH_START after CIRCUIT, PUNCH_REQUEST at most every 100 ms */
    g.cfg.punch_min_interval_ms = 100;
    static int services; /* any non-NULL pointer: fuzz_services.c ignores it */
    g.relay = relay_server_new_io(g.loop, &g.cfg, &io, &g.server_addr, 1, err, sizeof(err));
    if (!g.relay)
        return -1;
    relay_server_set_services(g.relay, (relay_services *)&services);
    return 0;
}

static void stop_all(void)
{
    for (int i = 0; i < 2; i++)
        client_free(&g.c[i]);
    relay_server_del(g.relay);
    g.relay = NULL;
    fuzz_services_reset();
    pos_p2p_endpoint_del(g.ep);
    g.ep = NULL;
    g.nq = 0;
}

static void write_seeds(const char *dir);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (setup() != 0)
        abort();
    const char *seeds = getenv("POS_FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 1;
    if (size < 1)
        return 0;
    g.endpoint = data[0] & 1;
    int hello = !g.endpoint && (data[0] & 2);
    g.tp_draft = data[0] & 4;
    g.version = data[0] & 8 ? 0xff00001du : NGTCP2_PROTO_VER_V1;
    g.retry_all = data[0] & 16;
    g.relay_v1 = data[0] & 32;
    g.now = 1000 * NGTCP2_SECONDS;
    if (start_server() == 0) {
        while (off + 3 <= size) {
            uint8_t op = data[off];
            size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
            off += 3;
            if (len > size - off)
                len = size - off;
            run_op(op, data + off, len, hello);
            off += len;
        }
    }
    stop_all();
    return 0;
}

/* ---- seed corpus ---- */

struct seed {
    uint8_t b[8192];
    size_t n;
};

static void seed_rec(struct seed *s, uint8_t op, const void *p, size_t len)
{
    if (s->n + 3 + len > sizeof(s->b))
        return;
    s->b[s->n++] = op;
    s->b[s->n++] = (uint8_t)(len >> 8);
    s->b[s->n++] = (uint8_t)len;
    memcpy(s->b + s->n, p, len);
    s->n += len;
}

static void seed_ctrl(struct seed *s, uint8_t op, unsigned stream, const pos_ctrl_msg *m)
{
    uint8_t buf[1 + POS_CTRL_MAX_MSG];
    /* version 2 encodes every version 1 message the same, and PUNCH_* besides */
    int n = pos_ctrl_encode_version(m, POS_CTRL_V2, buf + 1, sizeof(buf) - 1);
    buf[0] = (uint8_t)stream;
    if (n > 0)
        seed_rec(s, op, buf, (size_t)n + 1);
}

static void seed_write(const char *dir, const char *name, const struct seed *s)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->b, 1, s->n, f) != s->n) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fclose(f);
}

/* initial_of: a real encrypted Initial of |version| from a fresh client (v2 final: patched v1). */
static size_t initial_of(uint32_t version, uint8_t *out, size_t cap)
{
    struct client c;
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    int supported = ngtcp2_is_supported_version(version);
    g.endpoint = 0;
    g.tp_draft = 0;
    if (client_make(&c, 0, supported ? version : NGTCP2_PROTO_VER_V1) != 0) {
        client_free(&c);
        return 0;
    }
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_ssize n = ngtcp2_conn_write_pkt(c.qc, &ps.path, &pi, out, cap, g.now);
    client_free(&c);
    if (n <= 0)
        return 0;
    if (!supported) {
        out[1] = (uint8_t)(version >> 24);
        out[2] = (uint8_t)(version >> 16);
        out[3] = (uint8_t)(version >> 8);
        out[4] = (uint8_t)version;
    }
    return (size_t)n;
}

/* Long: one straight list of seeds, each a few records built in place and written. */
static void write_seeds(const char *dir)
{
    static const uint32_t versions[] = {NGTCP2_PROTO_VER_V1, 0xff00001du, 0x709a50c4u,
                                        0x6b3343cfu,         0x1a2a3a4au, 0};
    static const char *const names[] = {"initial_v1", "initial_draft29", "initial_v2draft",
                                        "initial_v2", "initial_grease",  "initial_vn"};
    struct seed s;
    pos_ctrl_msg m;
    char peer_b[POS_PEER_ID_STRLEN];
    uint8_t pkt[1500];

    mkdir(dir, 0755);
    /* raw Initials of every version, to the relay and to the endpoint */
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        size_t n = initial_of(versions[i], pkt, sizeof(pkt));
        char name[64];
        if (n == 0)
            continue;
        for (int target = 0; target < 2; target++) {
            memset(&s, 0, sizeof(s));
            s.b[s.n++] = (uint8_t)target;
            seed_rec(&s, OP_RAW, pkt, n);
            snprintf(name, sizeof(name), "%s_%s", target ? "ep" : "relay", names[i]);
            seed_write(dir, name, &s);
        }
    }
    /* a draft-29 stack (0xffa5), speaking v1 and draft-29, to both targets */
    for (int flags = 4; flags <= 12; flags += 8) {
        for (int target = 0; target < 2; target++) {
            char name[64];
            uint8_t hello[] = {0, 'h', 'i'};
            memset(&s, 0, sizeof(s));
            s.b[s.n++] = (uint8_t)(flags | target);
            seed_rec(&s, OP_STREAM, hello, sizeof(hello));
            snprintf(name, sizeof(name), "%s_tp_0xffa5%s", target ? "ep" : "relay",
                     flags & 8 ? "_draft29" : "");
            seed_write(dir, name, &s);
        }
    }

    /* relay: every client must answer a Retry first; A then asks for B */
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 16 | 2;
    {
        uint8_t zero[1] = {0};
        seed_rec(&s, OP_CLOCK | OP_CLIENT_B, zero, 1);
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_CONNECT;
        m.req_id = 5;
        pos_identity_peer_id(&g.client_id[1], m.peer_id);
        seed_ctrl(&s, OP_STREAM, 1, &m);
        seed_write(dir, "relay_retry_connect", &s);
    }

    /* relay: the fuzzer writes HELLO itself */
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 0;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    memcpy(m.token, "pos_fuzz_token", 14);
    m.token_len = 14;
    m.addrs.n = 2;
    snprintf(m.addrs.a[0], POS_ADDR_STRLEN, "192.168.1.2:7373");
    snprintf(m.addrs.a[1], POS_ADDR_STRLEN, "[fe80::1]:7373");
    seed_ctrl(&s, OP_STREAM, 0, &m);
    seed_write(dir, "relay_hello", &s);
    memcpy(m.token, "bad_token_xx", 12);
    m.token_len = 12;
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 0;
    seed_ctrl(&s, OP_STREAM, 0, &m);
    seed_write(dir, "relay_hello_refused", &s);

    /* relay: A (HELLO by the harness) asks for B, B accepts: a circuit, then one side leaves */
    pos_identity_peer_id(&g.client_id[1], peer_b);
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 2;
    uint8_t nothing[1] = {0};
    seed_rec(&s, OP_CLOCK | OP_CLIENT_B, nothing, 1); /* B connects and says HELLO */
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    m.req_id = 7;
    snprintf(m.peer_id, sizeof(m.peer_id), "%s", peer_b);
    seed_ctrl(&s, OP_STREAM, 1, &m);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_ACCEPT;
    m.req_id = 1; /* the relay numbers its INCOMING requests from 1 */
    seed_ctrl(&s, OP_STREAM | OP_CLIENT_B, 1, &m);
    seed_write(dir, "relay_circuit", &s);
    size_t relay_circuit_len = s.n;
    uint8_t code[1] = {1};
    seed_rec(&s, OP_CLOSE | OP_CLIENT_B, code, 1);
    seed_write(dir, "relay_circuit_closed", &s);

    /* relay: after the circuit (and its PUNCH_START), B asks for another attempt and reports
     * (circuit ids are random: the fuzzer finds the right one, the seed has the shape) */
    s.n = relay_circuit_len;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_REQUEST;
    m.circuit_id = 1;
    m.addrs.n = 2;
    snprintf(m.addrs.a[0], POS_ADDR_STRLEN, "10.0.0.2:7000");
    snprintf(m.addrs.a[1], POS_ADDR_STRLEN, "[fd00::2]:7000");
    seed_ctrl(&s, OP_STREAM | OP_CLIENT_B, 1, &m);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_REPORT;
    m.circuit_id = 1;
    m.attempt = 1;
    m.outcome = POS_CTRL_PUNCH_DIRECT;
    m.ms_to_direct = 42;
    seed_ctrl(&s, OP_STREAM, 1, &m);
    seed_write(dir, "relay_circuit_punch", &s);

    /* relay: decline, a CONNECT to oneself, to an absent peer, a bad message on stream 0 */
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 2;
    seed_rec(&s, OP_CLOCK | OP_CLIENT_B, nothing, 1);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    m.req_id = 9;
    snprintf(m.peer_id, sizeof(m.peer_id), "%s", peer_b);
    seed_ctrl(&s, OP_STREAM, 1, &m);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_DECLINE;
    m.req_id = 1;
    m.code = 2;
    seed_ctrl(&s, OP_STREAM_FIN | OP_CLIENT_B, 1, &m);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    m.req_id = 10;
    pos_identity_peer_id(&g.client_id[0], m.peer_id);
    seed_ctrl(&s, OP_STREAM, 1, &m);
    m.req_id = 11;
    snprintf(m.peer_id, sizeof(m.peer_id), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    seed_ctrl(&s, OP_STREAM, 1, &m);
    seed_write(dir, "relay_decline_self_absent", &s);
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 2;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_ACCEPT; /* a request on stream 0, after HELLO */
    m.req_id = 3;
    seed_ctrl(&s, OP_STREAM, 0, &m);
    seed_write(dir, "relay_unexpected_on_stream0", &s);

    /* relay: transport events after the handshake */
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 2;
    uint8_t rst[2] = {1, 3}, port[1] = {9}, step[1] = {40};
    uint8_t junk[64];
    memset(junk, 0x41, sizeof(junk));
    junk[0] = 0x40; /* short header */
    seed_rec(&s, OP_KEY_UPDATE, nothing, 1);
    seed_rec(&s, OP_REBIND, port, 1);
    seed_ctrl(&s, OP_STREAM, 2, &m);
    seed_rec(&s, OP_RESET, rst, 2);
    seed_rec(&s, OP_RAW_CID, junk, sizeof(junk));
    seed_rec(&s, OP_CLOCK, step, 1);
    seed_write(dir, "relay_transport_events", &s);

    /* endpoint: stream data both ways (echoed), FIN, reset, rebinding */
    memset(&s, 0, sizeof(s));
    s.b[s.n++] = 1;
    uint8_t hello[] = {0, 'h', 'e', 'l', 'l', 'o'};
    seed_rec(&s, OP_STREAM, hello, sizeof(hello));
    hello[0] = 1;
    seed_rec(&s, OP_STREAM_FIN, hello, sizeof(hello));
    seed_rec(&s, OP_RESET, rst, 2);
    seed_rec(&s, OP_REBIND, port, 1);
    seed_rec(&s, OP_KEY_UPDATE, nothing, 1);
    seed_rec(&s, OP_RAW_CID, junk, sizeof(junk));
    seed_rec(&s, OP_CLOSE, code, 1);
    seed_write(dir, "ep_streams", &s);
}
