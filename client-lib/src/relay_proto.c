/* What a relay's answers mean to the library (see relay_proto.h). */
#include "relay_proto.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "quic_common.h"
#include "sendq.h"
#include "tickets.h"

/* error_of: the library error for the code of an ERROR message. */
static int error_of(uint16_t code)
{
    switch (code) {
    case POS_CTRL_CODE_PEER_NOT_CONNECTED:
        return POS_P2P_ERR_PEER_NOT_CONNECTED;
    case POS_CTRL_CODE_DECLINED:
        return POS_P2P_ERR_DECLINED;
    case POS_CTRL_CODE_TIMEOUT:
        return POS_P2P_ERR_TIMEOUT;
    case POS_CTRL_CODE_PEER_LEFT:
        return POS_P2P_ERR_CIRCUIT_CLOSED;
    case POS_CTRL_CODE_BAD_PEER:
        return POS_P2P_ERR_INVALID_ARGUMENT;
    case POS_CTRL_CODE_CIRCUIT_LIMIT:
        return POS_P2P_ERR_CIRCUIT_LIMIT;
    default:
        return POS_P2P_ERR_REFUSED;
    }
}

static void copy_peer(pos_p2p_relay_event *ev, const pos_ctrl_msg *m)
{
    snprintf(ev->peer_id, sizeof(ev->peer_id), "%s", m->peer_id);
    snprintf(ev->observed, sizeof(ev->observed), "%s", m->observed);
    for (size_t i = 0; i < m->addrs.n && i < POS_P2P_RELAY_MAX_ADDRS; i++)
        snprintf(ev->local[ev->n_local++], POS_P2P_ADDR_STRLEN, "%s", m->addrs.a[i]);
}

int relay_event_from_msg(const pos_ctrl_msg *m, pos_p2p_relay_event *ev)
{
    if (m->type != POS_CTRL_INCOMING && m->type != POS_CTRL_CIRCUIT &&
        m->type != POS_CTRL_REDIRECT && m->type != POS_CTRL_ERROR &&
        m->type != POS_CTRL_CIRCUIT_CLOSED && m->type != POS_CTRL_GOAWAY)
        return -1;
    memset(ev, 0, sizeof(*ev));
    ev->req_id = m->req_id;
    switch (m->type) {
    case POS_CTRL_INCOMING:
        ev->type = POS_P2P_RELAY_EV_INCOMING;
        copy_peer(ev, m);
        break;
    case POS_CTRL_CIRCUIT:
        ev->type = POS_P2P_RELAY_EV_CIRCUIT;
        ev->circuit_id = m->circuit_id;
        copy_peer(ev, m);
        break;
    case POS_CTRL_REDIRECT:
        ev->type = POS_P2P_RELAY_EV_REDIRECT;
        ev->error = POS_P2P_ERR_REDIRECTED;
        snprintf(ev->redirect.id, sizeof(ev->redirect.id), "%s", m->relay_id);
        snprintf(ev->redirect.peer_id, sizeof(ev->redirect.peer_id), "%s", m->peer_id);
        for (size_t k = 0; k < m->addrs.n && k < POS_P2P_RELAY_MAX_ADDRS; k++)
            snprintf(ev->redirect.addrs[ev->redirect.n_addrs++], POS_P2P_ADDR_STRLEN, "%s",
                     m->addrs.a[k]);
        break;
    case POS_CTRL_ERROR:
        ev->type = POS_P2P_RELAY_EV_ERROR;
        ev->code = m->code;
        ev->error = error_of(m->code);
        snprintf(ev->text, sizeof(ev->text), "%s", m->text);
        break;
    case POS_CTRL_CIRCUIT_CLOSED:
        ev->type = POS_P2P_RELAY_EV_CIRCUIT_CLOSED;
        ev->circuit_id = m->circuit_id;
        ev->code = m->code;
        ev->error = POS_P2P_ERR_CIRCUIT_CLOSED;
        break;
    default: /* POS_CTRL_GOAWAY */
        ev->type = POS_P2P_RELAY_EV_GOAWAY;
        ev->code = m->code;
        ev->error = POS_P2P_ERR_GOING_AWAY;
        snprintf(ev->text, sizeof(ev->text), "%s", m->text);
        break;
    }
    return 0;
}

