/*
 * `pos-loadtest relay`: data-plane load through one relay. Opens N circuits
 * (2N clients, each with its own identity and endpoint, i.e. its own UDP
 * socket, as real devices would be) through the relay's control protocol,
 * then pushes datagrams from the first client of each pair to the second
 * for the given time: each carries the circuit's index, a sequence number
 * and its send time, so the receiver measures one-way latency (one clock:
 * everything runs in this process) and the report counts what was lost.
 * Reports sent, delivered, lost, latency p50/p99/p999 and the handshake
 * and circuit set-up times; --json prints one object; --report DIR also
 * writes the per-second series (by the second each datagram was sent) and an
 * HTML page of charts (report.c).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "loadtest.h"
#include "pos/p2p.h"
#include "report.h"

#define MAX_CIRCUITS 512
#define HDR 20                    /* u32 circuit index, u64 sequence, u64 send time (us) */
#define LAT_BUCKETS (1000 * 1000) /* 1 us each, up to 1 s; later ones go to the last */

struct side;

struct run {
    const char *api_url, *relay_id, *token, *report_dir;
    long circuits, size, rate;
    double duration_s;
    int json, progress;
    pos_p2p_relay_info relay;
    struct side *sides; /* 2 per circuit: [2i] sends, [2i+1] receives */
    int epfd;
    uint64_t sent, delivered, bad;
    uint32_t *lat; /* histogram, LAT_BUCKETS */
    double *hs_ms, *setup_ms;
    long n_hs, n_setup;
    /* --report: per second of the run, by the second a datagram was sent */
    int64_t t0_us;
    size_t n_seconds;
    struct report_counts sent_s, delivered_s;
    struct report_latency lat_s;
};

struct side {
    struct run *run;
    long idx; /* circuit index */
    int receiver;
    pos_p2p_identity *id;
    pos_p2p_endpoint *ep;
    pos_p2p_relay *r;
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    uint32_t circuit;
    int have_circuit, closed, accepted;
    int64_t requested_ms;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: pos-loadtest relay --api-url URL --token TOKEN --circuits N --size BYTES\n"
            "                          --duration SECONDS [--rate PPS] [--relay-id UUID] [--json]\n"
            "                          [--report DIR]\n\n"
            "Opens N circuits (2N clients, each its own identity and UDP socket) through one\n"
            "relay of the list at URL (--relay-id, or the first) and sends datagrams of BYTES\n"
            "(%d..1500) on each for SECONDS, at PPS datagrams per second in all (default 0:\n"
            "as fast as the sockets take them). Reports sent, delivered, lost, one-way latency\n"
            "p50/p99/p999, handshake and circuit set-up times. --json prints one object\n"
            "(sent, delivered, lost, p50_us, p99_us, p999_us, duration_s, ...). The relay's\n"
            "connection rate limits apply to the 2N handshakes (conn_rate_per_addr,\n"
            "conn_rate_per_token), and a token's bandwidth limit to the datagrams.\n"
            "--report DIR writes DIR/series.csv (per second: sent, delivered, lost,\n"
            "throughput, latency percentiles), DIR/handshakes.csv and DIR/report.html\n"
            "(charts, self-contained: opens offline); DIR is created if missing.\n",
            HDR);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void put(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void on_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct side *s = arg;
    if (ev->type == POS_P2P_RELAY_EV_INCOMING) {
        pos_p2p_relay_answer(r, ev->req_id, 1);
    } else if (ev->type == POS_P2P_RELAY_EV_CIRCUIT) {
        s->circuit = ev->circuit_id;
        s->have_circuit = 1;
        if (!s->receiver && s->run->n_setup < s->run->circuits)
            s->run->setup_ms[s->run->n_setup++] = (double)(pos_p2p_now_ms() - s->requested_ms);
    } else if (ev->type == POS_P2P_RELAY_EV_ERROR) {
        fprintf(stderr, "pos-loadtest relay: circuit %ld: %s\n", s->idx, ev->text);
        s->closed = 1;
    } else if (ev->type == POS_P2P_RELAY_EV_CIRCUIT_CLOSED ||
               ev->type == POS_P2P_RELAY_EV_REDIRECT) {
        s->closed = 1;
    }
}

