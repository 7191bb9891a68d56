/*
 * pos-p2p advertise / discover: the local-discovery commands, thin fronts
 * over pos_mdns_* (client-lib/mdns). advertise publishes this device (and
 * browses, so it also reports peers) until SIGTERM/SIGINT, then sends
 * goodbyes; discover browses for a while and prints what it finds, one
 * JSON object per line with --json.
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "contacts.h"
#include "identity.h"
#include "pos/p2p.h"
#include "uuid.h"

#define MAX_LIBRARIES 16

static volatile int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

struct printer {
    int json;
};

static const char *event_name(enum pos_mdns_event ev)
{
    return ev == POS_MDNS_FOUND ? "found" : ev == POS_MDNS_UPDATED ? "updated" : "lost";
}

/* Copies |s| into |out|, turning it into valid UTF-8 ('?' for bytes jansson refuses). */
static void utf8_or_mark(const char *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s", s);
    for (size_t i = 0; out[i]; i++) {
        json_t *t = json_string(out);
        if (t) {
            json_decref(t);
            return;
        }
        if ((unsigned char)out[i] >= 0x80)
            out[i] = '?';
    }
}

/* Prints text that came from the network with control bytes replaced, so a
 * peer cannot send escape sequences to the terminal. */
static void print_safe(const char *s)
{
    for (; *s; s++)
        putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

static void print_event(void *user, enum pos_mdns_event ev, const pos_mdns_peer *p)
{
    const struct printer *pr = user;
    if (pr->json) {
        json_t *o = json_object(), *addrs = json_array(), *txt = json_object();
        json_object_set_new(o, "event", json_string(event_name(ev)));
        /* Network text that is not UTF-8 is shown with its bad bytes as '?'. */
        char inst[256];
        utf8_or_mark(p->instance, inst, sizeof(inst));
        json_object_set_new(o, "instance", json_string(inst));
        json_object_set_new(o, "peer_id", p->peer_id ? json_string(p->peer_id) : json_null());
        json_object_set_new(o, "contact", json_boolean(p->contact));
        json_object_set_new(o, "name", p->name ? json_string(p->name) : json_null());
        json_object_set_new(o, "os", p->os ? json_string(p->os) : json_null());
        json_object_set_new(o, "model", p->model ? json_string(p->model) : json_null());
        for (size_t i = 0; i < p->n_addrs; i++)
            json_array_append_new(addrs, json_string(p->addrs[i]));
        json_object_set_new(o, "addrs", addrs);
        json_object_set_new(o, "port", json_integer(p->port));
        for (size_t i = 0; i < p->n_txt; i++) {
            const char *eq = strchr(p->txt[i], '=');
            char key[256];
            size_t kl = eq ? (size_t)(eq - p->txt[i]) : strlen(p->txt[i]);
            snprintf(key, sizeof(key), "%.*s", (int)kl, p->txt[i]);
            /* TXT bytes from the network may not be UTF-8: json_stringn_nocheck is wrong,
               so non-UTF-8 values are skipped by jansson returning NULL. */
            json_t *val = eq ? json_string(eq + 1) : json_true();
            if (val)
                json_object_set_new(txt, key, val);
        }
        json_object_set_new(o, "txt", txt);
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("%-7s ", event_name(ev));
        print_safe(p->instance);
        if (p->peer_id)
            printf(" peer_id=%s%s", p->peer_id, p->contact ? " (contact)" : "");
        if (ev != POS_MDNS_LOST) {
            if (p->name) {
                printf(" name=\"");
                print_safe(p->name);
                printf("\"");
            }
            printf(" port=%u addrs=", p->port);
            for (size_t i = 0; i < p->n_addrs; i++)
                printf("%s%s", i ? "," : "", p->addrs[i]);
        }
        printf("\n");
    }
    fflush(stdout);
}

static int load_identity(const char *opt, char *path, size_t cap, char peer_id[44])
{
    pos_identity id;
    char err[512];
    int created;
    if (mdns_identity_path(opt, path, cap)) {
        fprintf(stderr, "pos-p2p: no identity path: set --identity, POS_IDENTITY or HOME\n");
        return -1;
    }
    if (pos_identity_load_or_create(&id, path, &created, err, sizeof(err))) {
        fprintf(stderr, "pos-p2p: %s\n", err);
        return -1;
    }
    pos_identity_peer_id(&id, peer_id);
    pos_identity_free(&id);
    return 0;
}

static int add_contacts(pos_mdns *m, const char *identity_path)
{
    struct mdns_contact_entry *cs = calloc(256, sizeof(*cs));
    char err[512];
    if (!cs)
        return -1;
    int n = mdns_contacts_load(identity_path, cs, 256, err, sizeof(err));
    if (n < 0)
        fprintf(stderr, "pos-p2p: %s\n", err);
    for (int i = 0; i < n; i++)
        pos_mdns_add_contact(m, cs[i].peer_id, cs[i].key);
    sodium_memzero(cs, 256 * sizeof(*cs));
    free(cs);
    return n < 0 ? -1 : 0;
}

static void advertise_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-p2p advertise [--identity FILE] [--name N] [--os O] [--model M]\n"
            "                         [--library UUID]... [--mode enabled|contacts-only|disabled]\n"
            "                         [--port N] [--json]\n\n"
            "Advertises this device as _sd._udp.local. on every multicast interface (IPv4 and\n"
            "IPv6) until SIGTERM or SIGINT, then sends goodbyes. It also browses and prints the\n"
            "peers it sees (one JSON object per line with --json).\n"
            "  --mode contacts-only  random instance name and a tag only contacts recognise\n"
            "                        (see 'pos-p2p contact'); no name, model, OS or libraries\n"
            "  --mode disabled       send nothing and answer nothing\n"
            "  --port N              the port peers connect to (default 7373)\n"
            "  --identity FILE       the key file (default $POS_IDENTITY, else\n"
            "                        $XDG_CONFIG_HOME/pos/identity, else ~/.config/pos/identity);\n"
            "                        contacts.json and presence.key live beside it\n");
}

