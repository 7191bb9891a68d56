/*
 * The relay's Redis and discovery-API services (see services.h): token
 * checks with a short local cache, connection-attempt rate limits, the
 * per-token connection cap, revocations, presence, and registration with the
 * discovery API. Everything runs on the relay's libev loop: Redis through
 * redis_async (hiredis async), HTTP through a curl multi handle whose sockets
 * and timer are libev watchers. Key names are in relay_keys.h, the layout in
 * docs/redis-layout.md.
 *
 * State kept here, all bounded by what the QUIC side asks for:
 *   checks    pending verdicts (one per relay_rate_check_addr/relay_auth_check)
 *   cache     token hash -> what Redis said about it, for CACHE_TTL seconds
 *   tokconns  token hash -> connections accepted here and their members in
 *             the token's Redis connection set
 *   presence  peer id -> number of its home connections here
 *   budgets   token hash -> its bandwidth budget here (leased from Redis)
 *   accounts  account -> usage not yet added to Redis, circuits open
 * One 5 s timer refreshes presence and connection-set members in Redis and
 * re-reads the tokens in use, so a revocation missed while the subscriber
 * connection was down still closes connections. Another adds usage to
 * Redis every RELAY_USAGE_FLUSH_S seconds.
 */
#include "services.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redis_async.h"
#include "relay_keys.h"
#include "secret.h"

#define REDIS_TIMEOUT_MS 500
#define CACHE_TTL 3.0        /* seconds a token lookup is trusted */
#define CACHE_MAX 20000      /* entries; beyond it stale ones are dropped */
#define REFRESH_INTERVAL 5.0 /* presence, connection sets, revalidation */
#define PRESENCE_TTL_S 15
#define CONN_TTL_MS 30000 /* a crashed relay's connections count this long */
#define MAX_TOKEN_LEN 1024
#define REFRESH_CHUNK 30 /* members per connection-set refresh call */
#define HTTP_TIMEOUT_MS 5000
#define REGISTER_BACKOFF_MAX 5.0
#define MAX_PENDING_CHECKS 20000 /* beyond: refused at once as unavailable (overload) */
#define LEASE_MIN_CHUNK 8192     /* bytes: at least a few full-size packets per lease */
#define LEASE_MIN_GRANT 4096     /* a lease smaller than this (or a quarter chunk) waits */
#define LEASE_CHUNK_DIV 10       /* a lease is 1/10 s of the rate */
#define LEASE_WAIT_MIN_MS 5      /* after an empty lease, ask again no sooner... */
#define LEASE_WAIT_MAX_MS 250    /* ...and no later than this (bucket refill time) */
#define LEASE_RETRY_FAIL_MS 250  /* after Redis did not answer */
#define USAGE_CHUNK 10           /* accounts per usage script call (3 arguments each, max 32) */

/* ---- Lua scripts (time from Redis, so relays with skewed clocks agree) ---- */

#define LUA_NOW                                                                                    \
    "local tm = redis.call('TIME')\n"                                                              \
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"

/* Token bucket in milli-tokens; a key that does not exist is a full bucket. */
#define LUA_BUCKET                                                                                 \
    "local function bucket(key, rate, burst, now)\n"                                               \
    "  if rate <= 0 then return true end\n"                                                        \
    "  local cap = burst * 1000\n"                                                                 \
    "  local b = redis.call('HMGET', key, 't', 'ts')\n"                                            \
    "  local t, ts = tonumber(b[1]), tonumber(b[2])\n"                                             \
    "  if t == nil or ts == nil then t = cap; ts = now end\n"                                      \
    "  if now > ts then t = math.min(cap, t + (now - ts) * rate) end\n"                            \
    "  local ok = t >= 1000\n"                                                                     \
    "  if ok then t = t - 1000 end\n"                                                              \
    "  redis.call('HSET', key, 't', math.floor(t), 'ts', now)\n"                                   \
    "  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)\n"                                 \
    "  return ok\n"                                                                                \
    "end\n"

/* KEYS[1] bucket. ARGV rate/s, burst. Returns 1 allowed, 0 limited. */
static const char lua_rate[] = LUA_NOW LUA_BUCKET
    "if bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now) then return 1 end\n"
    "return 0\n";

/*
 * KEYS[1] token bucket, KEYS[2] token connection set. ARGV rate/s, burst,
 * max_conns (0 = no cap), member, ttl ms. Returns 1 admitted, -1 rate
 * limited, -2 too many connections.
 */
static const char lua_admit[] = LUA_NOW LUA_BUCKET
    "local max = tonumber(ARGV[3])\n"
    "if max > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[2]) >= max then return -2 end\n"
    "end\n"
    "if not bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now) then return -1 end\n"
    "if max > 0 then\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])\n"
    "  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))\n"
    "end\n"
    "return 1\n";

/* KEYS[1] connection set. ARGV ttl ms, members... Pushes their expiry forward. */
static const char lua_refresh_conns[] =
    LUA_NOW "local exp = now + tonumber(ARGV[1])\n"
            "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end\n"
            "redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))\n"
            "return 1\n";

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

/* KEYS[1]. ARGV value. Deletes the key only while it still holds |value|. */
static const char lua_del_if[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                 "  return redis.call('DEL', KEYS[1])\n"
                                 "end\n"
                                 "return 0\n";

/*
 * Presence lookup: the relay holding a peer and that relay's entry as the
 * discovery API stored it (P relay:ID, docs/discovery-api.md), in one round
 * trip. The entry key is derived from the presence value, so it is not in
 * KEYS: fine on one Redis node or Sentinel (no Cluster, see redis-layout.md).
 */
static const char lua_presence_lookup[] =
    "local rid = redis.call('GET', KEYS[1])\n"
    "if not rid then return false end\n"
    "local e = redis.call('GET', ARGV[1] .. 'relay:' .. rid)\n"
    "return {rid, e or ''}\n";

/*
 * Presence refresh: KEYS[1] presence key, ARGV relay id, TTL seconds. Puts
 * the key back (Redis restarted, TTL ran out) or extends it, but never takes
 * it from another relay: the peer's newest home connection is there.
 */
static const char lua_presence_keep[] = "local v = redis.call('GET', KEYS[1])\n"
                                        "if v and v ~= ARGV[1] then return 0 end\n"
                                        "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
                                        "return 1\n";

/* ---- a small string-keyed hash table of intrusive nodes ---- */

struct node {
    struct node *next;
    char key[72];
};

struct map {
    struct node **b;
    size_t nb, n;
};

static size_t map_slot(const struct map *m, const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h & (m->nb - 1));
}

static struct node *map_get(const struct map *m, const char *key)
{
    if (!m->nb)
        return NULL;
    for (struct node *n = m->b[map_slot(m, key)]; n; n = n->next) {
        if (strcmp(n->key, key) == 0)
            return n;
    }
    return NULL;
}

static int map_grow(struct map *m)
{
    size_t nb = m->nb ? m->nb * 2 : 256;
    struct node **b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    struct map bigger = {b, nb, m->n};
    for (size_t i = 0; i < m->nb; i++) {
        struct node *n = m->b[i], *next;
        for (; n; n = next) {
            next = n->next;
            size_t s = map_slot(&bigger, n->key);
            n->next = b[s];
            b[s] = n;
        }
    }
    free(m->b);
    *m = bigger;
    return 0;
}

