/*
 * Unit tests of hole punching's sans-I/O parts: the cookies and the start
 * delay (common/punch.c) and the prober (client-lib/src/prober.c). Two
 * probers, a dialer and a listener, are driven against each other through
 * an in-memory wire that delivers datagrams after a per-path delay, drops
 * those to addresses nobody holds, and can rewrite a host's source address
 * (a NAT mapping the relay did not see), all on a simulated clock.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdlib.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "check.h"
#include "ctrl.h"
#include "frame.h"
#include "prober.h"
#include "punch.h"
#include "relay_proto.h"

/* ---- cookies and the start delay ---- */

static void test_cookie(void)
{
    uint8_t key[POS_PUNCH_KEY_LEN], other[POS_PUNCH_KEY_LEN];
    randombytes_buf(key, sizeof(key));
    memcpy(other, key, sizeof(other));
    other[15] ^= 1;

    uint64_t c = pos_punch_cookie(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1);
    CHECK(c == pos_punch_cookie(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1));
    CHECK(pos_punch_cookie_ok(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1, c));
    /* every input changes it */
    CHECK(c != pos_punch_cookie(other, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1));
    CHECK(c != pos_punch_cookie(key, POS_FRAME_PUNCH_ACK, 7, POS_PUNCH_DIALER, 1));
    CHECK(c != pos_punch_cookie(key, POS_FRAME_PUNCH, 8, POS_PUNCH_DIALER, 1));
    CHECK(c != pos_punch_cookie(key, POS_FRAME_PUNCH, 7, POS_PUNCH_LISTENER, 1));
    CHECK(c != pos_punch_cookie(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 2));
    CHECK(!pos_punch_cookie_ok(other, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1, c));
    CHECK(!pos_punch_cookie_ok(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 2, c));
    CHECK(!pos_punch_cookie_ok(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1, c ^ 1));
    CHECK(!pos_punch_cookie_ok(key, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1, c ^ (1ull << 63)));

    /* the known answer: BLAKE2b-128 keyed with 00..0f over 23 00000007 01 0001, first 8 bytes */
    uint8_t k[POS_PUNCH_KEY_LEN], in[8] = {0x23, 0, 0, 0, 7, 1, 0, 1}, h[16];
    for (int i = 0; i < POS_PUNCH_KEY_LEN; i++)
        k[i] = (uint8_t)i;
    crypto_generichash(h, sizeof(h), in, sizeof(in), k, sizeof(k));
    uint64_t want = 0;
    for (int i = 0; i < 8; i++)
        want = want << 8 | h[i];
    CHECK(pos_punch_cookie(k, POS_FRAME_PUNCH, 7, POS_PUNCH_DIALER, 1) == want);
}

static void test_start_in(void)
{
    /* the nearer side waits half the difference; both then start together */
    CHECK(pos_punch_start_in_ms(20, 100) == 40);
    CHECK(pos_punch_start_in_ms(100, 20) == 0);
    CHECK(pos_punch_start_in_ms(30, 30) == 0);
    CHECK(pos_punch_start_in_ms(0, 1) == 1); /* rounded up */
    CHECK(pos_punch_start_in_ms(10, 60) + 10 / 2 == 0 + 60 / 2);
    CHECK(pos_punch_start_in_ms(0, 4000000000u) == POS_PUNCH_MAX_START_IN_MS);
}

/* ---- the in-memory wire ---- */

#define MAX_ADDRS 4
#define MAX_FLIGHT 4096

struct host {
    const char *name;
    pos_prober *p;
    struct sockaddr_storage addr[MAX_ADDRS]; /* what the host holds */
    size_t naddr;
    struct sockaddr_storage nat[2]; /* source seen by others: [0] IPv4, [1] IPv6 (0: own) */
    int64_t window_end;             /* for the bound check */
    int64_t last_sent;              /* the last datagram it sent */
    unsigned sent;
};

struct flight {
    int64_t at;
    int to_host; /* -1: lost */
    struct sockaddr_storage from;
    struct pos_prober_datagram d;
};

struct wire {
    struct host h[2];
    struct flight f[MAX_FLIGHT];
    size_t nf;
    uint32_t delay_ms[MAX_ADDRS]; /* one-way delay to h[x].addr[i], both hosts alike */
    int64_t now;
    int late_sends; /* datagrams sent at or after their sender's window end */
};

