/*
 * The bounded reader every wire decoder uses (relay frames, control
 * messages, file transfers, DNS), after s2n's stuffer. It walks a byte
 * buffer it does not own: every read checks the bytes left, and a read that
 * does not fit poisons the reader, so later reads return zero and the caller
 * checks pos_reader_bad() once at the end instead of after every field.
 * Integers are big-endian (network order). Header-only: the relay decodes a
 * frame per forwarded packet, so the reads inline into their callers.
 *
 * Memory: the reader borrows |buf|; the caller keeps it alive while reading
 * and while using any pointer pos_reader_bytes() returned.
 */
#ifndef POS_READER_H
#define POS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct pos_reader {
    const uint8_t *buf; /* never NULL, so a zero-length read has a place */
    size_t len;         /* bytes in |buf| */
    size_t pos;         /* next byte to read; pos <= len */
    int bad;            /* set by a read that did not fit; stays set */
};

/*
 * Starts reading the |len| bytes at |buf| (NULL allowed when |len| is 0).
 */
static inline void pos_reader_init(struct pos_reader *r, const uint8_t *buf, size_t len)
{
    r->buf = buf ? buf : (const uint8_t *)"";
    r->len = buf ? len : 0;
    r->pos = 0;
    r->bad = 0;
}

/* Nonzero once any read did not fit or pos_reader_fail() was called. */
static inline int pos_reader_bad(const struct pos_reader *r)
{
    return r->bad;
}

/* Poisons |r|: a caller's own check failed (a bad value, not a short read). */
static inline void pos_reader_fail(struct pos_reader *r)
{
    r->bad = 1;
}

/* Bytes not yet read; 0 on a poisoned reader. */
static inline size_t pos_reader_left(const struct pos_reader *r)
{
    return r->bad ? 0 : r->len - r->pos;
}

/* Offset of the next byte from the start of the buffer. */
static inline size_t pos_reader_offset(const struct pos_reader *r)
{
    return r->pos;
}

/*
 * Takes |n| bytes: returns a pointer to them inside the buffer and moves
 * past them. Returns NULL, and poisons |r|, when fewer than |n| are left or
 * |r| is already poisoned. With |n| 0 it returns the current position.
 */
static inline const uint8_t *pos_reader_bytes(struct pos_reader *r, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->buf + r->pos;
    r->pos += n;
    return p;
}

/* Moves past |n| bytes. Returns 0, or -1 (and poisons |r|) when they are not there. */
static inline int pos_reader_skip(struct pos_reader *r, size_t n)
{
    return pos_reader_bytes(r, n) ? 0 : -1;
}

/*
 * Copies the next |n| bytes to |dst|. Returns 0, or -1 when they are not
 * there: then |r| is poisoned and |dst| is zeroed, so it holds no stale data.
 */
static inline int pos_reader_copy(struct pos_reader *r, void *dst, size_t n)
{
    const uint8_t *p = pos_reader_bytes(r, n);
    if (!p) {
        memset(dst, 0, n);
        return -1;
    }
    memcpy(dst, p, n);
    return 0;
}

/*
 * The next |n| bytes (0 to 8) as a big-endian unsigned integer; 0, and |r|
 * poisoned, when they are not there or |n| is over 8.
 */
static inline uint64_t pos_reader_uint(struct pos_reader *r, size_t n)
{
    const uint8_t *p = n <= 8 ? pos_reader_bytes(r, n) : NULL;
    uint64_t v = 0;
    if (!p) {
        r->bad = 1;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* pos_reader_uint at the fixed widths: 0, and |r| poisoned, when the bytes are not there. */
static inline uint8_t pos_reader_u8(struct pos_reader *r)
{
    return (uint8_t)pos_reader_uint(r, 1);
}

static inline uint16_t pos_reader_u16(struct pos_reader *r)
{
    return (uint16_t)pos_reader_uint(r, 2);
}

static inline uint32_t pos_reader_u32(struct pos_reader *r)
{
    return (uint32_t)pos_reader_uint(r, 4);
}

static inline uint64_t pos_reader_u64(struct pos_reader *r)
{
    return pos_reader_uint(r, 8);
}

/*
 * Takes the next |n| bytes as their own reader |sub|, so the fields of a
 * length-prefixed body cannot run past it. Returns 0, or -1 when they are
 * not there: then |r| is poisoned and |sub| is an empty, poisoned reader.
 */
static inline int pos_reader_sub(struct pos_reader *r, size_t n, struct pos_reader *sub)
{
    const uint8_t *p = pos_reader_bytes(r, n);
    pos_reader_init(sub, p, p ? n : 0);
    if (!p)
        sub->bad = 1;
    return p ? 0 : -1;
}

#endif
