/*
 * Unit tests of the relay's parked-record table (relay/parking.c) without
 * sockets, Redis or a clock: record ids and their worker bits, lookups by
 * id and by peer, the keep-alive verdicts (valid, replayed, forged, too
 * soon, unknown, roaming; quiet ones that want no answer), the wake schedule, lifetimes and token
 * expiry, token groups, reuse of a freed index, and the full table.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "parking.h"

static struct sockaddr_in addr4(const char *ip, int port)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &in.sin_addr);
    return in;
}

static relay_parked *add(relay_park *t, uint8_t peer, const uint8_t *key, const char *token,
                         int64_t now, int *err)
{
    uint8_t pk[32];
    struct sockaddr_in a = addr4("192.0.2.1", 1000 + peer);
    relay_limits lim;
    memset(&lim, 0, sizeof(lim));
    memset(pk, 0, sizeof(pk));
    pk[0] = peer;
    pk[5] = (uint8_t)(peer * 7);
    return relay_park_add(t, pk, key, (struct sockaddr *)&a, 0, 3, token, &lim, NULL, now, err);
}

/* waking_at: relay_park_waking_at for ip:port (new connections from there skip the rate check). */
static int waking_at(const relay_park *t, const char *ip, int port)
{
    struct sockaddr_in a = addr4(ip, port);
    return relay_park_waking_at(t, (struct sockaddr *)&a);
}

static enum relay_park_verdict ka(relay_park *t, uint64_t id, uint64_t counter, const uint8_t *key,
                                  const char *ip, int port, int64_t now, int *moved, uint8_t *ack)
{
    uint8_t d[POS_PARK_LEN];
    struct sockaddr_in a = addr4(ip, port);
    relay_parked *r;
    pos_park_encode(d, sizeof(d), POS_PARK_KEEPALIVE, id, counter, key);
    return relay_park_keepalive(t, d, sizeof(d), (struct sockaddr *)&a, 1, now, ack, &r, moved);
}

static enum relay_park_verdict quiet(relay_park *t, uint64_t id, uint64_t counter,
                                     const uint8_t *key, const char *ip, int port, int64_t now,
                                     int *moved, uint8_t *ack)
{
    uint8_t d[POS_PARK_LEN];
    struct sockaddr_in a = addr4(ip, port);
    relay_parked *r;
    pos_park_encode(d, sizeof(d), POS_PARK_QUIET, id, counter, key);
    return relay_park_keepalive(t, d, sizeof(d), (struct sockaddr *)&a, 1, now, ack, &r, moved);
}

/* PARK_QUIET: taken like a keep-alive (refresh, roaming, replay, mac), never answered. */
static void test_quiet_keepalives(void)
{
    uint8_t key[32], other[32], ack[POS_PARK_LEN], untouched[POS_PARK_LEN];
    relay_circuits *circ = relay_circuits_new(1024, 1);
    relay_park *t = relay_park_new(4);
    int err = 0, moved = 0;

    randombytes_buf(key, sizeof(key));
    randombytes_buf(other, sizeof(other));
    relay_park_set_route(t, circ);
    relay_parked *r = add(t, 2, key, "tok-q", 1000, &err);
    CHECK(r != NULL);
    memset(ack, 0xa5, sizeof(ack));
    memcpy(untouched, ack, sizeof(ack));
    CHECK(quiet(t, r->id, 1, key, "192.0.2.1", 1002, 2000, &moved, ack) == RELAY_PARK_TAKEN);
    CHECK(!moved && r->seen_ms == 2000 && r->ka_counter == 1);
    CHECK(memcmp(ack, untouched, sizeof(ack)) == 0); /* nothing to send back */
    CHECK(quiet(t, r->id, 2, key, "192.0.2.1", 1002, 2500, &moved, ack) == RELAY_PARK_DROP_RATE);
    CHECK(quiet(t, r->id, 1, key, "192.0.2.1", 1002, 3100, &moved, ack) == RELAY_PARK_DROP_REPLAY);
    CHECK(quiet(t, r->id, 3, other, "192.0.2.1", 1002, 3100, &moved, ack) == RELAY_PARK_DROP_MAC);
    CHECK(quiet(t, r->id, 3, other, "203.0.113.5", 5555, 3100, &moved, ack) == RELAY_PARK_DROP_MAC);
    CHECK(r->addr.port == htons(1002) && r->seen_ms == 2000);
    /* a valid one from elsewhere moves the record, still without an answer */
    CHECK(quiet(t, r->id, 3, key, "203.0.113.5", 5555, 3200, &moved, ack) == RELAY_PARK_TAKEN);
    CHECK(moved && r->addr.port == htons(5555) && r->seen_ms == 3200);
    CHECK(memcmp(ack, untouched, sizeof(ack)) == 0);
    /* the counter is one for both kinds: a KEEPALIVE after it continues it, and is answered */
    CHECK(ka(t, r->id, 3, key, "203.0.113.5", 5555, 4300, &moved, ack) == RELAY_PARK_DROP_REPLAY);
    CHECK(ka(t, r->id, 4, key, "203.0.113.5", 5555, 4300, &moved, ack) == RELAY_PARK_ACKED);
    relay_park_del(t);
    relay_circuits_del(circ);
}

