/*
 * Token auth for the relay's services (services.h is the facade): the
 * per-address and per-token connection-attempt rate limits, the token check
 * with its short local cache, admission against the token's connection cap
 * (policy in admission.h), and revocations (pub/sub plus a periodic re-read
 * of the tokens in use). Runs on the relay's libev loop over the shared
 * Redis connection; the semantics of each call are those of the
 * relay_rate_check_addr / relay_auth_* functions in services.h.
 *
 * Lifetimes: relay_auth_svc_new borrows |loop|, |cfg| and |redis|; delete
 * it only after pos_redis_async_del (pending Redis callbacks still use it).
 */
#ifndef POS_RELAY_AUTH_H
#define POS_RELAY_AUTH_H

#include "redis.h"
#include "redis_async.h"
#include "services.h"

typedef struct relay_auth_svc relay_auth_svc;

/* Adds the scripts and subscribes to revocations. NULL when out of memory or the subscription
 * fails. */
relay_auth_svc *relay_auth_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                   pos_redis_async *redis, const relay_services_callbacks *cbs);

uint64_t relay_auth_svc_rate_check_addr(relay_auth_svc *s, const struct sockaddr *from,
                                        relay_auth_cb cb, void *arg);
uint64_t relay_auth_svc_check(relay_auth_svc *s, const char *token, size_t len, relay_auth_cb cb,
                              void *arg);
void relay_auth_svc_cancel(relay_auth_svc *s, uint64_t handle);
void relay_auth_svc_release(relay_auth_svc *s, const char *token_id);
/*
 * Parked clients (docs/relay.md "Parked clients") keep their connection's
 * place in the token's connection set, written once a minute with a 150 s
 * TTL instead of every 5 s: relay_auth_svc_park(|token_id|, 1) when a
 * connection of the token parks, (…, 0) when its record goes back to a
 * connection; relay_auth_svc_release_parked when a record ends otherwise.
 */
void relay_auth_svc_park(relay_auth_svc *s, const char *token_id, int parked);
void relay_auth_svc_release_parked(relay_auth_svc *s, const char *token_id);

/*
 * relay_auth_svc_refresh_step: step |step| of |steps| (one a tick, round
 * robin) pushes the expiry of a |steps|-th of our live connection-set
 * members (each every |steps| ticks) and of a 12 x |steps|-th of the parked
 * clients' members (each once a minute with 5 steps of 1 s); step 0 re-reads
 * the tokens in use (those held only by parked clients every 12th round).
 * relay_auth_svc_refresh does it all at once (Redis came back, maybe empty).
 */
void relay_auth_svc_refresh_step(relay_auth_svc *s, unsigned step, unsigned steps);
void relay_auth_svc_refresh(relay_auth_svc *s);

/* relay_auth_svc_shutdown: from now on every check is answered RELAY_GOING_AWAY. */
void relay_auth_svc_shutdown(relay_auth_svc *s);

/*
 * relay_auth_svc_append_final appends to |r|'s pipeline a ZREM of each of
 * our members in the tokens' connection sets. Returns the number of commands.
 */
int relay_auth_svc_append_final(relay_auth_svc *s, pos_redis *r);

/* Redis replies that were errors, for /metrics. */
uint64_t relay_auth_svc_reply_errors(const relay_auth_svc *s);

void relay_auth_svc_del(relay_auth_svc *s);

#endif
