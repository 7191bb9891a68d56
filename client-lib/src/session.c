/*
 * Peer sessions (pos_p2p_session, see pos/p2p.h): one QUIC connection between
 * two devices, ALPN "pos-p2p/1", mutual TLS 1.3 pinned to peer ids, with
 * bidirectional streams. Both roles live here: the dialer (ngtcp2 client)
 * and the acceptor (ngtcp2 server on the endpoint's own sockets, created by
 * the endpoint for an Initial that no connection claims, or by a circuit's
 * first packet). Every ngtcp2 call of sessions is in this file; relay
 * requests and circuits are session_relay.c's.
 *
 * Paths. A direct path is (endpoint socket, peer address). A relayed path is
 * shown to ngtcp2 as (synthetic local address in 100.64.0.0/10, synthetic
 * remote address): packets ngtcp2 writes for it go out as relay data frames
 * on the circuit, and payloads of the circuit are read with that path. A
 * later move to a direct path is thus an ordinary client-side migration
 * (the local address differs).
 *
 * Streams keep what the application wrote in session_stream.c's buffers
 * until the peer acknowledges it. Received data goes straight to the
 * callback.
 */
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "addr.h"
#include "internal.h"
#include "quic_common.h"
#include "quic_version.h"
#include "session.h"
#include "session_stream.h"

#define KEEPALIVE_NS (10 * NGTCP2_SECONDS)
#define IDLE_TIMEOUT_NS (30 * NGTCP2_SECONDS)
#define MAX_PKTS_PER_WRITE 256

struct pos_p2p_session {
    struct ep_conn conn; /* first: ngtcp2's user_data starts with its cid_ops */
    pos_p2p_endpoint *ep;
    pos_p2p_session *prev, *next;
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    uint8_t creating; /* inside ngtcp2_conn_*_new (see cb_rand) */
    uint8_t dead;     /* closed or failed: no more I/O */
    uint8_t server;
    uint8_t owned;          /* the application holds it (dialed, or handed to on_session) */
    uint8_t free_requested; /* pos_p2p_session_close inside a callback */
    uint8_t close_pending;  /* ... and the CONNECTION_CLOSE it asked for */
    uint64_t close_code;
    char close_reason[128];
    uint8_t refuse; /* acceptor: the peer is not allowed; close after this packet */
    int busy;       /* depth of calls that may reach the callback */
    pos_p2p_session_cb cb;
    void *cb_arg;
    pos_p2p_session_status st;
    int sock; /* direct path: endpoint socket and peer address */
    struct sockaddr_storage remote;
    pos_p2p_relay *relay; /* relayed path: circuit and synthetic addresses */
    uint32_t circuit;
    struct sockaddr_storage syn_local, syn_remote;
    ngtcp2_cid odcid;    /* acceptor: the dialer's first DCID (its Initials until it learns ours) */
    int64_t deadline_ms; /* connecting: give up then */
    struct sstream *streams;
    struct sess_dial dial;
    uint8_t has_dial;
    int64_t dial_tick_ms; /* next look at the dial relay's state */
};

/* ---- the table ---- */

static const struct ep_conn_ops table_ops, session_ops;

struct sess_table *sess_table_of(const pos_p2p_endpoint *ep)
{
    return (struct sess_table *)ep_listener(ep);
}

struct sess_table *sess_table_get(pos_p2p_endpoint *ep)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t && (t = calloc(1, sizeof(*t))) != NULL) {
        ep_conn_init(&t->conn, ep, &table_ops);
        ep_set_listener(ep, &t->conn);
    }
    return t;
}

pos_p2p_session *sess_next(const pos_p2p_session *s)
{
    return s->next;
}

struct sess_dial *sess_dial_of(pos_p2p_session *s)
{
    return s->has_dial ? &s->dial : NULL;
}

const char *sess_expected_peer(const pos_p2p_session *s)
{
    return s->st.peer_id;
}

int sess_is_dialing(const pos_p2p_session *s)
{
    return !s->dead && s->has_dial && !s->qc;
}

void sess_set_relay_id(pos_p2p_session *s, const char *relay_id, const char *remote)
{
    snprintf(s->st.relay_id, sizeof(s->st.relay_id), "%s", relay_id);
    snprintf(s->st.remote, sizeof(s->st.remote), "%s", remote);
}

pos_p2p_session *sess_alloc(pos_p2p_endpoint *ep, int server)
{
    struct sess_table *t = sess_table_get(ep);
    pos_p2p_session *s;
    if (!t || t->n >= SESS_MAX)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    ep_conn_init(&s->conn, ep, &session_ops);
    s->ep = ep;
    s->server = (uint8_t)server;
    s->st.server = server;
    s->sock = -1;
    s->next = t->list;
    if (t->list)
        t->list->prev = s;
    t->list = s;
    t->n++;
    return s;
}

static void emit(pos_p2p_session *s, pos_p2p_session_event *ev)
{
    if (!s->cb || !s->owned)
        return;
    s->busy++;
    s->cb(s->cb_arg, s, ev);
    s->busy--;
}

/* ---- ending ---- */

