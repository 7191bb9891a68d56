/*
 * Unit tests of the circuit broker (relay/broker.c) without sockets or
 * Redis: clients are plain handles, the broker's outputs are recorded, the
 * circuit table is the real one (relay/circuit.c) and time is a number.
 */
#include <arpa/inet.h>
#include <string.h>

#include "broker.h"
#include "check.h"

#define TIMEOUT_MS 10000
#define PARKED_MS 35000 /* park_keepalive 25 s + 10 */

struct sent {
    void *conn;
    pos_ctrl_msg m;
};

/* What the broker did through its ops. */
static struct world {
    struct sent out[32];
    int n_out;
    relay_broker_req *lookup_q;
    char lookup_peer[POS_PEER_ID_STRLEN];
    uint64_t next_handle, cancelled;
    int lookup_fails;
    int64_t wake_at;
    int opened, closed, flushes;
    char parked_peer[POS_PEER_ID_STRLEN]; /* a peer parked here (op_park_wake) */
    int park_wakes, park_unwaits;
} w;

static int A, B, C, D; /* the callers' connection handles */

static void op_send(void *arg, void *conn, const pos_ctrl_msg *m)
{
    (void)arg;
    if (w.n_out < (int)(sizeof(w.out) / sizeof(w.out[0]))) {
        w.out[w.n_out].conn = conn;
        w.out[w.n_out].m = *m;
    }
    w.n_out++;
}

static uint64_t op_lookup(void *arg, const char *peer_id, relay_broker_req *q)
{
    (void)arg;
    if (w.lookup_fails)
        return 0;
    w.lookup_q = q;
    snprintf(w.lookup_peer, sizeof(w.lookup_peer), "%s", peer_id);
    return ++w.next_handle;
}

static void op_cancel(void *arg, uint64_t handle)
{
    (void)arg;
    w.cancelled = handle;
}

static void op_opened(void *arg, relay_budget *b0, relay_budget *b1)
{
    (void)arg;
    (void)b0;
    (void)b1;
    w.opened++;
}

static void op_closed(void *arg, const relay_circuit_info *info)
{
    (void)arg;
    (void)info;
    w.closed++;
}

static void op_wake(void *arg, int64_t at)
{
    (void)arg;
    w.wake_at = at;
}

static int op_park_wake(void *arg, const char *peer_id)
{
    (void)arg;
    if (!w.parked_peer[0] || strcmp(w.parked_peer, peer_id) != 0)
        return 0;
    w.park_wakes++;
    return 1;
}

static void op_park_unwait(void *arg, const char *peer_id)
{
    (void)arg;
    CHECK(strcmp(w.parked_peer, peer_id) == 0);
    w.park_unwaits++;
}

static void op_flush(void *arg)
{
    (void)arg;
    w.flushes++;
}

static const relay_broker_ops ops = {op_send,   op_flush, op_lookup, op_cancel,    op_opened,
                                     op_closed, op_wake,  NULL,      op_park_wake, op_park_unwait};

static struct sockaddr_in addr4(const char *ip, int port)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &in.sin_addr);
    return in;
}

static void reset(void)
{
    memset(&w, 0, sizeof(w));
    w.wake_at = -1;
}

/* A world of two home clients "peer-a" (A, 192.0.2.1:1111) and "peer-b" (B, 192.0.2.2:2222). */
struct rig {
    relay_circuits *t;
    relay_broker *b;
    relay_broker_client *a, *bb;
};

static void rig_up(struct rig *r, uint32_t capacity, const relay_broker_limits *lim)
{
    relay_broker_limits def = {0, 0, 16, 4096, TIMEOUT_MS, 0};
    struct sockaddr_in sa = addr4("192.0.2.1", 1111), sb = addr4("192.0.2.2", 2222);
    pos_ctrl_addrs la = {1, {"10.0.0.1:1111"}};
    reset();
    r->t = relay_circuits_new(capacity, 7);
    r->b = relay_broker_new(r->t, lim ? lim : &def, &ops);
    r->a = relay_broker_join(r->b, &A, "peer-a", 1, (struct sockaddr *)&sa, &la, NULL);
    r->bb = relay_broker_join(r->b, &B, "peer-b", 1, (struct sockaddr *)&sb, NULL, NULL);
}

static void rig_down(struct rig *r)
{
    if (r->a)
        relay_broker_leave(r->b, r->a, 0);
    if (r->bb)
        relay_broker_leave(r->b, r->bb, 0);
    relay_broker_del(r->b);
    relay_circuits_del(r->t);
}

static int request(struct rig *r, relay_broker_client *cl, uint8_t type, uint32_t req_id,
                   const char *peer, int64_t now)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.req_id = req_id;
    if (peer)
        snprintf(m.peer_id, sizeof(m.peer_id), "%s", peer);
    return relay_broker_request(r->b, cl, &m, now);
}

static relay_broker_stats stats(const struct rig *r)
{
    relay_broker_stats st;
    relay_broker_stats_get(r->b, &st);
    return st;
}

/* Expects exactly one message so far, to |conn|, of |type|; returns it. */
static const pos_ctrl_msg *only(void *conn, uint8_t type)
{
    CHECK(w.n_out == 1);
    CHECK(w.out[0].conn == conn);
    CHECK(w.out[0].m.type == type);
    return &w.out[0].m;
}

static uint32_t incoming_req(struct rig *r, int64_t now)
{
    CHECK(request(r, r->a, POS_CTRL_CONNECT, 7, "peer-b", now) == 0);
    const pos_ctrl_msg *in = only(&B, POS_CTRL_INCOMING);
    uint32_t id = in->req_id;
    w.n_out = 0;
    return id;
}

