/*
 * The session layer's table of one endpoint (session_table.c; never
 * installed): the list of its sessions, the listen settings, the relay
 * connections handed to sessions and the accepted circuits still waiting for
 * the dialer's first packet. Pure bookkeeping: it calls no session, so every
 * session module may use it (module order: session_table <- session_path <-
 * session <- session_listen <- session_relay).
 */
#ifndef POS_P2P_SESSION_TABLE_H
#define POS_P2P_SESSION_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define SESS_MAX 1024         /* sessions per endpoint (incoming ones are refused beyond) */
#define SESS_MAX_RELAYS 16    /* relay connections handed to the session layer */
#define SESS_MAX_CIRCUITS 256 /* accepted circuits still waiting for the peer's first packet */

struct sess_table; /* one per endpoint, made on first use; the endpoint's listener */

/*
 * A session's place in the table's list. Each session embeds one so that
 * joining the list needs no allocation (the one struct of this header a
 * caller must see).
 */
struct sess_node {
    struct sess_node *prev, *next;
    pos_p2p_session *s;
};

/*
 * sess_table_get: the table of |ep|, made (and registered as the endpoint's
 * listener, called through |ops|) when there is none; NULL: out of memory.
 */
struct sess_table *sess_table_get(pos_p2p_endpoint *ep, const struct ep_conn_ops *ops);
struct sess_table *sess_table_of(const pos_p2p_endpoint *ep); /* NULL: none yet */
/* sess_table_free unregisters and frees |t|; its sessions must be gone. */
void sess_table_free(struct sess_table *t);

/* the sessions */
int sess_table_link(struct sess_table *t, struct sess_node *n); /* 0, -1 full (SESS_MAX) */
void sess_table_unlink(struct sess_table *t, struct sess_node *n);
pos_p2p_session *sess_table_first(const struct sess_table *t); /* NULL: none */
uint32_t sess_table_next_synthetic(struct sess_table *t);      /* a fresh synthetic number */

/* listening (pos_p2p_endpoint_listen) */
void sess_table_listen(struct sess_table *t, pos_p2p_allow_cb allow, pos_p2p_accept_cb on_session,
                       void *arg);
int sess_table_listening(const struct sess_table *t);
int sess_table_allows(const struct sess_table *t, const char *peer_id);    /* 1: allowed */
void sess_table_hand_over(const struct sess_table *t, pos_p2p_session *s); /* on_session */

/* relay connections handed over with pos_p2p_session_use_relay */
int sess_table_add_relay(struct sess_table *t, pos_p2p_relay *r); /* 0 (also if there), -1 full */
void sess_table_forget_relay(struct sess_table *t, pos_p2p_relay *r);

/* accepted circuits waiting for the dialer's first Initial */
int sess_table_circuit_room(const struct sess_table *t); /* 1: one more fits */
/* sess_table_add_circuit keeps |circuit_id| of |r| until |expires_ms|; -1 when full. */
int sess_table_add_circuit(struct sess_table *t, pos_p2p_relay *r, uint32_t circuit_id,
                           const char *peer_id, int64_t expires_ms);
int sess_table_has_circuit(const struct sess_table *t, const pos_p2p_relay *r, uint32_t circuit_id);
void sess_table_remove_circuit(struct sess_table *t, const pos_p2p_relay *r, uint32_t circuit_id);
void sess_table_drop_circuits(struct sess_table *t, const pos_p2p_relay *r); /* all of |r| */
void sess_table_expire_circuits(struct sess_table *t, int64_t now_ms);

/* the punching state of the endpoint (session_punch.c's; NULL until made) */
struct sess_punch_ep;
struct sess_punch_ep *sess_table_punch(const struct sess_table *t);
void sess_table_set_punch(struct sess_table *t, struct sess_punch_ep *pe);

#endif
