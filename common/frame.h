/*
 * Relay data frames: the datagrams on the relay's UDP port (and on a
 * client's socket) that are not QUIC. A datagram whose first byte has both
 * top bits clear (0x00..0x3f) is a frame; QUIC v1 packets have the fixed
 * bit 0x40 set (RFC 9000 17.2 and 17.3) unless an endpoint greases it (RFC
 * 9287: our endpoints never do), and long-header packets, Version
 * Negotiation included, always have 0x80 set. See docs/data-plane.md.
 *
 * Layout (all integers big endian):
 *   DATA           type | circuit id (4) | payload (1..POS_FRAME_MAX_PAYLOAD)
 *   KEEPALIVE      type | circuit id (4) | cookie (8)
 *   KEEPALIVE_ACK  type | circuit id (4) | cookie (8)
 *   PUNCH          type | circuit id (4) | cookie (8)
 *   PUNCH_ACK      type | circuit id (4) | cookie (8)
 * Circuit id 0 is reserved (never allocated). Probe frames have exactly 13
 * bytes, so every frame has one encoding.
 *
 * Sans-I/O: bytes in, a decoded view out, through a bounded cursor. The
 * decoded payload points into the caller's buffer (no copy).
 */
#ifndef POS_FRAME_H
#define POS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define POS_FRAME_HEADER_LEN 5
/* Largest QUIC packet carried: PMTUD probes reach 1452 B; 1500 leaves room. */
#define POS_FRAME_MAX_PAYLOAD 1500
#define POS_FRAME_MAX_LEN (POS_FRAME_HEADER_LEN + POS_FRAME_MAX_PAYLOAD)
#define POS_FRAME_PROBE_LEN 13

/* Bits of the first byte that are clear in every frame (0x40 = QUIC fixed bit, 0x80 = long header).
 */
#define POS_FRAME_CLEAR_BITS 0xc0

enum pos_frame_type {
    POS_FRAME_DATA = 0x20,          /* a peer's QUIC packet, relayed */
    POS_FRAME_KEEPALIVE = 0x21,     /* client -> relay: keeps the NAT binding, checks the circuit */
    POS_FRAME_KEEPALIVE_ACK = 0x22, /* relay -> client: the KEEPALIVE echoed */
    POS_FRAME_PUNCH = 0x23,         /* peer -> peer, direct: hole-punch probe */
    POS_FRAME_PUNCH_ACK = 0x24,     /* peer -> peer, direct: answer to a PUNCH */
};

/* Errors. */
#define POS_FRAME_ERR_NOT_FRAME -1    /* empty, or first byte is QUIC (0x40 or 0x80 set) */
#define POS_FRAME_ERR_UNKNOWN_TYPE -2 /* a frame, but of no known type */
#define POS_FRAME_ERR_MALFORMED -3    /* wrong length, circuit id 0, empty or oversized payload */
#define POS_FRAME_ERR_NOBUF -4        /* encode: the buffer is too small */
#define POS_FRAME_ERR_INVALID -5      /* encode: bad argument (type, circuit id 0, payload size) */

/* A decoded frame. |payload| points into the decoded buffer (DATA only, else NULL). */
typedef struct pos_frame {
    uint8_t type;
    uint32_t circuit_id;
    uint64_t cookie; /* probe types only */
    const uint8_t *payload;
    size_t payload_len;
} pos_frame;

/*
 * pos_frame_is_frame: demultiplexing only. Returns 1 when |len| > 0 and the
 * first byte of |buf| has neither 0x40 nor 0x80 set (not QUIC), 0 otherwise.
 */
static inline int pos_frame_is_frame(const uint8_t *buf, size_t len)
{
    return len > 0 && (buf[0] & POS_FRAME_CLEAR_BITS) == 0;
}

/*
 * pos_frame_decode parses the datagram |buf| (|len| bytes) into |out|.
 * Returns 0, POS_FRAME_ERR_NOT_FRAME, POS_FRAME_ERR_UNKNOWN_TYPE or
 * POS_FRAME_ERR_MALFORMED (|out| is then zeroed).
 */
int pos_frame_decode(const uint8_t *buf, size_t len, pos_frame *out);

/*
 * pos_frame_encode_data writes a DATA frame for circuit |circuit_id| with
 * |payload| (|payload_len| bytes, 1..POS_FRAME_MAX_PAYLOAD) into |buf|
 * (|cap| bytes). |payload| may already sit at buf + POS_FRAME_HEADER_LEN
 * (then nothing is copied). Returns the frame length, POS_FRAME_ERR_NOBUF or
 * POS_FRAME_ERR_INVALID.
 */
int pos_frame_encode_data(uint8_t *buf, size_t cap, uint32_t circuit_id, const uint8_t *payload,
                          size_t payload_len);

/*
 * pos_frame_encode_probe writes a KEEPALIVE, KEEPALIVE_ACK, PUNCH or
 * PUNCH_ACK frame (|type|) into |buf| (|cap| bytes). Returns
 * POS_FRAME_PROBE_LEN, POS_FRAME_ERR_NOBUF or POS_FRAME_ERR_INVALID.
 */
int pos_frame_encode_probe(uint8_t *buf, size_t cap, uint8_t type, uint32_t circuit_id,
                           uint64_t cookie);

/*
 * pos_frame_set_circuit rewrites the circuit id of a frame in place. The
 * caller has decoded |buf| successfully (so it has at least 5 bytes).
 */
static inline void pos_frame_set_circuit(uint8_t *buf, uint32_t circuit_id)
{
    buf[1] = (uint8_t)(circuit_id >> 24);
    buf[2] = (uint8_t)(circuit_id >> 16);
    buf[3] = (uint8_t)(circuit_id >> 8);
    buf[4] = (uint8_t)circuit_id;
}

/* pos_frame_type_name: "DATA", "KEEPALIVE", ... or "unknown". */
const char *pos_frame_type_name(int type);

/* pos_frame_strerror: a sentence for each POS_FRAME_ERR_* code. */
const char *pos_frame_strerror(int code);

#endif
