/*
 * store.h — ferryd's durable queue in SQLite (queue.db, schema in schema.sql).
 * Used from the loop thread only. Every write commits with synchronous=FULL.
 * Functions return 0 or a negative FERRY_E* code; SQLite's messages are logged.
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "job.h"

struct store;

struct store_counts {
        int64_t queued, failed, done;
        int64_t bytes_queued; /* file bytes of queued jobs */
        int64_t bytes_held;   /* file bytes of queued and failed jobs (the spool's share) */
};

int store_open(struct store **out, const char *path, char *err, size_t errlen);
void store_close(struct store *st);
/* Random id of this queue, fixed when the database was created. */
const char *store_instance(const struct store *st);

int store_begin(struct store *st);
int store_commit(struct store *st);
void store_rollback(struct store *st);

/* Experiments. get: 0 (strings malloc'd into *workspace and *project) or FERRY_ENOTFOUND. */
int store_experiment_get(struct store *st, const char *key, char **workspace, char **project);
int store_experiment_insert(struct store *st, const char *key, const char *workspace,
                            const char *project, const char *name);
int store_experiment_set_registered(struct store *st, const char *key);

/* Insert a job (state queued) and its assets; *id receives the new id. */
int store_job_insert(struct store *st, const struct job *job, int64_t *id);
/* Load a job with its assets; FERRY_ENOTFOUND if there is none. */
int store_job_load(struct store *st, int64_t id, struct job **out);

/*
 * Ids of queued jobs due at `now_ms`, oldest first, at most `max`; written to
 * ids, count returned (or a negative code). A job is due only when no older
 * job of the same artifact is still queued: versions of one artifact are
 * delivered one at a time, in log order, so automatic versions are numbered
 * in the order they were logged.
 */
int store_jobs_due(struct store *st, int64_t now_ms, int64_t *ids, int max);
/* Earliest next_attempt_ms of a job that could start (the head of its artifact), or -1. */
int64_t store_next_due(struct store *st);

/* Step results, each committed at once (exact resume). */
int store_job_set_remote(struct store *st, int64_t id, const char *remote_version_id,
                         const char *assigned_version);
int store_asset_set_done(struct store *st, int64_t job, int idx);
int store_job_set_done(struct store *st, int64_t id, const char *assigned_version);
int store_job_set_failed(struct store *st, int64_t id, const char *code, const char *message);
int store_job_reschedule(struct store *st, int64_t id, int attempts, int64_t next_ms,
                         const char *code, const char *message);
/* Failed job `id` (or every failed job when id < 0) back to queued; count returned. */
int store_job_requeue(struct store *st, int64_t id);
/* Reset every job's next attempt to now (the backend came back online). */
int store_jobs_due_now(struct store *st);

/* True when a queued or failed job already asks for workspace/name:version. */
bool store_version_pending(struct store *st, const char *workspace, const char *name,
                           const char *version);
/* Newest queued job for workspace/name matching version or alias (NULL or Latest: any); 0 if none.
 */
int64_t store_find_pending(struct store *st, const char *workspace, const char *name,
                           const char *version_or_alias);

int store_counts(struct store *st, struct store_counts *out);
/* For wait: counts among `jobs` (a JSON array of ids, NULL for all jobs). */
int store_wait_counts(struct store *st, const char *jobs_json, int64_t *pending, int64_t *failed);
/*
 * ls: items as PROTOCOL.md's "items" array; `state` one of active|failed|done|all.
 * The newest `limit` items, oldest first, but no more than fit in `max_bytes`
 * of JSON (0: no bound); *truncated is set when items were left out for that.
 */
cJSON *store_list(struct store *st, const char *state, int limit, size_t max_bytes,
                  bool *truncated);
/* status: the newest failed jobs as PROTOCOL.md's "errors" array. */
cJSON *store_errors(struct store *st, int limit);
/* Forget delivered jobs finished before `before_ms` (history for ls); count returned. */
int store_prune_done(struct store *st, int64_t before_ms);
/* True when a queued or failed job still needs this spool file. */
bool store_spool_referenced(struct store *st, const char *spool_name);

#endif
