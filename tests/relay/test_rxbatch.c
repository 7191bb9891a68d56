/*
 * relay_rxbatch_drain (relay/rxbatch.c) on a real loopback UDP socket: at a
 * low rate one wake-up reads once; once the last 10 ms ran at a high rate, a
 * short batch is followed by another read after a pause; and when the rate
 * falls again, nothing waits. The checks count reads and datagrams, never
 * time, so a slow machine cannot make them fail.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "rxbatch.h"

struct rx {
    relay_rxbatch *b;
    int fd;
    unsigned reads; /* calls of the reader */
};

static unsigned reader(void *arg)
{
    struct rx *r = arg;
    r->reads++;
    return relay_rxbatch_read(r->b, r->fd);
}

static void send_n(int tx, const struct sockaddr_in *to, unsigned n)
{
    uint8_t d[100];
    memset(d, 0x42, sizeof(d));
    for (unsigned i = 0; i < n; i++)
        sendto(tx, d, sizeof(d), 0, (const struct sockaddr *)to, sizeof(*to));
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
    struct rx r = {relay_rxbatch_new(), socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), 0};
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
