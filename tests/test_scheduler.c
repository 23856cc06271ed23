/*
 * test_scheduler.c — the scheduler (daemon/scheduler.c) against a fake
 * backend, on a real queue: store, writer and spool in a temporary directory.
 *
 * The fake backend implements struct backend_ops and reports every step
 * through the scheduler's sink (backend.h), but only when the test says so,
 * so that each test decides what a delivery does and when. Covered: versions
 * of one artifact start in log order while another artifact goes on beside a
 * stuck one; max_jobs; the sink's created/asset_done/registered steps are
 * committed before their `then` runs; a transient failure is rescheduled
 * with backoff within [0, min(cap, base * 2^(n-1))], never sooner than
 * Retry-After (itself capped), and its attempts start over once a step
 * succeeds; max_attempts and a permanent failure park the job with its
 * message; offline spends no attempt, starts nothing and probes until the
 * backend is back; pause; an orderly stop with deliveries in flight (grace,
 * abort, nothing recorded for a cancelled one, nothing started and no
 * callback after it stopped); waits woken once, by settling, by timeout, or
 * by the stop. One process per test (tests/uvtest.h).
 */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "uvtest.h"
#include "writer.h"

#define KEY "0123456789abcdef0123456789abcdef"

/*
 * Known daemon bugs. The test that shows one checks today's behaviour, so
 * that a fix makes it fail: then set the switch to 1 (or pass -DFIXED_...=1)
 * and it checks the documented behaviour instead.
 */
#ifndef FIXED_STOP_WAIT_ALL_COUNTS
#define FIXED_STOP_WAIT_ALL_COUNTS 1 /* scheduler.c, scheduler_stop: pending of a wait on all */
#endif
#define MAX_DELIVERIES 256

/* ---- the fake backend: records deliveries, reports only when told ---- */

struct fake {
        struct backend base;
        struct job *running[64]; /* deliveries not finished yet */
        int nrunning, max_running;
        int64_t delivered[MAX_DELIVERIES]; /* job ids, in the order deliver() got them */
        int delivered_attempts[MAX_DELIVERIES];
        int64_t delivered_ms[MAX_DELIVERIES]; /* wall clock at deliver() */
        int ndelivered;
        void (*probe_done)(struct backend *be, bool online, const char *message);
        int probes;
        int64_t probe_ms[8]; /* monotonic time of each probe */
        int aborts;
        enum { ABORT_CANCELS, ABORT_REPORTS_TRANSIENT, ABORT_NOTHING } on_abort;
        bool stopped;   /* the scheduler said it stopped: nothing may come after */
        int after_stop; /* deliver() or probe() calls after that */
};

static struct config cfg;
static struct store *reader;
static struct writer *writer;
static struct spool *spool;
static struct scheduler *sched;
static struct fake fake;
static int then_calls, then_rc, then_committed;
static int stopped_calls, writer_closed;

static struct job *fake_find(int64_t id)
{
        int i;

        for (i = 0; i < fake.nrunning; i++)
                if (fake.running[i]->id == id)
                        return fake.running[i];
        return NULL;
}

static void fake_deliver(struct backend *be, struct job *job)
{
        if (fake.stopped)
                fake.after_stop++;
        if (fake.ndelivered < MAX_DELIVERIES) {
                fake.delivered[fake.ndelivered] = job->id;
                fake.delivered_attempts[fake.ndelivered] = job->attempts;
                fake.delivered_ms[fake.ndelivered] = util_now_ms();
                fake.ndelivered++;
        }
        fake.running[fake.nrunning++] = job;
        if (fake.nrunning > fake.max_running)
                fake.max_running = fake.nrunning;
}

/* Report the end of job `id`'s delivery through the sink. */
static void fake_finish_full(int64_t id, enum backend_outcome outcome, const char *code,
                             const char *msg, int64_t retry_after_ms, bool cancelled,
                             const char *assigned)
{
        struct backend_sink *sink = fake.base.env.sink;
        struct job *job = fake_find(id);
        struct backend_result r;
        int i;

        if (job == NULL) {
                fprintf(stderr, "fake: job %lld is not being delivered\n", (long long)id);
                check_failures++;
                return;
        }
        for (i = 0; i < fake.nrunning; i++)
                if (fake.running[i] == job)
                        fake.running[i] = fake.running[--fake.nrunning];
        memset(&r, 0, sizeof(r));
        if (outcome == BACKEND_OK) {
                r.outcome = BACKEND_OK;
                r.retry_after_ms = -1;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "%s",
                         assigned ? assigned : "");
        } else {
                backend_result_set(&r, outcome, code, "%s", msg);
                r.retry_after_ms = retry_after_ms;
        }
        r.cancelled = cancelled;
        job->delivery = NULL;
        sink->finished(sink, job, &r);
}

static void fake_ok(int64_t id)
{
        fake_finish_full(id, BACKEND_OK, NULL, NULL, -1, false, "1.0.0");
}

static void fake_fail(int64_t id, enum backend_outcome outcome, const char *msg,
                      int64_t retry_after_ms)
{
        fake_finish_full(id, outcome, outcome == BACKEND_PERMANENT ? "http_400" : "http_503", msg,
                         retry_after_ms, false, NULL);
}

