/*
 * park_client: a bare pos-relay/4 client (QUIC with ngtcp2, TLS,
 * common/ctrl.c and common/park.c: no client library) for the integration
 * tests of parking (test_relay_park.py). It connects as a home connection,
 * derives the park key after the handshake, answers INCOMING with ACCEPT,
 * and follows commands that the test appends to a file (--commands FILE),
 * one per line:
 *
 *   park          PARK on the request stream; after PARKED the QUIC
 *                 connection is freed silently once its bytes are acknowledged
 *   ka            a keep-alive with the next counter
 *   replay        the last keep-alive again, byte for byte
 *   badmac        the next counter with one mac byte flipped
 *   wrongkey      the next counter maced under a random key
 *   otherid       the next counter for a record id that is not ours (valid mac)
 *   bye           PARK_BYE with the next counter (the record should end)
 *   byewrongkey   PARK_BYE with the next counter maced under a random key
 *   rebind        a new UDP socket (a new source port): the NAT mapping changed
 *   reconnect     a new QUIC connection and HELLO from the current socket
 *   connect PEER  CONNECT to PEER (once connected)
 *   data          a DATA frame ("park_client") on the latest circuit
 *   close         CONNECTION_CLOSE (no error) on the live connection, which is then freed
 *   quit
 *
 * It prints JSON lines: {"event":"welcome"|"parked"|"ack"|"wake"|"incoming"|
 * "circuit"|"connect_sent"|"error"|"relay_closed"|"freed"|"done", ...}; "circuit"
 * and "connect_sent" carry a monotonic "ms" (CONNECT to circuit, for figures); a
 * DATA frame from the relay prints {"event":"data","circuit":ID,"len":N}. A
 * datagram from the relay that is neither QUIC for a live connection nor a
 * valid park datagram is printed as {"event":"stray"}. With --wake-reconnect
 * a valid WAKE reconnects at once. Keys are never printed.
 *
 *   park_client --to IP:PORT --token T --commands FILE [--seconds S]
 *               [--not-home] [--wake-reconnect] [--identity-seed HEX32]
 */
#include <errno.h>
#include <fcntl.h>
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
#include "frame.h"
#include "identity.h"
#include "park.h"
#include "quic_common.h"
#include "quic_glue.h"
#include "tls.h"

#define OUT_CAP 65536

static pos_tls_creds *creds;

struct ostream {
    int64_t id;
    uint8_t buf[OUT_CAP];
    size_t len, sent;
};

static struct cl {
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    uint8_t creating;
    int fd, cmd_fd, version, handshaken, welcomed, not_home, wake_reconnect;
    struct sockaddr_storage to, local;
    struct ostream s0, req;
    pos_ctrl_reader rd;
    const char *token;
    long seconds;
    char peer_id[POS_PEER_ID_STRLEN];
    /* parking */
    uint8_t key[POS_PARK_KEY_LEN], conn_key[POS_PARK_KEY_LEN];
    int has_conn_key, parked, freeing;
    uint64_t record_id, ka_counter, wake_seen;
    int64_t parked_at_ms;
    uint8_t last_ka[POS_PARK_LEN];
    uint32_t next_req;
    uint32_t circuit; /* the latest CIRCUIT's id (ours), 0 none */
    char cmdbuf[4096];
    size_t cmdlen;
} c;

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    (void)ref;
    return c.qc;
}

static void queue(struct ostream *s, const pos_ctrl_msg *m)
{
    int n;
    if (s->id < 0 && ngtcp2_conn_open_bidi_stream(c.qc, &s->id, NULL) != 0) {
        fprintf(stderr, "park_client: cannot open a stream\n");
        return;
    }
    n = pos_ctrl_encode_version(m, c.version, s->buf + s->len, OUT_CAP - s->len);
    if (n < 0) {
        fprintf(stderr, "park_client: cannot encode %s: %d\n", pos_ctrl_type_name(m->type), n);
        return;
    }
    s->len += (size_t)n;
}

