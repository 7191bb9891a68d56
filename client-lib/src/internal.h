/*
 * Private interface of the endpoint (endpoint.c) to the connections it
 * carries (never installed). The endpoint owns the sockets, the map of the
 * connection ids this device issued, and the poll loop; it routes each
 * datagram: QUIC packets by destination connection id to their connection,
 * data frames (first byte without the QUIC fixed bit) to the connection
 * list, a new peer's Initial to the listener. It reaches connections only
 * through struct ep_conn below and never names their types: relay control
 * connections (quic_client.c) attach themselves, the session layer's table
 * (session_table.c, its operations in session_listen.c) is the listener.
 * Module order (no calls back): endpoint <- quic_client <- the session
 * modules (session_table <- session_path <- session <- session_listen <-
 * session_relay), checked by tests/unit/check_layering.py.
 */
#ifndef POS_P2P_INTERNAL_H
#define POS_P2P_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ctrl.h"
#include "identity.h"
#include "pos/p2p.h"
#include "quic_common.h"
#include "tls.h"

#define EP_CID_LEN 16 /* length of the connection ids this device issues */
#define EP_MAX_UDP 1500
#define EP_MAX_CIDS 65536 /* connection ids routed at once (sessions * ids each, far above) */

/* identity.c (struct pos_p2p_identity is defined there) */
/* p2p_identity_new: an identity holding a copy of |key| (NULL: no memory); free with
 * pos_p2p_identity_del. */
pos_p2p_identity *p2p_identity_new(const pos_identity *key);
const pos_identity *p2p_identity_key(const pos_p2p_identity *id); /* the key of |id| */

/*
 * The endpoint's I/O seam: where its datagrams go. The sockets by default;
 * a fuzz target gives its own send (ep_new_io) and feeds datagrams to
 * ep_input. Defined here because the caller fills it in (it is copied).
 */
typedef struct ep_io {
    /* send: |data| from local socket |sock| (0 IPv4, 1 IPv6) to |to|; 0, or -1 dropped */
    int (*send)(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                socklen_t tolen);
    void *arg;
} ep_io;

struct ep_conn;

/*
 * What the endpoint calls on a connection; a NULL member is never called.
 * Defined here because each connection module writes its own table.
 */
struct ep_conn_ops {
    /* input: a QUIC packet for one of its connection ids (listener: one nobody claims) */
    void (*input)(struct ep_conn *c, int sock, const uint8_t *data, size_t len,
                  const struct sockaddr *from, socklen_t fromlen);
    /* frame: a data frame from |from|: 0 taken, -1 from its peer but dropped, 1 not its own */
    int (*frame)(struct ep_conn *c, const uint8_t *data, size_t len, const struct sockaddr *from,
                 socklen_t fromlen);
    int64_t (*deadline_ms)(const struct ep_conn *c);     /* next timer (pos_p2p_now_ms), -1 none */
    void (*on_timer)(struct ep_conn *c, int64_t now_ms); /* each process round: due timers */
    void (*destroy)(struct ep_conn *c);                  /* the endpoint goes: free it */
};

/*
 * The first member of every connection: ngtcp2's user_data is the
 * connection, so |cid_ops| (quic_common.h) is found at its start. Defined
 * here because every connection embeds it (the endpoint links them without
 * knowing their types).
 */
