/*
 * `pos-loadtest idle`: many idle devices at home on one relay, and what
 * they cost it. N clients (idle_pool.c: each its own identity, endpoint and
 * UDP socket on its own loopback address) connect as home connections, at
 * most C handshakes at once; once all are in, the relay's RSS is read (all
 * awake) and CONNECT-to-circuit is timed for awake peers (the baseline).
 * The clients are held awake S seconds (relay CPU per datagram), then every
 * client parks (pos_p2p_endpoint_set_park), the relay's RSS is read again
 * (all parked), the clients hold S seconds sending keep-alives (relay CPU
 * per keep-alive), CONNECT is timed for parked peers (wake, reconnect,
 * INCOMING, CIRCUIT), and a "nothing lost" run dials parked peers K times,
 * some just after their address changed (idle_tries.c), checking that a
 * datagram crosses each circuit. --park-after 0: the awake figures only.
 */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "idle_run.h"
#include "loadtest.h"
#include "pos/p2p.h"
#include "relay_watch.h"

#define CMD "pos-loadtest idle"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " CMD " (--api-url URL [--relay-id UUID] | --addr IP:PORT --peer-id ID)\n"
            "                         --token TOKEN [--clients N] [--concurrency C]\n"
            "                         [--per-addr K] [--park-after SECONDS]\n"
            "                         [--keepalive SECONDS] [--hold SECONDS] [--tries K]\n"
            "                         [--lost-tries K] [--relay-pid PID] [--metrics-url URL]\n"
            "                         [--timeout SECONDS] [--json]\n\n"
            "N idle devices (default 1000) at home on one relay, each its own identity and\n"
            "UDP socket on its own loopback address (127.0.0.2 and up; K clients per\n"
            "address, default 1), at most C handshakes at once (default 200). Once all are\n"
            "in: CONNECT to an awake peer until the circuit is up, K tries (default 100).\n"
            "Then all park after SECONDS idle (default 2), keep-alive every --keepalive\n"
            "seconds (default 0: the relay's), are held parked --hold seconds (default\n"
            "10), and CONNECT is timed again for parked peers; --lost-tries (default 100)\n"
            "dials parked peers, every fourth just after its address changed (noticed)\n"
            "and every fourth after a NAT rebinding it does not notice (these CONNECTs go\n"
            "out 16 at a time at the end: each may wait a keep-alive interval), and counts\n"
            "those whose circuit carried a datagram. --relay-pid PID adds the relay's RSS\n"
            "(before / all awake / all parked) and CPU per keep-alive; --metrics-url\n"
            "(the relay's /metrics) its awake and parked counts. The process needs a file\n"
            "descriptor per client: it raises its own limit (RLIMIT_NOFILE) as far as it may.\n"
            "Raise the relay's conn_rate_per_addr, conn_rate_per_token and\n"
            "max_conns_per_token for large N.\n");
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static const struct option lopts[] = {
    {"api-url", required_argument, NULL, 'a'},
    {"relay-id", required_argument, NULL, 'R'},
    {"addr", required_argument, NULL, 'A'},
    {"peer-id", required_argument, NULL, 'p'},
    {"token", required_argument, NULL, 't'},
    {"clients", required_argument, NULL, 'n'},
    {"concurrency", required_argument, NULL, 'c'},
    {"per-addr", required_argument, NULL, 'k'},
    {"park-after", required_argument, NULL, 'P'},
    {"keepalive", required_argument, NULL, 'K'},
    {"hold", required_argument, NULL, 'H'},
    {"tries", required_argument, NULL, 'r'},
    {"lost-tries", required_argument, NULL, 'l'},
    {"relay-pid", required_argument, NULL, 'i'},
    {"metrics-url", required_argument, NULL, 'm'},
    {"timeout", required_argument, NULL, 'T'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The numeric options: where each goes and its range. */
static long *num_opt(struct opts *o, int ch, long *min, long *max)
{
    *min = 1;
    *max = 86400;
    switch (ch) {
    case 'n':
        *max = 1000000;
        return &o->clients;
    case 'c':
        *max = 100000;
        return &o->concurrency;
    case 'k':
        *max = 65535;
        return &o->per_addr;
    case 'P':
        *min = 0;
        return &o->park_after_s;
    case 'K':
        *min = 0;
        *max = 3600;
        return &o->keepalive_s;
    case 'H':
        *min = 0;
        return &o->hold_s;
    case 'r':
    case 'l':
        *min = 0;
        *max = 100000;
        return ch == 'r' ? &o->tries : &o->lost_tries;
    case 'i':
        *max = 4194304;
        return &o->relay_pid;
    case 'T':
        *max = 600;
        return &o->timeout_s;
    default:
        return NULL;
    }
}

static int parse(int argc, char **argv, struct opts *o)
{
    int ch, li = 0;
    long min, max, *dst;
    memset(o, 0, sizeof(*o));
    *o = (struct opts){.clients = 1000,
                       .concurrency = 200,
                       .per_addr = 1,
                       .tries = 100,
                       .lost_tries = 100,
                       .park_after_s = 2,
                       .hold_s = 10,
                       .timeout_s = 10};
    o->token = getenv("POS_TOKEN");
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", lopts, &li)) != -1) {
        if ((dst = num_opt(o, ch, &min, &max)) != NULL) {
            if (parse_long(optarg, min, max, dst) != 0) {
                fprintf(stderr, CMD ": --%s wants a whole number from %ld to %ld, not \"%s\"\n",
                        lopts[li].name, min, max, optarg);
                return 2;
            }
            continue;
        }
        switch (ch) {
        case 'a':
            o->api_url = optarg;
            break;
        case 'R':
            o->relay_id = optarg;
            break;
        case 'A':
            o->addr = optarg;
            break;
        case 'p':
            o->peer_id = optarg;
            break;
        case 't':
            o->token = optarg;
            break;
        case 'm':
            o->metrics_url = optarg;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, CMD ": unknown option or missing value: %s\n\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!o->token || (!o->api_url && !(o->addr && o->peer_id))) {
        fprintf(stderr,
                CMD ": --token and either --api-url or --addr with --peer-id are required\n");
        return 2;
    }
    return 0;
}

/*
 * raise_nofile: room for |need| descriptors as far as this process may
 * (the soft limit up to the hard one; more only when privileged). What is
 * still missing goes to helper processes (split).
 */
static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= (rlim_t)need)
        return;
    struct rlimit want = {(rlim_t)need, rl.rlim_max > (rlim_t)need ? rl.rlim_max : (rlim_t)need};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p)
{
    return n ? v[(long)((double)(n - 1) * p)] : -1;
}

