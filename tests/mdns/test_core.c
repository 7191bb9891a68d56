/*
 * Unit tests of the sans-I/O mDNS engine (client-lib/mdns/core.c) with
 * simulated time and a simulated link: packets one core queues are handed
 * to the others (and back to itself, as multicast loopback does). No
 * sockets, no clock.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/check.h"
#include "core.h"
#include "dns.h"
#include "identity.h"

#define MAXN 4
#define MAXEV 64

struct sent {
    uint64_t at;
    bool query, probe, multicast, goodbye, qu, tc;
    unsigned qd;
    unsigned an, family;
};

struct node {
    struct mdns_core *core;
    uint8_t a4[1][4];
    uint8_t a6[1][16];
    struct sent log[512];
    unsigned n_log;
    enum pos_mdns_event ev[MAXEV];
    char ev_peer[MAXEV][48];
    char ev_name[MAXEV][32];
    int ev_contact[MAXEV];
    unsigned n_ev;
    bool mute; /* unplugged: its packets are lost and it hears nothing */
};

static struct node nodes[MAXN];
static unsigned n_nodes;
static uint64_t now;

static void on_event(void *user, enum pos_mdns_event ev, const pos_mdns_peer *p)
{
    struct node *n = user;
    if (n->n_ev == MAXEV)
        return;
    n->ev[n->n_ev] = ev;
    snprintf(n->ev_peer[n->n_ev], 48, "%s", p->peer_id ? p->peer_id : "");
    snprintf(n->ev_name[n->n_ev], 32, "%s", p->name ? p->name : "");
    n->ev_contact[n->n_ev] = p->contact;
    n->n_ev++;
}

static void classify(const struct mdns_packet *p, struct sent *s)
{
    struct dns_reader r;
    struct dns_rr *rr = malloc(sizeof(*rr));
    struct dns_question q;
    memset(s, 0, sizeof(*s));
    s->at = now;
    s->multicast = p->dest.multicast;
    s->family = (unsigned)p->dest.family;
    if (dns_reader_init(&r, p->data, p->len) == 0) {
        s->query = !(r.h.flags & DNS_FLAG_QR);
        s->probe = s->query && r.h.ns > 0;
        s->an = r.h.an;
        s->qd = r.h.qd;
        s->tc = r.h.flags & DNS_FLAG_TC;
        while (dns_read_question(&r, &q) == 0)
            s->qu = s->qu || q.unicast;
        s->goodbye = !s->query && r.h.an > 0;
        while (dns_read_rr(&r, rr) == 0)
            s->goodbye = s->goodbye && rr->ttl == 0;
    }
    free(rr);
}

/* Delivers every queued packet of every node to every node on the link. */
static void pump(void)
{
    for (int round = 0; round < 8; round++) {
        bool any = false;
        for (unsigned i = 0; i < n_nodes; i++) {
            const struct mdns_packet *p;
            while ((p = mdns_core_pop_packet(nodes[i].core))) {
                struct mdns_packet copy = *p;
                any = true;
                if (nodes[i].mute)
                    continue;
                if (nodes[i].n_log < 512)
                    classify(&copy, &nodes[i].log[nodes[i].n_log++]);
                for (unsigned j = 0; j < n_nodes; j++) {
                    if (nodes[j].mute)
                        continue;
                    const uint8_t *src = copy.dest.family == 4 ? nodes[i].a4[0] : nodes[i].a6[0];
                    if (!copy.dest.multicast &&
                        memcmp(copy.dest.addr,
                               copy.dest.family == 4 ? nodes[j].a4[0] : nodes[j].a6[0],
                               copy.dest.family == 4 ? 4 : 16))
                        continue;
                    mdns_core_receive(nodes[j].core, copy.data, copy.len, 2, copy.dest.family, src,
                                      5353, now);
                }
            }
        }
        if (!any)
            return;
    }
}

/* Runs the link until |until|, jumping from deadline to deadline. */
static void run_until(uint64_t until)
{
    for (int guard = 0; guard < 100000; guard++) {
        pump();
        uint64_t next = UINT64_MAX;
        for (unsigned i = 0; i < n_nodes; i++) {
            uint64_t d = mdns_core_next_deadline(nodes[i].core);
            if (d < next)
                next = d;
        }
        if (next > until) {
            now = until;
            return;
        }
        if (next > now)
            now = next;
        for (unsigned i = 0; i < n_nodes; i++) {
            if (mdns_core_next_deadline(nodes[i].core) <= now)
                mdns_core_timeout(nodes[i].core, now);
        }
    }
}