/* map_put inserts |n| (its key set, not yet present). Returns 0 or -1 (out of memory). */
static int map_put(struct map *m, struct node *n)
{
    if ((m->n >= m->nb * 2 || !m->nb) && map_grow(m) != 0 && !m->nb)
        return -1;
    size_t s = map_slot(m, n->key);
    n->next = m->b[s];
    m->b[s] = n;
    m->n++;
    return 0;
}

static void map_remove(struct map *m, struct node *target)
{
    if (!m->nb)
        return;
    for (struct node **p = &m->b[map_slot(m, target->key)]; *p; p = &(*p)->next) {
        if (*p == target) {
            *p = target->next;
            m->n--;
            return;
        }
    }
}

/* map_clear frees every node with free() and empties |m| (buckets kept). */
static void map_clear(struct map *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        struct node *n = m->b[i], *next;
        for (; n; n = next) {
            next = n->next;
            free(n);
        }
        m->b[i] = NULL;
    }
    m->n = 0;
}

#define MAP_FOREACH(m, var)                                                                        \
    for (size_t var##_i = 0; var##_i < (m)->nb; var##_i++)                                         \
        for (struct node *var = (m)->b[var##_i]; var; var = var->next)

/* ---- state ---- */

struct cache_entry {
    struct node n; /* key: token hash */
    int found, revoked;
    relay_limits limits;
    ev_tstamp fetched;
};

struct tokconn {
    struct node n;  /* key: token hash */
    uint32_t count; /* connections accepted here and not released */
    uint32_t nmembers, cap;
    uint64_t *members; /* our members in the token's Redis connection set */
};

struct presence {
    struct node n; /* key: peer id */
    uint32_t count;
};

enum check_kind { CHECK_ADDR, CHECK_AUTH };

struct check {
    struct check *prev, *next;
    relay_services *s;
    uint64_t handle;
    enum check_kind kind;
    relay_auth_cb cb;
    void *arg;
    int cancelled, waiting, revoked_meanwhile;
    char hash[POS_SECRET_HASH_HEXLEN];
    enum relay_refusal verdict;
    relay_limits limits;
    int has_limits;
    uint64_t member; /* nonzero once admitted into the connection set */
    ev_timer defer;
};

struct http_req {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char resp[1024];
    size_t resp_len;
};

struct curl_sock {
    ev_io io;
    curl_socket_t fd;
};

struct revalidation;
struct usage_batch;

/* A presence lookup in flight (relay_presence_lookup); delivered from |defer| or the reply. */
struct lookup {
    struct lookup *prev, *next;
    relay_services *s;
    uint64_t handle;
    relay_presence_cb cb;
    void *arg;
    int waiting;   /* a Redis reply is due: freed then */
    int cancelled; /* the caller went away */
    ev_timer defer;
};

/* Usage of one account not yet added to Redis, and its circuits open here. */
struct account {
    struct node n;     /* key: account name */
    uint32_t budgets;  /* budgets billing to it */
    uint32_t open;     /* circuits open with a side of this account */
    uint64_t bytes;    /* relayed, not yet in Redis */
    uint64_t ms;       /* circuit milliseconds, not yet in Redis */
    uint64_t since_ms; /* when |ms| last accrued the open circuits */
};

/* A token's bandwidth budget on this relay; the forwarder sees only |b|. */
struct budget {
    struct node n; /* key: token hash */
    relay_budget b;
    relay_services *s;
    struct account *acct; /* NULL: usage not counted (invalid account name) */
    uint32_t refs;        /* 0: kept only until the lease in flight answers */
    int in_flight;        /* a lease script awaits its answer */
    uint64_t rate, burst, chunk, min_grant;
    uint64_t reported;     /* b.spent already moved to the account */
    uint64_t dropped_mark; /* b.dropped when the last lease was asked for */
    uint64_t spent_mark;   /* b.spent likewise */
    ev_timer retry;        /* ask again after an empty or failed lease */
};

struct relay_services {
    struct ev_loop *loop;
    const relay_config *cfg;
    relay_services_callbacks cbs;
    char addrs[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_addrs;
    char peer_id[POS_PEER_ID_STRLEN];

    pos_redis_async *redis;
    int sc_rate, sc_admit, sc_refresh, sc_del_if, sc_lease, sc_usage, sc_lookup;
    int sc_presence_keep; /* lua_presence_keep */
    struct lookup *lookups;
    int deleting;
    uint64_t redis_reply_errors;

    struct check *checks;
    size_t n_checks;
    struct revalidation *revals; /* token re-reads waiting for Redis */
    uint64_t next_handle, next_member;
    struct map cache, tokconns, presence, budgets, accounts;
    ev_timer refresh;
    ev_timer usage_timer;
    struct usage_batch *usage_inflight; /* usage script calls waiting for Redis */
    int shut_down;

    /* registration */
    CURLM *multi;
    ev_timer curl_timer;
    ev_timer reg_timer;
    struct http_req *reg; /* POST in flight */
    double reg_backoff;
    int reg_ok_before; /* last attempt succeeded: log only changes */
    unsigned reg_interval_s;
    relay_services_stats stats;
};

const char *relay_refusal_reason(enum relay_refusal r)
{
    switch (r) {
    case RELAY_OK:
        return "accepted";
    case RELAY_REFUSED_UNKNOWN_TOKEN:
        return "unknown token";
    case RELAY_REFUSED_REVOKED:
        return "token revoked";
    case RELAY_REFUSED_EXPIRED:
        return "token expired";
    case RELAY_REFUSED_RATE_LIMITED:
        return "rate limited: too many connection attempts, try again later";
    case RELAY_REFUSED_TOO_MANY_CONNS:
        return "too many connections for this token";
    case RELAY_REFUSED_UNAVAILABLE:
        return "relay temporarily unavailable (its database is unreachable), try again later";
    case RELAY_REFUSED_BAD_REQUEST:
        return "bad request";
    case RELAY_GOING_AWAY:
        return "relay shutting down, use another relay";
    }
    return "refused";
}

/* ---- checks: life cycle and delivery ---- */

static void check_unlink_free(struct check *c)
{
    relay_services *s = c->s;
    ev_timer_stop(s->loop, &c->defer);
    if (c->prev)
        c->prev->next = c->next;
    else if (s->checks == c)
        s->checks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_checks--;
    free(c);
}

static void on_defer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct check *c = w->data;
    (void)loop;
    (void)revents;
    relay_auth_cb cb = c->cb;
    void *arg = c->arg;
    enum relay_refusal verdict = c->verdict;
    relay_limits limits = c->limits;
    int has_limits = c->has_limits;
    char hash[POS_SECRET_HASH_HEXLEN];
    memcpy(hash, c->hash, sizeof(hash));
    int is_auth = c->kind == CHECK_AUTH;
    check_unlink_free(c);
    /* The check is gone before the callback runs: it may call anything, even cancel. */
    cb(arg, verdict, has_limits ? &limits : NULL, is_auth ? hash : NULL);
}

/* deliver hands |verdict| to the callback from the loop, never from inside the caller. */
static void deliver(struct check *c, enum relay_refusal verdict)
{
    c->verdict = verdict;
    if (c->cancelled) {
        check_unlink_free(c);
        return;
    }
    ev_timer_set(&c->defer, 0., 0.);
    ev_timer_start(c->s->loop, &c->defer);
}

static struct check *check_new(relay_services *s, enum check_kind kind, relay_auth_cb cb, void *arg)
{
    struct check *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->s = s;
    c->kind = kind;
    c->cb = cb;
    c->arg = arg;
    c->handle = ++s->next_handle;
    s->n_checks++;
    ev_timer_init(&c->defer, on_defer, 0., 0.);
    c->defer.data = c;
    c->next = s->checks;
    if (s->checks)
        s->checks->prev = c;
    s->checks = c;
    return c;
}

static void note_redis_error(relay_services *s, const redisReply *rep)
{
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        s->redis_reply_errors++;
        pos_log_warn("Redis error: %s", rep->str);
    }
}

/* ---- per-address rate limit ---- */

/* The bucket key's address part: the IPv4 address, or the /64 of an IPv6 one. */
static int addr_bucket_name(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        return inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)outlen) ? 0 : -1;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        struct in6_addr a = in6->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a))
            return inet_ntop(AF_INET, &a.s6_addr[12], out, (socklen_t)outlen) ? 0 : -1;
        memset(&a.s6_addr[8], 0, 8);
        if (!inet_ntop(AF_INET6, &a, out, (socklen_t)outlen))
            return -1;
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, "/64");
        return 0;
    }
    return -1;
}

