/*
 * Hole punching (pos-relay/2; docs/protocol.md "Hole punching"): what the
 * relay and both clients must agree on, apart from the control messages
 * themselves (ctrl.h). The cookie of a PUNCH / PUNCH_ACK frame (frame.h) is
 * a keyed BLAKE2b of the frame's meaning under the attempt's punch key, so
 * only the two peers of the attempt can make or check one; the start delay
 * is the pure function the relay uses so that both sides begin probing at
 * about the same moment. Sans-I/O: no sockets, no clock.
 */
#ifndef POS_PUNCH_H
#define POS_PUNCH_H

#include <stdint.h>

/* Bytes of a punch key (random per attempt, drawn by the relay). */
#define POS_PUNCH_KEY_LEN 16
/* The relay never asks a side to wait longer than this before probing. */
#define POS_PUNCH_MAX_START_IN_MS 5000

/* Role of a side in one attempt (PUNCH_START). The dialer migrates. */
enum pos_punch_role {
    POS_PUNCH_DIALER = 1,   /* the side that sent CONNECT: the QUIC client, it migrates */
    POS_PUNCH_LISTENER = 2, /* the side that accepted: the QUIC server, it follows */
};

/*
 * pos_punch_cookie: the cookie of a probe frame of type |type|
 * (POS_FRAME_PUNCH or POS_FRAME_PUNCH_ACK) carrying circuit id |circuit_id|
 * (the receiving side's id), sent by the side of role |sender_role| in
 * attempt |attempt|, under |key|: the first 8 bytes (big endian) of the
 * 16-byte BLAKE2b of type | circuit id (4) | sender role | attempt (2),
 * keyed with |key| (crypto_generichash). The role in the input means a
 * side's own probe reflected back to it never verifies; the attempt means
 * probes of an earlier attempt never do.
 */
uint64_t pos_punch_cookie(const uint8_t key[POS_PUNCH_KEY_LEN], uint8_t type, uint32_t circuit_id,
                          uint8_t sender_role, uint16_t attempt);

/*
 * pos_punch_cookie_ok: 1 when |cookie| is pos_punch_cookie() of the same
 * arguments, else 0. The comparison is in constant time (sodium_memcmp).
 */
int pos_punch_cookie_ok(const uint8_t key[POS_PUNCH_KEY_LEN], uint8_t type, uint32_t circuit_id,
                        uint8_t sender_role, uint16_t attempt, uint64_t cookie);

/*
 * pos_punch_start_in_ms: how long the relay tells a side whose control
 * connection has a round trip of |rtt_self_ms| to wait before probing, when
 * the other side's is |rtt_other_ms|. The relay sends PUNCH_START to both at
 * once; each arrives after about half its RTT, so the nearer side waits half
 * the difference (rounded up) and the farther one not at all. Capped at
 * POS_PUNCH_MAX_START_IN_MS.
 */
uint32_t pos_punch_start_in_ms(uint32_t rtt_self_ms, uint32_t rtt_other_ms);

#endif
