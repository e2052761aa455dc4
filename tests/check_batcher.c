/* check_batcher.c — the queue, its flush policy and the job state machine.
 *
 * Time is a fake clock the tests move by hand, and batcher_try_take() never
 * blocks, so every single-threaded case is deterministic.  The stress case runs
 * real threads on the real clock and checks that every job is answered exactly
 * once with its own data; ASan's leak check (make check under
 * --enable-sanitizers) proves that whoever finished last freed each job.
 */
#include <config.h>

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/batcher.h"

typedef struct fake_clock {
    uint64_t now;
} fake_clock;

static uint64_t fake_now(void *ctx) { return ((fake_clock *)ctx)->now; }

/* Counts callbacks per job through a small record the job points at. */
typedef struct record {
    atomic_int calls;
    batcher_job_state seen;
} record;

static void on_done(batcher_job *job, void *user)
{
    record *r = user;
    atomic_fetch_add(&r->calls, 1);
    r->seen = batcher_job_state_get(job);
}

static batcher *make(fake_clock *clk, int capacity, int max_batch, uint64_t delay,
                     uint64_t timeout)
{
    batcher_config cfg = {.capacity = capacity,
                          .max_units = max_batch,
                          .max_delay_us = delay,
                          .timeout_us = timeout,
                          .clock = clk ? fake_now : NULL,
                          .clock_ctx = clk};
    batcher *b;
    ck_assert_int_eq(batcher_create(&cfg, &b), BATCHER_OK);
    return b;
}

/* The payload of a test job: n one-float "images" in, one float each out.  The
 * batcher sees only the pointer and frees it through tpay_free(). */
typedef struct tpay {
    float *in;  /* (n) */
    float *out; /* (n) */
    int n;
} tpay;

static atomic_int payloads_freed;

static void tpay_free(void *p)
{
    tpay *t = p;
    free(t->in);
    free(t->out);
    free(t);
    atomic_fetch_add(&payloads_freed, 1);
}

/* in is taken over. */
static tpay *tpay_new(float *in, int n)
{
    tpay *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    t->in = in;
    t->out = calloc((size_t)n, sizeof *t->out);
    t->n = n;
    return t;
}

static const float *tin(batcher_job *j) { return ((tpay *)batcher_job_payload(j))->in; }
static float *tout(batcher_job *j) { return ((tpay *)batcher_job_payload(j))->out; }
static int tn(batcher_job *j) { return ((tpay *)batcher_job_payload(j))->n; }

/* A job of n images (n units), one float each, valued tag*100 + image index. */
static batcher_job *job(int n, int tag, record *r)
{
    float *in = malloc((size_t)n * sizeof *in);
    ck_assert_ptr_nonnull(in);
    for (int i = 0; i < n; i++)
        in[i] = (float)(tag * 100 + i);
    batcher_job *j = batcher_job_new(tpay_new(in, n), tpay_free, n, r ? on_done : NULL, r);
    ck_assert_ptr_nonnull(j);
    return j;
}

static int tag_of(batcher_job *j) { return (int)tin(j)[0] / 100; }

START_TEST(size_trigger)
{
    fake_clock clk = {1000};
    batcher *b = make(&clk, 16, 4, 500, 1000000);
    batcher_job *jobs[8], *mine[4];
    uint64_t wait;
    for (int i = 0; i < 3; i++) {
        mine[i] = job(1, i, NULL);
        ck_assert_int_eq(batcher_submit(b, mine[i]), BATCHER_OK);
    }
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 0);
    ck_assert_uint_eq(wait, 500); /* not full, oldest not old enough */
    mine[3] = job(1, 3, NULL);
    ck_assert_int_eq(batcher_submit(b, mine[3]), BATCHER_OK);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 4); /* full: due at once */
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_eq(jobs[i], mine[i]);
        ck_assert_int_eq(batcher_job_state_get(jobs[i]), BATCHER_JOB_RUNNING);
        batcher_finish(jobs[i], true, NULL);
        ck_assert_int_eq(batcher_job_state_get(mine[i]), BATCHER_JOB_DONE);
        batcher_job_release(mine[i]);
    }
    ck_assert_int_eq(batcher_queued_jobs(b), 0);
    batcher_free(b);
}
END_TEST

