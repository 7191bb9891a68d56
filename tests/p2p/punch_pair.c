/*
 * Two devices in one process, each with its own UDP socket on loopback,
 * reaching each other through a real relay (tests/p2p/test_punch_e2e.py):
 * A is at home on the relay and listens, B dials A through it and writes
 * MB megabytes (a fixed pseudo-random stream) that A checks byte by byte.
 * Both punch as the library does by default; every path event is printed.
 * The endpoints use the library's I/O seam (ep_new_io) so that the test can
 * blackhole the direct path (every datagram to an address other than the
 * relay's is dropped, both ways) while the relayed path keeps working.
 *
 * usage: punch_pair DIR RELAY_ADDR RELAY_PEER_ID TOKEN MB [options]
 *   --no-punch          punching off on both endpoints
 *   --retry-ms N        punch retry interval (default 60000)
 *   --window-ms N       probe window (default 3000)
 *   --rate-kbps N       pace B's writes (0: as fast as it goes)
 *   --block-at-mb N     blackhole the direct path once B has written N MB while direct
 *   --unblock-after-ms N  ... and open it again that long later
 *   --fake-a            a NAT in B's I/O: A's direct address (the relay's candidate) is
 *                       unreachable from B, 192.0.2.1:A's port reaches A instead; A sends no
 *                       PUNCH of its own (answers only), so only that address can go direct
 *   --add-candidate     B gives its session 192.0.2.1:A's port once open
 *                       (pos_p2p_session_add_candidates)
 *   --drop-relay-at-mb N  B closes its relay connection once it has written N MB while
 *                       direct (the relay closes the circuit: A gets CIRCUIT_CLOSED)
 *   --pause-at-mb N     B writes nothing for --pause-ms (default 5000) once it has written
 *                       N MB while direct (the session idles on its direct path)
 *   --fallback-retry-ms N  pos_p2p_punch_options.fallback_retry_ms
 *   --nat-a N, --nat-b N  that side's NAT mapping (pos_p2p_endpoint_set_nat_mapping), told
 *                       to the relay in HELLO
 *   --rebind-b-at-mb N  a NAT rebinding of B once it has written N MB: B sends from a new
 *                       socket (new port) from then on, and still reads the old one
 * Prints "path SIDE FROM->TO remote=... rtt_ms=... reason=..." for each
 * event, "blocked"/"unblocked", and at the end "result ok=1 bytes=..."
 * with each side's path info and counters, and "arrivals A max_gap_ms=...
 * stalls=N" (A's longest wait for data; its waits of 3 s or more). Exit 0
 * when every byte arrived intact within 90 s.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "internal.h"
#include "pos/p2p.h"

struct side {
    const char *name;
    int fd;
    int old_fd; /* after --rebind-b-at-mb: the socket before, still read; -1 none */
    pos_p2p_endpoint *ep;
    pos_p2p_relay *relay;
    pos_p2p_session *s;
    struct sockaddr_in relay_addr, local;
    int block;
    int opened, closed, close_err, fin;
    int64_t stream;
    uint64_t got, sent, bad;
    uint64_t gen; /* the checker's / writer's pseudo-random state */
    int direct;
    int moves_direct, moves_back;
    int64_t last_data; /* when data last arrived (pos_p2p_now_ms; 0: none yet) */
    int64_t max_gap;   /* the longest wait between two arrivals of data, ms */
    int stalls;        /* such waits of STALL_MS or more */
};
#define STALL_MS 3000

static struct side A = {.name = "A", .gen = 1, .old_fd = -1},
                   B = {.name = "B", .gen = 1, .old_fd = -1};
static uint64_t total, drop_at, pause_at, rebind_at;
static int pause_ms = 5000;
static int fake_a; /* --fake-a */
#define FAKE_A_IP "192.0.2.1"

