/*
 * Unit tests of the circuit table and the forwarding hot path
 * (relay/circuit.c, relay/forward.c), without sockets: batches are built as
 * recvmmsg would leave them, and the mmsghdr entries the forwarder fills are
 * checked as sendmmsg would read them.
 */
#include <arpa/inet.h>
#include <netinet/udp.h>
#include <string.h>

#include "check.h"
#include "circuit.h"
#include "forward.h"
#include "frame.h"

#define BATCH 64

/* One received batch: buffers, source names, and the headers recvmmsg would fill. */
struct batch {
    uint8_t buf[BATCH][2048];
    struct sockaddr_in6 src[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr in[BATCH];
    struct mmsghdr out[BATCH];
    unsigned quic[BATCH], n_quic, n;
};

static struct sockaddr_in6 addr(const char *ip, int port)
{
    struct sockaddr_in6 ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        ss.sin6_family = AF_INET6;
        ss.sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &ss.sin6_addr);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &in->sin_addr);
    }
    return ss;
}

static const struct sockaddr *sa(const struct sockaddr_in6 *ss)
{
    return (const struct sockaddr *)ss;
}

/* Appends raw bytes received from |from|. */
static void add_raw(struct batch *b, const struct sockaddr_in6 *from, const uint8_t *data,
                    size_t len)
{
    unsigned i = b->n++;
    memcpy(b->buf[i], data, len);
    b->src[i] = *from;
    b->iov[i].iov_base = b->buf[i];
    b->iov[i].iov_len = sizeof b->buf[i];
    memset(&b->in[i], 0, sizeof b->in[i]);
    b->in[i].msg_hdr.msg_name = &b->src[i];
    b->in[i].msg_hdr.msg_namelen =
        from->sin6_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    b->in[i].msg_hdr.msg_iov = &b->iov[i];
    b->in[i].msg_hdr.msg_iovlen = 1;
    b->in[i].msg_len = (unsigned)len;
}

/* Appends a DATA frame of |payload_len| bytes (filled with |fill|) for |id| from |from|. */
static void add_data(struct batch *b, const struct sockaddr_in6 *from, uint32_t id,
                     size_t payload_len, uint8_t fill)
{
    uint8_t frame[POS_FRAME_MAX_LEN], payload[POS_FRAME_MAX_PAYLOAD];
    memset(payload, fill, payload_len);
    int n = pos_frame_encode_data(frame, sizeof frame, id, payload, payload_len);
    add_raw(b, from, frame, (size_t)n);
}

static int run(relay_forwarder *fw, struct batch *b, int family)
{
    return relay_forward_batch(fw, b->in, b->n, family, b->out, b->quic, &b->n_quic);
}

