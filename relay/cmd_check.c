/*
 * pos-relay check: loads the configuration exactly as `run` would and prints
 * "configuration OK", or the error naming the file, the key and what was
 * expected, with a non-zero exit (OpenBSD relayd -n). It does not contact
 * Redis or the discovery API.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cmds.h"

static void check_usage(FILE *out)
{
    fprintf(out, "usage: pos-relay check [--config FILE]\n\n"
                 "Validates a relay configuration and prints \"configuration OK\", or the\n"
                 "error (file, key, expectation) with a non-zero exit status.\n\n"
                 "  --config FILE  file to check (default $POS_RELAY_CONFIG or ./config.json)\n"
                 "  --help         show this help\n");
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            check_usage(stdout);
            return RELAY_EXIT_OK;
        default:
            check_usage(stderr);
            return RELAY_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pos-relay check: unexpected argument \"%s\"\n", argv[optind]);
        return RELAY_EXIT_USAGE;
    }
    relay_config cfg;
    if (relay_cli_load_config("check", path, &cfg) != 0)
        return RELAY_EXIT_FAIL;
    struct stat st;
    if (stat(cfg.path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr,
                "pos-relay check: warning: %s holds secrets but other users may read it "
                "(mode %03o); run chmod 600 %s\n",
                cfg.path, (unsigned)(st.st_mode & 0777), cfg.path);
    relay_config_free(&cfg);
    printf("configuration OK\n");
    return RELAY_EXIT_OK;
}
