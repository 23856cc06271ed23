/*
 * test_store.c — the durable queue (daemon/store.c) on real SQLite files in a
 * temporary directory: schema and versions, experiments, jobs and their
 * assets, the due rules, step results, queries, and pruning. Every store is
 * closed, and no file descriptor may be left open.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "check.h"
#include "testutil.h"
#include "ferry.h"
#include "job.h"
#include "log.h"
#include "util.h"

extern const char schema_sql[]; /* generated from daemon/schema.sql */

#define KEY1 "0123456789abcdef0123456789abcdef"
#define KEY2 "fedcba9876543210fedcba9876543210"
#define SPOOL1 "11111111111111111111111111111111"
#define SPOOL2 "22222222222222222222222222222222"
#define SPOOL3 "33333333333333333333333333333333"

static char tmpdir[] = "/tmp/ferry-test-store-XXXXXX";

/* ---- helpers -------------------------------------------------------------- */

static const char *tmp_path(const char *name)
{
        static char buf[4][512];
        static int next;
        char *p = buf[next++ % 4];

        snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
        return p;
}

static struct store *open_store(const char *name)
{
        struct store *st = NULL;
        char err[512] = "";

        if (store_open(&st, tmp_path(name), err, sizeof(err)) != 0) {
                fprintf(stderr, "store_open %s: %s\n", name, err);
                check_failures++;
                return NULL;
        }
        return st;
}

/* The highest N of the "-- migration: N" lines: the schema version this code writes. */
static int schema_version(void)
{
        char mark[64];
        int n = 0;

        for (;;) {
                snprintf(mark, sizeof(mark), "\n-- migration: %d\n", n + 1);
                if (strstr(schema_sql, mark) == NULL)
                        return n;
                n++;
        }
}

/* Run a one-value query on a separate connection; -1 on error. */
static long long query_int(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *s = NULL;
        long long v = -1;

        if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(h, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
                v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        sqlite3_close(h);
        return v;
}

/* Insert a queued job with one file asset (when spool is not NULL). Returns its id or -1. */
static int64_t add_job(struct store *st, const char *ws, const char *name, const char *version,
                       const char *aliases, int64_t bytes, const char *spool)
{
        struct job_asset asset;
        struct job job;
        int64_t id = -1;

        memset(&job, 0, sizeof(job));
        memset(&asset, 0, sizeof(asset));
        job.experiment = KEY1;
        job.workspace = (char *)ws;
        job.project = "proj";
        job.name = (char *)name;
        job.type = "model";
        job.version = (char *)version;
        job.aliases = (char *)(aliases ? aliases : "[]");
        job.tags = "[]";
        job.bytes = bytes;
        if (spool != NULL) {
                asset.logical_path = "file.bin";
                asset.spool = (char *)spool;
                asset.size = bytes;
                snprintf(asset.asset_id, sizeof(asset.asset_id), "%s", SPOOL1);
                job.assets = &asset;
                job.nassets = 1;
        }
        if (store_job_insert(st, &job, &id) != 0) {
                fprintf(stderr, "store_job_insert %s/%s failed\n", ws, name);
                check_failures++;
                return -1;
        }
        return id;
}

/* Ids due at now into a string "1,2,3" for value-printing comparisons. */
static const char *due_str(struct store *st, int64_t now, int max)
{
        static char buf[256];
        int64_t ids[32];
        int n = store_jobs_due(st, now, ids, max), i;
        size_t off = 0;

        buf[0] = '\0';
        if (n < 0) {
                snprintf(buf, sizeof(buf), "error %d", n);
                return buf;
        }
        for (i = 0; i < n; i++)
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%lld", i ? "," : "",
                                        (long long)ids[i]);
        return buf;
}

static const char *ids_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *ids_str(const char *fmt, ...)
{
        static char buf[4][256];
        static int next;
        char *p = buf[next++ % 4];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(p, sizeof(buf[0]), fmt, ap);
        va_end(ap);
        return p;
}

/* The list's job ids, in order, as "1,2,3". */
static const char *list_ids(struct store *st, const char *state, int limit)
{
        static char buf[256];
        bool truncated = false;
        cJSON *items = store_list(st, state, limit, 0, &truncated), *it;
        size_t off = 0;

        buf[0] = '\0';
        if (items == NULL)
                return "NULL";
        cJSON_ArrayForEach(it, items)
        {
                off += (size_t)snprintf(
                    buf + off, sizeof(buf) - off, "%s%lld", off ? "," : "",
                    (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "job")));
        }
        cJSON_Delete(items);
        return buf;
}

