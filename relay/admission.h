/*
 * Admission policy, pure: what a token record (token_record.h), the relay's
 * limits and the time decide about a client. No Redis, no clock, no I/O:
 * the token check (auth.c) gathers the inputs and acts on the verdicts;
 * tests/relay/test_admission.c checks the policy alone.
 */
#ifndef POS_RELAY_ADMISSION_H
#define POS_RELAY_ADMISSION_H

#include <stdint.h>

#include "token_record.h"

/* Why a client is refused. Values are also the QUIC application error codes sent to the client. */
enum relay_refusal {
    RELAY_OK = 0,
    RELAY_REFUSED_UNKNOWN_TOKEN = 0x101,
    RELAY_REFUSED_REVOKED = 0x102,
    RELAY_REFUSED_EXPIRED = 0x103,
    RELAY_REFUSED_RATE_LIMITED = 0x104,
    RELAY_REFUSED_TOO_MANY_CONNS = 0x105,
    RELAY_REFUSED_UNAVAILABLE = 0x106, /* Redis unreachable: try again later */
    RELAY_REFUSED_BAD_REQUEST = 0x107,
    RELAY_GOING_AWAY = 0x108, /* relay shutting down: move to another */
};

/* relay_refusal_reason: the sentence a client shows for |r| ("unknown token", ...). */
const char *relay_refusal_reason(enum relay_refusal r);

/* What an accepted token allows. 0 means unlimited. */
typedef struct relay_limits {
    char account[128];
    uint64_t bytes_per_sec;
    uint64_t burst_bytes;
    uint32_t max_conns;
    int64_t expires_at; /* unix seconds, 0 = never */
} relay_limits;

/*
 * relay_admission_verdict: RELAY_OK for a record that exists, is not
 * revoked and has not expired at |now| (unix seconds); else
 * RELAY_REFUSED_UNKNOWN_TOKEN, _REVOKED or _EXPIRED, in that order.
 */
enum relay_refusal relay_admission_verdict(const relay_token_record *rec, int64_t now);

/*
 * relay_admission_limits: the limits |rec| gives (all 0 for no record). A
 * token without its own connection cap gets |default_max_conns| (the
 * relay's max_conns_per_token).
 */
void relay_admission_limits(const relay_token_record *rec, uint32_t default_max_conns,
                            relay_limits *out);

/*
 * relay_admission_script_verdict: the verdict of the admission script's
 * answer (1 admitted, -1 over the token's attempt rate, otherwise over its
 * connection cap).
 */
enum relay_refusal relay_admission_script_verdict(long long answer);

#endif
