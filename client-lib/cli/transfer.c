/*
 * The receiver of the file-transfer protocol (see transfer.h and
 * docs/transfer.md); the sender is transfer_send.c, the messages both use
 * transfer_wire.c. Messages are reassembled in a fixed buffer and parsed
 * through a bounded cursor; DATA bodies bypass the buffer and go to the
 * part file the transfer owns, hashed as they are written. The receiving
 * directory's files (part files, names, publication) are transfer_files.c's.
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

#include "transfer_files.h"
#include "transfer_hash.h"
#include "transfer_wire.h"

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

/* ---- receiver ---- */

enum receiver_state { R_OFFER, R_START, R_RECEIVING, R_TRAILER, R_END };

#define WB_CAP (256 * 1024) /* received bytes gathered before one write */

struct pos_xfer_receiver {
    struct pos_xfer_hash h; /* of the part file's bytes 0 .. received - wb_len */
    unsigned hashes;        /* the algorithms we may choose */
    int dirfd, part_fd;
    enum receiver_state state;
    enum pos_xfer_status status;
    int error;
    uint64_t max_size, size, offset, received, data_left;
    uint8_t id[POS_XFER_HASH_LEN]; /* the sender's id of the file: part file key */
    char name[POS_XFER_MAX_NAME + 1];
    char shown[POS_XFER_MAX_NAME + 1]; /* the offered name, printable */
    char final[POS_XFER_MAX_NAME + 16];
    char part[POS_XFER_PART_NAME_MAX];
    char sender[64];
    pos_xfer_takeover_cb takeover;
    void *takeover_arg;
    struct pos_xfer_msgbuf rd;
    uint8_t out[POS_XFER_HEADER_LEN + 4 + POS_XFER_MAX_TEXT + 64];
    size_t out_len, out_off;
    uint8_t *wb; /* received bytes not yet written (WB_CAP; one pwrite for many packets) */
    size_t wb_len;
};

