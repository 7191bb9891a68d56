/*
 * The circuit broker (see broker.h): CONNECT -> INCOMING -> ACCEPT/DECLINE
 * -> CIRCUIT, and CIRCUIT_CLOSED when a side's connection ends. Requests in
 * flight are one list (for a client's end and the gauge); those waiting for
 * the target's answer are also on a waiting list in deadline order (one
 * timeout per list, so appending keeps it sorted): one list for INCOMING's
 * answer, one for parked targets being woken (a longer wait); the earlier of
 * the two heads is what |wake| asks for.
 */
#include "broker.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "log.h"
#include "punch.h"

struct relay_broker_client {
    relay_broker_client *prev, *next; /* joined clients, newest first */
    void *conn;                       /* the caller's handle */
    relay_circuit_owner owner;        /* owner.conn is this client */
    relay_budget *budget;
    struct sockaddr_storage cur; /* current address of the control connection */
    pos_ctrl_addrs local;        /* the client's own addresses (HELLO) */
    pos_ctrl_addrs req_local;    /* its addresses in its latest PUNCH_REQUEST */
    char peer_id[POS_PEER_ID_STRLEN];
    uint32_t n_req;  /* requests this client has in flight */
    uint32_t rtt_ms; /* smoothed RTT of its control connection (relay_broker_set_rtt) */
    uint8_t home;    /* may be asked for (INCOMING) */
    uint8_t closing;
    uint8_t version; /* POS_CTRL_V1, V2 or V3 */
    uint8_t nat;     /* its enum pos_ctrl_nat (HELLO, version 3), told to its peers */
};

/* Hole punching state of one circuit, indexed like the table's circuits (slot / 2). */
struct punch_slot {
    int64_t last_ms;  /* when its latest attempt started */
    uint16_t attempt; /* attempts so far, 0 none */
};

/*
 * A CONNECT in flight: looking up presence (|to| NULL, |lookup| set) or
 * waiting for the target's ACCEPT/DECLINE (|to| set, on the waiting list).
 */
struct relay_broker_req {
    relay_broker *b;
    relay_broker_req *prev, *next;   /* all requests */
    relay_broker_req *wprev, *wnext; /* waiting for an answer, by deadline */
    relay_broker_client *from, *to;
    uint32_t from_req, to_req;
    uint64_t lookup;
    int64_t deadline_ms;
    uint8_t waiting;
    uint8_t parked;                   /* waiting for a parked target to wake (|to| NULL) */
    char peer_id[POS_PEER_ID_STRLEN]; /* |parked|: the target */
};

struct relay_broker {
    relay_circuits *circuits;
    relay_broker_limits lim;
    relay_broker_ops ops;
    relay_broker_client *clients;
    relay_broker_req *reqs;
    /* waiting, by |parked|: [0] for INCOMING's answer, [1] for a parked target to wake */
    struct wait_list {
        relay_broker_req *head, *tail;
    } waits[2];
    size_t n_reqs;
    uint32_t next_req;
    int64_t woken_for; /* the deadline last given to ops.wake, -1 none */
    relay_broker_stats st;
    struct punch_slot *punch; /* circuits->capacity entries */
    int64_t punch_min_interval_ms;
    uint8_t punch_on;
};

relay_broker *relay_broker_new(relay_circuits *circuits, const relay_broker_limits *lim,
                               const relay_broker_ops *ops)
{
    relay_broker *b;
    if (!circuits || !lim || !ops || !ops->send || !ops->lookup || !ops->lookup_cancel ||
        !ops->wake)
        return NULL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->circuits = circuits;
    b->lim = *lim;
    if (b->lim.max_pending_per_client == 0)
        b->lim.max_pending_per_client = 1;
    if (b->lim.max_pending_total == 0)
        b->lim.max_pending_total = 1;
    if (b->lim.parked_timeout_ms <= 0)
        b->lim.parked_timeout_ms = b->lim.incoming_timeout_ms;
    b->ops = *ops;
    b->woken_for = -1;
    b->punch = calloc(circuits->capacity, sizeof(*b->punch));
    if (!b->punch) {
        free(b);
        return NULL;
    }
    return b;
}

void relay_broker_set_punch(relay_broker *b, int enabled, int64_t min_interval_ms)
{
    b->punch_on = enabled ? 1 : 0;
    b->punch_min_interval_ms = min_interval_ms;
}

