/*
 * Unit tests of relay_config_load (relay/relay_config.c): defaults, the
 * POS_DOCKER port rule, canonical addresses, and refusals that name the key.
 * Writes its files in a fresh directory under $TMPDIR; no network.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "relay_config.h"

static char dir[256];
static char key_text[POS_KEY_TEXT_STRLEN];

/* Writes a config with the required keys plus |extra| (JSON members, may be ""). */
static const char *write_config(const char *name, const char *extra)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return path;
    /* |extra| may bring its own p2p_secret (duplicate keys are refused). */
    int own_secret = strstr(extra, "\"p2p_secret\"") != NULL;
    fprintf(f, "{\"id\": \"1b4e28ba-2fa1-41d2-883f-0016d3cca427\", \"identity\": \"%s\"%s%s%s}",
            key_text, own_secret ? "" : ", \"p2p_secret\": \"s3cret\"", extra[0] ? ", " : "",
            extra);
    fclose(f);
    return path;
}

static void test_defaults(void)
{
    relay_config c;
    char err[POS_ERR_LEN];
    unsetenv("POS_DOCKER");
    CHECK(relay_config_load(&c, write_config("min.json", ""), err, sizeof(err)) == 0);
    CHECK(c.port == 7373);
    CHECK(strcmp(c.http_listen, "127.0.0.1:7374") == 0);
    CHECK(strcmp(c.redis_prefix, "pos:") == 0);
    CHECK(strcmp(c.redis.host, "127.0.0.1") == 0 && c.redis.port == 6379);
    CHECK(c.api_url[0] == '\0');
    CHECK(c.idle_timeout_s == 30 && c.register_interval_s == 10);
    CHECK(c.conn_rate_per_addr == 20 && c.conn_burst_per_addr == 40);
    CHECK(c.conn_rate_per_token == 20 && c.conn_burst_per_token == 40);
    CHECK(c.max_pending_per_addr == 16);
    CHECK(c.n_public_addrs == 0 && c.n_listen == 0);
    /* with defaults one token holds less than 1/8 of the circuit table */
    CHECK(c.max_circuits == 16384 && c.max_circuits_per_conn == 256);
    CHECK(c.max_circuits_per_token == 1024 && c.max_circuits_per_token < c.max_circuits / 8);
    CHECK(c.max_conns_per_token == 64);
    CHECK(c.retry_above == 256 && c.gso == 1 && c.quic_fallback == 0);
    CHECK(c.punch == 1 && c.punch_min_interval_ms == 5000);
    CHECK(c.ticket_lifetime_s == 21600);
    CHECK(c.park_lifetime_s == 120 && c.park_keepalive_s == 25 && c.max_parked == 1000000);
    /* workers: one per online CPU, at most 64 */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(c.workers == (cpus < 1 ? 1u : cpus > 64 ? 64u : (unsigned)cpus));
    CHECK(strcmp(c.p2p_secret, "s3cret") == 0);
    relay_config_free(&c);
    CHECK(c.p2p_secret == NULL);
}

/* The circuit caps follow a smaller table; 0 turns a cap off. */
static void test_circuit_limits(void)
{
    relay_config c;
    char err[POS_ERR_LEN];
    CHECK(relay_config_load(&c, write_config("min.json", "\"max_circuits\": 1000"), err,
                            sizeof(err)) == 0);
    CHECK(c.max_circuits == 1000 && c.max_circuits_per_conn == 15 &&
          c.max_circuits_per_token == 62);
    relay_config_free(&c);
    CHECK(relay_config_load(&c, write_config("min.json", "\"max_circuits\": 10"), err,
                            sizeof(err)) == 0);
    CHECK(c.max_circuits_per_conn == 1 && c.max_circuits_per_token == 1);
    relay_config_free(&c);
    CHECK(relay_config_load(&c,
                            write_config("min.json", "\"max_circuits_per_conn\": 0, "
                                                     "\"max_circuits_per_token\": 0, "
                                                     "\"max_conns_per_token\": 0"),
                            err, sizeof(err)) == 0);
    CHECK(c.max_circuits_per_conn == 0 && c.max_circuits_per_token == 0 &&
          c.max_conns_per_token == 0);
    relay_config_free(&c);
}

