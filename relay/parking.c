/*
 * The parked-record table (see parking.h): an array handed out from its
 * low end with a LIFO free list threaded through free records, a chained
 * hash by peer key that doubles with the records, a list of the records
 * being woken, and one group per token (strmap) listing its records.
 */
#include "parking.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CAPACITY (1u << 24)

static const int64_t wake_at_ms[RELAY_PARK_WAKES] = {0, 250, 500, 1000, 2000};

relay_park *relay_park_new(uint32_t capacity)
{
    relay_park *t;
    if (capacity == 0 || capacity > MAX_CAPACITY)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->capacity = capacity;
    t->wake_hold_ms = RELAY_PARK_WAKE_HOLD_MS;
    t->rec = calloc(capacity, sizeof(*t->rec)); /* zero pages: touched only once used */
    t->nb = 64;
    t->buckets = calloc(t->nb, sizeof(*t->buckets));
    t->wbuckets = calloc(RELAY_PARK_WBUCKETS, sizeof(*t->wbuckets));
    crypto_shorthash_keygen(t->wkey);
    if (!t->rec || !t->buckets || !t->wbuckets) {
        free(t->rec);
        free(t->buckets);
        free(t->wbuckets);
        free(t);
        return NULL;
    }
    return t;
}

void relay_park_del(relay_park *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->used; i++)
        sodium_memzero(t->rec[i].key, sizeof(t->rec[i].key));
    free(t->rec);
    free(t->buckets);
    free(t->wbuckets);
    strmap_clear(&t->tokens);
    strmap_free(&t->tokens);
    free(t);
}

void relay_park_set_route(relay_park *t, const relay_circuits *circuits)
{
    t->route_shift = circuits->slot_bits;
    t->route_mask = (1u << circuits->worker_bits) - 1;
}

static uint32_t peer_hash(const relay_park *t, const uint8_t peer_key[32])
{
    uint32_t h;
    memcpy(&h, peer_key, sizeof(h)); /* an Ed25519 public key: uniform enough */
    return h & (t->nb - 1);
}

/* grow doubles the peer hash when it holds more records than buckets. */
static int grow(relay_park *t)
{
    uint32_t nb = t->nb * 2;
    uint32_t *b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    free(t->buckets);
    t->buckets = b;
    t->nb = nb;
    for (uint32_t i = 0; i < t->used; i++) {
        relay_parked *r = &t->rec[i];
        if (!r->id)
            continue;
        uint32_t h = peer_hash(t, r->peer_key);
        r->hnext = b[h];
        b[h] = i + 1;
    }
    return 0;
}

static relay_park_token *token_get(relay_park *t, const char *token_id, const relay_limits *limits,
                                   relay_budget *budget)
{
    relay_park_token *g = (relay_park_token *)strmap_get(&t->tokens, token_id);
    if (g) {
        if (limits)
            g->limits = *limits; /* the newest verdict's */
        return g;
    }
    g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    snprintf(g->n.key, sizeof(g->n.key), "%s", token_id);
    if (limits)
        g->limits = *limits;
    g->budget = budget;
    if (strmap_put(&t->tokens, &g->n) != 0) {
        free(g);
        return NULL;
    }
    return g;
}

/* new_id: random high half naming |worker| the way circuit ids do, the index below. */
static uint64_t new_id(const relay_park *t, uint32_t idx, unsigned worker)
{
    uint32_t hi = randombytes_random();
    hi &= ~(t->route_mask << t->route_shift);
    hi |= (worker & t->route_mask) << t->route_shift;
    hi |= 0x80000000u; /* never 0 (the worker bits stay below bit 30) */
    return (uint64_t)hi << 32 | idx;
}

