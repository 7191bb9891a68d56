/*
 * Relay control connections in the service of peer sessions (see session.h).
 * A relay handed to the session layer (pos_p2p_session_use_relay) has its
 * events and circuit data handled here: a peer's request is answered by the
 * endpoint's listen settings (allow callback), an accepted request's circuit
 * waits for the dialer's first QUIC packet (session_listen.c then makes the
 * acceptor), a dialer's request is followed through REDIRECT (connecting to
 * the named relay with the caller's token) to its CIRCUIT, where session.c
 * starts the QUIC handshake on the relayed path. No ngtcp2 call here. The
 * dialing state (struct sess_dial) is this file's; session.c holds it as a
 * pointer and reaches it through sess_dial_ops.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"
#include "session_listen.h"

#define MAX_REDIRECTS 2
#define CIRCUIT_WAIT_MS 15000 /* an accepted circuit waits this long for the dialer's Initial */

/* Relayed dialing state of a client session. */
struct sess_dial {
    pos_p2p_relay *relay;     /* the relay asked now */
    pos_p2p_relay *own_relay; /* a relay we connected to for a redirect (freed with the session) */
    uint32_t req_id;
    int requested; /* CONNECT sent on |relay| */
    int redirects; /* followed so far */
    char *token;   /* for redirects; wiped on free */
    size_t token_len;
};

static void forget_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r);

static pos_p2p_session *find_dialer(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t req_id)
{
    struct sess_table *t = sess_table_of(ep);
    for (pos_p2p_session *s = t ? sess_table_first(t) : NULL; s; s = sess_next(s)) {
        struct sess_dial *d = sess_dial_of(s);
        if (d && sess_is_dialing(s) && d->relay == r && d->requested && d->req_id == req_id)
            return s;
    }
    return NULL;
}

static void on_incoming(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct sess_table *t = sess_table_of(ep);
    int ok =
        sess_table_listening(t) && sess_table_circuit_room(t) && sess_table_allows(t, ev->peer_id);
    pos_p2p_relay_answer(r, ev->req_id, ok);
}

static void on_circuit(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct sess_table *t = sess_table_of(ep);
    pos_p2p_session *s = find_dialer(ep, r, ev->req_id);
    if (s && !strcmp(ev->peer_id, sess_expected_peer(s))) {
        if (sess_start_relayed(s, r, ev->circuit_id) != 0)
            sess_fail(s, POS_P2P_ERR_HANDSHAKE, "cannot start QUIC over the relay circuit");
        return;
    }
    /* a circuit for a request we accepted: the dialer's Initial comes next */
    sess_table_add_circuit(t, r, ev->circuit_id, ev->peer_id, pos_p2p_now_ms() + CIRCUIT_WAIT_MS);
}

static void on_redirect(pos_p2p_endpoint *ep, pos_p2p_session *s, const pos_p2p_relay_event *ev)
{
    struct sess_dial *d = sess_dial_of(s);
    pos_p2p_relay *nr = NULL;
    char why[300];
    int rv;

    if (d->redirects >= MAX_REDIRECTS) {
        sess_fail(s, POS_P2P_ERR_PROTOCOL, "too many relay redirects");
        return;
    }
    d->redirects++;
    /* dialing only: this connection must not take our own presence from our home relay */
    rv = pos_p2p_relay_connect_flags(ep, &ev->redirect, d->token, 10000, POS_P2P_RELAY_NOT_HOME,
                                     &nr);
    if (rv != 0) {
        snprintf(why, sizeof(why), "the peer is on relay %s, which cannot be reached: %s",
                 ev->redirect.id, pos_p2p_strerror(rv));
        sess_fail(s, rv == POS_P2P_ERR_NO_ROUTE ? rv : POS_P2P_ERR_NO_RELAY, why);
        return;
    }
    if (d->own_relay) {
        /* a second redirect: the first relay we dialed is no longer needed */
        forget_relay(ep, d->own_relay);
        pos_p2p_relay_close(d->own_relay);
    }
    d->own_relay = nr;
    d->relay = nr;
    d->requested = 0;
    pos_p2p_session_use_relay(ep, nr);
    sess_set_relay_id(s, ev->redirect.id, ev->redirect.addrs[0]);
}

static void on_error(pos_p2p_session *s, const pos_p2p_relay_event *ev)
{
    char why[400];
    const char *text = ev->text[0] ? ev->text : pos_p2p_strerror(ev->error);
    if (ev->error == POS_P2P_ERR_PEER_NOT_CONNECTED)
        snprintf(why, sizeof(why), "peer not connected: %s is connected to no relay (%s)",
                 sess_expected_peer(s), text);
    else if (ev->error == POS_P2P_ERR_DECLINED)
        snprintf(why, sizeof(why), "the peer refused the session (%s)", text);
    else
        snprintf(why, sizeof(why), "the relay could not reach the peer: %s", text);
    sess_fail(s, ev->error ? ev->error : POS_P2P_ERR_PROTOCOL, why);
}