static struct node *add_node(enum pos_mdns_mode mode, bool advertise, bool browse,
                             const char *instance, const char *name, const uint8_t *key)
{
    struct node *n = &nodes[n_nodes];
    struct mdns_core_config cfg;
    memset(n, 0, sizeof(*n));
    memset(&cfg, 0, sizeof(cfg));
    cfg.mode = mode;
    cfg.advertise = advertise;
    cfg.browse = browse;
    cfg.port = 7373;
    cfg.wall_offset_ms = 1700000000000LL;
    snprintf(cfg.instance, sizeof(cfg.instance), "%s", instance ? instance : "x");
    char txt[64];
    snprintf(txt, sizeof(txt), "name=%s", name ? name : "");
    const char *strs[1] = {txt};
    cfg.txt_len = (size_t)mdns_core_txt_build(strs, 1, cfg.txt, sizeof(cfg.txt));
    if (key)
        memcpy(cfg.presence_key, key, 32);
    uint8_t a4[4] = {10, 0, 0, (uint8_t)(n_nodes + 1)};
    uint8_t a6[16] = {0xfe, 0x80};
    a6[15] = (uint8_t)(n_nodes + 1);
    memcpy(n->a4[0], a4, 4);
    memcpy(n->a6[0], a6, 16);
    n->core = mdns_core_new(&cfg, on_event, n, now);
    mdns_core_iface_update(n->core, 2, (const uint8_t(*)[4])n->a4, 1, (const uint8_t(*)[16])n->a6,
                           1, now);
    n_nodes++;
    return n;
}

static void reset(void)
{
    for (unsigned i = 0; i < n_nodes; i++)
        mdns_core_del(nodes[i].core);
    n_nodes = 0;
    now = 100000;
}

static void make_peer_id(char out[POS_P2P_PEER_ID_STRLEN])
{
    pos_identity id;
    pos_identity_generate(&id);
    pos_identity_peer_id(&id, out);
    pos_identity_free(&id);
}

static void test_probe_announce_timing(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    uint64_t t0 = now;
    run_until(t0 + 10000);
    unsigned probes = 0, announces = 0;
    uint64_t probe_at[8] = {0}, ann_at[8] = {0};
    for (unsigned i = 0; i < a->n_log; i++) {
        struct sent *s = &a->log[i];
        if (s->family != 4)
            continue;
        if (s->probe && probes < 8)
            probe_at[probes++] = s->at;
        else if (!s->query && announces < 8)
            ann_at[announces++] = s->at;
    }
    CHECK(probes == 3);
    CHECK(probe_at[0] >= t0 && probe_at[0] <= t0 + 250);
    CHECK(probe_at[1] - probe_at[0] == 250 && probe_at[2] - probe_at[1] == 250);
    CHECK(announces == 2);
    CHECK(ann_at[0] == probe_at[2] + 250);
    CHECK(ann_at[1] - ann_at[0] == 1000);
    CHECK(mdns_core_announced(a->core));
    CHECK(!strcmp(mdns_core_instance(a->core), pid));
    /* An idle responder is then silent. */
    unsigned before = a->n_log;
    run_until(now + 600000);
    CHECK(a->n_log == before);
}

static void test_query_backoff(void)
{
    reset();
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    uint64_t t0 = now;
    run_until(t0 + 3600 * 1000);
    uint64_t at[64];
    unsigned n = 0;
    for (unsigned i = 0; i < b->n_log && n < 64; i++) {
        if (b->log[i].query && b->log[i].family == 4)
            at[n++] = b->log[i].at;
    }
    CHECK(n >= 2 && at[0] >= t0 + 20 && at[0] <= t0 + 120);
    bool doubling = true;
    for (unsigned i = 1; i < n; i++) {
        uint64_t want = 1000ull << (i - 1);
        if (want > 3600000)
            want = 3600000;
        doubling = doubling && at[i] - at[i - 1] == want;
    }
    CHECK(doubling);
    CHECK(n >= 12 && n <= 14); /* about a dozen queries in the first hour */
    run_until(t0 + 3 * 3600 * 1000);
    unsigned later = 0;
    for (unsigned i = 0; i < b->n_log; i++) {
        if (b->log[i].query && b->log[i].family == 4 && b->log[i].at > t0 + 2 * 3600 * 1000)
            later++;
    }
    CHECK(later == 1); /* then one an hour */
}

static void test_found_goodbye_lost(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "Alice", NULL);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 5000);
    CHECK(b->n_ev == 1 && b->ev[0] == POS_MDNS_FOUND);
    CHECK(!strcmp(b->ev_peer[0], pid) && !strcmp(b->ev_name[0], "Alice"));
    mdns_core_stop(a->core, now);
    uint64_t stopped = now;
    pump();
    CHECK(a->n_log > 0 && a->log[a->n_log - 1].goodbye);
    CHECK(b->n_ev == 2 && b->ev[1] == POS_MDNS_LOST);
    CHECK(now - stopped < 1000);
}

