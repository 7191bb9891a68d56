/*
 * Relay entries as relays register them: validation of a POST body and the
 * canonical JSON stored in Redis and listed to clients. No I/O: bytes in,
 * a validated entry or one sentence saying what is wrong out, so the HTTP
 * layer, the unit tests and the fuzz target all run the same code.
 *
 * An entry is a JSON object with exactly the keys "id" (a canonical UUID),
 * "peer_id" (an Ed25519 key as 43 characters of unpadded standard base64,
 * or as a libp2p PeerId "12D3KooW...", the form Spacedrive's relays register;
 * kept as given) and "addrs" (1 to 16 distinct "ip:port" / "[v6]:port"
 * strings).
 */
#ifndef POS_DISCOVERY_ENTRY_H
#define POS_DISCOVERY_ENTRY_H

#include <stddef.h>

#include "addr.h"
#include "config.h" /* POS_ERR_LEN, the size of error buffers */
#include "identity.h"
#include "peer_id.h"
#include "uuid.h"

#define POS_ENTRY_MAX_BODY 16384 /* bytes; a larger body is refused whole */
#define POS_ENTRY_MAX_ADDRS 16
/* Longest canonical JSON of one entry, with room to spare. */
#define POS_ENTRY_JSON_MAX 1536

/* Results of pos_entry_parse besides 0. */
#define POS_ENTRY_ERR_INVALID -1   /* the body is not a valid entry */
#define POS_ENTRY_ERR_TOO_LARGE -2 /* more than POS_ENTRY_MAX_BODY bytes */

typedef struct pos_entry {
    char id[POS_UUID_STRLEN];                /* lower case */
    char peer_id[POS_LIBP2P_PEER_ID_STRLEN]; /* as registered, in either form */
    pos_peer_id_form peer_id_form;
    char addrs[POS_ENTRY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t naddrs;
} pos_entry;

/*
 * pos_entry_parse validates |len| bytes of |body| (no NUL needed) and fills
 * |e|. On error returns POS_ENTRY_ERR_INVALID or POS_ENTRY_ERR_TOO_LARGE
 * and writes a sentence for the client into |err| (plain ASCII, never an
 * echo of arbitrary input bytes); |e| is then unspecified.
 */
int pos_entry_parse(const char *body, size_t len, pos_entry *e, char *err, size_t errlen);

/*
 * pos_entry_format writes the canonical JSON of |e|,
 * {"id":"...","peer_id":"...","addrs":["..."]}, and a NUL into |out|.
 * Returns its length, or -1 when |outlen| is too small.
 */
int pos_entry_format(const pos_entry *e, char *out, size_t outlen);

/*
 * pos_entry_ttl_s is the lifetime of a registration of |e|: |spacedrive_ttl_s|
 * when its peer id is in the libp2p PeerId form (a Spacedrive relay, which
 * re-registers only every 540 s), else |ttl_s|.
 */
unsigned pos_entry_ttl_s(const pos_entry *e, unsigned ttl_s, unsigned spacedrive_ttl_s);

/*
 * pos_entry_id_parse checks that |len| bytes of |s| are a UUID and writes its
 * lower-case form into |out|. Returns 0, or -1 when it is not a UUID.
 */
int pos_entry_id_parse(const char *s, size_t len, char out[POS_UUID_STRLEN]);

#endif