static struct sockaddr_storage sa(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (pos_addr_parse(text, strlen(text), 0, &ss) != 0)
        fprintf(stderr, "bad test address %s\n", text);
    return ss;
}

static int same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    char x[POS_ADDR_STRLEN], y[POS_ADDR_STRLEN];
    pos_addr_format((const struct sockaddr *)a, x, sizeof(x));
    pos_addr_format((const struct sockaddr *)b, y, sizeof(y));
    return strcmp(x, y) == 0;
}

/* The host holding |to|, and the index of the address there; -1 if nobody does. */
static int owner(struct wire *w, const struct sockaddr_storage *to, size_t *idx)
{
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < w->h[i].naddr; j++)
            if (same(&w->h[i].addr[j], to)) {
                *idx = j;
                return i;
            }
    return -1;
}

/*
 * |from_host| sends |d|: from |src| (the address an answer's question came
 * to) or, when NULL, from its first address of the family; a NAT mapping
 * overrides either.
 */
static void send_dgram(struct wire *w, int from_host, const struct pos_prober_datagram *d,
                       const struct sockaddr_storage *src)
{
    struct host *h = &w->h[from_host];
    size_t idx = 0;
    int fam6 = d->to.ss_family == AF_INET6;

    if (w->nf == MAX_FLIGHT)
        return;
    struct flight *f = &w->f[w->nf++];
    f->to_host = owner(w, &d->to, &idx);
    f->at = w->now + (f->to_host >= 0 ? w->delay_ms[idx] : 0);
    f->d = *d;
    /* the source: the NAT mapping if any, else the host's own address of the family */
    f->from = h->nat[fam6];
    if (f->from.ss_family == 0 && src)
        f->from = *src;
    for (size_t j = 0; j < h->naddr && f->from.ss_family == 0; j++)
        if (h->addr[j].ss_family == d->to.ss_family)
            f->from = h->addr[j];
    if (w->now >= h->window_end)
        w->late_sends++;
    h->last_sent = w->now;
    h->sent++;
}

/* One millisecond of simulated time: due timers, then due deliveries. */
static void step(struct wire *w)
{
    struct pos_prober_datagram out[POS_PROBER_MAX_CANDIDATES];
    for (int i = 0; i < 2; i++) {
        int64_t d = pos_prober_deadline(w->h[i].p);
        if (d >= 0 && d <= w->now) {
            size_t n = pos_prober_on_timer(w->h[i].p, w->now, out, POS_PROBER_MAX_CANDIDATES);
            for (size_t k = 0; k < n; k++)
                send_dgram(w, i, &out[k], NULL);
        }
    }
    for (size_t k = 0; k < w->nf; k++) {
        struct flight *f = &w->f[k];
        if (f->at > w->now)
            continue;
        if (f->to_host >= 0) {
            struct pos_prober_datagram reply;
            int rv = pos_prober_on_frame(w->h[f->to_host].p, (const struct sockaddr *)&f->from,
                                         f->d.frame, sizeof(f->d.frame), w->now, &reply);
            if (rv == 1)
                send_dgram(w, f->to_host, &reply, &f->d.to);
        }
        w->f[k] = w->f[--w->nf];
        k--;
    }
    w->now++;
}

static void run_until(struct wire *w, int64_t end)
{
    while (w->now < end)
        step(w);
}

static void add_addr(struct host *h, const char *text)
{
    h->addr[h->naddr++] = sa(text);
}

/*
 * The PUNCH_START the relay would send to a side; when it is valid, it goes
 * through the version 2 codec as on the wire.
 */
static void punch_start(pos_ctrl_msg *m, const uint8_t key[POS_PUNCH_KEY_LEN], uint32_t own,
                        uint32_t peer, uint8_t role, uint16_t attempt, uint32_t start_in,
                        const char *const *cands, size_t n)
{
    uint8_t wire[POS_CTRL_MAX_MSG];
    pos_ctrl_msg back;
    size_t used;

    memset(m, 0, sizeof(*m));
    m->type = POS_CTRL_PUNCH_START;
    m->circuit_id = own;
    m->peer_circuit_id = peer;
    memcpy(m->punch_key, key, POS_PUNCH_KEY_LEN);
    m->start_in_ms = start_in;
    m->role = role;
    m->attempt = attempt;
    m->addrs.n = (uint8_t)n;
    for (size_t i = 0; i < n; i++)
        snprintf(m->addrs.a[i], sizeof(m->addrs.a[i]), "%s", cands[i]);
    int len = pos_ctrl_encode_version(m, POS_CTRL_V2, wire, sizeof(wire));
    if (len > 0) {
        CHECK(pos_ctrl_decode_version(wire, (size_t)len, POS_CTRL_V2, &back, &used) == 1);
        CHECK(memcmp(&back, m, sizeof(back)) == 0);
        pos_ctrl_msg_wipe(&back);
    }
}