int cmd_advertise(int argc, char **argv)
{
    static const struct option opts[] = {
        {"identity", required_argument, NULL, 'i'}, {"name", required_argument, NULL, 'n'},
        {"os", required_argument, NULL, 'o'},       {"model", required_argument, NULL, 'm'},
        {"library", required_argument, NULL, 'l'},  {"mode", required_argument, NULL, 'M'},
        {"port", required_argument, NULL, 'p'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *identity = NULL, *libs[MAX_LIBRARIES];
    pos_mdns_config cfg;
    struct printer pr = {0};
    int c;
    memset(&cfg, 0, sizeof(cfg));
    cfg.port = 7373;
    cfg.advertise = 1;
    cfg.browse = 1;
    cfg.version = "0.1.0";
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            identity = optarg;
            break;
        case 'n':
            cfg.name = optarg;
            break;
        case 'o':
            cfg.os = optarg;
            break;
        case 'm':
            cfg.model = optarg;
            break;
        case 'l':
            if (cfg.n_libraries == MAX_LIBRARIES || !pos_uuid_valid(optarg, strlen(optarg))) {
                fprintf(stderr, "pos-p2p advertise: --library needs a UUID (at most %d): \"%s\"\n",
                        MAX_LIBRARIES, optarg);
                return 2;
            }
            libs[cfg.n_libraries++] = optarg;
            break;
        case 'M':
            if (!strcmp(optarg, "enabled"))
                cfg.mode = POS_MDNS_ENABLED;
            else if (!strcmp(optarg, "contacts-only"))
                cfg.mode = POS_MDNS_CONTACTS_ONLY;
            else if (!strcmp(optarg, "disabled"))
                cfg.mode = POS_MDNS_DISABLED;
            else {
                fprintf(stderr,
                        "pos-p2p advertise: --mode must be enabled, contacts-only or "
                        "disabled, not \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'p': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 65535) {
                fprintf(stderr, "pos-p2p advertise: --port must be 1..65535, not \"%s\"\n", optarg);
                return 2;
            }
            cfg.port = (uint16_t)v;
            break;
        }
        case 'j':
            pr.json = 1;
            break;
        case 'h':
            advertise_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "pos-p2p advertise: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            advertise_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-p2p advertise: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    cfg.libraries = libs;
    char path[4096], peer_id[44];
    uint8_t key[32];
    if (load_identity(identity, path, sizeof(path), peer_id))
        return 1;
    cfg.peer_id = peer_id;
    if (cfg.mode == POS_MDNS_CONTACTS_ONLY) {
        char err[512];
        if (mdns_presence_key_load_or_create(path, key, err, sizeof(err))) {
            fprintf(stderr, "pos-p2p advertise: %s\n", err);
            return 1;
        }
        cfg.presence_key = key;
    }
    if (cfg.mode == POS_MDNS_DISABLED)
        cfg.browse = 0;
    pos_mdns *m;
    int rc = pos_mdns_new(&m, &cfg, print_event, &pr);
    sodium_memzero(key, sizeof(key));
    if (rc) {
        fprintf(stderr, "pos-p2p advertise: %s\n", pos_p2p_strerror(rc));
        return 1;
    }
    if (add_contacts(m, path)) {
        pos_mdns_del(m);
        return 1;
    }
    install_signals();
    fprintf(stderr, "pos-p2p advertise: mode %s, peer id %s, port %u\n",
            cfg.mode == POS_MDNS_ENABLED         ? "enabled"
            : cfg.mode == POS_MDNS_CONTACTS_ONLY ? "contacts-only"
                                                 : "disabled",
            peer_id, cfg.port);
    char shown[64] = "";
    while (!stop_flag) {
        if (pos_mdns_run(m, 200, &stop_flag))
            break;
        if (strcmp(shown, pos_mdns_instance(m))) {
            snprintf(shown, sizeof(shown), "%s", pos_mdns_instance(m));
            if (*shown)
                fprintf(stderr, "pos-p2p advertise: advertising instance \"%s\"\n", shown);
        }
    }
    pos_mdns_del(m); /* goodbyes */
    fprintf(stderr, "pos-p2p advertise: stopped\n");
    return 0;
}

static void discover_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-p2p discover [--identity FILE] [--timeout SECONDS] [--json]\n\n"
            "Browses _sd._udp.local. for SECONDS (default 5; 0 runs until SIGINT/SIGTERM) and\n"
            "prints found/updated/lost peers. --json prints one object per line with event,\n"
            "instance, peer_id (null when unknown), contact, name, os, model, addrs, port,\n"
            "txt. Contacts (see 'pos-p2p contact') in contacts-only mode are recognised;\n"
            "they are read from contacts.json beside the identity file (--identity, default\n"
            "$POS_IDENTITY, else $XDG_CONFIG_HOME/pos/identity, else ~/.config/pos/identity).\n");
}

