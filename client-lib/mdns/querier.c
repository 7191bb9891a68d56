/*
 * The querier half of the mDNS engine (see engine.h): browse
 * _sd._udp.local, cache what responders say, resolve instances and report
 * them found / updated / lost.
 *
 * First query after 20-120 ms, then 1 s doubling to 60 min (RFC 6762 §5.2),
 * the first one on an interface and family with the QU bit unless port
 * 5353 is shared on this host (§5.4, §15.1), with known answers (§7.1), over
 * several packets with TC when they do not fit one (§7.2); a query another
 * host just asked with the same known answers counts as ours (§7.3); cache
 * by TTL with cache-flush (§10.2), dropping at once what an interface that
 * went away taught; refresh wanted records at 80/85/90/95% of TTL (§5.2);
 * ask for missing SRV / TXT / addresses; recognise contacts-only
 * advertisements of contacts by their presence tag.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "txt.h"

/* FNV-1a of a lower-cased name in wire form, so that equal names hash alike. */
static uint32_t bytes_hash(const uint8_t *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32u : p[i])) * 16777619u;
    return h;
}

static uint32_t name_hash(const struct dns_name *n)
{
    return bytes_hash(n->b, n->len);
}

/* A PTR rdata is a canonical name: compared in place, no parsing. */
static bool ptr_targets(const struct centry *e, uint32_t hash, const struct dns_name *n)
{
    if (e->thash != hash || e->rdlen != n->len)
        return false;
    struct dns_name t;
    t.len = e->rdlen;
    memcpy(t.b, e->rdata, e->rdlen);
    return dns_name_equal(&t, n);
}

static bool same_name(uint32_t ha, const struct dns_name *a, uint32_t hb, const struct dns_name *b)
{
    return ha == hb && dns_name_equal(a, b);
}

/*
 * A cached record changed (added, refreshed, withdrawn, dropped): the views
 * it belongs to need a new look. This keeps the work per packet at the size
 * of the view table, not views times cache.
 */
static void touched(struct mdns_core *c, const struct centry *e)
{
    if (e->type == DNS_TYPE_PTR)
        c->ptr_dirty = true;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        struct view *v = &c->views[j];
        if (v->used && (same_name(v->hash, &v->name, e->hash, &e->name) ||
                        (v->host.len && same_name(v->host_hash, &v->host, e->hash, &e->name))))
            v->dirty = true;
    }
}

static struct centry *cache_find(struct mdns_core *c, const struct dns_rr *rr, uint32_t hash,
                                 int ifindex, int family)
{
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        struct centry *e = &c->cache[i];
        if (e->used && e->hash == hash && e->type == rr->type && e->ifindex == ifindex &&
            e->family == family && e->rdlen == rr->rdlen && dns_name_equal(&e->name, &rr->name) &&
            !memcmp(e->rdata, rr->rdata, rr->rdlen))
            return e;
    }
    return NULL;
}

static void cache_drop(struct mdns_core *c, struct centry *e)
{
    touched(c, e);
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
    cache_drop(c, victim);
    return victim;
}

static bool is_wanted_type(uint16_t t)
{
    return t == DNS_TYPE_PTR || t == DNS_TYPE_SRV || t == DNS_TYPE_TXT || t == DNS_TYPE_A ||
           t == DNS_TYPE_AAAA;
}

