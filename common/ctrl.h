/*
 * The control protocol between a client and its relay (ALPN pos-relay/1, or
 * pos-relay/2 with hole punching; see docs/protocol.md): HELLO on the client's first bidirectional
 * stream, which then carries WELCOME and every later message of the relay; the client's later
 * requests on one more bidirectional stream of its own. Sans-I/O: this module turns bytes into
 * messages and back and never touches a socket.
 *
 * Framing: each message is  type (1 byte) | length (2 bytes, big endian) |
 * body (length bytes, at most POS_CTRL_MAX_BODY). Body fields, in the order
 * listed per type below: u8/u16/u32/u64 big endian; "str" is a u16 length and
 * that many bytes (no NUL); "addrs" is a u8 count (at most POS_CTRL_MAX_ADDRS)
 * of str addresses, each a valid "ip:port". A body must be consumed exactly:
 * trailing bytes are an error, so every message has one encoding. Unknown
 * types are an error (a new message means a new ALPN): the PUNCH_* types
 * exist only from version 2 (ALPN pos-relay/2), and the codec of version 1
 * refuses them both ways, so a peer that negotiated pos-relay/1 never sees
 * one. Version 3 (pos-relay/3) is version 2 with the NAT mapping: two more
 * HELLO flags (the sender's) and a last u8 in PUNCH_START (the peer's);
 * a peer of version 2 never sees either. Version 4 (pos-relay/4) adds PARK
 * and PARKED (parking an idle home connection; park.h has its datagrams).
 *
 * Refusals are not messages: the relay closes the QUIC connection with an
 * application error code (enum relay_refusal) and a reason phrase.
 */
#ifndef POS_CTRL_H
#define POS_CTRL_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "identity.h"
#include "punch.h"

/*
 * Versions and their ALPN. A v4 client offers "pos-relay/4", "pos-relay/3",
 * "pos-relay/2" then "pos-relay/1"; a relay selects the highest it knows. pos_ctrl_version_of_alpn
 * tells which version a negotiated ALPN means.
 */
#define POS_CTRL_V1 1
#define POS_CTRL_V2 2
#define POS_CTRL_V3 3
#define POS_CTRL_V4 4
#define POS_CTRL_ALPN_V1 "pos-relay/1"
#define POS_CTRL_ALPN_V2 "pos-relay/2"
#define POS_CTRL_ALPN_V3 "pos-relay/3"
#define POS_CTRL_ALPN_V4 "pos-relay/4"
#define POS_CTRL_ALPN POS_CTRL_ALPN_V1 /* what v1-only code offers */
/* What a v4 side offers (client) or accepts (relay), preferred first: pos_tls_session_new_alpns. */
#define POS_CTRL_N_ALPNS 4
extern const char *const pos_ctrl_alpns[POS_CTRL_N_ALPNS];
#define POS_CTRL_HEADER_LEN 3
#define POS_CTRL_MAX_BODY 2048
#define POS_CTRL_MAX_MSG (POS_CTRL_HEADER_LEN + POS_CTRL_MAX_BODY)
#define POS_CTRL_MAX_ADDRS 8
#define POS_CTRL_MAX_TOKEN 256
#define POS_CTRL_MAX_TEXT 256
#define POS_CTRL_UUID_LEN 36
#define POS_CTRL_MAX_KEEPALIVE_S 3600 /* PARKED's keep-alive interval */
#define POS_CTRL_MAX_LIFETIME_S 86400 /* PARKED's record lifetime */

/* Errors. */
#define POS_CTRL_ERR_MALFORMED -1 /* bytes are not a valid message */
#define POS_CTRL_ERR_TOO_BIG -2   /* message or buffer larger than allowed */
#define POS_CTRL_ERR_INVALID -3   /* encode: a field is out of range */
#define POS_CTRL_ERR_NOMEM -4

