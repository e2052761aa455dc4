/* batcher.c — the queue between HTTP threads and one model's workers.
 *
 * Owns a FIFO of jobs (doubly linked, so a cancelled job leaves from the middle in
 * O(1)), one mutex that guards the queue and every job's state, and one condition
 * variable the workers sleep on.  HTTP threads call submit and cancel; worker
 * threads call take and finish; any of them may expire overdue jobs.
 *
 * Flush policy: a batch is due when the queued units fill max_units or the queued
 * jobs reach max_jobs, when the oldest job has waited max_delay_us (0: at once), or
 * when the batcher is closing.  Units are whatever bounds a forward pass of the
 * model (images for a CNN, tokens for BERT, whose sequences are also capped by
 * max_jobs); the payload is opaque here.  A batch is taken from the head in order
 * and never reorders or splits a job; a job larger than max_units goes alone and
 * the worker runs it in chunks.
 *
 * Deadlines are the batcher's, not the HTTP layer's: a suspended connection never
 * times out in libmicrohttpd.  A job still queued at enqueue + timeout_us is
 * expired by whichever thread looks at the queue next (a waking worker, or a
 * submit), so it can outlive its deadline by at most one running batch.
 *
 * It must never call a job's callback with the lock held (the callback resumes an
 * HTTP connection, which takes libmicrohttpd's own locks), and never block a
 * submitter: a full queue is refused at once.  Because the callback runs unlocked,
 * a job is flagged in_callback meanwhile and batcher_cancel() waits for the flag
 * to clear: after cancel returns, the submitter may free what the callback uses.
 */
#include <config.h>

#include "daemon/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct batcher_job {
    /* Fixed at creation. */
    void *payload;
    batcher_free_fn free_payload;
    int units;
    batcher_notify_fn notify;
    void *user;
    atomic_int refs;
    /* Set at submit; then guarded by b->mu. */
    batcher *b;
    batcher_job_state state;
    uint64_t timeout_us;  /* 0: the batcher's */
    uint64_t enqueued_us, deadline_us, wait_us, taken_us, run_us;
    batcher_job *prev, *next;
    bool in_callback;  /* notify is running on some thread; cancel waits it out */
    char error[256];
};

struct batcher {
    batcher_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* workers wait for work; CLOCK_MONOTONIC */
    pthread_cond_t cb_done; /* a job's callback returned */
    batcher_job *head, *tail;
    int n_jobs, n_units;
    /* No queued job's deadline is earlier than this (UINT64_MAX: none queued).  It
     * may be earlier than every real deadline after a job left the queue; the next
     * expiry scan then finds nothing and recomputes it.  It saves scanning the
     * queue on every take, since per-job timeouts make deadlines unordered. */
    uint64_t next_deadline;
    bool closed;
};

const char *batcher_status_str(batcher_status s)
{
    switch (s) {
    case BATCHER_OK: return "ok";
    case BATCHER_FULL: return "queue full";
    case BATCHER_CLOSED: return "shutting down";
    case BATCHER_ERR_NOMEM: return "out of memory";
    case BATCHER_ERR_INVALID: return "invalid argument";
    }
    return "unknown batcher status";
}

