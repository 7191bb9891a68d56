/* Batched UDP I/O of the endpoint (see ep_udp.h): GSO runs out, recvmmsg / GRO in. */
#include "ep_udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "udp_gro.h"

struct ep_txq {
    int fd; /* of the run; -1: empty */
    struct sockaddr_storage to;
    socklen_t tolen;
    size_t seg; /* segment size: the first datagram's */
    size_t len; /* bytes gathered */
    unsigned n; /* datagrams gathered */
    int closed; /* the last datagram was shorter: the run cannot grow */
    int gso;    /* 1: sendmsg with UDP_SEGMENT */
    ep_txq_stats st;
    uint8_t buf[EP_TX_MAX_BYTES];
};

struct ep_txq *ep_txq_new(void)
{
    struct ep_txq *q = malloc(sizeof(*q));
    if (!q)
        return NULL;
    memset(q, 0, offsetof(struct ep_txq, buf));
    q->fd = -1;
    q->gso = 1;
    return q;
}

void ep_txq_del(struct ep_txq *q)
{
    free(q);
}

void ep_txq_set_gso(struct ep_txq *q, int on)
{
    ep_txq_flush(q);
    q->gso = on ? 1 : 0;
}

int ep_txq_gso(const struct ep_txq *q)
{
    return q->gso;
}

const ep_txq_stats *ep_txq_stats_of(const struct ep_txq *q)
{
    return &q->st;
}

/* wait_writable: a full send buffer drains in microseconds; wait that long at most 1 ms. */
static int wait_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 1) == 1;
}

/* send_gso: the run as one sendmsg; 0 sent, -1 lost, -2 GSO refused (send it otherwise). */
static int send_gso(struct ep_txq *q)
{
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        size_t align; /* a cmsghdr's */
    } ctl;
    struct iovec iov = {q->buf, q->len};
    struct msghdr m;
    struct cmsghdr *cm;
    uint16_t seg = (uint16_t)q->seg;

    memset(&m, 0, sizeof(m));
    memset(&ctl, 0, sizeof(ctl));
    m.msg_name = &q->to;
    m.msg_namelen = q->tolen;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.buf;
    m.msg_controllen = sizeof(ctl.buf);
    cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(seg));
    memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
    for (int tries = 0; tries < 3; tries++) {
        ssize_t k = sendmsg(q->fd, &m, MSG_DONTWAIT);
        if (k >= 0) {
            q->st.sends++;
            q->st.gso_sends++;
            return 0;
        }
        if (errno == EINTR || ((errno == EAGAIN || errno == ENOBUFS) && wait_writable(q->fd)))
            continue;
        if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP ||
            errno == EMSGSIZE) {
            /* no GSO here (EMSGSIZE: segments over the route's MTU): from now on without */
            q->st.gso_failed++;
            q->gso = 0;
            return -2;
        }
        break;
    }
    return -1;
}

/* send_each: the run as separate datagrams, one sendmmsg (or sendto for one). */
static void send_each(struct ep_txq *q)
{
    struct mmsghdr mm[EP_TX_MAX_SEGS];
    struct iovec iov[EP_TX_MAX_SEGS];
    unsigned done = 0;
    int tries = 0;

    memset(mm, 0, sizeof(mm[0]) * q->n);
    for (unsigned i = 0; i < q->n; i++) {
        size_t off = i * q->seg;
        iov[i].iov_base = q->buf + off;
        iov[i].iov_len = q->len - off < q->seg ? q->len - off : q->seg;
        mm[i].msg_hdr.msg_name = &q->to;
        mm[i].msg_hdr.msg_namelen = q->tolen;
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    while (done < q->n) {
        int k = sendmmsg(q->fd, mm + done, q->n - done, MSG_DONTWAIT);
        if (k > 0) {
            q->st.sends++;
            done += (unsigned)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == ENOBUFS) && tries++ < 3 && wait_writable(q->fd))
            continue;
        if (k < 0 && errno != EAGAIN && errno != ENOBUFS) {
            done++; /* this datagram cannot go (too big for the path, unreachable): the next */
            q->st.lost++;
            continue;
        }
        break;
    }
    q->st.lost += q->n - done;
}

