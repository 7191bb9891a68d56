/*
 * The relay's QUIC server (see quic_server.h): routing by connection id,
 * the version filter, Retry under load, the ngtcp2 server connections and
 * the control protocol. No socket calls: datagrams come in through
 * relay_server_input and leave through the relay_io seam (server_udp.c
 * holds the sockets).
 *
 * A connection (struct rconn) goes through these states:
 *   RATE_CHECK  first Initial kept aside while Redis rates the address
 *   HANDSHAKE   ngtcp2 connection exists, TLS running
 *   HELLO_WAIT  handshake done, peer id known, waiting for HELLO
 *   AUTH_CHECK  HELLO received, token being checked
 *   ACTIVE      WELCOME sent, client counted and present
 *   CLOSING     CONNECTION_CLOSE sent; resent on input, freed after 3 PTO
 *   DRAINING    peer closed; freed after 3 PTO
 * Redis answers come back through callbacks from the loop, never inside
 * the call that asked (services.h promises it).
 */
#include "quic_server.h"

#include <malloc.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "ctrl.h"
#include "circuit.h"
#include "forward.h"
#include "log.h"
#include "quic_common.h"
#include "pending_addr.h"
#include "quic_version.h"
#include "secret.h"
#include "sendbuf.h"
#include "server_int.h"
#include "tls.h"

#define SCID_LEN 16
#define RETRY_TOKEN_TIMEOUT (10 * NGTCP2_SECONDS)
#define RATE_CHECK_TIMEOUT_S 5.0
#define HELLO_TIMEOUT_NS (10 * NGTCP2_SECONDS) /* from the first packet to WELCOME */
#define INCOMING_TIMEOUT_MS 10000              /* a target that does not answer INCOMING */
#define MAX_PENDING_PER_CONN 16                /* CONNECTs in flight per client */
#define MAX_PENDING_TOTAL 4096                 /* CONNECTs in flight per relay */
#define MAX_OUT_PENDING (64 * 1024) /* control bytes queued to a client not reading them */

enum rstate { RATE_CHECK, HANDSHAKE, HELLO_WAIT, AUTH_CHECK, ACTIVE, CLOSING, DRAINING };

struct rconn {
    const pos_quic_cid_ops *cid_ops; /* first: ngtcp2's user_data (quic_common.h) */
    relay_server *srv;
    struct rconn *prev, *next; /* all connections */
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    ev_timer timer;
    struct sockaddr_storage remote; /* address of the first packet (rate check) */
    int sock;                       /* index into srv->socks */
    uint8_t state;
    uint8_t retried;        /* address validated by a Retry token */
    uint8_t addr_counted;   /* counted in srv->pending_addrs (retried, before ACTIVE) */
    uint8_t counted_active; /* counted in conns_active (else in pending) */
    uint8_t in_read;        /* inside ngtcp2_conn_read_pkt: no writes, no closes now */
    uint16_t close_code;    /* refusal decided inside read_pkt, sent after it returns */
    uint8_t creating;       /* inside ngtcp2_conn_server_new (see pos_quic_rand) */
    uint64_t check;         /* pending Redis check handle, 0 none */
    ngtcp2_cid odcid;       /* the client's first DCID, routed until the connection ends */
    ngtcp2_tstamp created;
    ngtcp2_cid retry_odcid;
    uint8_t *first_pkt; /* RATE_CHECK: the Initial kept aside */
    size_t first_len;
    pos_ctrl_reader rd;
    relay_sendbuf out;  /* control messages on stream 0, kept until acknowledged */
    uint8_t *close_pkt; /* CLOSING: the packet resent on input */
    size_t close_len;
    char token_id[POS_SECRET_HASH_HEXLEN]; /* ACTIVE: the token's hash */
    char peer_id[POS_PEER_ID_STRLEN];
    /* circuits (ACTIVE) */
    relay_broker_client *bc;     /* in the broker from WELCOME until conn_end */
    relay_budget *budget;        /* the token's, from relay_budget_acquire */
    struct sockaddr_storage cur; /* current address of the control connection */
    pos_ctrl_addrs local;        /* the client's own addresses (HELLO) */
    pos_ctrl_reader rd_req;      /* the client's request stream */
    int64_t req_stream;          /* -1 until the client opens it */
    struct rconn *dirty_next;    /* on srv->dirty: broker messages to write */
    uint8_t dirty;
    uint8_t ended; /* conn_end ran: circuits closed, presence dropped */
    ev_timer expiry;             /* ACTIVE, token with an expiry: closes the connection then */
    uint8_t home;                /* HELLO without NOT_HOME: presence and INCOMING are here */
};

/* ---- connection ids: the server's map, through quic_common's callbacks ---- */

static int cid_add(void *conn, const uint8_t *id, size_t len)
{
    struct rconn *c = conn;
    return pos_cid_map_add(c->srv->cids, id, len, c);
}

static void cid_remove(void *conn, const uint8_t *id, size_t len)
{
    struct rconn *c = conn;
    pos_cid_map_remove(c->srv->cids, id, len, c);
}

static int cid_reset_token(void *conn, uint8_t *token, const ngtcp2_cid *cid)
{
    struct rconn *c = conn;
    return ngtcp2_crypto_generate_stateless_reset_token(token, c->srv->reset_secret,
                                                        sizeof(c->srv->reset_secret), cid);
}

