/*
 * libFuzzer target for the hole-punching prober (client-lib/src/prober.c)
 * and the punch cookies (common/punch.c). The input sets the options, the
 * role, the attempt and the candidates of a started prober, then is read as
 * a list of steps: the clock moving on (on_timer with a small output
 * array), raw datagrams from any address, valid or stale PUNCH and
 * PUNCH_ACK frames of the attempt (so that validation is reached), extra
 * candidates, a new attempt. After every step the prober must keep its
 * promises: no datagram at or after the end of its window, every datagram a
 * PUNCH of the attempt to a proper address, every answer a PUNCH_ACK back to
 * the sender, a result exactly when DIRECT; and once the window is over it
 * is done and silent. prober.c and punch.c are compiled into the target for
 * coverage feedback.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "frame.h"
#include "prober.h"
#include "punch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
    const uint8_t *d;
    size_t n;
};

static uint8_t take(struct in *c)
{
    if (c->n == 0)
        return 0;
    c->n--;
    return *c->d++;
}

static const char *const ADDRS[] = {
    "203.0.113.2:5000", "192.168.1.2:5000",       "[2001:db8::2]:5000", "[fd00::2]:5000",
    "10.0.0.2:5000",    "198.51.100.1:4000",      "127.0.0.1:9",        "[::1]:9",
    "100.64.0.1:4000",  "[::ffff:10.0.0.2]:5000", "203.0.113.2:5001",   "[fe80::1]:5000",
};
#define NADDRS (sizeof(ADDRS) / sizeof(ADDRS[0]))

static const uint8_t KEY[POS_PUNCH_KEY_LEN] = {0x5a, 1, 2,  3,  4,  5,  6,  7,
                                               8,    9, 10, 11, 12, 13, 14, 15};
#define OWN_CIRCUIT 100
#define PEER_CIRCUIT 200

struct state {
    pos_prober *p;
    uint8_t role, peer_role;
    uint16_t attempt;
    int64_t now, window_end;
    uint32_t window_ms;
};

/* An address: one of the table, or raw bytes (any family, any bytes). */
static void pick_addr(struct in *c, struct sockaddr_storage *ss)
{
    uint8_t b = take(c);
    memset(ss, 0, sizeof(*ss));
    if (b < 0xf0) {
        const char *t = ADDRS[b % NADDRS];
        if (pos_addr_parse(t, strlen(t), 0, ss) != 0)
            abort();
        return;
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    uint8_t fam = take(c) % 3;
    ss->ss_family = fam == 0 ? AF_INET : fam == 1 ? AF_INET6 : AF_UNIX;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        for (int i = 0; i < 4; i++)
            ((uint8_t *)&s4->sin_addr)[i] = take(c);
        s4->sin_port = (uint16_t)(take(c) << 8 | take(c));
    } else {
        for (int i = 0; i < 16; i++)
            s6->sin6_addr.s6_addr[i] = take(c);
        s6->sin6_port = (uint16_t)(take(c) << 8 | take(c));
    }
}

static int start(struct state *s, struct in *c)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_START;
    m.circuit_id = OWN_CIRCUIT;
    m.peer_circuit_id = PEER_CIRCUIT;
    memcpy(m.punch_key, KEY, sizeof(KEY));
    m.start_in_ms = take(c);
    m.role = s->role;
    m.attempt = s->attempt;
    m.addrs.n = (uint8_t)(1 + take(c) % POS_CTRL_MAX_ADDRS);
    for (size_t i = 0; i < m.addrs.n; i++)
        strcpy(m.addrs.a[i], ADDRS[take(c) % NADDRS]);
    int rv = pos_prober_start(s->p, &m, s->now);
    s->window_end = s->now + m.start_in_ms + s->window_ms;
    return rv;
}

/* A datagram the prober sends on its own: a PUNCH of the attempt, in time, to a proper address. */
static void check_probe(const struct state *s, const struct pos_prober_datagram *d)
{
    pos_frame f;
    if (s->now >= s->window_end || pos_frame_decode(d->frame, sizeof(d->frame), &f) != 0 ||
        f.type != POS_FRAME_PUNCH || f.circuit_id != PEER_CIRCUIT ||
        !pos_punch_cookie_ok(KEY, POS_FRAME_PUNCH, PEER_CIRCUIT, s->role, s->attempt, f.cookie))
        abort();
    if (d->to.ss_family != AF_INET && d->to.ss_family != AF_INET6)
        abort();
}

