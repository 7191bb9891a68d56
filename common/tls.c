/*
 * GnuTLS credentials and sessions with peer-id pinning (see tls.h). The
 * certificate is generated in memory at start-up from the identity seed;
 * nothing is written to disk.
 */
#include "tls.h"

#include <gnutls/abstract.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pos_tls_creds {
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio; /* parsed once: parsing per session costs as much as a signature */
    gnutls_datum_t der;     /* our certificate, gnutls_free'd */
};

static int make_cert(const pos_identity *id, gnutls_privkey_t priv, gnutls_x509_crt_t crt)
{
    gnutls_pubkey_t pub = NULL;
    uint8_t serial[16];
    char peer_id[POS_PEER_ID_STRLEN];
    time_t now = time(NULL);
    int rv = -1;

    if (gnutls_pubkey_init(&pub) < 0)
        return -1;
    if (gnutls_pubkey_import_privkey(pub, priv, 0, 0) < 0)
        goto out;
    randombytes_buf(serial, sizeof(serial));
    serial[0] &= 0x7f; /* a positive INTEGER */
    pos_identity_peer_id(id, peer_id);
    if (gnutls_x509_crt_set_version(crt, 3) < 0 ||
        gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) < 0 ||
        gnutls_x509_crt_set_activation_time(crt, now - 86400) < 0 ||
        gnutls_x509_crt_set_expiration_time(crt, (time_t)-1) < 0 ||
        gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, peer_id,
                                      POS_PEER_ID_LEN) < 0 ||
        gnutls_x509_crt_set_issuer_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, peer_id,
                                             POS_PEER_ID_LEN) < 0 ||
        gnutls_x509_crt_set_pubkey(crt, pub) < 0 ||
        gnutls_x509_crt_set_basic_constraints(crt, 0, -1) < 0 ||
        gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) < 0 ||
        gnutls_x509_crt_privkey_sign(crt, crt, priv, GNUTLS_DIG_SHA512, 0) < 0)
        goto out;
    rv = 0;
out:
    gnutls_pubkey_deinit(pub);
    return rv;
}

int pos_tls_creds_new(pos_tls_creds **out, const pos_identity *id)
{
    pos_tls_creds *c = calloc(1, sizeof(*c));
    gnutls_privkey_t priv = NULL;
    gnutls_x509_crt_t crt = NULL;
    gnutls_pcert_st pcert;
    int have_pcert = 0;
    gnutls_datum_t x = {(unsigned char *)id->public_key, 32};
    gnutls_datum_t k = {(unsigned char *)id->seed, 32};

    if (!c)
        return POS_TLS_ERR_NOMEM;
    if (gnutls_privkey_init(&priv) < 0 || gnutls_x509_crt_init(&crt) < 0)
        goto fail;
    if (gnutls_privkey_import_ecc_raw(priv, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k) < 0)
        goto fail;
    if (make_cert(id, priv, crt) != 0)
        goto fail;
    if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &c->der) < 0)
        goto fail;
    if (gnutls_pcert_import_x509(&pcert, crt, 0) < 0)
        goto fail;
    have_pcert = 1;
    if (gnutls_certificate_allocate_credentials(&c->cred) < 0)
        goto fail;
    /* On success the credentials own both the pcert's contents and the key. */
    if (gnutls_certificate_set_key(c->cred, NULL, 0, &pcert, 1, priv) < 0)
        goto fail;
    have_pcert = 0;
    priv = NULL;
    if (gnutls_priority_init(&c->prio, POS_TLS_PRIORITY, NULL) < 0)
        goto fail;
    gnutls_x509_crt_deinit(crt);
    *out = c;
    return 0;
fail:
    if (have_pcert)
        gnutls_pcert_deinit(&pcert);
    if (c->cred)
        gnutls_certificate_free_credentials(c->cred);
    if (c->prio)
        gnutls_priority_deinit(c->prio);
    gnutls_free(c->der.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_privkey_deinit(priv);
    free(c);
    return POS_TLS_ERR_CRYPTO;
}

void pos_tls_creds_del(pos_tls_creds *c)
{
    if (!c)
        return;
    gnutls_certificate_free_credentials(c->cred);
    gnutls_priority_deinit(c->prio);
    gnutls_free(c->der.data);
    free(c);
}

void pos_tls_cert_der(const pos_tls_creds *c, const uint8_t **der, size_t *len)
{
    *der = c->der.data;
    *len = c->der.size;
}

int pos_tls_check_peer_cert(const uint8_t *der, size_t len, uint8_t key[32])
{
    gnutls_x509_crt_t crt = NULL;
    gnutls_pubkey_t pub = NULL;
    gnutls_datum_t d = {(unsigned char *)der, (unsigned)len};
    gnutls_datum_t x = {NULL, 0};
    gnutls_ecc_curve_t curve;
    int rv = -1;

    if (len == 0 || len > 16384)
        return -1;
    if (gnutls_x509_crt_init(&crt) < 0)
        return -1;
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) < 0)
        goto out;
    if (gnutls_x509_crt_get_pk_algorithm(crt, NULL) != GNUTLS_PK_EDDSA_ED25519)
        goto out;
    /*
     * No CA and no clock: what is trusted is the key itself. TLS 1.3's
     * CertificateVerify proves the peer holds it, so the certificate's own
     * self-signature adds nothing and is not checked.
     */
    if (gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_x509(pub, crt, 0) < 0)
        goto out;
    if (gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, NULL, 0) < 0)
        goto out;
    if (curve != GNUTLS_ECC_CURVE_ED25519 || x.size != 32)
        goto out;
    memcpy(key, x.data, 32);
    rv = 0;
