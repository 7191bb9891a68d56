/*
 * TLS 1.3 for the QUIC connections of relays and devices (GnuTLS). Each side
 * presents its Ed25519 identity as a raw public key (RFC 7250) when the peer
 * offers them, else as a self-signed X.509 certificate made from it (peers
 * built before raw keys); there is no CA. A connection is accepted only when
 * the peer's key is an Ed25519 key: the client pins the key it expects (the relay's
 * peer id from the relay list), the server accepts any key and records it (so
 * it learns the client's peer id from the handshake, never from a claim).
 *
 * This module sets up GnuTLS only; the QUIC module of each side then calls
 * ngtcp2_crypto_gnutls_configure_{server,client}_session on the session.
 * ngtcp2 owns the session's user pointer (gnutls_session_set_ptr) and expects
 * an ngtcp2_crypto_conn_ref there: that ref's user_data must point at the
 * connection's pos_tls_pin, which is where the verify function reads the
 * expected key and writes the peer's.
 */
#ifndef POS_TLS_H
#define POS_TLS_H

#include <gnutls/gnutls.h>
#include <stddef.h>
#include <stdint.h>

#include "identity.h"

/*
 * TLS 1.3 only, no middlebox compatibility mode (RFC 9001 section 8.4): the
 * reference string, plus X25519 as the preferred group (GnuTLS's default
 * order starts with P-256, which costs about twice as much per handshake),
 * P-256 kept as the fallback. Clients send one key share only.
 * TLS_AES_128_GCM_SHA256 first: GnuTLS's default order starts with
 * TLS_AES_256_GCM_SHA384, whose SHA-384 (transcript hashes, HKDF of every
 * QUIC key) has no SHA-NI and cost about 9% of the relay's CPU per
 * connection; AES-128 matches the 128-bit strength of X25519 and Ed25519.
 * %SERVER_PRECEDENCE makes a relay apply this order to clients built with
 * the older string too. Raw public keys first, X.509 for older peers.
 */
#define POS_TLS_PRIORITY                                                                           \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE:-GROUP-ALL:+GROUP-X25519:"           \
    "+GROUP-SECP256R1:-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:+AES-256-GCM:%SERVER_"           \
    "PRECEDENCE:"                                                                                  \
    "-CTYPE-ALL:+CTYPE-RAWPK:+CTYPE-X509"

#define POS_TLS_ERR_CRYPTO -1 /* GnuTLS refused a key, certificate or setting */
#define POS_TLS_ERR_NOMEM -2

/* Credentials made from one identity; shared by every session of a process. */
typedef struct pos_tls_creds pos_tls_creds;

/*
 * Pinning state of one connection. Set |expect_key| / |has_expected| before
 * the handshake to pin (client side); after it, |peer_key| holds the peer's
 * Ed25519 public key when |has_peer| is 1.
 */
typedef struct pos_tls_pin {
    uint8_t expect_key[32];
    uint8_t peer_key[32];
    uint8_t has_expected;
    uint8_t has_peer;
    uint8_t mismatch; /* set when a valid Ed25519 key was not the expected one */
} pos_tls_pin;

/*
 * pos_tls_creds_new makes a self-signed Ed25519 certificate (CN = peer id,
 * no expiry) and a raw public key from |id| and wraps them as GnuTLS
 * credentials that sign with libsodium (a copy of the secret key, wiped
 * when freed); |id| may be freed afterwards.
 * Returns 0, POS_TLS_ERR_CRYPTO or POS_TLS_ERR_NOMEM.
 */
int pos_tls_creds_new(pos_tls_creds **out, const pos_identity *id);

/* pos_tls_creds_del frees |c| (NULL is fine); no session may still use it. */
void pos_tls_creds_del(pos_tls_creds *c);

/*
 * pos_tls_session_new creates a GnuTLS session for QUIC (flags
 * GNUTLS_NO_END_OF_EARLY_DATA, GNUTLS_NO_TICKETS, GNUTLS_KEY_SHARE_TOP), server side when |server|
 * is 1, with the priority above, |creds|, mandatory ALPN |alpn| and the pinning verify function; a
 * server requires the client's certificate. The caller frees it with gnutls_deinit. Returns 0,
 * POS_TLS_ERR_CRYPTO or POS_TLS_ERR_NOMEM.
 */