static void test_connect_accept(void)
{
    struct rig r;
    rig_up(&r, 16, NULL);
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 7, "peer-b", 1000) == 0);
    const pos_ctrl_msg *in = only(&B, POS_CTRL_INCOMING);
    uint32_t to_req = in->req_id;
    CHECK(to_req != 0);
    CHECK(strcmp(in->peer_id, "peer-a") == 0);
    CHECK(strcmp(in->observed, "192.0.2.1:1111") == 0);
    CHECK(in->addrs.n == 1 && strcmp(in->addrs.a[0], "10.0.0.1:1111") == 0);
    CHECK(w.wake_at == 1000 + TIMEOUT_MS);
    CHECK(w.flushes == 1); /* once per input, after the messages are queued */
    CHECK(stats(&r).requests_pending == 1);
    w.n_out = 0;

    CHECK(request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 2000) == 0);
    CHECK(w.n_out == 2);
    const pos_ctrl_msg *ca = &w.out[0].m, *cb = &w.out[1].m;
    CHECK(w.out[0].conn == &A && ca->type == POS_CTRL_CIRCUIT && ca->req_id == 7);
    CHECK(w.out[1].conn == &B && cb->type == POS_CTRL_CIRCUIT && cb->req_id == to_req);
    CHECK(strcmp(ca->peer_id, "peer-b") == 0 && strcmp(cb->peer_id, "peer-a") == 0);
    CHECK(strcmp(ca->observed, "192.0.2.2:2222") == 0);
    /* both ids name the two sides of one open circuit */
    relay_side *sa = relay_circuit_find(r.t, ca->circuit_id);
    CHECK(sa != NULL && cb->circuit_id != ca->circuit_id);
    CHECK(sa && relay_circuit_peer(r.t, sa)->id == cb->circuit_id);
    CHECK(r.t->open == 1 && w.opened == 1);
    CHECK(w.wake_at == -1);
    CHECK(stats(&r).requests_pending == 0 && stats(&r).circuits_opened == 1);

    /* the same answer again is for no request: ignored */
    w.n_out = 0;
    CHECK(request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 2001) == 0);
    CHECK(w.n_out == 0 && r.t->open == 1);

    /* the client moves: its side of the circuit follows */
    struct sockaddr_in moved = addr4("192.0.2.9", 9999);
    relay_broker_moved(r.b, r.a, (struct sockaddr *)&moved, 2002);
    sa = relay_circuit_find(r.t, ca->circuit_id);
    CHECK(sa && sa->addr.port == htons(9999));
    rig_down(&r);
    CHECK(w.closed == 1);
}

static void test_decline_and_unknown(void)
{
    struct rig r;
    rig_up(&r, 16, NULL);
    uint32_t to_req = incoming_req(&r, 0);
    CHECK(request(&r, r.bb, POS_CTRL_ACCEPT, to_req + 1000, NULL, 1) == 0); /* unknown req_id */
    CHECK(w.n_out == 0);
    CHECK(request(&r, r.a, POS_CTRL_ACCEPT, to_req, NULL, 1) == 0); /* not A's to answer */
    CHECK(w.n_out == 0);
    CHECK(request(&r, r.bb, POS_CTRL_DECLINE, to_req, NULL, 2) == 0);
    const pos_ctrl_msg *e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 7 && e->code == POS_CTRL_CODE_DECLINED);
    CHECK(r.t->open == 0 && stats(&r).requests_pending == 0 && w.wake_at == -1);
    /* a message the broker does not handle is the caller's to refuse */
    CHECK(request(&r, r.a, POS_CTRL_HELLO, 1, NULL, 3) == -1);
    rig_down(&r);
}

static void test_self(void)
{
    struct rig r;
    rig_up(&r, 16, NULL);
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 3, "peer-a", 0) == 0);
    const pos_ctrl_msg *e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 3 && e->code == POS_CTRL_CODE_BAD_PEER);
    CHECK(w.lookup_q == NULL);
    rig_down(&r);
}

static void test_timeout(void)
{
    struct rig r;
    rig_up(&r, 16, NULL);
    uint32_t to_req = incoming_req(&r, 500);
    CHECK(w.wake_at == 500 + TIMEOUT_MS);
    relay_broker_expire(r.b, 500 + TIMEOUT_MS - 1);
    CHECK(w.n_out == 0 && stats(&r).requests_pending == 1);
    relay_broker_expire(r.b, 500 + TIMEOUT_MS);
    const pos_ctrl_msg *e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 7 && e->code == POS_CTRL_CODE_TIMEOUT);
    CHECK(w.wake_at == -1 && stats(&r).requests_pending == 0);
    w.n_out = 0;
    CHECK(request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 600 + TIMEOUT_MS) == 0); /* too late */
    CHECK(w.n_out == 0 && r.t->open == 0);
    rig_down(&r);
}

