/*
 * Unit tests of the DNS codec (client-lib/mdns/dns.c): round trip with
 * compression, and rejection of compression loops, forward pointers,
 * truncated records at every length, oversized labels, names and counts.
 */
#include <stdlib.h>
#include <string.h>

#include "../unit/check.h"
#include "core.h"
#include "dns.h"
#include "pos/mdns.h"
#include "txt.h"
#include "utf8.h"

static size_t build_sample(uint8_t *buf, size_t cap)
{
    struct dns_writer w;
    struct dns_name svc, inst, host;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_name_prepend(&inst, "peer one", 8, &svc);
    dns_name_from_text(&host, "pos-abc.local");
    dns_writer_init(&w, buf, cap);
    dns_write_question(&w, &svc, DNS_TYPE_PTR, true);
    dns_write_rr(&w, &svc, DNS_TYPE_PTR, false, 4500, inst.b, inst.len);
    uint8_t srv[6 + 256] = {0, 0, 0, 0, 0x1c, 0xcd};
    memcpy(srv + 6, host.b, host.len);
    dns_write_rr(&w, &inst, DNS_TYPE_SRV, true, 120, srv, (uint16_t)(6 + host.len));
    uint8_t txt[] = "\x09name=Test";
    dns_write_rr(&w, &inst, DNS_TYPE_TXT, true, 4500, txt, 10);
    uint8_t a[4] = {10, 0, 0, 1};
    dns_write_rr(&w, &host, DNS_TYPE_A, true, 120, a, 4);
    struct dns_header h = {.id = 7, .flags = DNS_FLAG_QR, .qd = 1, .an = 4};
    dns_write_header(&w, &h);
    CHECK(!w.overflow);
    return w.len;
}

static void test_round_trip(void)
{
    uint8_t buf[1500];
    size_t len = build_sample(buf, sizeof(buf));
    struct dns_reader r;
    struct dns_question q;
    struct dns_rr *rr = malloc(sizeof(*rr));
    struct dns_name svc, inst;
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_name_prepend(&inst, "peer one", 8, &svc);
    CHECK(dns_reader_init(&r, buf, len) == 0);
    CHECK(r.h.id == 7 && r.h.qd == 1 && r.h.an == 4);
    CHECK(dns_read_question(&r, &q) == 0);
    CHECK(dns_name_equal(&q.name, &svc) && q.type == DNS_TYPE_PTR && q.unicast);
    CHECK(dns_read_question(&r, &q) == DNS_ERR_END);
    CHECK(dns_read_rr(&r, rr) == 0);
    CHECK(rr->type == DNS_TYPE_PTR && rr->ttl == 4500 && !rr->cache_flush);
    CHECK(rr->rdlen == inst.len && !memcmp(rr->rdata, inst.b, inst.len));
    CHECK(dns_read_rr(&r, rr) == 0);
    CHECK(rr->type == DNS_TYPE_SRV && rr->cache_flush && rr->rdata[4] == 0x1c);
    CHECK(dns_read_rr(&r, rr) == 0 && rr->type == DNS_TYPE_TXT && rr->rdlen == 10);
    CHECK(dns_read_rr(&r, rr) == 0 && rr->type == DNS_TYPE_A && rr->rdata[3] == 1);
    CHECK(dns_read_rr(&r, rr) == DNS_ERR_END);
    CHECK(r.pos == len);
    /* Compression: "_sd._udp.local" is written once, then pointed to. */
    CHECK(len < 12 + 16 + 4 + 4 * 26 + 30);
    /* Case-insensitive names. */
    struct dns_name upper;
    dns_name_from_text(&upper, "_SD._UDP.LOCAL");
    CHECK(dns_name_equal(&upper, &svc));
    free(rr);
}

static void test_truncated_everywhere(void)
{
    uint8_t buf[1500];
    size_t len = build_sample(buf, sizeof(buf));
    struct dns_rr *rr = malloc(sizeof(*rr));
    int rejected = 0;
    for (size_t l = 0; l < len; l++) {
        struct dns_reader r;
        struct dns_question q;
        int rc = dns_reader_init(&r, buf, l);
        while (rc == 0 && (rc = dns_read_question(&r, &q)) == 0)
            ;
        if (rc == DNS_ERR_END)
            while ((rc = dns_read_rr(&r, rr)) == 0)
                ;
        if (rc != DNS_ERR_END)
            rejected++;
    }
    CHECK(rejected == (int)len); /* every shorter prefix is an error */
    free(rr);
}

static int parse_first_question(const uint8_t *pkt, size_t len)
{
    struct dns_reader r;
    struct dns_question q;
    int rc = dns_reader_init(&r, pkt, len);
    if (rc)
        return rc;
    return dns_read_question(&r, &q);
}