static void on_msg(pos_ctrl_msg *m)
{
    pos_ctrl_msg a;
    switch (m->type) {
    case POS_CTRL_WELCOME:
        c.welcomed = 1;
        printf("{\"event\":\"welcome\",\"version\":%d,\"peer_id\":\"%s\",\"observed\":\"%s\"}\n",
               c.version, c.peer_id, m->observed);
        break;
    case POS_CTRL_PARKED:
        c.parked = 1;
        c.parked_at_ms = (int64_t)(pos_quic_now() / 1000000);
        c.record_id = m->record_id;
        memcpy(c.key, c.conn_key, sizeof(c.key));
        c.ka_counter = 0;
        c.wake_seen = 0;
        printf("{\"event\":\"parked\",\"record\":\"%016llx\",\"keepalive_s\":%u,"
               "\"lifetime_s\":%u}\n",
               (unsigned long long)m->record_id, m->keepalive_s, m->lifetime_s);
        break;
    case POS_CTRL_INCOMING:
        printf("{\"event\":\"incoming\",\"peer_id\":\"%s\"}\n", m->peer_id);
        memset(&a, 0, sizeof(a));
        a.type = POS_CTRL_ACCEPT;
        a.req_id = m->req_id;
        queue(&c.req, &a);
        break;
    case POS_CTRL_CIRCUIT:
        c.circuit = m->circuit_id;
        printf("{\"event\":\"circuit\",\"circuit\":%u,\"peer_id\":\"%s\",\"ms\":%lld}\n",
               m->circuit_id, m->peer_id, (long long)(pos_quic_now() / 1000000));
        break;
    case POS_CTRL_ERROR:
        printf("{\"event\":\"error\",\"req\":%u,\"code\":%u,\"text\":\"%s\"}\n", m->req_id, m->code,
               m->text);
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
    c.has_conn_key = pos_park_derive_key(c.tls, c.conn_key) == 0;
    c.handshaken = 1;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    m.token_len = strlen(c.token);
    memcpy(m.token, c.token, m.token_len);
    if (c.not_home)
        m.hello_flags = POS_CTRL_HELLO_NOT_HOME;
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

    if (!c.qc)
        return;
    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        struct ostream *s = c.s0.sent < c.s0.len ? &c.s0 : c.req.sent < c.req.len ? &c.req : NULL;
        ngtcp2_vec v = {s ? s->buf + s->sent : NULL, s ? s->len - s->sent : 0};
        used = -1;
        n = ngtcp2_conn_writev_stream(c.qc, &ps.path, &pi, buf, sizeof(buf), &used,
                                      NGTCP2_WRITE_STREAM_FLAG_NONE, s ? s->id : -1, s ? &v : NULL,
                                      s ? 1 : 0, pos_quic_now());
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR)
            break;
        if (n < 0) {
            fprintf(stderr, "park_client: write: %s\n", ngtcp2_strerror((int)n));
            return;
        }
        if (s && used > 0)
            s->sent += (size_t)used;
        if (n == 0)
            break;
        sendto(c.fd, buf, (size_t)n, 0, (struct sockaddr *)&c.to, pos_addr_len(&c.to));
    }
}

static void conn_free(void)
{
    if (c.qc)
        ngtcp2_conn_del(c.qc);
    if (c.tls)
        gnutls_deinit(c.tls);
    c.qc = NULL;
    c.tls = NULL;
    pos_ctrl_reader_wipe(&c.rd);
    memset(&c.rd, 0, sizeof(c.rd));
    memset(&c.s0, 0, sizeof(c.s0));
    memset(&c.req, 0, sizeof(c.req));
    c.s0.id = c.req.id = -1;
    c.handshaken = c.welcomed = 0;
}

static int open_socket(void)
{
    socklen_t len = sizeof(c.local);
    if (c.fd >= 0)
        close(c.fd);
    c.fd = socket(c.to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&c.local, 0, sizeof(c.local));
    c.local.ss_family = c.to.ss_family;
    if (c.fd < 0 || bind(c.fd, (struct sockaddr *)&c.local, pos_addr_len(&c.local)) != 0 ||
        getsockname(c.fd, (struct sockaddr *)&c.local, &len) != 0)
        return -1;
    return 0;
}

