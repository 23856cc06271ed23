/* store.c — ferryd's durable queue in SQLite. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry_base.h"
#include "log.h"
#include "sqlutil.h"
#include "util.h"

extern const char schema_sql[];

#define JOB_COLUMNS                                                                                \
        "j.id, j.name, j.type, COALESCE(j.assigned_version, j.version), j.state, j.attempts, "     \
        "j.next_attempt_ms, j.bytes, j.nassets, j.experiment, j.created_ms, j.last_error "

/* Every statement, prepared once in store_open and kept. */
#define STORE_STATEMENTS(XX)                                                                       \
        XX(exp_get, "SELECT workspace, project FROM experiments WHERE key = ?1")                   \
        XX(exp_insert, "INSERT OR IGNORE INTO experiments(key, workspace, project, name, "         \
                       "created_ms) VALUES (?1, ?2, ?3, ?4, ?5)")                                  \
        XX(exp_registered, "UPDATE experiments SET registered = 1 WHERE key = ?1")                 \
        XX(job_insert,                                                                             \
           "INSERT INTO jobs(experiment, workspace, project, name, type, version, aliases, tags, " \
           "metadata, state, bytes, created_ms, token, nassets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "  \
           "?7, ?8, ?9, 'queued', ?10, ?11, ?12, ?13)")                                            \
        XX(asset_insert, "INSERT INTO assets(job, idx, logical_path, remote, spool, size, uri, "   \
                         "metadata, overwrite, asset_id, sync_max, sync_under) VALUES (?1, ?2, "   \
                         "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")                             \
        XX(job_load,                                                                               \
           "SELECT j.experiment, j.workspace, j.project, j.name, j.type, j.version, j.aliases, "   \
           "j.tags, j.metadata, j.attempts, j.remote_version_id, j.assigned_version, j.bytes, "    \
           "j.created_ms, e.name, e.registered, j.token, j.next_attempt_ms FROM jobs j JOIN "      \
           "experiments e ON e.key = j.experiment WHERE j.id = ?1")                                \
        XX(assets_load, "SELECT idx, logical_path, remote, spool, size, uri, metadata, "           \
                        "overwrite, asset_id, done, sync_max, sync_under FROM assets WHERE job = " \
                        "?1 ORDER BY idx")                                                         \
        XX(asset_delete, "DELETE FROM assets WHERE job = ?1 AND idx = ?2")                         \
        XX(assets_shift_out,                                                                       \
           "UPDATE assets SET idx = -(idx + ?3) - 1 WHERE job = ?1 AND idx > ?2")                  \
        XX(assets_shift_back, "UPDATE assets SET idx = -idx - 1 WHERE job = ?1 AND idx < 0")       \
        XX(job_expanded,                                                                           \
           "UPDATE jobs SET nassets = nassets + ?2, attempts = 0, warning = CASE WHEN ?3 IS NULL " \
           "THEN warning ELSE substr(COALESCE(warning || char(10), '') || ?3, 1, 8192) END "       \
           "WHERE id = ?1")                                                                        \
        XX(job_warning, "SELECT name, warning FROM jobs WHERE id = ?1")                            \
        XX(warnings, "SELECT id, name, warning FROM jobs INDEXED BY jobs_warned WHERE warning IS " \
                     "NOT NULL AND created_ms >= ?2 ORDER BY id DESC LIMIT ?1")                    \
        XX(job_state, "SELECT state FROM jobs WHERE id = ?1")                                      \
        XX(heads_due, "SELECT job, next_attempt_ms FROM heads WHERE next_attempt_ms <= ?1 "        \
                      "ORDER BY next_attempt_ms, job LIMIT ?2")                                    \
        XX(created_due, "SELECT id, next_attempt_ms FROM jobs INDEXED BY jobs_created WHERE "      \
                        "state = 'queued' AND remote_version_id IS NOT NULL AND next_attempt_ms "  \
                        "<= ?1 ORDER BY next_attempt_ms, id LIMIT ?2")                             \
        XX(heads_next, "SELECT MIN(next_attempt_ms) FROM heads WHERE next_attempt_ms > ?1")        \
        XX(created_next, "SELECT MIN(next_attempt_ms) FROM jobs INDEXED BY jobs_created WHERE "    \
                         "state = 'queued' AND remote_version_id IS NOT NULL AND "                 \
                         "next_attempt_ms > ?1")                                                   \
        XX(set_created, "UPDATE jobs SET remote_version_id = ?2, assigned_version = "              \
                        "COALESCE(?3, assigned_version), attempts = 0 WHERE id = ?1")              \
        XX(asset_done, "UPDATE assets SET done = 1 WHERE job = ?1 AND idx = ?2")                   \
        XX(attempts_reset, "UPDATE jobs SET attempts = 0 WHERE id = ?1 AND attempts <> 0")         \
        XX(job_done, "UPDATE jobs SET state = 'done', done_ms = ?2, assigned_version = "           \
                     "COALESCE(?3, assigned_version), last_error = NULL, last_error_code = NULL "  \
                     "WHERE id = ?1 AND state = 'queued'")                                         \
        XX(job_failed, "UPDATE jobs SET state = 'failed', done_ms = ?2, last_error_code = ?3, "    \
                       "last_error = ?4 WHERE id = ?1 AND state = 'queued'")                       \
        XX(job_resched,                                                                            \
           "UPDATE jobs SET attempts = ?2, next_attempt_ms = ?3, "                                 \
           "last_error_code = ?4, last_error = ?5 WHERE id = ?1 AND state = 'queued'")             \
        XX(job_cancel,                                                                             \
           "UPDATE jobs SET state = 'cancelled', done_ms = ?2, last_error_code = 'cancelled', "    \
           "last_error = ?3 WHERE id = ?1 AND state IN ('queued', 'failed')")                      \
        XX(job_requeue_one,                                                                        \
           "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_ms = 0, "                 \
           "done_ms = NULL WHERE id = ?1 AND state = 'failed'")                                    \
        XX(job_requeue_all,                                                                        \
           "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_ms = 0, done_ms = NULL "  \
           "WHERE state = 'failed'")                                                               \
        XX(version_pending,                                                                        \
           "SELECT 1 FROM jobs WHERE workspace = ?1 AND name = ?2 AND version = ?3 AND state IN "  \
           "('queued', 'failed') LIMIT 1")                                                         \
        XX(find_pending,                                                                           \
           "SELECT id, version, assigned_version, aliases FROM jobs WHERE workspace = ?1 AND "     \
           "name = ?2 AND state IN ('queued', 'failed') ORDER BY id DESC")                         \
        XX(counts, "SELECT state, jobs, bytes FROM stats")                                         \
        XX(list_state, "SELECT " JOB_COLUMNS "FROM jobs j WHERE j.state = ?1 ORDER BY j.id DESC "  \
                       "LIMIT ?2")                                                                 \
        XX(list_state2, "SELECT " JOB_COLUMNS "FROM jobs j WHERE j.state = ?1 ORDER BY j.id DESC " \
                        "LIMIT ?2")                                                                \
        XX(list_all, "SELECT " JOB_COLUMNS "FROM jobs j ORDER BY j.id DESC LIMIT ?1")              \
        XX(errors,                                                                                 \
           "SELECT id, name, last_error_code, last_error FROM jobs INDEXED BY jobs_failed "        \
           "WHERE state = 'failed' ORDER BY done_ms DESC, id DESC LIMIT ?1")                       \
        XX(held_spool, "SELECT a.spool FROM jobs j JOIN assets a ON a.job = j.id WHERE j.state "   \
                       "IN ('queued', 'failed') AND a.spool IS NOT NULL")                          \
        XX(spool_owner, "SELECT j.state FROM assets a JOIN jobs j ON j.id = a.job WHERE a.spool "  \
                        "= ?1 LIMIT 1")                                                            \
        XX(prune, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_done WHERE "  \
                  "state IN ('done', 'cancelled') AND done_ms < ?1 LIMIT ?2)")                     \
        XX(meta_get, "SELECT value FROM meta WHERE key = ?1")                                      \
        XX(meta_set, "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)")

