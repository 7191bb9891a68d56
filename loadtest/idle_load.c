/* Connecting and parking a pool of idle clients (idle_load.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idle_load.h"

static void client_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct idle_client *c = arg;
    if (ev->type == POS_P2P_RELAY_EV_INCOMING) {
        pos_p2p_relay_answer(r, ev->req_id, 1);
        c->incoming++;
    } else if (ev->type == POS_P2P_RELAY_EV_PARKED) {
        c->parked_ev++;
    } else if (ev->type == POS_P2P_RELAY_EV_AWAKE) {
        c->awake_ev[ev->code < 4 ? ev->code : 0]++;
    }
}

static void client_data(void *arg, pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data,
                        size_t len)
{
    struct idle_client *c = arg;
    (void)r;
    (void)circuit_id;
    if (len == 4 && !memcmp(data, "idle", 4))
        c->data_in++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void note(struct idle_load_stats *st, const char *why)
{
    if (!st->first_reason[0])
        snprintf(st->first_reason, sizeof(st->first_reason), "%s", why);
}

/* start_one: client |i| dials home; 0, or -1 (counted as failed). */
static int start_one(idle_pool *p, long i, const struct idle_load_conf *conf,
                     struct idle_load_stats *st)
{
    struct idle_client *c = idle_pool_get(p, i);
    c->start_ms = pos_p2p_now_ms();
    c->attempts++;
    int rv =
        pos_p2p_relay_connect(c->ep, conf->relay, conf->token, (int)conf->timeout_s * 1000, &c->r);
    if (rv != 0) {
        c->failed = 1;
        st->failed++;
        note(st, pos_p2p_strerror(rv));
        return -1;
    }
    pos_p2p_relay_set_callbacks(c->r, client_event, client_data, c);
    idle_pool_touch(p, i);
    return 0;
}

/*
 * settle_one: client |i|'s handshake ended (|rs|). A refused or failed one
 * goes back to the queue |todo| (a device would try again) up to 5 attempts.
 */
static void settle_one(idle_pool *p, long i, const pos_p2p_relay_status *rs,
                       struct idle_load_stats *st, long *todo, long *todo_n, double *hs)
{
    struct idle_client *c = idle_pool_get(p, i);
    if (rs->state == POS_P2P_RELAY_ACCEPTED) {
        c->accepted = 1;
        hs[st->accepted++] = (double)(rs->accepted_at_ms - c->start_ms);
        return;
    }
    note(st, rs->reason[0] ? rs->reason : pos_p2p_strerror(rs->error));
    pos_p2p_relay_close(c->r);
    c->r = NULL;
    if (c->attempts < 5) {
        st->retried++;
        todo[(*todo_n)++] = i;
    } else {
        c->failed = 1;
        st->failed++;
    }
}

int idle_load_connect(idle_pool *p, long n, const struct idle_load_conf *conf,
                      struct idle_load_stats *st)
{
    long inflight_n = 0, *inflight = calloc((size_t)conf->concurrency, sizeof(long));
    long todo_n = n, next = 0, *todo = calloc((size_t)n * 3 + 1, sizeof(long));
    double *hs = calloc((size_t)n + 1, sizeof(double));
    int64_t t0 = pos_p2p_now_ms(), last = t0;
    if (!inflight || !hs || !todo) {
        free(inflight);
        free(hs);
        free(todo);
        return -1;
    }
    for (long i = 0; i < n; i++)
        todo[i] = i;
    while (next < todo_n || inflight_n > 0) {
        while (next < todo_n && inflight_n < conf->concurrency) {
            long i = todo[next++];
            if (start_one(p, i, conf, st) == 0)
                inflight[inflight_n++] = i;
        }
        idle_pool_pump(p, 20);
        for (long k = 0; k < inflight_n;) {
            pos_p2p_relay_status rs;
            pos_p2p_relay_get_status(idle_pool_get(p, inflight[k])->r, &rs);
            if (rs.state == POS_P2P_RELAY_CONNECTING) {
                k++;
                continue;
            }
            settle_one(p, inflight[k], &rs, st, todo, &todo_n, hs);
            inflight[k] = inflight[--inflight_n];
        }
        if (conf->progress && pos_p2p_now_ms() - last >= 2000) {
            last = pos_p2p_now_ms();
            fprintf(stderr, "%ld/%ld accepted, %ld retried, %ld failed, %ld in flight\n",
                    st->accepted, n, st->retried, st->failed, inflight_n);
        }
    }
    st->connect_s = (double)(pos_p2p_now_ms() - t0) / 1000.0;
    qsort(hs, (size_t)st->accepted, sizeof(double), cmp_double);
    st->hs_p50_ms = st->accepted ? hs[(st->accepted - 1) / 2] : -1;
    free(inflight);
    free(hs);
    free(todo);
    return 0;
}

void idle_load_pump_for(idle_pool *p, int64_t ms)
{
    int64_t end = pos_p2p_now_ms() + ms, left;
    while ((left = end - pos_p2p_now_ms()) > 0)
        idle_pool_pump(p, left > 100 ? 100 : (int)left);
}

void idle_load_park(idle_pool *p, long n, const struct idle_load_conf *conf)
{
    /* |park_rate| a second: 50,000 PARKs and first keep-alives in one instant would
       overflow the relay's socket buffer, which is not what a device population does */
    long batch = conf->park_rate > 10 ? conf->park_rate / 10 : 1;
    for (long i = 0; i < n; i++) {
        pos_p2p_endpoint_set_park(idle_pool_get(p, i)->ep, (int)conf->park_after_s * 1000,
                                  (int)conf->keepalive_s * 1000);
        idle_pool_touch(p, i);
        if (i % batch == batch - 1)
            idle_load_pump_for(p, 100);
    }
}

void idle_load_events(idle_pool *p, long n, long v[3])
{
    for (long i = 0; i < n; i++) {
        struct idle_client *c = idle_pool_get(p, i);
        v[0] += (long)c->parked_ev;
        v[1] += (long)c->awake_ev[POS_P2P_AWAKE_WOKEN];
        v[2] += (long)c->awake_ev[POS_P2P_AWAKE_LOST];
    }
}

long idle_load_parked(idle_pool *p, long n)
{
    long parked = 0;
    for (long i = 0; i < n; i++) {
        struct idle_client *c = idle_pool_get(p, i);
        parked += c->r && pos_p2p_relay_parked(c->r);
    }
    return parked;
}
