/*
 * The subcommands of pos-relay, each in its own file, and the few helpers
 * they share. Each cmd_* gets argv with argv[0] the subcommand's name, prints
 * errors on stderr and returns the process exit status (0 ok, 1 failure,
 * 2 usage error).
 */
#ifndef POS_RELAY_CMDS_H
#define POS_RELAY_CMDS_H

#include <stddef.h>

#include "redis.h"
#include "relay_config.h"

struct relay_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

int cmd_init(int argc, char **argv);  /* cmd_init.c */
int cmd_check(int argc, char **argv); /* cmd_check.c */
int cmd_token(int argc, char **argv); /* cmd_token.c */
int cmd_usage(int argc, char **argv); /* cmd_usage.c */
int cmd_run(int argc, char **argv);   /* cmd_run.c (QUIC side) */

/* Exit statuses of the subcommands. */
#define RELAY_EXIT_OK 0
#define RELAY_EXIT_FAIL 1
#define RELAY_EXIT_USAGE 2

/*
 * relay_cli_load_config loads |path| (or the default path when NULL) into
 * |cfg|. On error prints the sentence (file, key, expectation) prefixed with
 * "pos-relay CMD: " on stderr and returns -1 (|cfg| then needs no free).
 */
int relay_cli_load_config(const char *cmd, const char *path, relay_config *cfg);

/*
 * relay_cli_open_redis connects |r| to the Redis of |cfg| (the caller frees it
 * with pos_redis_free in every case). Prints why not and returns -1.
 */
int relay_cli_open_redis(const char *cmd, const relay_config *cfg, pos_redis *r);

/*
 * relay_cli_expect checks that |rep| (a reply of |r|, possibly NULL) has
 * |type|. Returns |rep|, or NULL after printing the error (|rep| freed).
 */
redisReply *relay_cli_expect(pos_redis *r, const char *cmd, redisReply *rep, int type);

#endif
