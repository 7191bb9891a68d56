/*
 * What the end of a session means to its user (see session_close.h).
 */
#include <stdio.h>

#include "pos/p2p.h"
#include "session_close.h"

int sess_close_by_peer(const ngtcp2_connection_close_error *cc, int was_open, char *reason,
                       size_t cap)
{
    size_t n = cc->reasonlen < cap - 1 ? cc->reasonlen : cap - 1;
    int err = 0;

    /* from the network: printable ASCII only */
    for (size_t i = 0; i < n; i++)
        reason[i] = (cc->reason[i] >= 0x20 && cc->reason[i] < 0x7f) ? (char)cc->reason[i] : '?';
    reason[n] = 0;
    if (cc->type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
        if (cc->error_code == POS_P2P_CLOSE_NOT_ALLOWED) {
            err = POS_P2P_ERR_NOT_ALLOWED;
            snprintf(reason, cap,
                     "the peer does not allow this device (it is not in the peer's allow list)");
        } else if (cc->error_code != 0) {
            err = POS_P2P_ERR_CLOSED;
        }
        if (!reason[0])
            snprintf(reason, cap, "closed by the peer (code 0x%llx)",
                     (unsigned long long)cc->error_code);
    } else if (cc->error_code != NGTCP2_NO_ERROR || !was_open) {
        err = was_open ? POS_P2P_ERR_CLOSED : POS_P2P_ERR_HANDSHAKE;
        if (!n)
            snprintf(reason, cap, "closed by the peer (QUIC error 0x%llx)",
                     (unsigned long long)cc->error_code);
    }
    if (!reason[0])
        snprintf(reason, cap, "closed by the peer");
    return err;
}

int sess_close_by_error(int liberr, int mismatch, int handshake_done, const char *peer_id,
                        const char *remote, char *why, size_t cap)
{
    if (mismatch) {
        if (!remote)
            snprintf(why, cap,
                     "wrong peer id: the peer reached through the relay is not %s (its key "
                     "belongs to another peer id)",
                     peer_id);
        else
            snprintf(why, cap,
                     "wrong peer id: the device at %s is not %s (its key belongs to another "
                     "peer id)",
                     remote, peer_id);
        return POS_P2P_ERR_PEER_MISMATCH;
    }
    if (handshake_done) {
        snprintf(why, cap, "QUIC error: %s", ngtcp2_strerror(liberr));
        return POS_P2P_ERR_PROTOCOL;
    }
    snprintf(why, cap, "handshake with %s failed: %s",
             remote ? remote : "the peer through the relay", ngtcp2_strerror(liberr));
    return POS_P2P_ERR_HANDSHAKE;
}
