/*
 * The ngtcp2 connection of one session and its TLS (session_quic.c; never
 * installed): made with the session's transport settings, pinned to the
 * expected peer key, its first connection id given to the endpoint. The
 * session (session.c) drives it; what ngtcp2 reports goes to the callbacks
 * the session hands in.
 */
#ifndef POS_P2P_SESSION_QUIC_H
#define POS_P2P_SESSION_QUIC_H

#include <ngtcp2/ngtcp2.h>

#include "internal.h"

/* Largest QUIC packet of a session: a relayed one plus the 5-byte frame header fits 1452. */
#define SESS_MAX_UDP_PAYLOAD 1447

struct sess_quic; /* owned by its session */

/* What a session's connection is made from (the arguments of sess_quic_new, filled by the caller).
 */
struct sess_quic_args {
    const ngtcp2_callbacks *cbs; /* complete (pos_quic_callbacks_init and the session's own) */
    const ngtcp2_path *path;
    const ngtcp2_pkt_hd *hd; /* server: the dialer's first Initial; NULL: a client */
    const uint8_t *peer_key; /* client: the key the peer must have (32 bytes) */
    struct ep_conn *conn;    /* ngtcp2's user_data; its connection ids go to its endpoint */
};

/*
 * sess_quic_new makes the connection in |*out|. Returns 0,
 * POS_P2P_ERR_NOMEM or POS_P2P_ERR_HANDSHAKE (TLS could not be set up).
 */
int sess_quic_new(struct sess_quic **out, const struct sess_quic_args *a);
void sess_quic_del(struct sess_quic *q); /* NULL: nothing */
ngtcp2_conn *sess_quic_conn(const struct sess_quic *q);
const pos_tls_pin *sess_quic_pin(const struct sess_quic *q); /* the peer's key once known */
/* sess_quic_drop_tls frees the TLS session once the handshake is done (the keys are in ngtcp2). */
void sess_quic_drop_tls(struct sess_quic *q);
int sess_quic_has_tls(const struct sess_quic *q);

#endif
