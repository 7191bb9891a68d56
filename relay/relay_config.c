/*
 * Reading and validating the relay's configuration file (see relay_config.h).
 * Every problem stops the load with one sentence naming the file, the key and
 * what was expected; unknown keys are refused so that a typo never silently
 * falls back to a default. Secrets (identity, p2p_secret) are copied out of
 * the JSON document and the document is freed before returning.
 */
#include "relay_config.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "secret.h"

#define DEFAULT_PORT 7373
#define DEFAULT_IDLE_TIMEOUT_S 30
#define DEFAULT_REGISTER_INTERVAL_S 10
#define DEFAULT_CONN_RATE 20
#define DEFAULT_MAX_CIRCUITS 16384
#define MAX_MAX_CIRCUITS 1048576 /* RELAY_CIRCUIT_MAX_CAPACITY */
#define DEFAULT_MAX_CONNS_PER_TOKEN 64
#define DEFAULT_MAX_PENDING_PER_ADDR 16
#define DEFAULT_RETRY_ABOVE 256 /* pending handshakes above which Initials must Retry */
#define MAX_SECRET_LEN 4096
#define DEFAULT_PUNCH_MIN_INTERVAL_MS 5000 /* between two punch attempts on one circuit */
#define DEFAULT_TICKET_LIFETIME_S 21600    /* TLS session tickets: 6 hours, GnuTLS's default */
#define DEFAULT_PARK_LIFETIME_S 120        /* a parked record without keep-alive lives this long */
#define DEFAULT_PARK_KEEPALIVE_S 25        /* the keep-alive interval PARKED asks for */
#define DEFAULT_MAX_PARKED 1000000         /* parked records at once */
#define MAX_MAX_PARKED 16777216            /* 2^24: the record ids keep room for a generation */
#define MAX_TICKET_LIFETIME_S 604800       /* 7 days, TLS 1.3's limit (RFC 8446 4.6.1) */

static const char *const known_keys[] = {
    "id",
    "identity",
    "p2p_secret",
    "api_url",
    "port",
    "redis",
    "redis_prefix",
    "public_addrs",
    "listen",
    "http_listen",
    "idle_timeout",
    "register_interval",
    "conn_rate_per_addr",
    "conn_burst_per_addr",
    "conn_rate_per_token",
    "conn_burst_per_token",
    "max_circuits",
    "max_circuits_per_conn",
    "max_circuits_per_token",
    "max_conns_per_token",
    "max_pending_per_addr",
    "retry_above",
    "gso",
    "quic_fallback",
    "punch",
    "punch_min_interval_ms",
    "ticket_lifetime",
    "workers",
    "park_lifetime",
    "park_keepalive",
    "max_parked",
    NULL,
};

const char *relay_config_default_path(void)
{
    const char *env = getenv("POS_RELAY_CONFIG");
    return env && *env ? env : "config.json";
}

static int load_identity(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    static const char expected[] = "the relay's identity key (43 base64 characters, as written "
                                   "by pos-relay init)";
    const char *text;
    if (!json_object_get(c->root, "identity")) {
        snprintf(err, errlen, "%s: key \"identity\" is missing: expected %s", c->path, expected);
        return POS_CONFIG_ERR_VALUE;
    }
    int rc = pos_config_string(c, "identity", 1, 64, &text, err, errlen);
    if (rc != 0)
        return pos_config_value_error(c, "identity", expected, err, errlen);
    if (pos_identity_from_text(&cfg->identity, text, strlen(text)) != 0)
        return pos_config_value_error(c, "identity", expected, err, errlen);
    return 0;
}

