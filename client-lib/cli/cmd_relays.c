/*
 * `pos-p2p relays --api-url URL --token TOKEN [--identity FILE] [--timeout S]
 * [--hold S]`: fetch the relay list, connect to every relay at once over the
 * device's one endpoint, and print per relay its id, address, round-trip
 * time, the address it observed for us and its verdict; then the home relay
 * (lowest RTT). Exit 0 when at least one relay accepted us, 1 otherwise.
 * --hold keeps the accepted connections open for S seconds and reports
 * when a relay closes one (revocation, shutdown); SIGTERM or SIGINT ends the
 * hold early, closing the connections cleanly (the relay frees their slots).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pos/p2p.h"

#define MAX_RELAYS 256

struct opts {
    const char *api_url, *token, *identity;
    double timeout_s, hold_s;
};

/* Set by SIGTERM/SIGINT during --hold: close the connections cleanly, then exit. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

struct conns {
    size_t n;
    pos_p2p_relay *r[MAX_RELAYS];
    const pos_p2p_relay_info *info[MAX_RELAYS];
    int reported[MAX_RELAYS];
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-p2p relays --api-url URL --token TOKEN [--identity FILE]\n"
                 "                      [--timeout SECONDS] [--hold SECONDS]\n\n"
                 "Fetch the relay list from the discovery API, connect to every relay, and print\n"
                 "for each: id, address, round-trip time, the address it saw for this device, and\n"
                 "whether it accepted the token; then the home relay (lowest round-trip time)\n"
                 "and the NAT mapping the observed addresses show: endpoint-independent (the\n"
                 "same address and port to every relay), varies by destination (direct paths\n"
                 "are unlikely), or unknown (fewer than two relays answered).\n"
                 "Exit status 0 when at least one relay accepted, 1 otherwise.\n\n"
                 "  --token TOKEN      the access token (or $POS_TOKEN)\n"
                 "  --identity FILE    identity file (default $POS_IDENTITY, else\n"
                 "                     $XDG_CONFIG_HOME/pos/identity); created when missing\n"
                 "  --timeout SECONDS  per relay and for the list (default 5)\n"
                 "  --hold SECONDS     keep accepted connections open and report closes\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"api-url", required_argument, NULL, 'a'},
        {"token", required_argument, NULL, 't'},
        {"identity", required_argument, NULL, 'i'},
        {"timeout", required_argument, NULL, 'T'},
        {"hold", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    memset(o, 0, sizeof(*o));
    o->timeout_s = 5;
    o->token = getenv("POS_TOKEN");
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((ch = getopt_long(argc, argv, "a:t:i:T:H:h", lopts, NULL)) != -1) {
        if (cli_relay_opt(ch, optarg, &o->api_url, &o->token, &o->identity))
            continue;
        switch (ch) {
        case 'T':
        case 'H': {
            double v = strtod(optarg, &end);
            if (*end || end == optarg || v <= 0 || v > 86400) {
                fprintf(stderr, "pos-p2p relays: --%s wants seconds between 0 and 86400\n",
                        ch == 'T' ? "timeout" : "hold");
                return 2;
            }
            if (ch == 'T')
                o->timeout_s = v;
            else
                o->hold_s = v;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "%s: unknown option or missing value: %s\n\n", "pos-p2p relays",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-p2p relays: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!o->api_url || !o->token || !*o->token) {
        fprintf(stderr, "pos-p2p relays: --api-url and --token are required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static int all_settled(void *arg)
{
    struct conns *c = arg;
    pos_p2p_relay_status st;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->r[i])
            continue;
        pos_p2p_relay_get_status(c->r[i], &st);
        if (st.state == POS_P2P_RELAY_CONNECTING)
            return 0;
    }
    return 1;
}

/* For --hold: print each accepted connection the relay closes, once. */
static int report_closes(void *arg)
{
    struct conns *c = arg;
    pos_p2p_relay_status st;
    int open = 0;
    if (stop_requested)
        return 1;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->r[i] || c->reported[i])
            continue;
        /* relays that never accepted were reported by print_results */
        pos_p2p_relay_get_status(c->r[i], &st);
        if (st.state == POS_P2P_RELAY_ACCEPTED) {
            open++;
        } else if (st.state == POS_P2P_RELAY_FAILED && st.accepted_at_ms > 0) {
            c->reported[i] = 1;
            printf("closed %s: %s (after %.1f s)\n", c->info[i]->id,
                   st.reason[0] ? st.reason : pos_p2p_strerror(st.error),
                   (double)(st.failed_at_ms - st.accepted_at_ms) / 1000.0);
            fflush(stdout);
        }
    }
    return open == 0;
}