static struct pos_prober_options opts(void)
{
    struct pos_prober_options o;
    pos_prober_options_default(&o);
    o.seed = 42;
    return o;
}

/*
 * Starts both sides: h[0] the dialer (circuit 11) told |cand_b| about the
 * listener, h[1] the listener (circuit 22) told |cand_a|.
 */
static void start_both(struct wire *w, const char *const *cand_a, size_t na,
                       const char *const *cand_b, size_t nb, uint32_t start_a, uint32_t start_b)
{
    uint8_t key[POS_PUNCH_KEY_LEN];
    pos_ctrl_msg m;
    struct pos_prober_options o = opts();

    randombytes_buf(key, sizeof(key));
    punch_start(&m, key, 11, 22, POS_PUNCH_DIALER, 1, start_a, cand_b, nb);
    CHECK(pos_prober_start(w->h[0].p, &m, w->now) == 0);
    w->h[0].window_end = w->now + start_a + o.window_ms;
    punch_start(&m, key, 22, 11, POS_PUNCH_LISTENER, 1, start_b, cand_a, na);
    CHECK(pos_prober_start(w->h[1].p, &m, w->now) == 0);
    w->h[1].window_end = w->now + start_b + o.window_ms;
    pos_ctrl_msg_wipe(&m);
}

static void wire_init(struct wire *w)
{
    struct pos_prober_options o = opts();
    memset(w, 0, sizeof(*w));
    w->now = 1000;
    w->h[0].name = "dialer";
    w->h[1].name = "listener";
    w->h[0].p = pos_prober_new(&o);
    o.seed = 43;
    w->h[1].p = pos_prober_new(&o);
    for (int i = 0; i < MAX_ADDRS; i++)
        w->delay_ms[i] = 10;
}

static void wire_free(struct wire *w)
{
    pos_prober_del(w->h[0].p);
    pos_prober_del(w->h[1].p);
}

/* ---- the prober ---- */

static void test_both_sides(void)
{
    struct wire w;
    struct pos_prober_path path;
    struct pos_prober_stats st;
    const char *a[] = {"198.51.100.1:4000"}, *b[] = {"203.0.113.2:5000"};

    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    add_addr(&w.h[1], b[0]);
    /* the listener is nearer the relay: it waits 20 ms, as pos_punch_start_in_ms says */
    start_both(&w, a, 1, b, 1, 0, 20);
    CHECK(pos_prober_state(w.h[0].p) == POS_PROBER_WAITING);
    CHECK(pos_prober_deadline(w.h[1].p) == w.now + 20);
    run_until(&w, w.now + 200);
    for (int i = 0; i < 2; i++) {
        CHECK(pos_prober_state(w.h[i].p) == POS_PROBER_DIRECT);
        CHECK(pos_prober_result(w.h[i].p, &path) == 0);
        CHECK(same(&path.addr, &w.h[1 - i].addr[0]));
        CHECK(path.kind == POS_PROBER_IPV4);
        CHECK(path.rtt_ms == 20); /* 10 ms each way, under the probe interval: exact */
        pos_prober_get_stats(w.h[i].p, &st);
        CHECK(st.attempts == 1 && st.direct == 1 && st.gave_up == 0 && st.validated == 1);
        CHECK(st.dropped == 0 && st.peer_reflexive == 0 && st.acks_sent >= 1);
        /* decided settle_ms after the first PUNCH_ACK: within the first round trips */
        CHECK(st.last_ms_to_direct <= 20 + 20 + 50 + POS_PROBER_SETTLE_MS);
        CHECK(pos_prober_deadline(w.h[i].p) == -1);
    }
    /* nothing at all once done, and still nothing until long after */
    unsigned sent0 = w.h[0].sent, sent1 = w.h[1].sent;
    run_until(&w, w.now + 5000);
    CHECK(w.h[0].sent == sent0 && w.h[1].sent == sent1);
    CHECK(w.late_sends == 0);
    wire_free(&w);
}

