/*
 * Unit tests of common/quic_version.c (the version filter of our QUIC
 * servers), relay/pending_addr.c (handshakes per source address) and
 * relay/sendbuf.c (control bytes that never move until acknowledged).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "pending_addr.h"
#include "quic_version.h"
#include "sendbuf.h"

/* long_header: a long header of |version| with 8-byte DCID 0xd1.. and 5-byte SCID 0x5c.., padded.
 */
static size_t long_header(uint8_t *p, uint32_t version, size_t len)
{
    memset(p, 0, len);
    p[0] = 0xc3;
    p[1] = (uint8_t)(version >> 24);
    p[2] = (uint8_t)(version >> 16);
    p[3] = (uint8_t)(version >> 8);
    p[4] = (uint8_t)version;
    p[5] = 8;
    memset(p + 6, 0xd1, 8);
    p[14] = 5;
    memset(p + 15, 0x5c, 5);
    return len;
}

static void test_version_answer(void)
{
    static const uint32_t others[] = {0xff00001du, 0x709a50c4u, 0x6b3343cfu, 0x1a2a3a4au};
    uint8_t pkt[1500], vn[1500];
    ssize_t n;

    /* ours and short headers are routed */
    CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, long_header(pkt, 1, 1200), 0) ==
          POS_QUIC_VERSION_OK);
    pkt[0] = 0x40;
    CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, 40, 0) == POS_QUIC_VERSION_OK);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        n = pos_quic_version_answer(vn, sizeof(vn), pkt, long_header(pkt, others[i], 1200), 0x2a);
        /* a VN: version 0, connection ids swapped, version 1 only */
        CHECK(n == 7 + 5 + 8 + 4);
        CHECK((vn[0] & 0x80) && memcmp(vn + 1, "\0\0\0\0", 4) == 0);
        CHECK(vn[5] == 5 && vn[6] == 0x5c && vn[11] == 8 && vn[12] == 0xd1);
        CHECK(memcmp(vn + 20, "\0\0\0\1", 4) == 0);
        /* shorter than 1200 B: silence */
        CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, long_header(pkt, others[i], 1199), 0) ==
              POS_QUIC_VERSION_DROP);
    }
    /* a Version Negotiation is never answered */
    CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, long_header(pkt, 0, 1200), 0) ==
          POS_QUIC_VERSION_DROP);
    /* connection ids longer than the datagram */
    long_header(pkt, 0xff00001du, 1200);
    pkt[5] = 255;
    pkt[14] = 255;
    CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, 200, 0) == POS_QUIC_VERSION_DROP);
    CHECK(pos_quic_version_answer(vn, sizeof(vn), pkt, 4, 0) == POS_QUIC_VERSION_OK);
}

static void test_pending_addrs(void)
{
    relay_pending_addrs *t = relay_pending_addrs_new(2);
    struct sockaddr_in a = {0}, b = {0};
    struct sockaddr_in6 c = {0}, d = {0};
    a.sin_family = b.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.2", &b.sin_addr);
    c.sin6_family = d.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8:1:2::1", &c.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2::ffff", &d.sin6_addr); /* same /64 */
    CHECK(t != NULL);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&a) == 0);
    a.sin_port = htons(999); /* another port of the same address counts too */
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&a) == 0);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&a) == -1);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&b) == 0); /* others still get in */
    CHECK(relay_pending_addrs_count(t, (struct sockaddr *)&a) == 2);
    relay_pending_addrs_give(t, (struct sockaddr *)&a);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&a) == 0);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&c) == 0);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&d) == 0);
    CHECK(relay_pending_addrs_take(t, (struct sockaddr *)&c) == -1);
    relay_pending_addrs_give(t, (struct sockaddr *)&d);
    relay_pending_addrs_give(t, (struct sockaddr *)&c);
    CHECK(relay_pending_addrs_count(t, (struct sockaddr *)&c) == 0);
    relay_pending_addrs_give(t, (struct sockaddr *)&c); /* not counted: no effect */
    CHECK(relay_pending_addrs_count(t, (struct sockaddr *)&c) == 0);
    relay_pending_addrs_del(t);
}

static void test_sendbuf(void)
{
    relay_sendbuf b = {0};
    uint8_t msg[700];
    struct iovec v[8];
    const uint8_t *first;
    size_t n;

    memset(msg, 0x5a, sizeof(msg));
    CHECK(relay_sendbuf_append(&b, msg, 100) == 0);
    n = relay_sendbuf_unsent(&b, v, 8);
    CHECK(n == 1 && v[0].iov_len == 100);
    first = v[0].iov_base;
    relay_sendbuf_sent(&b, 60); /* QUIC holds a pointer to these 60 bytes */
    for (int i = 0; i < 10; i++)
        CHECK(relay_sendbuf_append(&b, msg, sizeof(msg)) == 0);
    n = relay_sendbuf_unsent(&b, v, 8);
    /* the bytes already handed out did not move; the rest follows them */
    CHECK(n >= 2 && (const uint8_t *)v[0].iov_base == first + 60 && v[0].iov_len > 0);
    CHECK(relay_sendbuf_pending(&b) == 7100);
    relay_sendbuf_sent(&b, 7040);
    CHECK(relay_sendbuf_unsent(&b, v, 8) == 0);
    relay_sendbuf_acked(&b, 7100);
    CHECK(relay_sendbuf_pending(&b) == 0 && b.head == NULL); /* idle: no block kept */
    CHECK(relay_sendbuf_append(&b, msg, 10) == 0);
    CHECK(relay_sendbuf_unsent(&b, v, 8) == 1 && v[0].iov_len == 10);
    relay_sendbuf_free(&b);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_version_answer();
    test_pending_addrs();
    test_sendbuf();
    return check_finish("quic-version");
}
