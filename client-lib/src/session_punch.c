/*
 * Hole punching of relayed sessions (see session_punch.h and
 * docs/protocol.md "Hole punching"): the prober of each attempt on the
 * endpoint's sockets, the dialer's move to the direct path and back, the
 * relay's PUNCH_REQUEST / PUNCH_REPORT, settings and counters.
 */
#include "session_punch.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "frame.h"
#include "prober.h"
#include "quic_common.h"
#include "relay_proto.h"
#include "session_table.h"

#define MAX_KEPT 32        /* PUNCH_STARTs waiting for their session */
#define KEPT_MS 15000      /* ... at most this long (an accepted circuit waits as long) */
#define MIGRATE_WAIT_MS 10 /* the handshake is not confirmed yet: look again then */
#define RELAYED_KEEPALIVE_NS (10 * NGTCP2_SECONDS) /* as session_quic.c */
#define MAX_DATAGRAMS 16
#define ADDR_SETTLE_MS 500 /* interface address changes come in bursts: ask once they settle */
#define MAX_EXTRA POS_P2P_MAX_EXTRA_CANDIDATES
_Static_assert(MAX_EXTRA <= POS_PROBER_MAX_ADDED, "the prober has a place for each extra one");
/* the timers of the options (stall PTOs, direct keep-alive, nudges) are pos_p2p_punch_options */

struct kept {
    pos_p2p_relay *relay; /* NULL: free slot */
    int64_t at;
    pos_ctrl_msg m; /* the PUNCH_START (its key: wiped when taken or dropped) */
};

struct sess_punch_ep {
    pos_p2p_punch_options opt;
    pos_p2p_punch_stats st;
    struct kept kept[MAX_KEPT];
};

enum move { MOVE_NONE = 0, MOVE_WANTED, MOVE_VALIDATING };

struct sess_punch {
    pos_p2p_endpoint *ep;
    struct sess_punch_ep *pe;
    pos_p2p_relay *relay; /* NULL: the circuit is gone (see sess_punch_keep_direct) */
    uint32_t circuit_id;
    int dialer;
    pos_p2p_punch_options opt; /* of the current attempt */
    pos_prober *prober;        /* NULL until the first attempt */
    uint16_t attempt;
    uint8_t peer_nat;    /* the peer's enum pos_ctrl_nat (PUNCH_START, pos-relay/3) */
    int64_t started_ms;  /* the session's start */
    int64_t attempt_ms;  /* PUNCH_START of the current attempt */
    int outcome_done;    /* the current attempt's outcome is counted */
    int move;            /* enum move (dialer) */
    int64_t move_at;     /* MOVE_WANTED: next try */
    int direct;          /* the session's current path is direct */
    int64_t request_at;  /* ask for a new attempt then (-1: not now) */
    uint32_t backoff_ms; /* after a fallback: the pause before the next request (0: retry_ms) */
    int64_t heard_ms;    /* the last packet of the session through the relay */
    int nudges;          /* KEEPALIVEs sent since */
    uint32_t addr_gen;   /* ep_addr_gen when last looked at */
    int64_t addr_req_at; /* a PUNCH_REQUEST for new interface addresses then (-1: none due) */
    int64_t addr_asked;  /* the last one (-1: none) */
    struct pos_prober_path result;
    pos_p2p_path_info info;                   /* path, bytes, upgrade time, counters */
    struct sockaddr_storage extra[MAX_EXTRA]; /* the application's candidates (every attempt) */
    size_t n_extra;
};

/* ---- the endpoint ---- */

struct sess_punch_ep *sess_punch_ep_of(pos_p2p_endpoint *ep)
{
    struct sess_table *t = sess_table_of(ep);
    struct sess_punch_ep *pe;
    if (!t)
        return NULL;
    if ((pe = sess_table_punch(t)) == NULL && (pe = calloc(1, sizeof(*pe))) != NULL) {
        pos_p2p_punch_options_default(&pe->opt);
        sess_table_set_punch(t, pe);
    }
    return pe;
}

void sess_punch_ep_free(struct sess_punch_ep *pe)
{
    if (!pe)
        return;
    sodium_memzero(pe->kept, sizeof(pe->kept));
    free(pe);
}

