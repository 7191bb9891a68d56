/*
 * DNS message codec (see dns.h). Every read goes through the shared bounded
 * reader (common/reader.h); on top of it, names are decompressed with a
 * strict backwards-only pointer rule and a jump limit, so no input can loop.
 */
#include "dns.h"

#include <string.h>

#include "reader.h"

/* ---- reading ---- */

/* A reader over |buf| (|len| bytes) at offset |pos|; poisoned when |pos| is past the end. */
static void reader_at(struct pos_reader *c, const uint8_t *buf, size_t len, size_t pos)
{
    pos_reader_init(c, buf, len);
    pos_reader_skip(c, pos);
}

int dns_read_name(const uint8_t *buf, size_t len, size_t *pos, struct dns_name *out)
{
    struct pos_reader c;
    size_t end = 0;        /* where the caller resumes: after the first pointer */
    size_t segment = *pos; /* start of the run of labels being read */
    unsigned jumps = 0;
    out->len = 0;
    reader_at(&c, buf, len, *pos);
    for (;;) {
        uint8_t b = pos_reader_u8(&c);
        if (pos_reader_bad(&c))
            return DNS_ERR_TRUNCATED;
        if ((b & 0xC0) == 0xC0) {
            size_t target = ((size_t)(b & 0x3F) << 8) | pos_reader_u8(&c);
            if (pos_reader_bad(&c))
                return DNS_ERR_TRUNCATED;
            /*
             * A pointer must go to before the run of labels it ends: each
             * jump lands strictly earlier than the last, so no input loops.
             */
            if (target >= segment || ++jumps > DNS_MAX_JUMPS)
                return DNS_ERR_NAME;
            if (!end)
                end = pos_reader_offset(&c);
            segment = target;
            reader_at(&c, buf, len, target);
            continue;
        }
        if (b & 0xC0)
            return DNS_ERR_NAME; /* 0x40 / 0x80: extended label types */
        if (b == 0) {
            if (out->len + 1 > DNS_MAX_NAME)
                return DNS_ERR_NAME;
            out->b[out->len++] = 0;
            *pos = end ? end : pos_reader_offset(&c);
            return 0;
        }
        if (b > DNS_MAX_LABEL)
            return DNS_ERR_NAME;
        const uint8_t *label = pos_reader_bytes(&c, b);
        if (!label)
            return DNS_ERR_TRUNCATED;
        if ((size_t)out->len + 1 + b + 1 > DNS_MAX_NAME)
            return DNS_ERR_NAME;
        out->b[out->len] = b;
        memcpy(out->b + out->len + 1, label, b);
        out->len = (uint16_t)(out->len + b + 1);
    }
}

int dns_reader_init(struct dns_reader *r, const uint8_t *buf, size_t len)
{
    struct pos_reader c;
    memset(r, 0, sizeof(*r));
    r->buf = buf;
    r->len = len;
    if (len < 12)
        return DNS_ERR_TRUNCATED;
    pos_reader_init(&c, buf, len);
    r->h.id = pos_reader_u16(&c);
    r->h.flags = pos_reader_u16(&c);
    r->h.qd = pos_reader_u16(&c);
    r->h.an = pos_reader_u16(&c);
    r->h.ns = pos_reader_u16(&c);
    r->h.ar = pos_reader_u16(&c);
    r->pos = pos_reader_offset(&c);
    /* A question takes at least 5 bytes (root name + type + class), a record 11. */
    size_t need = (size_t)r->h.qd * 5 + ((size_t)r->h.an + r->h.ns + r->h.ar) * 11;
    if (need > pos_reader_left(&c))
        return DNS_ERR_COUNTS;
    r->q_left = r->h.qd;
    r->rr_left[0] = r->h.an;
    r->rr_left[1] = r->h.ns;
    r->rr_left[2] = r->h.ar;
    return 0;
}

/*
 * Reads the name an entry opens with into |name| and starts |c| after it.
 * r->pos only moves once a whole entry was read: a failed one leaves it.
 */
