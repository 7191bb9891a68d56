/*
 * Unit tests of the bounded reader and writer (common/reader.h, writer.h)
 * that every wire codec goes through: each width, big-endian order, reads
 * and writes that end exactly at the end, one byte past it, zero lengths,
 * and poisoning (a failed step stops every later one, checked once).
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "reader.h"
#include "writer.h"

static const uint8_t msg[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                              0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0xff};

static void test_widths(void)
{
    struct pos_reader r;
    pos_reader_init(&r, msg, sizeof msg);
    CHECK(pos_reader_left(&r) == 20);
    CHECK(pos_reader_u8(&r) == 0x01);
    CHECK(pos_reader_u16(&r) == 0x0203);
    CHECK(pos_reader_u32(&r) == 0x04050607u);
    CHECK(pos_reader_u64(&r) == 0x08090a0b0c0d0e0full);
    CHECK(pos_reader_offset(&r) == 15);
    CHECK(pos_reader_uint(&r, 3) == 0x101112u);
    CHECK(pos_reader_left(&r) == 2);
    /* the top bit survives: no sign extension */
    CHECK(pos_reader_u16(&r) == 0x13ff);
    CHECK(pos_reader_left(&r) == 0);
    CHECK(!pos_reader_bad(&r));
    pos_reader_init(&r, msg + 12, 8);
    CHECK(pos_reader_u64(&r) == 0x0d0e0f10111213ffull);
    CHECK(!pos_reader_bad(&r));
}

/* A read of n bytes succeeds with exactly n left and fails with n - 1. */
static void test_exact_end(void)
{
    static const size_t widths[] = {1, 2, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        size_t n = widths[i];
        struct pos_reader r;
        pos_reader_init(&r, msg, n);
        CHECK(pos_reader_uint(&r, n) != 0);
        CHECK(!pos_reader_bad(&r) && pos_reader_left(&r) == 0);
        CHECK(pos_reader_u8(&r) == 0); /* one past the end */
        CHECK(pos_reader_bad(&r));
        pos_reader_init(&r, msg, n - 1);
        CHECK(pos_reader_uint(&r, n) == 0);
        CHECK(pos_reader_bad(&r));
        CHECK(pos_reader_offset(&r) == 0); /* a failed read takes nothing */
    }
}

static void test_poisoning(void)
{
    struct pos_reader r;
    uint8_t dst[4] = {0xaa, 0xaa, 0xaa, 0xaa};
    pos_reader_init(&r, msg, 3);
    CHECK(pos_reader_u32(&r) == 0); /* too long: poisons */
    CHECK(pos_reader_bad(&r));
    /* everything after fails, even what would fit, and reports nothing left */
    CHECK(pos_reader_u8(&r) == 0);
    CHECK(pos_reader_bytes(&r, 0) == NULL);
    CHECK(pos_reader_skip(&r, 1) == -1);
    CHECK(pos_reader_copy(&r, dst, 2) == -1);
    CHECK(dst[0] == 0 && dst[1] == 0 && dst[2] == 0xaa); /* zeroed, no stale bytes */
    CHECK(pos_reader_left(&r) == 0);
    CHECK(pos_reader_bad(&r));

    /* a caller's own check poisons the same way */
    pos_reader_init(&r, msg, sizeof msg);
    pos_reader_fail(&r);
    CHECK(pos_reader_u8(&r) == 0 && pos_reader_bad(&r));

    /* a width over 8 is refused, not truncated */
    pos_reader_init(&r, msg, sizeof msg);
    CHECK(pos_reader_uint(&r, 9) == 0 && pos_reader_bad(&r));
}

static void test_bytes(void)
{
    struct pos_reader r, sub;
    uint8_t dst[3];
    pos_reader_init(&r, msg, 6);
    const uint8_t *p = pos_reader_bytes(&r, 2);
    CHECK(p == msg);
    CHECK(pos_reader_skip(&r, 1) == 0);
    CHECK(pos_reader_copy(&r, dst, 3) == 0);
    CHECK(memcmp(dst, msg + 3, 3) == 0);
    CHECK(pos_reader_left(&r) == 0 && !pos_reader_bad(&r));
    /* zero-length reads at the end succeed and point at the end */
    CHECK(pos_reader_bytes(&r, 0) == msg + 6);
    CHECK(pos_reader_skip(&r, 0) == 0);
    CHECK(pos_reader_copy(&r, dst, 0) == 0);
    CHECK(!pos_reader_bad(&r));
    CHECK(pos_reader_bytes(&r, 1) == NULL && pos_reader_bad(&r));

    /* an empty buffer, even NULL, reads zero bytes and nothing more */
    pos_reader_init(&r, NULL, 0);
    CHECK(pos_reader_left(&r) == 0);
    CHECK(pos_reader_bytes(&r, 0) != NULL && !pos_reader_bad(&r));
    CHECK(pos_reader_u8(&r) == 0 && pos_reader_bad(&r));

    /* a sub-reader ends where its length says, however much follows */
    pos_reader_init(&r, msg, 8);
    CHECK(pos_reader_skip(&r, 1) == 0);
    CHECK(pos_reader_sub(&r, 3, &sub) == 0);
    CHECK(pos_reader_left(&r) == 4 && pos_reader_u8(&r) == 0x05);
    CHECK(pos_reader_u16(&sub) == 0x0203);
    CHECK(pos_reader_u16(&sub) == 0 && pos_reader_bad(&sub));
    CHECK(!pos_reader_bad(&r)); /* the sub-reader's failure stays its own */
    CHECK(pos_reader_sub(&r, 4, &sub) == -1);
    CHECK(pos_reader_bad(&r) && pos_reader_bad(&sub) && pos_reader_left(&sub) == 0);
    pos_reader_init(&r, msg, 2);
    CHECK(pos_reader_sub(&r, 0, &sub) == 0 && pos_reader_left(&sub) == 0);
    CHECK(!pos_reader_bad(&sub) && pos_reader_left(&r) == 2);
}

