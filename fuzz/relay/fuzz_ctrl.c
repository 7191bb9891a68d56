/*
 * libFuzzer target for the control-message codec (common/ctrl.c): decode
 * arbitrary bytes as a stream of messages through the bounded reader; every
 * message that decodes must re-encode to exactly the bytes it came from.
 */
#include <stdlib.h>
#include <string.h>

#include "ctrl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pos_ctrl_msg m;
    pos_ctrl_reader r = {0};
    uint8_t out[POS_CTRL_MAX_MSG];
    size_t off = 0, used;

    /* whole-buffer decoding, message after message */
    while (off < size) {
        int rv = pos_ctrl_decode(data + off, size - off, &m, &used);
        if (rv != 1)
            break;
        int n = pos_ctrl_encode(&m, out, sizeof(out));
        if (n < 0 || (size_t)n != used || memcmp(out, data + off, used) != 0)
            abort();
        off += used;
    }
    /* the same bytes fed in uneven pieces through the reader */
    off = 0;
    for (size_t piece = 1; off < size; piece = piece % 7 + 1) {
        size_t n = size - off < piece ? size - off : piece;
        if (pos_ctrl_reader_feed(&r, data + off, n) != 0)
            break;
        off += n;
        int rv;
        while ((rv = pos_ctrl_reader_next(&r, &m)) == 1)
            ;
        if (rv < 0)
            break;
    }
    pos_ctrl_reader_wipe(&r);
    return 0;
}