static void test_peer_leaves(void)
{
    struct rig r;
    /* the target leaves while asked: the requester hears PEER_LEFT */
    rig_up(&r, 16, NULL);
    incoming_req(&r, 0);
    relay_broker_leave(r.b, r.bb, 5);
    r.bb = NULL;
    const pos_ctrl_msg *e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 7 && e->code == POS_CTRL_CODE_PEER_LEFT);
    CHECK(stats(&r).requests_pending == 0 && w.wake_at == -1);
    rig_down(&r);

    /* the requester leaves while the target is asked: the answer is ignored */
    rig_up(&r, 16, NULL);
    uint32_t to_req = incoming_req(&r, 0);
    relay_broker_leave(r.b, r.a, 5);
    r.a = NULL;
    CHECK(w.n_out == 0 && stats(&r).requests_pending == 0);
    CHECK(request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 6) == 0);
    CHECK(w.n_out == 0 && r.t->open == 0);
    rig_down(&r);

    /* after the circuit: the other side gets CIRCUIT_CLOSED with its own id */
    rig_up(&r, 16, NULL);
    to_req = incoming_req(&r, 0);
    request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 1);
    uint32_t b_id = w.out[1].m.circuit_id;
    w.n_out = 0;
    relay_broker_leave(r.b, r.a, 9);
    r.a = NULL;
    const pos_ctrl_msg *cc = only(&B, POS_CTRL_CIRCUIT_CLOSED);
    CHECK(cc->circuit_id == b_id && cc->code == POS_CTRL_CODE_PEER_LEFT);
    CHECK(r.t->open == 0 && w.closed == 1 && stats(&r).circuits_closed == 1);
    rig_down(&r);
}

static void test_busy_and_limits(void)
{
    struct rig r;
    relay_broker_limits lim = {1, 0, 2, 4096, TIMEOUT_MS, 0};

    /* requests in flight per client */
    rig_up(&r, 16, &lim);
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 1, "peer-b", 0) == 0);
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 2, "peer-b", 0) == 0);
    w.n_out = 0;
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 3, "peer-b", 0) == 0);
    const pos_ctrl_msg *e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 3 && e->code == POS_CTRL_CODE_BUSY);
    CHECK(stats(&r).requests_pending == 2);
    rig_down(&r);

    /* one circuit per connection: a second CONNECT is refused before B is asked */
    rig_up(&r, 16, &lim);
    uint32_t to_req = incoming_req(&r, 0);
    request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 1);
    CHECK(r.t->open == 1);
    w.n_out = 0;
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 8, "peer-b", 2) == 0);
    e = only(&A, POS_CTRL_ERROR);
    CHECK(e->req_id == 8 && e->code == POS_CTRL_CODE_CIRCUIT_LIMIT);
    CHECK(strstr(e->text, "limit 1") != NULL);
    CHECK(stats(&r).refused_limit == 1);
    rig_down(&r);

    /* the table is full when B accepts: both sides hear BUSY */
    rig_up(&r, 1, NULL);
    struct sockaddr_in sc = addr4("192.0.2.3", 3333);
    relay_broker_client *c =
        relay_broker_join(r.b, &C, "peer-c", 1, (struct sockaddr *)&sc, NULL, NULL);
    to_req = incoming_req(&r, 0);
    request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 1);
    w.n_out = 0;
    CHECK(request(&r, c, POS_CTRL_CONNECT, 4, "peer-b", 2) == 0);
    to_req = only(&B, POS_CTRL_INCOMING)->req_id;
    w.n_out = 0;
    request(&r, r.bb, POS_CTRL_ACCEPT, to_req, NULL, 3);
    CHECK(w.n_out == 2);
    CHECK(w.out[0].conn == &C && w.out[0].m.type == POS_CTRL_ERROR &&
          w.out[0].m.code == POS_CTRL_CODE_BUSY && w.out[0].m.req_id == 4);
    CHECK(w.out[1].conn == &B && w.out[1].m.type == POS_CTRL_ERROR &&
          w.out[1].m.code == POS_CTRL_CODE_BUSY && w.out[1].m.req_id == to_req);
    CHECK(r.t->open == 1);
    relay_broker_leave(r.b, c, 4);
    rig_down(&r);
}

static void test_redirect_and_lookup(void)
{
    struct rig r;
    relay_presence_found f;
    rig_up(&r, 16, NULL);

    /* not here: the presence lookup decides; found on another relay -> REDIRECT */
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 5, "peer-z", 0) == 0);
    CHECK(w.n_out == 0 && w.lookup_q != NULL && strcmp(w.lookup_peer, "peer-z") == 0);
    memset(&f, 0, sizeof(f));
    snprintf(f.relay_id, sizeof(f.relay_id), "%s", "0b6c6d5e-7f52-4c2b-9d1e-1a2b3c4d5e6f");
    snprintf(f.peer_id, sizeof(f.peer_id), "%s", "peer-z");
    snprintf(f.addrs[0], sizeof(f.addrs[0]), "%s", "198.51.100.7:7373");
    snprintf(f.addrs[1], sizeof(f.addrs[1]), "%s", "[2001:db8::7]:7373");
    f.n_addrs = 2;
    relay_broker_lookup_done(w.lookup_q, RELAY_PRESENCE_FOUND, &f);
    const pos_ctrl_msg *m = only(&A, POS_CTRL_REDIRECT);
    CHECK(m->req_id == 5 && strcmp(m->relay_id, f.relay_id) == 0);
    CHECK(strcmp(m->peer_id, "peer-z") == 0 && m->addrs.n == 2);
    CHECK(strcmp(m->addrs.a[1], "[2001:db8::7]:7373") == 0);
    CHECK(stats(&r).redirects == 1 && stats(&r).requests_pending == 0);

    /* nowhere, and Redis unreachable */
    w.n_out = 0;
    request(&r, r.a, POS_CTRL_CONNECT, 6, "peer-z", 0);
    relay_broker_lookup_done(w.lookup_q, RELAY_PRESENCE_NOT_FOUND, NULL);
    CHECK(only(&A, POS_CTRL_ERROR)->code == POS_CTRL_CODE_PEER_NOT_CONNECTED);
    w.n_out = 0;
    request(&r, r.a, POS_CTRL_CONNECT, 7, "peer-z", 0);
    relay_broker_lookup_done(w.lookup_q, RELAY_PRESENCE_UNAVAILABLE, NULL);
    CHECK(only(&A, POS_CTRL_ERROR)->code == POS_CTRL_CODE_UNAVAILABLE);

    /* the lookup cannot start */
    w.n_out = 0;
    w.lookup_fails = 1;
    request(&r, r.a, POS_CTRL_CONNECT, 8, "peer-z", 0);
    CHECK(only(&A, POS_CTRL_ERROR)->code == POS_CTRL_CODE_BUSY);
    w.lookup_fails = 0;

    /* the requester leaves during the lookup: it is cancelled */
    w.n_out = 0;
    request(&r, r.a, POS_CTRL_CONNECT, 9, "peer-z", 0);
    uint64_t handle = w.next_handle;
    relay_broker_leave(r.b, r.a, 1);
    r.a = NULL;
    CHECK(w.cancelled == handle && w.n_out == 0 && stats(&r).requests_pending == 0);
    rig_down(&r);
}

