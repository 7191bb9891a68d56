/*
 * Punch cookies and the start delay (see punch.h). The cookie input is
 * encoded through the bounded writer, so its layout is written down once.
 */
#include "punch.h"

#include <sodium.h>

#include "writer.h"

/* type (1) | circuit id (4) | sender role (1) | attempt (2) */
#define COOKIE_INPUT_LEN 8

/* The 8 cookie bytes, as they appear on the wire (big endian). */
static void cookie_bytes(const uint8_t key[POS_PUNCH_KEY_LEN], uint8_t type, uint32_t circuit_id,
                         uint8_t sender_role, uint16_t attempt, uint8_t out[8])
{
    uint8_t in[COOKIE_INPUT_LEN], hash[crypto_generichash_BYTES_MIN];
    struct pos_writer w;

    pos_writer_init(&w, in, sizeof(in));
    pos_writer_u8(&w, type);
    pos_writer_u32(&w, circuit_id);
    pos_writer_u8(&w, sender_role);
    pos_writer_u16(&w, attempt);
    /* BLAKE2b's shortest output is 16 bytes (crypto_generichash_BYTES_MIN): truncate */
    crypto_generichash(hash, sizeof(hash), in, sizeof(in), key, POS_PUNCH_KEY_LEN);
    for (int i = 0; i < 8; i++)
        out[i] = hash[i];
    sodium_memzero(hash, sizeof(hash));
}

uint64_t pos_punch_cookie(const uint8_t key[POS_PUNCH_KEY_LEN], uint8_t type, uint32_t circuit_id,
                          uint8_t sender_role, uint16_t attempt)
{
    uint8_t b[8];
    uint64_t v = 0;

    cookie_bytes(key, type, circuit_id, sender_role, attempt, b);
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

int pos_punch_cookie_ok(const uint8_t key[POS_PUNCH_KEY_LEN], uint8_t type, uint32_t circuit_id,
                        uint8_t sender_role, uint16_t attempt, uint64_t cookie)
{
    uint8_t want[8], got[8];

    cookie_bytes(key, type, circuit_id, sender_role, attempt, want);
    for (int i = 0; i < 8; i++)
        got[i] = (uint8_t)(cookie >> (56 - 8 * i));
    return sodium_memcmp(want, got, sizeof(want)) == 0;
}

uint32_t pos_punch_start_in_ms(uint32_t rtt_self_ms, uint32_t rtt_other_ms)
{
    uint32_t wait;

    if (rtt_other_ms <= rtt_self_ms)
        return 0;
    wait = (rtt_other_ms - rtt_self_ms) / 2 + (rtt_other_ms - rtt_self_ms) % 2;
    return wait > POS_PUNCH_MAX_START_IN_MS ? POS_PUNCH_MAX_START_IN_MS : wait;
}
