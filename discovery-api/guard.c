/* The connection guard (see guard.h). */
#include "guard.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis.h" /* pos_now_ms */

/* A client: an IPv4 address, or the first 64 bits of an IPv6 address (v6 1),
 * or a link-local IPv6 address (v6 2). */
typedef struct client_key {
    uint64_t bits;
    int v6;
} client_key;

struct pos_guard_client {
    pos_guard_client *next;
    client_key key;
    unsigned count;
};

enum conn_state { WAITING, ARRIVED };

struct pos_guard_conn {
    pos_guard_conn *prev, *next;
    pos_guard_client *client;
    int fd;
    enum conn_state state;
    int closing; /* shut down here, CLOSED not yet seen */
    uint64_t since_ms;
};

static int key_of(const struct sockaddr *addr, client_key *k)
{
    memset(k, 0, sizeof(*k));
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        memcpy(&k->bits, &in->sin_addr, 4);
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            memcpy(&k->bits, &in6->sin6_addr.s6_addr[12], 4);
        } else if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) {
            /* Every link-local address is in fe80::/64: count each address
             * (interface identifier and scope) as a client of its own. */
            memcpy(&k->bits, &in6->sin6_addr.s6_addr[8], 8);
            k->bits ^= (uint64_t)in6->sin6_scope_id << 32;
            k->v6 = 2;
        } else {
            memcpy(&k->bits, &in6->sin6_addr.s6_addr[0], 8);
            k->v6 = 1;
        }
        return 0;
    }
    return -1;
}

static size_t bucket_of(const pos_guard *g, const client_key *k)
{
    uint64_t h = (k->bits ^ (uint64_t)k->v6) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (g->nbuckets - 1);
}

static pos_guard_client **find(pos_guard *g, const client_key *k)
{
    pos_guard_client **p = &g->buckets[bucket_of(g, k)];
    while (*p && ((*p)->key.bits != k->bits || (*p)->key.v6 != k->v6))
        p = &(*p)->next;
    return p;
}

static void unlink_conn(pos_guard *g, pos_guard_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        g->oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        g->newest = c->prev;
    c->prev = c->next = NULL;
}

static void append_conn(pos_guard *g, pos_guard_conn *c)
{
    c->prev = g->newest;
    c->next = NULL;
    if (g->newest)
        g->newest->next = c;
    else
        g->oldest = c;
    g->newest = c;
}

/*
 * cut shuts the reading side of |c|'s socket: libmicrohttpd reads the end
 * and closes the connection itself, the TLS way (close_notify) on HTTPS.
 */
static void cut(pos_guard *g, pos_guard_conn *c)
{
    shutdown(c->fd, SHUT_RD);
    c->closing = 1;
    g->closing++;
}

/*
 * evict_oldest cuts the connection that has waited longest for a request,
 * or else the oldest being answered (a client reading its answer a byte at a
 * time; a POST waiting for Redis still gets its answer, only its reading side
 * is shut). Returns 0 when there is none.
 */
static int evict_oldest(pos_guard *g)
{
    pos_guard_conn *victim = NULL; /* the oldest waiting, else the oldest at all */
    for (pos_guard_conn *c = g->oldest; c; c = c->next) {
        if (c->closing)
            continue;
        if (!victim)
            victim = c;
        if (c->state == WAITING) {
            victim = c;
            break;
        }
    }
    if (!victim)
        return 0;
    cut(g, victim);
    g->evicted++;
    return 1;
}

enum MHD_Result pos_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    pos_guard *g = cls;
    client_key k;
    (void)addrlen;
    if (key_of(addr, &k) != 0)
        return MHD_NO;
    enum MHD_Result ok = MHD_YES;
    pthread_mutex_lock(&g->lock);
    pos_guard_client *cl = *find(g, &k);
    if (cl && cl->count >= g->max_per_client) {
        g->refused++;
        ok = MHD_NO;
    } else {
        /* Keep the reserve free: make room before the table is full. */
        while (g->total - g->closing + 1 > g->max_total - g->reserve)
            if (!evict_oldest(g))
                break;
        if (g->total - g->closing >= g->max_total) {
            g->refused++;
            ok = MHD_NO;
        }
    }
    pthread_mutex_unlock(&g->lock);
    return ok;
}

