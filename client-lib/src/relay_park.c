/*
 * Parking of a home relay connection (see relay_park.h): the idle clock,
 * PARK / PARKED, then keep-alives, acks and wakes (docs/protocol.md,
 * "Parking"). The park key is a secret: wiped whenever it is replaced or
 * the state leaves parking, and never logged.
 */
#include "relay_park.h"

#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "park.h"

#define MAX_PENDING 64 /* CONNECTs tracked until answered (more: the oldest is forgotten) */

struct relay_park {
    pos_p2p_endpoint *ep;
    uint8_t key[POS_PARK_KEY_LEN];
    uint8_t has_key;
    uint8_t state;      /* enum relay_park_state */
    uint8_t awake_code; /* why the last reconnect (POS_P2P_RELAY_EV_AWAKE's code) */
    int64_t idle_since; /* last activity (ms) */
    int64_t retry_ms;   /* after refused or unanswered PARKs: the wait before asking again */
    uint32_t park_req;  /* the PARK's request id while asked */
    uint32_t late_req;  /* a PARK given up unanswered (0: none): its PARKED is still taken */
    int64_t due;        /* ASKED: give up; FREEING: free the QUIC connection */
    uint32_t pending[MAX_PENDING];
    unsigned n_pending;
    /* parked */
    uint64_t record_id;
    int64_t interval_ms; /* keep-alives this often */
    uint64_t sent;       /* counter of the last keep-alive sent */
    uint64_t acked;      /* the highest counter acknowledged */
    uint64_t wake;       /* the highest wake counter taken */
    int64_t next_ka;     /* next regular keep-alive */
    int64_t resend_at;   /* a keep-alive unanswered: send again then (-1: none waiting) */
    unsigned resends;    /* resends since the last ack */
    unsigned quiet;      /* PARK_QUIETs since the last keep-alive that asked for an ack */
    uint32_t addr_gen;   /* ep_addr_gen when parked or last roamed */
    int sock;
    struct sockaddr_storage relay;
};

struct relay_park *relay_park_create(pos_p2p_endpoint *ep, int64_t now_ms)
{
    struct relay_park *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->ep = ep;
    p->idle_since = now_ms;
    p->resend_at = -1;
    return p;
}

static void wipe_key(struct relay_park *p)
{
    sodium_memzero(p->key, sizeof(p->key));
    p->has_key = 0;
}

void relay_park_free(struct relay_park *p)
{
    if (!p)
        return;
    wipe_key(p);
    free(p);
}

int relay_park_derive(struct relay_park *p, gnutls_session_t tls)
{
    uint8_t key[POS_PARK_KEY_LEN];
    wipe_key(p);
    if (!tls || pos_park_derive_key(tls, key) != 0)
        return -1;
    relay_park_set_key(p, key);
    sodium_memzero(key, sizeof(key));
    return 0;
}

void relay_park_set_key(struct relay_park *p, const uint8_t key[32])
{
    memcpy(p->key, key, POS_PARK_KEY_LEN);
    p->has_key = 1;
}

int relay_park_state(const struct relay_park *p)
{
    return p ? p->state : RELAY_PARK_AWAKE;
}

int relay_park_awake_code(const struct relay_park *p)
{
    return p->awake_code;
}

void relay_park_activity(struct relay_park *p, int64_t now_ms)
{
    if (p)
        p->idle_since = now_ms;
}

void relay_park_request(struct relay_park *p, uint32_t req_id)
{
    if (!p)
        return;
    if (p->n_pending == MAX_PENDING) { /* forget the oldest: it only delays parking */
        memmove(p->pending, p->pending + 1, (MAX_PENDING - 1) * sizeof(p->pending[0]));
        p->n_pending--;
    }
    p->pending[p->n_pending++] = req_id;
}

void relay_park_answered(struct relay_park *p, uint32_t req_id)
{
    for (unsigned i = 0; p && i < p->n_pending; i++)
        if (p->pending[i] == req_id) {
            p->pending[i] = p->pending[--p->n_pending];
            return;
        }
}

int relay_park_pending(const struct relay_park *p)
{
    return p ? (int)p->n_pending : 0;
}

int64_t relay_park_keepalive_ms(const struct relay_park *p)
{
    return p && p->state == RELAY_PARK_PARKED ? p->interval_ms : 0;
}

