/*
 * Hole punching as `pos-p2p send` and `listen` show it (issue 11): the
 * options both take (--no-punch, --punch-window, --punch-retry, handed to
 * pos_p2p_endpoint_set_punch) and the line printed for each path change of
 * a session (EV_PATH). Also --no-gso, the endpoint's other switch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char cli_punch_usage[] =
    "  --no-punch         keep relayed sessions on the relay (no hole punching)\n"
    "  --punch-window SECONDS  how long one punching attempt probes (default 3,\n"
    "                     0.1 to 60)\n"
    "  --punch-retry SECONDS   while relayed, try again this often (default 60,\n"
    "                     1 to 3600)\n"
    "  --no-gso           send each UDP datagram on its own and read them one by one\n"
    "                     (no UDP GSO/GRO; slower, for kernels or paths without)\n";

static int no_gso; /* --no-gso seen: one command per process */

/* seconds: |arg| as seconds between |lo| and |hi| into |*ms|; -1 after a message. */
static int seconds(const char *cmd, const char *name, const char *arg, double lo, double hi,
                   uint32_t *ms)
{
    char *end;
    double v = strtod(arg, &end);
    if (*end || end == arg || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: --%s wants seconds from %g to %g\n", cmd, name, lo, hi);
        return -1;
    }
    *ms = (uint32_t)(v * 1000.0 + 0.5);
    return 0;
}

int cli_punch_opt(const char *cmd, int ch, const char *arg, pos_p2p_punch_options *o)
{
    switch (ch) {
    case CLI_OPT_NO_PUNCH:
        o->enabled = 0;
        return 1;
    case CLI_OPT_PUNCH_WINDOW:
        if (seconds(cmd, "punch-window", arg, 0.1, 60, &o->window_ms) != 0)
            return -1;
        if (o->interval_ms > o->window_ms)
            o->interval_ms = o->window_ms;
        return 1;
    case CLI_OPT_PUNCH_RETRY:
        return seconds(cmd, "punch-retry", arg, 1, 3600, &o->retry_ms) != 0 ? -1 : 1;
    case CLI_OPT_NO_GSO:
        no_gso = 1;
        return 1;
    default:
        return 0;
    }
}

int cli_punch_apply(const char *cmd, pos_p2p_endpoint *ep, const pos_p2p_punch_options *o)
{
    char err[256] = "";
    int rv = pos_p2p_punch_options_check(o, err, sizeof(err));
    if (rv == 0)
        rv = pos_p2p_endpoint_set_punch(ep, o);
    if (rv == 0 && no_gso)
        rv = pos_p2p_endpoint_set_gso(ep, 0);
    if (rv != 0)
        fprintf(stderr, "%s: punching options: %s\n", cmd, err[0] ? err : pos_p2p_strerror(rv));
    return rv;
}

void cli_print_path_change(FILE *out, const char *who, const pos_p2p_path_change *pc)
{
    if (pc->to == POS_P2P_PATH_DIRECT)
        fprintf(out, "path%s%s: relayed -> direct to %s (rtt %.1f ms)\n", who ? " of " : "",
                who ? who : "", pc->remote, pc->rtt_ms);
    else
        fprintf(out, "path%s%s: direct -> relayed through %s%s\n", who ? " of " : "",
                who ? who : "", pc->remote,
                pc->reason == POS_P2P_FALLBACK_STALLED ? " (the direct path stalled)"
                : pc->reason == POS_P2P_FALLBACK_PEER  ? " (the peer moved back)"
                                                       : "");
    fflush(out);
}
