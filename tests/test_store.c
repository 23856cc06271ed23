/*
 * test_store.c — the durable queue (daemon/store.c) on real SQLite files in a
 * temporary directory: creation and migrations (schema 1 to 2), the damage
 * check, experiments and transactions, jobs and their assets, artifact lanes
 * (the `heads` table), step results, the `stats` counts, look-ups, ls,
 * errors, pruning, the spool files the queue holds, the query plan of every
 * statement, and the cost of hot statements and of the start-up spool check
 * proven by counting SQLite's virtual machine steps, never by timing. Every
 * store is closed, and no file descriptor may be left open.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <uv.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "recovery.h"
#include "spool.h"
#include "sqlutil.h"
#include "util.h"

extern const char schema_sql[]; /* generated from daemon/schema.sql */

#define KEY1 "0123456789abcdef0123456789abcdef"
#define KEY2 "fedcba9876543210fedcba9876543210"
#define SPOOL1 "11111111111111111111111111111111"
#define SPOOL2 "22222222222222222222222222222222"
#define SPOOL3 "33333333333333333333333333333333"
#define SPOOL4 "44444444444444444444444444444444"
#define SPOOL5 "55555555555555555555555555555555"
#define SPOOL6 "66666666666666666666666666666666"
#define INSTANCE1 "abcdef0123456789abcdef0123456789"

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

        if (store_open(&st, tmp_path(name), false, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "store_open %s: %s\n", name, err);
                check_failures++;
                return NULL;
        }
        return st;
}

/* The highest N of the "-- migration: N" lines (numbers may have gaps): the version written. */
static int schema_version(void)
{
        const char *p = schema_sql;
        int n = 0;

        while ((p = strstr(p, "\n-- migration: ")) != NULL) {
                p += strlen("\n-- migration: ");
                if (atoi(p) > n)
                        n = atoi(p);
        }
        return n;
}

/* The SQL of migration n as embedded in ferryd (caller frees), or NULL. */
static char *migration_sql(int n)
{
        char mark[64];
        const char *start, *end;
        char *out;

        snprintf(mark, sizeof(mark), "-- migration: %d\n", n);
        start = strstr(schema_sql, mark);
        if (start == NULL)
                return NULL;
        start += strlen(mark);
        end = strstr(start, "-- migration: ");
        if (end == NULL)
                end = start + strlen(start);
        out = malloc((size_t)(end - start) + 1);
        if (out == NULL)
                return NULL;
        memcpy(out, start, (size_t)(end - start));
        out[end - start] = '\0';
        return out;
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
        else
                fprintf(stderr, "query_int \"%s\": %s\n", sql, h ? sqlite3_errmsg(h) : "?");
        sqlite3_finalize(s);
        sqlite3_close(h);
        return v;
}

/* The first column of every row of a query on a separate connection, joined with ','. */
static const char *query_str(const char *db, const char *sql)
{
        static char buf[4][1024];
        static int next;
        char *out = buf[next++ % 4];
        sqlite3 *h = NULL;
        sqlite3_stmt *s = NULL;
        size_t off = 0;

        out[0] = '\0';
        if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(h, sql, -1, &s, NULL) != SQLITE_OK) {
                snprintf(out, sizeof(buf[0]), "(error: %s)", h ? sqlite3_errmsg(h) : "?");
        } else {
                while (sqlite3_step(s) == SQLITE_ROW && off < sizeof(buf[0]))
                        off += (size_t)snprintf(out + off, sizeof(buf[0]) - off, "%s%s",
                                                off ? "," : "",
                                                (const char *)sqlite3_column_text(s, 0));
        }
        sqlite3_finalize(s);
        sqlite3_close(h);
        return out;
}

/* Run statements on a separate connection; SQLite's code returned. */
static int exec_sql(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        char *msg = NULL;
        int rc = sqlite3_open(db, &h);

        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(h, 5000);
                rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
        }
        if (rc != SQLITE_OK)
                fprintf(stderr, "exec_sql: %s\n", msg ? msg : sqlite3_errmsg(h));
        sqlite3_free(msg);
        sqlite3_close(h);
        return rc;
}

/*
 * The tables the triggers keep agree with the jobs they summarise: each lane
 * (workspace, name) with a queued version not yet created has exactly its
 * oldest such version as head, with that version's next attempt; every
 * state's count and bytes match the rows.
 */
static void check_derived(const char *db, int line)
{
        long long bad_heads = query_int(
            db, "SELECT COUNT(*) FROM heads h WHERE h.job IS NOT (SELECT MIN(id) FROM jobs j "
                "WHERE j.workspace = h.workspace AND j.name = h.name AND j.state = 'queued' AND "
                "j.remote_version_id IS NULL) OR h.next_attempt_ms IS NOT (SELECT "
                "next_attempt_ms FROM jobs WHERE id = h.job)");
        long long missing = query_int(
            db, "SELECT COUNT(*) FROM (SELECT DISTINCT workspace, name FROM jobs WHERE state = "
                "'queued' AND remote_version_id IS NULL) l WHERE NOT EXISTS (SELECT 1 FROM heads h "
                "WHERE h.workspace = l.workspace AND h.name = l.name)");
        long long bad_stats = query_int(
            db, "SELECT COUNT(*) FROM stats s WHERE s.jobs <> (SELECT COUNT(*) FROM jobs WHERE "
                "state = s.state) OR s.bytes <> (SELECT COALESCE(SUM(bytes), 0) FROM jobs WHERE "
                "state = s.state)");

        if (bad_heads != 0 || missing != 0 || bad_stats != 0) {
                fprintf(stderr,
                        "%s:%d: derived tables disagree with jobs: %lld wrong heads, %lld lanes "
                        "without a head, %lld wrong stats rows\n  heads: %s\n  stats: %s\n",
                        __FILE__, line, bad_heads, missing, bad_stats,
                        query_str(db, "SELECT workspace || '/' || name || '=' || job || '@' || "
                                      "next_attempt_ms FROM heads ORDER BY 1"),
                        query_str(db, "SELECT state || ':' || jobs || ':' || bytes FROM stats "
                                      "ORDER BY 1"));
                check_failures++;
        }
}
#define CHECK_DERIVED(db) check_derived((db), __LINE__)

/* Insert a queued job with one file asset (when spool is not NULL). Returns its id or -1. */
static int64_t add_job(struct store *st, const char *ws, const char *name, const char *version,
                       const char *aliases, int64_t bytes, const char *spool)
{
        struct job_asset asset;
        struct job job;
        char token[33];
        int64_t id = -1;

        memset(&job, 0, sizeof(job));
        memset(&asset, 0, sizeof(asset));
        if (util_random_hex(token, 16) != 0)
                return -1;
        job.token = token;
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

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return x < y ? -1 : x > y;
}

/* Ids due at now as "1,2,3": in the store's order, or sorted (`sorted`) to compare sets. */
static const char *due_list(struct store *st, int64_t now, int max, bool sorted)
{
        static char buf[4][256];
        static int next;
        char *out = buf[next++ % 4];
        int64_t ids[64];
        int n = store_jobs_due(st, now, ids, max), i;
        size_t off = 0;

        out[0] = '\0';
        if (n < 0) {
                snprintf(out, sizeof(buf[0]), "error %d", n);
                return out;
        }
        if (sorted && n > 1)
                qsort(ids, (size_t)n, sizeof(ids[0]), cmp_i64);
        for (i = 0; i < n; i++)
                off += (size_t)snprintf(out + off, sizeof(buf[0]) - off, "%s%lld", i ? "," : "",
                                        (long long)ids[i]);
        return out;
}
#define DUE(st, now) due_list((st), (now), 64, true)

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
        if (truncated)
                return "(truncated without a byte bound)";
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

static int job_attempts(struct store *st, int64_t id)
{
        struct job *job = NULL;
        int n = -1;

        if (store_job_load(st, id, &job) == 0)
                n = job->attempts;
        job_free(job);
        return n;
}

static void sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/* ---- counting SQLite's work ----------------------------------------------- */

/*
 * The store's connection is private, so the test reaches it the way SQLite
 * lets any program reach a connection it did not open: an auto-extension
 * runs on every connection opened while it is registered and installs a
 * profile trace; the trace adds each finished statement's virtual machine
 * steps (and full-scan steps) to these counters while `counting` is set.
 * VM steps do not depend on B-tree depth, so a statement that reads only
 * the rows it returns costs the same whatever the size of the table.
 */
static bool counting;
static long long vm_steps, fullscan_steps;

