/*
 * pos-fwdbench: measures the relay's forwarding hot path (relay/forward.c)
 * as a real UDP forwarder on loopback, for comparison with a bare
 * recvmmsg/sendmmsg forwarder (loadtest/bench-forward.sh runs both).
 *
 * One run: a circuit table with N circuits is built, then three processes
 * share it: the forwarder (recvmmsg -> relay_forward_batch -> sendmmsg, on
 * its own port), a generator that sends DATA frames round-robin over the N
 * circuits' first sides, and a sink that counts what arrives on the second
 * sides' address. The forwarder prints packets forwarded per CPU-second of
 * its own process, like the bare forwarder does.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "circuit.h"
#include "forward.h"
#include "frame.h"

#define BATCH 64
#define BUF_LEN 2048

struct opts {
    unsigned circuits;
    unsigned size;
    unsigned seconds;
    unsigned gso;
    int json;
    int no_io;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: pos-fwdbench [--circuits N] [--size BYTES] [--duration SECONDS] [--gso SEGMENTS]\n"
        "                    [--no-io] [--json]\n"
        "\n"
        "Runs the relay's forwarding path (relay_forward_batch with recvmmsg/sendmmsg)\n"
        "on loopback: a generator sends DATA frames of BYTES bytes round-robin over N\n"
        "circuits for SECONDS, the forwarder rewrites and forwards them to a sink.\n"
        "Prints packets forwarded per CPU-second of the forwarder process.\n"
        "--gso joins consecutive datagrams to one destination into UDP GSO sends of\n"
        "up to SEGMENTS segments (here every circuit's far side is the one sink: the\n"
        "best case, like one bulk transfer).\n"
        "Defaults: --circuits 1000 --size 1200 --duration 5.\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"circuits", required_argument, NULL, 'c'}, {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"json", no_argument, NULL, 'j'},
        {"gso", required_argument, NULL, 'g'},      {"no-io", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    *o = (struct opts){1000, 1200, 5, 0, 0, 0};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_uint(optarg, 1, 100000, &o->circuits) != 0) {
                fprintf(stderr, "pos-fwdbench: --circuits wants a number from 1 to 100000\n");
                return 2;
            }
            break;
        case 's':
            if (parse_uint(optarg, POS_FRAME_HEADER_LEN + 1, POS_FRAME_MAX_LEN, &o->size) != 0) {
                fprintf(stderr, "pos-fwdbench: --size wants a number from %d to %d\n",
                        POS_FRAME_HEADER_LEN + 1, POS_FRAME_MAX_LEN);
                return 2;
            }
            break;
        case 'd':
            if (parse_uint(optarg, 1, 600, &o->seconds) != 0) {
                fprintf(stderr, "pos-fwdbench: --duration wants seconds from 1 to 600\n");
                return 2;
            }
            break;
        case 'j':
            o->json = 1;
            break;
        case 'n':
            o->no_io = 1;
            break;
        case 'g':
            if (parse_uint(optarg, 0, RELAY_FORWARD_GSO_MAX_SEGMENTS, &o->gso) != 0) {
                fprintf(stderr, "pos-fwdbench: --gso wants a number from 0 to %d\n",
                        RELAY_FORWARD_GSO_MAX_SEGMENTS);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pos-fwdbench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* A UDP socket on 127.0.0.1 with an ephemeral port and big buffers; -errno on failure. */