/* rearm tells the caller when the earliest waiting request expires, if that changed. */
static void rearm(relay_broker *b)
{
    int64_t at = -1;
    for (int k = 0; k < 2; k++)
        if (b->waits[k].head && (at < 0 || b->waits[k].head->deadline_ms < at))
            at = b->waits[k].head->deadline_ms;
    if (at == b->woken_for)
        return;
    b->woken_for = at;
    b->ops.wake(b->ops.arg, at);
}

/* done ends every input: the next deadline, then what was queued goes out. */
static void done(relay_broker *b)
{
    rearm(b);
    if (b->ops.flush)
        b->ops.flush(b->ops.arg);
}

static void wait_unlink(relay_broker *b, relay_broker_req *q)
{
    struct wait_list *l = &b->waits[q->parked];
    if (!q->waiting)
        return;
    q->waiting = 0;
    if (q->wprev)
        q->wprev->wnext = q->wnext;
    else
        l->head = q->wnext;
    if (q->wnext)
        q->wnext->wprev = q->wprev;
    else
        l->tail = q->wprev;
    q->wprev = q->wnext = NULL;
}

static void req_free(relay_broker *b, relay_broker_req *q)
{
    if (q->lookup)
        b->ops.lookup_cancel(b->ops.arg, q->lookup);
    if (q->parked && b->ops.park_unwait)
        b->ops.park_unwait(b->ops.arg, q->peer_id); /* the peer did not come back in time */
    if (q->from)
        q->from->n_req--;
    wait_unlink(b, q);
    if (q->prev)
        q->prev->next = q->next;
    else
        b->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    b->n_reqs--;
    free(q);
}

void relay_broker_del(relay_broker *b)
{
    if (!b)
        return;
    while (b->reqs)
        req_free(b, b->reqs);
    while (b->clients) {
        relay_broker_client *cl = b->clients;
        b->clients = cl->next;
        free(cl);
    }
    free(b->punch);
    free(b);
}

/* ip_len: the size of an IPv4 or IPv6 |sa|, 0 for another family. */
static size_t ip_len(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return sizeof(struct sockaddr_in);
    if (sa->sa_family == AF_INET6)
        return sizeof(struct sockaddr_in6);
    return 0;
}

relay_broker_client *relay_broker_join(relay_broker *b, void *conn, const char *peer_id, int home,
                                       const struct sockaddr *cur, const pos_ctrl_addrs *local,
                                       relay_budget *budget)
{
    relay_broker_client *cl;
    size_t len = ip_len(cur);

    if (len == 0)
        return NULL;
    cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    cl->conn = conn;
    cl->owner.conn = cl;
    cl->budget = budget;
    memcpy(&cl->cur, cur, len);
    if (local)
        cl->local = *local;
    snprintf(cl->peer_id, sizeof(cl->peer_id), "%s", peer_id);
    cl->home = home ? 1 : 0;
    cl->version = POS_CTRL_V1;
    cl->next = b->clients;
    if (b->clients)
        b->clients->prev = cl;
    b->clients = cl;
    return cl;
}

void relay_broker_set_version(relay_broker_client *cl, int version)
{
    cl->version = version >= POS_CTRL_V3   ? POS_CTRL_V3
                  : version == POS_CTRL_V2 ? POS_CTRL_V2
                                           : POS_CTRL_V1;
}

void relay_broker_set_nat(relay_broker_client *cl, int nat)
{
    cl->nat = nat == POS_CTRL_NAT_EIM || nat == POS_CTRL_NAT_VARIES ? (uint8_t)nat : 0;
}

void relay_broker_set_rtt(relay_broker_client *cl, uint32_t rtt_ms)
{
    cl->rtt_ms = rtt_ms;
}

void relay_broker_closing(relay_broker_client *cl)
{
    cl->closing = 1;
}

static void send_error(relay_broker *b, relay_broker_client *to, uint32_t req_id, uint16_t code,
                       const char *text)
{
    pos_ctrl_msg m;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_ERROR;
    m.req_id = req_id;
    m.code = code;
    snprintf(m.text, sizeof(m.text), "%s", text);
    b->st.errors++;
    b->ops.send(b->ops.arg, to->conn, &m);
}