static int count_trace_cb(unsigned type, void *ctx, void *p, void *x)
{
        sqlite3_stmt *s = p;

        (void)ctx;
        (void)x;
        if (type == SQLITE_TRACE_PROFILE && counting) {
                vm_steps += sqlite3_stmt_status(s, SQLITE_STMTSTATUS_VM_STEP, 1);
                fullscan_steps += sqlite3_stmt_status(s, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
        } else if (type == SQLITE_TRACE_PROFILE) {
                sqlite3_stmt_status(s, SQLITE_STMTSTATUS_VM_STEP, 1);
                sqlite3_stmt_status(s, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
        }
        return 0;
}

static int count_extension(sqlite3 *db, const char **msg, const struct sqlite3_api_routines *api)
{
        (void)msg;
        (void)api;
        sqlite3_trace_v2(db, SQLITE_TRACE_PROFILE, count_trace_cb, NULL);
        return SQLITE_OK;
}

/* Open a store whose connection reports its work to the counters. */
static struct store *open_counted_store(const char *path)
{
        struct store *st = NULL;
        char err[512] = "";

        sqlite3_auto_extension((void (*)(void))count_extension);
        if (store_open(&st, path, false, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "store_open %s: %s\n", path, err);
                check_failures++;
        }
        sqlite3_reset_auto_extension();
        return st;
}

static void count_start(void)
{
        vm_steps = fullscan_steps = 0;
        counting = true;
}

static long long count_stop(void)
{
        counting = false;
        return vm_steps;
}

/* ---- bulk rows, written with plain SQL in one transaction ------------------ */

struct bulk {
        sqlite3 *h;
        sqlite3_stmt *job, *asset;
};

static int bulk_begin(struct bulk *b, const char *db)
{
        memset(b, 0, sizeof(*b));
        if (sqlite3_open(db, &b->h) != SQLITE_OK)
                goto fail;
        sqlite3_busy_timeout(b->h, 5000);
        if (sqlite3_exec(b->h,
                         "PRAGMA foreign_keys = ON; BEGIN; INSERT OR IGNORE INTO "
                         "experiments(key, workspace, project, created_ms) VALUES ('" KEY1
                         "', 'ws', 'proj', 1)",
                         NULL, NULL, NULL) != SQLITE_OK)
                goto fail;
        if (sqlite3_prepare_v2(
                b->h,
                "INSERT INTO jobs(experiment, workspace, project, name, type, aliases, tags, "
                "state, bytes, created_ms, done_ms, token, nassets) VALUES ('" KEY1
                "', ?1, 'proj', ?2, 'model', '[]', '[]', ?3, ?4, 1, ?5, "
                "lower(hex(randomblob(16))), "
                "?6)",
                -1, &b->job, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(b->h,
                               "INSERT INTO assets(job, idx, logical_path, spool, size, asset_id) "
                               "VALUES (?1, ?2, 'f.bin', ?3, 0, lower(hex(randomblob(16))))",
                               -1, &b->asset, NULL) != SQLITE_OK)
                goto fail;
        return 0;
fail:
        fprintf(stderr, "bulk_begin: %s\n", b->h ? sqlite3_errmsg(b->h) : "?");
        check_failures++;
        return -1;
}

/* A spool-like name: 8 hex digits of kind, 24 of number. */
static void bulk_name(char out[33], unsigned kind, long long i)
{
        snprintf(out, 33, "%08x%024llx", kind, i);
}

/*
 * One job in `state` with `nfiles` file assets named bulk_name(kind, first..);
 * its id, or -1.
 */
static int64_t bulk_job(struct bulk *b, const char *ws, const char *name, const char *state,
                        int nfiles, unsigned kind, long long first)
{
        char spool[33];
        int64_t id;
        int i;

        sqlite3_bind_text(b->job, 1, ws, -1, SQLITE_STATIC);
        sqlite3_bind_text(b->job, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(b->job, 3, state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(b->job, 4, 1);
        if (strcmp(state, "queued") == 0)
                sqlite3_bind_null(b->job, 5);
        else
                sqlite3_bind_int64(b->job, 5, 1000 + first);
        sqlite3_bind_int(b->job, 6, nfiles);
        if (sqlite3_step(b->job) != SQLITE_DONE)
                goto fail;
        sqlite3_reset(b->job);
        id = sqlite3_last_insert_rowid(b->h);
        for (i = 0; i < nfiles; i++) {
                bulk_name(spool, kind, first + i);
                sqlite3_bind_int64(b->asset, 1, id);
                sqlite3_bind_int(b->asset, 2, i);
                sqlite3_bind_text(b->asset, 3, spool, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(b->asset) != SQLITE_DONE)
                        goto fail;
                sqlite3_reset(b->asset);
        }
        return id;
fail:
        fprintf(stderr, "bulk_job: %s\n", sqlite3_errmsg(b->h));
        sqlite3_reset(b->job);
        sqlite3_reset(b->asset);
        check_failures++;
        return -1;
}

static void bulk_end(struct bulk *b)
{
        sqlite3_finalize(b->job);
        sqlite3_finalize(b->asset);
        if (b->h != NULL && sqlite3_exec(b->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                fprintf(stderr, "bulk commit: %s\n", sqlite3_errmsg(b->h));
                check_failures++;
        }
        sqlite3_close(b->h);
        memset(b, 0, sizeof(*b));
}

/* ---- tests: opening ------------------------------------------------------- */

static void test_open_and_versions(void)
{
        struct store *st = NULL, *st2 = NULL;
        char err[512] = "", instance[33], db[600], newer[600], path[700];
        int version = schema_version();
        struct stat sb;
        mode_t old_mask;
        sqlite3 *h = NULL;
        struct job *job = NULL;
        bool damaged = true;
        int64_t id = -1;
        size_t i;

        snprintf(db, sizeof(db), "%s", tmp_path("open.db"));
        snprintf(newer, sizeof(newer), "%s", tmp_path("newer.db"));
        CHECK(version >= 2);
        CHECK_INT(access(db, F_OK), -1);
        /* With no umask to help, the file is still private. */
        old_mask = umask(0);
        CHECK_INT(store_open(&st, db, true, &damaged, err, sizeof(err)), 0);
        umask(old_mask);
        CHECK(!damaged);
        CHECK(st != NULL);
        if (st == NULL)
                return;
        CHECK_INT(stat(db, &sb), 0);
        CHECK_INT(sb.st_mode & 0777, 0600);
        snprintf(path, sizeof(path), "%s-wal", db);
        if (stat(path, &sb) == 0)
                CHECK_INT(sb.st_mode & 0777, 0600);
        snprintf(path, sizeof(path), "%s-shm", db);
        if (stat(path, &sb) == 0)
                CHECK_INT(sb.st_mode & 0777, 0600);
        CHECK_INT(query_int(db, "PRAGMA user_version"), version);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name "
                                "IN ('meta', 'experiments', 'jobs', 'assets', 'heads', 'stats')"),
                  6);
        CHECK_STR(
            query_str(db, "SELECT state || ':' || jobs || ':' || bytes FROM stats ORDER BY 1"),
            "cancelled:0:0,done:0:0,failed:0:0,queued:0:0");
        CHECK_INT(strlen(store_instance(st)), 32);
        for (i = 0; i < 32; i++)
                CHECK(strchr("0123456789abcdef", store_instance(st)[i]) != NULL);
        CHECK(!store_damaged(st));
        snprintf(instance, sizeof(instance), "%s", store_instance(st));
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", "run"), 0);
        id = add_job(st, "ws", "model", "1.0.0", NULL, 10, SPOOL1);
        CHECK_INT(id, 1);
        store_close(st);

        /* Reopening keeps the data and the instance id, and migrates nothing twice. */
        CHECK_INT(store_open(&st2, db, true, NULL, err, sizeof(err)), 0);
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

        /* A database from a newer ferryd is refused, naming both versions, and left alone. */
        CHECK_INT(sqlite3_open(newer, &h), SQLITE_OK);
        CHECK_INT(sqlite3_exec(h, "CREATE TABLE t(x); PRAGMA user_version = 99;", NULL, NULL, NULL),
                  SQLITE_OK);
        sqlite3_close(h);
        st = (struct store *)&st; /* must be reset to NULL */
        err[0] = '\0';
        damaged = true;
        CHECK(store_open(&st, newer, true, &damaged, err, sizeof(err)) < 0);
        CHECK(st == NULL);
        CHECK(!damaged);
        CHECK(strstr(err, "99") != NULL);
        CHECK(strstr(err, "newer") != NULL);
        CHECK(strstr(err, newer) != NULL);
        if (strstr(err, "99") == NULL || strstr(err, "newer") == NULL)
                fprintf(stderr, "message was: %s\n", err);
        CHECK_INT(query_int(newer, "PRAGMA user_version"), 99);
        CHECK_INT(query_int(newer, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs'"), 0);

        /* A path that cannot be created. */
        err[0] = '\0';
        CHECK(store_open(&st, tmp_path("no/such/dir/q.db"), false, NULL, err, sizeof(err)) < 0);
        CHECK(st == NULL);
        CHECK(err[0] != '\0');

        /* A symlink in place of the database is not followed. */
        CHECK_INT(symlink(tmp_path("link-target.db"), tmp_path("link.db")), 0);
        err[0] = '\0';
        CHECK(store_open(&st, tmp_path("link.db"), false, NULL, err, sizeof(err)) < 0);
        CHECK(st == NULL);
        CHECK(strstr(err, "link.db") != NULL);
        CHECK(!exists(tmp_path("link-target.db")));
}

static void test_migrate_from_1(void)
{
        char db[600], *sql1 = migration_sql(1);
        struct store *st = NULL;
        struct store_counts c;
        struct job *job = NULL;
        char err[512] = "";
        sqlite3 *h = NULL;
        int rc;

        snprintf(db, sizeof(db), "%s", tmp_path("v1.db"));
        CHECK(sql1 != NULL);
        if (sql1 == NULL)
                return;
        /* Migration 1 does not know the tables of migration 2. */
        CHECK(strstr(sql1, "heads") == NULL);
        CHECK(strstr(sql1, "CREATE TABLE jobs") != NULL);
        CHECK_INT(sqlite3_open(db, &h), SQLITE_OK);
        rc = sqlite3_exec(h, sql1, NULL, NULL, NULL);
        CHECK_INT(rc, SQLITE_OK);
        free(sql1);
        /*
         * A queue as ferryd 1 left it. Lane ws/a: 1 created on the backend, 2
         * (backing off until 5000) and 3 waiting, 8 delivered; ws/b: 4 failed, 5
         * waiting; ws/c: 6 delivered; ws2/a (same name, other workspace): 7.
         */
        rc = sqlite3_exec(
            h,
            "PRAGMA user_version = 1;"
            "INSERT INTO meta(key, value) VALUES ('instance', '" INSTANCE1 "');"
            "INSERT INTO experiments(key, workspace, project, name, registered, created_ms) "
            "VALUES ('" KEY1 "', 'ws', 'proj', NULL, 1, 1);"
            "INSERT INTO jobs(id, experiment, workspace, project, name, type, version, aliases, "
            "tags, state, attempts, next_attempt_ms, remote_version_id, bytes, created_ms, "
            "done_ms) VALUES"
            " (1, '" KEY1 "', 'ws', 'p', 'a', 'model', NULL, '[]', '[]', 'queued', 0, 0, 'rv-1', "
            "10, 1, NULL),"
            " (2, '" KEY1 "', 'ws', 'p', 'a', 'model', NULL, '[]', '[]', 'queued', 2, 5000, "
            "NULL, 20, 2, NULL),"
            " (3, '" KEY1 "', 'ws', 'p', 'a', 'model', '3.0.0', '[]', '[]', 'queued', 0, 0, "
            "NULL, 30, 3, NULL),"
            " (4, '" KEY1 "', 'ws', 'p', 'b', 'model', NULL, '[]', '[]', 'failed', 0, 0, NULL, "
            "40, 4, 100),"
            " (5, '" KEY1 "', 'ws', 'p', 'b', 'model', NULL, '[]', '[]', 'queued', 0, 0, NULL, "
            "50, 5, NULL),"
            " (6, '" KEY1 "', 'ws', 'p', 'c', 'model', NULL, '[]', '[]', 'done', 0, 0, 'rv-6', "
            "60, 6, 200),"
            " (7, '" KEY1 "', 'ws2', 'p', 'a', 'model', NULL, '[]', '[]', 'queued', 0, 0, NULL, "
            "70, 7, NULL),"
            " (8, '" KEY1 "', 'ws', 'p', 'a', 'model', NULL, '[]', '[]', 'done', 0, 0, 'rv-8', "
            "80, 8, 300);"
            "INSERT INTO assets(job, idx, logical_path, spool, size, asset_id) VALUES"
            " (1, 0, 'f0', '" SPOOL1 "', 5, 'a'), (1, 1, 'f1', '" SPOOL2 "', 5, 'b'),"
            " (2, 0, 'f0', '" SPOOL3 "', 20, 'c'), (4, 0, 'f0', '" SPOOL4 "', 40, 'd'),"
            " (5, 0, 'f0', NULL, 0, 'e'), (5, 1, 'f1', NULL, 0, 'f'), (5, 2, 'f2', NULL, 0, 'g'),"
            " (6, 0, 'f0', '" SPOOL5 "', 60, 'h'), (7, 0, 'f0', '" SPOOL6 "', 70, 'i');",
            NULL, NULL, NULL);
        CHECK_INT(rc, SQLITE_OK);
        sqlite3_close(h);
        CHECK_INT(query_int(db, "PRAGMA user_version"), 1);

        CHECK_INT(store_open(&st, db, true, NULL, err, sizeof(err)), 0);
        if (st == NULL) {
                fprintf(stderr, "migration: %s\n", err);
                return;
        }
        CHECK_INT(query_int(db, "PRAGMA user_version"), schema_version());
        CHECK_STR(store_instance(st), INSTANCE1);
        /* Versions logged before keep the origin they had. */
        CHECK_STR(
            query_str(db, "SELECT id || '=' || token FROM jobs WHERE id IN (1, 8) ORDER BY id"),
            "1=" INSTANCE1 ":1,8=" INSTANCE1 ":8");
        CHECK_INT(
            query_int(db, "SELECT COUNT(*) FROM jobs WHERE token IS NOT ('" INSTANCE1 ":' || id)"),
            0);
        CHECK_STR(query_str(db, "SELECT id || ':' || nassets FROM jobs ORDER BY id"),
                  "1:2,2:1,3:0,4:1,5:3,6:1,7:1,8:0");
        /* One head per lane: its oldest queued version not created yet, with its backoff. */
        CHECK_STR(query_str(db, "SELECT workspace || '/' || name || '=' || job || '@' || "
                                "next_attempt_ms FROM heads ORDER BY workspace, name"),
                  "ws/a=2@5000,ws/b=5@0,ws2/a=7@0");
        CHECK_STR(
            query_str(db, "SELECT state || ':' || jobs || ':' || bytes FROM stats ORDER BY 1"),
            "cancelled:0:0,done:2:140,failed:1:40,queued:5:180");
        CHECK_DERIVED(db);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_by_name'"),
                  0);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name "
                                "IN ('jobs_queued', 'jobs_created', 'jobs_pending_version', "
                                "'jobs_by_state', 'jobs_failed', 'jobs_done', 'assets_spool', "
                                "'heads_due')"),
                  8);

        /* The migrated queue works: counts, due versions, loading, lanes. */
        CHECK_INT(store_counts(st, &c), 0);
        CHECK_INT(c.queued, 5);
        CHECK_INT(c.failed, 1);
        CHECK_INT(c.done, 2);
        CHECK_INT(c.bytes_queued, 180);
        CHECK_INT(c.bytes_held, 220);
        CHECK_STR(DUE(st, 1000), "1,5,7");
        CHECK_STR(DUE(st, 5000), "1,2,5,7");
        CHECK_INT(store_next_due_after(st, 1000), 5000);
        CHECK_INT(store_job_load(st, 2, &job), 0);
        if (job != NULL) {
                CHECK_STR(job->token, INSTANCE1 ":2");
                CHECK_INT(job->attempts, 2);
                CHECK_INT(job->next_attempt_ms, 5000);
                CHECK_INT(job->nassets, 1);
        }
        job_free(job);
        CHECK(store_version_pending(st, "ws", "a", "3.0.0"));
        CHECK_INT(store_find_pending(st, "ws", "a", NULL), 3);
        CHECK_INT(store_job_set_created(st, 2, "rv-2", "2.0.0"), 0);
        CHECK_STR(DUE(st, 1000), "1,3,5,7");
        CHECK_DERIVED(db);
        store_close(st);
}

/* Write `len` bytes of junk at `offset` of a file. */
static int scribble(const char *path, off_t offset, size_t len)
{
        unsigned char junk[8192];
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        size_t i;
        ssize_t w;

        if (fd < 0 || len > sizeof(junk))
                return -1;
        for (i = 0; i < len; i++)
                junk[i] = (unsigned char)(0xa5 ^ (i * 7));
        w = pwrite(fd, junk, len, offset);
        close(fd);
        return w == (ssize_t)len ? 0 : -1;
}

static void test_check_damage(void)
{
        char db[600], wal[700], err[512], before[65] = "", after[65] = "";
        struct store *st = open_store("damaged.db");
        long long page_size, pages;
        bool damaged;
        sqlite3 *h = NULL;
        int i, rc;

        snprintf(db, sizeof(db), "%s", tmp_path("damaged.db"));
        snprintf(wal, sizeof(wal), "%s-wal", db);
        if (st == NULL)
                return;
        /* A real queue of several thousand versions. */
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(store_begin(st), 0);
        for (i = 0; i < 4000; i++) {
                char name[32];

                snprintf(name, sizeof(name), "artifact-%d", i % 50);
                add_job(st, "ws", name, NULL, "[\"some-alias\",\"another-alias\"]", i,
                        i % 3 ? SPOOL1 : NULL);
        }
        CHECK_INT(store_commit(st), 0);
        store_close(st);
        CHECK(!exists(wal)); /* checkpointed: every page is in the main file */

        /* Healthy: the check passes. */
        st = NULL;
        damaged = true;
        CHECK_INT(store_open(&st, db, true, &damaged, err, sizeof(err)), 0);
        CHECK(!damaged);
        CHECK(st != NULL && !store_damaged(st));
        store_close(st);
        CHECK(!exists(wal));

        /* Junk over one page in the middle of the file. */
        page_size = query_int(db, "PRAGMA page_size");
        pages = query_int(db, "PRAGMA page_count");
        CHECK(page_size >= 512 && pages > 20);
        if (page_size < 512 || page_size > 8192 || pages <= 20)
                return;
        CHECK_INT(scribble(db, (off_t)(pages / 2) * page_size, (size_t)page_size), 0);
        CHECK_INT(util_sha256_file(db, before), 0);
        st = (struct store *)&st;
        damaged = false;
        err[0] = '\0';
        rc = store_open(&st, db, true, &damaged, err, sizeof(err));
        CHECK(rc < 0);
        CHECK(st == NULL);
        CHECK(damaged);
        CHECK(strstr(err, "damaged") != NULL);
        CHECK(strstr(err, db) != NULL);
        if (!damaged || rc == 0)
                fprintf(stderr, "damaged file: rc %d, message: %s\n", rc, err);
        /* The check changed nothing in the file. */
        CHECK_INT(util_sha256_file(db, after), 0);
        CHECK_STR(after, before);

        /*
         * A healthy queue that another process holds locked is not damaged: it
         * cannot be opened now, but it must never be taken for a damaged file
         * (ferryd sets damaged files aside and quarantines the whole spool).
         */
        st = open_store("locked.db");
        store_close(st);
        snprintf(db, sizeof(db), "%s", tmp_path("locked.db"));
        CHECK_INT(sqlite3_open(db, &h), SQLITE_OK);
        CHECK_INT(sqlite3_exec(h,
                               "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; "
                               "INSERT INTO meta(key, value) VALUES ('held', 'by another process')",
                               NULL, NULL, NULL),
                  SQLITE_OK);
        st = NULL;
        damaged = false;
        err[0] = '\0';
        rc = store_open(&st, db, true, &damaged, err, sizeof(err));
        /* Bug: store_check() takes any failure to run quick_check ("database is
         * locked") for damage and sets *damaged. */
        CHECK(!damaged);
        if (damaged)
                fprintf(stderr, "a locked, healthy queue was reported damaged: rc %d, \"%s\"\n", rc,
                        err);
        store_close(st);
        sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(h);
        st = NULL;
        damaged = true;
        CHECK_INT(store_open(&st, db, true, &damaged, err, sizeof(err)), 0);
        CHECK(!damaged);
        store_close(st);
}

/* ---- tests: experiments, transactions, jobs ------------------------------- */

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
        store_rollback(st); /* no transaction: harmless */

        /* Savepoints: one rolled back alone inside a transaction that commits. */
        CHECK_INT(store_begin(st), 0);
        CHECK_INT(store_savepoint(st), 0);
        CHECK_INT(store_experiment_insert(st, KEY2, "w2", "p2", NULL), 0);
        CHECK_INT(store_release(st), 0);
        CHECK_INT(store_savepoint(st), 0);
        CHECK_INT(store_experiment_insert(st, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "w3", "p3", NULL),
                  0);
        store_rollback_savepoint(st);
        CHECK_INT(store_commit(st), 0);
        CHECK_INT(store_experiment_get(st, KEY2, NULL, &proj), 0);
        CHECK_STR(proj, "p2");
        free(proj);
        CHECK_INT(store_experiment_get(st, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, NULL),
                  FERRY_ENOTFOUND);
        /* A second BEGIN inside a transaction is an error, not a crash. */
        CHECK_INT(store_begin(st), 0);
        CHECK(store_begin(st) < 0);
        store_rollback(st);
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
        job.token = "00112233445566778899aabbccddeeff";
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
        job.next_attempt_ms = 12345;       /* likewise: due at once */
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
                CHECK_STR(got->token, "00112233445566778899aabbccddeeff");
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
                CHECK_INT(got->next_attempt_ms, 0);
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
        /* The asset count is kept with the job (ls shows it without counting rows). */
        CHECK_INT(query_int(tmp_path("jobs.db"), "SELECT nassets FROM jobs WHERE id = 1"), 2);

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
        {
                char state[16] = "";

                CHECK_INT(store_job_state(st, id, state, sizeof(state)), 0);
                CHECK_STR(state, "queued");
                CHECK_INT(store_job_state(st, 999, state, sizeof(state)), FERRY_ENOTFOUND);
        }

        /* A job must belong to a known experiment (foreign key). */
        job.experiment = KEY2;
        id2 = -1;
        CHECK(store_job_insert(st, &job, &id2) < 0);
        store_close(st);
}

/* ---- tests: lanes and due versions ---------------------------------------- */

static void test_lanes(void)
{
        struct store *st = open_store("lanes.db");
        char db[600];
        struct job *job = NULL;
        int64_t a1, a2, a3, b1, c1, d1, d2, e1;

        snprintf(db, sizeof(db), "%s", tmp_path("lanes.db"));
        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(store_next_due_after(st, 0), -1);
        CHECK_STR(DUE(st, 1000), "");

        a1 = add_job(st, "ws", "a", NULL, NULL, 1, NULL);
        a2 = add_job(st, "ws", "a", NULL, NULL, 1, NULL);
        a3 = add_job(st, "ws", "a", NULL, NULL, 1, NULL);
        b1 = add_job(st, "ws", "b", NULL, NULL, 1, NULL);
        c1 = add_job(st, "ws2", "a", NULL, NULL, 1, NULL); /* same name, other workspace */
        CHECK_DERIVED(db);

        /* Only the head of a lane is due; other artifacts run in parallel. */
        CHECK_STR(DUE(st, 1000),
                  ids_str("%lld,%lld,%lld", (long long)a1, (long long)b1, (long long)c1));
        CHECK_STR(due_list(st, 1000, 2, true), ids_str("%lld,%lld", (long long)a1, (long long)b1));
        CHECK_STR(due_list(st, 1000, 0, true), "");

        /* Created on the backend: it stays due (regardless of lane) and the next one heads. */
        CHECK_INT(store_job_set_created(st, a1, "rv-a1", NULL), 0);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000), ids_str("%lld,%lld,%lld,%lld", (long long)a1, (long long)a2,
                                         (long long)b1, (long long)c1));
        CHECK_INT(store_job_load(st, a1, &job), 0);
        if (job != NULL)
                CHECK_STR(job->remote_version_id, "rv-a1");
        job_free(job);
        job = NULL;

        /* Delivered: gone from the due list; the lane is unchanged. */
        CHECK_INT(store_job_set_done(st, a1, "1.0.0"), 0);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000),
                  ids_str("%lld,%lld,%lld", (long long)a2, (long long)b1, (long long)c1));

        /* A failed head no longer holds its lane: the next version heads it. */
        CHECK_INT(store_job_set_failed(st, a2, "backend_error", "refused"), 0);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000),
                  ids_str("%lld,%lld,%lld", (long long)a3, (long long)b1, (long long)c1));

        /* Retried, the older failed version heads its lane again. */
        CHECK_INT(store_job_requeue(st, a2), 1);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000),
                  ids_str("%lld,%lld,%lld", (long long)a2, (long long)b1, (long long)c1));

        /* The head backs off: not due before its time, and its lane waits behind it. */
        CHECK_INT(store_job_reschedule(st, a2, 1, 5000, "timeout", "slow"), 0);
        CHECK_DERIVED(db);
        CHECK_STR(query_str(db, "SELECT job || '@' || next_attempt_ms FROM heads WHERE "
                                "workspace = 'ws' AND name = 'a'"),
                  ids_str("%lld@5000", (long long)a2));
        CHECK_STR(DUE(st, 1000), ids_str("%lld,%lld", (long long)b1, (long long)c1));
        CHECK_STR(DUE(st, 4999), ids_str("%lld,%lld", (long long)b1, (long long)c1));
        CHECK_STR(DUE(st, 5000),
                  ids_str("%lld,%lld,%lld", (long long)a2, (long long)b1, (long long)c1));
        CHECK_INT(store_next_due_after(st, 1000), 5000);
        CHECK_INT(store_next_due_after(st, 5000), -1);
        CHECK_INT(store_job_set_done(st, b1, "1.0.0"), 0);
        CHECK_INT(store_job_set_done(st, c1, "1.0.0"), 0);
        CHECK_STR(DUE(st, 4999), "");
        CHECK_INT(store_next_due_after(st, 0), 5000);

        /* Created while backing off: due by its own time, and the lane moves on at once. */
        CHECK_INT(store_job_set_created(st, a2, "rv-a2", "2.0.0"), 0);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000), ids_str("%lld", (long long)a3));
        CHECK_STR(due_list(st, 5000, 10, false),
                  ids_str("%lld,%lld", (long long)a3, (long long)a2));
        CHECK_INT(store_next_due_after(st, 1000), 5000);
        CHECK_INT(store_job_reschedule(st, a2, 2, 7000, "timeout", "slow"), 0);
        CHECK_INT(store_next_due_after(st, 1000), 7000);
        CHECK_DERIVED(db);

        /* A created version that failed and is retried is due again, whatever its lane. */
        CHECK_INT(store_job_set_failed(st, a2, "backend_error", "x"), 0);
        CHECK_STR(DUE(st, 10000), ids_str("%lld", (long long)a3));
        CHECK_INT(store_job_requeue(st, a2), 1);
        CHECK_DERIVED(db);
        CHECK_STR(DUE(st, 1000), ids_str("%lld,%lld", (long long)a2, (long long)a3));

        /* Most overdue first across both kinds, then by id; `max` keeps the first. */
        d1 = add_job(st, "ws", "d", NULL, NULL, 1, NULL);
        e1 = add_job(st, "ws", "e", NULL, NULL, 1, NULL);
        CHECK_INT(store_job_reschedule(st, a2, 1, 400, NULL, NULL), 0); /* created */
        CHECK_INT(store_job_reschedule(st, a3, 1, 300, NULL, NULL), 0); /* head */
        CHECK_INT(store_job_reschedule(st, d1, 1, 200, NULL, NULL), 0);
        CHECK_INT(store_job_reschedule(st, e1, 1, 100, NULL, NULL), 0);
        CHECK_DERIVED(db);
        CHECK_STR(due_list(st, 1000, 10, false),
                  ids_str("%lld,%lld,%lld,%lld", (long long)e1, (long long)d1, (long long)a3,
                          (long long)a2));
        CHECK_STR(due_list(st, 1000, 2, false), ids_str("%lld,%lld", (long long)e1, (long long)d1));
        CHECK_STR(due_list(st, 250, 10, false), ids_str("%lld,%lld", (long long)e1, (long long)d1));
        CHECK_INT(store_next_due_after(st, 0), 100);
        CHECK_INT(store_next_due_after(st, 250), 300);
        CHECK_INT(store_next_due_after(st, 350), 400);

        /* A version behind the head that backs off keeps its time when it heads the lane. */
        d2 = add_job(st, "ws", "d", NULL, NULL, 1, NULL);
        CHECK_INT(store_job_reschedule(st, d2, 1, 800, NULL, NULL), 0);
        CHECK_STR(query_str(db, "SELECT job || '@' || next_attempt_ms FROM heads WHERE name = 'd'"),
                  ids_str("%lld@200", (long long)d1));
        CHECK_INT(store_job_set_done(st, d1, NULL), 0);
        CHECK_STR(query_str(db, "SELECT job || '@' || next_attempt_ms FROM heads WHERE name = 'd'"),
                  ids_str("%lld@800", (long long)d2));
        CHECK_DERIVED(db);
        CHECK_INT(store_job_set_done(st, e1, NULL), 0);
        CHECK_INT(store_job_set_done(st, a3, NULL), 0);
        CHECK_INT(store_job_set_done(st, a2, NULL), 0);
        CHECK_DERIVED(db);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM heads"), 1);
        store_close(st);
}

