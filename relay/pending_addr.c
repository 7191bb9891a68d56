/*
 * Handshakes in progress per source address (see pending_addr.h): a chained
 * hash table of (address prefix, count).
 */
#include "pending_addr.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 1024 /* entries are bounded by the pending cap (about 1100 by default) */

struct entry {
    struct entry *next;
    uint8_t key[9]; /* family tag + 4 (IPv4) or 8 (IPv6 /64) bytes */
    unsigned count;
};

struct relay_pending_addrs {
    unsigned per_addr;
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    struct entry *buckets[N_BUCKETS];
};

/* make_key: the counted prefix of |a|; 0, or -1 for another family. */
static int make_key(const struct sockaddr *a, uint8_t key[9])
{
    memset(key, 0, 9);
    if (a->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)a)->sin_addr, 4);
        return 0;
    }
    if (a->sa_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)a)->sin6_addr, 8);
        return 0;
    }
    return -1;
}

static struct entry **find(relay_pending_addrs *t, const uint8_t key[9])
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, key, 9, t->hash_key);
    memcpy(&v, h, sizeof(v));
    struct entry **pp = &t->buckets[v % N_BUCKETS];
    while (*pp && memcmp((*pp)->key, key, 9) != 0)
        pp = &(*pp)->next;
    return pp;
}

relay_pending_addrs *relay_pending_addrs_new(unsigned per_addr)
{
    relay_pending_addrs *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->per_addr = per_addr ? per_addr : 1;
    crypto_shorthash_keygen(t->hash_key);
    return t;
}

int relay_pending_addrs_take(relay_pending_addrs *t, const struct sockaddr *addr)
{
    uint8_t key[9];
    struct entry **pp, *e;
    if (make_key(addr, key) != 0)
        return -1;
    pp = find(t, key);
    if (*pp) {
        if ((*pp)->count >= t->per_addr)
            return -1;
        (*pp)->count++;
        return 0;
    }
    e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    memcpy(e->key, key, sizeof(key));
    e->count = 1;
    *pp = e;
    return 0;
}

void relay_pending_addrs_give(relay_pending_addrs *t, const struct sockaddr *addr)
{
    uint8_t key[9];
    struct entry **pp, *e;
    if (make_key(addr, key) != 0)
        return;
    pp = find(t, key);
    e = *pp;
    if (!e)
        return;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

unsigned relay_pending_addrs_count(const relay_pending_addrs *t, const struct sockaddr *addr)
{
    uint8_t key[9];
    if (make_key(addr, key) != 0)
        return 0;
    struct entry **pp = find((relay_pending_addrs *)t, key);
    return *pp ? (*pp)->count : 0;
}

void relay_pending_addrs_del(relay_pending_addrs *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        struct entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t);
}
