/*
 * The relay's QUIC side: UDP sockets on the relay port (server_udp.c), the
 * ngtcp2 server connections (quic_server.c: routing and accepting;
 * server_conn.c: one connection), the control protocol on each client's
 * streams (server_ctrl.c) and the circuit broker (broker.c, sans-I/O). The
 * relay's ngtcp2 calls are in those three server files and nowhere else in
 * relay/ (the 1.x API renames much of 0.12: a port touches only them).
 *
 * Flow of a client: its first Initial triggers the per-address rate check
 * (relay_rate_check_addr) before any crypto is spent; under load (too many
 * handshakes pending) a stateless Retry proves the address first. After the
 * mutual TLS handshake the relay knows the client's peer id, reads HELLO,
 * asks relay_auth_check, then answers WELCOME (observed address, limits) or
 * closes with the refusal as application error code and reason phrase.
 *
 * Lifetimes: the server borrows |loop|, |cfg| and the services (set with
 * relay_server_set_services before the loop runs); relay_server_del closes
 * the sockets and frees every connection.
 */
#ifndef POS_RELAY_QUIC_SERVER_H
#define POS_RELAY_QUIC_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "forward.h"
#include "relay_config.h"
#include "services.h"

typedef struct relay_server relay_server;

/* One worker's share (relay/workers.h); with one worker, worker 0 is the whole relay. */
typedef struct relay_worker_stats {
    uint64_t packets_in;    /* datagrams its sockets received */
    uint64_t conns;         /* gauge: authenticated clients it serves */
    uint64_t circuit_sides; /* gauge: open circuit sides whose id names it */
    uint64_t forwarded;     /* DATA frames it forwarded */
    uint64_t accepted;      /* clients authenticated on it (WELCOME) */
} relay_worker_stats;

/* Counters for /metrics; all totals since start except the gauges. */
typedef struct relay_server_stats {
    uint64_t conns_active;      /* gauge: authenticated clients */
    uint64_t conns_handshaking; /* gauge: connections not yet authenticated */
    uint64_t handshakes_ok;
    uint64_t handshakes_failed;
    uint64_t handshakes_resumed; /* of handshakes_ok: TLS 1.3 resumption with a ticket */
    uint64_t auth_ok;
    uint64_t refused[16]; /* by enum relay_refusal - 0x100 (index 0 unused) */
    uint64_t retries_sent;
    uint64_t version_negotiations;
    uint64_t pending_per_addr_drops; /* validated Initials over max_pending_per_addr */
    uint64_t packets_in;
    uint64_t packets_out;
    uint64_t packets_dropped;
    uint64_t data_frames_dropped; /* frames neither forwarded nor QUIC (fallback misses) */
    /* circuits */
    uint64_t circuits_open;            /* gauge */
    uint64_t circuit_requests_pending; /* gauge: CONNECTs in flight */
    uint64_t circuit_requests;         /* CONNECTs received */
    uint64_t circuits_opened, circuits_closed;
    uint64_t circuit_redirects;      /* REDIRECT sent */
    uint64_t circuit_errors;         /* ERROR sent (not connected, declined, timeout, busy) */
    uint64_t circuits_refused_limit; /* ERROR for a circuit cap (per connection, per token) */
    uint64_t forward_send_failed;    /* forwarded datagrams the socket refused (lost) */
    /* hole punching (broker.h) */
    uint64_t punches_started;        /* attempts coordinated: PUNCH_START to both sides */
    uint64_t punch_requests;         /* PUNCH_REQUEST received */
    uint64_t punch_requests_ignored; /* of which ignored (too soon, peer v1, punch off, stale) */
    uint64_t punch_reports[3];       /* PUNCH_REPORT: direct, failed, fell back */
    uint64_t punch_reports_ignored;  /* PUNCH_REPORT for a circuit not the sender's */
    uint64_t punch_direct_ms_sum;    /* time to direct summed over the "direct" reports */
    uint64_t punches_on_move;        /* of punches_started: a side's address changed */
    uint64_t punch_moves_ignored;    /* address changes that started none (too soon) */
    /* parking (server_park.c) */
    uint64_t parked;               /* gauge: parked records */
    uint64_t awake;                /* gauge: authenticated home connections live */
    uint64_t parks;                /* PARKED sent */
    uint64_t parks_refused;        /* PARK answered with ERROR */
    uint64_t park_ended[5];        /* records ended: woken/home, expired, revoked, shutdown, bye */
    uint64_t wakes_sent;           /* WAKE datagrams */
    uint64_t wake_ms_sum;          /* first WAKE to the woken client's HELLO, summed */
    uint64_t wake_count;           /* ... over these wakes */
    uint64_t park_keepalives_ok;   /* valid keep-alives (KEEPALIVE or QUIET) */
    uint64_t park_acks;            /* PARK_ACKs sent (valid KEEPALIVEs) */
    uint64_t park_keepalives_drop; /* dropped: malformed, unknown, too soon, bad mac, replayed */
    uint64_t park_roams;           /* valid keep-alives from a new address */
    uint64_t heap_trims;           /* malloc_trim calls: freed heap given back (server_park.c) */
    relay_forward_stats fw;        /* the forwarder's counters (summed over the workers) */
    uint32_t n_workers;
    relay_worker_stats worker[RELAY_MAX_WORKERS];
} relay_server_stats;

