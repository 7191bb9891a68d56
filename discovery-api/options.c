/*
 * Command line and configuration file of pos-discovery (see options.h).
 * Each setting is first collected as text with where it came from (an
 * option, a file key, or the default), then validated once, so the error
 * names exactly what the user wrote.
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

enum setting_id {
    SET_LISTEN,
    SET_REDIS,
    SET_SECRET_FILE,
    SET_TTL,
    SET_TLS_CERT,
    SET_TLS_KEY,
    SET_PREFIX,
    SET_THREADS,
    SET_MAX_CONNECTIONS,
    SET_MAX_PER_CLIENT,
    SET_REQUEST_TIMEOUT,
    SET_SPACEDRIVE_TTL,
    SET_COUNT
};

/* Config keys, in enum order; the command-line option is the key with '-' for '_'. */
static const char *const keys[SET_COUNT + 1] = {"listen",
                                                "redis",
                                                "secret_file",
                                                "ttl",
                                                "tls_cert",
                                                "tls_key",
                                                "prefix",
                                                "threads",
                                                "max_connections",
                                                "max_connections_per_client",
                                                "request_timeout",
                                                "spacedrive_ttl",
                                                NULL};

/* The numeric settings and their ranges (a 0 maximum: not numeric). */
static const struct {
    unsigned min, max;
} ranges[SET_COUNT] = {
    [SET_TTL] = {1, 86400},
    [SET_THREADS] = {1, 16},
    [SET_MAX_CONNECTIONS] = {16, 65536},
    [SET_MAX_PER_CLIENT] = {1, 65536},
    [SET_REQUEST_TIMEOUT] = {1, 300},
    [SET_SPACEDRIVE_TTL] = {1, 86400},
};

typedef struct setting {
    const char *value;
    char where[POS_DISCOVERY_PATH_MAX + 64]; /* "option --ttl" or "FILE: key \"ttl\"" */
    char number[24];                         /* text of an integer read from the file */
} setting;

void pos_discovery_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-discovery [--listen ADDR:PORT] [--redis URL] [--secret-file FILE]\n"
            "                     [--ttl SECONDS] [--config FILE] [--tls-cert F --tls-key F]\n"
            "                     [--prefix P] [--threads N] [--max-connections N]\n"
            "                     [--max-connections-per-client N] [--request-timeout S]\n"
            "                     [--spacedrive-ttl SECONDS]\n\n"
            "Serves the relay list (GET /api/p2p/relays) and lets relays register in it\n"
            "(POST, DELETE with Authorization: Bearer <p2p secret>); entries live in Redis\n"
            "under a TTL.\n\n"
            "  --listen ADDR:PORT  address to listen on (default %s)\n"
            "  --redis URL         redis://HOST[:PORT][/DB] or unix:///path (default %s)\n"
            "  --secret-file FILE  file whose first line is the p2p secret; without it the\n"
            "                      secret comes from the environment variable POS_P2P_SECRET\n"
            "  --ttl SECONDS       lifetime of a registration, 1-86400 (default %d)\n"
            "  --spacedrive-ttl SECONDS\n"
            "                      lifetime of a registration whose peer_id is a libp2p\n"
            "                      PeerId (a Spacedrive relay, which re-registers every\n"
            "                      540 s), 1-86400 (default %d)\n"
            "  --config FILE       JSON file with the same settings (listen, redis,\n"
            "                      secret_file, ttl, tls_cert, tls_key, prefix, threads,\n"
            "                      max_connections, max_connections_per_client,\n"
            "                      request_timeout, spacedrive_ttl);\n"
            "                      options given here override it\n"
            "  --tls-cert FILE     PEM certificate: serve HTTPS (needs --tls-key)\n"
            "  --tls-key FILE      PEM private key of that certificate\n"
            "  --prefix P          Redis key prefix (default %s)\n"
            "  --threads N         HTTP worker threads, 1-16 (default %d)\n"
            "  --max-connections N open HTTP connections in all, 16-65536 (default %d)\n"
            "  --max-connections-per-client N\n"
            "                      connections from one IPv4 address or one IPv6 /64,\n"
            "                      1 to --max-connections (default %d)\n"
            "  --request-timeout S seconds a client has to send a whole request, 1-300\n"
            "                      (default %d)\n"
            "  --help              show this help\n\n"
            "Log level: POS_LOG=error|warn|info|debug. Stops cleanly on SIGINT or SIGTERM.\n",
            POS_DISCOVERY_DEFAULT_LISTEN, POS_REDIS_DEFAULT_URL, POS_DISCOVERY_DEFAULT_TTL,
            POS_DISCOVERY_DEFAULT_SPACEDRIVE_TTL, POS_REDIS_DEFAULT_PREFIX,
            POS_DISCOVERY_DEFAULT_THREADS, POS_DISCOVERY_DEFAULT_MAX_CONNECTIONS,
            POS_DISCOVERY_DEFAULT_MAX_PER_CLIENT, POS_DISCOVERY_DEFAULT_REQUEST_TIMEOUT);
}