static void test_window_bound(void)
{
    struct wire w;
    struct pos_prober_stats st;
    struct pos_prober_path path;
    /* each side is told addresses of the other that lead nowhere (a symmetric NAT) */
    const char *a[] = {"198.51.100.1:4000", "198.51.100.9:4000"}, *b[] = {"203.0.113.2:5000"};

    wire_init(&w);
    add_addr(&w.h[0], "198.51.100.1:4999");
    add_addr(&w.h[1], "203.0.113.2:5999");
    start_both(&w, a, 2, b, 1, 0, 0);
    int64_t start = w.now;
    run_until(&w, start + POS_PROBER_WINDOW_MS + 2000);
    CHECK(pos_prober_state(w.h[1].p) == POS_PROBER_GAVE_UP);
    CHECK(pos_prober_result(w.h[1].p, &path) == -1);
    pos_prober_get_stats(w.h[1].p, &st);
    CHECK(st.gave_up == 1 && st.direct == 0 && st.validated == 0);
    /* each candidate every 50 ms +-25% for 3 s: between 3000/62.5 and 3000/37.5 + 1 each */
    CHECK(st.probes_sent >= 2 * 48 && st.probes_sent <= 2 * 81);
    CHECK(w.late_sends == 0);
    CHECK(w.h[1].last_sent < start + POS_PROBER_WINDOW_MS);
    CHECK(w.h[1].last_sent >= start + POS_PROBER_WINDOW_MS - 63);
    CHECK(pos_prober_deadline(w.h[1].p) == -1);
    struct pos_prober_datagram out[4];
    CHECK(pos_prober_on_timer(w.h[1].p, w.now, out, 4) == 0);
    CHECK(pos_prober_state(w.h[0].p) == POS_PROBER_GAVE_UP);
    wire_free(&w);
}

static void test_start_delay(void)
{
    struct wire w;
    const char *a[] = {"198.51.100.1:4000"}, *b[] = {"203.0.113.2:5000"};

    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    add_addr(&w.h[1], b[0]);
    start_both(&w, a, 1, b, 1, 300, 300);
    int64_t start = w.now;
    run_until(&w, start + 300);
    CHECK(w.h[0].sent == 0 && w.h[1].sent == 0);
    run_until(&w, start + 301);
    CHECK(w.h[0].sent == 1 && w.h[1].sent == 1);
    run_until(&w, start + 400);
    CHECK(pos_prober_state(w.h[0].p) == POS_PROBER_DIRECT);
    wire_free(&w);
}

/* A prober (listener, circuit 22 of a circuit whose dialer side is 11) for the drop tests. */
static pos_prober *listener(const uint8_t *key, uint16_t attempt)
{
    struct pos_prober_options o = opts();
    const char *a[] = {"198.51.100.1:4000"};
    pos_ctrl_msg m;
    pos_prober *p = pos_prober_new(&o);
    punch_start(&m, key, 22, 11, POS_PUNCH_LISTENER, attempt, 0, a, 1);
    CHECK(p && pos_prober_start(p, &m, 0) == 0);
    return p;
}