void sess_punch_keep(pos_p2p_endpoint *ep, pos_p2p_relay *r, const pos_ctrl_msg *m, int64_t now)
{
    struct sess_punch_ep *pe = sess_punch_ep_of(ep);
    struct kept *slot = NULL;
    if (!pe || !pe->opt.enabled)
        return;
    for (size_t i = 0; i < MAX_KEPT; i++) {
        struct kept *k = &pe->kept[i];
        if (k->relay &&
            (now - k->at > KEPT_MS || (k->relay == r && k->m.circuit_id == m->circuit_id)))
            sodium_memzero(k, sizeof(*k)); /* expired, or replaced by a newer attempt */
        if (!k->relay && !slot)
            slot = k;
    }
    if (!slot)
        return; /* far more circuits opening at once than sessions can use: no punching */
    slot->relay = r;
    slot->at = now;
    slot->m = *m;
}

/* take_kept: the PUNCH_START kept for |p|'s circuit, if any, started (and forgotten). */
static void take_kept(struct sess_punch *p)
{
    for (size_t i = 0; i < MAX_KEPT; i++) {
        struct kept *k = &p->pe->kept[i];
        if (k->relay == p->relay && k->m.circuit_id == p->circuit_id) {
            sess_punch_start(p, &k->m, k->at);
            sodium_memzero(k, sizeof(*k));
        }
    }
}

/* ---- public settings and counters (pos/p2p.h) ---- */

void pos_p2p_punch_options_default(pos_p2p_punch_options *o)
{
    memset(o, 0, sizeof(*o));
    o->enabled = 1;
    o->window_ms = POS_P2P_PUNCH_WINDOW_MS;
    o->interval_ms = POS_P2P_PUNCH_INTERVAL_MS;
    o->settle_ms = POS_P2P_PUNCH_SETTLE_MS;
    o->retry_ms = POS_P2P_PUNCH_RETRY_MS;
    o->fallback_retry_ms = POS_P2P_PUNCH_FALLBACK_RETRY_MS;
    o->stall_ptos = POS_P2P_PUNCH_STALL_PTOS;
    o->direct_keepalive_ms = POS_P2P_PUNCH_DIRECT_KEEPALIVE_MS;
    o->nudge_ms = POS_P2P_PUNCH_NUDGE_MS;
    o->max_nudges = POS_P2P_PUNCH_MAX_NUDGES;
}

int pos_p2p_punch_options_check(const pos_p2p_punch_options *o, char *err, size_t errlen)
{
    struct pos_prober_options po;
    const char *why = NULL;
    if (!o)
        why = "no punching options given";
    else if (o->enabled != 0 && o->enabled != 1)
        why = "punching must be enabled (1) or disabled (0)";
    else if (o->retry_ms < 1000 || o->retry_ms > 3600000)
        why = "the punch retry interval must be 1000 to 3600000 ms";
    else if (o->fallback_retry_ms < 1000 || o->fallback_retry_ms > 3600000)
        why = "the punch retry after a fallback (fallback_retry_ms) must be 1000 to 3600000 ms";
    else if (o->stall_ptos < 1 || o->stall_ptos > 10)
        why = "the PTOs of a stalled direct path (stall_ptos) must be 1 to 10";
    else if (o->direct_keepalive_ms < 100 || o->direct_keepalive_ms > 10000)
        why = "the keep-alive of a direct path (direct_keepalive_ms) must be 100 to 10000 ms";
    else if (o->nudge_ms < 100 || o->nudge_ms > 60000)
        why = "the relayed silence before a KEEPALIVE (nudge_ms) must be 100 to 60000 ms";
    else if (o->max_nudges > 8)
        why = "the KEEPALIVEs after relayed silence (max_nudges) must be 0 to 8";
    if (!why) {
        pos_prober_options_default(&po);
        po.window_ms = o->window_ms;
        po.interval_ms = o->interval_ms;
        po.settle_ms = o->settle_ms;
        why = pos_prober_options_check(&po);
    }
    if (err && errlen)
        snprintf(err, errlen, "%s", why ? why : "");
    return why ? POS_P2P_ERR_INVALID_ARGUMENT : 0;
}

void sess_punch_ep_set(struct sess_punch_ep *pe, const pos_p2p_punch_options *o)
{
    pe->opt = *o;
}

int pos_p2p_endpoint_punch_stats(const pos_p2p_endpoint *ep, pos_p2p_punch_stats *out)
{
    struct sess_table *t;
    if (!ep || !out)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof(*out));
    t = sess_table_of(ep);
    if (t && sess_table_punch(t))
        *out = sess_table_punch(t)->st;
    return 0;
}

