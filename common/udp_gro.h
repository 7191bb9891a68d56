/*
 * udp_gro.h: reading UDP GRO (Linux): with UDP_GRO on a socket, one
 * received message may hold a run of one sender's datagrams, all of one
 * size but the last; the size comes in a control message. Shared by the
 * relay's receive batch (relay/rxbatch.c) and the client's
 * (client-lib/src/ep_udp.c).
 */
#ifndef POS_UDP_GRO_H
#define POS_UDP_GRO_H

#include <netinet/in.h>
#include <netinet/udp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

/* pos_udp_gro_size: the segment size the kernel joined |m| with, or 0 (one datagram). */
static inline size_t pos_udp_gro_size(struct msghdr *m)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO &&
            c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v;
            memcpy(&v, CMSG_DATA(c), sizeof(v));
            return v > 0 ? (size_t)v : 0;
        }
    }
    return 0;
}

#endif
