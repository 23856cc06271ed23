/*
 * test_cache.c — the download cache (daemon/cache.c) in a temporary
 * directory: insert and lookup, content sharing, LRU eviction under a byte
 * budget (mtimes set by the test), clearing, key rules. No file descriptor
 * may be left open.
 */
#include "cache.h"

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

#define BLOB 1000

static char tmpdir[] = "/tmp/ferry-test-cache-XXXXXX";
static char cachedir[600];

/* ---- helpers -------------------------------------------------------------- */

static void sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0, i;

        EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
        for (i = 0; i < mdlen; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Content of `len` bytes of `c`. */
static void fill(char *buf, char c, size_t len)
{
        memset(buf, c, len);
}

/*
 * Download `len` bytes of `c` into a cache temp file (its mtime set to
 * `mtime` when not 0) and insert it under `key`; `path` receives the blob
 * path. Returns cache_insert's code.
 */
static int put_at(struct cache *cache, const char *key, char c, size_t len, time_t mtime,
                  char *path, size_t plen)
{
        char tmp[4600], err[512] = "", buf[4096];
        int fd, rc;

        if (len > sizeof(buf) || cache_temp_path(cache, tmp, sizeof(tmp)) != 0)
                return -100;
        fill(buf, c, len);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
                if (fd >= 0)
                        close(fd);
                return -101;
        }
        close(fd);
        if (mtime != 0) {
                struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};

                if (utimensat(AT_FDCWD, tmp, ts, 0) != 0)
                        return -102;
        }
        rc = cache_insert(cache, key, tmp, path, plen, err, sizeof(err));
        if (rc != 0 && rc != FERRY_EINVAL)
                fprintf(stderr, "cache_insert %s: %s\n", key, err);
        if (exists(tmp)) {
                fprintf(stderr, "cache_insert left its temporary file %s\n", tmp);
                check_failures++;
        }
        return rc;
}

static int put(struct cache *cache, const char *key, char c, size_t len, char *path, size_t plen)
{
        return put_at(cache, key, c, len, 0, path, plen);
}

static void set_mtime(const char *path, time_t t)
{
        struct timespec ts[2];

        ts[0].tv_sec = ts[1].tv_sec = t;
        ts[0].tv_nsec = ts[1].tv_nsec = 0;
        if (utimensat(AT_FDCWD, path, ts, 0) != 0) {
                fprintf(stderr, "utimensat %s: %s\n", path, strerror(errno));
                check_failures++;
        }
}

static time_t mtime_of(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 ? st.st_mtime : (time_t)-1;
}

static int64_t usage_bytes(struct cache *c, int64_t *blobs)
{
        struct cache_usage u;

        memset(&u, 0xff, sizeof(u));
        if (cache_usage(c, &u) != 0)
                return -1;
        if (blobs)
                *blobs = u.blobs;
        return u.bytes;
}

