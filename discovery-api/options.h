/*
 * Settings of pos-discovery from its command line and an optional JSON
 * configuration file (same names: listen, redis, secret_file, ttl,
 * tls_cert, tls_key, prefix, threads, max_connections,
 * max_connections_per_client, request_timeout, spacedrive_ttl). The command line overrides the
 * file;
 * the file overrides the defaults. Everything is validated here, before
 * anything starts, with errors naming the option or the file and key.
 */
#ifndef POS_DISCOVERY_OPTIONS_H
#define POS_DISCOVERY_OPTIONS_H

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "addr.h"
#include "redis.h"

#define POS_DISCOVERY_DEFAULT_LISTEN "127.0.0.1:8080"
#define POS_DISCOVERY_DEFAULT_TTL 30
/* Spacedrive relays re-register every 540 s: 600 s keeps them listed throughout. */
#define POS_DISCOVERY_DEFAULT_SPACEDRIVE_TTL 600
#define POS_DISCOVERY_DEFAULT_THREADS 2
#define POS_DISCOVERY_DEFAULT_MAX_CONNECTIONS 1024
#define POS_DISCOVERY_DEFAULT_MAX_PER_CLIENT 64
#define POS_DISCOVERY_DEFAULT_REQUEST_TIMEOUT 10
#define POS_DISCOVERY_PATH_MAX 1024

typedef struct pos_discovery_options {
    char listen[POS_ADDR_STRLEN];
    struct sockaddr_storage listen_addr;
    pos_redis_target redis;
    char prefix[64];
    char secret_file[POS_DISCOVERY_PATH_MAX]; /* empty: take POS_P2P_SECRET */
    char tls_cert[POS_DISCOVERY_PATH_MAX];    /* both empty: plain HTTP */
    char tls_key[POS_DISCOVERY_PATH_MAX];
    unsigned ttl_s;            /* of registrations with a base64 peer id */
    unsigned spacedrive_ttl_s; /* of registrations with a libp2p PeerId (Spacedrive relays) */
    unsigned threads;
    unsigned max_connections;            /* open connections in all */
    unsigned max_connections_per_client; /* from one IPv4 address or IPv6 /64 */
    unsigned request_timeout_s;          /* to deliver a whole request */
} pos_discovery_options;

/* Results of pos_discovery_options_parse. */
#define POS_OPTIONS_RUN 0
#define POS_OPTIONS_HELP 1 /* --help was printed: exit 0 */
#define POS_OPTIONS_ERR -1 /* |err| says what is wrong: exit non-zero */

/*
 * pos_discovery_options_parse fills |o| from |argv| and the file named by
 * --config. Returns one of the results above.
 */
int pos_discovery_options_parse(int argc, char **argv, pos_discovery_options *o, char *err,
                                size_t errlen);

/* pos_discovery_usage prints the --help text. */
void pos_discovery_usage(FILE *out);

#endif