out:
    gnutls_free(x.data);
    if (pub)
        gnutls_pubkey_deinit(pub);
    gnutls_x509_crt_deinit(crt);
    return rv;
}

/*
 * check_peer: the peer's certificate of |s| against |pin| (the same check on
 * a full handshake, from the verify function, and on a resumed one, from the
 * certificate stored in the ticket). Returns 0, or -1 (pin->mismatch set when
 * a valid Ed25519 key was not the expected one).
 */
static int check_peer(gnutls_session_t s, pos_tls_pin *pin)
{
    const gnutls_datum_t *certs;
    unsigned n = 0;
    uint8_t key[32];

    if (gnutls_certificate_type_get2(s, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_X509)
        return -1;
    certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n != 1)
        return -1;
    if (pos_tls_check_peer_cert(certs[0].data, certs[0].size, key) != 0)
        return -1;
    if (pin->has_expected && sodium_memcmp(key, pin->expect_key, 32) != 0) {
        pin->mismatch = 1;
        return -1;
    }
    memcpy(pin->peer_key, key, 32);
    pin->has_peer = 1;
    return 0;
}

/* Called by GnuTLS once the peer's certificate is in; non-zero aborts with an alert. */
static int verify_peer(gnutls_session_t s)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
    pos_tls_pin *pin = ref ? ref->user_data : NULL;

    if (!pin)
        return -1;
    return check_peer(s, pin);
}

int pos_tls_handshake_peer(gnutls_session_t s, pos_tls_pin *pin, int *resumed)
{
    *resumed = 0;
    if (!s)
        return -1;
    if (!gnutls_session_is_resumed(s))
        return pin->has_peer ? 0 : -1;
    /*
     * GnuTLS does not call the verify function on a resumed handshake: the
     * peer is the one the ticket was issued to (its certificate travels,
     * encrypted, in the ticket), checked here exactly as on a full one.
     */
    *resumed = 1;
    pin->has_peer = 0;
    return check_peer(s, pin);
}

/* The process-wide ticket key (see pos_tls_session_new_ex): made once, never logged. */
static gnutls_datum_t ticket_key;
static int ticket_key_ok;
static pthread_once_t ticket_key_once = PTHREAD_ONCE_INIT;

static void make_ticket_key(void)
{
    ticket_key_ok = gnutls_session_ticket_key_generate(&ticket_key) == 0;
}

int pos_tls_session_new_alpns(gnutls_session_t *out, pos_tls_creds *creds, int server,
                              const char *const *alpns, size_t n_alpns)
{
    return pos_tls_session_new_ex(out, creds, server, alpns, n_alpns, 0);
}

int pos_tls_session_new_ex(gnutls_session_t *out, pos_tls_creds *creds, int server,
                           const char *const *alpns, size_t n_alpns, unsigned tickets)
{
    gnutls_session_t s = NULL;
    gnutls_datum_t protos[POS_TLS_MAX_ALPNS];
    unsigned flags = GNUTLS_ALPN_MANDATORY;
    int rv;

    if (!alpns || n_alpns == 0 || n_alpns > POS_TLS_MAX_ALPNS)
        return POS_TLS_ERR_CRYPTO;
    for (size_t i = 0; i < n_alpns; i++) {
        size_t len = alpns[i] ? strlen(alpns[i]) : 0;
        if (len == 0 || len > 255)
            return POS_TLS_ERR_CRYPTO;
        protos[i].data = (unsigned char *)alpns[i];
        protos[i].size = (unsigned)len;
    }
    /* a server picks by its own order (newest version first), whatever the client's order */
    if (server)
        flags |= GNUTLS_ALPN_SERVER_PRECEDENCE;
    if (server && tickets) {
        pthread_once(&ticket_key_once, make_ticket_key);
        if (!ticket_key_ok)
            return POS_TLS_ERR_CRYPTO;
    }
    /* Without |tickets| no resumption: a ticket costs a message and memory per connection. */
    rv = gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_END_OF_EARLY_DATA |
                             (tickets ? 0 : GNUTLS_NO_TICKETS) | GNUTLS_KEY_SHARE_TOP);
    if (rv < 0)
        return rv == GNUTLS_E_MEMORY_ERROR ? POS_TLS_ERR_NOMEM : POS_TLS_ERR_CRYPTO;
    if (gnutls_priority_set(s, creds->prio) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds->cred) < 0 ||
        gnutls_alpn_set_protocols(s, protos, (unsigned)n_alpns, flags) < 0) {
        gnutls_deinit(s);
        return POS_TLS_ERR_CRYPTO;
    }
    if (server && tickets) {
        /* GnuTLS derives the key that seals tickets from this one, a new one every |tickets| s */
        gnutls_db_set_cache_expiration(s, (int)tickets);
        if (gnutls_session_ticket_enable_server(s, &ticket_key) < 0) {
            gnutls_deinit(s);
            return POS_TLS_ERR_CRYPTO;
        }
    }
    if (server)
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_function(s, verify_peer);
    *out = s;
    return 0;
}

int pos_tls_session_new(gnutls_session_t *out, pos_tls_creds *creds, int server, const char *alpn)
{
    return pos_tls_session_new_alpns(out, creds, server, &alpn, 1);
}

int pos_tls_alpn_selected(gnutls_session_t s, const uint8_t **alpn, size_t *len)
{
    gnutls_datum_t d = {NULL, 0};
    if (!s || gnutls_alpn_get_selected_protocol(s, &d) < 0 || !d.data || d.size == 0)
        return -1;
    *alpn = d.data;
    *len = d.size;
    return 0;
}
