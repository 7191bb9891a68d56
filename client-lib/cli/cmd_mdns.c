/*
 * pos-p2p advertise / discover: the local-discovery commands, thin fronts
 * over pos_mdns_* (client-lib/mdns). advertise publishes this device (and
 * browses, so it also reports peers) until SIGTERM/SIGINT, then sends
 * goodbyes; with --metadata-file it reads name / os / model / libraries
 * from a JSON file, again on every SIGHUP, and announces the change.
 * discover browses for a while and prints what it finds, one JSON object
 * per line with --json.
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "contacts.h"
#include "identity.h"
#include "pos/mdns.h"
#include "utf8.h"
#include "uuid.h"

#define MAX_LIBRARIES 16

static volatile int stop_flag, hup_flag, wake_flag;

static int flag_set(void *arg)
{
    return *(volatile int *)arg != 0;
}

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        hup_flag = 1;
    else
        stop_flag = 1;
    wake_flag = 1;
}

static void install_signals(bool hup)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (hup)
        sigaction(SIGHUP, &sa, NULL);
}

struct printer {
    int json;
};

static const char *event_name(enum pos_mdns_event ev)
{
    return ev == POS_MDNS_FOUND ? "found" : ev == POS_MDNS_UPDATED ? "updated" : "lost";
}

/*
 * Network bytes as JSON (docs/mdns.md, "JSON output"): well-formed UTF-8
 * becomes a string as is (NUL and control bytes \u-escaped by the
 * encoder); anything else becomes a string with U+FFFD for each bad byte,
 * and |*raw| gets the exact bytes in standard base64, so that nothing is
 * lost. Returns NULL only when out of memory.
 */
static json_t *json_bytes(const uint8_t *s, size_t len, json_t **raw)
{
    *raw = NULL;
    if (utf8_valid(s, len))
        return json_stringn((const char *)s, len);
    char *shown = malloc(3 * len + 1);
    size_t b64_cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(b64_cap);
    json_t *out = NULL;
    if (shown && b64) {
        out = json_stringn(shown, utf8_sanitize(s, len, shown, 3 * len + 1));
        sodium_bin2base64(b64, b64_cap, s, len, sodium_base64_VARIANT_ORIGINAL);
        *raw = json_string(b64);
    }
    free(shown);
    free(b64);
    return out;
}

/*
 * The TXT strings as a JSON map by RFC 6763 §6.4: keys lower-cased (they
 * compare case-insensitively), the first string carrying a key wins,
 * strings without a key are ignored, "key" alone is true, "key=" is "".
 * Values that are not UTF-8 also go into |raw| (base64) under their key.
 */
static void txt_to_json(const pos_mdns_peer *p, json_t *txt, json_t *raw)
{
    for (size_t i = 0; i < p->n_txt; i++) {
        const uint8_t *s = (const uint8_t *)p->txt[i], *val;
        size_t len = p->txt_len ? p->txt_len[i] : strlen(p->txt[i]), kl, vl;
        char key[256];
        if (pos_mdns_txt_split(s, len, &kl, &val, &vl) || kl >= sizeof(key))
            continue;
        for (size_t j = 0; j < kl; j++)
            key[j] = (char)(s[j] >= 'A' && s[j] <= 'Z' ? s[j] + 32 : s[j]);
        key[kl] = 0;
        if (json_object_get(txt, key))
            continue; /* a later repeat of a key is ignored */
        json_t *b64 = NULL, *v = val ? json_bytes(val, vl, &b64) : json_true();
        json_object_set_new(txt, key, v ? v : json_null());
        if (b64)
            json_object_set_new(raw, key, b64);
    }
}