/* fill_peer: the peer fields of INCOMING/CIRCUIT describing |cl| to the other side. */
static void fill_peer(pos_ctrl_msg *m, const relay_broker_client *cl)
{
    snprintf(m->peer_id, sizeof(m->peer_id), "%s", cl->peer_id);
    if (pos_addr_format((const struct sockaddr *)&cl->cur, m->observed, sizeof(m->observed)) != 0)
        m->observed[0] = 0;
    m->addrs = cl->local;
}

static relay_broker_client *find_home(relay_broker *b, const char *peer_id,
                                      const relay_broker_client *asker)
{
    /* newest first: a client that reconnected is reached on its newest home connection */
    for (relay_broker_client *cl = b->clients; cl; cl = cl->next)
        if (cl != asker && cl->home && !cl->closing && strcmp(cl->peer_id, peer_id) == 0)
            return cl;
    return NULL;
}

/*
 * circuit_limit: whether |cl| may have one more circuit under the caps.
 * Returns 0, or the RELAY_CIRCUIT_ERR_*_LIMIT code with the sentence for the
 * client in |text|.
 */
static int circuit_limit(const relay_broker *b, const relay_broker_client *cl, char *text,
                         size_t len)
{
    int rc = relay_circuit_admit(&cl->owner, cl->budget, b->lim.max_circuits_per_conn,
                                 b->lim.max_circuits_per_token);
    if (rc != 0)
        snprintf(text, len, "%s (limit %u)", relay_circuit_strerror(rc),
                 rc == RELAY_CIRCUIT_ERR_CONN_LIMIT ? b->lim.max_circuits_per_conn
                                                    : b->lim.max_circuits_per_token);
    return rc;
}

/* refuse_over_limit: ERROR(CIRCUIT_LIMIT) to |cl| for |req_id| when |cl| or its peer |other|
 * is at a circuit cap; returns 1 then. */
static int refuse_over_limit(relay_broker *b, relay_broker_client *cl, uint32_t req_id,
                             const relay_broker_client *other)
{
    char text[POS_CTRL_MAX_TEXT];
    if (circuit_limit(b, cl, text, sizeof(text)) == 0) {
        if (!other || circuit_limit(b, other, text, sizeof(text)) == 0)
            return 0;
        snprintf(text, sizeof(text), "the peer has too many circuits");
    }
    b->st.refused_limit++;
    send_error(b, cl, req_id, POS_CTRL_CODE_CIRCUIT_LIMIT, text);
    return 1;
}

static relay_broker_req *req_new(relay_broker *b, relay_broker_client *from, uint32_t from_req)
{
    relay_broker_req *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->b = b;
    q->from = from;
    q->from_req = from_req;
    q->next = b->reqs;
    if (b->reqs)
        b->reqs->prev = q;
    b->reqs = q;
    b->n_reqs++;
    from->n_req++;
    return q;
}

/*
 * wait_append: |q| waits until its deadline, on the list of its kind (|q->parked|: for a
 * parked target to wake); one timeout per list, so each list stays sorted.
 */
static void wait_append(relay_broker *b, relay_broker_req *q, int64_t now_ms)
{
    struct wait_list *l = &b->waits[q->parked];
    q->deadline_ms = now_ms + (q->parked ? b->lim.parked_timeout_ms : b->lim.incoming_timeout_ms);
    q->waiting = 1;
    q->wnext = NULL;
    q->wprev = l->tail;
    if (l->tail)
        l->tail->wnext = q;
    else
        l->head = q;
    l->tail = q;
}

/* ask: INCOMING to |to| for request |q|, which then waits for the answer until its deadline. */
static void ask(relay_broker *b, relay_broker_req *q, relay_broker_client *to, int64_t now_ms)
{
    pos_ctrl_msg in;

    q->to = to;
    if (++b->next_req == 0)
        b->next_req = 1;
    q->to_req = b->next_req;
    wait_append(b, q, now_ms);
    memset(&in, 0, sizeof(in));
    in.type = POS_CTRL_INCOMING;
    in.req_id = q->to_req;
    fill_peer(&in, q->from);
    b->ops.send(b->ops.arg, to->conn, &in);
}

