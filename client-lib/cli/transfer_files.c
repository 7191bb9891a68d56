/*
 * The receiving directory of the file-transfer protocol: name rules, the
 * part file a transfer owns (exclusively: flock), publication that never
 * replaces a file, free space, and expiry of abandoned part files (see
 * transfer_files.h and docs/transfer.md). Every file is reached relative to
 * the directory's descriptor and never through a symbolic link.
 */
#include "transfer_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "transfer.h"

/*
 * Decodes one UTF-8 character of |s| (|left| > 0 bytes) into |*cp|; returns
 * its length, or 0 when the bytes are not UTF-8 (overlong forms, surrogates,
 * beyond U+10FFFF, truncated or stray continuation bytes).
 */
static size_t utf8_next(const unsigned char *s, size_t left, uint32_t *cp)
{
    size_t n;
    uint32_t min;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, min = 0x80, *cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, min = 0x800, *cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, min = 0x10000, *cp = s[0] & 0x07;
    else
        return 0;
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return n;
}

/*
 * Characters no file name may hold: controls (C0, DEL, C1), and the ones
 * that make a name display as something it is not: direction marks,
 * embeddings, overrides and isolates (a U+202E turns "gpj.exe" into what
 * reads "exe.jpg"), line and paragraph separators, the byte-order mark.
 */
static int char_refused(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
           cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0xfeff;
}

int pos_xfer_name_ok(const char *name, size_t len)
{
    const unsigned char *s = (const unsigned char *)name;
    if (len == 0 || len > POS_XFER_MAX_NAME || name[0] == '.')
        return 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0 || char_refused(cp) || cp == '/' || cp == '\\')
            return 0;
        i += n;
    }
    return 1;
}

void pos_xfer_text_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(p + i, len - i, &cp);
        if (n == 0 || char_refused(cp)) {
            /* each byte of the character becomes '?': the length stays */
            size_t k = n ? n : 1;
            memset(p + i, '?', k);
            i += k;
            continue;
        }
        i += n;
    }
}

/* The KEY of the part file: BLAKE2b-128 of sender, size, file id and name, in hex. */
static void part_key(const char *sender, const char *name, uint64_t size, const uint8_t *hash,
                     char hex[POS_XFER_PART_KEY_HEX + 1])
{
    crypto_generichash_state h;
    uint8_t be[8], key[POS_XFER_PART_KEY_HEX / 2];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(size >> (56 - 8 * i));
    crypto_generichash_init(&h, (const uint8_t *)"pos-transfer-part", 17, sizeof key);
    crypto_generichash_update(&h, (const uint8_t *)sender, strlen(sender) + 1);
    crypto_generichash_update(&h, be, sizeof be);
    crypto_generichash_update(&h, hash, POS_XFER_HASH_LEN);
    crypto_generichash_update(&h, (const uint8_t *)name, strlen(name));
    crypto_generichash_final(&h, key, sizeof key);
    sodium_bin2hex(hex, POS_XFER_PART_KEY_HEX + 1, key, sizeof key);
}

/*
 * Opens and locks |part|. The lock is taken on the inode; the name is then
 * checked to still lead to that inode, since an expiry sweep may have
 * removed it between our open and our lock. Returns the fd, -EWOULDBLOCK
 * when another transfer holds it, or -errno.
 */
static int open_locked(int dirfd, const char *part, int flags)
{
    for (int tries = 0; tries < 3; tries++) {
        int fd = openat(dirfd, part, O_RDWR | O_NOFOLLOW | O_CLOEXEC | flags, 0600);
        if (fd < 0)
            return -errno;
        struct stat a, b;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode)) {
            close(fd);
            return -EINVAL;
        }
        if (fstatat(dirfd, part, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            return fd;
        close(fd); /* removed under us: open again */
        if (flags & O_EXCL)
            return -EEXIST;
    }
    return -EAGAIN;
}

