/*
 * libFuzzer target for the mDNS packet parser and the engine behind it:
 * each input is read record by record with the codec, then handed to a
 * core that advertises and browses (as a query and as a response), which
 * exercises name decompression, rdata checks, caching and answering. The
 * events it reports go through the TXT rules and UTF-8 checks that
 * discover --json applies (txt.c), so those read fuzzed bytes too.
 */
#include <sodium.h>
#include <stdint.h>
#include <string.h>

#include "core.h"
#include "dns.h"
#include "txt.h"
#include "utf8.h"

static struct mdns_core *core;

static void exercise(void *user, enum pos_mdns_event ev, const pos_mdns_peer *p)
{
    static char out[3 * 256];
    (void)user;
    (void)ev;
    utf8_sanitize((const uint8_t *)p->instance, p->instance_len, out, sizeof(out));
    for (size_t i = 0; i < p->n_txt; i++) {
        const uint8_t *val;
        size_t kl, vl;
        if (mdns_txt_split((const uint8_t *)p->txt[i], p->txt_len[i], &kl, &val, &vl) && val &&
            !utf8_valid(val, vl))
            utf8_sanitize(val, vl, out, sizeof(out));
    }
    if (p->n_txt)
        mdns_txt_find(p->txt, p->txt_len, p->n_txt, "name");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint64_t now = 1000;
    if (!core) {
        struct mdns_core_config cfg;
        uint8_t a4[1][4] = {{10, 0, 0, 1}};
        uint8_t a6[1][16] = {{0xfe, 0x80, [15] = 1}};
        if (sodium_init() < 0)
            return 0;
        memset(&cfg, 0, sizeof(cfg));
        cfg.advertise = true;
        cfg.browse = true;
        cfg.port = 7373;
        strcpy(cfg.instance, "fuzz");
        cfg.txt_len = 1;
        core = mdns_core_new(&cfg, exercise, NULL, now);
        mdns_core_iface_update(core, 2, (const uint8_t(*)[4])a4, 1, (const uint8_t(*)[16])a6, 1,
                               now);
    }
    struct dns_reader r;
    struct dns_question q;
    static struct dns_rr rr;
    int rc = dns_reader_init(&r, data, size);
    while (rc == 0 && (rc = dns_read_question(&r, &q)) == 0)
        ;
    if (rc == DNS_ERR_END)
        while (dns_read_rr(&r, &rr) == 0)
            ;
    uint8_t src[16] = {10, 0, 0, 2};
    mdns_core_receive(core, data, size, 2, 4, src, 5353, now);
    now += 7;
    mdns_core_timeout(core, now);
    while (mdns_core_pop_packet(core))
        ;
    return 0;
}
