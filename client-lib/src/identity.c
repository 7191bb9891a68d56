/* The device identity of libpos-p2p: a thin wrapper over common/identity. */
#include <stdio.h>
#include <stdlib.h>

#include "identity.h"
#include "internal.h"
#include "pos/p2p.h"

struct pos_p2p_identity {
    pos_identity key;
};

pos_p2p_identity *p2p_identity_new(const pos_identity *key)
{
    pos_p2p_identity *id = calloc(1, sizeof(*id));
    if (id)
        id->key = *key;
    return id;
}

const pos_identity *p2p_identity_key(const pos_p2p_identity *id)
{
    return &id->key;
}

int pos_p2p_identity_default_path(char *out, size_t outlen)
{
    const char *e = getenv("POS_IDENTITY");
    int n;
    if (e && *e)
        n = snprintf(out, outlen, "%s", e);
    else if ((e = getenv("XDG_CONFIG_HOME")) && *e)
        n = snprintf(out, outlen, "%s/pos/identity", e);
    else if ((e = getenv("HOME")) && *e)
        n = snprintf(out, outlen, "%s/.config/pos/identity", e);
    else
        return POS_P2P_ERR_INVALID_ARGUMENT;
    return n > 0 && (size_t)n < outlen ? 0 : POS_P2P_ERR_INVALID_ARGUMENT;
}

int pos_p2p_identity_load(const char *path, int create, pos_p2p_identity **out, int *created,
                          char *err, size_t errlen)
{
    pos_p2p_identity *id = calloc(1, sizeof(*id));
    int made = 0, rv;
    if (!id) {
        snprintf(err, errlen, "out of memory");
        return POS_P2P_ERR_NOMEM;
    }
    rv = create ? pos_identity_load_or_create(&id->key, path, &made, err, errlen)
                : pos_identity_load(&id->key, path, err, errlen);
    if (rv != 0) {
        free(id);
        return POS_P2P_ERR_IDENTITY;
    }
    if (created)
        *created = made;
    *out = id;
    return 0;
}

void pos_p2p_identity_peer_id(const pos_p2p_identity *id, char out[POS_P2P_PEER_ID_STRLEN])
{
    pos_identity_peer_id(&id->key, out);
}

void pos_p2p_identity_del(pos_p2p_identity *id)
{
    if (!id)
        return;
    pos_identity_free(&id->key);
    free(id);
}