static void test_values_and_docker(void)
{
    relay_config c;
    char err[POS_ERR_LEN];
    const char *path = write_config(
        "full.json", "\"port\": 9000, \"api_url\": \"http://127.0.0.1:8080/\", "
                     "\"public_addrs\": [\"[::ffff:1.2.3.4]:9000\", \"[2001:DB8::1]:9000\"], "
                     "\"conn_rate_per_addr\": 0, \"conn_rate_per_token\": 5, "
                     "\"conn_burst_per_token\": 7, \"register_interval\": 3, "
                     "\"max_pending_per_addr\": 4, \"retry_above\": 0, \"gso\": false, "
                     "\"quic_fallback\": true, \"punch\": false, "
                     "\"punch_min_interval_ms\": 100, \"ticket_lifetime\": 0, \"workers\": 3, "
                     "\"park_lifetime\": 0, \"park_keepalive\": 3600, \"max_parked\": 5");
    unsetenv("POS_DOCKER");
    CHECK(relay_config_load(&c, path, err, sizeof(err)) == 0);
    CHECK(c.port == 9000);
    CHECK(strcmp(c.http_listen, "127.0.0.1:9001") == 0);
    CHECK(strcmp(c.api_url, "http://127.0.0.1:8080") == 0); /* no trailing slash */
    CHECK(c.n_public_addrs == 2);
    CHECK(strcmp(c.public_addrs[0], "1.2.3.4:9000") == 0);
    CHECK(strcmp(c.public_addrs[1], "[2001:db8::1]:9000") == 0);
    CHECK(c.conn_rate_per_addr == 0 && c.conn_rate_per_token == 5);
    CHECK(c.conn_burst_per_token == 7 && c.register_interval_s == 3);
    CHECK(c.max_pending_per_addr == 4);
    CHECK(c.retry_above == 0 && c.gso == 0 && c.quic_fallback == 1);
    CHECK(c.punch == 0 && c.punch_min_interval_ms == 100);
    CHECK(c.ticket_lifetime_s == 0);
    CHECK(c.park_lifetime_s == 0 && c.park_keepalive_s == 3600 && c.max_parked == 5);
    CHECK(c.workers == 3);
    relay_config_free(&c);

    setenv("POS_DOCKER", "true", 1);
    CHECK(relay_config_load(&c, path, err, sizeof(err)) == 0);
    CHECK(c.port == 7373);
    relay_config_free(&c);
    setenv("POS_DOCKER", "false", 1);
    CHECK(relay_config_load(&c, path, err, sizeof(err)) == 0);
    CHECK(c.port == 9000);
    relay_config_free(&c);
    unsetenv("POS_DOCKER");
}