/* ---- a session ---- */

/*
 * retry_in: the pause before the next PUNCH_REQUEST. After a fallback the
 * first comes fallback_retry_ms later (the path may come back soon), each
 * next one twice as late, up to retry_ms, the pace from then on.
 */
static uint32_t retry_in(struct sess_punch *p)
{
    uint32_t d = p->backoff_ms;
    if (!d)
        return p->opt.retry_ms;
    p->backoff_ms = d >= p->opt.retry_ms / 2 ? p->opt.retry_ms : d * 2;
    return d < p->opt.retry_ms ? d : p->opt.retry_ms;
}

struct sess_punch *sess_punch_new(pos_p2p_endpoint *ep, pos_p2p_relay *r, uint32_t circuit_id,
                                  int dialer, int64_t now)
{
    struct sess_punch_ep *pe = sess_punch_ep_of(ep);
    struct sess_punch *p;
    if (!pe || (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->ep = ep;
    p->pe = pe;
    p->relay = r;
    p->circuit_id = circuit_id;
    p->dialer = dialer;
    p->opt = pe->opt;
    p->started_ms = now;
    p->request_at = -1;
    p->heard_ms = now;
    p->addr_gen = ep_addr_gen(ep);
    p->addr_req_at = p->addr_asked = -1;
    p->info.path = POS_P2P_PATH_RELAYED;
    p->info.upgraded_after_ms = -1;
    take_kept(p);
    return p;
}

void sess_punch_del(struct sess_punch *p)
{
    if (!p)
        return;
    pos_prober_del(p->prober);
    free(p);
}

int sess_punch_is_for(const struct sess_punch *p, const pos_p2p_relay *r, uint32_t circuit_id)
{
    return p->relay == r && p->circuit_id == circuit_id;
}

void sess_punch_start(struct sess_punch *p, const pos_ctrl_msg *m, int64_t now)
{
    struct pos_prober_options po;
    p->opt = p->pe->opt;
    if (!p->opt.enabled || (p->dialer && (p->direct || p->move != MOVE_NONE)))
        return; /* off, or the dialer is direct (or moving) already: no need */
    /* the listener always probes: the dialer may have fallen back before it could tell */
    pos_prober_options_default(&po);
    po.window_ms = p->opt.window_ms;
    po.interval_ms = p->opt.interval_ms;
    po.settle_ms = p->opt.settle_ms;
    pos_prober_del(p->prober);
    p->prober = pos_prober_new(&po);
    p->pe->st.attempts++;
    p->info.attempts++;
    p->attempt = m->attempt;
    p->peer_nat = m->peer_nat;
    p->attempt_ms = now;
    p->outcome_done = 0;
    p->request_at = -1;
    if (!p->prober || pos_prober_start(p->prober, m, now) != 0) {
        p->pe->st.failures++; /* no usable candidate */
        p->outcome_done = 1;
        p->request_at = now + retry_in(p);
        return;
    }
    for (size_t i = 0; i < p->n_extra; i++) /* known already (1) or full: skipped */
        pos_prober_add_candidate(p->prober, (const struct sockaddr *)&p->extra[i], now);
}

/* usable_addr: an "ip:port" a probe can go to (port set, not unspecified nor multicast). */
static int usable_addr(const char *s, struct sockaddr_storage *ss)
{
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
    if (!s || pos_addr_parse(s, strlen(s), 0, ss) != 0)
        return 0;
    if (ss->ss_family == AF_INET)
        return a4->sin_port && a4->sin_addr.s_addr != htonl(INADDR_ANY) &&
               !IN_MULTICAST(ntohl(a4->sin_addr.s_addr));
    return a6->sin6_port && !IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) &&
           !IN6_IS_ADDR_MULTICAST(&a6->sin6_addr);
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return a->ss_family == b->ss_family && memcmp(a, b, pos_addr_len(a)) == 0;
}

int sess_punch_add_extra(struct sess_punch *p, const char *const *addrs, size_t n, int64_t now)
{
    struct sockaddr_storage ss[MAX_EXTRA];
    size_t added = 0;
    for (size_t i = 0; i < n; i++) {
        int known = 0;
        memset(&ss[added < MAX_EXTRA ? added : 0], 0, sizeof(ss[0]));
        if (added == MAX_EXTRA || !usable_addr(addrs[i], &ss[added]))
            return POS_P2P_ERR_INVALID_ARGUMENT;
        for (size_t k = 0; k < p->n_extra && !known; k++)
            known = same_addr(&p->extra[k], &ss[added]);
        for (size_t k = 0; k < added && !known; k++)
            known = same_addr(&ss[k], &ss[added]);
        if (!known && p->n_extra + added == MAX_EXTRA)
            return POS_P2P_ERR_INVALID_ARGUMENT;
        added += !known;
    }
    memcpy(&p->extra[p->n_extra], ss, added * sizeof(ss[0]));
    for (size_t i = p->n_extra; i < p->n_extra + added; i++)
        if (p->prober && pos_prober_state(p->prober) == POS_PROBER_PROBING)
            pos_prober_add_candidate(p->prober, (const struct sockaddr *)&p->extra[i], now);
    p->n_extra += added;
    return 0;
}

/* send_datagrams sends what the prober returned from the socket of each address's family. */
static void send_datagrams(struct sess_punch *p, const struct pos_prober_datagram *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int sock = d[i].to.ss_family == AF_INET ? 0 : 1;
        if (!ep_has_sock(p->ep, sock))
            continue;
        ep_send(p->ep, sock, d[i].frame, sizeof(d[i].frame), (const struct sockaddr *)&d[i].to,
                pos_addr_len(&d[i].to));
        p->pe->st.probes_sent++;
    }
}

