/*
 * Bandwidth budgets and usage accounting (see budget.h and the wiring in
 * services.h). A token's bytes_per_sec/burst is one token bucket in Redis
 * (P bw:H) shared by every relay; each relay keeps one budget per token in
 * use, which the forwarder spends and refills through relay_budget_lease
 * (a Lua script, asynchronous). The same budgets count relayed bytes per
 * account; with the circuit time they are added to P usage:ACCOUNT every
 * RELAY_USAGE_FLUSH_S seconds and at shutdown.
 *
 * State: budgets (token hash -> budget here), accounts (account -> usage
 * not yet in Redis, circuits open), usage_inflight (usage script calls
 * waiting for Redis, kept to be added back if they fail).
 */
#include "budget.h"

#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "redis_lua.h"
#include "relay_keys.h"
#include "strmap.h"

#define LEASE_MIN_CHUNK 8192    /* bytes: at least a few full-size packets per lease */
#define LEASE_MIN_GRANT 4096    /* a lease smaller than this (or a quarter chunk) waits */
#define LEASE_CHUNK_DIV 10      /* a lease is 1/10 s of the rate */
#define LEASE_WAIT_MIN_MS 5     /* after an empty lease, ask again no sooner... */
#define LEASE_WAIT_MAX_MS 250   /* ...and no later than this (bucket refill time) */
#define LEASE_RETRY_FAIL_MS 250 /* after Redis did not answer */
#define USAGE_CHUNK 10          /* accounts per usage script call (3 arguments each, max 32) */

/*
 * KEYS[1] a token's bandwidth bucket {t milli-bytes, ts ms}. ARGV rate B/s,
 * burst B, chunk B, min B. Takes min(chunk, available) bytes when at least
 * |min| are available. Returns {granted, ms until |min| will be available}.
 */
static const char lua_lease[] =
    LUA_NOW "local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
            "local chunk, min = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
            "local cap = burst * 1000\n"
            "local b = redis.call('HMGET', KEYS[1], 't', 'ts')\n"
            "local t, ts = tonumber(b[1]), tonumber(b[2])\n"
            "if t == nil or ts == nil then t = cap; ts = now end\n"
            "if now > ts then t = math.min(cap, t + (now - ts) * rate) end\n"
            "local avail = math.floor(t / 1000)\n"
            "local g, wait = 0, 0\n"
            "if avail >= min then\n"
            "  g = math.min(chunk, avail)\n"
            "  t = t - g * 1000\n"
            "else\n"
            "  wait = math.ceil((min * 1000 - t) / rate)\n"
            "end\n"
            "redis.call('HSET', KEYS[1], 't', string.format('%.0f', t), 'ts', now)\n"
            "redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)\n"
            "return {g, wait}\n";

/* KEYS usage hashes. ARGV per key: bytes, seconds (decimal strings). HINCRBY each nonzero one. */
static const char lua_usage[] =
    "for i = 1, #KEYS do\n"
    "  local b, sec = ARGV[2 * i - 1], ARGV[2 * i]\n"
    "  if b ~= '0' then redis.call('HINCRBY', KEYS[i], '" RELAY_USAGE_BYTES "', b) end\n"
    "  if sec ~= '0' then redis.call('HINCRBY', KEYS[i], '" RELAY_USAGE_SECONDS "', sec) end\n"
    "end\n"
    "return #KEYS\n";

/* Usage of one account not yet added to Redis, and its circuits open here. */
struct account {
    struct strmap_node n; /* key: account name */
    uint32_t budgets;     /* budgets billing to it */
    uint32_t open;        /* circuits open with a side of this account */
    uint64_t bytes;       /* relayed, not yet in Redis */
    uint64_t ms;          /* circuit milliseconds, not yet in Redis */
    uint64_t since_ms;    /* when |ms| last accrued the open circuits */
};

