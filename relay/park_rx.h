/*
 * The reader of a parked-datagram socket (workers.c, server_udp.c). The
 * port's steering program hands parked clients' datagrams (common/park.h)
 * to a socket of their own per worker. They come alone, thousands a second
 * from as many clients, and a wake-up of the loop per datagram costs more
 * than the datagram's own work; none of them is urgent (an acknowledgement
 * may wait a few milliseconds, a keep-alive's client waits seconds). So the
 * reader answers the first datagram at once and then reads the socket on a
 * timer, every RELAY_PARK_RX_PERIOD seconds (50 ms), for as long as it finds any:
 * each wake-up takes a batch. An empty read goes back to waiting for the
 * socket. Data frames and QUIC never wait: they arrive on the other sockets.
 */
#ifndef POS_RELAY_PARK_RX_H
#define POS_RELAY_PARK_RX_H

#include <ev.h>

#define RELAY_PARK_RX_PERIOD 0.05
/* batches read at most per wake-up (RX_BATCH each): a bound on one turn of the loop */
#define RELAY_PARK_RX_ROUNDS 64

/* relay_park_rx_fn reads |fd| until it is empty (or a bound); returns the datagrams read. */
typedef unsigned (*relay_park_rx_fn)(void *arg, int fd);

typedef struct relay_park_rx {
    struct ev_loop *loop;
    int fd;
    int on;
    ev_io io;
    ev_timer poll;
    relay_park_rx_fn drain;
    void *arg;
} relay_park_rx;

/* relay_park_rx_start watches |fd| on |loop| with |drain|(|arg|, |fd|) from now on. */
void relay_park_rx_start(relay_park_rx *r, struct ev_loop *loop, int fd, relay_park_rx_fn drain,
                         void *arg);
/* relay_park_rx_stop: no more reads (nothing when not started). */
void relay_park_rx_stop(relay_park_rx *r);

#endif
