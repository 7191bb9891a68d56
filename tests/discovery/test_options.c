/*
 * Unit tests of pos-discovery's settings (discovery-api/options.c): defaults,
 * the configuration file, command-line overrides, and errors that name the
 * option or the file and key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/check.h"
#include "config.h"
#include "options.h"

static pos_discovery_options o;
static char err[POS_ERR_LEN];

#define PARSE(...)                                                                                 \
    parse((char *[]){"pos-discovery", __VA_ARGS__, NULL},                                          \
          (int)(sizeof((char *[]){"pos-discovery", __VA_ARGS__}) / sizeof(char *)))

static int parse(char **argv, int argc)
{
    err[0] = '\0';
    return pos_discovery_options_parse(argc, argv, &o, err, sizeof(err));
}

static int error_says(const char *needle)
{
    if (strstr(err, needle))
        return 1;
    fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, needle);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_defaults(void)
{
    char *argv[] = {"pos-discovery", NULL};
    CHECK(parse(argv, 1) == POS_OPTIONS_RUN);
    CHECK(strcmp(o.listen, "127.0.0.1:8080") == 0);
    CHECK(o.listen_addr.ss_family == AF_INET);
    CHECK(strcmp(o.redis.host, "127.0.0.1") == 0 && o.redis.port == 6379);
    CHECK(strcmp(o.prefix, "pos:") == 0);
    CHECK(o.ttl_s == 30 && o.threads == 2);
    CHECK(o.max_connections == 1024 && o.max_connections_per_client == 64 &&
          o.request_timeout_s == 10);
    CHECK(o.secret_file[0] == '\0' && o.tls_cert[0] == '\0');
}

static void test_command_line(void)
{
    CHECK(PARSE("--listen", "[::1]:9000", "--ttl=5", "--prefix", "t:", "--redis",
                "unix:///tmp/r.sock", "--threads", "4") == POS_OPTIONS_RUN);
    CHECK(o.listen_addr.ss_family == AF_INET6);
    CHECK(o.ttl_s == 5 && o.threads == 4 && strcmp(o.prefix, "t:") == 0);
    CHECK(o.redis.is_unix && strcmp(o.redis.path, "/tmp/r.sock") == 0);
    CHECK(PARSE("--help") == POS_OPTIONS_HELP);
    CHECK(PARSE("--tls-cert", "c.pem", "--tls-key", "k.pem") == POS_OPTIONS_RUN);
    CHECK(strcmp(o.tls_key, "k.pem") == 0);
}

static void test_command_line_errors(void)
{
    CHECK(PARSE("--ttl", "0") == POS_OPTIONS_ERR && error_says("option --ttl"));
    CHECK(PARSE("--ttl", "86401") == POS_OPTIONS_ERR && error_says("1 to 86400"));
    CHECK(PARSE("--ttl", "5s") == POS_OPTIONS_ERR && error_says("option --ttl"));
    CHECK(PARSE("--ttl", "-5") == POS_OPTIONS_ERR);
    CHECK(PARSE("--threads", "17") == POS_OPTIONS_ERR && error_says("option --threads"));
    CHECK(PARSE("--max-connections", "15") == POS_OPTIONS_ERR &&
          error_says("option --max-connections") && error_says("16 to 65536"));
    CHECK(PARSE("--max-connections", "100", "--max-connections-per-client", "101") ==
              POS_OPTIONS_ERR &&
          error_says("option --max-connections-per-client") && error_says("(100)"));
    CHECK(PARSE("--max-connections-per-client", "0") == POS_OPTIONS_ERR);
    CHECK(PARSE("--request-timeout", "0") == POS_OPTIONS_ERR &&
          error_says("option --request-timeout") && error_says("1 to 300"));
    CHECK(PARSE("--request-timeout", "301") == POS_OPTIONS_ERR);
    CHECK(PARSE("--max-connections", "64", "--max-connections-per-client", "8", "--request-timeout",
                "3") == POS_OPTIONS_RUN);
    CHECK(o.max_connections == 64 && o.max_connections_per_client == 8 && o.request_timeout_s == 3);
    CHECK(PARSE("--listen", "localhost:8080") == POS_OPTIONS_ERR && error_says("option --listen"));
    CHECK(PARSE("--listen", "127.0.0.1") == POS_OPTIONS_ERR);
    CHECK(PARSE("--redis", "redis://bad_name.example") == POS_OPTIONS_ERR &&
          error_says("option --redis"));
    /* a host name names a server too (resolved at each connection) */
    CHECK(PARSE("--redis", "redis://redis.example.com:6380/1") == POS_OPTIONS_RUN);
    CHECK(PARSE("--prefix", "a b") == POS_OPTIONS_ERR && error_says("option --prefix"));
    CHECK(PARSE("--tls-cert", "c.pem") == POS_OPTIONS_ERR && error_says("--tls-key"));
    CHECK(PARSE("--bogus") == POS_OPTIONS_ERR && error_says("--bogus"));
    CHECK(PARSE("--ttl") == POS_OPTIONS_ERR);
    CHECK(PARSE("extra") == POS_OPTIONS_ERR && error_says("extra"));
}

