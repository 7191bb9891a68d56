/*
 * Sender and receiver of the file-transfer protocol (see transfer.h and
 * docs/transfer.md). Messages are reassembled in a fixed buffer and parsed
 * through a bounded cursor; DATA bodies bypass the buffer and go straight to
 * the part file. Files in the receiver's directory are reached only relative
 * to its descriptor, never following symbolic links, and the final rename
 * never replaces an existing file.
 */
#include "transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum msg_type {
    MSG_OFFER = 0x01,  /* u8 version, u8 flags, u64 size, hash[32], u16 name length, name */
    MSG_START = 0x02,  /* u64 offset */
    MSG_DATA = 0x03,   /* file bytes (1 .. POS_XFER_CHUNK) */
    MSG_ACCEPT = 0x11, /* u64 offset, hash[32] of the prefix */
    MSG_REFUSE = 0x12, /* u16 code, u16 length, reason */
    MSG_DONE = 0x13,   /* u16 code (0 = stored), u16 length, final name or reason */
};

#define OFFER_VERSION 1
#define OFFER_FLAG_RESUME 0x01
#define STATE_MAGIC "pos-transfer 1"
#define IO_BLOCK (64 * 1024)

const char *pos_xfer_strerror(int code)
{
    switch (code < 0 ? -code : code) {
    case 0:
        return "success";
    case 1:
        return "file input/output error";
    case 2:
        return "transfer protocol error";
    case 3:
        return "file name not acceptable (path, hidden file or control characters)";
    case 4:
        return "file larger than the receiver accepts";
    case 5:
        return "checksum mismatch: the received file differs from the sent one";
    case 6:
        return "the receiver refused the file";
    case 7:
        return "no free name for the file in the receiving directory";
    case 8:
        return "out of memory";
    case 9:
        return "not valid in this state of the transfer";
    default:
        return "unknown error";
    }
}

int pos_xfer_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > POS_XFER_MAX_NAME || name[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return 0;
    }
    return 1;
}

/* ---- messages ---- */

struct cur {
    const uint8_t *p;
    size_t left;
    int bad;
};