/* The list item of job `id` (state "all"), detached; caller deletes. */
static cJSON *list_item(struct store *st, int64_t id)
{
        bool truncated = false;
        cJSON *items = store_list(st, "all", 1000, 0, &truncated), *it, *found = NULL;

        cJSON_ArrayForEach(it, items)
        {
                if ((int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "job")) == id) {
                        found = cJSON_Duplicate(it, 1);
                        break;
                }
        }
        cJSON_Delete(items);
        return found;
}

static const char *item_str(const cJSON *it, const char *key)
{
        const cJSON *v = cJSON_GetObjectItem(it, key);

        if (cJSON_IsNull(v))
                return "(json null)";
        return cJSON_IsString(v) ? v->valuestring : "(not a string)";
}

static long long item_num(const cJSON *it, const char *key)
{
        const cJSON *v = cJSON_GetObjectItem(it, key);

        return cJSON_IsNumber(v) ? (long long)v->valuedouble : -12345;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_open_and_versions(void)
{
        struct store *st = NULL, *st2 = NULL;
        char err[512] = "", instance[33], want[64], db[600], newer[600];
        int version = schema_version();
        sqlite3 *h = NULL;
        struct job *job = NULL;
        int64_t id = -1;
        size_t i;

        snprintf(db, sizeof(db), "%s", tmp_path("open.db"));
        snprintf(newer, sizeof(newer), "%s", tmp_path("newer.db"));
        CHECK(version >= 1);
        CHECK_INT(access(db, F_OK), -1);
        CHECK_INT(store_open(&st, db, err, sizeof(err)), 0);
        CHECK(st != NULL);
        if (st == NULL)
                return;
        CHECK_INT(access(db, F_OK), 0);
        CHECK_INT(query_int(db, "PRAGMA user_version"), version);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name "
                                "IN ('meta', 'experiments', 'jobs', 'assets')"),
                  4);
        CHECK_INT(strlen(store_instance(st)), 32);
        for (i = 0; i < 32; i++)
                CHECK(strchr("0123456789abcdef", store_instance(st)[i]) != NULL);
        snprintf(instance, sizeof(instance), "%s", store_instance(st));
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", "run"), 0);
        id = add_job(st, "ws", "model", "1.0.0", NULL, 10, SPOOL1);
        CHECK_INT(id, 1);
        store_close(st);

        /* Reopening keeps the data and the instance id, and migrates nothing twice. */
        CHECK_INT(store_open(&st2, db, err, sizeof(err)), 0);
        if (st2 != NULL) {
                CHECK_STR(store_instance(st2), instance);
                CHECK_INT(store_job_load(st2, id, &job), 0);
                CHECK(job != NULL && job->name != NULL && strcmp(job->name, "model") == 0);
                job_free(job);
                CHECK_INT(query_int(db, "PRAGMA user_version"), version);
                /* A second queue has an instance id of its own. */
                st = open_store("other.db");
                if (st != NULL)
                        CHECK(strcmp(store_instance(st), instance) != 0);
                store_close(st);
                store_close(st2);
        }

        /* A database from a newer ferryd is refused, naming both versions. */
        CHECK_INT(sqlite3_open(newer, &h), SQLITE_OK);
        CHECK_INT(sqlite3_exec(h, "CREATE TABLE t(x); PRAGMA user_version = 99;", NULL, NULL, NULL),
                  SQLITE_OK);
        sqlite3_close(h);
        st = (struct store *)&st; /* must be reset to NULL */
        err[0] = '\0';
        CHECK(store_open(&st, newer, err, sizeof(err)) < 0);
        CHECK(st == NULL);
        CHECK(strstr(err, "99") != NULL);
        snprintf(want, sizeof(want), "(%d)", version);
        CHECK(strstr(err, want) != NULL);
        CHECK(strstr(err, newer) != NULL);
        if (strstr(err, want) == NULL)
                fprintf(stderr, "message was: %s\n", err);
        /* ...and left alone. */
        CHECK_INT(query_int(newer, "PRAGMA user_version"), 99);

        /* A path that cannot be created. */
        err[0] = '\0';
        CHECK(store_open(&st, tmp_path("no/such/dir/q.db"), err, sizeof(err)) < 0);
        CHECK(st == NULL);
        CHECK(err[0] != '\0');
}