static void test_ids_and_keepalives(void)
{
    uint8_t key[32], other[32], ack[POS_PARK_LEN];
    relay_circuits *circ = relay_circuits_new(1024, 1);
    relay_park *t = relay_park_new(8);
    int err = 0, moved = 0;
    pos_park_msg m;

    randombytes_buf(key, sizeof(key));
    randombytes_buf(other, sizeof(other));
    CHECK(relay_circuits_set_workers(circ, 4) == 0);
    relay_park_set_route(t, circ);
    relay_parked *r = add(t, 1, key, "tok-a", 1000, &err);
    CHECK(r != NULL && r->id != 0 && t->n == 1);
    /* the high half routes like a circuit id: worker 3 of 4 */
    uint32_t route = pos_park_route(r->id);
    CHECK(((route >> circ->slot_bits) & 3) == 3);
    CHECK(relay_park_find(t, r->id) == r && relay_park_find(t, r->id ^ (1ull << 40)) == NULL);
    CHECK(relay_park_find_peer(t, r->peer_key) == r);

    /* valid: acknowledged with the same counter, maced under the key */
    CHECK(ka(t, r->id, 1, key, "192.0.2.1", 1001, 2000, &moved, ack) == RELAY_PARK_ACKED);
    CHECK(!moved && r->seen_ms == 2000);
    CHECK(pos_park_decode(ack, sizeof(ack), &m) == 0 && m.type == POS_PARK_ACK && m.counter == 1);
    CHECK(pos_park_verify(&m, key) == 0);
    /* within a second of the last one: dropped before any crypto */
    CHECK(ka(t, r->id, 2, key, "192.0.2.1", 1001, 2500, &moved, ack) == RELAY_PARK_DROP_RATE);
    /* replayed, forged, unknown */
    CHECK(ka(t, r->id, 1, key, "192.0.2.1", 1001, 3100, &moved, ack) == RELAY_PARK_DROP_REPLAY);
    CHECK(ka(t, r->id, 5, other, "192.0.2.1", 1001, 3100, &moved, ack) == RELAY_PARK_DROP_MAC);
    CHECK(ka(t, r->id + 1, 5, key, "192.0.2.1", 1001, 3100, &moved, ack) ==
          RELAY_PARK_DROP_UNKNOWN);
    uint8_t junk[POS_PARK_LEN] = {POS_PARK_WAKE};
    relay_parked *rr;
    CHECK(relay_park_keepalive(t, junk, 5, NULL, 0, 3100, ack, &rr, &moved) ==
          RELAY_PARK_DROP_FORM);
    CHECK(r->ka_counter == 1 && r->seen_ms == 2000); /* nothing of that changed the record */
    /* roaming: a valid one from elsewhere moves the record */
    CHECK(ka(t, r->id, 7, key, "198.51.100.9", 4444, 3200, &moved, ack) == RELAY_PARK_ACKED);
    CHECK(moved && r->addr.port == htons(4444) && r->sock == 1);
    /* roaming again within the second: judged on its mac at once, not kept for the resend */
    CHECK(ka(t, r->id, 8, key, "198.51.100.9", 4444, 3300, &moved, ack) == RELAY_PARK_DROP_RATE);
    CHECK(ka(t, r->id, 8, other, "203.0.113.5", 5555, 3300, &moved, ack) == RELAY_PARK_DROP_MAC);
    CHECK(r->addr.port == htons(4444)); /* a forgery from elsewhere moves nothing */
    CHECK(ka(t, r->id, 8, key, "203.0.113.5", 5555, 3300, &moved, ack) == RELAY_PARK_ACKED);
    CHECK(moved && r->addr.port == htons(5555) && r->ka_counter == 8);
    struct sockaddr_storage ss;
    CHECK(relay_park_addr(r, &ss) == sizeof(struct sockaddr_in) && ss.ss_family == AF_INET);

    /* freed and reused: the old id no longer finds the new record */
    uint64_t old = r->id;
    relay_park_remove(t, r);
    CHECK(t->n == 0 && relay_park_find(t, old) == NULL &&
          relay_park_token_find(t, "tok-a") == NULL);
    relay_parked *r2 = add(t, 2, key, "tok-a", 4000, &err);
    CHECK(r2 == r && r2->id != old && relay_park_find(t, old) == NULL);
    relay_park_del(t);
    relay_circuits_del(circ);
}

