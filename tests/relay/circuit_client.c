/*
 * circuit_client: a small client of the circuit API in pos/p2p.h, for the
 * integration tests (test_relay_circuits.py). It connects to one relay
 * (picked from the discovery API by --relay-id, or given with --relay
 * ID,PEERID,ADDR) and then, per its options, either waits for peers
 * (--listen: accept or --decline each INCOMING, --echo every datagram back)
 * or asks for one (--connect PEERID) and sends --count datagrams of --size
 * bytes at --rate per second over the circuit, each carrying a sequence
 * number, its send time and a pattern derived from both, so the other side
 * can check them. Everything it sees is printed on stdout as one JSON
 * object per line ({"event": ...}); it exits 0 when it ran to its end, 1 on
 * an error event or failure. SIGTERM/SIGINT end it with a final "result".
 *
 * --flood N (with --connect) is the circuit-table attack: N CONNECTs to the
 * peer as fast as the relay takes them (16 in flight, its per-client
 * maximum), then one "flood" line with the circuits obtained and the errors
 * by text; the circuits stay open for --hold-ms. --quiet (listen) counts
 * INCOMING and CIRCUIT instead of printing a line for each. When the relay
 * closes the connection, "relay_closed" is printed at once with the reason
 * and the time (t_ms, the clock of pos_p2p_now_ms).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "pos/p2p.h"

#define HDR 16             /* u64 sequence, u64 send time (us) */
#define FLOOD_IN_FLIGHT 16 /* the relay's maximum of CONNECTs in flight per client */
#define FLOOD_TEXTS 4      /* distinct error texts counted */

struct opts {
    const char *api_url, *relay_id, *relay, *token, *identity, *connect;
    int listen, decline, echo, ignore, quiet;
    long count, size, rate, flood;
    long wait_ms, hold_ms, timeout_ms, stats_ms;
};

struct st {
    struct opts o;
    pos_p2p_relay *r;
    uint32_t circuit, req;
    int have_circuit, circuit_closed, failed, done;
    long sent, received, intact, bad, echoed;
    uint64_t bytes_received;
    int64_t first_rx_ms, last_rx_ms, circuit_ms, start_ms;
    int64_t lat_sum_us, lat_max_us;
    /* --flood */
    long flood_sent, flood_in_flight, flood_circuits, incomings, circuits;
    long flood_error_count[FLOOD_TEXTS];
    char flood_error_text[FLOOD_TEXTS][257];
    int flood_errors, limit_error, closed_reported;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: circuit_client (--api-url URL --relay-id UUID | --relay ID,PEERID,ADDR)\n"
               "         --token TOKEN --identity FILE\n"
               "         (--listen [--decline | --ignore] [--echo] [--quiet] | --connect PEERID\n"
               "          [--count N] [--size BYTES] [--rate PPS] [--wait-ms MS] [--flood N])\n"
               "         [--hold-ms MS] [--timeout-ms MS] [--stats-ms MS]\n"
               "--stats-ms prints what arrived so far every MS milliseconds (listen).\n"
               "--flood asks for N circuits to PEERID as fast as the relay takes them.\n");
}

static void fill(uint8_t *p, long size, uint64_t seq)
{
    for (long i = HDR; i < size; i++)
        p[i] = (uint8_t)(seq * 31u + (uint64_t)i);
}

