/* registry.c — the local backend's registry. */
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "sqlutil.h"
#include "util.h"

extern const char registry_sql[];

struct registry {
        sqlite3 *db;
        char *dir;   /* <state>/registry */
        char *blobs; /* <state>/registry/blobs */
};

int registry_open(struct registry **out, const char *dir, char *err, size_t errlen)
{
        struct registry *r = calloc(1, sizeof(*r));
        char *dbpath = NULL;
        int rc;

        *out = NULL;
        if (r == NULL || (r->dir = strdup(dir)) == NULL ||
            (r->blobs = util_path_join(dir, "blobs")) == NULL ||
            (dbpath = util_path_join(dir, "registry.db")) == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        if ((rc = util_mkdir_p(r->blobs, 0700)) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", r->blobs, strerror(-rc));
                goto fail;
        }
        if (sqlutil_open(dbpath, registry_sql, &r->db, err, errlen) != 0)
                goto fail;
        free(dbpath);
        *out = r;
        return 0;
fail:
        free(dbpath);
        registry_close(r);
        return FERRY_EIO;
}

void registry_close(struct registry *r)
{
        if (r == NULL)
                return;
        sqlite3_close(r->db);
        free(r->dir);
        free(r->blobs);
        free(r);
}

static void blob_path(const struct registry *r, const char *sha, char *out, size_t len)
{
        snprintf(out, len, "%s/%.2s/%s", r->blobs, sha, sha);
}

/* Put the spool file `src` into the blob store under its SHA-256 (written to sha). */
static int registry_store_blob(struct registry *r, const char *src, char sha[65], char *err,
                               size_t errlen)
{
        char final[4096], tmp[4096], sub[4096], rnd[17];
        int rc, in = -1, out = -1;
        struct stat st;

        if ((rc = util_sha256_file(src, sha)) != 0) {
                snprintf(err, errlen, "cannot read spool file %s: %s", src, strerror(-rc));
                return rc == -ENOENT ? FERRY_ENOTFOUND : FERRY_EIO;
        }
        blob_path(r, sha, final, sizeof(final));
        if (stat(final, &st) == 0)
                return 0; /* content already stored */
        snprintf(sub, sizeof(sub), "%s/%.2s", r->blobs, sha);
        if (util_mkdir_p(sub, 0700) != 0 || util_random_hex(rnd, 8) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", sub, strerror(errno));
                return FERRY_EIO;
        }
        snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", sub, rnd);
        /* The spool file is an immutable snapshot: a hard link is the cheapest copy. */
        if (link(src, tmp) != 0) {
                in = open(src, O_RDONLY | O_CLOEXEC);
                out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
                if (in < 0 || out < 0 || (rc = util_copy_fd(in, out)) != 0 || fsync(out) != 0) {
                        snprintf(err, errlen, "cannot store a blob in %s: %s", sub,
                                 strerror(errno));
                        rc = errno == ENOSPC ? FERRY_ENOSPC : FERRY_EIO;
                        goto fail;
                }
                close(in);
                close(out);
                in = out = -1;
        }
        if (rename(tmp, final) != 0 || util_fsync_dir(sub) != 0) {
                snprintf(err, errlen, "cannot store blob %s: %s", final, strerror(errno));
                rc = FERRY_EIO;
                goto fail;
        }
        return 0;
fail:
        if (in >= 0)
                close(in);
        if (out >= 0)
                close(out);
        unlink(tmp);
        return rc;
}

/* Run a prepared one-shot statement; returns the sqlite step result. */
static sqlite3_stmt *reg_prepare(struct registry *r, const char *sql)
{
        sqlite3_stmt *st = NULL;

        if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK) {
                log_error("registry: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(r->db));
                return NULL;
        }
        return st;
}

/* Execute `sql` with parameters described by fmt: 'i' int64, 's' string (NULL ok). */
static int reg_exec_bind(struct registry *r, const char *sql, const char *fmt, ...)
{
        sqlite3_stmt *st = reg_prepare(r, sql);
        va_list ap;
        int i, rc;

        if (st == NULL)
                return FERRY_EIO;
        va_start(ap, fmt);
        for (i = 0; fmt[i]; i++) {
                if (fmt[i] == 'i')
                        sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
                else
                        sqlutil_bind_text(st, i + 1, va_arg(ap, const char *));
        }
        va_end(ap);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
                log_error("registry: %s: %s", sql, sqlite3_errmsg(r->db));
                return FERRY_EIO;
        }
        return 0;
}