static const pos_quic_cid_ops relay_cid_ops = {SCID_LEN, cid_add, cid_remove, cid_reset_token};

/* ---- sending ---- */

static void send_to(relay_server *s, int sock, const uint8_t *data, size_t len,
                    const struct sockaddr *to, socklen_t tolen)
{
    if (s->io.send(s->io.arg, sock, data, len, to, tolen) != 0) {
        s->st.packets_dropped++; /* dropped like any lost packet; QUIC retransmits */
        return;
    }
    s->st.packets_out++;
}

static ngtcp2_tstamp srv_now(const relay_server *s)
{
    return s->io.now(s->io.arg);
}

static int sock_for_path(const relay_server *s, const ngtcp2_path *p, int fallback)
{
    for (size_t i = 0; i < s->n_socks; i++)
        if (s->socks[i].local_len == p->local.addrlen &&
            memcmp(&s->socks[i].local, p->local.addr, p->local.addrlen) == 0)
            return (int)i;
    return fallback;
}

/* ---- connection lifetime ---- */

static void conn_end(struct rconn *c);

/* pending_addr_give: |c|'s handshake no longer counts against its address. */
static void pending_addr_give(struct rconn *c)
{
    if (!c->addr_counted)
        return;
    c->addr_counted = 0;
    relay_pending_addrs_give(c->srv->pending_addrs, (const struct sockaddr *)&c->remote);
}

static void conn_free(struct rconn *c)
{
    relay_server *s = c->srv;

    ev_timer_stop(s->loop, &c->timer);
    ev_timer_stop(s->loop, &c->expiry);
    conn_end(c);
    if (c->budget && s->svc)
        relay_budget_release(s->svc, c->budget); /* its circuits are closed (conn_end) */
    c->budget = NULL;
    if (c->check && s->svc)
        relay_auth_cancel(s->svc, c->check);
    if (c->token_id[0] && s->svc)
        relay_auth_release(s->svc, c->token_id);
    if (c->counted_active) {
        s->st.conns_active--;
    } else {
        s->pending--;
    }
    pending_addr_give(c);
    for (struct rconn **pp = &s->dirty; c->dirty && *pp; pp = &(*pp)->dirty_next)
        if (*pp == c) {
            *pp = c->dirty_next; /* not reached in practice: the broker flushes first */
            break;
        }
    pos_cid_map_remove(s->cids, c->odcid.data, c->odcid.datalen, c);
    if (c->qc) {
        pos_quic_drop_cids(c->qc, c);
        ngtcp2_conn_del(c->qc);
    }
    if (c->tls)
        gnutls_deinit(c->tls);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pos_ctrl_reader_wipe(&c->rd);
    pos_ctrl_reader_wipe(&c->rd_req);
    free(c->first_pkt);
    relay_sendbuf_free(&c->out);
    free(c->close_pkt);
    sodium_memzero(c, sizeof(*c));
    free(c);
}

static void conn_arm_timer(struct rconn *c)
{
    ngtcp2_tstamp exp, now;
    double after;

    if (!c->qc)
        return;
    exp = ngtcp2_conn_get_expiry(c->qc);
    now = srv_now(c->srv);
    after = exp <= now ? 0 : (double)(exp - now) / NGTCP2_SECONDS;
    if (c->state == CLOSING || c->state == DRAINING)
        after = 3.0 * (double)ngtcp2_conn_get_pto(c->qc) / NGTCP2_SECONDS;
    else if (c->state < ACTIVE) {
        /* keep-alives alone must not hold an unauthenticated connection open */
        ngtcp2_tstamp limit = c->created + HELLO_TIMEOUT_NS;
        double left = limit <= now ? 0 : (double)(limit - now) / NGTCP2_SECONDS;
        if (left < after)
            after = left;
    }
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.);
    ev_timer_start(c->srv->loop, &c->timer);
}

static void conn_enter_closing(struct rconn *c, const ngtcp2_connection_close_error *ccerr)
{
    relay_server *s = c->srv;
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n;

    if (c->state == CLOSING || c->state == DRAINING)
        return;
    conn_end(c); /* circuits end with the connection, not 3 PTO later */
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, s->txbuf, sizeof(s->txbuf), ccerr,
                                           srv_now(s));
    if (n <= 0) {
        c->state = DRAINING; /* nothing to send: just wait out the period */
        conn_arm_timer(c);
        return;
    }
    c->close_pkt = malloc((size_t)n);
    if (c->close_pkt) {
        memcpy(c->close_pkt, s->txbuf, (size_t)n);
        c->close_len = (size_t)n;
    }
    send_to(s, sock_for_path(s, &ps.path, c->sock), s->txbuf, (size_t)n,
            (struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen);
    c->state = CLOSING;
    conn_arm_timer(c);
}

/*
 * close_later: |c| closes with |code| once it is safe (after read_pkt
 * returns, or from its timer); from now on the broker offers it to no one.
 */
static void close_later(struct rconn *c, enum relay_refusal code)
{
    if (!c->close_code)
        c->close_code = (uint16_t)code;
    if (c->bc)
        relay_broker_closing(c->bc);
}