int pos_tls_session_new(gnutls_session_t *out, pos_tls_creds *creds, int server, const char *alpn);

/* At most this many ALPN protocols in one list. */
#define POS_TLS_MAX_ALPNS 4

/*
 * pos_tls_session_new_alpns is pos_tls_session_new with a list of ALPN
 * protocols |alpns| (|n_alpns|, 1..POS_TLS_MAX_ALPNS, each 1..255 bytes; the
 * strings must outlive the handshake), one of which is mandatory. A client
 * offers them in this order; a server selects the first of its own list that
 * the client offers (server precedence), so a server with {"pos-relay/2",
 * "pos-relay/1"} selects pos-relay/2 from a client offering both in any
 * order and pos-relay/1 from a client offering only that. Returns 0,
 * POS_TLS_ERR_CRYPTO (also: an empty or too long list or name) or
 * POS_TLS_ERR_NOMEM.
 */
int pos_tls_session_new_alpns(gnutls_session_t *out, pos_tls_creds *creds, int server,
                              const char *const *alpns, size_t n_alpns);

/*
 * pos_tls_session_new_ex is pos_tls_session_new_alpns with TLS 1.3 session
 * resumption when |tickets| is not 0. A server then sends tickets valid for
 * |tickets| seconds (at most 604800), sealed with a key of |creds|: a secret
 * made once per process (in memory only, shared by every thread, so a
 * relay's workers accept each other's tickets) hashed with the identity's
 * public key (a ticket never resumes with credentials of another identity);
 * GnuTLS derives the sealing key from it anew every |tickets| seconds. A
 * client (|tickets| any non-zero value) accepts tickets: read them with
 * gnutls_session_get_data2 once the handshake is done, offer one with
 * gnutls_session_set_data before it. On a resumed handshake the verify
 * function is not called: call pos_tls_handshake_peer.
 */
int pos_tls_session_new_ex(gnutls_session_t *out, pos_tls_creds *creds, int server,
                           const char *const *alpns, size_t n_alpns, unsigned tickets);

/*
 * pos_tls_send_ticket: a server session made with tickets sends one session
 * ticket (call it once the handshake is complete; none goes out by itself).
 * Returns 0, or -1.
 */
int pos_tls_send_ticket(gnutls_session_t s);

/*
 * pos_tls_handshake_peer, once the handshake of |s| is complete: 0 when the
 * peer's key is in |pin->peer_key|. After a full handshake the verify function
 * put it there; after a resumed one (|*resumed| = 1) it is taken from the
 * certificate stored in the ticket and checked against |pin| the same way
 * (|pin->mismatch| set when it is not the expected key). -1: no peer key.
 */
int pos_tls_handshake_peer(gnutls_session_t s, pos_tls_pin *pin, int *resumed);

/*
 * pos_tls_alpn_selected: the ALPN protocol negotiated on |s| (once the
 * handshake has got that far: a server knows it after the ClientHello, a
 * client after the EncryptedExtensions). |*alpn| (|*len| bytes, not
 * NUL-terminated) stays valid while |s| lives: copy or interpret it
 * (pos_ctrl_version_of_alpn) before freeing the session. Returns 0, or -1
 * when none is negotiated (yet) or |s| is NULL.
 */
int pos_tls_alpn_selected(gnutls_session_t s, const uint8_t **alpn, size_t *len);

/*
 * pos_tls_check_peer_cert verifies a DER certificate the way the handshake
 * does: one X.509 certificate whose key is Ed25519 (the handshake's
 * CertificateVerify is what proves the peer holds that key); writes the key
 * into |key|. Returns 0, or -1.
 * Exposed for tests.
 */
int pos_tls_check_peer_cert(const uint8_t *der, size_t len, uint8_t key[32]);

/*
 * pos_tls_check_peer_rawpk: the key of a raw public key (RFC 7250), the DER
 * SubjectPublicKeyInfo |spki|, when it is exactly an Ed25519 one (44 bytes);
 * writes it into |key|. Returns 0, or -1. Exposed for tests.
 */
int pos_tls_check_peer_rawpk(const uint8_t *spki, size_t len, uint8_t key[32]);

/* pos_tls_cert_der: the DER of |c|'s certificate (valid while |c| lives). */
void pos_tls_cert_der(const pos_tls_creds *c, const uint8_t **der, size_t *len);

#endif
