/*
 * The session layer's table of one endpoint (see session_table.h): plain
 * bookkeeping, no I/O and no call into a session. Its first member is the
 * struct ep_conn the endpoint knows as its listener; session_listen.c gives
 * the operations behind it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_table.h"

/* An incoming circuit we accepted, waiting for the dialer's first Initial. */
struct sess_circuit {
    pos_p2p_relay *r;
    uint32_t circuit_id;
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    int64_t expires_ms;
};

struct sess_table {
    struct ep_conn conn;    /* first: what the endpoint calls */
    struct sess_node *list; /* every session, newest first */
    size_t n;
    uint32_t syn_counter; /* synthetic addresses handed out */
    int listening;
    pos_p2p_allow_cb allow;
    pos_p2p_accept_cb on_session;
    void *arg;
    pos_p2p_relay *relays[SESS_MAX_RELAYS];
    size_t n_relays;
    struct sess_circuit circuits[SESS_MAX_CIRCUITS];
    size_t n_circuits;
    struct sess_punch_ep *punch; /* session_punch.c's, freed by the listener's destroy */
};

struct sess_table *sess_table_of(const pos_p2p_endpoint *ep)
{
    return (struct sess_table *)ep_listener(ep);
}

struct sess_table *sess_table_get(pos_p2p_endpoint *ep, const struct ep_conn_ops *ops)
{
    struct sess_table *t = sess_table_of(ep);
    if (!t && (t = calloc(1, sizeof(*t))) != NULL) {
        ep_conn_init(&t->conn, ep, ops);
        ep_set_listener(ep, &t->conn);
    }
    return t;
}

void sess_table_free(struct sess_table *t)
{
    ep_set_listener(t->conn.ep, NULL);
    free(t);
}

/* ---- sessions ---- */

int sess_table_link(struct sess_table *t, struct sess_node *n)
{
    if (t->n >= SESS_MAX)
        return -1;
    n->prev = NULL;
    n->next = t->list;
    if (t->list)
        t->list->prev = n;
    t->list = n;
    t->n++;
    return 0;
}

void sess_table_unlink(struct sess_table *t, struct sess_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        t->list = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->prev = n->next = NULL;
    t->n--;
}

pos_p2p_session *sess_table_first(const struct sess_table *t)
{
    return t->list ? t->list->s : NULL;
}

uint32_t sess_table_next_synthetic(struct sess_table *t)
{
    return ++t->syn_counter;
}

/* ---- listening ---- */

void sess_table_listen(struct sess_table *t, pos_p2p_allow_cb allow, pos_p2p_accept_cb on_session,
                       void *arg)
{
    t->listening = 1;
    t->allow = allow;
    t->on_session = on_session;
    t->arg = arg;
}

int sess_table_listening(const struct sess_table *t)
{
    return t->listening;
}

int sess_table_allows(const struct sess_table *t, const char *peer_id)
{
    return !t->allow || t->allow(t->arg, peer_id);
}

void sess_table_hand_over(const struct sess_table *t, pos_p2p_session *s)
{
    if (t->on_session)
        t->on_session(t->arg, s);
}

/* ---- relays ---- */

int sess_table_add_relay(struct sess_table *t, pos_p2p_relay *r)
{
    for (size_t i = 0; i < t->n_relays; i++)
        if (t->relays[i] == r)
            return 0;
    if (t->n_relays >= SESS_MAX_RELAYS)
        return -1;
    t->relays[t->n_relays++] = r;
    return 0;
}

void sess_table_forget_relay(struct sess_table *t, pos_p2p_relay *r)
{
    for (size_t i = 0; i < t->n_relays; i++)
        if (t->relays[i] == r) {
            t->relays[i] = t->relays[--t->n_relays];
            return;
        }
}

/* ---- circuits ---- */

int sess_table_circuit_room(const struct sess_table *t)
{
    return t->n_circuits < SESS_MAX_CIRCUITS;
}

int sess_table_add_circuit(struct sess_table *t, pos_p2p_relay *r, uint32_t circuit_id,
                           const char *peer_id, int64_t expires_ms)
{
    struct sess_circuit *c;
    if (t->n_circuits >= SESS_MAX_CIRCUITS)
        return -1;
    c = &t->circuits[t->n_circuits++];
    c->r = r;
    c->circuit_id = circuit_id;
    snprintf(c->peer_id, sizeof(c->peer_id), "%s", peer_id);
    c->expires_ms = expires_ms;
    return 0;
}

static size_t find_circuit(const struct sess_table *t, const pos_p2p_relay *r, uint32_t circuit_id)
{
    size_t i;
    for (i = 0; i < t->n_circuits; i++)
        if (t->circuits[i].r == r && t->circuits[i].circuit_id == circuit_id)
            break;
    return i;
}

int sess_table_has_circuit(const struct sess_table *t, const pos_p2p_relay *r, uint32_t circuit_id)
{
    return find_circuit(t, r, circuit_id) < t->n_circuits;
}

void sess_table_remove_circuit(struct sess_table *t, const pos_p2p_relay *r, uint32_t circuit_id)
{
    size_t i = find_circuit(t, r, circuit_id);
    if (i < t->n_circuits)
        t->circuits[i] = t->circuits[--t->n_circuits];
}

void sess_table_drop_circuits(struct sess_table *t, const pos_p2p_relay *r)
{
    for (size_t i = 0; i < t->n_circuits;) {
        if (t->circuits[i].r == r)
            t->circuits[i] = t->circuits[--t->n_circuits];
        else
            i++;
    }
}

void sess_table_expire_circuits(struct sess_table *t, int64_t now_ms)
{
    for (size_t i = 0; i < t->n_circuits;) {
        if (t->circuits[i].expires_ms <= now_ms)
            t->circuits[i] = t->circuits[--t->n_circuits];
        else
            i++;
    }
}

struct sess_punch_ep *sess_table_punch(const struct sess_table *t)
{
    return t->punch;
}

void sess_table_set_punch(struct sess_table *t, struct sess_punch_ep *pe)
{
    t->punch = pe;
}
