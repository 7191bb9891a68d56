/*
 * The hole-punching prober (see prober.h for the state machine and the
 * contract). One attempt at a time: the candidates are a fixed array, each
 * with its own next probe time, so the work per call is bounded by
 * POS_PROBER_MAX_CANDIDATES whatever arrives. Probes carry cookies
 * (common/punch.h) that only the two peers of the attempt can make; a
 * PUNCH_ACK validates a path only from an address this side has probed, so
 * a validated path is a proven round trip. QUIC's own path validation
 * proves it again when the dialer migrates.
 */
#include "prober.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "punch.h"

struct candidate {
    struct sockaddr_storage addr; /* normalised: IPv4-mapped IPv6 is stored as IPv4 */
    int64_t next_probe;           /* when on_timer sends the next PUNCH */
    int64_t last_sent;            /* latest PUNCH sent, for the RTT */
    uint32_t sent;                /* PUNCH sent so far */
    int validated;
    struct pos_prober_path path; /* when validated */
};

struct pos_prober {
    struct pos_prober_options opt;
    uint64_t rng; /* splitmix64 state, for the jitter */
    int state;    /* enum pos_prober_state */

    /* the attempt (PUNCH_START) */
    uint8_t key[POS_PUNCH_KEY_LEN];
    uint32_t circuit_id;      /* ours: probes to us carry it */
    uint32_t peer_circuit_id; /* the peer's: probes we send carry it */
    uint8_t role, peer_role;
    uint16_t attempt;
    int64_t started;    /* when pos_prober_start was called */
    int64_t probe_from; /* started + start_in_ms */
    int64_t window_end; /* probe_from + window_ms: nothing is sent from then on */
    int64_t settle_end; /* SETTLING: when the choice is made */

    struct candidate cand[POS_PROBER_MAX_CANDIDATES];
    size_t ncand;
    size_t best; /* DIRECT: index of the chosen candidate */

    struct pos_prober_stats stats;
};

/* ---- options ---- */

void pos_prober_options_default(struct pos_prober_options *o)
{
    memset(o, 0, sizeof(*o));
    o->window_ms = POS_PROBER_WINDOW_MS;
    o->interval_ms = POS_PROBER_INTERVAL_MS;
    o->settle_ms = POS_PROBER_SETTLE_MS;
}

const char *pos_prober_options_check(const struct pos_prober_options *o)
{
    if (o->window_ms < 100 || o->window_ms > 60000)
        return "the probe window must be 100 to 60000 ms";
    if (o->interval_ms < 10 || o->interval_ms > 1000)
        return "the probe interval must be 10 to 1000 ms";
    if (o->interval_ms > o->window_ms)
        return "the probe interval must not be longer than the probe window";
    if (o->settle_ms > 1000)
        return "the settle time must be 0 to 1000 ms";
    return NULL;
}

/* ---- addresses ---- */

/* |sa| as a candidate: IPv4 or IPv6 (mapped IPv4 made IPv4), port set. -1: unusable. */
static int normalise(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in a;
        memcpy(&a, sa, sizeof(a));
        uint32_t ip = ntohl(a.sin_addr.s_addr);
        /* unspecified, multicast and limited broadcast: never a peer */
        if (a.sin_port == 0 || ip == 0 || (ip >> 28) == 0xe || ip == 0xffffffffu)
            return -1;
        struct sockaddr_in *o = (struct sockaddr_in *)out;
        o->sin_family = AF_INET;
        o->sin_port = a.sin_port;
        o->sin_addr = a.sin_addr;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 a;
        memcpy(&a, sa, sizeof(a));
        if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = a.sin6_port};
            memcpy(&v4.sin_addr, &a.sin6_addr.s6_addr[12], 4);
            return normalise((const struct sockaddr *)&v4, out);
        }
        if (a.sin6_port == 0 || IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) ||
            IN6_IS_ADDR_MULTICAST(&a.sin6_addr))
            return -1;
        struct sockaddr_in6 *o = (struct sockaddr_in6 *)out;
        o->sin6_family = AF_INET6;
        o->sin6_port = a.sin6_port;
        o->sin6_addr = a.sin6_addr;
        o->sin6_scope_id = a.sin6_scope_id;
        return 0;
    }
    return -1;
}

