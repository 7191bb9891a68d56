/*
 * The relay's data plane: datagrams on the relay port whose first byte has
 * the QUIC fixed bit (0x40) clear. quic_server.c hands every such datagram to
 * relay_dataplane_input before any QUIC processing. In this version the data
 * plane only counts and drops; circuits and forwarding (the next issue) plug
 * in here, with the server's connection table to find the owning control
 * connection of a circuit side.
 */
#ifndef POS_RELAY_DATAPLANE_H
#define POS_RELAY_DATAPLANE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct relay_dataplane {
    uint64_t frames_dropped; /* every frame, until forwarding exists */
} relay_dataplane;

/* relay_dataplane_is_frame: whether a datagram starting with |first_byte| is a data frame. */
static inline int relay_dataplane_is_frame(uint8_t first_byte)
{
    return (first_byte & 0x40) == 0;
}

/*
 * relay_dataplane_input: one data frame of |len| bytes from |from| arrived on
 * socket |fd|. Never blocks, never allocates.
 */
void relay_dataplane_input(relay_dataplane *dp, int fd, const uint8_t *data, size_t len,
                           const struct sockaddr *from, socklen_t fromlen);

#endif
