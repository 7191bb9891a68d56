/*
 * ngtcp2 plumbing shared by the relay client, the peer sessions and the
 * relay's QUIC server (see quic_common.h): clock, trace, rand, settings and
 * the ngtcp2_crypto callback table.
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
