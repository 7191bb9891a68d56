/*
 * libpos-p2p: let a person's devices reach each other directly.
 *
 * All handles are opaque. Every function that returns int returns 0 on
 * success or one of the negative POS_P2P_ERR_* codes its comment lists,
 * unless the comment says otherwise; pos_p2p_strerror() has a sentence for
 * each code. A function whose comment says "No errors" cannot fail.
 *
 * Time: relative waits are `int timeout_ms` (-1: no limit); absolute
 * deadlines are `int64_t` milliseconds on the pos_p2p_now_ms() clock, -1
 * for none. Blocking runners stop when a `done(arg)` callback returns
 * non-zero.
 *
 * The library fits any event loop: each object that does I/O exposes a file
 * descriptor to poll for reading, the next deadline, and a call that
 * processes whatever is ready; blocking runners are built on top for simple
 * programs.
 *
 * Local discovery (mDNS / DNS-SD, pos_mdns_*) is declared in pos/mdns.h,
 * which includes this header.
 */
#ifndef POS_P2P_H
#define POS_P2P_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors (shared by every part of the library) ---- */
#define POS_P2P_ERR_INVALID_ARGUMENT -1
#define POS_P2P_ERR_NOMEM -2
#define POS_P2P_ERR_IO -3
#define POS_P2P_ERR_TIMEOUT -4
/* codes -5 .. -49 belong to the relay/session part below, -50 .. -79 to discovery
   (pos/mdns.h) */

/*
 * pos_p2p_done_cb: the stop condition of a blocking runner
 * (pos_p2p_endpoint_run, pos_mdns_run): non-zero ends the run.
 */
typedef int (*pos_p2p_done_cb)(void *arg);

/* pos_p2p_strerror: a sentence for any code of this library ("unknown error" otherwise). No errors.
 */
const char *pos_p2p_strerror(int code);

/* ---- relay connections and sessions ---- */
/*
 * Errors of this part. Refusals by a relay carry the relay's own reason
 * text in pos_p2p_relay_status.reason.
 */
#define POS_P2P_ERR_REFUSED -5       /* the relay refused this client (see the reason) */
#define POS_P2P_ERR_PEER_MISMATCH -6 /* the relay's key is not the pinned peer id */
#define POS_P2P_ERR_HANDSHAKE -7     /* QUIC or TLS handshake failed */
#define POS_P2P_ERR_PROTOCOL -8      /* the relay broke the control protocol */
#define POS_P2P_ERR_CLOSED -9        /* the relay closed the connection */
#define POS_P2P_ERR_HTTP -10         /* the discovery API is unreachable or answered an error */
#define POS_P2P_ERR_BAD_LIST -11     /* the relay list is not the expected JSON */
#define POS_P2P_ERR_IDENTITY -12     /* the identity file cannot be read or written */
#define POS_P2P_ERR_NO_ROUTE -13     /* no socket for any of the relay's address families */
#define POS_P2P_ERR_GOING_AWAY -14   /* the relay is shutting down: use another */

#define POS_P2P_PEER_ID_STRLEN 44 /* 43 characters and a NUL */
#define POS_P2P_ADDR_STRLEN 64
#define POS_P2P_UUID_STRLEN 37
#define POS_P2P_RELAY_MAX_ADDRS 8

/* ---- identity: this device's Ed25519 key ---- */

typedef struct pos_p2p_identity pos_p2p_identity;

/*
 * pos_p2p_identity_default_path writes the identity file's path: $POS_IDENTITY,
 * else $XDG_CONFIG_HOME/pos/identity, else $HOME/.config/pos/identity.
 * Returns 0 on success or POS_P2P_ERR_INVALID_ARGUMENT when none of them is
 * set or the path does not fit |outlen| bytes.
 */
int pos_p2p_identity_default_path(char *out, size_t outlen);

/*
 * pos_p2p_identity_load reads the key file |path|; with |create| set, a
 * missing file is created (mode 0600) and |*created| (may be NULL) set to 1.
 * Returns 0 on success or one of these negative codes, with a sentence in
 * |err|: POS_P2P_ERR_IDENTITY (the file cannot be read, written or is not a
 * key), POS_P2P_ERR_NOMEM. Free with pos_p2p_identity_del (the key is
 * wiped).
 */
int pos_p2p_identity_load(const char *path, int create, pos_p2p_identity **out, int *created,
                          char *err, size_t errlen);

/* pos_p2p_identity_peer_id: the peer id of |id| (POS_P2P_PEER_ID_STRLEN - 1 characters). No errors.
 */
void pos_p2p_identity_peer_id(const pos_p2p_identity *id, char out[POS_P2P_PEER_ID_STRLEN]);

/* pos_p2p_identity_del wipes the key and frees |id| (NULL: nothing). */
void pos_p2p_identity_del(pos_p2p_identity *id);

/* ---- the relay list of a discovery API ---- */

/* One relay entry as validated from the list (plain data: copy freely). */
typedef struct pos_p2p_relay_info {
    char id[POS_P2P_UUID_STRLEN];
    char peer_id[POS_P2P_PEER_ID_STRLEN]; /* base64 form, whatever form the list used */
    size_t n_addrs;
    char addrs[POS_P2P_RELAY_MAX_ADDRS][POS_P2P_ADDR_STRLEN];
} pos_p2p_relay_info;

typedef struct pos_p2p_relay_list pos_p2p_relay_list;

/*
 * pos_p2p_relay_list_fetch GETs {api_url}/api/p2p/relays (libcurl, at most
 * |timeout_ms|, body at most 1 MiB) and parses it like
 * pos_p2p_relay_list_parse. Blocking. Returns 0 on success (|err| then
 * says how many entries were skipped, or is empty) or one of these negative
 * codes, with a sentence in |err|: POS_P2P_ERR_INVALID_ARGUMENT (|api_url|
 * is not http:// or https://), POS_P2P_ERR_HTTP (unreachable, or a status
 * other than 200), POS_P2P_ERR_BAD_LIST (not a JSON array, or over 1 MiB),
 * POS_P2P_ERR_NOMEM.
 */