void mdns_cache_add(struct mdns_core *c, const struct dns_rr *rr, int ifindex, int family,
                    uint64_t now)
{
    if (!is_wanted_type(rr->type) || rr->rclass != DNS_CLASS_IN || rr->oversized)
        return;
    uint32_t hash = name_hash(&rr->name);
    if (rr->cache_flush) {
        /* §10.2: older records of this name and type are stale in 1 s. */
        for (int i = 0; i < MDNS_MAX_CACHE; i++) {
            struct centry *e = &c->cache[i];
            if (e->used && e->hash == hash && e->type == rr->type && e->ifindex == ifindex &&
                e->family == family && e->received + 1000 < now &&
                dns_name_equal(&e->name, &rr->name) && e->expires > now + 1000)
                e->expires = now + 1000;
        }
    }
    struct centry *e = cache_find(c, rr, hash, ifindex, family);
    if (rr->ttl == 0) {
        /* A goodbye: the record goes now (§10.1 allows 1 s; we act at once). */
        if (e)
            cache_drop(c, e);
        return;
    }
    if (!e) {
        e = cache_slot(c);
        e->rdata = calloc(1, rr->rdlen ? rr->rdlen : 1);
        if (!e->rdata)
            return;
        e->used = true;
        e->hash = hash;
        e->thash = rr->type == DNS_TYPE_PTR ? bytes_hash(rr->rdata, rr->rdlen) : 0;
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
    touched(c, e);
}

uint64_t mdns_refresh_at(const struct centry *e)
{
    /* 80, 85, 90, 95% of the TTL, plus up to 2% jitter (fixed per entry). */
    uint64_t ttl_ms = (uint64_t)e->ttl * 1000;
    uint64_t jitter = (ttl_ms * 2 / 100) * (e->rdata[0] % 16) / 16;
    return e->received + ttl_ms * (80 + 5 * e->refresh_stage) / 100 + jitter;
}

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
        if (e->used && e->expires > now && ptr_targets(e, v->hash, &v->name) && svc_ptr(c, e))
            return true;
    }
    return false;
}

#define VIEW_MAX_ADDRS 16
/* Every non-empty TXT string takes at least 2 bytes of rdata: no string is left out. */
#define VIEW_MAX_TXT (DNS_MAX_RDATA / 2)

struct collected {
    bool has_srv, has_txt;
    uint16_t port;
    struct dns_name host;
    const struct centry *txt;
    unsigned n_addrs;
    char addrs[VIEW_MAX_ADDRS][64];
    /* The TXT strings, each followed by a NUL, in the order received. */
    char txt_copy[DNS_MAX_RDATA + 1];
    const char *txt_ptrs[VIEW_MAX_TXT];
    size_t txt_lens[VIEW_MAX_TXT];
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
        /*
         * TXT rdata: length-prefixed strings, read within rdlen only; a
         * string takes l + 1 bytes there and l + 1 in the copy (with its
         * NUL), so the copy never outgrows the rdata. Values are kept
         * whole, whatever bytes they hold (RFC 6763 §6.5).
         */
        size_t p = 0, o = 0;
        while (p < k->txt->rdlen && k->n_txt < VIEW_MAX_TXT) {
            size_t l = k->txt->rdata[p];
            if (l > k->txt->rdlen - p - 1)
                break;
            if (l) {
                memcpy(k->txt_copy + o, k->txt->rdata + p + 1, l);
                k->txt_copy[o + l] = 0;
                k->txt_ptrs[k->n_txt] = k->txt_copy + o;
                k->txt_lens[k->n_txt] = l;
                k->n_txt++;
                o += l + 1;
            }
            p += l + 1;
        }
    }
}

