/*
 * BLAKE2b-256, SHA-256 and AES-256-GMAC behind one small interface for the
 * transfer protocol (transfer_hash.h). libsodium's BLAKE2b state needs
 * 64-byte alignment, so a state lives in its own aligned allocation.
 */
#include "transfer_hash.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#define NONCE_PREFIX 0 /* GMAC nonces: the prefix of a resume, the whole file */
#define NONCE_FILE 1

struct pos_xfer_hash_impl {
    crypto_generichash_state b2; /* first: 64-byte aligned */
    gnutls_hash_hd_t sha;
    gnutls_hmac_hd_t mac;
};

unsigned pos_xfer_hash_fast(void)
{
    unsigned set = POS_XFER_HASH_BLAKE2B;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29))) /* SHA extensions */
        set |= POS_XFER_HASH_SHA256;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 25)) && (c & (1u << 1))) /* AES, PCLMUL */
        set |= POS_XFER_HASH_GMAC;
#elif defined(__aarch64__) && defined(__linux__) && defined(HWCAP_SHA2) && defined(HWCAP_PMULL)
    unsigned long cap = getauxval(AT_HWCAP);
    if (cap & HWCAP_SHA2)
        set |= POS_XFER_HASH_SHA256;
    if ((cap & HWCAP_AES) && (cap & HWCAP_PMULL))
        set |= POS_XFER_HASH_GMAC;
#endif
    if (set & POS_XFER_HASH_GMAC) { /* a GnuTLS built without it (FIPS mode, say): not offered */
        uint8_t key[POS_XFER_HASH_KEY_LEN] = {0};
        gnutls_hmac_hd_t mac;
        if (gnutls_hmac_init(&mac, GNUTLS_MAC_AES_GMAC_256, key, sizeof key) < 0)
            set &= ~(unsigned)POS_XFER_HASH_GMAC;
        else
            gnutls_hmac_deinit(mac, NULL);
    }
    return set;
}

int pos_xfer_hash_pick(unsigned theirs, unsigned ours)
{
    static const int order[] = {POS_XFER_HASH_GMAC, POS_XFER_HASH_SHA256, POS_XFER_HASH_BLAKE2B};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if ((theirs & ours & (unsigned)order[i]) != 0)
            return order[i];
    return 0;
}

int pos_xfer_hash_keyed(int alg)
{
    return alg == POS_XFER_HASH_GMAC;
}

static void impl_free(struct pos_xfer_hash_impl *impl)
{
    if (impl == NULL)
        return;
    if (impl->sha)
        gnutls_hash_deinit(impl->sha, NULL);
    if (impl->mac)
        gnutls_hmac_deinit(impl->mac, NULL);
    sodium_memzero(impl, sizeof *impl);
    free(impl);
}

/* A fresh state of |alg| (under |key| with |nonce| when keyed), or NULL. */
static struct pos_xfer_hash_impl *impl_new(int alg, const uint8_t *key, uint8_t nonce)
{
    size_t size = (sizeof(struct pos_xfer_hash_impl) + 63) / 64 * 64;
    struct pos_xfer_hash_impl *impl = aligned_alloc(64, size);
    if (impl == NULL)
        return NULL;
    memset(impl, 0, size);
    if (alg == POS_XFER_HASH_SHA256) {
        if (gnutls_hash_init(&impl->sha, GNUTLS_DIG_SHA256) < 0)
            impl->sha = NULL;
        if (impl->sha == NULL)
            goto fail;
    } else if (alg == POS_XFER_HASH_GMAC) {
        uint8_t iv[12] = {0};
        iv[11] = nonce;
        if (gnutls_hmac_init(&impl->mac, GNUTLS_MAC_AES_GMAC_256, key, POS_XFER_HASH_KEY_LEN) < 0)
            impl->mac = NULL;
        if (impl->mac == NULL)
            goto fail;
        gnutls_hmac_set_nonce(impl->mac, iv, sizeof iv);
    } else {
        crypto_generichash_init(&impl->b2, NULL, 0, 32);
    }
    return impl;
fail:
    impl_free(impl);
    return NULL;
}

