/* scheduler.c — runs due jobs on the backend and records their outcomes. */
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
#include "writer.h"

#define SCHEDULER_IDLE_MS 30000 /* look at the queue at least this often */
#define SCHEDULER_PROBE_CAP_MS 10000
#define RATE_SAMPLES 64
#define WAIT_BUCKETS_MIN 64

/* A job handed to the backend. */
struct run {
        struct job *job;
        bool progressed;                 /* a step succeeded during this delivery */
        bool settling;                   /* its outcome is being recorded */
        struct scheduler_cancel *cancel; /* `ferry cancel` waits for its delivery to stop */
        struct run *next;
};

/* One job a wait is watching: in the job's hash bucket. */
struct wait_ref {
        struct scheduler_wait *w;
        int64_t job;
        struct wait_ref *prev, *next; /* bucket chain */
};

struct scheduler_wait {
        struct scheduler *s;
        void (*done)(void *data, bool drained, int64_t pending, int64_t failed);
        void *data;
        bool all;          /* every job */
        int64_t remaining; /* watched jobs not settled yet */
        int64_t failed;    /* watched jobs that failed */
        struct wait_ref *refs;
        size_t nrefs;
        uv_timer_t timer;
        bool has_timer;
        struct scheduler_wait *prev, *next; /* the scheduler's list of waits */
};

/* A `ferry cancel` in progress. */
struct scheduler_cancel {
        struct writer_op op; /* first: the writer's op is the cancel */
        struct scheduler *s;
        int64_t job;
        bool running;       /* it was being delivered when asked */
        char was[16];       /* its state before */
        struct job *loaded; /* the job as the store had it (files, the backend's id) */
        void (*done)(void *data, const struct scheduler_cancel_result *r);
        void *data;
        struct scheduler_cancel *prev, *next; /* the scheduler's list: not started meanwhile */
};

struct scheduler {
        uv_loop_t *loop;
        const struct config *cfg;
        struct store *store;
        struct writer *writer;
        struct spool *spool;
        struct backend *backend;
        struct backend_sink sink; /* first: the sink's callbacks find us from it */
        uv_timer_t timer;
        uv_timer_t grace; /* stop: how long running deliveries may finish */
        bool started, stopping, aborted;
        struct run *running;
        int nrunning;
        bool online;
        bool paused; /* held by `ferry pause`: start nothing until resumed */
        bool probing;
        int probes; /* failed probes since going offline */
        int64_t offline_since_ms;
        int64_t next_probe_ms; /* monotonic */
        char last_error[512];
        struct scheduler_wait *waits;
        int nwaits;
        struct scheduler_cancel *cancels;
        int nall; /* waits on every job */
        struct wait_ref **buckets;
        size_t nbuckets, nrefs;
        int64_t bytes_sent;
        struct {
                int64_t t_ms, bytes;
        } rate[RATE_SAMPLES];
        int rate_next;
        void (*stopped)(void *data);
        void *stopped_data;
        int open_handles;
        bool freeing;
};

static void scheduler_tick(struct scheduler *s);
static void scheduler_check_stopped(struct scheduler *s);
static void scheduler_settled(struct scheduler *s, int64_t job, bool failed);
static void cancel_commit(struct scheduler *s, struct scheduler_cancel *c);
static void cancel_end(struct scheduler_cancel *c, int rc, const char *note);

int64_t scheduler_backoff_ms(int64_t base_ms, int64_t cap_ms, int attempts)
{
        int64_t ceiling = base_ms;
        int i;

        for (i = 1; i < attempts && ceiling < cap_ms; i++)
                ceiling = ceiling > cap_ms / 2 ? cap_ms : ceiling * 2;
        if (ceiling > cap_ms)
                ceiling = cap_ms;
        return (int64_t)(util_random_unit() * (double)ceiling);
}

static struct scheduler *sink_owner(struct backend_sink *sink)
{
        return (struct scheduler *)((char *)sink - offsetof(struct scheduler, sink));
}

static struct run *scheduler_find_run(struct scheduler *s, const struct job *job)
{
        struct run *r;

        for (r = s->running; r != NULL; r = r->next)
                if (r->job == job)
                        return r;
        return NULL;
}

static bool scheduler_is_running(struct scheduler *s, int64_t id)
{
        struct run *r;

        for (r = s->running; r != NULL; r = r->next)
                if (r->job->id == id)
                        return true;
        return false;
}

static void scheduler_release_run(struct scheduler *s, struct run *run)
{
        struct run **pp;

        for (pp = &s->running; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == run) {
                        *pp = run->next;
                        s->nrunning--;
                        break;
                }
        }
        job_free(run->job);
        free(run);
}

/* ---- the writer's operations ---- */

