/*
 * `pos-p2p listen [--api-url URL --token TOKEN] [--relay-id UUID] [--port N]
 * [--identity FILE] --out DIR [--allow PEER_ID]...`: receive files from
 * peers. The device accepts sessions directly on its UDP port and, with
 * --api-url, through its home relay; each stream of a session carries one
 * file (docs/transfer.md), written into DIR under a hidden temporary name
 * and renamed only once its BLAKE2b checksum matched. With --allow, only the
 * listed peers may connect. When the home relay goes away (shutdown, lost
 * connection), the next best relay of the list takes over; when there is
 * none, the command keeps trying with a growing pause (--retry-max) and says
 * so. Only a refusal of the token itself (unknown, revoked, expired) ends it,
 * with status 1. Every --recheck seconds it measures the other relays with
 * connections that claim no presence (home_relay.c), so peers always find
 * the device through its home relay. Idle, the home connection parks (--park-after,
 * --no-park; docs/client-library.md "Parking"). Runs until SIGTERM or SIGINT.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "identity.h"
#include "listen_limits.h"
#include "pos/mdns.h"
#include "transfer.h"

#define MAX_ALLOW 64
#define MAX_XFERS 64 /* files in flight per session */
#define RECHECK_DEFAULT_S 300
#define RETRY_FIRST_MS 1000     /* the first pause after no relay could be reached... */
#define RETRY_MAX_DEFAULT_S 30  /* ...doubling up to this (--retry-max) */
#define PARK_AFTER_DEFAULT_S 20 /* the home relay connection parks after this idle time */
enum { OPT_PARK_AFTER = 0x300, OPT_PARK_KEEPALIVE, OPT_NO_PARK };

struct peer;

struct opts {
    struct peer *peers; /* sessions in progress (freed at exit) */
    const char *api_url, *token, *identity, *out, *relay_id;
    unsigned port;
    int64_t recheck_s;   /* measure the other relays this often (0: never) */
    int64_t retry_max_s; /* longest pause between attempts to find a relay */
    long park_after_s;   /* park the home connection after this idle time (0: never) */
    long park_ka_s;      /* parked: keep-alive interval (0: the relay's) */
    enum pos_mdns_mode mdns_mode;
    pos_p2p_punch_options punch;
    pos_mdns *mdns; /* advertising on the local network (NULL: not) */
    size_t n_allow;
    char allow[MAX_ALLOW][POS_P2P_PEER_ID_STRLEN];
    struct listen_limits limits;
};

struct xfer {
    int64_t stream;
    pos_xfer_receiver *rx;
    int64_t started_ms;
    int64_t active_ms; /* last data */
    int reported;
};

