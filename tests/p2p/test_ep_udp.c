/*
 * The endpoint's batched UDP I/O (client-lib/src/ep_udp.c) over real
 * loopback sockets: which datagrams join one GSO run and which start a new
 * one, that a receiver without GRO gets every datagram with its own size and
 * bytes in order, that with GRO a run read as one message is handed on
 * datagram by datagram, and that with GSO off the same datagrams arrive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "ep_udp.h"

static int udp_sock(struct sockaddr_in *addr)
{
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) != 0)
        return -1;
    return fd;
}

/* fill: datagram |i| of a test, |len| bytes whose every byte says i */
static void fill(uint8_t *p, size_t len, unsigned i)
{
    memset(p, (int)(i & 0xff), len);
}

/* expect_plain reads |n| datagrams on |fd| (no GRO) and checks sizes and bytes. */
static void expect_plain(int fd, const size_t *sizes, const unsigned *ids, unsigned n)
{
    uint8_t buf[2048];
    for (unsigned i = 0; i < n; i++) {
        ssize_t k = recv(fd, buf, sizeof(buf), 0);
        CHECK(k == (ssize_t)sizes[i]);
        if (k <= 0)
            return;
        CHECK(buf[0] == (uint8_t)ids[i] && buf[k - 1] == (uint8_t)ids[i]);
    }
    CHECK(recv(fd, buf, sizeof(buf), 0) < 0 && errno == EAGAIN); /* nothing more */
}

struct seen {
    unsigned n;
    size_t len[128];
    uint8_t first[128];
};

static void on_dgram(void *arg, const uint8_t *data, size_t len, const struct sockaddr *from,
                     socklen_t fromlen)
{
    struct seen *s = arg;
    (void)from;
    (void)fromlen;
    if (s->n < 128) {
        s->len[s->n] = len;
        s->first[s->n] = data[0];
        s->n++;
    }
}

int main(void)
{
    struct sockaddr_in a, b, c;
    int fa = udp_sock(&a), fb = udp_sock(&b), fc = udp_sock(&c);
    struct ep_txq *q = ep_txq_new();
    struct ep_rxq *rx = ep_rxq_new();
    uint8_t d[1500];
    const ep_txq_stats *st;

    CHECK(fa >= 0 && fb >= 0 && fc >= 0 && q && rx);
    if (fa < 0 || fb < 0 || fc < 0 || !q || !rx)
        return check_finish("ep-udp");
    st = ep_txq_stats_of(q);

    /* 5 x 1000 and a short 300 join one run; a 1000 after the short one starts another */
    {
        static const size_t sizes[] = {1000, 1000, 1000, 1000, 1000, 300, 1000};
        static const unsigned ids[] = {1, 2, 3, 4, 5, 6, 7};
        for (unsigned i = 0; i < 7; i++) {
            fill(d, sizes[i], ids[i]);
            ep_txq_add(q, fa, d, sizes[i], (struct sockaddr *)&b, sizeof(b));
        }
        ep_txq_flush(q);
        CHECK(st->datagrams == 7 && st->sends == 2 && st->gso_sends == 1 && st->lost == 0);
        expect_plain(fb, sizes, ids, 7);
    }
    /* a larger datagram, another address: each starts a run; 65 of one size make two */
    {
        static const size_t sizes[] = {500, 900};
        static const unsigned ids[] = {8, 9};
        uint64_t sends = st->sends;
        fill(d, 500, 8);
        ep_txq_add(q, fa, d, 500, (struct sockaddr *)&b, sizeof(b));
        fill(d, 900, 9);
        ep_txq_add(q, fa, d, 900, (struct sockaddr *)&b, sizeof(b)); /* larger: new run */
        fill(d, 900, 10);
        ep_txq_add(q, fa, d, 900, (struct sockaddr *)&c, sizeof(c)); /* elsewhere: new run */
        ep_txq_flush(q);
        CHECK(st->sends == sends + 3);
        expect_plain(fb, sizes, ids, 2);
        sends = st->sends;
        for (unsigned i = 0; i < 65; i++) {
            fill(d, 700, 20 + i);
            ep_txq_add(q, fa, d, 700, (struct sockaddr *)&b, sizeof(b));
        }
        ep_txq_flush(q);
        CHECK(st->sends == sends + 2); /* 64 + 1 */
        {
            size_t sz[65];
            unsigned id[65];
            for (unsigned i = 0; i < 65; i++)
                sz[i] = 700, id[i] = 20 + i;
            expect_plain(fb, sz, id, 65);
        }
    }
    /* in place: a datagram written where ep_txq_space says is sent without a copy */
    {
        static const size_t sizes[] = {1200, 1200};
        static const unsigned ids[] = {40, 41};
        for (unsigned i = 0; i < 2; i++) {
            uint8_t *p = ep_txq_space(q, 1500);
            fill(p, 1200, ids[i]);
            ep_txq_add(q, fa, p, 1200, (struct sockaddr *)&b, sizeof(b));
        }
        ep_txq_flush(q);
        expect_plain(fb, sizes, ids, 2);
    }
    /* GRO: the run to c (and the 900 sent there before) come out one by one, in order */
    {
        struct seen s = {0};
        unsigned msgs = 0, got;
        CHECK(ep_udp_set_gro(fc, 1) == 0);
        for (unsigned i = 0; i < 8; i++) {
            fill(d, 1200, 50 + i);
            ep_txq_add(q, fa, d, i == 7 ? 100 : 1200, (struct sockaddr *)&c, sizeof(c));
        }
        ep_txq_flush(q);
        while ((got = ep_rxq_read(rx, fc, 1500, on_dgram, &s)) > 0)
            msgs += got;
        CHECK(s.n == 9 && s.len[0] == 900 && s.first[0] == 10);
        for (unsigned i = 1; i < s.n && i < 9; i++)
            CHECK(s.len[i] == (i == 8 ? 100u : 1200u) && s.first[i] == 50 + i - 1);
        CHECK(msgs >= 2 && msgs <= 9); /* the run as one message where GRO is, else 8 */
        printf("GRO: 9 datagrams in %u messages\n", msgs);
    }
    /* GSO off: the same joining, sent as single datagrams (one sendmmsg) */
    {
        static const size_t sizes[] = {800, 800, 800};
        static const unsigned ids[] = {60, 61, 62};
        uint64_t gso = st->gso_sends, sends = st->sends;
        ep_txq_set_gso(q, 0);
        CHECK(ep_txq_gso(q) == 0);
        for (unsigned i = 0; i < 3; i++) {
            fill(d, 800, ids[i]);
            ep_txq_add(q, fa, d, 800, (struct sockaddr *)&b, sizeof(b));
        }
        ep_txq_flush(q);
        CHECK(st->gso_sends == gso && st->sends > sends);
        expect_plain(fb, sizes, ids, 3);
    }
    CHECK(st->lost == 0 && st->gso_failed == 0);
    ep_txq_del(q);
    ep_rxq_del(rx);
    close(fa);
    close(fb);
    close(fc);
    return check_finish("ep-udp");
}
