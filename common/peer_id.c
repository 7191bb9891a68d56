/*
 * libp2p PeerId text of Ed25519 keys (see peer_id.h): base58btc of a fixed
 * 38-byte layout. Base58 is done by schoolbook arithmetic on fixed-size
 * buffers; inputs are bounded by their exact expected length first.
 */
#include "peer_id.h"

#include <string.h>

#include "identity.h"

enum { PEER_ID_BYTES = 38, PREFIX_LEN = 6 };

/* identity multihash (0x00), 36 bytes, then protobuf field 1 = 1 (Ed25519), field 2 = 32 bytes */
static const uint8_t prefix[PREFIX_LEN] = {0x00, 0x24, 0x08, 0x01, 0x12, 0x20};

static const char alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/* Value of a base58btc character, or -1. */
static int b58_value(char c)
{
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

/*
 * b58_encode writes |n| bytes as base58btc into |out| (room for |cap| bytes
 * and a NUL). Returns the length, or -1 when it does not fit.
 */
static int b58_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    uint8_t digits[64] = {0}; /* little-endian base-58 digits */
    size_t ndigits = 0, zeros = 0;

    while (zeros < n && in[zeros] == 0)
        zeros++;
    for (size_t i = zeros; i < n; i++) {
        unsigned carry = in[i];
        for (size_t j = 0; j < ndigits; j++) {
            carry += (unsigned)digits[j] << 8;
            digits[j] = (uint8_t)(carry % 58);
            carry /= 58;
        }
        while (carry) {
            if (ndigits == sizeof(digits))
                return -1;
            digits[ndigits++] = (uint8_t)(carry % 58);
            carry /= 58;
        }
    }
    if (zeros + ndigits > cap)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < zeros; i++)
        out[k++] = '1';
    for (size_t j = ndigits; j > 0; j--)
        out[k++] = alphabet[digits[j - 1]];
    out[k] = '\0';
    return (int)k;
}

void pos_libp2p_peer_id_format(const uint8_t public_key[32], char out[POS_LIBP2P_PEER_ID_STRLEN])
{
    uint8_t raw[PEER_ID_BYTES];
    memcpy(raw, prefix, PREFIX_LEN);
    memcpy(raw + PREFIX_LEN, public_key, 32);
    /* Every key gives 52 characters: the prefix pins the number's magnitude. */
    (void)b58_encode(raw, sizeof(raw), out, POS_LIBP2P_PEER_ID_LEN);
}

int pos_libp2p_peer_id_parse(const char *s, size_t len, uint8_t public_key[32])
{
    uint8_t raw[PEER_ID_BYTES] = {0};
    char again[POS_LIBP2P_PEER_ID_STRLEN];

    if (!s || len != POS_LIBP2P_PEER_ID_LEN)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b58_value(s[i]);
        if (v < 0)
            return -1;
        unsigned carry = (unsigned)v;
        for (size_t j = PEER_ID_BYTES; j > 0; j--) {
            carry += (unsigned)raw[j - 1] * 58;
            raw[j - 1] = (uint8_t)(carry & 0xff);
            carry >>= 8;
        }
        if (carry) /* more than 38 bytes */
            return -1;
    }
    if (memcmp(raw, prefix, PREFIX_LEN) != 0)
        return -1;
    /* Canonical text only: extra or missing leading '1's give another string. */
    if (b58_encode(raw, sizeof(raw), again, POS_LIBP2P_PEER_ID_LEN) != POS_LIBP2P_PEER_ID_LEN ||
        memcmp(again, s, POS_LIBP2P_PEER_ID_LEN) != 0)
        return -1;
    memcpy(public_key, raw + PREFIX_LEN, 32);
    return 0;
}

int pos_peer_id_parse_any(const char *s, size_t len, uint8_t public_key[32])
{
    if (len == POS_PEER_ID_LEN)
        return pos_peer_id_parse(s, len, public_key) == 0 ? POS_PEER_ID_FORM_BASE64 : -1;
    if (len == POS_LIBP2P_PEER_ID_LEN)
        return pos_libp2p_peer_id_parse(s, len, public_key) == 0 ? POS_PEER_ID_FORM_LIBP2P : -1;
    return -1;
}
