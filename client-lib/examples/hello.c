/*
 * hello: the smallest program on libpos-p2p, built against the installed
 * library with pkg-config (tests/p2p/test_install.sh does exactly that).
 *
 *   hello IDENTITY_FILE                  print this device's peer id
 *   hello IDENTITY_FILE listen           accept one session, print the first line
 *                                        of its first stream, answer "hello back"
 *   hello IDENTITY_FILE send ADDR PEER   open a session, send "hello", print the answer
 *
 *   cc hello.c $(pkg-config --cflags --libs pos-p2p) -o hello
 */
#include <pos/p2p.h>
#include <stdio.h>
#include <string.h>

struct state {
    pos_p2p_session *s; /* the session of this example (one) */
    int64_t stream;
    char got[256];
    size_t n;
    int done;
};

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct state *st = arg;
    if (ev->type == POS_P2P_SESSION_EV_STREAM) {
        st->stream = ev->stream;
    } else if (ev->type == POS_P2P_SESSION_EV_DATA) {
        size_t k = ev->len < sizeof(st->got) - 1 - st->n ? ev->len : sizeof(st->got) - 1 - st->n;
        memcpy(st->got + st->n, ev->data, k);
        st->n += k;
        if (ev->fin) {
            st->got[st->n] = 0;
            printf("received: %s\n", st->got);
            if (s == st->s && st->stream == ev->stream && !st->done) {
                const char *back = "hello back";
                pos_p2p_session_write(s, ev->stream, (const uint8_t *)back, strlen(back), 1, NULL);
            }
            st->done = 1;
        }
    } else if (ev->type == POS_P2P_SESSION_EV_CLOSED) {
        st->done = 1;
    }
}

static void on_session(void *arg, pos_p2p_session *s)
{
    struct state *st = arg;
    if (st->s) {
        pos_p2p_session_close(s, 1, "busy");
        return;
    }
    st->s = s;
    pos_p2p_session_set_callback(s, on_event, st);
}

static int is_done(void *arg)
{
    return ((struct state *)arg)->done;
}

int main(int argc, char **argv)
{
    pos_p2p_identity *id = NULL;
    pos_p2p_endpoint *ep = NULL;
    char err[256], peer_id[POS_P2P_PEER_ID_STRLEN];
    struct state st;
    int rv = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: hello IDENTITY_FILE [listen | send ADDR PEER_ID]\n");
        return 2;
    }
    memset(&st, 0, sizeof(st));
    if (pos_p2p_identity_load(argv[1], 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "hello: %s\n", err);
        return 1;
    }
    pos_p2p_identity_peer_id(id, peer_id);
    printf("peer id: %s\n", peer_id);
    if (argc == 2) {
        rv = 0;
        goto out;
    }
    if (pos_p2p_endpoint_new(&ep, id, 0) != 0) {
        fprintf(stderr, "hello: cannot open UDP sockets\n");
        goto out;
    }
    if (!strcmp(argv[2], "listen")) {
        pos_p2p_endpoint_listen(ep, NULL, on_session, &st);
        printf("port: %u\n", pos_p2p_endpoint_local_port(ep));
        fflush(stdout);
        pos_p2p_endpoint_run(ep, 30000, is_done, &st);
        pos_p2p_endpoint_run(ep, 500, NULL, NULL); /* let "hello back" go out */
        rv = st.done ? 0 : 1;
    } else if (!strcmp(argv[2], "send") && argc == 5) {
        int e = pos_p2p_session_connect_addr(ep, argv[3], argv[4], 5000, &st.s);
        if (e == 0)
            e = pos_p2p_session_wait_open(st.s, 6000);
        if (e == 0) {
            pos_p2p_session_set_callback(st.s, on_event, &st);
            e = pos_p2p_session_open_stream(st.s, &st.stream);
        }
        if (e == 0)
            e = pos_p2p_session_write(st.s, st.stream, (const uint8_t *)"hello", 5, 1, NULL);
        if (e == 0 && pos_p2p_endpoint_run(ep, 5000, is_done, &st) == 0 && st.n > 0)
            rv = 0;
        else
            fprintf(stderr, "hello: %s\n", pos_p2p_strerror(e));
    } else {
        fprintf(stderr, "usage: hello IDENTITY_FILE [listen | send ADDR PEER_ID]\n");
        rv = 2;
    }
out:
    if (st.s)
        pos_p2p_session_close(st.s, 0, NULL);
    pos_p2p_endpoint_del(ep);
    pos_p2p_identity_del(id);
    return rv;
}