int sess_punch_frame(struct sess_punch *p, uint32_t circuit_id, const uint8_t *data, size_t len,
                     const struct sockaddr *from, int64_t now)
{
    struct pos_prober_datagram reply;
    int rv;
    if (!p->prober || circuit_id != p->circuit_id)
        return -1;
    rv = pos_prober_on_frame(p->prober, from, data, len, now, &reply);
    if (rv < 0) {
        p->pe->st.probes_dropped++;
        return -1;
    }
    if (rv == 1)
        send_datagrams(p, &reply, 1);
    return 0;
}

/* nudge_at: when the next KEEPALIVE to the relay is due if nothing comes through it. */
static int64_t nudge_at(const struct sess_punch *p)
{
    return p->heard_ms + ((int64_t)p->opt.nudge_ms << p->nudges);
}

/*
 * nudge: nothing came through the relay for a while. Our NAT may have lost
 * the mapping toward the relay (a conntrack flush, a rebooted router): the
 * relay's packets to it are then dropped until we send to the relay again,
 * and a side that only receives (or a handshake's server, all of its flight
 * acknowledged) would send nothing before its 10 s keepalive; the handshake
 * times out first. A KEEPALIVE frame on the circuit (the relay echoes it)
 * makes the mapping anew. When the NAT gave us a new port (a rebinding) the
 * relay drops our frames until it sees the control connection there: that
 * sends a PING at once too (else only at its keep-alive, up to 10 s).
 */
static void nudge(struct sess_punch *p)
{
    pos_p2p_relay_status st;
    struct sockaddr_storage to;
    uint8_t frame[POS_FRAME_PROBE_LEN];
    int sock;
    p->nudges++;
    if (!p->relay)
        return;
    pos_p2p_relay_get_status(p->relay, &st);
    if (st.state != POS_P2P_RELAY_ACCEPTED ||
        pos_addr_parse(st.remote, strnlen(st.remote, sizeof(st.remote)), 0, &to) != 0 ||
        pos_frame_encode_probe(frame, sizeof(frame), POS_FRAME_KEEPALIVE, p->circuit_id, 0) < 0)
        return;
    sock = to.ss_family == AF_INET ? 0 : 1;
    if (ep_has_sock(p->ep, sock))
        ep_send(p->ep, sock, frame, sizeof(frame), (const struct sockaddr *)&to, pos_addr_len(&to));
    relay_ping(p->relay);
}

int64_t sess_punch_deadline(const struct sess_punch *p)
{
    int64_t d = p->prober ? pos_prober_deadline(p->prober) : -1;
    if (p->request_at >= 0 && (d < 0 || p->request_at < d))
        d = p->request_at;
    if (p->move == MOVE_WANTED && (d < 0 || p->move_at < d))
        d = p->move_at;
    if (p->nudges < (int)p->opt.max_nudges && (d < 0 || nudge_at(p) < d))
        d = nudge_at(p);
    if (p->addr_gen != ep_addr_gen(p->ep))
        return 0; /* at once: see addr_watch */
    if (p->addr_req_at >= 0 && (d < 0 || p->addr_req_at < d))
        d = p->addr_req_at;
    return d;
}

