/*
 * Socket addresses in their text form, "ip:port" for IPv4 and "[ip]:port"
 * for IPv6, as they appear in relay entries and on command lines. The parser
 * is strict: a numeric address, a port from 1 to 65535, nothing else.
 */
#ifndef POS_ADDR_H
#define POS_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest text form: "[" + 45 + "]:" + 5 + NUL, rounded up. */
#define POS_ADDR_STRLEN 64

/*
 * pos_addr_parse parses |len| bytes of |s| (no NUL needed) into |out|.
 * |default_port| is used when the text has no port and |default_port| is
 * non-zero; with 0 a port is required. Returns 0, or -1 when the text is not
 * a valid address (|out| is then untouched).
 */
int pos_addr_parse(const char *s, size_t len, unsigned default_port, struct sockaddr_storage *out);

/* pos_addr_valid says whether |len| bytes of |s| are a valid "ip:port". */
int pos_addr_valid(const char *s, size_t len);

/*
 * pos_addr_format writes the text form of |sa| into |out| (at least
 * POS_ADDR_STRLEN bytes). IPv4-mapped IPv6 addresses are shown as IPv4.
 * Returns 0, or -1 for an address family other than IPv4 or IPv6.
 */
int pos_addr_format(const struct sockaddr *sa, char *out, size_t outlen);

/* pos_addr_len is the socklen_t of |ss| by its family (0 for unknown families). */
unsigned pos_addr_len(const struct sockaddr_storage *ss);

#endif
