/*
 * The bounded writer the wire encoders use, the counterpart of reader.h: it
 * appends to a buffer of fixed capacity the caller owns, every write checks
 * the room left, and a write that does not fit poisons the writer (nothing
 * of it is written, nor anything after), so the caller checks
 * pos_writer_bad() once at the end. Integers are big-endian. Header-only,
 * like reader.h, for the per-packet frame encoder.
 */
#ifndef POS_WRITER_H
#define POS_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct pos_writer {
    uint8_t *buf; /* the caller's; |cap| bytes */
    size_t cap;
    size_t len; /* bytes written; len <= cap */
    int bad;    /* set by a write that did not fit; stays set */
};

/* Starts writing at |buf|, which has room for |cap| bytes. */
static inline void pos_writer_init(struct pos_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
    w->bad = 0;
}

/* Nonzero once any write did not fit or pos_writer_fail() was called. */
static inline int pos_writer_bad(const struct pos_writer *w)
{
    return w->bad;
}

/* Poisons |w|: a caller's own check failed; later writes do nothing. */
static inline void pos_writer_fail(struct pos_writer *w)
{
    w->bad = 1;
}

/* Bytes written so far (the message length once the writer is not bad). */
static inline size_t pos_writer_len(const struct pos_writer *w)
{
    return w->len;
}

/* Appends |n| bytes from |src|. Returns 0, or -1 (and poisons |w|) when they do not fit. */
static inline int pos_writer_bytes(struct pos_writer *w, const void *src, size_t n)
{
    if (w->bad || w->cap - w->len < n) {
        w->bad = 1;
        return -1;
    }
    if (n)
        memcpy(w->buf + w->len, src, n);
    w->len += n;
    return 0;
}

/*
 * Appends |v| as |n| (0 to 8) big-endian bytes. Returns 0, or -1 (and
 * poisons |w|) when they do not fit or |n| is over 8.
 */
static inline int pos_writer_uint(struct pos_writer *w, uint64_t v, size_t n)
{
    uint8_t b[8];
    if (n > sizeof b) {
        w->bad = 1;
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return pos_writer_bytes(w, b, n);
}

/* pos_writer_uint at the fixed widths: 0, or -1 (and |w| poisoned) when they do not fit. */
static inline int pos_writer_u8(struct pos_writer *w, uint8_t v)
{
    return pos_writer_uint(w, v, 1);
}

static inline int pos_writer_u16(struct pos_writer *w, uint16_t v)
{
    return pos_writer_uint(w, v, 2);
}

static inline int pos_writer_u32(struct pos_writer *w, uint32_t v)
{
    return pos_writer_uint(w, v, 4);
}

static inline int pos_writer_u64(struct pos_writer *w, uint64_t v)
{
    return pos_writer_uint(w, v, 8);
}

/*
 * Overwrites the two bytes at |offset| (already written) with |v|, for a
 * length known only after the body. Returns 0, or -1 when |w| is poisoned
 * or those bytes were not written yet; then nothing changes.
 */
static inline int pos_writer_patch_u16(struct pos_writer *w, size_t offset, uint16_t v)
{
    if (w->bad || w->len < 2 || offset > w->len - 2)
        return -1;
    w->buf[offset] = (uint8_t)(v >> 8);
    w->buf[offset + 1] = (uint8_t)v;
    return 0;
}

#endif
