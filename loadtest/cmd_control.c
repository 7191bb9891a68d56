/*
 * `pos-loadtest control`: open N authenticated control connections to one
 * relay (real QUIC + TLS + HELLO/WELCOME through libpos-p2p), at most C
 * handshakes in flight, spread over K endpoints (UDP sockets); report
 * connections per second and handshake times; then optionally hold every
 * connection idle for S seconds (keep-alives only) so that a script can
 * measure the relay's memory per idle client. --report DIR also writes the
 * per-second series (by the second each handshake started or ended) and an
 * HTML page of charts (report.c).
 */
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loadtest.h"
#include "pos/p2p.h"
#include "report.h"

#define MAX_ENDPOINTS 64

struct opts {
    const char *api_url, *addr, *peer_id, *token, *relay_id, *report_dir;
    long conns, concurrency, endpoints;
    double hold_s, timeout_s;
    int json;
    int resume; /* --resume: returning connections resume TLS with the relay's ticket */
};

/* --report: when an accepted handshake ended, and how long it took */
struct done {
    int64_t at_ms;
    double took_ms;
};

struct run {
    struct opts o;
    pos_p2p_endpoint *ep[MAX_ENDPOINTS];
    pos_p2p_relay **r;
    int64_t *started_ms;
    double *hs_ms;
    long *inflight;
    long n_inflight, started, accepted, refused, failed;
    char first_reason[257];
    /* --report: per second of the run */
    int64_t t0_ms;
    struct done *done; /* one per accepted handshake (hs_ms gets sorted by report()) */
    struct report_counts att_s, acc_s, ref_s, fail_s;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-loadtest control (--api-url URL [--relay-id UUID] | --addr IP:PORT\n"
                 "                            --peer-id ID) --token TOKEN [--conns N]\n"
                 "                            [--concurrency C] [--endpoints K] [--hold SECONDS]\n"
                 "                            [--timeout SECONDS] [--json] [--report DIR]\n"
                 "                            [--resume]\n\n"
                 "Opens N authenticated control connections to one relay (default 1000), at most\n"
                 "C handshakes at once (default 200), spread over K UDP sockets (default 4), and\n"
                 "reports connections per second and handshake times. --hold keeps them open and\n"
                 "idle afterwards (prints \"holding N connections\" on stderr when they are).\n"
                 "The relay's per-address and per-token rate limits apply: raise them for a\n"
                 "benchmark (conn_rate_per_addr / conn_rate_per_token = 0 in its config).\n"
                 "--report DIR writes DIR/series.csv (per second: attempted, accepted,\n"
                 "refused, failed, handshake p50/p99), DIR/handshakes.csv and DIR/report.html\n"
                 "(charts, self-contained: opens offline); DIR is created if missing.\n"
                 "Every connection makes a full TLS handshake; with --resume each endpoint\n"
                 "first makes one connection (not counted) for the relay's session ticket,\n"
                 "and every counted connection resumes TLS 1.3 with it.\n");
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

/* Over 80 lines: one case per option, each with its own range check and message. */
static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"api-url", required_argument, NULL, 'a'},
        {"relay-id", required_argument, NULL, 'R'},
        {"addr", required_argument, NULL, 'A'},
        {"peer-id", required_argument, NULL, 'p'},
        {"token", required_argument, NULL, 't'},
        {"conns", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"endpoints", required_argument, NULL, 'e'},
        {"hold", required_argument, NULL, 'H'},
        {"timeout", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},
        {"resume", no_argument, NULL, 'r'},
        {"report", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    long v;
    memset(o, 0, sizeof(*o));
    o->conns = 1000;
    o->concurrency = 200;
    o->endpoints = 4;
    o->timeout_s = 10;
    o->token = getenv("POS_TOKEN");
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
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
        case 'n':
        case 'c':
        case 'e':
            if (parse_long(optarg, 1, ch == 'e' ? MAX_ENDPOINTS : 1000000, &v) != 0) {
                fprintf(stderr, "pos-loadtest control: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'n')
                o->conns = v;
            else if (ch == 'c')
                o->concurrency = v;
            else
                o->endpoints = v;
            break;
        case 'H':
        case 'T':
            if (parse_long(optarg, ch == 'H' ? 0 : 1, 86400, &v) != 0) {
                fprintf(stderr, "pos-loadtest control: bad number of seconds \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'H')
                o->hold_s = (double)v;
            else
                o->timeout_s = (double)v;
            break;
        case 'r':
            o->resume = 1;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'o':
            o->report_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "%s: unknown option or missing value: %s\n\n", "pos-loadtest control",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!o->token || (!o->api_url && !(o->addr && o->peer_id))) {
        fprintf(stderr, "pos-loadtest control: --token and either --api-url or --addr with "
                        "--peer-id are required\n");
        return 2;
    }
    return 0;
}

int loadtest_pick_relay(const char *cmd, const char *api_url, const char *relay_id,
                        const char *addr, const char *peer_id, pos_p2p_relay_info *out)
{
    char err[512];
    pos_p2p_relay_list *list = NULL;
    memset(out, 0, sizeof(*out));
    if (!api_url) {
        snprintf(out->id, sizeof(out->id), "00000000-0000-4000-8000-000000000000");
        snprintf(out->peer_id, sizeof(out->peer_id), "%s", peer_id);
        snprintf(out->addrs[0], sizeof(out->addrs[0]), "%s", addr);
        out->n_addrs = 1;
        return 0;
    }
    if (pos_p2p_relay_list_fetch(api_url, 5000, &list, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", cmd, err);
        return -1;
    }
    for (size_t i = 0; i < pos_p2p_relay_list_count(list); i++) {
        const pos_p2p_relay_info *r = pos_p2p_relay_list_get(list, i);
        if (!relay_id || !strcmp(r->id, relay_id)) {
            *out = *r;
            pos_p2p_relay_list_del(list);
            return 0;
        }
    }
    pos_p2p_relay_list_del(list);
    fprintf(stderr, "%s: no such relay in the list\n", cmd);
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* poll_all waits for any endpoint, at most until the earliest deadline or |max_ms|. */
static void poll_all(struct run *R, int max_ms)
{
    struct pollfd pf[MAX_ENDPOINTS];
    int64_t now = pos_p2p_now_ms(), wait = max_ms;
    for (long i = 0; i < R->o.endpoints; i++) {
        int64_t d = pos_p2p_endpoint_deadline(R->ep[i]);
        if (d >= 0 && d - now < wait)
            wait = d - now < 0 ? 0 : d - now;
        pf[i].fd = pos_p2p_endpoint_fd(R->ep[i]);
        pf[i].events = POLLIN;
    }
    poll(pf, (nfds_t)R->o.endpoints, (int)wait);
    for (long i = 0; i < R->o.endpoints; i++)
        pos_p2p_endpoint_process(R->ep[i]);
}

/* second_of: the second of the run that the time |ms| falls in. */
static size_t second_of(const struct run *R, int64_t ms)
{
    return ms > R->t0_ms ? (size_t)((ms - R->t0_ms) / 1000) : 0;
}

/* count: one event at |ms| in the per-second series of --report (no-op without it). */
static void count(struct run *R, struct report_counts *c, int64_t ms)
{
    if (R->o.report_dir)
        report_counts_add(c, second_of(R, ms), 1);
}

/* settle moves finished handshakes out of the in-flight set. */
static void settle(struct run *R)
{
    pos_p2p_relay_status st;
    for (long k = 0; k < R->n_inflight;) {
        long i = R->inflight[k];
        pos_p2p_relay_get_status(R->r[i], &st);
        if (st.state == POS_P2P_RELAY_CONNECTING) {
            k++;
            continue;
        }
        if (st.state == POS_P2P_RELAY_ACCEPTED) {
            R->done[R->accepted] =
                (struct done){st.accepted_at_ms, (double)(st.accepted_at_ms - R->started_ms[i])};
            R->hs_ms[R->accepted++] = (double)(st.accepted_at_ms - R->started_ms[i]);
            count(R, &R->acc_s, st.accepted_at_ms);
        } else {
            if (st.error == POS_P2P_ERR_REFUSED) {
                R->refused++;
                count(R, &R->ref_s, st.failed_at_ms);
            } else {
                R->failed++;
                count(R, &R->fail_s, st.failed_at_ms);
            }
            if (!R->first_reason[0])
                snprintf(R->first_reason, sizeof(R->first_reason), "%s",
                         st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
            pos_p2p_relay_close(R->r[i]);
            R->r[i] = NULL;
        }
        R->inflight[k] = R->inflight[--R->n_inflight];
    }
}

static void report(struct run *R, double elapsed)
{
    double p50 = 0, p99 = 0, rate = elapsed > 0 ? (double)R->accepted / elapsed : 0;
    if (R->accepted) {
        qsort(R->hs_ms, (size_t)R->accepted, sizeof(double), cmp_double);
        p50 = R->hs_ms[(R->accepted - 1) / 2];
        p99 = R->hs_ms[(long)((double)(R->accepted - 1) * 0.99)];
    }
    if (R->o.json) {
        printf("{\"attempted\": %ld, \"accepted\": %ld, \"refused\": %ld, \"failed\": %ld, "
               "\"duration_s\": %.3f, \"conns_per_s\": %.1f, \"handshake_p50_ms\": %.1f, "
               "\"handshake_p99_ms\": %.1f}\n",
               R->started, R->accepted, R->refused, R->failed, elapsed, rate, p50, p99);
    } else {
        printf("attempted %ld, accepted %ld, refused %ld, failed %ld in %.2f s\n", R->started,
               R->accepted, R->refused, R->failed, elapsed);
        printf("authenticated connections per second: %.0f\n", rate);
        printf("handshake + HELLO/WELCOME: p50 %.1f ms, p99 %.1f ms\n", p50, p99);
        if (R->first_reason[0])
            printf("first refusal/failure: %s\n", R->first_reason);
    }
    fflush(stdout);
}

/*
 * warm_tickets: with --resume, one connection per endpoint first, one at a
 * time and not counted, so that each endpoint holds the relay's ticket and
 * every measured connection is a returning one (without it the first wave,
 * one per handshake in flight, would start before any ticket came back).
 */
static int warm_tickets(struct run *R, const pos_p2p_relay_info *relay)
{
    for (long i = 0; i < R->o.endpoints; i++) {
        pos_p2p_relay *r = NULL;
        pos_p2p_relay_status st;
        int rv =
            pos_p2p_relay_connect(R->ep[i], relay, R->o.token, (int)(R->o.timeout_s * 1000), &r);
        if (rv != 0) {
            fprintf(stderr, "pos-loadtest control: %s\n", pos_p2p_strerror(rv));
            return -1;
        }
        do {
            poll_all(R, 50);
            pos_p2p_relay_get_status(r, &st);
        } while (st.state == POS_P2P_RELAY_CONNECTING);
        pos_p2p_relay_close(r);
        if (st.state != POS_P2P_RELAY_ACCEPTED) {
            fprintf(stderr,
                    "pos-loadtest control: the connection that fetches a ticket failed: %s\n",
                    st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
            return -1;
        }
    }
    return 0;
}

static int run_load(struct run *R, const pos_p2p_relay_info *relay, double *elapsed)
{
    int64_t t0 = R->t0_ms = pos_p2p_now_ms();
    int tick = isatty(2);
    int64_t last_tick = t0;

    while (R->started < R->o.conns || R->n_inflight > 0) {
        while (R->started < R->o.conns && R->n_inflight < R->o.concurrency) {
            long i = R->started++;
            R->started_ms[i] = pos_p2p_now_ms();
            count(R, &R->att_s, R->started_ms[i]);
            int rv = pos_p2p_relay_connect(R->ep[i % R->o.endpoints], relay, R->o.token,
                                           (int)(R->o.timeout_s * 1000), &R->r[i]);
            if (rv != 0) {
                fprintf(stderr, "pos-loadtest control: %s\n", pos_p2p_strerror(rv));
                return -1;
            }
            R->inflight[R->n_inflight++] = i;
        }
        poll_all(R, 50);
        settle(R);
        if (tick && pos_p2p_now_ms() - last_tick > 500) {
            last_tick = pos_p2p_now_ms();
            fprintf(stderr, "\r%ld/%ld accepted, %ld in flight   ", R->accepted, R->o.conns,
                    R->n_inflight);
        }
    }
    if (tick)
        fprintf(stderr, "\n");
    *elapsed = (double)(pos_p2p_now_ms() - t0) / 1000.0;
    report(R, *elapsed);
    return 0;
}

static void hold(struct run *R)
{
    int64_t end = pos_p2p_now_ms() + (int64_t)(R->o.hold_s * 1000);
    long lost = 0;
    pos_p2p_relay_status st;
    fprintf(stderr, "holding %ld connections for %.0f s\n", R->accepted, R->o.hold_s);
    while (pos_p2p_now_ms() < end)
        poll_all(R, 200);
    for (long i = 0; i < R->o.conns; i++) {
        if (!R->r[i])
            continue;
        pos_p2p_relay_get_status(R->r[i], &st);
        if (st.state != POS_P2P_RELAY_ACCEPTED)
            lost++;
    }
    printf("after holding %.0f s: %ld of %ld connections still open\n", R->o.hold_s,
           R->accepted - lost, R->accepted);
}

static int cmp_done(const void *a, const void *b)
{
    int64_t x = ((const struct done *)a)->at_ms, y = ((const struct done *)b)->at_ms;
    return x < y ? -1 : x > y;
}

/* percentile of |k| sorted values, the way report() takes them */
static double sorted_percentile(const double *v, long k, double p)
{
    return k ? v[(long)((double)(k - 1) * p)] : NAN;
}

/* The report's columns, in this order (write_report). */
enum { ATT, ACC, REF, FAIL, P50, P99, NCOLS };

/*
 * fill_columns writes |n| seconds of each column into |v| (column c at
 * v + c * n); |sec| is scratch room for R->accepted values.
 */
static void fill_columns(struct run *R, double *v, size_t n, double *sec)
{
    /* the accepted handshakes in the order they ended, swept once second by second */
    qsort(R->done, (size_t)R->accepted, sizeof(*R->done), cmp_done);
    for (size_t s = 0, i = 0; s < n; s++) {
        long k = 0;
        v[ATT * n + s] = (double)report_counts_get(&R->att_s, s);
        v[ACC * n + s] = (double)report_counts_get(&R->acc_s, s);
        v[REF * n + s] = (double)report_counts_get(&R->ref_s, s);
        v[FAIL * n + s] = (double)report_counts_get(&R->fail_s, s);
        for (; i < (size_t)R->accepted && (second_of(R, R->done[i].at_ms) <= s || s == n - 1); i++)
            sec[k++] = R->done[i].took_ms;
        qsort(sec, (size_t)k, sizeof(double), cmp_double);
        v[P50 * n + s] = sorted_percentile(sec, k, 0.5);
        v[P99 * n + s] = sorted_percentile(sec, k, 0.99);
    }
}

/* write_report: --report DIR, after the summary was printed. Returns 0 or -1 (said why). */
static int write_report(struct run *R, const pos_p2p_relay_info *relay, double elapsed)
{
    static const char *const names[NCOLS] = {"attempted", "accepted",         "refused",
                                             "failed",    "handshake_p50_ms", "handshake_p99_ms"};
    const struct report_chart charts[] = {
        {REPORT_CHART_LINES, "Connections per second", "connections / s", {ATT, ACC}, 2},
        {REPORT_CHART_LINES, "Refused and failed per second", "connections", {REF, FAIL}, 2},
        {REPORT_CHART_LINES,
         "Handshake time percentiles (by second completed)",
         "milliseconds",
         {P50, P99},
         2},
        {REPORT_CHART_HISTOGRAM,
         "Handshake time (QUIC + TLS + HELLO/WELCOME)",
         "milliseconds",
         {0},
         0},
    };
    struct report_column cols[NCOLS];
    struct report_kv kv[10];
    size_t n = (size_t)ceil(elapsed), nkv = 0;
    char err[512];
    if (n < R->att_s.n)
        n = R->att_s.n;
    if (n < R->acc_s.n)
        n = R->acc_s.n;
    if (n < R->ref_s.n)
        n = R->ref_s.n;
    if (n < R->fail_s.n)
        n = R->fail_s.n;
    if (n == 0)
        n = 1;
    double *v = calloc(NCOLS * n, sizeof(double)),
           *sec = calloc((size_t)R->accepted + 1, sizeof(double));
    if (!v || !sec) {
        free(v);
        free(sec);
        fprintf(stderr, "pos-loadtest control: out of memory for the report\n");
        return -1;
    }
    for (int c = 0; c < NCOLS; c++)
        cols[c] = (struct report_column){names[c], v + (size_t)c * n};
    fill_columns(R, v, n, sec);
    free(sec);
#define KV(k, ...)                                                                                 \
    snprintf(kv[nkv].key, sizeof(kv[nkv].key), "%s", k),                                           \
        snprintf(kv[nkv].value, sizeof(kv[nkv].value), __VA_ARGS__), nkv++
    KV("relay", "%s (%s)", relay->id, relay->n_addrs ? relay->addrs[0] : "");
    KV("connections", "%ld, at most %ld handshakes at once, over %ld UDP sockets", R->o.conns,
       R->o.concurrency, R->o.endpoints);
    KV("duration", "%.3f s", elapsed);
    KV("attempted", "%ld", R->started);
    KV("accepted", "%ld (%.0f per second)", R->accepted,
       elapsed > 0 ? (double)R->accepted / elapsed : 0.0);
    KV("refused", "%ld", R->refused);
    KV("failed", "%ld", R->failed);
    if (R->first_reason[0])
        KV("first refusal or failure", "%s", R->first_reason);
#undef KV
    struct report r = {"pos-loadtest control",
                       kv,
                       nkv,
                       n,
                       cols,
                       NCOLS,
                       R->hs_ms,
                       (size_t)R->accepted,
                       charts,
                       sizeof(charts) / sizeof(charts[0])};
    int rc = report_write(R->o.report_dir, &r, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "pos-loadtest control: %s\n", err);
    free(v);
    return rc;
}

int cmd_control(int argc, char **argv)
{
    struct run R;
    pos_p2p_relay_info relay;
    pos_p2p_identity *id = NULL;
    char dir[] = "/tmp/pos-loadtest-XXXXXX", path[64], err[512];
    int rv = 1;

    memset(&R, 0, sizeof(R));
    int p = parse(argc, argv, &R.o);
    if (p)
        return p == 1 ? 0 : 2;
    if (R.o.report_dir) {
        if (report_prepare_dir(R.o.report_dir, err, sizeof(err)) != 0) {
            fprintf(stderr, "pos-loadtest control: %s\n", err);
            return 1;
        }
    }
    if (loadtest_pick_relay("pos-loadtest control", R.o.api_url, R.o.relay_id, R.o.addr,
                            R.o.peer_id, &relay) != 0)
        return 1;
    /* One throwaway identity for all connections, in a private directory. */
    if (!mkdtemp(dir)) {
        perror("pos-loadtest control: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/identity", dir);
    if (pos_p2p_identity_load(path, 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-loadtest control: %s\n", err);
        rmdir(dir);
        return 1;
    }
    unlink(path);
    rmdir(dir);
    R.r = calloc((size_t)R.o.conns, sizeof(*R.r));
    R.started_ms = calloc((size_t)R.o.conns, sizeof(*R.started_ms));
    R.hs_ms = calloc((size_t)R.o.conns, sizeof(*R.hs_ms));
    R.inflight = calloc((size_t)R.o.concurrency, sizeof(*R.inflight));
    R.done = calloc((size_t)R.o.conns, sizeof(*R.done));
    if (!R.r || !R.started_ms || !R.hs_ms || !R.inflight || !R.done) {
        fprintf(stderr, "pos-loadtest control: out of memory\n");
        goto out;
    }
    for (long i = 0; i < R.o.endpoints; i++) {
        if (pos_p2p_endpoint_new(&R.ep[i], id, 0) != 0) {
            fprintf(stderr, "pos-loadtest control: cannot open UDP sockets\n");
            goto out;
        }
        pos_p2p_endpoint_set_resumption(R.ep[i], R.o.resume);
    }
    double elapsed = 0;
    if (R.o.resume && warm_tickets(&R, &relay) != 0)
        goto out;
    if (run_load(&R, &relay, &elapsed) != 0)
        goto out;
    if (R.o.report_dir && write_report(&R, &relay, elapsed) != 0)
        goto out;
    if (R.o.hold_s > 0 && R.accepted > 0)
        hold(&R);
    rv = R.accepted == R.o.conns ? 0 : 1;
out:
    for (long i = 0; R.r && i < R.o.conns; i++)
        pos_p2p_relay_close(R.r[i]);
    for (long i = 0; i < R.o.endpoints; i++)
        pos_p2p_endpoint_del(R.ep[i]);
    free(R.r);
    free(R.started_ms);
    free(R.hs_ms);
    free(R.inflight);
    free(R.done);
    report_counts_free(&R.att_s);
    report_counts_free(&R.acc_s);
    report_counts_free(&R.ref_s);
    report_counts_free(&R.fail_s);
    pos_p2p_identity_del(id);
    return rv;
}
