/*
 * download.c — downloads. ferryd resolves the version and hands over
 * descriptors of the files (its spool, registry or cache), 250 at a time;
 * this side writes them into the target directory with the caller's own
 * rights: each file through a temporary ".ferry-tmp-*" name in its final
 * directory (reflink, else copy_file_range, else read/write), fsync, then a
 * rename into place. No path component is followed through a symlink and
 * nothing lands outside the directory. Overwrite strategies: FAIL (an
 * existing file with other bytes is an error; identical bytes are kept),
 * PRESERVE (an existing file is kept), REPLACE.
 *
 * The work is done in the caller's thread, in slices, so that
 * ferry_download_ready() can return to draw progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define DOWNLOAD_SLICE (16 << 20) /* bytes copied between progress checks */

enum dl_state { DL_OPENING, DL_COPYING, DL_DONE };

struct ferry_download {
        enum dl_state state;
        uint64_t open_id; /* the download.open request while DL_OPENING */
        enum ferry_overwrite mode;
        char dir[PATH_MAX];
        int dirfd;
        char token[64];
        cJSON *version;     /* from download.open */
        int nfiles;         /* assets of the version (download.files lists them) */
        int next;           /* next file to fetch descriptors for */
        int *fds;           /* the descriptors of the current batch */
        cJSON *batch;       /* their entries */
        int nbatch, ibatch; /* in the batch, and the one being placed */
        int nfds;           /* descriptors that came with the batch (its local files) */
        /* the file being placed */
        int src, out, parent;
        char tmp[64];
        char *leaf_path; /* a copy of its logical path; leaf points into it */
        char *leaf;
        int64_t copied, size;
        bool cloned;
        cJSON *result; /* {"dir", "version", "files", "bytes"} */
        int64_t bytes_done, bytes_total;
        int rc;
        char err[FERRY_ERR_MAX];
};

static void download_close_file(struct ferry_download *dl, bool keep_tmp)
{
        if (dl->out >= 0) {
                close(dl->out);
                if (!keep_tmp && dl->parent >= 0 && dl->tmp[0])
                        unlinkat(dl->parent, dl->tmp, 0);
        }
        if (dl->src >= 0)
                close(dl->src);
        if (dl->parent >= 0)
                close(dl->parent);
        free(dl->leaf_path);
        dl->out = dl->src = dl->parent = -1;
        dl->tmp[0] = '\0';
        dl->leaf_path = dl->leaf = NULL;
        dl->copied = dl->size = 0;
        dl->cloned = false;
}

/* Close the batch's descriptors no file took (each is set to -1 when taken). */
static void dl_close_batch(struct ferry_download *dl)
{
        int i;

        for (i = 0; dl->fds != NULL && i < dl->nfds; i++)
                if (dl->fds[i] >= 0)
                        close(dl->fds[i]);
        free(dl->fds);
        dl->fds = NULL;
        dl->nfds = 0;
}

void client_download_free(struct ferry_download *dl)
{
        if (dl == NULL)
                return;
        download_close_file(dl, false);
        dl_close_batch(dl);
        cJSON_Delete(dl->batch);
        cJSON_Delete(dl->version);
        cJSON_Delete(dl->result);
        if (dl->dirfd >= 0)
                close(dl->dirfd);
        free(dl);
}

