/* One receive batch of a relay UDP socket, GRO runs cut into datagrams (see rxbatch.h). */
#include "rxbatch.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "udp_gro.h"

_Static_assert(RX_BATCH *RX_SMALL <= 65536, "small messages fit the first buffer");

#define RX_GRO_BUF 65536 /* a received message: one datagram, or a GRO run of them */
#define RX_GRO_PAD                                                                                 \
    320 /* buffers 64 KiB + 5 lines apart: their heads fall in different cache sets */

struct relay_rxbatch {
    /* the messages as received (recvmmsg) */
    struct mmsghdr gro[RX_BATCH];
    struct iovec gro_iov[RX_BATCH];
    struct sockaddr_storage names[RX_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        size_t align;
    } gro_ctl[RX_BATCH];
    /* the current piece: datagrams pointing into bufs, the forwarded output */
    struct mmsghdr rx[RX_BATCH], tx[RX_BATCH];
    struct iovec rx_iov[RX_BATCH];
    unsigned quic_idx[RX_BATCH];
    uint8_t bufs[RX_BATCH][RX_GRO_BUF + RX_GRO_PAD];
    /* coalescing (relay_rxbatch_drain): the rate of the last window */
    int64_t rate_t0; /* the window's start (CLOCK_MONOTONIC, ns) */
    uint64_t rate_n; /* datagrams read since */
    uint64_t rate_m; /* messages read since (a GRO run is one) */
    int runs;        /* the last full window's datagrams came mostly in GRO runs */
    uint64_t rate;   /* datagrams a second in the last full window */
    uint64_t cut;    /* datagrams cut so far (relay_rxbatch_cut): GRO runs count whole */
};

relay_rxbatch *relay_rxbatch_new(void)
{
    return calloc(1, sizeof(relay_rxbatch));
}

void relay_rxbatch_del(relay_rxbatch *b)
{
    free(b);
}

struct mmsghdr *relay_rxbatch_rx(relay_rxbatch *b)
{
    return b->rx;
}

struct mmsghdr *relay_rxbatch_tx(relay_rxbatch *b)
{
    return b->tx;
}

unsigned *relay_rxbatch_quic_idx(relay_rxbatch *b)
{
    return b->quic_idx;
}

/* read_batch: recvmmsg of RX_BATCH messages of |cap| bytes each, |stride| bytes apart in bufs. */
static unsigned read_batch(relay_rxbatch *b, int fd, size_t cap, size_t stride)
{
    for (unsigned i = 0; i < RX_BATCH; i++) {
        struct msghdr *h = &b->gro[i].msg_hdr;
        b->gro_iov[i].iov_base = &b->bufs[0][0] + i * stride;
        b->gro_iov[i].iov_len = cap;
        memset(h, 0, sizeof(*h));
        h->msg_iov = &b->gro_iov[i];
        h->msg_iovlen = 1;
        h->msg_name = &b->names[i];
        h->msg_namelen = sizeof(b->names[i]);
        h->msg_control = b->gro_ctl[i].buf;
        h->msg_controllen = sizeof(b->gro_ctl[i].buf);
        b->gro[i].msg_len = 0;
    }
    int n;
    do {
        n = recvmmsg(fd, b->gro, RX_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    return n > 0 ? (unsigned)n : 0;
}

unsigned relay_rxbatch_read(relay_rxbatch *b, int fd)
{
    return read_batch(b, fd, RX_GRO_BUF, sizeof(b->bufs[0]));
}

unsigned relay_rxbatch_read_small(relay_rxbatch *b, int fd)
{
    /* a few pages in all: no page or cache set of its own per datagram */
    return read_batch(b, fd, RX_SMALL, RX_SMALL);
}

void relay_rxbatch_cut(relay_rxbatch *b, unsigned n, relay_rxbatch_fn fn, void *arg)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        struct msghdr *h = &b->gro[i].msg_hdr;
        size_t len = b->gro[i].msg_len, seg = pos_udp_gro_size(h), off = 0;
        if (seg == 0 || seg > len || (h->msg_flags & MSG_TRUNC))
            seg = len;
        do {
            size_t d = len - off < seg ? len - off : seg;
            if (k == RX_BATCH) {
                fn(arg, b, k);
                k = 0;
            }
            b->rx_iov[k].iov_base = (uint8_t *)b->gro_iov[i].iov_base + off;
            b->rx_iov[k].iov_len = d;
            memset(&b->rx[k].msg_hdr, 0, sizeof(b->rx[k].msg_hdr));
            b->rx[k].msg_hdr.msg_iov = &b->rx_iov[k];
            b->rx[k].msg_hdr.msg_iovlen = 1;
            b->rx[k].msg_hdr.msg_name = h->msg_name;
            b->rx[k].msg_hdr.msg_namelen = h->msg_namelen;
            b->rx[k].msg_hdr.msg_flags = h->msg_flags & MSG_TRUNC;
            b->rx[k].msg_len = (unsigned)d;
            k++;
            b->cut++;
            off += d;
        } while (off < len);
    }
    if (k > 0)
        fn(arg, b, k);
}