enum pos_ctrl_type {
    POS_CTRL_HELLO = 1, /* client: str token, addrs local, [u8 hello_flags] (absent: 0) */
    /* (version 3: PUNCH_START ends with u8 peer_nat, enum pos_ctrl_nat) */
    POS_CTRL_WELCOME = 2,  /* relay: str observed, u64 bytes_per_sec, u64 burst, u32 max_conns,
                              u64 expires_at (unix s, 0 never), u32 idle_timeout_s,
                              str relay_id */
    POS_CTRL_CONNECT = 3,  /* client: u32 req_id, str peer_id, [u8 nat flags] (v3; absent: 0) */
    POS_CTRL_INCOMING = 4, /* relay: u32 req_id, str peer_id, str observed, addrs local */
    POS_CTRL_ACCEPT = 5,   /* client: u32 req_id, [u8 nat flags] (v3; absent: 0) */
    POS_CTRL_DECLINE = 6,  /* client: u32 req_id, u16 code */
    POS_CTRL_CIRCUIT = 7,  /* relay: u32 req_id, u32 circuit_id, str peer_id, str observed,
                              addrs local */
    POS_CTRL_REDIRECT = 8, /* relay: u32 req_id, str relay_id, str relay_peer_id, addrs */
    POS_CTRL_ERROR = 9,    /* relay: u32 req_id, u16 code, str text */
    POS_CTRL_GOAWAY = 10,  /* relay: u16 code, str text (relay shutting down) */
    POS_CTRL_CIRCUIT_CLOSED = 11, /* relay: u32 circuit_id, u16 code (the other side left) */
    /* version 2 only (pos-relay/2): hole punching, docs/protocol.md */
    POS_CTRL_PUNCH_START = 12,   /* relay: u32 circuit_id, u32 peer_circuit_id, punch_key (16 B),
                                    u32 start_in_ms, u8 role, u16 attempt, addrs (1..8) the
                                    peer's candidates */
    POS_CTRL_PUNCH_REQUEST = 13, /* client: u32 circuit_id, addrs (0..8) its local addresses */
    POS_CTRL_PUNCH_REPORT = 14,  /* client: u32 circuit_id, u16 attempt, u8 outcome,
                                    u32 ms_to_direct */
    /* version 4 only (pos-relay/4): parking, docs/protocol.md "Parking" */
    POS_CTRL_PARK = 15,   /* client: u32 req_id */
    POS_CTRL_PARKED = 16, /* relay: u32 req_id, u64 record_id (not 0), u32 keepalive_s (1..3600),
                             u32 lifetime_s (1..86400) */
};
#define POS_CTRL_LAST_V1 POS_CTRL_CIRCUIT_CLOSED
#define POS_CTRL_LAST_V2 POS_CTRL_PUNCH_REPORT
#define POS_CTRL_LAST_V3 POS_CTRL_PUNCH_REPORT /* no new type: new fields */
#define POS_CTRL_LAST_V4 POS_CTRL_PARKED

/* A client's NAT mapping, as it judged it from what several relays observed (version 3). */
enum pos_ctrl_nat {
    POS_CTRL_NAT_UNKNOWN = 0, /* not known (fewer than two relays compared) */
    POS_CTRL_NAT_EIM = 1,     /* endpoint-independent: every relay saw one address and port */
    POS_CTRL_NAT_VARIES = 2,  /* varies by destination (a symmetric NAT) */
};

/* Outcomes of PUNCH_REPORT (pos_ctrl_msg.outcome). */
enum pos_ctrl_punch_outcome {
    POS_CTRL_PUNCH_DIRECT = 1,    /* a direct path was validated (and, for the dialer, taken) */
    POS_CTRL_PUNCH_FAILED = 2,    /* the probe window ended without a validated path */
    POS_CTRL_PUNCH_FELL_BACK = 3, /* the direct path stalled: the session is relayed again */
};

/*
 * Flags of HELLO (pos_ctrl_msg.hello_flags). The u8 is present only when
 * nonzero, so a HELLO of a client that knows no flags (a home connection)
 * is still valid and every HELLO keeps one encoding: a present 0, or an
 * unknown bit, is malformed.
 */
