/*
 * The endpoint (see pos/p2p.h and internal.h): one UDP socket per address
 * family behind one epoll descriptor, the table of connection ids this
 * device issued, a netlink socket that tells when the interface addresses
 * change (ep_addr_gen), and the poll/process loop.
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cid_map.h"
#include "ep_udp.h"
#include "internal.h"
#include "tickets.h"

#define EP_WRITE_LATER 64 /* connections whose writes wait for the end of a received batch */

int64_t pos_p2p_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ep_sock {
    int fd;
    struct sockaddr_storage local;
    socklen_t local_len;
};

struct pos_p2p_endpoint {
    pos_identity id;
    pos_tls_creds *creds;
    struct relay_tickets *tickets; /* relays' session tickets (tickets.h) */
    struct ep_sock socks[2];       /* [0] IPv4, [1] IPv6; fd -1 when absent */
    int epfd;
    int nlfd;                 /* netlink: interface address changes (-1: not watched) */
    uint32_t addr_gen;        /* how many batches of such changes were seen */
    pos_cid_map *cids;        /* connection ids we issued -> struct ep_conn */
    struct ep_conn *conns;    /* attached connections (relay connections), newest first */
    struct ep_conn *listener; /* the session layer: new peers' Initials */
    uint64_t frames_dropped;
    int nat;            /* enum pos_p2p_nat_mapping (pos_p2p_endpoint_set_nat_mapping) */
    int park_idle_ms;   /* pos_p2p_endpoint_set_park: 0 never */
    int park_ka_ms;     /* 0: the relay's interval */
    ep_io io;           /* send NULL: the sockets */
    struct ep_txq *txq; /* datagrams gathered while held (GSO runs) */
    struct ep_rxq *rxq; /* receive buffers; NULL without sockets */
    int tx_hold;        /* ep_tx_hold depth: sends are gathered while > 0 */
    int in_rx;          /* dispatching a received batch: writes can wait (ep_write_later) */
    struct ep_conn *later[EP_WRITE_LATER];
    void (*later_write[EP_WRITE_LATER])(struct ep_conn *c);
    unsigned n_later;
    uint8_t txroom[EP_TX_HEAD + EP_MAX_UDP]; /* one packet (ep_txbuf) and room in front of it */
};

/* ---- connections and their ids ---- */

void ep_conn_init(struct ep_conn *c, pos_p2p_endpoint *ep, const struct ep_conn_ops *ops)
{
    c->cid_ops = &ep_cid_ops;
    c->ops = ops;
    c->ep = ep;
    c->prev = c->next = NULL;
}

void ep_conn_attach(struct ep_conn *c)
{
    pos_p2p_endpoint *ep = c->ep;
    c->prev = NULL;
    c->next = ep->conns;
    if (ep->conns)
        ep->conns->prev = c;
    ep->conns = c;
}

void ep_conn_detach(struct ep_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->ep->conns == c)
        c->ep->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

void ep_set_listener(pos_p2p_endpoint *ep, struct ep_conn *c)
{
    ep->listener = c;
}

struct ep_conn *ep_listener(const pos_p2p_endpoint *ep)
{
    return ep->listener;
}

static int cid_add(void *conn, const uint8_t *id, size_t len)
{
    struct ep_conn *c = conn;
    return pos_cid_map_add(c->ep->cids, id, len, c);
}

static void cid_remove(void *conn, const uint8_t *id, size_t len)
{
    struct ep_conn *c = conn;
    pos_cid_map_remove(c->ep->cids, id, len, c);
}

const pos_quic_cid_ops ep_cid_ops = {EP_CID_LEN, cid_add, cid_remove, NULL};

int ep_cid_add(struct ep_conn *c, const uint8_t id[EP_CID_LEN])
{
    return cid_add(c, id, EP_CID_LEN);
}

/* cid_find: the connection (relay connection or peer session) of a connection id we issued. */
static struct ep_conn *cid_find(const pos_p2p_endpoint *ep, const uint8_t *id, size_t len)
{
    return pos_cid_map_find(ep->cids, id, len);
}

static void cid_input(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                      const struct sockaddr *from, socklen_t fromlen)
{
    if (c->ops->input)
        c->ops->input(c, sock, data, len, from, fromlen);
}