static void drop_cids(pos_p2p_session *s)
{
    pos_quic_drop_cids(s->qc, s);
}

void sess_fail(pos_p2p_session *s, int err, const char *reason)
{
    pos_p2p_session_event ev;
    if (s->dead)
        return;
    s->dead = 1;
    s->st.state = POS_P2P_SESSION_CLOSED;
    s->st.error = err;
    if (reason && !s->st.reason[0])
        snprintf(s->st.reason, sizeof(s->st.reason), "%s", reason);
    drop_cids(s);
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_SESSION_EV_CLOSED;
    ev.stream = -1;
    ev.error = err;
    ev.code = s->st.close_code;
    ev.reason = s->st.reason;
    emit(s, &ev);
}

/* send_pkt sends one packet ngtcp2 wrote for |path|: relayed or direct. */
static void send_pkt(pos_p2p_session *s, const ngtcp2_path *path, const uint8_t *data, size_t len)
{
    const struct sockaddr *to = (const struct sockaddr *)path->remote.addr;
    if (s->relay && path->local.addrlen == sizeof(struct sockaddr_in) &&
        memcmp(path->local.addr, &s->syn_local, sizeof(struct sockaddr_in)) == 0) {
        pos_p2p_relay_send_data(s->relay, s->circuit, data, len);
    } else {
        ep_send(s->ep, to->sa_family == AF_INET ? 0 : 1, data, len, to, path->remote.addrlen);
    }
    s->st.bytes_sent += len;
}

static void send_close(pos_p2p_session *s, const ngtcp2_connection_close_error *ccerr)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n;
    if (!s->qc || s->dead || ngtcp2_conn_is_in_closing_period(s->qc) ||
        ngtcp2_conn_is_in_draining_period(s->qc))
        return;
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(s->qc, &ps.path, &pi, ep_txbuf(s->ep), EP_MAX_UDP, ccerr,
                                           pos_quic_now());
    if (n > 0)
        send_pkt(s, &ps.path, ep_txbuf(s->ep), (size_t)n);
}

static void close_app(pos_p2p_session *s, uint64_t code, const char *reason)
{
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, code, (const uint8_t *)reason,
                                                        reason ? strlen(reason) : 0);
    send_close(s, &ccerr);
}

static void describe_mismatch(pos_p2p_session *s, char *why, size_t cap)
{
    if (s->relay)
        snprintf(why, cap,
                 "wrong peer id: the peer reached through the relay is not %s (its key "
                 "belongs to another peer id)",
                 s->st.peer_id);
    else
        snprintf(why, cap,
                 "wrong peer id: the device at %s is not %s (its key belongs to another "
                 "peer id)",
                 s->st.remote, s->st.peer_id);
}

static void fail_liberr(pos_p2p_session *s, int liberr)
{
    ngtcp2_connection_close_error ccerr;
    int err = POS_P2P_ERR_HANDSHAKE;
    char why[300];

    ngtcp2_connection_close_error_default(&ccerr);
    if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &ccerr, ngtcp2_conn_get_tls_alert(s->qc), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr, NULL, 0);
    send_close(s, &ccerr);
    if (s->pin.mismatch) {
        err = POS_P2P_ERR_PEER_MISMATCH;
        describe_mismatch(s, why, sizeof(why));
    } else if (ngtcp2_conn_get_handshake_completed(s->qc)) {
        err = POS_P2P_ERR_PROTOCOL;
        snprintf(why, sizeof(why), "QUIC error: %s", ngtcp2_strerror(liberr));
    } else {
        snprintf(why, sizeof(why), "handshake with %s failed: %s",
                 s->relay ? "the peer through the relay" : s->st.remote, ngtcp2_strerror(liberr));
    }
    sess_fail(s, err, why);
}

/* on_peer_close reads why the peer closed the session. */
static void on_peer_close(pos_p2p_session *s)
{
    ngtcp2_connection_close_error cc;
    char reason[257];
    size_t n;
    int err = 0;

    ngtcp2_conn_get_connection_close_error(s->qc, &cc);
    n = cc.reasonlen < sizeof(reason) - 1 ? cc.reasonlen : sizeof(reason) - 1;
    /* from the network: printable ASCII only */
    for (size_t i = 0; i < n; i++)
        reason[i] = (cc.reason[i] >= 0x20 && cc.reason[i] < 0x7f) ? (char)cc.reason[i] : '?';
    reason[n] = 0;
    s->st.close_code = cc.error_code;
    if (cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
        if (cc.error_code == POS_P2P_CLOSE_NOT_ALLOWED) {
            err = POS_P2P_ERR_NOT_ALLOWED;
            snprintf(reason, sizeof(reason),
                     "the peer does not allow this device (it is not in the peer's allow list)");
        } else if (cc.error_code != 0) {
            err = POS_P2P_ERR_CLOSED;
        }
        if (!reason[0])
            snprintf(reason, sizeof(reason), "closed by the peer (code 0x%llx)",
                     (unsigned long long)cc.error_code);
    } else if (cc.error_code != NGTCP2_NO_ERROR || s->st.state != POS_P2P_SESSION_OPEN) {
        err = s->st.state == POS_P2P_SESSION_OPEN ? POS_P2P_ERR_CLOSED : POS_P2P_ERR_HANDSHAKE;
        if (!n)
            snprintf(reason, sizeof(reason), "closed by the peer (QUIC error 0x%llx)",
                     (unsigned long long)cc.error_code);
    }
    sess_fail(s, err, reason[0] ? reason : "closed by the peer");
}

