/*
 * Private to the mDNS engine (engine.c, core.c, responder.c, querier.c):
 * the state they share and the calls between them. engine.c holds the
 * output queue, the interface lookup and the presence epochs; core.c owns
 * the object and dispatches packets and timers; responder.c publishes our
 * records; querier.c browses, caches and reports. Calls go one way
 * (engine <- responder, querier <- core). struct mdns_core is the one
 * engine's state, laid out by owner (responder, querier, output ring) and
 * defined here because those four files read it directly (one interface
 * record holds both halves' per-interface state): an exception to the
 * one-struct-one-file rule, not yet split. Nothing here is installed or
 * used outside client-lib/mdns.
 */
#ifndef POS_MDNS_ENGINE_H
#define POS_MDNS_ENGINE_H

#include <sodium.h>
#include <string.h>

#include "core.h"
#include "identity.h"

enum rec {
    REC_PTR_SVC,  /* _sd._udp.local PTR instance (shared) */
    REC_PTR_ENUM, /* _services._dns-sd._udp.local PTR _sd._udp.local (shared) */
    REC_SRV,      /* unique */
    REC_TXT,      /* unique */
    REC_A,        /* unique, one record per address */
    REC_AAAA,     /* unique, one record per address */
    REC_COUNT
};
#define REC_ALL ((1u << REC_COUNT) - 1)
#define REC_SHARED ((1u << REC_PTR_SVC) | (1u << REC_PTR_ENUM))

enum rstate { R_OFF, R_WAIT, R_PROBING, R_ANNOUNCING, R_ANNOUNCED };

struct iface {
    int index; /* 0: free slot */
    unsigned n4, n6;
    uint8_t a4[MDNS_MAX_ADDRS][4];
    uint8_t a6[MDNS_MAX_ADDRS][16];
    uint64_t last_mcast[2][REC_COUNT]; /* [family v4=0 v6=1] */
    uint64_t pending_at[2];            /* delayed shared answers, 0: none */
    unsigned pending_mask[2];
    uint64_t dup_query_at[2]; /* when another host last asked our browse question */
    /* A truncated query (§7.2) from tc_src, answered at tc_at once all its known answers are in. */
    uint64_t tc_at[2];
    unsigned tc_mask[2], tc_known[2];
    uint8_t tc_src[2][16];
    bool qu_next[2]; /* the next browse query asks for unicast replies (§5.4) */
};

struct centry {
    bool used;
    uint32_t hash;  /* of the lower-cased name: a cheap first comparison */
    uint32_t thash; /* PTR: the same of the target name in rdata */
    struct dns_name name;
    uint16_t type;
    int ifindex, family;
    uint32_t ttl;
    uint64_t received, expires;
    unsigned refresh_stage; /* refresh queries sent so far (0..4) */
    uint16_t rdlen;
    uint8_t *rdata;
};

struct view {
    bool used, reported, complete;
    bool dirty; /* a record of its name or host changed since the last look */
    struct dns_name name, host;
    uint32_t hash, host_hash;
    uint8_t fp[16]; /* fingerprint of what was last reported */
    uint64_t resolve_at;
    unsigned resolve_tries;
    uint8_t txt_fp[16]; /* TXT last checked against contacts */
    int contact;        /* index of the recognised contact, or -1 */
};

struct contact {
    char peer_id[POS_PEER_ID_STRLEN];
    uint8_t key[32];
};

struct mdns_core {
    struct mdns_core_config cfg;
    mdns_event_fn cb;
    void *user;
    struct dns_name svc, enum_name, instance, host;
    char instance_label[DNS_MAX_LABEL + 1];
    char base_label[DNS_MAX_LABEL + 1];
    unsigned rename_n;
    unsigned conflicts; /* in the current window, for the §8.1 rate limit */
    uint64_t conflict_window;
    /* responder */
    enum rstate rstate;
    unsigned step; /* probes or announcements sent */
    uint64_t rnext;
    uint64_t epoch;
    bool stopped;
    uint8_t txt[MDNS_TXT_MAX];
    size_t txt_len;
    /* querier */
    uint64_t qnext, qlast; /* next and last browse query */
    bool ptr_dirty;        /* a PTR of our browse type changed: views to add or drop */
    uint64_t qinterval;
    struct iface ifaces[MDNS_MAX_IFACES];
    struct centry cache[MDNS_MAX_CACHE];
    struct view views[MDNS_MAX_VIEWS];
    struct contact *contacts;
    size_t n_contacts;
    /* output ring */
    struct mdns_packet *out;
    unsigned out_head, out_count, out_dropped;
};

/* Canonical records for the §8.2 tie-break: type (2 bytes) then rdata. */
struct tierec {
    uint16_t len;
    uint8_t b[2 + DNS_MAX_RDATA];
};

