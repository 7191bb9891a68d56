/*
 * park_dial: a dialer for tests/p2p/test_park_e2e.py that needs no
 * discovery API: it connects to one relay (given by address and peer id,
 * not NOT_HOME so it measures nothing), says "accepted", waits until the
 * file GO exists, then dials PEER_ID through the relay and prints
 * "session open" (exit 0) or "session failed: why" (exit 1). The test uses
 * it to reach a parked listener while Redis is down (the dialer's own
 * token check happened before).
 *
 * With a 7th argument "park" its own relay connection parks after 1 s
 * first ("parked", and the event "event 7"): the dial then makes it
 * reconnect for its request ("awake: 2", the reason) before the session
 * opens. With "park-raw" the request is pos_p2p_relay_request_peer itself,
 * no session: every relay event is printed ("event TYPE code CODE") until
 * the CIRCUIT (exit 0) or an ERROR.
 *
 * usage: park_dial RELAY_ADDR RELAY_PEER_ID TOKEN PEER_ID IDENTITY GO [park|park-raw]
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pos/p2p.h"

struct wait_relay {
    pos_p2p_relay *r;
    const char *go;
    int phase;  /* 0: until accepted (or failed), 1: until GO exists, 2: until parked, 3: answer */
    int answer; /* park-raw: the CIRCUIT (1) or ERROR (-1) event came */
};

static void on_event(void *arg, pos_p2p_relay *r, const pos_p2p_relay_event *ev)
{
    struct wait_relay *w = arg;
    (void)r;
    printf("event %d code %d\n", ev->type, ev->code);
    fflush(stdout);
    if (ev->type == POS_P2P_RELAY_EV_CIRCUIT || ev->type == POS_P2P_RELAY_EV_ERROR)
        w->answer = ev->type == POS_P2P_RELAY_EV_CIRCUIT ? 1 : -1;
}

static int done(void *arg)
{
    struct wait_relay *w = arg;
    pos_p2p_relay_status st;
    pos_p2p_relay_get_status(w->r, &st);
    if (st.state == POS_P2P_RELAY_FAILED)
        return 1;
    if (w->phase >= 2)
        return w->phase == 2 ? pos_p2p_relay_parked(w->r) : w->answer != 0;
    return w->phase == 0 ? st.state == POS_P2P_RELAY_ACCEPTED : access(w->go, F_OK) == 0;
}

int main(int argc, char **argv)
{
    pos_p2p_identity *id = NULL;
    pos_p2p_endpoint *ep = NULL;
    pos_p2p_session *s = NULL;
    pos_p2p_relay_info info;
    pos_p2p_relay_status st;
    struct wait_relay w = {NULL, NULL, 0, 0};
    int raw = argc == 8 && !strcmp(argv[7], "park-raw");
    uint32_t req;
    char err[256];
    int rv, status = 1;

    if (argc != 7 && (argc != 8 || (strcmp(argv[7], "park") && strcmp(argv[7], "park-raw")))) {
        fprintf(stderr, "usage: park_dial RELAY_ADDR RELAY_PEER_ID TOKEN PEER_ID IDENTITY GO "
                        "[park]\n");
        return 2;
    }
    memset(&info, 0, sizeof(info));
    snprintf(info.id, sizeof(info.id), "00000000-0000-0000-0000-000000000000");
    snprintf(info.peer_id, sizeof(info.peer_id), "%s", argv[2]);
    snprintf(info.addrs[0], sizeof(info.addrs[0]), "%s", argv[1]);
    info.n_addrs = 1;
    w.go = argv[6];
    if (pos_p2p_identity_load(argv[5], 1, &id, NULL, err, sizeof(err)) != 0 ||
        pos_p2p_endpoint_new(&ep, id, 0) != 0 ||
        pos_p2p_endpoint_set_park(ep, argc == 8 ? 1000 : 0, 0) != 0 ||
        pos_p2p_relay_connect(ep, &info, argv[3], 10000, &w.r) != 0) {
        fprintf(stderr, "park_dial: cannot start: %s\n", err);
        goto out;
    }
    pos_p2p_endpoint_run(ep, 11000, done, &w);
    pos_p2p_relay_get_status(w.r, &st);
    if (st.state != POS_P2P_RELAY_ACCEPTED) {
        printf("relay failed: %s\n", st.reason);
        goto out;
    }
    printf("accepted\n");
    fflush(stdout);
    if (argc == 8) {
        pos_p2p_relay_set_callbacks(w.r, on_event, NULL, &w);
        w.phase = 2;
        pos_p2p_endpoint_run(ep, 10000, done, &w);
        printf("%s\n", pos_p2p_relay_parked(w.r) ? "parked" : "not parked");
        fflush(stdout);
    }
    w.phase = 1;
    pos_p2p_endpoint_run(ep, 60000, done, &w);
    if (raw) {
        rv = pos_p2p_relay_request_peer(w.r, argv[4], &req);
        w.phase = 3;
        if (rv == 0)
            pos_p2p_endpoint_run(ep, 15000, done, &w);
        status = w.answer == 1 ? 0 : 1;
        goto out;
    }
    rv = pos_p2p_session_connect_relay(ep, w.r, argv[3], argv[4], 15000, &s);
    if (rv == 0)
        rv = pos_p2p_session_wait_open(s, 16000);
    pos_p2p_relay_get_status(w.r, &st);
    if (argc == 8)
        printf("awake: %d, parked %u time(s)\n", st.awake_reason, (unsigned)st.parks);
    if (rv == 0) {
        printf("session open\n");
        status = 0;
        pos_p2p_endpoint_run(ep, 1000, NULL, NULL); /* our last handshake flight reaches it */
    } else {
        printf("session failed: %s\n", pos_p2p_strerror(rv));
    }
    fflush(stdout);
    pos_p2p_session_close(s, 0, NULL);
out:
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return status;
}
