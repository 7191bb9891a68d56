/*
 * Unit tests of the control-message codec (common/ctrl.c) and of the TLS
 * certificate made from an identity (common/tls.c): round trips, every
 * truncation, trailing bytes, bad fields, the bounded stream reader, and
 * the versions: the hole-punching messages of pos-relay/2 are refused by
 * the version 1 codec both ways; the NAT mapping of pos-relay/3 (HELLO
 * flags, PUNCH_START's last byte) never reaches a version 2 peer.
 */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "ctrl.h"
#include "tls.h"

static const char *const RELAY_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e";

static void sample_msgs(pos_ctrl_msg *ms, size_t *n, const char *peer_id)
{
    size_t i = 0;
    memset(ms, 0, sizeof(pos_ctrl_msg) * 12);

    ms[i].type = POS_CTRL_HELLO;
    strcpy(ms[i].token, "pos_secret-token");
    ms[i].token_len = strlen(ms[i].token);
    ms[i].addrs.n = 2;
    strcpy(ms[i].addrs.a[0], "192.168.1.5:4000");
    strcpy(ms[i].addrs.a[1], "[fe80::1]:4000");
    i++;
    ms[i].type = POS_CTRL_HELLO; /* a measuring connection: the flags byte is present */
    strcpy(ms[i].token, "pos_secret-token");
    ms[i].token_len = strlen(ms[i].token);
    ms[i].hello_flags = POS_CTRL_HELLO_NOT_HOME;
    i++;
    ms[i].type = POS_CTRL_WELCOME;
    strcpy(ms[i].observed, "203.0.113.7:61000");
    ms[i].bytes_per_sec = 1000000;
    ms[i].burst = 1 << 20;
    ms[i].max_conns = 5;
    ms[i].expires_at = 1900000000;
    ms[i].idle_timeout_s = 30;
    strcpy(ms[i].relay_id, RELAY_UUID);
    i++;
    ms[i].type = POS_CTRL_CONNECT;
    ms[i].req_id = 7;
    strcpy(ms[i].peer_id, peer_id);
    i++;
    ms[i].type = POS_CTRL_INCOMING;
    ms[i].req_id = 7;
    strcpy(ms[i].peer_id, peer_id);
    strcpy(ms[i].observed, "[2001:db8::1]:443");
    i++;
    ms[i].type = POS_CTRL_ACCEPT;
    ms[i].req_id = 0xffffffffu;
    i++;
    ms[i].type = POS_CTRL_DECLINE;
    ms[i].req_id = 3;
    ms[i].code = 9;
    i++;
    ms[i].type = POS_CTRL_CIRCUIT;
    ms[i].req_id = 7;
    ms[i].circuit_id = 0x01020304;
    strcpy(ms[i].peer_id, peer_id);
    strcpy(ms[i].observed, "1.2.3.4:5");
    ms[i].addrs.n = 1;
    strcpy(ms[i].addrs.a[0], "10.0.0.2:7000");
    i++;
    ms[i].type = POS_CTRL_REDIRECT;
    ms[i].req_id = 8;
    strcpy(ms[i].relay_id, RELAY_UUID);
    strcpy(ms[i].peer_id, peer_id);
    ms[i].addrs.n = 1;
    strcpy(ms[i].addrs.a[0], "198.51.100.1:7373");
    i++;
    ms[i].type = POS_CTRL_ERROR;
    ms[i].req_id = 8;
    ms[i].code = 2;
    strcpy(ms[i].text, "peer not connected");
    i++;
    ms[i].type = POS_CTRL_GOAWAY;
    ms[i].code = 0x108;
    strcpy(ms[i].text, "relay shutting down");
    i++;
    ms[i].type = POS_CTRL_CIRCUIT_CLOSED;
    ms[i].circuit_id = 0xfedcba98u;
    ms[i].code = POS_CTRL_CODE_PEER_LEFT;
    i++;
    *n = i;
}

