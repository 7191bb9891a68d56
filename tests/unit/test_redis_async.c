/*
 * pos_redis_async (common/redis_async.c) against a real redis-server, started
 * by test_redis_async.py (env REDIS_URL). The command timeout tells a stuck
 * server from a busy one: while Redis keeps answering behind a queue, only
 * the commands past their deadline fail and the connection stays (nothing
 * else in flight is lost, no reconnect, no "down"); a server that answers
 * nothing for the whole timeout is dropped and reconnected as before. Late
 * answers never reach another command's callback.
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "redis_async.h"

#define TIMEOUT_MS 300
#define MAX_CMDS 64

/* Busy for ARGV[1] ms inside Redis (nothing else is served meanwhile), then ARGV[2]. */
static const char busy_lua[] = "local t = redis.call('TIME'); local s = t[1] * 1000000 + t[2]\n"
                               "repeat local u = redis.call('TIME') until u[1] * 1000000 + u[2] - "
                               "s >= tonumber(ARGV[1]) * 1000\n"
                               "return ARGV[2]\n";

static struct ev_loop *loop;
static int ups, downs;

struct answer {
    int done;
    int ok;       /* a string reply */
    char str[32]; /* its text */
    ev_tstamp at;
};

static void on_state(void *arg, int up)
{
    (void)arg;
    if (up)
        ups++;
    else
        downs++;
}

static void on_answer(void *arg, redisReply *reply)
{
    struct answer *a = arg;
    a->done++;
    a->at = ev_time();
    a->ok = reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS);
    snprintf(a->str, sizeof(a->str), "%s", a->ok ? reply->str : "");
}

static void on_stop(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ONE);
}

static void run_for(double s)
{
    ev_timer t;
    ev_timer_init(&t, on_stop, s, 0.);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

/* run_until: runs the loop until |n| answers are in (or |limit| seconds); 1 when they are. */
static int run_until(struct answer *a, int n, double limit)
{
    ev_tstamp end = ev_time() + limit;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += a[i].done > 0;
        if (done == n)
            return 1;
        if (ev_time() >= end)
            return 0;
        run_for(0.02);
    }
}

static int busy(pos_redis_async *r, int script, int ms, const char *tag, struct answer *a)
{
    static char pad[20000];
    char msarg[16];
    memset(pad, 'p', sizeof(pad) - 1);
    snprintf(msarg, sizeof(msarg), "%d", ms);
    const char *argv[] = {msarg, tag, pad};
    return pos_redis_async_eval(r, script, 0, 3, argv, NULL, on_answer, a);
}

/* echo_check: |n| ECHOs, each answered with its own text. */
static void echo_check(pos_redis_async *r, int n)
{
    struct answer a[MAX_CMDS];
    char text[MAX_CMDS][16];
    memset(a, 0, sizeof(a));
    for (int i = 0; i < n; i++) {
        snprintf(text[i], sizeof(text[i]), "echo-%d", i);
        CHECK(pos_redis_async_command(r, on_answer, &a[i], "ECHO %s", text[i]) == 0);
    }
    CHECK(run_until(a, n, 3.0));
    for (int i = 0; i < n; i++)
        CHECK(a[i].done == 1 && a[i].ok && strcmp(a[i].str, text[i]) == 0);
}

static void wait_up(pos_redis_async *r)
{
    ev_tstamp end = ev_time() + 10;
    while (!pos_redis_async_up(r) && ev_time() < end)
        run_for(0.02);
    CHECK(pos_redis_async_up(r));
}

/*
 * A queue: 30 commands of 30 ms each sent at once (0.9 s of Redis time; the
 * timeout is 0.3 s). Each carries 20 KB, more than Redis reads at a time
 * (16 KB), so Redis runs one per read and answers each as it finishes, as it
 * does with a burst of many small commands. The first ones are answered,
 * the later ones fail at their deadline, the connection stays up, and
 * commands sent afterwards get their own answers, not the late ones'.
 */
