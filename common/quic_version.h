/*
 * Which QUIC versions we speak, and the stateless answer to every other.
 * We speak QUIC version 1 only. ngtcp2 0.12 also implements draft-29 and the
 * provisional v2 and would happily create a connection for them, so neither
 * ngtcp2_pkt_decode_version_cid nor ngtcp2_accept may be the filter: a
 * server (the relay, a listening endpoint) asks pos_quic_version_answer
 * first, for every long-header datagram, before routing or accepting it.
 * Pure: no I/O, no state, no allocation (it can be fuzzed and unit tested).
 */
#ifndef POS_QUIC_VERSION_H
#define POS_QUIC_VERSION_H

#include <gnutls/gnutls.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The smallest datagram answered with Version Negotiation (RFC 9000 14.1: 1200 B). */
#define POS_QUIC_VN_MIN_DATAGRAM 1200

#define POS_QUIC_VERSION_OK 0    /* QUIC v1, or not a long header: route it */
#define POS_QUIC_VERSION_DROP -1 /* another version: drop silently */

/*
 * pos_quic_version_answer looks at the datagram |data| of |len| bytes.
 * Returns POS_QUIC_VERSION_OK for a short header or a long header of QUIC
 * version 1; POS_QUIC_VERSION_DROP for a long header of any other version
 * that must not be answered: a Version Negotiation packet (version 0: a VN
 * never answers a VN), a datagram shorter than POS_QUIC_VN_MIN_DATAGRAM, or
 * one whose connection ids do not parse; otherwise the length (> 0) of the
 * Version Negotiation packet written into |buf| (|cap| bytes), which lists
 * version 1 only and echoes the connection ids swapped. |unused| is the
 * packet's first byte's random bits (RFC 9000 17.2.1). No other errors.
 */
ssize_t pos_quic_version_answer(uint8_t *buf, size_t cap, const uint8_t *data, size_t len,
                                uint8_t unused);

/*
 * pos_quic_tls_require_transport_params makes the handshake of the server
 * session |tls| (configured by ngtcp2_crypto_gnutls_configure_server_session,
 * its pointer the ngtcp2_crypto_conn_ref) fail as soon as a ClientHello
 * without QUIC v1 transport parameters (TLS extension 0x39) has been read,
 * before any key exists. ngtcp2 0.12 reads only that codepoint, and a server
 * connection that goes on without the client's parameters ends in an
 * assertion when it writes its first 1-RTT packet (a draft-29 stack sends
 * them as 0xffa5: one such Initial aborted the relay). Returns 0. No errors.
 */
int pos_quic_tls_require_transport_params(gnutls_session_t tls);

#endif