static void test_hostile_names(void)
{
    /* A pointer to itself. */
    uint8_t self[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1};
    CHECK(parse_first_question(self, sizeof(self)) == DNS_ERR_NAME);
    /* A label, then a pointer back to the label's own start: a loop. */
    uint8_t loop[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 0xC0, 12, 0, 1, 0, 1};
    CHECK(parse_first_question(loop, sizeof(loop)) == DNS_ERR_NAME);
    /* A forward pointer. */
    uint8_t fwd[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 16, 0, 1, 0, 1, 0};
    CHECK(parse_first_question(fwd, sizeof(fwd)) == DNS_ERR_NAME);
    /* A label of 64 bytes. */
    uint8_t big[12 + 1 + 64 + 1 + 4] = {0, 0, 0, 0, 0, 1};
    big[12] = 64;
    memset(big + 13, 'a', 64);
    CHECK(parse_first_question(big, sizeof(big)) == DNS_ERR_NAME);
    /* A name of 5 x 63-byte labels (> 255). */
    uint8_t longn[12 + 5 * 64 + 1 + 4] = {0, 0, 0, 0, 0, 1};
    for (int i = 0; i < 5; i++) {
        longn[12 + i * 64] = 63;
        memset(longn + 13 + i * 64, 'b', 63);
    }
    CHECK(parse_first_question(longn, sizeof(longn)) == DNS_ERR_NAME);
    /* Extended label type 0x40. */
    uint8_t ext[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 'x', 0, 0, 1, 0, 1};
    CHECK(parse_first_question(ext, sizeof(ext)) == DNS_ERR_NAME);
    /* Counts that cannot fit in the packet. */
    uint8_t counts[] = {0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1};
    CHECK(parse_first_question(counts, sizeof(counts)) == DNS_ERR_COUNTS);
    uint8_t rrcounts[] = {0, 0, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    CHECK(parse_first_question(rrcounts, sizeof(rrcounts)) == DNS_ERR_COUNTS);
    /* A chain of backward pointers longer than the jump limit. */
    uint8_t chain[12 + 2 * 40 + 4] = {0, 0, 0, 0, 0, 1};
    chain[12] = 0; /* offset 12: root */
    for (int i = 1; i < 40; i++) {
        chain[12 + 2 * i] = 0xC0;
        chain[13 + 2 * i] = (uint8_t)(12 + 2 * (i - 1));
    }
    size_t p = 12 + 2 * 39;
    struct dns_name n;
    CHECK(dns_read_name(chain, sizeof(chain), &p, &n) == DNS_ERR_NAME);
}

static void test_rdata_checks(void)
{
    /* An A record with 3 bytes of rdata. */
    uint8_t a3[] = {0, 0, 0x84, 0, 0, 0, 0, 1,   0, 0, 0, 0, 0,
                    0, 1, 0,    1, 0, 0, 0, 120, 0, 3, 1, 2, 3};
    struct dns_reader r;
    struct dns_rr *rr = malloc(sizeof(*rr));
    CHECK(dns_reader_init(&r, a3, sizeof(a3)) == 0);
    CHECK(dns_read_rr(&r, rr) == DNS_ERR_RDATA);
    /* A PTR whose name runs past rdlen. */
    uint8_t ptr[] = {0,  0, 0x84, 0, 0, 0, 0,   1, 0, 0, 0,   0,   0,   0,
                     12, 0, 1,    0, 0, 0, 120, 0, 2, 3, 'a', 'b', 'c', 0};
    CHECK(dns_reader_init(&r, ptr, sizeof(ptr)) == 0);
    CHECK(dns_read_rr(&r, rr) == DNS_ERR_RDATA);
    free(rr);
}

static void test_txt_limits(void)
{
    uint8_t out[MDNS_TXT_MAX];
    char s256[257];
    memset(s256, 'x', 256);
    s256[256] = 0;
    const char *one[1] = {s256};
    CHECK(mdns_core_txt_build(one, 1, out, sizeof(out)) == POS_P2P_ERR_MDNS_TXT);
    s256[255] = 0;
    CHECK(mdns_core_txt_build(one, 1, out, sizeof(out)) == 256);
    const char *six[6] = {s256, s256, s256, s256, s256, s256};
    CHECK(mdns_core_txt_build(six, 6, out, sizeof(out)) == POS_P2P_ERR_MDNS_TXT);
    const char *empty[1] = {""};
    CHECK(mdns_core_txt_build(empty, 1, out, sizeof(out)) == POS_P2P_ERR_MDNS_TXT);
    CHECK(mdns_core_txt_build(NULL, 0, out, sizeof(out)) == 1);
}

/* A TXT record as large as a packet allows (RFC 6762 §17) is read whole. */
static void test_big_txt_read_whole(void)
{
    enum { N = 8900 };
    uint8_t *buf = malloc(DNS_MAX_PACKET), *txt = malloc(N);
    struct dns_rr *rr = malloc(sizeof(*rr));
    struct dns_writer w;
    struct dns_name inst;
    dns_name_from_text(&inst, "big._sd._udp.local");
    for (size_t i = 0; i < N; i += 256) {
        size_t l = N - i - 1 < 255 ? N - i - 1 : 255;
        txt[i] = (uint8_t)l;
        memset(txt + i + 1, 'a' + (int)(i / 256) % 26, l);
    }
    dns_writer_init(&w, buf, DNS_MAX_PACKET);
    dns_write_rr(&w, &inst, DNS_TYPE_TXT, true, 4500, txt, N);
    struct dns_header h = {.flags = DNS_FLAG_QR, .an = 1};
    dns_write_header(&w, &h);
    CHECK(!w.overflow && w.len <= DNS_MAX_PACKET);
    struct dns_reader r;
    CHECK(dns_reader_init(&r, buf, w.len) == 0);
    CHECK(dns_read_rr(&r, rr) == 0);
    CHECK(!rr->oversized && rr->rdlen == N && !memcmp(rr->rdata, txt, N));
    free(rr);
    free(txt);
    free(buf);
}

/* RFC 6763 §6.4 / §6.5 on single strings, and the UTF-8 checks of the JSON output. */
static void test_txt_strings(void)
{
    size_t kl, vl;
    const uint8_t *v;
    CHECK(mdns_txt_split((const uint8_t *)"Key=v=w", 7, &kl, &v, &vl) && kl == 3 && vl == 3 &&
          !memcmp(v, "v=w", 3));
    CHECK(mdns_txt_split((const uint8_t *)"flag", 4, &kl, &v, &vl) && kl == 4 && !v);
    CHECK(mdns_txt_split((const uint8_t *)"e=", 2, &kl, &v, &vl) && v && vl == 0);
    CHECK(mdns_txt_split((const uint8_t *)"n=a\0b", 5, &kl, &v, &vl) && vl == 3 && !v[1]);
    CHECK(!mdns_txt_split((const uint8_t *)"=junk", 5, &kl, &v, &vl));
    CHECK(!mdns_txt_split((const uint8_t *)"", 0, &kl, &v, &vl));
    CHECK(!mdns_txt_split((const uint8_t *)"k\x01y=1", 5, &kl, &v, &vl));
    CHECK(!mdns_txt_split((const uint8_t *)"\xc3\xa9=1", 4, &kl, &v, &vl));
    /* The public face of the same rule (pos/p2p.h), as pos-p2p discover uses it. */
    CHECK(pos_mdns_txt_split((const uint8_t *)"OS=linux", 8, &kl, &v, &vl) == 0 && kl == 2 &&
          vl == 5 && !memcmp(v, "linux", 5));
    CHECK(pos_mdns_txt_split((const uint8_t *)"=junk", 5, &kl, &v, &vl) == POS_P2P_ERR_MDNS_TXT);
    CHECK(pos_mdns_txt_split(NULL, 3, &kl, &v, &vl) == POS_P2P_ERR_INVALID_ARGUMENT);
    const char *strs[5] = {"=name=x", "NAME=First", "name=Second", "name", "other=1"};
    size_t lens[5] = {7, 10, 11, 4, 7};
    CHECK(mdns_txt_find(strs, lens, 5, "name") == 1);
    CHECK(mdns_txt_find(strs, lens, 5, "other") == 4);
    CHECK(mdns_txt_find(strs, lens, 5, "nam") == -1);
    CHECK(utf8_valid((const uint8_t *)"a\0\xc3\xa9\xf0\x9f\x98\x80", 8));
    CHECK(!utf8_valid((const uint8_t *)"\xc0\xaf", 2));         /* overlong */
    CHECK(!utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!utf8_valid((const uint8_t *)"\xe2\x82", 2));         /* cut short */
    char out[16];
    size_t n = utf8_sanitize((const uint8_t *)"a\xff\xc3\xa9", 4, out, sizeof(out));
    CHECK(n == 6 && !memcmp(out, "a\xef\xbf\xbd\xc3\xa9", 6));
    CHECK(utf8_sanitize((const uint8_t *)"\xff\xff", 2, out, 4) == 3); /* bounded */

    /* Instance names (RFC 6763 §4.3): one label with dots, split labels, other names. */
    struct dns_name svc, one, two;
    char inst[DNS_MAX_NAME + 1];
    dns_name_from_text(&svc, "_sd._udp.local");
    dns_name_prepend(&one, "a.b c", 5, &svc);
    CHECK(mdns_instance_text(&one, &svc, inst) == 5 && !strcmp(inst, "a.b c"));
    dns_name_from_text(&two, "dot.inside._SD._udp.LOCAL");
    CHECK(mdns_instance_text(&two, &svc, inst) == 10 && !strcmp(inst, "dot.inside"));
    dns_name_from_text(&two, "host.example.local");
    CHECK(mdns_instance_text(&two, &svc, inst) == 4 && !strcmp(inst, "host"));
}

static void test_writer_overflow(void)
{
    uint8_t buf[40];
    struct dns_writer w;
    struct dns_name n;
    dns_name_from_text(&n, "a-rather-long-name-that-does-not-fit.local");
    dns_writer_init(&w, buf, sizeof(buf));
    dns_write_question(&w, &n, DNS_TYPE_A, false);
    CHECK(w.overflow && w.len <= sizeof(buf));
}

int main(void)
{
    test_round_trip();
    test_truncated_everywhere();
    test_hostile_names();
    test_rdata_checks();
    test_txt_limits();
    test_big_txt_read_whole();
    test_txt_strings();
    test_writer_overflow();
    return check_finish("mdns-dns");
}
