/*
 * pos-loadtest: load for the relay and the discovery API, with a report.
 * This file only reads the table of subcommands; each lives in its own file.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "loadtest.h"
#include "log.h"

static const struct loadtest_command commands[] = {
    {"control", "authenticated relay connections per second, then hold them idle", cmd_control},
    {"idle", "many idle devices on one relay: memory, keep-alive CPU, wake latency", cmd_idle},
    {"relay", "datagrams through N relayed circuits: delivered, lost, latency", cmd_relay},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-loadtest COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'pos-loadtest COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    pos_log_init("pos-loadtest");
    if (sodium_init() < 0) {
        fprintf(stderr, "pos-loadtest: libsodium failed to initialise\n");
        return 1;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "pos-loadtest: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
