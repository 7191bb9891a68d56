/*
 * The relay server's private parts shared by its two halves: quic_server.c
 * (connections, the control protocol; no socket calls) and server_udp.c
 * (the UDP sockets, batched receive and the forwarder's batched sends, the
 * default I/O seam). Never included outside relay/.
 */
#ifndef POS_RELAY_SERVER_INT_H
#define POS_RELAY_SERVER_INT_H

#include <ev.h>
#include <ngtcp2/ngtcp2.h>
#include <sodium.h>
#include <sys/socket.h>

#include "broker.h"
#include "cid_map.h"
#include "circuit.h"
#include "forward.h"
#include "pending_addr.h"
#include "quic_server.h"
#include "tls.h"

#define MAX_SOCKS RELAY_MAX_ADDRS
#define MAX_UDP 1500
#define RX_BATCH 64

struct rconn;

struct sock {
    int fd;
    ev_io io;
    struct sockaddr_storage local;
    socklen_t local_len;
    relay_server *srv;
};

struct relay_server {
    struct ev_loop *loop;
    relay_io io;
    const relay_config *cfg;
    relay_services *svc;
    pos_tls_creds *creds;
    struct sock socks[MAX_SOCKS];
    size_t n_socks;
    pos_cid_map *cids; /* connection ids -> struct rconn */
    uint8_t retry_secret[32];
    uint8_t reset_secret[32];
    struct rconn *conns;
    size_t pending; /* connections before ACTIVE */
    size_t retry_above;
    relay_pending_addrs *pending_addrs; /* validated handshakes per address */
    int going_away;
    relay_server_stats st;
    ngtcp2_callbacks cbs;
    uint8_t txbuf[MAX_UDP];
    /* data plane */
    relay_circuits *circuits;
    relay_forwarder *fw;
    relay_broker *broker; /* CONNECT -> INCOMING -> ACCEPT -> CIRCUIT */
    ev_timer broker_timer; /* the broker's next deadline (relay_broker_expire) */
    struct rconn *dirty;   /* connections with broker messages to write (flush) */
    int gso;
    /* receive batch (recvmmsg) and its forwarded output (sendmmsg) */
    struct mmsghdr rx[RX_BATCH], tx[RX_BATCH];
    struct iovec rx_iov[RX_BATCH];
    struct sockaddr_storage rx_names[RX_BATCH];
    unsigned quic_idx[RX_BATCH];
    uint8_t rx_bufs[RX_BATCH][MAX_UDP + 1];
};

/* server_udp.c: the default relay_io.send (|arg| is the server) and clock. */
int relay_udp_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                   socklen_t tolen);
uint64_t relay_udp_now(void *arg);

#endif