/* The queue calls this once the step is durable: check that it is. */
static void fake_then(struct job *job, int rc)
{
        struct job *stored = NULL;
        size_t i;

        then_calls++;
        then_rc = rc;
        if (store_job_load(reader, job->id, &stored) != 0)
                return;
        if (stored->remote_version_id != NULL)
                then_committed |= 1;
        for (i = 0; i < stored->nassets; i++)
                if (stored->assets[i].done)
                        then_committed |= 2 << i;
        job_free(stored);
}

static void fake_created(int64_t id, const char *remote, const char *version)
{
        struct backend_sink *sink = fake.base.env.sink;
        struct job *job = fake_find(id);

        CHECK(job != NULL);
        if (job)
                sink->created(sink, job, remote, version, fake_then);
}

static void fake_asset_done(int64_t id, int idx)
{
        struct backend_sink *sink = fake.base.env.sink;
        struct job *job = fake_find(id);

        CHECK(job != NULL);
        if (job)
                sink->asset_done(sink, job, idx, fake_then);
}

static void fake_probe(struct backend *be,
                       void (*done)(struct backend *be, bool online, const char *message))
{
        if (fake.stopped)
                fake.after_stop++;
        CHECK(fake.probe_done == NULL); /* one probe at a time */
        if (fake.probes < 8)
                fake.probe_ms[fake.probes] = uvtest_mono_ms();
        fake.probes++;
        fake.probe_done = done;
}

static void fake_answer_probe(bool online, const char *message)
{
        void (*done)(struct backend *, bool, const char *) = fake.probe_done;

        CHECK(done != NULL);
        fake.probe_done = NULL;
        if (done)
                done(&fake.base, online, message);
}

static int fake_version_exists(struct backend *be, const char *ws, const char *name,
                               const char *version)
{
        return 0;
}

static void fake_get(struct backend *be, const char *ws, const char *name, const char *v,
                     backend_get_cb *cb, void *data)
{
        cb(data, FERRY_ENOTFOUND, "fake", NULL);
}

static void fake_fetch(struct backend *be, const cJSON *asset, backend_fetch_cb *cb, void *data)
{
        cb(data, FERRY_ENOTFOUND, "fake", NULL);
}

static uv_timer_t abort_timer;

static void fake_abort_later_cb(uv_timer_t *t)
{
        while (fake.nrunning > 0)
                fake_finish_full(fake.running[0]->id, BACKEND_TRANSIENT, "io_error",
                                 "the transfer was cut", -1, false, NULL);
        uv_close((uv_handle_t *)t, NULL);
}

static void fake_abort(struct backend *be)
{
        fake.aborts++;
        switch (fake.on_abort) {
        case ABORT_CANCELS:
                while (fake.nrunning > 0)
                        fake_finish_full(fake.running[0]->id, BACKEND_TRANSIENT, "cancelled",
                                         "cancelled", -1, true, NULL);
                break;
        case ABORT_REPORTS_TRANSIENT: /* a backend whose cut transfers end as failures, later */
                uv_timer_init(uvtest_loop, &abort_timer);
                uv_timer_start(&abort_timer, fake_abort_later_cb, 20, 0);
                break;
        case ABORT_NOTHING:
                break;
        }
}

static void fake_close(struct backend *be, void (*closed)(void *data), void *data)
{
        closed(data);
}

static const struct backend_ops fake_ops = {
    .name = "fake",
    .deliver = fake_deliver,
    .probe = fake_probe,
    .version_exists = fake_version_exists,
    .get = fake_get,
    .fetch = fake_fetch,
    .abort = fake_abort,
    .close = fake_close,
};

/* ---- the queue around it ---- */

/* A job logged while the scheduler runs: inserted through the writer, as op_log does. */
struct add_op {
        struct writer_op op;
        const char *name;
        int nassets;
        int64_t id;
        int rc;
        bool done;
};

static int add_run(struct store *st, struct writer_op *op)
{
        struct add_op *a = (struct add_op *)op;
        struct job_asset assets[4];
        struct job job;
        char token[33];
        int i, rc;

        if ((rc = store_experiment_insert(st, KEY, "ws", "proj", NULL)) != 0)
                return rc;
        memset(&job, 0, sizeof(job));
        memset(assets, 0, sizeof(assets));
        if (util_random_hex(token, 16) != 0)
                return FERRY_EIO;
        job.token = token;
        job.experiment = KEY;
        job.workspace = "ws";
        job.project = "proj";
        job.name = (char *)a->name;
        job.type = "model";
        job.aliases = "[]";
        job.tags = "[]";
        job.bytes = 0;
        for (i = 0; i < a->nassets && i < 4; i++) {
                assets[i].idx = i;
                assets[i].logical_path = i == 0 ? "a.txt" : "b.txt";
                assets[i].remote = true;
                assets[i].uri = "s3://bucket/object";
                snprintf(assets[i].asset_id, sizeof(assets[i].asset_id), "%032d", i);
        }
        job.assets = assets;
        job.nassets = (size_t)a->nassets;
        return store_job_insert(st, &job, &a->id);
}

static void add_done(struct writer_op *op, int rc)
{
        struct add_op *a = (struct add_op *)op;

        a->rc = rc;
        a->done = true;
}

