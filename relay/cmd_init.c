/*
 * pos-relay init: writes a new configuration file (mode 0600) with a fresh
 * relay id (UUID v4), a fresh Ed25519 identity and the p2p secret shared with
 * the discovery API, then prints the relay's peer id on stdout (its libp2p PeerId
 * form on stderr).
 *
 * The secret is asked for without echo when stdin is a terminal, otherwise it
 * is the first line of stdin (so `pos-relay init < secret-file` works). An
 * existing file is never replaced without --force: the new file is written
 * beside it and link()ed into place, which fails if the path exists even when
 * another process creates it meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cmds.h"
#include "peer_id.h"
#include "secret.h"

#define MAX_SECRET_LEN 4096

struct init_opts {
    const char *path;
    const char *api_url;
    const char *redis;
    long port;
    const char *public_addrs[RELAY_MAX_ADDRS];
    size_t n_public;
    const char *http_listen;
    const char *owner; /* user name; NULL: the caller owns the file */
    uid_t owner_uid;
    gid_t owner_gid;
    int force;
};

static void init_usage(FILE *out)
{
    fprintf(out,
            "usage: pos-relay init [--config FILE] [--api-url URL] [--port N] [--redis URL]\n"
            "                      [--public-addr IP:PORT]... [--http-listen IP:PORT]\n"
            "                      [--owner USER] [--force]\n\n"
            "Writes a new relay configuration (mode 0600): a relay id, a new identity key,\n"
            "the p2p secret shared with the discovery API, and the settings given here.\n"
            "The p2p secret is asked for without echo on a terminal (\"p2p secret: \");\n"
            "otherwise it is the first line of stdin. Prints the relay's peer id.\n\n"
            "  --config FILE         file to write (default $POS_RELAY_CONFIG or ./config.json)\n"
            "  --api-url URL         discovery API base URL, e.g. http://127.0.0.1:8080\n"
            "  --port N              UDP port, 1-65535 (default 7373)\n"
            "  --redis URL           redis://HOST[:PORT][/DB] or unix:///path[?db=N]; HOST is\n"
            "                        a name (resolved at each connection), an IP or [IPv6]\n"
            "                        (default " POS_REDIS_DEFAULT_URL ")\n"
            "  --public-addr IP:PORT address announced to clients (repeatable, at most %d)\n"
            "  --http-listen IP:PORT metrics and /healthz endpoint (default: the UDP port + 1\n"
            "                        on 127.0.0.1)\n"
            "  --owner USER          give the file to USER and USER's group (root only), e.g.\n"
            "                        the service user `pos` of the systemd unit\n"
            "  --force               replace an existing file (the old identity is lost)\n"
            "  --help                show this help\n",
            RELAY_MAX_ADDRS);
}

/* init_opt_value checks the value of option |c| (optarg) and stores it in |o|; 0 or -1. */
static int init_opt_value(struct init_opts *o, int c)
{
    char err[POS_ERR_LEN];
    pos_redis_target t;
    struct sockaddr_storage ss;
    char *end;

    switch (c) {
    case 'a':
        if ((strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0) ||
            strlen(optarg) > 500) {
            fprintf(stderr, "pos-relay init: --api-url: expected an http:// or https:// URL "
                            "such as http://127.0.0.1:8080\n");
            return -1;
        }
        o->api_url = optarg;
        return 0;
    case 'p':
        errno = 0;
        o->port = strtol(optarg, &end, 10);
        if (errno || end == optarg || *end || o->port < 1 || o->port > 65535) {
            fprintf(stderr, "pos-relay init: --port: expected a port from 1 to 65535\n");
            return -1;
        }
        return 0;
    case 'r':
        if (strlen(optarg) > 590 || pos_redis_url_parse(optarg, &t, err, sizeof(err)) != 0) {
            fprintf(stderr, "pos-relay init: --redis: %s\n", err);
            return -1;
        }
        o->redis = optarg;
        return 0;
    case 'P':
        if (pos_addr_parse(optarg, strlen(optarg), 0, &ss) != 0) {
            fprintf(stderr,
                    "pos-relay init: --public-addr \"%s\": expected IP:PORT or [IPv6]:PORT\n",
                    optarg);
            return -1;
        }
        if (o->n_public == RELAY_MAX_ADDRS) {
            fprintf(stderr, "pos-relay init: at most %d --public-addr\n", RELAY_MAX_ADDRS);
            return -1;
        }
        o->public_addrs[o->n_public++] = optarg;
        return 0;
    case 'H':
        if (pos_addr_parse(optarg, strlen(optarg), 0, &ss) != 0) {
            fprintf(stderr,
                    "pos-relay init: --http-listen \"%s\": expected IP:PORT or [IPv6]:PORT\n",
                    optarg);
            return -1;
        }
        o->http_listen = optarg;
        return 0;
    default: { /* 'o' */
        struct passwd *pw = getpwnam(optarg);
        if (!pw) {
            fprintf(stderr, "pos-relay init: --owner: no user \"%s\" on this system\n", optarg);
            return -1;
        }
        o->owner = optarg;
        o->owner_uid = pw->pw_uid;
        o->owner_gid = pw->pw_gid;
        return 0;
    }
    }
}

