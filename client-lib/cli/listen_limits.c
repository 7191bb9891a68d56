/*
 * Limits of `pos-p2p listen` (listen_limits.h): option parsing with units,
 * the file-descriptor budget, admission of a new transfer, and the expiry
 * sweep of abandoned part files.
 */
#include "listen_limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pos/p2p.h"
#include "transfer.h"

#define FDS_PER_TRANSFER 2 /* the directory and the part file */
#define FDS_RESERVED 64    /* sockets, identity, stdio, libraries */
#define SWEEP_EVERY_MS (60 * 1000)

const char listen_limits_usage[] =
    "  --max-file-size SIZE  refuse larger files (default 64G; units K, M, G, T: powers of\n"
    "                     1024; 0: no limit but free space). Offers larger than the free\n"
    "                     space are refused too\n"
    "  --max-transfers N  files received at the same time, all peers together\n"
    "                     (default 64, 1..4096); more are refused with a reason\n"
    "  --max-transfers-per-peer N  files received at the same time from one peer, all its\n"
    "                     sessions together (default 8, 1..63)\n"
    "  --part-expiry DURATION  remove part files of interrupted transfers not written for\n"
    "                     this long (default 24h; units s, m, h, d; 0: keep them), at start\n"
    "                     and then at most once a minute when a transfer begins\n"
    "  --transfer-idle-timeout DURATION  a transfer that received nothing for this long\n"
    "                     gives its slot to a new one when a limit above is reached\n"
    "                     (default 60s; 0: never)\n";

void listen_limits_init(struct listen_limits *l)
{
    memset(l, 0, sizeof *l);
    l->max_file_size = 64ULL << 30;
    l->max_transfers = 64;
    l->max_per_peer = 8;
    l->part_expiry_s = 24 * 3600;
    l->idle_timeout_s = 60;
}

/* "123", "64G", "1.5T", "10MiB"...: bytes in |*out|; -1 when not a size. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return -1;
    double mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1024.0, end++;
        break;
    case 'm':
    case 'M':
        mult = 1024.0 * 1024, end++;
        break;
    case 'g':
    case 'G':
        mult = 1024.0 * 1024 * 1024, end++;
        break;
    case 't':
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024, end++;
        break;
    default:
        break;
    }
    if (mult > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end || v * mult >= 18446744073709551615.0)
        return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

/* "90", "90s", "15m", "24h", "7d": seconds in |*out|; -1 when not a duration. */
static int parse_duration(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    int64_t mult = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mult = 60, end++;
    else if (*end == 'h')
        mult = 3600, end++;
    else if (*end == 'd')
        mult = 86400, end++;
    if (*end || v > 3650LL * 86400 / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_count(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *end || errno || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int listen_limits_opt(struct listen_limits *l, int ch, const char *arg)
{
    switch (ch) {
    case LISTEN_OPT_MAX_FILE_SIZE:
        if (parse_size(arg, &l->max_file_size) == 0)
            return 1;
        fprintf(stderr,
                "pos-p2p listen: --max-file-size \"%s\" is not a size: a number with an optional "
                "unit K, M, G or T (for example 500M or 64G), 0 for no limit\n",
                arg);
        return -1;
    case LISTEN_OPT_MAX_TRANSFERS:
        if (parse_count(arg, 1, 4096, &l->max_transfers) == 0)
            return 1;
        fprintf(stderr, "pos-p2p listen: --max-transfers wants a number from 1 to 4096\n");
        return -1;
    case LISTEN_OPT_MAX_PER_PEER:
        if (parse_count(arg, 1, LISTEN_MAX_PER_PEER_CAP, &l->max_per_peer) == 0)
            return 1;
        fprintf(stderr, "pos-p2p listen: --max-transfers-per-peer wants a number from 1 to %d\n",
                LISTEN_MAX_PER_PEER_CAP);
        return -1;
    case LISTEN_OPT_PART_EXPIRY:
        if (parse_duration(arg, &l->part_expiry_s) == 0)
            return 1;
        fprintf(stderr,
                "pos-p2p listen: --part-expiry \"%s\" is not a duration: a whole number with "
                "an optional unit s, m, h or d (for example 24h), up to 10 years; 0 keeps "
                "part files\n",
                arg);
        return -1;
    case LISTEN_OPT_IDLE_TIMEOUT:
        if (parse_duration(arg, &l->idle_timeout_s) == 0)
            return 1;
        fprintf(stderr,
                "pos-p2p listen: --transfer-idle-timeout \"%s\" is not a duration: a whole "
                "number with an optional unit s, m, h or d (for example 60s); 0 for never\n",
                arg);
        return -1;
    default:
        return 0;
    }
}

int listen_limits_check_fds(const struct listen_limits *l)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)l->max_transfers * FDS_PER_TRANSFER + FDS_RESERVED;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) {
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            return 0;
    }
    fprintf(stderr,
            "pos-p2p listen: --max-transfers %u needs %llu file descriptors, but the limit is "
            "%llu (ulimit -n): lower --max-transfers or raise the limit\n",
            l->max_transfers, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
    return -1;
}

int listen_limits_admit(const struct listen_limits *l, size_t peer_busy, size_t all_busy,
                        char *reason, size_t cap)
{
    if (peer_busy >= l->max_per_peer) {
        snprintf(reason, cap, "%s: %u from your device already (--max-transfers-per-peer)",
                 pos_xfer_strerror(POS_XFER_ERR_BUSY), l->max_per_peer);
        return 0;
    }
    if (all_busy >= l->max_transfers) {
        snprintf(reason, cap, "%s: %u already, try again later (--max-transfers)",
                 pos_xfer_strerror(POS_XFER_ERR_BUSY), l->max_transfers);
        return 0;
    }
    return 1;
}

void listen_limits_sweep(struct listen_limits *l, const char *dir, int force)
{
    unsigned removed = 0;
    int64_t now = pos_p2p_now_ms();
    if (l->part_expiry_s == 0 || (!force && now < l->next_sweep_ms))
        return;
    l->next_sweep_ms = now + SWEEP_EVERY_MS;
    if (pos_xfer_sweep_parts(dir, l->part_expiry_s, &removed) != 0)
        fprintf(stderr, "pos-p2p listen: cannot read %s to remove expired part files\n", dir);
    else if (removed)
        printf("removed %u expired part file(s) (not written for %lld s: --part-expiry)\n", removed,
               (long long)l->part_expiry_s);
    fflush(stdout);
}
