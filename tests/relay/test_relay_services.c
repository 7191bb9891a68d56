/*
 * Exercises relay_services (relay/services.c) against a real redis-server:
 * token verdicts, the connection cap, rate limits shared by two relays,
 * revocation through `pos-relay token revoke`, presence, cancellation, and
 * behaviour while Redis hangs (SIGSTOP) and after it resumes.
 *
 * Started by test_relay_cli.py, which provides Redis and the tokens:
 *   test_relay_services checks CONFIG
 *     env TOKEN_OK, TOKEN_CAPPED (max 1 conn), TOKEN_EXPIRED, TOKEN_REVOKED, TOKEN_RATE,
 *         TOKEN_TO_REVOKE, POS_RELAY (the pos-relay binary), REDIS_PID
 *   test_relay_services down CONFIG
 *     Redis is down at start; env TOKEN_FILE gets a token once it is up
 *   test_relay_services restart CONFIG
 *     env TOKEN_OK; the test kills Redis after "ready" and restarts it after
 *     "saw it down"
 *   test_relay_services bench CONFIG
 *     not a test: checks per second (env TOKEN_OK), printed
 *   test_relay_services bandwidth CONFIG
 *     env LIMIT (bytes/s), TOKEN_LIMITED (that limit), TOKEN_STALL (likewise, another
 *     account), TOKEN_FREE (no limit), REDIS_PID: budgets shared by two relays
 *     through the real forwarder, usage flushes, fail closed while Redis hangs
 *   test_relay_services serve CONFIG
 *     runs the services (registration with the discovery API) until SIGTERM,
 *     then calls relay_services_shutdown; prints "serving" once started.
 */
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <sodium.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "circuit.h"
#include "forward.h"
#include "frame.h"
#include "log.h"
#include "redis.h"
#include "relay_keys.h"
#include "secret.h"
#include "services.h"
#include "services_refresh.h"

struct verdict {
    int done;
    enum relay_refusal v;
    relay_limits limits;
    int has_limits;
    char token_id[POS_SECRET_HASH_HEXLEN];
};

static struct ev_loop *loop;
static int revoked_calls;
static char revoked_id[POS_SECRET_HASH_HEXLEN];

static void on_verdict(void *arg, enum relay_refusal v, const relay_limits *limits,
                       const char *token_id)
{
    struct verdict *r = arg;
    r->done++;
    r->v = v;
    r->has_limits = limits != NULL;
    if (limits)
        r->limits = *limits;
    snprintf(r->token_id, sizeof(r->token_id), "%s", token_id ? token_id : "");
}

static void on_revoked(void *arg, const char *token_id)
{
    (void)arg;
    revoked_calls++;
    snprintf(revoked_id, sizeof(revoked_id), "%s", token_id);
}