START_TEST(delay_trigger)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 1000, 1000000);
    batcher_job *jobs[8];
    uint64_t wait;
    batcher_job *a = job(2, 1, NULL);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    clk.now = 400;
    batcher_job *c = job(1, 2, NULL);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_OK);
    clk.now = 999;
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 0);
    ck_assert_uint_eq(wait, 1); /* measured from the oldest job */
    clk.now = 1000;
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 2);
    ck_assert_ptr_eq(jobs[0], a);
    ck_assert_ptr_eq(jobs[1], c);
    ck_assert_uint_eq(batcher_job_wait_us(a), 1000);
    ck_assert_uint_eq(batcher_job_wait_us(c), 600);
    batcher_finish(jobs[0], true, NULL);
    batcher_finish(jobs[1], true, NULL);
    batcher_job_release(a);
    batcher_job_release(c);
    batcher_free(b);
}
END_TEST

START_TEST(zero_delay_takes_what_is_there)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 0, 1000000);
    batcher_job *jobs[8];
    uint64_t wait;
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 0);
    ck_assert_uint_eq(wait, UINT64_MAX); /* nothing queued */
    batcher_job *a = job(1, 1, NULL);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 1);
    batcher_finish(jobs[0], true, NULL);
    batcher_job_release(a);
    batcher_free(b);
}
END_TEST

START_TEST(never_splits_a_job)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 4, 0, 1000000);
    batcher_job *jobs[8];
    batcher_job *a = job(3, 1, NULL), *c = job(3, 2, NULL), *big = job(10, 3, NULL),
                *d = job(1, 4, NULL);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, big), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, d), BATCHER_OK);
    ck_assert_int_eq(batcher_queued_units(b), 17);
    /* 3 + 3 > 4: the second job waits for the next batch, whole. */
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], a);
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], c);
    batcher_finish(jobs[0], true, NULL);
    /* Larger than max_batch: alone, whole; the worker chunks it. */
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], big);
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], d);
    batcher_finish(jobs[0], true, NULL);
    batcher_job_release(a);
    batcher_job_release(c);
    batcher_job_release(big);
    batcher_job_release(d);
    batcher_free(b);
}
END_TEST

START_TEST(fifo_order)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 64, 3, 0, 1000000);
    batcher_job *mine[20], *jobs[8];
    for (int i = 0; i < 20; i++) {
        mine[i] = job(1, i, NULL);
        ck_assert_int_eq(batcher_submit(b, mine[i]), BATCHER_OK);
    }
    int next = 0, n;
    while ((n = batcher_try_take(b, jobs, 8, NULL)) > 0) {
        ck_assert_int_le(n, 3);
        for (int i = 0; i < n; i++) {
            ck_assert_int_eq(tag_of(jobs[i]), next++);
            batcher_finish(jobs[i], true, NULL);
        }
    }
    ck_assert_int_eq(next, 20);
    for (int i = 0; i < 20; i++)
        batcher_job_release(mine[i]);
    batcher_free(b);
}
END_TEST

START_TEST(take_respects_cap)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 64, 16, 0, 1000000);
    batcher_job *mine[5], *jobs[2];
    for (int i = 0; i < 5; i++) {
        mine[i] = job(1, i, NULL);
        ck_assert_int_eq(batcher_submit(b, mine[i]), BATCHER_OK);
    }
    ck_assert_int_eq(batcher_try_take(b, jobs, 2, NULL), 2);
    batcher_finish(jobs[0], true, NULL);
    batcher_finish(jobs[1], true, NULL);
    ck_assert_int_eq(batcher_queued_jobs(b), 3);
    for (int i = 0; i < 5; i++)
        batcher_job_release(mine[i]);
    batcher_free(b); /* the three left fail, without callbacks to run */
}
END_TEST

/* BERT's limits: units are tokens (max_units per forward pass) and max_jobs caps the
 * sequences; either filling up makes a batch due without waiting for the delay. */
