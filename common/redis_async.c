/*
 * Asynchronous Redis client on libev (see redis_async.h). Two connections,
 * each a `struct conn` with its own reconnect timer: `cmd` for commands and
 * scripts, `sub` for the one pub/sub subscription.
 *
 * Every command in flight on `cmd` is a `struct request` in a FIFO list;
 * Redis answers in order, so only the oldest can be late, and one ev_timer
 * armed for it implements the command timeout. hiredis owns a request's
 * privdata until it calls on_reply (with the answer, or NULL when the context
 * is freed), which is where a request is freed.
 */
#include "redis_async.h"

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "log.h"
#include "resolve.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define MAX_EVAL_ARGS 32

struct request {
    struct request *prev, *next;
    pos_redis_async *r;
    pos_redis_async_reply_cb cb; /* may be NULL: nobody waits for the answer */
    void *arg;
    ev_tstamp deadline;
    int script; /* handle, or -1 */
    int retried;
    int internal; /* SELECT, SCRIPT LOAD or PING sent by this module */
    int ping;     /* the PING that makes the connection ready */
    int info;     /* the INFO memory that checks the eviction policy */
    int late;     /* answered NULL at its deadline; Redis's answer, when it comes, is dropped */
    /* For scripts only: a copy of the arguments, to send again after NOSCRIPT. */
    int argc;
    char **argv;
    size_t *argvlen;
};

struct conn {
    pos_redis_async *r;
    redisAsyncContext *ac;
    int connected; /* hiredis reported the connection established */
    int ready;     /* cmd: the server answered our PING, commands may go */
    int warned;    /* this outage was logged */
    int is_sub;
    unsigned backoff_ms;
    ev_timer retry;
    ev_timer connect_timeout;
    /* A host name is resolved off the loop before each round of attempts. */
    pos_resolve *resolving;
    struct sockaddr_storage addrs[POS_RESOLVE_MAX_ADDRS];
    int naddrs, next_addr; /* next_addr: the address the next attempt uses */
};

struct script {
    const char *source;
    char sha[41]; /* "" until SCRIPT LOAD answered */
};

struct pos_redis_async {
    struct ev_loop *loop;
    pos_redis_target target;
    ev_tstamp timeout;
    pos_redis_async_state_cb state_cb;
    void *state_arg;
    struct conn cmd, sub;
    struct request *head, *tail; /* in flight on cmd, oldest first (late ones left out) */
    ev_timer cmd_timer;
    ev_tstamp last_answer; /* when cmd last read an answer */
    struct script scripts[POS_REDIS_MAX_SCRIPTS];
    int nscripts;
    char *channel;
    pos_redis_async_message_cb message_cb;
    void *message_arg;
    int closing;
    pos_redis_async_stats stats;
};

static void start_connect(struct conn *c);

/* ---- request list ---- */

static void list_push(pos_redis_async *r, struct request *q)
{
    q->next = NULL;
    q->prev = r->tail;
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    if (!ev_is_active(&r->cmd_timer)) {
        ev_timer_set(&r->cmd_timer, r->timeout, 0.);
        ev_timer_start(r->loop, &r->cmd_timer);
    }
}

static void list_remove(pos_redis_async *r, struct request *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else if (r->head == q)
        r->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else if (r->tail == q)
        r->tail = q->prev;
    q->prev = q->next = NULL;
}

static void request_free(struct request *q)
{
    free(q->argv); /* one block holds the vector, the lengths and the bytes */
    free(q);
}

/* ---- connections ---- */

static void schedule_retry(struct conn *c)
{
    pos_redis_async *r = c->r;
    if (r->closing)
        return;
    c->naddrs = 0; /* the next round resolves the name again */
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    ev_timer_stop(r->loop, &c->retry);
    ev_timer_set(&c->retry, c->backoff_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &c->retry);
}

/*
 * drop closes |c| at once. hiredis runs the pending callbacks with NULL and,
 * when the connection had been established, on_disconnect (which schedules
 * the reconnect); otherwise we schedule it here.
 */
