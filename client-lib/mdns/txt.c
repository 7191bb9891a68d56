/*
 * DNS-SD TXT strings, instance names and the UTF-8 checks the JSON output
 * needs (see txt.h). Every read is bounded by the length given with the
 * bytes.
 */
#include "txt.h"

#include <string.h>

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

/* Length of the well-formed UTF-8 sequence at |s| (|len| bytes left), or 0. */
static size_t utf8_seq(const uint8_t *s, size_t len)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte (RFC 3629 §4) */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (len < 2 || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (i >= len || (s[i] & 0xC0) != 0x80)
            return 0;
    }
    return n;
}

bool mdns_utf8_valid(const uint8_t *s, size_t len)
{
    for (size_t p = 0; p < len;) {
        size_t n = utf8_seq(s + p, len - p);
        if (!n)
            return false;
        p += n;
    }
    return true;
}

size_t mdns_utf8_sanitize(const uint8_t *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t p = 0; p < len;) {
        size_t n = utf8_seq(s + p, len - p);
        const uint8_t *src = s + p;
        if (!n) {
            src = (const uint8_t *)"\xEF\xBF\xBD"; /* U+FFFD for one bad byte */
            n = 3;
            p += 1;
        } else {
            p += n;
        }
        if (cap - o < n)
            break;
        memcpy(out + o, src, n);
        o += n;
    }
    return o;
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