START_TEST(token_and_sequence_limits)
{
    fake_clock clk = {0};
    batcher_config cfg = {.capacity = 64, .max_units = 100, .max_jobs = 3,
                          .max_delay_us = 500, .timeout_us = 1000000,
                          .clock = fake_now, .clock_ctx = &clk};
    batcher *b;
    ck_assert_int_eq(batcher_create(&cfg, &b), BATCHER_OK);
    batcher_job *mine[6], *jobs[8];
    uint64_t wait;
    /* Two short sequences: neither limit reached, so the delay applies. */
    for (int i = 0; i < 2; i++) {
        mine[i] = job(10, i, NULL);
        ck_assert_int_eq(batcher_submit(b, mine[i]), BATCHER_OK);
    }
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 0);
    ck_assert_uint_eq(wait, 500);
    /* A third fills max_jobs: due now, and only three are taken though 8 fit. */
    mine[2] = job(10, 2, NULL);
    mine[3] = job(10, 3, NULL);
    ck_assert_int_eq(batcher_submit(b, mine[2]), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, mine[3]), BATCHER_OK);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tag_of(jobs[i]), i);
        batcher_finish(jobs[i], true, NULL);
    }
    /* Tokens: 10 + 60 + 60 > 100, so the third long one waits for the next batch. */
    mine[4] = job(60, 4, NULL);
    mine[5] = job(60, 5, NULL);
    ck_assert_int_eq(batcher_submit(b, mine[4]), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, mine[5]), BATCHER_OK);
    ck_assert_int_eq(batcher_queued_units(b), 130);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 2);
    ck_assert_int_eq(tag_of(jobs[0]), 3);
    ck_assert_int_eq(tag_of(jobs[1]), 4);
    batcher_finish(jobs[0], true, NULL);
    batcher_finish(jobs[1], true, NULL);
    ck_assert_int_eq(batcher_queued_units(b), 60);
    for (int i = 0; i < 6; i++)
        batcher_job_release(mine[i]);
    batcher_free(b);
}
END_TEST

START_TEST(expiry)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 2000, 5000);
    record ra = {0}, rc = {0};
    batcher_job *a = job(1, 1, &ra);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    clk.now = 3000;
    batcher_job *c = job(1, 2, &rc);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_OK);
    clk.now = 4999;
    ck_assert_int_eq(batcher_expire(b), 0);
    clk.now = 5000;
    /* a is due for a batch too, but expiry comes first: it is past its deadline. */
    batcher_job *jobs[8];
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], c);
    ck_assert_int_eq(atomic_load(&ra.calls), 1);
    ck_assert_int_eq(ra.seen, BATCHER_JOB_EXPIRED);
    ck_assert_int_eq(batcher_job_state_get(a), BATCHER_JOB_EXPIRED);
    ck_assert_uint_eq(batcher_job_wait_us(a), 5000);
    ck_assert_int_eq(atomic_load(&rc.calls), 0);
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(atomic_load(&rc.calls), 1);
    ck_assert_int_eq(rc.seen, BATCHER_JOB_DONE);
    /* Cancelling a finished job changes nothing and runs no callback. */
    ck_assert_int_eq(batcher_cancel(a), BATCHER_JOB_EXPIRED);
    ck_assert_int_eq(atomic_load(&ra.calls), 1);
    batcher_job_release(a);
    batcher_job_release(c);
    batcher_free(b);
}
END_TEST

/* A request's own deadline: a later job with a short timeout expires before the
 * earlier one with the batcher's long default, which stays queued and runs. */
START_TEST(per_job_timeout)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 10000, 50000);
    record ra = {0}, rc = {0};
    batcher_job *a = job(1, 1, &ra);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    clk.now = 1000;
    batcher_job *c = job(1, 2, &rc);
    batcher_job_set_timeout(c, 2000);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_OK);
    batcher_job_set_timeout(c, 1); /* too late: submit fixed the deadline */
    clk.now = 2999;
    ck_assert_int_eq(batcher_expire(b), 0);
    /* Not due yet: the wait reported is until c's deadline, before a's delay. */
    uint64_t wait = 0;
    batcher_job *jobs[8];
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, &wait), 0);
    ck_assert_uint_eq(wait, 1);
    clk.now = 3000;
    ck_assert_int_eq(batcher_expire(b), 1);
    ck_assert_int_eq(rc.seen, BATCHER_JOB_EXPIRED);
    ck_assert_uint_eq(batcher_job_wait_us(c), 2000);
    ck_assert_int_eq(batcher_queued_jobs(b), 1);
    clk.now = 10000;
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], a);
    clk.now = 10250;
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(ra.seen, BATCHER_JOB_DONE);
    ck_assert_uint_eq(batcher_job_wait_us(a), 10000);
    ck_assert_uint_eq(batcher_job_run_us(a), 250);
    batcher_job_release(a);
    batcher_job_release(c);
    batcher_free(b);
}
END_TEST