/* ---- writing ---- */

static void conn_write(pos_p2p_session *s)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = pos_quic_now();
    uint8_t *txbuf = ep_txbuf(s->ep);

    if (s->dead || !s->qc || s->free_requested)
        return;
    ngtcp2_path_storage_zero(&ps);
    s->busy++;
    for (int i = 0; i < MAX_PKTS_PER_WRITE && !s->dead; i++) {
        ngtcp2_ssize wlen = -1, n;
        ngtcp2_vec v = {NULL, 0};
        size_t nv = 0;
        int64_t sid = -1;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
        struct sstream *st = sstream_next_output(s->streams);
        if (st) {
            const uint8_t *data;
            int fin;
            sstream_chunk(st, &data, &v.len, &fin);
            sid = sstream_id(st);
            if (v.len) {
                v.base = (uint8_t *)data; /* ngtcp2 only reads it */
                nv = 1;
            }
            if (fin)
                flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        n = ngtcp2_conn_writev_stream(s->qc, &ps.path, &pi, txbuf, SESS_MAX_UDP_PAYLOAD, &wlen,
                                      flags, sid, &v, nv, ts);
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
            sstream_block(st);
            continue;
        }
        if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
            sstream_finish(st);
            continue;
        }
        if (n < 0) {
            fail_liberr(s, (int)n);
            break;
        }
        if (st && wlen >= 0)
            sstream_sent(st, (size_t)wlen, (flags & NGTCP2_WRITE_STREAM_FLAG_FIN) != 0);
        if (n == 0)
            break;
        send_pkt(s, &ps.path, txbuf, (size_t)n);
    }
    if (!s->dead)
        ngtcp2_conn_update_pkt_tx_time(s->qc, ts);
    sstreams_unblock(s->streams);
    s->busy--;
}

/* ---- ngtcp2 callbacks ---- */

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    pos_p2p_session *s = user_data;
    struct sess_table *t = sess_table_of(s->ep);
    (void)qc;
    if (!s->pin.has_peer)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (s->server) {
        pos_peer_id_format(s->pin.peer_key, s->st.peer_id);
        if (t->allow && !t->allow(t->arg, s->st.peer_id)) {
            s->refuse = 1; /* closed with POS_P2P_CLOSE_NOT_ALLOWED once read_pkt returns */
            return 0;
        }
        /*
         * Handed over now, inside read_pkt: the dialer's first stream data may
         * sit in the same datagram, right after its Finished.
         */
        s->st.state = POS_P2P_SESSION_OPEN;
        s->owned = 1;
        if (t->on_session)
            t->on_session(t->arg, s);
        return 0;
    }
    s->st.state = POS_P2P_SESSION_OPEN;
    return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    pos_p2p_session *s = user_data;
    pos_p2p_session_event ev;
    (void)offset;
    (void)stream_user_data;
    ngtcp2_conn_extend_max_stream_offset(qc, stream_id, datalen);
    ngtcp2_conn_extend_max_offset(qc, datalen);
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_SESSION_EV_DATA;
    ev.stream = stream_id;
    ev.data = data;
    ev.len = datalen;
    ev.fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0;
    emit(s, &ev);
    return 0;
}

static int cb_stream_open(ngtcp2_conn *qc, int64_t stream_id, void *user_data)
{
    pos_p2p_session *s = user_data;
    pos_p2p_session_event ev;
    (void)qc;
    if (!sstream_find(s->streams, stream_id) && !sstream_add(&s->streams, stream_id))
        return NGTCP2_ERR_CALLBACK_FAILURE;
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_SESSION_EV_STREAM;
    ev.stream = stream_id;
    emit(s, &ev);
    return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *qc, int64_t stream_id, uint64_t offset,
                                       uint64_t datalen, void *user_data, void *stream_user_data)
{
    pos_p2p_session *s = user_data;
    struct sstream *st = sstream_find(s->streams, stream_id);
    (void)qc;
    (void)offset;
    (void)stream_user_data;
    if (!st)
        return 0;
    if (sstream_acked(st, (size_t)datalen)) {
        pos_p2p_session_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = POS_P2P_SESSION_EV_WRITABLE;
        ev.stream = stream_id;
        emit(s, &ev);
    }
    return 0;
}

static int cb_stream_reset(ngtcp2_conn *qc, int64_t stream_id, uint64_t final_size,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    pos_p2p_session *s = user_data;
    pos_p2p_session_event ev;
    (void)qc;
    (void)final_size;
    (void)stream_user_data;
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_SESSION_EV_STREAM_RESET;
    ev.stream = stream_id;
    ev.code = app_error_code;
    emit(s, &ev);
    return 0;
}