int pos_p2p_relay_list_fetch(const char *api_url, int timeout_ms, pos_p2p_relay_list **out,
                             char *err, size_t errlen);

/*
 * pos_p2p_relay_list_parse reads a JSON array of {"id", "peer_id", "addrs"}.
 * A peer id may be 43 characters of base64 or a libp2p Ed25519 PeerId
 * ("12D3KooW...", Spacedrive's form); either is stored in the base64 form,
 * the key the relay is then pinned to.
 * Entries that are not valid (id not a UUID, peer id not canonical, an
 * address that does not parse, no address, more than
 * POS_P2P_RELAY_MAX_ADDRS) are skipped and counted in |*skipped| (may be
 * NULL); extra fields are allowed. At most 256 entries are kept. Returns 0 on
 * success or one of these negative codes: POS_P2P_ERR_BAD_LIST (not a JSON
 * array), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_relay_list_parse(const char *json, size_t len, pos_p2p_relay_list **out,
                             size_t *skipped);

/* pos_p2p_relay_list_count: the entries kept (0 for NULL). No errors. */
size_t pos_p2p_relay_list_count(const pos_p2p_relay_list *l);
/* pos_p2p_relay_list_get: entry |i|, or NULL when |i| is out of range. No errors. */
const pos_p2p_relay_info *pos_p2p_relay_list_get(const pos_p2p_relay_list *l, size_t i);
/* pos_p2p_relay_list_del frees |l| (NULL: nothing). */
void pos_p2p_relay_list_del(pos_p2p_relay_list *l);

/* ---- endpoint: this device's UDP sockets and everything on them ---- */

/*
 * An endpoint owns one UDP socket per address family (IPv4, and IPv6 where
 * the host has it). Every connection of the device shares them: relay
 * control connections, relay data frames and direct sessions, so the
 * address a relay observes is the one peers can punch to.
 */
typedef struct pos_p2p_endpoint pos_p2p_endpoint;

/*
 * pos_p2p_endpoint_new binds both sockets on |port| (0: any free port; with
 * POS_DOCKER=true in the environment and |port| 0, 7373). |id| is copied.
 * Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, |port| over 65535),
 * POS_P2P_ERR_IO (the IPv4 socket cannot be bound, or epoll failed),
 * POS_P2P_ERR_NOMEM (memory, or the TLS credentials).
 */
int pos_p2p_endpoint_new(pos_p2p_endpoint **out, const pos_p2p_identity *id, unsigned port);

/*
 * pos_p2p_endpoint_set_gso: |on| 0 turns UDP GSO (several packets of a
 * session per send call, cut into datagrams by the kernel) and UDP GRO
 * (several received datagrams of one sender per read) off for |ep|, 1 turns
 * them back on (the default). Every datagram stays at most 1452 bytes either
 * way. When the kernel refuses a GSO send, GSO turns itself off. Returns 0,
 * or POS_P2P_ERR_INVALID_ARGUMENT (|ep| NULL).
 */
int pos_p2p_endpoint_set_gso(pos_p2p_endpoint *ep, int on);
/* pos_p2p_endpoint_gso: 1 while |ep| sends with UDP GSO, 0 when off (or |ep| NULL). */
int pos_p2p_endpoint_gso(const pos_p2p_endpoint *ep);

/*
 * pos_p2p_endpoint_fd: one descriptor (epoll) that is readable when any
 * socket is, or the interface addresses changed (netlink). No errors.
 */
int pos_p2p_endpoint_fd(const pos_p2p_endpoint *ep);

/*
 * pos_p2p_endpoint_deadline: when to call process at the latest, on the
 * pos_p2p_now_ms clock, or -1 when no timer is set. No errors.
 */
int64_t pos_p2p_endpoint_deadline(const pos_p2p_endpoint *ep);

/* pos_p2p_endpoint_process reads what is ready and runs due timers. Never blocks. No errors:
 * returns 0. */
int pos_p2p_endpoint_process(pos_p2p_endpoint *ep);

/*
 * pos_p2p_endpoint_run is the blocking runner: poll + process until |done|
 * returns non-zero (checked before each round; may be NULL) or |timeout_ms|
 * passes (-1: no limit). Returns 0 when |done| said so, or one of these
 * negative codes: POS_P2P_ERR_TIMEOUT (the time passed), POS_P2P_ERR_IO
 * (epoll failed).
 */
int pos_p2p_endpoint_run(pos_p2p_endpoint *ep, int timeout_ms, pos_p2p_done_cb done, void *arg);

/* pos_p2p_endpoint_local_port: the UDP port of the endpoint's sockets. No errors. */
unsigned pos_p2p_endpoint_local_port(const pos_p2p_endpoint *ep);

/*
 * pos_p2p_endpoint_set_resumption: whether relay connections of |ep| resume
 * TLS 1.3 with a session ticket from an earlier connection to the same relay
 * (|enabled| 1, the default: a returning connection costs the relay about
 * half the CPU of a full handshake), or always make a full handshake (0; the
 * tickets kept so far are forgotten). Tickets live in the endpoint's memory
 * only, one per relay key: a relay with another key is never offered one,
 * and a resumed connection still checks the relay's pinned key. Returns 0, or
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL |ep|, |enabled| not 0 or 1).
 */
int pos_p2p_endpoint_set_resumption(pos_p2p_endpoint *ep, int enabled);

/* pos_p2p_endpoint_del closes every connection and the sockets and frees |ep| (NULL: nothing). */
void pos_p2p_endpoint_del(pos_p2p_endpoint *ep);