static void test_metadata_change(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "Old", NULL);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 5000);
    CHECK(b->n_ev == 1 && !strcmp(b->ev_name[0], "Old"));
    uint8_t txt[64];
    const char *strs[1] = {"name=New"};
    int len = mdns_core_txt_build(strs, 1, txt, sizeof(txt));
    unsigned before = a->n_log;
    CHECK(mdns_core_set_txt(a->core, txt, (size_t)len, now) == 0);
    run_until(now + 3000);
    CHECK(a->n_log == before + 4 && !a->log[before].query); /* announced twice, both families */
    CHECK(b->n_ev == 2 && b->ev[1] == POS_MDNS_UPDATED && !strcmp(b->ev_name[1], "New"));
}

static void test_ttl_expiry_lost(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "Alice", NULL);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 5000);
    CHECK(b->n_ev == 1);
    /* A disappears silently: B refreshes at 80-95% of the TTL, then drops it. */
    a->mute = true;
    unsigned q_before = 0;
    for (unsigned i = 0; i < b->n_log; i++)
        q_before += b->log[i].query;
    run_until(now + (MDNS_TTL_HOST + 5) * 1000);
    unsigned q_after = 0;
    for (unsigned i = 0; i < b->n_log; i++)
        q_after += b->log[i].query;
    CHECK(q_after > q_before); /* refresh queries for the SRV / address records */
    /* One refresh query in each window 80-82%, 85-87%, 90-92%, 95-97% of the 120 s TTL. */
    uint64_t heard = a->log[a->n_log - 1].at; /* A's last announcement */
    for (int k = 0; k < 4; k++) {
        uint64_t lo = heard + 1200 * (uint64_t)(80 + 5 * k), hi = lo + 1200 * 2;
        int in = 0;
        for (unsigned i = 0; i < b->n_log; i++)
            in += b->log[i].query && b->log[i].family == 4 && b->log[i].at >= lo &&
                  b->log[i].at <= hi;
        CHECK(in == 1);
    }
    CHECK(b->n_ev == 2 && b->ev[1] == POS_MDNS_LOST);
}

static void test_shared_answer_delay_and_rate_limit(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "Alice", NULL);
    run_until(now + 5000);
    uint8_t buf[512];
    struct dns_writer w;
    struct dns_name svc;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &svc, DNS_TYPE_PTR, false);
    struct dns_header h = {.qd = 1};
    dns_write_header(&w, &h);
    uint8_t src[4] = {10, 0, 0, 9};
    unsigned before = a->n_log;
    uint64_t asked = now;
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    CHECK(mdns_core_pop_packet(a->core) == NULL); /* not at once: shared record */
    uint64_t dl = mdns_core_next_deadline(a->core);
    CHECK(dl >= asked + 20 && dl <= asked + 120);
    run_until(asked + 200);
    CHECK(a->n_log == before + 1 && !a->log[before].query && a->log[before].an >= 4);
    /* Asked again at once: the answer was multicast less than 1 s ago. */
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    run_until(now + 200);
    CHECK(a->n_log == before + 1);
    /* A second later it is answered again. */
    run_until(asked + 1300);
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    run_until(now + 200);
    CHECK(a->n_log == before + 2);
    /* Known-answer suppression: the asker already holds our PTR. */
    run_until(now + 2000);
    struct dns_name inst;
    dns_name_prepend(&inst, pid, strlen(pid), &svc);
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &svc, DNS_TYPE_PTR, false);
    dns_write_rr(&w, &svc, DNS_TYPE_PTR, false, 4000, inst.b, inst.len);
    struct dns_header h2 = {.qd = 1, .an = 1};
    dns_write_header(&w, &h2);
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    run_until(now + 300);
    CHECK(a->n_log == before + 2);
    /* QU: answered at once by unicast to the asker. */
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &svc, DNS_TYPE_PTR, true);
    dns_write_header(&w, &h);
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    const struct mdns_packet *p = mdns_core_pop_packet(a->core);
    CHECK(p && !p->dest.multicast && !memcmp(p->dest.addr, src, 4) && p->dest.port == 5353);
    /* Legacy unicast (source port not 5353): reply to that port, with the question. */
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 40000, now);
    p = mdns_core_pop_packet(a->core);
    CHECK(p && !p->dest.multicast && p->dest.port == 40000);
    if (p) {
        /* §6.7: the question echoed, TTLs at most 10 s, no cache-flush bits. */
        struct dns_reader r;
        struct dns_question q;
        struct dns_rr *rr = malloc(sizeof(*rr));
        CHECK(dns_reader_init(&r, p->data, p->len) == 0 && r.h.qd == 1);
        CHECK(dns_read_question(&r, &q) == 0 && dns_name_equal(&q.name, &svc));
        bool capped = true;
        while (dns_read_rr(&r, rr) == 0)
            capped = capped && rr->ttl <= 10 && !rr->cache_flush;
        CHECK(capped);
        free(rr);
    }
}