struct ep_conn {
    const pos_quic_cid_ops *cid_ops; /* = &ep_cid_ops: ids go to ep's map */
    const struct ep_conn_ops *ops;
    pos_p2p_endpoint *ep;
    struct ep_conn *prev, *next; /* the endpoint's list (attached connections) */
    uint8_t write_later;         /* waiting in ep_write_later's list */
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

/* ep_conn_init: |c| belongs to |ep| and is called through |ops| (not yet in the list). */
void ep_conn_init(struct ep_conn *c, pos_p2p_endpoint *ep, const struct ep_conn_ops *ops);
/* ep_conn_attach: |c| joins the list: frames, timers, destroyed with the endpoint. */
void ep_conn_attach(struct ep_conn *c);
void ep_conn_detach(struct ep_conn *c); /* before freeing an attached connection */
/* ep_set_listener: |c| gets unclaimed Initials; timers after, destroyed before the list. */
void ep_set_listener(pos_p2p_endpoint *ep, struct ep_conn *c);
struct ep_conn *ep_listener(const pos_p2p_endpoint *ep); /* NULL: none yet */
/* the connection-id operations (common/quic_common.h) of every ep_conn */
extern const pos_quic_cid_ops ep_cid_ops;
int ep_cid_add(struct ep_conn *c, const uint8_t id[EP_CID_LEN]); /* 0, -1 no memory/full */

/* ep_send: a datagram from socket |sock| (0 IPv4, 1 IPv6); lost when it cannot go. */
void ep_send(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
             const struct sockaddr *to, socklen_t tolen);
/* ep_send_checked: ep_send that says whether the datagram left whole (0) or not (-1). */
int ep_send_checked(pos_p2p_endpoint *ep, int sock, const uint8_t *data, size_t len,
                    const struct sockaddr *to, socklen_t tolen);
int ep_has_sock(const pos_p2p_endpoint *ep, int sock); /* 1: socket |sock| is open */
/*
 * ep_tx_hold: until the matching ep_tx_release, sends are gathered into GSO
 * runs (ep_udp.h) instead of leaving at once; the outermost release sends
 * them. ep_send_checked then says 0 for a datagram gathered.
 */
void ep_tx_hold(pos_p2p_endpoint *ep);
void ep_tx_release(pos_p2p_endpoint *ep);
/*
 * ep_write_later: while the endpoint hands out a received batch, |c|'s
 * write is put off: |write|(c) is called once the batch is in (one write,
 * one ACK, for many packets; it may free c). 1: put off (or already), 0:
 * write now yourself. A connection freed before then calls ep_write_cancel.
 */
int ep_write_later(struct ep_conn *c, void (*write)(struct ep_conn *c));
void ep_write_cancel(struct ep_conn *c);
/* ep_local: the local address of socket |sock| (0 or 1) and its length in |*len|. */
const struct sockaddr_storage *ep_local(const pos_p2p_endpoint *ep, int sock, socklen_t *len);
uint8_t *ep_txbuf(pos_p2p_endpoint *ep); /* EP_MAX_UDP bytes to write one packet into */
/*
 * ep_tx_space: the same, but while held in place in the GSO run (sent
 * without a copy), with |head| (at most EP_TX_HEAD) bytes of room in front
 * of it: the start of the run's next datagram when a relay frame's header
 * goes there (relay_send_data_in_place).
 */
#define EP_TX_HEAD 8
uint8_t *ep_tx_space(pos_p2p_endpoint *ep, size_t head);
pos_tls_creds *ep_creds(const pos_p2p_endpoint *ep);
struct relay_tickets *ep_tickets(const pos_p2p_endpoint *ep); /* relays' tickets (tickets.h) */
/*
 * ep_addr_gen: a count that grows each time the endpoint notices that the
 * device's interface addresses changed (netlink; never with ep_new_io).
 */
uint32_t ep_addr_gen(const pos_p2p_endpoint *ep);
/* ep_park_idle_ms / ep_park_keepalive_ms: pos_p2p_endpoint_set_park's values (0: never / relay's)
 */
int ep_park_idle_ms(const pos_p2p_endpoint *ep);
int ep_park_keepalive_ms(const pos_p2p_endpoint *ep);

/* quic_client.c, for the session layer (hole punching, pos-relay/2) */
/*
 * relay_punch_cb: a PUNCH_START |m| for one of |r|'s open circuits, |arg| the
 * event callbacks' argument. Called while ngtcp2 reads the relay's packet,
 * before the CIRCUIT event it may follow is delivered: it must not call the
 * relay connection. |m| (its punch key) is wiped after the call.
 */
typedef void (*relay_punch_cb)(void *arg, pos_p2p_relay *r, const pos_ctrl_msg *m);
void relay_set_punch_cb(pos_p2p_relay *r, relay_punch_cb cb); /* NULL: PUNCH_START ignored */
/* relay_list_id: the relay's id (UUID) from the relay list entry it was dialed with. */
const char *relay_list_id(const pos_p2p_relay *r);
/*
 * relay_send_ctrl queues the client message |m| (PUNCH_REQUEST, PUNCH_REPORT)
 * on the request stream. 0, or POS_P2P_ERR_INVALID_ARGUMENT (not version 2,
 * not accepted, a bad message), POS_P2P_ERR_NOMEM.
 */
int relay_send_ctrl(pos_p2p_relay *r, const pos_ctrl_msg *m);
/*
 * relay_ping: the control connection sends a PING now (not inside a read of
 * it), so that the relay sees the address our NAT gives it today and moves
 * the connection there (it drops data frames from any other address).
 */
void relay_ping(pos_p2p_relay *r);

/* quic_client.c, for relay_api.c (the public calls on circuits) */
struct relay_circ;
struct relay_park;
/*
 * relay_queue: request |m| on the request stream, written at once unless
 * inside a read of the connection; while parking or parked it waits (a
 * parked connection reconnects for it). 0, or POS_P2P_ERR_INVALID_ARGUMENT
 * (not accepted, a bad message), POS_P2P_ERR_NOMEM.
 */
int relay_queue(pos_p2p_relay *r, const pos_ctrl_msg *m);
int relay_queue_answer(pos_p2p_relay *r, uint32_t req_id, int accept); /* ACCEPT/DECLINE */
uint32_t relay_new_req(pos_p2p_relay *r);                              /* the next request id */
struct relay_circ *relay_circ_of(const pos_p2p_relay *r); /* its circuits (relay_circ.h) */
struct relay_park *relay_park_of(const pos_p2p_relay *r); /* NULL: not home, or failed */
int relay_holding(const pos_p2p_relay *r);                /* 1: parking, parked or reconnecting */
pos_p2p_endpoint *relay_endpoint(const pos_p2p_relay *r);
/* relay_send_frame: |buf| to the relay's current address: 0, -1 no connection, -2 not sent */
int relay_send_frame(pos_p2p_relay *r, const uint8_t *buf, size_t len);
/*
 * relay_send_data_in_place: pos_p2p_relay_send_data of the |len| bytes at
 * frame + POS_FRAME_HEADER_LEN, the frame's header written in front of them
 * (|frame| has room for POS_FRAME_HEADER_LEN + |len| bytes): nothing is copied.
 */
int relay_send_data_in_place(pos_p2p_relay *r, uint32_t circuit_id, uint8_t *frame, size_t len);

#endif
