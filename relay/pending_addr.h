/*
 * Handshakes in progress per source address, so that a few addresses cannot
 * hold every pending slot of the relay (quic_server.c). Only addresses a
 * Retry proved are counted: an unproven source address may be forged, and
 * counting it would let a forger lock its victim out. An address is the
 * IPv4 address, or the /64 of an IPv6 one (what one customer usually holds,
 * as for the connection rate limit).
 *
 * The table keeps one small entry per address with at least one handshake
 * counted, so it is bounded by the relay's pending cap. Keyed with a random
 * SipHash key: an attacker cannot pick addresses that share a bucket.
 */
#ifndef POS_RELAY_PENDING_ADDR_H
#define POS_RELAY_PENDING_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct relay_pending_addrs relay_pending_addrs;

/* relay_pending_addrs_new: a table allowing |per_addr| (>= 1) handshakes per address; NULL when
 * out of memory. */
relay_pending_addrs *relay_pending_addrs_new(unsigned per_addr);

/*
 * relay_pending_addrs_take counts one more handshake from |addr|. Returns 0,
 * or -1 when |addr| already has |per_addr| (or memory ran out, or |addr| is
 * neither IPv4 nor IPv6): the handshake must not start.
 */
int relay_pending_addrs_take(relay_pending_addrs *t, const struct sockaddr *addr);

/* relay_pending_addrs_give: one handshake counted by a successful take of |addr| ended. */
void relay_pending_addrs_give(relay_pending_addrs *t, const struct sockaddr *addr);

/* relay_pending_addrs_count: handshakes counted for |addr| now (for tests and metrics). */
unsigned relay_pending_addrs_count(const relay_pending_addrs *t, const struct sockaddr *addr);

/* relay_pending_addrs_del frees |t| (NULL is fine). */
void relay_pending_addrs_del(relay_pending_addrs *t);

#endif
