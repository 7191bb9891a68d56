/*
 * Encoder and decoder of control messages (see ctrl.h). Decoding reads only
 * through the bounded reader (reader.h): every read checks the bytes left,
 * and a failed read poisons the reader so the decoder checks once at the
 * end. Encoding writes through the bounded writer (writer.h) the same way.
 */
#include "ctrl.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"
#include "uuid.h"
#include "writer.h"

/* ---- reading ---- */

/* A string of at most |max| bytes into |dst| (max + 1 bytes), NUL-terminated. */
static size_t get_str(struct pos_reader *c, char *dst, size_t max)
{
    size_t n = pos_reader_u16(c);
    if (pos_reader_bad(c) || n > max) {
        pos_reader_fail(c);
        dst[0] = 0;
        return 0;
    }
    if (pos_reader_copy(c, dst, n) != 0) {
        dst[0] = 0;
        return 0;
    }
    dst[n] = 0;
    if (memchr(dst, 0, n)) /* no embedded NUL in any text field */
        pos_reader_fail(c);
    return n;
}

static void get_addr(struct pos_reader *c, char dst[POS_ADDR_STRLEN])
{
    size_t n = get_str(c, dst, POS_ADDR_STRLEN - 1);
    if (!pos_reader_bad(c) && !pos_addr_valid(dst, n))
        pos_reader_fail(c);
}

static void get_peer_id(struct pos_reader *c, char dst[POS_PEER_ID_STRLEN])
{
    uint8_t key[32];
    size_t n = get_str(c, dst, POS_PEER_ID_LEN);
    if (!pos_reader_bad(c) && pos_peer_id_parse(dst, n, key) != 0)
        pos_reader_fail(c);
}

static void get_relay_id(struct pos_reader *c, char dst[POS_CTRL_UUID_LEN + 1])
{
    size_t n = get_str(c, dst, POS_CTRL_UUID_LEN);
    if (!pos_reader_bad(c) && !pos_uuid_valid(dst, n))
        pos_reader_fail(c);
}

static void get_addrs(struct pos_reader *c, pos_ctrl_addrs *a)
{
    uint8_t n = pos_reader_u8(c);
    if (n > POS_CTRL_MAX_ADDRS) {
        pos_reader_fail(c);
        return;
    }
    for (a->n = 0; a->n < n && !pos_reader_bad(c); a->n++)
        get_addr(c, a->a[a->n]);
}

/* A circuit id of the punch messages: 0 is never allocated (frame.h). */
static uint32_t get_circuit_id(struct pos_reader *c)
{
    uint32_t id = pos_reader_u32(c);
    if (id == 0)
        pos_reader_fail(c);
    return id;
}

static uint16_t get_attempt(struct pos_reader *c)
{
    uint16_t a = pos_reader_u16(c);
    if (a == 0)
        pos_reader_fail(c);
    return a;
}

/* The version 2 messages (hole punching; version 3: PUNCH_START's peer_nat), range-checked. */
static void decode_punch(struct pos_reader *c, pos_ctrl_msg *m, int version)
{
    switch (m->type) {
    case POS_CTRL_PUNCH_START:
        m->circuit_id = get_circuit_id(c);
        m->peer_circuit_id = get_circuit_id(c);
        pos_reader_copy(c, m->punch_key, sizeof(m->punch_key));
        m->start_in_ms = pos_reader_u32(c);
        if (m->start_in_ms > POS_PUNCH_MAX_START_IN_MS)
            pos_reader_fail(c);
        m->role = pos_reader_u8(c);
        if (m->role != POS_PUNCH_DIALER && m->role != POS_PUNCH_LISTENER)
            pos_reader_fail(c);
        m->attempt = get_attempt(c);
        get_addrs(c, &m->addrs);
        if (m->addrs.n == 0)
            pos_reader_fail(c);
        if (version >= POS_CTRL_V3 && (m->peer_nat = pos_reader_u8(c)) > POS_CTRL_NAT_VARIES)
            pos_reader_fail(c);
        break;
    case POS_CTRL_PUNCH_REQUEST:
        m->circuit_id = get_circuit_id(c);
        get_addrs(c, &m->addrs);
        break;
    case POS_CTRL_PUNCH_REPORT:
        m->circuit_id = get_circuit_id(c);
        m->attempt = get_attempt(c);
        m->outcome = pos_reader_u8(c);
        if (m->outcome < POS_CTRL_PUNCH_DIRECT || m->outcome > POS_CTRL_PUNCH_FELL_BACK)
            pos_reader_fail(c);
        m->ms_to_direct = pos_reader_u32(c);
        break;
    default:
        pos_reader_fail(c);
    }
}

