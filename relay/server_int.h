/*
 * The relay server's private parts shared by its files: quic_server.c
 * (routing, accepting, set-up), server_conn.c (one QUIC connection),
 * server_ctrl.c (the control protocol on it and the broker's outputs) and
 * server_udp.c (the UDP sockets, batched receive and the forwarder's
 * batched sends, the default I/O seam); none of them makes a socket call
 * but server_udp.c. Never included outside relay/.
 */
#ifndef POS_RELAY_SERVER_INT_H
#define POS_RELAY_SERVER_INT_H

#include <ev.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>
#include <sys/socket.h>

#include "broker.h"
#include "cid_map.h"
#include "circuit.h"
#include "ctrl.h"
#include "forward.h"
#include "park.h"
#include "park_rx.h"
#include "parking.h"
#include "pending_addr.h"
#include "quic_common.h"
#include "quic_server.h"
#include "rxbatch.h"
#include "sendbuf.h"
#include "secret.h"
#include "tls.h"

#define MAX_SOCKS RELAY_MAX_ADDRS
#define MAX_UDP 1500
#define SCID_LEN 16 /* the length of every connection id the server issues */

/*
 * A connection (struct rconn) goes through these states:
 *   RATE_CHECK  first Initial kept aside while Redis rates the address
 *   HANDSHAKE   ngtcp2 connection exists, TLS running
 *   HELLO_WAIT  handshake done, peer id known, waiting for HELLO
 *   AUTH_CHECK  HELLO received, token being checked
 *   ACTIVE      WELCOME sent, client counted and present
 *   CLOSING     CONNECTION_CLOSE sent; resent on input, freed after 3 PTO
 *   DRAINING    peer closed; freed after 3 PTO
 */
enum rstate { RATE_CHECK, HANDSHAKE, HELLO_WAIT, AUTH_CHECK, ACTIVE, CLOSING, DRAINING };

struct rconn {
    const pos_quic_cid_ops *cid_ops; /* first: ngtcp2's user_data (quic_common.h) */
    relay_server *srv;
    struct rconn *prev, *next; /* all connections */
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    ev_timer timer;
    struct sockaddr_storage remote; /* address of the first packet (rate check) */
    int sock;                       /* index into srv->socks */
    uint8_t state;
    uint8_t retried;        /* address validated by a Retry token */
    uint8_t addr_counted;   /* counted in srv->pending_addrs (retried, before ACTIVE) */
    uint8_t counted_active; /* counted in conns_active (else in pending) */
    uint8_t in_read;        /* inside ngtcp2_conn_read_pkt: no writes, no closes now */
    uint16_t close_code;    /* refusal decided inside read_pkt, sent after it returns */
    uint8_t creating;       /* inside ngtcp2_conn_server_new (see pos_quic_rand) */
    uint64_t check;         /* pending Redis check handle, 0 none */
    ngtcp2_cid odcid;       /* the client's first DCID, routed until the connection ends */
    ngtcp2_tstamp created;
    ngtcp2_cid retry_odcid;
    uint8_t *first_pkt; /* RATE_CHECK: the Initial kept aside */
    size_t first_len;
    pos_ctrl_reader rd;
    relay_sendbuf out;  /* control messages on stream 0, kept until acknowledged */
    uint8_t *close_pkt; /* CLOSING: the packet resent on input */
    size_t close_len;
    char token_id[POS_SECRET_HASH_HEXLEN]; /* ACTIVE: the token's hash */
    char peer_id[POS_PEER_ID_STRLEN];
    /* circuits (ACTIVE) */
    relay_broker_client *bc;     /* in the broker from WELCOME until relay_ctrl_end */
    relay_budget *budget;        /* the token's, from relay_budget_acquire */
    struct sockaddr_storage cur; /* current address of the control connection */
    pos_ctrl_addrs local;        /* the client's own addresses (HELLO) */
    pos_ctrl_reader rd_req;      /* the client's request stream */
    int64_t req_stream;          /* -1 until the client opens it */
    struct rconn *dirty_next;    /* on srv->dirty: broker messages to write */
    uint8_t dirty;
    uint8_t ended;   /* relay_ctrl_end ran: circuits closed, presence dropped */
    ev_timer expiry; /* ACTIVE, token with an expiry: closes the connection then */
    uint8_t home;    /* HELLO without NOT_HOME: presence and INCOMING are here */
    uint8_t version; /* POS_CTRL_V1, V2 or V3, from the negotiated ALPN (handshake) */
    uint8_t nat;     /* enum pos_ctrl_nat from HELLO's flags (version 3) */
    uint8_t worker;  /* the worker its ids name (quic_server.c pick_worker: the least loaded) */
    /* parking (server_park.c) */
    uint8_t awake;                      /* counted in st.awake: an ACTIVE home connection */
    uint8_t has_lim;                    /* |lim| holds what its token allows (accepted) */
    relay_limits lim;                   /* for its record when it parks */
    uint8_t parked;                     /* PARKED sent: freed silently once acknowledged (or 3 s) */
    uint8_t has_park_key;               /* version 4: park_key derived after the handshake */
    uint8_t park_key[POS_PARK_KEY_LEN]; /* wiped when freed */
    ngtcp2_tstamp park_until;           /* |parked|: freed at the latest then */
};