/* read_cli collects option values; returns the --config path through |config|. */
static int read_cli(int argc, char **argv, setting *set, const char **config, char *err,
                    size_t errlen)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, SET_LISTEN},
        {"redis", required_argument, NULL, SET_REDIS},
        {"secret-file", required_argument, NULL, SET_SECRET_FILE},
        {"ttl", required_argument, NULL, SET_TTL},
        {"tls-cert", required_argument, NULL, SET_TLS_CERT},
        {"tls-key", required_argument, NULL, SET_TLS_KEY},
        {"prefix", required_argument, NULL, SET_PREFIX},
        {"threads", required_argument, NULL, SET_THREADS},
        {"max-connections", required_argument, NULL, SET_MAX_CONNECTIONS},
        {"max-connections-per-client", required_argument, NULL, SET_MAX_PER_CLIENT},
        {"request-timeout", required_argument, NULL, SET_REQUEST_TIMEOUT},
        {"spacedrive-ttl", required_argument, NULL, SET_SPACEDRIVE_TTL},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
        if (c == 'h')
            return POS_OPTIONS_HELP;
        if (c == 'c') {
            *config = optarg;
        } else if (c >= 0 && c < SET_COUNT) {
            set[c].value = optarg;
            snprintf(set[c].where, sizeof(set[c].where), "option --%s", longopts[li].name);
        } else {
            snprintf(err, errlen, "unknown or incomplete option \"%s\" (see --help)",
                     argv[optind - 1]);
            return POS_OPTIONS_ERR;
        }
    }
    if (optind != argc) {
        snprintf(err, errlen, "unexpected argument \"%s\" (see --help)", argv[optind]);
        return POS_OPTIONS_ERR;
    }
    return POS_OPTIONS_RUN;
}

static int read_config_key(const pos_config *cfg, int id, setting *s, char *err, size_t errlen)
{
    int rc;
    if (ranges[id].max) {
        long long v;
        rc = pos_config_int(cfg, keys[id], 0, ranges[id].min, ranges[id].max, &v, err, errlen);
        if (rc == 0) {
            snprintf(s->number, sizeof(s->number), "%lld", v);
            s->value = s->number;
        }
    } else {
        rc =
            pos_config_string(cfg, keys[id], 0, POS_DISCOVERY_PATH_MAX - 1, &s->value, err, errlen);
    }
    if (rc == 0)
        snprintf(s->where, sizeof(s->where), "%s: key \"%s\"", cfg->path, keys[id]);
    return rc < 0 ? -1 : 0;
}

/* read_config fills the settings the command line left unset. |cfg| stays loaded. */
static int read_config(pos_config *cfg, const char *path, setting *set, char *err, size_t errlen)
{
    if (pos_config_load(cfg, path, err, errlen) != 0)
        return -1;
    if (pos_config_check_keys(cfg, keys, err, errlen) != 0)
        return -1;
    for (int id = 0; id < SET_COUNT; id++) {
        setting from_file = {0};
        if (read_config_key(cfg, id, &from_file, err, errlen) != 0)
            return -1;
        if (!set[id].value && from_file.value)
            set[id] = from_file;
        if (set[id].value == from_file.number)
            set[id].value = set[id].number;
    }
    return 0;
}

static int bad(const setting *s, const char *expected, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: expected %s", s->where, expected);
    return -1;
}

static int parse_uint(const setting *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s->value, &end, 10);
    if (errno || end == s->value || *end || s->value[0] == '-' || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int copy_path(const setting *s, char *out, size_t outlen, char *err, size_t errlen)
{
    if (!s->value)
        return 0;
    if (!s->value[0] || strlen(s->value) >= outlen)
        return bad(s, "a file path", err, errlen);
    snprintf(out, outlen, "%s", s->value);
    return 0;
}

static int valid_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= ' ' || p[i] > '~')
            return 0;
    return 1;
}

static int apply_network(const setting *set, pos_discovery_options *o, char *err, size_t errlen)
{
    const char *listen = set[SET_LISTEN].value;
    if (pos_addr_parse(listen, strlen(listen), 0, &o->listen_addr) != 0)
        return bad(&set[SET_LISTEN],
                   "ADDR:PORT with a numeric IP (IPv6 in brackets) and a port from 1 to 65535", err,
                   errlen);
    snprintf(o->listen, sizeof(o->listen), "%s", listen);
    char rerr[POS_ERR_LEN];
    if (pos_redis_url_parse(set[SET_REDIS].value, &o->redis, rerr, sizeof(rerr)) != 0) {
        snprintf(err, errlen, "%s: %s", set[SET_REDIS].where, rerr);
        return -1;
    }
    if (!valid_prefix(set[SET_PREFIX].value))
        return bad(&set[SET_PREFIX], "1 to 32 printable characters without spaces", err, errlen);
    snprintf(o->prefix, sizeof(o->prefix), "%s", set[SET_PREFIX].value);
    return 0;
}

