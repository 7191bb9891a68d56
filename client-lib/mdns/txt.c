/*
 * DNS-SD TXT strings and instance names (see txt.h). Every read is bounded
 * by the length given with the bytes.
 */
#include "txt.h"

#include <string.h>

#include "pos/mdns.h"

static uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

bool mdns_txt_split(const uint8_t *s, size_t len, size_t *klen, const uint8_t **val, size_t *vlen)
{
    size_t k = 0;
    while (k < len && s[k] != '=') {
        if (s[k] < 0x20 || s[k] > 0x7E)
            return false; /* §6.4: keys are printable US-ASCII */
        k++;
    }
    if (k == 0)
        return false; /* §6.4: a string without a key is silently ignored */
    *klen = k;
    if (k < len) {
        *val = s + k + 1;
        *vlen = len - k - 1;
    } else {
        *val = NULL;
        *vlen = 0;
    }
    return true;
}

int pos_mdns_txt_split(const uint8_t *s, size_t len, size_t *klen, const uint8_t **val,
                       size_t *vlen)
{
    if ((!s && len) || !klen || !val || !vlen)
        return POS_P2P_ERR_INVALID_ARGUMENT;
    return mdns_txt_split(s, len, klen, val, vlen) ? 0 : POS_P2P_ERR_MDNS_TXT;
}

long mdns_txt_find(const char *const *strs, const size_t *lens, size_t n, const char *key)
{
    size_t want = strlen(key);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)strs[i], *val;
        size_t kl, vl;
        if (!mdns_txt_split(s, lens[i], &kl, &val, &vl) || kl != want)
            continue;
        size_t j = 0;
        while (j < kl && lower(s[j]) == lower((uint8_t)key[j]))
            j++;
        if (j == kl)
            return (long)i;
    }
    return -1;
}

/* Whether the labels of |n| from offset |p| on are |suffix| (ASCII case-insensitively). */
static bool name_tail_is(const struct dns_name *n, size_t p, const struct dns_name *suffix)
{
    if (n->len - p != suffix->len)
        return false;
    for (size_t i = 0; i < suffix->len; i++) {
        if (lower(n->b[p + i]) != lower(suffix->b[i]))
            return false;
    }
    return true;
}

size_t mdns_instance_text(const struct dns_name *n, const struct dns_name *svc, char *out)
{
    size_t cut = 0, p = 0, o = 0;
    while (p < n->len && n->b[p]) {
        p += (size_t)n->b[p] + 1;
        if (p < n->len && name_tail_is(n, p, svc)) {
            cut = p;
            break;
        }
    }
    if (!cut && n->len > 1)
        cut = (size_t)n->b[0] + 1;
    for (p = 0; p < cut && p < n->len;) {
        size_t l = n->b[p];
        if (l > n->len - p - 1)
            break; /* cannot happen in a canonical name; kept bounded all the same */
        if (o)
            out[o++] = '.';
        memcpy(out + o, n->b + p + 1, l);
        o += l;
        p += l + 1;
    }
    out[o] = 0;
    return o;
}
