/*
 * The circuit table (see circuit.h): preallocated arrays indexed by slot, a
 * FIFO ring of free circuit indexes, and per-owner doubly linked lists of
 * sides threaded through the slots (indexes + 1, 0 = none), so closing a
 * connection or following its new address touches only its own sides.
 */
#include "circuit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void relay_budget_init(relay_budget *b, int unlimited, int64_t low_water)
{
    memset(b, 0, sizeof *b);
    b->unlimited = unlimited ? 1 : 0;
    b->low_water = low_water;
}

void relay_budget_grant(relay_budget *b, int64_t bytes)
{
    if (bytes > 0)
        b->available += bytes;
    b->lease_pending = 0;
}

int relay_addr_from_sockaddr(relay_addr *out, const struct sockaddr *sa)
{
    memset(out, 0, sizeof *out);
    if (sa == NULL)
        return RELAY_CIRCUIT_ERR_INVALID;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->ip[10] = 0xff;
        out->ip[11] = 0xff;
        memcpy(out->ip + 12, &in->sin_addr, 4);
        out->port = in->sin_port;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(out->ip, &in6->sin6_addr, 16);
        out->port = in6->sin6_port;
        return 0;
    }
    return RELAY_CIRCUIT_ERR_INVALID;
}

relay_circuits *relay_circuits_new(uint32_t capacity, uint32_t seed)
{
    if (capacity == 0 || capacity > RELAY_CIRCUIT_MAX_CAPACITY)
        return NULL;
    relay_circuits *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->capacity = capacity;
    while ((1u << t->slot_bits) < 2 * capacity)
        t->slot_bits++;
    t->slot_mask = (1u << t->slot_bits) - 1;
    t->gen_max = (uint32_t)((1ull << (32 - t->slot_bits)) - 1);
    t->sides = calloc(2 * (size_t)capacity, sizeof *t->sides);
    t->opened_ms = calloc(capacity, sizeof *t->opened_ms);
    t->gen = calloc(capacity, sizeof *t->gen);
    t->free_ring = calloc(capacity, sizeof *t->free_ring);
    if (!t->sides || !t->opened_ms || !t->gen || !t->free_ring) {
        relay_circuits_del(t);
        return NULL;
    }
    uint32_t x = seed | 1;
    for (uint32_t i = 0; i < capacity; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32: spread first generations */
        t->gen[i] = x % t->gen_max + 1;          /* 1 .. gen_max: never id 0 */
        t->free_ring[i] = i;
    }
    t->free_count = capacity;
    return t;
}

int relay_circuits_set_workers(relay_circuits *t, uint32_t n_workers)
{
    uint32_t bits = 0;
    while (bits < 16 && (1u << bits) < n_workers)
        bits++;
    if (n_workers == 0 || t->open != 0 || t->slot_bits + bits > 30)
        return RELAY_CIRCUIT_ERR_INVALID;
    t->worker_bits = bits;
    t->n_workers = n_workers;
    t->gen_max = (uint32_t)((1ull << (32 - t->slot_bits - bits)) - 1);
    for (uint32_t i = 0; i < t->capacity; i++)
        t->gen[i] = (t->gen[i] - 1) % t->gen_max + 1;
    return 0;
}

void relay_circuits_del(relay_circuits *t)
{
    if (t == NULL)
        return;
    free(t->sides);
    free(t->opened_ms);
    free(t->gen);
    free(t->free_ring);
    free(t);
}

static void owner_link(relay_circuits *t, relay_circuit_owner *o, uint32_t slot)
{
    relay_side *s = &t->sides[slot];
    s->owner = o;
    s->prev = 0;
    s->next = o->head;
    if (o->head)
        t->sides[o->head - 1].prev = slot + 1;
    o->head = slot + 1;
    o->count++;
}

static void owner_unlink(relay_circuits *t, uint32_t slot)
{
    relay_side *s = &t->sides[slot];
    relay_circuit_owner *o = s->owner;
    if (s->prev)
        t->sides[s->prev - 1].next = s->next;
    else
        o->head = s->next;
    if (s->next)
        t->sides[s->next - 1].prev = s->prev;
    o->count--;
}

/* least_sides: the worker with the fewest open sides but |skip| (ties: first from next_worker). */
static uint32_t least_sides(const relay_circuits *t, uint32_t skip)
{
    uint32_t n = t->n_workers > 1 ? t->n_workers : 1, best = n;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t w = (t->next_worker + k) % n;
        if (w != skip && (best == n || t->worker_sides[w & 63] < t->worker_sides[best & 63]))
            best = w;
    }
    return best == n ? 0 : best; /* one worker: both sides on it */
}

