/*
 * The two slowest public-key operations of a relay's handshake, done by
 * libsodium instead of nettle, GnuTLS's own crypto library: verifying the
 * client's Ed25519 CertificateVerify (about 41 us instead of 87 here) and
 * the X25519 shared secret (35 us instead of 50). GnuTLS calls nettle
 * through the dynamic linker, and a definition in the executable comes first
 * in the lookup, so these two functions take nettle's place for every caller
 * in the relay process (GnuTLS, libcurl's TLS), with nettle's contract:
 *
 * - ed25519_sha512_verify: 1 when |signature| is a valid Ed25519 signature
 *   of the |length| bytes at |msg| by |pub|, else 0. libsodium is the
 *   stricter of the two (it also refuses non-canonical encodings and
 *   small-order keys), so it accepts no signature that nettle would refuse.
 * - curve25519_mul: |q| = X25519(|n|, |p|) (RFC 7748: the scalar clamped,
 *   the top bit of the point ignored). Where libsodium refuses a small-order
 *   point the result is all zeros, as nettle's is (GnuTLS then refuses it).
 *
 * Only pos-relay links this file: a library must not replace its host's
 * symbols. Nettle's key generation (curve25519_mul_g, 25 us) is faster than
 * libsodium's and stays; the relay's own signature is made by libsodium
 * through a GnuTLS external key (common/tls.c).
 */
#include <nettle/curve25519.h>
#include <nettle/eddsa.h>
#include <sodium.h>
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
