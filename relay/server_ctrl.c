/*
 * The control protocol of the relay's server (see server_int.h): HELLO on
 * stream 0, the token check, WELCOME and the token's expiry; then the
 * client's request stream, whose CONNECT/ACCEPT/DECLINE go to the circuit
 * broker (broker.h), and the broker's outputs: messages queued on a
 * client's stream 0 and written once the broker is done with an input.
 * Redis answers come back through callbacks from the loop, never inside the
 * call that asked (services.h promises it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "broker.h"
#include "ctrl.h"
#include "log.h"
#include "sendbuf.h"
#include "server_int.h"

#define INCOMING_TIMEOUT_MS 10000   /* a target that does not answer INCOMING */
#define MAX_PENDING_PER_CONN 16     /* CONNECTs in flight per client */
#define MAX_PENDING_TOTAL 4096      /* CONNECTs in flight per relay */
#define MAX_OUT_PENDING (64 * 1024) /* control bytes queued to a client not reading them */

/* queue_bytes: one encoded message onto |c|'s stream 0, or |c| is closed from its timer. */
static void queue_bytes(struct rconn *c, const uint8_t *buf, int n)
{
    if (c->state == CLOSING || c->state == DRAINING)
        return;
    /*
     * A client that does not read its stream, or no memory: closed from its
     * timer, not here, as this runs inside the broker's calls.
     */
    if (relay_sendbuf_pending(&c->out) + (size_t)n > MAX_OUT_PENDING)
        relay_conn_close_later(c, RELAY_REFUSED_BAD_REQUEST);
    /* unacknowledged bytes stay where ngtcp2 may retransmit them from (sendbuf.h) */
    else if (relay_sendbuf_append(&c->out, buf, (size_t)n) != 0)
        relay_conn_close_later(c, RELAY_REFUSED_UNAVAILABLE);
    else
        return;
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_timer_set(&c->timer, 0., 0.);
    ev_timer_start(c->srv->loop, &c->timer);
}

/* queue_ctrl: |m| at |c|'s protocol version; the stack copy is wiped (a PUNCH_START's key). */
static void queue_ctrl(struct rconn *c, const pos_ctrl_msg *m)
{
    uint8_t buf[POS_CTRL_MAX_MSG];
    int n = pos_ctrl_encode_version(m, c->version, buf, sizeof(buf));

    if (n < 0) {
        pos_log_error("cannot encode %s: error %d", pos_ctrl_type_name(m->type), n);
        return;
    }
    queue_bytes(c, buf, n);
    sodium_memzero(buf, (size_t)n);
}

static int64_t now_ms(const relay_server *s);

void relay_ctrl_queue(struct rconn *c, const pos_ctrl_msg *m)
{
    queue_ctrl(c, m);
}

static void on_token_expiry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rconn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->state != ACTIVE)
        return;
    pos_log_info("closing client %s: token expired", c->peer_id);
    relay_ctrl_refuse(c, RELAY_REFUSED_EXPIRED); /* closes its circuits too, like a revocation */
}

/*
 * watch_expiry: a token that expires closes its live connections then (one
 * timer per connection, no Redis call), with the same code as a refusal.
 */
static void watch_expiry(struct rconn *c, const relay_limits *lim)
{
    if (!lim || lim->expires_at <= 0)
        return;
    double after = (double)lim->expires_at - ev_time();
    ev_timer_init(&c->expiry, on_token_expiry, after > 0 ? after : 0., 0.);
    c->expiry.data = c;
    ev_timer_start(c->srv->loop, &c->expiry);
}