static void drop(struct conn *c)
{
    redisAsyncContext *ac = c->ac;
    if (c->resolving) {
        pos_resolve_cancel(c->resolving);
        c->resolving = NULL;
        ev_timer_stop(c->r->loop, &c->connect_timeout);
        schedule_retry(c);
        return;
    }
    if (!ac)
        return;
    ev_timer_stop(c->r->loop, &c->connect_timeout);
    if (c->connected) {
        redisAsyncFree(ac); /* on_disconnect clears c->ac */
    } else {
        c->ac = NULL;
        redisAsyncFree(ac);
        schedule_retry(c);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    pos_redis_async *r = c->r;
    (void)status;
    int was_ready = c->ready;
    c->ac = NULL;
    c->connected = 0;
    c->ready = 0;
    if (r->closing)
        return;
    if (!c->is_sub) {
        pos_log(was_ready ? POS_LOG_WARN : POS_LOG_DEBUG, "lost the connection to Redis: %s",
                ac->errstr[0] ? ac->errstr : "closed");
        /* The subscriber shares the server's fate: restart it too. */
        drop(&r->sub);
        if (was_ready && r->state_cb)
            r->state_cb(r->state_arg, 0);
    }
    schedule_retry(c);
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    pos_redis_async *r = privdata;
    redisReply *m = reply;
    (void)ac;
    if (!m || r->closing || !r->message_cb || m->type != REDIS_REPLY_ARRAY || m->elements < 3)
        return;
    for (int i = 0; i < 3; i++) {
        if (m->element[i]->type != REDIS_REPLY_STRING && m->element[i]->type != REDIS_REPLY_INTEGER)
            return;
    }
    if (m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(m->element[0]->str, "message") == 0 && m->element[2]->type == REDIS_REPLY_STRING)
        r->message_cb(r->message_arg, m->element[1]->str, m->element[2]->str, m->element[2]->len);
    else if (strcmp(m->element[0]->str, "subscribe") == 0)
        r->message_cb(r->message_arg, m->element[1]->str, NULL, 0);
}

static void send_subscribe(pos_redis_async *r)
{
    if (r->sub.ac && r->sub.connected && r->channel)
        redisAsyncCommand(r->sub.ac, on_message, r, "SUBSCRIBE %s", r->channel);
}

static void on_internal_reply(pos_redis_async *r, struct request *q, redisReply *reply);

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct request *q = privdata;
    pos_redis_async *r = q->r;
    (void)ac;
    if (reply)
        r->last_answer = ev_now(r->loop);
    if (q->late) { /* its caller was told it failed: the answer goes nowhere */
        request_free(q);
        return;
    }
    list_remove(r, q);
    if (r->closing) {
        request_free(q);
        return;
    }
    on_internal_reply(r, q, reply);
}

static int send_request(pos_redis_async *r, struct request *q, int argc, const char **argv,
                        const size_t *argvlen)
{
    /* Our own setup commands go first; the caller's only once the server answered PING. */
    if (!r->cmd.ac || !r->cmd.connected || (!q->internal && !r->cmd.ready))
        return -1;
    if (redisAsyncCommandArgv(r->cmd.ac, on_reply, q, argc, argv, argvlen) != REDIS_OK)
        return -1;
    q->deadline = ev_now(r->loop) + r->timeout;
    list_push(r, q);
    r->stats.commands++;
    return 0;
}

/* Internal command whose reply is only checked (SELECT, SCRIPT LOAD, PING). */
static void send_internal(pos_redis_async *r, int script, int argc, const char **argv)
{
    struct request *q = calloc(1, sizeof(*q));
    if (!q)
        return;
    q->r = r;
    q->script = script;
    q->ping = argc == 1 && strcmp(argv[0], "PING") == 0;
    q->info = strcmp(argv[0], "INFO") == 0;
    q->retried = 1;
    q->internal = 1;
    if (send_request(r, q, argc, argv, NULL) != 0)
        request_free(q);
}

