/* Send buffers of session streams (see session_stream.h). */
#include "session_stream.h"

#include <stdlib.h>
#include <string.h>

#include "pos/p2p.h"

#define SBLK_SIZE (32 * 1024)

struct sblk {
    struct sblk *next;
    size_t len;
    uint8_t data[SBLK_SIZE];
};

struct sstream {
    int64_t id;
    struct sstream *next;
    struct sblk *head, *tail; /* unacknowledged bytes start at head->data[head_off] */
    size_t head_off;
    struct sblk *sblk; /* next byte to give ngtcp2: sblk->data[soff] */
    size_t soff;
    size_t buffered; /* bytes written and not yet acknowledged */
    uint8_t fin_queued, fin_sent, blocked, want_writable, done;
};

struct sstream *sstream_find(struct sstream *list, int64_t id)
{
    for (struct sstream *st = list; st; st = st->next)
        if (st->id == id)
            return st;
    return NULL;
}

struct sstream *sstream_add(struct sstream **list, int64_t id)
{
    struct sstream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->id = id;
    st->next = *list;
    *list = st;
    return st;
}

static void free_blocks(struct sstream *st)
{
    struct sblk *b = st->head, *n;
    for (; b; b = n) {
        n = b->next;
        free(b);
    }
    st->head = st->tail = st->sblk = NULL;
    st->head_off = st->soff = st->buffered = 0;
}

void sstream_remove(struct sstream **list, int64_t id)
{
    for (struct sstream **pp = list; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct sstream *st = *pp;
            *pp = st->next;
            free_blocks(st);
            free(st);
            return;
        }
    }
}

void sstream_free_all(struct sstream **list)
{
    while (*list) {
        struct sstream *st = *list;
        *list = st->next;
        free_blocks(st);
        free(st);
    }
}

int64_t sstream_id(const struct sstream *st)
{
    return st->id;
}

static int has_output(const struct sstream *st)
{
    if (st->done || st->blocked || st->fin_sent)
        return 0;
    if (st->sblk && (st->soff < st->sblk->len || st->sblk->next))
        return 1;
    return st->fin_queued;
}

struct sstream *sstream_next_output(struct sstream *list)
{
    for (struct sstream *st = list; st; st = st->next)
        if (has_output(st))
            return st;
    return NULL;
}

void sstream_chunk(struct sstream *st, const uint8_t **data, size_t *len, int *fin)
{
    if (st->sblk && st->soff == st->sblk->len && st->sblk->next) {
        st->sblk = st->sblk->next;
        st->soff = 0;
    }
    *data = NULL;
    *len = 0;
    if (st->sblk && st->soff < st->sblk->len) {
        *data = st->sblk->data + st->soff;
        *len = st->sblk->len - st->soff;
    }
    *fin = st->fin_queued && (!st->sblk || !st->sblk->next);
}

void sstream_sent(struct sstream *st, size_t n, int fin)
{
    if (st->sblk)
        st->soff += n;
    if (fin && (!st->sblk || st->soff == st->sblk->len))
        st->fin_sent = 1;
}

void sstream_block(struct sstream *st)
{
    st->blocked = 1;
}

void sstream_finish(struct sstream *st)
{
    st->done = 1;
}

void sstreams_unblock(struct sstream *list)
{
    for (struct sstream *st = list; st; st = st->next)
        st->blocked = 0;
}

int sstream_acked(struct sstream *st, size_t n)
{
    if (n > st->buffered)
        n = st->buffered;
    st->buffered -= n;
    while (n > 0 && st->head) {
        size_t k = st->head->len - st->head_off;
        if (k > n)
            k = n;
        st->head_off += k;
        n -= k;
        if (st->head_off == st->head->len && st->head->len == SBLK_SIZE) {
            struct sblk *b = st->head;
            /* ngtcp2 acknowledged every byte of this block, so it holds no pointer into it */
            st->head = b->next;
            st->head_off = 0;
            if (st->tail == b)
                st->tail = NULL;
            if (st->sblk == b) {
                st->sblk = st->head;
                st->soff = 0;
            }
            free(b);
        }
    }
    if (st->want_writable && st->buffered <= POS_P2P_STREAM_BUFFER / 2 && !st->fin_queued) {
        st->want_writable = 0;
        return 1;
    }
    return 0;
}

size_t sstream_room(const struct sstream *st)
{
    if (st->fin_queued || st->done)
        return 0;
    return POS_P2P_STREAM_BUFFER - st->buffered;
}

int sstream_open(const struct sstream *st)
{
    return !st->fin_queued && !st->done;
}

static int append(struct sstream *st, const uint8_t *data, size_t len)
{
    while (len > 0) {
        size_t k;
        if (!st->tail || st->tail->len == SBLK_SIZE) {
            struct sblk *b = malloc(sizeof(*b));
            if (!b)
                return -1;
            b->next = NULL;
            b->len = 0;
            if (st->tail)
                st->tail->next = b;
            else
                st->head = b;
            st->tail = b;
            if (!st->sblk) {
                st->sblk = b;
                st->soff = 0;
            }
        }
        k = SBLK_SIZE - st->tail->len;
        if (k > len)
            k = len;
        memcpy(st->tail->data + st->tail->len, data, k);
        st->tail->len += k;
        st->buffered += k;
        data += k;
        len -= k;
    }
    return 0;
}

int sstream_write(struct sstream *st, const uint8_t *data, size_t len, int fin, size_t *taken)
{
    size_t room = POS_P2P_STREAM_BUFFER - st->buffered;
    size_t n = len < room ? len : room;
    if (append(st, data, n) != 0)
        return -1;
    *taken = n;
    if (n < len)
        st->want_writable = 1;
    else if (fin)
        st->fin_queued = 1;
    return 0;
}