static int cb_stream_close(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    pos_p2p_session *s = user_data;
    (void)qc;
    (void)flags;
    (void)app_error_code;
    (void)stream_user_data;
    sstream_remove(&s->streams, stream_id);
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    pos_p2p_session *s =
        (pos_p2p_session *)((char *)ref->user_data - offsetof(pos_p2p_session, pin));
    return s->qc;
}

static void init_callbacks(ngtcp2_callbacks *cb, int server)
{
    pos_quic_callbacks_init(cb, server);
    pos_quic_callbacks_cids(cb);
    cb->handshake_completed = cb_handshake_completed;
    cb->recv_stream_data = cb_recv_stream_data;
    cb->stream_open = cb_stream_open;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
    cb->stream_reset = cb_stream_reset;
    cb->stream_close = cb_stream_close;
}

/* ---- creating connections ---- */

static void fill_path(pos_p2p_session *s, ngtcp2_path *path)
{
    if (s->relay) {
        path->local.addr = (ngtcp2_sockaddr *)&s->syn_local;
        path->local.addrlen = sizeof(struct sockaddr_in);
        path->remote.addr = (ngtcp2_sockaddr *)&s->syn_remote;
        path->remote.addrlen = sizeof(struct sockaddr_in);
    } else {
        path->local.addr = (ngtcp2_sockaddr *)ep_local(s->ep, s->sock, &path->local.addrlen);
        path->remote.addr = (ngtcp2_sockaddr *)&s->remote;
        path->remote.addrlen = pos_addr_len(&s->remote);
    }
    path->user_data = NULL;
}

/* set_synthetic gives |s| a relayed path: 100.64.0.0/10 addresses no socket ever binds. */
static void set_synthetic(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id)
{
    struct sockaddr_in *l = (struct sockaddr_in *)&s->syn_local;
    struct sockaddr_in *rm = (struct sockaddr_in *)&s->syn_remote;
    uint32_t n = ++sess_table_of(s->ep)->syn_counter & 0x3fffff;
    s->relay = r;
    s->circuit = circuit_id;
    memset(&s->syn_local, 0, sizeof(s->syn_local));
    memset(&s->syn_remote, 0, sizeof(s->syn_remote));
    l->sin_family = rm->sin_family = AF_INET;
    l->sin_addr.s_addr = htonl(0x64400000u | n); /* 100.64.0.0 + n */
    l->sin_port = htons(1);
    rm->sin_addr.s_addr = htonl(0x647ffffeu); /* 100.127.255.254: the peer, through the relay */
    rm->sin_port = htons(POS_P2P_DEFAULT_PORT);
    s->st.path = POS_P2P_PATH_RELAYED;
    s->st.circuit_id = circuit_id;
}

static void init_settings(ngtcp2_settings *settings, ngtcp2_transport_params *params,
                          pos_p2p_session *s)
{
    pos_quic_settings_init(settings, &s->creating);
    /* relayed packets carry a 5-byte frame header and must still fit 1452 bytes */
    settings->max_tx_udp_payload_size = SESS_MAX_UDP_PAYLOAD;
    settings->max_window = 24 * 1024 * 1024;
    settings->max_stream_window = 16 * 1024 * 1024;
    ngtcp2_transport_params_default(params);
    params->initial_max_streams_bidi = 64;
    params->initial_max_streams_uni = 0;
    params->initial_max_stream_data_bidi_local = 1024 * 1024;
    params->initial_max_stream_data_bidi_remote = 1024 * 1024;
    params->initial_max_data = 4 * 1024 * 1024;
    params->max_idle_timeout = IDLE_TIMEOUT_NS;
    params->active_connection_id_limit = 4; /* spares for a later migration */
}

