/*
 * The receiving limits of `pos-p2p listen` (listen_limits.c): the largest
 * file accepted, how many transfers may be in progress per peer and in all,
 * and when an abandoned part file expires. Command-line options (pos-p2p
 * has no configuration file), validated at start-up like the others;
 * docs/transfer.md, "Limits", lists them with their defaults.
 */
#ifndef POS_P2P_LISTEN_LIMITS_H
#define POS_P2P_LISTEN_LIMITS_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#define LISTEN_MAX_PER_PEER_CAP 63 /* a session carries at most 64 streams */

struct listen_limits {
    uint64_t max_file_size; /* bytes; 0: no limit but free space */
    unsigned max_transfers; /* in progress, all peers together */
    unsigned max_per_peer;  /* in progress, one peer id (all its sessions) */
    int64_t part_expiry_s;  /* abandoned part files go after this long; 0: never */
    int64_t idle_timeout_s; /* a transfer this long without data may lose its slot; 0: never */
    int64_t next_sweep_ms;  /* when the next expiry sweep may run */
};

/* Option codes (getopt_long values) of the limits. */
enum {
    LISTEN_OPT_MAX_FILE_SIZE = 0x200,
    LISTEN_OPT_MAX_TRANSFERS,
    LISTEN_OPT_MAX_PER_PEER,
    LISTEN_OPT_PART_EXPIRY,
    LISTEN_OPT_IDLE_TIMEOUT,
};

/* The entries of the limits for a getopt_long table. */
/* clang-format off */
#define LISTEN_LIMITS_LONGOPTS \
    {"max-file-size", required_argument, NULL, LISTEN_OPT_MAX_FILE_SIZE}, \
    {"max-transfers", required_argument, NULL, LISTEN_OPT_MAX_TRANSFERS}, \
    {"max-transfers-per-peer", required_argument, NULL, LISTEN_OPT_MAX_PER_PEER}, \
    {"part-expiry", required_argument, NULL, LISTEN_OPT_PART_EXPIRY}, \
    {"transfer-idle-timeout", required_argument, NULL, LISTEN_OPT_IDLE_TIMEOUT}
/* clang-format on */

/* The lines of `pos-p2p listen --help` for these options. */
extern const char listen_limits_usage[];

/* listen_limits_init: the defaults. */
void listen_limits_init(struct listen_limits *l);

/*
 * listen_limits_opt takes option |ch| with value |arg|: 1 when it was one of
 * the limits and valid, -1 when invalid (a message naming the option and
 * what it wants is on stderr), 0 when |ch| is not a limit.
 */
int listen_limits_opt(struct listen_limits *l, int ch, const char *arg);

/*
 * listen_limits_check_fds makes sure the file-descriptor limit leaves room
 * for max_transfers transfers (two descriptors each) and the rest of the
 * program, raising the soft limit when it can. 0, or -1 with a message.
 */
int listen_limits_check_fds(const struct listen_limits *l);

/*
 * listen_limits_admit: whether one more transfer may start, with
 * |peer_busy| in progress from that peer and |all_busy| in all. 1 yes; 0
 * no, with the reason for the sender in |reason| (|cap| bytes).
 */
int listen_limits_admit(const struct listen_limits *l, size_t peer_busy, size_t all_busy,
                        char *reason, size_t cap);

/*
 * listen_limits_sweep removes expired part files from |dir| now when
 * |force|, else at most once a minute; says on stdout how many went.
 */
void listen_limits_sweep(struct listen_limits *l, const char *dir, int force);

#endif