/* A token's bandwidth budget on this relay; the forwarder sees only |b|. */
struct budget {
    struct strmap_node n; /* key: token hash */
    relay_budget b;
    relay_budget_svc *s;
    struct account *acct; /* NULL: usage not counted (invalid account name) */
    uint32_t refs;        /* 0: kept only until the lease in flight answers */
    int in_flight;        /* a lease script awaits its answer */
    uint64_t rate, burst, chunk, min_grant;
    uint64_t reported;     /* b.spent already moved to the account */
    uint64_t dropped_mark; /* b.dropped when the last lease was asked for */
    uint64_t spent_mark;   /* b.spent likewise */
    ev_timer retry;        /* ask again after an empty or failed lease */
};

struct usage_batch;

struct relay_budget_svc {
    struct ev_loop *loop;
    const relay_config *cfg;
    pos_redis_async *redis;
    int sc_lease, sc_usage;
    uint64_t redis_reply_errors;
    struct strmap budgets, accounts;
    ev_timer usage_timer;
    struct usage_batch *usage_inflight; /* usage script calls waiting for Redis */
    int shut_down;
    relay_services_stats stats; /* leases and usage only */
};

static void note_redis_error(relay_budget_svc *s, const redisReply *rep)
{
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        s->redis_reply_errors++;
        pos_log_warn("Redis error: %s", rep->str);
    }
}

/* ---- bandwidth budgets ---- */

static struct budget *budget_of(relay_budget *b)
{
    return (struct budget *)(void *)((char *)b - offsetof(struct budget, b));
}

static struct account *account_get(relay_budget_svc *s, const char *name, int create)
{
    struct account *a = (struct account *)strmap_get(&s->accounts, name);
    if (a || !create || !relay_account_valid(name))
        return a;
    a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    snprintf(a->n.key, sizeof(a->n.key), "%s", name);
    a->since_ms = pos_now_ms();
    if (strmap_put(&s->accounts, &a->n) != 0) {
        free(a);
        return NULL;
    }
    return a;
}

/* Adds the circuit time of |a|'s open circuits up to now. */
static void account_accrue(struct account *a, uint64_t now)
{
    if (now > a->since_ms)
        a->ms += (uint64_t)a->open * (now - a->since_ms);
    a->since_ms = now;
}

/* Moves what |tb| spent since the last call to its account. */
static void budget_report(struct budget *tb)
{
    uint64_t delta = tb->b.spent - tb->reported;
    tb->reported = tb->b.spent;
    if (tb->acct)
        tb->acct->bytes += delta;
}

/* Lease sizes for |limits|: a burst below LEASE_MIN_CHUNK (or none) is raised. */
static void budget_set_limits(struct budget *tb, const relay_limits *limits)
{
    tb->rate = limits->bytes_per_sec;
    tb->b.unlimited = tb->rate == 0;
    if (tb->b.unlimited)
        return;
    tb->burst = limits->burst_bytes ? limits->burst_bytes : tb->rate;
    if (tb->burst < LEASE_MIN_CHUNK)
        tb->burst = LEASE_MIN_CHUNK;
    tb->chunk = tb->rate / LEASE_CHUNK_DIV;
    if (tb->chunk < LEASE_MIN_CHUNK)
        tb->chunk = LEASE_MIN_CHUNK;
    if (tb->chunk > tb->burst)
        tb->chunk = tb->burst;
    /* Under contention leases are small: a floor of a quarter chunk bounds the calls per token. */
    tb->min_grant = tb->chunk / 4 > LEASE_MIN_GRANT ? tb->chunk / 4 : LEASE_MIN_GRANT;
    if (tb->min_grant > tb->chunk)
        tb->min_grant = tb->chunk;
    tb->b.low_water = (int64_t)(tb->chunk / 2);
}

static void budget_free(relay_budget_svc *s, struct budget *tb)
{
    ev_timer_stop(s->loop, &tb->retry);
    strmap_remove(&s->budgets, &tb->n);
    free(tb);
}

