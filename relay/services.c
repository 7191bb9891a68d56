/*
 * The relay's Redis and discovery-API services (see services.h): one Redis
 * connection (redis_async, hiredis async on the relay's libev loop) shared
 * by the rooms that use it, each in its own file behind a narrow header:
 *   auth.c          connection-attempt rate limits, token checks (cache,
 *                   admission against the connection cap), revocations;
 *                   policy in admission.c, the token record in token_record.c
 *   presence.c      which peers have their home here; lookups of the others
 *   budget.c        bandwidth budgets leased from Redis, usage accounting
 *   registration.c  registration with the discovery API (libcurl)
 * This file wires them: it owns the connection, the 5 s refresh timer
 * (presence, connection-set members, re-reading the tokens in use, so that
 * a revocation missed while the subscriber connection was down still
 * closes connections), the reaction to Redis coming back, and shutdown.
 */
#include "services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "budget.h"
#include "log.h"
#include "presence.h"
#include "redis_async.h"
#include "registration.h"

#define REDIS_TIMEOUT_MS 500
#define REFRESH_INTERVAL 5.0 /* presence, connection sets, revalidation */
/* the refresh timer's tick: presence goes out a share each tick, the rest every interval */
#define REFRESH_TICK (REFRESH_INTERVAL / RELAY_PRESENCE_STEPS)

struct relay_services {
    struct ev_loop *loop;
    const relay_config *cfg;
    pos_redis_async *redis;
    relay_auth_svc *auth;
    relay_presence_svc *presence;
    relay_budget_svc *budget;
    relay_registration *registration;
    ev_timer refresh;
    unsigned refresh_step; /* ticks of |refresh| so far */
    int shut_down;
    uint64_t redis_ups; /* times Redis came (back) up */
};

/* ---- the calls of services.h, each answered by its room ---- */

uint64_t relay_rate_check_addr(relay_services *s, const struct sockaddr *from, relay_auth_cb cb,
                               void *arg)
{
    return relay_auth_svc_rate_check_addr(s->auth, from, cb, arg);
}

uint64_t relay_auth_check(relay_services *s, const char *token, size_t len,
                          const struct sockaddr *from, const char *peer_id, relay_auth_cb cb,
                          void *arg)
{
    (void)from;
    (void)peer_id;
    return relay_auth_svc_check(s->auth, token, len, cb, arg);
}

void relay_auth_cancel(relay_services *s, uint64_t handle)
{
    relay_auth_svc_cancel(s->auth, handle);
}

void relay_auth_release(relay_services *s, const char *token_id)
{
    relay_auth_svc_release(s->auth, token_id);
}

void relay_auth_park(relay_services *s, const char *token_id, int parked)
{
    relay_auth_svc_park(s->auth, token_id, parked);
}

void relay_auth_release_parked(relay_services *s, const char *token_id)
{
    relay_auth_svc_release_parked(s->auth, token_id);
}

void relay_presence_add(relay_services *s, const char *peer_id)
{
    relay_presence_svc_add(s->presence, peer_id);
}

void relay_presence_remove(relay_services *s, const char *peer_id)
{
    relay_presence_svc_remove(s->presence, peer_id);
}

void relay_presence_park(relay_services *s, const char *peer_id)
{
    relay_presence_svc_park(s->presence, peer_id);
}

void relay_presence_keep_parked_many(relay_services *s, const char (*peer_ids)[POS_PEER_ID_STRLEN],
                                     unsigned n)
{
    relay_presence_svc_keep_parked_many(s->presence, peer_ids, n);
}

void relay_presence_unpark(relay_services *s, const char *peer_id)
{
    relay_presence_svc_unpark(s->presence, peer_id);
}

void relay_presence_hold(relay_services *s, const char *peer_id)
{
    relay_presence_svc_hold(s->presence, peer_id);
}

uint64_t relay_presence_lookup(relay_services *s, const char *peer_id, relay_presence_cb cb,
                               void *arg)
{
    return relay_presence_svc_lookup(s->presence, peer_id, cb, arg);
}

void relay_presence_cancel(relay_services *s, uint64_t handle)
{
    relay_presence_svc_cancel(s->presence, handle);
}

relay_budget *relay_budget_acquire(relay_services *s, const char *token_id,
                                   const relay_limits *limits)
{
    return relay_budget_svc_acquire(s->budget, token_id, limits);
}

void relay_budget_release(relay_services *s, relay_budget *b)
{
    relay_budget_svc_release(s->budget, b);
}

void relay_usage_circuit_open(relay_services *s, relay_budget *b0, relay_budget *b1)
{
    relay_budget_svc_circuit_open(s->budget, b0, b1);
}

void relay_usage_circuit_close(relay_services *s, relay_budget *b0, relay_budget *b1)
{
    relay_budget_svc_circuit_close(s->budget, b0, b1);
}

int relay_usage_add(relay_services *s, const char *account, uint64_t bytes, uint64_t circuit_ms)
{
    return relay_budget_svc_usage_add(s->budget, account, bytes, circuit_ms);
}

/* ---- periodic refresh ---- */

static void on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_services *s = w->data;
    (void)loop;
    (void)revents;
    if (!pos_redis_async_up(s->redis) || s->shut_down)
        return;
    unsigned step = s->refresh_step++ % RELAY_PRESENCE_STEPS;
    relay_presence_svc_refresh_step(s->presence, step);
    relay_auth_svc_refresh_step(s->auth, step, RELAY_PRESENCE_STEPS);
}

