/*
 * The public calls on a relay connection's circuits (pos/p2p.h): requests,
 * answers, punch messages, data frames, callbacks, whether it is parked.
 * Built on quic_client.c's internal calls (internal.h); module order:
 * quic_client <- relay_api.
 */
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "internal.h"
#include "peer_id.h"
#include "relay_circ.h"
#include "relay_park.h"
#include "relay_proto.h"

int pos_p2p_relay_connect(pos_p2p_endpoint *ep, const pos_p2p_relay_info *relay, const char *token,
                          int timeout_ms, pos_p2p_relay **out)
{
    return pos_p2p_relay_connect_flags(ep, relay, token, timeout_ms, 0, out);
}

void pos_p2p_relay_set_callbacks(pos_p2p_relay *r, pos_p2p_relay_event_cb on_event,
                                 pos_p2p_relay_data_cb on_data, void *arg)
{
    relay_circ_set_callbacks(relay_circ_of(r), on_event, on_data, arg);
}

int pos_p2p_relay_request_peer(pos_p2p_relay *r, const char *peer_id, uint32_t *req_id)
{
    pos_ctrl_msg m;
    uint8_t key[32];
    int rv;

    if (!r || !peer_id || !req_id ||
        pos_peer_id_parse(peer_id, strnlen(peer_id, POS_P2P_PEER_ID_STRLEN), key) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    relay_msg_request(&m, POS_CTRL_CONNECT, relay_new_req(r), peer_id, relay_endpoint(r),
                      pos_p2p_relay_protocol_version(r));
    if ((rv = relay_queue(r, &m)) != 0)
        return rv;
    relay_park_request(relay_park_of(r), m.req_id); /* parking waits for its answer */
    *req_id = m.req_id;
    return 0;
}

int pos_p2p_relay_answer(pos_p2p_relay *r, uint32_t req_id, int accept)
{
    int rv;
    if (!r || relay_circ_take_incoming(relay_circ_of(r), req_id) != 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if ((rv = relay_queue_answer(r, req_id, accept)) != 0)
        relay_circ_undo_incoming(relay_circ_of(r), req_id);
    return rv;
}

int relay_send_ctrl(pos_p2p_relay *r, const pos_ctrl_msg *m)
{
    if (!r || pos_p2p_relay_protocol_version(r) < POS_CTRL_V2 || relay_holding(r))
        return POS_P2P_ERR_INVALID_ARGUMENT; /* punching needs a circuit: none while parked */
    return relay_queue(r, m);
}

/* send_data: the DATA frame for |circuit_id| in |frame| (its payload, |len| bytes, at
 * frame + POS_FRAME_HEADER_LEN or at |data|) to the relay. */
static int send_data(pos_p2p_relay *r, uint32_t circuit_id, uint8_t *frame, const uint8_t *data,
                     size_t len)
{
    int flen, rv;

    if (!r || !data || len == 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    if (len > POS_FRAME_MAX_PAYLOAD)
        return POS_P2P_ERR_TOO_BIG;
    if (!relay_circ_open(relay_circ_of(r), circuit_id))
        return POS_P2P_ERR_CIRCUIT_CLOSED;
    flen = pos_frame_encode_data(frame, POS_FRAME_MAX_LEN, circuit_id, data, len);
    if (flen < 0)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = relay_send_frame(r, frame, (size_t)flen);
    return rv == 0 ? 0 : rv == -1 ? POS_P2P_ERR_CIRCUIT_CLOSED : POS_P2P_ERR_IO;
}

int pos_p2p_relay_send_data(pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data, size_t len)
{
    uint8_t buf[POS_FRAME_MAX_LEN];
    return send_data(r, circuit_id, buf, data, len);
}

int relay_send_data_in_place(pos_p2p_relay *r, uint32_t circuit_id, uint8_t *frame, size_t len)
{
    return send_data(r, circuit_id, frame, frame ? frame + POS_FRAME_HEADER_LEN : NULL, len);
}

int pos_p2p_relay_parked(const pos_p2p_relay *r)
{
    return r && relay_park_state(relay_park_of(r)) == RELAY_PARK_PARKED;
}
