/*
 * Sender and receiver of the file-transfer protocol (see transfer.h and
 * docs/transfer.md). Messages are reassembled in a fixed buffer and parsed
 * through a bounded cursor; DATA bodies bypass the buffer and go straight to
 * the part file the transfer owns. The receiving directory's files (part
 * files, names, publication) are transfer_files.c's.
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

#include "reader.h"
#include "transfer_files.h"
#include "writer.h"

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
    case 10:
        return "the receiver has too many transfers in progress";
    case 11:
        return "no space left on device";
    default:
        return "unknown error";
    }
}

/* ---- messages ---- */

/* A u16-prefixed text of at most |max| bytes into |dst| (max + 1), NUL-terminated. */
static size_t get_text(struct pos_reader *c, char *dst, size_t max)
{
    size_t n = pos_reader_u16(c);
    if (pos_reader_bad(c) || n > max || pos_reader_copy(c, dst, n) != 0) {
        pos_reader_fail(c);
        dst[0] = 0;
        return 0;
    }
    dst[n] = 0;
    if (memchr(dst, 0, n))
        pos_reader_fail(c);
    return n;
}

/* A message header: |type| and a u32 length of |body_len| bytes. */
static void put_header(struct pos_writer *w, uint8_t type, size_t body_len)
{
    pos_writer_u8(w, type);
    pos_writer_u32(w, (uint32_t)body_len);
}

/*
 * REFUSE or DONE into |p| (|cap| bytes): u16 code, u16 length, text (cut at
 * POS_XFER_MAX_TEXT). Returns the message length, or 0 when it does not fit.
 */
static size_t put_verdict(uint8_t *p, size_t cap, uint8_t type, int code, const char *text)
{
    struct pos_writer w;
    size_t n = strlen(text);
    if (n > POS_XFER_MAX_TEXT)
        n = POS_XFER_MAX_TEXT;
    pos_writer_init(&w, p, cap);
    put_header(&w, type, 4 + n);
    pos_writer_u16(&w, (uint16_t)code);
    pos_writer_u16(&w, (uint16_t)n);
    pos_writer_bytes(&w, text, n);
    return pos_writer_bad(&w) ? 0 : pos_writer_len(&w);
}

/* Reassembly of one message of at most POS_XFER_MAX_CTRL_BODY body bytes. */
struct reader {
    uint8_t buf[POS_XFER_HEADER_LEN + POS_XFER_MAX_CTRL_BODY];
    size_t have;
};

