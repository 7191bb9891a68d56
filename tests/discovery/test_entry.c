/*
 * Unit tests of relay entry validation (discovery-api/entry.c): every kind
 * of body a relay or an attacker may send, the canonical form, and that
 * error sentences are plain ASCII that never echo arbitrary input.
 */
#include <stdio.h>
#include <string.h>

#include "../unit/check.h"
#include "entry.h"
#include "identity.h"

static const char uuid[] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
static char peer[POS_PEER_ID_STRLEN];
static char err[POS_ERR_LEN];

static int parse(const char *body, pos_entry *e)
{
    err[0] = '\0';
    return pos_entry_parse(body, strlen(body), e, err, sizeof(err));
}

/* body_with builds {"id":..,"peer_id":..,"addrs":ADDRS} with |addrs| as raw JSON. */
static const char *body_with(const char *id, const char *peer_id, const char *addrs)
{
    static char buf[8192];
    snprintf(buf, sizeof(buf), "{\"id\":%s,\"peer_id\":%s,\"addrs\":%s}", id, peer_id, addrs);
    return buf;
}

static const char *quoted(const char *s)
{
    static char bufs[2][256];
    static int which;
    which ^= 1;
    snprintf(bufs[which], sizeof(bufs[which]), "\"%s\"", s);
    return bufs[which];
}

static int err_is_ascii(void)
{
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return 0;
    return err[0] != '\0';
}

/* rejected: the body is refused and the error mentions |needle|. */
static int rejected(const char *body, const char *needle)
{
    pos_entry e;
    int rc = parse(body, &e);
    if (rc != POS_ENTRY_ERR_INVALID || !err_is_ascii() || !strstr(err, needle)) {
        fprintf(stderr, "  body %.120s: rc %d, error \"%s\", wanted \"%s\"\n", body, rc, err,
                needle);
        return 0;
    }
    return 1;
}

static void test_valid(void)
{
    pos_entry e;
    char json[POS_ENTRY_JSON_MAX];
    const char *body =
        body_with(quoted(uuid), quoted(peer), "[\"1.2.3.4:7373\", \"[2001:db8::1]:7373\"]");
    CHECK(parse(body, &e) == 0);
    CHECK(strcmp(e.id, uuid) == 0);
    CHECK(strcmp(e.peer_id, peer) == 0);
    CHECK(e.naddrs == 2);
    CHECK(strcmp(e.addrs[1], "[2001:db8::1]:7373") == 0);
    int n = pos_entry_format(&e, json, sizeof(json));
    CHECK(n > 0 && (size_t)n == strlen(json));
    /* The canonical form parses back to the same entry. */
    pos_entry again;
    CHECK(parse(json, &again) == 0);
    CHECK(memcmp(&e, &again, sizeof(e)) == 0);
    CHECK(pos_entry_format(&e, json, 20) == -1);
}

static void test_canonical(void)
{
    pos_entry e;
    char json[POS_ENTRY_JSON_MAX];
    /* Whitespace, key order and id case do not matter; the id is stored lower case. */
    char body[512];
    snprintf(body, sizeof(body),
             " {\n \"addrs\" : [\"10.0.0.1:1\"], \"peer_id\": \"%s\",\n"
             " \"id\": \"7C9E6679-7425-40DE-944B-E07FC1F90AE7\" } ",
             peer);
    CHECK(parse(body, &e) == 0);
    CHECK(strcmp(e.id, uuid) == 0);
    pos_entry_format(&e, json, sizeof(json));
    char want[512];
    snprintf(want, sizeof(want), "{\"id\":\"%s\",\"peer_id\":\"%s\",\"addrs\":[\"10.0.0.1:1\"]}",
             uuid, peer);
    CHECK(strcmp(json, want) == 0);
}

static void test_not_an_object(void)
{
    pos_entry e;
    CHECK(parse("", &e) == POS_ENTRY_ERR_INVALID && strstr(err, "empty"));
    CHECK(rejected("not json", "not valid JSON"));
    CHECK(rejected("{\"id\":", "not valid JSON"));
    CHECK(rejected("[1,2]", "must be a JSON object, not an array"));
    CHECK(rejected("\"text\"", "must be a JSON object, not a string"));
    CHECK(rejected("42", "not a number"));
    CHECK(rejected("null", "not null"));
    CHECK(rejected("{} {}", "not valid JSON"));
    CHECK(rejected("{}", "missing key \"id\""));
}