int64_t relay_park_deadline(const struct relay_park *p, int can_park)
{
    int idle_ms = ep_park_idle_ms(p->ep);
    int64_t d;
    switch (p->state) {
    case RELAY_PARK_AWAKE:
        return can_park && idle_ms > 0 && p->has_key
                   ? p->idle_since + (p->retry_ms > idle_ms ? p->retry_ms : idle_ms)
                   : -1;
    case RELAY_PARK_ASKED:
    case RELAY_PARK_FREEING:
        return p->due;
    default:
        d = p->next_ka;
        if (p->resend_at >= 0 && p->resend_at < d)
            d = p->resend_at;
        if (ep_addr_gen(p->ep) != p->addr_gen)
            d = 0; /* roaming: at once */
        return d;
    }
}

/*
 * send_keepalive sends the next counter now. One that asks for an ack
 * (|ask|, or every RELAY_PARK_ACK_EVERY-th) is a PARK_KEEPALIVE and is
 * resent when unanswered (or the next one is); the others are PARK_QUIET:
 * they hold the NAT mapping and the record and cost the relay no answer.
 */
static void send_keepalive(struct relay_park *p, int64_t now_ms, int ask)
{
    uint8_t buf[POS_PARK_LEN];
    if (p->quiet + 1 >= RELAY_PARK_ACK_EVERY)
        ask = 1;
    int n = pos_park_encode(buf, sizeof(buf), ask ? POS_PARK_KEEPALIVE : POS_PARK_QUIET,
                            p->record_id, ++p->sent, p->key);
    if (n > 0)
        ep_send(p->ep, p->sock, buf, (size_t)n, (const struct sockaddr *)&p->relay,
                pos_addr_len(&p->relay));
    if (ask) {
        p->quiet = 0;
        if (p->resend_at < 0)
            p->resend_at = now_ms + RELAY_PARK_RESEND_MS;
    } else {
        p->quiet++;
    }
    p->next_ka = now_ms + p->interval_ms;
}

void relay_park_goodbye(struct relay_park *p)
{
    uint8_t buf[POS_PARK_LEN];
    if (!p || p->state != RELAY_PARK_PARKED)
        return;
    /* twice, in case one is lost; the relay takes the first that arrives, drops the other */
    for (int i = 0; i < 2; i++) {
        int n = pos_park_encode(buf, sizeof(buf), POS_PARK_BYE, p->record_id, ++p->sent, p->key);
        if (n > 0)
            ep_send(p->ep, p->sock, buf, (size_t)n, (const struct sockaddr *)&p->relay,
                    pos_addr_len(&p->relay));
    }
}

/*
 * refused: awake again after a refused (or unanswered) PARK. The next ask waits twice as
 * long each time, up to RELAY_PARK_RETRY_MAX_MS: a relay with parking off (or full) is not
 * asked by every client every idle time.
 */
static void refused(struct relay_park *p, int64_t now_ms)
{
    int64_t idle_ms = ep_park_idle_ms(p->ep);
    p->state = RELAY_PARK_AWAKE;
    p->idle_since = now_ms;
    p->retry_ms = 2 * (p->retry_ms > idle_ms ? p->retry_ms : idle_ms);
    if (p->retry_ms > RELAY_PARK_RETRY_MAX_MS)
        p->retry_ms = RELAY_PARK_RETRY_MAX_MS;
}

int relay_park_timer(struct relay_park *p, int64_t now_ms, int can_park)
{
    int64_t d = relay_park_deadline(p, can_park);
    if (d < 0 || d > now_ms)
        return RELAY_PARK_NOTHING;
    switch (p->state) {
    case RELAY_PARK_AWAKE:
        if (!can_park || p->n_pending) {
            p->idle_since = now_ms;
            return RELAY_PARK_NOTHING;
        }
        return RELAY_PARK_ASK;
    case RELAY_PARK_ASKED: /* no answer: the relay does not park; try again later */
        refused(p, now_ms);
        p->late_req = p->park_req; /* a loaded relay may still answer: then it has parked us */
        return RELAY_PARK_NOTHING;
    case RELAY_PARK_FREEING:
        return RELAY_PARK_FREE;
    default:
        break;
    }
    if (ep_addr_gen(p->ep) != p->addr_gen) {
        p->addr_gen = ep_addr_gen(p->ep);
        relay_park_roam(p, now_ms);
        return RELAY_PARK_NOTHING;
    }
    if (p->resend_at >= 0 && now_ms >= p->resend_at) {
        if (p->resends >= RELAY_PARK_RESENDS) { /* 2 s after the third resend: no relay */
            relay_park_leave(p, POS_P2P_AWAKE_LOST, now_ms);
            return RELAY_PARK_REJOIN;
        }
        p->resends++;
        p->resend_at = -1;
        send_keepalive(p, now_ms, 1);
        return RELAY_PARK_NOTHING;
    }
    if (now_ms >= p->next_ka)
        send_keepalive(p, now_ms, 0); /* unanswered ones wait for their resend time */
    return RELAY_PARK_NOTHING;
}