/* Whether output |k| goes to |want| (compared as the socket family would show it). */
static int dest_is(const struct batch *b, unsigned k, const struct sockaddr_in6 *want)
{
    const struct msghdr *h = &b->out[k].msg_hdr;
    const struct sockaddr_in6 *got = h->msg_name;
    if (want->sin6_family == AF_INET6)
        return h->msg_namelen == sizeof *got && got->sin6_family == AF_INET6 &&
               got->sin6_port == want->sin6_port &&
               memcmp(&got->sin6_addr, &want->sin6_addr, 16) == 0;
    const struct sockaddr_in *w4 = (const struct sockaddr_in *)want;
    if (got->sin6_family == AF_INET) {
        const struct sockaddr_in *g4 = (const struct sockaddr_in *)got;
        return h->msg_namelen == sizeof *g4 && g4->sin_port == w4->sin_port &&
               g4->sin_addr.s_addr == w4->sin_addr.s_addr;
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return got->sin6_port == w4->sin_port && memcmp(&got->sin6_addr, mapped, 12) == 0 &&
           memcmp((const uint8_t *)&got->sin6_addr + 12, &w4->sin_addr, 4) == 0;
}

static uint32_t out_circuit(const struct batch *b, unsigned k)
{
    pos_frame f;
    const struct msghdr *h = &b->out[k].msg_hdr;
    if (h->msg_iovlen != 1 || pos_frame_decode(h->msg_iov[0].iov_base, h->msg_iov[0].iov_len, &f))
        return 0;
    return f.circuit_id;
}

static void test_forward_and_rewrite(void)
{
    relay_circuits *t = relay_circuits_new(16, 12345);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1000), bb = addr("2001:db8::2", 2000);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 100, id) == 0);
    CHECK(id[0] != 0 && id[1] != 0 && id[0] != id[1]);
    CHECK(oa.count == 1 && ob.count == 1 && t->open == 1);

    static struct batch b;
    memset(&b, 0, sizeof b);
    add_data(&b, &a, id[0], 1200, 0xab);
    add_data(&b, &bb, id[1], 300, 0xcd);
    CHECK(run(fw, &b, AF_INET6) == 2);
    CHECK(b.n_quic == 0);
    /* A -> B: B's address, B's id, payload untouched, no copy. */
    CHECK(dest_is(&b, 0, &bb));
    CHECK(out_circuit(&b, 0) == id[1]);
    CHECK(b.out[0].msg_hdr.msg_iov[0].iov_base == b.buf[0]);
    CHECK(b.out[0].msg_hdr.msg_iov[0].iov_len == 1205);
    CHECK(b.buf[0][5] == 0xab && b.buf[0][1204] == 0xab);
    /* B -> A on a dual-stack socket: an IPv4-mapped name. */
    CHECK(dest_is(&b, 1, &a));
    CHECK(out_circuit(&b, 1) == id[0]);

    relay_side_stats s;
    CHECK(relay_circuit_stats(t, id[0], &s) == 0);
    CHECK(s.rx_packets == 1 && s.rx_bytes == 1205 && s.tx_packets == 1 && s.tx_bytes == 305);
    CHECK(relay_circuit_stats(t, id[1], &s) == 0);
    CHECK(s.rx_packets == 1 && s.rx_bytes == 305 && s.tx_packets == 1 && s.tx_bytes == 1205);
    CHECK(fw->stats.forwarded == 2 && fw->stats.forwarded_bytes == 1510);

    /* A dual-stack socket shows A as ::ffff:10.0.0.1: the same side. */
    struct sockaddr_in6 a_mapped = addr("::ffff:10.0.0.1", 1000);
    memset(&b, 0, sizeof b);
    add_data(&b, &a_mapped, id[0], 10, 3);
    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(dest_is(&b, 0, &bb) && out_circuit(&b, 0) == id[1]);

    /* On an IPv4 socket: to A works (plain sockaddr_in), to B (IPv6) cannot be sent. */
    memset(&b, 0, sizeof b);
    add_data(&b, &bb, id[1], 10, 1);
    add_data(&b, &a, id[0], 10, 2);
    CHECK(run(fw, &b, AF_INET) == 1);
    CHECK(dest_is(&b, 0, &a));
    CHECK(b.out[0].msg_hdr.msg_namelen == sizeof(struct sockaddr_in));
    CHECK(fw->stats.drop_unroutable == 1);
    CHECK(run(fw, &b, AF_UNIX) == RELAY_CIRCUIT_ERR_INVALID);

    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

