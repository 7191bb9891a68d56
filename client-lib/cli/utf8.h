/*
 * UTF-8 (RFC 3629) for pos-p2p discover's JSON output (cmd_mdns.c): values
 * that came from the network are shown as strings when well formed, else
 * with U+FFFD for each bad byte. Sans-I/O, no allocation.
 */
#ifndef POS_P2P_CLI_UTF8_H
#define POS_P2P_CLI_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * utf8_valid: whether |s| (|len| bytes) is well-formed UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). NUL is valid.
 */
bool utf8_valid(const uint8_t *s, size_t len);

/*
 * utf8_sanitize copies |s| (|len| bytes) into |out| (|cap| bytes),
 * replacing each byte that starts no well-formed sequence with U+FFFD. Returns the
 * bytes written (at most 3 * |len|; the copy stops short when |cap| is too
 * small). |out| is not NUL terminated.
 */
size_t utf8_sanitize(const uint8_t *s, size_t len, char *out, size_t cap);

#endif
