/*
 * The sender of the file-transfer protocol (transfer.h, docs/transfer.md):
 * OFFER, then on ACCEPT a check of the receiver's prefix, START, the file in
 * DATA chunks hashed as they are read, and END with the whole file's
 * checksum. Nothing is hashed before the first byte leaves but the prefix a
 * resuming receiver already holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transfer.h"
#include "transfer_files.h"
#include "transfer_hash.h"
#include "transfer_wire.h"

enum sender_state { S_OFFER, S_WAIT_ACCEPT, S_START, S_SENDING, S_TRAILER, S_WAIT_DONE, S_END };

struct pos_xfer_sender {
    int fd;
    enum sender_state state;
    enum pos_xfer_status status;
    int error;
    int resume;
    unsigned hashes; /* offered */
    uint64_t size, offset, pos;
    struct stat opened;            /* size and mtime when opened: unchanged until the last read */
    uint8_t id[POS_XFER_HASH_LEN]; /* the file's id in the OFFER (its part file's key) */
    struct pos_xfer_hash h;        /* of bytes 0 .. pos */
    char name[POS_XFER_MAX_NAME + 1];
    char text[POS_XFER_MAX_TEXT + 1]; /* peer's reason or final name */
    struct pos_xfer_msgbuf rd;
};

static void put_u64(crypto_generichash_state *h, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    crypto_generichash_update(h, be, sizeof be);
}

/*
 * The file's id: a digest of its device, inode, size and modification time,
 * so that the receiver resumes a part file only for the same, unchanged
 * file (its contents are checked by the prefix checksum, not by this).
 */
static void file_id(const struct stat *st, uint8_t id[POS_XFER_HASH_LEN])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, (const uint8_t *)"pos-transfer-file", 17, POS_XFER_HASH_LEN);
    put_u64(&h, (uint64_t)st->st_dev);
    put_u64(&h, (uint64_t)st->st_ino);
    put_u64(&h, (uint64_t)st->st_size);
    put_u64(&h, (uint64_t)st->st_mtim.tv_sec);
    put_u64(&h, (uint64_t)st->st_mtim.tv_nsec);
    crypto_generichash_final(&h, id, POS_XFER_HASH_LEN);
}

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
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    int ok = s->fd >= 0 && fstat(s->fd, &s->opened) == 0;
    if (ok && !S_ISREG(s->opened.st_mode)) {
        ok = 0;
        errno = EINVAL; /* a directory, a device: not a file of known size */
    }
    if (!ok) {
        int saved = errno;
        pos_xfer_sender_del(s);
        errno = saved;
        *err = POS_XFER_ERR_IO;
        return NULL;
    }
    s->size = (uint64_t)s->opened.st_size;
    (void)posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* read once, front to back */
    file_id(&s->opened, s->id);
    snprintf(s->name, sizeof s->name, "%s", base);
    s->resume = resume ? 1 : 0;
    s->hashes = pos_xfer_hash_fast();
    return s;
}

void pos_xfer_sender_set_hashes(pos_xfer_sender *s, unsigned set)
{
    s->hashes = (set & POS_XFER_HASH_ALL) | POS_XFER_HASH_BLAKE2B;
}