static void handle_connect(relay_broker *b, relay_broker_client *cl, const pos_ctrl_msg *m,
                           int64_t now_ms)
{
    relay_broker_client *to;
    relay_broker_req *q;

    b->st.requests++;
    if (strcmp(m->peer_id, cl->peer_id) == 0) {
        send_error(b, cl, m->req_id, POS_CTRL_CODE_BAD_PEER, "cannot connect to yourself");
        return;
    }
    if (cl->n_req >= b->lim.max_pending_per_client || b->n_reqs >= b->lim.max_pending_total) {
        send_error(b, cl, m->req_id, POS_CTRL_CODE_BUSY, "too many requests in flight");
        return;
    }
    to = find_home(b, m->peer_id, cl);
    if (refuse_over_limit(b, cl, m->req_id, to))
        return; /* before the target is asked: a flood of CONNECTs never reaches it */
    q = req_new(b, cl, m->req_id);
    if (!q) {
        send_error(b, cl, m->req_id, POS_CTRL_CODE_BUSY, "out of memory");
        return;
    }
    if (to) {
        ask(b, q, to, now_ms);
        return;
    }
    if (b->ops.park_wake && b->ops.park_wake(b->ops.arg, m->peer_id)) {
        /* parked here: woken, and asked once its HELLO is in (relay_broker_woken) */
        q->parked = 1;
        snprintf(q->peer_id, sizeof(q->peer_id), "%s", m->peer_id);
        wait_append(b, q, now_ms);
        b->st.wakes++;
        return;
    }
    q->lookup = b->ops.lookup(b->ops.arg, m->peer_id, q);
    if (!q->lookup) {
        send_error(b, cl, m->req_id, POS_CTRL_CODE_BUSY, "out of memory");
        req_free(b, q);
    }
}

static relay_broker_req *find_incoming(relay_broker *b, const relay_broker_client *to,
                                       uint32_t req_id)
{
    for (relay_broker_req *q = b->reqs; q; q = q->next)
        if (q->to == to && q->to_req == req_id)
            return q;
    return NULL;
}

/* ---- hole punching (docs/protocol.md "Hole punching") ---- */

/* add_candidate appends |addr| to |out| in canonical form unless it is there or |out| is full. */
static void add_candidate(pos_ctrl_addrs *out, const char *addr)
{
    struct sockaddr_storage ss;
    char canon[POS_ADDR_STRLEN];

    if (out->n >= POS_CTRL_MAX_ADDRS || pos_addr_parse(addr, strlen(addr), 0, &ss) != 0 ||
        pos_addr_format((const struct sockaddr *)&ss, canon, sizeof(canon)) != 0)
        return;
    for (uint8_t i = 0; i < out->n; i++)
        if (strcmp(out->a[i], canon) == 0)
            return;
    snprintf(out->a[out->n++], POS_ADDR_STRLEN, "%s", canon);
}

/* candidates: where |cl| may be reached directly: observed, then HELLO's, then PUNCH_REQUEST's. */
static void candidates(pos_ctrl_addrs *out, const relay_broker_client *cl)
{
    char observed[POS_ADDR_STRLEN];

    memset(out, 0, sizeof(*out));
    if (pos_addr_format((const struct sockaddr *)&cl->cur, observed, sizeof(observed)) == 0)
        add_candidate(out, observed);
    for (uint8_t i = 0; i < cl->local.n; i++)
        add_candidate(out, cl->local.a[i]);
    for (uint8_t i = 0; i < cl->req_local.n; i++)
        add_candidate(out, cl->req_local.a[i]);
}

/*
 * punch_start: a new attempt on the circuit whose side 0 (the dialer, who
 * sent CONNECT) is |id0| of |a| and side 1 |id1| of |c|: PUNCH_START to
 * both with one fresh key, wiped once both messages are queued.
 */
static void punch_start(relay_broker *b, relay_broker_client *a, uint32_t id0,
                        relay_broker_client *c, uint32_t id1, int64_t now_ms)
{
    struct punch_slot *ps = &b->punch[(id0 & b->circuits->slot_mask) >> 1];
    pos_ctrl_msg m;

    if (ps->attempt == UINT16_MAX)
        return; /* the codec's limit: one attempt per minimum interval takes days to get here */
    ps->attempt++;
    ps->last_ms = now_ms;
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PUNCH_START;
    m.attempt = ps->attempt;
    randombytes_buf(m.punch_key, sizeof(m.punch_key));
    m.circuit_id = id0;
    m.peer_circuit_id = id1;
    m.start_in_ms = pos_punch_start_in_ms(a->rtt_ms, c->rtt_ms);
    m.role = POS_PUNCH_DIALER;
    m.peer_nat = c->nat; /* version 3 receivers only (the codec leaves it out below) */
    candidates(&m.addrs, c);
    b->ops.send(b->ops.arg, a->conn, &m);
    m.circuit_id = id1;
    m.peer_circuit_id = id0;
    m.start_in_ms = pos_punch_start_in_ms(c->rtt_ms, a->rtt_ms);
    m.role = POS_PUNCH_LISTENER;
    m.peer_nat = a->nat;
    candidates(&m.addrs, a);
    b->ops.send(b->ops.arg, c->conn, &m);
    pos_ctrl_msg_wipe(&m);
    b->st.punches_started++;
    pos_log_debug("circuit %08x/%08x: punch attempt %u", id0, id1, (unsigned)ps->attempt);
}