/* rtt_ms: the smoothed RTT QUIC measures on |c|, in whole ms rounded up (punch timing). */
static uint32_t rtt_ms(const struct rconn *c)
{
    ngtcp2_conn_stat cs;
    ngtcp2_conn_get_conn_stat(c->qc, &cs);
    uint64_t ms = (cs.smoothed_rtt + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

static void accept_client(struct rconn *c, const relay_limits *lim, const char *token_id)
{
    relay_server *s = c->srv;
    pos_ctrl_msg m;
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->qc);

    /* first, so that every way out below gives the connection-cap slot back (relay_conn_free) */
    snprintf(c->token_id, sizeof(c->token_id), "%s", token_id ? token_id : "");
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_WELCOME;
    if (pos_addr_format((const struct sockaddr *)p->remote.addr, m.observed, sizeof(m.observed)) !=
            0 ||
        p->remote.addrlen > sizeof(c->cur)) {
        relay_conn_close_app(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    memcpy(&c->cur, p->remote.addr, p->remote.addrlen);
    if (lim) {
        c->lim = *lim;
        c->has_lim = 1;
    }
    m.bytes_per_sec = lim ? lim->bytes_per_sec : 0;
    m.burst = lim ? lim->burst_bytes : 0;
    m.max_conns = lim ? lim->max_conns : 0;
    m.expires_at = lim && lim->expires_at > 0 ? (uint64_t)lim->expires_at : 0;
    m.idle_timeout_s = s->cfg->idle_timeout_s;
    snprintf(m.relay_id, sizeof(m.relay_id), "%s", s->cfg->id);
    if (lim && token_id && s->svc)
        c->budget = relay_budget_acquire(s->svc, token_id, lim); /* NULL: uncounted, unlimited */
    c->bc = relay_broker_join(s->broker, c, c->peer_id, c->home, (const struct sockaddr *)&c->cur,
                              &c->local, c->budget);
    if (!c->bc) {
        relay_conn_close_app(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    relay_broker_set_version(c->bc, c->version);
    relay_broker_set_nat(c->bc, c->nat);
    relay_broker_set_rtt(c->bc, rtt_ms(c));
    c->state = ACTIVE;
    c->counted_active = 1;
    s->pending--;
    relay_conn_pending_addr_give(c);
    s->st.conns_active++;
    s->wst[c->worker].conns++;
    s->wst[c->worker].accepted++;
    s->st.auth_ok++;
    queue_ctrl(c, &m); /* WELCOME answers HELLO on stream 0, which stays open */
    watch_expiry(c, lim);
    if (c->home) {          /* a measuring or dialing connection never takes the peer's presence */
        relay_park_home(c); /* its record, if it had parked, ends: it is back */
        relay_presence_add(s->svc, c->peer_id);
        c->awake = 1;
        s->st.awake++;
        relay_broker_woken(s->broker, c->bc, now_ms(s)); /* CONNECTs waiting for its wake */
    }
    pos_log_debug("client %s accepted from %s", c->peer_id, m.observed);
    relay_conn_write(c);
}

void relay_ctrl_accept(struct rconn *c, const relay_limits *lim, const char *token_id)
{
    accept_client(c, lim, token_id);
}

void relay_ctrl_refuse(struct rconn *c, enum relay_refusal why)
{
    relay_server *s = c->srv;
    unsigned idx = (unsigned)why - 0x100;
    if (idx < sizeof(s->st.refused) / sizeof(s->st.refused[0]))
        s->st.refused[idx]++;
    pos_log_debug("client %s refused: %s", c->peer_id[0] ? c->peer_id : "(handshaking)",
                  relay_refusal_reason(why));
    relay_conn_close_app(c, why);
}

static void on_auth_verdict(void *arg, enum relay_refusal verdict, const relay_limits *limits,
                            const char *token_id)
{
    struct rconn *c = arg;
    c->check = 0;
    if (c->state != AUTH_CHECK) {
        /* closed meanwhile (HELLO timeout, shutdown): give back the counted slot */
        if (verdict == RELAY_OK && token_id)
            relay_auth_release(c->srv->svc, token_id);
        return;
    }
    if (verdict == RELAY_OK)
        accept_client(c, limits, token_id);
    else
        relay_ctrl_refuse(c, verdict);
}

static void handle_hello(struct rconn *c, pos_ctrl_msg *m)
{
    relay_server *s = c->srv;
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->qc);
    uint64_t h;

    c->state = AUTH_CHECK;
    c->local = m->addrs; /* told to peers in INCOMING and CIRCUIT */
    c->home = !(m->hello_flags & POS_CTRL_HELLO_NOT_HOME);
    c->nat = (m->hello_flags & POS_CTRL_HELLO_NAT_VARIES) ? POS_CTRL_NAT_VARIES
             : (m->hello_flags & POS_CTRL_HELLO_NAT_EIM)  ? POS_CTRL_NAT_EIM
                                                          : POS_CTRL_NAT_UNKNOWN;
    if (relay_park_resume(c, m->token, m->token_len)) { /* back from parking: no Redis */
        pos_ctrl_msg_wipe(m);
        return;
    }
    h = relay_auth_check(s->svc, m->token, m->token_len, (const struct sockaddr *)p->remote.addr,
                         c->peer_id, on_auth_verdict, c);
    pos_ctrl_msg_wipe(m);
    if (h == 0) {
        relay_ctrl_refuse(c, RELAY_REFUSED_UNAVAILABLE); /* could not start the check */
        return;
    }
    c->check = h; /* the verdict comes from the loop (on_auth_verdict) */
}

/* ---- circuits: the broker's outputs (broker.h) ---- */

static int is_live(const struct rconn *c)
{
    return c && c->state == ACTIVE && !c->close_code;
}

static int64_t now_ms(const relay_server *s)
{
    return (int64_t)(relay_now(s) / 1000000);
}

/* broker_send queues |m| for |conn|; broker_flush writes it out once the broker is done. */
static void broker_send(void *arg, void *conn, const pos_ctrl_msg *m)
{
    relay_server *s = arg;
    struct rconn *c = conn;
    if (!is_live(c))
        return;
    queue_ctrl(c, m);
    if (!c->dirty) {
        c->dirty = 1;
        c->dirty_next = s->dirty;
        s->dirty = c;
    }
}

static void broker_flush(void *arg)
{
    relay_server *s = arg;
    while (s->dirty) {
        struct rconn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty = 0;
        relay_conn_write(c); /* may end |c| (relay_ctrl_end): the broker is settled now */
    }
}

static void on_presence(void *arg, int status, const relay_presence_found *f)
{
    relay_broker_lookup_done(arg, status, f);
}

static uint64_t broker_lookup(void *arg, const char *peer_id, relay_broker_req *q)
{
    relay_server *s = arg;
    return s->svc ? relay_presence_lookup(s->svc, peer_id, on_presence, q) : 0;
}

static void broker_lookup_cancel(void *arg, uint64_t handle)
{
    relay_server *s = arg;
    if (s->svc)
        relay_presence_cancel(s->svc, handle);
}

static void broker_circuit_opened(void *arg, relay_budget *b0, relay_budget *b1)
{
    relay_server *s = arg;
    relay_usage_circuit_open(s->svc, b0, b1);
}

static void broker_circuit_closed(void *arg, const relay_circuit_info *info)
{
    relay_server *s = arg;
    relay_usage_circuit_close(s->svc, info->budget[0], info->budget[1]);
}

static void broker_wake(void *arg, int64_t at_ms)
{
    relay_server *s = arg;
    int64_t now = now_ms(s);
    ev_timer_stop(s->loop, &s->broker_timer);
    if (at_ms < 0)
        return;
    ev_timer_set(&s->broker_timer, at_ms > now ? (double)(at_ms - now) / 1000.0 : 0., 0.);
    ev_timer_start(s->loop, &s->broker_timer);
}

static void on_broker_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_server *s = w->data;
    (void)loop;
    (void)revents;
    relay_broker_expire(s->broker, now_ms(s));
}

static const relay_broker_ops broker_ops_proto = {
    broker_send,           broker_flush,          broker_lookup, broker_lookup_cancel,
    broker_circuit_opened, broker_circuit_closed, broker_wake,   NULL,
    relay_park_wake_peer,  relay_park_unwait_peer};

/*
 * relay_ctrl_end: the control connection is over (closing, draining or freed):
 * its circuits close and their other sides are told, its requests end, and
 * it is no longer present here. Runs once.
 */
void relay_ctrl_end(struct rconn *c)
{
    relay_server *s = c->srv;
    if (c->ended)
        return;
    c->ended = 1;
    if (c->bc) {
        relay_broker_client *bc = c->bc;
        c->bc = NULL;
        relay_broker_leave(s->broker, bc, now_ms(s));
    }
    if (c->awake) {
        c->awake = 0;
        s->st.awake--;
    }
    /* a parked connection's presence is its record's now */
    if (c->counted_active && c->home && !c->parked && s->svc && c->peer_id[0])
        relay_presence_remove(s->svc, c->peer_id);
}

/* ---- the client's streams ---- */

/* handle_request: a message on the client's request stream (ACTIVE only). */
static void handle_request(struct rconn *c, pos_ctrl_msg *m)
{
    if (c->parked) { /* after PARKED: the client asks again once it reconnects */
        pos_ctrl_msg_wipe(m);
        return;
    }
    if (m->type == POS_CTRL_PARK) {
        relay_ctrl_park(c, m);
        return;
    }
    if (c->bc) /* fresh for the PUNCH_START this may send (an ACCEPT, a PUNCH_REQUEST) */
        relay_broker_set_rtt(c->bc, rtt_ms(c));
    if (!c->bc || relay_broker_request(c->srv->broker, c->bc, m, now_ms(c->srv)) != 0)
        relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
    pos_ctrl_msg_wipe(m);
}

static void handle_ctrl_msg(struct rconn *c, pos_ctrl_msg *m)
{
    if (c->state == HELLO_WAIT && m->type == POS_CTRL_HELLO) {
        handle_hello(c, m);
        return;
    }
    /* stream 0 carries HELLO only; requests come on the client's request stream */
    pos_ctrl_msg_wipe(m);
    relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
}

/* request_stream_data: bytes of the client's request stream (one, opened after WELCOME). */
static void request_stream_data(struct rconn *c, int64_t stream_id, const uint8_t *data,
                                size_t datalen)
{
    pos_ctrl_msg m;
    int rv;
    if (c->state != ACTIVE || (c->req_stream >= 0 && c->req_stream != stream_id) ||
        (stream_id & 3) != 0) {
        relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    c->req_stream = stream_id;
    if (pos_ctrl_reader_feed(&c->rd_req, data, datalen) != 0) {
        relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    while (c->state == ACTIVE && !c->close_code) {
        rv = pos_ctrl_reader_next_version(&c->rd_req, c->version, &m);
        if (rv == 0)
            break;
        if (rv < 0) {
            relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
            break;
        }
        handle_request(c, &m);
    }
}

int relay_ctrl_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                                const uint8_t *data, size_t datalen, void *user_data,
                                void *stream_user_data)
{
    struct rconn *c = user_data;
    pos_ctrl_msg m;
    int rv;
    (void)flags;
    (void)offset;
    (void)stream_user_data;

    ngtcp2_conn_extend_max_stream_offset(qc, stream_id, datalen);
    ngtcp2_conn_extend_max_offset(qc, datalen);
    if (c->state == CLOSING || c->state == DRAINING || c->close_code)
        return 0;
    if (stream_id != 0) {
        request_stream_data(c, stream_id, data, datalen);
        return 0;
    }
    if (pos_ctrl_reader_feed(&c->rd, data, datalen) != 0) {
        relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return 0;
    }
    while ((c->state == HELLO_WAIT || c->state == ACTIVE) && !c->close_code) {
        rv = pos_ctrl_reader_next_version(&c->rd, c->version, &m);
        if (rv == 0)
            break;
        if (rv < 0) {
            relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST);
            break;
        }
        handle_ctrl_msg(c, &m);
    }
    return 0;
}

int relay_ctrl_broker_new(relay_server *s)
{
    relay_broker_limits lim = {s->cfg->max_circuits_per_conn,
                               s->cfg->max_circuits_per_token,
                               MAX_PENDING_PER_CONN,
                               MAX_PENDING_TOTAL,
                               INCOMING_TIMEOUT_MS,
                               (int64_t)s->cfg->park_keepalive_s * 1000 + RELAY_PARK_WAIT_SLACK_MS};
    relay_broker_ops ops = broker_ops_proto;
    ops.arg = s;
    s->broker = relay_broker_new(s->circuits, &lim, &ops);
    if (!s->broker)
        return -1;
    relay_broker_set_punch(s->broker, s->cfg->punch, s->cfg->punch_min_interval_ms);
    ev_timer_init(&s->broker_timer, on_broker_timer, 0., 0.);
    s->broker_timer.data = s;
    return 0;
}
