/*
 * What a relay connection tracks of its circuits and owes its user
 * (relay_circ.c; never installed): the INCOMING requests that may be
 * answered, the open circuits (their ids), the events decoded while ngtcp2
 * reads a packet and delivered after it returns, the user's callbacks and
 * whether one of them asked to close the connection. No ngtcp2, no
 * sockets: quic_client.c owns the connection and calls this. Module order:
 * relay_circ <- quic_client.
 */
#ifndef POS_P2P_RELAY_CIRC_H
#define POS_P2P_RELAY_CIRC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ctrl.h"
#include "pos/p2p.h"

struct relay_circ;

struct relay_circ *relay_circ_new(void); /* NULL: no memory */
void relay_circ_free(struct relay_circ *c);
/* relay_circ_trim frees what an idle (parked) connection does not need; kept: callbacks. */
void relay_circ_trim(struct relay_circ *c);

void relay_circ_set_callbacks(struct relay_circ *c, pos_p2p_relay_event_cb on_event,
                              pos_p2p_relay_data_cb on_data, void *arg);
void *relay_circ_arg(const struct relay_circ *c); /* the callbacks' argument */

/*
 * relay_circ_msg: relay message |m| after WELCOME (INCOMING, CIRCUIT,
 * REDIRECT, ERROR, CIRCUIT_CLOSED, GOAWAY): tracked and queued as an event.
 * 0, -1 the relay breaks the protocol (another type, far too many events),
 * or 1: an INCOMING over the limit, to be declined at once (not queued).
 */
int relay_circ_msg(struct relay_circ *c, const pos_ctrl_msg *m);
/* relay_circ_push queues |ev| (0; -1 far too many: the relay breaks the protocol). */
int relay_circ_push(struct relay_circ *c, const pos_p2p_relay_event *ev);
int relay_circ_pending_events(const struct relay_circ *c); /* events queued */
/*
 * relay_circ_dispatch delivers the queued events to |r|'s callback; one
 * event |ev| (not NULL) now instead. 0, or -1 when a callback asked to close
 * |r| (the caller closes it then).
 */
int relay_circ_dispatch(struct relay_circ *c, pos_p2p_relay *r, const pos_p2p_relay_event *ev);
/*
 * relay_circ_event: an event of |type| and |code| (PARKED, AWAKE) delivered
 * to |r| now (-1 when the callback asked to close it), or queued when |r| is NULL.
 */
int relay_circ_event(struct relay_circ *c, pos_p2p_relay *r, int type, int code);
/*
 * relay_circ_frame: a data frame from the relay's address: 0 taken
 * (KEEPALIVE_ACK, or DATA of an open circuit to the data callback), -1
 * dropped (malformed, a circuit we do not have), -2 taken and the callback
 * asked to close |r|.
 */
int relay_circ_frame(struct relay_circ *c, pos_p2p_relay *r, const uint8_t *data, size_t len);
/* relay_circ_data: circuit data to the data callback; -1 when it asked to close |r|. */
int relay_circ_data(struct relay_circ *c, pos_p2p_relay *r, uint32_t circuit_id,
                    const uint8_t *data, size_t len);
/* relay_circ_defer_close: inside a callback, the close waits for its return (1); else 0. */
int relay_circ_defer_close(struct relay_circ *c);

int relay_circ_open(const struct relay_circ *c, uint32_t circuit_id); /* 1: circuit open */
/* relay_circ_take_incoming: INCOMING |req_id| is answered: 0, or -1 when not answerable. */
int relay_circ_take_incoming(struct relay_circ *c, uint32_t req_id);
/* relay_circ_undo_incoming: the answer could not be queued: answerable again. */
void relay_circ_undo_incoming(struct relay_circ *c, uint32_t req_id);
int relay_circ_idle(const struct relay_circ *c); /* 1: no circuit, no INCOMING to answer */

#endif