/* frame_input: a relay data frame, to the connection it came from. 0 taken, -1 dropped. */
static int frame_input(pos_p2p_endpoint *ep, const uint8_t *data, size_t len,
                       const struct sockaddr *from, socklen_t fromlen)
{
    for (struct ep_conn *c = ep->conns, *next; c; c = next) {
        next = c->next;
        int rv = c->ops->frame ? c->ops->frame(c, data, len, from, fromlen) : 1;
        if (rv <= 0)
            return rv;
    }
    /* not from a relay we are connected to: a peer's probe (hole punching) for the sessions? */
    if (ep->listener && ep->listener->ops->frame)
        return ep->listener->ops->frame(ep->listener, data, len, from, fromlen) == 0 ? 0 : -1;
    return -1;
}

/* ---- sockets ---- */

int ep_send_checked(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
                    const struct sockaddr *to, socklen_t tolen)
{
    ssize_t n;
    if (sock < 0 || sock > 1)
        return -1;
    if (ep->io.send)
        return ep->io.send(ep->io.arg, sock, data, len, to, tolen) == 0 ? 0 : -1;
    if (ep->socks[sock].fd < 0)
        return -1;
    if (ep->tx_hold > 0) { /* gathered: sent as one GSO run when the hold ends */
        ep_txq_add(ep->txq, ep->socks[sock].fd, data, len, to, tolen);
        return 0;
    }
    do {
        n = sendto(ep->socks[sock].fd, data, len, MSG_DONTWAIT, to, tolen);
    } while (n < 0 && errno == EINTR);
    return n >= 0 && (size_t)n == len ? 0 : -1;
}

void ep_send(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
             const struct sockaddr *to, socklen_t tolen)
{
    /* a failed send is a lost packet: QUIC recovers */
    (void)ep_send_checked(ep, sock, data, len, to, tolen);
}

void ep_tx_hold(pos_p2p_endpoint *ep)
{
    ep->tx_hold++;
}

void ep_tx_release(pos_p2p_endpoint *ep)
{
    if (ep->tx_hold > 0 && --ep->tx_hold == 0)
        ep_txq_flush(ep->txq);
}

int ep_write_later(struct ep_conn *c, void (*write)(struct ep_conn *c))
{
    pos_p2p_endpoint *ep = c->ep;
    if (c->write_later)
        return 1;
    if (!ep->in_rx || !write || ep->n_later >= EP_WRITE_LATER)
        return 0;
    c->write_later = 1;
    ep->later_write[ep->n_later] = write;
    ep->later[ep->n_later++] = c;
    return 1;
}

void ep_write_cancel(struct ep_conn *c)
{
    pos_p2p_endpoint *ep = c->ep;
    if (!c->write_later)
        return;
    c->write_later = 0;
    for (unsigned i = 0; i < ep->n_later; i++)
        if (ep->later[i] == c)
            ep->later[i] = NULL;
}

/* run_later: the writes that waited for the end of a received batch. */
static void run_later(pos_p2p_endpoint *ep)
{
    ep->in_rx = 0;
    for (unsigned i = 0; i < ep->n_later; i++) {
        struct ep_conn *c = ep->later[i];
        if (!c)
            continue;
        ep->later[i] = NULL;
        c->write_later = 0;
        ep->later_write[i](c); /* may free c (it is out of the list already) */
    }
    ep->n_later = 0;
}

int ep_has_sock(const pos_p2p_endpoint *ep, int sock)
{
    /* with an I/O seam (ep_new_io) the IPv4 "socket" is the seam's */
    return sock >= 0 && sock <= 1 && (ep->socks[sock].fd >= 0 || (ep->io.send && sock == 0));
}

const struct sockaddr_storage *ep_local(const pos_p2p_endpoint *ep, int sock, socklen_t *len)
{
    *len = ep->socks[sock].local_len;
    return &ep->socks[sock].local;
}

uint8_t *ep_txbuf(pos_p2p_endpoint *ep)
{
    return ep->txroom + EP_TX_HEAD;
}

uint8_t *ep_tx_space(pos_p2p_endpoint *ep, size_t head)
{
    if (head > EP_TX_HEAD)
        head = EP_TX_HEAD;
    if (ep->tx_hold > 0 && !ep->io.send)
        return ep_txq_space(ep->txq, head + EP_MAX_UDP) + head;
    return ep->txroom + EP_TX_HEAD;
}

pos_tls_creds *ep_creds(const pos_p2p_endpoint *ep)
{
    return ep->creds;
}

