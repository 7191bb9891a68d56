/*
 * Batched UDP I/O of the endpoint (ep_udp.c; never installed).
 *
 * Send: datagrams are gathered in one buffer while they go to the same
 * address from the same socket, have one size (the last may be shorter) and
 * fit EP_TX_MAX_SEGS / EP_TX_MAX_BYTES; a flush sends the run with one
 * sendmsg and a UDP_SEGMENT control message (Linux UDP GSO: the kernel cuts
 * it into datagrams of that size, so the wire never sees the run as one), or,
 * with GSO off or refused, with one sendmmsg of separate datagrams.
 *
 * Receive: recvmmsg of up to EP_RX_BATCH messages; with UDP_GRO on the
 * socket a message may hold several datagrams of one sender (segment size
 * in a control message), handed on one by one.
 */
#ifndef POS_P2P_EP_UDP_H
#define POS_P2P_EP_UDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define EP_TX_MAX_SEGS 64     /* datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS) */
#define EP_TX_MAX_BYTES 64000 /* bytes per GSO send (under 65,507) */
#define EP_RX_BATCH 8         /* messages per recvmmsg */
#define EP_RX_BUF 65536       /* bytes per received message (a GRO run) */

struct ep_txq; /* a run of datagrams being gathered */

typedef struct ep_txq_stats {
    uint64_t datagrams;  /* datagrams handed to the kernel */
    uint64_t sends;      /* system calls that sent them */
    uint64_t gso_sends;  /* of which sendmsg with UDP_SEGMENT */
    uint64_t lost;       /* datagrams the kernel refused (lost, as on a wire) */
    uint64_t gso_failed; /* GSO sends refused (EIO, EINVAL, EMSGSIZE...): GSO turned off */
} ep_txq_stats;

struct ep_txq *ep_txq_new(void); /* NULL: out of memory; GSO on */
void ep_txq_del(struct ep_txq *q);
void ep_txq_set_gso(struct ep_txq *q, int on);
int ep_txq_gso(const struct ep_txq *q);
/*
 * ep_txq_add copies the datagram |data|/|len| (1..EP_TX_MAX_BYTES) for |to|
 * from socket |fd| into the run, sending the run first when it cannot join.
 */
void ep_txq_add(struct ep_txq *q, int fd, const uint8_t *data, size_t len,
                const struct sockaddr *to, socklen_t tolen);
void ep_txq_flush(struct ep_txq *q); /* sends what was gathered */
/*
 * ep_txq_space: where the next datagram may be written in place (|need|
 * bytes there, sending the run first when there is less): ep_txq_add of
 * that very address then copies nothing.
 */
uint8_t *ep_txq_space(struct ep_txq *q, size_t need);
const ep_txq_stats *ep_txq_stats_of(const struct ep_txq *q);

/* ep_rx_cb: one datagram read from the socket */
typedef void (*ep_rx_cb)(void *arg, const uint8_t *data, size_t len, const struct sockaddr *from,
                         socklen_t fromlen);

struct ep_rxq; /* the receive buffers */

struct ep_rxq *ep_rxq_new(void); /* NULL: out of memory */
void ep_rxq_del(struct ep_rxq *q);
/*
 * ep_rxq_read reads one batch from |fd| and calls |cb| for each datagram of
 * at most |max_len| bytes (longer ones are dropped). Returns the number of
 * messages read (0: nothing was waiting).
 */
unsigned ep_rxq_read(struct ep_rxq *q, int fd, size_t max_len, ep_rx_cb cb, void *arg);

/* ep_udp_set_gro: UDP_GRO on |fd| on or off; 0, or -1 (the kernel lacks it). */
int ep_udp_set_gro(int fd, int on);

#endif
