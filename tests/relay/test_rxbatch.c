/*
 * relay_rxbatch_drain (relay/rxbatch.c) on a real loopback UDP socket: at a
 * low rate one wake-up reads once; once the last 10 ms ran at a high rate, a
 * short batch is followed by another read after a pause; and when the rate
 * falls again, nothing waits. The checks count reads and datagrams, never
 * time, so a slow machine cannot make them fail.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "rxbatch.h"

struct rx {
    relay_rxbatch *b;
    int fd;
    unsigned reads;     /* calls of the reader */
    unsigned datagrams; /* datagrams cut */
};

static void piece(void *arg, relay_rxbatch *b, unsigned k)
{
    (void)b;
    *(unsigned *)arg += k;
}

/* reader: one batch read and cut into datagrams, as the relay's readers do */
static unsigned reader(void *arg)
{
    struct rx *r = arg;
    r->reads++;
    unsigned n = relay_rxbatch_read(r->b, r->fd);
    if (n > 0)
        relay_rxbatch_cut(r->b, n, piece, &r->datagrams);
    return n;
}

static void send_n(int tx, const struct sockaddr_in *to, unsigned n)
{
    uint8_t d[100];
    memset(d, 0x42, sizeof(d));
    for (unsigned i = 0; i < n; i++)
        sendto(tx, d, sizeof(d), 0, (const struct sockaddr *)to, sizeof(*to));
}

/* send_gso: |n| datagrams of 100 bytes in one sendmsg with UDP_SEGMENT: one GRO message */
static int send_gso(int tx, const struct sockaddr_in *to, unsigned n)
{
    static uint8_t d[64 * 100];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {d, n * 100};
    struct msghdr m = {.msg_name = (void *)to,
                       .msg_namelen = sizeof(*to),
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    uint16_t seg = 100;
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(seg));
    memcpy(CMSG_DATA(c), &seg, sizeof(seg));
    return sendmsg(tx, &m, 0) == (ssize_t)(n * 100) ? 0 : -1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int main(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    struct rx r = {relay_rxbatch_new(), socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), 0, 0};
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(r.b != NULL && r.fd >= 0 && tx >= 0);
    CHECK(bind(r.fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(r.fd, (struct sockaddr *)&a, &alen) == 0);
    relay_rxbatch_thread_init();

    /* a quiet socket: three datagrams, one read, no pause (the first window has no rate) */
    send_n(tx, &a, 3);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 3);
    CHECK(r.reads == 1);

    /* a busy one: 20 datagrams a wake-up for more than a window (thousands a second) */
    unsigned got = 0, sent = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        send_n(tx, &a, 20);
        sent += 20;
        got += relay_rxbatch_drain(r.b, reader, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 30000000L);
    CHECK(got == sent); /* nothing lost, nothing read twice */

    /* now a short batch is followed by a pause and one more read (which finds nothing) */
    r.reads = 0;
    send_n(tx, &a, 3);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 3);
    CHECK(r.reads == 2);

    /* a batch of RX_BATCH / 2 or more needs no pause: the wake-up is already worth it */
    r.reads = 0;
    send_n(tx, &a, RX_BATCH / 2);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == RX_BATCH / 2);
    CHECK(r.reads == 1);

    /* a GRO run of 40 datagrams is one message but 40 datagrams: no pause either */
    int one = 1;
    CHECK(setsockopt(r.fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0);
    r.reads = 0;
    r.datagrams = 0;
    CHECK(send_gso(tx, &a, 40) == 0);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 1);
    CHECK(r.datagrams == 40);
    CHECK(r.reads == 1);

    /* GSO traffic (runs of 20) for more than a window: then a short batch of single datagrams
     * (a transfer's ACKs) is read at once, not held back */
    got = sent = 0;
    int gso_failed = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        gso_failed |= send_gso(tx, &a, 20);
        sent += 20;
        r.datagrams = 0;
        relay_rxbatch_drain(r.b, reader, &r);
        got += r.datagrams;
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 30000000L);
    CHECK(gso_failed == 0);
    CHECK(got == sent);
    r.reads = 0;
    send_n(tx, &a, 3);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 3);
    CHECK(r.reads == 1);

    /* quiet again for longer than a window: the next datagram is read alone, at once */
    sleep_ms(30);
    send_n(tx, &a, 1);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 1); /* this read closes the busy window */
    sleep_ms(30);
    r.reads = 0;
    send_n(tx, &a, 1);
    CHECK(relay_rxbatch_drain(r.b, reader, &r) == 1);
    CHECK(r.reads == 1);

    close(tx);
    close(r.fd);
    relay_rxbatch_del(r.b);
    return check_finish("test_rxbatch");
}
