/*
 * One peer session (pos_p2p_session, see pos/p2p.h): a QUIC connection
 * between two devices, ALPN "pos-p2p/1", mutual TLS 1.3 pinned to peer ids,
 * with bidirectional streams. Both roles live here: the dialer (ngtcp2
 * client) and the acceptor (ngtcp2 server on the endpoint's own sockets).
 * The ngtcp2 calls of a running session are in this file; making the
 * connection is session_quic.c's, reading a new peer's first packet header
 * session_listen.c's. Around it: its path (session_path.c: direct or
 * relayed, and where packets go), its stream buffers (session_stream.c),
 * the table of the endpoint's sessions (session_table.c), the listener that
 * makes acceptors and runs the timers (session_listen.c) and relay requests
 * and circuits (session_relay.c, which drives a relayed dialer's state
 * through struct sess_dial_ops).
 *
 * Streams keep what the application wrote in session_stream.c's buffers
 * until the peer acknowledges it. Received data goes straight to the
 * callback.
 */
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "internal.h"
#include "quic_common.h"
#include "quic_version.h"
#include "session.h"
#include "session_close.h"
#include "session_path.h"
#include "session_punch.h"
#include "session_quic.h"
#include "session_stream.h"
#include "session_table.h"

#define MAX_PKTS_PER_WRITE 256
struct pos_p2p_session {
    struct ep_conn conn; /* first: ngtcp2's user_data starts with its cid_ops */
    pos_p2p_endpoint *ep;
    struct sess_node node;                        /* in the endpoint's table */
    struct sess_quic *quic;                       /* the connection and its TLS; NULL until made */
    ngtcp2_conn *qc;                              /* sess_quic_conn(quic) */
    uint8_t peer_key[crypto_sign_PUBLICKEYBYTES]; /* dialer: the key the peer must have */
    uint8_t dead;                                 /* closed or failed: no more I/O */
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
    struct sess_path *path;
    ngtcp2_cid odcid;    /* acceptor: the dialer's first DCID (its Initials until it learns ours) */
    int64_t deadline_ms; /* connecting: give up then */
    struct sstream *streams;
    struct sess_dial *dial; /* relayed dialer: session_relay.c's state, driven through dial_ops */
    const struct sess_dial_ops *dial_ops;
    int64_t dial_tick_ms;     /* next look at the dial relay's state */
    struct sess_punch *punch; /* relayed: hole punching (session_punch.c) */
};

static const struct ep_conn_ops session_ops;

pos_p2p_endpoint *sess_endpoint(const pos_p2p_session *s)
{
    return s->ep;
}

pos_p2p_session *sess_next(const pos_p2p_session *s)
{
    return s->node.next ? s->node.next->s : NULL;
}

struct sess_dial *sess_dial_of(pos_p2p_session *s)
{
    return s->dial;
}

const char *sess_expected_peer(const pos_p2p_session *s)
{
    return s->st.peer_id;
}

int sess_is_dialing(const pos_p2p_session *s)
{
    return !s->dead && s->dial && !s->qc;
}

void sess_set_relay_id(pos_p2p_session *s, const char *relay_id, const char *remote)
{
    snprintf(s->st.relay_id, sizeof(s->st.relay_id), "%s", relay_id);
    snprintf(s->st.remote, sizeof(s->st.remote), "%s", remote);
}

int sess_is_dead(const pos_p2p_session *s)
{
    return s->dead;
}

int sess_is_open(const pos_p2p_session *s)
{
    return !s->dead && s->qc && s->st.state == POS_P2P_SESSION_OPEN;
}

ngtcp2_conn *sess_conn(const pos_p2p_session *s)
{
    return s->qc;
}

struct sstream **sess_streams(pos_p2p_session *s)
{
    return &s->streams;
}

struct sstream *sess_stream_list(const pos_p2p_session *s)
{
    return s->streams;
}

struct sess_punch *sess_punch_of(const pos_p2p_session *s)
{
    return s->punch;
}

const pos_p2p_session_status *sess_status(const pos_p2p_session *s)
{
    return &s->st;
}

void pos_p2p_session_set_callback(pos_p2p_session *s, pos_p2p_session_cb cb, void *arg)
{
    s->cb = cb;
    s->cb_arg = arg;
}

