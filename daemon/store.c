/* store.c — ferryd's durable queue in SQLite. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"
#include "log.h"
#include "sqlutil.h"
#include "util.h"

extern const char schema_sql[];

/* Every statement, prepared once in store_open and kept. */
#define STORE_STATEMENTS(XX)                                                                       \
        XX(exp_get, "SELECT workspace, project FROM experiments WHERE key = ?1")                   \
        XX(exp_insert, "INSERT OR IGNORE INTO experiments(key, workspace, project, name, "         \
                       "created_ms) VALUES (?1, ?2, ?3, ?4, ?5)")                                  \
        XX(exp_registered, "UPDATE experiments SET registered = 1 WHERE key = ?1")                 \
        XX(job_insert,                                                                             \
           "INSERT INTO jobs(experiment, workspace, project, name, type, version, aliases, tags, " \
           "metadata, state, bytes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "      \
           "'queued', ?10, ?11)")                                                                  \
        XX(asset_insert, "INSERT INTO assets(job, idx, logical_path, remote, spool, size, uri, "   \
                         "metadata, overwrite, asset_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, " \
                         "?9, ?10)")                                                               \
        XX(job_load,                                                                               \
           "SELECT j.experiment, j.workspace, j.project, j.name, j.type, j.version, j.aliases, "   \
           "j.tags, j.metadata, j.attempts, j.remote_version_id, j.assigned_version, j.bytes, "    \
           "j.created_ms, e.name, e.registered FROM jobs j JOIN experiments e ON "                 \
           "e.key = j.experiment WHERE j.id = ?1")                                                 \
        XX(assets_load, "SELECT idx, logical_path, remote, spool, size, uri, metadata, "           \
                        "overwrite, asset_id, done FROM assets WHERE job = ?1 ORDER BY idx")       \
        XX(jobs_due,                                                                               \
           "SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_ms <= ?1 AND NOT EXISTS "  \
           "(SELECT 1 FROM jobs o WHERE o.workspace = jobs.workspace AND o.name = jobs.name AND "  \
           "o.state = 'queued' AND o.id < jobs.id) ORDER BY next_attempt_ms, id LIMIT ?2")         \
        XX(next_due,                                                                               \
           "SELECT MIN(next_attempt_ms) FROM jobs WHERE state = 'queued' AND NOT EXISTS (SELECT "  \
           "1 FROM jobs o WHERE o.workspace = jobs.workspace AND o.name = jobs.name AND "          \
           "o.state = 'queued' AND o.id < jobs.id)")                                               \
        XX(set_remote, "UPDATE jobs SET remote_version_id = ?2, assigned_version = "               \
                       "COALESCE(?3, assigned_version) WHERE id = ?1")                             \
        XX(asset_done, "UPDATE assets SET done = 1 WHERE job = ?1 AND idx = ?2")                   \
        XX(job_done, "UPDATE jobs SET state = 'done', done_ms = ?2, assigned_version = "           \
                     "COALESCE(?3, assigned_version), last_error = NULL, last_error_code = NULL "  \
                     "WHERE id = ?1")                                                              \
        XX(job_failed, "UPDATE jobs SET state = 'failed', done_ms = ?2, last_error_code = ?3, "    \
                       "last_error = ?4 WHERE id = ?1")                                            \
        XX(job_resched, "UPDATE jobs SET attempts = ?2, next_attempt_ms = ?3, "                    \
                        "last_error_code = ?4, last_error = ?5 WHERE id = ?1")                     \
        XX(job_requeue, "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_ms = 0, "    \
                        "done_ms = NULL WHERE state = 'failed' AND (?1 < 0 OR id = ?1)")           \
        XX(jobs_now, "UPDATE jobs SET next_attempt_ms = 0 WHERE state = 'queued'")                 \
        XX(version_pending, "SELECT 1 FROM jobs WHERE workspace = ?1 AND name = ?2 AND "           \
                            "version = ?3 AND state IN ('queued', 'failed') LIMIT 1")              \
        XX(find_pending,                                                                           \
           "SELECT id FROM jobs WHERE workspace = ?1 AND name = ?2 AND state = 'queued' AND "      \
           "(?3 IS NULL OR ?3 = 'Latest' OR version = ?3 OR EXISTS (SELECT 1 FROM "                \
           "json_each(jobs.aliases) WHERE value = ?3)) ORDER BY id DESC LIMIT 1")                  \
        XX(counts, "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'failed'), "   \
                   "0), COALESCE(SUM(state = 'done'), 0), COALESCE(SUM(CASE WHEN state = "         \
                   "'queued' THEN bytes END), 0), COALESCE(SUM(CASE WHEN state IN ('queued', "     \
                   "'failed') THEN bytes END), 0) FROM jobs")                                      \
        XX(wait_counts,                                                                            \
           "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'failed'), 0) FROM "   \
           "jobs WHERE ?1 IS NULL OR id IN (SELECT value FROM json_each(?1))")                     \
        XX(list,                                                                                   \
           "SELECT id, name, type, COALESCE(assigned_version, version), state, attempts, "         \
           "next_attempt_ms, bytes, (SELECT COUNT(*) FROM assets WHERE job = jobs.id), "           \
           "experiment, created_ms, last_error FROM jobs WHERE (?1 = 'all') OR (?1 = 'active' "    \
           "AND state IN ('queued', 'failed')) OR state = ?1 ORDER BY id DESC LIMIT ?2")           \
        XX(errors, "SELECT id, name, last_error_code, last_error FROM jobs WHERE state = "         \
                   "'failed' ORDER BY done_ms DESC, id DESC LIMIT ?1")                             \
        XX(spool_ref, "SELECT 1 FROM assets a JOIN jobs j ON j.id = a.job WHERE a.spool = ?1 "     \
                      "AND j.state IN ('queued', 'failed') LIMIT 1")                               \
        XX(prune, "DELETE FROM jobs WHERE state = 'done' AND done_ms < ?1")                        \
        XX(meta_get, "SELECT value FROM meta WHERE key = ?1")                                      \
        XX(meta_set, "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)")

