/*
 * quic_glue: what the test programs that make their own ngtcp2 client
 * (tests/relay/quic_probe.c, tests/relay/ctrl_client.c,
 * fuzz/quic/fuzz_quic.c) would otherwise each write again: the random
 * connection-id callback and a GnuTLS client session whose QUIC transport
 * parameters travel under a chosen TLS extension codepoint (v1's 0x39, or
 * draft-29's 0xffa5 that older stacks send). Test code only.
 */
#ifndef POS_TEST_QUIC_GLUE_H
#define POS_TEST_QUIC_GLUE_H

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>

/* ngtcp2 get_new_connection_id callback: random id and stateless reset token. */
int qglue_get_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *user_data);

/*
 * qglue_configure_client makes |tls| a QUIC client session carrying the
 * transport parameters under |tp_codepoint|: NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1
 * uses ngtcp2's GnuTLS glue as is; any other codepoint (the draft one) uses
 * the glue's callbacks with the extension registered under it. The session's
 * pointer (gnutls_session_set_ptr) must be an ngtcp2_crypto_conn_ref, as the
 * glue needs. Returns 0, or a GnuTLS error code.
 */
int qglue_configure_client(gnutls_session_t tls, unsigned tp_codepoint);

#endif
