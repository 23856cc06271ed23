/*
 * op_get.c — get and download: resolve [workspace/]name[:version_or_alias]
 * on the node's queue first (read your own writes), then on the backend;
 * download places each file safely in the target directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "backend.h"
#include "daemon.h"
#include "ferry.h"
#include "fsutil.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "spool.h"
#include "store.h"
#include "util.h"

struct lookup {
        struct request *req;
        struct spool *spool;
        char workspace[PROTO_NAME_MAX + 1];
        char name[PROTO_NAME_MAX + 1];
        char version[PROTO_NAME_MAX + 1]; /* "" when none was given */
        /* download only */
        char dir[PATH_MAX];
        int dirfd;
        enum fsutil_overwrite mode;
        cJSON *found;   /* the resolved version, owned */
        int64_t pinned; /* the queued job whose spool files are pinned, or 0 */
        cJSON *files;   /* result list, owned */
        int next;       /* index of the next asset to place */
        int64_t bytes;
        /* the placement in flight */
        uv_work_t work;
        int src_fd;
        const char *lp;
        const char *sha;
        enum fsutil_action action;
        int rc;
        char err[PROTO_ERRMSG_MAX];
};

static void lookup_free(struct lookup *lk)
{
        if (lk->dirfd >= 0)
                close(lk->dirfd);
        if (lk->src_fd >= 0)
                close(lk->src_fd);
        if (lk->pinned > 0)
                spool_unpin(lk->spool, lk->pinned);
        cJSON_Delete(lk->found);
        cJSON_Delete(lk->files);
        free(lk);
}

/* Remove the private "_..." fields meant for fetch() before a version leaves the daemon. */
static void strip_private(cJSON *version)
{
        cJSON *assets = cJSON_GetObjectItemCaseSensitive(version, "assets"), *a;

        cJSON_ArrayForEach(a, assets)
        {
                cJSON *f = a->child, *next;

                for (; f != NULL; f = next) {
                        next = f->next;
                        if (f->string && f->string[0] == '_')
                                cJSON_DeleteItemFromObjectCaseSensitive(a, f->string);
                }
        }
}

/* Parse name/workspace/version_or_alias from the request. 0 or -1 (request ended). */
static int lookup_parse(struct lookup *lk, const char *const *extra)
{
        struct request *req = lk->req;
        const char *allowed[12] = {"id", "op", "name", "workspace", "version_or_alias"};
        const char *spec, *ws, *vo;
        char err[PROTO_ERRMSG_MAX];
        size_t n = 5;
        int rc;

        while (extra && *extra && n < 11)
                allowed[n++] = *extra++;
        allowed[n] = NULL;
        if ((rc = proto_check_keys(req->msg, allowed, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "name", true, &spec, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "workspace", false, &ws, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "version_or_alias", false, &vo, err, sizeof(err))) ||
            (rc = proto_spec_parse(spec, lk->workspace, sizeof(lk->workspace), lk->name,
                                   sizeof(lk->name), lk->version, sizeof(lk->version), err,
                                   sizeof(err))))
                goto fail;
        if (ws != NULL && lk->workspace[0] == '\0') {
                if ((rc = proto_validate_name(ws, "workspace", err, sizeof(err))))
                        goto fail;
                snprintf(lk->workspace, sizeof(lk->workspace), "%s", ws);
        }
        if (vo != NULL && lk->version[0] == '\0') {
                if (vo[0] == '\0' || strlen(vo) > PROTO_NAME_MAX) {
                        rc = FERRY_EINVAL;
                        snprintf(err, sizeof(err), "bad version or alias");
                        goto fail;
                }
                snprintf(lk->version, sizeof(lk->version), "%s", vo);
        }
        if (lk->workspace[0] == '\0')
                snprintf(lk->workspace, sizeof(lk->workspace), "%s", req->d->cfg.workspace);
        return 0;
fail:
        request_fail(req, rc, "%s", err);
        return -1;
}

