/* Connection id -> owner map (see cid_map.h). */
#include "cid_map.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_BUCKETS 256

struct cid_entry {
    struct cid_entry *next;
    void *owner;
    uint8_t len;
    uint8_t id[POS_CID_MAP_MAX_LEN];
};

struct pos_cid_map {
    struct cid_entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t n, max;
    uint8_t key[crypto_shorthash_KEYBYTES];
};

static size_t bucket(const pos_cid_map *m, const uint8_t *id, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, id, len, m->key);
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (m->n_buckets - 1));
}

pos_cid_map *pos_cid_map_new(size_t max_entries)
{
    pos_cid_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->n_buckets = FIRST_BUCKETS;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->max = max_entries;
    crypto_shorthash_keygen(m->key);
    return m;
}

void pos_cid_map_del(pos_cid_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct cid_entry *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    sodium_memzero(m->key, sizeof(m->key));
    free(m);
}

/* grow doubles the buckets; out of memory, the chains just get longer. */
static void grow(pos_cid_map *m)
{
    size_t old = m->n_buckets;
    struct cid_entry **nb = calloc(old * 2, sizeof(*nb)), **ob = m->buckets;
    if (!nb)
        return;
    m->buckets = nb;
    m->n_buckets = old * 2;
    for (size_t i = 0; i < old; i++) {
        struct cid_entry *e = ob[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t b = bucket(m, e->id, e->len);
            e->next = nb[b];
            nb[b] = e;
        }
    }
    free(ob);
}

int pos_cid_map_add(pos_cid_map *m, const uint8_t *id, size_t len, void *owner)
{
    struct cid_entry *e;
    size_t b;
    if (len == 0 || len > POS_CID_MAP_MAX_LEN || !owner || (m->max && m->n >= m->max))
        return -1;
    e = malloc(sizeof(*e));
    if (!e)
        return -1;
    if (m->n >= m->n_buckets)
        grow(m);
    b = bucket(m, id, len);
    memcpy(e->id, id, len);
    e->len = (uint8_t)len;
    e->owner = owner;
    e->next = m->buckets[b];
    m->buckets[b] = e;
    m->n++;
    return 0;
}

void pos_cid_map_remove(pos_cid_map *m, const uint8_t *id, size_t len, const void *owner)
{
    if (len == 0 || len > POS_CID_MAP_MAX_LEN)
        return;
    for (struct cid_entry **pp = &m->buckets[bucket(m, id, len)]; *pp; pp = &(*pp)->next) {
        struct cid_entry *e = *pp;
        if (e->owner == owner && e->len == len && memcmp(e->id, id, len) == 0) {
            *pp = e->next;
            free(e);
            m->n--;
            return;
        }
    }
}

void *pos_cid_map_find(const pos_cid_map *m, const uint8_t *id, size_t len)
{
    if (len == 0 || len > POS_CID_MAP_MAX_LEN)
        return NULL;
    for (const struct cid_entry *e = m->buckets[bucket(m, id, len)]; e; e = e->next)
        if (e->len == len && memcmp(e->id, id, len) == 0)
            return e->owner;
    return NULL;
}

size_t pos_cid_map_count(const pos_cid_map *m)
{
    return m->n;
}
