/*
 * TLS of relays and devices (common/tls.c) with real GnuTLS sessions talking
 * over in-memory buffers (no QUIC: the TLS part alone): raw public keys
 * between current builds and X.509 with a peer that offers only that, and
 * TLS 1.3 resumption: a returning client resumes, the server takes the
 * client's identity from the ticket (never from whoever presents it), the
 * client checks the server's pinned key on a resumed handshake too, and a
 * server with another identity never resumes a ticket it did not issue.
 */
#include <dlfcn.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <string.h>

#ifdef POS_TEST_TLS_FAST
#include <gnutls/crypto.h>
#include <nettle/curve25519.h>
#include <nettle/eddsa.h>
#endif

#include "check.h"
#include "ctrl.h"
#include "identity.h"
#include "park.h"
#include "tls.h"
#include "tls_pipe.h"

/* handshake runs both sides until both are done or one fails. Returns 0 when both are done. */
static int handshake(struct pos_tls_side *c, struct pos_tls_side *s)
{
    for (int i = 0; i < 20 && !(c->done && s->done); i++) {
        struct pos_tls_side *both[2] = {c, s};
        for (int k = 0; k < 2; k++) {
            if (both[k]->done)
                continue;
            int rv = gnutls_handshake(both[k]->s);
            if (rv == 0)
                both[k]->done = 1;
            else if (gnutls_error_is_fatal(rv))
                return -1;
        }
    }
    if (!(c->done && s->done))
        return -1;
    /* the server sends a ticket, as the relay does; the client reads it */
    if (pos_tls_send_ticket(s->s) != 0)
        return -1;
    uint8_t b[64];
    int rv = (int)gnutls_record_recv(c->s, b, sizeof(b));
    return rv == GNUTLS_E_AGAIN ? 0 : -1;
}

static void end(struct pos_tls_side *c, struct pos_tls_side *s)
{
    gnutls_deinit(c->s);
    gnutls_deinit(s->s);
}

struct world {
    pos_identity relay_id, relay2_id, alice_id, bob_id;
    pos_tls_creds *relay, *relay2, *alice, *bob;
};

/*
 * check_park_key: both ends of a handshake export the same park key
 * (common/park.h), not zero, and not the key of the connection before.
 */
static void check_park_key(gnutls_session_t client, gnutls_session_t server)
{
    static uint8_t last[POS_PARK_KEY_LEN];
    uint8_t kc[POS_PARK_KEY_LEN], ks[POS_PARK_KEY_LEN], zero[POS_PARK_KEY_LEN] = {0};

    CHECK(pos_park_derive_key(client, kc) == 0 && pos_park_derive_key(server, ks) == 0);
    CHECK(memcmp(kc, ks, sizeof(kc)) == 0);
    CHECK(memcmp(kc, zero, sizeof(kc)) != 0 && memcmp(kc, last, sizeof(kc)) != 0);
    memcpy(last, kc, sizeof(last));
    CHECK(pos_park_derive_key(NULL, kc) == POS_PARK_ERR_TLS && memcmp(kc, zero, sizeof(kc)) == 0);
}

/*
 * connect_once: |client| (pinning |pin_key|, offering |ticket| when not
 * NULL) to |server|; the client's new ticket goes to |ticket_out|. Returns 0
 * when the handshake succeeded on both sides, with the outcome in the rest.
 */
