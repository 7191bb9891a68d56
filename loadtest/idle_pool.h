/*
 * The clients of `pos-loadtest idle` (cmd_idle.c): tens of thousands of
 * devices in one process, each with its own identity, its own libpos-p2p
 * endpoint and its own UDP socket bound to its own loopback address
 * (127.0.0.2, 127.0.0.3, ...). The endpoints use the library's I/O seam
 * (ep_new_io, client-lib/src/internal.h): this file owns the sockets, so
 * one client costs one file descriptor (no epoll and netlink socket per
 * endpoint) and one shared epoll serves them all; due timers come from a
 * heap of the endpoints' deadlines, so a round touches only the clients
 * that have something to do. Everything above the socket (QUIC, TLS,
 * HELLO, parking, keep-alives, wakes) is the library's own code.
 */
#ifndef POS_LOADTEST_IDLE_POOL_H
#define POS_LOADTEST_IDLE_POOL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "pos/p2p.h"

struct idle_client {
    void *owner; /* the caller's, for callbacks */
    long idx;    /* this client's index in the pool */
    pos_p2p_endpoint *ep;
    pos_p2p_relay *r; /* the home connection (NULL before connect or after a failure) */
    int fd;
    uint32_t addr;      /* the socket's IPv4 address, host order */
    int64_t sched;      /* the deadline queued in the heap, -1 none */
    int64_t start_ms;   /* connect started */
    int accepted;       /* WELCOME seen once */
    int failed;         /* refused or failed (every attempt) */
    int attempts;       /* connects started */
    uint64_t incoming;  /* INCOMING answered */
    uint64_t data_in;   /* datagrams received on circuits */
    uint64_t parked_ev; /* PARKED events */
    uint64_t
        awake_ev[4]; /* AWAKE events by code (pos_p2p_awake_reason: 1 woken, 2 request, 3 lost) */
    char peer_id[POS_P2P_PEER_ID_STRLEN];
};

typedef struct idle_pool idle_pool;

/*
 * idle_pool_new: |n| clients, client i on address 127.0.0.2 + (|first| + i) /
 * |per_addr|, port chosen by the kernel; |total| clients in all processes
 * (idle_pool_rebind hands out addresses above theirs). Returns NULL with a
 * sentence in |err| (file descriptors, memory, an address that cannot be bound).
 */
idle_pool *idle_pool_new(long n, long first, long total, long per_addr, char *err, size_t errlen);
void idle_pool_del(idle_pool *p);
long idle_pool_size(const idle_pool *p);
struct idle_client *idle_pool_get(idle_pool *p, long i);
/* idle_pool_pump: waits at most |max_ms| for a socket or a timer, then serves what is ready. */
void idle_pool_pump(idle_pool *p, int max_ms);
/* idle_pool_touch: client |i|'s timers may have changed (after a call into its endpoint). */
void idle_pool_touch(idle_pool *p, long i);
/*
 * idle_pool_rebind: client |i|'s socket is replaced by one on a new address
 * (the next unused one), the old one closed: to the relay, the device moved
 * behind a NAT that gave it a new mapping; the device is not told. 0, or -1.
 */
int idle_pool_rebind(idle_pool *p, long i);
/* idle_pool_addr: the dotted form of client |i|'s current address and port. */
void idle_pool_addr(const idle_pool *p, long i, char out[POS_P2P_ADDR_STRLEN]);

#endif
