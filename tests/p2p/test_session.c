/*
 * Tests of peer sessions through the public API (pos/p2p.h), two endpoints
 * in one process on loopback driven by one loop: a stream both ways with
 * FIN, a 12 MiB stream through the bounded send buffer (EV_WRITABLE), the
 * pinning error when the expected peer id is another's, the allow callback's
 * refusal, a session closed from inside its own callback and from inside the
 * accept callback (during the handshake), bad arguments; and
 * the home-relay choice (pos_p2p_relay_pick_home).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pos/p2p.h"

struct side {
    pos_p2p_session *s;
    int opened, closed, close_err, writable, stream_seen, fin;
    int close_in_cb; /* close the session from inside the callback on the first data */
    int64_t stream;
    size_t got;
    uint8_t hash; /* a running xor of what arrived */
};

static pos_p2p_endpoint *ep_a, *ep_b;
static struct side A, B;
static int allow_all = 1;
static char refused_peer[POS_P2P_PEER_ID_STRLEN];

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct side *x = arg;
    switch (ev->type) {
    case POS_P2P_SESSION_EV_OPEN:
        x->opened = 1;
        break;
    case POS_P2P_SESSION_EV_STREAM:
        x->stream_seen = 1;
        x->stream = ev->stream;
        break;
    case POS_P2P_SESSION_EV_DATA:
        for (size_t i = 0; i < ev->len; i++)
            x->hash ^= ev->data[i];
        x->got += ev->len;
        if (ev->fin)
            x->fin = 1;
        if (x->close_in_cb && ev->len) {
            pos_p2p_session_close(s, 7, "bye");
            x->s = NULL;
        }
        break;
    case POS_P2P_SESSION_EV_WRITABLE:
        x->writable++;
        break;
    case POS_P2P_SESSION_EV_CLOSED:
        x->closed = 1;
        x->close_err = ev->error;
        break;
    default:
        break;
    }
}

static int allow(void *arg, const char *peer_id)
{
    (void)arg;
    if (!allow_all)
        snprintf(refused_peer, sizeof(refused_peer), "%s", peer_id);
    return allow_all;
}

static int close_on_accept;

static void on_session(void *arg, pos_p2p_session *s)
{
    (void)arg;
    if (close_on_accept) {
        pos_p2p_session_close(s, 9, "busy"); /* inside the handshake: deferred */
        return;
    }
    memset(&B, 0, sizeof(B));
    B.s = s;
    pos_p2p_session_set_callback(s, on_event, &B);
}

/* spin runs both endpoints until |cond| holds or 10 s pass; returns the condition. */
static int spin(int (*cond)(void))
{
    int64_t end = pos_p2p_now_ms() + 10000;
    while (!cond() && pos_p2p_now_ms() < end) {
        pos_p2p_endpoint_process(ep_a);
        pos_p2p_endpoint_process(ep_b);
        usleep(200);
    }
    return cond();
}

static int a_settled(void)
{
    return A.opened || A.closed;
}
static int b_fin(void)
{
    return B.fin;
}
static int a_fin(void)
{
    return A.fin;
}
static int a_closed(void)
{
    return A.closed;
}
static int a_writable(void)
{
    return A.writable > 0;
}
static int b_here(void)
{
    return B.s != NULL;
}
static int b_gone(void)
{
    return B.s == NULL;
}