void ep_txq_flush(struct ep_txq *q)
{
    if (q->n == 0)
        return;
    q->st.datagrams += q->n;
    if (q->n == 1 || !q->gso) {
        send_each(q);
    } else {
        int rv = send_gso(q);
        if (rv == -2)
            send_each(q);
        else if (rv == -1)
            q->st.lost += q->n;
    }
    q->n = 0;
    q->len = 0;
    q->fd = -1;
}

uint8_t *ep_txq_space(struct ep_txq *q, size_t need)
{
    if (need > EP_TX_MAX_BYTES - q->len)
        ep_txq_flush(q);
    return q->buf + q->len;
}

void ep_txq_add(struct ep_txq *q, int fd, const uint8_t *data, size_t len,
                const struct sockaddr *to, socklen_t tolen)
{
    if (len == 0 || len > EP_TX_MAX_BYTES || tolen > sizeof(q->to))
        return;
    if (q->n > 0 &&
        (fd != q->fd || q->closed || len > q->seg || q->n >= EP_TX_MAX_SEGS ||
         q->len + len > EP_TX_MAX_BYTES || tolen != q->tolen || memcmp(to, &q->to, tolen) != 0))
        ep_txq_flush(q);
    if (q->n == 0) {
        q->fd = fd;
        memcpy(&q->to, to, tolen);
        q->tolen = tolen;
        q->seg = len;
        q->closed = 0;
    }
    if (data != q->buf + q->len)
        memmove(q->buf + q->len, data, len);
    q->len += len;
    q->n++;
    q->closed = len < q->seg;
}

/* ---- receiving ---- */

#define RX_STRIDE (EP_RX_BUF + 320) /* 64 KiB apart, the heads would share one cache set */

struct ep_rxq {
    struct mmsghdr mm[EP_RX_BATCH];
    struct iovec iov[EP_RX_BATCH];
    struct sockaddr_storage names[EP_RX_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        size_t align; /* a cmsghdr's */
    } ctl[EP_RX_BATCH];
    uint8_t *bufs; /* EP_RX_BATCH x RX_STRIDE */
};

struct ep_rxq *ep_rxq_new(void)
{
    struct ep_rxq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->bufs = malloc((size_t)EP_RX_BATCH * RX_STRIDE); /* pages are touched only as data lands */
    if (!q->bufs) {
        free(q);
        return NULL;
    }
    return q;
}

void ep_rxq_del(struct ep_rxq *q)
{
    if (!q)
        return;
    free(q->bufs);
    free(q);
}

unsigned ep_rxq_read(struct ep_rxq *q, int fd, size_t max_len, ep_rx_cb cb, void *arg)
{
    int n;
    for (unsigned i = 0; i < EP_RX_BATCH; i++) {
        struct msghdr *m = &q->mm[i].msg_hdr;
        q->iov[i].iov_base = q->bufs + (size_t)i * RX_STRIDE;
        q->iov[i].iov_len = EP_RX_BUF;
        m->msg_name = &q->names[i];
        m->msg_namelen = sizeof(q->names[i]);
        m->msg_iov = &q->iov[i];
        m->msg_iovlen = 1;
        m->msg_control = q->ctl[i].buf;
        m->msg_controllen = sizeof(q->ctl[i].buf);
        m->msg_flags = 0;
        q->mm[i].msg_len = 0;
    }
    do {
        n = recvmmsg(fd, q->mm, EP_RX_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        struct msghdr *m = &q->mm[i].msg_hdr;
        const uint8_t *p = q->iov[i].iov_base;
        size_t len = q->mm[i].msg_len, seg;
        if (m->msg_flags & MSG_TRUNC)
            continue;
        seg = pos_udp_gro_size(m);
        if (seg == 0 || seg > len)
            seg = len;
        for (size_t off = 0; off < len; off += seg) {
            size_t d = len - off < seg ? len - off : seg;
            if (d > 0 && d <= max_len)
                cb(arg, p + off, d, (const struct sockaddr *)&q->names[i], m->msg_namelen);
        }
    }
    return (unsigned)n;
}

int ep_udp_set_gro(int fd, int on)
{
    int v = on ? 1 : 0;
    return setsockopt(fd, SOL_UDP, UDP_GRO, &v, sizeof(v)) == 0 ? 0 : -1;
}
