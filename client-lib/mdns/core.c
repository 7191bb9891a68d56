/*
 * The mDNS engine (see core.h): a responder (responder.c) and a querier
 * (querier.c) sharing one object, one record cache and one output queue,
 * driven by packets and timestamps only. This file owns the object, the
 * interfaces and the dispatch of received packets and timers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct mdns_core *mdns_core_new(const struct mdns_core_config *cfg, mdns_event_fn cb, void *user,
                                uint64_t now)
{
    struct mdns_core *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->out = calloc(MDNS_MAX_OUT, sizeof(*c->out));
    c->contacts = calloc(MDNS_MAX_CONTACTS, sizeof(*c->contacts));
    if (!c->out || !c->contacts) {
        mdns_core_del(c);
        return NULL;
    }
    c->cfg = *cfg;
    c->cb = cb;
    c->user = user;
    dns_name_from_text(&c->svc, "_sd._udp.local");
    dns_name_from_text(&c->enum_name, "_services._dns-sd._udp.local");
    if (mdns_advertising(c)) {
        if (cfg->mode == POS_MDNS_CONTACTS_ONLY) {
            mdns_rotate_private(c, now);
        } else {
            char host[DNS_MAX_LABEL + 1];
            snprintf(c->instance_label, sizeof(c->instance_label), "%s", cfg->instance);
            snprintf(c->base_label, sizeof(c->base_label), "%s", cfg->instance);
            mdns_random_label(host, "pos-");
            mdns_set_names(c, host);
            memcpy(c->txt, cfg->txt, cfg->txt_len);
            c->txt_len = cfg->txt_len;
        }
        /* §8.1: wait a random 0-250 ms before the first probe. */
        mdns_start_probing(c, now, rand_between(0, 250));
    }
    if (cfg->browse && cfg->mode != POS_MDNS_DISABLED) {
        c->qnext = now + rand_between(20, 120);
        c->qinterval = 1000;
    }
    return c;
}

void mdns_core_del(struct mdns_core *c)
{
    if (!c)
        return;
    for (int i = 0; i < MDNS_MAX_CACHE; i++)
        free(c->cache[i].rdata);
    if (c->contacts)
        sodium_memzero(c->contacts, MDNS_MAX_CONTACTS * sizeof(*c->contacts));
    free(c->contacts);
    free(c->out);
    sodium_memzero(c->cfg.presence_key, sizeof(c->cfg.presence_key));
    free(c);
}

int mdns_core_add_contact(struct mdns_core *c, const char *peer_id, const uint8_t key[32])
{
    uint8_t pk[32];
    if (!peer_id || pos_peer_id_parse(peer_id, strlen(peer_id), pk))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (c->n_contacts == MDNS_MAX_CONTACTS)
        return POS_P2P_ERR_MDNS_FULL;
    struct contact *ct = &c->contacts[c->n_contacts++];
    snprintf(ct->peer_id, sizeof(ct->peer_id), "%s", peer_id);
    memcpy(ct->key, key, 32);
    for (int i = 0; i < MDNS_MAX_VIEWS; i++) {
        memset(c->views[i].txt_fp, 0, 16); /* re-check every TXT */
        c->views[i].dirty = true;
    }
    return 0;
}

const char *mdns_core_instance(const struct mdns_core *c)
{
    return (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED) ? c->instance_label : "";
}

void mdns_core_stop(struct mdns_core *c, uint64_t now)
{
    if (c->stopped)
        return;
    mdns_goodbye_all(c, now);
    c->stopped = true;
    c->rstate = R_OFF;
    c->qnext = 0;
}

static bool addrs_equal(const struct iface *ifc, const uint8_t (*a4)[4], size_t n4,
                        const uint8_t (*a6)[16], size_t n6)
{
    return ifc->n4 == n4 && ifc->n6 == n6 && (!n4 || !memcmp(ifc->a4, a4, n4 * 4)) &&
           (!n6 || !memcmp(ifc->a6, a6, n6 * 16));
}