/* The version 2 messages (hole punching). */
static void sample_punch_msgs(pos_ctrl_msg *ms, size_t *n)
{
    size_t i = 0;
    memset(ms, 0, sizeof(pos_ctrl_msg) * 4);

    ms[i].type = POS_CTRL_PUNCH_START;
    ms[i].circuit_id = 0x01020304;
    ms[i].peer_circuit_id = 0xa0b0c0d0u;
    for (int k = 0; k < POS_PUNCH_KEY_LEN; k++)
        ms[i].punch_key[k] = (uint8_t)(0xf0 + k);
    ms[i].start_in_ms = 40;
    ms[i].role = POS_PUNCH_LISTENER;
    ms[i].attempt = 3;
    ms[i].addrs.n = 3;
    strcpy(ms[i].addrs.a[0], "203.0.113.7:61000");
    strcpy(ms[i].addrs.a[1], "192.168.1.5:4000");
    strcpy(ms[i].addrs.a[2], "[2001:db8::5]:4000");
    i++;
    ms[i].type = POS_CTRL_PUNCH_REQUEST;
    ms[i].circuit_id = 9;
    ms[i].addrs.n = 1;
    strcpy(ms[i].addrs.a[0], "10.0.0.2:7000");
    i++;
    ms[i].type = POS_CTRL_PUNCH_REQUEST; /* no local address known: still a request */
    ms[i].circuit_id = 0xffffffffu;
    i++;
    ms[i].type = POS_CTRL_PUNCH_REPORT;
    ms[i].circuit_id = 9;
    ms[i].attempt = 0xffff;
    ms[i].outcome = POS_CTRL_PUNCH_DIRECT;
    ms[i].ms_to_direct = 412;
    i++;
    *n = i;
}

static void test_round_trips(const pos_ctrl_msg *ms, size_t n, int version)
{
    pos_ctrl_msg back;
    size_t used;
    uint8_t buf[POS_CTRL_MAX_MSG];

    for (size_t i = 0; i < n; i++) {
        int len = pos_ctrl_encode_version(&ms[i], version, buf, sizeof(buf));
        CHECK(len >= POS_CTRL_HEADER_LEN);
        if (len < POS_CTRL_HEADER_LEN)
            continue;
        CHECK(pos_ctrl_decode_version(buf, (size_t)len, version, &back, &used) == 1);
        CHECK(used == (size_t)len);
        CHECK(memcmp(&back, &ms[i], sizeof(back)) == 0);
        /* every strict prefix asks for more bytes, never succeeds or crashes */
        int prefix_ok = 1;
        for (int cut = 0; cut < len; cut++)
            if (pos_ctrl_decode_version(buf, (size_t)cut, version, &back, &used) != 0 || used != 0)
                prefix_ok = 0;
        CHECK(prefix_ok);
        /* a body with one byte more than its fields is malformed */
        uint8_t longer[POS_CTRL_MAX_MSG + 1];
        memcpy(longer, buf, (size_t)len);
        longer[len] = 0;
        size_t body = ((size_t)buf[1] << 8 | buf[2]) + 1;
        longer[1] = (uint8_t)(body >> 8);
        longer[2] = (uint8_t)body;
        CHECK(pos_ctrl_decode_version(longer, (size_t)len + 1, version, &back, &used) ==
              POS_CTRL_ERR_MALFORMED);
        /*
         * a body one byte short is malformed too (a field runs past it), except
         * HELLO's optional flags byte: without it, it is the HELLO of a home connection
         */
        if (body >= 2) {
            longer[1] = (uint8_t)((body - 2) >> 8);
            longer[2] = (uint8_t)(body - 2);
            if (ms[i].type == POS_CTRL_HELLO && ms[i].hello_flags)
                CHECK(pos_ctrl_decode_version(longer, (size_t)len, version, &back, &used) == 1 &&
                      back.hello_flags == 0 && used == (size_t)len - 1);
            else
                CHECK(pos_ctrl_decode_version(longer, (size_t)len, version, &back, &used) ==
                      POS_CTRL_ERR_MALFORMED);
        }
        /* too small an output buffer */
        CHECK(pos_ctrl_encode_version(&ms[i], version, buf, (size_t)len - 1) ==
              POS_CTRL_ERR_TOO_BIG);
        /* every version 1 message is the same message in version 2 */
        if (version == POS_CTRL_V1) {
            uint8_t v2[POS_CTRL_MAX_MSG];
            CHECK(pos_ctrl_encode(&ms[i], buf, sizeof(buf)) == len);
            CHECK(pos_ctrl_encode_version(&ms[i], POS_CTRL_V2, v2, sizeof(v2)) == len &&
                  memcmp(v2, buf, (size_t)len) == 0);
            CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V2, &back, &used) == 1 &&
                  memcmp(&back, &ms[i], sizeof(back)) == 0);
        }
    }
}

