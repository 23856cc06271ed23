/*
 * scheduler.h — runs due jobs on the backend from a uv timer: concurrency,
 * backoff with full jitter, Retry-After, the offline state and its probes,
 * and the `wait` requests that watch the queue drain.
 */
#ifndef FERRY_SCHEDULER_H
#define FERRY_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

struct daemon;
struct request;
struct scheduler;

int scheduler_new(struct scheduler **out, struct daemon *d);
/*
 * Stop starting jobs; once the running deliveries have returned (the backend
 * ends them when it closes) free everything and call `closed`. Deliveries
 * that return while closing record nothing: they resume on restart.
 */
void scheduler_close(struct scheduler *s, void (*closed)(void *data), void *data);
/* Look for due work now (after a log, a retry, a finished job). */
void scheduler_kick(struct scheduler *s);

/* Backends report bytes as they land, for the status rate. */
void scheduler_account_bytes(struct scheduler *s, int64_t bytes);

/* Hold the queue (nothing new starts; running deliveries finish) or release it. Not persisted. */
void scheduler_set_paused(struct scheduler *s, bool paused);

struct scheduler_status {
        bool online;
        bool paused;
        int64_t offline_since_ms; /* 0 when online */
        const char *last_error;   /* NULL when none */
        int running;
        int64_t bytes_sent;
        int64_t rate_bps; /* over the last minute */
};
void scheduler_status(struct scheduler *s, struct scheduler_status *out);

/* Answer `req` once none of `jobs_json`'s jobs (NULL: all) is pending, or after timeout_ms (< 0:
 * never). */
void scheduler_add_waiter(struct scheduler *s, struct request *req, const char *jobs_json,
                          int64_t timeout_ms);

/* The delay before attempt `attempts` + 1: full jitter over min(cap, base * 2^(attempts-1)). */
int64_t scheduler_backoff_ms(int64_t base_ms, int64_t cap_ms, int attempts);

#endif
