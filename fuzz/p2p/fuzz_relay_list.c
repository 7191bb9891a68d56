/*
 * libFuzzer target for the relay-list parser of libpos-p2p
 * (client-lib/src/relay_list.c): any bytes from a discovery API must give an
 * error or a list whose every entry is valid.
 */
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "identity.h"
#include "pos/p2p.h"
#include "uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pos_p2p_relay_list *l = NULL;
    size_t skipped = 0;
    uint8_t key[32];

    if (pos_p2p_relay_list_parse((const char *)data, size, &l, &skipped) != 0)
        return 0;
    for (size_t i = 0; i < pos_p2p_relay_list_count(l); i++) {
        const pos_p2p_relay_info *r = pos_p2p_relay_list_get(l, i);
        if (!pos_uuid_valid(r->id, strlen(r->id)) ||
            pos_peer_id_parse(r->peer_id, strlen(r->peer_id), key) != 0 || r->n_addrs == 0 ||
            r->n_addrs > POS_P2P_RELAY_MAX_ADDRS)
            abort();
        for (size_t k = 0; k < r->n_addrs; k++)
            if (!pos_addr_valid(r->addrs[k], strlen(r->addrs[k])))
                abort();
    }
    pos_p2p_relay_list_del(l);
    return 0;
}