static int connect_once(pos_tls_creds *client, pos_tls_creds *server, const uint8_t *pin_key,
                        const gnutls_datum_t *ticket, gnutls_datum_t *ticket_out,
                        uint8_t seen_by_server[32], int *resumed_c, int *resumed_s, int *mismatch)
{
    static struct pos_tls_pipe a, b;
    struct pos_tls_side c, s;
    int rv = -1;

    a.len = b.len = 0;
    *resumed_c = *resumed_s = *mismatch = 0;
    if (pos_tls_side_setup(&c, client, 0, 1, &a, &b) != 0 ||
        pos_tls_side_setup(&s, server, 1, 3600, &b, &a) != 0)
        return -1;
    memcpy(c.pin.expect_key, pin_key, 32);
    c.pin.has_expected = 1;
    if (ticket)
        gnutls_session_set_data(c.s, ticket->data, ticket->size);
    if (handshake(&c, &s) == 0 && pos_tls_handshake_peer(s.s, &s.pin, resumed_s) == 0 &&
        pos_tls_handshake_peer(c.s, &c.pin, resumed_c) == 0) {
        memcpy(seen_by_server, s.pin.peer_key, 32);
        CHECK(memcmp(c.pin.peer_key, pin_key, 32) == 0);
        check_park_key(c.s, s.s);
        /* raw public keys both ways between two current builds */
        CHECK(gnutls_certificate_type_get2(s.s, GNUTLS_CTYPE_PEERS) == GNUTLS_CRT_RAWPK);
        CHECK(gnutls_certificate_type_get2(c.s, GNUTLS_CTYPE_PEERS) == GNUTLS_CRT_RAWPK);
        if (ticket_out && (gnutls_session_get_flags(c.s) & GNUTLS_SFLAGS_SESSION_TICKET))
            gnutls_session_get_data2(c.s, ticket_out);
        rv = 0;
    }
    *mismatch = c.pin.mismatch;
    end(&c, &s);
    return rv;
}

static void test_resumption(struct world *w)
{
    gnutls_datum_t t_alice = {NULL, 0}, t_next = {NULL, 0}, t_bob = {NULL, 0};
    uint8_t seen[32];
    int rc, rs, mm;

    /* a full handshake: the server learns alice's key, alice gets a ticket */
    CHECK(connect_once(w->alice, w->relay, w->relay_id.public_key, NULL, &t_alice, seen, &rc, &rs,
                       &mm) == 0);
    CHECK(rc == 0 && rs == 0);
    CHECK(memcmp(seen, w->alice_id.public_key, 32) == 0);
    CHECK(t_alice.data != NULL);
    if (!t_alice.data)
        return;

    /* alice returns: resumed on both sides, still alice, pin still checked */
    memset(seen, 0, sizeof(seen));
    CHECK(connect_once(w->alice, w->relay, w->relay_id.public_key, &t_alice, &t_next, seen, &rc,
                       &rs, &mm) == 0);
    CHECK(rc == 1 && rs == 1);
    CHECK(memcmp(seen, w->alice_id.public_key, 32) == 0);
    CHECK(t_next.data != NULL); /* a resumed handshake brings a fresh ticket */

    /*
     * bob presents alice's ticket: whatever bob's own certificate, the server
     * sees the identity the ticket was issued to, never bob's. (Holding
     * alice's ticket takes alice's secrets: the library keeps tickets per
     * endpoint, so bob's never offers alice's; see tickets.h.)
     */
    memset(seen, 0, sizeof(seen));
    rs = 0;
    if (connect_once(w->bob, w->relay, w->relay_id.public_key, &t_alice, NULL, seen, &rc, &rs,
                     &mm) == 0) {
        CHECK(memcmp(seen, w->bob_id.public_key, 32) != 0);
        CHECK(rs == 0 || memcmp(seen, w->alice_id.public_key, 32) == 0);
    }
    /* bob with his own ticket is bob */
    CHECK(connect_once(w->bob, w->relay, w->relay_id.public_key, NULL, &t_bob, seen, &rc, &rs,
                       &mm) == 0);
    CHECK(memcmp(seen, w->bob_id.public_key, 32) == 0);
    if (t_bob.data) {
        CHECK(connect_once(w->bob, w->relay, w->relay_id.public_key, &t_bob, NULL, seen, &rc, &rs,
                           &mm) == 0);
        CHECK(rs == 1 && memcmp(seen, w->bob_id.public_key, 32) == 0);
    }

    /*
     * a relay with another key (in this very process, so with the same
     * process secret) never resumes alice's old ticket: a full handshake, and
     * alice's pin decides (pinning relay2: accepted, fully)
     */
    CHECK(connect_once(w->alice, w->relay2, w->relay2_id.public_key, &t_alice, NULL, seen, &rc, &rs,
                       &mm) == 0);
    CHECK(rc == 0 && rs == 0);
    CHECK(memcmp(seen, w->alice_id.public_key, 32) == 0);
    /* ... and pinning the old relay's key there fails on the pin */
    CHECK(connect_once(w->alice, w->relay2, w->relay_id.public_key, &t_alice, NULL, seen, &rc, &rs,
                       &mm) != 0);
    CHECK(mm == 1);

    /*
     * the client checks the pin on a resumed handshake too: alice resumes
     * with the relay but pins another key: refused, as a mismatch
     */
    CHECK(connect_once(w->alice, w->relay, w->relay2_id.public_key, &t_next, NULL, seen, &rc, &rs,
                       &mm) != 0);
    CHECK(mm == 1);
    gnutls_free(t_alice.data);
    gnutls_free(t_next.data);
    gnutls_free(t_bob.data);
}