static void test_drops(void)
{
    uint8_t key[POS_PUNCH_KEY_LEN], frame[64];
    struct pos_prober_datagram reply;
    struct pos_prober_stats st;
    struct sockaddr_storage from = sa("198.51.100.1:4000");
    const struct sockaddr *f = (const struct sockaddr *)&from;
    pos_prober *p;
    uint64_t c;

    randombytes_buf(key, sizeof(key));
    p = listener(key, 2);
    /* a good PUNCH of attempt 2 from the dialer is answered */
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 22, POS_PUNCH_DIALER, 2);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 22, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 1, &reply) == 1);
    CHECK(same(&reply.to, &from));
    pos_frame dec;
    CHECK(pos_frame_decode(reply.frame, sizeof(reply.frame), &dec) == 0);
    CHECK(dec.type == POS_FRAME_PUNCH_ACK && dec.circuit_id == 11);
    CHECK(pos_punch_cookie_ok(key, POS_FRAME_PUNCH_ACK, 11, POS_PUNCH_LISTENER, 2, dec.cookie));

    /* a replayed probe of attempt 1, a forged cookie, our own probe reflected back */
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 22, POS_PUNCH_DIALER, 1);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 22, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 2, &reply) ==
          POS_PROBER_ERR_DROPPED);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 22, 0x0123456789abcdefull);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 3, &reply) ==
          POS_PROBER_ERR_DROPPED);
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 22, POS_PUNCH_LISTENER, 2);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 22, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 4, &reply) ==
          POS_PROBER_ERR_DROPPED);
    /* a PUNCH's cookie under an ACK type (and a wrong key) */
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 22, POS_PUNCH_DIALER, 2);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH_ACK, 22, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 5, &reply) ==
          POS_PROBER_ERR_DROPPED);
    /* another circuit: dropped, but not a cookie failure */
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 23, POS_PUNCH_DIALER, 2);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 23, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 6, &reply) ==
          POS_PROBER_ERR_DROPPED);
    /* not probes at all: a KEEPALIVE, a DATA frame, a QUIC short header, nothing */
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_KEEPALIVE, 22, 1);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 7, &reply) ==
          POS_PROBER_ERR_DROPPED);
    CHECK(pos_frame_encode_data(frame, sizeof(frame), 22, (const uint8_t *)"x", 1) == 6);
    CHECK(pos_prober_on_frame(p, f, frame, 6, 7, &reply) == POS_PROBER_ERR_DROPPED);
    frame[0] = 0x40;
    CHECK(pos_prober_on_frame(p, f, frame, 20, 7, &reply) == POS_PROBER_ERR_DROPPED);
    CHECK(pos_prober_on_frame(p, f, frame, 0, 7, &reply) == POS_PROBER_ERR_DROPPED);
    /* a good probe with one byte more */
    c = pos_punch_cookie(key, POS_FRAME_PUNCH, 22, POS_PUNCH_DIALER, 2);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 22, c);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN + 1, 8, &reply) ==
          POS_PROBER_ERR_DROPPED);
    pos_prober_get_stats(p, &st);
    CHECK(st.acks_sent == 1 && st.dropped == 10 && st.dropped_cookie == 4);
    /* after the window, even a good probe is dropped */
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, POS_PROBER_WINDOW_MS, &reply) ==
          POS_PROBER_ERR_DROPPED);
    /* and so once stopped (the key is gone) */
    pos_prober_stop(p);
    CHECK(pos_prober_state(p) == POS_PROBER_IDLE);
    CHECK(pos_prober_on_frame(p, f, frame, POS_FRAME_PROBE_LEN, 9, &reply) ==
          POS_PROBER_ERR_DROPPED);
    pos_prober_get_stats(p, &st);
    CHECK(st.dropped == 12 && st.attempts == 1);
    pos_prober_del(p);
}

/* A PUNCH_ACK validates only an address this side has probed. */
static void test_unprobed_ack(void)
{
    uint8_t key[POS_PUNCH_KEY_LEN], frame[POS_FRAME_PROBE_LEN];
    struct pos_prober_datagram reply, out[4];
    struct pos_prober_stats st;
    struct sockaddr_storage other = sa("198.51.100.7:4444");
    pos_prober *p;

    randombytes_buf(key, sizeof(key));
    p = listener(key, 1);
    uint64_t c = pos_punch_cookie(key, POS_FRAME_PUNCH_ACK, 22, POS_PUNCH_DIALER, 1);
    pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH_ACK, 22, c);
    /* before probing anything: the candidate itself is not validated by an early ACK */
    CHECK(pos_prober_on_frame(p, (const struct sockaddr *)&other, frame, sizeof(frame), 0,
                              &reply) == 0);
    CHECK(pos_prober_state(p) == POS_PROBER_WAITING);
    pos_prober_get_stats(p, &st);
    CHECK(st.validated == 0 && st.peer_reflexive == 1);
    /* it is probed now, with the relay's candidate; the next ACK from it validates it */
    CHECK(pos_prober_on_timer(p, 0, out, 4) == 2);
    CHECK(pos_prober_on_frame(p, (const struct sockaddr *)&other, frame, sizeof(frame), 5,
                              &reply) == 0);
    CHECK(pos_prober_state(p) == POS_PROBER_SETTLING);
    CHECK(pos_prober_deadline(p) == 5 + POS_PROBER_SETTLE_MS);
    CHECK(pos_prober_on_timer(p, 5 + POS_PROBER_SETTLE_MS, out, 4) == 0);
    struct pos_prober_path path;
    CHECK(pos_prober_result(p, &path) == 0 && same(&path.addr, &other) && path.rtt_ms == 5);
    pos_prober_del(p);
}