/* conn_close_app closes with an application error code and reason phrase the client shows. */
static void conn_close_app(struct rconn *c, enum relay_refusal code)
{
    ngtcp2_connection_close_error ccerr;
    const char *why = relay_refusal_reason(code);

    if (!c->qc) {
        conn_free(c);
        return;
    }
    if (c->in_read) {
        close_later(c, code); /* ngtcp2 is not re-entrant: once read_pkt has returned */
        return;
    }
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, (uint64_t)code,
                                                        (const uint8_t *)why, strlen(why));
    conn_enter_closing(c, &ccerr);
}

static void conn_close_liberr(struct rconn *c, int liberr)
{
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &ccerr, ngtcp2_conn_get_tls_alert(c->qc), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr, NULL, 0);
    conn_enter_closing(c, &ccerr);
}

/* conn_write sends what ngtcp2 has: handshake, acks, answer bytes. Returns 0. */
static int conn_write(struct rconn *c)
{
    relay_server *s = c->srv;
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = srv_now(s);

    if (c->state == CLOSING || c->state == DRAINING || c->in_read)
        return 0;
    ngtcp2_path_storage_zero(&ps);
    for (int i = 0; i < 64; i++) {
        ngtcp2_ssize wlen = 0, n;
        int64_t sid = -1;
        struct iovec iov[8];
        ngtcp2_vec v[8];
        /* stream 0 stays open: WELCOME, then the relay's circuit messages */
        size_t nv = relay_sendbuf_unsent(&c->out, iov, 8);
        uint32_t wflags = NGTCP2_WRITE_STREAM_FLAG_NONE;
        for (size_t k = 0; k < nv; k++) {
            v[k].base = iov[k].iov_base;
            v[k].len = iov[k].iov_len;
        }
        if (nv > 0)
            sid = 0;
        n = ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, s->txbuf, sizeof(s->txbuf), &wlen,
                                      wflags, sid, v, nv, ts);
        if (n < 0) {
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
                n == NGTCP2_ERR_STREAM_NOT_FOUND) {
                /* cannot write the stream now: flush other frames only */
                n = ngtcp2_conn_write_pkt(c->qc, &ps.path, &pi, s->txbuf, sizeof(s->txbuf), ts);
                if (n < 0) {
                    conn_close_liberr(c, (int)n);
                    return 0;
                }
            } else {
                conn_close_liberr(c, (int)n);
                return 0;
            }
        }
        if (wlen > 0)
            relay_sendbuf_sent(&c->out, (size_t)wlen);
        if (n == 0)
            break;
        send_to(s, sock_for_path(s, &ps.path, c->sock), s->txbuf, (size_t)n,
                (struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen);
    }
    conn_arm_timer(c);
    return 0;
}

static void refuse(struct rconn *c, enum relay_refusal why);

static void on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rconn *c = w->data;
    int rv;
    (void)loop;
    (void)revents;

    if (c->state == CLOSING || c->state == DRAINING || c->state == RATE_CHECK) {
        conn_free(c);
        return;
    }
    if (c->close_code && !c->in_read) {
        enum relay_refusal code = (enum relay_refusal)c->close_code;
        c->close_code = 0;
        conn_close_app(c, code);
        return;
    }
    if (c->state < ACTIVE && srv_now(c->srv) >= c->created + HELLO_TIMEOUT_NS) {
        if (c->state == HANDSHAKE) {
            c->srv->st.handshakes_failed++;
            conn_free(c);
        } else {
            refuse(c, RELAY_REFUSED_BAD_REQUEST); /* authenticated too slowly */
        }
        return;
    }
    rv = ngtcp2_conn_handle_expiry(c->qc, srv_now(c->srv));
    if (rv != 0) {
        /* idle timeout (NGTCP2_ERR_IDLE_CLOSE) or handshake timeout: drop silently */
        if (c->state < HELLO_WAIT)
            c->srv->st.handshakes_failed++;
        conn_free(c);
        return;
    }
    conn_write(c);
}

/* ---- control messages (request streams) ---- */

static void queue_ctrl(struct rconn *c, const pos_ctrl_msg *m)
{
    uint8_t buf[POS_CTRL_MAX_MSG];
    int n = pos_ctrl_encode(m, buf, sizeof(buf));

    if (n < 0) {
        pos_log_error("cannot encode %s: error %d", pos_ctrl_type_name(m->type), n);
        return;
    }
    if (c->state == CLOSING || c->state == DRAINING)
        return;
    /*
     * A client that does not read its stream, or no memory: closed from its
     * timer, not here, as this runs inside the broker's calls.
     */
    if (relay_sendbuf_pending(&c->out) + (size_t)n > MAX_OUT_PENDING)
        close_later(c, RELAY_REFUSED_BAD_REQUEST);
    /* unacknowledged bytes stay where ngtcp2 may retransmit them from (sendbuf.h) */
    else if (relay_sendbuf_append(&c->out, buf, (size_t)n) != 0)
        close_later(c, RELAY_REFUSED_UNAVAILABLE);
    else
        return;
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_timer_set(&c->timer, 0., 0.);
    ev_timer_start(c->srv->loop, &c->timer);
}

static void on_token_expiry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rconn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->state != ACTIVE)
        return;
    pos_log_info("closing client %s: token expired", c->peer_id);
    refuse(c, RELAY_REFUSED_EXPIRED); /* closes its circuits too, like a revocation */
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

