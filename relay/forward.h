/*
 * The relay's forwarding hot path. The UDP receive path (server_udp.c) reads a
 * batch with recvmmsg and hands it to relay_forward_batch, which sorts it:
 * QUIC datagrams go back to the caller by index for ngtcp2; data frames are
 * checked against the circuit table (circuit.h), rewritten in place and
 * queued into an mmsghdr array ready for one sendmmsg; everything else is
 * dropped and counted. No allocation, no system call and no clock per
 * packet: what it needs is allocated by relay_forwarder_new for a batch size
 * fixed then.
 *
 * Rules (docs/data-plane.md): a frame is accepted only from the current
 * address of the side that owns its circuit id. DATA is sent to the other
 * side's current address with the other side's id, after its length is paid
 * from the sending side's budget; KEEPALIVE is answered in place with
 * KEEPALIVE_ACK to the sender; any other frame type is dropped.
 */
#ifndef POS_RELAY_FORWARD_H
#define POS_RELAY_FORWARD_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "circuit.h"

#define RELAY_FORWARD_MAX_BATCH 1024
/* UDP GSO: at most this many segments per message (the kernel's UDP_MAX_SEGMENTS is 64)... */
#define RELAY_FORWARD_GSO_MAX_SEGMENTS 64
/* ...of at most this size (a 1500-byte MTU minus IPv6 and UDP headers), and 65000 bytes in all. */
#define RELAY_FORWARD_GSO_MAX_SEGMENT 1452
#define RELAY_FORWARD_GSO_MAX_BYTES 65000

/*
 * relay_lease_cb: |b| has fallen below its low water mark or could not pay
 * for a packet; lease more (asynchronously) and call relay_budget_grant.
 * Called at most once until that grant. Must not close circuits.
 */
typedef void (*relay_lease_cb)(void *arg, relay_budget *b);

/*
 * Recently active circuits, for GET /circuits (the NAT lab and operators:
 * which circuit carried how much). Bounded and cheap: a circuit's index
 * picks one of RELAY_FORWARD_RECENT / 2 pairs of entries, and a circuit new
 * to its pair replaces the pair's less recently active entry; the circuit
 * that forwarded last is always listed. The counts are the circuit's own
 * (its sides' relay_side_stats) as of its last forwarded DATA frame, so they
 * stay readable after the circuit closed, until the entry is replaced.
 */
#define RELAY_FORWARD_RECENT 16
typedef struct relay_forward_circuit {
    uint32_t id[2];      /* side 0's and side 1's circuit id; 0: unused entry */
    uint64_t packets[2]; /* DATA frames forwarded from side 0 (to side 1), from side 1 */
    uint64_t bytes[2];   /* their lengths, frame header included */
    uint64_t last_batch; /* relay_forward_stats.batches when it last forwarded */
} relay_forward_circuit;

/*
 * Counters for /metrics and /circuits. Every input datagram lands in exactly
 * one of the counters from quic to drop_unroutable.
 */
typedef struct relay_forward_stats {
    uint64_t quic;            /* handed back to the QUIC path */
    uint64_t quic_fallback;   /* looked like a frame, failed, handed to QUIC (see
                                 relay_forwarder_set_quic_fallback) */
    uint64_t forwarded;       /* DATA frames queued for sending */
    uint64_t forwarded_bytes; /* their lengths */
    uint64_t keepalives;      /* KEEPALIVE answered */
    uint64_t parked;          /* parked datagrams given to the park callback (answered or not) */
    uint64_t drop_truncated;  /* larger than the receive buffer (MSG_TRUNC) */
    uint64_t drop_malformed;  /* frame of a known type with a bad shape, circuit id 0 */
    uint64_t drop_unknown_type;
    uint64_t drop_unexpected_type; /* a valid frame the relay never accepts (ACKs, PUNCH) */
    uint64_t drop_unknown_circuit; /* no open circuit with that id (closed, forged) */
    uint64_t drop_wrong_source;    /* not from the owning side's current address */
    uint64_t drop_budget;          /* the sending side's token budget is exhausted */
    uint64_t drop_unroutable;      /* IPv6 destination but an IPv4 socket */
    uint64_t batches;              /* relay_forward_batch calls */
    relay_forward_circuit recent[RELAY_FORWARD_RECENT];
} relay_forward_stats;

/* Per output message when GSO is on: its segment size, count, bytes, and its control message. */
struct relay_gso_group {
    uint32_t seg_size, segs, bytes, closed;
    union {
        size_t align; /* struct cmsghdr alignment */
        uint8_t buf[CMSG_SPACE(sizeof(uint16_t))];
    } cmsg;
};

/*
 * relay_park_cb: a parked client's datagram (common/park.h) |buf| of |len|
 * bytes from |from|, seen by the forwarder under the workers' shared lock:
 * 1 when the callee rewrote |buf| in place into the answer (same length) to
 * send back to |from|, 0 when it is dropped. See relay_forwarder_set_park.
 */