static void started(pos_guard *g, struct MHD_Connection *conn, void **socket_context)
{
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ad =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    client_key k;
    pos_guard_conn *c = calloc(1, sizeof(*c));
    *socket_context = NULL;
    if (!fd || !ad || !ad->client_addr || key_of(ad->client_addr, &k) != 0 || !c) {
        if (fd)
            shutdown(fd->connect_fd, SHUT_RDWR); /* cannot be tracked: not served */
        free(c);
        return;
    }
    pthread_mutex_lock(&g->lock);
    pos_guard_client **slot = find(g, &k);
    if (!*slot && (*slot = calloc(1, sizeof(**slot))))
        (*slot)->key = k;
    if (!*slot) {
        pthread_mutex_unlock(&g->lock);
        shutdown(fd->connect_fd, SHUT_RDWR);
        free(c);
        return;
    }
    if ((*slot)->count >= g->max_per_client) {
        /* pos_guard_accept let it in while this client's previous connection had not started
         * yet (libmicrohttpd accepts a burst before it starts them): checked again here, where
         * counting and checking are one step under the lock */
        g->refused++;
        pthread_mutex_unlock(&g->lock);
        shutdown(fd->connect_fd, SHUT_RDWR);
        free(c);
        return;
    }
    c->client = *slot;
    c->client->count++;
    c->fd = fd->connect_fd;
    c->state = WAITING;
    c->since_ms = pos_now_ms();
    append_conn(g, c);
    g->total++;
    pthread_mutex_unlock(&g->lock);
    *socket_context = c;
}

static void closed(pos_guard *g, pos_guard_conn *c)
{
    pthread_mutex_lock(&g->lock);
    unlink_conn(g, c);
    g->total--;
    if (c->closing)
        g->closing--;
    if (--c->client->count == 0) {
        pos_guard_client **p = find(g, &c->client->key);
        *p = c->client->next;
        free(c->client);
    }
    pthread_mutex_unlock(&g->lock);
    free(c);
}

void pos_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    pos_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        started(g, conn, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        closed(g, *socket_context);
        *socket_context = NULL;
    }
}

static pos_guard_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

void pos_guard_request_arrived(pos_guard *g, struct MHD_Connection *conn)
{
    pos_guard_conn *c = conn_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    c->state = ARRIVED;
    pthread_mutex_unlock(&g->lock);
}

void pos_guard_answered(pos_guard *g, struct MHD_Connection *conn)
{
    pos_guard_conn *c = conn_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    c->state = WAITING;
    c->since_ms = pos_now_ms();
    unlink_conn(g, c);
    append_conn(g, c);
    pthread_mutex_unlock(&g->lock);
}

void pos_guard_counts(pos_guard *g, unsigned *open, uint64_t *timed_out, uint64_t *evicted,
                      uint64_t *refused)
{
    pthread_mutex_lock(&g->lock);
    *open = g->total;
    *timed_out = g->timed_out;
    *evicted = g->evicted;
    *refused = g->refused;
    pthread_mutex_unlock(&g->lock);
}

/* sweep cuts the connections whose request is overdue; the list is oldest first. */
static void sweep(pos_guard *g, uint64_t now)
{
    for (pos_guard_conn *c = g->oldest; c && now - c->since_ms >= g->timeout_ms; c = c->next)
        if (c->state == WAITING && !c->closing) {
            cut(g, c);
            g->timed_out++;
        }
}

static void *sweeper_main(void *arg)
{
    pos_guard *g = arg;
    uint64_t period = g->timeout_ms / 8 < 100 ? g->timeout_ms / 8 : 100;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)(period ? period : 1) * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        int rc = pthread_cond_timedwait(&g->cond, &g->lock, &until);
        if (rc == ETIMEDOUT && !g->stopping)
            sweep(g, pos_now_ms());
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int pos_guard_start(pos_guard *g, unsigned max_total, unsigned max_per_client,
                    unsigned request_timeout_s)
{
    memset(g, 0, sizeof(*g));
    g->max_total = max_total;
    g->max_per_client = max_per_client;
    g->reserve = max_total / 16 ? max_total / 16 : 1;
    g->timeout_ms = (uint64_t)request_timeout_s * 1000;
    for (g->nbuckets = 64; g->nbuckets < max_total; g->nbuckets *= 2)
        ;
    g->buckets = calloc(g->nbuckets, sizeof(*g->buckets));
    if (!g->buckets)
        return -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        goto no_cond;
    if (pthread_mutex_init(&g->lock, NULL) != 0)
        goto no_lock;
    if (pthread_create(&g->sweeper, NULL, sweeper_main, g) != 0)
        goto no_thread;
    g->running = 1;
    return 0;
no_thread:
    pthread_mutex_destroy(&g->lock);
no_lock:
    pthread_cond_destroy(&g->cond);
no_cond:
    free(g->buckets);
    g->buckets = NULL;
    return -1;
}

void pos_guard_stop(pos_guard *g)
{
    if (!g->running)
        return;
    pthread_mutex_lock(&g->lock);
    g->stopping = 1;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->sweeper, NULL);
    /* The daemon has stopped: every connection has had its CLOSED. */
    for (size_t i = 0; i < g->nbuckets; i++)
        while (g->buckets[i]) {
            pos_guard_client *next = g->buckets[i]->next;
            free(g->buckets[i]);
            g->buckets[i] = next;
        }
    free(g->buckets);
    g->buckets = NULL;
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    g->running = 0;
}
