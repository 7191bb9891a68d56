/*
 * A greedy or hostile sender for tests/p2p/test_transfer_limits.py: opens
 * SESSIONS sessions to a listener (pos-p2p listen) at ADDR and, on each,
 * STREAMS streams that each carry an OFFER of SIZE bytes (random file id) and
 * then nothing: transfers that hold the listener's resources. Prints, once
 * every stream was answered (or after 5 s), "answers: ACCEPTED accepted,
 * REFUSED refused, OTHER other" and each distinct refusal reason, then keeps
 * the sessions open for HOLD seconds.
 *
 * usage: xfer_flood IDENTITY ADDR PEER_ID SESSIONS STREAMS SIZE HOLD [NAME_HEX]
 * NAME_HEX: offer this name (hex of its bytes, any bytes) instead of flood-K.bin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pos/p2p.h"

#define MAX_SESSIONS 16
#define MAX_STREAMS 64

struct flood {
    int answered, accepted, refused, other;
    char reasons[4][300];
    int n_reasons;
    int64_t until_ms;
};

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct flood *f = arg;
    (void)s;
    if (ev->type == POS_P2P_SESSION_EV_STREAM_RESET) {
        f->answered++, f->other++;
        return;
    }
    if (ev->type != POS_P2P_SESSION_EV_DATA || ev->len < 5)
        return;
    /* Only the first message of each stream matters: ACCEPT (0x11) or REFUSE (0x12). */
    f->answered++;
    if (ev->data[0] == 0x11) {
        f->accepted++;
        return;
    }
    if (ev->data[0] != 0x12 || ev->len < 9) {
        f->other++;
        return;
    }
    f->refused++;
    size_t n = (size_t)ev->data[7] << 8 | ev->data[8];
    char reason[300];
    if (n > ev->len - 9)
        n = ev->len - 9;
    if (n >= sizeof reason)
        n = sizeof reason - 1;
    memcpy(reason, ev->data + 9, n);
    reason[n] = 0;
    for (int i = 0; i < f->n_reasons; i++)
        if (!strcmp(f->reasons[i], reason))
            return;
    if (f->n_reasons < 4)
        snprintf(f->reasons[f->n_reasons++], sizeof f->reasons[0], "%s", reason);
}

static int past(void *arg)
{
    return pos_p2p_now_ms() >= ((struct flood *)arg)->until_ms;
}

static void offer(uint8_t *msg, size_t *len, int k, uint64_t size, const char *hex)
{
    char name[201];
    size_t n = 0;
    if (hex)
        for (; hex[2 * n] && hex[2 * n + 1] && n < 200; n++) {
            unsigned v;
            sscanf(hex + 2 * n, "%2x", &v);
            name[n] = (char)v;
        }
    else
        n = (size_t)snprintf(name, sizeof name, "flood-%d.bin", k);
    /* OFFER, version 2: flags 0, checksums BLAKE2b, size, file id, name */
    size_t body = 3 + 8 + 32 + 2 + n;
    memset(msg, 0, 5 + body);
    msg[0] = 0x01, msg[3] = (uint8_t)(body >> 8), msg[4] = (uint8_t)body;
    msg[5] = 2, msg[7] = 1;
    for (int i = 0; i < 8; i++)
        msg[8 + i] = (uint8_t)(size >> (56 - 8 * i));
    for (int i = 0; i < 32; i++)
        msg[16 + i] = (uint8_t)rand();
    msg[49] = (uint8_t)n;
    memcpy(msg + 50, name, n);
    *len = 5 + body;
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr,
                "usage: xfer_flood IDENTITY ADDR PEER_ID SESSIONS STREAMS SIZE HOLD [NAME_HEX]\n");
        return 2;
    }
    int sessions = atoi(argv[4]), streams = atoi(argv[5]), hold = atoi(argv[7]);
    uint64_t size = strtoull(argv[6], NULL, 10);
    if (sessions < 1 || sessions > MAX_SESSIONS || streams < 1 || streams > MAX_STREAMS)
        return 2;
    char err[256];
    pos_p2p_identity *id = NULL;
    pos_p2p_endpoint *ep = NULL;
    pos_p2p_session *s[MAX_SESSIONS] = {0};
    struct flood f = {0};
    if (pos_p2p_identity_load(argv[1], 1, &id, NULL, err, sizeof err) != 0 ||
        pos_p2p_endpoint_new(&ep, id, 0) != 0) {
        fprintf(stderr, "xfer_flood: set-up failed: %s\n", err);
        return 1;
    }
    int opened = 0, k = 0;
    for (int i = 0; i < sessions; i++) {
        if (pos_p2p_session_connect_addr(ep, argv[2], argv[3], 5000, &s[i]) != 0 ||
            pos_p2p_session_wait_open(s[i], 5000) != 0) {
            fprintf(stderr, "xfer_flood: session %d did not open\n", i);
            continue;
        }
        pos_p2p_session_set_callback(s[i], on_event, &f);
        for (int j = 0; j < streams; j++) {
            int64_t st;
            uint8_t msg[300];
            size_t len;
            if (pos_p2p_session_open_stream(s[i], &st) != 0)
                break;
            offer(msg, &len, k++, size, argc == 9 ? argv[8] : NULL);
            pos_p2p_session_write(s[i], st, msg, len, 0, NULL);
            opened++;
        }
    }
    f.until_ms = pos_p2p_now_ms() + 5000;
    while (f.answered < opened && !past(&f))
        pos_p2p_endpoint_run(ep, 100, NULL, NULL);
    printf("offers: %d\nanswers: %d accepted, %d refused, %d other\n", opened, f.accepted,
           f.refused, f.other);
    for (int i = 0; i < f.n_reasons; i++)
        printf("refused: %s\n", f.reasons[i]);
    printf("holding\n");
    fflush(stdout);
    f.until_ms = pos_p2p_now_ms() + (int64_t)hold * 1000;
    pos_p2p_endpoint_run(ep, hold * 1000, past, &f);
    for (int i = 0; i < sessions; i++)
        if (s[i])
            pos_p2p_session_close(s[i], 0, NULL);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return 0;
}