const char *const store_statement_sql[] = {
#define XX(name, sql) sql,
    STORE_STATEMENTS(XX)
#undef XX
        NULL};

struct store {
        sqlite3 *db;
        char instance[33];
        bool damaged;
        int synchronous; /* 0 unknown, 1 NORMAL, 2 FULL (as opened: FULL) */
#define XX(name, sql) sqlite3_stmt *name;
        STORE_STATEMENTS(XX)
#undef XX
};

void job_asset_clear(struct job_asset *a)
{
        free(a->logical_path);
        free(a->uri);
        free(a->metadata);
        free(a->spool);
        free(a->sync_under);
        memset(a, 0, sizeof(*a));
}

void job_free(struct job *job)
{
        size_t i;

        if (job == NULL)
                return;
        for (i = 0; i < job->nassets; i++)
                job_asset_clear(&job->assets[i]);
        free(job->assets);
        free(job->token);
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

/* Map a failed step's SQLite code to ours, log the message, note damage. */
static int store_error(struct store *st, int rc)
{
        int primary = rc & 0xff;

        log_error("queue database: %s", sqlite3_errmsg(st->db));
        if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
                if (!st->damaged)
                        log_error("the queue database is damaged; nothing will be deleted from "
                                  "the spool; restart ferryd to set the damaged file aside");
                st->damaged = true;
        }
        return primary == SQLITE_FULL ? FERRY_ENOSPC : FERRY_EIO;
}