static void test_conflict_rename(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN], want[64];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 5000);
    struct node *b = add_node(POS_MDNS_ENABLED, true, false, pid, "B", NULL);
    run_until(now + 5000);
    snprintf(want, sizeof(want), "%s (2)", pid);
    CHECK(!strcmp(mdns_core_instance(a->core), pid));
    CHECK(!strcmp(mdns_core_instance(b->core), want));
}

static void test_simultaneous_probe_tiebreak(void)
{
    for (int round = 0; round < 5; round++) {
        reset();
        char pid[POS_P2P_PEER_ID_STRLEN], want[64];
        make_peer_id(pid);
        struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
        struct node *b = add_node(POS_MDNS_ENABLED, true, false, pid, "B", NULL);
        run_until(now + 8000);
        snprintf(want, sizeof(want), "%s (2)", pid);
        const char *ia = mdns_core_instance(a->core), *ib = mdns_core_instance(b->core);
        CHECK(mdns_core_announced(a->core) && mdns_core_announced(b->core));
        CHECK((!strcmp(ia, pid) && !strcmp(ib, want)) || (!strcmp(ib, pid) && !strcmp(ia, want)));
    }
}

static void test_disabled_silent(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *d = add_node(POS_MDNS_DISABLED, true, true, pid, "D", NULL);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 60000);
    CHECK(d->n_log == 0);
    CHECK(b->n_ev == 0);
    CHECK(mdns_core_next_deadline(d->core) == UINT64_MAX);
}

static void test_contacts_only(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    uint8_t key[32], other[32];
    make_peer_id(pid);
    randombytes_buf(key, 32);
    randombytes_buf(other, 32);
    struct node *a = add_node(POS_MDNS_CONTACTS_ONLY, true, false, pid, "Secret", key);
    struct node *friend = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    struct node *stranger = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    mdns_core_add_contact(friend->core, pid, key);
    char other_pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(other_pid);
    mdns_core_add_contact(stranger->core, other_pid, other);
    run_until(now + 5000);
    CHECK(strcmp(mdns_core_instance(a->core), pid) != 0);
    CHECK(friend->n_ev == 1 && !strcmp(friend->ev_peer[0], pid) && friend->ev_contact[0]);
    CHECK(friend->n_ev == 1 && friend->ev_name[0][0] == 0);
    CHECK(stranger->n_ev == 1 && stranger->ev_peer[0][0] == 0 && !stranger->ev_contact[0]);
    /* A new epoch: new instance name (old one lost, new one found). */
    char first[64];
    snprintf(first, sizeof(first), "%s", mdns_core_instance(a->core));
    run_until(now + MDNS_EPOCH_MS + 5000);
    CHECK(strcmp(first, mdns_core_instance(a->core)) != 0 && mdns_core_announced(a->core));
    CHECK(friend->n_ev == 3 && friend->ev[1] == POS_MDNS_LOST && friend->ev[2] == POS_MDNS_FOUND);
    CHECK(!strcmp(friend->ev_peer[2], pid));
    /* The tag depends on the epoch and the nonce. */
    uint8_t nonce[16] = {1}, t1[16], t2[16], t3[16];
    mdns_presence_tag(key, 5, nonce, t1);
    mdns_presence_tag(key, 6, nonce, t2);
    nonce[1] = 1;
    mdns_presence_tag(key, 5, nonce, t3);
    CHECK(memcmp(t1, t2, 16) && memcmp(t1, t3, 16));
}

static void test_duplicate_question_suppression(void)
{
    reset();
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    struct node *c = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 70000);
    unsigned qb = 0, qc = 0;
    for (unsigned i = 0; i < b->n_log; i++)
        qb += b->log[i].query;
    for (unsigned i = 0; i < c->n_log; i++)
        qc += c->log[i].query;
    /* Alone each would send ~7 per family in 70 s; together they share the work. */
    CHECK(qb + qc < 2 * 14);
}

/* A response announcing instance |i| with a full record set, from |port|. */
static size_t flood_packet(uint8_t *buf, size_t cap, unsigned i)
{
    struct dns_writer w;
    struct dns_name svc, inst, host;
    char label[32];
    dns_name_from_text(&svc, "_sd._udp.local");
    snprintf(label, sizeof(label), "flood-%u", i);
    dns_name_prepend(&inst, label, strlen(label), &svc);
    snprintf(label, sizeof(label), "h%u.local", i);
    dns_name_from_text(&host, label);
    dns_writer_init(&w, buf, cap);
    dns_write_rr(&w, &svc, DNS_TYPE_PTR, false, 4500, inst.b, inst.len);
    uint8_t srv[6 + 256] = {0, 0, 0, 0, 0x1c, 0xcd};
    memcpy(srv + 6, host.b, host.len);
    dns_write_rr(&w, &inst, DNS_TYPE_SRV, true, 120, srv, (uint16_t)(6 + host.len));
    dns_write_rr(&w, &inst, DNS_TYPE_TXT, true, 4500, (const uint8_t *)"\x03a=b", 4);
    uint8_t a[4] = {10, 1, (uint8_t)(i >> 8), (uint8_t)i};
    dns_write_rr(&w, &host, DNS_TYPE_A, true, 120, a, 4);
    struct dns_header h = {.flags = DNS_FLAG_QR | DNS_FLAG_AA, .an = 4};
    dns_write_header(&w, &h);
    return w.len;
}