static void test_refusals(void)
{
    static const struct {
        const char *extra, *key;
    } cases[] = {
        {"\"port\": 65536", "\"port\""},
        {"\"redis\": \"redis://[::1\"", "\"redis\""},
        {"\"redis_prefix\": \"\"", "\"redis_prefix\""},
        {"\"listen\": [\"0.0.0.0\"]", "\"listen\""},
        {"\"idle_timeout\": 0", "\"idle_timeout\""},
        {"\"conn_burst_per_addr\": 0", "\"conn_burst_per_addr\""},
        {"\"public_addrs\": \"1.2.3.4:1\"", "\"public_addrs\""},
        {"\"extra\": 1", "\"extra\""},
        {"\"max_circuits\": 0", "\"max_circuits\""},
        {"\"workers\": 0", "\"workers\""},
        {"\"workers\": 65", "\"workers\""},
        {"\"workers\": \"two\"", "\"workers\""},
        {"\"max_circuits\": 2000000", "\"max_circuits\""},
        {"\"max_circuits_per_conn\": -1", "\"max_circuits_per_conn\""},
        {"\"max_circuits\": 100, \"max_circuits_per_token\": 101", "\"max_circuits_per_token\""},
        {"\"max_conns_per_token\": \"64\"", "\"max_conns_per_token\""},
        {"\"max_pending_per_addr\": 0", "\"max_pending_per_addr\""},
        {"\"max_pending_per_addr\": \"8\"", "\"max_pending_per_addr\""},
        {"\"p2p_secret\": \"a\\r\\nX-Evil: 1\"", "\"p2p_secret\""},
        {"\"max_circuits\": -1", "\"max_circuits\""},
        {"\"max_circuits\": \"1000\"", "\"max_circuits\""},
        {"\"max_circuits\": 1.5", "\"max_circuits\""},
        {"\"retry_above\": -1", "\"retry_above\""},
        {"\"retry_above\": 1000001", "\"retry_above\""},
        {"\"retry_above\": \"64\"", "\"retry_above\""},
        {"\"retry_above\": true", "\"retry_above\""},
        {"\"gso\": \"yes\"", "\"gso\""},
        {"\"gso\": 1", "\"gso\""},
        {"\"gso\": {}", "\"gso\""},
        {"\"quic_fallback\": \"true\"", "\"quic_fallback\""},
        {"\"quic_fallback\": 0", "\"quic_fallback\""},
        {"\"quic_fallback\": []", "\"quic_fallback\""},
        {"\"punch\": \"true\"", "\"punch\""},
        {"\"punch\": 1", "\"punch\""},
        {"\"punch_min_interval_ms\": 99", "\"punch_min_interval_ms\""},
        {"\"punch_min_interval_ms\": 3600001", "\"punch_min_interval_ms\""},
        {"\"punch_min_interval_ms\": \"5000\"", "\"punch_min_interval_ms\""},
        {"\"punch_min_interval_ms\": -1", "\"punch_min_interval_ms\""},
        {"\"ticket_lifetime\": 604801", "\"ticket_lifetime\""},
        {"\"ticket_lifetime\": -1", "\"ticket_lifetime\""},
        {"\"ticket_lifetime\": \"3600\"", "\"ticket_lifetime\""},
        {"\"ticket_lifetime\": 1.5", "\"ticket_lifetime\""},
        {"\"park_lifetime\": 86401", "\"park_lifetime\""},
        {"\"park_lifetime\": -1", "\"park_lifetime\""},
        {"\"park_keepalive\": 0", "\"park_keepalive\""},
        {"\"park_keepalive\": 3601", "\"park_keepalive\""},
        /* two keep-alives must fit in a lifetime */
        {"\"park_lifetime\": 40", "\"park_keepalive\""},
        {"\"park_lifetime\": 10, \"park_keepalive\": 5", "\"park_keepalive\""},
        {"\"max_parked\": 0", "\"max_parked\""},
        {"\"max_parked\": 16777217", "\"max_parked\""},
        {"\"max_parked\": \"1000\"", "\"max_parked\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        relay_config c;
        char err[POS_ERR_LEN] = "";
        const char *path = write_config("bad.json", cases[i].extra);
        int rc = relay_config_load(&c, path, err, sizeof(err));
        CHECK(rc < 0);
        CHECK(strstr(err, path) != NULL);
        CHECK(strstr(err, cases[i].key) != NULL);
        /* says what would be right (an unknown key is named as such) */
        CHECK(strstr(err, "expected") != NULL || strstr(err, "not a known setting") != NULL);
        CHECK(strstr(err, "s3cret") == NULL && strstr(err, key_text) == NULL);
        if (rc == 0)
            relay_config_free(&c);
        if (rc == 0 || !strstr(err, cases[i].key))
            fprintf(stderr, "case %zu (%s): rc %d: %s\n", i, cases[i].extra, rc, err);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pos-relay-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    pos_identity id;
    pos_identity_generate(&id);
    pos_identity_to_text(&id, key_text);
    pos_identity_free(&id);
    test_defaults();
    test_values_and_docker();
    test_circuit_limits();
    test_refusals();
    char path[600];
    static const char *const names[] = {"min.json", "full.json", "bad.json"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return check_finish("relay-config");
}
