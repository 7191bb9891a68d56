/*
 * The relay's local HTTP endpoint (libmicrohttpd, its own thread):
 * GET /healthz answers 200 "ok", or 503 with the reason when Redis is
 * unreachable; GET /metrics answers Prometheus text; GET /circuits answers
 * JSON with the byte counters of the most recently active circuits
 * (RELAY_FORWARD_RECENT, forward.h; docs/relay.md). The HTTP thread never
 * touches the relay's state: the loop publishes a snapshot (about twice a
 * second) and the thread reads that snapshot under a mutex.
 */
#ifndef POS_RELAY_METRICS_HTTP_H
#define POS_RELAY_METRICS_HTTP_H

#include <stddef.h>

#include "quic_server.h"
#include "services.h"

typedef struct relay_http relay_http;

/*
 * relay_http_new listens on |listen| ("ip:port"). Returns NULL with a
 * sentence in |err| when the address is invalid or cannot be bound.
 */
relay_http *relay_http_new(const char *listen, char *err, size_t errlen);

/* relay_http_publish replaces the snapshot the HTTP thread serves. */
void relay_http_publish(relay_http *h, const relay_server_stats *srv,
                        const relay_services_stats *svc, int redis_ok);

/* relay_http_del stops the thread and frees |h| (NULL is fine). */
void relay_http_del(relay_http *h);

#endif