/* Scratch space for one received packet (heap: the records are large). */
struct rx {
    struct dns_reader r;
    struct dns_question q;
    struct dns_rr rr;
    struct tierec theirs[4], ours[2];
};

static inline int fam_i(int family)
{
    return family == 6 ? 1 : 0;
}

static inline uint64_t rand_between(uint64_t lo, uint64_t hi)
{
    return lo + randombytes_uniform((uint32_t)(hi - lo + 1));
}

static inline bool mdns_advertising(const struct mdns_core *c)
{
    return c->cfg.advertise && c->cfg.mode != POS_MDNS_DISABLED && !c->stopped;
}

static inline bool family_usable(const struct iface *ifc, int family)
{
    return family == 4 ? ifc->n4 > 0 : ifc->n6 > 0;
}

static inline void set_dest_mcast(struct mdns_packet *p, int ifindex, int family)
{
    memset(&p->dest, 0, sizeof(p->dest));
    p->dest.ifindex = ifindex;
    p->dest.family = family;
    p->dest.multicast = true;
}

static inline void mdns_earliest(uint64_t *best, uint64_t t)
{
    if (t && t < *best)
        *best = t;
}

/* ---- engine.c (also mdns_core_pop_packet, mdns_core_announced, mdns_presence_tag: core.h) ---- */

/* The next free slot of the output queue, or NULL (then counted as dropped). */
struct mdns_packet *mdns_out_slot(struct mdns_core *c);
/* Queues the slot returned by mdns_out_slot. */
void mdns_out_commit(struct mdns_core *c);
struct iface *mdns_iface_find(struct mdns_core *c, int ifindex);
/* The contacts-only epoch (wall clock / MDNS_EPOCH_MS) at monotonic |now|. */
uint64_t mdns_epoch_of(const struct mdns_core *c, uint64_t now);

/* ---- responder.c ---- */

void mdns_random_label(char *out, const char *prefix);
void mdns_set_names(struct mdns_core *c, const char *host_label);
/* Probing starts after |delay| ms. */
void mdns_start_probing(struct mdns_core *c, uint64_t now, uint64_t delay);
/* Contacts-only: new random instance, host, nonce and tag. */
void mdns_rotate_private(struct mdns_core *c, uint64_t now);
/* TTL 0 for all our records on every interface (when announced). */
void mdns_goodbye_all(struct mdns_core *c, uint64_t now);
/* TTL 0 for the addresses of |old| missing from the new set. */
void mdns_goodbye_removed(struct mdns_core *c, const struct iface *old, const uint8_t (*a4)[4],
                          size_t n4, const uint8_t (*a6)[16], size_t n6);
void mdns_rename_after_conflict(struct mdns_core *c, uint64_t now);
/*
 * Another host's response conflicts with our unique records (§9): while
 * probing, rename and probe again; once announced, probe again under the
 * same name first (the conflict may be stale), renaming only if a probe
 * then meets a conflict.
 */
void mdns_conflict(struct mdns_core *c, uint64_t now);
/*
 * Answers a query (and settles rival probes) received on |ifc|. Returns true
 * when another host asked our browse question, its known answers in
 * |*browse_known| (for mdns_querier_saw_query).
 */
bool mdns_responder_query(struct mdns_core *c, struct rx *x, struct iface *ifc, int family,
                          const uint8_t *src, uint16_t src_port, uint64_t now,
                          unsigned *browse_known);
/* A record from another responder: true when it conflicts with our names. */
bool mdns_responder_saw_record(struct mdns_core *c, struct iface *ifc, int family,
                               const struct dns_rr *rr);
/* Probing, announcing, epoch rotation and delayed answers due at |now|. */
void mdns_responder_timer(struct mdns_core *c, uint64_t now);

/* ---- querier.c ---- */

void mdns_cache_add(struct mdns_core *c, const struct dns_rr *rr, int ifindex, int family,
                    uint64_t now);
uint64_t mdns_refresh_at(const struct centry *e);
/* Brings browse views up to date and delivers events. */
void mdns_update_views(struct mdns_core *c, uint64_t now);
/* Another host asked our browse question knowing |known| answers (§7.3). */
void mdns_querier_saw_query(struct mdns_core *c, struct iface *ifc, int family, unsigned known,
                            uint64_t now);
/* Drops what was cached from |ifindex| over |family| (4 or 6): that link is gone. */
void mdns_querier_forget(struct mdns_core *c, int ifindex, int family);
/* Browse queries, cache expiry and refresh, resolving, due at |now|. */
void mdns_querier_timer(struct mdns_core *c, uint64_t now);
/* Lowers |*best| to the querier's next deadline. */
void mdns_querier_deadline(const struct mdns_core *c, uint64_t *best);

#endif
