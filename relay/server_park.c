/*
 * Parked clients on the relay's server (docs/protocol.md "Parking"; the
 * record table is parking.c): PARK on a home connection's request stream,
 * freeing that connection silently once PARKED is acknowledged, the parked
 * datagrams the forwarder hands back (keep-alives, acknowledged at most
 * once a second per record), WAKE for a CONNECT, the woken client's HELLO
 * taking its record back, lifetimes, token revocation and expiry, presence
 * written in batches (once a minute per record), and malloc_trim once the
 * connections stayed well below their peak for a while (glibc keeps a
 * freed ngtcp2 connection's heap).
 */
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "addr.h"
#include "identity.h"
#include "peer_id.h"
#include "log.h"
#include "secret.h"
#include "server_int.h"

#define PARKED_ACK_WAIT_NS (3 * NGTCP2_SECONDS) /* PARKED unacknowledged: freed anyway */
#define PRESENCE_EVERY_MS 60000                 /* a parked peer's presence write */
#define TICK_S 0.25                             /* the sweep's period */
/*
 * Records per tick: a 32nd of the table (each about every 8 s: a look at
 * each record is a cache miss or two, which every second would cost more
 * than the record's keep-alives), within these bounds (a small table is
 * looked at whole every tick).
 */
#define SWEEP_SHARE 32
#define SWEEP_MAX 65536 /* short stops of the workers, who wait for the exclusive lock */
#define SWEEP_MIN 1024
/*
 * malloc_trim gives the heap of freed connections back to the kernel once
 * the live connections stayed below their peak since the last trim by a
 * quarter (at least TRIM_MIN_DROP) for TRIM_AFTER_MS: after clients parked
 * or left, not in a dip that new connections fill again (each would then
 * fault in the pages anew: 18 page faults, about a fifth of a handshake's
 * CPU here) nor after every freed connection of a relay with churn.
 */
#define TRIM_AFTER_MS 5000
#define TRIM_MIN_DROP 64

enum park_end { END_HOME, END_EXPIRED, END_REVOKED, END_SHUTDOWN, END_BYE };

static int64_t now_ms(const relay_server *s)
{
    return (int64_t)(relay_now(s) / 1000000);
}

/*
 * end_record: |r| ends for |why|. Its connection slot (unless |keep_slot|:
 * a connection took it over) and its budget reference go back, and its
 * presence is deleted unless |keep_presence| (the peer is home here again).
 */
static void end_record(relay_server *s, relay_parked *r, enum park_end why, int keep_slot,
                       int keep_presence)
{
    relay_park_token *g = r->tok;
    if (s->svc) {
        char peer_id[POS_PEER_ID_STRLEN];
        pos_peer_id_format(r->peer_key, peer_id);
        if (!keep_presence)
            relay_presence_unpark(s->svc, peer_id);
        if (g->budget)
            relay_budget_release(s->svc, g->budget);
        if (g->n.key[0] && keep_slot)
            relay_auth_park(s->svc, g->n.key, 0); /* a live connection's place again */
        else if (g->n.key[0])
            relay_auth_release_parked(s->svc, g->n.key);
    }
    s->st.park_ended[why]++;
    relay_park_remove(s->park, r);
}

/* ---- PARK ---- */

static void park_refuse(struct rconn *c, uint32_t req_id, const char *why)
{
    pos_ctrl_msg e;
    memset(&e, 0, sizeof(e));
    e.type = POS_CTRL_ERROR;
    e.req_id = req_id;
    e.code = POS_CTRL_CODE_BUSY;
    snprintf(e.text, sizeof(e.text), "%s", why);
    c->srv->st.parks_refused++;
    relay_ctrl_queue(c, &e);
    pos_log_debug("client %s: PARK refused: %s", c->peer_id, why);
}

/* park_why_not: why |c| may not park now, or NULL. */
static const char *park_why_not(const struct rconn *c)
{
    const relay_server *s = c->srv;
    if (!s->park)
        return "parking is off on this relay";
    if (!c->home)
        return "only a home connection parks";
    if (!c->bc || !relay_broker_idle(s->broker, c->bc))
        return "circuits or requests open";
    if (!c->has_park_key || !c->has_lim || (s->svc && !c->budget))
        return "relay temporarily unavailable";
    if (s->park->n >= s->park->capacity)
        return "too many parked clients";
    return NULL;
}

