/* sqlutil.c — SQLite open with pragmas and migrations. */
#include "sqlutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char MARK[] = "-- migration: ";

/* Find migration `n` in text; set *sql and *len to its body. 1 found, 0 not, -1 malformed. */
static int find_migration(const char *text, int n, const char **sql, size_t *len)
{
        const char *p = text;

        while ((p = strstr(p, MARK)) != NULL) {
                int v = atoi(p + sizeof(MARK) - 1);
                const char *body = strchr(p, '\n');
                const char *next;

                if (body == NULL)
                        return -1;
                body++;
                next = strstr(body, MARK);
                if (v == n) {
                        *sql = body;
                        *len = next ? (size_t)(next - body) : strlen(body);
                        return 1;
                }
                p = body;
        }
        return 0;
}

/*
 * The highest migration number in text. Numbers may have gaps (a number
 * reserved for a change that has not landed yet): a missing one is skipped.
 */
static int count_migrations(const char *text)
{
        const char *p = text;
        int n = 0, v;

        while ((p = strstr(p, MARK)) != NULL) {
                v = atoi(p + sizeof(MARK) - 1);
                if (v > n)
                        n = v;
                p += sizeof(MARK) - 1;
        }
        return n;
}

int sqlutil_exec(sqlite3 *db, const char *sql)
{
        char *msg = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                log_error("sqlite: %s: %s", sql, msg ? msg : sqlite3_errmsg(db));
                sqlite3_free(msg);
                return -1;
        }
        return 0;
}

int sqlutil_open(const char *path, const char *migrations, sqlite3 **out, char *err, size_t errlen)
{
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        int have, want, v;
        char *msg = NULL;

        *out = NULL;
        if (sqlite3_open_v2(path, &db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                snprintf(err, errlen, "cannot open database %s: %s", path,
                         db ? sqlite3_errmsg(db) : "out of memory");
                goto fail;
        }
        sqlite3_busy_timeout(db, 10000);
        if (sqlite3_exec(db,
                         "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                         "PRAGMA foreign_keys=ON;",
                         NULL, NULL, &msg) != SQLITE_OK) {
                snprintf(err, errlen, "cannot configure database %s: %s", path, msg);
                goto fail;
        }
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
                snprintf(err, errlen, "cannot read the version of %s: %s", path,
                         sqlite3_errmsg(db));
                goto fail;
        }
        have = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        st = NULL;
        want = count_migrations(migrations);
        if (have > want) {
                snprintf(err, errlen,
                         "database %s has schema version %d, newer than this ferryd (%d); "
                         "run a newer ferryd or move the file away",
                         path, have, want);
                goto fail;
        }
        for (v = have + 1; v <= want; v++) {
                const char *sql;
                size_t len;
                char *script;
                int rc;

                if (find_migration(migrations, v, &sql, &len) != 1)
                        continue; /* a gap: the next migration records the version */
                script = malloc(len + 64);
                if (script == NULL) {
                        snprintf(err, errlen, "out of memory");
                        goto fail;
                }
                memcpy(script, sql, len);
                snprintf(script + len, 64, "\n;PRAGMA user_version = %d;", v);
                rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg);
                if (rc == SQLITE_OK)
                        rc = sqlite3_exec(db, script, NULL, NULL, &msg);
                free(script);
                if (rc != SQLITE_OK) {
                        snprintf(err, errlen, "migration %d of %s failed: %s", v, path,
                                 msg ? msg : sqlite3_errmsg(db));
                        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                        goto fail;
                }
                if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
                        snprintf(err, errlen, "migration %d of %s failed: %s", v, path, msg);
                        goto fail;
                }
        }
        *out = db;
        return 0;
fail:
        sqlite3_free(msg);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return -1;
}

sqlite3_stmt *sqlutil_prepare(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *st = NULL;

        if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
                log_error("sqlite: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(db));
                return NULL;
        }
        return st;
}

int sqlutil_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
        if (s == NULL)
                return sqlite3_bind_null(st, idx);
        return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

char *sqlutil_column_dup(sqlite3_stmt *st, int col)
{
        const unsigned char *t = sqlite3_column_text(st, col);

        return t ? strdup((const char *)t) : NULL;
}