static void test_drops(void)
{
    relay_circuits *t = relay_circuits_new(1, 99);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("192.0.2.1", 5000), bb = addr("198.51.100.7", 6000);
    struct sockaddr_in6 a_port = addr("192.0.2.1", 5001), stranger = addr("203.0.113.9", 5000);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, id) == 0);

    static struct batch b;
    memset(&b, 0, sizeof b);
    add_data(&b, &a_port, id[0], 50, 1);          /* same host, other port */
    add_data(&b, &stranger, id[0], 50, 1);        /* someone else */
    add_data(&b, &bb, id[0], 50, 1);              /* the other side using this side's id */
    add_data(&b, &a, id[0] ^ 0x80000000u, 50, 1); /* unknown id */
    add_data(&b, &a, id[0] ^ 2u, 50, 1);          /* another generation */
    uint8_t junk[] = {0x20, 0, 0, 0};             /* truncated header */
    add_raw(&b, &a, junk, sizeof junk);
    uint8_t unknown[] = {0x3f, 1, 2, 3, 4, 5};
    add_raw(&b, &a, unknown, sizeof unknown);
    uint8_t punch[POS_FRAME_PROBE_LEN];
    pos_frame_encode_probe(punch, sizeof punch, POS_FRAME_PUNCH, id[0], 1);
    add_raw(&b, &a, punch, sizeof punch);
    uint8_t quic_long[40] = {0xc3, 0, 0, 0, 1}, quic_short[30] = {0x41};
    add_raw(&b, &stranger, quic_long, sizeof quic_long);
    add_raw(&b, &a, quic_short, sizeof quic_short);
    add_data(&b, &a, id[0], 50, 1); /* the one good frame */
    b.in[b.n - 1].msg_hdr.msg_flags = 0;
    add_data(&b, &a, id[0], 50, 1);
    b.in[b.n - 1].msg_hdr.msg_flags = MSG_TRUNC; /* did not fit the buffer */

    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(out_circuit(&b, 0) == id[1] && dest_is(&b, 0, &bb));
    CHECK(b.n_quic == 2 && b.quic[0] == 8 && b.quic[1] == 9);
    const relay_forward_stats *st = &fw->stats;
    CHECK(st->drop_wrong_source == 3);
    CHECK(st->drop_unknown_circuit == 2);
    CHECK(st->drop_malformed == 1);
    CHECK(st->drop_unknown_type == 1);
    CHECK(st->drop_unexpected_type == 1);
    CHECK(st->drop_truncated == 1);
    CHECK(st->quic == 2 && st->forwarded == 1);
    uint64_t total = st->quic + st->quic_fallback + st->forwarded + st->keepalives +
                     st->drop_truncated + st->drop_malformed + st->drop_unknown_type +
                     st->drop_unexpected_type + st->drop_unknown_circuit + st->drop_wrong_source +
                     st->drop_budget + st->drop_unroutable;
    CHECK(total == b.n);

    /* A closed circuit's ids stop working, also after its slot is reused. */
    CHECK(relay_circuit_close(t, id[1], 10, NULL) == 0);
    CHECK(relay_circuit_close(t, id[1], 10, NULL) == RELAY_CIRCUIT_ERR_NOT_FOUND);
    CHECK(oa.count == 0 && ob.count == 0 && oa.head == 0);
    uint32_t id2[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 20, id2) == 0);
    CHECK(id2[0] != id[0] && id2[1] != id[1]);
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 20, id) ==
          RELAY_CIRCUIT_ERR_FULL);
    memset(&b, 0, sizeof b);
    add_data(&b, &a, id[0], 50, 1);
    add_data(&b, &a, id2[0], 50, 1);
    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(out_circuit(&b, 0) == id2[1]);

    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

static void test_rebinding(void)
{
    relay_circuits *t = relay_circuits_new(8, 1);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0}, oc = {0};
    struct sockaddr_in6 a = addr("10.1.1.1", 4000), a2 = addr("10.1.1.1", 4777);
    struct sockaddr_in6 bb = addr("10.2.2.2", 4000), c = addr("10.3.3.3", 4000);
    uint32_t ab[2], ac[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, ab) == 0);
    CHECK(relay_circuit_open(t, &oc, sa(&c), NULL, &oa, sa(&a), NULL, 0, ac) == 0);
    CHECK(oa.count == 2);

    /* The control plane saw A's NAT mapping change: both of A's circuits follow. */
    CHECK(relay_circuit_owner_set_addr(t, &oa, sa(&a2)) == 0);
    static struct batch b;
    memset(&b, 0, sizeof b);
    add_data(&b, &a, ab[0], 20, 1);  /* old address: dropped */
    add_data(&b, &a2, ab[0], 20, 1); /* new address: forwarded to B */
    add_data(&b, &a2, ac[1], 20, 1); /* new address, other circuit: to C */
    add_data(&b, &bb, ab[1], 20, 1); /* B -> A goes to A's new address */
    add_data(&b, &c, ac[0], 20, 1);  /* C -> A likewise */
    CHECK(run(fw, &b, AF_INET6) == 4);
    CHECK(fw->stats.drop_wrong_source == 1);
    CHECK(dest_is(&b, 0, &bb) && out_circuit(&b, 0) == ab[1]);
    CHECK(dest_is(&b, 1, &c) && out_circuit(&b, 1) == ac[0]);
    CHECK(dest_is(&b, 2, &a2) && out_circuit(&b, 2) == ab[0]);
    CHECK(dest_is(&b, 3, &a2) && out_circuit(&b, 3) == ac[1]);
    struct sockaddr_un_like {
        sa_family_t family;
        char path[20];
    } unix_addr = {AF_UNIX, "x"};
    CHECK(relay_circuit_owner_set_addr(t, &oa, (const struct sockaddr *)&unix_addr) ==
          RELAY_CIRCUIT_ERR_INVALID);

    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