/* The value of |key| by RFC 6763 §6.4 (first occurrence, any case), or NULL. */
static const char *txt_get(const struct collected *k, const char *key)
{
    long i = mdns_txt_find(k->txt_ptrs, k->txt_lens, k->n_txt, key);
    const uint8_t *val;
    size_t kl, vl;
    if (i < 0 || !mdns_txt_split((const uint8_t *)k->txt_ptrs[i], k->txt_lens[i], &kl, &val, &vl))
        return NULL;
    return (const char *)val; /* NUL terminated in txt_copy; NULL for a boolean */
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
    uint64_t ep = mdns_epoch_of(c, now);
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
    char inst[DNS_MAX_NAME + 1] = "";
    char pid[POS_PEER_ID_STRLEN];
    const char *addr_ptrs[VIEW_MAX_ADDRS];
    pos_mdns_peer p;
    memset(&p, 0, sizeof(p));
    size_t il = mdns_instance_text(&v->name, &c->svc, inst);
    p.instance = inst;
    p.instance_len = il;
    uint8_t pk[32];
    if (v->contact >= 0 && (size_t)v->contact < c->n_contacts) {
        p.peer_id = c->contacts[v->contact].peer_id;
        p.contact = 1;
    } else if (il >= POS_PEER_ID_LEN &&
               (il == POS_PEER_ID_LEN || !strncmp(inst + POS_PEER_ID_LEN, " (", 2)) &&
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
        p.txt_len = k->txt_lens;
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
    for (unsigned i = 0; i < k->n_txt; i++) {
        uint64_t l = k->txt_lens[i];
        crypto_generichash_update(&st, (const uint8_t *)&l, sizeof(l));
        crypto_generichash_update(&st, (const uint8_t *)k->txt_ptrs[i], k->txt_lens[i]);
    }
    crypto_generichash_final(&st, fp, 16);
}

static bool is_self(const struct mdns_core *c, const struct dns_name *n)
{
    return mdns_advertising(c) && c->rstate != R_OFF && dns_name_equal(n, &c->instance);
}

/* Brings views up to date with the cache and reports what changed. */
static bool has_view(const struct mdns_core *c, const struct centry *ptr)
{
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        const struct view *v = &c->views[j];
        if (v->used && ptr_targets(ptr, v->hash, &v->name))
            return true;
    }
    return false;
}

/* Adds a view for each instance a live PTR names (new ones dropped when full). */
static void add_views(struct mdns_core *c, uint64_t now)
{
    for (int i = 0; i < MDNS_MAX_CACHE; i++) {
        struct centry *e = &c->cache[i];
        struct dns_name t;
        if (!e->used || e->expires <= now || !svc_ptr(c, e) || has_view(c, e) ||
            !rdata_name(e, 0, &t) || is_self(c, &t))
            continue;
        for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
            struct view *v = &c->views[j];
            if (!v->used) {
                memset(v, 0, sizeof(*v));
                v->used = true;
                v->dirty = true;
                v->name = t;
                v->hash = name_hash(&t);
                v->contact = -1;
                v->resolve_at = now + 200; /* responders usually send all at once */
                break;
            }
        }
    }
}