/* Log a version of artifact `name` with `nassets` remote assets; its job id. */
static int64_t add_job_assets(const char *name, int nassets)
{
        struct add_op a;

        memset(&a, 0, sizeof(a));
        a.op.run = add_run;
        a.op.done = add_done;
        a.name = name;
        a.nassets = nassets;
        writer_submit(writer, &a.op);
        UVTEST_WAIT(a.done, 5000);
        CHECK_INT(a.rc, 0);
        if (sched != NULL)
                scheduler_kick(sched); /* as op_log does after the commit */
        return a.done && a.rc == 0 ? a.id : -1;
}

static int64_t add_job(const char *name)
{
        return add_job_assets(name, 1);
}

static const char *job_state(int64_t id)
{
        static char buf[4][16];
        static int next;
        char *b = buf[next++ % 4];

        if (store_job_state(reader, id, b, sizeof(buf[0])) != 0)
                snprintf(b, sizeof(buf[0]), "(none)");
        return b;
}

static bool state_is(int64_t id, const char *state)
{
        return strcmp(job_state(id), state) == 0;
}

/* attempts and next_attempt_ms as the store has them (-1 if the job cannot be read). */
static int job_attempts(int64_t id, int64_t *next_ms)
{
        struct job *j = NULL;
        int n;

        if (store_job_load(reader, id, &j) != 0)
                return -1;
        n = j->attempts;
        if (next_ms)
                *next_ms = j->next_attempt_ms;
        job_free(j);
        return n;
}

static bool delivered(int64_t id)
{
        int i;

        for (i = 0; i < fake.ndelivered; i++)
                if (fake.delivered[i] == id)
                        return true;
        return false;
}

/* Position of the first delivery of `id`, or -1. */
static int delivery_index(int64_t id)
{
        int i;

        for (i = 0; i < fake.ndelivered; i++)
                if (fake.delivered[i] == id)
                        return i;
        return -1;
}

static struct scheduler_status status(void)
{
        struct scheduler_status st;

        scheduler_status(sched, &st);
        return st;
}

static void setup(void)
{
        struct scheduler_env senv;
        char err[512] = "";

        memset(&cfg, 0, sizeof(cfg));
        cfg.max_jobs = 8;
        cfg.max_transfers = 4;
        cfg.retry_base_ms = 100;
        cfg.retry_cap_ms = 200;
        cfg.retry_slow_after = 10;
        cfg.retry_slow_cap_ms = 1000;
        cfg.max_attempts = 30;
        cfg.retry_after_cap_ms = 600000;
        memset(&fake, 0, sizeof(fake));
        then_calls = then_committed = 0;
        then_rc = 12345;
        stopped_calls = writer_closed = 0;
        sched = NULL;
        if (store_open(&reader, uvtest_path("queue.db"), false, NULL, err, sizeof(err)) != 0 ||
            spool_open(&spool, uvtest_loop, uvtest_path("spool"), uvtest_path("quarantine"), 0, 0,
                       err, sizeof(err)) != 0 ||
            writer_open(&writer, uvtest_loop, uvtest_path("queue.db"), spool_sync, spool, err,
                        sizeof(err)) != 0) {
                fprintf(stderr, "setup: %s\n", err);
                exit(1);
        }
        senv.loop = uvtest_loop;
        senv.cfg = &cfg;
        senv.store = reader;
        senv.writer = writer;
        senv.spool = spool;
        CHECK_INT(scheduler_new(&sched, &senv), 0);
        fake.base.ops = &fake_ops;
        fake.base.env.loop = uvtest_loop;
        fake.base.env.cfg = &cfg;
        fake.base.env.spool = spool;
        fake.base.env.state_dir = uvtest_dir;
        fake.base.env.sink = scheduler_sink(sched);
        fake.base.priv = &fake;
}

static void stopped_cb(void *data)
{
        stopped_calls++;
        fake.stopped = true;
        CHECK_INT(fake.nrunning, 0); /* stopped only once nothing runs */
}

static void writer_closed_cb(void *data)
{
        writer_closed++;
}

/* Stop (unless the test did), close the writer, free everything, as main.c does. */
static void teardown(void)
{
        if (stopped_calls == 0) {
                fake.on_abort = ABORT_CANCELS;
                scheduler_stop(sched, 0, stopped_cb, NULL);
        }
        UVTEST_WAIT_INT(&stopped_calls, 1, 5000);
        writer_close(writer, writer_closed_cb, NULL);
        UVTEST_WAIT_INT(&writer_closed, 1, 5000);
        scheduler_free(sched);
        UVTEST_WAIT(!spool_busy(spool), 5000);
        spool_close(spool);
        store_close(reader);
        CHECK_INT(stopped_calls, 1);
        CHECK_INT(fake.after_stop, 0);
}

/* ---- tests ---- */

/*
 * Versions of one artifact are created on the backend one at a time, in log
 * order; once created, the next may start while its uploads go on. Another
 * artifact is not held up by a stuck one.
 */
