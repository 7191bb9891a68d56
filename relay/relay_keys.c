/* Redis key names of the relay (see relay_keys.h and docs/redis-layout.md). */
#include "relay_keys.h"

#include <stdio.h>
#include <string.h>

static int key(char *out, size_t outlen, const char *prefix, const char *a, const char *b,
               const char *c)
{
    return snprintf(out, outlen, "%s%s%s%s", prefix, a, b, c);
}

int relay_key_token(const char *prefix, char *out, size_t outlen, const char *hash)
{
    return key(out, outlen, prefix, "token:", hash, "");
}

int relay_key_account_tokens(const char *prefix, char *out, size_t outlen, const char *account)
{
    return key(out, outlen, prefix, "account:", account, ":tokens");
}

int relay_key_usage(const char *prefix, char *out, size_t outlen, const char *account)
{
    return key(out, outlen, prefix, "usage:", account, "");
}

int relay_key_presence(const char *prefix, char *out, size_t outlen, const char *peer_id)
{
    return key(out, outlen, prefix, "presence:", peer_id, "");
}

int relay_key_conns(const char *prefix, char *out, size_t outlen, const char *hash)
{
    return key(out, outlen, prefix, "conns:", hash, "");
}

int relay_key_rate_addr(const char *prefix, char *out, size_t outlen, const char *addr)
{
    return key(out, outlen, prefix, "rl:addr:", addr, "");
}

int relay_key_rate_token(const char *prefix, char *out, size_t outlen, const char *hash)
{
    return key(out, outlen, prefix, "rl:token:", hash, "");
}

int relay_key_bandwidth(const char *prefix, char *out, size_t outlen, const char *hash)
{
    return key(out, outlen, prefix, "bw:", hash, "");
}

int relay_key_fixed(const char *prefix, char *out, size_t outlen, const char *name)
{
    return key(out, outlen, prefix, name, "", "");
}

int relay_account_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > RELAY_ACCOUNT_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

int relay_token_hash_valid(const char *hash)
{
    if (strlen(hash) != 64)
        return 0;
    for (size_t i = 0; i < 64; i++) {
        char c = hash[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}