static void accept_client(struct rconn *c, const relay_limits *lim, const char *token_id)
{
    relay_server *s = c->srv;
    pos_ctrl_msg m;
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->qc);

    /* first, so that every way out below gives the connection-cap slot back (conn_free) */
    snprintf(c->token_id, sizeof(c->token_id), "%s", token_id ? token_id : "");
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_WELCOME;
    if (pos_addr_format((const struct sockaddr *)p->remote.addr, m.observed, sizeof(m.observed)) !=
            0 ||
        p->remote.addrlen > sizeof(c->cur)) {
        conn_close_app(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    memcpy(&c->cur, p->remote.addr, p->remote.addrlen);
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
        conn_close_app(c, RELAY_REFUSED_UNAVAILABLE);
        return;
    }
    c->state = ACTIVE;
    c->counted_active = 1;
    s->pending--;
    pending_addr_give(c);
    s->st.conns_active++;
    s->st.auth_ok++;
    queue_ctrl(c, &m); /* WELCOME answers HELLO on stream 0, which stays open */
    watch_expiry(c, lim);
    if (c->home) /* a measuring or dialing connection never takes the peer's presence */
        relay_presence_add(s->svc, c->peer_id);
    pos_log_debug("client %s accepted from %s", c->peer_id, m.observed);
    conn_write(c);
}

static void refuse(struct rconn *c, enum relay_refusal why)
{
    relay_server *s = c->srv;
    unsigned idx = (unsigned)why - 0x100;
    if (idx < sizeof(s->st.refused) / sizeof(s->st.refused[0]))
        s->st.refused[idx]++;
    pos_log_debug("client %s refused: %s", c->peer_id[0] ? c->peer_id : "(handshaking)",
                  relay_refusal_reason(why));
    conn_close_app(c, why);
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
        refuse(c, verdict);
}

static void handle_hello(struct rconn *c, pos_ctrl_msg *m)
{
    relay_server *s = c->srv;
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->qc);
    uint64_t h;

    c->state = AUTH_CHECK;
    c->local = m->addrs; /* told to peers in INCOMING and CIRCUIT */
    c->home = !(m->hello_flags & POS_CTRL_HELLO_NOT_HOME);
    h = relay_auth_check(s->svc, m->token, m->token_len, (const struct sockaddr *)p->remote.addr,
                         c->peer_id, on_auth_verdict, c);
    pos_ctrl_msg_wipe(m);
    if (h == 0) {
        refuse(c, RELAY_REFUSED_UNAVAILABLE); /* could not start the check */
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
    return (int64_t)(srv_now(s) / 1000000);
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
        conn_write(c); /* may end |c| (conn_end): the broker is settled now */
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
    broker_circuit_opened, broker_circuit_closed, broker_wake,   NULL};

/*
 * conn_end: the control connection is over (closing, draining or freed):
 * its circuits close and their other sides are told, its requests end, and
 * it is no longer present here. Runs once.
 */
static void conn_end(struct rconn *c)
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
    if (c->counted_active && c->home && s->svc && c->peer_id[0])
        relay_presence_remove(s->svc, c->peer_id);
}

/* handle_request: a message on the client's request stream (ACTIVE only). */
static void handle_request(struct rconn *c, pos_ctrl_msg *m)
{
    if (!c->bc || relay_broker_request(c->srv->broker, c->bc, m, now_ms(c->srv)) != 0)
        refuse(c, RELAY_REFUSED_BAD_REQUEST);
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
    refuse(c, RELAY_REFUSED_BAD_REQUEST);
}

/* ---- ngtcp2 callbacks ---- */

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    struct rconn *c = user_data;
    (void)qc;
    if (!c->pin.has_peer)
        return NGTCP2_ERR_CALLBACK_FAILURE; /* cannot happen: the server requires a cert */
    pos_peer_id_format(c->pin.peer_key, c->peer_id);
    c->state = HELLO_WAIT;
    c->srv->st.handshakes_ok++;
    return 0;
}

/* request_stream_data: bytes of the client's request stream (one, opened after WELCOME). */
static void request_stream_data(struct rconn *c, int64_t stream_id, const uint8_t *data,
                                size_t datalen)
{
    pos_ctrl_msg m;
    int rv;
    if (c->state != ACTIVE || (c->req_stream >= 0 && c->req_stream != stream_id) ||
        (stream_id & 3) != 0) {
        refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    c->req_stream = stream_id;
    if (pos_ctrl_reader_feed(&c->rd_req, data, datalen) != 0) {
        refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return;
    }
    while (c->state == ACTIVE && !c->close_code) {
        rv = pos_ctrl_reader_next(&c->rd_req, &m);
        if (rv == 0)
            break;
        if (rv < 0) {
            refuse(c, RELAY_REFUSED_BAD_REQUEST);
            break;
        }
        handle_request(c, &m);
    }
}

static int cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
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
        refuse(c, RELAY_REFUSED_BAD_REQUEST);
        return 0;
    }
    while ((c->state == HELLO_WAIT || c->state == ACTIVE) && !c->close_code) {
        rv = pos_ctrl_reader_next(&c->rd, &m);
        if (rv == 0)
            break;
        if (rv < 0) {
            refuse(c, RELAY_REFUSED_BAD_REQUEST);
            break;
        }
        handle_ctrl_msg(c, &m);
    }
    return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *qc, int64_t stream_id, uint64_t offset,
                                       uint64_t datalen, void *user_data, void *stream_user_data)
{
    struct rconn *c = user_data;
    (void)qc;
    (void)offset;
    (void)stream_user_data;
    /* an idle connection keeps no stream buffer: acknowledged blocks are freed */
    if (stream_id == 0)
        relay_sendbuf_acked(&c->out, datalen);
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    /* ref->user_data points at the connection's pin (see tls.h) */
    struct rconn *c = (struct rconn *)((char *)ref->user_data - offsetof(struct rconn, pin));
    return c->qc;
}

