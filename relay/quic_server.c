/*
 * The relay's QUIC server (see quic_server.h): routing by connection id,
 * the version filter, Retry under load, the address rate check before any
 * crypto, and set-up. Each connection is server_conn.c, the control
 * protocol on it server_ctrl.c, the circuit broker broker.c. No socket
 * calls: datagrams come in through relay_server_input and leave through the
 * relay_io seam (server_udp.c holds the sockets). A connection's states
 * are listed in server_int.h.
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

#define RETRY_TOKEN_TIMEOUT (10 * NGTCP2_SECONDS)
#define RATE_CHECK_TIMEOUT_S 5.0

/* ---- accepting: the rate check, Retry, version filter, routing ---- */

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
                relay_send_to(s, c->sock, s->txbuf, (size_t)n, (struct sockaddr *)&c->remote,
                              pos_addr_len(&c->remote));
        }
        unsigned idx = (unsigned)verdict - 0x100;
        if (idx < sizeof(s->st.refused) / sizeof(s->st.refused[0]))
            s->st.refused[idx]++;
        free(pkt);
        relay_conn_free(c);
        return;
    }
    if (ngtcp2_accept(&hd, pkt, len) != 0 || relay_conn_make(c, &hd) != 0) {
        free(pkt);
        s->st.handshakes_failed++;
        relay_conn_free(c);
        return;
    }
    c->state = HANDSHAKE;
    relay_conn_input(c, c->sock, pkt, len, (struct sockaddr *)&c->remote, pos_addr_len(&c->remote));
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
    relay_worker_mark_cid(s, s->cur_worker, scid.data); /* the retried Initial comes back here */
    tlen = ngtcp2_crypto_generate_retry_token(token, s->retry_secret, sizeof(s->retry_secret),
                                              hd->version, (const ngtcp2_sockaddr *)from, fromlen,
                                              &scid, &hd->dcid, relay_now(s));
    if (tlen < 0)
        return;
    n = ngtcp2_crypto_write_retry(s->txbuf, sizeof(s->txbuf), hd->version, &hd->scid, &scid,
                                  &hd->dcid, token, (size_t)tlen);
    if (n <= 0)
        return;
    s->st.retries_sent++;
    relay_send_to(s, sock, s->txbuf, (size_t)n, from, fromlen);
}

/*
 * admit_initial decides whether Initial |hd| from |from| may make a
 * connection: 1 yes (|*retried| says whether a Retry token proved the
 * address, then |odcid| is the client's first DCID and the address holds a
 * pending slot), 0 when it was dropped or answered with a Retry.
 */
static int admit_initial(relay_server *s, int sock, const ngtcp2_pkt_hd *hd,
                         const struct sockaddr *from, socklen_t fromlen, int *retried,
                         ngtcp2_cid *odcid)
{
    *retried = 0;
    if (s->pending >= 4 * s->retry_above + 64) {
        /*
         * Overloaded even with Retry: drop the Initial (the client retries
         * after its PTO) so that the loop keeps serving Redis answers and
         * the connections already admitted.
         */
        s->st.packets_dropped++;
        return 0;
    }
    if (hd->token.len > 0 && hd->token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(odcid, hd->token.base, hd->token.len, s->retry_secret,
                                             sizeof(s->retry_secret), hd->version,
                                             (const ngtcp2_sockaddr *)from, fromlen, &hd->dcid,
                                             RETRY_TOKEN_TIMEOUT, relay_now(s)) != 0) {
            s->st.packets_dropped++;
            return 0;
        }
        /*
         * A proven address, but a few of them must not hold every pending
         * slot (a flood that answers Retry): bounded per address.
         */
        if (relay_pending_addrs_take(s->pending_addrs, from) != 0) {
            s->st.pending_per_addr_drops++;
            return 0;
        }
        *retried = 1;
    } else if (s->pending >= s->retry_above) {
        /* Under load, make the client prove its address before any state or crypto. */
        send_retry(s, sock, hd, from, fromlen);
        return 0;
    }
    return 1;
}

/*
 * pick_worker: the worker a new connection's ids name, so the steering
 * program sends its packets there: the one with the fewest connections,
 * the one that got the Initial among equals (its packets then stay on one
 * worker). Not that worker whatever the counts: it follows the client's
 * random DCID, and 40 connections split 26/14 as often as not. Every worker
 * can serve every connection (the QUIC side runs under the exclusive
 * lock), so any choice is correct; this one keeps the workers even.
 */
static unsigned pick_worker(const relay_server *s)
{
    unsigned n = s->n_workers, best = s->cur_worker % n;
    for (unsigned w = 0; w < n; w++)
        if (s->live_by_worker[w] < s->live_by_worker[best])
            best = w;
    return best;
}