/* A queued version of this node, shaped like a backend's get result. */
static cJSON *lookup_pending(struct lookup *lk)
{
        struct daemon *d = lk->req->d;
        struct job *job;
        cJSON *v, *assets;
        int64_t id;
        size_t i;

        id = store_find_pending(d->store, lk->workspace, lk->name,
                                lk->version[0] ? lk->version : NULL);
        if (id == 0 || store_job_load(d->store, id, &job) != 0)
                return NULL;
        /* Its files outlive this request, even if the delivery ends meanwhile. */
        spool_pin(d->spool, id);
        lk->pinned = id;
        v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "workspace", job->workspace);
        cJSON_AddStringToObject(v, "project", job->project);
        cJSON_AddStringToObject(v, "name", job->name);
        cJSON_AddStringToObject(v, "type", job->type);
        if (job->assigned_version || job->version)
                cJSON_AddStringToObject(
                    v, "version", job->assigned_version ? job->assigned_version : job->version);
        else
                cJSON_AddNullToObject(v, "version");
        cJSON_AddItemToObject(v, "aliases", cJSON_Parse(job->aliases));
        cJSON_AddItemToObject(v, "version_tags", cJSON_Parse(job->tags));
        cJSON_AddItemToObject(v, "artifact_tags", cJSON_CreateArray());
        cJSON_AddItemToObject(v, "metadata",
                              job->metadata ? cJSON_Parse(job->metadata) : cJSON_CreateNull());
        cJSON_AddNumberToObject(v, "size", (double)job->bytes);
        cJSON_AddStringToObject(v, "experiment", job->experiment);
        /* OPEN: the backend numbered it and its uploads are under way; QUEUED: not yet. */
        cJSON_AddStringToObject(v, "state", job->assigned_version ? "OPEN" : "QUEUED");
        cJSON_AddBoolToObject(v, "uploaded", 0);
        cJSON_AddNumberToObject(v, "job", (double)job->id);
        assets = cJSON_AddArrayToObject(v, "assets");
        for (i = 0; i < job->nassets; i++) {
                const struct job_asset *a = &job->assets[i];
                cJSON *o = cJSON_CreateObject();

                cJSON_AddStringToObject(o, "logical_path", a->logical_path);
                cJSON_AddNumberToObject(o, "size", (double)a->size);
                cJSON_AddBoolToObject(o, "remote", a->remote);
                if (a->uri)
                        cJSON_AddStringToObject(o, "link", a->uri);
                else
                        cJSON_AddNullToObject(o, "link");
                cJSON_AddItemToObject(o, "metadata",
                                      a->metadata ? cJSON_Parse(a->metadata) : cJSON_CreateNull());
                if (a->spool)
                        cJSON_AddStringToObject(o, "_spool", a->spool);
                cJSON_AddItemToArray(assets, o);
        }
        job_free(job);
        return v;
}

static void lookup_resolve(struct lookup *lk, backend_get_cb *cb)
{
        struct backend *be = lk->req->d->backend;
        cJSON *pending = lookup_pending(lk);

        if (pending != NULL) {
                cb(lk, 0, NULL, pending);
                return;
        }
        be->ops->get(be, lk->workspace, lk->name, lk->version[0] ? lk->version : NULL, cb, lk);
}

static void get_resolved_cb(void *data, int code, const char *message, cJSON *version)
{
        struct lookup *lk = data;
        struct request *req = lk->req;
        cJSON *rep;

        if (code != 0) {
                cJSON_Delete(version);
                request_fail(req, code, "%s", message && message[0] ? message : "look-up failed");
                lookup_free(lk);
                return;
        }
        strip_private(version);
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON *f;

                /* Move the version's fields into the reply object. */
                while ((f = version->child) != NULL) {
                        cJSON_DetachItemViaPointer(version, f);
                        cJSON_AddItemToObject(rep, f->string, f);
                }
        }
        cJSON_Delete(version);
        request_reply(req, rep);
        lookup_free(lk);
}