static int dl_fail(struct ferry_download *dl, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dl_fail(struct ferry_download *dl, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(dl->err, sizeof(dl->err), fmt, ap);
        va_end(ap);
        proto_utf8_trim(dl->err);
        dl->rc = code;
        dl->state = DL_DONE;
        return code;
}

/*
 * Open (creating) the parent directories of `path` below dirfd without
 * following symlinks; *leaf points at the last component. An fd, or a
 * negative FERRY_E* code with the message in dl.
 */
static int open_parent(struct ferry_download *dl, char *path, char **leaf)
{
        int fd = fcntl(dl->dirfd, F_DUPFD_CLOEXEC, 3);
        char *seg = path, *slash;

        if (fd < 0)
                return dl_fail(dl, FERRY_EIO, "cannot use %s: %s", dl->dir, strerror(errno));
        while ((slash = strchr(seg, '/')) != NULL) {
                int next;

                *slash = '\0';
                next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0 && errno == ENOENT) {
                        if (mkdirat(fd, seg, 0777) != 0 && errno != EEXIST) {
                                int e = errno;

                                close(fd);
                                return dl_fail(dl, e == EACCES ? FERRY_EPERM : FERRY_EIO,
                                               "cannot create directory %s in %s: %s", seg, dl->dir,
                                               strerror(e));
                        }
                        next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                }
                if (next < 0) {
                        int e = errno;

                        close(fd);
                        if (e == ELOOP || e == ENOTDIR)
                                return dl_fail(dl, FERRY_EUNSAFE,
                                               "refusing to write through \"%s\" in %s: it is a "
                                               "symlink or not a directory",
                                               seg, dl->dir);
                        return dl_fail(dl, FERRY_EIO, "cannot open directory %s in %s: %s", seg,
                                       dl->dir, strerror(e));
                }
                close(fd);
                fd = next;
                *slash = '/';
                seg = slash + 1;
        }
        *leaf = seg;
        return fd;
}

/* Same bytes? 1 yes, 0 no, -1 error. */
static int same_content(int a, int b)
{
        char x[65536], y[65536];
        off_t off = 0;

        for (;;) {
                ssize_t n = pread(a, x, sizeof(x), off), m;

                if (n < 0)
                        return -1;
                m = pread(b, y, (size_t)n > 0 ? (size_t)n : 1, off);
                if (m < 0)
                        return -1;
                if (n == 0)
                        return m == 0;
                if (m != n || memcmp(x, y, (size_t)n) != 0)
                        return 0;
                off += n;
        }
}

static const char *const action_names[] = {"written", "kept", "preserved", "skipped"};
enum { ACT_WRITTEN, ACT_KEPT, ACT_PRESERVED, ACT_SKIPPED };

static void dl_note(struct ferry_download *dl, const char *lp, int64_t size, int action,
                    const char *note)
{
        cJSON *files = cJSON_GetObjectItemCaseSensitive(dl->result, "files");
        cJSON *f = cJSON_CreateObject();
        char *path = NULL;

        if (f == NULL)
                return;
        cJSON_AddStringToObject(f, "logical_path", lp);
        if (asprintf(&path, "%s/%s", dl->dir, lp) >= 0)
                cJSON_AddStringToObject(f, "path", path);
        free(path);
        cJSON_AddNumberToObject(f, "size", (double)size);
        cJSON_AddStringToObject(f, "action", action_names[action]);
        if (note)
                cJSON_AddStringToObject(f, "note", note);
        cJSON_AddItemToArray(files, f);
}

