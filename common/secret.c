/* Constant-time comparison, hashing and reading of secrets (see secret.h). */
#include "secret.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pos_secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char ha[32], hb[32];
    crypto_generichash(ha, sizeof(ha), (const unsigned char *)a, alen, NULL, 0);
    crypto_generichash(hb, sizeof(hb), (const unsigned char *)b, blen, NULL, 0);
    return sodium_memcmp(ha, hb, sizeof(ha)) == 0;
}

void pos_secret_hash_hex(const char *s, size_t len, char out[POS_SECRET_HASH_HEXLEN])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)s, len, NULL, 0);
    sodium_bin2hex(out, POS_SECRET_HASH_HEXLEN, h, sizeof(h));
}

void pos_secret_token_new(char *out, size_t outlen)
{
    unsigned char raw[32];
    char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(b64, sizeof(b64), raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, outlen, "pos_%s", b64);
    sodium_memzero(raw, sizeof(raw));
    sodium_memzero(b64, sizeof(b64));
}

char *pos_secret_read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the secret file: %s", path, strerror(errno));
        return NULL;
    }
    char buf[4096];
    char *line = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (!line) {
        snprintf(err, errlen, "%s: the secret file is empty", path);
        return NULL;
    }
    size_t n = strcspn(buf, "\r\n");
    buf[n] = '\0';
    if (n == 0) {
        sodium_memzero(buf, sizeof(buf));
        snprintf(err, errlen, "%s: the first line of the secret file is empty", path);
        return NULL;
    }
    char *s = strdup(buf);
    sodium_memzero(buf, sizeof(buf));
    if (!s)
        snprintf(err, errlen, "out of memory");
    return s;
}

void pos_secret_free(char *s)
{
    if (!s)
        return;
    sodium_memzero(s, strlen(s));
    free(s);
}
