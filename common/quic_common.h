/*
 * ngtcp2 plumbing shared by the three QUIC modules (the library's relay
 * client and peer sessions, the relay's server). Each side still keeps its
 * own ngtcp2 calls behind its own module; this file holds only what they did
 * identically: the clock, the debug trace, the random source that never
 * greases the QUIC bit, the common settings and the crypto callback table.
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

#endif