/* Begin placing the current batch file: decide, or open the temporary file. 1 done, 0, <0. */
static int dl_start_file(struct ferry_download *dl)
{
        const cJSON *f = cJSON_GetArrayItem(dl->batch, dl->ibatch);
        const char *lp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(f, "logical_path"));
        char rnd[17];
        struct stat st;
        int64_t fd_index = -1;

        if (lp == NULL)
                return dl_fail(dl, FERRY_EPROTO, "ferryd's file list is malformed");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "remote"))) {
                dl_note(dl, lp,
                        (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(f, "size")),
                        ACT_SKIPPED, "remote asset: listed, not downloaded");
                return 1;
        }
        proto_get_int(f, "fd", true, -1, &fd_index, NULL, 0);
        if (fd_index < 0 || fd_index >= dl->nfds)
                return dl_fail(dl, FERRY_EPROTO, "ferryd's file list is malformed");
        if (proto_validate_logical_path(lp, NULL, 0) != 0)
                return dl_fail(dl, FERRY_EUNSAFE,
                               "refusing to download: ferryd names a file outside %s", dl->dir);
        dl->src = dl->fds[fd_index];
        dl->fds[fd_index] = -1;
        if (dl->src < 0 || fstat(dl->src, &st) != 0 || !S_ISREG(st.st_mode))
                return dl_fail(dl, FERRY_EPROTO, "ferryd sent no file for %s", lp);
        dl->size = st.st_size;
        if ((dl->leaf_path = strdup(lp)) == NULL)
                return dl_fail(dl, FERRY_ENOMEM, "out of memory");
        dl->parent = open_parent(dl, dl->leaf_path, &dl->leaf);
        if (dl->parent < 0) {
                dl->parent = -1;
                return dl->rc;
        }
        if (fstatat(dl->parent, dl->leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                int existing, same;

                if (!S_ISREG(st.st_mode))
                        return dl_fail(dl, FERRY_EUNSAFE,
                                       "refusing to replace %s/%s: it is a symlink or not a file",
                                       dl->dir, lp);
                if (dl->mode == FERRY_OVERWRITE_PRESERVE) {
                        dl_note(dl, lp, dl->size, ACT_PRESERVED, NULL);
                        return 1;
                }
                if (dl->mode == FERRY_OVERWRITE_FAIL) {
                        existing = openat(dl->parent, dl->leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                        same = existing < 0             ? -1
                               : st.st_size != dl->size ? 0
                                                        : same_content(existing, dl->src);
                        if (existing >= 0)
                                close(existing);
                        if (same < 0)
                                return dl_fail(dl, FERRY_EIO, "cannot compare %s/%s", dl->dir, lp);
                        if (same == 1) {
                                dl_note(dl, lp, dl->size, ACT_KEPT, NULL);
                                return 1;
                        }
                        return dl_fail(dl, FERRY_EEXIST,
                                       "%s/%s exists with different content; choose --overwrite "
                                       "overwrite or preserve",
                                       dl->dir, lp);
                }
        }
        for (int tries = 0; tries < 8; tries++) {
                snprintf(rnd, sizeof(rnd), "%08lx%08lx", (unsigned long)random(),
                         (unsigned long)(client_now_ms() & 0xffffffff));
                snprintf(dl->tmp, sizeof(dl->tmp), ".ferry-tmp-%.16s", rnd);
                dl->out = openat(dl->parent, dl->tmp,
                                 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
                if (dl->out >= 0 || errno != EEXIST)
                        break;
        }
        if (dl->out < 0) {
                int e = errno;

                dl->tmp[0] = '\0';
                return dl_fail(dl,
                               e == ENOSPC   ? FERRY_ENOSPC
                               : e == EACCES ? FERRY_EPERM
                                             : FERRY_EIO,
                               "cannot write %s/%s: %s", dl->dir, lp, strerror(e));
        }
        /* A reflink makes the copy at once where the file system can. */
        dl->cloned = ioctl(dl->out, FICLONE, dl->src) == 0;
        if (dl->cloned)
                dl->copied = dl->size;
        return 0;
}

/* Copy up to one slice of the current file. 1 when all of it is in, 0 more to do, <0. */
static int dl_copy_slice(struct ferry_download *dl)
{
        int64_t left = dl->size - dl->copied, slice = left < DOWNLOAD_SLICE ? left : DOWNLOAD_SLICE;

        while (slice > 0) {
                loff_t in = dl->copied, outoff = dl->copied;
                ssize_t n = copy_file_range(dl->src, &in, dl->out, &outoff, (size_t)slice, 0);

                if (n < 0 &&
                    (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                        char buf[1 << 16];

                        n = pread(dl->src, buf,
                                  sizeof(buf) < (size_t)slice ? sizeof(buf) : (size_t)slice,
                                  dl->copied);
                        if (n > 0 && pwrite(dl->out, buf, (size_t)n, dl->copied) != n)
                                n = -1;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = errno;

                        return dl_fail(dl, e == ENOSPC || e == EDQUOT ? FERRY_ENOSPC : FERRY_EIO,
                                       "cannot write %s/%s: %s", dl->dir, dl->leaf_path,
                                       strerror(e));
                }
                if (n == 0)
                        return dl_fail(dl, FERRY_EIO, "%s came short from ferryd", dl->leaf_path);
                dl->copied += n;
                dl->bytes_done += n;
                slice -= n;
        }
        return dl->copied >= dl->size ? 1 : 0;
}

/* The copy is complete: sync, rename into place, sync the directory. */
static int dl_finish_file(struct ferry_download *dl)
{
        const char *lp = dl->leaf_path;

        if (dl->cloned)
                dl->bytes_done += dl->size;
        if (fsync(dl->out) != 0)
                return dl_fail(dl, FERRY_EIO, "cannot write %s/%s: %s", dl->dir, lp,
                               strerror(errno));
        close(dl->out);
        dl->out = -1;
        /* rename replaces a name, never follows it: the real name appears complete. */
        if (renameat(dl->parent, dl->tmp, dl->parent, dl->leaf) != 0) {
                int e = errno;

                unlinkat(dl->parent, dl->tmp, 0);
                return dl_fail(dl, FERRY_EIO, "cannot write %s/%s: %s", dl->dir, lp, strerror(e));
        }
        dl->tmp[0] = '\0';
        fsync(dl->parent);
        dl_note(dl, lp, dl->size, ACT_WRITTEN, NULL);
        cJSON_SetNumberValue(
            cJSON_GetObjectItemCaseSensitive(dl->result, "bytes"),
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(dl->result, "bytes")) +
                (double)dl->size);
        return 1;
}

/* Ask ferryd for the descriptors of the next files. */
static int dl_fetch_batch(struct ferry_client *c, struct ferry_download *dl)
{
        int n = dl->nfiles - dl->next, rc, got = 0;
        cJSON *req, *rep = NULL;

        if (n > PROTO_MAX_FDS)
                n = PROTO_MAX_FDS;
        req = client_request(c, proto_op_name(PROTO_OP_DOWNLOAD_FILES));
        if (req == NULL || !cJSON_AddStringToObject(req, "token", dl->token) ||
            !cJSON_AddNumberToObject(req, "from", dl->next) ||
            !cJSON_AddNumberToObject(req, "count", n)) {
                cJSON_Delete(req);
                return dl_fail(dl, FERRY_ENOMEM, "out of memory");
        }
        c->limit_ms = c->timeout_ms;
        rc = client_roundtrip_fds(c, req, NULL, 0, client_deadline_after(c->timeout_ms), &rep,
                                  &dl->fds, &got);
        if (rc != 0)
                return dl_fail(dl, rc, "%s", c->err);
        cJSON_Delete(dl->batch);
        dl->batch = cJSON_DetachItemFromObjectCaseSensitive(rep, "files");
        cJSON_Delete(rep);
        dl->nfds = got;
        if (!cJSON_IsArray(dl->batch) || cJSON_GetArraySize(dl->batch) != n) {
                dl_close_batch(dl);
                return dl_fail(dl, FERRY_EPROTO, "ferryd's reply to download.files is malformed");
        }
        dl->nbatch = n;
        dl->ibatch = 0;
        dl->next += n;
        return 0;
}

/* Do work for up to `deadline` (-1: until done). 1 done, 0 more to do. */
static int dl_work(struct ferry_client *c, struct ferry_download *dl, int64_t deadline)
{
        bool stepped = false;
        int rc;

        /* One step at least, so that polling with no time to spare still advances. */
        for (; dl->state == DL_COPYING; stepped = true) {
                if (stepped && deadline >= 0 && client_now_ms() >= deadline)
                        return 0;
                if (dl->out >= 0) {
                        rc = dl_copy_slice(dl);
                        if (rc < 0)
                                break;
                        if (rc == 1 && dl_finish_file(dl) < 0)
                                break;
                        if (rc == 1) {
                                download_close_file(dl, false);
                                dl->ibatch++;
                        }
                        continue;
                }
                if (dl->ibatch < dl->nbatch) {
                        rc = dl_start_file(dl);
                        if (rc < 0)
                                break;
                        if (rc == 1) { /* decided without copying */
                                download_close_file(dl, false);
                                dl->ibatch++;
                        }
                        continue;
                }
                dl_close_batch(dl);
                dl->nbatch = dl->ibatch = 0;
                if (dl->next < dl->nfiles) {
                        if (dl_fetch_batch(c, dl) < 0)
                                break;
                        continue;
                }
                dl->state = DL_DONE;
        }
        return 1;
}

/* Make and open the target directory, with the caller's rights, once ferryd said what comes. */
static int dl_make_dir(struct ferry_download *dl)
{
        for (char *p = dl->dir + 1;; p++) {
                if (*p == '/' || *p == '\0') {
                        char save = *p;
                        int e;

                        *p = '\0';
                        e = mkdir(dl->dir, 0777) != 0 && errno != EEXIST ? errno : 0;
                        *p = save;
                        if (e != 0)
                                return dl_fail(dl, e == EACCES ? FERRY_EPERM : FERRY_EIO,
                                               "cannot create %s: %s", dl->dir, strerror(e));
                        if (save == '\0')
                                break;
                }
        }
        dl->dirfd = open(dl->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dl->dirfd < 0)
                return dl_fail(dl, errno == EACCES ? FERRY_EPERM : FERRY_EIO, "cannot open %s: %s",
                               dl->dir, strerror(errno));
        return 0;
}

/* The reply to download.open came: learn the files, prepare the result. */
static int dl_opened(struct ferry_client *c, struct ferry_download *dl, cJSON *rep)
{
        const char *tok;

        int64_t count = -1, bytes = -1;

        if (proto_get_string(rep, "token", true, &tok, NULL, 0) != 0 ||
            strlen(tok) >= sizeof(dl->token) ||
            proto_get_int(rep, "count", true, 0, &count, NULL, 0) != 0 || count < 0 ||
            count > INT_MAX || proto_get_int(rep, "bytes", true, 0, &bytes, NULL, 0) != 0 ||
            bytes < 0 || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(rep, "version"))) {
                cJSON_Delete(rep);
                return dl_fail(dl, FERRY_EPROTO, "ferryd's reply to download.open is malformed");
        }
        snprintf(dl->token, sizeof(dl->token), "%s", tok);
        dl->version = cJSON_DetachItemFromObjectCaseSensitive(rep, "version");
        dl->nfiles = (int)count; /* its assets, listed by download.files */
        dl->bytes_total = bytes;
        dl->result = cJSON_CreateObject();
        if (dl->result == NULL || !cJSON_AddStringToObject(dl->result, "dir", dl->dir) ||
            !cJSON_AddItemToObject(
                dl->result, "version",
                cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(dl->version, "version"), 1)) ||
            !cJSON_AddArrayToObject(dl->result, "files") ||
            !cJSON_AddNumberToObject(dl->result, "bytes", 0)) {
                cJSON_Delete(rep);
                return dl_fail(dl, FERRY_ENOMEM, "out of memory");
        }
        cJSON_Delete(rep);
        if (dl_make_dir(dl) != 0)
                return dl->rc;
        dl->state = DL_COPYING;
        (void)c;
        return 0;
}