struct store {
        sqlite3 *db;
        char instance[33];
#define XX(name, sql) sqlite3_stmt *name;
        STORE_STATEMENTS(XX)
#undef XX
};

void job_free(struct job *job)
{
        size_t i;

        if (job == NULL)
                return;
        for (i = 0; i < job->nassets; i++) {
                free(job->assets[i].logical_path);
                free(job->assets[i].spool);
                free(job->assets[i].uri);
                free(job->assets[i].metadata);
        }
        free(job->assets);
        free(job->experiment);
        free(job->experiment_name);
        free(job->workspace);
        free(job->project);
        free(job->name);
        free(job->type);
        free(job->version);
        free(job->aliases);
        free(job->tags);
        free(job->metadata);
        free(job->remote_version_id);
        free(job->assigned_version);
        free(job);
}

/* Step a write statement to completion and reset it. 0 or FERRY_EIO (logged). */
static int store_run(struct store *st, sqlite3_stmt *s)
{
        int rc = sqlite3_step(s);

        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
                log_error("queue database: %s", sqlite3_errmsg(st->db));
                return FERRY_EIO;
        }
        return 0;
}

static void store_done_with(sqlite3_stmt *s)
{
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
}

static int store_load_instance(struct store *st)
{
        char fresh[33];
        int rc;

        if (util_random_hex(fresh, 16) != 0)
                return FERRY_EIO;
        sqlutil_bind_text(st->meta_set, 1, "instance");
        sqlutil_bind_text(st->meta_set, 2, fresh);
        if ((rc = store_run(st, st->meta_set)) != 0)
                return rc;
        sqlutil_bind_text(st->meta_get, 1, "instance");
        if (sqlite3_step(st->meta_get) != SQLITE_ROW) {
                store_done_with(st->meta_get);
                return FERRY_EIO;
        }
        snprintf(st->instance, sizeof(st->instance), "%s",
                 (const char *)sqlite3_column_text(st->meta_get, 0));
        store_done_with(st->meta_get);
        return 0;
}