struct relay_tickets *ep_tickets(const pos_p2p_endpoint *ep)
{
    return ep->tickets;
}

int pos_p2p_endpoint_set_resumption(pos_p2p_endpoint *ep, int enabled)
{
    if (!ep || (enabled != 0 && enabled != 1))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    relay_tickets_enable(ep->tickets, enabled);
    return 0;
}

static int open_sock(struct ep_sock *s, int family, unsigned port)
{
    struct sockaddr_storage ss;
    int one = 1, fd;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
    }
    fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* Room for bursts (handshake flights of many connections, relayed data, GSO runs). */
    int bufsize = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    if (bind(fd, (struct sockaddr *)&ss,
             family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) != 0) {
        close(fd);
        return -1;
    }
    ep_udp_set_gro(fd, 1); /* runs of one sender arrive as one read; fine without */
    s->fd = fd;
    s->local_len = sizeof(s->local);
    getsockname(fd, (struct sockaddr *)&s->local, &s->local_len);
    return 0;
}

/* open_netlink: a socket told of every interface address added or removed, or -1. */
static int open_netlink(void)
{
    struct sockaddr_nl a = {.nl_family = AF_NETLINK,
                            .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR};
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* drain_netlink: reads what the netlink socket holds; one more batch of changes if any. */
static void drain_netlink(pos_p2p_endpoint *ep)
{
    uint8_t buf[8192];
    int any = 0;
    for (int k = 0; ep->nlfd >= 0 && k < 64; k++) {
        ssize_t n = recv(ep->nlfd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == ENOBUFS) {
            any = 1; /* some were lost: changes all the same */
            continue;
        }
        if (n <= 0)
            break;
        any = 1;
    }
    if (any)
        ep->addr_gen++;
}

uint32_t ep_addr_gen(const pos_p2p_endpoint *ep)
{
    return ep->addr_gen;
}

/* ep_alloc: an endpoint with its identity, credentials and tables, no socket yet. */
static int ep_alloc(pos_p2p_endpoint **out, const pos_p2p_identity *id)
{
    pos_p2p_endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return POS_P2P_ERR_NOMEM;
    ep->socks[0].fd = ep->socks[1].fd = -1;
    ep->epfd = ep->nlfd = -1;
    ep->id = *p2p_identity_key(id);
    ep->cids = pos_cid_map_new(EP_MAX_CIDS);
    ep->tickets = relay_tickets_new();
    ep->txq = ep_txq_new();
    if (!ep->cids || !ep->tickets || !ep->txq || pos_tls_creds_new(&ep->creds, &ep->id) != 0) {
        pos_p2p_endpoint_del(ep);
        return POS_P2P_ERR_NOMEM;
    }
    *out = ep;
    return 0;
}

int ep_new_io(pos_p2p_endpoint **out, const pos_p2p_identity *id, const ep_io *io,
              const struct sockaddr_storage *local4)
{
    pos_p2p_endpoint *ep;
    int rv;
    if (!out || !id || !io || !io->send || !local4)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if ((rv = ep_alloc(&ep, id)) != 0)
        return rv;
    ep->io = *io;
    ep->socks[0].local = *local4;
    ep->socks[0].local_len = pos_addr_len(local4);
    *out = ep;
    return 0;
}

int pos_p2p_endpoint_new(pos_p2p_endpoint **out, const pos_p2p_identity *id, unsigned port)
{
    pos_p2p_endpoint *ep;
    const char *docker = getenv("POS_DOCKER");
    struct epoll_event ev;
    int rv;

    if (!out || !id || port > 65535)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (port == 0 && docker && !strcmp(docker, "true"))
        port = 7373;
    if ((rv = ep_alloc(&ep, id)) != 0)
        return rv;
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    ep->rxq = ep_rxq_new();
    if (!ep->rxq) {
        pos_p2p_endpoint_del(ep);
        return POS_P2P_ERR_NOMEM;
    }
    if (ep->epfd < 0 || open_sock(&ep->socks[0], AF_INET, port) != 0) {
        pos_p2p_endpoint_del(ep);
        return POS_P2P_ERR_IO;
    }
    /* IPv6 on the same port when the host has it: one port for the device. */
    if (port == 0)
        port = ntohs(((struct sockaddr_in *)&ep->socks[0].local)->sin_port);
    if (open_sock(&ep->socks[1], AF_INET6, port) != 0)
        ep->socks[1].fd = -1;
    ep->nlfd = open_netlink(); /* best effort: without it no address change is noticed */
    for (int i = 0; i < 3; i++) {
        int fd = i < 2 ? ep->socks[i].fd : ep->nlfd;
        if (fd < 0)
            continue;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            pos_p2p_endpoint_del(ep);
            return POS_P2P_ERR_IO;
        }
    }
    *out = ep;
    return 0;
}

