/*
 * Host-name resolution that does not block an event loop. getaddrinfo runs
 * in a short-lived detached thread; the answer comes back to the loop through
 * a socket pair watched by an ev_io, so the loop never waits on DNS and a
 * cancelled lookup costs only the thread finishing on its own.
 *
 * A numeric address (IPv4, IPv6 without brackets) is answered at once,
 * without a thread. Every call resolves afresh: nothing is cached, so a
 * server that moves (a container restarted with a new address) is found
 * again on the next connection attempt.
 */
#ifndef POS_RESOLVE_H
#define POS_RESOLVE_H

#include <ev.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define POS_RESOLVE_MAX_ADDRS 8

typedef struct pos_resolve pos_resolve;

/*
 * pos_resolve_cb: the lookup finished. |addrs| holds |n| TCP addresses with
 * the port set, in getaddrinfo's order (n >= 1), or n == 0 and |err| says why
 * (the text of gai_strerror). Called once, from the loop; the handle is freed
 * after the callback returns, so do not cancel it from there.
 */
typedef void (*pos_resolve_cb)(void *arg, const struct sockaddr_storage *addrs, int n,
                               const char *err);

/*
 * pos_resolve_start looks up |host| (a name or a numeric address) for TCP
 * |port|. Returns a handle, or NULL when no thread or socket could be made
 * (out of resources; nothing is called then). A numeric |host| is answered
 * before this returns: the callback has run and NULL is returned.
 */
pos_resolve *pos_resolve_start(struct ev_loop *loop, const char *host, int port, pos_resolve_cb cb,
                               void *arg);

/* pos_resolve_cancel forgets a lookup in progress: its callback is not called. */
void pos_resolve_cancel(pos_resolve *q);

/*
 * pos_resolve_now resolves |host| synchronously (for tools and tests: it may
 * block for the resolver's timeout). Same results as the callback: returns the
 * number of addresses written to |addrs| (at most |max|), or 0 with |err| set.
 */
int pos_resolve_now(const char *host, int port, struct sockaddr_storage *addrs, int max, char *err,
                    size_t errlen);

/* pos_resolve_is_numeric: whether |host| is an IPv4 or IPv6 address literal. */
int pos_resolve_is_numeric(const char *host);

#endif