static int attach_tls(pos_p2p_session *s)
{
    if (pos_tls_session_new(&s->tls, ep_creds(s->ep), s->server, POS_P2P_SESSION_ALPN) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    if ((s->server ? ngtcp2_crypto_gnutls_configure_server_session(s->tls)
                   : ngtcp2_crypto_gnutls_configure_client_session(s->tls)) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    if (s->server)
        pos_quic_tls_require_transport_params(s->tls);
    s->ref.get_conn = get_conn;
    s->ref.user_data = &s->pin;
    gnutls_session_set_ptr(s->tls, &s->ref);
    ngtcp2_conn_set_tls_native_handle(s->qc, s->tls);
    return 0;
}

static int make_client_conn(pos_p2p_session *s)
{
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;
    int rv;

    init_callbacks(&cbs, 0);
    init_settings(&settings, &params, s);
    dcid.datalen = 16;
    randombytes_buf(dcid.data, dcid.datalen);
    scid.datalen = EP_CID_LEN;
    randombytes_buf(scid.data, scid.datalen);
    fill_path(s, &path);
    s->creating = 1;
    rv = ngtcp2_conn_client_new(&s->qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs, &settings,
                                &params, NULL, s);
    s->creating = 0;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if ((rv = attach_tls(s)) != 0)
        return rv;
    if (ep_cid_add(&s->conn, scid.data) != 0)
        return POS_P2P_ERR_NOMEM;
    ngtcp2_conn_set_keep_alive_timeout(s->qc, KEEPALIVE_NS);
    return 0;
}

static int make_server_conn(pos_p2p_session *s, const ngtcp2_pkt_hd *hd)
{
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid scid;
    ngtcp2_path path;
    int rv;

    init_callbacks(&cbs, 1);
    init_settings(&settings, &params, s);
    params.original_dcid = hd->dcid;
    s->odcid = hd->dcid;
    scid.datalen = EP_CID_LEN;
    randombytes_buf(scid.data, scid.datalen);
    fill_path(s, &path);
    s->creating = 1;
    rv = ngtcp2_conn_server_new(&s->qc, &hd->scid, &scid, &path, hd->version, &cbs, &settings,
                                &params, NULL, s);
    s->creating = 0;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if ((rv = attach_tls(s)) != 0)
        return rv;
    if (ep_cid_add(&s->conn, scid.data) != 0)
        return POS_P2P_ERR_NOMEM;
    ngtcp2_conn_set_keep_alive_timeout(s->qc, KEEPALIVE_NS);
    return 0;
}

/* ---- input ---- */

static void maybe_free(pos_p2p_session *s)
{
    if (s->busy != 0 || !s->free_requested)
        return;
    if (s->close_pending && !s->dead && s->qc)
        close_app(s, s->close_code, s->close_reason[0] ? s->close_reason : NULL);
    sess_release(s);
}

/* after_read: hand a fresh acceptor session to the application, or refuse it. */
static void after_handshake(pos_p2p_session *s)
{
    pos_p2p_session_event ev;

    if (s->tls && ngtcp2_conn_get_handshake_completed(s->qc)) {
        /* keys live in ngtcp2 now; the TLS session is dead weight (no tickets) */
        ngtcp2_conn_set_tls_native_handle(s->qc, NULL);
        gnutls_deinit(s->tls);
        s->tls = NULL;
        if (s->refuse) {
            close_app(s, POS_P2P_CLOSE_NOT_ALLOWED, "peer not allowed");
            sess_fail(s, POS_P2P_ERR_NOT_ALLOWED, "refused: the peer is not in the allow list");
            return;
        }
        if (!s->server) {
            memset(&ev, 0, sizeof(ev));
            ev.type = POS_P2P_SESSION_EV_OPEN;
            ev.stream = -1;
            emit(s, &ev);
        }
    }
}

static void read_pkt(pos_p2p_session *s, const ngtcp2_path *path, const uint8_t *data, size_t len)
{
    ngtcp2_pkt_info pi = {0};
    int rv;

    if (s->dead || s->free_requested)
        return;
    s->busy++;
    s->st.bytes_received += len;
    rv = ngtcp2_conn_read_pkt(s->qc, path, &pi, data, len, pos_quic_now());
    if (rv == NGTCP2_ERR_DRAINING)
        on_peer_close(s);
    else if (rv != 0)
        fail_liberr(s, rv);
    else
        after_handshake(s);
    conn_write(s);
    s->busy--;
    maybe_free(s);
}

static void sess_input(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                       const struct sockaddr *from, socklen_t fromlen)
{
    pos_p2p_session *s = (pos_p2p_session *)c;
    ngtcp2_path path;
    path.local.addr = (ngtcp2_sockaddr *)ep_local(s->ep, sock, &path.local.addrlen);
    path.remote.addr = (ngtcp2_sockaddr *)from;
    path.remote.addrlen = fromlen;
    path.user_data = NULL;
    read_pkt(s, &path, data, len);
}

/* find_by_odcid: an acceptor still in its handshake whose dialer used |dcid| first. */
static pos_p2p_session *find_by_odcid(struct sess_table *t, const ngtcp2_cid *dcid)
{
    for (pos_p2p_session *s = t->list; s; s = s->next)
        if (s->server && !s->dead && s->odcid.datalen == dcid->datalen &&
            memcmp(s->odcid.data, dcid->data, dcid->datalen) == 0)
            return s;
    return NULL;
}

/*
 * accept_initial makes an acceptor session for a dialer's first Initial |hd|
 * (direct: |sock|/|from|; relayed: |r|/|circuit_id|). Returns it, or NULL.
 */
static pos_p2p_session *accept_initial(pos_p2p_endpoint *ep, const ngtcp2_pkt_hd *hd, int sock,
                                       const struct sockaddr *from, socklen_t fromlen,
                                       pos_p2p_relay *r, uint32_t circuit_id)
{
    pos_p2p_session *s = sess_alloc(ep, 1);
    if (!s)
        return NULL;
    if (r) {
        set_synthetic(s, r, circuit_id);
    } else {
        s->sock = sock;
        memcpy(&s->remote, from, fromlen);
        s->st.path = POS_P2P_PATH_DIRECT;
        pos_addr_format(from, s->st.remote, sizeof(s->st.remote));
    }
    s->deadline_ms = pos_p2p_now_ms() + 15000;
    if (make_server_conn(s, hd) != 0) {
        sess_release(s);
        return NULL;
    }
    return s;
}

/* sess_unclaimed: a QUIC packet for no known connection id (a new peer's Initial?) */
static void sess_unclaimed(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                           const struct sockaddr *from, socklen_t fromlen)
{
    struct sess_table *t = (struct sess_table *)c;
    pos_p2p_endpoint *ep = c->ep;
    ngtcp2_pkt_hd hd;
    pos_p2p_session *s;

    uint8_t r;
    ssize_t n;

    if (!t->listening)
        return;
    /* v1 only: ngtcp2_accept also takes draft-29 and v2, which end in an assertion */
    randombytes_buf(&r, 1);
    n = pos_quic_version_answer(ep_txbuf(ep), EP_MAX_UDP, data, len, r);
    if (n > 0)
        ep_send(ep, sock, ep_txbuf(ep), (size_t)n, from, fromlen);
    if (n != POS_QUIC_VERSION_OK)
        return;
    if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL ||
        hd.version != NGTCP2_PROTO_VER_V1)
        return;
    s = find_by_odcid(t, &hd.dcid);
    if (!s)
        s = accept_initial(ep, &hd, sock, from, fromlen, NULL, 0);
    if (s)
        sess_input(&s->conn, sock, data, len, from, fromlen);
}

void sess_relayed_input(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                        const uint8_t *data, size_t len)
{
    struct sess_table *t = sess_table_of(ep);
    pos_p2p_session *s;
    ngtcp2_path path;

    if (!t || len < 5)
        return;
    if ((data[0] & 0x80) && !(data[1] == 0 && data[2] == 0 && data[3] == 0 && data[4] <= 1))
        return; /* neither v1 nor Version Negotiation: ngtcp2 must not see it */
    for (s = t->list; s; s = s->next)
        if (s->relay == r && s->circuit == circuit_id && s->qc && !s->dead)
            break;
    if (!s) {
        /* the dialer's first Initial on a circuit we accepted */
        ngtcp2_pkt_hd hd;
        size_t i;
        for (i = 0; i < t->n_circuits; i++)
            if (t->circuits[i].r == r && t->circuits[i].circuit_id == circuit_id)
                break;
        if (i == t->n_circuits || !t->listening)
            return;
        if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL ||
            hd.version != NGTCP2_PROTO_VER_V1)
            return; /* another version over a circuit: silence (see sess_unclaimed) */
        s = accept_initial(ep, &hd, -1, NULL, 0, r, circuit_id);
        if (!s)
            return;
        t->circuits[i] = t->circuits[--t->n_circuits];
    }
    fill_path(s, &path);
    read_pkt(s, &path, data, len);
}

