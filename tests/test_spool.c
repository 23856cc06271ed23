/*
 * test_spool.c — the spool (daemon/spool.c) in a temporary state directory:
 * snapshots, byte budget, staging, and start-up cleanup against a real store.
 * No file descriptor may be left open.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "ferry.h"
#include "job.h"
#include "log.h"
#include "store.h"

#define KEY1 "0123456789abcdef0123456789abcdef"

static char tmpdir[] = "/tmp/ferry-test-spool-XXXXXX";
static char spooldir[600];

/* ---- helpers -------------------------------------------------------------- */

static const char *tmp_path(const char *name)
{
        static char buf[4][600];
        static int next;
        char *p = buf[next++ % 4];

        snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
        return p;
}

static int write_file(const char *path, const void *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ssize_t w;

        if (fd < 0)
                return -1;
        w = write(fd, data, len);
        close(fd);
        return w == (ssize_t)len ? 0 : -1;
}

/* Read a whole file (at most cap bytes); length or -1. */
static ssize_t read_file(const char *path, char *buf, size_t cap)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        size_t off = 0;
        ssize_t r;

        if (fd < 0)
                return -1;
        while (off < cap && (r = read(fd, buf + off, cap - off)) > 0)
                off += (size_t)r;
        close(fd);
        return (ssize_t)off;
}

static void set_age(const char *path, time_t seconds_ago)
{
        struct timespec ts[2];

        ts[0].tv_sec = ts[1].tv_sec = time(NULL) - seconds_ago;
        ts[0].tv_nsec = ts[1].tv_nsec = 0;
        if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) {
                fprintf(stderr, "utimensat %s: %s\n", path, strerror(errno));
                check_failures++;
        }
}

static int is_hex_name(const char *s)
{
        size_t i;

        if (strlen(s) != 32)
                return 0;
        for (i = 0; i < 32; i++)
                if (strchr("0123456789abcdef", s[i]) == NULL)
                        return 0;
        return 1;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_snapshot(struct spool *sp)
{
        char name[33] = "", name2[33] = "", err[512] = "";
        size_t len = 300 * 1024 + 7, i;
        char *data = malloc(len), *back = malloc(len + 16), *path;
        char src[700];
        int before;

        snprintf(src, sizeof(src), "%s", tmp_path("source.bin"));
        if (data == NULL || back == NULL)
                goto out;
        for (i = 0; i < len; i++)
                data[i] = (char)((i * 2654435761u) >> 13);
        CHECK_INT(write_file(src, data, len), 0);

        CHECK_INT(spool_snapshot(sp, src, (int64_t)len, name, err, sizeof(err)), 0);
        CHECK(is_hex_name(name));
        path = spool_path(sp, name);
        CHECK(path != NULL && strncmp(path, spooldir, strlen(spooldir)) == 0);
        CHECK_INT(read_file(path, back, len + 16), len);
        CHECK(memcmp(back, data, len) == 0);
        free(path);
        /* The snapshot is independent of its source. */
        CHECK_INT(write_file(src, "changed", 7), 0);
        path = spool_path(sp, name);
        CHECK_INT(read_file(path, back, len + 16), len);
        CHECK(memcmp(back, data, len) == 0);
        free(path);

        /* Without an expected size; an empty file. */
        CHECK_INT(spool_snapshot(sp, src, -1, name2, err, sizeof(err)), 0);
        CHECK(strcmp(name, name2) != 0);
        path = spool_path(sp, name2);
        CHECK_INT(read_file(path, back, len), 7);
        CHECK(memcmp(back, "changed", 7) == 0);
        free(path);
        spool_remove(sp, name2);
        CHECK_INT(write_file(src, "", 0), 0);
        CHECK_INT(spool_snapshot(sp, src, 0, name2, err, sizeof(err)), 0);
        path = spool_path(sp, name2);
        CHECK_INT(read_file(path, back, len), 0);
        free(path);
        spool_remove(sp, name2);
        path = spool_path(sp, name2);
        CHECK(!exists(path));
        free(path);
        spool_remove(sp, name2); /* already gone: quiet */

        /* Failures leave no spool file behind. */
        before = count_entries(spooldir);
        err[0] = '\0';
        CHECK_INT(spool_snapshot(sp, tmpdir, -1, name2, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "regular file") != NULL);
        CHECK_INT(count_entries(spooldir), before);
        err[0] = '\0';
        CHECK_INT(spool_snapshot(sp, tmp_path("missing.bin"), -1, name2, err, sizeof(err)),
                  FERRY_ENOTFOUND);
        CHECK(strstr(err, "missing.bin") != NULL);
        CHECK_INT(spool_snapshot(sp, tmp_path("missing/dir/x"), -1, name2, err, sizeof(err)),
                  FERRY_ENOTFOUND);
        /* A size that does not match what was accounted. */
        CHECK_INT(write_file(src, "12345", 5), 0);
        err[0] = '\0';
        CHECK_INT(spool_snapshot(sp, src, 4, name2, err, sizeof(err)), FERRY_EIO);
        CHECK(err[0] != '\0');
        CHECK_INT(count_entries(spooldir), before);
        /* Symlinks to regular files are followed. */
        CHECK_INT(symlink(src, tmp_path("link.bin")), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("link.bin"), 5, name2, err, sizeof(err)), 0);
        CHECK_INT(count_entries(spooldir), before + 1);
        spool_remove(sp, name2);
        spool_remove(sp, name);
        CHECK_INT(count_entries(spooldir), before - 1);
        CHECK_INT(spool_sync(sp), 0);
out:
        free(data);
        free(back);
}

