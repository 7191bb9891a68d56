/*
 * What a relay's answers mean to the library (relay_proto.c; never
 * installed): the event for each control message after WELCOME, the error
 * and sentence for the relay's CONNECTION_CLOSE, and which of a relay's
 * addresses the endpoint can reach. No state, no ngtcp2 connection: the
 * connection itself is quic_client.c's.
 */
#ifndef POS_P2P_RELAY_PROTO_H
#define POS_P2P_RELAY_PROTO_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>
#include <sys/socket.h>

#include "ctrl.h"
#include "internal.h"

#define RELAY_APP_NO_ERROR 0
#define RELAY_GOING_AWAY 0x108                   /* application close code, see docs/protocol.md */
#define RELAY_KEEPALIVE_NS (10 * NGTCP2_SECONDS) /* at most; shorter for short idle timeouts */

/*
 * relay_event_from_msg fills |ev| for relay message |m| (INCOMING, CIRCUIT,
 * REDIRECT, ERROR, CIRCUIT_CLOSED or GOAWAY). Returns 0, or -1 for any other
 * type (|ev| untouched): the relay breaks the protocol.
 */
int relay_event_from_msg(const pos_ctrl_msg *m, pos_p2p_relay_event *ev);

/*
 * relay_close_error: the POS_P2P_ERR_* for the relay's CONNECTION_CLOSE |cc|
 * (|accepted|: after WELCOME) and in |reason| (|cap| bytes) a sentence: the
 * relay's own reason phrase, printable ASCII only, or one of ours.
 */
int relay_close_error(const ngtcp2_connection_close_error *cc, int accepted, char *reason,
                      size_t cap);

/* relay_status_welcome: |st| once the relay's WELCOME |m| came (|rtt_ms| measured then). */
void relay_status_welcome(pos_p2p_relay_status *st, const pos_ctrl_msg *m, double rtt_ms);
/*
 * relay_attempt_deadline: when the current address's attempt ends: each of
 * the |addrs_left| + 1 addresses gets an equal share of the time left to
 * |connect_deadline_ms|, at least 1 s, never past it.
 */
int64_t relay_attempt_deadline(int64_t now_ms, int64_t connect_deadline_ms, size_t addrs_left);
/* relay_keepalive_ns: keep-alives well inside the relay's idle timeout (and NAT bindings). */
uint64_t relay_keepalive_ns(uint32_t idle_timeout_s);

/* relay_liberr_close: the CONNECTION_CLOSE for ngtcp2 error |liberr| of |qc|. */
void relay_liberr_close(ngtcp2_connection_close_error *ccerr, int liberr, ngtcp2_conn *qc);
/*
 * relay_liberr_reason: the POS_P2P_ERR_* for ngtcp2 error |liberr| (the pin
 * |mismatch|ed, the handshake |completed|) and a sentence in |why|.
 */
int relay_liberr_reason(int liberr, int mismatch, int completed, char *why, size_t cap);

/*
 * relay_tls_new: the TLS session of a relay connection of |ep| pinning relay
 * |key|, offering the ticket kept for |key| when there is one (tickets.h).
 * Returns 0, or -1.
 */
int relay_tls_new(pos_p2p_endpoint *ep, const uint8_t key[32], gnutls_session_t *tls);

/*
 * relay_tls_done, when the handshake of |tls| is complete: the relay's key
 * checked against |pin| (also on a resumed handshake, where GnuTLS calls no
 * verify function) and the negotiated |*version|. Returns 0, or -1.
 */
int relay_tls_done(gnutls_session_t tls, pos_tls_pin *pin, uint8_t *version);

/*
 * relay_drop_tls frees |*tls| once the handshake of |qc| is done (the keys are
 * in ngtcp2) and the relay's session ticket is kept in |ep|'s table (or the
 * connection is |connected|: WELCOME came without one, or tickets are off).
 */
void relay_drop_tls(pos_p2p_endpoint *ep, ngtcp2_conn *qc, gnutls_session_t *tls,
                    const pos_tls_pin *pin, int connected);
/*
 * relay_msg_request: |m| = CONNECT (to |peer_id|), ACCEPT or DECLINE of
 * request |req_id|; on a connection of |version| 3, CONNECT and ACCEPT carry
 * |ep|'s NAT mapping when known (it may be known only since HELLO went out).
 */
