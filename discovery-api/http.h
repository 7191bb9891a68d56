/*
 * The HTTP side of pos-discovery (libmicrohttpd): routes, authentication,
 * bounded request bodies, refusal of ambiguous framing, and the daemon's
 * hygiene options (idle timeout, HTTPS with GnuTLS; the request deadline and
 * the connection limits are the guard's, guard.h).
 *
 *   GET  /api/p2p/relays        the snapshot (never waits on Redis)
 *   POST /api/p2p/relays        register or refresh one entry (Bearer secret)
 *   DELETE /api/p2p/relays/<id> remove an entry (Bearer secret)
 *   GET  /healthz, GET /metrics
 */
#ifndef POS_DISCOVERY_HTTP_H
#define POS_DISCOVERY_HTTP_H

#include <stddef.h>

struct pos_server;

/* Idle timeout (libmicrohttpd's: any byte resets it); see guard.h for the
 * request deadline and the connection limits. */
#define POS_HTTP_TIMEOUT_S 30
/*
 * What HTTPS offers (GnuTLS priority string): TLS 1.3 and 1.2 only (RFC
 * 8996), AEAD ciphers only (no CBC, no SHA-1 MACs or signatures), forward-secret key
 * exchange only.
 */
#define POS_HTTP_TLS_PRIORITIES                                                                    \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"            \
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-SIGN-RSA-SHA1:"            \
    "-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE"
/* A body up to this size is read and dropped so the client gets its 413. */
#define POS_HTTP_DISCARD_MAX (256 * 1024)

/*
 * pos_http_start starts the daemon on s->opt->listen (HTTPS when a
 * certificate is configured) and logs where it listens. Returns 0, or -1
 * with a sentence in |err| (files unreadable, address in use, ...).
 */
int pos_http_start(struct pos_server *s, char *err, size_t errlen);

/* pos_http_stop stops the daemon and waits for its threads. */
void pos_http_stop(struct pos_server *s);

#endif
