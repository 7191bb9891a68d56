/*
 * The endpoint (see pos/p2p.h and internal.h): one UDP socket per address
 * family behind one epoll descriptor, the table of connection ids this
 * device issued, and the poll/process loop.
 */
#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "internal.h"

int64_t pos_p2p_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- connection ids ---- */

static size_t bucket(const pos_p2p_endpoint *ep, const uint8_t *id)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, id, EP_CID_LEN, ep->hash_key);
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (ep->n_buckets - 1));
}

static void grow(pos_p2p_endpoint *ep)
{
    size_t old = ep->n_buckets;
    struct ep_cid **nb = calloc(old * 2, sizeof(*nb)), **ob = ep->buckets;
    if (!nb)
        return;
    ep->buckets = nb;
    ep->n_buckets = old * 2;
    for (size_t i = 0; i < old; i++) {
        struct ep_cid *e = ob[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t b = bucket(ep, e->id);
            e->next = nb[b];
            nb[b] = e;
        }
    }
    free(ob);
}

static int cid_add(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_relay *r,
                   pos_p2p_session *s)
{
    struct ep_cid *e = malloc(sizeof(*e));
    if (!e)
        return -1;
    if (ep->n_cids >= ep->n_buckets)
        grow(ep);
    size_t b = bucket(ep, id);
    memcpy(e->id, id, EP_CID_LEN);
    e->r = r;
    e->s = s;
    e->next = ep->buckets[b];
    ep->buckets[b] = e;
    ep->n_cids++;
    return 0;
}

static void cid_remove(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], const pos_p2p_relay *r,
                       const pos_p2p_session *s)
{
    for (struct ep_cid **pp = &ep->buckets[bucket(ep, id)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->r == r && (*pp)->s == s && memcmp((*pp)->id, id, EP_CID_LEN) == 0) {
            struct ep_cid *e = *pp;
            *pp = e->next;
            free(e);
            ep->n_cids--;
            return;
        }
    }
}

int ep_cid_add(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_relay *r)
{
    return cid_add(ep, id, r, NULL);
}

void ep_cid_remove(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], const pos_p2p_relay *r)
{
    cid_remove(ep, id, r, NULL);
}

int ep_cid_add_session(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_session *s)
{
    return cid_add(ep, id, NULL, s);
}

void ep_cid_remove_session(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN],
                           const pos_p2p_session *s)
{
    cid_remove(ep, id, NULL, s);
}

/* cid_find: the owner (relay connection or peer session) of a connection id we issued. */
static const struct ep_cid *cid_find(const pos_p2p_endpoint *ep, const uint8_t *id, size_t len)
{
    if (len != EP_CID_LEN)
        return NULL;
    for (const struct ep_cid *e = ep->buckets[bucket(ep, id)]; e; e = e->next)
        if (memcmp(e->id, id, EP_CID_LEN) == 0)
            return e;
    return NULL;
}

static void cid_input(pos_p2p_endpoint *ep, const struct ep_cid *e, int sock, const uint8_t *data,
                      size_t len, const struct sockaddr *from, socklen_t fromlen)
{
    if (e->r)
        qc_input(e->r, sock, data, len, from, fromlen);
    else
        sess_input(e->s, sock, data, len, from, fromlen);
}

/* ---- sockets ---- */

void ep_send(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
             const struct sockaddr *to, socklen_t tolen)
{
    ssize_t n;
    if (sock < 0 || sock > 1)
        return;
    if (ep->io.send) {
        ep->io.send(ep->io.arg, sock, data, len, to, tolen);
        return;
    }
    if (ep->socks[sock].fd < 0)
        return;
    do {
        n = sendto(ep->socks[sock].fd, data, len, MSG_DONTWAIT, to, tolen);
    } while (n < 0 && errno == EINTR);
    /* a failed send is a lost packet: QUIC recovers */
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
    /* Room for bursts (handshake flights of many connections, later relayed data). */
    int bufsize = 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    if (bind(fd, (struct sockaddr *)&ss,
             family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) != 0) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->local_len = sizeof(s->local);
    getsockname(fd, (struct sockaddr *)&s->local, &s->local_len);
    return 0;
}