static int leases;
static relay_budget *leased;
static void on_lease(void *arg, relay_budget *bud)
{
    (void)arg;
    leases++;
    leased = bud;
}

static void test_budget(void)
{
    relay_circuits *t = relay_circuits_new(4, 7);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, on_lease, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    relay_budget ba, bu;
    relay_budget_init(&ba, 0, 1000);
    relay_budget_init(&bu, 1, 0);
    relay_budget_grant(&ba, 3000);
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), &ba, &ob, sa(&bb), &bu, 0, id) == 0);

    /* 1000-byte frames paid by A's limited budget of 3000 with low water 1000. */
    static struct batch b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 4; i++)
        add_data(&b, &a, id[0], 995, 1);
    CHECK(run(fw, &b, AF_INET6) == 3);
    CHECK(leases == 1 && leased == &ba && ba.lease_pending);
    CHECK(ba.available == 0 && ba.spent == 3000 && ba.dropped == 1);
    CHECK(fw->stats.drop_budget == 1);
    relay_side_stats s;
    relay_circuit_stats(t, id[0], &s);
    CHECK(s.rx_packets == 3 && s.dropped_budget == 1);

    /* Still empty: dropped without asking again; the other direction is unlimited. */
    memset(&b, 0, sizeof b);
    add_data(&b, &a, id[0], 995, 1);
    for (int i = 0; i < 10; i++)
        add_data(&b, &bb, id[1], 1400, 1);
    CHECK(run(fw, &b, AF_INET6) == 10);
    CHECK(leases == 1 && fw->stats.drop_budget == 2);
    CHECK(bu.spent == 14050 && bu.dropped == 0);

    /* A lease arrives: traffic flows again. */
    relay_budget_grant(&ba, 5000);
    CHECK(!ba.lease_pending);
    memset(&b, 0, sizeof b);
    add_data(&b, &a, id[0], 995, 1);
    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(ba.available == 4000 && ba.spent == 4000 && leases == 1);
    /* A refused lease (0 bytes) leaves it empty and asks again on the next shortage. */
    relay_budget_grant(&ba, 0);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

static void test_keepalive(void)
{
    relay_circuits *t = relay_circuits_new(4, 3);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    struct sockaddr_in6 stranger = addr("10.9.9.9", 9);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, id) == 0);
    static struct batch b;
    memset(&b, 0, sizeof b);
    uint8_t ka[POS_FRAME_PROBE_LEN];
    pos_frame_encode_probe(ka, sizeof ka, POS_FRAME_KEEPALIVE, id[0], 0x1122334455667788ull);
    add_raw(&b, &a, ka, sizeof ka);
    add_raw(&b, &stranger, ka, sizeof ka); /* not reflected to anyone */
    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(dest_is(&b, 0, &a));
    pos_frame f;
    CHECK(pos_frame_decode(b.buf[0], POS_FRAME_PROBE_LEN, &f) == 0);
    CHECK(f.type == POS_FRAME_KEEPALIVE_ACK && f.circuit_id == id[0] &&
          f.cookie == 0x1122334455667788ull);
    CHECK(fw->stats.keepalives == 1 && fw->stats.drop_wrong_source == 1);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

static unsigned closed_n;
static relay_circuit_info closed[4];
static void on_closed(void *arg, const relay_circuit_info *info)
{
    (void)arg;
    if (closed_n < 4)
        closed[closed_n] = *info;
    closed_n++;
}