static void test_who_is_asked(void)
{
    struct rig r;
    struct sockaddr_in sd = addr4("192.0.2.4", 4444);

    /* a client that is not home (measuring, dialing) is never asked: presence decides */
    rig_up(&r, 16, NULL);
    relay_broker_client *d =
        relay_broker_join(r.b, &D, "peer-d", 0, (struct sockaddr *)&sd, NULL, NULL);
    request(&r, r.a, POS_CTRL_CONNECT, 1, "peer-d", 0);
    CHECK(w.n_out == 0 && w.lookup_q != NULL);
    relay_broker_lookup_done(w.lookup_q, RELAY_PRESENCE_NOT_FOUND, NULL);
    relay_broker_leave(r.b, d, 1);

    /* a closing client is not asked either */
    w.n_out = 0;
    w.lookup_q = NULL;
    relay_broker_closing(r.bb);
    request(&r, r.a, POS_CTRL_CONNECT, 2, "peer-b", 0);
    CHECK(w.n_out == 0 && w.lookup_q != NULL);
    relay_broker_lookup_done(w.lookup_q, RELAY_PRESENCE_NOT_FOUND, NULL);

    /* the newest home connection of a peer is the one asked */
    w.n_out = 0;
    d = relay_broker_join(r.b, &D, "peer-b", 1, (struct sockaddr *)&sd, NULL, NULL);
    request(&r, r.a, POS_CTRL_CONNECT, 3, "peer-b", 0);
    only(&D, POS_CTRL_INCOMING);
    relay_broker_leave(r.b, d, 1);
    rig_down(&r);
}

/* ---- hole punching (pos-relay/2) ---- */

static struct sockaddr_in6 addr6(const char *ip, int port)
{
    struct sockaddr_in6 in;
    memset(&in, 0, sizeof(in));
    in.sin6_family = AF_INET6;
    in.sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &in.sin6_addr);
    return in;
}

/*
 * A world for punching: "peer-a" (A, 192.0.2.1:1111, RTT 10 ms, local
 * addresses one of which repeats its observed one) and "peer-b" (B,
 * [2001:db8::2]:2222, RTT 50 ms, no local address), of versions |va| and
 * |vb|, with punching |on| at a 5 s minimum interval.
 */
static void punch_rig_up(struct rig *r, int va, int vb, int on)
{
    relay_broker_limits def = {0, 0, 16, 4096, TIMEOUT_MS, 0};
    struct sockaddr_in sa = addr4("192.0.2.1", 1111);
    struct sockaddr_in6 sb = addr6("2001:db8::2", 2222);
    pos_ctrl_addrs la = {3, {"10.0.0.1:1111", "192.0.2.1:1111", "[fd00::1]:1111"}};
    reset();
    r->t = relay_circuits_new(16, 7);
    r->b = relay_broker_new(r->t, &def, &ops);
    relay_broker_set_punch(r->b, on, 5000);
    r->a = relay_broker_join(r->b, &A, "peer-a", 1, (struct sockaddr *)&sa, &la, NULL);
    r->bb = relay_broker_join(r->b, &B, "peer-b", 1, (struct sockaddr *)&sb, NULL, NULL);
    relay_broker_set_version(r->a, va);
    relay_broker_set_version(r->bb, vb);
    relay_broker_set_rtt(r->a, 10);
    relay_broker_set_rtt(r->bb, 50);
}

/* circuit_between: A dials B, B accepts at |now|; the two circuit ids; w.out has what was sent. */
static void circuit_between(struct rig *r, int64_t now, uint32_t ids[2])
{
    uint32_t to_req = incoming_req(r, now);
    CHECK(request(r, r->bb, POS_CTRL_ACCEPT, to_req, NULL, now) == 0);
    CHECK(w.n_out >= 2 && w.out[0].m.type == POS_CTRL_CIRCUIT &&
          w.out[1].m.type == POS_CTRL_CIRCUIT);
    ids[0] = w.out[0].m.circuit_id;
    ids[1] = w.out[1].m.circuit_id;
}

static int punch_msg(struct rig *r, relay_broker_client *cl, uint8_t type, uint32_t circuit_id,
                     const pos_ctrl_addrs *addrs, uint8_t outcome, uint32_t ms, int64_t now)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.circuit_id = circuit_id;
    if (addrs)
        m.addrs = *addrs;
    m.attempt = 1;
    m.outcome = outcome;
    m.ms_to_direct = ms;
    return relay_broker_request(r->b, cl, &m, now);
}

