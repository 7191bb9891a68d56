/*
 * Private interface between the two halves of peer sessions: session.c (the
 * QUIC connection: every ngtcp2 call of sessions, streams, the direct path,
 * listening on the endpoint's sockets) and session_relay.c (relay control
 * connections handed to the session layer: requests, redirects, circuits and
 * the relayed path's datagrams). Never installed. session_relay.c calls
 * session.c, never the other way round: session.c reaches the dialing state
 * through struct sess_dial_ops.
 */
#ifndef POS_P2P_SESSION_H
#define POS_P2P_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"

#define SESS_MAX 1024         /* sessions per endpoint (incoming ones are refused beyond) */
#define SESS_MAX_RELAYS 16    /* relay connections handed to the session layer */
#define SESS_MAX_CIRCUITS 256 /* accepted circuits still waiting for the peer's first packet */
/* Largest QUIC packet of a session: a relayed one plus the 5-byte frame header fits 1452. */
#define SESS_MAX_UDP_PAYLOAD 1447

/* An incoming circuit we accepted, waiting for the dialer's first Initial. */
struct sess_circuit {
    pos_p2p_relay *r;
    uint32_t circuit_id;
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    int64_t expires_ms;
};

/* The session layer of an endpoint: its listener (internal.h), made on first use. */
struct sess_table {
    struct ep_conn conn;   /* first: what the endpoint calls */
    pos_p2p_session *list; /* every session, linked through next/prev */
    size_t n;
    uint32_t syn_counter; /* synthetic addresses handed out */
    int listening;
    pos_p2p_allow_cb allow;
    pos_p2p_accept_cb on_session;
    void *arg;
    pos_p2p_relay *relays[SESS_MAX_RELAYS]; /* handed over with pos_p2p_session_use_relay */
    size_t n_relays;
    struct sess_circuit circuits[SESS_MAX_CIRCUITS];
    size_t n_circuits;
};

struct sess_dial;
/* What session.c calls on a dialing session (given by session_relay.c). */
struct sess_dial_ops {
    void (*tick)(pos_p2p_session *s); /* follow a redirect once its relay accepted us */
    void (*release)(pos_p2p_endpoint *ep, struct sess_dial *d); /* the session is freed */
};

/* Relayed dialing state of a client session (session_relay.c). */
struct sess_dial {
    const struct sess_dial_ops *ops;
    pos_p2p_relay *relay;     /* the relay asked now */
    pos_p2p_relay *own_relay; /* a relay we connected to for a redirect (freed with the session) */
    uint32_t req_id;
    int requested; /* CONNECT sent on |relay| */
    int redirects; /* followed so far */
    char *token;   /* for redirects; wiped on free */
    size_t token_len;
};

/* session.c */
struct sess_table *sess_table_get(pos_p2p_endpoint *ep);      /* NULL: out of memory */
struct sess_table *sess_table_of(const pos_p2p_endpoint *ep); /* NULL: none yet */
pos_p2p_session *sess_alloc(pos_p2p_endpoint *ep, int server);
void sess_release(pos_p2p_session *s); /* frees now (not owned, or owner asked) */
/* sess_fail ends |s| with |err| and |reason| (sends nothing) and reports EV_CLOSED to its owner. */
void sess_fail(pos_p2p_session *s, int err, const char *reason);
/* sess_start_relayed starts the client handshake of |s| over |circuit_id| of |r|. */
int sess_start_relayed(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id);
/* sess_relayed_input: a DATA payload from circuit |circuit_id| of |r|. */
void sess_relayed_input(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                        const uint8_t *data, size_t len);
/* sess_relay_gone: sessions over any circuit of |r| fail; its pending circuits go. */
void sess_relay_gone(pos_p2p_endpoint *ep, pos_p2p_relay *r);
/* sess_circuit_closed: the relay ended |circuit_id| of |r|; sessions on it fail. */
void sess_circuit_closed(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id);
/*
 * sess_new_dialer: a client session to run over a relay circuit, its dialing
 * state driven through |ops| (NULL: bad peer id, no memory).
 */
pos_p2p_session *sess_new_dialer(pos_p2p_endpoint *ep, const char *peer_id, int timeout_ms,
                                 const struct sess_dial_ops *ops);
struct sess_dial *sess_dial_of(pos_p2p_session *s);
int sess_is_dialing(const pos_p2p_session *s); /* connecting, relayed, no circuit yet */
pos_p2p_session *sess_next(const pos_p2p_session *s);
const char *sess_expected_peer(const pos_p2p_session *s);
void sess_set_relay_id(pos_p2p_session *s, const char *relay_id, const char *remote);

#endif
