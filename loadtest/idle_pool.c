/*
 * The client pool of `pos-loadtest idle`: sockets on many loopback
 * addresses, library endpoints on the I/O seam, one epoll, a timer heap
 * (idle_pool.h says why).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "identity.h"
#include "idle_pool.h"
#include "internal.h"

struct timer {
    int64_t at;
    long i;
};

struct idle_pool {
    struct idle_client *c;
    long n;
    int epfd;
    uint32_t next_addr; /* the next address idle_pool_rebind hands out */
    struct timer *heap; /* min-heap by |at|; an entry whose |at| != its client's sched is stale */
    size_t heap_n, heap_cap;
};

#define ADDR_BASE 0x7f000002u /* 127.0.0.2: 127.0.0.1 is left to the servers */

static int io_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                   socklen_t tolen)
{
    struct idle_client *c = arg;
    ssize_t n;
    if (sock != 0)
        return -1;
    do {
        n = sendto(c->fd, data, len, MSG_DONTWAIT, to, tolen);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? 0 : -1;
}

/* open_udp: a non-blocking UDP socket bound to |addr|:0, or -1 with errno set. */
static int open_udp(uint32_t addr)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(addr)};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void heap_swap(idle_pool *p, size_t a, size_t b)
{
    struct timer t = p->heap[a];
    p->heap[a] = p->heap[b];
    p->heap[b] = t;
}

static void heap_push(idle_pool *p, int64_t at, long i)
{
    if (p->heap_n == p->heap_cap) {
        size_t cap = p->heap_cap ? p->heap_cap * 2 : 1024;
        struct timer *h = realloc(p->heap, cap * sizeof(*h));
        if (!h)
            return; /* the client is served at the next pump that finds it due anyway */
        p->heap = h;
        p->heap_cap = cap;
    }
    size_t k = p->heap_n++;
    p->heap[k] = (struct timer){at, i};
    while (k > 0 && p->heap[(k - 1) / 2].at > p->heap[k].at) {
        heap_swap(p, k, (k - 1) / 2);
        k = (k - 1) / 2;
    }
}

static void heap_pop(idle_pool *p)
{
    size_t k = 0;
    p->heap[0] = p->heap[--p->heap_n];
    for (;;) {
        size_t l = 2 * k + 1, r = l + 1, m = k;
        if (l < p->heap_n && p->heap[l].at < p->heap[m].at)
            m = l;
        if (r < p->heap_n && p->heap[r].at < p->heap[m].at)
            m = r;
        if (m == k)
            break;
        heap_swap(p, k, m);
        k = m;
    }
}

void idle_pool_touch(idle_pool *p, long i)
{
    struct idle_client *c = &p->c[i];
    int64_t d = pos_p2p_endpoint_deadline(c->ep);
    if (d == c->sched)
        return;
    c->sched = d;
    if (d >= 0)
        heap_push(p, d, i);
}

static int add_to_epoll(idle_pool *p, long i)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->c[i].fd, &ev);
}

/* new_client: client |i| with a fresh identity on |addr|. 0, or -1 with a sentence. */
static int new_client(idle_pool *p, long i, uint32_t addr, char *err, size_t errlen)
{
    struct idle_client *c = &p->c[i];
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    pos_identity key;
    c->idx = i;
    c->sched = -1;
    c->addr = addr;
    if ((c->fd = open_udp(addr)) < 0) {
        snprintf(err, errlen, "client %ld: cannot bind a UDP socket on %u.%u.%u.%u: %s", i,
                 addr >> 24, addr >> 16 & 255, addr >> 8 & 255, addr & 255, strerror(errno));
        return -1;
    }
    getsockname(c->fd, (struct sockaddr *)&local, &len);
    pos_identity_generate(&key);
    pos_p2p_identity *id = p2p_identity_new(&key);
    pos_identity_free(&key);
    ep_io io = {io_send, c};
    int rv = id ? ep_new_io(&c->ep, id, &io, &local) : POS_P2P_ERR_NOMEM;
    if (rv == 0)
        pos_p2p_identity_peer_id(id, c->peer_id);
    pos_p2p_identity_del(id);
    if (rv != 0 || add_to_epoll(p, i) != 0) {
        snprintf(err, errlen, "client %ld: %s", i,
                 rv ? pos_p2p_strerror(rv) : "epoll refused its socket");
        return -1;
    }
    return 0;
}