static int addrs_are(const pos_ctrl_addrs *a, int n, const char *const *want)
{
    if (a->n != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(a->a[i], want[i]) != 0)
            return 0;
    return 1;
}

static void test_punch_start(void)
{
    static const uint8_t zero[POS_PUNCH_KEY_LEN];
    static const char *const a_cands[] = {"192.0.2.1:1111", "10.0.0.1:1111", "[fd00::1]:1111"};
    static const char *const b_cands[] = {"[2001:db8::2]:2222"};
    struct rig r;
    uint32_t ids[2];

    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V2, 1);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 4); /* CIRCUIT, CIRCUIT, then PUNCH_START to each */
    const pos_ctrl_msg *pa = &w.out[2].m, *pb = &w.out[3].m;
    CHECK(w.out[2].conn == &A && pa->type == POS_CTRL_PUNCH_START);
    CHECK(w.out[3].conn == &B && pb->type == POS_CTRL_PUNCH_START);
    /* one secret for both, drawn for this attempt */
    CHECK(memcmp(pa->punch_key, pb->punch_key, POS_PUNCH_KEY_LEN) == 0);
    CHECK(memcmp(pa->punch_key, zero, POS_PUNCH_KEY_LEN) != 0);
    /* each its own id first, the peer's second, as the CIRCUIT messages gave them */
    CHECK(pa->circuit_id == ids[0] && pa->peer_circuit_id == ids[1]);
    CHECK(pb->circuit_id == ids[1] && pb->peer_circuit_id == ids[0]);
    CHECK(pa->role == POS_PUNCH_DIALER && pb->role == POS_PUNCH_LISTENER);
    CHECK(pa->attempt == 1 && pb->attempt == 1);
    /* A (10 ms) hears it 20 ms before B (50 ms): A waits half the difference, B not at all */
    CHECK(pa->start_in_ms == 20 && pb->start_in_ms == 0);
    /* the peer's candidates: observed first, then its own addresses, no duplicates */
    CHECK(addrs_are(&pa->addrs, 1, b_cands));
    CHECK(addrs_are(&pb->addrs, 3, a_cands));
    CHECK(stats(&r).punches_started == 1);
    /* the encoder of version 2 takes it (the relay sends exactly this) */
    uint8_t buf[POS_CTRL_MAX_MSG];
    CHECK(pos_ctrl_encode_version(pa, POS_CTRL_V2, buf, sizeof(buf)) > 0);
    CHECK(pos_ctrl_encode_version(pb, POS_CTRL_V2, buf, sizeof(buf)) > 0);
    uint8_t key1[POS_PUNCH_KEY_LEN];
    memcpy(key1, pa->punch_key, sizeof(key1));

    /* PUNCH_REQUEST before the minimum interval: ignored and counted */
    pos_ctrl_addrs req = {2, {"10.9.9.9:2222", "[2001:db8::2]:2222"}};
    w.n_out = 0;
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REQUEST, ids[1], &req, 0, 0, 1000 + 4999) == 0);
    CHECK(w.n_out == 0);
    CHECK(stats(&r).punch_requests == 1 && stats(&r).punch_requests_ignored == 1);
    /* a circuit id that is not the sender's: ignored */
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REQUEST, ids[0], &req, 0, 0, 20000) == 0);
    CHECK(w.n_out == 0 && stats(&r).punch_requests_ignored == 2);
    /* once the interval has passed: attempt 2, a new key, B's requested addresses for A */
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REQUEST, ids[1], &req, 0, 0, 1000 + 5000) == 0);
    CHECK(w.n_out == 2);
    pa = &w.out[0].m;
    pb = &w.out[1].m;
    CHECK(w.out[0].conn == &A && pa->type == POS_CTRL_PUNCH_START && pa->attempt == 2);
    CHECK(w.out[1].conn == &B && pb->type == POS_CTRL_PUNCH_START && pb->attempt == 2);
    CHECK(pa->circuit_id == ids[0] && pb->circuit_id == ids[1]);
    CHECK(memcmp(pa->punch_key, pb->punch_key, POS_PUNCH_KEY_LEN) == 0);
    CHECK(memcmp(pa->punch_key, key1, POS_PUNCH_KEY_LEN) != 0);
    static const char *const b_cands2[] = {"[2001:db8::2]:2222", "10.9.9.9:2222"};
    CHECK(addrs_are(&pa->addrs, 2, b_cands2));
    CHECK(stats(&r).punches_started == 2 && stats(&r).punch_requests_ignored == 2);
    /* the interval counts from the latest attempt */
    w.n_out = 0;
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REQUEST, ids[0], NULL, 0, 0, 1000 + 9999) == 0);
    CHECK(w.n_out == 0 && stats(&r).punch_requests_ignored == 3);

    /* reports are counted, nothing is sent */
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REPORT, ids[0], NULL, POS_CTRL_PUNCH_DIRECT, 250,
                    20000) == 0);
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REPORT, ids[1], NULL, POS_CTRL_PUNCH_DIRECT, 150,
                    20000) == 0);
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REPORT, ids[0], NULL, POS_CTRL_PUNCH_FELL_BACK, 0,
                    20000) == 0);
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REPORT, ids[0], NULL, POS_CTRL_PUNCH_FAILED, 0,
                    20000) == 0);
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REPORT, ids[1], NULL, POS_CTRL_PUNCH_DIRECT, 9,
                    20000) == 0);
    relay_broker_stats st = stats(&r);
    CHECK(w.n_out == 0);
    CHECK(st.punch_reports[0] == 2 && st.punch_reports[1] == 1 && st.punch_reports[2] == 1);
    CHECK(st.punch_direct_ms_sum == 400 && st.punch_reports_ignored == 1);
    rig_down(&r);
}