static int parse_init_opts(int argc, char **argv, struct init_opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"api-url", required_argument, NULL, 'a'},
        {"port", required_argument, NULL, 'p'},
        {"redis", required_argument, NULL, 'r'},
        {"public-addr", required_argument, NULL, 'P'},
        {"http-listen", required_argument, NULL, 'H'},
        {"owner", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof(*o));
    o->port = 7373;
    o->redis = POS_REDIS_DEFAULT_URL;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->path = optarg;
            break;
        case 'a':
        case 'p':
        case 'r':
        case 'P':
        case 'H':
        case 'o':
            if (init_opt_value(o, c) != 0)
                return -1;
            break;
        case 'f':
            o->force = 1;
            break;
        case 'h':
            init_usage(stdout);
            return 1;
        default:
            init_usage(stderr);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pos-relay init: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!o->path)
        o->path = relay_config_default_path();
    return 0;
}

static struct termios saved_tty;
static volatile sig_atomic_t tty_changed;

/* Ctrl-C at the prompt must not leave the terminal without echo. */
static void restore_tty_and_die(int sig)
{
    if (tty_changed)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads one line of at most |cap|-2 bytes from stdin into |buf|; returns its length or -1. */
static long read_line(char *buf, size_t cap)
{
    if (!fgets(buf, (int)cap, stdin))
        return -1;
    size_t n = strcspn(buf, "\r\n");
    if (n == strlen(buf) && n >= cap - 2)
        return -2; /* longer than the buffer */
    buf[n] = '\0';
    return (long)n;
}

/* Asks for or reads the secret. Returns a new string (pos_secret_free) or NULL after an error. */
static char *read_secret(void)
{
    char buf[MAX_SECRET_LEN + 2];
    long n;
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
        struct termios quiet = saved_tty;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        signal(SIGINT, restore_tty_and_die);
        signal(SIGTERM, restore_tty_and_die);
        /* Echo off before the prompt shows, so nothing typed after it is echoed or lost. */
        tty_changed = 1;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
        fputs("p2p secret: ", stderr);
        fflush(stderr);
        n = read_line(buf, sizeof(buf));
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
        tty_changed = 0;
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    } else {
        n = read_line(buf, sizeof(buf));
    }
    if (n == -2)
        fprintf(stderr, "pos-relay init: the p2p secret is longer than %d bytes\n", MAX_SECRET_LEN);
    else if (n <= 0)
        fprintf(stderr, "pos-relay init: no p2p secret given (expected it as the first line of "
                        "stdin, or typed at the prompt)\n");
    for (long i = 0; n > 0 && i < n; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch < 0x20 || ch == 0x7f) {
            fprintf(stderr, "pos-relay init: the p2p secret contains a control character; it "
                            "must be printable text (it is sent in an HTTP header)\n");
            n = -1;
        }
    }
    char *s = n > 0 ? strdup(buf) : NULL;
    sodium_memzero(buf, sizeof(buf));
    return s;
}

/* Builds the JSON document; NULL when out of memory. Caller json_decref()s it. */
static json_t *build_config(const struct init_opts *o, const char *secret, const char *id,
                            const char *key_text)
{
    json_t *root = json_object();
    json_t *addrs = json_array();
    if (!root || !addrs)
        goto fail;
    for (size_t i = 0; i < o->n_public; i++) {
        struct sockaddr_storage ss;
        char text[POS_ADDR_STRLEN];
        pos_addr_parse(o->public_addrs[i], strlen(o->public_addrs[i]), 0, &ss);
        pos_addr_format((struct sockaddr *)&ss, text, sizeof(text));
        if (json_array_append_new(addrs, json_string(text)) != 0)
            goto fail;
    }
    if (json_object_set_new(root, "id", json_string(id)) ||
        json_object_set_new(root, "identity", json_string(key_text)) ||
        json_object_set_new(root, "p2p_secret", json_string(secret)) ||
        (o->api_url && json_object_set_new(root, "api_url", json_string(o->api_url))) ||
        json_object_set_new(root, "port", json_integer(o->port)) ||
        json_object_set_new(root, "redis", json_string(o->redis)) ||
        json_object_set_new(root, "public_addrs", addrs) ||
        (o->http_listen && json_object_set_new(root, "http_listen", json_string(o->http_listen))))
        goto fail_root;
    return root;
fail:
    json_decref(addrs);
fail_root:
    json_decref(root);
    return NULL;
}