unsigned relay_rxbatch_pump(relay_rxbatch *b, int fd, int rounds, int small, relay_rxbatch_fn fn,
                            void *arg)
{
    unsigned total = 0;
    for (int round = 0; round < rounds; round++) {
        unsigned n = small ? relay_rxbatch_read_small(b, fd) : relay_rxbatch_read(b, fd);
        if (n == 0)
            break;
        total += n;
        relay_rxbatch_cut(b, n, fn, arg);
        if (n < RX_BATCH)
            break;
    }
    return total;
}

#define RX_COALESCE_WINDOW_NS 10000000

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * pause_ns: counts |d| datagrams in |m| messages; the pause before the next read (0: none).
 * None while the rate is low, and none while the datagrams come mostly in GRO runs (a QUIC
 * transfer's GSO batches): those wake-ups are already worth it, and pausing would only hold
 * back the small datagrams between them (the receiver's ACKs), which slows the transfer.
 */
static long pause_ns(relay_rxbatch *b, unsigned d, unsigned m)
{
    int64_t now = mono_ns(), span = now - b->rate_t0;
    b->rate_n += d;
    b->rate_m += m;
    if (span >= RX_COALESCE_WINDOW_NS) {
        b->rate = b->rate_n * 1000000000u / (uint64_t)span;
        b->runs = b->rate_n >= 2 * b->rate_m;
        b->rate_t0 = now;
        b->rate_n = b->rate_m = 0;
    }
    if (b->rate < RX_COALESCE_RATE || b->runs)
        return 0;
    uint64_t ns = (uint64_t)RX_COALESCE_TARGET * 1000000000u / b->rate; /* TARGET arrive */
    return ns < RX_COALESCE_MIN_NS   ? RX_COALESCE_MIN_NS
           : ns > RX_COALESCE_MAX_NS ? RX_COALESCE_MAX_NS
                                     : (long)ns;
}

unsigned relay_rxbatch_drain(relay_rxbatch *b, unsigned (*read)(void *arg), void *arg)
{
    uint64_t cut0 = b->cut;
    unsigned n = read(arg), total = n, d = (unsigned)(b->cut - cut0);
    long ns = pause_ns(b, d, n);
    /* a short read in datagrams: a GRO run of 40 is one message, and worth its wake-up */
    for (int k = 0; ns > 0 && k < RX_COALESCE_ROUNDS && n > 0 && d < RX_BATCH / 2; k++) {
        struct timespec pause = {0, ns};
        nanosleep(&pause, NULL);
        cut0 = b->cut;
        n = read(arg);
        total += n;
        d = (unsigned)(b->cut - cut0);
        ns = pause_ns(b, d, n);
    }
    return total;
}

void relay_rxbatch_thread_init(void)
{
    prctl(PR_SET_TIMERSLACK, 5000UL); /* the default 50 us would double the pause */
}