static int lat_alloc(struct lat *L, long n)
{
    L->us = calloc((size_t)(n ? n : 1), sizeof(double));
    return L->us ? 0 : -1;
}

static void relay_figures(struct run *R, long *rss, double *a, double *b, const char *na,
                          const char *nb)
{
    char err[256];
    *rss = R->o.relay_pid ? proc_rss_kib((pid_t)R->o.relay_pid) : -1;
    *a = *b = -1;
    if (R->o.metrics_url) {
        char *m = metrics_fetch(R->o.metrics_url, err, sizeof(err));
        if (!m) {
            fprintf(stderr, CMD ": %s\n", err);
            return;
        }
        *a = metrics_value(m, na);
        *b = nb ? metrics_value(m, nb) : -1;
        free(m);
    }
}

static double metric_now(struct run *R, const char *name)
{
    char err[256];
    double v = -1;
    char *m = R->o.metrics_url ? metrics_fetch(R->o.metrics_url, err, sizeof(err)) : NULL;
    if (m)
        v = metrics_value(m, name);
    free(m);
    return v;
}

/* The keep-alives the relay counted (parked), or the datagrams it received (awake). */
static double hold_counter(struct run *R, int parked)
{
    if (!parked)
        return metric_now(R, "pos_relay_packets_total{dir=\"in\"}");
    double ok = metric_now(R, "pos_relay_park_keepalives_total{result=\"ok\"}");
    double bad = metric_now(R, "pos_relay_park_keepalives_total{result=\"dropped\"}");
    return ok < 0 ? -1 : ok + (bad > 0 ? bad : 0);
}