/* The txt map's entry for |key| (a copy), else for |alt|, else null. */
static json_t *txt_field(json_t *txt, const char *key, const char *alt)
{
    json_t *v = json_object_get(txt, key);
    if (!v && alt)
        v = json_object_get(txt, alt);
    return v ? json_deep_copy(v) : json_null();
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
        json_t *txt_raw = json_object(), *inst_raw = NULL;
        json_object_set_new(o, "event", json_string(event_name(ev)));
        size_t il = p->instance_len ? p->instance_len : strlen(p->instance);
        json_t *inst = json_bytes((const uint8_t *)p->instance, il, &inst_raw);
        json_object_set_new(o, "instance", inst ? inst : json_null());
        json_object_set_new(o, "instance_b64", inst_raw ? inst_raw : json_null());
        json_object_set_new(o, "peer_id", p->peer_id ? json_string(p->peer_id) : json_null());
        json_object_set_new(o, "contact", json_boolean(p->contact));
        txt_to_json(p, txt, txt_raw);
        /* The named fields are the txt map's entries, so the two never disagree. */
        json_object_set_new(o, "name", txt_field(txt, "name", NULL));
        json_object_set_new(o, "os", txt_field(txt, "operating_system", "os"));
        json_object_set_new(o, "model", txt_field(txt, "device_model", NULL));
        for (size_t i = 0; i < p->n_addrs; i++)
            json_array_append_new(addrs, json_string(p->addrs[i]));
        json_object_set_new(o, "addrs", addrs);
        json_object_set_new(o, "port", json_integer(p->port));
        json_object_set_new(o, "txt", txt);
        json_object_set_new(o, "txt_b64", txt_raw);
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

static int load_identity(const char *opt, char *path, size_t cap,
                         char peer_id[POS_P2P_PEER_ID_STRLEN])
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

/*
 * The metadata file: a JSON object with optional "name", "os", "model"
 * (strings) and "libraries" (array of UUID strings). Its values replace
 * those of the options in |cfg| (|libs| holds MAX_LIBRARIES). Returns the
 * parsed document (owning the strings; the caller frees it) or NULL with
 * a message in |err|; |cfg| is then unchanged.
 */
static json_t *read_metadata(const char *file, pos_mdns_config *cfg, const char **libs, char *err,
                             size_t cap)
{
    json_error_t je;
    json_t *doc = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(err, cap, "%s: line %d: %s", file, je.line, je.text);
        return NULL;
    }
    pos_mdns_config c = *cfg;
    const char *l[MAX_LIBRARIES];
    size_t nl = cfg->n_libraries;
    memcpy(l, libs, nl * sizeof(*l));
    const char *key;
    json_t *v;
    if (!json_is_object(doc)) {
        snprintf(err, cap, "%s: expected a JSON object", file);
        goto bad;
    }
    json_object_foreach(doc, key, v)
    {
        const char **slot = !strcmp(key, "name")    ? &c.name
                            : !strcmp(key, "os")    ? &c.os
                            : !strcmp(key, "model") ? &c.model
                                                    : NULL;
        if (slot) {
            if (!json_is_string(v) || !json_string_length(v)) {
                snprintf(err, cap, "%s: \"%s\" must be a non-empty string", file, key);
                goto bad;
            }
            *slot = json_string_value(v);
        } else if (!strcmp(key, "libraries")) {
            size_t i;
            json_t *u;
            if (!json_is_array(v) || json_array_size(v) > MAX_LIBRARIES) {
                snprintf(err, cap, "%s: \"libraries\" must be an array of at most %d UUIDs", file,
                         MAX_LIBRARIES);
                goto bad;
            }
            nl = 0;
            json_array_foreach(v, i, u)
            {
                const char *t = json_string_value(u);
                if (!t || !pos_uuid_valid(t, strlen(t))) {
                    snprintf(err, cap, "%s: \"libraries\"[%zu] is not a UUID", file, i);
                    goto bad;
                }
                l[nl++] = t;
            }
        } else {
            snprintf(err, cap, "%s: unknown key \"%s\" (expected name, os, model, libraries)", file,
                     key);
            goto bad;
        }
    }
    memcpy(libs, l, nl * sizeof(*l));
    c.n_libraries = nl;
    *cfg = c;
    return doc;
bad:
    json_decref(doc);
    return NULL;
}

/* SIGHUP: the metadata file again; on any error the advertisement stays as it was. */
static void reload_metadata(pos_mdns *m, const char *file, const pos_mdns_config *base,
                            const char **base_libs, json_t **doc)
{
    pos_mdns_config cfg = *base;
    const char *libs[MAX_LIBRARIES];
    char err[512];
    memcpy(libs, base_libs, base->n_libraries * sizeof(*libs));
    cfg.libraries = libs;
    json_t *nd = read_metadata(file, &cfg, libs, err, sizeof(err));
    if (!nd) {
        fprintf(stderr, "pos-p2p advertise: %s; metadata unchanged\n", err);
        return;
    }
    int rc = pos_mdns_set_metadata(m, &cfg);
    if (rc) {
        fprintf(stderr, "pos-p2p advertise: %s: %s; metadata unchanged\n", file,
                pos_p2p_strerror(rc));
        json_decref(nd);
        return;
    }
    json_decref(*doc);
    *doc = nd;
    fprintf(stderr, "pos-p2p advertise: metadata reloaded from %s\n", file);
}

