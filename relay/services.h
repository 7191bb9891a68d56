/*
 * What `pos-relay run` needs from Redis and the discovery API, behind one
 * interface so that the QUIC side (cmd_run.c, quic_server.c) never touches
 * hiredis or libcurl. The facade of services.c, which hands each call to
 * its room: auth.h (rate limits, token checks, revocations), presence.h,
 * budget.h (bandwidth and usage) and registration.h (discovery API).
 * Everything here runs on the relay's libev loop and never blocks it: Redis
 * through hiredis's async API, HTTP through a curl multi handle driven by
 * the loop.
 *
 * Lifetimes: relay_services_new borrows |loop| and |cfg| (both outlive it).
 * Callbacks are never called after relay_services_del, and a pending check
 * can be cancelled with relay_auth_cancel.
 *
 * A verdict is always delivered from the loop, never from inside the call
 * that asked for it (even a refusal known at once: Redis down, bad request,
 * cached verdict). relay_rate_check_addr and relay_auth_check return 0 only
 * when out of memory (no callback will come). Beyond 20,000 checks pending at
 * once, new ones are refused as unavailable. Key layout: docs/redis-layout.md.
 *
 * Wiring the data plane (circuit.h, forward.h) to bandwidth limits and usage:
 *   relay_forwarder_new(circuits, batch, relay_budget_lease, services)
 *   auth verdict RELAY_OK:  conn->budget = relay_budget_acquire(s, token_id, limits)
 *   CONNECT accepted:       relay_circuit_open(..., a->budget, ..., b->budget, ...), then
 *                           relay_usage_circuit_open(s, a->budget, b->budget)
 *   circuit closed (cb):    relay_usage_circuit_close(s, info->budget[0], info->budget[1])
 *   connection freed:       relay_circuit_owner_close(...) first, then
 *                           relay_budget_release(s, conn->budget)
 *   SIGTERM:                relay_services_shutdown (after the last forwarded batch)
 * Relayed bytes are counted from the budgets; nothing else is needed for them.
 */
#ifndef POS_RELAY_SERVICES_H
#define POS_RELAY_SERVICES_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "admission.h"
#include "identity.h"
#include "circuit.h"
#include "relay_config.h"

typedef struct relay_services relay_services;

/*
 * enum relay_refusal (the verdicts, also the QUIC application error codes),
 * relay_refusal_reason and relay_limits (what an accepted token allows) are
 * in admission.h, with the policy that decides them.
 */

/*
 * relay_auth_cb reports the verdict of relay_auth_check. |token_id| is an
 * opaque handle (the token's hash) to give to relay_auth_release and to match
 * revocations; valid only during the call (copy it).
 */
typedef void (*relay_auth_cb)(void *arg, enum relay_refusal verdict, const relay_limits *limits,
                              const char *token_id);

/* relay_revoked_cb: every connection holding |token_id| must be closed (RELAY_REFUSED_REVOKED). */
typedef void (*relay_revoked_cb)(void *arg, const char *token_id);

typedef struct relay_services_callbacks {
    relay_revoked_cb revoked;
    void *arg;
} relay_services_callbacks;

/*
 * relay_services_new connects to Redis (asynchronously; it reconnects with
 * backoff), subscribes to revocations and starts registration with the
 * discovery API when |cfg->api_url| is set. |announce| holds the addresses to
 * register when the config has no public_addrs. Returns NULL on allocation
 * failure only.
 */
relay_services *relay_services_new(struct ev_loop *loop, const relay_config *cfg,
                                   const relay_services_callbacks *cbs,
                                   const char (*announce)[POS_ADDR_STRLEN], size_t n_announce);

/*
 * relay_rate_check_addr: a connection attempt from |from|. Runs the per-address
 * token bucket (Lua, shared by all relays on this Redis). Calls |cb| with
 * RELAY_OK, RELAY_REFUSED_RATE_LIMITED or RELAY_REFUSED_UNAVAILABLE (limits and
 * token_id NULL). Returns a handle for relay_auth_cancel.
 */
uint64_t relay_rate_check_addr(relay_services *s, const struct sockaddr *from, relay_auth_cb cb,
                               void *arg);

/*
 * relay_auth_check: a client presented |token| (len bytes) from |from| with
 * peer id |peer_id|. Looks the token's hash up (short local cache), checks
 * revoked/expired, the per-token attempt bucket and the token's connection
 * cap; on RELAY_OK the connection counts against the cap until
 * relay_auth_release. Returns a handle for relay_auth_cancel.
 */