static void test_preference(void)
{
    const char *a[] = {"198.51.100.1:4000"};
    const char *b[] = {"203.0.113.2:5000", "[2001:db8::2]:5000", "192.168.1.2:5000"};
    struct pos_prober_path path;

    /* all three answer within the settle time: the LAN address wins, though slowest */
    struct wire w;
    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    for (int i = 0; i < 3; i++)
        add_addr(&w.h[1], b[i]);
    w.delay_ms[0] = 5;
    w.delay_ms[1] = 8;
    w.delay_ms[2] = 12;
    start_both(&w, a, 1, b, 3, 0, 0);
    run_until(&w, w.now + 300);
    CHECK(pos_prober_result(w.h[0].p, &path) == 0);
    CHECK(same(&path.addr, &w.h[1].addr[2]) && path.kind == POS_PROBER_LAN);
    wire_free(&w);

    /* no LAN path: IPv6 before IPv4 */
    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    add_addr(&w.h[0], "[2001:db8::1]:4000");
    add_addr(&w.h[1], b[0]);
    add_addr(&w.h[1], b[1]);
    w.delay_ms[0] = 5;
    w.delay_ms[1] = 8;
    start_both(&w, a, 1, b, 2, 0, 0);
    run_until(&w, w.now + 300);
    CHECK(pos_prober_result(w.h[0].p, &path) == 0);
    CHECK(same(&path.addr, &w.h[1].addr[1]) && path.kind == POS_PROBER_IPV6);
    wire_free(&w);

    /* the LAN path answers only after the settle time: the first one found is kept */
    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    add_addr(&w.h[1], b[0]);
    add_addr(&w.h[1], b[2]);
    w.delay_ms[0] = 5;
    w.delay_ms[1] = 40; /* 80 ms round trip > 10 + 30 */
    const char *b2[] = {b[0], b[2]};
    start_both(&w, a, 1, b2, 2, 0, 0);
    run_until(&w, w.now + 300);
    CHECK(pos_prober_result(w.h[0].p, &path) == 0);
    CHECK(same(&path.addr, &w.h[1].addr[0]) && path.kind == POS_PROBER_IPV4);
    wire_free(&w);
}

/* Only IPv6 on both sides. */
static void test_ipv6(void)
{
    const char *a[] = {"[2001:db8:a::1]:4000"}, *b[] = {"[2001:db8:b::2]:5000"};
    struct pos_prober_path path;
    struct wire w;

    wire_init(&w);
    add_addr(&w.h[0], a[0]);
    add_addr(&w.h[1], b[0]);
    start_both(&w, a, 1, b, 1, 0, 0);
    run_until(&w, w.now + 200);
    for (int i = 0; i < 2; i++) {
        CHECK(pos_prober_result(w.h[i].p, &path) == 0);
        CHECK(path.addr.ss_family == AF_INET6 && path.kind == POS_PROBER_IPV6);
        CHECK(same(&path.addr, &w.h[1 - i].addr[0]));
    }
    wire_free(&w);
}

/*
 * The relay saw the dialer at 198.51.100.1:4000, but towards the listener
 * its NAT maps it to :4999 (a new mapping): the listener's own probes to
 * :4000 are lost, it learns :4999 from the dialer's PUNCH and validates it.
 */
static void test_peer_reflexive(void)
{
    const char *a[] = {"198.51.100.1:4000"}, *b[] = {"203.0.113.2:5000"};
    struct pos_prober_path path;
    struct pos_prober_stats st;
    struct wire w;

    wire_init(&w);
    add_addr(&w.h[0], "198.51.100.1:4999"); /* answers reach it there only */
    w.h[0].nat[0] = sa("198.51.100.1:4999");
    add_addr(&w.h[1], b[0]);
    start_both(&w, a, 1, b, 1, 0, 0);
    run_until(&w, w.now + 300);
    CHECK(pos_prober_result(w.h[1].p, &path) == 0);
    CHECK(same(&path.addr, &w.h[0].addr[0]));
    pos_prober_get_stats(w.h[1].p, &st);
    CHECK(st.peer_reflexive == 1 && st.validated == 1);
    CHECK(pos_prober_result(w.h[0].p, &path) == 0 && same(&path.addr, &w.h[1].addr[0]));
    wire_free(&w);
}