int relay_close_error(const ngtcp2_connection_close_error *cc, int accepted, char *reason,
                      size_t cap)
{
    size_t n = cc->reasonlen < cap - 1 ? cc->reasonlen : cap - 1;
    int err;

    /* The reason phrase comes from the network: keep printable ASCII only. */
    for (size_t i = 0; i < n; i++)
        reason[i] = (cc->reason[i] >= 0x20 && cc->reason[i] < 0x7f) ? (char)cc->reason[i] : '?';
    reason[n] = 0;
    if (cc->type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
        if (cc->error_code == RELAY_GOING_AWAY)
            err = POS_P2P_ERR_GOING_AWAY;
        else if (cc->error_code == RELAY_APP_NO_ERROR)
            err = POS_P2P_ERR_CLOSED;
        else
            err = POS_P2P_ERR_REFUSED;
    } else if (cc->error_code == NGTCP2_CONNECTION_REFUSED) {
        err = POS_P2P_ERR_REFUSED; /* refused before the handshake (rate limit, Redis down) */
    } else {
        err = accepted ? POS_P2P_ERR_CLOSED : POS_P2P_ERR_HANDSHAKE;
        if (!n)
            snprintf(reason, cap, "closed by the relay (QUIC error 0x%llx)",
                     (unsigned long long)cc->error_code);
    }
    if (!n && err == POS_P2P_ERR_REFUSED)
        snprintf(reason, cap, "refused (code 0x%llx)", (unsigned long long)cc->error_code);
    return err;
}

void relay_status_welcome(pos_p2p_relay_status *st, const pos_ctrl_msg *m, double rtt_ms)
{
    snprintf(st->observed, sizeof(st->observed), "%s", m->observed);
    st->rtt_ms = rtt_ms;
    st->bytes_per_sec = m->bytes_per_sec;
    st->burst_bytes = m->burst;
    st->max_conns = m->max_conns;
    st->expires_at = (int64_t)m->expires_at;
    st->idle_timeout_s = m->idle_timeout_s;
    st->state = POS_P2P_RELAY_ACCEPTED;
    st->accepted_at_ms = pos_p2p_now_ms();
}

int64_t relay_attempt_deadline(int64_t now_ms, int64_t connect_deadline_ms, size_t addrs_left)
{
    int64_t share = (connect_deadline_ms - now_ms) / (int64_t)(addrs_left + 1);
    if (share < 1000)
        share = 1000;
    return now_ms + share < connect_deadline_ms ? now_ms + share : connect_deadline_ms;
}

uint64_t relay_keepalive_ns(uint32_t idle_timeout_s)
{
    uint64_t ka = RELAY_KEEPALIVE_NS;
    if (idle_timeout_s > 0 && (uint64_t)idle_timeout_s * NGTCP2_SECONDS / 2 < ka)
        ka = (uint64_t)idle_timeout_s * NGTCP2_SECONDS / 2;
    return ka;
}

int relay_same_addr(const struct sockaddr *a, socklen_t alen, const ngtcp2_addr *b)
{
    if (a->sa_family != b->addr->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b->addr;
        return alen >= sizeof(*x) && x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b->addr;
        return alen >= sizeof(*x) && x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

int relay_id_find(const uint32_t *a, size_t n, uint32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] == v)
            return (int)i;
    return -1;
}

void relay_id_remove(uint32_t *a, size_t *n, int i)
{
    a[i] = a[*n - 1];
    (*n)--;
}

