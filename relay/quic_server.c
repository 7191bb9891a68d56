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
#define INCOMING_TIMEOUT_S 10.0                /* a target that does not answer INCOMING */
#define MAX_PENDING_PER_CONN 16                /* CONNECTs in flight per client */
#define MAX_PENDING_TOTAL 4096                 /* CONNECTs in flight per relay */
#define MAX_OUT_PENDING (64 * 1024) /* control bytes queued to a client not reading them */

enum rstate { RATE_CHECK, HANDSHAKE, HELLO_WAIT, AUTH_CHECK, ACTIVE, CLOSING, DRAINING };

struct cid_entry {
    ngtcp2_cid cid;
    struct rconn *c;
    struct cid_entry *next;
};

struct rconn {
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
    uint8_t creating;       /* inside ngtcp2_conn_server_new (see cb_rand) */
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
    relay_circuit_owner owner;
    relay_budget *budget;        /* the token's, from relay_budget_acquire */
    struct sockaddr_storage cur; /* current address of the control connection */
    pos_ctrl_addrs local;        /* the client's own addresses (HELLO) */
    pos_ctrl_reader rd_req;      /* the client's request stream */
    int64_t req_stream;          /* -1 until the client opens it */
    uint32_t n_preq;             /* requests this client has in flight */
    uint8_t ended;               /* conn_end ran: circuits closed, presence dropped */
    ev_timer expiry;             /* ACTIVE, token with an expiry: closes the connection then */
    uint8_t home;                /* HELLO without NOT_HOME: presence and INCOMING are here */
};

/*
 * A CONNECT in flight: looking up presence (|to| NULL, |lookup| set) or
 * waiting for the target's ACCEPT/DECLINE (|to| set, |timer| running).
 */
struct preq {
    struct preq *prev, *next;
    relay_server *s;
    struct rconn *from, *to;
    uint32_t from_req, to_req;
    uint64_t lookup;
    ev_timer timer;
};

/* ---- connection id table ---- */

static size_t cid_bucket(const relay_server *s, const uint8_t *id, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, id, len, s->hash_key);
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (s->n_buckets - 1));
}

static struct rconn *cid_find(const relay_server *s, const uint8_t *id, size_t len)
{
    for (struct cid_entry *e = s->buckets[cid_bucket(s, id, len)]; e; e = e->next)
        if (e->cid.datalen == len && memcmp(e->cid.data, id, len) == 0)
            return e->c;
    return NULL;
}

static void cid_grow(relay_server *s)
{
    size_t old_n = s->n_buckets, n = old_n * 2;
    struct cid_entry **nb = calloc(n, sizeof(*nb));
    struct cid_entry **ob = s->buckets;
    if (!nb)
        return; /* keep the longer chains */
    s->buckets = nb;
    s->n_buckets = n;
    for (size_t i = 0; i < old_n; i++) {
        struct cid_entry *e = ob[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t b = cid_bucket(s, e->cid.data, e->cid.datalen);
            e->next = nb[b];
            nb[b] = e;
        }
    }
    free(ob);
}

static int cid_add(relay_server *s, const ngtcp2_cid *cid, struct rconn *c)
{
    struct cid_entry *e = malloc(sizeof(*e));
    if (!e)
        return -1;
    if (s->n_cids >= s->n_buckets)
        cid_grow(s);
    size_t b = cid_bucket(s, cid->data, cid->datalen);
    e->cid = *cid;
    e->c = c;
    e->next = s->buckets[b];
    s->buckets[b] = e;
    s->n_cids++;
    return 0;
}

