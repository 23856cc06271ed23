/*
 * test_recovery.c — the spool checked against the queue at start-up and the
 * way back from quarantine (daemon/recovery.c), on a real queue database and
 * spool in a temporary state directory: an untrusted queue quarantines every
 * snapshot and deletes none, a trusted one keeps what it holds, removes what
 * it delivered and quarantines what it does not know; recovery_scan groups
 * quarantined files by their manifest's version token across folders, counts
 * files without a usable manifest as orphans and flags versions it cannot
 * rebuild whole. No file descriptor may be left open.
 */
#include "recovery.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <uv.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "spool.h"
#include "store.h"
#include "util.h"

#define KEY1 "0123456789abcdef0123456789abcdef"
#define TOKEN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOKEN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define TOKEN_C "cccccccccccccccccccccccccccccccc"
#define TOKEN_D "dddddddddddddddddddddddddddddddd"

static char tmpdir[] = "/tmp/ferry-test-recovery-XXXXXX";
static uv_loop_t loop;

/* ---- helpers -------------------------------------------------------------- */

static const char *tmp_path(const char *name)
{
        static char buf[4][600];
        static int next;
        char *p = buf[next++ % 4];

        snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
        return p;
}

static const char *in_dir(const char *dir, const char *name)
{
        static char buf[4][800];
        static int next;
        char *p = buf[next++ % 4];

        snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
        return p;
}

static int write_file(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ssize_t w;

        if (fd < 0)
                return -1;
        w = write(fd, text, strlen(text));
        close(fd);
        return w == (ssize_t)strlen(text) ? 0 : -1;
}

/*
 * A manifest as op_log.c writes it: the version's token, this file's logical
 * path and asset id, how many assets the version has, and the version's
 * artifact.log fields. Caller frees.
 */
static char *make_manifest(const char *token, const char *logical, const char *asset_id,
                           int nassets, bool partial, const char *asset_meta)
{
        cJSON *m = cJSON_CreateObject(), *v;
        char *text;

        cJSON_AddNumberToObject(m, "v", 1);
        cJSON_AddStringToObject(m, "token", token);
        cJSON_AddStringToObject(m, "logical_path", logical);
        cJSON_AddStringToObject(m, "asset_id", asset_id);
        cJSON_AddNumberToObject(m, "nassets", nassets);
        cJSON_AddNumberToObject(m, "logged_ms", 1700000000000.0);
        if (asset_meta != NULL)
                cJSON_AddItemToObject(m, "asset_metadata", cJSON_Parse(asset_meta));
        if (partial)
                cJSON_AddTrueToObject(m, "partial");
        v = cJSON_AddObjectToObject(m, "version");
        cJSON_AddStringToObject(v, "name", "resnet");
        cJSON_AddStringToObject(v, "type", "model");
        cJSON_AddStringToObject(v, "experiment", KEY1);
        cJSON_AddStringToObject(v, "workspace", "ws");
        cJSON_AddStringToObject(v, "project", "proj");
        cJSON_AddStringToObject(v, "version", "1.2.3");
        cJSON_AddItemToObject(v, "aliases", cJSON_Parse("[\"best\"]"));
        cJSON_AddItemToObject(v, "tags", cJSON_Parse("[\"t\"]"));
        text = cJSON_PrintUnformatted(m);
        cJSON_Delete(m);
        return text;
}

/* A quarantined file `dir`/`name` holding `content`, labelled with `label` (NULL: none). */
static void plant(const char *dir, const char *name, const char *content, const char *label)
{
        const char *path = in_dir(dir, name);

        CHECK_INT(write_file(path, content), 0);
        if (label != NULL)
                CHECK_INT(setxattr(path, SPOOL_MANIFEST_XATTR, label, strlen(label), 0), 0);
}