/* Reports what changed for one view whose records changed. */
static void refresh_view(struct mdns_core *c, struct view *v, struct collected *k, uint64_t now)
{
    collect(c, &v->name, k, now);
    v->host = k->has_srv ? k->host : (struct dns_name){0};
    v->host_hash = name_hash(&v->host);
    v->complete = k->has_srv && k->has_txt && k->n_addrs;
    if (!v->complete) {
        /* SRV, TXT or every address expired: not reachable any more. */
        if (v->reported)
            emit(c, v, POS_MDNS_LOST, NULL);
        v->reported = false;
        return;
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

void mdns_update_views(struct mdns_core *c, uint64_t now)
{
    if (!c->cfg.browse || c->cfg.mode == POS_MDNS_DISABLED)
        return;
    bool ptrs = c->ptr_dirty;
    c->ptr_dirty = false;
    if (ptrs)
        add_views(c, now);
    struct collected *k = NULL;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        struct view *v = &c->views[j];
        if (!v->used || (!v->dirty && !ptrs))
            continue;
        if (!view_alive(c, v, now) || is_self(c, &v->name)) {
            if (v->reported)
                emit(c, v, POS_MDNS_LOST, NULL);
            v->used = false;
            continue;
        }
        if (!v->dirty)
            continue;
        v->dirty = false;
        if (!k && !(k = malloc(sizeof(*k))))
            return;
        refresh_view(c, v, k, now);
    }
    free(k);
}

struct qitem {
    struct dns_name name;
    uint16_t type;
};

#define MAX_QITEMS 16

/*
 * Known answers for the browse question on one interface and family (§7.1),
 * from cache slot *|pos| on. Returns true when some did not fit (*|pos| is
 * then the first of them).
 */
static bool write_known_answers(struct mdns_core *c, struct dns_writer *w, int ifindex, int family,
                                uint16_t *an, int *pos, uint64_t now)
{
    for (; *pos < MDNS_MAX_CACHE; (*pos)++) {
        struct centry *e = &c->cache[*pos];
        if (!e->used || e->ifindex != ifindex || e->family != family || !svc_ptr(c, e))
            continue;
        uint64_t left = e->expires > now ? e->expires - now : 0;
        if (left * 2 < (uint64_t)e->ttl * 1000)
            continue;
        struct dns_writer_mark mk = dns_writer_mark(w);
        dns_write_rr(w, &e->name, e->type, false, (uint32_t)(left / 1000), e->rdata, e->rdlen);
        if (w->overflow) {
            dns_writer_rewind(w, mk);
            return true;
        }
        (*an)++;
    }
    return false;
}

/* Packets one query and its known answers may take (§7.2). */
#define MAX_KA_PACKETS 8

/*
 * send_query queues a query with |n| questions. With |with_known|, known
 * answers that do not fit follow in further packets (no questions), every
 * packet but the last with the TC bit (§7.2), so that responders wait for
 * the whole list.
 */
static void send_query(struct mdns_core *c, struct iface *ifc, int family, const struct qitem *q,
                       size_t n, bool with_known, bool qu, uint64_t now)
{
    if (!n || !family_usable(ifc, family))
        return;
    int pos = 0;
    for (int k = 0; k < MAX_KA_PACKETS; k++) {
        struct mdns_packet *p = mdns_out_slot(c);
        if (!p)
            return;
        struct dns_writer w;
        dns_writer_init(&w, p->data, sizeof(p->data));
        struct dns_header h = {0};
        for (size_t i = 0; k == 0 && i < n; i++) {
            dns_write_question(&w, &q[i].name, q[i].type, qu);
            h.qd++;
        }
        int start = pos;
        bool more = with_known && write_known_answers(c, &w, ifc->index, family, &h.an, &pos, now);
        if (w.overflow || (k > 0 && !h.an) || (more && pos == start && !h.qd))
            return; /* a record that fits no packet */
        more = more && k + 1 < MAX_KA_PACKETS;
        if (more)
            h.flags |= DNS_FLAG_TC;
        dns_write_header(&w, &h);
        p->len = w.len;
        set_dest_mcast(p, ifc->index, family);
        mdns_out_commit(c);
        if (!more)
            return;
    }
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
            bool qu = ifc->qu_next[fam_i(f)];
            ifc->qu_next[fam_i(f)] = false;
            send_query(c, ifc, f, &q, 1, true, qu, now);
        }
    }
}

static bool wanted(const struct mdns_core *c, const struct centry *e)
{
    if (!c->cfg.browse)
        return false;
    if (svc_ptr(c, e))
        return true;
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        const struct view *v = &c->views[j];
        if (v->used && (same_name(v->hash, &v->name, e->hash, &e->name) ||
                        (v->host.len && same_name(v->host_hash, &v->host, e->hash, &e->name))))
            return true;
    }
    return false;
}

static void add_qitem(struct qitem *q, size_t *n, size_t cap, const struct dns_name *name,
                      uint16_t type)
{
    for (size_t i = 0; i < *n; i++) {
        if (q[i].type == type && dns_name_equal(&q[i].name, name))
            return;
    }
    if (*n < cap) {
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
                      e->refresh_stage < 4 && mdns_refresh_at(e) <= now && e->expires > now;
            }
            /*
             * One query per refresh step: records due within the jitter
             * window (3% of their TTL) ride along with the first one due.
             */
            for (int k = 0; due && k < MDNS_MAX_CACHE; k++) {
                struct centry *e = &c->cache[k];
                if (!e->used || e->ifindex != ifc->index || e->family != f ||
                    e->refresh_stage >= 4 || e->expires <= now ||
                    mdns_refresh_at(e) > now + (uint64_t)e->ttl * 30)
                    continue;
                e->refresh_stage++;
                if (wanted(c, e))
                    add_qitem(q, &n, MAX_QITEMS, &e->name, e->type);
            }
            send_query(c, ifc, f, q, n, false, false, now);
        }
    }
    free(q);
    for (int k = 0; k < MDNS_MAX_CACHE; k++) {
        struct centry *e = &c->cache[k];
        if (e->used && (e->expires <= now || !mdns_iface_find(c, e->ifindex)))
            cache_drop(c, e);
    }
}

