/* scheduler.c — runs due jobs on the backend. */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "backend.h"
#include "daemon.h"
#include "ferry.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "server.h"
#include "spool.h"
#include "store.h"
#include "util.h"

#define SCHEDULER_IDLE_MS 30000 /* look at the queue at least this often */
#define SCHEDULER_PROBE_CAP_MS 10000
#define RATE_SAMPLES 64

struct waiter {
        struct scheduler *s;
        struct request *req;
        char *jobs_json;  /* NULL: all jobs */
        uv_timer_t timer; /* the timeout, when there is one */
        bool has_timer;
        struct waiter *next;
};

struct scheduler {
        struct daemon *d;
        uv_timer_t timer;
        bool closing;
        struct job *running; /* jobs handed to the backend */
        int nrunning;
        bool online;
        bool paused; /* held by `ferry pause`: start nothing until resumed */
        bool probing;
        int probes; /* failed probes since going offline */
        int64_t offline_since_ms;
        int64_t next_probe_ms; /* monotonic */
        char last_error[512];
        struct waiter *waiters;
        int64_t bytes_sent;
        struct {
                int64_t t_ms, bytes;
        } rate[RATE_SAMPLES];
        int rate_next;
        void (*closed)(void *data); /* called once closing has finished */
        void *closed_data;
};

static void scheduler_tick(struct scheduler *s);
static void scheduler_finish_close(struct scheduler *s);

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

static void scheduler_timer_cb(uv_timer_t *t)
{
        scheduler_tick(t->data);
}

int scheduler_new(struct scheduler **out, struct daemon *d)
{
        struct scheduler *s = calloc(1, sizeof(*s));

        *out = NULL;
        if (s == NULL)
                return FERRY_ENOMEM;
        s->d = d;
        s->online = true;
        uv_timer_init(d->loop, &s->timer);
        s->timer.data = s;
        *out = s;
        scheduler_kick(s);
        return 0;
}

void scheduler_kick(struct scheduler *s)
{
        if (!s->closing)
                uv_timer_start(&s->timer, scheduler_timer_cb, 0, 0);
}

void scheduler_set_paused(struct scheduler *s, bool paused)
{
        if (s->paused != paused)
                log_info("queue %s", paused ? "paused" : "resumed");
        s->paused = paused;
        scheduler_kick(s);
}

void scheduler_account_bytes(struct scheduler *s, int64_t bytes)
{
        s->bytes_sent += bytes;
        s->rate[s->rate_next].t_ms = util_mono_ms();
        s->rate[s->rate_next].bytes = bytes;
        s->rate_next = (s->rate_next + 1) % RATE_SAMPLES;
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
        out->offline_since_ms = s->online ? 0 : s->offline_since_ms;
        out->last_error = s->last_error[0] ? s->last_error : NULL;
        out->running = s->nrunning;
        out->bytes_sent = s->bytes_sent;
        out->rate_bps = sum / 60;
}

/* ---- waiters ---- */

static void waiter_close_cb(uv_handle_t *h)
{
        free(h->data);
}

static void waiter_end(struct scheduler *s, struct waiter *w, bool drained, int64_t pending,
                       int64_t failed)
{
        struct waiter **pp;
        cJSON *rep;

        for (pp = &s->waiters; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == w) {
                        *pp = w->next;
                        break;
                }
        }
        rep = request_ok(w->req);
        if (rep != NULL) {
                cJSON_AddBoolToObject(rep, "drained", drained);
                cJSON_AddNumberToObject(rep, "pending", (double)pending);
                cJSON_AddNumberToObject(rep, "failed", (double)failed);
        }
        request_reply(w->req, rep);
        free(w->jobs_json);
        if (w->has_timer) {
                uv_timer_stop(&w->timer);
                uv_close((uv_handle_t *)&w->timer, waiter_close_cb);
        } else {
                free(w);
        }
}

