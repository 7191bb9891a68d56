/*
 * Unit tests of the file-transfer protocol (client-lib/cli/transfer.c): a
 * sender and a receiver state machine run against each other in memory, the
 * stream bytes handed over in uneven pieces, with real files in a temporary
 * directory. What a user would notice: files arrive identical, a corrupted
 * or cut transfer never leaves a complete-looking file, a resumed transfer
 * sends only the rest, names can not escape the directory or overwrite.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "transfer.h"
#include "transfer_files.h"

static char root[256], src_dir[300], out_dir[300];

static void write_random_file(const char *path, size_t size, uint32_t seed)
{
    FILE *f = fopen(path, "wb");
    static uint8_t block[1 << 16];
    uint8_t seed_bytes[randombytes_SEEDBYTES] = {0};
    memcpy(seed_bytes, &seed, sizeof seed);
    size_t done = 0;
    uint64_t k = 0;
    while (done < size) {
        size_t n = size - done < sizeof block ? size - done : sizeof block;
        seed_bytes[8] = (uint8_t)k, seed_bytes[9] = (uint8_t)(k >> 8), k++;
        randombytes_buf_deterministic(block, n, seed_bytes);
        fwrite(block, 1, n, f);
        done += n;
    }
    fclose(f);
}

/* 1 when the two files have the same bytes. */
static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    static uint8_t ba[1 << 16], bb[1 << 16];
    while (same) {
        size_t na = fread(ba, 1, sizeof ba, fa), nb = fread(bb, 1, sizeof bb, fb);
        same = na == nb && memcmp(ba, bb, na) == 0;
        if (na == 0)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static int exists_in(const char *dir, const char *name)
{
    char p[700];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

/* Finds the part file of |name| (".NAME.KEY.part") in out_dir: 1 with its path in |out|. */
static int find_part(const char *name, char *out, size_t cap)
{
    DIR *d = opendir(out_dir);
    struct dirent *e;
    size_t n = strlen(name);
    int found = 0;
    while (d && !found && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        found = e->d_name[0] == '.' && len == n + 39 && strncmp(e->d_name + 1, name, n) == 0 &&
                e->d_name[n + 1] == '.' && strcmp(e->d_name + len - 5, ".part") == 0;
        if (found)
            snprintf(out, cap, "%s/%s", out_dir, e->d_name);
    }
    if (d)
        closedir(d);
    return found;
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[700];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
}

/*
 * Moves bytes both ways until neither side has anything to say. Sender bytes
 * reach the receiver in uneven pieces. |cut_after| > 0 stops the run once that
 * many stream bytes went to the receiver (a broken connection); |flip_at| > 0
 * flips the stream byte at that position (corruption in transit). Returns the
 * stream bytes the receiver got.
 */
static uint64_t pump(pos_xfer_sender *s, pos_xfer_receiver *r, uint64_t cut_after, uint64_t flip_at)
{
    static uint8_t buf[POS_XFER_CHUNK + POS_XFER_HEADER_LEN];
    uint8_t back[600];
    uint64_t moved = 0;
    unsigned piece = 1;
    for (int rounds = 0; rounds < 1000000; rounds++) {
        size_t cap = rounds % 3 ? sizeof buf : 4096; /* also small DATA chunks */
        int n = pos_xfer_sender_output(s, buf, cap);
        int progress = n > 0;
        size_t off = 0;
        while (n > 0 && off < (size_t)n) {
            size_t k = (size_t)n - off < piece ? (size_t)n - off : piece;
            piece = piece * 7 % 9973 + 1;
            if (cut_after && moved + k > cut_after)
                k = (size_t)(cut_after - moved);
            if (flip_at && flip_at > moved && flip_at <= moved + k)
                buf[off + (flip_at - moved - 1)] ^= 0x20;
            pos_xfer_receiver_input(r, buf + off, k);
            moved += k;
            off += k;
            if (cut_after && moved >= cut_after)
                return moved;
        }
        int m = pos_xfer_receiver_output(r, back, sizeof back);
        if (m > 0) {
            pos_xfer_sender_input(s, back, (size_t)m);
            progress = 1;
        }
        if (!progress)
            break;
    }
    return moved;
}

/* Sends |name| from src_dir to out_dir; returns the sender's final status. */
static enum pos_xfer_status send_file(const char *name, int resume, pos_xfer_sender **keep)
{
    char path[700];
    int err = 0;
    snprintf(path, sizeof path, "%s/%s", src_dir, name);
    pos_xfer_sender *s = pos_xfer_sender_new(path, resume, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    if (!s || !r) {
        pos_xfer_sender_del(s);
        pos_xfer_receiver_del(r);
        return POS_XFER_FAILED;
    }
    pump(s, r, 0, 0);
    enum pos_xfer_status st = pos_xfer_sender_status(s);
    CHECK(pos_xfer_receiver_status(r) == st);
    pos_xfer_receiver_del(r);
    if (keep)
        *keep = s;
    else
        pos_xfer_sender_del(s);
    return st;
}

static void test_sizes(void)
{
    static const size_t sizes[] = {0, 1, 65535, 65536, 65541, 20 * 1000 * 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[64], src[700], dst[700];
        snprintf(name, sizeof name, "file-%zu.bin", sizes[i]);
        snprintf(src, sizeof src, "%s/%s", src_dir, name);
        snprintf(dst, sizeof dst, "%s/%s", out_dir, name);
        write_random_file(src, sizes[i], (uint32_t)i + 1);
        pos_xfer_sender *s = NULL;
        CHECK(send_file(name, 1, &s) == POS_XFER_FINISHED);
        CHECK(same_file(src, dst));
        CHECK(s && strcmp(pos_xfer_sender_final_name(s), name) == 0);
        uint64_t size, offset, sent;
        pos_xfer_sender_progress(s, &size, &offset, &sent);
        CHECK(size == sizes[i] && offset == 0 && sent == sizes[i]);
        pos_xfer_sender_del(s);
    }
    /* Nothing but the finished files: no part or state files left. */
    CHECK(count_entries(out_dir) == (int)(sizeof sizes / sizeof sizes[0]));
    clear_dir(out_dir);
}

static void test_no_overwrite(void)
{
    char src[700], dst[700];
    snprintf(src, sizeof src, "%s/report.txt", src_dir);
    snprintf(dst, sizeof dst, "%s/report.txt", out_dir);
    write_random_file(src, 1000, 9);
    FILE *f = fopen(dst, "w");
    fputs("mine, keep me\n", f);
    fclose(f);
    pos_xfer_sender *s = NULL;
    CHECK(send_file("report.txt", 1, &s) == POS_XFER_FINISHED);
    CHECK(s && strcmp(pos_xfer_sender_final_name(s), "report (1).txt") == 0);
    pos_xfer_sender_del(s);
    char got[700];
    snprintf(got, sizeof got, "%s/report (1).txt", out_dir);
    CHECK(same_file(src, got));
    f = fopen(dst, "r");
    char line[32] = {0};
    CHECK(f && fgets(line, sizeof line, f) && strcmp(line, "mine, keep me\n") == 0);
    if (f)
        fclose(f);
    CHECK(send_file("report.txt", 1, NULL) == POS_XFER_FINISHED);
    CHECK(exists_in(out_dir, "report (2).txt"));
    clear_dir(out_dir);
}

static void test_corruption(void)
{
    char src[700];
    snprintf(src, sizeof src, "%s/data.bin", src_dir);
    write_random_file(src, 300000, 5);
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, 0, 200000); /* one byte of one DATA chunk flipped on the way */
    const char *reason = NULL;
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FAILED);
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_CHECKSUM);
    CHECK(reason && strstr(reason, "checksum") != NULL);
    CHECK(pos_xfer_receiver_status(r) == POS_XFER_FAILED);
    CHECK(pos_xfer_receiver_error(r) == POS_XFER_ERR_CHECKSUM);
    CHECK(pos_xfer_receiver_final_name(r) == NULL);
    CHECK(count_entries(out_dir) == 0); /* no data.bin, no part file to resume from */
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    /* The next attempt starts over and succeeds. */
    CHECK(send_file("data.bin", 1, NULL) == POS_XFER_FINISHED);
    char dst[700];
    snprintf(dst, sizeof dst, "%s/data.bin", out_dir);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);
}