static void load_script(pos_redis_async *r, int handle)
{
    const char *argv[] = {"SCRIPT", "LOAD", r->scripts[handle].source};
    send_internal(r, handle, 3, argv);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    pos_redis_async *r = c->r;
    ev_timer_stop(r->loop, &c->connect_timeout);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        if (c->next_addr < c->naddrs) {
            /* The name has more addresses (localhost: ::1, then 127.0.0.1): try the next now. */
            pos_log_debug("Redis connection failed: %s; trying the next address", ac->errstr);
            c->ac = NULL;
            ev_timer_stop(r->loop, &c->retry);
            ev_timer_set(&c->retry, 0., 0.);
            ev_timer_start(r->loop, &c->retry);
            return;
        }
        if (!c->warned && !c->is_sub) {
            char target[600];
            pos_redis_target_format(&r->target, target, sizeof(target));
            pos_log_warn("cannot connect to Redis at %s: %s; retrying", target, ac->errstr);
            c->warned = 1;
        }
        pos_log_debug("Redis connection failed: %s", ac->errstr);
        c->ac = NULL;
        schedule_retry(c);
        return;
    }
    c->connected = 1;
    if (c->is_sub) {
        c->backoff_ms = 0;
        send_subscribe(r);
        return;
    }
    r->stats.reconnects++;
    if (r->target.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->target.db);
        const char *argv[] = {"SELECT", db};
        send_internal(r, -1, 2, argv);
    }
    for (int i = 0; i < r->nscripts; i++) {
        if (!r->scripts[i].sha[0])
            load_script(r, i);
    }
    /* Before any command of ours: a server that may evict our keys is refused. */
    const char *info[] = {"INFO", "memory"};
    send_internal(r, -1, 2, info);
    /* A stopped server still completes TCP handshakes: only an answer proves it is alive. */
    const char *ping[] = {"PING"};
    send_internal(r, -1, 1, ping);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;
    (void)loop;
    (void)revents;
    pos_log_debug("Redis connection attempt timed out");
    drop(c);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    start_connect(w->data);
}

