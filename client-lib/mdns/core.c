/*
 * The mDNS engine (see core.h): a responder and a querier sharing one
 * record cache, driven by packets and timestamps only.
 *
 * Responder: probe (3 queries 250 ms apart, RFC 6762 §8.1), settle
 * simultaneous probes by comparing authority records (§8.2), rename on
 * conflict ("name (2)"), announce twice 1 s apart (§8.3), answer queries
 * (unique records at once, shared ones after 20-120 ms, §6), honour known
 * answers (§7.1), drop pending answers another host already gave (§7.4),
 * answer QU questions and legacy queries by unicast (§5.4, §6.7), never
 * multicast a record twice within 1 s per interface (§6), goodbye with TTL
 * 0 on stop and on change (§10.1).
 *
 * Querier: browse _sd._udp.local with the first query after 20-120 ms and
 * then 1 s doubling to 60 min (§5.2), known answers in queries, skip a
 * query another host just asked with the same known answers (§7.3), cache
 * by TTL with cache-flush (§10.2), refresh wanted records at 80/85/90/95%
 * of TTL (§5.2), resolve missing SRV/TXT/address records, and report
 * instances found / updated / lost.
 */
#include "core.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

enum rec {
    REC_PTR_SVC,  /* _sd._udp.local PTR instance (shared) */
    REC_PTR_ENUM, /* _services._dns-sd._udp.local PTR _sd._udp.local (shared) */
    REC_SRV,      /* unique */
    REC_TXT,      /* unique */
    REC_A,        /* unique, one record per address */
    REC_AAAA,     /* unique, one record per address */
    REC_COUNT
};
#define REC_ALL ((1u << REC_COUNT) - 1)
#define REC_SHARED ((1u << REC_PTR_SVC) | (1u << REC_PTR_ENUM))

enum rstate { R_OFF, R_WAIT, R_PROBING, R_ANNOUNCING, R_ANNOUNCED };

struct iface {
    int index; /* 0: free slot */
    unsigned n4, n6;
    uint8_t a4[MDNS_MAX_ADDRS][4];
    uint8_t a6[MDNS_MAX_ADDRS][16];
    uint64_t last_mcast[2][REC_COUNT]; /* [family v4=0 v6=1] */
    uint64_t pending_at[2];            /* delayed shared answers, 0: none */
    unsigned pending_mask[2];
    uint64_t dup_query_at[2]; /* when another host last asked our browse question */
};

struct centry {
    bool used;
    struct dns_name name;
    uint16_t type;
    int ifindex, family;
    uint32_t ttl;
    uint64_t received, expires;
    unsigned refresh_stage; /* refresh queries sent so far (0..4) */
    uint16_t rdlen;
    uint8_t *rdata;
};

struct view {
    bool used, reported, complete;
    struct dns_name name;
    uint8_t fp[16]; /* fingerprint of what was last reported */
    uint64_t resolve_at;
    unsigned resolve_tries;
    uint8_t txt_fp[16]; /* TXT last checked against contacts */
    int contact;        /* index of the recognised contact, or -1 */
};

struct contact {
    char peer_id[POS_PEER_ID_STRLEN];
    uint8_t key[32];
};

struct mdns_core {
    struct mdns_core_config cfg;
    mdns_event_fn cb;
    void *user;
    struct dns_name svc, enum_name, instance, host;
    char instance_label[DNS_MAX_LABEL + 1];
    char base_label[DNS_MAX_LABEL + 1];
    unsigned rename_n;
    unsigned conflicts; /* in the current window, for the §8.1 rate limit */
    uint64_t conflict_window;
    /* responder */
    enum rstate rstate;
    unsigned step; /* probes or announcements sent */
    uint64_t rnext;
    uint64_t epoch;
    bool stopped;
    uint8_t txt[MDNS_TXT_MAX];
    size_t txt_len;
    /* querier */
    uint64_t qnext, qlast; /* next and last browse query */
    uint64_t qinterval;
    struct iface ifaces[MDNS_MAX_IFACES];
    struct centry cache[MDNS_MAX_CACHE];
    struct view views[MDNS_MAX_VIEWS];
    struct contact *contacts;
    size_t n_contacts;
    /* output ring */
    struct mdns_packet *out;
    unsigned out_head, out_count, out_dropped;
};

static int fam_i(int family)
{
    return family == 6 ? 1 : 0;
}

static uint64_t rand_between(uint64_t lo, uint64_t hi)
{
    return lo + randombytes_uniform((uint32_t)(hi - lo + 1));
}

/* ---- output queue ---- */

static struct mdns_packet *out_slot(struct mdns_core *c)
{
    if (c->out_count == MDNS_MAX_OUT) {
        c->out_dropped++;
        return NULL;
    }
    return &c->out[(c->out_head + c->out_count) % MDNS_MAX_OUT];
}

static void out_commit(struct mdns_core *c)
{
    c->out_count++;
}

const struct mdns_packet *mdns_core_pop_packet(struct mdns_core *c)
{
    if (!c->out_count)
        return NULL;
    const struct mdns_packet *p = &c->out[c->out_head];
    c->out_head = (c->out_head + 1) % MDNS_MAX_OUT;
    c->out_count--;
    return p;
}

unsigned mdns_core_out_dropped(const struct mdns_core *c)
{
    return c->out_dropped;
}

/* ---- our records ---- */

static struct iface *iface_find(struct mdns_core *c, int ifindex)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        if (c->ifaces[i].index == ifindex && ifindex)
            return &c->ifaces[i];
    }
    return NULL;
}

static bool advertising(const struct mdns_core *c)
{
    return c->cfg.advertise && c->cfg.mode != POS_MDNS_DISABLED && !c->stopped;
}

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

