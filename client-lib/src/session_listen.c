/*
 * The session layer's face to the endpoint (see session_listen.h): the
 * operations of the listener connection (unclaimed Initials, timers, the
 * end of the endpoint), the relayed input of circuits and the public calls
 * that need the table: listening, dialing an address, waiting for a
 * session to open.
 */
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <sodium.h>
#include <string.h>

#include "addr.h"
#include "frame.h"
#include "quic_version.h"
#include "session.h"
#include "session_listen.h"
#include "session_punch.h"

/* find_acceptor: an acceptor still in its handshake whose dialer used |dcid| first. */
static pos_p2p_session *find_acceptor(const struct sess_table *t, const ngtcp2_cid *dcid)
{
    for (pos_p2p_session *s = sess_table_first(t); s; s = sess_next(s))
        if (sess_is_acceptor_of(s, dcid))
            return s;
    return NULL;
}

/* listen_unclaimed: a QUIC packet for no known connection id (a new peer's Initial?) */
static void listen_unclaimed(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                             const struct sockaddr *from, socklen_t fromlen)
{
    struct sess_table *t = sess_table_of(c->ep);
    pos_p2p_endpoint *ep = c->ep;
    ngtcp2_pkt_hd hd;
    pos_p2p_session *s;
    uint8_t r;
    ssize_t n;

    if (!sess_table_listening(t))
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
    s = find_acceptor(t, &hd.dcid);
    if (!s)
        s = sess_accept(ep, &hd, sock, from, fromlen, NULL, 0);
    if (s)
        sess_read((struct ep_conn *)s, sock, data, len, from, fromlen);
}

void sess_relayed_input(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                        const uint8_t *data, size_t len)
{
    struct sess_table *t = sess_table_of(ep);
    pos_p2p_session *s;

    if (!t || len < 5)
        return;
    if ((data[0] & 0x80) && !(data[1] == 0 && data[2] == 0 && data[3] == 0 && data[4] <= 1))
        return; /* neither v1 nor Version Negotiation: ngtcp2 must not see it */
    for (s = sess_table_first(t); s; s = sess_next(s))
        if (sess_on_circuit(s, r, circuit_id))
            break;
    if (!s) {
        /* the dialer's first Initial on a circuit we accepted */
        ngtcp2_pkt_hd hd;
        if (!sess_table_has_circuit(t, r, circuit_id) || !sess_table_listening(t))
            return;
        if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL ||
            hd.version != NGTCP2_PROTO_VER_V1)
            return; /* another version over a circuit: silence (see listen_unclaimed) */
        s = sess_accept(ep, &hd, -1, NULL, 0, r, circuit_id);
        if (!s)
            return;
        pos_p2p_relay_status st;
        pos_p2p_relay_get_status(r, &st);
        sess_set_relay_id(s, relay_list_id(r), st.remote);
        sess_table_remove_circuit(t, r, circuit_id);
    }
    sess_read_relayed(s, data, len);
}

void sess_circuit_closed(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t)
        return;
    sess_table_remove_circuit(t, r, circuit_id);
    for (pos_p2p_session *s = sess_table_first(t), *next; s; s = next) {
        next = sess_next(s);
        if (sess_on_circuit(s, r, circuit_id))
            sess_end(s, POS_P2P_ERR_CIRCUIT_CLOSED,
                     "the relay circuit ended (the peer left or the relay closed it)", 1);
    }
}

void sess_relay_gone(pos_p2p_endpoint *ep, pos_p2p_relay *r)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t)
        return;
    sess_table_drop_circuits(t, r);
    /* freed by the timers if the application closed it from the callback */
    for (pos_p2p_session *s = sess_table_first(t); s; s = sess_next(s))
        if (sess_uses_relay(s, r))
            sess_end(s, POS_P2P_ERR_CIRCUIT_CLOSED, "the relay connection was closed", 0);
}

/* ---- the listener's timers ---- */

static int64_t listen_deadline_ms(const struct ep_conn *c)
{
    const struct sess_table *t = sess_table_of(c->ep);
    int64_t best = -1;
    for (const pos_p2p_session *s = sess_table_first(t); s; s = sess_next(s)) {
        int64_t d = sess_deadline(s);
        if (d >= 0 && (best < 0 || d < best))
            best = d;
    }
    return best;
}

static void listen_on_timer(struct ep_conn *c, int64_t now_ms)
{
    struct sess_table *t = sess_table_of(c->ep);
    int64_t now = pos_p2p_now_ms();
    (void)now_ms; /* read after the relay connections' timers, as always */
    for (pos_p2p_session *s = sess_table_first(t), *next; s; s = next) {
        next = sess_next(s);
        sess_timer(s, now);
    }
    sess_table_expire_circuits(t, now);
}