static void test_owner_close(void)
{
    relay_circuits *t = relay_circuits_new(2, 5);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0}, oc = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2), c = addr("::1", 3);
    uint32_t ab[2], ca[2], x[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &oa, sa(&a), NULL, 0, x) ==
          RELAY_CIRCUIT_ERR_INVALID);
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, NULL, sa(&a), NULL, 0, x) ==
          RELAY_CIRCUIT_ERR_INVALID);
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 1000, ab) == 0);
    CHECK(relay_circuit_open(t, &oc, sa(&c), NULL, &oa, sa(&a), NULL, 2000, ca) == 0);
    static struct batch b;
    memset(&b, 0, sizeof b);
    add_data(&b, &a, ab[0], 100, 1);
    CHECK(run(fw, &b, AF_INET6) == 1);

    /* A's control connection ends: both circuits close, B and C are to be told. */
    CHECK(relay_circuit_owner_close(t, &oa, 5000, on_closed, NULL) == 2);
    CHECK(closed_n == 2 && t->open == 0);
    CHECK(oa.count == 0 && ob.count == 0 && oc.count == 0);
    int saw_ab = 0, saw_ca = 0;
    for (unsigned i = 0; i < 2; i++) {
        if (closed[i].id[0] == ab[0] && closed[i].owner[1] == &ob) {
            saw_ab = closed[i].opened_ms == 1000 && closed[i].closed_ms == 5000 &&
                     closed[i].stats[0].rx_bytes == 105 && closed[i].stats[1].tx_bytes == 105;
        }
        if (closed[i].id[1] == ca[1] && closed[i].owner[0] == &oc)
            saw_ca = closed[i].opened_ms == 2000;
    }
    CHECK(saw_ab && saw_ca);
    memset(&b, 0, sizeof b);
    add_data(&b, &bb, ab[1], 100, 1);
    add_data(&b, &c, ca[0], 100, 1);
    CHECK(run(fw, &b, AF_INET6) == 0);
    CHECK(fw->stats.drop_unknown_circuit == 2);
    CHECK(relay_circuit_owner_close(t, &ob, 6000, on_closed, NULL) == 0);

    /* Full capacity is usable again after the closes. */
    CHECK(relay_circuit_open(t, &ob, sa(&bb), NULL, &oc, sa(&c), NULL, 0, x) == 0);
    CHECK(relay_circuit_open(t, &oc, sa(&c), NULL, &ob, sa(&bb), NULL, 0, x) == 0);
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, x) ==
          RELAY_CIRCUIT_ERR_FULL);
    CHECK(relay_forwarder_new(t, 0, NULL, NULL) == NULL);
    CHECK(relay_forwarder_new(t, RELAY_FORWARD_MAX_BATCH + 1, NULL, NULL) == NULL);
    CHECK(relay_circuits_new(0, 1) == NULL);
    relay_circuits *t3 = relay_circuits_new(3, 1); /* 6 slots of 8: 6 and 7 do not exist */
    CHECK(t3 != NULL && relay_circuit_find(t3, 7u | (5u << 3)) == NULL);
    CHECK(relay_circuit_find(t3, 0) == NULL);
    relay_circuits_del(t3);
    CHECK(relay_circuits_new(RELAY_CIRCUIT_MAX_CAPACITY + 1, 1) == NULL);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

