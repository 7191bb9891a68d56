/*
 * Hole punching of relayed sessions (session_punch.c; never installed;
 * docs/protocol.md "Hole punching"). One struct sess_punch per relayed
 * session runs the prober (prober.c) of each attempt the relay starts with
 * PUNCH_START, sends its probes from the endpoint's sockets, and on the
 * dialer side moves the QUIC connection to the direct path it found
 * (ngtcp2_conn_initiate_migration), back to the relay when that path stalls,
 * and asks the relay for a new attempt after the retry interval. The
 * endpoint's settings, counters and the PUNCH_STARTs that arrive before
 * their session exists are in struct sess_punch_ep. It calls no session
 * module above it: session.c hands in its ngtcp2 connection and path and
 * reports the path events this module fills in (module order: session_table
 * <- session_path <- session_punch <- session).
 */
#ifndef POS_P2P_SESSION_PUNCH_H
#define POS_P2P_SESSION_PUNCH_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"
#include "session_path.h"

struct sess_punch;    /* one relayed session's */
struct sess_punch_ep; /* the endpoint's (kept in its session table) */

/* the endpoint */
/* sess_punch_ep_of: the punching state of |ep|, made on first use (NULL: no table, no memory). */
struct sess_punch_ep *sess_punch_ep_of(pos_p2p_endpoint *ep);
void sess_punch_ep_free(struct sess_punch_ep *pe); /* wipes the keys kept; NULL: nothing */
/* sess_punch_ep_set: the settings of the attempts to come (checked by the caller). */
void sess_punch_ep_set(struct sess_punch_ep *pe, const pos_p2p_punch_options *o);
/*
 * sess_punch_keep: a PUNCH_START |m| of circuit |m|->circuit_id of |r| whose
 * session does not exist yet (it claims it when made), received at |now|.
 */
void sess_punch_keep(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_ctrl_msg *m, int64_t now);

/* a session */
/*
 * sess_punch_new: the punching of a session relayed over |circuit_id| of |r|
 * (|dialer|: it sent CONNECT and migrates), made at |now|; it takes a
 * PUNCH_START kept for that circuit. NULL: no memory.
 */
struct sess_punch *sess_punch_new(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                                  int dialer, int64_t now);
void sess_punch_del(struct sess_punch *p); /* wipes the key; NULL: nothing */
/* sess_punch_is_for: 1 when |p| is the punching of |circuit_id| of |r|. */
int sess_punch_is_for(const struct sess_punch *p, const pos_p2p_relay *r, uint32_t circuit_id);
/*
 * sess_punch_add_extra: |n| candidate addresses ("ip:port") of the peer from
 * the application, probed in this attempt if it is probing and in every
 * later one (see pos_p2p_session_add_candidates for the errors; none is
 * added on error).
 */
int sess_punch_add_extra(struct sess_punch *p, const char *const *addrs, size_t n, int64_t now);
/* sess_punch_start: a new attempt (PUNCH_START |m|, received at |now|). */
void sess_punch_start(struct sess_punch *p, const pos_ctrl_msg *m, int64_t now);
/*
 * sess_punch_frame: a PUNCH / PUNCH_ACK frame (|data|, |len| bytes) for our
 * circuit id |circuit_id| from |from|; a PUNCH is answered. 0 taken, -1 not
 * for |p| or not valid (dropped).
 */
int sess_punch_frame(struct sess_punch *p, uint32_t circuit_id, const uint8_t *data, size_t len,
                     const struct sockaddr *from, int64_t now);
int64_t sess_punch_deadline(const struct sess_punch *p); /* pos_p2p_now_ms time; -1 none */
/*
 * sess_punch_timer runs what is due at |now| for the session whose
 * connection is |qc| (NULL until made) and path |path|: probes, the move to
 * a direct path (dialer), the move back when the direct path stalls, a new
 * attempt's request. Returns 1 with |*ev| filled when the path changed (to
 * report), else 0.
 */
int sess_punch_timer(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                     int64_t now, pos_p2p_path_change *ev);
/*
 * sess_punch_validated: ngtcp2 validated (|ok|) or gave up on |np|. Returns 1
 * with |*ev| filled when the session's path changed (to report), else 0.
 */
int sess_punch_validated(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                         const ngtcp2_path *np, int ok, pos_p2p_path_change *ev);
/*
 * sess_punch_keep_direct: the circuit of a session closed (CIRCUIT_CLOSED,
 * or the relay connection went away). A direct session lives on without it:
 * its relayed path is dropped (|path| too), no fallback, no new attempt.
 * Returns 1 then; 0 when the session is not direct (it ends, as before).
 */
int sess_punch_keep_direct(struct sess_punch *p, struct sess_path *path);
/*
 * sess_punch_follow: after a packet was read, the listener follows the
 * connection's current path (the dialer's move): direct, or back on the
 * relay (a path ngtcp2 has seen before may come back without a validation
 * callback). Returns 1 with |*ev| filled when it changed, else 0.
 */
int sess_punch_follow(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                      pos_p2p_path_change *ev);
/* sess_punch_received: sess_punch_count of a received packet, at |now| (pos_p2p_now_ms). */
void sess_punch_received(struct sess_punch *p, const struct sess_path *path, const ngtcp2_path *np,
                         size_t len, int64_t now);
/* sess_punch_count: |len| bytes sent or received on |path| (relayed or direct). */
void sess_punch_count(struct sess_punch *p, const struct sess_path *path, const ngtcp2_path *np,
                      size_t len);
/* sess_punch_info fills the punching part of |out| (path, bytes, upgrade time, counters). */
void sess_punch_info(const struct sess_punch *p, pos_p2p_path_info *out);

#endif