uint64_t relay_auth_check(relay_services *s, const char *token, size_t len,
                          const struct sockaddr *from, const char *peer_id, relay_auth_cb cb,
                          void *arg);

/* relay_auth_cancel: |cb| of a pending check will not be called. */
void relay_auth_cancel(relay_services *s, uint64_t handle);

/* relay_auth_release: an accepted connection with |token_id| ended. */
void relay_auth_release(relay_services *s, const char *token_id);

/*
 * relay_auth_park: a connection of |token_id| parked (|parked| 1: its
 * place in the token's connection cap is written once a minute from now
 * on) or its record went back to a connection (0).
 * relay_auth_release_parked: a record of |token_id| ended (its place goes).
 */
void relay_auth_park(relay_services *s, const char *token_id, int parked);
void relay_auth_release_parked(relay_services *s, const char *token_id);

/*
 * Presence: while |peer_id| has a home connection here (HELLO without
 * POS_CTRL_HELLO_NOT_HOME), Redis maps it to this relay (short TTL).
 * relay_presence_add takes the key (the newest home wins); the refresh only
 * extends a key naming this relay (or puts back a missing one);
 * relay_presence_remove, at the peer's last home connection here, deletes
 * the key only if it still names this relay (compare-and-delete in Lua).
 */
void relay_presence_add(relay_services *s, const char *peer_id);
void relay_presence_remove(relay_services *s, const char *peer_id);

/*
 * Parked peers (docs/protocol.md "Parking"): relay_presence_park when a
 * home connection parks (it stops counting as live; the key stays, written
 * with a longer TTL), relay_presence_keep_parked_many once a minute while the
 * record lives, relay_presence_unpark when the record ends without the peer
 * coming back here (compare-and-delete unless a live home is here).
 */
void relay_presence_park(relay_services *s, const char *peer_id);
/* relay_presence_keep_parked_many: the once-a-minute writes of |n| parked peers, one Redis
 * command (the script's keys: at most RELAY_PRESENCE_BATCH). */
#define RELAY_PRESENCE_BATCH 30
void relay_presence_keep_parked_many(relay_services *s, const char (*peer_ids)[POS_PEER_ID_STRLEN],
                                     unsigned n);
void relay_presence_unpark(relay_services *s, const char *peer_id);
/* relay_presence_hold: at shutdown, a parked peer's key is deleted with the live ones' (SIGTERM).
 */
void relay_presence_hold(relay_services *s, const char *peer_id);

/*
 * Presence lookup, for a CONNECT to a peer that is not connected here. One
 * Lua call reads P presence:PEERID (the relay holding the peer) and that
 * relay's entry P relay:ID as the discovery API stored it (the same JSON as
 * GET /api/p2p/relays): so the answer names a relay clients can dial, and a
 * relay that is no longer listed is not offered.
 */
enum relay_presence_status {
    RELAY_PRESENCE_FOUND = 0,       /* |found| names the other relay */
    RELAY_PRESENCE_NOT_FOUND = 1,   /* no relay holds the peer (or only us, stale, or unlisted) */
    RELAY_PRESENCE_UNAVAILABLE = 2, /* Redis unreachable */
};

