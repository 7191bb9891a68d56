/*
 * A send buffer whose bytes never move (see sendbuf.h).
 */
#include "sendbuf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 2048 /* one or two control messages; an idle client holds none */

struct relay_sendbuf_block {
    struct relay_sendbuf_block *next;
    size_t len;
    uint8_t data[BLOCK];
};

int relay_sendbuf_append(relay_sendbuf *b, const uint8_t *data, size_t len)
{
    while (len > 0) {
        struct relay_sendbuf_block *t = b->tail;
        if (!t || t->len == BLOCK) {
            t = malloc(sizeof(*t));
            if (!t)
                return -1;
            t->next = NULL;
            t->len = 0;
            if (b->tail)
                b->tail->next = t;
            else {
                b->head = t;
                b->head_off = b->end;
            }
            b->tail = t;
        }
        size_t n = BLOCK - t->len < len ? BLOCK - t->len : len;
        memcpy(t->data + t->len, data, n);
        t->len += n;
        b->end += n;
        data += n;
        len -= n;
    }
    return 0;
}

size_t relay_sendbuf_unsent(const relay_sendbuf *b, struct iovec *v, size_t max)
{
    uint64_t off = b->head_off;
    size_t n = 0;
    for (const struct relay_sendbuf_block *k = b->head; k && n < max; k = k->next) {
        uint64_t next = off + k->len;
        if (next > b->sent) {
            size_t skip = b->sent > off ? (size_t)(b->sent - off) : 0;
            v[n].iov_base = (void *)(k->data + skip);
            v[n].iov_len = k->len - skip;
            n++;
        }
        off = next;
    }
    return n;
}

void relay_sendbuf_sent(relay_sendbuf *b, size_t n)
{
    b->sent += n;
    if (b->sent > b->end)
        b->sent = b->end;
}

void relay_sendbuf_acked(relay_sendbuf *b, uint64_t n)
{
    b->acked += n;
    if (b->acked > b->sent)
        b->acked = b->sent;
    /* a block goes once every byte of it is acknowledged; the tail stays while it can grow */
    while (b->head && b->head_off + b->head->len <= b->acked &&
           (b->head != b->tail || b->head->len == BLOCK || b->acked == b->end)) {
        struct relay_sendbuf_block *h = b->head;
        b->head_off += h->len;
        b->head = h->next;
        if (!b->head)
            b->tail = NULL;
        sodium_memzero(h, sizeof(*h)); /* PUNCH_START carries a punch key */
        free(h);
    }
}

uint64_t relay_sendbuf_pending(const relay_sendbuf *b)
{
    return b->end - b->acked;
}

void relay_sendbuf_free(relay_sendbuf *b)
{
    while (b->head) {
        struct relay_sendbuf_block *h = b->head;
        b->head = h->next;
        sodium_memzero(h, sizeof(*h));
        free(h);
    }
    memset(b, 0, sizeof(*b));
}