static void set_dest_mcast(struct mdns_packet *p, int ifindex, int family)
{
    memset(&p->dest, 0, sizeof(p->dest));
    p->dest.ifindex = ifindex;
    p->dest.family = family;
    p->dest.multicast = true;
}

static bool family_usable(const struct iface *ifc, int family)
{
    return family == 4 ? ifc->n4 > 0 : ifc->n6 > 0;
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
        struct mdns_packet *p = out_slot(c);
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
        out_commit(c);
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
    struct mdns_packet *p = out_slot(c);
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
    out_commit(c);
}

/* ---- contacts-only labels and TXT ---- */

void mdns_presence_tag(const uint8_t key[32], uint64_t epoch, const uint8_t nonce[16],
                       uint8_t tag[16])
{
    uint8_t sub[32];
    crypto_kdf_derive_from_key(sub, sizeof(sub), epoch, "posprsnc", key);
    crypto_generichash(tag, 16, nonce, 16, sub, sizeof(sub));
    sodium_memzero(sub, sizeof(sub));
}

static void random_label(char *out, const char *prefix)
{
    uint8_t r[8];
    randombytes_buf(r, sizeof(r));
    char hex[17];
    sodium_bin2hex(hex, sizeof(hex), r, sizeof(r));
    snprintf(out, DNS_MAX_LABEL + 1, "%s%s", prefix, hex);
}

static uint64_t epoch_of(const struct mdns_core *c, uint64_t now)
{
    int64_t wall = (int64_t)now + c->cfg.wall_offset_ms;
    return wall > 0 ? (uint64_t)wall / MDNS_EPOCH_MS : 0;
}