void relay_msg_request(pos_ctrl_msg *m, uint8_t type, uint32_t req_id, const char *peer_id,
                       const pos_p2p_endpoint *ep, int version);

/* relay_negotiated_version: POS_CTRL_V1 or V2 from the ALPN |tls| negotiated (V1 when none). */
int relay_negotiated_version(gnutls_session_t tls);

/*
 * relay_local_addrs: this device's interface addresses (up, not loopback, no
 * IPv6 link-local) of the families |ep| has sockets for, each with the port
 * of that socket, at most POS_CTRL_MAX_ADDRS: HELLO's local addresses, the
 * candidates a peer behind the same NAT can punch to.
 */
void relay_local_addrs(const pos_p2p_endpoint *ep, pos_ctrl_addrs *out);

/*
 * relay_hello_nat: the HELLO flags that tell the relay |ep|'s NAT mapping
 * (POS_CTRL_HELLO_NAT_*), on a connection of |version| 3; 0 otherwise or
 * when it is unknown.
 */
uint8_t relay_hello_nat(const pos_p2p_endpoint *ep, int version);

/*
 * relay_msg_hello: |m| = HELLO with the token (|token_len| bytes, at most
 * POS_CTRL_MAX_TOKEN), |flags| (POS_CTRL_HELLO_*), the NAT mapping flags on
 * a connection of |version| 3 and the local addresses. Wipe |m| after use.
 */
void relay_msg_hello(pos_ctrl_msg *m, const pos_p2p_endpoint *ep, const char *token,
                     size_t token_len, uint8_t flags, int version);

/* relay_quic_settings: the transport settings and parameters of a relay control connection. */
void relay_quic_settings(ngtcp2_settings *settings, ngtcp2_transport_params *params,
                         uint8_t *creating);

/* relay_same_addr: |a| is the address |b| (family, address and port). */
int relay_same_addr(const struct sockaddr *a, socklen_t alen, const ngtcp2_addr *b);

/* relay_id_find: the index of |v| in |a| (|n| ids), or -1. */
int relay_id_find(const uint32_t *a, size_t n, uint32_t v);
/* relay_id_remove: drop |a|[|i|] (the order changes). */
void relay_id_remove(uint32_t *a, size_t *n, int i);

/*
 * relay_pick_addr: the relay's first address from index |from| of a family
 * |ep| has a socket for; its index goes to |*index|, the address and socket
 * to |*out| and |*sock| unless |out| is NULL. 0, or -1 when there is none.
 */
int relay_pick_addr(const pos_p2p_endpoint *ep, const pos_p2p_relay_info *info, size_t from,
                    struct sockaddr_storage *out, int *sock, size_t *index);
/* relay_count_addrs: how many usable addresses from index |from|. */
size_t relay_count_addrs(const pos_p2p_endpoint *ep, const pos_p2p_relay_info *info, size_t from);

struct sendq;

/*
 * relay_client_new: |*qc|, a client connection from |ep|'s socket |sock| to
 * |remote| with the relay settings, callbacks |cbs| and |user_data|;
 * |*creating| is 1 during the call (pos_quic_rand). Its source connection
 * id goes to |scid_out|. 0, or -1 (no memory).
 */
int relay_client_new(ngtcp2_conn **qc, pos_p2p_endpoint *ep, int sock,
                     const struct sockaddr_storage *remote, const ngtcp2_callbacks *cbs,
                     void *user_data, uint8_t *creating, uint8_t scid_out[EP_CID_LEN]);

/* relay_write_close: CONNECTION_CLOSE |ccerr| of |qc| from |ep|'s socket |sock| (best effort). */
void relay_write_close(pos_p2p_endpoint *ep, ngtcp2_conn *qc, int sock,
                       const ngtcp2_connection_close_error *ccerr);
/*
 * relay_write sends what |qc| has: |out| (HELLO, with FIN) on stream |s0|
 * first, then |rq| on the request stream |s1| (-1: not open), acks and
 * keep-alives. 0, or the ngtcp2 error that ends the connection.
 */
int relay_write(pos_p2p_endpoint *ep, ngtcp2_conn *qc, int sock, int64_t s0, struct sendq *out,
                int64_t s1, struct sendq *rq);

#endif
