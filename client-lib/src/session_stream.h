/*
 * Send buffers of a session's streams (session_stream.c; never installed).
 * What the application wrote stays in a chain of fixed blocks until the peer
 * acknowledges it (ngtcp2 keeps pointers into them for retransmission, so
 * they never move); at most POS_P2P_STREAM_BUFFER bytes each. No ngtcp2
 * call here: session.c gives ngtcp2 the chunks and reports what it took.
 */
#ifndef POS_P2P_SESSION_STREAM_H
#define POS_P2P_SESSION_STREAM_H

#include <stddef.h>
#include <stdint.h>

struct sstream; /* one stream; a session keeps a list of them */

struct sstream *sstream_find(struct sstream *list, int64_t id); /* NULL: none */
struct sstream *sstream_add(struct sstream **list, int64_t id); /* NULL: out of memory */
void sstream_remove(struct sstream **list, int64_t id);         /* frees it (if there) */
void sstream_free_all(struct sstream **list);
int64_t sstream_id(const struct sstream *st);

/* writing to the network */
struct sstream *sstream_next_output(struct sstream *list); /* a stream with bytes or FIN to send */
/*
 * sstream_chunk: the next bytes of |st| to give ngtcp2 (|*data|/|*len|, len
 * 0 when only FIN is left) and in |*fin| whether FIN goes with them.
 */
void sstream_chunk(struct sstream *st, const uint8_t **data, size_t *len, int *fin);
void sstream_sent(struct sstream *st, size_t n, int fin); /* ngtcp2 took |n| bytes (and FIN) */
void sstream_block(struct sstream *st);                   /* flow control: no more this round */
void sstream_finish(struct sstream *st);                  /* shut or reset: nothing more to send */
void sstreams_unblock(struct sstream *list);              /* a new round */

/*
 * sstream_acked drops |n| acknowledged bytes; 1 when the writer should now
 * hear POS_P2P_SESSION_EV_WRITABLE (it was refused room and half is free).
 */
int sstream_acked(struct sstream *st, size_t n);

/* the application's side */
size_t sstream_room(const struct sstream *st); /* bytes it may write now (0: FIN queued, done) */
int sstream_open(const struct sstream *st);    /* 0: FIN queued or done: no more writes */
/* sstream_write takes up to the room of |data| (|*taken|); FIN when all fit. 0, -1 no memory. */
int sstream_write(struct sstream *st, const uint8_t *data, size_t len, int fin, size_t *taken);

#endif
