/*
 * The state of one `pos-loadtest idle` run (cmd_idle.c): its options, its
 * pool and helpers, and the figures it gathers; shared with idle_tries.c,
 * which makes the CONNECT tries (awake, parked, "nothing lost").
 */
#ifndef POS_LOADTEST_IDLE_RUN_H
#define POS_LOADTEST_IDLE_RUN_H

#include <stdint.h>

#include "idle_load.h"
#include "idle_pool.h"
#include "idle_shard.h"
#include "pos/p2p.h"

struct opts {
    const char *api_url, *addr, *peer_id, *token, *relay_id, *metrics_url;
    long clients, concurrency, per_addr, tries, lost_tries, relay_pid;
    long park_after_s, keepalive_s, hold_s, timeout_s;
    int json;
};

struct lat {
    double *us;
    long n, ok, tried;
    char first[200]; /* why the first failed try failed */
};

struct run {
    struct opts o;
    pos_p2p_relay_info relay;
    idle_pool *pool;
    long n;    /* clients in all processes */
    long mine; /* of them in this process: pool indices 0 .. mine - 1; index mine is the dialer */
    struct idle_team team; /* helper processes with the other clients (idle_shard.h) */
    struct idle_load_conf lc;
    struct idle_load_stats ls; /* this process's clients */
    /* the try in progress (the dialer's events) */
    int64_t t_req_us, t_circuit_us;
    uint32_t circuit;
    int try_error;
    char try_text[257];
    /* figures */
    long accepted, failed, retried; /* all processes */
    double connect_s;
    long rss0, rss_awake, rss_parked, gen_rss0, gen_rss_awake, gen_rss_parked;
    double m_awake_conns, m_parked, m_awake, m_conns_parked, parked_seen, park_s;
    double m_parks, m_park_refused; /* the relay's pos_relay_parks_total, _park_refused_total */
    /* events(): once all parked, and after the parked hold */
    long ev_park[3], ev_hold[3];
    /* this process's clients not parked when park_all ended; of them: INCOMING answered,
       parked before, connection failed */
    long unparked, unparked_incoming, unparked_before, unparked_failed;
    char unparked_first[300];             /* the first failed one's error: "CODE: reason" */
    double hold_cpu_s[2], hold_events[2]; /* [0] awake, [1] parked */
    double hold_acks;                     /* PARK_ACKs the relay sent in the parked hold */
    struct lat awake, parked;
    struct lat lost;      /* "nothing lost": every try, the NAT rebindings included */
    struct lat rebound;   /* ... of them after an unnoticed NAT rebinding (also in |lost|) */
    long moved, moved_ok; /* ... of them after an address change the device noticed */
    double rebound_s;     /* how long the rebinding tries took, all batches */
    char first_reason[257];
};

/* idle_tries_next: the next accepted client (|parked|: and parked) from |*at| on, round robin;
 * -1 when none. */
long idle_tries_next(struct run *R, long *at, int parked);

/*
 * idle_tries_dial: the dialer asks the relay for client |t| and waits for the
 * circuit (--timeout), then sends one datagram over it and waits for |t| to
 * get it. The time from CONNECT to CIRCUIT goes into |L|. 1: the datagram
 * arrived.
 */
int idle_tries_dial(struct run *R, long t, struct lat *L);

/*
 * idle_tries_lost: the "nothing lost" run, --lost-tries CONNECTs to parked
 * peers, each counted in R->lost. Of every four, one follows an address
 * change the device noticed (R->moved) and one an unnoticed NAT rebinding
 * (also in R->rebound), whose CONNECTs go out together afterwards, 16 at
 * a time on one dialer connection (see idle_tries.c).
 */
void idle_tries_lost(struct run *R, long *at);

#endif