void op_get(struct request *req)
{
        struct lookup *lk = calloc(1, sizeof(*lk));

        if (lk == NULL) {
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        lk->req = req;
        lk->spool = req->d->spool;
        lk->dirfd = -1;
        lk->src_fd = -1;
        if (lookup_parse(lk, NULL) != 0) {
                free(lk);
                return;
        }
        lookup_resolve(lk, get_resolved_cb);
}

/* ---- download ---- */

static void download_next(struct lookup *lk);

static void download_finish(struct lookup *lk, int code)
{
        struct request *req = lk->req;
        cJSON *rep;

        if (code != 0) {
                request_fail(req, code, "%s", lk->err);
                lookup_free(lk);
                return;
        }
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddStringToObject(rep, "dir", lk->dir);
                cJSON_AddItemToObject(
                    rep, "version",
                    cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(lk->found, "version"), 1));
                cJSON_AddItemToObject(rep, "files", lk->files);
                lk->files = NULL;
                cJSON_AddNumberToObject(rep, "bytes", (double)lk->bytes);
        }
        request_reply(req, rep);
        lookup_free(lk);
}

static void download_note(struct lookup *lk, const cJSON *asset, const char *action,
                          const char *note)
{
        cJSON *f = cJSON_CreateObject();
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(asset, "logical_path");
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(asset, "size");
        char *path;

        if (f == NULL)
                return;
        cJSON_AddStringToObject(f, "logical_path", cJSON_GetStringValue(lp));
        path = util_path_join(lk->dir, cJSON_GetStringValue(lp));
        cJSON_AddStringToObject(f, "path", path ? path : "");
        free(path);
        cJSON_AddNumberToObject(f, "size", cJSON_GetNumberValue(size));
        cJSON_AddStringToObject(f, "action", action);
        if (note)
                cJSON_AddStringToObject(f, "note", note);
        cJSON_AddItemToArray(lk->files, f);
}

static void download_place_work_cb(uv_work_t *work)
{
        struct lookup *lk = work->data;

        lk->rc = fsutil_place_file(lk->dirfd, lk->dir, lk->lp, lk->src_fd, lk->sha, lk->mode,
                                   &lk->action, lk->err, sizeof(lk->err));
}

static void download_place_after_cb(uv_work_t *work, int status)
{
        struct lookup *lk = work->data;
        const cJSON *asset =
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lk->found, "assets"), lk->next - 1);
        static const char *const names[] = {"written", "kept", "preserved"};

        close(lk->src_fd);
        lk->src_fd = -1;
        if (status != 0 || lk->rc != 0) {
                download_finish(lk, status ? FERRY_EINTERNAL : lk->rc);
                return;
        }
        if (lk->action == FSUTIL_WRITTEN)
                lk->bytes +=
                    (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(asset, "size"));
        download_note(lk, asset, names[lk->action], NULL);
        download_next(lk);
}

static void download_place(struct lookup *lk);

static void download_fetched_cb(void *data, int code, const char *message, const char *path)
{
        struct lookup *lk = data;
        int e;

        if (code != 0) {
                snprintf(lk->err, sizeof(lk->err), "cannot fetch %s: %s", lk->lp,
                         message ? message : ferry_strerror(code));
                download_finish(lk, code);
                return;
        }
        lk->src_fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (lk->src_fd < 0) {
                e = errno;
                snprintf(lk->err, sizeof(lk->err), "cannot read the content of %s: %s", lk->lp,
                         strerror(e));
                download_finish(lk, e == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO);
                return;
        }
        download_place(lk);
}

/* Copy the open source of the current asset into place, on the thread pool. */
static void download_place(struct lookup *lk)
{
        int rc;

        lk->work.data = lk;
        rc = uv_queue_work(lk->req->d->loop, &lk->work, download_place_work_cb,
                           download_place_after_cb);
        if (rc != 0) {
                snprintf(lk->err, sizeof(lk->err), "cannot queue the copy: %s", uv_strerror(rc));
                download_finish(lk, FERRY_EINTERNAL);
        }
}

