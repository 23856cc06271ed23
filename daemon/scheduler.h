/*
 * scheduler.h — runs due jobs on the backend: concurrency, the retry policy
 * (attempts per step, exponential backoff with full jitter, Retry-After
 * honoured and capped), the offline state and its probes, and the waiters
 * that watch jobs settle. It is the queue's side of the backend seam
 * (backend.h): every outcome a backend reports goes through the writer.
 */
#ifndef FERRY_SCHEDULER_H
#define FERRY_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct backend;
struct backend_sink;
struct config;
struct scheduler;
struct spool;
struct store;
struct writer;

struct scheduler_env {
        uv_loop_t *loop;
        const struct config *cfg;
        struct store *store; /* the loop thread's reading connection */
        struct writer *writer;
        struct spool *spool;
};

int scheduler_new(struct scheduler **out, const struct scheduler_env *env);
/* The sink a backend reports to (backend_env.sink). */
struct backend_sink *scheduler_sink(struct scheduler *s);
/* Start delivering on `backend` (after the start-up checks). */
void scheduler_start(struct scheduler *s, struct backend *backend);
/* Look for due work now (after a log, a retry, a finished job). */
void scheduler_kick(struct scheduler *s);
/* Hold the queue (nothing new starts; running deliveries finish) or release it. Not persisted. */
void scheduler_set_paused(struct scheduler *s, bool paused);
/* A job left the queue outside a delivery (cancelled, or failed by an op): tell its waiters. */
void scheduler_job_settled(struct scheduler *s, int64_t job, bool failed);

/* What became of a `ferry cancel`. */
struct scheduler_cancel_result {
        int64_t job;      /* the job asked for */
        int rc;           /* 0: cancelled; FERRY_ENOTFOUND: no such job, or not cancellable */
        const char *was;  /* "queued", "running" or "failed"; else the state found ("done",
                             "cancelled"), or "" when there is no such job */
        const char *name; /* the artifact's name, or NULL */
        const char *note; /* what became of its version on the backend, or NULL */
};

/*
 * `ferry cancel`: drop job `id` from the queue. A queued or failed job goes at
 * once; a running one once its delivery stopped (backend cancel; a delivery
 * that completes first stays delivered). The job becomes "cancelled", its
 * spool files go, its waiters are answered, and a version the backend holds
 * already is abandoned there (backend abandon: Comet sets it to ERROR).
 * done(data, result) comes exactly once, unless detached. 0 with *handle,
 * or FERRY_ENOMEM (done is not called then).
 */
struct scheduler_cancel;
int scheduler_cancel(struct scheduler *s, int64_t id,
                     void (*done)(void *data, const struct scheduler_cancel_result *r), void *data,
                     struct scheduler_cancel **handle);
/* The requester left: the cancel goes on, done is not called. */
void scheduler_cancel_detach(struct scheduler_cancel *c);

/*
 * Orderly stop: start nothing more; running deliveries may finish for
 * `grace_ms`, then the backend aborts the rest (they resume after a
 * restart). Calls stopped(data) once none is running. Waiters are answered.
 */
void scheduler_stop(struct scheduler *s, int64_t grace_ms, void (*stopped)(void *data), void *data);
/* Free a stopped scheduler (its handles are closed first; freed from the loop). */
void scheduler_free(struct scheduler *s);

struct scheduler_status {
        bool online;
        bool paused;
        bool started;
        int64_t offline_since_ms; /* 0 when online */
        const char *last_error;   /* NULL when none */
        int running;
        int64_t bytes_sent;
        int64_t rate_bps; /* over the last minute */
        int waiters;
};
void scheduler_status(struct scheduler *s, struct scheduler_status *out);

/*
 * Wait until none of `jobs` (n of them, sorted; n == 0: every job) is queued or
 * running, or `timeout_ms` passes (< 0: never). done(data, drained, pending,
 * failed) is called exactly once, unless the wait is cancelled first: at once
 * (then *handle is NULL) or later (*handle names the wait, for cancelling).
 * Each job settling costs O(1) per wait on it, whatever the number of waits.
 * 0, or FERRY_ENOMEM (done is not called then).
 */
struct scheduler_wait;
int scheduler_wait(struct scheduler *s, const int64_t *jobs, size_t n, int64_t timeout_ms,
                   void (*done)(void *data, bool drained, int64_t pending, int64_t failed),
                   void *data, struct scheduler_wait **handle);
/* Forget a wait (its client left); done is not called. */
void scheduler_wait_cancel(struct scheduler *s, struct scheduler_wait *w);

/* The delay before attempt `attempts` + 1: full jitter over min(cap, base * 2^(attempts-1)). */
int64_t scheduler_backoff_ms(int64_t base_ms, int64_t cap_ms, int attempts);

#endif