static size_t header_body_len(const struct reader *rd)
{
    struct pos_reader c;
    pos_reader_init(&c, rd->buf + 1, 4);
    return pos_reader_u32(&c);
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
    return (code >= 1 && code <= 7) || code == 10 || code == 11 ? -(int)code : POS_XFER_ERR_REFUSED;
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
    struct pos_writer w;
    pos_writer_init(&w, buf, cap);
    if (s->state == S_OFFER) {
        size_t n = strlen(s->name);
        put_header(&w, MSG_OFFER, 2 + 8 + POS_XFER_HASH_LEN + 2 + n);
        pos_writer_u8(&w, OFFER_VERSION);
        pos_writer_u8(&w, s->resume ? OFFER_FLAG_RESUME : 0);
        pos_writer_u64(&w, s->size);
        pos_writer_bytes(&w, s->hash, POS_XFER_HASH_LEN);
        pos_writer_u16(&w, (uint16_t)n);
        pos_writer_bytes(&w, s->name, n);
        if (pos_writer_bad(&w))
            return POS_XFER_ERR_STATE;
        s->state = S_WAIT_ACCEPT;
        return (int)pos_writer_len(&w);
    }
    if (s->state == S_START) {
        put_header(&w, MSG_START, 8);
        pos_writer_u64(&w, s->pos);
        s->state = s->pos == s->size ? S_WAIT_DONE : S_SENDING;
        return (int)pos_writer_len(&w);
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
    put_header(&w, MSG_DATA, (size_t)n); /* the body is already in place behind it */
    s->pos += (uint64_t)n;
    if (s->pos == s->size)
        s->state = S_WAIT_DONE;
    return POS_XFER_HEADER_LEN + (int)n;
}

/* ACCEPT: resume from the receiver's offset only if its prefix is ours. */
static int sender_on_accept(pos_xfer_sender *s, struct pos_reader *c)
{
    uint8_t theirs[POS_XFER_HASH_LEN], ours[POS_XFER_HASH_LEN];
    uint64_t offset = pos_reader_u64(c);
    pos_reader_copy(c, theirs, sizeof theirs);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0 || offset > s->size)
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

static int sender_on_message(pos_xfer_sender *s, uint8_t type, struct pos_reader *c)
{
    if (type == MSG_ACCEPT && s->state == S_WAIT_ACCEPT)
        return sender_on_accept(s, c);
    if ((type == MSG_REFUSE && s->state == S_WAIT_ACCEPT) ||
        (type == MSG_DONE && s->state != S_OFFER && s->state != S_WAIT_ACCEPT)) {
        char text[POS_XFER_MAX_TEXT + 1];
        uint64_t code = pos_reader_u16(c);
        get_text(c, text, POS_XFER_MAX_TEXT);
        if (pos_reader_bad(c) || pos_reader_left(c) != 0)
            return sender_fail(s, POS_XFER_ERR_PROTOCOL, "invalid verdict from the receiver");
        pos_xfer_text_clean(text); /* the peer's words go to a terminal */
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
        struct pos_reader c;
        pos_reader_init(&c, s->rd.buf + POS_XFER_HEADER_LEN, body);
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

#define WB_CAP (256 * 1024) /* received bytes gathered before one write */

struct pos_xfer_receiver {
    crypto_generichash_state h; /* first: needs 64-byte alignment (aligned_alloc) */
    int dirfd, part_fd;
    enum receiver_state state;
    enum pos_xfer_status status;
    int error;
    uint64_t max_size, size, offset, received, data_left;
    uint8_t hash[POS_XFER_HASH_LEN];
    char name[POS_XFER_MAX_NAME + 1];
    char shown[POS_XFER_MAX_NAME + 1]; /* the offered name, printable */
    char final[POS_XFER_MAX_NAME + 16];
    char part[POS_XFER_PART_NAME_MAX];
    char sender[64];
    pos_xfer_takeover_cb takeover;
    void *takeover_arg;
    struct reader rd;
    uint8_t out[POS_XFER_HEADER_LEN + 4 + POS_XFER_MAX_TEXT + 64];
    size_t out_len, out_off;
    uint8_t *wb; /* received bytes not yet written (WB_CAP; one pwrite for many packets) */
    size_t wb_len;
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

void pos_xfer_receiver_set_sender(pos_xfer_receiver *r, const char *peer_id)
{
    snprintf(r->sender, sizeof r->sender, "%s", peer_id ? peer_id : "");
}

void pos_xfer_receiver_set_takeover(pos_xfer_receiver *r, pos_xfer_takeover_cb cb, void *arg)
{
    r->takeover = cb;
    r->takeover_arg = arg;
}

const char *pos_xfer_receiver_part_name(const pos_xfer_receiver *r)
{
    return r->part_fd >= 0 ? r->part : NULL;
}

/* wb_flush writes the buffered bytes (they end at r->received); 0, or -1 with errno. */
static int wb_flush(pos_xfer_receiver *r)
{
    size_t n = r->wb_len;
    r->wb_len = 0;
    return n ? write_all(r->part_fd, r->wb, n, r->received - n) : 0;
}

void pos_xfer_receiver_del(pos_xfer_receiver *r)
{
    if (r == NULL)
        return;
    if (r->part_fd >= 0 && r->status == POS_XFER_RUNNING)
        (void)wb_flush(r); /* cut short: what arrived is kept for a resume */
    free(r->wb);
    if (r->part_fd >= 0)
        close(r->part_fd);
    close(r->dirfd);
    free(r);
}

/* Queues REFUSE (before ACCEPT) or DONE (after) with |code| and |text|. */
static void queue_verdict(pos_xfer_receiver *r, int code, const char *text)
{
    r->out_len =
        put_verdict(r->out, sizeof r->out, r->state == R_OFFER ? MSG_REFUSE : MSG_DONE, code, text);
    r->out_off = 0;
}

/* Fails the transfer with |code|; |text| (NULL: the code's sentence) goes to the sender. */
static int receiver_fail_text(pos_xfer_receiver *r, int code, const char *text)
{
    if (r->status == POS_XFER_RUNNING) {
        r->status = POS_XFER_FAILED;
        r->error = code;
        queue_verdict(r, -code, text ? text : pos_xfer_strerror(code));
    }
    r->state = R_END;
    return code;
}

static int receiver_fail(pos_xfer_receiver *r, int code)
{
    return receiver_fail_text(r, code, NULL);
}

/* A write error: ENOSPC (or a quota) is "no space left", said once; the part file goes. */
static int receiver_write_failed(pos_xfer_receiver *r)
{
    if (errno != ENOSPC && errno != EDQUOT)
        return receiver_fail(r, POS_XFER_ERR_IO);
    /* Keeping a prefix on a full disk helps no one: free the space now. */
    unlinkat(r->dirfd, r->part, 0);
    return receiver_fail(r, POS_XFER_ERR_NO_SPACE);
}

static void format_size(uint64_t n, char *out, size_t cap)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 6)
        v /= 1024, u++;
    if (u == 0)
        snprintf(out, cap, "%llu B", (unsigned long long)n);
    else
        snprintf(out, cap, "%.1f %s", v, unit[u]);
}

/* Starts the part file over: empty, hash reset. */
static int restart_part(pos_xfer_receiver *r)
{
    r->offset = 0;
    crypto_generichash_init(&r->h, NULL, 0, POS_XFER_HASH_LEN);
    return ftruncate(r->part_fd, 0);
}

/*
 * Opens this transfer's own part file and finds how much of this very offer
 * it already holds: only the keyed file of the same sender and offer can.
 */
static int prepare_part(pos_xfer_receiver *r, int resume)
{
    int resumable = 0;
    r->part_fd = pos_xfer_part_open(r->dirfd, r->sender, r->name, r->size, r->hash, r->takeover,
                                    r->takeover_arg, r->part, &resumable);
    struct stat st;
    if (r->part_fd < 0) {
        errno = -r->part_fd;
        r->part_fd = -1;
        return -1;
    }
    if (fstat(r->part_fd, &st) != 0)
        return -1;
    crypto_generichash_init(&r->h, NULL, 0, POS_XFER_HASH_LEN);
    if (resume && resumable && (uint64_t)st.st_size <= r->size &&
        hash_prefix(r->part_fd, (uint64_t)st.st_size, &r->h) == 0) {
        r->offset = (uint64_t)st.st_size;
        return 0;
    }
    return restart_part(r);
}

/* Refuses an offer the disk cannot hold: before a byte is written, with the figures. */
static int check_space(pos_xfer_receiver *r)
{
    uint64_t avail = pos_xfer_free_space(r->dirfd);
    if (avail == UINT64_MAX || r->size - r->offset <= avail)
        return 0;
    char need[32], have[32], text[POS_XFER_MAX_TEXT];
    format_size(r->size - r->offset, need, sizeof need);
    format_size(avail, have, sizeof have);
    snprintf(text, sizeof text, "%s (%s to receive, %s free)",
             pos_xfer_strerror(POS_XFER_ERR_NO_SPACE), need, have);
    if (r->offset == 0) /* nothing worth keeping */
        unlinkat(r->dirfd, r->part, 0);
    return receiver_fail_text(r, POS_XFER_ERR_NO_SPACE, text);
}

static int receiver_on_offer(pos_xfer_receiver *r, struct pos_reader *c)
{
    uint64_t version = pos_reader_u8(c), flags = pos_reader_u8(c);
    r->size = pos_reader_u64(c);
    pos_reader_copy(c, r->hash, sizeof r->hash);
    size_t n = get_text(c, r->name, POS_XFER_MAX_NAME);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0 || version != OFFER_VERSION) {
        r->name[0] = 0;
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    }
    snprintf(r->shown, sizeof r->shown, "%s", r->name);
    pos_xfer_text_clean(r->shown);
    if (!pos_xfer_name_ok(r->name, n))
        return receiver_fail(r, POS_XFER_ERR_BAD_NAME);
    if (r->max_size && r->size > r->max_size) {
        char size[32], max[32], text[POS_XFER_MAX_TEXT];
        format_size(r->size, size, sizeof size);
        format_size(r->max_size, max, sizeof max);
        snprintf(text, sizeof text, "%s (%s offered, at most %s: pos-p2p listen --max-file-size)",
                 pos_xfer_strerror(POS_XFER_ERR_TOO_BIG), size, max);
        return receiver_fail_text(r, POS_XFER_ERR_TOO_BIG, text);
    }
    if (prepare_part(r, (flags & OFFER_FLAG_RESUME) != 0) != 0)
        return errno == ENOSPC || errno == EDQUOT ? receiver_fail(r, POS_XFER_ERR_NO_SPACE)
                                                  : receiver_fail(r, POS_XFER_ERR_IO);
    if (check_space(r) != 0)
        return r->error;
    crypto_generichash_state copy = r->h; /* the digest of the prefix; r->h goes on */
    uint8_t prefix[POS_XFER_HASH_LEN];
    crypto_generichash_final(&copy, prefix, sizeof prefix);
    struct pos_writer w;
    pos_writer_init(&w, r->out, sizeof r->out);
    put_header(&w, MSG_ACCEPT, 8 + POS_XFER_HASH_LEN);
    pos_writer_u64(&w, r->offset);
    pos_writer_bytes(&w, prefix, sizeof prefix);
    r->out_len = pos_writer_len(&w);
    r->out_off = 0;
    r->state = R_START;
    return 0;
}

/* All bytes are in: verify, then publish under the final name. */
static int receiver_finish(pos_xfer_receiver *r)
{
    uint8_t digest[POS_XFER_HASH_LEN];
    if (wb_flush(r) != 0)
        return receiver_write_failed(r);
    crypto_generichash_final(&r->h, digest, sizeof digest);
    struct stat st;
    /*
     * The digest covers the bytes this transfer wrote through its own locked
     * descriptor; the size check also catches anything that grew the file.
     */
    if (sodium_memcmp(digest, r->hash, sizeof digest) != 0 || fstat(r->part_fd, &st) != 0 ||
        (uint64_t)st.st_size != r->size) {
        /* Not resumable: the prefix is wrong somewhere. Leave nothing behind. */
        unlinkat(r->dirfd, r->part, 0);
        return receiver_fail(r, POS_XFER_ERR_CHECKSUM);
    }
    if (fsync(r->part_fd) != 0)
        return receiver_write_failed(r);
    int rc = pos_xfer_publish(r->dirfd, r->part, r->name, r->final, sizeof r->final);
    if (rc != 0)
        return receiver_fail(r, rc);
    close(r->part_fd);
    r->part_fd = -1;
    fsync(r->dirfd);
    queue_verdict(r, 0, r->final);
    r->status = POS_XFER_FINISHED;
    r->state = R_END;
    return 0;
}

static int receiver_on_start(pos_xfer_receiver *r, struct pos_reader *c)
{
    uint64_t offset = pos_reader_u64(c);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0 || (offset != r->offset && offset != 0))
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    if (offset != r->offset && restart_part(r) != 0) /* the sender found our prefix wrong */
        return receiver_fail(r, POS_XFER_ERR_IO);
    r->received = r->offset;
    r->state = R_RECEIVING;
    return r->received == r->size ? receiver_finish(r) : 0;
}

