/*
 * The file-transfer protocol of `pos-p2p send` / `pos-p2p listen`: one file
 * per bidirectional stream of a peer-to-peer QUIC session (docs/transfer.md).
 * Sans network I/O: a sender and a receiver state machine that take the
 * bytes read from the stream and produce the bytes to write to it; the
 * caller moves them over QUIC. They do their own file I/O (reading the file
 * to send; writing the receiver's partial file), which is the point of them.
 *
 * Sender -> receiver: OFFER (version 2, name, size, an id of the file
 * (not its contents), the checksums it can use, resume wanted), then START
 * (offset), DATA chunks, and END (the checksum of the whole file, computed
 * while reading it for DATA: no hashing before the first byte leaves).
 * Receiver -> sender: ACCEPT (the checksum algorithm, the offset it already
 * has and the checksum of that prefix) or REFUSE, and at the end DONE
 * (verdict and final name). Every message is type (1 byte) | body length
 * (4 bytes, big endian) | body, parsed through a bounded cursor.
 *
 * The receiver writes into a part file of its own, DIR/.NAME.KEY.part (KEY
 * derived from the sender's peer id and the offer, flock()ed for the
 * transfer's life: see transfer_files.h), hashes the bytes as it writes them
 * through that one descriptor, and only when that checksum of the whole file
 * equals END's renames the part file to NAME, never replacing an existing file
 * (NAME taken: "NAME (1)", "NAME (2)", ...). A failed transfer never leaves a
 * file that looks complete; an interrupted one resumes from the received
 * prefix when the same sender offers the same file again and has checked the
 * prefix's checksum.
 *
 * Memory is bounded: each machine holds one small message buffer; DATA is
 * streamed straight between the caller's buffers and the files.
 */
#ifndef POS_P2P_TRANSFER_H
#define POS_P2P_TRANSFER_H

#include <stddef.h>
#include <stdint.h>

#define POS_XFER_HASH_LEN 32
#define POS_XFER_MAX_NAME 200      /* bytes of a file name on the wire */
#define POS_XFER_CHUNK (64 * 1024) /* largest DATA body */
#define POS_XFER_MAX_TEXT 256      /* reason or final name in REFUSE / DONE */
#define POS_XFER_HEADER_LEN 5      /* type + u32 length */
#define POS_XFER_MAX_CTRL_BODY 512 /* largest body of any message but DATA */
#define POS_XFER_MIN_OUTPUT 256    /* smallest buffer for pos_xfer_sender_output (an OFFER) */

/* Checksum algorithms (sets of them: OR): the bits of OFFER's set, ACCEPT's choice. */
#define POS_XFER_HASH_BLAKE2B 0x01 /* BLAKE2b-256: every peer has it */
#define POS_XFER_HASH_SHA256 0x02  /* SHA-256: when both CPUs have SHA instructions */
#define POS_XFER_HASH_GMAC 0x04    /* AES-256-GMAC under the receiver's key: with AES, PCLMULQDQ */
#define POS_XFER_HASH_ALL (POS_XFER_HASH_BLAKE2B | POS_XFER_HASH_SHA256 | POS_XFER_HASH_GMAC)

/* Errors returned by the functions below (negative), also the verdicts on the wire (positive). */
#define POS_XFER_ERR_IO -1       /* reading or writing a local file failed */
#define POS_XFER_ERR_PROTOCOL -2 /* the other side sent something invalid or unexpected */
#define POS_XFER_ERR_BAD_NAME -3 /* file name not acceptable (path, hidden, control chars) */
#define POS_XFER_ERR_TOO_BIG -4  /* larger than the receiver accepts */
#define POS_XFER_ERR_CHECKSUM -5 /* the received file's checksum differs from the sender's */
#define POS_XFER_ERR_REFUSED -6  /* the receiver refused the offer for another reason */
#define POS_XFER_ERR_NO_NAME -7  /* no free final name (NAME (1) .. NAME (99) all taken) */
#define POS_XFER_ERR_NOMEM -8
#define POS_XFER_ERR_STATE -9     /* call not valid in this state */
#define POS_XFER_ERR_BUSY -10     /* the receiver has too many transfers in progress */
#define POS_XFER_ERR_NO_SPACE -11 /* no space left on the receiver's device */

