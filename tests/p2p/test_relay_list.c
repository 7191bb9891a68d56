/*
 * Unit tests of the relay-list parser of libpos-p2p (client-lib/src/relay_list.c):
 * the discovery API's JSON is network input, validated entry by entry.
 */
#include <string.h>

#include "check.h"
#include "pos/p2p.h"

#define PID "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
/* The same key as a libp2p PeerId. */
#define PID_LIBP2P "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV"
#define UUID1 "0f8fad5b-d9cb-469f-a165-70867728950e"
#define UUID2 "6ba7b810-9dad-41d1-80b4-00c04fd430c8"

static size_t parse(const char *json, size_t *skipped, pos_p2p_relay_list **out)
{
    *out = NULL;
    if (pos_p2p_relay_list_parse(json, strlen(json), out, skipped) != 0)
        return (size_t)-1;
    return pos_p2p_relay_list_count(*out);
}

int main(void)
{
    pos_p2p_relay_list *l;
    size_t skipped;
    const pos_p2p_relay_info *r;

    /* a valid list, with extra fields (allowed) */
    CHECK(parse("[{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID "\",\"addrs\":[\"1.2.3.4:7373\","
                "\"[2001:db8::1]:7373\"],\"region\":\"eu\"}]",
                &skipped, &l) == 1);
    CHECK(skipped == 0);
    r = pos_p2p_relay_list_get(l, 0);
    CHECK(r && !strcmp(r->id, UUID1) && !strcmp(r->peer_id, PID) && r->n_addrs == 2 &&
          !strcmp(r->addrs[1], "[2001:db8::1]:7373"));
    CHECK(pos_p2p_relay_list_get(l, 1) == NULL);
    pos_p2p_relay_list_del(l);

    /* invalid entries are skipped, valid ones kept */
    CHECK(parse("[{\"id\":\"not-a-uuid\",\"peer_id\":\"" PID "\",\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"short\",\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID "\",\"addrs\":[]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID "\",\"addrs\":[\"1.2.3.4\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID "\",\"addrs\":[\"host:80\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID "\",\"addrs\":\"1.2.3.4:1\"},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURp\","
                "\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID
                "\",\"addrs\":[\"1.1.1.1:1\",\"1.1.1.1:2\","
                "\"1.1.1.1:3\",\"1.1.1.1:4\",\"1.1.1.1:5\",\"1.1.1.1:6\",\"1.1.1.1:7\","
                "\"1.1.1.1:8\",\"1.1.1.1:9\"]},"
                "7, null, \"x\","
                "{\"id\":\"" UUID2 "\",\"peer_id\":\"" PID "\",\"addrs\":[\"10.0.0.1:9\"]}]",
                &skipped, &l) == 1);
    CHECK(skipped == 11);
    r = pos_p2p_relay_list_get(l, 0);
    CHECK(r && !strcmp(r->id, UUID2));
    pos_p2p_relay_list_del(l);

    /*
     * Spacedrive's form: its relays register a libp2p PeerId (PID's key, written by an
     * independent base58 in Python). The entry is kept with the key in our base64 form, the
     * key the client then pins; a PeerId of another key pins that other key.
     */
    CHECK(parse("[{\"id\":\"" UUID1 "\",\"peer_id\":\"" PID_LIBP2P "\",\"addrs\":[\"1.2.3.4:7373\","
                "\"[2001:db8::1]:7373\"]},"
                "{\"id\":\"" UUID2
                "\",\"peer_id\":\"12D3KooWQF7Y99wiT27msuUp9acu6g4bDcUYLe9GDSWGcLzgcHA9\","
                "\"addrs\":[\"1.2.3.4:7373\"]}]",
                &skipped, &l) == 2);
    CHECK(skipped == 0);
    r = pos_p2p_relay_list_get(l, 0);
    CHECK(r && !strcmp(r->id, UUID1) && !strcmp(r->peer_id, PID) && r->n_addrs == 2);
    r = pos_p2p_relay_list_get(l, 1);
    CHECK(r && !strcmp(r->peer_id, "1lqYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"));
    pos_p2p_relay_list_del(l);
    /* PeerIds that are not a canonical Ed25519 one are skipped: sha2-256 (RSA), a leading '1'
     * too many, a character outside base58, another key type. */
    CHECK(parse("[{\"id\":\"" UUID1
                "\",\"peer_id\":\"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N\","
                "\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1 "\",\"peer_id\":\"1" PID_LIBP2P "\",\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1
                "\",\"peer_id\":\"12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5p0\","
                "\"addrs\":[\"1.2.3.4:1\"]},"
                "{\"id\":\"" UUID1
                "\",\"peer_id\":\"12D3KubAU3C291YEyVBcqwhNe3gaM1CAGBhfB3nxuCRF7FknkQB4\","
                "\"addrs\":[\"1.2.3.4:1\"]}]",
                &skipped, &l) == 0);
    CHECK(skipped == 4);
    pos_p2p_relay_list_del(l);

    /* not a JSON array: an error, no list */
    CHECK(parse("{}", &skipped, &l) == (size_t)-1 && l == NULL);
    CHECK(parse("[", &skipped, &l) == (size_t)-1);
    CHECK(parse("", &skipped, &l) == (size_t)-1);
    /* duplicate keys are refused outright */
    CHECK(parse("[{\"id\":\"" UUID1 "\",\"id\":\"" UUID2 "\"}]", &skipped, &l) == (size_t)-1);
    /* an empty list is fine */
    CHECK(parse("[]", &skipped, &l) == 0);
    pos_p2p_relay_list_del(l);
    return check_finish("test_relay_list");
}