static int receiver_data(pos_xfer_receiver *r, const uint8_t *data, size_t n)
{
    if (!r->wb && !(r->wb = malloc(WB_CAP)))
        return receiver_fail(r, POS_XFER_ERR_NOMEM);
    if (r->wb_len + n > WB_CAP && wb_flush(r) != 0)
        return receiver_write_failed(r);
    if (n >= WB_CAP) { /* a piece larger than the buffer: straight to the file */
        if (write_all(r->part_fd, data, n, r->received) != 0)
            return receiver_write_failed(r);
    } else {
        memcpy(r->wb + r->wb_len, data, n);
        r->wb_len += n;
    }
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
        struct pos_reader c;
        pos_reader_init(&c, r->rd.buf + POS_XFER_HEADER_LEN, body);
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
    return r->shown;
}

size_t pos_xfer_refusal(uint8_t *buf, size_t cap, int code, const char *reason)
{
    if (cap < POS_XFER_HEADER_LEN + 4 + POS_XFER_MAX_TEXT)
        return 0;
    return put_verdict(buf, cap, MSG_REFUSE, code < 0 ? -code : code, reason);
}

const char *pos_xfer_receiver_final_name(const pos_xfer_receiver *r)
{
    return r->status == POS_XFER_FINISHED ? r->final : NULL;
}
