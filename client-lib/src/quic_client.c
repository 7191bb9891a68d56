/*
 * Relay control connections (pos_p2p_relay): ngtcp2 client, TLS pinned to the
 * relay's peer id, HELLO -> WELCOME (or a close carrying the refusal), circuit
 * requests and events, the data plane. Every ngtcp2 call of relay connections
 * is here (what messages mean: relay_proto.c; queued stream bytes: sendq.c).
 */
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "ctrl.h"
#include "frame.h"
#include "internal.h"
#include "park.h"
#include "quic_common.h"
#include "relay_park.h"
#include "relay_proto.h"
#include "sendq.h"

#define MAX_CIRCUITS 1024     /* open circuits per relay connection */
#define MAX_INCOMING 64       /* INCOMING requests not yet answered */
#define MAX_EVENTS 64         /* events decoded during one packet, delivered after it */
#define MAX_REQ_PENDING 65536 /* request bytes not yet acknowledged by the relay */
#define REJOIN_MS 10000       /* a parked connection's reconnect: at most this long */

struct pos_p2p_relay {
    struct ep_conn conn; /* first: ngtcp2's user_data starts with its cid_ops */
    pos_p2p_endpoint *ep;
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    int sock;
    struct sockaddr_storage remote;
    uint8_t dead;     /* closed or failed: no more I/O */
    uint8_t creating; /* inside ngtcp2_conn_client_new (see pos_quic_rand) */
    int64_t stream;
    int64_t connect_deadline_ms; /* the caller's overall limit */
    int64_t attempt_deadline_ms; /* this address's share of it */
    size_t addr_index;           /* relay address in use (info.addrs) */
    size_t addrs_left;           /* usable addresses after this one */
    pos_p2p_relay_info info;     /* for trying the next address */
    struct sendq *out;           /* HELLO bytes not yet acknowledged */
    pos_ctrl_reader rd;
    char *token; /* until HELLO is queued, then wiped */
    size_t token_len;
    uint8_t hello_flags; /* POS_CTRL_HELLO_* sent in HELLO */
    pos_p2p_relay_status st;
    /* circuits (docs/protocol.md): requests on a stream of their own, kept open */
    pos_p2p_relay_event_cb on_event;
    pos_p2p_relay_data_cb on_data;
    void *cb_arg;
    int64_t req_stream; /* -1 until the first request */
    struct sendq *rq;   /* request bytes not yet acknowledged */
    uint32_t next_req;
    uint32_t incoming[MAX_INCOMING]; /* INCOMING ids we may answer */
    size_t n_incoming;
    uint32_t *circuits; /* our side's ids of open circuits */
    size_t n_circuits;
    pos_p2p_relay_event *evq; /* events decoded inside ngtcp2, delivered after it returns */
    size_t n_ev;
    uint8_t in_read;         /* inside ngtcp2_conn_read_pkt */
    uint8_t dispatching;     /* inside a user callback */
    uint8_t close_pending;   /* pos_p2p_relay_close was called from a callback */
    uint8_t version;         /* POS_CTRL_V1 / V2 once the handshake chose the ALPN; 0 before */
    relay_punch_cb on_punch; /* PUNCH_START (version 2) goes there at once */
    struct relay_park *park; /* home connections: parking (relay_park.h); NULL otherwise */
    struct sendq *held;      /* requests made while parking or parked: sent once awake */
    uint8_t rejoining;       /* was parked, reconnecting: until WELCOME */
};

static const struct ep_conn_ops relay_conn_ops;

/* connecting: no WELCOME yet on this QUIC connection (the first one, or after parking). */
static int connecting(const pos_p2p_relay *r)
{
    return r->st.state == POS_P2P_RELAY_CONNECTING || r->rejoining;
}

/* holding: requests wait in |held| (parking asked, parked, or reconnecting). */
static int holding(const pos_p2p_relay *r)
{
    return r->rejoining || relay_park_state(r->park) != RELAY_PARK_AWAKE;
}

/* ---- ending ---- */

static void wipe_token(pos_p2p_relay *r)
{
    if (r->token) {
        sodium_memzero(r->token, r->token_len);
        free(r->token);
        r->token = NULL;
    }
}

/* fail ends the connection with |err| and a sentence; sends nothing. */
static void fail(pos_p2p_relay *r, int err, const char *reason)
{
    if (r->dead)
        return;
    r->dead = 1;
    r->st.state = POS_P2P_RELAY_FAILED;
    r->st.error = err;
    r->st.failed_at_ms = pos_p2p_now_ms();
    if (reason && !r->st.reason[0])
        snprintf(r->st.reason, sizeof(r->st.reason), "%s", reason);
    pos_quic_drop_cids(r->qc, r);
    wipe_token(r);
}

