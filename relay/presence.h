/*
 * Presence for the relay's services (services.h is the facade): which peers
 * have their home connection here (P presence:PEERID -> this relay, short
 * TTL, refreshed), and the lookup of the relay holding a peer that is not
 * connected here. Semantics of each call: relay_presence_* in services.h.
 *
 * Lifetimes: relay_presence_svc_new borrows |loop|, |cfg| and |redis|. Call
 * relay_presence_svc_detach before pos_redis_async_del (lookups answered
 * during it are dropped without a callback), relay_presence_svc_del after.
 */
#ifndef POS_RELAY_PRESENCE_H
#define POS_RELAY_PRESENCE_H

#include "redis.h"
#include "redis_async.h"
#include "services.h"

typedef struct relay_presence_svc relay_presence_svc;

/* NULL when out of memory. */
relay_presence_svc *relay_presence_svc_new(struct ev_loop *loop, const relay_config *cfg,
                                           pos_redis_async *redis);

void relay_presence_svc_add(relay_presence_svc *s, const char *peer_id);
void relay_presence_svc_remove(relay_presence_svc *s, const char *peer_id);
uint64_t relay_presence_svc_lookup(relay_presence_svc *s, const char *peer_id, relay_presence_cb cb,
                                   void *arg);
void relay_presence_svc_cancel(relay_presence_svc *s, uint64_t handle);

/*
 * Parked peers (server_park.c): relay_presence_svc_park: a home connection
 * of |peer_id| parked: it no longer counts as live here, and the key is
 * written with the parked TTL (150 s) instead of being deleted;
 * relay_presence_svc_keep_parked: the once-a-minute write of a parked peer;
 * relay_presence_svc_unpark: its record ended: compare-and-delete, unless a
 * live home connection of the peer is here.
 */
void relay_presence_svc_park(relay_presence_svc *s, const char *peer_id);
void relay_presence_svc_keep_parked(relay_presence_svc *s, const char *peer_id);
/* relay_presence_svc_keep_parked_many: the same for |n| (<= RELAY_PRESENCE_BATCH) peers, one
 * Redis command. */
void relay_presence_svc_keep_parked_many(relay_presence_svc *s,
                                         const char (*peer_ids)[POS_PEER_ID_STRLEN], unsigned n);
void relay_presence_svc_unpark(relay_presence_svc *s, const char *peer_id);
/* relay_presence_svc_hold: |peer_id| counts as here without a write (shutdown: its key is
 * deleted by the final clean-up with the others). */
void relay_presence_svc_hold(relay_presence_svc *s, const char *peer_id);

/*
 * relay_presence_svc_refresh: extends (or puts back) every presence key naming this relay,
 * PRESENCE_CHUNK keys a Redis call (after Redis came back).
 */
void relay_presence_svc_refresh(relay_presence_svc *s);
/*
 * relay_presence_svc_refresh_step: the same for one of RELAY_PRESENCE_STEPS shares of the
 * keys (each entry belongs to one): the periodic refresh sends one share at a time, so that
 * 50,000 live clients' keys do not reach Redis in one burst that delays every other request.
 */
#define RELAY_PRESENCE_STEPS 5
void relay_presence_svc_refresh_step(relay_presence_svc *s, unsigned step);

/* relay_presence_svc_shutdown: lookups are answered unavailable from now on. */
void relay_presence_svc_shutdown(relay_presence_svc *s);

/*
 * relay_presence_svc_append_final appends to |r|'s pipeline a
 * compare-and-delete of each presence key naming this relay. Returns the
 * number of commands.
 */
int relay_presence_svc_append_final(relay_presence_svc *s, pos_redis *r);

/* relay_presence_svc_forget: drops the local presence table (after the final clean-up). */
void relay_presence_svc_forget(relay_presence_svc *s);

/* Redis replies that were errors, for /metrics. */
uint64_t relay_presence_svc_reply_errors(const relay_presence_svc *s);

void relay_presence_svc_detach(relay_presence_svc *s);
void relay_presence_svc_del(relay_presence_svc *s);

#endif
