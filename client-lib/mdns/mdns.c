/*
 * The thin I/O layer of local discovery (pos_mdns_* in pos/p2p.h): one UDP
 * socket per address family bound to port 5353 (SO_REUSEADDR/SO_REUSEPORT,
 * so it coexists with Avahi or another responder), multicast group joined
 * on every up, multicast-capable, non-loopback, non-point-to-point
 * interface, IP TTL / hop limit 255, the arrival interface read with
 * IP_PKTINFO / IPV6_PKTINFO. A netlink socket reports link and address
 * changes; the interface set is then re-read with getifaddrs and fed to the
 * core. The three sockets sit behind one epoll descriptor, so callers poll
 * a single fd. Everything about mDNS itself is in core.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "log.h"
#include "pos/mdns.h"

#define MAX_RX_PER_CALL 64

struct pos_mdns {
    struct mdns_core *core;
    int ep, s4, s6, nl;
    int joined[MDNS_MAX_IFACES]; /* ifindex of interfaces we joined */
    bool stopped;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_offset(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return wall - (int64_t)mono_ms();
}

/*
 * RFC 6762 §15.1: unicast datagrams to port 5353 reach only one of the
 * sockets sharing it, so a QU reply could go to another responder on this
 * host (Avahi, or another of our processes). Binding without SO_REUSEADDR /
 * SO_REUSEPORT fails when some socket holds the port already: then our
 * queries never ask for unicast replies.
 */
static bool port_5353_shared(void)
{
    bool shared = false;
    for (int f = 0; f < 2 && !shared; f++) {
        int s = socket(f ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int one = 1, rc;
        if (s < 0)
            continue;
        if (f) {
            struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(MDNS_PORT)};
            setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
            rc = bind(s, (struct sockaddr *)&a, sizeof(a));
        } else {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(MDNS_PORT)};
            rc = bind(s, (struct sockaddr *)&a, sizeof(a));
        }
        shared = rc < 0 && errno == EADDRINUSE;
        close(s);
    }
    return shared;
}

static int open_socket(int family)
{
    int s = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, ttl = 255;
    if (s < 0)
        return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    int rc;
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(MDNS_PORT)};
        setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
        setsockopt(s, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl));
        setsockopt(s, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl));
        setsockopt(s, IPPROTO_IP, IP_MULTICAST_LOOP, &one, sizeof(one));
        rc = bind(s, (struct sockaddr *)&a, sizeof(a));
    } else {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(MDNS_PORT)};
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
        setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof(ttl));
        setsockopt(s, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof(ttl));
        setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &one, sizeof(one));
        rc = bind(s, (struct sockaddr *)&a, sizeof(a));
    }
    if (rc < 0) {
        pos_log_warn("mdns: cannot bind UDP port 5353 (%s): %s",
                     family == AF_INET ? "IPv4" : "IPv6", strerror(errno));
        close(s);
        return -1;
    }
    return s;
}

static int open_netlink(void)
{
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0)
        return -1;
    struct sockaddr_nl a = {.nl_family = AF_NETLINK,
                            .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR};
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(s);
        return -1;
    }
    return s;
}

static void membership(struct pos_mdns *m, int ifindex, bool join)
{
    if (m->s4 >= 0) {
        struct ip_mreqn mr = {.imr_ifindex = ifindex};
        inet_pton(AF_INET, "224.0.0.251", &mr.imr_multiaddr);
        setsockopt(m->s4, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &mr,
                   sizeof(mr));
    }
    if (m->s6 >= 0) {
        struct ipv6_mreq mr = {.ipv6mr_interface = (unsigned)ifindex};
        inet_pton(AF_INET6, "ff02::fb", &mr.ipv6mr_multiaddr);
        setsockopt(m->s6, IPPROTO_IPV6, join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &mr, sizeof(mr));
    }
}

struct scan_if {
    int index;
    size_t n4, n6;
    uint8_t a4[MDNS_MAX_ADDRS][4];
    uint8_t a6[MDNS_MAX_ADDRS][16];
};

static bool usable(unsigned flags)
{
    return (flags & IFF_UP) && (flags & IFF_MULTICAST) && !(flags & IFF_LOOPBACK) &&
           !(flags & IFF_POINTOPOINT);
}