static void test_flood_is_bounded(void)
{
    reset();
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    uint8_t buf[600], src[4] = {10, 0, 0, 9};
    size_t len = flood_packet(buf, sizeof(buf), 1);
    /* Responses must come from port 5353 (§6). */
    mdns_core_receive(b->core, buf, len, 2, 4, src, 40000, now);
    CHECK(b->n_ev == 0);
    mdns_core_receive(b->core, buf, len, 2, 4, src, 5353, now);
    CHECK(b->n_ev == 1 && b->ev[0] == POS_MDNS_FOUND);
    /* A flood of distinct instances: at most MDNS_MAX_VIEWS are tracked. */
    for (unsigned i = 2; i < 2000; i++) {
        len = flood_packet(buf, sizeof(buf), i);
        mdns_core_receive(b->core, buf, len, 2, 4, src, 5353, now);
    }
    CHECK(b->n_ev <= MDNS_MAX_VIEWS);
    run_until(now + 1000);
    while (mdns_core_pop_packet(b->core))
        ;
    CHECK(mdns_core_out_dropped(b->core) == 0);
}

static void test_malformed_changes_nothing(void)
{
    reset();
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    uint8_t junk[40] = {0, 0, 0x84, 0, 0, 0, 0, 5};
    uint8_t src[4] = {10, 0, 0, 9};
    CHECK(mdns_core_receive(b->core, junk, sizeof(junk), 2, 4, src, 5353, now) != 0);
    CHECK(b->n_ev == 0);
}

/* A packet about instance |pid|: a response with an SRV of another host, or a probe carrying it. */
static size_t rival_packet(uint8_t *buf, size_t cap, const char *pid, bool probe)
{
    struct dns_writer w;
    struct dns_name svc, inst, host;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_name_prepend(&inst, pid, strlen(pid), &svc);
    dns_name_from_text(&host, "rival.local");
    dns_writer_init(&w, buf, cap);
    uint8_t srv[6 + 256] = {0, 0, 0, 0, 0x1c, 0xcd};
    memcpy(srv + 6, host.b, host.len);
    struct dns_header h = {.flags = DNS_FLAG_QR | DNS_FLAG_AA, .an = 1};
    if (probe) {
        dns_write_question(&w, &inst, DNS_TYPE_ANY, false);
        h = (struct dns_header){.qd = 1, .ns = 1};
    }
    dns_write_rr(&w, &inst, DNS_TYPE_SRV, !probe, 120, srv, (uint16_t)(6 + host.len));
    dns_write_header(&w, &h);
    return w.len;
}

static unsigned count_probes(const struct node *n, unsigned from)
{
    unsigned k = 0;
    for (unsigned i = from; i < n->n_log; i++)
        k += n->log[i].probe;
    return k;
}

static void test_conflict_after_announce_probes_first(void)
{
    /* A stale conflicting record nobody defends: probe again, keep the name. */
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN], want[64];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 5000);
    uint8_t buf[600], src[4] = {10, 0, 0, 9};
    size_t len = rival_packet(buf, sizeof(buf), pid, false);
    unsigned before = a->n_log;
    mdns_core_receive(a->core, buf, len, 2, 4, src, 5353, now);
    run_until(now + 5000);
    CHECK(count_probes(a, before) == 6); /* 3 per family */
    CHECK(a->n_log > before && a->log[before].probe);
    CHECK(mdns_core_announced(a->core) && !strcmp(mdns_core_instance(a->core), pid));
    /* A real rival (the networks of two announced hosts merge): it defends, we rename. */
    reset();
    a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 5000);
    a->mute = true;
    struct node *b = add_node(POS_MDNS_ENABLED, true, false, pid, "B", NULL);
    run_until(now + 5000);
    CHECK(!strcmp(mdns_core_instance(b->core), pid));
    a->mute = false;
    before = a->n_log;
    uint8_t txt[64];
    const char *strs[1] = {"name=B2"};
    int tl = mdns_core_txt_build(strs, 1, txt, sizeof(txt));
    mdns_core_set_txt(b->core, txt, (size_t)tl, now); /* B announces: A sees the conflict */
    run_until(now + 5000);
    snprintf(want, sizeof(want), "%s (2)", pid);
    CHECK(a->n_log > before && a->log[before].probe); /* probed before renaming */
    CHECK(!strcmp(mdns_core_instance(a->core), want));
    CHECK(!strcmp(mdns_core_instance(b->core), pid));
}