static int same_in(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* fake_addr: A's address as B sees it with --fake-a. */
static struct sockaddr_in fake_addr(const struct side *a)
{
    struct sockaddr_in f = {.sin_family = AF_INET, .sin_port = a->local.sin_port};
    inet_pton(AF_INET, FAKE_A_IP, &f.sin_addr);
    return f;
}
static int64_t t0;

static uint8_t next_byte(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (uint8_t)(*x >> 24);
}

static int io_send(void *arg, int sock, const uint8_t *data, size_t len, const struct sockaddr *to,
                   socklen_t tolen)
{
    struct side *x = arg;
    const struct sockaddr_in *in = (const struct sockaddr_in *)to;
    (void)sock;
    if (fake_a && to->sa_family == AF_INET && !same_in(in, &x->relay_addr)) {
        struct sockaddr_in f = fake_addr(&A);
        if (x == &A && len && data[0] == POS_FRAME_PUNCH)
            return 0; /* A answers probes, sends none of its own */
        if (x == &B && !same_in(in, &f))
            return 0; /* the relay's candidates of A lead nowhere */
        if (x == &B)
            return sendto(x->fd, data, len, 0, (const struct sockaddr *)&A.local,
                          sizeof(A.local)) == (ssize_t)len
                       ? 0
                       : -1;
    }
    if (x->block && to->sa_family == AF_INET &&
        !(in->sin_port == x->relay_addr.sin_port &&
          in->sin_addr.s_addr == x->relay_addr.sin_addr.s_addr))
        return 0; /* the direct path is blackholed: lost on the way */
    return sendto(x->fd, data, len, 0, to, tolen) == (ssize_t)len ? 0 : -1;
}

static void on_event(void *arg, pos_p2p_session *s, const pos_p2p_session_event *ev)
{
    struct side *x = arg;
    (void)s;
    switch (ev->type) {
    case POS_P2P_SESSION_EV_OPEN:
        x->opened = 1;
        break;
    case POS_P2P_SESSION_EV_DATA:
        for (size_t i = 0; i < ev->len; i++)
            if (ev->data[i] != next_byte(&x->gen))
                x->bad++;
        x->got += ev->len;
        if (x->last_data && pos_p2p_now_ms() - x->last_data > x->max_gap)
            x->max_gap = pos_p2p_now_ms() - x->last_data;
        if (x->last_data && pos_p2p_now_ms() - x->last_data >= STALL_MS)
            x->stalls++;
        x->last_data = pos_p2p_now_ms();
        if (ev->fin)
            x->fin = 1;
        break;
    case POS_P2P_SESSION_EV_CLOSED:
        x->closed = 1;
        x->close_err = ev->error;
        printf("closed %s error=%d reason=%s\n", x->name, ev->error, ev->reason);
        break;
    case POS_P2P_SESSION_EV_PATH: {
        const pos_p2p_path_change *c = ev->path_change;
        x->direct = c->to == POS_P2P_PATH_DIRECT;
        if (x->direct)
            x->moves_direct++;
        else
            x->moves_back++;
        printf("path %s %s->%s remote=%s rtt_ms=%.1f reason=%d at_ms=%lld\n", x->name,
               c->from == POS_P2P_PATH_DIRECT ? "direct" : "relayed",
               c->to == POS_P2P_PATH_DIRECT ? "direct" : "relayed", c->remote, c->rtt_ms, c->reason,
               (long long)(pos_p2p_now_ms() - t0));
        fflush(stdout);
        break;
    }
    default:
        break;
    }
}

static void on_session(void *arg, pos_p2p_session *s)
{
    (void)arg;
    A.s = s;
    pos_p2p_session_set_callback(s, on_event, &A);
}

static int make_side(struct side *x, const char *dir, const struct sockaddr_in *relay)
{
    char path[512], err[256];
    pos_p2p_identity *id;
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    struct sockaddr_in bind_to = {.sin_family = AF_INET};
    ep_io io = {io_send, x};

    snprintf(path, sizeof(path), "%s/identity-%s", dir, x->name);
    if (pos_p2p_identity_load(path, 1, &id, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "identity: %s\n", err);
        return -1;
    }
    x->relay_addr = *relay;
    bind_to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    x->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    memset(&local, 0, sizeof(local));
    if (x->fd < 0 || bind(x->fd, (struct sockaddr *)&bind_to, sizeof(bind_to)) != 0 ||
        getsockname(x->fd, (struct sockaddr *)&local, &len) != 0 ||
        ep_new_io(&x->ep, id, &io, &local) != 0) {
        perror("socket");
        return -1;
    }
    memcpy(&x->local, &local, sizeof(x->local)); /* bound to 127.0.0.1: IPv4 */
    pos_p2p_identity_del(id);
    return 0;
}

static void pump(int wait_ms)
{
    struct pollfd p[3] = {{A.fd, POLLIN, 0}, {B.fd, POLLIN, 0}, {B.old_fd, POLLIN, 0}};
    struct side *sides[3] = {&A, &B, &B};
    int64_t now = pos_p2p_now_ms();
    for (int i = 0; i < 2; i++) {
        int64_t d = pos_p2p_endpoint_deadline(sides[i]->ep);
        if (d >= 0 && d - now < wait_ms)
            wait_ms = d - now < 0 ? 0 : (int)(d - now);
    }
    poll(p, 3, wait_ms); /* a negative fd (no old socket) is left out */
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 256 && p[i].fd >= 0; k++) {
            uint8_t buf[2048];
            struct sockaddr_storage from;
            socklen_t fl = sizeof(from);
            ssize_t n =
                recvfrom(p[i].fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
            if (n < 0)
                break;
            if (fake_a && i > 0 && same_in((struct sockaddr_in *)&from, &A.local)) {
                struct sockaddr_in f = fake_addr(&A); /* B sees A at the fake address */
                memcpy(&from, &f, sizeof(f));
            }
            if (n <= EP_MAX_UDP)
                ep_input(sides[i]->ep, 0, buf, (size_t)n, (struct sockaddr *)&from, fl);
        }
        if (i < 2)
            pos_p2p_endpoint_process(sides[i]->ep);
    }
    pos_p2p_endpoint_process(B.ep);
}