static void on_wakeup(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* Runs the loop until *flag becomes nonzero or |seconds| pass; returns *flag. */
static int run_until(const int *flag, double seconds)
{
    ev_timer tick;
    ev_timer_init(&tick, on_wakeup, 0.02, 0.02);
    ev_timer_start(loop, &tick);
    ev_tstamp end = ev_time() + seconds;
    while (!*flag && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return *flag;
}

static void run_for(double seconds)
{
    int never = 0;
    run_until(&never, seconds);
}

void services_run_for(double seconds)
{
    run_for(seconds);
}

static struct sockaddr_in addr4(const char *ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static enum relay_refusal auth(relay_services *s, const char *token, struct verdict *r)
{
    struct sockaddr_in a = addr4("192.0.2.1", 4000);
    memset(r, 0, sizeof(*r));
    relay_auth_check(s, token, strlen(token), (struct sockaddr *)&a, "peer", on_verdict, r);
    CHECK(r->done == 0); /* never called from inside relay_auth_check */
    if (!run_until(&r->done, 3.0))
        return (enum relay_refusal) - 1;
    return r->v;
}

static enum relay_refusal rate(relay_services *s, const char *ip, struct verdict *r)
{
    struct sockaddr_in a = addr4(ip, 5000);
    memset(r, 0, sizeof(*r));
    relay_rate_check_addr(s, (struct sockaddr *)&a, on_verdict, r);
    if (!run_until(&r->done, 3.0))
        return (enum relay_refusal) - 1;
    return r->v;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v) {
        fprintf(stderr, "missing environment variable %s\n", name);
        exit(2);
    }
    return v;
}

static void wait_redis(relay_services *s)
{
    for (int i = 0; i < 150 && !relay_services_redis_ok(s); i++)
        run_for(0.02);
    CHECK(relay_services_redis_ok(s));
}

/* HGET of a usage field of |account| through a synchronous connection; -1 on error. */
static long long usage_field(const relay_config *cfg, const char *account, const char *field)
{
    pos_redis rc;
    char key[RELAY_KEY_LEN];
    long long v = -1;
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    relay_key_usage(cfg->redis_prefix, key, sizeof(key), account);
    redisReply *rep = pos_redis_command(&rc, "HGET %s %s", key, field);
    if (rep && rep->type == REDIS_REPLY_STRING)
        v = strtoll(rep->str, NULL, 10);
    else if (rep && rep->type == REDIS_REPLY_NIL)
        v = 0;
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
    return v;
}

static void test_tokens(relay_services *s)
{
    struct verdict r;
    char hash[POS_SECRET_HASH_HEXLEN];
    const char *ok = env("TOKEN_OK");
    pos_secret_hash_hex(ok, strlen(ok), hash);

    CHECK(auth(s, ok, &r) == RELAY_OK);
    CHECK(r.has_limits && strcmp(r.limits.account, "alice") == 0);
    CHECK(r.limits.bytes_per_sec == 1000000 && r.limits.burst_bytes == 2000000);
    CHECK(strcmp(r.token_id, hash) == 0);
    relay_auth_release(s, r.token_id);
    /* Again, from the cache this time. */
    CHECK(auth(s, ok, &r) == RELAY_OK);
    relay_auth_release(s, r.token_id);

    CHECK(auth(s, "pos_not-a-token-anyone-made", &r) == RELAY_REFUSED_UNKNOWN_TOKEN);
    CHECK(auth(s, env("TOKEN_EXPIRED"), &r) == RELAY_REFUSED_EXPIRED);
    CHECK(auth(s, env("TOKEN_REVOKED"), &r) == RELAY_REFUSED_REVOKED);
    CHECK(auth(s, "", &r) == RELAY_REFUSED_BAD_REQUEST);
    CHECK(strcmp(relay_refusal_reason(RELAY_REFUSED_EXPIRED), "token expired") == 0);
}

static void test_conn_cap(relay_services *s)
{
    struct verdict a, b, c;
    const char *capped = env("TOKEN_CAPPED");
    CHECK(auth(s, capped, &a) == RELAY_OK);
    CHECK(a.limits.max_conns == 1);
    CHECK(auth(s, capped, &b) == RELAY_REFUSED_TOO_MANY_CONNS);
    relay_auth_release(s, a.token_id);
    CHECK(auth(s, capped, &c) == RELAY_OK);
    relay_auth_release(s, c.token_id);
}

static void test_rate_shared(relay_services *s1, relay_services *s2)
{
    struct verdict r;
    /* The config allows 2 attempts per second per address (burst 2). */
    CHECK(rate(s1, "198.51.100.7", &r) == RELAY_OK);
    CHECK(rate(s2, "198.51.100.7", &r) == RELAY_OK);
    CHECK(rate(s1, "198.51.100.7", &r) == RELAY_REFUSED_RATE_LIMITED);
    CHECK(rate(s2, "198.51.100.7", &r) == RELAY_REFUSED_RATE_LIMITED);
    /* Another address has its own bucket. */
    CHECK(rate(s2, "198.51.100.8", &r) == RELAY_OK);
    /* The bucket refills at 2/s. */
    run_for(0.8);
    CHECK(rate(s1, "198.51.100.7", &r) == RELAY_OK);
}

/* The per-token attempt bucket, shared by two relays (their own config: 1/s, burst 2). */
static void test_token_rate_shared(const relay_config *cfg)
{
    struct verdict r;
    relay_config strict = *cfg; /* shallow: borrowed, not freed */
    strict.conn_rate_per_token = 1;
    strict.conn_burst_per_token = 2;
    relay_services *a = relay_services_new(loop, &strict, NULL, NULL, 0);
    relay_services *b = relay_services_new(loop, &strict, NULL, NULL, 0);
    CHECK(a && b);
    if (a && b) {
        const char *tok = env("TOKEN_RATE");
        wait_redis(a);
        wait_redis(b);
        CHECK(auth(a, tok, &r) == RELAY_OK);
        relay_auth_release(a, r.token_id);
        CHECK(auth(b, tok, &r) == RELAY_OK);
        relay_auth_release(b, r.token_id);
        CHECK(auth(a, tok, &r) == RELAY_REFUSED_RATE_LIMITED);
        CHECK(auth(b, tok, &r) == RELAY_REFUSED_RATE_LIMITED);
        CHECK(r.has_limits); /* the token itself is fine: only too fast */
    }
    relay_services_del(a);
    relay_services_del(b);
}

static void test_cancel(relay_services *s)
{
    struct verdict r;
    struct sockaddr_in a = addr4("192.0.2.9", 4000);
    memset(&r, 0, sizeof(r));
    const char *ok = env("TOKEN_OK");
    uint64_t h = relay_auth_check(s, ok, strlen(ok), (struct sockaddr *)&a, "p", on_verdict, &r);
    relay_auth_cancel(s, h);
    run_for(0.3);
    CHECK(r.done == 0);
}

/* A rate check cancelled while Redis works on it: no callback, no crash (ASan). */
static void test_cancel_rate(relay_services *s)
{
    struct verdict r;
    struct sockaddr_in a = addr4("203.0.113.50", 4000);
    memset(&r, 0, sizeof(r));
    uint64_t h = relay_rate_check_addr(s, (struct sockaddr *)&a, on_verdict, &r);
    relay_auth_cancel(s, h);
    run_for(0.3);
    CHECK(r.done == 0);
}

/* Redis lost its scripts (restart, SCRIPT FLUSH): EVALSHA gets NOSCRIPT and is retried. */
static void test_script_flush(relay_services *s, const relay_config *cfg)
{
    struct verdict r;
    pos_redis rc;
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    redisReply *rep = pos_redis_command(&rc, "SCRIPT FLUSH");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
    CHECK(rate(s, "203.0.113.60", &r) == RELAY_OK);
    CHECK(auth(s, env("TOKEN_OK"), &r) == RELAY_OK);
    relay_auth_release(s, r.token_id);
}

/* Presence and connection-set members come back after Redis lost them. */
static void test_refresh(relay_services *s, const relay_config *cfg)
{
    struct verdict r;
    pos_redis rc;
    char pkey[RELAY_KEY_LEN], ckey[RELAY_KEY_LEN];
    const char *peer = "refresh-test-peer";
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    relay_key_presence(cfg->redis_prefix, pkey, sizeof(pkey), peer);
    CHECK(auth(s, env("TOKEN_CAPPED"), &r) == RELAY_OK);
    relay_key_conns(cfg->redis_prefix, ckey, sizeof(ckey), r.token_id);
    relay_presence_add(s, peer);
    run_for(0.2);
    redisReply *rep = pos_redis_command(&rc, "DEL %s %s", pkey, ckey);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 2);
    if (rep)
        freeReplyObject(rep);
    run_for(5.5); /* one refresh period */
    rep = pos_redis_command(&rc, "GET %s", pkey);
    CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, cfg->id) == 0);
    if (rep)
        freeReplyObject(rep);
    rep = pos_redis_command(&rc, "ZCARD %s", ckey);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
    if (rep)
        freeReplyObject(rep);
    relay_presence_remove(s, peer);
    relay_auth_release(s, r.token_id);
    run_for(0.2);
    rep = pos_redis_command(&rc, "EXISTS %s %s", pkey, ckey);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
}