/* hold: serve the clients --hold seconds; the relay's CPU and its counter (hold_counter). */
static void hold(struct run *R, int parked)
{
    double cpu0 = R->o.relay_pid ? proc_cpu_s((pid_t)R->o.relay_pid) : -1;
    double k0 = hold_counter(R, parked);
    double a0 = parked ? metric_now(R, "pos_relay_park_acks_total") : -1;
    if (!R->o.json)
        fprintf(stderr, "holding %ld clients %s for %ld s\n", R->accepted,
                parked ? "parked" : "awake", R->o.hold_s);
    idle_load_pump_for(R->pool, R->o.hold_s * 1000);
    double cpu1 = R->o.relay_pid ? proc_cpu_s((pid_t)R->o.relay_pid) : -1;
    double k1 = hold_counter(R, parked);
    R->hold_cpu_s[parked] = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    R->hold_events[parked] = k0 >= 0 && k1 >= 0 ? k1 - k0 : -1;
    if (parked) {
        double a1 = metric_now(R, "pos_relay_park_acks_total");
        R->hold_acks = a0 >= 0 && a1 >= 0 ? a1 - a0 : -1;
    }
}

/* events: PARKED, AWAKE woken, AWAKE after unanswered keep-alives, over all processes. */
static void events(struct run *R, long v[3])
{
    v[0] = v[1] = v[2] = 0;
    idle_load_events(R->pool, R->mine, v);
    idle_team_events(&R->team, R->pool, v);
}

/* park_all: every accepted client parks (helpers' too); waits until all are (or the time is up). */
static void park_all(struct run *R)
{
    int64_t t0 = pos_p2p_now_ms(), end = t0 + (R->o.park_after_s + 60 + R->n / 1000) * 1000;
    long parked = 0, theirs[3] = {0, 0, 0};
    idle_team_park(&R->team);
    idle_load_park(R->pool, R->mine, &R->lc);
    while (pos_p2p_now_ms() < end) {
        idle_load_pump_for(R->pool, 500);
        if ((parked = idle_load_parked(R->pool, R->mine)) >= R->ls.accepted)
            break;
    }
    idle_team_wait(&R->team, R->pool, 'P', theirs);
    R->park_s = (double)(pos_p2p_now_ms() - t0) / 1000.0;
    R->parked_seen = (double)(parked + theirs[0]);
    for (long i = 0; i < R->mine; i++) {
        struct idle_client *c = idle_pool_get(R->pool, i);
        pos_p2p_relay_status st;
        if (c->accepted && c->r && !pos_p2p_relay_parked(c->r)) {
            pos_p2p_relay_get_status(c->r, &st);
            R->unparked++;
            R->unparked_incoming += c->incoming > 0;
            R->unparked_failed += st.state == POS_P2P_RELAY_FAILED;
            if (st.state == POS_P2P_RELAY_FAILED && !R->unparked_first[0])
                snprintf(R->unparked_first, sizeof(R->unparked_first), "%s: %s",
                         pos_p2p_strerror(st.error), st.reason[0] ? st.reason : "no reason given");
            R->unparked_before += st.state != POS_P2P_RELAY_FAILED && st.parks > 0;
        }
    }
    events(R, R->ev_park);
}

/* pct_ms: percentile |p| of |L|'s times in ms, or -1 when none was measured (the JSON's "not
 * measured") */
static double pct_ms(const struct lat *L, double p)
{
    return L->n ? pct(L->us, L->n, p) / 1000 : -1;
}