int ferry_download_start(struct ferry_client *client, const char *spec, const char *dir,
                         enum ferry_overwrite overwrite)
{
        struct ferry_download *dl;
        char cwd[PATH_MAX];
        cJSON *req;
        int rc;

        if (client == NULL)
                return FERRY_EINVAL;
        if (client->dl != NULL)
                return client_fail(client, FERRY_EBUSY,
                                   "a download is already in progress on this connection; "
                                   "finish it with ferry_download_finish() first");
        if ((rc = client_check_spec(client, spec)) != 0)
                return rc;
        if ((unsigned)overwrite > FERRY_OVERWRITE_REPLACE)
                return client_fail(client, FERRY_EINVAL, "unknown overwrite strategy %d",
                                   (int)overwrite);
        if (dir == NULL || dir[0] == '\0')
                return client_fail(client, FERRY_EINVAL, "a download directory is required");
        dl = calloc(1, sizeof(*dl));
        if (dl == NULL)
                return client_nomem(client);
        dl->dirfd = dl->src = dl->out = dl->parent = -1;
        dl->mode = overwrite;
        /* Messages name the directory as an absolute path. */
        if (dir[0] != '/') {
                while (dir[0] == '.' && dir[1] == '/') /* "./out" reads better as "out" */
                        dir += 2;
                if (getcwd(cwd, sizeof(cwd)) == NULL ||
                    (size_t)snprintf(dl->dir, sizeof(dl->dir), "%s%s%s", cwd,
                                     strcmp(dir, ".") ? "/" : "",
                                     strcmp(dir, ".") ? dir : "") >= sizeof(dl->dir)) {
                        free(dl);
                        return client_fail(client, FERRY_EINVAL,
                                           "cannot make the download directory %s absolute", dir);
                }
        } else {
                snprintf(dl->dir, sizeof(dl->dir), "%s", dir);
        }
        req = client_request(client, proto_op_name(PROTO_OP_DOWNLOAD_OPEN));
        if (req == NULL || !cJSON_AddStringToObject(req, "name", spec)) {
                cJSON_Delete(req);
                client_download_free(dl);
                return client_nomem(client);
        }
        dl->open_id = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(req, "id"));
        client->limit_ms = client->timeout_ms;
        rc = client_send_request(client, req, client_deadline_after(client->timeout_ms));
        if (rc != 0) {
                client_download_free(dl);
                return rc;
        }
        dl->state = DL_OPENING;
        client->dl = dl;
        return 0;
}