/* rebind_b: B's NAT gives it a new port: it sends from a new socket from now on. */
static void rebind_b(void)
{
    struct sockaddr_in to = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        perror("rebind");
        exit(1);
    }
    B.old_fd = B.fd;
    B.fd = fd;
    printf("rebound B at_ms=%lld\n", (long long)(pos_p2p_now_ms() - t0));
    fflush(stdout);
}

/* write_some: B writes what the send buffer and the pace allow. */
static void write_some(uint64_t rate_kbps)
{
    uint8_t buf[16384];
    int64_t elapsed = pos_p2p_now_ms() - t0;
    while (B.sent < total) {
        uint64_t allowed = rate_kbps ? (uint64_t)elapsed * rate_kbps * 1000 / 8 / 1000 : total;
        size_t n = sizeof(buf), taken = 0;
        if (allowed <= B.sent)
            return;
        if (n > total - B.sent)
            n = (size_t)(total - B.sent);
        if (n > allowed - B.sent)
            n = (size_t)(allowed - B.sent);
        if (pos_p2p_session_write_room(B.s, B.stream) < n)
            return;
        for (size_t i = 0; i < n; i++)
            buf[i] = next_byte(&B.gen);
        if (pos_p2p_session_write(B.s, B.stream, buf, n, B.sent + n == total, &taken) != 0 ||
            taken != n) {
            fprintf(stderr, "write failed\n");
            exit(1);
        }
        B.sent += n;
    }
}