static void print_lat(const char *what, struct lat *L)
{
    if (!L->tried) {
        printf("CONNECT to %s peer: none tried\n", what);
        return;
    }
    printf("CONNECT to %s peer until the circuit is up: p50 %.2f ms, p95 %.2f ms (%ld of %ld "
           "tries carried a datagram)\n",
           what, pct_ms(L, 0.5), pct_ms(L, 0.95), L->ok, L->tried);
    if (L->first[0])
        printf("  first failure: %s\n", L->first);
}

static void print_text(struct run *R)
{
    double cpu = R->hold_cpu_s[0], ev = R->hold_events[0];
    printf("clients: %ld accepted, %ld failed in %.1f s (%.0f per second, %ld attempts retried), "
           "handshake p50 %.0f ms\n",
           R->accepted, R->failed, R->connect_s, R->connect_s > 0 ? R->accepted / R->connect_s : 0,
           R->retried, R->ls.hs_p50_ms);
    if (R->first_reason[0])
        printf("first refusal or failure: %s\n", R->first_reason);
    printf("load generator RSS per client: %ld bytes idle, %ld bytes awake\n",
           (R->gen_rss0 * 1024) / R->n, (R->gen_rss_awake * 1024) / R->n);
    if (R->rss0 >= 0)
        printf("relay RSS: %ld KiB before, %ld KiB with all awake (%ld bytes per awake client)\n",
               R->rss0, R->rss_awake,
               R->accepted ? (R->rss_awake - R->rss0) * 1024 / R->accepted : 0);
    if (R->m_awake_conns >= 0)
        printf("relay connections with all awake: %.0f\n", R->m_awake_conns);
    print_lat("an awake", &R->awake);
    if (cpu >= 0 && ev > 0 && R->accepted)
        printf("awake %ld s: relay CPU %.3f s, %.0f datagrams in: %.2f us each, %.2f us per "
               "client-second\n",
               R->o.hold_s, cpu, ev, cpu * 1e6 / ev, cpu * 1e6 / (double)R->accepted / R->o.hold_s);
    if (!R->o.park_after_s) {
        printf("parking: off (--park-after 0): awake figures only\n");
        return;
    }
    cpu = R->hold_cpu_s[1];
    ev = R->hold_events[1];
    printf("parked: %.0f of %ld clients in %.1f s (%ld PARKED events, %ld reconnects after "
           "unanswered keep-alives); relay: %.0f parks, %.0f refused\n",
           R->parked_seen, R->accepted, R->park_s, R->ev_park[0], R->ev_park[2], R->m_parks,
           R->m_park_refused);
    printf("during the parked hold: %ld reconnects after unanswered keep-alives\n",
           R->ev_hold[2] - R->ev_park[2]);
    if (R->unparked)
        printf("not parked when the wait ended, of this process's %ld clients: %ld (%ld of them "
               "had answered an INCOMING, %ld had parked before, %ld failed)\n",
               R->mine, R->unparked, R->unparked_incoming, R->unparked_before, R->unparked_failed);
    if (R->unparked_first[0])
        printf("  first failed: %s\n", R->unparked_first);
    if (R->rss0 >= 0)
        printf("relay RSS with all parked: %ld KiB (%ld bytes per parked client)\n", R->rss_parked,
               R->accepted ? (R->rss_parked - R->rss0) * 1024 / R->accepted : 0);
    if (R->m_parked >= 0)
        printf("relay metrics with all parked: pos_relay_parked %.0f, pos_relay_awake %.0f, "
               "pos_relay_connections %.0f\n",
               R->m_parked, R->m_awake, R->m_conns_parked);
    printf("load generator RSS per parked client: %ld bytes\n", (R->gen_rss_parked * 1024) / R->n);
    if (cpu >= 0 && ev > 0)
        printf("parked %ld s: %.0f keep-alives (%.0f acknowledged), relay CPU %.3f s: %.2f us per "
               "keep-alive, %.2f us per client-second\n",
               R->o.hold_s, ev, R->hold_acks, cpu, cpu * 1e6 / ev,
               R->accepted ? cpu * 1e6 / (double)R->accepted / R->o.hold_s : 0);
    print_lat("a parked", &R->parked);
    printf("nothing lost: %ld of %ld sends to parked peers arrived (%ld of %ld just after the "
           "peer's address changed, %ld of %ld after a NAT rebinding the peer did not notice: "
           "those in %.1f s, %d at a time)\n",
           R->lost.ok, R->lost.tried, R->moved_ok, R->moved, R->rebound.ok, R->rebound.tried,
           R->rebound_s, 16);
    if (R->lost.first[0])
        printf("  first failure: %s\n", R->lost.first);
}