/* send_close sends CONNECTION_CLOSE with |ccerr| once (best effort). */
static void send_close(pos_p2p_relay *r, const ngtcp2_connection_close_error *ccerr)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n;
    if (!r->qc || ngtcp2_conn_is_in_closing_period(r->qc) ||
        ngtcp2_conn_is_in_draining_period(r->qc))
        return;
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(r->qc, &ps.path, &pi, ep_txbuf(r->ep), EP_MAX_UDP, ccerr,
                                           pos_quic_now());
    if (n > 0)
        ep_send(r->ep, r->sock, ep_txbuf(r->ep), (size_t)n, (struct sockaddr *)ps.path.remote.addr,
                ps.path.remote.addrlen);
}

static void fail_liberr(pos_p2p_relay *r, int liberr)
{
    ngtcp2_connection_close_error ccerr;
    char why[200];
    int err;
    relay_liberr_close(&ccerr, liberr, r->qc);
    send_close(r, &ccerr);
    err = relay_liberr_reason(liberr, r->pin.mismatch, ngtcp2_conn_get_handshake_completed(r->qc),
                              why, sizeof(why));
    fail(r, err, why);
}

/* on_peer_close reads why the relay closed (refusal, going away, transport error). */
static void on_peer_close(pos_p2p_relay *r)
{
    ngtcp2_connection_close_error cc;
    char reason[257];
    int err;
    ngtcp2_conn_get_connection_close_error(r->qc, &cc);
    r->st.close_code = cc.error_code;
    err = relay_close_error(&cc, !connecting(r), reason, sizeof(reason));
    fail(r, err, reason);
}

/* ---- writing ---- */

static void conn_write(pos_p2p_relay *r)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = pos_quic_now();
    uint8_t *txbuf = ep_txbuf(r->ep);

    if (r->dead)
        return;
    ngtcp2_path_storage_zero(&ps);
    for (int i = 0; i < 64; i++) {
        ngtcp2_ssize wlen = 0, n;
        ngtcp2_vec v = {NULL, 0};
        const uint8_t *data;
        size_t nv = 0;
        int64_t sid = -1;
        uint32_t wflags = NGTCP2_WRITE_STREAM_FLAG_NONE;
        if (r->stream >= 0 && sendq_pending(r->out, &data, &v.len)) {
            wflags = NGTCP2_WRITE_STREAM_FLAG_FIN; /* HELLO is the whole request */
            sid = r->stream;
            nv = 1;
        } else if (r->req_stream >= 0 && sendq_pending(r->rq, &data, &v.len)) {
            sid = r->req_stream; /* requests: the stream stays open */
            nv = 1;
        }
        if (nv)
            v.base = (uint8_t *)data; /* ngtcp2 only reads it */
        n = ngtcp2_conn_writev_stream(r->qc, &ps.path, &pi, txbuf, EP_MAX_UDP, &wlen, wflags, sid,
                                      &v, nv, ts);
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR)
            n = ngtcp2_conn_write_pkt(r->qc, &ps.path, &pi, txbuf, EP_MAX_UDP, ts);
        if (n < 0) {
            fail_liberr(r, (int)n);
            return;
        }
        if (wlen > 0)
            sendq_sent(sid == r->stream ? r->out : r->rq, (size_t)wlen);
        if (n == 0)
            return;
        ep_send(r->ep, r->sock, txbuf, (size_t)n, (struct sockaddr *)ps.path.remote.addr,
                ps.path.remote.addrlen);
    }
}

static int queue_ctrl(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    uint8_t buf[POS_CTRL_MAX_MSG];
    int n = pos_ctrl_encode_version(m, r->version, buf, sizeof(buf)), rv; /* HELLO: version set */
    if (n < 0)
        return -1;
    rv = sendq_append(&r->out, buf, (size_t)n);
    sodium_memzero(buf, sizeof(buf));
    return rv;
}

/* ---- control messages: WELCOME, then circuits ---- */

static void on_welcome(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    ngtcp2_conn_stat cs;
    ngtcp2_conn_get_conn_stat(r->qc, &cs);
    relay_status_welcome(&r->st, m, (double)cs.smoothed_rtt / 1e6);
    if (!r->park)
        wipe_token(r); /* a home connection keeps it: it reconnects after parking */
    ngtcp2_conn_set_keep_alive_timeout(r->qc, relay_keepalive_ns(m->idle_timeout_s));
}

static int push_event(pos_p2p_relay *r, const pos_p2p_relay_event *ev);

/* release_held: the requests made while parking or parked go out on the request stream. */
static void release_held(pos_p2p_relay *r)
{
    const uint8_t *d;
    size_t n;
    if (sendq_pending(r->held, &d, &n) &&
        (r->req_stream >= 0 || ngtcp2_conn_open_bidi_stream(r->qc, &r->req_stream, NULL) == 0))
        sendq_append(&r->rq, d, n); /* out of memory: lost, as the answers tell */
    sendq_free(&r->held);
}

/* on_rewelcome: WELCOME after parking: awake again (event), held requests go. */
static void on_rewelcome(pos_p2p_relay *r)
{
    pos_p2p_relay_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = POS_P2P_RELAY_EV_AWAKE;
    ev.code = (uint16_t)relay_park_awake_code(r->park);
    r->rejoining = 0;
    r->st.awake_reason = ev.code;
    relay_park_activity(r->park, pos_p2p_now_ms());
    release_held(r);
    push_event(r, &ev);
}

