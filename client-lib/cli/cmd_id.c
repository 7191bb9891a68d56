/*
 * `pos-p2p id [--identity FILE] [--libp2p]`: print this device's peer id,
 * creating its identity (Ed25519 key, file mode 0600) when the file does not
 * exist yet. stdout has the one form asked for (base64 by default, so that
 * `ID=$(pos-p2p id)` works); stderr names the other form too.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "identity.h"
#include "peer_id.h"
#include "pos/p2p.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-p2p id [--identity FILE] [--libp2p]\n\n"
                 "Print this device's peer id, creating the identity when missing.\n"
                 "stdout: the peer id (43 characters of base64), or with --libp2p the\n"
                 "same key as a libp2p PeerId (12D3KooW..., Spacedrive's relay-list form);\n"
                 "stderr also shows the other form.\n"
                 "FILE defaults to $POS_IDENTITY, else $XDG_CONFIG_HOME/pos/identity,\n"
                 "else ~/.config/pos/identity.\n");
}

int cmd_id(int argc, char **argv)
{
    static const struct option opts[] = {
        {"identity", required_argument, NULL, 'i'},
        {"libp2p", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char path[4096], err[512], peer_id[POS_P2P_PEER_ID_STRLEN];
    char libp2p[POS_LIBP2P_PEER_ID_STRLEN];
    uint8_t key[32];
    const char *file = NULL;
    pos_p2p_identity *id = NULL;
    int ch, created = 0, want_libp2p = 0;

    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((ch = getopt_long(argc, argv, "i:lh", opts, NULL)) != -1) {
        switch (ch) {
        case 'i':
            file = optarg;
            break;
        case 'l':
            want_libp2p = 1;
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
    if (pos_peer_id_parse(peer_id, strlen(peer_id), key) != 0) { /* cannot happen */
        pos_p2p_identity_del(id);
        fprintf(stderr, "pos-p2p id: internal error: bad peer id\n");
        return 1;
    }
    pos_libp2p_peer_id_format(key, libp2p);
    if (created)
        fprintf(stderr, "pos-p2p id: created a new identity in %s\n", file);
    if (want_libp2p)
        fprintf(stderr, "pos-p2p id: peer id %s; as a libp2p PeerId:\n", peer_id);
    else
        fprintf(stderr, "pos-p2p id: as a libp2p PeerId %s; peer id:\n", libp2p);
    fflush(stderr);
    printf("%s\n", want_libp2p ? libp2p : peer_id);
    pos_p2p_identity_del(id);
    return 0;
}