typedef struct relay_presence_found {
    char relay_id[POS_UUID_STRLEN];
    char peer_id[POS_PEER_ID_STRLEN];
    char addrs[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_addrs; /* at least 1 when found */
} relay_presence_found;

/* |found| is valid during the call only (NULL unless RELAY_PRESENCE_FOUND). */
typedef void (*relay_presence_cb)(void *arg, int status, const relay_presence_found *found);

/*
 * relay_presence_lookup: which relay holds |peer_id|. |cb| is called once,
 * always from the loop (never inside this call). Returns a handle for
 * relay_presence_cancel, or 0 when out of memory (no callback).
 */
uint64_t relay_presence_lookup(relay_services *s, const char *peer_id, relay_presence_cb cb,
                               void *arg);

/* relay_presence_cancel: the callback of lookup |handle| will not be called. */
void relay_presence_cancel(relay_services *s, uint64_t handle);

/*
 * ---- Bandwidth budgets (docs/relay.md, "Bandwidth limits and usage") ----
 *
 * A token's bytes_per_sec/burst is one token bucket in Redis (P bw:H),
 * shared by every relay. Each relay keeps one relay_budget per token (shared
 * by all that token's connections here), which the forwarder (forward.h)
 * spends per packet; when it runs low the forwarder calls relay_budget_lease,
 * which leases the next chunk (about 100 ms of the rate) from Redis with a
 * Lua script, asynchronously. Redis unreachable: the relay goes on spending
 * what it holds, then drops (fails closed for limited tokens); unlimited
 * tokens are never throttled and never cause a Redis call.
 *
 * The same budgets count the bytes relayed for usage accounting: each
 * forwarded byte is charged to the sending side's budget, and the budget's
 * bytes are added to its token's account (see relay_usage_*).
 */

/*
 * relay_budget_acquire: the budget of token |token_id| (from relay_auth_cb)
 * with |limits| (its bytes_per_sec and burst_bytes; the account that its
 * usage is billed to), shared by every connection of that token on this
 * relay. Each call takes a reference: call relay_budget_release once per
 * acquire, after the circuits that point at the budget are closed
 * (relay_circuit_owner_close). Newer |limits| of the same token replace the
 * old ones. Pass the result to relay_circuit_open for that connection's
 * sides. The first lease is asked for at once, so that the first packets
 * find budget. relay_services_del frees every budget: close the circuits
 * first. Returns NULL when out of memory or |token_id|/|limits| is NULL.
 */
relay_budget *relay_budget_acquire(relay_services *s, const char *token_id,
                                   const relay_limits *limits);

/* relay_budget_release drops one reference; the last one accounts its bytes and frees it. */
void relay_budget_release(relay_services *s, relay_budget *b);

/*
 * relay_budget_lease is the forwarder's relay_lease_cb: give it to
 * relay_forwarder_new with the services as |lease_arg|. It never blocks and
 * never calls Redis more than once per lease in flight; the grant arrives
 * later through relay_budget_grant. Only for budgets from relay_budget_acquire.
 */
void relay_budget_lease(void *services, relay_budget *b);

/*
 * ---- Usage accounting (P usage:ACCOUNT, read by `pos-relay usage`) ----
 *
 * Counted locally and added to Redis every RELAY_USAGE_FLUSH_S seconds (one
 * pipeline of HINCRBY per flush; what fails to reach Redis is kept and sent
 * with the next flush) and at relay_services_shutdown.
 */
#define RELAY_USAGE_FLUSH_S 5

/*
 * relay_usage_circuit_open / _close: a circuit between sides paying from
 * |b0| and |b1| (budgets of relay_budget_acquire, or NULL) opened / closed.
 * Each account among the two sides (once if both are the same account)
 * accrues circuit seconds while the circuit is open. Call _close with the
 * same budgets as _open (relay_circuit_info.budget of the closed circuit),
 * before releasing them. Bytes need no call: they come from the budgets.
 */
void relay_usage_circuit_open(relay_services *s, relay_budget *b0, relay_budget *b1);
void relay_usage_circuit_close(relay_services *s, relay_budget *b0, relay_budget *b1);

/*
 * relay_usage_add adds |bytes| relayed and |circuit_ms| milliseconds of
 * circuit time to |account| (usage not seen by a budget). Returns 0, or -1
 * when |account| is not a valid account name or out of memory (nothing
 * counted).
 */
int relay_usage_add(relay_services *s, const char *account, uint64_t bytes, uint64_t circuit_ms);

/* relay_services_redis_ok: whether Redis is reachable now (for /healthz and refusals). */
int relay_services_redis_ok(const relay_services *s);

/* relay_services_redis_ups: how often Redis came (back) up: a change means it may have lost state.
 */
uint64_t relay_services_redis_ups(const relay_services *s);

/* Counters the services keep, for /metrics. */
typedef struct relay_services_stats {
    uint64_t redis_errors;
    uint64_t registrations_ok;
    uint64_t registrations_failed;
    uint64_t leases;         /* lease scripts answered */
    uint64_t lease_bytes;    /* bytes they granted */
    uint64_t leases_empty;   /* answered with nothing available (the token is over its limit) */
    uint64_t leases_failed;  /* no answer: Redis unreachable or timed out */
    uint64_t usage_flushes;  /* usage pipelines Redis accepted */
    uint64_t usage_failures; /* usage pipelines that failed (their counts are kept for the next) */
} relay_services_stats;
void relay_services_stats_get(const relay_services *s, relay_services_stats *out);

/*
 * relay_services_shutdown: DELETE the registration (bounded wait, at most
 * |timeout_ms|), add the usage counted so far to Redis (the bytes budgets
 * spent and the circuit seconds of circuits still open), drop presence.
 * Called once on SIGTERM before the loop ends, after the last packet was
 * forwarded. Afterwards nothing goes to Redis any more: leases are refused
 * (budgets keep what they hold) and usage is no longer counted.
 */
void relay_services_shutdown(relay_services *s, int timeout_ms);

void relay_services_del(relay_services *s);

#endif