/* hello_flags_ok: |f| (nonzero) has only flags |version| knows, and at most one NAT mapping. */
static int hello_flags_ok(uint8_t f, int version)
{
    unsigned known =
        version >= POS_CTRL_V3 ? POS_CTRL_HELLO_FLAGS_KNOWN_V3 : POS_CTRL_HELLO_FLAGS_KNOWN;
    unsigned nat = POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES;
    return !(f & ~known) && (f & nat) != nat;
}

/*
 * nat_flags_ok: |f| (nonzero) is a NAT mapping as CONNECT and ACCEPT carry
 * it at |version| 3 (one of the HELLO_NAT_* flags, nothing else).
 */
static int nat_flags_ok(uint8_t f, int version)
{
    return version >= POS_CTRL_V3 &&
           (f == POS_CTRL_HELLO_NAT_EIM || f == POS_CTRL_HELLO_NAT_VARIES);
}

/* get_nat_flags: the optional u8 that ends CONNECT and ACCEPT (ctrl.h), into hello_flags. */
static void get_nat_flags(struct pos_reader *c, pos_ctrl_msg *m, int version)
{
    if (pos_reader_bad(c) || pos_reader_left(c) == 0)
        return;
    m->hello_flags = pos_reader_u8(c);
    if (!nat_flags_ok(m->hello_flags, version))
        pos_reader_fail(c); /* a present 0, another flag, or below version 3 */
}

/* parked_ok: PARKED's numbers are in range (ctrl.h). */
static int parked_ok(const pos_ctrl_msg *m)
{
    return m->record_id != 0 && m->keepalive_s >= 1 && m->keepalive_s <= POS_CTRL_MAX_KEEPALIVE_S &&
           m->lifetime_s >= 1 && m->lifetime_s <= POS_CTRL_MAX_LIFETIME_S;
}