/*
 * pos_p2p_now_ms: the clock of every deadline of this library (monotonic
 * milliseconds, int64_t; -1 means "no deadline"). Relative waits are
 * `int timeout_ms` (-1: no limit). No errors.
 */
int64_t pos_p2p_now_ms(void);

/* ---- a control connection to a relay ---- */

typedef struct pos_p2p_relay pos_p2p_relay;

enum pos_p2p_relay_state {
    POS_P2P_RELAY_CONNECTING = 0, /* handshake or HELLO under way */
    POS_P2P_RELAY_ACCEPTED = 1,   /* WELCOME received: status has the results */
    POS_P2P_RELAY_FAILED = 2,     /* refused, closed, timed out: status.error says why */
};

typedef struct pos_p2p_relay_status {
    int state;                          /* enum pos_p2p_relay_state */
    int error;                          /* 0 or POS_P2P_ERR_* once FAILED */
    uint64_t close_code;                /* the relay's application error code, when it sent one */
    char reason[257];                   /* the relay's reason phrase, or a sentence of ours */
    char remote[POS_P2P_ADDR_STRLEN];   /* the relay address used */
    char observed[POS_P2P_ADDR_STRLEN]; /* our address as the relay saw it */
    double rtt_ms;                      /* smoothed round-trip time when accepted */
    uint64_t bytes_per_sec;             /* limits of the token: 0 = unlimited */
    uint64_t burst_bytes;
    uint32_t max_conns;
    int64_t expires_at; /* unix seconds, 0 = never */
    uint32_t idle_timeout_s;
    int64_t accepted_at_ms; /* pos_p2p_now_ms() when accepted, failed_at_ms when failed */
    int64_t failed_at_ms;
    uint32_t park_keepalive_s, parks; /* parked: keep-alive interval (s); times parked */
    int awake_reason;                 /* the last reconnect after parking (pos_p2p_awake_reason) */
} pos_p2p_relay_status;

/*
 * pos_p2p_relay_connect starts a control connection to |relay| (its addresses of a family
 * the endpoint has, in order: each gets an equal share of |timeout_ms|, at least 1 s, before
 * the next is tried), pinning relay->peer_id, and sends HELLO with |token| once the
 * handshake is done. Progress happens in pos_p2p_endpoint_process; the connection fails
 * with POS_P2P_ERR_TIMEOUT when not accepted within |timeout_ms|. The connection stays open
 * (with keep-alives) until pos_p2p_relay_close. Returns 0 on success or one of these
 * negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, |timeout_ms| not positive,
 * empty or too long token, peer id not canonical), POS_P2P_ERR_NO_ROUTE (no address of a
 * family the endpoint has), POS_P2P_ERR_NOMEM, POS_P2P_ERR_HANDSHAKE (TLS set-up failed).
 */
int pos_p2p_relay_connect(pos_p2p_endpoint *ep, const pos_p2p_relay_info *relay, const char *token,
                          int timeout_ms, pos_p2p_relay **out);

/*
 * Flags of pos_p2p_relay_connect_flags. POS_P2P_RELAY_NOT_HOME: the connection only
 * measures the relay or dials a peer through it; the relay records no presence for it and
 * sends it no INCOMING, so it never changes where peers reach this device. Without it
 * (pos_p2p_relay_connect) the connection is the device's home: the relay records the
 * device's presence there, taking it from any other relay, until the connection ends.
 * Relays older than this flag refuse it as "bad request" (docs/protocol.md).
 */
#define POS_P2P_RELAY_NOT_HOME 0x1u

/*
 * pos_p2p_relay_connect_flags: pos_p2p_relay_connect with |flags| (above). Returns 0 on
 * success or one of the negative codes of pos_p2p_relay_connect,
 * POS_P2P_ERR_INVALID_ARGUMENT also for an unknown flag.
 */
int pos_p2p_relay_connect_flags(pos_p2p_endpoint *ep, const pos_p2p_relay_info *relay,
                                const char *token, int timeout_ms, unsigned flags,
                                pos_p2p_relay **out);

/* pos_p2p_relay_get_status copies the connection's state and results. No errors. */
void pos_p2p_relay_get_status(const pos_p2p_relay *r, pos_p2p_relay_status *out);

/* pos_p2p_relay_close closes the connection (telling the relay) and frees |r| (NULL: nothing). */
void pos_p2p_relay_close(pos_p2p_relay *r);

/*
 * pos_p2p_endpoint_set_park: home connections of |ep| (now or later) idle |idle_ms| (no circuit
 * or request) park on pos-relay/4 relays (docs/client-library.md "Parking"): QUIC freed, a MACed
 * keep-alive every |keepalive_ms|, woken by a peer's CONNECT (state stays ACCEPTED; events PARKED,
 * AWAKE). |idle_ms| 0 never (default) or 1000..86400000; |keepalive_ms| 0 the relay's or
 * 1000..3600000, at most the relay's. Returns 0 or POS_P2P_ERR_INVALID_ARGUMENT.
 */
int pos_p2p_endpoint_set_park(pos_p2p_endpoint *ep, int idle_ms, int keepalive_ms);
/* pos_p2p_relay_parked: 1 while |r| is parked (its QUIC connection freed), else 0. No errors. */
int pos_p2p_relay_parked(const pos_p2p_relay *r);

/* ---- circuits: reaching a peer through the relay (data plane) ---- */

#define POS_P2P_ERR_PEER_NOT_CONNECTED -15 /* the peer is connected to no relay we know */
#define POS_P2P_ERR_DECLINED -16           /* the peer declined (or is not allowing us) */
#define POS_P2P_ERR_REDIRECTED -17         /* the peer is on another relay: see the event */
#define POS_P2P_ERR_CIRCUIT_CLOSED -18     /* the circuit ended (either side left) */
#define POS_P2P_ERR_TOO_BIG -19            /* a datagram larger than a frame can carry */
#define POS_P2P_ERR_CIRCUIT_LIMIT -25      /* a relay's circuit cap (connection, token, peer's) */

