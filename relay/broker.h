/*
 * The circuit broker: CONNECT -> INCOMING -> ACCEPT/DECLINE -> CIRCUIT
 * (docs/protocol.md), sans-I/O like forward.c. It keeps the requests in
 * flight, their timers, the clients that may be asked, and opens and closes
 * circuits in the circuit table (circuit.h). It does no I/O and reads no
 * clock: its inputs are decoded control messages from a client, presence
 * verdicts and the time given by the caller; its outputs go through
 * relay_broker_ops (a control message to a client, a presence lookup, usage
 * for an opened or closed circuit, when to call relay_broker_expire next).
 * The relay's QUIC server (server_ctrl.c) is its only user besides the unit
 * test (tests/relay/test_broker.c).
 *
 * Hole punching (pos-relay/2 and /3, docs/protocol.md): right after the two
 * CIRCUIT messages, when both clients speak version 2 or 3
 * (relay_broker_set_version) and |punch| is on, both get PUNCH_START with a
 * fresh random key, timed from their control connections' smoothed RTTs
 * (relay_broker_set_rtt, an input the caller refreshes). PUNCH_REQUEST
 * starts a later attempt (at most one per minimum interval per circuit);
 * PUNCH_REPORT is only counted. Off until relay_broker_set_punch. The waiting is the clients'
 * (start_in_ms): no timer here.
 *
 * Lifetimes: the broker borrows the circuit table, which must outlive it. A
 * client joins once it is authenticated (relay_broker_join) and leaves once
 * (relay_broker_leave) before its connection is freed; the budget it joined
 * with must live until then.
 */
#ifndef POS_RELAY_BROKER_H
#define POS_RELAY_BROKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "circuit.h"
#include "ctrl.h"
#include "services.h"

typedef struct relay_broker relay_broker;
typedef struct relay_broker_client relay_broker_client; /* one per authenticated client */
typedef struct relay_broker_req relay_broker_req;       /* a CONNECT in flight */

/* What the broker allows; 0 in a cap means none. */
typedef struct relay_broker_limits {
    uint32_t max_circuits_per_conn;  /* config max_circuits_per_conn */
    uint32_t max_circuits_per_token; /* config max_circuits_per_token */
    uint32_t max_pending_per_client; /* CONNECTs in flight per client (at least 1) */
    uint32_t max_pending_total;      /* CONNECTs in flight in all (at least 1) */
    int64_t incoming_timeout_ms;     /* how long a target may take to answer INCOMING */
    /*
     * How long a CONNECT waits for a parked target to wake (park_wake) before
     * ERROR TIMEOUT; 0: incoming_timeout_ms. The relay gives park_keepalive + 10 s:
     * a target whose NAT mapping changed unnoticed is found again only by its
     * next keep-alive (docs/protocol.md "Parking").
     */
    int64_t parked_timeout_ms;
} relay_broker_limits;

/*
 * The broker's outputs. None of them but |flush| may call back into the
 * broker (a message is queued, a lookup answers later from the loop). |conn| is the
 * caller's handle given to relay_broker_join. Every field is required
 * unless it says otherwise.
 */
