/*
 * BLAKE2b-256 and SHA-256 behind one small interface for the transfer
 * protocol (transfer_hash.h). libsodium's BLAKE2b state needs 64-byte
 * alignment, so the state lives in its own aligned allocation.
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

struct pos_xfer_hash_impl {
    crypto_generichash_state b2; /* first: 64-byte aligned */
    gnutls_hash_hd_t sha;
};

unsigned pos_xfer_hash_fast(void)
{
    unsigned set = POS_XFER_HASH_BLAKE2B;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29))) /* SHA extensions */
        set |= POS_XFER_HASH_SHA256;
#elif defined(__aarch64__) && defined(__linux__) && defined(HWCAP_SHA2)
    if (getauxval(AT_HWCAP) & HWCAP_SHA2)
        set |= POS_XFER_HASH_SHA256;
#endif
    return set;
}

int pos_xfer_hash_pick(unsigned theirs, unsigned ours)
{
    if ((theirs & ours & POS_XFER_HASH_SHA256) != 0)
        return POS_XFER_HASH_SHA256;
    return (theirs & POS_XFER_HASH_BLAKE2B) ? POS_XFER_HASH_BLAKE2B : 0;
}

void pos_xfer_hash_free(struct pos_xfer_hash *h)
{
    if (h->impl) {
        if (h->impl->sha)
            gnutls_hash_deinit(h->impl->sha, NULL);
        sodium_memzero(h->impl, sizeof *h->impl);
        free(h->impl);
    }
    h->impl = NULL;
    h->alg = 0;
}

int pos_xfer_hash_init(struct pos_xfer_hash *h, int alg)
{
    pos_xfer_hash_free(h);
    if (alg != POS_XFER_HASH_BLAKE2B && alg != POS_XFER_HASH_SHA256)
        return -1;
    size_t size = (sizeof *h->impl + 63) / 64 * 64;
    h->impl = aligned_alloc(64, size);
    if (h->impl == NULL)
        return -1;
    memset(h->impl, 0, size);
    if (alg == POS_XFER_HASH_SHA256) {
        if (gnutls_hash_init(&h->impl->sha, GNUTLS_DIG_SHA256) < 0) {
            h->impl->sha = NULL;
            pos_xfer_hash_free(h);
            return -1;
        }
    } else {
        crypto_generichash_init(&h->impl->b2, NULL, 0, 32);
    }
    h->alg = alg;
    return 0;
}

void pos_xfer_hash_update(struct pos_xfer_hash *h, const uint8_t *p, size_t n)
{
    if (h->alg == POS_XFER_HASH_SHA256)
        gnutls_hash(h->impl->sha, p, n);
    else if (h->alg == POS_XFER_HASH_BLAKE2B)
        crypto_generichash_update(&h->impl->b2, p, n);
}

int pos_xfer_hash_peek(const struct pos_xfer_hash *h, uint8_t out[32])
{
    if (h->alg == POS_XFER_HASH_SHA256) {
        gnutls_hash_hd_t copy = gnutls_hash_copy(h->impl->sha);
        if (copy == NULL)
            return -1;
        gnutls_hash_deinit(copy, out);
        return 0;
    }
    if (h->alg != POS_XFER_HASH_BLAKE2B)
        return -1;
    crypto_generichash_state copy = h->impl->b2;
    crypto_generichash_final(&copy, out, 32);
    return 0;
}

int pos_xfer_hash_fd(struct pos_xfer_hash *h, int fd, uint64_t len)
{
    static _Thread_local uint8_t block[256 * 1024];
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < sizeof block ? (size_t)(len - off) : sizeof block;
        ssize_t n = pread(fd, block, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        pos_xfer_hash_update(h, block, (size_t)n);
        off += (uint64_t)n;
    }
    return 0;
}
