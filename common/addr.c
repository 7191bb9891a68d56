/*
 * Text form of socket addresses. Parsing copies at most a fixed number of
 * bytes into a local buffer and hands it to inet_pton, so no input can make
 * it read or write out of bounds.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static int parse_port(const char *s, size_t len, unsigned *port)
{
    unsigned v = 0;
    if (len == 0 || len > 5)
        return -1;
    /* No leading zeros: "0080" is not a port a person writes. */
    if (s[0] == '0')
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

int pos_addr_parse(const char *s, size_t len, unsigned default_port, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_text = NULL;
    size_t port_len = 0, host_len;
    unsigned port = default_port;
    int v6 = 0;

    if (len == 0 || len >= POS_ADDR_STRLEN)
        return -1;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        host_len = (size_t)(close - s) - 1;
        if (host_len == 0 || host_len >= sizeof(host))
            return -1;
        memcpy(host, s + 1, host_len);
        size_t rest = len - (size_t)(close - s) - 1;
        if (rest > 0) {
            if (close[1] != ':')
                return -1;
            port_text = close + 2;
            port_len = rest - 1;
        }
        v6 = 1;
    } else {
        const char *colon = memchr(s, ':', len);
        host_len = colon ? (size_t)(colon - s) : len;
        if (host_len == 0 || host_len >= sizeof(host))
            return -1;
        memcpy(host, s, host_len);
        if (colon) {
            port_text = colon + 1;
            port_len = len - host_len - 1;
        }
    }
    host[host_len] = '\0';
    if (memchr(host, '\0', host_len))
        return -1;
    if (port_text) {
        if (parse_port(port_text, port_len, &port) < 0)
            return -1;
    } else if (default_port == 0) {
        return -1;
    }

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -1;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -1;
    }
    *out = ss;
    return 0;
}

int pos_addr_valid(const char *s, size_t len)
{
    struct sockaddr_storage ss;
    return pos_addr_parse(s, len, 0, &ss) == 0;
}

int pos_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, ntohs(sin->sin_port));
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], host, sizeof(host));
            snprintf(out, outlen, "%s:%u", host, ntohs(sin6->sin6_port));
        } else {
            inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
            snprintf(out, outlen, "[%s]:%u", host, ntohs(sin6->sin6_port));
        }
        return 0;
    }
    if (outlen)
        out[0] = '\0';
    return -1;
}

unsigned pos_addr_len(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return sizeof(struct sockaddr_in);
    if (ss->ss_family == AF_INET6)
        return sizeof(struct sockaddr_in6);
    return 0;
}
