/*
 * The responder half of the mDNS engine (see engine.h): our records and
 * how they are claimed, defended, announced, answered and withdrawn.
 *
 * Probe (3 queries 250 ms apart, RFC 6762 §8.1), settle simultaneous
 * probes by comparing authority records (§8.2), rename on conflict
 * ("name (2)", §9), announce twice 1 s apart (§8.3), answer queries (unique
 * records at once, shared ones after 20-120 ms, §6), honour known answers
 * (§7.1), wait 400-500 ms for the rest of a truncated query's known answers
 * (§7.2), drop pending answers another host already gave (§7.4), answer QU
 * questions by unicast when the records were multicast within a quarter of
 * their TTL (§5.4) and legacy queries by unicast (§6.7), never multicast a
 * record twice within 1 s per interface (§6; probe defence: 250 ms), on a
 * conflict once announced probe again before renaming (§9), goodbye with
 * TTL 0 (§10.1).
 * Contacts-only mode: random names and the presence tag (docs/mdns.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static void srv_rdata(const struct mdns_core *c, uint8_t *rd, uint16_t *len)
{
    memset(rd, 0, 4); /* priority 0, weight 0 */
    rd[4] = (uint8_t)(c->cfg.port >> 8);
    rd[5] = (uint8_t)c->cfg.port;
    memcpy(rd + 6, c->host.b, c->host.len);
    *len = (uint16_t)(6 + c->host.len);
}

/*
 * write_records appends our records selected by |mask| for interface |ifc|.
 * |ttl_override| >= 0 replaces TTLs (0: goodbye; legacy unicast caps at 10).
 * Returns the number of records written; stops early on overflow, leaving
 * the writer at the last record that fitted (*rest gets what is left).
 */
static unsigned write_records(const struct mdns_core *c, struct dns_writer *w,
                              const struct iface *ifc, unsigned mask, long ttl_override,
                              bool flush_bits, unsigned *rest)
{
    unsigned n = 0;
    uint8_t rd[DNS_MAX_NAME + 8];
    uint16_t len;
    *rest = 0;
    for (int r = 0; r < REC_COUNT; r++) {
        if (!(mask & (1u << r)))
            continue;
        struct dns_writer_mark mk = dns_writer_mark(w);
        unsigned before = n;
        long ttl = (r == REC_SRV || r == REC_A || r == REC_AAAA) ? MDNS_TTL_HOST : MDNS_TTL_OTHER;
        if (ttl_override >= 0 && (ttl_override == 0 || ttl_override < ttl))
            ttl = ttl_override;
        bool unique = !(REC_SHARED & (1u << r)) && flush_bits;
        switch (r) {
        case REC_PTR_SVC:
            dns_write_rr(w, &c->svc, DNS_TYPE_PTR, false, (uint32_t)ttl, c->instance.b,
                         c->instance.len);
            n++;
            break;
        case REC_PTR_ENUM:
            dns_write_rr(w, &c->enum_name, DNS_TYPE_PTR, false, (uint32_t)ttl, c->svc.b,
                         c->svc.len);
            n++;
            break;
        case REC_SRV:
            srv_rdata(c, rd, &len);
            dns_write_rr(w, &c->instance, DNS_TYPE_SRV, unique, (uint32_t)ttl, rd, len);
            n++;
            break;
        case REC_TXT:
            dns_write_rr(w, &c->instance, DNS_TYPE_TXT, unique, (uint32_t)ttl, c->txt,
                         (uint16_t)c->txt_len);
            n++;
            break;
        case REC_A:
            for (unsigned i = 0; ifc && i < ifc->n4; i++, n++)
                dns_write_rr(w, &c->host, DNS_TYPE_A, unique, (uint32_t)ttl, ifc->a4[i], 4);
            break;
        case REC_AAAA:
            for (unsigned i = 0; ifc && i < ifc->n6; i++, n++)
                dns_write_rr(w, &c->host, DNS_TYPE_AAAA, unique, (uint32_t)ttl, ifc->a6[i], 16);
            break;
        }
        if (w->overflow) {
            dns_writer_rewind(w, mk);
            n = before;
            for (int k = r; k < REC_COUNT; k++)
                *rest |= mask & (1u << k);
            return n;
        }
    }
    return n;
}

