/*
 * The CONNECT tries of `pos-loadtest idle` (idle_run.h): one at a time from
 * the dialer (its own NOT_HOME connection per try), and the "nothing lost"
 * run. A try after an unnoticed NAT rebinding cannot succeed before the
 * peer's next keep-alive tells the relay where it is now (up to a keep-alive
 * interval, 25 s by default), so those tries are not made one after the
 * other: their peers are all rebound first, then their CONNECTs go out
 * together, 16 at a time (the relay's limit of requests in flight per
 * connection) on one dialer connection, and the batch waits for all of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idle_run.h"
#include "internal.h" /* relay_ping: what the library does when netlink reports a new address */

#define BATCH 16              /* the relay's CONNECTs in flight per connection */
#define DATAGRAM_WAIT_MS 2000 /* for a datagram sent on a circuit to reach its peer */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The dialer's events: the circuit of the try in progress, or why there is none. */
static void dialer_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct run *R = arg;
    (void)r;
    if (ev->type == POS_P2P_RELAY_EV_CIRCUIT) {
        R->t_circuit_us = now_us();
        R->circuit = ev->circuit_id;
    } else if (ev->type == POS_P2P_RELAY_EV_ERROR) {
        R->try_error = ev->error ? ev->error : POS_P2P_ERR_PROTOCOL;
        snprintf(R->try_text, sizeof(R->try_text), "%s", ev->text);
    }
}

/* dialer_up: the dialer's NOT_HOME connection, accepted, its events to |cb|(|arg|); NULL when
 * it could not be made (why in R->try_text). */
static pos_p2p_relay *dialer_up(struct run *R, pos_p2p_relay_event_cb cb, void *arg)
{
    struct idle_client *d = idle_pool_get(R->pool, R->mine);
    pos_p2p_relay *r = NULL;
    pos_p2p_relay_status st;
    int64_t end = pos_p2p_now_ms() + R->o.timeout_s * 1000;
    if (pos_p2p_relay_connect_flags(d->ep, &R->relay, R->o.token, (int)R->o.timeout_s * 1000,
                                    POS_P2P_RELAY_NOT_HOME, &r) != 0)
        return NULL;
    pos_p2p_relay_set_callbacks(r, cb, NULL, arg);
    idle_pool_touch(R->pool, R->mine);
    do {
        idle_pool_pump(R->pool, 20);
        pos_p2p_relay_get_status(r, &st);
    } while (st.state == POS_P2P_RELAY_CONNECTING && pos_p2p_now_ms() < end);
    if (st.state != POS_P2P_RELAY_ACCEPTED) {
        snprintf(R->try_text, sizeof(R->try_text), "dialer: %s",
                 st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
        pos_p2p_relay_close(r);
        return NULL;
    }
    return r;
}

int idle_tries_dial(struct run *R, long t, struct lat *L)
{
    struct idle_client *c = idle_pool_get(R->pool, t);
    uint32_t req;
    uint64_t got = c->data_in;
    int ok = 0;
    L->tried++;
    pos_p2p_relay *d = dialer_up(R, dialer_event, R);
    if (!d) {
        if (!L->first[0])
            snprintf(L->first, sizeof(L->first), "CONNECT to client %ld: %s", t, R->try_text);
        return 0;
    }
    R->t_circuit_us = 0;
    R->try_error = 0;
    R->try_text[0] = 0;
    R->t_req_us = now_us();
    if (pos_p2p_relay_request_peer(d, c->peer_id, &req) == 0) {
        idle_pool_touch(R->pool, R->mine);
        int64_t end = pos_p2p_now_ms() + R->o.timeout_s * 1000;
        while (!R->t_circuit_us && !R->try_error && pos_p2p_now_ms() < end)
            idle_pool_pump(R->pool, 20);
        if (R->t_circuit_us) {
            L->us[L->n++] = (double)(R->t_circuit_us - R->t_req_us);
            pos_p2p_relay_send_data(d, R->circuit, (const uint8_t *)"idle", 4);
            idle_pool_touch(R->pool, R->mine);
            end = pos_p2p_now_ms() + DATAGRAM_WAIT_MS;
            while (c->data_in == got && pos_p2p_now_ms() < end)
                idle_pool_pump(R->pool, 20);
            ok = c->data_in > got;
        } else if (!R->try_error) {
            snprintf(R->try_text, sizeof(R->try_text), "no circuit within %ld s", R->o.timeout_s);
        }
    }
    if (!ok && !L->first[0])
        snprintf(L->first, sizeof(L->first), "CONNECT to client %ld: %s", t,
                 R->try_text[0] ? R->try_text : "the datagram did not arrive");
    pos_p2p_relay_close(d); /* ends the circuit: the peer may park again */
    idle_pool_touch(R->pool, R->mine);
    L->ok += ok;
    return ok;
}

long idle_tries_next(struct run *R, long *at, int parked)
{
    for (long k = 0; k < R->mine; k++) {
        long i = (*at + k) % R->mine;
        struct idle_client *c = idle_pool_get(R->pool, i);
        if (!c->accepted || !c->r)
            continue;
        if (parked && !pos_p2p_relay_parked(c->r))
            continue;
        *at = i + 1;
        return i;
    }
    return -1;
}

/* One CONNECT of a batch: its target, request id and outcome. */
struct slot {
    long t;
    uint32_t req;
    uint64_t got; /* the target's data_in before the try */
    int64_t t_req_us, t_circuit_us;
    uint32_t circuit;
    int sent;    /* 1: the datagram went out on the circuit */
    int rebound; /* its NAT rebinding was made (else it counts in R->lost only) */
    int failed;
    char why[200];
};

struct batch {
    struct slot s[BATCH];
    int n;
};

/* batch_event: the answer to one of the batch's CONNECTs (by request id). */
static void batch_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct batch *b = arg;
    (void)r;
    for (int i = 0; i < b->n; i++) {
        struct slot *s = &b->s[i];
        if (s->req != ev->req_id || s->t_circuit_us || s->failed)
            continue;
        if (ev->type == POS_P2P_RELAY_EV_CIRCUIT) {
            s->t_circuit_us = now_us();
            s->circuit = ev->circuit_id;
        } else if (ev->type == POS_P2P_RELAY_EV_ERROR) {
            s->failed = 1;
            snprintf(s->why, sizeof(s->why), "%s", ev->text);
        }
        return;
    }
}