enum pos_p2p_relay_event_type {
    POS_P2P_RELAY_EV_INCOMING = 1,       /* a peer asks for us: answer with pos_p2p_relay_answer */
    POS_P2P_RELAY_EV_CIRCUIT = 2,        /* a circuit is ready (for our request or our accept) */
    POS_P2P_RELAY_EV_REDIRECT = 3,       /* the peer is held by |redirect|: dial that relay */
    POS_P2P_RELAY_EV_ERROR = 4,          /* our request failed: |error|, |code|, |text| */
    POS_P2P_RELAY_EV_CIRCUIT_CLOSED = 5, /* |circuit_id| ended */
    POS_P2P_RELAY_EV_GOAWAY = 6,         /* the relay is shutting down: move elsewhere */
    POS_P2P_RELAY_EV_PARKED = 7,         /* parked: QUIC freed, keep-alives hold the record */
    POS_P2P_RELAY_EV_AWAKE = 8,          /* connected again after parking: |code| says why */
};
/* EV_AWAKE's |code|: woken by the relay (a peer asks), our request, keep-alives unanswered */
enum pos_p2p_awake_reason { POS_P2P_AWAKE_WOKEN = 1, POS_P2P_AWAKE_REQUEST, POS_P2P_AWAKE_LOST };

/* One event of a relay control connection; valid only during the callback (copy what you keep). */
typedef struct pos_p2p_relay_event {
    int type;            /* enum pos_p2p_relay_event_type */
    uint32_t req_id;     /* the request it answers (INCOMING: the relay's id to answer) */
    uint32_t circuit_id; /* CIRCUIT, CIRCUIT_CLOSED: our side's circuit id */
    int error;           /* ERROR: POS_P2P_ERR_* */
    uint16_t code;       /* ERROR, GOAWAY, CIRCUIT_CLOSED: the relay's code */
    char text[257];      /* ERROR, GOAWAY: the relay's sentence */
    char peer_id[POS_P2P_PEER_ID_STRLEN]; /* INCOMING, CIRCUIT: the other peer */
    char observed[POS_P2P_ADDR_STRLEN];   /* INCOMING, CIRCUIT: the peer as the relay sees it */
    size_t n_local;                       /* INCOMING, CIRCUIT: the peer's own local addresses */
    char local[POS_P2P_RELAY_MAX_ADDRS][POS_P2P_ADDR_STRLEN];
    pos_p2p_relay_info redirect; /* REDIRECT */
} pos_p2p_relay_event;

typedef void (*pos_p2p_relay_event_cb)(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev);

/*
 * pos_p2p_relay_data_cb: a datagram (the peer's own packet, without
 * the frame header) arrived on |circuit_id|; |data| is valid during the call.
 */
typedef void (*pos_p2p_relay_data_cb)(void *arg, pos_p2p_relay *r, uint32_t circuit_id,
                                      const uint8_t *data, size_t len);

/* pos_p2p_relay_set_callbacks: where events and circuit data of |r| go (either may be NULL). No
 * errors. */
void pos_p2p_relay_set_callbacks(pos_p2p_relay *r, pos_p2p_relay_event_cb on_event,
                                 pos_p2p_relay_data_cb on_data, void *arg);

/*
 * pos_p2p_relay_request_peer asks the relay (accepted state) for |peer_id|. The answer comes as
 * a CIRCUIT, REDIRECT or ERROR event with the same |*req_id| (a parked connection reconnects
 * first). Returns 0 on success or one of these negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL
 * argument, peer id not canonical, the connection is not in the accepted state),
 * POS_P2P_ERR_NOMEM (memory, or 64 KiB of requests not yet acknowledged by the relay).
 */
int pos_p2p_relay_request_peer(pos_p2p_relay *r, const char *peer_id, uint32_t *req_id);

/*
 * pos_p2p_relay_answer accepts (|accept| non-zero) or declines an INCOMING request; an accepted
 * one is followed by a CIRCUIT event. Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (no such pending request, or the connection is no longer
 * accepted), POS_P2P_ERR_NOMEM (as pos_p2p_relay_request_peer).
 */
int pos_p2p_relay_answer(pos_p2p_relay *r, uint32_t req_id, int accept);

/*
 * pos_p2p_relay_send_data sends |len| bytes (a packet of the peers' own
 * encrypted QUIC connection) on |circuit_id| as a relay data frame, from the
 * endpoint socket of the control connection to the relay's current address.
 * Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL |r|, nothing to send),
 * POS_P2P_ERR_TOO_BIG, POS_P2P_ERR_CIRCUIT_CLOSED (unknown or ended
 * circuit, or the connection ended), POS_P2P_ERR_IO (the socket refused it:
 * the packet is lost, as on any UDP path).
 */
int pos_p2p_relay_send_data(pos_p2p_relay *r, uint32_t circuit_id, const uint8_t *data, size_t len);

/* ---- sessions: end-to-end QUIC connections between two peers ---- */
/*
 * A session is one QUIC connection (ALPN "pos-p2p/1", mutual TLS 1.3) between
 * this device and a peer, pinned on both sides: the dialer names the peer id
 * it expects and fails with POS_P2P_ERR_PEER_MISMATCH when the key differs;
 * the acceptor learns the dialer's peer id from its certificate and may
 * refuse it. A session runs directly between the two UDP sockets, or through
 * a relay circuit; the relayed path is shown to QUIC as a synthetic local
 * address (100.64.0.0/10, never bound) so that a later move to a direct path
 * is an ordinary client-side migration. Streams are bidirectional byte
 * streams with a bounded send buffer each; data arrives through the event
 * callback. Progress happens in pos_p2p_endpoint_process like everything
 * else on the endpoint.
 */