struct peer {
    struct peer *next;
    struct opts *o;
    pos_p2p_session *s;
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    struct xfer x[MAX_XFERS];
    size_t n;
    int nat_told; /* said that the session stopped punching (both NATs vary) */
};

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: pos-p2p listen --out DIR [--port N] [--api-url URL --token TOKEN]\n"
        "                      [--relay-id UUID] [--identity FILE] [--allow PEER_ID]...\n"
        "                      [--recheck SECONDS] [--retry-max SECONDS]\n"
        "                      [--max-file-size SIZE] [--max-transfers N]\n"
        "                      [--max-transfers-per-peer N] [--part-expiry DURATION]\n"
        "                      [--transfer-idle-timeout DURATION]\n"
        "                      [--mdns enabled|contacts-only|disabled] [--no-punch]\n"
        "                      [--punch-window SECONDS] [--punch-retry SECONDS]\n"
        "                      [--park-after SECONDS] [--park-keepalive SECONDS] [--no-park]\n\n"
        "Receive files sent with 'pos-p2p send' into DIR. The device is reachable directly\n"
        "on its UDP port and, with --api-url, through its home relay (the relay with the\n"
        "lowest round-trip time, or the one --relay-id names). Files are written under a\n"
        "hidden temporary name, checked (BLAKE2b) and only then renamed; an interrupted\n"
        "transfer resumes when the sender tries again. Runs until SIGTERM or SIGINT; a\n"
        "relay that refuses the token (unknown, revoked, expired) ends it with status 1.\n"
        "A relayed session tries to go direct (hole punching); each change of path is\n"
        "printed (\"path of PEER_ID: relayed -> direct to ADDR (rtt N ms)\", and back).\n\n"
        "  --out DIR          where received files go (must exist)\n"
        "  --port N           UDP port (default: any free port; 7373 with POS_DOCKER=true)\n"
        "  --api-url URL      discovery API: also be reachable through a relay\n"
        "  --token TOKEN      relay access token (or $POS_TOKEN)\n"
        "  --relay-id UUID    use this relay as home relay\n"
        "  --identity FILE    identity file (default $POS_IDENTITY, else\n"
        "                     $XDG_CONFIG_HOME/pos/identity); created when missing\n"
        "  --allow PEER_ID    accept only these peers (repeatable; default: anyone)\n"
        "  --mdns MODE        advertise this device on the local network so that 'send'\n"
        "                     finds it by its peer id: enabled (default), contacts-only\n"
        "                     (a tag only contacts recognise) or disabled\n"
        "%s"
        "  --recheck SECONDS  measure the other relays this often and move only to one\n"
        "                     clearly faster (30%% and 10 ms; default %d, 0: never).\n"
        "                     Measuring never changes where peers find this device\n"
        "  --retry-max SECONDS  when no relay can be reached (its relay restarts, say),\n"
        "                     try again after 1 s, then twice as long each time up to\n"
        "                     this (default %d, 1 to 3600); only a refused token stops\n"
        "  --park-after SECONDS  with no session over the relay for this long, the home\n"
        "                     relay connection parks: the relay keeps a small record\n"
        "                     instead of the connection, small keep-alives hold it, and a\n"
        "                     peer's request wakes this device (default %d, 1 to 86400)\n"
        "  --park-keepalive SECONDS  parked: a keep-alive this often (default: the\n"
        "                     relay's interval; 1 to 3600, never longer than the relay's)\n"
        "  --no-park          keep the home relay connection open (never park)\n"
        "%s",
        cli_punch_usage, RECHECK_DEFAULT_S, RETRY_MAX_DEFAULT_S, PARK_AFTER_DEFAULT_S,
        listen_limits_usage);
}