relay_parked *relay_park_add(relay_park *t, const uint8_t peer_key[32],
                             const uint8_t key[POS_PARK_KEY_LEN], const struct sockaddr *from,
                             int sock, unsigned worker, const char *token_id,
                             const relay_limits *limits, relay_budget *budget, int64_t now_ms,
                             int *err)
{
    relay_park_token *g;
    relay_parked *r;
    uint32_t idx, h;

    if (t->n >= t->capacity) {
        *err = RELAY_PARK_ERR_FULL;
        return NULL;
    }
    if ((t->n + 1 > t->nb && grow(t) != 0) ||
        !(g = token_get(t, token_id ? token_id : "", limits, budget))) {
        *err = RELAY_PARK_ERR_NOMEM;
        return NULL;
    }
    if (t->free_head) {
        idx = t->free_head - 1;
        t->free_head = t->rec[idx].hnext;
    } else {
        idx = t->used++;
    }
    r = &t->rec[idx];
    memset(r, 0, sizeof(*r));
    r->id = new_id(t, idx, worker);
    memcpy(r->peer_key, peer_key, sizeof(r->peer_key));
    memcpy(r->key, key, sizeof(r->key));
    relay_addr_from_sockaddr(&r->addr, from);
    r->sock = (uint8_t)sock;
    r->seen_ms = now_ms;
    r->ack_ms = -1;
    r->presence_ms = now_ms;
    r->tok = g;
    r->tnext = g->head;
    if (g->head)
        t->rec[g->head - 1].tprev = idx + 1;
    g->head = idx + 1;
    g->count++;
    h = peer_hash(t, peer_key);
    r->hnext = t->buckets[h];
    t->buckets[h] = idx + 1;
    t->n++;
    return r;
}

relay_parked *relay_park_find(relay_park *t, uint64_t id)
{
    uint32_t idx = (uint32_t)id;
    if (idx >= t->used || id == 0)
        return NULL;
    return t->rec[idx].id == id ? &t->rec[idx] : NULL;
}

relay_parked *relay_park_find_peer(relay_park *t, const uint8_t peer_key[32])
{
    for (uint32_t i = t->buckets[peer_hash(t, peer_key)]; i; i = t->rec[i - 1].hnext)
        if (memcmp(t->rec[i - 1].peer_key, peer_key, 32) == 0)
            return &t->rec[i - 1];
    return NULL;
}

relay_park_token *relay_park_token_find(relay_park *t, const char *token_id)
{
    return (relay_park_token *)strmap_get(&t->tokens, token_id);
}

/*
 * addr_bucket: the address's chain, by a keyed hash (crypto_shorthash, as
 * pending_addr.c): new connections' source addresses are the lookups'
 * keys, so no one may pick addresses that all fall into one chain.
 */
static uint16_t addr_bucket(const relay_park *t, const relay_addr *a)
{
    uint8_t in[sizeof(a->ip) + 2], h[crypto_shorthash_BYTES];
    uint16_t v;
    memcpy(in, a->ip, sizeof(a->ip));
    in[sizeof(a->ip)] = (uint8_t)(a->port >> 8);
    in[sizeof(a->ip) + 1] = (uint8_t)a->port;
    crypto_shorthash(h, in, sizeof(in), t->wkey);
    memcpy(&v, h, sizeof(v));
    return (uint16_t)(v & (RELAY_PARK_WBUCKETS - 1));
}

/* alink / aunlink: |r| (a waking record) in or out of its address's chain. */
static void alink(relay_park *t, relay_parked *r)
{
    r->abucket = addr_bucket(t, &r->addr);
    r->anext = t->wbuckets[r->abucket];
    t->wbuckets[r->abucket] = (uint32_t)(r - t->rec) + 1;
}

static void aunlink(relay_park *t, relay_parked *r)
{
    uint32_t me = (uint32_t)(r - t->rec) + 1;
    for (uint32_t *p = &t->wbuckets[r->abucket]; *p; p = &t->rec[*p - 1].anext)
        if (*p == me) {
            *p = r->anext;
            break;
        }
    r->anext = 0;
}

static int same_addr(const relay_addr *a, const relay_addr *b)
{
    return a->port == b->port && memcmp(a->ip, b->ip, sizeof(a->ip)) == 0;
}

int relay_park_waking_at(const relay_park *t, const struct sockaddr *from)
{
    relay_addr a;
    if (!t->waking || relay_addr_from_sockaddr(&a, from) != 0)
        return 0;
    for (uint32_t i = t->wbuckets[addr_bucket(t, &a)]; i; i = t->rec[i - 1].anext)
        if (same_addr(&t->rec[i - 1].addr, &a))
            return 1;
    return 0;
}

