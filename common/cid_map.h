/*
 * A map from QUIC connection ids (1 to POS_CID_MAP_MAX_LEN bytes) to the
 * connection that owns them: keyed hash (SipHash, random key per map, so a
 * peer cannot aim ids at one bucket), chained buckets that double as the map
 * fills, O(1) on average. Bounded: at most |max_entries| ids at once. Used
 * by the library's endpoint (client-lib/src/endpoint.c) and the relay's
 * server (relay/server_conn.c): variable-length ids, several ids per owner,
 * removal by (id, owner).
 */
#ifndef POS_CID_MAP_H
#define POS_CID_MAP_H

#include <stddef.h>
#include <stdint.h>

#define POS_CID_MAP_MAX_LEN 20 /* NGTCP2_MAX_CIDLEN */

typedef struct pos_cid_map pos_cid_map;

/*
 * pos_cid_map_new: an empty map holding at most |max_entries| ids (0: no
 * limit but memory). Returns NULL when out of memory.
 */
pos_cid_map *pos_cid_map_new(size_t max_entries);

/* pos_cid_map_del frees |m| (not the owners). NULL is ignored. */
void pos_cid_map_del(pos_cid_map *m);

/*
 * pos_cid_map_add maps |id| (|len| bytes) to |owner| (not NULL). Returns 0,
 * or -1 when |len| is 0 or over POS_CID_MAP_MAX_LEN, the map is full, or
 * memory is out. An id already mapped is added again (find returns the
 * newest); callers issue random ids.
 */
int pos_cid_map_add(pos_cid_map *m, const uint8_t *id, size_t len, void *owner);

/* pos_cid_map_remove removes |id| if |owner| holds it; otherwise nothing. */
void pos_cid_map_remove(pos_cid_map *m, const uint8_t *id, size_t len, const void *owner);

/* pos_cid_map_find: the owner of |id|, or NULL. */
void *pos_cid_map_find(const pos_cid_map *m, const uint8_t *id, size_t len);

/* pos_cid_map_count: how many ids are mapped. */
size_t pos_cid_map_count(const pos_cid_map *m);

#endif