/* ---- tests: steps, attempts, stats ---------------------------------------- */

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

        /* set_created records the version id; a NULL assigned version keeps the old one. */
        CHECK_INT(store_job_set_created(st, j1, "rv-1", "3.0.0"), 0);
        CHECK_INT(store_job_set_created(st, j1, "rv-2", NULL), 0);
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
        if (job != NULL) {
                CHECK_INT(job->attempts, 3);
                CHECK_INT(job->next_attempt_ms, 777);
        }
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
        /* A delivered job is final: no step changes it. */
        CHECK_INT(store_job_set_failed(st, j2, "x", "late failure"), 0);
        CHECK_INT(store_job_reschedule(st, j2, 9, 99, "x", "late retry"), 0);
        it = list_item(st, j2);
        CHECK_STR(item_str(it, "state"), "done");
        CHECK_INT(item_num(it, "attempts"), 3);
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
        CHECK_INT(job_attempts(st, j3), 0);
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
        CHECK_DERIVED(tmp_path("steps.db"));
        store_close(st);
}

static void test_attempts_reset(void)
{
        struct store *st = open_store("attempts.db");
        struct job_asset assets[2];
        struct job job;
        int64_t id = -1;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        memset(&job, 0, sizeof(job));
        memset(assets, 0, sizeof(assets));
        job.token = "ffeeddccbbaa99887766554433221100";
        job.experiment = KEY1;
        job.workspace = "ws";
        job.project = "proj";
        job.name = "m";
        job.type = "model";
        job.aliases = "[]";
        job.tags = "[]";
        assets[0].logical_path = "a";
        assets[0].spool = SPOOL1;
        assets[1].logical_path = "b";
        assets[1].spool = SPOOL2;
        job.assets = assets;
        job.nassets = 2;
        CHECK_INT(store_job_insert(st, &job, &id), 0);

        /* Retries count per step: a step that succeeds starts the count over. */
        CHECK_INT(store_job_reschedule(st, id, 4, 0, "timeout", "t"), 0);
        CHECK_INT(job_attempts(st, id), 4);
        CHECK_INT(store_job_set_created(st, id, "rv", NULL), 0);
        CHECK_INT(job_attempts(st, id), 0);
        CHECK_INT(store_job_reschedule(st, id, 2, 0, "timeout", "t"), 0);
        CHECK_INT(job_attempts(st, id), 2);
        CHECK_INT(store_asset_set_done(st, id, 0), 0);
        CHECK_INT(job_attempts(st, id), 0);
        CHECK_INT(store_job_reschedule(st, id, 3, 0, "timeout", "t"), 0);
        CHECK_INT(store_asset_set_done(st, id, 1), 0);
        CHECK_INT(job_attempts(st, id), 0);
        CHECK_INT(query_int(tmp_path("attempts.db"), "SELECT SUM(done) FROM assets"), 2);
        store_close(st);
}