static int can_punch(const relay_broker *b, const relay_broker_client *x,
                     const relay_broker_client *y)
{
    return b->punch_on && x->version >= POS_CTRL_V2 && y->version >= POS_CTRL_V2;
}

/*
 * own_side: the side |id| of an open circuit when it is |cl|'s, with the
 * clients of side 0 and side 1 and their ids; NULL when not |cl|'s (closed
 * meanwhile, or never its own).
 */
static relay_side *own_side(relay_broker *b, relay_broker_client *cl, uint32_t id,
                            relay_broker_client *who[2], uint32_t ids[2])
{
    relay_side *s = relay_circuit_find(b->circuits, id);
    relay_side *p;
    if (!s || s->owner != &cl->owner)
        return NULL;
    p = relay_circuit_peer(b->circuits, s);
    if (!p->owner)
        return NULL;
    int k = (int)((uint32_t)(s - b->circuits->sides) & 1u);
    who[k] = cl;
    ids[k] = s->id;
    who[k ^ 1] = p->owner->conn;
    ids[k ^ 1] = p->id;
    return s;
}

/* handle_punch_request: a new attempt unless too soon, the peer is v1 or punching is off. */
static void handle_punch_request(relay_broker *b, relay_broker_client *cl, const pos_ctrl_msg *m,
                                 int64_t now_ms)
{
    relay_broker_client *who[2];
    uint32_t ids[2];
    const struct punch_slot *ps;

    b->st.punch_requests++;
    cl->req_local = m->addrs; /* its addresses now, for this and every later attempt */
    if (!own_side(b, cl, m->circuit_id, who, ids) || !can_punch(b, who[0], who[1])) {
        b->st.punch_requests_ignored++;
        return;
    }
    ps = &b->punch[(ids[0] & b->circuits->slot_mask) >> 1];
    if (ps->attempt > 0 && now_ms - ps->last_ms < b->punch_min_interval_ms) {
        b->st.punch_requests_ignored++;
        return;
    }
    punch_start(b, who[0], ids[0], who[1], ids[1], now_ms);
}

/* handle_punch_report: counted for /metrics, nothing else (the relay trusts no outcome). */
static void handle_punch_report(relay_broker *b, relay_broker_client *cl, const pos_ctrl_msg *m)
{
    relay_broker_client *who[2];
    uint32_t ids[2];

    if (!own_side(b, cl, m->circuit_id, who, ids) || m->outcome < POS_CTRL_PUNCH_DIRECT ||
        m->outcome > POS_CTRL_PUNCH_FELL_BACK) {
        b->st.punch_reports_ignored++;
        return;
    }
    b->st.punch_reports[m->outcome - 1]++;
    if (m->outcome == POS_CTRL_PUNCH_DIRECT)
        b->st.punch_direct_ms_sum += m->ms_to_direct;
}

void relay_broker_moved(relay_broker *b, relay_broker_client *cl, const struct sockaddr *addr,
                        int64_t now_ms)
{
    size_t len = ip_len(addr);
    int started = 0;
    if (len == 0)
        return;
    memset(&cl->cur, 0, sizeof(cl->cur));
    memcpy(&cl->cur, addr, len);
    relay_circuit_owner_set_addr(b->circuits, &cl->owner, (const struct sockaddr *)&cl->cur);
    if (cl->closing)
        return;
    /* punching again (docs/protocol.md "Hole punching"): its candidates changed */
    for (uint32_t slot = cl->owner.head; slot; slot = b->circuits->sides[slot - 1].next) {
        relay_broker_client *who[2];
        uint32_t ids[2];
        const struct punch_slot *ps;
        if (!own_side(b, cl, b->circuits->sides[slot - 1].id, who, ids) ||
            !can_punch(b, who[0], who[1]))
            continue;
        ps = &b->punch[(ids[0] & b->circuits->slot_mask) >> 1];
        if (ps->attempt > 0 && now_ms - ps->last_ms < b->punch_min_interval_ms) {
            b->st.punch_moves_ignored++;
            continue;
        }
        punch_start(b, who[0], ids[0], who[1], ids[1], now_ms);
        b->st.punches_on_move++;
        started = 1;
    }
    if (started)
        done(b);
}