#define POS_CTRL_HELLO_NOT_HOME 0x01 /* measuring or dialing only: no presence, no INCOMING */
#define POS_CTRL_HELLO_FLAGS_KNOWN POS_CTRL_HELLO_NOT_HOME
/* Version 3 only: the sender's NAT mapping (at most one of the two; neither: unknown). */
#define POS_CTRL_HELLO_NAT_EIM 0x02
#define POS_CTRL_HELLO_NAT_VARIES 0x04
#define POS_CTRL_HELLO_FLAGS_KNOWN_V3                                                              \
    (POS_CTRL_HELLO_NOT_HOME | POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES)

/* Codes of ERROR (a request failed), DECLINE and CIRCUIT_CLOSED (docs/protocol.md). */
enum pos_ctrl_code {
    POS_CTRL_CODE_PEER_NOT_CONNECTED = 1, /* ERROR: no relay holds the peer */
    POS_CTRL_CODE_DECLINED = 2,           /* ERROR, DECLINE: the peer said no */
    POS_CTRL_CODE_TIMEOUT = 3,            /* ERROR: the peer did not answer INCOMING in time */
    POS_CTRL_CODE_BUSY = 4,               /* ERROR: too many requests, or no circuit left */
    POS_CTRL_CODE_BAD_PEER = 5,           /* ERROR: asking for oneself */
    POS_CTRL_CODE_PEER_LEFT = 6,          /* ERROR, CIRCUIT_CLOSED: the other side's
                                             connection ended */
    POS_CTRL_CODE_UNAVAILABLE = 7,        /* ERROR: Redis unreachable, try again later */
    POS_CTRL_CODE_CIRCUIT_LIMIT = 8,      /* ERROR: a circuit cap of this relay is reached
                                             (per connection or per token) */
};

typedef struct pos_ctrl_addrs {
    uint8_t n;
    char a[POS_CTRL_MAX_ADDRS][POS_ADDR_STRLEN];
} pos_ctrl_addrs;

/*
 * One decoded message. Which fields are meaningful depends on |type| (see the
 * enum). Strings are NUL-terminated copies; ids are validated (peer ids are
 * canonical, relay ids are UUIDs, addresses parse).
 */
typedef struct pos_ctrl_msg {
    uint8_t type;
    uint16_t code;
    uint32_t req_id;
    uint32_t circuit_id;
    uint32_t max_conns;
    uint32_t idle_timeout_s;
    uint8_t hello_flags;      /* HELLO: POS_CTRL_HELLO_*; CONNECT, ACCEPT (version 3): one of
                                 the HELLO_NAT_* flags or 0 (the u8 left out) */
    uint32_t peer_circuit_id; /* PUNCH_START: the id the peer knows the circuit by (nonzero) */
    uint32_t start_in_ms;     /* PUNCH_START: 0..POS_PUNCH_MAX_START_IN_MS */
    uint32_t ms_to_direct;    /* PUNCH_REPORT */
    uint16_t attempt;         /* PUNCH_START, PUNCH_REPORT: 1.. */
    uint8_t role;             /* PUNCH_START: the receiver's enum pos_punch_role */
    uint8_t outcome;          /* PUNCH_REPORT: enum pos_ctrl_punch_outcome */
    uint8_t peer_nat;         /* PUNCH_START, version 3: the peer's enum pos_ctrl_nat (encoding
                                 at version 2 leaves it out) */
    uint8_t punch_key[POS_PUNCH_KEY_LEN]; /* PUNCH_START: secret, wipe after use */
    uint64_t record_id;                   /* PARKED: the parked record (not 0) */
    uint32_t keepalive_s;                 /* PARKED: 1..POS_CTRL_MAX_KEEPALIVE_S */
    uint32_t lifetime_s;                  /* PARKED: 1..POS_CTRL_MAX_LIFETIME_S */
    uint64_t bytes_per_sec;
    uint64_t burst;
    uint64_t expires_at;
    size_t token_len;
    char token[POS_CTRL_MAX_TOKEN + 1]; /* HELLO: secret, wipe after use */
    char peer_id[POS_PEER_ID_STRLEN];
    char relay_id[POS_CTRL_UUID_LEN + 1];
    char observed[POS_ADDR_STRLEN];
    char text[POS_CTRL_MAX_TEXT + 1];
    pos_ctrl_addrs addrs;
} pos_ctrl_msg;