static void print_info(const struct side *x)
{
    pos_p2p_path_info pi;
    pos_p2p_punch_stats ps;
    pos_p2p_session_get_path(x->s, &pi);
    pos_p2p_endpoint_punch_stats(x->ep, &ps);
    printf("info %s path=%s upgraded=%d upgraded_after_ms=%lld bytes_relayed=%llu "
           "bytes_direct=%llu attempts=%u fallbacks=%u relay_lost=%d punch_stopped=%d\n",
           x->name, pi.path == POS_P2P_PATH_DIRECT ? "direct" : "relayed", pi.upgraded,
           (long long)pi.upgraded_after_ms, (unsigned long long)pi.bytes_relayed,
           (unsigned long long)pi.bytes_direct, pi.attempts, pi.fallbacks, pi.relay_lost,
           pi.punch_stopped);
    printf("stats %s attempts=%llu successes=%llu failures=%llu fallbacks=%llu requests=%llu "
           "probes_sent=%llu nat_stops=%llu\n",
           x->name, (unsigned long long)ps.attempts, (unsigned long long)ps.successes,
           (unsigned long long)ps.failures, (unsigned long long)ps.fallbacks,
           (unsigned long long)ps.requests, (unsigned long long)ps.probes_sent,
           (unsigned long long)ps.nat_stops);
}

static int wait_for(int (*cond)(void), int ms)
{
    int64_t end = pos_p2p_now_ms() + ms;
    while (!cond() && pos_p2p_now_ms() < end)
        pump(50);
    return cond();
}

static int relays_accepted(void)
{
    pos_p2p_relay_status a, b;
    pos_p2p_relay_get_status(A.relay, &a);
    pos_p2p_relay_get_status(B.relay, &b);
    return a.state != POS_P2P_RELAY_CONNECTING && b.state != POS_P2P_RELAY_CONNECTING;
}

static int b_open(void)
{
    return B.opened || B.closed;
}

/* run_transfer: the loop of the transfer, with the blackhole when asked. */
static int run_transfer(uint64_t rate, uint64_t block_at, int unblock_after)
{
    int64_t blocked_at = -1, paused_at = -1, end = pos_p2p_now_ms() + 90000;
    while (!(A.fin && A.got == total) && !A.closed && !B.closed && pos_p2p_now_ms() < end) {
        if (pause_at && paused_at < 0 && B.direct && B.sent >= pause_at) {
            paused_at = pos_p2p_now_ms();
            printf("paused at_ms=%lld\n", (long long)(paused_at - t0));
            fflush(stdout);
        }
        if (paused_at >= 0 && pause_at && pos_p2p_now_ms() - paused_at >= pause_ms) {
            pause_at = 0;
            printf("resumed at_ms=%lld\n", (long long)(pos_p2p_now_ms() - t0));
            fflush(stdout);
        }
        if (!(paused_at >= 0 && pause_at))
            write_some(rate);
        if (rebind_at && B.sent >= rebind_at) {
            rebind_at = 0;
            rebind_b();
        }
        if (block_at && blocked_at < 0 && B.direct && B.sent >= block_at) {
            A.block = B.block = 1;
            blocked_at = pos_p2p_now_ms();
            printf("blocked at_ms=%lld\n", (long long)(blocked_at - t0));
            fflush(stdout);
        }
        if (drop_at && B.relay && B.direct && B.sent >= drop_at) {
            pos_p2p_session_drop_relay(B.ep, B.relay);
            pos_p2p_relay_close(B.relay);
            B.relay = NULL;
            printf("relay dropped at_ms=%lld\n", (long long)(pos_p2p_now_ms() - t0));
            fflush(stdout);
        }
        if (blocked_at >= 0 && A.block && pos_p2p_now_ms() - blocked_at >= unblock_after) {
            A.block = B.block = 0;
            printf("unblocked at_ms=%lld\n", (long long)(pos_p2p_now_ms() - t0));
            fflush(stdout);
        }
        pump(10);
    }
    return A.fin && A.got == total && !A.bad;
}

/* main: options, both sides and their relay connections, the session, the transfer, the summary
 * (one straight sequence, long but read top to bottom) */
