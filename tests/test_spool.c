/*
 * test_spool.c — the spool (daemon/spool.c) in a temporary state directory:
 * who may own it, snapshots from paths and descriptors (procfs included),
 * sources that change while copied, the manifest each snapshot carries,
 * links planted in the spool, modes, the byte budget, staging, pins and
 * deferred removal on a real libuv loop, quarantine and listing. The loop
 * is closed at the end (no handle or request left) and no file descriptor
 * may be left open.
 */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "log.h"
#include "util.h"

#define MANIFEST "{\"v\":1,\"token\":\"0123456789abcdef0123456789abcdef\",\"logical_path\":\"x\"}"

static char tmpdir[] = "/tmp/ferry-test-spool-XXXXXX";
static char spooldir[600], qdir[600];
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

static int file_mode(const char *path)
{
        struct stat sb;

        return lstat(path, &sb) == 0 ? (int)(sb.st_mode & 07777) : -1;
}

/* The manifest attached to a file, or "(none: <errno>)". */
static const char *manifest_of(const char *path)
{
        static char buf[2][SPOOL_MANIFEST_MAX + 64];
        static int next;
        char *b = buf[next++ % 2];
        ssize_t n = lgetxattr(path, SPOOL_MANIFEST_XATTR, b, sizeof(buf[0]) - 1);

        if (n < 0) {
                snprintf(b, sizeof(buf[0]), "(none: %s)", strerror(errno));
                return b;
        }
        b[n] = '\0';
        return b;
}

/* Does the file system holding `dir` keep user xattrs? */
static bool dir_keeps_xattrs(const char *dir)
{
        const char *probe = in_dir(dir, ".xattr-probe");
        bool ok;

        if (write_file(probe, "", 0) != 0)
                return false;
        ok = setxattr(probe, "user.ferry.probe", "1", 1, 0) == 0;
        unlink(probe);
        return ok;
}

static void run_loop(void)
{
        uv_run(&loop, UV_RUN_DEFAULT);
}

/* A malloc'd array of malloc'd copies of names (for spool_discard). */
static char **name_array(const char *a, const char *b)
{
        char **v = calloc(2, sizeof(*v));

        if (v == NULL)
                return NULL;
        v[0] = strdup(a);
        v[1] = b ? strdup(b) : NULL;
        return v;
}

/* ---- tests: opening ------------------------------------------------------- */

/* Snapshot the file at `path` through a descriptor, as ferryd does with one a client passed. */
static int spool_snapshot(struct spool *sp, const char *path, const char *manifest, char name[33],
                          int64_t *size, char *err, size_t errlen)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

        if (fd < 0)
                return FERRY_ENOTFOUND;
        rc = spool_snapshot_fd(sp, fd, path, manifest, name, size, err, errlen);
        close(fd);
        return rc;
}

