/*
 * One receive batch of a relay UDP socket (rxbatch.c): recvmmsg of up to
 * RX_BATCH messages, where UDP GRO may join a sender's GSO run into one
 * message, cut into its datagrams without copying, RX_BATCH datagrams at a
 * time, for the forwarder (relay_forward_batch) and the QUIC input. The
 * main loop (server_udp.c) and every worker thread (workers.c) own one.
 */
#ifndef POS_RELAY_RXBATCH_H
#define POS_RELAY_RXBATCH_H

#include <stddef.h>
#include <sys/socket.h>

#define RX_BATCH 64

typedef struct relay_rxbatch relay_rxbatch;

relay_rxbatch *relay_rxbatch_new(void); /* NULL: out of memory */
void relay_rxbatch_del(relay_rxbatch *b);

/* relay_rxbatch_read receives up to RX_BATCH messages from |fd|; how many (0: nothing more). */
unsigned relay_rxbatch_read(relay_rxbatch *b, int fd);
/*
 * relay_rxbatch_read_small: the same for a socket of short datagrams (a
 * parked-datagram socket, park_rx.h, GRO off): messages of at most
 * RX_SMALL bytes, packed together (a longer one comes with MSG_TRUNC).
 */
#define RX_SMALL 128
unsigned relay_rxbatch_read_small(relay_rxbatch *b, int fd);

/*
 * relay_rxbatch_cut cuts the |n| messages just read into their datagrams and
 * calls |fn|(|arg|, |b|, |k|) for each piece of at most RX_BATCH of them, in
 * relay_rxbatch_rx(b)[0..k). A run's datagrams are consecutive, one size but
 * the last, from one sender: the forwarder can send them on as one GSO run.
 * A truncated message is passed whole with MSG_TRUNC in its flags.
 */
typedef void (*relay_rxbatch_fn)(void *arg, relay_rxbatch *b, unsigned k);
void relay_rxbatch_cut(relay_rxbatch *b, unsigned n, relay_rxbatch_fn fn, void *arg);
/*
 * relay_rxbatch_pump reads |fd| (relay_rxbatch_read, or _read_small when
 * |small|) and cuts each batch for |fn| until the socket is empty or
 * |rounds| batches were read (bounded, so one busy socket cannot starve the
 * others). Returns the messages read.
 */
unsigned relay_rxbatch_pump(relay_rxbatch *b, int fd, int rounds, int small, relay_rxbatch_fn fn,
                            void *arg);

/*
 * relay_rxbatch_drain: one wake-up of a socket's reader: |read|(|arg|) reads
 * batches until the socket is empty (relay_rxbatch_read, then
 * relay_rxbatch_cut) and returns the messages it read. At a
 * high rate, a reader woken for every two or three datagrams spends most of
 * its CPU on the wake-up (epoll_wait, recvmmsg and sendmmsg: about 10 us)
 * rather than on the datagrams (about 1.5 us each). So, like a NIC's
 * interrupt moderation: while the last 10 ms brought at least
 * RX_COALESCE_RATE datagrams a second, a read that cut fewer than
 * RX_BATCH / 2 datagrams (a GRO run counts all of its own) is followed by a pause as long as
 * RX_COALESCE_TARGET datagrams take to arrive at that rate (RX_COALESCE_MIN_NS to
 * RX_COALESCE_MAX_NS) and another read, at most RX_COALESCE_ROUNDS times per
 * wake-up. At lower rates (handshakes, keep-alives, interactive traffic)
 * nothing waits, nor while the datagrams come mostly in GRO runs (QUIC
 * transfers' GSO batches: their wake-ups are worth it already, and a pause
 * would hold back the receiver's ACKs between them). The caller holds no
 * lock.
 */
#define RX_COALESCE_RATE 20000 /* datagrams a second */
#define RX_COALESCE_TARGET 16
#define RX_COALESCE_MIN_NS 50000
#define RX_COALESCE_MAX_NS 100000
#define RX_COALESCE_ROUNDS 2
unsigned relay_rxbatch_drain(relay_rxbatch *b, unsigned (*read)(void *arg), void *arg);
/* relay_rxbatch_thread_init: the calling thread's timer slack (5 us) fits the pauses above. */
void relay_rxbatch_thread_init(void);

/* The piece's datagrams, the forwarder's output and its QUIC indices (RX_BATCH each). */
struct mmsghdr *relay_rxbatch_rx(relay_rxbatch *b);
struct mmsghdr *relay_rxbatch_tx(relay_rxbatch *b);
unsigned *relay_rxbatch_quic_idx(relay_rxbatch *b);

#endif
