/* Admission policy without I/O (see admission.h). */
#include "admission.h"

#include <stdio.h>
#include <string.h>

const char *relay_refusal_reason(enum relay_refusal r)
{
    switch (r) {
    case RELAY_OK:
        return "accepted";
    case RELAY_REFUSED_UNKNOWN_TOKEN:
        return "unknown token";
    case RELAY_REFUSED_REVOKED:
        return "token revoked";
    case RELAY_REFUSED_EXPIRED:
        return "token expired";
    case RELAY_REFUSED_RATE_LIMITED:
        return "rate limited: too many connection attempts, try again later";
    case RELAY_REFUSED_TOO_MANY_CONNS:
        return "too many connections for this token";
    case RELAY_REFUSED_UNAVAILABLE:
        return "relay temporarily unavailable (its database is unreachable), try again later";
    case RELAY_REFUSED_BAD_REQUEST:
        return "bad request";
    case RELAY_GOING_AWAY:
        return "relay shutting down, use another relay";
    }
    return "refused";
}

enum relay_refusal relay_admission_verdict(const relay_token_record *rec, int64_t now)
{
    if (!rec->found)
        return RELAY_REFUSED_UNKNOWN_TOKEN;
    if (rec->revoked)
        return RELAY_REFUSED_REVOKED;
    if (rec->expires_at > 0 && rec->expires_at <= now)
        return RELAY_REFUSED_EXPIRED;
    return RELAY_OK;
}

void relay_admission_limits(const relay_token_record *rec, uint32_t default_max_conns,
                            relay_limits *out)
{
    memset(out, 0, sizeof(*out));
    if (!rec->found)
        return;
    snprintf(out->account, sizeof(out->account), "%s", rec->account);
    out->bytes_per_sec = rec->bytes_per_sec;
    out->burst_bytes = rec->burst;
    out->max_conns = (uint32_t)rec->max_conns;
    if (out->max_conns == 0) /* the token sets no cap: the relay's default */
        out->max_conns = default_max_conns;
    out->expires_at = rec->expires_at;
}

enum relay_refusal relay_admission_script_verdict(long long answer)
{
    if (answer == 1)
        return RELAY_OK;
    return answer == -1 ? RELAY_REFUSED_RATE_LIMITED : RELAY_REFUSED_TOO_MANY_CONNS;
}