/* report sends PUNCH_REPORT(|outcome|) of the current attempt to the relay (best effort). */
static void report(struct sess_punch *p, uint8_t outcome, int64_t now)
{
    pos_ctrl_msg m;
    if (!p->relay)
        return;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_REPORT;
    m.circuit_id = p->circuit_id;
    m.attempt = p->attempt ? p->attempt : 1;
    m.outcome = outcome;
    m.ms_to_direct = outcome == POS_CTRL_PUNCH_DIRECT ? (uint32_t)(now - p->attempt_ms) : 0;
    relay_send_ctrl(p->relay, &m);
}

/*
 * hopeless: both NATs map each destination to another address or port
 * (this side's as the application set it, the peer's from PUNCH_START):
 * the address each side probes is never the one the other's NAT opens, so
 * no attempt can work. Said once, counted once.
 */
static int hopeless(struct sess_punch *p)
{
    if (pos_p2p_endpoint_nat_mapping(p->ep) != POS_P2P_NAT_VARIES ||
        p->peer_nat != POS_CTRL_NAT_VARIES)
        return 0;
    if (!p->info.punch_stopped) {
        p->info.punch_stopped = POS_P2P_PUNCH_STOPPED_NAT;
        p->pe->st.nat_stops++;
    }
    return 1;
}

/* failed: the attempt found no direct path (or QUIC would not take it); retry later. */
static void failed(struct sess_punch *p, int64_t now)
{
    if (!p->outcome_done) {
        p->outcome_done = 1;
        p->pe->st.failures++;
        if (p->dialer)
            report(p, POS_CTRL_PUNCH_FAILED, now);
    }
    p->move = MOVE_NONE;
    if (hopeless(p))
        p->request_at = -1; /* stays relayed: no retry every minute */
    else if (p->dialer && p->opt.enabled)
        p->request_at = now + retry_in(p);
}

/* try_move: the dialer moves its connection to the direct path the prober found. */
static void try_move(struct sess_punch *p, ngtcp2_conn *qc, int64_t now)
{
    ngtcp2_path np;
    int sock = p->result.addr.ss_family == AF_INET ? 0 : 1;
    int rv;
    p->move_at = now + MIGRATE_WAIT_MS; /* if not now, then */
    if (!qc)
        return;
    np.local.addr = (ngtcp2_sockaddr *)ep_local(p->ep, sock, &np.local.addrlen);
    np.remote.addr = (ngtcp2_sockaddr *)&p->result.addr;
    np.remote.addrlen = pos_addr_len(&p->result.addr);
    np.user_data = NULL;
    rv = ngtcp2_conn_initiate_migration(qc, &np, pos_quic_now());
    if (rv == NGTCP2_ERR_INVALID_STATE && now - p->attempt_ms < (int64_t)p->opt.window_ms + 5000)
        return; /* the handshake is not confirmed yet */
    if (rv != 0) {
        failed(p, now);
        return;
    }
    p->move = MOVE_VALIDATING; /* path_validation tells how it ended */
}

/* to_relayed: the event of a move back to the relay. */
static void to_relayed(const struct sess_punch *p, pos_p2p_path_change *ev, int reason)
{
    pos_p2p_relay_status st;
    memset(&st, 0, sizeof(st));
    if (p->relay)
        pos_p2p_relay_get_status(p->relay, &st);
    memset(ev, 0, sizeof(*ev));
    ev->from = POS_P2P_PATH_DIRECT;
    ev->to = POS_P2P_PATH_RELAYED;
    ev->reason = reason;
    snprintf(ev->remote, sizeof(ev->remote), "%s", st.remote);
}

/* fall_back: the direct path stalled; the dialer moves back to the relayed path at once. */
static int fall_back(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                     int64_t now, pos_p2p_path_change *ev)
{
    ngtcp2_path np;
    if (!p->relay)
        return 0; /* no relayed path left: QUIC's own timers decide */
    sess_path_fill(path, p->ep, &np);
    if (ngtcp2_conn_initiate_immediate_migration(qc, &np, pos_quic_now()) != 0)
        return 0; /* no spare connection id: QUIC's own timers decide */
    ngtcp2_conn_set_keep_alive_timeout(qc, RELAYED_KEEPALIVE_NS);
    p->direct = 0;
    p->info.path = POS_P2P_PATH_RELAYED;
    p->info.fallbacks++;
    p->pe->st.fallbacks++;
    report(p, POS_CTRL_PUNCH_FELL_BACK, now);
    p->backoff_ms = p->opt.fallback_retry_ms;
    if (p->opt.enabled)
        p->request_at = now + retry_in(p);
    to_relayed(p, ev, POS_P2P_FALLBACK_STALLED);
    return 1;
}

