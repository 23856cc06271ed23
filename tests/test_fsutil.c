/*
 * test_fsutil.c — safe placement of downloaded files (daemon/fsutil.c) in a
 * temporary directory from an open source descriptor: nested creation, the
 * three overwrite modes, symlinked components, unsafe logical paths, sources
 * that cannot be read, the directory descriptor (not its name) deciding where
 * files land, and no temporary file left behind. Each
 * check on a directory compares its whole tree, so a stray file fails it.
 */
#include "fsutil.h"

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

#include <openssl/evp.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "log.h"

static char tmpdir[] = "/tmp/ferry-test-fsutil-XXXXXX";
static char target[600], outside[600], src1[600], src2[600];

/* ---- helpers -------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ssize_t w;

        if (fd < 0)
                return -1;
        w = write(fd, text, strlen(text));
        close(fd);
        return w == (ssize_t)strlen(text) ? 0 : -1;
}

/* The content of a (small) file, or "(missing)". */
static const char *content(const char *path)
{
        static char buf[4][256];
        static int next;
        char *b = buf[next++ % 4];
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        ssize_t n;

        if (fd < 0)
                return "(missing)";
        n = read(fd, b, sizeof(buf[0]) - 1);
        close(fd);
        b[n < 0 ? 0 : n] = '\0';
        return b;
}

static const char *in(const char *dir, const char *rel)
{
        static char buf[4][1200];
        static int next;
        char *b = buf[next++ % 4];

        snprintf(b, sizeof(buf[0]), "%s/%s", dir, rel);
        return b;
}

/* A whole tree as a sorted, comma-separated list of relative paths ("l:" marks symlinks). */
static char tree_names[64][300];
static int tree_n;
static size_t tree_root_len;

static int tree_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        if (ftw->level == 0 || tree_n >= 64)
                return 0;
        snprintf(tree_names[tree_n++], sizeof(tree_names[0]), "%s%s", flag == FTW_SL ? "l:" : "",
                 path + tree_root_len + 1);
        return 0;
}

static int cmp_names(const void *a, const void *b)
{
        return strcmp(a, b);
}

static const char *tree(const char *dir)
{
        static char out[4096];
        size_t off = 0;
        int i;

        tree_n = 0;
        tree_root_len = strlen(dir);
        out[0] = '\0';
        if (nftw(dir, tree_entry, 16, FTW_PHYS) != 0)
                return "(cannot walk)";
        qsort(tree_names, (size_t)tree_n, sizeof(tree_names[0]), cmp_names);
        for (i = 0; i < tree_n; i++)
                off += (size_t)snprintf(out + off, sizeof(out) - off, "%s%s", i ? "," : "",
                                        tree_names[i]);
        return out;
}