static void test_experiments_and_transactions(void)
{
        struct store *st = open_store("exp.db");
        char *ws = NULL, *proj = NULL;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_get(st, KEY1, &ws, &proj), FERRY_ENOTFOUND);
        CHECK(ws == NULL && proj == NULL);
        CHECK_INT(store_experiment_insert(st, KEY1, "team", "vision", "first run"), 0);
        CHECK_INT(store_experiment_get(st, KEY1, &ws, &proj), 0);
        CHECK_STR(ws, "team");
        CHECK_STR(proj, "vision");
        free(ws);
        free(proj);
        ws = proj = NULL;
        /* Inserting a known key changes nothing. */
        CHECK_INT(store_experiment_insert(st, KEY1, "other", "other", NULL), 0);
        CHECK_INT(store_experiment_get(st, KEY1, &ws, NULL), 0);
        CHECK_STR(ws, "team");
        free(ws);
        ws = NULL;

        /* Rollback forgets; commit keeps. */
        CHECK_INT(store_begin(st), 0);
        CHECK_INT(store_experiment_insert(st, KEY2, "w2", "p2", NULL), 0);
        store_rollback(st);
        CHECK_INT(store_experiment_get(st, KEY2, NULL, NULL), FERRY_ENOTFOUND);
        CHECK_INT(store_begin(st), 0);
        CHECK_INT(store_experiment_insert(st, KEY2, "w2", "p2", NULL), 0);
        CHECK_INT(store_commit(st), 0);
        CHECK_INT(store_experiment_get(st, KEY2, NULL, &proj), 0);
        CHECK_STR(proj, "p2");
        free(proj);
        store_close(st);
}

static void test_job_round_trip(void)
{
        struct store *st = open_store("jobs.db");
        struct job_asset assets[2];
        struct job job, *got = NULL;
        int64_t id = -1, id2 = -1, before, after;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", "run-1"), 0);
        memset(&job, 0, sizeof(job));
        memset(assets, 0, sizeof(assets));
        job.experiment = KEY1;
        job.workspace = "ws";
        job.project = "proj";
        job.name = "resnet";
        job.type = "model";
        job.version = "1.2.0";
        job.aliases = "[\"best\",\"prod\"]";
        job.tags = "[\"t1\"]";
        job.metadata = "{\"acc\":0.9}";
        job.bytes = 300;
        job.attempts = 7;                  /* not stored by insert: a new job starts at 0 */
        job.remote_version_id = "ignored"; /* likewise */
        job.assigned_version = "9.9.9";    /* likewise */
        assets[0].idx = 5;                 /* the position in the array is what counts */
        assets[0].logical_path = "weights/model.bin";
        assets[0].spool = SPOOL1;
        assets[0].size = 300;
        assets[0].metadata = "{\"k\":\"v\"}";
        assets[0].overwrite = true;
        snprintf(assets[0].asset_id, sizeof(assets[0].asset_id), "%s", SPOOL2);
        assets[0].done = true; /* not stored by insert */
        assets[1].logical_path = "data/link";
        assets[1].remote = true;
        assets[1].uri = "s3://bucket/key";
        snprintf(assets[1].asset_id, sizeof(assets[1].asset_id), "%s", SPOOL3);
        job.assets = assets;
        job.nassets = 2;

        before = util_now_ms();
        CHECK_INT(store_job_insert(st, &job, &id), 0);
        after = util_now_ms();
        CHECK(id > 0);
        CHECK_INT(store_job_load(st, id, &got), 0);
        CHECK(got != NULL);
        if (got != NULL) {
                CHECK_INT(got->id, id);
                CHECK_STR(got->experiment, KEY1);
                CHECK_STR(got->experiment_name, "run-1");
                CHECK(!got->experiment_registered);
                CHECK_STR(got->workspace, "ws");
                CHECK_STR(got->project, "proj");
                CHECK_STR(got->name, "resnet");
                CHECK_STR(got->type, "model");
                CHECK_STR(got->version, "1.2.0");
                CHECK_STR(got->aliases, "[\"best\",\"prod\"]");
                CHECK_STR(got->tags, "[\"t1\"]");
                CHECK_STR(got->metadata, "{\"acc\":0.9}");
                CHECK_INT(got->attempts, 0);
                CHECK(got->remote_version_id == NULL);
                CHECK(got->assigned_version == NULL);
                CHECK_INT(got->bytes, 300);
                CHECK(got->created_ms >= before && got->created_ms <= after);
                CHECK_INT(got->nassets, 2);
        }
        if (got != NULL && got->nassets == 2) {
                const struct job_asset *a = &got->assets[0], *b = &got->assets[1];

                CHECK_INT(a->idx, 0);
                CHECK_STR(a->logical_path, "weights/model.bin");
                CHECK(!a->remote);
                CHECK_STR(a->spool, SPOOL1);
                CHECK_INT(a->size, 300);
                CHECK(a->uri == NULL);
                CHECK_STR(a->metadata, "{\"k\":\"v\"}");
                CHECK(a->overwrite);
                CHECK_STR(a->asset_id, SPOOL2);
                CHECK(!a->done);
                CHECK_INT(b->idx, 1);
                CHECK_STR(b->logical_path, "data/link");
                CHECK(b->remote);
                CHECK(b->spool == NULL);
                CHECK_INT(b->size, 0);
                CHECK_STR(b->uri, "s3://bucket/key");
                CHECK(b->metadata == NULL);
                CHECK(!b->overwrite);
                CHECK_STR(b->asset_id, SPOOL3);
                CHECK(!b->done);
        }
        job_free(got);
        got = NULL;

        /* NULL version and metadata, no assets, registered experiment. */
        CHECK_INT(store_experiment_set_registered(st, KEY1), 0);
        job.version = NULL;
        job.metadata = NULL;
        job.nassets = 0;
        job.assets = NULL;
        CHECK_INT(store_job_insert(st, &job, &id2), 0);
        CHECK_INT(id2, id + 1);
        CHECK_INT(store_job_load(st, id2, &got), 0);
        if (got != NULL) {
                CHECK(got->version == NULL);
                CHECK(got->metadata == NULL);
                CHECK_INT(got->nassets, 0);
                CHECK(got->experiment_registered);
        }
        job_free(got);
        job_free(NULL);

        got = (struct job *)&got;
        CHECK_INT(store_job_load(st, 999, &got), FERRY_ENOTFOUND);
        CHECK(got == NULL);

        /* A job must belong to a known experiment (foreign key). */
        job.experiment = KEY2;
        id2 = -1;
        CHECK(store_job_insert(st, &job, &id2) < 0);
        store_close(st);
}