static int sent;
static uint64_t last_counter;
static void on_wake(void *arg, relay_parked *r, const uint8_t *d, size_t len)
{
    pos_park_msg m;
    CHECK(len == POS_PARK_LEN && pos_park_decode(d, len, &m) == 0 && m.type == POS_PARK_WAKE);
    CHECK(m.record_id == r->id && pos_park_verify(&m, arg) == 0);
    CHECK(m.counter > last_counter);
    last_counter = m.counter;
    sent++;
}

static void test_wakes(void)
{
    uint8_t key[32];
    relay_park *t = relay_park_new(4);
    int err;
    randombytes_buf(key, sizeof(key));
    relay_parked *r = add(t, 1, key, "tok", 0, &err);
    CHECK(relay_park_wake_due(t, 0, on_wake, key) == -1); /* nobody waking */
    CHECK(!waking_at(t, "192.0.2.1", 1001));
    relay_park_wake(t, r, 10000);
    CHECK(waking_at(t, "192.0.2.1", 1001) && !waking_at(t, "192.0.2.1", 1002) &&
          !waking_at(t, "192.0.2.2", 1001));
    CHECK(relay_park_wake_due(t, 10000, on_wake, key) == 10250 && sent == 1);
    relay_park_wake(t, r, 10100); /* under way: unchanged */
    CHECK(relay_park_wake_due(t, 10249, on_wake, key) == 10250 && sent == 1);
    CHECK(relay_park_wake_due(t, 10250, on_wake, key) == 10500 && sent == 2);
    CHECK(relay_park_wake_due(t, 10500, on_wake, key) == 11000 && sent == 3);
    CHECK(relay_park_wake_due(t, 11000, on_wake, key) == 12000 && sent == 4);
    /* the fifth and last, then held on the list (its client is expected) until 10 s */
    CHECK(relay_park_wake_due(t, 12000, on_wake, key) == 10000 + RELAY_PARK_WAKE_HOLD_MS);
    CHECK(sent == 5 && t->waking != 0);
    CHECK(relay_park_wake_due(t, 15000, on_wake, key) == 10000 + RELAY_PARK_WAKE_HOLD_MS);
    CHECK(sent == 5);
    /* a new CONNECT during the hold wakes again, counters still rising */
    relay_park_wake(t, r, 16000);
    CHECK(relay_park_wake_due(t, 16000, on_wake, key) == 16250 && sent == 6);
    /* the CONNECTs gave up (relay_park_unwake): no more WAKEs, and a keep-alive
     * while parked restarts nothing; still parked, and woken again on demand */
    relay_park_unwake(t, r);
    CHECK(!r->waking && t->waking == 0 && !waking_at(t, "192.0.2.1", 1001));
    CHECK(relay_park_wake_due(t, 16250, on_wake, key) == -1 && sent == 6);
    r->rewake = 1;
    CHECK(relay_park_rewake(t, 16300) == 0 && relay_park_wake_due(t, 16300, on_wake, key) == -1);
    CHECK(relay_park_find(t, r->id) == r);
    r->rewake = 0;
    relay_park_wake(t, r, 16400);
    CHECK(relay_park_wake_due(t, 16400, on_wake, key) == 16650 && sent == 7);
    relay_park_remove(t, r); /* ending a waking record takes it off the list */
    CHECK(t->waking == 0 && relay_park_wake_due(t, 17000, on_wake, key) == -1);
    CHECK(!waking_at(t, "192.0.2.1", 1001));
    relay_park_del(t);
}

/*
 * A keep-alive of a record being woken (the caller sets r->rewake): the
 * series starts again from then, at its pace, to the address the
 * keep-alive moved it to; the hold (the CONNECT's parked wait) still counts
 * from the first WAKE; a record not waking is not woken by a keep-alive.
 */
