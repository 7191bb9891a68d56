/*
 * The relay server's UDP side (see server_int.h): binding the sockets,
 * batched receive (recvmmsg; UDP GRO joins a sender's GSO run into one
 * message, cut here into its datagrams) handed to the forwarder and then to
 * relay_server_input, the forwarder's batched sends (sendmmsg, GSO: a run
 * received whole goes out whole), the default relay_io (sendto,
 * CLOCK_MONOTONIC) and the addresses to announce.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "quic_common.h"
#include "server_int.h"

int relay_udp_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                   socklen_t tolen)
{
    relay_server *s = arg;
    ssize_t n;
    if (sock < 0 || (size_t)sock >= s->n_socks || s->socks[sock].fd < 0)
        return -1;
    do {
        n = sendto(s->socks[sock].fd, data, len, MSG_DONTWAIT, to, tolen);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0; /* EAGAIN: dropped like any lost packet */
}

uint64_t relay_udp_now(void *arg)
{
    (void)arg;
    return pos_quic_now();
}

unsigned relay_udp_send_batch(int fd, struct mmsghdr *tx, unsigned n, int *gso, relay_forwarder *fw)
{
    unsigned done = 0;
    while (done < n) {
        int k = sendmmsg(fd, tx + done, n - done, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if ((errno == EIO || errno == EINVAL) && *gso && tx[done].msg_hdr.msg_controllen) {
                /* this path cannot do UDP GSO: off from the next batch on */
                pos_log_warn("UDP GSO refused (%s): turned off", strerror(errno));
                *gso = 0;
                relay_forwarder_set_gso(fw, 0);
            }
            return n - done;
        }
        done += (unsigned)k;
    }
    return 0;
}

/* forward_datagrams forwards one piece of a batch and hands its QUIC datagrams to
 * relay_server_input. */
static void forward_datagrams(void *arg, relay_rxbatch *b, unsigned n)
{
    struct sock *sk = arg;
    relay_server *s = sk->srv;
    struct mmsghdr *rx = relay_rxbatch_rx(b);
    unsigned *quic_idx = relay_rxbatch_quic_idx(b);
    int sock = (int)(sk - s->socks);
    unsigned n_quic = 0;

    s->wst[0].packets_in += n;
    if (s->fw) {
        s->park_ctx.sock = sock; /* parked clients' acks and records name this address */
        int out = relay_forward_batch(s->fw, rx, n, sk->local.ss_family, relay_rxbatch_tx(b),
                                      quic_idx, &n_quic);
        if (out > 0)
            s->st.forward_send_failed +=
                relay_udp_send_batch(sk->fd, relay_rxbatch_tx(b), (unsigned)out, &s->gso, s->fw);
    } else {
        for (unsigned i = 0; i < n; i++)
            quic_idx[i] = i;
        n_quic = n;
    }
    for (unsigned q = 0; q < n_quic; q++) {
        struct mmsghdr *m = &rx[quic_idx[q]];
        if (m->msg_len > MAX_UDP || (m->msg_hdr.msg_flags & MSG_TRUNC)) {
            s->st.packets_dropped++;
            continue;
        }
        relay_server_input(s, sock, m->msg_hdr.msg_iov[0].iov_base, m->msg_len,
                           (struct sockaddr *)m->msg_hdr.msg_name, m->msg_hdr.msg_namelen);
    }
}

/* read_sock: batches of |sk|'s socket |fd| until it is empty or |rounds| batches were read. */
static unsigned read_sock(struct sock *sk, int fd, int rounds, int small)
{
    return relay_rxbatch_pump(sk->srv->rxb, fd, rounds, small, forward_datagrams, sk);
}

/* read_all: |arg|'s socket until it is empty (at most 16 batches), for relay_rxbatch_drain */
static unsigned read_all(void *arg)
{
    return read_sock(arg, ((struct sock *)arg)->fd, 16, 0);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sock *sk = w->data;
    (void)loop;
    (void)revents;
    relay_rxbatch_drain(sk->srv->rxb, read_all, sk);
}

/* park_drain: |sk|'s parked-datagram socket (park_rx.h); the acks leave on sk->fd. */
static unsigned park_drain(void *arg, int fd)
{
    return read_sock(arg, fd, RELAY_PARK_RX_ROUNDS, 1);
}

/* udp_socket: a UDP socket for |ss|'s family with the relay's options; -1 with errno. */
static int udp_socket(const struct sockaddr_storage *ss, int reuseport)
{
    int one = 1, fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    {
        int pmtu = IP_PMTUDISC_DO;
        if (ss->ss_family == AF_INET)
            setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
        else
            setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof(pmtu));
    }
    int rcvbuf = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)); /* GSO runs arrive whole (rxbatch.c) */
    return fd;
}