void sess_circuit_closed(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t)
        return;
    for (size_t i = 0; i < t->n_circuits; i++) {
        if (t->circuits[i].r == r && t->circuits[i].circuit_id == circuit_id) {
            t->circuits[i] = t->circuits[--t->n_circuits];
            break;
        }
    }
    for (pos_p2p_session *s = t->list, *next; s; s = next) {
        next = s->next;
        if (s->relay == r && s->circuit == circuit_id && !s->dead) {
            s->busy++;
            sess_fail(s, POS_P2P_ERR_CIRCUIT_CLOSED,
                      "the relay circuit ended (the peer left or the relay closed it)");
            s->busy--;
            maybe_free(s);
        }
    }
}

void sess_relay_gone(pos_p2p_endpoint *ep, pos_p2p_relay *r)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t)
        return;
    for (size_t i = 0; i < t->n_circuits;) {
        if (t->circuits[i].r == r)
            t->circuits[i] = t->circuits[--t->n_circuits];
        else
            i++;
    }
    for (pos_p2p_session *s = t->list; s; s = s->next) {
        if (s->dead || (s->relay != r && !(s->has_dial && !s->qc && s->dial.relay == r)))
            continue;
        s->busy++;
        sess_fail(s, POS_P2P_ERR_CIRCUIT_CLOSED, "the relay connection was closed");
        s->busy--;
        /* freed by the timers if the application closed it from the callback */
    }
}

int sess_start_relayed(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id)
{
    int rv;
    set_synthetic(s, r, circuit_id);
    rv = make_client_conn(s);
    if (rv != 0)
        return rv;
    conn_write(s);
    return 0;
}

/* ---- timers ---- */

static int64_t deadline_of(const pos_p2p_session *s)
{
    ngtcp2_tstamp exp;
    int64_t d = -1;
    if (s->free_requested)
        return 0; /* closed inside a callback that nothing else follows: freed at once */
    if (s->dead)
        return s->owned ? -1 : 0; /* an unowned dead session is freed at once */
    if (s->qc) {
        exp = ngtcp2_conn_get_expiry(s->qc);
        d = exp == UINT64_MAX ? -1 : (int64_t)(exp / 1000000) + 1;
    } else if (s->has_dial) {
        d = s->dial_tick_ms; /* waiting for a (redirect) relay to accept us */
    }
    if (s->st.state == POS_P2P_SESSION_CONNECTING && (d < 0 || s->deadline_ms < d))
        d = s->deadline_ms;
    return d;
}

static int64_t sess_deadline_ms(const struct ep_conn *c)
{
    const struct sess_table *t = (const struct sess_table *)c;
    int64_t best = -1;
    for (const pos_p2p_session *s = t->list; s; s = s->next) {
        int64_t d = deadline_of(s);
        if (d >= 0 && (best < 0 || d < best))
            best = d;
    }
    return best;
}