static void test_busy_server_keeps_the_connection(pos_redis_async *r, int script)
{
    enum { N = 30 };
    static struct answer a[N];
    static char tags[N][16];
    pos_redis_async_stats before, after;
    memset(a, 0, sizeof(a));
    pos_redis_async_stats_get(r, &before);
    int ups0 = ups, downs0 = downs;
    ev_tstamp t0 = ev_time();
    for (int i = 0; i < N; i++) {
        snprintf(tags[i], sizeof(tags[i]), "busy-%d", i);
        CHECK(busy(r, script, 30, tags[i], &a[i]) == 0);
    }
    CHECK(run_until(a, N, 5.0));
    int answered = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        CHECK(a[i].done == 1); /* each callback exactly once */
        if (a[i].ok) {
            CHECK(strcmp(a[i].str, tags[i]) == 0);
            CHECK(failed == 0); /* in order: nothing answered after one failed */
            answered++;
        } else {
            failed++;
            /* failed at its deadline, not when Redis got to it */
            CHECK(a[i].at - t0 < (TIMEOUT_MS + 150) / 1000.0);
        }
    }
    printf("busy Redis: %d answered, %d failed at their deadline\n", answered, failed);
    CHECK(answered >= 3 && failed >= 10);
    pos_redis_async_stats_get(r, &after);
    CHECK(after.late - before.late == (uint64_t)failed);
    CHECK(after.timeouts == before.timeouts); /* not dropped... */
    CHECK(after.reconnects == before.reconnects);
    CHECK(downs == downs0 && ups == ups0); /* ...nor reported down */
    CHECK(pos_redis_async_up(r));
    /* ECHOs sent 0.8 s in wait behind the last busy commands (0.9 s in all): the late
       answers come before theirs and go nowhere; each ECHO gets its own answer. */
    ev_tstamp wait = t0 + 0.8 - ev_time();
    if (wait > 0)
        run_for(wait);
    echo_check(r, 5);
    run_for(0.5);
    echo_check(r, 5);
}

/* One command that keeps Redis silent longer than the timeout: dropped, reconnected. */
static void test_stuck_server_is_dropped(pos_redis_async *r, int script)
{
    struct answer a[2];
    pos_redis_async_stats before, after;
    memset(a, 0, sizeof(a));
    pos_redis_async_stats_get(r, &before);
    int downs0 = downs, ups0 = ups;
    CHECK(busy(r, script, 900, "stuck", &a[0]) == 0);
    CHECK(pos_redis_async_command(r, on_answer, &a[1], "PING") == 0);
    CHECK(run_until(a, 2, 3.0));
    CHECK(a[0].done == 1 && !a[0].ok && a[1].done == 1 && !a[1].ok);
    pos_redis_async_stats_get(r, &after);
    CHECK(after.timeouts == before.timeouts + 1);
    CHECK(downs == downs0 + 1);
    wait_up(r);
    CHECK(ups == ups0 + 1);
    echo_check(r, 5);
}

int main(void)
{
    const char *url = getenv("REDIS_URL");
    pos_redis_target t;
    char err[256];
    if (!url || pos_redis_url_parse(url, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "test_redis_async: set REDIS_URL (started by test_redis_async.py)\n");
        return 2;
    }
    loop = ev_default_loop(0);
    pos_redis_async *r = pos_redis_async_new(loop, &t, TIMEOUT_MS, on_state, NULL);
    CHECK(r != NULL);
    if (!r)
        return check_finish("redis-async");
    int script = pos_redis_async_script_add(r, busy_lua);
    CHECK(script >= 0);
    wait_up(r);
    echo_check(r, 5);
    test_busy_server_keeps_the_connection(r, script);
    test_stuck_server_is_dropped(r, script);
    test_busy_server_keeps_the_connection(r, script); /* after a reconnect too */
    pos_redis_async_del(r);
    ev_loop_destroy(loop);
    return check_finish("redis-async");
}