/* Many circuits in one table: every id is unique and routes to its own peer. */
static void test_many_circuits(void)
{
    enum { N = 1000 };
    relay_circuits *t = relay_circuits_new(N, 0xdeadbeef);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    static relay_circuit_owner owners[2 * N];
    static uint32_t ids[N][2];
    static struct sockaddr_in6 addrs[2 * N];
    memset(owners, 0, sizeof owners);
    int ok = 1;
    for (int i = 0; i < 2 * N; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.%d.%d.1", i / 256, i % 256);
        addrs[i] = addr(ip, 1000 + i);
    }
    for (int i = 0; i < N; i++)
        ok &= relay_circuit_open(t, &owners[2 * i], sa(&addrs[2 * i]), NULL, &owners[2 * i + 1],
                                 sa(&addrs[2 * i + 1]), NULL, 0, ids[i]) == 0;
    CHECK(ok);
    int routed = 0;
    static struct batch b;
    for (int i = 0; i < N; i += BATCH / 2) {
        memset(&b, 0, sizeof b);
        for (int k = i; k < i + BATCH / 2 && k < N; k++)
            add_data(&b, &addrs[2 * k + 1], ids[k][1], 64, (uint8_t)k);
        int n = run(fw, &b, AF_INET6);
        for (int k = 0; k < n; k++)
            routed += dest_is(&b, (unsigned)k, &addrs[2 * (i + k)]) &&
                      out_circuit(&b, (unsigned)k) == ids[i + k][0];
    }
    CHECK(routed == N);
    /* stats.recent keeps the circuits of the last batch (992..999), with their own counters */
    int listed = 0, used = 0;
    for (int i = 0; i < RELAY_FORWARD_RECENT; i++) {
        const relay_forward_circuit *c = &fw->stats.recent[i];
        used += c->id[0] != 0;
        for (int k = N - N % (BATCH / 2); k < N; k++)
            listed += c->id[0] == ids[k][0] && c->id[1] == ids[k][1] && c->packets[0] == 0 &&
                      c->packets[1] == 1 && c->bytes[0] == 0 &&
                      c->bytes[1] == 64 + POS_FRAME_HEADER_LEN &&
                      c->last_batch == fw->stats.batches;
    }
    CHECK(used == RELAY_FORWARD_RECENT && listed == N % (BATCH / 2));
    /* a circuit seen again is updated in place, not listed twice */
    memset(&b, 0, sizeof b);
    for (int k = 0; k < 3; k++)
        add_data(&b, &addrs[2 * (N - 1)], ids[N - 1][0], 100, 1);
    CHECK(run(fw, &b, AF_INET6) == 3);
    int again = 0;
    for (int i = 0; i < RELAY_FORWARD_RECENT; i++) {
        const relay_forward_circuit *c = &fw->stats.recent[i];
        if (c->id[0] == ids[N - 1][0])
            again += c->packets[0] == 3 && c->packets[1] == 1 &&
                     c->bytes[0] == 3 * (100 + POS_FRAME_HEADER_LEN);
    }
    CHECK(again == 1);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

/* The UDP_SEGMENT size of output |k|, 0 when it has no control message. */
static unsigned gso_size(const struct batch *b, unsigned k)
{
    const struct msghdr *h = &b->out[k].msg_hdr;
    if (h->msg_controllen == 0)
        return 0;
    const struct cmsghdr *cm = CMSG_FIRSTHDR(h);
    uint16_t seg = 0;
    if (cm && cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT)
        memcpy(&seg, CMSG_DATA(cm), sizeof seg);
    return seg;
}

static void test_gso(void)
{
    relay_circuits *t = relay_circuits_new(4, 11);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, id) == 0);
    relay_forwarder_set_gso(fw, 64);
    static struct batch b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 10; i++)
        add_data(&b, &a, id[0], 1200, (uint8_t)i);
    add_data(&b, &a, id[0], 500, 10); /* shorter: ends the group */
    for (int i = 0; i < 3; i++)
        add_data(&b, &a, id[0], 1200, 11);
    add_data(&b, &bb, id[1], 1200, 12); /* other destination */
    uint8_t ka[POS_FRAME_PROBE_LEN];
    pos_frame_encode_probe(ka, sizeof ka, POS_FRAME_KEEPALIVE, id[0], 1);
    add_raw(&b, &a, ka, sizeof ka); /* to A as well: joins as a short last segment */
    CHECK(run(fw, &b, AF_INET6) == 3);
    CHECK(b.out[0].msg_hdr.msg_iovlen == 11 && gso_size(&b, 0) == 1205);
    CHECK(b.out[0].msg_hdr.msg_iov[10].iov_len == 505);
    CHECK(b.out[0].msg_hdr.msg_iov[3].iov_base == b.buf[3]); /* in order, no copy */
    CHECK(dest_is(&b, 0, &bb));
    CHECK(b.out[1].msg_hdr.msg_iovlen == 3 && gso_size(&b, 1) == 1205 && dest_is(&b, 1, &bb));
    CHECK(b.out[2].msg_hdr.msg_iovlen == 2 && gso_size(&b, 2) == 1205 && dest_is(&b, 2, &a));
    CHECK(b.out[2].msg_hdr.msg_iov[1].iov_len == POS_FRAME_PROBE_LEN);
    CHECK(fw->stats.forwarded == 15 && fw->stats.keepalives == 1);

    /* At most the configured number of segments per message. */
    relay_forwarder_set_gso(fw, 4);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 10; i++)
        add_data(&b, &a, id[0], 1200, 1);
    CHECK(run(fw, &b, AF_INET6) == 3);
    CHECK(b.out[0].msg_hdr.msg_iovlen == 4 && b.out[2].msg_hdr.msg_iovlen == 2);

    /* At most 65000 bytes per message; datagrams over 1452 bytes never joined. */
    relay_forwarder_set_gso(fw, 1000);
    CHECK(fw->gso_max == RELAY_FORWARD_GSO_MAX_SEGMENTS);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 64; i++)
        add_data(&b, &a, id[0], 1200, 1);
    CHECK(run(fw, &b, AF_INET6) == 2);
    CHECK(b.out[0].msg_hdr.msg_iovlen == 65000 / 1205 && gso_size(&b, 0) == 1205);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 5; i++)
        add_data(&b, &a, id[0], 1460, 1);
    CHECK(run(fw, &b, AF_INET6) == 5);
    CHECK(gso_size(&b, 0) == 0 && b.out[4].msg_hdr.msg_iovlen == 1);

    /* Off again: one message per datagram. */
    relay_forwarder_set_gso(fw, 0);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 5; i++)
        add_data(&b, &a, id[0], 1200, 1);
    CHECK(run(fw, &b, AF_INET6) == 5);
    CHECK(gso_size(&b, 0) == 0);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