void relay_park_asked(struct relay_park *p, uint32_t req_id, int64_t now_ms)
{
    p->state = RELAY_PARK_ASKED;
    p->park_req = req_id;
    p->due = now_ms + RELAY_PARK_ASK_MS;
}

int relay_park_error(struct relay_park *p, uint32_t req_id, int64_t now_ms)
{
    if (!p || p->state != RELAY_PARK_ASKED || req_id != p->park_req)
        return 0;
    refused(p, now_ms);
    return 1;
}

int relay_park_parked(struct relay_park *p, const pos_ctrl_msg *m, int64_t now_ms)
{
    int64_t want;
    if (!p || !p->has_key || m->req_id == 0)
        return -1;
    /*
     * The answer to the PARK asked, or a late one to a PARK given up: the relay
     * parked us then and frees its side of the connection, whatever we do;
     * staying awake on it would end in an idle timeout, unreachable meanwhile.
     */
    int late =
        m->req_id == p->late_req && (p->state == RELAY_PARK_AWAKE || p->state == RELAY_PARK_ASKED);
    if (!late && (p->state != RELAY_PARK_ASKED || m->req_id != p->park_req))
        return -1;
    p->late_req = 0;
    p->state = RELAY_PARK_FREEING;
    p->due = now_ms + RELAY_PARK_FREE_MS;
    p->retry_ms = 0;
    p->record_id = m->record_id;
    p->interval_ms = (int64_t)m->keepalive_s * 1000;
    want = ep_park_keepalive_ms(p->ep);
    if (want > 0 && want < p->interval_ms)
        p->interval_ms = want; /* more often than the relay asks is fine, never less */
    return 0;
}

void relay_park_enter(struct relay_park *p, int sock, const struct sockaddr_storage *relay,
                      int64_t now_ms)
{
    p->state = RELAY_PARK_PARKED;
    p->late_req = 0;
    p->sock = sock;
    p->relay = *relay;
    p->sent = p->acked = p->wake = 0;
    p->resends = p->quiet = 0;
    p->resend_at = -1;
    p->addr_gen = ep_addr_gen(p->ep);
    send_keepalive(p, now_ms, 1); /* the first is acknowledged: the record is there */
    /* the next that asks comes after 1..RELAY_PARK_ACK_EVERY: clients that parked together
     * (a relay's restart) do not ask in step, and any span of time sees 1 in ACK_EVERY ask */
    p->quiet = (unsigned)randombytes_uniform(RELAY_PARK_ACK_EVERY);
}

/* same_addr: |a| is the relay's address (family, address, port). */
static int same_addr(const struct relay_park *p, const struct sockaddr *a, socklen_t alen)
{
    const struct sockaddr *b = (const struct sockaddr *)&p->relay;
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return alen >= sizeof(*x) && x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return a->sa_family == AF_INET6 && alen >= sizeof(*x) && x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

int relay_park_input(struct relay_park *p, const uint8_t *data, size_t len,
                     const struct sockaddr *from, socklen_t fromlen)
{
    pos_park_msg m;
    if (!p || p->state != RELAY_PARK_PARKED || pos_park_decode(data, len, &m) != 0 ||
        m.record_id != p->record_id || !same_addr(p, from, fromlen))
        return 1;
    if (pos_park_verify(&m, p->key) != 0)
        return 0; /* forged: dropped silently */
    if (m.type == POS_PARK_ACK && m.counter > p->acked && m.counter <= p->sent) {
        p->acked = m.counter;
        p->resends = 0;
        p->resend_at = -1;
    } else if (m.type == POS_PARK_WAKE && m.counter > p->wake) {
        p->wake = m.counter;
        return 2;
    }
    return 0;
}

void relay_park_roam(struct relay_park *p, int64_t now_ms)
{
    if (!p || p->state != RELAY_PARK_PARKED)
        return;
    p->addr_gen = ep_addr_gen(p->ep);
    send_keepalive(p, now_ms, 1); /* moved: acknowledged, so a lost one is sent again */
}

void relay_park_leave(struct relay_park *p, int code, int64_t now_ms)
{
    p->state = RELAY_PARK_AWAKE;
    p->awake_code = (uint8_t)code;
    p->idle_since = now_ms;
    p->resend_at = -1;
    p->n_pending = 0;
    wipe_key(p);
}