static void test_revocation(relay_services *s, const char *config)
{
    struct verdict r;
    const char *tok = env("TOKEN_TO_REVOKE");
    CHECK(auth(s, tok, &r) == RELAY_OK);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s' token revoke --config '%s' '%s' >/dev/null", env("POS_RELAY"),
             config, tok);
    revoked_calls = 0;
    CHECK(system(cmd) == 0);
    /* The issue asks for a close within 2 s. */
    CHECK(run_until(&revoked_calls, 2.0));
    CHECK(strcmp(revoked_id, r.token_id) == 0);
    relay_auth_release(s, r.token_id);
    /* The cache learnt it too. */
    CHECK(auth(s, tok, &r) == RELAY_REFUSED_REVOKED);
}

static void test_presence(relay_services *s, const relay_config *cfg)
{
    pos_redis rc;
    char key[RELAY_KEY_LEN];
    const char *peer = "AAAAC3NzaC1lZDI1NTE5AAAAIHB0ZXN0cGVlcmlkZm9ydGVzdA";
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    relay_key_presence(cfg->redis_prefix, key, sizeof(key), peer);
    relay_presence_add(s, peer);
    relay_presence_add(s, peer); /* a second connection of the same peer */
    run_for(0.2);
    redisReply *rep = pos_redis_command(&rc, "GET %s", key);
    CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, cfg->id) == 0);
    if (rep)
        freeReplyObject(rep);
    rep = pos_redis_command(&rc, "TTL %s", key);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 && rep->integer <= 15);
    if (rep)
        freeReplyObject(rep);
    relay_presence_remove(s, peer);
    run_for(0.2);
    rep = pos_redis_command(&rc, "EXISTS %s", key);
    CHECK(rep && rep->integer == 1); /* one connection is left */
    if (rep)
        freeReplyObject(rep);
    relay_presence_remove(s, peer);
    run_for(0.2);
    rep = pos_redis_command(&rc, "EXISTS %s", key);
    CHECK(rep && rep->integer == 0);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
}

static void test_redis_hang(relay_services *s)
{
    struct verdict r;
    pid_t pid = (pid_t)atoi(env("REDIS_PID"));
    const char *ok = env("TOKEN_OK");
    CHECK(kill(pid, SIGSTOP) == 0);
    ev_tstamp t0 = ev_time();
    /* A fresh token hash: not in the cache. */
    CHECK(auth(s, "pos_unknown-while-redis-hangs", &r) == RELAY_REFUSED_UNAVAILABLE);
    CHECK(ev_time() - t0 < 2.0);
    CHECK(auth(s, ok, &r) == RELAY_REFUSED_UNAVAILABLE || r.v == RELAY_OK);
    if (r.v == RELAY_OK)
        relay_auth_release(s, r.token_id);
    CHECK(!relay_services_redis_ok(s));
    /* A stopped server still accepts TCP connections; it must not count as up. */
    run_for(1.5);
    CHECK(!relay_services_redis_ok(s));
    t0 = ev_time();
    CHECK(auth(s, "pos_another-unknown-token", &r) == RELAY_REFUSED_UNAVAILABLE);
    CHECK(ev_time() - t0 < 2.0);
    CHECK(kill(pid, SIGCONT) == 0);
    wait_redis(s);
    CHECK(auth(s, ok, &r) == RELAY_OK);
    relay_auth_release(s, r.token_id);
    relay_services_stats st;
    relay_services_stats_get(s, &st);
    CHECK(st.redis_errors > 0);
}