typedef struct relay_broker_ops {
    /* send: queue |m| on |conn|'s message stream (nothing for a client that is closing). */
    void (*send)(void *arg, void *conn, const pos_ctrl_msg *m);
    /*
     * flush: the input is handled and the broker's state settled: write out
     * what |send| queued (this may end connections, i.e. call
     * relay_broker_leave). Called at the end of every input. May be NULL.
     */
    void (*flush)(void *arg);
    /*
     * lookup: which relay holds |peer_id|; answer later, never inside this
     * call, with relay_broker_lookup_done(|q|). Returns a handle for
     * lookup_cancel, or 0 when the lookup cannot start.
     */
    uint64_t (*lookup)(void *arg, const char *peer_id, relay_broker_req *q);
    /* lookup_cancel: the lookup |handle| must not be answered any more. */
    void (*lookup_cancel)(void *arg, uint64_t handle);
    /* circuit_opened: a circuit paid from |b0| and |b1| (either may be NULL) opened. May be NULL.
     */
    void (*circuit_opened)(void *arg, relay_budget *b0, relay_budget *b1);
    /* circuit_closed: |info| closed (usage: bytes, circuit seconds). May be NULL. */
    void (*circuit_closed)(void *arg, const relay_circuit_info *info);
    /* wake: call relay_broker_expire at |at_ms| (same clock as the inputs), or never (-1). */
    void (*wake)(void *arg, int64_t at_ms);
    void *arg;
    /*
     * park_wake: a CONNECT asks for |peer_id|, which has no home client
     * here: 1 when it is parked here and is being woken (the request then
     * waits, like for ACCEPT, until relay_broker_woken), 0 to look it up
     * in presence as usual. May be NULL (nothing is parked).
     */
    int (*park_wake)(void *arg, const char *peer_id);
    /*
     * park_unwait: a request that park_wake made wait for |peer_id| is gone
     * before the peer came back (timed out, withdrawn with its
     * connection): one waiter less. Called once per park_wake that
     * returned 1, unless the peer came back first (relay_broker_woken).
     * May be NULL.
     */
    void (*park_unwait)(void *arg, const char *peer_id);
} relay_broker_ops;

/* Counters for /metrics (relay_server_stats). */
typedef struct relay_broker_stats {
    uint64_t requests_pending; /* gauge: CONNECTs in flight */
    uint64_t requests;         /* CONNECTs received */
    uint64_t circuits_opened, circuits_closed;
    uint64_t redirects;     /* REDIRECT sent */
    uint64_t wakes;         /* CONNECTs that woke a parked peer (park_wake) */
    uint64_t errors;        /* ERROR sent */
    uint64_t refused_limit; /* of which for a circuit cap */
    /* hole punching */
    uint64_t punches_started;        /* attempts coordinated (PUNCH_START to both sides) */
    uint64_t punch_requests;         /* PUNCH_REQUEST received */
    uint64_t punch_requests_ignored; /* of which ignored: too soon, peer v1, punch off, stale */
    uint64_t punch_reports[3];       /* PUNCH_REPORT by outcome: direct, failed, fell back */
    uint64_t punch_direct_ms_sum;    /* time to direct of the reports "direct" (ms) */
    uint64_t punch_reports_ignored;  /* PUNCH_REPORT for a circuit not the sender's */
    uint64_t punches_on_move;        /* of punches_started: a side's address changed */
    uint64_t punch_moves_ignored;    /* moves that started none: sooner than the interval */
} relay_broker_stats;

/*
 * relay_broker_new: a broker opening circuits in |circuits| (borrowed, not
 * NULL) under |lim| (copied), with outputs |ops| (copied; |ops->arg|
 * borrowed). Returns NULL when out of memory or an argument is missing.
 * relay_broker_del frees it and what is in flight (lookups are cancelled;
 * clients must have left). NULL is ignored.
 */
relay_broker *relay_broker_new(relay_circuits *circuits, const relay_broker_limits *lim,
                               const relay_broker_ops *ops);
void relay_broker_del(relay_broker *b);

/*
 * relay_broker_set_punch: coordinate hole punching (|enabled|, config
 * punch) with at least |min_interval_ms| between two attempts on one
 * circuit (config punch_min_interval_ms). A new broker does not punch.
 */
void relay_broker_set_punch(relay_broker *b, int enabled, int64_t min_interval_ms);

/*
 * relay_broker_join: an authenticated client |conn| (the caller's handle)
 * with peer id |peer_id|, reached at |cur|, telling peers its own addresses
 * |local| (may be NULL), paying from |budget| (NULL: unlimited). A |home|
 * client may be asked for (INCOMING); any client may ask (CONNECT). The
 * newest home client of a peer id is the one asked. Returns the client, or
 * NULL when out of memory or |cur| is not IPv4/IPv6.
 */
relay_broker_client *relay_broker_join(relay_broker *b, void *conn, const char *peer_id, int home,
                                       const struct sockaddr *cur, const pos_ctrl_addrs *local,
                                       relay_budget *budget);

