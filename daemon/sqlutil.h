/* sqlutil.h — opening a SQLite database with ferry's pragmas and migrations. */
#ifndef FERRY_SQLUTIL_H
#define FERRY_SQLUTIL_H

#include <stddef.h>
#include <sqlite3.h>

/*
 * Open (creating) the database at `path`: WAL, synchronous=FULL, foreign keys,
 * a busy timeout, then apply the migrations in `migrations` (text split by
 * "-- migration: N" lines), each in one transaction with PRAGMA user_version.
 * A database whose user_version is newer than the code is refused.
 * Return 0 with *out open, or -1 with a sentence in err (nothing left open).
 */
int sqlutil_open(const char *path, const char *migrations, sqlite3 **out, char *err, size_t errlen);

/* Prepare once, keep: returns the statement or NULL (message logged). */
sqlite3_stmt *sqlutil_prepare(sqlite3 *db, const char *sql);

/* Bind a string or NULL. */
int sqlutil_bind_text(sqlite3_stmt *st, int idx, const char *s);

/* A column as a malloc'd copy (NULL stays NULL). */
char *sqlutil_column_dup(sqlite3_stmt *st, int col);

/* Run one statement without results ("BEGIN IMMEDIATE", ...). 0 or -1 (logged). */
int sqlutil_exec(sqlite3 *db, const char *sql);

#endif