static void decode_body(struct pos_reader *c, pos_ctrl_msg *m, int version)
{
    switch (m->type) {
    case POS_CTRL_HELLO:
        m->token_len = get_str(c, m->token, POS_CTRL_MAX_TOKEN);
        get_addrs(c, &m->addrs);
        if (!pos_reader_bad(c) && pos_reader_left(c) > 0) {
            /* optional flags (ctrl.h): present means nonzero and known */
            m->hello_flags = pos_reader_u8(c);
            if (m->hello_flags == 0 || !hello_flags_ok(m->hello_flags, version))
                pos_reader_fail(c);
        }
        break;
    case POS_CTRL_WELCOME:
        get_addr(c, m->observed);
        m->bytes_per_sec = pos_reader_u64(c);
        m->burst = pos_reader_u64(c);
        m->max_conns = pos_reader_u32(c);
        m->expires_at = pos_reader_u64(c);
        m->idle_timeout_s = pos_reader_u32(c);
        get_relay_id(c, m->relay_id);
        break;
    case POS_CTRL_CONNECT:
        m->req_id = pos_reader_u32(c);
        get_peer_id(c, m->peer_id);
        get_nat_flags(c, m, version);
        break;
    case POS_CTRL_INCOMING:
        m->req_id = pos_reader_u32(c);
        get_peer_id(c, m->peer_id);
        get_addr(c, m->observed);
        get_addrs(c, &m->addrs);
        break;
    case POS_CTRL_ACCEPT:
        m->req_id = pos_reader_u32(c);
        get_nat_flags(c, m, version);
        break;
    case POS_CTRL_DECLINE:
        m->req_id = pos_reader_u32(c);
        m->code = pos_reader_u16(c);
        break;
    case POS_CTRL_CIRCUIT:
        m->req_id = pos_reader_u32(c);
        m->circuit_id = pos_reader_u32(c);
        get_peer_id(c, m->peer_id);
        get_addr(c, m->observed);
        get_addrs(c, &m->addrs);
        break;
    case POS_CTRL_REDIRECT:
        m->req_id = pos_reader_u32(c);
        get_relay_id(c, m->relay_id);
        get_peer_id(c, m->peer_id);
        get_addrs(c, &m->addrs);
        if (m->addrs.n == 0)
            pos_reader_fail(c);
        break;
    case POS_CTRL_ERROR:
        m->req_id = pos_reader_u32(c);
        m->code = pos_reader_u16(c);
        get_str(c, m->text, POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_GOAWAY:
        m->code = pos_reader_u16(c);
        get_str(c, m->text, POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        m->circuit_id = pos_reader_u32(c);
        m->code = pos_reader_u16(c);
        break;
    case POS_CTRL_PARK:
        m->req_id = pos_reader_u32(c);
        break;
    case POS_CTRL_PARKED:
        m->req_id = pos_reader_u32(c);
        m->record_id = pos_reader_u64(c);
        m->keepalive_s = pos_reader_u32(c);
        m->lifetime_s = pos_reader_u32(c);
        if (!parked_ok(m))
            pos_reader_fail(c);
        break;
    default:
        decode_punch(c, m, version);
    }
}

/* The last type of |version|, or 0 for an unknown version. */
static int last_type(int version)
{
    if (version == POS_CTRL_V1)
        return POS_CTRL_LAST_V1;
    if (version == POS_CTRL_V2)
        return POS_CTRL_LAST_V2;
    if (version == POS_CTRL_V3)
        return POS_CTRL_LAST_V3;
    if (version == POS_CTRL_V4)
        return POS_CTRL_LAST_V4;
    return 0;
}

const char *const pos_ctrl_alpns[POS_CTRL_N_ALPNS] = {POS_CTRL_ALPN_V4, POS_CTRL_ALPN_V3,
                                                      POS_CTRL_ALPN_V2, POS_CTRL_ALPN_V1};

int pos_ctrl_version_of_alpn(const uint8_t *alpn, size_t len)
{
    static const size_t n = sizeof(POS_CTRL_ALPN_V1) - 1;
    if (!alpn || len != n)
        return 0;
    if (memcmp(alpn, POS_CTRL_ALPN_V1, n) == 0)
        return POS_CTRL_V1;
    if (memcmp(alpn, POS_CTRL_ALPN_V2, n) == 0)
        return POS_CTRL_V2;
    if (memcmp(alpn, POS_CTRL_ALPN_V3, n) == 0)
        return POS_CTRL_V3;
    if (memcmp(alpn, POS_CTRL_ALPN_V4, n) == 0)
        return POS_CTRL_V4;
    return 0;
}

int pos_ctrl_decode(const uint8_t *buf, size_t len, pos_ctrl_msg *out, size_t *consumed)
{
    return pos_ctrl_decode_version(buf, len, POS_CTRL_V1, out, consumed);
}

int pos_ctrl_decode_version(const uint8_t *buf, size_t len, int version, pos_ctrl_msg *out,
                            size_t *consumed)
{
    struct pos_reader r, body_r;
    size_t body;
    uint8_t type;

    *consumed = 0;
    if (len < POS_CTRL_HEADER_LEN)
        return 0;
    pos_reader_init(&r, buf, len);
    type = pos_reader_u8(&r);
    body = pos_reader_u16(&r);
    if (body > POS_CTRL_MAX_BODY)
        return POS_CTRL_ERR_TOO_BIG;
    if (type < POS_CTRL_HELLO || type > last_type(version))
        return POS_CTRL_ERR_MALFORMED;
    /* the body's own reader: fields may not run past it */
    if (pos_reader_sub(&r, body, &body_r) != 0)
        return 0;
    memset(out, 0, sizeof(*out));
    out->type = type;
    decode_body(&body_r, out, version);
    if (pos_reader_bad(&body_r) || pos_reader_left(&body_r) != 0) {
        pos_ctrl_msg_wipe(out);
        return POS_CTRL_ERR_MALFORMED;
    }
    *consumed = POS_CTRL_HEADER_LEN + body;
    return 1;
}

/* ---- writing ---- */

/*
 * The message being written. A bad field poisons the writer too, so nothing
 * follows it; the first failure decides the code: |err| when a field was
 * bad, POS_CTRL_ERR_TOO_BIG when the writer ran out of room first.
 */
struct out {
    struct pos_writer w;
    int err;
};

static void invalid(struct out *o)
{
    if (!pos_writer_bad(&o->w))
        o->err = POS_CTRL_ERR_INVALID;
    pos_writer_fail(&o->w);
}

static void put_str(struct out *o, const char *s, size_t n, size_t max)
{
    if (n > max || memchr(s, 0, n)) {
        invalid(o);
        return;
    }
    pos_writer_u16(&o->w, (uint16_t)n);
    pos_writer_bytes(&o->w, s, n);
}

static void put_addr(struct out *o, const char *a)
{
    size_t n = strnlen(a, POS_ADDR_STRLEN);
    if (!pos_addr_valid(a, n)) {
        invalid(o);
        return;
    }
    put_str(o, a, n, POS_ADDR_STRLEN - 1);
}

static void put_peer_id(struct out *o, const char *id)
{
    uint8_t key[32];
    size_t n = strnlen(id, POS_PEER_ID_STRLEN);
    if (pos_peer_id_parse(id, n, key) != 0) {
        invalid(o);
        return;
    }
    put_str(o, id, n, POS_PEER_ID_LEN);
}

static void put_relay_id(struct out *o, const char *id)
{
    size_t n = strnlen(id, POS_CTRL_UUID_LEN + 1);
    if (!pos_uuid_valid(id, n)) {
        invalid(o);
        return;
    }
    put_str(o, id, n, POS_CTRL_UUID_LEN);
}

static void put_addrs(struct out *o, const pos_ctrl_addrs *a)
{
    if (a->n > POS_CTRL_MAX_ADDRS) {
        invalid(o);
        return;
    }
    pos_writer_u8(&o->w, a->n);
    for (size_t i = 0; i < a->n; i++)
        put_addr(o, a->a[i]);
}

static void put_circuit_id(struct out *o, uint32_t id)
{
    if (id == 0)
        invalid(o);
    pos_writer_u32(&o->w, id);
}

static void put_attempt(struct out *o, uint16_t attempt)
{
    if (attempt == 0)
        invalid(o);
    pos_writer_u16(&o->w, attempt);
}

static void encode_punch(struct out *o, const pos_ctrl_msg *m, int version)
{
    switch (m->type) {
    case POS_CTRL_PUNCH_START:
        put_circuit_id(o, m->circuit_id);
        put_circuit_id(o, m->peer_circuit_id);
        pos_writer_bytes(&o->w, m->punch_key, sizeof(m->punch_key));
        if (m->start_in_ms > POS_PUNCH_MAX_START_IN_MS)
            invalid(o);
        pos_writer_u32(&o->w, m->start_in_ms);
        if (m->role != POS_PUNCH_DIALER && m->role != POS_PUNCH_LISTENER)
            invalid(o);
        pos_writer_u8(&o->w, m->role);
        put_attempt(o, m->attempt);
        if (m->addrs.n == 0)
            invalid(o);
        put_addrs(o, &m->addrs);
        if (version < POS_CTRL_V3)
            break; /* a version 2 peer knows no NAT mapping */
        if (m->peer_nat > POS_CTRL_NAT_VARIES)
            invalid(o);
        pos_writer_u8(&o->w, m->peer_nat);
        break;
    case POS_CTRL_PUNCH_REQUEST:
        put_circuit_id(o, m->circuit_id);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_PUNCH_REPORT:
        put_circuit_id(o, m->circuit_id);
        put_attempt(o, m->attempt);
        if (m->outcome < POS_CTRL_PUNCH_DIRECT || m->outcome > POS_CTRL_PUNCH_FELL_BACK)
            invalid(o);
        pos_writer_u8(&o->w, m->outcome);
        pos_writer_u32(&o->w, m->ms_to_direct);
        break;
    default:
        invalid(o);
    }
}

/* put_nat_flags: CONNECT's and ACCEPT's optional u8, when hello_flags is nonzero. */
static void put_nat_flags(struct out *o, const pos_ctrl_msg *m, int version)
{
    if (m->hello_flags && !nat_flags_ok(m->hello_flags, version))
        invalid(o);
    else if (m->hello_flags)
        pos_writer_u8(&o->w, m->hello_flags);
}

static void encode_body(struct out *o, const pos_ctrl_msg *m, int version)
{
    switch (m->type) {
    case POS_CTRL_HELLO:
        put_str(o, m->token, m->token_len, POS_CTRL_MAX_TOKEN);
        put_addrs(o, &m->addrs);
        if (m->hello_flags && !hello_flags_ok(m->hello_flags, version))
            invalid(o);
        else if (m->hello_flags)
            pos_writer_u8(&o->w, m->hello_flags);
        break;
    case POS_CTRL_WELCOME:
        put_addr(o, m->observed);
        pos_writer_u64(&o->w, m->bytes_per_sec);
        pos_writer_u64(&o->w, m->burst);
        pos_writer_u32(&o->w, m->max_conns);
        pos_writer_u64(&o->w, m->expires_at);
        pos_writer_u32(&o->w, m->idle_timeout_s);
        put_relay_id(o, m->relay_id);
        break;
    case POS_CTRL_CONNECT:
        pos_writer_u32(&o->w, m->req_id);
        put_peer_id(o, m->peer_id);
        put_nat_flags(o, m, version);
        break;
    case POS_CTRL_INCOMING:
        pos_writer_u32(&o->w, m->req_id);
        put_peer_id(o, m->peer_id);
        put_addr(o, m->observed);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_ACCEPT:
        pos_writer_u32(&o->w, m->req_id);
        put_nat_flags(o, m, version);
        break;
    case POS_CTRL_DECLINE:
        pos_writer_u32(&o->w, m->req_id);
        pos_writer_u16(&o->w, m->code);
        break;
    case POS_CTRL_CIRCUIT:
        pos_writer_u32(&o->w, m->req_id);
        pos_writer_u32(&o->w, m->circuit_id);
        put_peer_id(o, m->peer_id);
        put_addr(o, m->observed);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_REDIRECT:
        pos_writer_u32(&o->w, m->req_id);
        put_relay_id(o, m->relay_id);
        put_peer_id(o, m->peer_id);
        if (m->addrs.n == 0)
            invalid(o);
        put_addrs(o, &m->addrs);
        break;
    case POS_CTRL_ERROR:
        pos_writer_u32(&o->w, m->req_id);
        pos_writer_u16(&o->w, m->code);
        put_str(o, m->text, strnlen(m->text, sizeof(m->text)), POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_GOAWAY:
        pos_writer_u16(&o->w, m->code);
        put_str(o, m->text, strnlen(m->text, sizeof(m->text)), POS_CTRL_MAX_TEXT);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        pos_writer_u32(&o->w, m->circuit_id);
        pos_writer_u16(&o->w, m->code);
        break;
    case POS_CTRL_PARK:
        pos_writer_u32(&o->w, m->req_id);
        break;
    case POS_CTRL_PARKED:
        if (!parked_ok(m))
            invalid(o);
        pos_writer_u32(&o->w, m->req_id);
        pos_writer_u64(&o->w, m->record_id);
        pos_writer_u32(&o->w, m->keepalive_s);
        pos_writer_u32(&o->w, m->lifetime_s);
        break;
    default:
        encode_punch(o, m, version);
    }
}

int pos_ctrl_encode(const pos_ctrl_msg *m, uint8_t *buf, size_t cap)
{
    return pos_ctrl_encode_version(m, POS_CTRL_V1, buf, cap);
}

int pos_ctrl_encode_version(const pos_ctrl_msg *m, int version, uint8_t *buf, size_t cap)
{
    struct out o = {.err = 0};
    size_t body;

    if (m->type < POS_CTRL_HELLO || m->type > last_type(version))
        return POS_CTRL_ERR_INVALID;
    pos_writer_init(&o.w, buf, cap);
    pos_writer_u8(&o.w, m->type);
    pos_writer_u16(&o.w, 0); /* length, patched below */
    encode_body(&o, m, version);
    if (o.err)
        return o.err;
    if (pos_writer_bad(&o.w))
        return POS_CTRL_ERR_TOO_BIG;
    body = pos_writer_len(&o.w) - POS_CTRL_HEADER_LEN;
    if (body > POS_CTRL_MAX_BODY)
        return POS_CTRL_ERR_TOO_BIG;
    pos_writer_patch_u16(&o.w, 1, (uint16_t)body);
    return (int)pos_writer_len(&o.w);
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
    return pos_ctrl_reader_next_version(r, POS_CTRL_V1, out);
}

int pos_ctrl_reader_next_version(pos_ctrl_reader *r, int version, pos_ctrl_msg *out)
{
    size_t used = 0;
    int rv;

    if (!r->buf)
        return 0;
    rv = pos_ctrl_decode_version(r->buf, r->len, version, out, &used);
    if (rv != 1)
        return rv;
    sodium_memzero(r->buf, used); /* may have held a token or a punch key */
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
    static const char *const names[] = {
        "HELLO",         "WELCOME",      "CONNECT", "INCOMING", "ACCEPT",         "DECLINE",
        "CIRCUIT",       "REDIRECT",     "ERROR",   "GOAWAY",   "CIRCUIT_CLOSED", "PUNCH_START",
        "PUNCH_REQUEST", "PUNCH_REPORT", "PARK",    "PARKED"};
    if (type < POS_CTRL_HELLO || type > POS_CTRL_LAST_V4)
        return "unknown";
    return names[type - 1];
}
