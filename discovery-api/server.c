/*
 * Life cycle of a pos-discovery instance and its Redis side (see server.h):
 * the refresher thread, writes under the write lock, and the snapshot
 * refresh shared by both.
 */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "http.h"
#include "log.h"
#include "secret.h"

/* refresh reads the list through |store| and installs it; 0 or -1. */
static int refresh(pos_server *s, pos_store *store, char *err, size_t errlen)
{
    char *body;
    size_t len, count;
    uint64_t ticket = pos_snapshot_ticket(&s->snapshot);

    if (pos_store_list(store, &body, &len, &count, err, errlen) != 0) {
        pos_metrics_redis_error(&s->metrics);
        pos_snapshot_failed(&s->snapshot, err);
        return -1;
    }
    if (pos_snapshot_install(&s->snapshot, ticket, body, len, count) != 0) {
        snprintf(err, errlen, "out of memory building the relay list");
        return -1;
    }
    return 0;
}

/* wait_stop sleeps up to |ms| unless asked to stop; returns 1 when stopping. */
static int wait_stop(pos_server *s, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    until.tv_sec += ms / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&s->stop_lock);
    while (!s->stopping)
        if (pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &until) == ETIMEDOUT)
            break;
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->stop_lock);
    return stopping;
}

static void *refresher_main(void *arg)
{
    pos_server *s = arg;
    char err[POS_ERR_LEN];
    int was_ok = 1;

    while (!wait_stop(s, POS_SERVER_REFRESH_MS)) {
        /* This thread is the one that notices Redis is back: no backoff here, the
         * refresh period already spaces the attempts. */
        if (!s->reader.redis.ctx)
            pos_redis_connect_now(&s->reader.redis);
        int ok = refresh(s, &s->reader, err, sizeof(err)) == 0;
        /* Log changes only: an outage is one warning, not four a second. */
        if (was_ok && !ok)
            pos_log_warn("cannot refresh the relay list, serving the last one: %s", err);
        else if (!was_ok && ok)
            pos_log_info("Redis is reachable again; the relay list is current");
        was_ok = ok;
    }
    return NULL;
}

int pos_server_authorized(const pos_server *s, const char *v, size_t len)
{
    static const char scheme[] = "Bearer ";
    const size_t n = sizeof(scheme) - 1;
    if (!v || len <= n || strncasecmp(v, scheme, n) != 0)
        return 0;
    return pos_secret_equal(v + n, len - n, s->secret, s->secret_len);
}

typedef int (*store_write)(pos_store *store, const void *arg, char *err, size_t errlen);

static int write_register(pos_store *store, const void *arg, char *err, size_t errlen)
{
    return pos_store_register(store, arg, err, errlen);
}

static int write_remove(pos_store *store, const void *arg, char *err, size_t errlen)
{
    return pos_store_remove(store, arg, err, errlen);
}

/* budget sets the write connection's timeout to what is left until |deadline_ms|; 0 when none. */
static int budget(pos_store *w, uint64_t deadline_ms)
{
    uint64_t now = pos_now_ms();
    if (now >= deadline_ms)
        return 0;
    uint64_t left = deadline_ms - now;
    w->redis.timeout_ms = (int)(left < 1 ? 1 : left);
    if (w->redis.ctx) {
        struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
        redisSetTimeout(w->redis.ctx, tv);
    }
    return 1;
}

/*
 * locked_write runs one write, then refreshes the snapshot so the next GET
 * sees it. A connection broken since the last write (Redis restarted) is
 * retried once on a new connection rather than failing the request. The
 * whole of it, retry included, ends by |deadline_ms|: each Redis call only
 * gets the time that is left.
 */