/*
 * pos_ctrl_version_of_alpn: the protocol version (POS_CTRL_V1 .. POS_CTRL_V4) that the negotiated
 * ALPN |alpn| (|len| bytes, as gnutls_alpn_get_selected_protocol gives it, no NUL needed) means, or
 * 0 when it is none of ours (no ALPN, or another protocol: close).
 */
int pos_ctrl_version_of_alpn(const uint8_t *alpn, size_t len);

/*
 * pos_ctrl_decode_version reads one message of protocol version |version|
 * (POS_CTRL_V1 .. POS_CTRL_V4) from the start of |buf| (|len| bytes).
 * Returns 1 and sets |*consumed| when a whole message was decoded into
 * |out|; 0 when more bytes are needed (|*consumed| = 0); or
 * POS_CTRL_ERR_MALFORMED (also: a type the version does not have, or an
 * unknown version) / POS_CTRL_ERR_TOO_BIG (the stream must be closed).
 * pos_ctrl_decode is pos_ctrl_decode_version at POS_CTRL_V1.
 */
int pos_ctrl_decode_version(const uint8_t *buf, size_t len, int version, pos_ctrl_msg *out,
                            size_t *consumed);
int pos_ctrl_decode(const uint8_t *buf, size_t len, pos_ctrl_msg *out, size_t *consumed);

/*
 * pos_ctrl_encode_version writes |m| as a message of protocol version
 * |version| into |buf| (|cap| bytes). Returns the number of bytes written,
 * POS_CTRL_ERR_TOO_BIG when |cap| is too small, or POS_CTRL_ERR_INVALID
 * when a field would not decode (bad address, string too long, unknown
 * type, a type the version does not have, unknown version).
 * pos_ctrl_encode is pos_ctrl_encode_version at POS_CTRL_V1.
 */
int pos_ctrl_encode_version(const pos_ctrl_msg *m, int version, uint8_t *buf, size_t cap);
int pos_ctrl_encode(const pos_ctrl_msg *m, uint8_t *buf, size_t cap);

/* pos_ctrl_msg_wipe zeroes |m| (tokens and punch keys included). */
void pos_ctrl_msg_wipe(pos_ctrl_msg *m);

/*
 * A bounded reassembly buffer for one stream: pos_ctrl_reader_feed appends
 * stream bytes (POS_CTRL_ERR_TOO_BIG if more than POS_CTRL_MAX_MSG bytes
 * would be pending, POS_CTRL_ERR_NOMEM); pos_ctrl_reader_next
 * then behaves like pos_ctrl_decode on what is buffered and drops the
 * consumed bytes (pos_ctrl_reader_next_version like
 * pos_ctrl_decode_version). The buffer is allocated only while bytes are
 * pending and freed when it empties, so an idle connection costs two words.
 * Embed it zeroed; pos_ctrl_reader_wipe wipes and frees it (it may hold a
 * token or a punch key).
 */
typedef struct pos_ctrl_reader {
    uint8_t *buf; /* NULL when empty */
    size_t len;
} pos_ctrl_reader;

int pos_ctrl_reader_feed(pos_ctrl_reader *r, const uint8_t *data, size_t len);
int pos_ctrl_reader_next(pos_ctrl_reader *r, pos_ctrl_msg *out);
int pos_ctrl_reader_next_version(pos_ctrl_reader *r, int version, pos_ctrl_msg *out);
void pos_ctrl_reader_wipe(pos_ctrl_reader *r);

/* pos_ctrl_type_name: "HELLO", ... or "unknown". */
const char *pos_ctrl_type_name(int type);

#endif