static uint64_t get_uint(struct cur *c, size_t n)
{
    uint64_t v = 0;
    if (c->bad || c->left < n) {
        c->bad = 1;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | c->p[i];
    c->p += n;
    c->left -= n;
    return v;
}

static void get_bytes(struct cur *c, void *dst, size_t n)
{
    if (c->bad || c->left < n) {
        c->bad = 1;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
}

/* A u16-prefixed text of at most |max| bytes into |dst| (max + 1), NUL-terminated. */
static size_t get_text(struct cur *c, char *dst, size_t max)
{
    size_t n = (size_t)get_uint(c, 2);
    if (c->bad || n > max || n > c->left) {
        c->bad = 1;
        dst[0] = 0;
        return 0;
    }
    get_bytes(c, dst, n);
    dst[n] = 0;
    if (memchr(dst, 0, n))
        c->bad = 1;
    return n;
}

static uint8_t *put_uint(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return p + n;
}

/* Writes a message header for |body_len| bytes of |type|; returns where the body goes. */
static uint8_t *put_header(uint8_t *p, uint8_t type, size_t body_len)
{
    p[0] = type;
    return put_uint(p + 1, body_len, 4);
}

/* REFUSE or DONE: u16 code, u16 length, text. Returns the message length. */
static size_t put_verdict(uint8_t *p, uint8_t type, int code, const char *text)
{
    size_t n = strlen(text);
    if (n > POS_XFER_MAX_TEXT)
        n = POS_XFER_MAX_TEXT;
    uint8_t *b = put_header(p, type, 4 + n);
    b = put_uint(b, (uint64_t)code, 2);
    b = put_uint(b, n, 2);
    memcpy(b, text, n);
    return POS_XFER_HEADER_LEN + 4 + n;
}

/* Reassembly of one message of at most POS_XFER_MAX_CTRL_BODY body bytes. */
struct reader {
    uint8_t buf[POS_XFER_HEADER_LEN + POS_XFER_MAX_CTRL_BODY];
    size_t have;
};

static size_t header_body_len(const struct reader *rd)
{
    struct cur c = {rd->buf + 1, 4, 0};
    return (size_t)get_uint(&c, 4);
}

/* Moves bytes from |*data| into |rd| until it holds |want| bytes; 1 when it does. */
static int fill_to(struct reader *rd, size_t want, const uint8_t **data, size_t *len)
{
    size_t n = want > rd->have ? want - rd->have : 0;
    if (n > *len)
        n = *len;
    memcpy(rd->buf + rd->have, *data, n);
    rd->have += n;
    *data += n;
    *len -= n;
    return rd->have >= want;
}

static int code_from_wire(uint64_t code)
{
    return code >= 1 && code <= 7 ? -(int)code : POS_XFER_ERR_REFUSED;
}

/* ---- file helpers ---- */

/* Hashes the first |len| bytes of |fd| into |st| (already initialised). Returns 0 or -1. */
static int hash_prefix(int fd, uint64_t len, crypto_generichash_state *st)
{
    static _Thread_local uint8_t block[IO_BLOCK];
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < IO_BLOCK ? (size_t)(len - off) : IO_BLOCK;
        ssize_t n = pread(fd, block, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        crypto_generichash_update(st, block, (size_t)n);
        off += (uint64_t)n;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* ---- sender ---- */

enum sender_state { S_OFFER, S_WAIT_ACCEPT, S_START, S_SENDING, S_WAIT_DONE, S_END };

struct pos_xfer_sender {
    int fd;
    enum sender_state state;
    enum pos_xfer_status status;
    int error;
    int resume;
    uint64_t size, offset, pos;
    uint8_t hash[POS_XFER_HASH_LEN];
    char name[POS_XFER_MAX_NAME + 1];
    char text[POS_XFER_MAX_TEXT + 1]; /* peer's reason or final name */
    struct reader rd;
};

pos_xfer_sender *pos_xfer_sender_new(const char *path, int resume, int *err)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!pos_xfer_name_ok(base, strlen(base))) {
        *err = POS_XFER_ERR_BAD_NAME;
        return NULL;
    }
    pos_xfer_sender *s = calloc(1, sizeof *s);
    if (s == NULL) {
        *err = POS_XFER_ERR_NOMEM;
        return NULL;
    }
    struct stat st;
    crypto_generichash_state h;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto io_error;
    s->size = (uint64_t)st.st_size;
    crypto_generichash_init(&h, NULL, 0, POS_XFER_HASH_LEN);
    if (hash_prefix(s->fd, s->size, &h) != 0)
        goto io_error;
    crypto_generichash_final(&h, s->hash, POS_XFER_HASH_LEN);
    snprintf(s->name, sizeof s->name, "%s", base);
    s->resume = resume ? 1 : 0;
    return s;
io_error : {
    int saved = errno;
    pos_xfer_sender_del(s);
    errno = saved;
    *err = POS_XFER_ERR_IO;
    return NULL;
}
}

void pos_xfer_sender_del(pos_xfer_sender *s)
{
    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static int sender_fail(pos_xfer_sender *s, int code, const char *reason)
{
    if (s->status == POS_XFER_RUNNING) {
        s->status = POS_XFER_FAILED;
        s->error = code;
        snprintf(s->text, sizeof s->text, "%s", reason ? reason : pos_xfer_strerror(code));
    }
    s->state = S_END;
    return code;
}

int pos_xfer_sender_output(pos_xfer_sender *s, uint8_t *buf, size_t cap)
{
    if (s->status == POS_XFER_FAILED)
        return s->error;
    if (cap < POS_XFER_MIN_OUTPUT)
        return POS_XFER_ERR_STATE;
    if (s->state == S_OFFER) {
        size_t n = strlen(s->name);
        uint8_t *b = put_header(buf, MSG_OFFER, 2 + 8 + POS_XFER_HASH_LEN + 2 + n);
        if (POS_XFER_HEADER_LEN + 44 + n > cap)
            return POS_XFER_ERR_STATE;
        *b++ = OFFER_VERSION;
        *b++ = s->resume ? OFFER_FLAG_RESUME : 0;
        b = put_uint(b, s->size, 8);
        memcpy(b, s->hash, POS_XFER_HASH_LEN);
        b = put_uint(b + POS_XFER_HASH_LEN, n, 2);
        memcpy(b, s->name, n);
        s->state = S_WAIT_ACCEPT;
        return (int)(b + n - buf);
    }
    if (s->state == S_START) {
        put_uint(put_header(buf, MSG_START, 8), s->pos, 8);
        s->state = s->pos == s->size ? S_WAIT_DONE : S_SENDING;
        return POS_XFER_HEADER_LEN + 8;
    }
    if (s->state != S_SENDING)
        return 0;
    size_t chunk = cap - POS_XFER_HEADER_LEN;
    if (chunk > POS_XFER_CHUNK)
        chunk = POS_XFER_CHUNK;
    if (chunk > s->size - s->pos)
        chunk = (size_t)(s->size - s->pos);
    ssize_t n;
    do
        n = pread(s->fd, buf + POS_XFER_HEADER_LEN, chunk, (off_t)s->pos);
    while (n < 0 && errno == EINTR);
    if (n <= 0) /* error, or the file shrank under us */
        return sender_fail(s, POS_XFER_ERR_IO, NULL);
    put_header(buf, MSG_DATA, (size_t)n);
    s->pos += (uint64_t)n;
    if (s->pos == s->size)
        s->state = S_WAIT_DONE;
    return POS_XFER_HEADER_LEN + (int)n;
}

/* ACCEPT: resume from the receiver's offset only if its prefix is ours. */
static int sender_on_accept(pos_xfer_sender *s, struct cur *c)
{
    uint8_t theirs[POS_XFER_HASH_LEN], ours[POS_XFER_HASH_LEN];
    uint64_t offset = get_uint(c, 8);
    get_bytes(c, theirs, sizeof theirs);
    if (c->bad || c->left != 0 || offset > s->size)
        return sender_fail(s, POS_XFER_ERR_PROTOCOL, "invalid ACCEPT from the receiver");
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, POS_XFER_HASH_LEN);
    if (hash_prefix(s->fd, offset, &h) != 0)
        return sender_fail(s, POS_XFER_ERR_IO, NULL);
    crypto_generichash_final(&h, ours, sizeof ours);
    s->pos = sodium_memcmp(ours, theirs, sizeof ours) == 0 ? offset : 0;
    s->offset = s->pos;
    s->state = S_START;
    return 0;
}

static int sender_on_message(pos_xfer_sender *s, uint8_t type, struct cur *c)
{
    if (type == MSG_ACCEPT && s->state == S_WAIT_ACCEPT)
        return sender_on_accept(s, c);
    if ((type == MSG_REFUSE && s->state == S_WAIT_ACCEPT) ||
        (type == MSG_DONE && s->state != S_OFFER && s->state != S_WAIT_ACCEPT)) {
        char text[POS_XFER_MAX_TEXT + 1];
        uint64_t code = get_uint(c, 2);
        get_text(c, text, POS_XFER_MAX_TEXT);
        if (c->bad || c->left != 0)
            return sender_fail(s, POS_XFER_ERR_PROTOCOL, "invalid verdict from the receiver");
        if (type == MSG_DONE && code == 0) {
            if (s->state != S_WAIT_DONE)
                return sender_fail(s, POS_XFER_ERR_PROTOCOL, "receiver done before the end");
            snprintf(s->text, sizeof s->text, "%s", text);
            s->status = POS_XFER_FINISHED;
            s->state = S_END;
            return 0;
        }
        return sender_fail(s, code_from_wire(code), text);
    }
    return sender_fail(s, POS_XFER_ERR_PROTOCOL, "unexpected message from the receiver");
}

int pos_xfer_sender_input(pos_xfer_sender *s, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (s->status != POS_XFER_RUNNING)
            return s->status == POS_XFER_FAILED ? s->error : POS_XFER_ERR_STATE;
        if (!fill_to(&s->rd, POS_XFER_HEADER_LEN, &data, &len))
            return 0;
        size_t body = header_body_len(&s->rd);
        if (body > POS_XFER_MAX_CTRL_BODY)
            return sender_fail(s, POS_XFER_ERR_PROTOCOL, "oversized message from the receiver");
        if (!fill_to(&s->rd, POS_XFER_HEADER_LEN + body, &data, &len))
            return 0;
        struct cur c = {s->rd.buf + POS_XFER_HEADER_LEN, body, 0};
        s->rd.have = 0;
        int rc = sender_on_message(s, s->rd.buf[0], &c);
        if (rc != 0)
            return rc;
    }
    return 0;
}

enum pos_xfer_status pos_xfer_sender_status(const pos_xfer_sender *s)
{
    return s->status;
}

int pos_xfer_sender_error(const pos_xfer_sender *s, const char **reason)
{
    if (reason)
        *reason = s->status == POS_XFER_FAILED ? s->text : "";
    return s->error;
}

void pos_xfer_sender_progress(const pos_xfer_sender *s, uint64_t *size, uint64_t *offset,
                              uint64_t *sent)
{
    *size = s->size;
    *offset = s->offset;
    *sent = s->pos;
}

const char *pos_xfer_sender_final_name(const pos_xfer_sender *s)
{
    return s->status == POS_XFER_FINISHED ? s->text : NULL;
}

/* ---- receiver ---- */

enum receiver_state { R_OFFER, R_START, R_RECEIVING, R_END };

struct pos_xfer_receiver {
    crypto_generichash_state h; /* first: needs 64-byte alignment (aligned_alloc) */
    int dirfd, part_fd;
    enum receiver_state state;
    enum pos_xfer_status status;
    int error;
    uint64_t max_size, size, offset, received, data_left;
    uint8_t hash[POS_XFER_HASH_LEN];
    char name[POS_XFER_MAX_NAME + 1];
    char final[POS_XFER_MAX_NAME + 16];
    char part[POS_XFER_MAX_NAME + 8];
    char state_file[POS_XFER_MAX_NAME + 8];
    struct reader rd;
    uint8_t out[POS_XFER_HEADER_LEN + 4 + POS_XFER_MAX_TEXT + 64];
    size_t out_len, out_off;
};

pos_xfer_receiver *pos_xfer_receiver_new(const char *dir, uint64_t max_size, int *err)
{
    size_t size = (sizeof(pos_xfer_receiver) + 63) / 64 * 64;
    pos_xfer_receiver *r = aligned_alloc(64, size);
    if (r == NULL) {
        *err = POS_XFER_ERR_NOMEM;
        return NULL;
    }
    memset(r, 0, size);
    r->part_fd = -1;
    r->max_size = max_size;
    r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dirfd < 0) {
        int saved = errno;
        free(r);
        errno = saved;
        *err = POS_XFER_ERR_IO;
        return NULL;
    }
    return r;
}