/*
 * Ask for what found instances still lack (SRV, TXT, addresses), every
 * instance due at once in one query per interface and family (up to
 * MAX_RESOLVE questions, MAX_QITEMS per packet).
 */
#define MAX_RESOLVE 64

static void resolve_timer(struct mdns_core *c, uint64_t now)
{
    struct collected *k = malloc(sizeof(*k));
    struct qitem *q = malloc(sizeof(*q) * MAX_RESOLVE);
    size_t n = 0;
    if (!k || !q)
        goto out;
    for (int j = 0; j < MDNS_MAX_VIEWS && n + 4 <= MAX_RESOLVE; j++) {
        struct view *v = &c->views[j];
        if (!v->used || v->complete || v->resolve_tries >= 4 || v->resolve_at > now)
            continue;
        collect(c, &v->name, k, now);
        if (!k->has_srv)
            add_qitem(q, &n, MAX_RESOLVE, &v->name, DNS_TYPE_SRV);
        if (!k->has_txt)
            add_qitem(q, &n, MAX_RESOLVE, &v->name, DNS_TYPE_TXT);
        if (k->has_srv && !k->n_addrs) {
            add_qitem(q, &n, MAX_RESOLVE, &k->host, DNS_TYPE_A);
            add_qitem(q, &n, MAX_RESOLVE, &k->host, DNS_TYPE_AAAA);
        }
        v->resolve_at = now + (1000u << v->resolve_tries);
        v->resolve_tries++;
    }
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        if (!c->ifaces[i].index)
            continue;
        for (size_t off = 0; off < n; off += MAX_QITEMS) {
            size_t m = n - off < MAX_QITEMS ? n - off : MAX_QITEMS;
            send_query(c, &c->ifaces[i], 4, q + off, m, false, false, now);
            send_query(c, &c->ifaces[i], 6, q + off, m, false, false, now);
        }
    }
out:
    free(k);
    free(q);
}

void mdns_querier_saw_query(struct mdns_core *c, struct iface *ifc, int family, unsigned known,
                            uint64_t now)
{
    if (known >= known_count(c, ifc->index, family, now))
        ifc->dup_query_at[fam_i(family)] = now;
}

void mdns_querier_forget(struct mdns_core *c, int ifindex, int family)
{
    for (int k = 0; k < MDNS_MAX_CACHE; k++) {
        struct centry *e = &c->cache[k];
        if (e->used && e->ifindex == ifindex && e->family == family)
            cache_drop(c, e);
    }
}

void mdns_querier_timer(struct mdns_core *c, uint64_t now)
{
    if (c->qnext && c->qnext <= now) {
        browse_query(c, now);
        c->qlast = now;
        c->qnext = now + c->qinterval;
        c->qinterval = c->qinterval * 2 > 3600000 ? 3600000 : c->qinterval * 2;
    }
    cache_timer(c, now);
    resolve_timer(c, now);
}

void mdns_querier_deadline(const struct mdns_core *c, uint64_t *best)
{
    mdns_earliest(best, c->qnext);
    for (int k = 0; k < MDNS_MAX_CACHE; k++) {
        const struct centry *e = &c->cache[k];
        if (!e->used)
            continue;
        mdns_earliest(best, e->expires);
        if (e->refresh_stage < 4)
            mdns_earliest(best, mdns_refresh_at(e));
    }
    for (int j = 0; j < MDNS_MAX_VIEWS; j++) {
        const struct view *v = &c->views[j];
        if (v->used && !v->complete && v->resolve_tries < 4)
            mdns_earliest(best, v->resolve_at);
    }
}
