/* The relay list served to GET requests (see snapshot.h). */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"

int pos_snapshot_init(pos_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->reason, sizeof(s->reason), "the relay list was not loaded from Redis yet");
    return pthread_mutex_init(&s->lock, NULL) == 0 ? 0 : -1;
}

void pos_snapshot_free(pos_snapshot *s)
{
    if (s->response)
        MHD_destroy_response(s->response);
    s->response = NULL;
    pthread_mutex_destroy(&s->lock);
}

uint64_t pos_snapshot_ticket(pos_snapshot *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t t = ++s->next_ticket;
    pthread_mutex_unlock(&s->lock);
    return t;
}

static struct MHD_Response *list_response(char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r)
        return NULL;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}

int pos_snapshot_install(pos_snapshot *s, uint64_t ticket, char *body, size_t len, size_t count)
{
    struct MHD_Response *r = list_response(body, len), *old = NULL;
    if (!r) {
        free(body);
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    if (ticket > s->installed_ticket) {
        old = s->response;
        s->response = r;
        s->body = body;
        s->len = len;
        s->count = count;
        s->installed_ticket = ticket;
        s->refreshed_ms = pos_now_ms();
        s->redis_ok = 1;
        s->reason[0] = '\0';
        r = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    /* Outside the lock: connections still sending |old| hold their own reference. */
    if (old)
        MHD_destroy_response(old);
    if (r)
        MHD_destroy_response(r);
    return 0;
}

void pos_snapshot_failed(pos_snapshot *s, const char *reason)
{
    pthread_mutex_lock(&s->lock);
    s->redis_ok = 0;
    snprintf(s->reason, sizeof(s->reason), "%s", reason);
    pthread_mutex_unlock(&s->lock);
}

static double age_s(const pos_snapshot *s, uint64_t now)
{
    return s->response ? (double)(now - s->refreshed_ms) / 1000.0 : 0.0;
}

void pos_snapshot_get_state(pos_snapshot *s, pos_snapshot_state *st)
{
    uint64_t now = pos_now_ms();
    pthread_mutex_lock(&s->lock);
    st->loaded = s->response != NULL;
    st->redis_ok = s->redis_ok;
    st->count = s->count;
    st->age_s = age_s(s, now);
    snprintf(st->reason, sizeof(st->reason), "%s", s->reason);
    pthread_mutex_unlock(&s->lock);
}

/* stale_copy builds a one-off response with the age header; called under the lock. */
static struct MHD_Response *stale_copy(const pos_snapshot *s, uint64_t now)
{
    char age[32];
    struct MHD_Response *r =
        MHD_create_response_from_buffer(s->len, (void *)s->body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return NULL;
    snprintf(age, sizeof(age), "%llu", (unsigned long long)((now - s->refreshed_ms) / 1000));
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES ||
        MHD_add_response_header(r, "X-Pos-Stale", age) != MHD_YES) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}

int pos_snapshot_queue(pos_snapshot *s, struct MHD_Connection *conn)
{
    uint64_t now = pos_now_ms();
    int rc = 200;

    pthread_mutex_lock(&s->lock);
    if (!s->response) {
        rc = 503;
    } else if (s->redis_ok && now - s->refreshed_ms <= POS_SNAPSHOT_STALE_MS) {
        if (MHD_queue_response(conn, MHD_HTTP_OK, s->response) != MHD_YES)
            rc = -1;
    } else {
        struct MHD_Response *r = stale_copy(s, now);
        if (!r || MHD_queue_response(conn, MHD_HTTP_OK, r) != MHD_YES)
            rc = -1;
        if (r)
            MHD_destroy_response(r);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}