static void test_due_rules(void)
{
        struct store *st = open_store("due.db");
        int64_t a1, a2, b1, c1, d1, e1;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(store_next_due(st), -1);
        CHECK_STR(due_str(st, 1000, 10), "");

        a1 = add_job(st, "ws", "a", NULL, NULL, 1, NULL);
        a2 = add_job(st, "ws", "a", NULL, NULL, 1, NULL);
        b1 = add_job(st, "ws", "b", NULL, NULL, 1, NULL);
        c1 = add_job(st, "ws2", "a", NULL, NULL, 1, NULL); /* same name, other workspace */

        /* a2 waits behind a1; b1 (other name) and c1 (other workspace) do not. */
        CHECK_STR(due_str(st, 1000, 10),
                  ids_str("%lld,%lld,%lld", (long long)a1, (long long)b1, (long long)c1));
        CHECK_STR(due_str(st, 1000, 2), ids_str("%lld,%lld", (long long)a1, (long long)b1));
        CHECK_STR(due_str(st, 1000, 0), "");
        CHECK_INT(store_next_due(st), 0);

        /* a1 backs off: a2 is still blocked by it (queued, not yet due). */
        CHECK_INT(store_job_reschedule(st, a1, 1, 5000, "timeout", "slow"), 0);
        CHECK_STR(due_str(st, 1000, 10), ids_str("%lld,%lld", (long long)b1, (long long)c1));
        CHECK_STR(due_str(st, 4999, 10), ids_str("%lld,%lld", (long long)b1, (long long)c1));
        CHECK_INT(store_job_set_done(st, b1, "1.0.0"), 0);
        CHECK_INT(store_job_set_done(st, c1, "1.0.0"), 0);
        /* a2's next_attempt_ms is 0 but it is not the head of its artifact. */
        CHECK_INT(store_next_due(st), 5000);
        CHECK_STR(due_str(st, 4999, 10), "");
        CHECK_STR(due_str(st, 5000, 10), ids_str("%lld", (long long)a1));

        /* The backend is back: every queued job is due now. */
        CHECK_INT(store_jobs_due_now(st), 0);
        CHECK_INT(store_next_due(st), 0);
        CHECK_STR(due_str(st, 0, 10), ids_str("%lld", (long long)a1));

        /* A failed job no longer holds its artifact back; requeued, it does again. */
        CHECK_INT(store_job_set_failed(st, a1, "backend_error", "refused"), 0);
        CHECK_STR(due_str(st, 1000, 10), ids_str("%lld", (long long)a2));
        CHECK_INT(store_job_requeue(st, a1), 1);
        CHECK_STR(due_str(st, 1000, 10), ids_str("%lld", (long long)a1));
        CHECK_INT(store_job_set_done(st, a1, NULL), 0);
        CHECK_STR(due_str(st, 1000, 10), ids_str("%lld", (long long)a2));
        CHECK_INT(store_job_set_done(st, a2, NULL), 0);
        CHECK_INT(store_next_due(st), -1);

        /* Due jobs come by next attempt time, then id. */
        d1 = add_job(st, "ws", "d", NULL, NULL, 1, NULL);
        e1 = add_job(st, "ws", "e", NULL, NULL, 1, NULL);
        CHECK_INT(store_job_reschedule(st, d1, 1, 300, NULL, NULL), 0);
        CHECK_INT(store_job_reschedule(st, e1, 1, 200, NULL, NULL), 0);
        CHECK_STR(due_str(st, 1000, 10), ids_str("%lld,%lld", (long long)e1, (long long)d1));
        CHECK_STR(due_str(st, 250, 10), ids_str("%lld", (long long)e1));
        CHECK_INT(store_next_due(st), 200);
        store_close(st);
}