static void on_rate_reply(void *arg, redisReply *rep)
{
    struct check *c = arg;
    c->waiting = 0;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        note_redis_error(c->s, rep);
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    deliver(c, rep->integer == 1 ? RELAY_OK : RELAY_REFUSED_RATE_LIMITED);
}

uint64_t relay_rate_check_addr(relay_services *s, const struct sockaddr *from, relay_auth_cb cb,
                               void *arg)
{
    struct check *c = check_new(s, CHECK_ADDR, cb, arg);
    if (!c)
        return 0;
    char name[INET6_ADDRSTRLEN + 8], key[RELAY_KEY_LEN], rate[16], burst[16];
    if (s->shut_down) {
        deliver(c, RELAY_GOING_AWAY);
    } else if (s->n_checks > MAX_PENDING_CHECKS) {
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
    } else if (s->cfg->conn_rate_per_addr == 0) {
        deliver(c, RELAY_OK);
    } else if (addr_bucket_name(from, name, sizeof(name)) != 0) {
        deliver(c, RELAY_REFUSED_BAD_REQUEST);
    } else {
        relay_key_rate_addr(s->cfg->redis_prefix, key, sizeof(key), name);
        snprintf(rate, sizeof(rate), "%u", s->cfg->conn_rate_per_addr);
        snprintf(burst, sizeof(burst), "%u", s->cfg->conn_burst_per_addr);
        const char *argv[] = {key, rate, burst};
        if (pos_redis_async_eval(s->redis, s->sc_rate, 1, 3, argv, NULL, on_rate_reply, c) != 0)
            deliver(c, RELAY_REFUSED_UNAVAILABLE);
        else
            c->waiting = 1; /* the check lives until Redis answers, even if cancelled */
    }
    return c->handle;
}

/* ---- token cache ---- */

static const char *hash_field(const redisReply *h, const char *name)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        if (h->element[i]->type == REDIS_REPLY_STRING &&
            h->element[i + 1]->type == REDIS_REPLY_STRING && strcmp(h->element[i]->str, name) == 0)
            return h->element[i + 1]->str;
    }
    return NULL;
}

static uint64_t field_u64(const redisReply *h, const char *name)
{
    const char *v = hash_field(h, name);
    return v ? strtoull(v, NULL, 10) : 0;
}

/* Makes room in the cache: stale entries go first, everything if that is not enough. */
static void cache_trim(relay_services *s)
{
    if (s->cache.n < CACHE_MAX)
        return;
    ev_tstamp now = ev_now(s->loop);
    for (size_t i = 0; i < s->cache.nb; i++) {
        for (struct node **p = &s->cache.b[i]; *p;) {
            struct cache_entry *e = (struct cache_entry *)*p;
            if (now - e->fetched > CACHE_TTL) {
                *p = e->n.next;
                s->cache.n--;
                free(e);
            } else {
                p = &(*p)->next;
            }
        }
    }
    if (s->cache.n >= CACHE_MAX)
        map_clear(&s->cache);
}

/* Records what Redis said about |hash| (|h| the HGETALL reply). Returns the entry or NULL. */
static struct cache_entry *cache_store(relay_services *s, const char *hash, const redisReply *h)
{
    struct cache_entry *e = (struct cache_entry *)map_get(&s->cache, hash);
    if (!e) {
        cache_trim(s);
        e = calloc(1, sizeof(*e));
        if (!e)
            return NULL;
        snprintf(e->n.key, sizeof(e->n.key), "%s", hash);
        if (map_put(&s->cache, &e->n) != 0) {
            free(e);
            return NULL;
        }
    }
    memset(&e->limits, 0, sizeof(e->limits));
    e->fetched = ev_now(s->loop);
    e->found = h->elements > 0 && hash_field(h, "account") != NULL;
    const char *revoked = hash_field(h, "revoked");
    e->revoked = revoked && strcmp(revoked, "0") != 0;
    if (e->found) {
        snprintf(e->limits.account, sizeof(e->limits.account), "%s", hash_field(h, "account"));
        e->limits.bytes_per_sec = field_u64(h, "bytes_per_sec");
        e->limits.burst_bytes = field_u64(h, "burst");
        e->limits.max_conns = (uint32_t)field_u64(h, "max_conns");
        if (e->limits.max_conns == 0) /* the token sets no cap: the relay's default */
            e->limits.max_conns = s->cfg->max_conns_per_token;
        e->limits.expires_at = (int64_t)field_u64(h, "expires_at");
    }
    return e;
}

static enum relay_refusal cache_verdict(const struct cache_entry *e)
{
    if (!e->found)
        return RELAY_REFUSED_UNKNOWN_TOKEN;
    if (e->revoked)
        return RELAY_REFUSED_REVOKED;
    if (e->limits.expires_at > 0 && e->limits.expires_at <= (int64_t)time(NULL))
        return RELAY_REFUSED_EXPIRED;
    return RELAY_OK;
}

/* ---- admission (token bucket + connection cap) ---- */

static struct tokconn *tokconn_get(relay_services *s, const char *hash, int create)
{
    struct tokconn *t = (struct tokconn *)map_get(&s->tokconns, hash);
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    snprintf(t->n.key, sizeof(t->n.key), "%s", hash);
    if (map_put(&s->tokconns, &t->n) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

static void member_name(const relay_services *s, uint64_t member, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s:%llu", s->cfg->id, (unsigned long long)member);
}

static void zrem_member(relay_services *s, const char *hash, uint64_t member)
{
    char key[RELAY_KEY_LEN], m[96];
    relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), hash);
    member_name(s, member, m, sizeof(m));
    const char *argv[] = {"ZREM", key, m};
    pos_redis_async_commandv(s->redis, NULL, NULL, 3, argv, NULL);
}

/* Counts an accepted connection of |hash| here; returns -1 when out of memory. */
static int tokconn_add(relay_services *s, const char *hash, uint64_t member)
{
    struct tokconn *t = tokconn_get(s, hash, 1);
    if (!t)
        return -1;
    if (member) {
        if (t->nmembers == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 4;
            uint64_t *m = realloc(t->members, cap * sizeof(*m));
            if (!m)
                return -1;
            t->members = m;
            t->cap = cap;
        }
        t->members[t->nmembers++] = member;
    }
    t->count++;
    return 0;
}

