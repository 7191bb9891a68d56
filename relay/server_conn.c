/*
 * One QUIC connection of the relay's server (struct rconn, server_int.h):
 * its connection ids (common/cid_map through quic_common's callbacks), its
 * ngtcp2 server connection and TLS session, writing, timers, closing and
 * freeing. The control protocol on its streams is server_ctrl.c; routing
 * and accepting new connections is quic_server.c.
 */
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "ctrl.h"
#include "log.h"
#include "quic_common.h"
#include "quic_version.h"
#include "sendbuf.h"
#include "server_int.h"
#include "tls.h"

#define HELLO_TIMEOUT_NS (10 * NGTCP2_SECONDS) /* from the first packet to WELCOME */

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
    return relay_reset_token(c->srv, token, cid);
}

int relay_reset_token(const relay_server *s, uint8_t *token, const ngtcp2_cid *cid)
{
    /* one BLAKE2b call instead of ngtcp2's HKDF (two HMAC-SHA-256 set-ups, zeroised) */
    return crypto_generichash(token, NGTCP2_STATELESS_RESET_TOKENLEN, cid->data, cid->datalen,
                              s->reset_secret, sizeof(s->reset_secret)) == 0
               ? 0
               : -1;
}

const pos_quic_cid_ops relay_conn_cid_ops = {SCID_LEN, cid_add, cid_remove, cid_reset_token};

/* ---- sending ---- */

void relay_send_to(relay_server *s, int sock, const uint8_t *data, size_t len,
                   const struct sockaddr *to, socklen_t tolen)
{
    if (s->io.send(s->io.arg, sock, data, len, to, tolen) != 0) {
        s->st.packets_dropped++; /* dropped like any lost packet; QUIC retransmits */
        return;
    }
    s->st.packets_out++;
}

ngtcp2_tstamp relay_now(const relay_server *s)
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

/* relay_conn_pending_addr_give: |c|'s handshake no longer counts against its address. */
void relay_conn_pending_addr_give(struct rconn *c)
{
    if (!c->addr_counted)
        return;
    c->addr_counted = 0;
    relay_pending_addrs_give(c->srv->pending_addrs, (const struct sockaddr *)&c->remote);
}

void relay_conn_free(struct rconn *c)
{
    relay_server *s = c->srv;

    ev_timer_stop(s->loop, &c->timer);
    ev_timer_stop(s->loop, &c->expiry);
    relay_ctrl_end(c);
    if (c->budget && s->svc)
        relay_budget_release(s->svc, c->budget); /* its circuits are closed (relay_ctrl_end) */
    c->budget = NULL;
    if (c->check && s->svc)
        relay_auth_cancel(s->svc, c->check);
    if (c->token_id[0] && s->svc)
        relay_auth_release(s->svc, c->token_id);
    if (c->counted_active) {
        s->st.conns_active--;
        s->wst[c->worker].conns--;
    } else {
        s->pending--;
    }
    s->live_by_worker[c->worker]--;
    relay_conn_pending_addr_give(c);
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
    now = relay_now(c->srv);
    after = exp <= now ? 0 : (double)(exp - now) / NGTCP2_SECONDS;
    if (c->state == CLOSING || c->state == DRAINING)
        after = 3.0 * (double)ngtcp2_conn_get_pto(c->qc) / NGTCP2_SECONDS;
    else if (c->parked) /* freed once PARKED is acknowledged, or at park_until */
        after = relay_sendbuf_pending(&c->out) == 0 ? 0
                : c->park_until <= now              ? 0
                                       : (double)(c->park_until - now) / NGTCP2_SECONDS;
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
    relay_ctrl_end(c); /* circuits end with the connection, not 3 PTO later */
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, s->txbuf, sizeof(s->txbuf), ccerr,
                                           relay_now(s));
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
    relay_send_to(s, sock_for_path(s, &ps.path, c->sock), s->txbuf, (size_t)n,
                  (struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen);
    c->state = CLOSING;
    conn_arm_timer(c);
}