static void test_punch_not_v1_or_off(void)
{
    struct rig r;
    uint32_t ids[2];

    /* the listener speaks pos-relay/1: CIRCUIT only, and the dialer's request is ignored */
    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V1, 1);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 2 && stats(&r).punches_started == 0);
    w.n_out = 0;
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REQUEST, ids[0], NULL, 0, 0, 60000) == 0);
    CHECK(w.n_out == 0 && stats(&r).punch_requests_ignored == 1);
    /* a version 1 client has no such message: the caller refuses it */
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REQUEST, ids[1], NULL, 0, 0, 60000) == -1);
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REPORT, ids[1], NULL, 1, 0, 60000) == -1);
    rig_down(&r);

    /* the dialer speaks pos-relay/1 */
    punch_rig_up(&r, POS_CTRL_V1, POS_CTRL_V2, 1);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 2 && stats(&r).punches_started == 0);
    rig_down(&r);

    /* punching off (config punch false): nothing, and requests are ignored */
    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V2, 0);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 2 && stats(&r).punches_started == 0);
    w.n_out = 0;
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REQUEST, ids[0], NULL, 0, 0, 60000) == 0);
    CHECK(w.n_out == 0 && stats(&r).punch_requests_ignored == 1);
    rig_down(&r);
}

static void test_punch_candidates_bounded(void)
{
    struct rig r;
    uint32_t ids[2];
    pos_ctrl_addrs many = {8,
                           {"10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1", "10.0.0.6:1",
                            "10.0.0.7:1", "10.0.0.8:1", "10.0.0.9:1"}};

    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V2, 1);
    /* B asks with 8 addresses before any circuit: remembered, the request ignored */
    CHECK(punch_msg(&r, r.bb, POS_CTRL_PUNCH_REQUEST, 12345, &many, 0, 0, 0) == 0);
    CHECK(stats(&r).punch_requests_ignored == 1);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 4);
    /* observed plus the first 7: at most 8, the observed one kept first */
    const pos_ctrl_addrs *c = &w.out[2].m.addrs;
    CHECK(c->n == POS_CTRL_MAX_ADDRS);
    CHECK(strcmp(c->a[0], "[2001:db8::2]:2222") == 0 && strcmp(c->a[7], "10.0.0.8:1") == 0);
    rig_down(&r);
}

/* pos-relay/3: each side's PUNCH_START carries the other's NAT mapping (from its HELLO) */
static void test_punch_nat_mapping(void)
{
    struct rig r;
    uint32_t ids[2];
    uint8_t buf[POS_CTRL_MAX_MSG];

    punch_rig_up(&r, POS_CTRL_V3, POS_CTRL_V3, 1);
    relay_broker_set_nat(r.a, POS_CTRL_NAT_VARIES);
    relay_broker_set_nat(r.bb, POS_CTRL_NAT_EIM);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 4 && stats(&r).punches_started == 1);
    CHECK(w.out[2].conn == &A && w.out[2].m.peer_nat == POS_CTRL_NAT_EIM);
    CHECK(w.out[3].conn == &B && w.out[3].m.peer_nat == POS_CTRL_NAT_VARIES);
    CHECK(pos_ctrl_encode_version(&w.out[2].m, POS_CTRL_V3, buf, sizeof(buf)) > 0);
    /* a later attempt too, and a version 3 client's requests are taken */
    w.n_out = 0;
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REQUEST, ids[0], NULL, 0, 0, 1000 + 5000) == 0);
    CHECK(w.n_out == 2 && w.out[0].m.attempt == 2 && w.out[0].m.peer_nat == POS_CTRL_NAT_EIM);
    CHECK(punch_msg(&r, r.a, POS_CTRL_PUNCH_REPORT, ids[0], NULL, 2, 0, 7000) == 0);
    rig_down(&r);

    /* a version 2 peer of a version 3 client: punching as before, no mapping for it */
    punch_rig_up(&r, POS_CTRL_V3, POS_CTRL_V2, 1);
    relay_broker_set_nat(r.a, POS_CTRL_NAT_VARIES);
    relay_broker_set_nat(r.bb, 7); /* not a mapping: unknown */
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 4 && w.out[2].m.peer_nat == POS_CTRL_NAT_UNKNOWN);
    CHECK(w.out[3].conn == &B && w.out[3].m.type == POS_CTRL_PUNCH_START);
    CHECK(pos_ctrl_encode_version(&w.out[3].m, POS_CTRL_V2, buf, sizeof(buf)) > 0);
    rig_down(&r);
}

/*
 * pos-relay/3: a client that learnt its mapping after HELLO (pos-p2p send
 * compares two relays' observations) tells it in CONNECT or ACCEPT; the
 * PUNCH_START to its peer carries it.
 */
