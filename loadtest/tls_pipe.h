/*
 * A client and a server GnuTLS session talking over in-memory buffers, for
 * what measures or tests TLS without QUIC or sockets (loadtest/tlsfloor.c,
 * tests/unit/test_tls.c): each side reads its |in| pipe and writes its |out|
 * pipe (the other side's |in|), and carries the pinning state the verify
 * function of common/tls.c finds through the session pointer.
 */
#ifndef POS_TLS_PIPE_H
#define POS_TLS_PIPE_H

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <stddef.h>
#include <stdint.h>

#include "tls.h"

struct pos_tls_pipe {
    uint8_t buf[65536];
    size_t len;
};

struct pos_tls_side {
    gnutls_session_t s;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    struct pos_tls_pipe *in, *out;
    int done;
};

/*
 * pos_tls_side_setup: |sd| becomes a session of |creds| (server when
 * |server|; session tickets when |tickets| is not 0, as in
 * pos_tls_session_new_ex) with the control protocol's ALPNs, reading |in| and
 * writing |out|. Returns 0, or -1 (nothing to free).
 */
int pos_tls_side_setup(struct pos_tls_side *sd, pos_tls_creds *creds, int server, unsigned tickets,
                       struct pos_tls_pipe *in, struct pos_tls_pipe *out);

#endif