static int locked_write(pos_server *s, store_write fn, const void *arg, uint64_t deadline_ms,
                        char *err, size_t errlen)
{
    char rerr[POS_ERR_LEN];
    pos_snapshot_state st;
    pos_snapshot_get_state(&s->snapshot, &st);
    pthread_mutex_lock(&s->write_lock);
    int rc = -1;
    snprintf(err, errlen, "Redis is unavailable (it did not answer within %u ms)",
             POS_SERVER_WRITE_TIMEOUT_MS);
    if (!budget(&s->writer, deadline_ms))
        goto out;
    /* The refresher reached Redis: skip what is left of this connection's backoff. */
    if (!s->writer.redis.ctx && st.redis_ok)
        pos_redis_connect_now(&s->writer.redis);
    int had_connection = s->writer.redis.ctx != NULL;
    rc = fn(&s->writer, arg, err, errlen);
    if (rc != 0 && had_connection && !s->writer.redis.ctx && budget(&s->writer, deadline_ms) &&
        pos_redis_connect_now(&s->writer.redis) && budget(&s->writer, deadline_ms))
        rc = fn(&s->writer, arg, err, errlen);
    if (rc == 0 && budget(&s->writer, deadline_ms))
        refresh(s, &s->writer, rerr, sizeof(rerr));
out:
    if (rc != 0)
        pos_metrics_redis_error(&s->metrics);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int pos_server_register(pos_server *s, const pos_entry *e, uint64_t deadline_ms, char *err,
                        size_t errlen)
{
    return locked_write(s, write_register, e, deadline_ms, err, errlen);
}

int pos_server_remove(pos_server *s, const char *id, uint64_t deadline_ms, char *err, size_t errlen)
{
    return locked_write(s, write_remove, id, deadline_ms, err, errlen);
}

static int init_parts(pos_server *s, const pos_discovery_options *o)
{
    pos_metrics_init(&s->metrics);
    pos_store_init(&s->writer, &o->redis, o->prefix, o->ttl_s, o->spacedrive_ttl_s);
    pos_store_init(&s->reader, &o->redis, o->prefix, o->ttl_s, o->spacedrive_ttl_s);
    if (pos_snapshot_init(&s->snapshot) != 0)
        return -1;
    if (pthread_mutex_init(&s->write_lock, NULL) != 0)
        goto no_write_lock;
    if (pthread_mutex_init(&s->stop_lock, NULL) != 0)
        goto no_stop_lock;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->stop_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0)
        return 0;
    pthread_mutex_destroy(&s->stop_lock);
no_stop_lock:
    pthread_mutex_destroy(&s->write_lock);
no_write_lock:
    pos_snapshot_free(&s->snapshot);
    return -1;
}

static void free_parts(pos_server *s)
{
    pthread_cond_destroy(&s->stop_cond);
    pthread_mutex_destroy(&s->stop_lock);
    pthread_mutex_destroy(&s->write_lock);
    pos_snapshot_free(&s->snapshot);
    pos_store_free(&s->reader);
    pos_store_free(&s->writer);
    pos_secret_free(s->secret);
    s->secret = NULL;
}

static void stop_refresher(pos_server *s)
{
    pthread_mutex_lock(&s->stop_lock);
    s->stopping = 1;
    pthread_cond_signal(&s->stop_cond);
    pthread_mutex_unlock(&s->stop_lock);
    pthread_join(s->refresher, NULL);
}

int pos_server_start(pos_server *s, const pos_discovery_options *o, char *secret, char *err,
                     size_t errlen)
{
    char rerr[POS_ERR_LEN];

    memset(s, 0, sizeof(*s));
    s->opt = o;
    s->secret = secret;
    s->secret_len = strlen(secret);
    if (init_parts(s, o) != 0) {
        pos_secret_free(s->secret);
        snprintf(err, errlen, "cannot create locks: out of resources");
        return -1;
    }
    if (refresh(s, &s->reader, rerr, sizeof(rerr)) != 0) {
        if (s->reader.redis.policy_refused) {
            /* Not an outage to wait out: this server would evict the list. */
            snprintf(err, errlen, "%s", s->reader.redis.last_error);
            free_parts(s);
            return -1;
        }
        pos_log_warn("starting without a relay list: %s (retrying in the background)", rerr);
    }
    if (pthread_create(&s->refresher, NULL, refresher_main, s) != 0) {
        snprintf(err, errlen, "cannot start the refresher thread");
        goto fail;
    }
    if (pos_http_start(s, err, errlen) != 0) {
        stop_refresher(s);
        goto fail;
    }
    return 0;
fail:
    free_parts(s);
    return -1;
}

void pos_server_stop(pos_server *s)
{
    pos_http_stop(s);
    stop_refresher(s);
    free_parts(s);
}