static void init_callbacks(ngtcp2_callbacks *cb)
{
    /* pos_quic_rand never greases the QUIC bit (a clear fixed bit on this
     * port means a relay data frame); relay_server_input also routes a packet
     * whose fixed bit is clear by connection id first, for peers that grease */
    pos_quic_callbacks_init(cb, 1);
    pos_quic_callbacks_cids(cb);
    cb->handshake_completed = cb_handshake_completed;
    cb->recv_stream_data = cb_recv_stream_data;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
}

/* ---- accepting ---- */

/* make_quic_conn creates the ngtcp2 server connection for |c| from the Initial |hd|. */
static int make_quic_conn(struct rconn *c, const ngtcp2_pkt_hd *hd)
{
    relay_server *s = c->srv;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid scid;
    ngtcp2_path path;
    struct sock *sk = &s->socks[c->sock];

    pos_quic_settings_init(&settings, &c->creating);
    settings.initial_ts = srv_now(s);
    settings.max_window = 64 * 1024;
    settings.max_stream_window = 16 * 1024;
    if (c->retried) {
        settings.token.base = hd->token.base;
        settings.token.len = hd->token.len;
    }
    ngtcp2_transport_params_default(&params);
    /*
     * Requests are streams: HELLO/WELCOME on stream 0, later requests each on
     * a new stream (ngtcp2 returns the credit as streams close), so an idle
     * client holds no stream state.
     */
    params.initial_max_streams_bidi = 4;
    params.initial_max_streams_uni = 0;
    params.initial_max_stream_data_bidi_remote = 8 * 1024;
    params.initial_max_data = 16 * 1024;
    params.max_idle_timeout = (uint64_t)s->cfg->idle_timeout_s * NGTCP2_SECONDS;
    params.active_connection_id_limit = 2;
    params.stateless_reset_token_present = 1;
    if (c->retried) {
        params.original_dcid = c->retry_odcid;
        params.retry_scid = hd->dcid;
        params.retry_scid_present = 1;
    } else {
        params.original_dcid = hd->dcid;
    }
    scid.datalen = SCID_LEN;
    randombytes_buf(scid.data, SCID_LEN);
    if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token, s->reset_secret,
                                                     sizeof(s->reset_secret), &scid) != 0)
        return -1;
    path.local.addr = (ngtcp2_sockaddr *)&sk->local;
    path.local.addrlen = sk->local_len;
    path.remote.addr = (ngtcp2_sockaddr *)&c->remote;
    path.remote.addrlen = pos_addr_len(&c->remote);
    path.user_data = NULL;
    c->creating = 1;
    int rv = ngtcp2_conn_server_new(&c->qc, &hd->scid, &scid, &path, hd->version, &s->cbs,
                                    &settings, &params, NULL, c);
    c->creating = 0;
    if (rv != 0)
        return -1;
    if (pos_tls_session_new(&c->tls, s->creds, 1, POS_CTRL_ALPN) != 0)
        return -1;
    if (ngtcp2_crypto_gnutls_configure_server_session(c->tls) != 0)
        return -1;
    pos_quic_tls_require_transport_params(c->tls);
    c->ref.get_conn = get_conn;
    c->ref.user_data = &c->pin;
    gnutls_session_set_ptr(c->tls, &c->ref);
    ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
    if (cid_add(c, scid.data, scid.datalen) != 0)
        return -1;
    return 0;
}

/*
 * drop_tls frees the GnuTLS session once the handshake is complete: packet
 * protection keys live in ngtcp2 (key updates derive from them), no session
 * tickets are sent, so an idle client keeps no TLS state (a few KiB each).
 * Post-handshake CRYPTO data is then ignored (pos_quic_callbacks_cids).
 */
static void drop_tls(struct rconn *c)
{
    ngtcp2_conn_set_tls_native_handle(c->qc, NULL);
    gnutls_deinit(c->tls);
    c->tls = NULL;
}

/*
 * follow_path: ngtcp2 moved the connection to a new remote address (NAT
 * rebinding or migration, validated by QUIC): the circuits this client owns
 * follow, and frames from the old address are dropped from now on.
 */
static void follow_path(struct rconn *c)
{
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->qc);
    socklen_t len = (socklen_t)p->remote.addrlen;
    if (len > sizeof(c->cur) ||
        (len == pos_addr_len(&c->cur) && memcmp(&c->cur, p->remote.addr, len) == 0))
        return;
    memset(&c->cur, 0, sizeof(c->cur));
    memcpy(&c->cur, p->remote.addr, len);
    if (c->bc)
        relay_broker_moved(c->srv->broker, c->bc, (const struct sockaddr *)&c->cur);
    pos_log_debug("client %s moved", c->peer_id);
}