void relay_park_unwake(relay_park *t, relay_parked *r)
{
    if (!r->waking)
        return;
    aunlink(t, r);
    r->waking = 0;
    r->rewake = 0;
    if (r->wprev)
        t->rec[r->wprev - 1].wnext = r->wnext;
    else
        t->waking = r->wnext;
    if (r->wnext)
        t->rec[r->wnext - 1].wprev = r->wprev;
    r->wnext = r->wprev = 0;
}

void relay_park_remove(relay_park *t, relay_parked *r)
{
    uint32_t idx = (uint32_t)(r - t->rec);
    relay_park_token *g = r->tok;

    relay_park_unwake(t, r);
    for (uint32_t *p = &t->buckets[peer_hash(t, r->peer_key)]; *p; p = &t->rec[*p - 1].hnext)
        if (*p == idx + 1) {
            *p = r->hnext;
            break;
        }
    if (r->tprev)
        t->rec[r->tprev - 1].tnext = r->tnext;
    else
        g->head = r->tnext;
    if (r->tnext)
        t->rec[r->tnext - 1].tprev = r->tprev;
    if (--g->count == 0) {
        strmap_remove(&t->tokens, &g->n);
        free(g);
    }
    sodium_memzero(r, sizeof(*r));
    r->hnext = t->free_head;
    t->free_head = idx + 1;
    t->n--;
}

enum relay_park_verdict relay_park_keepalive(relay_park *t, const uint8_t *buf, size_t len,
                                             const struct sockaddr *from, int sock, int64_t now_ms,
                                             uint8_t ack[POS_PARK_LEN], relay_parked **rec,
                                             int *moved)
{
    pos_park_msg m;
    relay_parked *r;
    relay_addr a;

    *rec = NULL;
    *moved = 0;
    if (pos_park_decode(buf, len, &m) != 0 ||
        (m.type != POS_PARK_KEEPALIVE && m.type != POS_PARK_QUIET))
        return RELAY_PARK_DROP_FORM;
    if (!(r = relay_park_find(t, m.record_id)))
        return RELAY_PARK_DROP_UNKNOWN;
    *rec = r;
    int known = relay_addr_from_sockaddr(&a, from) == 0;
    /*
     * Before the mac: a flood from the record's address costs one compare per
     * datagram once a keep-alive was taken. One from a new address is judged on its
     * mac at once: a client that roamed is not kept waiting for its resend.
     */
    if (r->ack_ms >= 0 && now_ms - r->ack_ms < RELAY_PARK_ACK_INTERVAL_MS &&
        (!known || same_addr(&a, &r->addr)))
        return RELAY_PARK_DROP_RATE;
    if (pos_park_verify(&m, r->key) != 0)
        return RELAY_PARK_DROP_MAC;
    if (m.counter <= r->ka_counter)
        return RELAY_PARK_DROP_REPLAY;
    r->ka_counter = m.counter;
    r->seen_ms = now_ms;
    r->ack_ms = now_ms;
    if (known && !same_addr(&a, &r->addr)) {
        r->addr = a; /* roaming: acks and wakes follow the newest address */
        *moved = 1;
    }
    r->sock = (uint8_t)sock;
    if (m.type == POS_PARK_QUIET)
        return RELAY_PARK_TAKEN; /* no answer wanted: no mac to compute, nothing to send */
    pos_park_encode(ack, POS_PARK_LEN, POS_PARK_ACK, r->id, m.counter, r->key);
    return RELAY_PARK_ACKED;
}

relay_parked *relay_park_bye(relay_park *t, const uint8_t *buf, size_t len)
{
    pos_park_msg m;
    relay_parked *r;

    if (pos_park_decode(buf, len, &m) != 0 || m.type != POS_PARK_BYE ||
        !(r = relay_park_find(t, m.record_id)) || pos_park_verify(&m, r->key) != 0 ||
        m.counter <= r->ka_counter)
        return NULL;
    return r;
}

void relay_park_wake(relay_park *t, relay_parked *r, int64_t now_ms)
{
    uint32_t idx = (uint32_t)(r - t->rec);
    if (r->waking && r->wake_step < RELAY_PARK_WAKES)
        return; /* under way */
    r->wake_step = 0;
    r->wake_start_ms = now_ms;
    r->wake_next_ms = now_ms;
    if (r->waking)
        return; /* all sent and not back yet: the same again, still listed */
    r->waking = 1;
    r->wprev = 0;
    r->wnext = t->waking;
    if (t->waking)
        t->rec[t->waking - 1].wprev = idx + 1;
    t->waking = idx + 1;
    alink(t, r);
}

