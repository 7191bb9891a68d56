/*
 * Non-blocking host-name resolution (see resolve.h). A lookup is one heap
 * object shared by the loop and its thread, freed by whichever lets go last
 * (an atomic count of two). The thread only writes the result and one byte to
 * its end of the socket pair; the loop side owns the ev_io and the callback.
 */
#include "resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pos_resolve {
    atomic_int refs;
    /* Written by the thread before it signals; read by the loop after. */
    char host[256];
    int port;
    struct sockaddr_storage addrs[POS_RESOLVE_MAX_ADDRS];
    int n;
    char err[128];
    int fds[2]; /* [0] loop side, [1] thread side */
    /* Loop side only. */
    struct ev_loop *loop;
    ev_io io;
    pos_resolve_cb cb;
    void *arg;
};

static void release(pos_resolve *q)
{
    if (atomic_fetch_sub(&q->refs, 1) == 1)
        free(q);
}

int pos_resolve_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int pos_resolve_now(const char *host, int port, struct sockaddr_storage *addrs, int max, char *err,
                    size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char service[16];
    memset(&hints, 0, sizeof(hints));
    /* No AI_ADDRCONFIG: it hides "localhost" on a host with only loopback. */
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return 0;
    }
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(addrs[0]))
            continue;
        memset(&addrs[n], 0, sizeof(addrs[n]));
        memcpy(&addrs[n], ai->ai_addr, ai->ai_addrlen);
        n++;
    }
    freeaddrinfo(res);
    if (n == 0)
        snprintf(err, errlen, "cannot resolve \"%s\": no IPv4 or IPv6 address", host);
    return n;
}

static void *lookup_thread(void *p)
{
    pos_resolve *q = p;
    q->n =
        pos_resolve_now(q->host, q->port, q->addrs, POS_RESOLVE_MAX_ADDRS, q->err, sizeof(q->err));
    char one = 1;
    /* The loop may have gone (cancelled): MSG_NOSIGNAL keeps EPIPE from killing us. */
    (void)send(q->fds[1], &one, 1, MSG_NOSIGNAL);
    close(q->fds[1]);
    release(q);
    return NULL;
}

static void on_done(struct ev_loop *loop, ev_io *w, int revents)
{
    pos_resolve *q = w->data;
    char b;
    (void)revents;
    if (recv(q->fds[0], &b, 1, 0) < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    ev_io_stop(loop, w);
    close(q->fds[0]);
    q->cb(q->arg, q->addrs, q->n, q->n ? NULL : q->err);
    release(q);
}

pos_resolve *pos_resolve_start(struct ev_loop *loop, const char *host, int port, pos_resolve_cb cb,
                               void *arg)
{
    if (pos_resolve_is_numeric(host)) {
        struct sockaddr_storage a[1];
        char err[128];
        int n = pos_resolve_now(host, port, a, 1, err, sizeof(err));
        cb(arg, a, n, n ? NULL : err);
        return NULL;
    }
    pos_resolve *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    snprintf(q->host, sizeof(q->host), "%s", host);
    q->port = port;
    q->loop = loop;
    q->cb = cb;
    q->arg = arg;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, q->fds) != 0) {
        free(q);
        return NULL;
    }
    atomic_init(&q->refs, 2);
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The thread must not take signals meant for the loop (SIGTERM, SIGINT). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&tid, &attr, lookup_thread, q);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(q->fds[0]);
        close(q->fds[1]);
        free(q);
        return NULL;
    }
    ev_io_init(&q->io, on_done, q->fds[0], EV_READ);
    q->io.data = q;
    ev_io_start(loop, &q->io);
    return q;
}

void pos_resolve_cancel(pos_resolve *q)
{
    if (!q)
        return;
    ev_io_stop(q->loop, &q->io);
    close(q->fds[0]);
    release(q);
}