static void scheduler_check_waiters(struct scheduler *s)
{
        struct waiter *w = s->waiters, *next;

        for (; w != NULL; w = next) {
                int64_t pending = 0, failed = 0;

                next = w->next;
                if (client_closed(w->req->client)) {
                        waiter_end(s, w, false, 0, 0);
                        continue;
                }
                if (store_wait_counts(s->d->store, w->jobs_json, &pending, &failed) == 0 &&
                    pending == 0)
                        waiter_end(s, w, true, 0, failed);
        }
}

static void waiter_timeout_cb(uv_timer_t *t)
{
        struct waiter *w = t->data;
        int64_t pending = 0, failed = 0;

        store_wait_counts(w->s->d->store, w->jobs_json, &pending, &failed);
        waiter_end(w->s, w, pending == 0, pending, failed);
}

void scheduler_add_waiter(struct scheduler *s, struct request *req, const char *jobs_json,
                          int64_t timeout_ms)
{
        struct waiter *w = calloc(1, sizeof(*w));

        if (w == NULL || (jobs_json != NULL && (w->jobs_json = strdup(jobs_json)) == NULL)) {
                free(w);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        w->s = s;
        w->req = req;
        w->next = s->waiters;
        s->waiters = w;
        if (timeout_ms >= 0) {
                uv_timer_init(s->d->loop, &w->timer);
                w->timer.data = w;
                w->has_timer = true;
                uv_timer_start(&w->timer, waiter_timeout_cb, (uint64_t)timeout_ms, 0);
        }
        scheduler_check_waiters(s);
}

/* ---- deliveries ---- */

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

static void scheduler_release_job(struct scheduler *s, struct job *job)
{
        struct job **pp;

        for (pp = &s->running; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == job) {
                        *pp = job->next;
                        s->nrunning--;
                        return;
                }
        }
}

static void scheduler_job_done(struct scheduler *s, struct job *job)
{
        size_t i;

        for (i = 0; i < job->nassets; i++)
                if (job->assets[i].spool != NULL)
                        spool_remove(s->d->spool, job->assets[i].spool);
        spool_release(s->d->spool, job->bytes);
}

static void scheduler_deliver_cb(struct backend *be, struct job *job,
                                 const struct backend_result *r)
{
        struct scheduler *s = be->d->scheduler;
        struct store *st = s->d->store;
        const struct config *cfg = &s->d->cfg;
        int64_t delay;
        char msg[700];

        scheduler_release_job(s, job);
        if (s->closing) {
                /* Nothing is recorded: the job resumes from its last committed step. */
                job_free(job);
                scheduler_finish_close(s);
                return;
        }
        switch (r->outcome) {
        case BACKEND_OK:
                if (store_job_set_done(st, job->id,
                                       r->assigned_version[0] ? r->assigned_version : NULL) == 0)
                        scheduler_job_done(s, job);
                log_info("job %lld: %s %s delivered", (long long)job->id, job->name,
                         r->assigned_version);
                if (s->last_error[0] && s->online)
                        s->last_error[0] = '\0';
                break;
        case BACKEND_OFFLINE:
                store_job_reschedule(st, job->id, job->attempts, 0, r->code, r->message);
                scheduler_go_offline(s, r->message);
                break;
        case BACKEND_TRANSIENT:
                snprintf(s->last_error, sizeof(s->last_error), "%s", r->message);
                if (job->attempts + 1 >= cfg->max_attempts) {
                        snprintf(msg, sizeof(msg), "gave up after %d attempts: %s",
                                 job->attempts + 1, r->message);
                        store_job_set_failed(st, job->id, r->code, msg);
                        log_warn("job %lld: %s", (long long)job->id, msg);
                        break;
                }
                delay =
                    scheduler_backoff_ms(cfg->retry_base_ms, cfg->retry_cap_ms, job->attempts + 1);
                if (r->retry_after_ms > delay)
                        delay = r->retry_after_ms;
                store_job_reschedule(st, job->id, job->attempts + 1, util_now_ms() + delay, r->code,
                                     r->message);
                log_info("job %lld: %s; retrying in %lld ms", (long long)job->id, r->message,
                         (long long)delay);
                break;
        case BACKEND_PERMANENT:
                store_job_set_failed(st, job->id, r->code, r->message);
                log_warn("job %lld: %s failed: %s", (long long)job->id, job->name, r->message);
                break;
        }
        job_free(job);
        scheduler_check_waiters(s);
        scheduler_kick(s);
}