enum sched_op_kind {
        OP_SYNCED,
        OP_REGISTERED,
        OP_CREATED,
        OP_ASSET_DONE,
        OP_DONE,
        OP_FAILED,
        OP_RESCHEDULE,
};

struct sched_op {
        struct writer_op op;
        struct scheduler *s;
        enum sched_op_kind kind;
        int64_t job;
        int idx, attempts;
        int64_t next_ms;
        char *a, *b; /* strings of the op (ids, codes, messages) */
        struct run *run;
        struct job *jobp;
        backend_then_cb *then;
        bool failed;              /* the settle event: OP_FAILED */
        struct job_asset *assets; /* OP_SYNCED: the assets replacing asset idx */
        size_t nassets;
};

static int sched_op_run(struct store *st, struct writer_op *op)
{
        struct sched_op *o = (struct sched_op *)op;

        switch (o->kind) {
        case OP_SYNCED:
                return store_asset_expand(st, o->job, o->idx, o->assets, o->nassets, o->a);
        case OP_REGISTERED:
                return store_experiment_set_registered(st, o->a);
        case OP_CREATED:
                return store_job_set_created(st, o->job, o->a, o->b);
        case OP_ASSET_DONE:
                return store_asset_set_done(st, o->job, o->idx);
        case OP_DONE:
                return store_job_set_done(st, o->job, o->a);
        case OP_FAILED:
                return store_job_set_failed(st, o->job, o->a, o->b);
        case OP_RESCHEDULE:
                return store_job_reschedule(st, o->job, o->attempts, o->next_ms, o->a, o->b);
        }
        return FERRY_EINTERNAL;
}

static void sched_op_free(struct sched_op *o)
{
        size_t i;

        for (i = 0; o->assets != NULL && i < o->nassets; i++)
                job_asset_clear(&o->assets[i]);
        free(o->assets);
        free(o->a);
        free(o->b);
        free(o);
}

/* The listing of asset o->idx is recorded: the job in memory follows the store. */
static int sched_apply_synced(struct sched_op *o)
{
        struct job *job = o->jobp;
        size_t n = job->nassets - 1 + o->nassets, i, at = (size_t)o->idx;
        struct job_asset *assets = calloc(n, sizeof(*assets));

        if (assets == NULL)
                return FERRY_ENOMEM;
        memcpy(assets, job->assets, at * sizeof(*assets));
        memcpy(assets + at, o->assets, o->nassets * sizeof(*assets));
        memcpy(assets + at + o->nassets, job->assets + at + 1,
               (job->nassets - at - 1) * sizeof(*assets));
        job_asset_clear(&job->assets[at]);
        free(job->assets);
        for (i = 0; i < n; i++)
                assets[i].idx = (int)i;
        job->assets = assets;
        job->nassets = n;
        job->attempts = 0;
        free(o->assets); /* its entries moved into the job */
        o->assets = NULL;
        o->nassets = 0;
        return 0;
}

/* The files of a delivered job go (once no download reads them); its bytes are released. */
static void scheduler_discard_files(struct scheduler *s, const struct job *job)
{
        char **names = calloc(job->nassets + 1, sizeof(char *));
        size_t i, n = 0;

        for (i = 0; names != NULL && i < job->nassets; i++)
                if (job->assets[i].spool != NULL &&
                    (names[n] = strdup(job->assets[i].spool)) != NULL)
                        n++;
        spool_discard(s->spool, job->id, names, n, job->bytes);
}

static void sched_op_done(struct writer_op *op, int rc)
{
        struct sched_op *o = (struct sched_op *)op;
        struct scheduler *s = o->s;

        switch (o->kind) {
        case OP_SYNCED:
                if (rc == 0 && (rc = sched_apply_synced(o)) != 0)
                        log_error("job %lld: out of memory after recording a listing; it runs "
                                  "again",
                                  (long long)o->job);
                o->then(o->jobp, rc);
                break;
        case OP_REGISTERED:
                break;
        case OP_CREATED:
        case OP_ASSET_DONE:
                o->then(o->jobp, rc);
                if (o->kind == OP_CREATED)
                        scheduler_kick(s); /* the artifact's next version may start */
                break;
        case OP_DONE:
        case OP_FAILED:
        case OP_RESCHEDULE: {
                /* A cancel that came while this outcome was being recorded. */
                struct scheduler_cancel *c = o->run->cancel;

                if (rc != 0)
                        log_error("job %lld: cannot record its outcome (%s); it runs again",
                                  (long long)o->job, ferry_strerror(rc));
                else if (o->kind == OP_DONE)
                        scheduler_discard_files(s, o->run->job);
                scheduler_release_run(s, o->run);
                if (rc == 0 && o->kind != OP_RESCHEDULE)
                        scheduler_settled(s, o->job, o->kind == OP_FAILED);
                if (c != NULL && o->kind == OP_DONE && rc == 0) {
                        snprintf(c->was, sizeof(c->was), "done");
                        cancel_end(c, FERRY_ENOTFOUND, NULL);
                } else if (c != NULL) {
                        cancel_commit(s, c);
                }
                scheduler_check_stopped(s);
                scheduler_kick(s);
                break;
        }
        }
        sched_op_free(o);
}