static int intact(const uint8_t *p, size_t len, long size)
{
    uint64_t seq = 0;
    if ((long)len != size || len < HDR)
        return 0;
    for (int i = 0; i < 8; i++)
        seq = seq << 8 | p[i];
    for (size_t i = HDR; i < len; i++)
        if (p[i] != (uint8_t)(seq * 31u + (uint64_t)i))
            return 0;
    return 1;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* flood_event: counts what answers a --flood request; 1 when |ev| was one. */
static int flood_event(struct st *s, const pos_p2p_relay_event *ev)
{
    if (ev->type == POS_P2P_RELAY_EV_CIRCUIT) {
        s->flood_circuits++;
    } else if (ev->type == POS_P2P_RELAY_EV_ERROR) {
        int i = 0;
        while (i < s->flood_errors && strcmp(s->flood_error_text[i], ev->text) != 0)
            i++;
        if (i == s->flood_errors && i < FLOOD_TEXTS)
            snprintf(s->flood_error_text[s->flood_errors++], sizeof(s->flood_error_text[0]), "%s",
                     ev->text);
        if (i < FLOOD_TEXTS)
            s->flood_error_count[i]++;
        if (ev->error == POS_P2P_ERR_CIRCUIT_LIMIT)
            s->limit_error = ev->error;
    } else {
        return 0;
    }
    s->flood_in_flight--;
    return 1;
}

static void on_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct st *s = arg;
    if (s->o.flood && flood_event(s, ev))
        return;
    if (s->o.quiet &&
        (ev->type == POS_P2P_RELAY_EV_INCOMING || ev->type == POS_P2P_RELAY_EV_CIRCUIT)) {
        if (ev->type == POS_P2P_RELAY_EV_INCOMING)
            s->incomings++;
        else
            s->circuits++;
        if (ev->type == POS_P2P_RELAY_EV_INCOMING && !s->o.ignore)
            pos_p2p_relay_answer(r, ev->req_id, !s->o.decline);
        return;
    }
    switch (ev->type) {
    case POS_P2P_RELAY_EV_INCOMING:
        printf("{\"event\":\"incoming\",\"req\":%u,\"peer_id\":\"%s\",\"observed\":\"%s\","
               "\"n_local\":%zu}\n",
               ev->req_id, ev->peer_id, ev->observed, ev->n_local);
        if (!s->o.ignore) /* --ignore: never answer (the relay times the request out) */
            pos_p2p_relay_answer(r, ev->req_id, !s->o.decline);
        break;
    case POS_P2P_RELAY_EV_CIRCUIT:
        printf("{\"event\":\"circuit\",\"req\":%u,\"circuit\":%u,\"peer_id\":\"%s\","
               "\"observed\":\"%s\"}\n",
               ev->req_id, ev->circuit_id, ev->peer_id, ev->observed);
        s->circuit = ev->circuit_id;
        s->have_circuit = 1;
        s->circuit_ms = pos_p2p_now_ms();
        break;
    case POS_P2P_RELAY_EV_REDIRECT:
        printf("{\"event\":\"redirect\",\"req\":%u,\"relay_id\":\"%s\",\"relay_peer_id\":\"%s\","
               "\"addrs\":[",
               ev->req_id, ev->redirect.id, ev->redirect.peer_id);
        for (size_t i = 0; i < ev->redirect.n_addrs; i++)
            printf("%s\"%s\"", i ? "," : "", ev->redirect.addrs[i]);
        printf("]}\n");
        s->done = 1;
        break;
    case POS_P2P_RELAY_EV_ERROR:
        printf("{\"event\":\"error\",\"req\":%u,\"code\":%u,\"error\":%d,\"text\":\"%s\"}\n",
               ev->req_id, ev->code, ev->error, ev->text);
        if (!s->o.listen)
            s->done = 1;
        break;
    case POS_P2P_RELAY_EV_CIRCUIT_CLOSED:
        printf("{\"event\":\"circuit_closed\",\"circuit\":%u,\"code\":%u,\"t_ms\":%lld}\n",
               ev->circuit_id, ev->code, (long long)pos_p2p_now_ms());
        if (ev->circuit_id == s->circuit)
            s->circuit_closed = 1;
        break;
    case POS_P2P_RELAY_EV_GOAWAY:
        printf("{\"event\":\"goaway\",\"text\":\"%s\"}\n", ev->text);
        break;
    }
    fflush(stdout);
}

static void on_data(void *arg, pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data,
                    size_t len)
{
    struct st *s = arg;
    int64_t now = pos_p2p_now_ms();
    s->received++;
    s->bytes_received += len;
    if (!s->first_rx_ms)
        s->first_rx_ms = now;
    s->last_rx_ms = now;
    if (s->o.echo) {
        if (pos_p2p_relay_send_data(r, circuit_id, data, len) == 0)
            s->echoed++;
        return;
    }
    if (intact(data, len, s->o.size)) {
        s->intact++;
        int64_t lat = now * 1000 - (int64_t)get_u64(data + 8);
        s->lat_sum_us += lat;
        if (lat > s->lat_max_us)
            s->lat_max_us = lat;
    } else {
        s->bad++;
    }
}

