/*
 * The hole-punching prober of one attempt on one circuit (prober.c; never
 * installed; docs/protocol.md "Hole punching"). Sans-I/O: it is given the
 * relay's PUNCH_START, the frames that arrive and the time, and it says
 * which PUNCH / PUNCH_ACK datagrams to send where and, in the end, the best
 * direct path it validated or that it gave up. It owns no socket and no
 * clock and knows nothing of QUIC: the session sends what it returns on
 * the endpoint's sockets and, on the dialer side, migrates its QUIC
 * connection to the result.
 *
 *   IDLE --start--> WAITING --start_in_ms--> PROBING --first PUNCH_ACK--> SETTLING
 *                                               |                           |
 *                                         window ends              settle_ms or window ends
 *                                               v                           v
 *                                           GAVE_UP                      DIRECT
 *
 * Times are milliseconds of a monotonic clock (pos_p2p_now_ms), int64_t.
 * Memory: pos_prober_new allocates, pos_prober_del wipes (the punch key)
 * and frees; nothing the caller passes is kept.
 */
#ifndef POS_P2P_PROBER_H
#define POS_P2P_PROBER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ctrl.h"
#include "frame.h"

/*
 * Candidates of one attempt: the relay's (at most POS_CTRL_MAX_ADDRS), those
 * given by pos_prober_add_candidate (at most POS_PROBER_MAX_ADDED: the
 * application's, POS_P2P_MAX_EXTRA_CANDIDATES), and peer-reflexive ones
 * learnt from valid probes, which always have POS_PROBER_MIN_REFLEXIVE
 * places of their own (the others never take them).
 */
#define POS_PROBER_MAX_ADDED 8
#define POS_PROBER_MIN_REFLEXIVE 8
#define POS_PROBER_MAX_CANDIDATES                                                                  \
    (POS_CTRL_MAX_ADDRS + POS_PROBER_MAX_ADDED + POS_PROBER_MIN_REFLEXIVE)

/* Errors. */
#define POS_PROBER_ERR_INVALID -1 /* a bad argument: not a PUNCH_START, a bad address, ... */
#define POS_PROBER_ERR_DROPPED -2 /* on_frame: not a valid probe of this attempt (counted) */
#define POS_PROBER_ERR_FULL -3    /* add_candidate: no place left (see above) */
#define POS_PROBER_ERR_STATE -4   /* add_candidate: no attempt running */

/* Defaults and bounds of the options (docs/protocol.md, "Timers"). */
#define POS_PROBER_WINDOW_MS 3000
#define POS_PROBER_INTERVAL_MS 50
#define POS_PROBER_SETTLE_MS 30

struct pos_prober_options {
    uint32_t window_ms;   /* probing ends this long after it began (100..60000) */
    uint32_t interval_ms; /* between two PUNCH to one candidate, +-25% jitter (10..1000,
                             at most window_ms) */
    uint32_t settle_ms;   /* after the first validated path, how long to wait for a
                             better one (0..1000) */
    uint64_t seed;        /* of the jitter; 0: drawn from libsodium (tests and fuzzing
                             set it to be repeatable) */
};

enum pos_prober_state {
    POS_PROBER_IDLE = 0, /* no attempt (new, or stopped) */
    POS_PROBER_WAITING,  /* started: answers PUNCH, sends nothing before start_in_ms */
    POS_PROBER_PROBING,  /* sends PUNCH to every candidate not yet validated */
    POS_PROBER_SETTLING, /* a path is validated; settle_ms for a better one */
    POS_PROBER_DIRECT,   /* done: pos_prober_result gives the path */
    POS_PROBER_GAVE_UP,  /* done: the window ended with no validated path */
};

/* Classes of a path, in order of preference (lower is better). */
enum pos_prober_kind {
    POS_PROBER_LAN = 0,  /* private, link-local, loopback, IPv6 ULA */
    POS_PROBER_IPV6 = 1, /* any other IPv6 address */
    POS_PROBER_IPV4 = 2, /* any other IPv4 address */
};

/* A validated direct path. */
struct pos_prober_path {
    struct sockaddr_storage addr; /* the peer's address to send to */
    int kind;                     /* enum pos_prober_kind */
    uint32_t rtt_ms;              /* time from the latest PUNCH sent there to its PUNCH_ACK: a lower
                                     bound of the RTT, exact when it is below the probe interval */
    int64_t validated;            /* when the PUNCH_ACK arrived */
};

/* A datagram to send: |frame| (a 13-byte PUNCH or PUNCH_ACK) to |to|. */
struct pos_prober_datagram {
    struct sockaddr_storage to;
    uint8_t frame[POS_FRAME_PROBE_LEN];
};