static void test_budget(void)
{
        struct spool *sp = NULL, *unlimited = NULL;
        char err[512] = "";

        CHECK_INT(spool_open(&sp, tmp_path("budget"), 1000, 100, err, sizeof(err)), 0);
        if (sp == NULL)
                return;
        CHECK_INT(spool_budget(sp), 1000);
        CHECK_INT(spool_used(sp), 100);
        CHECK_INT(spool_reserve(sp, 900, err, sizeof(err)), 0);
        CHECK_INT(spool_used(sp), 1000);
        err[0] = '\0';
        CHECK_INT(spool_reserve(sp, 1, err, sizeof(err)), FERRY_ENOSPC);
        CHECK_INT(spool_used(sp), 1000); /* unchanged by a refusal */
        CHECK(strstr(err, "spool") != NULL && strstr(err, "budget") != NULL);
        CHECK(strstr(err, "1000 B") != NULL);
        spool_release(sp, 400);
        CHECK_INT(spool_used(sp), 600);
        CHECK_INT(spool_reserve(sp, 500, err, sizeof(err)), FERRY_ENOSPC);
        CHECK_INT(spool_reserve(sp, 400, err, sizeof(err)), 0);
        CHECK_INT(spool_used(sp), 1000);
        spool_release(sp, 5000); /* never below zero */
        CHECK_INT(spool_used(sp), 0);
        spool_close(sp);

        /* Budget 0: no limit. */
        CHECK_INT(spool_open(&unlimited, tmp_path("budget"), 0, 0, err, sizeof(err)), 0);
        if (unlimited == NULL)
                return;
        CHECK_INT(spool_reserve(unlimited, (int64_t)1 << 50, err, sizeof(err)), 0);
        CHECK_INT(spool_used(unlimited), (int64_t)1 << 50);
        spool_close(unlimited);
        spool_close(NULL);

        /* A state directory that cannot be created. */
        CHECK_INT(write_file(tmp_path("plainfile"), "x", 1), 0);
        err[0] = '\0';
        sp = (struct spool *)&sp;
        CHECK(spool_open(&sp, tmp_path("plainfile/spool"), 0, 0, err, sizeof(err)) < 0);
        CHECK(sp == NULL);
        CHECK(err[0] != '\0');
}