static void build_private_txt(struct mdns_core *c, uint64_t now)
{
    uint8_t nonce[16], tag[16];
    char nb[sodium_base64_ENCODED_LEN(16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    char tb[sizeof(nb)];
    char s1[40], s2[40];
    randombytes_buf(nonce, sizeof(nonce));
    c->epoch = epoch_of(c, now);
    mdns_presence_tag(c->cfg.presence_key, c->epoch, nonce, tag);
    sodium_bin2base64(nb, sizeof(nb), nonce, 16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(tb, sizeof(tb), tag, 16, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(s1, sizeof(s1), "n=%s", nb);
    snprintf(s2, sizeof(s2), "t=%s", tb);
    const char *strs[2] = {s1, s2};
    c->txt_len = (size_t)mdns_core_txt_build(strs, 2, c->txt, sizeof(c->txt));
}

static void set_names(struct mdns_core *c, const char *host_label)
{
    dns_name_prepend(&c->instance, c->instance_label, strlen(c->instance_label), &c->svc);
    struct dns_name local;
    dns_name_from_text(&local, "local");
    dns_name_prepend(&c->host, host_label, strlen(host_label), &local);
}

static void start_probing(struct mdns_core *c, uint64_t now, uint64_t delay)
{
    c->rstate = R_WAIT;
    c->step = 0;
    c->rnext = now + delay;
}

/* New random instance, host, nonce and tag (contacts-only mode). */
static void rotate_private(struct mdns_core *c, uint64_t now)
{
    char host[DNS_MAX_LABEL + 1];
    random_label(c->instance_label, "");
    random_label(host, "h");
    set_names(c, host);
    build_private_txt(c, now);
}

static void goodbye_all(struct mdns_core *c, uint64_t now)
{
    if (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED)
        mcast_all(c, REC_ALL, 0, now);
}

/* ---- public lifecycle ---- */

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

struct mdns_core *mdns_core_new(const struct mdns_core_config *cfg, mdns_event_fn cb, void *user,
                                uint64_t now)
{
    struct mdns_core *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->out = calloc(MDNS_MAX_OUT, sizeof(*c->out));
    c->contacts = calloc(MDNS_MAX_CONTACTS, sizeof(*c->contacts));
    if (!c->out || !c->contacts) {
        mdns_core_del(c);
        return NULL;
    }
    c->cfg = *cfg;
    c->cb = cb;
    c->user = user;
    dns_name_from_text(&c->svc, "_sd._udp.local");
    dns_name_from_text(&c->enum_name, "_services._dns-sd._udp.local");
    if (advertising(c)) {
        if (cfg->mode == POS_MDNS_CONTACTS_ONLY) {
            rotate_private(c, now);
        } else {
            char host[DNS_MAX_LABEL + 1];
            snprintf(c->instance_label, sizeof(c->instance_label), "%s", cfg->instance);
            snprintf(c->base_label, sizeof(c->base_label), "%s", cfg->instance);
            random_label(host, "pos-");
            set_names(c, host);
            memcpy(c->txt, cfg->txt, cfg->txt_len);
            c->txt_len = cfg->txt_len;
        }
        /* §8.1: wait a random 0-250 ms before the first probe. */
        start_probing(c, now, rand_between(0, 250));
    }
    if (cfg->browse && cfg->mode != POS_MDNS_DISABLED) {
        c->qnext = now + rand_between(20, 120);
        c->qinterval = 1000;
    }
    return c;
}

void mdns_core_del(struct mdns_core *c)
{
    if (!c)
        return;
    for (int i = 0; i < MDNS_MAX_CACHE; i++)
        free(c->cache[i].rdata);
    if (c->contacts)
        sodium_memzero(c->contacts, MDNS_MAX_CONTACTS * sizeof(*c->contacts));
    free(c->contacts);
    free(c->out);
    sodium_memzero(c->cfg.presence_key, sizeof(c->cfg.presence_key));
    free(c);
}

int mdns_core_add_contact(struct mdns_core *c, const char *peer_id, const uint8_t key[32])
{
    uint8_t pk[32];
    if (!peer_id || pos_peer_id_parse(peer_id, strlen(peer_id), pk))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (c->n_contacts == MDNS_MAX_CONTACTS)
        return POS_P2P_ERR_MDNS_FULL;
    struct contact *ct = &c->contacts[c->n_contacts++];
    snprintf(ct->peer_id, sizeof(ct->peer_id), "%s", peer_id);
    memcpy(ct->key, key, 32);
    for (int i = 0; i < MDNS_MAX_VIEWS; i++)
        memset(c->views[i].txt_fp, 0, 16); /* re-check every TXT */
    return 0;
}

const char *mdns_core_instance(const struct mdns_core *c)
{
    return (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED) ? c->instance_label : "";
}

int mdns_core_announced(const struct mdns_core *c)
{
    return c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED;
}

void mdns_core_stop(struct mdns_core *c, uint64_t now)
{
    if (c->stopped)
        return;
    goodbye_all(c, now);
    c->stopped = true;
    c->rstate = R_OFF;
    c->qnext = 0;
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
    bool live = advertising(c) && mdns_core_announced(c);
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

/* ---- interfaces ---- */

static bool addrs_equal(const struct iface *ifc, const uint8_t (*a4)[4], size_t n4,
                        const uint8_t (*a6)[16], size_t n6)
{
    return ifc->n4 == n4 && ifc->n6 == n6 && (!n4 || !memcmp(ifc->a4, a4, n4 * 4)) &&
           (!n6 || !memcmp(ifc->a6, a6, n6 * 16));
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
static void goodbye_removed(struct mdns_core *c, const struct iface *old, const uint8_t (*a4)[4],
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

int mdns_core_iface_update(struct mdns_core *c, int ifindex, const uint8_t (*a4)[4], size_t n4,
                           const uint8_t (*a6)[16], size_t n6, uint64_t now)
{
    if (n4 > MDNS_MAX_ADDRS)
        n4 = MDNS_MAX_ADDRS;
    if (n6 > MDNS_MAX_ADDRS)
        n6 = MDNS_MAX_ADDRS;
    struct iface *ifc = iface_find(c, ifindex);
    if (ifc && addrs_equal(ifc, a4, n4, a6, n6))
        return 0;
    bool live = advertising(c) && (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED);
    bool rotate = live && c->cfg.mode == POS_MDNS_CONTACTS_ONLY;
    if (rotate)
        goodbye_all(c, now); /* everything goes: a new identity follows */
    else if (ifc && live)
        goodbye_removed(c, ifc, a4, n4, a6, n6);
    if (!n4 && !n6) {
        if (ifc)
            memset(ifc, 0, sizeof(*ifc));
        return 0;
    }
    if (!ifc) {
        ifc = iface_find(c, 0);
        for (int i = 0; !ifc && i < MDNS_MAX_IFACES; i++) {
            if (!c->ifaces[i].index)
                ifc = &c->ifaces[i];
        }
        if (!ifc)
            return POS_P2P_ERR_MDNS_FULL;
        memset(ifc, 0, sizeof(*ifc));
        ifc->index = ifindex;
    }
    ifc->n4 = (unsigned)n4;
    ifc->n6 = (unsigned)n6;
    if (n4)
        memcpy(ifc->a4, a4, n4 * 4);
    if (n6)
        memcpy(ifc->a6, a6, n6 * 16);
    memset(ifc->last_mcast, 0, sizeof(ifc->last_mcast));
    if (!advertising(c))
        return 0;
    if (rotate) {
        /* A new address would link old and new advertisements: rotate everything. */
        rotate_private(c, now);
        start_probing(c, now, rand_between(0, 250));
    } else if (live) {
        c->rstate = R_ANNOUNCING;
        c->step = 0;
        c->rnext = now;
    }
    return 0;
}

/* ---- cache ---- */

static struct centry *cache_find(struct mdns_core *c, const struct dns_rr *rr, int ifindex,
                                 int family)
{
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        struct centry *e = &c->cache[i];
        if (e->used && e->type == rr->type && e->ifindex == ifindex && e->family == family &&
            e->rdlen == rr->rdlen && dns_name_equal(&e->name, &rr->name) &&
            !memcmp(e->rdata, rr->rdata, rr->rdlen))
            return e;
    }
    return NULL;
}

static void cache_drop(struct centry *e)
{
    free(e->rdata);
    memset(e, 0, sizeof(*e));
}

static struct centry *cache_slot(struct mdns_core *c)
{
    struct centry *victim = NULL;
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        if (!c->cache[i].used)
            return &c->cache[i];
        if (!victim || c->cache[i].expires < victim->expires)
            victim = &c->cache[i];
    }
    cache_drop(victim);
    return victim;
}

static bool is_wanted_type(uint16_t t)
{
    return t == DNS_TYPE_PTR || t == DNS_TYPE_SRV || t == DNS_TYPE_TXT || t == DNS_TYPE_A ||
           t == DNS_TYPE_AAAA;
}

static void cache_add(struct mdns_core *c, const struct dns_rr *rr, int ifindex, int family,
                      uint64_t now)
{
    if (!is_wanted_type(rr->type) || rr->rclass != DNS_CLASS_IN || rr->oversized)
        return;
    if (rr->cache_flush) {
        /* §10.2: older records of this name and type are stale in 1 s. */
        for (int i = 0; i < MDNS_MAX_CACHE; i++) {
            struct centry *e = &c->cache[i];
            if (e->used && e->type == rr->type && e->ifindex == ifindex && e->family == family &&
                e->received + 1000 < now && dns_name_equal(&e->name, &rr->name) &&
                e->expires > now + 1000)
                e->expires = now + 1000;
        }
    }
    struct centry *e = cache_find(c, rr, ifindex, family);
    if (rr->ttl == 0) {
        /* A goodbye: the record goes now (§10.1 allows 1 s; we act at once). */
        if (e)
            e->expires = now;
        return;
    }
    if (!e) {
        e = cache_slot(c);
        e->rdata = calloc(1, rr->rdlen ? rr->rdlen : 1);
        if (!e->rdata)
            return;
        e->used = true;
        e->name = rr->name;
        e->type = rr->type;
        e->ifindex = ifindex;
        e->family = family;
        e->rdlen = rr->rdlen;
        memcpy(e->rdata, rr->rdata, rr->rdlen);
    }
    uint32_t ttl = rr->ttl > 7 * 24 * 3600 ? 7 * 24 * 3600 : rr->ttl;
    e->ttl = ttl;
    e->received = now;
    e->expires = now + (uint64_t)ttl * 1000;
    e->refresh_stage = 0;
}

static uint64_t refresh_at(const struct centry *e)
{
    /* 80, 85, 90, 95% of the TTL, plus up to 2% jitter (fixed per entry). */
    uint64_t ttl_ms = (uint64_t)e->ttl * 1000;
    uint64_t jitter = (ttl_ms * 2 / 100) * (e->rdata[0] % 16) / 16;
    return e->received + ttl_ms * (80 + 5 * e->refresh_stage) / 100 + jitter;
}

/* ---- views (browsed instances) ---- */

static bool svc_ptr(const struct mdns_core *c, const struct centry *e)
{
    return e->type == DNS_TYPE_PTR && dns_name_equal(&e->name, &c->svc);
}

static bool rdata_name(const struct centry *e, size_t off, struct dns_name *out)
{
    size_t p = off;
    return e->rdlen > off && dns_read_name(e->rdata, e->rdlen, &p, out) == 0;
}

static bool view_alive(const struct mdns_core *c, const struct view *v, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        const struct centry *e = &c->cache[i];
        struct dns_name t;
        if (e->used && e->expires > now && svc_ptr(c, e) && rdata_name(e, 0, &t) &&
            dns_name_equal(&t, &v->name))
            return true;
    }
    return false;
}

static struct view *view_find(struct mdns_core *c, const struct dns_name *n)
{
    for (int i = 0; i < MDNS_MAX_VIEWS; i++) {
        if (c->views[i].used && dns_name_equal(&c->views[i].name, n))
            return &c->views[i];
    }
    return NULL;
}

#define VIEW_MAX_ADDRS 16
#define VIEW_MAX_TXT 32

struct collected {
    bool has_srv, has_txt;
    uint16_t port;
    struct dns_name host;
    const struct centry *txt;
    unsigned n_addrs;
    char addrs[VIEW_MAX_ADDRS][64];
    char txt_strs[VIEW_MAX_TXT][256];
    const char *txt_ptrs[VIEW_MAX_TXT];
    unsigned n_txt;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void add_addr(struct collected *k, const struct centry *e)
{
    char s[64];
    if (e->type == DNS_TYPE_A) {
        snprintf(s, sizeof(s), "%u.%u.%u.%u", e->rdata[0], e->rdata[1], e->rdata[2], e->rdata[3]);
    } else {
        /* Link-local addresses get %ifindex so that they are usable. */
        inet_ntop(AF_INET6, e->rdata, s, sizeof(s));
        if (e->rdata[0] == 0xfe && (e->rdata[1] & 0xc0) == 0x80) {
            size_t o = strlen(s);
            snprintf(s + o, sizeof(s) - o, "%%%d", e->ifindex);
        }
    }
    for (unsigned i = 0; i < k->n_addrs; i++) {
        if (!strcmp(k->addrs[i], s))
            return;
    }
    if (k->n_addrs < VIEW_MAX_ADDRS)
        snprintf(k->addrs[k->n_addrs++], 64, "%s", s);
}

static void collect(const struct mdns_core *c, const struct dns_name *inst, struct collected *k,
                    uint64_t now)
{
    const struct centry *srv = NULL;
    memset(k, 0, offsetof(struct collected, addrs));
    k->n_addrs = 0;
    k->n_txt = 0;
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        const struct centry *e = &c->cache[i];
        if (!e->used || e->expires <= now || !dns_name_equal(&e->name, inst))
            continue;
        /* After a change both old and new data live for 1 s (§10.2): newest wins. */
        if (e->type == DNS_TYPE_SRV && (!srv || e->received >= srv->received) &&
            rdata_name(e, 6, &k->host)) {
            srv = e;
            k->has_srv = true;
            k->port = (uint16_t)((e->rdata[4] << 8) | e->rdata[5]);
        } else if (e->type == DNS_TYPE_TXT && (!k->txt || e->received >= k->txt->received)) {
            k->has_txt = true;
            k->txt = e;
        }
    }
    if (k->has_srv) {
        for (int i = 0; i < MDNS_MAX_CACHE; i++) {
            const struct centry *e = &c->cache[i];
            if (e->used && e->expires > now &&
                (e->type == DNS_TYPE_A || e->type == DNS_TYPE_AAAA) &&
                dns_name_equal(&e->name, &k->host))
                add_addr(k, e);
        }
        qsort(k->addrs, k->n_addrs, sizeof(k->addrs[0]), cmp_str);
    }
    if (k->txt) {
        /* TXT rdata: length-prefixed strings, read within rdlen only. */
        size_t p = 0;
        while (p < k->txt->rdlen && k->n_txt < VIEW_MAX_TXT) {
            size_t l = k->txt->rdata[p];
            if (l > k->txt->rdlen - p - 1)
                break;
            if (l) {
                memcpy(k->txt_strs[k->n_txt], k->txt->rdata + p + 1, l);
                k->txt_strs[k->n_txt][l] = 0;
                k->txt_ptrs[k->n_txt] = k->txt_strs[k->n_txt];
                k->n_txt++;
            }
            p += l + 1;
        }
    }
}

static const char *txt_get(const struct collected *k, const char *key)
{
    size_t kl = strlen(key);
    for (unsigned i = 0; i < k->n_txt; i++) {
        if (!strncmp(k->txt_strs[i], key, kl) && k->txt_strs[i][kl] == '=')
            return k->txt_strs[i] + kl + 1;
    }
    return NULL;
}

static int recognise_contact(const struct mdns_core *c, const struct collected *k, uint64_t now)
{
    const char *n = txt_get(k, "n"), *t = txt_get(k, "t");
    uint8_t nonce[16], tag[16], want[16];
    size_t bl;
    if (!n || !t || !c->n_contacts)
        return -1;
    if (sodium_base642bin(nonce, sizeof(nonce), n, strlen(n), NULL, &bl, NULL,
                          sodium_base64_VARIANT_ORIGINAL_NO_PADDING) ||
        bl != 16)
        return -1;
    if (sodium_base642bin(tag, sizeof(tag), t, strlen(t), NULL, &bl, NULL,
                          sodium_base64_VARIANT_ORIGINAL_NO_PADDING) ||
        bl != 16)
        return -1;
    uint64_t ep = epoch_of(c, now);
    for (size_t i = 0; i < c->n_contacts; i++) {
        /* Adjacent epochs too, for clocks a little apart. */
        for (uint64_t e = ep ? ep - 1 : 0; e <= ep + 1; e++) {
            mdns_presence_tag(c->contacts[i].key, e, nonce, want);
            if (!sodium_memcmp(want, tag, 16))
                return (int)i;
        }
    }
    return -1;
}

static void emit(struct mdns_core *c, struct view *v, enum pos_mdns_event ev,
                 const struct collected *k)
{
    if (!c->cb)
        return;
    char inst[DNS_MAX_LABEL + 1] = "";
    char pid[POS_PEER_ID_STRLEN];
    const char *addr_ptrs[VIEW_MAX_ADDRS];
    pos_mdns_peer p;
    memset(&p, 0, sizeof(p));
    dns_name_first_label(&v->name, inst, sizeof(inst));
    p.instance = inst;
    uint8_t pk[32];
    size_t il = strlen(inst);
    if (v->contact >= 0 && (size_t)v->contact < c->n_contacts) {
        p.peer_id = c->contacts[v->contact].peer_id;
        p.contact = 1;
    } else if (il >= POS_PEER_ID_LEN && (il == POS_PEER_ID_LEN || !strncmp(inst + 43, " (", 2)) &&
               !pos_peer_id_parse(inst, POS_PEER_ID_LEN, pk)) {
        /* The instance is a peer id, maybe renamed "id (2)" after a conflict. */
        memcpy(pid, inst, POS_PEER_ID_LEN);
        pid[POS_PEER_ID_LEN] = 0;
        p.peer_id = pid;
    }
    if (k) {
        p.name = txt_get(k, "name");
        p.os = txt_get(k, "operating_system");
        if (!p.os)
            p.os = txt_get(k, "os");
        p.model = txt_get(k, "device_model");
        p.version = txt_get(k, "version");
        for (unsigned i = 0; i < k->n_addrs; i++)
            addr_ptrs[i] = k->addrs[i];
        p.addrs = addr_ptrs;
        p.n_addrs = k->n_addrs;
        p.port = k->port;
        p.txt = k->txt_ptrs;
        p.n_txt = k->n_txt;
    }
    c->cb(c->user, ev, &p);
}

static void fingerprint(const struct collected *k, int contact, uint8_t fp[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, (const uint8_t *)&k->port, sizeof(k->port));
    crypto_generichash_update(&st, (const uint8_t *)&contact, sizeof(contact));
    for (unsigned i = 0; i < k->n_addrs; i++)
        crypto_generichash_update(&st, (const uint8_t *)k->addrs[i], strlen(k->addrs[i]) + 1);
    for (unsigned i = 0; i < k->n_txt; i++)
        crypto_generichash_update(&st, (const uint8_t *)k->txt_strs[i], strlen(k->txt_strs[i]) + 1);
    crypto_generichash_final(&st, fp, 16);
}

static bool is_self(const struct mdns_core *c, const struct dns_name *n)
{
    return advertising(c) && c->rstate != R_OFF && dns_name_equal(n, &c->instance);
}

/* Brings views up to date with the cache and reports what changed. */
static void update_views(struct mdns_core *c, uint64_t now)
{
    if (!c->cfg.browse || c->cfg.mode == POS_MDNS_DISABLED)
        return;
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        struct centry *e = &c->cache[i];
        struct dns_name t;
        if (!e->used || e->expires <= now || !svc_ptr(c, e) || !rdata_name(e, 0, &t) ||
            is_self(c, &t) || view_find(c, &t))
            continue;
        for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
            struct view *v = &c->views[j];
            if (!v->used) {
                memset(v, 0, sizeof(*v));
                v->used = true;
                v->name = t;
                v->contact = -1;
                v->resolve_at = now + 200; /* responders usually send all at once */
                break;
            }
        }
    }
    struct collected *k = malloc(sizeof(*k));
    if (!k)
        return;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        struct view *v = &c->views[j];
        if (!v->used)
            continue;
        if (!view_alive(c, v, now) || is_self(c, &v->name)) {
            if (v->reported)
                emit(c, v, POS_MDNS_LOST, NULL);
            v->used = false;
            continue;
        }
        collect(c, &v->name, k, now);
        v->complete = k->has_srv && k->has_txt && k->n_addrs;
        if (!v->complete) {
            /* SRV, TXT or every address expired: not reachable any more. */
            if (v->reported)
                emit(c, v, POS_MDNS_LOST, NULL);
            v->reported = false;
            continue;
        }
        uint8_t tfp[16];
        crypto_generichash(tfp, sizeof(tfp), k->txt->rdata, k->txt->rdlen, NULL, 0);
        if (memcmp(v->txt_fp, tfp, 16)) {
            v->contact = recognise_contact(c, k, now);
            memcpy(v->txt_fp, tfp, 16);
        }
        uint8_t fp[16];
        fingerprint(k, v->contact, fp);
        if (!v->reported) {
            v->reported = true;
            memcpy(v->fp, fp, 16);
            emit(c, v, POS_MDNS_FOUND, k);
        } else if (memcmp(v->fp, fp, 16)) {
            memcpy(v->fp, fp, 16);
            emit(c, v, POS_MDNS_UPDATED, k);
        }
    }
    free(k);
}

/* ---- queries we send ---- */

struct qitem {
    struct dns_name name;
    uint16_t type;
};

#define MAX_QITEMS 16

/* Known answers for the browse question on one interface and family (§7.1). */
static void write_known_answers(struct mdns_core *c, struct dns_writer *w, int ifindex, int family,
                                uint16_t *an, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        struct centry *e = &c->cache[i];
        if (!e->used || e->ifindex != ifindex || e->family != family || !svc_ptr(c, e))
            continue;
        uint64_t left = e->expires > now ? e->expires - now : 0;
        if (left * 2 < (uint64_t)e->ttl * 1000)
            continue;
        struct dns_writer_mark mk = dns_writer_mark(w);
        dns_write_rr(w, &e->name, e->type, false, (uint32_t)(left / 1000), e->rdata, e->rdlen);
        if (w->overflow) {
            dns_writer_rewind(w, mk);
            return;
        }
        (*an)++;
    }
}