static void check_counts(struct store *st, long long queued, long long failed, long long done,
                         long long bytes_queued, long long bytes_held, int line)
{
        struct store_counts c;

        memset(&c, 0xff, sizeof(c));
        if (store_counts(st, &c) != 0 || c.queued != queued || c.failed != failed ||
            c.done != done || c.bytes_queued != bytes_queued || c.bytes_held != bytes_held) {
                fprintf(stderr,
                        "%s:%d: counts: queued %lld failed %lld done %lld bytes_queued %lld "
                        "bytes_held %lld; expected %lld %lld %lld %lld %lld\n",
                        __FILE__, line, (long long)c.queued, (long long)c.failed, (long long)c.done,
                        (long long)c.bytes_queued, (long long)c.bytes_held, queued, failed, done,
                        bytes_queued, bytes_held);
                check_failures++;
        }
}
#define CHECK_COUNTS(st, q, f, d, bq, bh) check_counts((st), (q), (f), (d), (bq), (bh), __LINE__)

static void test_stats(void)
{
        struct store *st = open_store("stats.db");
        char db[600];
        int64_t j1, j2, j3, j4;

        snprintf(db, sizeof(db), "%s", tmp_path("stats.db"));
        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_COUNTS(st, 0, 0, 0, 0, 0);
        j1 = add_job(st, "ws", "a", NULL, NULL, 1, SPOOL1);
        j2 = add_job(st, "ws", "a", NULL, NULL, 10, SPOOL2);
        j3 = add_job(st, "ws", "b", NULL, NULL, 100, SPOOL3);
        j4 = add_job(st, "ws", "c", NULL, NULL, 1000, NULL);
        CHECK_COUNTS(st, 4, 0, 0, 1111, 1111);
        CHECK_INT(store_job_set_done(st, j1, NULL), 0);
        CHECK_COUNTS(st, 3, 0, 1, 1110, 1110);
        CHECK_INT(store_job_set_failed(st, j2, "x", "x"), 0);
        CHECK_COUNTS(st, 2, 1, 1, 1100, 1110);
        /* Steps that do not change the state do not change the counts. */
        CHECK_INT(store_job_reschedule(st, j3, 1, 5, "x", "x"), 0);
        CHECK_INT(store_job_set_created(st, j3, "rv", NULL), 0);
        CHECK_INT(store_job_set_done(st, j1, NULL), 0); /* already done */
        CHECK_COUNTS(st, 2, 1, 1, 1100, 1110);
        CHECK_INT(store_job_requeue(st, j2), 1);
        CHECK_COUNTS(st, 3, 0, 1, 1110, 1110);
        CHECK_INT(store_job_set_failed(st, j4, "x", "x"), 0);
        CHECK_INT(store_job_set_done(st, j3, NULL), 0);
        CHECK_COUNTS(st, 1, 1, 2, 10, 1010);
        CHECK_INT(store_job_requeue(st, -1), 1);
        CHECK_COUNTS(st, 2, 0, 2, 1010, 1010);
        CHECK_DERIVED(db);
        CHECK_INT(store_prune_done(st, util_now_ms() + 60000, 100), 2);
        CHECK_COUNTS(st, 2, 0, 0, 1010, 1010);
        CHECK_STR(
            query_str(db, "SELECT state || ':' || jobs || ':' || bytes FROM stats ORDER BY 1"),
            "cancelled:0:0,done:0:0,failed:0:0,queued:2:1010");
        /* A rolled-back insert leaves the counts as they were. */
        CHECK_INT(store_begin(st), 0);
        add_job(st, "ws", "z", NULL, NULL, 7, NULL);
        CHECK_COUNTS(st, 3, 0, 0, 1017, 1017);
        store_rollback(st);
        CHECK_COUNTS(st, 2, 0, 0, 1010, 1010);
        CHECK_DERIVED(db);
        store_close(st);
}

