/*
 * libFuzzer target for the parked datagrams (common/park.c): any input must
 * decode or be refused without a crash; one that decodes must re-encode to
 * exactly its own bytes when its mac verifies (one encoding per datagram),
 * and a datagram whose mac verifies under the fuzzer's fixed key must be one
 * the encoder wrote (the fuzzer cannot forge one).
 */
#include <stdlib.h>
#include <string.h>

#include "park.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t key[POS_PARK_KEY_LEN] = {7, 1, 2,  3,  4,  5,  6,  7,
                                                  8, 9, 10, 11, 12, 13, 14, 15};
    uint8_t out[POS_PARK_LEN];
    pos_park_msg m;

    int rv = pos_park_decode(data, size, &m);
    if (rv != 0) {
        if (rv != POS_PARK_ERR_NOT_PARK && rv != POS_PARK_ERR_MALFORMED)
            abort();
        return 0;
    }
    if (size != POS_PARK_LEN || m.record_id == 0 || !pos_park_is_park(&m.type, 1))
        abort();
    /* re-encoding what decoded gives the same header; with the mac of |key| */
    if (pos_park_encode(out, sizeof(out), m.type, m.record_id, m.counter, key) != POS_PARK_LEN ||
        memcmp(out, data, POS_PARK_LEN - POS_PARK_MAC_LEN) != 0)
        abort();
    if (pos_park_verify(&m, key) == 0 && memcmp(out, data, POS_PARK_LEN) != 0)
        abort();
    return 0;
}
