/*
 * Encoder and decoder of control messages (see ctrl.h). Decoding reads only
 * through a bounded cursor (struct cur): every read checks the bytes left,
 * and a failed read poisons the cursor so the caller checks once at the end.
 */
#include "ctrl.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "uuid.h"

/* ---- reading ---- */

struct cur {
    const uint8_t *p;
    size_t left;
    int bad;
};

static int take(struct cur *c, void *dst, size_t n)
{
    if (c->bad || c->left < n) {
        c->bad = 1;
        return -1;
    }
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return 0;
}

static uint64_t get_uint(struct cur *c, size_t n)
{
    uint8_t b[8];
    uint64_t v = 0;
    if (take(c, b, n) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | b[i];
    return v;
}

/* A string of at most |max| bytes into |dst| (max + 1 bytes), NUL-terminated. */
static size_t get_str(struct cur *c, char *dst, size_t max)
{
    size_t n = (size_t)get_uint(c, 2);
    if (c->bad || n > max) {
        c->bad = 1;
        dst[0] = 0;
        return 0;
    }
    if (take(c, dst, n) != 0) {
        dst[0] = 0;
        return 0;
    }
    dst[n] = 0;
    if (memchr(dst, 0, n)) /* no embedded NUL in any text field */
        c->bad = 1;
    return n;
}

static void get_addr(struct cur *c, char dst[POS_ADDR_STRLEN])
{
    size_t n = get_str(c, dst, POS_ADDR_STRLEN - 1);
    if (!c->bad && !pos_addr_valid(dst, n))
        c->bad = 1;
}

static void get_peer_id(struct cur *c, char dst[POS_PEER_ID_STRLEN])
{
    uint8_t key[32];
    size_t n = get_str(c, dst, POS_PEER_ID_LEN);
    if (!c->bad && pos_peer_id_parse(dst, n, key) != 0)
        c->bad = 1;
}

static void get_relay_id(struct cur *c, char dst[POS_CTRL_UUID_LEN + 1])
{
    size_t n = get_str(c, dst, POS_CTRL_UUID_LEN);
    if (!c->bad && !pos_uuid_valid(dst, n))
        c->bad = 1;
}

static void get_addrs(struct cur *c, pos_ctrl_addrs *a)
{
    uint8_t n = (uint8_t)get_uint(c, 1);
    if (n > POS_CTRL_MAX_ADDRS) {
        c->bad = 1;
        return;
    }
    for (a->n = 0; a->n < n && !c->bad; a->n++)
        get_addr(c, a->a[a->n]);
}

static void decode_body(struct cur *c, pos_ctrl_msg *m)
{
    switch (m->type) {
    case POS_CTRL_HELLO:
        m->token_len = get_str(c, m->token, POS_CTRL_MAX_TOKEN);
        get_addrs(c, &m->addrs);
        if (!c->bad && c->left > 0) {
            /* optional flags (ctrl.h): present means nonzero and known */
            m->hello_flags = (uint8_t)get_uint(c, 1);
            if (m->hello_flags == 0 || (m->hello_flags & ~POS_CTRL_HELLO_FLAGS_KNOWN))
                c->bad = 1;
        }
        break;
    case POS_CTRL_WELCOME:
        get_addr(c, m->observed);
        m->bytes_per_sec = get_uint(c, 8);
        m->burst = get_uint(c, 8);
        m->max_conns = (uint32_t)get_uint(c, 4);
        m->expires_at = get_uint(c, 8);
        m->idle_timeout_s = (uint32_t)get_uint(c, 4);
        get_relay_id(c, m->relay_id);
        break;
    case POS_CTRL_CONNECT:
        m->req_id = (uint32_t)get_uint(c, 4);
        get_peer_id(c, m->peer_id);
        break;
    case POS_CTRL_INCOMING:
        m->req_id = (uint32_t)get_uint(c, 4);
        get_peer_id(c, m->peer_id);
        get_addr(c, m->observed);
        get_addrs(c, &m->addrs);
        break;
    case POS_CTRL_ACCEPT:
        m->req_id = (uint32_t)get_uint(c, 4);
        break;
    case POS_CTRL_DECLINE:
        m->req_id = (uint32_t)get_uint(c, 4);
        m->code = (uint16_t)get_uint(c, 2);
        break;
    case POS_CTRL_CIRCUIT:
        m->req_id = (uint32_t)get_uint(c, 4);
        m->circuit_id = (uint32_t)get_uint(c, 4);
        get_peer_id(c, m->peer_id);
        get_addr(c, m->observed);
        get_addrs(c, &m->addrs);
        break;
    case POS_CTRL_REDIRECT:
        m->req_id = (uint32_t)get_uint(c, 4);
        get_relay_id(c, m->relay_id);
        get_peer_id(c, m->peer_id);
        get_addrs(c, &m->addrs);
        if (m->addrs.n == 0)
            c->bad = 1;
        break;
    case POS_CTRL_ERROR:
        m->req_id = (uint32_t)get_uint(c, 4);
        m->code = (uint16_t)get_uint(c, 2);
        get_str(c, m->text, POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_GOAWAY:
        m->code = (uint16_t)get_uint(c, 2);
        get_str(c, m->text, POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        m->circuit_id = (uint32_t)get_uint(c, 4);
        m->code = (uint16_t)get_uint(c, 2);
        break;
    default:
        c->bad = 1;
    }
}

int pos_ctrl_decode(const uint8_t *buf, size_t len, pos_ctrl_msg *out, size_t *consumed)
{
    struct cur c = {buf, len, 0};
    size_t body;
    uint8_t type;

    *consumed = 0;
    if (len < POS_CTRL_HEADER_LEN)
        return 0;
    type = (uint8_t)get_uint(&c, 1);
    body = (size_t)get_uint(&c, 2);
    if (body > POS_CTRL_MAX_BODY)
        return POS_CTRL_ERR_TOO_BIG;
    if (type < POS_CTRL_HELLO || type > POS_CTRL_CIRCUIT_CLOSED)
        return POS_CTRL_ERR_MALFORMED;
    if (c.left < body)
        return 0;
    memset(out, 0, sizeof(*out));
    out->type = type;
    c.left = body; /* the body's own cursor: fields may not run past it */
    decode_body(&c, out);
    if (c.bad || c.left != 0) {
        pos_ctrl_msg_wipe(out);
        return POS_CTRL_ERR_MALFORMED;
    }
    *consumed = POS_CTRL_HEADER_LEN + body;
    return 1;
}

/* ---- writing ---- */

struct out {
    uint8_t *p;
    size_t cap, len;
    int err;
};

static void put(struct out *o, const void *src, size_t n)
{
    if (o->err)
        return;
    if (o->cap - o->len < n) {
        o->err = POS_CTRL_ERR_TOO_BIG;
        return;
    }
    memcpy(o->p + o->len, src, n);
    o->len += n;
}

static void put_uint(struct out *o, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put(o, b, n);
}

static void put_str(struct out *o, const char *s, size_t n, size_t max)
{
    if (n > max || memchr(s, 0, n)) {
        o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        return;
    }
    put_uint(o, n, 2);
    put(o, s, n);
}

static void put_addr(struct out *o, const char *a)
{
    size_t n = strnlen(a, POS_ADDR_STRLEN);
    if (!pos_addr_valid(a, n)) {
        o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        return;
    }
    put_str(o, a, n, POS_ADDR_STRLEN - 1);
}

static void put_peer_id(struct out *o, const char *id)
{
    uint8_t key[32];
    size_t n = strnlen(id, POS_PEER_ID_STRLEN);
    if (pos_peer_id_parse(id, n, key) != 0) {
        o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        return;
    }
    put_str(o, id, n, POS_PEER_ID_LEN);
}

static void put_relay_id(struct out *o, const char *id)
{
    size_t n = strnlen(id, POS_CTRL_UUID_LEN + 1);
    if (!pos_uuid_valid(id, n)) {
        o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        return;
    }
    put_str(o, id, n, POS_CTRL_UUID_LEN);
}

static void put_addrs(struct out *o, const pos_ctrl_addrs *a)
{
    if (a->n > POS_CTRL_MAX_ADDRS) {
        o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        return;
    }
    put_uint(o, a->n, 1);
    for (size_t i = 0; i < a->n; i++)
        put_addr(o, a->a[i]);
}

static void encode_body(struct out *o, const pos_ctrl_msg *m)
{
    switch (m->type) {
    case POS_CTRL_HELLO:
        put_str(o, m->token, m->token_len, POS_CTRL_MAX_TOKEN);
        put_addrs(o, &m->addrs);
        if (m->hello_flags & ~POS_CTRL_HELLO_FLAGS_KNOWN)
            o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        else if (m->hello_flags)
            put_uint(o, m->hello_flags, 1);
        break;
    case POS_CTRL_WELCOME:
        put_addr(o, m->observed);
        put_uint(o, m->bytes_per_sec, 8);
        put_uint(o, m->burst, 8);
        put_uint(o, m->max_conns, 4);
        put_uint(o, m->expires_at, 8);
        put_uint(o, m->idle_timeout_s, 4);
        put_relay_id(o, m->relay_id);
        break;
    case POS_CTRL_CONNECT:
        put_uint(o, m->req_id, 4);
        put_peer_id(o, m->peer_id);
        break;
    case POS_CTRL_INCOMING:
        put_uint(o, m->req_id, 4);
        put_peer_id(o, m->peer_id);
        put_addr(o, m->observed);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_ACCEPT:
        put_uint(o, m->req_id, 4);
        break;
    case POS_CTRL_DECLINE:
        put_uint(o, m->req_id, 4);
        put_uint(o, m->code, 2);
        break;
    case POS_CTRL_CIRCUIT:
        put_uint(o, m->req_id, 4);
        put_uint(o, m->circuit_id, 4);
        put_peer_id(o, m->peer_id);
        put_addr(o, m->observed);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_REDIRECT:
        put_uint(o, m->req_id, 4);
        put_relay_id(o, m->relay_id);
        put_peer_id(o, m->peer_id);
        if (m->addrs.n == 0)
            o->err = o->err ? o->err : POS_CTRL_ERR_INVALID;
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_ERROR:
        put_uint(o, m->req_id, 4);
        put_uint(o, m->code, 2);
        put_str(o, m->text, strnlen(m->text, sizeof(m->text)), POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_GOAWAY:
        put_uint(o, m->code, 2);
        put_str(o, m->text, strnlen(m->text, sizeof(m->text)), POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        put_uint(o, m->circuit_id, 4);
        put_uint(o, m->code, 2);
        break;
    default:
        o->err = POS_CTRL_ERR_INVALID;
    }
}

int pos_ctrl_encode(const pos_ctrl_msg *m, uint8_t *buf, size_t cap)
{
    struct out o = {buf, cap, 0, 0};
    size_t body;

    put_uint(&o, m->type, 1);
    put_uint(&o, 0, 2); /* length, patched below */
    encode_body(&o, m);
    if (o.err)
        return o.err;
    body = o.len - POS_CTRL_HEADER_LEN;
    if (body > POS_CTRL_MAX_BODY)
        return POS_CTRL_ERR_TOO_BIG;
    buf[1] = (uint8_t)(body >> 8);
    buf[2] = (uint8_t)body;
    return (int)o.len;
}

void pos_ctrl_msg_wipe(pos_ctrl_msg *m)
{
    sodium_memzero(m, sizeof(*m));
}

/* ---- stream reassembly ---- */

int pos_ctrl_reader_feed(pos_ctrl_reader *r, const uint8_t *data, size_t len)
{
    if (len > POS_CTRL_MAX_MSG - r->len)
        return POS_CTRL_ERR_TOO_BIG;
    if (len == 0)
        return 0;
    if (!r->buf) {
        r->buf = malloc(POS_CTRL_MAX_MSG);
        if (!r->buf)
            return POS_CTRL_ERR_NOMEM;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return 0;
}

int pos_ctrl_reader_next(pos_ctrl_reader *r, pos_ctrl_msg *out)
{
    size_t used = 0;
    int rv;

    if (!r->buf)
        return 0;
    rv = pos_ctrl_decode(r->buf, r->len, out, &used);
    if (rv != 1)
        return rv;
    sodium_memzero(r->buf, used); /* may have held a token */
    memmove(r->buf, r->buf + used, r->len - used);
    r->len -= used;
    if (r->len == 0) {
        free(r->buf);
        r->buf = NULL;
    }
    return 1;
}

void pos_ctrl_reader_wipe(pos_ctrl_reader *r)
{
    if (r->buf) {
        sodium_memzero(r->buf, POS_CTRL_MAX_MSG);
        free(r->buf);
    }
    r->buf = NULL;
    r->len = 0;
}

const char *pos_ctrl_type_name(int type)
{
    static const char *const names[] = {"HELLO",  "WELCOME", "CONNECT",       "INCOMING",
                                        "ACCEPT", "DECLINE", "CIRCUIT",       "REDIRECT",
                                        "ERROR",  "GOAWAY",  "CIRCUIT_CLOSED"};
    if (type < POS_CTRL_HELLO || type > POS_CTRL_CIRCUIT_CLOSED)
        return "unknown";
    return names[type - 1];
}