static int ref_exists(const char *dir, const char *key)
{
        char p[1200];

        snprintf(p, sizeof(p), "%s/refs/%s", dir, key);
        return exists(p);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_round_trip_and_sharing(void)
{
        struct cache *c = NULL;
        struct cache_usage u;
        char err[512] = "", p1[4600] = "", p2[4600] = "", found[4600] = "", sha[65], want[4700];
        char buf[BLOB], back[BLOB + 8];
        int64_t blobs = -1;
        int fd;
        ssize_t n;

        CHECK_INT(cache_open(&c, cachedir, 0, err, sizeof(err)), 0);
        if (c == NULL)
                return;
        CHECK_INT(cache_usage(c, &u), 0);
        CHECK_INT(u.bytes, 0);
        CHECK_INT(u.blobs, 0);
        CHECK_INT(u.budget, 0);
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), FERRY_ENOTFOUND);

        CHECK_INT(put(c, "v1-a1", 'x', BLOB, p1, sizeof(p1)), 0);
        fill(buf, 'x', BLOB);
        sha256_hex(buf, BLOB, sha);
        snprintf(want, sizeof(want), "%s/blobs/%s", cachedir, sha);
        CHECK_STR(p1, want);
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), 0);
        CHECK_STR(found, p1);
        fd = open(found, O_RDONLY | O_CLOEXEC);
        n = fd >= 0 ? read(fd, back, sizeof(back)) : -1;
        if (fd >= 0)
                close(fd);
        CHECK_INT(n, BLOB);
        CHECK(n == BLOB && memcmp(back, buf, BLOB) == 0);

        /* The same bytes under another key share one blob. */
        CHECK_INT(put(c, "v2-a9", 'x', BLOB, p2, sizeof(p2)), 0);
        CHECK_STR(p2, p1);
        CHECK_INT(usage_bytes(c, &blobs), BLOB);
        CHECK_INT(blobs, 1);
        CHECK_INT(cache_lookup(c, "v2-a9", found, sizeof(found)), 0);
        CHECK_STR(found, p1);
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), 0);
        CHECK_STR(found, p1);
        CHECK_INT(count_entries(tmpdir), 1); /* nothing written outside the cache */

        /* A key inserted again names its new content. */
        CHECK_INT(put(c, "v2-a9", 'y', 10, p2, sizeof(p2)), 0);
        CHECK(strcmp(p2, p1) != 0);
        CHECK_INT(cache_lookup(c, "v2-a9", found, sizeof(found)), 0);
        CHECK_STR(found, p2);
        CHECK_INT(usage_bytes(c, &blobs), BLOB + 10);
        CHECK_INT(blobs, 2);

        /* A lookup records the use in the blob's mtime. */
        set_mtime(p1, time(NULL) - 5000);
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), 0);
        CHECK(mtime_of(p1) >= time(NULL) - 60);

        /* A blob that disappeared: not found, and its dangling ref is dropped. */
        CHECK_INT(unlink(p2), 0);
        CHECK(ref_exists(cachedir, "v2-a9"));
        CHECK_INT(cache_lookup(c, "v2-a9", found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK(!ref_exists(cachedir, "v2-a9"));

        /* Downloads a crash interrupted are removed when the cache opens. */
        CHECK_INT(cache_temp_path(c, found, sizeof(found)), 0);
        CHECK(strncmp(found, cachedir, strlen(cachedir)) == 0);
        fd = open(found, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        if (fd >= 0)
                close(fd);
        cache_close(c);
        c = NULL;
        CHECK(exists(found));
        CHECK_INT(cache_open(&c, cachedir, 0, err, sizeof(err)), 0);
        CHECK(!exists(found));
        /* ...while the content stays. */
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), 0);
        CHECK_STR(found, p1);
        cache_close(c);
        cache_close(NULL);
}

