/*
 * quic_probe: real QUIC Initials made with ngtcp2's client API, for the
 * integration tests of the relay's and the endpoint's accepting side
 * (test_quic_hardening.py).
 *
 *   quic_probe initial --to IP:PORT --version HEX [--size N] [--wait MS]
 *       sends one encrypted Initial of that version (a ClientHello for ALPN
 *       pos-relay/1); ngtcp2 0.12 makes draft-29 and the provisional v2
 *       itself; for a version it does not implement (v2, 0x6b3343cf) a v1
 *       Initial is made and its version field rewritten. --size cuts the
 *       datagram to N bytes. Prints one line per answer: "vn V1,V2,..." for a
 *       Version Negotiation packet (or "vn-bad ..." when its connection ids
 *       are not ours swapped), "other TYPE" for anything else; "none" when
 *       nothing came within --wait ms (default 500).
 *
 *   quic_probe flood --to IP:PORT --from IP[,IP...] --rate N --seconds S
 *       from each source address, N new connection attempts per second: a
 *       v1 Initial, the Retry answered with the token (as a real client
 *       would), then silence, so each attempt stays a pending handshake at
 *       the server until it times out. Prints "attempts A retries R" at the
 *       end or on SIGTERM.
 *
 * Exit status 0, or 2 on a usage or set-up error.
 */
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "quic_glue.h"

#include "addr.h"
#include "identity.h"
#include "quic_common.h"
#include "tls.h"

#define MAX_FROM 16
#define MAX_ATTEMPTS 8192

struct attempt {
    ngtcp2_conn *qc;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    pos_tls_pin pin;
    ngtcp2_cid scid;
    int sock;
    int64_t born_ms;
    uint8_t creating;
    int answered;
};

static pos_tls_creds *creds;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}
static const char *alpn = "pos-relay/1";
static int corrupt;
static struct sockaddr_storage to;
static struct sockaddr_storage locals[MAX_FROM];

static int64_t now_ms(void)
{
    return (int64_t)(pos_quic_now() / 1000000);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct attempt *a = (struct attempt *)((char *)ref->user_data - offsetof(struct attempt, pin));
    return a->qc;
}

/* The codepoint our transport parameters travel under (qglue_configure_client). */
static unsigned tp_codepoint;

static void attempt_free(struct attempt *a)
{
    if (a->qc)
        ngtcp2_conn_del(a->qc);
    if (a->tls)
        gnutls_deinit(a->tls);
    free(a);
}

/* attempt_new makes a client connection of |version| from local address |local|. */
static struct attempt *attempt_new(uint32_t version, const struct sockaddr_storage *local)
{
    struct attempt *a = calloc(1, sizeof(*a));
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid dcid;
    ngtcp2_path path;

    if (!a)
        return NULL;
    pos_quic_callbacks_init(&cbs, 0);
    cbs.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cbs.get_new_connection_id = qglue_get_new_cid;
    pos_quic_settings_init(&settings, &a->creating);
    ngtcp2_transport_params_default(&params);
    params.initial_max_streams_bidi = 4;
    params.initial_max_data = 65536;
    params.initial_max_stream_data_bidi_local = 65536;
    dcid.datalen = 16;
    randombytes_buf(dcid.data, dcid.datalen);
    a->scid.datalen = 16;
    randombytes_buf(a->scid.data, a->scid.datalen);
    path.local.addr = (ngtcp2_sockaddr *)local;
    path.local.addrlen = pos_addr_len(local);
    path.remote.addr = (ngtcp2_sockaddr *)&to;
    path.remote.addrlen = pos_addr_len(&to);
    path.user_data = NULL;
    a->creating = 1;
    int rv = ngtcp2_conn_client_new(&a->qc, &dcid, &a->scid, &path, version, &cbs, &settings,
                                    &params, NULL, a);
    a->creating = 0;
    if (rv != 0 || pos_tls_session_new(&a->tls, creds, 0, alpn) != 0 ||
        qglue_configure_client(a->tls, tp_codepoint) != 0) {
        attempt_free(a);
        return NULL;
    }
    a->ref.get_conn = get_conn;
    a->ref.user_data = &a->pin;
    gnutls_session_set_ptr(a->tls, &a->ref);
    ngtcp2_conn_set_tls_native_handle(a->qc, a->tls);
    a->born_ms = now_ms();
    return a;
}

