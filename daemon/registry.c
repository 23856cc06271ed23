/* registry.c — the local backend's registry. */
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "sqlutil.h"
#include "util.h"

extern const char registry_sql[];

#define VERSION_COLUMNS                                                                            \
        "v.id, v.version, v.state, v.metadata, v.experiment, v.project, v.size, a.type, a.tags "

/* Every statement, prepared once in registry_open and kept. */
#define REGISTRY_STATEMENTS(XX)                                                                    \
        XX(by_origin, "SELECT version FROM versions WHERE origin = ?1")                            \
        XX(artifact_id, "SELECT id FROM artifacts WHERE workspace = ?1 AND name = ?2")             \
        XX(artifact_insert, "INSERT INTO artifacts(workspace, name, type, project, created_ms) "   \
                            "VALUES (?1, ?2, ?3, ?4, ?5)")                                         \
        XX(max_major, "SELECT MAX(major) FROM versions WHERE artifact = ?1")                       \
        XX(version_taken, "SELECT 1 FROM versions WHERE artifact = ?1 AND version = ?2")           \
        XX(version_insert,                                                                         \
           "INSERT INTO versions(artifact, version, state, metadata, experiment, project, size, "  \
           "origin, created_ms, major) VALUES (?1, ?2, 'CLOSED', ?3, ?4, ?5, ?6, ?7, ?8, ?9)")     \
        XX(alias_set, "INSERT OR REPLACE INTO aliases(artifact, alias, version) VALUES (?1, ?2, "  \
                      "?3)")                                                                       \
        XX(tag_add, "INSERT OR IGNORE INTO version_tags(version, tag) VALUES (?1, ?2)")            \
        XX(asset_insert, "INSERT OR REPLACE INTO assets(version, logical_path, size, sha256, "     \
                         "remote, link, metadata, asset_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "  \
                         "?8)")                                                                    \
        XX(exists, "SELECT 1 FROM versions v JOIN artifacts a ON a.id = v.artifact WHERE "         \
                   "a.workspace = ?1 AND a.name = ?2 AND v.version = ?3")                          \
        XX(get_by_version, "SELECT " VERSION_COLUMNS "FROM versions v JOIN artifacts a ON a.id = " \
                           "v.artifact WHERE a.id = ?1 AND v.version = ?2")                        \
        XX(get_by_alias, "SELECT " VERSION_COLUMNS "FROM aliases l JOIN versions v ON v.id = "     \
                         "l.version JOIN artifacts a ON a.id = v.artifact WHERE l.artifact = ?1 "  \
                         "AND l.alias = ?2")                                                       \
        XX(alias_fold, "SELECT alias FROM aliases WHERE artifact = ?1 AND alias = ?2 COLLATE "     \
                       "NOCASE ORDER BY alias LIMIT 1")                                            \
        XX(aliases_of, "SELECT alias FROM aliases WHERE version = ?1 ORDER BY alias")              \
        XX(tags_of, "SELECT tag FROM version_tags WHERE version = ?1 ORDER BY tag")                \
        XX(assets_of, "SELECT logical_path, size, sha256, remote, link, metadata FROM assets "     \
                      "WHERE version = ?1 ORDER BY logical_path")

struct registry {
        sqlite3 *db;
        char *dir;   /* <state>/registry */
        char *blobs; /* <state>/registry/blobs */
#define XX(name, sql) sqlite3_stmt *name;
        REGISTRY_STATEMENTS(XX)
#undef XX
};

static void reg_reset(sqlite3_stmt *s)
{
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
}

static int reg_error(struct registry *r, int rc)
{
        log_error("registry: %s", sqlite3_errmsg(r->db));
        return (rc & 0xff) == SQLITE_FULL ? FERRY_ENOSPC : FERRY_EIO;
}

/* Step a write statement to completion and reset it. */
static int reg_run(struct registry *r, sqlite3_stmt *s)
{
        int rc = sqlite3_step(s);

        reg_reset(s);
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : reg_error(r, rc);
}