int relay_pick_addr(const pos_p2p_endpoint *ep, const pos_p2p_relay_info *info, size_t from,
                    struct sockaddr_storage *out, int *sock, size_t *index)
{
    for (size_t i = from; i < info->n_addrs && i < POS_P2P_RELAY_MAX_ADDRS; i++) {
        struct sockaddr_storage ss;
        if (pos_addr_parse(info->addrs[i], strnlen(info->addrs[i], POS_P2P_ADDR_STRLEN), 0, &ss) !=
            0)
            continue;
        int s = ss.ss_family == AF_INET ? 0 : 1;
        if (!ep_has_sock(ep, s))
            continue;
        if (out) {
            *out = ss;
            *sock = s;
        }
        *index = i;
        return 0;
    }
    return -1;
}

size_t relay_count_addrs(const pos_p2p_endpoint *ep, const pos_p2p_relay_info *info, size_t from)
{
    size_t n = 0, i;
    while (relay_pick_addr(ep, info, from, NULL, NULL, &i) == 0) {
        n++;
        from = i + 1;
    }
    return n;
}

void relay_quic_settings(ngtcp2_settings *settings, ngtcp2_transport_params *params,
                         uint8_t *creating)
{
    pos_quic_settings_init(settings, creating);
    settings->max_window = 64 * 1024;
    settings->max_stream_window = 16 * 1024;
    /* control messages fit in 1200 bytes: no path MTU probes, which cost the relay 2 datagrams */
    settings->no_pmtud = 1;
    ngtcp2_transport_params_default(params);
    params->initial_max_streams_bidi = 0;
    params->initial_max_streams_uni = 0;
    params->initial_max_stream_data_bidi_local = 16 * 1024;
    params->initial_max_data = 32 * 1024;
    params->max_idle_timeout = 60 * NGTCP2_SECONDS; /* the relay's own is usually shorter */
    params->active_connection_id_limit = 2;
}

uint8_t relay_hello_nat(const pos_p2p_endpoint *ep, int version)
{
    int nat = pos_p2p_endpoint_nat_mapping(ep);
    if (version < POS_CTRL_V3)
        return 0; /* a relay of version 2 refuses the flags */
    return nat == POS_P2P_NAT_VARIES                 ? POS_CTRL_HELLO_NAT_VARIES
           : nat == POS_P2P_NAT_ENDPOINT_INDEPENDENT ? POS_CTRL_HELLO_NAT_EIM
                                                     : 0;
}

void relay_msg_hello(pos_ctrl_msg *m, const pos_p2p_endpoint *ep, const char *token,
                     size_t token_len, uint8_t flags, int version)
{
    memset(m, 0, sizeof(*m));
    m->type = POS_CTRL_HELLO;
    memcpy(m->token, token, token_len);
    m->token_len = token_len;
    m->hello_flags = flags | relay_hello_nat(ep, version);
    relay_local_addrs(ep, &m->addrs); /* candidates for peers behind the same NAT */
}

int relay_negotiated_version(gnutls_session_t tls)
{
    gnutls_datum_t d = {NULL, 0};
    int v;
    if (!tls || gnutls_alpn_get_selected_protocol(tls, &d) != 0)
        return POS_CTRL_V1;
    v = pos_ctrl_version_of_alpn(d.data, d.size);
    return v ? v : POS_CTRL_V1;
}

void relay_liberr_close(ngtcp2_connection_close_error *ccerr, int liberr, ngtcp2_conn *qc)
{
    ngtcp2_connection_close_error_default(ccerr);
    if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            ccerr, ngtcp2_conn_get_tls_alert(qc), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(ccerr, liberr, NULL, 0);
}

int relay_liberr_reason(int liberr, int mismatch, int completed, char *why, size_t cap)
{
    if (mismatch) {
        snprintf(why, cap, "the relay's key is not the peer id in the relay list");
        return POS_P2P_ERR_PEER_MISMATCH;
    }
    if (completed) {
        snprintf(why, cap, "QUIC error: %s", ngtcp2_strerror(liberr));
        return POS_P2P_ERR_PROTOCOL;
    }
    snprintf(why, cap, "handshake failed: %s", ngtcp2_strerror(liberr));
    return POS_P2P_ERR_HANDSHAKE;
}

