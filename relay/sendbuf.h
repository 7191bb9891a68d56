/*
 * A stream's send buffer whose bytes never move: ngtcp2 0.12 does not copy
 * stream data, it keeps pointers to it until the peer acknowledges it (for
 * retransmission), so a buffer grown with realloc hands it freed memory.
 * Bytes live in fixed blocks appended at the tail and freed from the head
 * once acknowledged. Offsets are the stream's. No ngtcp2 call here.
 */
#ifndef POS_RELAY_SENDBUF_H
#define POS_RELAY_SENDBUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct relay_sendbuf_block;

typedef struct relay_sendbuf {
    struct relay_sendbuf_block *head, *tail;
    uint64_t head_off; /* stream offset of head's first byte */
    uint64_t end;      /* stream offset after the last byte queued */
    uint64_t sent;     /* bytes handed to QUIC */
    uint64_t acked;    /* bytes the peer acknowledged (a prefix) */
} relay_sendbuf;

/* relay_sendbuf_append copies |len| bytes at the end. Returns 0, or -1 out of memory. */
int relay_sendbuf_append(relay_sendbuf *b, const uint8_t *data, size_t len);

/* relay_sendbuf_unsent fills up to |max| vectors with the bytes not yet sent; returns how many. */
size_t relay_sendbuf_unsent(const relay_sendbuf *b, struct iovec *v, size_t max);

/* relay_sendbuf_sent: |n| more bytes were handed to QUIC. */
void relay_sendbuf_sent(relay_sendbuf *b, size_t n);

/*
 * relay_sendbuf_acked: |n| more bytes were acknowledged; blocks wholly acknowledged are wiped
 * (a PUNCH_START carries a punch key) and freed, as relay_sendbuf_free does with the rest.
 */
void relay_sendbuf_acked(relay_sendbuf *b, uint64_t n);

/* relay_sendbuf_pending: bytes queued and not yet acknowledged. */
uint64_t relay_sendbuf_pending(const relay_sendbuf *b);

/* relay_sendbuf_free frees every block; |b| is empty (zeroed) afterwards. */
void relay_sendbuf_free(relay_sendbuf *b);

#endif
