/*
 * Version filter and Version Negotiation for our QUIC servers (see
 * quic_version.h).
 */
#include "quic_version.h"

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

ssize_t pos_quic_version_answer(uint8_t *buf, size_t cap, const uint8_t *data, size_t len,
                                uint8_t unused)
{
    static const uint32_t ours[] = {NGTCP2_PROTO_VER_V1};
    ngtcp2_version_cid vc;
    uint32_t version;
    int rv;

    if (len < 5 || !(data[0] & 0x80))
        return POS_QUIC_VERSION_OK;
    version = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 |
              (uint32_t)data[4];
    if (version == NGTCP2_PROTO_VER_V1)
        return POS_QUIC_VERSION_OK;
    if (version == 0 || len < POS_QUIC_VN_MIN_DATAGRAM)
        return POS_QUIC_VERSION_DROP;
    /* Either answer (0 for versions ngtcp2 implements, VERSION_NEGOTIATION for the rest)
     * means the connection ids were read; anything else is a malformed header. */
    rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, 0);
    if (rv != 0 && rv != NGTCP2_ERR_VERSION_NEGOTIATION)
        return POS_QUIC_VERSION_DROP;
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, cap, unused, vc.scid, vc.scidlen,
                                                          vc.dcid, vc.dcidlen, ours, 1);
    return n > 0 ? (ssize_t)n : POS_QUIC_VERSION_DROP;
}

/* A GnuTLS post-hook on the ClientHello: no QUIC v1 transport parameters, no handshake. */
static int check_transport_params(gnutls_session_t tls, unsigned htype, unsigned when,
                                  unsigned incoming, const gnutls_datum_t *msg)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(tls);
    (void)htype;
    (void)when;
    (void)msg;
    if (!incoming || !ref)
        return 0;
    if (!ngtcp2_conn_get_remote_transport_params(ref->get_conn(ref)))
        return GNUTLS_E_MISSING_EXTENSION;
    return 0;
}

int pos_quic_tls_require_transport_params(gnutls_session_t tls)
{
    gnutls_handshake_set_hook_function(tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
                                       check_transport_params);
    return 0;
}