int registry_open(struct registry **out, const char *dir, char *err, size_t errlen)
{
        struct registry *r = calloc(1, sizeof(*r));
        char *dbpath = NULL;
        int rc, fd;

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
        if (util_check_private_dir(r->dir, err, errlen) != 0 ||
            util_check_private_dir(r->blobs, err, errlen) != 0)
                goto fail;
        fd = open(dbpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                snprintf(err, errlen, "cannot open %s: %s", dbpath, strerror(errno));
                goto fail;
        }
        close(fd);
        if (sqlutil_open(dbpath, registry_sql, &r->db, err, errlen) != 0)
                goto fail;
#define XX(name, sql)                                                                              \
        if ((r->name = sqlutil_prepare(r->db, sql)) == NULL) {                                     \
                snprintf(err, errlen, "cannot prepare registry statements: %s",                    \
                         sqlite3_errmsg(r->db));                                                   \
                goto fail;                                                                         \
        }
        REGISTRY_STATEMENTS(XX)
#undef XX
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
#define XX(name, sql) sqlite3_finalize(r->name);
        REGISTRY_STATEMENTS(XX)
#undef XX
        sqlite3_close(r->db);
        free(r->dir);
        free(r->blobs);
        free(r);
}

static void blob_path(const struct registry *r, const char *sha, char *out, size_t len)
{
        snprintf(out, len, "%s/%.2s/%s", r->blobs, sha, sha);
}

int registry_put_blob(const char *dir, int spool_dirfd, const char *name, char sha[65],
                      char subdir[3], char *err, size_t errlen)
{
        char final[4096], tmp[4096], sub[4096], rnd[17];
        int rc = 0, in, out = -1;
        struct stat st;

        in = openat(spool_dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0 || (rc = util_sha256_fd(in, sha)) != 0) {
                int e = in < 0 ? errno : -rc;

                snprintf(err, errlen, "cannot read spool file %s: %s", name, strerror(e));
                if (in >= 0)
                        close(in);
                return e == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO;
        }
        snprintf(subdir, 3, "%.2s", sha);
        snprintf(final, sizeof(final), "%s/blobs/%.2s/%s", dir, sha, sha);
        if (stat(final, &st) == 0)
                goto done; /* content already stored */
        snprintf(sub, sizeof(sub), "%s/blobs/%.2s", dir, sha);
        if (util_mkdir_p(sub, 0700) != 0 || util_random_hex(rnd, 8) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", sub, strerror(errno));
                rc = FERRY_EIO;
                goto done;
        }
        snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", sub, rnd);
        /* The spool file is an immutable snapshot: a hard link is the cheapest copy. */
        if (linkat(spool_dirfd, name, AT_FDCWD, tmp, 0) != 0) {
                out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
                if (out < 0 || (rc = util_copy_fd(in, out)) != 0 || fsync(out) != 0) {
                        int e = out < 0 ? errno : rc ? -rc : errno;

                        snprintf(err, errlen, "cannot store a blob in %s: %s", sub, strerror(e));
                        rc = e == ENOSPC || e == EDQUOT ? FERRY_ENOSPC : FERRY_EIO;
                        goto fail;
                }
                close(out);
                out = -1;
        }
        if (rename(tmp, final) != 0) {
                snprintf(err, errlen, "cannot store blob %s: %s", final, strerror(errno));
                rc = FERRY_EIO;
                goto fail;
        }
        goto done;
fail:
        if (out >= 0)
                close(out);
        unlink(tmp);
done:
        close(in);
        return rc;
}

int registry_sync_dirs(const char *dir, char (*subdirs)[3], size_t n)
{
        char path[4096];
        size_t i, j;
        int rc = 0;

        for (i = 0; i < n; i++) {
                for (j = 0; j < i; j++)
                        if (strcmp(subdirs[i], subdirs[j]) == 0)
                                break;
                if (j < i || subdirs[i][0] == '\0')
                        continue;
                snprintf(path, sizeof(path), "%s/blobs/%s", dir, subdirs[i]);
                if (util_fsync_dir(path) != 0)
                        rc = FERRY_EIO;
        }
        /* A subdirectory made for this batch is a name in blobs/: that must last too. */
        snprintf(path, sizeof(path), "%s/blobs", dir);
        if (n > 0 && util_fsync_dir(path) != 0)
                rc = FERRY_EIO;
        return rc;
}

int registry_begin(struct registry *r)
{
        return sqlutil_exec(r->db, "BEGIN IMMEDIATE") ? FERRY_EIO : 0;
}

int registry_commit(struct registry *r)
{
        int rc = sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : reg_error(r, rc);
}

void registry_rollback(struct registry *r)
{
        if (!sqlite3_get_autocommit(r->db))
                sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
}

