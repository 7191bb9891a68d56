/*
 * The client's side of parking (client-lib/src/relay_park.c) on the
 * endpoint's I/O seam, with the time given explicitly: when an idle home
 * connection asks to park, PARKED and its refusal, the keep-alives that go
 * out (type, record, counters, mac under the key), acks taken or dropped
 * (forged, replayed, from another address, another record), wakes taken
 * once, one keep-alive in RELAY_PARK_ACK_EVERY asking for an ack (and the
 * first and a roaming one), the resends after 2 s and the reconnect after
 * three of them unanswered, and the keep-alive interval chosen from the relay's and ours.
 * The datagrams are real common/park.c encodings; the end-to-end behaviour
 * with a real relay is tests/p2p/test_park_e2e.py.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "check.h"
#include "internal.h"
#include "park.h"
#include "relay_park.h"

#define MAX_SENT 64

static struct {
    unsigned n;
    uint8_t d[MAX_SENT][64];
    size_t len[MAX_SENT];
    struct sockaddr_in to[MAX_SENT];
} wire;

static int cap_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                    socklen_t tolen)
{
    (void)arg;
    (void)sock;
    if (wire.n < MAX_SENT && len <= sizeof(wire.d[0]) && tolen == sizeof(struct sockaddr_in)) {
        memcpy(wire.d[wire.n], data, len);
        wire.len[wire.n] = len;
        memcpy(&wire.to[wire.n], to, sizeof(struct sockaddr_in));
        wire.n++;
    }
    return 0;
}

static const uint8_t key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t other_key[32] = {9, 9, 9};
#define RECORD 0x0000000700000042ull

static struct sockaddr_storage relay_addr(unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(0x7f000001);
    return ss;
}

/* last_of: the last datagram, decoded and verified under |k|, when of |type| (0: any of the
 * client's); its counter, or 0 when none. */
static uint64_t last_of(const uint8_t *k, uint8_t type)
{
    pos_park_msg m;
    if (!wire.n || pos_park_decode(wire.d[wire.n - 1], wire.len[wire.n - 1], &m) != 0 ||
        m.record_id != RECORD || pos_park_verify(&m, k) != 0)
        return 0;
    if (type ? m.type != type : m.type != POS_PARK_KEEPALIVE && m.type != POS_PARK_QUIET)
        return 0;
    return m.counter;
}

/* last_ka: the last datagram was a keep-alive asking for an ack: its counter, or 0. */
static uint64_t last_ka(const uint8_t *k)
{
    return last_of(k, POS_PARK_KEEPALIVE);
}

static int feed(struct relay_park *p, uint8_t type, uint64_t record, uint64_t counter,
                const uint8_t *k, unsigned port)
{
    uint8_t buf[POS_PARK_LEN];
    struct sockaddr_storage from = relay_addr(port);
    pos_park_encode(buf, sizeof(buf), type, record, counter, k);
    return relay_park_input(p, buf, sizeof(buf), (struct sockaddr *)&from,
                            sizeof(struct sockaddr_in));
}

/* park_now: an idle connection asks at 1000 ms and is parked (keep-alive 25 s) at 1040 ms. */
static void park_now(struct relay_park *p, pos_p2p_endpoint *ep)
{
    pos_ctrl_msg m;
    struct sockaddr_storage to = relay_addr(7373);
    relay_park_set_key(p, key);
    CHECK(relay_park_deadline(p, 1) == 1000);
    CHECK(relay_park_timer(p, 999, 1) == RELAY_PARK_NOTHING);
    CHECK(relay_park_timer(p, 1000, 1) == RELAY_PARK_ASK);
    relay_park_asked(p, 7, 1000);
    CHECK(relay_park_state(p) == RELAY_PARK_ASKED);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PARKED;
    m.req_id = 8; /* not our PARK's */
    m.record_id = RECORD;
    m.keepalive_s = 25;
    m.lifetime_s = 120;
    CHECK(relay_park_parked(p, &m, 1010) == -1);
    m.req_id = 7;
    CHECK(relay_park_parked(p, &m, 1010) == 0);
    CHECK(relay_park_deadline(p, 1) == 1010 + RELAY_PARK_FREE_MS);
    CHECK(relay_park_timer(p, 1010 + RELAY_PARK_FREE_MS, 1) == RELAY_PARK_FREE);
    wire.n = 0;
    relay_park_enter(p, 0, &to, 1050);
    CHECK(relay_park_state(p) == RELAY_PARK_PARKED);
    CHECK(wire.n == 1 && wire.len[0] == POS_PARK_LEN && last_ka(key) == 1);
    CHECK(wire.n == 1 && ntohs(wire.to[0].sin_port) == 7373);
    CHECK(last_ka(other_key) == 0); /* the mac is the key's */
    CHECK(relay_park_keepalive_ms(p) ==
          (ep_park_keepalive_ms(ep) ? ep_park_keepalive_ms(ep) : 25000));
    (void)ep;
}