/* Over 80 lines: one case per option, each with its own range check and message. */
static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"api-url", required_argument, NULL, 'a'},
        {"token", required_argument, NULL, 't'},
        {"identity", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},
        {"port", required_argument, NULL, 'p'},
        {"allow", required_argument, NULL, 'A'},
        {"relay-id", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {"recheck", required_argument, NULL, 'C'},
        {"retry-max", required_argument, NULL, 'R'},
        {"mdns", required_argument, NULL, 'M'},
        {"park-after", required_argument, NULL, OPT_PARK_AFTER},
        {"park-keepalive", required_argument, NULL, OPT_PARK_KEEPALIVE},
        {"no-park", no_argument, NULL, OPT_NO_PARK},
        CLI_PUNCH_LONGOPTS,
        LISTEN_LIMITS_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    uint8_t key[32];
    memset(o, 0, sizeof(*o));
    o->token = getenv("POS_TOKEN");
    o->recheck_s = RECHECK_DEFAULT_S;
    o->retry_max_s = RETRY_MAX_DEFAULT_S;
    o->park_after_s = PARK_AFTER_DEFAULT_S;
    listen_limits_init(&o->limits);
    pos_p2p_punch_options_default(&o->punch);
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "a:t:i:o:p:A:r:C:R:M:h", lopts, NULL)) != -1) {
        if (cli_relay_opt(ch, optarg, &o->api_url, &o->token, &o->identity))
            continue;
        int lim = listen_limits_opt(&o->limits, ch, optarg);
        if (lim < 0)
            return 2;
        if (lim > 0)
            continue;
        lim = cli_punch_opt("pos-p2p listen", ch, optarg, &o->punch);
        if (lim < 0)
            return 2;
        if (lim > 0)
            continue;
        switch (ch) {
        case 'o':
            o->out = optarg;
            break;
        case 'r':
            o->relay_id = optarg;
            break;
        case 'p': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || end == optarg || v == 0 || v > 65535) {
                fprintf(stderr, "pos-p2p listen: --port wants a number from 1 to 65535\n");
                return 2;
            }
            o->port = (unsigned)v;
            break;
        }
        case 'C': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 86400) {
                fprintf(stderr, "pos-p2p listen: --recheck wants seconds from 0 to 86400\n");
                return 2;
            }
            o->recheck_s = v;
            break;
        }
        case 'R': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 3600) {
                fprintf(stderr, "pos-p2p listen: --retry-max wants seconds from 1 to 3600\n");
                return 2;
            }
            o->retry_max_s = v;
            break;
        }
        case OPT_PARK_AFTER:
        case OPT_PARK_KEEPALIVE: {
            long v = strtol(optarg, &end, 10), max = ch == OPT_PARK_AFTER ? 86400 : 3600;
            if (*end || end == optarg || v < 1 || v > max) {
                fprintf(stderr, "pos-p2p listen: --%s wants seconds from 1 to %ld\n",
                        ch == OPT_PARK_AFTER ? "park-after" : "park-keepalive", max);
                return 2;
            }
            *(ch == OPT_PARK_AFTER ? &o->park_after_s : &o->park_ka_s) = v;
            break;
        }
        case OPT_NO_PARK:
            o->park_after_s = 0;
            break;
        case 'M':
            if (cli_mdns_mode_parse(optarg, &o->mdns_mode) != 0) {
                fprintf(stderr, "pos-p2p listen: --mdns must be enabled, contacts-only or "
                                "disabled\n");
                return 2;
            }
            break;
        case 'A':
            if (pos_peer_id_parse(optarg, strlen(optarg), key) != 0) {
                fprintf(stderr,
                        "pos-p2p listen: --allow \"%s\" is not a peer id (43 characters of "
                        "base64, as 'pos-p2p id' prints)\n",
                        optarg);
                return 2;
            }
            if (o->n_allow >= MAX_ALLOW) {
                fprintf(stderr, "pos-p2p listen: at most %d --allow options\n", MAX_ALLOW);
                return 2;
            }
            snprintf(o->allow[o->n_allow++], POS_P2P_PEER_ID_STRLEN, "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "pos-p2p listen: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-p2p listen: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!o->out) {
        fprintf(stderr, "pos-p2p listen: --out DIR is required\n");
        return 2;
    }
    if (o->api_url && (!o->token || !*o->token)) {
        fprintf(stderr, "pos-p2p listen: --api-url needs --token (or $POS_TOKEN)\n");
        return 2;
    }
    return listen_limits_check_fds(&o->limits) == 0 ? 0 : 2;
}

static int allow_peer(void *arg, const char *peer_id)
{
    struct opts *o = arg;
    if (o->n_allow == 0)
        return 1;
    for (size_t i = 0; i < o->n_allow; i++)
        if (!strcmp(o->allow[i], peer_id))
            return 1;
    printf("refused a session from %s: not in --allow\n", peer_id);
    fflush(stdout);
    return 0;
}

static struct xfer *find_xfer(struct peer *p, int64_t stream)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->x[i].stream == stream)
            return &p->x[i];
    return NULL;
}

static void drop_xfer(struct peer *p, struct xfer *x)
{
    pos_xfer_receiver_del(x->rx);
    *x = p->x[--p->n];
}

/*
 * evict_idle ends the transfer that has received nothing for the longest
 * time, if that is at least --transfer-idle-timeout (of |p|'s peer only when
 * |same_peer|), to give its slot to a new one. Returns 1 when it did.
 */
