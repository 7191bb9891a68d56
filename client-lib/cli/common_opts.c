/*
 * What the relay-using subcommands of pos-p2p (send, listen, relays) do
 * alike with their options: take --api-url, --token and --identity, find the
 * identity file when --identity is not given, and load (or create) the
 * identity, each failure told on stderr prefixed with the command's name.
 */
#include <stdio.h>

#include "cli.h"

int cli_identity_path(const char *cmd, const char **identity, char *path, size_t size)
{
    if (*identity)
        return 0;
    if (pos_p2p_identity_default_path(path, size) != 0) {
        fprintf(stderr, "pos-p2p %s: no identity path: pass --identity FILE\n", cmd);
        return 2;
    }
    *identity = path;
    return 0;
}

pos_p2p_identity *cli_identity_load(const char *cmd, const char *identity)
{
    pos_p2p_identity *id = NULL;
    char err[512];
    if (pos_p2p_identity_load(identity, 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-p2p %s: %s\n", cmd, err);
        return NULL;
    }
    return id;
}

int cli_relay_opt(int ch, const char *arg, const char **api_url, const char **token,
                  const char **identity)
{
    switch (ch) {
    case 'a':
        *api_url = arg;
        return 1;
    case 't':
        *token = arg;
        return 1;
    case 'i':
        *identity = arg;
        return 1;
    default:
        return 0;
    }
}