static void lease_start(struct budget *tb);

static void on_lease_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct budget *tb = w->data;
    (void)loop;
    (void)revents;
    /*
     * Packets were forwarded or dropped meanwhile: the budget is in use, ask
     * now (every relay with traffic asks when the bucket has refilled, so a
     * relay with little traffic is not starved by a busy one). Otherwise the
     * next packet asks.
     */
    if ((tb->b.dropped != tb->dropped_mark || tb->b.spent != tb->spent_mark) && !tb->s->shut_down)
        lease_start(tb);
    else
        relay_budget_grant(&tb->b, 0);
}

static void lease_retry_later(struct budget *tb, int64_t ms)
{
    relay_budget_svc *s = tb->s;
    if (ms < LEASE_WAIT_MIN_MS)
        ms = LEASE_WAIT_MIN_MS;
    if (ms > LEASE_WAIT_MAX_MS)
        ms = LEASE_WAIT_MAX_MS;
    /* Relays waiting for the same refill would ask in the same order every time: jitter. */
    ms += (int64_t)randombytes_uniform((uint32_t)ms / 4 + 2);
    ev_timer_stop(s->loop, &tb->retry);
    ev_timer_set(&tb->retry, (double)ms / 1000.0, 0.);
    ev_timer_start(s->loop, &tb->retry);
}

static void on_lease_reply(void *arg, redisReply *rep)
{
    struct budget *tb = arg;
    relay_budget_svc *s = tb->s;
    tb->in_flight = 0;
    if (tb->refs == 0) {
        budget_free(s, tb);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[1]->type == REDIS_REPLY_INTEGER) {
        long long granted = rep->element[0]->integer;
        s->stats.leases++;
        if (granted > 0) {
            s->stats.lease_bytes += (uint64_t)granted;
            relay_budget_grant(&tb->b, granted);
            return;
        }
        s->stats.leases_empty++;
        lease_retry_later(tb, rep->element[1]->integer);
        return;
    }
    note_redis_error(s, rep);
    s->stats.leases_failed++;
    lease_retry_later(tb, LEASE_RETRY_FAIL_MS);
}

static void lease_start(struct budget *tb)
{
    relay_budget_svc *s = tb->s;
    char key[RELAY_KEY_LEN], rate[24], burst[24], chunk[24], min[24];
    if (tb->in_flight || s->shut_down)
        return;
    tb->dropped_mark = tb->b.dropped;
    tb->spent_mark = tb->b.spent;
    relay_key_bandwidth(s->cfg->redis_prefix, key, sizeof(key), tb->n.key);
    snprintf(rate, sizeof(rate), "%llu", (unsigned long long)tb->rate);
    snprintf(burst, sizeof(burst), "%llu", (unsigned long long)tb->burst);
    snprintf(chunk, sizeof(chunk), "%llu", (unsigned long long)tb->chunk);
    snprintf(min, sizeof(min), "%llu", (unsigned long long)tb->min_grant);
    const char *argv[] = {key, rate, burst, chunk, min};
    if (pos_redis_async_eval(s->redis, s->sc_lease, 1, 5, argv, NULL, on_lease_reply, tb) != 0) {
        /* Redis down: spend what is left, then drop (fail closed); ask again later. */
        s->stats.leases_failed++;
        lease_retry_later(tb, LEASE_RETRY_FAIL_MS);
        return;
    }
    tb->in_flight = 1;
}

void relay_budget_lease(void *services, relay_budget *b)
{
    struct budget *tb = budget_of(b);
    (void)services;
    if (b->unlimited || ev_is_active(&tb->retry))
        return;
    lease_start(tb);
}

