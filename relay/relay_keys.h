/*
 * Names of the relay's Redis keys, in one place so that the operator
 * commands (token, usage) and the running relay (auth.c, presence.c, budget.c) always agree.
 * Every key starts with the configured prefix (default "pos:"); the full
 * layout is documented in docs/redis-layout.md. Each function writes
 * prefix + name into |out| (|outlen| bytes, truncated if too small; 256 is
 * always enough) and returns the length it would have.
 */
#ifndef POS_RELAY_KEYS_H
#define POS_RELAY_KEYS_H

#include <stddef.h>

#define RELAY_ACCOUNT_MAX_LEN 64
#define RELAY_KEY_LEN 256

/* Fixed names. */
#define RELAY_KEY_TOKENS "tokens"       /* set of every token hash */
#define RELAY_KEY_ACCOUNTS "accounts"   /* set of account names */
#define RELAY_CHANNEL_REVOKED "revoked" /* pub/sub: token hashes being revoked */

/* <prefix>token:<hash> -> hash {account, created_at, expires_at, bytes_per_sec, burst, max_conns,
 * revoked} */
int relay_key_token(const char *prefix, char *out, size_t outlen, const char *hash);
/* <prefix>account:<name>:tokens -> set of token hashes */
int relay_key_account_tokens(const char *prefix, char *out, size_t outlen, const char *account);
/*
 * <prefix>usage:<name> -> hash {bytes_relayed, circuit_seconds}: integers the
 * data plane adds to with HINCRBY; absent fields count as zero.
 */
#define RELAY_USAGE_BYTES "bytes_relayed"
#define RELAY_USAGE_SECONDS "circuit_seconds"
int relay_key_usage(const char *prefix, char *out, size_t outlen, const char *account);
/* <prefix>presence:<peer id> -> relay id, short TTL */
int relay_key_presence(const char *prefix, char *out, size_t outlen, const char *peer_id);
/* <prefix>conns:<hash> -> sorted set "<relay id>:<n>" scored by expiry (ms) */
int relay_key_conns(const char *prefix, char *out, size_t outlen, const char *hash);
/* <prefix>rl:addr:<address or /64> and <prefix>rl:token:<hash> -> token bucket {tokens, ts} */
int relay_key_rate_addr(const char *prefix, char *out, size_t outlen, const char *addr);
int relay_key_rate_token(const char *prefix, char *out, size_t outlen, const char *hash);
/*
 * <prefix>bw:<hash> -> a token's bandwidth bucket {t (milli-bytes), ts (ms)}, from which every
 * relay leases byte budgets (relay/budget.c)
 */
int relay_key_bandwidth(const char *prefix, char *out, size_t outlen, const char *hash);
/* <prefix><fixed name> */
int relay_key_fixed(const char *prefix, char *out, size_t outlen, const char *name);

/* relay_account_valid: 1 to RELAY_ACCOUNT_MAX_LEN of [A-Za-z0-9._@-]. */
int relay_account_valid(const char *name);

/* relay_token_hash_valid: 64 lower-case hex digits (pos_secret_hash_hex). */
int relay_token_hash_valid(const char *hash);

#endif