const char *batcher_job_state_str(batcher_job_state s)
{
    static const char *const names[] = {"new",    "queued",    "running", "done",
                                        "failed", "cancelled", "expired"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

static uint64_t monotonic_us(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_us(const batcher *b) { return b->cfg.clock(b->cfg.clock_ctx); }

/* ---- jobs ------------------------------------------------------------------- */

batcher_job *batcher_job_new(void *payload, batcher_free_fn free_payload, int units,
                             batcher_notify_fn notify, void *user)
{
    batcher_job *j = units >= 1 ? calloc(1, sizeof *j) : NULL;
    if (j == NULL) {
        if (free_payload != NULL)
            free_payload(payload);
        return NULL;
    }
    j->payload = payload;
    j->free_payload = free_payload;
    j->units = units;
    j->notify = notify;
    j->user = user;
    atomic_init(&j->refs, 1);
    j->state = BATCHER_JOB_NEW;
    return j;
}

void batcher_job_release(batcher_job *j)
{
    if (j == NULL)
        return;
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        if (j->free_payload != NULL)
            j->free_payload(j->payload);
        free(j);
    }
}

void *batcher_job_payload(batcher_job *j) { return j->payload; }
int batcher_job_units(const batcher_job *j) { return j->units; }
uint64_t batcher_job_wait_us(const batcher_job *j) { return j->wait_us; }
uint64_t batcher_job_run_us(const batcher_job *j) { return j->run_us; }

void batcher_job_set_timeout(batcher_job *j, uint64_t timeout_us)
{
    if (j->b == NULL) /* only before submit: the deadline is fixed by submit */
        j->timeout_us = timeout_us;
}

batcher_job_state batcher_job_state_get(batcher_job *j)
{
    /* Before submit the job has one owner, the caller; after, the lock rules. */
    if (j->b == NULL)
        return j->state;
    pthread_mutex_lock(&j->b->mu);
    batcher_job_state s = j->state;
    pthread_mutex_unlock(&j->b->mu);
    return s;
}

const char *batcher_job_error(batcher_job *j)
{
    return batcher_job_state_get(j) == BATCHER_JOB_FAILED ? j->error : "";
}

bool batcher_job_cancelled(batcher_job *j)
{
    return batcher_job_state_get(j) == BATCHER_JOB_CANCELLED;
}

/* ---- the queue (all *_locked helpers need b->mu) ------------------------------ */

static void unlink_locked(batcher *b, batcher_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        b->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        b->tail = j->prev;
    j->prev = j->next = NULL;
    b->n_jobs--;
    b->n_units -= j->units;
}

/* Moves overdue jobs to EXPIRED and returns them chained by ->next, for
 * finish_outside() to notify once the lock is dropped.  Jobs may carry their own
 * timeouts, so the whole queue is scanned, but only once the earliest deadline
 * has passed. */
static batcher_job *expire_locked(batcher *b, uint64_t now)
{
    if (now < b->next_deadline)
        return NULL;
    batcher_job *list = NULL, **tail = &list;
    uint64_t next = UINT64_MAX;
    for (batcher_job *j = b->head, *after; j != NULL; j = after) {
        after = j->next;
        if (j->deadline_us > now) {
            if (j->deadline_us < next)
                next = j->deadline_us;
            continue;
        }
        unlink_locked(b, j);
        j->state = BATCHER_JOB_EXPIRED;
        j->wait_us = now - j->enqueued_us;
        j->in_callback = j->notify != NULL;
        *tail = j;
        tail = &j->next;
    }
    b->next_deadline = next;
    return list;
}

/* Runs j's callback, flagged in_callback by the caller under the lock, then
 * clears the flag so a waiting batcher_cancel() can return. */
static void notify_outside(batcher *b, batcher_job *j)
{
    if (!j->in_callback)
        return;
    j->notify(j, j->user);
    pthread_mutex_lock(&b->mu);
    j->in_callback = false;
    pthread_cond_broadcast(&b->cb_done);
    pthread_mutex_unlock(&b->mu);
}

/* Callbacks, then the batcher's references, for jobs already moved to a final
 * state under the lock.  Called without the lock. */
static int finish_outside(batcher *b, batcher_job *list)
{
    int n = 0;
    while (list != NULL) {
        batcher_job *j = list;
        list = j->next;
        j->next = NULL;
        notify_outside(b, j);
        batcher_job_release(j);
        n++;
    }
    return n;
}

/* Is a batch due now?  If not, *wait_us says for how long it will not be. */
static bool due_locked(const batcher *b, uint64_t now, uint64_t *wait_us)
{
    *wait_us = UINT64_MAX;
    if (b->head == NULL)
        return false;
    if (b->closed || b->cfg.max_delay_us == 0 || b->n_units >= b->cfg.max_units ||
        (b->cfg.max_jobs > 0 && b->n_jobs >= b->cfg.max_jobs))
        return true;
    uint64_t due = b->head->enqueued_us + b->cfg.max_delay_us;
    if (now >= due)
        return true;
    *wait_us = due - now;
    if (b->next_deadline > now && b->next_deadline - now < *wait_us)
        *wait_us = b->next_deadline - now;
    return false;
}

static int pop_locked(batcher *b, uint64_t now, batcher_job **jobs, int cap)
{
    if (b->cfg.max_jobs > 0 && b->cfg.max_jobs < cap)
        cap = b->cfg.max_jobs;
    int count = 0, units = 0;
    while (b->head != NULL && count < cap) {
        batcher_job *j = b->head;
        if (count > 0 && units + j->units > b->cfg.max_units)
            break;
        unlink_locked(b, j);
        j->state = BATCHER_JOB_RUNNING;
        j->wait_us = now - j->enqueued_us;
        j->taken_us = now;
        jobs[count++] = j;
        units += j->units;
        if (units >= b->cfg.max_units)
            break;
    }
    return count;
}

/* ---- public ------------------------------------------------------------------- */

batcher_status batcher_create(const batcher_config *cfg, batcher **out)
{
    *out = NULL;
    if (cfg->capacity < 1 || cfg->max_units < 1 || cfg->max_jobs < 0)
        return BATCHER_ERR_INVALID;
    batcher *b = calloc(1, sizeof *b);
    if (b == NULL)
        return BATCHER_ERR_NOMEM;
    b->cfg = *cfg;
    b->next_deadline = UINT64_MAX;
    if (b->cfg.clock == NULL)
        b->cfg.clock = monotonic_us;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        free(b);
        return BATCHER_ERR_NOMEM;
    }
    if (pthread_cond_init(&b->cb_done, NULL) != 0) {
        pthread_cond_destroy(&b->cv);
        free(b);
        return BATCHER_ERR_NOMEM;
    }
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        pthread_cond_destroy(&b->cv);
        pthread_cond_destroy(&b->cb_done);
        free(b);
        return BATCHER_ERR_NOMEM;
    }
    *out = b;
    return BATCHER_OK;
}

