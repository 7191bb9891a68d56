/*
 * ngtcp2 plumbing shared by the relay client, the peer sessions and the
 * relay's QUIC server (see quic_common.h): clock, trace, rand, settings,
 * the ngtcp2_crypto callback table, connection ids and crypto data.
 */
#include "quic_common.h"

#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

ngtcp2_tstamp pos_quic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

void pos_quic_trace(void *user_data, const char *fmt, ...)
{
    va_list ap;
    (void)user_data;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void pos_quic_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx)
{
    const uint8_t *creating = ctx ? ctx->native_handle : NULL;
    randombytes_buf(dest, destlen);
    if (creating && *creating && destlen == 1)
        dest[0] &= 0xfe;
}

void pos_quic_settings_init(ngtcp2_settings *settings, uint8_t *creating)
{
    ngtcp2_settings_default(settings);
    settings->initial_ts = pos_quic_now();
    settings->rand_ctx.native_handle = creating;
    settings->handshake_timeout = 10 * NGTCP2_SECONDS;
    if (getenv("POS_QUIC_TRACE"))
        settings->log_printf = pos_quic_trace;
}

void pos_quic_callbacks_init(ngtcp2_callbacks *cb, int server)
{
    memset(cb, 0, sizeof(*cb));
    if (server) {
        cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    } else {
        cb->client_initial = ngtcp2_crypto_client_initial_cb;
        cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    }
    cb->encrypt = ngtcp2_crypto_encrypt_cb;
    cb->decrypt = ngtcp2_crypto_decrypt_cb;
    cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb->update_key = ngtcp2_crypto_update_key_cb;
    cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb->rand = pos_quic_rand;
}

static const pos_quic_cid_ops *cid_ops_of(void *conn)
{
    return *(const pos_quic_cid_ops *const *)conn;
}

static int cb_get_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *user_data)
{
    const pos_quic_cid_ops *ops = cid_ops_of(user_data);
    (void)qc;
    if (cidlen != ops->cid_len || cidlen > NGTCP2_MAX_CIDLEN)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    randombytes_buf(cid->data, cidlen);
    cid->datalen = cidlen;
    if (ops->reset_token) {
        if (ops->reset_token(user_data, token, cid) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
    } else {
        randombytes_buf(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    }
    return ops->add(user_data, cid->data, cid->datalen) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int cb_remove_cid(ngtcp2_conn *qc, const ngtcp2_cid *cid, void *user_data)
{
    (void)qc;
    cid_ops_of(user_data)->remove(user_data, cid->data, cid->datalen);
    return 0;
}

static int cb_recv_crypto_data(ngtcp2_conn *qc, ngtcp2_crypto_level level, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data)
{
    if (!ngtcp2_conn_get_tls_native_handle(qc))
        return 0; /* post-handshake TLS messages: none that we need */
    return ngtcp2_crypto_recv_crypto_data_cb(qc, level, offset, data, datalen, user_data);
}

void pos_quic_callbacks_cids(ngtcp2_callbacks *cb)
{
    cb->get_new_connection_id = cb_get_new_cid;
    cb->remove_connection_id = cb_remove_cid;
    cb->recv_crypto_data = cb_recv_crypto_data;
}

void pos_quic_drop_cids(ngtcp2_conn *qc, void *conn)
{
    ngtcp2_cid few[16], *scids = few;
    const pos_quic_cid_ops *ops = cid_ops_of(conn);
    size_t n;
    if (!qc)
        return;
    n = ngtcp2_conn_get_num_scid(qc);
    if (n > sizeof(few) / sizeof(few[0]) && !(scids = calloc(n, sizeof(*scids))))
        return;
    ngtcp2_conn_get_scid(qc, scids);
    for (size_t i = 0; i < n; i++)
        ops->remove(conn, scids[i].data, scids[i].datalen);
    if (scids != few)
        free(scids);
}