/* Cuts a transfer after |cut| stream bytes; returns what the receiver had kept. */
static uint64_t interrupted(const char *src, uint64_t cut)
{
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, cut, 0);
    uint64_t size, offset, received;
    pos_xfer_receiver_progress(r, &size, &offset, &received);
    CHECK(pos_xfer_receiver_status(r) == POS_XFER_RUNNING);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    return received;
}

static void test_resume(void)
{
    char src[700], dst[700];
    snprintf(src, sizeof src, "%s/big.iso", src_dir);
    snprintf(dst, sizeof dst, "%s/big.iso", out_dir);
    write_random_file(src, 3 * 1000 * 1000 + 17, 77);

    uint64_t kept = interrupted(src, 1234567);
    CHECK(kept > 1000000 && kept < 1234567);
    CHECK(!exists_in(out_dir, "big.iso"));
    char part[700];
    CHECK(find_part("big.iso", part, sizeof part));
    CHECK(count_entries(out_dir) == 1); /* the part file alone: no sidecar */

    pos_xfer_sender *s = NULL;
    CHECK(send_file("big.iso", 1, &s) == POS_XFER_FINISHED);
    uint64_t size, offset, sent;
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(offset == kept); /* only the rest crossed the wire */
    CHECK(sent == size);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    CHECK(count_entries(out_dir) == 1);
    clear_dir(out_dir);

    /* A damaged part file: the sender sees the prefix hash differ and starts over. */
    kept = interrupted(src, 2000000);
    CHECK(find_part("big.iso", part, sizeof part));
    FILE *f = fopen(part, "r+b");
    fseek(f, 1000, SEEK_SET);
    fputc(0x55 ^ fgetc(f), f);
    fclose(f);
    CHECK(send_file("big.iso", 1, &s) == POS_XFER_FINISHED);
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(kept > 0 && offset == 0);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);

    /* A different file under the same name: its part is not reused. */
    interrupted(src, 500000);
    write_random_file(src, 3 * 1000 * 1000 + 17, 78);
    CHECK(send_file("big.iso", 1, &s) == POS_XFER_FINISHED);
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(offset == 0);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);

    /* Resume not asked for: start over. */
    interrupted(src, 500000);
    CHECK(send_file("big.iso", 0, &s) == POS_XFER_FINISHED);
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(offset == 0);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);
}

