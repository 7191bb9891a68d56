/*
 * A small string-keyed hash table of intrusive nodes, for the relay's
 * services (token cache, connections per token, presence, budgets,
 * accounts). A user embeds struct strmap_node as the FIRST member of its
 * entry, sets the key (at most STRMAP_KEY_MAX - 1 bytes) and puts the node
 * in; the map never allocates nodes, only its bucket array. FNV-1a hashing,
 * power-of-two buckets, doubled when the map holds twice as many nodes.
 *
 * Who frees what: strmap_clear frees every node with free() (so only for
 * entries that are one malloc'd block); strmap_free frees the bucket array.
 */
#ifndef POS_RELAY_STRMAP_H
#define POS_RELAY_STRMAP_H

#include <stddef.h>

#define STRMAP_KEY_MAX 72

struct strmap_node {
    struct strmap_node *next;
    char key[STRMAP_KEY_MAX];
};

struct strmap {
    struct strmap_node **b;
    size_t nb, n; /* buckets (0 or a power of two), nodes */
};

/* strmap_get: the node with |key|, or NULL. */
struct strmap_node *strmap_get(const struct strmap *m, const char *key);

/* strmap_put inserts |n| (its key set, not yet present). Returns 0 or -1 (out of memory). */
int strmap_put(struct strmap *m, struct strmap_node *n);

/* strmap_remove unlinks |n| (present in |m|); the caller frees it. */
void strmap_remove(struct strmap *m, struct strmap_node *n);

/* strmap_clear frees every node with free() and empties |m| (buckets kept). */
void strmap_clear(struct strmap *m);

/* strmap_free frees the bucket array (the nodes must be gone). */
void strmap_free(struct strmap *m);

/*
 * STRMAP_FOREACH(m, var): |var| (a struct strmap_node *) visits every node.
 * The body must not remove |var|: walk m->b by hand for that.
 */
#define STRMAP_FOREACH(m, var)                                                                     \
    for (size_t var##_i = 0; var##_i < (m)->nb; var##_i++)                                         \
        for (struct strmap_node *var = (m)->b[var##_i]; var; var = var->next)

#endif