static void sha256_hex(const char *text, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0, i;

        EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
        for (i = 0; i < mdlen; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*
 * Place the file at `src` (opened here, read to its end first so that the
 * copy cannot rely on the descriptor's offset) at target/`lp`.
 */
static int place(int dirfd, const char *lp, const char *src, const char *sha,
                 enum fsutil_overwrite mode, enum fsutil_action *action, char *err, size_t errlen)
{
        char buf[512];
        int fd = open(src, O_RDONLY | O_CLOEXEC), rc;

        *action = (enum fsutil_action) - 1;
        err[0] = '\0';
        if (fd < 0) {
                fprintf(stderr, "cannot open source %s: %s\n", src, strerror(errno));
                check_failures++;
                return -1000;
        }
        while (read(fd, buf, sizeof(buf)) > 0)
                ;
        rc = fsutil_place_file(dirfd, target, lp, fd, sha, mode, action, err, errlen);
        close(fd);
        return rc;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_write_and_modes(int dfd)
{
        enum fsutil_action act;
        char err[512], sha1[65], sha2[65], file[800];
        struct stat before, after;
        struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};

        snprintf(file, sizeof(file), "%s/a/b/c.txt", target);
        sha256_hex("first content\n", sha1);
        sha256_hex("second, different content\n", sha2);

        /* Into new nested directories. */
        CHECK_INT(place(dfd, "a/b/c.txt", src1, NULL, FSUTIL_FAIL, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_WRITTEN);
        CHECK_STR(content(file), "first content\n");
        CHECK_STR(tree(target), "a,a/b,a/b/c.txt");
        CHECK_INT(stat(in(target, "a/b"), &before), 0);
        CHECK(S_ISDIR(before.st_mode));

        /* FAIL with identical content keeps the file untouched (with and without a hash). */
        CHECK_INT(utimensat(AT_FDCWD, file, old, 0), 0);
        CHECK_INT(stat(file, &before), 0);
        CHECK_INT(place(dfd, "a/b/c.txt", src1, NULL, FSUTIL_FAIL, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_KEPT);
        CHECK_INT(place(dfd, "a/b/c.txt", src1, sha1, FSUTIL_FAIL, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_KEPT);
        CHECK_INT(stat(file, &after), 0);
        CHECK_INT(after.st_ino, before.st_ino);
        CHECK_INT(after.st_mtime, 1000000000);

        /* FAIL with different content: refused, the file left as it was. */
        CHECK_INT(place(dfd, "a/b/c.txt", src2, NULL, FSUTIL_FAIL, &act, err, sizeof(err)),
                  FERRY_EEXIST);
        CHECK(strstr(err, "a/b/c.txt") != NULL);
        CHECK_INT(place(dfd, "a/b/c.txt", src2, sha2, FSUTIL_FAIL, &act, err, sizeof(err)),
                  FERRY_EEXIST);
        /* The hash given is what is compared. */
        CHECK_INT(place(dfd, "a/b/c.txt", src1, sha2, FSUTIL_FAIL, &act, err, sizeof(err)),
                  FERRY_EEXIST);
        CHECK_STR(content(file), "first content\n");
        CHECK_INT(stat(file, &after), 0);
        CHECK_INT(after.st_ino, before.st_ino);
        CHECK_INT(after.st_mtime, 1000000000);

        /* PRESERVE keeps whatever is there. */
        CHECK_INT(place(dfd, "a/b/c.txt", src2, NULL, FSUTIL_PRESERVE, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_PRESERVED);
        CHECK_STR(content(file), "first content\n");
        CHECK_INT(stat(file, &after), 0);
        CHECK_INT(after.st_ino, before.st_ino);
        CHECK_INT(after.st_mtime, 1000000000);
        /* ...and writes what is not. */
        CHECK_INT(place(dfd, "p.txt", src2, NULL, FSUTIL_PRESERVE, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_WRITTEN);
        CHECK_STR(content(in(target, "p.txt")), "second, different content\n");

        /* OVERWRITE replaces (a new file takes the name). */
        CHECK_INT(place(dfd, "a/b/c.txt", src2, NULL, FSUTIL_OVERWRITE, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_WRITTEN);
        CHECK_STR(content(file), "second, different content\n");
        CHECK_INT(place(dfd, "a/b/c.txt", src1, NULL, FSUTIL_OVERWRITE, &act, err, sizeof(err)), 0);
        CHECK_STR(content(file), "first content\n");
        /* A sibling in an existing directory. */
        CHECK_INT(place(dfd, "a/d.txt", src1, sha1, FSUTIL_FAIL, &act, err, sizeof(err)), 0);
        CHECK_INT(act, FSUTIL_WRITTEN);

        /* Nothing but the placed files: no temporary file anywhere. */
        CHECK_STR(tree(target), "a,a/b,a/b/c.txt,a/d.txt,p.txt");
}

static void test_symlinks(int dfd)
{
        enum fsutil_action act;
        char err[512];
        static const enum fsutil_overwrite modes[] = {FSUTIL_FAIL, FSUTIL_PRESERVE,
                                                      FSUTIL_OVERWRITE};
        size_t i;

        CHECK_INT(write_file(in(outside, "victim"), "do not touch\n"), 0);
        CHECK_INT(symlink(outside, in(target, "evil")), 0);
        CHECK_INT(symlink(outside, in(target, "a/evil2")), 0);
        CHECK_INT(symlink(in(outside, "victim"), in(target, "leaf")), 0);
        CHECK_INT(symlink(in(outside, "new.txt"), in(target, "dangle")), 0);

        for (i = 0; i < 3; i++) {
                /* A symlinked directory on the way. */
                CHECK_INT(place(dfd, "evil/x.txt", src1, NULL, modes[i], &act, err, sizeof(err)),
                          FERRY_EUNSAFE);
                CHECK(strstr(err, "evil") != NULL);
                CHECK_INT(
                    place(dfd, "a/evil2/sub/x.txt", src1, NULL, modes[i], &act, err, sizeof(err)),
                    FERRY_EUNSAFE);
                /* A symlinked leaf, pointing at a file or at nothing. */
                CHECK_INT(place(dfd, "leaf", src1, NULL, modes[i], &act, err, sizeof(err)),
                          FERRY_EUNSAFE);
                CHECK(strstr(err, "leaf") != NULL);
                CHECK_INT(place(dfd, "dangle", src1, NULL, modes[i], &act, err, sizeof(err)),
                          FERRY_EUNSAFE);
                /* A symlink to a file used as a directory. */
                CHECK_INT(place(dfd, "leaf/x", src1, NULL, modes[i], &act, err, sizeof(err)),
                          FERRY_EUNSAFE);
        }
        /* Nothing was written outside, and the links are still links. */
        CHECK_STR(tree(outside), "victim");
        CHECK_STR(content(in(outside, "victim")), "do not touch\n");
        CHECK_STR(tree(target), "a,a/b,a/b/c.txt,a/d.txt,l:a/evil2,l:dangle,l:evil,l:leaf,p.txt");

        /* Other things in the way: a file used as a directory, a directory as the leaf. */
        CHECK_INT(place(dfd, "a/d.txt/x", src1, NULL, FSUTIL_OVERWRITE, &act, err, sizeof(err)),
                  FERRY_EUNSAFE);
        CHECK_INT(place(dfd, "a/b", src1, NULL, FSUTIL_OVERWRITE, &act, err, sizeof(err)),
                  FERRY_EUNSAFE);
        CHECK_INT(place(dfd, "a/b", src1, NULL, FSUTIL_PRESERVE, &act, err, sizeof(err)),
                  FERRY_EUNSAFE);
        CHECK_STR(tree(target), "a,a/b,a/b/c.txt,a/d.txt,l:a/evil2,l:dangle,l:evil,l:leaf,p.txt");
}

static void test_bad_paths(int dfd)
{
        static const char *const bad[] = {
            "../escape.txt", "a/../../escape.txt", "/tmp/abs.txt", "",       "a//b.txt",
            "./x.txt",       "a/./x.txt",          "a\\b.txt",     "a/b/..", "x\n.txt"};
        enum fsutil_action act;
        char err[512];
        const char *before = NULL;
        char snapshot[4096];
        size_t i;

        before = tree(tmpdir);
        snprintf(snapshot, sizeof(snapshot), "%s", before);
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int rc = place(dfd, bad[i], src1, NULL, FSUTIL_OVERWRITE, &act, err, sizeof(err));

                if (rc != FERRY_EUNSAFE)
                        fprintf(stderr, "logical path \"%s\": %d\n", bad[i], rc);
                CHECK_INT(rc, FERRY_EUNSAFE);
                CHECK(err[0] != '\0');
        }
        CHECK_STR(tree(tmpdir), snapshot);
        CHECK_INT(access("/tmp/abs.txt", F_OK), -1);
}

static void test_bad_source(void)
{
        enum fsutil_action act;
        char err[512], dir[700];
        int dfd, fd, rc;

        snprintf(dir, sizeof(dir), "%s/t2", tmpdir);
        CHECK_INT(mkdir(dir, 0755), 0);
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        if (dfd < 0)
                return;
        /* A descriptor that is not open: an error, and no temporary file left behind. */
        err[0] = '\0';
        rc = fsutil_place_file(dfd, dir, "sub/x.bin", -1, NULL, FSUTIL_OVERWRITE, &act, err,
                               sizeof(err));
        CHECK(rc < 0);
        CHECK(err[0] != '\0');
        CHECK(strstr(err, "sub/x.bin") != NULL);
        CHECK_STR(tree(dir), "sub");
        /* A descriptor that cannot be read (a directory): likewise. */
        fd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        err[0] = '\0';
        rc = fsutil_place_file(dfd, dir, "sub/y.bin", fd, NULL, FSUTIL_OVERWRITE, &act, err,
                               sizeof(err));
        close(fd);
        CHECK(rc < 0);
        CHECK(err[0] != '\0');
        CHECK_STR(tree(dir), "sub");
        close(dfd);
}

/* The directory descriptor decides where a file lands; `dir` only names it in messages. */
static void test_dirfd_rules(void)
{
        enum fsutil_action act;
        char err[512], real[700], named[700];
        int dfd, fd;

        snprintf(real, sizeof(real), "%s/real", tmpdir);
        snprintf(named, sizeof(named), "%s/named", tmpdir);
        CHECK_INT(mkdir(real, 0755), 0);
        CHECK_INT(mkdir(named, 0755), 0);
        dfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        fd = open(src2, O_RDONLY | O_CLOEXEC);
        CHECK(dfd >= 0 && fd >= 0);
        if (dfd < 0 || fd < 0)
                goto out;
        CHECK_INT(
            fsutil_place_file(dfd, named, "f.txt", fd, NULL, FSUTIL_FAIL, &act, err, sizeof(err)),
            0);
        CHECK_INT(act, FSUTIL_WRITTEN);
        CHECK_STR(tree(real), "f.txt");
        CHECK_STR(tree(named), "");
        CHECK_STR(content(in(real, "f.txt")), "second, different content\n");
        /* The same descriptor again, now at its end: FAIL compares the whole file. */
        CHECK_INT(
            fsutil_place_file(dfd, named, "f.txt", fd, NULL, FSUTIL_FAIL, &act, err, sizeof(err)),
            0);
        CHECK_INT(act, FSUTIL_KEPT);
        /* ...and OVERWRITE still copies all of it. */
        CHECK_INT(fsutil_place_file(dfd, named, "g.txt", fd, NULL, FSUTIL_OVERWRITE, &act, err,
                                    sizeof(err)),
                  0);
        CHECK_STR(content(in(real, "g.txt")), "second, different content\n");
        /* Messages name the directory given. */
        CHECK_INT(write_file(in(real, "h.txt"), "other\n"), 0);
        err[0] = '\0';
        CHECK_INT(
            fsutil_place_file(dfd, named, "h.txt", fd, NULL, FSUTIL_FAIL, &act, err, sizeof(err)),
            FERRY_EEXIST);
        CHECK(strstr(err, named) != NULL && strstr(err, "h.txt") != NULL);
        CHECK_STR(content(in(real, "h.txt")), "other\n");
        CHECK_STR(tree(real), "f.txt,g.txt,h.txt");
out:
        if (fd >= 0)
                close(fd);
        if (dfd >= 0)
                close(dfd);
}

int main(void)
{
        int fds, dfd;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_fsutil: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        fds = count_fds();
        snprintf(target, sizeof(target), "%s/target", tmpdir);
        snprintf(outside, sizeof(outside), "%s/outside", tmpdir);
        snprintf(src1, sizeof(src1), "%s/src1", tmpdir);
        snprintf(src2, sizeof(src2), "%s/src2", tmpdir);
        CHECK_INT(mkdir(target, 0755), 0);
        CHECK_INT(mkdir(outside, 0755), 0);
        CHECK_INT(write_file(src1, "first content\n"), 0);
        CHECK_INT(write_file(src2, "second, different content\n"), 0);
        dfd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        if (dfd >= 0) {
                test_write_and_modes(dfd);
                test_symlinks(dfd);
                test_bad_paths(dfd);
                close(dfd);
        }
        test_bad_source();
        test_dirfd_rules();
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_fsutil");
}