typedef int (*relay_park_cb)(void *arg, uint8_t *buf, size_t len, const struct sockaddr *from);

typedef struct relay_forwarder {
    relay_circuits *circuits;
    relay_park_cb park; /* NULL: parked datagrams go back with the QUIC ones */
    void *park_arg;
    relay_lease_cb lease;
    void *lease_arg;
    unsigned batch_max;
    unsigned gso_max;               /* 0 or 1: off */
    int quic_fallback;              /* hand failed frames to QUIC instead of dropping them */
    struct iovec *iov;              /* batch_max: one per forwarded datagram */
    struct sockaddr_in6 *names;     /* batch_max: destination of each output */
    struct relay_gso_group *groups; /* batch_max */
    relay_forward_stats stats;
} relay_forwarder;

/*
 * relay_forwarder_new: a forwarder over |circuits| (borrowed; it must
 * outlive the forwarder) for batches of at most |batch_max| datagrams (1 ..
 * RELAY_FORWARD_MAX_BATCH). |lease| may be NULL. Returns NULL on a bad
 * argument or out of memory. relay_forwarder_del frees it (NULL is fine).
 */
relay_forwarder *relay_forwarder_new(relay_circuits *circuits, unsigned batch_max,
                                     relay_lease_cb lease, void *lease_arg);
void relay_forwarder_del(relay_forwarder *fw);

/*
 * relay_forwarder_set_gso: with |max_segments| > 1, relay_forward_batch joins
 * consecutive datagrams to the same destination into one output message
 * with several iovecs and a UDP_SEGMENT control message (Linux UDP GSO):
 * segments of one size (the last may be shorter), at most |max_segments|
 * (capped at RELAY_FORWARD_GSO_MAX_SEGMENTS) and RELAY_FORWARD_GSO_MAX_BYTES,
 * none larger than RELAY_FORWARD_GSO_MAX_SEGMENT. Nothing is reordered. It
 * helps a bulk transfer on one circuit (many full-size packets in a row to
 * one address). 0 or 1 turns it off (the default). If sendmmsg fails with
 * EIO or EINVAL on a message with msg_controllen > 0, the path cannot do GSO:
 * turn it off. Each iovec of an output message is one datagram.
 */
void relay_forwarder_set_gso(relay_forwarder *fw, unsigned max_segments);

/*
 * relay_forwarder_set_quic_fallback: with |on|, a datagram that looks like a
 * frame (top bits clear) but is not one of a known circuit from its owner
 * (unknown type, malformed, unknown circuit, wrong source) is handed to the
 * QUIC path through |quic_idx| and counted in quic_fallback, instead of being
 * dropped: a short-header packet of a peer that greases the fixed bit (RFC
 * 9287) still reaches its connection, which the QUIC path finds by
 * connection id (or drops). Valid frames never pay for that lookup. Off by
 * default.
 */
void relay_forwarder_set_quic_fallback(relay_forwarder *fw, int on);

/*
 * relay_forwarder_set_park: parked datagrams (first byte 0x25..0x29; a BYE,
 * 0x28, ends a record and goes to the control path) go to
 * |park| (with |arg|) in the batch, and an answer it writes in place joins
 * the batch's output like a KEEPALIVE_ACK; NULL (the default) hands them
 * back with the QUIC datagrams (|quic_idx|) instead.
 */
void relay_forwarder_set_park(relay_forwarder *fw, relay_park_cb park, void *arg);

/*
 * relay_forward_batch processes |n_in| datagrams received into |in| (as
 * recvmmsg leaves them: msg_len, msg_flags, msg_name/msg_namelen of the
 * source, the data in msg_iov[0]). Frames are rewritten in place.
 *
 * |out| (room for |n_in| entries) receives one entry per datagram to send
 * (or per group of datagrams, with GSO), fully set for sendmmsg on a socket of family |sock_family|
 * (AF_INET6 for a dual-stack socket, where IPv4 peers get IPv4-mapped names; or AF_INET). Its
 * iovecs point into the |in| buffers and its names into the forwarder: both
 * stay valid until the next call or until the |in| buffers are reused.
 *
 * |quic_idx| (room for |n_in|) receives the indexes into |in| of QUIC
 * datagrams (first byte with 0x40 or 0x80 set), |*n_quic| their number; the
 * caller gives them to ngtcp2.
 *
 * Returns the number of entries written to |out| (0 .. n_in), or
 * RELAY_CIRCUIT_ERR_INVALID when |n_in| exceeds the batch size or
 * |sock_family| is neither AF_INET nor AF_INET6 (nothing is processed).
 */
int relay_forward_batch(relay_forwarder *fw, struct mmsghdr *in, unsigned n_in, int sock_family,
                        struct mmsghdr *out, unsigned *quic_idx, unsigned *n_quic);

#endif
