/*
 * The relay's parked records (docs/protocol.md "Parking"): what is left of
 * a home connection after PARK, a little under 200 bytes each: the peer's
 * key, its token group (revocation, limits, budget), its current address,
 * the park key, the keep-alive and wake counters and a few times. Sans-I/O
 * like circuit.c: bytes, addresses and times in, datagrams written into the
 * caller's buffers; no sockets, no clock, no Redis (server_park.c does
 * those).
 *
 * Ids: a record id is 64 bits. Its low 32 bits are the record's index, its
 * high 32 bits (the place of a data frame's circuit id, park.h of common/)
 * are random except the worker bits of the circuit id layout
 * (relay_circuits_set_workers), so the port's steering program hands a
 * parked datagram to the worker whose id it names, and a stale id of a
 * reused index matches with odds of 1 in 2^25 or less (and its mac still
 * has to verify under the new record's key). Lookup by id is an array index
 * and one compare; lookup by peer key a small chained hash.
 *
 * Memory: the record array is allocated (calloc) for |capacity| at
 * creation but records are handed out from the low end and reused LIFO,
 * so only the pages of records in use are ever touched; the peer hash
 * grows with the records. Token groups (one per token with records) are
 * the caller's limits and budget, kept while a record of the token lives.
 */
#ifndef POS_RELAY_PARKING_H
#define POS_RELAY_PARKING_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "admission.h"
#include "circuit.h"
#include "park.h"
#include "strmap.h"

#define RELAY_PARK_WAKES 5              /* WAKE datagrams per wake: at 0, 250, 500, 1000, 2000 ms */
#define RELAY_PARK_ACK_INTERVAL_MS 1000 /* at most one PARK_ACK per record per second */
#define RELAY_PARK_WAKE_HOLD_MS 10000   /* default: a woken record stays on the waking list */
/*
 * A CONNECT waits for a parked target park_keepalive + this long (and the record stays
 * on the waking list as long): a client whose NAT gave it a new mapping it did not
 * notice is found again by its next keep-alive (one resend, the reconnection and the
 * answer fit in the rest).
 */
#define RELAY_PARK_WAIT_SLACK_MS 10000
#define RELAY_PARK_WBUCKETS 4096 /* chains of waking records by address (16 KiB) */

/* One token with parked records here: what accepting its client gave (limits, budget). */
typedef struct relay_park_token {
    struct strmap_node n; /* key: the token's id (its hash, services.h) */
    relay_limits limits;
    relay_budget *budget; /* the caller's; each record of the token holds one reference */
    uint32_t head;        /* first record index + 1, 0 none */
    uint32_t count;
} relay_park_token;

typedef struct relay_parked {
    uint64_t id;           /* 0: free */
    uint64_t ka_counter;   /* the last keep-alive counter accepted */
    uint64_t wake_counter; /* the last WAKE counter sent */
    int64_t seen_ms;       /* the last valid keep-alive (or the park) */
    int64_t ack_ms;        /* the last keep-alive taken (ACKed if it asked), -1 none */
    int64_t presence_ms;   /* the last presence write (the caller's) */
    int64_t wake_start_ms; /* the first WAKE of the latest wake, 0 none */
    int64_t wake_next_ms;  /* the next WAKE while waking */
    relay_park_token *tok;
    uint8_t peer_key[32];
    uint8_t key[POS_PARK_KEY_LEN];
    relay_addr addr; /* where keep-alives come from: acks and wakes go there */
    uint8_t sock;    /* the caller's local address index it came to */
    uint8_t wake_step;
    uint8_t waking;
    uint8_t rewake;   /* a valid keep-alive came while waking: wake again (relay_park_rewake) */
    uint16_t waiters; /* the caller's: CONNECTs waiting for it to wake */
    uint32_t tnext, tprev; /* the token's records (index + 1) */
    uint32_t hnext;        /* peer hash chain, or the free list (index + 1) */
    uint32_t wnext, wprev; /* records waking (index + 1) */
    uint32_t anext;        /* waking records in the same address bucket (index + 1) */
    uint16_t abucket;      /* that bucket, while waking */
} relay_parked;