int relay_udp_bind(const struct sockaddr_storage *ss, int reuseport, const char *text, char *err,
                   size_t errlen)
{
    int fd = udp_socket(ss, reuseport);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a UDP socket for %s: %s", text, strerror(errno));
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)ss, pos_addr_len(ss)) != 0) {
        snprintf(err, errlen, "cannot bind UDP %s: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int bind_udp(struct sock *sk, const char *text, unsigned port, int shared, char *err,
                    size_t errlen)
{
    struct sockaddr_storage ss;
    int fd;

    if (pos_addr_parse(text, strlen(text), port, &ss) != 0) {
        snprintf(err, errlen, "listen address \"%s\" is not ip:port", text);
        return -1;
    }
    if (shared) {
        /*
         * The workers' and parked clients' sockets share the port
         * (SO_REUSEPORT), which would let
         * a second relay of the same user share it too: a socket without the
         * option proves first that nobody holds the address.
         */
        int probe = relay_udp_bind(&ss, 0, text, err, errlen);
        if (probe < 0)
            return -1;
        close(probe);
    }
    if ((fd = relay_udp_bind(&ss, shared, text, err, errlen)) < 0)
        return -1;
    sk->fd = fd;
    sk->local_len = sizeof(sk->local);
    getsockname(fd, (struct sockaddr *)&sk->local, &sk->local_len);
    return 0;
}

relay_server *relay_server_new(struct ev_loop *loop, const relay_config *cfg, char *err,
                               size_t errlen)
{
    char defaults[2][POS_ADDR_STRLEN];
    const char *addrs[MAX_SOCKS];
    size_t n = 0;
    relay_server *s = relay_server_new_io(loop, cfg, NULL, NULL, 0, err, errlen);

    if (!s)
        return NULL;
    if (!(s->rxb = relay_rxbatch_new())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    relay_rxbatch_thread_init(); /* the main loop reads the sockets when there are no workers */
    if (cfg->n_listen > 0) {
        for (size_t i = 0; i < cfg->n_listen && i < MAX_SOCKS; i++)
            addrs[n++] = cfg->listen[i];
    } else {
        snprintf(defaults[0], sizeof(defaults[0]), "0.0.0.0:%u", cfg->port);
        snprintf(defaults[1], sizeof(defaults[1]), "[::]:%u", cfg->port);
        addrs[n++] = defaults[0];
        addrs[n++] = defaults[1];
    }
    for (size_t i = 0; i < n; i++) {
        struct sock *sk = &s->socks[s->n_socks];
        if (bind_udp(sk, addrs[i], cfg->port, cfg->workers > 1 || cfg->park_lifetime_s > 0, err,
                     errlen) != 0) {
            /* A host without IPv6 still serves IPv4 when the default pair was asked for. */
            if (cfg->n_listen == 0 && i == 1 && s->n_socks == 1) {
                pos_log_warn("%s; serving IPv4 only", err);
                continue;
            }
            goto fail;
        }
        sk->srv = s;
        ev_io_init(&sk->io, on_readable, sk->fd, EV_READ);
        sk->io.data = sk;
        if (cfg->workers <= 1)
            ev_io_start(loop, &sk->io); /* else worker 0 serves it (workers.c) */
        s->n_socks++;
    }
    if (cfg->workers > 1 && relay_workers_bind(s, err, errlen) != 0)
        goto fail;
    if (cfg->park_lifetime_s > 0 && relay_park_socks_bind(s, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; cfg->workers <= 1 && i < s->n_socks; i++)
        if (s->socks[i].park_fd >= 0) /* else worker 0 reads it (workers.c) */
            relay_park_rx_start(&s->socks[i].park_rx, loop, s->socks[i].park_fd, park_drain,
                                &s->socks[i]);
    return s;
fail:
    relay_server_del(s);
    return NULL;
}

static int is_wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return 0;
}

static size_t add_if_addrs(const struct sock *sk, char (*out)[POS_ADDR_STRLEN], size_t n,
                           size_t max)
{
    struct ifaddrs *ifa = NULL, *i;
    unsigned port = ntohs(((const struct sockaddr_in *)&sk->local)->sin_port);
    if (getifaddrs(&ifa) != 0)
        return n;
    for (int want_loopback = 0; want_loopback < 2 && n < max; want_loopback++) {
        size_t before = n;
        for (i = ifa; i && n < max; i = i->ifa_next) {
            struct sockaddr_storage ss;
            if (!i->ifa_addr || i->ifa_addr->sa_family != sk->local.ss_family)
                continue;
            if (!!(i->ifa_flags & IFF_LOOPBACK) != want_loopback || !(i->ifa_flags & IFF_UP))
                continue;
            memset(&ss, 0, sizeof(ss));
            if (sk->local.ss_family == AF_INET) {
                memcpy(&ss, i->ifa_addr, sizeof(struct sockaddr_in));
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
            } else {
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
                memcpy(&ss, i->ifa_addr, sizeof(struct sockaddr_in6));
                if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr))
                    continue;
                a6->sin6_port = htons((uint16_t)port);
            }
            if (pos_addr_format((struct sockaddr *)&ss, out[n], POS_ADDR_STRLEN) == 0)
                n++;
        }
        if (n > before)
            break; /* loopback only when the host has nothing else */
    }
    freeifaddrs(ifa);
    return n;
}

size_t relay_server_announce_addrs(const relay_server *s, char (*out)[POS_ADDR_STRLEN], size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_socks && n < max; i++) {
        if (is_wildcard(&s->socks[i].local))
            n = add_if_addrs(&s->socks[i], out, n, max);
        else if (pos_addr_format((const struct sockaddr *)&s->socks[i].local, out[n],
                                 POS_ADDR_STRLEN) == 0)
            n++;
    }
    return n;
}