static void send_query(struct mdns_core *c, struct iface *ifc, int family, const struct qitem *q,
                       size_t n, bool with_known, uint64_t now)
{
    if (!n || !family_usable(ifc, family))
        return;
    struct mdns_packet *p = out_slot(c);
    if (!p)
        return;
    struct dns_writer w;
    dns_writer_init(&w, p->data, sizeof(p->data));
    struct dns_header h = {0};
    for (size_t i = 0; i < n; i++) {
        dns_write_question(&w, &q[i].name, q[i].type, false);
        h.qd++;
    }
    if (with_known)
        write_known_answers(c, &w, ifc->index, family, &h.an, now);
    if (w.overflow)
        return;
    dns_write_header(&w, &h);
    p->len = w.len;
    set_dest_mcast(p, ifc->index, family);
    out_commit(c);
}

static unsigned known_count(const struct mdns_core *c, int ifindex, int family, uint64_t now)
{
    unsigned n = 0;
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        const struct centry *e = &c->cache[i];
        if (e->used && e->ifindex == ifindex && e->family == family && svc_ptr(c, e) &&
            e->expires > now && (e->expires - now) * 2 >= (uint64_t)e->ttl * 1000)
            n++;
    }
    return n;
}

static void browse_query(struct mdns_core *c, uint64_t now)
{
    struct qitem q = {c->svc, DNS_TYPE_PTR};
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        struct iface *ifc = &c->ifaces[i];
        if (!ifc->index)
            continue;
        for (int f = 4; f <= 6; f += 2) {
            /*
             * §7.3: another host asked the same question with (at least)
             * our known answers within the last half interval: ours is
             * as good as sent.
             */
            uint64_t seen = ifc->dup_query_at[fam_i(f)];
            if (seen && c->qlast && seen > c->qlast && seen >= now - (now - c->qlast) / 2)
                continue;
            send_query(c, ifc, f, &q, 1, true, now);
        }
    }
}