int pos_p2p_endpoint_fd(const pos_p2p_endpoint *ep)
{
    return ep->epfd;
}

int pos_p2p_endpoint_set_nat_mapping(pos_p2p_endpoint *ep, int mapping)
{
    if (!ep || mapping < POS_P2P_NAT_UNKNOWN || mapping > POS_P2P_NAT_VARIES)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    ep->nat = mapping;
    return 0;
}

int pos_p2p_endpoint_set_park(pos_p2p_endpoint *ep, int idle_ms, int keepalive_ms)
{
    if (!ep || (idle_ms != 0 && (idle_ms < 1000 || idle_ms > 86400000)) ||
        (keepalive_ms != 0 && (keepalive_ms < 1000 || keepalive_ms > 3600000)))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    ep->park_idle_ms = idle_ms;
    ep->park_ka_ms = keepalive_ms;
    return 0;
}

int ep_park_idle_ms(const pos_p2p_endpoint *ep)
{
    return ep->park_idle_ms;
}

int ep_park_keepalive_ms(const pos_p2p_endpoint *ep)
{
    return ep->park_ka_ms;
}

int pos_p2p_endpoint_nat_mapping(const pos_p2p_endpoint *ep)
{
    return ep ? ep->nat : POS_P2P_NAT_UNKNOWN;
}

unsigned pos_p2p_endpoint_local_port(const pos_p2p_endpoint *ep)
{
    return ntohs(((const struct sockaddr_in *)&ep->socks[0].local)->sin_port);
}

static int64_t conn_deadline(const struct ep_conn *c)
{
    return c && c->ops->deadline_ms ? c->ops->deadline_ms(c) : -1;
}

int64_t pos_p2p_endpoint_deadline(const pos_p2p_endpoint *ep)
{
    int64_t best = conn_deadline(ep->listener);
    for (const struct ep_conn *c = ep->conns; c; c = c->next) {
        int64_t d = conn_deadline(c);
        if (d >= 0 && (best < 0 || d < best))
            best = d;
    }
    return best;
}

/* version_routable: a long header of QUIC v1, or a Version Negotiation (for our dialers). */
static int version_routable(const uint8_t *data)
{
    uint32_t v = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 |
                 (uint32_t)data[4];
    return v == 1 || v == 0;
}

void ep_input(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
              const struct sockaddr *from, socklen_t fromlen)
{
    const uint8_t *dcid;
    size_t dcidlen;
    struct ep_conn *e;

    if (len == 0)
        return;
    if (!(data[0] & 0x40) && !(data[0] & 0x80) && len > EP_CID_LEN &&
        (e = cid_find(ep, data + 1, EP_CID_LEN)) != NULL) {
        cid_input(e, sock, data, len, from, fromlen); /* a peer that greases the QUIC bit */
        return;
    }
    if (!(data[0] & 0x40)) {
        /* a relay data frame: to the relay connection it came from (quic_client.c) */
        if (frame_input(ep, data, len, from, fromlen) != 0)
            ep->frames_dropped++;
        return;
    }
    /* Only the DCID is needed to route; ngtcp2 validates the rest. */
    if (data[0] & 0x80) {
        if (len < 6)
            return;
        dcidlen = data[5];
        if (dcidlen > 20 || len < 6 + dcidlen)
            return;
        dcid = data + 6;
    } else {
        if (len < 1 + EP_CID_LEN)
            return;
        dcidlen = EP_CID_LEN;
        dcid = data + 1;
    }
    e = cid_find(ep, dcid, dcidlen);
    if (e && (data[0] & 0x80) && !version_routable(data))
        return; /* our connections speak v1 only: ngtcp2 must not see another version */
    if (e)
        cid_input(e, sock, data, len, from, fromlen);
    else if ((data[0] & 0x80) && ep->listener)
        cid_input(ep->listener, sock, data, len, from, fromlen); /* a new peer's session? */
}

struct rx_ctx {
    pos_p2p_endpoint *ep;
    int sock;
    unsigned datagrams;
};