/*
 * send_response queues responses carrying the records in |mask|, split over
 * as many packets as needed, to |dest| (multicast or unicast).
 */
static void send_response(struct mdns_core *c, const struct iface *ifc,
                          const struct mdns_dest *dest, unsigned mask, long ttl_override,
                          const struct dns_question *legacy_q, uint16_t legacy_id)
{
    unsigned rest = mask;
    for (int guard = 0; rest && guard < REC_COUNT + 1; guard++) {
        struct mdns_packet *p = mdns_out_slot(c);
        if (!p)
            return;
        struct dns_writer w;
        dns_writer_init(&w, p->data, sizeof(p->data));
        struct dns_header h = {.flags = DNS_FLAG_QR | DNS_FLAG_AA};
        if (legacy_q) {
            h.id = legacy_id;
            h.qd = 1;
            dns_write_question(&w, &legacy_q->name, legacy_q->type, false);
        }
        unsigned left;
        unsigned n = write_records(c, &w, ifc, rest, ttl_override, !legacy_q, &left);
        if (!n)
            return; /* a single record that does not fit a packet */
        h.an = (uint16_t)n;
        dns_write_header(&w, &h);
        p->len = w.len;
        p->dest = *dest;
        mdns_out_commit(c);
        rest = left;
    }
}

static void mcast_response(struct mdns_core *c, struct iface *ifc, int family, unsigned mask,
                           long ttl_override, uint64_t now)
{
    struct mdns_dest d = {.ifindex = ifc->index, .family = family, .multicast = true};
    if (!mask || !family_usable(ifc, family))
        return;
    send_response(c, ifc, &d, mask, ttl_override, NULL, 0);
    for (int r = 0; r < REC_COUNT; r++) {
        if (mask & (1u << r))
            ifc->last_mcast[fam_i(family)][r] = now;
    }
}

static void mcast_all(struct mdns_core *c, unsigned mask, long ttl_override, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        if (!c->ifaces[i].index)
            continue;
        mcast_response(c, &c->ifaces[i], 4, mask, ttl_override, now);
        mcast_response(c, &c->ifaces[i], 6, mask, ttl_override, now);
    }
}

static void send_probe(struct mdns_core *c, struct iface *ifc, int family, bool qu)
{
    if (!family_usable(ifc, family))
        return;
    struct mdns_packet *p = mdns_out_slot(c);
    if (!p)
        return;
    struct dns_writer w;
    dns_writer_init(&w, p->data, sizeof(p->data));
    dns_write_question(&w, &c->instance, DNS_TYPE_ANY, qu);
    dns_write_question(&w, &c->host, DNS_TYPE_ANY, qu);
    unsigned rest;
    unsigned n = write_records(c, &w, ifc,
                               (1u << REC_SRV) | (1u << REC_TXT) | (1u << REC_A) | (1u << REC_AAAA),
                               -1, false, &rest);
    struct dns_header h = {.qd = 2, .ns = (uint16_t)n};
    dns_write_header(&w, &h);
    p->len = w.len;
    set_dest_mcast(p, ifc->index, family);
    mdns_out_commit(c);
}

void mdns_random_label(char *out, const char *prefix)
{
    uint8_t r[8];
    randombytes_buf(r, sizeof(r));
    char hex[17];
    sodium_bin2hex(hex, sizeof(hex), r, sizeof(r));
    snprintf(out, DNS_MAX_LABEL + 1, "%s%s", prefix, hex);
}