int pos_xfer_part_open(int dirfd, const char *sender, const char *name, uint64_t size,
                       const uint8_t *hash, pos_xfer_takeover_cb takeover, void *arg, char *part,
                       int *resumable)
{
    char key[POS_XFER_PART_KEY_HEX + 1];
    part_key(sender ? sender : "", name, size, hash, key);
    snprintf(part, POS_XFER_PART_NAME_MAX, ".%s.%s.part", name, key);
    int fd = open_locked(dirfd, part, O_CREAT);
    /* Held by an earlier transfer of this sender and offer that its owner may end. */
    if (fd == -EWOULDBLOCK && takeover && takeover(arg, part))
        fd = open_locked(dirfd, part, O_CREAT);
    *resumable = fd >= 0;
    if (fd != -EWOULDBLOCK)
        return fd;
    /* The same sender sends the same file on another stream: a file of our own. */
    for (int tries = 0; tries < 8; tries++) {
        uint8_t rnd[POS_XFER_PART_KEY_HEX / 2];
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(key, sizeof key, rnd, sizeof rnd);
        snprintf(part, POS_XFER_PART_NAME_MAX, ".%s.%s.part", name, key);
        fd = open_locked(dirfd, part, O_CREAT | O_EXCL);
        if (fd != -EEXIST)
            return fd;
    }
    return -EEXIST;
}

/* Builds "NAME", then "BASE (k).EXT" for k = 1.. into |out|. */
static void candidate_name(const char *name, int k, char *out, size_t cap)
{
    if (k == 0) {
        snprintf(out, cap, "%s", name);
        return;
    }
    const char *dot = strrchr(name, '.');
    if (dot == NULL || dot == name)
        dot = name + strlen(name);
    snprintf(out, cap, "%.*s (%d)%s", (int)(dot - name), name, k, dot);
}

int pos_xfer_publish(int dirfd, const char *part, const char *name, char *final, size_t cap)
{
    for (int k = 0; k < 100; k++) {
        candidate_name(name, k, final, cap);
        if (renameat2(dirfd, part, dirfd, final, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno == EEXIST)
            continue;
        if (errno != EINVAL && errno != ENOSYS)
            return POS_XFER_ERR_IO;
        /* No RENAME_NOREPLACE on this file system: link() refuses an existing name too. */
        if (linkat(dirfd, part, dirfd, final, 0) == 0)
            return unlinkat(dirfd, part, 0) == 0 ? 0 : POS_XFER_ERR_IO;
        if (errno != EEXIST)
            return POS_XFER_ERR_IO;
    }
    final[0] = 0;
    return POS_XFER_ERR_NO_NAME;
}

uint64_t pos_xfer_free_space(int dirfd)
{
    struct statvfs v;
    if (fstatvfs(dirfd, &v) != 0)
        return UINT64_MAX;
    return (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
}

/* Whether |n| is a part file name of ours: ".X.KEY.part", KEY 32 lower-case hex digits. */
static int is_part_name(const char *n)
{
    size_t len = strlen(n), tail = 1 + POS_XFER_PART_KEY_HEX + 5;
    if (n[0] != '.' || len < 2 + tail || strcmp(n + len - 5, ".part") != 0)
        return 0;
    const char *key = n + len - tail;
    if (key[0] != '.')
        return 0;
    for (size_t i = 1; i <= POS_XFER_PART_KEY_HEX; i++)
        if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
            return 0;
    return 1;
}

int pos_xfer_sweep_parts(const char *dir, int64_t max_age_s, unsigned *removed)
{
    *removed = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return POS_XFER_ERR_IO;
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return POS_XFER_ERR_IO;
    }
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (!is_part_name(e->d_name) || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || (int64_t)(now - st.st_mtime) < max_age_s)
            continue;
        /* A transfer still holds it (a stalled sender): not abandoned, keep it. */
        int fd = open_locked(dfd, e->d_name, 0);
        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && (int64_t)(now - st.st_mtime) >= max_age_s &&
            unlinkat(dfd, e->d_name, 0) == 0)
            (*removed)++;
        close(fd);
    }
    closedir(d);
    return 0;
}