static void store_done_with(sqlite3_stmt *s)
{
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
}

/* Step a write statement to completion and reset it. 0 or a code (logged). */
static int store_run(struct store *st, sqlite3_stmt *s)
{
        int rc = sqlite3_step(s);

        store_done_with(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return store_error(st, rc);
        return 0;
}

/* The end of a read loop: SQLITE_DONE is fine, anything else is an error. */
static int store_finish(struct store *st, sqlite3_stmt *s, int rc)
{
        store_done_with(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return store_error(st, rc);
        return 0;
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
        rc = sqlite3_step(st->meta_get);
        if (rc != SQLITE_ROW) {
                store_finish(st, st->meta_get, rc);
                return FERRY_EIO;
        }
        snprintf(st->instance, sizeof(st->instance), "%s",
                 (const char *)sqlite3_column_text(st->meta_get, 0));
        store_done_with(st->meta_get);
        return 0;
}

/*
 * PRAGMA quick_check: 0 when it says ok; FERRY_EIO with *damaged and the
 * first finding in err when the file is damaged; FERRY_EIO without *damaged
 * when the check could not run (a lock, no memory): that is not damage.
 */
static int store_check(const char *path, bool *damaged, char *err, size_t errlen)
{
        sqlite3 *db = NULL;
        sqlite3_stmt *s = NULL;
        int rc, primary, ret = FERRY_EIO;

        *damaged = false;
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db, 10000);
                rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &s, NULL);
        }
        if (rc == SQLITE_OK)
                rc = sqlite3_step(s);
        primary = rc & 0xff;
        if (rc == SQLITE_ROW) {
                const char *res = (const char *)sqlite3_column_text(s, 0);

                if (res != NULL && strcmp(res, "ok") == 0) {
                        ret = 0;
                } else {
                        *damaged = true;
                        snprintf(err, errlen, "quick_check found damage: %s", res ? res : "?");
                }
        } else {
                *damaged = primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
                snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "out of memory");
        }
        sqlite3_finalize(s);
        sqlite3_close(db);
        return ret;
}

int store_open(struct store **out, const char *path, bool check, bool *damaged, char *err,
               size_t errlen)
{
        struct store *st;
        char why[512];
        int fd;

        *out = NULL;
        if (damaged)
                *damaged = false;
        /* Created private before SQLite sees it: the queue names files and experiments. */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
                return errno == ELOOP ? FERRY_EPERM : FERRY_EIO;
        }
        {
                struct stat sb;
                int rc = fstat(fd, &sb) != 0
                             ? FERRY_EIO
                             : util_check_private_stat(&sb, path, false, err, errlen);

                close(fd);
                if (rc != 0)
                        return rc;
        }
        if (check) {
                bool bad = false;

                if (store_check(path, &bad, why, sizeof(why)) != 0) {
                        if (bad)
                                snprintf(err, errlen, "the queue database %s is damaged (%s)", path,
                                         why);
                        else
                                snprintf(err, errlen, "cannot check the queue database %s: %s",
                                         path, why);
                        if (damaged)
                                *damaged = bad;
                        return FERRY_EIO;
                }
        }
        st = calloc(1, sizeof(*st));
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