static void test_keys(void)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"peer_id\":\"%s\",\"addrs\":[\"1.2.3.4:1\"],"
             "\"name\":\"x\"}",
             uuid, peer);
    CHECK(rejected(body, "unknown key \"name\""));
    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"peer_id\":\"%s\",\"addrs\":[\"1.2.3.4:1\"],"
             "\"\xc3\xa9t\xc3\xa9\":1}",
             uuid, peer);
    CHECK(rejected(body, "unknown key:"));
    CHECK(!strstr(err, "\xc3"));
    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"id\":\"%s\",\"peer_id\":\"%s\","
             "\"addrs\":[\"1.2.3.4:1\"]}",
             uuid, uuid, peer);
    CHECK(rejected(body, "not valid JSON"));
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"addrs\":[\"1.2.3.4:1\"]}", uuid);
    CHECK(rejected(body, "missing key \"peer_id\""));
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"peer_id\":\"%s\"}", uuid, peer);
    CHECK(rejected(body, "missing key \"addrs\""));
}

static void test_types(void)
{
    CHECK(rejected(body_with("1", quoted(peer), "[\"1.2.3.4:1\"]"), "\"id\" must be a string"));
    CHECK(rejected(body_with(quoted(uuid), "null", "[\"1.2.3.4:1\"]"),
                   "\"peer_id\" must be a string, not null"));
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "\"1.2.3.4:1\""), "\"addrs\" must be"));
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "{}"), "\"addrs\" must be"));
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "[7373]"),
                   "\"addrs\"[0] must be a string, not a number"));
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "[\"1.2.3.4:1\",[]]"),
                   "\"addrs\"[1] must be a string, not an array"));
    CHECK(rejected(body_with("[]", quoted(peer), "[\"1.2.3.4:1\"]"), "not an array"));
}

static void test_ids(void)
{
    static const char *const bad[] = {
        "",
        "7c9e6679742540de944be07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90ae",
        "7c9e6679-7425-40de-944b-e07fc1f90ae77",
        "7c9e6679-7425-40de-944b-e07fc1f90aeg",
        "{7c9e6679-7425-40de-944b-e07fc1f90ae7}",
        " 7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "7c9e6679_7425-40de-944b-e07fc1f90ae7",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(rejected(body_with(quoted(bad[i]), quoted(peer), "[\"1.2.3.4:1\"]"),
                       "\"id\" must be a UUID"));
    char out[POS_UUID_STRLEN];
    CHECK(pos_entry_id_parse("7C9E6679-7425-40DE-944B-E07FC1F90AE7", 36, out) == 0);
    CHECK(strcmp(out, uuid) == 0);
    CHECK(pos_entry_id_parse("7c9e6679-7425-40de-944b-e07fc1f90ae", 35, out) == -1);
    /* A NUL inside is refused by jansson unless allowed; the id must not pass either way. */
    CHECK(rejected(body_with("\"7c9e6679-7425-40de-944b-e07fc1f90ae\\u0000\"", quoted(peer),
                             "[\"1.2.3.4:1\"]"),
                   ""));
}