/* pos_xfer_strerror: a sentence for each POS_XFER_ERR_* code (negative or positive). */
const char *pos_xfer_strerror(int code);

/*
 * pos_xfer_name_ok: whether |len| bytes of |name| are acceptable as a file
 * name in DIR: 1..POS_XFER_MAX_NAME bytes of valid UTF-8 (no overlong form,
 * no surrogate), no '/', '\\' or NUL, no control character (C0, DEL, C1),
 * no bidirectional control (U+061C, U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069), line or paragraph separator (U+2028, U+2029) or U+FEFF,
 * not starting with '.' (so never ".", "..", a hidden file, or one of the
 * receiver's own part files). Implemented in transfer_files.c.
 */
int pos_xfer_name_ok(const char *name, size_t len);

enum pos_xfer_status {
    POS_XFER_RUNNING = 0,
    POS_XFER_FINISHED = 1, /* sender: receiver confirmed; receiver: file verified and renamed */
    POS_XFER_FAILED = 2,   /* see pos_xfer_*_error */
};

/* ---- sender ---- */

typedef struct pos_xfer_sender pos_xfer_sender;

/*
 * pos_xfer_sender_new opens |path| (nothing is read yet: the file is hashed
 * as it is sent). The offered name is the last path component. |resume|
 * asks the receiver to keep a partial file of the same transfer. Returns
 * NULL with |*err| set: POS_XFER_ERR_IO (cannot open, not a regular file;
 * errno kept), POS_XFER_ERR_BAD_NAME, POS_XFER_ERR_NOMEM. Free with
 * pos_xfer_sender_del (closes the file). The transfer fails with
 * POS_XFER_ERR_IO ("the file changed while it was sent") when the file's
 * size or modification time changes before its last byte is read.
 */
pos_xfer_sender *pos_xfer_sender_new(const char *path, int resume, int *err);
void pos_xfer_sender_del(pos_xfer_sender *s);

/*
 * pos_xfer_sender_set_hashes: the checksum algorithms (POS_XFER_HASH_*) the
 * OFFER proposes; before the first output. Default: those this CPU computes
 * fast (BLAKE2b; SHA-256 with SHA instructions; GMAC with AES and
 * PCLMULQDQ). BLAKE2b is always added: every receiver can use it.
 */
void pos_xfer_sender_set_hashes(pos_xfer_sender *s, unsigned set);

/*
 * pos_xfer_sender_output writes the next bytes for the stream into |buf|
 * (|cap| >= POS_XFER_MIN_OUTPUT, else POS_XFER_ERR_STATE; DATA fills up to cap). Returns the number
 * of bytes (0: nothing to send until more input arrives, or finished), or a negative error (the
 * transfer failed; the stream should be reset).
 */
int pos_xfer_sender_output(pos_xfer_sender *s, uint8_t *buf, size_t cap);

/*
 * pos_xfer_sender_input consumes |len| bytes read from the stream. Returns 0
 * or a negative error (protocol error, refusal, failure reported by the
 * receiver); the status is then POS_XFER_FAILED.
 */
int pos_xfer_sender_input(pos_xfer_sender *s, const uint8_t *data, size_t len);

/* pos_xfer_sender_status: RUNNING, FINISHED or FAILED. */
enum pos_xfer_status pos_xfer_sender_status(const pos_xfer_sender *s);

/* pos_xfer_sender_error: the error that failed the transfer (0 if none), and the peer's reason. */
int pos_xfer_sender_error(const pos_xfer_sender *s, const char **reason);

/*
 * pos_xfer_sender_progress: |*size| of the file, |*offset| the receiver
 * already had (resume), |*sent| file bytes sent so far (offset included).
 */
void pos_xfer_sender_progress(const pos_xfer_sender *s, uint64_t *size, uint64_t *offset,
                              uint64_t *sent);

/* pos_xfer_sender_final_name: the name the receiver stored the file under (when FINISHED). */
const char *pos_xfer_sender_final_name(const pos_xfer_sender *s);

/* ---- receiver ---- */

typedef struct pos_xfer_receiver pos_xfer_receiver;

/*
 * pos_xfer_receiver_new: a receiver of one file into directory |dir|
 * (opened now; kept open). Files larger than |max_size| are refused (0 = no
 * limit). Returns NULL with |*err|: POS_XFER_ERR_IO (no such directory),
 * POS_XFER_ERR_NOMEM. pos_xfer_receiver_del closes files; a partial file and
 * its state are kept for a later resume unless the transfer failed its
 * checksum.
 */
