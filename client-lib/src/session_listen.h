/*
 * The session layer's face to the endpoint (session_listen.c; never
 * installed): the listener connection behind the endpoint's session table.
 * It makes acceptors for Initials nobody claims and for circuits' first
 * packets, passes circuit payloads to their sessions and runs every
 * session's timers. session_relay.c calls it; it calls session.c and
 * session_table.c.
 */
#ifndef POS_P2P_SESSION_LISTEN_H
#define POS_P2P_SESSION_LISTEN_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "session_table.h"

/* sess_layer: the session table of |ep|, made on first use; NULL: out of memory. */
struct sess_table *sess_layer(pos_p2p_endpoint *ep);
/* sess_relayed_input: a DATA payload from circuit |circuit_id| of |r|. */
void sess_relayed_input(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                        const uint8_t *data, size_t len);
/* sess_relay_gone: sessions over any circuit of |r| (or dialing on it) fail; its circuits go. */
void sess_relay_gone(pos_p2p_endpoint *ep, pos_p2p_relay *r);
/* sess_circuit_closed: the relay ended |circuit_id| of |r|; sessions on it fail. */
void sess_circuit_closed(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id);
/* sess_punch_begin: PUNCH_START |m| of circuit |m|->circuit_id of |r|: to its session, or kept. */
void sess_punch_begin(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_ctrl_msg *m);

#endif