static void test_open_refusals(void)
{
        struct spool *sp;
        char err[512], dir[600], target[600], q[600];
        int rc;

        /* A spool writable by others: refused, naming it. */
        snprintf(dir, sizeof(dir), "%s", tmp_path("open777"));
        snprintf(q, sizeof(q), "%s", tmp_path("open777-q"));
        CHECK_INT(mkdir(dir, 0700), 0);
        CHECK_INT(chmod(dir, 0777), 0);
        sp = (struct spool *)&sp;
        err[0] = '\0';
        rc = spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err));
        CHECK(rc < 0);
        CHECK(sp == NULL);
        CHECK(strstr(err, dir) != NULL);
        CHECK(strstr(err, "0777") != NULL);
        if (strstr(err, "0777") == NULL)
                fprintf(stderr, "message was: %s\n", err);
        /* Writable by its group: refused too. */
        CHECK_INT(chmod(dir, 0770), 0);
        err[0] = '\0';
        CHECK(spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err)) < 0);
        CHECK(strstr(err, "group") != NULL);
        /* Fixed, it opens. */
        CHECK_INT(chmod(dir, 0700), 0);
        CHECK_INT(spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err)), 0);
        spool_close(sp);

        /* Owned by another uid. */
        snprintf(dir, sizeof(dir), "%s", tmp_path("other-owner"));
        CHECK_INT(mkdir(dir, 0700), 0);
        if (geteuid() != 0) {
                fprintf(stderr, "test_spool: skipped \"a spool owned by another uid\": only root "
                                "can give a directory away\n");
        } else {
                CHECK_INT(chown(dir, 65534, 65534), 0);
                err[0] = '\0';
                sp = (struct spool *)&sp;
                CHECK(spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err)) < 0);
                CHECK(sp == NULL);
                CHECK(strstr(err, dir) != NULL);
                CHECK(strstr(err, "65534") != NULL);
                if (strstr(err, "65534") == NULL)
                        fprintf(stderr, "message was: %s\n", err);
        }

        /* A symlink in place of the spool: refused, and nothing made through it. */
        snprintf(target, sizeof(target), "%s", tmp_path("link-target"));
        snprintf(dir, sizeof(dir), "%s", tmp_path("linked-spool"));
        CHECK_INT(mkdir(target, 0700), 0);
        CHECK_INT(symlink(target, dir), 0);
        err[0] = '\0';
        CHECK(spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err)) < 0);
        CHECK(strstr(err, "symbolic link") != NULL);
        /* Bug: spool_open() runs util_mkdir_p(<dir>/staging) before it checks <dir>, so
         * "staging" is created inside the link's target. */
        CHECK_INT(count_entries(target), 0);

        /*
         * spool.h: "The directories must be owned by this uid and not writable
         * by others" — the quarantine too: snapshots are moved there and
         * `ferry recover` re-queues what it finds there.
         */
        snprintf(dir, sizeof(dir), "%s", tmp_path("q-open"));
        snprintf(q, sizeof(q), "%s", tmp_path("q-open-quarantine"));
        CHECK_INT(mkdir(q, 0700), 0);
        CHECK_INT(chmod(q, 0777), 0);
        err[0] = '\0';
        sp = NULL;
        rc = spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err));
        /* Bug: spool_open() checks the spool and staging folders but never the quarantine. */
        CHECK(rc < 0);
        if (rc == 0)
                fprintf(stderr, "a world-writable quarantine %s was accepted\n", q);
        spool_close(sp);

        /* A spool that cannot be created. */
        CHECK_INT(write_file(tmp_path("plainfile"), "x", 1), 0);
        err[0] = '\0';
        sp = (struct spool *)&sp;
        CHECK(spool_open(&sp, &loop, tmp_path("plainfile/spool"), q, 0, 0, err, sizeof(err)) < 0);
        CHECK(sp == NULL);
        CHECK(err[0] != '\0');
}

/* ---- tests: snapshots ----------------------------------------------------- */