static struct sched_op *sched_op_new(struct scheduler *s, enum sched_op_kind kind, int64_t job)
{
        struct sched_op *o = calloc(1, sizeof(*o));

        if (o == NULL)
                return NULL;
        o->op.run = sched_op_run;
        o->op.done = sched_op_done;
        o->s = s;
        o->kind = kind;
        o->job = job;
        return o;
}

/* ---- the backend sink ---- */

static void sink_synced(struct backend_sink *sink, struct job *job, int idx,
                        struct job_asset *assets, size_t n, const char *warning,
                        backend_then_cb *then)
{
        struct scheduler *s = sink_owner(sink);
        struct sched_op *o = sched_op_new(s, OP_SYNCED, job->id);
        struct run *run = scheduler_find_run(s, job);
        size_t i;

        if (run)
                run->progressed = true;
        if (o == NULL || (warning && (o->a = strdup(warning)) == NULL)) {
                if (o)
                        sched_op_free(o);
                for (i = 0; i < n; i++)
                        job_asset_clear(&assets[i]);
                free(assets);
                then(job, FERRY_ENOMEM);
                return;
        }
        o->idx = idx;
        o->assets = assets;
        o->nassets = n;
        o->jobp = job;
        o->then = then;
        writer_submit(s->writer, &o->op);
}

static void sink_registered(struct backend_sink *sink, struct job *job)
{
        struct scheduler *s = sink_owner(sink);
        struct sched_op *o = sched_op_new(s, OP_REGISTERED, job->id);
        struct run *run = scheduler_find_run(s, job);

        if (run)
                run->progressed = true;
        if (o == NULL || (o->a = strdup(job->experiment)) == NULL) {
                if (o)
                        sched_op_free(o);
                return; /* registering again later is harmless */
        }
        writer_submit(s->writer, &o->op);
}

static void sink_created(struct backend_sink *sink, struct job *job, const char *remote_id,
                         const char *assigned_version, backend_then_cb *then)
{
        struct scheduler *s = sink_owner(sink);
        struct sched_op *o = sched_op_new(s, OP_CREATED, job->id);
        struct run *run = scheduler_find_run(s, job);

        if (run)
                run->progressed = true;
        if (o == NULL || (o->a = strdup(remote_id)) == NULL ||
            (assigned_version && (o->b = strdup(assigned_version)) == NULL)) {
                if (o)
                        sched_op_free(o);
                then(job, FERRY_ENOMEM);
                return;
        }
        o->jobp = job;
        o->then = then;
        writer_submit(s->writer, &o->op);
}

static void sink_asset_done(struct backend_sink *sink, struct job *job, int idx,
                            backend_then_cb *then)
{
        struct scheduler *s = sink_owner(sink);
        struct sched_op *o = sched_op_new(s, OP_ASSET_DONE, job->id);
        struct run *run = scheduler_find_run(s, job);

        if (run)
                run->progressed = true;
        if (o == NULL) {
                then(job, FERRY_ENOMEM);
                return;
        }
        o->idx = idx;
        o->jobp = job;
        o->then = then;
        writer_submit(s->writer, &o->op);
}

static void sink_sent(struct backend_sink *sink, int64_t bytes)
{
        struct scheduler *s = sink_owner(sink);

        s->bytes_sent += bytes;
        s->rate[s->rate_next].t_ms = util_mono_ms();
        s->rate[s->rate_next].bytes = bytes;
        s->rate_next = (s->rate_next + 1) % RATE_SAMPLES;
}

static void scheduler_go_offline(struct scheduler *s, const char *message)
{
        snprintf(s->last_error, sizeof(s->last_error), "%s", message);
        if (!s->online)
                return;
        s->online = false;
        s->probes = 0;
        s->offline_since_ms = util_now_ms();
        s->next_probe_ms = util_mono_ms() + 1000;
        log_warn("backend unreachable, holding the queue: %s", message);
}