static void rx_one(void *arg, const uint8_t *data, size_t len, const struct sockaddr *from,
                   socklen_t fromlen)
{
    struct rx_ctx *x = arg;
    x->datagrams++;
    ep_input(x->ep, x->sock, data, len, from, fromlen);
}

int pos_p2p_endpoint_process(pos_p2p_endpoint *ep)
{
    int64_t now;

    drain_netlink(ep);
    ep_tx_hold(ep); /* what the batch makes the connections send leaves in GSO runs */
    for (int i = 0; i < 2; i++) {
        struct rx_ctx x = {ep, i, 0};
        if (ep->socks[i].fd < 0 || !ep->rxq)
            continue;
        while (x.datagrams < 1024) { /* bounded: timers run too */
            ep->in_rx = 1;           /* connections write once the batch is in */
            unsigned n = ep_rxq_read(ep->rxq, ep->socks[i].fd, EP_MAX_UDP, rx_one, &x);
            run_later(ep);
            if (n < EP_RX_BATCH)
                break;
        }
    }
    now = pos_p2p_now_ms();
    for (struct ep_conn *c = ep->conns, *next; c; c = next) {
        next = c->next;
        if (c->ops->on_timer)
            c->ops->on_timer(c, now);
    }
    if (ep->listener && ep->listener->ops->on_timer)
        ep->listener->ops->on_timer(ep->listener, now); /* after: it may free connections */
    ep_tx_release(ep);
    ep_txq_flush(ep->txq); /* also when called inside a hold (a callback waiting): nothing waits */
    return 0;
}

int pos_p2p_endpoint_set_gso(pos_p2p_endpoint *ep, int on)
{
    if (!ep)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    ep_txq_set_gso(ep->txq, on);
    for (int i = 0; i < 2; i++)
        if (ep->socks[i].fd >= 0)
            ep_udp_set_gro(ep->socks[i].fd, on);
    return 0;
}

int pos_p2p_endpoint_gso(const pos_p2p_endpoint *ep)
{
    return ep && ep_txq_gso(ep->txq);
}

int pos_p2p_endpoint_run(pos_p2p_endpoint *ep, int timeout_ms, pos_p2p_done_cb done, void *arg)
{
    int64_t end = timeout_ms >= 0 ? pos_p2p_now_ms() + timeout_ms : -1;
    struct epoll_event evs[4];

    for (;;) {
        int64_t now = pos_p2p_now_ms(), d = pos_p2p_endpoint_deadline(ep), wait;
        if (done && done(arg))
            return 0;
        if (end >= 0 && now >= end)
            return POS_P2P_ERR_TIMEOUT;
        wait = d < 0 ? 1000 : d - now;
        if (end >= 0 && end - now < wait)
            wait = end - now;
        if (wait < 0)
            wait = 0;
        if (wait > 1000)
            wait = 1000;
        ep_txq_flush(ep->txq); /* run from inside a callback, a hold may be open: send first */
        if (epoll_wait(ep->epfd, evs, 4, (int)wait) < 0 && errno != EINTR)
            return POS_P2P_ERR_IO;
        pos_p2p_endpoint_process(ep);
    }
}

void pos_p2p_endpoint_del(pos_p2p_endpoint *ep)
{
    if (!ep)
        return;
    if (ep->listener) /* sessions may use relay connections: they go first */
        ep->listener->ops->destroy(ep->listener);
    ep->listener = NULL;
    if (ep->txq)
        ep_txq_flush(ep->txq); /* closes written on the way out */
    while (ep->conns) {
        struct ep_conn *c = ep->conns;
        c->ops->destroy(c); /* detaches itself */
        if (ep->conns == c)
            ep_conn_detach(c);
    }
    if (ep->txq)
        ep_txq_flush(ep->txq); /* what the connections said on their way out */
    for (int i = 0; i < 2; i++)
        if (ep->socks[i].fd >= 0)
            close(ep->socks[i].fd);
    if (ep->epfd >= 0)
        close(ep->epfd);
    if (ep->txq)
        ep_txq_flush(ep->txq);
    ep_txq_del(ep->txq);
    ep_rxq_del(ep->rxq);
    if (ep->nlfd >= 0)
        close(ep->nlfd);
    pos_cid_map_del(ep->cids);
    pos_tls_creds_del(ep->creds);
    relay_tickets_free(ep->tickets);
    pos_identity_free(&ep->id);
    free(ep);
}