static void test_steps(void)
{
        struct store *st = open_store("steps.db");
        struct job *job = NULL;
        cJSON *it, *errs;
        int64_t j1, j2, j3;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        j1 = add_job(st, "ws", "m", "3.0.0", NULL, 10, SPOOL1);
        j2 = add_job(st, "ws", "n", NULL, NULL, 20, SPOOL2);
        j3 = add_job(st, "ws", "o", NULL, NULL, 30, SPOOL3);

        /* set_remote records the version id; a NULL assigned version keeps the old one. */
        CHECK_INT(store_job_set_remote(st, j1, "rv-1", "3.0.0"), 0);
        CHECK_INT(store_job_set_remote(st, j1, "rv-2", NULL), 0);
        CHECK_INT(store_job_load(st, j1, &job), 0);
        if (job != NULL) {
                CHECK_STR(job->remote_version_id, "rv-2");
                CHECK_STR(job->assigned_version, "3.0.0");
                CHECK(job->nassets == 1 && !job->assets[0].done);
        }
        job_free(job);
        job = NULL;

        CHECK_INT(store_asset_set_done(st, j1, 0), 0);
        CHECK_INT(store_job_load(st, j1, &job), 0);
        if (job != NULL)
                CHECK(job->nassets == 1 && job->assets[0].done);
        job_free(job);
        job = NULL;

        /* reschedule: attempts, next time and the last error. */
        CHECK_INT(store_job_reschedule(st, j2, 3, 777, "timeout", "the server was slow"), 0);
        CHECK_INT(store_job_load(st, j2, &job), 0);
        if (job != NULL)
                CHECK_INT(job->attempts, 3);
        job_free(job);
        job = NULL;
        it = list_item(st, j2);
        CHECK(it != NULL);
        CHECK_STR(item_str(it, "state"), "queued");
        CHECK_INT(item_num(it, "attempts"), 3);
        CHECK_INT(item_num(it, "next_attempt"), 777);
        CHECK_STR(item_str(it, "error"), "the server was slow");
        cJSON_Delete(it);

        /* done: the assigned version shows in ls, the error is cleared. */
        CHECK_INT(store_job_set_done(st, j1, NULL), 0);
        it = list_item(st, j1);
        CHECK_STR(item_str(it, "state"), "done");
        CHECK_STR(item_str(it, "version"), "3.0.0");
        CHECK_STR(item_str(it, "next_attempt"), "(json null)");
        cJSON_Delete(it);
        CHECK_INT(store_job_set_done(st, j2, "4.1.0"), 0);
        it = list_item(st, j2);
        CHECK_STR(item_str(it, "state"), "done");
        CHECK_STR(item_str(it, "version"), "4.1.0");
        CHECK_STR(item_str(it, "error"), "(json null)");
        cJSON_Delete(it);

        /* failed, then requeued with attempts reset. */
        CHECK_INT(store_job_reschedule(st, j3, 5, 999, "timeout", "t"), 0);
        CHECK_INT(store_job_set_failed(st, j3, "backend_error", "HTTP 500: boom"), 0);
        it = list_item(st, j3);
        CHECK_STR(item_str(it, "state"), "failed");
        CHECK_STR(item_str(it, "error"), "HTTP 500: boom");
        CHECK_STR(item_str(it, "next_attempt"), "(json null)");
        cJSON_Delete(it);
        errs = store_errors(st, 20);
        CHECK_INT(cJSON_GetArraySize(errs), 1);
        it = cJSON_GetArrayItem(errs, 0);
        CHECK_INT(item_num(it, "job"), j3);
        CHECK_STR(item_str(it, "name"), "o");
        CHECK_STR(item_str(it, "code"), "backend_error");
        CHECK_STR(item_str(it, "message"), "HTTP 500: boom");
        cJSON_Delete(errs);

        CHECK_INT(store_job_requeue(st, j1), 0); /* done, not failed */
        CHECK_INT(store_job_requeue(st, 12345), 0);
        CHECK_INT(store_job_requeue(st, j3), 1);
        CHECK_INT(store_job_load(st, j3, &job), 0);
        if (job != NULL)
                CHECK_INT(job->attempts, 0);
        job_free(job);
        job = NULL;
        it = list_item(st, j3);
        CHECK_STR(item_str(it, "state"), "queued");
        CHECK_INT(item_num(it, "next_attempt"), 0);
        cJSON_Delete(it);
        CHECK_INT(store_job_requeue(st, j3), 0); /* no longer failed */

        /* requeue all */
        j1 = add_job(st, "ws", "p", NULL, NULL, 1, NULL);
        j2 = add_job(st, "ws", "q", NULL, NULL, 1, NULL);
        CHECK_INT(store_job_set_failed(st, j1, "x", "x"), 0);
        CHECK_INT(store_job_set_failed(st, j2, "y", "y"), 0);
        CHECK_INT(store_job_set_failed(st, j3, "z", "z"), 0);
        errs = store_errors(st, 2);
        CHECK_INT(cJSON_GetArraySize(errs), 2);
        cJSON_Delete(errs);
        CHECK_INT(store_job_requeue(st, -1), 3);
        CHECK_INT(store_job_requeue(st, -1), 0);
        errs = store_errors(st, 20);
        CHECK_INT(cJSON_GetArraySize(errs), 0);
        cJSON_Delete(errs);
        store_close(st);
}