int ferry_download_ready(struct ferry_client *client, int timeout_ms)
{
        struct ferry_download *dl;
        int64_t deadline;
        cJSON *rep = NULL;
        int rc;

        if (client == NULL)
                return FERRY_EINVAL;
        dl = client->dl;
        if (dl == NULL)
                return client_fail(client, FERRY_EINVAL,
                                   "no download is in progress on this connection");
        deadline = timeout_ms < 0 ? -1 : client_now_ms() + timeout_ms;
        if (dl->state == DL_OPENING) {
                rc = client_wait_reply(client, dl->open_id, deadline, "download.open", &rep);
                if (rc == FERRY_ETIMEDOUT && client->fd >= 0 && client_last_wait_late(client))
                        return 0;
                if (rc != 0) {
                        dl_fail(dl, rc, "%s", client->err);
                        return 1;
                }
                if (dl_opened(client, dl, rep) != 0)
                        return 1;
                return 0; /* opened: the caller may show what comes */
        }
        return dl_work(client, dl, deadline);
}

int ferry_download_progress(struct ferry_client *client, int64_t *done, int64_t *total)
{
        if (client == NULL || client->dl == NULL)
                return FERRY_EINVAL;
        if (done)
                *done = client->dl->bytes_done;
        if (total)
                *total = client->dl->bytes_total;
        return 0;
}