bool store_damaged(const struct store *st)
{
        return st->damaged;
}

static int store_exec(struct store *st, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);

        sqlite3_free(msg);
        return rc == SQLITE_OK ? 0 : store_error(st, rc);
}

int store_set_durable(struct store *st, bool durable)
{
        int want = durable ? 2 : 1, rc;

        if (st->synchronous == want)
                return 0;
        rc = store_exec(st, durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        if (rc == 0)
                st->synchronous = want;
        return rc;
}

int store_synchronous(struct store *st)
{
        sqlite3_stmt *s = NULL;
        int level = -1;

        if (sqlite3_prepare_v2(st->db, "PRAGMA synchronous", -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
                level = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        return level;
}

int store_begin(struct store *st)
{
        return store_exec(st, "BEGIN IMMEDIATE");
}

int store_commit(struct store *st)
{
        return store_exec(st, "COMMIT");
}

void store_rollback(struct store *st)
{
        if (!sqlite3_get_autocommit(st->db))
                sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

int store_savepoint(struct store *st)
{
        return store_exec(st, "SAVEPOINT op");
}

int store_release(struct store *st)
{
        return store_exec(st, "RELEASE op");
}

void store_rollback_savepoint(struct store *st)
{
        sqlite3_exec(st->db, "ROLLBACK TO op; RELEASE op", NULL, NULL, NULL);
}

/* ---- reads ---- */

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
                store_done_with(st->exp_get);
                return 0;
        }
        rc = store_finish(st, st->exp_get, rc);
        return rc ? rc : FERRY_ENOTFOUND;
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
                a->sync_max = sqlite3_column_int64(s, 10);
                a->sync_under = sqlutil_column_dup(s, 11);
                if (a->logical_path == NULL) {
                        store_done_with(s);
                        return FERRY_ENOMEM;
                }
        }
        return store_finish(st, s, rc);
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
                rc = store_finish(st, s, rc);
                return rc ? rc : FERRY_ENOTFOUND;
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
        job->token = sqlutil_column_dup(s, 16);
        job->next_attempt_ms = sqlite3_column_int64(s, 17);
        store_done_with(s);
        if (job->experiment == NULL || job->workspace == NULL || job->project == NULL ||
            job->name == NULL || job->type == NULL || job->aliases == NULL || job->tags == NULL ||
            job->token == NULL) {
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

int store_job_state(struct store *st, int64_t id, char *buf, size_t len)
{
        int rc;

        sqlite3_bind_int64(st->job_state, 1, id);
        rc = sqlite3_step(st->job_state);
        if (rc == SQLITE_ROW) {
                snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st->job_state, 0));
                store_done_with(st->job_state);
                return 0;
        }
        rc = store_finish(st, st->job_state, rc);
        return rc ? rc : FERRY_ENOTFOUND;
}

/* Read up to `max` (id, next) rows of `s` into ids/next; count returned. */
static int store_read_due(struct store *st, sqlite3_stmt *s, int64_t now_ms, int max, int64_t *ids,
                          int64_t *next)
{
        int n = 0, rc;

        sqlite3_bind_int64(s, 1, now_ms);
        sqlite3_bind_int(s, 2, max);
        while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
                ids[n] = sqlite3_column_int64(s, 0);
                next[n] = sqlite3_column_int64(s, 1);
                n++;
        }
        if (n < max && (rc = store_finish(st, s, rc)) != 0)
                return rc;
        store_done_with(s);
        return n;
}

