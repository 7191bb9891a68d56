/*
 * The checksums of the file-transfer protocol (docs/transfer.md,
 * "Checksums"): BLAKE2b-256 (libsodium); SHA-256 (GnuTLS, fast with the
 * CPU's SHA instructions, slow without); AES-256-GMAC (GnuTLS, with AES and
 * carry-less multiply instructions: a MAC under a key the receiver draws for
 * the transfer, 2x faster than SHA-256 and 4x faster than BLAKE2b here). The
 * sender offers those it computes fast, the receiver picks one it also
 * computes fast. A keyed checksum uses distinct nonces for the prefix (a
 * resume's ACCEPT) and the whole file (END), so no key-nonce pair ever
 * authenticates two messages.
 */
#ifndef POS_P2P_TRANSFER_HASH_H
#define POS_P2P_TRANSFER_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "transfer.h" /* POS_XFER_HASH_*: the algorithms */

#define POS_XFER_HASH_KEY_LEN 32

struct pos_xfer_hash_impl;
struct pos_xfer_hash {
    int alg; /* 0: none yet */
    uint8_t key[POS_XFER_HASH_KEY_LEN];
    struct pos_xfer_hash_impl *impl;
};

/*
 * pos_xfer_hash_fast: the algorithms this CPU computes fast: BLAKE2b
 * always, SHA-256 with SHA instructions, GMAC with AES and PCLMULQDQ.
 */
unsigned pos_xfer_hash_fast(void);

/*
 * pos_xfer_hash_pick: the algorithm a receiver computing |ours| fast uses
 * for a sender offering |theirs|: GMAC, else SHA-256, when both have it,
 * else BLAKE2b; 0 when |theirs| has none of those we could use.
 */
int pos_xfer_hash_pick(unsigned theirs, unsigned ours);

/* pos_xfer_hash_keyed: whether |alg| takes a key (GMAC). */
int pos_xfer_hash_keyed(int alg);

/*
 * pos_xfer_hash_init (re)starts |h| for the whole file with |alg| and, for
 * a keyed |alg|, |key| (POS_XFER_HASH_KEY_LEN bytes, copied; NULL
 * otherwise). 0, or -1 (out of memory, unknown |alg|, no key).
 */
int pos_xfer_hash_init(struct pos_xfer_hash *h, int alg, const uint8_t *key);

/* pos_xfer_hash_restart: |h| anew, same algorithm and key. 0 or -1. */
int pos_xfer_hash_restart(struct pos_xfer_hash *h);

void pos_xfer_hash_update(struct pos_xfer_hash *h, const uint8_t *p, size_t n);

/* pos_xfer_hash_final: the 32-byte digest (a 16-byte MAC is zero-padded); |h| is spent. 0/-1. */
int pos_xfer_hash_final(struct pos_xfer_hash *h, uint8_t out[32]);

/* pos_xfer_hash_free releases |h| (zeroed; may be called twice). */
void pos_xfer_hash_free(struct pos_xfer_hash *h);

/*
 * pos_xfer_hash_prefix reads the first |len| bytes of |fd| into |h| (just
 * initialised) and writes their own digest, the prefix's, to |out|. 0, or
 * -1 (read error, end of file, out of memory).
 */
int pos_xfer_hash_prefix(struct pos_xfer_hash *h, int fd, uint64_t len, uint8_t out[32]);

#endif