static void sink_finished(struct backend_sink *sink, struct job *job,
                          const struct backend_result *r)
{
        struct scheduler *s = sink_owner(sink);
        const struct config *cfg = s->cfg;
        struct run *run = scheduler_find_run(s, job);
        struct sched_op *o;
        int64_t delay, ra;
        int attempts;

        if (run == NULL) {
                log_error("job %lld: a delivery finished that was not running", (long long)job->id);
                return;
        }
        if (run->cancel != NULL && (r->cancelled || r->outcome != BACKEND_OK)) {
                /* `ferry cancel` stopped it: nothing of this delivery is recorded. */
                struct scheduler_cancel *c = run->cancel;

                scheduler_release_run(s, run);
                cancel_commit(s, c);
                scheduler_check_stopped(s);
                scheduler_kick(s);
                return;
        }
        if (r->cancelled || (s->aborted && r->outcome != BACKEND_OK)) {
                /* Stopped by a shutdown: nothing is recorded; it resumes on restart. */
                scheduler_release_run(s, run);
                scheduler_check_stopped(s);
                return;
        }
        run->settling = true;
        switch (r->outcome) {
        case BACKEND_OK:
                o = sched_op_new(s, OP_DONE, job->id);
                if (o && r->assigned_version[0] && (o->a = strdup(r->assigned_version)) == NULL)
                        goto nomem;
                log_info("job %lld: %s %s delivered", (long long)job->id, job->name,
                         r->assigned_version);
                if (s->last_error[0] && s->online)
                        s->last_error[0] = '\0';
                break;
        case BACKEND_OFFLINE:
                /* Spends no attempt: the job waits for the backend to come back. */
                o = sched_op_new(s, OP_RESCHEDULE, job->id);
                if (o) {
                        o->attempts = run->progressed ? 0 : job->attempts;
                        o->next_ms = 0;
                }
                scheduler_go_offline(s, r->message);
                break;
        case BACKEND_TRANSIENT:
                snprintf(s->last_error, sizeof(s->last_error), "%s", r->message);
                /* Attempts count failures of a step: a step that succeeded starts them over. */
                attempts = (run->progressed ? 0 : job->attempts) + 1;
                if (attempts >= cfg->max_attempts) {
                        o = sched_op_new(s, OP_FAILED, job->id);
                        if (o) {
                                char msg[700];

                                snprintf(msg, sizeof(msg), "gave up after %d failed attempts: %s",
                                         attempts, r->message);
                                o->b = strdup(msg);
                                log_warn("job %lld: %s", (long long)job->id, msg);
                        }
                        break;
                }
                /* Short streaks are noise, retried within seconds; a long one is an outage. */
                delay = scheduler_backoff_ms(
                    cfg->retry_base_ms,
                    attempts > cfg->retry_slow_after ? cfg->retry_slow_cap_ms : cfg->retry_cap_ms,
                    attempts);
                ra = r->retry_after_ms;
                if (ra > cfg->retry_after_cap_ms) {
                        log_info("job %lld: the server asked to wait %lld s; waiting %lld s "
                                 "(retry_after_cap_ms)",
                                 (long long)job->id, (long long)(ra / 1000),
                                 (long long)(cfg->retry_after_cap_ms / 1000));
                        ra = cfg->retry_after_cap_ms;
                }
                if (ra > delay)
                        delay = ra;
                o = sched_op_new(s, OP_RESCHEDULE, job->id);
                if (o) {
                        o->attempts = attempts;
                        o->next_ms = util_now_ms() + delay;
                }
                log_info("job %lld: %s; retrying in %lld ms", (long long)job->id, r->message,
                         (long long)delay);
                break;
        case BACKEND_PERMANENT:
        default:
                o = sched_op_new(s, OP_FAILED, job->id);
                log_warn("job %lld: %s failed: %s", (long long)job->id, job->name, r->message);
                break;
        }
        if (o == NULL)
                goto nomem;
        if (o->kind != OP_DONE) {
                free(o->a);
                o->a = strdup(r->code[0] ? r->code : "failed");
                if (o->b == NULL)
                        o->b = strdup(r->message);
        }
        o->run = run;
        o->failed = o->kind == OP_FAILED;
        writer_submit(s->writer, &o->op);
        return;
nomem:
        if (o)
                sched_op_free(o);
        log_error("job %lld: out of memory recording its outcome; it runs again",
                  (long long)job->id);
        scheduler_release_run(s, run);
        scheduler_check_stopped(s);
}

/* ---- waits ---- */

static size_t wait_bucket(const struct scheduler *s, int64_t job)
{
        uint64_t h = (uint64_t)job * 0x9e3779b97f4a7c15ULL;

        return (size_t)(h >> 32) & (s->nbuckets - 1);
}

static void wait_ref_unlink(struct scheduler *s, struct wait_ref *ref)
{
        size_t b = wait_bucket(s, ref->job);

        if (ref->prev)
                ref->prev->next = ref->next;
        else
                s->buckets[b] = ref->next;
        if (ref->next)
                ref->next->prev = ref->prev;
        ref->prev = ref->next = NULL;
        s->nrefs--;
}

static void wait_ref_link(struct scheduler *s, struct wait_ref *ref)
{
        size_t b = wait_bucket(s, ref->job);

        ref->prev = NULL;
        ref->next = s->buckets[b];
        if (ref->next)
                ref->next->prev = ref;
        s->buckets[b] = ref;
        s->nrefs++;
}

