/*
 * Messages of the file-transfer protocol shared by its sender
 * (transfer_send.c) and receiver (transfer.c): message types, the
 * reassembly buffer of one control message, and the helpers that write and
 * parse the parts both sides use (headers, verdicts, texts). Private to
 * pos-p2p's transfer code (docs/transfer.md, "Messages").
 */
#ifndef POS_P2P_TRANSFER_WIRE_H
#define POS_P2P_TRANSFER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "reader.h"
#include "transfer.h"
#include "writer.h"

enum pos_xfer_msg {
    POS_XFER_MSG_OFFER = 0x01,  /* u8 version, u8 flags, u8 hashes, u64 size, file id[32], text */
    POS_XFER_MSG_START = 0x02,  /* u64 offset */
    POS_XFER_MSG_DATA = 0x03,   /* file bytes (1 .. POS_XFER_CHUNK) */
    POS_XFER_MSG_END = 0x04,    /* digest[32] of the whole file, in the ACCEPT's algorithm */
    POS_XFER_MSG_ACCEPT = 0x11, /* u8 algorithm, u64 offset, digest[32] of the prefix, key[32] */
    POS_XFER_MSG_REFUSE = 0x12, /* u16 code, text reason */
    POS_XFER_MSG_DONE = 0x13,   /* u16 code (0 = stored), text: final name or reason */
};

#define POS_XFER_VERSION 2 /* OFFER's version: 1 had the whole file's hash in the OFFER */
#define POS_XFER_FLAG_RESUME 0x01

/* Reassembly of one message of at most POS_XFER_MAX_CTRL_BODY body bytes. */
struct pos_xfer_msgbuf {
    uint8_t buf[POS_XFER_HEADER_LEN + POS_XFER_MAX_CTRL_BODY];
    size_t have;
};

/*
 * pos_xfer_fill_to moves bytes from |*data| (|*len| left) into |mb| until it
 * holds |want| bytes; returns 1 when it does, 0 when the input ran out first.
 */
int pos_xfer_fill_to(struct pos_xfer_msgbuf *mb, size_t want, const uint8_t **data, size_t *len);

/* pos_xfer_body_len: the body length in the header |mb| holds (5 bytes at least). */
size_t pos_xfer_body_len(const struct pos_xfer_msgbuf *mb);

/* pos_xfer_put_header: type and u32 body length. */
void pos_xfer_put_header(struct pos_writer *w, uint8_t type, size_t body_len);

/*
 * pos_xfer_get_text reads a u16-prefixed text of at most |max| bytes into
 * |dst| (max + 1 bytes, NUL-terminated); fails |c| when longer or holding a
 * NUL. Returns its length.
 */
size_t pos_xfer_get_text(struct pos_reader *c, char *dst, size_t max);

/*
 * pos_xfer_put_verdict writes REFUSE or DONE (|type|) into |p| (|cap|
 * bytes): u16 |code|, |text| cut at POS_XFER_MAX_TEXT. Returns the message
 * length, or 0 when it does not fit.
 */
size_t pos_xfer_put_verdict(uint8_t *p, size_t cap, uint8_t type, int code, const char *text);

/* pos_xfer_code_from_wire: a wire code as a POS_XFER_ERR_* (unknown ones: REFUSED). */
int pos_xfer_code_from_wire(uint64_t code);

/* pos_xfer_write_all: |n| bytes at |off| of |fd|; 0, or -1 with errno. */
int pos_xfer_write_all(int fd, const uint8_t *p, size_t n, uint64_t off);

#endif
