/*
 * Unit tests of the relay's admission policy (relay/admission.c) and of the
 * token record codec (relay/token_record.c): what a token record, the
 * relay's default connection cap and the time decide, without Redis. The
 * HGETALL replies are built by hand as hiredis would hand them over.
 */
#include <stdio.h>
#include <string.h>

#include "admission.h"
#include "check.h"
#include "token_record.h"

#define NOW 1800000000LL

/* A fake HGETALL reply of |n| strings (field, value, ...). */
struct fake_reply {
    redisReply top;
    redisReply el[16];
    redisReply *ptrs[16];
};

static const redisReply *fake_hgetall(struct fake_reply *f, const char *const *kv, size_t n)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        f->el[i].type = REDIS_REPLY_STRING;
        f->el[i].str = (char *)kv[i];
        f->el[i].len = strlen(kv[i]);
        f->ptrs[i] = &f->el[i];
    }
    f->top.type = REDIS_REPLY_ARRAY;
    f->top.elements = n;
    f->top.element = f->ptrs;
    return &f->top;
}

static void test_parse(void)
{
    struct fake_reply f;
    relay_token_record rec;
    const char *full[] = {"account",       "alice",  "created_at", "1700000000", "expires_at", "0",
                          "bytes_per_sec", "250000", "burst",      "500000",     "max_conns",  "3",
                          "revoked",       "0"};
    relay_token_record_parse(fake_hgetall(&f, full, 14), &rec);
    CHECK(rec.found && strcmp(rec.account, "alice") == 0);
    CHECK(rec.created_at == 1700000000 && rec.expires_at == 0);
    CHECK(rec.bytes_per_sec == 250000 && rec.burst == 500000 && rec.max_conns == 3);
    CHECK(!rec.revoked);

    /* An empty reply (no such key) and a record without an account are no record. */
    relay_token_record_parse(fake_hgetall(&f, full, 0), &rec);
    CHECK(!rec.found);
    const char *no_account[] = {"revoked", "0", "max_conns", "5"};
    relay_token_record_parse(fake_hgetall(&f, no_account, 4), &rec);
    CHECK(!rec.found && rec.max_conns == 5);

    /* revoked: anything but "0"; absent numbers read as 0; unknown fields are ignored. */
    const char *odd[] = {"account", "bob", "revoked", "1", "colour", "blue", "burst"};
    relay_token_record_parse(fake_hgetall(&f, odd, 7), &rec); /* odd count: last one dropped */
    CHECK(rec.found && rec.revoked && rec.burst == 0 && rec.bytes_per_sec == 0);
    CHECK(relay_token_record_field(&rec, "colour", "blue") == 0);
    CHECK(relay_token_record_field(&rec, RELAY_TOKEN_REVOKED, "0") == 1 && !rec.revoked);

    /* A field given twice: the first counts, as a hash lookup would find it. */
    const char *twice[] = {"account", "first", "account", "second"};
    relay_token_record_parse(fake_hgetall(&f, twice, 4), &rec);
    CHECK(strcmp(rec.account, "first") == 0);

    /* Non-string elements are skipped, not read. */
    relay_token_record_parse(fake_hgetall(&f, full, 14), &rec);
    f.el[3].type = REDIS_REPLY_INTEGER;
    relay_token_record_parse(&f.top, &rec);
    CHECK(rec.found && rec.created_at == 0 && rec.max_conns == 3);
}