/* open_circuit joins the requester |a| and the target |c| of |q| and tells both. */
static void open_circuit(relay_broker *b, relay_broker_req *q, relay_broker_client *a,
                         relay_broker_client *c, int64_t now_ms)
{
    uint32_t ids[2];
    pos_ctrl_msg out;

    if (relay_circuit_open(b->circuits, &a->owner, (const struct sockaddr *)&a->cur, a->budget,
                           &c->owner, (const struct sockaddr *)&c->cur, c->budget, now_ms,
                           ids) != 0) {
        send_error(b, a, q->from_req, POS_CTRL_CODE_BUSY, "relay has no circuit left");
        send_error(b, c, q->to_req, POS_CTRL_CODE_BUSY, "relay has no circuit left");
        return;
    }
    if (b->ops.circuit_opened)
        b->ops.circuit_opened(b->ops.arg, a->budget, c->budget);
    b->st.circuits_opened++;
    memset(&out, 0, sizeof(out));
    out.type = POS_CTRL_CIRCUIT;
    out.req_id = q->from_req;
    out.circuit_id = ids[0];
    fill_peer(&out, c);
    b->ops.send(b->ops.arg, a->conn, &out);
    out.req_id = q->to_req;
    out.circuit_id = ids[1];
    fill_peer(&out, a);
    b->ops.send(b->ops.arg, c->conn, &out);
    pos_log_debug("circuit %08x/%08x: %s <-> %s", ids[0], ids[1], a->peer_id, c->peer_id);
    b->punch[(ids[0] & b->circuits->slot_mask) >> 1] = (struct punch_slot){0, 0};
    if (can_punch(b, a, c))
        punch_start(b, a, ids[0], c, ids[1], now_ms);
}

static void handle_answer(relay_broker *b, relay_broker_client *c, const pos_ctrl_msg *m,
                          int64_t now_ms)
{
    relay_broker_req *q = find_incoming(b, c, m->req_id);
    relay_broker_client *a;

    if (!q)
        return; /* late: the requester left or the request timed out */
    a = q->from;
    if (m->type == POS_CTRL_DECLINE)
        send_error(b, a, q->from_req, POS_CTRL_CODE_DECLINED, "peer declined");
    /* again: the requests in flight when the CONNECT was checked may have reached a cap */
    else if (!(refuse_over_limit(b, a, q->from_req, c) | refuse_over_limit(b, c, q->to_req, a)))
        open_circuit(b, q, a, c, now_ms);
    req_free(b, q);
}

int relay_broker_request(relay_broker *b, relay_broker_client *cl, const pos_ctrl_msg *m,
                         int64_t now_ms)
{
    /* CONNECT, ACCEPT (version 3): the client learnt its mapping after HELLO */
    if (m->hello_flags & POS_CTRL_HELLO_NAT_VARIES)
        cl->nat = POS_CTRL_NAT_VARIES;
    else if (m->hello_flags & POS_CTRL_HELLO_NAT_EIM)
        cl->nat = POS_CTRL_NAT_EIM;
    switch (m->type) {
    case POS_CTRL_CONNECT:
        handle_connect(b, cl, m, now_ms);
        break;
    case POS_CTRL_ACCEPT:
    case POS_CTRL_DECLINE:
        handle_answer(b, cl, m, now_ms);
        break;
    case POS_CTRL_PUNCH_REQUEST:
        if (cl->version < POS_CTRL_V2)
            return -1;
        handle_punch_request(b, cl, m, now_ms);
        break;
    case POS_CTRL_PUNCH_REPORT:
        if (cl->version < POS_CTRL_V2)
            return -1;
        handle_punch_report(b, cl, m);
        break;
    default:
        return -1;
    }
    done(b);
    return 0;
}

