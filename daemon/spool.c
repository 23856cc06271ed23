/* spool.c — snapshots of logged files. */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"
#include "log.h"
#include "store.h"
#include "util.h"

struct spool {
        char *dir;      /* <state>/spool */
        char *staging;  /* <state>/spool/staging */
        int64_t budget; /* 0 = unlimited */
        int64_t used;   /* bytes held by snapshots and reservations */
        pthread_mutex_t lock;
};

int spool_open(struct spool **out, const char *dir, int64_t budget, int64_t used, char *err,
               size_t errlen)
{
        struct spool *sp = calloc(1, sizeof(*sp));
        int rc;

        *out = NULL;
        if (sp == NULL || (sp->dir = strdup(dir)) == NULL ||
            (sp->staging = util_path_join(dir, "staging")) == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        if ((rc = util_mkdir_p(sp->staging, 0700)) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", sp->staging, strerror(-rc));
                goto fail;
        }
        sp->budget = budget;
        sp->used = used;
        pthread_mutex_init(&sp->lock, NULL);
        *out = sp;
        return 0;
fail:
        if (sp) {
                free(sp->dir);
                free(sp->staging);
                free(sp);
        }
        return FERRY_EIO;
}

void spool_close(struct spool *sp)
{
        if (sp == NULL)
                return;
        pthread_mutex_destroy(&sp->lock);
        free(sp->dir);
        free(sp->staging);
        free(sp);
}

char *spool_path(const struct spool *sp, const char *name)
{
        return util_path_join(sp->dir, name);
}

int spool_reserve(struct spool *sp, int64_t bytes, char *err, size_t errlen)
{
        char a[32], b[32];
        int rc = 0;

        pthread_mutex_lock(&sp->lock);
        if (sp->budget > 0 && sp->used + bytes > sp->budget) {
                snprintf(err, errlen,
                         "the spool is full: %s more would exceed its budget of %s "
                         "(raise spool_budget or wait for uploads to drain)",
                         util_human_bytes(bytes, a, sizeof(a)),
                         util_human_bytes(sp->budget, b, sizeof(b)));
                rc = FERRY_ENOSPC;
        } else {
                sp->used += bytes;
        }
        pthread_mutex_unlock(&sp->lock);
        return rc;
}

void spool_release(struct spool *sp, int64_t bytes)
{
        pthread_mutex_lock(&sp->lock);
        sp->used -= bytes;
        if (sp->used < 0)
                sp->used = 0;
        pthread_mutex_unlock(&sp->lock);
}

int64_t spool_used(struct spool *sp)
{
        int64_t v;

        pthread_mutex_lock(&sp->lock);
        v = sp->used;
        pthread_mutex_unlock(&sp->lock);
        return v;
}

int64_t spool_budget(const struct spool *sp)
{
        return sp->budget;
}

static int errno_to_ferry(int e)
{
        switch (e) {
        case ENOENT:
        case ENOTDIR:
                return FERRY_ENOTFOUND;
        case EACCES:
        case EPERM:
                return FERRY_EPERM;
        case ENOSPC:
        case EDQUOT:
                return FERRY_ENOSPC;
        case ENOMEM:
                return FERRY_ENOMEM;
        default:
                return FERRY_EIO;
        }
}

/* Create a new spool file with a fresh random name; fd returned, name filled. */
static int spool_create(struct spool *sp, char name[33], char **path)
{
        int tries, fd;

        for (tries = 0; tries < 8; tries++) {
                if (util_random_hex(name, 16) != 0)
                        return -EIO;
                *path = spool_path(sp, name);
                if (*path == NULL)
                        return -ENOMEM;
                fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd >= 0)
                        return fd;
                free(*path);
                *path = NULL;
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

int spool_snapshot(struct spool *sp, const char *src, int64_t expect_size, char name[33], char *err,
                   size_t errlen)
{
        struct stat before, after;
        char *path = NULL;
        int in = -1, out = -1, rc = 0, attempt;

        in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                rc = errno_to_ferry(errno);
                snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno));
                return rc;
        }
        out = spool_create(sp, name, &path);
        if (out < 0) {
                rc = errno_to_ferry(-out);
                snprintf(err, errlen, "cannot create a spool file in %s: %s", sp->dir,
                         strerror(-out));
                out = -1;
                goto done;
        }
        for (attempt = 0; attempt < 2; attempt++) {
                int crc;

                if (fstat(in, &before) != 0 || !S_ISREG(before.st_mode)) {
                        rc = FERRY_EINVAL;
                        snprintf(err, errlen, "%s is not a regular file", src);
                        goto done;
                }
                crc = util_copy_fd(in, out);
                if (crc != 0) {
                        rc = errno_to_ferry(-crc);
                        snprintf(err, errlen, "cannot snapshot %s into the spool: %s", src,
                                 strerror(-crc));
                        goto done;
                }
                if (fstat(in, &after) != 0) {
                        rc = FERRY_EIO;
                        snprintf(err, errlen, "cannot stat %s: %s", src, strerror(errno));
                        goto done;
                }
                if (after.st_size == before.st_size &&
                    after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                    after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
                        break;
                if (attempt == 1) {
                        rc = FERRY_EIO;
                        snprintf(err, errlen,
                                 "%s kept changing while it was being snapshotted; log it "
                                 "once it is complete",
                                 src);
                        goto done;
                }
        }
        if (expect_size >= 0 && after.st_size != expect_size) {
                rc = FERRY_EIO;
                snprintf(err, errlen, "%s changed size while it was being logged", src);
                goto done;
        }
        if (fsync(out) != 0) {
                rc = errno_to_ferry(errno);
                snprintf(err, errlen, "cannot sync the spool: %s", strerror(errno));
        }
done:
        if (in >= 0)
                close(in);
        if (out >= 0)
                close(out);
        if (rc != 0 && path != NULL)
                unlink(path);
        free(path);
        return rc;
}