static void on_admit_reply(void *arg, redisReply *rep)
{
    struct check *c = arg;
    relay_services *s = c->s;
    c->waiting = 0;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        note_redis_error(s, rep);
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    if (rep->integer == -1) {
        deliver(c, RELAY_REFUSED_RATE_LIMITED);
        return;
    }
    if (rep->integer != 1) {
        deliver(c, RELAY_REFUSED_TOO_MANY_CONNS);
        return;
    }
    /* Admitted in Redis; undo it if the caller went away or the token was revoked meanwhile. */
    if (c->cancelled || c->revoked_meanwhile || tokconn_add(s, c->hash, c->member) != 0) {
        if (c->member)
            zrem_member(s, c->hash, c->member);
        deliver(c, c->revoked_meanwhile ? RELAY_REFUSED_REVOKED : RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    deliver(c, RELAY_OK);
}

static void admit(relay_services *s, struct check *c)
{
    char bucket[RELAY_KEY_LEN], conns[RELAY_KEY_LEN], rate[16], burst[16], max[16], ttl[16],
        member[96];
    relay_key_rate_token(s->cfg->redis_prefix, bucket, sizeof(bucket), c->hash);
    relay_key_conns(s->cfg->redis_prefix, conns, sizeof(conns), c->hash);
    snprintf(rate, sizeof(rate), "%u", s->cfg->conn_rate_per_token);
    snprintf(burst, sizeof(burst), "%u", s->cfg->conn_burst_per_token);
    snprintf(max, sizeof(max), "%u", c->limits.max_conns);
    snprintf(ttl, sizeof(ttl), "%d", CONN_TTL_MS);
    c->member = c->limits.max_conns ? ++s->next_member : 0;
    member_name(s, c->member, member, sizeof(member));
    const char *argv[] = {bucket, conns, rate, burst, max, member, ttl};
    if (pos_redis_async_eval(s->redis, s->sc_admit, 2, 7, argv, NULL, on_admit_reply, c) != 0) {
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    c->waiting = 1;
}

static void judge(relay_services *s, struct check *c, const struct cache_entry *e)
{
    enum relay_refusal v = cache_verdict(e);
    if (v != RELAY_OK) {
        if (v != RELAY_REFUSED_UNKNOWN_TOKEN) {
            c->limits = e->limits;
            c->has_limits = 1;
        }
        deliver(c, v);
        return;
    }
    c->limits = e->limits;
    c->has_limits = 1;
    if (c->cancelled) {
        check_unlink_free(c);
        return;
    }
    admit(s, c);
}

static void on_token_reply(void *arg, redisReply *rep)
{
    struct check *c = arg;
    relay_services *s = c->s;
    c->waiting = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        note_redis_error(s, rep);
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    struct cache_entry *e = cache_store(s, c->hash, rep);
    if (!e) {
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    if (c->revoked_meanwhile)
        e->revoked = 1;
    judge(s, c, e);
}

uint64_t relay_auth_check(relay_services *s, const char *token, size_t len,
                          const struct sockaddr *from, const char *peer_id, relay_auth_cb cb,
                          void *arg)
{
    (void)from;
    (void)peer_id;
    struct check *c = check_new(s, CHECK_AUTH, cb, arg);
    if (!c)
        return 0;
    if (s->shut_down) {
        deliver(c, RELAY_GOING_AWAY);
        return c->handle;
    }
    if (len == 0 || len > MAX_TOKEN_LEN) {
        deliver(c, RELAY_REFUSED_BAD_REQUEST);
        return c->handle;
    }
    if (s->n_checks > MAX_PENDING_CHECKS) {
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return c->handle;
    }
    pos_secret_hash_hex(token, len, c->hash);
    pos_log_debug("token check for %.12s", c->hash);
    struct cache_entry *e = (struct cache_entry *)map_get(&s->cache, c->hash);
    if (e && ev_now(s->loop) - e->fetched <= CACHE_TTL) {
        judge(s, c, e);
        return c->handle;
    }
    char key[RELAY_KEY_LEN];
    relay_key_token(s->cfg->redis_prefix, key, sizeof(key), c->hash);
    const char *argv[] = {"HGETALL", key};
    if (pos_redis_async_commandv(s->redis, on_token_reply, c, 2, argv, NULL) != 0)
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
    else
        c->waiting = 1;
    return c->handle;
}

void relay_auth_cancel(relay_services *s, uint64_t handle)
{
    for (struct check *c = s->checks; c; c = c->next) {
        if (c->handle != handle)
            continue;
        if (c->waiting) {
            c->cancelled = 1; /* freed when Redis answers */
            return;
        }
        /*
         * An OK verdict waiting in |defer| already counts against the token's
         * connection cap: give the slot back, the caller will never see it.
         */
        if (c->kind == CHECK_AUTH && c->verdict == RELAY_OK && ev_is_active(&c->defer))
            relay_auth_release(s, c->hash);
        check_unlink_free(c);
        return;
    }
}

void relay_auth_release(relay_services *s, const char *token_id)
{
    if (!token_id)
        return;
    struct tokconn *t = tokconn_get(s, token_id, 0);
    if (!t)
        return;
    if (t->nmembers > 0) {
        t->nmembers--;
        zrem_member(s, token_id, t->members[t->nmembers]);
    }
    if (t->count > 0)
        t->count--;
    if (t->count == 0) {
        map_remove(&s->tokconns, &t->n);
        free(t->members);
        free(t);
    }
}

/* ---- revocation ---- */

static void revoke_hash(relay_services *s, const char *hash)
{
    struct cache_entry *e = (struct cache_entry *)map_get(&s->cache, hash);
    if (e) {
        e->revoked = 1;
        e->fetched = ev_now(s->loop);
    }
    for (struct check *c = s->checks; c; c = c->next) {
        if (c->kind == CHECK_AUTH && strcmp(c->hash, hash) == 0)
            c->revoked_meanwhile = 1;
    }
    if (tokconn_get(s, hash, 0)) {
        pos_log_info("a token in use was revoked: closing its connections");
        pos_log_debug("revoked token: %.12s", hash); /* hashes only at debug */
        if (s->cbs.revoked)
            s->cbs.revoked(s->cbs.arg, hash);
    }
}

static void revalidate(relay_services *s);

static void on_revocation(void *arg, const char *channel, const char *msg, size_t len)
{
    relay_services *s = arg;
    (void)channel;
    if (!msg) {
        /* (Re)subscribed: anything published while we were away is unknown. */
        map_clear(&s->cache);
        revalidate(s);
        return;
    }
    char hash[POS_SECRET_HASH_HEXLEN];
    if (len != 64)
        return;
    memcpy(hash, msg, 64);
    hash[64] = '\0';
    if (!relay_token_hash_valid(hash))
        return;
    revoke_hash(s, hash);
}

/* A token re-read in flight; owned by the services' list until Redis answers. */
struct revalidation {
    struct revalidation *prev, *next;
    relay_services *s;
    char hash[POS_SECRET_HASH_HEXLEN];
};

static void revalidation_free(relay_services *s, struct revalidation *v)
{
    if (v->prev)
        v->prev->next = v->next;
    else
        s->revals = v->next;
    if (v->next)
        v->next->prev = v->prev;
    free(v);
}

static void on_revalidate_reply(void *arg, redisReply *rep)
{
    struct revalidation *v = arg;
    relay_services *s = v->s;
    char hash[POS_SECRET_HASH_HEXLEN];
    memcpy(hash, v->hash, sizeof(hash));
    revalidation_free(s, v);
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        const char *revoked = hash_field(rep, "revoked");
        if (revoked && strcmp(revoked, "0") != 0)
            revoke_hash(s, hash);
    }
}

/* Re-reads every token with connections here (missed revocations). */
static void revalidate(relay_services *s)
{
    MAP_FOREACH(&s->tokconns, n)
    {
        char key[RELAY_KEY_LEN];
        struct revalidation *v = calloc(1, sizeof(*v));
        if (!v)
            return;
        v->s = s;
        memcpy(v->hash, n->key, POS_SECRET_HASH_HEXLEN);
        relay_key_token(s->cfg->redis_prefix, key, sizeof(key), n->key);
        const char *argv[] = {"HGETALL", key};
        if (pos_redis_async_commandv(s->redis, on_revalidate_reply, v, 2, argv, NULL) != 0) {
            free(v);
            return;
        }
        v->next = s->revals;
        if (s->revals)
            s->revals->prev = v;
        s->revals = v;
    }
}

/* ---- presence ---- */

static void lookup_unlink_free(struct lookup *l)
{
    relay_services *s = l->s;
    ev_timer_stop(s->loop, &l->defer);
    if (l->prev)
        l->prev->next = l->next;
    else
        s->lookups = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

/* lookup_entry parses a relay entry (JSON) into |f|; -1 when it is not usable. */
static int lookup_entry(const char *json, size_t len, relay_presence_found *f)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr), *addrs, *v;
    size_t i;
    int rv = -1;
    if (!root)
        return -1;
    const char *id = json_string_value(json_object_get(root, "id"));
    const char *pid = json_string_value(json_object_get(root, "peer_id"));
    addrs = json_object_get(root, "addrs");
    if (!id || !pid || !json_is_array(addrs) || strlen(id) >= sizeof(f->relay_id) ||
        strlen(pid) >= sizeof(f->peer_id))
        goto out;
    snprintf(f->relay_id, sizeof(f->relay_id), "%s", id);
    snprintf(f->peer_id, sizeof(f->peer_id), "%s", pid);
    f->n_addrs = 0;
    json_array_foreach(addrs, i, v)
    {
        const char *a = json_string_value(v);
        struct sockaddr_storage ss;
        if (!a || f->n_addrs >= RELAY_MAX_ADDRS || pos_addr_parse(a, strlen(a), 0, &ss) != 0)
            continue;
        snprintf(f->addrs[f->n_addrs++], POS_ADDR_STRLEN, "%s", a);
    }
    rv = f->n_addrs > 0 ? 0 : -1;
out:
    json_decref(root);
    return rv;
}

static void lookup_deliver(struct lookup *l, int status, const relay_presence_found *f)
{
    relay_presence_cb cb = l->cb;
    void *arg = l->arg;
    int cancelled = l->cancelled;
    lookup_unlink_free(l);
    if (!cancelled)
        cb(arg, status, f);
}

static void on_lookup_reply(void *arg, redisReply *rep)
{
    struct lookup *l = arg;
    relay_services *s = l->s;
    relay_presence_found f;
    l->waiting = 0;
    if (s->deleting) {
        lookup_unlink_free(l);
        return;
    }
    memset(&f, 0, sizeof(f));
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        note_redis_error(s, rep);
        lookup_deliver(l, RELAY_PRESENCE_UNAVAILABLE, NULL);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING) {
        lookup_deliver(l, RELAY_PRESENCE_NOT_FOUND, NULL); /* nil: nobody holds the peer */
        return;
    }
    if (rep->element[0]->len == strlen(s->cfg->id) &&
        memcmp(rep->element[0]->str, s->cfg->id, rep->element[0]->len) == 0) {
        /* names us, but the peer is not connected here (any more): stale */
        lookup_deliver(l, RELAY_PRESENCE_NOT_FOUND, NULL);
        return;
    }
    if (lookup_entry(rep->element[1]->str, rep->element[1]->len, &f) != 0 ||
        strlen(f.relay_id) != rep->element[0]->len ||
        memcmp(f.relay_id, rep->element[0]->str, rep->element[0]->len) != 0) {
        /* the holding relay is not (or no longer) listed: it cannot be dialed */
        lookup_deliver(l, RELAY_PRESENCE_NOT_FOUND, NULL);
        return;
    }
    lookup_deliver(l, RELAY_PRESENCE_FOUND, &f);
}

static void on_lookup_defer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    lookup_deliver(w->data, RELAY_PRESENCE_UNAVAILABLE, NULL);
}