static int load_url_keys(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    const char *s = NULL;
    int rc = pos_config_string(c, "api_url", 0, sizeof(cfg->api_url) - 1, &s, err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
            return pos_config_value_error(
                c, "api_url", "an http:// or https:// URL such as http://127.0.0.1:8080", err,
                errlen);
        snprintf(cfg->api_url, sizeof(cfg->api_url), "%s", s);
        /* A trailing slash would make ".../" + "/api/..." */
        size_t n = strlen(cfg->api_url);
        while (n > 0 && cfg->api_url[n - 1] == '/')
            cfg->api_url[--n] = '\0';
    }

    s = POS_REDIS_DEFAULT_URL;
    rc = pos_config_string(c, "redis", 0, sizeof(cfg->redis_url) - 1, &s, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(cfg->redis_url, sizeof(cfg->redis_url), "%s", s);
    char why[POS_ERR_LEN];
    if (pos_redis_url_parse(cfg->redis_url, &cfg->redis, why, sizeof(why)) != 0)
        return pos_config_value_error(
            c, "redis", "redis://HOST[:PORT][/DB] or unix:///path/to/socket[?db=N] (DB 0-15)", err,
            errlen);

    s = POS_REDIS_DEFAULT_PREFIX;
    rc = pos_config_string(c, "redis_prefix", 0, sizeof(cfg->redis_prefix) - 1, &s, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(cfg->redis_prefix, sizeof(cfg->redis_prefix), "%s", s);
    return 0;
}

static int load_addr_list(const pos_config *c, const char *key, char (*out)[POS_ADDR_STRLEN],
                          size_t *n, char *err, size_t errlen)
{
    json_t *arr, *item;
    size_t i;
    int rc = pos_config_string_array(c, key, 0, RELAY_MAX_ADDRS, &arr, err, errlen);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    json_array_foreach(arr, i, item)
    {
        const char *s = json_string_value(item);
        size_t len = json_string_length(item);
        struct sockaddr_storage ss;
        if (len >= POS_ADDR_STRLEN || pos_addr_parse(s, len, 0, &ss) != 0)
            return pos_config_value_error(
                c, key, "an array of addresses \"ip:port\" or \"[ipv6]:port\"", err, errlen);
        pos_addr_format((struct sockaddr *)&ss, out[i], POS_ADDR_STRLEN);
    }
    *n = json_array_size(arr);
    return 0;
}

static int load_uint(const pos_config *c, const char *key, long long min, long long max,
                     unsigned def, unsigned *out, char *err, size_t errlen)
{
    long long v = def;
    int rc = pos_config_int(c, key, 0, min, max, &v, err, errlen);
    if (rc < 0)
        return rc;
    *out = (unsigned)v;
    return 0;
}

/*
 * The circuit table and the caps that keep one client or one token from
 * filling it. The per-connection and per-token defaults follow the table
 * (1/64 and 1/16 of it), so that with defaults one token holds less than
 * 1/8 of the table however many connections it has.
 */
static int load_circuit_limits(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int rc;
    if ((rc = load_uint(c, "max_circuits", 1, MAX_MAX_CIRCUITS, DEFAULT_MAX_CIRCUITS,
                        &cfg->max_circuits, err, errlen)) ||
        (rc = load_uint(c, "max_circuits_per_conn", 0, cfg->max_circuits,
                        cfg->max_circuits / 64 ? cfg->max_circuits / 64 : 1,
                        &cfg->max_circuits_per_conn, err, errlen)) ||
        (rc = load_uint(c, "max_circuits_per_token", 0, cfg->max_circuits,
                        cfg->max_circuits / 16 ? cfg->max_circuits / 16 : 1,
                        &cfg->max_circuits_per_token, err, errlen)) ||
        (rc = load_uint(c, "max_conns_per_token", 0, 1000000, DEFAULT_MAX_CONNS_PER_TOKEN,
                        &cfg->max_conns_per_token, err, errlen)))
        return rc;
    return 0;
}

/* The QUIC server's load and data-path switches (docs/relay.md). */
static int load_quic_knobs(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int gso = 1, fallback = 0;
    int rc = load_uint(c, "retry_above", 0, 1000000, DEFAULT_RETRY_ABOVE, &cfg->retry_above, err,
                       errlen);
    if (rc < 0)
        return rc;
    if ((rc = pos_config_bool(c, "gso", 0, &gso, err, errlen)) < 0 ||
        (rc = pos_config_bool(c, "quic_fallback", 0, &fallback, err, errlen)) < 0)
        return rc;
    cfg->gso = gso;
    cfg->quic_fallback = fallback;
    /* workers: threads on the one UDP port (relay/workers.h), default one per online CPU */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned def = cpus < 1 ? 1 : cpus > RELAY_MAX_WORKERS ? RELAY_MAX_WORKERS : (unsigned)cpus;
    return load_uint(c, "workers", 1, RELAY_MAX_WORKERS, def, &cfg->workers, err, errlen);
}

/* Hole punching (docs/protocol.md "Hole punching"): whether, and how often per circuit. */
static int load_punch(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int punch = 1;
    int rc = pos_config_bool(c, "punch", 0, &punch, err, errlen);
    if (rc < 0)
        return rc;
    cfg->punch = punch;
    return load_uint(c, "punch_min_interval_ms", 100, 3600000, DEFAULT_PUNCH_MIN_INTERVAL_MS,
                     &cfg->punch_min_interval_ms, err, errlen);
}

/* Parking (docs/protocol.md "Parking"): lifetime (0 = off), keep-alive interval, table size. */
static int load_park(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int rc;
    if ((rc = load_uint(c, "park_lifetime", 0, 86400, DEFAULT_PARK_LIFETIME_S,
                        &cfg->park_lifetime_s, err, errlen)) != 0 ||
        (rc = load_uint(c, "park_keepalive", 1, 3600, DEFAULT_PARK_KEEPALIVE_S,
                        &cfg->park_keepalive_s, err, errlen)) != 0 ||
        (rc = load_uint(c, "max_parked", 1, MAX_MAX_PARKED, DEFAULT_MAX_PARKED, &cfg->max_parked,
                        err, errlen)) != 0)
        return rc;
    /* two keep-alives may be lost before a record expires */
    if (cfg->park_lifetime_s && 2 * cfg->park_keepalive_s >= cfg->park_lifetime_s) {
        char expected[128];
        snprintf(expected, sizeof(expected),
                 "seconds from 1 to 3600, less than half of park_lifetime (%u)",
                 cfg->park_lifetime_s);
        return pos_config_value_error(c, "park_keepalive", expected, err, errlen);
    }
    return 0;
}

static int load_numbers(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int rc;
    if ((rc = load_uint(c, "port", 1, 65535, DEFAULT_PORT, &cfg->port, err, errlen)) ||
        (rc = load_uint(c, "idle_timeout", 1, 3600, DEFAULT_IDLE_TIMEOUT_S, &cfg->idle_timeout_s,
                        err, errlen)) ||
        (rc = load_uint(c, "register_interval", 1, 3600, DEFAULT_REGISTER_INTERVAL_S,
                        &cfg->register_interval_s, err, errlen)) ||
        (rc = load_uint(c, "conn_rate_per_addr", 0, 1000000, DEFAULT_CONN_RATE,
                        &cfg->conn_rate_per_addr, err, errlen)) ||
        (rc = load_uint(c, "conn_rate_per_token", 0, 1000000, DEFAULT_CONN_RATE,
                        &cfg->conn_rate_per_token, err, errlen)))
        return rc;
    if ((rc = load_uint(c, "conn_burst_per_addr", 1, 10000000, cfg->conn_rate_per_addr * 2,
                        &cfg->conn_burst_per_addr, err, errlen)) ||
        (rc = load_uint(c, "conn_burst_per_token", 1, 10000000, cfg->conn_rate_per_token * 2,
                        &cfg->conn_burst_per_token, err, errlen)))
        return rc;
    if ((rc = load_circuit_limits(cfg, c, err, errlen)) != 0)
        return rc;
    if ((rc = load_uint(c, "max_pending_per_addr", 1, 65535, DEFAULT_MAX_PENDING_PER_ADDR,
                        &cfg->max_pending_per_addr, err, errlen)))
        return rc;
    if ((rc = load_quic_knobs(cfg, c, err, errlen)) != 0)
        return rc;
    if ((rc = load_punch(cfg, c, err, errlen)) != 0 ||
        (rc = load_uint(c, "ticket_lifetime", 0, MAX_TICKET_LIFETIME_S, DEFAULT_TICKET_LIFETIME_S,
                        &cfg->ticket_lifetime_s, err, errlen)) != 0 ||
        (rc = load_park(cfg, c, err, errlen)) != 0)
        return rc;
    const char *docker = getenv("POS_DOCKER");
    if (docker && strcmp(docker, "true") == 0)
        cfg->port = DEFAULT_PORT; /* a container maps a fixed port (Spacedrive's SD_DOCKER) */
    return 0;
}

static int load_listen(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    int rc = load_addr_list(c, "listen", cfg->listen, &cfg->n_listen, err, errlen);
    if (rc != 0)
        return rc;
    const char *s = NULL;
    rc = pos_config_string(c, "http_listen", 0, POS_ADDR_STRLEN - 1, &s, err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        struct sockaddr_storage ss;
        if (pos_addr_parse(s, strlen(s), 0, &ss) != 0)
            return pos_config_value_error(
                c, "http_listen", "an address \"ip:port\" such as 127.0.0.1:7374", err, errlen);
        pos_addr_format((struct sockaddr *)&ss, cfg->http_listen, sizeof(cfg->http_listen));
    } else {
        snprintf(cfg->http_listen, sizeof(cfg->http_listen), "127.0.0.1:%u",
                 cfg->port < 65535 ? cfg->port + 1 : cfg->port - 1);
    }
    return 0;
}

static int load_required(relay_config *cfg, const pos_config *c, char *err, size_t errlen)
{
    const char *s;
    int rc = pos_config_string(c, "id", 1, 36, &s, err, errlen);
    if (rc == 0 && !pos_uuid_valid(s, strlen(s)))
        rc = pos_config_value_error(c, "id", "a UUID such as 1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                                    err, errlen);
    if (rc != 0)
        return rc;
    snprintf(cfg->id, sizeof(cfg->id), "%s", s);
    if ((rc = load_identity(cfg, c, err, errlen)) != 0)
        return rc;
    rc = pos_config_string(c, "p2p_secret", 1, MAX_SECRET_LEN, &s, err, errlen);
    if (rc != 0)
        return rc;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        /* It is sent in an HTTP header: a control character could forge another header. */
        if (*p < 0x20 || *p == 0x7f)
            return pos_config_value_error(c, "p2p_secret",
                                          "printable text without control characters", err, errlen);
    }
    cfg->p2p_secret = strdup(s);
    if (!cfg->p2p_secret) {
        snprintf(err, errlen, "%s: out of memory", c->path);
        return POS_CONFIG_ERR_IO;
    }
    return 0;
}

/* Wipe the secret strings inside the JSON document before jansson frees it. */
static void free_document(pos_config *c)
{
    static const char *const secret_keys[] = {"identity", "p2p_secret"};
    for (size_t i = 0; c->root && i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++) {
        json_t *v = json_object_get(c->root, secret_keys[i]);
        if (json_is_string(v))
            sodium_memzero((char *)json_string_value(v), json_string_length(v));
    }
    pos_config_free(c);
}

int relay_config_load(relay_config *cfg, const char *path, char *err, size_t errlen)
{
    pos_config c;
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->path, sizeof(cfg->path), "%s", path);
    int rc = pos_config_load(&c, path, err, errlen);
    if (rc != 0)
        return rc;
    if ((rc = pos_config_check_keys(&c, known_keys, err, errlen)) != 0 ||
        (rc = load_required(cfg, &c, err, errlen)) != 0 ||
        (rc = load_url_keys(cfg, &c, err, errlen)) != 0 ||
        (rc = load_numbers(cfg, &c, err, errlen)) != 0 ||
        (rc = load_addr_list(&c, "public_addrs", cfg->public_addrs, &cfg->n_public_addrs, err,
                             errlen)) != 0 ||
        (rc = load_listen(cfg, &c, err, errlen)) != 0) {
        /* The document holds the secrets too: jansson frees it, we wipe our copies. */
        free_document(&c);
        relay_config_free(cfg);
        return rc;
    }
    free_document(&c);
    return 0;
}

void relay_config_free(relay_config *cfg)
{
    pos_secret_free(cfg->p2p_secret);
    cfg->p2p_secret = NULL;
    pos_identity_free(&cfg->identity);
}