static void test_punch_nat_from_requests(void)
{
    struct rig r;
    pos_ctrl_msg m;
    uint32_t to_req;

    punch_rig_up(&r, POS_CTRL_V3, POS_CTRL_V3, 1); /* HELLOs without a mapping */
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    m.req_id = 7;
    m.hello_flags = POS_CTRL_HELLO_NAT_VARIES;
    snprintf(m.peer_id, sizeof(m.peer_id), "peer-b");
    CHECK(relay_broker_request(r.b, r.a, &m, 1000) == 0);
    to_req = only(&B, POS_CTRL_INCOMING)->req_id;
    w.n_out = 0;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_ACCEPT;
    m.req_id = to_req;
    m.hello_flags = POS_CTRL_HELLO_NAT_EIM;
    CHECK(relay_broker_request(r.b, r.bb, &m, 1000) == 0);
    CHECK(w.n_out == 4 && w.out[2].m.type == POS_CTRL_PUNCH_START);
    CHECK(w.out[2].conn == &A && w.out[2].m.peer_nat == POS_CTRL_NAT_EIM);
    CHECK(w.out[3].conn == &B && w.out[3].m.peer_nat == POS_CTRL_NAT_VARIES);
    rig_down(&r);
}

/* a side's control connection moves (NAT rebinding): a new attempt, unless one is too recent */
static void test_punch_on_move(void)
{
    struct rig r;
    uint32_t ids[2];
    struct sockaddr_in moved = addr4("192.0.2.1", 1999), again = addr4("192.0.2.1", 2999);
    static const char *const a_moved[] = {"192.0.2.1:1999", "10.0.0.1:1111", "192.0.2.1:1111",
                                          "[fd00::1]:1111"};

    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V3, 1);
    circuit_between(&r, 1000, ids);
    CHECK(w.n_out == 4 && stats(&r).punches_started == 1);
    /* within the minimum interval of attempt 1: its circuit follows, no attempt */
    w.n_out = 0;
    relay_broker_moved(r.b, r.a, (struct sockaddr *)&again, 1000 + 4999);
    CHECK(w.n_out == 0 && stats(&r).punch_moves_ignored == 1 && stats(&r).punches_on_move == 0);
    /* later: attempt 2 to both, B gets A's new address first among its candidates */
    int flushes = w.flushes;
    relay_broker_moved(r.b, r.a, (struct sockaddr *)&moved, 1000 + 5000);
    CHECK(w.n_out == 2 && stats(&r).punches_on_move == 1 && stats(&r).punches_started == 2);
    CHECK(w.out[0].conn == &A && w.out[0].m.type == POS_CTRL_PUNCH_START &&
          w.out[0].m.attempt == 2 && w.out[0].m.role == POS_PUNCH_DIALER);
    CHECK(w.out[1].conn == &B && w.out[1].m.attempt == 2 && w.out[1].m.circuit_id == ids[1]);
    CHECK(addrs_are(&w.out[1].m.addrs, 4, a_moved));
    CHECK(w.flushes == flushes + 1); /* what was queued goes out */
    rig_down(&r);

    /* a peer on pos-relay/1, or punching off: the circuit follows, nothing else */
    punch_rig_up(&r, POS_CTRL_V2, POS_CTRL_V1, 1);
    circuit_between(&r, 1000, ids);
    w.n_out = 0;
    relay_broker_moved(r.b, r.bb, (struct sockaddr *)&moved, 60000);
    CHECK(w.n_out == 0 && stats(&r).punches_on_move == 0 && stats(&r).punch_moves_ignored == 0);
    CHECK(relay_circuit_find(r.t, ids[1]) &&
          relay_circuit_find(r.t, ids[1])->addr.port == htons(1999));
    rig_down(&r);
}

/* A CONNECT for a parked peer waits (no lookup) until the woken peer joins, then INCOMING. */
static void test_parked_peer_woken(void)
{
    struct rig r;
    struct sockaddr_in sc = addr4("192.0.2.3", 3333);
    rig_up(&r, 16, NULL);
    snprintf(w.parked_peer, sizeof(w.parked_peer), "peer-c");
    CHECK(relay_broker_idle(r.b, r.a) && relay_broker_idle(r.b, r.bb));
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 9, "peer-c", 100) == 0);
    CHECK(w.park_wakes == 1 && w.n_out == 0 && w.lookup_q == NULL);
    CHECK(w.wake_at == 100 + TIMEOUT_MS && stats(&r).wakes == 1);
    CHECK(!relay_broker_idle(r.b, r.a)); /* a request in flight: A may not park */
    /* a dialing (not home) connection of peer-c is not the woken one */
    relay_broker_client *dial =
        relay_broker_join(r.b, &D, "peer-c", 0, (struct sockaddr *)&sc, NULL, NULL);
    relay_broker_woken(r.b, dial, 150);
    CHECK(w.n_out == 0);
    /* a second requester waits for the same parked peer */
    CHECK(request(&r, r.bb, POS_CTRL_CONNECT, 5, "peer-c", 150) == 0);
    CHECK(w.park_wakes == 2 && w.n_out == 0);
    relay_broker_client *c =
        relay_broker_join(r.b, &C, "peer-c", 1, (struct sockaddr *)&sc, NULL, NULL);
    relay_broker_woken(r.b, c, 200);
    CHECK(w.park_unwaits == 0); /* came back: nobody stopped waiting */
    /* every waiting CONNECT gets its INCOMING once the woken client is in */
    CHECK(w.n_out == 2 && w.out[0].conn == &C && w.out[1].conn == &C);
    CHECK(w.out[0].m.type == POS_CTRL_INCOMING && w.out[1].m.type == POS_CTRL_INCOMING);
    CHECK(strcmp(w.out[0].m.peer_id, w.out[1].m.peer_id) != 0);
    const pos_ctrl_msg *in = strcmp(w.out[0].m.peer_id, "peer-a") == 0 ? &w.out[0].m : &w.out[1].m;
    CHECK(strcmp(in->peer_id, "peer-a") == 0);
    uint32_t from_b = (in == &w.out[0].m ? &w.out[1].m : &w.out[0].m)->req_id;
    CHECK(w.wake_at == 200 + TIMEOUT_MS); /* a fresh deadline for the woken client's answer */
    CHECK(!relay_broker_idle(r.b, c));
    uint32_t to_req = in->req_id;
    w.n_out = 0;
    CHECK(request(&r, c, POS_CTRL_ACCEPT, to_req, NULL, 210) == 0);
    CHECK(w.n_out == 2 && w.out[0].m.type == POS_CTRL_CIRCUIT && w.out[0].m.req_id == 9);
    CHECK(w.out[0].conn == &A);
    w.n_out = 0;
    CHECK(request(&r, c, POS_CTRL_DECLINE, from_b, NULL, 220) == 0);
    CHECK(only(&B, POS_CTRL_ERROR)->req_id == 5);
    /* a parked peer that never comes back: TIMEOUT like an unanswered INCOMING */
    w.n_out = 0;
    snprintf(w.parked_peer, sizeof(w.parked_peer), "peer-d");
    CHECK(request(&r, r.bb, POS_CTRL_CONNECT, 4, "peer-d", 300) == 0);
    CHECK(w.n_out == 0);
    relay_broker_expire(r.b, 300 + TIMEOUT_MS);
    const pos_ctrl_msg *e = only(&B, POS_CTRL_ERROR);
    CHECK(e->req_id == 4 && e->code == POS_CTRL_CODE_TIMEOUT);
    CHECK(w.park_unwaits == 1); /* timed out: the record is no longer woken for it */
    /* a requester that leaves while waiting stops waiting too */
    CHECK(request(&r, r.bb, POS_CTRL_CONNECT, 6, "peer-d", 310) == 0);
    CHECK(w.park_unwaits == 1);
    relay_broker_leave(r.b, r.bb, 320);
    r.bb = NULL;
    CHECK(w.park_unwaits == 2);
    relay_broker_leave(r.b, c, 400);
    relay_broker_leave(r.b, dial, 400);
    rig_down(&r);
}

