/*
 * The costliest pieces of a relay's handshake that libraries below GnuTLS and
 * ngtcp2 do slower than need be, replaced in this executable only. GnuTLS
 * calls nettle, and libngtcp2_crypto_gnutls calls its own HKDF functions,
 * through the dynamic linker, and a definition in the executable comes first
 * in the lookup, so these functions take the libraries' place for every
 * caller in the relay process (GnuTLS, libcurl's TLS, ngtcp2), each with the
 * contract of the one it replaces:
 *
 * - ed25519_sha512_verify (nettle): 1 when |signature| is a valid Ed25519
 *   signature of the |length| bytes at |msg| by |pub|, else 0. Verifying the
 *   client's CertificateVerify by libsodium: about 41 us instead of 87 here.
 *   libsodium is the stricter of the two (it also refuses non-canonical
 *   encodings and small-order keys), so it accepts no signature that nettle
 *   would refuse.
 * - curve25519_mul (nettle): |q| = X25519(|n|, |p|) (RFC 7748: the scalar
 *   clamped, the top bit of the point ignored), the ECDHE shared secret, by
 *   libsodium (35 us instead of 50). Where libsodium refuses a small-order
 *   point the result is all zeros, as nettle's is (GnuTLS then refuses it).
 * - curve25519_mul_g (nettle): |q| = X25519(|n|, 9), the relay's ephemeral
 *   key share of every handshake, full or resumed. Nettle (and libsodium's
 *   X25519 on CPUs with AVX) run the whole Montgomery ladder; here the
 *   clamped scalar multiplies the Ed25519 base point with libsodium's
 *   fixed-base tables (constant time, as the ladder), and the Edwards point's
 *   y becomes the Montgomery u = (1 + y) / (1 - y) mod 2^255 - 19 with GMP:
 *   that step sees only the public key. About 0.6x nettle's time; the same
 *   bytes (tests/unit/test_tls.c compares them).
 * - ngtcp2_crypto_hkdf_extract / ngtcp2_crypto_hkdf_expand (ngtcp2's GnuTLS
 *   backend): HKDF (RFC 5869) with the hash of |md|. The backend calls
 *   gnutls_hkdf_*, which sets up and zeroises a MAC context sized for every
 *   MAC GnuTLS knows (about 9 KB) per call, 26 calls per connection (QUIC
 *   packet keys, IVs, header keys, the next key phase). For SHA-256 and
 *   SHA-384 (every TLS 1.3 suite ngtcp2 negotiates) nettle's HMAC does it on
 *   a 0.3 KB stack context, wiped after use; any other hash goes to GnuTLS
 *   as before.
 *
 * Only pos-relay links this file: a library must not replace its host's
 * symbols. The relay's own signature is made by libsodium through a GnuTLS
 * external key (common/tls.c).
 */
#include <gmp.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nettle/curve25519.h>
#include <nettle/eddsa.h>
#include <nettle/hkdf.h>
#include <nettle/hmac.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <stdint.h>
#include <string.h>

int ed25519_sha512_verify(const uint8_t *pub, size_t length, const uint8_t *msg,
                          const uint8_t *signature)
{
    return crypto_sign_verify_detached(signature, msg, length, pub) == 0;
}

void curve25519_mul(uint8_t *q, const uint8_t *n, const uint8_t *p)
{
    if (crypto_scalarmult_curve25519(q, n, p) != 0)
        memset(q, 0, CURVE25519_SIZE);
}

/* 2^255 - 19, least significant limb first (read-only: shared by every thread) */
_Static_assert(GMP_NUMB_BITS == 64, "64-bit GMP limbs expected");
static const mp_limb_t p25519[4] = {0xffffffffffffffedull, 0xffffffffffffffffull,
                                    0xffffffffffffffffull, 0x7fffffffffffffffull};