int relay_circuit_open(relay_circuits *t, relay_circuit_owner *owner0, const struct sockaddr *addr0,
                       relay_budget *budget0, relay_circuit_owner *owner1,
                       const struct sockaddr *addr1, relay_budget *budget1, int64_t now_ms,
                       uint32_t id_out[2])
{
    relay_addr a[2];
    if (owner0 == NULL || owner1 == NULL || owner0 == owner1)
        return RELAY_CIRCUIT_ERR_INVALID;
    if (relay_addr_from_sockaddr(&a[0], addr0) != 0 || relay_addr_from_sockaddr(&a[1], addr1) != 0)
        return RELAY_CIRCUIT_ERR_INVALID;
    if (t->free_count == 0)
        return RELAY_CIRCUIT_ERR_FULL;
    uint32_t c = t->free_ring[t->free_head];
    t->free_head = (t->free_head + 1) % t->capacity;
    t->free_count--;
    relay_circuit_owner *owners[2] = {owner0, owner1};
    relay_budget *budgets[2] = {budget0, budget1};
    uint32_t w0 = least_sides(t, t->n_workers); /* n_workers: none to skip */
    t->next_worker = w0 + 1;
    uint32_t ws[2] = {w0, least_sides(t, w0)};
    for (uint32_t k = 0; k < 2; k++) {
        uint32_t slot = 2 * c + k;
        relay_side *s = &t->sides[slot];
        memset(s, 0, sizeof *s);
        uint32_t w = ws[k];
        s->id = (t->gen[c] << (t->slot_bits + t->worker_bits)) | (w << t->slot_bits) | slot;
        t->worker_sides[w & 63]++;
        s->addr = a[k];
        s->budget = budgets[k];
        owner_link(t, owners[k], slot);
        id_out[k] = s->id;
    }
    if (budget0)
        budget0->circuits++;
    if (budget1 && budget1 != budget0)
        budget1->circuits++; /* both sides of one token: one circuit of that token */
    t->opened_ms[c] = now_ms;
    t->open++;
    return 0;
}

int relay_circuit_close(relay_circuits *t, uint32_t id, int64_t now_ms, relay_circuit_info *info)
{
    relay_side *found = relay_circuit_find(t, id);
    if (found == NULL)
        return RELAY_CIRCUIT_ERR_NOT_FOUND;
    uint32_t c = (uint32_t)(found - t->sides) / 2;
    if (info) {
        memset(info, 0, sizeof *info);
        info->opened_ms = t->opened_ms[c];
        info->closed_ms = now_ms;
    }
    relay_budget *b0 = t->sides[2 * c].budget, *b1 = t->sides[2 * c + 1].budget;
    if (b0 && b0->circuits)
        b0->circuits--;
    if (b1 && b1 != b0 && b1->circuits)
        b1->circuits--;
    for (uint32_t k = 0; k < 2; k++) {
        relay_side *s = &t->sides[2 * c + k];
        if (info) {
            info->id[k] = s->id;
            info->owner[k] = s->owner;
            info->budget[k] = s->budget;
            info->stats[k] = s->stats;
        }
        owner_unlink(t, 2 * c + k);
        t->worker_sides[(s->id >> t->slot_bits) & ((1u << t->worker_bits) - 1) & 63]--;
        memset(s, 0, sizeof *s);
    }
    /* A new generation for the next use of this index, so stale ids stop matching. */
    t->gen[c] = t->gen[c] >= t->gen_max ? 1 : t->gen[c] + 1;
    t->free_ring[(t->free_head + t->free_count) % t->capacity] = c;
    t->free_count++;
    t->open--;
    return 0;
}

unsigned relay_circuit_owner_close(relay_circuits *t, relay_circuit_owner *owner, int64_t now_ms,
                                   relay_circuit_closed_cb cb, void *arg)
{
    unsigned n = 0;
    /* Each close unlinks the head, so the loop ends after owner->count rounds. */
    while (owner->head) {
        relay_circuit_info info;
        if (relay_circuit_close(t, t->sides[owner->head - 1].id, now_ms, &info) != 0)
            break; /* cannot happen: the list holds open sides only */
        n++;
        if (cb)
            cb(arg, &info);
    }
    return n;
}

int relay_circuit_owner_set_addr(relay_circuits *t, relay_circuit_owner *owner,
                                 const struct sockaddr *addr)
{
    relay_addr a;
    if (relay_addr_from_sockaddr(&a, addr) != 0)
        return RELAY_CIRCUIT_ERR_INVALID;
    for (uint32_t i = owner->head; i; i = t->sides[i - 1].next)
        t->sides[i - 1].addr = a;
    return 0;
}

int relay_circuit_admit(const relay_circuit_owner *owner, const relay_budget *budget,
                        uint32_t max_per_owner, uint32_t max_per_budget)
{
    if (max_per_owner && owner->count >= max_per_owner)
        return RELAY_CIRCUIT_ERR_CONN_LIMIT;
    if (max_per_budget && budget && budget->circuits >= max_per_budget)
        return RELAY_CIRCUIT_ERR_TOKEN_LIMIT;
    return 0;
}

int relay_circuit_stats(relay_circuits *t, uint32_t id, relay_side_stats *out)
{
    relay_side *s = relay_circuit_find(t, id);
    if (s == NULL)
        return RELAY_CIRCUIT_ERR_NOT_FOUND;
    *out = s->stats;
    return 0;
}

const char *relay_circuit_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case RELAY_CIRCUIT_ERR_FULL:
        return "no free circuit: the relay's circuit table is full";
    case RELAY_CIRCUIT_ERR_INVALID:
        return "invalid circuit argument";
    case RELAY_CIRCUIT_ERR_NOT_FOUND:
        return "no such circuit";
    case RELAY_CIRCUIT_ERR_NOMEM:
        return "out of memory";
    case RELAY_CIRCUIT_ERR_CONN_LIMIT:
        return "too many circuits on this connection";
    case RELAY_CIRCUIT_ERR_TOKEN_LIMIT:
        return "too many circuits for this token on this relay";
    default:
        return "unknown error";
    }
}
