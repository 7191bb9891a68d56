/*
 * pos-cryptofloor: the crypto floor of one mutually authenticated TLS 1.3
 * handshake with Ed25519 identities, measured on this machine now, for
 * loadtest/bench-relay-control.sh's ratios (a machine shared with other work
 * runs at a different speed from one hour to the next, so a floor measured
 * elsewhere or earlier does not divide a figure of this run):
 *   full:    X25519 key generation + X25519 shared secret + Ed25519 sign
 *            (CertificateVerify) + Ed25519 verify (the peer's),
 *   resumed: X25519 key generation + shared secret (psk_dhe_ke),
 * each with nettle (GnuTLS's own crypto) and with libsodium. CPU time of
 * this thread, N operations of each (default 2000), in microseconds.
 * Prints one line per library: "nettle keygen K shared S sign G verify V
 * full F resumed R", then "libsodium ..." the same way.
 * usage: pos-cryptofloor [N]
 */
#include <nettle/curve25519.h>
#include <nettle/eddsa.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

struct floor {
    double keygen, shared, sign, verify;
};

static void print_floor(const char *name, const struct floor *f)
{
    printf("%s keygen %.1f shared %.1f sign %.1f verify %.1f full %.1f resumed %.1f\n", name,
           f->keygen, f->shared, f->sign, f->verify, f->keygen + f->shared + f->sign + f->verify,
           f->keygen + f->shared);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    uint8_t sk[32], peer[32], q[32], edpk[32], edsk[64], sig[64], msg[130];
    struct floor ne, so;
    double t;
    int ok = 0;

    if (n < 1 || n > 1000000 || sodium_init() < 0) {
        fprintf(stderr, "usage: pos-cryptofloor [N (1..1000000)]\n");
        return 2;
    }
    /* a TLS 1.3 CertificateVerify signs 64 spaces, a context string and a SHA-256 hash */
    randombytes_buf(msg, sizeof(msg));
    randombytes_buf(sk, sizeof(sk));
    crypto_scalarmult_base(peer, sk);
    randombytes_buf(sk, sizeof(sk));
    crypto_sign_keypair(edpk, edsk);

    t = now_us();
    for (long i = 0; i < n; i++)
        curve25519_mul_g(q, sk);
    ne.keygen = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        curve25519_mul(q, sk, peer);
    ne.shared = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        ed25519_sha512_sign(edpk, edsk, sizeof(msg), msg, sig);
    ne.sign = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        ok += ed25519_sha512_verify(edpk, sizeof(msg), msg, sig);
    ne.verify = (now_us() - t) / (double)n;

    t = now_us();
    for (long i = 0; i < n; i++)
        crypto_scalarmult_base(q, sk);
    so.keygen = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        ok += crypto_scalarmult(q, sk, peer) == 0;
    so.shared = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        crypto_sign_detached(sig, NULL, msg, sizeof(msg), edsk);
    so.sign = (now_us() - t) / (double)n;
    t = now_us();
    for (long i = 0; i < n; i++)
        ok += crypto_sign_verify_detached(sig, msg, sizeof(msg), edpk) == 0;
    so.verify = (now_us() - t) / (double)n;

    if (ok != 3 * n) {
        fprintf(stderr, "pos-cryptofloor: a signature or shared secret failed\n");
        return 1;
    }
    print_floor("nettle", &ne);
    print_floor("libsodium", &so);
    return 0;
}