/* Keep the table at most two refs per bucket on average. */
static int wait_grow(struct scheduler *s, size_t more)
{
        struct wait_ref **old = s->buckets, *ref, *next;
        size_t oldn = s->nbuckets, n = oldn ? oldn : WAIT_BUCKETS_MIN, i;

        while (n * 2 < s->nrefs + more)
                n *= 2;
        if (n == oldn)
                return 0;
        s->buckets = calloc(n, sizeof(*s->buckets));
        if (s->buckets == NULL) {
                s->buckets = old;
                return old ? 0 : FERRY_ENOMEM; /* a fuller table still works */
        }
        s->nbuckets = n;
        s->nrefs = 0;
        for (i = 0; i < oldn; i++) {
                for (ref = old[i]; ref != NULL; ref = next) {
                        next = ref->next;
                        wait_ref_link(s, ref);
                }
        }
        free(old);
        return 0;
}

static void wait_timer_close_cb(uv_handle_t *h)
{
        struct scheduler_wait *w = h->data;

        free(w->refs);
        free(w);
}

/* Unlink a wait everywhere and free it (its done is the caller's business). */
static void wait_free(struct scheduler *s, struct scheduler_wait *w)
{
        size_t i;

        for (i = 0; i < w->nrefs; i++)
                if (w->refs[i].w != NULL)
                        wait_ref_unlink(s, &w->refs[i]);
        if (w->prev)
                w->prev->next = w->next;
        else
                s->waits = w->next;
        if (w->next)
                w->next->prev = w->prev;
        s->nwaits--;
        if (w->all)
                s->nall--;
        if (w->has_timer) {
                uv_timer_stop(&w->timer);
                uv_close((uv_handle_t *)&w->timer, wait_timer_close_cb);
        } else {
                free(w->refs);
                free(w);
        }
}

static void wait_end(struct scheduler *s, struct scheduler_wait *w, bool drained, int64_t pending)
{
        void (*done)(void *, bool, int64_t, int64_t) = w->done;
        void *data = w->data;
        int64_t failed = w->failed;

        wait_free(s, w);
        done(data, drained, pending, failed);
}

/* Jobs queued or running now (for waits on every job). */
static int64_t scheduler_pending_all(struct scheduler *s, int64_t *failed)
{
        struct store_counts c;

        if (store_counts(s->store, &c) != 0)
                return -1;
        *failed = c.failed;
        return c.queued;
}

/* Every job settled? Answer the waits on all jobs. */
static void scheduler_check_all(struct scheduler *s)
{
        struct scheduler_wait *w, *next;
        int64_t pending, failed = 0;

        if (s->nall == 0 || s->nrunning > 0)
                return;
        pending = scheduler_pending_all(s, &failed);
        if (pending != 0)
                return;
        for (w = s->waits; w != NULL; w = next) {
                next = w->next;
                if (w->all) {
                        w->failed = failed;
                        wait_end(s, w, true, 0);
                }
        }
}

static void scheduler_settled(struct scheduler *s, int64_t job, bool failed)
{
        struct wait_ref *ref, *next;

        if (s->nbuckets > 0) {
                for (ref = s->buckets[wait_bucket(s, job)]; ref != NULL; ref = next) {
                        struct scheduler_wait *w = ref->w;

                        next = ref->next;
                        if (ref->job != job)
                                continue;
                        wait_ref_unlink(s, ref);
                        ref->w = NULL;
                        w->remaining--;
                        if (failed)
                                w->failed++;
                        if (w->remaining == 0)
                                wait_end(s, w, true, 0);
                }
        }
        scheduler_check_all(s);
}

void scheduler_job_settled(struct scheduler *s, int64_t job, bool failed)
{
        scheduler_settled(s, job, failed);
}

static void wait_timeout_cb(uv_timer_t *t)
{
        struct scheduler_wait *w = t->data;
        struct scheduler *s = w->s;
        int64_t pending = w->remaining, failed = 0;

        if (w->all) {
                pending = scheduler_pending_all(s, &failed);
                w->failed = failed;
                if (pending < 0)
                        pending = 0;
        }
        wait_end(s, w, pending == 0, pending);
}

