/*
 * Forwarding of relay data frames (see forward.h). One pass over the batch;
 * per frame: decode the 5-byte header through frame.c's bounded cursor, one
 * table lookup, one 18-byte address compare, a budget spend, a 4-byte
 * rewrite in place and an output entry pointing at the same buffer.
 */
#include "forward.h"

#include "park.h"

#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "park.h"

relay_forwarder *relay_forwarder_new(relay_circuits *circuits, unsigned batch_max,
                                     relay_lease_cb lease, void *lease_arg)
{
    if (circuits == NULL || batch_max == 0 || batch_max > RELAY_FORWARD_MAX_BATCH)
        return NULL;
    relay_forwarder *fw = calloc(1, sizeof *fw);
    if (fw == NULL)
        return NULL;
    fw->circuits = circuits;
    fw->lease = lease;
    fw->lease_arg = lease_arg;
    fw->batch_max = batch_max;
    fw->iov = calloc(batch_max, sizeof *fw->iov);
    fw->names = calloc(batch_max, sizeof *fw->names);
    fw->groups = calloc(batch_max, sizeof *fw->groups);
    if (fw->iov == NULL || fw->names == NULL || fw->groups == NULL) {
        relay_forwarder_del(fw);
        return NULL;
    }
    return fw;
}

void relay_forwarder_del(relay_forwarder *fw)
{
    if (fw == NULL)
        return;
    free(fw->iov);
    free(fw->names);
    free(fw->groups);
    free(fw);
}

void relay_forwarder_set_gso(relay_forwarder *fw, unsigned max_segments)
{
    fw->gso_max = max_segments > RELAY_FORWARD_GSO_MAX_SEGMENTS ? RELAY_FORWARD_GSO_MAX_SEGMENTS
                                                                : max_segments;
}

void relay_forwarder_set_quic_fallback(relay_forwarder *fw, int on)
{
    fw->quic_fallback = on ? 1 : 0;
}

void relay_forwarder_set_park(relay_forwarder *fw, relay_park_cb park, void *arg)
{
    fw->park = park;
    fw->park_arg = arg;
}

static int is_v4_mapped(const relay_addr *a)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a->ip, prefix, sizeof prefix) == 0;
}

/* Writes |a| as a name for a socket of |family| into |ss|; returns its length or 0. */
static socklen_t make_name(const relay_addr *a, int family, struct sockaddr_in6 *ss)
{
    if (family == AF_INET6) {
        memset(ss, 0, sizeof *ss);
        ss->sin6_family = AF_INET6;
        ss->sin6_port = a->port;
        memcpy(&ss->sin6_addr, a->ip, 16);
        return sizeof *ss;
    }
    if (!is_v4_mapped(a))
        return 0;
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    memset(in, 0, sizeof *in);
    in->sin_family = AF_INET;
    in->sin_port = a->port;
    memcpy(&in->sin_addr, a->ip + 12, 4);
    return sizeof *in;
}

static int from_owner(const relay_side *s, const struct msghdr *h)
{
    relay_addr src;
    const struct sockaddr *sa = h->msg_name;
    if (sa == NULL || h->msg_namelen < sizeof(struct sockaddr_in) ||
        (sa->sa_family == AF_INET6 && h->msg_namelen < sizeof(struct sockaddr_in6)))
        return 0;
    if (relay_addr_from_sockaddr(&src, sa) != 0)
        return 0;
    return memcmp(&src, &s->addr, sizeof src) == 0;
}

/* ask_lease: the first caller since the last grant asks for the next lease. */
static void ask_lease(relay_forwarder *fw, relay_budget *b)
{
    if (fw->lease && !__atomic_exchange_n(&b->lease_pending, 1, __ATOMIC_ACQ_REL))
        fw->lease(fw->lease_arg, b);
}

/*
 * Pays |len| bytes from |b|; 0 when the budget cannot pay (the packet is
 * dropped). Atomic: one token's budget may be spent by several workers at
 * once (relay/workers.h).
 */
static int budget_spend(relay_forwarder *fw, relay_budget *b, size_t len)
{
    if (b == NULL)
        return 1;
    if (!b->unlimited) {
        if (__atomic_load_n(&b->available, __ATOMIC_RELAXED) < (int64_t)len) {
            __atomic_fetch_add(&b->dropped, 1, __ATOMIC_RELAXED);
            ask_lease(fw, b);
            return 0;
        }
        int64_t left = __atomic_sub_fetch(&b->available, (int64_t)len, __ATOMIC_RELAXED);
        if (left < b->low_water && !__atomic_load_n(&b->lease_pending, __ATOMIC_RELAXED))
            ask_lease(fw, b);
    }
    __atomic_fetch_add(&b->spent, len, __ATOMIC_RELAXED);
    return 1;
}

