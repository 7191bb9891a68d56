/*
 * The relay services (relay/services.h) for the fuzz target ONLY: every
 * answer is immediate and nothing touches Redis, so that fuzzing the
 * QUIC side is neither slowed down nor made non-deterministic by a database
 * (fuzzing is not a test of Redis; the integration tests use a real one).
 *
 * Rate checks pass; a token starting with "bad" is unknown, "full" is over
 * its connection cap, anything else is accepted without limits; presence
 * lookups never answer (a CONNECT to a peer that is not connected here stays
 * pending until its connection ends, as while Redis is slow).
 *
 * Like the real services, a verdict never comes inside the call that asked:
 * it is queued and delivered by fuzz_services_pump, which the driver calls
 * after each datagram it hands the relay (the loop's turn).
 */
#include <stdio.h>
#include <string.h>

#include "services.h"

void fuzz_services_pump(void);
void fuzz_services_reset(void);

#define MAX_QUEUED 64

/* A verdict waiting for the loop's turn. */
struct queued {
    uint64_t handle;
    relay_auth_cb cb;
    void *arg;
    enum relay_refusal verdict;
    int has_limits;
    relay_limits limits;
};

static struct queued queue[MAX_QUEUED];
static size_t n_queued;
static uint64_t next_handle;

static uint64_t enqueue(relay_auth_cb cb, void *arg, enum relay_refusal verdict,
                        const relay_limits *lim)
{
    if (n_queued == MAX_QUEUED)
        return 0; /* like out of memory: no callback will come */
    struct queued *q = &queue[n_queued++];
    if (++next_handle == 0)
        next_handle = 1;
    memset(q, 0, sizeof(*q));
    q->handle = next_handle;
    q->cb = cb;
    q->arg = arg;
    q->verdict = verdict;
    if (lim) {
        q->has_limits = 1;
        q->limits = *lim;
    }
    return q->handle;
}

void fuzz_services_pump(void)
{
    /* a callback may ask again (rate check -> handshake -> HELLO): deliver until none left */
    while (n_queued > 0) {
        struct queued q = queue[0];
        memmove(queue, queue + 1, (n_queued - 1) * sizeof(queue[0]));
        n_queued--;
        q.cb(q.arg, q.verdict, q.has_limits ? &q.limits : NULL,
             q.verdict == RELAY_OK && q.has_limits ? "0123456789abcdef" : NULL);
    }
}

void fuzz_services_reset(void)
{
    n_queued = 0;
}

const char *relay_refusal_reason(enum relay_refusal r)
{
    switch (r) {
    case RELAY_OK:
        return "accepted";
    case RELAY_REFUSED_UNKNOWN_TOKEN:
        return "unknown token";
    case RELAY_REFUSED_TOO_MANY_CONNS:
        return "too many connections for this token";
    default:
        return "refused";
    }
}

uint64_t relay_rate_check_addr(relay_services *s, const struct sockaddr *from, relay_auth_cb cb,
                               void *arg)
{
    (void)s;
    (void)from;
    return enqueue(cb, arg, RELAY_OK, NULL);
}

uint64_t relay_auth_check(relay_services *s, const char *token, size_t len,
                          const struct sockaddr *from, const char *peer_id, relay_auth_cb cb,
                          void *arg)
{
    relay_limits lim;
    (void)s;
    (void)from;
    (void)peer_id;
    memset(&lim, 0, sizeof(lim));
    snprintf(lim.account, sizeof(lim.account), "fuzz");
    if (len >= 3 && memcmp(token, "bad", 3) == 0)
        return enqueue(cb, arg, RELAY_REFUSED_UNKNOWN_TOKEN, NULL);
    if (len >= 4 && memcmp(token, "full", 4) == 0)
        return enqueue(cb, arg, RELAY_REFUSED_TOO_MANY_CONNS, NULL);
    return enqueue(cb, arg, RELAY_OK, &lim);
}

void relay_auth_cancel(relay_services *s, uint64_t handle)
{
    (void)s;
    for (size_t i = 0; i < n_queued; i++) {
        if (queue[i].handle != handle)
            continue;
        memmove(queue + i, queue + i + 1, (n_queued - i - 1) * sizeof(queue[0]));
        n_queued--;
        return;
    }
}

void relay_auth_release(relay_services *s, const char *token_id)
{
    (void)s;
    (void)token_id;
}

void relay_presence_add(relay_services *s, const char *peer_id)
{
    (void)s;
    (void)peer_id;
}

void relay_presence_remove(relay_services *s, const char *peer_id)
{
    (void)s;
    (void)peer_id;
}

uint64_t relay_presence_lookup(relay_services *s, const char *peer_id, relay_presence_cb cb,
                               void *arg)
{
    static uint64_t next;
    (void)s;
    (void)peer_id;
    (void)cb;
    (void)arg;
    return ++next ? next : ++next;
}

void relay_presence_cancel(relay_services *s, uint64_t handle)
{
    (void)s;
    (void)handle;
}

relay_budget *relay_budget_acquire(relay_services *s, const char *token_id,
                                   const relay_limits *limits)
{
    (void)s;
    (void)token_id;
    (void)limits;
    return NULL; /* uncounted, unlimited */
}

void relay_budget_release(relay_services *s, relay_budget *b)
{
    (void)s;
    (void)b;
}

void relay_budget_lease(void *services, relay_budget *b)
{
    (void)services;
    (void)b;
}

void relay_usage_circuit_open(relay_services *s, relay_budget *b0, relay_budget *b1)
{
    (void)s;
    (void)b0;
    (void)b1;
}

void relay_usage_circuit_close(relay_services *s, relay_budget *b0, relay_budget *b1)
{
    (void)s;
    (void)b0;
    (void)b1;
}

/* Parking (server_park.c): nothing to count or write without Redis. */
void relay_auth_park(relay_services *s, const char *token_id, int parked)
{
    (void)s;
    (void)token_id;
    (void)parked;
}

void relay_auth_release_parked(relay_services *s, const char *token_id)
{
    (void)s;
    (void)token_id;
}

void relay_presence_park(relay_services *s, const char *peer_id)
{
    (void)s;
    (void)peer_id;
}

void relay_presence_keep_parked_many(relay_services *s, const char (*peer_ids)[POS_PEER_ID_STRLEN],
                                     unsigned n)
{
    (void)s;
    (void)peer_ids;
    (void)n;
}

void relay_presence_unpark(relay_services *s, const char *peer_id)
{
    (void)s;
    (void)peer_id;
}

void relay_presence_hold(relay_services *s, const char *peer_id)
{
    (void)s;
    (void)peer_id;
}

uint64_t relay_services_redis_ups(const relay_services *s)
{
    (void)s;
    return 1;
}
