/* cache.c — the node-wide download cache. */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry_base.h"
#include "log.h"
#include "util.h"

struct cache {
        char dir[4096];
        char blobs[4200];
        char refs[4200];
        char tmp[4200];
        int64_t budget;
        pthread_mutex_t lock; /* serialises inserts, eviction and clearing */
};

int cache_open(struct cache **out, const char *dir, int64_t budget, char *err, size_t errlen)
{
        struct cache *c = calloc(1, sizeof(*c));
        DIR *d;
        struct dirent *de;

        *out = NULL;
        if (c == NULL)
                return FERRY_ENOMEM;
        snprintf(c->dir, sizeof(c->dir), "%s", dir);
        snprintf(c->blobs, sizeof(c->blobs), "%s/blobs", dir);
        snprintf(c->refs, sizeof(c->refs), "%s/refs", dir);
        snprintf(c->tmp, sizeof(c->tmp), "%s/tmp", dir);
        if (util_mkdir_p(c->blobs, 0700) || util_mkdir_p(c->refs, 0700) ||
            util_mkdir_p(c->tmp, 0700)) {
                snprintf(err, errlen, "cannot create the cache in %s: %s", dir, strerror(errno));
                free(c);
                return FERRY_EIO;
        }
        if (util_check_private_dir(c->dir, err, errlen) != 0 ||
            util_check_private_dir(c->blobs, err, errlen) != 0 ||
            util_check_private_dir(c->refs, err, errlen) != 0 ||
            util_check_private_dir(c->tmp, err, errlen) != 0) {
                free(c);
                return FERRY_EPERM;
        }
        /* Downloads that a crash interrupted. */
        if ((d = opendir(c->tmp)) != NULL) {
                while ((de = readdir(d)) != NULL)
                        if (de->d_name[0] != '.')
                                unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
        c->budget = budget;
        pthread_mutex_init(&c->lock, NULL);
        *out = c;
        return 0;
}

void cache_close(struct cache *c)
{
        if (c == NULL)
                return;
        pthread_mutex_destroy(&c->lock);
        free(c);
}

static int valid_key(const char *key)
{
        size_t n = strlen(key);

        return n > 0 && n < 200 && strchr(key, '/') == NULL && key[0] != '.';
}

int cache_lookup(struct cache *c, const char *key, char *path, size_t len)
{
        char ref[4500], sha[80];
        ssize_t n;
        int fd;

        if (!valid_key(key))
                return FERRY_EINVAL;
        snprintf(ref, sizeof(ref), "%s/%s", c->refs, key);
        fd = open(ref, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return FERRY_ENOTFOUND;
        n = read(fd, sha, 64);
        close(fd);
        if (n != 64)
                return FERRY_ENOTFOUND;
        sha[64] = '\0';
        snprintf(path, len, "%s/%s", c->blobs, sha);
        pthread_mutex_lock(&c->lock);
        /* mtime records the last use, for LRU eviction. */
        if (utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW) != 0) {
                pthread_mutex_unlock(&c->lock);
                unlink(ref); /* its blob was evicted */
                return FERRY_ENOTFOUND;
        }
        pthread_mutex_unlock(&c->lock);
        return 0;
}

int cache_temp_path(struct cache *c, char *path, size_t len)
{
        char rnd[33];

        if (util_random_hex(rnd, 16) != 0)
                return FERRY_EIO;
        snprintf(path, len, "%s/%s", c->tmp, rnd);
        return 0;
}

struct cache_entry {
        char name[65];
        int64_t size;
        struct timespec used;
};

static int entry_cmp(const void *a, const void *b)
{
        const struct cache_entry *x = a, *y = b;

        if (x->used.tv_sec != y->used.tv_sec)
                return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
        if (x->used.tv_nsec != y->used.tv_nsec)
                return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
        return 0;
}

/* List the blobs; caller frees *out. Returns the count or a negative code. */
static int cache_scan(struct cache *c, struct cache_entry **out, int64_t *total)
{
        DIR *d = opendir(c->blobs);
        struct dirent *de;
        struct cache_entry *v = NULL;
        size_t n = 0, cap = 0;

        *out = NULL;
        *total = 0;
        if (d == NULL)
                return FERRY_EIO;
        while ((de = readdir(d)) != NULL) {
                struct stat st;

                if (strlen(de->d_name) != 64 ||
                    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                        continue;
                if (n == cap) {
                        struct cache_entry *nv;

                        cap = cap ? cap * 2 : 64;
                        nv = realloc(v, cap * sizeof(*v));
                        if (nv == NULL) {
                                free(v);
                                closedir(d);
                                return FERRY_ENOMEM;
                        }
                        v = nv;
                }
                memcpy(v[n].name, de->d_name, 65);
                v[n].size = st.st_size;
                v[n].used = st.st_mtim;
                *total += st.st_size;
                n++;
        }
        closedir(d);
        *out = v;
        return (int)n;
}

/* Evict least recently used blobs until the cache fits its budget. Lock held. */
static void cache_evict(struct cache *c, const char *keep)
{
        struct cache_entry *v;
        int64_t total;
        int n, i;

        if (c->budget <= 0 || (n = cache_scan(c, &v, &total)) < 0)
                return;
        if (total > c->budget) {
                qsort(v, (size_t)n, sizeof(*v), entry_cmp);
                for (i = 0; i < n && total > c->budget; i++) {
                        char path[4500];

                        if (keep && strcmp(v[i].name, keep) == 0)
                                continue;
                        snprintf(path, sizeof(path), "%s/%s", c->blobs, v[i].name);
                        if (unlink(path) == 0) {
                                total -= v[i].size;
                                log_debug("cache: evicted %s (%lld bytes)", v[i].name,
                                          (long long)v[i].size);
                        }
                }
        }
        free(v);
}

int cache_insert(struct cache *c, const char *key, const char *tmp, char *path, size_t len,
                 char *err, size_t errlen)
{
        char sha[65], ref[4500], reftmp[4600];
        struct stat st;
        int fd, rc;

        if (!valid_key(key)) {
                unlink(tmp);
                return FERRY_EINVAL;
        }
        if ((rc = util_sha256_file(tmp, sha)) != 0) {
                snprintf(err, errlen, "cannot hash a download: %s", strerror(-rc));
                unlink(tmp);
                return FERRY_EIO;
        }
        snprintf(path, len, "%s/%s", c->blobs, sha);
        snprintf(ref, sizeof(ref), "%s/%s", c->refs, key);
        snprintf(reftmp, sizeof(reftmp), "%s/%s.ref", c->tmp, key);
        pthread_mutex_lock(&c->lock);
        if (stat(path, &st) == 0) {
                unlink(tmp); /* same content cached already */
                utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW);
        } else if (rename(tmp, path) != 0) {
                rc = errno;
                pthread_mutex_unlock(&c->lock);
                snprintf(err, errlen, "cannot fill the cache: %s", strerror(rc));
                unlink(tmp);
                return FERRY_EIO;
        }
        fd = open(reftmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, sha, 64) != 64 || close(fd) != 0 || rename(reftmp, ref) != 0) {
                if (fd >= 0)
                        close(fd);
                unlink(reftmp);
                log_warn("cache: cannot write the ref of %s", key);
        }
        cache_evict(c, sha);
        pthread_mutex_unlock(&c->lock);
        return 0;
}

int cache_usage(struct cache *c, struct cache_usage *out)
{
        struct cache_entry *v;
        int n;

        pthread_mutex_lock(&c->lock);
        n = cache_scan(c, &v, &out->bytes);
        pthread_mutex_unlock(&c->lock);
        if (n < 0)
                return n;
        free(v);
        out->blobs = n;
        pthread_mutex_lock(&c->lock);
        out->budget = c->budget;
        pthread_mutex_unlock(&c->lock);
        return 0;
}

void cache_set_budget(struct cache *c, int64_t budget)
{
        pthread_mutex_lock(&c->lock);
        c->budget = budget;
        cache_evict(c, NULL);
        pthread_mutex_unlock(&c->lock);
}

static void remove_all(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;

        if (d == NULL)
                return;
        while ((de = readdir(d)) != NULL)
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

int cache_clear(struct cache *c, int64_t *freed)
{
        struct cache_usage u;
        int rc = cache_usage(c, &u);

        if (rc != 0)
                return rc;
        pthread_mutex_lock(&c->lock);
        remove_all(c->refs);
        remove_all(c->blobs);
        pthread_mutex_unlock(&c->lock);
        *freed = u.bytes;
        return 0;
}