/* Both normalised: same family, address, port (and scope for IPv6). */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

int pos_prober_kind_of(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 a;
        memcpy(&a, sa, sizeof(a));
        const uint8_t *b = a.sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            memcpy(&v4.sin_addr, b + 12, 4);
            return pos_prober_kind_of((const struct sockaddr *)&v4);
        }
        /* ULA fc00::/7, link-local fe80::/10, loopback */
        if ((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||
            IN6_IS_ADDR_LOOPBACK(&a.sin6_addr))
            return POS_PROBER_LAN;
        return POS_PROBER_IPV6;
    }
    struct sockaddr_in a;
    memcpy(&a, sa, sizeof(a));
    uint32_t ip = ntohl(a.sin_addr.s_addr);
    /* RFC 1918, link-local, loopback; not 100.64/10, which is the carrier's (RFC 6598) */
    if ((ip >> 24) == 10 || (ip >> 20) == 0xac1 || (ip >> 16) == 0xc0a8 || (ip >> 16) == 0xa9fe ||
        (ip >> 24) == 127)
        return POS_PROBER_LAN;
    return POS_PROBER_IPV4;
}

/* ---- the prober ---- */

static uint64_t next_random(pos_prober *p)
{
    /* splitmix64: enough for jitter, repeatable from the seed */
    uint64_t z = (p->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The next probe time after one sent at |now|: the interval +-25%. */
static int64_t next_probe_time(pos_prober *p, int64_t now)
{
    uint32_t iv = p->opt.interval_ms, spread = iv / 2;
    uint64_t r = next_random(p) % ((uint64_t)spread + 1);
    return now + (int64_t)(iv - iv / 4) + (int64_t)r;
}

pos_prober *pos_prober_new(const struct pos_prober_options *o)
{
    struct pos_prober_options def;
    pos_prober *p;

    if (!o) {
        pos_prober_options_default(&def);
        o = &def;
    }
    if (pos_prober_options_check(o))
        return NULL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->opt = *o;
    p->rng = o->seed;
    if (p->rng == 0)
        randombytes_buf(&p->rng, sizeof(p->rng));
    return p;
}

void pos_prober_stop(pos_prober *p)
{
    struct pos_prober_stats keep = p->stats;
    struct pos_prober_options opt = p->opt;
    uint64_t rng = p->rng;

    sodium_memzero(p, sizeof(*p));
    p->stats = keep;
    p->opt = opt;
    p->rng = rng;
    p->state = POS_PROBER_IDLE;
}

void pos_prober_del(pos_prober *p)
{
    if (!p)
        return;
    sodium_memzero(p, sizeof(*p));
    free(p);
}

static int running(const pos_prober *p)
{
    return p->state == POS_PROBER_WAITING || p->state == POS_PROBER_PROBING ||
           p->state == POS_PROBER_SETTLING;
}

/* Places of the relay's and the added candidates: the rest is the peer-reflexive ones'. */
#define NOT_REFLEXIVE (POS_PROBER_MAX_CANDIDATES - POS_PROBER_MIN_REFLEXIVE)

/*
 * Adds the normalised |ss| if fewer than |cap| candidates are known
 * (NOT_REFLEXIVE, or POS_PROBER_MAX_CANDIDATES for a peer-reflexive one);
 * returns 0 added, 1 known, POS_PROBER_ERR_FULL.
 */
static int add(pos_prober *p, const struct sockaddr_storage *ss, int64_t now, size_t cap)
{
    for (size_t i = 0; i < p->ncand; i++)
        if (same_addr(&p->cand[i].addr, ss))
            return 1;
    if (p->ncand >= cap)
        return POS_PROBER_ERR_FULL;
    struct candidate *c = &p->cand[p->ncand++];
    memset(c, 0, sizeof(*c));
    c->addr = *ss;
    /* probed at once when probing already runs; else when it begins */
    c->next_probe = now > p->probe_from ? now : p->probe_from;
    return 0;
}

int pos_prober_start(pos_prober *p, const pos_ctrl_msg *m, int64_t now)
{
    pos_prober_stop(p);
    if (m->type != POS_CTRL_PUNCH_START || m->circuit_id == 0 || m->peer_circuit_id == 0 ||
        m->attempt == 0 || m->start_in_ms > POS_PUNCH_MAX_START_IN_MS ||
        (m->role != POS_PUNCH_DIALER && m->role != POS_PUNCH_LISTENER) ||
        m->addrs.n > POS_CTRL_MAX_ADDRS)
        return POS_PROBER_ERR_INVALID;
    memcpy(p->key, m->punch_key, sizeof(p->key));
    p->circuit_id = m->circuit_id;
    p->peer_circuit_id = m->peer_circuit_id;
    p->role = m->role;
    p->peer_role = m->role == POS_PUNCH_DIALER ? POS_PUNCH_LISTENER : POS_PUNCH_DIALER;
    p->attempt = m->attempt;
    p->started = now;
    p->probe_from = now + m->start_in_ms;
    p->window_end = p->probe_from + p->opt.window_ms;
    for (size_t i = 0; i < m->addrs.n; i++) {
        struct sockaddr_storage ss, norm;
        const char *a = m->addrs.a[i];
        if (pos_addr_parse(a, strnlen(a, POS_ADDR_STRLEN), 0, &ss) == 0 &&
            normalise((const struct sockaddr *)&ss, &norm) == 0)
            add(p, &norm, now, NOT_REFLEXIVE);
    }
    if (p->ncand == 0) {
        pos_prober_stop(p);
        return POS_PROBER_ERR_INVALID;
    }
    p->state = POS_PROBER_WAITING;
    p->stats.attempts++;
    return 0;
}

int pos_prober_add_candidate(pos_prober *p, const struct sockaddr *sa, int64_t now)
{
    struct sockaddr_storage norm;

    if (normalise(sa, &norm) != 0)
        return POS_PROBER_ERR_INVALID;
    if (!running(p))
        return POS_PROBER_ERR_STATE;
    return add(p, &norm, now, NOT_REFLEXIVE);
}

int64_t pos_prober_deadline(const pos_prober *p)
{
    int64_t d;

    if (p->state == POS_PROBER_WAITING)
        return p->probe_from;
    if (p->state != POS_PROBER_PROBING && p->state != POS_PROBER_SETTLING)
        return -1;
    d = p->window_end;
    if (p->state == POS_PROBER_SETTLING && p->settle_end < d)
        d = p->settle_end;
    for (size_t i = 0; i < p->ncand; i++)
        if (!p->cand[i].validated && p->cand[i].next_probe < d)
            d = p->cand[i].next_probe;
    return d;
}

/* Index of the best validated candidate (prober.h: kind, rtt, first); ncand when none. */
static size_t choose(const pos_prober *p)
{
    size_t best = p->ncand;
    for (size_t i = 0; i < p->ncand; i++) {
        const struct pos_prober_path *c = &p->cand[i].path;
        if (!p->cand[i].validated)
            continue;
        if (best == p->ncand) {
            best = i;
            continue;
        }
        const struct pos_prober_path *b = &p->cand[best].path;
        if (c->kind < b->kind || (c->kind == b->kind && c->rtt_ms < b->rtt_ms) ||
            (c->kind == b->kind && c->rtt_ms == b->rtt_ms && c->validated < b->validated))
            best = i;
    }
    return best;
}

/* |now| - |then| in ms, 0 when the caller's clock went back, capped at UINT32_MAX. */
static uint32_t elapsed_ms(int64_t then, int64_t now)
{
    if (now <= then)
        return 0;
    return now - then > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)(now - then);
}

static void finish(pos_prober *p, int64_t now)
{
    p->best = choose(p);
    if (p->best < p->ncand) {
        p->state = POS_PROBER_DIRECT;
        p->stats.direct++;
        p->stats.last_ms_to_direct = elapsed_ms(p->started, now);
    } else {
        p->state = POS_PROBER_GAVE_UP;
        p->stats.gave_up++;
    }
}

size_t pos_prober_on_timer(pos_prober *p, int64_t now, struct pos_prober_datagram *out, size_t max)
{
    size_t n = 0;

    if (p->state == POS_PROBER_WAITING && now >= p->probe_from)
        p->state = POS_PROBER_PROBING;
    if (p->state != POS_PROBER_PROBING && p->state != POS_PROBER_SETTLING)
        return 0;
    /* the window bounds everything: a settle time cut short ends it too */
    if (now >= p->window_end || (p->state == POS_PROBER_SETTLING && now >= p->settle_end)) {
        finish(p, now);
        return 0;
    }
    uint64_t cookie =
        pos_punch_cookie(p->key, POS_FRAME_PUNCH, p->peer_circuit_id, p->role, p->attempt);
    for (size_t i = 0; i < p->ncand && n < max; i++) {
        struct candidate *c = &p->cand[i];
        if (c->validated || c->next_probe > now)
            continue;
        out[n].to = c->addr;
        pos_frame_encode_probe(out[n].frame, sizeof(out[n].frame), POS_FRAME_PUNCH,
                               p->peer_circuit_id, cookie);
        n++;
        c->sent++;
        c->last_sent = now;
        c->next_probe = next_probe_time(p, now);
        p->stats.probes_sent++;
    }
    return n;
}

static void on_ack(pos_prober *p, const struct sockaddr_storage *from, int64_t now)
{
    size_t i;

    for (i = 0; i < p->ncand; i++)
        if (same_addr(&p->cand[i].addr, from))
            break;
    if (i == p->ncand) {
        /* an answer from an address never probed: probe it before trusting it */
        if (running(p) && add(p, from, now, POS_PROBER_MAX_CANDIDATES) == 0)
            p->stats.peer_reflexive++;
        return;
    }
    struct candidate *c = &p->cand[i];
    if (c->validated || c->sent == 0 || !running(p))
        return;
    c->validated = 1;
    c->path.addr = c->addr;
    c->path.kind = pos_prober_kind_of((const struct sockaddr *)&c->addr);
    c->path.rtt_ms = elapsed_ms(c->last_sent, now);
    c->path.validated = now;
    p->stats.validated++;
    if (p->state == POS_PROBER_PROBING) {
        p->state = POS_PROBER_SETTLING;
        p->settle_end = now + p->opt.settle_ms;
    }
}

int pos_prober_on_frame(pos_prober *p, const struct sockaddr *from, const uint8_t *buf, size_t len,
                        int64_t now, struct pos_prober_datagram *reply)
{
    struct sockaddr_storage src;
    pos_frame f;

    /* answered until the window ends, also once this side is done: the peer may not be */
    if (p->state == POS_PROBER_IDLE || now >= p->window_end || normalise(from, &src) != 0 ||
        pos_frame_decode(buf, len, &f) != 0 ||
        (f.type != POS_FRAME_PUNCH && f.type != POS_FRAME_PUNCH_ACK) ||
        f.circuit_id != p->circuit_id)
        goto dropped;
    if (!pos_punch_cookie_ok(p->key, f.type, p->circuit_id, p->peer_role, p->attempt, f.cookie)) {
        p->stats.dropped_cookie++;
        goto dropped;
    }
    if (f.type == POS_FRAME_PUNCH_ACK) {
        on_ack(p, &src, now);
        return 0;
    }
    if (running(p) && add(p, &src, now, POS_PROBER_MAX_CANDIDATES) == 0)
        p->stats.peer_reflexive++;
    reply->to = src;
    pos_frame_encode_probe(
        reply->frame, sizeof(reply->frame), POS_FRAME_PUNCH_ACK, p->peer_circuit_id,
        pos_punch_cookie(p->key, POS_FRAME_PUNCH_ACK, p->peer_circuit_id, p->role, p->attempt));
    p->stats.acks_sent++;
    return 1;
dropped:
    p->stats.dropped++;
    return POS_PROBER_ERR_DROPPED;
}

int pos_prober_state(const pos_prober *p)
{
    return p->state;
}

int pos_prober_result(const pos_prober *p, struct pos_prober_path *out)
{
    if (p->state != POS_PROBER_DIRECT)
        return -1;
    *out = p->cand[p->best].path;
    return 0;
}

void pos_prober_get_stats(const pos_prober *p, struct pos_prober_stats *out)
{
    *out = p->stats;
}

const char *pos_prober_state_name(int state)
{
    static const char *const names[] = {"idle",     "waiting", "probing",
                                        "settling", "direct",  "gave up"};
    if (state < POS_PROBER_IDLE || state > POS_PROBER_GAVE_UP)
        return "unknown";
    return names[state];
}
