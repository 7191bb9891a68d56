/*
 * TLS 1.3 session tickets of relays (see tickets.h): a small table in the
 * endpoint's memory, one ticket per pinned relay key, least recently stored
 * replaced first. Tickets are secrets (with the resumption secret they let
 * their holder resume as this endpoint's identity): wiped when replaced or
 * freed, never written anywhere.
 */
#include "tickets.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TICKETS 32 /* relays remembered per endpoint */

struct ticket {
    uint8_t key[32]; /* the relay's pinned Ed25519 key */
    gnutls_datum_t data;
    uint64_t stamp; /* when stored (a counter): the smallest is replaced first */
};

struct relay_tickets {
    struct ticket t[MAX_TICKETS];
    size_t n;
    uint64_t clock;
    int disabled;
};

struct relay_tickets *relay_tickets_new(void)
{
    return calloc(1, sizeof(struct relay_tickets));
}

static void wipe(struct ticket *t)
{
    if (t->data.data) {
        sodium_memzero(t->data.data, t->data.size);
        gnutls_free(t->data.data);
    }
    t->data.data = NULL;
    t->data.size = 0;
}

static void forget_all(struct relay_tickets *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        wipe(&ts->t[i]);
    ts->n = 0;
}

void relay_tickets_free(struct relay_tickets *ts)
{
    if (!ts)
        return;
    forget_all(ts);
    free(ts);
}

void relay_tickets_enable(struct relay_tickets *ts, int on)
{
    ts->disabled = !on;
    if (!on)
        forget_all(ts);
}

int relay_tickets_enabled(const struct relay_tickets *ts)
{
    return ts && !ts->disabled;
}

static struct ticket *find(struct relay_tickets *ts, const uint8_t key[32])
{
    for (size_t i = 0; i < ts->n; i++)
        if (memcmp(ts->t[i].key, key, 32) == 0)
            return &ts->t[i];
    return NULL;
}

int relay_tickets_offer(struct relay_tickets *ts, const uint8_t key[32], gnutls_session_t s)
{
    struct ticket *t;
    if (!relay_tickets_enabled(ts) || (t = find(ts, key)) == NULL)
        return -1;
    return gnutls_session_set_data(s, t->data.data, t->data.size) == 0 ? 0 : -1;
}

int relay_tickets_keep(struct relay_tickets *ts, const uint8_t key[32], gnutls_session_t s)
{
    gnutls_datum_t d = {NULL, 0};
    struct ticket *t;

    if (!relay_tickets_enabled(ts) || !(gnutls_session_get_flags(s) & GNUTLS_SFLAGS_SESSION_TICKET))
        return -1;
    if (gnutls_session_get_data2(s, &d) != 0 || !d.data)
        return -1;
    t = find(ts, key);
    if (!t && ts->n < MAX_TICKETS)
        t = &ts->t[ts->n++];
    if (!t) {
        t = &ts->t[0];
        for (size_t i = 1; i < ts->n; i++)
            if (ts->t[i].stamp < t->stamp)
                t = &ts->t[i];
    }
    wipe(t);
    memcpy(t->key, key, 32);
    t->data = d;
    t->stamp = ++ts->clock;
    return 0;
}
