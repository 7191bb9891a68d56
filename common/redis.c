/* Redis URL parsing, key prefixes and the synchronous client (see redis.h). */
#include "redis.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addr.h"

uint64_t pos_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int parse_db(const char *s, int *db)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 15)
        return -1;
    *db = (int)v;
    return 0;
}

/* A DNS name: letters, digits, '-' and '.', labels of 1-63, at most 253 in all. */
static int valid_host_name(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c == '-' && label > 0)))
            return 0;
        if (++label > 63)
            return 0;
    }
    /* An all-numeric last label is a mistyped address (999.1.1.1), not a name. */
    size_t i = n;
    while (i > 0 && h[i - 1] >= '0' && h[i - 1] <= '9')
        i--;
    return label > 0 && !(i == 0 || h[i - 1] == '.');
}

/* parse_host_name splits "name[:port]" into |t|. Returns 0 or -1. */
static int parse_host_name(const char *hp, pos_redis_target *t)
{
    const char *colon = strchr(hp, ':');
    size_t n = colon ? (size_t)(colon - hp) : strlen(hp);
    if (!valid_host_name(hp, n) || n >= sizeof(t->host))
        return -1;
    t->port = 6379;
    if (colon) {
        char *end;
        errno = 0;
        long v = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || colon[1] == '-' || colon[1] == '+' || v < 1 ||
            v > 65535)
            return -1;
        t->port = (int)v;
    }
    memcpy(t->host, hp, n);
    t->host[n] = '\0';
    return 0;
}

int pos_redis_url_parse(const char *url, pos_redis_target *t, char *err, size_t errlen)
{
    static const char expected[] = "expected redis://HOST[:PORT][/DB] (HOST a name, an IPv4 "
                                   "address or [IPv6]) or unix:///path/to/socket[?db=N] (DB 0-15)";
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        const char *q = strchr(path, '?');
        size_t plen = q ? (size_t)(q - path) : strlen(path);
        if (plen == 0 || path[0] != '/' || plen >= sizeof(t->path))
            goto bad;
        memcpy(t->path, path, plen);
        if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &t->db) != 0))
            goto bad;
        t->is_unix = 1;
        return 0;
    }
    if (strncmp(url, "redis://", 8) == 0) {
        const char *hostport = url + 8;
        const char *slash = strchr(hostport, '/');
        size_t hlen = slash ? (size_t)(slash - hostport) : strlen(hostport);
        char hp[sizeof(t->host) + 8];
        struct sockaddr_storage ss;
        if (hlen == 0 || hlen >= sizeof(hp))
            goto bad;
        memcpy(hp, hostport, hlen);
        hp[hlen] = '\0';
        if (pos_addr_parse(hp, hlen, 6379, &ss) != 0) {
            /* Not an address: a host name, resolved at each connection attempt. */
            if (parse_host_name(hp, t) != 0)
                goto bad;
            if (slash && slash[1] && parse_db(slash + 1, &t->db) != 0)
                goto bad;
            return 0;
        }
        if (slash && slash[1] && parse_db(slash + 1, &t->db) != 0)
            goto bad;
        char text[POS_ADDR_STRLEN];
        pos_addr_format((struct sockaddr *)&ss, text, sizeof(text));
        /* Split the canonical form back into host and port. */
        char *colon = strrchr(text, ':');
        *colon = '\0';
        t->port = atoi(colon + 1);
        const char *h = text;
        size_t n = strlen(text);
        if (text[0] == '[') {
            h = text + 1;
            n -= 2;
        }
        memcpy(t->host, h, n);
        t->host[n] = '\0';
        return 0;
    }
bad:
    snprintf(err, errlen, "bad Redis URL \"%s\": %s", url, expected);
    return -1;
}

void pos_redis_target_format(const pos_redis_target *t, char *out, size_t outlen)
{
    if (t->is_unix)
        snprintf(out, outlen, "unix://%s", t->path);
    else if (strchr(t->host, ':'))
        snprintf(out, outlen, "redis://[%s]:%d", t->host, t->port);
    else
        snprintf(out, outlen, "redis://%s:%d", t->host, t->port);
    if (t->db) {
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, t->is_unix ? "?db=%d" : "/%d", t->db);
    }
}

int pos_redis_key(const char *prefix, char *out, size_t outlen, const char *fmt, ...)
{
    int n = snprintf(out, outlen, "%s", prefix);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(out + n, outlen - (size_t)n, fmt, ap);
    va_end(ap);
    return n;
}

void pos_redis_init(pos_redis *r, const pos_redis_target *t, const char *prefix, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    r->target = *t;
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix ? prefix : POS_REDIS_DEFAULT_PREFIX);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
}

static void drop(pos_redis *r, const char *why)
{
    if (why)
        snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    for (int i = 0; i < r->nscripts; i++)
        r->scripts[i].sha[0] = '\0';
}

void pos_redis_free(pos_redis *r)
{
    drop(r, NULL);
}

static void backoff(pos_redis *r)
{
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
    if (r->backoff_ms > 5000)
        r->backoff_ms = 5000;
    r->next_attempt_ms = pos_now_ms() + r->backoff_ms;
}