void pos_xfer_receiver_del(pos_xfer_receiver *r)
{
    if (r == NULL)
        return;
    if (r->part_fd >= 0)
        close(r->part_fd);
    close(r->dirfd);
    free(r);
}

/* Queues REFUSE (before ACCEPT) or DONE (after) with |code| and |text|. */
static void queue_verdict(pos_xfer_receiver *r, int code, const char *text)
{
    r->out_len = put_verdict(r->out, r->state == R_OFFER ? MSG_REFUSE : MSG_DONE, code, text);
    r->out_off = 0;
}

static int receiver_fail(pos_xfer_receiver *r, int code)
{
    if (r->status == POS_XFER_RUNNING) {
        r->status = POS_XFER_FAILED;
        r->error = code;
        queue_verdict(r, -code, pos_xfer_strerror(code));
    }
    r->state = R_END;
    return code;
}

static void state_line(const pos_xfer_receiver *r, char *line, size_t cap)
{
    char hex[2 * POS_XFER_HASH_LEN + 1];
    sodium_bin2hex(hex, sizeof hex, r->hash, sizeof r->hash);
    snprintf(line, cap, STATE_MAGIC " %llu %s\n", (unsigned long long)r->size, hex);
}

/* Whether the sidecar state says the part file belongs to this very offer. */
static int state_matches(const pos_xfer_receiver *r)
{
    char want[128], got[128];
    state_line(r, want, sizeof want);
    int fd = openat(r->dirfd, r->state_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, got, sizeof got);
    close(fd);
    return n == (ssize_t)strlen(want) && memcmp(got, want, (size_t)n) == 0;
}

