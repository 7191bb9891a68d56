/*
 * `pos-p2p send [--api-url URL --token TOKEN] [--addr IP:PORT] [--relay-id
 * UUID] [--relay-only] --to PEER_ID [--identity FILE] FILE...`: send files
 * to a peer over one session, one stream per file (docs/transfer.md), one
 * file after the other. With --addr the session goes straight to that
 * address (a port-less address means 7373); otherwise, or when the direct
 * attempt gets no answer and --api-url is given, through the home relay.
 * The peer id is pinned: a device with another key at the address is
 * refused. Prints a progress bar on a terminal and, at the end, bytes,
 * time, rate and the path used; with --json those lines go to stderr and
 * stdout gets one summary object (send_report.h). Exit 0 only when every
 * file was stored and verified by the receiver.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "identity.h"
#include "pos/p2p.h"
#include "send_report.h"
#include "transfer.h"

/* With --api-url too: how long mDNS may look for the peer, and each LAN address's dial. */
#define LAN_WINDOW_MS 1000

/* a relayed dial's wait without --timeout: the relay waits park_keepalive (25 s by default)
 * + 10 s for a parked peer (one whose NAT moved it unnoticed is found at its next keep-alive) */
#define PARKED_DIAL_MS 45000

struct opts {
    const char *api_url, *token, *identity, *addr, *relay_id, *to;
    int relay_only, json, mdns;
    double timeout_s;
    int timeout_given;   /* --timeout given: the relayed dial's too */
    uint64_t limit_rate; /* bytes/s, 0 = none (testing and slow links) */
    pos_p2p_punch_options punch;
    char **files;
    int n_files;
};

struct run {
    struct opts *o;
    pos_p2p_session *s;
    pos_xfer_sender *tx;
    int64_t stream;
    int file;        /* index of the file in flight */
    int resume_told; /* "resuming" printed for this file */
    int failed;      /* a file failed: stop */
    int nat_told;    /* "both NATs vary by destination" printed */
    int tty;
    FILE *info;       /* the human lines: stdout, or stderr with --json */
    send_report *rep; /* --json */
    int64_t start_ms, file_start_ms, last_bar_ms;
    uint64_t total_sent; /* bytes actually sent (resumed prefixes excluded) */
    uint64_t file_base;  /* sent count of this file before the current one */
    uint8_t buf[POS_XFER_CHUNK + POS_XFER_HEADER_LEN];
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: pos-p2p send --to PEER_ID [--addr IP[:PORT]] [--api-url URL --token TOKEN]\n"
            "                    [--relay-id UUID] [--relay-only] [--no-mdns] [--identity FILE]\n"
            "                    [--json]\n"
            "                    FILE...\n\n"
            "Send files to the peer PEER_ID ('pos-p2p id' on that device prints it). With\n"
            "--addr, directly to that address (no port means 7373). Without --addr, the\n"
            "peer is looked for on the local network (mDNS, by its peer id; contacts'\n"
            "contacts-only tags included): alone for the whole --timeout, then dialed\n"
            "directly at the addresses it advertises; with --api-url for 1 s while the\n"
            "home relay is picked, the session starting through the relay at once with\n"
            "those addresses as hole-punching candidates (direct only without a relay).\n"
            "With --addr and --api-url, the relay follows a direct attempt without\n"
            "answer. The receiver\n"
            "checks each file's checksum (sent after the data) before keeping it; an\n"
            "interrupted transfer resumes from what the receiver already has. Exit status\n"
            "0 when every file arrived intact.\n\n"
            "  --to PEER_ID       the receiving device (its key is checked)\n"
            "  --addr IP[:PORT]   the receiver's address for a direct session\n"
            "  --api-url URL      discovery API (relay list) for a relayed session\n"
            "  --token TOKEN      relay access token (or $POS_TOKEN)\n"
            "  --relay-id UUID    use this relay as home relay\n"
            "  --relay-only       never try a direct session (no punching either)\n"
            "  --no-mdns          do not look for the peer on the local network\n"
            "  --identity FILE    identity file (default $POS_IDENTITY, else\n"
            "                     $XDG_CONFIG_HOME/pos/identity); created when missing\n"
            "  --timeout SECONDS  to set up the session (default 10; without it a dial\n"
            "                     through the relay waits up to 45 s: a parked peer whose\n"
            "                     NAT moved it is found at its next keep-alive)\n"
            "  --limit-rate BYTES_PER_SEC  send no faster than this\n"
            "  --json             at the end, one JSON object on stdout: path (relayed,\n"
            "                     direct, relayed-then-direct), upgraded_after_ms,\n"
            "                     bytes_relayed, bytes_direct, bytes, seconds, files\n"
            "                     (the other lines go to stderr)\n"
            "%s\n"
            "A relayed session tries to go direct at once (hole punching, when both relays\n"
            "support it); each change of path is printed: \"path: relayed -> direct to\n"
            "ADDR (rtt N ms)\", and back when the direct path stalls.\n",
            cli_punch_usage);
}

