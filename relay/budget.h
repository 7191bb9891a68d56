/*
 * Bandwidth budgets and usage accounting for the relay's services
 * (services.h is the facade and documents each call: relay_budget_* and
 * relay_usage_*): one budget per token in use here, leased from the token's
 * Redis bucket, and the bytes and circuit seconds per account, added to
 * Redis every RELAY_USAGE_FLUSH_S seconds.
 *
 * Lifetimes: relay_budget_svc_new borrows |loop|, |cfg| and |redis|; delete
 * it only after pos_redis_async_del (pending Redis callbacks still use it).
 */
#ifndef POS_RELAY_BUDGET_H
#define POS_RELAY_BUDGET_H

#include "redis.h"
#include "redis_async.h"
#include "services.h"

typedef struct relay_budget_svc relay_budget_svc;

/* Adds the scripts and starts the usage timer. NULL when out of memory or a script cannot be added.
 */
relay_budget_svc *relay_budget_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                       pos_redis_async *redis);

relay_budget *relay_budget_svc_acquire(relay_budget_svc *s, const char *token_id,
                                       const relay_limits *limits);
void relay_budget_svc_release(relay_budget_svc *s, relay_budget *b);
void relay_budget_svc_circuit_open(relay_budget_svc *s, relay_budget *b0, relay_budget *b1);
void relay_budget_svc_circuit_close(relay_budget_svc *s, relay_budget *b0, relay_budget *b1);
int relay_budget_svc_usage_add(relay_budget_svc *s, const char *account, uint64_t bytes,
                               uint64_t circuit_ms);

/* relay_budget_svc_flush adds the usage counted so far to Redis (kept for later when it is down).
 */
void relay_budget_svc_flush(relay_budget_svc *s);

/* relay_budget_svc_shutdown: no more leases nor periodic flushes. */
void relay_budget_svc_shutdown(relay_budget_svc *s);

/*
 * relay_budget_svc_append_final appends to |r|'s pipeline (NULL: Redis
 * unreachable) the HINCRBYs of all usage not yet in Redis, circuit time
 * rounded to the nearest second, and forgets it; the bytes that could not
 * be sent are added to |*lost_bytes|. Returns the number of commands.
 */
int relay_budget_svc_append_final(relay_budget_svc *s, pos_redis *r, uint64_t *lost_bytes);

/* Adds this module's counters (leases, usage) into |out|. */
void relay_budget_svc_stats_add(const relay_budget_svc *s, relay_services_stats *out);

void relay_budget_svc_del(relay_budget_svc *s);

#endif