/*
 * A hand-made version-2 OFFER of |name| (|len| bytes), 10 bytes, resume
 * wanted, BLAKE2b only, into |msg| (600 bytes); returns its length.
 */
static size_t make_offer(uint8_t *msg, const char *name, size_t len)
{
    size_t body = 3 + 8 + 32 + 2 + len;
    memset(msg, 0, 600);
    msg[0] = 0x01;
    msg[3] = (uint8_t)(body >> 8), msg[4] = (uint8_t)body;
    msg[5] = 2, msg[6] = 1, msg[7] = 1; /* version, flags (resume), checksums (BLAKE2b) */
    msg[5 + 3 + 7] = 10;                /* size 10 */
    msg[5 + 43] = (uint8_t)(len >> 8), msg[5 + 44] = (uint8_t)len;
    memcpy(msg + 5 + 45, name, len);
    return 5 + body;
}

/* Feeds a hand-made OFFER for |name| (|len| bytes) and returns the receiver's error. */
static int offer_name(const char *name, size_t len)
{
    uint8_t msg[600];
    size_t n_msg = make_offer(msg, name, len);
    int err;
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    int rc = pos_xfer_receiver_input(r, msg, n_msg);
    uint8_t out[600];
    int n = pos_xfer_receiver_output(r, out, sizeof out);
    /* The refusal goes back on the stream: REFUSE with the wire code. */
    if (rc != 0)
        CHECK(n > 7 && out[0] == 0x12 && out[6] == (uint8_t)-rc);
    CHECK(pos_xfer_receiver_status(r) == (rc ? POS_XFER_FAILED : POS_XFER_RUNNING));
    pos_xfer_receiver_del(r);
    return rc;
}

static void test_names(void)
{
    static const char *bad[] = {"../evil", "..",   ".",    "a/b",  "/etc/passwd",
                                ".hidden", "a\\b", "x\ty", "nl\n", "del\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!pos_xfer_name_ok(bad[i], strlen(bad[i])));
        CHECK(offer_name(bad[i], strlen(bad[i])) == POS_XFER_ERR_BAD_NAME);
    }
    CHECK(offer_name("", 0) == POS_XFER_ERR_BAD_NAME);
    CHECK(offer_name("a\0b", 3) != 0); /* embedded NUL */
    char longname[POS_XFER_MAX_NAME + 1];
    memset(longname, 'n', sizeof longname);
    CHECK(offer_name(longname, POS_XFER_MAX_NAME + 1) != 0);
    CHECK(offer_name(longname, POS_XFER_MAX_NAME) == 0); /* the longest allowed */
    CHECK(pos_xfer_name_ok("résumé 2024.pdf", strlen("résumé 2024.pdf")));
    /* Nothing was created, here or in the parent. */
    char n200[POS_XFER_MAX_NAME + 1], part[700];
    snprintf(n200, sizeof n200, "%.*s", POS_XFER_MAX_NAME, longname);
    CHECK(find_part(n200, part, sizeof part));
    clear_dir(out_dir);
    CHECK(count_entries(out_dir) == 0);
    CHECK(!exists_in(root, "evil"));

    /* The sender refuses to offer a name the receiver would refuse. */
    int err = 0;
    char hidden[700];
    snprintf(hidden, sizeof hidden, "%s/.secret", src_dir);
    write_random_file(hidden, 10, 1);
    CHECK(pos_xfer_sender_new(hidden, 1, &err) == NULL && err == POS_XFER_ERR_BAD_NAME);
    unlink(hidden);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/missing/file", root);
    CHECK(pos_xfer_sender_new(missing, 1, &err) == NULL && err == POS_XFER_ERR_IO);
    CHECK(pos_xfer_sender_new(src_dir, 1, &err) == NULL && err == POS_XFER_ERR_IO);
}

