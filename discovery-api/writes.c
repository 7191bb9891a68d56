/* The writer thread (see writes.h). */
#include "writes.h"

#include <string.h>

#include "server.h"

static void run_job(pos_writes *w, pos_write_job *job)
{
    int rc =
        job->remove
            ? pos_server_remove(w->s, job->id, job->deadline_ms, job->err, sizeof(job->err))
            : pos_server_register(w->s, &job->entry, job->deadline_ms, job->err, sizeof(job->err));
    struct MHD_Connection *conn = job->conn;
    pthread_mutex_lock(&w->lock);
    job->rc = rc;
    job->done = 1;
    pthread_mutex_unlock(&w->lock);
    /* From here the job belongs to the connection again (it may be freed). */
    MHD_resume_connection(conn);
}

static void *writer_main(void *arg)
{
    pos_writes *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        pos_write_job *job = w->head;
        if (!job)
            break; /* stopping and nothing left */
        w->head = job->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        run_job(w, job);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int pos_writes_start(pos_writes *w, pos_server *s)
{
    memset(w, 0, sizeof(*w));
    w->s = s;
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        return -1;
    if (pthread_cond_init(&w->cond, NULL) != 0)
        goto no_cond;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0)
        goto no_thread;
    w->running = 1;
    return 0;
no_thread:
    pthread_cond_destroy(&w->cond);
no_cond:
    pthread_mutex_destroy(&w->lock);
    return -1;
}

int pos_writes_submit(pos_writes *w, pos_write_job *job)
{
    job->next = NULL;
    job->done = 0;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    /* Suspended before the writer can see the job, so its resume always
     * finds a suspended connection. */
    MHD_suspend_connection(job->conn);
    job->queued = 1;
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

int pos_writes_done(pos_writes *w, const pos_write_job *job)
{
    pthread_mutex_lock(&w->lock);
    int done = job->done;
    pthread_mutex_unlock(&w->lock);
    return done;
}

void pos_writes_stop(pos_writes *w)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    w->running = 0;
}
