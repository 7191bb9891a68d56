/*
 * The token record: what Redis keeps about one client token, the hash
 * <prefix>token:<hash> (relay_keys.h, docs/redis-layout.md). This module is
 * the only place that spells its field names: `pos-relay token add` writes a
 * record with relay_token_record_hset, `token list` and the relay's token
 * check read one with relay_token_record_parse.
 *
 * Numbers are decimal strings; an absent or unreadable number reads as 0
 * (0 = unlimited for the limits, never for expires_at). A record without an
 * "account" field is no record ("unknown token"); "revoked" is anything but
 * "0" or absent.
 */
#ifndef POS_RELAY_TOKEN_RECORD_H
#define POS_RELAY_TOKEN_RECORD_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define RELAY_TOKEN_ACCOUNT "account"
#define RELAY_TOKEN_CREATED_AT "created_at" /* unix seconds */
#define RELAY_TOKEN_EXPIRES_AT "expires_at" /* unix seconds, 0 = never */
#define RELAY_TOKEN_BYTES_PER_SEC "bytes_per_sec"
#define RELAY_TOKEN_BURST "burst"         /* bytes */
#define RELAY_TOKEN_MAX_CONNS "max_conns" /* 0 = the relay's max_conns_per_token */
#define RELAY_TOKEN_REVOKED "revoked"     /* "0" or "1" */
#define RELAY_TOKEN_FIELDS 7

typedef struct relay_token_record {
    int found; /* the record has an account (else nothing below is meaningful) */
    char account[128];
    int64_t created_at, expires_at;
    uint64_t bytes_per_sec, burst, max_conns;
    int revoked;
} relay_token_record;

/*
 * relay_token_record_field: takes field |name| = |value| into |rec|
 * (start from a zeroed record). Unknown names are ignored. Returns 1 when
 * |name| is a record field, 0 otherwise.
 */
int relay_token_record_field(relay_token_record *rec, const char *name, const char *value);

/*
 * relay_token_record_parse: |rec| from an HGETALL reply |h| (an array of
 * field, value strings; other element types are skipped). An empty reply is
 * a record with found == 0.
 */
void relay_token_record_parse(const redisReply *h, relay_token_record *rec);

/* The argument vector of "HSET key field value ..." for a whole record. */
typedef struct relay_token_record_cmd {
    const char *argv[2 + 2 * RELAY_TOKEN_FIELDS];
    char num[RELAY_TOKEN_FIELDS][24];
    int argc;
} relay_token_record_cmd;

/*
 * relay_token_record_hset fills |cmd| with HSET |key| and every field of
 * |rec| (revoked written as 0 or 1). |cmd| points into |rec| and |key|:
 * use it while they live.
 */
void relay_token_record_hset(const relay_token_record *rec, const char *key,
                             relay_token_record_cmd *cmd);

#endif