static void plant_version_file(const char *dir, const char *name, const char *token,
                               const char *logical, const char *asset_id, int nassets, bool partial,
                               const char *asset_meta)
{
        char *m = make_manifest(token, logical, asset_id, nassets, partial, asset_meta);

        plant(dir, name, logical, m);
        cJSON_free(m);
}

static struct recovery_version *find_version(struct recovery_version *vs, size_t n,
                                             const char *token)
{
        size_t i;

        for (i = 0; i < n; i++)
                if (strcmp(vs[i].token, token) == 0)
                        return &vs[i];
        return NULL;
}

/* Index of the file with logical path `lp` in v, or -1. */
static int find_file(const struct recovery_version *v, const char *lp)
{
        size_t i;

        for (i = 0; i < v->nfiles; i++)
                if (v->logical[i] != NULL && strcmp(v->logical[i], lp) == 0)
                        return (int)i;
        return -1;
}

static void free_versions(struct recovery_version *vs, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                recovery_version_free(&vs[i]);
        free(vs);
}

static int64_t add_job(struct store *st, const char *name, const char *spool)
{
        struct job_asset asset;
        struct job job;
        int64_t id = -1;

        memset(&job, 0, sizeof(job));
        memset(&asset, 0, sizeof(asset));
        job.token = "0123456789abcdef0123456789abcdef";
        job.experiment = KEY1;
        job.workspace = "ws";
        job.project = "proj";
        job.name = (char *)name;
        job.type = "model";
        job.aliases = "[]";
        job.tags = "[]";
        job.bytes = 1;
        asset.logical_path = "f";
        asset.spool = (char *)spool;
        asset.size = 1;
        job.assets = &asset;
        job.nassets = 1;
        CHECK_INT(store_job_insert(st, &job, &id), 0);
        return id;
}

