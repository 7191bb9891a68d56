/*
 * libFuzzer target for the peer id parsers (common/peer_id.c, identity.c):
 * the base64 form and the libp2p PeerId form that relay entries carry, both
 * network input (POST bodies, relay lists). Besides "no crash, no undefined
 * behaviour", it checks canonicity: an accepted text is exactly what the
 * formatter writes for the key it gave, so no key has two accepted texts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "peer_id.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t key[32];
    char again[POS_LIBP2P_PEER_ID_STRLEN];
    const char *s = (const char *)data;

    int form = pos_peer_id_parse_any(s, size, key);
    if (form == POS_PEER_ID_FORM_LIBP2P) {
        pos_libp2p_peer_id_format(key, again);
        if (size != POS_LIBP2P_PEER_ID_LEN || memcmp(again, s, size) != 0)
            abort();
    } else if (form == POS_PEER_ID_FORM_BASE64) {
        pos_peer_id_format(key, again);
        if (size != POS_PEER_ID_LEN || memcmp(again, s, size) != 0)
            abort();
    } else if (form != -1) {
        abort();
    }
    return 0;
}