relay_budget *relay_budget_svc_acquire(relay_budget_svc *s, const char *token_id,
                                       const relay_limits *limits)
{
    if (!token_id || !limits || strlen(token_id) >= STRMAP_KEY_MAX)
        return NULL;
    struct budget *tb = (struct budget *)strmap_get(&s->budgets, token_id);
    if (!tb) {
        tb = calloc(1, sizeof(*tb));
        if (!tb)
            return NULL;
        snprintf(tb->n.key, sizeof(tb->n.key), "%s", token_id);
        if (strmap_put(&s->budgets, &tb->n) != 0) {
            free(tb);
            return NULL;
        }
        tb->s = s;
        relay_budget_init(&tb->b, limits->bytes_per_sec == 0, 0);
        ev_timer_init(&tb->retry, on_lease_retry, 0., 0.);
        tb->retry.data = tb;
    }
    if (!tb->acct) {
        tb->acct = account_get(s, limits->account, 1);
        if (tb->acct)
            tb->acct->budgets++;
        else
            pos_log_warn("usage of account \"%.64s\" cannot be counted (invalid name or out of "
                         "memory)",
                         limits->account);
    }
    budget_set_limits(tb, limits);
    tb->refs++;
    /* Lease before the first packet: a dropped QUIC Initial costs the peers a retransmission. */
    if (!tb->b.unlimited && !tb->b.lease_pending && tb->b.available < tb->b.low_water) {
        tb->b.lease_pending = 1;
        lease_start(tb);
    }
    return &tb->b;
}

void relay_budget_svc_release(relay_budget_svc *s, relay_budget *b)
{
    if (!b)
        return;
    struct budget *tb = budget_of(b);
    if (tb->refs == 0 || --tb->refs > 0)
        return;
    budget_report(tb);
    if (tb->acct)
        tb->acct->budgets--;
    tb->acct = NULL;
    /* Leased bytes not spent are not given back: at most one chunk per relay. */
    if (!tb->in_flight)
        budget_free(s, tb);
}

/* ---- usage accounting ---- */

static struct account *budget_account(relay_budget *b)
{
    return b ? budget_of(b)->acct : NULL;
}

void relay_budget_svc_circuit_open(relay_budget_svc *s, relay_budget *b0, relay_budget *b1)
{
    struct account *a0 = budget_account(b0), *a1 = budget_account(b1);
    uint64_t now = pos_now_ms();
    (void)s;
    if (a0) {
        account_accrue(a0, now);
        a0->open++;
    }
    if (a1 && a1 != a0) {
        account_accrue(a1, now);
        a1->open++;
    }
}

void relay_budget_svc_circuit_close(relay_budget_svc *s, relay_budget *b0, relay_budget *b1)
{
    struct account *a0 = budget_account(b0), *a1 = budget_account(b1);
    uint64_t now = pos_now_ms();
    (void)s;
    if (a0 && a0->open > 0) {
        account_accrue(a0, now);
        a0->open--;
    }
    if (a1 && a1 != a0 && a1->open > 0) {
        account_accrue(a1, now);
        a1->open--;
    }
}

int relay_budget_svc_usage_add(relay_budget_svc *s, const char *account, uint64_t bytes,
                               uint64_t circuit_ms)
{
    struct account *a = account ? account_get(s, account, 1) : NULL;
    if (!a)
        return -1;
    a->bytes += bytes;
    a->ms += circuit_ms;
    return 0;
}

/*
 * One usage script call: what it adds, kept to be added back if it fails.
 * Owned by the services' list while Redis works on it.
 */
struct usage_batch {
    struct usage_batch *prev, *next;
    relay_budget_svc *s;
    unsigned n;
    struct {
        char account[RELAY_ACCOUNT_MAX_LEN + 1];
        uint64_t bytes, secs;
    } e[USAGE_CHUNK];
};

/* Puts a failed batch's counts back, to go with the next flush. */
static void usage_restore(relay_budget_svc *s, const struct usage_batch *u)
{
    for (unsigned i = 0; i < u->n; i++)
        relay_budget_svc_usage_add(s, u->e[i].account, u->e[i].bytes, u->e[i].secs * 1000);
}