static int loopback_socket(struct sockaddr_in *bound)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)bound, &len) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The forwarder process: until |end|, recvmmsg -> relay_forward_batch -> sendmmsg. */
static int run_forwarder(int fd, relay_circuits *t, time_t end, unsigned gso, int json)
{
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    static uint8_t bufs[BATCH][BUF_LEN];
    static struct sockaddr_in6 names[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr in[BATCH], out[BATCH];
    unsigned quic[BATCH], n_quic;
    unsigned long long sent = 0;
    if (fw == NULL) {
        fprintf(stderr, "pos-fwdbench: out of memory\n");
        return 1;
    }
    relay_forwarder_set_gso(fw, gso);
    while (time(NULL) < end) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = BUF_LEN;
            memset(&in[i].msg_hdr, 0, sizeof in[i].msg_hdr);
            in[i].msg_hdr.msg_name = &names[i];
            in[i].msg_hdr.msg_namelen = sizeof names[i];
            in[i].msg_hdr.msg_iov = &iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(fd, in, BATCH, 0, NULL);
        if (r <= 0)
            continue;
        int n = relay_forward_batch(fw, in, (unsigned)r, AF_INET, out, quic, &n_quic);
        if (n > 0) {
            int s = sendmmsg(fd, out, (unsigned)n, 0);
            for (int k = 0; k < s; k++) /* one datagram per iovec (GSO segments) */
                sent += out[k].msg_hdr.msg_iovlen;
            if (s < 0 && fw->gso_max > 1 && (errno == EIO || errno == EINVAL)) {
                fprintf(stderr, "pos-fwdbench: UDP GSO not supported here, turned off\n");
                relay_forwarder_set_gso(fw, 0);
            }
        }
    }
    double cpu = cpu_seconds();
    const relay_forward_stats *st = &fw->stats;
    unsigned long long dropped = st->drop_malformed + st->drop_unknown_type +
                                 st->drop_unknown_circuit + st->drop_wrong_source +
                                 st->drop_budget + st->drop_unroutable + st->drop_truncated;
    if (json)
        printf("{\"forwarded\": %llu, \"dropped\": %llu, \"cpu_s\": %.3f, "
               "\"pkts_per_cpu_s\": %.0f}\n",
               sent, dropped, cpu, cpu > 0 ? (double)sent / cpu : 0.0);
    else
        printf("forwarded=%llu dropped=%llu cpu_s=%.3f pkts_per_cpu_s=%.0f\n", sent, dropped, cpu,
               cpu > 0 ? (double)sent / cpu : 0.0);
    fflush(stdout);
    relay_forwarder_del(fw);
    return 0;
}

/* The sink process: counts datagrams until |end|. */
static int run_sink(int fd, time_t end, int json)
{
    static uint8_t bufs[BATCH][BUF_LEN];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    unsigned long long n = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = BUF_LEN;
            memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        int k = recvmmsg(fd, m, BATCH, 0, NULL);
        if (k > 0)
            n += (unsigned long long)k;
    }
    printf(json ? "{\"received\": %llu}\n" : "received=%llu\n", n);
    fflush(stdout);
    return 0;
}