/* second_of: the second of the run (0 .. n_seconds - 1) that the time |us| falls in. */
static size_t second_of(const struct run *run, int64_t us)
{
    size_t sec = us > run->t0_us ? (size_t)((us - run->t0_us) / 1000000) : 0;
    return sec < run->n_seconds ? sec : run->n_seconds - 1;
}

static void on_data(void *arg, pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data,
                    size_t len)
{
    struct side *s = arg;
    struct run *run = s->run;
    (void)r;
    (void)circuit_id;
    if (len < HDR || (long)get(data, 4) != s->idx) {
        run->bad++;
        return;
    }
    int64_t sent_at = (int64_t)get(data + 12, 8), lat = now_us() - sent_at;
    if (lat < 0)
        lat = 0;
    run->lat[lat < LAT_BUCKETS ? lat : LAT_BUCKETS - 1]++;
    run->delivered++;
    if (run->report_dir) {
        size_t sec = second_of(run, sent_at);
        report_counts_add(&run->delivered_s, sec, 1);
        report_latency_add(&run->lat_s, sec, (uint64_t)lat);
    }
}

/* pump processes every endpoint once, after waiting at most |ms| for one to be ready. */
static void pump(struct run *run, int ms)
{
    struct epoll_event evs[64];
    epoll_wait(run->epfd, evs, 64, ms);
    for (long i = 0; i < 2 * run->circuits; i++)
        pos_p2p_endpoint_process(run->sides[i].ep);
}

