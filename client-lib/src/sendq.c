/* Bytes queued on one QUIC stream until acknowledged (see sendq.h). */
#include "sendq.h"

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The queue carries HELLO (the relay token) and punch messages: every byte
   is wiped before its memory goes back (no realloc, which would not). */

struct sendq {
    uint8_t *data;
    size_t len, sent, acked;
};

int sendq_append(struct sendq **q, const uint8_t *data, size_t len)
{
    struct sendq *nq = *q;
    uint8_t *grown;
    if (!nq && !(nq = calloc(1, sizeof(*nq))))
        return -1;
    if (len > SIZE_MAX - nq->len || !(grown = malloc(nq->len + len ? nq->len + len : 1))) {
        if (!*q)
            free(nq);
        return -1;
    }
    if (nq->data) {
        memcpy(grown, nq->data, nq->len);
        sodium_memzero(nq->data, nq->len);
        free(nq->data);
    }
    nq->data = grown;
    memcpy(nq->data + nq->len, data, len);
    nq->len += len;
    *q = nq;
    return 0;
}

size_t sendq_unacked(const struct sendq *q)
{
    return q ? q->len - q->acked : 0;
}

int sendq_pending(const struct sendq *q, const uint8_t **data, size_t *len)
{
    if (!q || q->sent >= q->len)
        return 0;
    *data = q->data + q->sent;
    *len = q->len - q->sent;
    return 1;
}

void sendq_sent(struct sendq *q, size_t n)
{
    if (q)
        q->sent += n;
}

void sendq_acked(struct sendq **q, size_t n)
{
    struct sendq *s = *q;
    if (!s)
        return;
    s->acked += n;
    if (s->acked >= s->len && s->sent >= s->len)
        sendq_free(q);
}

void sendq_free(struct sendq **q)
{
    if (!*q)
        return;
    if ((*q)->data)
        sodium_memzero((*q)->data, (*q)->len);
    free((*q)->data);
    free(*q);
    *q = NULL;
}
