/*
 * Bytes queued on one QUIC stream until the peer acknowledges them
 * (sendq.c; never installed): ngtcp2 keeps pointers into what it was given
 * for retransmission, so the bytes stay until acknowledged. Used by relay
 * control connections for HELLO and for requests. A NULL queue is empty.
 */
#ifndef POS_P2P_SENDQ_H
#define POS_P2P_SENDQ_H

#include <stddef.h>
#include <stdint.h>

struct sendq;

/* sendq_append adds |len| bytes (creating |*q|). 0, or -1 out of memory (|*q| unchanged). */
int sendq_append(struct sendq **q, const uint8_t *data, size_t len);
size_t sendq_unacked(const struct sendq *q); /* bytes queued and not yet acknowledged */
/* sendq_pending: 1 and the bytes not yet given to ngtcp2 in |*data|/|*len|, or 0: none. */
int sendq_pending(const struct sendq *q, const uint8_t **data, size_t *len);
void sendq_sent(struct sendq *q, size_t n); /* ngtcp2 took |n| of them */
/* sendq_acked: |n| more acknowledged; once all were sent and acknowledged |*q| is freed. */
void sendq_acked(struct sendq **q, size_t n);
void sendq_free(struct sendq **q);

#endif
