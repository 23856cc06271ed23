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
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ferry_base.h"
#include "log.h"
#include "proto.h"
#include "util.h"

/* Files of one delivered job waiting for removal (or for its pins to go). */
struct spool_trash {
        int64_t job;
        char **names;
        size_t n;
        struct spool_trash *next;
};

/* A job whose files are being read. */
struct spool_pin {
        int64_t job;
        int count;
        struct spool_pin *next;
};

struct spool {
        uv_loop_t *loop;
        char *dir;        /* <state>/spool */
        char *staging;    /* <state>/spool/staging: an older ferryd's, emptied at start */
        char *qdir;       /* <state>/quarantine */
        char *qfolder;    /* this run's quarantine folder, once made */
        int dirfd;        /* O_DIRECTORY descriptor of dir */
        int64_t budget;   /* 0 = unlimited */
        int64_t min_free; /* a log must leave this much free on the file system; 0: no minimum */
        int64_t used;     /* bytes held by snapshots and reservations */
        pthread_mutex_t lock;
        struct spool_pin *pins;     /* loop thread */
        struct spool_trash *held;   /* discarded while pinned */
        struct spool_trash *queued; /* waiting for the remover */
        struct spool_trash *running;
        bool removing;
        uv_work_t work;
};

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
        case ELOOP:
                return FERRY_EUNSAFE;
        default:
                return FERRY_EIO;
        }
}

int spool_open(struct spool **out, uv_loop_t *loop, const char *dir, const char *quarantine_dir,
               int64_t budget, int64_t used, char *err, size_t errlen)
{
        struct spool *sp = calloc(1, sizeof(*sp));
        int rc;

        *out = NULL;
        if (sp == NULL || (sp->dir = strdup(dir)) == NULL ||
            (sp->staging = util_path_join(dir, "staging")) == NULL ||
            (sp->qdir = strdup(quarantine_dir)) == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        sp->dirfd = -1;
        /* Each directory is checked before anything is made inside it. */
        if ((rc = util_mkdir_p(sp->dir, 0700)) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", sp->dir, strerror(-rc));
                goto fail;
        }
        if (util_check_private_dir(sp->dir, err, errlen) != 0)
                goto fail;
        /* Quarantined snapshots are re-queued by `ferry recover`: the folder must be ours. */
        if (access(sp->qdir, F_OK) == 0 && util_check_private_dir(sp->qdir, err, errlen) != 0)
                goto fail;
        sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sp->dirfd < 0) {
                snprintf(err, errlen, "cannot open %s: %s", sp->dir, strerror(errno));
                goto fail;
        }
        sp->loop = loop;
        sp->budget = budget;
        sp->used = used;
        sp->work.data = sp;
        pthread_mutex_init(&sp->lock, NULL);
        *out = sp;
        return 0;
fail:
        if (sp) {
                if (sp->dirfd >= 0)
                        close(sp->dirfd);
                free(sp->dir);
                free(sp->staging);
                free(sp->qdir);
                free(sp);
        }
        return FERRY_EIO;
}

static void trash_free(struct spool_trash *t)
{
        size_t i;

        while (t != NULL) {
                struct spool_trash *next = t->next;

                for (i = 0; i < t->n; i++)
                        free(t->names[i]);
                free(t->names);
                free(t);
                t = next;
        }
}

void spool_close(struct spool *sp)
{
        struct spool_pin *p, *next;

        if (sp == NULL)
                return;
        for (p = sp->pins; p != NULL; p = next) {
                next = p->next;
                free(p);
        }
        trash_free(sp->held);
        trash_free(sp->queued);
        pthread_mutex_destroy(&sp->lock);
        if (sp->dirfd >= 0)
                close(sp->dirfd);
        free(sp->dir);
        free(sp->staging);
        free(sp->qdir);
        free(sp->qfolder);
        free(sp);
}

const char *spool_dir(const struct spool *sp)
{
        return sp->dir;
}

int spool_dirfd(const struct spool *sp)
{
        return sp->dirfd;
}