uint64_t relay_presence_lookup(relay_services *s, const char *peer_id, relay_presence_cb cb,
                               void *arg)
{
    char key[RELAY_KEY_LEN];
    struct lookup *l = calloc(1, sizeof(*l));
    if (!l)
        return 0;
    l->s = s;
    l->cb = cb;
    l->arg = arg;
    l->handle = ++s->next_handle;
    ev_timer_init(&l->defer, on_lookup_defer, 0., 0.);
    l->defer.data = l;
    l->next = s->lookups;
    if (s->lookups)
        s->lookups->prev = l;
    s->lookups = l;
    const char *argv[] = {key, s->cfg->redis_prefix};
    int kl = relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    if (s->shut_down || kl < 0 || (size_t)kl >= sizeof(key) ||
        pos_redis_async_eval(s->redis, s->sc_lookup, 1, 2, argv, NULL, on_lookup_reply, l) != 0) {
        ev_timer_start(s->loop, &l->defer); /* never from inside the call */
        return l->handle;
    }
    l->waiting = 1;
    return l->handle;
}

void relay_presence_cancel(relay_services *s, uint64_t handle)
{
    for (struct lookup *l = s->lookups; l; l = l->next) {
        if (l->handle != handle)
            continue;
        if (l->waiting)
            l->cancelled = 1;
        else
            lookup_unlink_free(l);
        return;
    }
}

/*
 * presence_set: a home connection of |peer_id| was accepted here. It is the
 * peer's newest home, so it takes the key whatever it named (the peer moved
 * here, or is back from another relay while its old connection here lingers).
 */
static void presence_set(relay_services *s, const char *peer_id)
{
    char key[RELAY_KEY_LEN], ttl[16];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    snprintf(ttl, sizeof(ttl), "%d", PRESENCE_TTL_S);
    const char *argv[] = {"SET", key, s->cfg->id, "EX", ttl};
    pos_redis_async_commandv(s->redis, NULL, NULL, 5, argv, NULL);
}

/* presence_keep: the periodic refresh, which never takes the key from another relay. */
static void presence_keep(relay_services *s, const char *peer_id)
{
    char key[RELAY_KEY_LEN], ttl[16];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    snprintf(ttl, sizeof(ttl), "%d", PRESENCE_TTL_S);
    const char *argv[] = {key, s->cfg->id, ttl};
    pos_redis_async_eval(s->redis, s->sc_presence_keep, 1, 3, argv, NULL, NULL, NULL);
}

