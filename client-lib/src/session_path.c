/*
 * The network path of one session (see session_path.h): where its packets
 * go and the addresses ngtcp2 knows them by. The relayed path's addresses
 * come from 100.64.0.0/10, which no socket of ours ever binds.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "frame.h"
#include "session_path.h"

struct sess_path {
    int sock; /* direct path: endpoint socket (-1: none) and peer address */
    struct sockaddr_storage remote;
    pos_p2p_relay *relay; /* relayed path: circuit and synthetic addresses */
    uint32_t circuit;
    struct sockaddr_storage syn_local, syn_remote;
    int lost; /* the relayed path's circuit is gone (while direct): what ngtcp2 sends on it is lost
               */
};

struct sess_path *sess_path_new(void)
{
    struct sess_path *p = calloc(1, sizeof(*p));
    if (p)
        p->sock = -1;
    return p;
}

void sess_path_del(struct sess_path *p)
{
    free(p);
}

void sess_path_set_direct(struct sess_path *p, int sock, const struct sockaddr *addr, socklen_t len)
{
    p->sock = sock;
    memset(&p->remote, 0, sizeof(p->remote));
    memcpy(&p->remote, addr, len);
}

void sess_path_set_relayed(struct sess_path *p, pos_p2p_relay *r, uint32_t circuit_id, uint32_t n)
{
    struct sockaddr_in *l = (struct sockaddr_in *)&p->syn_local;
    struct sockaddr_in *rm = (struct sockaddr_in *)&p->syn_remote;
    n &= 0x3fffff;
    p->relay = r;
    p->circuit = circuit_id;
    memset(&p->syn_local, 0, sizeof(p->syn_local));
    memset(&p->syn_remote, 0, sizeof(p->syn_remote));
    l->sin_family = rm->sin_family = AF_INET;
    l->sin_addr.s_addr = htonl(0x64400000u | n); /* 100.64.0.0 + n */
    l->sin_port = htons(1);
    rm->sin_addr.s_addr = htonl(0x647ffffeu); /* 100.127.255.254: the peer, through the relay */
    rm->sin_port = htons(POS_P2P_DEFAULT_PORT);
}

void sess_path_fill(const struct sess_path *p, const pos_p2p_endpoint *ep, ngtcp2_path *path)
{
    if (p->relay) {
        path->local.addr = (ngtcp2_sockaddr *)&p->syn_local;
        path->local.addrlen = sizeof(struct sockaddr_in);
        path->remote.addr = (ngtcp2_sockaddr *)&p->syn_remote;
        path->remote.addrlen = sizeof(struct sockaddr_in);
    } else {
        path->local.addr = (ngtcp2_sockaddr *)ep_local(ep, p->sock, &path->local.addrlen);
        path->remote.addr = (ngtcp2_sockaddr *)&p->remote;
        path->remote.addrlen = pos_addr_len(&p->remote);
    }
    path->user_data = NULL;
}

size_t sess_path_head(const struct sess_path *p, const ngtcp2_path *current)
{
    return p->relay && sess_path_is_relayed(p, current) ? POS_FRAME_HEADER_LEN : 0;
}

void sess_path_send(const struct sess_path *p, pos_p2p_endpoint *ep, const ngtcp2_path *path,
                    uint8_t *data, size_t len, size_t head)
{
    const struct sockaddr *to = (const struct sockaddr *)path->remote.addr;
    if (sess_path_is_relayed(p, path)) {
        if (p->relay && head >= POS_FRAME_HEADER_LEN) /* the header in front: no copy */
            relay_send_data_in_place(p->relay, p->circuit, data - POS_FRAME_HEADER_LEN, len);
        else if (p->relay)
            pos_p2p_relay_send_data(p->relay, p->circuit, data, len);
    } else {
        ep_send(ep, to->sa_family == AF_INET ? 0 : 1, data, len, to, path->remote.addrlen);
    }
}

void sess_path_drop_relay(struct sess_path *p)
{
    if (p->relay)
        p->lost = 1;
    p->relay = NULL;
}

pos_p2p_relay *sess_path_relay(const struct sess_path *p)
{
    return p->relay;
}

int sess_path_on_circuit(const struct sess_path *p, const pos_p2p_relay *r, uint32_t circuit_id)
{
    return p->relay == r && p->circuit == circuit_id;
}

int sess_path_is_relayed(const struct sess_path *p, const ngtcp2_path *np)
{
    return (p->relay || p->lost) && np->local.addrlen == sizeof(struct sockaddr_in) &&
           memcmp(np->local.addr, &p->syn_local, sizeof(struct sockaddr_in)) == 0;
}
