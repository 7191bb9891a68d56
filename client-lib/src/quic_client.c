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
#include "internal.h"
#include "park.h"
#include "quic_common.h"
#include "relay_circ.h"
#include "relay_park.h"
#include "relay_proto.h"
#include "sendq.h"

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
    struct relay_circ *circ; /* INCOMINGs, open circuits, events, callbacks (relay_circ.h) */
    int64_t req_stream;      /* -1 until the first request */
    struct sendq *rq;        /* request bytes not yet acknowledged */
    uint32_t next_req;
    uint8_t in_read;         /* inside ngtcp2_conn_read_pkt */
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
    relay_write_close(r->ep, r->qc, r->sock, ccerr);
}

/* say_bye: a normal close to the relay (nothing when failed or parked). */
static void say_bye(pos_p2p_relay *r)
{
    ngtcp2_connection_close_error ccerr;
    if (r->dead)
        return;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, RELAY_APP_NO_ERROR, NULL, 0);
    send_close(r, &ccerr);
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
    int rv;
    if (!r->dead && r->qc &&
        (rv = relay_write(r->ep, r->qc, r->sock, r->stream, r->out, r->req_stream, r->rq)) != 0)
        fail_liberr(r, rv);
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
    r->rejoining = 0;
    relay_park_activity(r->park, pos_p2p_now_ms());
    release_held(r);
    relay_circ_event(r->circ, NULL, POS_P2P_RELAY_EV_AWAKE, relay_park_awake_code(r->park));
}

/*
 * on_circuit_msg: a relay message after WELCOME. Updates what the library
 * tracks (open circuits, answerable INCOMINGs) and queues the event, which
 * is delivered once ngtcp2 has returned (callbacks may call back into the
 * library). Returns 0, or -1 when the relay breaks the protocol.
 */
