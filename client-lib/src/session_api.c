/*
 * The public calls on a session's streams and path (pos/p2p.h) that need
 * nothing of the session but its connection, its stream buffers
 * (session_stream.c) and its punching (session_punch.c), through the
 * accessors of session.h (module order: session <- session_api).
 */
#include <ngtcp2/ngtcp2.h>
#include <stdio.h>
#include <string.h>

#include "session.h"
#include "session_punch.h"
#include "session_stream.h"

void pos_p2p_session_get_status(const pos_p2p_session *s, pos_p2p_session_status *out)
{
    *out = *sess_status(s);
    if (sess_conn(s) && !sess_is_dead(s)) {
        ngtcp2_conn_stat cs;
        ngtcp2_conn_get_conn_stat(sess_conn(s), &cs);
        out->rtt_ms = (double)cs.smoothed_rtt / 1e6;
    }
}

int pos_p2p_session_open_stream(pos_p2p_session *s, int64_t *stream)
{
    int64_t id;
    int rv;
    if (!s || !stream || !sess_is_open(s))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    rv = ngtcp2_conn_open_bidi_stream(sess_conn(s), &id, NULL);
    if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
        return POS_P2P_ERR_STREAM_LIMIT;
    if (rv != 0)
        return POS_P2P_ERR_NOMEM;
    if (!sstream_add(sess_streams(s), id)) {
        ngtcp2_conn_shutdown_stream(sess_conn(s), id, 0);
        return POS_P2P_ERR_NOMEM;
    }
    *stream = id;
    return 0;
}

size_t pos_p2p_session_write_room(const pos_p2p_session *s, int64_t stream)
{
    const struct sstream *st = sess_is_dead(s) ? NULL : sstream_find(sess_stream_list(s), stream);
    return st ? sstream_room(st) : 0;
}

int pos_p2p_session_write(pos_p2p_session *s, int64_t stream, const uint8_t *data, size_t len,
                          int fin, size_t *taken)
{
    struct sstream *st;
    size_t n;
    if (taken)
        *taken = 0;
    if (!s || (len && !data) || !sess_is_open(s))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    st = sstream_find(sess_stream_list(s), stream);
    if (!st || !sstream_open(st))
        return POS_P2P_ERR_NO_STREAM;
    if (sstream_write(st, data, len, fin, &n) != 0)
        return POS_P2P_ERR_NOMEM;
    if (taken)
        *taken = n;
    sess_flush(s);
    return 0;
}

int pos_p2p_session_reset_stream(pos_p2p_session *s, int64_t stream, uint64_t code)
{
    struct sstream *st;
    if (!s || sess_is_dead(s))
        return POS_P2P_ERR_INVALID_ARGUMENT;
    st = sstream_find(sess_stream_list(s), stream);
    if (!st)
        return POS_P2P_ERR_NO_STREAM;
    sstream_finish(st);
    ngtcp2_conn_shutdown_stream(sess_conn(s), stream, code);
    sess_flush(s);
    return 0;
}

int pos_p2p_session_add_candidates(pos_p2p_session *s, const char *const *addrs, size_t n)
{
    struct sess_punch *p;
    if (!s || (n && !addrs) || n > POS_P2P_MAX_EXTRA_CANDIDATES || sess_is_dead(s) ||
        (p = sess_punch_of(s)) == NULL)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    return sess_punch_add_extra(p, addrs, n, pos_p2p_now_ms());
}

int pos_p2p_session_get_path(const pos_p2p_session *s, pos_p2p_path_info *out)
{
    pos_p2p_session_status st;
    const struct sess_punch *p;
    if (!s || !out)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof(*out));
    pos_p2p_session_get_status(s, &st);
    out->upgraded_after_ms = -1;
    if ((p = sess_punch_of(s)) != NULL)
        sess_punch_info(p, out);
    else if (st.path == POS_P2P_PATH_DIRECT)
        out->bytes_direct = st.bytes_sent + st.bytes_received;
    else
        out->bytes_relayed = st.bytes_sent + st.bytes_received;
    out->path = st.path;
    snprintf(out->remote, sizeof(out->remote), "%s", st.remote);
    out->rtt_ms = st.rtt_ms;
    return 0;
}