/*
 * relay_server_new binds the UDP sockets (cfg->listen, or 0.0.0.0 and :: on
 * cfg->port; server_udp.c) and makes the TLS credentials from
 * cfg->identity. Returns NULL with a sentence in |err| (e.g. the address
 * already in use).
 */
relay_server *relay_server_new(struct ev_loop *loop, const relay_config *cfg, char *err,
                               size_t errlen);

/*
 * The server's I/O seam: where its datagrams go and what time it is. The
 * UDP sockets and CLOCK_MONOTONIC by default (relay_server_new); a fuzz
 * target or a test gives its own and feeds datagrams to relay_server_input.
 */
typedef struct relay_io {
    /*
     * send: one datagram |data| of |len| bytes from local address |sock| (an
     * index into the server's local addresses) to |to|. Returns 0, or -1 when
     * it was dropped (counted; QUIC recovers as from any loss).
     */
    int (*send)(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                socklen_t tolen);
    /* now: a monotonic clock in nanoseconds (ngtcp2's timestamps). */
    uint64_t (*now)(void *arg);
    void *arg;
} relay_io;

/*
 * relay_server_new_io makes a server without sockets: |locals| (|n_locals|,
 * at most RELAY_MAX_ADDRS) are its local addresses, |io| sends and tells
 * the time (copied; |io->arg| is borrowed; NULL: the UDP sockets that
 * relay_server_new binds next). Timers still run on |loop|.
 * Returns NULL with a sentence in |err| (out of memory, bad identity).
 */
relay_server *relay_server_new_io(struct ev_loop *loop, const relay_config *cfg, const relay_io *io,
                                  const struct sockaddr_storage *locals, size_t n_locals, char *err,
                                  size_t errlen);

/*
 * relay_server_input processes one received datagram |data| (|len| bytes,
 * at most 1500) that came from |from| to local address |sock|: the QUIC
 * side (version filter, Retry, connections, control messages) and relay
 * data frames the forwarder did not take. Answers go out through the I/O
 * seam, within this call or later from timers and service callbacks.
 */
void relay_server_input(relay_server *s, int sock, const uint8_t *data, size_t len,
                        const struct sockaddr *from, socklen_t fromlen);

/* relay_server_set_services: where auth, rate limits and presence go; call before the loop runs. */
void relay_server_set_services(relay_server *s, relay_services *svc);

/*
 * relay_server_announce_addrs writes the addresses to register with the
 * discovery API when the config has no public_addrs: the bound addresses,
 * or for a wildcard bind the host's interface addresses with the port.
 * Returns how many were written (at most |max|).
 */
size_t relay_server_announce_addrs(const relay_server *s, char (*out)[POS_ADDR_STRLEN], size_t max);

/* relay_server_revoke closes every connection authenticated with |token_id|
 * (RELAY_REFUSED_REVOKED). */
void relay_server_revoke(relay_server *s, const char *token_id);

/* relay_server_goaway closes every connection with RELAY_GOING_AWAY and stops accepting new ones.
 */
void relay_server_goaway(relay_server *s);

void relay_server_stats_get(const relay_server *s, relay_server_stats *out);

void relay_server_del(relay_server *s);

#endif