START_TEST(expired_jobs_free_queue_slots)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 2, 8, 0, 100);
    record r[3] = {{0}};
    batcher_job *j[3];
    for (int i = 0; i < 2; i++) {
        j[i] = job(1, i, &r[i]);
        ck_assert_int_eq(batcher_submit(b, j[i]), BATCHER_OK);
    }
    j[2] = job(1, 2, &r[2]);
    ck_assert_int_eq(batcher_submit(b, j[2]), BATCHER_FULL);
    ck_assert_int_eq(batcher_job_state_get(j[2]), BATCHER_JOB_NEW);
    clk.now = 100;
    ck_assert_int_eq(batcher_submit(b, j[2]), BATCHER_OK); /* the two expired on the way */
    ck_assert_int_eq(atomic_load(&r[0].calls), 1);
    ck_assert_int_eq(atomic_load(&r[1].calls), 1);
    ck_assert_int_eq(batcher_queued_jobs(b), 1);
    for (int i = 0; i < 3; i++)
        batcher_job_release(j[i]);
    batcher_free(b); /* j[2] fails with its callback run */
    ck_assert_int_eq(atomic_load(&r[2].calls), 1);
    ck_assert_int_eq(r[2].seen, BATCHER_JOB_FAILED);
}
END_TEST

START_TEST(cancel_while_queued)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 0, 1000000);
    record ra = {0}, rc = {0};
    batcher_job *a = job(2, 1, &ra), *c = job(1, 2, &rc);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_OK);
    ck_assert_int_eq(batcher_cancel(a), BATCHER_JOB_QUEUED);
    ck_assert_int_eq(batcher_job_state_get(a), BATCHER_JOB_CANCELLED);
    ck_assert_int_eq(batcher_queued_jobs(b), 1);
    ck_assert_int_eq(batcher_queued_units(b), 1);
    batcher_job_release(a); /* last reference: freed here */
    batcher_job *jobs[8];
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_ptr_eq(jobs[0], c);
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(atomic_load(&ra.calls), 0);
    ck_assert_int_eq(atomic_load(&rc.calls), 1);
    batcher_job_release(c);
    batcher_free(b);
}
END_TEST

START_TEST(cancel_while_running)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 16, 8, 0, 1000000);
    record ra = {0};
    batcher_job *a = job(1, 1, &ra);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    batcher_job *jobs[8];
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 1);
    ck_assert_int_eq(batcher_cancel(a), BATCHER_JOB_RUNNING);
    ck_assert(batcher_job_cancelled(a));
    batcher_job_release(a); /* the submitter is gone; the worker still holds it */
    tout(jobs[0])[0] = 1.0f; /* still valid memory for the worker */
    batcher_finish(jobs[0], true, NULL);    /* result dropped, job freed here */
    ck_assert_int_eq(atomic_load(&ra.calls), 0);
    batcher_free(b);
}
END_TEST

START_TEST(cancel_unsubmitted)
{
    batcher_job *a = job(1, 1, NULL);
    ck_assert_int_eq(batcher_cancel(a), BATCHER_JOB_NEW);
    ck_assert_int_eq(batcher_job_state_get(a), BATCHER_JOB_CANCELLED);
    batcher_job_release(a);
}
END_TEST

START_TEST(queue_full)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 3, 8, 1000, 1000000);
    batcher_job *j[4];
    for (int i = 0; i < 3; i++) {
        j[i] = job(1, i, NULL);
        ck_assert_int_eq(batcher_submit(b, j[i]), BATCHER_OK);
    }
    j[3] = job(1, 3, NULL);
    ck_assert_int_eq(batcher_submit(b, j[3]), BATCHER_FULL);
    ck_assert_int_eq(batcher_queued_jobs(b), 3);
    /* Taking frees the slots: capacity counts waiting jobs, not running ones. */
    batcher_job *jobs[8];
    clk.now = 1000;
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 3);
    ck_assert_int_eq(batcher_submit(b, j[3]), BATCHER_OK);
    for (int i = 0; i < 3; i++)
        batcher_finish(jobs[i], true, NULL);
    for (int i = 0; i < 4; i++)
        batcher_job_release(j[i]);
    batcher_free(b);
}
END_TEST

START_TEST(submit_twice_is_refused)
{
    batcher *b = make(NULL, 4, 4, 0, 1000000);
    batcher_job *a = job(1, 1, NULL);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_ERR_INVALID);
    ck_assert_int_eq(batcher_queued_jobs(b), 1);
    ck_assert_int_eq(batcher_cancel(a), BATCHER_JOB_QUEUED);
    batcher_job_release(a);
    batcher_free(b);
}
END_TEST