static int read_owner(const struct dns_reader *r, struct dns_name *name, struct pos_reader *c)
{
    size_t pos = r->pos;
    int rc = dns_read_name(r->buf, r->len, &pos, name);
    if (rc)
        return rc;
    reader_at(c, r->buf, r->len, pos);
    return 0;
}

int dns_read_question(struct dns_reader *r, struct dns_question *q)
{
    struct pos_reader c;
    if (!r->q_left)
        return DNS_ERR_END;
    int rc = read_owner(r, &q->name, &c);
    if (rc)
        return rc;
    q->type = pos_reader_u16(&c);
    uint16_t cls = pos_reader_u16(&c);
    if (pos_reader_bad(&c))
        return DNS_ERR_TRUNCATED;
    q->unicast = (cls & DNS_CLASS_TOP_BIT) != 0;
    q->qclass = cls & 0x7FFF;
    r->pos = pos_reader_offset(&c);
    r->q_left--;
    return 0;
}

/* Copies a (possibly compressed) name found inside rdata into |rr->rdata|. */
static int rdata_put_name(const struct dns_reader *r, size_t *p, size_t rd_end, struct dns_rr *rr,
                          size_t *out)
{
    struct dns_name n;
    int rc = dns_read_name(r->buf, rd_end, p, &n);
    if (rc)
        return rc == DNS_ERR_TRUNCATED ? DNS_ERR_RDATA : rc;
    if (*out + n.len > DNS_MAX_RDATA)
        return DNS_ERR_RDATA;
    memcpy(rr->rdata + *out, n.b, n.len);
    *out += n.len;
    return 0;
}

/*
 * The |rdlen| bytes of rdata at |start|. Names inside may point anywhere
 * before them in the message, so they are read against the whole buffer,
 * cut at the rdata's end; fixed fields through a reader of the rdata alone.
 */
static int read_rdata(const struct dns_reader *r, size_t start, size_t rdlen, struct dns_rr *rr)
{
    size_t end = start + rdlen, p = start, out = 0;
    struct pos_reader rd;
    reader_at(&rd, r->buf, end, start);
    rr->oversized = false;
    switch (rr->type) {
    case DNS_TYPE_PTR: {
        int rc = rdata_put_name(r, &p, end, rr, &out);
        if (rc)
            return rc;
        break;
    }
    case DNS_TYPE_SRV: {
        if (rdlen < 7)
            return DNS_ERR_RDATA;
        pos_reader_copy(&rd, rr->rdata, 6); /* priority, weight, port */
        out = 6;
        p = pos_reader_offset(&rd);
        int rc = rdata_put_name(r, &p, end, rr, &out);
        if (rc)
            return rc;
        break;
    }
    case DNS_TYPE_A:
    case DNS_TYPE_AAAA:
        if (rdlen != (rr->type == DNS_TYPE_A ? 4u : 16u))
            return DNS_ERR_RDATA;
        /* fall through */
    default:
        if (rdlen > DNS_MAX_RDATA) {
            rr->oversized = true;
            rr->rdlen = 0;
            return 0;
        }
        pos_reader_copy(&rd, rr->rdata, rdlen);
        out = rdlen;
        p = pos_reader_offset(&rd);
        break;
    }
    if (p != end)
        return DNS_ERR_RDATA; /* a name that stops short of rdlen */
    rr->rdlen = (uint16_t)out;
    return 0;
}

