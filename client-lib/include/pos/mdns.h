/*
 * pos/mdns.h: local discovery of libpos-p2p (mDNS / DNS-SD), the second
 * installed header. It includes pos/p2p.h, whose error codes, clock
 * (pos_p2p_now_ms), pos_p2p_done_cb and pos_p2p_strerror it shares.
 * A program that only connects (relays, sessions) needs pos/p2p.h alone.
 */
#ifndef POS_MDNS_H
#define POS_MDNS_H

#include <pos/p2p.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- local discovery, mDNS / DNS-SD ---- */
/*
 * Local discovery: advertise this device as _sd._udp.local. (instance = peer
 * id, TXT name, operating_system and os (one value), device_model, version,
 * <library uuid>=<peer id>) and browse for others, over IPv4 and IPv6
 * multicast on every multicast-capable interface. See docs/mdns.md.
 */
#define POS_P2P_ERR_MDNS_TXT -50      /* TXT string > 255 bytes, or TXT > 1300 bytes */
#define POS_P2P_ERR_MDNS_SOCKET -51   /* cannot open or bind the mDNS sockets */
#define POS_P2P_ERR_MDNS_PACKET -52   /* malformed DNS packet */
#define POS_P2P_ERR_MDNS_NAME -53     /* instance name empty or longer than 63 bytes */
#define POS_P2P_ERR_MDNS_FULL -54     /* a fixed-size table is full */
#define POS_P2P_ERR_MDNS_CARD -55     /* malformed contact card */
#define POS_P2P_ERR_MDNS_CONTACTS -56 /* contacts or presence key file unusable */
#define POS_P2P_ERR_MDNS_NO_KEY -57   /* contacts-only mode without a presence key */

enum pos_mdns_mode {
    POS_MDNS_ENABLED = 0,       /* advertise everything */
    POS_MDNS_CONTACTS_ONLY = 1, /* random instance + tag only contacts recognise */
    POS_MDNS_DISABLED = 2,      /* send nothing, answer nothing */
};

enum pos_mdns_event {
    POS_MDNS_FOUND = 1,
    POS_MDNS_UPDATED = 2,
    POS_MDNS_LOST = 3,
};

/* What a browse event tells; every pointer is valid during the callback only. */
typedef struct pos_mdns_peer {
    const char *instance; /* instance label as advertised (any bytes, dots included) */
    const char *peer_id;  /* NULL when unknown (a stranger in contacts-only mode) */
    int contact;          /* 1 when recognised through a contact's presence key */
    /* TXT values by RFC 6763 §6.4 (first occurrence of the key, any case); NULL
       when absent or without '='; a value holding NUL is cut there (see txt). */
    const char *name, *os, *model, *version;
    const char *const *addrs; /* "ip" or "fe80::1%eth0" */
    size_t n_addrs;
    uint16_t port;
    const char *const *txt; /* the TXT strings as received, in order, NUL terminated */
    size_t n_txt;
    const size_t *txt_len; /* byte length of each txt string (values may hold NUL) */
    size_t instance_len;   /* byte length of instance (a label may hold NUL) */
} pos_mdns_peer;

typedef void (*pos_mdns_callback)(void *user, enum pos_mdns_event ev, const pos_mdns_peer *peer);

typedef struct pos_mdns_config {
    enum pos_mdns_mode mode;
    int advertise;                           /* 1: publish this device */
    int browse;                              /* 1: look for others */
    const char *peer_id;                     /* needed to advertise in enabled mode */
    const char *name, *os, *model, *version; /* optional TXT values */
    const char *const *libraries;            /* library uuids */
    size_t n_libraries;
    uint16_t port;               /* the port peers connect to */
    const uint8_t *presence_key; /* 32 bytes; needed to advertise in contacts-only mode */
} pos_mdns_config;

typedef struct pos_mdns pos_mdns;

/*
 * pos_mdns_new opens the sockets (UDP 5353, IPv4 and IPv6, shared with any
 * system responder) and starts. |cb| receives browse events. Returns 0 on
 * success or one of these negative codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL
 * |cfg|, advertising in enabled mode without a peer id),
 * POS_P2P_ERR_NOMEM, POS_P2P_ERR_MDNS_TXT (the TXT values do not fit, or
 * more than 64 libraries), POS_P2P_ERR_MDNS_NAME (peer id over 63 bytes),
 * POS_P2P_ERR_MDNS_NO_KEY (contacts-only advertising without a presence
 * key), POS_P2P_ERR_MDNS_SOCKET (neither mDNS socket could be opened).
 */