static void test_peer_ids(void)
{
    char shorter[64], longer[64], padded[64], urlsafe[64], noncanon[64];
    snprintf(shorter, sizeof(shorter), "%.42s", peer);
    snprintf(longer, sizeof(longer), "%sA", peer);
    snprintf(padded, sizeof(padded), "%s=", peer);
    snprintf(urlsafe, sizeof(urlsafe), "-%.42s", peer + 1);
    /* 'B' as the last character sets bits that a 32-byte key leaves zero. */
    snprintf(noncanon, sizeof(noncanon), "%.42sB", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    const char *bad[] = {"", shorter, longer, padded, urlsafe, noncanon, "not a key"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(rejected(body_with(quoted(uuid), quoted(bad[i]), "[\"1.2.3.4:1\"]"),
                       "\"peer_id\" must be"));
}

/*
 * Spacedrive's relays register a libp2p PeerId: accepted, kept and formatted exactly as
 * registered, with its form recorded (it picks the TTL). Only canonical Ed25519 PeerIds.
 */
static void test_libp2p_peer_ids(void)
{
    static const char sd[] = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    pos_entry e, again;
    char json[POS_ENTRY_JSON_MAX], want[256];
    CHECK(parse(body_with(quoted(uuid), quoted(sd), "[\"203.0.113.7:7373\"]"), &e) == 0);
    CHECK(strcmp(e.peer_id, sd) == 0 && e.peer_id_form == POS_PEER_ID_FORM_LIBP2P);
    CHECK(pos_entry_ttl_s(&e, 30, 600) == 600);
    pos_entry_format(&e, json, sizeof(json));
    snprintf(want, sizeof(want),
             "{\"id\":\"%s\",\"peer_id\":\"%s\",\"addrs\":[\"203.0.113.7:7373\"]}", uuid, sd);
    CHECK(strcmp(json, want) == 0);
    CHECK(parse(json, &again) == 0 && memcmp(&e, &again, sizeof(e)) == 0);
    CHECK(parse(body_with(quoted(uuid), quoted(peer), "[\"1.2.3.4:1\"]"), &e) == 0);
    CHECK(e.peer_id_form == POS_PEER_ID_FORM_BASE64 && pos_entry_ttl_s(&e, 30, 600) == 30);
    const char *bad[] = {
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",        /* sha2-256: an RSA key */
        "112D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", /* a '1' too many */
        "12D3KubAU3C291YEyVBcqwhNe3gaM1CAGBhfB3nxuCRF7FknkQB4",  /* secp256k1 key type */
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SI",  /* 'I' is not base58 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(
            rejected(body_with(quoted(uuid), quoted(bad[i]), "[\"1.2.3.4:1\"]"), "libp2p PeerId"));
}

static void test_addrs(void)
{
    static const char *const bad[] = {
        "\"1.2.3.4\"",
        "\"1.2.3.4:0\"",
        "\"1.2.3.4:65536\"",
        "\"1.2.3.4:-1\"",
        "\"1.2.3.4:080\"",
        "\"2001:db8::1:7373\"",
        "\"[2001:db8::1]\"",
        "\"[2001:db8::1]7373\"",
        "\"relay.example.com:7373\"",
        "\"localhost:7373\"",
        "\"\"",
        "\"1.2.3.4:7373 \"",
        "\"[1.2.3.4]:7373\"",
        "\"256.1.1.1:7373\"",
        "\"[fe80::1%eth0]:7373\"",
    };
    char addrs[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(addrs, sizeof(addrs), "[\"1.2.3.4:1\",%s]", bad[i]);
        CHECK(rejected(body_with(quoted(uuid), quoted(peer), addrs),
                       "\"addrs\"[1] is not a valid address"));
    }
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "[]"), "1 to 16"));
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), "[\"1.2.3.4:1\",\"1.2.3.4:1\"]"),
                   "\"addrs\"[1] repeats \"addrs\"[0]"));

    /* 16 addresses are fine, 17 are not. */
    char many[2048] = "[";
    for (int i = 1; i <= 17; i++) {
        char one[32];
        snprintf(one, sizeof(one), "%s\"10.0.0.%d:7373\"", i > 1 ? "," : "", i);
        strcat(many, one);
        if (i == 16) {
            pos_entry e;
            char sixteen[2048];
            snprintf(sixteen, sizeof(sixteen), "%s]", many);
            CHECK(parse(body_with(quoted(uuid), quoted(peer), sixteen), &e) == 0);
            CHECK(e.naddrs == 16);
            char json[POS_ENTRY_JSON_MAX];
            CHECK(pos_entry_format(&e, json, sizeof(json)) > 0);
        }
    }
    strcat(many, "]");
    CHECK(rejected(body_with(quoted(uuid), quoted(peer), many), "1 to 16"));

    /* The longest address text. */
    pos_entry e;
    CHECK(parse(body_with(quoted(uuid), quoted(peer),
                          "[\"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535\"]"),
                &e) == 0);
}

static void test_size(void)
{
    static char big[POS_ENTRY_MAX_BODY + 2];
    pos_entry e;
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[POS_ENTRY_MAX_BODY] = '}';
    CHECK(pos_entry_parse(big, POS_ENTRY_MAX_BODY + 1, &e, err, sizeof(err)) ==
          POS_ENTRY_ERR_TOO_LARGE);
    /* Exactly the limit is parsed (and here refused for its content, not its size). */
    big[POS_ENTRY_MAX_BODY - 1] = '}';
    CHECK(pos_entry_parse(big, POS_ENTRY_MAX_BODY, &e, err, sizeof(err)) == POS_ENTRY_ERR_INVALID);
    /* Deep nesting is refused without trouble. */
    memset(big, '[', POS_ENTRY_MAX_BODY);
    CHECK(pos_entry_parse(big, POS_ENTRY_MAX_BODY, &e, err, sizeof(err)) == POS_ENTRY_ERR_INVALID);
    /* Bytes after a NUL are not ignored. */
    char withnul[600];
    int n = snprintf(withnul, sizeof(withnul), "%s",
                     body_with(quoted(uuid), quoted(peer), "[\"1.2.3.4:1\"]"));
    withnul[n] = '\0';
    memcpy(withnul + n + 1, "xx", 2);
    CHECK(pos_entry_parse(withnul, (size_t)n + 3, &e, err, sizeof(err)) == POS_ENTRY_ERR_INVALID);
}

int main(void)
{
    pos_identity id;
    pos_identity_generate(&id);
    pos_identity_peer_id(&id, peer);
    pos_identity_free(&id);

    test_valid();
    test_canonical();
    test_not_an_object();
    test_keys();
    test_types();
    test_ids();
    test_peer_ids();
    test_libp2p_peer_ids();
    test_addrs();
    test_size();
    return check_finish("test_entry");
}