/* Over 80 lines: one case per option, each with its own range check and message. */
static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"api-url", required_argument, NULL, 'a'},
        {"token", required_argument, NULL, 't'},
        {"identity", required_argument, NULL, 'i'},
        {"addr", required_argument, NULL, 'd'},
        {"relay-id", required_argument, NULL, 'r'},
        {"relay-only", no_argument, NULL, 'R'},
        {"to", required_argument, NULL, 'T'},
        {"timeout", required_argument, NULL, 'w'},
        {"limit-rate", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},
        {"no-mdns", no_argument, NULL, 'M'},
        CLI_PUNCH_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    uint8_t key[32];
    memset(o, 0, sizeof(*o));
    o->token = getenv("POS_TOKEN");
    o->timeout_s = 10;
    o->mdns = 1;
    pos_p2p_punch_options_default(&o->punch);
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "a:t:i:d:r:RT:w:l:jMh", lopts, NULL)) != -1) {
        if (cli_relay_opt(ch, optarg, &o->api_url, &o->token, &o->identity))
            continue;
        int pv = cli_punch_opt("pos-p2p send", ch, optarg, &o->punch);
        if (pv < 0)
            return 2;
        if (pv > 0)
            continue;
        switch (ch) {
        case 'd':
            o->addr = optarg;
            break;
        case 'r':
            o->relay_id = optarg;
            break;
        case 'R':
            o->relay_only = 1;
            break;
        case 'T':
            o->to = optarg;
            break;
        case 'w': {
            double v = strtod(optarg, &end);
            if (*end || end == optarg || v <= 0 || v > 3600) {
                fprintf(stderr, "pos-p2p send: --timeout wants seconds between 0 and 3600\n");
                return 2;
            }
            o->timeout_s = v;
            o->timeout_given = 1;
            break;
        }
        case 'l': {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || end == optarg || v == 0) {
                fprintf(stderr, "pos-p2p send: --limit-rate wants bytes per second (> 0)\n");
                return 2;
            }
            o->limit_rate = v;
            break;
        }
        case 'j':
            o->json = 1;
            break;
        case 'M':
            o->mdns = 0;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "pos-p2p send: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    o->files = argv + optind;
    o->n_files = argc - optind;
    if (!o->to) {
        fprintf(stderr, "pos-p2p send: --to PEER_ID is required\n");
        return 2;
    }
    if (pos_peer_id_parse(o->to, strlen(o->to), key) != 0) {
        fprintf(stderr,
                "pos-p2p send: --to \"%s\" is not a peer id (43 characters of base64, as "
                "'pos-p2p id' prints)\n",
                o->to);
        return 2;
    }
    if (o->n_files < 1) {
        fprintf(stderr, "pos-p2p send: name at least one FILE\n");
        return 2;
    }
    if (o->relay_only && !o->api_url) {
        fprintf(stderr, "pos-p2p send: --relay-only needs --api-url\n");
        return 2;
    }
    if (o->relay_only)
        o->punch.enabled = 0; /* no direct path at all, punched ones included */
    if (!o->addr && !o->api_url && !o->mdns) {
        fprintf(stderr, "pos-p2p send: with --no-mdns, give --addr (direct) or --api-url "
                        "(relay), or both\n");
        return 2;
    }
    if (o->api_url && (!o->token || !*o->token)) {
        fprintf(stderr, "pos-p2p send: --api-url needs --token (or $POS_TOKEN)\n");
        return 2;
    }
    return 0;
}