/* Shutdown removes this relay's presence and connection-set members; later checks: going away. */
static void test_shutdown(relay_services *s, const relay_config *cfg)
{
    struct verdict r, late;
    char pkey[RELAY_KEY_LEN], ckey[RELAY_KEY_LEN];
    const char *peer = "shutdown-test-peer";
    CHECK(auth(s, env("TOKEN_CAPPED"), &r) == RELAY_OK);
    relay_presence_add(s, peer);
    run_for(0.2);
    relay_key_presence(cfg->redis_prefix, pkey, sizeof(pkey), peer);
    relay_key_conns(cfg->redis_prefix, ckey, sizeof(ckey), r.token_id);
    pos_redis rc;
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    redisReply *rep = pos_redis_command(&rc, "EXISTS %s %s", pkey, ckey);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 2);
    if (rep)
        freeReplyObject(rep);
    relay_services_shutdown(s, 1000);
    rep = pos_redis_command(&rc, "EXISTS %s %s", pkey, ckey);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
    CHECK(auth(s, env("TOKEN_OK"), &late) == RELAY_GOING_AWAY);
}

static int run_checks(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN];
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    relay_services_callbacks cbs = {on_revoked, NULL};
    relay_services *s1 = relay_services_new(loop, &cfg, &cbs, NULL, 0);
    relay_services *s2 = relay_services_new(loop, &cfg, &cbs, NULL, 0);
    CHECK(s1 && s2);
    if (s1 && s2) {
        wait_redis(s1);
        wait_redis(s2);
        test_tokens(s1);
        test_conn_cap(s1);
        test_rate_shared(s1, s2);
        test_token_rate_shared(&cfg);
        test_cancel(s1);
        test_cancel_rate(s1);
        test_script_flush(s1, &cfg);
        test_refresh(s1, &cfg);
        test_refresh_spread(s1, &cfg, &check_passed, &check_failed);
        test_conn_refresh_spread(s1, &cfg, &check_passed, &check_failed);
        test_revocation(s1, config);
        test_presence(s1, &cfg);
        test_redis_hang(s1);
        test_shutdown(s1, &cfg);
    }
    relay_services_del(s2);
    relay_services_del(s1);
    relay_config_free(&cfg);
    return check_finish("relay-services");
}

/*
 * Redis is not running at start: checks are refused as unavailable at once;
 * when the test starts Redis and writes a token into TOKEN_FILE, the services
 * recover by themselves and accept it.
 */
static int run_down(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN], token[256] = "";
    struct verdict r;
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    relay_services *s = relay_services_new(loop, &cfg, NULL, NULL, 0);
    CHECK(s != NULL);
    if (!s)
        return check_finish("relay-services-down");
    run_for(0.3);
    CHECK(!relay_services_redis_ok(s));
    ev_tstamp t0 = ev_time();
    CHECK(auth(s, "pos_token-while-redis-is-down", &r) == RELAY_REFUSED_UNAVAILABLE);
    CHECK(ev_time() - t0 < 0.5);
    printf("refused while down\n");
    fflush(stdout);
    const char *path = env("TOKEN_FILE");
    for (int i = 0; i < 200 && !token[0]; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(token, sizeof(token), f))
                token[0] = '\0';
            token[strcspn(token, "\r\n")] = '\0';
            fclose(f);
        }
        if (!token[0])
            run_for(0.1);
    }
    CHECK(token[0] != '\0');
    for (int i = 0; i < 300 && !relay_services_redis_ok(s); i++)
        run_for(0.02);
    CHECK(relay_services_redis_ok(s));
    CHECK(auth(s, token, &r) == RELAY_OK);
    relay_auth_release(s, r.token_id);
    sodium_memzero(token, sizeof(token));
    relay_services_shutdown(s, 1000);
    relay_services_del(s);
    relay_config_free(&cfg);
    return check_finish("relay-services-down");
}

/*
 * Redis is killed and started again, empty: the services notice, refuse while
 * it is down, reconnect by themselves, write presence back, and run their
 * scripts again although the new server never saw them (NOSCRIPT).
 */
