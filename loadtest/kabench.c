/*
 * pos-kabench: the bare floor of a parked client's keep-alive on this
 * machine, for loadtest/bench-idle.sh's ratio. A "keep-alive server" with
 * no protocol at all: one UDP socket read like the relay reads its parked
 * datagrams (relay/park_rx.c: recvmmsg batches on a 50 ms timer) that echoes
 * one datagram in K (the ack, sendmmsg once per batch); clients on their
 * own sockets and loopback addresses (like pos-loadtest idle's, each
 * watched by an epoll that takes its acks) send datagrams of the keep-alive's
 * size at the given rate. Prints the server's CPU (user + system, its own
 * process) per datagram received: what the kernel's receive and the acks'
 * delivery cost before any relay code runs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "park.h"

#define BATCH 64
#define PERIOD_NS 50000000L     /* relay/park_rx.h RELAY_PARK_RX_PERIOD */
#define ROUNDS 64               /* relay/park_rx.h RELAY_PARK_RX_ROUNDS */
#define PER_CHILD 8192          /* client sockets per sending process (descriptor limits) */
#define ADDR_BASE 0x7f000002u   /* 127.0.0.2 on, as pos-loadtest idle's clients */
#define SERVER_RCVBUF (4 << 20) /* relay/server_udp.c */
#define WARMUP_NS 1000000000L

struct opts {
    unsigned clients;
    unsigned rate;
    unsigned ack_every;
    unsigned seconds;
    unsigned size;
    int json;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pos-kabench [--clients N] [--rate PER_SECOND] [--ack-every K]\n"
            "                   [--duration SECONDS] [--size BYTES] [--json]\n"
            "\n"
            "The bare floor of a keep-alive on this machine: N client sockets on their own\n"
            "loopback addresses send datagrams of BYTES bytes, PER_SECOND in all, to one\n"
            "UDP socket that is read with recvmmsg every 50 ms (as pos-relay reads parked\n"
            "clients' datagrams) and echoes one in K (0: none) with sendmmsg. Prints the\n"
            "reading process's CPU time per datagram received. No protocol, no relay code:\n"
            "loadtest/bench-idle.sh compares pos-relay's CPU per keep-alive with it.\n"
            "Defaults: --clients 10000 --rate 2000 --ack-every 6 --duration 10 --size %d.\n",
            POS_PARK_LEN);
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {{"clients", required_argument, NULL, 'c'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"ack-every", required_argument, NULL, 'a'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"size", required_argument, NULL, 's'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *o = (struct opts){10000, 2000, 6, 10, POS_PARK_LEN, 0};
    int c, bad = 0, idx = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        switch (c) {
        case 'c':
            bad |= parse_uint(optarg, 1, 1000000, &o->clients);
            break;
        case 'r':
            bad |= parse_uint(optarg, 1, 1000000, &o->rate);
            break;
        case 'a':
            bad |= parse_uint(optarg, 0, 1000000, &o->ack_every);
            break;
        case 'd':
            bad |= parse_uint(optarg, 1, 3600, &o->seconds);
            break;
        case 's':
            bad |= parse_uint(optarg, 1, 1400, &o->size);
            break;
        case 'j':
            o->json = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "pos-kabench: bad value for --%s: %s\n", longopts[idx].name, optarg);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pos-kabench: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    return 0;
}

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- the clients: one process per PER_CHILD sockets ---- */

/* clients_run: sockets |first|..|first + n - 1| send |rate| a second in turn to |to|, forever. */
static void clients_run(unsigned first, unsigned n, double rate, const struct sockaddr_in *to,
                        unsigned size)
{
    int *fds = calloc(n, sizeof(*fds));
    int ep = epoll_create1(0);
    uint8_t buf[1500] = {POS_PARK_QUIET};
    if (!fds || ep < 0)
        _exit(1);
    for (unsigned i = 0; i < n; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(ADDR_BASE + first + i)};
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof(a)) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
            fprintf(stderr, "pos-kabench: client socket %u: %s\n", first + i, strerror(errno));
            _exit(1);
        }
    }
    int64_t t0 = mono_ns();
    uint64_t sent = 0;
    unsigned next = 0;
    for (;;) {
        uint64_t due = (uint64_t)((double)(mono_ns() - t0) * rate / 1e9);
        for (; sent < due; sent++, next = (next + 1) % n)
            sendto(fds[next], buf, size, 0, (const struct sockaddr *)to, sizeof(*to));
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 1);
        for (int i = 0; i < k; i++) /* the acks: taken as a client would */
            while (recv(fds[evs[i].data.u32], buf + 64, sizeof(buf) - 64, 0) > 0) {
            }
    }
}

/* ---- the server ---- */