/* Peers that grease the QUIC bit: failed frames go to the QUIC path instead of being dropped. */
static void test_quic_fallback(void)
{
    relay_circuits *t = relay_circuits_new(4, 21);
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    relay_budget empty;
    relay_budget_init(&empty, 0, 0);
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    struct sockaddr_in6 stranger = addr("10.9.9.9", 9);
    uint32_t id[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), &empty, 0, id) == 0);
    relay_forwarder_set_quic_fallback(fw, 1);
    static struct batch b;
    memset(&b, 0, sizeof b);
    uint8_t greased[40] = {0x21, 0xde, 0xad, 0xbe, 0xef}; /* short header, fixed bit clear */
    add_raw(&b, &stranger, greased, sizeof greased);      /* malformed as a KEEPALIVE */
    add_data(&b, &stranger, id[0], 100, 1);               /* wrong source */
    add_data(&b, &a, id[0] ^ 0x40000000u, 100, 1);        /* unknown circuit */
    greased[0] = 0x05;
    add_raw(&b, &a, greased, sizeof greased); /* unknown type */
    add_data(&b, &a, id[0], 100, 1);          /* a frame: forwarded */
    add_data(&b, &bb, id[1], 100, 1);         /* a frame without budget: dropped, not QUIC */
    CHECK(run(fw, &b, AF_INET6) == 1);
    CHECK(b.n_quic == 4 && b.quic[0] == 0 && b.quic[3] == 3);
    CHECK(fw->stats.quic_fallback == 4 && fw->stats.quic == 0);
    CHECK(fw->stats.drop_malformed == 0 && fw->stats.drop_wrong_source == 0 &&
          fw->stats.drop_unknown_circuit == 0 && fw->stats.drop_unknown_type == 0);
    CHECK(fw->stats.forwarded == 1 && fw->stats.drop_budget == 1);
    CHECK(b.buf[1][1] == (uint8_t)(id[0] >> 24)); /* handed over untouched */
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

/* Circuit caps: per owner (its open circuits) and per token (its budget, once per circuit). */
static void test_circuit_admit(void)
{
    relay_circuits *t = relay_circuits_new(16, 1);
    relay_circuit_owner oa = {0}, ob = {0}, oc = {0};
    relay_budget tok, other;
    struct sockaddr_in6 a = addr("10.0.0.1", 1000), bb = addr("10.0.0.2", 2000),
                        c = addr("10.0.0.3", 3000);
    uint32_t id[2], first[2];
    relay_budget_init(&tok, 1, 0);
    relay_budget_init(&other, 1, 0);
    CHECK(relay_circuit_admit(&oa, &tok, 2, 3) == 0);
    /* two connections of one token: each circuit counts once for the token */
    CHECK(relay_circuit_open(t, &oa, sa(&a), &tok, &ob, sa(&bb), &tok, 0, first) == 0);
    CHECK(tok.circuits == 1 && oa.count == 1 && ob.count == 1);
    CHECK(relay_circuit_open(t, &oa, sa(&a), &tok, &ob, sa(&bb), &tok, 0, id) == 0);
    CHECK(relay_circuit_admit(&oa, &tok, 2, 3) == RELAY_CIRCUIT_ERR_CONN_LIMIT);
    CHECK(relay_circuit_admit(&oc, &tok, 2, 3) == 0);
    CHECK(relay_circuit_open(t, &oc, sa(&c), &tok, &ob, sa(&bb), &other, 0, id) == 0);
    CHECK(tok.circuits == 3 && other.circuits == 1);
    CHECK(relay_circuit_admit(&oc, &tok, 2, 3) == RELAY_CIRCUIT_ERR_TOKEN_LIMIT);
    CHECK(relay_circuit_admit(&oc, &other, 2, 3) == 0);
    CHECK(relay_circuit_admit(&oc, &tok, 0, 0) == 0); /* 0: no cap */
    CHECK(relay_circuit_admit(&oc, NULL, 2, 3) == 0); /* no budget: not counted */
    /* closing gives the places back */
    CHECK(relay_circuit_close(t, first[1], 0, NULL) == 0);
    CHECK(tok.circuits == 2 && relay_circuit_admit(&oa, &tok, 2, 3) == 0);
    CHECK(relay_circuit_owner_close(t, &oc, 0, NULL, NULL) == 1);
    CHECK(tok.circuits == 1 && other.circuits == 0);
    CHECK(strcmp(relay_circuit_strerror(RELAY_CIRCUIT_ERR_TOKEN_LIMIT), "unknown error") != 0);
    relay_circuits_del(t);
}