static void test_refusals(void)
{
    char src[700], outside[700], link[700];
    snprintf(src, sizeof src, "%s/eleven.bin", src_dir);
    write_random_file(src, 11, 3);
    int err;

    /* Larger than the receiver accepts. */
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 10, &err);
    pump(s, r, 0, 0);
    const char *reason;
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_TOO_BIG);
    CHECK(strstr(reason, "larger") != NULL);
    CHECK(count_entries(out_dir) == 0);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);

    /* A symbolic link planted where the part file goes is not followed. */
    snprintf(outside, sizeof outside, "%s/outside", root);
    write_random_file(outside, 100, 4);
    s = pos_xfer_sender_new(src, 1, &err);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, 60, 0); /* the OFFER only: the part file's name appears */
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    CHECK(find_part("eleven.bin", link, sizeof link));
    unlink(link);
    CHECK(symlink(outside, link) == 0);
    s = pos_xfer_sender_new(src, 1, &err);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, 0, 0);
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_IO);
    struct stat st;
    CHECK(stat(outside, &st) == 0 && st.st_size == 100);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    clear_dir(out_dir);

    /* Garbage instead of an OFFER, and a message longer than any control message. */
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    const uint8_t data_first[] = {0x03, 0, 0, 0, 1, 'x'};
    CHECK(pos_xfer_receiver_input(r, data_first, sizeof data_first) == POS_XFER_ERR_PROTOCOL);
    pos_xfer_receiver_del(r);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    const uint8_t huge[] = {0x01, 0, 1, 0, 0};
    CHECK(pos_xfer_receiver_input(r, huge, sizeof huge) == POS_XFER_ERR_PROTOCOL);
    pos_xfer_receiver_del(r);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/missing", root);
    r = pos_xfer_receiver_new(missing, 0, &err);
    CHECK(r == NULL && err == POS_XFER_ERR_IO);
    pos_xfer_receiver_del(r);

    /* A sender hearing nonsense fails with a protocol error. */
    s = pos_xfer_sender_new(src, 1, &err);
    uint8_t buf[256];
    CHECK(pos_xfer_sender_output(s, buf, sizeof buf) > 0);
    const uint8_t bogus_accept[] = {0x11, 0,    0,    0,    73,   1,    0xff,
                                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t msg[78] = {0};
    memcpy(msg, bogus_accept, sizeof bogus_accept); /* offset beyond the file */
    CHECK(pos_xfer_sender_input(s, msg, sizeof msg) == POS_XFER_ERR_PROTOCOL);
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FAILED);
    pos_xfer_sender_del(s);
    /* An algorithm we did not offer, or none. */
    for (int alg = 0; alg < 3; alg++) {
        s = pos_xfer_sender_new(src, 1, &err);
        pos_xfer_sender_set_hashes(s, POS_XFER_HASH_BLAKE2B);
        CHECK(pos_xfer_sender_output(s, buf, sizeof buf) > 0);
        memset(msg + 5, 0, sizeof msg - 5);
        msg[5] = alg == 0 ? 0 : alg == 1 ? POS_XFER_HASH_SHA256 : POS_XFER_HASH_GMAC;
        CHECK(pos_xfer_sender_input(s, msg, sizeof msg) == POS_XFER_ERR_PROTOCOL);
        pos_xfer_sender_del(s);
    }
    CHECK(strcmp(pos_xfer_strerror(POS_XFER_ERR_NO_NAME),
                 "no free name for the file in the receiving directory") == 0);
}

/* One round of one pair: the sender's next output to the receiver, and the answer back. */
static int step(pos_xfer_sender *s, pos_xfer_receiver *r)
{
    static uint8_t buf[POS_XFER_CHUNK + POS_XFER_HEADER_LEN];
    uint8_t back[600];
    int n = pos_xfer_sender_output(s, buf, 8192), progress = n > 0;
    if (n > 0)
        pos_xfer_receiver_input(r, buf, (size_t)n);
    int m = pos_xfer_receiver_output(r, back, sizeof back);
    if (m > 0) {
        pos_xfer_sender_input(s, back, (size_t)m);
        progress = 1;
    }
    return progress;
}

/* The published file |final| in out_dir has the bytes of |src|. */
static int published_as(const char *final, const char *src)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", out_dir, final ? final : "(none)");
    return final && same_file(src, p);
}

/*
 * Two transfers of the same name at once, interleaved chunk by chunk: from
 * two senders with different contents (an honest one and another peer), and
 * from one sender sending the same file twice. Each owns its part file; each
 * published file holds exactly the bytes its sender sent, under its own name.
 */
