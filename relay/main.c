/*
 * pos-relay: the relay that operators run. This file only reads the table of
 * subcommands; each subcommand lives in its own cmd_*.c file (init, check,
 * token and usage talk to the config file and Redis; run serves QUIC).
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "log.h"

static const struct relay_command commands[] = {
    {"init", "write a new relay configuration (identity, id, p2p secret)", cmd_init},
    {"check", "validate a configuration file", cmd_check},
    {"token", "add, list or revoke client tokens (in Redis)", cmd_token},
    {"usage", "bytes relayed and circuit seconds per account", cmd_usage},
    {"run", "serve clients until SIGTERM or SIGINT", cmd_run},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-relay COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'pos-relay COMMAND --help' describes a command's options.\n"
                 "Environment: POS_RELAY_CONFIG (default configuration file, else ./config.json),\n"
                 "POS_LOG (error|warn|info|debug), POS_DOCKER=true (fixes the port at 7373).\n");
}

int relay_cli_load_config(const char *cmd, const char *path, relay_config *cfg)
{
    char err[POS_ERR_LEN];
    if (relay_config_load(cfg, path ? path : relay_config_default_path(), err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-relay %s: %s\n", cmd, err);
        return -1;
    }
    return 0;
}

int relay_cli_open_redis(const char *cmd, const relay_config *cfg, pos_redis *r)
{
    pos_redis_init(r, &cfg->redis, cfg->redis_prefix, 3000);
    if (!pos_redis_connect_now(r)) {
        if (r->policy_refused)
            fprintf(stderr, "pos-relay %s: %s\n", cmd, r->last_error);
        else
            fprintf(stderr, "pos-relay %s: %s (is redis-server running? see \"redis\" in %s)\n",
                    cmd, r->last_error, cfg->path);
        pos_redis_free(r);
        return -1;
    }
    return 0;
}

redisReply *relay_cli_expect(pos_redis *r, const char *cmd, redisReply *rep, int type)
{
    if (!rep) {
        fprintf(stderr, "pos-relay %s: Redis: %s\n", cmd,
                r->last_error[0] ? r->last_error : "connection lost");
        return NULL;
    }
    if (rep->type != type) {
        fprintf(stderr, "pos-relay %s: Redis answered %s\n", cmd,
                rep->type == REDIS_REPLY_ERROR ? rep->str : "an unexpected reply");
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

int main(int argc, char **argv)
{
    pos_log_init("pos-relay");
    if (sodium_init() < 0) {
        fprintf(stderr, "pos-relay: libsodium failed to initialise\n");
        return RELAY_EXIT_FAIL;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? RELAY_EXIT_USAGE : RELAY_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "pos-relay: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return RELAY_EXIT_USAGE;
}