static void test_api(void)
{
    struct pos_prober_options o;
    struct pos_prober_datagram out[POS_PROBER_MAX_CANDIDATES];
    uint8_t key[POS_PUNCH_KEY_LEN] = {1};
    pos_ctrl_msg m;
    pos_prober *p;

    pos_prober_options_default(&o);
    CHECK(o.window_ms == 3000 && o.interval_ms == 50 && o.settle_ms == 30);
    CHECK(pos_prober_options_check(&o) == NULL);
    o.window_ms = 99;
    CHECK(pos_prober_options_check(&o) && strstr(pos_prober_options_check(&o), "window"));
    CHECK(pos_prober_new(&o) == NULL);
    pos_prober_options_default(&o);
    o.interval_ms = 5;
    CHECK(pos_prober_options_check(&o) && strstr(pos_prober_options_check(&o), "interval"));
    o.interval_ms = 1000;
    o.window_ms = 500;
    CHECK(pos_prober_options_check(&o) != NULL);
    pos_prober_options_default(&o);
    o.settle_ms = 1001;
    CHECK(pos_prober_options_check(&o) && strstr(pos_prober_options_check(&o), "settle"));

    p = pos_prober_new(NULL);
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(pos_prober_state(p) == POS_PROBER_IDLE && pos_prober_deadline(p) == -1);
    /* refused starts leave it idle */
    const char *none[] = {"0.0.0.0:1", "224.0.0.1:5353"},
               *three[] = {"10.0.0.1:1", "10.0.0.2:1", "[fd00::3]:1"};
    punch_start(&m, key, 1, 2, POS_PUNCH_DIALER, 1, 0, none, 2);
    CHECK(pos_prober_start(p, &m, 0) == POS_PROBER_ERR_INVALID);
    punch_start(&m, key, 1, 2, 3, 1, 0, three, 3);
    CHECK(pos_prober_start(p, &m, 0) == POS_PROBER_ERR_INVALID);
    punch_start(&m, key, 0, 2, POS_PUNCH_DIALER, 1, 0, three, 3);
    CHECK(pos_prober_start(p, &m, 0) == POS_PROBER_ERR_INVALID);
    punch_start(&m, key, 1, 2, POS_PUNCH_DIALER, 0, 0, three, 3);
    CHECK(pos_prober_start(p, &m, 0) == POS_PROBER_ERR_INVALID);
    m.type = POS_CTRL_CIRCUIT;
    CHECK(pos_prober_start(p, &m, 0) == POS_PROBER_ERR_INVALID);
    CHECK(pos_prober_state(p) == POS_PROBER_IDLE);
    struct sockaddr_storage extra = sa("[2001:db8::9]:7");
    CHECK(pos_prober_add_candidate(p, (const struct sockaddr *)&extra, 0) == POS_PROBER_ERR_STATE);

    /* a bounded output: one datagram per call, the deadline stays due */
    punch_start(&m, key, 1, 2, POS_PUNCH_DIALER, 1, 0, three, 3);
    CHECK(pos_prober_start(p, &m, 0) == 0);
    CHECK(pos_prober_add_candidate(p, (const struct sockaddr *)&extra, 0) == 0);
    CHECK(pos_prober_add_candidate(p, (const struct sockaddr *)&extra, 0) == 1);
    struct sockaddr_storage mapped = sa("[::ffff:10.0.0.1]:1"); /* the same as 10.0.0.1:1 */
    CHECK(pos_prober_add_candidate(p, (const struct sockaddr *)&mapped, 0) == 1);
    struct sockaddr_storage zero_port;
    memset(&zero_port, 0, sizeof(zero_port));
    zero_port.ss_family = AF_INET;
    CHECK(pos_prober_add_candidate(p, (const struct sockaddr *)&zero_port, 0) ==
          POS_PROBER_ERR_INVALID);
    for (int i = 0; i < 3; i++) {
        CHECK(pos_prober_on_timer(p, 0, out, 1) == 1);
        CHECK(pos_prober_deadline(p) == 0);
    }
    CHECK(pos_prober_on_timer(p, 0, out, 1) == 1);
    /* all four sent: the next in 50 ms +-25% (integer: 38..63) */
    CHECK(pos_prober_deadline(p) >= 38 && pos_prober_deadline(p) <= 63);
    /* the candidate table is bounded */
    int full = 0;
    for (int i = 0; i < 40; i++) {
        char text[32];
        snprintf(text, sizeof(text), "192.0.2.%d:9", i + 1);
        struct sockaddr_storage s = sa(text);
        if (pos_prober_add_candidate(p, (const struct sockaddr *)&s, 0) == POS_PROBER_ERR_FULL)
            full++;
    }
    CHECK(full == 40 - (POS_PROBER_MAX_CANDIDATES - POS_PROBER_MIN_REFLEXIVE - 4));
    /* relay and added candidates fill their places: a peer-reflexive one still has room */
    struct pos_prober_datagram reply;
    struct pos_prober_stats st;
    uint8_t frame[64];
    for (int i = 0; i < POS_PROBER_MIN_REFLEXIVE + 1; i++) {
        char text[32];
        snprintf(text, sizeof(text), "203.0.113.%d:9", i + 1);
        struct sockaddr_storage from = sa(text);
        uint64_t c = pos_punch_cookie(key, POS_FRAME_PUNCH, 1, POS_PUNCH_LISTENER, 1);
        pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_PUNCH, 1, c);
        CHECK(pos_prober_on_frame(p, (const struct sockaddr *)&from, frame, POS_FRAME_PROBE_LEN, 1,
                                  &reply) == 1); /* answered, learnt or not */
    }
    pos_prober_get_stats(p, &st);
    CHECK(st.peer_reflexive == POS_PROBER_MIN_REFLEXIVE);
    CHECK(POS_PROBER_MAX_ADDED >= POS_P2P_MAX_EXTRA_CANDIDATES);
    struct sockaddr_storage s = sa("10.1.2.3:4"), s6 = sa("[fe80::1]:4"), g = sa("100.64.0.1:4");
    CHECK(pos_prober_kind_of((const struct sockaddr *)&s) == POS_PROBER_LAN);
    CHECK(pos_prober_kind_of((const struct sockaddr *)&s6) == POS_PROBER_LAN);
    CHECK(pos_prober_kind_of((const struct sockaddr *)&g) == POS_PROBER_IPV4);
    CHECK(pos_prober_kind_of((const struct sockaddr *)&extra) == POS_PROBER_IPV6);
    CHECK(!strcmp(pos_prober_state_name(POS_PROBER_GAVE_UP), "gave up"));
    pos_prober_del(p);
    pos_prober_del(NULL);
}

