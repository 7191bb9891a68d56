/*
 * libFuzzer target for the relay data plane: the frame decoder
 * (common/frame.c) and the forwarding path (relay/forward.c) over a small
 * circuit table. Any input must decode or be refused without a crash; every
 * frame that decodes must re-encode to exactly the same bytes (one encoding
 * per frame); the forwarder must count every datagram exactly once and only
 * ever send it whole, from and to known sides. The sources are compiled into
 * this target so that libFuzzer sees their coverage.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "circuit.h"
#include "forward.h"
#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static relay_circuits *table;
static relay_forwarder *fw;
static relay_circuit_owner owners[4];
static struct sockaddr_in side_addr[3];

static void setup(void)
{
    uint32_t ids[2];
    table = relay_circuits_new(4, 1);
    fw = relay_forwarder_new(table, 4, NULL, NULL);
    if (table == NULL || fw == NULL)
        abort();
    for (int i = 0; i < 3; i++) {
        side_addr[i].sin_family = AF_INET;
        side_addr[i].sin_port = htons((uint16_t)(1000 + i));
        side_addr[i].sin_addr.s_addr = htonl(0x7f000001);
    }
    /* Circuit A-B and circuit C-A; C's side owned by a different owner at address 2. */
    if (relay_circuit_open(table, &owners[0], (struct sockaddr *)&side_addr[0], NULL, &owners[1],
                           (struct sockaddr *)&side_addr[1], NULL, 0, ids) != 0 ||
        relay_circuit_open(table, &owners[2], (struct sockaddr *)&side_addr[2], NULL, &owners[3],
                           (struct sockaddr *)&side_addr[0], NULL, 0, ids) != 0)
        abort();
    relay_forwarder_set_gso(fw, 64);
}

static uint64_t total(const relay_forward_stats *s)
{
    return s->quic + s->quic_fallback + s->forwarded + s->keepalives + s->drop_truncated +
           s->drop_malformed + s->drop_unknown_type + s->drop_unexpected_type +
           s->drop_unknown_circuit + s->drop_wrong_source + s->drop_budget + s->drop_unroutable;
}

static void check_codec(const uint8_t *data, size_t size)
{
    pos_frame f;
    uint8_t out[POS_FRAME_MAX_LEN];
    if (pos_frame_decode(data, size, &f) != 0)
        return;
    int n;
    if (f.type == POS_FRAME_DATA)
        n = pos_frame_encode_data(out, sizeof out, f.circuit_id, f.payload, f.payload_len);
    else
        n = pos_frame_encode_probe(out, sizeof out, f.type, f.circuit_id, f.cookie);
    if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0)
        abort();
}

/* The input as datagrams from the three addresses (the first byte picks the sender). */
static void check_forward(const uint8_t *data, size_t size)
{
    static uint8_t bufs[4][2048];
    struct sockaddr_in src[4];
    struct iovec iov[4];
    struct mmsghdr in[4], out[4];
    unsigned quic[4], n_quic, n = 0;
    size_t half = size / 2;
    const uint8_t *parts[2] = {data + (size ? 1 : 0), data + half};
    size_t lens[2] = {half > 0 ? half - 1 : 0, size - half};
    for (int k = 0; k < 2; k++) {
        size_t len = lens[k] < sizeof bufs[n] ? lens[k] : sizeof bufs[n];
        memcpy(bufs[n], parts[k], len);
        src[n] = side_addr[size ? data[0] % 3 : 0];
        iov[n].iov_base = bufs[n];
        iov[n].iov_len = sizeof bufs[n];
        memset(&in[n], 0, sizeof in[n]);
        in[n].msg_hdr.msg_name = &src[n];
        in[n].msg_hdr.msg_namelen = sizeof src[n];
        in[n].msg_hdr.msg_iov = &iov[n];
        in[n].msg_hdr.msg_iovlen = 1;
        in[n].msg_len = (unsigned)len;
        n++;
    }
    relay_forwarder_set_quic_fallback(fw, size > 0 && (data[size - 1] & 1));
    uint64_t before = total(&fw->stats);
    int m = relay_forward_batch(fw, in, n, AF_INET6, out, quic, &n_quic);
    if (m < 0 || (unsigned)m > n || total(&fw->stats) - before != n)
        abort();
    unsigned segs = 0;
    for (int k = 0; k < m; k++) {
        for (size_t j = 0; j < out[k].msg_hdr.msg_iovlen; j++) {
            const struct iovec *v = &out[k].msg_hdr.msg_iov[j];
            pos_frame f;
            if (pos_frame_decode(v->iov_base, v->iov_len, &f) != 0 ||
                relay_circuit_find(table, f.circuit_id) == NULL)
                abort();
            segs++;
        }
    }
    if (segs + n_quic > n)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (table == NULL)
        setup();
    check_codec(data, size);
    check_forward(data, size);
    return 0;
}