int store_open(struct store **out, const char *path, char *err, size_t errlen)
{
        struct store *st = calloc(1, sizeof(*st));

        *out = NULL;
        if (st == NULL) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        if (sqlutil_open(path, schema_sql, &st->db, err, errlen) != 0) {
                free(st);
                return FERRY_EIO;
        }
#define XX(name, sql)                                                                              \
        if ((st->name = sqlutil_prepare(st->db, sql)) == NULL)                                     \
                goto fail_prepare;
        STORE_STATEMENTS(XX)
#undef XX
        if (store_load_instance(st) != 0) {
                snprintf(err, errlen, "cannot read the queue's instance id");
                goto fail;
        }
        *out = st;
        return 0;
fail_prepare:
        snprintf(err, errlen, "cannot prepare queue statements: %s", sqlite3_errmsg(st->db));
fail:
        store_close(st);
        return FERRY_EIO;
}

void store_close(struct store *st)
{
        if (st == NULL)
                return;
#define XX(name, sql) sqlite3_finalize(st->name);
        STORE_STATEMENTS(XX)
#undef XX
        sqlite3_close(st->db);
        free(st);
}

const char *store_instance(const struct store *st)
{
        return st->instance;
}

int store_begin(struct store *st)
{
        return sqlutil_exec(st->db, "BEGIN IMMEDIATE") ? FERRY_EIO : 0;
}

int store_commit(struct store *st)
{
        return sqlutil_exec(st->db, "COMMIT") ? FERRY_EIO : 0;
}

void store_rollback(struct store *st)
{
        if (!sqlite3_get_autocommit(st->db))
                sqlutil_exec(st->db, "ROLLBACK");
}

int store_experiment_get(struct store *st, const char *key, char **workspace, char **project)
{
        int rc;

        sqlutil_bind_text(st->exp_get, 1, key);
        rc = sqlite3_step(st->exp_get);
        if (rc == SQLITE_ROW) {
                if (workspace)
                        *workspace = sqlutil_column_dup(st->exp_get, 0);
                if (project)
                        *project = sqlutil_column_dup(st->exp_get, 1);
        }
        store_done_with(st->exp_get);
        return rc == SQLITE_ROW ? 0 : FERRY_ENOTFOUND;
}

int store_experiment_insert(struct store *st, const char *key, const char *workspace,
                            const char *project, const char *name)
{
        sqlutil_bind_text(st->exp_insert, 1, key);
        sqlutil_bind_text(st->exp_insert, 2, workspace);
        sqlutil_bind_text(st->exp_insert, 3, project);
        sqlutil_bind_text(st->exp_insert, 4, name);
        sqlite3_bind_int64(st->exp_insert, 5, util_now_ms());
        return store_run(st, st->exp_insert);
}

int store_experiment_set_registered(struct store *st, const char *key)
{
        sqlutil_bind_text(st->exp_registered, 1, key);
        return store_run(st, st->exp_registered);
}

int store_job_insert(struct store *st, const struct job *job, int64_t *id)
{
        size_t i;
        int rc;

        sqlutil_bind_text(st->job_insert, 1, job->experiment);
        sqlutil_bind_text(st->job_insert, 2, job->workspace);
        sqlutil_bind_text(st->job_insert, 3, job->project);
        sqlutil_bind_text(st->job_insert, 4, job->name);
        sqlutil_bind_text(st->job_insert, 5, job->type);
        sqlutil_bind_text(st->job_insert, 6, job->version);
        sqlutil_bind_text(st->job_insert, 7, job->aliases);
        sqlutil_bind_text(st->job_insert, 8, job->tags);
        sqlutil_bind_text(st->job_insert, 9, job->metadata);
        sqlite3_bind_int64(st->job_insert, 10, job->bytes);
        sqlite3_bind_int64(st->job_insert, 11, util_now_ms());
        if ((rc = store_run(st, st->job_insert)) != 0)
                return rc;
        *id = sqlite3_last_insert_rowid(st->db);
        for (i = 0; i < job->nassets; i++) {
                const struct job_asset *a = &job->assets[i];
                sqlite3_stmt *s = st->asset_insert;

                sqlite3_bind_int64(s, 1, *id);
                sqlite3_bind_int(s, 2, (int)i);
                sqlutil_bind_text(s, 3, a->logical_path);
                sqlite3_bind_int(s, 4, a->remote);
                sqlutil_bind_text(s, 5, a->spool);
                sqlite3_bind_int64(s, 6, a->size);
                sqlutil_bind_text(s, 7, a->uri);
                sqlutil_bind_text(s, 8, a->metadata);
                sqlite3_bind_int(s, 9, a->overwrite);
                sqlutil_bind_text(s, 10, a->asset_id);
                if ((rc = store_run(st, s)) != 0)
                        return rc;
        }
        return 0;
}

