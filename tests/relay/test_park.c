/*
 * Unit tests of the parked datagrams (common/park.c): round trips of the
 * five types, the mac bound to the key, the type, the record and the
 * counter, every malformed shape, and the demultiplexing against data frames.
 * The park key's derivation from TLS is checked in tests/unit/test_tls.c.
 */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "frame.h"
#include "park.h"

static const uint8_t types[] = {POS_PARK_KEEPALIVE, POS_PARK_ACK, POS_PARK_WAKE, POS_PARK_BYE,
                                POS_PARK_QUIET};

static void test_round_trip(const uint8_t *key)
{
    uint8_t buf[64];
    pos_park_msg m;

    for (size_t i = 0; i < sizeof(types); i++) {
        int len = pos_park_encode(buf, sizeof(buf), types[i], 0xa1b2c3d4e5f60718ull, 42 + i, key);
        CHECK(len == POS_PARK_LEN);
        CHECK(buf[0] == types[i] && buf[1] == 0xa1 && buf[4] == 0xd4); /* the circuit id's place */
        CHECK(pos_park_route(0xa1b2c3d4e5f60718ull) == 0xa1b2c3d4u);
        CHECK(pos_frame_is_frame(buf, (size_t)len) && pos_park_is_park(buf, (size_t)len));
        CHECK(pos_park_decode(buf, (size_t)len, &m) == 0);
        CHECK(m.type == types[i] && m.record_id == 0xa1b2c3d4e5f60718ull && m.counter == 42 + i);
        CHECK(pos_park_verify(&m, key) == 0);
        CHECK(strcmp(pos_park_type_name(types[i]), "unknown") != 0);
    }
    CHECK(pos_park_encode(buf, POS_PARK_LEN - 1, POS_PARK_ACK, 1, 1, key) == POS_PARK_ERR_NOBUF);
    CHECK(pos_park_encode(buf, sizeof(buf), POS_PARK_ACK, 0, 1, key) == POS_PARK_ERR_INVALID);
    CHECK(pos_park_encode(buf, sizeof(buf), POS_FRAME_DATA, 1, 1, key) == POS_PARK_ERR_INVALID);
    CHECK(pos_park_encode(buf, sizeof(buf), 0x2a, 1, 1, key) == POS_PARK_ERR_INVALID);
}

/* Any changed bit of a datagram, another key or another type never verifies. */
static void test_forgeries(const uint8_t *key, const uint8_t *other)
{
    uint8_t buf[POS_PARK_LEN], bad[POS_PARK_LEN];
    pos_park_msg m;
    int rv, verified = 0;

    CHECK(pos_park_encode(buf, sizeof(buf), POS_PARK_KEEPALIVE, 77, 9, key) == POS_PARK_LEN);
    CHECK(pos_park_decode(buf, sizeof(buf), &m) == 0 &&
          pos_park_verify(&m, other) == POS_PARK_ERR_BAD_MAC);
    for (size_t i = 0; i < sizeof(buf) * 8; i++) {
        memcpy(bad, buf, sizeof(buf));
        bad[i / 8] ^= (uint8_t)(1u << (i % 8));
        rv = pos_park_decode(bad, sizeof(bad), &m);
        if (rv == 0 && pos_park_verify(&m, key) == 0)
            verified++;
    }
    CHECK(verified == 0);
    /* the same record and counter, but the type of another datagram */
    for (size_t i = 0; i < sizeof(types); i++) {
        memcpy(bad, buf, sizeof(buf));
        bad[0] = types[i];
        CHECK(pos_park_decode(bad, sizeof(bad), &m) == 0);
        CHECK(pos_park_verify(&m, key) ==
              (types[i] == POS_PARK_KEEPALIVE ? 0 : POS_PARK_ERR_BAD_MAC));
    }
}

static void test_malformed(const uint8_t *key)
{
    uint8_t buf[POS_PARK_LEN + 1];
    pos_park_msg m;

    CHECK(pos_park_encode(buf, sizeof(buf), POS_PARK_WAKE, 5, 1, key) == POS_PARK_LEN);
    for (size_t len = 0; len <= sizeof(buf); len++) {
        int want = len == 0              ? POS_PARK_ERR_NOT_PARK
                   : len == POS_PARK_LEN ? 0
                                         : POS_PARK_ERR_MALFORMED;
        CHECK(pos_park_decode(buf, len, &m) == want);
    }
    memset(buf + 1, 0, 8); /* record 0 */
    CHECK(pos_park_decode(buf, POS_PARK_LEN, &m) == POS_PARK_ERR_MALFORMED && m.record_id == 0);
    /* neighbours of the park types are not parked datagrams */
    static const uint8_t others[] = {0x00, POS_FRAME_DATA, POS_FRAME_PUNCH_ACK, 0x2a, 0x3f, 0x40,
                                     0xc3};
    for (size_t i = 0; i < sizeof(others); i++) {
        buf[0] = others[i];
        CHECK(!pos_park_is_park(buf, POS_PARK_LEN));
        CHECK(pos_park_decode(buf, POS_PARK_LEN, &m) == POS_PARK_ERR_NOT_PARK);
    }
    /* and the frame codec does not take a parked datagram for one of its own */
    pos_frame f;
    CHECK(pos_park_encode(buf, sizeof(buf), POS_PARK_KEEPALIVE, 5, 1, key) == POS_PARK_LEN);
    CHECK(pos_frame_decode(buf, POS_PARK_LEN, &f) == POS_FRAME_ERR_UNKNOWN_TYPE);
    CHECK(strcmp(pos_park_strerror(POS_PARK_ERR_BAD_MAC), "unknown error") != 0);
}

int main(void)
{
    uint8_t key[POS_PARK_KEY_LEN], other[POS_PARK_KEY_LEN];

    if (sodium_init() < 0)
        return 1;
    randombytes_buf(key, sizeof(key));
    memcpy(other, key, sizeof(other));
    other[31] ^= 1;
    test_round_trip(key);
    test_forgeries(key, other);
    test_malformed(key);
    return check_finish("test_park");
}