/* ---- tests: look-ups, ls, errors, pruning --------------------------------- */

static void test_pending_queries(void)
{
        struct store *st = open_store("pending.db");
        int64_t p1, p2, p3, p4, o1;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        p1 = add_job(st, "ws", "m", "1.0.0", "[\"best\",\"Stable\"]", 1, NULL);
        p2 = add_job(st, "ws", "m", NULL, "[\"prod\"]", 1, NULL);
        p3 = add_job(st, "ws", "m", NULL, "[\"best\"]", 1, NULL);
        p4 = add_job(st, "ws", "m", "2.0.0", "[\"old\"]", 1, NULL);
        o1 = add_job(st, "ws", "other", "1.0.0", "[]", 1, NULL);
        CHECK_INT(store_job_set_failed(st, p4, "x", "x"), 0);

        /* version_pending: queued or failed jobs asking for that exact version. */
        CHECK(store_version_pending(st, "ws", "m", "1.0.0"));
        CHECK(store_version_pending(st, "ws", "m", "2.0.0")); /* failed counts */
        CHECK(!store_version_pending(st, "ws", "m", "3.0.0"));
        CHECK(!store_version_pending(st, "ws2", "m", "1.0.0"));
        CHECK(!store_version_pending(st, "ws", "M", "1.0.0"));
        CHECK_INT(store_job_set_done(st, o1, NULL), 0);
        CHECK(!store_version_pending(st, "ws", "other", "1.0.0")); /* done does not */

        /* find_pending: the newest job still held here (queued or parked) by version, alias,
         * or any. */
        CHECK_INT(store_find_pending(st, "ws", "m", "1.0.0"), p1); /* requested version */
        CHECK_INT(store_find_pending(st, "ws", "m", "prod"), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "best"), p3); /* newest of p1 and p3 */
        CHECK_INT(store_find_pending(st, "ws", "m", NULL), p4);   /* parked, still held */
        CHECK_INT(store_find_pending(st, "ws", "m", "latest"), p4);
        CHECK_INT(store_find_pending(st, "ws", "m", "LaTeSt"), p4);
        /* An alias ignoring case only when no alias matches exactly. */
        CHECK_INT(store_find_pending(st, "ws", "m", "Stable"), p1);
        CHECK_INT(store_find_pending(st, "ws", "m", "stable"), p1);
        CHECK_INT(store_find_pending(st, "ws", "m", "PROD"), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "Best"), p3);  /* loose: the newest */
        CHECK_INT(store_find_pending(st, "ws", "m", "2.0.0"), p4); /* parked: readable here */
        CHECK_INT(store_find_pending(st, "ws", "m", "old"), p4);
        CHECK_INT(store_find_pending(st, "ws", "m", "nope"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "bes"), 0);
        CHECK_INT(store_find_pending(st, "ws2", "m", NULL), 0);
        CHECK_INT(store_find_pending(st, "ws", "other", NULL), 0); /* done */
        /* The version the backend assigned. */
        CHECK_INT(store_find_pending(st, "ws", "m", "4.0.0"), 0);
        CHECK_INT(store_job_set_created(st, p2, "rv-2", "4.0.0"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "4.0.0"), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "prod"), p2);
        CHECK_INT(store_job_set_done(st, p3, "5.0.0"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", "best"), p1);
        CHECK_INT(store_find_pending(st, "ws", "m", NULL), p4);
        CHECK_INT(store_job_requeue(st, p4), 1); /* one job requeued */
        CHECK_INT(store_job_set_done(st, p4, "2.0.0"), 0);
        CHECK_INT(store_find_pending(st, "ws", "m", NULL), p2);
        CHECK_INT(store_find_pending(st, "ws", "m", "5.0.0"), 0); /* delivered */
        store_close(st);
}

/* Bytes store_list counts for the newest `k` items of `items` (an unbounded list). */
static size_t newest_items_bytes(const cJSON *items, int k)
{
        int n = cJSON_GetArraySize(items), i;
        size_t total = 0;

        for (i = n - 1; i >= 0 && i >= n - k; i--) {
                char *text = cJSON_PrintUnformatted(cJSON_GetArrayItem(items, i));

                total += text ? strlen(text) + 1 : 0;
                cJSON_free(text);
        }
        return total;
}

static void test_counts_and_list(void)
{
        struct store *st = open_store("counts.db");
        int64_t ids[6];
        cJSON *items, *all, *it;
        bool truncated = false;
        size_t two;
        int i;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
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
        /* states: 0 queued, 1 failed, 2 queued, 3 failed, 4 done, 5 queued */
        CHECK_INT(store_job_set_failed(st, ids[3], "c", "failure three"), 0);
        CHECK_INT(store_job_set_failed(st, ids[1], "c", "failure one"), 0);
        CHECK_INT(store_job_set_done(st, ids[4], "1.0.0"), 0);
        CHECK_COUNTS(st, 3, 2, 1, 0x1 + 0x100 + 0x100000, 0x1 + 0x100 + 0x100000 + 0x10 + 0x1000);

        /* ls: by state, oldest first; with a limit, the newest `limit` items. */
        CHECK_STR(list_ids(st, "all", 100),
                  ids_str("%lld,%lld,%lld,%lld,%lld,%lld", (long long)ids[0], (long long)ids[1],
                          (long long)ids[2], (long long)ids[3], (long long)ids[4],
                          (long long)ids[5]));
        /* active merges the queued and failed walks by id. */
        CHECK_STR(list_ids(st, "active", 100),
                  ids_str("%lld,%lld,%lld,%lld,%lld", (long long)ids[0], (long long)ids[1],
                          (long long)ids[2], (long long)ids[3], (long long)ids[5]));
        CHECK_STR(list_ids(st, "active", 3), ids_str("%lld,%lld,%lld", (long long)ids[2],
                                                     (long long)ids[3], (long long)ids[5]));
        CHECK_STR(list_ids(st, "active", 2),
                  ids_str("%lld,%lld", (long long)ids[3], (long long)ids[5]));
        CHECK_STR(list_ids(st, "active", 1), ids_str("%lld", (long long)ids[5]));
        CHECK_STR(list_ids(st, "queued", 100), ids_str("%lld,%lld,%lld", (long long)ids[0],
                                                       (long long)ids[2], (long long)ids[5]));
        CHECK_STR(list_ids(st, "failed", 100),
                  ids_str("%lld,%lld", (long long)ids[1], (long long)ids[3]));
        CHECK_STR(list_ids(st, "done", 100), ids_str("%lld", (long long)ids[4]));
        CHECK_STR(list_ids(st, "cancelled", 100), "");
        CHECK_STR(list_ids(st, "all", 2),
                  ids_str("%lld,%lld", (long long)ids[4], (long long)ids[5]));
        CHECK_STR(list_ids(st, "bogus", 100), "");
        CHECK_STR(list_ids(st, "all", 0), "");
        CHECK_STR(list_ids(st, "active", 0), "");

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

        /* A byte bound keeps the newest items that fit, still oldest first, and says so. */
        truncated = false;
        all = store_list(st, "all", 10, 0, &truncated);
        CHECK_INT(cJSON_GetArraySize(all), 6);
        two = newest_items_bytes(all, 2);
        cJSON_Delete(all);
        truncated = false;
        items = store_list(st, "all", 10, two, &truncated);
        CHECK(truncated);
        CHECK_INT(cJSON_GetArraySize(items), 2);
        CHECK_INT(item_num(cJSON_GetArrayItem(items, 0), "job"), ids[4]);
        CHECK_INT(item_num(cJSON_GetArrayItem(items, 1), "job"), ids[5]);
        cJSON_Delete(items);
        truncated = false;
        items = store_list(st, "all", 10, two - 1, &truncated);
        CHECK(truncated);
        CHECK_INT(cJSON_GetArraySize(items), 1);
        CHECK_INT(item_num(cJSON_GetArrayItem(items, 0), "job"), ids[5]);
        cJSON_Delete(items);
        truncated = false;
        items = store_list(st, "all", 10, 1, &truncated);
        CHECK(truncated);
        CHECK_INT(cJSON_GetArraySize(items), 0);
        cJSON_Delete(items);
        truncated = false;
        items = store_list(st, "active", 10, 1u << 20, &truncated);
        CHECK(!truncated);
        CHECK_INT(cJSON_GetArraySize(items), 5);
        cJSON_Delete(items);
        /* The limit, not the bound, leaves items out: not truncated. */
        truncated = false;
        items = store_list(st, "all", 2, 1u << 20, &truncated);
        CHECK(!truncated);
        CHECK_INT(cJSON_GetArraySize(items), 2);
        cJSON_Delete(items);
        store_close(st);
}

static void test_errors(void)
{
        struct store *st = open_store("errors.db");
        int64_t j1, j2, j3;
        cJSON *errs;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        j1 = add_job(st, "ws", "one", NULL, NULL, 1, NULL);
        j2 = add_job(st, "ws", "two", NULL, NULL, 1, NULL);
        j3 = add_job(st, "ws", "three", NULL, NULL, 1, NULL);
        errs = store_errors(st, 10);
        CHECK_INT(cJSON_GetArraySize(errs), 0);
        cJSON_Delete(errs);
        /* Newest failure first, whatever the ids. */
        CHECK_INT(store_job_set_failed(st, j3, "c3", "third failed first"), 0);
        sleep_ms(3);
        CHECK_INT(store_job_set_failed(st, j1, "c1", "first failed second"), 0);
        sleep_ms(3);
        CHECK_INT(store_job_set_failed(st, j2, "c2", "second failed last"), 0);
        errs = store_errors(st, 10);
        CHECK_INT(cJSON_GetArraySize(errs), 3);
        CHECK_INT(item_num(cJSON_GetArrayItem(errs, 0), "job"), j2);
        CHECK_INT(item_num(cJSON_GetArrayItem(errs, 1), "job"), j1);
        CHECK_INT(item_num(cJSON_GetArrayItem(errs, 2), "job"), j3);
        CHECK_STR(item_str(cJSON_GetArrayItem(errs, 0), "code"), "c2");
        CHECK_STR(item_str(cJSON_GetArrayItem(errs, 0), "message"), "second failed last");
        CHECK_STR(item_str(cJSON_GetArrayItem(errs, 2), "name"), "three");
        cJSON_Delete(errs);
        errs = store_errors(st, 1);
        CHECK_INT(cJSON_GetArraySize(errs), 1);
        CHECK_INT(item_num(cJSON_GetArrayItem(errs, 0), "job"), j2);
        cJSON_Delete(errs);
        /* A retried job leaves the list. */
        CHECK_INT(store_job_requeue(st, j1), 1);
        errs = store_errors(st, 10);
        CHECK_INT(cJSON_GetArraySize(errs), 2);
        CHECK_INT(item_num(cJSON_GetArrayItem(errs, 1), "job"), j3);
        cJSON_Delete(errs);
        store_close(st);
}

static void test_prune(void)
{
        struct store *st = open_store("prune.db");
        struct job *job = NULL;
        int64_t q, f, d1, d2, d3, c1;
        char db[600], sql[512];

        snprintf(db, sizeof(db), "%s", tmp_path("prune.db"));
        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        q = add_job(st, "ws", "q", NULL, NULL, 5, SPOOL1);
        f = add_job(st, "ws", "f", NULL, NULL, 5, SPOOL2);
        d1 = add_job(st, "ws", "d", NULL, NULL, 5, SPOOL3);
        d2 = add_job(st, "ws", "e", NULL, NULL, 5, NULL);
        d3 = add_job(st, "ws", "g", NULL, NULL, 5, SPOOL4);
        c1 = add_job(st, "ws", "h", NULL, NULL, 5, SPOOL5);
        CHECK_INT(store_job_set_failed(st, f, "x", "x"), 0);
        CHECK_INT(store_job_set_done(st, d1, NULL), 0);
        CHECK_INT(store_job_set_done(st, d2, NULL), 0);
        CHECK_INT(store_job_set_done(st, d3, NULL), 0);
        /* Finish times set by hand; c1 cancelled (no store function does that yet). */
        snprintf(sql, sizeof(sql),
                 "UPDATE jobs SET done_ms = 100 WHERE id = %lld; UPDATE jobs SET done_ms = 1000 "
                 "WHERE id = %lld; UPDATE jobs SET done_ms = 2000 WHERE id = %lld; UPDATE jobs "
                 "SET done_ms = 9000 WHERE id = %lld; UPDATE jobs SET state = 'cancelled', "
                 "done_ms = 1500 WHERE id = %lld",
                 (long long)f, (long long)d1, (long long)d2, (long long)d3, (long long)c1);
        CHECK_INT(exec_sql(db, sql), SQLITE_OK);
        CHECK_DERIVED(db);
        CHECK_INT(query_int(db, "SELECT jobs FROM stats WHERE state = 'cancelled'"), 1);

        /* Nothing finished before the cut-off: nothing goes. */
        CHECK_INT(store_prune_done(st, 1000, 100), 0);
        /* At most `max` per call; only done and cancelled ones older than the cut-off. */
        CHECK_INT(store_prune_done(st, 5000, 2), 2);
        CHECK_INT(store_prune_done(st, 5000, 2), 1);
        CHECK_INT(store_prune_done(st, 5000, 2), 0);
        CHECK_INT(store_job_load(st, d1, &job), FERRY_ENOTFOUND);
        CHECK_INT(store_job_load(st, d2, &job), FERRY_ENOTFOUND);
        CHECK_INT(store_job_load(st, c1, &job), FERRY_ENOTFOUND);
        CHECK_INT(store_job_load(st, d3, &job), 0); /* finished after the cut-off */
        job_free(job);
        job = NULL;
        CHECK_INT(store_job_load(st, q, &job), 0);
        job_free(job);
        job = NULL;
        CHECK_INT(store_job_load(st, f, &job), 0); /* failed is not history, however old */
        job_free(job);
        CHECK_COUNTS(st, 1, 1, 1, 5, 10);
        CHECK_INT(query_int(db, "SELECT jobs FROM stats WHERE state = 'cancelled'"), 0);
        CHECK_DERIVED(db);
        /* Their assets went with them (ON DELETE CASCADE). */
        CHECK_STR(query_str(db, "SELECT spool FROM assets ORDER BY spool"),
                  SPOOL1 "," SPOOL2 "," SPOOL4);
        CHECK_INT(store_prune_done(st, 10000, 10), 1);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM assets"), 2);
        store_close(st);
}

static void collect_name(void *data, const char *name)
{
        char *buf = data;
        size_t off = strlen(buf);

        snprintf(buf + off, 1024 - off, "%s%s", off ? "," : "", name);
}

static int cmp_csv(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort a comma-separated list in place. */
static const char *sorted_csv(char *csv)
{
        static char out[1024];
        char *parts[64], *tok, *save = NULL;
        size_t n = 0, off = 0, i;

        for (tok = strtok_r(csv, ",", &save); tok != NULL && n < 64;
             tok = strtok_r(NULL, ",", &save))
                parts[n++] = tok;
        qsort(parts, n, sizeof(parts[0]), cmp_csv);
        out[0] = '\0';
        for (i = 0; i < n; i++)
                off +=
                    (size_t)snprintf(out + off, sizeof(out) - off, "%s%s", i ? "," : "", parts[i]);
        return out;
}

static void test_held_spool(void)
{
        struct store *st = open_store("held.db");
        struct job_asset assets[3];
        struct job job;
        char names[1024] = "", state[16];
        int64_t q, f, d, multi = -1, created;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(store_each_held_spool(st, collect_name, names), 0);
        CHECK_STR(names, "");
        q = add_job(st, "ws", "q", NULL, NULL, 5, SPOOL1);
        f = add_job(st, "ws", "f", NULL, NULL, 5, SPOOL2);
        d = add_job(st, "ws", "d", NULL, NULL, 5, SPOOL3);
        created = add_job(st, "ws", "c", NULL, NULL, 5, SPOOL6);
        /* Two files and a remote asset (no spool file). */
        memset(&job, 0, sizeof(job));
        memset(assets, 0, sizeof(assets));
        job.token = "0123456789abcdef0123456789abcdef";
        job.experiment = KEY1;
        job.workspace = "ws";
        job.project = "proj";
        job.name = "multi";
        job.type = "model";
        job.aliases = "[]";
        job.tags = "[]";
        assets[0].logical_path = "x";
        assets[0].spool = SPOOL5;
        assets[1].logical_path = "link";
        assets[1].remote = true;
        assets[1].uri = "s3://b/k";
        assets[2].logical_path = "y";
        assets[2].spool = SPOOL4;
        job.assets = assets;
        job.nassets = 3;
        CHECK_INT(store_job_insert(st, &job, &multi), 0);
        CHECK_INT(store_job_set_failed(st, f, "x", "x"), 0);
        CHECK_INT(store_job_set_done(st, d, NULL), 0);
        CHECK_INT(store_job_set_created(st, created, "rv", NULL), 0);

        /* Exactly the files of queued and failed versions. */
        CHECK_INT(store_each_held_spool(st, collect_name, names), 0);
        CHECK_STR(sorted_csv(names), SPOOL1 "," SPOOL2 "," SPOOL4 "," SPOOL5 "," SPOOL6);

        CHECK_INT(store_spool_owner(st, SPOOL1, state, sizeof(state)), 0);
        CHECK_STR(state, "queued");
        CHECK_INT(store_spool_owner(st, SPOOL2, state, sizeof(state)), 0);
        CHECK_STR(state, "failed");
        CHECK_INT(store_spool_owner(st, SPOOL3, state, sizeof(state)), 0);
        CHECK_STR(state, "done");
        CHECK_INT(store_spool_owner(st, SPOOL4, state, sizeof(state)), 0);
        CHECK_STR(state, "queued");
        CHECK_INT(store_spool_owner(st, "77777777777777777777777777777777", state, sizeof(state)),
                  FERRY_ENOTFOUND);
        /* A delivered version's files are no longer held; pruned, they have no owner. */
        CHECK_INT(store_job_set_done(st, q, NULL), 0);
        names[0] = '\0';
        CHECK_INT(store_each_held_spool(st, collect_name, names), 0);
        CHECK_STR(sorted_csv(names), SPOOL2 "," SPOOL4 "," SPOOL5 "," SPOOL6);
        CHECK_INT(store_prune_done(st, util_now_ms() + 60000, 100), 2);
        CHECK_INT(store_spool_owner(st, SPOOL3, state, sizeof(state)), FERRY_ENOTFOUND);
        CHECK_INT(store_spool_owner(st, SPOOL1, state, sizeof(state)), FERRY_ENOTFOUND);
        CHECK(multi > 0);
        store_close(st);
}

/* ---- tests: query plans --------------------------------------------------- */

/* Is this EXPLAIN QUERY PLAN line a full scan of jobs or assets (by name or alias)? */
static bool plan_full_scan(const char *d)
{
        static const char *const tables[] = {"jobs", "j", "assets", "a"};
        const char *t;
        size_t len, i;

        if (strncmp(d, "SCAN ", 5) != 0)
                return false;
        t = d + 5;
        if (strncmp(t, "TABLE ", 6) == 0) /* SQLite before 3.36: "SCAN TABLE jobs AS j" */
                t += 6;
        len = strcspn(t, " ");
        for (i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
                if (len == strlen(tables[i]) && strncmp(t, tables[i], len) == 0)
                        break;
        if (i == sizeof(tables) / sizeof(tables[0]))
                return false;
        return strstr(d, "USING INDEX") == NULL && strstr(d, "USING COVERING INDEX") == NULL &&
               strstr(d, "USING INTEGER PRIMARY KEY") == NULL &&
               strstr(d, "USING PRIMARY KEY") == NULL;
}

static bool reads_jobs(const char *sql)
{
        return strstr(sql, "jobs") != NULL;
}

/*
 * Check one statement's plan: no full scan of jobs or assets (unless
 * `allow_scan`), no temporary B-tree to sort jobs. 1 if it offends (the plan
 * is printed), 0 if not, -1 if it cannot be explained.
 */
static int plan_check(sqlite3 *h, const char *what, const char *sql, bool allow_scan)
{
        char plan[4096] = "", *q;
        sqlite3_stmt *s = NULL;
        size_t off = 0;
        bool bad = false;

        q = malloc(strlen(sql) + 32);
        if (q == NULL)
                return -1;
        sprintf(q, "EXPLAIN QUERY PLAN %s", sql);
        if (sqlite3_prepare_v2(h, q, -1, &s, NULL) != SQLITE_OK) {
                fprintf(stderr, "cannot explain %s \"%s\": %s\n", what, sql, sqlite3_errmsg(h));
                free(q);
                return -1;
        }
        free(q);
        while (sqlite3_step(s) == SQLITE_ROW) {
                const char *d = (const char *)sqlite3_column_text(s, 3);

                if (d == NULL)
                        continue;
                if ((plan_full_scan(d) && !allow_scan) ||
                    (strstr(d, "TEMP B-TREE") != NULL && strstr(d, "ORDER BY") != NULL &&
                     reads_jobs(sql)))
                        bad = true;
                if (off < sizeof(plan))
                        off += (size_t)snprintf(plan + off, sizeof(plan) - off, "    %s\n", d);
        }
        sqlite3_finalize(s);
        if (bad)
                fprintf(stderr, "%s reads more than it returns:\n  %s\n%s", what, sql, plan);
        return bad ? 1 : 0;
}

/* Replace new.X and old.X in a trigger statement by parameters. */
static void trigger_params(const char *in, char *out, size_t len)
{
        size_t o = 0;
        const char *p = in;

        while (*p != '\0' && o + 2 < len) {
                bool word_start =
                    p == in || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
                                 (p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= '0' && p[-1] <= '9'));

                if (word_start && (strncmp(p, "new.", 4) == 0 || strncmp(p, "old.", 4) == 0)) {
                        p += 4;
                        while (*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
                                p++;
                        out[o++] = '?';
                        continue;
                }
                out[o++] = *p++;
        }
        out[o] = '\0';
}

static void test_query_plans(void)
{
        struct store *st = open_store("plans.db");
        char db[600];
        sqlite3 *h = NULL;
        sqlite3_stmt *s = NULL;
        int i, n = 0, offenders = 0, allowed = 0, triggers = 0;

        snprintf(db, sizeof(db), "%s", tmp_path("plans.db"));
        if (st == NULL)
                return;
        /* Some rows in every state; no ANALYZE (ferryd never runs it). */
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(store_begin(st), 0);
        for (i = 0; i < 300; i++) {
                char name[16];
                int64_t id;

                snprintf(name, sizeof(name), "a%d", i % 7);
                id = add_job(st, "ws", name, i % 5 ? NULL : "1.0.0", NULL, i, SPOOL1);
                if (i % 3 == 0)
                        store_job_set_done(st, id, NULL);
                else if (i % 7 == 0)
                        store_job_set_failed(st, id, "x", "x");
                else if (i % 11 == 0)
                        store_job_set_created(st, id, "rv", NULL);
        }
        CHECK_INT(store_commit(st), 0);
        CHECK_INT(query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"),
                  0);
        CHECK_INT(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        for (i = 0; store_statement_sql[i] != NULL; i++) {
                const char *sql = store_statement_sql[i];
                /*
                 * ls of every state lists the newest ids first: a backwards walk of
                 * the table by rowid ("SCAN j", no sort) that stops after `limit`
                 * rows is the cheapest plan there is, so it alone may scan.
                 */
                bool list_all = strstr(sql, "FROM jobs j ORDER BY j.id DESC LIMIT") != NULL &&
                                strstr(sql, "WHERE") == NULL;
                char what[32];
                int rc;

                snprintf(what, sizeof(what), "store_statement_sql[%d]", i);
                allowed += list_all;
                rc = plan_check(h, what, sql, list_all);
                CHECK(rc >= 0);
                offenders += rc > 0;
                n++;
        }
        CHECK(n >= 30);
        CHECK_INT(allowed, 1);
        /*
         * Bug (daemon/store.c, created_due and errors): without statistics the
         * planner takes jobs_by_state (state, id) and sorts every queued (or
         * failed) job in a temporary B-tree instead of walking jobs_created
         * (next_attempt_ms, id) or jobs_failed (done_ms), which give the order.
         */
        CHECK_INT(offenders, 0);

        /* The statements inside the triggers run on every write: they too use indexes. */
        CHECK_INT(sqlite3_prepare_v2(h,
                                     "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'",
                                     -1, &s, NULL),
                  SQLITE_OK);
        offenders = 0;
        while (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                const char *sql = (const char *)sqlite3_column_text(s, 1);
                const char *body = strstr(sql, "BEGIN"), *end = NULL, *p;
                char stmt[2048], params[2048];

                if (body == NULL)
                        continue;
                for (p = body; (p = strstr(p, "END")) != NULL; p++)
                        end = p;
                body += 5;
                while (end != NULL && body < end) {
                        const char *semi = memchr(body, ';', (size_t)(end - body));
                        size_t len = (size_t)((semi ? semi : end) - body);
                        char what[96];

                        if (len >= sizeof(stmt))
                                len = sizeof(stmt) - 1;
                        memcpy(stmt, body, len);
                        stmt[len] = '\0';
                        body += len + 1;
                        if (strspn(stmt, " \n\t") == strlen(stmt))
                                continue;
                        trigger_params(stmt, params, sizeof(params));
                        snprintf(what, sizeof(what), "trigger %s", name);
                        offenders += plan_check(h, what, params, false) != 0;
                        triggers++;
                }
        }
        sqlite3_finalize(s);
        CHECK(triggers >= 10);
        CHECK_INT(offenders, 0);
        sqlite3_close(h);
        store_close(st);
}

/* ---- tests: cost does not grow with the backlog or with history ---------- */

/* Work of each hot read, in VM steps, with the queue at the size it has now. */
struct hot_cost {
        long long due, next, counts, errors, prune, find, pending, list, load;
};

static void hot_costs(struct store *st, struct hot_cost *c)
{
        int64_t ids[8];
        struct store_counts counts;
        bool truncated = false;
        struct job *job = NULL;
        cJSON *items;

        count_start();
        store_jobs_due(st, 1000, ids, 8);
        c->due = count_stop();
        count_start();
        store_next_due_after(st, 1000);
        c->next = count_stop();
        count_start();
        store_counts(st, &counts);
        c->counts = count_stop();
        count_start();
        items = store_errors(st, 10);
        c->errors = count_stop();
        cJSON_Delete(items);
        /* Nothing is old enough: the prune finds nothing and must not look at everything. */
        count_start();
        store_prune_done(st, 500, 100);
        c->prune = count_stop();
        count_start();
        store_find_pending(st, "ws", "lane0", NULL);
        c->find = count_stop();
        count_start();
        store_version_pending(st, "ws", "lane0", "1.2.3");
        c->pending = count_stop();
        count_start();
        items = store_list(st, "active", 20, 0, &truncated);
        c->list = count_stop();
        cJSON_Delete(items);
        count_start();
        store_job_load(st, 1, &job);
        c->load = count_stop();
        job_free(job);
}

/* Add a backlog and a history of n versions each (and n/10 failures) in 8 lanes. */
static void grow_queue(const char *db, int n, long long first)
{
        struct bulk b;
        int i;

        if (bulk_begin(&b, db) != 0)
                return;
        for (i = 0; i < n; i++) {
                char name[16];

                snprintf(name, sizeof(name), "lane%d", i % 8);
                bulk_job(&b, "ws", name, "queued", 1, 0xa, first + i);
                bulk_job(&b, "ws", name, "done", 1, 0xd, first + i);
                if (i % 10 == 0)
                        bulk_job(&b, "ws", name, "failed", 1, 0xf, first + i);
        }
        bulk_end(&b);
}

static void check_flat(const char *what, long long small, long long big)
{
        /* The same work with twice the rows (a few steps of slack, no more). */
        if (big > small + 8 || small <= 0) {
                fprintf(stderr,
                        "%s: %lld VM steps with a queue of N, %lld with 2N: it reads rows it "
                        "does not return\n",
                        what, small, big);
                check_failures++;
        }
}

static void test_hot_statement_cost(void)
{
        struct hot_cost a, b;
        struct store *st;
        char db[600];
        int i;

        snprintf(db, sizeof(db), "%s", tmp_path("hot.db"));
        st = open_store("hot.db");
        if (st == NULL)
                return;
        store_close(st);
        grow_queue(db, 5000, 0);
        st = open_counted_store(db);
        if (st == NULL)
                return;
        /* A few versions created on the backend, waiting for their assets. */
        for (i = 0; i < 3; i++) {
                char sql[128];

                snprintf(sql, sizeof(sql),
                         "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 OFFSET %d",
                         10 * i);
                CHECK_INT(store_job_set_created(st, query_int(db, sql), "rv", NULL), 0);
        }
        hot_costs(st, &a);
        grow_queue(db, 5000, 100000);
        hot_costs(st, &b);
        CHECK_DERIVED(db);
        /*
         * Bug (daemon/store.c, created_due, created_next, errors, prune): with
         * no statistics the planner prefers jobs_by_state (state, id) to the
         * partial indexes made for these statements, so they read every queued
         * (created_due, created_next), failed (errors) or delivered (prune)
         * job on each call; see also test_query_plans.
         */
        check_flat("store_jobs_due", a.due, b.due);
        check_flat("store_next_due_after", a.next, b.next);
        check_flat("store_counts", a.counts, b.counts);
        check_flat("store_errors", a.errors, b.errors);
        check_flat("store_prune_done (nothing to prune)", a.prune, b.prune);
        check_flat("store_find_pending", a.find, b.find);
        check_flat("store_version_pending", a.pending, b.pending);
        check_flat("store_list active", a.list, b.list);
        check_flat("store_job_load", a.load, b.load);
        store_close(st);
}

/* ---- tests: the start-up spool check is linear ---------------------------- */

/* Create an empty spool-like file `name` in dirfd. */
static int touch_at(int dirfd, const char *name)
{
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

        if (fd < 0)
                return -1;
        close(fd);
        return 0;
}

/*
 * Reconcile `nfiles` held files plus `nleft` leftovers of delivered versions
 * (named bulk_name(0xd, done_first + i)) and `nleft` unknown ones; check the
 * report and return the VM steps it took (or -1).
 */
static long long reconcile_counted(struct store *st, struct spool *sp, long long nfiles, int nleft,
                                   long long done_first, long long unknown_first)
{
        struct recovery_report rep;
        char name[33], err[512] = "";
        int i, bad = 0;
        long long steps;

        for (i = 0; i < nleft; i++) {
                bulk_name(name, 0xd, done_first + i);
                bad |= touch_at(spool_dirfd(sp), name);
                bulk_name(name, 0xe, unknown_first + i);
                bad |= touch_at(spool_dirfd(sp), name);
        }
        CHECK_INT(bad, 0);
        count_start();
        CHECK_INT(recovery_reconcile(st, sp, true, &rep, err, sizeof(err)), 0);
        steps = count_stop();
        if (err[0] != '\0')
                fprintf(stderr, "reconcile: %s\n", err);
        CHECK_INT(rep.kept, nfiles);
        CHECK_INT(rep.removed, nleft);
        CHECK_INT(rep.quarantined, nleft);
        /* Only the leftovers were looked up one by one: the one pass handled the rest. */
        CHECK_INT(rep.looked_up, 2 * nleft);
        for (i = 0; i < nleft; i++) {
                bulk_name(name, 0xd, done_first + i);
                CHECK(faccessat(spool_dirfd(sp), name, F_OK, AT_SYMLINK_NOFOLLOW) != 0);
        }
        if (fullscan_steps != 0) {
                fprintf(stderr, "reconcile: %lld full-scan steps\n", fullscan_steps);
                check_failures++;
        }
        return steps;
}

static void test_startup_linear(void)
{
        char db[600], sdir[600], qdir[600], name[33];
        struct store *st;
        struct spool *sp = NULL;
        struct bulk b;
        uv_loop_t loop;
        char err[512] = "";
        long long s1, s2, s3, i;
        int bad = 0;

        CHECK_INT(uv_loop_init(&loop), 0);

        /* 20,000 queued one-file versions in 8 artifacts, and 20,000 delivered ones. */
        snprintf(db, sizeof(db), "%s", tmp_path("startup.db"));
        snprintf(sdir, sizeof(sdir), "%s", tmp_path("startup/spool"));
        snprintf(qdir, sizeof(qdir), "%s", tmp_path("startup/quarantine"));
        st = open_store("startup.db");
        store_close(st);
        if (bulk_begin(&b, db) != 0)
                goto out;
        for (i = 0; i < 20000; i++) {
                char lane[16];

                snprintf(lane, sizeof(lane), "art%lld", i % 8);
                bulk_job(&b, "ws", lane, "queued", 1, 0xa, i);
                bulk_job(&b, "ws", lane, "done", 1, 0xd, i);
        }
        bulk_end(&b);
        CHECK_DERIVED(db);
        CHECK_INT(util_mkdir_p(tmp_path("startup"), 0700), 0);
        CHECK_INT(spool_open(&sp, &loop, sdir, qdir, 0, 0, err, sizeof(err)), 0);
        if (sp == NULL) {
                fprintf(stderr, "spool_open: %s\n", err);
                goto out;
        }
        for (i = 0; i < 20000; i++) {
                bulk_name(name, 0xa, i);
                bad |= touch_at(spool_dirfd(sp), name);
        }
        CHECK_INT(bad, 0);
        CHECK_INT(touch_at(spool_dirfd(sp), "README"), 0); /* not a spool name: not looked at */

        st = open_counted_store(db);
        if (st == NULL)
                goto out;
        s1 = reconcile_counted(st, sp, 20000, 5, 0, 0);
        if (getenv("FERRY_TEST_VERBOSE"))
                fprintf(stderr, "reconcile 20,000 files: %lld VM steps\n", s1);
        /* Linear in what it checks: a bounded number of steps per file. */
        if (s1 > 30 * (20000 + 10)) {
                fprintf(stderr, "reconcile: %lld VM steps for 20,010 files\n", s1);
                check_failures++;
        }
        /* Twice the history, same queue: the same work (history is never read). */
        bulk_begin(&b, db);
        for (i = 20000; i < 40000; i++)
                bulk_job(&b, "ws", "art0", "done", 1, 0xd, i);
        bulk_end(&b);
        s2 = reconcile_counted(st, sp, 20000, 5, 30000, 100);
        if (getenv("FERRY_TEST_VERBOSE"))
                fprintf(stderr, "with twice the history: %lld VM steps\n", s2);
        if (s2 > s1 + 200) {
                fprintf(stderr,
                        "reconcile: %lld VM steps with 20,000 versions of history, "
                        "%lld with 40,000\n",
                        s1, s2);
                check_failures++;
        }
        CHECK_INT(count_entries(spool_quarantine_folder(sp)), 10);
        CHECK_INT(count_entries(sdir), 20000 + 1); /* and README */
        store_close(st);
        spool_close(sp);
        sp = NULL;

        /* One version with 20,000 files, over 20,000 delivered versions. */
        snprintf(db, sizeof(db), "%s", tmp_path("startup2.db"));
        snprintf(sdir, sizeof(sdir), "%s", tmp_path("startup2/spool"));
        snprintf(qdir, sizeof(qdir), "%s", tmp_path("startup2/quarantine"));
        st = open_store("startup2.db");
        store_close(st);
        if (bulk_begin(&b, db) != 0)
                goto out;
        bulk_job(&b, "ws", "big", "queued", 20000, 0xa, 0);
        for (i = 0; i < 20000; i++)
                bulk_job(&b, "ws", "big", "done", 1, 0xd, i);
        bulk_end(&b);
        CHECK_INT(util_mkdir_p(tmp_path("startup2"), 0700), 0);
        CHECK_INT(spool_open(&sp, &loop, sdir, qdir, 0, 0, err, sizeof(err)), 0);
        if (sp == NULL)
                goto out;
        for (i = 0; i < 20000; i++) {
                bulk_name(name, 0xa, i);
                bad |= touch_at(spool_dirfd(sp), name);
        }
        CHECK_INT(bad, 0);
        st = open_counted_store(db);
        if (st == NULL)
                goto out;
        s3 = reconcile_counted(st, sp, 20000, 5, 100, 0);
        if (getenv("FERRY_TEST_VERBOSE"))
                fprintf(stderr, "one version of 20,000 files: %lld VM steps\n", s3);
        if (s3 > 30 * (20000 + 10)) {
                fprintf(stderr, "reconcile: %lld VM steps for one version of 20,000 files\n", s3);
                check_failures++;
        }
        store_close(st);
out:
        spool_close(sp);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(uv_loop_close(&loop), 0);
}

/* A listing replaces one asset by several, in its place; later assets move up. */
static void test_asset_expand(void)
{
        struct store *st = open_store("expand.db");
        struct job_asset repl[3];
        struct job *job = NULL;
        char *name = NULL, *warning = NULL;
        cJSON *w;
        int64_t id;
        int i;

        if (st == NULL)
                return;
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", "run"), 0);
        id = add_job(st, "ws", "synced", NULL, NULL, 10, SPOOL1);
        CHECK_INT(store_job_load(st, id, &job), 0);
        job_free(job);
        job = NULL;
        /* Add a second asset after the file: a placeholder to list, at index 1; then one more. */
        CHECK_INT(exec_sql(tmp_path("expand.db"),
                           "INSERT INTO assets(job, idx, logical_path, remote, uri, asset_id, "
                           "sync_max, sync_under) VALUES (1, 1, 'data', 1, 's3://b/data', 'x', "
                           "7, 'under')"),
                  0);
        CHECK_INT(exec_sql(tmp_path("expand.db"),
                           "INSERT INTO assets(job, idx, logical_path, remote, uri, asset_id) "
                           "VALUES (1, 2, 'last', 1, 'gs://b/last', 'y')"),
                  0);
        CHECK_INT(store_job_load(st, id, &job), 0);
        CHECK(job != NULL && job->nassets == 3);
        if (job != NULL && job->nassets == 3) {
                CHECK_INT(job->assets[1].sync_max, 7);
                CHECK_STR(job->assets[1].sync_under, "under");
                CHECK_INT(job->assets[2].sync_max, 0);
        }
        job_free(job);
        job = NULL;
        memset(repl, 0, sizeof(repl));
        for (i = 0; i < 3; i++) {
                static const char *const lps[] = {"under/a", "under/b", "under/c/d"};

                repl[i].logical_path = (char *)lps[i];
                repl[i].remote = true;
                repl[i].uri = "s3://b/data/x";
                repl[i].size = i;
                snprintf(repl[i].asset_id, sizeof(repl[i].asset_id), "id%d", i);
        }
        CHECK_INT(store_begin(st), 0);
        CHECK_INT(store_asset_expand(st, id, 1, repl, 3, NULL), 0);
        CHECK_INT(store_commit(st), 0);
        CHECK_INT(store_job_load(st, id, &job), 0);
        CHECK(job != NULL && job->nassets == 5);
        if (job != NULL && job->nassets == 5) {
                CHECK_STR(job->assets[0].logical_path, "file.bin");
                CHECK_STR(job->assets[1].logical_path, "under/a");
                CHECK_STR(job->assets[3].logical_path, "under/c/d");
                CHECK_INT(job->assets[3].size, 2);
                CHECK_INT(job->assets[3].sync_max, 0);
                CHECK_STR(job->assets[4].logical_path, "last");
                for (i = 0; i < 5; i++)
                        CHECK_INT(job->assets[i].idx, i);
        }
        job_free(job);
        job = NULL;
        CHECK_INT(query_int(tmp_path("expand.db"), "SELECT nassets FROM jobs WHERE id = 1"),
                  1 + 2); /* the two rows added by hand above did not count */
        /* A fallback: one asset for one, and a warning the job keeps (lines added up). */
        CHECK_INT(store_begin(st), 0);
        CHECK_INT(store_asset_expand(st, id, 4, &repl[0], 1, "first warning"), 0);
        CHECK_INT(store_asset_expand(st, id, 4, &repl[1], 1, "second warning"), 0);
        CHECK_INT(store_asset_expand(st, id, 0, repl, 0, NULL), FERRY_EINVAL);
        CHECK_INT(store_commit(st), 0);
        CHECK_INT(store_job_warning(st, id, &name, &warning), 0);
        CHECK_STR(name, "synced");
        CHECK_STR(warning, "first warning\nsecond warning");
        free(name);
        free(warning);
        CHECK_INT(store_job_warning(st, 999, &name, &warning), FERRY_ENOTFOUND);
        w = store_warnings(st, 10, 0);
        CHECK_INT(cJSON_GetArraySize(w), 1);
        cJSON_Delete(w);
        w = store_warnings(st, 10, util_now_ms() + 60000);
        CHECK_INT(cJSON_GetArraySize(w), 0);
        cJSON_Delete(w);
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
        /* libuv opens a process-wide pipe on its first loop, for good: count after it. */
        {
                uv_loop_t first;

                if (uv_loop_init(&first) == 0)
                        uv_loop_close(&first);
        }
        fds = count_fds();
        test_open_and_versions();
        test_migrate_from_1();
        test_asset_expand();
        test_check_damage();
        test_experiments_and_transactions();
        test_job_round_trip();
        test_lanes();
        test_steps();
        test_attempts_reset();
        test_stats();
        test_pending_queries();
        test_counts_and_list();
        test_errors();
        test_prune();
        test_held_spool();
        test_query_plans();
        test_hot_statement_cost();
        test_startup_linear();
        /* Every store was closed: no database or WAL file is left open. */
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_store");
}
