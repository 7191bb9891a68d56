/*
 * Contacts for contacts-only discovery, kept beside the identity file:
 * DIR/presence.key (our own random 32-byte presence key, base64, 0600) and
 * DIR/contacts.json (an array of {"peer_id", "presence_key"}, 0600), where
 * DIR is the identity file's directory. pos-p2p's own (not libpos-p2p's).
 */
#ifndef POS_MDNS_CONTACTS_H
#define POS_MDNS_CONTACTS_H

#include <stddef.h>
#include <stdint.h>

#include <pos/mdns.h>

#define MDNS_CARD_MAX 128

struct mdns_contact_entry {
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    uint8_t key[32];
};

/*
 * mdns_identity_path: |explicit| when given, else $POS_IDENTITY, else
 * $XDG_CONFIG_HOME/pos/identity, else ~/.config/pos/identity. Returns 0 or -1.
 */
int mdns_identity_path(const char *explicit_path, char *out, size_t cap);

/*
 * mdns_presence_key_load_or_create reads DIR/presence.key of the identity
 * at |identity_path|, creating it (0600) when missing. Returns 0 or
 * POS_P2P_ERR_MDNS_CONTACTS with a sentence in |err|.
 */
int mdns_presence_key_load_or_create(const char *identity_path, uint8_t key[32], char *err,
                                     size_t errlen);

/*
 * mdns_contacts_load reads up to |cap| contacts into |out|; a missing file
 * is an empty list. Returns the count or POS_P2P_ERR_MDNS_CONTACTS.
 */
int mdns_contacts_load(const char *identity_path, struct mdns_contact_entry *out, size_t cap,
                       char *err, size_t errlen);

/*
 * mdns_contacts_add stores |e| (replacing an entry with the same peer id).
 * Returns 0 or POS_P2P_ERR_MDNS_CONTACTS.
 */
int mdns_contacts_add(const char *identity_path, const struct mdns_contact_entry *e, char *err,
                      size_t errlen);

#endif