/* The artifact's id, created when missing. */
static int registry_artifact(struct registry *r, const struct job *job, int64_t *id)
{
        int rc;

        sqlutil_bind_text(r->artifact_id, 1, job->workspace);
        sqlutil_bind_text(r->artifact_id, 2, job->name);
        rc = sqlite3_step(r->artifact_id);
        if (rc == SQLITE_ROW) {
                *id = sqlite3_column_int64(r->artifact_id, 0);
                reg_reset(r->artifact_id);
                return 0;
        }
        reg_reset(r->artifact_id);
        if (rc != SQLITE_DONE)
                return reg_error(r, rc);
        sqlutil_bind_text(r->artifact_insert, 1, job->workspace);
        sqlutil_bind_text(r->artifact_insert, 2, job->name);
        sqlutil_bind_text(r->artifact_insert, 3, job->type);
        sqlutil_bind_text(r->artifact_insert, 4, job->project);
        sqlite3_bind_int64(r->artifact_insert, 5, util_now_ms());
        if ((rc = reg_run(r, r->artifact_insert)) != 0)
                return rc;
        *id = sqlite3_last_insert_rowid(r->db);
        return 0;
}

/* Bind each string of the JSON array text `list` as ?2 of `s` (?1, ?3 bound) and run it. */
static int reg_each_string(struct registry *r, sqlite3_stmt *s, const char *list_text, int64_t a,
                           int64_t b, bool b_is_version)
{
        cJSON *list = cJSON_Parse(list_text ? list_text : "[]");
        const cJSON *it;
        int rc = 0;

        cJSON_ArrayForEach(it, list)
        {
                if (!cJSON_IsString(it))
                        continue;
                sqlite3_bind_int64(s, 1, a);
                sqlutil_bind_text(s, 2, it->valuestring);
                if (b_is_version)
                        sqlite3_bind_int64(s, 3, b);
                if ((rc = reg_run(r, s)) != 0)
                        break;
        }
        cJSON_Delete(list);
        return rc;
}

static int registry_insert_version(struct registry *r, const struct job *job, char shas[][65],
                                   char *version, size_t vlen, char *err, size_t errlen)
{
        struct proto_semver sv;
        int64_t artifact, vid, now = util_now_ms();
        size_t i;
        int rc;

        if ((rc = registry_artifact(r, job, &artifact)) != 0)
                return rc;
        if (job->version != NULL) {
                snprintf(version, vlen, "%s", job->version);
        } else {
                int64_t major = 0;

                sqlite3_bind_int64(r->max_major, 1, artifact);
                if (sqlite3_step(r->max_major) == SQLITE_ROW &&
                    sqlite3_column_type(r->max_major, 0) != SQLITE_NULL)
                        major = sqlite3_column_int64(r->max_major, 0);
                reg_reset(r->max_major);
                snprintf(version, vlen, "%lld.0.0", (long long)major + 1);
        }
        sqlite3_bind_int64(r->version_taken, 1, artifact);
        sqlutil_bind_text(r->version_taken, 2, version);
        rc = sqlite3_step(r->version_taken);
        reg_reset(r->version_taken);
        if (rc == SQLITE_ROW) {
                snprintf(err, errlen, "%s version %s exists already", job->name, version);
                return FERRY_EEXIST;
        }
        if (proto_semver_parse(version, &sv) != 0)
                memset(&sv, 0, sizeof(sv));
        sqlite3_bind_int64(r->version_insert, 1, artifact);
        sqlutil_bind_text(r->version_insert, 2, version);
        sqlutil_bind_text(r->version_insert, 3, job->metadata);
        sqlutil_bind_text(r->version_insert, 4, job->experiment);
        sqlutil_bind_text(r->version_insert, 5, job->project);
        sqlite3_bind_int64(r->version_insert, 6, job->bytes);
        sqlutil_bind_text(r->version_insert, 7, job->token);
        sqlite3_bind_int64(r->version_insert, 8, now);
        sqlite3_bind_int64(r->version_insert, 9,
                           sv.major > INT64_MAX ? INT64_MAX : (int64_t)sv.major);
        if ((rc = reg_run(r, r->version_insert)) != 0)
                return rc;
        vid = sqlite3_last_insert_rowid(r->db);
        /* Aliases name one version per artifact: moving them is an upsert. */
        if ((rc = reg_each_string(r, r->alias_set, job->aliases, artifact, vid, true)) != 0)
                return rc;
        sqlite3_bind_int64(r->alias_set, 1, artifact);
        sqlutil_bind_text(r->alias_set, 2, "Latest");
        sqlite3_bind_int64(r->alias_set, 3, vid);
        if ((rc = reg_run(r, r->alias_set)) != 0)
                return rc;
        if ((rc = reg_each_string(r, r->tag_add, job->tags, vid, 0, false)) != 0)
                return rc;
        for (i = 0; i < job->nassets; i++) {
                const struct job_asset *a = &job->assets[i];
                sqlite3_stmt *s = r->asset_insert;

                sqlite3_bind_int64(s, 1, vid);
                sqlutil_bind_text(s, 2, a->logical_path);
                sqlite3_bind_int64(s, 3, a->size);
                sqlutil_bind_text(s, 4, a->remote ? NULL : shas[i]);
                sqlite3_bind_int(s, 5, a->remote);
                sqlutil_bind_text(s, 6, a->uri);
                sqlutil_bind_text(s, 7, a->metadata);
                sqlutil_bind_text(s, 8, a->asset_id);
                if ((rc = reg_run(r, s)) != 0)
                        return rc;
        }
        return 0;
}

