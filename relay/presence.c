/*
 * Presence (see presence.h): the peers whose home connection is here, kept
 * in Redis with a short TTL that a 5 s refresh (services.c) extends, and the
 * lookup of the relay holding a peer. Key names in relay_keys.h, layout in
 * docs/redis-layout.md.
 */
#include "presence.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "relay_keys.h"
#include "strmap.h"

#define PRESENCE_TTL_S 15
/* keys per refresh call (pos_redis_async_eval takes 32 arguments): Redis takes 50,000 keys in
 * ~120 ms this way, ~200 ms one call each */
#define PRESENCE_CHUNK 30
/* a parked client's key is written once a minute (server_park.c): two writes may fail */
#define PARKED_TTL_S 150

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

/* lua_presence_keep for every key: how many were written */
static const char lua_presence_keep_many[] = "local n = 0\n"
                                             "for _, k in ipairs(KEYS) do\n"
                                             "  local v = redis.call('GET', k)\n"
                                             "  if not v or v == ARGV[1] then\n"
                                             "    redis.call('SET', k, ARGV[1], 'EX', ARGV[2])\n"
                                             "    n = n + 1\n"
                                             "  end\n"
                                             "end\n"
                                             "return n\n";

struct presence {
    struct strmap_node n; /* key: peer id */
    uint32_t count;
    uint32_t step; /* the refresh step that extends its key (relay_presence_svc_refresh_step) */
};

/* A presence lookup in flight (relay_presence_lookup); delivered from |defer| or the reply. */
struct lookup {
    struct lookup *prev, *next;
    relay_presence_svc *s;
    uint64_t handle;
    relay_presence_cb cb;
    void *arg;
    int waiting;   /* a Redis reply is due: freed then */
    int cancelled; /* the caller went away */
    ev_timer defer;
};

struct relay_presence_svc {
    struct ev_loop *loop;
    const relay_config *cfg;
    pos_redis_async *redis;
    int sc_del_if, sc_lookup, sc_keep, sc_keep_many;
    uint64_t redis_reply_errors;
    uint64_t next_handle;
    struct lookup *lookups;
    struct strmap presence; /* peer id -> its home connections here */
    uint32_t next_step;     /* the step the next new entry gets */
    int deleting, shut_down;
};

static void note_redis_error(relay_presence_svc *s, const redisReply *rep)
{
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        s->redis_reply_errors++;
        pos_log_warn("Redis error: %s", rep->str);
    }
}

static void lookup_unlink_free(struct lookup *l)
{
    relay_presence_svc *s = l->s;
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
    relay_presence_svc *s = l->s;
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

uint64_t relay_presence_svc_lookup(relay_presence_svc *s, const char *peer_id, relay_presence_cb cb,
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

void relay_presence_svc_cancel(relay_presence_svc *s, uint64_t handle)
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
static void presence_set(relay_presence_svc *s, const char *peer_id)
{
    char key[RELAY_KEY_LEN], ttl[16];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    snprintf(ttl, sizeof(ttl), "%d", PRESENCE_TTL_S);
    const char *argv[] = {"SET", key, s->cfg->id, "EX", ttl};
    pos_redis_async_commandv(s->redis, NULL, NULL, 5, argv, NULL);
}

/* presence_keep_ttl: |peer_id|'s key for |ttl_s|, never taken from another relay. */
static void presence_keep_ttl(relay_presence_svc *s, const char *peer_id, int ttl_s)
{
    char key[RELAY_KEY_LEN], ttl[16];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *argv[] = {key, s->cfg->id, ttl};
    pos_redis_async_eval(s->redis, s->sc_keep, 1, 3, argv, NULL, NULL, NULL);
}

/* presence_count: |peer_id|'s entry in the local table, one more; 0, or -1 out of memory. */
static int presence_count(relay_presence_svc *s, const char *peer_id)
{
    if (!peer_id || strlen(peer_id) >= STRMAP_KEY_MAX)
        return -1;
    struct presence *p = (struct presence *)strmap_get(&s->presence, peer_id);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return -1;
        snprintf(p->n.key, sizeof(p->n.key), "%s", peer_id);
        p->step = s->next_step++ % RELAY_PRESENCE_STEPS;
        if (strmap_put(&s->presence, &p->n) != 0) {
            free(p);
            return -1;
        }
    }
    p->count++;
    return 0;
}

void relay_presence_svc_add(relay_presence_svc *s, const char *peer_id)
{
    if (presence_count(s, peer_id) == 0)
        presence_set(s, peer_id);
}

void relay_presence_svc_hold(relay_presence_svc *s, const char *peer_id)
{
    presence_count(s, peer_id); /* no write: the key is there; the final clean-up deletes it */
}

void relay_presence_svc_remove(relay_presence_svc *s, const char *peer_id)
{
    if (!peer_id)
        return;
    struct presence *p = (struct presence *)strmap_get(&s->presence, peer_id);
    if (!p || --p->count > 0)
        return;
    strmap_remove(&s->presence, &p->n);
    free(p);
    char key[RELAY_KEY_LEN];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    /* Only our own mapping: the peer may already be on another relay. */
    const char *argv[] = {key, s->cfg->id};
    pos_redis_async_eval(s->redis, s->sc_del_if, 1, 2, argv, NULL, NULL, NULL);
}

/* del_if_ours: compare-and-delete, the peer may already be on another relay. */
static void del_if_ours(relay_presence_svc *s, const char *peer_id)
{
    char key[RELAY_KEY_LEN];
    relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), peer_id);
    const char *argv[] = {key, s->cfg->id};
    pos_redis_async_eval(s->redis, s->sc_del_if, 1, 2, argv, NULL, NULL, NULL);
}

