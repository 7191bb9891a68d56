/* The relay list in Redis (see store.h for the layout). */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* KEYS: relay key, sorted set. ARGV: entry JSON, TTL ms, expiry unix ms, id. */
static const char register_lua[] = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
                                   "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])\n"
                                   "return 1\n";

/* KEYS: relay key, sorted set. ARGV: id. */
static const char remove_lua[] = "redis.call('DEL', KEYS[1])\n"
                                 "return redis.call('ZREM', KEYS[2], ARGV[1])\n";

enum { KEY_MAX = 192 };

static long long unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void relay_key(const pos_store *s, const char *id, char out[KEY_MAX])
{
    pos_redis_key(s->redis.prefix, out, KEY_MAX, "relay:%s", id);
}

static void set_key(const pos_store *s, char out[KEY_MAX])
{
    pos_redis_key(s->redis.prefix, out, KEY_MAX, "relays");
}

/*
 * reply_failed says whether |rep| is a failure (no reply, or an error or a
 * reply not of |type|) and writes the sentence. It frees a failed reply.
 */
static int reply_failed(pos_store *s, redisReply *rep, int type, const char *what, char *err,
                        size_t errlen)
{
    if (!rep) {
        snprintf(err, errlen, "Redis is unavailable (%s)", s->redis.last_error);
        return 1;
    }
    if (rep->type == type)
        return 0;
    if (rep->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "Redis refused to %s: %s", what, rep->str);
    else
        snprintf(err, errlen, "Redis gave an unexpected reply to %s", what);
    freeReplyObject(rep);
    return 1;
}

void pos_store_init(pos_store *s, const pos_redis_target *t, const char *prefix, unsigned ttl_s,
                    unsigned spacedrive_ttl_s)
{
    memset(s, 0, sizeof(*s));
    pos_redis_init(&s->redis, t, prefix, 1000);
    s->ttl_s = ttl_s;
    s->spacedrive_ttl_s = spacedrive_ttl_s;
    s->register_script = pos_redis_script_add(&s->redis, register_lua);
    s->remove_script = pos_redis_script_add(&s->redis, remove_lua);
}

void pos_store_free(pos_store *s)
{
    pos_redis_free(&s->redis);
}

int pos_store_register(pos_store *s, const pos_entry *e, char *err, size_t errlen)
{
    char key[KEY_MAX], zkey[KEY_MAX], json[POS_ENTRY_JSON_MAX], ttl[24], expiry[24];
    /* Per registration: a pos relay's short TTL is never raised for a Spacedrive relay's sake. */
    long long ttl_ms = (long long)pos_entry_ttl_s(e, s->ttl_s, s->spacedrive_ttl_s) * 1000;

    if (pos_entry_format(e, json, sizeof(json)) < 0) {
        snprintf(err, errlen, "entry too long to store");
        return -1;
    }
    relay_key(s, e->id, key);
    set_key(s, zkey);
    snprintf(ttl, sizeof(ttl), "%lld", ttl_ms);
    snprintf(expiry, sizeof(expiry), "%lld", unix_ms() + ttl_ms);
    const char *argv[] = {key, zkey, json, ttl, expiry, e->id};
    redisReply *rep = pos_redis_eval(&s->redis, s->register_script, 2, 6, argv, NULL);
    if (reply_failed(s, rep, REDIS_REPLY_INTEGER, "register the relay", err, errlen))
        return -1;
    freeReplyObject(rep);
    return 0;
}

int pos_store_remove(pos_store *s, const char *id, char *err, size_t errlen)
{
    char key[KEY_MAX], zkey[KEY_MAX];

    relay_key(s, id, key);
    set_key(s, zkey);
    const char *argv[] = {key, zkey, id};
    redisReply *rep = pos_redis_eval(&s->redis, s->remove_script, 2, 3, argv, NULL);
    if (reply_failed(s, rep, REDIS_REPLY_INTEGER, "remove the relay", err, errlen))
        return -1;
    freeReplyObject(rep);
    return 0;
}

/* live_ids drops expired members and returns the array reply of live ids. */
static redisReply *live_ids(pos_store *s, char *err, size_t errlen)
{
    char zkey[KEY_MAX];
    long long now = unix_ms();

    set_key(s, zkey);
    redisReply *rep = pos_redis_command(&s->redis, "ZREMRANGEBYSCORE %s -inf %lld", zkey, now);
    if (reply_failed(s, rep, REDIS_REPLY_INTEGER, "drop expired relays", err, errlen))
        return NULL;
    freeReplyObject(rep);
    rep = pos_redis_command(&s->redis, "ZRANGEBYSCORE %s (%lld +inf LIMIT 0 %d", zkey, now,
                            POS_STORE_MAX_RELAYS);
    if (reply_failed(s, rep, REDIS_REPLY_ARRAY, "list relays", err, errlen))
        return NULL;
    return rep;
}

/* fetch_entries MGETs the entry of each id in |ids|. */
static redisReply *fetch_entries(pos_store *s, const redisReply *ids, char *err, size_t errlen)
{
    size_t n = ids->elements;
    const char **argv = calloc(n + 1, sizeof(*argv));
    char(*keys)[KEY_MAX] = calloc(n, sizeof(*keys));
    redisReply *rep = NULL;

    if (!argv || !keys) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING || id->len > 64)
            snprintf(keys[i], KEY_MAX, "%s", "-"); /* reads as nil, skipped */
        else
            relay_key(s, id->str, keys[i]);
        argv[i + 1] = keys[i];
    }
    rep = pos_redis_commandv(&s->redis, (int)n + 1, argv, NULL);
    if (reply_failed(s, rep, REDIS_REPLY_ARRAY, "read relay entries", err, errlen))
        rep = NULL;
out:
    free(keys);
    free(argv);
    return rep;
}

/* append_entries writes the JSON array of the valid entries in |values|. */
static int append_entries(const redisReply *values, char **body, size_t *len, size_t *count)
{
    size_t cap = values->elements * POS_ENTRY_JSON_MAX + 3, n = 0;
    char *out = malloc(cap);
    char err[POS_ERR_LEN];
    pos_entry e;

    if (!out)
        return -1;
    *count = 0;
    out[n++] = '[';
    for (size_t i = 0; i < values->elements; i++) {
        const redisReply *v = values->element[i];
        if (v->type != REDIS_REPLY_STRING) /* expired between ZRANGE and MGET */
            continue;
        if (pos_entry_parse(v->str, v->len, &e, err, sizeof(err)) != 0) {
            pos_log_warn("skipping a malformed relay entry in Redis: %s", err);
            continue;
        }
        size_t at = n + (*count ? 1 : 0);
        int k = pos_entry_format(&e, out + at, cap - at - 1);
        if (k < 0)
            continue;
        if (*count)
            out[n] = ',';
        n = at + (size_t)k;
        (*count)++;
    }
    out[n++] = ']';
    *body = out;
    *len = n;
    return 0;
}

int pos_store_list(pos_store *s, char **body, size_t *len, size_t *count, char *err, size_t errlen)
{
    redisReply *ids = live_ids(s, err, errlen);
    if (!ids)
        return -1;
    redisReply *values = ids->elements ? fetch_entries(s, ids, err, errlen) : NULL;
    int rc = -1;
    if (ids->elements && !values)
        goto out;
    static const redisReply none = {.type = REDIS_REPLY_ARRAY};
    if (append_entries(values ? values : &none, body, len, count) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    if (values)
        freeReplyObject(values);
    freeReplyObject(ids);
    return rc;
}