static void human(double bytes, char *out, size_t cap)
{
    if (bytes >= 1e9)
        snprintf(out, cap, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6)
        snprintf(out, cap, "%.2f MB", bytes / 1e6);
    else if (bytes >= 1e3)
        snprintf(out, cap, "%.1f kB", bytes / 1e3);
    else
        snprintf(out, cap, "%.0f B", bytes);
}

static void progress_bar(struct run *r, int final)
{
    uint64_t size, off, sent;
    char a[32], b[32], c[32];
    int64_t now = pos_p2p_now_ms();
    double secs;
    int pct, w = 30, fill;
    if (!r->tty || !r->tx || (!final && now - r->last_bar_ms < 100))
        return;
    r->last_bar_ms = now;
    pos_xfer_sender_progress(r->tx, &size, &off, &sent);
    pct = size ? (int)(sent * 100 / size) : 100;
    fill = pct * w / 100;
    secs = (double)(now - r->file_start_ms) / 1000.0;
    human((double)sent, a, sizeof(a));
    human((double)size, b, sizeof(b));
    human(secs > 0 ? (double)(sent - off) / secs : 0, c, sizeof(c));
    fprintf(stderr, "\r%-20.20s [%.*s%*s] %3d%% %s / %s  %s/s ", r->o->files[r->file], fill,
            "##############################", w - fill, "", pct, a, b, c);
    if (final)
        fputc('\n', stderr);
}

/* start_file opens the next file's stream; returns 0, or -1 (r->failed set). */
static int start_file(struct run *r)
{
    int err = 0, rv;
    r->tx = pos_xfer_sender_new(r->o->files[r->file], 1, &err);
    if (!r->tx) {
        fprintf(stderr, "pos-p2p send: cannot send %s: %s\n", r->o->files[r->file],
                pos_xfer_strerror(err));
        r->failed = 1;
        return -1;
    }
    rv = pos_p2p_session_open_stream(r->s, &r->stream);
    if (rv != 0) {
        fprintf(stderr, "pos-p2p send: cannot open a stream: %s\n", pos_p2p_strerror(rv));
        r->failed = 1;
        return -1;
    }
    r->file_start_ms = pos_p2p_now_ms();
    r->resume_told = 0;
    return 0;
}

static void finish_file(struct run *r)
{
    uint64_t size, off, sent;
    const char *reason = NULL;
    pos_xfer_sender_progress(r->tx, &size, &off, &sent);
    progress_bar(r, 1);
    if (r->rep)
        send_report_file(r->rep, r->o->files[r->file], size,
                         pos_xfer_sender_status(r->tx) == POS_XFER_FINISHED);
    if (pos_xfer_sender_status(r->tx) == POS_XFER_FINISHED) {
        fprintf(r->info, "sent %s as \"%s\" (%llu bytes)\n", r->o->files[r->file],
                pos_xfer_sender_final_name(r->tx), (unsigned long long)size);
        r->total_sent += sent - off;
    } else {
        int e = pos_xfer_sender_error(r->tx, &reason);
        const char *what = pos_xfer_strerror(e);
        /* The receiver's reason usually starts with the code's sentence: say it once. */
        if (reason && !strncmp(reason, what, strlen(what)))
            what = "";
        fprintf(stderr, "pos-p2p send: %s was not delivered: %s%s%s\n", r->o->files[r->file], what,
                *what && reason && *reason ? ": " : "", reason ? reason : "");
        /* Ended here (the file changed, a read failed): the receiver drops it, keeps its part. */
        pos_p2p_session_reset_stream(r->s, r->stream, 1);
        r->failed = 1;
    }
    fflush(r->info);
    pos_xfer_sender_del(r->tx);
    r->tx = NULL;
    r->file++;
}

