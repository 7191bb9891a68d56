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
    gnutls_pcert_st x509;  /* our certificate, for peers without raw public keys */
    gnutls_pcert_st rawpk; /* our raw public key (RFC 7250) */
    int have_x509, have_rawpk;
    gnutls_privkey_t key;   /* signs through libsodium (signing_key) */
    uint8_t ticket_key[64]; /* seals session tickets: see make_ticket_key */
    int ticket_key_ok;
    gnutls_priority_t prio; /* parsed once: parsing per session costs as much as a signature */
    gnutls_datum_t der;     /* our certificate, gnutls_free'd */
};

/*
 * The process-wide secret behind every session ticket key, made at the first
 * credentials (so before any worker thread serves), kept in memory only and
 * never logged; shared by every worker of a relay.
 */
static gnutls_datum_t ticket_master;
static int ticket_master_ok;
static pthread_once_t ticket_master_once = PTHREAD_ONCE_INIT;

static void make_ticket_master(void)
{
    ticket_master_ok = gnutls_session_ticket_key_generate(&ticket_master) == 0 &&
                       ticket_master.size == crypto_generichash_KEYBYTES_MAX;
}

/*
 * make_ticket_key: |c|'s ticket key is the process's secret hashed with the
 * identity's public key, so a ticket one identity issued never opens a
 * session with another (a client pinning a new key gets a full handshake).
 */
static void make_ticket_key(pos_tls_creds *c, const pos_identity *id)
{
    pthread_once(&ticket_master_once, make_ticket_master);
    if (!ticket_master_ok)
        return;
    crypto_generichash(c->ticket_key, sizeof(c->ticket_key), id->public_key, 32, ticket_master.data,
                       ticket_master.size);
    c->ticket_key_ok = 1;
}

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

/*
 * The credentials' signing key: GnuTLS calls back here for the one signature
 * of a handshake (CertificateVerify) and libsodium makes it, about half the
 * time of GnuTLS's own Ed25519 (nettle). |userdata| is libsodium's 64-byte
 * secret key, a copy wiped when GnuTLS releases the key.
 */
static int ext_sign(gnutls_privkey_t key, gnutls_sign_algorithm_t algo, void *userdata,
                    unsigned flags, const gnutls_datum_t *data, gnutls_datum_t *sig)
{
    (void)key;
    (void)flags;
    if (algo != GNUTLS_SIGN_EDDSA_ED25519)
        return GNUTLS_E_UNSUPPORTED_SIGNATURE_ALGORITHM;
    sig->data = gnutls_malloc(crypto_sign_BYTES);
    if (!sig->data)
        return GNUTLS_E_MEMORY_ERROR;
    crypto_sign_detached(sig->data, NULL, data->data, data->size, userdata);
    sig->size = crypto_sign_BYTES;
    return 0;
}

static int ext_sign_hash(gnutls_privkey_t key, gnutls_sign_algorithm_t algo, void *userdata,
                         unsigned flags, const gnutls_datum_t *hash, gnutls_datum_t *sig)
{
    (void)key;
    (void)algo;
    (void)userdata;
    (void)flags;
    (void)hash;
    (void)sig;
    return GNUTLS_E_UNSUPPORTED_SIGNATURE_ALGORITHM; /* Ed25519 signs the message, not a hash */
}

static void ext_deinit(gnutls_privkey_t key, void *userdata)
{
    (void)key;
    sodium_memzero(userdata, crypto_sign_SECRETKEYBYTES);
    free(userdata);
}

static int ext_info(gnutls_privkey_t key, unsigned flags, void *userdata)
{
    (void)key;
    (void)userdata;
    if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO)
        return GNUTLS_PK_EDDSA_ED25519;
    if (flags & GNUTLS_PRIVKEY_INFO_SIGN_ALGO)
        return GNUTLS_SIGN_EDDSA_ED25519;
    if (flags & GNUTLS_PRIVKEY_INFO_HAVE_SIGN_ALGO)
        return GNUTLS_FLAGS_TO_SIGN_ALGO(flags) == GNUTLS_SIGN_EDDSA_ED25519;
    if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO_BITS)
        return 256;
    return -1;
}

/* signing_key: a GnuTLS key object signing with |id|'s key through libsodium. */
static gnutls_privkey_t signing_key(const pos_identity *id)
{
    gnutls_privkey_t k = NULL;
    uint8_t *sk = malloc(crypto_sign_SECRETKEYBYTES);

    if (!sk || gnutls_privkey_init(&k) < 0) {
        free(sk);
        return NULL;
    }
    memcpy(sk, id->secret_key, crypto_sign_SECRETKEYBYTES);
    if (gnutls_privkey_import_ext4(k, sk, ext_sign, ext_sign_hash, NULL, ext_deinit, ext_info,
                                   GNUTLS_PRIVKEY_IMPORT_AUTO_RELEASE) < 0) {
        ext_deinit(k, sk);
        gnutls_privkey_deinit(k);
        return NULL;
    }
    return k;
}

/*
 * retrieve: GnuTLS asks which certificate to send, once the type is
 * negotiated (a server after the ClientHello, a client after the server's
 * EncryptedExtensions): the raw public key or the X.509 certificate, both
 * made at start-up and shared by every session. (With both held as stored
 * keys instead, a GnuTLS client sends no X.509 certificate at all: it picks
 * one of several only by the CA names a server asks for.)
 */
