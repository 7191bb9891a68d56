/*
 * Validation and canonical form of relay entries (see entry.h). jansson
 * parses the body (duplicate keys refused); every field is then checked by
 * the shared strict parsers for UUIDs, peer ids and addresses. Error
 * sentences quote a key only when it is short printable ASCII, so nothing a
 * client sends is echoed back unfiltered.
 */
#include "entry.h"

#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char addr_expected[] = "expected \"ip:port\" with a numeric IP (IPv6 in brackets) "
                                    "and a port from 1 to 65535";

__attribute__((format(printf, 3, 0))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      const char *arg)
{
    snprintf(err, errlen, fmt, arg);
    return POS_ENTRY_ERR_INVALID;
}

/* A key is quoted in an error only when a person can read it safely. */
static int quotable(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isprint((unsigned char)s[i]) || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static int check_keys(json_t *obj, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "id") && strcmp(key, "peer_id") && strcmp(key, "addrs")) {
            if (quotable(key))
                return fail(err, errlen,
                            "unknown key \"%s\": an entry has only id, peer_id and addrs", key);
            return fail(err, errlen, "%s", "unknown key: an entry has only id, peer_id and addrs");
        }
    }
    return 0;
}

/* get_string finds the required string |key|; *s and *len point into |obj|. */
static int get_string(json_t *obj, const char *key, const char **s, size_t *len, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return fail(err, errlen, "missing key \"%s\"", key);
    if (!json_is_string(v)) {
        snprintf(err, errlen, "\"%s\" must be a string, not %s", key, type_name(v));
        return POS_ENTRY_ERR_INVALID;
    }
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

static int parse_id(json_t *obj, pos_entry *e, char *err, size_t errlen)
{
    const char *s;
    size_t len;
    if (get_string(obj, "id", &s, &len, err, errlen))
        return POS_ENTRY_ERR_INVALID;
    if (pos_entry_id_parse(s, len, e->id))
        return fail(err, errlen, "%s",
                    "\"id\" must be a UUID: 8-4-4-4-12 hexadecimal digits, e.g. "
                    "\"7c9e6679-7425-40de-944b-e07fc1f90ae7\"");
    return 0;
}

static int parse_peer_id(json_t *obj, pos_entry *e, char *err, size_t errlen)
{
    const char *s;
    size_t len;
    uint8_t key[32];
    if (get_string(obj, "peer_id", &s, &len, err, errlen))
        return POS_ENTRY_ERR_INVALID;
    int form = pos_peer_id_parse_any(s, len, key);
    if (form < 0)
        return fail(err, errlen, "%s",
                    "\"peer_id\" must be the relay's Ed25519 public key, either as 43 "
                    "characters of standard base64 without padding or as a libp2p PeerId "
                    "(52 characters of base58, \"12D3KooW...\")");
    /* Served exactly as registered: a Spacedrive client parses only the PeerId form. */
    e->peer_id_form = (pos_peer_id_form)form;
    memcpy(e->peer_id, s, len);
    e->peer_id[len] = '\0';
    return 0;
}

static int parse_addr(json_t *v, size_t i, pos_entry *e, char *err, size_t errlen)
{
    if (!json_is_string(v)) {
        snprintf(err, errlen, "\"addrs\"[%zu] must be a string, not %s", i, type_name(v));
        return POS_ENTRY_ERR_INVALID;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len >= POS_ADDR_STRLEN || !pos_addr_valid(s, len)) {
        snprintf(err, errlen, "\"addrs\"[%zu] is not a valid address: %s", i, addr_expected);
        return POS_ENTRY_ERR_INVALID;
    }
    for (size_t j = 0; j < i; j++) {
        if (strlen(e->addrs[j]) == len && memcmp(e->addrs[j], s, len) == 0) {
            snprintf(err, errlen, "\"addrs\"[%zu] repeats \"addrs\"[%zu]", i, j);
            return POS_ENTRY_ERR_INVALID;
        }
    }
    memcpy(e->addrs[i], s, len);
    e->addrs[i][len] = '\0';
    return 0;
}

static int parse_addrs(json_t *obj, pos_entry *e, char *err, size_t errlen)
{
    json_t *arr = json_object_get(obj, "addrs");
    if (!arr)
        return fail(err, errlen, "missing key \"%s\"", "addrs");
    if (!json_is_array(arr) || json_array_size(arr) < 1 ||
        json_array_size(arr) > POS_ENTRY_MAX_ADDRS) {
        snprintf(err, errlen, "\"addrs\" must be an array of 1 to %d address strings",
                 POS_ENTRY_MAX_ADDRS);
        return POS_ENTRY_ERR_INVALID;
    }
    e->naddrs = json_array_size(arr);
    for (size_t i = 0; i < e->naddrs; i++)
        if (parse_addr(json_array_get(arr, i), i, e, err, errlen))
            return POS_ENTRY_ERR_INVALID;
    return 0;
}

static int parse_object(json_t *obj, pos_entry *e, char *err, size_t errlen)
{
    if (!json_is_object(obj))
        return fail(err, errlen, "the body must be a JSON object, not %s", type_name(obj));
    if (check_keys(obj, err, errlen) || parse_id(obj, e, err, errlen) ||
        parse_peer_id(obj, e, err, errlen) || parse_addrs(obj, e, err, errlen))
        return POS_ENTRY_ERR_INVALID;
    return 0;
}

int pos_entry_parse(const char *body, size_t len, pos_entry *e, char *err, size_t errlen)
{
    json_error_t jerr;

    memset(e, 0, sizeof(*e));
    if (len > POS_ENTRY_MAX_BODY) {
        snprintf(err, errlen, "the body is larger than %d bytes", POS_ENTRY_MAX_BODY);
        return POS_ENTRY_ERR_TOO_LARGE;
    }
    if (len == 0)
        return fail(err, errlen, "%s", "the body is empty: expected a JSON object");
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        snprintf(err, errlen, "the body is not valid JSON (line %d, column %d)", jerr.line,
                 jerr.column);
        return POS_ENTRY_ERR_INVALID;
    }
    int rc = parse_object(root, e, err, errlen);
    json_decref(root);
    return rc;
}

int pos_entry_format(const pos_entry *e, char *out, size_t outlen)
{
    /* Every field was validated: no character in them needs escaping. */
    int n =
        snprintf(out, outlen, "{\"id\":\"%s\",\"peer_id\":\"%s\",\"addrs\":[", e->id, e->peer_id);
    for (size_t i = 0; i < e->naddrs && n >= 0 && (size_t)n < outlen; i++)
        n += snprintf(out + n, outlen - (size_t)n, "%s\"%s\"", i ? "," : "", e->addrs[i]);
    if (n >= 0 && (size_t)n < outlen)
        n += snprintf(out + n, outlen - (size_t)n, "]}");
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return n;
}

int pos_entry_id_parse(const char *s, size_t len, char out[POS_UUID_STRLEN])
{
    if (!pos_uuid_valid(s, len))
        return -1;
    for (size_t i = 0; i < 36; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[36] = '\0';
    return 0;
}

unsigned pos_entry_ttl_s(const pos_entry *e, unsigned ttl_s, unsigned spacedrive_ttl_s)
{
    return e->peer_id_form == POS_PEER_ID_FORM_LIBP2P ? spacedrive_ttl_s : ttl_s;
}