/* pump feeds the stream from the sender as far as the send buffer (and --limit-rate) allow. */
static void pump(struct run *r)
{
    for (int k = 0; k < 64 && r->tx; k++) {
        size_t room = pos_p2p_session_write_room(r->s, r->stream), cap = sizeof(r->buf);
        int n;
        if (r->o->limit_rate) {
            uint64_t size, off, sent;
            double secs = (double)(pos_p2p_now_ms() - r->file_start_ms) / 1000.0;
            pos_xfer_sender_progress(r->tx, &size, &off, &sent);
            double allowed = secs * (double)r->o->limit_rate + 16384 - (double)(sent - off);
            if (allowed < POS_XFER_MIN_OUTPUT)
                return;
            if (allowed < (double)cap)
                cap = (size_t)allowed;
        }
        if (room < cap)
            cap = room;
        if (cap < POS_XFER_MIN_OUTPUT)
            return;
        n = pos_xfer_sender_output(r->tx, r->buf, cap);
        if (n <= 0)
            return;
        pos_p2p_session_write(r->s, r->stream, r->buf, (size_t)n, 0, NULL);
    }
}

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct run *r = arg;
    (void)s;
    if (ev->type == POS_P2P_SESSION_EV_DATA && r->tx && ev->stream == r->stream) {
        if (ev->len)
            pos_xfer_sender_input(r->tx, ev->data, ev->len);
        if (pos_xfer_sender_status(r->tx) == POS_XFER_RUNNING && ev->fin)
            pos_xfer_sender_input(r->tx, NULL, 0);
    } else if (ev->type == POS_P2P_SESSION_EV_PATH && ev->path_change) {
        if (r->tty)
            fputc('\r', stderr);
        cli_print_path_change(r->info, NULL, ev->path_change);
    } else if (ev->type == POS_P2P_SESSION_EV_STREAM_RESET && r->tx && ev->stream == r->stream) {
        fprintf(stderr, "pos-p2p send: the receiver abandoned %s\n", r->o->files[r->file]);
        r->failed = 1;
    }
}

/* sample: the session's status and its path's counts (pos_p2p_session_get_path) for --json. */
static void sample(struct run *r, const pos_p2p_session_status *st)
{
    pos_p2p_path_info pi;
    send_report_sample(r->rep, st, pos_p2p_now_ms());
    if (pos_p2p_session_get_path(r->s, &pi) == 0)
        send_report_path(r->rep, &pi);
}

/* tell_punch_stopped: once, that the session stopped punching (both NATs vary). */
static void tell_punch_stopped(struct run *r)
{
    pos_p2p_path_info pi;
    if (pos_p2p_session_get_path(r->s, &pi) != 0 || pi.punch_stopped != POS_P2P_PUNCH_STOPPED_NAT)
        return;
    r->nat_told = 1;
    if (r->tty)
        fputc('\r', stderr);
    fprintf(stderr, "pos-p2p send: both NATs vary by destination: staying relayed (no direct "
                    "path can be punched between them; no more attempts)\n");
}

