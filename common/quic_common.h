/*
 * ngtcp2 plumbing shared by the three QUIC modules (the library's relay
 * client and peer sessions, the relay's server). Each side still keeps its
 * own ngtcp2 calls behind its own module; this file holds only what they did
 * identically: the clock, the debug trace, the random source that never
 * greases the QUIC bit, the common settings, the crypto callback table and
 * the connection-id and crypto-data callbacks (through pos_quic_cid_ops).
 * Nothing here owns memory or keeps state.
 */
#ifndef POS_QUIC_COMMON_H
#define POS_QUIC_COMMON_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>
#include <stdint.h>

/* pos_quic_now: CLOCK_MONOTONIC in ngtcp2's nanosecond timestamps. No errors. */
ngtcp2_tstamp pos_quic_now(void);

/*
 * pos_quic_trace: an ngtcp2 log_printf that writes one line to stderr
 * (installed only when POS_QUIC_TRACE is set; debugging only). No errors.
 */
void pos_quic_trace(void *user_data, const char *fmt, ...);

/*
 * pos_quic_rand: ngtcp2's rand callback. ngtcp2 0.12 clears the QUIC fixed
 * bit in what it sends (RFC 9287 greasing) when the first random byte drawn
 * while creating a connection is odd; a relay reads a clear fixed bit as a
 * data frame (protocol.md), so that byte is made even. |ctx->native_handle|
 * must point at a uint8_t that is non-zero while the connection is being
 * created (see pos_quic_settings_init). No errors.
 */
void pos_quic_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx);

/*
 * pos_quic_settings_init: ngtcp2's default |settings| plus what every side
 * uses: the current time, |creating| as the rand context (see
 * pos_quic_rand; the caller owns it), a 10 s handshake timeout, and the
 * trace when POS_QUIC_TRACE is set. No errors.
 */
void pos_quic_settings_init(ngtcp2_settings *settings, uint8_t *creating);

/*
 * pos_quic_callbacks_init: zeroes |cb| and fills in ngtcp2_crypto's
 * callbacks for a server (|server| non-zero: recv_client_initial) or a
 * client (client_initial, recv_retry), the shared ones (encrypt, decrypt,
 * header protection, key update, context deletion, path challenge data,
 * version negotiation) and pos_quic_rand. The caller adds its own
 * connection-id, crypto-data, handshake and stream callbacks. No errors.
 */
void pos_quic_callbacks_init(ngtcp2_callbacks *cb, int server);

/*
 * pos_quic_cid_ops: how a connection's owner routes the connection ids it
 * issues. A connection that uses the callbacks below has a pointer to its
 * ops as the FIRST member of the struct given to ngtcp2 as user_data; |conn|
 * below is that user_data. (The library's endpoint and, later, the relay's
 * server keep their ids in a pos_cid_map, common/cid_map.h.)
 */
typedef struct pos_quic_cid_ops {
    size_t cid_len; /* the length of every id this side issues */
    /* add: packets to |id| go to |conn| from now on; 0, or -1 (no memory, map full) */
    int (*add)(void *conn, const uint8_t *id, size_t len);
    /* remove: no more packets to |id| for |conn| */
    void (*remove)(void *conn, const uint8_t *id, size_t len);
    /* reset_token: the stateless reset token of |cid|, 0 or -1; NULL: random tokens */
    int (*reset_token)(void *conn, uint8_t *token, const ngtcp2_cid *cid);
} pos_quic_cid_ops;

/*
 * pos_quic_callbacks_cids sets get_new_connection_id (a random id of
 * cid_len bytes, added through the ops), remove_connection_id and
 * recv_crypto_data (which ignores CRYPTO data once the connection's TLS
 * native handle is cleared after the handshake) in |cb|. No errors.
 */
void pos_quic_callbacks_cids(ngtcp2_callbacks *cb);

/*
 * pos_quic_drop_cids removes every connection id |qc| still uses from its
 * owner's routing (|conn|: the user_data, see pos_quic_cid_ops). |qc| NULL
 * is ignored. No errors.
 */
void pos_quic_drop_cids(ngtcp2_conn *qc, void *conn);

#endif
