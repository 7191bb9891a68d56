/*
 * Contact cards for contacts-only discovery (pos/p2p.h):
 * "pos-contact:1:<peer id>:<presence key>". Where the cards are kept is the
 * application's business (pos-p2p keeps them in client-lib/cli/contacts.c).
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "identity.h"
#include "pos/mdns.h"

#define B64 sodium_base64_VARIANT_ORIGINAL_NO_PADDING
#define CARD_PREFIX "pos-contact:1:"

int pos_mdns_card_parse(const char *card, char peer_id[44], uint8_t key[32])
{
    uint8_t pk[32];
    size_t pl = strlen(CARD_PREFIX), bl;
    if (!card || strncmp(card, CARD_PREFIX, pl))
        return POS_P2P_ERR_MDNS_CARD;
    const char *p = card + pl;
    if (strlen(p) != 43 + 1 + 43 || p[43] != ':' || pos_peer_id_parse(p, 43, pk))
        return POS_P2P_ERR_MDNS_CARD;
    if (sodium_base642bin(key, 32, p + 44, 43, NULL, &bl, NULL, B64) || bl != 32)
        return POS_P2P_ERR_MDNS_CARD;
    memcpy(peer_id, p, 43);
    peer_id[43] = 0;
    return 0;
}

void pos_mdns_card_format(const char *peer_id, const uint8_t key[32], char *out, size_t cap)
{
    char kb[sodium_base64_ENCODED_LEN(32, B64)];
    sodium_bin2base64(kb, sizeof(kb), key, 32, B64);
    snprintf(out, cap, CARD_PREFIX "%s:%s", peer_id, kb);
    sodium_memzero(kb, sizeof(kb));
}