pos_xfer_receiver *pos_xfer_receiver_new(const char *dir, uint64_t max_size, int *err);
void pos_xfer_receiver_del(pos_xfer_receiver *r);

/*
 * pos_xfer_receiver_set_sender names the peer the file comes from (its peer
 * id; copied), before any input. Part files are per sender and offer: only
 * the same sender offering the same file resumes one. Without it, all
 * senders count as one ("").
 */
void pos_xfer_receiver_set_sender(pos_xfer_receiver *r, const char *peer_id);

/*
 * A pos_xfer_takeover_cb is called (at most once, during
 * pos_xfer_receiver_input) when the part file |part| of this sender and
 * offer is held by another receiver of this process: the same sender
 * offering the same file again, typically after its connection was lost
 * while the old stream is not yet timed out. It returns 1 after deleting
 * that receiver (pos_xfer_receiver_part_name tells which one holds |part|),
 * so that this transfer takes the part file over and resumes it; 0 leaves
 * it, and this transfer gets a new part file and starts from 0.
 */
typedef int (*pos_xfer_takeover_cb)(void *arg, const char *part);
void pos_xfer_receiver_set_takeover(pos_xfer_receiver *r, pos_xfer_takeover_cb cb, void *arg);

/*
 * pos_xfer_receiver_set_hashes: the checksum algorithms the receiver may
 * choose (of those the sender offers: GMAC, else SHA-256, else BLAKE2b);
 * before any input. Default: those this CPU computes fast.
 */
void pos_xfer_receiver_set_hashes(pos_xfer_receiver *r, unsigned set);

/* pos_xfer_receiver_hash: the checksum algorithm in use (POS_XFER_HASH_*; 0 before ACCEPT). */
int pos_xfer_receiver_hash(const pos_xfer_receiver *r);

/* pos_xfer_receiver_part_name: the part file this receiver holds (NULL if none). */
const char *pos_xfer_receiver_part_name(const pos_xfer_receiver *r);

/* pos_xfer_receiver_input consumes stream bytes; 0 or a negative error (status FAILED). */
int pos_xfer_receiver_input(pos_xfer_receiver *r, const uint8_t *data, size_t len);

/* pos_xfer_receiver_output: bytes to send back (ACCEPT, REFUSE, DONE); 0 when none. */
int pos_xfer_receiver_output(pos_xfer_receiver *r, uint8_t *buf, size_t cap);

enum pos_xfer_status pos_xfer_receiver_status(const pos_xfer_receiver *r);
int pos_xfer_receiver_error(const pos_xfer_receiver *r);

/* pos_xfer_receiver_progress: size offered, offset resumed from, bytes of the file received. */
void pos_xfer_receiver_progress(const pos_xfer_receiver *r, uint64_t *size, uint64_t *offset,
                                uint64_t *received);

/*
 * pos_xfer_receiver_offered_name: the offered name (after OFFER), safe to
 * print (characters a name may not hold shown as '?'); the final name (when
 * FINISHED).
 */
const char *pos_xfer_receiver_offered_name(const pos_xfer_receiver *r);
const char *pos_xfer_receiver_final_name(const pos_xfer_receiver *r);

/*
 * pos_xfer_refusal writes into |buf| (|cap| >= POS_XFER_HEADER_LEN + 4 +
 * POS_XFER_MAX_TEXT) a REFUSE with |code| (a POS_XFER_ERR_*) and |reason|
 * (cut at POS_XFER_MAX_TEXT bytes), for a stream the caller will not hand
 * to a receiver (too many transfers). Returns its length, or 0 when |cap|
 * is too small.
 */
size_t pos_xfer_refusal(uint8_t *buf, size_t cap, int code, const char *reason);

/*
 * pos_xfer_sweep_parts removes from |dir| the part files (".NAME.KEY.part")
 * not written for |max_age_s| seconds or more and held by no transfer; other
 * files are never touched. |*removed| gets how many. Returns 0 or
 * POS_XFER_ERR_IO (the directory cannot be read). In transfer_files.c.
 */
int pos_xfer_sweep_parts(const char *dir, int64_t max_age_s, unsigned *removed);

#endif