/* conn_input feeds one datagram to an existing connection. */
static void conn_input(struct rconn *c, int sock, const uint8_t *data, size_t len,
                       const struct sockaddr *from, socklen_t fromlen)
{
    relay_server *s = c->srv;
    ngtcp2_path path;
    ngtcp2_pkt_info pi = {0};
    int rv;

    if (c->state == RATE_CHECK) {
        s->st.packets_dropped++; /* the client retransmits its Initial */
        return;
    }
    if (c->state == DRAINING)
        return;
    if (c->state == CLOSING) {
        if (c->close_pkt)
            send_to(s, sock, c->close_pkt, c->close_len, from, fromlen);
        return;
    }
    path.local.addr = (ngtcp2_sockaddr *)&s->socks[sock].local;
    path.local.addrlen = s->socks[sock].local_len;
    path.remote.addr = (ngtcp2_sockaddr *)from;
    path.remote.addrlen = fromlen;
    path.user_data = NULL;
    c->sock = sock;
    c->in_read = 1;
    rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, data, len, srv_now(s));
    c->in_read = 0;
    if (rv != 0) {
        if (rv == NGTCP2_ERR_DRAINING) {
            conn_end(c);
            c->state = DRAINING;
            conn_arm_timer(c);
            return;
        }
        if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
            conn_free(c);
            return;
        }
        if (c->state < HELLO_WAIT) {
            s->st.handshakes_failed++;
            pos_log_debug("handshake failed: %s", ngtcp2_strerror(rv));
        }
        conn_close_liberr(c, rv);
        return;
    }
    if (c->close_code) {
        conn_close_app(c, (enum relay_refusal)c->close_code);
        return;
    }
    if (c->tls && c->state >= HELLO_WAIT)
        drop_tls(c);
    if (c->state == ACTIVE)
        follow_path(c);
    conn_write(c);
}

static void on_rate_verdict(void *arg, enum relay_refusal verdict, const relay_limits *limits,
                            const char *token_id);

/* rate_checked continues a connection whose address passed (or failed) the rate check. */
static void rate_checked(struct rconn *c, enum relay_refusal verdict)
{
    relay_server *s = c->srv;
    ngtcp2_pkt_hd hd;
    uint8_t *pkt = c->first_pkt;
    size_t len = c->first_len;

    c->first_pkt = NULL;
    if (verdict != RELAY_OK) {
        /* No crypto spent: a stateless CONNECTION_CLOSE in an Initial packet. */
        const char *why = relay_refusal_reason(verdict);
        if (ngtcp2_accept(&hd, pkt, len) == 0) {
            ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
                s->txbuf, sizeof(s->txbuf), hd.version, &hd.scid, &hd.dcid,
                NGTCP2_CONNECTION_REFUSED, (const uint8_t *)why, strlen(why));
            if (n > 0)
                send_to(s, c->sock, s->txbuf, (size_t)n, (struct sockaddr *)&c->remote,
                        pos_addr_len(&c->remote));
        }
        unsigned idx = (unsigned)verdict - 0x100;
        if (idx < sizeof(s->st.refused) / sizeof(s->st.refused[0]))
            s->st.refused[idx]++;
        free(pkt);
        conn_free(c);
        return;
    }
    if (ngtcp2_accept(&hd, pkt, len) != 0 || make_quic_conn(c, &hd) != 0) {
        free(pkt);
        s->st.handshakes_failed++;
        conn_free(c);
        return;
    }
    c->state = HANDSHAKE;
    conn_input(c, c->sock, pkt, len, (struct sockaddr *)&c->remote, pos_addr_len(&c->remote));
    free(pkt);
}

static void on_rate_verdict(void *arg, enum relay_refusal verdict, const relay_limits *limits,
                            const char *token_id)
{
    struct rconn *c = arg;
    (void)limits;
    (void)token_id;
    c->check = 0;
    rate_checked(c, verdict);
}

static void send_retry(relay_server *s, int sock, const ngtcp2_pkt_hd *hd,
                       const struct sockaddr *from, socklen_t fromlen)
{
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
    ngtcp2_cid scid;
    ngtcp2_ssize tlen, n;

    scid.datalen = SCID_LEN;
    randombytes_buf(scid.data, SCID_LEN);
    tlen = ngtcp2_crypto_generate_retry_token(token, s->retry_secret, sizeof(s->retry_secret),
                                              hd->version, (const ngtcp2_sockaddr *)from, fromlen,
                                              &scid, &hd->dcid, srv_now(s));
    if (tlen < 0)
        return;
    n = ngtcp2_crypto_write_retry(s->txbuf, sizeof(s->txbuf), hd->version, &hd->scid, &scid,
                                  &hd->dcid, token, (size_t)tlen);
    if (n <= 0)
        return;
    s->st.retries_sent++;
    send_to(s, sock, s->txbuf, (size_t)n, from, fromlen);
}