void relay_ctrl_park(struct rconn *c, const pos_ctrl_msg *m)
{
    relay_server *s = c->srv;
    const char *why = park_why_not(c);
    relay_parked *r, *old;
    pos_ctrl_msg out;
    int err = 0;

    if (why) {
        park_refuse(c, m->req_id, why);
        return;
    }
    relay_park_set_route(s->park, s->circuits); /* the workers' bits are set by now */
    if ((old = relay_park_find_peer(s->park, c->pin.peer_key)) != NULL)
        end_record(s, old, END_HOME, 0, 1); /* an older connection of the peer had parked */
    r = relay_park_add(s->park, c->pin.peer_key, c->park_key, (const struct sockaddr *)&c->cur,
                       c->sock, c->worker, c->token_id, &c->lim, c->budget, now_ms(s), &err);
    if (!r) {
        park_refuse(c, m->req_id,
                    err == RELAY_PARK_ERR_FULL ? "too many parked clients" : "out of memory");
        return;
    }
    /* the record owns the connection slot, the budget reference and the presence now */
    c->token_id[0] = 0;
    c->budget = NULL;
    c->parked = 1;
    c->park_until = relay_now(s) + PARKED_ACK_WAIT_NS;
    if (c->awake) {
        c->awake = 0;
        s->st.awake--;
    }
    ev_timer_stop(s->loop, &c->expiry); /* the record's sweep watches the expiry */
    if (s->svc) {
        relay_presence_park(s->svc, c->peer_id);
        if (r->tok->n.key[0]) /* its place under the token's cap: written once a minute */
            relay_auth_park(s->svc, r->tok->n.key, 1);
    }
    if (c->bc) {
        relay_broker_client *bc = c->bc;
        c->bc = NULL;
        relay_broker_leave(s->broker, bc, now_ms(s)); /* idle: nothing to close or tell */
    }
    memset(&out, 0, sizeof(out));
    out.type = POS_CTRL_PARKED;
    out.req_id = m->req_id;
    out.record_id = r->id;
    out.keepalive_s = s->cfg->park_keepalive_s;
    out.lifetime_s = s->cfg->park_lifetime_s;
    relay_ctrl_queue(c, &out);
    s->st.parks++;
    pos_log_debug("client %s parked (record %016llx)", c->peer_id, (unsigned long long)r->id);
}

int relay_park_conn_due(struct rconn *c)
{
    if (!c->parked || c->in_read)
        return 0;
    if (relay_sendbuf_pending(&c->out) > 0 && relay_now(c->srv) < c->park_until)
        return 0;
    relay_conn_free(c); /* silently: the client frees its side too (no CONNECTION_CLOSE) */
    return 1;
}

/* ---- parked datagrams ---- */

/*
 * rewake_later: a valid keep-alive of |r| (its record moved to the keep-alive's
 * source, if that was new) while a CONNECT has it woken: its client may not have
 * got the WAKEs (a NAT mapping that changed unnoticed sent them nowhere), so the
 * series starts again there. Called under the workers' shared lock too: only the
 * flag is set here; WAKEs are sent from the main loop (on_rewake).
 */
static void rewake_later(relay_server *s, relay_parked *r)
{
    if (!r->waking)
        return;
    __atomic_store_n(&r->rewake, 1, __ATOMIC_RELAXED);
    ev_async_send(s->loop, &s->park_rewake);
}

/*
 * take_keepalive: a PARK_KEEPALIVE or PARK_QUIET from |from| to local address
 * |sock|: checked against its record, counted, and its record woken again when a
 * CONNECT waits for it. Runs on the main loop and in the workers' forwarders
 * under the shared lock: the counters are atomic. 1 when |ack| holds the
 * PARK_ACK to send back; 0 for a quiet one or one dropped silently.
 */