static void test_concurrent_same_name(void)
{
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/contract.pdf", src_dir);
    snprintf(b, sizeof b, "%s/other/contract.pdf", root);
    char other[700];
    snprintf(other, sizeof other, "%s/other", root);
    mkdir(other, 0700);
    write_random_file(a, 700000, 41);
    write_random_file(b, 500000, 42);
    for (int round = 0; round < 2; round++) {
        const char *second = round == 0 ? b : a;
        int err;
        pos_xfer_sender *s1 = pos_xfer_sender_new(a, 1, &err),
                        *s2 = pos_xfer_sender_new(second, 1, &err);
        pos_xfer_receiver *r1 = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver *r2 = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver_set_sender(r1, "honest-peer");
        pos_xfer_receiver_set_sender(r2, round == 0 ? "other-peer" : "honest-peer");
        for (int i = 0; i < 100000; i++)
            if (!(step(s1, r1) | step(s2, r2)))
                break;
        CHECK(pos_xfer_sender_status(s1) == POS_XFER_FINISHED);
        CHECK(pos_xfer_sender_status(s2) == POS_XFER_FINISHED);
        const char *f1 = pos_xfer_sender_final_name(s1), *f2 = pos_xfer_sender_final_name(s2);
        CHECK(f1 && f2 && strcmp(f1, f2) != 0);
        CHECK(published_as(f1, a));
        CHECK(published_as(f2, second));
        CHECK(count_entries(out_dir) == 2); /* the two files, no part file left */
        pos_xfer_sender_del(s1);
        pos_xfer_sender_del(s2);
        pos_xfer_receiver_del(r1);
        pos_xfer_receiver_del(r2);
        clear_dir(out_dir);
    }
    unlink(b);
    rmdir(other);
}

/* A part file is resumed only by the sender that started it, for the same offer. */
static void test_resume_same_sender_only(void)
{
    char src[700];
    snprintf(src, sizeof src, "%s/video.mp4", src_dir);
    write_random_file(src, 1000000, 51);
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    pos_xfer_receiver_set_sender(r, "alice");
    pump(s, r, 600000, 0);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    uint64_t size, offset, sent;
    for (int who = 0; who < 2; who++) {
        s = pos_xfer_sender_new(src, 1, &err);
        r = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver_set_sender(r, who == 0 ? "mallory" : "alice");
        pump(s, r, 0, 0);
        CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED);
        pos_xfer_sender_progress(s, &size, &offset, &sent);
        CHECK(who == 0 ? offset == 0 : offset > 500000); /* mallory starts over, alice resumes */
        CHECK(published_as(pos_xfer_sender_final_name(s), src));
        pos_xfer_sender_del(s);
        pos_xfer_receiver_del(r);
    }
    CHECK(count_entries(out_dir) == 2);
    clear_dir(out_dir);
}

static pos_xfer_receiver *stale_receiver;

static int take_over(void *arg, const char *part)
{
    (void)arg;
    const char *held = stale_receiver ? pos_xfer_receiver_part_name(stale_receiver) : NULL;
    if (!held || strcmp(held, part) != 0)
        return 0;
    pos_xfer_receiver_del(stale_receiver);
    stale_receiver = NULL;
    return 1;
}

/*
 * The sender lost its connection but its old transfer is still open at the
 * receiver (holding the part file): the new offer takes the part file over
 * and resumes it when the owner ends the old transfer, else starts afresh.
 */
static void test_takeover(void)
{
    char src[700];
    snprintf(src, sizeof src, "%s/movie.mkv", src_dir);
    write_random_file(src, 1000000, 81);
    for (int allow = 0; allow < 2; allow++) {
        int err;
        pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
        stale_receiver = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver_set_sender(stale_receiver, "bob");
        pump(s, stale_receiver, 600000, 0);
        pos_xfer_sender_del(s); /* the old receiver stays open */
        s = pos_xfer_sender_new(src, 1, &err);
        pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver_set_sender(r, "bob");
        if (allow)
            pos_xfer_receiver_set_takeover(r, take_over, NULL);
        pump(s, r, 0, 0);
        uint64_t size, offset, sent;
        pos_xfer_sender_progress(s, &size, &offset, &sent);
        CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED);
        CHECK(allow ? offset > 500000 && stale_receiver == NULL : offset == 0);
        CHECK(published_as(pos_xfer_sender_final_name(s), src));
        pos_xfer_sender_del(s);
        pos_xfer_receiver_del(r);
        pos_xfer_receiver_del(stale_receiver);
        stale_receiver = NULL;
        clear_dir(out_dir);
    }
}

