/*
 * The home relay of `pos-p2p send` and `pos-p2p listen`: fetch the relay
 * list, connect to every relay (or only the one --relay-id forces), measure
 * the round-trip times QUIC reports, keep the fastest
 * (pos_p2p_relay_pick_home) and close the others. A recheck measures the
 * other relays against the current home and switches only for a clear gain.
 *
 * Measuring connections say so in their HELLO (POS_P2P_RELAY_NOT_HOME): a
 * relay records presence only for a device's home connection, so measuring
 * never moves where peers reach the device (docs/protocol.md). `listen`
 * then closes the measuring connection to its pick and dials it once more as home.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define MAX_TRY 64

/* The relay's refusals of the token itself (docs/protocol.md, "Closing and refusals"). */
#define CODE_UNKNOWN_TOKEN 0x101
#define CODE_TOKEN_EXPIRED 0x103

struct settle {
    size_t n;
    pos_p2p_relay *r[MAX_TRY];
    volatile const sig_atomic_t *stop;
};

static int stopped(volatile const sig_atomic_t *stop)
{
    return stop && *stop;
}

static int all_settled(void *arg)
{
    struct settle *s = arg;
    pos_p2p_relay_status st;
    if (stopped(s->stop))
        return 1;
    for (size_t i = 0; i < s->n; i++) {
        if (!s->r[i])
            continue;
        pos_p2p_relay_get_status(s->r[i], &st);
        if (st.state == POS_P2P_RELAY_CONNECTING)
            return 0;
    }
    return 1;
}

int cli_token_refused(const pos_p2p_relay_status *st)
{
    return st->state == POS_P2P_RELAY_FAILED && st->error == POS_P2P_ERR_REFUSED &&
           st->close_code >= CODE_UNKNOWN_TOKEN && st->close_code <= CODE_TOKEN_EXPIRED;
}

/* note_failure prints why relay |id| did not accept us and remembers a token refusal. */
static void note_failure(const struct cli_pick_req *q, struct cli_pick_res *res, const char *id,
                         const pos_p2p_relay_status *st)
{
    const char *why = st->reason[0] ? st->reason : pos_p2p_strerror(st->error);
    fprintf(stderr, "%s: relay %s at %s: %s\n", q->cmd, id, st->remote, why);
    if (cli_token_refused(st) && !res->token_refused) {
        res->token_refused = 1;
        snprintf(res->refusal, sizeof(res->refusal), "%s", why);
    }
}

/*
 * promote: |measured| (relay |info|) was picked; close it and dial the relay
 * again as the home connection. Closing first gives its slot of the token's
 * connection cap back before the new one asks. Returns the home connection,
 * or NULL (explained on stderr).
 */
static pos_p2p_relay *promote(pos_p2p_endpoint *ep, const struct cli_pick_req *q,
                              struct cli_pick_res *res, pos_p2p_relay *measured,
                              const pos_p2p_relay_info *info)
{
    struct settle s;
    pos_p2p_relay_status st;
    int rv;

    memset(&s, 0, sizeof(s));
    s.stop = q->stop;
    pos_p2p_relay_close(measured);
    rv = pos_p2p_relay_connect(ep, info, q->token, q->timeout_ms, &s.r[0]);
    if (rv != 0) {
        fprintf(stderr, "%s: relay %s: %s\n", q->cmd, info->id, pos_p2p_strerror(rv));
        return NULL;
    }
    s.n = 1;
    pos_p2p_endpoint_run(ep, q->timeout_ms + 500, all_settled, &s);
    pos_p2p_relay_get_status(s.r[0], &st);
    if (st.state == POS_P2P_RELAY_ACCEPTED)
        return s.r[0];
    if (stopped(q->stop)) {
        pos_p2p_relay_close(s.r[0]);
        return NULL;
    }
    if (st.state == POS_P2P_RELAY_CONNECTING)
        snprintf(st.reason, sizeof(st.reason), "no answer in time");
    note_failure(q, res, info->id, &st);
    pos_p2p_relay_close(s.r[0]);
    return NULL;
}

enum cli_nat_kind cli_nat_verdict(char (*observed)[POS_P2P_ADDR_STRLEN], size_t n)
{
    enum cli_nat_kind k = CLI_NAT_UNKNOWN;
    for (int v6 = 0; v6 < 2; v6++) {
        const char *first = NULL;
        for (size_t i = 0; i < n; i++) {
            if (!observed[i][0] || (observed[i][0] == '[') != v6)
                continue;
            if (!first)
                first = observed[i];
            else if (strcmp(first, observed[i]) != 0)
                return CLI_NAT_VARIES;
            else
                k = CLI_NAT_EIM;
        }
    }
    return k;
}

const char *cli_nat_line(enum cli_nat_kind k)
{
    return k == CLI_NAT_EIM ? "nat mapping: endpoint-independent (every relay saw the same "
                              "address and port; direct paths are likely)"
           : k == CLI_NAT_VARIES
               ? "nat mapping: varies by destination (the relays saw different addresses or "
                 "ports; direct paths are unlikely)"
               : "nat mapping: unknown (needs two relays of one address family to compare)";
}

void cli_nat_warn(const char *cmd, enum cli_nat_kind k)
{
    static int told;
    if (k != CLI_NAT_VARIES || told)
        return;
    told = 1;
    fprintf(stderr,
            "%s: this device's NAT maps each destination to another address or port: a direct "
            "path is unlikely from behind it, the relay carries the session\n",
            cmd);
}

/* left_out: |in| is not to be dialed (not the forced relay, the current home, or skipped). */
static int left_out(const struct cli_pick_req *q, const pos_p2p_relay_info *in)
{
    return (q->relay_id && strcmp(q->relay_id, in->id) != 0) ||
           (q->current_id && !strcmp(q->current_id, in->id)) ||
           (q->skip_id && !strcmp(q->skip_id, in->id));
}

