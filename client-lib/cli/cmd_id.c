/*
 * `pos-p2p id [--identity FILE]`: print this device's peer id, creating its
 * identity (Ed25519 key, file mode 0600) when the file does not exist yet.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "pos/p2p.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-p2p id [--identity FILE]\n\n"
                 "Print this device's peer id, creating the identity when missing.\n"
                 "FILE defaults to $POS_IDENTITY, else $XDG_CONFIG_HOME/pos/identity,\n"
                 "else ~/.config/pos/identity.\n");
}

int cmd_id(int argc, char **argv)
{
    static const struct option opts[] = {
        {"identity", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char path[4096], err[512], peer_id[POS_P2P_PEER_ID_STRLEN];
    const char *file = NULL;
    pos_p2p_identity *id = NULL;
    int ch, created = 0;

    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((ch = getopt_long(argc, argv, "i:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'i':
            file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "%s: unknown option or missing value: %s\n\n", "pos-p2p id",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-p2p id: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!file) {
        if (pos_p2p_identity_default_path(path, sizeof(path)) != 0) {
            fprintf(stderr, "pos-p2p id: no identity path: set POS_IDENTITY or HOME, or "
                            "pass --identity FILE\n");
            return 2;
        }
        file = path;
    }
    if (pos_p2p_identity_load(file, 1, &id, &created, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-p2p id: %s\n", err);
        return 1;
    }
    pos_p2p_identity_peer_id(id, peer_id);
    if (created)
        fprintf(stderr, "pos-p2p id: created a new identity in %s\n", file);
    printf("%s\n", peer_id);
    pos_p2p_identity_del(id);
    return 0;
}