int relay_tls_new(pos_p2p_endpoint *ep, const uint8_t key[32], gnutls_session_t *tls)
{
    struct relay_tickets *ts = ep_tickets(ep);
    if (pos_tls_session_new_ex(tls, ep_creds(ep), 0, pos_ctrl_alpns, POS_CTRL_N_ALPNS,
                               (unsigned)relay_tickets_enabled(ts)) != 0)
        return -1;
    relay_tickets_offer(ts, key, *tls); /* none: a full handshake */
    return 0;
}

int relay_tls_done(gnutls_session_t tls, pos_tls_pin *pin, uint8_t *version)
{
    int resumed;
    if (pos_tls_handshake_peer(tls, pin, &resumed) != 0)
        return -1;
    *version = (uint8_t)relay_negotiated_version(tls);
    return 0;
}

void relay_drop_tls(pos_p2p_endpoint *ep, ngtcp2_conn *qc, gnutls_session_t *tls,
                    const pos_tls_pin *pin, int connected)
{
    struct relay_tickets *ts = ep_tickets(ep);
    if (!*tls || !ngtcp2_conn_get_handshake_completed(qc) || !pin->has_peer)
        return;
    /* the relay's tickets come right after the handshake, before WELCOME: wait for them */
    if (relay_tickets_keep(ts, pin->expect_key, *tls) != 0 && relay_tickets_enabled(ts) &&
        !connected)
        return;
    /* the TLS session is dead weight now: the keys are in ngtcp2 */
    ngtcp2_conn_set_tls_native_handle(qc, NULL);
    gnutls_deinit(*tls);
    *tls = NULL;
}

void relay_msg_request(pos_ctrl_msg *m, uint8_t type, uint32_t req_id, const char *peer_id,
                       const pos_p2p_endpoint *ep, int version)
{
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->req_id = req_id;
    m->hello_flags = type == POS_CTRL_DECLINE ? 0 : relay_hello_nat(ep, version);
    if (type == POS_CTRL_DECLINE)
        m->code = POS_CTRL_CODE_DECLINED;
    if (peer_id)
        snprintf(m->peer_id, sizeof(m->peer_id), "%s", peer_id);
}

/* local_addr: |sa| (an interface address) with the port of |ep|'s socket of its family, or -1. */
static int local_addr(const pos_p2p_endpoint *ep, const struct sockaddr *sa,
                      struct sockaddr_storage *out)
{
    socklen_t len;
    int sock = sa->sa_family == AF_INET ? 0 : sa->sa_family == AF_INET6 ? 1 : -1;
    if (sock < 0 || !ep_has_sock(ep, sock))
        return -1;
    const struct sockaddr_storage *bound = ep_local(ep, sock, &len);
    memset(out, 0, sizeof(*out));
    if (sock == 0) {
        memcpy(out, sa, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)out)->sin_port = ((const struct sockaddr_in *)bound)->sin_port;
        return 0;
    }
    memcpy(out, sa, sizeof(struct sockaddr_in6));
    if (IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)out)->sin6_addr))
        return -1; /* useless without its scope, which is ours only */
    ((struct sockaddr_in6 *)out)->sin6_port = ((const struct sockaddr_in6 *)bound)->sin6_port;
    ((struct sockaddr_in6 *)out)->sin6_scope_id = 0;
    return 0;
}

void relay_local_addrs(const pos_p2p_endpoint *ep, pos_ctrl_addrs *out)
{
    struct ifaddrs *all;
    out->n = 0;
    if (getifaddrs(&all) != 0)
        return;
    for (struct ifaddrs *i = all; i && out->n < POS_CTRL_MAX_ADDRS; i = i->ifa_next) {
        struct sockaddr_storage ss;
        char text[POS_ADDR_STRLEN];
        int dup = 0;
        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK) ||
            local_addr(ep, i->ifa_addr, &ss) != 0 ||
            pos_addr_format((struct sockaddr *)&ss, text, sizeof(text)) != 0)
            continue;
        for (uint8_t k = 0; k < out->n; k++)
            dup |= !strcmp(out->a[k], text);
        if (!dup)
            snprintf(out->a[out->n++], POS_ADDR_STRLEN, "%s", text);
    }
    freeifaddrs(all);
}