static int store_load_assets(struct store *st, struct job *job)
{
        sqlite3_stmt *s = st->assets_load;
        size_t cap = 0;
        int rc;

        sqlite3_bind_int64(s, 1, job->id);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct job_asset *a;

                if (job->nassets == cap) {
                        size_t ncap = cap ? cap * 2 : 8;
                        struct job_asset *n = realloc(job->assets, ncap * sizeof(*n));

                        if (n == NULL) {
                                store_done_with(s);
                                return FERRY_ENOMEM;
                        }
                        job->assets = n;
                        cap = ncap;
                }
                a = &job->assets[job->nassets++];
                memset(a, 0, sizeof(*a));
                a->idx = sqlite3_column_int(s, 0);
                a->logical_path = sqlutil_column_dup(s, 1);
                a->remote = sqlite3_column_int(s, 2) != 0;
                a->spool = sqlutil_column_dup(s, 3);
                a->size = sqlite3_column_int64(s, 4);
                a->uri = sqlutil_column_dup(s, 5);
                a->metadata = sqlutil_column_dup(s, 6);
                a->overwrite = sqlite3_column_int(s, 7) != 0;
                snprintf(a->asset_id, sizeof(a->asset_id), "%s",
                         (const char *)sqlite3_column_text(s, 8));
                a->done = sqlite3_column_int(s, 9) != 0;
        }
        store_done_with(s);
        return rc == SQLITE_DONE ? 0 : FERRY_EIO;
}

int store_job_load(struct store *st, int64_t id, struct job **out)
{
        sqlite3_stmt *s = st->job_load;
        struct job *job;
        int rc;

        *out = NULL;
        sqlite3_bind_int64(s, 1, id);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
                store_done_with(s);
                return rc == SQLITE_DONE ? FERRY_ENOTFOUND : FERRY_EIO;
        }
        job = calloc(1, sizeof(*job));
        if (job == NULL) {
                store_done_with(s);
                return FERRY_ENOMEM;
        }
        job->id = id;
        job->experiment = sqlutil_column_dup(s, 0);
        job->workspace = sqlutil_column_dup(s, 1);
        job->project = sqlutil_column_dup(s, 2);
        job->name = sqlutil_column_dup(s, 3);
        job->type = sqlutil_column_dup(s, 4);
        job->version = sqlutil_column_dup(s, 5);
        job->aliases = sqlutil_column_dup(s, 6);
        job->tags = sqlutil_column_dup(s, 7);
        job->metadata = sqlutil_column_dup(s, 8);
        job->attempts = sqlite3_column_int(s, 9);
        job->remote_version_id = sqlutil_column_dup(s, 10);
        job->assigned_version = sqlutil_column_dup(s, 11);
        job->bytes = sqlite3_column_int64(s, 12);
        job->created_ms = sqlite3_column_int64(s, 13);
        job->experiment_name = sqlutil_column_dup(s, 14);
        job->experiment_registered = sqlite3_column_int(s, 15) != 0;
        store_done_with(s);
        if (job->experiment == NULL || job->name == NULL || job->aliases == NULL ||
            job->tags == NULL) {
                job_free(job);
                return FERRY_ENOMEM;
        }
        if ((rc = store_load_assets(st, job)) != 0) {
                job_free(job);
                return rc;
        }
        *out = job;
        return 0;
}

int store_jobs_due(struct store *st, int64_t now_ms, int64_t *ids, int max)
{
        sqlite3_stmt *s = st->jobs_due;
        int n = 0, rc;

        sqlite3_bind_int64(s, 1, now_ms);
        sqlite3_bind_int(s, 2, max);
        while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW)
                ids[n++] = sqlite3_column_int64(s, 0);
        store_done_with(s);
        return n;
}