static void test_acks_and_wakes(pos_p2p_endpoint *ep)
{
    struct relay_park *p = relay_park_create(ep, 0);
    park_now(p, ep);
    /* not ours: another address, another record; forged: another key */
    CHECK(feed(p, POS_PARK_ACK, RECORD, 1, key, 7374) == 1);
    CHECK(feed(p, POS_PARK_ACK, RECORD + 1, 1, key, 7373) == 1);
    CHECK(feed(p, POS_PARK_ACK, RECORD, 1, other_key, 7373) == 0);
    CHECK(feed(p, POS_PARK_ACK, RECORD, 2, key, 7373) == 0);         /* a counter never sent */
    CHECK(relay_park_deadline(p, 1) == 1050 + RELAY_PARK_RESEND_MS); /* still unanswered */
    CHECK(feed(p, POS_PARK_ACK, RECORD, 1, key, 7373) == 0);
    CHECK(relay_park_deadline(p, 1) == 1050 + 25000); /* answered: the next regular one */
    /* a keep-alive is no wake, a wake is taken once */
    CHECK(feed(p, POS_PARK_KEEPALIVE, RECORD, 5, key, 7373) == 0);
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 5, other_key, 7373) == 0);
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 5, key, 7373) == 2);
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 5, key, 7373) == 0); /* replayed */
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 4, key, 7373) == 0); /* older */
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 6, key, 7373) == 2);
    relay_park_leave(p, POS_P2P_AWAKE_WOKEN, 2000);
    CHECK(relay_park_state(p) == RELAY_PARK_AWAKE);
    CHECK(relay_park_awake_code(p) == POS_P2P_AWAKE_WOKEN);
    CHECK(feed(p, POS_PARK_WAKE, RECORD, 7, key, 7373) == 1); /* awake: not parked any more */
    CHECK(relay_park_deadline(p, 1) == -1);                   /* key wiped: a new one first */
    relay_park_free(p);
}

static void test_lost(pos_p2p_endpoint *ep)
{
    struct relay_park *p = relay_park_create(ep, 0);
    int64_t t;
    park_now(p, ep);
    CHECK(feed(p, POS_PARK_ACK, RECORD, 1, key, 7373) == 0);
    /* the next ones want no ack (PARK_QUIET): nothing waits for an answer; one of the next
     * RELAY_PARK_ACK_EVERY asks (where among them is random: clients parked together do
     * not ask in step), then exactly one in RELAY_PARK_ACK_EVERY */
    t = 1050;
    uint64_t c = 2, asked = 0;
    for (; c <= 1 + RELAY_PARK_ACK_EVERY && !asked; c++) {
        t += 25000;
        CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_NOTHING);
        if (last_ka(key) == c) {
            asked = c;
            CHECK(feed(p, POS_PARK_ACK, RECORD, c, key, 7373) == 0);
        } else {
            CHECK(last_of(key, POS_PARK_QUIET) == c && relay_park_deadline(p, 1) == t + 25000);
        }
    }
    CHECK(asked >= 2 && asked <= 1 + RELAY_PARK_ACK_EVERY);
    for (c = asked + 1; c < asked + RELAY_PARK_ACK_EVERY; c++) {
        t += 25000;
        CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_NOTHING && last_of(key, POS_PARK_QUIET) == c);
    }
    t += 25000;
    asked += RELAY_PARK_ACK_EVERY;
    CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_NOTHING && last_ka(key) == asked);
    CHECK(relay_park_deadline(p, 1) == t + RELAY_PARK_RESEND_MS);
    /* unanswered: again every 2 s with the next counter, three times */
    for (c = asked + 1; c <= asked + 3; c++) {
        t += RELAY_PARK_RESEND_MS;
        CHECK(relay_park_timer(p, t - 1, 1) == RELAY_PARK_NOTHING && last_ka(key) == c - 1);
        CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_NOTHING && last_ka(key) == c);
    }
    /* the third resend unanswered too: reconnect */
    t += RELAY_PARK_RESEND_MS;
    CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_REJOIN);
    CHECK(relay_park_awake_code(p) == POS_P2P_AWAKE_LOST);
    CHECK(relay_park_state(p) == RELAY_PARK_AWAKE);
    relay_park_free(p);

    /* keep-alives more often than the resends (1 s): lost all the same after 2 s x 4 */
    pos_p2p_endpoint_set_park(ep, 1000, 1000);
    p = relay_park_create(ep, 0);
    park_now(p, ep);
    CHECK(relay_park_keepalive_ms(p) == 1000);
    for (t = 1050 + 1000; t < 1050 + 4 * RELAY_PARK_RESEND_MS; t += 500)
        CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_NOTHING);
    CHECK(last_of(key, 0) >= 8); /* one a second, and the resends */
    CHECK(relay_park_timer(p, 1050 + 4 * RELAY_PARK_RESEND_MS, 1) == RELAY_PARK_REJOIN);
    relay_park_free(p);
    pos_p2p_endpoint_set_park(ep, 1000, 0);

    /* an ack in the middle of a series ends it */
    p = relay_park_create(ep, 0);
    park_now(p, ep);
    CHECK(relay_park_timer(p, 1050 + RELAY_PARK_RESEND_MS, 1) == RELAY_PARK_NOTHING);
    CHECK(last_ka(key) == 2);
    CHECK(feed(p, POS_PARK_ACK, RECORD, 1, key, 7373) == 0); /* the first, late */
    CHECK(relay_park_deadline(p, 1) == 1050 + RELAY_PARK_RESEND_MS + 25000);
    /* a quiet one, then the address changes: the keep-alive that moves the record asks */
    CHECK(relay_park_timer(p, 1050 + RELAY_PARK_RESEND_MS + 25000, 1) == RELAY_PARK_NOTHING);
    CHECK(last_of(key, POS_PARK_QUIET) == 3);
    relay_park_roam(p, 30000);
    CHECK(last_ka(key) == 4 && relay_park_deadline(p, 1) == 30000 + RELAY_PARK_RESEND_MS);
    relay_park_free(p);
}