/* attempt_write: the next datagram of |a| into |buf|; its length, or 0. */
static size_t attempt_write(struct attempt *a, uint8_t *buf, size_t cap)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_ssize n = ngtcp2_conn_write_pkt(a->qc, &ps.path, &pi, buf, cap, pos_quic_now());
    return n > 0 ? (size_t)n : 0;
}

static int open_socket(const struct sockaddr_storage *local, struct sockaddr_storage *bound)
{
    int fd = socket(local->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    socklen_t len = sizeof(*bound);
    if (fd < 0 || bind(fd, (const struct sockaddr *)local, pos_addr_len(local)) != 0) {
        fprintf(stderr, "quic_probe: cannot bind a UDP socket: %s\n", strerror(errno));
        exit(2);
    }
    getsockname(fd, (struct sockaddr *)bound, &len);
    return fd;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* describe prints what the answer |p| of |n| bytes to an Initial with |scid|/|dcid| is. */
static void describe(const uint8_t *p, size_t n, const uint8_t *sent, size_t sent_len)
{
    if (n >= 7 && (p[0] & 0x80) && be32(p + 1) == 0) {
        /* our Initial: DCID at 6, SCID after it; a VN swaps them */
        size_t dl = sent[5], sl = sent[6 + dl];
        size_t adl = p[5], off = 6 + adl;
        int ok = off < n && adl == sl && memcmp(p + 6, sent + 7 + dl, sl) == 0 && p[off] == dl &&
                 off + 1 + dl <= n && memcmp(p + off + 1, sent + 6, dl) == 0;
        (void)sent_len;
        off += 1 + (off < n ? p[off] : 0);
        printf("%s", ok ? "vn " : "vn-bad ");
        for (int first = 1; off + 4 <= n; off += 4, first = 0)
            printf("%s0x%08x", first ? "" : ",", be32(p + off));
        printf("\n");
        return;
    }
    printf("other 0x%02x\n", p[0]);
}

static int run_initial(uint32_t version, long size, long wait_ms)
{
    struct sockaddr_storage any, bound;
    uint8_t buf[2048], ans[2048];
    uint32_t make = version;
    int fd, got = 0;

    memset(&any, 0, sizeof(any));
    any.ss_family = to.ss_family;
    fd = open_socket(&any, &bound);
    if (!tp_codepoint)
        tp_codepoint =
            version >= NGTCP2_PROTO_VER_DRAFT_MIN && version <= NGTCP2_PROTO_VER_DRAFT_MAX
                ? NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_DRAFT
                : NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1;
    if (!ngtcp2_is_supported_version(version))
        make = NGTCP2_PROTO_VER_V1; /* made as v1, version field rewritten below */
    struct attempt *a = attempt_new(make, &bound);
    if (!a) {
        fprintf(stderr, "quic_probe: ngtcp2 cannot make a 0x%08x Initial\n", version);
        return 2;
    }
    size_t n = attempt_write(a, buf, sizeof(buf));
    if (n < 7) {
        fprintf(stderr, "quic_probe: no Initial written\n");
        attempt_free(a);
        return 2;
    }
    buf[1] = (uint8_t)(version >> 24);
    buf[2] = (uint8_t)(version >> 16);
    buf[3] = (uint8_t)(version >> 8);
    buf[4] = (uint8_t)version;
    if (size > 0 && (size_t)size < n)
        n = (size_t)size;
    if (corrupt)
        buf[n - 1] ^= 0x5a; /* the AEAD tag no longer matches */
    fprintf(stderr, "quic_probe: sent a %zu-byte Initial of version 0x%08x\n", n, version);
    sendto(fd, buf, n, 0, (struct sockaddr *)&to, pos_addr_len(&to));
    int64_t end = now_ms() + wait_ms;
    for (int64_t left; (left = end - now_ms()) > 0;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t r = recv(fd, ans, sizeof(ans), 0);
        if (r <= 0)
            continue;
        describe(ans, (size_t)r, buf, n);
        got++;
        if (make != version || (ans[0] & 0x80 && be32(ans + 1) == 0))
            continue;
        /* the server took it: go on with the handshake as a real client would */
        ngtcp2_path path;
        ngtcp2_pkt_info pi = {0};
        uint8_t out[2048];
        size_t k;
        path.local.addr = (ngtcp2_sockaddr *)&bound;
        path.local.addrlen = pos_addr_len(&bound);
        path.remote.addr = (ngtcp2_sockaddr *)&to;
        path.remote.addrlen = pos_addr_len(&to);
        path.user_data = NULL;
        if (ngtcp2_conn_read_pkt(a->qc, &path, &pi, ans, (size_t)r, pos_quic_now()) != 0)
            continue;
        while ((k = attempt_write(a, out, sizeof(out))) > 0)
            sendto(fd, out, k, 0, (struct sockaddr *)&to, pos_addr_len(&to));
    }
    if (!got)
        printf("none\n");
    attempt_free(a);
    close(fd);
    return 0;
}

static int run_flood(const char *from, long rate, double seconds)
{
    static struct attempt *live[MAX_ATTEMPTS];
    struct pollfd pfd[MAX_FROM];
    size_t n_from = 0, n_live = 0;
    long attempts = 0, retries = 0;
    uint8_t buf[2048];
    char list[1024];
    snprintf(list, sizeof(list), "%s", from);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n_from < MAX_FROM;
         tok = strtok_r(NULL, ",", &save)) {
        struct sockaddr_storage ss;
        char withport[128];
        snprintf(withport, sizeof(withport), "%s:1", tok);
        if (pos_addr_parse(withport, strlen(withport), 0, &ss) != 0 || ss.ss_family != AF_INET) {
            fprintf(stderr, "quic_probe: --from: \"%s\" is not an IPv4 address\n", tok);
            return 2;
        }
        ((struct sockaddr_in *)&ss)->sin_port = 0; /* any free port */
        pfd[n_from].fd = open_socket(&ss, &locals[n_from]);
        pfd[n_from].events = POLLIN;
        n_from++;
    }
    int64_t start = now_ms(), end = start + (int64_t)(seconds * 1000);
    long due = 0;
    while (now_ms() < end && !stop) {
        /* new attempts on schedule, |rate| per second per source */
        long should = (long)((now_ms() - start) * rate / 1000) + 1;
        for (; due < should; due++) {
            for (size_t i = 0; i < n_from && n_live < MAX_ATTEMPTS; i++) {
                struct attempt *a = attempt_new(NGTCP2_PROTO_VER_V1, &locals[i]);
                size_t n;
                if (!a)
                    continue;
                a->sock = (int)i;
                n = attempt_write(a, buf, sizeof(buf));
                sendto(pfd[i].fd, buf, n, 0, (struct sockaddr *)&to, pos_addr_len(&to));
                live[n_live++] = a;
                attempts++;
            }
        }
        if (poll(pfd, n_from, 5) > 0) {
            for (size_t i = 0; i < n_from; i++) {
                ssize_t r;
                while ((r = recv(pfd[i].fd, buf, sizeof(buf), 0)) > 0) {
                    /* long header: our SCID is its DCID */
                    if (r < 7 || !(buf[0] & 0x80) || buf[5] != 16 || r < 6 + 16)
                        continue;
                    for (size_t k = 0; k < n_live; k++) {
                        struct attempt *a = live[k];
                        ngtcp2_path path;
                        ngtcp2_pkt_info pi = {0};
                        if (a->answered || memcmp(a->scid.data, buf + 6, 16) != 0)
                            continue;
                        path.local.addr = (ngtcp2_sockaddr *)&locals[i];
                        path.local.addrlen = pos_addr_len(&locals[i]);
                        path.remote.addr = (ngtcp2_sockaddr *)&to;
                        path.remote.addrlen = pos_addr_len(&to);
                        path.user_data = NULL;
                        /* a Retry: answered with its token; anything else: the
                         * server admitted us already; either way no more from us */
                        if ((buf[0] & 0x30) == 0x30 &&
                            ngtcp2_conn_read_pkt(a->qc, &path, &pi, buf, (size_t)r,
                                                 pos_quic_now()) == 0) {
                            uint8_t out[2048];
                            size_t n = attempt_write(a, out, sizeof(out));
                            if (n > 0) {
                                sendto(pfd[i].fd, out, n, 0, (struct sockaddr *)&to,
                                       pos_addr_len(&to));
                                retries++;
                            }
                        }
                        a->answered = 1;
                        break;
                    }
                }
            }
        }
        /* forget attempts that were answered or are old */
        for (size_t k = 0; k < n_live;) {
            if (live[k]->answered || now_ms() - live[k]->born_ms > 2000) {
                attempt_free(live[k]);
                live[k] = live[--n_live];
            } else {
                k++;
            }
        }
    }
    for (size_t k = 0; k < n_live; k++)
        attempt_free(live[k]);
    printf("attempts %ld retries %ld\n", attempts, retries);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"version", required_argument, NULL, 'v'},
        {"size", required_argument, NULL, 's'},
        {"wait", required_argument, NULL, 'w'},
        {"from", required_argument, NULL, 'f'},
        {"rate", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 'S'},
        {"alpn", required_argument, NULL, 'a'},
        {"corrupt", no_argument, NULL, 'c'},
        {"tp-codepoint", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    const char *target = NULL, *from = "127.0.0.1";
    uint32_t version = NGTCP2_PROTO_VER_V1;
    long size = 0, wait_ms = 500, rate = 20;
    double seconds = 1;
    pos_identity id;
    int ch, rv;

    if (argc < 2 || (strcmp(argv[1], "initial") && strcmp(argv[1], "flood"))) {
        fprintf(stderr, "usage: quic_probe initial|flood --to IP:PORT [options]\n");
        return 2;
    }
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            target = optarg;
            break;
        case 'v':
            version = (uint32_t)strtoul(optarg, NULL, 16);
            break;
        case 's':
            size = strtol(optarg, NULL, 10);
            break;
        case 'w':
            wait_ms = strtol(optarg, NULL, 10);
            break;
        case 'f':
            from = optarg;
            break;
        case 'r':
            rate = strtol(optarg, NULL, 10);
            break;
        case 'S':
            seconds = strtod(optarg, NULL);
            break;
        case 'a':
            alpn = optarg;
            break;
        case 'c':
            corrupt = 1;
            break;
        case 'T':
            tp_codepoint = (unsigned)strtoul(optarg, NULL, 16);
            break;
        default:
            return 2;
        }
    }
    if (!target || pos_addr_parse(target, strlen(target), 0, &to) != 0) {
        fprintf(stderr, "quic_probe: --to IP:PORT is required\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 2;
    pos_identity_generate(&id);
    if (pos_tls_creds_new(&creds, &id) != 0)
        return 2;
    if (!strcmp(argv[1], "initial"))
        rv = run_initial(version, size, wait_ms);
    else {
        signal(SIGTERM, on_signal);
        tp_codepoint = NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1;
        rv = run_flood(from, rate, seconds);
    }
    pos_tls_creds_del(creds);
    pos_identity_free(&id);
    return rv;
}