/*
 * Redis came back: put presence and connection sets back at once (it may
 * have restarted empty), and add the usage counted while it was away.
 */
static void on_redis_state(void *arg, int up)
{
    relay_services *s = arg;
    if (up)
        s->redis_ups++;
    /* Called from the loop only, so every room exists by then. */
    if (up && !s->shut_down) {
        relay_presence_svc_refresh(s->presence); /* all of it at once */
        relay_auth_svc_refresh(s->auth);
        relay_budget_svc_flush(s->budget);
    }
}

/* ---- life cycle ---- */

relay_services *relay_services_new(struct ev_loop *loop, const relay_config *cfg,
                                   const relay_services_callbacks *cbs,
                                   const char (*announce)[POS_ADDR_STRLEN], size_t n_announce)
{
    relay_services *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    ev_timer_init(&s->refresh, on_refresh, REFRESH_TICK, REFRESH_TICK);
    s->refresh.data = s;
    s->redis = pos_redis_async_new(loop, &cfg->redis, REDIS_TIMEOUT_MS, on_redis_state, s);
    if (!s->redis || !(s->auth = relay_auth_svc_new(loop, cfg, s->redis, cbs)) ||
        !(s->presence = relay_presence_svc_new(loop, cfg, s->redis)) ||
        !(s->budget = relay_budget_svc_new(loop, cfg, s->redis)) ||
        !(s->registration = relay_registration_new(loop, cfg, announce, n_announce))) {
        relay_services_del(s);
        return NULL;
    }
    ev_timer_start(loop, &s->refresh);
    return s;
}

int relay_services_redis_ok(const relay_services *s)
{
    return pos_redis_async_up(s->redis);
}

uint64_t relay_services_redis_ups(const relay_services *s)
{
    return s->redis_ups;
}

void relay_services_stats_get(const relay_services *s, relay_services_stats *out)
{
    pos_redis_async_stats rs;
    pos_redis_async_stats_get(s->redis, &rs);
    memset(out, 0, sizeof(*out));
    out->redis_errors = rs.errors + relay_auth_svc_reply_errors(s->auth) +
                        relay_presence_svc_reply_errors(s->presence);
    relay_budget_svc_stats_add(s->budget, out);
    relay_registration_stats_add(s->registration, out);
}

static void warn_lost(uint64_t lost)
{
    if (lost)
        pos_log_warn("Redis unreachable at shutdown: usage of %llu relayed bytes not saved",
                     (unsigned long long)lost);
}

/*
 * Blocking clean-up of what this relay holds in Redis: the usage not yet
 * added, its presence entries and connection-set members, pipelined on a
 * short-lived synchronous connection bounded by |timeout_ms|. Whatever is
 * left of presence and connection sets expires anyway; usage that cannot be
 * written is lost (logged).
 */
static void drop_redis_state(relay_services *s, int timeout_ms)
{
    uint64_t lost = 0;
    pos_redis r;
    if (timeout_ms <= 0 || !pos_redis_async_up(s->redis)) {
        relay_budget_svc_append_final(s->budget, NULL, &lost);
        warn_lost(lost);
        return;
    }
    pos_redis_init(&r, &s->cfg->redis, s->cfg->redis_prefix, timeout_ms);
    if (!pos_redis_connect_now(&r)) {
        relay_budget_svc_append_final(s->budget, NULL, &lost);
        warn_lost(lost);
        pos_redis_free(&r);
        return;
    }
    int sent = relay_budget_svc_append_final(s->budget, &r, &lost);
    sent += relay_presence_svc_append_final(s->presence, &r);
    sent += relay_auth_svc_append_final(s->auth, &r);
    for (int i = 0; i < sent; i++) {
        void *rep = NULL;
        if (redisGetReply(r.ctx, &rep) != REDIS_OK) {
            pos_log_warn("Redis did not confirm the final usage and clean-up (%d of %d replies)", i,
                         sent);
            break;
        }
        freeReplyObject(rep);
    }
    pos_redis_free(&r);
}

void relay_services_shutdown(relay_services *s, int timeout_ms)
{
    if (s->shut_down)
        return;
    s->shut_down = 1;
    ev_timer_stop(s->loop, &s->refresh);
    relay_auth_svc_shutdown(s->auth);
    relay_presence_svc_shutdown(s->presence);
    relay_budget_svc_shutdown(s->budget);
    uint64_t start = pos_now_ms();
    if (timeout_ms < 100)
        timeout_ms = 100;
    relay_registration_shutdown(s->registration, timeout_ms * 2 / 3);
    drop_redis_state(s, timeout_ms - (int)(pos_now_ms() - start));
    relay_presence_svc_forget(s->presence);
}

void relay_services_del(relay_services *s)
{
    if (!s)
        return;
    ev_timer_stop(s->loop, &s->refresh);
    relay_registration_del(s->registration);
    relay_presence_svc_detach(s->presence);
    pos_redis_async_del(s->redis); /* no Redis callback runs after this */
    relay_presence_svc_del(s->presence);
    relay_auth_svc_del(s->auth);
    relay_budget_svc_del(s->budget);
    free(s);
}