static void test_artifact_order(void)
{
        int64_t a1, a2, a3, b1, b2;

        setup();
        a1 = add_job("a");
        a2 = add_job("a");
        b1 = add_job("b");
        a3 = add_job("a");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        uvtest_run_for(100);
        /* Only the heads of the two lanes. */
        CHECK_INT(fake.ndelivered, 2);
        CHECK(delivered(a1));
        CHECK(delivered(b1));
        CHECK(!delivered(a2));
        CHECK(!delivered(a3));

        /* a1 is stuck; b goes on: b1 delivered, then b2 logged and delivered. */
        b2 = add_job("b");
        uvtest_run_for(50);
        CHECK(!delivered(b2)); /* b1 heads lane b until created or done */
        fake_ok(b1);
        UVTEST_WAIT(state_is(b1, "done"), 2000);
        UVTEST_WAIT(delivered(b2), 2000);
        fake_ok(b2);
        UVTEST_WAIT(state_is(b2, "done"), 2000);
        CHECK(!delivered(a2));
        CHECK_STR(job_state(a1), "queued");

        /* a1 gets its place on the backend: committed, then `then`, then a2 may start. */
        fake_created(a1, "remote-a1", "1.0.0");
        UVTEST_WAIT_INT(&then_calls, 1, 2000);
        CHECK_INT(then_rc, 0);
        CHECK_INT(then_committed & 1, 1);
        UVTEST_WAIT(delivered(a2), 2000);
        uvtest_run_for(50);
        CHECK(!delivered(a3));
        fake_created(a2, "remote-a2", "2.0.0");
        UVTEST_WAIT(delivered(a3), 2000);
        /* Uploads of created versions finish in any order. */
        fake_ok(a3);
        fake_ok(a1);
        fake_ok(a2);
        UVTEST_WAIT(state_is(a1, "done") && state_is(a2, "done") && state_is(a3, "done"), 2000);
        CHECK(delivery_index(a1) < delivery_index(a2));
        CHECK(delivery_index(a2) < delivery_index(a3));
        CHECK_INT(fake.ndelivered, 5);
        teardown();
}

/* No more than max_jobs deliveries at once; a finished one makes room for the next. */
static void test_max_jobs(void)
{
        static const char *const names[] = {"n1", "n2", "n3", "n4", "n5"};
        int64_t ids[5];
        int i, settled;

        setup();
        cfg.max_jobs = 2;
        for (i = 0; i < 5; i++)
                ids[i] = add_job(names[i]);
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        uvtest_run_for(100);
        CHECK_INT(fake.ndelivered, 2);
        CHECK_INT(status().running, 2);
        for (settled = 0; settled < 5; settled++) {
                CHECK(fake.nrunning > 0);
                if (fake.nrunning == 0)
                        break;
                fake_ok(fake.running[0]->id);
                UVTEST_WAIT_INT(&fake.ndelivered, settled + 3 > 5 ? 5 : settled + 3, 2000);
        }
        for (i = 0; i < 5; i++)
                UVTEST_WAIT(state_is(ids[i], "done"), 2000);
        CHECK_INT(fake.ndelivered, 5);
        CHECK_INT(fake.max_running, 2);
        CHECK_INT(status().running, 0);
        teardown();
}

/* The backoff: full jitter over min(cap, base * 2^(attempts - 1)), never above the cap. */
static void test_backoff_bounds(void)
{
        int n, i;

        for (n = 1; n <= 12; n++) {
                int64_t ceiling = 100LL << (n - 1), lo = INT64_MAX, hi = -1;

                if (ceiling > 1000)
                        ceiling = 1000;
                for (i = 0; i < 2000; i++) {
                        int64_t d = scheduler_backoff_ms(100, 1000, n);

                        lo = d < lo ? d : lo;
                        hi = d > hi ? d : hi;
                }
                CHECK(lo >= 0);
                CHECK(hi <= ceiling);
                /* Jittered over the whole range, not a constant. */
                CHECK(hi >= ceiling * 9 / 10);
                CHECK(lo <= ceiling / 10);
        }
        /* A cap below the base wins; attempts past 63 doublings do not overflow. */
        for (i = 0; i < 200; i++) {
                CHECK(scheduler_backoff_ms(500, 200, 1) <= 200);
                CHECK(scheduler_backoff_ms(1000, 60000, 1000) <= 60000);
                CHECK(scheduler_backoff_ms(1000, 60000, 1000) >= 0);
        }
}

/*
 * A transient failure is rescheduled within [0, ceiling] and not delivered
 * sooner; attempts count failures in a row of a step: a created version or a
 * confirmed asset starts them over.
 */