/* json_str: |s| inside a JSON string (quotes and backslashes escaped, control characters '?'). */
static void json_str(const char *s)
{
    for (; *s; s++)
        printf(*s == '"' || *s == '\\' ? "\\%c" : (unsigned char)*s < 32 ? "?" : "%c", *s);
}

static void print_json(struct run *R)
{
    struct lat *A = &R->awake, *P = &R->parked;
    printf("{\"parking\": %s, \"clients\": %ld, \"accepted\": %ld, \"failed\": %ld, "
           "\"retried\": %ld, \"connect_s\": %.3f, \"handshake_p50_ms\": %.1f, ",
           R->o.park_after_s ? "true" : "false", R->n, R->accepted, R->failed, R->retried,
           R->connect_s, R->ls.hs_p50_ms);
    printf("\"relay_rss_before_kib\": %ld, \"relay_rss_awake_kib\": %ld, "
           "\"relay_rss_parked_kib\": %ld, \"relay_connections_awake\": %.0f, "
           "\"relay_parked\": %.0f, \"relay_awake\": %.0f, \"relay_connections_parked\": %.0f, "
           "\"parked\": %.0f, ",
           R->rss0, R->rss_awake, R->rss_parked, R->m_awake_conns, R->m_parked, R->m_awake,
           R->m_conns_parked, R->parked_seen);
    printf("\"park_s\": %.1f, \"parked_events\": %ld, \"woken_events\": %ld, "
           "\"lost_events_parking\": %ld, \"lost_events_hold\": %ld, \"relay_parks\": %.0f, "
           "\"relay_park_refused\": %.0f, ",
           R->park_s, R->ev_park[0], R->ev_hold[1], R->ev_park[2], R->ev_hold[2] - R->ev_park[2],
           R->m_parks, R->m_park_refused);
    printf("\"gen_rss_idle_kib\": %ld, \"gen_rss_awake_kib\": %ld, \"gen_rss_parked_kib\": %ld, ",
           R->gen_rss0, R->gen_rss_awake, R->gen_rss_parked);
    printf("\"hold_s\": %ld, \"awake_relay_cpu_s\": %.3f, \"awake_datagrams_in\": %.0f, "
           "\"parked_relay_cpu_s\": %.3f, \"keepalives\": %.0f, \"keepalive_acks\": %.0f, ",
           R->o.hold_s, R->hold_cpu_s[0], R->hold_events[0], R->hold_cpu_s[1], R->hold_events[1],
           R->hold_acks);
    printf("\"awake_connect_p50_ms\": %.3f, \"awake_connect_p95_ms\": %.3f, \"awake_ok\": %ld, "
           "\"awake_tries\": %ld, ",
           pct_ms(A, 0.5), pct_ms(A, 0.95), A->ok, A->tried);
    printf("\"parked_connect_p50_ms\": %.3f, \"parked_connect_p95_ms\": %.3f, \"parked_ok\": %ld, "
           "\"parked_tries\": %ld, \"lost_ok\": %ld, \"lost_tries\": %ld, \"lost_moved_ok\": %ld, "
           "\"lost_moved\": %ld, \"rebound_ok\": %ld, \"rebound_tries\": %ld, \"rebound_s\": %.1f, "
           "\"unparked\": %ld, \"unparked_incoming\": %ld, \"unparked_before\": %ld, "
           "\"unparked_failed\": %ld, \"first_failure\": \"",
           pct_ms(P, 0.5), pct_ms(P, 0.95), P->ok, P->tried, R->lost.ok, R->lost.tried, R->moved_ok,
           R->moved, R->rebound.ok, R->rebound.tried, R->rebound_s, R->unparked,
           R->unparked_incoming, R->unparked_before, R->unparked_failed);
    json_str(R->first_reason);
    printf("\", \"unparked_first_failure\": \"");
    json_str(R->unparked_first);
    printf("\", \"awake_first_failure\": \"");
    json_str(R->awake.first);
    printf("\", \"parked_first_failure\": \"");
    json_str(R->parked.first);
    printf("\", \"lost_first_failure\": \"");
    json_str(R->lost.first);
    printf("\"}\n");
}