static void print_result(struct st *s)
{
    double span = s->last_rx_ms > s->first_rx_ms ? (double)(s->last_rx_ms - s->first_rx_ms) : 0;
    printf("{\"event\":\"result\",\"sent\":%ld,\"received\":%ld,\"intact\":%ld,\"bad\":%ld,"
           "\"echoed\":%ld,\"bytes_received\":%llu,\"rx_span_ms\":%.0f,\"lat_avg_us\":%lld,"
           "\"circuit_closed\":%s,\"incomings\":%ld,\"circuits\":%ld}\n",
           s->sent, s->received, s->intact, s->bad, s->echoed,
           (unsigned long long)s->bytes_received, span,
           (long long)(s->intact ? s->lat_sum_us / s->intact : 0),
           s->circuit_closed ? "true" : "false", s->incomings, s->circuits);
    fflush(stdout);
}

static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"api-url", required_argument, NULL, 'a'},
                                       {"relay-id", required_argument, NULL, 'R'},
                                       {"relay", required_argument, NULL, 'r'},
                                       {"token", required_argument, NULL, 't'},
                                       {"identity", required_argument, NULL, 'i'},
                                       {"connect", required_argument, NULL, 'c'},
                                       {"listen", no_argument, NULL, 'l'},
                                       {"decline", no_argument, NULL, 'd'},
                                       {"echo", no_argument, NULL, 'e'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"size", required_argument, NULL, 's'},
                                       {"rate", required_argument, NULL, 'p'},
                                       {"wait-ms", required_argument, NULL, 'w'},
                                       {"hold-ms", required_argument, NULL, 'H'},
                                       {"timeout-ms", required_argument, NULL, 'T'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"stats-ms", required_argument, NULL, 'S'},
                                       {"ignore", no_argument, NULL, 'I'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"flood", required_argument, NULL, 'F'},
                                       {NULL, 0, NULL, 0}};
    int ch;
    memset(o, 0, sizeof(*o));
    o->count = 10;
    o->size = 100;
    o->wait_ms = 2000;
    o->timeout_ms = 10000;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'a':
            o->api_url = optarg;
            break;
        case 'R':
            o->relay_id = optarg;
            break;
        case 'r':
            o->relay = optarg;
            break;
        case 't':
            o->token = optarg;
            break;
        case 'i':
            o->identity = optarg;
            break;
        case 'c':
            o->connect = optarg;
            break;
        case 'l':
            o->listen = 1;
            break;
        case 'd':
            o->decline = 1;
            break;
        case 'e':
            o->echo = 1;
            break;
        case 'n':
            o->count = atol(optarg);
            break;
        case 's':
            o->size = atol(optarg);
            break;
        case 'p':
            o->rate = atol(optarg);
            break;
        case 'w':
            o->wait_ms = atol(optarg);
            break;
        case 'H':
            o->hold_ms = atol(optarg);
            break;
        case 'T':
            o->timeout_ms = atol(optarg);
            break;
        case 'S':
            o->stats_ms = atol(optarg);
            break;
        case 'I':
            o->ignore = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'F':
            o->flood = atol(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (!o->token || !o->identity || (!o->relay && !(o->api_url && o->relay_id)) ||
        (!o->listen && !o->connect) || o->size < HDR || o->size > 1500 || o->flood < 0 ||
        (o->flood && !o->connect)) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int find_relay(const struct opts *o, pos_p2p_relay_info *out)
{
    char err[256];
    pos_p2p_relay_list *l;
    memset(out, 0, sizeof(*out));
    if (o->relay) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s", o->relay);
        char *id = strtok(buf, ","), *pid = strtok(NULL, ","), *addr;
        if (!id || !pid)
            return -1;
        snprintf(out->id, sizeof(out->id), "%s", id);
        snprintf(out->peer_id, sizeof(out->peer_id), "%s", pid);
        while ((addr = strtok(NULL, ",")) && out->n_addrs < POS_P2P_RELAY_MAX_ADDRS)
            snprintf(out->addrs[out->n_addrs++], POS_P2P_ADDR_STRLEN, "%s", addr);
        return out->n_addrs ? 0 : -1;
    }
    if (pos_p2p_relay_list_fetch(o->api_url, 5000, &l, err, sizeof(err)) != 0) {
        fprintf(stderr, "circuit_client: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < pos_p2p_relay_list_count(l); i++)
        if (!strcmp(pos_p2p_relay_list_get(l, i)->id, o->relay_id))
            *out = *pos_p2p_relay_list_get(l, i);
    pos_p2p_relay_list_del(l);
    return out->n_addrs ? 0 : -1;
}

/* relay_closed: prints "relay_closed" once when the relay ended the connection; 1 then. */
static int relay_closed(struct st *s)
{
    pos_p2p_relay_status rs;
    pos_p2p_relay_get_status(s->r, &rs);
    if (rs.state != POS_P2P_RELAY_FAILED)
        return 0;
    if (!s->closed_reported) {
        s->closed_reported = 1;
        printf("{\"event\":\"relay_closed\",\"error\":%d,\"reason\":\"%s\",\"t_ms\":%lld}\n",
               rs.error, rs.reason, (long long)pos_p2p_now_ms());
        fflush(stdout);
    }
    return 1;
}

/* step runs the endpoint for at most |ms|. */
static void step(pos_p2p_endpoint *ep, int ms)
{
    struct epoll_event evs[4];
    int64_t d = pos_p2p_endpoint_deadline(ep), now = pos_p2p_now_ms();
    int wait = ms;
    if (d >= 0 && d - now < wait)
        wait = d - now < 0 ? 0 : (int)(d - now);
    epoll_wait(pos_p2p_endpoint_fd(ep), evs, 4, wait);
    pos_p2p_endpoint_process(ep);
}

/* flood: --flood requests to --connect, at most FLOOD_IN_FLIGHT at once, then the counts. */
static void flood(struct st *s, pos_p2p_endpoint *ep)
{
    int64_t t0 = pos_p2p_now_ms(), until = t0 + s->o.timeout_ms;
    uint32_t req;
    while ((s->flood_sent < s->o.flood || s->flood_in_flight > 0) && !stop_flag &&
           pos_p2p_now_ms() < until && !relay_closed(s)) {
        while (s->flood_sent < s->o.flood && s->flood_in_flight < FLOOD_IN_FLIGHT &&
               pos_p2p_relay_request_peer(s->r, s->o.connect, &req) == 0) {
            s->flood_sent++;
            s->flood_in_flight++;
        }
        step(ep, 10);
    }
    printf("{\"event\":\"flood\",\"requested\":%ld,\"circuits\":%ld,\"ms\":%lld,"
           "\"limit_error\":%d,\"limit_sentence\":\"%s\",\"errors\":{",
           s->flood_sent, s->flood_circuits, (long long)(pos_p2p_now_ms() - t0), s->limit_error,
           s->limit_error ? pos_p2p_strerror(s->limit_error) : "");
    for (int i = 0; i < s->flood_errors; i++)
        printf("%s\"%s\":%ld", i ? "," : "", s->flood_error_text[i], s->flood_error_count[i]);
    printf("}}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct st s;
    pos_p2p_identity *id;
    pos_p2p_endpoint *ep;
    pos_p2p_relay_info info;
    pos_p2p_relay_status rs;
    char err[256], me[POS_P2P_PEER_ID_STRLEN];
    uint8_t buf[1500];
    int rc = 0;

    memset(&s, 0, sizeof(s));
    if (parse(argc, argv, &s.o) != 0)
        return 2;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (pos_p2p_identity_load(s.o.identity, 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "circuit_client: %s\n", err);
        return 1;
    }
    pos_p2p_identity_peer_id(id, me);
    if (find_relay(&s.o, &info) != 0) {
        fprintf(stderr, "circuit_client: relay not found\n");
        return 1;
    }
    if (pos_p2p_endpoint_new(&ep, id, 0) != 0 ||
        pos_p2p_relay_connect(ep, &info, s.o.token, (int)s.o.timeout_ms, &s.r) != 0) {
        fprintf(stderr, "circuit_client: cannot start\n");
        return 1;
    }
    pos_p2p_relay_set_callbacks(s.r, on_event, on_data, &s);
    s.start_ms = pos_p2p_now_ms();
    for (;;) {
        pos_p2p_relay_get_status(s.r, &rs);
        if (rs.state != POS_P2P_RELAY_CONNECTING || stop_flag)
            break;
        step(ep, 100);
    }
    if (rs.state != POS_P2P_RELAY_ACCEPTED) {
        printf("{\"event\":\"relay_failed\",\"error\":%d,\"reason\":\"%s\"}\n", rs.error,
               rs.reason);
        rc = 1;
        goto out;
    }
    printf("{\"event\":\"welcome\",\"peer_id\":\"%s\",\"observed\":\"%s\",\"port\":%u}\n", me,
           rs.observed, pos_p2p_endpoint_local_port(ep));
    fflush(stdout);
    if (s.o.connect && s.o.flood) {
        flood(&s, ep);
    } else if (s.o.connect) {
        if (pos_p2p_relay_request_peer(s.r, s.o.connect, &s.req) != 0) {
            printf("{\"event\":\"request_failed\"}\n");
            rc = 1;
            goto out;
        }
        int64_t until = pos_p2p_now_ms() + s.o.timeout_ms;
        while (!s.have_circuit && !s.done && !stop_flag && pos_p2p_now_ms() < until)
            step(ep, 50);
        if (!s.have_circuit) {
            if (!s.done)
                printf("{\"event\":\"timeout\"}\n");
            rc = s.done ? 0 : 1;
            goto hold;
        }
        /* send: paced by --rate (0 = as fast as the socket takes them) */
        int64_t t0 = pos_p2p_now_ms();
        while (s.sent < s.o.count && !stop_flag && !s.circuit_closed && !relay_closed(&s)) {
            if (s.o.rate > 0) {
                int64_t due = t0 + s.sent * 1000 / s.o.rate;
                if (pos_p2p_now_ms() < due) {
                    step(ep, (int)(due - pos_p2p_now_ms()));
                    continue;
                }
            }
            put_u64(buf, (uint64_t)s.sent);
            put_u64(buf + 8, (uint64_t)(pos_p2p_now_ms() * 1000));
            fill(buf, s.o.size, (uint64_t)s.sent);
            if (pos_p2p_relay_send_data(s.r, s.circuit, buf, (size_t)s.o.size) == 0)
                s.sent++;
            else
                step(ep, 1);
            if (s.sent % 32 == 0)
                step(ep, 0);
        }
        int64_t end = pos_p2p_now_ms() + s.o.wait_ms;
        while (!stop_flag && pos_p2p_now_ms() < end && s.received < s.sent)
            step(ep, 20);
        print_result(&s);
    } else {
        int64_t next_stats = pos_p2p_now_ms() + s.o.stats_ms;
        while (!stop_flag) {
            if (relay_closed(&s))
                break;
            step(ep, s.o.stats_ms > 0 && s.o.stats_ms < 100 ? (int)s.o.stats_ms : 100);
            if (s.o.stats_ms > 0 && pos_p2p_now_ms() >= next_stats) {
                next_stats += s.o.stats_ms;
                printf("{\"event\":\"stats\",\"t_ms\":%lld,\"received\":%ld,\"bytes\":%llu}\n",
                       (long long)pos_p2p_now_ms(), s.received,
                       (unsigned long long)s.bytes_received);
                fflush(stdout);
            }
        }
        print_result(&s);
    }
hold:
    for (int64_t end = pos_p2p_now_ms() + s.o.hold_ms;
         !stop_flag && pos_p2p_now_ms() < end && !relay_closed(&s);)
        step(ep, 50);
    relay_closed(&s);
out:
    fflush(stdout);
    pos_p2p_relay_close(s.r);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return rc;
}