void curve25519_mul_g(uint8_t *q, const uint8_t *n)
{
    uint8_t t[32], ed[32];
    mpz_t y, num, den;
    mpz_t p;
    int ok;

    memcpy(t, n, sizeof(t));
    t[0] &= 248; /* RFC 7748's clamping, as nettle's curve25519_mul_g does */
    t[31] = (uint8_t)((t[31] & 63) | 64);
    ok = crypto_scalarmult_ed25519_base_noclamp(ed, t) == 0;
    sodium_memzero(t, sizeof(t));
    memset(q, 0, CURVE25519_SIZE);
    if (!ok) /* the identity: X25519 gives u = 0 for it too (not reached with a clamped scalar) */
        return;
    /* From here on only the public point: variable time is fine. */
    ed[31] &= 127; /* the sign of x does not change u */
    mpz_roinit_n(p, p25519, 4);
    mpz_inits(y, num, den, NULL);
    mpz_import(y, sizeof(ed), -1, 1, 0, 0, ed);
    mpz_add_ui(num, y, 1);
    mpz_ui_sub(den, 1, y);
    mpz_mod(den, den, p);
    if (mpz_invert(den, den, p)) {
        size_t len = 0;
        mpz_mul(num, num, den);
        mpz_mod(num, num, p);
        mpz_export(q, &len, -1, 1, 0, 0, num); /* little-endian, short if leading zeros */
    }
    mpz_clears(y, num, den, NULL);
}

/*
 * hkdf_hash: the hash of |md| (ngtcp2's GnuTLS backend keeps the
 * gnutls_digest_algorithm_t there) as nettle's HMAC, or 0 for GnuTLS.
 */
static int hkdf_hash(const ngtcp2_crypto_md *md)
{
    gnutls_digest_algorithm_t h = (gnutls_digest_algorithm_t)(intptr_t)md->native_handle;
    return h == GNUTLS_DIG_SHA256 ? 256 : h == GNUTLS_DIG_SHA384 ? 384 : 0;
}

int ngtcp2_crypto_hkdf_extract(uint8_t *dest, const ngtcp2_crypto_md *md, const uint8_t *secret,
                               size_t secretlen, const uint8_t *salt, size_t saltlen)
{
    int hash = hkdf_hash(md);
    if (hash == 256) {
        struct hmac_sha256_ctx ctx;
        hmac_sha256_set_key(&ctx, saltlen, salt);
        hkdf_extract(&ctx, (nettle_hash_update_func *)hmac_sha256_update,
                     (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, secretlen,
                     secret, dest);
        sodium_memzero(&ctx, sizeof(ctx));
        return 0;
    }
    if (hash == 384) {
        struct hmac_sha384_ctx ctx;
        hmac_sha384_set_key(&ctx, saltlen, salt);
        hkdf_extract(&ctx, (nettle_hash_update_func *)hmac_sha384_update,
                     (nettle_hash_digest_func *)hmac_sha384_digest, SHA384_DIGEST_SIZE, secretlen,
                     secret, dest);
        sodium_memzero(&ctx, sizeof(ctx));
        return 0;
    }
    gnutls_datum_t s = {(unsigned char *)secret, (unsigned)secretlen};
    gnutls_datum_t a = {(unsigned char *)salt, (unsigned)saltlen};
    return gnutls_hkdf_extract((gnutls_mac_algorithm_t)(intptr_t)md->native_handle, &s, &a, dest) ==
                   0
               ? 0
               : -1;
}

int ngtcp2_crypto_hkdf_expand(uint8_t *dest, size_t destlen, const ngtcp2_crypto_md *md,
                              const uint8_t *secret, size_t secretlen, const uint8_t *info,
                              size_t infolen)
{
    int hash = hkdf_hash(md);
    if (hash == 256) {
        struct hmac_sha256_ctx ctx;
        if (destlen > 255 * SHA256_DIGEST_SIZE) /* RFC 5869's limit, as GnuTLS checks it */
            return -1;
        hmac_sha256_set_key(&ctx, secretlen, secret);
        hkdf_expand(&ctx, (nettle_hash_update_func *)hmac_sha256_update,
                    (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, infolen,
                    info, destlen, dest);
        sodium_memzero(&ctx, sizeof(ctx));
        return 0;
    }
    if (hash == 384) {
        struct hmac_sha384_ctx ctx;
        if (destlen > 255 * SHA384_DIGEST_SIZE)
            return -1;
        hmac_sha384_set_key(&ctx, secretlen, secret);
        hkdf_expand(&ctx, (nettle_hash_update_func *)hmac_sha384_update,
                    (nettle_hash_digest_func *)hmac_sha384_digest, SHA384_DIGEST_SIZE, infolen,
                    info, destlen, dest);
        sodium_memzero(&ctx, sizeof(ctx));
        return 0;
    }
    gnutls_datum_t s = {(unsigned char *)secret, (unsigned)secretlen};
    gnutls_datum_t i = {(unsigned char *)info, (unsigned)infolen};
    return gnutls_hkdf_expand((gnutls_mac_algorithm_t)(intptr_t)md->native_handle, &s, &i, dest,
                              destlen) == 0
               ? 0
               : -1;
}