static void test_pending_queries(void)
{
        struct store *st = open_store("pending.db");
        int64_t p1, p2, p3, o1;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        p1 = add_job(st, "ws", "m", "1.0.0", "[\"best\"]", 1, NULL);
        p2 = add_job(st, "ws", "m", NULL, "[\"prod\",\"best\"]", 1, NULL);
        p3 = add_job(st, "ws", "m", "2.0.0", "[\"old\"]", 1, NULL);
        o1 = add_job(st, "ws", "other", "1.0.0", "[]", 1, NULL);
        CHECK_INT(store_job_set_failed(st, p3, "x", "x"), 0);

        /* version_pending: queued or failed jobs asking for that exact version. */
        CHECK(store_version_pending(st, "ws", "m", "1.0.0"));
        CHECK(store_version_pending(st, "ws", "m", "2.0.0")); /* failed counts */
        CHECK(!store_version_pending(st, "ws", "m", "3.0.0"));
        CHECK(!store_version_pending(st, "ws2", "m", "1.0.0"));
        CHECK(!store_version_pending(st, "ws", "M", "1.0.0"));
        CHECK_INT(store_job_set_done(st, o1, NULL), 0);
        CHECK(!store_version_pending(st, "ws", "other", "1.0.0")); /* done does not */

        /* find_pending: the newest queued job by version, alias, or any. */
        CHECK_INT(store_find_pending(st, "ws", "m", "1.0.0"), p1);
        CHECK_INT(store_find_pending(st, "ws", "m", "prod"), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "best"), p2); /* newest of p1 and p2 */
        CHECK_INT(store_find_pending(st, "ws", "m", NULL), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "Latest"), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "2.0.0"), 0); /* failed: not pending */
        CHECK_INT(store_find_pending(st, "ws", "m", "old"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "nope"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "bes"), 0);
        CHECK_INT(store_find_pending(st, "ws2", "m", NULL), 0);
        CHECK_INT(store_find_pending(st, "ws", "other", NULL), 0); /* done */
        CHECK_INT(store_job_set_done(st, p2, "5.0.0"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "best"), p1);
        CHECK_INT(store_find_pending(st, "ws", "m", NULL), p1);
        store_close(st);
}