#define POS_P2P_ERR_NOT_ALLOWED -20  /* the peer does not accept sessions from this device */
#define POS_P2P_ERR_NO_STREAM -21    /* no such stream, or it is finished or reset */
#define POS_P2P_ERR_BAD_ADDRESS -22  /* not "ip", "ip:port", "[v6]" or "[v6]:port" */
#define POS_P2P_ERR_NO_RELAY -23     /* no relay of the list could be used */
#define POS_P2P_ERR_STREAM_LIMIT -24 /* the peer allows no more streams now: retry later */

#define POS_P2P_SESSION_ALPN "pos-p2p/1"
#define POS_P2P_DEFAULT_PORT 7373 /* a peer address without a port means this one */

typedef struct pos_p2p_session pos_p2p_session;

enum pos_p2p_session_state {
    POS_P2P_SESSION_CONNECTING = 0, /* relay request, handshake or pinning under way */
    POS_P2P_SESSION_OPEN = 1,       /* authenticated: streams may be used */
    POS_P2P_SESSION_CLOSED = 2,     /* ended: status.error and status.reason say why */
};

enum pos_p2p_path_kind {
    POS_P2P_PATH_NONE = 0,
    POS_P2P_PATH_DIRECT = 1,  /* UDP straight to the peer */
    POS_P2P_PATH_RELAYED = 2, /* through a relay circuit */
};

enum pos_p2p_session_event_type {
    POS_P2P_SESSION_EV_OPEN = 1,         /* dialer: the handshake is done, the peer id verified */
    POS_P2P_SESSION_EV_STREAM = 2,       /* the peer opened |stream| */
    POS_P2P_SESSION_EV_DATA = 3,         /* |data|, |len| arrived on |stream|; |fin|: its end */
    POS_P2P_SESSION_EV_WRITABLE = 4,     /* |stream|'s send buffer has room again */
    POS_P2P_SESSION_EV_STREAM_RESET = 5, /* the peer reset |stream| with |code| */
    POS_P2P_SESSION_EV_CLOSED = 6,       /* the session ended: |error|, |code|, |reason| */
    POS_P2P_SESSION_EV_PATH = 7,         /* the path changed: |path_change| says how */
};

/* Why a direct session went back to its relay (pos_p2p_path_change.reason). */
enum pos_p2p_fallback_reason {
    POS_P2P_FALLBACK_NONE = 0,    /* not a fallback (relayed -> direct) */
    POS_P2P_FALLBACK_STALLED = 1, /* the direct path stopped acknowledging (about 3 PTO) */
    POS_P2P_FALLBACK_PEER = 2,    /* the peer moved the session back (acceptor side) */
};

/* A path change (EV_PATH): relayed -> direct, or direct -> relayed. */
typedef struct pos_p2p_path_change {
    int from, to;                     /* enum pos_p2p_path_kind */
    char remote[POS_P2P_ADDR_STRLEN]; /* to direct: the peer's address; to relayed: the relay's */
    double rtt_ms;                    /* to direct: the round trip of the probe that proved it */
    int reason;                       /* to relayed: enum pos_p2p_fallback_reason */
} pos_p2p_path_change;

/* One session event; pointers are valid during the callback only. */
typedef struct pos_p2p_session_event {
    int type; /* enum pos_p2p_session_event_type */
    int64_t stream;
    const uint8_t *data;
    size_t len;
    int fin;
    int error;          /* CLOSED: 0 for a clean close by either side, else POS_P2P_ERR_* */
    uint64_t code;      /* STREAM_RESET, CLOSED: the peer's application code */
    const char *reason; /* CLOSED: a sentence */
    const pos_p2p_path_change *path_change; /* PATH: the change (NULL for other events) */
} pos_p2p_session_event;

/*
 * The callback may call any session function, pos_p2p_session_close
 * included (the session is then freed once the callback returns).
 */
typedef void (*pos_p2p_session_cb)(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev);

typedef struct pos_p2p_session_status {
    int state;                            /* enum pos_p2p_session_state */
    int error;                            /* 0 or POS_P2P_ERR_* once CLOSED */
    uint64_t close_code;                  /* the peer's application close code, if any */
    char reason[257];                     /* why it closed (the peer's text or ours) */
    int server;                           /* 1 when the peer dialed us */
    char peer_id[POS_P2P_PEER_ID_STRLEN]; /* dialer: expected; acceptor: learnt */
    int path;                             /* enum pos_p2p_path_kind */
    char remote[POS_P2P_ADDR_STRLEN];     /* direct: the peer's address; relayed: the relay's */
    char relay_id[POS_P2P_UUID_STRLEN];   /* relayed: the relay carrying the circuit */
    uint32_t circuit_id;                  /* relayed: our side's circuit id */
    double rtt_ms;                        /* smoothed round-trip time */
    uint64_t bytes_sent, bytes_received;  /* UDP payload bytes of this session */
} pos_p2p_session_status;

/*
 * pos_p2p_session_connect_addr dials |peer_id| at |addr| ("ip", "ip:port",
 * "[v6]", "[v6]:port"; no port means POS_P2P_DEFAULT_PORT) directly from
 * the endpoint's socket. The session is CONNECTING until the handshake
 * succeeds (EV_OPEN) or fails (EV_CLOSED, POS_P2P_ERR_PEER_MISMATCH with a
 * sentence when the key at |addr| is another peer's, POS_P2P_ERR_NOT_ALLOWED
 * when the peer refuses us, POS_P2P_ERR_TIMEOUT after |timeout_ms|,
 * POS_P2P_ERR_HANDSHAKE, POS_P2P_ERR_PROTOCOL or POS_P2P_ERR_CLOSED).
 * Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, |timeout_ms| not positive,
 * peer id not canonical), POS_P2P_ERR_BAD_ADDRESS, POS_P2P_ERR_NO_ROUTE (no
 * socket of that family), POS_P2P_ERR_NOMEM (memory, or 1024 sessions on the endpoint),
 * POS_P2P_ERR_HANDSHAKE (TLS set-up failed). Free with
 * pos_p2p_session_close.
 */