/* batch_pending: slots still waiting for their answer, or for their datagram to arrive. */
static int batch_pending(struct run *R, struct batch *b, pos_p2p_relay *d)
{
    int pending = 0;
    for (int i = 0; i < b->n; i++) {
        struct slot *s = &b->s[i];
        if (s->failed)
            continue;
        if (!s->t_circuit_us) {
            pending++;
        } else if (!s->sent) {
            pos_p2p_relay_send_data(d, s->circuit, (const uint8_t *)"idle", 4);
            idle_pool_touch(R->pool, R->mine);
            s->sent = 1;
            pending++;
        } else if (idle_pool_get(R->pool, s->t)->data_in == s->got) {
            pending++;
        }
    }
    return pending;
}

/* batch_wait_ms: how long a batch waits: the peers' keep-alive interval (the relay waits that
 * + 10 s for a parked peer), + 10 s, + --timeout for the rest. */
static int64_t batch_wait_ms(struct run *R, struct batch *b)
{
    int64_t ka = 0;
    for (int i = 0; i < b->n; i++) {
        pos_p2p_relay_status st;
        pos_p2p_relay_get_status(idle_pool_get(R->pool, b->s[i].t)->r, &st);
        if ((int64_t)st.park_keepalive_s * 1000 > ka)
            ka = (int64_t)st.park_keepalive_s * 1000;
    }
    return (ka ? ka : 25000) + 10000 + R->o.timeout_s * 1000;
}