/* The generator: DATA frames round-robin over the circuits' first sides, until |end|. */
static unsigned long long run_generator(int fd, const struct sockaddr_in *fwd, const uint32_t *ids,
                                        unsigned n_ids, unsigned size, time_t end)
{
    static uint8_t bufs[BATCH][BUF_LEN];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    unsigned long long sent = 0;
    unsigned next = 0;
    for (int i = 0; i < BATCH; i++) {
        memset(bufs[i] + POS_FRAME_HEADER_LEN, 7, size - POS_FRAME_HEADER_LEN);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = size;
        memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
        m[i].msg_hdr.msg_name = (void *)fwd;
        m[i].msg_hdr.msg_namelen = sizeof *fwd;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    while (time(NULL) < end) {
        for (int i = 0; i < BATCH; i++) {
            pos_frame_encode_data(bufs[i], BUF_LEN, ids[next], bufs[i] + POS_FRAME_HEADER_LEN,
                                  size - POS_FRAME_HEADER_LEN);
            next = next + 1 == n_ids ? 0 : next + 1;
        }
        int s = sendmmsg(fd, m, BATCH, 0);
        if (s > 0)
            sent += (unsigned long long)s;
    }
    return sent;
}

static double process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/*
 * The forwarding logic alone: the same batch of frames (round-robin over the
 * circuits, from the generator's address) through relay_forward_batch again
 * and again, the circuit ids set back before each pass.
 */
static int run_no_io(relay_circuits *t, const uint32_t *ids, const struct sockaddr_in *gen,
                     const struct opts *o)
{
    relay_forwarder *fw = relay_forwarder_new(t, BATCH, NULL, NULL);
    static uint8_t bufs[BATCH][BUF_LEN];
    struct sockaddr_in names[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr in[BATCH], out[BATCH];
    uint32_t batch_ids[BATCH];
    unsigned quic[BATCH], n_quic, next = 0;
    unsigned long long packets = 0;
    if (fw == NULL)
        return 1;
    relay_forwarder_set_gso(fw, o->gso);
    for (int i = 0; i < BATCH; i++) {
        batch_ids[i] = ids[next];
        next = (next + 1) % o->circuits;
        memset(bufs[i] + POS_FRAME_HEADER_LEN, 7, o->size - POS_FRAME_HEADER_LEN);
        pos_frame_encode_data(bufs[i], BUF_LEN, batch_ids[i], bufs[i] + POS_FRAME_HEADER_LEN,
                              o->size - POS_FRAME_HEADER_LEN);
        names[i] = *gen;
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = BUF_LEN;
        memset(&in[i], 0, sizeof in[i]);
        in[i].msg_hdr.msg_name = &names[i];
        in[i].msg_hdr.msg_namelen = sizeof names[i];
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_len = o->size;
    }
    double start = process_cpu_ns(), limit = start + 1e9 * o->seconds, now = start;
    while (now < limit) {
        for (int round = 0; round < 1000; round++) {
            for (int i = 0; i < BATCH; i++)
                pos_frame_set_circuit(bufs[i], batch_ids[i]);
            if (relay_forward_batch(fw, in, BATCH, AF_INET, out, quic, &n_quic) < 0)
                return 1;
        }
        packets += 1000ull * BATCH;
        now = process_cpu_ns();
    }
    double ns = packets ? (now - start) / (double)packets : 0;
    printf(o->json ? "{\"packets\": %llu, \"forwarded\": %llu, \"ns_per_packet\": %.1f}\n"
                   : "packets=%llu forwarded=%llu ns_per_packet=%.1f\n",
           packets, (unsigned long long)fw->stats.forwarded, ns);
    relay_forwarder_del(fw);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;

    struct sockaddr_in fwd_addr, gen_addr, sink_addr;
    int fwd_fd = loopback_socket(&fwd_addr), gen_fd = loopback_socket(&gen_addr);
    int sink_fd = loopback_socket(&sink_addr);
    if (fwd_fd < 0 || gen_fd < 0 || sink_fd < 0) {
        fprintf(stderr, "pos-fwdbench: cannot open a loopback UDP socket: %s\n",
                strerror(-(fwd_fd < 0   ? fwd_fd
                           : gen_fd < 0 ? gen_fd
                                        : sink_fd)));
        return 1;
    }

    /* Side 0 of every circuit is the generator, side 1 the sink; each side its own owner. */
    relay_circuits *t = relay_circuits_new(o.circuits, (uint32_t)getpid());
    relay_circuit_owner *owners = calloc(2 * (size_t)o.circuits, sizeof *owners);
    uint32_t *ids = calloc(o.circuits, sizeof *ids);
    if (t == NULL || owners == NULL || ids == NULL) {
        fprintf(stderr, "pos-fwdbench: out of memory\n");
        return 1;
    }
    for (unsigned i = 0; i < o.circuits; i++) {
        uint32_t pair[2];
        if (relay_circuit_open(t, &owners[2 * i], (struct sockaddr *)&gen_addr, NULL,
                               &owners[2 * i + 1], (struct sockaddr *)&sink_addr, NULL, 0,
                               pair) != 0) {
            fprintf(stderr, "pos-fwdbench: cannot open circuit %u\n", i);
            return 1;
        }
        ids[i] = pair[0];
    }
    if (o.no_io) {
        rc = run_no_io(t, ids, &gen_addr, &o);
        free(ids);
        free(owners);
        relay_circuits_del(t);
        return rc;
    }

    time_t start = time(NULL);
    fflush(stdout);
    pid_t fwd_pid = fork();
    if (fwd_pid == 0)
        _exit(run_forwarder(fwd_fd, t, start + (time_t)o.seconds + 1, o.gso, o.json));
    pid_t sink_pid = fork();
    if (sink_pid == 0)
        _exit(run_sink(sink_fd, start + (time_t)o.seconds + 2, o.json));
    if (fwd_pid < 0 || sink_pid < 0) {
        fprintf(stderr, "pos-fwdbench: fork failed: %s\n", strerror(errno));
        if (fwd_pid > 0)
            kill(fwd_pid, SIGTERM);
        if (sink_pid > 0)
            kill(sink_pid, SIGTERM);
        return 1;
    }
    unsigned long long sent =
        run_generator(gen_fd, &fwd_addr, ids, o.circuits, o.size, start + (time_t)o.seconds);
    printf(o.json ? "{\"sent\": %llu}\n" : "sent=%llu\n", sent);
    fflush(stdout);
    int status, ok = 1;
    ok &= waitpid(fwd_pid, &status, 0) == fwd_pid && WIFEXITED(status) && !WEXITSTATUS(status);
    ok &= waitpid(sink_pid, &status, 0) == sink_pid && WIFEXITED(status) && !WEXITSTATUS(status);
    free(ids);
    free(owners);
    relay_circuits_del(t);
    close(fwd_fd);
    close(gen_fd);
    close(sink_fd);
    if (!ok) {
        fprintf(stderr, "pos-fwdbench: the forwarder or the sink failed\n");
        return 1;
    }
    return 0;
}