static void test_transient_retry(void)
{
        int64_t j, t0, t1, next = 0;

        setup();
        cfg.retry_base_ms = 150;
        cfg.retry_cap_ms = 300;
        j = add_job_assets("t", 2);
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);
        CHECK_INT(fake.delivered_attempts[0], 0);

        t0 = util_now_ms();
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 503: busy", -1);
        UVTEST_WAIT(job_attempts(j, NULL) == 1, 2000);
        t1 = util_now_ms();
        CHECK_INT(job_attempts(j, &next), 1);
        CHECK(next >= t0);
        CHECK(next <= t1 + 150); /* first retry: within [0, base] */
        CHECK_STR(status().last_error, "HTTP 503: busy");
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        CHECK(fake.delivered_ms[1] >= next);
        CHECK_INT(fake.delivered_attempts[1], 1);

        t0 = util_now_ms();
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 503: busy", -1);
        UVTEST_WAIT(job_attempts(j, NULL) == 2, 2000);
        t1 = util_now_ms();
        CHECK_INT(job_attempts(j, &next), 2);
        CHECK(next >= t0);
        CHECK(next <= t1 + 300); /* min(cap 300, 150 * 2) */
        UVTEST_WAIT_INT(&fake.ndelivered, 3, 2000);
        CHECK(fake.delivered_ms[2] >= next);
        CHECK_INT(fake.delivered_attempts[2], 2);

        /* The version is created (attempts start over), then the next step fails once. */
        fake_created(j, "remote-t", NULL);
        UVTEST_WAIT_INT(&then_calls, 1, 2000);
        CHECK_INT(job_attempts(j, NULL), 0);
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 502", -1);
        UVTEST_WAIT(!fake_find(j) && status().running == 0, 2000);
        CHECK_INT(job_attempts(j, NULL), 1); /* not 3 */
        UVTEST_WAIT_INT(&fake.ndelivered, 4, 2000);
        CHECK_INT(fake.delivered_attempts[3], 1);

        /* An asset confirmed: the same. */
        fake_asset_done(j, 1);
        UVTEST_WAIT_INT(&then_calls, 2, 2000);
        CHECK_INT(then_rc, 0);
        CHECK_INT(then_committed & 4, 4); /* asset 1 was done in the store when then() ran */
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 502", -1);
        UVTEST_WAIT(!fake_find(j) && status().running == 0, 2000);
        CHECK_INT(job_attempts(j, NULL), 1); /* not 2 */
        UVTEST_WAIT_INT(&fake.ndelivered, 5, 2000);
        fake_ok(j);
        UVTEST_WAIT(state_is(j, "done"), 2000);
        CHECK(status().last_error == NULL); /* a delivery clears the last error */
        teardown();
}

/* Retry-After: obeyed when longer than the backoff, and capped by retry_after_cap_ms. */
static void test_retry_after(void)
{
        int64_t j, t0, t1, next = 0;

        setup();
        cfg.retry_base_ms = 10;
        cfg.retry_cap_ms = 20;
        cfg.retry_after_cap_ms = 400;
        j = add_job("r");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);

        t0 = util_now_ms();
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 429", 250);
        UVTEST_WAIT(job_attempts(j, NULL) == 1, 2000);
        t1 = util_now_ms();
        job_attempts(j, &next);
        CHECK(next >= t0 + 250);
        CHECK(next <= t1 + 250);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        CHECK(fake.delivered_ms[1] >= next);
        CHECK(fake.delivered_ms[1] >= t0 + 250);

        /* A server asking for a day gets the cap. */
        t0 = util_now_ms();
        fake_fail(j, BACKEND_TRANSIENT, "HTTP 503", 86400000);
        UVTEST_WAIT(job_attempts(j, NULL) == 2, 2000);
        t1 = util_now_ms();
        job_attempts(j, &next);
        CHECK(next >= t0 + 400);
        CHECK(next <= t1 + 400);
        UVTEST_WAIT_INT(&fake.ndelivered, 3, 2000);
        CHECK(fake.delivered_ms[2] >= next);
        fake_ok(j);
        UVTEST_WAIT(state_is(j, "done"), 2000);
        teardown();
}

/* max_attempts failures of a step in a row park the job with the last error. */
static void test_max_attempts(void)
{
        cJSON *errs;
        int64_t j;
        int i;

        setup();
        cfg.retry_base_ms = 1;
        cfg.retry_cap_ms = 5;
        cfg.max_attempts = 3;
        j = add_job("m");
        scheduler_start(sched, &fake.base);
        for (i = 1; i <= 3; i++) {
                UVTEST_WAIT_INT(&fake.ndelivered, i, 2000);
                fake_fail(j, BACKEND_TRANSIENT, "HTTP 500: boom", -1);
        }
        UVTEST_WAIT(state_is(j, "failed"), 2000);
        uvtest_run_for(100);
        CHECK_INT(fake.ndelivered, 3);
        errs = store_errors(reader, 10);
        CHECK_INT(cJSON_GetArraySize(errs), 1);
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "job")), j);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "message")),
                  "gave up after 3 failed attempts: HTTP 500: boom");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "code")),
                  "http_503");
        cJSON_Delete(errs);
        teardown();
}

/* A permanent failure parks the job at once with its code and message; it is not retried. */
static void test_permanent(void)
{
        cJSON *errs, *e;
        int64_t j, k;

        setup();
        j = add_job("p");
        k = add_job("p");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);
        fake_fail(j, BACKEND_PERMANENT, "HTTP 400: artifact name refused (sdk_error_code 1)", -1);
        UVTEST_WAIT(state_is(j, "failed"), 2000);
        /* The parked version leaves its lane: the next one goes. */
        UVTEST_WAIT(delivered(k), 2000);
        uvtest_run_for(100);
        CHECK_INT(fake.ndelivered, 2);
        CHECK_INT(job_attempts(j, NULL), 0);
        errs = store_errors(reader, 10);
        e = cJSON_GetArrayItem(errs, 0);
        CHECK_INT(cJSON_GetArraySize(errs), 1);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(e, "name")), "p");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(e, "code")), "http_400");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(e, "message")),
                  "HTTP 400: artifact name refused (sdk_error_code 1)");
        cJSON_Delete(errs);
        fake_ok(k);
        UVTEST_WAIT(state_is(k, "done"), 2000);
        teardown();
}

