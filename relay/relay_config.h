/*
 * The relay's configuration file (written by `pos-relay init`, read by every
 * other subcommand). JSON, mode 0600, keys:
 *   id            relay id, UUID v4                          (required)
 *   identity      the relay's Ed25519 key, base64 seed       (required, secret)
 *   p2p_secret    bearer secret for the discovery API        (required, secret)
 *   api_url       discovery API base URL, e.g. http://127.0.0.1:8080 (optional)
 *   port          UDP port, default 7373                      (optional)
 *   redis         Redis URL, default redis://127.0.0.1:6379   (optional)
 *   redis_prefix  key prefix, default "pos:"                  (optional)
 *   public_addrs  ["ip:port", ...] announced to the discovery API (optional)
 *   listen        ["ip:port", ...] addresses to bind, default 0.0.0.0 and :: on port (optional)
 *   http_listen   "ip:port" for /healthz and /metrics, default 127.0.0.1:(port+1) (optional)
 *   idle_timeout  seconds without traffic before a client is dropped, default 30 (optional)
 *   register_interval     seconds between registrations with the discovery API,
 *                         default 10 (a third of the API's 30 s TTL)   (optional)
 *   conn_rate_per_addr    connection attempts per second allowed per source address
 *                         (IPv6: per /64), shared by all relays on the Redis; 0 = no
 *                         limit; default 20                            (optional)
 *   conn_burst_per_addr   bucket size for the above, default 2 x the rate (optional)
 *   conn_rate_per_token   connection attempts per second per token, default 20 (optional)
 *   conn_burst_per_token  bucket size for the above, default 2 x the rate (optional)
 *   max_circuits          circuits open at once on this relay (the table, allocated at
 *                         start), default 16384                       (optional)
 *   max_circuits_per_conn circuits one control connection may have open, 0 = no cap,
 *                         default max_circuits / 64 (256)             (optional)
 *   max_circuits_per_token circuits open on this relay with a side of one token (all
 *                         its connections here), 0 = no cap, default
 *                         max_circuits / 16 (1024)                    (optional)
 *   max_conns_per_token   connection cap of a token that sets none (token add
 *                         --max-conns), counted like the token's own, 0 = no cap,
 *                         default 64                                  (optional)
 *   max_pending_per_addr  handshakes in progress per Retry-validated source address
 *                         (IPv6: per /64), 1..65535, default 16  (optional)
 *   retry_above           handshakes in progress above which an Initial must answer a
 *                         Retry first, 0..1000000, 0 = always, default 256 (optional)
 *   gso                   send forwarded frames with UDP GSO where the kernel has it,
 *                         true/false, default true                    (optional)
 *   quic_fallback         hand data frames the forwarder rejects to the QUIC
 *                         connection lookup (peers that grease the QUIC bit),
 *                         true/false, default false                   (optional)
 *   punch                 coordinate hole punching between two pos-relay/2 sides of a
 *                         circuit (PUNCH_START), true/false, default true (optional)
 *   punch_min_interval_ms least time between two punch attempts on one circuit (a
 *                         PUNCH_REQUEST sooner is ignored), 100..3600000, default 5000
 *                                                                     (optional)
 *   ticket_lifetime       seconds a TLS session ticket lets a returning client resume,
 *                         0..604800, 0 = no tickets (every handshake full), default
 *                         21600                                       (optional)
 *   workers               threads serving the one UDP port (SO_REUSEPORT, steered by
 *                         connection id and circuit id), 1..64, default the online
 *                         CPUs (at most 64)                            (optional)
 *   park_lifetime         seconds a parked client's record lives after its last valid
 *                         keep-alive, 0..86400, 0 = parking off (PARK refused), default
 *                         120                                         (optional)
 *   park_keepalive        seconds between a parked client's keep-alives (told in PARKED),
 *                         1..3600, less than half of park_lifetime, default 25 (optional)
 *   max_parked            parked records at once, 1..16777216, default 1000000 (optional)
 */
#ifndef POS_RELAY_CONFIG_H
#define POS_RELAY_CONFIG_H

#include <stddef.h>

#include "addr.h"
#include "config.h"
#include "identity.h"
#include "redis.h"
#include "uuid.h"

#define RELAY_MAX_ADDRS 16
#define RELAY_MAX_WORKERS 64

typedef struct relay_config {
    char path[1024];
    char id[POS_UUID_STRLEN];
    pos_identity identity;
    char *p2p_secret;  /* heap, wiped on free */
    char api_url[512]; /* "" when none */
    unsigned port;
    char redis_url[600];
    pos_redis_target redis;
    char redis_prefix[64];
    char public_addrs[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_public_addrs;
    char listen[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_listen;
    char http_listen[POS_ADDR_STRLEN];
    unsigned idle_timeout_s;
    unsigned register_interval_s; /* 0 never: default 10 */
    unsigned conn_rate_per_addr;  /* attempts/s, 0 = unlimited */
    unsigned conn_burst_per_addr;
    unsigned conn_rate_per_token;
    unsigned conn_burst_per_token;
    unsigned max_circuits;           /* circuit table size */
    unsigned max_circuits_per_conn;  /* 0 = no cap */
    unsigned max_circuits_per_token; /* 0 = no cap */
    unsigned max_conns_per_token;    /* for tokens without max_conns; 0 = no cap */
    unsigned max_pending_per_addr;   /* validated handshakes per address (docs/relay.md) */
    unsigned retry_above;            /* pending handshakes above which Initials must Retry */
    int gso;                         /* forwarder sends with UDP GSO */
    int quic_fallback;               /* rejected data frames go to the connection lookup */
    int punch;                       /* send PUNCH_START to v2 circuits (default on) */
    unsigned punch_min_interval_ms;  /* least time between two attempts on one circuit */
    unsigned ticket_lifetime_s;      /* TLS session tickets; 0 = none */
    unsigned workers;                /* threads on the UDP port (1: no threads) */
    unsigned park_lifetime_s;        /* parked record lifetime; 0 = parking off */
    unsigned park_keepalive_s;       /* keep-alive interval told in PARKED */
    unsigned max_parked;             /* parked records at once */
} relay_config;

/*
 * relay_config_load reads and validates |path|. With POS_DOCKER=true in the
 * environment the port is forced to 7373. Returns 0, or a negative
 * POS_CONFIG_ERR_* with the sentence (file, key, expectation) in |err|.
 */
int relay_config_load(relay_config *cfg, const char *path, char *err, size_t errlen);

/*
 * relay_config_default_path: the config path when none is given on the
 * command line: $POS_RELAY_CONFIG, else "./config.json".
 */
const char *relay_config_default_path(void);

/* relay_config_free wipes the secrets. */
void relay_config_free(relay_config *cfg);

#endif