static int apply(const setting *set, pos_discovery_options *o, char *err, size_t errlen)
{
    if (apply_network(set, o, err, errlen) != 0)
        return -1;
    if (parse_uint(&set[SET_TTL], 1, 86400, &o->ttl_s) != 0)
        return bad(&set[SET_TTL], "a number of seconds from 1 to 86400", err, errlen);
    if (parse_uint(&set[SET_SPACEDRIVE_TTL], 1, 86400, &o->spacedrive_ttl_s) != 0)
        return bad(&set[SET_SPACEDRIVE_TTL], "a number of seconds from 1 to 86400", err, errlen);
    if (parse_uint(&set[SET_THREADS], 1, 16, &o->threads) != 0)
        return bad(&set[SET_THREADS], "a number of threads from 1 to 16", err, errlen);
    if (parse_uint(&set[SET_MAX_CONNECTIONS], 16, 65536, &o->max_connections) != 0)
        return bad(&set[SET_MAX_CONNECTIONS], "a number of connections from 16 to 65536", err,
                   errlen);
    if (parse_uint(&set[SET_MAX_PER_CLIENT], 1, o->max_connections,
                   &o->max_connections_per_client) != 0) {
        char what[96];
        snprintf(what, sizeof(what), "a number of connections from 1 to max_connections (%u)",
                 o->max_connections);
        return bad(&set[SET_MAX_PER_CLIENT], what, err, errlen);
    }
    if (parse_uint(&set[SET_REQUEST_TIMEOUT], 1, 300, &o->request_timeout_s) != 0)
        return bad(&set[SET_REQUEST_TIMEOUT], "a number of seconds from 1 to 300", err, errlen);
    if (copy_path(&set[SET_SECRET_FILE], o->secret_file, sizeof(o->secret_file), err, errlen) ||
        copy_path(&set[SET_TLS_CERT], o->tls_cert, sizeof(o->tls_cert), err, errlen) ||
        copy_path(&set[SET_TLS_KEY], o->tls_key, sizeof(o->tls_key), err, errlen))
        return -1;
    if (!o->tls_cert[0] != !o->tls_key[0]) {
        snprintf(err, errlen,
                 "HTTPS needs both a certificate and its key: give --tls-cert "
                 "and --tls-key (or tls_cert and tls_key) together");
        return -1;
    }
    return 0;
}

static void set_default(setting *s, const char *value)
{
    if (s->value)
        return;
    s->value = value;
    snprintf(s->where, sizeof(s->where), "default");
}

int pos_discovery_options_parse(int argc, char **argv, pos_discovery_options *o, char *err,
                                size_t errlen)
{
    setting set[SET_COUNT];
    const char *config = NULL;
    pos_config cfg = {0};
    char ttl[16], threads[16], maxconn[16], perclient[16], reqtimeout[16], spacedrive_ttl[16];

    memset(o, 0, sizeof(*o));
    memset(set, 0, sizeof(set));
    int rc = read_cli(argc, argv, set, &config, err, errlen);
    if (rc != POS_OPTIONS_RUN)
        return rc;
    if (config && read_config(&cfg, config, set, err, errlen) != 0) {
        pos_config_free(&cfg);
        return POS_OPTIONS_ERR;
    }
    snprintf(ttl, sizeof(ttl), "%d", POS_DISCOVERY_DEFAULT_TTL);
    snprintf(threads, sizeof(threads), "%d", POS_DISCOVERY_DEFAULT_THREADS);
    set_default(&set[SET_LISTEN], POS_DISCOVERY_DEFAULT_LISTEN);
    set_default(&set[SET_REDIS], POS_REDIS_DEFAULT_URL);
    set_default(&set[SET_TTL], ttl);
    snprintf(spacedrive_ttl, sizeof(spacedrive_ttl), "%d", POS_DISCOVERY_DEFAULT_SPACEDRIVE_TTL);
    set_default(&set[SET_SPACEDRIVE_TTL], spacedrive_ttl);
    set_default(&set[SET_PREFIX], POS_REDIS_DEFAULT_PREFIX);
    set_default(&set[SET_THREADS], threads);
    snprintf(maxconn, sizeof(maxconn), "%d", POS_DISCOVERY_DEFAULT_MAX_CONNECTIONS);
    snprintf(perclient, sizeof(perclient), "%d", POS_DISCOVERY_DEFAULT_MAX_PER_CLIENT);
    snprintf(reqtimeout, sizeof(reqtimeout), "%d", POS_DISCOVERY_DEFAULT_REQUEST_TIMEOUT);
    set_default(&set[SET_MAX_CONNECTIONS], maxconn);
    set_default(&set[SET_MAX_PER_CLIENT], perclient);
    set_default(&set[SET_REQUEST_TIMEOUT], reqtimeout);
    rc = apply(set, o, err, errlen) == 0 ? POS_OPTIONS_RUN : POS_OPTIONS_ERR;
    pos_config_free(&cfg); /* the settings pointed into it until now */
    return rc;
}