/* ---- handling received packets ---- */

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

static void rename_after_conflict(struct mdns_core *c, uint64_t now)
{
    if (now > c->conflict_window + 10000) {
        c->conflict_window = now;
        c->conflicts = 0;
    }
    c->conflicts++;
    if (c->cfg.mode == POS_MDNS_CONTACTS_ONLY) {
        rotate_private(c, now);
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
        random_label(host, "pos-");
        set_names(c, host);
    }
    /* §8.1: after 15 conflicts within 10 s, wait 5 s before probing again. */
    start_probing(c, now, c->conflicts > 15 ? 5000 : 0);
}

/* Canonical records for the §8.2 tie-break: type (2 bytes) then rdata. */
struct tierec {
    uint16_t len;
    uint8_t b[2 + DNS_MAX_RDATA];
};

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

struct rx {
    struct dns_reader r;
    struct dns_question q;
    struct dns_rr rr;
    struct tierec theirs[4], ours[2];
};

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
                             unsigned known, bool probe, uint64_t now)
{
    unsigned answer = with_additionals(mask) & ~known;
    int fi = fam_i(family);
    if (!probe) {
        /* §6: no record multicast twice within a second on one link. */
        for (int r = 0; r < REC_COUNT; r++) {
            if (ifc->last_mcast[fi][r] && ifc->last_mcast[fi][r] + 1000 > now)
                answer &= ~(1u << r);
        }
    }
    if (!answer)
        return;
    if (!(mask & REC_SHARED) || probe) {
        mcast_response(c, ifc, family, answer, -1, now);
        return;
    }
    /* Shared answers wait so that answers from several hosts aggregate. */
    uint64_t at = now + rand_between(20, 120);
    if (!ifc->pending_at[fi] || at < ifc->pending_at[fi])
        ifc->pending_at[fi] = at;
    ifc->pending_mask[fi] |= answer;
}

