/*
 * pos-relay token add|list|revoke: client tokens, kept in Redis so that every
 * relay of a deployment sees the same ones (layout in docs/redis-layout.md).
 *
 * A token is shown once, by `add`, on the last line of stdout. Redis holds
 * only its BLAKE2b hash (pos_secret_hash_hex) as the key of a hash with the
 * account and limits; `list` shows the first 12 hex digits of that hash as
 * the token's id, never the token. `revoke` marks the token revoked and
 * publishes its hash on the revocation channel, which makes every relay close
 * the token's connections within seconds.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "redis.h"
#include "secret.h"
#include "relay_keys.h"
#include "token_record.h"

#define MAX_TOKEN_LEN 1024

struct token_opts {
    const char *config;
    const char *account;
    uint64_t expires_s, bytes_per_sec, burst, max_conns;
};

static void token_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-relay token add    [--config FILE] [--account NAME] [--expires SECONDS]\n"
            "                              [--bytes-per-sec N] [--burst BYTES] [--max-conns N]\n"
            "       pos-relay token list   [--config FILE]\n"
            "       pos-relay token revoke [--config FILE] (TOKEN | - | --account NAME)\n\n"
            "add     creates a random token and prints it once, on the last line; Redis keeps\n"
            "        only its hash with the account and limits (0 or absent = unlimited,\n"
            "        --expires absent = never; --max-conns absent = the relay's\n"
            "        max_conns_per_token, 64 by default). The account defaults to \"default\".\n"
            "list    shows each token's id (start of its hash), account, status, limits and\n"
            "        expiry; never a token.\n"
            "revoke  revokes one token (given as argument, or read from stdin with \"-\"), or\n"
            "        every token of --account; relays close their connections within seconds.\n\n"
            "  --config FILE  relay configuration (default $POS_RELAY_CONFIG or ./config.json)\n"
            "  --help         show this help\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max) {
        fprintf(stderr, "pos-relay token: %s: expected a whole number from 0 to %" PRIu64 "\n", opt,
                max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses the options after "token SUB"; returns 0, 1 after --help, -1 on a usage error. */
static int parse_token_opts(int argc, char **argv, struct token_opts *o, int allow_limits)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},  {"account", required_argument, NULL, 'a'},
        {"expires", required_argument, NULL, 'e'}, {"bytes-per-sec", required_argument, NULL, 'b'},
        {"burst", required_argument, NULL, 'B'},   {"max-conns", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int c;
    memset(o, 0, sizeof(*o));
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (!allow_limits && (c == 'e' || c == 'b' || c == 'B' || c == 'm')) {
            fprintf(stderr, "pos-relay token %s: limits are given to \"token add\" only\n",
                    argv[0]);
            return -1;
        }
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'a':
            if (!relay_account_valid(optarg)) {
                fprintf(stderr,
                        "pos-relay token: --account: expected 1 to %d letters, digits "
                        "or . _ @ - characters\n",
                        RELAY_ACCOUNT_MAX_LEN);
                return -1;
            }
            o->account = optarg;
            break;
        case 'e':
            if (parse_u64("--expires", optarg, 100ull * 365 * 86400, &o->expires_s))
                return -1;
            break;
        case 'b':
            if (parse_u64("--bytes-per-sec", optarg, UINT64_MAX / 2, &o->bytes_per_sec))
                return -1;
            break;
        case 'B':
            if (parse_u64("--burst", optarg, UINT64_MAX / 2, &o->burst))
                return -1;
            break;
        case 'm':
            if (parse_u64("--max-conns", optarg, 1000000, &o->max_conns))
                return -1;
            break;
        case 'h':
            token_usage(stdout);
            return 1;
        default:
            token_usage(stderr);
            return -1;
        }
    }
    return 0;
}

