/*
 * Handling of secrets: the p2p secret and client tokens. They are compared in
 * constant time, stored only as hashes where comparison is all that is
 * needed, and wiped before their memory is freed. Nothing here logs.
 */
#ifndef POS_SECRET_H
#define POS_SECRET_H

#include <stddef.h>

/* Hex of a 32-byte BLAKE2b hash, and a NUL. */
#define POS_SECRET_HASH_HEXLEN 65

/*
 * pos_secret_equal compares two byte strings in time that depends on neither
 * content nor where they differ: both are hashed, then the hashes compared
 * with sodium_memcmp. Returns 1 when equal, 0 otherwise.
 */
int pos_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/* pos_secret_hash_hex writes the hex BLAKE2b-256 of |len| bytes of |s| into |out|. */
void pos_secret_hash_hex(const char *s, size_t len, char out[POS_SECRET_HASH_HEXLEN]);

/*
 * pos_secret_token_new writes a new random token (32 random bytes, URL-safe
 * base64, prefixed "pos_") into |out| of at least POS_TOKEN_STRLEN bytes.
 */
#define POS_TOKEN_STRLEN 52
void pos_secret_token_new(char *out, size_t outlen);

/*
 * pos_secret_read_file reads the first line of |path| into a new string
 * (caller frees with pos_secret_free). Returns NULL and writes a sentence
 * into |err| when the file cannot be read or its first line is empty.
 */
char *pos_secret_read_file(const char *path, char *err, size_t errlen);

/* pos_secret_free wipes and frees a string from this module (NULL is fine). */
void pos_secret_free(char *s);

#endif
