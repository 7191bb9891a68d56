/* The one codec of a token's Redis hash (see token_record.h). */
#include "token_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t number(const char *v)
{
    return strtoull(v, NULL, 10);
}

int relay_token_record_field(relay_token_record *rec, const char *name, const char *value)
{
    if (strcmp(name, RELAY_TOKEN_ACCOUNT) == 0) {
        rec->found = 1;
        snprintf(rec->account, sizeof(rec->account), "%s", value);
    } else if (strcmp(name, RELAY_TOKEN_CREATED_AT) == 0) {
        rec->created_at = (int64_t)number(value);
    } else if (strcmp(name, RELAY_TOKEN_EXPIRES_AT) == 0) {
        rec->expires_at = (int64_t)number(value);
    } else if (strcmp(name, RELAY_TOKEN_BYTES_PER_SEC) == 0) {
        rec->bytes_per_sec = number(value);
    } else if (strcmp(name, RELAY_TOKEN_BURST) == 0) {
        rec->burst = number(value);
    } else if (strcmp(name, RELAY_TOKEN_MAX_CONNS) == 0) {
        rec->max_conns = number(value);
    } else if (strcmp(name, RELAY_TOKEN_REVOKED) == 0) {
        rec->revoked = strcmp(value, "0") != 0;
    } else {
        return 0;
    }
    return 1;
}

void relay_token_record_parse(const redisReply *h, relay_token_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    /* Backwards, so that the first of a repeated field wins (HGETALL never repeats one). */
    for (size_t i = h->elements & ~(size_t)1; i >= 2; i -= 2) {
        const redisReply *k = h->element[i - 2], *v = h->element[i - 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
            relay_token_record_field(rec, k->str, v->str);
    }
}

void relay_token_record_hset(const relay_token_record *rec, const char *key,
                             relay_token_record_cmd *cmd)
{
    static const char *const names[RELAY_TOKEN_FIELDS] = {
        RELAY_TOKEN_ACCOUNT,       RELAY_TOKEN_CREATED_AT, RELAY_TOKEN_EXPIRES_AT,
        RELAY_TOKEN_BYTES_PER_SEC, RELAY_TOKEN_BURST,      RELAY_TOKEN_MAX_CONNS,
        RELAY_TOKEN_REVOKED};
    snprintf(cmd->num[1], sizeof(cmd->num[1]), "%lld", (long long)rec->created_at);
    snprintf(cmd->num[2], sizeof(cmd->num[2]), "%lld", (long long)rec->expires_at);
    snprintf(cmd->num[3], sizeof(cmd->num[3]), "%llu", (unsigned long long)rec->bytes_per_sec);
    snprintf(cmd->num[4], sizeof(cmd->num[4]), "%llu", (unsigned long long)rec->burst);
    snprintf(cmd->num[5], sizeof(cmd->num[5]), "%llu", (unsigned long long)rec->max_conns);
    snprintf(cmd->num[6], sizeof(cmd->num[6]), "%d", rec->revoked ? 1 : 0);
    cmd->argv[0] = "HSET";
    cmd->argv[1] = key;
    for (int i = 0; i < RELAY_TOKEN_FIELDS; i++) {
        cmd->argv[2 + 2 * i] = names[i];
        cmd->argv[3 + 2 * i] = i == 0 ? rec->account : cmd->num[i];
    }
    cmd->argc = 2 + 2 * RELAY_TOKEN_FIELDS;
}
