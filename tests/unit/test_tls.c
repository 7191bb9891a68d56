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
#include <errno.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <string.h>

#ifdef POS_TEST_TLS_FAST
#include <nettle/curve25519.h>
#include <nettle/eddsa.h>
#endif

#include "check.h"
#include "ctrl.h"
#include "identity.h"
#include "park.h"
#include "tls.h"

struct pipe {
    uint8_t buf[65536];
    size_t len;
};

struct side {
    gnutls_session_t s;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    struct pipe *in, *out;
    int done;
};

static ssize_t push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
    struct side *sd = p;
    if (sd->out->len + len > sizeof(sd->out->buf))
        return -1;
    memcpy(sd->out->buf + sd->out->len, data, len);
    sd->out->len += len;
    return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    struct side *sd = p;
    if (sd->in->len == 0) {
        gnutls_transport_set_errno(sd->s, EAGAIN);
        return -1;
    }
    if (len > sd->in->len)
        len = sd->in->len;
    memcpy(data, sd->in->buf, len);
    memmove(sd->in->buf, sd->in->buf + len, sd->in->len - len);
    sd->in->len -= len;
    return (ssize_t)len;
}

static int setup(struct side *sd, pos_tls_creds *creds, int server, unsigned tickets,
                 struct pipe *in, struct pipe *out)
{
    memset(sd, 0, sizeof(*sd));
    if (pos_tls_session_new_ex(&sd->s, creds, server, pos_ctrl_alpns, POS_CTRL_N_ALPNS, tickets))
        return -1;
    sd->ref.user_data = &sd->pin;
    gnutls_session_set_ptr(sd->s, &sd->ref);
    gnutls_transport_set_ptr(sd->s, sd);
    gnutls_transport_set_push_function(sd->s, push);
    gnutls_transport_set_pull_function(sd->s, pull);
    sd->in = in;
    sd->out = out;
    return 0;
}

/* handshake runs both sides until both are done or one fails. Returns 0 when both are done. */
static int handshake(struct side *c, struct side *s)
{
    for (int i = 0; i < 20 && !(c->done && s->done); i++) {
        struct side *both[2] = {c, s};
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

static void end(struct side *c, struct side *s)
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
    static struct pipe a, b;
    struct side c, s;
    int rv = -1;

    a.len = b.len = 0;
    *resumed_c = *resumed_s = *mismatch = 0;
    if (setup(&c, client, 0, 1, &a, &b) != 0 || setup(&s, server, 1, 3600, &b, &a) != 0)
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
    static struct pipe a, b;
    struct side c, s;
    int resumed;

    a.len = b.len = 0;
    if (setup(&c, w->alice, 0, 0, &a, &b) != 0 || setup(&s, w->relay, 1, 3600, &b, &a) != 0) {
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
    static struct pipe a, b;
    pos_identity liar = w->alice_id;
    pos_tls_creds *creds = NULL;
    struct side c, s;

    memcpy(liar.secret_key, w->bob_id.secret_key, sizeof(liar.secret_key)); /* signs as bob */
    if (pos_tls_creds_new(&creds, &liar) != 0) {
        CHECK(0);
        return;
    }
    a.len = b.len = 0;
    if (setup(&c, creds, 0, 0, &a, &b) == 0 && setup(&s, w->relay, 1, 3600, &b, &a) == 0) {
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
    }
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