int store_jobs_due(struct store *st, int64_t now_ms, int64_t *ids, int max)
{
        int64_t *hid, *hnext, *cid, *cnext;
        int nh, nc, i = 0, j = 0, n = 0;

        if (max <= 0)
                return 0;
        hid = calloc((size_t)max * 4, sizeof(int64_t));
        if (hid == NULL)
                return FERRY_ENOMEM;
        hnext = hid + max;
        cid = hnext + max;
        cnext = cid + max;
        nh = store_read_due(st, st->heads_due, now_ms, max, hid, hnext);
        nc = nh < 0 ? nh : store_read_due(st, st->created_due, now_ms, max, cid, cnext);
        if (nh < 0 || nc < 0) {
                free(hid);
                return nh < 0 ? nh : nc;
        }
        /* Merge the two sorted lists, most overdue first. */
        while (n < max && (i < nh || j < nc)) {
                if (j >= nc || (i < nh && hnext[i] <= cnext[j]))
                        ids[n++] = hid[i++];
                else
                        ids[n++] = cid[j++];
        }
        free(hid);
        return n;
}

static int64_t store_min_after(struct store *st, sqlite3_stmt *s, int64_t now_ms)
{
        int64_t v = -1;
        int rc;

        sqlite3_bind_int64(s, 1, now_ms);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
                v = sqlite3_column_int64(s, 0);
        store_finish(st, s, rc);
        return v;
}

int64_t store_next_due_after(struct store *st, int64_t now_ms)
{
        int64_t a = store_min_after(st, st->heads_next, now_ms);
        int64_t b = store_min_after(st, st->created_next, now_ms);

        if (a < 0)
                return b;
        if (b < 0)
                return a;
        return a < b ? a : b;
}

bool store_version_pending(struct store *st, const char *workspace, const char *name,
                           const char *version)
{
        bool found;
        int rc;

        sqlutil_bind_text(st->version_pending, 1, workspace);
        sqlutil_bind_text(st->version_pending, 2, name);
        sqlutil_bind_text(st->version_pending, 3, version);
        rc = sqlite3_step(st->version_pending);
        found = rc == SQLITE_ROW;
        store_finish(st, st->version_pending, rc);
        return found;
}

/* Does the JSON array text `aliases` hold `alias` (exactly, or ignoring case)? */
static bool aliases_match(const char *aliases, const char *alias, bool ignore_case)
{
        cJSON *list = aliases ? cJSON_Parse(aliases) : NULL;
        const cJSON *it;
        bool found = false;

        cJSON_ArrayForEach(it, list)
        {
                if (cJSON_IsString(it) && (ignore_case ? strcasecmp(it->valuestring, alias)
                                                       : strcmp(it->valuestring, alias)) == 0) {
                        found = true;
                        break;
                }
        }
        cJSON_Delete(list);
        return found;
}

int64_t store_find_pending(struct store *st, const char *workspace, const char *name,
                           const char *version_or_alias)
{
        sqlite3_stmt *s = st->find_pending;
        const char *sel = version_or_alias;
        int64_t id = 0, loose = 0;
        int rc;

        sqlutil_bind_text(s, 1, workspace);
        sqlutil_bind_text(s, 2, name);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *v = (const char *)sqlite3_column_text(s, 1);
                const char *assigned = (const char *)sqlite3_column_text(s, 2);
                const char *aliases = (const char *)sqlite3_column_text(s, 3);
                int64_t row = sqlite3_column_int64(s, 0);

                if (sel == NULL || strcasecmp(sel, "latest") == 0 ||
                    (v != NULL && strcmp(v, sel) == 0) ||
                    (assigned != NULL && strcmp(assigned, sel) == 0) ||
                    aliases_match(aliases, sel, false)) {
                        id = row;
                        break;
                }
                if (loose == 0 && aliases_match(aliases, sel, true))
                        loose = row;
        }
        store_finish(st, s, rc);
        return id ? id : loose;
}

int store_counts(struct store *st, struct store_counts *out)
{
        sqlite3_stmt *s = st->counts;
        int rc;

        memset(out, 0, sizeof(*out));
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *state = (const char *)sqlite3_column_text(s, 0);
                int64_t jobs = sqlite3_column_int64(s, 1), bytes = sqlite3_column_int64(s, 2);

                if (state == NULL)
                        continue;
                if (strcmp(state, "queued") == 0) {
                        out->queued = jobs;
                        out->bytes_queued = bytes;
                        out->bytes_held += bytes;
                } else if (strcmp(state, "failed") == 0) {
                        out->failed = jobs;
                        out->bytes_held += bytes;
                } else if (strcmp(state, "done") == 0) {
                        out->done = jobs;
                } else if (strcmp(state, "cancelled") == 0) {
                        out->cancelled = jobs;
                }
        }
        return store_finish(st, s, rc);
}

