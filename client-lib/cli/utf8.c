/*
 * UTF-8 checks for the JSON output of pos-p2p discover (see utf8.h). Every
 * read is bounded by the length given with the bytes.
 */
#include "utf8.h"

#include <string.h>

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

bool utf8_valid(const uint8_t *s, size_t len)
{
    for (size_t p = 0; p < len;) {
        size_t n = utf8_seq(s + p, len - p);
        if (!n)
            return false;
        p += n;
    }
    return true;
}

size_t utf8_sanitize(const uint8_t *s, size_t len, char *out, size_t cap)
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
