/*
 * pos-relay usage: per account, the bytes relayed and circuit seconds that
 * the relays add up in Redis (<prefix>usage:<account>, fields bytes_relayed
 * and circuit_seconds, incremented with HINCRBY by every relay's services,
 * relay/budget.c, every RELAY_USAGE_FLUSH_S seconds and at shutdown).
 * Accounts come from the <prefix>accounts set that `token add` fills.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "relay_keys.h"

static void usage_usage(FILE *out)
{
    fprintf(out, "usage: pos-relay usage [--config FILE] [--account NAME]\n\n"
                 "Prints, per account, the bytes relayed and the circuit seconds counted by\n"
                 "all relays sharing the configured Redis. Each relay adds what it counted\n"
                 "every 5 seconds and when it stops, so the figures may lag by that much.\n\n"
                 "  --config FILE   relay configuration (default $POS_RELAY_CONFIG or "
                 "./config.json)\n"
                 "  --account NAME  only this account\n"
                 "  --help          show this help\n");
}

static const char *field_or_zero(const redisReply *rep, size_t i)
{
    if (rep->elements > i && rep->element[i]->type == REDIS_REPLY_STRING)
        return rep->element[i]->str;
    return "0";
}

/* Prints one account's line; returns 0 or -1 after a Redis error. */
static int print_account(pos_redis *r, const char *account)
{
    char key[RELAY_KEY_LEN];
    relay_key_usage(r->prefix, key, sizeof(key), account);
    redisReply *rep = relay_cli_expect(
        r, "usage",
        pos_redis_command(r, "HMGET %s %s %s", key, RELAY_USAGE_BYTES, RELAY_USAGE_SECONDS),
        REDIS_REPLY_ARRAY);
    if (!rep)
        return -1;
    printf("%-32s  %20s  %16s\n", account, field_or_zero(rep, 0), field_or_zero(rep, 1));
    freeReplyObject(rep);
    return 0;
}

static int show_usage(pos_redis *r, const char *only)
{
    char accounts[RELAY_KEY_LEN];
    relay_key_fixed(r->prefix, accounts, sizeof(accounts), RELAY_KEY_ACCOUNTS);
    if (only) {
        redisReply *rep =
            relay_cli_expect(r, "usage", pos_redis_command(r, "SISMEMBER %s %s", accounts, only),
                             REDIS_REPLY_INTEGER);
        if (!rep)
            return RELAY_EXIT_FAIL;
        int known = rep->integer == 1;
        freeReplyObject(rep);
        if (!known) {
            fprintf(stderr,
                    "pos-relay usage: no account \"%s\" (accounts are made by "
                    "\"pos-relay token add --account NAME\")\n",
                    only);
            return RELAY_EXIT_FAIL;
        }
    }
    redisReply *set = NULL;
    if (!only) {
        set = relay_cli_expect(r, "usage", pos_redis_command(r, "SORT %s ALPHA", accounts),
                               REDIS_REPLY_ARRAY);
        if (!set)
            return RELAY_EXIT_FAIL;
    }
    printf("%-32s  %20s  %16s\n", "ACCOUNT", "BYTES RELAYED", "CIRCUIT SECONDS");
    int status = RELAY_EXIT_OK;
    if (only) {
        status = print_account(r, only) == 0 ? RELAY_EXIT_OK : RELAY_EXIT_FAIL;
    } else {
        for (size_t i = 0; i < set->elements && status == RELAY_EXIT_OK; i++) {
            if (set->element[i]->type == REDIS_REPLY_STRING &&
                relay_account_valid(set->element[i]->str) &&
                print_account(r, set->element[i]->str) != 0)
                status = RELAY_EXIT_FAIL;
        }
        freeReplyObject(set);
    }
    return status;
}

int cmd_usage(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"account", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *account = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'a':
            if (!relay_account_valid(optarg)) {
                fprintf(stderr,
                        "pos-relay usage: --account: expected 1 to %d letters, digits "
                        "or . _ @ - characters\n",
                        RELAY_ACCOUNT_MAX_LEN);
                return RELAY_EXIT_USAGE;
            }
            account = optarg;
            break;
        case 'h':
            usage_usage(stdout);
            return RELAY_EXIT_OK;
        default:
            usage_usage(stderr);
            return RELAY_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pos-relay usage: unexpected argument \"%s\"\n", argv[optind]);
        return RELAY_EXIT_USAGE;
    }
    relay_config cfg;
    if (relay_cli_load_config("usage", path, &cfg) != 0)
        return RELAY_EXIT_FAIL;
    pos_redis r;
    int status = RELAY_EXIT_FAIL;
    if (relay_cli_open_redis("usage", &cfg, &r) == 0)
        status = show_usage(&r, account);
    pos_redis_free(&r);
    relay_config_free(&cfg);
    return status;
}