/* connect_to opens the hiredis connection to |host| (numeric: hiredis does no lookup). */
static void connect_to(struct conn *c, const char *host)
{
    pos_redis_async *r = c->r;
    redisAsyncContext *ac = r->target.is_unix ? redisAsyncConnectUnix(r->target.path)
                                              : redisAsyncConnect(host, r->target.port);
    if (!ac) {
        schedule_retry(c);
        return;
    }
    if (ac->err) {
        pos_log_debug("Redis connection failed: %s", ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->connected = 0;
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ev_timer_stop(r->loop, &c->connect_timeout);
    ev_timer_set(&c->connect_timeout, r->timeout, 0.);
    ev_timer_start(r->loop, &c->connect_timeout);
}

static void connect_next(struct conn *c)
{
    char text[POS_ADDR_STRLEN];
    pos_addr_format((struct sockaddr *)&c->addrs[c->next_addr++], text, sizeof(text));
    /* pos_addr_format writes ip:port or [ip6]:port: keep the address only. */
    char *colon = strrchr(text, ':');
    if (colon)
        *colon = '\0';
    const char *host = text;
    if (text[0] == '[') {
        host = text + 1;
        text[strlen(text) - 1] = '\0';
    }
    connect_to(c, host);
}

static void on_resolved(void *arg, const struct sockaddr_storage *addrs, int n, const char *err)
{
    struct conn *c = arg;
    pos_redis_async *r = c->r;
    c->resolving = NULL;
    ev_timer_stop(r->loop, &c->connect_timeout);
    if (n == 0) {
        if (!c->warned && !c->is_sub) {
            pos_log_warn("Redis: %s; retrying", err);
            c->warned = 1;
        }
        schedule_retry(c);
        return;
    }
    memcpy(c->addrs, addrs, (size_t)n * sizeof(addrs[0]));
    c->naddrs = n;
    c->next_addr = 0;
    connect_next(c);
}

static void start_connect(struct conn *c)
{
    pos_redis_async *r = c->r;
    if (r->target.is_unix || pos_resolve_is_numeric(r->target.host)) {
        connect_to(c, r->target.host);
        return;
    }
    if (c->next_addr < c->naddrs) {
        connect_next(c);
        return;
    }
    /* The lookup counts against the connection timeout: a dead resolver is an outage too. */
    ev_timer_set(&c->connect_timeout, r->timeout, 0.);
    ev_timer_start(r->loop, &c->connect_timeout);
    c->resolving = pos_resolve_start(r->loop, r->target.host, r->target.port, on_resolved, c);
    if (!c->resolving) {
        ev_timer_stop(r->loop, &c->connect_timeout);
        schedule_retry(c); /* no thread or socket for the lookup */
    }
}

/*
 * give_up_late: Redis answers, but behind a queue (a burst of writes, a slow
 * script of another client): the commands past their deadline are answered
 * NULL now, as if the connection had failed, and the connection stays, with
 * every other command in flight. Our own setup commands are never given up
 * this way. 1 when the oldest command is no longer late.
 */
static int give_up_late(pos_redis_async *r, ev_tstamp now)
{
    struct request *q;
    while ((q = r->head) != NULL && q->deadline - now <= 0.001) {
        if (q->internal)
            return 0;
        list_remove(r, q);
        q->late = 1;
        r->stats.errors++;
        r->stats.late++;
        pos_redis_async_reply_cb cb = q->cb;
        q->cb = NULL;
        if (cb)
            cb(q->arg, NULL);
    }
    return 1;
}

/*
 * The oldest command is late. When Redis answered nothing for as long as the
 * timeout, the server or the path to it is stuck: reconnect, failing
 * everything in flight. When it still answers, only the late commands fail.
 */
static void on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    pos_redis_async *r = w->data;
    (void)revents;
    if (!r->head)
        return;
    ev_tstamp now = ev_now(loop), left = r->head->deadline - now;
    if (left <= 0.001 && r->cmd.ready && now - r->last_answer < r->timeout &&
        give_up_late(r, now)) {
        if (!r->head)
            return;
        left = r->head->deadline - now;
    }
    if (left > 0.001) {
        ev_timer_set(w, left, 0.);
        ev_timer_start(loop, w);
        return;
    }
    /* During an outage every attempt times out: say it once, when a working connection stalls. */
    pos_log(r->cmd.ready ? POS_LOG_WARN : POS_LOG_DEBUG,
            "Redis did not answer within %.0f ms: reconnecting", r->timeout * 1000);
    r->stats.timeouts++;
    drop(&r->cmd);
}

static void conn_init(pos_redis_async *r, struct conn *c, int is_sub)
{
    c->r = r;
    c->is_sub = is_sub;
    ev_timer_init(&c->retry, on_retry, 0., 0.);
    c->retry.data = c;
    ev_timer_init(&c->connect_timeout, on_connect_timeout, 0., 0.);
    c->connect_timeout.data = c;
}

pos_redis_async *pos_redis_async_new(struct ev_loop *loop, const pos_redis_target *t,
                                     int timeout_ms, pos_redis_async_state_cb state_cb, void *arg)
{
    pos_redis_async *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->target = *t;
    r->timeout = (timeout_ms > 0 ? timeout_ms : 1000) / 1000.0;
    r->state_cb = state_cb;
    r->state_arg = arg;
    conn_init(r, &r->cmd, 0);
    conn_init(r, &r->sub, 1);
    ev_timer_init(&r->cmd_timer, on_cmd_timer, 0., 0.);
    r->cmd_timer.data = r;
    start_connect(&r->cmd);
    return r;
}

static void conn_close(struct conn *c)
{
    if (c->resolving) {
        pos_resolve_cancel(c->resolving);
        c->resolving = NULL;
    }
    ev_timer_stop(c->r->loop, &c->retry);
    ev_timer_stop(c->r->loop, &c->connect_timeout);
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
}

void pos_redis_async_del(pos_redis_async *r)
{
    if (!r)
        return;
    r->closing = 1;
    conn_close(&r->sub);
    conn_close(&r->cmd); /* frees every request through on_reply */
    ev_timer_stop(r->loop, &r->cmd_timer);
    free(r->channel);
    free(r);
}

int pos_redis_async_up(const pos_redis_async *r)
{
    return r->cmd.ac != NULL && r->cmd.ready;
}

int pos_redis_async_commandv(pos_redis_async *r, pos_redis_async_reply_cb cb, void *arg, int argc,
                             const char **argv, const size_t *argvlen)
{
    struct request *q = calloc(1, sizeof(*q));
    if (!q)
        return -1;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = -1;
    if (send_request(r, q, argc, argv, argvlen) != 0) {
        request_free(q);
        return -1;
    }
    return 0;
}

int pos_redis_async_command(pos_redis_async *r, pos_redis_async_reply_cb cb, void *arg,
                            const char *fmt, ...)
{
    if (!r->cmd.ac || !r->cmd.ready)
        return -1;
    struct request *q = calloc(1, sizeof(*q));
    if (!q)
        return -1;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->cmd.ac, on_reply, q, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        request_free(q);
        return -1;
    }
    q->deadline = ev_now(r->loop) + r->timeout;
    list_push(r, q);
    r->stats.commands++;
    return 0;
}

