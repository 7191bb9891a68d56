/*
 * DNS-SD TXT strings (RFC 6763 §6) and instance names (§4.3) as a browser
 * reads them, for the querier (and, through pos_mdns_txt_split in pos/p2p.h,
 * for applications). Sans-I/O, no allocation.
 *
 * The rules, as §6.4 and §6.5 give them: a string is "key=value", "key"
 * (a boolean attribute: present, no value) or "key=" (empty value). The key
 * is everything up to the first '=': at least one byte, each printable
 * US-ASCII (0x20-0x7E); keys compare case-insensitively, and only the first
 * string carrying a key counts. A string with no key (empty, or starting
 * with '=') or with a key outside printable ASCII is ignored. Values are
 * opaque bytes: any byte, NUL and invalid UTF-8 included.
 */
#ifndef POS_MDNS_TXT_H
#define POS_MDNS_TXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"

/*
 * mdns_txt_split looks at one TXT string |s| of |len| bytes (not NUL
 * terminated). Returns false when it carries no valid key; else true with
 * the key length in |*klen| and, when the string has '=', the value in
 * |*val| / |*vlen| (|*val| is NULL for a boolean attribute).
 */
bool mdns_txt_split(const uint8_t *s, size_t len, size_t *klen, const uint8_t **val, size_t *vlen);

/*
 * mdns_txt_find returns the index in |strs| (|n| strings of |lens| bytes) of
 * the first string whose key equals |key| (ASCII, case-insensitively), or
 * -1 when none has it.
 */
long mdns_txt_find(const char *const *strs, const size_t *lens, size_t n, const char *key);

/*
 * mdns_instance_text writes the instance part of service instance name |n|
 * (under service type |svc|) into |out| (DNS_MAX_NAME + 1 bytes, NUL
 * terminated) and returns its length. An instance is one label of any
 * bytes, dots included (RFC 6763 §4.3), given as is. A publisher that
 * splits its instance at dots into several labels (as python-zeroconf
 * does) gets them joined with '.', so "dot.inside" reads the same from
 * either. A name not under |svc| gives its first label.
 */
size_t mdns_instance_text(const struct dns_name *n, const struct dns_name *svc, char *out);

#endif