/* What the forwarder's park callback needs (relay_park_fast): one per forwarder. */
struct relay_park_ctx {
    relay_server *srv;
    int sock; /* the local address index of the batch being forwarded */
};

struct sock {
    int fd;
    ev_io io;
    int park_fd;           /* its parked datagrams' socket (worker 0's), or -1 (park_rx.h) */
    relay_park_rx park_rx; /* reads park_fd when there are no workers */
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
    relay_broker *broker;  /* CONNECT -> INCOMING -> ACCEPT -> CIRCUIT */
    ev_timer broker_timer; /* the broker's next deadline (relay_broker_expire) */
    struct rconn *dirty;   /* connections with broker messages to write (flush) */
    int gso;
    relay_rxbatch *rxb; /* the main loop's receive batch (rxbatch.h) */
    /* workers (workers.c): NULL with one worker, which is this loop */
    struct relay_workers *workers;
    unsigned n_workers;  /* at least 1 */
    unsigned cur_worker; /* the worker whose datagram is being handled (under the lock) */
    relay_worker_stats wst[RELAY_MAX_WORKERS];
    /* connections (any state) whose ids name each worker: a new one goes to
     * the worker with the fewest (quic_server.c pick_worker) */
    unsigned live_by_worker[RELAY_MAX_WORKERS];
    /* parking (server_park.c): NULL when park_lifetime is 0 */
    relay_park *park;
    ev_timer park_tick;      /* 4 per second: lifetimes, presence batches, malloc_trim */
    ev_timer park_wakes;     /* the next WAKE datagram due */
    ev_async park_rewake;    /* a keep-alive of a record being woken: wake it again */
    uint32_t live_peak;      /* relay_live_conns' most since the last malloc_trim */
    int64_t down_since_ms;   /* since when they stay well below it, 0: they do not */
    uint64_t park_redis_ups; /* relay_services_redis_ups at the last tick */
    /* parked peers whose presence write is due, sent RELAY_PRESENCE_BATCH to a command */
    char park_due[RELAY_PRESENCE_BATCH][POS_PEER_ID_STRLEN];
    unsigned n_park_due;
    struct relay_park_ctx park_ctx; /* the main loop's forwarder's (no workers) */
};

/* server_conn.c: sending, the clock, and one connection's life. */
/* relay_reset_token: |cid|'s stateless reset token (keyed BLAKE2b of the id under the
 * process-wide reset secret, one derivation for every worker). Returns 0. */
int relay_reset_token(const relay_server *s, uint8_t *token, const ngtcp2_cid *cid);
void relay_send_to(relay_server *s, int sock, const uint8_t *data, size_t len,
                   const struct sockaddr *to, socklen_t tolen);
ngtcp2_tstamp relay_now(const relay_server *s);
extern const pos_quic_cid_ops relay_conn_cid_ops;
void relay_conn_callbacks_init(ngtcp2_callbacks *cb);
/* relay_conn_make: the ngtcp2 server connection and TLS session of |c| from Initial |hd|; 0/-1 */
int relay_conn_make(struct rconn *c, const ngtcp2_pkt_hd *hd);
/* relay_conn_input feeds one datagram to |c|, which may be freed by it. */
void relay_conn_input(struct rconn *c, int sock, const uint8_t *data, size_t len,
                      const struct sockaddr *from, socklen_t fromlen);
void relay_conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
/* relay_conn_write sends what ngtcp2 has for |c| (handshake, acks, stream 0). Returns 0. */
int relay_conn_write(struct rconn *c);
/* relay_conn_close_app closes |c| with a refusal code and its reason phrase (now or after
 * read_pkt); relay_conn_close_later only marks it, to be closed from its timer. */
void relay_conn_close_app(struct rconn *c, enum relay_refusal code);
void relay_conn_close_later(struct rconn *c, enum relay_refusal code);
/* relay_conn_pending_addr_give: |c|'s handshake no longer counts against its address. */
void relay_conn_pending_addr_give(struct rconn *c);
void relay_conn_free(struct rconn *c);
/* relay_live_conns: connections in any state (pending, then active), conn_new .. relay_conn_free.
 */
static inline uint32_t relay_live_conns(const relay_server *s)
{
    return (uint32_t)(s->pending + s->st.conns_active);
}

/* server_ctrl.c: the control protocol and the broker's outputs. */
int relay_ctrl_broker_new(relay_server *s);
int relay_ctrl_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                                const uint8_t *data, size_t datalen, void *user_data,
                                void *stream_user_data);
/* relay_ctrl_refuse: count and log refusal |why|, then close |c| with it. */
void relay_ctrl_refuse(struct rconn *c, enum relay_refusal why);
/* relay_ctrl_queue: |m| onto |c|'s stream 0 at its version (written by relay_conn_write). */
void relay_ctrl_queue(struct rconn *c, const pos_ctrl_msg *m);
/* relay_ctrl_accept: |c| is accepted with |lim| and |token_id| (its connection slot): WELCOME. */
void relay_ctrl_accept(struct rconn *c, const relay_limits *lim, const char *token_id);
/* relay_ctrl_end: |c| is over: circuits closed, requests ended, presence dropped. Runs once. */
void relay_ctrl_end(struct rconn *c);

