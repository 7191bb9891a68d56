/*
 * Codec of relay data frames (see frame.h and docs/data-plane.md). The
 * decoder reads only through the bounded reader (reader.h): every read
 * checks the bytes left and a failed read poisons the reader, so the
 * decoder checks once at the end; the encoders write through writer.h. It runs once per relayed
 * packet, so it stays small and allocation-free.
 */
#include "frame.h"

#include <string.h>

#include "reader.h"
#include "writer.h"

static int is_probe_type(int type)
{
    return type == POS_FRAME_KEEPALIVE || type == POS_FRAME_KEEPALIVE_ACK ||
           type == POS_FRAME_PUNCH || type == POS_FRAME_PUNCH_ACK;
}

int pos_frame_decode(const uint8_t *buf, size_t len, pos_frame *out)
{
    struct pos_reader r;
    pos_reader_init(&r, buf, len);
    memset(out, 0, sizeof *out);
    if (!pos_frame_is_frame(buf, len))
        return POS_FRAME_ERR_NOT_FRAME;
    uint8_t type = pos_reader_u8(&r);
    if (type != POS_FRAME_DATA && !is_probe_type(type))
        return POS_FRAME_ERR_UNKNOWN_TYPE;
    uint32_t id = pos_reader_u32(&r);
    uint64_t cookie = 0;
    const uint8_t *payload = NULL;
    size_t payload_len = pos_reader_left(&r);
    if (type == POS_FRAME_DATA) {
        if (payload_len == 0 || payload_len > POS_FRAME_MAX_PAYLOAD)
            pos_reader_fail(&r);
        payload = pos_reader_bytes(&r, payload_len);
    } else {
        cookie = pos_reader_u64(&r);
        if (pos_reader_left(&r) != 0) /* exact length: one encoding per probe */
            pos_reader_fail(&r);
    }
    if (pos_reader_bad(&r) || id == 0)
        return POS_FRAME_ERR_MALFORMED;
    out->type = type;
    out->circuit_id = id;
    out->cookie = cookie;
    if (type == POS_FRAME_DATA) {
        out->payload = payload;
        out->payload_len = payload_len;
    }
    return 0;
}

/* Starts |w| on |buf| (|cap| bytes) with the header every frame opens with. */
static void put_header(struct pos_writer *w, uint8_t *buf, size_t cap, uint8_t type,
                       uint32_t circuit_id)
{
    pos_writer_init(w, buf, cap);
    pos_writer_u8(w, type);
    pos_writer_u32(w, circuit_id);
}

int pos_frame_encode_data(uint8_t *buf, size_t cap, uint32_t circuit_id, const uint8_t *payload,
                          size_t payload_len)
{
    if (circuit_id == 0 || payload_len == 0 || payload_len > POS_FRAME_MAX_PAYLOAD)
        return POS_FRAME_ERR_INVALID;
    if (cap < POS_FRAME_HEADER_LEN + payload_len)
        return POS_FRAME_ERR_NOBUF;
    if (payload != buf + POS_FRAME_HEADER_LEN)
        memmove(buf + POS_FRAME_HEADER_LEN, payload, payload_len);
    struct pos_writer w;
    put_header(&w, buf, POS_FRAME_HEADER_LEN, POS_FRAME_DATA, circuit_id);
    return (int)(POS_FRAME_HEADER_LEN + payload_len);
}

int pos_frame_encode_probe(uint8_t *buf, size_t cap, uint8_t type, uint32_t circuit_id,
                           uint64_t cookie)
{
    if (!is_probe_type(type) || circuit_id == 0)
        return POS_FRAME_ERR_INVALID;
    if (cap < POS_FRAME_PROBE_LEN)
        return POS_FRAME_ERR_NOBUF;
    struct pos_writer w;
    put_header(&w, buf, POS_FRAME_PROBE_LEN, type, circuit_id);
    pos_writer_u64(&w, cookie);
    return (int)pos_writer_len(&w);
}

const char *pos_frame_type_name(int type)
{
    switch (type) {
    case POS_FRAME_DATA:
        return "DATA";
    case POS_FRAME_KEEPALIVE:
        return "KEEPALIVE";
    case POS_FRAME_KEEPALIVE_ACK:
        return "KEEPALIVE_ACK";
    case POS_FRAME_PUNCH:
        return "PUNCH";
    case POS_FRAME_PUNCH_ACK:
        return "PUNCH_ACK";
    default:
        return "unknown";
    }
}

const char *pos_frame_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case POS_FRAME_ERR_NOT_FRAME:
        return "not a relay data frame (QUIC packet or empty datagram)";
    case POS_FRAME_ERR_UNKNOWN_TYPE:
        return "relay data frame of unknown type";
    case POS_FRAME_ERR_MALFORMED:
        return "malformed relay data frame";
    case POS_FRAME_ERR_NOBUF:
        return "buffer too small for the frame";
    case POS_FRAME_ERR_INVALID:
        return "invalid frame field";
    default:
        return "unknown error";
    }
}