static int evict_idle(struct peer *p, int same_peer)
{
    int64_t now = pos_p2p_now_ms(), limit = p->o->limits.idle_timeout_s * 1000;
    struct peer *vq = NULL;
    size_t vi = 0;
    if (limit <= 0)
        return 0;
    for (struct peer *q = p->o->peers; q; q = q->next) {
        if (same_peer && strcmp(q->peer_id, p->peer_id) != 0)
            continue;
        for (size_t i = 0; i < q->n; i++)
            if (now - q->x[i].active_ms >= limit &&
                (!vq || q->x[i].active_ms < vq->x[vi].active_ms))
                vq = q, vi = i;
    }
    if (!vq)
        return 0;
    printf("ended the transfer of %s from %s: nothing received for %lld s "
           "(--transfer-idle-timeout)\n",
           pos_xfer_receiver_offered_name(vq->x[vi].rx), vq->peer_id,
           (long long)((now - vq->x[vi].active_ms) / 1000));
    fflush(stdout);
    pos_p2p_session_reset_stream(vq->s, vq->x[vi].stream, 1);
    drop_xfer(vq, &vq->x[vi]);
    return 1;
}

/*
 * admit_xfer: whether |p| may start one more transfer under the limits; if
 * not, the stream gets a REFUSE with the reason and its end.
 */
static int admit_xfer(struct peer *p, int64_t stream)
{
    char reason[POS_XFER_MAX_TEXT];
    uint8_t msg[POS_XFER_HEADER_LEN + 4 + POS_XFER_MAX_TEXT];
    for (int tries = 0; tries < 2; tries++) {
        size_t mine = 0, all = 0;
        for (struct peer *q = p->o->peers; q; q = q->next) {
            all += q->n;
            if (!strcmp(q->peer_id, p->peer_id))
                mine += q->n;
        }
        if (listen_limits_admit(&p->o->limits, mine, all, reason, sizeof(reason)))
            return 1;
        if (!evict_idle(p, mine >= p->o->limits.max_per_peer))
            break;
    }
    size_t n = pos_xfer_refusal(msg, sizeof(msg), POS_XFER_ERR_BUSY, reason);
    pos_p2p_session_write(p->s, stream, msg, n, 1, NULL);
    printf("refused a file from %s: %s\n", p->peer_id, reason);
    fflush(stdout);
    return 0;
}

/*
 * takeover: |p|'s peer offers a file again while its earlier transfer of
 * that file still holds the part file (the sender lost its connection and
 * the old stream has not timed out yet): that transfer ends, and the new one
 * resumes the part file (transfer.h, pos_xfer_takeover_cb).
 */
static int takeover(void *arg, const char *part)
{
    struct peer *p = arg;
    for (struct peer *q = p->o->peers; q; q = q->next) {
        if (strcmp(q->peer_id, p->peer_id) != 0)
            continue;
        for (size_t i = 0; i < q->n; i++) {
            const char *held = pos_xfer_receiver_part_name(q->x[i].rx);
            if (!held || strcmp(held, part) != 0)
                continue;
            printf("%s offered %s again: the earlier transfer ends, this one resumes it\n",
                   p->peer_id, pos_xfer_receiver_offered_name(q->x[i].rx));
            fflush(stdout);
            pos_p2p_session_reset_stream(q->s, q->x[i].stream, 1);
            drop_xfer(q, &q->x[i]);
            return 1;
        }
    }
    return 0;
}

static void report(struct peer *p, struct xfer *x)
{
    pos_p2p_session_status st;
    uint64_t size, off, got;
    double secs = (double)(pos_p2p_now_ms() - x->started_ms) / 1000.0;
    pos_p2p_session_get_status(p->s, &st);
    pos_xfer_receiver_progress(x->rx, &size, &off, &got);
    if (pos_xfer_receiver_status(x->rx) == POS_XFER_FINISHED)
        printf("received %s (%llu bytes, resumed at %llu) from %s in %.2f s via %s\n",
               pos_xfer_receiver_final_name(x->rx), (unsigned long long)size,
               (unsigned long long)off, st.peer_id, secs,
               st.path == POS_P2P_PATH_RELAYED ? "relay" : "direct");
    else
        printf("failed to receive %s from %s: %s\n",
               pos_xfer_receiver_offered_name(x->rx) ? pos_xfer_receiver_offered_name(x->rx)
                                                     : "a file",
               st.peer_id, pos_xfer_strerror(pos_xfer_receiver_error(x->rx)));
    fflush(stdout);
    x->reported = 1;
}