pos_p2p_session *sess_alloc(pos_p2p_endpoint *ep, int server)
{
    struct sess_table *t = sess_table_of(ep);
    pos_p2p_session *s;
    if (!t)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->path = sess_path_new();
    s->node.s = s;
    if (!s->path || sess_table_link(t, &s->node) != 0) {
        sess_path_del(s->path);
        free(s);
        return NULL;
    }
    ep_conn_init(&s->conn, ep, &session_ops);
    s->ep = ep;
    s->server = (uint8_t)server;
    s->st.server = server;
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
    pos_quic_drop_cids(s->qc, s);
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_SESSION_EV_CLOSED;
    ev.stream = -1;
    ev.error = err;
    ev.code = s->st.close_code;
    ev.reason = s->st.reason;
    emit(s, &ev);
}

/* send_pkt sends one packet ngtcp2 wrote for |path|: relayed or direct (|head|: sess_path_send) */
static void send_pkt(pos_p2p_session *s, const ngtcp2_path *path, uint8_t *d, size_t n, size_t head)
{
    sess_path_send(s->path, s->ep, path, d, n, head);
    s->st.bytes_sent += n;
    if (s->punch)
        sess_punch_count(s->punch, s->path, path, n);
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
        send_pkt(s, &ps.path, ep_txbuf(s->ep), (size_t)n, 0);
}

static void close_app(pos_p2p_session *s, uint64_t code, const char *reason)
{
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, code, (const uint8_t *)reason,
                                                        reason ? strlen(reason) : 0);
    send_close(s, &ccerr);
}

static void fail_liberr(pos_p2p_session *s, int liberr)
{
    ngtcp2_connection_close_error ccerr;
    char why[300];
    int err;

    ngtcp2_connection_close_error_default(&ccerr);
    if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &ccerr, ngtcp2_conn_get_tls_alert(s->qc), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr, NULL, 0);
    send_close(s, &ccerr);
    err = sess_close_by_error(liberr, sess_quic_pin(s->quic)->mismatch,
                              ngtcp2_conn_get_handshake_completed(s->qc), s->st.peer_id,
                              sess_path_relay(s->path) ? NULL : s->st.remote, why, sizeof(why));
    sess_fail(s, err, why);
}

/* on_peer_close reads why the peer closed the session. */
static void on_peer_close(pos_p2p_session *s)
{
    ngtcp2_connection_close_error cc;
    char reason[257];
    int err;

    ngtcp2_conn_get_connection_close_error(s->qc, &cc);
    s->st.close_code = cc.error_code;
    err = sess_close_by_peer(&cc, s->st.state == POS_P2P_SESSION_OPEN, reason, sizeof(reason));
    sess_fail(s, err, reason);
}

/* ---- writing ---- */

static void conn_write(pos_p2p_session *s)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = pos_quic_now();

    if (s->dead || !s->qc || s->free_requested)
        return;
    ngtcp2_path_storage_zero(&ps);
    s->busy++;
    ep_tx_hold(s->ep); /* the packets leave in GSO runs (ep_udp.h) */
    size_t head = sess_path_head(s->path, ngtcp2_conn_get_path(s->qc)); /* relay header room */
    for (int i = 0; i < MAX_PKTS_PER_WRITE && !s->dead; i++) {
        uint8_t *txbuf = ep_tx_space(s->ep, head); /* in place in the GSO run */
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
        send_pkt(s, &ps.path, txbuf, (size_t)n, head);
    }
    if (!s->dead)
        ngtcp2_conn_update_pkt_tx_time(s->qc, ts);
    sstreams_unblock(s->streams);
    ep_tx_release(s->ep);
    s->busy--;
}