void relay_presence_add(relay_services *s, const char *peer_id)
{
    if (!peer_id || strlen(peer_id) >= sizeof(((struct node *)0)->key))
        return;
    struct presence *p = (struct presence *)map_get(&s->presence, peer_id);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return;
        snprintf(p->n.key, sizeof(p->n.key), "%s", peer_id);
        if (map_put(&s->presence, &p->n) != 0) {
            free(p);
            return;
        }
    }
    p->count++;
    presence_set(s, peer_id);
}

void relay_presence_remove(relay_services *s, const char *peer_id)
{
    if (!peer_id)
        return;
    struct presence *p = (struct presence *)map_get(&s->presence, peer_id);
    if (!p || --p->count > 0)
        return;
    map_remove(&s->presence, &p->n);
    free(p);
    char key[RELAY_KEY_LEN];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    /* Only our own mapping: the peer may already be on another relay. */
    const char *argv[] = {key, s->cfg->id};
    pos_redis_async_eval(s->redis, s->sc_del_if, 1, 2, argv, NULL, NULL, NULL);
}

/* ---- periodic refresh ---- */

static void refresh_conns(relay_services *s, const struct tokconn *t)
{
    char key[RELAY_KEY_LEN], ttl[16], names[REFRESH_CHUNK][96];
    const char *argv[REFRESH_CHUNK + 2];
    relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), t->n.key);
    snprintf(ttl, sizeof(ttl), "%d", CONN_TTL_MS);
    argv[0] = key;
    argv[1] = ttl;
    for (uint32_t i = 0; i < t->nmembers; i += REFRESH_CHUNK) {
        int n = 0;
        for (uint32_t j = i; j < t->nmembers && n < REFRESH_CHUNK; j++, n++) {
            member_name(s, t->members[j], names[n], sizeof(names[n]));
            argv[2 + n] = names[n];
        }
        pos_redis_async_eval(s->redis, s->sc_refresh, 1, 2 + n, argv, NULL, NULL, NULL);
    }
}

static void on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_services *s = w->data;
    (void)loop;
    (void)revents;
    if (!pos_redis_async_up(s->redis) || s->shut_down)
        return;
    MAP_FOREACH(&s->presence, p)
    presence_keep(s, p->key);
    MAP_FOREACH(&s->tokconns, n)
    refresh_conns(s, (const struct tokconn *)n);
    revalidate(s);
}

static void usage_flush(relay_services *s);

/*
 * Redis came back: put presence and connection sets back at once (it may
 * have restarted empty), and add the usage counted while it was away.
 */
static void on_redis_state(void *arg, int up)
{
    relay_services *s = arg;
    if (up && !s->shut_down) {
        on_refresh(s->loop, &s->refresh, 0);
        usage_flush(s);
    }
}

/* ---- bandwidth budgets ---- */

static struct budget *budget_of(relay_budget *b)
{
    return (struct budget *)(void *)((char *)b - offsetof(struct budget, b));
}

static struct account *account_get(relay_services *s, const char *name, int create)
{
    struct account *a = (struct account *)map_get(&s->accounts, name);
    if (a || !create || !relay_account_valid(name))
        return a;
    a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    snprintf(a->n.key, sizeof(a->n.key), "%s", name);
    a->since_ms = pos_now_ms();
    if (map_put(&s->accounts, &a->n) != 0) {
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

static void budget_free(relay_services *s, struct budget *tb)
{
    ev_timer_stop(s->loop, &tb->retry);
    map_remove(&s->budgets, &tb->n);
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
    relay_services *s = tb->s;
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
    relay_services *s = tb->s;
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
    relay_services *s = tb->s;
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

relay_budget *relay_budget_acquire(relay_services *s, const char *token_id,
                                   const relay_limits *limits)
{
    if (!token_id || !limits || strlen(token_id) >= sizeof(((struct node *)0)->key))
        return NULL;
    struct budget *tb = (struct budget *)map_get(&s->budgets, token_id);
    if (!tb) {
        tb = calloc(1, sizeof(*tb));
        if (!tb)
            return NULL;
        snprintf(tb->n.key, sizeof(tb->n.key), "%s", token_id);
        if (map_put(&s->budgets, &tb->n) != 0) {
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

void relay_budget_release(relay_services *s, relay_budget *b)
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

void relay_usage_circuit_open(relay_services *s, relay_budget *b0, relay_budget *b1)
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

void relay_usage_circuit_close(relay_services *s, relay_budget *b0, relay_budget *b1)
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

int relay_usage_add(relay_services *s, const char *account, uint64_t bytes, uint64_t circuit_ms)
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
    relay_services *s;
    unsigned n;
    struct {
        char account[RELAY_ACCOUNT_MAX_LEN + 1];
        uint64_t bytes, secs;
    } e[USAGE_CHUNK];
};

/* Puts a failed batch's counts back, to go with the next flush. */
static void usage_restore(relay_services *s, const struct usage_batch *u)
{
    for (unsigned i = 0; i < u->n; i++)
        relay_usage_add(s, u->e[i].account, u->e[i].bytes, u->e[i].secs * 1000);
}

/*
 * Takes what |a| has to report into |bytes| and |secs| (whole seconds; with
 * |final|, or once nothing keeps the account, rounded to the nearest).
 * Returns 1 when |a| was idle and has been freed.
 */
static int account_take(relay_services *s, struct account *a, int final, uint64_t *bytes,
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
    map_remove(&s->accounts, &a->n);
    free(a);
    return 1;
}

static void usage_batch_unlink(relay_services *s, struct usage_batch *u)
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
    relay_services *s = u->s;
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

static void usage_send(relay_services *s, struct usage_batch *u)
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
static void usage_collect(relay_services *s)
{
    MAP_FOREACH(&s->budgets, n)
    budget_report((struct budget *)n);
}

/*
 * Adds the counted usage to Redis: one pipeline of script calls, USAGE_CHUNK
 * accounts each (sent after the walk: a failed send puts accounts back).
 */
static void usage_flush(relay_services *s)
{
    struct usage_batch *u = NULL, *full = NULL;
    if (!pos_redis_async_up(s->redis))
        return; /* kept, with the next flush */
    usage_collect(s);
    for (size_t i = 0; i < s->accounts.nb; i++) {
        struct node *n = s->accounts.b[i], *next;
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
    relay_services *s = w->data;
    (void)loop;
    (void)revents;
    if (!s->shut_down)
        usage_flush(s);
}

/* ---- registration with the discovery API (curl multi on libev) ---- */

static void check_multi_done(relay_services *s);

static void on_curl_io(struct ev_loop *loop, ev_io *w, int revents)
{
    relay_services *s = w->data;
    struct curl_sock *cs = (struct curl_sock *)w;
    int running;
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    (void)loop;
    curl_multi_socket_action(s->multi, cs->fd, action, &running);
    check_multi_done(s);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    relay_services *s = userp;
    struct curl_sock *cs = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            ev_io_stop(s->loop, &cs->io);
            free(cs);
        }
        curl_multi_assign(s->multi, fd, NULL);
        return 0;
    }
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return -1;
        cs->fd = fd;
        curl_multi_assign(s->multi, fd, cs);
    } else {
        ev_io_stop(s->loop, &cs->io);
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    ev_io_init(&cs->io, on_curl_io, fd, events);
    cs->io.data = s;
    ev_io_start(s->loop, &cs->io);
    return 0;
}

static void on_curl_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_services *s = w->data;
    int running;
    (void)loop;
    (void)revents;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_done(s);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    relay_services *s = userp;
    (void)multi;
    ev_timer_stop(s->loop, &s->curl_timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&s->curl_timer, timeout_ms / 1000.0, 0.);
        ev_timer_start(s->loop, &s->curl_timer);
    }
    return 0;
}

static size_t on_http_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_req *h = userp;
    size_t n = size * nmemb, room = sizeof(h->resp) - 1 - h->resp_len;
    memcpy(h->resp + h->resp_len, data, n < room ? n : room); /* the rest is ignored */
    h->resp_len += n < room ? n : room;
    h->resp[h->resp_len] = '\0';
    return n;
}

static void http_req_free(struct http_req *h)
{
    if (!h)
        return;
    if (h->easy)
        curl_easy_cleanup(h->easy);
    /* The Authorization header holds the p2p secret. */
    for (struct curl_slist *l = h->headers; l; l = l->next)
        sodium_memzero(l->data, strlen(l->data));
    curl_slist_free_all(h->headers);
    free(h->body);
    free(h);
}

/* A request to the discovery API; |body| is taken (may be NULL). */
static struct http_req *http_req_new(relay_services *s, const char *method, const char *url,
                                     char *body, long timeout_ms)
{
    struct http_req *h = calloc(1, sizeof(*h));
    if (!h) {
        free(body);
        return NULL;
    }
    h->body = body;
    h->easy = curl_easy_init();
    size_t alen = strlen(s->cfg->p2p_secret) + 32;
    char *auth = malloc(alen);
    if (!h->easy || !auth) {
        free(auth);
        http_req_free(h);
        return NULL;
    }
    snprintf(auth, alen, "Authorization: Bearer %s", s->cfg->p2p_secret);
    struct curl_slist *l = curl_slist_append(NULL, auth);
    sodium_memzero(auth, alen);
    free(auth);
    if (l)
        h->headers = l;
    if (l && body)
        l = curl_slist_append(h->headers, "Content-Type: application/json");
    if (!l) {
        http_req_free(h);
        return NULL;
    }
    curl_easy_setopt(h->easy, CURLOPT_URL, url);
    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->headers);
    if (body)
        curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000L);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
    curl_easy_setopt(h->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    return h;
}