static void cid_remove(relay_server *s, const ngtcp2_cid *cid, const struct rconn *c)
{
    struct cid_entry **pp = &s->buckets[cid_bucket(s, cid->data, cid->datalen)];
    for (; *pp; pp = &(*pp)->next) {
        struct cid_entry *e = *pp;
        if (e->c == c && e->cid.datalen == cid->datalen &&
            memcmp(e->cid.data, cid->data, cid->datalen) == 0) {
            *pp = e->next;
            free(e);
            s->n_cids--;
            return;
        }
    }
}

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
    ngtcp2_cid scids[16];

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
    cid_remove(s, &c->odcid, c);
    if (c->qc) {
        size_t n = ngtcp2_conn_get_num_scid(c->qc);
        if (n <= sizeof(scids) / sizeof(scids[0])) {
            ngtcp2_conn_get_scid(c->qc, scids);
            for (size_t i = 0; i < n; i++)
                cid_remove(s, &scids[i], c);
        }
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
        /* ngtcp2 is not re-entrant: close once read_pkt has returned */
        if (!c->close_code)
            c->close_code = (uint16_t)code;
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
    if (relay_sendbuf_pending(&c->out) + (size_t)n > MAX_OUT_PENDING) {
        /*
         * The client does not read its stream. Closed from its timer, not
         * here: this may run while another connection's circuits are closing.
         */
        if (!c->close_code)
            c->close_code = RELAY_REFUSED_BAD_REQUEST;
        ev_timer_stop(c->srv->loop, &c->timer);
        ev_timer_set(&c->timer, 0., 0.);
        ev_timer_start(c->srv->loop, &c->timer);
        return;
    }
    /* unacknowledged bytes stay where ngtcp2 may retransmit them from (sendbuf.h) */
    if (relay_sendbuf_append(&c->out, buf, (size_t)n) != 0)
        conn_close_app(c, RELAY_REFUSED_UNAVAILABLE);
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
    c->owner.conn = c;
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

/* ---- circuits: CONNECT -> INCOMING -> ACCEPT/DECLINE -> CIRCUIT (docs/protocol.md) ---- */

static int is_live(const struct rconn *c)
{
    return c && c->state == ACTIVE && !c->close_code;
}

/* send_msg queues |m| on |c|'s message stream and writes it out. */
static void send_msg(struct rconn *c, const pos_ctrl_msg *m)
{
    if (!is_live(c))
        return;
    queue_ctrl(c, m);
    conn_write(c);
}

static void send_error(struct rconn *c, uint32_t req_id, uint16_t code, const char *text)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_ERROR;
    m.req_id = req_id;
    m.code = code;
    snprintf(m.text, sizeof(m.text), "%s", text);
    c->srv->st.circuit_errors++;
    send_msg(c, &m);
}

static void preq_free(struct preq *q)
{
    relay_server *s = q->s;
    ev_timer_stop(s->loop, &q->timer);
    if (q->lookup && s->svc)
        relay_presence_cancel(s->svc, q->lookup);
    if (q->from)
        q->from->n_preq--;
    if (q->prev)
        q->prev->next = q->next;
    else
        s->preqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    s->n_preqs--;
    free(q);
}

static void on_preq_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct preq *q = w->data;
    (void)loop;
    (void)revents;
    send_error(q->from, q->from_req, POS_CTRL_CODE_TIMEOUT, "peer did not answer");
    preq_free(q);
}

/* fill_peer: the peer fields of INCOMING/CIRCUIT describing |c| to the other side. */
static void fill_peer(pos_ctrl_msg *m, const struct rconn *c)
{
    snprintf(m->peer_id, sizeof(m->peer_id), "%s", c->peer_id);
    if (pos_addr_format((const struct sockaddr *)&c->cur, m->observed, sizeof(m->observed)) != 0)
        m->observed[0] = 0;
    m->addrs = c->local;
}

static struct rconn *find_active_peer(relay_server *s, const char *peer_id,
                                      const struct rconn * not )
{
    /* newest first: a client that reconnected is reached on its newest home connection */
    for (struct rconn *c = s->conns; c; c = c->next)
        if (c != not &&c->home && is_live(c) && strcmp(c->peer_id, peer_id) == 0)
            return c;
    return NULL;
}