static int pos_p2p_relay_answer_queue(pos_p2p_relay *r, uint32_t req_id, int accept);

/*
 * on_circuit_msg: a relay message after WELCOME. Updates what the library
 * tracks (open circuits, answerable INCOMINGs) and queues the event, which
 * is delivered once ngtcp2 has returned (callbacks may call back into the
 * library). Returns 0, or -1 when the relay breaks the protocol.
 */
static int on_circuit_msg(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    pos_p2p_relay_event ev;
    int i;

    if (m->type == POS_CTRL_PUNCH_START) { /* at once: the session layer only keeps it */
        if (r->on_punch && r->circuits &&
            relay_id_find(r->circuits, r->n_circuits, m->circuit_id) >= 0)
            r->on_punch(r->cb_arg, r, m);
        return 0;
    }
    relay_park_activity(r->park, pos_p2p_now_ms());
    if (m->type == POS_CTRL_ERROR && relay_park_error(r->park, m->req_id, pos_p2p_now_ms())) {
        release_held(r); /* PARK refused: awake, asks again after the idle time */
        return 0;
    }
    if (m->type == POS_CTRL_CIRCUIT || m->type == POS_CTRL_ERROR || m->type == POS_CTRL_REDIRECT)
        relay_park_answered(r->park, m->req_id);
    if (relay_event_from_msg(m, &ev) != 0)
        return -1;
    switch (m->type) {
    case POS_CTRL_INCOMING:
        if (r->n_incoming >= MAX_INCOMING) {
            /* too many unanswered: decline at once */
            pos_p2p_relay_answer_queue(r, m->req_id, 0);
            return 0;
        }
        r->incoming[r->n_incoming++] = m->req_id;
        break;
    case POS_CTRL_CIRCUIT:
        if (!r->circuits) {
            r->circuits = calloc(MAX_CIRCUITS, sizeof(*r->circuits));
            if (!r->circuits)
                return 0;
        }
        if (relay_id_find(r->circuits, r->n_circuits, m->circuit_id) < 0 &&
            r->n_circuits < MAX_CIRCUITS)
            r->circuits[r->n_circuits++] = m->circuit_id;
        break;
    case POS_CTRL_ERROR:
        /* an INCOMING the relay gave up on cannot be answered any more */
        if ((i = relay_id_find(r->incoming, r->n_incoming, m->req_id)) >= 0)
            relay_id_remove(r->incoming, &r->n_incoming, i);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        if (r->circuits && (i = relay_id_find(r->circuits, r->n_circuits, m->circuit_id)) >= 0)
            relay_id_remove(r->circuits, &r->n_circuits, i);
        break;
    default:
        break;
    }
    return push_event(r, &ev);
}

/* push_event queues |ev| for delivery once ngtcp2 returns. 0, or -1 (too many). */
static int push_event(pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    if (!r->evq && !(r->evq = calloc(MAX_EVENTS, sizeof(*r->evq))))
        return 0; /* out of memory: the event is lost, the connection goes on */
    if (r->n_ev >= MAX_EVENTS)
        return -1; /* far more messages in one packet than the relay ever sends */
    r->evq[r->n_ev++] = *ev;
    return 0;
}

static int dispatch_events(pos_p2p_relay *r);