int dns_read_rr(struct dns_reader *r, struct dns_rr *rr)
{
    struct pos_reader c;
    if (r->q_left)
        return DNS_ERR_END; /* questions first */
    int sec = 0;
    while (sec < 3 && !r->rr_left[sec])
        sec++;
    if (sec == 3)
        return DNS_ERR_END;
    int rc = read_owner(r, &rr->name, &c);
    if (rc)
        return rc;
    rr->type = pos_reader_u16(&c);
    uint16_t cls = pos_reader_u16(&c);
    rr->ttl = pos_reader_u32(&c);
    uint16_t rdlen = pos_reader_u16(&c);
    if (pos_reader_bad(&c) || pos_reader_left(&c) < rdlen)
        return DNS_ERR_TRUNCATED;
    rr->cache_flush = (cls & DNS_CLASS_TOP_BIT) != 0;
    rr->rclass = cls & 0x7FFF;
    rr->section = (enum dns_section)(DNS_SEC_ANSWER + sec);
    rc = read_rdata(r, pos_reader_offset(&c), rdlen, rr);
    if (rc)
        return rc;
    r->pos = pos_reader_offset(&c) + rdlen;
    r->rr_left[sec]--;
    return 0;
}

/* ---- names ---- */

int dns_name_prepend(struct dns_name *out, const char *label, size_t len,
                     const struct dns_name *base)
{
    if (len == 0 || len > DNS_MAX_LABEL || (size_t)base->len + 1 + len > DNS_MAX_NAME)
        return DNS_ERR_NAME;
    struct dns_name n;
    n.b[0] = (uint8_t)len;
    memcpy(n.b + 1, label, len);
    memcpy(n.b + 1 + len, base->b, base->len);
    n.len = (uint16_t)(1 + len + base->len);
    *out = n;
    return 0;
}

int dns_name_from_labels(struct dns_name *out, const char *const *labels, size_t n)
{
    struct dns_name acc = {.len = 1, .b = {0}};
    for (size_t i = n; i-- > 0;) {
        if (dns_name_prepend(&acc, labels[i], strlen(labels[i]), &acc))
            return DNS_ERR_NAME;
    }
    *out = acc;
    return 0;
}

int dns_name_from_text(struct dns_name *out, const char *text)
{
    const char *labels[32];
    char copy[DNS_MAX_NAME + 1];
    size_t n = 0, tl = strlen(text);
    if (tl > DNS_MAX_NAME)
        return DNS_ERR_NAME;
    memcpy(copy, text, tl + 1);
    if (tl && copy[tl - 1] == '.')
        copy[--tl] = 0;
    char *s = copy;
    while (*s) {
        if (n == 32)
            return DNS_ERR_NAME;
        labels[n++] = s;
        char *dot = strchr(s, '.');
        if (!dot)
            break;
        *dot = 0;
        s = dot + 1;
        if (!*s)
            return DNS_ERR_NAME;
    }
    return dns_name_from_labels(out, labels, n);
}

static uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

bool dns_name_equal(const struct dns_name *a, const struct dns_name *b)
{
    if (a->len != b->len)
        return false;
    for (size_t i = 0; i < a->len; i++) {
        if (lower(a->b[i]) != lower(b->b[i]))
            return false;
    }
    return true;
}

int dns_name_first_label(const struct dns_name *n, char *out, size_t cap)
{
    if (n->len < 2 || n->b[0] == 0 || (size_t)n->b[0] + 1 > cap)
        return -1;
    memcpy(out, n->b + 1, n->b[0]);
    out[n->b[0]] = 0;
    return n->b[0];
}

int dns_name_parent(const struct dns_name *n, struct dns_name *out)
{
    if (n->len < 2 || n->b[0] == 0)
        return -1;
    size_t skip = (size_t)n->b[0] + 1;
    out->len = (uint16_t)(n->len - skip);
    memmove(out->b, n->b + skip, out->len);
    return 0;
}

void dns_name_to_text(const struct dns_name *n, char *out, size_t cap)
{
    size_t o = 0, p = 0;
    if (!cap)
        return;
    while (p < n->len && n->b[p]) {
        size_t l = n->b[p];
        if (o && o + 1 < cap)
            out[o++] = '.';
        for (size_t i = 0; i < l && p + 1 + i < n->len && o + 1 < cap; i++)
            out[o++] = (char)n->b[p + 1 + i];
        p += l + 1;
    }
    out[o] = 0;
}