/* pump moves the receiver's answers (ACCEPT, REFUSE, DONE) to the stream. */
static void pump(struct peer *p, struct xfer *x)
{
    uint8_t buf[1024];
    int n;
    while ((n = pos_xfer_receiver_output(x->rx, buf, sizeof(buf))) > 0) {
        int end = pos_xfer_receiver_status(x->rx) != POS_XFER_RUNNING;
        pos_p2p_session_write(p->s, x->stream, buf, (size_t)n, 0, NULL);
        (void)end;
    }
    if (pos_xfer_receiver_status(x->rx) != POS_XFER_RUNNING) {
        if (!x->reported)
            report(p, x);
        pos_p2p_session_write(p->s, x->stream, NULL, 0, 1, NULL);
    }
}

static void free_peer(struct peer *p)
{
    for (struct peer **pp = &p->o->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    while (p->n)
        drop_xfer(p, &p->x[0]);
    free(p);
}

/* tell_punch_stopped: once per session, that it stopped punching (both NATs vary), as send does. */
static void tell_punch_stopped(struct peer *p)
{
    pos_p2p_path_info pi;
    if (p->nat_told || pos_p2p_session_get_path(p->s, &pi) != 0 ||
        pi.punch_stopped != POS_P2P_PUNCH_STOPPED_NAT)
        return;
    p->nat_told = 1;
    printf("path of %s: both NATs vary by destination: staying relayed (no direct path can be "
           "punched between them; no more attempts)\n",
           p->peer_id);
    fflush(stdout);
}

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct peer *p = arg;
    struct xfer *x;
    int err;

    if (ev->type != POS_P2P_SESSION_EV_CLOSED)
        tell_punch_stopped(p); /* the session's events come often enough: no timer of its own */
    switch (ev->type) {
    case POS_P2P_SESSION_EV_STREAM:
        if (p->n >= MAX_XFERS) {
            pos_p2p_session_reset_stream(s, ev->stream, 1);
            break;
        }
        if (!admit_xfer(p, ev->stream))
            break;
        listen_limits_sweep(&p->o->limits, p->o->out, 0);
        x = &p->x[p->n];
        memset(x, 0, sizeof(*x));
        x->stream = ev->stream;
        x->started_ms = x->active_ms = pos_p2p_now_ms();
        x->rx = pos_xfer_receiver_new(p->o->out, p->o->limits.max_file_size, &err);
        if (!x->rx) {
            fprintf(stderr, "pos-p2p listen: cannot receive into %s: %s\n", p->o->out,
                    pos_xfer_strerror(err));
            pos_p2p_session_reset_stream(s, ev->stream, 1);
            break;
        }
        pos_xfer_receiver_set_sender(x->rx, p->peer_id);
        pos_xfer_receiver_set_takeover(x->rx, takeover, p);
        p->n++;
        break;
    case POS_P2P_SESSION_EV_DATA:
        x = find_xfer(p, ev->stream);
        if (!x)
            break;
        x->active_ms = pos_p2p_now_ms();
        if (ev->len && pos_xfer_receiver_status(x->rx) == POS_XFER_RUNNING) {
            pos_xfer_receiver_input(x->rx, ev->data, ev->len);
            x = find_xfer(p, ev->stream); /* a takeover may have moved it in p->x */
        }
        pump(p, x);
        if (ev->fin)
            drop_xfer(p, x);
        break;
    case POS_P2P_SESSION_EV_STREAM_RESET:
        x = find_xfer(p, ev->stream);
        if (x)
            drop_xfer(p, x); /* the partial file stays for a resume */
        break;
    case POS_P2P_SESSION_EV_PATH:
        if (ev->path_change)
            cli_print_path_change(stdout, p->peer_id, ev->path_change);
        break;
    case POS_P2P_SESSION_EV_CLOSED:
        free_peer(p);
        pos_p2p_session_close(s, 0, NULL);
        break;
    default:
        break;
    }
}