/* connect_everyone: this process's clients and the helpers' dial home; totals in R. */
static void connect_everyone(struct run *R)
{
    long theirs[3] = {0, 0, 0};
    int64_t t0 = pos_p2p_now_ms();
    idle_load_connect(R->pool, R->mine, &R->lc, &R->ls);
    idle_team_wait(&R->team, R->pool, 'A', theirs);
    R->accepted = R->ls.accepted + theirs[0];
    R->failed = R->ls.failed + theirs[1];
    R->retried = R->ls.retried + theirs[2];
    R->connect_s = (double)(pos_p2p_now_ms() - t0) / 1000.0;
    snprintf(R->first_reason, sizeof(R->first_reason), "%s", R->ls.first_reason);
}

/* The measured part, once the clients exist: connect, awake, park, hold, tries. */
static void measure(struct run *R)
{
    long at = 0;
    connect_everyone(R);
    idle_load_pump_for(R->pool, 1500); /* let the relay's snapshot of metrics catch up */
    relay_figures(R, &R->rss_awake, &R->m_awake_conns, &R->m_awake, "pos_relay_connections", NULL);
    R->gen_rss_awake = proc_rss_kib(0) + idle_team_rss_kib(&R->team);
    for (long k = 0; k < R->o.tries && R->ls.accepted; k++)
        idle_tries_dial(R, idle_tries_next(R, &at, 0), &R->awake);
    qsort(R->awake.us, (size_t)R->awake.n, sizeof(double), cmp_double);
    if (R->o.hold_s)
        hold(R, 0);
    if (!R->o.park_after_s)
        return;
    park_all(R);
    /* the relay gives the freed connections' heap back once they stayed down 5 s (+ a tick) */
    idle_load_pump_for(R->pool, 6500);
    relay_figures(R, &R->rss_parked, &R->m_parked, &R->m_awake, "pos_relay_parked",
                  "pos_relay_awake");
    R->m_conns_parked = metric_now(R, "pos_relay_connections");
    malloc_trim(0); /* what parking freed here, given back as the relay does (helpers: on 'P') */
    R->gen_rss_parked = proc_rss_kib(0) + idle_team_rss_kib(&R->team);
    if (R->o.hold_s)
        hold(R, 1);
    events(R, R->ev_hold);
    R->m_parks = metric_now(R, "pos_relay_parks_total");
    R->m_park_refused = metric_now(R, "pos_relay_park_refused_total");
    for (long k = 0; k < R->o.tries; k++) {
        long t = idle_tries_next(R, &at, 1);
        if (t >= 0)
            idle_tries_dial(R, t, &R->parked);
    }
    idle_tries_lost(R, &at);
    qsort(R->parked.us, (size_t)R->parked.n, sizeof(double), cmp_double);
}

/*
 * split: how many clients this process takes (the rest go to helper
 * processes, |*share| each), from the descriptors it may open.
 */
static long split(struct run *R, long *share)
{
    struct rlimit rl;
    long room = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur - 128 : 1000;
    if (room < 16)
        room = 16;
    long procs = (R->n + 1 + room - 1) / room;
    *share = (R->n + procs - 1) / procs;
    return R->n - *share * (procs - 1);
}