static void test_rewake(void)
{
    uint8_t key[32], ack[POS_PARK_LEN];
    relay_park *t = relay_park_new(4);
    int err, moved = 0;
    const int64_t hold = 35000; /* park_keepalive 25 s + RELAY_PARK_WAIT_SLACK_MS */
    randombytes_buf(key, sizeof(key));
    relay_park_set_wake_hold(t, hold);
    relay_parked *r = add(t, 1, key, "tok", 0, &err);
    relay_parked *idle = add(t, 2, key, "tok", 0, &err);
    sent = 0;
    last_counter = 0;
    idle->rewake = 1; /* not waking: nothing to restart */
    CHECK(relay_park_rewake(t, 500) == 0 && relay_park_wake_due(t, 500, on_wake, key) == -1);
    relay_park_wake(t, r, 1000);
    for (int64_t at = 1000; at <= 3000; at = relay_park_wake_due(t, at, on_wake, key))
        ;
    CHECK(sent == 5 && t->waking != 0);
    CHECK(relay_park_wake_due(t, 3000, on_wake, key) == 1000 + hold); /* held, not 10 s */
    /* 20 s later its keep-alive comes from a new mapping: moved, and woken there again */
    CHECK(ka(t, r->id, 1, key, "198.51.100.7", 7777, 21000, &moved, ack) == RELAY_PARK_ACKED);
    CHECK(moved && r->waking);
    r->rewake = 1;
    CHECK(relay_park_rewake(t, 21000) == 1 && r->rewake == 0);
    /* expected from the new address now, no longer from the old one */
    CHECK(waking_at(t, "198.51.100.7", 7777) && !waking_at(t, "192.0.2.1", 1001));
    CHECK(relay_park_wake_due(t, 21005, on_wake, key) == 21250 && sent == 6);
    CHECK(relay_park_wake_due(t, 21250, on_wake, key) == 21500 && sent == 7);
    CHECK(relay_park_wake_due(t, 21500, on_wake, key) == 22000 && sent == 8);
    CHECK(relay_park_wake_due(t, 22000, on_wake, key) == 23000 && sent == 9);
    CHECK(relay_park_wake_due(t, 23000, on_wake, key) == 1000 + hold && sent == 10);
    CHECK(relay_park_rewake(t, 23100) == 0); /* nothing flagged: nothing restarted */
    CHECK(r->wake_start_ms == 1000); /* the wake's time (metric) counts from its first WAKE */
    /* one just before the hold ends: the whole series still goes out, then the record leaves */
    r->rewake = 1;
    CHECK(relay_park_rewake(t, 35900) == 1);
    int64_t at = 35900;
    while ((at = relay_park_wake_due(t, at, on_wake, key)) >= 0)
        ;
    CHECK(sent == 15 && t->waking == 0 && !r->waking && !r->rewake);
    CHECK(!waking_at(t, "198.51.100.7", 7777));
    relay_park_del(t);
}

/* Many records waking at once (chains share buckets): each found at its address, only there. */
static void test_waking_lookup(void)
{
    enum { N = 6000 }; /* more than RELAY_PARK_WBUCKETS: chains of 2 and more */
    uint8_t key[32], pk[32];
    relay_park *t = relay_park_new(N);
    relay_limits lim;
    static relay_parked *rec[N];
    char ip[32];
    int err, ok = 1;
    memset(&lim, 0, sizeof(lim));
    randombytes_buf(key, sizeof(key));
    for (int i = 0; i < N; i++) {
        struct sockaddr_in a = addr4("10.9.0.0", 2000 + i % 50);
        a.sin_addr.s_addr = htonl(0x0a090000u + (uint32_t)(i / 50));
        memset(pk, 0, sizeof(pk));
        memcpy(pk, &i, sizeof(i));
        rec[i] =
            relay_park_add(t, pk, key, (struct sockaddr *)&a, 0, 0, "tok", &lim, NULL, 0, &err);
        ok &= rec[i] != NULL;
        if (rec[i] && i % 2 == 0)
            relay_park_wake(t, rec[i], 100);
    }
    CHECK(ok);
    for (int i = 0; i < N; i++) {
        snprintf(ip, sizeof(ip), "10.9.%d.%d", (i / 50) >> 8, (i / 50) & 0xff);
        ok &= waking_at(t, ip, 2000 + i % 50) == (i % 2 == 0);
    }
    CHECK(ok);
    for (int i = 0; i < N; i += 4) /* every other waking record ends */
        relay_park_remove(t, rec[i]);
    for (int i = 0; i < N; i++) {
        snprintf(ip, sizeof(ip), "10.9.%d.%d", (i / 50) >> 8, (i / 50) & 0xff);
        ok &= waking_at(t, ip, 2000 + i % 50) == (i % 4 == 2);
    }
    CHECK(ok);
    relay_park_del(t);
}