/*
 * relay_broker_set_version: |cl|'s control connection speaks |version|
 * (POS_CTRL_V1, the default at join, POS_CTRL_V2: hole punching, or
 * POS_CTRL_V3: with the NAT mapping).
 * relay_broker_set_rtt: its smoothed RTT is now |rtt_ms| (0 at join);
 * the caller refreshes it before each input from |cl|, so both RTTs are
 * recent when a circuit opens or a PUNCH_REQUEST arrives.
 */
void relay_broker_set_version(relay_broker_client *cl, int version);
/*
 * relay_broker_set_nat: |cl|'s NAT mapping as its HELLO told it (version 3;
 * enum pos_ctrl_nat, anything else: unknown). Every later PUNCH_START to
 * its peers carries it (peer_nat), so that two clients whose mappings both
 * vary by destination stop asking for attempts. No errors.
 */
void relay_broker_set_nat(relay_broker_client *cl, int nat);
void relay_broker_set_rtt(relay_broker_client *cl, uint32_t rtt_ms);

/*
 * relay_broker_moved: |cl|'s connection comes from |addr| since |now_ms|
 * (NAT rebinding or migration); its circuits follow. A new mapping may
 * open a direct path the old one could not: each of its circuits that may
 * punch gets a new attempt (PUNCH_START to both sides) unless one began
 * less than the minimum interval ago.
 */
void relay_broker_moved(relay_broker *b, relay_broker_client *cl, const struct sockaddr *addr,
                        int64_t now_ms);

/*
 * relay_broker_closing: |cl|'s connection is about to close; it is no
 * longer offered to requesters (it still holds its circuits until it leaves).
 */
void relay_broker_closing(relay_broker_client *cl);

/*
 * relay_broker_leave: |cl|'s connection is over at |now_ms|: its circuits
 * close (the other sides get CIRCUIT_CLOSED), its requests end (requesters
 * waiting for it get ERROR PEER_LEFT) and |cl| is freed.
 */
void relay_broker_leave(relay_broker *b, relay_broker_client *cl, int64_t now_ms);

/*
 * relay_broker_request: message |m| from |cl|'s request stream at |now_ms|.
 * CONNECT, ACCEPT and DECLINE are handled (errors go to the client as
 * ERROR), and from a version 2 client PUNCH_REQUEST (a new attempt, or
 * ignored and counted) and PUNCH_REPORT (counted); returns 0, or -1 for any
 * other type, or a PUNCH_* from a version 1 client (the caller refuses the
 * client). An ACCEPT or DECLINE for no request in flight is ignored, as is a
 * PUNCH_* for a circuit that is not (or no longer) the sender's. A CONNECT
 * or ACCEPT that carries a NAT mapping (version 3) sets |cl|'s first.
 */
int relay_broker_request(relay_broker *b, relay_broker_client *cl, const pos_ctrl_msg *m,
                         int64_t now_ms);

/*
 * relay_broker_lookup_done: the verdict of lookup |q| (|status| an enum
 * relay_presence_status, |found| for RELAY_PRESENCE_FOUND): REDIRECT or
 * ERROR to the requester. |q| is freed.
 */
void relay_broker_lookup_done(relay_broker_req *q, int status, const relay_presence_found *found);

/*
 * relay_broker_woken: |cl| (a home client that just joined, its WELCOME
 * queued) may be the parked peer that requests wait for (park_wake): each
 * gets its INCOMING now, with a fresh deadline.
 */
void relay_broker_woken(relay_broker *b, relay_broker_client *cl, int64_t now_ms);

/* relay_broker_idle: 1 when |cl| has no circuit and no request from or to it (PARK may go on). */
int relay_broker_idle(const relay_broker *b, const relay_broker_client *cl);

/* relay_broker_expire: requests whose target did not answer by |now_ms| end with ERROR TIMEOUT. */
void relay_broker_expire(relay_broker *b, int64_t now_ms);

void relay_broker_stats_get(const relay_broker *b, relay_broker_stats *out);

#endif