static pos_p2p_identity *identity(const char *dir, const char *name)
{
    char path[512], err[256];
    pos_p2p_identity *id = NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (pos_p2p_identity_load(path, 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return id;
}

static int dial(const char *peer)
{
    char addr[64];
    memset(&A, 0, sizeof(A));
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", pos_p2p_endpoint_local_port(ep_b));
    if (pos_p2p_session_connect_addr(ep_a, addr, peer, 5000, &A.s) != 0)
        return -1;
    pos_p2p_session_set_callback(A.s, on_event, &A);
    return spin(a_settled) ? 0 : -1;
}

static void test_streams(const char *peer_b)
{
    static uint8_t big[3 * POS_P2P_STREAM_BUFFER]; /* 12 MiB */
    uint8_t want = 0;
    size_t off = 0, taken;
    int64_t sid;
    pos_p2p_session_status st;

    CHECK(dial(peer_b) == 0 && A.opened && !A.closed);
    pos_p2p_session_get_status(A.s, &st);
    CHECK(st.state == POS_P2P_SESSION_OPEN && st.path == POS_P2P_PATH_DIRECT && !st.server);
    {
        pos_p2p_path_info pi;
        CHECK(pos_p2p_session_get_path(A.s, &pi) == 0 && pi.path == POS_P2P_PATH_DIRECT &&
              pi.bytes_direct > 0 && pi.bytes_relayed == 0 && pi.upgraded_after_ms == -1 &&
              !strcmp(pi.remote, st.remote));
    }
    CHECK(!strcmp(st.peer_id, peer_b));
    CHECK(spin(b_here)); /* the acceptor completes one flight after the dialer */
    if (!B.s)
        return;
    /* a small message with FIN, answered on the same stream */
    CHECK(pos_p2p_session_open_stream(A.s, &sid) == 0);
    CHECK(pos_p2p_session_write(A.s, sid, (const uint8_t *)"ping", 4, 1, &taken) == 0 &&
          taken == 4);
    CHECK(spin(b_fin) && B.got == 4 && B.stream == sid);
    CHECK(pos_p2p_session_write(A.s, sid, (const uint8_t *)"x", 1, 0, NULL) ==
          POS_P2P_ERR_NO_STREAM); /* finished */
    CHECK(pos_p2p_session_write(B.s, sid, (const uint8_t *)"pong!", 5, 1, NULL) == 0);
    CHECK(spin(a_fin) && A.got == 5);
    /* 3 x the send buffer, so writes are partial and EV_WRITABLE comes */
    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = (uint8_t)(i * 131 + 7);
        want ^= big[i];
    }
    B.fin = 0;
    B.got = 0;
    B.hash = 0;
    A.writable = 0;
    CHECK(pos_p2p_session_open_stream(A.s, &sid) == 0);
    for (int64_t end = pos_p2p_now_ms() + 20000; off < sizeof(big) && pos_p2p_now_ms() < end;) {
        if (pos_p2p_session_write(A.s, sid, big + off, sizeof(big) - off, 1, &taken) != 0)
            break;
        off += taken;
        if (taken < sizeof(big) && off < sizeof(big) && A.writable == 0)
            CHECK(spin(a_writable)); /* the first partial write: wait for the event */
        pos_p2p_endpoint_process(ep_a);
        pos_p2p_endpoint_process(ep_b);
    }
    CHECK(off == sizeof(big));
    CHECK(A.writable > 0);
    CHECK(pos_p2p_session_write_room(A.s, sid) == 0); /* FIN queued */
    CHECK(spin(b_fin) && B.got == sizeof(big) && B.hash == want);
    /* the acceptor closes from inside its callback; the dialer hears the code */
    B.close_in_cb = 1;
    CHECK(pos_p2p_session_open_stream(A.s, &sid) == 0);
    CHECK(pos_p2p_session_write(A.s, sid, (const uint8_t *)"x", 1, 0, NULL) == 0);
    CHECK(spin(b_gone));
    CHECK(spin(a_closed) && A.close_err == POS_P2P_ERR_CLOSED);
    pos_p2p_session_get_status(A.s, &st);
    CHECK(st.close_code == 7 && !strcmp(st.reason, "bye"));
    pos_p2p_session_close(A.s, 0, NULL);
}

static void test_wrong_peer(const char *other)
{
    pos_p2p_session_status st;
    CHECK(dial(other) == 0 && A.closed && A.close_err == POS_P2P_ERR_PEER_MISMATCH);
    pos_p2p_session_get_status(A.s, &st);
    CHECK(strstr(st.reason, "wrong peer id") != NULL && strstr(st.reason, other) != NULL);
    pos_p2p_session_close(A.s, 0, NULL);
}

static void test_not_allowed(const char *peer_b, const char *peer_a)
{
    allow_all = 0;
    B.s = NULL;
    CHECK(dial(peer_b) == 0);
    CHECK(spin(a_closed) && A.close_err == POS_P2P_ERR_NOT_ALLOWED);
    CHECK(!strcmp(refused_peer, peer_a)); /* the acceptor learnt the dialer's real id */
    CHECK(B.s == NULL);                   /* never handed to the application */
    pos_p2p_session_close(A.s, 0, NULL);
    allow_all = 1;
}

static void test_close_on_accept(const char *peer_b)
{
    pos_p2p_session_status st;
    close_on_accept = 1;
    CHECK(dial(peer_b) == 0);
    CHECK(spin(a_closed) && A.close_err == POS_P2P_ERR_CLOSED);
    pos_p2p_session_get_status(A.s, &st);
    CHECK(st.close_code == 9 && !strcmp(st.reason, "busy"));
    pos_p2p_session_close(A.s, 0, NULL);
    close_on_accept = 0;
}

static void test_arguments(const char *peer_b)
{
    pos_p2p_session *s = NULL;
    CHECK(pos_p2p_session_connect_addr(ep_a, "not an address", peer_b, 1000, &s) ==
          POS_P2P_ERR_BAD_ADDRESS);
    CHECK(pos_p2p_session_connect_addr(ep_a, "127.0.0.1:1", "short", 1000, &s) ==
          POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_session_connect_addr(ep_a, "127.0.0.1", peer_b, 0, &s) ==
          POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);
}

static void test_pick_home(void)
{
    double r1[] = {50, 40, 30};
    double r2[] = {50, 30, -1};
    double r3[] = {-1, -1};
    double r4[] = {12, 3};
    CHECK(pos_p2p_relay_pick_home(r1, 3, -1) == 2);  /* no home yet: the fastest */
    CHECK(pos_p2p_relay_pick_home(r1, 3, 1) == 1);   /* 30 vs 40: 25% only: keep */
    CHECK(pos_p2p_relay_pick_home(r2, 3, 0) == 1);   /* 30 vs 50: 40% and 20 ms: switch */
    CHECK(pos_p2p_relay_pick_home(r1, 3, 0) == 2);   /* 30 vs 50: switch */
    CHECK(pos_p2p_relay_pick_home(r4, 2, 0) == 0);   /* 75% faster but only 9 ms: keep */
    CHECK(pos_p2p_relay_pick_home(r2, 3, 2) == 1);   /* the current one is unusable */
    CHECK(pos_p2p_relay_pick_home(r3, 2, -1) == -1); /* none usable */
}

/* punching settings: defaults, each bad value named, refused by the endpoint and changing nothing
 */
static void test_punch_options(void)
{
    pos_p2p_punch_options o, d;
    pos_p2p_punch_stats st;
    pos_p2p_path_info pi;
    char err[200];

    pos_p2p_punch_options_default(&d);
    CHECK(d.enabled == 1 && d.window_ms == 3000 && d.interval_ms == 50 && d.settle_ms == 30 &&
          d.retry_ms == 60000);
    CHECK(d.fallback_retry_ms == 3000 && d.stall_ptos == 3 && d.direct_keepalive_ms == 1000 &&
          d.nudge_ms == 1000 && d.max_nudges == 4);
    CHECK(pos_p2p_punch_options_check(&d, err, sizeof(err)) == 0 && err[0] == 0);
    o = d, o.fallback_retry_ms = 999;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 &&
          strstr(err, "fallback_retry_ms") && strstr(err, "1000 to 3600000"));
    o = d, o.stall_ptos = 0;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "stall_ptos"));
    o = d, o.stall_ptos = 11;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "1 to 10"));
    o = d, o.direct_keepalive_ms = 99;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 &&
          strstr(err, "direct_keepalive_ms"));
    o = d, o.direct_keepalive_ms = 10001;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 &&
          strstr(err, "direct_keepalive_ms"));
    o = d, o.nudge_ms = 60001;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "nudge_ms"));
    o = d, o.max_nudges = 9;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "max_nudges"));
    o = d, o.max_nudges = 0, o.stall_ptos = 10, o.fallback_retry_ms = 3600000, o.nudge_ms = 100;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) == 0); /* the bounds themselves */
    CHECK(pos_p2p_endpoint_set_punch(ep_a, &o) == 0);
    o = d, o.window_ms = 99;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) == POS_P2P_ERR_INVALID_ARGUMENT &&
          strstr(err, "probe window") && strstr(err, "100 to 60000"));
    o = d, o.interval_ms = 1001;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "interval"));
    o = d, o.window_ms = 100, o.interval_ms = 200;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "window"));
    o = d, o.settle_ms = 1001;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "settle"));
    o = d, o.retry_ms = 999;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "retry"));
    o = d, o.enabled = 2;
    CHECK(pos_p2p_punch_options_check(&o, err, sizeof(err)) != 0 && strstr(err, "enabled"));
    CHECK(pos_p2p_punch_options_check(NULL, NULL, 0) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_punch(ep_a, &o) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_punch(NULL, &d) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_punch(ep_a, &d) == 0);
    CHECK(pos_p2p_endpoint_punch_stats(ep_a, &st) == 0 && st.attempts == 0);
    CHECK(pos_p2p_endpoint_punch_stats(NULL, &st) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_session_get_path(NULL, &pi) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_relay_protocol_version(NULL) == 0);
    /* the NAT mapping: unknown by default, one of three values, nothing else taken */
    CHECK(pos_p2p_endpoint_nat_mapping(ep_a) == POS_P2P_NAT_UNKNOWN);
    CHECK(pos_p2p_endpoint_set_nat_mapping(ep_a, 3) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_nat_mapping(ep_a, -1) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_nat_mapping(NULL, 1) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_nat_mapping(ep_a) == POS_P2P_NAT_UNKNOWN);
    CHECK(pos_p2p_endpoint_set_nat_mapping(ep_a, POS_P2P_NAT_VARIES) == 0 &&
          pos_p2p_endpoint_nat_mapping(ep_a) == POS_P2P_NAT_VARIES);
    CHECK(pos_p2p_endpoint_set_nat_mapping(ep_a, POS_P2P_NAT_UNKNOWN) == 0);
    CHECK(pos_p2p_endpoint_nat_mapping(NULL) == POS_P2P_NAT_UNKNOWN);
}