void relay_broker_lookup_done(relay_broker_req *q, int status, const relay_presence_found *f)
{
    relay_broker *b = q->b;
    pos_ctrl_msg m;

    q->lookup = 0;
    if (status == RELAY_PRESENCE_FOUND && f) {
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_REDIRECT;
        m.req_id = q->from_req;
        snprintf(m.relay_id, sizeof(m.relay_id), "%s", f->relay_id);
        snprintf(m.peer_id, sizeof(m.peer_id), "%s", f->peer_id);
        for (size_t i = 0; i < f->n_addrs && i < POS_CTRL_MAX_ADDRS; i++)
            snprintf(m.addrs.a[m.addrs.n++], POS_ADDR_STRLEN, "%s", f->addrs[i]);
        b->st.redirects++;
        b->ops.send(b->ops.arg, q->from->conn, &m);
    } else if (status == RELAY_PRESENCE_UNAVAILABLE) {
        send_error(b, q->from, q->from_req, POS_CTRL_CODE_UNAVAILABLE,
                   "relay temporarily unavailable, try again later");
    } else {
        send_error(b, q->from, q->from_req, POS_CTRL_CODE_PEER_NOT_CONNECTED, "peer not connected");
    }
    req_free(b, q);
    done(b);
}

void relay_broker_expire(relay_broker *b, int64_t now_ms)
{
    relay_broker_req *q;
    while (((q = b->waits[0].head) && q->deadline_ms <= now_ms) ||
           ((q = b->waits[1].head) && q->deadline_ms <= now_ms)) {
        send_error(b, q->from, q->from_req, POS_CTRL_CODE_TIMEOUT, "peer did not answer");
        req_free(b, q);
    }
    b->woken_for = -2; /* the caller's timer has fired: always tell it again */
    done(b);
}

struct closing_ctx {
    relay_broker *b;
    relay_broker_client *ending;
};

/* on_circuit_closed tells the side that is still there; usage stops counting the circuit. */
static void on_circuit_closed(void *arg, const relay_circuit_info *info)
{
    struct closing_ctx *x = arg;
    relay_broker *b = x->b;
    pos_ctrl_msg m;
    for (int k = 0; k < 2; k++) {
        relay_broker_client *other = info->owner[k] ? info->owner[k]->conn : NULL;
        if (!other || other == x->ending)
            continue;
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_CIRCUIT_CLOSED;
        m.circuit_id = info->id[k];
        m.code = POS_CTRL_CODE_PEER_LEFT;
        b->ops.send(b->ops.arg, other->conn, &m);
    }
    if (b->ops.circuit_closed)
        b->ops.circuit_closed(b->ops.arg, info);
    b->st.circuits_closed++;
}

void relay_broker_leave(relay_broker *b, relay_broker_client *cl, int64_t now_ms)
{
    struct closing_ctx x = {b, cl};

    relay_circuit_owner_close(b->circuits, &cl->owner, now_ms, on_circuit_closed, &x);
    for (relay_broker_req *q = b->reqs, *next; q; q = next) {
        next = q->next;
        if (q->from == cl) {
            req_free(b, q);
        } else if (q->to == cl) {
            send_error(b, q->from, q->from_req, POS_CTRL_CODE_PEER_LEFT, "peer left");
            req_free(b, q);
        }
    }
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        b->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    free(cl);
    done(b);
}

void relay_broker_woken(relay_broker *b, relay_broker_client *cl, int64_t now_ms)
{
    int asked = 0;
    if (!cl->home || cl->closing)
        return;
    for (relay_broker_req *q = b->reqs; q; q = q->next) {
        if (!q->parked || q->from == cl || strcmp(q->peer_id, cl->peer_id) != 0)
            continue;
        wait_unlink(b, q);
        q->parked = 0;
        ask(b, q, cl, now_ms); /* a fresh deadline: the woken client answers like any other */
        asked = 1;
    }
    if (asked)
        done(b);
}

int relay_broker_idle(const relay_broker *b, const relay_broker_client *cl)
{
    if (cl->owner.count || cl->n_req)
        return 0;
    for (const relay_broker_req *q = b->reqs; q; q = q->next)
        if (q->to == cl)
            return 0;
    return 1;
}

void relay_broker_stats_get(const relay_broker *b, relay_broker_stats *out)
{
    *out = b->st;
    out->requests_pending = b->n_reqs;
}
