/*
 * The relay's circuit table: each circuit joins two sides, and each side
 * belongs to one control connection (its owner) and has that connection's
 * current address, its own circuit id, a token budget and usage counters.
 * The control plane (QUIC side) opens and closes circuits and reports
 * address changes; the forwarding hot path (forward.c) only looks sides up.
 *
 * Ids: a side's id is (generation << slot_bits) | slot, where slot =
 * 2 * circuit index + side and the generation of a circuit index changes on
 * every reuse (starting from a random value given at creation). Lookup is an
 * array index plus one compare of the whole id: O(1), no hashing, and a
 * stale id of a closed circuit does not match its slot's next circuit. Ids
 * are not secrets: frames are accepted only from the owner's current
 * address. Id 0 is never allocated.
 *
 * Memory: everything is allocated by relay_circuits_new for a capacity fixed
 * then; nothing is allocated afterwards. Owners and budgets are the caller's
 * (embedded in its connection and token objects) and must outlive the
 * circuits that point at them: close an owner's circuits
 * (relay_circuit_owner_close) before freeing it. Nothing here does I/O or
 * reads a clock.
 */
#ifndef POS_RELAY_CIRCUIT_H
#define POS_RELAY_CIRCUIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RELAY_CIRCUIT_MAX_CAPACITY (1u << 20)

/* Errors. */
#define RELAY_CIRCUIT_ERR_FULL -1      /* no free circuit: capacity reached */
#define RELAY_CIRCUIT_ERR_INVALID -2   /* bad argument (address family, owner, capacity) */
#define RELAY_CIRCUIT_ERR_NOT_FOUND -3 /* no open circuit has this id */
#define RELAY_CIRCUIT_ERR_NOMEM -4
#define RELAY_CIRCUIT_ERR_CONN_LIMIT -5  /* the connection has its maximum of circuits open */
#define RELAY_CIRCUIT_ERR_TOKEN_LIMIT -6 /* the token has its maximum of circuits open here */

/*
 * A token's byte budget on this relay, shared by every circuit side whose
 * client authenticated with that token. The control plane leases bytes from
 * Redis in chunks and adds them with relay_budget_grant; the forwarder spends
 * them per packet (charged to the sending side's budget, once per relayed
 * byte) and drops packets the budget cannot pay for. When |available| falls
 * below |low_water|, or a packet is dropped for lack of budget, the
 * forwarder's lease callback is called once and |lease_pending| set, until
 * the next grant. Unlimited budgets only count.
 *
 * Being the one object per token on this relay, a budget also counts the
 * token's open circuits (|circuits|, kept by relay_circuit_open/close) for
 * the per-token circuit cap (relay_circuit_admit).
 */
typedef struct relay_budget {
    int64_t available; /* leased bytes not yet spent */
    int64_t low_water; /* ask for the next lease below this */
    uint64_t spent;    /* bytes charged since init (usage accounting) */
    uint64_t dropped;  /* packets dropped for lack of budget */
    uint8_t unlimited; /* never drop, never ask */
    uint8_t lease_pending;
    uint32_t circuits; /* open circuits with a side paying from it (once per circuit) */
} relay_budget;

/* relay_budget_init: zero |b|; |unlimited| or a budget that starts empty with |low_water|. */
void relay_budget_init(relay_budget *b, int unlimited, int64_t low_water);

/* relay_budget_grant: a lease of |bytes| arrived (0 = refused for now); clears lease_pending. */
void relay_budget_grant(relay_budget *b, int64_t bytes);

/*
 * An owner: embedded zeroed in the control connection object. |conn| is the
 * caller's (given back in callbacks); the other fields are the table's.
 */
typedef struct relay_circuit_owner {
    void *conn;
    uint32_t head;  /* first side slot + 1 of this owner's sides, 0 = none */
    uint32_t count; /* open sides owned */
} relay_circuit_owner;

/* A compact address: IPv6 or IPv4-mapped IPv6, port in network order. */
typedef struct relay_addr {
    uint8_t ip[16];
    uint16_t port;
} relay_addr;

/* relay_addr_from_sockaddr: 0, or RELAY_CIRCUIT_ERR_INVALID for a family other than IPv4/IPv6. */
int relay_addr_from_sockaddr(relay_addr *out, const struct sockaddr *sa);

/* Per side usage: rx = frames received from this side and forwarded, tx = frames sent to it. */
typedef struct relay_side_stats {
    uint64_t rx_packets, rx_bytes;
    uint64_t tx_packets, tx_bytes;
    uint64_t dropped_budget;
} relay_side_stats;

/* One side in the table (read by forward.c; callers use the functions below). */
typedef struct relay_side {
    uint32_t id;   /* 0 = free */
    uint32_t next; /* next side slot + 1 of the same owner, 0 = end */
    uint32_t prev; /* previous side slot + 1, 0 = owner's head */
    relay_addr addr;
    relay_budget *budget; /* may be NULL: unlimited, uncounted */
    relay_circuit_owner *owner;
    relay_side_stats stats;
} relay_side;

typedef struct relay_circuits {
    relay_side *sides;   /* 2 * capacity */
    int64_t *opened_ms;  /* per circuit */
    uint32_t *gen;       /* per circuit: generation of its current or next use */
    uint32_t *free_ring; /* FIFO of free circuit indexes, so a slot is reused as late as possible */
    uint32_t free_head, free_count;
    uint32_t capacity, open;
    uint32_t slot_bits, slot_mask, gen_max;
    uint32_t worker_bits;      /* between the slot and the generation: the side's worker */
    uint32_t n_workers;        /* 1 .. 64 (relay_circuits_set_workers) */
    uint32_t next_worker;      /* where the next circuit's search starts (ties go round) */
    uint32_t worker_sides[64]; /* open sides by the worker their ids name (worker & 63) */
} relay_circuits;

