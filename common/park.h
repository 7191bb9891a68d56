/*
 * Parked clients (pos-relay/4; docs/protocol.md "Parking"): what the relay
 * and a client agree on once the client has parked, that is once the relay
 * has freed its QUIC connection and keeps only a small record. Five
 * datagrams on the relay's UDP port, frames of the data plane (frame.h:
 * first byte 0x00..0x3f), each exactly POS_PARK_LEN bytes:
 *
 *   KEEPALIVE  client -> relay  type 0x25 | record id (8) | counter (8) | mac (16)
 *   ACK        relay -> client  type 0x26 | record id (8) | counter (8) | mac (16)
 *   WAKE       relay -> client  type 0x27 | record id (8) | counter (8) | mac (16)
 *   BYE        client -> relay  type 0x28 | record id (8) | counter (8) | mac (16)
 *   QUIET      client -> relay  type 0x29 | record id (8) | counter (8) | mac (16)
 *
 * QUIET is a keep-alive that wants no ACK: the relay takes it like a
 * KEEPALIVE (refresh, roaming) and answers nothing; a client asks for an
 * ACK only now and then (client-lib/src/relay_park.h), since the answer
 * costs the relay more than the keep-alive itself.
 *
 * The record id is the relay's (PARKED message); its first four bytes sit
 * where a data frame's circuit id sits and follow the circuit id's layout
 * (worker bits included), so the port's steering program hands a parked
 * datagram to the worker that holds the record. The mac is the 16-byte
 * SipHash-2-4 (crypto_shorthash_siphashx24, a PRF) of type | record id |
 * counter keyed with the park key's two halves xored, which both sides
 * derive from the TLS session of the connection that parked (RFC
 * 5705/8446 exporter, label POS_PARK_EXPORTER_LABEL, no context), so only
 * the two of them can make or check one. Counters: a
 * KEEPALIVE's is the client's, strictly increasing (the relay accepts only
 * one above the last it accepted: a replay is dropped); a BYE takes the
 * client's next counter the same way and ends the record (a QUIET takes
 * it like a KEEPALIVE); an ACK echoes the KEEPALIVE it answers; a WAKE's
 * is the relay's own, strictly increasing (the client drops a replayed
 * wake). The type is in the mac input, so a
 * datagram never verifies as another type.
 *
 * Sans-I/O: bytes in, a decoded view out, through a bounded cursor; no
 * sockets, no clock. Keys are secrets: callers wipe them (sodium_memzero).
 */
#ifndef POS_PARK_H
#define POS_PARK_H

#include <stddef.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

#define POS_PARK_KEY_LEN 32
#define POS_PARK_MAC_LEN 16
/* type (1) | record id (8) | counter (8) | mac (16) */
#define POS_PARK_LEN 33
#define POS_PARK_EXPORTER_LABEL "EXPORTER-pos-relay-park"

enum pos_park_type {
    POS_PARK_KEEPALIVE = 0x25, /* client -> relay: I am here (and at this address) */
    POS_PARK_ACK = 0x26,       /* relay -> client: the keep-alive counter, echoed */
    POS_PARK_WAKE = 0x27,      /* relay -> client: a peer asks for you: reconnect */
    POS_PARK_BYE = 0x28,       /* client -> relay: I am leaving: forget the record */
    POS_PARK_QUIET = 0x29,     /* client -> relay: a keep-alive that wants no ACK */
};

/* Errors. */
#define POS_PARK_ERR_NOT_PARK -1  /* not a frame, or not one of the five park types */
#define POS_PARK_ERR_MALFORMED -2 /* a park type of the wrong length, or record id 0 */
#define POS_PARK_ERR_BAD_MAC -3   /* well formed, but the mac does not verify under the key */
#define POS_PARK_ERR_NOBUF -4     /* encode: the buffer is too small */
#define POS_PARK_ERR_INVALID -5   /* encode: bad type or record id 0 */
#define POS_PARK_ERR_TLS -6       /* derive: the TLS session cannot export a key */

/* A parked datagram, decoded (the mac not yet checked: pos_park_verify). */
typedef struct pos_park_msg {
    uint8_t type;
    uint64_t record_id;
    uint64_t counter;
    uint8_t mac[POS_PARK_MAC_LEN];
} pos_park_msg;

/*
 * pos_park_is_park: demultiplexing only. 1 when |buf| (|len| bytes) is not
 * empty and its first byte is one of the five park types, else 0. (The
 * relay's forwarder sees these among data frames.)
 */
static inline int pos_park_is_park(const uint8_t *buf, size_t len)
{
    return len > 0 && buf[0] >= POS_PARK_KEEPALIVE && buf[0] <= POS_PARK_QUIET;
}

/*
 * pos_park_route: the first four bytes after the type (the circuit id's
 * place) of record id |record_id|: its high 32 bits.
 */
static inline uint32_t pos_park_route(uint64_t record_id)
{
    return (uint32_t)(record_id >> 32);
}

/*
 * pos_park_decode parses |buf| (|len| bytes) into |out| without checking
 * the mac. Returns 0, POS_PARK_ERR_NOT_PARK or POS_PARK_ERR_MALFORMED
 * (|out| is then zeroed).
 */
int pos_park_decode(const uint8_t *buf, size_t len, pos_park_msg *out);

/*
 * pos_park_verify: 0 when |m|'s mac is the mac of its type, record id and
 * counter under |key|, else POS_PARK_ERR_BAD_MAC. Constant time in the mac
 * (sodium_memcmp).
 */
int pos_park_verify(const pos_park_msg *m, const uint8_t key[POS_PARK_KEY_LEN]);

/*
 * pos_park_encode writes a datagram of |type| (enum pos_park_type) for
 * |record_id| (not 0) and |counter|, maced under |key|, into |buf| (|cap|
 * bytes). Returns POS_PARK_LEN, POS_PARK_ERR_NOBUF or POS_PARK_ERR_INVALID.
 */
int pos_park_encode(uint8_t *buf, size_t cap, uint8_t type, uint64_t record_id, uint64_t counter,
                    const uint8_t key[POS_PARK_KEY_LEN]);

/*
 * pos_park_derive_key fills |key| from the TLS session |tls| with the
 * exporter (gnutls_prf_rfc5705, label POS_PARK_EXPORTER_LABEL, no context).
 * Call it once the handshake is complete and before the session is freed;
 * both ends of the connection get the same key, nobody else can. Returns 0
 * or POS_PARK_ERR_TLS (|key| is then zeroed).
 */
int pos_park_derive_key(gnutls_session_t tls, uint8_t key[POS_PARK_KEY_LEN]);

/* pos_park_type_name: "PARK_KEEPALIVE", "PARK_ACK", "PARK_WAKE", "PARK_BYE", "PARK_QUIET" or
 * "unknown". */
const char *pos_park_type_name(int type);

/* pos_park_strerror: a sentence for each POS_PARK_ERR_* code. */
const char *pos_park_strerror(int code);

#endif