/* A snapshot of `text` in the spool with manifest `m` (may be NULL); its name into name. */
static void snap(struct spool *sp, const char *text, const char *m, char name[33])
{
        char err[512] = "";
        int64_t size;
        int fd;

        CHECK_INT(write_file(tmp_path("snap-src"), text), 0);
        fd = open(tmp_path("snap-src"), O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        CHECK_INT(spool_snapshot_fd(sp, fd, "snap-src", m, name, &size, err, sizeof(err)), 0);
        close(fd);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_untrusted(void)
{
        struct store *st = NULL;
        struct spool *sp = NULL;
        struct recovery_report rep;
        struct recovery_version *vs = NULL;
        char err[512] = "", names[4][33], *m1, *m2, *m3, **left = NULL;
        const char *folder;
        int64_t orphans = -1, done;
        size_t n = 0, i;
        struct recovery_version *v;

        CHECK_INT(util_mkdir_p(tmp_path("u"), 0700), 0);
        CHECK_INT(store_open(&st, tmp_path("u/queue.db"), true, NULL, err, sizeof(err)), 0);
        CHECK_INT(spool_open(&sp, &loop, tmp_path("u/spool"), tmp_path("u/quarantine"), 0, 0, err,
                             sizeof(err)),
                  0);
        if (st == NULL || sp == NULL)
                goto out;
        m1 = make_manifest(TOKEN_A, "a.bin", "a1", 2, false, NULL);
        m2 = make_manifest(TOKEN_A, "b.bin", "a2", 2, false, NULL);
        m3 = make_manifest(TOKEN_B, "c.bin", "b1", 1, false, NULL);
        snap(sp, "first", m1, names[0]);
        snap(sp, "second", m2, names[1]);
        snap(sp, "third", m3, names[2]);
        snap(sp, "no manifest", NULL, names[3]);
        CHECK_INT(mkdir(tmp_path("u/spool/staging"), 0700), 0); /* an older ferryd's folder */
        cJSON_free(m1);
        cJSON_free(m2);
        cJSON_free(m3);
        /* Even a row that says "delivered" is not believed by an untrusted queue. */
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        done = add_job(st, "d", names[3]);
        CHECK_INT(store_job_set_done(st, done, NULL), 0);

        memset(&rep, 0xff, sizeof(rep));
        CHECK_INT(recovery_reconcile(st, sp, false, &rep, err, sizeof(err)), 0);
        CHECK_INT(rep.kept, 0);
        CHECK_INT(rep.removed, 0);
        CHECK_INT(rep.quarantined, 4);
        CHECK_INT(rep.looked_up, 4);
        CHECK_INT(spool_list(sp, &left, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 0);
        free(left);
        folder = spool_quarantine_folder(sp);
        CHECK(folder != NULL);
        if (folder == NULL)
                goto out;
        CHECK_INT(count_entries(folder), 4);
        for (i = 0; i < 4; i++)
                CHECK(exists(in_dir(folder, names[i])));
        CHECK(exists(tmp_path("u/spool/staging"))); /* not a snapshot */

        /* And back: the versions, rebuilt from the manifests the files carried. */
        CHECK_INT(recovery_scan(tmp_path("u/quarantine"), &vs, &n, &orphans, err, sizeof(err)), 0);
        CHECK_INT(n, 2);
        CHECK_INT(orphans, 1);
        v = find_version(vs, n, TOKEN_A);
        CHECK(v != NULL);
        if (v != NULL) {
                CHECK_INT(v->nfiles, 2);
                CHECK_INT(v->nassets, 2);
                CHECK(!v->partial);
                CHECK(find_file(v, "a.bin") >= 0 && find_file(v, "b.bin") >= 0);
                if (find_file(v, "a.bin") >= 0)
                        CHECK_STR(v->paths[find_file(v, "a.bin")], in_dir(folder, names[0]));
        }
        v = find_version(vs, n, TOKEN_B);
        CHECK(v != NULL && v->nfiles == 1 && !v->partial);
        free_versions(vs, n);
out:
        spool_close(sp);
        store_close(st);
}

static void test_trusted(void)
{
        struct store *st = NULL;
        struct spool *sp = NULL;
        struct recovery_report rep;
        char err[512] = "", q[33], f[33], d[33], c[33], u[33], p[33], sql[256], **left = NULL;
        const char *folder;
        int64_t jc, jp, jd;
        sqlite3 *h = NULL;
        size_t n = 0, i;

        CHECK_INT(util_mkdir_p(tmp_path("t"), 0700), 0);
        CHECK_INT(store_open(&st, tmp_path("t/queue.db"), true, NULL, err, sizeof(err)), 0);
        CHECK_INT(spool_open(&sp, &loop, tmp_path("t/spool"), tmp_path("t/quarantine"), 0, 0, err,
                             sizeof(err)),
                  0);
        if (st == NULL || sp == NULL)
                goto out;
        snap(sp, "queued", NULL, q);
        snap(sp, "failed", NULL, f);
        snap(sp, "done", NULL, d);
        snap(sp, "cancelled", NULL, c);
        snap(sp, "unknown", NULL, u);
        snap(sp, "pruned", NULL, p);
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        add_job(st, "q", q);
        CHECK_INT(store_job_set_failed(st, add_job(st, "f", f), "x", "x"), 0);
        jd = add_job(st, "d", d);
        CHECK_INT(store_job_set_done(st, jd, NULL), 0);
        jc = add_job(st, "c", c);
        jp = add_job(st, "p", p);
        CHECK_INT(store_job_set_done(st, jp, NULL), 0);
        /* c cancelled (no store function does that yet); c and p finished "later". */
        snprintf(sql, sizeof(sql),
                 "UPDATE jobs SET state = 'cancelled' WHERE id = %lld; UPDATE jobs SET done_ms = "
                 "4000000000000 WHERE id IN (%lld, %lld)",
                 (long long)jc, (long long)jc, (long long)jp);
        CHECK_INT(sqlite3_open(tmp_path("t/queue.db"), &h), SQLITE_OK);
        CHECK_INT(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(h);
        /* d's row is forgotten (pruned) while its file stayed behind (a crash in between). */
        CHECK_INT(store_prune_done(st, util_now_ms() + 60000, 10), 1);
        CHECK_INT(store_job_state(st, jd, sql, sizeof(sql)), FERRY_ENOTFOUND);

        CHECK_INT(recovery_reconcile(st, sp, true, &rep, err, sizeof(err)), 0);
        CHECK_INT(rep.kept, 2);
        CHECK_INT(rep.removed, 2);     /* p (done), c (cancelled) */
        CHECK_INT(rep.quarantined, 2); /* u (unknown), d (its row was pruned) */
        CHECK_INT(rep.looked_up, 4);
        CHECK_INT(spool_list(sp, &left, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 2);
        for (i = 0; i < n; i++) {
                CHECK(strcmp(left[i], q) == 0 || strcmp(left[i], f) == 0);
                free(left[i]);
        }
        free(left);
        folder = spool_quarantine_folder(sp);
        CHECK(folder != NULL);
        if (folder != NULL) {
                CHECK_INT(count_entries(folder), 2);
                CHECK(exists(in_dir(folder, u)));
                CHECK(exists(in_dir(folder, d)));
        }
        /* Run again: all settled, nothing more to do. */
        CHECK_INT(recovery_reconcile(st, sp, true, &rep, err, sizeof(err)), 0);
        CHECK_INT(rep.kept, 2);
        CHECK_INT(rep.looked_up, 0);
        CHECK_INT(rep.removed + rep.quarantined, 0);
out:
        spool_close(sp);
        store_close(st);
}

static void test_scan(void)
{
        char qd[600], f1[700], f2[700], f3[700], err[512] = "";
        struct recovery_version *vs = NULL, *v;
        int64_t orphans = -1;
        size_t n = 0;
        cJSON *req;
        int k;

        snprintf(qd, sizeof(qd), "%s", tmp_path("scan-q"));
        snprintf(f1, sizeof(f1), "%s/20250101T000000Z", qd);
        snprintf(f2, sizeof(f2), "%s/20250102T000000Z", qd);
        snprintf(f3, sizeof(f3), "%s/20250103T000000Z", qd);

        /* Nothing quarantined yet: no quarantine folder at all. */
        CHECK_INT(recovery_scan(qd, &vs, &n, &orphans, err, sizeof(err)), 0);
        CHECK_INT(n, 0);
        CHECK_INT(orphans, 0);
        free(vs);

        CHECK_INT(util_mkdir_p(f1, 0700), 0);
        CHECK_INT(util_mkdir_p(f2, 0700), 0);
        CHECK_INT(util_mkdir_p(f3, 0700), 0);
        /* A: whole (2 of 2 files). */
        plant_version_file(f1, "a1", TOKEN_A, "a.bin", "id-a1", 2, false, "{\"k\":1}");
        plant_version_file(f1, "a2", TOKEN_A, "dir/b.bin", "id-a2", 2, false, NULL);
        /* B: 2 of its 3 files. */
        plant_version_file(f1, "b1", TOKEN_B, "x", "id-b1", 3, false, NULL);
        plant_version_file(f1, "b2", TOKEN_B, "y", "id-b2", 3, false, NULL);
        /* C: its manifest had to leave metadata out. */
        plant_version_file(f1, "c1", TOKEN_C, "only", "id-c1", 1, true, NULL);
        /* D: its files quarantined by two different runs. */
        plant_version_file(f2, "d1", TOKEN_D, "one", "id-d1", 2, false, NULL);
        plant_version_file(f3, "d2", TOKEN_D, "two", "id-d2", 2, false, NULL);
        /* Orphans: no manifest, not JSON, no token, no version object. */
        plant(f1, "o1", "?", NULL);
        plant(f1, "o2", "?", "garbage {");
        plant(f2, "o3", "?", "{\"logical_path\":\"z\",\"version\":{}}");
        plant(f3, "o4", "?", "{\"token\":\"" TOKEN_A "\",\"logical_path\":\"z\",\"version\":7}");
        /* Not a quarantine folder: a stray file at the top. */
        plant(qd, "README", "not a folder", NULL);

        CHECK_INT(recovery_scan(qd, &vs, &n, &orphans, err, sizeof(err)), 0);
        CHECK_INT(n, 4);
        CHECK_INT(orphans, 4);

        v = find_version(vs, n, TOKEN_A);
        CHECK(v != NULL);
        if (v != NULL) {
                CHECK_INT(v->nfiles, 2);
                CHECK_INT(v->nassets, 2);
                CHECK(!v->partial);
                req = cJSON_Parse(v->request);
                CHECK(cJSON_IsObject(req));
                CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(req, "name")), "resnet");
                CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(req, "type")), "model");
                CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(req, "version")), "1.2.3");
                CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(req, "workspace")), "ws");
                CHECK_STR(cJSON_GetStringValue(
                              cJSON_GetArrayItem(cJSON_GetObjectItem(req, "aliases"), 0)),
                          "best");
                cJSON_Delete(req);
                k = find_file(v, "a.bin");
                CHECK(k >= 0);
                if (k >= 0) {
                        CHECK_STR(v->paths[k], in_dir(f1, "a1"));
                        CHECK_STR(v->asset_ids[k], "id-a1");
                        CHECK_STR(v->asset_meta[k], "{\"k\":1}");
                }
                k = find_file(v, "dir/b.bin");
                CHECK(k >= 0);
                if (k >= 0) {
                        CHECK_STR(v->paths[k], in_dir(f1, "a2"));
                        CHECK_STR(v->asset_ids[k], "id-a2");
                        CHECK(v->asset_meta[k] == NULL);
                }
        }
        v = find_version(vs, n, TOKEN_B);
        CHECK(v != NULL);
        if (v != NULL) {
                CHECK_INT(v->nfiles, 2);
                CHECK_INT(v->nassets, 3);
                CHECK(v->partial); /* a file is missing */
        }
        v = find_version(vs, n, TOKEN_C);
        CHECK(v != NULL);
        if (v != NULL) {
                CHECK_INT(v->nfiles, 1);
                CHECK(v->partial); /* its manifest says so */
        }
        v = find_version(vs, n, TOKEN_D);
        CHECK(v != NULL);
        if (v != NULL) {
                CHECK_INT(v->nfiles, 2);
                CHECK(!v->partial);
                k = find_file(v, "one");
                CHECK(k >= 0 && strcmp(v->paths[k], in_dir(f2, "d1")) == 0);
                k = find_file(v, "two");
                CHECK(k >= 0 && strcmp(v->paths[k], in_dir(f3, "d2")) == 0);
        }
        free_versions(vs, n);
        vs = NULL;
        /* Scanning reads, never moves: the same again. */
        CHECK_INT(recovery_scan(qd, &vs, &n, &orphans, err, sizeof(err)), 0);
        CHECK_INT(n, 4);
        CHECK_INT(orphans, 4);
        free_versions(vs, n);
        CHECK(exists(in_dir(f1, "o1")));

        /* A quarantine that cannot be read is an error with a sentence. */
        err[0] = '\0';
        vs = (struct recovery_version *)&vs;
        CHECK(recovery_scan(in_dir(qd, "README"), &vs, &n, &orphans, err, sizeof(err)) < 0);
        CHECK(vs == NULL);
        CHECK(strstr(err, "README") != NULL);
}

int main(void)
{
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_recovery: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        /* libuv opens a process-wide pipe on its first loop, for good: count after it. */
        if (uv_loop_init(&loop) == 0)
                uv_loop_close(&loop);
        fds = count_fds();
        CHECK_INT(uv_loop_init(&loop), 0);
        test_untrusted();
        test_trusted();
        test_scan();
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(uv_loop_close(&loop), 0);
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_recovery");
}