static void advertise_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-p2p advertise [--identity FILE] [--name N] [--os O] [--model M]\n"
            "                         [--library UUID]... [--mode enabled|contacts-only|disabled]\n"
            "                         [--port N] [--metadata-file FILE] [--json]\n\n"
            "Advertises this device as _sd._udp.local. on every multicast interface (IPv4 and\n"
            "IPv6) until SIGTERM or SIGINT, then sends goodbyes. It also browses and prints the\n"
            "peers it sees (one JSON object per line with --json).\n"
            "  --mode contacts-only  random instance name and a tag only contacts recognise\n"
            "                        (see 'pos-p2p contact'); no name, model, OS or libraries\n"
            "  --mode disabled       send nothing and answer nothing\n"
            "  --port N              the port peers connect to (default 7373)\n"
            "  --metadata-file FILE  JSON object with optional name, os, model (strings) and\n"
            "                        libraries (UUIDs), replacing the options' values; read\n"
            "                        again on SIGHUP and announced (browsers see 'updated');\n"
            "                        a bad file on SIGHUP is reported and changes nothing\n"
            "  --identity FILE       the key file (default $POS_IDENTITY, else\n"
            "                        $XDG_CONFIG_HOME/pos/identity, else ~/.config/pos/identity);\n"
            "                        contacts.json and presence.key live beside it\n");
}

/* "enabled", "contacts-only" or "disabled" into |*mode|; -1 for anything else. */
static int parse_mode(const char *s, enum pos_mdns_mode *mode)
{
    if (!strcmp(s, "enabled"))
        *mode = POS_MDNS_ENABLED;
    else if (!strcmp(s, "contacts-only"))
        *mode = POS_MDNS_CONTACTS_ONLY;
    else if (!strcmp(s, "disabled"))
        *mode = POS_MDNS_DISABLED;
    else
        return -1;
    return 0;
}

/*
 * advertise_parse reads advertise's options into |cfg| (library uuids into
 * |libs|), |*identity|, |*meta_file| and |pr|. Returns -1 to go on, else the
 * exit status (0 after --help, 2 for a bad option).
 */