static int run_restart(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN], key[RELAY_KEY_LEN];
    struct verdict r, tmp;
    const char *peer = "restart-test-peer";
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    relay_services *s = relay_services_new(loop, &cfg, NULL, NULL, 0);
    wait_redis(s);
    CHECK(rate(s, "192.0.2.77", &tmp) == RELAY_OK); /* scripts known by sha from now on */
    CHECK(auth(s, env("TOKEN_OK"), &r) == RELAY_OK);
    relay_presence_add(s, peer);
    run_for(0.2);
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 500 && relay_services_redis_ok(s); i++)
        run_for(0.02);
    CHECK(!relay_services_redis_ok(s));
    CHECK(auth(s, "pos_token-during-restart", &tmp) == RELAY_REFUSED_UNAVAILABLE);
    /* Usage counted while Redis is away is kept and added once it is back. */
    CHECK(relay_usage_add(s, "alice", 4242, 3000) == 0);
    CHECK(relay_usage_add(s, "no:colons allowed", 1, 0) == -1);
    printf("saw it down\n");
    fflush(stdout);
    for (int i = 0; i < 500 && !relay_services_redis_ok(s); i++)
        run_for(0.02);
    CHECK(relay_services_redis_ok(s));
    run_for(0.3);
    pos_redis rc;
    pos_redis_init(&rc, &cfg.redis, cfg.redis_prefix, 2000);
    relay_key_presence(cfg.redis_prefix, key, sizeof(key), peer);
    redisReply *rep = pos_redis_command(&rc, "GET %s", key);
    CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, cfg.id) == 0);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
    CHECK(rate(s, "192.0.2.77", &tmp) == RELAY_OK);
    long long bytes = -1;
    for (int i = 0; i < 40 && bytes != 4242; i++) {
        run_for(0.2);
        bytes = usage_field(&cfg, "alice", RELAY_USAGE_BYTES);
    }
    CHECK(bytes == 4242);
    CHECK(usage_field(&cfg, "alice", RELAY_USAGE_SECONDS) == 3);
    relay_auth_release(s, r.token_id);
    relay_presence_remove(s, peer);
    relay_services_del(s);
    relay_config_free(&cfg);
    return check_finish("relay-services-restart");
}

/* ---- bandwidth budgets and usage (mode "bandwidth") ---- */

#define STREAM_PAYLOAD 1200
#define STREAM_BATCH 64

/*
 * One simulated relay carrying one circuit: a circuit table and the real
 * forwarder, whose budget hook leases from Redis through |s|. A 1 ms timer
 * offers DATA frames from side A at |offer| bytes per second (real time);
 * what the forwarder lets through is counted.
 */
struct sim {
    relay_services *s;
    relay_circuits *circuits;
    relay_forwarder *fw;
    relay_circuit_owner a, b;
    struct sockaddr_in addr_a, addr_b;
    relay_budget *budget;
    uint32_t ids[2];
    double offer;    /* bytes per second offered */
    double offered;  /* bytes offered since the stream started */
    ev_tstamp start; /* of the stream */
    ev_timer tick;
    uint8_t frame[POS_FRAME_MAX_LEN];
    size_t frame_len;
    uint8_t buf[STREAM_BATCH][POS_FRAME_MAX_LEN];
    struct sockaddr_in6 src[STREAM_BATCH];
    struct iovec iov[STREAM_BATCH];
    struct mmsghdr in[STREAM_BATCH], out[STREAM_BATCH];
    unsigned quic[STREAM_BATCH];
};

/* Sends one batch of |n| frames through the forwarder. */
static void sim_batch(struct sim *m, unsigned n)
{
    unsigned n_quic = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(m->buf[i], m->frame, m->frame_len);
        memset(&m->src[i], 0, sizeof(m->src[i]));
        memcpy(&m->src[i], &m->addr_a, sizeof(m->addr_a));
        m->iov[i].iov_base = m->buf[i];
        m->iov[i].iov_len = sizeof(m->buf[i]);
        memset(&m->in[i], 0, sizeof(m->in[i]));
        m->in[i].msg_hdr.msg_name = &m->src[i];
        m->in[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        m->in[i].msg_hdr.msg_iov = &m->iov[i];
        m->in[i].msg_hdr.msg_iovlen = 1;
        m->in[i].msg_len = (unsigned)m->frame_len;
    }
    relay_forward_batch(m->fw, m->in, n, AF_INET6, m->out, m->quic, &n_quic);
}

static void on_sim_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    struct sim *m = w->data;
    (void)revents;
    double due = (ev_now(l) - m->start) * m->offer;
    while (m->offered + (double)m->frame_len <= due) {
        unsigned n = 0;
        while (n < STREAM_BATCH && m->offered + (double)m->frame_len <= due) {
            m->offered += (double)m->frame_len;
            n++;
        }
        sim_batch(m, n);
    }
}

/* Opens a circuit on a new simulated relay paying from the budget of |tok| (an accepted check). */
static int sim_init(struct sim *m, relay_services *s, const struct verdict *tok, int port)
{
    memset(m, 0, sizeof(*m));
    m->s = s;
    m->circuits = relay_circuits_new(4, randombytes_random());
    m->fw =
        m->circuits ? relay_forwarder_new(m->circuits, STREAM_BATCH, relay_budget_lease, s) : NULL;
    m->budget = relay_budget_acquire(s, tok->token_id, &tok->limits);
    if (!m->fw || !m->budget)
        return -1;
    m->addr_a = addr4("192.0.2.10", port);
    m->addr_b = addr4("192.0.2.11", port + 1);
    m->a.conn = &m->a;
    m->b.conn = &m->b;
    if (relay_circuit_open(m->circuits, &m->a, (struct sockaddr *)&m->addr_a, m->budget, &m->b,
                           (struct sockaddr *)&m->addr_b, m->budget, (int64_t)pos_now_ms(),
                           m->ids) != 0)
        return -1;
    relay_usage_circuit_open(s, m->budget, m->budget);
    uint8_t payload[STREAM_PAYLOAD];
    memset(payload, 0x5a, sizeof(payload));
    int n = pos_frame_encode_data(m->frame, sizeof(m->frame), m->ids[0], payload, sizeof(payload));
    if (n <= 0)
        return -1;
    m->frame_len = (size_t)n;
    ev_timer_init(&m->tick, on_sim_tick, 0.001, 0.001);
    m->tick.data = m;
    return 0;
}