static void handle_query(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                         const uint8_t *src, uint16_t src_port, uint64_t now)
{
    bool responding = advertising(c) && (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED);
    bool probing = advertising(c) && c->rstate == R_PROBING;
    struct query_summary qs;
    read_query(c, x, ifc, probing, &qs);
    bool from_us = our_addr(c, family == 4 ? DNS_TYPE_A : DNS_TYPE_AAAA, src, family == 4 ? 4 : 16);
    if (qs.browse_q && !from_us && qs.browse_known >= known_count(c, ifc->index, family, now))
        ifc->dup_query_at[fam_i(family)] = now; /* §7.3 */
    if (probing && qs.n_theirs && lost_tiebreak(c, x, qs.n_theirs)) {
        start_probing(c, now, 1000);
        return;
    }
    unsigned mask = qs.mask;
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
    if (qs.qu_mask && !probe) {
        /* §5.4: the asker wants a unicast reply for these questions. */
        send_response(c, ifc, &ud, with_additionals(qs.qu_mask) & ~qs.known, -1, NULL, 0);
        mask &= ~qs.qu_mask;
        if (!(mask & ~qs.known))
            return;
    }
    answer_multicast(c, ifc, family, mask, qs.known, probe, now);
}

static void handle_response(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                            uint64_t now)
{
    bool conflict = false;
    bool claiming = advertising(c) && c->rstate != R_OFF && c->rstate != R_WAIT;
    int fi = fam_i(family);
    while (dns_read_question(&x->r, &x->q) == 0)
        ;
    while (dns_read_rr(&x->r, &x->rr) == 0) {
        if (x->rr.section == DNS_SEC_AUTHORITY)
            continue;
        if (claiming && conflicts_with_us(c, ifc, &x->rr))
            conflict = true;
        if (advertising(c) && ifc->pending_mask[fi]) {
            /* §7.4: another host already gave this shared answer. */
            unsigned b = match_ours(c, ifc, &x->rr);
            uint32_t full = MDNS_TTL_OTHER;
            if ((b & REC_SHARED) && (uint64_t)x->rr.ttl * 2 >= full)
                ifc->pending_mask[fi] &= ~b;
        }
        /*
         * Our own records, looped back, are cached too: they then go out as
         * known answers in our browse queries, so our own responder (which
         * cannot tell its querier from another process on this host) stays
         * quiet. They are never reported (is_self).
         */
        if (c->cfg.browse)
            cache_add(c, &x->rr, ifc->index, family, now);
    }
    if (conflict)
        rename_after_conflict(c, now);
}

