/* The services' small string-keyed hash table (see strmap.h). */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t map_slot(const struct strmap *m, const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h & (m->nb - 1));
}

struct strmap_node *strmap_get(const struct strmap *m, const char *key)
{
    if (!m->nb)
        return NULL;
    for (struct strmap_node *n = m->b[map_slot(m, key)]; n; n = n->next) {
        if (strcmp(n->key, key) == 0)
            return n;
    }
    return NULL;
}

static int map_grow(struct strmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 256;
    struct strmap_node **b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    struct strmap bigger = {b, nb, m->n};
    for (size_t i = 0; i < m->nb; i++) {
        struct strmap_node *n = m->b[i], *next;
        for (; n; n = next) {
            next = n->next;
            size_t s = map_slot(&bigger, n->key);
            n->next = b[s];
            b[s] = n;
        }
    }
    free(m->b);
    *m = bigger;
    return 0;
}

int strmap_put(struct strmap *m, struct strmap_node *n)
{
    /* A failed grow is fine while there are buckets: the chains just get longer. */
    if ((m->n >= m->nb * 2 || !m->nb) && map_grow(m) != 0 && !m->nb)
        return -1;
    size_t s = map_slot(m, n->key);
    n->next = m->b[s];
    m->b[s] = n;
    m->n++;
    return 0;
}

void strmap_remove(struct strmap *m, struct strmap_node *target)
{
    if (!m->nb)
        return;
    for (struct strmap_node **p = &m->b[map_slot(m, target->key)]; *p; p = &(*p)->next) {
        if (*p == target) {
            *p = target->next;
            m->n--;
            return;
        }
    }
}

void strmap_clear(struct strmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        struct strmap_node *n = m->b[i], *next;
        for (; n; n = next) {
            next = n->next;
            free(n);
        }
        m->b[i] = NULL;
    }
    m->n = 0;
}

void strmap_free(struct strmap *m)
{
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}