static void on_session(void *arg, pos_p2p_session *s)
{
    struct peer *p = calloc(1, sizeof(*p));
    pos_p2p_session_status st;
    pos_p2p_session_get_status(s, &st);
    if (!p) {
        pos_p2p_session_close(s, 1, "out of memory");
        return;
    }
    p->o = arg;
    p->s = s;
    snprintf(p->peer_id, sizeof(p->peer_id), "%s", st.peer_id);
    p->next = p->o->peers;
    p->o->peers = p;
    pos_p2p_session_set_callback(s, on_event, p);
    printf("session from %s (%s)\n", st.peer_id,
           st.path == POS_P2P_PATH_RELAYED ? "relayed" : st.remote);
    fflush(stdout);
}

struct watch {
    pos_p2p_relay *home;   /* NULL: none (no --api-url, or looking for one) */
    int64_t recheck_at_ms; /* -1: never */
    int64_t retry_at_ms;   /* without home: when to look again (-1: never) */
    int64_t retry_ms;      /* the pause after the next failed look */
    char gone_id[64];      /* the home relay that just said it is going away ("" none) */
    int parked;            /* the home connection's parked state last printed */
};

/*
 * The runner's check: stop requested, home relay gone, time to measure the
 * others again, or (without home) time to look for a relay again.
 */
static int relay_event(void *arg)
{
    struct watch *w = arg;
    pos_p2p_relay_status st;
    int64_t now = pos_p2p_now_ms();
    if (stop_requested)
        return 1;
    if (!w->home)
        return w->retry_at_ms >= 0 && now >= w->retry_at_ms;
    pos_p2p_relay_get_status(w->home, &st);
    return st.state == POS_P2P_RELAY_FAILED || pos_p2p_relay_parked(w->home) != w->parked ||
           (w->recheck_at_ms >= 0 && now >= w->recheck_at_ms);
}

/* tell_parked prints when the home connection parked or woke up. */
static void tell_parked(struct watch *w, const pos_p2p_relay_status *st)
{
    static const char *const why[] = {"", "woken by the relay: a peer asks for this device",
                                      "a request of this device",
                                      "keep-alives unanswered: the relay restarted or lost the "
                                      "record"};
    int parked = pos_p2p_relay_parked(w->home);
    if (parked == w->parked)
        return;
    w->parked = parked;
    if (parked)
        printf("relay: parked (keep-alive every %u s)\n", st->park_keepalive_s);
    else if (st->state == POS_P2P_RELAY_ACCEPTED)
        printf("relay: awake (%s)\n", st->awake_reason >= 1 && st->awake_reason <= 3
                                          ? why[st->awake_reason]
                                          : "reconnected");
    fflush(stdout);
}

/* switch_home hands |next| to the sessions and closes the old home relay. */
static void switch_home(pos_p2p_endpoint *ep, struct watch *w, pos_p2p_relay *next,
                        const pos_p2p_relay_info *info)
{
    if (w->home) {
        pos_p2p_session_drop_relay(ep, w->home);
        pos_p2p_relay_close(w->home);
    }
    w->home = next;
    w->parked = 0;
    pos_p2p_session_use_relay(ep, next);
    printf("relay: %s at %s\n", info->id, info->addrs[0]);
    fflush(stdout);
}

/* drop_home: the home relay failed; the sessions over it end and it is closed. */
static void drop_home(pos_p2p_endpoint *ep, struct watch *w)
{
    pos_p2p_session_drop_relay(ep, w->home);
    pos_p2p_relay_close(w->home);
    w->home = NULL;
}

/* recheck measures the other relays; the home relay changes only for a clear gain. */
static void recheck(pos_p2p_endpoint *ep, struct opts *o, struct watch *w, pos_p2p_relay_info *info)
{
    pos_p2p_relay_status st;
    struct cli_pick_req q = {.cmd = "pos-p2p listen",
                             .api_url = o->api_url,
                             .token = o->token,
                             .current_id = info->id,
                             .stop = &stop_requested,
                             .timeout_ms = 5000,
                             .home = 1};
    struct cli_pick_res res;
    pos_p2p_relay *next;
    pos_p2p_relay_get_status(w->home, &st);
    q.current_rtt = st.rtt_ms;
    next = cli_pick_relay(ep, &q, &res);
    if (next) {
        printf("home relay: %s is clearly faster than %s\n", res.info.id, info->id);
        *info = res.info;
        switch_home(ep, w, next, info);
    } else if (res.kept) {
        printf("home relay kept: %s\n", info->id);
        fflush(stdout);
    }
}