int pos_redis_async_script_add(pos_redis_async *r, const char *source)
{
    if (r->nscripts >= POS_REDIS_MAX_SCRIPTS)
        return -1;
    r->scripts[r->nscripts].source = source;
    r->scripts[r->nscripts].sha[0] = '\0';
    if (pos_redis_async_up(r))
        load_script(r, r->nscripts);
    return r->nscripts++;
}

/* Copies the arguments into one block so the command can be sent again. */
static int keep_args(struct request *q, int argc, const char **argv, const size_t *argvlen)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    char *block = malloc((size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!block)
        return -1;
    q->argv = (char **)(void *)block;
    q->argvlen = (size_t *)(void *)(block + (size_t)argc * sizeof(char *));
    char *p = block + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(p, argv[i], n);
        p[n] = '\0';
        q->argv[i] = p;
        q->argvlen[i] = n;
        p += n + 1;
    }
    q->argc = argc;
    return 0;
}

/* Sends EVALSHA (or EVAL with the source while the sha is not known yet) for |q|. */
static int send_eval(pos_redis_async *r, struct request *q, int nkeys)
{
    const char *av[MAX_EVAL_ARGS + 3];
    size_t al[MAX_EVAL_ARGS + 3];
    char nk[16];
    struct script *s = &r->scripts[q->script];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    if (s->sha[0]) {
        av[0] = "EVALSHA";
        av[1] = s->sha;
    } else {
        av[0] = "EVAL";
        av[1] = s->source;
    }
    al[0] = strlen(av[0]);
    al[1] = strlen(av[1]);
    av[2] = nk;
    al[2] = strlen(nk);
    /* argv[0] of the copy is the key count, kept for a resend. */
    for (int i = 1; i < q->argc; i++) {
        av[2 + i] = q->argv[i];
        al[2 + i] = q->argvlen[i];
    }
    return send_request(r, q, q->argc + 2, av, al);
}