static int expired, presence;
static void on_expired(void *arg, relay_parked *r)
{
    expired++;
    relay_park_remove(arg, r);
}
static void on_presence(void *arg, relay_parked *r)
{
    (void)arg;
    presence++;
    r->presence_ms = 100000;
}

static void test_sweep_tokens_and_full(void)
{
    uint8_t key[32] = {1};
    relay_park *t = relay_park_new(300);
    int err = 0;
    /* many records: the peer hash grows, every one is still found */
    for (int i = 0; i < 300; i++) {
        uint8_t pk[32] = {0};
        struct sockaddr_in a = addr4("192.0.2.7", 2000 + i);
        relay_limits lim;
        memset(&lim, 0, sizeof(lim));
        lim.expires_at = i < 10 ? 5000 : 0; /* the token "exp" expires at unix 5000 */
        memcpy(pk, &i, sizeof(i));
        pk[31] = 9;
        CHECK(relay_park_add(t, pk, key, (struct sockaddr *)&a, 0, 0, i < 10 ? "exp" : "keep", &lim,
                             NULL, 1000 + (i >= 150) * 50000, &err) != NULL);
    }
    CHECK(t->n == 300 && t->nb >= 300);
    CHECK(add(t, 1, key, "keep", 0, &err) == NULL && err == RELAY_PARK_ERR_FULL);
    for (int i = 0; i < 300; i++) {
        uint8_t pk[32] = {0};
        memcpy(pk, &i, sizeof(i));
        pk[31] = 9;
        CHECK(relay_park_find_peer(t, pk) != NULL);
    }
    relay_park_token *g = relay_park_token_find(t, "exp");
    CHECK(g && g->count == 10 && relay_park_token_find(t, "keep")->count == 290);
    /* at 61 s: the first 150 are 60 s old (lifetime 60 s), the token "exp" expired */
    CHECK(relay_park_sweep(t, 61000, 6000, 60000, 60000, 1000, on_expired, on_presence, t) == 300);
    CHECK(expired == 150 && t->n == 150 && relay_park_token_find(t, "exp") == NULL);
    CHECK(presence == 0); /* the others wrote theirs at 51 s */
    /* slices, round robin: indexes 0..199 (the first 150 free now), then 200..299 and 0..99 */
    CHECK(relay_park_sweep(t, 111000, 6000, 120000, 60000, 200, on_expired, on_presence, t) == 200);
    CHECK(presence == 50);
    CHECK(relay_park_sweep(t, 111000, 6000, 120000, 60000, 200, on_expired, on_presence, t) == 200);
    CHECK(presence == 150 && expired == 150);
    relay_park_del(t);
}

/* Random datagrams, and random ones carrying a live record's id: never taken, never a crash. */
static void test_random_input(void)
{
    uint8_t key[32], d[64], ack[POS_PARK_LEN];
    relay_park *t = relay_park_new(16);
    struct sockaddr_in a = addr4("203.0.113.5", 999);
    relay_parked *rr;
    int err, moved, taken = 0;
    randombytes_buf(key, sizeof(key));
    relay_parked *r = add(t, 1, key, "tok", 0, &err);
    for (int i = 0; i < 20000; i++) {
        size_t len = randombytes_uniform(sizeof(d) + 1);
        randombytes_buf(d, sizeof(d));
        if (i & 1) {
            d[0] = POS_PARK_KEEPALIVE;
            len = POS_PARK_LEN;
            for (int k = 0; k < 8; k++) /* the live record's id: only the mac can stop it */
                d[1 + k] = (uint8_t)(r->id >> (56 - 8 * k));
        }
        taken += relay_park_keepalive(t, d, len, (struct sockaddr *)&a, 0, 10000 + 2000 * i, ack,
                                      &rr, &moved) == RELAY_PARK_ACKED;
    }
    CHECK(taken == 0 && r->ka_counter == 0 && r->addr.port == htons(1001));
    relay_park_del(t);
}

int main(void)
{
    test_random_input();
    CHECK(sodium_init() >= 0);
    test_ids_and_keepalives();
    test_quiet_keepalives();
    test_wakes();
    test_rewake();
    test_waking_lookup();
    test_sweep_tokens_and_full();
    return check_finish("test_parking");
}