int scheduler_wait(struct scheduler *s, const int64_t *jobs, size_t n, int64_t timeout_ms,
                   void (*done)(void *data, bool drained, int64_t pending, int64_t failed),
                   void *data, struct scheduler_wait **handle)
{
        struct scheduler_wait *w = calloc(1, sizeof(*w));
        char state[16];
        size_t i;

        if (w == NULL || (n > 0 && (w->refs = calloc(n, sizeof(*w->refs))) == NULL) ||
            (n > 0 && wait_grow(s, n) != 0)) {
                if (w)
                        free(w->refs);
                free(w);
                return FERRY_ENOMEM;
        }
        *handle = NULL;
        w->s = s;
        w->done = done;
        w->data = data;
        w->all = n == 0;
        if (w->all)
                s->nall++;
        w->next = s->waits;
        if (s->waits)
                s->waits->prev = w;
        s->waits = w;
        s->nwaits++;
        for (i = 0; i < n; i++) {
                /* `jobs` is sorted: a job named twice is watched once. */
                if (i > 0 && jobs[i] == jobs[i - 1])
                        continue;
                if (store_job_state(s->store, jobs[i], state, sizeof(state)) != 0)
                        continue; /* no such job: nothing to wait for */
                if (strcmp(state, "queued") == 0) {
                        w->refs[w->nrefs].w = w;
                        w->refs[w->nrefs].job = jobs[i];
                        wait_ref_link(s, &w->refs[w->nrefs]);
                        w->nrefs++;
                        w->remaining++;
                } else if (strcmp(state, "failed") == 0) {
                        w->failed++;
                }
        }
        /* Answered at once? */
        if (s->stopping) {
                wait_end(s, w, false, w->remaining);
                return 0;
        }
        if (!w->all && w->remaining == 0) {
                wait_end(s, w, true, 0);
                return 0;
        }
        if (w->all) {
                int64_t failed = 0, pending = scheduler_pending_all(s, &failed);

                if (pending == 0 && s->nrunning == 0) {
                        w->failed = failed;
                        wait_end(s, w, true, 0);
                        return 0;
                }
        }
        if (timeout_ms >= 0) {
                uv_timer_init(s->loop, &w->timer);
                w->timer.data = w;
                w->has_timer = true;
                uv_timer_start(&w->timer, wait_timeout_cb, (uint64_t)timeout_ms, 0);
        }
        *handle = w;
        return 0;
}

void scheduler_wait_cancel(struct scheduler *s, struct scheduler_wait *w)
{
        wait_free(s, w);
}

/* ---- the loop ---- */

static void scheduler_timer_cb(uv_timer_t *t)
{
        scheduler_tick(t->data);
}

int scheduler_new(struct scheduler **out, const struct scheduler_env *env)
{
        struct scheduler *s = calloc(1, sizeof(*s));

        *out = NULL;
        if (s == NULL)
                return FERRY_ENOMEM;
        s->loop = env->loop;
        s->cfg = env->cfg;
        s->store = env->store;
        s->writer = env->writer;
        s->spool = env->spool;
        s->online = true;
        s->sink.synced = sink_synced;
        s->sink.registered = sink_registered;
        s->sink.created = sink_created;
        s->sink.asset_done = sink_asset_done;
        s->sink.sent = sink_sent;
        s->sink.finished = sink_finished;
        uv_timer_init(s->loop, &s->timer);
        uv_timer_init(s->loop, &s->grace);
        s->timer.data = s->grace.data = s;
        s->open_handles = 2;
        *out = s;
        return 0;
}

struct backend_sink *scheduler_sink(struct scheduler *s)
{
        return &s->sink;
}

void scheduler_start(struct scheduler *s, struct backend *backend)
{
        s->backend = backend;
        s->started = true;
        scheduler_kick(s);
}

void scheduler_kick(struct scheduler *s)
{
        if (s->started && !s->stopping)
                uv_timer_start(&s->timer, scheduler_timer_cb, 0, 0);
}

void scheduler_set_paused(struct scheduler *s, bool paused)
{
        if (s->paused != paused)
                log_info("queue %s", paused ? "paused" : "resumed");
        s->paused = paused;
        scheduler_kick(s);
}

void scheduler_status(struct scheduler *s, struct scheduler_status *out)
{
        int64_t now = util_mono_ms(), sum = 0;
        int i;

        for (i = 0; i < RATE_SAMPLES; i++)
                if (s->rate[i].t_ms > 0 && now - s->rate[i].t_ms <= 60000)
                        sum += s->rate[i].bytes;
        out->online = s->online;
        out->paused = s->paused;
        out->started = s->started;
        out->offline_since_ms = s->online ? 0 : s->offline_since_ms;
        out->last_error = s->last_error[0] ? s->last_error : NULL;
        out->running = s->nrunning;
        out->bytes_sent = s->bytes_sent;
        out->rate_bps = sum / 60;
        out->waiters = s->nwaits;
}