static int token_add(pos_redis *r, const struct token_opts *o)
{
    char token[POS_TOKEN_STRLEN], hash[POS_SECRET_HASH_HEXLEN];
    char key[256], set_key[256], acct_key[256], accounts_key[256];
    const char *account = o->account ? o->account : "default";
    int64_t now = (int64_t)time(NULL);
    int64_t expires_at = o->expires_s ? now + (int64_t)o->expires_s : 0;

    pos_secret_token_new(token, sizeof(token));
    pos_secret_hash_hex(token, strlen(token), hash);
    relay_key_token(r->prefix, key, sizeof(key), hash);
    relay_key_fixed(r->prefix, set_key, sizeof(set_key), RELAY_KEY_TOKENS);
    relay_key_fixed(r->prefix, accounts_key, sizeof(accounts_key), RELAY_KEY_ACCOUNTS);
    relay_key_account_tokens(r->prefix, acct_key, sizeof(acct_key), account);

    /* One transaction: a token is never visible without its indexes. */
    redisReply *rep =
        relay_cli_expect(r, "token add", pos_redis_command(r, "MULTI"), REDIS_REPLY_STATUS);
    if (!rep)
        goto fail;
    freeReplyObject(rep);
    relay_token_record rec = {.found = 1,
                              .created_at = now,
                              .expires_at = expires_at,
                              .bytes_per_sec = o->bytes_per_sec,
                              .burst = o->burst,
                              .max_conns = o->max_conns};
    snprintf(rec.account, sizeof(rec.account), "%s", account);
    relay_token_record_cmd hset;
    relay_token_record_hset(&rec, key, &hset);
    rep = pos_redis_commandv(r, hset.argc, hset.argv, NULL);
    if (!(rep = relay_cli_expect(r, "token add", rep, REDIS_REPLY_STATUS)))
        goto fail;
    freeReplyObject(rep);
    if (!(rep = relay_cli_expect(r, "token add", pos_redis_command(r, "SADD %s %s", set_key, hash),
                                 REDIS_REPLY_STATUS)))
        goto fail;
    freeReplyObject(rep);
    if (!(rep = relay_cli_expect(r, "token add", pos_redis_command(r, "SADD %s %s", acct_key, hash),
                                 REDIS_REPLY_STATUS)))
        goto fail;
    freeReplyObject(rep);
    if (!(rep = relay_cli_expect(r, "token add",
                                 pos_redis_command(r, "SADD %s %s", accounts_key, account),
                                 REDIS_REPLY_STATUS)))
        goto fail;
    freeReplyObject(rep);
    if (!(rep = relay_cli_expect(r, "token add", pos_redis_command(r, "EXEC"), REDIS_REPLY_ARRAY)))
        goto fail;
    freeReplyObject(rep);

    fprintf(stderr, "pos-relay token add: new token for account %s (id %.12s); it is shown once:\n",
            account, hash);
    fflush(stderr);
    printf("%s\n", token);
    fflush(stdout);
    sodium_memzero(token, sizeof(token));
    return RELAY_EXIT_OK;
fail:
    sodium_memzero(token, sizeof(token));
    return RELAY_EXIT_FAIL;
}