int mdns_core_iface_update(struct mdns_core *c, int ifindex, const uint8_t (*a4)[4], size_t n4,
                           const uint8_t (*a6)[16], size_t n6, uint64_t now)
{
    if (n4 > MDNS_MAX_ADDRS)
        n4 = MDNS_MAX_ADDRS;
    if (n6 > MDNS_MAX_ADDRS)
        n6 = MDNS_MAX_ADDRS;
    struct iface *ifc = mdns_iface_find(c, ifindex);
    if (ifc && addrs_equal(ifc, a4, n4, a6, n6))
        return 0;
    bool live = mdns_advertising(c) && (c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED);
    bool rotate = live && c->cfg.mode == POS_MDNS_CONTACTS_ONLY;
    if (rotate)
        mdns_goodbye_all(c, now); /* everything goes: a new identity follows */
    else if (ifc && live)
        mdns_goodbye_removed(c, ifc, a4, n4, a6, n6);
    if (!n4 && !n6) {
        if (ifc) {
            /* Gone: what was learnt through it goes too (peers seen only there are lost). */
            mdns_querier_forget(c, ifindex, 4);
            mdns_querier_forget(c, ifindex, 6);
            memset(ifc, 0, sizeof(*ifc));
            mdns_update_views(c, now);
        }
        return 0;
    }
    if (!ifc) {
        ifc = mdns_iface_find(c, 0);
        for (int i = 0; !ifc && i < MDNS_MAX_IFACES; i++) {
            if (!c->ifaces[i].index)
                ifc = &c->ifaces[i];
        }
        if (!ifc)
            return POS_P2P_ERR_MDNS_FULL;
        memset(ifc, 0, sizeof(*ifc));
        ifc->index = ifindex;
    }
    bool up4 = n4 && !ifc->n4, up6 = n6 && !ifc->n6;
    bool down4 = !n4 && ifc->n4, down6 = !n6 && ifc->n6;
    if (down4)
        mdns_querier_forget(c, ifindex, 4);
    if (down6)
        mdns_querier_forget(c, ifindex, 6);
    ifc->n4 = (unsigned)n4;
    ifc->n6 = (unsigned)n6;
    if ((up4 || up6) && c->cfg.browse && c->cfg.mode != POS_MDNS_DISABLED && !c->cfg.no_qu) {
        /*
         * A family just came up here: browse it soon, and ask for unicast
         * replies the first time (§5.4), since responders that announced
         * recently would not multicast again within a second.
         */
        ifc->qu_next[0] |= up4;
        ifc->qu_next[1] |= up6;
        uint64_t soon = now + rand_between(20, 120);
        if (!c->qnext || c->qnext > soon) {
            c->qnext = soon;
            c->qinterval = 1000;
        }
    }
    if (n4)
        memcpy(ifc->a4, a4, n4 * 4);
    if (n6)
        memcpy(ifc->a6, a6, n6 * 16);
    memset(ifc->last_mcast, 0, sizeof(ifc->last_mcast));
    if (down4 || down6)
        mdns_update_views(c, now);
    if (!mdns_advertising(c))
        return 0;
    if (rotate) {
        /* A new address would link old and new advertisements: rotate everything. */
        mdns_rotate_private(c, now);
        mdns_start_probing(c, now, rand_between(0, 250));
    } else if (live) {
        c->rstate = R_ANNOUNCING;
        c->step = 0;
        c->rnext = now;
    }
    return 0;
}

static void handle_response(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                            uint64_t now)
{
    bool conflict = false;
    while (dns_read_question(&x->r, &x->q) == 0)
        ;
    while (dns_read_rr(&x->r, &x->rr) == 0) {
        if (mdns_responder_saw_record(c, ifc, family, &x->rr))
            conflict = true;
        /*
         * Our own records, looped back, are cached too: they then go out as
         * known answers in our browse queries, so our own responder (which
         * cannot tell its querier from another process on this host) stays
         * quiet. They are never reported.
         */
        if (c->cfg.browse && x->rr.section != DNS_SEC_AUTHORITY)
            mdns_cache_add(c, &x->rr, ifc->index, family, now);
    }
    if (conflict)
        mdns_conflict(c, now);
}

int mdns_core_receive(struct mdns_core *c, const uint8_t *data, size_t len, int ifindex,
                      int src_family, const uint8_t *src, uint16_t src_port, uint64_t now)
{
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return 0; /* disabled: nothing is answered, nothing learnt */
    struct iface *ifc = mdns_iface_find(c, ifindex);
    if (!ifc)
        return 0;
    struct rx *x = malloc(sizeof(*x));
    if (!x)
        return POS_P2P_ERR_NOMEM;
    /* First pass: validate the whole packet, so a bad one changes nothing. */
    int rc = dns_reader_init(&x->r, data, len);
    while (rc == 0 && (rc = dns_read_question(&x->r, &x->q)) == 0)
        ;
    if (rc == DNS_ERR_END)
        while ((rc = dns_read_rr(&x->r, &x->rr)) == 0)
            ;
    if (rc != DNS_ERR_END) {
        free(x);
        return rc;
    }
    dns_reader_init(&x->r, data, len);
    uint16_t opcode = (x->r.h.flags >> 11) & 0xF;
    if (opcode == 0) {
        if (x->r.h.flags & DNS_FLAG_QR) {
            /* §6: responses must come from port 5353. */
            if (src_port == MDNS_PORT)
                handle_response(c, x, ifc, src_family, now);
        } else {
            unsigned known;
            if (mdns_responder_query(c, x, ifc, src_family, src, src_port, now, &known))
                mdns_querier_saw_query(c, ifc, src_family, known, now);
        }
    }
    free(x);
    mdns_update_views(c, now);
    return 0;
}

void mdns_core_timeout(struct mdns_core *c, uint64_t now)
{
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return;
    mdns_responder_timer(c, now);
    mdns_querier_timer(c, now);
    mdns_update_views(c, now);
}

uint64_t mdns_core_next_deadline(const struct mdns_core *c)
{
    uint64_t best = UINT64_MAX;
    if (c->cfg.mode == POS_MDNS_DISABLED || c->stopped)
        return best;
    if (mdns_advertising(c) && c->rstate != R_ANNOUNCED && c->rstate != R_OFF)
        mdns_earliest(&best, c->rnext);
    if (mdns_advertising(c) && c->cfg.mode == POS_MDNS_CONTACTS_ONLY && c->rstate == R_ANNOUNCED) {
        uint64_t next_epoch = (c->epoch + 1) * MDNS_EPOCH_MS;
        int64_t mono = (int64_t)next_epoch - c->cfg.wall_offset_ms;
        mdns_earliest(&best, mono > 0 ? (uint64_t)mono : 1);
    }
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        mdns_earliest(&best, c->ifaces[i].pending_at[0]);
        mdns_earliest(&best, c->ifaces[i].pending_at[1]);
        mdns_earliest(&best, c->ifaces[i].tc_at[0]);
        mdns_earliest(&best, c->ifaces[i].tc_at[1]);
    }
    mdns_querier_deadline(c, &best);
    return best;
}
