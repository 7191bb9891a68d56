/*
 * Codec of relay data frames (see frame.h and docs/data-plane.md). The
 * decoder reads only through a bounded cursor (struct cur): every read
 * checks the bytes left and a failed read poisons the cursor, so the caller
 * checks once at the end. It runs once per relayed packet, so it stays small
 * and allocation-free.
 */
#include "frame.h"

#include <string.h>

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

static void put_uint(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static int is_probe_type(int type)
{
    return type == POS_FRAME_KEEPALIVE || type == POS_FRAME_KEEPALIVE_ACK ||
           type == POS_FRAME_PUNCH || type == POS_FRAME_PUNCH_ACK;
}

int pos_frame_decode(const uint8_t *buf, size_t len, pos_frame *out)
{
    struct cur c = {buf, len, 0};
    memset(out, 0, sizeof *out);
    if (!pos_frame_is_frame(buf, len))
        return POS_FRAME_ERR_NOT_FRAME;
    uint8_t type = (uint8_t)get_uint(&c, 1);
    if (type != POS_FRAME_DATA && !is_probe_type(type))
        return POS_FRAME_ERR_UNKNOWN_TYPE;
    uint32_t id = (uint32_t)get_uint(&c, 4);
    uint64_t cookie = 0;
    if (type == POS_FRAME_DATA) {
        if (c.left == 0 || c.left > POS_FRAME_MAX_PAYLOAD)
            c.bad = 1;
    } else {
        cookie = get_uint(&c, 8);
        if (c.left != 0) /* exact length: one encoding per probe */
            c.bad = 1;
    }
    if (c.bad || id == 0)
        return POS_FRAME_ERR_MALFORMED;
    out->type = type;
    out->circuit_id = id;
    out->cookie = cookie;
    if (type == POS_FRAME_DATA) {
        out->payload = c.p;
        out->payload_len = c.left;
    }
    return 0;
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
    buf[0] = POS_FRAME_DATA;
    put_uint(buf + 1, circuit_id, 4);
    return (int)(POS_FRAME_HEADER_LEN + payload_len);
}

int pos_frame_encode_probe(uint8_t *buf, size_t cap, uint8_t type, uint32_t circuit_id,
                           uint64_t cookie)
{
    if (!is_probe_type(type) || circuit_id == 0)
        return POS_FRAME_ERR_INVALID;
    if (cap < POS_FRAME_PROBE_LEN)
        return POS_FRAME_ERR_NOBUF;
    buf[0] = type;
    put_uint(buf + 1, circuit_id, 4);
    put_uint(buf + 5, cookie, 8);
    return POS_FRAME_PROBE_LEN;
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
