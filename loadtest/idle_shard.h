/*
 * Helper processes of `pos-loadtest idle`: a process may hold only so many
 * file descriptors (RLIMIT_NOFILE, whose hard limit only a privileged
 * process raises) and each client needs one, so 50,000 clients may need
 * several processes. Each helper is forked before the measuring process
 * opens anything, runs its share of the clients (idle_load.h) and talks
 * with the parent over two pipes: one-byte commands down ('P' park, 'Q'
 * quit; end of file: quit too), one-line reports up ("A accepted failed
 * retried", "P parked"; 'E' asks for "E parked-events woken lost",
 * idle_load_events). A helper also ends when the parent dies
 * (PR_SET_PDEATHSIG).
 */
#ifndef POS_LOADTEST_IDLE_SHARD_H
#define POS_LOADTEST_IDLE_SHARD_H

#include <stddef.h>
#include <sys/types.h>

struct idle_shard {
    pid_t pid;
    int cmd_fd, st_fd; /* parent's ends: commands out, reports in */
    char buf[256];
    size_t len;
    char kind; /* the latest report: 'A', 'P' (0: none yet) */
    long v[3]; /* its numbers */
    int gone;  /* the helper closed its end */
};

/*
 * idle_shard_spawn forks a helper that runs child(arg, cmd_fd, st_fd) and
 * exits with its status. 0, or -1 with errno set.
 */
int idle_shard_spawn(struct idle_shard *s, int (*child)(void *arg, int cmd_fd, int st_fd),
                     void *arg);
/* idle_shard_poll: reads what the helper reported; 1 when a new report came (kind, v). */
int idle_shard_poll(struct idle_shard *s);
void idle_shard_send(struct idle_shard *s, char cmd);
/* idle_shard_end: 'Q', then waits for the helper to exit. */
void idle_shard_end(struct idle_shard *s);

/* In the helper: idle_shard_report writes one report; idle_shard_command reads a command
 * (0 none waiting, 'Q' also for end of file). */
void idle_shard_report(int st_fd, char kind, long a, long b, long c);
char idle_shard_command(int cmd_fd);

#endif

/* ---- the helpers of one run together ---- */
#include "idle_load.h"

struct idle_team {
    struct idle_shard *sh;
    int n;
};

/*
 * idle_team_start forks helpers for clients |first| .. |total| - 1 (of
 * |total| in all), |share| each; each connects its clients with |conf|
 * right away. 0, or -1 with a sentence in |err|.
 */
int idle_team_start(struct idle_team *t, long first, long total, long share, long per_addr,
                    const struct idle_load_conf *conf, char *err, size_t errlen);
/*
 * idle_team_wait serves |p| (this process's clients) until every helper
 * has reported |kind| ('A' connected, 'P' parked) or ended; adds their
 * numbers to |v| (A: accepted, failed, retried; P: parked).
 */
void idle_team_wait(struct idle_team *t, idle_pool *p, char kind, long v[3]);
/* idle_team_park: every helper's clients park; their 'P' reports follow. */
void idle_team_park(struct idle_team *t);
/* idle_team_events: the helpers' idle_load_events, added to |v| (serving |p| meanwhile). */
void idle_team_events(struct idle_team *t, idle_pool *p, long v[3]);
/* idle_team_rss_kib: the helpers' RSS together. */
long idle_team_rss_kib(const struct idle_team *t);
void idle_team_end(struct idle_team *t);