static void check_state(const struct state *s)
{
    struct pos_prober_path path;
    int st = pos_prober_state(s->p);
    int have = pos_prober_result(s->p, &path) == 0;
    if (st < POS_PROBER_IDLE || st > POS_PROBER_GAVE_UP || have != (st == POS_PROBER_DIRECT))
        abort();
    if (have && (path.kind < POS_PROBER_LAN || path.kind > POS_PROBER_IPV4))
        abort();
    int64_t d = pos_prober_deadline(s->p);
    if (d < -1 || (d >= 0 && d > s->window_end))
        abort();
}

static void timer_step(struct state *s, struct in *c)
{
    struct pos_prober_datagram out[POS_PROBER_MAX_CANDIDATES];
    size_t max = 1 + take(c) % POS_PROBER_MAX_CANDIDATES;
    s->now += take(c);
    size_t n = pos_prober_on_timer(s->p, s->now, out, max);
    if (n > max)
        abort();
    for (size_t i = 0; i < n; i++)
        check_probe(s, &out[i]);
}

static void frame_step(struct state *s, struct in *c, int kind)
{
    struct sockaddr_storage from;
    struct pos_prober_datagram reply;
    uint8_t buf[64];
    size_t len = POS_FRAME_PROBE_LEN;

    pick_addr(c, &from);
    if (kind == 0) { /* raw bytes */
        len = take(c) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = take(c);
    } else { /* a PUNCH or PUNCH_ACK of the peer; sometimes of another attempt or role */
        uint8_t type = kind == 1 ? POS_FRAME_PUNCH : POS_FRAME_PUNCH_ACK, twist = take(c);
        uint16_t attempt = (twist & 3) == 1 ? (uint16_t)(s->attempt + 1) : s->attempt;
        uint8_t role = (twist & 3) == 2 ? s->role : s->peer_role;
        uint64_t cookie = pos_punch_cookie(KEY, type, OWN_CIRCUIT, role, attempt);
        pos_frame_encode_probe(buf, sizeof(buf), type, OWN_CIRCUIT, cookie);
    }
    s->now += take(c) % 8;
    int rv = pos_prober_on_frame(s->p, (const struct sockaddr *)&from, buf, len, s->now, &reply);
    if (rv == 1) {
        pos_frame f;
        if (s->now >= s->window_end ||
            pos_frame_decode(reply.frame, sizeof(reply.frame), &f) != 0 ||
            f.type != POS_FRAME_PUNCH_ACK || f.circuit_id != PEER_CIRCUIT ||
            !pos_punch_cookie_ok(KEY, POS_FRAME_PUNCH_ACK, PEER_CIRCUIT, s->role, s->attempt,
                                 f.cookie))
            abort();
    } else if (rv != 0 && rv != POS_PROBER_ERR_DROPPED) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in c = {data, size};
    struct pos_prober_options o;
    struct state s = {0};

    pos_prober_options_default(&o);
    o.window_ms = 100 + 20u * take(&c);
    o.interval_ms = 10 + take(&c) % 90;
    o.settle_ms = take(&c) % 64;
    o.seed = 1;
    s.window_ms = o.window_ms;
    s.p = pos_prober_new(&o);
    if (!s.p)
        abort();
    s.role = take(&c) & 1 ? POS_PUNCH_DIALER : POS_PUNCH_LISTENER;
    s.peer_role = s.role == POS_PUNCH_DIALER ? POS_PUNCH_LISTENER : POS_PUNCH_DIALER;
    s.attempt = 1;
    s.now = 1000;
    if (start(&s, &c) != 0)
        abort(); /* every table address but none is usable: a start always has candidates */
    while (c.n > 0) {
        struct sockaddr_storage extra;
        switch (take(&c) % 6) {
        case 0:
            timer_step(&s, &c);
            break;
        case 1:
        case 2:
        case 3:
            frame_step(&s, &c, take(&c) % 3);
            break;
        case 4:
            pick_addr(&c, &extra);
            pos_prober_add_candidate(s.p, (const struct sockaddr *)&extra, s.now);
            break;
        default:
            s.attempt++;
            if (start(&s, &c) != 0)
                abort();
        }
        check_state(&s);
    }
    /* past the window: done, and silent for good */
    struct pos_prober_datagram out[POS_PROBER_MAX_CANDIDATES];
    s.now = s.window_end;
    if (pos_prober_on_timer(s.p, s.now, out, POS_PROBER_MAX_CANDIDATES) != 0)
        abort();
    int st = pos_prober_state(s.p);
    if ((st != POS_PROBER_DIRECT && st != POS_PROBER_GAVE_UP) || pos_prober_deadline(s.p) != -1)
        abort();
    struct pos_prober_stats stats;
    pos_prober_get_stats(s.p, &stats);
    if (stats.direct + stats.gave_up > stats.attempts || stats.dropped_cookie > stats.dropped)
        abort();
    pos_prober_del(s.p);
    return 0;
}