int main(void)
{
    char dir[] = "/tmp/pos-test-session-XXXXXX";
    char peer_a[POS_P2P_PEER_ID_STRLEN], peer_b[POS_P2P_PEER_ID_STRLEN],
        peer_c[POS_P2P_PEER_ID_STRLEN];
    pos_p2p_identity *a, *b, *c;

    if (!mkdtemp(dir))
        return 1;
    a = identity(dir, "a");
    b = identity(dir, "b");
    c = identity(dir, "c");
    pos_p2p_identity_peer_id(a, peer_a);
    pos_p2p_identity_peer_id(b, peer_b);
    pos_p2p_identity_peer_id(c, peer_c);
    CHECK(pos_p2p_endpoint_new(&ep_a, a, 0) == 0);
    CHECK(pos_p2p_endpoint_new(&ep_b, b, 0) == 0);
    CHECK(pos_p2p_endpoint_listen(ep_b, allow, on_session, NULL) == 0);

    test_streams(peer_b);
    test_wrong_peer(peer_c);
    test_not_allowed(peer_b, peer_a);
    test_close_on_accept(peer_b);
    test_arguments(peer_b);
    test_pick_home();
    test_punch_options();

    pos_p2p_endpoint_del(ep_a);
    pos_p2p_endpoint_del(ep_b);
    pos_p2p_identity_del(a);
    pos_p2p_identity_del(b);
    pos_p2p_identity_del(c);
    for (const char *n = "abc"; *n; n++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/%c", dir, *n);
        unlink(p);
    }
    rmdir(dir);
    return check_finish("test_session");
}