int64_t store_next_due(struct store *st)
{
        int64_t v = -1;

        if (sqlite3_step(st->next_due) == SQLITE_ROW &&
            sqlite3_column_type(st->next_due, 0) != SQLITE_NULL)
                v = sqlite3_column_int64(st->next_due, 0);
        store_done_with(st->next_due);
        return v;
}

int store_job_set_remote(struct store *st, int64_t id, const char *remote_version_id,
                         const char *assigned_version)
{
        sqlite3_bind_int64(st->set_remote, 1, id);
        sqlutil_bind_text(st->set_remote, 2, remote_version_id);
        sqlutil_bind_text(st->set_remote, 3, assigned_version);
        return store_run(st, st->set_remote);
}

int store_asset_set_done(struct store *st, int64_t job, int idx)
{
        sqlite3_bind_int64(st->asset_done, 1, job);
        sqlite3_bind_int(st->asset_done, 2, idx);
        return store_run(st, st->asset_done);
}

int store_job_set_done(struct store *st, int64_t id, const char *assigned_version)
{
        sqlite3_bind_int64(st->job_done, 1, id);
        sqlite3_bind_int64(st->job_done, 2, util_now_ms());
        sqlutil_bind_text(st->job_done, 3, assigned_version);
        return store_run(st, st->job_done);
}

int store_job_set_failed(struct store *st, int64_t id, const char *code, const char *message)
{
        sqlite3_bind_int64(st->job_failed, 1, id);
        sqlite3_bind_int64(st->job_failed, 2, util_now_ms());
        sqlutil_bind_text(st->job_failed, 3, code);
        sqlutil_bind_text(st->job_failed, 4, message);
        return store_run(st, st->job_failed);
}

int store_job_reschedule(struct store *st, int64_t id, int attempts, int64_t next_ms,
                         const char *code, const char *message)
{
        sqlite3_bind_int64(st->job_resched, 1, id);
        sqlite3_bind_int(st->job_resched, 2, attempts);
        sqlite3_bind_int64(st->job_resched, 3, next_ms);
        sqlutil_bind_text(st->job_resched, 4, code);
        sqlutil_bind_text(st->job_resched, 5, message);
        return store_run(st, st->job_resched);
}

int store_job_requeue(struct store *st, int64_t id)
{
        int rc;

        sqlite3_bind_int64(st->job_requeue, 1, id);
        if ((rc = store_run(st, st->job_requeue)) != 0)
                return rc;
        return sqlite3_changes(st->db);
}

int store_jobs_due_now(struct store *st)
{
        return store_run(st, st->jobs_now);
}

bool store_version_pending(struct store *st, const char *workspace, const char *name,
                           const char *version)
{
        bool found;

        sqlutil_bind_text(st->version_pending, 1, workspace);
        sqlutil_bind_text(st->version_pending, 2, name);
        sqlutil_bind_text(st->version_pending, 3, version);
        found = sqlite3_step(st->version_pending) == SQLITE_ROW;
        store_done_with(st->version_pending);
        return found;
}

int64_t store_find_pending(struct store *st, const char *workspace, const char *name,
                           const char *version_or_alias)
{
        int64_t id = 0;

        sqlutil_bind_text(st->find_pending, 1, workspace);
        sqlutil_bind_text(st->find_pending, 2, name);
        sqlutil_bind_text(st->find_pending, 3, version_or_alias);
        if (sqlite3_step(st->find_pending) == SQLITE_ROW)
                id = sqlite3_column_int64(st->find_pending, 0);
        store_done_with(st->find_pending);
        return id;
}

int store_counts(struct store *st, struct store_counts *out)
{
        sqlite3_stmt *s = st->counts;
        int rc = sqlite3_step(s);

        memset(out, 0, sizeof(*out));
        if (rc == SQLITE_ROW) {
                out->queued = sqlite3_column_int64(s, 0);
                out->failed = sqlite3_column_int64(s, 1);
                out->done = sqlite3_column_int64(s, 2);
                out->bytes_queued = sqlite3_column_int64(s, 3);
                out->bytes_held = sqlite3_column_int64(s, 4);
        }
        store_done_with(s);
        return rc == SQLITE_ROW ? 0 : FERRY_EIO;
}