/* new_conn handles an Initial for no known connection id. */
static void new_conn(relay_server *s, int sock, const uint8_t *data, size_t len,
                     const struct sockaddr *from, socklen_t fromlen)
{
    ngtcp2_pkt_hd hd;
    struct rconn *c;
    int retried = 0;
    ngtcp2_cid odcid;

    if (s->going_away || ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
        s->st.packets_dropped++;
        return;
    }
    if (s->pending >= 4 * s->retry_above + 64) {
        /*
         * Overloaded even with Retry: drop the Initial (the client retries
         * after its PTO) so that the loop keeps serving Redis answers and
         * the connections already admitted.
         */
        s->st.packets_dropped++;
        return;
    }
    if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(&odcid, hd.token.base, hd.token.len, s->retry_secret,
                                             sizeof(s->retry_secret), hd.version,
                                             (const ngtcp2_sockaddr *)from, fromlen, &hd.dcid,
                                             RETRY_TOKEN_TIMEOUT, srv_now(s)) != 0) {
            s->st.packets_dropped++;
            return;
        }
        /*
         * A proven address, but a few of them must not hold every pending
         * slot (a flood that answers Retry): bounded per address.
         */
        if (relay_pending_addrs_take(s->pending_addrs, from) != 0) {
            s->st.pending_per_addr_drops++;
            return;
        }
        retried = 1;
    } else if (s->pending >= s->retry_above) {
        /* Under load, make the client prove its address before any state or crypto. */
        send_retry(s, sock, &hd, from, fromlen);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c)
        c->first_pkt = malloc(len);
    if (!c || !c->first_pkt) {
        if (retried)
            relay_pending_addrs_give(s->pending_addrs, from);
        free(c);
        return;
    }
    memcpy(c->first_pkt, data, len);
    c->first_len = len;
    c->cid_ops = &relay_cid_ops;
    c->srv = s;
    c->sock = sock;
    c->state = RATE_CHECK;
    c->retried = (uint8_t)retried;
    c->addr_counted = (uint8_t)retried;
    if (retried)
        c->retry_odcid = odcid;
    memcpy(&c->remote, from, fromlen);
    c->odcid = hd.dcid;
    c->created = srv_now(s);
    c->req_stream = -1;
    ev_timer_init(&c->timer, on_conn_timer, 0., 0.);
    c->timer.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->pending++;
    if (cid_add(c, c->odcid.data, c->odcid.datalen) != 0) {
        conn_free(c);
        return;
    }
    uint64_t h = relay_rate_check_addr(s->svc, from, on_rate_verdict, c);
    if (h == 0) {
        conn_free(c); /* the check could not even start (out of memory) */
    } else {
        c->check = h;
        /* a safety net: the services answer within their own timeout */
        ev_timer_set(&c->timer, RATE_CHECK_TIMEOUT_S, 0.);
        ev_timer_start(s->loop, &c->timer);
    }
}

/*
 * answer_version: 1 when |data| is a long header of another version than
 * ours, answered with Version Negotiation or dropped (never a connection:
 * ngtcp2 would accept draft-29 and v2 and abort later); 0 to route it.
 */
static int answer_version(relay_server *s, int sock, const uint8_t *data, size_t len,
                          const struct sockaddr *from, socklen_t fromlen)
{
    uint8_t r;
    ssize_t n;

    randombytes_buf(&r, 1);
    n = pos_quic_version_answer(s->txbuf, sizeof(s->txbuf), data, len, r);
    if (n == POS_QUIC_VERSION_OK)
        return 0;
    if (n > 0) {
        s->st.version_negotiations++;
        send_to(s, sock, s->txbuf, (size_t)n, from, fromlen);
    } else {
        s->st.packets_dropped++;
    }
    return 1;
}

void relay_server_input(relay_server *s, int sock, const uint8_t *data, size_t len,
                        const struct sockaddr *from, socklen_t fromlen)
{
    ngtcp2_version_cid vc;
    struct rconn *c;
    int rv;

    s->st.packets_in++;
    if (len == 0)
        return;
    if (!(data[0] & 0xc0)) {
        /*
         * Not a frame of a known circuit from its owner (the forwarder handed
         * it back): a short-header packet of a peer that greases the fixed
         * bit, or garbage, dropped and counted.
         */
        if (len > SCID_LEN && (c = pos_cid_map_find(s->cids, data + 1, SCID_LEN)) != NULL) {
            conn_input(c, sock, data, len, from, fromlen);
            return;
        }
        s->st.data_frames_dropped++;
        return;
    }
    if (answer_version(s, sock, data, len, from, fromlen))
        return;
    rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, SCID_LEN);
    if (rv != 0) {
        s->st.packets_dropped++;
        return;
    }
    c = pos_cid_map_find(s->cids, vc.dcid, vc.dcidlen);
    if (c) {
        conn_input(c, sock, data, len, from, fromlen);
        return;
    }
    if (!(data[0] & 0x80)) { /* short header for an unknown connection */
        s->st.packets_dropped++;
        return;
    }
    new_conn(s, sock, data, len, from, fromlen);
}

/* ---- set-up ---- */