static void on_deadline(pos_p2p_session *s)
{
    int rv;
    if (s->st.state == POS_P2P_SESSION_CONNECTING && pos_p2p_now_ms() >= s->deadline_ms) {
        char why[200];
        if (s->qc)
            close_app(s, 0, NULL);
        if (s->relay || s->has_dial)
            snprintf(why, sizeof(why), "no answer from the peer through the relay in time");
        else
            snprintf(why, sizeof(why), "no answer from %s in time", s->st.remote);
        sess_fail(s, POS_P2P_ERR_TIMEOUT, why);
        return;
    }
    if (!s->qc) {
        s->dial_tick_ms = pos_p2p_now_ms() + 20;
        s->dial.ops->tick(s);
        return;
    }
    rv = ngtcp2_conn_handle_expiry(s->qc, pos_quic_now());
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        sess_fail(s, POS_P2P_ERR_CLOSED, "the peer stopped answering (idle timeout)");
        return;
    }
    if (rv != 0) {
        fail_liberr(s, rv);
        return;
    }
    conn_write(s);
}

static void sess_on_deadlines(struct ep_conn *c, int64_t now_ms)
{
    struct sess_table *t = (struct sess_table *)c;
    int64_t now = pos_p2p_now_ms();
    (void)now_ms; /* read after the relay connections' timers, as always */
    for (pos_p2p_session *s = t->list, *next; s; s = next) {
        next = s->next;
        if (s->free_requested) {
            maybe_free(s);
            continue;
        }
        if (s->dead) {
            if (!s->owned)
                sess_release(s);
            continue;
        }
        int64_t d = deadline_of(s);
        if (d >= 0 && d <= now) {
            s->busy++;
            on_deadline(s);
            s->busy--;
            maybe_free(s);
        }
    }
    for (size_t i = 0; i < t->n_circuits;) {
        if (t->circuits[i].expires_ms <= now)
            t->circuits[i] = t->circuits[--t->n_circuits];
        else
            i++;
    }
}

/* ---- freeing ---- */

void sess_release(pos_p2p_session *s)
{
    struct sess_table *t = sess_table_of(s->ep);
    drop_cids(s);
    sstream_free_all(&s->streams);
    if (s->qc)
        ngtcp2_conn_del(s->qc);
    if (s->tls)
        gnutls_deinit(s->tls);
    if (s->has_dial)
        s->dial.ops->release(s->ep, &s->dial);
    if (s->prev)
        s->prev->next = s->next;
    else
        t->list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    t->n--;
    free(s);
}

static void sess_free_all(struct ep_conn *c)
{
    struct sess_table *t = (struct sess_table *)c;
    while (t->list)
        sess_release(t->list);
    ep_set_listener(c->ep, NULL);
    free(t);
}

static const struct ep_conn_ops table_ops = {sess_unclaimed, NULL, sess_deadline_ms,
                                             sess_on_deadlines, sess_free_all};
static const struct ep_conn_ops session_ops = {sess_input, NULL, NULL, NULL, NULL};

/* ---- public API ---- */