static int conn_new(void)
{
    static const char *const offer[] = {POS_CTRL_ALPN_V4, POS_CTRL_ALPN_V3, POS_CTRL_ALPN_V2,
                                        POS_CTRL_ALPN_V1};
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;

    conn_free();
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
    if (rv != 0 || pos_tls_session_new_alpns(&c.tls, creds, 0, offer, 4) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(c.tls) != 0)
        return -1;
    c.version = 0;
    c.ref.get_conn = get_conn;
    c.ref.user_data = &c.pin;
    gnutls_session_set_ptr(c.tls, &c.ref);
    ngtcp2_conn_set_tls_native_handle(c.qc, c.tls);
    write_out();
    return 0;
}

/* send_ka: a keep-alive of |type| variant (see the commands) with the next counter. */
static void send_ka(const char *how)
{
    uint8_t d[POS_PARK_LEN], k[POS_PARK_KEY_LEN];
    uint64_t id = c.record_id;
    memcpy(k, c.key, sizeof(k));
    if (strcmp(how, "replay") == 0) {
        sendto(c.fd, c.last_ka, sizeof(c.last_ka), 0, (struct sockaddr *)&c.to,
               pos_addr_len(&c.to));
        return;
    }
    if (strcmp(how, "wrongkey") == 0 || strcmp(how, "byewrongkey") == 0)
        randombytes_buf(k, sizeof(k));
    if (strcmp(how, "otherid") == 0)
        id ^= 1; /* another index, same worker bits */
    pos_park_encode(d, sizeof(d), strncmp(how, "bye", 3) == 0 ? POS_PARK_BYE : POS_PARK_KEEPALIVE,
                    id, ++c.ka_counter, k);
    if (strcmp(how, "badmac") == 0)
        d[POS_PARK_LEN - 1] ^= 1;
    if (strcmp(how, "ka") == 0)
        memcpy(c.last_ka, d, sizeof(d));
    sendto(c.fd, d, sizeof(d), 0, (struct sockaddr *)&c.to, pos_addr_len(&c.to));
    sodium_memzero(k, sizeof(k));
}

static void command(const char *line)
{
    pos_ctrl_msg m;
    if (strcmp(line, "park") == 0 && c.qc) {
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_PARK;
        m.req_id = ++c.next_req;
        queue(&c.req, &m);
    } else if (strcmp(line, "ka") == 0 || strcmp(line, "replay") == 0 ||
               strcmp(line, "badmac") == 0 || strcmp(line, "wrongkey") == 0 ||
               strcmp(line, "otherid") == 0 || strcmp(line, "bye") == 0 ||
               strcmp(line, "byewrongkey") == 0) {
        send_ka(line);
    } else if (strcmp(line, "rebind") == 0) {
        if (open_socket() != 0)
            fprintf(stderr, "park_client: rebind: %s\n", strerror(errno));
        printf("{\"event\":\"rebound\"}\n");
    } else if (strcmp(line, "reconnect") == 0) {
        c.parked = c.freeing = 0;
        if (conn_new() != 0)
            fprintf(stderr, "park_client: reconnect failed\n");
    } else if (strncmp(line, "connect ", 8) == 0 && c.qc) {
        printf("{\"event\":\"connect_sent\",\"ms\":%lld}\n", (long long)(pos_quic_now() / 1000000));
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_CONNECT;
        m.req_id = ++c.next_req;
        snprintf(m.peer_id, sizeof(m.peer_id), "%s", line + 8);
        queue(&c.req, &m);
    } else if (strcmp(line, "data") == 0 && c.circuit) {
        uint8_t d[64];
        int n = pos_frame_encode_data(d, sizeof(d), c.circuit, (const uint8_t *)"park_client", 11);
        if (n > 0)
            sendto(c.fd, d, (size_t)n, 0, (struct sockaddr *)&c.to, pos_addr_len(&c.to));
    } else if (strcmp(line, "close") == 0 && c.qc) {
        ngtcp2_path_storage ps;
        ngtcp2_pkt_info pi;
        ngtcp2_connection_close_error ccerr;
        uint8_t d[1500];
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_connection_close_error_set_application_error(&ccerr, 0, NULL, 0);
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c.qc, &ps.path, &pi, d, sizeof(d),
                                                            &ccerr, pos_quic_now());
        if (n > 0)
            sendto(c.fd, d, (size_t)n, 0, (struct sockaddr *)&c.to, pos_addr_len(&c.to));
        conn_free();
        printf("{\"event\":\"closed\"}\n");
    } else if (strcmp(line, "quit") == 0) {
        c.seconds = 0;
    }
    fflush(stdout);
}