/* Encodes |m| at version 2 (it must be valid), applies |patch| at |off|, expects MALFORMED. */
static void check_bad_field(const pos_ctrl_msg *m, size_t off, const uint8_t *patch, size_t n)
{
    uint8_t buf[POS_CTRL_MAX_MSG];
    pos_ctrl_msg back;
    size_t used;
    int len = pos_ctrl_encode_version(m, POS_CTRL_V2, buf, sizeof(buf));
    CHECK(len > 0 && off + n <= (size_t)len);
    if (len <= 0 || off + n > (size_t)len)
        return;
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V2, &back, &used) == 1);
    memcpy(buf + off, patch, n);
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V2, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
}

static void test_versions(void)
{
    pos_ctrl_msg ms[4], m, back;
    size_t n, used;
    uint8_t buf[POS_CTRL_MAX_MSG];
    int len;

    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/1", 11) == POS_CTRL_V1);
    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/2", 11) == POS_CTRL_V2);
    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/5", 11) == 0);
    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/2x", 12) == 0);
    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/", 10) == 0);
    CHECK(pos_ctrl_version_of_alpn(NULL, 0) == 0);
    CHECK(strcmp(POS_CTRL_ALPN, POS_CTRL_ALPN_V1) == 0);

    sample_punch_msgs(ms, &n);
    test_round_trips(ms, n, POS_CTRL_V2);
    for (size_t i = 0; i < n; i++) {
        /* a version 1 peer neither sends nor accepts them */
        CHECK(pos_ctrl_encode(&ms[i], buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        CHECK(pos_ctrl_encode_version(&ms[i], 0, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        CHECK(pos_ctrl_encode_version(&ms[i], 5, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        len = pos_ctrl_encode_version(&ms[i], POS_CTRL_V2, buf, sizeof(buf));
        CHECK(len > 0);
        if (len <= 0)
            continue;
        CHECK(pos_ctrl_decode(buf, (size_t)len, &back, &used) == POS_CTRL_ERR_MALFORMED);
        CHECK(pos_ctrl_decode_version(buf, (size_t)len, 5, &back, &used) == POS_CTRL_ERR_MALFORMED);
        CHECK(strncmp(pos_ctrl_type_name(ms[i].type), "PUNCH_", 6) == 0);
    }
    const uint8_t fifteen[] = {15, 0x00, 0x00};
    CHECK(pos_ctrl_decode_version(fifteen, sizeof(fifteen), POS_CTRL_V2, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    CHECK(!strcmp(pos_ctrl_type_name(17), "unknown"));

    /*
     * PUNCH_START body offsets: circuit 0, peer circuit 4, key 8, start_in 24,
     * role 28, attempt 29, addrs 31 (after the 3-byte header)
     */
    const uint8_t zero4[4] = {0}, big[4] = {0, 0, 0x13, 0x89}, zero2[2] = {0}, bad_role[1] = {3};
    const uint8_t no_role[1] = {0}, nine[1] = {9};
    check_bad_field(&ms[0], 3, zero4, 4);     /* circuit id 0 */
    check_bad_field(&ms[0], 7, zero4, 4);     /* peer circuit id 0 */
    check_bad_field(&ms[0], 27, big, 4);      /* start_in_ms 5001 */
    check_bad_field(&ms[0], 31, bad_role, 1); /* role 3 */
    check_bad_field(&ms[0], 31, no_role, 1);  /* role 0 */
    check_bad_field(&ms[0], 32, zero2, 2);    /* attempt 0 */
    check_bad_field(&ms[0], 34, nine, 1);     /* 9 addresses */
    /* PUNCH_REPORT: circuit 3, attempt 7, outcome 9, ms 10 */
    const uint8_t outcome0[1] = {0}, outcome4[1] = {4};
    check_bad_field(&ms[3], 3, zero4, 4);
    check_bad_field(&ms[3], 7, zero2, 2);
    check_bad_field(&ms[3], 9, outcome0, 1);
    check_bad_field(&ms[3], 9, outcome4, 1);
    check_bad_field(&ms[1], 3, zero4, 4); /* PUNCH_REQUEST: circuit id 0 */

    /* a PUNCH_START without candidates: a body of 32 bytes, count 0 */
    len = pos_ctrl_encode_version(&ms[0], POS_CTRL_V2, buf, sizeof(buf));
    CHECK(len > 35);
    buf[1] = 0;
    buf[2] = 32;
    buf[34] = 0;
    CHECK(pos_ctrl_decode_version(buf, 35, POS_CTRL_V2, &back, &used) == POS_CTRL_ERR_MALFORMED);

    /* ... and the encoder refuses the same */
    pos_ctrl_msg bad[8];
    for (int i = 0; i < 8; i++)
        bad[i] = i < 6 ? ms[0] : ms[3];
    bad[0].circuit_id = 0;
    bad[1].peer_circuit_id = 0;
    bad[2].start_in_ms = POS_PUNCH_MAX_START_IN_MS + 1;
    bad[3].role = 0;
    bad[4].attempt = 0;
    bad[5].addrs.n = 0;
    bad[6].outcome = 4;
    bad[7].attempt = 0;
    for (int i = 0; i < 8; i++)
        CHECK(pos_ctrl_encode_version(&bad[i], POS_CTRL_V2, buf, sizeof(buf)) ==
              POS_CTRL_ERR_INVALID);

    /* the stream reader at version 2, byte by byte; at version 1 the same bytes are refused */
    pos_ctrl_reader r = {0};
    len = pos_ctrl_encode_version(&ms[0], POS_CTRL_V2, buf, sizeof(buf));
    int got = 0;
    for (int i = 0; i < len; i++) {
        CHECK(pos_ctrl_reader_feed(&r, buf + i, 1) == 0);
        if (pos_ctrl_reader_next_version(&r, POS_CTRL_V2, &m) == 1)
            got++;
    }
    CHECK(got == 1 && memcmp(&m, &ms[0], sizeof(m)) == 0 && r.buf == NULL);
    CHECK(pos_ctrl_reader_feed(&r, buf, (size_t)len) == 0);
    CHECK(pos_ctrl_reader_next(&r, &m) == POS_CTRL_ERR_MALFORMED);
    pos_ctrl_reader_wipe(&r);
    pos_ctrl_msg_wipe(&m);
    CHECK(m.punch_key[0] == 0 && m.punch_key[15] == 0);
}

/* Version 3: the NAT mapping, in HELLO's flags and PUNCH_START's last byte. */
static void test_nat_mapping(const pos_ctrl_msg *v1, size_t n1)
{
    pos_ctrl_msg ms[4], m, back;
    uint8_t buf[POS_CTRL_MAX_MSG], v2[POS_CTRL_MAX_MSG];
    size_t n, used;
    int len, len2;

    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/3", 11) == POS_CTRL_V3);
    CHECK(POS_CTRL_N_ALPNS == 4 && !strcmp(pos_ctrl_alpns[1], POS_CTRL_ALPN_V3) &&
          !strcmp(pos_ctrl_alpns[2], POS_CTRL_ALPN_V2));
    test_round_trips(v1, n1, POS_CTRL_V3); /* version 1 messages are the same in version 3 */
    sample_punch_msgs(ms, &n);
    ms[0].peer_nat = POS_CTRL_NAT_VARIES;
    test_round_trips(ms, n, POS_CTRL_V3);
    len = pos_ctrl_encode_version(&ms[0], POS_CTRL_V3, buf, sizeof(buf));
    len2 = pos_ctrl_encode_version(&ms[0], POS_CTRL_V2, v2, sizeof(v2));
    CHECK(len2 > POS_CTRL_HEADER_LEN && len == len2 + 1 && buf[len - 1] == POS_CTRL_NAT_VARIES);
    if (len2 <= POS_CTRL_HEADER_LEN || len != len2 + 1)
        return;
    CHECK(memcmp(buf + POS_CTRL_HEADER_LEN, v2 + POS_CTRL_HEADER_LEN,
                 (size_t)len2 - POS_CTRL_HEADER_LEN) == 0);
    /* a version 2 peer gets PUNCH_START without it, and that form is short at version 3 */
    CHECK(pos_ctrl_decode_version(v2, (size_t)len2, POS_CTRL_V2, &back, &used) == 1 &&
          back.peer_nat == 0);
    CHECK(pos_ctrl_decode_version(v2, (size_t)len2, POS_CTRL_V3, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    buf[len - 1] = 3; /* no such mapping */
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    m = ms[0];
    m.peer_nat = 3;
    CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);

    /* HELLO's NAT flags: version 3 only, at most one of the two */
    m = v1[1]; /* a measuring connection's HELLO */
    m.hello_flags = POS_CTRL_HELLO_NOT_HOME | POS_CTRL_HELLO_NAT_VARIES;
    len = pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf));
    CHECK(len > 0 && pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) == 1 &&
          back.hello_flags == m.hello_flags);
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V2, &back, &used) ==
          POS_CTRL_ERR_MALFORMED); /* what a relay of version 2 would say */
    CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V2, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    m.hello_flags = POS_CTRL_HELLO_NAT_EIM;
    CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf)) > 0);
    m.hello_flags = POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES;
    CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    m.hello_flags = POS_CTRL_HELLO_NAT_EIM;
    len = pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf));
    CHECK(len > 0);
    if (len <= 0)
        return;
    buf[len - 1] = POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES;
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    buf[len - 1] = 0x08; /* an unknown flag */
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
}

