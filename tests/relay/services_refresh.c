/*
 * The periodic refresh with many keys (services.c, presence.c, auth.c): the
 * presence keys and a token's connection-set members go to Redis a share per
 * tick (RELAY_PRESENCE_STEPS shares over the 5 s interval), in calls of many
 * keys, and the whole set is back within one interval; a key naming another
 * relay is never taken.
 */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "presence.h"
#include "redis.h"
#include "relay_keys.h"
#include "secret.h"
#include "services_refresh.h"

#define N_PEERS 250

/* ours: how many of the N_PEERS keys name this relay */
static int ours(pos_redis *rc, const relay_config *cfg)
{
    int n = 0;
    for (int i = 0; i < N_PEERS; i++) {
        char peer[64], key[RELAY_KEY_LEN];
        snprintf(peer, sizeof(peer), "refresh-spread-peer-%03d", i);
        relay_key_presence(cfg->redis_prefix, key, sizeof(key), peer);
        redisReply *rep = pos_redis_command(rc, "GET %s", key);
        n += rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, cfg->id) == 0;
        if (rep)
            freeReplyObject(rep);
    }
    return n;
}

void test_refresh_spread(relay_services *s, const relay_config *cfg, int *passed, int *failed)
{
    pos_redis rc;
    char peer[64], key[RELAY_KEY_LEN], other[RELAY_KEY_LEN];
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    for (int i = 0; i < N_PEERS; i++) {
        snprintf(peer, sizeof(peer), "refresh-spread-peer-%03d", i);
        relay_presence_add(s, peer);
    }
    services_run_for(0.3);
    CHECK(ours(&rc, cfg) == N_PEERS); /* each written when its first home connection came */
    /* Redis loses them all (a restart without persistence); one peer moved to another relay */
    for (int i = 0; i < N_PEERS; i++) {
        snprintf(peer, sizeof(peer), "refresh-spread-peer-%03d", i);
        relay_key_presence(cfg->redis_prefix, key, sizeof(key), peer);
        redisReply *rep = pos_redis_command(&rc, "DEL %s", key);
        if (rep)
            freeReplyObject(rep);
    }
    relay_key_presence(cfg->redis_prefix, other, sizeof(other), "refresh-spread-peer-007");
    redisReply *rep = pos_redis_command(&rc, "SET %s other-relay EX 60", other);
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    CHECK(ours(&rc, cfg) == 0);
    /* every 0.25 s for one whole interval: the keys come back a share at a time (one tick a
       second), never all in one burst */
    int before = 0, jump = 0;
    for (int k = 0; k < 22; k++) {
        services_run_for(0.25);
        int now = ours(&rc, cfg);
        if (now - before > jump)
            jump = now - before;
        before = now;
    }
    CHECK(jump > 0 && jump <= N_PEERS / 2);
    CHECK(ours(&rc, cfg) == N_PEERS - 1);
    rep = pos_redis_command(&rc, "GET %s", other);
    CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "other-relay") == 0);
    if (rep)
        freeReplyObject(rep);
    rep = pos_redis_command(&rc, "TTL %s", key); /* the last peer's: the live TTL */
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 && rep->integer <= 15);
    if (rep)
        freeReplyObject(rep);
    for (int i = 0; i < N_PEERS; i++) {
        snprintf(peer, sizeof(peer), "refresh-spread-peer-%03d", i);
        relay_presence_remove(s, peer);
    }
    services_run_for(0.3);
    CHECK(ours(&rc, cfg) == 0);
    rep = pos_redis_command(&rc, "DEL %s", other);
    if (rep)
        freeReplyObject(rep);
    pos_redis_free(&rc);
    *passed += check_passed;
    *failed += check_failed;
}

#define N_CONNS 60 /* under the default per-token cap (64) */

struct admitted {
    int done;
    enum relay_refusal v;
    char token_id[POS_SECRET_HASH_HEXLEN];
};

static void on_admitted(void *arg, enum relay_refusal v, const relay_limits *limits,
                        const char *token_id)
{
    struct admitted *a = arg;
    (void)limits;
    a->done = 1;
    a->v = v;
    snprintf(a->token_id, sizeof(a->token_id), "%s", token_id ? token_id : "");
}

static long long zcard(pos_redis *rc, const char *key)
{
    redisReply *rep = pos_redis_command(rc, "ZCARD %s", key);
    long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return n;
}

void test_conn_refresh_spread(relay_services *s, const relay_config *cfg, int *passed, int *failed)
{
    static struct admitted a[N_CONNS];
    const char *token = getenv("TOKEN_OK");
    struct sockaddr_in from = {.sin_family = AF_INET, .sin_port = htons(4100)};
    char key[RELAY_KEY_LEN];
    pos_redis rc;
    int ok = 0;
    int passed0 = check_passed, failed0 = check_failed;
    inet_pton(AF_INET, "192.0.2.7", &from.sin_addr);
    pos_redis_init(&rc, &cfg->redis, cfg->redis_prefix, 2000);
    CHECK(token != NULL);
    for (int i = 0; token && i < N_CONNS; i++) {
        relay_auth_check(s, token, strlen(token), (struct sockaddr *)&from, "spread-peer",
                         on_admitted, &a[i]);
        for (int k = 0; k < 300 && !a[i].done; k++)
            services_run_for(0.01);
        ok += a[i].done && a[i].v == RELAY_OK;
    }
    if (ok != N_CONNS)
        fprintf(stderr, "admitted %d of %d; a refusal: %d\n", ok, N_CONNS, (int)a[N_CONNS - 1].v);
    CHECK(ok == N_CONNS);
    relay_key_conns(cfg->redis_prefix, key, sizeof(key), a[0].token_id);
    CHECK(zcard(&rc, key) == N_CONNS);
    /* Redis loses the set; it comes back a share per tick, all within one interval */
    redisReply *rep = pos_redis_command(&rc, "DEL %s", key);
    if (rep)
        freeReplyObject(rep);
    long long before = 0, jump = 0, now = 0;
    for (int k = 0; k < 22; k++) {
        services_run_for(0.25);
        now = zcard(&rc, key);
        if (now - before > jump)
            jump = now - before;
        before = now;
    }
    printf("connection set: largest step %lld of %d members\n", jump, N_CONNS);
    CHECK(jump > 0 && jump <= N_CONNS / 2);
    CHECK(now == N_CONNS);
    for (int i = 0; i < N_CONNS; i++)
        if (a[i].done && a[i].v == RELAY_OK)
            relay_auth_release(s, a[i].token_id);
    services_run_for(0.3);
    CHECK(zcard(&rc, key) == 0);
    pos_redis_free(&rc);
    *passed += check_passed - passed0;
    *failed += check_failed - failed0;
}