/* The next major after the highest version of `artifact`: 1.0.0 for the first. */
static int registry_next_version(struct registry *r, int64_t artifact, char *out, size_t len)
{
        sqlite3_stmt *st = reg_prepare(r, "SELECT version FROM versions WHERE artifact = ?1");
        struct proto_semver best, v;
        bool any = false;

        if (st == NULL)
                return FERRY_EIO;
        sqlite3_bind_int64(st, 1, artifact);
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (proto_semver_parse((const char *)sqlite3_column_text(st, 0), &v) != 0)
                        continue;
                if (!any || proto_semver_cmp(&v, &best) > 0)
                        best = v;
                any = true;
        }
        sqlite3_finalize(st);
        snprintf(out, len, "%llu.0.0", any ? (unsigned long long)best.major + 1 : 1ULL);
        return 0;
}

static int64_t reg_lookup_id(struct registry *r, const char *sql, const char *a, const char *b)
{
        sqlite3_stmt *st = reg_prepare(r, sql);
        int64_t id = 0;

        if (st == NULL)
                return -1;
        sqlutil_bind_text(st, 1, a);
        sqlutil_bind_text(st, 2, b);
        if (sqlite3_step(st) == SQLITE_ROW)
                id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return id;
}

/* Inside the transaction: create the version rows. */
static int registry_insert_version(struct registry *r, const struct job *job, const char *origin,
                                   char shas[][65], char *version, size_t vlen, char *err,
                                   size_t errlen)
{
        int64_t artifact, vid, now = util_now_ms();
        cJSON *list, *it;
        size_t i;
        int rc;

        artifact = reg_lookup_id(r, "SELECT id FROM artifacts WHERE workspace = ?1 AND name = ?2",
                                 job->workspace, job->name);
        if (artifact < 0)
                return FERRY_EIO;
        if (artifact == 0) {
                rc =
                    reg_exec_bind(r,
                                  "INSERT INTO artifacts(workspace, name, type, project, "
                                  "created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                                  "ssssi", job->workspace, job->name, job->type, job->project, now);
                if (rc != 0)
                        return rc;
                artifact = sqlite3_last_insert_rowid(r->db);
        }
        if (job->version != NULL) {
                snprintf(version, vlen, "%s", job->version);
        } else if ((rc = registry_next_version(r, artifact, version, vlen)) != 0) {
                return rc;
        }
        {
                sqlite3_stmt *st =
                    reg_prepare(r, "SELECT 1 FROM versions WHERE artifact = ?1 AND version = ?2");
                bool taken;

                if (st == NULL)
                        return FERRY_EIO;
                sqlite3_bind_int64(st, 1, artifact);
                sqlutil_bind_text(st, 2, version);
                taken = sqlite3_step(st) == SQLITE_ROW;
                sqlite3_finalize(st);
                if (taken) {
                        snprintf(err, errlen, "%s version %s exists already", job->name, version);
                        return FERRY_EEXIST;
                }
        }
        rc = reg_exec_bind(r,
                           "INSERT INTO versions(artifact, version, state, metadata, experiment, "
                           "project, size, origin, created_ms) VALUES (?1, ?2, 'CLOSED', ?3, ?4, "
                           "?5, ?6, ?7, ?8)",
                           "issssisi", artifact, version, job->metadata, job->experiment,
                           job->project, job->bytes, origin, now);
        if (rc != 0)
                return rc;
        vid = sqlite3_last_insert_rowid(r->db);
        /* Aliases name one version per artifact: moving them is an upsert. */
        list = cJSON_Parse(job->aliases);
        cJSON_ArrayForEach(it, list)
        {
                if (cJSON_IsString(it) &&
                    (rc = reg_exec_bind(r,
                                        "INSERT OR REPLACE INTO aliases(artifact, alias, version) "
                                        "VALUES (?1, ?2, ?3)",
                                        "isi", artifact, it->valuestring, vid)) != 0)
                        break;
        }
        cJSON_Delete(list);
        if (rc != 0)
                return rc;
        rc = reg_exec_bind(r,
                           "INSERT OR REPLACE INTO aliases(artifact, alias, version) VALUES (?1, "
                           "'Latest', ?2)",
                           "ii", artifact, vid);
        if (rc != 0)
                return rc;
        list = cJSON_Parse(job->tags);
        cJSON_ArrayForEach(it, list)
        {
                if (cJSON_IsString(it) &&
                    (rc = reg_exec_bind(r,
                                        "INSERT OR IGNORE INTO version_tags(version, tag) VALUES "
                                        "(?1, ?2)",
                                        "is", vid, it->valuestring)) != 0)
                        break;
        }
        cJSON_Delete(list);
        if (rc != 0)
                return rc;
        for (i = 0; i < job->nassets; i++) {
                const struct job_asset *a = &job->assets[i];

                rc = reg_exec_bind(r,
                                   "INSERT OR REPLACE INTO assets(version, logical_path, size, "
                                   "sha256, remote, link, metadata, asset_id) VALUES (?1, ?2, "
                                   "?3, ?4, ?5, ?6, ?7, ?8)",
                                   "isisisss", vid, a->logical_path, a->size,
                                   a->remote ? NULL : shas[i], (int64_t)a->remote, a->uri,
                                   a->metadata, a->asset_id);
                if (rc != 0)
                        return rc;
        }
        return 0;
}

int registry_publish(struct registry *r, const struct job *job, const char *origin,
                     const char *spool_dir, char *version, size_t vlen, char *err, size_t errlen)
{
        char(*shas)[65] = calloc(job->nassets + 1, sizeof(*shas));
        sqlite3_stmt *st;
        size_t i;
        int rc = 0;

        if (shas == NULL) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        /* Idempotence: a crash after the commit and before the queue noted it. */
        st = reg_prepare(r, "SELECT v.version FROM versions v WHERE v.origin = ?1");
        if (st == NULL) {
                rc = FERRY_EIO;
                goto out;
        }
        sqlutil_bind_text(st, 1, origin);
        if (sqlite3_step(st) == SQLITE_ROW) {
                snprintf(version, vlen, "%s", (const char *)sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
                goto out;
        }
        sqlite3_finalize(st);
        for (i = 0; i < job->nassets; i++) {
                char *src;

                if (job->assets[i].remote || job->assets[i].spool == NULL)
                        continue;
                src = util_path_join(spool_dir, job->assets[i].spool);
                if (src == NULL) {
                        rc = FERRY_ENOMEM;
                        goto out;
                }
                rc = registry_store_blob(r, src, shas[i], err, errlen);
                free(src);
                if (rc != 0)
                        goto out;
        }
        if (sqlutil_exec(r->db, "BEGIN IMMEDIATE") != 0) {
                snprintf(err, errlen, "the registry is busy");
                rc = FERRY_EBUSY;
                goto out;
        }
        rc = registry_insert_version(r, job, origin, shas, version, vlen, err, errlen);
        if (rc == 0 && sqlutil_exec(r->db, "COMMIT") != 0)
                rc = FERRY_EIO;
        if (rc != 0) {
                sqlutil_exec(r->db, "ROLLBACK");
                if (err[0] == '\0')
                        snprintf(err, errlen, "cannot write the registry: %s",
                                 sqlite3_errmsg(r->db));
        }
out:
        free(shas);
        return rc;
}

int registry_version_exists(struct registry *r, const char *workspace, const char *name,
                            const char *version)
{
        sqlite3_stmt *st = reg_prepare(r, "SELECT 1 FROM versions v JOIN artifacts a ON a.id = "
                                          "v.artifact WHERE a.workspace = ?1 AND a.name = ?2 AND "
                                          "v.version = ?3");
        int found;

        if (st == NULL)
                return 0;
        sqlutil_bind_text(st, 1, workspace);
        sqlutil_bind_text(st, 2, name);
        sqlutil_bind_text(st, 3, version);
        found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        return found;
}

static cJSON *parse_or_null(const unsigned char *text)
{
        cJSON *v = text ? cJSON_Parse((const char *)text) : NULL;

        return v ? v : cJSON_CreateNull();
}

/* A JSON array of the strings in column 0 of `sql` bound to id. */
static cJSON *reg_string_list(struct registry *r, const char *sql, int64_t id)
{
        sqlite3_stmt *st = reg_prepare(r, sql);
        cJSON *arr = cJSON_CreateArray();

        if (st == NULL)
                return arr;
        sqlite3_bind_int64(st, 1, id);
        while (sqlite3_step(st) == SQLITE_ROW)
                cJSON_AddItemToArray(arr,
                                     cJSON_CreateString((const char *)sqlite3_column_text(st, 0)));
        sqlite3_finalize(st);
        return arr;
}

int registry_get(struct registry *r, const char *workspace, const char *name,
                 const char *version_or_alias, cJSON **out, char *err, size_t errlen)
{
        struct proto_semver sv;
        const char *sel = version_or_alias ? version_or_alias : "Latest";
        bool by_version = proto_semver_parse(sel, &sv) == 0;
        sqlite3_stmt *st;
        cJSON *v, *assets;
        int64_t vid, artifact;
        char path[4096];

        *out = NULL;
        artifact = reg_lookup_id(r, "SELECT id FROM artifacts WHERE workspace = ?1 AND name = ?2",
                                 workspace, name);
        if (artifact <= 0) {
                snprintf(err, errlen, "artifact %s/%s not found", workspace, name);
                return artifact < 0 ? FERRY_EIO : FERRY_ENOTFOUND;
        }
        st = reg_prepare(r, by_version
                                ? "SELECT v.id, v.version, v.state, v.metadata, v.experiment, "
                                  "v.project, v.size, a.type, a.tags FROM versions v JOIN "
                                  "artifacts a ON a.id = v.artifact WHERE a.id = ?1 AND "
                                  "v.version = ?2"
                                : "SELECT v.id, v.version, v.state, v.metadata, v.experiment, "
                                  "v.project, v.size, a.type, a.tags FROM aliases l JOIN "
                                  "versions v ON v.id = l.version JOIN artifacts a ON a.id = "
                                  "v.artifact WHERE a.id = ?1 AND l.alias = ?2");
        if (st == NULL)
                return FERRY_EIO;
        sqlite3_bind_int64(st, 1, artifact);
        sqlutil_bind_text(st, 2, sel);
        if (sqlite3_step(st) != SQLITE_ROW) {
                sqlite3_finalize(st);
                snprintf(err, errlen, "%s/%s has no version or alias \"%s\"", workspace, name, sel);
                return FERRY_ENOTFOUND;
        }
        vid = sqlite3_column_int64(st, 0);
        v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "workspace", workspace);
        cJSON_AddStringToObject(v, "project", (const char *)sqlite3_column_text(st, 5));
        cJSON_AddStringToObject(v, "name", name);
        cJSON_AddStringToObject(v, "type", (const char *)sqlite3_column_text(st, 7));
        cJSON_AddStringToObject(v, "version", (const char *)sqlite3_column_text(st, 1));
        cJSON_AddItemToObject(
            v, "aliases",
            reg_string_list(r, "SELECT alias FROM aliases WHERE version = ?1 ORDER BY alias", vid));
        cJSON_AddItemToObject(
            v, "version_tags",
            reg_string_list(r, "SELECT tag FROM version_tags WHERE version = ?1 ORDER BY tag",
                            vid));
        cJSON_AddItemToObject(v, "artifact_tags", parse_or_null(sqlite3_column_text(st, 8)));
        cJSON_AddItemToObject(v, "metadata", parse_or_null(sqlite3_column_text(st, 3)));
        cJSON_AddNumberToObject(v, "size", (double)sqlite3_column_int64(st, 6));
        cJSON_AddStringToObject(v, "experiment", (const char *)sqlite3_column_text(st, 4));
        cJSON_AddStringToObject(v, "state", (const char *)sqlite3_column_text(st, 2));
        cJSON_AddBoolToObject(v, "uploaded", 1);
        cJSON_AddNullToObject(v, "job");
        sqlite3_finalize(st);
        assets = cJSON_AddArrayToObject(v, "assets");
        st = reg_prepare(r, "SELECT logical_path, size, sha256, remote, link, metadata FROM "
                            "assets WHERE version = ?1 ORDER BY logical_path");
        if (st == NULL) {
                cJSON_Delete(v);
                return FERRY_EIO;
        }
        sqlite3_bind_int64(st, 1, vid);
        while (sqlite3_step(st) == SQLITE_ROW) {
                cJSON *a = cJSON_CreateObject();
                const char *sha = (const char *)sqlite3_column_text(st, 2);

                cJSON_AddStringToObject(a, "logical_path",
                                        (const char *)sqlite3_column_text(st, 0));
                cJSON_AddNumberToObject(a, "size", (double)sqlite3_column_int64(st, 1));
                cJSON_AddBoolToObject(a, "remote", sqlite3_column_int(st, 3));
                if (sqlite3_column_type(st, 4) == SQLITE_NULL)
                        cJSON_AddNullToObject(a, "link");
                else
                        cJSON_AddStringToObject(a, "link",
                                                (const char *)sqlite3_column_text(st, 4));
                cJSON_AddItemToObject(a, "metadata", parse_or_null(sqlite3_column_text(st, 5)));
                if (sha != NULL) {
                        blob_path(r, sha, path, sizeof(path));
                        cJSON_AddStringToObject(a, "_path", path);
                        cJSON_AddStringToObject(a, "_sha256", sha);
                }
                cJSON_AddItemToArray(assets, a);
        }
        sqlite3_finalize(st);
        *out = v;
        return 0;
}