/* ep_alloc: an endpoint with its identity, credentials and tables, no socket yet. */
static int ep_alloc(pos_p2p_endpoint **out, const pos_p2p_identity *id)
{
    pos_p2p_endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return POS_P2P_ERR_NOMEM;
    ep->socks[0].fd = ep->socks[1].fd = -1;
    ep->epfd = -1;
    ep->id = id->key;
    crypto_shorthash_keygen(ep->hash_key);
    ep->n_buckets = 256;
    ep->buckets = calloc(ep->n_buckets, sizeof(*ep->buckets));
    if (!ep->buckets || pos_tls_creds_new(&ep->creds, &ep->id) != 0) {
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
    if (ep->epfd < 0 || open_sock(&ep->socks[0], AF_INET, port) != 0) {
        pos_p2p_endpoint_del(ep);
        return POS_P2P_ERR_IO;
    }
    /* IPv6 on the same port when the host has it: one port for the device. */
    if (port == 0)
        port = ntohs(((struct sockaddr_in *)&ep->socks[0].local)->sin_port);
    if (open_sock(&ep->socks[1], AF_INET6, port) != 0)
        ep->socks[1].fd = -1;
    for (int i = 0; i < 2; i++) {
        if (ep->socks[i].fd < 0)
            continue;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->socks[i].fd, &ev) != 0) {
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

unsigned pos_p2p_endpoint_local_port(const pos_p2p_endpoint *ep)
{
    return ntohs(((const struct sockaddr_in *)&ep->socks[0].local)->sin_port);
}

int64_t pos_p2p_endpoint_deadline(const pos_p2p_endpoint *ep)
{
    int64_t best = sess_deadline_ms(ep);
    for (const pos_p2p_relay *r = ep->relays; r; r = qc_next(r)) {
        int64_t d = qc_deadline_ms(r);
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
    const struct ep_cid *e;

    if (len == 0)
        return;
    if (!(data[0] & 0x40) && !(data[0] & 0x80) && len > EP_CID_LEN &&
        (e = cid_find(ep, data + 1, EP_CID_LEN)) != NULL) {
        cid_input(ep, e, sock, data, len, from, fromlen); /* a peer that greases the QUIC bit */
        return;
    }
    if (!(data[0] & 0x40)) {
        /* a relay data frame: to the relay connection it came from (quic_client.c) */
        if (qc_frame_input(ep, sock, data, len, from, fromlen) != 0)
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
        cid_input(ep, e, sock, data, len, from, fromlen);
    else if (data[0] & 0x80)
        sess_unclaimed(ep, sock, data, len, from, fromlen); /* a listening node's new session? */
}

int pos_p2p_endpoint_process(pos_p2p_endpoint *ep)
{
    uint8_t buf[EP_MAX_UDP + 1];
    int64_t now;

    for (int i = 0; i < 2; i++) {
        if (ep->socks[i].fd < 0)
            continue;
        for (int k = 0; k < 1024; k++) { /* bounded: timers run too */
            struct sockaddr_storage from;
            socklen_t fromlen = sizeof(from);
            ssize_t n = recvfrom(ep->socks[i].fd, buf, sizeof(buf), MSG_DONTWAIT,
                                 (struct sockaddr *)&from, &fromlen);
            if (n < 0)
                break;
            if ((size_t)n > EP_MAX_UDP)
                continue;
            ep_input(ep, i, buf, (size_t)n, (struct sockaddr *)&from, fromlen);
        }
    }
    now = pos_p2p_now_ms();
    for (pos_p2p_relay *r = ep->relays, *next; r; r = next) {
        next = qc_next(r);
        int64_t d = qc_deadline_ms(r);
        if (d >= 0 && d <= now)
            qc_on_deadline(r);
    }
    sess_on_deadlines(ep);
    return 0;
}

int pos_p2p_endpoint_run(pos_p2p_endpoint *ep, int timeout_ms, int (*done)(void *arg), void *arg)
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
        if (epoll_wait(ep->epfd, evs, 4, (int)wait) < 0 && errno != EINTR)
            return POS_P2P_ERR_IO;
        pos_p2p_endpoint_process(ep);
    }
}

void pos_p2p_endpoint_del(pos_p2p_endpoint *ep)
{
    if (!ep)
        return;
    sess_free_all(ep); /* sessions may use relay connections: they go first */
    qc_free_all(ep);
    for (int i = 0; i < 2; i++)
        if (ep->socks[i].fd >= 0)
            close(ep->socks[i].fd);
    if (ep->epfd >= 0)
        close(ep->epfd);
    if (ep->buckets) {
        for (size_t i = 0; i < ep->n_buckets; i++) {
            struct ep_cid *e = ep->buckets[i], *next;
            for (; e; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(ep->buckets);
    }
    pos_tls_creds_del(ep->creds);
    pos_identity_free(&ep->id);
    free(ep);
}