static void add_text_or_null(cJSON *obj, const char *key, sqlite3_stmt *s, int col)
{
        if (sqlite3_column_type(s, col) == SQLITE_NULL)
                cJSON_AddNullToObject(obj, key);
        else
                cJSON_AddStringToObject(obj, key, (const char *)sqlite3_column_text(s, col));
}

/* One ls item from a row of JOB_COLUMNS. */
static cJSON *store_list_item(sqlite3_stmt *s)
{
        cJSON *it = cJSON_CreateObject();
        const char *jstate = (const char *)sqlite3_column_text(s, 4);

        if (it == NULL)
                return NULL;
        cJSON_AddNumberToObject(it, "job", (double)sqlite3_column_int64(s, 0));
        add_text_or_null(it, "name", s, 1);
        add_text_or_null(it, "type", s, 2);
        add_text_or_null(it, "version", s, 3);
        cJSON_AddStringToObject(it, "state", jstate ? jstate : "");
        cJSON_AddNumberToObject(it, "attempts", sqlite3_column_int(s, 5));
        if (jstate != NULL && strcmp(jstate, "queued") == 0)
                cJSON_AddNumberToObject(it, "next_attempt", (double)sqlite3_column_int64(s, 6));
        else
                cJSON_AddNullToObject(it, "next_attempt");
        cJSON_AddNumberToObject(it, "bytes", (double)sqlite3_column_int64(s, 7));
        cJSON_AddNumberToObject(it, "assets", sqlite3_column_int(s, 8));
        add_text_or_null(it, "experiment", s, 9);
        cJSON_AddNumberToObject(it, "created", (double)sqlite3_column_int64(s, 10));
        add_text_or_null(it, "error", s, 11);
        return it;
}

/* A walk over one ls statement, newest first. */
struct list_cursor {
        sqlite3_stmt *s;
        cJSON *item; /* the current row's item, or NULL when exhausted */
        int64_t id;  /* its job id */
};

static void list_cursor_next(struct list_cursor *c)
{
        c->item = NULL;
        if (c->s != NULL && sqlite3_step(c->s) == SQLITE_ROW) {
                c->id = sqlite3_column_int64(c->s, 0);
                c->item = store_list_item(c->s);
        }
}

cJSON *store_list(struct store *st, const char *state, int limit, size_t max_bytes, bool *truncated)
{
        struct list_cursor cur[2];
        size_t used = 0;
        int n = 0, i;
        cJSON *items = cJSON_CreateArray();

        if (items == NULL)
                return NULL;
        memset(cur, 0, sizeof(cur));
        if (strcmp(state, "all") == 0) {
                cur[0].s = st->list_all;
                sqlite3_bind_int(cur[0].s, 1, limit);
        } else {
                /* "active" is queued and failed: two index walks merged, no sort. */
                bool active = strcmp(state, "active") == 0;

                cur[0].s = st->list_state;
                sqlutil_bind_text(cur[0].s, 1, active ? "queued" : state);
                sqlite3_bind_int(cur[0].s, 2, limit);
                if (active) {
                        cur[1].s = st->list_state2;
                        sqlutil_bind_text(cur[1].s, 1, "failed");
                        sqlite3_bind_int(cur[1].s, 2, limit);
                }
        }
        list_cursor_next(&cur[0]);
        list_cursor_next(&cur[1]);
        while (n < limit && (cur[0].item != NULL || cur[1].item != NULL)) {
                struct list_cursor *c;
                cJSON *take;

                i = cur[1].item == NULL || (cur[0].item != NULL && cur[0].id > cur[1].id) ? 0 : 1;
                c = &cur[i];
                take = c->item;
                list_cursor_next(c);
                if (max_bytes > 0) {
                        char *text = cJSON_PrintUnformatted(take);

                        used += text ? strlen(text) + 1 : max_bytes;
                        cJSON_free(text);
                        if (used > max_bytes) {
                                cJSON_Delete(take);
                                *truncated = true;
                                break;
                        }
                }
                /* Newest first from SQL; insert at the front to list oldest first. */
                cJSON_InsertItemInArray(items, 0, take);
                n++;
        }
        for (i = 0; i < 2; i++) {
                cJSON_Delete(cur[i].item);
                if (cur[i].s != NULL)
                        store_done_with(cur[i].s);
        }
        return items;
}

