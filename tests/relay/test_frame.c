/*
 * Unit tests of the relay data-frame codec (common/frame.c): round trips of
 * every type, every malformed shape, and the demultiplexing rule checked
 * against packets written by ngtcp2 itself (Version Negotiation, Stateless
 * Reset) and against ngtcp2's own server-side packet check.
 */
#include <ngtcp2/ngtcp2.h>
#include <string.h>

#include "check.h"
#include "frame.h"

static void test_data_round_trip(void)
{
    static const size_t sizes[] = {1, 2, 1200, 1452, POS_FRAME_MAX_PAYLOAD};
    uint8_t payload[POS_FRAME_MAX_PAYLOAD], buf[POS_FRAME_MAX_LEN];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        int len = pos_frame_encode_data(buf, sizeof buf, 0xa1b2c3d4u, payload, n);
        CHECK(len == (int)(POS_FRAME_HEADER_LEN + n));
        CHECK(buf[0] == POS_FRAME_DATA);
        CHECK(buf[1] == 0xa1 && buf[4] == 0xd4);
        pos_frame f;
        CHECK(pos_frame_decode(buf, (size_t)len, &f) == 0);
        CHECK(f.type == POS_FRAME_DATA);
        CHECK(f.circuit_id == 0xa1b2c3d4u);
        CHECK(f.payload == buf + POS_FRAME_HEADER_LEN);
        CHECK(f.payload_len == n);
        CHECK(memcmp(f.payload, payload, n) == 0);
    }
}

static void test_data_in_place_and_rewrite(void)
{
    uint8_t buf[64];
    memcpy(buf + POS_FRAME_HEADER_LEN, "quic packet", 11);
    int len = pos_frame_encode_data(buf, sizeof buf, 7, buf + POS_FRAME_HEADER_LEN, 11);
    CHECK(len == 16);
    pos_frame_set_circuit(buf, 0x01020304u);
    pos_frame f;
    CHECK(pos_frame_decode(buf, (size_t)len, &f) == 0);
    CHECK(f.circuit_id == 0x01020304u);
    CHECK(f.payload_len == 11 && memcmp(f.payload, "quic packet", 11) == 0);
}

static void test_encode_errors(void)
{
    uint8_t payload[POS_FRAME_MAX_PAYLOAD + 1] = {0}, buf[POS_FRAME_MAX_LEN + 8];
    CHECK(pos_frame_encode_data(buf, sizeof buf, 0, payload, 10) == POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_data(buf, sizeof buf, 1, payload, 0) == POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_data(buf, sizeof buf, 1, payload, POS_FRAME_MAX_PAYLOAD + 1) ==
          POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_data(buf, 14, 1, payload, 10) == POS_FRAME_ERR_NOBUF);
    CHECK(pos_frame_encode_data(buf, 15, 1, payload, 10) == 15);
    CHECK(pos_frame_encode_probe(buf, sizeof buf, POS_FRAME_DATA, 1, 0) == POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_probe(buf, sizeof buf, 0x3f, 1, 0) == POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_probe(buf, sizeof buf, POS_FRAME_PUNCH, 0, 0) == POS_FRAME_ERR_INVALID);
    CHECK(pos_frame_encode_probe(buf, 12, POS_FRAME_PUNCH, 1, 0) == POS_FRAME_ERR_NOBUF);
    CHECK(strcmp(pos_frame_strerror(POS_FRAME_ERR_MALFORMED), "malformed relay data frame") == 0);
}

static void test_probes(void)
{
    static const uint8_t types[] = {POS_FRAME_KEEPALIVE, POS_FRAME_KEEPALIVE_ACK, POS_FRAME_PUNCH,
                                    POS_FRAME_PUNCH_ACK};
    for (size_t i = 0; i < sizeof types; i++) {
        uint8_t buf[32];
        pos_frame f;
        int len =
            pos_frame_encode_probe(buf, sizeof buf, types[i], 0xfffffffeu, 0x0102030405060708ull);
        CHECK(len == POS_FRAME_PROBE_LEN);
        CHECK(pos_frame_decode(buf, (size_t)len, &f) == 0);
        CHECK(f.type == types[i]);
        CHECK(f.circuit_id == 0xfffffffeu);
        CHECK(f.cookie == 0x0102030405060708ull);
        CHECK(f.payload == NULL && f.payload_len == 0);
        CHECK(strcmp(pos_frame_type_name(types[i]), "unknown") != 0);
        /* One encoding only: a byte short or a byte of padding is malformed. */
        CHECK(pos_frame_decode(buf, (size_t)len - 1, &f) == POS_FRAME_ERR_MALFORMED);
        buf[len] = 0;
        CHECK(pos_frame_decode(buf, (size_t)len + 1, &f) == POS_FRAME_ERR_MALFORMED);
        CHECK(f.type == 0 && f.circuit_id == 0);
    }
}