static int write_state(const pos_xfer_receiver *r)
{
    char line[128];
    state_line(r, line, sizeof line);
    int fd = openat(r->dirfd, r->state_file, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, (const uint8_t *)line, strlen(line), 0);
    return close(fd) == 0 ? rc : -1;
}

/* Starts the part file over: empty, hash reset, state written. */
static int restart_part(pos_xfer_receiver *r)
{
    r->offset = 0;
    crypto_generichash_init(&r->h, NULL, 0, POS_XFER_HASH_LEN);
    if (ftruncate(r->part_fd, 0) != 0 || write_state(r) != 0)
        return -1;
    return 0;
}

/* Opens DIR/.NAME.part and finds how much of this transfer it already holds. */
static int prepare_part(pos_xfer_receiver *r, int resume)
{
    snprintf(r->part, sizeof r->part, ".%s.part", r->name);
    snprintf(r->state_file, sizeof r->state_file, ".%s.state", r->name);
    r->part_fd = openat(r->dirfd, r->part, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    if (r->part_fd < 0 || fstat(r->part_fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    crypto_generichash_init(&r->h, NULL, 0, POS_XFER_HASH_LEN);
    if (resume && state_matches(r) && (uint64_t)st.st_size <= r->size &&
        hash_prefix(r->part_fd, (uint64_t)st.st_size, &r->h) == 0) {
        r->offset = (uint64_t)st.st_size;
        return 0;
    }
    return restart_part(r);
}

static int receiver_on_offer(pos_xfer_receiver *r, struct cur *c)
{
    uint64_t version = get_uint(c, 1), flags = get_uint(c, 1);
    r->size = get_uint(c, 8);
    get_bytes(c, r->hash, sizeof r->hash);
    size_t n = get_text(c, r->name, POS_XFER_MAX_NAME);
    if (c->bad || c->left != 0 || version != OFFER_VERSION) {
        r->name[0] = 0;
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    }
    if (!pos_xfer_name_ok(r->name, n))
        return receiver_fail(r, POS_XFER_ERR_BAD_NAME);
    if (r->max_size && r->size > r->max_size)
        return receiver_fail(r, POS_XFER_ERR_TOO_BIG);
    if (prepare_part(r, (flags & OFFER_FLAG_RESUME) != 0) != 0)
        return receiver_fail(r, POS_XFER_ERR_IO);
    crypto_generichash_state copy = r->h; /* the digest of the prefix; r->h goes on */
    uint8_t prefix[POS_XFER_HASH_LEN];
    crypto_generichash_final(&copy, prefix, sizeof prefix);
    uint8_t *b = put_header(r->out, MSG_ACCEPT, 8 + POS_XFER_HASH_LEN);
    b = put_uint(b, r->offset, 8);
    memcpy(b, prefix, sizeof prefix);
    r->out_len = POS_XFER_HEADER_LEN + 8 + POS_XFER_HASH_LEN;
    r->out_off = 0;
    r->state = R_START;
    return 0;
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

/* Renames the part file to the first free final name, never replacing a file. */
static int rename_final(pos_xfer_receiver *r)
{
    for (int k = 0; k < 100; k++) {
        candidate_name(r->name, k, r->final, sizeof r->final);
        if (renameat2(r->dirfd, r->part, r->dirfd, r->final, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno == EEXIST)
            continue;
        if (errno != EINVAL && errno != ENOSYS)
            return POS_XFER_ERR_IO;
        /* No RENAME_NOREPLACE on this file system: link() refuses an existing name too. */
        if (linkat(r->dirfd, r->part, r->dirfd, r->final, 0) == 0)
            return unlinkat(r->dirfd, r->part, 0) == 0 ? 0 : POS_XFER_ERR_IO;
        if (errno != EEXIST)
            return POS_XFER_ERR_IO;
    }
    r->final[0] = 0;
    return POS_XFER_ERR_NO_NAME;
}

/* All bytes are in: verify, then publish under the final name. */
static int receiver_finish(pos_xfer_receiver *r)
{
    uint8_t digest[POS_XFER_HASH_LEN];
    crypto_generichash_final(&r->h, digest, sizeof digest);
    if (sodium_memcmp(digest, r->hash, sizeof digest) != 0) {
        /* Not resumable: the prefix is wrong somewhere. Leave nothing behind. */
        unlinkat(r->dirfd, r->part, 0);
        unlinkat(r->dirfd, r->state_file, 0);
        return receiver_fail(r, POS_XFER_ERR_CHECKSUM);
    }
    if (fsync(r->part_fd) != 0)
        return receiver_fail(r, POS_XFER_ERR_IO);
    int rc = rename_final(r);
    if (rc != 0)
        return receiver_fail(r, rc);
    close(r->part_fd);
    r->part_fd = -1;
    unlinkat(r->dirfd, r->state_file, 0);
    fsync(r->dirfd);
    queue_verdict(r, 0, r->final);
    r->status = POS_XFER_FINISHED;
    r->state = R_END;
    return 0;
}

static int receiver_on_start(pos_xfer_receiver *r, struct cur *c)
{
    uint64_t offset = get_uint(c, 8);
    if (c->bad || c->left != 0 || (offset != r->offset && offset != 0))
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    if (offset != r->offset && restart_part(r) != 0) /* the sender found our prefix wrong */
        return receiver_fail(r, POS_XFER_ERR_IO);
    r->received = r->offset;
    r->state = R_RECEIVING;
    return r->received == r->size ? receiver_finish(r) : 0;
}

static int receiver_data(pos_xfer_receiver *r, const uint8_t *data, size_t n)
{
    if (write_all(r->part_fd, data, n, r->received) != 0)
        return receiver_fail(r, POS_XFER_ERR_IO);
    crypto_generichash_update(&r->h, data, n);
    r->received += n;
    r->data_left -= n;
    if (r->data_left == 0 && r->received == r->size)
        return receiver_finish(r);
    return 0;
}

int pos_xfer_receiver_input(pos_xfer_receiver *r, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (r->status != POS_XFER_RUNNING)
            return r->status == POS_XFER_FAILED ? r->error : POS_XFER_ERR_STATE;
        if (r->data_left > 0) {
            size_t n = len < r->data_left ? len : (size_t)r->data_left;
            int rc = receiver_data(r, data, n);
            if (rc != 0)
                return rc;
            data += n;
            len -= n;
            continue;
        }
        if (!fill_to(&r->rd, POS_XFER_HEADER_LEN, &data, &len))
            return 0;
        uint8_t type = r->rd.buf[0];
        size_t body = header_body_len(&r->rd);
        if (type == MSG_DATA) {
            r->rd.have = 0;
            if (r->state != R_RECEIVING || body == 0 || body > POS_XFER_CHUNK ||
                body > r->size - r->received)
                return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
            r->data_left = body;
            continue;
        }
        if (body > POS_XFER_MAX_CTRL_BODY)
            return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
        if (!fill_to(&r->rd, POS_XFER_HEADER_LEN + body, &data, &len))
            return 0;
        struct cur c = {r->rd.buf + POS_XFER_HEADER_LEN, body, 0};
        r->rd.have = 0;
        int rc;
        if (type == MSG_OFFER && r->state == R_OFFER)
            rc = receiver_on_offer(r, &c);
        else if (type == MSG_START && r->state == R_START)
            rc = receiver_on_start(r, &c);
        else
            rc = receiver_fail(r, POS_XFER_ERR_PROTOCOL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int pos_xfer_receiver_output(pos_xfer_receiver *r, uint8_t *buf, size_t cap)
{
    size_t n = r->out_len - r->out_off;
    if (n > cap)
        n = cap;
    memcpy(buf, r->out + r->out_off, n);
    r->out_off += n;
    if (r->out_off == r->out_len)
        r->out_len = r->out_off = 0;
    return (int)n;
}

enum pos_xfer_status pos_xfer_receiver_status(const pos_xfer_receiver *r)
{
    return r->status;
}

int pos_xfer_receiver_error(const pos_xfer_receiver *r)
{
    return r->error;
}

void pos_xfer_receiver_progress(const pos_xfer_receiver *r, uint64_t *size, uint64_t *offset,
                                uint64_t *received)
{
    *size = r->size;
    *offset = r->offset;
    *received = r->received;
}

const char *pos_xfer_receiver_offered_name(const pos_xfer_receiver *r)
{
    return r->name;
}

const char *pos_xfer_receiver_final_name(const pos_xfer_receiver *r)
{
    return r->status == POS_XFER_FINISHED ? r->final : NULL;
}
