/*
 * pos-p2p: the command-line front of libpos-p2p. This file only reads the
 * table of subcommands; each subcommand lives in its own cmd_*.c file.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static const struct cli_command commands[] = {
    {"id", "print this device's peer id (creating its identity if missing)", cmd_id},
    {"relays", "list relays, connect to each and pick a home relay", cmd_relays},
    {"advertise", "advertise this device on the local network (mDNS)", cmd_advertise},
    {"discover", "find devices on the local network (mDNS)", cmd_discover},
    {"contact", "contact cards for contacts-only discovery", cmd_contact},
    {"send", "send files to a peer (directly or through a relay)", cmd_send},
    {"listen", "receive files from peers (directly and through a relay)", cmd_listen},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-p2p COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'pos-p2p COMMAND --help' describes a command's options.\n"
                 "Environment: POS_IDENTITY (identity file), POS_LOG (error|warn|info|debug).\n");
}

int main(int argc, char **argv)
{
    pos_log_init("pos-p2p");
    if (sodium_init() < 0) {
        fprintf(stderr, "pos-p2p: libsodium failed to initialise\n");
        return 1;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "pos-p2p: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