pos_xfer_receiver *pos_xfer_receiver_new(const char *dir, uint64_t max_size, int *err)
{
    pos_xfer_receiver *r = calloc(1, sizeof *r);
    if (r == NULL) {
        *err = POS_XFER_ERR_NOMEM;
        return NULL;
    }
    r->part_fd = -1;
    r->hashes = pos_xfer_hash_fast();
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

void pos_xfer_receiver_set_hashes(pos_xfer_receiver *r, unsigned set)
{
    r->hashes = (set & POS_XFER_HASH_ALL) | POS_XFER_HASH_BLAKE2B;
}

int pos_xfer_receiver_hash(const pos_xfer_receiver *r)
{
    return r->h.alg;
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

/*
 * wb_flush hashes and writes the buffered bytes (they end at r->received):
 * hashing 256 KiB at once costs less than a call per QUIC packet. 0, or -1
 * with errno.
 */
static int wb_flush(pos_xfer_receiver *r)
{
    size_t n = r->wb_len;
    r->wb_len = 0;
    if (n == 0)
        return 0;
    pos_xfer_hash_update(&r->h, r->wb, n);
    return pos_xfer_write_all(r->part_fd, r->wb, n, r->received - n);
}

void pos_xfer_receiver_del(pos_xfer_receiver *r)
{
    if (r == NULL)
        return;
    if (r->part_fd >= 0 && r->status == POS_XFER_RUNNING)
        (void)wb_flush(r); /* cut short: what arrived is kept for a resume */
    free(r->wb);
    pos_xfer_hash_free(&r->h);
    if (r->part_fd >= 0)
        close(r->part_fd);
    close(r->dirfd);
    free(r);
}

/* Queues REFUSE (before ACCEPT) or DONE (after) with |code| and |text|. */
static void queue_verdict(pos_xfer_receiver *r, int code, const char *text)
{
    r->out_len = pos_xfer_put_verdict(r->out, sizeof r->out,
                                      r->state == R_OFFER ? POS_XFER_MSG_REFUSE : POS_XFER_MSG_DONE,
                                      code, text);
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

/* Starts the part file over: empty, hash reset. 0, or -1 with errno. */
static int restart_part(pos_xfer_receiver *r)
{
    r->offset = 0;
    if (pos_xfer_hash_restart(&r->h) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return ftruncate(r->part_fd, 0);
}

/*
 * Opens this transfer's own part file and finds how much of this very offer
 * it already holds: only the keyed file of the same sender and offer can.
 */
static int prepare_part(pos_xfer_receiver *r, int resume, int alg, uint8_t prefix[32])
{
    uint8_t key[POS_XFER_HASH_KEY_LEN];
    int resumable = 0;
    r->part_fd = pos_xfer_part_open(r->dirfd, r->sender, r->name, r->size, r->id, r->takeover,
                                    r->takeover_arg, r->part, &resumable);
    struct stat st;
    if (r->part_fd < 0) {
        errno = -r->part_fd;
        r->part_fd = -1;
        return -1;
    }
    if (fstat(r->part_fd, &st) != 0)
        return -1;
    randombytes_buf(key, sizeof key); /* a keyed checksum's key: this transfer's own */
    int rc = pos_xfer_hash_init(&r->h, alg, key);
    sodium_memzero(key, sizeof key);
    if (rc != 0) {
        errno = ENOMEM;
        return -1;
    }
    if (resume && resumable && (uint64_t)st.st_size <= r->size &&
        pos_xfer_hash_prefix(&r->h, r->part_fd, (uint64_t)st.st_size, prefix) == 0) {
        r->offset = (uint64_t)st.st_size;
        return 0;
    }
    if (restart_part(r) != 0)
        return -1;
    if (pos_xfer_hash_prefix(&r->h, r->part_fd, 0, prefix) != 0) { /* the digest of nothing */
        errno = ENOMEM;
        return -1;
    }
    return 0;
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

/* A version-1 sender put the whole file's hash in its OFFER; we no longer take those. */
static int refuse_version(pos_xfer_receiver *r, uint64_t version)
{
    char text[POS_XFER_MAX_TEXT];
    snprintf(text, sizeof text,
             "%s: the sender speaks transfer protocol %llu, this receiver %d "
             "(update pos-p2p on the sending side)",
             pos_xfer_strerror(POS_XFER_ERR_PROTOCOL), (unsigned long long)version,
             POS_XFER_VERSION);
    return receiver_fail_text(r, POS_XFER_ERR_PROTOCOL, text);
}

static int receiver_on_offer(pos_xfer_receiver *r, struct pos_reader *c)
{
    uint64_t version = pos_reader_u8(c);
    if (!pos_reader_bad(c) && version != POS_XFER_VERSION)
        return refuse_version(r, version);
    uint64_t flags = pos_reader_u8(c), hashes = pos_reader_u8(c);
    r->size = pos_reader_u64(c);
    pos_reader_copy(c, r->id, sizeof r->id);
    size_t n = pos_xfer_get_text(c, r->name, POS_XFER_MAX_NAME);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0) {
        r->name[0] = 0;
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    }
    snprintf(r->shown, sizeof r->shown, "%s", r->name);
    pos_xfer_text_clean(r->shown);
    if (!pos_xfer_name_ok(r->name, n))
        return receiver_fail(r, POS_XFER_ERR_BAD_NAME);
    int alg = pos_xfer_hash_pick((unsigned)hashes, r->hashes);
    if (alg == 0)
        return receiver_fail_text(r, POS_XFER_ERR_PROTOCOL,
                                  "transfer protocol error: no checksum algorithm in common");
    if (r->max_size && r->size > r->max_size) {
        char size[32], max[32], text[POS_XFER_MAX_TEXT];
        format_size(r->size, size, sizeof size);
        format_size(r->max_size, max, sizeof max);
        snprintf(text, sizeof text, "%s (%s offered, at most %s: pos-p2p listen --max-file-size)",
                 pos_xfer_strerror(POS_XFER_ERR_TOO_BIG), size, max);
        return receiver_fail_text(r, POS_XFER_ERR_TOO_BIG, text);
    }
    uint8_t prefix[POS_XFER_HASH_LEN];
    if (prepare_part(r, (flags & POS_XFER_FLAG_RESUME) != 0, alg, prefix) != 0)
        return errno == ENOSPC || errno == EDQUOT ? receiver_fail(r, POS_XFER_ERR_NO_SPACE)
               : errno == ENOMEM                  ? receiver_fail(r, POS_XFER_ERR_NOMEM)
                                                  : receiver_fail(r, POS_XFER_ERR_IO);
    if (check_space(r) != 0)
        return r->error;
    struct pos_writer w;
    pos_writer_init(&w, r->out, sizeof r->out);
    pos_xfer_put_header(&w, POS_XFER_MSG_ACCEPT, 1 + 8 + POS_XFER_HASH_LEN + POS_XFER_HASH_KEY_LEN);
    pos_writer_u8(&w, (uint8_t)alg);
    pos_writer_u64(&w, r->offset);
    pos_writer_bytes(&w, prefix, sizeof prefix);
    pos_writer_bytes(&w, r->h.key, sizeof r->h.key); /* zeros for an unkeyed checksum */
    r->out_len = pos_writer_len(&w);
    r->out_off = 0;
    r->state = R_START;
    return 0;
}

/* END: all bytes are in and the sender's checksum is here: verify, then publish. */
static int receiver_on_end(pos_xfer_receiver *r, struct pos_reader *c)
{
    uint8_t theirs[POS_XFER_HASH_LEN], digest[POS_XFER_HASH_LEN];
    pos_reader_copy(c, theirs, sizeof theirs);
    if (pos_reader_bad(c) || pos_reader_left(c) != 0)
        return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
    if (wb_flush(r) != 0)
        return receiver_write_failed(r);
    if (pos_xfer_hash_final(&r->h, digest) != 0)
        return receiver_fail(r, POS_XFER_ERR_NOMEM);
    struct stat st;
    /*
     * The digest covers the bytes this transfer wrote through its own locked
     * descriptor; the size check also catches anything that grew the file.
     */
    if (sodium_memcmp(digest, theirs, sizeof digest) != 0 || fstat(r->part_fd, &st) != 0 ||
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
        return receiver_fail(r, errno == ENOMEM ? POS_XFER_ERR_NOMEM : POS_XFER_ERR_IO);
    r->received = r->offset;
    r->state = r->received == r->size ? R_TRAILER : R_RECEIVING;
    return 0;
}

static int receiver_data(pos_xfer_receiver *r, const uint8_t *data, size_t n)
{
    if (!r->wb && !(r->wb = malloc(WB_CAP)))
        return receiver_fail(r, POS_XFER_ERR_NOMEM);
    if (r->wb_len + n > WB_CAP && wb_flush(r) != 0)
        return receiver_write_failed(r);
    if (n >= WB_CAP) { /* a piece larger than the buffer: straight to the file */
        pos_xfer_hash_update(&r->h, data, n);
        if (pos_xfer_write_all(r->part_fd, data, n, r->received) != 0)
            return receiver_write_failed(r);
    } else {
        memcpy(r->wb + r->wb_len, data, n);
        r->wb_len += n;
    }
    r->received += n;
    r->data_left -= n;
    if (r->data_left == 0 && r->received == r->size)
        r->state = R_TRAILER; /* END, with the sender's checksum, comes next */
    return 0;
}

/* One control message (not DATA) in state |r->state|. */
static int receiver_on_message(pos_xfer_receiver *r, uint8_t type, struct pos_reader *c)
{
    if (type == POS_XFER_MSG_OFFER && r->state == R_OFFER)
        return receiver_on_offer(r, c);
    if (type == POS_XFER_MSG_START && r->state == R_START)
        return receiver_on_start(r, c);
    if (type == POS_XFER_MSG_END && r->state == R_TRAILER)
        return receiver_on_end(r, c);
    return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
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
        if (!pos_xfer_fill_to(&r->rd, POS_XFER_HEADER_LEN, &data, &len))
            return 0;
        uint8_t type = r->rd.buf[0];
        size_t body = pos_xfer_body_len(&r->rd);
        if (type == POS_XFER_MSG_DATA) {
            r->rd.have = 0;
            if (r->state != R_RECEIVING || body == 0 || body > POS_XFER_CHUNK ||
                body > r->size - r->received)
                return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
            r->data_left = body;
            continue;
        }
        if (body > POS_XFER_MAX_CTRL_BODY)
            return receiver_fail(r, POS_XFER_ERR_PROTOCOL);
        if (!pos_xfer_fill_to(&r->rd, POS_XFER_HEADER_LEN + body, &data, &len))
            return 0;
        struct pos_reader c;
        pos_reader_init(&c, r->rd.buf + POS_XFER_HEADER_LEN, body);
        r->rd.have = 0;
        int rc = receiver_on_message(r, type, &c);
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
    return pos_xfer_put_verdict(buf, cap, POS_XFER_MSG_REFUSE, code < 0 ? -code : code, reason);
}

const char *pos_xfer_receiver_final_name(const pos_xfer_receiver *r)
{
    return r->status == POS_XFER_FINISHED ? r->final : NULL;
}