void relay_park_send_wake(relay_parked *r, relay_park_send_fn send, void *arg)
{
    uint8_t d[POS_PARK_LEN];
    if (pos_park_encode(d, sizeof(d), POS_PARK_WAKE, r->id, ++r->wake_counter, r->key) ==
        POS_PARK_LEN)
        send(arg, r, d, sizeof(d));
    sodium_memzero(d, sizeof(d));
}

int64_t relay_park_wake_due(relay_park *t, int64_t now_ms, relay_park_send_fn send, void *arg)
{
    int64_t next = -1;

    for (uint32_t i = t->waking, n; i; i = n) {
        relay_parked *r = &t->rec[i - 1];
        n = r->wnext;
        if (r->wake_next_ms <= now_ms && r->wake_step < RELAY_PARK_WAKES) {
            relay_park_send_wake(r, send, arg);
            /* from the step just sent: a series restarted by relay_park_rewake keeps its pace */
            if (++r->wake_step < RELAY_PARK_WAKES)
                r->wake_next_ms += wake_at_ms[r->wake_step] - wake_at_ms[r->wake_step - 1];
            else if (r->wake_next_ms < r->wake_start_ms + t->wake_hold_ms)
                r->wake_next_ms = r->wake_start_ms + t->wake_hold_ms;
        } else if (r->wake_step >= RELAY_PARK_WAKES && r->wake_next_ms <= now_ms) {
            relay_park_unwake(t, r); /* wake_start_ms stays: a HELLO after all measures it */
            continue;
        }
        if (next < 0 || r->wake_next_ms < next)
            next = r->wake_next_ms;
    }
    return next;
}

void relay_park_set_wake_hold(relay_park *t, int64_t ms)
{
    t->wake_hold_ms = ms > 0 ? ms : RELAY_PARK_WAKE_HOLD_MS;
}

uint32_t relay_park_rewake(relay_park *t, int64_t now_ms)
{
    uint32_t n = 0;
    for (uint32_t i = t->waking; i; i = t->rec[i - 1].wnext) {
        relay_parked *r = &t->rec[i - 1];
        if (!__atomic_exchange_n(&r->rewake, 0, __ATOMIC_RELAXED))
            continue;
        r->wake_step = 0; /* the next relay_park_wake_due sends at once, to r->addr */
        r->wake_next_ms = now_ms;
        if (addr_bucket(t, &r->addr) != r->abucket) { /* it roamed: found at the new address */
            aunlink(t, r);
            alink(t, r);
        }
        n++;
    }
    return n;
}

uint32_t relay_park_sweep(relay_park *t, int64_t now_ms, int64_t now_unix, int64_t lifetime_ms,
                          int64_t presence_ms, uint32_t max, relay_park_rec_fn expired,
                          relay_park_rec_fn presence, void *arg)
{
    uint32_t visited = 0;
    if (t->used == 0)
        return 0;
    if (max > t->used)
        max = t->used;
    while (visited < max) {
        if (t->sweep_at >= t->used)
            t->sweep_at = 0;
        relay_parked *r = &t->rec[t->sweep_at++];
        visited++;
        if (!r->id)
            continue;
        const relay_limits *lim = &r->tok->limits;
        if (now_ms - r->seen_ms >= lifetime_ms ||
            (lim->expires_at > 0 && now_unix >= lim->expires_at))
            expired(arg, r);
        else if (now_ms - r->presence_ms >= presence_ms)
            presence(arg, r);
    }
    return visited;
}

socklen_t relay_park_addr(const relay_parked *r, struct sockaddr_storage *out)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(out, 0, sizeof(*out));
    if (memcmp(r->addr.ip, v4mapped, sizeof(v4mapped)) == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        in->sin_port = r->addr.port;
        memcpy(&in->sin_addr, r->addr.ip + 12, 4);
        return sizeof(*in);
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = r->addr.port;
    memcpy(&in6->sin6_addr, r->addr.ip, 16);
    return sizeof(*in6);
}