static void test_eviction(void)
{
        struct cache *c = NULL;
        char err[512] = "", p1[4600], p2[4600], p3[4600], p4[4600], p5[4600], found[4600];
        char dir[700];
        int64_t blobs = -1;
        time_t now = time(NULL);

        snprintf(dir, sizeof(dir), "%s/lru", tmpdir);
        CHECK_INT(cache_open(&c, dir, 3 * BLOB, err, sizeof(err)), 0);
        if (c == NULL)
                return;
        CHECK_INT(put(c, "k1", '1', BLOB, p1, sizeof(p1)), 0);
        CHECK_INT(put(c, "k2", '2', BLOB, p2, sizeof(p2)), 0);
        CHECK_INT(put(c, "k3", '3', BLOB, p3, sizeof(p3)), 0);
        CHECK_INT(usage_bytes(c, &blobs), 3 * BLOB);
        CHECK_INT(blobs, 3);
        /* Uses: k1 longest ago, then k3, then k2. */
        set_mtime(p1, now - 300);
        set_mtime(p2, now - 100);
        set_mtime(p3, now - 200);

        /* A fourth blob goes past the budget: exactly the least recently used one goes. */
        CHECK_INT(put(c, "k4", '4', BLOB, p4, sizeof(p4)), 0);
        CHECK_INT(usage_bytes(c, &blobs), 3 * BLOB);
        CHECK_INT(blobs, 3);
        CHECK(!exists(p1));
        CHECK(exists(p2) && exists(p3) && exists(p4));
        CHECK(ref_exists(dir, "k1")); /* refs go lazily... */
        CHECK_INT(cache_lookup(c, "k1", found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK(!ref_exists(dir, "k1")); /* ...at the lookup that finds the blob gone */

        /* Using k3 makes k2 the least recently used. */
        CHECK_INT(cache_lookup(c, "k3", found, sizeof(found)), 0);
        CHECK_STR(found, p3);
        CHECK_INT(put(c, "k5", '5', BLOB, p5, sizeof(p5)), 0);
        CHECK(usage_bytes(c, &blobs) <= 3 * BLOB);
        CHECK_INT(blobs, 3);
        CHECK_INT(cache_lookup(c, "k2", found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK_INT(cache_lookup(c, "k3", found, sizeof(found)), 0);
        CHECK_INT(cache_lookup(c, "k4", found, sizeof(found)), 0);
        CHECK_INT(cache_lookup(c, "k5", found, sizeof(found)), 0);
        CHECK_STR(found, p5);

        /* Two smaller blobs may have to go to make room for one. */
        set_mtime(p3, now - 50);
        set_mtime(p4, now - 40);
        set_mtime(p5, now - 30);
        CHECK_INT(put(c, "k6", '6', 2 * BLOB, p1, sizeof(p1)), 0);
        CHECK(usage_bytes(c, &blobs) <= 3 * BLOB);
        CHECK_INT(blobs, 2);
        CHECK(!exists(p3) && !exists(p4));
        CHECK(exists(p5) && exists(p1));

        /* The blob just inserted is never the one evicted, however old its file. */
        CHECK_INT(put_at(c, "k7", '7', BLOB, now - 100000, p2, sizeof(p2)), 0);
        CHECK(exists(p2));
        CHECK_INT(cache_lookup(c, "k7", found, sizeof(found)), 0);
        CHECK_STR(found, p2);
        CHECK(!exists(p5));
        CHECK_INT(usage_bytes(c, &blobs), 3 * BLOB);
        CHECK_INT(blobs, 2);
        cache_close(c);
}

static void test_clear_and_keys(void)
{
        struct cache *c = NULL;
        char err[512] = "", p[4600], found[4600], tmp[4600], key200[201], key199[200];
        int64_t freed = -1, blobs = -1;
        int fd;

        CHECK_INT(cache_open(&c, cachedir, 0, err, sizeof(err)), 0);
        if (c == NULL)
                return;
        CHECK_INT(put(c, "c1", 'a', 100, p, sizeof(p)), 0);
        CHECK_INT(put(c, "c2", 'b', 200, p, sizeof(p)), 0);
        CHECK(usage_bytes(c, &blobs) >= 300);
        freed = -1;
        {
                int64_t before = usage_bytes(c, NULL);

                CHECK_INT(cache_clear(c, &freed), 0);
                CHECK_INT(freed, before);
        }
        CHECK_INT(usage_bytes(c, &blobs), 0);
        CHECK_INT(blobs, 0);
        CHECK_INT(cache_lookup(c, "c1", found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK_INT(cache_lookup(c, "v1-a1", found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK(!ref_exists(cachedir, "c2"));
        CHECK_INT(cache_clear(c, &freed), 0);
        CHECK_INT(freed, 0);
        /* Usable after clearing. */
        CHECK_INT(put(c, "c1", 'a', 100, p, sizeof(p)), 0);
        CHECK_INT(cache_lookup(c, "c1", found, sizeof(found)), 0);

        /* Keys: 1..199 bytes, no '/', not starting with '.'. */
        memset(key200, 'k', 200);
        key200[200] = '\0';
        memset(key199, 'k', 199);
        key199[199] = '\0';
        CHECK_INT(cache_lookup(c, "", found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, ".hidden", found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, "..", found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, "a/b", found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, "../refs/c1", found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, key200, found, sizeof(found)), FERRY_EINVAL);
        CHECK_INT(cache_lookup(c, key199, found, sizeof(found)), FERRY_ENOTFOUND);
        CHECK_INT(put(c, key199, 'z', 5, p, sizeof(p)), 0);
        CHECK_INT(cache_lookup(c, key199, found, sizeof(found)), 0);
        /* An insert under a bad key is refused and its file is removed (put checks). */
        CHECK_INT(put(c, "a/b", 'z', 5, p, sizeof(p)), FERRY_EINVAL);
        CHECK_INT(put(c, ".x", 'z', 5, p, sizeof(p)), FERRY_EINVAL);
        CHECK_INT(put(c, key200, 'z', 5, p, sizeof(p)), FERRY_EINVAL);
        /* A temp file that vanished cannot be inserted. */
        CHECK_INT(cache_temp_path(c, tmp, sizeof(tmp)), 0);
        err[0] = '\0';
        CHECK_INT(cache_insert(c, "gone", tmp, p, sizeof(p), err, sizeof(err)), FERRY_EIO);
        CHECK(err[0] != '\0');
        CHECK_INT(cache_lookup(c, "gone", found, sizeof(found)), FERRY_ENOTFOUND);
        /* A truncated ref is treated as missing. */
        snprintf(tmp, sizeof(tmp), "%s/refs/short", cachedir);
        fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
                CHECK_INT(write(fd, "abc", 3), 3);
                close(fd);
        }
        CHECK_INT(cache_lookup(c, "short", found, sizeof(found)), FERRY_ENOTFOUND);
        cache_close(c);
}

int main(void)
{
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_cache: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        fds = count_fds();
        snprintf(cachedir, sizeof(cachedir), "%s/cache", tmpdir);
        test_round_trip_and_sharing();
        test_eviction();
        test_clear_and_keys();
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_cache");
}