static void build_private_txt(struct mdns_core *c, uint64_t now)
{
    uint8_t nonce[16], tag[16];
    char nb[sodium_base64_ENCODED_LEN(16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    char tb[sizeof(nb)];
    char s1[40], s2[40];
    randombytes_buf(nonce, sizeof(nonce));
    c->epoch = mdns_epoch_of(c, now);
    mdns_presence_tag(c->cfg.presence_key, c->epoch, nonce, tag);
    sodium_bin2base64(nb, sizeof(nb), nonce, 16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(tb, sizeof(tb), tag, 16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(s1, sizeof(s1), "n=%s", nb);
    snprintf(s2, sizeof(s2), "t=%s", tb);
    const char *strs[2] = {s1, s2};
    c->txt_len = (size_t)mdns_core_txt_build(strs, 2, c->txt, sizeof(c->txt));
}

void mdns_set_names(struct mdns_core *c, const char *host_label)
{
    dns_name_prepend(&c->instance, c->instance_label, strlen(c->instance_label), &c->svc);
    struct dns_name local;
    dns_name_from_text(&local, "local");
    dns_name_prepend(&c->host, host_label, strlen(host_label), &local);
}

void mdns_start_probing(struct mdns_core *c, uint64_t now, uint64_t delay)
{
    c->rstate = R_WAIT;
    c->step = 0;
    c->rnext = now + delay;
}

/* New random instance, host, nonce and tag (contacts-only mode). */
void mdns_rotate_private(struct mdns_core *c, uint64_t now)
{
    char host[DNS_MAX_LABEL + 1];
    mdns_random_label(c->instance_label, "");
    mdns_random_label(host, "h");
    mdns_set_names(c, host);
    build_private_txt(c, now);
}

void mdns_goodbye_all(struct mdns_core *c, uint64_t now)
{
    if (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED)
        mcast_all(c, REC_ALL, 0, now);
}

int mdns_core_txt_build(const char *const *strings, size_t n, uint8_t *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(strings[i]);
        if (l == 0 || l > 255 || len + 1 + l > cap || len + 1 + l > MDNS_TXT_MAX)
            return POS_P2P_ERR_MDNS_TXT;
        out[len++] = (uint8_t)l;
        memcpy(out + len, strings[i], l);
        len += l;
    }
    if (len == 0) {
        if (cap < 1)
            return POS_P2P_ERR_MDNS_TXT;
        out[len++] = 0; /* an empty TXT is one empty string (RFC 6763 §6.1) */
    }
    return (int)len;
}

int mdns_core_set_txt(struct mdns_core *c, const uint8_t *txt, size_t len, uint64_t now)
{
    if (len > sizeof(c->txt) || len == 0)
        return POS_P2P_ERR_MDNS_TXT;
    if (c->cfg.mode != POS_MDNS_ENABLED)
        return 0; /* contacts-only publishes no metadata; disabled nothing */
    if (len == c->txt_len && !memcmp(txt, c->txt, len))
        return 0;
    /*
     * §8.4: a changed unique record is announced again with the cache-flush
     * bit, which replaces the old data in every cache (§10.2). A goodbye
     * first would make browsers drop the instance and find it again.
     */
    bool live = mdns_advertising(c) && mdns_core_announced(c);
    memcpy(c->txt, txt, len);
    c->txt_len = len;
    if (live) {
        /* The name is ours already: no probing, announce at once. */
        for (int i = 0; i < MDNS_MAX_IFACES; i++)
            memset(c->ifaces[i].last_mcast, 0, sizeof(c->ifaces[i].last_mcast));
        c->rstate = R_ANNOUNCING;
        c->step = 0;
        c->rnext = now;
    }
    return 0;
}

static bool has_addr(const uint8_t *list, size_t n, size_t len, const uint8_t *a)
{
    for (size_t i = 0; i < n; i++) {
        if (!memcmp(list + i * len, a, len))
            return true;
    }
    return false;
}

/* §10.1: goodbye (TTL 0) for the addresses of |old| that the new set lacks. */
void mdns_goodbye_removed(struct mdns_core *c, const struct iface *old, const uint8_t (*a4)[4],
                          size_t n4, const uint8_t (*a6)[16], size_t n6)
{
    struct iface *t = malloc(sizeof(*t));
    if (!t)
        return;
    *t = *old;
    t->n4 = t->n6 = 0;
    for (unsigned i = 0; i < old->n4; i++) {
        if (!has_addr(n4 ? a4[0] : NULL, n4, 4, old->a4[i]))
            memcpy(t->a4[t->n4++], old->a4[i], 4);
    }
    for (unsigned i = 0; i < old->n6; i++) {
        if (!has_addr(n6 ? a6[0] : NULL, n6, 16, old->a6[i]))
            memcpy(t->a6[t->n6++], old->a6[i], 16);
    }
    unsigned mask = (t->n4 ? 1u << REC_A : 0) | (t->n6 ? 1u << REC_AAAA : 0);
    for (int f = 4; mask && f <= 6; f += 2) {
        struct mdns_dest d = {.ifindex = old->index, .family = f, .multicast = true};
        if (family_usable(old, f))
            send_response(c, t, &d, mask, 0, NULL, 0);
    }
    free(t);
}

static bool our_addr(const struct mdns_core *c, uint16_t type, const uint8_t *rd, uint16_t len)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        const struct iface *ifc = &c->ifaces[i];
        for (unsigned j = 0; type == DNS_TYPE_A && len == 4 && j < ifc->n4; j++) {
            if (!memcmp(ifc->a4[j], rd, 4))
                return true;
        }
        for (unsigned j = 0; type == DNS_TYPE_AAAA && len == 16 && j < ifc->n6; j++) {
            if (!memcmp(ifc->a6[j], rd, 16))
                return true;
        }
    }
    return false;
}

/* Which of our records |rr| is (same name, type and data), as a bit; 0 if none. */
static unsigned match_ours(const struct mdns_core *c, const struct iface *ifc,
                           const struct dns_rr *rr)
{
    uint8_t rd[DNS_MAX_NAME + 8];
    uint16_t len;
    if (rr->type == DNS_TYPE_PTR && dns_name_equal(&rr->name, &c->svc) &&
        rr->rdlen == c->instance.len && !memcmp(rr->rdata, c->instance.b, rr->rdlen))
        return 1u << REC_PTR_SVC;
    if (rr->type == DNS_TYPE_PTR && dns_name_equal(&rr->name, &c->enum_name))
        return rr->rdlen == c->svc.len && !memcmp(rr->rdata, c->svc.b, rr->rdlen)
                   ? 1u << REC_PTR_ENUM
                   : 0;
    if (dns_name_equal(&rr->name, &c->instance)) {
        srv_rdata(c, rd, &len);
        if (rr->type == DNS_TYPE_SRV && rr->rdlen == len && !memcmp(rr->rdata, rd, len))
            return 1u << REC_SRV;
        if (rr->type == DNS_TYPE_TXT && rr->rdlen == c->txt_len &&
            !memcmp(rr->rdata, c->txt, c->txt_len))
            return 1u << REC_TXT;
    }
    if (dns_name_equal(&rr->name, &c->host) && ifc) {
        for (unsigned j = 0; rr->type == DNS_TYPE_A && rr->rdlen == 4 && j < ifc->n4; j++) {
            if (!memcmp(ifc->a4[j], rr->rdata, 4))
                return 1u << REC_A;
        }
        for (unsigned j = 0; rr->type == DNS_TYPE_AAAA && rr->rdlen == 16 && j < ifc->n6; j++) {
            if (!memcmp(ifc->a6[j], rr->rdata, 16))
                return 1u << REC_AAAA;
        }
    }
    return 0;
}

/* A record of another host that claims one of our unique names. */
static bool conflicts_with_us(const struct mdns_core *c, const struct iface *ifc,
                              const struct dns_rr *rr)
{
    if (rr->ttl == 0 || rr->rclass != DNS_CLASS_IN || match_ours(c, ifc, rr))
        return false;
    if (dns_name_equal(&rr->name, &c->instance))
        return rr->type == DNS_TYPE_SRV || rr->type == DNS_TYPE_TXT;
    if (dns_name_equal(&rr->name, &c->host))
        return (rr->type == DNS_TYPE_A || rr->type == DNS_TYPE_AAAA) &&
               !our_addr(c, rr->type, rr->rdata, rr->rdlen);
    return false;
}

void mdns_rename_after_conflict(struct mdns_core *c, uint64_t now)
{
    if (now > c->conflict_window + 10000) {
        c->conflict_window = now;
        c->conflicts = 0;
    }
    c->conflicts++;
    if (c->cfg.mode == POS_MDNS_CONTACTS_ONLY) {
        mdns_rotate_private(c, now);
    } else {
        char host[DNS_MAX_LABEL + 1];
        c->rename_n++;
        char suffix[16];
        int sl = snprintf(suffix, sizeof(suffix), " (%u)", c->rename_n + 1);
        int keep = (int)strlen(c->base_label);
        if (keep + sl > DNS_MAX_LABEL)
            keep = DNS_MAX_LABEL - sl;
        snprintf(c->instance_label, sizeof(c->instance_label), "%.*s%s", keep, c->base_label,
                 suffix);
        mdns_random_label(host, "pos-");
        mdns_set_names(c, host);
    }
    /* §8.1: after 15 conflicts within 10 s, wait 5 s before probing again. */
    mdns_start_probing(c, now, c->conflicts > 15 ? 5000 : 0);
}

void mdns_conflict(struct mdns_core *c, uint64_t now)
{
    if (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED) {
        /* §9: reset to probing; the name is given up only if a probe fails. */
        mdns_start_probing(c, now, 0);
        return;
    }
    mdns_rename_after_conflict(c, now);
}

static int tierec_cmp(const void *pa, const void *pb)
{
    const struct tierec *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->b, b->b, n);
    if (r)
        return r;
    return (int)a->len - (int)b->len;
}