static int cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data,
                               void *stream_user_data)
{
    pos_p2p_relay *r = user_data;
    pos_ctrl_msg m;
    int rv;
    (void)flags;
    (void)offset;
    (void)stream_user_data;

    ngtcp2_conn_extend_max_stream_offset(qc, stream_id, datalen);
    ngtcp2_conn_extend_max_offset(qc, datalen);
    if (stream_id != r->stream)
        return 0;
    if (pos_ctrl_reader_feed(&r->rd, data, datalen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    while ((rv = pos_ctrl_reader_next_version(&r->rd, r->version ? r->version : POS_CTRL_V1, &m)) ==
           1) {
        if (m.type == POS_CTRL_WELCOME && connecting(r)) {
            on_welcome(r, &m);
            if (r->rejoining)
                on_rewelcome(r);
        } else if (m.type == POS_CTRL_PARKED && !connecting(r)) {
            relay_park_parked(r->park, &m, pos_p2p_now_ms()); /* not asked for: ignored */
        } else if (m.type == POS_CTRL_GOAWAY) {
            snprintf(r->st.reason, sizeof(r->st.reason), "%s", m.text);
            on_circuit_msg(r, &m);
        } else if (!connecting(r)) {
            rv = on_circuit_msg(r, &m);
            pos_ctrl_msg_wipe(&m); /* a PUNCH_START's key */
            if (rv != 0)
                return NGTCP2_ERR_CALLBACK_FAILURE;
        }
    }
    return rv < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *qc, int64_t stream_id, uint64_t offset,
                                       uint64_t datalen, void *user_data, void *stream_user_data)
{
    pos_p2p_relay *r = user_data;
    (void)qc;
    (void)offset;
    (void)stream_user_data;
    if (stream_id == r->req_stream && stream_id != r->stream)
        sendq_acked(&r->rq, (size_t)datalen);
    else
        sendq_acked(&r->out, (size_t)datalen);
    return 0;
}

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    pos_p2p_relay *r = user_data;
    pos_ctrl_msg m;
    int rv;

    if (ngtcp2_conn_open_bidi_stream(qc, &r->stream, NULL) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (relay_tls_done(r->tls, &r->pin, &r->version) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE; /* a resumed session's key is not the pinned one */
    if (r->park && r->version >= POS_CTRL_V4)
        relay_park_derive(r->park, r->tls); /* before the TLS session goes (relay_drop_tls) */
    relay_msg_hello(&m, r->ep, r->token, r->token_len, r->hello_flags, r->version);
    rv = queue_ctrl(r, &m);
    pos_ctrl_msg_wipe(&m);
    /* the token stays (wiped) in memory until WELCOME: another address may need it */
    return rv == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

/* ---- ngtcp2 plumbing ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    pos_p2p_relay *r = (pos_p2p_relay *)((char *)ref->user_data - offsetof(pos_p2p_relay, pin));
    return r->qc;
}

static void init_callbacks(ngtcp2_callbacks *cb)
{
    pos_quic_callbacks_init(cb, 0);
    pos_quic_callbacks_cids(cb);
    cb->handshake_completed = cb_handshake_completed;
    cb->recv_stream_data = cb_recv_stream_data;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
}

static int make_conn(pos_p2p_relay *r)
{
    pos_p2p_endpoint *ep = r->ep;
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;

    init_callbacks(&cbs);
    relay_quic_settings(&settings, &params, &r->creating);
    dcid.datalen = 16;
    randombytes_buf(dcid.data, dcid.datalen);
    scid.datalen = EP_CID_LEN;
    randombytes_buf(scid.data, scid.datalen);
    path.local.addr = (ngtcp2_sockaddr *)ep_local(ep, r->sock, &path.local.addrlen);
    path.remote.addr = (ngtcp2_sockaddr *)&r->remote;
    path.remote.addrlen = pos_addr_len(&r->remote);
    path.user_data = NULL;
    r->creating = 1;
    int rv = ngtcp2_conn_client_new(&r->qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs,
                                    &settings, &params, NULL, r);
    r->creating = 0;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if (relay_tls_new(ep, r->pin.expect_key, &r->tls) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(r->tls) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    r->ref.get_conn = get_conn;
    r->ref.user_data = &r->pin;
    gnutls_session_set_ptr(r->tls, &r->ref);
    ngtcp2_conn_set_tls_native_handle(r->qc, r->tls);
    if (ep_cid_add(&r->conn, scid.data) != 0)
        return POS_P2P_ERR_NOMEM;
    return 0;
}

static void relay_free(pos_p2p_relay *r)
{
    pos_quic_drop_cids(r->qc, r);
    ngtcp2_conn_del(r->qc); /* NULL: nothing */
    if (r->tls)
        gnutls_deinit(r->tls);
    ep_conn_detach(&r->conn);
    wipe_token(r);
    pos_ctrl_reader_wipe(&r->rd);
    sendq_free(&r->out);
    sendq_free(&r->rq);
    sendq_free(&r->held);
    relay_park_free(r->park);
    free(r->circuits);
    free(r->evq);
    free(r);
}

int pos_p2p_relay_connect(pos_p2p_endpoint *ep, const pos_p2p_relay_info *relay, const char *token,
                          int timeout_ms, pos_p2p_relay **out)
{
    return pos_p2p_relay_connect_flags(ep, relay, token, timeout_ms, 0, out);
}

int pos_p2p_relay_connect_flags(pos_p2p_endpoint *ep, const pos_p2p_relay_info *relay,
                                const char *token, int timeout_ms, unsigned flags,
                                pos_p2p_relay **out)
{
    pos_p2p_relay *r;
    size_t tlen;
    int rv;

    if (!ep || !relay || !token || !out || timeout_ms <= 0 || (flags & ~POS_P2P_RELAY_NOT_HOME))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    tlen = strnlen(token, POS_CTRL_MAX_TOKEN + 1);
    if (tlen == 0 || tlen > POS_CTRL_MAX_TOKEN)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    r = calloc(1, sizeof(*r));
    if (!r)
        return POS_P2P_ERR_NOMEM;
    ep_conn_init(&r->conn, ep, &relay_conn_ops);
    r->ep = ep;
    r->stream = -1;
    r->req_stream = -1;
    r->hello_flags = (flags & POS_P2P_RELAY_NOT_HOME) ? POS_CTRL_HELLO_NOT_HOME : 0;
    rv = POS_P2P_ERR_INVALID_ARGUMENT;
    if (pos_peer_id_parse(relay->peer_id, strnlen(relay->peer_id, POS_P2P_PEER_ID_STRLEN),
                          r->pin.expect_key) != 0)
        goto out_free;
    r->pin.has_expected = 1;
    r->info = *relay;
    rv = POS_P2P_ERR_NO_ROUTE;
    if (relay_pick_addr(ep, relay, 0, &r->remote, &r->sock, &r->addr_index) != 0)
        goto out_free;
    r->addrs_left = relay_count_addrs(ep, relay, r->addr_index + 1);
    pos_addr_format((struct sockaddr *)&r->remote, r->st.remote, sizeof(r->st.remote));
    rv = POS_P2P_ERR_NOMEM;
    if ((r->token = malloc(tlen)) == NULL)
        goto out_free;
    memcpy(r->token, token, tlen);
    r->token_len = tlen;
    if (!(flags & POS_P2P_RELAY_NOT_HOME) && !(r->park = relay_park_new(ep, pos_p2p_now_ms())))
        goto out_free;
    ep_conn_attach(&r->conn);
    rv = make_conn(r);
    if (rv != 0) {
        relay_free(r);
        return rv;
    }
    r->connect_deadline_ms = pos_p2p_now_ms() + timeout_ms;
    r->attempt_deadline_ms =
        relay_attempt_deadline(pos_p2p_now_ms(), r->connect_deadline_ms, r->addrs_left);
    conn_write(r);
    *out = r;
    return 0;
out_free: /* not attached yet */
    wipe_token(r);
    free(r);
    return rv;
}

/*
 * try_next_addr: the current address did not answer in its share of the
 * time; start over on the relay's next usable address. Returns 0, or -1
 * when there is none (or it could not be set up).
 */
static int try_next_addr(pos_p2p_relay *r)
{
    size_t i;
    if (r->addrs_left == 0 || !r->token ||
        relay_pick_addr(r->ep, &r->info, r->addr_index + 1, &r->remote, &r->sock, &i) != 0)
        return -1;
    pos_quic_drop_cids(r->qc, r);
    ngtcp2_conn_del(r->qc);
    r->qc = NULL;
    if (r->tls)
        gnutls_deinit(r->tls);
    r->tls = NULL;
    sendq_free(&r->out);
    pos_ctrl_reader_wipe(&r->rd);
    r->stream = -1;
    r->pin.has_peer = r->pin.mismatch = 0;
    r->addr_index = i;
    r->addrs_left--;
    pos_addr_format((struct sockaddr *)&r->remote, r->st.remote, sizeof(r->st.remote));
    if (make_conn(r) != 0)
        return -1;
    r->attempt_deadline_ms =
        relay_attempt_deadline(pos_p2p_now_ms(), r->connect_deadline_ms, r->addrs_left);
    conn_write(r);
    return 0;
}

/*
 * dispatch_events delivers the events queued while ngtcp2 ran. Returns 0,
 * or -1 when a callback closed |r| (it is freed then).
 */
static int dispatch_events(pos_p2p_relay *r)
{
    if (!r->n_ev)
        return 0;
    r->dispatching = 1;
    for (size_t i = 0; i < r->n_ev && !r->close_pending; i++)
        if (r->on_event)
            r->on_event(r->cb_arg, r, &r->evq[i]);
    r->n_ev = 0;
    r->dispatching = 0;
    if (r->close_pending) {
        pos_p2p_relay_close(r);
        return -1;
    }
    return 0;
}

static void relay_input(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                        const struct sockaddr *from, socklen_t fromlen)
{
    pos_p2p_relay *r = (pos_p2p_relay *)c;
    ngtcp2_path path;
    ngtcp2_pkt_info pi = {0};
    int rv;

    if (r->dead)
        return;
    path.local.addr = (ngtcp2_sockaddr *)ep_local(r->ep, sock, &path.local.addrlen);
    path.remote.addr = (ngtcp2_sockaddr *)from;
    path.remote.addrlen = fromlen;
    path.user_data = NULL;
    r->in_read = 1;
    rv = ngtcp2_conn_read_pkt(r->qc, &path, &pi, data, len, pos_quic_now());
    r->in_read = 0;
    if (rv == NGTCP2_ERR_DRAINING) {
        on_peer_close(r);
        dispatch_events(r);
        return;
    }
    if (rv != 0) {
        fail_liberr(r, rv);
        dispatch_events(r);
        return;
    }
    if (r->n_ev) {
        conn_write(r); /* acknowledgements first: callbacks may take a while */
        if (dispatch_events(r) != 0)
            return; /* closed from a callback */
    }
    relay_drop_tls(r->ep, r->qc, &r->tls, &r->pin, !connecting(r));
    conn_write(r);
}

static int64_t relay_deadline(const struct ep_conn *c)
{
    const pos_p2p_relay *r = (const pos_p2p_relay *)c;
    ngtcp2_tstamp exp;
    int64_t d;
    if (r->dead || !r->qc)
        return -1;
    exp = ngtcp2_conn_get_expiry(r->qc);
    d = exp == UINT64_MAX ? -1 : (int64_t)(exp / 1000000) + 1;
    /* translate from ngtcp2's clock (ns, monotonic) to ours (ms, monotonic): same origin */
    if (connecting(r) && (d < 0 || r->attempt_deadline_ms < d))
        d = r->attempt_deadline_ms;
    return d;
}

static void qc_on_deadline(pos_p2p_relay *r)
{
    int rv;
    if (r->dead || !r->qc)
        return;
    if (connecting(r) && pos_p2p_now_ms() >= r->attempt_deadline_ms) {
        ngtcp2_connection_close_error ccerr;
        ngtcp2_connection_close_error_default(&ccerr);
        ngtcp2_connection_close_error_set_application_error(&ccerr, RELAY_APP_NO_ERROR, NULL, 0);
        send_close(r, &ccerr);
        if (pos_p2p_now_ms() < r->connect_deadline_ms && try_next_addr(r) == 0)
            return;
        fail(r, POS_P2P_ERR_TIMEOUT, "no answer from the relay in time");
        return;
    }
    rv = ngtcp2_conn_handle_expiry(r->qc, pos_quic_now());
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        fail(r, !connecting(r) ? POS_P2P_ERR_CLOSED : POS_P2P_ERR_TIMEOUT,
             "the relay stopped answering (idle timeout)");
        return;
    }
    if (rv != 0) {
        fail_liberr(r, rv);
        return;
    }
    conn_write(r);
}

void pos_p2p_relay_get_status(const pos_p2p_relay *r, pos_p2p_relay_status *out)
{
    *out = r->st;
}

void pos_p2p_relay_close(pos_p2p_relay *r)
{
    if (!r)
        return;
    if (r->dispatching) {
        r->close_pending = 1; /* from a callback: freed once it returns */
        return;
    }
    if (!r->dead) {
        ngtcp2_connection_close_error ccerr;
        ngtcp2_connection_close_error_default(&ccerr);
        ngtcp2_connection_close_error_set_application_error(&ccerr, RELAY_APP_NO_ERROR, NULL, 0);
        send_close(r, &ccerr);
    }
    relay_free(r);
}

/* ---- circuits: the public API (pos/p2p.h) and the data plane ---- */

int pos_p2p_relay_protocol_version(const pos_p2p_relay *r)
{
    return r ? r->version : 0;
}

void relay_set_punch_cb(pos_p2p_relay *r, relay_punch_cb cb)
{
    r->on_punch = cb;
}

const char *relay_list_id(const pos_p2p_relay *r)
{
    return r->info.id;
}

void pos_p2p_relay_set_callbacks(pos_p2p_relay *r, pos_p2p_relay_event_cb on_event,
                                 pos_p2p_relay_data_cb on_data, void *arg)
{
    r->on_event = on_event;
    r->on_data = on_data;
    r->cb_arg = arg;
}

static void rejoin(pos_p2p_relay *r, int code);

/*
 * queue_request appends |m| to the request stream (opened on first use), or
 * while parking or parked holds it until awake (a parked connection
 * reconnects for it). 0 or a POS_P2P_ERR_*.
 */
static int queue_request(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    uint8_t buf[POS_CTRL_MAX_MSG];
    int n = pos_ctrl_encode_version(m, r->version ? r->version : POS_CTRL_V1, buf, sizeof(buf));

    if (n < 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (r->dead || r->st.state != POS_P2P_RELAY_ACCEPTED)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    relay_park_activity(r->park, pos_p2p_now_ms());
    if (holding(r)) {
        if (sendq_unacked(r->held) + (size_t)n > MAX_REQ_PENDING ||
            sendq_append(&r->held, buf, (size_t)n) != 0)
            return POS_P2P_ERR_NOMEM;
        if (relay_park_state(r->park) == RELAY_PARK_PARKED)
            rejoin(r, POS_P2P_AWAKE_REQUEST);
        return 0;
    }
    if (r->req_stream < 0 && ngtcp2_conn_open_bidi_stream(r->qc, &r->req_stream, NULL) != 0)
        return POS_P2P_ERR_NOMEM; /* no stream credit: cannot happen with one request stream */
    if (sendq_unacked(r->rq) + (size_t)n > MAX_REQ_PENDING)
        return POS_P2P_ERR_NOMEM;
    return sendq_append(&r->rq, buf, (size_t)n) == 0 ? 0 : POS_P2P_ERR_NOMEM;
}

static void flush(pos_p2p_relay *r)
{
    if (!r->in_read && r->qc)
        conn_write(r); /* inside ngtcp2: relay_input writes once it returns */
}

int pos_p2p_relay_request_peer(pos_p2p_relay *r, const char *peer_id, uint32_t *req_id)
{
    pos_ctrl_msg m;
    uint8_t key[32];
    int rv;

    if (!r || !peer_id || !req_id ||
        pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (++r->next_req == 0)
        r->next_req = 1;
    relay_msg_request(&m, POS_CTRL_CONNECT, r->next_req, peer_id, r->ep, r->version);
    rv = queue_request(r, &m);
    if (rv != 0)
        return rv;
    relay_park_request(r->park, m.req_id); /* parking waits for its answer */
    *req_id = m.req_id;
    flush(r);
    return 0;
}

static int pos_p2p_relay_answer_queue(pos_p2p_relay *r, uint32_t req_id, int accept)
{
    pos_ctrl_msg m;
    relay_msg_request(&m, accept ? POS_CTRL_ACCEPT : POS_CTRL_DECLINE, req_id, NULL, r->ep,
                      r->version);
    return queue_request(r, &m);
}

int pos_p2p_relay_answer(pos_p2p_relay *r, uint32_t req_id, int accept)
{
    int i, rv;
    if (!r || (i = relay_id_find(r->incoming, r->n_incoming, req_id)) < 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = pos_p2p_relay_answer_queue(r, req_id, accept);
    if (rv != 0)
        return rv;
    relay_id_remove(r->incoming, &r->n_incoming, i);
    flush(r);
    return 0;
}

/* the relay's current address (QUIC follows its migrations, we never migrate the relay) */
static const ngtcp2_addr *relay_addr(const pos_p2p_relay *r)
{
    return &ngtcp2_conn_get_path(r->qc)->remote;
}

int relay_send_ctrl(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    int rv;
    if (!r || r->version < POS_CTRL_V2 || holding(r))
        return POS_P2P_ERR_INVALID_ARGUMENT; /* punching needs a circuit: none while parked */
    if ((rv = queue_request(r, m)) == 0)
        flush(r);
    return rv;
}

void relay_ping(pos_p2p_relay *r)
{
    if (!r || r->dead || r->in_read || r->st.state != POS_P2P_RELAY_ACCEPTED)
        return;
    if (!r->qc || r->rejoining) {
        relay_park_roam(r->park, pos_p2p_now_ms()); /* parked: a keep-alive moves the record */
        return;
    }
    ngtcp2_conn_set_keep_alive_timeout(r->qc, 1); /* expired: the next packet carries a PING */
    conn_write(r);
    ngtcp2_conn_set_keep_alive_timeout(r->qc, relay_keepalive_ns(r->st.idle_timeout_s));
}

int pos_p2p_relay_send_data(pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data, size_t len)
{
    uint8_t buf[POS_FRAME_MAX_LEN];
    const ngtcp2_addr *to;
    int flen;

    if (!r || !data || len == 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (len > POS_FRAME_MAX_PAYLOAD)
        return POS_P2P_ERR_TOO_BIG;
    if (r->dead || !r->circuits || relay_id_find(r->circuits, r->n_circuits, circuit_id) < 0)
        return POS_P2P_ERR_CIRCUIT_CLOSED;
    flen = pos_frame_encode_data(buf, sizeof(buf), circuit_id, data, len);
    if (flen < 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    to = relay_addr(r);
    return ep_send_checked(r->ep, r->sock, buf, (size_t)flen, (const struct sockaddr *)to->addr,
                           to->addrlen) == 0
               ? 0
               : POS_P2P_ERR_IO;
}

/* relay_frame: a data frame from |from|; 0 taken, -1 ours but dropped, 1 not from this relay. */
static int relay_frame(struct ep_conn *c, const uint8_t *data, size_t len,
                       const struct sockaddr *from, socklen_t fromlen)
{
    pos_p2p_relay *r = (pos_p2p_relay *)c;
    pos_frame f;
    int rv;
    if (pos_park_is_park(data, len)) { /* an ack or a wake of a parked connection */
        if ((rv = relay_park_input(r->park, data, len, from, fromlen)) == 2)
            rejoin(r, POS_P2P_AWAKE_WOKEN);
        return rv == 2 ? 0 : rv;
    }
    if (pos_frame_decode(data, len, &f) != 0)
        return -1;
    if (r->dead || !r->qc || r->st.state != POS_P2P_RELAY_ACCEPTED ||
        !relay_same_addr(from, fromlen, relay_addr(r)))
        return 1;
    if (f.type == POS_FRAME_KEEPALIVE_ACK)
        return 0;
    if (f.type != POS_FRAME_DATA || !r->circuits ||
        relay_id_find(r->circuits, r->n_circuits, f.circuit_id) < 0)
        return -1; /* a circuit we do not have (closed, or forged) */
    if (r->on_data) {
        r->dispatching = 1;
        r->on_data(r->cb_arg, r, f.circuit_id, f.payload, f.payload_len);
        r->dispatching = 0;
        if (r->close_pending)
            pos_p2p_relay_close(r);
    }
    return 0;
}

/* ---- parking (docs/protocol.md "Parking"; the state and keep-alives: relay_park.c) ---- */

int pos_p2p_relay_parked(const pos_p2p_relay *r)
{
    return r && !r->dead && relay_park_state(r->park) == RELAY_PARK_PARKED;
}

/* can_park: an accepted home connection of version 4 with nothing open or in flight. */
static int can_park(const pos_p2p_relay *r)
{
    return !r->dead && r->qc && !connecting(r) && r->version >= POS_CTRL_V4 && !r->n_circuits &&
           !r->n_incoming && !sendq_unacked(r->rq) && !sendq_unacked(r->out) && !r->held;
}

/* notify delivers a PARKED or AWAKE event now (not inside ngtcp2). -1: |r| was closed. */
static int notify(pos_p2p_relay *r, int type)
{
    pos_p2p_relay_event ev;
    if (!r->on_event)
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    r->dispatching = 1;
    r->on_event(r->cb_arg, r, &ev);
    r->dispatching = 0;
    if (!r->close_pending)
        return 0;
    pos_p2p_relay_close(r);
    return -1;
}

static void ask_park(pos_p2p_relay *r, int64_t now)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PARK;
    if (++r->next_req == 0)
        r->next_req = 1;
    m.req_id = r->next_req;
    if (queue_request(r, &m) != 0) {
        relay_park_activity(r->park, now); /* no memory: try again after the idle time */
        return;
    }
    relay_park_asked(r->park, m.req_id, now);
    conn_write(r);
}

/*
 * go_parked: PARKED came and our ACK of it has left: free the QUIC
 * connection silently (the relay frees its side too) and everything it
 * carried, then keep-alives take over.
 */
static void go_parked(pos_p2p_relay *r, int64_t now)
{
    struct sockaddr_storage to;
    const ngtcp2_addr *a = relay_addr(r);
    memset(&to, 0, sizeof(to));
    memcpy(&to, a->addr, a->addrlen < sizeof(to) ? a->addrlen : sizeof(to));
    ngtcp2_conn_handle_expiry(r->qc, pos_quic_now()); /* a delayed ACK is due now */
    conn_write(r);
    pos_quic_drop_cids(r->qc, r);
    ngtcp2_conn_del(r->qc);
    r->qc = NULL;
    if (r->tls)
        gnutls_deinit(r->tls);
    r->tls = NULL;
    sendq_free(&r->out);
    sendq_free(&r->rq);
    pos_ctrl_reader_wipe(&r->rd);
    r->stream = r->req_stream = -1;
    free(r->circuits); /* none open (PARK is refused otherwise) */
    r->circuits = NULL;
    free(r->evq);
    r->evq = NULL;
    r->n_ev = 0;
    relay_park_enter(r->park, r->sock, &to, now);
    r->st.park_keepalive_s = (uint32_t)(relay_park_keepalive_ms(r->park) / 1000);
    r->st.parks++;
    if (notify(r, POS_P2P_RELAY_EV_PARKED) == 0 && r->held)
        rejoin(r, POS_P2P_AWAKE_REQUEST); /* a request came while parking */
}

/*
 * rejoin: parked, and woken (|code|, enum pos_p2p_awake_reason): a new QUIC
 * connection and HELLO as home, resuming TLS; requests wait until WELCOME.
 */
static void rejoin(pos_p2p_relay *r, int code)
{
    int64_t now = pos_p2p_now_ms();
    if (r->dead || r->qc)
        return;
    if (relay_park_state(r->park) == RELAY_PARK_PARKED)
        relay_park_leave(r->park, code, now);
    r->rejoining = 1;
    r->st.park_keepalive_s = 0;
    r->pin.has_peer = r->pin.mismatch = 0;
    r->addrs_left = relay_count_addrs(r->ep, &r->info, r->addr_index + 1);
    r->connect_deadline_ms = now + REJOIN_MS;
    r->attempt_deadline_ms = relay_attempt_deadline(now, r->connect_deadline_ms, r->addrs_left);
    if (make_conn(r) != 0) {
        fail(r, POS_P2P_ERR_NOMEM, "cannot reconnect to the relay");
        return;
    }
    conn_write(r);
}

static void park_timer(pos_p2p_relay *r, int64_t now)
{
    switch (relay_park_timer(r->park, now, can_park(r))) {
    case RELAY_PARK_ASK:
        ask_park(r, now);
        break;
    case RELAY_PARK_FREE:
        go_parked(r, now);
        break;
    case RELAY_PARK_REJOIN:
        rejoin(r, relay_park_awake_code(r->park));
        break;
    default:
        break;
    }
}

/* ---- the endpoint's view (struct ep_conn; relay_input and relay_deadline above) ---- */

static int64_t park_deadline(const pos_p2p_relay *r)
{
    return r->park && !r->dead ? relay_park_deadline(r->park, can_park(r)) : -1;
}

static int64_t conn_deadline(const struct ep_conn *c)
{
    int64_t d = relay_deadline(c), p = park_deadline((const pos_p2p_relay *)c);
    return d < 0 || (p >= 0 && p < d) ? p : d;
}

static void relay_timer(struct ep_conn *c, int64_t now)
{
    pos_p2p_relay *r = (pos_p2p_relay *)c;
    int64_t d = relay_deadline(c), p;
    if (d >= 0 && d <= now)
        qc_on_deadline(r);
    p = park_deadline(r);
    if (p >= 0 && p <= now)
        park_timer(r, now);
}

static void relay_destroy(struct ep_conn *c)
{
    relay_free((pos_p2p_relay *)c);
}

static const struct ep_conn_ops relay_conn_ops = {relay_input, relay_frame, conn_deadline,
                                                  relay_timer, relay_destroy};
