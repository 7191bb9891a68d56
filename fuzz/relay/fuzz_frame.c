/*
 * libFuzzer target for the relay data-frame decoder (common/frame.c): any
 * input must decode or be refused without a crash, and every frame that
 * decodes must re-encode to exactly the same bytes (one encoding per frame).
 */
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pos_frame f;
    uint8_t out[POS_FRAME_MAX_LEN];
    if (pos_frame_decode(data, size, &f) != 0)
        return 0;
    int n;
    if (f.type == POS_FRAME_DATA)
        n = pos_frame_encode_data(out, sizeof out, f.circuit_id, f.payload, f.payload_len);
    else
        n = pos_frame_encode_probe(out, sizeof out, f.type, f.circuit_id, f.cookie);
    if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0)
        abort();
    return 0;
}