idle_pool *idle_pool_new(long n, long first, long total, long per_addr, char *err, size_t errlen)
{
    idle_pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->c = calloc((size_t)n, sizeof(*p->c)))) {
        free(p);
        snprintf(err, errlen, "out of memory for %ld clients", n);
        return NULL;
    }
    for (long i = 0; i < n; i++)
        p->c[i].fd = -1;
    p->n = n;
    p->next_addr = ADDR_BASE + (uint32_t)((total + per_addr - 1) / per_addr);
    if ((p->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        snprintf(err, errlen, "epoll: %s", strerror(errno));
        idle_pool_del(p);
        return NULL;
    }
    for (long i = 0; i < n; i++) {
        if (new_client(p, i, ADDR_BASE + (uint32_t)((first + i) / per_addr), err, errlen) != 0) {
            idle_pool_del(p);
            return NULL;
        }
    }
    return p;
}

void idle_pool_del(idle_pool *p)
{
    if (!p)
        return;
    for (long i = 0; i < p->n; i++) {
        pos_p2p_relay_close(p->c[i].r);
        pos_p2p_endpoint_del(p->c[i].ep);
        if (p->c[i].fd >= 0)
            close(p->c[i].fd);
    }
    if (p->epfd >= 0)
        close(p->epfd);
    free(p->heap);
    free(p->c);
    free(p);
}

long idle_pool_size(const idle_pool *p)
{
    return p->n;
}

struct idle_client *idle_pool_get(idle_pool *p, long i)
{
    return &p->c[i];
}

/* read_client: what client |i|'s socket holds, into its endpoint (at most 64 datagrams). */
static void read_client(idle_pool *p, long i)
{
    struct idle_client *c = &p->c[i];
    uint8_t buf[EP_MAX_UDP];
    for (int k = 0; k < 64; k++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof(from);
        ssize_t n =
            recvfrom(c->fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        ep_input(c->ep, 0, buf, (size_t)n, (struct sockaddr *)&from, fromlen);
    }
    pos_p2p_endpoint_process(c->ep); /* timers, and what the input made due */
    idle_pool_touch(p, i);
}

void idle_pool_pump(idle_pool *p, int max_ms)
{
    struct epoll_event evs[256];
    int64_t now = pos_p2p_now_ms();
    int wait = max_ms;
    /* drop stale heap entries first so the wait is right */
    while (p->heap_n && p->heap[0].at != p->c[p->heap[0].i].sched)
        heap_pop(p);
    if (p->heap_n && p->heap[0].at - now < wait)
        wait = p->heap[0].at <= now ? 0 : (int)(p->heap[0].at - now);
    int n = epoll_wait(p->epfd, evs, 256, wait);
    for (int k = 0; k < n; k++)
        read_client(p, (long)evs[k].data.u64);
    now = pos_p2p_now_ms();
    /* due timers; each served client is queued again with its next deadline */
    for (long served = 0; p->heap_n && p->heap[0].at <= now && served < 4096; served++) {
        struct timer t = p->heap[0];
        heap_pop(p);
        if (t.at != p->c[t.i].sched)
            continue;
        p->c[t.i].sched = -1;
        pos_p2p_endpoint_process(p->c[t.i].ep);
        idle_pool_touch(p, t.i);
    }
}

int idle_pool_rebind(idle_pool *p, long i)
{
    struct idle_client *c = &p->c[i];
    int fd = open_udp(p->next_addr);
    if (fd < 0)
        return -1;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = fd;
    c->addr = p->next_addr++;
    return add_to_epoll(p, i);
}

void idle_pool_addr(const idle_pool *p, long i, char out[POS_P2P_ADDR_STRLEN])
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    char ip[INET_ADDRSTRLEN] = "?";
    memset(&a, 0, sizeof(a));
    getsockname(p->c[i].fd, (struct sockaddr *)&a, &len);
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
    snprintf(out, POS_P2P_ADDR_STRLEN, "%s:%u", ip, ntohs(a.sin_port));
}