static void test_counts_and_list(void)
{
        struct store *st = open_store("counts.db");
        struct store_counts c;
        int64_t ids[6], pending = -1, failed = -1;
        char json[128];
        cJSON *items, *it;
        bool truncated = false;
        int i;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        memset(&c, 0xff, sizeof(c));
        CHECK_INT(store_counts(st, &c), 0);
        CHECK_INT(c.queued, 0);
        CHECK_INT(c.bytes_held, 0);
        CHECK_INT(store_wait_counts(st, NULL, &pending, &failed), 0);
        CHECK_INT(pending, 0);
        CHECK_INT(failed, 0);
        items = store_list(st, "all", 10, 0, &truncated);
        CHECK(cJSON_IsArray(items) && cJSON_GetArraySize(items) == 0);
        CHECK(!truncated);
        cJSON_Delete(items);

        for (i = 0; i < 6; i++) {
                char name[8];

                snprintf(name, sizeof(name), "n%d", i);
                ids[i] = add_job(st, "ws", name, NULL, NULL, (int64_t)1 << (i * 4),
                                 i == 0 ? SPOOL1 : NULL);
        }
        /* states: 0 queued, 1 queued, 2 failed, 3 failed, 4 done, 5 queued */
        CHECK_INT(store_job_set_failed(st, ids[2], "c", "failure two"), 0);
        CHECK_INT(store_job_set_failed(st, ids[3], "c", "failure three"), 0);
        CHECK_INT(store_job_set_done(st, ids[4], "1.0.0"), 0);
        CHECK_INT(store_counts(st, &c), 0);
        CHECK_INT(c.queued, 3);
        CHECK_INT(c.failed, 2);
        CHECK_INT(c.done, 1);
        CHECK_INT(c.bytes_queued, 0x1 + 0x10 + 0x100000);
        CHECK_INT(c.bytes_held, 0x1 + 0x10 + 0x100000 + 0x100 + 0x1000);

        CHECK_INT(store_wait_counts(st, NULL, &pending, &failed), 0);
        CHECK_INT(pending, 3);
        CHECK_INT(failed, 2);
        snprintf(json, sizeof(json), "[%lld,%lld,%lld]", (long long)ids[0], (long long)ids[2],
                 (long long)ids[4]);
        CHECK_INT(store_wait_counts(st, json, &pending, &failed), 0);
        CHECK_INT(pending, 1);
        CHECK_INT(failed, 1);
        CHECK_INT(store_wait_counts(st, "[]", &pending, &failed), 0);
        CHECK_INT(pending, 0);
        CHECK_INT(failed, 0);
        CHECK_INT(store_wait_counts(st, "[9999]", &pending, &failed), 0);
        CHECK_INT(pending, 0);

        /* ls: by state, oldest first; with a limit, the newest `limit` items. */
        CHECK_STR(list_ids(st, "all", 100),
                  ids_str("%lld,%lld,%lld,%lld,%lld,%lld", (long long)ids[0], (long long)ids[1],
                          (long long)ids[2], (long long)ids[3], (long long)ids[4],
                          (long long)ids[5]));
        CHECK_STR(list_ids(st, "active", 100),
                  ids_str("%lld,%lld,%lld,%lld,%lld", (long long)ids[0], (long long)ids[1],
                          (long long)ids[2], (long long)ids[3], (long long)ids[5]));
        CHECK_STR(list_ids(st, "queued", 100), ids_str("%lld,%lld,%lld", (long long)ids[0],
                                                       (long long)ids[1], (long long)ids[5]));
        CHECK_STR(list_ids(st, "failed", 100),
                  ids_str("%lld,%lld", (long long)ids[2], (long long)ids[3]));
        CHECK_STR(list_ids(st, "done", 100), ids_str("%lld", (long long)ids[4]));
        CHECK_STR(list_ids(st, "all", 2),
                  ids_str("%lld,%lld", (long long)ids[4], (long long)ids[5]));
        CHECK_STR(list_ids(st, "active", 1), ids_str("%lld", (long long)ids[5]));
        CHECK_STR(list_ids(st, "bogus", 100), "");
        CHECK_STR(list_ids(st, "all", 0), "");

        /* One item's fields. */
        it = list_item(st, ids[0]);
        CHECK(it != NULL);
        CHECK_INT(item_num(it, "job"), ids[0]);
        CHECK_STR(item_str(it, "name"), "n0");
        CHECK_STR(item_str(it, "type"), "model");
        CHECK_STR(item_str(it, "version"), "(json null)");
        CHECK_STR(item_str(it, "state"), "queued");
        CHECK_INT(item_num(it, "attempts"), 0);
        CHECK_INT(item_num(it, "next_attempt"), 0);
        CHECK_INT(item_num(it, "bytes"), 1);
        CHECK_INT(item_num(it, "assets"), 1);
        CHECK_STR(item_str(it, "experiment"), KEY1);
        CHECK(item_num(it, "created") > 1600000000000LL);
        CHECK_STR(item_str(it, "error"), "(json null)");
        cJSON_Delete(it);
        it = list_item(st, ids[3]);
        CHECK_INT(item_num(it, "assets"), 0);
        CHECK_STR(item_str(it, "error"), "failure three");
        cJSON_Delete(it);

        /* errors: failed jobs, newest failure first, limited. */
        items = store_errors(st, 20);
        CHECK_INT(cJSON_GetArraySize(items), 2);
        CHECK_INT(item_num(cJSON_GetArrayItem(items, 0), "job"), ids[3]);
        CHECK_INT(item_num(cJSON_GetArrayItem(items, 1), "job"), ids[2]);
        cJSON_Delete(items);
        items = store_errors(st, 1);
        CHECK_INT(cJSON_GetArraySize(items), 1);
        cJSON_Delete(items);
        /* A byte bound keeps the newest items that fit and says so. */
        truncated = false;
        items = store_list(st, "all", 10, 1, &truncated);
        CHECK(truncated);
        CHECK_INT(cJSON_GetArraySize(items), 0);
        cJSON_Delete(items);
        truncated = false;
        items = store_list(st, "all", 10, 1u << 20, &truncated);
        CHECK(!truncated);
        CHECK_INT(cJSON_GetArraySize(items), 6);
        cJSON_Delete(items);
        store_close(st);
}

