/*
 * Private structures of libpos-p2p shared by its source files (never
 * installed). The endpoint (endpoint.c) owns the sockets and routes each
 * datagram: QUIC packets by destination connection id to their connection,
 * data frames (first byte without the QUIC fixed bit) to the data-plane hook.
 * quic_client.c holds every ngtcp2 call of the library.
 */
#ifndef POS_P2P_INTERNAL_H
#define POS_P2P_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "identity.h"
#include "pos/p2p.h"
#include "tls.h"

#define EP_CID_LEN 16 /* length of the connection ids this device issues */
#define EP_MAX_UDP 1500

struct pos_p2p_identity {
    pos_identity key;
};

struct ep_sock {
    int fd;
    struct sockaddr_storage local;
    socklen_t local_len;
};

struct ep_cid {
    uint8_t id[EP_CID_LEN];
    pos_p2p_relay *r;
    struct ep_cid *next;
};

struct pos_p2p_endpoint {
    pos_identity id;
    pos_tls_creds *creds;
    struct ep_sock socks[2]; /* [0] IPv4, [1] IPv6; fd -1 when absent */
    int epfd;
    struct ep_cid **buckets;
    size_t n_buckets, n_cids;
    uint8_t hash_key[16];
    pos_p2p_relay *relays; /* every relay connection, linked through next */
    uint64_t frames_dropped;
    uint8_t txbuf[EP_MAX_UDP];
};

/* endpoint.c */
int ep_cid_add(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_relay *r);
void ep_cid_remove(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], const pos_p2p_relay *r);
void ep_send(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
             const struct sockaddr *to, socklen_t tolen);

/* quic_client.c */
void qc_input(pos_p2p_relay *r, int sock, const uint8_t *data, size_t len,
              const struct sockaddr *from, socklen_t fromlen);
int64_t qc_deadline_ms(const pos_p2p_relay *r); /* -1 none */
void qc_on_deadline(pos_p2p_relay *r);
pos_p2p_relay *qc_next(const pos_p2p_relay *r);
/* qc_frame_input: a data frame; 0 when it came from a relay connection's address and was taken. */
int qc_frame_input(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
                   const struct sockaddr *from, socklen_t fromlen);
void qc_free_all(pos_p2p_endpoint *ep);

#endif