int pos_redis_async_eval(pos_redis_async *r, int handle, int nkeys, int argc, const char **argv,
                         const size_t *argvlen, pos_redis_async_reply_cb cb, void *arg)
{
    const char *av[MAX_EVAL_ARGS + 1];
    size_t al[MAX_EVAL_ARGS + 1];
    char nk[16];
    if (handle < 0 || handle >= r->nscripts || argc > MAX_EVAL_ARGS || argc < 0 || nkeys < 0 ||
        nkeys > argc || !pos_redis_async_up(r))
        return -1;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = nk;
    al[0] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[1 + i] = argv[i];
        al[1 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    struct request *q = calloc(1, sizeof(*q));
    if (!q || keep_args(q, argc + 1, av, al) != 0) {
        free(q);
        return -1;
    }
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = handle;
    if (send_eval(r, q, nkeys) != 0) {
        request_free(q);
        return -1;
    }
    return 0;
}

/*
 * policy_checked refuses a connection to a server whose maxmemory-policy may
 * evict our keys: logged once per outage, retried with the usual backoff (an
 * operator can fix the policy without restarting us).
 */
static void policy_checked(pos_redis_async *r, const redisReply *reply)
{
    char why[400];
    /* A server that hides INFO (a managed Redis, an ACL) cannot be checked: allowed. */
    if (!reply || reply->type != REDIS_REPLY_STRING ||
        pos_redis_eviction_check(reply->str, reply->len, why, sizeof(why)) >= 0)
        return;
    if (!r->cmd.warned) {
        char target[600];
        pos_redis_target_format(&r->target, target, sizeof(target));
        pos_log_error("refusing Redis at %s: %s", target, why);
        r->cmd.warned = 1;
    }
    r->stats.policy_refusals++;
    drop(&r->cmd);
}

static void on_internal_reply(pos_redis_async *r, struct request *q, redisReply *reply)
{
    if (!reply)
        r->stats.errors++;
    if (q->internal && q->info) {
        request_free(q);
        policy_checked(r, reply);
        return;
    }
    if (q->internal && q->ping) {
        int alive = reply && reply->type == REDIS_REPLY_STATUS;
        request_free(q);
        if (!alive) {
            /* e.g. LOADING: try again later rather than queue commands behind it. (A NULL
             * reply means the connection is already going away.) */
            if (reply) {
                pos_log_warn("Redis is not ready: %s", reply->type == REDIS_REPLY_ERROR
                                                           ? reply->str
                                                           : "unexpected PING answer");
                drop(&r->cmd);
            }
            return;
        }
        r->cmd.ready = 1;
        r->cmd.warned = 0;
        r->cmd.backoff_ms = 0; /* only now: a refused server is retried ever more slowly */
        pos_log_info("connected to Redis");
        if (r->state_cb)
            r->state_cb(r->state_arg, 1);
        return;
    }
    if (q->internal) {
        /* SCRIPT LOAD remembers the sha; a failed SELECT makes the connection useless. */
        if (reply && q->script >= 0 && reply->type == REDIS_REPLY_STRING && reply->len == 40)
            memcpy(r->scripts[q->script].sha, reply->str, 41);
        else if (reply && reply->type == REDIS_REPLY_ERROR)
            pos_log_error("Redis refused a setup command: %s", reply->str);
        int bad_select = reply && q->script < 0 && reply->type == REDIS_REPLY_ERROR;
        request_free(q);
        if (bad_select)
            drop(&r->cmd); /* never run commands on the wrong database */
        return;
    }
    if (reply && q->script >= 0 && !q->retried && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Redis restarted or flushed its scripts: load again, pipelined with the retry. */
        q->retried = 1;
        load_script(r, q->script);
        if (send_eval(r, q, atoi(q->argv[0])) == 0)
            return;
        reply = NULL;
        r->stats.errors++;
    }
    if (q->cb)
        q->cb(q->arg, reply);
    request_free(q);
}

int pos_redis_async_subscribe(pos_redis_async *r, const char *channel,
                              pos_redis_async_message_cb cb, void *arg)
{
    char *copy = strdup(channel);
    if (!copy)
        return -1;
    free(r->channel);
    r->channel = copy;
    r->message_cb = cb;
    r->message_arg = arg;
    if (r->sub.ac)
        drop(&r->sub); /* reconnects and subscribes to the new channel */
    else if (!ev_is_active(&r->sub.retry))
        start_connect(&r->sub);
    return 0;
}

void pos_redis_async_stats_get(const pos_redis_async *r, pos_redis_async_stats *out)
{
    *out = r->stats;
}