static void test_probe_defence_rate(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 5000);
    uint8_t buf[600], src[4] = {10, 0, 0, 9};
    size_t len = rival_packet(buf, sizeof(buf), pid, true);
    unsigned before = a->n_log;
    mdns_core_receive(a->core, buf, len, 2, 4, src, 5353, now);
    pump();
    CHECK(a->n_log == before + 1 && !a->log[before].query); /* defended at once */
    run_until(now + 100);
    mdns_core_receive(a->core, buf, len, 2, 4, src, 5353, now);
    pump();
    CHECK(a->n_log == before + 1); /* not twice within 250 ms */
    run_until(now + 200);
    mdns_core_receive(a->core, buf, len, 2, 4, src, 5353, now);
    pump();
    CHECK(a->n_log == before + 2);
    CHECK(!strcmp(mdns_core_instance(a->core), pid));
}

static void test_first_query_qu(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 5000);
    unsigned a_before = a->n_log;
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 500);
    /* B's first query asks for unicast replies; A announced recently, so it answers B alone. */
    CHECK(b->n_log >= 1 && b->log[0].query && b->log[0].qu);
    CHECK(b->n_ev == 1 && b->ev[0] == POS_MDNS_FOUND); /* before B's second query */
    bool unicast = a->n_log > a_before;
    for (unsigned i = a_before; i < a->n_log; i++)
        unicast = unicast && !a->log[i].multicast && !a->log[i].query;
    CHECK(unicast);
    run_until(now + 5000);
    unsigned qu_later = 0, queries = 0;
    for (unsigned i = 2; i < b->n_log; i++) {
        qu_later += b->log[i].qu;
        queries += b->log[i].query;
    }
    CHECK(queries >= 2 && qu_later == 0); /* only the first query of each family */
    /* Announced long ago (more than a quarter of the TTL): the QU answer is multicast (§5.4). */
    run_until(now + 1200 * 1000);
    a_before = a->n_log;
    struct node *c = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 500);
    CHECK(c->n_log >= 1 && c->log[0].qu);
    CHECK(a->n_log > a_before && a->log[a_before].multicast);
    CHECK(c->n_ev == 1 && c->ev[0] == POS_MDNS_FOUND);
    /* A QU question from an address of A's own host: multicast, never unicast (§15.1). */
    run_until(now + 5000);
    uint8_t buf[512];
    struct dns_writer w;
    struct dns_name svc;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &svc, DNS_TYPE_PTR, true);
    struct dns_header h = {.qd = 1};
    dns_write_header(&w, &h);
    mdns_core_receive(a->core, buf, w.len, 2, 4, a->a4[0], 5353, now);
    a_before = a->n_log;
    run_until(now + 200);
    CHECK(a->n_log == a_before + 1 && a->log[a_before].multicast);
}

static void test_truncated_known_answers(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    uint8_t buf[600], src[4] = {10, 0, 0, 9};
    for (unsigned i = 0; i < 60; i++) {
        size_t len = flood_packet(buf, sizeof(buf), i);
        mdns_core_receive(b->core, buf, len, 2, 4, src, 5353, now);
    }
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    run_until(now + 6000);
    CHECK(b->n_ev == 61);
    /* B's next browse query: 61 known answers do not fit one packet. */
    unsigned a_before = a->n_log, b_before = b->n_log;
    run_until(now + 2000);
    unsigned packets = 0, kas = 0, tcs = 0, qds = 0;
    for (unsigned i = b_before; i < b->n_log; i++) {
        if (!b->log[i].query || b->log[i].family != 4)
            continue;
        packets++;
        kas += b->log[i].an;
        tcs += b->log[i].tc;
        qds += b->log[i].qd;
    }
    CHECK(packets >= 2 && tcs == packets - 1 && qds == 1);
    CHECK(kas == 61);
    /* A's PTR is among the later known answers: A waits for them and stays quiet. */
    CHECK(a->n_log == a_before);
    /* A truncated query from another host: the answer waits 400-500 ms for the rest. */
    run_until(now + 3000);
    struct dns_writer w;
    struct dns_name svc;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &svc, DNS_TYPE_PTR, false);
    struct dns_header h = {.flags = DNS_FLAG_TC, .qd = 1};
    dns_write_header(&w, &h);
    a_before = a->n_log;
    uint64_t asked = now;
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    run_until(asked + 399);
    CHECK(a->n_log == a_before);
    run_until(asked + 600);
    CHECK(a->n_log == a_before + 1 && a->log[a_before].at >= asked + 400 &&
          a->log[a_before].at <= asked + 500);
    /* ... and a known answer in the continuation packet suppresses it. */
    run_until(now + 2000);
    a_before = a->n_log;
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    struct dns_name inst;
    dns_name_prepend(&inst, pid, strlen(pid), &svc);
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_rr(&w, &svc, DNS_TYPE_PTR, false, 4000, inst.b, inst.len);
    struct dns_header h2 = {.an = 1};
    dns_write_header(&w, &h2);
    run_until(now + 100);
    mdns_core_receive(a->core, buf, w.len, 2, 4, src, 5353, now);
    run_until(now + 1000);
    CHECK(a->n_log == a_before);
}