/* send_request: PUNCH_REQUEST (a new attempt, please) with our interface addresses. */
static void send_request(struct sess_punch *p)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_REQUEST;
    m.circuit_id = p->circuit_id;
    relay_local_addrs(p->ep, &m.addrs);
    if (relay_send_ctrl(p->relay, &m) == 0)
        p->pe->st.requests++;
}

/* request asks the relay for a new attempt on the circuit (the dialer's retries). */
static void request(struct sess_punch *p, int64_t now)
{
    /* again then if the relay starts none (under its minimum interval): the current pause */
    p->request_at =
        now + (p->backoff_ms && p->backoff_ms < p->opt.retry_ms ? p->backoff_ms : p->opt.retry_ms);
    send_request(p);
}

/*
 * addr_watch: the device's interface addresses changed (a new network, a
 * new lease): its local candidates are no longer those the relay has. A
 * relayed session (either side) asks for a new attempt with the new ones,
 * ADDR_SETTLE_MS after the change, at most once per fallback_retry_ms.
 */
static void addr_watch(struct sess_punch *p, int64_t now)
{
    uint32_t gen = ep_addr_gen(p->ep);
    if (gen != p->addr_gen) {
        p->addr_gen = gen;
        if (p->addr_req_at < 0)
            p->addr_req_at = now + ADDR_SETTLE_MS;
        if (p->addr_asked >= 0 && p->addr_req_at < p->addr_asked + p->opt.fallback_retry_ms)
            p->addr_req_at = p->addr_asked + p->opt.fallback_retry_ms;
    }
    if (p->addr_req_at < 0 || p->addr_req_at > now)
        return;
    p->addr_req_at = -1;
    if (p->direct || !p->opt.enabled || !p->relay || pos_p2p_relay_protocol_version(p->relay) < 2)
        return;
    p->addr_asked = now;
    send_request(p);
}

int sess_punch_timer(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                     int64_t now, pos_p2p_path_change *ev)
{
    struct pos_prober_datagram d[MAX_DATAGRAMS];
    size_t n;
    if (p->prober && pos_prober_deadline(p->prober) >= 0 && pos_prober_deadline(p->prober) <= now) {
        while ((n = pos_prober_on_timer(p->prober, now, d, MAX_DATAGRAMS)) > 0)
            send_datagrams(p, d, n);
        if (pos_prober_state(p->prober) == POS_PROBER_GAVE_UP)
            failed(p, now);
        else if (pos_prober_state(p->prober) == POS_PROBER_DIRECT && p->move == MOVE_NONE &&
                 !p->outcome_done && pos_prober_result(p->prober, &p->result) == 0) {
            if (p->dialer) { /* the listener follows the dialer's move */
                p->move = MOVE_WANTED;
                p->move_at = now;
            }
        }
    }
    if (p->move == MOVE_WANTED && p->move_at <= now)
        try_move(p, qc, now);
    if (p->nudges < (int)p->opt.max_nudges && nudge_at(p) <= now)
        nudge(p);
    addr_watch(p, now);
    if (p->dialer && p->direct && qc) {
        ngtcp2_conn_stat cs;
        ngtcp2_conn_get_conn_stat(qc, &cs);
        if (cs.pto_count >= p->opt.stall_ptos)
            return fall_back(p, qc, path, now, ev);
    }
    if (p->request_at >= 0 && p->request_at <= now) {
        if (p->direct || !p->dialer || !p->opt.enabled || !p->relay ||
            pos_p2p_relay_protocol_version(p->relay) < 2)
            p->request_at = -1;
        else
            request(p, now);
    }
    return 0;
}