static void tierec_set(struct tierec *t, uint16_t type, const uint8_t *rd, size_t len)
{
    if (len > DNS_MAX_RDATA)
        len = DNS_MAX_RDATA;
    t->b[0] = (uint8_t)(type >> 8);
    t->b[1] = (uint8_t)type;
    memcpy(t->b + 2, rd, len);
    t->len = (uint16_t)(2 + len);
}

/*
 * Another host probes for our instance name while we probe too (§8.2):
 * compare the sorted authority records; the lexicographically later set
 * wins. Returns true when we lost (probe again in 1 s).
 */
static bool lost_tiebreak(struct mdns_core *c, struct rx *x, size_t n_theirs)
{
    uint8_t rd[DNS_MAX_NAME + 8];
    uint16_t len;
    srv_rdata(c, rd, &len);
    tierec_set(&x->ours[0], DNS_TYPE_SRV, rd, len);
    tierec_set(&x->ours[1], DNS_TYPE_TXT, c->txt, c->txt_len);
    qsort(x->ours, 2, sizeof(x->ours[0]), tierec_cmp);
    qsort(x->theirs, n_theirs, sizeof(x->theirs[0]), tierec_cmp);
    for (size_t i = 0; i < 2 && i < n_theirs; i++) {
        int r = tierec_cmp(&x->ours[i], &x->theirs[i]);
        if (r)
            return r < 0;
    }
    return n_theirs > 2;
}

