/*
 * Parking of a home relay connection (relay_park.c; never installed; see
 * docs/protocol.md "Parking"). One struct relay_park per home connection of
 * version 4: it decides when the connection is idle long enough to ask the
 * relay to park it (PARK), and once parked (the QUIC connection freed) it
 * holds the park key and the record, sends the MACed keep-alives from the
 * endpoint's socket, checks the relay's acks and wakes, and says when to
 * reconnect. It knows no ngtcp2: quic_client.c does what it returns (asks,
 * frees the QUIC connection, reconnects). Module order: endpoint <-
 * relay_park <- quic_client.
 */
#ifndef POS_P2P_RELAY_PARK_H
#define POS_P2P_RELAY_PARK_H

#include <gnutls/gnutls.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ctrl.h"
#include "internal.h"

#define RELAY_PARK_RESEND_MS 2000 /* a keep-alive unanswered this long is sent again... */
#define RELAY_PARK_RESENDS 3      /* ...this many times, then the client reconnects */
/*
 * One keep-alive in RELAY_PARK_ACK_EVERY asks for an ack (PARK_KEEPALIVE),
 * the others do not (PARK_QUIET): an ack costs the relay more than the
 * keep-alive. So a client learns that its relay lost the record (a crash)
 * within about this many keep-alive intervals plus the resends (25 s
 * keep-alives: about 2.5 minutes); a relay that stops (SIGTERM) wakes its
 * parked clients at once.
 */
#define RELAY_PARK_ACK_EVERY 6
#define RELAY_PARK_FREE_MS 40   /* from PARKED to freeing QUIC: our ACK of it leaves first */
#define RELAY_PARK_ASK_MS 10000 /* a PARK without answer this long is given up */
#define RELAY_PARK_RETRY_MAX_MS 3600000 /* refused PARKs: asked again at most this late */

/* What the caller does next (relay_park_timer, relay_park_input). */
enum relay_park_do {
    RELAY_PARK_NOTHING = 0,
    RELAY_PARK_ASK = 1,    /* idle long enough: send PARK (then relay_park_asked) */
    RELAY_PARK_FREE = 2,   /* PARKED acknowledged: free the QUIC connection, relay_park_enter */
    RELAY_PARK_REJOIN = 3, /* reconnect now: relay_park_awake_code says why */
};

/* Where a connection is: awake, asked the relay, waiting to free QUIC, parked. */
enum relay_park_state {
    RELAY_PARK_AWAKE = 0,
    RELAY_PARK_ASKED = 1,
    RELAY_PARK_FREEING = 2,
    RELAY_PARK_PARKED = 3,
};

struct relay_park;

/* relay_park_create: an awake connection's state, idle from |now_ms|; NULL: no memory. */
struct relay_park *relay_park_create(pos_p2p_endpoint *ep, int64_t now_ms);
void relay_park_free(struct relay_park *p); /* wipes the key; NULL: nothing */

/*
 * relay_park_derive takes the park key of the connection whose handshake
 * |tls| just completed (before the TLS session is freed). 0, or -1 (no key:
 * the connection never parks).
 */
int relay_park_derive(struct relay_park *p, gnutls_session_t tls);
/* relay_park_set_key: |key| (32 bytes, copied) is the park key (what derive does after the TLS
 * export). */
void relay_park_set_key(struct relay_park *p, const uint8_t key[32]);

int relay_park_state(const struct relay_park *p); /* enum relay_park_state */
/* relay_park_awake_code: after RELAY_PARK_REJOIN, the AWAKE event's code (1..3). */
int relay_park_awake_code(const struct relay_park *p);

/* relay_park_activity: something happened on the connection: the idle clock starts again. */
void relay_park_activity(struct relay_park *p, int64_t now_ms);
/* relay_park_request / relay_park_answered: a CONNECT |req_id| sent / answered (or gone). */
void relay_park_request(struct relay_park *p, uint32_t req_id);
void relay_park_answered(struct relay_park *p, uint32_t req_id);
int relay_park_pending(const struct relay_park *p); /* CONNECTs without an answer */

/*
 * relay_park_deadline: the next time relay_park_timer has something to do
 * (pos_p2p_now_ms clock), -1 none. |can_park|: the connection is an
 * accepted version 4 home connection with nothing in flight.
 */
int64_t relay_park_deadline(const struct relay_park *p, int can_park);
/*
 * relay_park_timer runs what is due at |now_ms|: asks to park (returns
 * RELAY_PARK_ASK), frees after PARKED (RELAY_PARK_FREE), sends keep-alives
 * and their resends, one at once after an address change (roaming), and
 * returns RELAY_PARK_REJOIN when the relay stopped answering them.
 */
int relay_park_timer(struct relay_park *p, int64_t now_ms, int can_park);

/* relay_park_asked: PARK |req_id| went out (on a failure to send, relay_park_activity). */
void relay_park_asked(struct relay_park *p, uint32_t req_id, int64_t now_ms);
/*
 * relay_park_error: an ERROR for |req_id|; 1 when it refused our PARK (the
 * connection stays awake and asks again after twice the idle time, then twice
 * as long each time up to an hour, until a PARK succeeds), else 0.
 */
int relay_park_error(struct relay_park *p, uint32_t req_id, int64_t now_ms);
/*
 * relay_park_parked: the relay's PARKED |m|. 0 when it answers our PARK (the
 * QUIC connection goes after RELAY_PARK_FREE_MS), -1 when it does not.
 */
int relay_park_parked(struct relay_park *p, const pos_ctrl_msg *m, int64_t now_ms);

/*
 * relay_park_enter: the QUIC connection is freed; keep-alives go from
 * |ep|'s socket |sock| to the relay at |relay| (the first one now).
 */
void relay_park_enter(struct relay_park *p, int sock, const struct sockaddr_storage *relay,
                      int64_t now_ms);
/*
 * relay_park_input: a parked datagram (pos_park_is_park) from |from|. 1 not
 * ours (not parked, another record or address), 0 taken (an ack, or
 * dropped: bad mac, replay), 2 a valid wake: reconnect now.
 */
int relay_park_input(struct relay_park *p, const uint8_t *data, size_t len,
                     const struct sockaddr *from, socklen_t fromlen);
/* relay_park_roam: send a keep-alive now (the device's address may have changed). */
void relay_park_roam(struct relay_park *p, int64_t now_ms);
/* relay_park_leave: back to awake (reconnecting, |code| for the AWAKE event); the key is wiped. */
void relay_park_leave(struct relay_park *p, int code, int64_t now_ms);

/*
 * relay_park_goodbye: the connection is being closed: when parked, tell the relay
 * (PARK_BYE, twice) so that it ends the record and the presence now.
 */
void relay_park_goodbye(struct relay_park *p);

/* relay_park_keepalive_ms: the interval in use while parked (ms), 0 when not parked. */
int64_t relay_park_keepalive_ms(const struct relay_park *p);

#endif