int cmd_discover(int argc, char **argv)
{
    static const struct option opts[] = {{"identity", required_argument, NULL, 'i'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *identity = NULL;
    double timeout = 5;
    struct printer pr = {0};
    int c;
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            identity = optarg;
            break;
        case 't': {
            char *end;
            timeout = strtod(optarg, &end);
            if (*end || !(timeout >= 0) || timeout > 86400 * 365) {
                fprintf(stderr, "pos-p2p discover: --timeout needs seconds >= 0, not \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 'j':
            pr.json = 1;
            break;
        case 'h':
            discover_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "pos-p2p discover: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            discover_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-p2p discover: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    char path[4096], peer_id[44];
    if (load_identity(identity, path, sizeof(path), peer_id))
        return 1;
    pos_mdns_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.browse = 1;
    pos_mdns *m;
    int rc = pos_mdns_new(&m, &cfg, print_event, &pr);
    if (rc) {
        fprintf(stderr, "pos-p2p discover: %s\n", pos_p2p_strerror(rc));
        return 1;
    }
    if (add_contacts(m, path)) {
        pos_mdns_del(m);
        return 1;
    }
    install_signals();
    rc = pos_mdns_run(m, timeout > 0 ? (int)(timeout * 1000) : -1, &stop_flag);
    pos_mdns_del(m);
    if (rc) {
        fprintf(stderr, "pos-p2p discover: %s\n", pos_p2p_strerror(rc));
        return 1;
    }
    return 0;
}