int registry_publish(struct registry *r, const struct job *job, char shas[][65], char *version,
                     size_t vlen, char *err, size_t errlen)
{
        int rc;

        /* Idempotence: a crash after the registry's commit and before the queue noted it. */
        sqlutil_bind_text(r->by_origin, 1, job->token);
        rc = sqlite3_step(r->by_origin);
        if (rc == SQLITE_ROW) {
                snprintf(version, vlen, "%s", (const char *)sqlite3_column_text(r->by_origin, 0));
                reg_reset(r->by_origin);
                return 0;
        }
        reg_reset(r->by_origin);
        if (rc != SQLITE_DONE)
                return reg_error(r, rc);
        if (sqlutil_exec(r->db, "SAVEPOINT publish") != 0)
                return FERRY_EIO;
        rc = registry_insert_version(r, job, shas, version, vlen, err, errlen);
        if (rc != 0) {
                sqlite3_exec(r->db, "ROLLBACK TO publish; RELEASE publish", NULL, NULL, NULL);
                if (err[0] == '\0')
                        snprintf(err, errlen, "cannot write the registry: %s",
                                 sqlite3_errmsg(r->db));
                return rc;
        }
        return sqlutil_exec(r->db, "RELEASE publish") ? FERRY_EIO : 0;
}

int registry_version_exists(struct registry *r, const char *workspace, const char *name,
                            const char *version)
{
        int found;

        sqlutil_bind_text(r->exists, 1, workspace);
        sqlutil_bind_text(r->exists, 2, name);
        sqlutil_bind_text(r->exists, 3, version);
        found = sqlite3_step(r->exists) == SQLITE_ROW;
        reg_reset(r->exists);
        return found;
}

static cJSON *parse_or_null(const unsigned char *text)
{
        cJSON *v = text ? cJSON_Parse((const char *)text) : NULL;

        return v ? v : cJSON_CreateNull();
}

/* A JSON array of the strings in column 0 of `s` bound to id. */
static cJSON *reg_string_list(sqlite3_stmt *s, int64_t id)
{
        cJSON *arr = cJSON_CreateArray();

        sqlite3_bind_int64(s, 1, id);
        while (sqlite3_step(s) == SQLITE_ROW)
                cJSON_AddItemToArray(arr,
                                     cJSON_CreateString((const char *)sqlite3_column_text(s, 0)));
        reg_reset(s);
        return arr;
}

/* Find the version row: by version, by alias exactly, else by alias ignoring case. */
static sqlite3_stmt *registry_find(struct registry *r, int64_t artifact, const char *sel)
{
        struct proto_semver sv;
        sqlite3_stmt *s;
        char folded[PROTO_NAME_MAX + 1];

        if (proto_semver_parse(sel, &sv) == 0) {
                s = r->get_by_version;
                sqlite3_bind_int64(s, 1, artifact);
                sqlutil_bind_text(s, 2, sel);
                if (sqlite3_step(s) == SQLITE_ROW)
                        return s;
                reg_reset(s);
        }
        s = r->get_by_alias;
        sqlite3_bind_int64(s, 1, artifact);
        sqlutil_bind_text(s, 2, sel);
        if (sqlite3_step(s) == SQLITE_ROW)
                return s;
        reg_reset(s);
        sqlite3_bind_int64(r->alias_fold, 1, artifact);
        sqlutil_bind_text(r->alias_fold, 2, sel);
        folded[0] = '\0';
        if (sqlite3_step(r->alias_fold) == SQLITE_ROW)
                snprintf(folded, sizeof(folded), "%s",
                         (const char *)sqlite3_column_text(r->alias_fold, 0));
        reg_reset(r->alias_fold);
        if (folded[0] == '\0')
                return NULL;
        sqlite3_bind_int64(s, 1, artifact);
        sqlutil_bind_text(s, 2, folded);
        if (sqlite3_step(s) == SQLITE_ROW)
                return s;
        reg_reset(s);
        return NULL;
}