/*
 * Offline: the job waits without spending an attempt, nothing new starts,
 * running deliveries finish, the backend is probed (after about 1 s, then
 * with backoff) until it answers, and then the queue drains.
 */
static void test_offline(void)
{
        struct scheduler_status st;
        int64_t j1, j2, before, offline_at, answered_at;

        setup();
        j1 = add_job("o1");
        j2 = add_job("o2");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        before = util_now_ms();
        offline_at = uvtest_mono_ms();
        fake_fail(j1, BACKEND_OFFLINE, "cannot connect to comet.example: refused", -1);
        UVTEST_WAIT(!status().online, 1000);
        st = status();
        CHECK_STR(st.last_error, "cannot connect to comet.example: refused");
        CHECK(st.offline_since_ms >= before && st.offline_since_ms <= util_now_ms());
        /* A delivery still running while offline finishes and is recorded. */
        fake_ok(j2);
        UVTEST_WAIT(state_is(j2, "done"), 2000);
        UVTEST_WAIT(status().running == 0, 2000);
        CHECK_INT(job_attempts(j1, NULL), 0);
        CHECK_STR(job_state(j1), "queued");
        /* No delivery while offline; a probe after about a second. */
        UVTEST_WAIT_INT(&fake.probes, 1, 3000);
        CHECK(fake.probe_ms[0] - offline_at >= 990);
        CHECK_INT(fake.ndelivered, 2);
        answered_at = uvtest_mono_ms();
        fake_answer_probe(false, "still refused");
        CHECK_STR(status().last_error, "still refused");
        CHECK(!status().online);
        UVTEST_WAIT_INT(&fake.probes, 2, 4000);
        /* The second probe: 2 s jittered over its upper half. */
        CHECK(fake.probe_ms[1] - answered_at >= 990);
        CHECK(fake.probe_ms[1] - answered_at <= 3000); /* 2 s, and room for a loaded machine */
        CHECK_INT(fake.ndelivered, 2);
        fake_answer_probe(true, NULL);
        st = status();
        CHECK(st.online);
        CHECK(st.last_error == NULL);
        CHECK_INT(st.offline_since_ms, 0);
        UVTEST_WAIT_INT(&fake.ndelivered, 3, 2000);
        CHECK_INT(fake.delivered[2], j1);
        CHECK_INT(fake.delivered_attempts[2], 0);
        fake_ok(j1);
        UVTEST_WAIT(state_is(j1, "done"), 2000);
        teardown();
}

/* Paused: nothing new starts; a running delivery finishes; resume starts the rest. */
static void test_pause(void)
{
        int64_t j1, j2;

        setup();
        scheduler_set_paused(sched, true);
        scheduler_start(sched, &fake.base);
        j1 = add_job("p1");
        uvtest_run_for(150);
        CHECK_INT(fake.ndelivered, 0);
        CHECK(status().paused);
        scheduler_set_paused(sched, false);
        CHECK(!status().paused);
        UVTEST_WAIT(delivered(j1), 2000);

        scheduler_set_paused(sched, true);
        j2 = add_job("p2");
        fake_ok(j1);
        UVTEST_WAIT(state_is(j1, "done"), 2000);
        uvtest_run_for(150);
        CHECK(!delivered(j2));
        scheduler_set_paused(sched, false);
        UVTEST_WAIT(delivered(j2), 2000);
        fake_ok(j2);
        UVTEST_WAIT(state_is(j2, "done"), 2000);
        teardown();
}

struct wait_seen {
        int calls;
        bool drained;
        int64_t pending, failed;
        int64_t at_ms;
};

static void wait_seen_cb(void *data, bool drained, int64_t pending, int64_t failed)
{
        struct wait_seen *w = data;

        w->calls++;
        w->drained = drained;
        w->pending = pending;
        w->failed = failed;
        w->at_ms = util_now_ms();
}

/*
 * Orderly stop: waits are answered at once; running deliveries may finish
 * within the grace period and are recorded; then the backend aborts the rest,
 * nothing is recorded for them, and stopped() comes once. Nothing starts
 * after the stop.
 */