/*
 * note_circuit copies the counters of circuit |s0| (its side 0) into its
 * stats.recent entry. The table is 2-way set associative: the circuit's
 * index picks a pair, and a circuit not in it replaces the pair's less
 * recently active entry. relay_forward_batch calls it once per run of
 * frames of one circuit (a bulk transfer: once per batch), after the run.
 */
static void note_circuit(relay_forwarder *fw, const relay_side *s0)
{
    relay_forward_stats *st = &fw->stats;
    uint32_t circuit = (uint32_t)(s0 - fw->circuits->sides) >> 1;
    const relay_side *s1 = s0 + 1;
    relay_forward_circuit *pair = &st->recent[2 * (circuit % (RELAY_FORWARD_RECENT / 2))];
    relay_forward_circuit *e = pair;
    if (pair[0].id[0] != s0->id || pair[0].id[1] != s1->id) {
        e = &pair[1];
        if (pair[1].id[0] != s0->id || pair[1].id[1] != s1->id) {
            e = pair[0].last_batch <= pair[1].last_batch ? &pair[0] : &pair[1];
            e->id[0] = s0->id;
            e->id[1] = s1->id;
        }
    }
    e->packets[0] = s0->stats.rx_packets;
    e->packets[1] = s1->stats.rx_packets;
    e->bytes[0] = s0->stats.rx_bytes;
    e->bytes[1] = s1->stats.rx_bytes;
    e->last_batch = st->batches;
}

/*
 * Checks one frame and rewrites it in place. Returns the length of the
 * destination name written to |name| (for a socket of |family|), or 0 when
 * the frame is dropped (and counted). A forwarded DATA frame sets |*circuit|
 * to its circuit's side 0.
 */
static socklen_t route_frame(relay_forwarder *fw, const struct msghdr *h, uint8_t *buf, size_t len,
                             int family, struct sockaddr_in6 *name, int *maybe_quic,
                             const relay_side **circuit)
{
    relay_forward_stats *st = &fw->stats;
    pos_frame f;
    int rc = pos_frame_decode(buf, len, &f);
    uint64_t *fail = NULL;
    relay_side *s = NULL;
    if (rc != 0)
        fail = rc == POS_FRAME_ERR_UNKNOWN_TYPE ? &st->drop_unknown_type : &st->drop_malformed;
    else if ((s = relay_circuit_find(fw->circuits, f.circuit_id)) == NULL)
        fail = &st->drop_unknown_circuit;
    else if (!from_owner(s, h))
        fail = &st->drop_wrong_source;
    if (fail) {
        /* Not a frame of ours: maybe a greased QUIC packet (see set_quic_fallback). */
        if (fw->quic_fallback)
            *maybe_quic = 1;
        else
            (*fail)++;
        return 0;
    }
    if (f.type != POS_FRAME_DATA && f.type != POS_FRAME_KEEPALIVE) {
        st->drop_unexpected_type++;
        return 0;
    }
    relay_side *dst = f.type == POS_FRAME_DATA ? relay_circuit_peer(fw->circuits, s) : s;
    socklen_t namelen = make_name(&dst->addr, family, name);
    if (namelen == 0) {
        st->drop_unroutable++;
        return 0;
    }
    if (f.type == POS_FRAME_KEEPALIVE) {
        buf[0] = POS_FRAME_KEEPALIVE_ACK; /* same circuit id, same cookie, back to the sender */
        st->keepalives++;
        return namelen;
    }
    if (!budget_spend(fw, s->budget, len)) {
        s->stats.dropped_budget++;
        st->drop_budget++;
        return 0;
    }
    pos_frame_set_circuit(buf, dst->id);
    s->stats.rx_packets++;
    s->stats.rx_bytes += len;
    dst->stats.tx_packets++;
    dst->stats.tx_bytes += len;
    st->forwarded++;
    st->forwarded_bytes += len;
    *circuit = &fw->circuits->sides[(uint32_t)(s - fw->circuits->sides) & ~1u];
    return namelen;
}

/*
 * Appends a datagram of |len| bytes at |buf|, whose destination name
 * (|namelen| bytes) is already in fw->names[*n_out], to the last output
 * message when GSO can carry it there; otherwise starts a new message.
 */
