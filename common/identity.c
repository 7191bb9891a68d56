/*
 * Ed25519 identities and peer ids (see identity.h). Key files are written
 * through a temporary file and rename, so a crash never leaves half a key.
 */
#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define B64 sodium_base64_VARIANT_ORIGINAL_NO_PADDING

void pos_identity_from_seed(pos_identity *id, const uint8_t seed[32])
{
    memcpy(id->seed, seed, 32);
    crypto_sign_seed_keypair(id->public_key, id->secret_key, id->seed);
}

void pos_identity_generate(pos_identity *id)
{
    uint8_t seed[32];
    randombytes_buf(seed, sizeof(seed));
    pos_identity_from_seed(id, seed);
    sodium_memzero(seed, sizeof(seed));
}

/* Strict, canonical decoding of 43 base64 characters into 32 bytes. */
static int decode_43(const char *s, size_t len, uint8_t out[32])
{
    uint8_t buf[32];
    size_t n = 0;
    const char *end = NULL;
    char again[POS_PEER_ID_STRLEN];

    if (len != POS_PEER_ID_LEN)
        return -1;
    if (sodium_base642bin(buf, sizeof(buf), s, len, NULL, &n, &end, B64) != 0 || n != 32 ||
        end != s + len)
        return -1;
    sodium_bin2base64(again, sizeof(again), buf, 32, B64);
    if (memcmp(again, s, POS_PEER_ID_LEN) != 0) {
        sodium_memzero(buf, sizeof(buf));
        return -1;
    }
    memcpy(out, buf, 32);
    sodium_memzero(buf, sizeof(buf));
    sodium_memzero(again, sizeof(again));
    return 0;
}

int pos_peer_id_parse(const char *s, size_t len, uint8_t public_key[32])
{
    return decode_43(s, len, public_key);
}

void pos_peer_id_format(const uint8_t public_key[32], char out[POS_PEER_ID_STRLEN])
{
    sodium_bin2base64(out, POS_PEER_ID_STRLEN, public_key, 32, B64);
}

void pos_identity_peer_id(const pos_identity *id, char out[POS_PEER_ID_STRLEN])
{
    pos_peer_id_format(id->public_key, out);
}

int pos_identity_from_text(pos_identity *id, const char *text, size_t len)
{
    uint8_t seed[32];
    if (decode_43(text, len, seed) != 0)
        return POS_IDENTITY_ERR_MALFORMED;
    pos_identity_from_seed(id, seed);
    sodium_memzero(seed, sizeof(seed));
    return 0;
}

void pos_identity_to_text(const pos_identity *id, char out[POS_KEY_TEXT_STRLEN])
{
    sodium_bin2base64(out, POS_KEY_TEXT_STRLEN, id->seed, 32, B64);
}

void pos_identity_free(pos_identity *id)
{
    sodium_memzero(id, sizeof(*id));
}

int pos_identity_load(pos_identity *id, const char *path, char *err, size_t errlen)
{
    char buf[128];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot read the identity key: %s", path, strerror(errno));
        return POS_IDENTITY_ERR_IO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: the identity key is not a regular file", path);
        return POS_IDENTITY_ERR_IO;
    }
    if (st.st_mode & 077) {
        close(fd);
        snprintf(err, errlen,
                 "%s: the identity key is readable by other users (mode %03o); run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        return POS_IDENTITY_ERR_PERMS;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s: cannot read the identity key: %s", path, strerror(errno));
        return POS_IDENTITY_ERR_IO;
    }
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    int rc = pos_identity_from_text(id, buf, len);
    sodium_memzero(buf, sizeof(buf));
    if (rc != 0) {
        snprintf(err, errlen,
                 "%s: not an identity key (expected one line of 43 base64 characters); "
                 "move it away to create a new identity",
                 path);
        return POS_IDENTITY_ERR_MALFORMED;
    }
    return 0;
}

static int mkdir_parents(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    char *dir = dirname(copy);
    int rc = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir_parents(dir) != 0 || (mkdir(dir, 0700) != 0 && errno != EEXIST))
            rc = -1;
    }
    free(copy);
    return rc;
}

static int write_key_file(const pos_identity *id, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    char text[POS_KEY_TEXT_STRLEN + 1];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return POS_IDENTITY_ERR_IO;
    }
    if (mkdir_parents(path) != 0) {
        snprintf(err, errlen, "%s: cannot create its directory: %s", path, strerror(errno));
        return POS_IDENTITY_ERR_IO;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot write the identity key: %s", path, strerror(errno));
        return POS_IDENTITY_ERR_IO;
    }
    pos_identity_to_text(id, text);
    size_t len = strlen(text);
    text[len++] = '\n';
    ssize_t w = write(fd, text, len);
    sodium_memzero(text, sizeof(text));
    if (w != (ssize_t)len || fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%s: cannot write the identity key: %s", path, strerror(errno));
        unlink(tmp);
        return POS_IDENTITY_ERR_IO;
    }
    /* link() fails if |path| appeared meanwhile: never replace someone's key. */
    if (link(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        snprintf(err, errlen, "%s: cannot create the identity key: %s", path, strerror(e));
        return POS_IDENTITY_ERR_IO;
    }
    unlink(tmp);
    return 0;
}

int pos_identity_load_or_create(pos_identity *id, const char *path, int *created, char *err,
                                size_t errlen)
{
    struct stat st;
    *created = 0;
    if (lstat(path, &st) == 0 || errno != ENOENT)
        return pos_identity_load(id, path, err, errlen);
    pos_identity_generate(id);
    int rc = write_key_file(id, path, err, errlen);
    if (rc != 0) {
        pos_identity_free(id);
        return rc;
    }
    *created = 1;
    return 0;
}