static void test_stop_in_flight(void)
{
        struct scheduler_wait *h1 = NULL, *h2 = NULL, *h3 = NULL;
        struct wait_seen w1 = {0}, w2 = {0}, w3 = {0};
        int64_t j1, j2, j3, id;

        setup();
        cfg.max_jobs = 2;
        j1 = add_job("s1");
        j2 = add_job("s2");
        j3 = add_job("s3");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        id = j1;
        CHECK_INT(scheduler_wait(sched, NULL, 0, -1, wait_seen_cb, &w1, &h1), 0);
        CHECK_INT(scheduler_wait(sched, &id, 1, -1, wait_seen_cb, &w2, &h2), 0);
        CHECK(h1 != NULL && h2 != NULL);
        CHECK_INT(status().waiters, 2);

        fake.on_abort = ABORT_CANCELS;
        scheduler_stop(sched, 300, stopped_cb, NULL);
        CHECK_INT(w1.calls, 1);
        CHECK_INT(w2.calls, 1);
        CHECK(!w1.drained);
        CHECK(!w2.drained);
        CHECK_INT(w2.pending, 1);
#if FIXED_STOP_WAIT_ALL_COUNTS
        CHECK_INT(w1.pending, 3); /* j1 and j2 running, j3 queued */
#else
        /* Known bug: the wait on every job gets pending 0 (its `remaining`, unused for such
         * waits) where its timeout reports the queue's count; "not drained, 0 pending". */
        CHECK_INT(w1.pending, 0);
        fprintf(stderr, "test_scheduler.stop_in_flight: known bug: a wait on every job answered "
                        "by the stop says pending 0 with 3 jobs queued\n");
#endif
        CHECK_INT(status().waiters, 0);
        CHECK_INT(stopped_calls, 0);
        /* A wait that comes now is answered at once. */
        CHECK_INT(scheduler_wait(sched, &id, 1, -1, wait_seen_cb, &w3, &h3), 0);
        CHECK(h3 == NULL);
        CHECK_INT(w3.calls, 1);
        CHECK(!w3.drained);

        /* One delivery finishes within the grace period: recorded. */
        fake_ok(j1);
        UVTEST_WAIT(state_is(j1, "done"), 2000);
        CHECK_INT(stopped_calls, 0);
        CHECK_INT(fake.aborts, 0);
        /* The other is aborted after it, cancelled: nothing recorded, then stopped(). */
        UVTEST_WAIT_INT(&stopped_calls, 1, 2000);
        CHECK_INT(fake.aborts, 1);
        CHECK_STR(job_state(j2), "queued");
        CHECK_INT(job_attempts(j2, NULL), 0);
        /* Nothing starts after the stop, kicked or not; no callback comes. */
        scheduler_kick(sched);
        uvtest_run_for(150);
        CHECK(!delivered(j3));
        CHECK_INT(fake.ndelivered, 2);
        CHECK_INT(stopped_calls, 1);
        CHECK_INT(w1.calls + w2.calls + w3.calls, 3);
        teardown();
}

/*
 * A backend whose aborted deliveries end as failures (not flagged cancelled)
 * gets nothing recorded for them either: they resume after a restart with
 * their attempts as they were.
 */
static void test_stop_abort_reports_failure(void)
{
        int64_t j;

        setup();
        j = add_job("f");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);
        fake.on_abort = ABORT_REPORTS_TRANSIENT;
        scheduler_stop(sched, 0, stopped_cb, NULL);
        CHECK_INT(fake.aborts, 1);
        CHECK_INT(stopped_calls, 0);
        UVTEST_WAIT_INT(&stopped_calls, 1, 2000);
        uvtest_run_for(50);
        CHECK_STR(job_state(j), "queued");
        CHECK_INT(job_attempts(j, NULL), 0);
        CHECK_INT(stopped_calls, 1);
        teardown();
}

/* Stopping with nothing running: stopped() at once. */
static void test_stop_idle(void)
{
        setup();
        scheduler_start(sched, &fake.base);
        uvtest_run_for(20);
        scheduler_stop(sched, 10000, stopped_cb, NULL);
        CHECK_INT(stopped_calls, 1);
        CHECK_INT(fake.aborts, 0);
        teardown();
}

/* Stopped while a probe is out: stopped() at once; the late answer starts nothing. */
static void test_stop_while_probing(void)
{
        int64_t j;

        setup();
        j = add_job("pr");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);
        fake_fail(j, BACKEND_OFFLINE, "unreachable", -1);
        UVTEST_WAIT_INT(&fake.probes, 1, 3000);
        scheduler_stop(sched, 1000, stopped_cb, NULL);
        CHECK_INT(stopped_calls, 1);
        fake_answer_probe(true, NULL);
        uvtest_run_for(100);
        CHECK_INT(fake.ndelivered, 1);
        CHECK_INT(fake.probes, 1);
        CHECK_INT(stopped_calls, 1);
        CHECK_STR(job_state(j), "queued");
        teardown();
}