/*
 * find_home looks for a home relay (the forced one with --relay-id). Returns
 * 0 when found (now w->home), 1 when the token was refused (the end), or -1
 * after scheduling the next look with a growing, jittered pause.
 */
static int find_home(pos_p2p_endpoint *ep, struct opts *o, struct watch *w,
                     pos_p2p_relay_info *info)
{
    /* a relay going away may still be listed for a moment: not that one at once */
    struct cli_pick_req q = {.cmd = "pos-p2p listen",
                             .api_url = o->api_url,
                             .token = o->token,
                             .relay_id = o->relay_id,
                             .skip_id = w->gone_id[0] ? w->gone_id : NULL,
                             .stop = &stop_requested,
                             .timeout_ms = 5000,
                             .home = 1};
    struct cli_pick_res res;
    pos_p2p_relay *next = cli_pick_relay(ep, &q, &res);
    int64_t pause;
    cli_nat_warn("pos-p2p listen", res.nat);
    w->gone_id[0] = 0;
    if (next) {
        *info = res.info;
        switch_home(ep, w, next, info);
        w->retry_at_ms = -1;
        w->retry_ms = RETRY_FIRST_MS;
        w->recheck_at_ms =
            o->recheck_s > 0 && !o->relay_id ? pos_p2p_now_ms() + o->recheck_s * 1000 : -1;
        return 0;
    }
    if (stop_requested)
        return -1; /* SIGTERM or SIGINT while looking: the caller ends */
    if (res.token_refused) {
        fprintf(stderr, "pos-p2p listen: the relay refused the token (%s): stopping\n",
                res.refusal);
        return 1;
    }
    /* between half and all of the pause, so that a relay's clients do not return in step */
    pause = w->retry_ms / 2 + (int64_t)(rand() % (int)(w->retry_ms / 2 + 1));
    fprintf(stderr, "pos-p2p listen: no relay reachable; retrying in %.1f s\n",
            (double)pause / 1000.0);
    w->retry_at_ms = pos_p2p_now_ms() + pause;
    w->retry_ms *= 2;
    if (w->retry_ms > o->retry_max_s * 1000)
        w->retry_ms = o->retry_max_s * 1000;
    return -1;
}

/*
 * serve: the loop of a running listener until SIGTERM/SIGINT (0) or a refused
 * token (1): sessions and transfers run inside the endpoint; between its runs
 * the home relay is watched, rechecked and, when lost, found again.
 */