typedef struct relay_park {
    relay_parked *rec; /* capacity entries, touched from the low end */
    uint32_t capacity, used, n;
    uint32_t free_head; /* index + 1 */
    uint32_t *buckets;  /* peer hash: record index + 1 */
    uint32_t nb;        /* buckets: a power of two */
    uint32_t waking;    /* first waking record, index + 1 */
    uint32_t *wbuckets; /* waking records by address (RELAY_PARK_WBUCKETS chains, index + 1) */
    uint8_t wkey[crypto_shorthash_KEYBYTES]; /* their hash's key */
    uint32_t sweep_at;                       /* relay_park_sweep's cursor */
    uint32_t route_shift, route_mask;
    int64_t wake_hold_ms; /* on the waking list this long after the first WAKE */
    struct strmap tokens;
} relay_park;

/* Errors. */
#define RELAY_PARK_ERR_FULL -1  /* |capacity| records exist (max_parked) */
#define RELAY_PARK_ERR_NOMEM -2 /* out of memory (token group, hash) */

/* relay_park_new: a table for at most |capacity| records (1 .. 2^24); NULL when out of memory. */
relay_park *relay_park_new(uint32_t capacity);

/*
 * relay_park_del wipes the keys and frees the table and its token groups
 * (NULL is fine); the budgets are the caller's: end the records first.
 */
void relay_park_del(relay_park *t);

/* relay_park_set_route: record ids name workers like circuit ids of |circuits|. */
void relay_park_set_route(relay_park *t, const relay_circuits *circuits);

/*
 * relay_park_add: a record for peer |peer_key| reached at |from| (to local
 * address |sock|) with park key |key| (copied), its ids naming |worker|,
 * in the group of token |token_id| with |limits| and |budget| (the record
 * takes one reference from the caller; NULL is fine), at |now_ms|.
 * Returns the record, or NULL with RELAY_PARK_ERR_* in |*err|.
 */
relay_parked *relay_park_add(relay_park *t, const uint8_t peer_key[32],
                             const uint8_t key[POS_PARK_KEY_LEN], const struct sockaddr *from,
                             int sock, unsigned worker, const char *token_id,
                             const relay_limits *limits, relay_budget *budget, int64_t now_ms,
                             int *err);

/* relay_park_find: the record with id |id|, or NULL. */
relay_parked *relay_park_find(relay_park *t, uint64_t id);

/* relay_park_find_peer: the record of |peer_key|, or NULL. */
relay_parked *relay_park_find_peer(relay_park *t, const uint8_t peer_key[32]);

/*
 * relay_park_remove ends |r|: unlinked, its key wiped, its index free; the
 * token group goes with its last record. Read what the caller needs
 * (r->tok's key and budget) before.
 */
void relay_park_remove(relay_park *t, relay_parked *r);

/* What relay_park_keepalive made of a datagram. */
enum relay_park_verdict {
    RELAY_PARK_ACKED = 0,    /* valid: |ack| holds the PARK_ACK to send back */
    RELAY_PARK_TAKEN,        /* a valid PARK_QUIET: taken, nothing to send */
    RELAY_PARK_DROP_FORM,    /* not a well-formed PARK_KEEPALIVE or PARK_QUIET */
    RELAY_PARK_DROP_UNKNOWN, /* no record with that id */
    RELAY_PARK_DROP_RATE,    /* less than a second after the last accepted one */
    RELAY_PARK_DROP_MAC,     /* the mac does not verify under the record's key */
    RELAY_PARK_DROP_REPLAY,  /* the counter is not above the last accepted one */
};

/*
 * relay_park_keepalive checks datagram |buf| (|len| bytes) from |from| (to
 * local address |sock|) at |now_ms|. A valid keep-alive refreshes the
 * record, moves it to |from| when it came from elsewhere (|*moved| 1), and,
 * for a PARK_KEEPALIVE (not a PARK_QUIET), writes the PARK_ACK into |ack|
 * (POS_PARK_LEN bytes). |*rec| is the record
 * for any verdict after RELAY_PARK_DROP_UNKNOWN. Returns the verdict.
 */