static void read_commands(void)
{
    ssize_t n = read(c.cmd_fd, c.cmdbuf + c.cmdlen, sizeof(c.cmdbuf) - 1 - c.cmdlen);
    char *nl;
    if (n <= 0)
        return;
    c.cmdlen += (size_t)n;
    c.cmdbuf[c.cmdlen] = 0;
    while ((nl = memchr(c.cmdbuf, '\n', c.cmdlen)) != NULL) {
        *nl = 0;
        command(c.cmdbuf);
        size_t used = (size_t)(nl - c.cmdbuf) + 1;
        memmove(c.cmdbuf, nl + 1, c.cmdlen - used);
        c.cmdlen -= used;
    }
}

/* park_datagram: an ACK or WAKE from the relay, checked like a client would. */
static void park_datagram(const uint8_t *buf, size_t len)
{
    pos_park_msg m;
    int ok = pos_park_decode(buf, len, &m) == 0 && m.record_id == c.record_id &&
             pos_park_verify(&m, c.key) == 0;
    if (m.type == POS_PARK_ACK) {
        printf("{\"event\":\"ack\",\"counter\":%llu,\"valid\":%s}\n", (unsigned long long)m.counter,
               ok ? "true" : "false");
    } else if (m.type == POS_PARK_WAKE) {
        int fresh = ok && m.counter > c.wake_seen;
        printf("{\"event\":\"wake\",\"counter\":%llu,\"valid\":%s,\"fresh\":%s}\n",
               (unsigned long long)m.counter, ok ? "true" : "false", fresh ? "true" : "false");
        if (fresh) {
            c.wake_seen = m.counter;
            if (c.wake_reconnect && !c.qc) {
                fflush(stdout);
                command("reconnect");
            }
        }
    } else {
        printf("{\"event\":\"stray\"}\n");
    }
    fflush(stdout);
}

static int quic_datagram(uint8_t *buf, size_t n, struct sockaddr_storage *from, socklen_t fl)
{
    ngtcp2_path path = {
        {(ngtcp2_sockaddr *)&c.local, pos_addr_len(&c.local)}, {(ngtcp2_sockaddr *)from, fl}, NULL};
    ngtcp2_pkt_info pi = {0};
    int rv = ngtcp2_conn_read_pkt(c.qc, &path, &pi, buf, n, pos_quic_now());
    if (rv != 0) {
        ngtcp2_connection_close_error e;
        ngtcp2_conn_get_connection_close_error(c.qc, &e);
        printf("{\"event\":\"relay_closed\",\"code\":%llu,\"rv\":\"%s\"}\n",
               (unsigned long long)e.error_code, ngtcp2_strerror(rv));
        fflush(stdout);
        conn_free();
        return -1;
    }
    return 0;
}

/* maybe_free: parked, PARKED acknowledged (its delayed ACK is out): the connection goes, silently.
 */
static void maybe_free(void)
{
    if (!c.qc || !c.parked || c.freeing ||
        (int64_t)(pos_quic_now() / 1000000) < c.parked_at_ms + 100)
        return;
    c.freeing = 1;
    write_out(); /* the ACK of PARKED's packet */
    conn_free();
    printf("{\"event\":\"freed\"}\n");
    fflush(stdout);
}

