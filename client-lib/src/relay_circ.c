/* What a relay connection tracks of its circuits (see relay_circ.h). */
#include "relay_circ.h"

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "relay_proto.h"

#define MAX_CIRCUITS 1024 /* open circuits per relay connection */
#define MAX_INCOMING 64   /* INCOMING requests not yet answered */
#define MAX_EVENTS 64     /* events decoded during one packet, delivered after it */

struct relay_circ {
    uint32_t incoming[MAX_INCOMING]; /* INCOMING ids we may answer */
    size_t n_incoming;
    uint32_t *circuits; /* our side's ids of open circuits */
    size_t n_circuits;
    pos_p2p_relay_event *evq; /* events decoded inside ngtcp2, delivered after it returns */
    size_t n_ev;
    pos_p2p_relay_event_cb on_event;
    pos_p2p_relay_data_cb on_data;
    void *arg;
    uint8_t dispatching;   /* inside a user callback */
    uint8_t close_pending; /* pos_p2p_relay_close was called from a callback */
};

struct relay_circ *relay_circ_new(void)
{
    return calloc(1, sizeof(struct relay_circ));
}

void relay_circ_trim(struct relay_circ *c)
{
    free(c->circuits);
    c->circuits = NULL;
    c->n_circuits = 0;
    free(c->evq); /* 64 events: most of a parked connection's memory */
    c->evq = NULL;
    c->n_ev = 0;
}

void relay_circ_free(struct relay_circ *c)
{
    if (!c)
        return;
    relay_circ_trim(c);
    free(c);
}

void relay_circ_set_callbacks(struct relay_circ *c, pos_p2p_relay_event_cb on_event,
                              pos_p2p_relay_data_cb on_data, void *arg)
{
    c->on_event = on_event;
    c->on_data = on_data;
    c->arg = arg;
}

void *relay_circ_arg(const struct relay_circ *c)
{
    return c->arg;
}

int relay_circ_push(struct relay_circ *c, const pos_p2p_relay_event *ev)
{
    if (!c->evq && !(c->evq = calloc(MAX_EVENTS, sizeof(*c->evq))))
        return 0; /* out of memory: the event is lost, the connection goes on */
    if (c->n_ev >= MAX_EVENTS)
        return -1; /* far more messages in one packet than the relay ever sends */
    c->evq[c->n_ev++] = *ev;
    return 0;
}

int relay_circ_pending_events(const struct relay_circ *c)
{
    return (int)c->n_ev;
}

int relay_circ_msg(struct relay_circ *c, const pos_ctrl_msg *m)
{
    pos_p2p_relay_event ev;
    int i;

    if (relay_event_from_msg(m, &ev) != 0)
        return -1;
    switch (m->type) {
    case POS_CTRL_INCOMING:
        if (c->n_incoming >= MAX_INCOMING)
            return 1; /* too many unanswered: declined at once */
        c->incoming[c->n_incoming++] = m->req_id;
        break;
    case POS_CTRL_CIRCUIT:
        if (!c->circuits && !(c->circuits = calloc(MAX_CIRCUITS, sizeof(*c->circuits))))
            return 0;
        if (relay_id_find(c->circuits, c->n_circuits, m->circuit_id) < 0 &&
            c->n_circuits < MAX_CIRCUITS)
            c->circuits[c->n_circuits++] = m->circuit_id;
        break;
    case POS_CTRL_ERROR:
        /* an INCOMING the relay gave up on cannot be answered any more */
        if ((i = relay_id_find(c->incoming, c->n_incoming, m->req_id)) >= 0)
            relay_id_remove(c->incoming, &c->n_incoming, i);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        if (c->circuits && (i = relay_id_find(c->circuits, c->n_circuits, m->circuit_id)) >= 0)
            relay_id_remove(c->circuits, &c->n_circuits, i);
        break;
    default:
        break;
    }
    return relay_circ_push(c, &ev);
}

/* end_call: after a user callback: -1 when it asked to close the connection. */
static int end_call(struct relay_circ *c)
{
    c->dispatching = 0;
    return c->close_pending ? -1 : 0;
}

int relay_circ_dispatch(struct relay_circ *c, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    if (ev) {
        if (!c->on_event)
            return 0;
        c->dispatching = 1;
        c->on_event(c->arg, r, ev);
        return end_call(c);
    }
    if (!c->n_ev)
        return 0;
    c->dispatching = 1;
    for (size_t i = 0; i < c->n_ev && !c->close_pending; i++)
        if (c->on_event)
            c->on_event(c->arg, r, &c->evq[i]);
    c->n_ev = 0;
    return end_call(c);
}

int relay_circ_data(struct relay_circ *c, pos_p2p_relay *r, uint32_t circuit_id,
                    const uint8_t *data, size_t len)
{
    if (!c->on_data)
        return 0;
    c->dispatching = 1;
    c->on_data(c->arg, r, circuit_id, data, len);
    return end_call(c);
}

int relay_circ_defer_close(struct relay_circ *c)
{
    if (!c->dispatching)
        return 0;
    c->close_pending = 1; /* from a callback: freed once it returns */
    return 1;
}

int relay_circ_open(const struct relay_circ *c, uint32_t circuit_id)
{
    return c->circuits && relay_id_find(c->circuits, c->n_circuits, circuit_id) >= 0;
}

int relay_circ_take_incoming(struct relay_circ *c, uint32_t req_id)
{
    int i = relay_id_find(c->incoming, c->n_incoming, req_id);
    if (i < 0)
        return -1;
    relay_id_remove(c->incoming, &c->n_incoming, i);
    return 0;
}

void relay_circ_undo_incoming(struct relay_circ *c, uint32_t req_id)
{
    if (c->n_incoming < MAX_INCOMING)
        c->incoming[c->n_incoming++] = req_id;
}

int relay_circ_idle(const struct relay_circ *c)
{
    return !c->n_circuits && !c->n_incoming;
}

int relay_circ_event(struct relay_circ *c, pos_p2p_relay *r, int type, int code)
{
    pos_p2p_relay_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.code = (uint16_t)code;
    return r ? relay_circ_dispatch(c, r, &ev) : relay_circ_push(c, &ev);
}

int relay_circ_frame(struct relay_circ *c, pos_p2p_relay *r, const uint8_t *data, size_t len)
{
    pos_frame f;
    if (pos_frame_decode(data, len, &f) != 0)
        return -1;
    if (f.type == POS_FRAME_KEEPALIVE_ACK)
        return 0;
    if (f.type != POS_FRAME_DATA || !relay_circ_open(c, f.circuit_id))
        return -1; /* a circuit we do not have (closed, or forged) */
    return relay_circ_data(c, r, f.circuit_id, f.payload, f.payload_len) == 0 ? 0 : -2;
}