static int advertise_parse(int argc, char **argv, pos_mdns_config *cfg, const char **libs,
                           const char **identity, const char **meta_file, struct printer *pr)
{
    static const struct option opts[] = {{"identity", required_argument, NULL, 'i'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"os", required_argument, NULL, 'o'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"library", required_argument, NULL, 'l'},
                                         {"mode", required_argument, NULL, 'M'},
                                         {"port", required_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"metadata-file", required_argument, NULL, 'F'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            *identity = optarg;
            break;
        case 'n':
            cfg->name = optarg;
            break;
        case 'o':
            cfg->os = optarg;
            break;
        case 'm':
            cfg->model = optarg;
            break;
        case 'l':
            if (cfg->n_libraries == MAX_LIBRARIES || !pos_uuid_valid(optarg, strlen(optarg))) {
                fprintf(stderr, "pos-p2p advertise: --library needs a UUID (at most %d): \"%s\"\n",
                        MAX_LIBRARIES, optarg);
                return 2;
            }
            libs[cfg->n_libraries++] = optarg;
            break;
        case 'M':
            if (parse_mode(optarg, &cfg->mode)) {
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
            cfg->port = (uint16_t)v;
            break;
        }
        case 'j':
            pr->json = 1;
            break;
        case 'F':
            *meta_file = optarg;
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
    return -1;
}

/*
 * advertise_loop runs |m| until SIGTERM/SIGINT, re-reading |meta_file| on
 * SIGHUP (over the options' values in |base|) and telling each new instance
 * name.
 */
static void advertise_loop(pos_mdns *m, const char *meta_file, const pos_mdns_config *base,
                           const char **base_libs, json_t **meta)
{
    char shown[64] = "";
    while (!stop_flag) {
        int rv = pos_mdns_run(m, 200, flag_set, (void *)&wake_flag);
        if (rv != 0 && rv != POS_P2P_ERR_TIMEOUT)
            break;
        wake_flag = 0;
        if (hup_flag) {
            hup_flag = 0;
            reload_metadata(m, meta_file, base, base_libs, meta);
        }
        if (strcmp(shown, pos_mdns_instance(m))) {
            snprintf(shown, sizeof(shown), "%s", pos_mdns_instance(m));
            if (*shown)
                fprintf(stderr, "pos-p2p advertise: advertising instance \"%s\"\n", shown);
        }
    }
}

int cmd_advertise(int argc, char **argv)
{
    const char *identity = NULL, *libs[MAX_LIBRARIES], *meta_file = NULL;
    pos_mdns_config cfg;
    struct printer pr = {0};
    memset(&cfg, 0, sizeof(cfg));
    cfg.port = 7373;
    cfg.advertise = 1;
    cfg.browse = 1;
    cfg.version = "0.1.0";
    int rc = advertise_parse(argc, argv, &cfg, libs, &identity, &meta_file, &pr);
    if (rc >= 0)
        return rc;
    cfg.libraries = libs;
    pos_mdns_config base = cfg; /* the options' values, under the file's */
    const char *base_libs[MAX_LIBRARIES];
    memcpy(base_libs, libs, cfg.n_libraries * sizeof(*libs));
    base.libraries = base_libs;
    json_t *meta = NULL;
    if (meta_file) {
        char err[512];
        if (!(meta = read_metadata(meta_file, &cfg, libs, err, sizeof(err)))) {
            fprintf(stderr, "pos-p2p advertise: %s\n", err);
            return 2;
        }
    }
    char path[4096], peer_id[POS_P2P_PEER_ID_STRLEN];
    uint8_t key[32];
    if (load_identity(identity, path, sizeof(path), peer_id)) {
        json_decref(meta);
        return 1;
    }
    cfg.peer_id = peer_id;
    base.peer_id = peer_id;
    if (cfg.mode == POS_MDNS_CONTACTS_ONLY) {
        char err[512];
        if (mdns_presence_key_load_or_create(path, key, err, sizeof(err))) {
            fprintf(stderr, "pos-p2p advertise: %s\n", err);
            json_decref(meta);
            return 1;
        }
        cfg.presence_key = key;
    }
    if (cfg.mode == POS_MDNS_DISABLED)
        cfg.browse = 0;
    pos_mdns *m;
    rc = pos_mdns_new(&m, &cfg, print_event, &pr);
    sodium_memzero(key, sizeof(key));
    if (rc) {
        fprintf(stderr, "pos-p2p advertise: %s\n", pos_p2p_strerror(rc));
        json_decref(meta);
        return 1;
    }
    if (cli_mdns_add_contacts(m, "pos-p2p", path)) {
        pos_mdns_del(m);
        json_decref(meta);
        return 1;
    }
    install_signals(meta_file != NULL);
    fprintf(stderr, "pos-p2p advertise: mode %s, peer id %s, port %u\n",
            cfg.mode == POS_MDNS_ENABLED         ? "enabled"
            : cfg.mode == POS_MDNS_CONTACTS_ONLY ? "contacts-only"
                                                 : "disabled",
            peer_id, cfg.port);
    advertise_loop(m, meta_file, &base, base_libs, &meta);
    pos_mdns_del(m); /* goodbyes */
    json_decref(meta);
    fprintf(stderr, "pos-p2p advertise: stopped\n");
    return 0;
}

static void discover_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-p2p discover [--identity FILE] [--timeout SECONDS] [--json]\n\n"
            "Browses _sd._udp.local. for SECONDS (default 5; 0 runs until SIGINT/SIGTERM) and\n"
            "prints found/updated/lost peers. --json prints one object per line with event,\n"
            "instance, instance_b64, peer_id (null when unknown), contact, name, os, model,\n"
            "addrs, port, txt (keys lower-cased, first occurrence wins, a key alone is true)\n"
            "and txt_b64 (the exact bytes, base64, of values that are not UTF-8; docs/mdns.md).\n"
            "Contacts (see 'pos-p2p contact') in contacts-only mode are recognised;\n"
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
    char path[4096], peer_id[POS_P2P_PEER_ID_STRLEN];
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
    if (cli_mdns_add_contacts(m, "pos-p2p", path)) {
        pos_mdns_del(m);
        return 1;
    }
    install_signals(false);
    rc = pos_mdns_run(m, timeout > 0 ? (int)(timeout * 1000) : -1, flag_set, (void *)&stop_flag);
    pos_mdns_del(m);
    if (rc && rc != POS_P2P_ERR_TIMEOUT) {
        fprintf(stderr, "pos-p2p discover: %s\n", pos_p2p_strerror(rc));
        return 1;
    }
    return 0;
}