static void sim_start(struct sim *m, double offer)
{
    m->offer = offer;
    m->offered = 0;
    m->start = ev_now(loop);
    ev_timer_start(loop, &m->tick);
}

static void sim_stop(struct sim *m)
{
    ev_timer_stop(loop, &m->tick);
}

static void on_sim_closed(void *arg, const relay_circuit_info *info)
{
    relay_services *s = arg;
    relay_usage_circuit_close(s, info->budget[0], info->budget[1]);
}

/* Closes the circuit (as when a control connection ends) and gives the budget back. */
static void sim_free(struct sim *m)
{
    sim_stop(m);
    if (m->circuits && m->budget)
        relay_circuit_owner_close(m->circuits, &m->a, (int64_t)pos_now_ms(), on_sim_closed, m->s);
    if (m->budget)
        relay_budget_release(m->s, m->budget);
    relay_forwarder_del(m->fw);
    relay_circuits_del(m->circuits);
    m->budget = NULL;
    m->fw = NULL;
    m->circuits = NULL;
}

static uint64_t fwd_bytes(const struct sim *m)
{
    return m->fw ? m->fw->stats.forwarded_bytes : 0;
}

/*
 * Two relays carry one limited token's traffic, each offered the token's
 * whole limit: together they must stay within 10% of it (measured after the
 * bucket's initial burst is spent).
 */
static void test_bandwidth_shared(struct sim *m1, struct sim *m2, double limit)
{
    sim_start(m1, limit);
    sim_start(m2, limit);
    run_for(1.0); /* the bucket starts full: spend its burst first */
    uint64_t b1 = fwd_bytes(m1), b2 = fwd_bytes(m2);
    ev_tstamp t0 = ev_time();
    run_for(4.0);
    double dt = ev_time() - t0;
    uint64_t d1 = fwd_bytes(m1) - b1, d2 = fwd_bytes(m2) - b2;
    sim_stop(m1);
    sim_stop(m2);
    double rate = (double)(d1 + d2) / dt;
    printf("bandwidth: limit %.0f B/s, offered %.0f B/s; combined %.0f B/s over %.2f s "
           "(%.1f%% of the limit; relay 1 %.0f, relay 2 %.0f B/s); dropped for budget %llu + "
           "%llu packets\n",
           limit, 2 * limit, rate, dt, 100.0 * rate / limit, (double)d1 / dt, (double)d2 / dt,
           (unsigned long long)m1->fw->stats.drop_budget,
           (unsigned long long)m2->fw->stats.drop_budget);
    relay_services_stats st1, st2;
    relay_services_stats_get(m1->s, &st1);
    relay_services_stats_get(m2->s, &st2);
    printf("bandwidth: leases %llu + %llu (empty %llu + %llu) in %.1f s\n",
           (unsigned long long)st1.leases, (unsigned long long)st2.leases,
           (unsigned long long)st1.leases_empty, (unsigned long long)st2.leases_empty,
           ev_time() - t0 + 1.0);
    /* Never a Redis call per packet: leases are a small fraction of the packets offered. */
    CHECK((double)(st1.leases + st2.leases) < (m1->offered + m2->offered) / m1->frame_len / 10);
    CHECK(rate <= limit * 1.10);
    CHECK(rate >= limit * 0.90);
    /* Both relays got a real share: the lease is not won by one of them. */
    CHECK(d1 > (d1 + d2) / 5 && d2 > (d1 + d2) / 5);
    CHECK(m1->fw->stats.drop_budget > 0 && m2->fw->stats.drop_budget > 0);
}

/*
 * Uneven demand: relay 1 is offered 1.5 times the limit, relay 2 a quarter
 * of it. Together they stay within 10% of the limit, and relay 2, asking
 * less than its share, gets what it asks for (within 20%).
 */
static void test_bandwidth_uneven(struct sim *m1, struct sim *m2, double limit)
{
    sim_start(m1, 1.5 * limit);
    sim_start(m2, 0.25 * limit);
    run_for(0.5);
    uint64_t b1 = fwd_bytes(m1), b2 = fwd_bytes(m2);
    ev_tstamp t0 = ev_time();
    run_for(3.0);
    double dt = ev_time() - t0;
    uint64_t d1 = fwd_bytes(m1) - b1, d2 = fwd_bytes(m2) - b2;
    sim_stop(m1);
    sim_stop(m2);
    double rate = (double)(d1 + d2) / dt;
    printf("uneven: offered %.0f + %.0f B/s; combined %.0f B/s (%.1f%% of the limit; relay 1 "
           "%.0f, relay 2 %.0f B/s)\n",
           1.5 * limit, 0.25 * limit, rate, 100.0 * rate / limit, (double)d1 / dt, (double)d2 / dt);
    CHECK(rate <= limit * 1.10 && rate >= limit * 0.90);
    CHECK((double)d2 / dt >= 0.8 * 0.25 * limit);
}

