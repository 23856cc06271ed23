/*
 * store.h — ferryd's durable queue in SQLite (queue.db, schema in schema.sql).
 *
 * A struct store is one connection with every statement prepared once.
 * ferryd opens two: the loop thread's, which only reads, and the writer's
 * (writer.c), which runs every change inside its batched transactions on
 * libuv's thread pool. WAL lets the reads go on while a batch commits.
 *
 * Every hot statement reads an index and touches only the rows it returns
 * (tests/test_store.c checks each plan): counts come from the `stats` table,
 * due versions from the `heads` table, history is never scanned.
 *
 * Functions return 0 or a negative FERRY_E* code: FERRY_ENOSPC when the
 * disk holding the database is full, FERRY_EIO otherwise; SQLite's message
 * is logged. A damaged database (SQLITE_CORRUPT, SQLITE_NOTADB) also sets
 * store_damaged().
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "job.h"

struct store;

struct store_counts {
        int64_t queued, failed, done, cancelled;
        int64_t bytes_queued; /* file bytes of queued jobs */
        int64_t bytes_held;   /* file bytes of queued and failed jobs (the spool's share) */
};

/*
 * Open (creating and migrating) the database at `path`, mode 0600. With
 * `check`, run PRAGMA quick_check first: a damaged file is FERRY_EIO with
 * the finding in err and *damaged set (nothing is changed in the file).
 */
int store_open(struct store **out, const char *path, bool check, bool *damaged, char *err,
               size_t errlen);
void store_close(struct store *st);
/* Random id of this queue, fixed when the database was created. */
const char *store_instance(const struct store *st);
/* True once a statement found the database damaged. */
bool store_damaged(const struct store *st);

/* Transactions and savepoints (the writer's). */
/*
 * The next commits survive a power cut (synchronous=FULL, as opened), or only
 * a crash of ferryd (NORMAL: WAL without fsync at commit). 0 or a code.
 */
int store_set_durable(struct store *st, bool durable);
/* SQLite's synchronous level now (1 NORMAL, 2 FULL), -1 on error: for tests. */
int store_synchronous(struct store *st);
int store_begin(struct store *st);
int store_commit(struct store *st);
void store_rollback(struct store *st);
int store_savepoint(struct store *st);
int store_release(struct store *st);
void store_rollback_savepoint(struct store *st);

/* ---- reads ---- */

/* Experiment `key`: 0 (strings malloc'd into *workspace and *project, each may be NULL to skip)
 * or FERRY_ENOTFOUND. */
int store_experiment_get(struct store *st, const char *key, char **workspace, char **project);
/* Load a job with its assets; FERRY_ENOTFOUND if there is none. */
int store_job_load(struct store *st, int64_t id, struct job **out);
/* A job's state ("queued", "failed", "done", "cancelled") into buf; FERRY_ENOTFOUND if none. */
int store_job_state(struct store *st, int64_t id, char *buf, size_t len);

/*
 * Ids of jobs that may start at `now_ms`, most overdue first, at most `max`:
 * the head of each artifact's lane (its oldest version not yet created on
 * the backend) and every version already created. Running jobs are among
 * them: the caller skips those. Count returned, or a negative code.
 */
int store_jobs_due(struct store *st, int64_t now_ms, int64_t *ids, int max);
/* The earliest next attempt later than `now_ms` of a job that could start, or -1. */
int64_t store_next_due_after(struct store *st, int64_t now_ms);

/* True when a queued or failed job already asks for workspace/name:version. */
bool store_version_pending(struct store *st, const char *workspace, const char *name,
                           const char *version);
/*
 * Newest queued job of workspace/name that matches `version_or_alias`: NULL
 * or "latest" (any case) for the newest; else its requested or assigned
 * version, or one of its aliases (exactly, else ignoring case). 0 if none.
 */
int64_t store_find_pending(struct store *st, const char *workspace, const char *name,
                           const char *version_or_alias);

int store_counts(struct store *st, struct store_counts *out);
/*
 * ls: items as PROTOCOL.md's "items" array; `state` one of
 * active|queued|failed|done|cancelled|all. The newest `limit` items, oldest
 * first, but no more than fit in `max_bytes` of JSON (0: no bound);
 * *truncated is set when items were left out for that.
 */
cJSON *store_list(struct store *st, const char *state, int limit, size_t max_bytes,
                  bool *truncated);
/* status: the newest failed jobs as PROTOCOL.md's "errors" array. */
cJSON *store_errors(struct store *st, int limit);
/* status: the newest jobs logged since `since_ms` with a warning: [{"job", "name", "message"}]. */
cJSON *store_warnings(struct store *st, int limit, int64_t since_ms);
/* Job `id`'s name and warning (each malloc'd; the warning NULL when none), or FERRY_ENOTFOUND. */
int store_job_warning(struct store *st, int64_t id, char **name, char **warning);

/* Start-up: call fn(data, spool_name) for every spool file of a queued or failed job. */
int store_each_held_spool(struct store *st, void (*fn)(void *data, const char *name), void *data);
/* The state of the job that owns spool file `name` into buf, or FERRY_ENOTFOUND. */
int store_spool_owner(struct store *st, const char *name, char *buf, size_t len);

/* ---- writes (inside the writer's transaction) ---- */

int store_experiment_insert(struct store *st, const char *key, const char *workspace,
                            const char *project, const char *name);
int store_experiment_set_registered(struct store *st, const char *key);
/* Insert a job (state queued) and its assets; *id receives the new id. */
int store_job_insert(struct store *st, const struct job *job, int64_t *id);
/* The backend created the version: record its id, the version it got; attempts start over. */
int store_job_set_created(struct store *st, int64_t id, const char *remote_version_id,
                          const char *assigned_version);
/*
 * The listing step of asset `idx` of `job` is done: the asset is replaced by
 * the n assets of `repl` at positions idx..idx+n-1 (later assets move up),
 * `warning` (or NULL) is added to the job's, and its attempts start over.
 */
int store_asset_expand(struct store *st, int64_t job, int idx, const struct job_asset *repl,
                       size_t n, const char *warning);
/* The backend confirmed asset `idx` of `job`; the job's attempts start over. */
int store_asset_set_done(struct store *st, int64_t job, int idx);
int store_job_set_done(struct store *st, int64_t id, const char *assigned_version);
int store_job_set_failed(struct store *st, int64_t id, const char *code, const char *message);
int store_job_reschedule(struct store *st, int64_t id, int attempts, int64_t next_ms,
                         const char *code, const char *message);
/*
 * `ferry cancel`: a queued or failed job becomes cancelled (its spool files
 * are then the caller's to discard). `was` receives the state it had; *out
 * the job as loaded before (the caller frees it), or NULL when its state was
 * neither queued nor failed (nothing changed). FERRY_ENOTFOUND for no such job.
 */
int store_job_cancel(struct store *st, int64_t id, char *was, size_t len, struct job **out);
/* Failed job `id` (or every failed job when id < 0) back to queued; count returned. */
int store_job_requeue(struct store *st, int64_t id);
/* Forget at most `max` delivered jobs finished before `before_ms`; count returned. */
int store_prune_done(struct store *st, int64_t before_ms, int max);

/* For the query-plan test: the SQL of every prepared statement, NULL-terminated. */
extern const char *const store_statement_sql[];

#endif
