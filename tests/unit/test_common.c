/* Unit tests of the shared modules: identity, peer ids, addresses, UUIDs, config, secrets, Redis
 * URLs, libp2p PeerIds. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "check.h"
#include "config.h"
#include "identity.h"
#include "peer_id.h"
#include "redis.h"
#include "resolve.h"
#include "secret.h"
#include "uuid.h"

static char tmpdir[256];

static void write_file(const char *path, const char *text, int mode)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, (mode_t)mode);
}

static void test_peer_id(void)
{
    pos_identity id;
    char pid[POS_PEER_ID_STRLEN];
    uint8_t pk[32];
    pos_identity_generate(&id);
    pos_identity_peer_id(&id, pid);
    CHECK(strlen(pid) == 43);
    CHECK(pos_peer_id_parse(pid, 43, pk) == 0);
    CHECK(memcmp(pk, id.public_key, 32) == 0);
    /* Wrong lengths, padding, other alphabets, whitespace, non-canonical tail. */
    CHECK(pos_peer_id_parse(pid, 42, pk) != 0);
    char bad[64];
    snprintf(bad, sizeof(bad), "%s=", pid);
    CHECK(pos_peer_id_parse(bad, 44, pk) != 0);
    memcpy(bad, pid, 44);
    bad[5] = '-';
    CHECK(pos_peer_id_parse(bad, 43, pk) != 0);
    memcpy(bad, pid, 44);
    bad[10] = ' ';
    CHECK(pos_peer_id_parse(bad, 43, pk) != 0);
    /* 'A' + 1 in the last character sets an unused low bit. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memcpy(bad, pid, 44);
    const char *p = strchr(alphabet, bad[42]);
    bad[42] = alphabet[(p - alphabet) | 1];
    CHECK(pos_peer_id_parse(bad, 43, pk) != 0);
    /* A known vector: the all-zero key. */
    uint8_t zero[32] = {0};
    pos_peer_id_format(zero, pid);
    CHECK(strcmp(pid, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") == 0);
    pos_identity_free(&id);
}

static void hex32(const char *hex, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/*
 * libp2p PeerIds. Vectors: rust-libp2p's peer_id.rs test parses
 * 12D3KooWD3eck... (the peer-id spec's example), whose key the spec's CIDv1
 * form bafzaajaiaejcal72... also holds; the spec's Ed25519 test key
 * (seed 7e08..., public key 1ed1e8fa...) gives 12D3KooWBtg3... The others
 * were written by an independent Python base58 (tests/discovery/spacedrive.py).
 */
static void test_libp2p_peer_id(void)
{
    static const char spec_example[] = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    char out[POS_LIBP2P_PEER_ID_STRLEN], b64[POS_PEER_ID_STRLEN];
    uint8_t key[32], want[32], seed[32], got[32];
    pos_identity id;

    hex32("2ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b", want);
    CHECK(pos_libp2p_peer_id_parse(spec_example, 52, key) == 0);
    CHECK(memcmp(key, want, 32) == 0);
    pos_libp2p_peer_id_format(want, out);
    CHECK(strcmp(out, spec_example) == 0);
    CHECK(pos_peer_id_parse_any(spec_example, 52, got) == POS_PEER_ID_FORM_LIBP2P);
    CHECK(memcmp(got, want, 32) == 0);
    pos_peer_id_format(want, b64);
    CHECK(pos_peer_id_parse_any(b64, 43, got) == POS_PEER_ID_FORM_BASE64);
    CHECK(memcmp(got, want, 32) == 0);

    hex32("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d", seed);
    hex32("1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e", want);
    pos_identity_from_seed(&id, seed);
    CHECK(memcmp(id.public_key, want, 32) == 0);
    pos_libp2p_peer_id_format(id.public_key, out);
    CHECK(strcmp(out, "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq") == 0);
    pos_identity_free(&id);

    /* Extremes of the key: every PeerId is 52 characters. */
    memset(want, 0, 32);
    pos_libp2p_peer_id_format(want, out);
    CHECK(strcmp(out, "12D3KooW9pNAk8aiBuGVQtWRdbkLmo5qVL3e2h5UxbN2Nz9ttwiw") == 0);
    memset(want, 0xff, 32);
    pos_libp2p_peer_id_format(want, out);
    CHECK(strcmp(out, "12D3KooWT3gYEvLJyx1FyyHqrmvdy1tMjpgxmu9aSeKMEuafQtyC") == 0);
    CHECK(pos_libp2p_peer_id_parse(out, 52, key) == 0 && memcmp(key, want, 32) == 0);

    /* Refused, key untouched: other key type, reordered protobuf, other multihash code, sha2-256
     * form (RSA), extra leading '1', truncation, characters outside the alphabet, overflow. */
    static const char *const bad[] = {
        "12D3KubAU3C291YEyVBcqwhNe3gaM1CAGBhfB3nxuCRF7FknkQB4",
        "12D7nMCk6YBkR4pq1qXoxr57TAgKaZVWeDgK2cGDGYnv2bbsq2zL",
        "3gePciHhMp96J2uLmntEGYX7jy2tj3vx8xHV4HUY88LkiMjyPFtv",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        "112D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5S",
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5S0",
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5Sl",
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5S ",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "1111111111111111111111111111111111111111111111111111",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(key, 0xa5, 32);
        CHECK(pos_libp2p_peer_id_parse(bad[i], strlen(bad[i]), key) == -1);
        CHECK(pos_peer_id_parse_any(bad[i], strlen(bad[i]), key) == -1);
        CHECK(key[0] == 0xa5 && key[31] == 0xa5);
    }
    /* A NUL inside the exact length is not a character of the alphabet. */
    char withnul[53];
    memcpy(withnul, spec_example, 53);
    withnul[20] = '\0';
    CHECK(pos_libp2p_peer_id_parse(withnul, 52, key) == -1);
}

static void test_identity_file(void)
{
    char path[512], err[POS_ERR_LEN];
    pos_identity a, b;
    int created = 0;
    struct stat st;

    snprintf(path, sizeof(path), "%s/sub/dir/key", tmpdir);
    CHECK(pos_identity_load_or_create(&a, path, &created, err, sizeof(err)) == 0);
    CHECK(created == 1);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(pos_identity_load_or_create(&b, path, &created, err, sizeof(err)) == 0);
    CHECK(created == 0);
    CHECK(memcmp(a.public_key, b.public_key, 32) == 0);

    chmod(path, 0644);
    CHECK(pos_identity_load(&b, path, err, sizeof(err)) == POS_IDENTITY_ERR_PERMS);
    CHECK(strstr(err, path) != NULL);

    write_file(path, "not a key\n", 0600);
    CHECK(pos_identity_load(&b, path, err, sizeof(err)) == POS_IDENTITY_ERR_MALFORMED);
    CHECK(strstr(err, "not an identity key") != NULL);
    /* A malformed file is never replaced by load_or_create. */
    CHECK(pos_identity_load_or_create(&b, path, &created, err, sizeof(err)) ==
          POS_IDENTITY_ERR_MALFORMED);

    snprintf(path, sizeof(path), "%s/missing", tmpdir);
    CHECK(pos_identity_load(&b, path, err, sizeof(err)) == POS_IDENTITY_ERR_IO);

    char text[POS_KEY_TEXT_STRLEN];
    pos_identity_to_text(&a, text);
    CHECK(pos_identity_from_text(&b, text, strlen(text)) == 0);
    CHECK(memcmp(a.public_key, b.public_key, 32) == 0);
    pos_identity_free(&a);
    pos_identity_free(&b);
}

static void test_addr(void)
{
    struct sockaddr_storage ss;
    char out[POS_ADDR_STRLEN];
    CHECK(pos_addr_valid("1.2.3.4:7373", 12));
    CHECK(pos_addr_valid("[2001:db8::1]:7373", 18));
    CHECK(pos_addr_valid("[::1]:1", 7));
    CHECK(pos_addr_valid("1.2.3.4:65535", 13));
    CHECK(!pos_addr_valid("1.2.3.4:65536", 13));
    CHECK(!pos_addr_valid("1.2.3.4:0", 9));
    CHECK(!pos_addr_valid("1.2.3.4", 7));
    CHECK(!pos_addr_valid("2001:db8::1:7373", 16));
    CHECK(!pos_addr_valid("[2001:db8::1]7373", 17));
    CHECK(!pos_addr_valid("example.com:80", 14));
    CHECK(!pos_addr_valid("1.2.3.4:80x", 11));
    CHECK(!pos_addr_valid("1.2.3.4:", 8));
    CHECK(!pos_addr_valid("1.2.3.4:080", 11));
    CHECK(!pos_addr_valid("1.2.3.4:-1", 10));
    CHECK(!pos_addr_valid("", 0));
    CHECK(!pos_addr_valid("1.2.3\0.4:80", 11));
    CHECK(pos_addr_parse("10.0.0.1", 8, 7373, &ss) == 0);
    pos_addr_format((struct sockaddr *)&ss, out, sizeof(out));
    CHECK(strcmp(out, "10.0.0.1:7373") == 0);
    CHECK(pos_addr_parse("[fe80::1]:9", 11, 0, &ss) == 0);
    pos_addr_format((struct sockaddr *)&ss, out, sizeof(out));
    CHECK(strcmp(out, "[fe80::1]:9") == 0);
}

static void test_uuid(void)
{
    char u[POS_UUID_STRLEN];
    pos_uuid_v4(u);
    CHECK(pos_uuid_valid(u, strlen(u)));
    CHECK(u[14] == '4');
    CHECK(pos_uuid_valid("123E4567-e89b-12d3-a456-426614174000", 36));
    CHECK(!pos_uuid_valid("123e4567e89b12d3a456426614174000", 32));
    CHECK(!pos_uuid_valid("123e4567-e89b-12d3-a456-42661417400g", 36));
    CHECK(!pos_uuid_valid("123e4567-e89b-12d3-a456_426614174000", 36));
}

static void test_config(void)
{
    char path[512], err[POS_ERR_LEN];
    pos_config c;
    long long port;
    const char *s;

    snprintf(path, sizeof(path), "%s/c.json", tmpdir);
    write_file(path, "{\"port\": \"abc\", \"name\": \"x\", \"extra\": 1}", 0600);
    CHECK(pos_config_load(&c, path, err, sizeof(err)) == 0);
    CHECK(pos_config_int(&c, "port", 1, 1, 65535, &port, err, sizeof(err)) == POS_CONFIG_ERR_VALUE);
    CHECK(strstr(err, path) && strstr(err, "\"port\"") && strstr(err, "1 to 65535"));
    CHECK(pos_config_string(&c, "name", 1, 16, &s, err, sizeof(err)) == 0 && !strcmp(s, "x"));
    CHECK(pos_config_string(&c, "missing", 0, 16, &s, err, sizeof(err)) == POS_CONFIG_ABSENT);
    CHECK(pos_config_string(&c, "missing", 1, 16, &s, err, sizeof(err)) == POS_CONFIG_ERR_VALUE);
    CHECK(strstr(err, "missing") != NULL);
    static const char *const allowed[] = {"port", "name", NULL};
    CHECK(pos_config_check_keys(&c, allowed, err, sizeof(err)) == POS_CONFIG_ERR_VALUE);
    CHECK(strstr(err, "\"extra\"") != NULL);
    pos_config_free(&c);

    write_file(path, "{\"port\": 1,\n oops}", 0600);
    CHECK(pos_config_load(&c, path, err, sizeof(err)) == POS_CONFIG_ERR_SYNTAX);
    CHECK(strstr(err, "line 2") != NULL);
    write_file(path, "[1]", 0600);
    CHECK(pos_config_load(&c, path, err, sizeof(err)) == POS_CONFIG_ERR_SYNTAX);
    write_file(path, "{\"a\": 1, \"a\": 2}", 0600);
    CHECK(pos_config_load(&c, path, err, sizeof(err)) == POS_CONFIG_ERR_SYNTAX);
    snprintf(path, sizeof(path), "%s/none.json", tmpdir);
    CHECK(pos_config_load(&c, path, err, sizeof(err)) == POS_CONFIG_ERR_IO);
}

static void test_secret(void)
{
    char tok[POS_TOKEN_STRLEN], tok2[POS_TOKEN_STRLEN];
    char h1[POS_SECRET_HASH_HEXLEN], h2[POS_SECRET_HASH_HEXLEN];
    pos_secret_token_new(tok, sizeof(tok));
    pos_secret_token_new(tok2, sizeof(tok2));
    CHECK(strncmp(tok, "pos_", 4) == 0 && strlen(tok) == 47);
    CHECK(strcmp(tok, tok2) != 0);
    CHECK(pos_secret_equal(tok, strlen(tok), tok, strlen(tok)));
    CHECK(!pos_secret_equal(tok, strlen(tok), tok2, strlen(tok2)));
    CHECK(!pos_secret_equal("abc", 3, "abcd", 4));
    pos_secret_hash_hex(tok, strlen(tok), h1);
    pos_secret_hash_hex(tok2, strlen(tok2), h2);
    CHECK(strlen(h1) == 64 && strcmp(h1, h2) != 0 && strstr(h1, tok) == NULL);
}

static void test_redis_url(void)
{
    pos_redis_target t;
    char err[POS_ERR_LEN], out[600];
    CHECK(pos_redis_url_parse("redis://127.0.0.1:6390/2", &t, err, sizeof(err)) == 0);
    CHECK(!t.is_unix && !strcmp(t.host, "127.0.0.1") && t.port == 6390 && t.db == 2);
    CHECK(pos_redis_url_parse("redis://localhost", &t, err, sizeof(err)) == 0);
    CHECK(!strcmp(t.host, "localhost") && t.port == 6379);
    /* host names (compose service names, DNS names) are kept and resolved on connect */
    CHECK(pos_redis_url_parse("redis://redis:6380/3", &t, err, sizeof(err)) == 0);
    CHECK(!t.is_unix && !strcmp(t.host, "redis") && t.port == 6380 && t.db == 3);
    pos_redis_target_format(&t, out, sizeof(out));
    CHECK(!strcmp(out, "redis://redis:6380/3"));
    CHECK(pos_redis_url_parse("redis://cache-1.example.org", &t, err, sizeof(err)) == 0);
    CHECK(!strcmp(t.host, "cache-1.example.org") && t.port == 6379);
    CHECK(pos_redis_url_parse("redis://bad_name:6379", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://-x", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://a..b", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://999.1.1.1", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://redis:", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://redis:+5", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://redis:70000", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://[::1]:7000", &t, err, sizeof(err)) == 0);
    pos_redis_target_format(&t, out, sizeof(out));
    CHECK(!strcmp(out, "redis://[::1]:7000"));
    CHECK(pos_redis_url_parse("unix:///run/redis.sock?db=3", &t, err, sizeof(err)) == 0);
    CHECK(t.is_unix && !strcmp(t.path, "/run/redis.sock") && t.db == 3);
    CHECK(pos_redis_url_parse("http://x", &t, err, sizeof(err)) != 0);
    CHECK(strstr(err, "redis://") != NULL);
    CHECK(pos_redis_url_parse("redis://1.2.3.4:99999", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("redis://1.2.3.4:1/99", &t, err, sizeof(err)) != 0);
    CHECK(pos_redis_url_parse("unix://relative", &t, err, sizeof(err)) != 0);
}

struct resolved {
    int calls, n;
    char first[POS_ADDR_STRLEN], err[160];
};

static void on_resolved(void *arg, const struct sockaddr_storage *addrs, int n, const char *err)
{
    struct resolved *r = arg;
    r->calls++;
    r->n = n;
    if (n)
        pos_addr_format((const struct sockaddr *)&addrs[0], r->first, sizeof(r->first));
    else
        snprintf(r->err, sizeof(r->err), "%s", err);
}

/* The lookup runs off the loop: the loop keeps turning and gets one answer. */
static void test_resolve(void)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct resolved a = {0}, b = {0}, c = {0}, d = {0};
    CHECK(pos_resolve_start(loop, "127.0.0.1", 6379, on_resolved, &c) == NULL);
    CHECK(c.calls == 1 && c.n == 1 && !strcmp(c.first, "127.0.0.1:6379"));
    CHECK(pos_resolve_start(loop, "localhost", 7000, on_resolved, &a) != NULL);
    CHECK(pos_resolve_start(loop, "no-such-host.invalid", 7000, on_resolved, &b) != NULL);
    pos_resolve *gone = pos_resolve_start(loop, "localhost", 7001, on_resolved, &d);
    CHECK(gone != NULL);
    pos_resolve_cancel(gone);
    CHECK(a.calls == 0); /* not answered inside the call */
    for (int i = 0; i < 500 && (a.calls == 0 || b.calls == 0); i++)
        ev_run(loop, EVRUN_ONCE);
    CHECK(a.calls == 1 && a.n >= 1 &&
          (!strcmp(a.first, "127.0.0.1:7000") || !strcmp(a.first, "[::1]:7000")));
    CHECK(b.calls == 1 && b.n == 0 && strstr(b.err, "no-such-host.invalid") != NULL);
    usleep(200000);
    ev_run(loop, EVRUN_NOWAIT);
    CHECK(d.calls == 0);
    ev_loop_destroy(loop);
}

static void test_eviction_check(void)
{
    char err[400];
    static const char ok[] = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:noeviction\r\n";
    static const char lru[] = "# Memory\r\nmaxmemory_policy:allkeys-lru\r\nmem:2\r\n";
    static const char vol[] = "maxmemory_policy:volatile-ttl";
    static const char none[] = "# Memory\r\nused_memory:1\r\n";
    static const char near[] = "x_maxmemory_policy:allkeys-lru\r\nmaxmemory_policy:noeviction";
    CHECK(pos_redis_eviction_check(ok, sizeof(ok) - 1, err, sizeof(err)) == 0);
    CHECK(pos_redis_eviction_check(lru, sizeof(lru) - 1, err, sizeof(err)) == -1);
    CHECK(strstr(err, "allkeys-lru") != NULL && strstr(err, "noeviction") != NULL);
    CHECK(pos_redis_eviction_check(vol, sizeof(vol) - 1, err, sizeof(err)) == -1);
    CHECK(strstr(err, "volatile-ttl") != NULL);
    CHECK(pos_redis_eviction_check(none, sizeof(none) - 1, err, sizeof(err)) == 1);
    CHECK(pos_redis_eviction_check(near, sizeof(near) - 1, err, sizeof(err)) == 0);
    CHECK(pos_redis_eviction_check("", 0, err, sizeof(err)) == 1);
    /* a prefix of "noeviction" is another policy, not a match */
    CHECK(pos_redis_eviction_check("maxmemory_policy:noevict", 24, err, sizeof(err)) == -1);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pos-unit-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    test_peer_id();
    test_libp2p_peer_id();
    test_identity_file();
    test_addr();
    test_uuid();
    test_config();
    test_secret();
    test_redis_url();
    test_resolve();
    test_eviction_check();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_finish("common");
}