static void download_next(struct lookup *lk)
{
        const cJSON *assets = cJSON_GetObjectItemCaseSensitive(lk->found, "assets");
        struct backend *be = lk->req->d->backend;

        while (lk->next < cJSON_GetArraySize(assets)) {
                const cJSON *a = cJSON_GetArrayItem(assets, lk->next++);
                const cJSON *spool = cJSON_GetObjectItemCaseSensitive(a, "_spool");

                lk->lp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "logical_path"));
                lk->sha = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "_sha256"));
                if (lk->lp == NULL)
                        continue;
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote"))) {
                        download_note(lk, a, "skipped", "remote asset: listed, not downloaded");
                        continue;
                }
                if (cJSON_IsString(spool)) { /* still queued on this node: its pinned snapshot */
                        lk->src_fd = spool_open_file(lk->req->d->spool, spool->valuestring);
                        if (lk->src_fd < 0) {
                                snprintf(lk->err, sizeof(lk->err),
                                         "cannot read the snapshot of %s: %s", lk->lp,
                                         strerror(-lk->src_fd));
                                lk->src_fd = -1;
                                download_finish(lk, FERRY_EIO);
                                return;
                        }
                        download_place(lk);
                } else {
                        be->ops->fetch(be, a, download_fetched_cb, lk);
                }
                return;
        }
        download_finish(lk, 0);
}

static void download_resolved_cb(void *data, int code, const char *message, cJSON *version)
{
        struct lookup *lk = data;
        const cJSON *a;
        int rc;

        if (code != 0) {
                cJSON_Delete(version);
                snprintf(lk->err, sizeof(lk->err), "%s",
                         message && message[0] ? message : "look-up failed");
                download_finish(lk, code);
                return;
        }
        lk->found = version;
        /* Refuse a hostile version before writing anything. */
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(version, "assets"))
        {
                const char *lp =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "logical_path"));
                char why[256];

                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote")))
                        continue;
                if (lp == NULL || proto_validate_logical_path(lp, why, sizeof(why)) != 0) {
                        char shown[200];

                        proto_sanitize(shown, sizeof(shown), lp ? lp : "(none)",
                                       strlen(lp ? lp : "(none)"));
                        snprintf(lk->err, sizeof(lk->err),
                                 "refusing to download: the backend names a file \"%s\" "
                                 "outside the target directory",
                                 shown);
                        download_finish(lk, FERRY_EUNSAFE);
                        return;
                }
        }
        if ((rc = util_mkdir_p(lk->dir, 0755)) != 0) {
                snprintf(lk->err, sizeof(lk->err), "cannot create %s: %s", lk->dir, strerror(-rc));
                download_finish(lk, FERRY_EIO);
                return;
        }
        lk->dirfd = open(lk->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (lk->dirfd < 0) {
                snprintf(lk->err, sizeof(lk->err), "cannot open %s: %s", lk->dir, strerror(errno));
                download_finish(lk, FERRY_EIO);
                return;
        }
        download_next(lk);
}

void op_download(struct request *req)
{
        static const char *const extra[] = {"dir", "overwrite", NULL};
        struct lookup *lk = calloc(1, sizeof(*lk));
        const char *dir, *ow;
        char err[PROTO_ERRMSG_MAX];
        int rc;

        if (lk == NULL || (lk->files = cJSON_CreateArray()) == NULL) {
                free(lk);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        lk->req = req;
        lk->spool = req->d->spool;
        lk->dirfd = -1;
        lk->src_fd = -1;
        if (lookup_parse(lk, extra) != 0) {
                lk->req = NULL;
                cJSON_Delete(lk->files);
                free(lk);
                return;
        }
        if ((rc = proto_get_string(req->msg, "dir", true, &dir, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "overwrite", false, &ow, err, sizeof(err))))
                goto fail;
        if (dir[0] != '/' || strlen(dir) >= sizeof(lk->dir)) {
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err), "dir must be an absolute path");
                goto fail;
        }
        snprintf(lk->dir, sizeof(lk->dir), "%s", dir);
        if (ow == NULL || strcmp(ow, "fail") == 0) {
                lk->mode = FSUTIL_FAIL;
        } else if (strcmp(ow, "preserve") == 0) {
                lk->mode = FSUTIL_PRESERVE;
        } else if (strcmp(ow, "overwrite") == 0) {
                lk->mode = FSUTIL_OVERWRITE;
        } else {
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err), "overwrite must be fail, preserve or overwrite");
                goto fail;
        }
        lookup_resolve(lk, download_resolved_cb);
        return;
fail:
        request_fail(req, rc, "%s", err);
        lk->req = NULL;
        lookup_free(lk);
}