/*
 * Workers (relay/workers.h): a circuit's sides go to the workers with the
 * fewest open sides, never both to one; frames still route.
 */
static void test_worker_ids(void)
{
    relay_circuits *t = relay_circuits_new(8, 77); /* 16 slots: slot_bits 4 */
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    uint32_t ids[2], held[3][2];
    CHECK(relay_circuits_set_workers(t, 0) == RELAY_CIRCUIT_ERR_INVALID);
    CHECK(relay_circuits_set_workers(t, 3) == 0 && t->worker_bits == 2);
#define WORKER(id) (((id) >> t->slot_bits) & 3)
    for (int round = 0; round < 20; round++) { /* generations wrap within the smaller range */
        CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, ids) == 0);
        CHECK(WORKER(ids[0]) < 3 && WORKER(ids[1]) < 3 && WORKER(ids[0]) != WORKER(ids[1]));
        CHECK(t->worker_sides[WORKER(ids[0])] == 1 && t->worker_sides[WORKER(ids[1])] == 1);
        CHECK(t->worker_sides[0] + t->worker_sides[1] + t->worker_sides[2] == 2);
        CHECK(ids[0] != 0 && ids[1] != 0 && (ids[0] >> (t->slot_bits + 2)) <= t->gen_max);
        static struct batch b;
        memset(&b, 0, sizeof b);
        add_data(&b, &a, ids[0], 100, 1);
        CHECK(run(fw, &b, AF_INET6) == 1 && dest_is(&b, 0, &bb) && out_circuit(&b, 0) == ids[1]);
        CHECK(relay_circuit_close(t, ids[0], 0, NULL) == 0);
        CHECK(t->worker_sides[0] + t->worker_sides[1] + t->worker_sides[2] == 0);
    }
    /* three circuits held at once: two sides on each worker, and the first
     * sides (the dialers') on three different workers */
    for (int k = 0; k < 3; k++)
        CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, held[k]) == 0);
    CHECK(t->worker_sides[0] == 2 && t->worker_sides[1] == 2 && t->worker_sides[2] == 2);
    CHECK(WORKER(held[0][0]) != WORKER(held[1][0]) && WORKER(held[1][0]) != WORKER(held[2][0]) &&
          WORKER(held[0][0]) != WORKER(held[2][0]));
#undef WORKER
    /* an open table cannot change its id layout */
    CHECK(relay_circuits_set_workers(t, 2) == RELAY_CIRCUIT_ERR_INVALID);
    relay_forwarder_del(fw);
    relay_circuits_del(t);
}

/* One worker (no relay_circuits_set_workers): both sides on worker 0, ids as ever. */
static void test_one_worker_ids(void)
{
    relay_circuits *t = relay_circuits_new(8, 78);
    relay_circuit_owner oa = {0}, ob = {0};
    struct sockaddr_in6 a = addr("10.0.0.1", 1), bb = addr("10.0.0.2", 2);
    uint32_t ids[2];
    CHECK(relay_circuit_open(t, &oa, sa(&a), NULL, &ob, sa(&bb), NULL, 0, ids) == 0);
    uint32_t slot0 = ids[0] & t->slot_mask, slot1 = ids[1] & t->slot_mask;
    CHECK(t->worker_bits == 0 && t->worker_sides[0] == 2 && slot0 / 2 == slot1 / 2);
    relay_circuits_del(t);
}

int main(void)
{
    test_forward_and_rewrite();
    test_drops();
    test_rebinding();
    test_budget();
    test_keepalive();
    test_owner_close();
    test_many_circuits();
    test_circuit_admit();
    test_gso();
    test_quic_fallback();
    test_worker_ids();
    test_one_worker_ids();
    return check_finish("test_forward");
}
