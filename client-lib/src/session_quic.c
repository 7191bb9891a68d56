/*
 * The ngtcp2 connection of one session and its TLS (see session_quic.h):
 * transport settings (flow-control windows, stream limits, idle timeout,
 * keep-alive, spare connection ids for a later migration) and the GnuTLS
 * session pinned to the peer's key.
 */
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "quic_common.h"
#include "quic_version.h"
#include "session_quic.h"

#define KEEPALIVE_NS (10 * NGTCP2_SECONDS)
#define IDLE_TIMEOUT_NS (30 * NGTCP2_SECONDS)

struct sess_quic {
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;  /* ref.user_data: the verify function finds it there */
    uint8_t creating; /* inside ngtcp2_conn_*_new (see pos_quic_rand) */
};

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct sess_quic *q =
        (struct sess_quic *)((char *)ref->user_data - offsetof(struct sess_quic, pin));
    return q->qc;
}

static void init_settings(ngtcp2_settings *settings, ngtcp2_transport_params *params,
                          struct sess_quic *q)
{
    pos_quic_settings_init(settings, &q->creating);
    /* relayed packets carry a 5-byte frame header and must still fit 1452 bytes */
    settings->max_tx_udp_payload_size = SESS_MAX_UDP_PAYLOAD;
    settings->max_window = 24 * 1024 * 1024;
    settings->max_stream_window = 16 * 1024 * 1024;
    ngtcp2_transport_params_default(params);
    params->initial_max_streams_bidi = 64;
    params->initial_max_streams_uni = 0;
    params->initial_max_stream_data_bidi_local = 1024 * 1024;
    params->initial_max_stream_data_bidi_remote = 1024 * 1024;
    params->initial_max_data = 4 * 1024 * 1024;
    params->max_idle_timeout = IDLE_TIMEOUT_NS;
    params->active_connection_id_limit = 8; /* spares: every move direct and back needs one */
}

static int attach_tls(struct sess_quic *q, pos_tls_creds *creds, int server)
{
    if (pos_tls_session_new(&q->tls, creds, server, POS_P2P_SESSION_ALPN) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    if ((server ? ngtcp2_crypto_gnutls_configure_server_session(q->tls)
                : ngtcp2_crypto_gnutls_configure_client_session(q->tls)) != 0)
        return POS_P2P_ERR_HANDSHAKE;
    if (server)
        pos_quic_tls_require_transport_params(q->tls);
    q->ref.get_conn = get_conn;
    q->ref.user_data = &q->pin;
    gnutls_session_set_ptr(q->tls, &q->ref);
    ngtcp2_conn_set_tls_native_handle(q->qc, q->tls);
    return 0;
}

static int make_conn(struct sess_quic *q, const struct sess_quic_args *a)
{
    const ngtcp2_pkt_hd *hd = a->hd;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    int rv;

    init_settings(&settings, &params, q);
    scid.datalen = EP_CID_LEN;
    randombytes_buf(scid.data, scid.datalen);
    q->creating = 1;
    if (hd) {
        params.original_dcid = hd->dcid;
        rv = ngtcp2_conn_server_new(&q->qc, &hd->scid, &scid, a->path, hd->version, a->cbs,
                                    &settings, &params, NULL, a->conn);
    } else {
        dcid.datalen = 16;
        randombytes_buf(dcid.data, dcid.datalen);
        rv = ngtcp2_conn_client_new(&q->qc, &dcid, &scid, a->path, NGTCP2_PROTO_VER_V1, a->cbs,
                                    &settings, &params, NULL, a->conn);
    }
    q->creating = 0;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if ((rv = attach_tls(q, ep_creds(a->conn->ep), hd != NULL)) != 0)
        return rv;
    if (ep_cid_add(a->conn, scid.data) != 0)
        return POS_P2P_ERR_NOMEM;
    ngtcp2_conn_set_keep_alive_timeout(q->qc, KEEPALIVE_NS);
    return 0;
}

int sess_quic_new(struct sess_quic **out, const struct sess_quic_args *a)
{
    struct sess_quic *q = calloc(1, sizeof(*q));
    int rv;
    if (!q)
        return POS_P2P_ERR_NOMEM;
    if (a->peer_key) {
        memcpy(q->pin.expect_key, a->peer_key, sizeof(q->pin.expect_key));
        q->pin.has_expected = 1;
    }
    rv = make_conn(q, a);
    *out = q; /* even on failure: the session frees it (its ids may be in the endpoint's map) */
    return rv;
}

void sess_quic_del(struct sess_quic *q)
{
    if (!q)
        return;
    if (q->qc)
        ngtcp2_conn_del(q->qc);
    if (q->tls)
        gnutls_deinit(q->tls);
    free(q);
}

ngtcp2_conn *sess_quic_conn(const struct sess_quic *q)
{
    return q->qc;
}

const pos_tls_pin *sess_quic_pin(const struct sess_quic *q)
{
    return &q->pin;
}

void sess_quic_drop_tls(struct sess_quic *q)
{
    ngtcp2_conn_set_tls_native_handle(q->qc, NULL);
    gnutls_deinit(q->tls);
    q->tls = NULL;
}

int sess_quic_has_tls(const struct sess_quic *q)
{
    return q->tls != NULL;
}
