/*
 * The receiving directory of the file-transfer protocol (transfer.c): which
 * names may be written there, the part file each transfer owns, publication
 * under a final name, and expiry of abandoned part files. Private to the
 * library (docs/transfer.md, "Part files" and "Names").
 *
 * A part file is DIR/.NAME.KEY.part where KEY is 32 hex digits: a BLAKE2b
 * of the sender's peer id and the offer (size, file id, name), so that only the
 * same sender offering the same file finds, and resumes, it. The transfer
 * that opens it holds an exclusive flock() on it for its whole life; a
 * second transfer of the same key gets a fresh part file with a random KEY.
 * Nothing else in the directory is ever written, truncated or removed.
 */
#ifndef POS_P2P_TRANSFER_FILES_H
#define POS_P2P_TRANSFER_FILES_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "transfer.h"

#define POS_XFER_PART_KEY_HEX 32
/* ".NAME.KEY.part": 1 + name + 1 + key + 5, and the NUL */
#define POS_XFER_PART_NAME_MAX (POS_XFER_MAX_NAME + POS_XFER_PART_KEY_HEX + 8)

/*
 * pos_xfer_text_clean makes |s| (NUL-terminated) safe to print on a terminal:
 * invalid UTF-8, control characters (C0, DEL, C1) and the invisible or
 * direction-changing characters pos_xfer_name_ok refuses become '?'.
 */
void pos_xfer_text_clean(char *s);

/*
 * pos_xfer_part_open opens (creating it if needed) the part file of the
 * transfer of |name| (|size| bytes, the OFFER's file id |hash|) from |sender| in the
 * directory |dirfd| and locks it exclusively. Writes its name into |part|
 * (POS_XFER_PART_NAME_MAX bytes) and sets |*resumable| to 1 when it is the
 * keyed part file (its bytes may be a prefix of this very offer), 0 when it
 * is a new file with a random key (the keyed one is in use by another
 * transfer and |takeover| (may be NULL) did not end that transfer: see
 * pos_xfer_receiver_set_takeover). Returns the descriptor, or -errno.
 */
int pos_xfer_part_open(int dirfd, const char *sender, const char *name, uint64_t size,
                       const uint8_t *hash, pos_xfer_takeover_cb takeover, void *arg, char *part,
                       int *resumable);

/*
 * pos_xfer_publish gives the part file |part| (held open by the caller) the
 * first free name among NAME, "BASE (1).EXT" .. "BASE (99).EXT", never
 * replacing an existing file (renameat2 RENAME_NOREPLACE, or link + unlink).
 * The chosen name goes to |final| (|cap| bytes). Returns 0,
 * POS_XFER_ERR_NO_NAME, or POS_XFER_ERR_IO with errno kept.
 */
int pos_xfer_publish(int dirfd, const char *part, const char *name, char *final, size_t cap);

/*
 * pos_xfer_free_space: the bytes an unprivileged writer may still use on the
 * file system of |dirfd|; UINT64_MAX when unknown.
 */
uint64_t pos_xfer_free_space(int dirfd);

#endif
