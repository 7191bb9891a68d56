/*
 * The home relay of `pos-p2p send` and `pos-p2p listen`: fetch the relay
 * list, connect to every relay (or only the one --relay-id forces), measure
 * the round-trip times QUIC reports, keep the fastest
 * (pos_p2p_relay_pick_home) and close the others. A recheck measures the
 * other relays against the current home and switches only for a clear gain.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define MAX_TRY 64

struct settle {
    size_t n;
    pos_p2p_relay *r[MAX_TRY];
};

static int all_settled(void *arg)
{
    struct settle *s = arg;
    pos_p2p_relay_status st;
    for (size_t i = 0; i < s->n; i++) {
        if (!s->r[i])
            continue;
        pos_p2p_relay_get_status(s->r[i], &st);
        if (st.state == POS_P2P_RELAY_CONNECTING)
            return 0;
    }
    return 1;
}

pos_p2p_relay *cli_home_relay(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                              const char *token, const char *relay_id, int timeout_ms,
                              pos_p2p_relay_info *info)
{
    return cli_recheck_home(ep, cmd, api_url, token, relay_id, NULL, 0, timeout_ms, info, NULL);
}

pos_p2p_relay *cli_recheck_home(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                                const char *token, const char *relay_id, const char *current_id,
                                double current_rtt, int timeout_ms, pos_p2p_relay_info *info,
                                int *kept)
{
    pos_p2p_relay_list *list = NULL;
    struct settle s;
    const pos_p2p_relay_info *infos[MAX_TRY];
    double rtt[MAX_TRY];
    pos_p2p_relay_status st;
    pos_p2p_relay *home = NULL;
    char err[512];
    int pick;

    memset(&s, 0, sizeof(s));
    if (kept)
        *kept = 0;
    if (current_id) {
        /* slot 0: the current home, measured when it accepted us */
        infos[0] = NULL;
        s.r[0] = NULL;
        s.n = 1;
    }
    if (pos_p2p_relay_list_fetch(api_url, timeout_ms, &list, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: cannot fetch the relay list: %s\n", cmd, err);
        return NULL;
    }
    for (size_t i = 0; i < pos_p2p_relay_list_count(list) && s.n < MAX_TRY; i++) {
        const pos_p2p_relay_info *in = pos_p2p_relay_list_get(list, i);
        if ((relay_id && strcmp(relay_id, in->id) != 0) ||
            (current_id && !strcmp(current_id, in->id)))
            continue;
        infos[s.n] = in;
        if (pos_p2p_relay_connect(ep, in, token, timeout_ms, &s.r[s.n]) != 0)
            s.r[s.n] = NULL;
        s.n++;
    }
    if (s.n == 0 || (current_id && s.n == 1)) {
        if (current_id) {
            *kept = 1;
            pos_p2p_relay_list_del(list);
            return NULL;
        }
        if (relay_id)
            fprintf(stderr, "%s: relay %s is not in the relay list\n", cmd, relay_id);
        else
            fprintf(stderr, "%s: the discovery API lists no relay\n", cmd);
        pos_p2p_relay_list_del(list);
        return NULL;
    }
    pos_p2p_endpoint_run(ep, timeout_ms + 500, all_settled, &s);
    for (size_t i = 0; i < s.n; i++) {
        rtt[i] = -1;
        if (current_id && i == 0) {
            rtt[0] = current_rtt;
            continue;
        }
        if (!s.r[i])
            continue;
        pos_p2p_relay_get_status(s.r[i], &st);
        if (st.state == POS_P2P_RELAY_ACCEPTED)
            rtt[i] = st.rtt_ms;
        else
            fprintf(stderr, "%s: relay %s at %s: %s\n", cmd, infos[i]->id, st.remote,
                    st.reason[0] ? st.reason : pos_p2p_strerror(st.error));
    }
    pick = pos_p2p_relay_pick_home(rtt, s.n, current_id ? 0 : -1);
    if (current_id && pick == 0)
        *kept = 1;
    for (size_t i = current_id ? 1 : 0; i < s.n; i++) {
        if ((int)i == pick) {
            home = s.r[i];
            *info = *infos[i];
        } else {
            pos_p2p_relay_close(s.r[i]);
        }
    }
    if (!home && !(kept && *kept))
        fprintf(stderr, "%s: no relay accepted this device\n", cmd);
    pos_p2p_relay_list_del(list);
    return home;
}