void relay_write_close(pos_p2p_endpoint *ep, ngtcp2_conn *qc, int sock,
                       const ngtcp2_connection_close_error *ccerr)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n;
    if (!qc || ngtcp2_conn_is_in_closing_period(qc) || ngtcp2_conn_is_in_draining_period(qc))
        return;
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(qc, &ps.path, &pi, ep_txbuf(ep), EP_MAX_UDP, ccerr,
                                           pos_quic_now());
    if (n > 0)
        ep_send(ep, sock, ep_txbuf(ep), (size_t)n, (struct sockaddr *)ps.path.remote.addr,
                ps.path.remote.addrlen);
}

int relay_write(pos_p2p_endpoint *ep, ngtcp2_conn *qc, int sock, int64_t s0, struct sendq *out,
                int64_t s1, struct sendq *rq)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = pos_quic_now();
    uint8_t *txbuf = ep_txbuf(ep);

    ngtcp2_path_storage_zero(&ps);
    for (int i = 0; i < 64; i++) {
        ngtcp2_ssize wlen = 0, n;
        ngtcp2_vec v = {NULL, 0};
        const uint8_t *data;
        size_t nv = 0;
        int64_t sid = -1;
        uint32_t wflags = NGTCP2_WRITE_STREAM_FLAG_NONE;
        if (s0 >= 0 && sendq_pending(out, &data, &v.len)) {
            wflags = NGTCP2_WRITE_STREAM_FLAG_FIN; /* HELLO is the whole request */
            sid = s0;
            nv = 1;
        } else if (s1 >= 0 && sendq_pending(rq, &data, &v.len)) {
            sid = s1; /* requests: the stream stays open */
            nv = 1;
        }
        if (nv)
            v.base = (uint8_t *)data; /* ngtcp2 only reads it */
        n = ngtcp2_conn_writev_stream(qc, &ps.path, &pi, txbuf, EP_MAX_UDP, &wlen, wflags, sid, &v,
                                      nv, ts);
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR)
            n = ngtcp2_conn_write_pkt(qc, &ps.path, &pi, txbuf, EP_MAX_UDP, ts);
        if (n < 0)
            return (int)n;
        if (wlen > 0)
            sendq_sent(sid == s0 ? out : rq, (size_t)wlen);
        if (n == 0)
            return 0;
        ep_send(ep, sock, txbuf, (size_t)n, (struct sockaddr *)ps.path.remote.addr,
                ps.path.remote.addrlen);
    }
    return 0;
}

int relay_client_new(ngtcp2_conn **qc, pos_p2p_endpoint *ep, int sock,
                     const struct sockaddr_storage *remote, const ngtcp2_callbacks *cbs,
                     void *user_data, uint8_t *creating, uint8_t scid_out[EP_CID_LEN])
{
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid, scid;
    ngtcp2_path path;
    int rv;

    relay_quic_settings(&settings, &params, creating);
    dcid.datalen = 16;
    randombytes_buf(dcid.data, dcid.datalen);
    scid.datalen = EP_CID_LEN;
    randombytes_buf(scid.data, scid.datalen);
    memcpy(scid_out, scid.data, EP_CID_LEN);
    path.local.addr = (ngtcp2_sockaddr *)ep_local(ep, sock, &path.local.addrlen);
    path.remote.addr = (ngtcp2_sockaddr *)remote;
    path.remote.addrlen = pos_addr_len(remote);
    path.user_data = NULL;
    *creating = 1;
    rv = ngtcp2_conn_client_new(qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, cbs, &settings,
                                &params, NULL, user_data);
    *creating = 0;
    return rv == 0 ? 0 : -1;
}
