/* The reader of a parked-datagram socket (see park_rx.h). */
#include "park_rx.h"

/* on_poll: the timer's read; nothing there: back to waiting for the socket. */
static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    relay_park_rx *r = t->data;
    (void)revents;
    if (r->drain(r->arg, r->fd) == 0) {
        ev_timer_stop(loop, &r->poll);
        ev_io_start(loop, &r->io);
    } /* else the repeating timer reads again one period later */
}

/* on_readable: the first datagram after a quiet spell, answered at once; the timer reads next. */
static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    relay_park_rx *r = io->data;
    (void)revents;
    ev_io_stop(loop, &r->io);
    r->drain(r->arg, r->fd);
    ev_timer_again(loop, &r->poll);
}

void relay_park_rx_start(relay_park_rx *r, struct ev_loop *loop, int fd, relay_park_rx_fn drain,
                         void *arg)
{
    r->loop = loop;
    r->fd = fd;
    r->drain = drain;
    r->arg = arg;
    ev_io_init(&r->io, on_readable, fd, EV_READ);
    r->io.data = r;
    ev_init(&r->poll, on_poll);
    r->poll.repeat = RELAY_PARK_RX_PERIOD;
    r->poll.data = r;
    ev_io_start(loop, &r->io);
    r->on = 1;
}

void relay_park_rx_stop(relay_park_rx *r)
{
    if (!r->on)
        return;
    ev_io_stop(r->loop, &r->io);
    ev_timer_stop(r->loop, &r->poll);
    r->on = 0;
}
