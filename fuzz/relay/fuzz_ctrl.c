/*
 * libFuzzer target for the control-message codec (common/ctrl.c): decode
 * arbitrary bytes as a stream of messages at each protocol version, whole
 * and through the bounded reader in uneven pieces; every message that
 * decodes must re-encode at its version to exactly the bytes it came from,
 * and a message of version 1 must be the same message in version 2 (v2 only
 * adds types); a message of version 3 is the same in version 2 unless it
 * carries the NAT mapping (HELLO's NAT flags, the last byte of CONNECT and
 * ACCEPT, every PUNCH_START), which version 2 refuses; a message of version
 * 4 is the same in version 3 unless it is PARK or PARKED, which version 3 refuses.
 */
#include <stdlib.h>
#include <string.h>

#include "ctrl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_stream(const uint8_t *data, size_t size, int version)
{
    pos_ctrl_msg m, m2;
    uint8_t out[POS_CTRL_MAX_MSG];
    size_t off = 0, used, used2;

    while (off < size) {
        int rv = pos_ctrl_decode_version(data + off, size - off, version, &m, &used);
        if (rv != 1)
            break;
        int n = pos_ctrl_encode_version(&m, version, out, sizeof(out));
        if (n < 0 || (size_t)n != used || memcmp(out, data + off, used) != 0)
            abort();
        if (version == POS_CTRL_V1) {
            if (pos_ctrl_decode_version(data + off, size - off, POS_CTRL_V2, &m2, &used2) != 1 ||
                used2 != used || memcmp(&m, &m2, sizeof(m)) != 0)
                abort();
        } else if (version == POS_CTRL_V3) {
            int nat = m.type == POS_CTRL_PUNCH_START ||
                      (m.hello_flags & (POS_CTRL_HELLO_NAT_EIM | POS_CTRL_HELLO_NAT_VARIES));
            int rv2 = pos_ctrl_decode_version(data + off, size - off, POS_CTRL_V2, &m2, &used2);
            if (nat ? rv2 != POS_CTRL_ERR_MALFORMED
                    : rv2 != 1 || used2 != used || memcmp(&m, &m2, sizeof(m)) != 0)
                abort();
        } else if (version == POS_CTRL_V4) {
            /* version 4 adds PARK and PARKED; everything else reads as at version 3 */
            int park = m.type > POS_CTRL_LAST_V3;
            int rv3 = pos_ctrl_decode_version(data + off, size - off, POS_CTRL_V3, &m2, &used2);
            if (park ? rv3 != POS_CTRL_ERR_MALFORMED
                     : rv3 != 1 || used2 != used || memcmp(&m, &m2, sizeof(m)) != 0)
                abort();
        } else if (m.type > POS_CTRL_LAST_V1) {
            /* a version 2 message: version 1 refuses it both ways */
            if (pos_ctrl_decode(data + off, size - off, &m2, &used2) != POS_CTRL_ERR_MALFORMED ||
                pos_ctrl_encode(&m, out, sizeof(out)) != POS_CTRL_ERR_INVALID)
                abort();
        }
        off += used;
    }
    pos_ctrl_msg_wipe(&m);
}

static void read_pieces(const uint8_t *data, size_t size, int version)
{
    pos_ctrl_msg m;
    pos_ctrl_reader r = {0};
    size_t off = 0;

    for (size_t piece = 1; off < size; piece = piece % 7 + 1) {
        size_t n = size - off < piece ? size - off : piece;
        if (pos_ctrl_reader_feed(&r, data + off, n) != 0)
            break;
        off += n;
        int rv;
        while ((rv = pos_ctrl_reader_next_version(&r, version, &m)) == 1)
            ;
        if (rv < 0)
            break;
    }
    pos_ctrl_reader_wipe(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_stream(data, size, POS_CTRL_V1);
    decode_stream(data, size, POS_CTRL_V2);
    decode_stream(data, size, POS_CTRL_V3);
    decode_stream(data, size, POS_CTRL_V4);
    read_pieces(data, size, POS_CTRL_V1);
    read_pieces(data, size, POS_CTRL_V2);
    read_pieces(data, size, POS_CTRL_V3);
    read_pieces(data, size, POS_CTRL_V4);
    return 0;
}