/* Names that display as something else, or are not text, are refused and shown harmlessly. */
static void test_hostile_names(void)
{
    static const char *bad[] = {
        "invoice\xe2\x80\xaegpj.exe", /* U+202E RIGHT-TO-LEFT OVERRIDE */
        "a\xe2\x80\xaa"
        "b", /* U+202A */
        "a\xe2\x81\xa6"
        "b", /* U+2066 LEFT-TO-RIGHT ISOLATE */
        "a\xe2\x81\xa9"
        "b", /* U+2069 */
        "a\xe2\x80\x8f"
        "b", /* U+200F RIGHT-TO-LEFT MARK */
        "a\xd8\x9c"
        "b", /* U+061C ARABIC LETTER MARK */
        "a\xe2\x80\xa8"
        "b", /* U+2028 LINE SEPARATOR */
        "\xef\xbb\xbf"
        "bom",                  /* U+FEFF */
        "c1\xc2\x85",           /* U+0085, a C1 control */
        "esc\x1b[31m",          /* C0 */
        "over\xc0\xaflong",     /* overlong '/' */
        "over\xe0\x80\xaflong", /* overlong '/', 3 bytes */
        "sur\xed\xa0\x80",      /* a surrogate */
        "cut\xe2\x80",          /* truncated */
        "stray\x80",            /* a lone continuation byte */
        "big\xf4\x90\x80\x80",  /* beyond U+10FFFF */
        "latin1 caf\xe9",       /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!pos_xfer_name_ok(bad[i], strlen(bad[i])));
        CHECK(offer_name(bad[i], strlen(bad[i])) == POS_XFER_ERR_BAD_NAME);
    }
    CHECK(count_entries(out_dir) == 0);
    static const char *good[] = {"r\xc3\xa9sum\xc3\xa9.pdf", "\xe6\x97\xa5\xe6\x9c\xac.txt",
                                 "family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9.jpg"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK(pos_xfer_name_ok(good[i], strlen(good[i])));
    /* The refused name is printable when the listener reports it. */
    uint8_t msg[600];
    const char *name = "invoice\xe2\x80\xaegpj.exe\x1b[2J";
    size_t n_msg = make_offer(msg, name, strlen(name));
    int err;
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    CHECK(pos_xfer_receiver_input(r, msg, n_msg) == POS_XFER_ERR_BAD_NAME);
    const char *shown = pos_xfer_receiver_offered_name(r);
    CHECK(shown && strstr(shown, "\xe2\x80\xae") == NULL && strchr(shown, 0x1b) == NULL);
    CHECK(shown && strncmp(shown, "invoice", 7) == 0);
    pos_xfer_receiver_del(r);
    char text[] = "ok\x1b]0;x\x07 \xe2\x80\xae end";
    pos_xfer_text_clean(text);
    CHECK(strchr(text, 0x1b) == NULL && strchr(text, 0x07) == NULL &&
          strstr(text, "\xe2\x80\xae") == NULL && strstr(text, " end") != NULL);
}

static void set_age(const char *path, time_t age)
{
    struct timespec t[2];
    t[0].tv_sec = t[1].tv_sec = time(NULL) - age;
    t[0].tv_nsec = t[1].tv_nsec = 0;
    utimensat(AT_FDCWD, path, t, 0);
}

/* Abandoned part files expire; fresh ones, held ones and other files stay. */
static void test_sweep(void)
{
    char src[700], stale[700], fresh[700], held[700], mine[700];
    snprintf(src, sizeof src, "%s/a.bin", src_dir);
    write_random_file(src, 300000, 61);
    const char *senders[] = {"p1", "p2", "p3"};
    char *paths[] = {stale, fresh, held};
    for (int i = 0; i < 3; i++) {
        int err;
        pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
        pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
        pos_xfer_receiver_set_sender(r, senders[i]);
        pump(s, r, 100000, 0);
        pos_xfer_sender_del(s);
        pos_xfer_receiver_del(r);
        /* the new part file is the one not yet in paths */
        DIR *d = opendir(out_dir);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char p[700];
            snprintf(p, sizeof p, "%s/%s", out_dir, e->d_name);
            int known = e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
            for (int k = 0; k < i; k++)
                known |= !strcmp(p, paths[k]);
            if (!known)
                snprintf(paths[i], 700, "%s", p);
        }
        if (d)
            closedir(d);
    }
    snprintf(mine, sizeof mine, "%s/.notes.part", out_dir); /* the user's own hidden file */
    write_random_file(mine, 10, 62);
    set_age(stale, 2 * 86400);
    set_age(held, 2 * 86400);
    set_age(mine, 2 * 86400);
    int hold = open(held, O_RDWR);
    CHECK(hold >= 0 && flock(hold, LOCK_EX | LOCK_NB) == 0); /* a transfer still on it */
    unsigned removed = 0;
    CHECK(pos_xfer_sweep_parts(out_dir, 86400, &removed) == 0);
    CHECK(removed == 1);
    struct stat st;
    CHECK(stat(stale, &st) != 0 && stat(fresh, &st) == 0 && stat(held, &st) == 0);
    CHECK(stat(mine, &st) == 0);
    close(hold);
    CHECK(pos_xfer_sweep_parts(out_dir, 86400, &removed) == 0 && removed == 1);
    CHECK(pos_xfer_sweep_parts(out_dir, 0, &removed) == 0 && removed == 1); /* 0 s: all of ours */
    CHECK(count_entries(out_dir) == 1 && exists_in(out_dir, ".notes.part"));
    clear_dir(out_dir);
}