/* ---- ngtcp2 callbacks ---- */

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    pos_p2p_session *s = user_data;
    struct sess_table *t = sess_table_of(s->ep);
    const pos_tls_pin *pin = sess_quic_pin(s->quic);
    (void)qc;
    if (!pin->has_peer)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (s->server) {
        pos_peer_id_format(pin->peer_key, s->st.peer_id);
        if (!sess_table_allows(t, s->st.peer_id)) {
            s->refuse = 1; /* closed with POS_P2P_CLOSE_NOT_ALLOWED once read_pkt returns */
            return 0;
        }
        /*
         * Handed over now, inside read_pkt: the dialer's first stream data may
         * sit in the same datagram, right after its Finished.
         */
        s->st.state = POS_P2P_SESSION_OPEN;
        s->owned = 1;
        sess_table_hand_over(t, s);
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
    (void)qc;
    if (!sstream_find(s->streams, stream_id) && !sstream_add(&s->streams, stream_id))
        return NGTCP2_ERR_CALLBACK_FAILURE;
    emit(s, &(pos_p2p_session_event){.type = POS_P2P_SESSION_EV_STREAM, .stream = stream_id});
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
    if (sstream_acked(st, (size_t)datalen))
        emit(s, &(pos_p2p_session_event){.type = POS_P2P_SESSION_EV_WRITABLE, .stream = stream_id});
    return 0;
}