int pos_p2p_session_connect_addr(pos_p2p_endpoint *ep, const char *addr, const char *peer_id,
                                 int timeout_ms, pos_p2p_session **out)
{
    struct sockaddr_storage ss;
    uint8_t key[32];
    pos_p2p_session *s;
    int sock, rv;

    if (!ep || !addr || !peer_id || !out || timeout_ms <= 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (pos_addr_parse(addr, strnlen(addr, POS_P2P_ADDR_STRLEN), POS_P2P_DEFAULT_PORT, &ss) != 0)
        return POS_P2P_ERR_BAD_ADDRESS;
    sock = ss.ss_family == AF_INET ? 0 : 1;
    if (!ep_has_sock(ep, sock))
        return POS_P2P_ERR_NO_ROUTE;
    s = sess_alloc(ep, 0);
    if (!s)
        return POS_P2P_ERR_NOMEM;
    s->owned = 1;
    memcpy(s->pin.expect_key, key, 32);
    s->pin.has_expected = 1;
    pos_peer_id_format(key, s->st.peer_id);
    s->sock = sock;
    s->remote = ss;
    s->st.path = POS_P2P_PATH_DIRECT;
    pos_addr_format((struct sockaddr *)&ss, s->st.remote, sizeof(s->st.remote));
    s->deadline_ms = pos_p2p_now_ms() + timeout_ms;
    rv = make_client_conn(s);
    if (rv != 0) {
        sess_release(s);
        return rv;
    }
    conn_write(s);
    *out = s;
    return 0;
}

pos_p2p_session *sess_new_dialer(pos_p2p_endpoint *ep, const char *peer_id, int timeout_ms,
                                 const struct sess_dial_ops *ops)
{
    uint8_t key[32];
    pos_p2p_session *s;
    if (pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return NULL;
    s = sess_alloc(ep, 0);
    if (!s)
        return NULL;
    s->owned = 1;
    s->has_dial = 1;
    s->dial.ops = ops;
    memcpy(s->pin.expect_key, key, 32);
    s->pin.has_expected = 1;
    pos_peer_id_format(key, s->st.peer_id);
    s->st.path = POS_P2P_PATH_RELAYED;
    s->deadline_ms = pos_p2p_now_ms() + timeout_ms;
    return s;
}

int pos_p2p_endpoint_listen(pos_p2p_endpoint *ep, pos_p2p_allow_cb allow,
                            pos_p2p_accept_cb on_session, void *arg)
{
    struct sess_table *t;
    if (!ep || !on_session)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    t = sess_table_get(ep);
    if (!t)
        return POS_P2P_ERR_NOMEM;
    t->listening = 1;
    t->allow = allow;
    t->on_session = on_session;
    t->arg = arg;
    return 0;
}

void pos_p2p_session_set_callback(pos_p2p_session *s, pos_p2p_session_cb cb, void *arg)
{
    s->cb = cb;
    s->cb_arg = arg;
}

void pos_p2p_session_get_status(const pos_p2p_session *s, pos_p2p_session_status *out)
{
    *out = s->st;
    if (s->qc && !s->dead) {
        ngtcp2_conn_stat cs;
        ngtcp2_conn_get_conn_stat((ngtcp2_conn *)s->qc, &cs);
        out->rtt_ms = (double)cs.smoothed_rtt / 1e6;
    }
}

int pos_p2p_session_open_stream(pos_p2p_session *s, int64_t *stream)
{
    int64_t id;
    int rv;
    if (!s || !stream || s->dead || s->st.state != POS_P2P_SESSION_OPEN)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = ngtcp2_conn_open_bidi_stream(s->qc, &id, NULL);
    if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
        return POS_P2P_ERR_STREAM_LIMIT;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if (!sstream_add(&s->streams, id)) {
        ngtcp2_conn_shutdown_stream(s->qc, id, 0);
        return POS_P2P_ERR_NOMEM;
    }
    *stream = id;
    return 0;
}

size_t pos_p2p_session_write_room(const pos_p2p_session *s, int64_t stream)
{
    const struct sstream *st = s->dead ? NULL : sstream_find(s->streams, stream);
    return st ? sstream_room(st) : 0;
}

int pos_p2p_session_write(pos_p2p_session *s, int64_t stream, const uint8_t *data, size_t len,
                          int fin, size_t *taken)
{
    struct sstream *st;
    size_t n;
    if (taken)
        *taken = 0;
    if (!s || (len && !data) || s->dead || s->st.state != POS_P2P_SESSION_OPEN)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    st = sstream_find(s->streams, stream);
    if (!st || !sstream_open(st))
        return POS_P2P_ERR_NO_STREAM;
    if (sstream_write(st, data, len, fin, &n) != 0)
        return POS_P2P_ERR_NOMEM;
    if (taken)
        *taken = n;
    if (!s->busy)
        conn_write(s);
    return 0;
}

int pos_p2p_session_reset_stream(pos_p2p_session *s, int64_t stream, uint64_t code)
{
    struct sstream *st;
    if (!s || s->dead)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    st = sstream_find(s->streams, stream);
    if (!st)
        return POS_P2P_ERR_NO_STREAM;
    sstream_finish(st);
    ngtcp2_conn_shutdown_stream(s->qc, stream, code);
    if (!s->busy)
        conn_write(s);
    return 0;
}

static int settled(void *arg)
{
    const pos_p2p_session *s = arg;
    return s->st.state != POS_P2P_SESSION_CONNECTING;
}

int pos_p2p_session_wait_open(pos_p2p_session *s, int timeout_ms)
{
    int rv;
    if (!s)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = pos_p2p_endpoint_run(s->ep, timeout_ms, settled, s);
    if (rv != 0)
        return rv;
    return s->st.state == POS_P2P_SESSION_OPEN ? 0 : s->st.error ? s->st.error : POS_P2P_ERR_CLOSED;
}

void pos_p2p_session_close(pos_p2p_session *s, uint64_t code, const char *reason)
{
    if (!s)
        return;
    s->owned = 0; /* no more events: the application asked */
    if (s->busy) {
        /*
         * Inside a callback, perhaps inside ngtcp2: the CONNECTION_CLOSE is
         * written and the session freed once the outermost call returns.
         */
        if (!s->dead && s->qc && !s->close_pending) {
            s->close_pending = 1;
            s->close_code = code;
            snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason ? reason : "");
        }
        s->free_requested = 1;
        return;
    }
    if (!s->dead && s->qc)
        close_app(s, code, reason);
    sess_release(s);
}

int pos_p2p_relay_pick_home(const double *rtt_ms, size_t n, int current)
{
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (rtt_ms[i] >= 0 && (best < 0 || rtt_ms[i] < rtt_ms[best]))
            best = (int)i;
    if (best < 0)
        return -1;
    if (current >= 0 && (size_t)current < n && rtt_ms[current] >= 0) {
        double cur = rtt_ms[current], b = rtt_ms[best];
        /* switch only for a clear gain: at least 30% and 10 ms faster */
        if (!(b <= cur * 0.7 && cur - b >= 10.0))
            return current;
    }
    return best;
}