static void add_output(relay_forwarder *fw, struct mmsghdr *out, unsigned *n_out, unsigned *n_iov,
                       uint8_t *buf, size_t len, socklen_t namelen)
{
    fw->iov[*n_iov].iov_base = buf;
    fw->iov[*n_iov].iov_len = len;
    if (fw->gso_max > 1 && *n_out > 0) {
        unsigned k = *n_out - 1;
        struct relay_gso_group *g = &fw->groups[k];
        struct msghdr *o = &out[k].msg_hdr;
        if (!g->closed && len <= g->seg_size && g->segs < fw->gso_max &&
            g->bytes + len <= RELAY_FORWARD_GSO_MAX_BYTES && o->msg_namelen == namelen &&
            memcmp(o->msg_name, &fw->names[*n_out], namelen) == 0) {
            if (g->segs == 1) { /* becomes a GSO message: say the segment size */
                o->msg_control = g->cmsg.buf;
                o->msg_controllen = sizeof g->cmsg.buf;
                struct cmsghdr *cm = CMSG_FIRSTHDR(o);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = (uint16_t)g->seg_size;
                memcpy(CMSG_DATA(cm), &seg, sizeof seg);
            }
            g->segs++;
            g->bytes += (uint32_t)len;
            g->closed = len < g->seg_size; /* only the last segment may be shorter */
            o->msg_iovlen++;
            (*n_iov)++;
            return;
        }
    }
    struct msghdr *o = &out[*n_out].msg_hdr;
    memset(o, 0, sizeof *o);
    o->msg_name = &fw->names[*n_out];
    o->msg_namelen = namelen;
    o->msg_iov = &fw->iov[*n_iov];
    o->msg_iovlen = 1;
    out[*n_out].msg_len = 0;
    struct relay_gso_group *g = &fw->groups[*n_out];
    g->seg_size = (uint32_t)len;
    g->segs = 1;
    g->bytes = (uint32_t)len;
    g->closed = len > RELAY_FORWARD_GSO_MAX_SEGMENT;
    (*n_out)++;
    (*n_iov)++;
}

/* park_answer: the name to send |h|'s parked datagram's answer back to, or 0 (dropped). */
static socklen_t park_answer(relay_forwarder *fw, const struct msghdr *h, uint8_t *buf, size_t len,
                             int family, struct sockaddr_in6 *name)
{
    relay_addr src;
    const struct sockaddr *sa = h->msg_name;
    if (sa == NULL || h->msg_namelen < sizeof(struct sockaddr_in) ||
        relay_addr_from_sockaddr(&src, sa) != 0 || !fw->park(fw->park_arg, buf, len, sa))
        return 0;
    return make_name(&src, family, name);
}

int relay_forward_batch(relay_forwarder *fw, struct mmsghdr *in, unsigned n_in, int sock_family,
                        struct mmsghdr *out, unsigned *quic_idx, unsigned *n_quic)
{
    unsigned n_out = 0, n_iov = 0;
    const relay_side *run = NULL; /* the circuit of the frames forwarded last */
    *n_quic = 0;
    if (n_in > fw->batch_max || (sock_family != AF_INET && sock_family != AF_INET6))
        return RELAY_CIRCUIT_ERR_INVALID;
    fw->stats.batches++;
    for (unsigned i = 0; i < n_in; i++) {
        struct msghdr *h = &in[i].msg_hdr;
        if (h->msg_iovlen < 1 || h->msg_iov == NULL) {
            fw->stats.drop_malformed++;
            continue;
        }
        uint8_t *buf = h->msg_iov[0].iov_base;
        size_t len = in[i].msg_len;
        if (len > h->msg_iov[0].iov_len || (h->msg_flags & MSG_TRUNC)) {
            fw->stats.drop_truncated++;
            continue;
        }
        if (fw->park && pos_park_is_park(buf, len)) {
            /* a parked client's keep-alive: checked here, its ack joins the output */
            socklen_t namelen = park_answer(fw, h, buf, len, sock_family, &fw->names[n_out]);
            fw->stats.parked++;
            if (namelen != 0)
                add_output(fw, out, &n_out, &n_iov, buf, len, namelen);
            continue;
        }
        if (!pos_frame_is_frame(buf, len) || pos_park_is_park(buf, len)) {
            /* QUIC, or a parked client's datagram: the control path's (server_park.c) */
            quic_idx[(*n_quic)++] = i;
            fw->stats.quic++;
            continue;
        }
        int maybe_quic = 0;
        const relay_side *circuit = NULL;
        socklen_t namelen =
            route_frame(fw, h, buf, len, sock_family, &fw->names[n_out], &maybe_quic, &circuit);
        if (circuit != run) {
            if (run && circuit)
                note_circuit(fw, run);
            if (circuit)
                run = circuit;
        }
        if (namelen != 0) {
            add_output(fw, out, &n_out, &n_iov, buf, len, namelen);
        } else if (maybe_quic) {
            quic_idx[(*n_quic)++] = i;
            fw->stats.quic_fallback++;
        }
    }
    if (run)
        note_circuit(fw, run);
    return (int)n_out;
}
