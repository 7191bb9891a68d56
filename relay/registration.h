/*
 * Registration of the relay with the discovery API (POST
 * /api/p2p/relays every register_interval_s, or a third of the TTL the API
 * answers; backoff up to 5 s on failure; DELETE at shutdown). The relay's
 * only libcurl user: a curl multi handle whose sockets and timer are libev
 * watchers, so nothing blocks the loop except the bounded DELETE at
 * shutdown.
 *
 * Lifetimes: relay_registration_new borrows |loop| and |cfg|.
 */
#ifndef POS_RELAY_REGISTRATION_H
#define POS_RELAY_REGISTRATION_H

#include <ev.h>
#include <stddef.h>

#include "services.h"

typedef struct relay_registration relay_registration;

/*
 * relay_registration_new: starts registering at once when |cfg->api_url| is
 * set, with the addresses of cfg->public_addrs, or |announce| when the
 * config has none. NULL when curl cannot be set up or out of memory.
 */
relay_registration *relay_registration_new(struct ev_loop *loop, const relay_config *cfg,
                                           const char (*announce)[POS_ADDR_STRLEN],
                                           size_t n_announce);

/*
 * relay_registration_shutdown: stops registering (drops a POST in flight)
 * and, when an API is configured, DELETEs our entry, waiting at most
 * |timeout_ms|.
 */
void relay_registration_shutdown(relay_registration *s, long timeout_ms);

/* Adds registrations_ok / _failed into |out|. */
void relay_registration_stats_add(const relay_registration *s, relay_services_stats *out);

void relay_registration_del(relay_registration *s);

#endif
