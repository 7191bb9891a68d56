/*
 * Private interface of one peer session (session.c; never installed) to
 * the session modules above it: session_listen.c (the endpoint's listener:
 * acceptors, circuit payloads, timers of all sessions) and session_relay.c
 * (relay requests, redirects, circuits). session.c calls neither: it reaches
 * a relayed dialer's state through struct sess_dial_ops.
 */
#ifndef POS_P2P_SESSION_H
#define POS_P2P_SESSION_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"

struct sess_dial; /* relayed dialing state (session_relay.c) */
/*
 * What session.c calls on a dialing session's state (given by
 * session_relay.c, which writes the table: hence defined here).
 */
struct sess_dial_ops {
    void (*tick)(pos_p2p_session *s); /* follow a redirect once its relay accepted us */
    pos_p2p_relay *(*relay)(const struct sess_dial *d);         /* the relay asked now */
    void (*release)(pos_p2p_endpoint *ep, struct sess_dial *d); /* the session is freed: free |d| */
};

/* making sessions (the endpoint's session table must exist: session_listen.c) */
pos_p2p_session *sess_alloc(pos_p2p_endpoint *ep, int server); /* NULL: no memory, or full */
/*
 * sess_dial_direct: a client session to |ss| whose peer must have |key|;
 * 0, POS_P2P_ERR_NOMEM or POS_P2P_ERR_HANDSHAKE.
 */
int sess_dial_direct(pos_p2p_endpoint *ep, const struct sockaddr_storage *ss, const uint8_t *key,
                     int timeout_ms, pos_p2p_session **out);
/*
 * sess_new_dialer: a client session to run over a relay circuit, its dialing
 * state |d| driven through |ops| (freed with the session; NULL: bad peer
 * id, no memory, and |d| is the caller's still).
 */
pos_p2p_session *sess_new_dialer(pos_p2p_endpoint *ep, const char *peer_id, int timeout_ms,
                                 const struct sess_dial_ops *ops, struct sess_dial *d);
/* sess_accept: an acceptor for the dialer's first Initial |hd| (direct: |sock|/|from|; relayed:
 * |r|/|circuit_id|); NULL: no memory or full. */
pos_p2p_session *sess_accept(pos_p2p_endpoint *ep, const ngtcp2_pkt_hd *hd, int sock,
                             const struct sockaddr *from, socklen_t fromlen, pos_p2p_relay *r,
                             uint32_t circuit_id);
/* sess_start_relayed starts the client handshake of |s| over |circuit_id| of |r|. */
int sess_start_relayed(pos_p2p_session *s, pos_p2p_relay *r, uint32_t circuit_id);

/* input */
/* sess_read: a QUIC packet for |s| from |from| on socket |sock| (0 IPv4, 1 IPv6). */
void sess_read(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
               const struct sockaddr *from, socklen_t fromlen);
void sess_read_relayed(pos_p2p_session *s, const uint8_t *data, size_t len); /* its circuit's */
int sess_is_acceptor_of(const pos_p2p_session *s, const ngtcp2_cid *dcid);   /* first DCID |dcid| */
int sess_on_circuit(const pos_p2p_session *s, const pos_p2p_relay *r, uint32_t circuit_id);
int sess_uses_relay(const pos_p2p_session *s, const pos_p2p_relay *r); /* path or dialing */

/* timers */
int64_t sess_deadline(const pos_p2p_session *s); /* pos_p2p_now_ms time; -1 none */
/* sess_timer: what is due at |now_ms| (may free |s|). */
void sess_timer(pos_p2p_session *s, int64_t now_ms);

/* ending */
/* sess_fail ends |s| with |err| and |reason| (sends nothing) and reports EV_CLOSED to its owner. */
void sess_fail(pos_p2p_session *s, int err, const char *reason);
/*
 * sess_end: sess_fail from outside any callback of |s|; |free_now|: free it
 * if the owner closed it. POS_P2P_ERR_CIRCUIT_CLOSED does not end a direct
 * session: it only loses its relayed path (sess_punch_keep_direct).
 */
void sess_end(pos_p2p_session *s, int err, const char *reason, int free_now);
void sess_release(pos_p2p_session *s); /* frees now (not owned, or owner asked) */

/* what the modules above ask */
pos_p2p_session *sess_next(const pos_p2p_session *s); /* in the table; NULL: last */
pos_p2p_endpoint *sess_endpoint(const pos_p2p_session *s);
struct sess_dial *sess_dial_of(pos_p2p_session *s); /* NULL: not a relayed dialer */
int sess_is_dialing(const pos_p2p_session *s);      /* connecting, relayed, no circuit yet */
const char *sess_expected_peer(const pos_p2p_session *s);
void sess_set_relay_id(pos_p2p_session *s, const char *relay_id, const char *remote);

/* for session_api.c (the public stream and path calls) */
int sess_is_dead(const pos_p2p_session *s);        /* closed or failed: no more I/O */
int sess_is_open(const pos_p2p_session *s);        /* not dead and OPEN */
ngtcp2_conn *sess_conn(const pos_p2p_session *s);  /* NULL until made */
struct sstream **sess_streams(pos_p2p_session *s); /* its stream buffers (session_stream.c) */
struct sstream *sess_stream_list(const pos_p2p_session *s);
void sess_flush(pos_p2p_session *s); /* writes what is due, unless inside a call that will */
struct sess_punch *sess_punch_of(const pos_p2p_session *s); /* NULL: not relayed */

const pos_p2p_session_status *sess_status(const pos_p2p_session *s);

#endif