static unsigned question_mask(const struct mdns_core *c, const struct dns_question *q)
{
    unsigned m = 0;
    bool any = q->type == DNS_TYPE_ANY;
    if (q->qclass != DNS_CLASS_IN && q->qclass != 255)
        return 0;
    if (dns_name_equal(&q->name, &c->svc) && (any || q->type == DNS_TYPE_PTR))
        m |= 1u << REC_PTR_SVC;
    if (dns_name_equal(&q->name, &c->enum_name) && (any || q->type == DNS_TYPE_PTR))
        m |= 1u << REC_PTR_ENUM;
    if (dns_name_equal(&q->name, &c->instance)) {
        if (any || q->type == DNS_TYPE_SRV)
            m |= 1u << REC_SRV;
        if (any || q->type == DNS_TYPE_TXT)
            m |= 1u << REC_TXT;
    }
    if (dns_name_equal(&q->name, &c->host)) {
        if (any || q->type == DNS_TYPE_A)
            m |= 1u << REC_A;
        if (any || q->type == DNS_TYPE_AAAA)
            m |= 1u << REC_AAAA;
    }
    return m;
}

/* Additional records (RFC 6763 §12): SRV, TXT and addresses with a PTR; addresses with SRV. */
static unsigned with_additionals(unsigned m)
{
    if (m & (1u << REC_PTR_SVC))
        m |= (1u << REC_SRV) | (1u << REC_TXT);
    if (m & (1u << REC_SRV))
        m |= (1u << REC_A) | (1u << REC_AAAA);
    return m;
}

/* What one query asks and already knows, read in one pass. */
struct query_summary {
    unsigned mask;         /* our records its questions ask for */
    unsigned qu_mask;      /* ... in questions with the QU bit */
    unsigned known;        /* ... that it lists as known answers (§7.1) */
    bool browse_q;         /* it asks our browse question (QM) */
    unsigned browse_known; /* known answers to the browse question */
    size_t n_theirs;       /* authority records for our instance (a rival probe) */
    int nq;
    struct dns_question first_q;
};