static void on_presence(void *arg, int status, const relay_presence_found *f)
{
    struct preq *q = arg;
    pos_ctrl_msg m;
    q->lookup = 0;
    if (status == RELAY_PRESENCE_FOUND) {
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_REDIRECT;
        m.req_id = q->from_req;
        snprintf(m.relay_id, sizeof(m.relay_id), "%s", f->relay_id);
        snprintf(m.peer_id, sizeof(m.peer_id), "%s", f->peer_id);
        for (size_t i = 0; i < f->n_addrs && i < POS_CTRL_MAX_ADDRS; i++)
            snprintf(m.addrs.a[m.addrs.n++], POS_ADDR_STRLEN, "%s", f->addrs[i]);
        q->s->st.circuit_redirects++;
        send_msg(q->from, &m);
    } else if (status == RELAY_PRESENCE_UNAVAILABLE) {
        send_error(q->from, q->from_req, POS_CTRL_CODE_UNAVAILABLE,
                   "relay temporarily unavailable, try again later");
    } else {
        send_error(q->from, q->from_req, POS_CTRL_CODE_PEER_NOT_CONNECTED, "peer not connected");
    }
    preq_free(q);
}

/*
 * circuit_limit: whether |c| may have one more circuit under the caps of
 * the config (max_circuits_per_conn, max_circuits_per_token). Returns 0, or
 * the RELAY_CIRCUIT_ERR_*_LIMIT code with the sentence for the client in |text|.
 */
static int circuit_limit(const struct rconn *c, char *text, size_t len)
{
    const relay_config *cfg = c->srv->cfg;
    int rc = relay_circuit_admit(&c->owner, c->budget, cfg->max_circuits_per_conn,
                                 cfg->max_circuits_per_token);
    if (rc != 0)
        snprintf(text, len, "%s (limit %u)", relay_circuit_strerror(rc),
                 rc == RELAY_CIRCUIT_ERR_CONN_LIMIT ? cfg->max_circuits_per_conn
                                                    : cfg->max_circuits_per_token);
    return rc;
}

/* refuse_over_limit: ERROR(CIRCUIT_LIMIT) to |c| for |req_id| when |c| or its peer |other|
 * is at a circuit cap; returns 1 then. */
static int refuse_over_limit(struct rconn *c, uint32_t req_id, const struct rconn *other)
{
    char text[POS_CTRL_MAX_TEXT];
    if (circuit_limit(c, text, sizeof(text)) == 0) {
        if (!other || circuit_limit(other, text, sizeof(text)) == 0)
            return 0;
        snprintf(text, sizeof(text), "the peer has too many circuits");
    }
    c->srv->st.circuits_refused_limit++;
    send_error(c, req_id, POS_CTRL_CODE_CIRCUIT_LIMIT, text);
    return 1;
}

static void handle_connect(struct rconn *c, const pos_ctrl_msg *m)
{
    relay_server *s = c->srv;
    struct rconn *to;
    struct preq *q;
    pos_ctrl_msg in;

    s->st.circuit_requests++;
    if (strcmp(m->peer_id, c->peer_id) == 0) {
        send_error(c, m->req_id, POS_CTRL_CODE_BAD_PEER, "cannot connect to yourself");
        return;
    }
    if (c->n_preq >= MAX_PENDING_PER_CONN || s->n_preqs >= MAX_PENDING_TOTAL || !s->svc) {
        send_error(c, m->req_id, POS_CTRL_CODE_BUSY, "too many requests in flight");
        return;
    }
    to = find_active_peer(s, m->peer_id, c);
    if (refuse_over_limit(c, m->req_id, to))
        return; /* before the target is asked: a flood of CONNECTs never reaches it */
    q = calloc(1, sizeof(*q));
    if (!q) {
        send_error(c, m->req_id, POS_CTRL_CODE_BUSY, "out of memory");
        return;
    }
    q->s = s;
    q->from = c;
    q->from_req = m->req_id;
    ev_timer_init(&q->timer, on_preq_timeout, INCOMING_TIMEOUT_S, 0.);
    q->timer.data = q;
    q->next = s->preqs;
    if (s->preqs)
        s->preqs->prev = q;
    s->preqs = q;
    s->n_preqs++;
    c->n_preq++;
    if (!to) {
        q->lookup = relay_presence_lookup(s->svc, m->peer_id, on_presence, q);
        if (!q->lookup) {
            send_error(c, m->req_id, POS_CTRL_CODE_BUSY, "out of memory");
            preq_free(q);
        }
        return;
    }
    q->to = to;
    if (++s->next_req == 0)
        s->next_req = 1;
    q->to_req = s->next_req;
    memset(&in, 0, sizeof(in));
    in.type = POS_CTRL_INCOMING;
    in.req_id = q->to_req;
    fill_peer(&in, c);
    ev_timer_start(s->loop, &q->timer);
    send_msg(to, &in);
}