static void scheduler_probe_cb(struct backend *be, bool online, const char *message)
{
        struct scheduler *s = be->env.sink ? sink_owner(be->env.sink) : NULL;
        int64_t delay;

        if (s == NULL)
                return;
        s->probing = false;
        if (s->stopping) {
                scheduler_check_stopped(s);
                return;
        }
        if (online) {
                log_info("backend reachable again after %lld s; draining the queue",
                         (long long)((util_now_ms() - s->offline_since_ms) / 1000));
                s->online = true;
                s->offline_since_ms = 0;
                s->last_error[0] = '\0';
        } else {
                snprintf(s->last_error, sizeof(s->last_error), "%s", message ? message : "");
                s->probes++;
                delay = 1000;
                while (delay < SCHEDULER_PROBE_CAP_MS && delay < (1000LL << s->probes))
                        delay *= 2;
                if (delay > SCHEDULER_PROBE_CAP_MS)
                        delay = SCHEDULER_PROBE_CAP_MS;
                delay = delay / 2 + (int64_t)(util_random_unit() * (double)(delay / 2));
                s->next_probe_ms = util_mono_ms() + delay;
        }
        scheduler_kick(s);
}

/* ---- cancel ---- */

static bool scheduler_cancelling(struct scheduler *s, int64_t id)
{
        struct scheduler_cancel *c;

        for (c = s->cancels; c != NULL; c = c->next)
                if (c->job == id)
                        return true;
        return false;
}

static void cancel_end(struct scheduler_cancel *c, int rc, const char *note)
{
        struct scheduler *s = c->s;
        struct scheduler_cancel_result r;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->cancels = c->next;
        if (c->next)
                c->next->prev = c->prev;
        r.job = c->job;
        r.rc = rc;
        r.was = c->was;
        r.name = c->loaded ? c->loaded->name : NULL;
        r.note = note;
        if (note != NULL)
                log_info("job %lld: %s", (long long)c->job, note);
        if (c->done != NULL)
                c->done(c->data, &r);
        job_free(c->loaded);
        free(c);
}

static void cancel_abandoned_cb(void *data, const char *note)
{
        cancel_end(data, 0, note);
}

/* Writer thread: the job becomes cancelled if it is queued or failed. */
static int cancel_run(struct store *st, struct writer_op *op)
{
        struct scheduler_cancel *c = (struct scheduler_cancel *)op;

        return store_job_cancel(st, c->job, c->was, sizeof(c->was), &c->loaded);
}

static void cancel_written(struct writer_op *op, int rc)
{
        struct scheduler_cancel *c = (struct scheduler_cancel *)op;
        struct scheduler *s = c->s;
        struct backend *be = s->backend;
        struct job *job = c->loaded;
        bool failed;

        if (rc != 0 || job == NULL) {
                /* No such job, one already settled, or the queue could not be written. */
                if (rc != 0 && rc != FERRY_ENOTFOUND)
                        log_error("job %lld: cannot record its cancellation (%s)",
                                  (long long)c->job, ferry_strerror(rc));
                cancel_end(c, rc != 0 ? rc : FERRY_ENOTFOUND, NULL);
                scheduler_kick(s);
                return;
        }
        failed = strcmp(c->was, "failed") == 0;
        if (c->running)
                snprintf(c->was, sizeof(c->was), "running");
        log_info("job %lld: %s cancelled (it was %s)", (long long)c->job, job->name, c->was);
        scheduler_discard_files(s, job);
        /* Waiters on it are answered; a failed job had settled already. */
        if (!failed)
                scheduler_settled(s, c->job, false);
        scheduler_kick(s);
        if (job->remote_version_id != NULL && be != NULL && be->ops->abandon != NULL) {
                be->ops->abandon(be, job, cancel_abandoned_cb, c);
                return;
        }
        cancel_end(c, 0, NULL);
}

static void cancel_commit(struct scheduler *s, struct scheduler_cancel *c)
{
        writer_submit(s->writer, &c->op);
}

int scheduler_cancel(struct scheduler *s, int64_t id,
                     void (*done)(void *data, const struct scheduler_cancel_result *r), void *data,
                     struct scheduler_cancel **handle)
{
        struct scheduler_cancel *c = calloc(1, sizeof(*c));
        struct run *run;

        *handle = NULL;
        if (c == NULL)
                return FERRY_ENOMEM;
        c->op.run = cancel_run;
        c->op.done = cancel_written;
        c->op.durable = true; /* the client is told it is cancelled */
        c->s = s;
        c->job = id;
        c->done = done;
        c->data = data;
        /* Listed until it ends: the job is not started meanwhile. */
        c->next = s->cancels;
        if (s->cancels)
                s->cancels->prev = c;
        s->cancels = c;
        *handle = c;
        for (run = s->running; run != NULL; run = run->next) {
                if (run->job->id != id)
                        continue;
                if (run->cancel != NULL) {
                        snprintf(c->was, sizeof(c->was), "cancelling");
                        cancel_end(c, FERRY_EBUSY, NULL);
                        *handle = NULL;
                        return 0;
                }
                /* Its delivery stops first; the outcome path commits the cancel. */
                run->cancel = c;
                c->running = true;
                if (!run->settling)
                        s->backend->ops->cancel(s->backend, run->job);
                return 0;
        }
        cancel_commit(s, c);
        return 0;
}

