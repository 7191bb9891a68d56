/*
 * Asynchronous Redis client for programs built on a libev loop (hiredis 0.14
 * async API with its libev adapter). It never blocks the loop:
 *
 * - one command connection that reconnects by itself with exponential
 *   backoff (100 ms doubling to 2 s) driven by an ev_timer;
 * - its own command timeout (hiredis 0.14 has none): when the oldest pending
 *   command has waited longer than the timeout and Redis answered nothing for
 *   as long, the connection is considered dead, dropped, every pending
 *   callback gets NULL, and a reconnect starts; when Redis still answers
 *   (busy behind a queue), only the commands past the timeout get NULL and
 *   their answers are dropped when they come;
 * - Lua scripts run with EVALSHA; a NOSCRIPT answer (Redis restarted, SCRIPT
 *   FLUSH) makes it send SCRIPT LOAD and the EVALSHA again, pipelined;
 * - a separate subscriber connection for pub/sub that resubscribes after
 *   every reconnect and is restarted whenever the command connection drops.
 *
 * Callbacks run on the loop, never before the call that queued them returns.
 * After pos_redis_async_del no callback runs. No function of this module may
 * be called from inside one of its callbacks except pos_redis_async_command*,
 * pos_redis_async_eval and the getters.
 */
#ifndef POS_REDIS_ASYNC_H
#define POS_REDIS_ASYNC_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "redis.h"

typedef struct pos_redis_async pos_redis_async;

/*
 * pos_redis_async_reply_cb: |reply| is the answer (borrowed, valid during the
 * call; may be a REDIS_REPLY_ERROR), or NULL when the connection failed or
 * the command timed out.
 */
typedef void (*pos_redis_async_reply_cb)(void *arg, redisReply *reply);

/* pos_redis_async_state_cb: the command connection went up (1) or down (0). */
typedef void (*pos_redis_async_state_cb)(void *arg, int up);

/*
 * pos_redis_async_message_cb: a message published on |channel|; |msg| has
 * |len| bytes (not NUL-terminated for binary payloads; a NUL follows anyway).
 * Called with |msg| NULL each time the subscription is (re)established, so
 * the caller can resynchronise after messages it may have missed.
 */
typedef void (*pos_redis_async_message_cb)(void *arg, const char *channel, const char *msg,
                                           size_t len);

/*
 * pos_redis_async_new starts connecting to |t| on |loop| (borrowed, outlives
 * the client). |timeout_ms| bounds connecting and each command (0: 1000).
 * |state_cb| may be NULL. Returns NULL on allocation failure only.
 */
pos_redis_async *pos_redis_async_new(struct ev_loop *loop, const pos_redis_target *t,
                                     int timeout_ms, pos_redis_async_state_cb state_cb, void *arg);

/* pos_redis_async_del closes both connections; pending callbacks are dropped, not called. */
void pos_redis_async_del(pos_redis_async *r);

/* pos_redis_async_up: 1 when the command connection is established. */
int pos_redis_async_up(const pos_redis_async *r);

/*
 * pos_redis_async_commandv queues one command. Returns 0 (|cb|, unless NULL,
 * will be called exactly once), or -1 when the connection is not up or out of memory (|cb|
 * is not called).
 */
int pos_redis_async_commandv(pos_redis_async *r, pos_redis_async_reply_cb cb, void *arg, int argc,
                             const char **argv, const size_t *argvlen);

/* pos_redis_async_command: the same with a hiredis format string (%s, %b, %d ...). */
int pos_redis_async_command(pos_redis_async *r, pos_redis_async_reply_cb cb, void *arg,
                            const char *fmt, ...);

/*
 * pos_redis_async_script_add registers a Lua script (|source| static, owned by
 * the caller). Returns its handle, or -1 when POS_REDIS_MAX_SCRIPTS are in use.
 */
int pos_redis_async_script_add(pos_redis_async *r, const char *source);

/*
 * pos_redis_async_eval runs script |handle| with EVALSHA, |nkeys| keys first
 * in |argv| (at most 32 arguments). Returns like pos_redis_async_commandv.
 */
int pos_redis_async_eval(pos_redis_async *r, int handle, int nkeys, int argc, const char **argv,
                         const size_t *argvlen, pos_redis_async_reply_cb cb, void *arg);

/*
 * pos_redis_async_subscribe subscribes to |channel| on the subscriber
 * connection (one channel per client; a second call replaces the first).
 * Returns 0, or -1 on allocation failure.
 */
int pos_redis_async_subscribe(pos_redis_async *r, const char *channel,
                              pos_redis_async_message_cb cb, void *arg);

/* Counters, for /metrics. */
typedef struct pos_redis_async_stats {
    uint64_t commands;
    uint64_t errors;   /* commands answered NULL: connection failures and timeouts */
    uint64_t timeouts; /* connections dropped because Redis answered nothing in time */
    uint64_t late;     /* commands answered NULL at their deadline while Redis still answered */
    uint64_t reconnects;
    uint64_t policy_refusals; /* connections refused for an evicting maxmemory-policy */
} pos_redis_async_stats;
void pos_redis_async_stats_get(const pos_redis_async *r, pos_redis_async_stats *out);

#endif