static void test_asking(pos_p2p_endpoint *ep)
{
    struct relay_park *p = relay_park_create(ep, 0);
    pos_ctrl_msg m;
    CHECK(relay_park_deadline(p, 1) == -1); /* no key yet: never asks */
    relay_park_set_key(p, key);
    CHECK(relay_park_deadline(p, 0) == -1); /* not parkable (circuits, not v4...) */
    /* busy with a CONNECT: the idle clock starts again instead */
    relay_park_request(p, 3);
    CHECK(relay_park_pending(p) == 1);
    CHECK(relay_park_timer(p, 1000, 1) == RELAY_PARK_NOTHING);
    CHECK(relay_park_deadline(p, 1) == 2000);
    relay_park_answered(p, 3);
    CHECK(relay_park_pending(p) == 0);
    relay_park_activity(p, 1500);
    CHECK(relay_park_deadline(p, 1) == 2500);
    CHECK(relay_park_timer(p, 2500, 1) == RELAY_PARK_ASK);
    relay_park_asked(p, 9, 2500);
    /* refused (ERROR busy): awake, asks again after twice the idle time */
    CHECK(relay_park_error(p, 10, 2600) == 0);
    CHECK(relay_park_error(p, 9, 2600) == 1);
    CHECK(relay_park_state(p) == RELAY_PARK_AWAKE && relay_park_deadline(p, 1) == 4600);
    /* no answer at all: given up after RELAY_PARK_ASK_MS, then four times the idle time */
    CHECK(relay_park_timer(p, 4600, 1) == RELAY_PARK_ASK);
    relay_park_asked(p, 11, 4600);
    CHECK(relay_park_timer(p, 4600 + RELAY_PARK_ASK_MS, 1) == RELAY_PARK_NOTHING);
    CHECK(relay_park_state(p) == RELAY_PARK_AWAKE);
    CHECK(relay_park_deadline(p, 1) == 4600 + RELAY_PARK_ASK_MS + 4000);
    {
        /* its PARKED comes late (a loaded relay): the relay has parked us, so we park too */
        struct relay_park *q = relay_park_create(ep, 0);
        relay_park_set_key(q, key);
        relay_park_asked(q, 31, 100);
        CHECK(relay_park_timer(q, 100 + RELAY_PARK_ASK_MS, 1) == RELAY_PARK_NOTHING);
        CHECK(relay_park_state(q) == RELAY_PARK_AWAKE);
        memset(&m, 0, sizeof(m));
        m.type = POS_CTRL_PARKED;
        m.record_id = RECORD;
        m.keepalive_s = 25;
        m.lifetime_s = 120;
        m.req_id = 30; /* not a PARK of ours */
        CHECK(relay_park_parked(q, &m, 100 + RELAY_PARK_ASK_MS + 50) == -1);
        m.req_id = 31;
        CHECK(relay_park_parked(q, &m, 100 + RELAY_PARK_ASK_MS + 50) == 0);
        CHECK(relay_park_state(q) == RELAY_PARK_FREEING);
        CHECK(relay_park_parked(q, &m, 100 + RELAY_PARK_ASK_MS + 60) == -1); /* once */
        relay_park_free(q);
        /* late while a newer PARK is asked: taken too */
        q = relay_park_create(ep, 0);
        relay_park_set_key(q, key);
        relay_park_asked(q, 40, 0);
        CHECK(relay_park_timer(q, RELAY_PARK_ASK_MS, 1) == RELAY_PARK_NOTHING);
        int64_t again = relay_park_deadline(q, 1);
        CHECK(relay_park_timer(q, again, 1) == RELAY_PARK_ASK);
        relay_park_asked(q, 41, again);
        m.req_id = 40;
        CHECK(relay_park_parked(q, &m, again + 10) == 0);
        CHECK(relay_park_state(q) == RELAY_PARK_FREEING);
        relay_park_free(q);
    }
    for (int i = 0; i < 30; i++) { /* refused again and again: at most an hour apart */
        int64_t t = relay_park_deadline(p, 1);
        CHECK(relay_park_timer(p, t, 1) == RELAY_PARK_ASK);
        relay_park_asked(p, 20 + (uint32_t)i, t);
        CHECK(relay_park_error(p, 20 + (uint32_t)i, t) == 1);
        CHECK(relay_park_deadline(p, 1) - t <= RELAY_PARK_RETRY_MAX_MS);
    }
    /* our keep-alive interval when shorter than the relay's, else the relay's */
    pos_p2p_endpoint_set_park(ep, 1000, 5000);
    relay_park_activity(p, 0);
    CHECK(relay_park_deadline(p, 1) == RELAY_PARK_RETRY_MAX_MS);
    CHECK(relay_park_timer(p, RELAY_PARK_RETRY_MAX_MS, 1) == RELAY_PARK_ASK);
    relay_park_asked(p, 12, 0);
    memset(&m, 0, sizeof(m));
    m.type = POS_CTRL_PARKED;
    m.req_id = 12;
    m.record_id = RECORD;
    m.keepalive_s = 25;
    m.lifetime_s = 120;
    CHECK(relay_park_parked(p, &m, 0) == 0);
    {
        struct sockaddr_storage to = relay_addr(7373);
        relay_park_enter(p, 0, &to, 100);
    }
    CHECK(relay_park_keepalive_ms(p) == 5000);
    /* parked once: the refusals' wait is forgotten */
    relay_park_leave(p, POS_P2P_AWAKE_WOKEN, 200);
    relay_park_set_key(p, key);
    CHECK(relay_park_deadline(p, 1) == 200 + 1000);
    relay_park_free(p);
    pos_p2p_endpoint_set_park(ep, 1000, 0);
}