int mdns_core_receive(struct mdns_core *c, const uint8_t *data, size_t len, int ifindex,
                      int src_family, const uint8_t *src, uint16_t src_port, uint64_t now)
{
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return 0; /* disabled: nothing is answered, nothing learnt */
    struct iface *ifc = iface_find(c, ifindex);
    if (!ifc)
        return 0;
    struct rx *x = malloc(sizeof(*x));
    if (!x)
        return POS_P2P_ERR_NOMEM;
    /* First pass: validate the whole packet, so a bad one changes nothing. */
    int rc = dns_reader_init(&x->r, data, len);
    while (rc == 0 && (rc = dns_read_question(&x->r, &x->q)) == 0)
        ;
    if (rc == DNS_ERR_END)
        while ((rc = dns_read_rr(&x->r, &x->rr)) == 0)
            ;
    if (rc != DNS_ERR_END) {
        free(x);
        return rc;
    }
    dns_reader_init(&x->r, data, len);
    uint16_t opcode = (x->r.h.flags >> 11) & 0xF;
    if (opcode == 0) {
        if (x->r.h.flags & DNS_FLAG_QR) {
            /* §6: responses must come from port 5353. */
            if (src_port == MDNS_PORT)
                handle_response(c, x, ifc, src_family, now);
        } else {
            handle_query(c, x, ifc, src_family, src, src_port, now);
        }
    }
    free(x);
    update_views(c, now);
    return 0;
}

/* ---- timers ---- */

