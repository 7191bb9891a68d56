#include "quic_glue.h"

#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>

int qglue_get_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *user_data)
{
    (void)qc;
    (void)user_data;
    randombytes_buf(cid->data, cidlen);
    cid->datalen = cidlen;
    randombytes_buf(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
}

/* The three callbacks of ngtcp2's GnuTLS glue, for a session whose transport
   parameters go under another extension codepoint than the glue registers. */
static int secret_func(gnutls_session_t session, gnutls_record_encryption_level_t glevel,
                       const void *rx, const void *tx, size_t len)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    ngtcp2_conn *qc = ref->get_conn(ref);
    ngtcp2_crypto_level level = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel);
    if (rx && ngtcp2_crypto_derive_and_install_rx_key(qc, NULL, NULL, NULL, level, rx, len) != 0)
        return -1;
    if (tx && ngtcp2_crypto_derive_and_install_tx_key(qc, NULL, NULL, NULL, level, tx, len) != 0)
        return -1;
    return 0;
}

static int read_func(gnutls_session_t session, gnutls_record_encryption_level_t glevel,
                     gnutls_handshake_description_t htype, const void *data, size_t len)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    if (htype == GNUTLS_HANDSHAKE_CHANGE_CIPHER_SPEC)
        return 0;
    return ngtcp2_conn_submit_crypto_data(
               ref->get_conn(ref), ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel),
               data, len) == 0
               ? 0
               : -1;
}

static int tp_recv(gnutls_session_t session, const uint8_t *data, size_t len)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    return ngtcp2_conn_decode_remote_transport_params(ref->get_conn(ref), data, len) == 0 ? 0 : -1;
}

static int tp_send(gnutls_session_t session, gnutls_buffer_t ext)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    uint8_t buf[256];
    ngtcp2_ssize n =
        ngtcp2_conn_encode_local_transport_params(ref->get_conn(ref), buf, sizeof(buf));
    if (n < 0)
        return -1;
    return gnutls_buffer_append_data(ext, buf, (size_t)n) == 0 ? 0 : -1;
}

int qglue_configure_client(gnutls_session_t tls, unsigned tp_codepoint)
{
    if (tp_codepoint == NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1)
        return ngtcp2_crypto_gnutls_configure_client_session(tls);
    gnutls_handshake_set_secret_function(tls, secret_func);
    gnutls_handshake_set_read_function(tls, read_func);
    return gnutls_session_ext_register(
        tls, "QUIC Transport Parameters", tp_codepoint, GNUTLS_EXT_TLS, tp_recv, tp_send, NULL,
        NULL, NULL, GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO | GNUTLS_EXT_FLAG_EE);
}