static void print_results(struct conns *c, int *accepted)
{
    pos_p2p_relay_status st;
    double best = -1;
    size_t home = 0;
    static char observed[MAX_RELAYS][POS_P2P_ADDR_STRLEN];

    *accepted = 0;
    for (size_t i = 0; i < c->n; i++) {
        const pos_p2p_relay_info *in = c->info[i];
        if (!c->r[i]) {
            printf("relay %s at %s: failed: %s\n", in->id, in->addrs[0],
                   pos_p2p_strerror(POS_P2P_ERR_NO_ROUTE));
            continue;
        }
        pos_p2p_relay_get_status(c->r[i], &st);
        if (st.state == POS_P2P_RELAY_ACCEPTED) {
            printf("relay %s at %s: accepted, rtt %.2f ms, observed %s\n", in->id, st.remote,
                   st.rtt_ms, st.observed);
            memcpy(observed[*accepted], st.observed, sizeof(observed[0]));
            (*accepted)++;
            if (best < 0 || st.rtt_ms < best) {
                best = st.rtt_ms;
                home = i;
            }
        } else {
            const char *what = st.error == POS_P2P_ERR_REFUSED ? "refused" : "failed";
            printf("relay %s at %s: %s: %s\n", in->id, st.remote, what,
                   st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
        }
    }
    if (*accepted) {
        pos_p2p_relay_get_status(c->r[home], &st);
        printf("home relay: %s at %s (rtt %.2f ms)\n", c->info[home]->id, st.remote, st.rtt_ms);
    }
    printf("%s\n", cli_nat_line(cli_nat_verdict(observed, (size_t)*accepted)));
    fflush(stdout);
}

int cmd_relays(int argc, char **argv)
{
    struct opts o;
    char path[4096], err[512];
    pos_p2p_identity *id = NULL;
    pos_p2p_relay_list *list = NULL;
    pos_p2p_endpoint *ep = NULL;
    struct conns *c = NULL;
    int rv = parse(argc, argv, &o), accepted = 0, status = 1;

    if (rv)
        return rv == 1 ? 0 : 2;
    if (cli_identity_path("relays", &o.identity, path, sizeof(path)) != 0)
        return 2;
    id = cli_identity_load("relays", o.identity);
    if (!id)
        return 1;
    rv = pos_p2p_relay_list_fetch(o.api_url, (int)(o.timeout_s * 1000), &list, err, sizeof(err));
    if (rv != 0) {
        fprintf(stderr, "pos-p2p relays: %s\n", err[0] ? err : pos_p2p_strerror(rv));
        goto out;
    }
    if (err[0])
        fprintf(stderr, "pos-p2p relays: %s\n", err);
    if (pos_p2p_relay_list_count(list) == 0) {
        fprintf(stderr, "pos-p2p relays: the discovery API lists no relay\n");
        goto out;
    }
    rv = pos_p2p_endpoint_new(&ep, id, 0);
    c = calloc(1, sizeof(*c));
    if (rv != 0 || !c) {
        fprintf(stderr, "pos-p2p relays: cannot open the UDP sockets: %s\n",
                pos_p2p_strerror(rv ? rv : POS_P2P_ERR_NOMEM));
        goto out;
    }
    for (size_t i = 0; i < pos_p2p_relay_list_count(list) && c->n < MAX_RELAYS; i++) {
        c->info[c->n] = pos_p2p_relay_list_get(list, i);
        /* measuring only: a device that also listens keeps its presence where it is */
        rv = pos_p2p_relay_connect_flags(ep, c->info[c->n], o.token, (int)(o.timeout_s * 1000),
                                         POS_P2P_RELAY_NOT_HOME, &c->r[c->n]);
        if (rv == POS_P2P_ERR_INVALID_ARGUMENT) {
            fprintf(stderr, "pos-p2p relays: the token is not valid (1 to 256 bytes)\n");
            goto out;
        }
        if (rv != 0)
            c->r[c->n] = NULL;
        c->n++;
    }
    pos_p2p_endpoint_run(ep, (int)(o.timeout_s * 1000) + 500, all_settled, c);
    print_results(c, &accepted);
    status = accepted ? 0 : 1;
    if (accepted && o.hold_s > 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop_signal; /* no SA_RESTART: the poll returns at once */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        pos_p2p_endpoint_run(ep, (int)(o.hold_s * 1000), report_closes, c);
    }
out:
    if (c)
        for (size_t i = 0; i < c->n; i++)
            pos_p2p_relay_close(c->r[i]);
    free(c);
    pos_p2p_endpoint_del(ep);
    pos_p2p_relay_list_del(list);
    pos_p2p_identity_del(id);
    return status;
}
