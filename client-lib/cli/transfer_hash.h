/*
 * The checksum of the file-transfer protocol: BLAKE2b-256 (libsodium) or
 * SHA-256 (GnuTLS, which uses the CPU's SHA instructions: 1.5-2x faster
 * than BLAKE2b where they exist, 2-3x slower where they do not). The sender
 * offers the algorithms it hashes fast, the receiver picks one it also
 * hashes fast (docs/transfer.md, "Checksums"). A state can give the digest
 * so far and go on (the prefix digest of a resume, then the whole file's).
 */
#ifndef POS_P2P_TRANSFER_HASH_H
#define POS_P2P_TRANSFER_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "transfer.h" /* POS_XFER_HASH_*: the algorithms */

struct pos_xfer_hash_impl;
struct pos_xfer_hash {
    int alg; /* 0: none yet */
    struct pos_xfer_hash_impl *impl;
};

/* pos_xfer_hash_fast: the algorithms this CPU hashes fast (BLAKE2b always, SHA-256 with SHA
 * instructions). */
unsigned pos_xfer_hash_fast(void);

/*
 * pos_xfer_hash_pick: the algorithm a receiver hashing |ours| fast uses for
 * a sender offering |theirs|: SHA-256 when both have it, else BLAKE2b; 0
 * when |theirs| lacks BLAKE2b and that is all we could use.
 */
int pos_xfer_hash_pick(unsigned theirs, unsigned ours);

/* pos_xfer_hash_init (re)starts |h| with |alg|; 0, or -1 (out of memory, unknown |alg|). */
int pos_xfer_hash_init(struct pos_xfer_hash *h, int alg);
void pos_xfer_hash_update(struct pos_xfer_hash *h, const uint8_t *p, size_t n);
/* pos_xfer_hash_peek: the 32-byte digest of the bytes so far; |h| goes on. 0 or -1. */
int pos_xfer_hash_peek(const struct pos_xfer_hash *h, uint8_t out[32]);
/* pos_xfer_hash_free releases |h| (zeroed; may be called twice). */
void pos_xfer_hash_free(struct pos_xfer_hash *h);

/* pos_xfer_hash_fd: hashes the first |len| bytes of |fd| into |h|. 0, or -1 (read error, EOF). */
int pos_xfer_hash_fd(struct pos_xfer_hash *h, int fd, uint64_t len);

#endif