void scheduler_cancel_detach(struct scheduler_cancel *c)
{
        c->done = NULL;
}

static void scheduler_start_job(struct scheduler *s, int64_t id)
{
        struct run *run;
        struct job *job;

        if (scheduler_cancelling(s, id))
                return;
        if (store_job_load(s->store, id, &job) != 0)
                return;
        run = calloc(1, sizeof(*run));
        if (run == NULL) {
                job_free(job);
                return;
        }
        run->job = job;
        run->next = s->running;
        s->running = run;
        s->nrunning++;
        s->backend->ops->deliver(s->backend, job);
}

static void scheduler_tick(struct scheduler *s)
{
        const struct config *cfg = s->cfg;
        int64_t ids[256], now = util_now_ms(), next, delay = SCHEDULER_IDLE_MS;
        int n, i, room, want;

        if (!s->started || s->stopping)
                return;
        if (!s->online) {
                int64_t wait = s->next_probe_ms - util_mono_ms();

                if (!s->probing && wait <= 0) {
                        s->probing = true;
                        s->backend->ops->probe(s->backend, scheduler_probe_cb);
                        return;
                }
                uv_timer_start(&s->timer, scheduler_timer_cb, wait > 0 ? (uint64_t)wait : 1000, 0);
                return;
        }
        room = s->paused ? 0 : cfg->max_jobs - s->nrunning;
        if (room > 0) {
                want = room + s->nrunning;
                if (want > (int)(sizeof(ids) / sizeof(ids[0])))
                        want = (int)(sizeof(ids) / sizeof(ids[0]));
                n = store_jobs_due(s->store, now, ids, want);
                for (i = 0; i < n && room > 0 && s->online && !s->stopping; i++) {
                        if (scheduler_is_running(s, ids[i]) || scheduler_cancelling(s, ids[i]))
                                continue;
                        scheduler_start_job(s, ids[i]);
                        room--;
                }
        }
        /* Sleep until the next job becomes due; completions and logs kick us sooner. */
        next = store_next_due_after(s->store, now);
        if (next > now && next - now < SCHEDULER_IDLE_MS)
                delay = next - now;
        uv_timer_start(&s->timer, scheduler_timer_cb, (uint64_t)delay, 0);
}

/* ---- stopping ---- */

static void scheduler_check_stopped(struct scheduler *s)
{
        void (*stopped)(void *);

        if (!s->stopping || s->nrunning > 0 || s->stopped == NULL)
                return;
        uv_timer_stop(&s->grace);
        stopped = s->stopped;
        s->stopped = NULL;
        stopped(s->stopped_data);
}

static void scheduler_grace_cb(uv_timer_t *t)
{
        struct scheduler *s = t->data;

        if (s->nrunning > 0) {
                log_info("stopping: %d deliveries still running after the grace period; they "
                         "resume on restart",
                         s->nrunning);
                s->aborted = true;
                s->backend->ops->abort(s->backend);
        }
}

void scheduler_stop(struct scheduler *s, int64_t grace_ms, void (*stopped)(void *data), void *data)
{
        s->stopping = true;
        s->stopped = stopped;
        s->stopped_data = data;
        uv_timer_stop(&s->timer);
        while (s->waits != NULL) {
                struct scheduler_wait *w = s->waits;
                int64_t pending = w->remaining, failed = 0;

                if (w->all) { /* as a timeout counts it: the queue's count, not the list's */
                        pending = scheduler_pending_all(s, &failed);
                        w->failed = failed;
                        if (pending < 0)
                                pending = 0;
                }
                wait_end(s, w, false, pending);
        }
        if (s->nrunning > 0) {
                log_info("stopping: waiting up to %lld ms for %d running deliveries",
                         (long long)grace_ms, s->nrunning);
                if (grace_ms > 0)
                        uv_timer_start(&s->grace, scheduler_grace_cb, (uint64_t)grace_ms, 0);
                else
                        scheduler_grace_cb(&s->grace);
        }
        scheduler_check_stopped(s);
}

static void scheduler_handle_closed_cb(uv_handle_t *h)
{
        struct scheduler *s = h->data;

        if (--s->open_handles > 0)
                return;
        free(s->buckets);
        free(s);
}

void scheduler_free(struct scheduler *s)
{
        if (s == NULL)
                return;
        while (s->waits != NULL)
                wait_free(s, s->waits);
        uv_close((uv_handle_t *)&s->timer, scheduler_handle_closed_cb);
        uv_close((uv_handle_t *)&s->grace, scheduler_handle_closed_cb);
}