/* start: helpers (before this process opens anything they would inherit), then our pool. */
static int start(struct run *R)
{
    char err[512];
    long share;
    R->mine = split(R, &share);
    R->lc = (struct idle_load_conf){
        &R->relay,         R->o.token,       R->o.timeout_s, R->o.concurrency,
        R->o.park_after_s, R->o.keepalive_s, 5000,           !R->o.json};
    if (R->mine < R->n) {
        long procs = (R->n - R->mine) / share + 1;
        R->lc.concurrency = R->o.concurrency / procs > 0 ? R->o.concurrency / procs : 1;
        R->lc.park_rate = 5000 / procs;
        if (!R->o.json)
            fprintf(stderr, "%ld clients over %ld processes (%ld file descriptors each at most)\n",
                    R->n, procs, share + 128);
        if (idle_team_start(&R->team, R->mine, R->n, share, R->o.per_addr, &R->lc, err,
                            sizeof(err)) != 0) {
            fprintf(stderr, CMD ": %s\n", err);
            return -1;
        }
    }
    if (!(R->pool = idle_pool_new(R->mine + 1, 0, R->n, R->o.per_addr, err, sizeof(err))) ||
        idle_pool_rebind(R->pool, R->mine) != 0) { /* the dialer: an address of its own */
        fprintf(stderr, CMD ": %s\n", R->pool ? "cannot bind the dialer's socket" : err);
        return -1;
    }
    return 0;
}

int cmd_idle(int argc, char **argv)
{
    struct run R;
    int rv = 1;
    memset(&R, 0, sizeof(R));
    int p = parse(argc, argv, &R.o);
    if (p)
        return p == 1 ? 0 : 2;
    if (loadtest_pick_relay(CMD, R.o.api_url, R.o.relay_id, R.o.addr, R.o.peer_id, &R.relay) != 0)
        return 1;
    raise_nofile(R.o.clients + 256);
    R.n = R.o.clients;
    R.rss_parked = R.rss0 = -1;
    R.m_parked = R.m_awake = R.m_awake_conns = R.m_conns_parked = R.m_parks = R.m_park_refused = -1;
    R.hold_cpu_s[0] = R.hold_cpu_s[1] = R.hold_events[0] = R.hold_events[1] = -1;
    if (lat_alloc(&R.awake, R.o.tries) || lat_alloc(&R.parked, R.o.tries) ||
        lat_alloc(&R.lost, R.o.lost_tries) || lat_alloc(&R.rebound, R.o.lost_tries)) {
        fprintf(stderr, CMD ": out of memory\n");
        goto out;
    }
    R.rss0 = R.o.relay_pid ? proc_rss_kib((pid_t)R.o.relay_pid) : -1;
    if (R.o.relay_pid && R.rss0 < 0) {
        fprintf(stderr, CMD ": --relay-pid %ld: no such process to read\n", R.o.relay_pid);
        goto out;
    }
    long gen0 = proc_rss_kib(0);
    if (start(&R) != 0)
        goto out;
    R.gen_rss0 = proc_rss_kib(0) + idle_team_rss_kib(&R.team) - gen0 * (1 + R.team.n);
    measure(&R);
    R.gen_rss_awake -= gen0 * (1 + R.team.n);
    R.gen_rss_parked = R.gen_rss_parked > 0 ? R.gen_rss_parked - gen0 * (1 + R.team.n) : -1;
    if (R.o.json)
        print_json(&R);
    else
        print_text(&R);
    /* "nothing lost" includes the tries after an unnoticed NAT rebinding (issue 14) */
    rv = R.accepted == R.n && R.awake.ok == R.awake.tried && R.parked.ok == R.parked.tried &&
                 R.lost.ok == R.lost.tried
             ? 0
             : 1;
out:
    idle_team_end(&R.team);
    idle_pool_del(R.pool);
    free(R.awake.us);
    free(R.parked.us);
    free(R.lost.us);
    free(R.rebound.us);
    return rv;
}