/* Refusals carry a reason the sender can act on, said once. */
static void test_refusal_reasons(void)
{
    char src[700];
    snprintf(src, sizeof src, "%s/huge.bin", src_dir);
    write_random_file(src, 3000, 71);
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 2048, &err);
    pump(s, r, 0, 0);
    const char *reason;
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_TOO_BIG);
    CHECK(strstr(reason, "2.9 KiB offered, at most 2.0 KiB") != NULL);
    CHECK(strstr(reason, "--max-file-size") != NULL);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    /* Too many transfers: the listener's refusal reaches the sender with its reason. */
    s = pos_xfer_sender_new(src, 1, &err);
    uint8_t buf[600];
    CHECK(pos_xfer_sender_output(s, buf, sizeof buf) > 0);
    size_t n = pos_xfer_refusal(buf, sizeof buf, POS_XFER_ERR_BUSY, "busy: 8 already");
    CHECK(n > 0 && pos_xfer_sender_input(s, buf, n) == POS_XFER_ERR_BUSY);
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_BUSY &&
          !strcmp(reason, "busy: 8 already"));
    pos_xfer_sender_del(s);
    CHECK(!strcmp(pos_xfer_strerror(POS_XFER_ERR_NO_SPACE), "no space left on device"));
    CHECK(count_entries(out_dir) == 0);
}

/*
 * Runs one transfer of |src| with the checksum sets |s_set| (sender) and
 * |r_set| (receiver); returns the sender (the caller frees it) and the
 * algorithm the receiver chose in |*alg|.
 */
static pos_xfer_sender *send_with(const char *src, unsigned s_set, unsigned r_set, int *alg)
{
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    pos_xfer_sender_set_hashes(s, s_set);
    pos_xfer_receiver_set_hashes(r, r_set);
    pump(s, r, 0, 0);
    *alg = pos_xfer_receiver_hash(r);
    pos_xfer_receiver_del(r);
    return s;
}

/*
 * GMAC, else SHA-256, when both sides compute it fast, else BLAKE2b; a
 * resume may change it (both sides checksum the prefix anew).
 */
static void test_checksums(void)
{
    char src[700], dst[700];
    snprintf(src, sizeof src, "%s/sums.bin", src_dir);
    snprintf(dst, sizeof dst, "%s/sums.bin", out_dir);
    write_random_file(src, 1000003, 81);
    static const struct {
        unsigned s_set, r_set;
        int alg;
    } cases[] = {
        {POS_XFER_HASH_SHA256 | POS_XFER_HASH_BLAKE2B, POS_XFER_HASH_ALL, POS_XFER_HASH_SHA256},
        {POS_XFER_HASH_SHA256, POS_XFER_HASH_SHA256, POS_XFER_HASH_SHA256},
        {POS_XFER_HASH_BLAKE2B, POS_XFER_HASH_ALL, POS_XFER_HASH_BLAKE2B},
        {POS_XFER_HASH_ALL, POS_XFER_HASH_BLAKE2B, POS_XFER_HASH_BLAKE2B},
        {POS_XFER_HASH_GMAC, POS_XFER_HASH_ALL, POS_XFER_HASH_GMAC},
        {POS_XFER_HASH_ALL, POS_XFER_HASH_SHA256, POS_XFER_HASH_SHA256},
        {POS_XFER_HASH_ALL, POS_XFER_HASH_ALL, POS_XFER_HASH_GMAC},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int alg = 0;
        pos_xfer_sender *s = send_with(src, cases[i].s_set, cases[i].r_set, &alg);
        CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED);
        CHECK(alg == cases[i].alg);
        pos_xfer_sender_del(s);
        CHECK(same_file(src, dst));
        clear_dir(out_dir);
    }
    /* Cut under the default checksum, resumed under BLAKE2b, then under GMAC. */
    uint64_t kept = interrupted(src, 400000);
    int alg = 0;
    pos_xfer_sender *s = send_with(src, POS_XFER_HASH_BLAKE2B, POS_XFER_HASH_ALL, &alg);
    uint64_t size, offset, sent;
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED && alg == POS_XFER_HASH_BLAKE2B);
    CHECK(kept > 0 && offset == kept);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);
    kept = interrupted(src, 700000);
    s = send_with(src, POS_XFER_HASH_GMAC, POS_XFER_HASH_ALL, &alg);
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED && alg == POS_XFER_HASH_GMAC);
    CHECK(kept > 0 && offset == kept);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);
    /* A damaged part file under GMAC: the prefix MACs differ, the transfer starts over. */
    kept = interrupted(src, 600000);
    char part[700];
    CHECK(find_part("sums.bin", part, sizeof part));
    FILE *f = fopen(part, "r+b");
    fseek(f, 100, SEEK_SET);
    fputc(0x55 ^ fgetc(f), f);
    fclose(f);
    s = send_with(src, POS_XFER_HASH_GMAC, POS_XFER_HASH_GMAC, &alg);
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED && alg == POS_XFER_HASH_GMAC);
    CHECK(kept > 0 && offset == 0);
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);
}

/*
 * The checksum comes last (END), after the data: a wrong one fails the
 * transfer and leaves nothing; data without END is never published (and
 * resumes to the END); a file that changes while it is sent is not
 * completed; a version-1 OFFER is refused with a reason.
 */
