/*
 * What the end of a session means to its user (session_close.c; never
 * installed): the error code and the sentence for a close the peer sent or
 * an ngtcp2 error of our own. Pure functions: no session, no I/O.
 */
#ifndef POS_P2P_SESSION_CLOSE_H
#define POS_P2P_SESSION_CLOSE_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>

/*
 * sess_close_by_peer: the POS_P2P_ERR_* code (0: a clean close) and in
 * |reason| (|cap| bytes) the sentence for the peer's CONNECTION_CLOSE |cc|;
 * |was_open|: the session had opened. The peer's own reason text is kept,
 * printable ASCII only.
 */
int sess_close_by_peer(const ngtcp2_connection_close_error *cc, int was_open, char *reason,
                       size_t cap);

/*
 * sess_close_by_error: the code and |why| for ngtcp2 error |liberr| of a
 * session with |peer_id| at |remote| (NULL: through the relay); |mismatch|:
 * the peer's key is not |peer_id|'s, |handshake_done|: it had opened.
 */
int sess_close_by_error(int liberr, int mismatch, int handshake_done, const char *peer_id,
                        const char *remote, char *why, size_t cap);

#endif
