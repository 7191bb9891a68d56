/* One receive batch of a relay UDP socket, GRO runs cut into datagrams (see rxbatch.h). */
#include "rxbatch.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
            off += d;
        } while (off < len);
    }
    if (k > 0)
        fn(arg, b, k);
}