void relay_presence_svc_park(relay_presence_svc *s, const char *peer_id)
{
    struct presence *p = (struct presence *)strmap_get(&s->presence, peer_id);
    if (p && --p->count == 0) {
        strmap_remove(&s->presence, &p->n); /* no DEL: the key stays, under the parked TTL */
        free(p);
    }
    relay_presence_svc_keep_parked(s, peer_id);
}

void relay_presence_svc_keep_parked(relay_presence_svc *s, const char *peer_id)
{
    if (!strmap_get(&s->presence, peer_id)) /* else the 5 s refresh of a live home keeps it */
        presence_keep_ttl(s, peer_id, PARKED_TTL_S);
}

void relay_presence_svc_keep_parked_many(relay_presence_svc *s,
                                         const char (*peer_ids)[POS_PEER_ID_STRLEN], unsigned n)
{
    char keys[RELAY_PRESENCE_BATCH][RELAY_KEY_LEN], ttl[16];
    const char *argv[RELAY_PRESENCE_BATCH + 2];
    int nk = 0;

    for (unsigned i = 0; i < n && i < RELAY_PRESENCE_BATCH; i++) {
        if (strmap_get(&s->presence, peer_ids[i])) /* the 5 s refresh of a live home keeps it */
            continue;
        int kl = relay_key_presence(s->cfg->redis_prefix, keys[nk], sizeof(keys[nk]), peer_ids[i]);
        if (kl < 0 || (size_t)kl >= sizeof(keys[nk]))
            continue;
        argv[nk] = keys[nk];
        nk++;
    }
    if (nk == 0)
        return;
    snprintf(ttl, sizeof(ttl), "%d", PARKED_TTL_S);
    argv[nk] = s->cfg->id;
    argv[nk + 1] = ttl;
    pos_redis_async_eval(s->redis, s->sc_keep_many, nk, nk + 2, argv, NULL, NULL, NULL);
}

void relay_presence_svc_unpark(relay_presence_svc *s, const char *peer_id)
{
    if (!strmap_get(&s->presence, peer_id))
        del_if_ours(s, peer_id);
}

/* keep_chunk: lua_presence_keep_many for the |n| keys in |keys|, under the live TTL. */
static void keep_chunk(relay_presence_svc *s, char (*keys)[RELAY_KEY_LEN], int n)
{
    const char *argv[PRESENCE_CHUNK + 2];
    char ttl[16];
    if (n == 0)
        return;
    for (int i = 0; i < n; i++)
        argv[i] = keys[i];
    snprintf(ttl, sizeof(ttl), "%d", PRESENCE_TTL_S);
    argv[n] = s->cfg->id;
    argv[n + 1] = ttl;
    pos_redis_async_eval(s->redis, s->sc_keep_many, n, n + 2, argv, NULL, NULL, NULL);
}

/* refresh_where: the keys of the entries of |step| (all of them when -1), PRESENCE_CHUNK a call */
static void refresh_where(relay_presence_svc *s, int64_t step)
{
    char keys[PRESENCE_CHUNK][RELAY_KEY_LEN];
    int n = 0;
    STRMAP_FOREACH(&s->presence, node)
    {
        const struct presence *p = (const struct presence *)node;
        if (step >= 0 && p->step != (uint32_t)step)
            continue;
        int kl = relay_key_presence(s->cfg->redis_prefix, keys[n], sizeof(keys[n]), p->n.key);
        if (kl < 0 || (size_t)kl >= sizeof(keys[n]))
            continue;
        if (++n == PRESENCE_CHUNK) {
            keep_chunk(s, keys, n);
            n = 0;
        }
    }
    keep_chunk(s, keys, n);
}

void relay_presence_svc_refresh(relay_presence_svc *s)
{
    refresh_where(s, -1);
}

void relay_presence_svc_refresh_step(relay_presence_svc *s, unsigned step)
{
    refresh_where(s, step % RELAY_PRESENCE_STEPS);
}

relay_presence_svc *relay_presence_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                           pos_redis_async *redis)
{
    relay_presence_svc *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->redis = redis;
    s->sc_del_if = pos_redis_async_script_add(redis, lua_del_if);
    s->sc_lookup = pos_redis_async_script_add(redis, lua_presence_lookup);
    s->sc_keep = pos_redis_async_script_add(redis, lua_presence_keep);
    s->sc_keep_many = pos_redis_async_script_add(redis, lua_presence_keep_many);
    return s;
}

void relay_presence_svc_shutdown(relay_presence_svc *s)
{
    s->shut_down = 1;
}

int relay_presence_svc_append_final(relay_presence_svc *s, pos_redis *r)
{
    char key[RELAY_KEY_LEN];
    int sent = 0;
    STRMAP_FOREACH(&s->presence, p)
    {
        relay_key_presence(s->cfg->redis_prefix, key, sizeof(key), p->key);
        if (redisAppendCommand(r->ctx, "EVAL %s 1 %s %s", lua_del_if, key, s->cfg->id) == REDIS_OK)
            sent++;
    }
    return sent;
}

void relay_presence_svc_forget(relay_presence_svc *s)
{
    strmap_clear(&s->presence);
}

uint64_t relay_presence_svc_reply_errors(const relay_presence_svc *s)
{
    return s->redis_reply_errors;
}

void relay_presence_svc_detach(relay_presence_svc *s)
{
    if (s)
        s->deleting = 1;
}

void relay_presence_svc_del(relay_presence_svc *s)
{
    if (!s)
        return;
    while (s->lookups)
        lookup_unlink_free(s->lookups);
    strmap_clear(&s->presence);
    strmap_free(&s->presence);
    free(s);
}