static void test_snapshot_path(struct spool *sp)
{
        char name[33] = "", name2[33] = "", err[512] = "";
        size_t len = 300 * 1024 + 7, i;
        char *data = malloc(len), *back = malloc(len + 16), *path;
        char src[700];
        int64_t size = -1;
        int before;

        snprintf(src, sizeof(src), "%s", tmp_path("source.bin"));
        if (data == NULL || back == NULL)
                goto out;
        for (i = 0; i < len; i++)
                data[i] = (char)((i * 2654435761u) >> 13);
        CHECK_INT(write_file(src, data, len), 0);

        CHECK_INT(spool_snapshot(sp, src, MANIFEST, name, &size, err, sizeof(err)), 0);
        CHECK_INT(size, len);
        CHECK(is_hex_name(name));
        path = spool_path(sp, name);
        CHECK(path != NULL && strncmp(path, spooldir, strlen(spooldir)) == 0);
        CHECK_INT(read_file(path, back, len + 16), len);
        CHECK(memcmp(back, data, len) == 0);
        /* Private, synced, and labelled with its version's manifest. */
        CHECK_INT(file_mode(path), 0600);
        CHECK_STR(manifest_of(path), MANIFEST);
        free(path);
        /* The snapshot is independent of its source. */
        CHECK_INT(write_file(src, "changed", 7), 0);
        path = spool_path(sp, name);
        CHECK_INT(read_file(path, back, len + 16), len);
        CHECK(memcmp(back, data, len) == 0);
        free(path);

        /* No manifest: none attached. An empty file. */
        CHECK_INT(spool_snapshot(sp, src, NULL, name2, &size, err, sizeof(err)), 0);
        CHECK(strcmp(name, name2) != 0);
        CHECK_INT(size, 7);
        path = spool_path(sp, name2);
        CHECK_INT(read_file(path, back, len), 7);
        CHECK(memcmp(back, "changed", 7) == 0);
        CHECK_INT(lgetxattr(path, SPOOL_MANIFEST_XATTR, back, 16), -1);
        free(path);
        spool_remove_now(sp, name2);
        CHECK_INT(write_file(src, "", 0), 0);
        CHECK_INT(spool_snapshot(sp, src, MANIFEST, name2, &size, err, sizeof(err)), 0);
        CHECK_INT(size, 0);
        path = spool_path(sp, name2);
        CHECK_INT(read_file(path, back, len), 0);
        free(path);
        spool_remove_now(sp, name2);
        path = spool_path(sp, name2);
        CHECK(!exists(path));
        free(path);
        spool_remove_now(sp, name2);           /* already gone: quiet */
        spool_remove_now(sp, "../source.bin"); /* not a spool name: ignored */
        CHECK(exists(src));

        /* A manifest as large as ferryd ever writes fits this file system's xattrs. */
        if (dir_keeps_xattrs(spooldir)) {
                char *big = malloc(SPOOL_MANIFEST_MAX + 1);

                if (big != NULL) {
                        memset(big, 'm', SPOOL_MANIFEST_MAX);
                        big[0] = '"';
                        big[SPOOL_MANIFEST_MAX - 1] = '"';
                        big[SPOOL_MANIFEST_MAX] = '\0';
                        CHECK_INT(spool_snapshot(sp, src, big, name2, &size, err, sizeof(err)), 0);
                        path = spool_path(sp, name2);
                        CHECK_INT(strlen(manifest_of(path)), SPOOL_MANIFEST_MAX);
                        free(path);
                        spool_remove_now(sp, name2);
                        free(big);
                }
        }

        /* Failures leave no spool file behind, and say what failed. */
        before = count_entries(spooldir);
        err[0] = '\0';
        CHECK_INT(spool_snapshot(sp, tmpdir, NULL, name2, &size, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "regular file") != NULL);
        CHECK_INT(count_entries(spooldir), before);
        /* Symlinks to regular files are followed (the client opened the path). */
        CHECK_INT(write_file(src, "12345", 5), 0);
        CHECK_INT(symlink(src, tmp_path("link.bin")), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("link.bin"), NULL, name2, &size, err, sizeof(err)),
                  0);
        CHECK_INT(size, 5);
        CHECK_INT(count_entries(spooldir), before + 1);
        spool_remove_now(sp, name2);
        spool_remove_now(sp, name);
        CHECK_INT(count_entries(spooldir), before - 1);
        CHECK_INT(spool_sync(sp), 0);
out:
        free(data);
        free(back);
}