START_TEST(bad_config)
{
    batcher *b;
    batcher_config cfg = {.capacity = 0, .max_units = 4};
    ck_assert_int_eq(batcher_create(&cfg, &b), BATCHER_ERR_INVALID);
    cfg = (batcher_config){.capacity = 4, .max_units = 0};
    ck_assert_int_eq(batcher_create(&cfg, &b), BATCHER_ERR_INVALID);
    cfg = (batcher_config){.capacity = 4, .max_units = 4, .max_jobs = -1};
    ck_assert_int_eq(batcher_create(&cfg, &b), BATCHER_ERR_INVALID);
    /* A refused job still frees the payload it was given. */
    int freed = atomic_load(&payloads_freed);
    ck_assert_ptr_null(batcher_job_new(tpay_new(malloc(4), 1), tpay_free, 0, NULL, NULL));
    ck_assert_int_eq(atomic_load(&payloads_freed), freed + 1);
    ck_assert_str_eq(batcher_status_str(BATCHER_FULL), "queue full");
    ck_assert_str_eq(batcher_job_state_str(BATCHER_JOB_EXPIRED), "expired");
}
END_TEST

START_TEST(failed_job_carries_its_message)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 4, 4, 0, 1000000);
    record r = {0};
    batcher_job *a = job(1, 1, &r), *jobs[4];
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_try_take(b, jobs, 4, NULL), 1);
    ck_assert_str_eq(batcher_job_error(a), "");
    batcher_finish(jobs[0], false, "tensor 'x' has the wrong shape");
    ck_assert_int_eq(r.seen, BATCHER_JOB_FAILED);
    ck_assert_str_eq(batcher_job_error(a), "tensor 'x' has the wrong shape");
    batcher_job_release(a);
    batcher_free(b);
}
END_TEST

START_TEST(close_drains_then_stops)
{
    fake_clock clk = {0};
    batcher *b = make(&clk, 8, 8, 1000000, 100000000);
    batcher_job *a = job(1, 1, NULL), *c = job(1, 2, NULL), *jobs[8];
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    ck_assert_int_eq(batcher_try_take(b, jobs, 8, NULL), 0); /* waiting for the delay */
    batcher_close(b);
    ck_assert_int_eq(batcher_submit(b, c), BATCHER_CLOSED);
    /* Closing ignores the delay: what is queued runs now. */
    ck_assert_int_eq(batcher_take(b, jobs, 8), 1);
    batcher_finish(jobs[0], true, NULL);
    ck_assert_int_eq(batcher_take(b, jobs, 8), 0);
    batcher_job_release(a);
    batcher_job_release(c);
    batcher_free(b);
}
END_TEST

/* ---- threads ----------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waiter;

static void wake_waiter(batcher_job *job, void *user)
{
    (void)job;
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

typedef struct stress {
    batcher *b;
    int seed;
    atomic_int done, cancelled, full, bad;
} stress;

enum { STRESS_PRODUCERS = 6, STRESS_WORKERS = 3, STRESS_JOBS = 1000 };

/* Worker: outputs = inputs + 1, so each submitter can check it got its own data. */
static void *stress_worker(void *arg)
{
    stress *s = arg;
    batcher_job *jobs[8];
    int n;
    while ((n = batcher_take(s->b, jobs, 8)) > 0) {
        for (int i = 0; i < n; i++) {
            const float *in = tin(jobs[i]);
            float *out = tout(jobs[i]);
            for (int k = 0; k < tn(jobs[i]); k++)
                out[k] = in[k] + 1.0f;
            batcher_finish(jobs[i], true, NULL);
        }
    }
    return NULL;
}

static void *stress_producer(void *arg)
{
    stress *s = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed; /* differs per thread stack */
    for (int i = 0; i < STRESS_JOBS; i++) {
        int n = 1 + (int)(rand_r(&seed) % 5u);
        float *in = malloc((size_t)n * sizeof *in);
        for (int k = 0; k < n; k++)
            in[k] = (float)(rand_r(&seed) % 10000u);
        float first = in[0];
        waiter w = {.done = false};
        pthread_mutex_init(&w.mu, NULL);
        pthread_cond_init(&w.cv, NULL);
        batcher_job *j = batcher_job_new(tpay_new(in, n), tpay_free, n, wake_waiter, &w);
        batcher_status st = batcher_submit(s->b, j);
        if (st == BATCHER_FULL) {
            atomic_fetch_add(&s->full, 1);
        } else if (st != BATCHER_OK) {
            atomic_fetch_add(&s->bad, 1);
        } else if (rand_r(&seed) % 4u == 0) {
            /* Give up at once: the job may be queued, running or even done. */
            batcher_cancel(j);
            atomic_fetch_add(&s->cancelled, 1);
        } else {
            pthread_mutex_lock(&w.mu);
            while (!w.done)
                pthread_cond_wait(&w.cv, &w.mu);
            pthread_mutex_unlock(&w.mu);
            if (batcher_job_state_get(j) != BATCHER_JOB_DONE ||
                tout(j)[0] != first + 1.0f)
                atomic_fetch_add(&s->bad, 1);
            atomic_fetch_add(&s->done, 1);
        }
        batcher_job_release(j);
        /* After cancel returned, no callback can still be using w. */
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
    }
    return NULL;
}