int main(void)
{
    pos_identity key_pair;
    pos_p2p_identity *id;
    pos_p2p_endpoint *ep = NULL;
    struct sockaddr_storage local = relay_addr(40000);
    ep_io io = {cap_send, NULL};

    pos_identity_generate(&key_pair);
    id = p2p_identity_new(&key_pair);
    pos_identity_free(&key_pair);
    CHECK(id != NULL);
    CHECK(ep_new_io(&ep, id, &io, &local) == 0);
    /* the setting's ranges */
    CHECK(pos_p2p_endpoint_set_park(NULL, 0, 0) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, 999, 0) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, 86400001, 0) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, -1, 0) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, 1000, 999) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, 1000, 3600001) == POS_P2P_ERR_INVALID_ARGUMENT);
    CHECK(pos_p2p_endpoint_set_park(ep, 0, 0) == 0);
    {
        struct relay_park *p = relay_park_create(ep, 0);
        relay_park_set_key(p, key);
        CHECK(relay_park_deadline(p, 1) == -1); /* parking off: never asks */
        relay_park_free(p);
    }
    CHECK(pos_p2p_endpoint_set_park(ep, 1000, 0) == 0);
    CHECK(pos_p2p_relay_parked(NULL) == 0);
    test_acks_and_wakes(ep);
    test_lost(ep);
    test_asking(ep);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return check_finish("p2p-park");
}
