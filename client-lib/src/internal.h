/*
 * Private structures of libpos-p2p shared by its source files (never
 * installed). The endpoint (endpoint.c) owns the sockets and routes each
 * datagram: QUIC packets by destination connection id to their connection,
 * data frames (first byte without the QUIC fixed bit) to the data-plane hook.
 * quic_client.c holds every ngtcp2 call of relay connections, session.c
 * every ngtcp2 call of peer sessions.
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
    pos_p2p_relay *r;   /* a relay control connection, or NULL */
    pos_p2p_session *s; /* or a peer session (session.c) */
    struct ep_cid *next;
};

struct sess_table; /* session.c: sessions, listening, relays handed over */

/*
 * The endpoint's I/O seam: where its datagrams go. The sockets by default;
 * a fuzz target gives its own send (ep_new_io) and feeds datagrams to
 * ep_input.
 */
typedef struct ep_io {
    /* send: |data| from local socket |sock| (0 IPv4, 1 IPv6) to |to|; 0, or -1 dropped */
    int (*send)(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                socklen_t tolen);
    void *arg;
} ep_io;

struct pos_p2p_endpoint {
    pos_identity id;
    pos_tls_creds *creds;
    struct ep_sock socks[2]; /* [0] IPv4, [1] IPv6; fd -1 when absent */
    int epfd;
    struct ep_cid **buckets;
    size_t n_buckets, n_cids;
    uint8_t hash_key[16];
    pos_p2p_relay *relays;   /* every relay connection, linked through next */
    struct sess_table *sess; /* peer sessions (session.c), NULL until the first one */
    uint64_t frames_dropped;
    ep_io io; /* send NULL: the sockets */
    uint8_t txbuf[EP_MAX_UDP];
};

/* endpoint.c */
/*
 * ep_new_io makes an endpoint without sockets or epoll descriptor: |local4|
 * is its IPv4 local address, |io| (copied) its send. Same errors as
 * pos_p2p_endpoint_new (POS_P2P_ERR_INVALID_ARGUMENT, POS_P2P_ERR_NOMEM).
 */
int ep_new_io(pos_p2p_endpoint **out, const pos_p2p_identity *id, const ep_io *io,
              const struct sockaddr_storage *local4);
/* ep_input: one received datagram (at most EP_MAX_UDP bytes) from |from| on socket |sock|. */
void ep_input(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
              const struct sockaddr *from, socklen_t fromlen);
int ep_cid_add(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_relay *r);
void ep_cid_remove(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], const pos_p2p_relay *r);
void ep_send(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
             const struct sockaddr *to, socklen_t tolen);

/* endpoint.c: connection ids of peer sessions */
int ep_cid_add_session(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN], pos_p2p_session *s);
void ep_cid_remove_session(pos_p2p_endpoint *ep, const uint8_t id[EP_CID_LEN],
                           const pos_p2p_session *s);

/* session.c: peer sessions (every ngtcp2 call of sessions lives there) */
void sess_input(pos_p2p_session *s, int sock, const uint8_t *data, size_t len,
                const struct sockaddr *from, socklen_t fromlen);
/* sess_unclaimed: a QUIC packet for no known connection id (a new peer's Initial?) */
void sess_unclaimed(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
                    const struct sockaddr *from, socklen_t fromlen);
int64_t sess_deadline_ms(const pos_p2p_endpoint *ep); /* -1 none */
void sess_on_deadlines(pos_p2p_endpoint *ep);
void sess_free_all(pos_p2p_endpoint *ep);

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