static int retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_rdn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                    gnutls_pcert_st **pcert, unsigned *n, gnutls_privkey_t *key)
{
    pos_tls_creds *c = gnutls_db_get_ptr(s); /* set by pos_tls_session_new_ex */
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    if (!c)
        return -1;
    *pcert = gnutls_certificate_type_get2(s, GNUTLS_CTYPE_OURS) == GNUTLS_CRT_RAWPK ? &c->rawpk
                                                                                    : &c->x509;
    *n = 1;
    *key = c->key;
    return 0;
}

int pos_tls_creds_new(pos_tls_creds **out, const pos_identity *id)
{
    pos_tls_creds *c = calloc(1, sizeof(*c));
    gnutls_privkey_t priv = NULL;
    gnutls_pubkey_t pub = NULL;
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t x = {(unsigned char *)id->public_key, 32};
    gnutls_datum_t k = {(unsigned char *)id->seed, 32};

    if (!c)
        return POS_TLS_ERR_NOMEM;
    if (gnutls_privkey_init(&priv) < 0 || gnutls_x509_crt_init(&crt) < 0 ||
        gnutls_pubkey_init(&pub) < 0)
        goto fail;
    if (gnutls_privkey_import_ecc_raw(priv, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k) < 0)
        goto fail;
    if (make_cert(id, priv, crt) != 0)
        goto fail;
    if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &c->der) < 0)
        goto fail;
    if (gnutls_pcert_import_x509(&c->x509, crt, 0) < 0)
        goto fail;
    c->have_x509 = 1;
    if (gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_ED25519, &x, NULL) < 0 ||
        gnutls_pcert_import_rawpk(&c->rawpk, pub, 0) < 0)
        goto fail;
    pub = NULL; /* the pcert owns it */
    c->have_rawpk = 1;
    if ((c->key = signing_key(id)) == NULL)
        goto fail;
    if (gnutls_certificate_allocate_credentials(&c->cred) < 0)
        goto fail;
    gnutls_certificate_set_retrieve_function2(c->cred, retrieve);
    if (gnutls_priority_init(&c->prio, POS_TLS_PRIORITY, NULL) < 0)
        goto fail;
    gnutls_x509_crt_deinit(crt);
    gnutls_privkey_deinit(priv);
    make_ticket_key(c, id);
    *out = c;
    return 0;
fail:
    gnutls_x509_crt_deinit(crt);
    gnutls_privkey_deinit(priv);
    gnutls_pubkey_deinit(pub);
    pos_tls_creds_del(c);
    return POS_TLS_ERR_CRYPTO;
}

void pos_tls_creds_del(pos_tls_creds *c)
{
    if (!c)
        return;
    if (c->cred)
        gnutls_certificate_free_credentials(c->cred);
    if (c->prio)
        gnutls_priority_deinit(c->prio);
    if (c->have_x509)
        gnutls_pcert_deinit(&c->x509);
    if (c->have_rawpk)
        gnutls_pcert_deinit(&c->rawpk);
    gnutls_privkey_deinit(c->key);
    gnutls_free(c->der.data);
    sodium_memzero(c->ticket_key, sizeof(c->ticket_key));
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

/* An Ed25519 SubjectPublicKeyInfo in DER (RFC 8410): this prefix, then the 32-byte key. */
static const uint8_t ed25519_spki[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                         0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};

int pos_tls_check_peer_rawpk(const uint8_t *spki, size_t len, uint8_t key[32])
{
    /*
     * DER has one encoding of an Ed25519 key, so these exact 44 bytes and
     * nothing else: what GnuTLS checks the CertificateVerify with is this key.
     */
    if (len != sizeof(ed25519_spki) + 32 || memcmp(spki, ed25519_spki, sizeof(ed25519_spki)) != 0)
        return -1;
    memcpy(key, spki + sizeof(ed25519_spki), 32);
    return 0;
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

    gnutls_certificate_type_t type = gnutls_certificate_type_get2(s, GNUTLS_CTYPE_PEERS);

    certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n != 1)
        return -1;
    if (type == GNUTLS_CRT_RAWPK  ? pos_tls_check_peer_rawpk(certs[0].data, certs[0].size, key)
        : type == GNUTLS_CRT_X509 ? pos_tls_check_peer_cert(certs[0].data, certs[0].size, key)
                                  : -1)
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

int pos_tls_send_ticket(gnutls_session_t s)
{
    /* one, not GnuTLS's automatic two: each costs sealing the session state and a message */
    return gnutls_session_ticket_send(s, 1, 0) == 0 ? 0 : -1;
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
    if (server && tickets && !creds->ticket_key_ok)
        return POS_TLS_ERR_CRYPTO;
    /* Without |tickets| no resumption: a ticket costs a message and memory per connection. */
    rv = gnutls_init(&s,
                     (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_END_OF_EARLY_DATA |
                         (tickets ? (server ? GNUTLS_NO_AUTO_SEND_TICKET : 0) : GNUTLS_NO_TICKETS) |
                         GNUTLS_KEY_SHARE_TOP | GNUTLS_ENABLE_RAWPK);
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
        gnutls_datum_t key = {creds->ticket_key, sizeof(creds->ticket_key)};
        gnutls_db_set_cache_expiration(s, (int)tickets);
        if (gnutls_session_ticket_enable_server(s, &key) < 0) {
            gnutls_deinit(s);
            return POS_TLS_ERR_CRYPTO;
        }
    }
    if (server)
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_function(s, verify_peer);
    gnutls_db_set_ptr(s, creds); /* for retrieve: no session cache uses it (tickets instead) */
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