static void test_trailer(void)
{
    char src[700], dst[700], part[700];
    snprintf(src, sizeof src, "%s/tail.bin", src_dir);
    snprintf(dst, sizeof dst, "%s/tail.bin", out_dir);
    write_random_file(src, 200000, 91);
    int err;
    pos_xfer_sender *s = pos_xfer_sender_new(src, 1, &err);
    pos_xfer_receiver *r = pos_xfer_receiver_new(out_dir, 0, &err);
    uint64_t total = pump(s, r, 0, 0); /* the stream's length, END's 37 bytes last */
    CHECK(pos_xfer_sender_status(s) == POS_XFER_FINISHED);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    clear_dir(out_dir);

    s = pos_xfer_sender_new(src, 1, &err);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, 0, total - 3); /* a byte of END's checksum */
    CHECK(pos_xfer_sender_error(s, NULL) == POS_XFER_ERR_CHECKSUM);
    CHECK(pos_xfer_receiver_error(r) == POS_XFER_ERR_CHECKSUM);
    CHECK(count_entries(out_dir) == 0);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);

    s = pos_xfer_sender_new(src, 1, &err);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    pump(s, r, total - 37, 0); /* every byte of the file, no END */
    CHECK(pos_xfer_receiver_status(r) == POS_XFER_RUNNING);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    CHECK(!exists_in(out_dir, "tail.bin") && find_part("tail.bin", part, sizeof part));
    CHECK(send_file("tail.bin", 1, &s) == POS_XFER_FINISHED);
    uint64_t size, offset, sent;
    pos_xfer_sender_progress(s, &size, &offset, &sent);
    CHECK(offset == 200000 && sent == 200000); /* only START and END crossed */
    pos_xfer_sender_del(s);
    CHECK(same_file(src, dst));
    clear_dir(out_dir);

    /* Modified half-way: the sender fails, the receiver publishes nothing. */
    s = pos_xfer_sender_new(src, 1, &err);
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    for (int i = 0; i < 6; i++)
        step(s, r); /* OFFER, ACCEPT, START and a few 8 KiB chunks */
    int fd = open(src, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "changed", 7, 150000) == 7);
    struct timespec later[2] = {{0, UTIME_OMIT}, {time(NULL) + 5, 0}};
    CHECK(futimens(fd, later) == 0); /* a coarse clock could leave mtime as it was */
    close(fd);
    for (int i = 0; i < 100000 && step(s, r); i++)
        ;
    const char *reason = NULL;
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_IO);
    CHECK(reason && strstr(reason, "changed") != NULL);
    CHECK(pos_xfer_receiver_status(r) == POS_XFER_RUNNING);
    pos_xfer_sender_del(s);
    pos_xfer_receiver_del(r);
    CHECK(!exists_in(out_dir, "tail.bin"));
    clear_dir(out_dir);

    /* An OFFER of version 1 (the file's hash up front): refused, saying why. */
    uint8_t msg[600], back[600];
    size_t n = make_offer(msg, "old.bin", 7);
    msg[5] = 1;
    r = pos_xfer_receiver_new(out_dir, 0, &err);
    CHECK(pos_xfer_receiver_input(r, msg, n) == POS_XFER_ERR_PROTOCOL);
    int m = pos_xfer_receiver_output(r, back, sizeof back);
    CHECK(m > 9 && back[0] == 0x12 && back[6] == 2);
    back[m < (int)sizeof back ? m : (int)sizeof back - 1] = 0;
    CHECK(m > 9 && strstr((const char *)back + 9, "transfer protocol 1") != NULL);
    pos_xfer_receiver_del(r);
    CHECK(count_entries(out_dir) == 0);
    /* ... and what a version-1 receiver answers reads as such at our sender. */
    s = pos_xfer_sender_new(src, 1, &err);
    CHECK(pos_xfer_sender_output(s, msg, sizeof msg) > 0);
    n = pos_xfer_refusal(msg, sizeof msg, POS_XFER_ERR_PROTOCOL,
                         pos_xfer_strerror(POS_XFER_ERR_PROTOCOL));
    CHECK(pos_xfer_sender_input(s, msg, n) == POS_XFER_ERR_PROTOCOL);
    CHECK(pos_xfer_sender_error(s, &reason) == POS_XFER_ERR_PROTOCOL);
    CHECK(strstr(reason, "older pos-p2p") != NULL);
    pos_xfer_sender_del(s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/pos-transfer-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(root) == NULL)
        return 1;
    snprintf(src_dir, sizeof src_dir, "%s/src", root);
    snprintf(out_dir, sizeof out_dir, "%s/out", root);
    mkdir(src_dir, 0700);
    mkdir(out_dir, 0700);

    test_sizes();
    test_no_overwrite();
    test_corruption();
    test_resume();
    test_names();
    test_refusals();
    test_concurrent_same_name();
    test_resume_same_sender_only();
    test_takeover();
    test_hostile_names();
    test_sweep();
    test_refusal_reasons();
    test_checksums();
    test_trailer();

    clear_dir(src_dir);
    clear_dir(out_dir);
    rmdir(src_dir);
    rmdir(out_dir);
    char outside[700];
    snprintf(outside, sizeof outside, "%s/outside", root);
    unlink(outside);
    rmdir(root);
    return check_finish("test_transfer");
}