static void responder_timer(struct mdns_core *c, uint64_t now)
{
    if (!advertising(c))
        return;
    if (c->cfg.mode == POS_MDNS_CONTACTS_ONLY && c->rstate == R_ANNOUNCED &&
        epoch_of(c, now) != c->epoch) {
        /* A new epoch: new instance, host, nonce and tag. */
        goodbye_all(c, now);
        rotate_private(c, now);
        start_probing(c, now, rand_between(0, 250));
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
            responder_timer(c, now);
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

static bool wanted(const struct mdns_core *c, const struct centry *e, uint64_t now)
{
    if (!c->cfg.browse)
        return false;
    if (svc_ptr(c, e))
        return true;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        const struct view *v = &c->views[j];
        if (!v->used)
            continue;
        if (dns_name_equal(&e->name, &v->name))
            return true;
        if (e->type != DNS_TYPE_A && e->type != DNS_TYPE_AAAA)
            continue;
        for (int i = 0; i < MDNS_MAX_CACHE; i++) {
            const struct centry *s = &c->cache[i];
            struct dns_name t;
            if (s->used && s->type == DNS_TYPE_SRV && dns_name_equal(&s->name, &v->name) &&
                rdata_name(s, 6, &t) && dns_name_equal(&t, &e->name))
                return true;
        }
    }
    return false;
}

static void add_qitem(struct qitem *q, size_t *n, const struct dns_name *name, uint16_t type)
{
    for (size_t i = 0; i < *n; i++) {
        if (q[i].type == type && dns_name_equal(&q[i].name, name))
            return;
    }
    if (*n < MAX_QITEMS) {
        q[*n].name = *name;
        q[*n].type = type;
        (*n)++;
    }
}

/* Expiry and the 80/85/90/95% refresh queries (§5.2). */
static void cache_timer(struct mdns_core *c, uint64_t now)
{
    struct qitem *q = malloc(sizeof(*q) * MAX_QITEMS);
    if (!q)
        return;
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        struct iface *ifc = &c->ifaces[i];
        for (int f = 4; f <= 6 && ifc->index; f += 2) {
            size_t n = 0;
            bool due = false;
            for (int k = 0; k < MDNS_MAX_CACHE && !due; k++) {
                struct centry *e = &c->cache[k];
                due = e->used && e->ifindex == ifc->index && e->family == f &&
                      e->refresh_stage < 4 && refresh_at(e) <= now && e->expires > now;
            }
            /*
             * One query per refresh step: records due within the jitter
             * window (3% of their TTL) ride along with the first one due.
             */
            for (int k = 0; due && k < MDNS_MAX_CACHE; k++) {
                struct centry *e = &c->cache[k];
                if (!e->used || e->ifindex != ifc->index || e->family != f ||
                    e->refresh_stage >= 4 || e->expires <= now ||
                    refresh_at(e) > now + (uint64_t)e->ttl * 30)
                    continue;
                e->refresh_stage++;
                if (wanted(c, e, now))
                    add_qitem(q, &n, &e->name, e->type);
            }
            send_query(c, ifc, f, q, n, false, now);
        }
    }
    free(q);
    for (int k = 0; k < MDNS_MAX_CACHE; k++) {
        struct centry *e = &c->cache[k];
        if (e->used && (e->expires <= now || !iface_find(c, e->ifindex)))
            cache_drop(e);
    }
}

/* Ask for what a found instance still lacks (SRV, TXT, addresses). */
static void resolve_timer(struct mdns_core *c, uint64_t now)
{
    struct collected *k = malloc(sizeof(*k));
    struct qitem *q = malloc(sizeof(*q) * MAX_QITEMS);
    if (!k || !q)
        goto out;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        struct view *v = &c->views[j];
        if (!v->used || v->complete || v->resolve_tries >= 4 || v->resolve_at > now)
            continue;
        size_t n = 0;
        collect(c, &v->name, k, now);
        if (!k->has_srv)
            add_qitem(q, &n, &v->name, DNS_TYPE_SRV);
        if (!k->has_txt)
            add_qitem(q, &n, &v->name, DNS_TYPE_TXT);
        if (k->has_srv && !k->n_addrs) {
            add_qitem(q, &n, &k->host, DNS_TYPE_A);
            add_qitem(q, &n, &k->host, DNS_TYPE_AAAA);
        }
        for (int i = 0; i < MDNS_MAX_IFACES; i++) {
            if (!c->ifaces[i].index)
                continue;
            send_query(c, &c->ifaces[i], 4, q, n, false, now);
            send_query(c, &c->ifaces[i], 6, q, n, false, now);
        }
        v->resolve_at = now + (1000u << v->resolve_tries);
        v->resolve_tries++;
    }
out:
    free(k);
    free(q);
}

void mdns_core_timeout(struct mdns_core *c, uint64_t now)
{
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return;
    responder_timer(c, now);
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
            if (advertising(c) && mdns_core_announced(c))
                mcast_response(c, ifc, fi ? 6 : 4, m, -1, now);
        }
    }
    if (c->qnext && c->qnext <= now) {
        browse_query(c, now);
        c->qlast = now;
        c->qnext = now + c->qinterval;
        c->qinterval = c->qinterval * 2 > 3600000 ? 3600000 : c->qinterval * 2;
    }
    cache_timer(c, now);
    resolve_timer(c, now);
    update_views(c, now);
}

static void earliest(uint64_t *best, uint64_t t)
{
    if (t && t < *best)
        *best = t;
}

uint64_t mdns_core_next_deadline(const struct mdns_core *c)
{
    uint64_t best = UINT64_MAX;
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return best;
    if (advertising(c) && c->rstate != R_ANNOUNCED && c->rstate != R_OFF)
        earliest(&best, c->rnext);
    if (advertising(c) && c->cfg.mode == POS_MDNS_CONTACTS_ONLY && c->rstate == R_ANNOUNCED) {
        uint64_t next_epoch = (c->epoch + 1) * MDNS_EPOCH_MS;
        int64_t mono = (int64_t)next_epoch - c->cfg.wall_offset_ms;
        earliest(&best, mono > 0 ? (uint64_t)mono : 1);
    }
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        earliest(&best, c->ifaces[i].pending_at[0]);
        earliest(&best, c->ifaces[i].pending_at[1]);
    }
    earliest(&best, c->qnext);
    for (int k = 0; k < MDNS_MAX_CACHE; k++) {
        const struct centry *e = &c->cache[k];
        if (!e->used)
            continue;
        earliest(&best, e->expires);
        if (e->refresh_stage < 4)
            earliest(&best, refresh_at(e));
    }
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        const struct view *v = &c->views[j];
        if (v->used && !v->complete && v->resolve_tries < 4)
            earliest(&best, v->resolve_at);
    }
    return best;
}