char *spool_path(const struct spool *sp, const char *name)
{
        return util_path_join(sp->dir, name);
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

int spool_open_file(const struct spool *sp, const char *name)
{
        int fd;

        if (!valid_token(name))
                return -EINVAL;
        fd = openat(sp->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        return fd >= 0 ? fd : -errno;
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

int64_t spool_budget(struct spool *sp)
{
        int64_t v;

        pthread_mutex_lock(&sp->lock);
        v = sp->budget;
        pthread_mutex_unlock(&sp->lock);
        return v;
}

void spool_set_budget(struct spool *sp, int64_t budget)
{
        pthread_mutex_lock(&sp->lock);
        sp->budget = budget;
        pthread_mutex_unlock(&sp->lock);
}

void spool_set_min_free(struct spool *sp, int64_t min_free)
{
        pthread_mutex_lock(&sp->lock);
        sp->min_free = min_free;
        pthread_mutex_unlock(&sp->lock);
}

int64_t spool_min_free(struct spool *sp)
{
        int64_t v;

        pthread_mutex_lock(&sp->lock);
        v = sp->min_free;
        pthread_mutex_unlock(&sp->lock);
        return v;
}

int64_t spool_fs_free(const struct spool *sp)
{
        struct statvfs vfs;

        if (fstatvfs(sp->dirfd, &vfs) != 0)
                return errno_to_ferry(errno);
        return (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
}

int spool_check_free(struct spool *sp, int64_t bytes, char *err, size_t errlen)
{
        char a[32], b[32], c[32];
        int64_t min_free = spool_min_free(sp), avail;

        if (min_free <= 0)
                return 0;
        avail = spool_fs_free(sp);
        if (avail < 0) {
                snprintf(err, errlen, "cannot tell the free space of %s", sp->dir);
                return (int)avail;
        }
        if (avail - bytes >= min_free)
                return 0;
        snprintf(err, errlen,
                 "not logged: these %s would leave %s free on the file system of the spool %s, "
                 "less than spool_min_free (%s); nothing queued was touched (free some space, "
                 "or lower spool_min_free)",
                 util_human_bytes(bytes, a, sizeof(a)),
                 util_human_bytes(avail - bytes > 0 ? avail - bytes : 0, b, sizeof(b)), sp->dir,
                 util_human_bytes(min_free, c, sizeof(c)));
        return FERRY_ENOSPC;
}

/* Create a new spool file with a fresh random name; fd returned, name filled. */
static int spool_create(struct spool *sp, char name[33])
{
        int tries, fd;

        for (tries = 0; tries < 8; tries++) {
                if (util_random_hex(name, 16) != 0)
                        return -EIO;
                fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0600);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

/* Attach the manifest; a file system without user xattrs only loses the manifest. */
static int spool_set_manifest(int fd, const char *manifest, char *err, size_t errlen)
{
        static int warned;

        if (manifest == NULL)
                return 0;
        if (fsetxattr(fd, SPOOL_MANIFEST_XATTR, manifest, strlen(manifest), 0) == 0)
                return 0;
        if (errno == ENOTSUP || errno == EOPNOTSUPP || errno == E2BIG || errno == ERANGE) {
                if (!warned++)
                        log_warn("the spool's file system keeps no manifest with snapshots (%s): "
                                 "a quarantined file cannot say which version it belongs to",
                                 strerror(errno));
                return 0;
        }
        snprintf(err, errlen, "cannot label a spool file: %s", strerror(errno));
        return errno_to_ferry(errno);
}

/* Copy everything from fd (size unknown, e.g. procfs) into out; bytes into *copied. */
static int copy_to_end(int in, int out, int64_t *copied)
{
        char buf[1 << 16];

        *copied = 0;
        if (lseek(in, 0, SEEK_SET) < 0 && errno != ESPIPE)
                return -errno;
        if (ftruncate(out, 0) != 0 || lseek(out, 0, SEEK_SET) < 0)
                return -errno;
        for (;;) {
                ssize_t r = read(in, buf, sizeof(buf)), off = 0;

                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return 0;
                while (off < r) {
                        ssize_t w = write(out, buf + off, (size_t)(r - off));

                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w < 0)
                                return -errno;
                        off += w;
                }
                *copied += r;
        }
}

int spool_snapshot_fd(struct spool *sp, int in, const char *what, const char *manifest,
                      char name[33], int64_t *size, char *err, size_t errlen)
{
        struct stat before, after;
        int out, rc = 0, attempt;
        int64_t copied = 0;

        out = spool_create(sp, name);
        if (out < 0) {
                snprintf(err, errlen, "cannot create a spool file in %s: %s", sp->dir,
                         strerror(-out));
                return errno_to_ferry(-out);
        }
        for (attempt = 0; attempt < 2; attempt++) {
                int crc;

                if (fstat(in, &before) != 0 || !S_ISREG(before.st_mode)) {
                        rc = FERRY_EINVAL;
                        snprintf(err, errlen, "%s is not a regular file", what);
                        goto done;
                }
                if (before.st_size == 0) {
                        crc = copy_to_end(in, out, &copied);
                } else {
                        crc = util_copy_fd(in, out);
                        copied = before.st_size;
                }
                if (crc != 0) {
                        rc = errno_to_ferry(-crc);
                        snprintf(err, errlen, "cannot snapshot %s into the spool: %s", what,
                                 strerror(-crc));
                        goto done;
                }
                if (fstat(in, &after) != 0) {
                        rc = FERRY_EIO;
                        snprintf(err, errlen, "cannot stat %s: %s", what, strerror(errno));
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
                                 what);
                        goto done;
                }
        }
        if (before.st_size != 0) {
                struct stat mine;

                /* A file cut short while we copied shows in our copy's size. */
                if (fstat(out, &mine) != 0 || mine.st_size != before.st_size) {
                        rc = FERRY_EIO;
                        snprintf(err, errlen, "%s changed size while it was being logged", what);
                        goto done;
                }
        }
        if ((rc = spool_set_manifest(out, manifest, err, errlen)) != 0)
                goto done;
        if (fsync(out) != 0) {
                rc = errno_to_ferry(errno);
                snprintf(err, errlen, "cannot sync the spool: %s", strerror(errno));
                goto done;
        }
        *size = copied;
done:
        close(out);
        if (rc != 0)
                unlinkat(sp->dirfd, name, 0);
        return rc;
}

int spool_sync(void *data)
{
        struct spool *sp = data;

        return fsync(sp->dirfd) == 0 ? 0 : errno_to_ferry(errno);
}

void spool_remove_now(struct spool *sp, const char *name)
{
        if (valid_token(name) && unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT)
                log_warn("cannot remove spool file %s/%s: %s", sp->dir, name, strerror(errno));
}

/* ---- pins and removal (loop thread) ---- */

static struct spool_pin *spool_find_pin(struct spool *sp, int64_t job)
{
        struct spool_pin *p;

        for (p = sp->pins; p != NULL; p = p->next)
                if (p->job == job)
                        return p;
        return NULL;
}

static void spool_remover_start(struct spool *sp);

static void spool_remove_work_cb(uv_work_t *work)
{
        struct spool *sp = work->data;
        struct spool_trash *t;
        size_t i;

        for (t = sp->running; t != NULL; t = t->next)
                for (i = 0; i < t->n; i++)
                        spool_remove_now(sp, t->names[i]);
}

static void spool_remove_after_cb(uv_work_t *work, int status)
{
        struct spool *sp = work->data;

        trash_free(sp->running);
        sp->running = NULL;
        sp->removing = false;
        spool_remover_start(sp);
}

static void spool_remover_start(struct spool *sp)
{
        if (sp->removing || sp->queued == NULL)
                return;
        sp->running = sp->queued;
        sp->queued = NULL;
        sp->removing = true;
        if (uv_queue_work(sp->loop, &sp->work, spool_remove_work_cb, spool_remove_after_cb) != 0) {
                spool_remove_work_cb(&sp->work); /* cannot queue: do it here, once */
                spool_remove_after_cb(&sp->work, 0);
        }
}

static void spool_trash_queue(struct spool *sp, struct spool_trash *t)
{
        t->next = sp->queued;
        sp->queued = t;
        spool_remover_start(sp);
}

void spool_pin(struct spool *sp, int64_t job)
{
        struct spool_pin *p = spool_find_pin(sp, job);

        if (p == NULL) {
                p = calloc(1, sizeof(*p));
                if (p == NULL)
                        return; /* unpin tolerates a missing pin */
                p->job = job;
                p->next = sp->pins;
                sp->pins = p;
        }
        p->count++;
}

void spool_unpin(struct spool *sp, int64_t job)
{
        struct spool_pin **pp, *p;
        struct spool_trash **tp, *t;

        for (pp = &sp->pins; (p = *pp) != NULL; pp = &p->next)
                if (p->job == job)
                        break;
        if (p == NULL || --p->count > 0)
                return;
        *pp = p->next;
        free(p);
        for (tp = &sp->held; (t = *tp) != NULL;) {
                if (t->job == job) {
                        *tp = t->next;
                        spool_trash_queue(sp, t);
                } else {
                        tp = &t->next;
                }
        }
}

void spool_discard(struct spool *sp, int64_t job, char **names, size_t n, int64_t bytes)
{
        struct spool_trash *t = calloc(1, sizeof(*t));
        size_t i;

        spool_release(sp, bytes);
        if (t == NULL) {
                for (i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return; /* the files stay: start-up removes them (their job is done) */
        }
        t->job = job;
        t->names = names;
        t->n = n;
        if (spool_find_pin(sp, job) != NULL) {
                t->next = sp->held;
                sp->held = t;
                return;
        }
        spool_trash_queue(sp, t);
}

bool spool_busy(const struct spool *sp)
{
        return sp->removing || sp->queued != NULL;
}

/* ---- start-up ---- */

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int spool_list(struct spool *sp, char ***names, size_t *n, char *err, size_t errlen)
{
        size_t cap = 0, count = 0;
        char **list = NULL;
        struct dirent *de;
        DIR *d;
        int fd = dup(sp->dirfd);

        *names = NULL;
        *n = 0;
        if (fd < 0 || (d = fdopendir(fd)) == NULL) {
                if (fd >= 0)
                        close(fd);
                snprintf(err, errlen, "cannot read %s: %s", sp->dir, strerror(errno));
                return FERRY_EIO;
        }
        rewinddir(d);
        while ((de = readdir(d)) != NULL) {
                if (!valid_token(de->d_name))
                        continue;
                if (count == cap) {
                        size_t ncap = cap ? cap * 2 : 256;
                        char **grown = realloc(list, ncap * sizeof(*list));

                        if (grown == NULL)
                                goto nomem;
                        list = grown;
                        cap = ncap;
                }
                if ((list[count] = strdup(de->d_name)) == NULL)
                        goto nomem;
                count++;
        }
        closedir(d);
        if (count > 1)
                qsort(list, count, sizeof(*list), cmp_names);
        *names = list;
        *n = count;
        return 0;
nomem:
        closedir(d);
        while (count > 0)
                free(list[--count]);
        free(list);
        snprintf(err, errlen, "out of memory");
        return FERRY_ENOMEM;
}

int spool_quarantine(struct spool *sp, const char *name, char *err, size_t errlen)
{
        char *to;
        int rc;

        if (sp->qfolder == NULL) {
                char stamp[64];
                time_t now = time(NULL);
                struct tm tm;

                gmtime_r(&now, &tm);
                strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
                sp->qfolder = util_path_join(sp->qdir, stamp);
                if (sp->qfolder == NULL) {
                        snprintf(err, errlen, "out of memory");
                        return FERRY_ENOMEM;
                }
                if ((rc = util_mkdir_p(sp->qfolder, 0700)) != 0) {
                        snprintf(err, errlen, "cannot create %s: %s", sp->qfolder, strerror(-rc));
                        free(sp->qfolder);
                        sp->qfolder = NULL;
                        return FERRY_EIO;
                }
        }
        to = util_path_join(sp->qfolder, name);
        if (to == NULL) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        rc = renameat(sp->dirfd, name, AT_FDCWD, to);
        if (rc != 0)
                snprintf(err, errlen, "cannot move %s/%s to %s: %s", sp->dir, name, to,
                         strerror(errno));
        free(to);
        if (rc != 0)
                return FERRY_EIO;
        return 0;
}

const char *spool_quarantine_folder(const struct spool *sp)
{
        return sp->qfolder;
}

int spool_clean_staging(struct spool *sp)
{
        struct dirent *de;
        int removed = 0;
        DIR *d;

        /* Protocol 1 staged in-memory data here; protocol 2 sends descriptors instead. */
        if ((d = opendir(sp->staging)) == NULL)
                return 0;
        while ((de = readdir(d)) != NULL)
                if (valid_token(de->d_name) && unlinkat(dirfd(d), de->d_name, 0) == 0)
                        removed++;
        closedir(d);
        rmdir(sp->staging);
        return removed;
}