static struct preq *find_incoming(relay_server *s, const struct rconn *to, uint32_t req_id)
{
    for (struct preq *q = s->preqs; q; q = q->next)
        if (q->to == to && q->to_req == req_id)
            return q;
    return NULL;
}

static int64_t now_ms(const relay_server *s)
{
    return (int64_t)(srv_now(s) / 1000000);
}

static void handle_answer(struct rconn *c, const pos_ctrl_msg *m)
{
    relay_server *s = c->srv;
    struct preq *q = find_incoming(s, c, m->req_id);
    struct rconn *a;
    uint32_t ids[2];
    pos_ctrl_msg out;

    if (!q)
        return; /* late: the requester left or the request timed out */
    a = q->from;
    if (m->type == POS_CTRL_DECLINE) {
        send_error(a, q->from_req, POS_CTRL_CODE_DECLINED, "peer declined");
        preq_free(q);
        return;
    }
    /* again: the requests in flight when the CONNECT was checked may have reached a cap */
    if (refuse_over_limit(a, q->from_req, c) | refuse_over_limit(c, q->to_req, a)) {
        preq_free(q);
        return;
    }
    if (!s->circuits || relay_circuit_open(s->circuits, &a->owner, (const struct sockaddr *)&a->cur,
                                           a->budget, &c->owner, (const struct sockaddr *)&c->cur,
                                           c->budget, now_ms(s), ids) != 0) {
        send_error(a, q->from_req, POS_CTRL_CODE_BUSY, "relay has no circuit left");
        send_error(c, q->to_req, POS_CTRL_CODE_BUSY, "relay has no circuit left");
        preq_free(q);
        return;
    }
    relay_usage_circuit_open(s->svc, a->budget, c->budget);
    s->st.circuits_opened++;
    memset(&out, 0, sizeof(out));
    out.type = POS_CTRL_CIRCUIT;
    out.req_id = q->from_req;
    out.circuit_id = ids[0];
    fill_peer(&out, c);
    send_msg(a, &out);
    out.req_id = q->to_req;
    out.circuit_id = ids[1];
    fill_peer(&out, a);
    send_msg(c, &out);
    pos_log_debug("circuit %08x/%08x: %s <-> %s", ids[0], ids[1], a->peer_id, c->peer_id);
    preq_free(q);
}

/* on_circuit_closed tells the side that is still there; usage stops counting the circuit. */
static void on_circuit_closed(void *arg, const relay_circuit_info *info)
{
    struct rconn *ending = arg;
    relay_server *s = ending->srv;
    pos_ctrl_msg m;
    for (int k = 0; k < 2; k++) {
        struct rconn *other = info->owner[k] ? info->owner[k]->conn : NULL;
        if (!other || other == ending)
            continue;
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_CIRCUIT_CLOSED;
        m.circuit_id = info->id[k];
        m.code = POS_CTRL_CODE_PEER_LEFT;
        send_msg(other, &m);
    }
    relay_usage_circuit_close(s->svc, info->budget[0], info->budget[1]);
    s->st.circuits_closed++;
}

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
    if (s->circuits && c->owner.conn)
        relay_circuit_owner_close(s->circuits, &c->owner, now_ms(s), on_circuit_closed, c);
    for (struct preq *q = s->preqs, *next; q; q = next) {
        next = q->next;
        if (q->from == c) {
            preq_free(q);
        } else if (q->to == c) {
            send_error(q->from, q->from_req, POS_CTRL_CODE_PEER_LEFT, "peer left");
            preq_free(q);
        }
    }
    if (c->counted_active && c->home && s->svc && c->peer_id[0])
        relay_presence_remove(s->svc, c->peer_id);
}