static void test_spool_refs_and_prune(void)
{
        struct store *st = open_store("prune.db");
        struct store_counts c;
        struct job *job = NULL;
        int64_t q, f, d1, d2;
        char sql[128], db[600];

        snprintf(db, sizeof(db), "%s", tmp_path("prune.db"));
        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        q = add_job(st, "ws", "q", NULL, NULL, 5, SPOOL1);
        f = add_job(st, "ws", "f", NULL, NULL, 5, SPOOL2);
        d1 = add_job(st, "ws", "d", NULL, NULL, 5, SPOOL3);
        d2 = add_job(st, "ws", "e", NULL, NULL, 5, NULL);
        CHECK(store_spool_referenced(st, SPOOL1));
        CHECK(store_spool_referenced(st, SPOOL3));
        CHECK(!store_spool_referenced(st, "44444444444444444444444444444444"));
        CHECK_INT(store_job_set_failed(st, f, "x", "x"), 0);
        CHECK_INT(store_job_set_done(st, d1, NULL), 0);
        CHECK_INT(store_job_set_done(st, d2, NULL), 0);
        CHECK(store_spool_referenced(st, SPOOL1));  /* queued */
        CHECK(store_spool_referenced(st, SPOOL2));  /* failed */
        CHECK(!store_spool_referenced(st, SPOOL3)); /* delivered */

        /* Pruning forgets delivered jobs finished before the cut, with their assets. */
        CHECK_INT(store_prune_done(st, 0), 0);
        CHECK_INT(store_prune_done(st, util_now_ms() + 60000), 2);
        CHECK_INT(store_prune_done(st, util_now_ms() + 60000), 0);
        CHECK_INT(store_job_load(st, d1, &job), FERRY_ENOTFOUND);
        CHECK_INT(store_job_load(st, q, &job), 0);
        job_free(job);
        job = NULL;
        CHECK_INT(store_job_load(st, f, &job), 0);
        job_free(job);
        CHECK_INT(store_counts(st, &c), 0);
        CHECK_INT(c.done, 0);
        CHECK_INT(c.queued, 1);
        CHECK_INT(c.failed, 1);
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM assets WHERE job = %lld", (long long)d1);
        CHECK_INT(query_int(db, sql), 0);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM assets"), 2);
        store_close(st);
}

int main(void)
{
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_store: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        fds = count_fds();
        test_open_and_versions();
        test_experiments_and_transactions();
        test_job_round_trip();
        test_due_rules();
        test_steps();
        test_pending_queries();
        test_counts_and_list();
        test_spool_refs_and_prune();
        /* Every store was closed: no database or WAL file is left open. */
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_store");
}