static int on_circuit_msg(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    int rv;
    if (m->type == POS_CTRL_PUNCH_START) { /* at once: the session layer only keeps it */
        if (r->on_punch && relay_circ_open(r->circ, m->circuit_id))
            r->on_punch(relay_circ_arg(r->circ), r, m);
        return 0;
    }
    relay_park_activity(r->park, pos_p2p_now_ms());
    if (m->type == POS_CTRL_ERROR && relay_park_error(r->park, m->req_id, pos_p2p_now_ms())) {
        release_held(r); /* PARK refused: awake, asks again after the idle time */
        return 0;
    }
    if (m->type == POS_CTRL_CIRCUIT || m->type == POS_CTRL_ERROR || m->type == POS_CTRL_REDIRECT)
        relay_park_answered(r->park, m->req_id);
    if ((rv = relay_circ_msg(r->circ, m)) == 1) /* too many unanswered: declined at once */
        relay_queue_answer(r, m->req_id, 0);
    return rv < 0 ? -1 : 0;
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
    uint8_t scid[EP_CID_LEN];

    init_callbacks(&cbs);
    if (relay_client_new(&r->qc, ep, r->sock, &r->remote, &cbs, r, &r->creating, scid) != 0)
        return POS_P2P_ERR_NOMEM;
    if (relay_tls_new(ep, r->pin.expect_key, &r->tls) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(r->tls) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    r->ref.get_conn = get_conn;
    r->ref.user_data = &r->pin;
    gnutls_session_set_ptr(r->tls, &r->ref);
    ngtcp2_conn_set_tls_native_handle(r->qc, r->tls);
    if (ep_cid_add(&r->conn, scid) != 0)
        return POS_P2P_ERR_NOMEM;
    return 0;
}

/* drop_conn frees the QUIC connection and what it carried (the streams start over). */
static void drop_conn(pos_p2p_relay *r)
{
    pos_quic_drop_cids(r->qc, r);
    ngtcp2_conn_del(r->qc); /* NULL: nothing */
    r->qc = NULL;
    if (r->tls)
        gnutls_deinit(r->tls);
    r->tls = NULL;
    sendq_free(&r->out);
    sendq_free(&r->rq);
    pos_ctrl_reader_wipe(&r->rd);
    r->stream = r->req_stream = -1;
    r->pin.has_peer = r->pin.mismatch = 0;
}

/* dial: a new QUIC connection to |r->remote| until |deadline_ms| (its share: this address). */
static int dial(pos_p2p_relay *r, int64_t deadline_ms)
{
    int rv;
    r->connect_deadline_ms = deadline_ms;
    r->attempt_deadline_ms = relay_attempt_deadline(pos_p2p_now_ms(), deadline_ms, r->addrs_left);
    if ((rv = make_conn(r)) == 0)
        conn_write(r);
    return rv;
}

static void relay_free(pos_p2p_relay *r)
{
    drop_conn(r);
    ep_conn_detach(&r->conn);
    wipe_token(r);
    sendq_free(&r->held);
    relay_park_goodbye(r->park); /* parked: the relay forgets the record now */
    relay_park_free(r->park);
    relay_circ_free(r->circ);
    free(r);
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
    if (!(r->circ = relay_circ_new()) ||
        (!(flags & POS_P2P_RELAY_NOT_HOME) && !(r->park = relay_park_create(ep, pos_p2p_now_ms()))))
        goto out_free;
    ep_conn_attach(&r->conn);
    if ((rv = dial(r, pos_p2p_now_ms() + timeout_ms)) != 0) {
        relay_free(r);
        return rv;
    }
    *out = r;
    return 0;
out_free: /* not attached yet */
    wipe_token(r);
    relay_circ_free(r->circ);
    relay_park_free(r->park);
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
    drop_conn(r);
    r->addr_index = i;
    r->addrs_left--;
    pos_addr_format((struct sockaddr *)&r->remote, r->st.remote, sizeof(r->st.remote));
    return dial(r, r->connect_deadline_ms) == 0 ? 0 : -1;
}

/*
 * dispatch_events delivers the events queued while ngtcp2 ran. Returns 0,
 * or -1 when a callback closed |r| (it is freed then).
 */
static int dispatch_events(pos_p2p_relay *r)
{
    if (relay_circ_dispatch(r->circ, r, NULL) == 0)
        return 0;
    pos_p2p_relay_close(r);
    return -1;
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
    if (relay_circ_pending_events(r->circ)) {
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
        say_bye(r);
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
    if (relay_circ_defer_close(r->circ))
        return; /* from a callback: freed once it returns */
    say_bye(r);
    relay_free(r);
}

/* ---- circuits: what relay_api.c (the public calls) needs, and the data plane ---- */

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

static void rejoin(pos_p2p_relay *r, int code);

/* the relay's current address (QUIC follows its migrations, we never migrate the relay) */
static const ngtcp2_addr *relay_addr(const pos_p2p_relay *r)
{
    return &ngtcp2_conn_get_path(r->qc)->remote;
}

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
    if (relay_holding(r)) {
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

int relay_queue(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    int rv = queue_request(r, m);
    if (rv == 0 && !r->in_read && r->qc)
        conn_write(r); /* inside ngtcp2: relay_input writes once it returns */
    return rv;
}

uint32_t relay_new_req(pos_p2p_relay *r)
{
    if (++r->next_req == 0)
        r->next_req = 1;
    return r->next_req;
}

struct relay_circ *relay_circ_of(const pos_p2p_relay *r)
{
    return r->circ;
}

struct relay_park *relay_park_of(const pos_p2p_relay *r)
{
    return r->dead ? NULL : r->park;
}

int relay_holding(const pos_p2p_relay *r)
{
    return r->rejoining || relay_park_state(r->park) != RELAY_PARK_AWAKE; /* |held| then */
}

pos_p2p_endpoint *relay_endpoint(const pos_p2p_relay *r)
{
    return r->ep;
}

int relay_send_frame(pos_p2p_relay *r, const uint8_t *buf, size_t len)
{
    const ngtcp2_addr *to;
    if (r->dead || !r->qc)
        return -1;
    to = relay_addr(r);
    return ep_send_checked(r->ep, r->sock, buf, len, (const struct sockaddr *)to->addr,
                           to->addrlen) == 0
               ? 0
               : -2;
}

int relay_queue_answer(pos_p2p_relay *r, uint32_t req_id, int accept)
{
    pos_ctrl_msg m;
    relay_msg_request(&m, accept ? POS_CTRL_ACCEPT : POS_CTRL_DECLINE, req_id, NULL, r->ep,
                      r->version);
    return relay_queue(r, &m);
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

/* relay_frame: a data frame from |from|; 0 taken, -1 ours but dropped, 1 not from this relay. */
static int relay_frame(struct ep_conn *c, const uint8_t *data, size_t len,
                       const struct sockaddr *from, socklen_t fromlen)
{
    pos_p2p_relay *r = (pos_p2p_relay *)c;
    int rv;
    if (pos_park_is_park(data, len)) { /* an ack or a wake of a parked connection */
        if ((rv = relay_park_input(r->park, data, len, from, fromlen)) == 2)
            rejoin(r, POS_P2P_AWAKE_WOKEN);
        return rv == 2 ? 0 : rv;
    }
    if (r->dead || !r->qc || r->st.state != POS_P2P_RELAY_ACCEPTED ||
        !relay_same_addr(from, fromlen, relay_addr(r)))
        return 1;
    if ((rv = relay_circ_frame(r->circ, r, data, len)) == -2)
        pos_p2p_relay_close(r); /* from the data callback */
    return rv < 0 ? -1 : 0;
}

/* ---- parking (docs/protocol.md "Parking"; the state and keep-alives: relay_park.c) ---- */

/* can_park: an accepted home connection of version 4 with nothing open or in flight. */
static int can_park(const pos_p2p_relay *r)
{
    return !r->dead && r->qc && !connecting(r) && r->version >= POS_CTRL_V4 &&
           relay_circ_idle(r->circ) && !sendq_unacked(r->rq) && !sendq_unacked(r->out) && !r->held;
}

static void ask_park(pos_p2p_relay *r, int64_t now)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PARK;
    m.req_id = relay_new_req(r);
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
    drop_conn(r);
    relay_circ_trim(r->circ); /* no circuit open (PARK is refused otherwise) */
    relay_park_enter(r->park, r->sock, &to, now);
    r->st.park_keepalive_s = (uint32_t)(relay_park_keepalive_ms(r->park) / 1000);
    r->st.parks++;
    if (relay_circ_event(r->circ, r, POS_P2P_RELAY_EV_PARKED, 0) != 0)
        pos_p2p_relay_close(r); /* from the callback */
    else if (r->held)
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
    r->st.awake_reason = relay_park_awake_code(r->park);
    r->addrs_left = relay_count_addrs(r->ep, &r->info, r->addr_index + 1);
    if (dial(r, now + REJOIN_MS) != 0)
        fail(r, POS_P2P_ERR_NOMEM, "cannot reconnect to the relay");
}

static void park_timer(pos_p2p_relay *r, int64_t now)
{
    int what = relay_park_timer(r->park, now, can_park(r));
    if (what == RELAY_PARK_ASK)
        ask_park(r, now);
    else if (what == RELAY_PARK_FREE)
        go_parked(r, now);
    else if (what == RELAY_PARK_REJOIN)
        rejoin(r, relay_park_awake_code(r->park));
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
    pos_p2p_relay *r = (pos_p2p_relay *)c;
    say_bye(r); /* the relay is told: its circuits end now, not at its idle timeout */
    relay_free(r);
}

static const struct ep_conn_ops relay_conn_ops = {relay_input, relay_frame, conn_deadline,
                                                  relay_timer, relay_destroy};