int main(int argc, char **argv)
{
    pos_p2p_punch_options po;
    pos_p2p_relay_info info;
    struct sockaddr_in relay = {.sin_family = AF_INET};
    char peer_a[POS_P2P_PEER_ID_STRLEN], err[200];
    uint64_t rate = 0, block_at = 0;
    int unblock_after = 2000, ok, add_cand = 0, nat_a = 0, nat_b = 0;

    if (argc < 6) {
        fprintf(stderr, "usage: punch_pair DIR RELAY_ADDR RELAY_PEER_ID TOKEN MB [options]\n");
        return 2;
    }
    pos_p2p_punch_options_default(&po);
    for (int i = 6; i < argc; i++) {
        if (!strcmp(argv[i], "--no-punch"))
            po.enabled = 0;
        else if (!strcmp(argv[i], "--retry-ms") && i + 1 < argc)
            po.retry_ms = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--window-ms") && i + 1 < argc)
            po.window_ms = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rate-kbps") && i + 1 < argc)
            rate = (uint64_t)atoll(argv[++i]);
        else if (!strcmp(argv[i], "--block-at-mb") && i + 1 < argc)
            block_at = (uint64_t)atoll(argv[++i]) * 1000 * 1000;
        else if (!strcmp(argv[i], "--fake-a"))
            fake_a = 1;
        else if (!strcmp(argv[i], "--add-candidate"))
            add_cand = 1;
        else if (!strcmp(argv[i], "--drop-relay-at-mb") && i + 1 < argc)
            drop_at = (uint64_t)atoll(argv[++i]) * 1000 * 1000;
        else if (!strcmp(argv[i], "--unblock-after-ms") && i + 1 < argc)
            unblock_after = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pause-at-mb") && i + 1 < argc)
            pause_at = (uint64_t)atoll(argv[++i]) * 1000 * 1000;
        else if (!strcmp(argv[i], "--pause-ms") && i + 1 < argc)
            pause_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fallback-retry-ms") && i + 1 < argc)
            po.fallback_retry_ms = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nat-a") && i + 1 < argc)
            nat_a = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nat-b") && i + 1 < argc)
            nat_b = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rebind-b-at-mb") && i + 1 < argc)
            rebind_at = (uint64_t)atoll(argv[++i]) * 1000 * 1000;
    }
    if (pos_p2p_punch_options_check(&po, err, sizeof(err)) != 0) {
        fprintf(stderr, "options: %s\n", err);
        return 2;
    }
    total = (uint64_t)atoll(argv[5]) * 1000 * 1000;
    memset(&info, 0, sizeof(info));
    snprintf(info.id, sizeof(info.id), "00000000-0000-4000-8000-000000000001");
    snprintf(info.peer_id, sizeof(info.peer_id), "%s", argv[3]);
    snprintf(info.addrs[0], sizeof(info.addrs[0]), "%s", argv[2]);
    info.n_addrs = 1;
    {
        char host[64];
        const char *colon = strrchr(argv[2], ':');
        snprintf(host, sizeof(host), "%.*s", (int)(colon - argv[2]), argv[2]);
        inet_pton(AF_INET, host, &relay.sin_addr);
        relay.sin_port = htons((uint16_t)atoi(colon + 1));
    }
    t0 = pos_p2p_now_ms();
    if (make_side(&A, argv[1], &relay) != 0 || make_side(&B, argv[1], &relay) != 0)
        return 1;
    pos_p2p_endpoint_set_punch(A.ep, &po);
    pos_p2p_endpoint_set_punch(B.ep, &po);
    if (pos_p2p_endpoint_set_nat_mapping(A.ep, nat_a) != 0 ||
        pos_p2p_endpoint_set_nat_mapping(B.ep, nat_b) != 0) {
        fprintf(stderr, "--nat-a/--nat-b: 0, 1 or 2\n");
        return 2;
    }
    if (pos_p2p_relay_connect(A.ep, &info, argv[4], 10000, &A.relay) != 0 ||
        pos_p2p_relay_connect_flags(B.ep, &info, argv[4], 10000, POS_P2P_RELAY_NOT_HOME,
                                    &B.relay) != 0 ||
        !wait_for(relays_accepted, 12000)) {
        fprintf(stderr, "relay connections failed\n");
        return 1;
    }
    printf("relay versions A=%d B=%d\n", pos_p2p_relay_protocol_version(A.relay),
           pos_p2p_relay_protocol_version(B.relay));
    pos_p2p_session_use_relay(A.ep, A.relay);
    pos_p2p_endpoint_listen(A.ep, NULL, on_session, NULL);
    {
        pos_p2p_identity *id;
        char path[512];
        snprintf(path, sizeof(path), "%s/identity-A", argv[1]);
        pos_p2p_identity_load(path, 0, &id, NULL, err, sizeof(err));
        pos_p2p_identity_peer_id(id, peer_a);
        pos_p2p_identity_del(id);
    }
    if (pos_p2p_session_connect_relay(B.ep, B.relay, argv[4], peer_a, 15000, &B.s) != 0)
        return 1;
    pos_p2p_session_set_callback(B.s, on_event, &B);
    if (!wait_for(b_open, 16000) || !B.opened || pos_p2p_session_open_stream(B.s, &B.stream) != 0) {
        fprintf(stderr, "the session did not open\n");
        return 1;
    }
    {
        pos_p2p_session_status st;
        pos_p2p_session_get_status(B.s, &st);
        printf("circuit B=%u\n", st.circuit_id);
        fflush(stdout);
    }
    if (add_cand) {
        char a[64];
        const char *addrs[1] = {a};
        const char *bad[] = {"0.0.0.0:7373", "224.0.0.251:5353", "192.0.2.7", "not an address",
                             "192.0.2.9:0"};
        const char *many[9] = {"192.0.2.11:1", "192.0.2.12:1", "192.0.2.13:1",
                               "192.0.2.14:1", "192.0.2.15:1", "192.0.2.16:1",
                               "192.0.2.17:1", "192.0.2.18:1", "192.0.2.19:1"};
        /* refused, and nothing of them kept: the good address below is still taken */
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            printf("add_candidates bad %s rv=%d\n", bad[i],
                   pos_p2p_session_add_candidates(B.s, &bad[i], 1));
        printf("add_candidates null rv=%d\n", pos_p2p_session_add_candidates(B.s, NULL, 1));
        printf("add_candidates nine rv=%d\n", pos_p2p_session_add_candidates(B.s, many, 9));
        printf("add_candidates no-session rv=%d\n", pos_p2p_session_add_candidates(NULL, many, 1));
        snprintf(a, sizeof(a), FAKE_A_IP ":%u", ntohs(A.local.sin_port));
        printf("add_candidates %s rv=%d\n", a, pos_p2p_session_add_candidates(B.s, addrs, 1));
        fflush(stdout);
    }
    ok = run_transfer(rate, block_at, unblock_after);
    printf("result ok=%d bytes=%llu bad=%llu ms=%lld\n", ok, (unsigned long long)A.got,
           (unsigned long long)A.bad, (long long)(pos_p2p_now_ms() - t0));
    printf("arrivals A max_gap_ms=%lld stalls=%d\n", (long long)A.max_gap, A.stalls);
    print_info(&B);
    if (A.s)
        print_info(&A);
    fflush(stdout);
    pos_p2p_session_close(B.s, 0, NULL);
    if (A.s)
        pos_p2p_session_close(A.s, 0, NULL);
    pos_p2p_session_drop_relay(A.ep, A.relay);
    pos_p2p_endpoint_del(A.ep);
    pos_p2p_endpoint_del(B.ep);
    close(A.fd);
    close(B.fd);
    if (B.old_fd >= 0)
        close(B.old_fd);
    return ok ? 0 : 1;
}