static void test_snapshot_fd(struct spool *sp)
{
        char name[33], err[512], want[64], *path, *buf = malloc(1 << 16);
        int64_t size = -1;
        int fd, pipefd[2], before;
        ssize_t n;

        if (buf == NULL)
                return;
        /* A descriptor already read to its end: the whole file is copied all the same. */
        CHECK_INT(write_file(tmp_path("fd-src"), "descriptor content", 18), 0);
        fd = open(tmp_path("fd-src"), O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        CHECK_INT(read(fd, buf, 64), 18);
        CHECK_INT(
            spool_snapshot_fd(sp, fd, "the client's file", MANIFEST, name, &size, err, sizeof(err)),
            0);
        close(fd);
        CHECK_INT(size, 18);
        path = spool_path(sp, name);
        CHECK_INT(read_file(path, buf, 1 << 16), 18);
        CHECK(memcmp(buf, "descriptor content", 18) == 0);
        CHECK_STR(manifest_of(path), MANIFEST);
        CHECK_INT(file_mode(path), 0600);
        free(path);
        spool_remove_now(sp, name);

        /* A regular file of size 0. */
        CHECK_INT(write_file(tmp_path("fd-empty"), "", 0), 0);
        fd = open(tmp_path("fd-empty"), O_RDONLY | O_CLOEXEC);
        size = -1;
        CHECK_INT(spool_snapshot_fd(sp, fd, "empty", NULL, name, &size, err, sizeof(err)), 0);
        close(fd);
        CHECK_INT(size, 0);
        spool_remove_now(sp, name);

        /* procfs reports size 0 but has content: all of it is copied, and counted. */
        fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        size = -1;
        err[0] = '\0';
        CHECK_INT(
            spool_snapshot_fd(sp, fd, "/proc/self/status", NULL, name, &size, err, sizeof(err)), 0);
        close(fd);
        CHECK(size > 100);
        path = spool_path(sp, name);
        n = read_file(path, buf, (1 << 16) - 1);
        CHECK_INT(n, size);
        if (n > 0) {
                buf[n] = '\0';
                snprintf(want, sizeof(want), "\nPid:\t%d\n", (int)getpid());
                CHECK(strncmp(buf, "Name:", 5) == 0);
                CHECK(strstr(buf, want) != NULL);
                CHECK(strstr(buf, "\nVmFlags") != NULL ||
                      strstr(buf, "voluntary_ctxt_switches") != NULL); /* its last lines too */
        }
        free(path);
        spool_remove_now(sp, name);

        /* Not a regular file: refused by the name given, nothing left behind. */
        before = count_entries(spooldir);
        CHECK_INT(pipe(pipefd), 0);
        err[0] = '\0';
        CHECK_INT(spool_snapshot_fd(sp, pipefd[0], "the pipe", NULL, name, &size, err, sizeof(err)),
                  FERRY_EINVAL);
        CHECK(strstr(err, "the pipe") != NULL);
        close(pipefd[0]);
        close(pipefd[1]);
        CHECK_INT(count_entries(spooldir), before);
        free(buf);
}

/* The file a SIGALRM handler appends to while a snapshot copies it. */
static volatile sig_atomic_t grow_fd = -1, grow_times;

static void grow_on_alarm(int sig)
{
        int saved = errno;

        (void)sig;
        if (grow_fd >= 0 && grow_times != 0) {
                if (write(grow_fd, "+", 1) == 1 && grow_times > 0)
                        grow_times--;
        }
        errno = saved;
}

/* Arm a timer that fires every `usec` (0: once after `first`), appending to fd each time. */
static void grow_start(int fd, int times, long first, long usec)
{
        struct sigaction sa;
        struct itimerval it;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = grow_on_alarm;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        grow_fd = fd;
        grow_times = times;
        memset(&it, 0, sizeof(it));
        it.it_value.tv_usec = first;
        it.it_interval.tv_usec = usec;
        setitimer(ITIMER_REAL, &it, NULL);
}

static void grow_stop(void)
{
        struct itimerval it;

        memset(&it, 0, sizeof(it));
        setitimer(ITIMER_REAL, &it, NULL);
        grow_fd = -1;
        signal(SIGALRM, SIG_IGN);
}

/* Can the file system holding `dir` clone files (FICLONE)? Then a copy takes no time. */
static bool dir_reflinks(const char *dir)
{
        int a = open(in_dir(dir, ".clone-a"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int b = open(in_dir(dir, ".clone-b"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = a >= 0 && b >= 0 && write(a, "x", 1) == 1 && ioctl(b, FICLONE, a) == 0;

        if (a >= 0)
                close(a);
        if (b >= 0)
                close(b);
        unlink(in_dir(dir, ".clone-a"));
        unlink(in_dir(dir, ".clone-b"));
        return ok;
}

static void test_changing_source(struct spool *sp)
{
        const size_t len = 16 << 20;
        char name[33], err[512], src[700], a[65], b[65], *path, *data = calloc(1, len);
        int64_t size = -1, settled = -1;
        int fd, before, rc;

        snprintf(src, sizeof(src), "%s", tmp_path("growing.bin"));
        if (data == NULL)
                return;
        if (dir_reflinks(tmpdir)) {
                fprintf(stderr,
                        "test_spool: skipped \"a source that changes while it is copied\": "
                        "%s clones files in no time, so no change can land mid-copy\n",
                        tmpdir);
                free(data);
                return;
        }
        memset(data, 'g', len);
        CHECK_INT(write_file(src, data, len), 0);
        free(data);
        before = count_entries(spooldir);

        /* A file that keeps changing (appended to every 100 µs while a 16 MiB copy runs) is
         * refused after a retry. */
        fd = open(src, O_WRONLY | O_APPEND | O_CLOEXEC);
        CHECK(fd >= 0);
        grow_start(fd, -1, 100, 100);
        err[0] = '\0';
        rc = spool_snapshot(sp, src, NULL, name, &size, err, sizeof(err));
        grow_stop();
        CHECK_INT(rc, FERRY_EIO);
        CHECK(strstr(err, "changing") != NULL);
        CHECK(strstr(err, src) != NULL);
        if (rc == 0)
                fprintf(stderr, "a source appended to all along was snapshotted\n");
        CHECK_INT(count_entries(spooldir), before);

        /* A file that changes once is copied again: the snapshot is what it settled to. */
        {
                struct stat sb;

                CHECK_INT(fstat(fd, &sb), 0);
                settled = (int64_t)sb.st_size + 1;
        }
        grow_start(fd, 1, 200, 0);
        rc = spool_snapshot(sp, src, NULL, name, &size, err, sizeof(err));
        grow_stop();
        close(fd);
        CHECK_INT(rc, 0);
        if (rc == 0) {
                struct stat sb;

                CHECK_INT(stat(src, &sb), 0);
                CHECK_INT(size, sb.st_size);
                CHECK_INT(size, settled);
                path = spool_path(sp, name);
                CHECK_INT(util_sha256_file(path, a), 0);
                CHECK_INT(util_sha256_file(src, b), 0);
                CHECK_STR(a, b);
                free(path);
                spool_remove_now(sp, name);
        }
        unlink(src);
}

/* Manifests on a file system that keeps no user xattrs: the snapshot is made without one. */
static void test_manifest_absent(void)
{
        static const char *const candidates[] = {"/dev/shm", "/run", "/dev", "/var/tmp"};
        char dir[600] = "", err[512], name[33], *path;
        const char *env = getenv("FERRY_TEST_NOXATTR_DIR");
        struct spool *sp = NULL;
        int64_t size = -1;
        size_t i;

        for (i = 0; i <= sizeof(candidates) / sizeof(candidates[0]) && dir[0] == '\0'; i++) {
                const char *base = i == 0 ? env : candidates[i - 1];

                if (base == NULL)
                        continue;
                snprintf(dir, sizeof(dir), "%s/ferry-noxattr-XXXXXX", base);
                if (mkdtemp(dir) == NULL) {
                        dir[0] = '\0';
                        continue;
                }
                if (dir_keeps_xattrs(dir)) {
                        rm_rf(dir);
                        dir[0] = '\0';
                }
        }
        if (dir[0] == '\0') {
                fprintf(stderr, "test_spool: skipped \"no manifest where the file system keeps no "
                                "xattrs\": every writable file system here keeps user xattrs (set "
                                "FERRY_TEST_NOXATTR_DIR to a directory on one that does not)\n");
                return;
        }
        CHECK_INT(write_file(in_dir(dir, "src"), "abc", 3), 0);
        CHECK_INT(
            spool_open(&sp, &loop, in_dir(dir, "spool"), in_dir(dir, "q"), 0, 0, err, sizeof(err)),
            0);
        if (sp != NULL) {
                CHECK_INT(
                    spool_snapshot(sp, in_dir(dir, "src"), MANIFEST, name, &size, err, sizeof(err)),
                    0);
                CHECK_INT(size, 3);
                path = spool_path(sp, name);
                CHECK(strncmp(manifest_of(path), "(none", 5) == 0);
                free(path);
                spool_close(sp);
        }
        rm_rf(dir);
}

/* ---- tests: reading spool files -------------------------------------------- */

static void test_open_file(struct spool *sp)
{
        char name[33], err[512], buf[16];
        const char *planted = "abcdefabcdefabcdefabcdefabcdef00";
        int64_t size;
        int fd;

        CHECK_INT(write_file(tmp_path("readable"), "spooled", 7), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("readable"), NULL, name, &size, err, sizeof(err)), 0);
        fd = spool_open_file(sp, name);
        CHECK(fd >= 0);
        if (fd >= 0) {
                CHECK_INT(read(fd, buf, sizeof(buf)), 7);
                CHECK(memcmp(buf, "spooled", 7) == 0);
                CHECK_INT(write(fd, "x", 1), -1); /* read-only */
                CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
                close(fd);
        }
        spool_remove_now(sp, name);

        /* A link planted in the spool under a valid-looking name is not followed. */
        CHECK_INT(write_file(tmp_path("secret"), "not yours", 9), 0);
        CHECK_INT(symlink(tmp_path("secret"), in_dir(spooldir, planted)), 0);
        CHECK_INT(spool_open_file(sp, planted), -ELOOP);
        unlink(in_dir(spooldir, planted));

        /* Names that are not spool names are never opened. */
        CHECK_INT(spool_open_file(sp, "../readable"), -EINVAL);
        CHECK_INT(spool_open_file(sp, "staging"), -EINVAL);
        CHECK_INT(spool_open_file(sp, "ABCDEFABCDEFABCDEFABCDEFABCDEF00"), -EINVAL);
        CHECK_INT(spool_open_file(sp, "abcdefabcdefabcdefabcdefabcdef0"), -EINVAL);
        CHECK_INT(spool_open_file(sp, ""), -EINVAL);
        CHECK_INT(spool_open_file(sp, "00000000000000000000000000000000"), -ENOENT);
}

/* ---- tests: budget and staging --------------------------------------------- */

static void test_budget(void)
{
        struct spool *sp = NULL, *unlimited = NULL;
        char err[512] = "";

        CHECK_INT(spool_open(&sp, &loop, tmp_path("budget"), tmp_path("budget-q"), 1000, 100, err,
                             sizeof(err)),
                  0);
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
        /* Discarding a delivered version's files gives its bytes back at once. */
        CHECK_INT(spool_reserve(sp, 700, err, sizeof(err)), 0);
        spool_discard(sp, 1, name_array("00000000000000000000000000000001", NULL), 1, 300);
        CHECK_INT(spool_used(sp), 400);
        run_loop();
        spool_close(sp);

        /* Budget 0: no limit. */
        CHECK_INT(spool_open(&unlimited, &loop, tmp_path("budget"), tmp_path("budget-q"), 0, 0, err,
                             sizeof(err)),
                  0);
        if (unlimited == NULL)
                return;
        CHECK_INT(spool_budget(unlimited), 0);
        CHECK_INT(spool_reserve(unlimited, (int64_t)1 << 50, err, sizeof(err)), 0);
        CHECK_INT(spool_used(unlimited), (int64_t)1 << 50);
        spool_close(unlimited);
        spool_close(NULL);
}

static void test_clean_staging(struct spool *sp)
{
        const char *tok = "0123456789abcdef0123456789abcdef";
        char staging[800];

        snprintf(staging, sizeof(staging), "%s/staging", spooldir);

        /* Protocol 1 left in-memory data under staging/: emptied and removed at start. */
        CHECK_INT(mkdir(staging, 0700), 0);
        CHECK_INT(write_file(in_dir(staging, tok), "old", 3), 0);
        CHECK_INT(write_file(in_dir(staging, "README"), "keep", 4), 0);
        CHECK_INT(spool_clean_staging(sp), 1);
        CHECK(!exists(in_dir(staging, tok)));
        CHECK(exists(in_dir(staging, "README"))); /* not a staging name: left alone */
        unlink(in_dir(staging, "README"));
        CHECK_INT(spool_clean_staging(sp), 0);
        CHECK(!exists(staging));
}

/* ---- tests: pins and deferred removal -------------------------------------- */

static void test_pins(struct spool *sp)
{
        char n1[33], n2[33], n3[33], n4[33], err[512], *p1, *p2, *p3, *p4;
        int64_t size, used;

        CHECK_INT(write_file(tmp_path("pinned-src"), "pinned", 6), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("pinned-src"), NULL, n1, &size, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("pinned-src"), NULL, n2, &size, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("pinned-src"), NULL, n3, &size, err, sizeof(err)), 0);
        CHECK_INT(spool_snapshot(sp, tmp_path("pinned-src"), NULL, n4, &size, err, sizeof(err)), 0);
        p1 = spool_path(sp, n1);
        p2 = spool_path(sp, n2);
        p3 = spool_path(sp, n3);
        p4 = spool_path(sp, n4);
        CHECK_INT(spool_reserve(sp, 100, err, sizeof(err)), 0);
        used = spool_used(sp);

        /* Two readers of job 7; the queue is done with its files meanwhile. */
        spool_pin(sp, 7);
        spool_pin(sp, 7);
        spool_discard(sp, 7, name_array(n1, n2), 2, 12);
        CHECK_INT(spool_used(sp), used - 12); /* the budget is freed at once */
        CHECK(!spool_busy(sp));               /* nothing may be removed yet */
        run_loop();
        CHECK(exists(p1) && exists(p2));
        spool_unpin(sp, 7);
        run_loop();
        CHECK(exists(p1) && exists(p2)); /* one reader left */
        /* The pinned files are still readable through the spool. */
        {
                int fd = spool_open_file(sp, n1);

                CHECK(fd >= 0);
                if (fd >= 0)
                        close(fd);
        }
        spool_unpin(sp, 7);
        CHECK(spool_busy(sp));
        run_loop();
        CHECK(!spool_busy(sp));
        CHECK(!exists(p1));
        CHECK(!exists(p2));

        /* An unpinned job's files go on the next loop turn; another job's pin does not hold them.
         */
        spool_pin(sp, 8);
        spool_discard(sp, 9, name_array(n3, NULL), 1, 6);
        run_loop();
        CHECK(!exists(p3));
        /* Discarded twice while pinned: both sets wait, both go with the last unpin. */
        spool_discard(sp, 8, name_array(n4, NULL), 1, 6);
        spool_discard(sp, 8, name_array("00000000000000000000000000000abc", NULL), 1, 0);
        run_loop();
        CHECK(exists(p4));
        spool_unpin(sp, 8);
        spool_unpin(sp, 8);  /* one unpin too many: harmless */
        spool_unpin(sp, 42); /* never pinned: harmless */
        run_loop();
        CHECK(!exists(p4));
        CHECK(!spool_busy(sp));
        CHECK_INT(spool_used(sp), used - 24);
        spool_release(sp, spool_used(sp));
        free(p1);
        free(p2);
        free(p3);
        free(p4);
}

/* ---- tests: start-up: listing and quarantine ------------------------------- */

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_list_and_quarantine(void)
{
        struct spool *sp = NULL;
        char dir[600], q[600], err[512], made[5][33], *sorted[5], **names = NULL, path[1200];
        const char *folder;
        int64_t size;
        size_t n = 0, i;
        int rc;

        snprintf(dir, sizeof(dir), "%s", tmp_path("lq/spool"));
        snprintf(q, sizeof(q), "%s", tmp_path("lq/quarantine"));
        CHECK_INT(util_mkdir_p(tmp_path("lq"), 0700), 0);
        CHECK_INT(spool_open(&sp, &loop, dir, q, 0, 0, err, sizeof(err)), 0);
        if (sp == NULL)
                return;
        CHECK_INT(spool_list(sp, &names, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 0);
        free(names);
        CHECK(spool_quarantine_folder(sp) == NULL);
        CHECK(!exists(q)); /* made on first use only */

        CHECK_INT(write_file(tmp_path("lq-src"), "q", 1), 0);
        for (i = 0; i < 5; i++) {
                CHECK_INT(spool_snapshot(sp, tmp_path("lq-src"), i % 2 ? MANIFEST : NULL, made[i],
                                         &size, err, sizeof(err)),
                          0);
                sorted[i] = made[i];
        }
        qsort(sorted, 5, sizeof(sorted[0]), cmp_str);
        /* Names that are not snapshots are not listed. */
        CHECK_INT(write_file(in_dir(dir, "README"), "x", 1), 0);
        CHECK_INT(write_file(in_dir(dir, "ABCDEFABCDEFABCDEFABCDEFABCDEF00"), "x", 1), 0);
        CHECK_INT(write_file(in_dir(dir, "abcdefabcdefabcdefabcdefabcdef0"), "x", 1), 0);
        CHECK_INT(spool_list(sp, &names, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 5);
        for (i = 0; i < n && i < 5; i++)
                CHECK_STR(names[i], sorted[i]);
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
        /* Listing twice gives the same (the directory descriptor is rewound). */
        CHECK_INT(spool_list(sp, &names, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 5);
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);

        /* Quarantine: moved, never copied or deleted, with the manifest kept. */
        CHECK_INT(spool_quarantine(sp, made[1], err, sizeof(err)), 0);
        folder = spool_quarantine_folder(sp);
        CHECK(folder != NULL);
        if (folder == NULL)
                goto out;
        CHECK(strncmp(folder, q, strlen(q)) == 0 && folder[strlen(q)] == '/');
        /* <quarantine>/<UTC stamp>/, private. */
        {
                const char *stamp = folder + strlen(q) + 1;
                struct tm tm;
                const char *end;

                memset(&tm, 0, sizeof(tm));
                end = strptime(stamp, "%Y%m%dT%H%M%SZ", &tm);
                CHECK(end != NULL && *end == '\0');
                CHECK_INT(strlen(stamp), 16);
        }
        CHECK_INT(file_mode(folder), 0700);
        CHECK(!exists(in_dir(dir, made[1])));
        snprintf(path, sizeof(path), "%s/%s", folder, made[1]);
        CHECK(exists(path));
        CHECK_STR(manifest_of(path), MANIFEST);
        CHECK_INT(file_mode(path), 0600);
        CHECK_INT(spool_quarantine(sp, made[2], err, sizeof(err)), 0);
        CHECK_STR(spool_quarantine_folder(sp), folder); /* one folder per run */
        CHECK_INT(count_entries(folder), 2);
        err[0] = '\0';
        rc = spool_quarantine(sp, "00000000000000000000000000000000", err, sizeof(err));
        CHECK(rc < 0);
        CHECK(strstr(err, "00000000000000000000000000000000") != NULL);
        CHECK_INT(spool_list(sp, &names, &n, err, sizeof(err)), 0);
        CHECK_INT(n, 3);
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
out:
        spool_close(sp);
}

int main(void)
{
        struct spool *sp = NULL;
        char err[512] = "";
        mode_t old_mask;
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_spool: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        /* libuv opens a process-wide pipe on its first loop, for good: count after it. */
        if (uv_loop_init(&loop) == 0)
                uv_loop_close(&loop);
        fds = count_fds();
        CHECK_INT(uv_loop_init(&loop), 0);
        /* No umask to help: every mode below is the spool's own doing. */
        old_mask = umask(0);
        snprintf(spooldir, sizeof(spooldir), "%s/state/spool", tmpdir);
        snprintf(qdir, sizeof(qdir), "%s/state/quarantine", tmpdir);
        CHECK_INT(spool_open(&sp, &loop, spooldir, qdir, 0, 0, err, sizeof(err)), 0);
        if (sp != NULL) {
                CHECK_INT(file_mode(tmp_path("state")), 0700);
                CHECK_INT(file_mode(spooldir), 0700);
                CHECK(!exists(tmp_path("state/spool/staging"))); /* protocol 1's, gone */
                CHECK_STR(spool_dir(sp), spooldir);
                CHECK(spool_dirfd(sp) >= 0);
                test_snapshot_path(sp);
                test_snapshot_fd(sp);
                test_changing_source(sp);
                test_open_file(sp);
                test_clean_staging(sp);
                test_pins(sp);
                spool_close(sp);
        } else {
                fprintf(stderr, "spool_open: %s\n", err);
        }
        test_manifest_absent();
        test_open_refusals();
        test_budget();
        test_list_and_quarantine();
        umask(old_mask);
        run_loop();
        CHECK_INT(uv_loop_close(&loop), 0);
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_spool");
}