struct server {
    int fd;
    unsigned ack_every;
    uint64_t got, acks, reads;
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec iov[BATCH], oiov[BATCH];
    struct sockaddr_in from[BATCH];
    uint8_t bufs[BATCH][1500];
};

/* drain: what the socket holds, BATCH at a time (at most ROUNDS batches), acks once per batch. */
static void drain(struct server *s)
{
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BATCH; i++)
            s->in[i].msg_hdr.msg_namelen = sizeof(s->from[i]);
        int n = recvmmsg(s->fd, s->in, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        s->reads++;
        int no = 0;
        for (int i = 0; i < n; i++) {
            if (s->ack_every && ++s->got % s->ack_every == 0) {
                s->oiov[no] = (struct iovec){s->bufs[i], s->in[i].msg_len};
                s->out[no].msg_hdr = (struct msghdr){.msg_name = &s->from[i],
                                                     .msg_namelen = s->in[i].msg_hdr.msg_namelen,
                                                     .msg_iov = &s->oiov[no],
                                                     .msg_iovlen = 1};
                no++;
            } else if (!s->ack_every) {
                s->got++;
            }
        }
        if (no > 0 && sendmmsg(s->fd, s->out, (unsigned)no, 0) > 0)
            s->acks += (uint64_t)no;
        if (n < BATCH)
            return;
    }
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    static struct server s;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int rcvbuf = SERVER_RCVBUF;

    if (parse_opts(argc, argv, &o) != 0)
        return 2;
    s.ack_every = o.ack_every;
    s.fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (s.fd < 0 || setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0 ||
        bind(s.fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s.fd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "pos-kabench: server socket: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < BATCH; i++) {
        s.iov[i] = (struct iovec){s.bufs[i], sizeof(s.bufs[i])};
        s.in[i].msg_hdr =
            (struct msghdr){.msg_name = &s.from[i], .msg_iov = &s.iov[i], .msg_iovlen = 1};
    }

    unsigned nchild = (o.clients + PER_CHILD - 1) / PER_CHILD;
    pid_t *kids = calloc(nchild, sizeof(*kids));
    if (!kids)
        return 1;
    for (unsigned k = 0; k < nchild; k++) {
        unsigned first = k * PER_CHILD,
                 n = o.clients - first < PER_CHILD ? o.clients - first : PER_CHILD;
        if ((kids[k] = fork()) == 0) {
            close(s.fd);
            clients_run(first, n, (double)o.rate * n / o.clients, &a, o.size);
        }
        if (kids[k] < 0) {
            fprintf(stderr, "pos-kabench: fork: %s\n", strerror(errno));
            for (unsigned j = 0; j < k; j++)
                kill(kids[j], SIGKILL);
            free(kids);
            return 1;
        }
    }

    /* warm-up (the clients' sockets bind, the first datagrams flow), then the measured run */
    int64_t t = mono_ns(), start = t + WARMUP_NS, end = start + (int64_t)o.seconds * 1000000000;
    uint64_t got0 = 0, acks0 = 0, reads0 = 0;
    int64_t cpu0 = 0;
    int measuring = 0;
    while (t < end) {
        t += PERIOD_NS;
        sleep_until(t);
        drain(&s);
        if (!measuring && t >= start) {
            measuring = 1;
            got0 = s.got, acks0 = s.acks, reads0 = s.reads, cpu0 = cpu_ns();
        }
    }
    int64_t cpu = cpu_ns() - cpu0;
    for (unsigned k = 0; k < nchild; k++)
        kill(kids[k], SIGKILL);
    while (wait(NULL) > 0) {
    }
    free(kids);
    uint64_t got = s.got - got0, acks = s.acks - acks0, reads = s.reads - reads0;
    if (got == 0) {
        fprintf(stderr, "pos-kabench: no datagram arrived\n");
        return 1;
    }
    double us = (double)cpu / 1e3 / (double)got;
    if (o.json)
        printf("{\"clients\": %u, \"seconds\": %u, \"datagrams\": %llu, \"acks\": %llu, "
               "\"per_read\": %.1f, \"cpu_s\": %.4f, \"us_per_datagram\": %.3f}\n",
               o.clients, o.seconds, (unsigned long long)got, (unsigned long long)acks,
               (double)got / (double)(reads ? reads : 1), (double)cpu / 1e9, us);
    else
        printf("bare keep-alive server: %llu datagrams from %u clients in %u s (%.1f a read), "
               "%llu acks; CPU %.4f s = %.3f us per datagram\n",
               (unsigned long long)got, o.clients, o.seconds,
               (double)got / (double)(reads ? reads : 1), (unsigned long long)acks,
               (double)cpu / 1e9, us);
    return 0;
}