/* Writes |text| to |path| with mode 0600 through a temporary file; see the file comment. */
static int write_config_file(const char *path, const char *text, const struct init_opts *o)
{
    int force = o->force;
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        fprintf(stderr, "pos-relay init: %s: path too long\n", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "pos-relay init: %s: cannot write the configuration: %s\n", path,
                strerror(errno));
        return -1;
    }
    /* Owned before it has a name: the service user never finds it root's. */
    if (o->owner && fchown(fd, o->owner_uid, o->owner_gid) != 0) {
        fprintf(stderr, "pos-relay init: %s: cannot give the file to %s: %s%s\n", path, o->owner,
                strerror(errno), errno == EPERM ? " (--owner needs root)" : "");
        close(fd);
        unlink(tmp);
        return -1;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (w != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0 || close(fd) != 0) {
        fprintf(stderr, "pos-relay init: %s: cannot write the configuration: %s\n", path,
                strerror(errno));
        unlink(tmp);
        return -1;
    }
    int rc = force ? rename(tmp, path) : link(tmp, path);
    int e = errno;
    if (!force || rc != 0)
        unlink(tmp);
    if (rc != 0) {
        if (e == EEXIST)
            fprintf(stderr,
                    "pos-relay init: %s already exists; it was left untouched (use --force to "
                    "replace it and lose its identity)\n",
                    path);
        else
            fprintf(stderr, "pos-relay init: %s: cannot create the configuration: %s\n", path,
                    strerror(e));
        return -1;
    }
    return 0;
}

int cmd_init(int argc, char **argv)
{
    struct init_opts o;
    struct stat st;
    int rc = parse_init_opts(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? RELAY_EXIT_OK : RELAY_EXIT_USAGE;
    /* Refuse before asking for the secret, and again atomically when linking. */
    if (!o.force && lstat(o.path, &st) == 0) {
        fprintf(stderr,
                "pos-relay init: %s already exists; it was left untouched (use --force to "
                "replace it and lose its identity)\n",
                o.path);
        return RELAY_EXIT_FAIL;
    }
    char *secret = read_secret();
    if (!secret)
        return RELAY_EXIT_FAIL;

    pos_identity id;
    char relay_id[POS_UUID_STRLEN], key_text[POS_KEY_TEXT_STRLEN], peer_id[POS_PEER_ID_STRLEN];
    char libp2p[POS_LIBP2P_PEER_ID_STRLEN];
    pos_identity_generate(&id);
    pos_identity_to_text(&id, key_text);
    pos_identity_peer_id(&id, peer_id);
    pos_libp2p_peer_id_format(id.public_key, libp2p);
    pos_identity_free(&id);
    pos_uuid_v4(relay_id);

    int status = RELAY_EXIT_FAIL;
    json_t *root = build_config(&o, secret, relay_id, key_text);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (!text) {
        fprintf(stderr, "pos-relay init: out of memory\n");
    } else if (write_config_file(o.path, text, &o) == 0) {
        /* stdout keeps the one line scripts read (PEER=$(pos-relay init ...)). */
        fprintf(stderr, "pos-relay init: wrote %s (relay id %s); as a libp2p PeerId %s; peer id:\n",
                o.path, relay_id, libp2p);
        fflush(stderr);
        printf("%s\n", peer_id);
        status = RELAY_EXIT_OK;
    }
    if (text) {
        sodium_memzero(text, strlen(text));
        free(text);
    }
    if (root) {
        /* Wipe the secrets held by the document too. */
        json_t *v = json_object_get(root, "p2p_secret");
        sodium_memzero((char *)json_string_value(v), json_string_length(v));
        v = json_object_get(root, "identity");
        sodium_memzero((char *)json_string_value(v), json_string_length(v));
        json_decref(root);
    }
    sodium_memzero(key_text, sizeof(key_text));
    pos_secret_free(secret);
    return status;
}