START_TEST(threads_stress)
{
    stress s = {0};
    s.b = make(NULL, 8, 8, 200, 10000000);
    pthread_t workers[STRESS_WORKERS], producers[STRESS_PRODUCERS];
    for (int i = 0; i < STRESS_WORKERS; i++)
        ck_assert_int_eq(pthread_create(&workers[i], NULL, stress_worker, &s), 0);
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        ck_assert_int_eq(pthread_create(&producers[i], NULL, stress_producer, &s), 0);
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        pthread_join(producers[i], NULL);
    batcher_close(s.b);
    for (int i = 0; i < STRESS_WORKERS; i++)
        pthread_join(workers[i], NULL);
    ck_assert_int_eq(atomic_load(&s.bad), 0);
    ck_assert_int_eq(atomic_load(&s.done) + atomic_load(&s.cancelled) + atomic_load(&s.full),
                     STRESS_PRODUCERS * STRESS_JOBS);
    ck_assert_int_gt(atomic_load(&s.done), 0);
    ck_assert_int_eq(batcher_queued_jobs(s.b), 0);
    batcher_free(s.b);
}
END_TEST

/* A worker blocked in batcher_take() wakes for the delay and for close. */
typedef struct taker {
    batcher *b;
    int got;
} taker;

static void *take_once(void *arg)
{
    taker *t = arg;
    batcher_job *jobs[4];
    t->got = batcher_take(t->b, jobs, 4);
    for (int i = 0; i < t->got; i++)
        batcher_finish(jobs[i], true, NULL);
    return NULL;
}

START_TEST(blocking_take_wakes)
{
    batcher *b = make(NULL, 8, 4, 20000, 10000000); /* real clock, 20 ms delay */
    taker t = {b, -1};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, take_once, &t), 0);
    batcher_job *a = job(1, 1, NULL);
    ck_assert_int_eq(batcher_submit(b, a), BATCHER_OK);
    pthread_join(th, NULL); /* returns once the 20 ms have passed */
    ck_assert_int_eq(t.got, 1);
    ck_assert_uint_ge(batcher_job_wait_us(a), 20000);
    batcher_job_release(a);

    t.got = -1;
    ck_assert_int_eq(pthread_create(&th, NULL, take_once, &t), 0);
    batcher_close(b); /* an idle taker returns 0 */
    pthread_join(th, NULL);
    ck_assert_int_eq(t.got, 0);
    batcher_free(b);
}
END_TEST

static Suite *batcher_suite(void)
{
    Suite *s = suite_create("batcher");
    TCase *policy = tcase_create("policy");
    tcase_add_test(policy, size_trigger);
    tcase_add_test(policy, delay_trigger);
    tcase_add_test(policy, zero_delay_takes_what_is_there);
    tcase_add_test(policy, never_splits_a_job);
    tcase_add_test(policy, fifo_order);
    tcase_add_test(policy, take_respects_cap);
    tcase_add_test(policy, token_and_sequence_limits);
    tcase_add_test(policy, close_drains_then_stops);
    suite_add_tcase(s, policy);

    TCase *states = tcase_create("states");
    tcase_add_test(states, expiry);
    tcase_add_test(states, per_job_timeout);
    tcase_add_test(states, expired_jobs_free_queue_slots);
    tcase_add_test(states, cancel_while_queued);
    tcase_add_test(states, cancel_while_running);
    tcase_add_test(states, cancel_unsubmitted);
    tcase_add_test(states, queue_full);
    tcase_add_test(states, submit_twice_is_refused);
    tcase_add_test(states, bad_config);
    tcase_add_test(states, failed_job_carries_its_message);
    suite_add_tcase(s, states);

    TCase *threads = tcase_create("threads");
    tcase_set_timeout(threads, 120);
    tcase_add_test(threads, threads_stress);
    tcase_add_test(threads, blocking_take_wakes);
    suite_add_tcase(s, threads);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(batcher_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