static void test_writer(void)
{
    uint8_t buf[20];
    struct pos_writer w;
    static const uint8_t want[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                                   0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0xff};
    pos_writer_init(&w, buf, sizeof buf);
    CHECK(pos_writer_u8(&w, 0x01) == 0);
    CHECK(pos_writer_u16(&w, 0x0203) == 0);
    CHECK(pos_writer_u32(&w, 0x04050607u) == 0);
    CHECK(pos_writer_u64(&w, 0x08090a0b0c0d0e0full) == 0);
    CHECK(pos_writer_uint(&w, 0x101112u, 3) == 0);
    CHECK(pos_writer_bytes(&w, "\x13\xff", 2) == 0); /* exactly full */
    CHECK(pos_writer_bytes(&w, "", 0) == 0);         /* zero bytes fit a full buffer */
    CHECK(!pos_writer_bad(&w) && pos_writer_len(&w) == 20);
    CHECK(memcmp(buf, want, sizeof want) == 0);
    /* what the writer writes the reader reads back */
    struct pos_reader r;
    pos_reader_init(&r, buf, pos_writer_len(&w));
    CHECK(pos_reader_u8(&r) == 0x01 && pos_reader_u16(&r) == 0x0203);
    CHECK(pos_reader_u32(&r) == 0x04050607u && pos_reader_u64(&r) == 0x08090a0b0c0d0e0full);
    CHECK(!pos_reader_bad(&r));

    /* one byte too many: poisoned, nothing of it written, nothing after */
    CHECK(pos_writer_u8(&w, 0x77) == -1);
    CHECK(pos_writer_bad(&w) && pos_writer_len(&w) == 20);
    memset(buf, 0, sizeof buf);
    pos_writer_init(&w, buf, 5);
    CHECK(pos_writer_u32(&w, 0xaabbccddu) == 0);
    CHECK(pos_writer_u16(&w, 0x1122) == -1); /* 2 > 1 left: none of it */
    CHECK(buf[4] == 0 && pos_writer_len(&w) == 4);
    CHECK(pos_writer_u8(&w, 0x33) == -1); /* would fit, but poisoned */
    CHECK(buf[4] == 0 && pos_writer_bad(&w));
    CHECK(pos_writer_patch_u16(&w, 0, 0x5566) == -1 && buf[0] == 0xaa);

    /* a caller's own failure stops the writing too; widths over 8 are refused */
    pos_writer_init(&w, buf, sizeof buf);
    pos_writer_fail(&w);
    CHECK(pos_writer_u8(&w, 1) == -1 && pos_writer_len(&w) == 0);
    pos_writer_init(&w, buf, sizeof buf);
    CHECK(pos_writer_uint(&w, 1, 9) == -1 && pos_writer_bad(&w));

    /* patching: only bytes already written */
    pos_writer_init(&w, buf, sizeof buf);
    CHECK(pos_writer_patch_u16(&w, 0, 1) == -1); /* nothing written yet */
    pos_writer_u8(&w, 0x09);
    pos_writer_u16(&w, 0);
    pos_writer_u8(&w, 0x0a);
    CHECK(pos_writer_patch_u16(&w, 1, 0xbeef) == 0);
    CHECK(buf[0] == 0x09 && buf[1] == 0xbe && buf[2] == 0xef && buf[3] == 0x0a);
    CHECK(pos_writer_patch_u16(&w, 2, 0x1234) == 0);                    /* ends exactly at len */
    CHECK(pos_writer_patch_u16(&w, 3, 0x5678) == -1 && buf[3] == 0x34); /* one past: untouched */
    CHECK(pos_writer_len(&w) == 4 && !pos_writer_bad(&w));

    /* a zero-capacity writer takes zero bytes and nothing more */
    pos_writer_init(&w, NULL, 0);
    CHECK(pos_writer_bytes(&w, "", 0) == 0 && !pos_writer_bad(&w));
    CHECK(pos_writer_u8(&w, 1) == -1 && pos_writer_bad(&w));
}

int main(void)
{
    test_widths();
    test_exact_end();
    test_poisoning();
    test_bytes();
    test_writer();
    return check_finish("reader");
}