cJSON *store_errors(struct store *st, int limit)
{
        sqlite3_stmt *s = st->errors;
        cJSON *items = cJSON_CreateArray();
        int rc;

        if (items == NULL)
                return NULL;
        sqlite3_bind_int(s, 1, limit);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                cJSON *it = cJSON_CreateObject();

                if (it == NULL)
                        break;
                cJSON_AddNumberToObject(it, "job", (double)sqlite3_column_int64(s, 0));
                add_text_or_null(it, "name", s, 1);
                add_text_or_null(it, "code", s, 2);
                add_text_or_null(it, "message", s, 3);
                cJSON_AddItemToArray(items, it);
        }
        store_finish(st, s, rc);
        return items;
}

int store_each_held_spool(struct store *st, void (*fn)(void *data, const char *name), void *data)
{
        sqlite3_stmt *s = st->held_spool;
        int rc;

        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);

                if (name != NULL)
                        fn(data, name);
        }
        return store_finish(st, s, rc);
}

int store_spool_owner(struct store *st, const char *name, char *buf, size_t len)
{
        sqlite3_stmt *s = st->spool_owner;
        int rc;

        sqlutil_bind_text(s, 1, name);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                snprintf(buf, len, "%s", (const char *)sqlite3_column_text(s, 0));
                store_done_with(s);
                return 0;
        }
        rc = store_finish(st, s, rc);
        return rc ? rc : FERRY_ENOTFOUND;
}

/* ---- writes ---- */

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

/* Insert asset `a` of job `id` at position `idx`. */
static int store_asset_insert(struct store *st, int64_t id, int idx, const struct job_asset *a)
{
        sqlite3_stmt *s = st->asset_insert;

        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_int(s, 2, idx);
        sqlutil_bind_text(s, 3, a->logical_path);
        sqlite3_bind_int(s, 4, a->remote);
        sqlutil_bind_text(s, 5, a->spool);
        sqlite3_bind_int64(s, 6, a->size);
        sqlutil_bind_text(s, 7, a->uri);
        sqlutil_bind_text(s, 8, a->metadata);
        sqlite3_bind_int(s, 9, a->overwrite);
        sqlutil_bind_text(s, 10, a->asset_id);
        if (a->sync_max > 0)
                sqlite3_bind_int64(s, 11, a->sync_max);
        else
                sqlite3_bind_null(s, 11);
        sqlutil_bind_text(s, 12, a->sync_under);
        return store_run(st, s);
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
        sqlite3_bind_int64(st->job_insert, 11, job->created_ms ? job->created_ms : util_now_ms());
        sqlutil_bind_text(st->job_insert, 12, job->token);
        sqlite3_bind_int64(st->job_insert, 13, (int64_t)job->nassets);
        if ((rc = store_run(st, st->job_insert)) != 0)
                return rc;
        *id = sqlite3_last_insert_rowid(st->db);
        for (i = 0; i < job->nassets; i++)
                if ((rc = store_asset_insert(st, *id, (int)i, &job->assets[i])) != 0)
                        return rc;
        return 0;
}

int store_asset_expand(struct store *st, int64_t job, int idx, const struct job_asset *repl,
                       size_t n, const char *warning)
{
        size_t i;
        int rc;

        if (n == 0)
                return FERRY_EINVAL;
        sqlite3_bind_int64(st->asset_delete, 1, job);
        sqlite3_bind_int(st->asset_delete, 2, idx);
        if ((rc = store_run(st, st->asset_delete)) != 0)
                return rc;
        if (n > 1) {
                /* Make room after idx: through negative positions, as (job, idx) is unique. */
                sqlite3_bind_int64(st->assets_shift_out, 1, job);
                sqlite3_bind_int(st->assets_shift_out, 2, idx);
                sqlite3_bind_int64(st->assets_shift_out, 3, (int64_t)n - 1);
                if ((rc = store_run(st, st->assets_shift_out)) != 0)
                        return rc;
                sqlite3_bind_int64(st->assets_shift_back, 1, job);
                if ((rc = store_run(st, st->assets_shift_back)) != 0)
                        return rc;
        }
        for (i = 0; i < n; i++)
                if ((rc = store_asset_insert(st, job, idx + (int)i, &repl[i])) != 0)
                        return rc;
        sqlite3_bind_int64(st->job_expanded, 1, job);
        sqlite3_bind_int64(st->job_expanded, 2, (int64_t)n - 1);
        sqlutil_bind_text(st->job_expanded, 3, warning);
        return store_run(st, st->job_expanded);
}