static int run(void)
{
    int64_t end = (int64_t)(pos_quic_now() / 1000000) + c.seconds * 1000;
    uint8_t buf[2048];

    while (c.seconds > 0 && (int64_t)(pos_quic_now() / 1000000) < end) {
        int64_t wait = 20;
        if (c.qc) {
            ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c.qc), now = pos_quic_now();
            int64_t w = exp > now ? (int64_t)((exp - now) / 1000000) + 1 : 0;
            if (w < wait)
                wait = w;
        }
        struct pollfd p = {c.fd, POLLIN, 0};
        if (poll(&p, 1, (int)wait) > 0) {
            struct sockaddr_storage from;
            socklen_t fl = sizeof(from);
            ssize_t n = recvfrom(c.fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
            pos_frame f;
            if (n > 0 && pos_park_is_park(buf, (size_t)n))
                park_datagram(buf, (size_t)n);
            else if (n > 0 && pos_frame_decode(buf, (size_t)n, &f) == 0 && f.type == POS_FRAME_DATA)
                printf("{\"event\":\"data\",\"circuit\":%u,\"len\":%zu}\n", f.circuit_id,
                       f.payload_len);
            else if (n > 0 && c.qc)
                quic_datagram(buf, (size_t)n, &from, fl);
            else if (n > 0)
                printf("{\"event\":\"stray\"}\n");
        }
        if (c.qc && ngtcp2_conn_get_expiry(c.qc) <= pos_quic_now() &&
            ngtcp2_conn_handle_expiry(c.qc, pos_quic_now()) != 0) {
            printf("{\"event\":\"relay_closed\",\"code\":0,\"rv\":\"timeout\"}\n");
            conn_free();
        }
        read_commands();
        write_out();
        maybe_free();
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"token", required_argument, NULL, 'k'},
        {"commands", required_argument, NULL, 'c'},
        {"seconds", required_argument, NULL, 's'},
        {"not-home", no_argument, NULL, 'n'},
        {"wake-reconnect", no_argument, NULL, 'w'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    const char *to = NULL, *cmds = NULL;
    pos_identity id;

    if (sodium_init() < 0)
        return 2;
    c.seconds = 10;
    c.fd = -1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            to = optarg;
            break;
        case 'k':
            c.token = optarg;
            break;
        case 'c':
            cmds = optarg;
            break;
        case 's':
            c.seconds = atol(optarg);
            break;
        case 'n':
            c.not_home = 1;
            break;
        case 'w':
            c.wake_reconnect = 1;
            break;
        default:
            return 2;
        }
    }
    if (!to || !c.token || !cmds || strlen(c.token) > POS_CTRL_MAX_TOKEN ||
        pos_addr_parse(to, strlen(to), 0, &c.to) != 0 ||
        (c.cmd_fd = open(cmds, O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "usage: park_client --to IP:PORT --token T --commands FILE "
                        "[--seconds S] [--not-home] [--wake-reconnect]\n");
        return 2;
    }
    pos_identity_generate(&id);
    pos_peer_id_format(id.public_key, c.peer_id);
    if (pos_tls_creds_new(&creds, &id) != 0 || open_socket() != 0) {
        fprintf(stderr, "park_client: set-up failed: %s\n", strerror(errno));
        return 2;
    }
    pos_identity_free(&id);
    c.s0.id = c.req.id = -1;
    printf("{\"event\":\"start\",\"peer_id\":\"%s\"}\n", c.peer_id);
    fflush(stdout);
    if (conn_new() != 0) {
        fprintf(stderr, "park_client: set-up failed\n");
        return 2;
    }
    run();
    printf("{\"event\":\"done\"}\n");
    fflush(stdout);
    conn_free();
    sodium_memzero(c.key, sizeof(c.key));
    sodium_memzero(c.conn_key, sizeof(c.conn_key));
    pos_tls_creds_del(creds);
    close(c.fd);
    close(c.cmd_fd);
    return 0;
}