static void test_hset_round_trip(void)
{
    relay_token_record in = {.found = 1,
                             .created_at = 1700000001,
                             .expires_at = NOW,
                             .bytes_per_sec = 1000,
                             .burst = 18446744073709551615ull / 2,
                             .max_conns = 7};
    snprintf(in.account, sizeof(in.account), "acme.ops");
    relay_token_record_cmd cmd;
    relay_token_record_hset(&in, "pos:token:abc", &cmd);
    CHECK(cmd.argc == 2 + 2 * RELAY_TOKEN_FIELDS);
    CHECK(strcmp(cmd.argv[0], "HSET") == 0 && strcmp(cmd.argv[1], "pos:token:abc") == 0);
    CHECK(strcmp(cmd.argv[cmd.argc - 2], "revoked") == 0 &&
          strcmp(cmd.argv[cmd.argc - 1], "0") == 0);

    struct fake_reply f;
    relay_token_record out;
    relay_token_record_parse(fake_hgetall(&f, cmd.argv + 2, (size_t)cmd.argc - 2), &out);
    CHECK(out.found && strcmp(out.account, in.account) == 0);
    CHECK(out.created_at == in.created_at && out.expires_at == in.expires_at);
    CHECK(out.bytes_per_sec == in.bytes_per_sec && out.burst == in.burst);
    CHECK(out.max_conns == in.max_conns && !out.revoked);
}

static relay_token_record record(int64_t expires_at, int revoked)
{
    relay_token_record r = {.found = 1, .expires_at = expires_at, .revoked = revoked};
    snprintf(r.account, sizeof(r.account), "alice");
    return r;
}

static void test_verdict(void)
{
    relay_token_record none = {0};
    relay_token_record r = record(0, 0);
    CHECK(relay_admission_verdict(&none, NOW) == RELAY_REFUSED_UNKNOWN_TOKEN);
    CHECK(relay_admission_verdict(&r, NOW) == RELAY_OK); /* never expires */
    r = record(NOW + 1, 0);
    CHECK(relay_admission_verdict(&r, NOW) == RELAY_OK);
    r = record(NOW, 0); /* expired at the second it names */
    CHECK(relay_admission_verdict(&r, NOW) == RELAY_REFUSED_EXPIRED);
    r = record(NOW - 100, 1); /* revoked outranks expired */
    CHECK(relay_admission_verdict(&r, NOW) == RELAY_REFUSED_REVOKED);
    none.revoked = 1; /* no record outranks everything */
    CHECK(relay_admission_verdict(&none, NOW) == RELAY_REFUSED_UNKNOWN_TOKEN);
}

static void test_limits(void)
{
    relay_token_record r = record(NOW + 60, 0);
    relay_limits l;
    r.bytes_per_sec = 4096;
    r.burst = 8192;
    relay_admission_limits(&r, 64, &l);
    CHECK(strcmp(l.account, "alice") == 0 && l.bytes_per_sec == 4096 && l.burst_bytes == 8192);
    CHECK(l.max_conns == 64 && l.expires_at == NOW + 60); /* no cap of its own: the default */
    r.max_conns = 2;
    relay_admission_limits(&r, 64, &l);
    CHECK(l.max_conns == 2);
    r.max_conns = 0;
    relay_admission_limits(&r, 0, &l); /* max_conns_per_token 0: no cap at all */
    CHECK(l.max_conns == 0);
    relay_token_record none = {0};
    none.bytes_per_sec = 5;
    relay_admission_limits(&none, 64, &l);
    CHECK(l.account[0] == '\0' && l.bytes_per_sec == 0 && l.max_conns == 0);
}

static void test_script_and_reasons(void)
{
    CHECK(relay_admission_script_verdict(1) == RELAY_OK);
    CHECK(relay_admission_script_verdict(-1) == RELAY_REFUSED_RATE_LIMITED);
    CHECK(relay_admission_script_verdict(-2) == RELAY_REFUSED_TOO_MANY_CONNS);
    CHECK(strcmp(relay_refusal_reason(RELAY_REFUSED_EXPIRED), "token expired") == 0);
    CHECK(strcmp(relay_refusal_reason(RELAY_REFUSED_REVOKED), "token revoked") == 0);
    CHECK(strcmp(relay_refusal_reason((enum relay_refusal)0x999), "refused") == 0);
}

int main(void)
{
    test_parse();
    test_hset_round_trip();
    test_verdict();
    test_limits();
    test_script_and_reasons();
    return check_finish("relay-admission");
}