/* ---- writing ---- */

static void put(struct dns_writer *w, const void *src, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, src, n);
    w->len += n;
}

static void put_u16(struct dns_writer *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 2);
}

static void put_u32(struct dns_writer *w, uint32_t v)
{
    put_u16(w, (uint16_t)(v >> 16));
    put_u16(w, (uint16_t)v);
}

void dns_writer_init(struct dns_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = false;
    w->n_slots = 0;
    uint8_t zero[12] = {0};
    put(w, zero, sizeof(zero));
}

void dns_write_header(struct dns_writer *w, const struct dns_header *h)
{
    if (w->cap < 12)
        return;
    uint16_t v[6] = {h->id, h->flags, h->qd, h->an, h->ns, h->ar};
    for (int i = 0; i < 6; i++) {
        w->buf[2 * i] = (uint8_t)(v[i] >> 8);
        w->buf[2 * i + 1] = (uint8_t)v[i];
    }
}

static bool suffix_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

void dns_write_name(struct dns_writer *w, const struct dns_name *n)
{
    size_t p = 0;
    while (p < n->len && n->b[p]) {
        const uint8_t *suf = n->b + p;
        size_t suflen = n->len - p;
        for (unsigned i = 0; i < w->n_slots; i++) {
            if (suffix_equal(w->slots[i].suffix, w->slots[i].len, suf, suflen)) {
                put_u16(w, (uint16_t)(0xC000 | w->slots[i].offset));
                return;
            }
        }
        if (w->len < 0x3FFF && w->n_slots < DNS_COMPRESS_SLOTS && !w->overflow) {
            w->slots[w->n_slots].offset = (uint16_t)w->len;
            w->slots[w->n_slots].len = (uint16_t)suflen;
            memcpy(w->slots[w->n_slots].suffix, suf, suflen);
            w->n_slots++;
        }
        size_t l = n->b[p];
        put(w, n->b + p, l + 1);
        p += l + 1;
    }
    uint8_t zero = 0;
    put(w, &zero, 1);
}

void dns_write_question(struct dns_writer *w, const struct dns_name *n, uint16_t type, bool unicast)
{
    dns_write_name(w, n);
    put_u16(w, type);
    put_u16(w, (uint16_t)(DNS_CLASS_IN | (unicast ? DNS_CLASS_TOP_BIT : 0)));
}

void dns_write_rr(struct dns_writer *w, const struct dns_name *name, uint16_t type,
                  bool cache_flush, uint32_t ttl, const uint8_t *rdata, uint16_t rdlen)
{
    dns_write_name(w, name);
    put_u16(w, type);
    put_u16(w, (uint16_t)(DNS_CLASS_IN | (cache_flush ? DNS_CLASS_TOP_BIT : 0)));
    put_u32(w, ttl);
    size_t len_at = w->len;
    put_u16(w, 0);
    size_t start = w->len;
    struct dns_name n;
    size_t p = 0;
    if (type == DNS_TYPE_SRV && rdlen >= 7) {
        put(w, rdata, 6);
        p = 6;
    }
    if ((type == DNS_TYPE_PTR || type == DNS_TYPE_SRV) &&
        dns_read_name(rdata, rdlen, &p, &n) == 0) {
        dns_write_name(w, &n);
    } else {
        put(w, rdata, rdlen);
    }
    if (w->overflow)
        return;
    size_t l = w->len - start;
    w->buf[len_at] = (uint8_t)(l >> 8);
    w->buf[len_at + 1] = (uint8_t)l;
}

struct dns_writer_mark dns_writer_mark(const struct dns_writer *w)
{
    struct dns_writer_mark m = {w->len, w->n_slots};
    return m;
}

void dns_writer_rewind(struct dns_writer *w, struct dns_writer_mark m)
{
    w->len = m.len;
    w->n_slots = m.n_slots;
    w->overflow = false;
}