/* handle_request: a message on the client's request stream (ACTIVE only). */
static void handle_request(struct rconn *c, pos_ctrl_msg *m)
{
    switch (m->type) {
    case POS_CTRL_CONNECT:
        handle_connect(c, m);
        break;
    case POS_CTRL_ACCEPT:
    case POS_CTRL_DECLINE:
        handle_answer(c, m);
        break;
    default:
        refuse(c, RELAY_REFUSED_BAD_REQUEST);
    }
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

static int cb_get_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *user_data)
{
    struct rconn *c = user_data;
    (void)qc;
    randombytes_buf(cid->data, cidlen);
    cid->datalen = cidlen;
    if (ngtcp2_crypto_generate_stateless_reset_token(token, c->srv->reset_secret,
                                                     sizeof(c->srv->reset_secret), cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (cid_add(c->srv, cid, c) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_remove_cid(ngtcp2_conn *qc, const ngtcp2_cid *cid, void *user_data)
{
    struct rconn *c = user_data;
    (void)qc;
    cid_remove(c->srv, cid, c);
    return 0;
}

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

static int cb_recv_crypto_data(ngtcp2_conn *qc, ngtcp2_crypto_level level, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data)
{
    struct rconn *c = user_data;
    if (!c->tls)
        return 0; /* after the handshake: nothing a relay needs (see drop_tls) */
    return ngtcp2_crypto_recv_crypto_data_cb(qc, level, offset, data, datalen, user_data);
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
    cb->recv_crypto_data = cb_recv_crypto_data;
    cb->get_new_connection_id = cb_get_new_cid;
    cb->remove_connection_id = cb_remove_cid;
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
    if (cid_add(s, &scid, c) != 0)
        return -1;
    return 0;
}

/*
 * drop_tls frees the GnuTLS session once the handshake is complete: packet
 * protection keys live in ngtcp2 (key updates derive from them), no session
 * tickets are sent, so an idle client keeps no TLS state (a few KiB each).
 * Post-handshake CRYPTO data is then ignored (cb_recv_crypto_data).
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
    if (c->srv->circuits)
        relay_circuit_owner_set_addr(c->srv->circuits, &c->owner, (const struct sockaddr *)&c->cur);
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
    if (cid_add(s, &c->odcid, c) != 0) {
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
        if (len > SCID_LEN && (c = cid_find(s, data + 1, SCID_LEN)) != NULL) {
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
    c = cid_find(s, vc.dcid, vc.dcidlen);
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
    s->n_buckets = 1024;
    s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
    if (!s->buckets) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    crypto_shorthash_keygen(s->hash_key);
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
    out->circuit_requests_pending = s->n_preqs;
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
    while (s->preqs)
        preq_free(s->preqs);
    relay_forwarder_del(s->fw);
    relay_circuits_del(s->circuits);
    relay_pending_addrs_del(s->pending_addrs);
    for (size_t i = 0; i < s->n_socks; i++) {
        if (s->socks[i].fd < 0)
            continue;
        ev_io_stop(s->loop, &s->socks[i].io);
        close(s->socks[i].fd);
    }
    if (s->buckets) {
        for (size_t i = 0; i < s->n_buckets; i++) {
            struct cid_entry *e = s->buckets[i], *next;
            for (; e; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(s->buckets);
    }
    pos_tls_creds_del(s->creds);
    sodium_memzero(s->retry_secret, sizeof(s->retry_secret));
    sodium_memzero(s->reset_secret, sizeof(s->reset_secret));
    free(s);
}
