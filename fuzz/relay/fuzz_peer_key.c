/*
 * libFuzzer target for the peer-key checks of common/tls.c, which read what
 * a peer sent in its TLS Certificate message: a raw public key (the DER
 * SubjectPublicKeyInfo) or an X.509 certificate. A key is accepted only from
 * exactly the 44 bytes of an Ed25519 SubjectPublicKeyInfo, and then it is
 * its last 32 bytes; a certificate accepted gives an Ed25519 key. Neither
 * check may crash or read past the input whatever the bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t key[32];

    if (pos_tls_check_peer_rawpk(data, size, key) == 0) {
        if (size != 44 || memcmp(key, data + 12, 32) != 0)
            abort();
    }
    pos_tls_check_peer_cert(data, size, key);
    return 0;
}