const char *ferry_download_version(const struct ferry_client *client)
{
        if (client == NULL || client->dl == NULL || client->dl->version == NULL)
                return NULL;
        return cJSON_GetStringValue(
            cJSON_GetObjectItemCaseSensitive(client->dl->version, "version"));
}

int ferry_download_finish(struct ferry_client *client, char **json)
{
        struct ferry_download *dl;
        cJSON *req, *rep = NULL;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        dl = client->dl;
        if (dl == NULL)
                return client_fail(client, FERRY_EINVAL,
                                   "no download is in progress on this connection");
        /* Waiting for ferryd is bounded by the client's time limit; copying is not. */
        if (dl->state == DL_OPENING) {
                ferry_download_ready(client, client->timeout_ms > 0 ? client->timeout_ms : -1);
                if (dl->state == DL_OPENING)
                        dl_fail(dl, FERRY_ETIMEDOUT, "%s", client->err);
        }
        while (dl->state != DL_DONE && ferry_download_ready(client, -1) == 0)
                ;
        /* Let ferryd forget it (its pins go); a lost connection forgets it anyway. */
        if (dl->token[0] != '\0' && client->fd >= 0) {
                char err[FERRY_ERR_MAX];

                memcpy(err, client->err, sizeof(err));
                req = client_request(client, proto_op_name(PROTO_OP_DOWNLOAD_CLOSE));
                if (req != NULL && cJSON_AddStringToObject(req, "token", dl->token))
                        client_call(client, req, client->timeout_ms, &rep);
                else
                        cJSON_Delete(req);
                cJSON_Delete(rep);
                memcpy(client->err, err, sizeof(err));
        }
        client->dl = NULL;
        rc = dl->rc;
        if (rc != 0) {
                snprintf(client->err, sizeof(client->err), "%s", dl->err);
        } else if (json != NULL) {
                *json = client_json_print(dl->result);
                if (*json == NULL)
                        rc = client_nomem(client);
        }
        client_download_free(dl);
        return rc;
}

int ferry_download(struct ferry_client *client, const char *spec, const char *dir,
                   enum ferry_overwrite overwrite, char **json)
{
        int rc;

        if (json != NULL)
                *json = NULL;
        rc = ferry_download_start(client, spec, dir, overwrite);
        if (rc != 0)
                return rc;
        return ferry_download_finish(client, json);
}
