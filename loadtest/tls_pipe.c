/* In-memory transport for two GnuTLS sessions (see tls_pipe.h). */
#include "tls_pipe.h"

#include <errno.h>
#include <string.h>
#include <sys/types.h>

#include "ctrl.h"

static ssize_t push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
    struct pos_tls_side *sd = p;
    if (sd->out->len + len > sizeof(sd->out->buf))
        return -1;
    memcpy(sd->out->buf + sd->out->len, data, len);
    sd->out->len += len;
    return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    struct pos_tls_side *sd = p;
    if (sd->in->len == 0) {
        gnutls_transport_set_errno(sd->s, EAGAIN);
        return -1;
    }
    if (len > sd->in->len)
        len = sd->in->len;
    memcpy(data, sd->in->buf, len);
    memmove(sd->in->buf, sd->in->buf + len, sd->in->len - len);
    sd->in->len -= len;
    return (ssize_t)len;
}

int pos_tls_side_setup(struct pos_tls_side *sd, pos_tls_creds *creds, int server, unsigned tickets,
                       struct pos_tls_pipe *in, struct pos_tls_pipe *out)
{
    memset(sd, 0, sizeof(*sd));
    if (pos_tls_session_new_ex(&sd->s, creds, server, pos_ctrl_alpns, POS_CTRL_N_ALPNS, tickets))
        return -1;
    sd->ref.user_data = &sd->pin;
    gnutls_session_set_ptr(sd->s, &sd->ref);
    gnutls_transport_set_ptr(sd->s, sd);
    gnutls_transport_set_push_function(sd->s, push);
    gnutls_transport_set_pull_function(sd->s, pull);
    sd->in = in;
    sd->out = out;
    return 0;
}