/* Version 3: CONNECT and ACCEPT may end with the sender's NAT mapping (one HELLO_NAT_* flag). */
static void test_request_nat(const char *peer_id)
{
    pos_ctrl_msg m, back;
    uint8_t buf[POS_CTRL_MAX_MSG];
    size_t used;
    int len;

    for (int accept = 0; accept < 2; accept++) {
        memset(&m, 0, sizeof(m));
        m.type = accept ? POS_CTRL_ACCEPT : POS_CTRL_CONNECT;
        m.req_id = 9;
        if (!accept)
            snprintf(m.peer_id, sizeof(m.peer_id), "%s", peer_id);
        int plain = pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf));
        m.hello_flags = POS_CTRL_HELLO_NAT_VARIES;
        len = pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf));
        CHECK(plain > 0 && len == plain + 1); /* absent when unknown: one encoding */
        CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) == 1 &&
              back.hello_flags == POS_CTRL_HELLO_NAT_VARIES && back.req_id == 9);
        /* a relay of version 2 refuses it, and the encoder will not write it there */
        CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V2, &back, &used) ==
              POS_CTRL_ERR_MALFORMED);
        CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V2, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        m.hello_flags = POS_CTRL_HELLO_NOT_HOME; /* not a mapping */
        CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        m.hello_flags = POS_CTRL_HELLO_NAT_EIM;
        len = pos_ctrl_encode_version(&m, POS_CTRL_V3, buf, sizeof(buf));
        CHECK(len > 0);
        if (len <= 0)
            return;
        for (int bad = 0; bad < 3; bad++) { /* a present 0, both, another flag */
            buf[len - 1] = bad == 0   ? 0
                           : bad == 1 ? POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES
                                      : POS_CTRL_HELLO_NOT_HOME;
            CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) ==
                  POS_CTRL_ERR_MALFORMED);
        }
    }
}