int registry_get(struct registry *r, const char *workspace, const char *name,
                 const char *version_or_alias, cJSON **out, char *err, size_t errlen)
{
        const char *sel = version_or_alias ? version_or_alias : "Latest";
        sqlite3_stmt *s;
        cJSON *v, *assets;
        int64_t vid, artifact = 0;
        char path[4096];
        int rc;

        *out = NULL;
        sqlutil_bind_text(r->artifact_id, 1, workspace);
        sqlutil_bind_text(r->artifact_id, 2, name);
        rc = sqlite3_step(r->artifact_id);
        if (rc == SQLITE_ROW)
                artifact = sqlite3_column_int64(r->artifact_id, 0);
        reg_reset(r->artifact_id);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return reg_error(r, rc);
        if (artifact == 0) {
                snprintf(err, errlen, "artifact %s/%s not found", workspace, name);
                return FERRY_ENOTFOUND;
        }
        s = registry_find(r, artifact, sel);
        if (s == NULL) {
                snprintf(err, errlen, "%s/%s has no version or alias \"%s\"", workspace, name, sel);
                return FERRY_ENOTFOUND;
        }
        vid = sqlite3_column_int64(s, 0);
        v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "workspace", workspace);
        cJSON_AddStringToObject(v, "project", (const char *)sqlite3_column_text(s, 5));
        cJSON_AddStringToObject(v, "name", name);
        cJSON_AddStringToObject(v, "type", (const char *)sqlite3_column_text(s, 7));
        cJSON_AddStringToObject(v, "version", (const char *)sqlite3_column_text(s, 1));
        cJSON_AddItemToObject(v, "artifact_tags", parse_or_null(sqlite3_column_text(s, 8)));
        cJSON_AddItemToObject(v, "metadata", parse_or_null(sqlite3_column_text(s, 3)));
        cJSON_AddNumberToObject(v, "size", (double)sqlite3_column_int64(s, 6));
        cJSON_AddStringToObject(v, "experiment", (const char *)sqlite3_column_text(s, 4));
        cJSON_AddStringToObject(v, "state", (const char *)sqlite3_column_text(s, 2));
        reg_reset(s);
        cJSON_AddItemToObject(v, "aliases", reg_string_list(r->aliases_of, vid));
        cJSON_AddItemToObject(v, "version_tags", reg_string_list(r->tags_of, vid));
        cJSON_AddBoolToObject(v, "uploaded", 1);
        cJSON_AddNullToObject(v, "job");
        assets = cJSON_AddArrayToObject(v, "assets");
        s = r->assets_of;
        sqlite3_bind_int64(s, 1, vid);
        while (sqlite3_step(s) == SQLITE_ROW) {
                cJSON *a = cJSON_CreateObject();
                const char *sha = (const char *)sqlite3_column_text(s, 2);

                cJSON_AddStringToObject(a, "logical_path", (const char *)sqlite3_column_text(s, 0));
                cJSON_AddNumberToObject(a, "size", (double)sqlite3_column_int64(s, 1));
                cJSON_AddBoolToObject(a, "remote", sqlite3_column_int(s, 3));
                if (sqlite3_column_type(s, 4) == SQLITE_NULL)
                        cJSON_AddNullToObject(a, "link");
                else
                        cJSON_AddStringToObject(a, "link", (const char *)sqlite3_column_text(s, 4));
                cJSON_AddItemToObject(a, "metadata", parse_or_null(sqlite3_column_text(s, 5)));
                if (sha != NULL) {
                        blob_path(r, sha, path, sizeof(path));
                        cJSON_AddStringToObject(a, "_path", path);
                        cJSON_AddStringToObject(a, "_sha256", sha);
                }
                cJSON_AddItemToArray(assets, a);
        }
        reg_reset(s);
        *out = v;
        return 0;
}
