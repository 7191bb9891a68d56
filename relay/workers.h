/*
 * The relay on every core (config key workers, docs/relay.md "Workers"):
 * N threads share the one UDP port. Each worker has its own socket per
 * address (SO_REUSEPORT; worker 0's are srv->socks) and its own libev loop,
 * receive and send buffers and forwarder; a classic BPF program on the port
 * steers each datagram to a worker:
 *   QUIC short header   byte 1 (the first byte of the destination connection
 *                       id) modulo N: the server's ids name their worker
 *                       (relay_worker_mark_cid);
 *   QUIC long header    byte 6 (the first DCID byte) modulo N: a client's
 *                       first Initial lands on a deterministic worker, which
 *                       creates the connection with ids naming the worker
 *                       that has the fewest connections (quic_server.c);
 *   data frame          the worker bits of the circuit id (bytes 1..4,
 *                       relay_circuits_set_workers): a circuit's two sides
 *                       go to the two workers with the fewest open sides,
 *                       whatever workers their connections are on.
 * The control state (connections, connection ids, broker, circuit table,
 * services, budgets, limits, counters) is one, behind one read-write lock:
 * the main loop (timers, Redis, discovery) holds it exclusively except
 * while it waits for events, and a worker takes it exclusively for the
 * QUIC datagrams of a batch; the forwarders take it shared, so the data
 * frames of different workers are forwarded in parallel (each side's
 * frames reach one worker, budgets are spent atomically, leases go out
 * one at a time). Forwarded batches are sent outside the lock, from the
 * receiving worker's socket (any socket of the port will do). So limits,
 * caps and counters are per relay whatever N is, and a circuit whose two
 * sides sit on different workers forwards both ways. Retry tokens,
 * stateless resets and session tickets use the server's one set of
 * secrets.
 *
 * With workers = 1 none of this exists: the main loop serves the sockets.
 */
#ifndef POS_RELAY_WORKERS_H
#define POS_RELAY_WORKERS_H

#include <stddef.h>

#include "quic_server.h"

/*
 * relay_workers_start starts the worker threads of |s| (from
 * relay_server_new with cfg->workers > 1; nothing otherwise). Call after
 * relay_server_set_services and before ev_run of the server's loop, from
 * the thread that runs it: from then on the loop's callbacks run under the
 * workers' lock. Returns 0, or -1 with a sentence in |err|.
 */
int relay_workers_start(relay_server *s, char *err, size_t errlen);

/*
 * relay_workers_stop stops and joins the threads (after ev_run returned);
 * the loop no longer takes the lock. Nothing when none were started.
 */
void relay_workers_stop(relay_server *s);

#endif