/* HELLO's local addresses: the endpoint's port on each up, non-loopback interface address */
static void test_hello_addrs(void)
{
    char dir[] = "/tmp/pos-test-punch-XXXXXX", path[64], err[200], want[64];
    pos_p2p_identity *id;
    pos_p2p_endpoint *ep;
    pos_ctrl_addrs a;
    struct ifaddrs *all;
    unsigned port;
    int expect_v4 = 0, found_v4 = 0;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/id", dir);
    CHECK(pos_p2p_identity_load(path, 1, &id, NULL, err, sizeof(err)) == 0);
    CHECK(pos_p2p_endpoint_new(&ep, id, 0) == 0);
    port = pos_p2p_endpoint_local_port(ep);
    relay_local_addrs(ep, &a);
    CHECK(a.n <= POS_CTRL_MAX_ADDRS);
    for (uint8_t i = 0; i < a.n; i++) {
        struct sockaddr_storage ss;
        CHECK(pos_addr_parse(a.a[i], strlen(a.a[i]), 0, &ss) == 0);
        CHECK(ntohs(((struct sockaddr_in *)&ss)->sin_port) == port); /* same offset in v6 */
        CHECK(strncmp(a.a[i], "127.", 4) != 0 && strncmp(a.a[i], "[::1]", 5) != 0 &&
              strncmp(a.a[i], "[fe80", 5) != 0);
    }
    /* the first up, non-loopback IPv4 address of this host is there */
    if (getifaddrs(&all) == 0) {
        for (struct ifaddrs *i = all; i && !expect_v4; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
                (i->ifa_flags & IFF_LOOPBACK))
                continue;
            expect_v4 = 1;
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, want, 40);
            snprintf(want + strlen(want), sizeof(want) - strlen(want), ":%u", port);
        }
        freeifaddrs(all);
    }
    for (uint8_t i = 0; i < a.n && expect_v4; i++)
        found_v4 |= !strcmp(a.a[i], want);
    CHECK(!expect_v4 || found_v4);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_cookie();
    test_start_in();
    test_both_sides();
    test_window_bound();
    test_start_delay();
    test_drops();
    test_unprobed_ack();
    test_preference();
    test_ipv6();
    test_peer_reflexive();
    test_api();
    test_hello_addrs();
    return check_finish("test_punch");
}