/* A token with no limit: never throttled, and it never asks Redis for a lease. */
static uint64_t test_unlimited(struct sim *m, double offer)
{
    relay_services_stats before, after;
    relay_services_stats_get(m->s, &before);
    sim_start(m, offer);
    run_for(1.0);
    sim_stop(m);
    relay_services_stats_get(m->s, &after);
    printf("unlimited: offered %.0f bytes, forwarded %llu, dropped for budget %llu\n", m->offered,
           (unsigned long long)fwd_bytes(m), (unsigned long long)m->fw->stats.drop_budget);
    CHECK(m->fw->stats.drop_budget == 0);
    CHECK(m->fw->stats.forwarded_bytes > 0 && (double)m->fw->stats.forwarded_bytes == m->offered);
    CHECK(after.leases == before.leases && after.leases_failed == before.leases_failed);
    return fwd_bytes(m);
}

/* While Redis hangs a limited token spends what it holds, then drops; it recovers after. */
static void test_fail_closed(relay_services *s, const struct verdict *tok, double limit)
{
    struct sim m;
    pid_t pid = (pid_t)atoi(env("REDIS_PID"));
    CHECK(sim_init(&m, s, tok, 9100) == 0);
    /* A new limited budget leases at once: its first packet (a QUIC Initial) is not dropped. */
    run_for(0.1);
    sim_batch(&m, 1);
    CHECK(m.fw->stats.forwarded == 1 && m.fw->stats.drop_budget == 0);
    int64_t held = m.budget->available;
    CHECK(kill(pid, SIGSTOP) == 0);
    uint64_t at_stop = fwd_bytes(&m);
    sim_start(&m, limit);
    run_for(1.5);
    uint64_t during = fwd_bytes(&m) - at_stop;
    CHECK(kill(pid, SIGCONT) == 0);
    printf("fail closed: %lld bytes held when Redis hung; %llu forwarded in the next 1.5 s "
           "(%.0f offered), %llu packets dropped\n",
           (long long)held, (unsigned long long)during, 1.5 * limit,
           (unsigned long long)m.fw->stats.drop_budget);
    /* It spends what it held (to the last whole packet), and not a byte more. */
    CHECK(held > 0 && (int64_t)during <= held && (int64_t)during > held - (int64_t)m.frame_len);
    CHECK(m.fw->stats.drop_budget > 0);
    wait_redis(s);
    uint64_t back = fwd_bytes(&m);
    run_for(1.0);
    printf("fail closed: %llu bytes forwarded in the second after Redis came back\n",
           (unsigned long long)(fwd_bytes(&m) - back));
    CHECK((double)(fwd_bytes(&m) - back) >= 0.5 * limit);
    sim_free(&m);
}

static int run_bandwidth(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN];
    struct verdict lim1, lim2, fr, stall;
    struct sim m1, m2, mf;
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    double limit = atof(env("LIMIT"));
    relay_services *s1 = relay_services_new(loop, &cfg, NULL, NULL, 0);
    relay_services *s2 = relay_services_new(loop, &cfg, NULL, NULL, 0);
    CHECK(s1 && s2);
    if (!s1 || !s2)
        goto out;
    wait_redis(s1);
    wait_redis(s2);
    CHECK(auth(s1, env("TOKEN_LIMITED"), &lim1) == RELAY_OK);
    CHECK(auth(s2, env("TOKEN_LIMITED"), &lim2) == RELAY_OK);
    CHECK(auth(s1, env("TOKEN_FREE"), &fr) == RELAY_OK);
    CHECK(auth(s2, env("TOKEN_STALL"), &stall) == RELAY_OK);
    CHECK(lim1.limits.bytes_per_sec == (uint64_t)limit && fr.limits.bytes_per_sec == 0);
    CHECK(sim_init(&m1, s1, &lim1, 9000) == 0 && sim_init(&m2, s2, &lim2, 9010) == 0 &&
          sim_init(&mf, s1, &fr, 9020) == 0);
    if (!m1.fw || !m2.fw || !mf.fw)
        goto out;
    ev_tstamp circuit_start = ev_time();

    test_bandwidth_shared(&m1, &m2, limit);
    test_bandwidth_uneven(&m1, &m2, limit);
    uint64_t limited_total = fwd_bytes(&m1) + fwd_bytes(&m2);
    double circuit_s = 2 * (ev_time() - circuit_start); /* two circuits, one account each */
    sim_free(&m1);
    sim_free(&m2);
    ev_tstamp stream_end = ev_time();

    uint64_t free_total = test_unlimited(&mf, 2 * limit);

    /* Usage reaches Redis within 10 s of the traffic (flushes every 5 s), and matches it. */
    long long got = -1;
    while (ev_time() - stream_end < 10.0) {
        got = usage_field(&cfg, "metered", RELAY_USAGE_BYTES);
        if (got >= (long long)limited_total)
            break;
        run_for(0.2);
    }
    long long secs = usage_field(&cfg, "metered", RELAY_USAGE_SECONDS);
    printf("usage: metered %lld bytes in Redis %.1f s after the traffic, %llu forwarded; "
           "%lld circuit seconds for %.1f\n",
           got, ev_time() - stream_end, (unsigned long long)limited_total, secs, circuit_s);
    CHECK(got >= 0 && (double)got >= 0.95 * (double)limited_total &&
          (double)got <= 1.05 * (double)limited_total);
    CHECK(secs >= (long long)circuit_s - 2 && secs <= (long long)circuit_s + 2);

    /* Flush on shutdown: the last packets, not yet flushed, still reach Redis. */
    sim_batch(&mf, STREAM_BATCH);
    free_total = fwd_bytes(&mf);
    long long before = usage_field(&cfg, "free", RELAY_USAGE_BYTES);
    CHECK(before >= 0 && before < (long long)free_total);
    relay_services_shutdown(s1, 1000);
    long long after = usage_field(&cfg, "free", RELAY_USAGE_BYTES);
    printf("shutdown: free %lld bytes in Redis before, %lld after, %llu forwarded\n", before, after,
           (unsigned long long)free_total);
    CHECK(after == (long long)free_total);
    sim_free(&mf);

    test_fail_closed(s2, &stall, limit);
