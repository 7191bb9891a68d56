/*
 * The bottom of the mDNS engine (see engine.h): what the responder, the
 * querier and the dispatch in core.c all use, so that none of them calls
 * another sideways: the output queue, the interface table, whether our
 * records are live, and the contacts-only presence epochs and tags.
 * Module order: engine <- responder, querier <- core <- mdns.
 */
#include <sodium.h>

#include "engine.h"

/* ---- the output queue ---- */

struct mdns_packet *mdns_out_slot(struct mdns_core *c)
{
    if (c->out_count == MDNS_MAX_OUT) {
        c->out_dropped++;
        return NULL;
    }
    return &c->out[(c->out_head + c->out_count) % MDNS_MAX_OUT];
}

void mdns_out_commit(struct mdns_core *c)
{
    c->out_count++;
}

const struct mdns_packet *mdns_core_pop_packet(struct mdns_core *c)
{
    if (!c->out_count)
        return NULL;
    const struct mdns_packet *p = &c->out[c->out_head];
    c->out_head = (c->out_head + 1) % MDNS_MAX_OUT;
    c->out_count--;
    return p;
}

unsigned mdns_core_out_dropped(const struct mdns_core *c)
{
    return c->out_dropped;
}

/* ---- interfaces and state ---- */

struct iface *mdns_iface_find(struct mdns_core *c, int ifindex)
{
    for (int i = 0; i < MDNS_MAX_IFACES; i++) {
        if (c->ifaces[i].index == ifindex && ifindex)
            return &c->ifaces[i];
    }
    return NULL;
}

int mdns_core_announced(const struct mdns_core *c)
{
    return c->rstate == R_ANNOUNCING || c->rstate == R_ANNOUNCED;
}

/* ---- contacts-only presence ---- */

void mdns_presence_tag(const uint8_t key[32], uint64_t epoch, const uint8_t nonce[16],
                       uint8_t tag[16])
{
    uint8_t sub[32];
    crypto_kdf_derive_from_key(sub, sizeof(sub), epoch, "posprsnc", key);
    crypto_generichash(tag, 16, nonce, 16, sub, sizeof(sub));
    sodium_memzero(sub, sizeof(sub));
}

uint64_t mdns_epoch_of(const struct mdns_core *c, uint64_t now)
{
    int64_t wall = (int64_t)now + c->cfg.wall_offset_ms;
    return wall > 0 ? (uint64_t)wall / MDNS_EPOCH_MS : 0;
}