int pos_p2p_session_connect_addr(pos_p2p_endpoint *ep, const char *addr, const char *peer_id,
                                 int timeout_ms, pos_p2p_session **out);

/*
 * pos_p2p_session_connect_relay dials |peer_id| through |r| (an accepted
 * relay control connection of |ep|): it asks the relay for the peer, follows
 * a REDIRECT by connecting to the named relay with |token| (that connection
 * belongs to the session), and runs the QUIC handshake over the circuit.
 * Failures come as EV_CLOSED: POS_P2P_ERR_PEER_NOT_CONNECTED,
 * POS_P2P_ERR_DECLINED (refused or not allowed), POS_P2P_ERR_PEER_MISMATCH,
 * POS_P2P_ERR_TIMEOUT, POS_P2P_ERR_CIRCUIT_CLOSED, POS_P2P_ERR_NO_RELAY or
 * POS_P2P_ERR_NO_ROUTE (a redirect's relay cannot be used), any code of the
 * relay's refusal or of the relay's ERROR answer, POS_P2P_ERR_HANDSHAKE,
 * POS_P2P_ERR_PROTOCOL, POS_P2P_ERR_CLOSED. The relay connection is handed
 * to the session layer (as with pos_p2p_session_use_relay) and must outlive
 * the session. Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, |timeout_ms| not positive,
 * empty token or longer than 256 bytes, peer id not canonical, more than 16
 * relays handed over), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_session_connect_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r, const char *token,
                                  const char *peer_id, int timeout_ms, pos_p2p_session **out);

/* Decides whether |peer_id| may open a session with us: non-zero accepts. */
typedef int (*pos_p2p_allow_cb)(void *arg, const char *peer_id);
/* A session a peer opened with us is authenticated and allowed; set its callback now. */
typedef void (*pos_p2p_accept_cb)(void *arg, pos_p2p_session *s);

/*
 * pos_p2p_endpoint_listen makes |ep| accept sessions: direct ones on its
 * sockets (QUIC server role), relayed ones through every relay handed over
 * with pos_p2p_session_use_relay. |allow| (NULL: everyone) is asked with the
 * peer id proven by the handshake; a refused peer's session is closed with
 * the application code POS_P2P_CLOSE_NOT_ALLOWED and never reaches
 * |on_session|; a relayed request from a refused peer is declined before any
 * circuit is made. Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL |ep| or |on_session|),
 * POS_P2P_ERR_NOMEM.
 */
int pos_p2p_endpoint_listen(pos_p2p_endpoint *ep, pos_p2p_allow_cb allow,
                            pos_p2p_accept_cb on_session, void *arg);

#define POS_P2P_CLOSE_NOT_ALLOWED 0x201 /* application close code: peer not in the allow list */

/*
 * pos_p2p_session_use_relay hands the relay control connection |r| of |ep|
 * to the session layer: its events and circuit data are handled there from
 * now on (pos_p2p_relay_set_callbacks is called), requests from peers are
 * answered by the listen settings (declined when not listening). Handing
 * over the same relay twice is fine. Returns 0 on success or one of these
 * negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, or 16
 * relays handed over already), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_session_use_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r);

/*
 * pos_p2p_session_drop_relay takes |r| back from the session layer before
 * the application closes it (a new home relay, a relay going away): every
 * session running over one of its circuits or dialing through it ends with
 * POS_P2P_ERR_CIRCUIT_CLOSED, and nothing refers to |r| afterwards. No
 * errors.
 */
void pos_p2p_session_drop_relay(pos_p2p_endpoint *ep, pos_p2p_relay *r);

/* pos_p2p_session_set_callback: where the events of |s| go (NULL: dropped, data discarded). No
 * errors. */
void pos_p2p_session_set_callback(pos_p2p_session *s, pos_p2p_session_cb cb, void *arg);

/* pos_p2p_session_get_status copies the session's state, peer and path. No errors. */
void pos_p2p_session_get_status(const pos_p2p_session *s, pos_p2p_session_status *out);

/*
 * pos_p2p_session_open_stream opens a bidirectional stream. Returns 0 on
 * success, with its id in |*stream|, or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL argument, session not open),
 * POS_P2P_ERR_STREAM_LIMIT (the peer allows no more now), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_session_open_stream(pos_p2p_session *s, int64_t *stream);

/*
 * pos_p2p_session_write queues up to |len| bytes on |stream| (copied into its
 * send buffer, at most POS_P2P_STREAM_BUFFER bytes not yet acknowledged) and
 * ends the stream after them when |fin| is set and every byte was taken.
 * |*taken| (may be NULL) gets the number of bytes queued; when it is less
 * than |len|, EV_WRITABLE follows once there is room. Returns 0 on success
 * or one of these negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL |s|,
 * NULL |data| with a length, session not open), POS_P2P_ERR_NO_STREAM (no
 * such stream, or FIN already queued), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_session_write(pos_p2p_session *s, int64_t stream, const uint8_t *data, size_t len,
                          int fin, size_t *taken);

#define POS_P2P_STREAM_BUFFER (4 * 1024 * 1024)

/*
 * pos_p2p_session_write_room: the bytes pos_p2p_session_write would take now
 * on |stream| (0: none, no such stream, or the session ended). No errors.
 */
size_t pos_p2p_session_write_room(const pos_p2p_session *s, int64_t stream);