enum relay_park_verdict relay_park_keepalive(relay_park *t, const uint8_t *buf, size_t len,
                                             const struct sockaddr *from, int sock, int64_t now_ms,
                                             uint8_t ack[POS_PARK_LEN], relay_parked **rec,
                                             int *moved);

/*
 * relay_park_bye checks datagram |buf| (|len| bytes): a PARK_BYE of a
 * record here, its mac verifying under the record's key and its counter
 * above the last keep-alive's. Returns that record (the caller ends it:
 * relay_park_remove), or NULL when the datagram is to be dropped.
 */
relay_parked *relay_park_bye(relay_park *t, const uint8_t *buf, size_t len);

/*
 * relay_park_wake: a peer asks for |r|'s client: WAKE datagrams at once and
 * after 250, 500, 1000 and 2000 ms (relay_park_wake_due sends them). A wake
 * already under way goes on as it is.
 */
void relay_park_wake(relay_park *t, relay_parked *r, int64_t now_ms);

/*
 * relay_park_wake_due calls |send|(|arg|, record, datagram, POS_PARK_LEN)
 * for each WAKE due at |now_ms| (the record's next counter), and returns
 * when it wants to be called next, or -1 when no record is waking. A
 * record stays on the waking list (t->waking, wnext) until the hold
 * (relay_park_set_wake_hold) after its first WAKE, or its last WAKE when
 * later: its client's reconnection is expected from its address until
 * then.
 */
typedef void (*relay_park_send_fn)(void *arg, relay_parked *r, const uint8_t *dgram, size_t len);
int64_t relay_park_wake_due(relay_park *t, int64_t now_ms, relay_park_send_fn send, void *arg);

/* relay_park_send_wake: one WAKE of |r| now (its next counter) through |send| (|arg|). */
void relay_park_send_wake(relay_parked *r, relay_park_send_fn send, void *arg);

/*
 * relay_park_waking_at: 1 when a record being woken was last heard from
 * |from| (a hash lookup, so each new connection costs the same however many
 * records are waking). A record that roamed while waking is found at its
 * new address once relay_park_rewake ran (the main loop, at once).
 */
int relay_park_waking_at(const relay_park *t, const struct sockaddr *from);

/*
 * relay_park_unwake: |r| leaves the waking list now (its series ends, no
 * WAKE follows, a keep-alive restarts nothing); it stays parked.
 */
void relay_park_unwake(relay_park *t, relay_parked *r);

/* relay_park_set_wake_hold: woken records stay on the waking list |ms| (default 10 s). */
void relay_park_set_wake_hold(relay_park *t, int64_t ms);

/*
 * relay_park_rewake: a valid keep-alive of |r| came while it is being woken
 * (the caller set r->rewake, maybe from the workers' shared side): its
 * wake series starts again at |now_ms| (at 0, 250, 500, 1000, 2000 ms from
 * now) to its address, which the keep-alive may have moved. Records on the
 * waking list whose |rewake| is set are restarted and the flag cleared;
 * returns how many. The hold and the wake's start time (the metric) stay.
 */
uint32_t relay_park_rewake(relay_park *t, int64_t now_ms);

/*
 * relay_park_sweep visits up to |max| records from where the last sweep
 * stopped (round robin): |expired|(|arg|, r) for each whose last keep-alive
 * is |lifetime_ms| old or whose token expired by |now_unix| (the callback
 * ends it: relay_park_remove), else |presence|(|arg|, r) when its presence
 * was written |presence_ms| ago or more (the callback updates
 * r->presence_ms). Returns the records visited.
 */
typedef void (*relay_park_rec_fn)(void *arg, relay_parked *r);
uint32_t relay_park_sweep(relay_park *t, int64_t now_ms, int64_t now_unix, int64_t lifetime_ms,
                          int64_t presence_ms, uint32_t max, relay_park_rec_fn expired,
                          relay_park_rec_fn presence, void *arg);

/* relay_park_token_find: the group of |token_id|, or NULL when it has no record here. */
relay_park_token *relay_park_token_find(relay_park *t, const char *token_id);

/* relay_park_addr: |r|'s address as a sockaddr (IPv4 as AF_INET); its length. */
socklen_t relay_park_addr(const relay_parked *r, struct sockaddr_storage *out);

#endif
