/*
 * The libp2p PeerId form of an Ed25519 public key, which Spacedrive's relays
 * put in the relay list ("12D3KooW...", 52 characters), next to our own
 * 43-character base64 form (identity.h).
 *
 * A libp2p Ed25519 PeerId is the identity multihash (code 0x00, length 0x24)
 * of the protobuf PublicKey {Type = Ed25519 (1), Data = the 32-byte key},
 * that is the 38 bytes 00 24 08 01 12 20 <key>, written in base58btc (the
 * Bitcoin alphabet). Parsing is strict: only that byte layout (no other key
 * type, no sha2-256 multihash, no other protobuf encoding of the same key)
 * and only the canonical text (the one pos_libp2p_peer_id_format writes), so
 * each key has exactly one PeerId text. No I/O, no allocation.
 */
#ifndef POS_PEER_ID_H
#define POS_PEER_ID_H

#include <stddef.h>
#include <stdint.h>

#define POS_LIBP2P_PEER_ID_LEN 52
#define POS_LIBP2P_PEER_ID_STRLEN 53 /* with the NUL */

/* The two text forms of a peer id. */
typedef enum pos_peer_id_form {
    POS_PEER_ID_FORM_BASE64 = 1, /* 43 characters of unpadded standard base64 */
    POS_PEER_ID_FORM_LIBP2P = 2  /* a libp2p Ed25519 PeerId in base58 */
} pos_peer_id_form;

/* pos_libp2p_peer_id_format writes the PeerId text of |public_key| and a NUL. */
void pos_libp2p_peer_id_format(const uint8_t public_key[32], char out[POS_LIBP2P_PEER_ID_STRLEN]);

/*
 * pos_libp2p_peer_id_parse parses exactly |len| bytes of |s| as the canonical
 * PeerId of an Ed25519 key. Returns 0 with the key in |public_key|, or -1
 * (|public_key| untouched).
 */
int pos_libp2p_peer_id_parse(const char *s, size_t len, uint8_t public_key[32]);

/*
 * pos_peer_id_parse_any accepts either form (strictly, as the two parsers
 * above). Returns the form (POS_PEER_ID_FORM_*) with the key in |public_key|,
 * or -1 (|public_key| untouched).
 */
int pos_peer_id_parse_any(const char *s, size_t len, uint8_t public_key[32]);

#endif