/* batch_count: the outcome of each slot into R->lost and R->rebound. */
static void batch_count(struct run *R, struct batch *b, int64_t wait_ms)
{
    char wait_s[64];
    snprintf(wait_s, sizeof(wait_s), "no circuit within %lld s", (long long)(wait_ms / 1000));
    for (int i = 0; i < b->n; i++) {
        struct slot *s = &b->s[i];
        int ok = s->sent && idle_pool_get(R->pool, s->t)->data_in > s->got;
        struct lat *L[2] = {&R->lost, &R->rebound};
        for (int k = 0; k < 1 + s->rebound; k++) {
            L[k]->tried++;
            L[k]->ok += ok;
            if (s->t_circuit_us)
                L[k]->us[L[k]->n++] = (double)(s->t_circuit_us - s->t_req_us);
            if (!ok && !L[k]->first[0])
                snprintf(L[k]->first, sizeof(L[k]->first),
                         "CONNECT to client %ld after a NAT rebinding: %s", s->t,
                         s->why[0]         ? s->why
                         : s->t_circuit_us ? "the datagram did not arrive"
                                           : wait_s);
        }
    }
}

/*
 * rebound_batch: the |n| (at most BATCH) clients of |ts| get a new NAT
 * mapping they do not notice (a new socket, idle_pool_rebind, no
 * relay_ping); then the CONNECTs to all of them go out at once on one
 * dialer connection, which waits until each has its datagram, its ERROR,
 * or the wait ends.
 */
static void rebound_batch(struct run *R, const long *ts, int n)
{
    struct batch b;
    memset(&b, 0, sizeof(b));
    for (int i = 0; i < n; i++) {
        b.s[b.n].t = ts[i];
        b.s[b.n++].rebound = idle_pool_rebind(R->pool, ts[i]) == 0;
    }
    pos_p2p_relay *d = dialer_up(R, batch_event, &b);
    if (!d) {
        for (int i = 0; i < b.n; i++) {
            b.s[i].failed = 1;
            snprintf(b.s[i].why, sizeof(b.s[i].why), "%s", R->try_text);
        }
        batch_count(R, &b, 0);
        return;
    }
    for (int i = 0; i < b.n; i++) {
        struct slot *s = &b.s[i];
        struct idle_client *c = idle_pool_get(R->pool, s->t);
        s->got = c->data_in;
        s->t_req_us = now_us();
        if (pos_p2p_relay_request_peer(d, c->peer_id, &s->req) != 0) {
            s->failed = 1;
            snprintf(s->why, sizeof(s->why), "the dialer could not send its CONNECT");
        }
    }
    idle_pool_touch(R->pool, R->mine);
    int64_t wait = batch_wait_ms(R, &b), end = pos_p2p_now_ms() + wait;
    while (batch_pending(R, &b, d) && pos_p2p_now_ms() < end)
        idle_pool_pump(R->pool, 20);
    batch_count(R, &b, wait);
    pos_p2p_relay_close(d); /* ends the circuits: the peers may park again */
    idle_pool_touch(R->pool, R->mine);
}

void idle_tries_lost(struct run *R, long *at)
{
    long *rebound = calloc((size_t)(R->o.lost_tries / 4 + 1), sizeof(long));
    long n_rebound = 0;
    if (!rebound)
        return;
    for (long k = 0; k < R->o.lost_tries; k++) {
        long t = idle_tries_next(R, at, 1);
        if (t < 0)
            t = idle_tries_next(R, at, 0);
        if (t < 0) {
            R->lost.tried++;
            continue;
        }
        if (k % 4 == 3) {
            rebound[n_rebound++] = t; /* rebound and dialed with the others below */
            continue;
        }
        int moved = k % 4 == 1 && idle_pool_rebind(R->pool, t) == 0;
        if (moved) {
            relay_ping(idle_pool_get(R->pool, t)->r);
            idle_pool_touch(R->pool, t);
        }
        int ok = idle_tries_dial(R, t, &R->lost);
        R->moved += moved;
        R->moved_ok += moved && ok;
    }
    int64_t t0 = pos_p2p_now_ms();
    for (long i = 0; i < n_rebound; i += BATCH)
        rebound_batch(R, rebound + i, n_rebound - i < BATCH ? (int)(n_rebound - i) : BATCH);
    R->rebound_s = (double)(pos_p2p_now_ms() - t0) / 1000.0;
    free(rebound);
}