/* What the last event carried, copied for the TXT tests. */
static struct {
    unsigned n;
    char instance[256];
    size_t instance_len;
    char name[64], os[64];
    bool has_name, has_os;
    size_t n_txt;
    size_t txt_len[64];
    uint8_t txt[64][256];
} seen;

static void on_event_copy(void *user, enum pos_mdns_event ev, const pos_mdns_peer *p)
{
    (void)user;
    (void)ev;
    seen.n++;
    seen.instance_len = p->instance_len;
    memcpy(seen.instance, p->instance, p->instance_len < 255 ? p->instance_len : 255);
    seen.has_name = p->name != NULL;
    snprintf(seen.name, sizeof(seen.name), "%s", p->name ? p->name : "");
    seen.has_os = p->os != NULL;
    snprintf(seen.os, sizeof(seen.os), "%s", p->os ? p->os : "");
    seen.n_txt = p->n_txt;
    for (size_t i = 0; i < p->n_txt && i < 64; i++) {
        seen.txt_len[i] = p->txt_len[i];
        memcpy(seen.txt[i], p->txt[i], p->txt_len[i]);
    }
}

/*
 * A response about instance |labels| (|n_labels| labels under
 * _sd._udp.local) with TXT |txt| (|txt_len| bytes of rdata). With
 * |split|, two packets: PTR, SRV and A with the TC bit (which responses
 * must ignore, RFC 6762 §18.5), then the TXT alone in |buf2|.
 */
static void odd_response(const char *const *labels, size_t n_labels, const uint8_t *txt,
                         size_t txt_len, bool split, uint8_t *buf, size_t *len, uint8_t *buf2,
                         size_t *len2)
{
    struct dns_writer w;
    struct dns_name svc, inst, host;
    dns_name_from_text(&svc, "_sd._udp.local");
    inst = svc;
    for (size_t i = n_labels; i-- > 0;)
        dns_name_prepend(&inst, labels[i], strlen(labels[i]), &inst);
    dns_name_from_text(&host, "odd-host.local");
    dns_writer_init(&w, buf, DNS_MAX_PACKET);
    dns_write_rr(&w, &svc, DNS_TYPE_PTR, false, 4500, inst.b, inst.len);
    uint8_t srv[6 + 256] = {0, 0, 0, 0, 0x1c, 0xcd};
    memcpy(srv + 6, host.b, host.len);
    dns_write_rr(&w, &inst, DNS_TYPE_SRV, true, 120, srv, (uint16_t)(6 + host.len));
    uint8_t a[4] = {10, 0, 0, 9};
    dns_write_rr(&w, &host, DNS_TYPE_A, true, 120, a, 4);
    struct dns_header h = {.flags = DNS_FLAG_QR | DNS_FLAG_AA, .an = 3};
    if (split) {
        h.flags |= DNS_FLAG_TC;
        dns_write_header(&w, &h);
        *len = w.len;
        dns_writer_init(&w, buf2, DNS_MAX_PACKET);
        h.flags = DNS_FLAG_QR | DNS_FLAG_AA;
        h.an = 0;
    }
    dns_write_rr(&w, &inst, DNS_TYPE_TXT, true, 4500, txt, (uint16_t)txt_len);
    h.an++;
    dns_write_header(&w, &h);
    CHECK(!w.overflow);
    *(split ? len2 : len) = w.len;
}

static size_t txt_append(uint8_t *rd, size_t at, const void *s, size_t l)
{
    rd[at] = (uint8_t)l;
    memcpy(rd + at + 1, s, l);
    return at + 1 + l;
}

/*
 * RFC 6763 §6: the first string with a key wins (any case), keyless
 * strings are ignored, values are bytes (NUL, not UTF-8) kept whole, a TXT
 * far over 1300 bytes is read, the OS comes from operating_system or os;
 * RFC 6763 §4.3: an instance label may hold dots and any UTF-8.
 */