void pos_xfer_sender_del(pos_xfer_sender *s)
{
    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    pos_xfer_hash_free(&s->h);
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

static int put_offer(pos_xfer_sender *s, struct pos_writer *w)
{
    size_t n = strlen(s->name);
    pos_xfer_put_header(w, POS_XFER_MSG_OFFER, 3 + 8 + POS_XFER_HASH_LEN + 2 + n);
    pos_writer_u8(w, POS_XFER_VERSION);
    pos_writer_u8(w, s->resume ? POS_XFER_FLAG_RESUME : 0);
    pos_writer_u8(w, (uint8_t)s->hashes);
    pos_writer_u64(w, s->size);
    pos_writer_bytes(w, s->id, POS_XFER_HASH_LEN);
    pos_writer_u16(w, (uint16_t)n);
    pos_writer_bytes(w, s->name, n);
    if (pos_writer_bad(w))
        return POS_XFER_ERR_STATE;
    s->state = S_WAIT_ACCEPT;
    return (int)pos_writer_len(w);
}

/* END: the checksum of every byte read, if the file did not change while it was read. */
static int put_trailer(pos_xfer_sender *s, struct pos_writer *w)
{
    struct stat st;
    uint8_t digest[POS_XFER_HASH_LEN];
    if (fstat(s->fd, &st) != 0)
        return sender_fail(s, POS_XFER_ERR_IO, NULL);
    if (st.st_size != s->opened.st_size || st.st_mtim.tv_sec != s->opened.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != s->opened.st_mtim.tv_nsec)
        return sender_fail(s, POS_XFER_ERR_IO, "the file changed while it was sent");
    if (pos_xfer_hash_final(&s->h, digest) != 0)
        return sender_fail(s, POS_XFER_ERR_NOMEM, NULL);
    pos_xfer_put_header(w, POS_XFER_MSG_END, POS_XFER_HASH_LEN);
    pos_writer_bytes(w, digest, sizeof digest);
    s->state = S_WAIT_DONE;
    return (int)pos_writer_len(w);
}

int pos_xfer_sender_output(pos_xfer_sender *s, uint8_t *buf, size_t cap)
{
    if (s->status == POS_XFER_FAILED)
        return s->error;
    if (cap < POS_XFER_MIN_OUTPUT)
        return POS_XFER_ERR_STATE;
    struct pos_writer w;
    pos_writer_init(&w, buf, cap);
    if (s->state == S_OFFER)
        return put_offer(s, &w);
    if (s->state == S_START) {
        pos_xfer_put_header(&w, POS_XFER_MSG_START, 8);
        pos_writer_u64(&w, s->pos);
        s->state = s->pos == s->size ? S_TRAILER : S_SENDING;
        return (int)pos_writer_len(&w);
    }
    if (s->state == S_TRAILER)
        return put_trailer(s, &w);
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
    if (n < 0)
        return sender_fail(s, POS_XFER_ERR_IO, NULL);
    if (n == 0)
        return sender_fail(s, POS_XFER_ERR_IO, "the file changed while it was sent");
    pos_xfer_put_header(&w, POS_XFER_MSG_DATA, (size_t)n); /* the body is already in place */
    pos_xfer_hash_update(&s->h, buf + POS_XFER_HEADER_LEN, (size_t)n);
    s->pos += (uint64_t)n;
    if (s->pos == s->size)
        s->state = S_TRAILER;
    return POS_XFER_HEADER_LEN + (int)n;
}

/* ACCEPT: the receiver's algorithm; resume from its offset only if its prefix is ours. */
static int sender_on_accept(pos_xfer_sender *s, struct pos_reader *c)
{
    uint8_t theirs[POS_XFER_HASH_LEN], ours[POS_XFER_HASH_LEN], key[POS_XFER_HASH_KEY_LEN];
    int alg = pos_reader_u8(c);
    uint64_t offset = pos_reader_u64(c);
    pos_reader_copy(c, theirs, sizeof theirs);
    pos_reader_copy(c, key, sizeof key);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0 || offset > s->size || alg == 0 ||
        pos_xfer_hash_pick((unsigned)alg, s->hashes) != alg)
        return sender_fail(s, POS_XFER_ERR_PROTOCOL, "invalid ACCEPT from the receiver");
    int rc = pos_xfer_hash_init(&s->h, alg, key);
    sodium_memzero(key, sizeof key);
    if (rc != 0)
        return sender_fail(s, POS_XFER_ERR_NOMEM, NULL);
    if (pos_xfer_hash_prefix(&s->h, s->fd, offset, ours) != 0)
        return sender_fail(s, POS_XFER_ERR_IO, NULL);
    s->pos = sodium_memcmp(ours, theirs, sizeof ours) == 0 ? offset : 0;
    if (s->pos == 0 && offset > 0 && pos_xfer_hash_restart(&s->h) != 0)
        return sender_fail(s, POS_XFER_ERR_NOMEM, NULL);
    s->offset = s->pos;
    s->state = S_START;
    return 0;
}

/* A REFUSE with a protocol error answering our OFFER: most likely a receiver of version 1. */
static const char *refusal_text(int code, const char *text)
{
    if (code == -POS_XFER_ERR_PROTOCOL || code == POS_XFER_ERR_PROTOCOL)
        return "the receiver did not understand the offer: it may run an older pos-p2p "
               "(transfer protocol 1; this sender speaks 2)";
    return text;
}

static int sender_on_message(pos_xfer_sender *s, uint8_t type, struct pos_reader *c)
{
    if (type == POS_XFER_MSG_ACCEPT && s->state == S_WAIT_ACCEPT)
        return sender_on_accept(s, c);
    if ((type == POS_XFER_MSG_REFUSE && s->state == S_WAIT_ACCEPT) ||
        (type == POS_XFER_MSG_DONE && s->state != S_OFFER && s->state != S_WAIT_ACCEPT)) {
        char text[POS_XFER_MAX_TEXT + 1];
        uint64_t code = pos_reader_u16(c);
        pos_xfer_get_text(c, text, POS_XFER_MAX_TEXT);
        if (pos_reader_bad(c) || pos_reader_left(c) != 0)
            return sender_fail(s, POS_XFER_ERR_PROTOCOL, "invalid verdict from the receiver");
        pos_xfer_text_clean(text); /* the peer's words go to a terminal */
        if (type == POS_XFER_MSG_DONE && code == 0) {
            if (s->state != S_WAIT_DONE)
                return sender_fail(s, POS_XFER_ERR_PROTOCOL, "receiver done before the end");
            snprintf(s->text, sizeof s->text, "%s", text);
            s->status = POS_XFER_FINISHED;
            s->state = S_END;
            return 0;
        }
        int err = pos_xfer_code_from_wire(code);
        /* A version-2 receiver names the problem; version 1 says only "protocol error". */
        if (type == POS_XFER_MSG_REFUSE && !strcmp(text, pos_xfer_strerror(err)))
            return sender_fail(s, err, refusal_text(err, text));
        return sender_fail(s, err, text);
    }
    return sender_fail(s, POS_XFER_ERR_PROTOCOL, "unexpected message from the receiver");
}

int pos_xfer_sender_input(pos_xfer_sender *s, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (s->status != POS_XFER_RUNNING)
            return s->status == POS_XFER_FAILED ? s->error : POS_XFER_ERR_STATE;
        if (!pos_xfer_fill_to(&s->rd, POS_XFER_HEADER_LEN, &data, &len))
            return 0;
        size_t body = pos_xfer_body_len(&s->rd);
        if (body > POS_XFER_MAX_CTRL_BODY)
            return sender_fail(s, POS_XFER_ERR_PROTOCOL, "oversized message from the receiver");
        if (!pos_xfer_fill_to(&s->rd, POS_XFER_HEADER_LEN + body, &data, &len))
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