/*
 * pos_p2p_session_reset_stream abandons |stream| in both directions with
 * |code|. Returns 0 on success or one of these negative codes:
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL |s|, session ended),
 * POS_P2P_ERR_NO_STREAM.
 */
int pos_p2p_session_reset_stream(pos_p2p_session *s, int64_t stream, uint64_t code);

/*
 * pos_p2p_session_wait_open is the blocking helper: runs the endpoint until
 * |s| is OPEN or CLOSED, at most |timeout_ms|. Returns 0 when it is open, or
 * one of these negative codes: the session's own error when it closed (any
 * code its EV_CLOSED may carry; POS_P2P_ERR_CLOSED when it had none),
 * POS_P2P_ERR_TIMEOUT (still connecting), POS_P2P_ERR_IO (epoll failed),
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL |s|).
 */
int pos_p2p_session_wait_open(pos_p2p_session *s, int timeout_ms);

/*
 * pos_p2p_session_close ends |s| (CONNECTION_CLOSE with application |code|
 * and |reason|, which may be NULL, unless it already ended) and frees it.
 * Inside a callback of |s| the free waits until the callback returns. NULL:
 * nothing. No errors.
 */
void pos_p2p_session_close(pos_p2p_session *s, uint64_t code, const char *reason);

/* ---- hole punching: a relayed session goes direct (pos-relay/2) ---- */
/*
 * A relayed session starts at once over its circuit; when the relays of
 * both sides speak pos-relay/2 they send both sides each other's candidate
 * addresses and a start time, both probe at the same time, and the dialer
 * moves the QUIC connection to the first direct path that answers (EV_PATH
 * relayed -> direct once QUIC has validated it; the acceptor follows and
 * reports it too). While direct the circuit stays open; when the direct
 * path stalls the dialer moves back to the relay (EV_PATH direct ->
 * relayed, nothing written is lost) and asks for a new attempt after the
 * retry interval, as it does after an attempt that found no path.
 * docs/protocol.md "Hole punching" has the protocol and timers.
 */

/* Punching settings of an endpoint (pos_p2p_endpoint_set_punch). */
typedef struct pos_p2p_punch_options {
    int enabled;          /* 1 (default): punch relayed sessions; 0: stay relayed */
    uint32_t window_ms;   /* probing ends this long after it began: 100..60000, default 3000 */
    uint32_t interval_ms; /* between two probes to one candidate: 10..1000 and at most
                             window_ms, default 50 */
    uint32_t settle_ms;   /* after the first direct path, wait for a better one: 0..1000,
                             default 30 */
    uint32_t retry_ms;    /* while relayed, ask for a new attempt this often: 1000..3600000,
                             default 60000 */
    uint32_t fallback_retry_ms;   /* after a fallback, the first new attempt this soon, then
                                     twice as long each time up to retry_ms: 1000..3600000
                                     (capped at retry_ms), default 3000 */
    uint32_t stall_ptos;          /* direct: this many successive PTOs without an ack and the
                                     dialer falls back to the relay: 1..10, default 3 */
    uint32_t direct_keepalive_ms; /* direct: QUIC keep-alive (PING) after this much quiet, so
                                     a stall shows on an idle session: 100..10000, default 1000 */
    uint32_t nudge_ms;            /* relayed: nothing through the relay this long and a
                                     KEEPALIVE frame goes to it (remakes a lost NAT mapping):
                                     100..60000, default 1000 */
    uint32_t max_nudges;          /* ... again after 2, 4, 8... times that much silence, this many
                                     in all: 0 (none)..8, default 4 */
} pos_p2p_punch_options;

#define POS_P2P_PUNCH_WINDOW_MS 3000
#define POS_P2P_PUNCH_INTERVAL_MS 50
#define POS_P2P_PUNCH_SETTLE_MS 30
#define POS_P2P_PUNCH_RETRY_MS 60000
#define POS_P2P_PUNCH_FALLBACK_RETRY_MS 3000
#define POS_P2P_PUNCH_STALL_PTOS 3
#define POS_P2P_PUNCH_DIRECT_KEEPALIVE_MS 1000
#define POS_P2P_PUNCH_NUDGE_MS 1000
#define POS_P2P_PUNCH_MAX_NUDGES 4

/* pos_p2p_punch_options_default fills |o| with the defaults above (enabled). No errors. */
void pos_p2p_punch_options_default(pos_p2p_punch_options *o);

/*
 * pos_p2p_punch_options_check: 0 when every field of |o| is in its range,
 * else POS_P2P_ERR_INVALID_ARGUMENT with a sentence in |err| (|errlen|
 * bytes; may be NULL) naming the field and the range expected (also for a
 * NULL |o|, or |enabled| other than 0 or 1).
 */
int pos_p2p_punch_options_check(const pos_p2p_punch_options *o, char *err, size_t errlen);

/* This device's NAT mapping, judged from what several relays observed. */
enum pos_p2p_nat_mapping {
    POS_P2P_NAT_UNKNOWN = 0,              /* not known: fewer than two relays compared */
    POS_P2P_NAT_ENDPOINT_INDEPENDENT = 1, /* every relay saw one address and port */
    POS_P2P_NAT_VARIES = 2,               /* another address or port per destination */
};

/*
 * pos_p2p_endpoint_set_nat_mapping: |mapping| (enum pos_p2p_nat_mapping) is
 * what the application found comparing the addresses two or more relays
 * observed for |ep| (pos_p2p_relay_status.observed; `pos-p2p relays` prints
 * it). Relay connections made afterwards tell it their relay in HELLO
 * (pos-relay/3), which hands it to the peers of their circuits. When both
 * sides' mappings vary by destination no punching can work: after the
 * first attempt fails the session asks for no more (pos_p2p_path_info
 * .punch_stopped). Returns 0 or POS_P2P_ERR_INVALID_ARGUMENT (NULL |ep|,
 * unknown |mapping|).
 */