static void read_query(struct mdns_core *c, struct rx *x, const struct iface *ifc, bool probing,
                       struct query_summary *qs)
{
    unsigned n4 = 0, n6 = 0;
    memset(qs, 0, sizeof(*qs));
    while (dns_read_question(&x->r, &x->q) == 0) {
        unsigned m = question_mask(c, &x->q);
        if (x->q.unicast)
            qs->qu_mask |= m;
        qs->mask |= m;
        if (!qs->nq++)
            qs->first_q = x->q;
        if (!x->q.unicast && x->q.type == DNS_TYPE_PTR && dns_name_equal(&x->q.name, &c->svc))
            qs->browse_q = true;
    }
    while (dns_read_rr(&x->r, &x->rr) == 0) {
        if (x->rr.section == DNS_SEC_ANSWER) {
            if (qs->browse_q && x->rr.type == DNS_TYPE_PTR && dns_name_equal(&x->rr.name, &c->svc))
                qs->browse_known++;
            unsigned b = match_ours(c, ifc, &x->rr);
            /* §7.1: skip what the asker knows with at least half our TTL. */
            uint32_t ours_ttl = (b & ((1u << REC_SRV) | (1u << REC_A) | (1u << REC_AAAA)))
                                    ? MDNS_TTL_HOST
                                    : MDNS_TTL_OTHER;
            if (b && (uint64_t)x->rr.ttl * 2 >= ours_ttl) {
                if (b == (1u << REC_A))
                    n4++;
                else if (b == (1u << REC_AAAA))
                    n6++;
                else
                    qs->known |= b;
            }
        } else if (x->rr.section == DNS_SEC_AUTHORITY && probing && qs->n_theirs < 4 &&
                   dns_name_equal(&x->rr.name, &c->instance) &&
                   (x->rr.type == DNS_TYPE_SRV || x->rr.type == DNS_TYPE_TXT) && !x->rr.oversized) {
            tierec_set(&x->theirs[qs->n_theirs++], x->rr.type, x->rr.rdata, x->rr.rdlen);
        }
    }
    /* Address records count as known only when the asker knows them all. */
    if (n4 && n4 >= ifc->n4)
        qs->known |= 1u << REC_A;
    if (n6 && n6 >= ifc->n6)
        qs->known |= 1u << REC_AAAA;
}

/* Multicast answer: at once for unique records and probes, else after 20-120 ms (§6). */
static void answer_multicast(struct mdns_core *c, struct iface *ifc, int family, unsigned mask,
                             unsigned known, bool probe, bool at_once, uint64_t now)
{
    unsigned answer = with_additionals(mask) & ~known;
    int fi = fam_i(family);
    /*
     * §6: no record multicast twice within a second on one link; to defend
     * a name against a probe, at most once per 250 ms.
     */
    uint64_t gap = probe ? 250 : 1000;
    for (int r = 0; r < REC_COUNT; r++) {
        if (ifc->last_mcast[fi][r] && ifc->last_mcast[fi][r] + gap > now)
            answer &= ~(1u << r);
    }
    if (!answer)
        return;
    if (!(mask & REC_SHARED) || probe || at_once) {
        mcast_response(c, ifc, family, answer, -1, now);
        return;
    }
    /* Shared answers wait so that answers from several hosts aggregate. */
    uint64_t at = now + rand_between(20, 120);
    if (!ifc->pending_at[fi] || at < ifc->pending_at[fi])
        ifc->pending_at[fi] = at;
    ifc->pending_mask[fi] |= answer;
}

/*
 * Of the records |qu| that QU questions ask for, those that may go by
 * unicast: §5.4 wants a multicast reply instead for a record not multicast
 * on this link within a quarter of its TTL, so that every cache is brought
 * up to date and conflicts can be seen. (Askers on this host get multicast
 * too: another process bound to port 5353 here could get a unicast reply.)
 */