static int serve(pos_p2p_endpoint *ep, struct opts *o, struct watch *w, pos_p2p_relay_info *info)
{
    w->recheck_at_ms =
        o->recheck_s > 0 && !o->relay_id ? pos_p2p_now_ms() + o->recheck_s * 1000 : -1;
    for (;;) {
        pos_p2p_relay_status st;
        /* the runner sleeps until a socket or a timer of the endpoint: wake for ours too */
        int64_t wake = w->home ? w->recheck_at_ms : w->retry_at_ms, now = pos_p2p_now_ms();
        int tmo = wake < 0 ? -1 : wake <= now ? 0 : (int)(wake - now);
        cli_run(ep, o->mdns, tmo, relay_event, w);
        now = pos_p2p_now_ms();
        if (stop_requested)
            return 0;
        if (!w->home) {
            if (w->retry_at_ms < 0 || now < w->retry_at_ms)
                continue;
            if (find_home(ep, o, w, info) > 0)
                return 1;
            continue;
        }
        pos_p2p_relay_get_status(w->home, &st);
        tell_parked(w, &st);
        if (st.state != POS_P2P_RELAY_FAILED) {
            if (w->recheck_at_ms >= 0 && now >= w->recheck_at_ms) {
                recheck(ep, o, w, info);
                w->recheck_at_ms = pos_p2p_now_ms() + o->recheck_s * 1000;
            }
            continue;
        }
        fprintf(stderr, "pos-p2p listen: the relay closed the connection: %s\n",
                st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
        drop_home(ep, w);
        if (st.error == POS_P2P_ERR_GOING_AWAY && !o->relay_id)
            snprintf(w->gone_id, sizeof(w->gone_id), "%s", info->id);
        if (cli_token_refused(&st)) {
            fprintf(stderr, "pos-p2p listen: the relay refused the token: stopping\n");
            return 1;
        }
        /* going away, closed or silent: the best other relay at once, then with pauses */
        w->retry_ms =
            o->retry_max_s * 1000 < RETRY_FIRST_MS ? o->retry_max_s * 1000 : RETRY_FIRST_MS;
        w->retry_at_ms = now;
    }
}

int cmd_listen(int argc, char **argv)
{
    struct opts o;
    char path[4096], peer_id[POS_P2P_PEER_ID_STRLEN];
    pos_p2p_identity *id = NULL;
    pos_p2p_endpoint *ep = NULL;
    pos_p2p_relay_info info;
    struct sigaction sa;
    struct watch w = {NULL, -1, -1, RETRY_FIRST_MS, "", 0};
    int rv = parse(argc, argv, &o), status = 1;

    if (rv)
        return rv == 1 ? 0 : 2;
    if (cli_identity_path("listen", &o.identity, path, sizeof(path)) != 0)
        return 2;
    id = cli_identity_load("listen", o.identity);
    if (!id)
        return 1;
    {
        int e;
        pos_xfer_receiver *probe = pos_xfer_receiver_new(o.out, 0, &e);
        if (!probe) {
            fprintf(stderr, "pos-p2p listen: --out %s: not a directory that can be opened\n",
                    o.out);
            goto out;
        }
        pos_xfer_receiver_del(probe);
    }
    listen_limits_sweep(&o.limits, o.out, 1);
    rv = pos_p2p_endpoint_new(&ep, id, o.port);
    if (rv != 0) {
        fprintf(stderr, "pos-p2p listen: cannot open UDP port %u: %s\n", o.port,
                pos_p2p_strerror(rv));
        goto out;
    }
    if (cli_punch_apply("pos-p2p listen", ep, &o.punch) != 0)
        goto out;
    pos_p2p_endpoint_set_park(ep, (int)o.park_after_s * 1000, (int)o.park_ka_s * 1000);
    pos_p2p_endpoint_listen(ep, allow_peer, on_session, &o);
    pos_p2p_identity_peer_id(id, peer_id);
    printf("peer id: %s\n", peer_id);
    printf("direct: UDP port %u\n", pos_p2p_endpoint_local_port(ep));
    o.mdns = cli_lan_advertise("pos-p2p listen", o.mdns_mode, o.identity, peer_id,
                               pos_p2p_endpoint_local_port(ep));
    if (o.mdns)
        printf("mdns: advertised on the local network%s\n",
               o.mdns_mode == POS_MDNS_CONTACTS_ONLY ? " (contacts only)" : "");
    fflush(stdout); /* before the relay search, which may take a while */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    srand((unsigned)(pos_p2p_now_ms() ^ (int64_t)getpid()));
    w.retry_ms = o.retry_max_s * 1000 < RETRY_FIRST_MS ? o.retry_max_s * 1000 : RETRY_FIRST_MS;
    if (o.api_url && find_home(ep, &o, &w, &info) > 0)
        goto out;
    status = 0;
    if (stop_requested)
        goto out;
    printf("listening, files go to %s\n", o.out);
    fflush(stdout);
    status = serve(ep, &o, &w, &info);
out:
    pos_mdns_del(o.mdns); /* goodbyes */
    while (o.peers)
        free_peer(o.peers);
    pos_p2p_endpoint_del(ep); /* closes sessions and relays */
    pos_p2p_identity_del(id);
    return status;
}