/*
 * Takes what |a| has to report into |bytes| and |secs| (whole seconds; with
 * |final|, or once nothing keeps the account, rounded to the nearest).
 * Returns 1 when |a| was idle and has been freed.
 */
static int account_take(relay_budget_svc *s, struct account *a, int final, uint64_t *bytes,
                        uint64_t *secs)
{
    account_accrue(a, pos_now_ms());
    int idle = a->budgets == 0 && a->open == 0;
    *bytes = a->bytes;
    *secs = (final || idle) ? (a->ms + 500) / 1000 : a->ms / 1000;
    a->bytes = 0;
    a->ms = (final || idle) ? 0 : a->ms - *secs * 1000;
    if (!idle)
        return 0;
    strmap_remove(&s->accounts, &a->n);
    free(a);
    return 1;
}

static void usage_batch_unlink(relay_budget_svc *s, struct usage_batch *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        s->usage_inflight = u->next;
    if (u->next)
        u->next->prev = u->prev;
}

static void on_usage_reply(void *arg, redisReply *rep)
{
    struct usage_batch *u = arg;
    relay_budget_svc *s = u->s;
    usage_batch_unlink(s, u);
    if (rep && rep->type == REDIS_REPLY_INTEGER) {
        s->stats.usage_flushes++;
    } else {
        /* At least once: a batch that timed out may still have been applied. */
        note_redis_error(s, rep);
        s->stats.usage_failures++;
        usage_restore(s, u);
    }
    free(u);
}

static void usage_send(relay_budget_svc *s, struct usage_batch *u)
{
    char keys[USAGE_CHUNK][RELAY_KEY_LEN], nums[USAGE_CHUNK][2][24];
    const char *argv[3 * USAGE_CHUNK];
    for (unsigned i = 0; i < u->n; i++) {
        relay_key_usage(s->cfg->redis_prefix, keys[i], sizeof(keys[i]), u->e[i].account);
        snprintf(nums[i][0], sizeof(nums[i][0]), "%llu", (unsigned long long)u->e[i].bytes);
        snprintf(nums[i][1], sizeof(nums[i][1]), "%llu", (unsigned long long)u->e[i].secs);
        argv[i] = keys[i];
        argv[u->n + 2 * i] = nums[i][0];
        argv[u->n + 2 * i + 1] = nums[i][1];
    }
    if (pos_redis_async_eval(s->redis, s->sc_usage, (int)u->n, (int)(3 * u->n), argv, NULL,
                             on_usage_reply, u) != 0) {
        s->stats.usage_failures++;
        usage_restore(s, u);
        free(u);
        return;
    }
    u->prev = NULL;
    u->next = s->usage_inflight;
    if (u->next)
        u->next->prev = u;
    s->usage_inflight = u;
}

/* Moves every budget's spent bytes to its account. */
static void usage_collect(relay_budget_svc *s)
{
    STRMAP_FOREACH(&s->budgets, n)
    budget_report((struct budget *)n);
}

/*
 * Adds the counted usage to Redis: one pipeline of script calls, USAGE_CHUNK
 * accounts each (sent after the walk: a failed send puts accounts back).
 */
void relay_budget_svc_flush(relay_budget_svc *s)
{
    struct usage_batch *u = NULL, *full = NULL;
    if (!pos_redis_async_up(s->redis))
        return; /* kept, with the next flush */
    usage_collect(s);
    for (size_t i = 0; i < s->accounts.nb; i++) {
        struct strmap_node *n = s->accounts.b[i], *next;
        for (; n; n = next) {
            next = n->next;
            if (!u && !(u = calloc(1, sizeof(*u))))
                goto send; /* out of memory: the rest is kept for the next flush */
            u->s = s;
            snprintf(u->e[u->n].account, sizeof(u->e[u->n].account), "%s", n->key);
            account_take(s, (struct account *)n, 0, &u->e[u->n].bytes, &u->e[u->n].secs);
            if (!u->e[u->n].bytes && !u->e[u->n].secs)
                continue;
            if (++u->n == USAGE_CHUNK) {
                u->next = full;
                full = u;
                u = NULL;
            }
        }
    }
send:
    if (u && u->n) {
        u->next = full;
        full = u;
    } else {
        free(u);
    }
    while (full) {
        u = full;
        full = u->next;
        usage_send(s, u);
    }
}