/* Re-reads the interface set and tells the core what changed. */
static void rescan(struct pos_mdns *m, uint64_t now)
{
    struct ifaddrs *all, *a;
    struct scan_if found[MDNS_MAX_IFACES];
    size_t n = 0;
    if (getifaddrs(&all) < 0)
        return;
    memset(found, 0, sizeof(found));
    for (a = all; a; a = a->ifa_next) {
        if (!a->ifa_addr || !usable(a->ifa_flags))
            continue;
        int fam = a->ifa_addr->sa_family;
        if (fam != AF_INET && fam != AF_INET6)
            continue;
        int idx = (int)if_nametoindex(a->ifa_name);
        struct scan_if *f = NULL;
        for (size_t i = 0; i < n; i++) {
            if (found[i].index == idx)
                f = &found[i];
        }
        if (!f && n < MDNS_MAX_IFACES) {
            f = &found[n++];
            f->index = idx;
        }
        if (!f)
            continue;
        if (fam == AF_INET && f->n4 < MDNS_MAX_ADDRS)
            memcpy(f->a4[f->n4++], &((struct sockaddr_in *)a->ifa_addr)->sin_addr, 4);
        if (fam == AF_INET6 && f->n6 < MDNS_MAX_ADDRS)
            memcpy(f->a6[f->n6++], &((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr, 16);
    }
    freeifaddrs(all);
    /* Interfaces that went away. */
    for (int j = 0; j < MDNS_MAX_IFACES; j++) {
        bool still = false;
        for (size_t i = 0; i < n; i++)
            still = still || found[i].index == m->joined[j];
        if (m->joined[j] && !still) {
            mdns_core_iface_update(m->core, m->joined[j], NULL, 0, NULL, 0, now);
            membership(m, m->joined[j], false);
            m->joined[j] = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (int j = 0; j < MDNS_MAX_IFACES; j++)
            known = known || m->joined[j] == found[i].index;
        if (!known) {
            for (int j = 0; j < MDNS_MAX_IFACES; j++) {
                if (!m->joined[j]) {
                    m->joined[j] = found[i].index;
                    membership(m, found[i].index, true);
                    break;
                }
            }
        }
        mdns_core_iface_update(m->core, found[i].index, (const uint8_t(*)[4])found[i].a4,
                               found[i].n4, (const uint8_t(*)[16])found[i].a6, found[i].n6, now);
    }
}

static int send_packet(struct pos_mdns *m, const struct mdns_packet *p)
{
    ssize_t rc;
    if (p->dest.family == 4) {
        if (m->s4 < 0)
            return 0;
        struct sockaddr_in to = {.sin_family = AF_INET};
        if (p->dest.multicast) {
            struct ip_mreqn mr = {.imr_ifindex = p->dest.ifindex};
            setsockopt(m->s4, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof(mr));
            inet_pton(AF_INET, "224.0.0.251", &to.sin_addr);
            to.sin_port = htons(MDNS_PORT);
        } else {
            memcpy(&to.sin_addr, p->dest.addr, 4);
            to.sin_port = htons(p->dest.port);
        }
        rc = sendto(m->s4, p->data, p->len, 0, (struct sockaddr *)&to, sizeof(to));
    } else {
        if (m->s6 < 0)
            return 0;
        struct sockaddr_in6 to = {.sin6_family = AF_INET6,
                                  .sin6_scope_id = (uint32_t)p->dest.ifindex};
        if (p->dest.multicast) {
            unsigned idx = (unsigned)p->dest.ifindex;
            setsockopt(m->s6, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof(idx));
            inet_pton(AF_INET6, "ff02::fb", &to.sin6_addr);
            to.sin6_port = htons(MDNS_PORT);
        } else {
            memcpy(&to.sin6_addr, p->dest.addr, 16);
            to.sin6_port = htons(p->dest.port);
        }
        rc = sendto(m->s6, p->data, p->len, 0, (struct sockaddr *)&to, sizeof(to));
    }
    if (rc < 0)
        pos_log_debug("mdns: send on interface %d failed: %s", p->dest.ifindex, strerror(errno));
    return 0;
}

static void flush(struct pos_mdns *m)
{
    const struct mdns_packet *p;
    while ((p = mdns_core_pop_packet(m->core)))
        send_packet(m, p);
}

/* Reads one datagram with its arrival interface; returns its length, 0 when it was too
   large (dropped), or -1 when none is left. */
static ssize_t receive(int s, int family, uint8_t *buf, size_t cap, int *ifindex, uint8_t *src,
                       uint16_t *port)
{
    struct sockaddr_storage from;
    union {
        char b[256];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_name = &from,
                         .msg_namelen = sizeof(from),
                         .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.b,
                         .msg_controllen = sizeof(ctl.b)};
    ssize_t n = recvmsg(s, &msg, 0);
    if (n < 0)
        return -1;
    if (msg.msg_flags & MSG_TRUNC)
        return 0; /* over DNS_MAX_PACKET, beyond RFC 6762 §17: dropped whole, never cut */
    *ifindex = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (family == 4 && cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
            *ifindex = pi.ipi_ifindex;
        } else if (family == 6 && cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
            *ifindex = (int)pi.ipi6_ifindex;
        }
    }
    if (family == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)&from;
        memcpy(src, &a->sin_addr, 4);
        *port = ntohs(a->sin_port);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&from;
        memcpy(src, &a->sin6_addr, 16);
        *port = ntohs(a->sin6_port);
    }
    return n;
}

static void drain(struct pos_mdns *m, int s, int family)
{
    uint8_t *buf = malloc(DNS_MAX_PACKET);
    if (!buf)
        return;
    for (int i = 0; i < MAX_RX_PER_CALL; i++) {
        int ifindex;
        uint8_t src[16];
        uint16_t port;
        ssize_t n = receive(s, family, buf, DNS_MAX_PACKET, &ifindex, src, &port);
        if (n < 0)
            break;
        if (n == 0)
            continue;
        mdns_core_receive(m->core, buf, (size_t)n, ifindex, family, src, port, mono_ms());
        flush(m);
    }
    free(buf);
}

static bool drain_netlink(struct pos_mdns *m)
{
    char buf[8192];
    bool any = false;
    for (int i = 0; i < MAX_RX_PER_CALL; i++) {
        ssize_t n = recv(m->nl, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        any = true;
    }
    return any;
}

static int build_txt(const pos_mdns_config *cfg, uint8_t *out, size_t cap)
{
    char *s[8 + 64];
    size_t n = 0;
    int rc = POS_P2P_ERR_MDNS_TXT;
    /*
     * The OS goes out twice with one value: the seeds' layout reads
     * operating_system, Spacedrive 0.4 reads only os.
     */
    const char *keys[5] = {"name", "operating_system", "os", "device_model", "version"};
    const char *vals[5] = {cfg->name, cfg->os, cfg->os, cfg->model, cfg->version};
    if (cfg->n_libraries > 64)
        return POS_P2P_ERR_MDNS_TXT;
    for (int i = 0; i < 5; i++) {
        if (!vals[i])
            continue;
        size_t l = strlen(keys[i]) + 1 + strlen(vals[i]) + 1;
        if (l > 300 || !(s[n] = malloc(l)))
            goto out;
        snprintf(s[n++], l, "%s=%s", keys[i], vals[i]);
    }
    for (size_t i = 0; i < cfg->n_libraries; i++) {
        size_t l = strlen(cfg->libraries[i]) + 1 + strlen(cfg->peer_id) + 1;
        if (l > 300 || !(s[n] = malloc(l)))
            goto out;
        snprintf(s[n++], l, "%s=%s", cfg->libraries[i], cfg->peer_id);
    }
    rc = mdns_core_txt_build((const char *const *)s, n, out, cap);
out:
    while (n)
        free(s[--n]);
    return rc;
}

int pos_mdns_new(pos_mdns **out, const pos_mdns_config *cfg, pos_mdns_callback cb, void *user)
{
    struct mdns_core_config cc;
    int rc;
    *out = NULL;
    if (!cfg)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    memset(&cc, 0, sizeof(cc));
    cc.mode = cfg->mode;
    cc.advertise = cfg->advertise;
    cc.browse = cfg->browse;
    cc.port = cfg->port;
    cc.wall_offset_ms = wall_offset();
    if (cfg->advertise && cfg->mode == POS_MDNS_ENABLED) {
        if (!cfg->peer_id || !*cfg->peer_id)
            return POS_P2P_ERR_INVALID_ARGUMENT;
        if (strlen(cfg->peer_id) > DNS_MAX_LABEL)
            return POS_P2P_ERR_MDNS_NAME;
        snprintf(cc.instance, sizeof(cc.instance), "%s", cfg->peer_id);
        rc = build_txt(cfg, cc.txt, sizeof(cc.txt));
        if (rc < 0)
            return rc;
        cc.txt_len = (size_t)rc;
    }
    if (cfg->advertise && cfg->mode == POS_MDNS_CONTACTS_ONLY) {
        if (!cfg->presence_key)
            return POS_P2P_ERR_MDNS_NO_KEY;
        memcpy(cc.presence_key, cfg->presence_key, 32);
    }
    pos_mdns *m = calloc(1, sizeof(*m));
    if (!m)
        return POS_P2P_ERR_NOMEM;
    m->ep = m->s4 = m->s6 = m->nl = -1;
    cc.no_qu = port_5353_shared();
    uint64_t now = mono_ms();
    m->core = mdns_core_new(&cc, cb, user, now);
    sodium_memzero(cc.presence_key, sizeof(cc.presence_key));
    if (!m->core) {
        free(m);
        return POS_P2P_ERR_NOMEM;
    }
    m->ep = epoll_create1(EPOLL_CLOEXEC);
    m->s4 = open_socket(AF_INET);
    m->s6 = open_socket(AF_INET6);
    m->nl = open_netlink();
    if (m->ep < 0 || (m->s4 < 0 && m->s6 < 0)) {
        pos_mdns_del(m);
        return POS_P2P_ERR_MDNS_SOCKET;
    }
    int fds[3] = {m->s4, m->s6, m->nl};
    for (int i = 0; i < 3; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (fds[i] >= 0)
            epoll_ctl(m->ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    rescan(m, now);
    flush(m);
    *out = m;
    return 0;
}

int pos_mdns_fd(const pos_mdns *m)
{
    return m->ep;
}

int64_t pos_mdns_next_deadline(const pos_mdns *m)
{
    uint64_t d = mdns_core_next_deadline(m->core);
    return d >= (uint64_t)INT64_MAX ? -1 : (int64_t)d;
}

int pos_mdns_process(pos_mdns *m)
{
    if (m->s4 >= 0)
        drain(m, m->s4, 4);
    if (m->s6 >= 0)
        drain(m, m->s6, 6);
    if (m->nl >= 0 && drain_netlink(m))
        rescan(m, mono_ms());
    uint64_t now = mono_ms();
    if (mdns_core_next_deadline(m->core) <= now)
        mdns_core_timeout(m->core, now);
    flush(m);
    return 0;
}

int pos_mdns_set_metadata(pos_mdns *m, const pos_mdns_config *cfg)
{
    uint8_t txt[MDNS_TXT_MAX];
    if (!cfg || !cfg->peer_id)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    int rc = build_txt(cfg, txt, sizeof(txt));
    if (rc < 0)
        return rc;
    rc = mdns_core_set_txt(m->core, txt, (size_t)rc, mono_ms());
    flush(m);
    return rc;
}

int pos_mdns_add_contact(pos_mdns *m, const char *peer_id, const uint8_t key[32])
{
    return mdns_core_add_contact(m->core, peer_id, key);
}

const char *pos_mdns_instance(const pos_mdns *m)
{
    return mdns_core_instance(m->core);
}

void pos_mdns_stop(pos_mdns *m)
{
    if (m->stopped || !m->core)
        return;
    mdns_core_stop(m->core, mono_ms());
    flush(m);
    m->stopped = true;
}

void pos_mdns_del(pos_mdns *m)
{
    if (!m)
        return;
    pos_mdns_stop(m);
    mdns_core_del(m->core);
    int fds[4] = {m->ep, m->s4, m->s6, m->nl};
    for (int i = 0; i < 4; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    free(m);
}

int pos_mdns_run(pos_mdns *m, int timeout_ms, pos_p2p_done_cb done, void *arg)
{
    uint64_t end = timeout_ms >= 0 ? mono_ms() + (uint64_t)timeout_ms : UINT64_MAX;
    if (!m)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    while (!(done && done(arg))) {
        uint64_t now = mono_ms();
        if (now >= end)
            return POS_P2P_ERR_TIMEOUT;
        uint64_t dl = mdns_core_next_deadline(m->core);
        if (end < dl)
            dl = end;
        int wait = dl <= now ? 0 : (dl - now > 1000 ? 1000 : (int)(dl - now));
        struct pollfd pfd = {.fd = pos_mdns_fd(m), .events = POLLIN};
        if (poll(&pfd, 1, wait) < 0 && errno != EINTR)
            return POS_P2P_ERR_IO;
        pos_mdns_process(m);
    }
    return 0;
}