static int take_keepalive(relay_server *s, const uint8_t *buf, size_t len,
                          const struct sockaddr *from, int sock, uint8_t ack[POS_PARK_LEN])
{
    enum relay_park_verdict v = RELAY_PARK_DROP_FORM;
    relay_parked *r = NULL;
    int moved = 0;

    if (s->park)
        v = relay_park_keepalive(s->park, buf, len, from, sock, now_ms(s), ack, &r, &moved);
    if (v != RELAY_PARK_ACKED && v != RELAY_PARK_TAKEN) {
        __atomic_fetch_add(&s->st.park_keepalives_drop, 1, __ATOMIC_RELAXED);
        return 0;
    }
    __atomic_fetch_add(&s->st.park_keepalives_ok, 1, __ATOMIC_RELAXED);
    if (moved)
        __atomic_fetch_add(&s->st.park_roams, 1, __ATOMIC_RELAXED);
    rewake_later(s, r);
    if (v == RELAY_PARK_TAKEN)
        return 0; /* nothing goes back */
    __atomic_fetch_add(&s->st.park_acks, 1, __ATOMIC_RELAXED);
    return 1;
}

void relay_park_datagram(relay_server *s, int sock, const uint8_t *data, size_t len,
                         const struct sockaddr *from, socklen_t fromlen)
{
    uint8_t ack[POS_PARK_LEN];
    relay_parked *r;

    if (s->park && len > 0 && data[0] == POS_PARK_BYE) {
        /* the client leaves: its record and presence go now, no answer */
        if ((r = relay_park_bye(s->park, data, len)) != NULL) {
            pos_log_debug("parked record %016llx: the client said goodbye",
                          (unsigned long long)r->id);
            end_record(s, r, END_BYE, 0, 0);
        } else {
            s->st.park_keepalives_drop++;
        }
        return;
    }
    if (take_keepalive(s, data, len, from, sock, ack))
        relay_send_to(s, sock, ack, sizeof(ack), from, fromlen);
}

int relay_park_fast(void *arg, uint8_t *buf, size_t len, const struct sockaddr *from)
{
    struct relay_park_ctx *x = arg;
    uint8_t ack[POS_PARK_LEN];

    if (!take_keepalive(x->srv, buf, len, from, x->sock, ack))
        return 0;
    memcpy(buf, ack, sizeof(ack)); /* same length: the forwarder sends it back to |from| */
    return 1;
}

/* ---- waking ---- */

static void send_wake(void *arg, relay_parked *r, const uint8_t *d, size_t len)
{
    relay_server *s = arg;
    struct sockaddr_storage to;
    socklen_t tolen = relay_park_addr(r, &to);
    relay_send_to(s, r->sock, d, len, (const struct sockaddr *)&to, tolen);
    s->st.wakes_sent++;
}

static void run_wakes(relay_server *s)
{
    int64_t now = now_ms(s), next = relay_park_wake_due(s->park, now, send_wake, s);
    ev_timer_stop(s->loop, &s->park_wakes);
    if (next < 0)
        return;
    ev_timer_set(&s->park_wakes, next > now ? (double)(next - now) / 1000.0 : 0., 0.);
    ev_timer_start(s->loop, &s->park_wakes);
}

static void on_wakes(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    run_wakes(w->data);
}

static void on_rewake(struct ev_loop *loop, ev_async *a, int revents)
{
    relay_server *s = a->data;
    (void)loop;
    (void)revents;
    if (s->park && relay_park_rewake(s->park, now_ms(s)) > 0)
        run_wakes(s); /* the first WAKE of the new series at once */
}

/* record_of: |peer_id|'s record, or NULL (none, parking off, or not a peer id). */
static relay_parked *record_of(const relay_server *s, const char *peer_id)
{
    uint8_t key[32];
    if (!s->park || pos_peer_id_parse_any(peer_id, strlen(peer_id), key) < 0)
        return NULL;
    return relay_park_find_peer(s->park, key);
}

int relay_park_wake_peer(void *arg, const char *peer_id)
{
    relay_server *s = arg;
    relay_parked *r = record_of(s, peer_id);

    if (!r)
        return 0;
    relay_park_wake(s->park, r, now_ms(s));
    if (r->waiters < UINT16_MAX)
        r->waiters++;
    run_wakes(s); /* the first WAKE at once */
    return 1;
}