static void test_txt_rules(void)
{
    reset();
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    mdns_core_del(b->core);
    struct mdns_core_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.browse = true;
    b->core = mdns_core_new(&cfg, on_event_copy, b, now);
    mdns_core_iface_update(b->core, 2, (const uint8_t(*)[4])b->a4, 1, NULL, 0, now);
    uint8_t *rd = malloc(DNS_MAX_PACKET), *buf = malloc(DNS_MAX_PACKET),
            *buf2 = malloc(DNS_MAX_PACKET);
    uint8_t src[4] = {10, 0, 0, 9}, fill[240];
    size_t n = 0, len = 0, len2 = 0;
    n = txt_append(rd, n, "=name=Junk", 10);
    n = txt_append(rd, n, "Name=First", 10);
    n = txt_append(rd, n, "name=Second", 11);
    n = txt_append(rd, n, "flag", 4);
    n = txt_append(rd, n, "nul=a\0b", 7);
    n = txt_append(rd, n, "bin=\xff\xfe", 6);
    n = txt_append(rd, n, "os=Other", 8);
    for (int i = 0; i < 20; i++) { /* 20 x 241 bytes: a TXT of about 5 kB */
        memset(fill, 'A' + i, sizeof(fill));
        n = txt_append(rd, n, fill, sizeof(fill));
    }
    const char *one[1] = {"dot.inside \xc3\xa9t\xc3\xa9"};
    odd_response(one, 1, rd, n, false, buf, &len, NULL, NULL);
    memset(&seen, 0, sizeof(seen));
    CHECK(mdns_core_receive(b->core, buf, len, 2, 4, src, 5353, now) == 0);
    CHECK(seen.n == 1);
    CHECK(seen.instance_len == strlen(one[0]) && !memcmp(seen.instance, one[0], strlen(one[0])));
    CHECK(seen.has_name && !strcmp(seen.name, "First"));
    CHECK(seen.has_os && !strcmp(seen.os, "Other")); /* Spacedrive 0.4 sends os only */
    CHECK(seen.n_txt == 27);
    CHECK(seen.txt_len[4] == 7 && !memcmp(seen.txt[4], "nul=a\0b", 7));
    CHECK(seen.txt_len[5] == 6 && !memcmp(seen.txt[5], "bin=\xff\xfe", 6));
    CHECK(seen.txt_len[26] == 240 && seen.txt[26][239] == 'A' + 19);

    /* operating_system before os; a boolean name gives no name; the TXT in a packet of its own
       after one with the TC bit; an instance split at its dots into labels reads whole. */
    n = 0;
    n = txt_append(rd, n, "name", 4);
    n = txt_append(rd, n, "name=Late", 9);
    n = txt_append(rd, n, "os=Other", 8);
    n = txt_append(rd, n, "OPERATING_SYSTEM=Linux", 22);
    const char *two[2] = {"dot", "inside"};
    odd_response(two, 2, rd, n, true, buf, &len, buf2, &len2);
    memset(&seen, 0, sizeof(seen));
    CHECK(mdns_core_receive(b->core, buf, len, 2, 4, src, 5353, now) == 0);
    CHECK(seen.n == 0);
    CHECK(mdns_core_receive(b->core, buf2, len2, 2, 4, src, 5353, now) == 0);
    CHECK(seen.n == 1 && seen.instance_len == 10 && !memcmp(seen.instance, "dot.inside", 10));
    CHECK(!seen.has_name && seen.has_os && !strcmp(seen.os, "Linux"));
    free(rd);
    free(buf);
    free(buf2);
}

static void test_interface_gone(void)
{
    reset();
    char pid[POS_P2P_PEER_ID_STRLEN];
    make_peer_id(pid);
    struct node *a = add_node(POS_MDNS_ENABLED, true, false, pid, "A", NULL);
    struct node *b = add_node(POS_MDNS_ENABLED, false, true, NULL, NULL, NULL);
    run_until(now + 5000);
    CHECK(b->n_ev == 1 && b->ev[0] == POS_MDNS_FOUND);
    /* Only the IPv6 address goes: A is still reachable over IPv4, no event is lost. */
    mdns_core_iface_update(b->core, 2, (const uint8_t(*)[4])b->a4, 1, NULL, 0, now);
    CHECK(b->n_ev == 1 || (b->n_ev == 2 && b->ev[1] == POS_MDNS_UPDATED));
    /* The interface goes: what was learnt there is forgotten at once. */
    mdns_core_iface_update(b->core, 2, NULL, 0, NULL, 0, now);
    CHECK(b->ev[b->n_ev - 1] == POS_MDNS_LOST);
    (void)a;
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_probe_announce_timing();
    test_query_backoff();
    test_found_goodbye_lost();
    test_metadata_change();
    test_ttl_expiry_lost();
    test_shared_answer_delay_and_rate_limit();
    test_conflict_rename();
    test_conflict_after_announce_probes_first();
    test_probe_defence_rate();
    test_simultaneous_probe_tiebreak();
    test_disabled_silent();
    test_contacts_only();
    test_duplicate_question_suppression();
    test_first_query_qu();
    test_malformed_changes_nothing();
    test_flood_is_bounded();
    test_interface_gone();
    test_truncated_known_answers();
    test_txt_rules();
    reset();
    return check_finish("mdns-core");
}