static void format_time(int64_t t, char *out, size_t outlen)
{
    if (t <= 0) {
        snprintf(out, outlen, "never");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A limit as `token list` shows it: 0 is "unlimited". */
static void format_limit(uint64_t v, char *out, size_t outlen)
{
    if (v == 0)
        snprintf(out, outlen, "unlimited");
    else
        snprintf(out, outlen, "%llu", (unsigned long long)v);
}

/* One row of `token list` from a token record. */
static void print_token_row(const char *hash, const relay_token_record *rec)
{
    const char *status = rec->revoked                                         ? "revoked"
                         : (rec->expires_at && rec->expires_at <= time(NULL)) ? "expired"
                                                                              : "active";
    char created[32], expires[32], bps[32], burst[32], conns[32];
    format_time(rec->created_at, created, sizeof(created));
    format_time(rec->expires_at, expires, sizeof(expires));
    format_limit(rec->bytes_per_sec, bps, sizeof(bps));
    format_limit(rec->burst, burst, sizeof(burst));
    format_limit(rec->max_conns, conns, sizeof(conns));
    if (rec->max_conns == 0)
        snprintf(conns, sizeof(conns), "default"); /* the relay's max_conns_per_token */
    printf("%-12.12s  %-20s  %-7s  %-20s  %-13s  %-13s  %-9s  %s\n", hash,
           rec->found ? rec->account : "?", status, expires, bps, burst, conns, created);
}

static int token_list(pos_redis *r)
{
    char set_key[256], key[256];
    relay_key_fixed(r->prefix, set_key, sizeof(set_key), RELAY_KEY_TOKENS);
    redisReply *set = relay_cli_expect(
        r, "token list", pos_redis_command(r, "SMEMBERS %s", set_key), REDIS_REPLY_ARRAY);
    if (!set)
        return RELAY_EXIT_FAIL;
    printf("%-12s  %-20s  %-7s  %-20s  %-13s  %-13s  %-9s  %s\n", "ID", "ACCOUNT", "STATUS",
           "EXPIRES", "BYTES/S", "BURST", "MAX CONNS", "CREATED");
    int status = RELAY_EXIT_OK;
    for (size_t i = 0; i < set->elements; i++) {
        const char *hash = set->element[i]->str;
        if (set->element[i]->type != REDIS_REPLY_STRING || !relay_token_hash_valid(hash))
            continue;
        relay_key_token(r->prefix, key, sizeof(key), hash);
        redisReply *h = relay_cli_expect(r, "token list", pos_redis_command(r, "HGETALL %s", key),
                                         REDIS_REPLY_ARRAY);
        if (!h) {
            status = RELAY_EXIT_FAIL;
            break;
        }
        if (h->elements > 0) {
            relay_token_record rec;
            relay_token_record_parse(h, &rec);
            print_token_row(hash, &rec);
        }
        freeReplyObject(h);
    }
    freeReplyObject(set);
    return status;
}

/* Marks one token (by hash) revoked and tells every relay. Returns 1 revoked, 0 unknown, -1 error.
 */
static int revoke_hash(pos_redis *r, const char *hash)
{
    char key[256], channel[256];
    relay_key_token(r->prefix, key, sizeof(key), hash);
    relay_key_fixed(r->prefix, channel, sizeof(channel), RELAY_CHANNEL_REVOKED);
    redisReply *rep = relay_cli_expect(r, "token revoke", pos_redis_command(r, "EXISTS %s", key),
                                       REDIS_REPLY_INTEGER);
    if (!rep)
        return -1;
    int exists = rep->integer == 1;
    freeReplyObject(rep);
    if (!exists)
        return 0;
    rep = relay_cli_expect(r, "token revoke",
                           pos_redis_command(r, "HSET %s %s 1", key, RELAY_TOKEN_REVOKED),
                           REDIS_REPLY_INTEGER);
    if (!rep)
        return -1;
    freeReplyObject(rep);
    rep = relay_cli_expect(r, "token revoke", pos_redis_command(r, "PUBLISH %s %s", channel, hash),
                           REDIS_REPLY_INTEGER);
    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 1;
}

static int revoke_account(pos_redis *r, const char *account)
{
    char acct_key[256];
    relay_key_account_tokens(r->prefix, acct_key, sizeof(acct_key), account);
    redisReply *set = relay_cli_expect(
        r, "token revoke", pos_redis_command(r, "SMEMBERS %s", acct_key), REDIS_REPLY_ARRAY);
    if (!set)
        return RELAY_EXIT_FAIL;
    int n = 0, status = RELAY_EXIT_OK;
    for (size_t i = 0; i < set->elements; i++) {
        if (set->element[i]->type != REDIS_REPLY_STRING ||
            !relay_token_hash_valid(set->element[i]->str))
            continue;
        int rc = revoke_hash(r, set->element[i]->str);
        if (rc < 0) {
            status = RELAY_EXIT_FAIL;
            break;
        }
        n += rc;
    }
    freeReplyObject(set);
    if (status == RELAY_EXIT_OK && n == 0) {
        fprintf(stderr, "pos-relay token revoke: account %s has no tokens (nothing changed)\n",
                account);
        return RELAY_EXIT_FAIL;
    }
    if (status == RELAY_EXIT_OK)
        printf("revoked %d token%s of account %s\n", n, n == 1 ? "" : "s", account);
    return status;
}

/* Reads a token given as "-" from the first line of stdin. */
static int read_token_stdin(char *buf, size_t cap)
{
    if (!fgets(buf, (int)cap, stdin))
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] ? 0 : -1;
}

static int token_revoke(pos_redis *r, const struct token_opts *o, const char *token_arg)
{
    if (o->account)
        return revoke_account(r, o->account);
    char buf[MAX_TOKEN_LEN + 2], hash[POS_SECRET_HASH_HEXLEN];
    const char *token = token_arg;
    if (strcmp(token_arg, "-") == 0) {
        if (read_token_stdin(buf, sizeof(buf)) != 0) {
            fprintf(stderr, "pos-relay token revoke: no token on stdin\n");
            return RELAY_EXIT_FAIL;
        }
        token = buf;
    }
    pos_secret_hash_hex(token, strlen(token), hash);
    sodium_memzero(buf, sizeof(buf));
    int rc = revoke_hash(r, hash);
    if (rc == 0)
        fprintf(stderr, "pos-relay token revoke: no such token (nothing changed)\n");
    if (rc <= 0)
        return RELAY_EXIT_FAIL;
    printf("revoked token %.12s\n", hash);
    return RELAY_EXIT_OK;
}

int cmd_token(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        token_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? RELAY_EXIT_USAGE : RELAY_EXIT_OK;
    }
    const char *sub = argv[1];
    int is_add = !strcmp(sub, "add"), is_list = !strcmp(sub, "list"),
        is_revoke = !strcmp(sub, "revoke");
    if (!is_add && !is_list && !is_revoke) {
        fprintf(stderr, "pos-relay token: unknown subcommand \"%s\" (add, list or revoke)\n", sub);
        return RELAY_EXIT_USAGE;
    }
    struct token_opts o;
    int rc = parse_token_opts(argc - 1, argv + 1, &o, is_add);
    if (rc != 0)
        return rc > 0 ? RELAY_EXIT_OK : RELAY_EXIT_USAGE;
    /* optind counts within argv + 1. */
    int rest = argc - 1 - optind;
    const char *token_arg = rest > 0 ? argv[1 + optind] : NULL;
    if (is_revoke && ((o.account != NULL) == (rest == 1) || rest > 1)) {
        fprintf(stderr, "pos-relay token revoke: give either a TOKEN (or - to read it from "
                        "stdin) or --account NAME\n");
        return RELAY_EXIT_USAGE;
    }
    if (!is_revoke && rest > 0) {
        fprintf(stderr, "pos-relay token %s: unexpected argument\n", sub);
        return RELAY_EXIT_USAGE;
    }
    if (is_list && o.account) {
        fprintf(stderr, "pos-relay token list: --account is not supported by list\n");
        return RELAY_EXIT_USAGE;
    }
    relay_config cfg;
    if (relay_cli_load_config("token", o.config, &cfg) != 0)
        return RELAY_EXIT_FAIL;
    pos_redis r;
    int status = RELAY_EXIT_FAIL;
    if (relay_cli_open_redis("token", &cfg, &r) == 0) {
        if (is_add)
            status = token_add(&r, &o);
        else if (is_list)
            status = token_list(&r);
        else
            status = token_revoke(&r, &o, token_arg);
    }
    pos_redis_free(&r);
    relay_config_free(&cfg);
    return status;
}