static void on_relay_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    pos_p2p_endpoint *ep = arg;
    pos_p2p_session *s;
    if (!sess_table_of(ep))
        return;
    switch (ev->type) {
    case POS_P2P_RELAY_EV_INCOMING:
        on_incoming(ep, r, ev);
        break;
    case POS_P2P_RELAY_EV_CIRCUIT:
        on_circuit(ep, r, ev);
        break;
    case POS_P2P_RELAY_EV_REDIRECT:
        if ((s = find_dialer(ep, r, ev->req_id)) != NULL)
            on_redirect(ep, s, ev);
        break;
    case POS_P2P_RELAY_EV_ERROR:
        if ((s = find_dialer(ep, r, ev->req_id)) != NULL)
            on_error(s, ev);
        break;
    case POS_P2P_RELAY_EV_CIRCUIT_CLOSED:
        sess_circuit_closed(ep, r, ev->circuit_id);
        break;
    default: /* GOAWAY: sessions live on until their circuits close */
        break;
    }
}

static void on_relay_data(void *arg, pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data,
                          size_t len)
{
    sess_relayed_input(arg, r, circuit_id, data, len);
}

/* on_relay_punch: a PUNCH_START (inside the relay's read: the session layer only keeps it) */
static void on_relay_punch(void *arg, pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    sess_punch_begin(arg, r, m);
}

int pos_p2p_session_use_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r)
{
    struct sess_table *t;
    if (!ep || !r)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    t = sess_layer(ep);
    if (!t)
        return POS_P2P_ERR_NOMEM;
    if (sess_table_add_relay(t, r) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    pos_p2p_relay_set_callbacks(r, on_relay_event, on_relay_data, ep);
    relay_set_punch_cb(r, on_relay_punch);
    return 0;
}

void pos_p2p_session_drop_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r)
{
    if (!ep || !r || !sess_table_of(ep))
        return;
    sess_relay_gone(ep, r);
    forget_relay(ep, r);
    pos_p2p_relay_set_callbacks(r, NULL, NULL, NULL);
    relay_set_punch_cb(r, NULL);
}

static void dial_tick(pos_p2p_session *s)
{
    struct sess_dial *d = sess_dial_of(s);
    pos_p2p_relay_status st;
    char why[400];
    if (!d || d->requested)
        return;
    pos_p2p_relay_get_status(d->relay, &st);
    if (st.state == POS_P2P_RELAY_CONNECTING)
        return;
    if (st.state == POS_P2P_RELAY_FAILED) {
        snprintf(why, sizeof(why), "the relay at %s cannot be used: %s", st.remote,
                 st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
        sess_fail(s, st.error ? st.error : POS_P2P_ERR_NO_RELAY, why);
        return;
    }
    if (pos_p2p_relay_request_peer(d->relay, sess_expected_peer(s), &d->req_id) != 0) {
        sess_fail(s, POS_P2P_ERR_NOMEM, "cannot ask the relay for the peer");
        return;
    }
    d->requested = 1;
}

static void forget_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r)
{
    struct sess_table *t = sess_table_of(ep);
    if (t)
        sess_table_forget_relay(t, r);
}

static void dial_release(pos_p2p_endpoint *ep, struct sess_dial *d)
{
    if (d->token) {
        sodium_memzero(d->token, d->token_len);
        free(d->token);
        d->token = NULL;
    }
    if (d->own_relay) {
        forget_relay(ep, d->own_relay);
        pos_p2p_relay_close(d->own_relay);
        d->own_relay = NULL;
    }
    free(d);
}

static pos_p2p_relay *dial_relay(const struct sess_dial *d)
{
    return d->relay;
}

static const struct sess_dial_ops dial_ops = {dial_tick, dial_relay, dial_release};

int pos_p2p_session_connect_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r, const char *token,
                                  const char *peer_id, int timeout_ms, pos_p2p_session **out)
{
    pos_p2p_session *s;
    struct sess_dial *d;
    pos_p2p_relay_status st;
    uint8_t key[crypto_sign_PUBLICKEYBYTES];
    size_t tlen;
    int rv;

    if (!ep || !r || !token || !peer_id || !out || timeout_ms <= 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    tlen = strnlen(token, 257);
    if (tlen == 0 || tlen > 256 ||
        pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if ((rv = pos_p2p_session_use_relay(ep, r)) != 0)
        return rv;
    d = calloc(1, sizeof(*d));
    if (!d || (d->token = malloc(tlen + 1)) == NULL) {
        free(d);
        return POS_P2P_ERR_NOMEM;
    }
    memcpy(d->token, token, tlen + 1);
    d->token_len = tlen + 1;
    d->relay = r;
    s = sess_new_dialer(ep, peer_id, timeout_ms, &dial_ops, d);
    if (!s) {
        dial_release(ep, d);
        return POS_P2P_ERR_NOMEM; /* the peer id parsed above: no memory, or SESS_MAX sessions */
    }
    pos_p2p_relay_get_status(r, &st);
    sess_set_relay_id(s, relay_list_id(r), st.remote);
    dial_tick(s);
    *out = s;
    return 0;
}
