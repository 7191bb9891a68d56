/*
 * The relay list in Redis. Layout, under the configured prefix P:
 *   P relay:<id>  string: the entry's canonical JSON, expiring after its TTL
 *   P relays      sorted set: member <id>, score = expiry in unix milliseconds
 * The TTL is chosen per registration (pos_entry_ttl_s): the normal one, or
 * the Spacedrive one for an entry whose peer id is a libp2p PeerId.
 * Registering sets both in one Lua script (atomic); removing deletes both in
 * another. Listing drops expired members with ZREMRANGEBYSCORE, takes the
 * live ids with ZRANGEBYSCORE and reads their entries with one MGET: no KEYS
 * or SCAN anywhere.
 *
 * A pos_store wraps one synchronous Redis connection and is used by one
 * thread at a time.
 */
#ifndef POS_DISCOVERY_STORE_H
#define POS_DISCOVERY_STORE_H

#include <stddef.h>

#include "entry.h"
#include "redis.h"

/* At most this many relays are listed; more would be a misconfiguration. */
#define POS_STORE_MAX_RELAYS 4096

typedef struct pos_store {
    pos_redis redis;
    unsigned ttl_s;            /* of entries with a base64 peer id */
    unsigned spacedrive_ttl_s; /* of entries with a libp2p PeerId */
    int register_script;
    int remove_script;
} pos_store;

/*
 * pos_store_init prepares |s| without connecting. |ttl_s| and
 * |spacedrive_ttl_s| are the entry lifetimes (see pos_entry_ttl_s).
 */
void pos_store_init(pos_store *s, const pos_redis_target *t, const char *prefix, unsigned ttl_s,
                    unsigned spacedrive_ttl_s);

/* pos_store_free closes the connection. */
void pos_store_free(pos_store *s);

/*
 * pos_store_register writes |e| with its TTL, replacing an entry of the same
 * id. Returns 0, or -1 with a sentence in |err| when Redis is unreachable or
 * refused the write.
 */
int pos_store_register(pos_store *s, const pos_entry *e, char *err, size_t errlen);

/*
 * pos_store_remove deletes the entry |id| (lower-case UUID); removing an
 * absent entry succeeds. Returns 0, or -1 with a sentence in |err|.
 */
int pos_store_remove(pos_store *s, const char *id, char *err, size_t errlen);

/*
 * pos_store_list reads the live entries and writes them as one JSON array
 * into a new buffer |*body| (caller frees with free) of |*len| bytes, with
 * the number of entries in |*count|. Entries that no longer parse are
 * skipped. Returns 0, or -1 with a sentence in |err| (nothing allocated).
 */
int pos_store_list(pos_store *s, char **body, size_t *len, size_t *count, char *err, size_t errlen);

#endif