static void test_config_file(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/discovery.json", dir);
    write_file(path, "{\"listen\": \"127.0.0.2:81\", \"ttl\": 9, \"prefix\": \"c:\","
                     " \"secret_file\": \"/etc/pos/secret\", \"threads\": 3}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_RUN);
    CHECK(strcmp(o.listen, "127.0.0.2:81") == 0 && o.ttl_s == 9 && o.threads == 3);
    CHECK(strcmp(o.secret_file, "/etc/pos/secret") == 0 && strcmp(o.prefix, "c:") == 0);
    /* The command line wins, wherever it stands. */
    CHECK(PARSE("--ttl", "4", "--config", path, "--listen", "127.0.0.3:82") == POS_OPTIONS_RUN);
    CHECK(o.ttl_s == 4 && strcmp(o.listen, "127.0.0.3:82") == 0 && strcmp(o.prefix, "c:") == 0);

    write_file(path, "{\"ttl\": 9, \"tll\": 9}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says(path) && error_says("tll"));
    write_file(path, "{\"max_connections\": 32, \"max_connections_per_client\": 4,"
                     " \"request_timeout\": 5}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_RUN);
    CHECK(o.max_connections == 32 && o.max_connections_per_client == 4 && o.request_timeout_s == 5);
    write_file(path, "{\"request_timeout\": 0}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says(path) &&
          error_says("\"request_timeout\""));
    write_file(path, "{\"max_connections\": 32, \"max_connections_per_client\": 33}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says(path) &&
          error_says("\"max_connections_per_client\""));
    write_file(path, "{\"ttl\": \"9\"}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says("\"ttl\""));
    write_file(path, "{\"listen\": \"nowhere\"}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says("key \"listen\""));
    write_file(path, "{\"tls_key\": \"k.pem\"}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says("tls_cert"));
    write_file(path, "[1]");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says(path));
    CHECK(PARSE("--config", "/nonexistent/d.json") == POS_OPTIONS_ERR &&
          error_says("/nonexistent/d.json"));
    unlink(path);
}

/* spacedrive_ttl: its own key and option, validated like ttl, independent of it. */
static void test_spacedrive_ttl(const char *dir)
{
    char path[512];
    CHECK(PARSE("--ttl", "2") == POS_OPTIONS_RUN && o.ttl_s == 2 && o.spacedrive_ttl_s == 600);
    CHECK(PARSE("--spacedrive-ttl", "900") == POS_OPTIONS_RUN && o.spacedrive_ttl_s == 900 &&
          o.ttl_s == 30);
    CHECK(PARSE("--spacedrive-ttl", "0") == POS_OPTIONS_ERR &&
          error_says("option --spacedrive-ttl") && error_says("1 to 86400"));
    CHECK(PARSE("--spacedrive-ttl", "86401") == POS_OPTIONS_ERR);
    CHECK(PARSE("--spacedrive-ttl", "10m") == POS_OPTIONS_ERR);
    snprintf(path, sizeof(path), "%s/sd.json", dir);
    write_file(path, "{\"spacedrive_ttl\": 1200}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_RUN && o.spacedrive_ttl_s == 1200);
    write_file(path, "{\"spacedrive_ttl\": 0}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says(path) &&
          error_says("spacedrive_ttl"));
    write_file(path, "{\"spacedrive_ttl\": \"600\"}");
    CHECK(PARSE("--config", path) == POS_OPTIONS_ERR && error_says("spacedrive_ttl"));
    unlink(path);
}

int main(void)
{
    char dir[] = "/tmp/pos-options-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_defaults();
    test_command_line();
    test_command_line_errors();
    test_config_file(dir);
    test_spacedrive_ttl(dir);
    rmdir(dir);
    return check_finish("test_options");
}