static bool scheduler_is_running(struct scheduler *s, int64_t id)
{
        struct job *j;

        for (j = s->running; j != NULL; j = j->next)
                if (j->id == id)
                        return true;
        return false;
}

static void scheduler_probe_cb(struct backend *be, bool online, const char *message)
{
        struct scheduler *s = be->d->scheduler;
        int64_t delay;

        s->probing = false;
        if (s->closing) {
                scheduler_finish_close(s);
                return;
        }
        if (online) {
                log_info("backend reachable again after %lld s; draining the queue",
                         (long long)((util_now_ms() - s->offline_since_ms) / 1000));
                s->online = true;
                s->offline_since_ms = 0;
                s->last_error[0] = '\0';
        } else {
                snprintf(s->last_error, sizeof(s->last_error), "%s", message);
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

static void scheduler_tick(struct scheduler *s)
{
        struct daemon *d = s->d;
        int64_t ids[64], now = util_now_ms(), next, delay = SCHEDULER_IDLE_MS;
        int n, i, room;

        if (s->closing)
                return;
        scheduler_check_waiters(s);
        if (!s->online) {
                int64_t wait = s->next_probe_ms - util_mono_ms();

                if (!s->probing && wait <= 0) {
                        s->probing = true;
                        d->backend->ops->probe(d->backend, scheduler_probe_cb);
                        return;
                }
                uv_timer_start(&s->timer, scheduler_timer_cb, wait > 0 ? (uint64_t)wait : 1000, 0);
                return;
        }
        room = s->paused ? 0 : d->cfg.max_jobs - s->nrunning;
        if (room > 0) {
                int want = room + s->nrunning;

                if (want > (int)(sizeof(ids) / sizeof(ids[0])))
                        want = (int)(sizeof(ids) / sizeof(ids[0]));
                n = store_jobs_due(d->store, now, ids, want);
                for (i = 0; i < n && room > 0 && s->online; i++) {
                        struct job *job;

                        if (scheduler_is_running(s, ids[i]))
                                continue;
                        if (store_job_load(d->store, ids[i], &job) != 0)
                                continue;
                        job->next = s->running;
                        s->running = job;
                        s->nrunning++;
                        room--;
                        d->backend->ops->deliver(d->backend, job, scheduler_deliver_cb);
                        if (s->closing)
                                return;
                }
        }
        /*
         * Sleep until the next job becomes due. A head job that is due now is
         * running or waiting for a free slot: a completion (or resume) kicks us.
         */
        next = store_next_due(d->store);
        if (next > now && next - now < SCHEDULER_IDLE_MS)
                delay = next - now;
        uv_timer_start(&s->timer, scheduler_timer_cb, (uint64_t)delay, 0);
}

static void scheduler_close_cb(uv_handle_t *h)
{
        struct scheduler *s = h->data;
        void (*closed)(void *) = s->closed;
        void *data = s->closed_data;

        free(s);
        if (closed)
                closed(data);
}

static void scheduler_finish_close(struct scheduler *s)
{
        if (s->nrunning > 0 || s->probing || uv_is_closing((uv_handle_t *)&s->timer))
                return;
        uv_close((uv_handle_t *)&s->timer, scheduler_close_cb);
}

void scheduler_close(struct scheduler *s, void (*closed)(void *data), void *data)
{
        s->closing = true;
        s->closed = closed;
        s->closed_data = data;
        while (s->waiters != NULL)
                waiter_end(s, s->waiters, false, 0, 0);
        uv_timer_stop(&s->timer);
        scheduler_finish_close(s);
}