/* The entry this relay registers: {id, peer_id, addrs}. */
static char *entry_json(const relay_services *s)
{
    json_t *o = json_object(), *a = json_array();
    char *text = NULL;
    if (!o || !a) {
        json_decref(o);
        json_decref(a);
        return NULL;
    }
    for (size_t i = 0; i < s->n_addrs; i++)
        json_array_append_new(a, json_string(s->addrs[i]));
    json_object_set_new(o, "id", json_string(s->cfg->id));
    json_object_set_new(o, "peer_id", json_string(s->peer_id));
    json_object_set_new(o, "addrs", a);
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

static void schedule_registration(relay_services *s, double delay)
{
    ev_timer_stop(s->loop, &s->reg_timer);
    ev_timer_set(&s->reg_timer, delay, 0.);
    ev_timer_start(s->loop, &s->reg_timer);
}

/* The API may say how long a registration lives ({"ttl": seconds}); we refresh at a third. */
static unsigned interval_from_reply(const relay_services *s, const char *body)
{
    unsigned interval = s->cfg->register_interval_s ? s->cfg->register_interval_s : 10;
    json_t *o = json_loads(body, 0, NULL);
    json_t *ttl = o ? json_object_get(o, "ttl") : NULL;
    if (json_is_integer(ttl) && json_integer_value(ttl) >= 3 &&
        json_integer_value(ttl) / 3 < (json_int_t)interval)
        interval = (unsigned)(json_integer_value(ttl) / 3);
    json_decref(o);
    return interval;
}

static void registration_done(relay_services *s, CURLcode rc)
{
    struct http_req *h = s->reg;
    long status = 0;
    s->reg = NULL;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        s->stats.registrations_ok++;
        s->reg_backoff = 0;
        if (!s->reg_ok_before)
            pos_log_info("registered with the discovery API at %s", s->cfg->api_url);
        s->reg_ok_before = 1;
        s->reg_interval_s = interval_from_reply(s, h->resp);
        schedule_registration(s, s->reg_interval_s);
    } else {
        s->stats.registrations_failed++;
        s->reg_backoff = s->reg_backoff ? s->reg_backoff * 2 : 0.5;
        if (s->reg_backoff > REGISTER_BACKOFF_MAX)
            s->reg_backoff = REGISTER_BACKOFF_MAX;
        if (s->reg_ok_before || s->stats.registrations_failed == 1) {
            if (rc != CURLE_OK)
                pos_log_warn("cannot register with the discovery API at %s: %s; retrying",
                             s->cfg->api_url, curl_easy_strerror(rc));
            else
                pos_log_warn("the discovery API at %s refused the registration (HTTP %ld%s); "
                             "retrying",
                             s->cfg->api_url, status,
                             status == 401 || status == 403 ? ": check p2p_secret" : "");
        }
        s->reg_ok_before = 0;
        schedule_registration(s, s->reg_backoff);
    }
    curl_multi_remove_handle(s->multi, h->easy);
    http_req_free(h);
}

static void check_multi_done(relay_services *s)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct http_req *h = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        CURLcode rc = msg->data.result;
        if (h && h == s->reg) {
            registration_done(s, rc);
        } else {
            curl_multi_remove_handle(s->multi, msg->easy_handle);
            http_req_free(h);
        }
    }
}

static void on_reg_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_services *s = w->data;
    char url[700];
    (void)loop;
    (void)revents;
    if (s->reg || s->shut_down)
        return;
    snprintf(url, sizeof(url), "%s/api/p2p/relays", s->cfg->api_url);
    char *body = entry_json(s);
    s->reg = body ? http_req_new(s, "POST", url, body, HTTP_TIMEOUT_MS) : NULL;
    if (!s->reg || curl_multi_add_handle(s->multi, s->reg->easy) != CURLM_OK) {
        http_req_free(s->reg);
        s->reg = NULL;
        schedule_registration(s, 1.0);
    }
}

static int registration_start(relay_services *s)
{
    s->multi = curl_multi_init();
    if (!s->multi)
        return -1;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    if (s->cfg->api_url[0])
        schedule_registration(s, 0.);
    return 0;
}

/* ---- life cycle ---- */

