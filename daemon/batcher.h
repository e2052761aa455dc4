/* batcher.h — one model's bounded request queue: flush policy, deadlines and the
 * state machine of a job (queued -> running -> done | failed | cancelled | expired).
 *
 * A job carries an opaque payload (what the worker reads and writes: for the daemon a
 * worker_task, see worker.h) and a size in batching units (images of a CNN request,
 * tokens of a BERT sequence).  The batcher never looks inside the payload; it only
 * counts units and jobs against the batch limits, so every model kind shares this
 * queue, its deadlines and its cancellation.
 *
 * Producer (an HTTP thread):
 *   batcher_job *j = batcher_job_new(task, free_task, units, on_done, ctx); // takes task
 *   if (batcher_submit(b, j) != BATCHER_OK) batcher_job_release(j);    // full or closed
 *   ... on_done(j, ctx) runs once, on another thread, when j is done, failed or
 *   expired (never once batcher_cancel has returned) ...
 *   batcher_job_state(j) == BATCHER_JOB_DONE -> read batcher_job_payload(j);
 *   batcher_job_release(j);
 *   Client gone instead:  batcher_cancel(j); batcher_job_release(j);
 * Consumer (a worker thread):
 *   while ((n = batcher_take(b, jobs, cap)) > 0)
 *       { run them; batcher_finish(jobs[i], ok, msg) for each; }
 *
 * Ownership: a job is reference-counted.  Its creator holds one reference; the
 * batcher holds a second from submit until the job leaves the queue or the worker
 * finishes it; whoever drops the last frees the job and its buffers.  The state is
 * only changed under the batcher's lock, so exactly one party wins each transition.
 * No HTTP in here: completion is reported through the job's callback.
 */
#ifndef MODELD_DAEMON_BATCHER_H
#define MODELD_DAEMON_BATCHER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct batcher batcher;
typedef struct batcher_job batcher_job;

typedef enum batcher_status {
    BATCHER_OK = 0,
    BATCHER_FULL,        /* queue_capacity jobs already waiting */
    BATCHER_CLOSED,      /* shutting down: no new jobs */
    BATCHER_ERR_NOMEM,
    BATCHER_ERR_INVALID, /* bad config, or a job submitted twice */
} batcher_status;

const char *batcher_status_str(batcher_status s);

typedef enum batcher_job_state {
    BATCHER_JOB_NEW = 0,   /* created, not submitted */
    BATCHER_JOB_QUEUED,
    BATCHER_JOB_RUNNING,   /* taken by a worker */
    BATCHER_JOB_DONE,      /* the worker's outputs in the payload are valid */
    BATCHER_JOB_FAILED,    /* the worker reported an error: batcher_job_error() */
    BATCHER_JOB_CANCELLED, /* the submitter gave up; no callback */
    BATCHER_JOB_EXPIRED,   /* waited in the queue past timeout_us */
} batcher_job_state;

const char *batcher_job_state_str(batcher_job_state s);

/* Monotonic time in microseconds.  Injected so tests can drive time by hand. */
typedef uint64_t (*batcher_clock_fn)(void *ctx);

typedef struct batcher_config {
    int capacity;          /* jobs waiting at most */
    int max_units;         /* units per batch (images, tokens); a bigger job is taken alone */
    int max_jobs;          /* jobs per batch (sequences); 0: no limit but batcher_take's cap */
    uint64_t max_delay_us; /* wait this long for a batch to fill; 0: take what is there */
    uint64_t timeout_us;   /* a job queued longer than this expires (unless it has its own) */
    batcher_clock_fn clock;/* NULL: CLOCK_MONOTONIC */
    void *clock_ctx;
} batcher_config;

/* Called without the batcher's lock held, on whichever thread made the transition
 * (a worker, or batcher_free for jobs left behind). */
typedef void (*batcher_notify_fn)(batcher_job *job, void *user);

/* Frees a payload; called once, by whoever drops the job's last reference. */
typedef void (*batcher_free_fn)(void *payload);

/* payload is taken over and freed with the job by free_payload (NULL: not freed).
 * units >= 1 is the job's size for the batch limits.  NULL if out of memory or
 * units < 1 (the payload is then freed too). */
batcher_job *batcher_job_new(void *payload, batcher_free_fn free_payload, int units,
                             batcher_notify_fn notify, void *user);
void batcher_job_release(batcher_job *job);

void *batcher_job_payload(batcher_job *job);
int batcher_job_units(const batcher_job *job);
batcher_job_state batcher_job_state_get(batcher_job *job);
/* The worker's message for a FAILED job ("" otherwise).  Valid until release. */
const char *batcher_job_error(batcher_job *job);
/* Microseconds the job spent queued (0 until taken); for logs and metrics. */
uint64_t batcher_job_wait_us(const batcher_job *job);
/* Microseconds from the worker taking the job to finishing it: the compute time of
 * the batch it ran in (0 unless it finished). */
uint64_t batcher_job_run_us(const batcher_job *job);
/* Before submit: this job expires after timeout_us in the queue instead of the
 * batcher's timeout_us (0: the batcher's).  A per-request deadline. */
void batcher_job_set_timeout(batcher_job *job, uint64_t timeout_us);

batcher_status batcher_create(const batcher_config *cfg, batcher **out);
/* Jobs still queued fail ("shutting down") with their callbacks run, so nobody
 * waits for them forever.  Call only when no worker uses b any more. */
void batcher_free(batcher *b);

batcher_status batcher_submit(batcher *b, batcher_job *job);

/* Blocks until a batch is due by the flush policy and returns its jobs (FIFO, at
 * most cap and max_jobs of them, at most max_units units unless one job alone is
 * larger).
 * Expired jobs met on the way are finished and not returned.  Returns 0 once the
 * batcher is closed and empty. */
int batcher_take(batcher *b, batcher_job **jobs, int cap);
/* The same without blocking: 0 if nothing is due now; *wait_us (if non-NULL) then
 * says how long until something could be (UINT64_MAX: nothing queued). */
int batcher_try_take(batcher *b, batcher_job **jobs, int cap, uint64_t *wait_us);

/* Worker: a taken job is done (ok) or failed (error).  Runs the callback unless
 * the job was cancelled meanwhile, then drops the batcher's reference. */
void batcher_finish(batcher_job *job, bool ok, const char *error);

/* Submitter: give up on job.  A queued job leaves the queue at once; a running job
 * finishes but its result is dropped.  When cancel returns, the job's callback is
 * not running and never will (if it already ran, cancel waited for it to return).
 * Returns the state it had before.  Never call it from the job's own callback. */
batcher_job_state batcher_cancel(batcher_job *job);
bool batcher_job_cancelled(batcher_job *job);

/* Stop accepting jobs; batcher_take() drains what is queued, ignoring
 * max_delay_us, then returns 0. */
void batcher_close(batcher *b);
/* Close, and fail every job still queued with error (callbacks run); returns how
 * many.  Jobs already taken by a worker are not touched. */
int batcher_fail_queued(batcher *b, const char *error);
/* Wake blocked takers to look again (tests, after moving an injected clock). */
void batcher_wake(batcher *b);

/* Expire overdue jobs now; returns how many. */
int batcher_expire(batcher *b);
int batcher_queued_jobs(batcher *b);
int batcher_queued_units(batcher *b);

#endif