/*
 * A CONNECT for a parked peer waits longer than one for INCOMING's answer
 * (parked_timeout_ms: the peer's next keep-alive may be what finds it), on
 * its own list: the shorter waits of other requests still expire in time.
 */
static void test_parked_wait_is_longer(void)
{
    struct rig r;
    relay_broker_limits lim = {0, 0, 16, 4096, TIMEOUT_MS, PARKED_MS};
    struct sockaddr_in sc = addr4("192.0.2.3", 3333);
    rig_up(&r, 16, &lim);
    snprintf(w.parked_peer, sizeof(w.parked_peer), "peer-c");
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 9, "peer-c", 100) == 0);
    CHECK(w.park_wakes == 1 && w.n_out == 0 && w.wake_at == 100 + PARKED_MS);
    /* B asks A (awake): INCOMING, whose answer is due first */
    CHECK(request(&r, r.bb, POS_CTRL_CONNECT, 5, "peer-a", 200) == 0);
    CHECK(only(&A, POS_CTRL_INCOMING) && w.wake_at == 200 + TIMEOUT_MS);
    w.n_out = 0;
    relay_broker_expire(r.b, 200 + TIMEOUT_MS);
    CHECK(only(&B, POS_CTRL_ERROR)->req_id == 5); /* only B's: A's wait for peer-c goes on */
    CHECK(w.wake_at == 100 + PARKED_MS);
    w.n_out = 0;
    relay_broker_expire(r.b, 100 + PARKED_MS - 1);
    CHECK(w.n_out == 0);
    /* woken after two keep-alive intervals: INCOMING, with INCOMING's own deadline */
    relay_broker_client *c =
        relay_broker_join(r.b, &C, "peer-c", 1, (struct sockaddr *)&sc, NULL, NULL);
    relay_broker_woken(r.b, c, 25000);
    CHECK(only(&C, POS_CTRL_INCOMING) && w.wake_at == 25000 + TIMEOUT_MS);
    w.n_out = 0;
    relay_broker_expire(r.b, 25000 + TIMEOUT_MS);
    CHECK(only(&A, POS_CTRL_ERROR)->code == POS_CTRL_CODE_TIMEOUT);
    /* a parked peer that never comes back: TIMEOUT after the parked wait */
    w.n_out = 0;
    snprintf(w.parked_peer, sizeof(w.parked_peer), "peer-d");
    CHECK(request(&r, r.a, POS_CTRL_CONNECT, 10, "peer-d", 40000) == 0);
    relay_broker_expire(r.b, 40000 + TIMEOUT_MS);
    CHECK(w.n_out == 0);
    relay_broker_expire(r.b, 40000 + PARKED_MS);
    CHECK(only(&A, POS_CTRL_ERROR)->req_id == 10);
    CHECK(w.wake_at == -1);
    relay_broker_leave(r.b, c, 90000);
    rig_down(&r);
}

int main(void)
{
    test_parked_peer_woken();
    test_parked_wait_is_longer();
    test_connect_accept();
    test_decline_and_unknown();
    test_self();
    test_timeout();
    test_peer_leaves();
    test_busy_and_limits();
    test_redirect_and_lookup();
    test_who_is_asked();
    test_punch_start();
    test_punch_not_v1_or_off();
    test_punch_candidates_bounded();
    test_punch_nat_mapping();
    test_punch_nat_from_requests();
    test_punch_on_move();
    return check_finish("test_broker");
}
