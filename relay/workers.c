/*
 * The relay's workers (see workers.h): the sockets of workers 1..N-1, the
 * steering program, the threads with their loops and batches, and the lock
 * the main loop shares with them (libev's release/acquire callbacks: the
 * main loop holds it except while it waits for events; ev_async wakes it
 * when a worker changed its watchers).
 */
#include "workers.h"

#include <errno.h>
#include <stddef.h>
#include <linux/filter.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "server_int.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

struct worker;

struct wsock {
    int fd; /* worker 0: srv->socks[idx].fd (not its own) */
    ev_io io;
    int park_fd; /* its parked datagrams (park_rx.h), or -1; worker 0: srv->socks[idx].park_fd */
    relay_park_rx park_rx;
    unsigned idx; /* the address: index into srv->socks */
    struct worker *w;
};

struct worker {
    struct relay_workers *all;
    unsigned idx;
    pthread_t thread;
    int started;
    struct ev_loop *loop;
    ev_async stop;
    struct wsock socks[MAX_SOCKS];
    relay_forwarder *fw;
    int gso;
    uint64_t send_failed;           /* forwarded datagrams the socket refused (atomic) */
    relay_rxbatch *rxb;             /* its receive batch (rxbatch.h) */
    struct wsock *cur;              /* the socket whose batch is being cut (on_readable) */
    struct relay_park_ctx park_ctx; /* its forwarder's park callback (server_park.c) */
};

struct relay_workers {
    relay_server *srv;
    /*
     * Written (exclusive) by the main loop's callbacks and a worker's QUIC
     * datagrams; read (shared) by the workers' forwarders, which write only
     * their own counters, their sides' stats (each side's frames reach one
     * worker) and the budgets (atomics, forward.c).
     */
    pthread_rwlock_t lock;
    pthread_mutex_t lease_lock; /* serialises the forwarders' lease calls (Redis) */
    ev_async wake;              /* on srv->loop */
    int running;
    unsigned n;
    struct worker *w[RELAY_MAX_WORKERS];
};

void relay_worker_mark_cid(const relay_server *s, unsigned worker, uint8_t *cid)
{
    unsigned n = s->n_workers;
    if (n <= 1)
        return;
    /* worker + a random multiple of n: still random-looking, and cid[0] % n == worker */
    cid[0] = (uint8_t)(worker % n + n * (cid[0] % (256 / n)));
}

/*
 * attach_steering puts the classic BPF program of workers.h on the
 * SO_REUSEPORT group of |fd| (its sockets in bind order are workers 0..n-1,
 * then, when |park|, the parked-datagram sockets of workers 0..n-1). A load
 * past the end of a short datagram ends the program with 0 (worker 0).
 */
static int attach_steering(const relay_server *s, int fd, unsigned n, int park, char *err,
                           size_t errlen)
{
    uint32_t shift = s->circuits->slot_bits, mask = (1u << s->circuits->worker_bits) - 1;
    /* without park sockets no first byte is >= 0x100: parked datagrams go as data frames */
    uint32_t park_lo = park ? POS_PARK_KEEPALIVE : 0x100;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),                     /* 0: A = first byte */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 0, 3),          /* 1: long header? else 5 */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),                     /* 2: first byte of the DCID */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),                    /* 3 */
        BPF_STMT(BPF_RET | BPF_A, 0),                              /* 4 */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x40, 0, 3),          /* 5: short header? else 9 */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),                     /* 6: first byte of the DCID */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),                    /* 7 */
        BPF_STMT(BPF_RET | BPF_A, 0),                              /* 8 */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, park_lo, 0, 1),        /* 9: parked datagram? */
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, POS_PARK_QUIET, 0, 5), /* 10: else 11, yes 16 */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 1),                     /* 11: data frame: circuit id */
        BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, shift),                /* 12 */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mask),                 /* 13 */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),                    /* 14 */
        BPF_STMT(BPF_RET | BPF_A, 0),                              /* 15 */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 1),                     /* 16: parked: the record id's */
        BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, shift),                /* 17: worker bits */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mask),                 /* 18 */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),                    /* 19 */
        BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, n), /* 20: that worker's park socket */
        BPF_STMT(BPF_RET | BPF_A, 0),           /* 21 */
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(code) / sizeof(code[0])), code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
        snprintf(err, errlen,
                 "cannot attach the workers' steering program (SO_ATTACH_REUSEPORT_CBPF: %s); "
                 "set workers to 1",
                 strerror(errno));
        return -1;
    }
    return 0;
}