relay_server *relay_server_new_io(struct ev_loop *loop, const relay_config *cfg, const relay_io *io,
                                  const struct sockaddr_storage *locals, size_t n_locals, char *err,
                                  size_t errlen)
{
    relay_server *s = calloc(1, sizeof(*s));

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = cfg;
    s->cids = pos_cid_map_new(0);
    if (!s->cids) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    randombytes_buf(s->retry_secret, sizeof(s->retry_secret));
    randombytes_buf(s->reset_secret, sizeof(s->reset_secret));
    s->retry_above = cfg->retry_above;
    s->pending_addrs = relay_pending_addrs_new(cfg->max_pending_per_addr);
    if (!s->pending_addrs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    init_callbacks(&s->cbs);
    s->circuits = relay_circuits_new(cfg->max_circuits, randombytes_random());
    if (!s->circuits) {
        snprintf(err, errlen, "cannot allocate the circuit table (%u circuits, max_circuits)",
                 cfg->max_circuits);
        goto fail;
    }
    relay_broker_limits lim = {cfg->max_circuits_per_conn, cfg->max_circuits_per_token,
                               MAX_PENDING_PER_CONN, MAX_PENDING_TOTAL, INCOMING_TIMEOUT_MS};
    relay_broker_ops ops = broker_ops_proto;
    ops.arg = s;
    s->broker = relay_broker_new(s->circuits, &lim, &ops);
    if (!s->broker) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ev_timer_init(&s->broker_timer, on_broker_timer, 0., 0.);
    s->broker_timer.data = s;
    if (pos_tls_creds_new(&s->creds, &cfg->identity) != 0) {
        snprintf(err, errlen, "cannot make the TLS certificate from the relay's identity");
        goto fail;
    }
    if (io) {
        s->io = *io;
    } else {
        s->io.send = relay_udp_send;
        s->io.now = relay_udp_now;
        s->io.arg = s;
    }
    for (size_t i = 0; i < n_locals && i < MAX_SOCKS; i++) {
        s->socks[i].fd = -1;
        s->socks[i].local = locals[i];
        s->socks[i].local_len = pos_addr_len(&locals[i]);
        s->socks[i].srv = s;
        s->n_socks++;
    }
    return s;
fail:
    relay_server_del(s);
    return NULL;
}

void relay_server_set_services(relay_server *s, relay_services *svc)
{
    s->svc = svc;
    if (!s->fw && s->circuits) {
        s->fw = relay_forwarder_new(s->circuits, RX_BATCH, relay_budget_lease, svc);
        if (s->fw) {
            /*
             * Our clients never grease the QUIC bit (docs/protocol.md), so a
             * failed frame is dropped with its reason counted. For peers that
             * grease, the key quic_fallback hands failed frames to the
             * connection-id lookup instead (then counted as quic_fallback).
             */
            relay_forwarder_set_quic_fallback(s->fw, s->cfg->quic_fallback);
            s->gso = s->cfg->gso;
            if (s->gso)
                relay_forwarder_set_gso(s->fw, RELAY_FORWARD_GSO_MAX_SEGMENTS);
        } else {
            pos_log_error("out of memory for the forwarder: data frames are dropped");
        }
    }
}

void relay_server_revoke(relay_server *s, const char *token_id)
{
    struct rconn *c, *next;
    for (c = s->conns; c; c = next) {
        next = c->next;
        /* closing keeps |c| in the list; freeing happens on its timer */
        if (c->state == ACTIVE && c->token_id[0] && strcmp(c->token_id, token_id) == 0) {
            pos_log_info("closing client %s: token revoked", c->peer_id);
            refuse(c, RELAY_REFUSED_REVOKED);
        }
    }
}

void relay_server_goaway(relay_server *s)
{
    struct rconn *c, *next;
    s->going_away = 1;
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->state == CLOSING || c->state == DRAINING)
            continue;
        if (c->state == RATE_CHECK || c->state == HANDSHAKE)
            conn_free(c); /* nothing to tell a client that has no session yet */
        else
            conn_close_app(c, RELAY_GOING_AWAY);
    }
}

void relay_server_stats_get(const relay_server *s, relay_server_stats *out)
{
    *out = s->st;
    out->conns_handshaking = s->pending;
    out->circuits_open = s->circuits ? s->circuits->open : 0;
    if (s->broker) {
        relay_broker_stats b;
        relay_broker_stats_get(s->broker, &b);
        out->circuit_requests_pending = b.requests_pending;
        out->circuit_requests = b.requests;
        out->circuits_opened = b.circuits_opened;
        out->circuits_closed = b.circuits_closed;
        out->circuit_redirects = b.redirects;
        out->circuit_errors = b.errors;
        out->circuits_refused_limit = b.refused_limit;
    }
    if (s->fw) {
        const relay_forward_stats *f = &s->fw->stats;
        out->fw = *f;
        /* frames dropped by the forwarder, by any reason, and by the QUIC path (fallback) */
        out->data_frames_dropped = s->st.data_frames_dropped + f->drop_truncated +
                                   f->drop_malformed + f->drop_unknown_type +
                                   f->drop_unexpected_type + f->drop_unknown_circuit +
                                   f->drop_wrong_source + f->drop_budget + f->drop_unroutable;
    }
    out->heap_in_use = (uint64_t)mallinfo2().uordblks;
}

void relay_server_del(relay_server *s)
{
    if (!s)
        return;
    while (s->conns)
        conn_free(s->conns);
    if (s->broker)
        ev_timer_stop(s->loop, &s->broker_timer);
    relay_broker_del(s->broker);
    relay_forwarder_del(s->fw);
    relay_circuits_del(s->circuits);
    relay_pending_addrs_del(s->pending_addrs);
    for (size_t i = 0; i < s->n_socks; i++) {
        if (s->socks[i].fd < 0)
            continue;
        ev_io_stop(s->loop, &s->socks[i].io);
        close(s->socks[i].fd);
    }
    pos_cid_map_del(s->cids);
    pos_tls_creds_del(s->creds);
    sodium_memzero(s->retry_secret, sizeof(s->retry_secret));
    sodium_memzero(s->reset_secret, sizeof(s->reset_secret));
    free(s);
}