static unsigned unicast_ok(const struct iface *ifc, int family, unsigned qu, uint64_t now)
{
    unsigned ok = 0;
    for (int r = 0; r < REC_COUNT; r++) {
        uint64_t last = ifc->last_mcast[fam_i(family)][r];
        uint64_t quarter =
            (r == REC_SRV || r == REC_A || r == REC_AAAA ? MDNS_TTL_HOST : MDNS_TTL_OTHER) * 250ull;
        if ((qu & (1u << r)) && last && last + quarter > now)
            ok |= 1u << r;
    }
    return ok;
}

/*
 * §7.2: a query with the TC bit is followed by more known answers from the
 * same host; its answer waits 400-500 ms, and known answers arriving in the
 * meantime from that host are taken off it. Returns true when the packet was
 * taken in that way (nothing more to do with it now).
 */
static bool truncated_query(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                            const uint8_t *src, const struct query_summary *qs, uint64_t now)
{
    int fi = fam_i(family);
    size_t alen = family == 4 ? 4 : 16;
    bool tc = x->r.h.flags & DNS_FLAG_TC;
    bool same = ifc->tc_at[fi] && !memcmp(ifc->tc_src[fi], src, alen);
    (void)c;
    if (same) {
        /* The rest of the list (or a new truncated query) from the same host. */
        ifc->tc_known[fi] |= qs->known;
        ifc->tc_mask[fi] |= qs->mask;
        if (tc)
            ifc->tc_at[fi] = now + rand_between(400, 500);
        return true;
    }
    if (!tc || !(qs->mask & ~qs->known))
        return false;
    if (ifc->tc_at[fi])
        return false; /* one pending per link and family: another host's is answered as usual */
    ifc->tc_at[fi] = now + rand_between(400, 500);
    ifc->tc_mask[fi] = qs->mask;
    ifc->tc_known[fi] = qs->known;
    memcpy(ifc->tc_src[fi], src, alen);
    return true;
}

/* answer_query: what the responder does about a query summed up in |qs|. */
static void answer_query(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                         const uint8_t *src, uint16_t src_port, uint64_t now,
                         const struct query_summary *q, bool from_us)
{
    bool responding =
        mdns_advertising(c) && (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED);
    bool probing = mdns_advertising(c) && c->rstate == R_PROBING;
    struct query_summary qs = *q;
    if (probing && qs.n_theirs && lost_tiebreak(c, x, qs.n_theirs)) {
        mdns_start_probing(c, now, 1000);
        return;
    }
    unsigned mask = qs.mask;
    if (responding && src_port == MDNS_PORT && !probing && x->r.h.ns == 0 &&
        truncated_query(c, x, ifc, family, src, &qs, now))
        return;
    if (!responding || !(mask & ~qs.known))
        return; /* not ours, or every direct answer is known */
    struct mdns_dest ud = {.ifindex = ifc->index, .family = family, .port = src_port};
    memcpy(ud.addr, src, family == 4 ? 4 : 16);
    if (src_port != MDNS_PORT) {
        /* §6.7: a plain DNS resolver asking port 5353; reply to it, TTL <= 10. */
        if (qs.nq == 1)
            send_response(c, ifc, &ud, with_additionals(mask) & ~qs.known, 10, &qs.first_q,
                          x->r.h.id);
        return;
    }
    bool probe = x->r.h.ns > 0;
    unsigned uni = probe || from_us ? 0 : unicast_ok(ifc, family, qs.qu_mask, now);
    if (uni) {
        /* §5.4: the asker wants a unicast reply for these questions. */
        send_response(c, ifc, &ud, with_additionals(uni) & ~qs.known, -1, NULL, 0);
        mask &= ~uni;
        if (!(mask & ~qs.known))
            return;
    }
    answer_multicast(c, ifc, family, mask, qs.known, probe, false, now);
}

bool mdns_responder_query(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                          const uint8_t *src, uint16_t src_port, uint64_t now,
                          unsigned *browse_known)
{
    bool probing = mdns_advertising(c) && c->rstate == R_PROBING;
    struct query_summary qs;
    read_query(c, x, ifc, probing, &qs);
    bool from_us = our_addr(c, family == 4 ? DNS_TYPE_A : DNS_TYPE_AAAA, src, family == 4 ? 4 : 16);
    answer_query(c, x, ifc, family, src, src_port, now, &qs, from_us);
    *browse_known = qs.browse_known;
    return qs.browse_q && !from_us;
}