/* A peer built before raw public keys (X.509 only) still gets in, with a certificate both ways. */
static void test_x509_peer(struct world *w)
{
    static struct pos_tls_pipe a, b;
    struct pos_tls_side c, s;
    int resumed;

    a.len = b.len = 0;
    if (pos_tls_side_setup(&c, w->alice, 0, 0, &a, &b) != 0 ||
        pos_tls_side_setup(&s, w->relay, 1, 3600, &b, &a) != 0) {
        CHECK(0);
        return;
    }
    CHECK(gnutls_priority_set_direct(c.s,
                                     "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE:"
                                     "-CTYPE-ALL:+CTYPE-X509",
                                     NULL) == 0);
    memcpy(c.pin.expect_key, w->relay_id.public_key, 32);
    c.pin.has_expected = 1;
    CHECK(handshake(&c, &s) == 0);
    CHECK(pos_tls_handshake_peer(s.s, &s.pin, &resumed) == 0 && resumed == 0);
    CHECK(memcmp(s.pin.peer_key, w->alice_id.public_key, 32) == 0);
    CHECK(pos_tls_handshake_peer(c.s, &c.pin, &resumed) == 0);
    CHECK(gnutls_certificate_type_get2(s.s, GNUTLS_CTYPE_PEERS) == GNUTLS_CRT_X509);
    CHECK(gnutls_certificate_type_get2(c.s, GNUTLS_CTYPE_PEERS) == GNUTLS_CRT_X509);
    end(&c, &s);
}

/*
 * A client whose signature does not match the key it presents (its
 * CertificateVerify made with another secret key) is refused: the
 * verification is really done (nettle's, or libsodium's through
 * relay/tls_fast.c in test_tls_fast).
 */
static void test_bad_signature(struct world *w)
{
    static struct pos_tls_pipe a, b;
    pos_identity liar = w->alice_id;
    pos_tls_creds *creds = NULL;
    struct pos_tls_side c, s;

    memcpy(liar.secret_key, w->bob_id.secret_key, sizeof(liar.secret_key)); /* signs as bob */
    if (pos_tls_creds_new(&creds, &liar) != 0) {
        CHECK(0);
        return;
    }
    a.len = b.len = 0;
    if (pos_tls_side_setup(&c, creds, 0, 0, &a, &b) == 0 &&
        pos_tls_side_setup(&s, w->relay, 1, 3600, &b, &a) == 0) {
        memcpy(c.pin.expect_key, w->relay_id.public_key, 32);
        c.pin.has_expected = 1;
        CHECK(handshake(&c, &s) != 0);
        CHECK(!s.done);
        end(&c, &s);
    } else {
        CHECK(0);
    }
    pos_tls_creds_del(creds);
    sodium_memzero(&liar, sizeof(liar));
}