static void test_bad_input(const char *peer_id)
{
    pos_ctrl_msg m, back;
    uint8_t buf[POS_CTRL_MAX_MSG];
    size_t used;
    int len;

    /* unknown type, oversized length */
    const uint8_t unknown[] = {0x00, 0x00, 0x00};
    CHECK(pos_ctrl_decode(unknown, sizeof(unknown), &back, &used) == POS_CTRL_ERR_MALFORMED);
    const uint8_t twelve[] = {12, 0x00, 0x00};
    CHECK(pos_ctrl_decode(twelve, sizeof(twelve), &back, &used) == POS_CTRL_ERR_MALFORMED);
    /* CIRCUIT_CLOSED: exactly 6 body bytes */
    const uint8_t cc_short[] = {POS_CTRL_CIRCUIT_CLOSED, 0x00, 0x05, 0, 0, 0, 1, 0};
    CHECK(pos_ctrl_decode(cc_short, sizeof(cc_short), &back, &used) == POS_CTRL_ERR_MALFORMED);
    const uint8_t cc_ok[] = {POS_CTRL_CIRCUIT_CLOSED, 0x00, 0x06, 0, 0, 0, 1, 0, 6};
    CHECK(pos_ctrl_decode(cc_ok, sizeof(cc_ok), &back, &used) == 1 && back.circuit_id == 1 &&
          back.code == 6 && used == sizeof(cc_ok));
    const uint8_t huge[] = {POS_CTRL_HELLO, 0xff, 0xff};
    CHECK(pos_ctrl_decode(huge, sizeof(huge), &back, &used) == POS_CTRL_ERR_TOO_BIG);

    /* invalid fields are refused by the encoder */
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_WELCOME;
    strcpy(m.observed, "not an address");
    strcpy(m.relay_id, RELAY_UUID);
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    strcpy(m.peer_id, "short");
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    m.token_len = POS_CTRL_MAX_TOKEN + 1;
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    m.token_len = 0;
    m.addrs.n = POS_CTRL_MAX_ADDRS + 1;
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);

    /* ... and by the decoder: a CONNECT whose peer id is not canonical */
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_CONNECT;
    strcpy(m.peer_id, peer_id);
    len = pos_ctrl_encode(&m, buf, sizeof(buf));
    CHECK(len > 0);
    buf[len - 1] = '!';
    CHECK(pos_ctrl_decode(buf, (size_t)len, &back, &used) == POS_CTRL_ERR_MALFORMED);

    /* a HELLO address that does not parse; a token with an embedded NUL */
    const uint8_t bad_addr[] = {POS_CTRL_HELLO, 0, 8, 0, 0, 1, 0, 3, 'a', ':', '1'};
    CHECK(pos_ctrl_decode(bad_addr, sizeof(bad_addr), &back, &used) == POS_CTRL_ERR_MALFORMED);
    const uint8_t nul_token[] = {POS_CTRL_HELLO, 0, 6, 0, 3, 'a', 0, 'b', 0};
    CHECK(pos_ctrl_decode(nul_token, sizeof(nul_token), &back, &used) == POS_CTRL_ERR_MALFORMED);
    const uint8_t ok_hello[] = {POS_CTRL_HELLO, 0, 6, 0, 3, 'a', 'b', 'c', 0};
    CHECK(pos_ctrl_decode(ok_hello, sizeof(ok_hello), &back, &used) == 1);
    CHECK(back.token_len == 3 && !strcmp(back.token, "abc") && back.addrs.n == 0);
    CHECK(back.hello_flags == 0); /* no flags byte: a home connection (older clients) */

    /* HELLO flags: present only when nonzero, known bits only, one byte */
    const uint8_t not_home[] = {POS_CTRL_HELLO, 0, 7, 0, 3, 'a', 'b', 'c', 0, 0x01};
    CHECK(pos_ctrl_decode(not_home, sizeof(not_home), &back, &used) == 1);
    CHECK(back.hello_flags == POS_CTRL_HELLO_NOT_HOME && used == sizeof(not_home));
    const uint8_t zero_flags[] = {POS_CTRL_HELLO, 0, 7, 0, 3, 'a', 'b', 'c', 0, 0x00};
    CHECK(pos_ctrl_decode(zero_flags, sizeof(zero_flags), &back, &used) == POS_CTRL_ERR_MALFORMED);
    const uint8_t unknown_flag[] = {POS_CTRL_HELLO, 0, 7, 0, 3, 'a', 'b', 'c', 0, 0x02};
    CHECK(pos_ctrl_decode(unknown_flag, sizeof(unknown_flag), &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    const uint8_t two_flags[] = {POS_CTRL_HELLO, 0, 8, 0, 3, 'a', 'b', 'c', 0, 0x01, 0x01};
    CHECK(pos_ctrl_decode(two_flags, sizeof(two_flags), &back, &used) == POS_CTRL_ERR_MALFORMED);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_HELLO;
    strcpy(m.token, "abc");
    m.token_len = 3;
    m.hello_flags = 0x80;
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    m.hello_flags = 0;
    CHECK(pos_ctrl_encode(&m, buf, sizeof(buf)) == sizeof(ok_hello)); /* no flags byte */
    CHECK(memcmp(buf, ok_hello, sizeof(ok_hello)) == 0);
}

static void test_reader(void)
{
    pos_ctrl_reader r = {0};
    pos_ctrl_msg m, back;
    uint8_t buf[2 * POS_CTRL_MAX_MSG];
    int a, b;

    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_GOAWAY;
    m.code = 1;
    strcpy(m.text, "bye");
    a = pos_ctrl_encode(&m, buf, sizeof(buf));
    m.code = 2;
    b = pos_ctrl_encode(&m, buf + a, sizeof(buf) - (size_t)a);
    CHECK(a > 0 && b > 0);
    /* byte by byte: two messages come out, in order */
    int got = 0, codes_ok = 1;
    for (int i = 0; i < a + b; i++) {
        CHECK(pos_ctrl_reader_feed(&r, buf + i, 1) == 0);
        int rv = pos_ctrl_reader_next(&r, &back);
        if (rv == 1) {
            got++;
            if (back.code != got)
                codes_ok = 0;
        }
    }
    CHECK(got == 2 && codes_ok);
    CHECK(r.buf == NULL && r.len == 0); /* freed once empty */

    /* more than one message's worth pending is refused */
    memset(buf, 0, sizeof(buf));
    CHECK(pos_ctrl_reader_feed(&r, buf, POS_CTRL_MAX_MSG) == 0);
    CHECK(pos_ctrl_reader_feed(&r, buf, 1) == POS_CTRL_ERR_TOO_BIG);
    CHECK(pos_ctrl_reader_next(&r, &back) == POS_CTRL_ERR_MALFORMED); /* type 0 */
    pos_ctrl_reader_wipe(&r);
    CHECK(r.buf == NULL);
}

static void test_tls_cert(void)
{
    pos_identity id;
    pos_tls_creds *c = NULL;
    const uint8_t *der;
    size_t len;
    uint8_t key[32];

    pos_identity_generate(&id);
    CHECK(pos_tls_creds_new(&c, &id) == 0);
    if (!c)
        return;
    pos_tls_cert_der(c, &der, &len);
    CHECK(len > 100);
    CHECK(pos_tls_check_peer_cert(der, len, key) == 0);
    CHECK(memcmp(key, id.public_key, 32) == 0);
    /* garbage is refused */
    uint8_t copy[4096];
    if (len <= sizeof(copy)) {
        memcpy(copy, der, len);
        copy[0] ^= 0xff;
        CHECK(pos_tls_check_peer_cert(copy, len, key) != 0);
    }
    CHECK(pos_tls_check_peer_cert(der, 10, key) != 0);
    gnutls_session_t s;
    CHECK(pos_tls_session_new(&s, c, 1, POS_CTRL_ALPN) == 0);
    gnutls_deinit(s);
    pos_tls_creds_del(c);
    pos_identity_free(&id);
}

/* Version 4: PARK and PARKED, only there; every older message the same. */
static void test_parking(const pos_ctrl_msg *v1, size_t n1)
{
    pos_ctrl_msg ms[2], m, back;
    uint8_t buf[POS_CTRL_MAX_MSG];
    size_t used;
    int len;

    CHECK(pos_ctrl_version_of_alpn((const uint8_t *)"pos-relay/4", 11) == POS_CTRL_V4);
    CHECK(!strcmp(pos_ctrl_alpns[0], POS_CTRL_ALPN_V4)); /* offered and preferred first */
    test_round_trips(v1, n1, POS_CTRL_V4);
    memset(ms, 0, sizeof(ms));
    ms[0].type = POS_CTRL_PARK;
    ms[0].req_id = 0x01020304;
    ms[1].type = POS_CTRL_PARKED;
    ms[1].req_id = 0x01020304;
    ms[1].record_id = 0x8000000100000002ull;
    ms[1].keepalive_s = 25;
    ms[1].lifetime_s = POS_CTRL_MAX_LIFETIME_S;
    test_round_trips(ms, 2, POS_CTRL_V4);
    CHECK(!strcmp(pos_ctrl_type_name(POS_CTRL_PARKED), "PARKED"));
    /* not a message of version 3 either way */
    CHECK(pos_ctrl_encode_version(&ms[0], POS_CTRL_V3, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
    len = pos_ctrl_encode_version(&ms[1], POS_CTRL_V4, buf, sizeof(buf));
    CHECK(len == POS_CTRL_HEADER_LEN + 20);
    CHECK(pos_ctrl_decode_version(buf, (size_t)len, POS_CTRL_V3, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    /* out of range: record 0, keep-alive 0 or over an hour, lifetime 0 or over a day */
    const struct {
        uint64_t record;
        uint32_t keepalive, lifetime;
    } bad[] = {{0, 25, 120},
               {1, 0, 120},
               {1, POS_CTRL_MAX_KEEPALIVE_S + 1, 120},
               {1, 25, 0},
               {1, 25, POS_CTRL_MAX_LIFETIME_S + 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = ms[1];
        m.record_id = bad[i].record;
        m.keepalive_s = bad[i].keepalive;
        m.lifetime_s = bad[i].lifetime;
        CHECK(pos_ctrl_encode_version(&m, POS_CTRL_V4, buf, sizeof(buf)) == POS_CTRL_ERR_INVALID);
        /* the same bytes written by hand do not decode */
        uint8_t raw[POS_CTRL_HEADER_LEN + 20] = {POS_CTRL_PARKED, 0, 20};
        for (int k = 0; k < 8; k++)
            raw[7 + k] = (uint8_t)(m.record_id >> (56 - 8 * k));
        for (int k = 0; k < 4; k++) {
            raw[15 + k] = (uint8_t)(m.keepalive_s >> (24 - 8 * k));
            raw[19 + k] = (uint8_t)(m.lifetime_s >> (24 - 8 * k));
        }
        CHECK(pos_ctrl_decode_version(raw, sizeof(raw), POS_CTRL_V4, &back, &used) ==
              POS_CTRL_ERR_MALFORMED);
    }
    /* exact lengths: PARK with a byte more, PARKED with one less */
    uint8_t park5[] = {POS_CTRL_PARK, 0, 5, 0, 0, 0, 1, 0};
    CHECK(pos_ctrl_decode_version(park5, sizeof(park5), POS_CTRL_V4, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
    len = pos_ctrl_encode_version(&ms[1], POS_CTRL_V4, buf, sizeof(buf));
    buf[2] = 19;
    CHECK(pos_ctrl_decode_version(buf, (size_t)len - 1, POS_CTRL_V4, &back, &used) ==
          POS_CTRL_ERR_MALFORMED);
}

int main(void)
{
    pos_identity id;
    char peer_id[POS_PEER_ID_STRLEN];

    if (sodium_init() < 0)
        return 1;
    pos_identity_generate(&id);
    pos_identity_peer_id(&id, peer_id);
    pos_ctrl_msg ms[12];
    size_t n;
    sample_msgs(ms, &n, peer_id);
    test_round_trips(ms, n, POS_CTRL_V1);
    test_bad_input(peer_id);
    test_versions();
    test_nat_mapping(ms, n);
    test_parking(ms, n);
    test_request_nat(peer_id);
    test_reader();
    test_tls_cert();
    pos_identity_free(&id);
    return check_finish("test_ctrl");
}
