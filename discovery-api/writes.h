/*
 * The writer thread of pos-discovery: POSTs and DELETEs hand their Redis
 * work to it, so that the HTTP threads, which also answer GETs, never wait
 * on Redis. The HTTP handler suspends its connection (libmicrohttpd's
 * MHD_suspend_connection) and queues a job; the thread runs the jobs one
 * after another, each bounded by its deadline, stores the outcome in the
 * job and resumes the connection, whose handler then answers.
 */
#ifndef POS_DISCOVERY_WRITES_H
#define POS_DISCOVERY_WRITES_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "config.h"
#include "entry.h"

struct pos_server;

typedef struct pos_write_job {
    struct pos_write_job *next;
    struct MHD_Connection *conn;
    int remove; /* 0: register |entry|; 1: remove |id| */
    pos_entry entry;
    char id[POS_UUID_STRLEN];
    uint64_t deadline_ms; /* pos_now_ms by which Redis must have answered */
    int queued;           /* set by pos_writes_submit */
    int done;             /* set, under the lock, by the writer thread */
    int rc;               /* 0 or -1 with |err| */
    char err[POS_ERR_LEN];
} pos_write_job;

typedef struct pos_writes {
    struct pos_server *s;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pos_write_job *head, *tail;
    int stopping;
    int running;
} pos_writes;

/* pos_writes_start starts the writer thread for |s|. Returns 0 or -1. */
int pos_writes_start(pos_writes *w, struct pos_server *s);

/*
 * pos_writes_submit suspends |job->conn| and queues |job|, which must stay
 * valid until the connection is resumed. Called from the connection's
 * access handler. Returns 0, or -1 (nothing suspended) when the writer is
 * stopping: then answer 503 at once.
 */
int pos_writes_submit(pos_writes *w, pos_write_job *job);

/* pos_writes_done says whether the writer has finished |job|. */
int pos_writes_done(pos_writes *w, const pos_write_job *job);

/*
 * pos_writes_stop refuses new jobs, finishes the queued ones (each within
 * its deadline) and joins the thread. Call before stopping the daemon.
 */
void pos_writes_stop(pos_writes *w);

#endif