int batcher_fail_queued(batcher *b, const char *error)
{
    pthread_mutex_lock(&b->mu);
    b->closed = true;
    batcher_job *list = NULL, **tail = &list;
    while (b->head != NULL) {
        batcher_job *j = b->head;
        unlink_locked(b, j);
        j->state = BATCHER_JOB_FAILED;
        snprintf(j->error, sizeof j->error, "%s", error);
        j->in_callback = j->notify != NULL;
        *tail = j;
        tail = &j->next;
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return finish_outside(b, list);
}

void batcher_free(batcher *b)
{
    if (b == NULL)
        return;
    batcher_fail_queued(b, "the server is shutting down");
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->cb_done);
    free(b);
}

batcher_status batcher_submit(batcher *b, batcher_job *j)
{
    if (j == NULL || j->b != NULL || j->state != BATCHER_JOB_NEW)
        return BATCHER_ERR_INVALID;
    pthread_mutex_lock(&b->mu);
    uint64_t now = now_us(b);
    /* Overdue jobs would otherwise hold their slots until a worker looks. */
    batcher_job *expired = expire_locked(b, now);
    batcher_status st = BATCHER_OK;
    if (b->closed) {
        st = BATCHER_CLOSED;
    } else if (b->n_jobs >= b->cfg.capacity) {
        st = BATCHER_FULL;
    } else {
        j->b = b;
        j->state = BATCHER_JOB_QUEUED;
        j->enqueued_us = now;
        uint64_t timeout = j->timeout_us ? j->timeout_us : b->cfg.timeout_us;
        j->deadline_us = timeout < UINT64_MAX - now ? now + timeout : UINT64_MAX;
        if (j->deadline_us < b->next_deadline)
            b->next_deadline = j->deadline_us;
        atomic_fetch_add(&j->refs, 1); /* the queue's reference */
        j->prev = b->tail;
        j->next = NULL;
        if (b->tail)
            b->tail->next = j;
        else
            b->head = j;
        b->tail = j;
        b->n_jobs++;
        b->n_units += j->units;
        pthread_cond_signal(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    finish_outside(b, expired);
    return st;
}

int batcher_try_take(batcher *b, batcher_job **jobs, int cap, uint64_t *wait_us)
{
    uint64_t wait;
    int n = 0;
    pthread_mutex_lock(&b->mu);
    uint64_t now = now_us(b);
    batcher_job *expired = expire_locked(b, now);
    if (due_locked(b, now, &wait)) {
        n = pop_locked(b, now, jobs, cap);
        wait = 0;
    }
    pthread_mutex_unlock(&b->mu);
    finish_outside(b, expired);
    if (wait_us != NULL)
        *wait_us = wait;
    return n;
}

int batcher_take(batcher *b, batcher_job **jobs, int cap)
{
    pthread_mutex_lock(&b->mu);
    for (;;) {
        uint64_t now = now_us(b), wait;
        batcher_job *expired = expire_locked(b, now);
        if (expired != NULL) {
            pthread_mutex_unlock(&b->mu);
            finish_outside(b, expired);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (due_locked(b, now, &wait)) {
            int n = pop_locked(b, now, jobs, cap);
            /* More may be due: let another sleeping worker have it. */
            if (b->head != NULL)
                pthread_cond_signal(&b->cv);
            pthread_mutex_unlock(&b->mu);
            return n;
        }
        if (b->closed) { /* closed and empty: due_locked drains otherwise */
            pthread_mutex_unlock(&b->mu);
            return 0;
        }
        if (wait == UINT64_MAX) {
            pthread_cond_wait(&b->cv, &b->mu);
        } else {
            /* The real monotonic clock paces the sleep; an injected clock only
             * decides what is due when we wake (tests use batcher_wake). */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (wait % 1000000u) * 1000u;
            ts.tv_sec += (time_t)(wait / 1000000u + ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
    }
}

void batcher_finish(batcher_job *j, bool ok, const char *error)
{
    batcher *b = j->b;
    pthread_mutex_lock(&b->mu);
    if (j->state == BATCHER_JOB_RUNNING) {
        j->run_us = now_us(b) - j->taken_us;
        j->state = ok ? BATCHER_JOB_DONE : BATCHER_JOB_FAILED;
        if (!ok)
            snprintf(j->error, sizeof j->error, "%s", error ? error : "unknown error");
        j->in_callback = j->notify != NULL;
    }
    pthread_mutex_unlock(&b->mu);
    notify_outside(b, j);
    batcher_job_release(j);
}

batcher_job_state batcher_cancel(batcher_job *j)
{
    batcher *b = j->b;
    if (b == NULL) { /* never submitted: only the caller knows it */
        batcher_job_state prev = j->state;
        j->state = BATCHER_JOB_CANCELLED;
        return prev;
    }
    bool drop = false;
    pthread_mutex_lock(&b->mu);
    while (j->in_callback)
        pthread_cond_wait(&b->cb_done, &b->mu);
    batcher_job_state prev = j->state;
    if (prev == BATCHER_JOB_QUEUED) {
        unlink_locked(b, j);
        j->state = BATCHER_JOB_CANCELLED;
        drop = true; /* the queue's reference */
    } else if (prev == BATCHER_JOB_RUNNING) {
        j->state = BATCHER_JOB_CANCELLED; /* the worker drops its reference */
    }
    pthread_mutex_unlock(&b->mu);
    if (drop)
        batcher_job_release(j);
    return prev;
}

void batcher_close(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->closed = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void batcher_wake(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int batcher_expire(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    batcher_job *expired = expire_locked(b, now_us(b));
    pthread_mutex_unlock(&b->mu);
    return finish_outside(b, expired);
}

int batcher_queued_jobs(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->n_jobs;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int batcher_queued_units(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->n_units;
    pthread_mutex_unlock(&b->mu);
    return n;
}