static void test_rawpk_parse(const struct world *w)
{
    static const uint8_t prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                       0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    uint8_t spki[45], key[32];
    memcpy(spki, prefix, 12);
    memcpy(spki + 12, w->alice_id.public_key, 32);
    CHECK(pos_tls_check_peer_rawpk(spki, 44, key) == 0);
    CHECK(memcmp(key, w->alice_id.public_key, 32) == 0);
    CHECK(pos_tls_check_peer_rawpk(spki, 43, key) != 0);
    CHECK(pos_tls_check_peer_rawpk(spki, 45, key) != 0);
    for (int i = 0; i < 12; i++) {
        spki[i] ^= 0x01;
        CHECK(pos_tls_check_peer_rawpk(spki, 44, key) != 0);
        spki[i] ^= 0x01;
    }
}

#ifdef POS_TEST_TLS_FAST
/*
 * relay/tls_fast.c's X25519 key generation gives nettle's bytes (nettle's own
 * function, found past ours with RTLD_NEXT), and its HKDF gives GnuTLS's,
 * for SHA-256, SHA-384 and a hash it hands to GnuTLS (SHA-512).
 */
static void test_fast_replacements(void)
{
    void *sym = dlsym(RTLD_NEXT, "nettle_curve25519_mul_g");
    void (*nettle_mul_g)(uint8_t *, const uint8_t *) = NULL;
    uint8_t n[32], a[32], b[32];
    int same = 1;

    memcpy(&nettle_mul_g, &sym, sizeof(sym));
    CHECK(nettle_mul_g != NULL && nettle_mul_g != curve25519_mul_g);
    if (!nettle_mul_g)
        return;
    for (int i = 0; i < 2000; i++) {
        if (i == 0)
            memset(n, 0, sizeof(n)); /* clamping still gives a valid scalar */
        else if (i == 1)
            memset(n, 0xff, sizeof(n));
        else
            randombytes_buf(n, sizeof(n));
        nettle_mul_g(a, n);
        curve25519_mul_g(b, n);
        same &= memcmp(a, b, 32) == 0;
    }
    CHECK(same);

    /* RFC 5869, test case 1 (SHA-256) */
    static const uint8_t okm1[42] = {
        0x3c, 0xb2, 0x5f, 0x25, 0xfa, 0xac, 0xd5, 0x7a, 0x90, 0x43, 0x4f, 0x64, 0xd0, 0x36,
        0x2f, 0x2a, 0x2d, 0x2d, 0x0a, 0x90, 0xcf, 0x1a, 0x5a, 0x4c, 0x5d, 0xb0, 0x2d, 0x56,
        0xec, 0xc4, 0xc5, 0xbf, 0x34, 0x00, 0x72, 0x08, 0xd5, 0xb8, 0x87, 0x18, 0x58, 0x65};
    uint8_t ikm[22], salt[13], info[10], prk[64], okm[600], ref[600];
    ngtcp2_crypto_md md;
    memset(ikm, 0x0b, sizeof(ikm));
    for (int i = 0; i < 13; i++)
        salt[i] = (uint8_t)i;
    for (int i = 0; i < 10; i++)
        info[i] = (uint8_t)(0xf0 + i);
    md.native_handle = (void *)(intptr_t)GNUTLS_DIG_SHA256;
    CHECK(ngtcp2_crypto_hkdf_extract(prk, &md, ikm, sizeof(ikm), salt, sizeof(salt)) == 0);
    CHECK(ngtcp2_crypto_hkdf_expand(okm, 42, &md, prk, 32, info, sizeof(info)) == 0);
    CHECK(memcmp(okm, okm1, 42) == 0);
    CHECK(ngtcp2_crypto_hkdf_expand(okm, 255 * 32 + 1, &md, prk, 32, info, 10) != 0);

    static const gnutls_digest_algorithm_t hashes[] = {GNUTLS_DIG_SHA256, GNUTLS_DIG_SHA384,
                                                       GNUTLS_DIG_SHA512};
    for (size_t h = 0; h < sizeof(hashes) / sizeof(hashes[0]); h++) {
        uint8_t secret[48], rprk[64];
        size_t hlen = gnutls_hash_get_len(hashes[h]);
        gnutls_datum_t k = {secret, sizeof(secret)}, sa = {salt, sizeof(salt)};
        gnutls_datum_t inf = {info, sizeof(info)}, p = {prk, (unsigned)hlen};
        md.native_handle = (void *)(intptr_t)hashes[h];
        randombytes_buf(secret, sizeof(secret));
        CHECK(ngtcp2_crypto_hkdf_extract(prk, &md, secret, sizeof(secret), salt, sizeof(salt)) ==
              0);
        CHECK(gnutls_hkdf_extract((gnutls_mac_algorithm_t)hashes[h], &k, &sa, rprk) == 0);
        CHECK(memcmp(prk, rprk, hlen) == 0);
        for (size_t len = 1; len <= sizeof(okm); len += 37) {
            CHECK(ngtcp2_crypto_hkdf_expand(okm, len, &md, prk, hlen, info, sizeof(info)) == 0);
            CHECK(gnutls_hkdf_expand((gnutls_mac_algorithm_t)hashes[h], &p, &inf, ref, len) == 0);
            CHECK(memcmp(okm, ref, len) == 0);
        }
    }
}
#endif