void relay_park_unwait_peer(void *arg, const char *peer_id)
{
    relay_server *s = arg;
    relay_parked *r = record_of(s, peer_id);

    if (r && r->waiters && --r->waiters == 0)
        relay_park_unwake(s->park, r); /* nobody to meet: a keep-alive wakes it no more */
}

/* woken: the time from |r|'s first WAKE to its client's HELLO, when it was woken. */
static void woken(relay_server *s, const relay_parked *r)
{
    if (!r->wake_start_ms)
        return;
    int64_t ms = now_ms(s) - r->wake_start_ms;
    s->st.wake_ms_sum += ms > 0 ? (uint64_t)ms : 0;
    s->st.wake_count++;
}

int relay_park_resume(struct rconn *c, const char *token, size_t token_len)
{
    relay_server *s = c->srv;
    char hash[POS_SECRET_HASH_HEXLEN], token_id[POS_SECRET_HASH_HEXLEN];
    relay_limits lim;
    relay_parked *r;

    if (!s->park || !c->home || token_len == 0 ||
        !(r = relay_park_find_peer(s->park, c->pin.peer_key)))
        return 0;
    pos_secret_hash_hex(token, token_len, hash);
    lim = r->tok->limits;
    if (strlen(r->tok->n.key) != POS_SECRET_HASH_HEXLEN - 1 ||
        sodium_memcmp(hash, r->tok->n.key, POS_SECRET_HASH_HEXLEN - 1) != 0 ||
        (lim.expires_at > 0 && (int64_t)time(NULL) >= lim.expires_at))
        return 0; /* another token, or expired: Redis decides, the record ends on WELCOME */
    memcpy(token_id, r->tok->n.key, sizeof(token_id));
    woken(s, r);
    end_record(s, r, END_HOME, 1, 1); /* the connection slot is |c|'s from now on */
    relay_ctrl_accept(c, &lim, token_id);
    sodium_memzero(&lim, sizeof(lim));
    return 1;
}

void relay_park_home(struct rconn *c)
{
    relay_server *s = c->srv;
    relay_parked *r;
    if (!s->park || !c->home || !(r = relay_park_find_peer(s->park, c->pin.peer_key)))
        return;
    woken(s, r);
    end_record(s, r, END_HOME, 0, 1); /* the newest home connection wins */
}

int relay_park_expects(relay_server *s, const struct sockaddr *from)
{
    return s->park && relay_park_waking_at(s->park, from);
}

/* ---- revocation, lifetimes, presence ---- */

void relay_park_revoke(relay_server *s, const char *token_id)
{
    relay_park_token *g;
    while (s->park && (g = relay_park_token_find(s->park, token_id)) != NULL) {
        pos_log_info("dropping a parked client: token revoked");
        end_record(s, &s->park->rec[g->head - 1], END_REVOKED, 0, 0);
    }
}

static void on_expired(void *arg, relay_parked *r)
{
    end_record(arg, r, END_EXPIRED, 0, 0);
}

/* flush_presence: the parked peers' presence writes collected so far, one Redis command. */
static void flush_presence(relay_server *s)
{
    if (s->n_park_due && s->svc)
        relay_presence_keep_parked_many(s->svc, (const char(*)[POS_PEER_ID_STRLEN])s->park_due,
                                        s->n_park_due);
    s->n_park_due = 0;
}

static void on_presence_due(void *arg, relay_parked *r)
{
    relay_server *s = arg;
    r->presence_ms = now_ms(s);
    if (!s->svc)
        return;
    pos_peer_id_format(r->peer_key, s->park_due[s->n_park_due++]);
    if (s->n_park_due == RELAY_PRESENCE_BATCH)
        flush_presence(s);
}

/* trim_when_down: malloc_trim after a drop of the live connections that lasted (TRIM_AFTER_MS). */
static void trim_when_down(relay_server *s)
{
    uint32_t live = relay_live_conns(s),
             slack = live / 4 > TRIM_MIN_DROP ? live / 4 : TRIM_MIN_DROP;
    if (s->live_peak <= live + slack) {
        s->down_since_ms = 0; /* no drop, or filled again */
        return;
    }
    if (!s->down_since_ms) {
        s->down_since_ms = now_ms(s);
        return;
    }
    if (now_ms(s) - s->down_since_ms < TRIM_AFTER_MS)
        return;
    malloc_trim(0);
    s->st.heap_trims++;
    s->live_peak = live;
    s->down_since_ms = 0;
}