pos_p2p_relay *cli_home_relay(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                              const char *token, const char *relay_id, int timeout_ms,
                              pos_p2p_relay_info *info)
{
    struct cli_pick_req q = {.cmd = cmd,
                             .api_url = api_url,
                             .token = token,
                             .relay_id = relay_id,
                             .timeout_ms = timeout_ms};
    struct cli_pick_res res;
    pos_p2p_relay *r = cli_pick_relay(ep, &q, &res);
    if (r)
        *info = res.info;
    cli_nat_warn(cmd, res.nat);
    return r;
}

/*
 * dial_candidates starts a connection to each relay of |list| that |q| does
 * not leave out (at most MAX_TRY, after |s|'s slots already taken) and
 * returns 1 when the only candidate was dialed as home at once (nothing to
 * compare it with, so no measuring), else 0.
 */
static int dial_candidates(pos_p2p_endpoint *ep, const struct cli_pick_req *q,
                           const pos_p2p_relay_list *list, struct settle *s,
                           const pos_p2p_relay_info **infos)
{
    size_t candidates = 0;
    unsigned flags = POS_P2P_RELAY_NOT_HOME;
    for (size_t i = 0; i < pos_p2p_relay_list_count(list); i++) {
        if (!left_out(q, pos_p2p_relay_list_get(list, i)))
            candidates++;
    }
    int dialed_home = q->home && !q->current_id && candidates == 1;
    if (dialed_home)
        flags = 0;
    for (size_t i = 0; i < pos_p2p_relay_list_count(list) && s->n < MAX_TRY; i++) {
        const pos_p2p_relay_info *in = pos_p2p_relay_list_get(list, i);
        if (left_out(q, in))
            continue;
        infos[s->n] = in;
        if (pos_p2p_relay_connect_flags(ep, in, q->token, q->timeout_ms, flags, &s->r[s->n]) != 0)
            s->r[s->n] = NULL;
        s->n++;
    }
    return dialed_home;
}

/* Over 80 lines: fetch, dial, settle, judge (RTT, NAT) and pick share the per-relay arrays. */
pos_p2p_relay *cli_pick_relay(pos_p2p_endpoint *ep, const struct cli_pick_req *q,
                              struct cli_pick_res *res)
{
    pos_p2p_relay_list *list = NULL;
    struct settle s;
    const pos_p2p_relay_info *infos[MAX_TRY];
    double rtt[MAX_TRY];
    char observed[MAX_TRY][POS_P2P_ADDR_STRLEN];
    pos_p2p_relay_status st;
    pos_p2p_relay *home = NULL;
    char err[512];
    int pick, dialed_home;

    memset(&s, 0, sizeof(s));
    memset(res, 0, sizeof(*res));
    s.stop = q->stop;
    if (q->current_id) {
        /* slot 0: the current home, measured when it accepted us */
        infos[0] = NULL;
        s.r[0] = NULL;
        s.n = 1;
    }
    if (pos_p2p_relay_list_fetch(q->api_url, q->timeout_ms, &list, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: cannot fetch the relay list: %s\n", q->cmd, err);
        return NULL;
    }
    dialed_home = dial_candidates(ep, q, list, &s, infos);
    if (s.n == 0 || (q->current_id && s.n == 1)) {
        if (q->current_id) {
            res->kept = 1;
            pos_p2p_relay_list_del(list);
            return NULL;
        }
        if (q->relay_id)
            fprintf(stderr, "%s: relay %s is not in the relay list\n", q->cmd, q->relay_id);
        else if (q->skip_id)
            fprintf(stderr, "%s: the relay list has no other relay\n", q->cmd);
        else
            fprintf(stderr, "%s: the discovery API lists no relay\n", q->cmd);
        pos_p2p_relay_list_del(list);
        return NULL;
    }
    pos_p2p_endpoint_run(ep, q->timeout_ms + 500, all_settled, &s);
    if (stopped(q->stop)) {
        for (size_t i = 0; i < s.n; i++)
            pos_p2p_relay_close(s.r[i]);
        pos_p2p_relay_list_del(list);
        return NULL;
    }
    for (size_t i = 0; i < s.n; i++) {
        rtt[i] = -1;
        observed[i][0] = 0;
        if (q->current_id && i == 0) {
            rtt[0] = q->current_rtt;
            continue;
        }
        if (!s.r[i])
            continue;
        pos_p2p_relay_get_status(s.r[i], &st);
        if (st.state == POS_P2P_RELAY_ACCEPTED) {
            rtt[i] = st.rtt_ms;
            memcpy(observed[i], st.observed, sizeof(observed[i]));
        } else
            note_failure(q, res, infos[i]->id, &st);
    }
    res->nat = cli_nat_verdict(observed, s.n);
    if (res->nat != CLI_NAT_UNKNOWN) /* told to the relays from now on (HELLO, pos-relay/3) */
        pos_p2p_endpoint_set_nat_mapping(ep, (int)res->nat);
    pick = pos_p2p_relay_pick_home(rtt, s.n, q->current_id ? 0 : -1);
    if (q->current_id && pick == 0)
        res->kept = 1;
    for (size_t i = q->current_id ? 1 : 0; i < s.n; i++) {
        if ((int)i == pick) {
            home = s.r[i];
            res->info = *infos[i];
        } else {
            pos_p2p_relay_close(s.r[i]);
        }
    }
    pos_p2p_relay_list_del(list);
    if (!home && !res->kept && !res->token_refused)
        fprintf(stderr, "%s: no relay accepted this device\n", q->cmd);
    if (home && q->home && !dialed_home)
        home = promote(ep, q, res, home, &res->info);
    return home;
}