int relay_workers_bind(relay_server *s, char *err, size_t errlen)
{
    unsigned n = s->cfg->workers;
    struct relay_workers *W = calloc(1, sizeof(*W));

    if (!W) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->workers = W;
    W->srv = s;
    W->n = n;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* a worker with QUIC datagrams, or the main loop, must not wait behind endless forwarding */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&W->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&W->lease_lock, NULL);
    for (unsigned k = 0; k < n; k++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (w && !(w->rxb = relay_rxbatch_new())) {
            free(w);
            w = NULL;
        }
        if (!w) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        W->w[k] = w;
        w->all = W;
        w->idx = k;
        for (size_t i = 0; i < MAX_SOCKS; i++)
            w->socks[i].fd = w->socks[i].park_fd = -1;
    }
    if (relay_circuits_set_workers(s->circuits, n) != 0) {
        snprintf(err, errlen, "the circuit ids have no room for %u workers with max_circuits %u", n,
                 s->cfg->max_circuits);
        return -1;
    }
    s->n_workers = n;
    for (size_t i = 0; i < s->n_socks; i++) {
        char text[POS_ADDR_STRLEN] = "?";
        pos_addr_format((const struct sockaddr *)&s->socks[i].local, text, sizeof(text));
        W->w[0]->socks[i].fd = s->socks[i].fd;
        for (unsigned k = 1; k < n; k++) {
            W->w[k]->socks[i].fd = relay_udp_bind(&s->socks[i].local, 1, text, err, errlen);
            if (W->w[k]->socks[i].fd < 0)
                return -1;
        }
        if (attach_steering(s, s->socks[i].fd, n, s->cfg->park_lifetime_s > 0, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/*
 * relay_park_socks_bind: each address gets a parked-datagram socket per
 * worker in its SO_REUSEPORT group, after the workers' own (park_rx.h). With
 * one worker the steering program is attached here; where the kernel refuses
 * it the relay goes on without them (parked datagrams then share the socket).
 */
int relay_park_socks_bind(relay_server *s, char *err, size_t errlen)
{
    unsigned n = s->n_workers ? s->n_workers : 1;
    for (size_t i = 0; i < s->n_socks; i++) {
        char text[POS_ADDR_STRLEN] = "?";
        pos_addr_format((const struct sockaddr *)&s->socks[i].local, text, sizeof(text));
        if (n == 1 && attach_steering(s, s->socks[i].fd, 1, 1, err, errlen) != 0) {
            pos_log_warn("%s: parked clients' datagrams share the socket", err);
            continue;
        }
        for (unsigned k = 0; k < n; k++) {
            int fd = relay_udp_bind(&s->socks[i].local, 1, text, err, errlen), off = 0;
            if (fd < 0)
                return -1;
            /* short datagrams from many senders: nothing to join, and read into short buffers */
            setsockopt(fd, SOL_UDP, UDP_GRO, &off, sizeof(off));
            if (k == 0)
                s->socks[i].park_fd = fd;
            if (s->workers)
                s->workers->w[k]->socks[i].park_fd = fd;
        }
    }
    return 0;
}

/* ---- a worker's batches ---- */

/* forward_batch: the data frames of |n| datagrams, under the shared lock; returns the outputs. */
static int forward_batch(struct worker *w, struct wsock *ws, unsigned n, unsigned *n_quic)
{
    unsigned *quic_idx = relay_rxbatch_quic_idx(w->rxb);
    relay_server *s = w->all->srv;
    int out = 0;

    s->wst[w->idx].packets_in += n; /* this worker's own entry */
    if (w->fw) {
        w->park_ctx.sock = (int)ws->idx;
        out = relay_forward_batch(w->fw, relay_rxbatch_rx(w->rxb), n,
                                  s->socks[ws->idx].local.ss_family, relay_rxbatch_tx(w->rxb),
                                  quic_idx, n_quic);
    } else {
        for (unsigned i = 0; i < n; i++)
            quic_idx[i] = i;
        *n_quic = n;
    }
    return out > 0 ? out : 0;
}

/* quic_batch: the QUIC datagrams of the batch, under the exclusive lock. */
static void quic_batch(struct worker *w, struct wsock *ws, unsigned n_quic)
{
    relay_server *s = w->all->srv;
    struct mmsghdr *rx = relay_rxbatch_rx(w->rxb);
    const unsigned *quic_idx = relay_rxbatch_quic_idx(w->rxb);

    s->cur_worker = w->idx;
    for (unsigned q = 0; q < n_quic; q++) {
        struct mmsghdr *m = &rx[quic_idx[q]];
        if (m->msg_len > MAX_UDP || (m->msg_hdr.msg_flags & MSG_TRUNC)) {
            s->st.packets_dropped++;
            continue;
        }
        relay_server_input(s, (int)ws->idx, m->msg_hdr.msg_iov[0].iov_base, m->msg_len,
                           (struct sockaddr *)m->msg_hdr.msg_name, m->msg_hdr.msg_namelen);
    }
    s->cur_worker = 0;
    /* timers or Redis commands may have changed: the main loop recomputes its wait */
    ev_async_send(s->loop, &w->all->wake);
}

/* piece: one piece of a received batch (relay_rxbatch_cut): forward, then QUIC. */
static void piece(void *arg, relay_rxbatch *b, unsigned n)
{
    struct worker *w = arg;
    struct wsock *ws = w->cur;
    unsigned n_quic = 0;

    pthread_rwlock_rdlock(&w->all->lock);
    int out = forward_batch(w, ws, n, &n_quic);
    pthread_rwlock_unlock(&w->all->lock);
    if (out > 0)
        __atomic_fetch_add(
            &w->send_failed, /* outside the lock; its forwarder is its own */
            relay_udp_send_batch(ws->fd, relay_rxbatch_tx(b), (unsigned)out, &w->gso, w->fw),
            __ATOMIC_RELAXED);
    if (n_quic > 0) {
        pthread_rwlock_wrlock(&w->all->lock);
        quic_batch(w, ws, n_quic);
        pthread_rwlock_unlock(&w->all->lock);
    }
}

/* read_sock: batches of |ws|'s socket |fd| until it is empty or |rounds| batches were read. */
static unsigned read_sock(struct wsock *ws, int fd, int rounds, int small)
{
    ws->w->cur = ws;
    return relay_rxbatch_pump(ws->w->rxb, fd, rounds, small, piece, ws->w);
}

/* read_all: |arg|'s socket until it is empty (at most 16 batches), for relay_rxbatch_drain */
static unsigned read_all(void *arg)
{
    return read_sock(arg, ((struct wsock *)arg)->fd, 16, 0);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct wsock *ws = io->data;
    (void)loop;
    (void)revents;
    relay_rxbatch_drain(ws->w->rxb, read_all, ws);
}

/* park_drain: the worker's parked-datagram socket (park_rx.h); acks leave on ws->fd. */
static unsigned park_drain(void *arg, int fd)
{
    return read_sock(arg, fd, RELAY_PARK_RX_ROUNDS, 1);
}

/*
 * on_lease: a budget runs low while its worker forwards under the shared
 * lock. The main loop is not running (it needs the lock exclusively), so
 * the Redis command may be issued here, one forwarder at a time, and the
 * loop woken to see it.
 */
static void on_lease(void *arg, relay_budget *b)
{
    struct worker *w = arg;
    relay_server *s = w->all->srv;
    pthread_mutex_lock(&w->all->lease_lock);
    relay_budget_lease(s->svc, b);
    pthread_mutex_unlock(&w->all->lease_lock);
    ev_async_send(s->loop, &w->all->wake);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)a;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)a;
    (void)revents; /* the loop woke up: its timers and watchers are looked at again */
}

static void loop_release(struct ev_loop *loop)
{
    struct relay_workers *W = ev_userdata(loop);
    pthread_rwlock_unlock(&W->lock);
}

static void loop_acquire(struct ev_loop *loop)
{
    struct relay_workers *W = ev_userdata(loop);
    pthread_rwlock_wrlock(&W->lock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "pos-worker-%u", w->idx); /* per-thread CPU in the benchmarks */
    pthread_setname_np(pthread_self(), name);
    relay_rxbatch_thread_init();
    ev_run(w->loop, 0);
    return NULL;
}

/* worker_init: |w|'s loop, forwarder and socket watchers (not started yet). */
static int worker_init(relay_server *s, struct worker *w, char *err, size_t errlen)
{
    w->loop = ev_loop_new(EVFLAG_AUTO);
    if (!w->loop) {
        snprintf(err, errlen, "cannot make an event loop for worker %u", w->idx);
        return -1;
    }
    if (s->svc) {
        w->fw = relay_forwarder_new(s->circuits, RX_BATCH, on_lease, w);
        if (!w->fw) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        relay_forwarder_set_quic_fallback(w->fw, s->cfg->quic_fallback);
        w->park_ctx.srv = s;
        if (s->park) /* parked keep-alives: checked under the shared lock, acks in the batch */
            relay_forwarder_set_park(w->fw, relay_park_fast, &w->park_ctx);
        w->gso = s->cfg->gso;
        if (w->gso)
            relay_forwarder_set_gso(w->fw, RELAY_FORWARD_GSO_MAX_SEGMENTS);
    }
    ev_async_init(&w->stop, on_stop);
    ev_async_start(w->loop, &w->stop);
    for (size_t i = 0; i < s->n_socks; i++) {
        struct wsock *ws = &w->socks[i];
        ws->idx = (unsigned)i;
        ws->w = w;
        ev_io_init(&ws->io, on_readable, ws->fd, EV_READ);
        ws->io.data = ws;
        ev_io_start(w->loop, &ws->io);
        if (ws->park_fd >= 0)
            relay_park_rx_start(&ws->park_rx, w->loop, ws->park_fd, park_drain, ws);
    }
    return 0;
}

int relay_workers_start(relay_server *s, char *err, size_t errlen)
{
    struct relay_workers *W = s->workers;
    sigset_t all, old;

    if (!W)
        return 0;
    for (unsigned k = 0; k < W->n; k++)
        if (worker_init(s, W->w[k], err, errlen) != 0)
            return -1;
    ev_async_init(&W->wake, on_wake);
    ev_async_start(s->loop, &W->wake);
    ev_set_userdata(s->loop, W);
    ev_set_loop_release_cb(s->loop, loop_release, loop_acquire);
    pthread_rwlock_wrlock(&W->lock); /* the loop's callbacks run under it from now on */
    W->running = 1;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals go to the main loop's thread */
    for (unsigned k = 0; k < W->n; k++) {
        if (pthread_create(&W->w[k]->thread, NULL, worker_main, W->w[k]) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, errlen, "cannot start worker thread %u", k);
            relay_workers_stop(s);
            return -1;
        }
        W->w[k]->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pos_log_info("%u workers on the UDP port", W->n);
    return 0;
}

void relay_workers_stop(relay_server *s)
{
    struct relay_workers *W = s->workers;
    if (!W || !W->running)
        return;
    for (unsigned k = 0; k < W->n; k++)
        if (W->w[k]->started)
            ev_async_send(W->w[k]->loop, &W->w[k]->stop);
    pthread_rwlock_unlock(&W->lock);
    for (unsigned k = 0; k < W->n; k++) {
        if (W->w[k]->started)
            pthread_join(W->w[k]->thread, NULL);
        W->w[k]->started = 0;
    }
    ev_set_loop_release_cb(s->loop, NULL, NULL);
    ev_async_stop(s->loop, &W->wake);
    W->running = 0;
}

void relay_workers_forward_stats(const relay_server *s, relay_forward_stats *out)
{
    const struct relay_workers *W = s->workers;
    memset(out, 0, sizeof(*out));
    if (!W)
        return;
    for (unsigned k = 0; k < W->n; k++) {
        const relay_forwarder *fw = W->w[k]->fw;
        if (!fw)
            continue;
        const relay_forward_stats *f = &fw->stats;
        const uint64_t *src = &f->quic;
        uint64_t *dst = &out->quic;
        /* every counter from quic to batches is a uint64_t in a row */
        size_t n = (offsetof(relay_forward_stats, batches) - offsetof(relay_forward_stats, quic)) /
                       sizeof(uint64_t) +
                   1;
        for (size_t i = 0; i < n; i++)
            dst[i] += src[i];
        /* recent circuits: the union of the workers' (a circuit listed twice: the busier) */
        for (unsigned e = 0; e < RELAY_FORWARD_RECENT; e++) {
            const relay_forward_circuit *c = &f->recent[e];
            if (!c->id[0])
                continue;
            unsigned j = 0;
            while (j < RELAY_FORWARD_RECENT && out->recent[j].id[0] &&
                   out->recent[j].id[0] != c->id[0])
                j++;
            if (j == RELAY_FORWARD_RECENT)
                continue;
            if (!out->recent[j].id[0] || c->packets[0] + c->packets[1] >
                                             out->recent[j].packets[0] + out->recent[j].packets[1])
                out->recent[j] = *c;
        }
    }
}

void relay_workers_worker_forwarded(const relay_server *s, relay_worker_stats *out)
{
    if (s->workers)
        for (unsigned k = 0; k < s->workers->n; k++)
            out[k].forwarded = s->workers->w[k]->fw ? s->workers->w[k]->fw->stats.forwarded : 0;
}

uint64_t relay_workers_send_failed(const relay_server *s)
{
    uint64_t n = 0;
    if (s->workers)
        for (unsigned k = 0; k < s->workers->n; k++)
            n += __atomic_load_n(&s->workers->w[k]->send_failed, __ATOMIC_RELAXED);
    return n;
}

void relay_workers_del(relay_server *s)
{
    struct relay_workers *W = s->workers;
    if (!W)
        return;
    relay_workers_stop(s);
    for (unsigned k = 0; k < W->n; k++) {
        struct worker *w = W->w[k];
        if (!w)
            continue;
        for (size_t i = 0; i < MAX_SOCKS; i++) {
            if (w->loop && w->socks[i].w)
                ev_io_stop(w->loop, &w->socks[i].io);
            relay_park_rx_stop(&w->socks[i].park_rx);
            if (k > 0 && w->socks[i].fd >= 0)
                close(w->socks[i].fd); /* worker 0's are srv->socks, closed by the server */
            if (k > 0 && w->socks[i].park_fd >= 0)
                close(w->socks[i].park_fd);
        }
        if (w->loop) {
            ev_async_stop(w->loop, &w->stop);
            ev_loop_destroy(w->loop);
        }
        relay_forwarder_del(w->fw);
        relay_rxbatch_del(w->rxb);
        free(w);
    }
    pthread_rwlock_destroy(&W->lock);
    pthread_mutex_destroy(&W->lease_lock);
    free(W);
    s->workers = NULL;
}