static void listen_destroy(struct ep_conn *c)
{
    struct sess_table *t = sess_table_of(c->ep);
    pos_p2p_session *s;
    while ((s = sess_table_first(t)) != NULL)
        sess_release(s);
    sess_punch_ep_free(sess_table_punch(t));
    sess_table_free(t);
}

/* listen_frame: a data frame from no relay of ours: a peer's PUNCH / PUNCH_ACK? 0 taken, -1 not. */
static int listen_frame(struct ep_conn *c, const uint8_t *data, size_t len,
                        const struct sockaddr *from, socklen_t fromlen)
{
    struct sess_table *t = sess_table_of(c->ep);
    pos_frame f;
    (void)fromlen;
    if (pos_frame_decode(data, len, &f) != 0 ||
        (f.type != POS_FRAME_PUNCH && f.type != POS_FRAME_PUNCH_ACK))
        return -1;
    for (pos_p2p_session *s = sess_table_first(t); s; s = sess_next(s))
        if (!sess_is_dead(s) && sess_punch_of(s) &&
            sess_punch_frame(sess_punch_of(s), f.circuit_id, data, len, from, pos_p2p_now_ms()) ==
                0)
            return 0;
    return -1;
}

void sess_punch_begin(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    struct sess_table *t = sess_table_of(ep);
    for (pos_p2p_session *s = t ? sess_table_first(t) : NULL; s; s = sess_next(s)) {
        if (!sess_is_dead(s) && sess_punch_of(s) &&
            sess_punch_is_for(sess_punch_of(s), r, m->circuit_id)) {
            sess_punch_start(sess_punch_of(s), m, pos_p2p_now_ms());
            return;
        }
    }
    sess_punch_keep(ep, r, m, pos_p2p_now_ms()); /* its session comes (CIRCUIT, first Initial) */
}

static const struct ep_conn_ops listen_ops = {listen_unclaimed, listen_frame, listen_deadline_ms,
                                              listen_on_timer, listen_destroy};

struct sess_table *sess_layer(pos_p2p_endpoint *ep)
{
    return sess_table_get(ep, &listen_ops);
}

/* ---- public API ---- */

int pos_p2p_endpoint_set_punch(pos_p2p_endpoint *ep, const pos_p2p_punch_options *o)
{
    struct sess_punch_ep *pe;
    if (!ep || pos_p2p_punch_options_check(o, NULL, 0) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (!sess_layer(ep) || (pe = sess_punch_ep_of(ep)) == NULL)
        return POS_P2P_ERR_NOMEM;
    sess_punch_ep_set(pe, o);
    return 0;
}

int pos_p2p_endpoint_listen(pos_p2p_endpoint *ep, pos_p2p_allow_cb allow,
                            pos_p2p_accept_cb on_session, void *arg)
{
    struct sess_table *t;
    if (!ep || !on_session)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    t = sess_layer(ep);
    if (!t)
        return POS_P2P_ERR_NOMEM;
    sess_table_listen(t, allow, on_session, arg);
    return 0;
}

int pos_p2p_session_connect_addr(pos_p2p_endpoint *ep, const char *addr, const char *peer_id,
                                 int timeout_ms, pos_p2p_session **out)
{
    struct sockaddr_storage ss;
    uint8_t key[crypto_sign_PUBLICKEYBYTES];

    if (!ep || !addr || !peer_id || !out || timeout_ms <= 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (pos_addr_parse(addr, strnlen(addr, POS_P2P_ADDR_STRLEN), POS_P2P_DEFAULT_PORT, &ss) != 0)
        return POS_P2P_ERR_BAD_ADDRESS;
    if (!ep_has_sock(ep, ss.ss_family == AF_INET ? 0 : 1))
        return POS_P2P_ERR_NO_ROUTE;
    if (!sess_layer(ep))
        return POS_P2P_ERR_NOMEM;
    return sess_dial_direct(ep, &ss, key, timeout_ms, out);
}

static int settled(void *arg)
{
    pos_p2p_session_status st;
    pos_p2p_session_get_status(arg, &st);
    return st.state != POS_P2P_SESSION_CONNECTING;
}

int pos_p2p_session_wait_open(pos_p2p_session *s, int timeout_ms)
{
    pos_p2p_session_status st;
    int rv;
    if (!s)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = pos_p2p_endpoint_run(sess_endpoint(s), timeout_ms, settled, s);
    if (rv != 0)
        return rv;
    pos_p2p_session_get_status(s, &st);
    return st.state == POS_P2P_SESSION_OPEN ? 0 : st.error ? st.error : POS_P2P_ERR_CLOSED;
}
