/*
 * The message helpers both machines of the file-transfer protocol use
 * (transfer_wire.h): every control message is reassembled in a fixed
 * buffer and read through a bounded cursor.
 */
#include "transfer_wire.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int pos_xfer_fill_to(struct pos_xfer_msgbuf *mb, size_t want, const uint8_t **data, size_t *len)
{
    size_t n = want > mb->have ? want - mb->have : 0;
    if (n > *len)
        n = *len;
    memcpy(mb->buf + mb->have, *data, n);
    mb->have += n;
    *data += n;
    *len -= n;
    return mb->have >= want;
}

size_t pos_xfer_body_len(const struct pos_xfer_msgbuf *mb)
{
    struct pos_reader c;
    pos_reader_init(&c, mb->buf + 1, 4);
    return pos_reader_u32(&c);
}

void pos_xfer_put_header(struct pos_writer *w, uint8_t type, size_t body_len)
{
    pos_writer_u8(w, type);
    pos_writer_u32(w, (uint32_t)body_len);
}

size_t pos_xfer_get_text(struct pos_reader *c, char *dst, size_t max)
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

size_t pos_xfer_put_verdict(uint8_t *p, size_t cap, uint8_t type, int code, const char *text)
{
    struct pos_writer w;
    size_t n = strlen(text);
    if (n > POS_XFER_MAX_TEXT)
        n = POS_XFER_MAX_TEXT;
    pos_writer_init(&w, p, cap);
    pos_xfer_put_header(&w, type, 4 + n);
    pos_writer_u16(&w, (uint16_t)code);
    pos_writer_u16(&w, (uint16_t)n);
    pos_writer_bytes(&w, text, n);
    return pos_writer_bad(&w) ? 0 : pos_writer_len(&w);
}

int pos_xfer_code_from_wire(uint64_t code)
{
    return (code >= 1 && code <= 7) || code == 10 || code == 11 ? -(int)code : POS_XFER_ERR_REFUSED;
}

int pos_xfer_write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
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
