/*
 * Redis access (hiredis 0.14). A URL names the server, `redis://host:port[/db]`
 * or `unix:///path/to/socket[?db=N]`; every key carries a configurable prefix
 * (default "pos:"). This file has the parts every program shares: the URL
 * parser, key building, and a synchronous client for one thread that
 * reconnects with exponential backoff and runs Lua scripts with EVALSHA
 * (loaded once per connection, reloaded on NOSCRIPT).
 *
 * The synchronous client suits command-line tools and background threads; the
 * relay's event loop uses the asynchronous client in redis_async.h.
 */
#ifndef POS_REDIS_H
#define POS_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define POS_REDIS_DEFAULT_URL "redis://127.0.0.1:6379"
#define POS_REDIS_DEFAULT_PREFIX "pos:"
#define POS_REDIS_MAX_SCRIPTS 16

typedef struct pos_redis_target {
    int is_unix;
    char host[254]; /* numeric IP, or a DNS name resolved at each connection attempt */
    int port;
    char path[512];
    int db;
} pos_redis_target;

/*
 * pos_redis_url_parse parses |url| into |t|. Returns 0, or -1 with a sentence
 * in |err| saying what form was expected.
 */
int pos_redis_url_parse(const char *url, pos_redis_target *t, char *err, size_t errlen);

/* pos_redis_target_format writes a printable form of |t| (for logs). */
void pos_redis_target_format(const pos_redis_target *t, char *out, size_t outlen);

typedef struct pos_redis_script {
    const char *source; /* static Lua text, owned by the caller */
    char sha[41];
} pos_redis_script;

typedef struct pos_redis {
    pos_redis_target target;
    char prefix[64];
    int timeout_ms;
    redisContext *ctx;
    uint64_t next_attempt_ms; /* monotonic ms before which no reconnect is tried */
    unsigned backoff_ms;
    char last_error[256];
    pos_redis_script scripts[POS_REDIS_MAX_SCRIPTS];
    int nscripts;
    int policy_refused; /* the last connection was refused for an evicting maxmemory-policy */
} pos_redis;

/* pos_redis_init prepares |r| without connecting. |prefix| NULL means the default. */
void pos_redis_init(pos_redis *r, const pos_redis_target *t, const char *prefix, int timeout_ms);

/* pos_redis_free closes the connection. */
void pos_redis_free(pos_redis *r);

/*
 * pos_redis_connected connects if there is no connection and the backoff
 * allows a try now. Returns 1 when connected, 0 otherwise (see last_error).
 * The backoff starts at 100 ms and doubles up to 5 s.
 */
int pos_redis_connected(pos_redis *r);

/* pos_redis_connect_now forgets the backoff and tries at once (tools use this). */
int pos_redis_connect_now(pos_redis *r);

/*
 * pos_redis_command runs one command (hiredis format). Returns the reply
 * (caller frees with freeReplyObject) or NULL when Redis could not be
 * reached; an I/O error drops the connection so the next call reconnects.
 * A Redis error reply is returned as a reply of type REDIS_REPLY_ERROR.
 */
redisReply *pos_redis_command(pos_redis *r, const char *fmt, ...);

/* pos_redis_commandv is pos_redis_command with an argument vector. */
redisReply *pos_redis_commandv(pos_redis *r, int argc, const char **argv, const size_t *argvlen);

/* pos_redis_script_add registers a Lua script; returns its handle, or -1 when full. */
int pos_redis_script_add(pos_redis *r, const char *source);

/*
 * pos_redis_eval runs script |handle| with EVALSHA and |nkeys| keys first in
 * |argv|, loading it when Redis does not know it. Same returns as
 * pos_redis_command.
 */
redisReply *pos_redis_eval(pos_redis *r, int handle, int nkeys, int argc, const char **argv,
                           const size_t *argvlen);

/*
 * pos_redis_eviction_check reads `maxmemory_policy` from the text of an
 * `INFO memory` reply (|info|, |len| bytes). Every policy but `noeviction`
 * may delete keys pos needs (the relay list, tokens, presence: all of them
 * carry TTLs, so even the volatile-* policies pick them). Returns 0 for
 * noeviction, -1 for any other policy with a sentence in |err| naming it and
 * the policy to run, and 1 when the text names no policy (nothing known).
 */
int pos_redis_eviction_check(const char *info, size_t len, char *err, size_t errlen);

/* pos_redis_key writes prefix + formatted suffix into |out|. Returns the length. */
int pos_redis_key(const char *prefix, char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* pos_now_ms is CLOCK_MONOTONIC in milliseconds. */
uint64_t pos_now_ms(void);

#endif