/* Waits: woken once when their jobs settle, by their timeout, or never once cancelled. */
static void test_waiters(void)
{
        struct scheduler_wait *h;
        struct wait_seen wa = {0}, wall = {0}, wt = {0}, wu = {0}, wc = {0}, ws = {0};
        int64_t j1, j2, j3, j4, ids[3], started;

        setup();
        j1 = add_job("w1");
        j2 = add_job("w2");
        j3 = add_job("w3");
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 3, 2000);

        ids[0] = j1;
        ids[1] = j2;
        CHECK_INT(scheduler_wait(sched, ids, 2, -1, wait_seen_cb, &wa, &h), 0);
        CHECK(h != NULL);
        CHECK_INT(scheduler_wait(sched, NULL, 0, -1, wait_seen_cb, &wall, &h), 0);
        CHECK(h != NULL);
        /* libuv times timers from the loop's cached clock: refresh it, as a callback has it. */
        uv_update_time(uvtest_loop);
        started = util_now_ms();
        CHECK_INT(scheduler_wait(sched, &j3, 1, 60, wait_seen_cb, &wt, &h), 0);
        CHECK(h != NULL);
        ids[0] = 999999; /* no such job: nothing to wait for */
        CHECK_INT(scheduler_wait(sched, ids, 1, -1, wait_seen_cb, &wu, &h), 0);
        CHECK(h == NULL);
        CHECK_INT(wu.calls, 1);
        CHECK(wu.drained);
        CHECK_INT(scheduler_wait(sched, &j1, 1, -1, wait_seen_cb, &wc, &h), 0);
        CHECK(h != NULL);
        scheduler_wait_cancel(sched, h);
        CHECK_INT(status().waiters, 3);

        /* The timeout. */
        UVTEST_WAIT_INT(&wt.calls, 1, 2000);
        CHECK(!wt.drained);
        CHECK_INT(wt.pending, 1);
        CHECK(wt.at_ms - started >= 59); /* two clocks, each cut to the millisecond */
        CHECK_INT(status().waiters, 2);

        fake_ok(j1);
        UVTEST_WAIT(state_is(j1, "done"), 2000);
        uvtest_run_for(20);
        CHECK_INT(wa.calls, 0);
        fake_fail(j2, BACKEND_PERMANENT, "refused", -1);
        UVTEST_WAIT_INT(&wa.calls, 1, 2000);
        CHECK(wa.drained);
        CHECK_INT(wa.pending, 0);
        CHECK_INT(wa.failed, 1);
        CHECK_INT(wall.calls, 0); /* j3 still runs */
        fake_ok(j3);
        UVTEST_WAIT_INT(&wall.calls, 1, 2000);
        CHECK(wall.drained);
        CHECK_INT(wall.failed, 1);

        /* A job that leaves the queue outside a delivery (cancelled by an op). */
        scheduler_set_paused(sched, true);
        j4 = add_job("w4");
        CHECK_INT(scheduler_wait(sched, &j4, 1, -1, wait_seen_cb, &ws, &h), 0);
        CHECK(h != NULL);
        scheduler_job_settled(sched, j4, true);
        CHECK_INT(ws.calls, 1);
        CHECK(ws.drained);
        CHECK_INT(ws.failed, 1);

        uvtest_run_for(50);
        CHECK_INT(wa.calls, 1);
        CHECK_INT(wall.calls, 1);
        CHECK_INT(wt.calls, 1);
        CHECK_INT(wu.calls, 1);
        CHECK_INT(wc.calls, 0);
        CHECK_INT(ws.calls, 1);
        CHECK_INT(status().waiters, 0);
        teardown();
}

/* registered, created and asset_done are committed; bytes sent show in status. */
static void test_sink_steps(void)
{
        struct backend_sink *sink;
        struct job *stored = NULL;
        cJSON *items;
        int64_t j;

        setup();
        j = add_job_assets("k", 2);
        scheduler_start(sched, &fake.base);
        UVTEST_WAIT_INT(&fake.ndelivered, 1, 2000);
        sink = fake.base.env.sink;
        sink->registered(sink, fake_find(j));
        fake_created(j, "remote-k", "7.0.0");
        UVTEST_WAIT_INT(&then_calls, 1, 2000);
        CHECK_INT(then_rc, 0);
        fake_asset_done(j, 0);
        fake_asset_done(j, 1);
        UVTEST_WAIT_INT(&then_calls, 3, 2000);
        CHECK_INT(then_committed, 1 | 2 | 4);
        sink->sent(sink, 6000);
        CHECK_INT(status().bytes_sent, 6000);
        CHECK_INT(status().rate_bps, 100);
        CHECK_INT(store_job_load(reader, j, &stored), 0);
        if (stored != NULL) {
                CHECK(stored->experiment_registered);
                CHECK_STR(stored->remote_version_id, "remote-k");
                CHECK_STR(stored->assigned_version, "7.0.0");
                CHECK(stored->nassets == 2 && stored->assets[0].done && stored->assets[1].done);
                job_free(stored);
        }
        fake_finish_full(j, BACKEND_OK, NULL, NULL, -1, false, "7.0.0");
        UVTEST_WAIT(state_is(j, "done"), 2000);
        items = store_list(reader, "done", 10, 0, &(bool){false});
        CHECK_STR(
            cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "version")),
            "7.0.0");
        cJSON_Delete(items);
        teardown();
}

static const struct uvtest tests[] = {
    {"artifact_order", test_artifact_order},
    {"max_jobs", test_max_jobs},
    {"backoff_bounds", test_backoff_bounds},
    {"transient_retry", test_transient_retry},
    {"retry_after", test_retry_after},
    {"max_attempts", test_max_attempts},
    {"permanent", test_permanent},
    {"offline", test_offline},
    {"pause", test_pause},
    {"stop_in_flight", test_stop_in_flight},
    {"stop_abort_reports_failure", test_stop_abort_reports_failure},
    {"stop_idle", test_stop_idle},
    {"stop_while_probing", test_stop_while_probing},
    {"waiters", test_waiters},
    {"sink_steps", test_sink_steps},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        return uvtest_main(argc, argv, "test_scheduler", tests);
}