out:
    relay_services_del(s2);
    relay_services_del(s1);
    relay_config_free(&cfg);
    return check_finish("relay-services-bandwidth");
}

/* ---- bench: not a test; prints checks per second through one services instance ---- */

struct bench {
    relay_services *s;
    const char *token;
    int issued, done, ok, total, use_auth;
};

static void bench_issue(struct bench *b);

static void on_bench_verdict(void *arg, enum relay_refusal v, const relay_limits *limits,
                             const char *token_id)
{
    struct bench *b = arg;
    (void)limits;
    b->done++;
    if (v == RELAY_OK) {
        b->ok++;
        if (token_id)
            relay_auth_release(b->s, token_id);
    }
    if (b->issued < b->total)
        bench_issue(b);
}

static void bench_issue(struct bench *b)
{
    struct sockaddr_in a = addr4("10.0.0.1", 1000 + b->issued % 50000);
    a.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)b->issued); /* many addresses */
    b->issued++;
    if (b->use_auth)
        relay_auth_check(b->s, b->token, strlen(b->token), (struct sockaddr *)&a, "p",
                         on_bench_verdict, b);
    else
        relay_rate_check_addr(b->s, (struct sockaddr *)&a, on_bench_verdict, b);
}

static int run_bench(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN];
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    relay_services *s = relay_services_new(loop, &cfg, NULL, NULL, 0);
    wait_redis(s);
    for (int mode = 0; mode < 2; mode++) {
        struct bench b = {s, env("TOKEN_OK"), 0, 0, 0, 20000, mode};
        ev_tstamp t0 = ev_time();
        for (int i = 0; i < 256; i++)
            bench_issue(&b);
        int finished = 0;
        while (b.done < b.total && ev_time() - t0 < 60)
            run_until(&finished, 0.05);
        double dt = ev_time() - t0;
        printf("%s: %d checks (%d accepted) in %.2f s = %.0f/s\n",
               mode ? "relay_auth_check" : "relay_rate_check_addr", b.done, b.ok, dt, b.done / dt);
    }
    relay_services_del(s);
    relay_config_free(&cfg);
    return 0;
}

static void on_sigterm(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)revents;
    relay_services_shutdown(w->data, 2000);
    ev_break(l, EVBREAK_ALL);
}

static int serve(const char *config)
{
    relay_config cfg;
    char err[POS_ERR_LEN];
    if (relay_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    const char announce[1][POS_ADDR_STRLEN] = {"127.0.0.1:7373"};
    relay_services *s = relay_services_new(loop, &cfg, NULL, announce, 1);
    if (!s)
        return 2;
    ev_signal sig;
    ev_signal_init(&sig, on_sigterm, SIGTERM);
    sig.data = s;
    ev_signal_start(loop, &sig);
    printf("serving\n");
    fflush(stdout);
    ev_run(loop, 0);
    relay_services_stats st;
    relay_services_stats_get(s, &st);
    printf("registrations ok %llu failed %llu\n", (unsigned long long)st.registrations_ok,
           (unsigned long long)st.registrations_failed);
    relay_services_del(s);
    relay_config_free(&cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_relay_services checks|down|serve CONFIG\n");
        return 2;
    }
    pos_log_init("test_relay_services");
    if (sodium_init() < 0)
        return 2;
    loop = EV_DEFAULT;
    if (strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (strcmp(argv[1], "down") == 0)
        return run_down(argv[2]);
    if (strcmp(argv[1], "restart") == 0)
        return run_restart(argv[2]);
    if (strcmp(argv[1], "bench") == 0)
        return run_bench(argv[2]);
    if (strcmp(argv[1], "bandwidth") == 0)
        return run_bandwidth(argv[2]);
    return run_checks(argv[2]);
}