static void test_malformed(void)
{
    uint8_t buf[POS_FRAME_MAX_LEN + 2] = {0};
    pos_frame f;
    CHECK(pos_frame_decode(buf, 0, &f) == POS_FRAME_ERR_NOT_FRAME);
    /* Every first byte with 0x40 or 0x80 set is QUIC, never a frame. */
    int not_frames = 0, unknown = 0;
    for (int b = 0; b < 256; b++) {
        buf[0] = (uint8_t)b;
        memset(buf + 1, 0x11, 20);
        int rc = pos_frame_decode(buf, 21, &f);
        if (b & 0xc0)
            not_frames += rc == POS_FRAME_ERR_NOT_FRAME;
        else if (b < POS_FRAME_DATA || b > POS_FRAME_PUNCH_ACK)
            unknown += rc == POS_FRAME_ERR_UNKNOWN_TYPE;
    }
    CHECK(not_frames == 192);
    CHECK(unknown == 64 - 5);
    buf[0] = POS_FRAME_DATA;
    CHECK(pos_frame_decode(buf, 1, &f) == POS_FRAME_ERR_MALFORMED); /* no circuit id */
    CHECK(pos_frame_decode(buf, 4, &f) == POS_FRAME_ERR_MALFORMED); /* truncated id */
    buf[1] = 0, buf[2] = 0, buf[3] = 0, buf[4] = 9;
    CHECK(pos_frame_decode(buf, 5, &f) == POS_FRAME_ERR_MALFORMED); /* empty payload */
    CHECK(pos_frame_decode(buf, 6, &f) == 0);
    CHECK(pos_frame_decode(buf, POS_FRAME_MAX_LEN, &f) == 0);
    CHECK(pos_frame_decode(buf, POS_FRAME_MAX_LEN + 1, &f) == POS_FRAME_ERR_MALFORMED);
    buf[4] = 0; /* circuit id 0 is reserved */
    CHECK(pos_frame_decode(buf, 6, &f) == POS_FRAME_ERR_MALFORMED);
}

/* Packets that ngtcp2 writes are never taken for frames, and ngtcp2 never takes a frame for an
 * Initial. */
static void test_quic_demux(void)
{
    uint8_t pkt[256], dcid[8] = {1, 2, 3, 4, 5, 6, 7, 8}, scid[8] = {9};
    uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
    int vn_frames = 0;
    for (int r = 0; r < 256; r++) {
        ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(pkt, sizeof pkt, (uint8_t)r, dcid, 8,
                                                              scid, 8, versions, 1);
        CHECK(n > 0);
        vn_frames += pos_frame_is_frame(pkt, (size_t)n);
    }
    CHECK(vn_frames == 0);

    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN] = {0}, rnd[40];
    memset(rnd, 0, sizeof rnd); /* worst case: all random bits zero */
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(pkt, sizeof pkt, token, rnd, sizeof rnd);
    CHECK(n > 0);
    CHECK(!pos_frame_is_frame(pkt, (size_t)n));

    uint8_t frame[1300];
    memset(frame + POS_FRAME_HEADER_LEN, 0xc3, 1200); /* payload that looks like a long header */
    int len = pos_frame_encode_data(frame, sizeof frame, 5, frame + POS_FRAME_HEADER_LEN, 1200);
    ngtcp2_pkt_hd hd;
    CHECK(ngtcp2_accept(&hd, frame, (size_t)len) != 0);
    len = pos_frame_encode_probe(frame, sizeof frame, POS_FRAME_KEEPALIVE, 5, 1);
    CHECK(ngtcp2_accept(&hd, frame, (size_t)len) != 0);
}

int main(void)
{
    test_data_round_trip();
    test_data_in_place_and_rewrite();
    test_encode_errors();
    test_probes();
    test_malformed();
    test_quic_demux();
    return check_finish("test_frame");
}