int pos_p2p_endpoint_set_nat_mapping(pos_p2p_endpoint *ep, int mapping);
/* pos_p2p_endpoint_nat_mapping: the mapping set, POS_P2P_NAT_UNKNOWN by default or for NULL. */
int pos_p2p_endpoint_nat_mapping(const pos_p2p_endpoint *ep);

/*
 * pos_p2p_endpoint_set_punch: the punching settings of the sessions of |ep|
 * (copied; attempts already running keep theirs). Without this call an
 * endpoint punches with the defaults. Returns 0 on success or one of these
 * negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL |ep|, or |o| fails
 * pos_p2p_punch_options_check), POS_P2P_ERR_NOMEM.
 */
int pos_p2p_endpoint_set_punch(pos_p2p_endpoint *ep, const pos_p2p_punch_options *o);

/* What a session's path is and has been (pos_p2p_session_get_path). */
typedef struct pos_p2p_path_info {
    int path;                         /* enum pos_p2p_path_kind, now */
    char remote[POS_P2P_ADDR_STRLEN]; /* direct: the peer's address; relayed: the relay's */
    double rtt_ms;                    /* smoothed round-trip time of the current path */
    int upgraded;                     /* 1 when the session has been direct at some time */
    int64_t upgraded_after_ms;        /* relayed sessions: from the start of the session (its
                                         first packet) to the first move direct; -1 never */
    uint64_t bytes_relayed;           /* UDP payload bytes sent and received over the relay */
    uint64_t bytes_direct;            /* ... and straight to the peer */
    uint32_t attempts;                /* punch attempts of this session */
    uint32_t fallbacks;               /* moves back to the relay */
    int relay_lost;    /* 1: the relayed path's circuit closed while direct (the session lived on
                          direct; no fallback to the relay, no new punch attempt) */
    int punch_stopped; /* POS_P2P_PUNCH_STOPPED_NAT: both sides' NAT mappings vary by
                          destination, so after a failed attempt no more are asked for; 0 */
} pos_p2p_path_info;

#define POS_P2P_PUNCH_STOPPED_NAT 1

/*
 * pos_p2p_session_add_candidates gives the relayed session |s| |n| more
 * addresses ("ip:port", "[ipv6]:port") where the peer may be reached
 * directly, e.g. found by mDNS. Hole punching probes them alongside the
 * relay's candidates, in the attempt running now (if it is still probing)
 * and in every later one; the relay's rules (cookie, attempt, window) stay.
 * Addresses already given are skipped. Returns 0, or
 * POS_P2P_ERR_INVALID_ARGUMENT: |s| NULL, closed, or not relayed over a
 * circuit yet (dialled directly, or its circuit not open: call it from
 * POS_P2P_SESSION_EV_OPEN), |addrs| NULL with |n| > 0, an address that is
 * not "ip:port" with a port or is unspecified or multicast, or more than
 * POS_P2P_MAX_EXTRA_CANDIDATES kept in all (none of |addrs| is added then).
 */
#define POS_P2P_MAX_EXTRA_CANDIDATES 8
int pos_p2p_session_add_candidates(pos_p2p_session *s, const char *const *addrs, size_t n);

/*
 * pos_p2p_session_get_path copies the current path of |s| and what it
 * carried. Returns 0 on success or POS_P2P_ERR_INVALID_ARGUMENT (NULL
 * argument).
 */
int pos_p2p_session_get_path(const pos_p2p_session *s, pos_p2p_path_info *out);

/* Punching counters of an endpoint, over its life (pos_p2p_endpoint_punch_stats). */
typedef struct pos_p2p_punch_stats {
    uint64_t attempts;          /* PUNCH_START received for one of our sessions */
    uint64_t successes;         /* attempts that found a direct path (and, dialing, moved) */
    uint64_t failures;          /* attempts that ended without one (or QUIC refused it) */
    uint64_t fallbacks;         /* direct sessions moved back to the relay */
    uint64_t requests;          /* new attempts asked of a relay (PUNCH_REQUEST) */
    uint64_t probes_sent;       /* PUNCH and PUNCH_ACK frames sent */
    uint64_t probes_dropped;    /* probe frames refused (bad cookie, no attempt, late) */
    uint32_t last_ms_to_direct; /* latest success: from PUNCH_START to the direct path */
    uint64_t nat_stops;         /* sessions that stopped asking: both NATs vary by destination */
} pos_p2p_punch_stats;

/*
 * pos_p2p_endpoint_punch_stats copies the counters of |ep| into |out| (all
 * zero when no session ever ran). Returns 0 on success or
 * POS_P2P_ERR_INVALID_ARGUMENT (NULL argument).
 */
int pos_p2p_endpoint_punch_stats(const pos_p2p_endpoint *ep, pos_p2p_punch_stats *out);

/*
 * pos_p2p_relay_protocol_version: the control protocol the relay and this
 * client agreed on: 1 (pos-relay/1: no punching), 2 (pos-relay/2), 3
 * (pos-relay/3: punching, and the NAT mappings passed on), 4 (pos-relay/4:
 * parking), or 0 before the handshake. No errors.
 */
int pos_p2p_relay_protocol_version(const pos_p2p_relay *r);

/*
 * pos_p2p_relay_pick_home chooses the home relay among |n| relays whose
 * round-trip times are |rtt_ms| (negative: unusable), given the current home
 * |current| (-1: none). The current one is kept unless another is clearly
 * better: at least 30% and 10 ms faster. Returns the index, or -1 when none
 * is usable (not an error code).
 */
int pos_p2p_relay_pick_home(const double *rtt_ms, size_t n, int current);

#ifdef __cplusplus
}
#endif

#endif