/* went_direct: the session's path is the validated direct path |np|. */
static void went_direct(struct sess_punch *p, ngtcp2_conn *qc, const ngtcp2_path *np, int64_t now,
                        pos_p2p_path_change *ev)
{
    p->direct = 1;
    p->move = MOVE_NONE;
    p->request_at = -1;
    p->backoff_ms = 0;
    p->info.path = POS_P2P_PATH_DIRECT;
    if (!p->info.upgraded) {
        p->info.upgraded = 1;
        p->info.upgraded_after_ms = now - p->started_ms;
    }
    if (!p->outcome_done) {
        p->outcome_done = 1;
        p->pe->st.successes++;
        p->pe->st.last_ms_to_direct = (uint32_t)(now - p->attempt_ms);
        if (p->dialer)
            report(p, POS_CTRL_PUNCH_DIRECT, now);
    }
    if (p->dialer)
        ngtcp2_conn_set_keep_alive_timeout(qc, (ngtcp2_duration)p->opt.direct_keepalive_ms *
                                                   NGTCP2_MILLISECONDS);
    memset(ev, 0, sizeof(*ev));
    ev->from = POS_P2P_PATH_RELAYED;
    ev->to = POS_P2P_PATH_DIRECT;
    pos_addr_format((const struct sockaddr *)np->remote.addr, ev->remote, sizeof(ev->remote));
    if (p->prober && pos_prober_result(p->prober, &p->result) == 0)
        ev->rtt_ms = p->result.rtt_ms;
}

/* peer_fell_back: the dialer moved the session back to the relay (listener). */
static int peer_fell_back(struct sess_punch *p, pos_p2p_path_change *ev)
{
    p->direct = 0;
    p->info.path = POS_P2P_PATH_RELAYED;
    p->info.fallbacks++;
    p->pe->st.fallbacks++;
    to_relayed(p, ev, POS_P2P_FALLBACK_PEER);
    return 1;
}

int sess_punch_validated(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                         const ngtcp2_path *np, int ok, pos_p2p_path_change *ev)
{
    int64_t now = pos_p2p_now_ms();
    int relayed = sess_path_is_relayed(path, np);
    if (!ok) {
        if (!relayed && p->move == MOVE_VALIDATING)
            failed(p, now); /* QUIC could not prove the path the probes found */
        return 0;
    }
    if (!relayed && !p->direct) {
        went_direct(p, qc, np, now, ev);
        return 1;
    }
    if (relayed && p->direct && !p->dialer)
        return peer_fell_back(p, ev);
    return 0;
}

int sess_punch_keep_direct(struct sess_punch *p, struct sess_path *path)
{
    if (!p->direct || !p->relay)
        return 0;
    sess_path_drop_relay(path);
    p->relay = NULL;
    pos_prober_del(p->prober);
    p->prober = NULL;
    p->move = MOVE_NONE;
    p->request_at = -1;
    p->nudges = (int)p->opt.max_nudges;
    p->info.relay_lost = 1;
    return 1;
}

int sess_punch_follow(struct sess_punch *p, ngtcp2_conn *qc, const struct sess_path *path,
                      pos_p2p_path_change *ev)
{
    const ngtcp2_path *cur = ngtcp2_conn_get_path(qc);
    int relayed = sess_path_is_relayed(path, cur);
    if (p->dialer)
        return 0;
    if (relayed && p->direct)
        return peer_fell_back(p, ev);
    if (!relayed && !p->direct && p->prober) {
        /* the dialer sends on a direct path only once it validated it */
        went_direct(p, qc, cur, pos_p2p_now_ms(), ev);
        return 1;
    }
    return 0;
}

void sess_punch_received(struct sess_punch *p, const struct sess_path *path, const ngtcp2_path *np,
                         size_t len, int64_t now)
{
    if (sess_path_is_relayed(path, np)) {
        p->heard_ms = now;
        p->nudges = 0;
    }
    sess_punch_count(p, path, np, len);
}

void sess_punch_count(struct sess_punch *p, const struct sess_path *path, const ngtcp2_path *np,
                      size_t len)
{
    if (sess_path_is_relayed(path, np))
        p->info.bytes_relayed += len;
    else
        p->info.bytes_direct += len;
}

void sess_punch_info(const struct sess_punch *p, pos_p2p_path_info *out)
{
    out->path = p->info.path;
    out->upgraded = p->info.upgraded;
    out->upgraded_after_ms = p->info.upgraded_after_ms;
    out->bytes_relayed = p->info.bytes_relayed;
    out->bytes_direct = p->info.bytes_direct;
    out->attempts = p->info.attempts;
    out->fallbacks = p->info.fallbacks;
    out->relay_lost = p->info.relay_lost;
    out->punch_stopped = p->info.punch_stopped;
}