int main(void)
{
    struct world w;
    memset(&w, 0, sizeof(w));
    pos_identity_generate(&w.relay_id);
    pos_identity_generate(&w.relay2_id);
    pos_identity_generate(&w.alice_id);
    pos_identity_generate(&w.bob_id);
    if (pos_tls_creds_new(&w.relay, &w.relay_id) != 0 ||
        pos_tls_creds_new(&w.relay2, &w.relay2_id) != 0 ||
        pos_tls_creds_new(&w.alice, &w.alice_id) != 0 ||
        pos_tls_creds_new(&w.bob, &w.bob_id) != 0) {
        CHECK(0);
        return check_finish("tls");
    }
#ifdef POS_TEST_TLS_FAST
    {
        /* relay/tls_fast.c's functions are the ones GnuTLS finds (as in pos-relay) */
        void *v = dlsym(RTLD_DEFAULT, "nettle_ed25519_sha512_verify");
        void *m = dlsym(RTLD_DEFAULT, "nettle_curve25519_mul");
        int (*vf)(const uint8_t *, size_t, const uint8_t *, const uint8_t *) = NULL;
        void (*mf)(uint8_t *, const uint8_t *, const uint8_t *) = NULL;
        memcpy(&vf, &v, sizeof(v));
        memcpy(&mf, &m, sizeof(m));
        CHECK(vf == ed25519_sha512_verify);
        CHECK(mf == curve25519_mul);
        void *g = dlsym(RTLD_DEFAULT, "nettle_curve25519_mul_g");
        void *x = dlsym(RTLD_DEFAULT, "ngtcp2_crypto_hkdf_expand");
        void (*gf)(uint8_t *, const uint8_t *) = NULL;
        int (*xf)(uint8_t *, size_t, const ngtcp2_crypto_md *, const uint8_t *, size_t,
                  const uint8_t *, size_t) = NULL;
        memcpy(&gf, &g, sizeof(g));
        memcpy(&xf, &x, sizeof(x));
        CHECK(gf == curve25519_mul_g);
        CHECK(xf == ngtcp2_crypto_hkdf_expand);
    }
    test_fast_replacements();
#endif
    test_rawpk_parse(&w);
    test_bad_signature(&w);
    test_x509_peer(&w);
    test_resumption(&w);
    pos_tls_creds_del(w.relay);
    pos_tls_creds_del(w.relay2);
    pos_tls_creds_del(w.alice);
    pos_tls_creds_del(w.bob);
    pos_identity_free(&w.relay_id);
    pos_identity_free(&w.relay2_id);
    pos_identity_free(&w.alice_id);
    pos_identity_free(&w.bob_id);
    return check_finish("tls");
}
