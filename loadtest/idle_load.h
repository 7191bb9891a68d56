/*
 * The load of one `pos-loadtest idle` process on its pool (idle_pool.h):
 * every client dials home (at most C handshakes at once, refused ones tried
 * again), answers every INCOMING, counts the datagrams its circuits bring,
 * and parks when told. cmd_idle.c runs it in the measuring process and in
 * each helper process (idle_shard.h) when one process has too few file
 * descriptors for all clients.
 */
#ifndef POS_LOADTEST_IDLE_LOAD_H
#define POS_LOADTEST_IDLE_LOAD_H

#include <stdint.h>

#include "idle_pool.h"
#include "pos/p2p.h"

struct idle_load_conf {
    const pos_p2p_relay_info *relay;
    const char *token;
    long timeout_s, concurrency, park_after_s, keepalive_s;
    long park_rate; /* clients told to park per second (idle_load_park) */
    int progress;   /* print a line on stderr every 2 s while connecting */
};

struct idle_load_stats {
    long accepted, failed, retried;
    double connect_s, hs_p50_ms;
    char first_reason[257];
};

/* idle_load_connect: clients 0 .. |n| - 1 of |p| dial home; fills |st|. 0, or -1 (memory). */
int idle_load_connect(idle_pool *p, long n, const struct idle_load_conf *conf,
                      struct idle_load_stats *st);
/* idle_load_pump_for: serve the clients for |ms| milliseconds. */
void idle_load_pump_for(idle_pool *p, int64_t ms);
/* idle_load_park: clients 0 .. |n| - 1 park after the configured idle time, |park_rate| a
 * second. */
void idle_load_park(idle_pool *p, long n, const struct idle_load_conf *conf);
/*
 * idle_load_events adds up the events of clients 0 .. |n| - 1 into |v|:
 * PARKED, AWAKE woken by the relay, AWAKE after unanswered keep-alives.
 */
void idle_load_events(idle_pool *p, long n, long v[3]);
/* idle_load_parked: how many of clients 0 .. |n| - 1 are parked now. */
long idle_load_parked(idle_pool *p, long n);

#endif