int store_wait_counts(struct store *st, const char *jobs_json, int64_t *pending, int64_t *failed)
{
        sqlite3_stmt *s = st->wait_counts;
        int rc;

        sqlutil_bind_text(s, 1, jobs_json);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                *pending = sqlite3_column_int64(s, 0);
                *failed = sqlite3_column_int64(s, 1);
        }
        store_done_with(s);
        return rc == SQLITE_ROW ? 0 : FERRY_EIO;
}

static void add_text_or_null(cJSON *obj, const char *key, sqlite3_stmt *s, int col)
{
        if (sqlite3_column_type(s, col) == SQLITE_NULL)
                cJSON_AddNullToObject(obj, key);
        else
                cJSON_AddStringToObject(obj, key, (const char *)sqlite3_column_text(s, col));
}

cJSON *store_list(struct store *st, const char *state, int limit, size_t max_bytes, bool *truncated)
{
        size_t used = 0;

        sqlite3_stmt *s = st->list;
        cJSON *items = cJSON_CreateArray();

        if (items == NULL)
                return NULL;
        sqlutil_bind_text(s, 1, state);
        sqlite3_bind_int(s, 2, limit);
        while (sqlite3_step(s) == SQLITE_ROW) {
                cJSON *it = cJSON_CreateObject();
                const char *jstate = (const char *)sqlite3_column_text(s, 4);

                if (it == NULL)
                        break;
                cJSON_AddNumberToObject(it, "job", (double)sqlite3_column_int64(s, 0));
                add_text_or_null(it, "name", s, 1);
                add_text_or_null(it, "type", s, 2);
                add_text_or_null(it, "version", s, 3);
                cJSON_AddStringToObject(it, "state", jstate);
                cJSON_AddNumberToObject(it, "attempts", sqlite3_column_int(s, 5));
                if (strcmp(jstate, "queued") == 0)
                        cJSON_AddNumberToObject(it, "next_attempt",
                                                (double)sqlite3_column_int64(s, 6));
                else
                        cJSON_AddNullToObject(it, "next_attempt");
                cJSON_AddNumberToObject(it, "bytes", (double)sqlite3_column_int64(s, 7));
                cJSON_AddNumberToObject(it, "assets", sqlite3_column_int(s, 8));
                add_text_or_null(it, "experiment", s, 9);
                cJSON_AddNumberToObject(it, "created", (double)sqlite3_column_int64(s, 10));
                add_text_or_null(it, "error", s, 11);
                /* Stop before the reply outgrows a frame: the newest items are kept. */
                if (max_bytes > 0) {
                        char *text = cJSON_PrintUnformatted(it);

                        used += text ? strlen(text) + 1 : max_bytes;
                        cJSON_free(text);
                        if (used > max_bytes) {
                                cJSON_Delete(it);
                                *truncated = true;
                                break;
                        }
                }
                /* Newest first from SQL; insert at the front to list oldest first. */
                cJSON_InsertItemInArray(items, 0, it);
        }
        store_done_with(s);
        return items;
}

cJSON *store_errors(struct store *st, int limit)
{
        sqlite3_stmt *s = st->errors;
        cJSON *items = cJSON_CreateArray();

        if (items == NULL)
                return NULL;
        sqlite3_bind_int(s, 1, limit);
        while (sqlite3_step(s) == SQLITE_ROW) {
                cJSON *it = cJSON_CreateObject();

                if (it == NULL)
                        break;
                cJSON_AddNumberToObject(it, "job", (double)sqlite3_column_int64(s, 0));
                add_text_or_null(it, "name", s, 1);
                add_text_or_null(it, "code", s, 2);
                add_text_or_null(it, "message", s, 3);
                cJSON_AddItemToArray(items, it);
        }
        store_done_with(s);
        return items;
}

int store_prune_done(struct store *st, int64_t before_ms)
{
        int rc;

        sqlite3_bind_int64(st->prune, 1, before_ms);
        if ((rc = store_run(st, st->prune)) != 0)
                return rc;
        return sqlite3_changes(st->db);
}

bool store_spool_referenced(struct store *st, const char *spool_name)
{
        bool found;

        sqlutil_bind_text(st->spool_ref, 1, spool_name);
        found = sqlite3_step(st->spool_ref) == SQLITE_ROW;
        store_done_with(st->spool_ref);
        return found;
}
