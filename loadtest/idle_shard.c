/* Helper processes of `pos-loadtest idle` (idle_shard.h). */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idle_shard.h"
#include "relay_watch.h"

int idle_shard_spawn(struct idle_shard *s, int (*child)(void *arg, int cmd_fd, int st_fd),
                     void *arg)
{
    int down[2], up[2];
    memset(s, 0, sizeof(*s));
    if (pipe(down) != 0)
        return -1;
    if (pipe(up) != 0) {
        close(down[0]);
        close(down[1]);
        return -1;
    }
    fflush(NULL);
    s->pid = fork();
    if (s->pid < 0) {
        int e = errno;
        close(down[0]);
        close(down[1]);
        close(up[0]);
        close(up[1]);
        errno = e;
        return -1;
    }
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        close(down[1]);
        close(up[0]);
        fcntl(down[0], F_SETFL, O_NONBLOCK);
        _exit(child(arg, down[0], up[1]));
    }
    close(down[0]);
    close(up[1]);
    fcntl(up[0], F_SETFL, O_NONBLOCK);
    s->cmd_fd = down[1];
    s->st_fd = up[0];
    return 0;
}

int idle_shard_poll(struct idle_shard *s)
{
    int got = 0;
    for (;;) {
        char *nl = memchr(s->buf, '\n', s->len);
        if (nl) {
            *nl = 0;
            char kind = 0;
            long v[3] = {0, 0, 0};
            if (sscanf(s->buf, "%c %ld %ld %ld", &kind, &v[0], &v[1], &v[2]) >= 2) {
                s->kind = kind;
                memcpy(s->v, v, sizeof(v));
                got = 1;
            }
            s->len -= (size_t)(nl + 1 - s->buf);
            memmove(s->buf, nl + 1, s->len);
            continue;
        }
        if (s->gone || s->len == sizeof(s->buf))
            return got;
        ssize_t n = read(s->st_fd, s->buf + s->len, sizeof(s->buf) - s->len);
        if (n == 0)
            s->gone = 1;
        if (n <= 0)
            return got;
        s->len += (size_t)n;
    }
}

void idle_shard_send(struct idle_shard *s, char cmd)
{
    if (s->cmd_fd >= 0 && write(s->cmd_fd, &cmd, 1) != 1)
        s->gone = 1;
}

void idle_shard_end(struct idle_shard *s)
{
    if (s->pid <= 0)
        return;
    idle_shard_send(s, 'Q');
    close(s->cmd_fd);
    close(s->st_fd);
    s->cmd_fd = s->st_fd = -1;
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void idle_shard_report(int st_fd, char kind, long a, long b, long c)
{
    char line[96];
    int n = snprintf(line, sizeof(line), "%c %ld %ld %ld\n", kind, a, b, c);
    if (write(st_fd, line, (size_t)n) != n)
        return; /* the parent is gone: the helper ends with it */
}

char idle_shard_command(int cmd_fd)
{
    char c;
    ssize_t n = read(cmd_fd, &c, 1);
    if (n == 1)
        return c;
    return n == 0 ? 'Q' : 0;
}

/* ---- the helpers of one run together ---- */

struct helper_arg {
    long first, count, total, per_addr;
    const struct idle_load_conf *conf;
};

/* helper_main: a helper's life: its clients connect, then park when told, until 'Q'. */
static int helper_main(void *arg, int cmd_fd, int st_fd)
{
    const struct helper_arg *a = arg;
    struct idle_load_conf conf = *a->conf;
    struct idle_load_stats st;
    char err[256];
    int parking = 0;
    int64_t until = 0;
    memset(&st, 0, sizeof(st));
    conf.progress = 0;
    idle_pool *p = idle_pool_new(a->count, a->first, a->total, a->per_addr, err, sizeof(err));
    if (!p) {
        fprintf(stderr, "pos-loadtest idle: helper: %s\n", err);
        idle_shard_report(st_fd, 'A', 0, a->count, 0);
        return 1;
    }
    idle_load_connect(p, a->count, &conf, &st);
    idle_shard_report(st_fd, 'A', st.accepted, st.failed, st.retried);
    for (;;) {
        char cmd = idle_shard_command(cmd_fd);
        if (cmd == 'Q')
            break;
        if (cmd == 'E') {
            long v[3] = {0, 0, 0};
            idle_load_events(p, a->count, v);
            idle_shard_report(st_fd, 'E', v[0], v[1], v[2]);
        }
        if (cmd == 'P') {
            idle_load_park(p, a->count, &conf);
            parking = 1;
            /* as long as the measuring process waits (park_all) */
            until = pos_p2p_now_ms() + (conf.park_after_s + 60 + a->total / 1000) * 1000;
        }
        idle_load_pump_for(p, 200);
        if (parking) {
            long k = idle_load_parked(p, a->count);
            if (k >= st.accepted || pos_p2p_now_ms() > until) {
                malloc_trim(0); /* as the measuring process does */
                idle_shard_report(st_fd, 'P', k, 0, 0);
                parking = 0;
            }
        }
    }
    idle_pool_del(p);
    return 0;
}

int idle_team_start(struct idle_team *t, long first, long total, long share, long per_addr,
                    const struct idle_load_conf *conf, char *err, size_t errlen)
{
    int n = (int)((total - first + share - 1) / share);
    memset(t, 0, sizeof(*t));
    if (n <= 0)
        return 0;
    if (!(t->sh = calloc((size_t)n, sizeof(*t->sh)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int k = 0; k < n; k++) {
        long f = first + k * share;
        /* the fork copies this: each helper reads its own */
        struct helper_arg a = {f, total - f < share ? total - f : share, total, per_addr, conf};
        if (idle_shard_spawn(&t->sh[k], helper_main, &a) != 0) {
            snprintf(err, errlen, "cannot start a helper process: %s", strerror(errno));
            idle_team_end(t);
            return -1;
        }
        t->n = k + 1;
    }
    return 0;
}

void idle_team_wait(struct idle_team *t, idle_pool *p, char kind, long v[3])
{
    int done = 0;
    char *seen = calloc((size_t)t->n + 1, 1);
    while (seen && done < t->n) {
        idle_pool_pump(p, 50);
        for (int k = 0; k < t->n; k++) {
            if (seen[k])
                continue;
            idle_shard_poll(&t->sh[k]);
            if (t->sh[k].kind == kind || t->sh[k].gone) {
                seen[k] = 1;
                done++;
                for (int j = 0; j < 3 && t->sh[k].kind == kind; j++)
                    v[j] += t->sh[k].v[j];
            }
        }
    }
    free(seen);
}

void idle_team_park(struct idle_team *t)
{
    for (int k = 0; k < t->n; k++) {
        t->sh[k].kind = 0;
        idle_shard_send(&t->sh[k], 'P');
    }
}

void idle_team_events(struct idle_team *t, idle_pool *p, long v[3])
{
    for (int k = 0; k < t->n; k++) {
        t->sh[k].kind = 0;
        idle_shard_send(&t->sh[k], 'E');
    }
    idle_team_wait(t, p, 'E', v);
}

long idle_team_rss_kib(const struct idle_team *t)
{
    long sum = 0;
    for (int k = 0; k < t->n; k++) {
        long v = proc_rss_kib(t->sh[k].pid);
        sum += v > 0 ? v : 0;
    }
    return sum;
}

void idle_team_end(struct idle_team *t)
{
    for (int k = 0; k < t->n; k++)
        idle_shard_end(&t->sh[k]);
    free(t->sh);
    t->sh = NULL;
    t->n = 0;
}
