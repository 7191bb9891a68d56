/*
 * pos-p2p contact card | add CARD | list: the contacts of contacts-only
 * discovery. A card is this device's peer id and its presence key; whoever
 * adds it can recognise this device's contacts-only advertisements. The
 * files live beside the identity file (see contacts.h).
 */
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "contacts.h"
#include "identity.h"
#include "pos/mdns.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-p2p contact [--identity FILE] card | add CARD | list\n\n"
                 "  card       print this device's contact card (peer id + presence key); give it\n"
                 "             only to people who may see this device in contacts-only mode\n"
                 "  add CARD   store someone's card: their contacts-only advertisements are then\n"
                 "             recognised by 'pos-p2p discover' and 'advertise'\n"
                 "  list       print the peer ids of stored contacts\n\n"
                 "Files: contacts.json and presence.key (mode 0600) beside the identity file\n"
                 "(--identity, default $POS_IDENTITY, else $XDG_CONFIG_HOME/pos/identity, else\n"
                 "~/.config/pos/identity).\n");
}

/* contact card: print this device's card (creating the presence key if missing). */
static int contact_card(const char *path)
{
    pos_identity id;
    int created;
    uint8_t key[32];
    char peer_id[POS_P2P_PEER_ID_STRLEN], card[MDNS_CARD_MAX], err[512];
    if (pos_identity_load_or_create(&id, path, &created, err, sizeof(err))) {
        fprintf(stderr, "pos-p2p contact: %s\n", err);
        return 1;
    }
    pos_identity_peer_id(&id, peer_id);
    pos_identity_free(&id);
    if (mdns_presence_key_load_or_create(path, key, err, sizeof(err))) {
        fprintf(stderr, "pos-p2p contact: %s\n", err);
        return 1;
    }
    pos_mdns_card_format(peer_id, key, card, sizeof(card));
    printf("%s\n", card);
    sodium_memzero(key, sizeof(key));
    sodium_memzero(card, sizeof(card));
    return 0;
}

/* contact add CARD: store a contact (replacing one with the same peer id). */
static int contact_add(const char *path, const char *card)
{
    struct mdns_contact_entry e;
    char err[512];
    if (pos_mdns_card_parse(card, e.peer_id, e.key)) {
        fprintf(stderr, "pos-p2p contact add: %s\n", pos_p2p_strerror(POS_P2P_ERR_MDNS_CARD));
        return 1;
    }
    int rc = mdns_contacts_add(path, &e, err, sizeof(err));
    sodium_memzero(e.key, sizeof(e.key)); /* the peer id is public: kept for the message */
    if (rc) {
        fprintf(stderr, "pos-p2p contact add: %s\n", err);
        return 1;
    }
    printf("added contact %s\n", e.peer_id);
    return 0;
}

/* contact list: the peer ids of the stored contacts, one a line. */
static int contact_list(const char *path)
{
    struct mdns_contact_entry cs[256];
    char err[512];
    int n = mdns_contacts_load(path, cs, 256, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "pos-p2p contact list: %s\n", err);
        return 1;
    }
    for (int i = 0; i < n; i++)
        printf("%s\n", cs[i].peer_id);
    sodium_memzero(cs, sizeof(cs));
    return 0;
}

int cmd_contact(int argc, char **argv)
{
    static const struct option opts[] = {{"identity", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *identity = NULL;
    char path[4096];
    int c;
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            identity = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "pos-p2p contact: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[optind];
    if (mdns_identity_path(identity, path, sizeof(path))) {
        fprintf(stderr,
                "pos-p2p contact: no identity path: set --identity, POS_IDENTITY or HOME\n");
        return 1;
    }
    if (!strcmp(sub, "card") && optind + 1 == argc)
        return contact_card(path);
    if (!strcmp(sub, "add") && optind + 2 == argc)
        return contact_add(path, argv[optind + 1]);
    if (!strcmp(sub, "list") && optind + 1 == argc)
        return contact_list(path);
    usage(stderr);
    return 2;
}
