/*
 * Session tickets of relays, kept per endpoint (in memory only) so that a
 * returning relay connection resumes TLS 1.3 instead of a full handshake.
 * A ticket is stored under the relay key the connection pinned and offered
 * only to a connection pinning that same key: a relay with another key is
 * never offered an old ticket (full handshake and pin check), and whatever
 * a resumed handshake says, the client checks the relay's key stored in the
 * session against its pin (pos_tls_handshake_peer). The endpoint has one
 * identity, so a ticket is only ever offered for the identity it was issued
 * to. A leaf module: it calls GnuTLS only.
 */
#ifndef POS_TICKETS_H
#define POS_TICKETS_H

#include <gnutls/gnutls.h>
#include <stdint.h>

struct relay_tickets;

/* relay_tickets_new: an empty table (resumption enabled), or NULL when out of memory. */
struct relay_tickets *relay_tickets_new(void);

/* relay_tickets_free wipes every ticket and frees |ts| (NULL is fine). */
void relay_tickets_free(struct relay_tickets *ts);

/* relay_tickets_enable: |on| 0 forgets every ticket and stores or offers none from now on. */
void relay_tickets_enable(struct relay_tickets *ts, int on);

/* relay_tickets_enabled: 1 when |ts| is not NULL and enabled. */
int relay_tickets_enabled(const struct relay_tickets *ts);

/*
 * relay_tickets_offer sets the ticket stored for relay |key| on the client
 * session |s| before its handshake. Returns 0, or -1 when there is none.
 */
int relay_tickets_offer(struct relay_tickets *ts, const uint8_t key[32], gnutls_session_t s);

/*
 * relay_tickets_keep stores the latest ticket the relay |key| sent on |s|
 * (whose handshake checked that key), replacing an older one of that relay.
 * Returns 0, or -1 when |s| has received none yet.
 */
int relay_tickets_keep(struct relay_tickets *ts, const uint8_t key[32], gnutls_session_t s);

#endif