static double percentile_ms(double *v, long n, double p)
{
    if (n == 0)
        return 0;
    /* small arrays: insertion sort is fine */
    for (long i = 1; i < n; i++)
        for (long j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    long k = (long)(p * (double)(n - 1) + 0.5);
    return v[k];
}

static long lat_percentile(const struct run *run, double p)
{
    uint64_t want = (uint64_t)(p * (double)run->delivered), acc = 0;
    if (run->delivered == 0)
        return 0;
    if (want == 0)
        want = 1;
    for (long i = 0; i < LAT_BUCKETS; i++) {
        acc += run->lat[i];
        if (acc >= want)
            return i;
    }
    return LAT_BUCKETS - 1;
}

/* Over 80 lines: one case per option, each with its own range check and message. */
static int parse(int argc, char **argv, struct run *run)
{
    static const struct option lo[] = {{"api-url", required_argument, NULL, 'a'},
                                       {"relay-id", required_argument, NULL, 'R'},
                                       {"token", required_argument, NULL, 't'},
                                       {"circuits", required_argument, NULL, 'n'},
                                       {"size", required_argument, NULL, 's'},
                                       {"duration", required_argument, NULL, 'd'},
                                       {"rate", required_argument, NULL, 'r'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"report", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int ch;
    char *end;
    optind = 1;
    opterr = 0;
    run->circuits = -1;
    run->size = -1;
    run->duration_s = -1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'a':
            run->api_url = optarg;
            break;
        case 'R':
            run->relay_id = optarg;
            break;
        case 't':
            run->token = optarg;
            break;
        case 'n':
            run->circuits = strtol(optarg, &end, 10);
            if (*end || run->circuits < 1 || run->circuits > MAX_CIRCUITS) {
                fprintf(stderr, "pos-loadtest relay: --circuits wants 1..%d\n", MAX_CIRCUITS);
                return -1;
            }
            break;
        case 's':
            run->size = strtol(optarg, &end, 10);
            if (*end || run->size < HDR || run->size > 1500) {
                fprintf(stderr, "pos-loadtest relay: --size wants %d..1500 bytes\n", HDR);
                return -1;
            }
            break;
        case 'd':
            run->duration_s = strtod(optarg, &end);
            if (*end || run->duration_s <= 0 || run->duration_s > 3600) {
                fprintf(stderr, "pos-loadtest relay: --duration wants 0..3600 seconds\n");
                return -1;
            }
            break;
        case 'r':
            run->rate = strtol(optarg, &end, 10);
            if (*end || run->rate < 0) {
                fprintf(stderr, "pos-loadtest relay: --rate wants a number >= 0\n");
                return -1;
            }
            break;
        case 'j':
            run->json = 1;
            break;
        case 'o':
            run->report_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "pos-loadtest relay: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (!run->api_url || !run->token || run->circuits < 0 || run->size < 0 || run->duration_s < 0) {
        fprintf(stderr, "pos-loadtest relay: --api-url, --token, --circuits, --size and "
                        "--duration are required\n\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

static int pick_relay(struct run *run)
{
    pos_p2p_relay_list *l;
    char err[256];
    int found = 0;
    if (pos_p2p_relay_list_fetch(run->api_url, 5000, &l, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-loadtest relay: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < pos_p2p_relay_list_count(l) && !found; i++) {
        const pos_p2p_relay_info *r = pos_p2p_relay_list_get(l, i);
        if (!run->relay_id || !strcmp(r->id, run->relay_id)) {
            run->relay = *r;
            found = 1;
        }
    }
    pos_p2p_relay_list_del(l);
    if (!found)
        fprintf(stderr, "pos-loadtest relay: %s\n",
                run->relay_id ? "no relay with that id in the list" : "the relay list is empty");
    return found ? 0 : -1;
}

/* setup: identities, endpoints, control connections; returns 0 when all are accepted. */
static int setup(struct run *run, const char *dir)
{
    char path[512], err[256];
    long n = 2 * run->circuits;
    int64_t t0 = pos_p2p_now_ms(), deadline = t0 + 30000;
    for (long i = 0; i < n; i++) {
        struct side *s = &run->sides[i];
        struct epoll_event ev = {.events = EPOLLIN};
        s->run = run;
        s->idx = i / 2;
        s->receiver = (int)(i & 1);
        snprintf(path, sizeof(path), "%s/id%ld", dir, i);
        if (pos_p2p_identity_load(path, 1, &s->id, NULL, err, sizeof(err)) != 0 ||
            pos_p2p_endpoint_new(&s->ep, s->id, 0) != 0 ||
            pos_p2p_relay_connect(s->ep, &run->relay, run->token, 20000, &s->r) != 0) {
            fprintf(stderr, "pos-loadtest relay: cannot set up client %ld\n", i);
            return -1;
        }
        pos_p2p_identity_peer_id(s->id, s->peer_id);
        pos_p2p_relay_set_callbacks(s->r, on_event, on_data, s);
        ev.data.ptr = s;
        epoll_ctl(run->epfd, EPOLL_CTL_ADD, pos_p2p_endpoint_fd(s->ep), &ev);
    }
    for (;;) {
        long accepted = 0, failed = 0;
        for (long i = 0; i < n; i++) {
            pos_p2p_relay_status st;
            struct side *s = &run->sides[i];
            pos_p2p_relay_get_status(s->r, &st);
            if (st.state == POS_P2P_RELAY_ACCEPTED) {
                if (!s->accepted) {
                    s->accepted = 1;
                    run->hs_ms[run->n_hs++] = (double)(st.accepted_at_ms - t0);
                }
                accepted++;
            } else if (st.state == POS_P2P_RELAY_FAILED) {
                fprintf(stderr, "pos-loadtest relay: client %ld: %s\n", i, st.reason);
                failed++;
            }
        }
        if (failed)
            return -1;
        if (accepted == n)
            return 0;
        if (pos_p2p_now_ms() > deadline) {
            fprintf(stderr, "pos-loadtest relay: only %ld of %ld clients accepted in 30 s\n",
                    accepted, n);
            return -1;
        }
        pump(run, 10);
    }
}

static int open_circuits(struct run *run)
{
    int64_t deadline = pos_p2p_now_ms() + 30000;
    for (long c = 0; c < run->circuits; c++) {
        struct side *a = &run->sides[2 * c];
        uint32_t req;
        a->requested_ms = pos_p2p_now_ms();
        if (pos_p2p_relay_request_peer(a->r, run->sides[2 * c + 1].peer_id, &req) != 0) {
            fprintf(stderr, "pos-loadtest relay: cannot request circuit %ld\n", c);
            return -1;
        }
    }
    for (;;) {
        long ready = 0;
        for (long c = 0; c < run->circuits; c++) {
            if (run->sides[2 * c].closed)
                return -1;
            ready += run->sides[2 * c].have_circuit && run->sides[2 * c + 1].have_circuit;
        }
        if (ready == run->circuits)
            return 0;
        if (pos_p2p_now_ms() > deadline) {
            fprintf(stderr, "pos-loadtest relay: only %ld of %ld circuits in 30 s\n", ready,
                    run->circuits);
            return -1;
        }
        pump(run, 10);
    }
}

static void blast(struct run *run)
{
    uint8_t buf[1500];
    int64_t t0 = run->t0_us = now_us(), end = t0 + (int64_t)(run->duration_s * 1e6),
            next_progress = t0;
    long c = 0;
    memset(buf, 0xa5, sizeof(buf));
    for (;;) {
        int64_t now = now_us();
        if (now >= end)
            break;
        uint64_t due = run->rate > 0 ? (uint64_t)((double)(now - t0) * (double)run->rate / 1e6)
                                     : run->sent + 16 * (uint64_t)run->circuits;
        for (int k = 0; run->sent < due && k < 4096; k++) {
            struct side *a = &run->sides[2 * c];
            c = (c + 1) % run->circuits;
            if (a->closed)
                continue;
            put(buf, (uint64_t)a->idx, 4);
            put(buf + 4, run->sent, 8);
            int64_t stamp = now_us();
            put(buf + 12, (uint64_t)stamp, 8);
            if (pos_p2p_relay_send_data(a->r, a->circuit, buf, (size_t)run->size) != 0)
                break; /* socket full: let the receivers drain */
            run->sent++;
            if (run->report_dir)
                report_counts_add(&run->sent_s, second_of(run, stamp), 1);
        }
        pump(run, 0);
        if (run->rate > 0 && run->sent >= due)
            pump(run, 1);
        if (run->progress && now >= next_progress) {
            next_progress = now + 1000000;
            fprintf(stderr, "\r%4.0f s  sent %llu  delivered %llu   ", (double)(now - t0) / 1e6,
                    (unsigned long long)run->sent, (unsigned long long)run->delivered);
        }
    }
    /* drain what is still on its way */
    for (int64_t stop = now_us() + 500000; now_us() < stop && run->delivered < run->sent;)
        pump(run, 5);
    if (run->progress)
        fprintf(stderr, "\r%60s\r", "");
}

static void report(struct run *run, double secs)
{
    uint64_t lost = run->sent > run->delivered ? run->sent - run->delivered : 0;
    long p50 = lat_percentile(run, 0.50), p99 = lat_percentile(run, 0.99),
         p999 = lat_percentile(run, 0.999);
    double hs50 = percentile_ms(run->hs_ms, run->n_hs, 0.5),
           hsmax = percentile_ms(run->hs_ms, run->n_hs, 1.0),
           cs50 = percentile_ms(run->setup_ms, run->n_setup, 0.5);
    if (run->json) {
        printf("{\"circuits\":%ld,\"size\":%ld,\"duration_s\":%.3f,\"sent\":%llu,"
               "\"delivered\":%llu,\"lost\":%llu,\"bad\":%llu,\"delivered_per_s\":%.0f,"
               "\"p50_us\":%ld,\"p99_us\":%ld,\"p999_us\":%ld,\"handshake_ms_p50\":%.1f,"
               "\"handshake_ms_max\":%.1f,\"circuit_setup_ms_p50\":%.1f}\n",
               run->circuits, run->size, secs, (unsigned long long)run->sent,
               (unsigned long long)run->delivered, (unsigned long long)lost,
               (unsigned long long)run->bad, (double)run->delivered / secs, p50, p99, p999, hs50,
               hsmax, cs50);
        return;
    }
    printf("circuits %ld, %ld-byte datagrams, %.1f s\n", run->circuits, run->size, secs);
    printf("sent %llu, delivered %llu (%.0f/s), lost %llu (%.2f%%)\n",
           (unsigned long long)run->sent, (unsigned long long)run->delivered,
           (double)run->delivered / secs, (unsigned long long)lost,
           run->sent ? 100.0 * (double)lost / (double)run->sent : 0.0);
    printf("one-way latency: p50 %ld us, p99 %ld us, p999 %ld us\n", p50, p99, p999);
    printf("handshake: p50 %.1f ms, max %.1f ms; circuit set-up p50 %.1f ms\n", hs50, hsmax, cs50);
}

/* write_report: --report DIR, after the summary was printed. Returns 0 or -1 (said why). */
static int write_report(struct run *run, double secs)
{
    enum { SENT, DELIVERED, LOST, MBIT, P50, P99, P999, NCOLS };
    static const char *const names[NCOLS] = {"sent",   "delivered", "lost",   "throughput_mbit_s",
                                             "p50_us", "p99_us",    "p999_us"};
    const struct report_chart charts[] = {
        {REPORT_CHART_LINES,
         "Datagrams per second (by second sent)",
         "datagrams / s",
         {SENT, DELIVERED},
         2},
        {REPORT_CHART_LINES, "Delivered throughput", "Mbit/s", {MBIT}, 1},
        {REPORT_CHART_LINES, "Lost datagrams per second (by second sent)", "datagrams", {LOST}, 1},
        {REPORT_CHART_LINES, "One-way latency percentiles", "microseconds", {P50, P99, P999}, 3},
        {REPORT_CHART_HISTOGRAM,
         "Handshake time (QUIC + TLS + HELLO/WELCOME), 2N clients",
         "milliseconds",
         {0},
         0},
    };
    struct report_column cols[NCOLS];
    struct report_kv kv[12];
    size_t n = run->n_seconds, nkv = 0;
    double *v = calloc(NCOLS * n, sizeof(double));
    char err[512];
    if (!v) {
        fprintf(stderr, "pos-loadtest relay: out of memory for the report\n");
        return -1;
    }
    for (int c = 0; c < NCOLS; c++)
        cols[c] = (struct report_column){names[c], v + (size_t)c * n};
    for (size_t s = 0; s < n; s++) {
        double sent = (double)report_counts_get(&run->sent_s, s),
               got = (double)report_counts_get(&run->delivered_s, s);
        v[SENT * n + s] = sent;
        v[DELIVERED * n + s] = got;
        v[LOST * n + s] = sent > got ? sent - got : 0;
        v[MBIT * n + s] = got * (double)run->size * 8 / 1e6;
        double q[3] = {0.5, 0.99, 0.999};
        for (int k = 0; k < 3; k++) {
            double us = report_latency_percentile(&run->lat_s, s, q[k]);
            v[(P50 + k) * n + s] = us < 0 ? NAN : us;
        }
    }
#define KV(k, ...)                                                                                 \
    snprintf(kv[nkv].key, sizeof(kv[nkv].key), "%s", k),                                           \
        snprintf(kv[nkv].value, sizeof(kv[nkv].value), __VA_ARGS__), nkv++
    KV("relay", "%s (%s)", run->relay.id, run->relay.n_addrs ? run->relay.addrs[0] : "");
    KV("circuits", "%ld (%ld clients)", run->circuits, 2 * run->circuits);
    KV("datagram size", "%ld bytes", run->size);
    KV("rate", run->rate ? "%ld datagrams/s" : "as fast as the sockets take them", run->rate);
    KV("duration", "%.3f s", secs);
    KV("sent", "%llu", (unsigned long long)run->sent);
    KV("delivered", "%llu", (unsigned long long)run->delivered);
    KV("lost", "%llu",
       (unsigned long long)(run->sent > run->delivered ? run->sent - run->delivered : 0));
    KV("one-way latency", "p50 %ld us, p99 %ld us, p999 %ld us", lat_percentile(run, 0.5),
       lat_percentile(run, 0.99), lat_percentile(run, 0.999));
    KV("handshakes", "%ld", run->n_hs);
#undef KV
    struct report r = {"pos-loadtest relay",
                       kv,
                       nkv,
                       n,
                       cols,
                       NCOLS,
                       run->hs_ms,
                       (size_t)run->n_hs,
                       charts,
                       sizeof(charts) / sizeof(charts[0])};
    int rc = report_write(run->report_dir, &r, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "pos-loadtest relay: %s\n", err);
    free(v);
    return rc;
}

int cmd_relay(int argc, char **argv)
{
    struct run run;
    char dir[] = "/tmp/pos-loadtest-relay-XXXXXX";
    int rv, rc = 1;
    memset(&run, 0, sizeof(run));
    run.epfd = -1;
    rv = parse(argc, argv, &run);
    if (rv != 0)
        return rv > 0 ? 0 : 2;
    run.progress = isatty(2) && !run.json;
    if (run.report_dir) {
        char err[512];
        if (report_prepare_dir(run.report_dir, err, sizeof(err)) != 0) {
            fprintf(stderr, "pos-loadtest relay: %s\n", err);
            return 1;
        }
        run.n_seconds = (size_t)ceil(run.duration_s);
        if (report_latency_init(&run.lat_s, run.n_seconds) != 0) {
            fprintf(stderr, "pos-loadtest relay: out of memory for the report\n");
            return 1;
        }
    }
    if (pick_relay(&run) != 0) {
        report_latency_free(&run.lat_s);
        return 1;
    }
    if (!mkdtemp(dir)) {
        fprintf(stderr, "pos-loadtest relay: cannot make a temporary directory: %s\n",
                strerror(errno));
        report_latency_free(&run.lat_s);
        return 1;
    }
    run.sides = calloc((size_t)(2 * run.circuits), sizeof(*run.sides));
    run.lat = calloc(LAT_BUCKETS, sizeof(*run.lat));
    run.hs_ms = calloc((size_t)(2 * run.circuits), sizeof(double));
    run.setup_ms = calloc((size_t)run.circuits, sizeof(double));
    run.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!run.sides || !run.lat || !run.hs_ms || !run.setup_ms || run.epfd < 0) {
        fprintf(stderr, "pos-loadtest relay: out of memory\n");
        goto out;
    }
    if (setup(&run, dir) != 0 || open_circuits(&run) != 0)
        goto out;
    int64_t t0 = now_us();
    blast(&run);
    double secs = (double)(now_us() - t0) / 1e6 > run.duration_s ? run.duration_s
                                                                 : (double)(now_us() - t0) / 1e6;
    report(&run, secs);
    fflush(stdout);
    rc = run.report_dir && write_report(&run, secs) != 0 ? 1 : 0;
out:
    for (long i = 0; run.sides && i < 2 * run.circuits; i++) {
        char path[600];
        pos_p2p_relay_close(run.sides[i].r);
        pos_p2p_endpoint_del(run.sides[i].ep);
        if (run.sides[i].id)
            pos_p2p_identity_del(run.sides[i].id);
        snprintf(path, sizeof(path), "%s/id%ld", dir, i);
        unlink(path);
    }
    rmdir(dir);
    if (run.epfd >= 0)
        close(run.epfd);
    free(run.sides);
    free(run.lat);
    free(run.hs_ms);
    free(run.setup_ms);
    report_counts_free(&run.sent_s);
    report_counts_free(&run.delivered_s);
    report_latency_free(&run.lat_s);
    return rc;
}