int store_job_warning(struct store *st, int64_t id, char **name, char **warning)
{
        sqlite3_stmt *s = st->job_warning;
        int rc;

        *name = *warning = NULL;
        sqlite3_bind_int64(s, 1, id);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                *name = sqlutil_column_dup(s, 0);
                *warning = sqlutil_column_dup(s, 1);
                store_done_with(s);
                return 0;
        }
        rc = store_finish(st, s, rc);
        return rc ? rc : FERRY_ENOTFOUND;
}

cJSON *store_warnings(struct store *st, int limit, int64_t since_ms)
{
        sqlite3_stmt *s = st->warnings;
        cJSON *items = cJSON_CreateArray();
        int rc;

        if (items == NULL)
                return NULL;
        sqlite3_bind_int(s, 1, limit);
        sqlite3_bind_int64(s, 2, since_ms);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                cJSON *it = cJSON_CreateObject();

                if (it == NULL)
                        break;
                cJSON_AddNumberToObject(it, "job", (double)sqlite3_column_int64(s, 0));
                add_text_or_null(it, "name", s, 1);
                add_text_or_null(it, "message", s, 2);
                cJSON_AddItemToArray(items, it);
        }
        store_finish(st, s, rc);
        return items;
}

int store_job_set_created(struct store *st, int64_t id, const char *remote_version_id,
                          const char *assigned_version)
{
        sqlite3_bind_int64(st->set_created, 1, id);
        sqlutil_bind_text(st->set_created, 2, remote_version_id);
        sqlutil_bind_text(st->set_created, 3, assigned_version);
        return store_run(st, st->set_created);
}

int store_asset_set_done(struct store *st, int64_t job, int idx)
{
        int rc;

        sqlite3_bind_int64(st->asset_done, 1, job);
        sqlite3_bind_int(st->asset_done, 2, idx);
        if ((rc = store_run(st, st->asset_done)) != 0)
                return rc;
        sqlite3_bind_int64(st->attempts_reset, 1, job);
        return store_run(st, st->attempts_reset);
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

int store_job_cancel(struct store *st, int64_t id, char *was, size_t len, struct job **out)
{
        int rc;

        *out = NULL;
        if ((rc = store_job_state(st, id, was, len)) != 0)
                return rc;
        if (strcmp(was, "queued") != 0 && strcmp(was, "failed") != 0)
                return 0;
        if ((rc = store_job_load(st, id, out)) != 0)
                return rc;
        sqlite3_bind_int64(st->job_cancel, 1, id);
        sqlite3_bind_int64(st->job_cancel, 2, util_now_ms());
        sqlutil_bind_text(st->job_cancel, 3, "cancelled by `ferry cancel`");
        if ((rc = store_run(st, st->job_cancel)) != 0) {
                job_free(*out);
                *out = NULL;
        }
        return rc;
}

int store_job_requeue(struct store *st, int64_t id)
{
        sqlite3_stmt *s = id < 0 ? st->job_requeue_all : st->job_requeue_one;
        int rc;

        if (id >= 0)
                sqlite3_bind_int64(s, 1, id);
        if ((rc = store_run(st, s)) != 0)
                return rc;
        return sqlite3_changes(st->db);
}

int store_prune_done(struct store *st, int64_t before_ms, int max)
{
        int rc;

        sqlite3_bind_int64(st->prune, 1, before_ms);
        sqlite3_bind_int(st->prune, 2, max);
        if ((rc = store_run(st, st->prune)) != 0)
                return rc;
        return sqlite3_changes(st->db);
}