static void test_staging(struct spool *sp)
{
        char token[33] = "", name[33] = "", err[512] = "", buf[64];
        char *path = NULL, *spath;
        const char *upper = "0123456789ABCDEF0123456789ABCDEF";
        int64_t size = -1;
        struct stat st;

        CHECK_INT(spool_stage_new(sp, token, &path, err, sizeof(err)), 0);
        CHECK(is_hex_name(token));
        CHECK(path != NULL);
        if (path == NULL)
                return;
        CHECK(strstr(path, "/staging/") != NULL && strstr(path, token) != NULL);
        CHECK_INT(stat(path, &st), 0);
        CHECK_INT(st.st_mode & 0777, 0600);
        CHECK_INT(st.st_size, 0);
        CHECK_INT(spool_staged_size(sp, token, &size, err, sizeof(err)), 0);
        CHECK_INT(size, 0);
        CHECK_INT(write_file(path, "staged bytes", 12), 0);
        CHECK_INT(spool_staged_size(sp, token, &size, err, sizeof(err)), 0);
        CHECK_INT(size, 12);

        size = -1;
        CHECK_INT(spool_claim_staged(sp, token, name, &size, err, sizeof(err)), 0);
        CHECK_INT(size, 12);
        CHECK(is_hex_name(name));
        CHECK(strcmp(name, token) != 0);
        CHECK(!exists(path)); /* moved, not copied */
        spath = spool_path(sp, name);
        CHECK_INT(read_file(spath, buf, sizeof(buf)), 12);
        CHECK(memcmp(buf, "staged bytes", 12) == 0);
        free(spath);
        spool_remove(sp, name);
        free(path);

        /* A claimed token is gone; unknown and malformed tokens. */
        err[0] = '\0';
        CHECK_INT(spool_staged_size(sp, token, &size, err, sizeof(err)), FERRY_ENOTFOUND);
        CHECK(strstr(err, token) != NULL);
        CHECK_INT(spool_claim_staged(sp, token, name, &size, err, sizeof(err)), FERRY_ENOTFOUND);
        CHECK_INT(
            spool_staged_size(sp, "00000000000000000000000000000000", &size, err, sizeof(err)),
            FERRY_ENOTFOUND);
        err[0] = '\0';
        CHECK_INT(spool_staged_size(sp, "abc", &size, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "abc") != NULL);
        CHECK_INT(spool_staged_size(sp, "", &size, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(spool_staged_size(sp, upper, &size, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(
            spool_staged_size(sp, "../../../../../../../../etc/pass", &size, err, sizeof(err)),
            FERRY_EINVAL);
        CHECK_INT(
            spool_staged_size(sp, "0123456789abcdef0123456789abcdef0", &size, err, sizeof(err)),
            FERRY_EINVAL);
        CHECK_INT(spool_claim_staged(sp, "g123456789abcdef0123456789abcdef", name, &size, err,
                                     sizeof(err)),
                  FERRY_EINVAL);
        /* A directory under a valid token is not staged data. */
        snprintf(buf, sizeof(buf), "%s", "/staging/dddddddddddddddddddddddddddddddd");
        path = malloc(strlen(spooldir) + strlen(buf) + 1);
        sprintf(path, "%s%s", spooldir, buf);
        CHECK_INT(mkdir(path, 0700), 0);
        CHECK_INT(
            spool_staged_size(sp, "dddddddddddddddddddddddddddddddd", &size, err, sizeof(err)),
            FERRY_ENOTFOUND);
        rmdir(path);
        free(path);
}

/* Insert a job referencing `spool`; returns its id. */
static int64_t add_job(struct store *st, const char *name, const char *spool)
{
        struct job_asset asset;
        struct job job;
        int64_t id = -1;

        memset(&job, 0, sizeof(job));
        memset(&asset, 0, sizeof(asset));
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
        snprintf(asset.asset_id, sizeof(asset.asset_id), "%s", KEY1);
        job.assets = &asset;
        job.nassets = 1;
        CHECK_INT(store_job_insert(st, &job, &id), 0);
        return id;
}

static void test_cleanup(struct spool *sp)
{
        struct store *st = NULL;
        char err[512] = "", queued[33], failed[33], done[33], orphan[33], path[800];
        char tok_old[33], tok_new[33], tok_edge[33];
        char *p, *sold = NULL, *snew = NULL, *sedge = NULL, src[700];
        int64_t jq, jf, jd;

        snprintf(src, sizeof(src), "%s", tmp_path("cleanup-src"));
        CHECK_INT(store_open(&st, tmp_path("queue.db"), err, sizeof(err)), 0);
        if (st == NULL) {
                fprintf(stderr, "store_open: %s\n", err);
                return;
        }
        CHECK_INT(store_experiment_insert(st, KEY1, "ws", "proj", NULL), 0);
        CHECK_INT(write_file(src, "x", 1), 0);
        CHECK_INT(spool_snapshot(sp, src, 1, queued, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, src, 1, failed, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, src, 1, done, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, src, 1, orphan, err, sizeof(err)), 0);
        jq = add_job(st, "q", queued);
        jf = add_job(st, "f", failed);
        jd = add_job(st, "d", done);
        CHECK_INT(store_job_set_failed(st, jf, "x", "x"), 0);
        CHECK_INT(store_job_set_done(st, jd, NULL), 0);
        CHECK(jq > 0);
        /* Files whose names are not spool names are not ours to remove. */
        snprintf(path, sizeof(path), "%s/README", spooldir);
        CHECK_INT(write_file(path, "keep", 4), 0);

        /* Staging: an old file goes, a fresh one (and one just under an hour old) stays. */
        CHECK_INT(spool_stage_new(sp, tok_old, &sold, err, sizeof(err)), 0);
        CHECK_INT(spool_stage_new(sp, tok_new, &snew, err, sizeof(err)), 0);
        CHECK_INT(spool_stage_new(sp, tok_edge, &sedge, err, sizeof(err)), 0);
        if (sold == NULL || snew == NULL || sedge == NULL)
                goto out;
        set_age(sold, 2 * 3600);
        set_age(sedge, 3600 - 120);
        /* An old snapshot that is referenced stays however old it is. */
        p = spool_path(sp, queued);
        set_age(p, 30 * 24 * 3600);
        free(p);

        spool_cleanup(sp, st);

#define IN_SPOOL(n) (snprintf(path, sizeof(path), "%s/%s", spooldir, (n)), exists(path))
        CHECK(IN_SPOOL(queued));
        CHECK(IN_SPOOL(failed));
        CHECK(!IN_SPOOL(done));
        CHECK(!IN_SPOOL(orphan));
        CHECK(IN_SPOOL("README"));
        CHECK(IN_SPOOL("staging"));
#undef IN_SPOOL
        CHECK(!exists(sold));
        CHECK(exists(snew));
        CHECK(exists(sedge));
        /* The survivors are still usable. */
        {
                int64_t size = -1;
                char name[33];

                CHECK_INT(spool_claim_staged(sp, tok_new, name, &size, err, sizeof(err)), 0);
                CHECK_INT(size, 0);
                spool_remove(sp, name);
        }
out:
        free(sold);
        free(snew);
        free(sedge);
        store_close(st);
}

int main(void)
{
        struct spool *sp = NULL;
        char err[512] = "";
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_spool: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        fds = count_fds();
        snprintf(spooldir, sizeof(spooldir), "%s/state/spool", tmpdir);
        CHECK_INT(spool_open(&sp, spooldir, 0, 0, err, sizeof(err)), 0);
        if (sp != NULL) {
                struct stat st;

                CHECK_INT(stat(tmp_path("state/spool/staging"), &st), 0);
                CHECK(S_ISDIR(st.st_mode));
                CHECK_INT(st.st_mode & 0777, 0700);
                test_snapshot(sp);
                test_staging(sp);
                test_cleanup(sp);
                spool_close(sp);
        }
        test_budget();
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_spool");
}