int pos_redis_eviction_check(const char *info, size_t len, char *err, size_t errlen)
{
    static const char field[] = "maxmemory_policy:";
    const size_t flen = sizeof(field) - 1;
    size_t i = 0;

    /* INFO is lines of "key:value\r\n"; find the field at the start of a line. */
    while (i < len) {
        size_t end = i;
        while (end < len && info[end] != '\n')
            end++;
        size_t n = end - i;
        if (n > 0 && info[i + n - 1] == '\r')
            n--;
        if (n > flen && memcmp(info + i, field, flen) == 0) {
            const char *v = info + i + flen;
            size_t vlen = n - flen;
            if (vlen == 10 && memcmp(v, "noeviction", 10) == 0)
                return 0;
            snprintf(err, errlen,
                     "Redis runs with maxmemory-policy %.*s, which can evict the keys pos keeps "
                     "(the relay list, tokens, presence); run it with maxmemory-policy noeviction "
                     "(in redis.conf, or CONFIG SET maxmemory-policy noeviction)",
                     (int)(vlen > 64 ? 64 : vlen), v);
            return -1;
        }
        i = end + 1;
    }
    return 1;
}

/* check_policy refuses a new connection to a server that may evict our keys. */
static int check_policy(pos_redis *r, redisContext *c)
{
    redisReply *rep = redisCommand(c, "INFO memory");
    int rc = 1;
    char why[sizeof(r->last_error)];
    /* A server that hides INFO (a managed Redis, an ACL) cannot be checked: allowed. */
    if (rep && rep->type == REDIS_REPLY_STRING)
        rc = pos_redis_eviction_check(rep->str, rep->len, why, sizeof(why));
    if (rep)
        freeReplyObject(rep);
    if (!rep) {
        snprintf(r->last_error, sizeof(r->last_error), "Redis did not answer INFO: %s",
                 c->errstr[0] ? c->errstr : "connection lost");
        return -1;
    }
    if (rc < 0) {
        char target[600];
        pos_redis_target_format(&r->target, target, sizeof(target));
        snprintf(r->last_error, sizeof(r->last_error), "refusing Redis at %s: %s", target, why);
        r->policy_refused = 1;
        return -1;
    }
    return 0;
}

static int connect_once(pos_redis *r)
{
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c = r->target.is_unix
                          ? redisConnectUnixWithTimeout(r->target.path, tv)
                          : redisConnectWithTimeout(r->target.host, r->target.port, tv);
    if (!c || c->err) {
        char target[600];
        pos_redis_target_format(&r->target, target, sizeof(target));
        snprintf(r->last_error, sizeof(r->last_error), "cannot connect to Redis at %s: %s", target,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        backoff(r);
        return 0;
    }
    redisSetTimeout(c, tv);
    r->ctx = c;
    if (r->target.db) {
        redisReply *rep = redisCommand(c, "SELECT %d", r->target.db);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            drop(r, "Redis refused SELECT of the configured database");
            backoff(r);
            return 0;
        }
    }
    r->policy_refused = 0;
    if (check_policy(r, c) != 0) {
        drop(r, NULL);
        backoff(r);
        return 0;
    }
    r->backoff_ms = 0;
    r->last_error[0] = '\0';
    return 1;
}

int pos_redis_connected(pos_redis *r)
{
    if (r->ctx)
        return 1;
    if (pos_now_ms() < r->next_attempt_ms)
        return 0;
    return connect_once(r);
}

int pos_redis_connect_now(pos_redis *r)
{
    r->next_attempt_ms = 0;
    return pos_redis_connected(r);
}

static redisReply *check_reply(pos_redis *r, redisReply *rep)
{
    if (!rep) {
        drop(r, r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "Redis connection lost");
        backoff(r);
    }
    return rep;
}

redisReply *pos_redis_command(pos_redis *r, const char *fmt, ...)
{
    if (!pos_redis_connected(r))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r->ctx, fmt, ap);
    va_end(ap);
    return check_reply(r, rep);
}

redisReply *pos_redis_commandv(pos_redis *r, int argc, const char **argv, const size_t *argvlen)
{
    if (!pos_redis_connected(r))
        return NULL;
    return check_reply(r, redisCommandArgv(r->ctx, argc, argv, argvlen));
}

int pos_redis_script_add(pos_redis *r, const char *source)
{
    if (r->nscripts >= POS_REDIS_MAX_SCRIPTS)
        return -1;
    r->scripts[r->nscripts].source = source;
    r->scripts[r->nscripts].sha[0] = '\0';
    return r->nscripts++;
}

static int load_script(pos_redis *r, pos_redis_script *s)
{
    redisReply *rep = pos_redis_command(r, "SCRIPT LOAD %s", s->source);
    if (!rep)
        return -1;
    int ok = rep->type == REDIS_REPLY_STRING && rep->len == 40;
    if (ok)
        memcpy(s->sha, rep->str, 41);
    else
        snprintf(r->last_error, sizeof(r->last_error), "SCRIPT LOAD failed: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

redisReply *pos_redis_eval(pos_redis *r, int handle, int nkeys, int argc, const char **argv,
                           const size_t *argvlen)
{
    enum { MAX_ARGS = 32 };
    const char *av[MAX_ARGS + 3];
    size_t al[MAX_ARGS + 3];
    char nk[16];

    if (handle < 0 || handle >= r->nscripts || argc > MAX_ARGS)
        return NULL;
    pos_redis_script *s = &r->scripts[handle];
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!pos_redis_connected(r))
            return NULL;
        if (!s->sha[0] && load_script(r, s) != 0)
            return NULL;
        snprintf(nk, sizeof(nk), "%d", nkeys);
        av[0] = "EVALSHA";
        al[0] = 7;
        av[1] = s->sha;
        al[1] = 40;
        av[2] = nk;
        al[2] = strlen(nk);
        for (int i = 0; i < argc; i++) {
            av[3 + i] = argv[i];
            al[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
        }
        redisReply *rep = pos_redis_commandv(r, argc + 3, av, al);
        if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            /* Redis restarted or SCRIPT FLUSH: load it again and retry once. */
            freeReplyObject(rep);
            s->sha[0] = '\0';
            continue;
        }
        return rep;
    }
    return NULL;
}