/* Counters for metrics, over the prober's life (all attempts). */
struct pos_prober_stats {
    uint64_t attempts;          /* pos_prober_start calls that began an attempt */
    uint64_t direct;            /* attempts that ended DIRECT */
    uint64_t gave_up;           /* attempts that ended GAVE_UP */
    uint64_t probes_sent;       /* PUNCH datagrams returned by on_timer */
    uint64_t acks_sent;         /* PUNCH_ACK datagrams returned by on_frame */
    uint64_t validated;         /* paths validated by a PUNCH_ACK */
    uint64_t peer_reflexive;    /* candidates learnt from the source of a valid probe */
    uint64_t dropped;           /* frames refused: not a probe, other circuit, bad cookie
                                   (other attempt, forged, own reflected), no attempt, late */
    uint64_t dropped_cookie;    /* of which: a probe of this circuit with a bad cookie */
    uint32_t last_ms_to_direct; /* latest DIRECT attempt: from start to the decision */
};

typedef struct pos_prober pos_prober;

/* pos_prober_options_default fills |o| with the defaults (seed 0). */
void pos_prober_options_default(struct pos_prober_options *o);

/*
 * pos_prober_options_check returns NULL when |o| is valid, else a sentence
 * naming the bad option and the range expected (for a configuration error).
 */
const char *pos_prober_options_check(const struct pos_prober_options *o);

/*
 * pos_prober_new makes an idle prober with options |o| (NULL: defaults).
 * Returns NULL when |o| fails pos_prober_options_check or out of memory.
 */
pos_prober *pos_prober_new(const struct pos_prober_options *o);

/* pos_prober_del wipes and frees |p| (NULL allowed). */
void pos_prober_del(pos_prober *p);

/*
 * pos_prober_start begins the attempt that the relay's PUNCH_START |start|
 * describes (its circuit ids, key, role, attempt, start_in_ms and the
 * peer's candidate addresses; duplicates and unusable addresses are
 * skipped), at |now|; any earlier attempt is forgotten. Returns 0, or
 * POS_PROBER_ERR_INVALID when |start| is not a valid PUNCH_START or has no
 * usable candidate (|p| is then idle).
 */
int pos_prober_start(pos_prober *p, const pos_ctrl_msg *start, int64_t now);

/*
 * pos_prober_add_candidate adds |sa| (an address learnt elsewhere, e.g. from
 * mDNS) to the running attempt. Returns 0, 1 when it was known already, or
 * POS_PROBER_ERR_INVALID (not IPv4/IPv6, port 0, unspecified or multicast),
 * POS_PROBER_ERR_FULL, POS_PROBER_ERR_STATE (idle or done).
 */
int pos_prober_add_candidate(pos_prober *p, const struct sockaddr *sa, int64_t now);

/* pos_prober_stop ends the attempt (|p| idle, key wiped); the counters stay. */
void pos_prober_stop(pos_prober *p);

/*
 * pos_prober_deadline: when pos_prober_on_timer wants to be called next, or
 * -1 when never (idle, done).
 */
int64_t pos_prober_deadline(const pos_prober *p);

/*
 * pos_prober_on_timer runs what is due at |now| and writes at most |max|
 * datagrams to send into |out|; returns how many. Datagrams that did not fit
 * are returned by the next call (the deadline is then |now|). Nothing is
 * ever returned at or after the end of the probe window.
 */
size_t pos_prober_on_timer(pos_prober *p, int64_t now, struct pos_prober_datagram *out, size_t max);

/*
 * pos_prober_on_frame takes the datagram |buf| (|len| bytes) that came from
 * |from| at |now|. A valid PUNCH of this attempt is answered: returns 1 with
 * the PUNCH_ACK in |*reply|, and an unknown source becomes a candidate
 * (peer-reflexive). A valid PUNCH_ACK from a candidate probed before
 * validates that path: returns 0. Anything else (not a PUNCH/PUNCH_ACK,
 * another circuit, a bad cookie, no attempt running, the window over)
 * returns POS_PROBER_ERR_DROPPED and is counted.
 */
int pos_prober_on_frame(pos_prober *p, const struct sockaddr *from, const uint8_t *buf, size_t len,
                        int64_t now, struct pos_prober_datagram *reply);

/* pos_prober_state: the enum pos_prober_state of |p|. */
int pos_prober_state(const pos_prober *p);

/*
 * pos_prober_result: 0 and the chosen path in |*out| when the attempt ended
 * DIRECT; -1 otherwise. The choice among the paths validated until the
 * settle time ended: the best kind (LAN, then IPv6, then IPv4), then the
 * lowest rtt_ms, then the first validated.
 */
int pos_prober_result(const pos_prober *p, struct pos_prober_path *out);

/* pos_prober_get_stats copies the counters of |p| into |out|. */
void pos_prober_get_stats(const pos_prober *p, struct pos_prober_stats *out);

/* pos_prober_kind_of: the enum pos_prober_kind of an IPv4 or IPv6 address. */
int pos_prober_kind_of(const struct sockaddr *sa);

/* pos_prober_state_name: "idle", "waiting", ... */
const char *pos_prober_state_name(int state);

#endif