int pos_mdns_new(pos_mdns **out, const pos_mdns_config *cfg, pos_mdns_callback cb, void *user);

/* pos_mdns_fd: one descriptor to poll for reading. No errors. */
int pos_mdns_fd(const pos_mdns *m);

/*
 * pos_mdns_next_deadline: when to call pos_mdns_process at the latest, on
 * the pos_p2p_now_ms clock, or -1 when no timer is set. No errors.
 */
int64_t pos_mdns_next_deadline(const pos_mdns *m);

/* pos_mdns_process reads what is ready, runs due timers and sends. Never blocks. No errors: returns
 * 0. */
int pos_mdns_process(pos_mdns *m);

/*
 * pos_mdns_set_metadata replaces name, os, model, version and libraries
 * (taken from |cfg|, which also needs peer_id) and announces them at once;
 * browsers report "updated". Returns 0 on success or one of these negative
 * codes: POS_P2P_ERR_INVALID_ARGUMENT (NULL |cfg| or peer id),
 * POS_P2P_ERR_MDNS_TXT (the values do not fit, or more than 64 libraries).
 */
int pos_mdns_set_metadata(pos_mdns *m, const pos_mdns_config *cfg);

/*
 * pos_mdns_add_contact: recognise the contacts-only advertisements of
 * |peer_id| whose presence key is |key|. Returns 0 on success or one of
 * these negative codes: POS_P2P_ERR_INVALID_ARGUMENT (peer id not
 * canonical), POS_P2P_ERR_MDNS_FULL (256 contacts already).
 */
int pos_mdns_add_contact(pos_mdns *m, const char *peer_id, const uint8_t key[32]);

/* pos_mdns_instance: the instance name currently advertised ("" if none). No errors. */
const char *pos_mdns_instance(const pos_mdns *m);

/* pos_mdns_stop sends goodbyes (TTL 0) for everything advertised. No errors. */
void pos_mdns_stop(pos_mdns *m);

/* pos_mdns_del stops (goodbyes) if not yet stopped and frees. NULL is fine. No errors. */
void pos_mdns_del(pos_mdns *m);

/*
 * pos_mdns_run is the blocking runner: poll + process until |done| returns
 * non-zero (checked before each round; may be NULL) or |timeout_ms| passes
 * (-1: no limit), as pos_p2p_endpoint_run. Returns 0 when |done| said so,
 * POS_P2P_ERR_TIMEOUT when the time passed, POS_P2P_ERR_INVALID_ARGUMENT
 * (|m| NULL) or POS_P2P_ERR_IO (poll failed).
 */
int pos_mdns_run(pos_mdns *m, int timeout_ms, pos_p2p_done_cb done, void *arg);

/*
 * Contacts (contacts-only mode). A card is "pos-contact:1:<peer id>:<key>",
 * key = 43 characters of unpadded base64 of a random 32-byte presence key.
 * pos_mdns_card_parse returns 0 on success or POS_P2P_ERR_MDNS_CARD (not
 * such a card). pos_mdns_card_format writes the card of |peer_id| and |key|
 * into |out| (|cap| bytes; 128 are enough). No errors.
 */
int pos_mdns_card_parse(const char *card, char peer_id[POS_P2P_PEER_ID_STRLEN], uint8_t key[32]);
void pos_mdns_card_format(const char *peer_id, const uint8_t key[32], char *out, size_t cap);

/*
 * pos_mdns_txt_split reads one TXT string of a pos_mdns_peer (|s|, |len|
 * bytes, not NUL terminated) by RFC 6763 §6.4: the key is everything up to
 * the first '=' (printable ASCII, compared case-insensitively); its length
 * goes to |*klen|; the value after '=' to |*val| / |*vlen| (|*val| NULL for
 * a boolean attribute, "key" without '='). Returns 0, POS_P2P_ERR_MDNS_TXT when
 * the string carries no valid key (ignore it), or POS_P2P_ERR_INVALID_ARGUMENT
 * (a NULL pointer).
 */
int pos_mdns_txt_split(const uint8_t *s, size_t len, size_t *klen, const uint8_t **val,
                       size_t *vlen);

#ifdef __cplusplus
}
#endif

#endif
