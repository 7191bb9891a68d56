/*
 * Token auth (see auth.h): connection-attempt rate limits, the token check
 * with a short local cache, admission against the token's connection cap,
 * revocations. Key names are in relay_keys.h, the layout in
 * docs/redis-layout.md; the policy (what a token record decides) is in
 * admission.c, the record's fields in token_record.c.
 *
 * State, all bounded by what the QUIC side asks for:
 *   checks    pending verdicts (one per rate check or token check)
 *   cache     token hash -> what Redis said about it, for CACHE_TTL seconds
 *   tokconns  token hash -> connections accepted here and their members in
 *             the token's Redis connection set
 *   revals    token re-reads waiting for Redis (missed revocations)
 */
#include "auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admission.h"
#include "log.h"
#include "auth_lua.h"
#include "relay_keys.h"
#include "secret.h"
#include "strmap.h"
#include "token_record.h"

#define CACHE_TTL 3.0             /* seconds a token lookup is trusted */
#define CACHE_MAX 20000           /* entries; beyond it stale ones are dropped */
#define CONN_TTL_MS 30000         /* a crashed relay's connections count this long */
#define PARKED_CONN_TTL_MS 150000 /* a parked client's member: written once a minute */
#define PARKED_REFRESH_EVERY 12   /* refreshes (5 s) between two writes of parked members */
#define MAX_TOKEN_LEN 1024
#define REFRESH_CHUNK 30         /* members per connection-set refresh call */
#define MAX_PENDING_CHECKS 20000 /* beyond: refused at once as unavailable (overload) */

struct cache_entry {
    struct strmap_node n;   /* key: token hash */
    relay_token_record rec; /* what Redis said (revoked also set by a revocation) */
    relay_limits limits;    /* what |rec| allows here */
    ev_tstamp fetched;
};

struct tokconn {
    struct strmap_node n; /* key: token hash */
    uint32_t count;       /* connections accepted here and not released */
    uint32_t nmembers, cap;
    uint64_t *members; /* our members in the token's Redis connection set */
    uint32_t nparked;  /* of which the last |nparked| are parked clients' (longer TTL) */
    uint32_t parked;   /* of |count|: parked clients (their token re-read once a minute) */
    /* where the next refresh step starts, among the live members and among the parked */
    uint32_t live_cur, parked_cur;
};

enum check_kind { CHECK_ADDR, CHECK_AUTH };