static int cb_stream_reset(ngtcp2_conn *qc, int64_t stream_id, uint64_t final_size,
                           uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    pos_p2p_session *s = user_data;
    (void)qc;
    (void)final_size;
    (void)stream_user_data;
    emit(s, &(pos_p2p_session_event){.type = POS_P2P_SESSION_EV_STREAM_RESET,
                                     .stream = stream_id,
                                     .code = app_error_code});
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

/* path_event reports a path change (hole punching) and keeps the status in step. */
static void path_event(pos_p2p_session *s, const pos_p2p_path_change *ch)
{
    s->st.path = ch->to;
    snprintf(s->st.remote, sizeof(s->st.remote), "%s", ch->remote);
    emit(s, &(pos_p2p_session_event){
                .type = POS_P2P_SESSION_EV_PATH, .stream = -1, .path_change = ch});
}

static int cb_path_validation(ngtcp2_conn *qc, uint32_t flags, const ngtcp2_path *path,
                              ngtcp2_path_validation_result res, void *user_data)
{
    pos_p2p_session *s = user_data;
    pos_p2p_path_change ch;
    (void)flags;
    if (s->punch && sess_punch_validated(s->punch, qc, s->path, path,
                                         res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS, &ch))
        path_event(s, &ch);
    return 0;
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
    cb->path_validation = cb_path_validation;
}

/* ---- creating connections ---- */

/* set_synthetic gives |s| a relayed path over |circuit_id| of |r|. */
static void set_synthetic(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id)
{
    sess_path_set_relayed(s->path, r, circuit_id, sess_table_next_synthetic(sess_table_of(s->ep)));
    s->st.path = POS_P2P_PATH_RELAYED;
    s->st.circuit_id = circuit_id;
    sess_punch_del(s->punch);
    s->punch = sess_punch_new(s->ep, r, circuit_id, !s->server, pos_p2p_now_ms()); /* NULL: none */
}

/* make_conn: the ngtcp2 connection of |s|, a client, or a server for the Initial |hd|. */
static int make_conn(pos_p2p_session *s, const ngtcp2_pkt_hd *hd)
{
    ngtcp2_callbacks cbs;
    ngtcp2_path path;
    struct sess_quic_args a = {&cbs, &path, hd, hd ? NULL : s->peer_key, &s->conn};
    int rv;

    init_callbacks(&cbs, hd != NULL);
    sess_path_fill(s->path, s->ep, &path);
    if (hd)
        s->odcid = hd->dcid;
    rv = sess_quic_new(&s->quic, &a);
    s->qc = sess_quic_conn(s->quic);
    return rv;
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

/* after_handshake: hand a fresh acceptor session to the application, or refuse it. */
static void after_handshake(pos_p2p_session *s)
{
    if (sess_quic_has_tls(s->quic) && ngtcp2_conn_get_handshake_completed(s->qc)) {
        /* keys live in ngtcp2 now; the TLS session is dead weight (no tickets) */
        sess_quic_drop_tls(s->quic);
        if (s->refuse) {
            close_app(s, POS_P2P_CLOSE_NOT_ALLOWED, "peer not allowed");
            sess_fail(s, POS_P2P_ERR_NOT_ALLOWED, "refused: the peer is not in the allow list");
            return;
        }
        if (!s->server)
            emit(s, &(pos_p2p_session_event){.type = POS_P2P_SESSION_EV_OPEN, .stream = -1});
    }
}

static void sess_write_op(struct ep_conn *c)
{
    conn_write((pos_p2p_session *)c);
    maybe_free((pos_p2p_session *)c);
}

static void read_pkt(pos_p2p_session *s, const ngtcp2_path *path, const uint8_t *data, size_t len)
{
    ngtcp2_pkt_info pi = {0};
    pos_p2p_path_change ch;
    int rv;

    if (s->dead || s->free_requested)
        return;
    s->busy++;
    s->st.bytes_received += len;
    if (s->punch)
        sess_punch_received(s->punch, s->path, path, len, pos_p2p_now_ms());
    rv = ngtcp2_conn_read_pkt(s->qc, path, &pi, data, len, pos_quic_now());
    if (rv == NGTCP2_ERR_DRAINING)
        on_peer_close(s);
    else if (rv != 0)
        fail_liberr(s, rv);
    else if (s->punch && sess_punch_follow(s->punch, s->qc, s->path, &ch))
        path_event(s, &ch); /* the listener: the dialer moved back to the relay */
    if (rv == 0)
        after_handshake(s);
    if (!ep_write_later(&s->conn, sess_write_op)) /* else once the endpoint's batch is in */
        conn_write(s);
    s->busy--;
    maybe_free(s);
}

void sess_read(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
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

void sess_read_relayed(pos_p2p_session *s, const uint8_t *data, size_t len)
{
    ngtcp2_path path;
    sess_path_fill(s->path, s->ep, &path);
    read_pkt(s, &path, data, len);
}

int sess_is_acceptor_of(const pos_p2p_session *s, const ngtcp2_cid *dcid)
{
    return s->server && !s->dead && s->odcid.datalen == dcid->datalen &&
           memcmp(s->odcid.data, dcid->data, dcid->datalen) == 0;
}

int sess_on_circuit(const pos_p2p_session *s, const pos_p2p_relay *r, uint32_t circuit_id)
{
    return s->qc && !s->dead && sess_path_on_circuit(s->path, r, circuit_id);
}

int sess_uses_relay(const pos_p2p_session *s, const pos_p2p_relay *r)
{
    return !s->dead && (sess_path_relay(s->path) == r ||
                        (s->dial && !s->qc && s->dial_ops->relay(s->dial) == r));
}

void sess_end(pos_p2p_session *s, int err, const char *reason, int free_now)
{
    if (err == POS_P2P_ERR_CIRCUIT_CLOSED && s->punch && sess_punch_keep_direct(s->punch, s->path))
        return; /* direct: the circuit's loss only takes the fallback away */
    s->busy++;
    sess_fail(s, err, reason);
    s->busy--;
    if (free_now)
        maybe_free(s);
}

pos_p2p_session *sess_accept(pos_p2p_endpoint *ep, const ngtcp2_pkt_hd *hd, int sock,
                             const struct sockaddr *from, socklen_t fromlen, pos_p2p_relay *r,
                             uint32_t circuit_id)
{
    pos_p2p_session *s = sess_alloc(ep, 1);
    if (!s)
        return NULL;
    if (r) {
        set_synthetic(s, r, circuit_id);
    } else {
        sess_path_set_direct(s->path, sock, from, fromlen);
        s->st.path = POS_P2P_PATH_DIRECT;
        pos_addr_format(from, s->st.remote, sizeof(s->st.remote));
    }
    s->deadline_ms = pos_p2p_now_ms() + 15000;
    if (make_conn(s, hd) != 0) {
        sess_release(s);
        return NULL;
    }
    return s;
}

int sess_start_relayed(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id)
{
    int rv;
    set_synthetic(s, r, circuit_id);
    rv = make_conn(s, NULL);
    if (rv != 0)
        return rv;
    conn_write(s);
    return 0;
}

/* ---- timers ---- */

int64_t sess_deadline(const pos_p2p_session *s)
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
    } else if (s->dial) {
        d = s->dial_tick_ms; /* waiting for a (redirect) relay to accept us */
    }
    if (s->st.state == POS_P2P_SESSION_CONNECTING && (d < 0 || s->deadline_ms < d))
        d = s->deadline_ms;
    if (s->punch && s->qc) {
        int64_t pd = sess_punch_deadline(s->punch);
        if (pd >= 0 && (d < 0 || pd < d))
            d = pd;
    }
    return d;
}

static void on_deadline(pos_p2p_session *s)
{
    pos_p2p_path_change ch;
    int rv;
    if (s->st.state == POS_P2P_SESSION_CONNECTING && pos_p2p_now_ms() >= s->deadline_ms) {
        char why[200];
        if (s->qc)
            close_app(s, 0, NULL);
        if (sess_path_relay(s->path) || s->dial)
            snprintf(why, sizeof(why), "no answer from the peer through the relay in time");
        else
            snprintf(why, sizeof(why), "no answer from %s in time", s->st.remote);
        sess_fail(s, POS_P2P_ERR_TIMEOUT, why);
        return;
    }
    if (!s->qc) {
        s->dial_tick_ms = pos_p2p_now_ms() + 20;
        s->dial_ops->tick(s);
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
    if (s->punch && sess_punch_timer(s->punch, s->qc, s->path, pos_p2p_now_ms(), &ch))
        path_event(s, &ch);
    conn_write(s);
}

void sess_timer(pos_p2p_session *s, int64_t now_ms)
{
    int64_t d;
    if (s->free_requested) {
        maybe_free(s);
        return;
    }
    if (s->dead) {
        if (!s->owned)
            sess_release(s);
        return;
    }
    d = sess_deadline(s);
    if (d >= 0 && d <= now_ms) {
        s->busy++;
        on_deadline(s);
        s->busy--;
        maybe_free(s);
    }
}

/* ---- freeing ---- */

void sess_release(pos_p2p_session *s)
{
    ep_write_cancel(&s->conn);
    pos_quic_drop_cids(s->qc, s);
    sstream_free_all(&s->streams);
    sess_quic_del(s->quic);
    sess_punch_del(s->punch);
    if (s->dial)
        s->dial_ops->release(s->ep, s->dial);
    sess_table_unlink(sess_table_of(s->ep), &s->node);
    sess_path_del(s->path);
    free(s);
}

static const struct ep_conn_ops session_ops = {sess_read, NULL, NULL, NULL, NULL};

/* ---- making sessions ---- */

int sess_dial_direct(pos_p2p_endpoint *ep, const struct sockaddr_storage *ss, const uint8_t *key,
                     int timeout_ms, pos_p2p_session **out)
{
    pos_p2p_session *s = sess_alloc(ep, 0);
    int rv;
    if (!s)
        return POS_P2P_ERR_NOMEM;
    s->owned = 1;
    memcpy(s->peer_key, key, crypto_sign_PUBLICKEYBYTES);
    pos_peer_id_format(key, s->st.peer_id);
    sess_path_set_direct(s->path, ss->ss_family == AF_INET ? 0 : 1, (const struct sockaddr *)ss,
                         pos_addr_len(ss));
    s->st.path = POS_P2P_PATH_DIRECT;
    pos_addr_format((const struct sockaddr *)ss, s->st.remote, sizeof(s->st.remote));
    s->deadline_ms = pos_p2p_now_ms() + timeout_ms;
    rv = make_conn(s, NULL);
    if (rv != 0) {
        sess_release(s);
        return rv;
    }
    conn_write(s);
    *out = s;
    return 0;
}

pos_p2p_session *sess_new_dialer(pos_p2p_endpoint *ep, const char *peer_id, int timeout_ms,
                                 const struct sess_dial_ops *ops, struct sess_dial *d)
{
    uint8_t key[crypto_sign_PUBLICKEYBYTES];
    pos_p2p_session *s;
    if (pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return NULL;
    s = sess_alloc(ep, 0);
    if (!s)
        return NULL;
    s->owned = 1;
    s->dial = d;
    s->dial_ops = ops;
    memcpy(s->peer_key, key, crypto_sign_PUBLICKEYBYTES);
    pos_peer_id_format(key, s->st.peer_id);
    s->st.path = POS_P2P_PATH_RELAYED;
    s->deadline_ms = pos_p2p_now_ms() + timeout_ms;
    return s;
}

void sess_flush(pos_p2p_session *s)
{
    if (!s->busy)
        conn_write(s);
}

/* ---- public API ---- */

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