/* conn_new: a connection in RATE_CHECK keeping Initial |data| aside, listed and routed. */
static struct rconn *conn_new(relay_server *s, int sock, const uint8_t *data, size_t len,
                              const struct sockaddr *from, socklen_t fromlen,
                              const ngtcp2_pkt_hd *hd)
{
    struct rconn *c = calloc(1, sizeof(*c));
    if (c)
        c->first_pkt = malloc(len);
    if (!c || !c->first_pkt) {
        free(c);
        return NULL;
    }
    memcpy(c->first_pkt, data, len);
    c->first_len = len;
    c->cid_ops = &relay_conn_cid_ops;
    c->srv = s;
    c->sock = sock;
    c->worker = (uint8_t)pick_worker(s);
    s->live_by_worker[c->worker]++;
    c->state = RATE_CHECK;
    memcpy(&c->remote, from, fromlen);
    c->odcid = hd->dcid;
    c->created = relay_now(s);
    c->req_stream = -1;
    ev_timer_init(&c->timer, relay_conn_on_timer, 0., 0.);
    c->timer.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->pending++;
    if (relay_live_conns(s) > s->live_peak)
        s->live_peak =
            relay_live_conns(s); /* malloc_trim waits for a lasting drop (server_park.c) */
    return c;
}

/* new_conn handles an Initial for no known connection id. */
static void new_conn(relay_server *s, int sock, const uint8_t *data, size_t len,
                     const struct sockaddr *from, socklen_t fromlen)
{
    ngtcp2_pkt_hd hd;
    struct rconn *c;
    int retried;
    ngtcp2_cid odcid;

    if (s->going_away || ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
        s->st.packets_dropped++;
        return;
    }
    if (!admit_initial(s, sock, &hd, from, fromlen, &retried, &odcid))
        return;
    c = conn_new(s, sock, data, len, from, fromlen, &hd);
    if (!c) {
        if (retried)
            relay_pending_addrs_give(s->pending_addrs, from);
        return;
    }
    c->retried = (uint8_t)retried;
    c->addr_counted = (uint8_t)retried; /* given back by relay_conn_free from now on */
    if (retried)
        c->retry_odcid = odcid;
    if (pos_cid_map_add(s->cids, c->odcid.data, c->odcid.datalen, c) != 0) {
        relay_conn_free(c);
        return;
    }
    if (relay_park_expects(s, from)) {
        rate_checked(c, RELAY_OK); /* a parked client we woke: no Redis before its handshake */
        return;
    }
    uint64_t h = relay_rate_check_addr(s->svc, from, on_rate_verdict, c);
    if (h == 0) {
        relay_conn_free(c); /* the check could not even start (out of memory) */
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

    /* our version (every packet of a handshake): no answer, so no random byte (a syscall) */
    if (pos_quic_version_answer(s->txbuf, sizeof(s->txbuf), data, len, 0) == POS_QUIC_VERSION_OK)
        return 0;
    randombytes_buf(&r, 1);
    n = pos_quic_version_answer(s->txbuf, sizeof(s->txbuf), data, len, r);
    if (n > 0) {
        s->st.version_negotiations++;
        relay_send_to(s, sock, s->txbuf, (size_t)n, from, fromlen);
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
    if (pos_park_is_park(data, len)) {
        relay_park_datagram(s, sock, data, len, from, fromlen); /* a parked client's */
        return;
    }
    if (!(data[0] & 0xc0)) {
        /*
         * Not a frame of a known circuit from its owner (the forwarder handed
         * it back): a short-header packet of a peer that greases the fixed
         * bit, or garbage, dropped and counted.
         */
        if (len > SCID_LEN && (c = pos_cid_map_find(s->cids, data + 1, SCID_LEN)) != NULL) {
            relay_conn_input(c, sock, data, len, from, fromlen);
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
        relay_conn_input(c, sock, data, len, from, fromlen);
        return;
    }
    if (!(data[0] & 0x80)) { /* short header for an unknown connection */
        s->st.packets_dropped++;
        return;
    }
    new_conn(s, sock, data, len, from, fromlen);
}

/* ---- set-up ---- */

/* new_cid: ngtcp2's get_new_connection_id: a random id naming the connection's worker. */
static int new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *user_data)
{
    struct rconn *c = user_data;
    (void)qc;
    if (cidlen != SCID_LEN)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    randombytes_buf(cid->data, cidlen);
    cid->datalen = cidlen;
    relay_worker_mark_cid(c->srv, c->worker, cid->data);
    if (relay_reset_token(c->srv, token, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return pos_cid_map_add(c->srv->cids, cid->data, cidlen, c) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
}

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
    relay_conn_callbacks_init(&s->cbs);
    s->cbs.get_new_connection_id = new_cid;
    s->n_workers = 1; /* more once relay_workers_bind made their sockets */
    s->circuits = relay_circuits_new(cfg->max_circuits, randombytes_random());
    if (!s->circuits) {
        snprintf(err, errlen, "cannot allocate the circuit table (%u circuits, max_circuits)",
                 cfg->max_circuits);
        goto fail;
    }
    if (relay_ctrl_broker_new(s) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (relay_park_init(s, err, errlen) != 0)
        goto fail;
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
    for (size_t i = 0; i < MAX_SOCKS; i++)
        s->socks[i].fd = s->socks[i].park_fd = -1;
    for (size_t i = 0; i < n_locals && i < MAX_SOCKS; i++) {
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
    if (!s->fw && s->circuits && !s->workers) { /* the workers have their own (workers.c) */
        s->fw = relay_forwarder_new(s->circuits, RX_BATCH, relay_budget_lease, svc);
        if (s->fw) {
            /*
             * Our clients never grease the QUIC bit (docs/protocol.md), so a
             * failed frame is dropped with its reason counted. For peers that
             * grease, the key quic_fallback hands failed frames to the
             * connection-id lookup instead (then counted as quic_fallback).
             */
            relay_forwarder_set_quic_fallback(s->fw, s->cfg->quic_fallback);
            s->park_ctx.srv = s;
            if (s->park) /* keep-alives checked and acknowledged in the batch */
                relay_forwarder_set_park(s->fw, relay_park_fast, &s->park_ctx);
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
            relay_ctrl_refuse(c, RELAY_REFUSED_REVOKED);
        }
    }
    relay_park_revoke(s, token_id); /* its keep-alives go unanswered: the client finds out */
}

void relay_server_goaway(relay_server *s)
{
    struct rconn *c, *next;
    s->going_away = 1;
    relay_park_goaway(s);
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->state == CLOSING || c->state == DRAINING)
            continue;
        if (c->state == RATE_CHECK || c->state == HANDSHAKE)
            relay_conn_free(c); /* nothing to tell a client that has no session yet */
        else
            relay_conn_close_app(c, RELAY_GOING_AWAY);
    }
}

/* worker_stats: each worker's share; circuit sides by the worker their ids name. */
static void worker_stats(const relay_server *s, relay_server_stats *out)
{
    const relay_circuits *t = s->circuits;
    out->n_workers = s->n_workers;
    memcpy(out->worker, s->wst, sizeof(out->worker));
    for (unsigned k = 0; k < RELAY_MAX_WORKERS; k++)
        out->worker[k].circuit_sides = 0;
    if (s->n_workers == 1) {
        out->worker[0].conns = s->st.conns_active;
        out->worker[0].circuit_sides = t ? 2 * (uint64_t)t->open : 0;
        out->worker[0].forwarded = out->fw.forwarded;
        out->worker[0].accepted = s->st.auth_ok;
        return;
    }
    for (unsigned k = 0; t && k < s->n_workers && k < RELAY_MAX_WORKERS; k++)
        out->worker[k].circuit_sides = t->worker_sides[k];
    if (s->workers)
        relay_workers_worker_forwarded(s, out->worker);
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
        out->punches_started = b.punches_started;
        out->punch_requests = b.punch_requests;
        out->punch_requests_ignored = b.punch_requests_ignored;
        memcpy(out->punch_reports, b.punch_reports, sizeof(out->punch_reports));
        out->punch_reports_ignored = b.punch_reports_ignored;
        out->punch_direct_ms_sum = b.punch_direct_ms_sum;
        out->punches_on_move = b.punches_on_move;
        out->punch_moves_ignored = b.punch_moves_ignored;
    }
    if (s->workers) {
        relay_workers_forward_stats(s, &out->fw);
        out->forward_send_failed += relay_workers_send_failed(s);
    }
    if (s->fw || s->workers) {
        const relay_forward_stats *f = &out->fw;
        if (s->fw)
            out->fw = s->fw->stats;
        /* frames dropped by the forwarder, by any reason, and by the QUIC path (fallback) */
        out->data_frames_dropped = s->st.data_frames_dropped + f->drop_truncated +
                                   f->drop_malformed + f->drop_unknown_type +
                                   f->drop_unexpected_type + f->drop_unknown_circuit +
                                   f->drop_wrong_source + f->drop_budget + f->drop_unroutable;
    }
    out->parked = s->park ? s->park->n : 0;
    worker_stats(s, out);
}

void relay_server_del(relay_server *s)
{
    if (!s)
        return;
    relay_workers_del(s); /* stops the threads; worker 0's sockets are closed below */
    while (s->conns)
        relay_conn_free(s->conns);
    relay_park_fini(s);
    if (s->broker)
        ev_timer_stop(s->loop, &s->broker_timer);
    relay_broker_del(s->broker);
    relay_forwarder_del(s->fw);
    relay_circuits_del(s->circuits);
    relay_pending_addrs_del(s->pending_addrs);
    for (size_t i = 0; i < s->n_socks; i++) {
        relay_park_rx_stop(&s->socks[i].park_rx);
        if (s->socks[i].park_fd >= 0)
            close(s->socks[i].park_fd);
        if (s->socks[i].fd < 0)
            continue;
        ev_io_stop(s->loop, &s->socks[i].io);
        close(s->socks[i].fd);
    }
    pos_cid_map_del(s->cids);
    pos_tls_creds_del(s->creds);
    sodium_memzero(s->retry_secret, sizeof(s->retry_secret));
    sodium_memzero(s->reset_secret, sizeof(s->reset_secret));
    relay_rxbatch_del(s->rxb);
    free(s);
}