/* What a closed circuit was: for telling both owners and for usage (circuit seconds, bytes). */
typedef struct relay_circuit_info {
    uint32_t id[2];
    relay_circuit_owner *owner[2];
    relay_budget *budget[2];
    relay_side_stats stats[2];
    int64_t opened_ms, closed_ms;
} relay_circuit_info;

typedef void (*relay_circuit_closed_cb)(void *arg, const relay_circuit_info *info);

/*
 * relay_circuits_new: a table for at most |capacity| open circuits (1 ..
 * RELAY_CIRCUIT_MAX_CAPACITY). |seed| randomises the first generations (give
 * it randombytes_random()). Returns NULL on a bad capacity or out of memory.
 * relay_circuits_del frees it (NULL is fine); owners and budgets are not
 * touched.
 */
relay_circuits *relay_circuits_new(uint32_t capacity, uint32_t seed);
void relay_circuits_del(relay_circuits *t);

/*
 * relay_circuits_set_workers: side ids name a worker (0 .. |n_workers| - 1)
 * in the bits above the slot, so that a BPF program can steer frames by id
 * to the worker that forwards them (relay/workers.h):
 * id = generation << (slot_bits + worker_bits) | worker << slot_bits | slot.
 * relay_circuit_open puts a circuit's first side on the worker with the
 * fewest open sides (ties in turn) and its second side on the next fewest,
 * never the first's: the load spreads evenly whichever side sends, however
 * the owners' connections are spread, and each circuit's two directions are
 * forwarded by two workers. With 1 worker (the default) every id names 0.
 * Call before the first circuit opens. Returns 0, or RELAY_CIRCUIT_ERR_INVALID
 * when the ids leave no room for a generation (n_workers 1 .. 64 always fit).
 */
int relay_circuits_set_workers(relay_circuits *t, uint32_t n_workers);

/*
 * relay_circuit_open joins side 0 (owner |owner0| at |addr0|, paying from
 * |budget0|) and side 1 (likewise) at time |now_ms|, and writes the two new
 * side ids into |id_out|. Budgets may be NULL (unlimited). Returns 0,
 * RELAY_CIRCUIT_ERR_FULL, or RELAY_CIRCUIT_ERR_INVALID (NULL owner, the same
 * owner on both sides, an address that is not IPv4/IPv6).
 */
int relay_circuit_open(relay_circuits *t, relay_circuit_owner *owner0, const struct sockaddr *addr0,
                       relay_budget *budget0, relay_circuit_owner *owner1,
                       const struct sockaddr *addr1, relay_budget *budget1, int64_t now_ms,
                       uint32_t id_out[2]);

/*
 * relay_circuit_find: the open side with id |id|, or NULL. The pointer is
 * valid until the circuit closes.
 */
static inline relay_side *relay_circuit_find(relay_circuits *t, uint32_t id)
{
    uint32_t slot = id & t->slot_mask;
    if (slot >= 2 * t->capacity)
        return NULL;
    relay_side *s = &t->sides[slot];
    return s->id == id && id != 0 ? s : NULL;
}

/* relay_circuit_peer: the other side of an open side |s|. */
static inline relay_side *relay_circuit_peer(relay_circuits *t, relay_side *s)
{
    return &t->sides[(uint32_t)(s - t->sides) ^ 1u];
}

/*
 * relay_circuit_close closes the circuit that side |id| belongs to (either
 * side's id) at |now_ms| and fills |info| when not NULL. Returns 0 or
 * RELAY_CIRCUIT_ERR_NOT_FOUND.
 */
int relay_circuit_close(relay_circuits *t, uint32_t id, int64_t now_ms, relay_circuit_info *info);

/*
 * relay_circuit_owner_close closes every circuit with a side owned by
 * |owner| (its control connection ended), calling |cb| (may be NULL) once
 * per circuit so the control plane can tell the other side and account
 * usage. Returns the number of circuits closed.
 */
unsigned relay_circuit_owner_close(relay_circuits *t, relay_circuit_owner *owner, int64_t now_ms,
                                   relay_circuit_closed_cb cb, void *arg);

/*
 * relay_circuit_owner_set_addr: |owner|'s control connection now comes from
 * |addr| (NAT rebinding or migration seen by QUIC): every side it owns
 * follows, and frames from the old address are dropped from now on. Returns
 * 0 or RELAY_CIRCUIT_ERR_INVALID (family).
 */
int relay_circuit_owner_set_addr(relay_circuits *t, relay_circuit_owner *owner,
                                 const struct sockaddr *addr);

/*
 * relay_circuit_admit: may one more circuit have a side owned by |owner|
 * (one side per circuit: owner->count is its circuits) paying from |budget|
 * (its token's; NULL: not counted)? |max_per_owner| caps the owner's open
 * circuits, |max_per_budget| the circuits of the budget's token on this
 * relay, over all its connections (0: no cap). Call it for both sides
 * before relay_circuit_open. Returns 0, RELAY_CIRCUIT_ERR_CONN_LIMIT or
 * RELAY_CIRCUIT_ERR_TOKEN_LIMIT.
 */
int relay_circuit_admit(const relay_circuit_owner *owner, const relay_budget *budget,
                        uint32_t max_per_owner, uint32_t max_per_budget);

/* relay_circuit_stats: usage of side |id| into |out|; 0 or RELAY_CIRCUIT_ERR_NOT_FOUND. */
int relay_circuit_stats(relay_circuits *t, uint32_t id, relay_side_stats *out);

/* relay_circuit_strerror: a sentence for each RELAY_CIRCUIT_ERR_* code. */
const char *relay_circuit_strerror(int code);

#endif