/* redis_back: Redis is reachable again (maybe restarted empty): every record's presence is due. */
static void redis_back(relay_server *s)
{
    uint64_t ups = s->svc ? relay_services_redis_ups(s->svc) : 0;
    if (ups != s->park_redis_ups)
        for (uint32_t i = 0; i < s->park->used; i++)
            s->park->rec[i].presence_ms = -PRESENCE_EVERY_MS; /* written by the next sweeps */
    s->park_redis_ups = ups;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_server *s = w->data;
    (void)loop;
    (void)revents;
    redis_back(s);
    uint32_t n = s->park->used / SWEEP_SHARE + 1;
    relay_park_sweep(s->park, now_ms(s), (int64_t)time(NULL),
                     (int64_t)s->cfg->park_lifetime_s * 1000, PRESENCE_EVERY_MS,
                     n < SWEEP_MIN   ? SWEEP_MIN
                     : n > SWEEP_MAX ? SWEEP_MAX
                                     : n,
                     on_expired, on_presence_due, s);
    flush_presence(s);
    trim_when_down(s);
}

int relay_park_init(relay_server *s, char *err, size_t errlen)
{
    if (!s->cfg->park_lifetime_s)
        return 0;
    s->park = relay_park_new(s->cfg->max_parked);
    if (!s->park) {
        snprintf(err, errlen, "cannot allocate the parked-client table (max_parked %u)",
                 s->cfg->max_parked);
        return -1;
    }
    relay_park_set_route(s->park, s->circuits);
    ev_timer_init(&s->park_tick, on_tick, TICK_S, TICK_S);
    s->park_tick.data = s;
    ev_timer_start(s->loop, &s->park_tick);
    ev_timer_init(&s->park_wakes, on_wakes, 0., 0.);
    s->park_wakes.data = s;
    /* a CONNECT waits for a parked peer this long, and its record is woken as long */
    relay_park_set_wake_hold(s->park,
                             (int64_t)s->cfg->park_keepalive_s * 1000 + RELAY_PARK_WAIT_SLACK_MS);
    ev_async_init(&s->park_rewake, on_rewake);
    s->park_rewake.data = s;
    ev_async_start(s->loop, &s->park_rewake);
    return 0;
}

/*
 * relay_park_goaway: the relay stops. Each record's client gets a WAKE
 * (it reconnects at once, like a live client told "going away"). Each
 * record's presence key and its
 * place under the token's cap stay counted where the services' final
 * clean-up (relay_services_shutdown, one synchronous pipeline) deletes
 * them with the live connections' own; an asynchronous command now would
 * not be sent before the loop ends, and the keys would outlive the relay.
 */
void relay_park_goaway(relay_server *s)
{
    if (!s->park)
        return;
    for (uint32_t i = 0; i < s->park->used; i++) {
        relay_parked *r = &s->park->rec[i];
        if (!r->id)
            continue;
        /* a WAKE: the client reconnects now (to this relay once it is back, or elsewhere)
         * instead of finding out from unanswered keep-alives minutes later */
        relay_park_send_wake(r, send_wake, s);
        if (s->svc) {
            char peer_id[POS_PEER_ID_STRLEN];
            pos_peer_id_format(r->peer_key, peer_id);
            relay_presence_hold(s->svc, peer_id);
        }
        end_record(s, r, END_SHUTDOWN, 1, 1); /* the connection slot stays with the services */
    }
}

void relay_park_fini(relay_server *s)
{
    if (!s->park)
        return;
    for (uint32_t i = 0; i < s->park->used; i++)
        if (s->park->rec[i].id)
            end_record(s, &s->park->rec[i], END_SHUTDOWN, 0, 1);
    ev_timer_stop(s->loop, &s->park_tick);
    ev_timer_stop(s->loop, &s->park_wakes);
    ev_async_stop(s->loop, &s->park_rewake);
    relay_park_del(s->park);
    s->park = NULL;
}