/* step: the runner's "done" check, also where the transfer advances. */
static int step(void *arg)
{
    struct run *r = arg;
    pos_p2p_session_status st;
    pos_p2p_session_get_status(r->s, &st);
    if (r->rep)
        sample(r, &st);
    if (!r->nat_told)
        tell_punch_stopped(r);
    if (st.state == POS_P2P_SESSION_CLOSED) {
        if (r->tx)
            progress_bar(r, 1);
        fprintf(stderr, "pos-p2p send: the session ended: %s\n",
                st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
        r->failed = 1;
        return 1;
    }
    if (r->failed)
        return 1;
    if (!r->tx) {
        if (r->file >= r->o->n_files)
            return 1;
        if (start_file(r) != 0)
            return 1;
    }
    if (pos_xfer_sender_status(r->tx) != POS_XFER_RUNNING) {
        finish_file(r);
        return r->failed || r->file >= r->o->n_files;
    }
    pump(r);
    if (!r->resume_told) {
        uint64_t size, off, sent;
        pos_xfer_sender_progress(r->tx, &size, &off, &sent);
        if (off > 0) {
            /* the receiver holds a verified prefix: only the rest travels */
            if (r->tty)
                fputc('\r', stderr);
            fprintf(r->info, "resuming %s at byte %llu of %llu\n", r->o->files[r->file],
                    (unsigned long long)off, (unsigned long long)size);
            fflush(r->info);
            r->resume_told = 1;
        }
    }
    progress_bar(r, 0);
    return 0;
}

/*
 * try_direct dials |addr| directly and waits for the handshake. Returns the
 * open session, or NULL with the reason in |why| and in |*how| DIRECT_REFUSED
 * (the peer or another key answered), DIRECT_NO_ANSWER (worth another path)
 * or DIRECT_CANNOT_DIAL (not an address, no socket of its family).
 */
enum { DIRECT_REFUSED = 0, DIRECT_NO_ANSWER = 1, DIRECT_CANNOT_DIAL = 2 };

static pos_p2p_session *try_direct(struct opts *o, pos_p2p_endpoint *ep, const char *addr, int tmo,
                                   char *why, size_t cap, int *how)
{
    pos_p2p_session *s = NULL;
    pos_p2p_session_status st;
    int rv = pos_p2p_session_connect_addr(ep, addr, o->to, tmo, &s);
    *how = DIRECT_REFUSED;
    if (rv != 0) {
        snprintf(why, cap, "%s: %s", addr,
                 rv == POS_P2P_ERR_BAD_ADDRESS
                     ? "not an address (want IP, IP:PORT, [IPv6] or [IPv6]:PORT)"
                     : pos_p2p_strerror(rv));
        *how = DIRECT_CANNOT_DIAL;
        return NULL;
    }
    rv = pos_p2p_session_wait_open(s, tmo + 1000);
    if (rv == 0)
        return s;
    pos_p2p_session_get_status(s, &st);
    pos_p2p_session_close(s, 0, NULL);
    snprintf(why, cap, "%s", st.reason[0] ? st.reason : pos_p2p_strerror(rv));
    *how = rv == POS_P2P_ERR_TIMEOUT ? DIRECT_NO_ANSWER : DIRECT_REFUSED;
    return NULL;
}

/*
 * lan_dial dials the addresses |lan| advertises for the peer, each with a
 * share of |tmo|. NULL when none
 * answered (*fatal: a refusal, or nothing else to try).
 */
static pos_p2p_session *lan_dial(struct opts *o, pos_p2p_endpoint *ep,
                                 const struct cli_lan_peer *lan, int tmo, int *fatal)
{
    char why[512] = "";
    int how = DIRECT_NO_ANSWER;
    int64_t t0 = pos_p2p_now_ms();
    fprintf(stderr, "pos-p2p send: found %s on the local network%s at %s\n", o->to,
            lan->contact ? " (a contact)" : "", lan->addrs[0]);
    for (size_t i = 0; i < lan->n; i++) {
        int left = tmo - (int)(pos_p2p_now_ms() - t0);
        int share = left / (int)(lan->n - i);
        if (share < 1000)
            share = 1000;
        pos_p2p_session *s = try_direct(o, ep, lan->addrs[i], share, why, sizeof(why), &how);
        if (s)
            return s;
        if (how == DIRECT_REFUSED)
            break; /* a wrong key or a refusal: the same at every address */
    }
    fprintf(stderr, "pos-p2p send: %s on the local network: %s\n", o->to, why);
    *fatal = !o->api_url || how == DIRECT_REFUSED;
    return NULL;
}

static void not_on_lan(const struct opts *o, int window_ms)
{
    fprintf(stderr,
            "pos-p2p send: %s was not found on the local network (mDNS) within %.0f s: is "
            "'pos-p2p listen' running there (not with --mdns disabled)? Give --addr or "
            "--api-url to reach it otherwise\n",
            o->to, (double)window_ms / 1000.0);
}

/*
 * relayed_session dials the peer through |home|; the addresses |lan| (may
 * be NULL) found on mDNS become punching candidates once it is open.
 */
static pos_p2p_session *relayed_session(struct opts *o, pos_p2p_endpoint *ep, pos_p2p_relay *home,
                                        int tmo, const struct cli_lan_peer *lan)
{
    pos_p2p_session *s = NULL;
    pos_p2p_session_status st;
    /* the relay waits up to park_keepalive + 10 s for a parked peer: wait as long by default */
    if (!o->timeout_given && tmo < PARKED_DIAL_MS)
        tmo = PARKED_DIAL_MS;
    int rv = pos_p2p_session_connect_relay(ep, home, o->token, o->to, tmo, &s);
    if (rv != 0) {
        fprintf(stderr, "pos-p2p send: %s\n", pos_p2p_strerror(rv));
        return NULL;
    }
    rv = pos_p2p_session_wait_open(s, tmo + 1000);
    if (rv == 0 && lan && lan->n) {
        size_t taken = 0; /* one by one: a link-local address without its scope is refused */
        for (size_t i = 0; i < lan->n; i++) {
            const char *a = lan->addrs[i];
            taken += pos_p2p_session_add_candidates(s, &a, 1) == 0;
        }
        if (taken)
            fprintf(stderr,
                    "pos-p2p send: %zu local network address%s of %s: punching candidates\n", taken,
                    taken == 1 ? "" : "es", o->to);
    }
    if (rv == 0)
        return s;
    pos_p2p_session_get_status(s, &st);
    fprintf(stderr, "pos-p2p send: %s\n", st.reason[0] ? st.reason : pos_p2p_strerror(rv));
    pos_p2p_session_close(s, 0, NULL);
    return NULL;
}

/*
 * connect_session: direct to --addr; without it and without --api-url, to
 * the addresses the peer advertises on mDNS. With --api-url, through the home
 * relay at once, the mDNS addresses (looked for while the home relay is
 * picked, up to LAN_WINDOW_MS) handed to the session as punching
 * candidates; dialled directly only when no relay can be used.
 */
static pos_p2p_session *connect_session(struct opts *o, pos_p2p_endpoint *ep)
{
    pos_p2p_session *s = NULL;
    pos_p2p_relay *home;
    pos_p2p_relay_info info;
    struct cli_lan_search *search = NULL;
    struct cli_lan_peer lan;
    int tmo = (int)(o->timeout_s * 1000), how, fatal = 0;
    int window = tmo < LAN_WINDOW_MS ? tmo : LAN_WINDOW_MS;
    char why[512];

    if (o->addr && !o->relay_only) {
        s = try_direct(o, ep, o->addr, tmo, why, sizeof(why), &how);
        if (s)
            return s;
        if (how != DIRECT_NO_ANSWER || !o->api_url) {
            fprintf(stderr, "pos-p2p send: %s%s\n", how == DIRECT_CANNOT_DIAL ? "--addr " : "",
                    why);
            return NULL;
        }
        fprintf(stderr, "pos-p2p send: no direct answer from %s, trying the relay\n", o->addr);
    } else if (!o->addr && !o->relay_only && o->mdns && !o->api_url) {
        if (cli_lan_find("pos-p2p send", o->identity, o->to, tmo, &lan) != 0) {
            not_on_lan(o, tmo);
            return NULL;
        }
        return lan_dial(o, ep, &lan, tmo, &fatal);
    } else if (!o->addr && !o->relay_only && o->mdns) {
        search = cli_lan_search_start("pos-p2p send", o->identity, o->to, window);
    }
    home = cli_home_relay(ep, "pos-p2p send", o->api_url, o->token, o->relay_id, tmo, &info);
    memset(&lan, 0, sizeof(lan));
    if (search && cli_lan_search_finish(search, &lan) == 0 && !home)
        return lan_dial(o, ep, &lan, tmo, &fatal); /* no relay: the LAN is all there is */
    if (home && lan.n)
        fprintf(stderr, "pos-p2p send: found %s on the local network%s at %s\n", o->to,
                lan.contact ? " (a contact)" : "", lan.addrs[0]);
    return home ? relayed_session(o, ep, home, tmo, &lan) : NULL;
}

/* path_word: the path of the final line (relayed, direct, relayed-then-direct...). */
static const char *path_word(const pos_p2p_session *s, const pos_p2p_session_status *st)
{
    pos_p2p_path_info pi;
    if (pos_p2p_session_get_path(s, &pi) == 0 && pi.upgraded && pi.upgraded_after_ms >= 0)
        return st->path == POS_P2P_PATH_RELAYED ? "relayed-then-direct, relayed again"
                                                : "relayed-then-direct";
    return st->path == POS_P2P_PATH_RELAYED ? "relayed" : "direct";
}

/* Over 80 lines: the command's whole life, set-up to summary, with one clean-up path. */
int cmd_send(int argc, char **argv)
{
    struct opts o;
    char path[4096], a[32], b[32];
    pos_p2p_identity *id = NULL;
    pos_p2p_endpoint *ep = NULL;
    struct run *r = NULL;
    pos_p2p_session_status st;
    int rv = parse(argc, argv, &o), status = 1;
    double secs = -1;

    if (rv)
        return rv == 1 ? 0 : 2;
    if (cli_identity_path("send", &o.identity, path, sizeof(path)) != 0)
        return 2;
    for (int i = 0; i < o.n_files; i++) {
        if (access(o.files[i], R_OK) != 0) {
            fprintf(stderr, "pos-p2p send: cannot read %s\n", o.files[i]);
            return 1;
        }
    }
    id = cli_identity_load("send", o.identity);
    if (!id)
        return 1;
    rv = pos_p2p_endpoint_new(&ep, id, 0);
    r = calloc(1, sizeof(*r));
    if (rv != 0 || !r) {
        fprintf(stderr, "pos-p2p send: cannot open the UDP sockets: %s\n",
                pos_p2p_strerror(rv ? rv : POS_P2P_ERR_NOMEM));
        goto out;
    }
    if (cli_punch_apply("pos-p2p send", ep, &o.punch) != 0)
        goto out;
    r->o = &o;
    r->tty = isatty(2);
    r->info = o.json ? stderr : stdout;
    if (o.json && !(r->rep = send_report_new(o.n_files))) {
        fprintf(stderr, "pos-p2p send: out of memory\n");
        goto out;
    }
    r->start_ms = pos_p2p_now_ms();
    r->s = connect_session(&o, ep);
    if (!r->s)
        goto out;
    pos_p2p_session_get_status(r->s, &st);
    if (r->rep)
        sample(r, &st);
    fprintf(r->info, "session with %s %s %s\n", o.to,
            st.path == POS_P2P_PATH_RELAYED ? "through relay at" : "directly at", st.remote);
    fflush(r->info);
    pos_p2p_session_set_callback(r->s, on_event, r);
    r->start_ms = pos_p2p_now_ms();
    pos_p2p_endpoint_run(ep, -1, step, r);
    secs = (double)(pos_p2p_now_ms() - r->start_ms) / 1000.0;
    pos_p2p_session_get_status(r->s, &st);
    if (r->rep)
        sample(r, &st);
    if (!r->failed) {
        human((double)r->total_sent, a, sizeof(a));
        human(secs > 0 ? (double)r->total_sent / secs : 0, b, sizeof(b));
        const char *how = path_word(r->s, &st);
        fprintf(r->info, "done: %d file(s), %llu bytes (%s) in %.2f s, %s/s, path: %s\n", o.n_files,
                (unsigned long long)r->total_sent, a, secs, b, how);
        status = 0;
    }
    pos_p2p_session_close(r->s, 0, NULL);
    /* let the close reach the peer before the socket goes */
    pos_p2p_endpoint_process(ep);
out:
    if (r && r->rep) {
        if (secs < 0) /* no session: the time spent trying */
            secs = (double)(pos_p2p_now_ms() - r->start_ms) / 1000.0;
        if (send_report_print(r->rep, stdout, r->total_sent, secs, status == 0) != 0)
            status = 1;
        send_report_del(r->rep);
    }
    if (r && r->tx)
        pos_xfer_sender_del(r->tx);
    free(r);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return status;
}