static void impl_update(struct pos_xfer_hash_impl *impl, int alg, const uint8_t *p, size_t n)
{
    if (alg == POS_XFER_HASH_SHA256)
        gnutls_hash(impl->sha, p, n);
    else if (alg == POS_XFER_HASH_GMAC)
        gnutls_hmac(impl->mac, p, n);
    else
        crypto_generichash_update(&impl->b2, p, n);
}

/* The digest of |impl| into |out| (32 bytes, a MAC zero-padded); |impl| is freed. */
static void impl_final(struct pos_xfer_hash_impl *impl, int alg, uint8_t out[32])
{
    memset(out, 0, 32);
    if (alg == POS_XFER_HASH_SHA256) {
        gnutls_hash_deinit(impl->sha, out);
        impl->sha = NULL;
    } else if (alg == POS_XFER_HASH_GMAC) {
        gnutls_hmac_deinit(impl->mac, out); /* 16 bytes */
        impl->mac = NULL;
    } else {
        crypto_generichash_final(&impl->b2, out, 32);
    }
    impl_free(impl);
}

void pos_xfer_hash_free(struct pos_xfer_hash *h)
{
    impl_free(h->impl);
    sodium_memzero(h, sizeof *h);
}

int pos_xfer_hash_init(struct pos_xfer_hash *h, int alg, const uint8_t *key)
{
    pos_xfer_hash_free(h);
    if (alg != POS_XFER_HASH_BLAKE2B && alg != POS_XFER_HASH_SHA256 && alg != POS_XFER_HASH_GMAC)
        return -1;
    if (pos_xfer_hash_keyed(alg)) {
        if (key == NULL)
            return -1;
        memcpy(h->key, key, sizeof h->key);
    }
    h->alg = alg;
    h->impl = impl_new(alg, h->key, NONCE_FILE);
    return h->impl ? 0 : -1;
}

int pos_xfer_hash_restart(struct pos_xfer_hash *h)
{
    impl_free(h->impl);
    h->impl = impl_new(h->alg, h->key, NONCE_FILE);
    return h->impl ? 0 : -1;
}

void pos_xfer_hash_update(struct pos_xfer_hash *h, const uint8_t *p, size_t n)
{
    if (h->impl)
        impl_update(h->impl, h->alg, p, n);
}

int pos_xfer_hash_final(struct pos_xfer_hash *h, uint8_t out[32])
{
    if (h->impl == NULL)
        return -1;
    impl_final(h->impl, h->alg, out);
    h->impl = NULL;
    return 0;
}

int pos_xfer_hash_prefix(struct pos_xfer_hash *h, int fd, uint64_t len, uint8_t out[32])
{
    static _Thread_local uint8_t block[256 * 1024];
    /* Keyed: the prefix gets a state of its own (its own nonce). Unkeyed: a copy at the end. */
    struct pos_xfer_hash_impl *pre = pos_xfer_hash_keyed(h->alg)
                                         ? impl_new(h->alg, h->key, NONCE_PREFIX)
                                         : impl_new(h->alg, NULL, 0);
    if (pre == NULL || h->impl == NULL) {
        impl_free(pre);
        return -1;
    }
    int keyed = pos_xfer_hash_keyed(h->alg);
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < sizeof block ? (size_t)(len - off) : sizeof block;
        ssize_t n = pread(fd, block, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            impl_free(pre);
            return -1;
        }
        impl_update(h->impl, h->alg, block, (size_t)n);
        if (keyed)
            impl_update(pre, h->alg, block, (size_t)n);
        off += (uint64_t)n;
    }
    if (!keyed) { /* the same bytes, the same digest: finish a copy of the file's state */
        if (h->alg == POS_XFER_HASH_SHA256) {
            gnutls_hash_deinit(pre->sha, NULL);
            pre->sha = gnutls_hash_copy(h->impl->sha);
            if (pre->sha == NULL) {
                impl_free(pre);
                return -1;
            }
        } else {
            pre->b2 = h->impl->b2;
        }
    }
    impl_final(pre, h->alg, out);
    return 0;
}