/*
 * relay_conn_close_later: |c| closes with |code| once it is safe (after read_pkt
 * returns, or from its timer); from now on the broker offers it to no one.
 */
void relay_conn_close_later(struct rconn *c, enum relay_refusal code)
{
    if (!c->close_code)
        c->close_code = (uint16_t)code;
    if (c->bc)
        relay_broker_closing(c->bc);
}

/* relay_conn_close_app closes with an application error code and reason phrase the client shows. */
void relay_conn_close_app(struct rconn *c, enum relay_refusal code)
{
    ngtcp2_connection_close_error ccerr;
    const char *why = relay_refusal_reason(code);

    if (!c->qc) {
        relay_conn_free(c);
        return;
    }
    if (c->in_read) {
        relay_conn_close_later(c, code); /* ngtcp2 is not re-entrant: once read_pkt has returned */
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

/* relay_conn_write sends what ngtcp2 has: handshake, acks, answer bytes. Returns 0. */
int relay_conn_write(struct rconn *c)
{
    relay_server *s = c->srv;
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = relay_now(s);

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
        relay_send_to(s, sock_for_path(s, &ps.path, c->sock), s->txbuf, (size_t)n,
                      (struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen);
    }
    conn_arm_timer(c);
    return 0;
}

void relay_conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rconn *c = w->data;
    int rv;
    (void)loop;
    (void)revents;

    if (c->state == CLOSING || c->state == DRAINING || c->state == RATE_CHECK) {
        relay_conn_free(c);
        return;
    }
    if (relay_park_conn_due(c))
        return;
    if (c->close_code && !c->in_read) {
        enum relay_refusal code = (enum relay_refusal)c->close_code;
        c->close_code = 0;
        relay_conn_close_app(c, code);
        return;
    }
    if (c->state < ACTIVE && relay_now(c->srv) >= c->created + HELLO_TIMEOUT_NS) {
        if (c->state == HANDSHAKE) {
            c->srv->st.handshakes_failed++;
            relay_conn_free(c);
        } else {
            relay_ctrl_refuse(c, RELAY_REFUSED_BAD_REQUEST); /* authenticated too slowly */
        }
        return;
    }
    rv = ngtcp2_conn_handle_expiry(c->qc, relay_now(c->srv));
    if (rv != 0) {
        /* idle timeout (NGTCP2_ERR_IDLE_CLOSE) or handshake timeout: drop silently */
        if (c->state < HELLO_WAIT)
            c->srv->st.handshakes_failed++;
        relay_conn_free(c);
        return;
    }
    relay_conn_write(c);
}

/* ---- ngtcp2 callbacks ---- */

static int cb_handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    struct rconn *c = user_data;
    const uint8_t *alpn;
    size_t alpn_len;
    int resumed;
    (void)qc;
    /* a full handshake required the client's certificate; a resumed one has it from the ticket */
    if (pos_tls_handshake_peer(c->tls, &c->pin, &resumed) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    /* the codec of this connection: pos-relay/3, /2 (hole punching) or /1 (ALPN is mandatory) */
    if (pos_tls_alpn_selected(c->tls, &alpn, &alpn_len) != 0 ||
        (c->version = (uint8_t)pos_ctrl_version_of_alpn(alpn, alpn_len)) == 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    pos_peer_id_format(c->pin.peer_key, c->peer_id);
    c->state = HELLO_WAIT;
    c->srv->st.handshakes_ok++;
    if (resumed)
        c->srv->st.handshakes_resumed++;
    /* the client's next connection resumes with it; without one it makes a full handshake */
    if (c->srv->cfg->ticket_lifetime_s)
        pos_tls_send_ticket(c->tls);
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
    if (c->parked && relay_sendbuf_pending(&c->out) == 0) {
        /* PARKED is in: freed from the timer, outside ngtcp2's call */
        ev_timer_stop(c->srv->loop, &c->timer);
        ev_timer_set(&c->timer, 0., 0.);
        ev_timer_start(c->srv->loop, &c->timer);
    }
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    /* ref->user_data points at the connection's pin (see tls.h) */
    struct rconn *c = (struct rconn *)((char *)ref->user_data - offsetof(struct rconn, pin));
    return c->qc;
}

void relay_conn_callbacks_init(ngtcp2_callbacks *cb)
{
    /* pos_quic_rand never greases the QUIC bit (a clear fixed bit on this
     * port means a relay data frame); relay_server_input also routes a packet
     * whose fixed bit is clear by connection id first, for peers that grease */
    pos_quic_callbacks_init(cb, 1);
    pos_quic_callbacks_cids(cb);
    cb->handshake_completed = cb_handshake_completed;
    cb->recv_stream_data = relay_ctrl_recv_stream_data;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
}

/* ---- the ngtcp2 connection and its TLS session ---- */

/* relay_conn_make creates the ngtcp2 server connection for |c| from the Initial |hd|. */
int relay_conn_make(struct rconn *c, const ngtcp2_pkt_hd *hd)
{
    relay_server *s = c->srv;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid scid;
    ngtcp2_path path;
    struct sock *sk = &s->socks[c->sock];

    pos_quic_settings_init(&settings, &c->creating);
    settings.initial_ts = relay_now(s);
    settings.max_window = 64 * 1024;
    settings.max_stream_window = 16 * 1024;
    /* control messages fit in 1200 bytes: no path MTU probes (2 datagrams each way) */
    settings.no_pmtud = 1;
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
    relay_worker_mark_cid(s, c->worker, scid.data); /* steered to c's worker (workers.h) */
    if (relay_reset_token(s, params.stateless_reset_token, &scid) != 0)
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
    if (pos_tls_session_new_ex(&c->tls, s->creds, 1, pos_ctrl_alpns, POS_CTRL_N_ALPNS,
                               s->cfg->ticket_lifetime_s) != 0)
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
 * protection keys live in ngtcp2 (key updates derive from them), session
 * tickets went out with the handshake's end (they hold all the relay needs to
 * resume), so an idle client keeps no TLS state (a few KiB each).
 * Post-handshake CRYPTO data is then ignored (pos_quic_callbacks_cids).
 */
static void drop_tls(struct rconn *c)
{
    /* pos-relay/4: the park key comes from this session (docs/protocol.md "Parking") */
    if (c->version >= POS_CTRL_V4 && c->srv->cfg->park_lifetime_s)
        c->has_park_key = pos_park_derive_key(c->tls, c->park_key) == 0;
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
        relay_broker_moved(c->srv->broker, c->bc, (const struct sockaddr *)&c->cur,
                           (int64_t)(relay_now(c->srv) / 1000000));
    pos_log_debug("client %s moved", c->peer_id);
}

/* relay_conn_input feeds one datagram to an existing connection. */
void relay_conn_input(struct rconn *c, int sock, const uint8_t *data, size_t len,
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
            relay_send_to(s, sock, c->close_pkt, c->close_len, from, fromlen);
        return;
    }
    path.local.addr = (ngtcp2_sockaddr *)&s->socks[sock].local;
    path.local.addrlen = s->socks[sock].local_len;
    path.remote.addr = (ngtcp2_sockaddr *)from;
    path.remote.addrlen = fromlen;
    path.user_data = NULL;
    c->sock = sock;
    c->in_read = 1;
    rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, data, len, relay_now(s));
    c->in_read = 0;
    if (rv != 0) {
        if (rv == NGTCP2_ERR_DRAINING) {
            relay_ctrl_end(c);
            c->state = DRAINING;
            conn_arm_timer(c);
            return;
        }
        if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
            relay_conn_free(c);
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
        relay_conn_close_app(c, (enum relay_refusal)c->close_code);
        return;
    }
    if (c->tls && c->state >= HELLO_WAIT)
        drop_tls(c);
    if (c->state == ACTIVE)
        follow_path(c);
    relay_conn_write(c);
}