static void responder_states(struct mdns_core *c, uint64_t now)
{
    if (!mdns_advertising(c))
        return;
    if (c->cfg.mode == POS_MDNS_CONTACTS_ONLY && c->rstate == R_ANNOUNCED &&
        mdns_epoch_of(c, now) != c->epoch) {
        /* A new epoch: new instance, host, nonce and tag. */
        mdns_goodbye_all(c, now);
        mdns_rotate_private(c, now);
        mdns_start_probing(c, now, rand_between(0, 250));
    }
    if (c->rnext > now)
        return;
    switch (c->rstate) {
    case R_WAIT:
    case R_PROBING:
        c->rstate = R_PROBING;
        if (c->step < 3) {
            for (int i = 0; i < MDNS_MAX_IFACES; i++) {
                if (!c->ifaces[i].index)
                    continue;
                send_probe(c, &c->ifaces[i], 4, false);
                send_probe(c, &c->ifaces[i], 6, false);
            }
            c->step++;
            c->rnext = now + 250;
        } else {
            c->rstate = R_ANNOUNCING;
            c->step = 0;
            c->rnext = now;
            responder_states(c, now);
        }
        break;
    case R_ANNOUNCING:
        mcast_all(c, REC_ALL, -1, now);
        c->step++;
        c->rnext = now + 1000;
        if (c->step >= 2)
            c->rstate = R_ANNOUNCED;
        break;
    default:
        break;
    }
}

/* A record from a response of another responder: conflicts (§9), duplicate answers (§7.4). */
bool mdns_responder_saw_record(struct mdns_core *c, struct iface *ifc, int family,
                               const struct dns_rr *rr)
{
    bool claiming = mdns_advertising(c) && c->rstate != R_OFF && c->rstate != R_WAIT;
    int fi = fam_i(family);
    if (rr->section == DNS_SEC_AUTHORITY)
        return false;
    if (mdns_advertising(c) && ifc->pending_mask[fi]) {
        /* §7.4: another host already gave this shared answer. */
        unsigned b = match_ours(c, ifc, rr);
        if ((b & REC_SHARED) && (uint64_t)rr->ttl * 2 >= MDNS_TTL_OTHER)
            ifc->pending_mask[fi] &= ~b;
    }
    return claiming && conflicts_with_us(c, ifc, rr);
}

/* Shared answers whose 20-120 ms delay is over (§6). */
static void flush_pending(struct mdns_core *c, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        struct iface *ifc = &c->ifaces[i];
        for (int fi = 0; fi < 2 && ifc->index; fi++) {
            if (!ifc->pending_at[fi] || ifc->pending_at[fi] > now)
                continue;
            unsigned m = ifc->pending_mask[fi];
            for (int r = 0; r < REC_COUNT; r++) {
                if (ifc->last_mcast[fi][r] && ifc->last_mcast[fi][r] + 1000 > now)
                    m &= ~(1u << r);
            }
            ifc->pending_at[fi] = 0;
            ifc->pending_mask[fi] = 0;
            if (mdns_advertising(c) && mdns_core_announced(c))
                mcast_response(c, ifc, fi ? 6 : 4, m, -1, now);
        }
    }
}

/* Truncated queries whose 400-500 ms wait is over (§7.2). */
static void flush_truncated(struct mdns_core *c, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        struct iface *ifc = &c->ifaces[i];
        for (int fi = 0; fi < 2 && ifc->index; fi++) {
            if (!ifc->tc_at[fi] || ifc->tc_at[fi] > now)
                continue;
            unsigned mask = ifc->tc_mask[fi], known = ifc->tc_known[fi];
            ifc->tc_at[fi] = 0;
            ifc->tc_mask[fi] = ifc->tc_known[fi] = 0;
            if (mdns_advertising(c) && mdns_core_announced(c) && (mask & ~known))
                answer_multicast(c, ifc, fi ? 6 : 4, mask, known, false, true, now);
        }
    }
}

void mdns_responder_timer(struct mdns_core *c, uint64_t now)
{
    responder_states(c, now);
    flush_pending(c, now);
    flush_truncated(c, now);
}