static int valid_token(const char *token)
{
        size_t i;

        if (strlen(token) != 32)
                return 0;
        for (i = 0; i < 32; i++)
                if (!((token[i] >= '0' && token[i] <= '9') || (token[i] >= 'a' && token[i] <= 'f')))
                        return 0;
        return 1;
}

int spool_staged_size(struct spool *sp, const char *token, int64_t *size, char *err, size_t errlen)
{
        struct stat stt;
        char *path;
        int rc = 0;

        if (!valid_token(token)) {
                snprintf(err, errlen, "staged token \"%s\" is malformed", token);
                return FERRY_EINVAL;
        }
        path = util_path_join(sp->staging, token);
        if (path == NULL)
                return FERRY_ENOMEM;
        if (lstat(path, &stt) != 0 || !S_ISREG(stt.st_mode)) {
                snprintf(err, errlen, "no staged data named %s (stage it first)", token);
                rc = FERRY_ENOTFOUND;
        } else {
                *size = stt.st_size;
        }
        free(path);
        return rc;
}

int spool_claim_staged(struct spool *sp, const char *token, char name[33], int64_t *size, char *err,
                       size_t errlen)
{
        char *from = NULL, *to = NULL;
        int fd = -1, rc;

        if ((rc = spool_staged_size(sp, token, size, err, errlen)) != 0)
                return rc;
        from = util_path_join(sp->staging, token);
        if (from == NULL || util_random_hex(name, 16) != 0 || (to = spool_path(sp, name)) == NULL) {
                rc = FERRY_ENOMEM;
                goto out;
        }
        fd = open(from, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0 || rename(from, to) != 0) {
                rc = errno_to_ferry(errno);
                snprintf(err, errlen, "cannot claim staged data %s: %s", token, strerror(errno));
        }
out:
        if (fd >= 0)
                close(fd);
        free(from);
        free(to);
        return rc;
}

int spool_stage_new(struct spool *sp, char token[33], char **path, char *err, size_t errlen)
{
        int fd;

        *path = NULL;
        if (util_random_hex(token, 16) != 0 || (*path = util_path_join(sp->staging, token)) == NULL)
                return FERRY_ENOMEM;
        fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                snprintf(err, errlen, "cannot create a staging file: %s", strerror(errno));
                free(*path);
                *path = NULL;
                return errno_to_ferry(errno);
        }
        close(fd);
        return 0;
}

int spool_sync(struct spool *sp)
{
        return util_fsync_dir(sp->dir) == 0 ? 0 : FERRY_EIO;
}

void spool_remove(struct spool *sp, const char *name)
{
        char *path = spool_path(sp, name);

        if (path != NULL && unlink(path) != 0 && errno != ENOENT)
                log_warn("cannot remove spool file %s: %s", path, strerror(errno));
        free(path);
}

void spool_cleanup(struct spool *sp, struct store *st)
{
        DIR *d;
        struct dirent *de;
        time_t now = time(NULL);
        int removed = 0;

        if ((d = opendir(sp->dir)) != NULL) {
                while ((de = readdir(d)) != NULL) {
                        if (!valid_token(de->d_name) || store_spool_referenced(st, de->d_name))
                                continue;
                        spool_remove(sp, de->d_name);
                        removed++;
                }
                closedir(d);
        }
        if ((d = opendir(sp->staging)) != NULL) {
                while ((de = readdir(d)) != NULL) {
                        struct stat stt;

                        if (!valid_token(de->d_name) ||
                            fstatat(dirfd(d), de->d_name, &stt, AT_SYMLINK_NOFOLLOW) != 0 ||
                            now - stt.st_mtime < 3600)
                                continue;
                        unlinkat(dirfd(d), de->d_name, 0);
                        removed++;
                }
                closedir(d);
        }
        if (removed > 0)
                log_info("removed %d leftover spool files", removed);
}
