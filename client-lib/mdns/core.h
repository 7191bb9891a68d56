/*
 * The sans-I/O mDNS / DNS-SD engine: responder (probe, announce, answer,
 * goodbye) and querier (browse with back-off, cache, resolve, events) for
 * the service _sd._udp.local. It never touches a socket or a clock: the
 * caller feeds it received packets with their interface and source, the
 * interface set, and timestamps (monotonic milliseconds); it queues packets
 * to send, each with its destination, and tells the next deadline. Events
 * (found / updated / lost) are delivered through a callback during
 * mdns_core_receive / mdns_core_timeout.
 *
 * Bounds: MDNS_MAX_IFACES interfaces, MDNS_MAX_CACHE cached records (the
 * one expiring first is evicted when full), MDNS_MAX_VIEWS browsed
 * instances (new ones ignored when full), MDNS_MAX_OUT queued packets
 * (new ones dropped when full, counted in out_dropped).
 */
#ifndef POS_MDNS_CORE_H
#define POS_MDNS_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "pos/mdns.h"

#define MDNS_PORT 5353
#define MDNS_MAX_IFACES 16
#define MDNS_MAX_ADDRS 8 /* per family per interface */
#define MDNS_MAX_CACHE 512
#define MDNS_MAX_VIEWS 64
#define MDNS_MAX_OUT 64
#define MDNS_MAX_CONTACTS 256
#define MDNS_PACKET_MAX 1400
#define MDNS_TXT_MAX 1300

#define MDNS_TTL_HOST 120   /* SRV, A, AAAA (RFC 6762 §10) */
#define MDNS_TTL_OTHER 4500 /* PTR, TXT */
#define MDNS_EPOCH_MS (15 * 60 * 1000)

/*
 * The structs below are defined here because mdns.c, the engine's I/O
 * layer, reads the packets the engine queues and fills its configuration.
 */
struct mdns_dest {
    int ifindex;
    int family; /* 4 or 6 */
    bool multicast;
    uint8_t addr[16]; /* unicast only: 4 or 16 bytes */
    uint16_t port;    /* unicast only */
};

struct mdns_packet {
    struct mdns_dest dest;
    size_t len;
    uint8_t data[MDNS_PACKET_MAX];
};

struct mdns_core_config {
    enum pos_mdns_mode mode;
    bool advertise;
    bool browse;
    char instance[DNS_MAX_LABEL + 1]; /* enabled mode: the peer id */
    uint8_t txt[MDNS_TXT_MAX];        /* enabled mode: TXT rdata */
    size_t txt_len;
    uint16_t port;
    uint8_t presence_key[32]; /* contacts-only: our own presence key */
    int64_t wall_offset_ms;   /* wall clock = monotonic + this (epochs) */
    bool no_qu;               /* never ask for unicast replies: port 5353 is shared here */
};

struct mdns_core;

typedef void (*mdns_event_fn)(void *user, enum pos_mdns_event ev, const pos_mdns_peer *peer);

/* mdns_core_new: NULL when out of memory. |cfg| is copied. */
struct mdns_core *mdns_core_new(const struct mdns_core_config *cfg, mdns_event_fn cb, void *user,
                                uint64_t now);
void mdns_core_del(struct mdns_core *c);

/*
 * mdns_core_txt_build encodes TXT strings ("key=value") into |out|.
 * Returns the length, or POS_P2P_ERR_MDNS_TXT when a string is empty or
 * longer than 255 bytes or the whole is longer than MDNS_TXT_MAX.
 */
int mdns_core_txt_build(const char *const *strings, size_t n, uint8_t *out, size_t cap);

/*
 * mdns_core_add_contact: recognise advertisements tagged with |key|
 * (contacts-only mode) and report them with |peer_id|. Returns 0,
 * POS_P2P_ERR_INVALID_ARGUMENT or POS_P2P_ERR_MDNS_FULL.
 */
int mdns_core_add_contact(struct mdns_core *c, const char *peer_id, const uint8_t key[32]);

/*
 * mdns_core_set_txt replaces the TXT rdata (enabled mode) and announces it
 * (cache-flush replaces the old data). Returns 0 or POS_P2P_ERR_MDNS_TXT.
 */
int mdns_core_set_txt(struct mdns_core *c, const uint8_t *txt, size_t len, uint64_t now);

/*
 * mdns_core_iface_update sets the addresses of interface |ifindex| (|a4|:
 * |n4| IPv4 addresses, |a6|: |n6| IPv6 addresses); with n4 = n6 = 0 the
 * interface is removed. Address changes re-announce (and in contacts-only
 * mode rotate the advertisement). Returns 0 or POS_P2P_ERR_MDNS_FULL.
 */
int mdns_core_iface_update(struct mdns_core *c, int ifindex, const uint8_t (*a4)[4], size_t n4,
                           const uint8_t (*a6)[16], size_t n6, uint64_t now);

/*
 * mdns_core_receive handles one datagram received on |ifindex| from
 * |src_family| (4 or 6) address |src| port |src_port|. Malformed packets
 * are dropped whole; returns 0 or the codec error.
 */
int mdns_core_receive(struct mdns_core *c, const uint8_t *data, size_t len, int ifindex,
                      int src_family, const uint8_t *src, uint16_t src_port, uint64_t now);

/* mdns_core_timeout runs every timer due at |now|. */
void mdns_core_timeout(struct mdns_core *c, uint64_t now);

/* mdns_core_next_deadline: the earliest timer, or UINT64_MAX. */
uint64_t mdns_core_next_deadline(const struct mdns_core *c);

/* mdns_core_pop_packet: the oldest queued packet (valid until the next call), or NULL. */
const struct mdns_packet *mdns_core_pop_packet(struct mdns_core *c);

/* mdns_core_stop queues goodbyes (TTL 0) for every advertised record and stops. */
void mdns_core_stop(struct mdns_core *c, uint64_t now);

/* mdns_core_instance: the current instance label ("" when not advertising). */
const char *mdns_core_instance(const struct mdns_core *c);

/* mdns_core_announced: 1 once probing succeeded and announcing began. */
int mdns_core_announced(const struct mdns_core *c);

/* mdns_core_out_dropped: packets dropped because the queue was full. */
unsigned mdns_core_out_dropped(const struct mdns_core *c);

/*
 * mdns_presence_tag computes the 16-byte tag of |nonce| (16 bytes) for
 * |epoch| under |key| (contacts-only mode; see docs/mdns.md).
 */
void mdns_presence_tag(const uint8_t key[32], uint64_t epoch, const uint8_t nonce[16],
                       uint8_t tag[16]);

#endif