/*
 * workers.c (workers.h): N threads on the UDP port. relay_worker_mark_cid
 * makes connection id |cid| (SCID_LEN bytes) name |worker| in its first byte
 * (a random multiple of n_workers added), so that the steering program sends
 * the client's packets to that worker; nothing with one worker.
 * relay_workers_bind binds the sockets of workers 1..N-1 next to each of
 * srv->socks (worker 0's) and attaches the steering program.
 */
void relay_worker_mark_cid(const relay_server *s, unsigned worker, uint8_t *cid);
int relay_workers_bind(relay_server *s, char *err, size_t errlen);
/* relay_park_socks_bind: the parked-datagram sockets of each address, one per worker. */
int relay_park_socks_bind(relay_server *s, char *err, size_t errlen);
void relay_workers_del(relay_server *s);
/* relay_workers_forward_stats: the workers' forwarder counters summed into |out|. */
void relay_workers_forward_stats(const relay_server *s, relay_forward_stats *out);
/* relay_workers_worker_forwarded: each worker's forwarded DATA frames into out[k].forwarded. */
void relay_workers_worker_forwarded(const relay_server *s, relay_worker_stats *out);
/* relay_workers_send_failed: forwarded datagrams the workers' sockets refused. */
uint64_t relay_workers_send_failed(const relay_server *s);

/* server_park.c: parked clients (docs/protocol.md "Parking"). */
/* relay_park_init: the record table and its timers when parking is on; 0 or -1 (|err|). */
int relay_park_init(relay_server *s, char *err, size_t errlen);
/* relay_park_fini: every record ends (budgets and connection slots given back); timers stop. */
void relay_park_fini(relay_server *s);
/* relay_ctrl_park: PARK from |c|: PARKED and a record, or ERROR with the reason. */
void relay_ctrl_park(struct rconn *c, const pos_ctrl_msg *m);
/* relay_park_conn_due: |c| parked and its PARKED is acknowledged or overdue: free it now. */
int relay_park_conn_due(struct rconn *c);
/*
 * relay_park_fast: the forwarders' relay_park_cb (forward.h), |arg| a
 * struct relay_park_ctx: a keep-alive checked under the workers' shared
 * lock (each record's datagrams reach one worker: its id's worker bits) and
 * turned into its PARK_ACK in place; 0 when dropped (counted).
 */
int relay_park_fast(void *arg, uint8_t *buf, size_t len, const struct sockaddr *from);
/* relay_park_datagram: a parked datagram (common/park.h) the forwarder handed back. */
void relay_park_datagram(relay_server *s, int sock, const uint8_t *data, size_t len,
                         const struct sockaddr *from, socklen_t fromlen);
/* relay_park_wake_peer: the broker's park_wake: wake |peer_id|'s record, 1, or 0 when none. */
int relay_park_wake_peer(void *arg, const char *peer_id);
/*
 * relay_park_unwait_peer: the broker's park_unwait: one CONNECT less waits
 * for |peer_id|; with none left its record is no longer woken (no more
 * WAKEs, nor a new series for its keep-alives) and stays parked.
 */
void relay_park_unwait_peer(void *arg, const char *peer_id);
/*
 * relay_park_resume: HELLO of home connection |c| with |token|: when |c|'s
 * peer has a record of the same token, |c| takes the record's connection
 * slot, budget and limits (accepted at once, without Redis) and 1 is
 * returned; else 0 and the record, if any, ends when |c| is accepted.
 */
int relay_park_resume(struct rconn *c, const char *token, size_t token_len);
/* relay_park_home: |c| became its peer's home connection: the peer's record ends (woken). */
void relay_park_home(struct rconn *c);
/* relay_park_expects: 1 when |from| is the address of a record being woken (no rate check). */
int relay_park_expects(relay_server *s, const struct sockaddr *from);
/* relay_park_revoke: the records of token |token_id| end at once. */
void relay_park_revoke(relay_server *s, const char *token_id);
/* relay_park_goaway: every record ends, its Redis entries left to the final clean-up. */
void relay_park_goaway(relay_server *s);

/* server_udp.c: the default relay_io.send (|arg| is the server) and clock. */
int relay_udp_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                   socklen_t tolen);
uint64_t relay_udp_now(void *arg);
/*
 * relay_udp_send_batch sends |n| forwarded datagrams of |tx| on |fd|
 * (sendmmsg); what the socket refuses is lost and counted in the return
 * value. A refused GSO send turns GSO off (|*gso| and |fw|) from the next
 * batch on. Used by the main loop and by every worker.
 */
unsigned relay_udp_send_batch(int fd, struct mmsghdr *tx, unsigned n, int *gso,
                              relay_forwarder *fw);

/* relay_udp_bind: a bound UDP socket for |ss| (|text| names it in |err|), or -1. */
int relay_udp_bind(const struct sockaddr_storage *ss, int reuseport, const char *text, char *err,
                   size_t errlen);

#endif