struct check {
    struct check *prev, *next;
    relay_auth_svc *s;
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

struct revalidation;

struct relay_auth_svc {
    struct ev_loop *loop;
    const relay_config *cfg;
    relay_services_callbacks cbs;
    pos_redis_async *redis;
    int sc_rate, sc_admit, sc_refresh;
    uint64_t redis_reply_errors;
    struct check *checks;
    size_t n_checks;
    struct revalidation *revals; /* token re-reads waiting for Redis */
    uint64_t next_handle, next_member;
    struct strmap cache, tokconns;
    int shut_down;
    unsigned refreshes; /* refresh rounds: tokens of parked clients only, every 12th */
};

/* ---- checks: life cycle and delivery ---- */

static void check_unlink_free(struct check *c)
{
    relay_auth_svc *s = c->s;
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

static struct check *check_new(relay_auth_svc *s, enum check_kind kind, relay_auth_cb cb, void *arg)
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

static void note_redis_error(relay_auth_svc *s, const redisReply *rep)
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

uint64_t relay_auth_svc_rate_check_addr(relay_auth_svc *s, const struct sockaddr *from,
                                        relay_auth_cb cb, void *arg)
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

/* Makes room in the cache: stale entries go first, everything if that is not enough. */
static void cache_trim(relay_auth_svc *s)
{
    if (s->cache.n < CACHE_MAX)
        return;
    ev_tstamp now = ev_now(s->loop);
    for (size_t i = 0; i < s->cache.nb; i++) {
        for (struct strmap_node **p = &s->cache.b[i]; *p;) {
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
        strmap_clear(&s->cache);
}

/* Records what Redis said about |hash| (|h| the HGETALL reply). Returns the entry or NULL. */
static struct cache_entry *cache_store(relay_auth_svc *s, const char *hash, const redisReply *h)
{
    struct cache_entry *e = (struct cache_entry *)strmap_get(&s->cache, hash);
    if (!e) {
        cache_trim(s);
        e = calloc(1, sizeof(*e));
        if (!e)
            return NULL;
        snprintf(e->n.key, sizeof(e->n.key), "%s", hash);
        if (strmap_put(&s->cache, &e->n) != 0) {
            free(e);
            return NULL;
        }
    }
    e->fetched = ev_now(s->loop);
    relay_token_record_parse(h, &e->rec);
    relay_admission_limits(&e->rec, s->cfg->max_conns_per_token, &e->limits);
    return e;
}

/* ---- admission (token bucket + connection cap) ---- */

static struct tokconn *tokconn_get(relay_auth_svc *s, const char *hash, int create)
{
    struct tokconn *t = (struct tokconn *)strmap_get(&s->tokconns, hash);
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    snprintf(t->n.key, sizeof(t->n.key), "%s", hash);
    if (strmap_put(&s->tokconns, &t->n) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

static void member_name(const relay_auth_svc *s, uint64_t member, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s:%llu", s->cfg->id, (unsigned long long)member);
}

static void zrem_member(relay_auth_svc *s, const char *hash, uint64_t member)
{
    char key[RELAY_KEY_LEN], m[96];
    relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), hash);
    member_name(s, member, m, sizeof(m));
    const char *argv[] = {"ZREM", key, m};
    pos_redis_async_commandv(s->redis, NULL, NULL, 3, argv, NULL);
}

/* Counts an accepted connection of |hash| here; returns -1 when out of memory. */
static int tokconn_add(relay_auth_svc *s, const char *hash, uint64_t member)
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
    relay_auth_svc *s = c->s;
    c->waiting = 0;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        note_redis_error(s, rep);
        deliver(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    enum relay_refusal v = relay_admission_script_verdict(rep->integer);
    if (v != RELAY_OK) {
        deliver(c, v);
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

static void admit(relay_auth_svc *s, struct check *c)
{
    char bucket[RELAY_KEY_LEN], conns[RELAY_KEY_LEN], rate[16], burst[16], max[16], ttl[16],
        member[96];
    if (s->cfg->conn_rate_per_token == 0 && c->limits.max_conns == 0) {
        /*
         * No token bucket and no cap: the script would write nothing and
         * answer 1, so no round trip per connection (Redis down still refuses).
         */
        c->member = 0;
        deliver(c, pos_redis_async_up(s->redis) && tokconn_add(s, c->hash, 0) == 0
                       ? RELAY_OK
                       : RELAY_REFUSED_UNAVAILABLE);
        return;
    }
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

static void judge(relay_auth_svc *s, struct check *c, const struct cache_entry *e)
{
    enum relay_refusal v = relay_admission_verdict(&e->rec, (int64_t)time(NULL));
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
    relay_auth_svc *s = c->s;
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
        e->rec.revoked = 1;
    judge(s, c, e);
}

uint64_t relay_auth_svc_check(relay_auth_svc *s, const char *token, size_t len, relay_auth_cb cb,
                              void *arg)
{
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
    struct cache_entry *e = (struct cache_entry *)strmap_get(&s->cache, c->hash);
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

void relay_auth_svc_cancel(relay_auth_svc *s, uint64_t handle)
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
            relay_auth_svc_release(s, c->hash);
        check_unlink_free(c);
        return;
    }
}

/* tokconn_drop: one connection of |t| less; the last one frees it. */
static void tokconn_drop(relay_auth_svc *s, struct tokconn *t)
{
    if (t->count > 0)
        t->count--;
    if (t->count == 0) {
        strmap_remove(&s->tokconns, &t->n);
        free(t->members);
        free(t);
    }
}

void relay_auth_svc_release(relay_auth_svc *s, const char *token_id)
{
    if (!token_id)
        return;
    struct tokconn *t = tokconn_get(s, token_id, 0);
    if (!t)
        return;
    if (t->nmembers > t->nparked) {
        /* the last awake member goes; the last parked one takes its place */
        uint32_t a = t->nmembers - t->nparked - 1;
        zrem_member(s, token_id, t->members[a]);
        t->members[a] = t->members[t->nmembers - 1];
        t->nmembers--;
    }
    tokconn_drop(s, t);
}

/* ---- revocation ---- */

static void revoke_hash(relay_auth_svc *s, const char *hash)
{
    struct cache_entry *e = (struct cache_entry *)strmap_get(&s->cache, hash);
    if (e) {
        e->rec.revoked = 1;
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

static void revalidate(relay_auth_svc *s);
static void revalidate_some(relay_auth_svc *s, int all);

static void on_revocation(void *arg, const char *channel, const char *msg, size_t len)
{
    relay_auth_svc *s = arg;
    (void)channel;
    if (!msg) {
        /* (Re)subscribed: anything published while we were away is unknown. */
        strmap_clear(&s->cache);
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
    relay_auth_svc *s;
    char hash[POS_SECRET_HASH_HEXLEN];
};

static void revalidation_free(relay_auth_svc *s, struct revalidation *v)
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
    relay_auth_svc *s = v->s;
    char hash[POS_SECRET_HASH_HEXLEN];
    memcpy(hash, v->hash, sizeof(hash));
    revalidation_free(s, v);
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        relay_token_record rec;
        relay_token_record_parse(rep, &rec);
        if (rec.revoked)
            revoke_hash(s, hash);
    }
}

/* Re-reads every token with connections here (missed revocations). */
static void revalidate(relay_auth_svc *s)
{
    revalidate_some(s, 1);
}

/*
 * revalidate_some: like revalidate; without |all|, tokens held here only by
 * parked clients are left for the once-a-minute round.
 */
static void revalidate_some(relay_auth_svc *s, int all)
{
    STRMAP_FOREACH(&s->tokconns, n)
    {
        char key[RELAY_KEY_LEN];
        const struct tokconn *t = (const struct tokconn *)n;
        if (!all && t->parked >= t->count)
            continue;
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

/* refresh_members: members [from, to) of |t| expire |ttl_ms| from now (chunks of 30). */
static void refresh_members(relay_auth_svc *s, const struct tokconn *t, uint32_t from, uint32_t to,
                            int ttl_ms)
{
    char key[RELAY_KEY_LEN], ttl[16], names[REFRESH_CHUNK][96];
    const char *argv[REFRESH_CHUNK + 2];
    relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), t->n.key);
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    argv[0] = key;
    argv[1] = ttl;
    for (uint32_t i = from; i < to; i += REFRESH_CHUNK) {
        int n = 0;
        for (uint32_t j = i; j < to && n < REFRESH_CHUNK; j++, n++) {
            member_name(s, t->members[j], names[n], sizeof(names[n]));
            argv[2 + n] = names[n];
        }
        pos_redis_async_eval(s->redis, s->sc_refresh, 1, 2 + n, argv, NULL, NULL, NULL);
    }
}

/*
 * refresh_share: the next ceil(|len| / |shares|) of the |len| members from
 * |base| on, from |*cur| on, wrapping; |*cur| moves past them. Over |shares|
 * calls every member is refreshed once: a member moved by a removal (the
 * last one takes the removed one's place) may wait one round more, well
 * within its TTL (6 rounds for live members, 2.5 for parked ones).
 */
static void refresh_share(relay_auth_svc *s, const struct tokconn *t, uint32_t base, uint32_t len,
                          uint32_t *cur, unsigned shares, int ttl_ms)
{
    if (len == 0) {
        *cur = 0;
        return;
    }
    uint32_t n = (uint32_t)(((uint64_t)len + shares - 1) / shares), from = *cur < len ? *cur : 0;
    uint32_t first = n < len - from ? n : len - from;
    refresh_members(s, t, base + from, base + from + first, ttl_ms);
    if (first < n)
        refresh_members(s, t, base, base + (n - first), ttl_ms); /* wrapped */
    *cur = (uint32_t)(((uint64_t)from + n) % len);
}

void relay_auth_svc_refresh_step(relay_auth_svc *s, unsigned step, unsigned steps)
{
    STRMAP_FOREACH(&s->tokconns, n)
    {
        struct tokconn *t = (struct tokconn *)n;
        uint32_t live = t->nmembers - t->nparked;
        refresh_share(s, t, 0, live, &t->live_cur, steps, CONN_TTL_MS);
        refresh_share(s, t, live, t->nparked, &t->parked_cur, steps * PARKED_REFRESH_EVERY,
                      PARKED_CONN_TTL_MS);
    }
    if (step == 0) /* tokens held here only by parked clients: once a minute */
        revalidate_some(s, s->refreshes++ % PARKED_REFRESH_EVERY == 0);
}

void relay_auth_svc_refresh(relay_auth_svc *s)
{
    STRMAP_FOREACH(&s->tokconns, n)
    {
        const struct tokconn *t = (const struct tokconn *)n;
        refresh_members(s, t, 0, t->nmembers - t->nparked, CONN_TTL_MS);
        refresh_members(s, t, t->nmembers - t->nparked, t->nmembers, PARKED_CONN_TTL_MS);
    }
    revalidate(s);
}

void relay_auth_svc_park(relay_auth_svc *s, const char *token_id, int parked)
{
    struct tokconn *t = token_id ? tokconn_get(s, token_id, 0) : NULL;
    if (!t)
        return;
    if (parked && t->parked < t->count)
        t->parked++;
    else if (!parked && t->parked > 0)
        t->parked--;
    if (parked && t->nparked < t->nmembers) {
        t->nparked++; /* the last awake member is a parked one now: its longer TTL at once */
        refresh_members(s, t, t->nmembers - t->nparked, t->nmembers - t->nparked + 1,
                        PARKED_CONN_TTL_MS);
    } else if (!parked && t->nparked > 0) {
        t->nparked--; /* back among the live ones, refreshed with them from the next refresh */
    }
}

void relay_auth_svc_release_parked(relay_auth_svc *s, const char *token_id)
{
    struct tokconn *t = token_id ? tokconn_get(s, token_id, 0) : NULL;
    if (!t)
        return;
    if (t->parked > 0)
        t->parked--;
    if (t->nparked > 0) { /* members are interchangeable: the last one is a parked one */
        t->nparked--;
        t->nmembers--;
        zrem_member(s, token_id, t->members[t->nmembers]);
    }
    tokconn_drop(s, t);
}

relay_auth_svc *relay_auth_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                   pos_redis_async *redis, const relay_services_callbacks *cbs)
{
    relay_auth_svc *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->redis = redis;
    if (cbs)
        s->cbs = *cbs;
    s->sc_rate = pos_redis_async_script_add(redis, lua_rate);
    s->sc_admit = pos_redis_async_script_add(redis, lua_admit);
    s->sc_refresh = pos_redis_async_script_add(redis, lua_refresh_conns);
    char channel[RELAY_KEY_LEN];
    relay_key_fixed(cfg->redis_prefix, channel, sizeof(channel), RELAY_CHANNEL_REVOKED);
    if (pos_redis_async_subscribe(redis, channel, on_revocation, s) != 0) {
        relay_auth_svc_del(s);
        return NULL;
    }
    return s;
}

void relay_auth_svc_shutdown(relay_auth_svc *s)
{
    s->shut_down = 1;
}

int relay_auth_svc_append_final(relay_auth_svc *s, pos_redis *r)
{
    char key[RELAY_KEY_LEN], m[96];
    int sent = 0;
    STRMAP_FOREACH(&s->tokconns, n)
    {
        const struct tokconn *t = (const struct tokconn *)n;
        relay_key_conns(s->cfg->redis_prefix, key, sizeof(key), n->key);
        for (uint32_t i = 0; i < t->nmembers; i++) {
            member_name(s, t->members[i], m, sizeof(m));
            if (redisAppendCommand(r->ctx, "ZREM %s %s", key, m) == REDIS_OK)
                sent++;
        }
    }
    return sent;
}

uint64_t relay_auth_svc_reply_errors(const relay_auth_svc *s)
{
    return s->redis_reply_errors;
}

void relay_auth_svc_del(relay_auth_svc *s)
{
    if (!s)
        return;
    while (s->checks)
        check_unlink_free(s->checks);
    while (s->revals)
        revalidation_free(s, s->revals);
    strmap_clear(&s->cache);
    STRMAP_FOREACH(&s->tokconns, n)
    free(((struct tokconn *)n)->members);
    strmap_clear(&s->tokconns);
    strmap_free(&s->cache);
    strmap_free(&s->tokconns);
    free(s);
}
