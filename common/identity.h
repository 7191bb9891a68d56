/*
 * Identity of a relay or a device: an Ed25519 key pair (libsodium). Its text
 * form, the peer id, is the standard base64 alphabet without padding of the
 * 32-byte public key: 43 characters (Spacedrive's RemoteIdentity).
 *
 * The secret part is kept as the 32-byte seed; a key file holds that seed as
 * 43 characters of standard unpadded base64 on one line, mode 0600. GnuTLS
 * imports the seed directly (see tls.h), libsodium expands it.
 */
#ifndef POS_IDENTITY_H
#define POS_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define POS_PEER_ID_LEN 43
#define POS_PEER_ID_STRLEN 44 /* with the NUL */
#define POS_KEY_TEXT_STRLEN 44

typedef struct pos_identity {
    uint8_t seed[32];       /* secret: wiped by pos_identity_free */
    uint8_t public_key[32]; /* Ed25519 public key */
    uint8_t secret_key[64]; /* libsodium's expanded form: secret, wiped too */
} pos_identity;

/* Errors of this module. */
#define POS_IDENTITY_ERR_IO -1        /* file could not be read or written */
#define POS_IDENTITY_ERR_MALFORMED -2 /* file or text is not a valid key */
#define POS_IDENTITY_ERR_PERMS -3     /* key file readable by others */

/* pos_identity_generate fills |id| with a new random key pair. */
void pos_identity_generate(pos_identity *id);

/* pos_identity_from_seed derives the key pair from a 32-byte seed. */
void pos_identity_from_seed(pos_identity *id, const uint8_t seed[32]);

/*
 * pos_identity_from_text reads the key text form (base64 of the seed, 43
 * characters). Returns 0 or POS_IDENTITY_ERR_MALFORMED.
 */
int pos_identity_from_text(pos_identity *id, const char *text, size_t len);

/* pos_identity_to_text writes the key text form (a secret: never log it). */
void pos_identity_to_text(const pos_identity *id, char out[POS_KEY_TEXT_STRLEN]);

/*
 * pos_identity_load reads the key file |path|. On error returns one of the
 * codes above and writes a sentence naming the file into |err|.
 * A key file that group or others may read is refused (ERR_PERMS).
 */
int pos_identity_load(pos_identity *id, const char *path, char *err, size_t errlen);

/*
 * pos_identity_load_or_create loads |path|, or when it does not exist creates
 * a new identity there (mode 0600, parent directory created with 0700).
 * |*created| is set to 1 when a new file was written.
 */
int pos_identity_load_or_create(pos_identity *id, const char *path, int *created, char *err,
                                size_t errlen);

/* pos_identity_peer_id writes the peer id of |id| into |out|. */
void pos_identity_peer_id(const pos_identity *id, char out[POS_PEER_ID_STRLEN]);

/* pos_identity_free wipes the secret parts. */
void pos_identity_free(pos_identity *id);

/* pos_peer_id_format writes the peer id of a public key into |out|. */
void pos_peer_id_format(const uint8_t public_key[32], char out[POS_PEER_ID_STRLEN]);

/*
 * pos_peer_id_parse parses exactly |len| bytes of |s| as a peer id: 43
 * characters of the standard base64 alphabet, no padding, no whitespace, and
 * canonical (the unused low bits of the last character are zero, so each key
 * has exactly one text form). Returns 0, or -1 (|public_key| untouched).
 */
int pos_peer_id_parse(const char *s, size_t len, uint8_t public_key[32]);

#endif