relay_services *relay_services_new(struct ev_loop *loop, const relay_config *cfg,
                                   const relay_services_callbacks *cbs,
                                   const char (*announce)[POS_ADDR_STRLEN], size_t n_announce)
{
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        curl_ready = 1;
    }
    relay_services *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    if (cbs)
        s->cbs = *cbs;
    pos_identity_peer_id(&cfg->identity, s->peer_id);
    const char(*src)[POS_ADDR_STRLEN] = cfg->n_public_addrs ? cfg->public_addrs : announce;
    size_t n = cfg->n_public_addrs ? cfg->n_public_addrs : n_announce;
    for (size_t i = 0; src && i < n && i < RELAY_MAX_ADDRS; i++)
        snprintf(s->addrs[s->n_addrs++], POS_ADDR_STRLEN, "%s", src[i]);
    s->reg_interval_s = cfg->register_interval_s ? cfg->register_interval_s : 10;

    ev_timer_init(&s->refresh, on_refresh, REFRESH_INTERVAL, REFRESH_INTERVAL);
    s->refresh.data = s;
    ev_timer_init(&s->curl_timer, on_curl_timer, 0., 0.);
    s->curl_timer.data = s;
    ev_timer_init(&s->reg_timer, on_reg_timer, 0., 0.);
    s->reg_timer.data = s;
    ev_timer_init(&s->usage_timer, on_usage_timer, RELAY_USAGE_FLUSH_S, RELAY_USAGE_FLUSH_S);
    s->usage_timer.data = s;

    s->redis = pos_redis_async_new(loop, &cfg->redis, REDIS_TIMEOUT_MS, on_redis_state, s);
    if (!s->redis)
        goto fail;
    s->sc_rate = pos_redis_async_script_add(s->redis, lua_rate);
    s->sc_admit = pos_redis_async_script_add(s->redis, lua_admit);
    s->sc_refresh = pos_redis_async_script_add(s->redis, lua_refresh_conns);
    s->sc_del_if = pos_redis_async_script_add(s->redis, lua_del_if);
    s->sc_lease = pos_redis_async_script_add(s->redis, lua_lease);
    s->sc_usage = pos_redis_async_script_add(s->redis, lua_usage);
    s->sc_lookup = pos_redis_async_script_add(s->redis, lua_presence_lookup);
    s->sc_presence_keep = pos_redis_async_script_add(s->redis, lua_presence_keep);
    if (s->sc_lease < 0 || s->sc_usage < 0)
        goto fail;
    char channel[RELAY_KEY_LEN];
    relay_key_fixed(cfg->redis_prefix, channel, sizeof(channel), RELAY_CHANNEL_REVOKED);
    if (pos_redis_async_subscribe(s->redis, channel, on_revocation, s) != 0 ||
        registration_start(s) != 0)
        goto fail;
    ev_timer_start(loop, &s->refresh);
    ev_timer_start(loop, &s->usage_timer);
    return s;
fail:
    relay_services_del(s);
    return NULL;
}

int relay_services_redis_ok(const relay_services *s)
{
    return pos_redis_async_up(s->redis);
}

void relay_services_stats_get(const relay_services *s, relay_services_stats *out)
{
    pos_redis_async_stats rs;
    pos_redis_async_stats_get(s->redis, &rs);
    *out = s->stats;
    out->redis_errors = rs.errors + s->redis_reply_errors;
}

/* Blocking DELETE of our entry, bounded by |timeout_ms| (only at shutdown). */
static void deregister(relay_services *s, long timeout_ms)
{
    char url[700];
    snprintf(url, sizeof(url), "%s/api/p2p/relays/%s", s->cfg->api_url, s->cfg->id);
    struct http_req *h = http_req_new(s, "DELETE", url, NULL, timeout_ms);
    if (!h)
        return;
    CURLcode rc = curl_easy_perform(h->easy);
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        pos_log_warn("could not deregister from the discovery API: %s", curl_easy_strerror(rc));
    else if (status >= 300 && status != 404)
        pos_log_warn("the discovery API refused the deregistration (HTTP %ld)", status);
    else
        pos_log_info("deregistered from the discovery API");
    http_req_free(h);
}

/*
 * Appends to |r|'s pipeline the usage of every account not yet in Redis,
 * circuit time rounded to the nearest second. Returns the number of commands.
 */
static int usage_append_final(relay_services *s, pos_redis *r, uint64_t *lost_bytes)
{
    int sent = 0;
    char key[RELAY_KEY_LEN];
    usage_collect(s);
    for (size_t i = 0; i < s->accounts.nb; i++) {
        struct node *n = s->accounts.b[i], *next;
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
        usage_append_final(s, NULL, &lost);
        if (lost)
            pos_log_warn("Redis unreachable at shutdown: usage of %llu relayed bytes not saved",
                         (unsigned long long)lost);
        return;
    }
    pos_redis_init(&r, &s->cfg->redis, s->cfg->redis_prefix, timeout_ms);
    if (!pos_redis_connect_now(&r)) {
        usage_append_final(s, NULL, &lost);
        if (lost)
            pos_log_warn("Redis unreachable at shutdown: usage of %llu relayed bytes not saved",
                         (unsigned long long)lost);
        pos_redis_free(&r);
        return;
    }
    int sent = usage_append_final(s, &r, &lost);
    char key[RELAY_KEY_LEN], m[96];
    MAP_FOREACH(&s->presence, p)
    {
        relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), p->key);
        if (redisAppendCommand(r.ctx, "EVAL %s 1 %s %s", lua_del_if, key, s->cfg->id) == REDIS_OK)
            sent++;
    }
    MAP_FOREACH(&s->tokconns, n)
    {
        const struct tokconn *t = (const struct tokconn *)n;
        relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), n->key);
        for (uint32_t i = 0; i < t->nmembers; i++) {
            member_name(s, t->members[i], m, sizeof(m));
            if (redisAppendCommand(r.ctx, "ZREM %s %s", key, m) == REDIS_OK)
                sent++;
        }
    }
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
    ev_timer_stop(s->loop, &s->reg_timer);
    ev_timer_stop(s->loop, &s->usage_timer);
    if (s->reg) {
        curl_multi_remove_handle(s->multi, s->reg->easy);
        http_req_free(s->reg);
        s->reg = NULL;
    }
    uint64_t start = pos_now_ms();
    if (timeout_ms < 100)
        timeout_ms = 100;
    if (s->cfg->api_url[0])
        deregister(s, timeout_ms * 2 / 3);
    drop_redis_state(s, timeout_ms - (int)(pos_now_ms() - start));
    map_clear(&s->presence);
}

void relay_services_del(relay_services *s)
{
    if (!s)
        return;
    ev_timer_stop(s->loop, &s->refresh);
    ev_timer_stop(s->loop, &s->reg_timer);
    ev_timer_stop(s->loop, &s->curl_timer);
    ev_timer_stop(s->loop, &s->usage_timer);
    if (s->reg) {
        curl_multi_remove_handle(s->multi, s->reg->easy);
        http_req_free(s->reg);
    }
    if (s->multi)
        curl_multi_cleanup(s->multi); /* removes the remaining sockets through curl_socket_cb */
    s->deleting = 1;
    pos_redis_async_del(s->redis); /* no Redis callback runs after this */
    while (s->lookups)
        lookup_unlink_free(s->lookups);
    while (s->checks)
        check_unlink_free(s->checks);
    while (s->revals)
        revalidation_free(s, s->revals);
    map_clear(&s->cache);
    MAP_FOREACH(&s->tokconns, n)
    free(((struct tokconn *)n)->members);
    map_clear(&s->tokconns);
    map_clear(&s->presence);
    MAP_FOREACH(&s->budgets, n)
    ev_timer_stop(s->loop, &((struct budget *)n)->retry);
    map_clear(&s->budgets); /* a budget still referenced must not be used after this */
    map_clear(&s->accounts);
    while (s->usage_inflight) {
        struct usage_batch *u = s->usage_inflight;
        usage_batch_unlink(s, u);
        free(u);
    }
    free(s->budgets.b);
    free(s->accounts.b);
    free(s->cache.b);
    free(s->tokconns.b);
    free(s->presence.b);
    free(s);
}