static void on_usage_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_budget_svc *s = w->data;
    (void)loop;
    (void)revents;
    if (!s->shut_down)
        relay_budget_svc_flush(s);
}

int relay_budget_svc_append_final(relay_budget_svc *s, pos_redis *r, uint64_t *lost_bytes)
{
    int sent = 0;
    char key[RELAY_KEY_LEN];
    usage_collect(s);
    for (size_t i = 0; i < s->accounts.nb; i++) {
        struct strmap_node *n = s->accounts.b[i], *next;
        for (; n; n = next) {
            uint64_t bytes, secs;
            next = n->next;
            relay_key_usage(s->cfg->redis_prefix, key, sizeof(key), n->key);
            account_take(s, (struct account *)n, 1, &bytes, &secs); /* may free n */
            if (!r) {
                *lost_bytes += bytes;
                continue;
            }
            if (bytes && redisAppendCommand(r->ctx, "HINCRBY %s %s %llu", key, RELAY_USAGE_BYTES,
                                            (unsigned long long)bytes) == REDIS_OK)
                sent++;
            if (secs && redisAppendCommand(r->ctx, "HINCRBY %s %s %llu", key, RELAY_USAGE_SECONDS,
                                           (unsigned long long)secs) == REDIS_OK)
                sent++;
        }
    }
    return sent;
}

relay_budget_svc *relay_budget_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                       pos_redis_async *redis)
{
    relay_budget_svc *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->redis = redis;
    ev_timer_init(&s->usage_timer, on_usage_timer, RELAY_USAGE_FLUSH_S, RELAY_USAGE_FLUSH_S);
    s->usage_timer.data = s;
    s->sc_lease = pos_redis_async_script_add(redis, lua_lease);
    s->sc_usage = pos_redis_async_script_add(redis, lua_usage);
    if (s->sc_lease < 0 || s->sc_usage < 0) {
        relay_budget_svc_del(s);
        return NULL;
    }
    ev_timer_start(loop, &s->usage_timer);
    return s;
}

void relay_budget_svc_shutdown(relay_budget_svc *s)
{
    s->shut_down = 1;
    ev_timer_stop(s->loop, &s->usage_timer);
}

void relay_budget_svc_stats_add(const relay_budget_svc *s, relay_services_stats *out)
{
    out->redis_errors += s->redis_reply_errors;
    out->leases += s->stats.leases;
    out->lease_bytes += s->stats.lease_bytes;
    out->leases_empty += s->stats.leases_empty;
    out->leases_failed += s->stats.leases_failed;
    out->usage_flushes += s->stats.usage_flushes;
    out->usage_failures += s->stats.usage_failures;
}

void relay_budget_svc_del(relay_budget_svc *s)
{
    if (!s)
        return;
    ev_timer_stop(s->loop, &s->usage_timer);
    STRMAP_FOREACH(&s->budgets, n)
    ev_timer_stop(s->loop, &((struct budget *)n)->retry);
    strmap_clear(&s->budgets); /* a budget still referenced must not be used after this */
    strmap_clear(&s->accounts);
    while (s->usage_inflight) {
        struct usage_batch *u = s->usage_inflight;
        usage_batch_unlink(s, u);
        free(u);
    }
    strmap_free(&s->budgets);
    strmap_free(&s->accounts);
    free(s);
}
