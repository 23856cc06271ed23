/*
 * op_get.c — get, and downloads: resolve [workspace/]name[:version_or_alias]
 * on the node's queue first (read your own writes), then on the backend.
 *
 * A download hands the client descriptors of the files to copy, never writes
 * into the client's directories with ferryd's own rights: download.open
 * resolves the version (and pins a queued version's snapshots), download.files
 * sends descriptors of up to 250 files at a time (fetching remote ones into
 * the node-wide cache first), download.close forgets it. libferry places the
 * files (temporary name, fsync, rename, no symlink followed).
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
#include "connection.h"
#include "daemon.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "s3.h"
#include "spool.h"
#include "store.h"
#include "util.h"

/* A resolved version a client is downloading (its connection's download session). */
#define GET_REPLY_BUDGET (768 * 1024) /* bytes of a get reply's version, assets included */

struct download {
        char token[33];
        cJSON *version; /* as the backend or the queue returned it, private fields included */
        cJSON **files;  /* its assets, in order (pointers into version) */
        int nfiles;
        int64_t pinned; /* the queued job whose snapshots are pinned, or 0 */
        struct spool *spool;
        int busy;    /* a download.files is fetching */
        bool closed; /* forgotten while busy: freed when its fetches return */
        struct download *next;
};

struct lookup {
        struct request *req;
        char workspace[PROTO_NAME_MAX + 1];
        char name[PROTO_NAME_MAX + 1];
        char version[PROTO_NAME_MAX + 1]; /* "" when none was given */
        int64_t pinned;                   /* a queued job pinned by the look-up, or 0 */
        int64_t assets_from;              /* get: the first asset of the reply's page */
};

/*
 * A synced S3 asset, downloadable from the object store: remote, an s3://
 * link, metadata "synced": true and no error_message. Other remote assets
 * (gs://, https://, --no-sync, listings that fell back) are listed only.
 */
static bool synced_s3_asset(const cJSON *a)
{
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(a, "metadata");

        return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote")) &&
               s3_uri_is_s3(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "link"))) &&
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(meta, "synced")) &&
               cJSON_GetObjectItemCaseSensitive(meta, "error_message") == NULL;
}

/* Only listed, never downloaded: a remote asset that is not a synced S3 object. */
static bool listed_only(const cJSON *a)
{
        return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote")) && !synced_s3_asset(a);
}

/* The bytes of a downloadable asset: a synced S3 object's file_size, else its size. */
static int64_t asset_size(const cJSON *a)
{
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(a, "size");

        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote")))
                n = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(a, "metadata"), "file_size");
        return cJSON_IsNumber(n) && n->valuedouble >= 0 && n->valuedouble < 9e18
                   ? (int64_t)n->valuedouble
                   : 0;
}

#define GET_WARNINGS_MAX 20

/*
 * "warnings": what the user should hear about the version: remote assets
 * whose S3 listing fell back ("synced": false with an error_message).
 */
static void add_warnings(cJSON *version)
{
        cJSON *warnings = cJSON_CreateArray(), *a;
        int n = 0;

        if (warnings == NULL)
                return;
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(version, "assets"))
        {
                const cJSON *meta = cJSON_GetObjectItemCaseSensitive(a, "metadata");
                const char *why =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "error_message"));
                const char *link =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "link"));
                char msg[1200];

                if (why == NULL || !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(meta, "synced")))
                        continue;
                if (n++ == GET_WARNINGS_MAX)
                        break;
                snprintf(
                    msg, sizeof(msg), "%.300s was not synced (one remote asset \"%.200s\"): %s",
                    link ? link : "?",
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "logical_path")), why);
                proto_utf8_trim(msg);
                cJSON_AddItemToArray(warnings, cJSON_CreateString(msg));
        }
        cJSON_AddItemToObject(version, "warnings", warnings);
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
static int lookup_parse(struct lookup *lk)
{
        static const char *const allowed[] = {
            "id", "op", "name", "workspace", "version_or_alias", "assets_from", NULL};
        struct request *req = lk->req;
        const char *spec, *ws, *vo;
        char err[PROTO_ERRMSG_MAX];
        int rc;

        if ((rc = proto_check_keys(req->msg, allowed, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "name", true, &spec, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "workspace", false, &ws, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "version_or_alias", false, &vo, err, sizeof(err))) ||
            (rc = proto_get_int(req->msg, "assets_from", false, 0, &lk->assets_from, err,
                                sizeof(err))) ||
            (rc = proto_spec_parse(spec, lk->workspace, sizeof(lk->workspace), lk->name,
                                   sizeof(lk->name), lk->version, sizeof(lk->version), err,
                                   sizeof(err))))
                goto fail;
        if (lk->assets_from < 0 || lk->assets_from > INT_MAX) {
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err), "assets_from must be 0 or more");
                goto fail;
        }
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

/* A version still on its way from this node, shaped like a backend's get result. */
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

/* Resolve on the queue, then on the backend: cb(lk, code, message, version). */
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

static void lookup_free(struct lookup *lk)
{
        if (lk->pinned > 0)
                spool_unpin(lk->req->d->spool, lk->pinned);
        free(lk);
}

static struct lookup *lookup_new(struct request *req)
{
        struct lookup *lk = calloc(1, sizeof(*lk));

        if (lk == NULL) {
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return NULL;
        }
        lk->req = req;
        if (lookup_parse(lk) != 0) {
                free(lk);
                return NULL;
        }
        return lk;
}

/* ---- get ---- */

/*
 * A reply is one frame: a version with many assets (or much metadata) is
 * answered a page at a time. Keep the assets from `from` that fit in
 * GET_REPLY_BUDGET bytes together with the version's other fields (at least
 * one), and say where the page starts and how many there are in all.
 */
static int get_page_assets(cJSON *version, int64_t from)
{
        cJSON *assets = cJSON_DetachItemFromObjectCaseSensitive(version, "assets"), *page, *a;
        int total = cJSON_GetArraySize(assets), i = 0;
        size_t bytes;
        char *text;

        if ((page = cJSON_CreateArray()) == NULL ||
            (text = cJSON_PrintUnformatted(version)) == NULL) {
                cJSON_Delete(assets);
                cJSON_Delete(page);
                return FERRY_ENOMEM;
        }
        bytes = strlen(text);
        cJSON_free(text);
        while ((a = assets ? assets->child : NULL) != NULL) {
                cJSON_DetachItemViaPointer(assets, a);
                if (i++ < from) {
                        cJSON_Delete(a);
                        continue;
                }
                if ((text = cJSON_PrintUnformatted(a)) == NULL) {
                        cJSON_Delete(a);
                        break;
                }
                bytes += strlen(text) + 1;
                cJSON_free(text);
                if (page->child != NULL && bytes > GET_REPLY_BUDGET) {
                        cJSON_Delete(a);
                        break;
                }
                cJSON_AddItemToArray(page, a);
        }
        cJSON_Delete(assets);
        cJSON_AddItemToObject(version, "assets", page);
        cJSON_AddNumberToObject(version, "assets_from", (double)from);
        cJSON_AddNumberToObject(version, "assets_total", total);
        return 0;
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
        add_warnings(version);
        rep = request_ok(req);
        if (rep != NULL && get_page_assets(version, lk->assets_from) != 0) {
                cJSON_Delete(rep);
                rep = NULL;
        }
        if (rep != NULL) {
                cJSON *f;

                /* Move the version's fields into the reply object. */
                while ((f = version->child) != NULL) {
                        cJSON_DetachItemViaPointer(version, f);
                        cJSON_AddItemToObject(rep, f->string, f);
                }
        }
        cJSON_Delete(version);
        lookup_free(lk);
        if (rep == NULL)
                request_fail(req, FERRY_ENOMEM, "out of memory");
        else
                request_reply(req, rep);
}

void op_get(struct request *req)
{
        struct lookup *lk = lookup_new(req);

        if (lk != NULL)
                lookup_resolve(lk, get_resolved_cb);
}

/* ---- download sessions ---- */

struct download_session {
        struct download *downloads;
};

static void download_free(struct download *dl)
{
        if (dl->pinned > 0)
                spool_unpin(dl->spool, dl->pinned);
        cJSON_Delete(dl->version);
        free(dl->files);
        free(dl);
}

static struct download *download_find(struct request *req, char *err, size_t errlen)
{
        struct download_session *s = *client_session(req->client, SESSION_DOWNLOAD);
        const char *token;
        struct download *dl;

        if (proto_get_string(req->msg, "token", true, &token, err, errlen) != 0)
                return NULL;
        for (dl = s ? s->downloads : NULL; dl != NULL; dl = dl->next)
                if (strcmp(dl->token, token) == 0)
                        return dl;
        snprintf(err, errlen, "no download on this connection has that token");
        return NULL;
}

/* Forget `dl` (now, or once its fetches return). */
static void download_forget(struct download_session *s, struct download *dl)
{
        struct download **pp;

        for (pp = &s->downloads; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == dl) {
                        *pp = dl->next;
                        break;
                }
        }
        if (dl->busy > 0)
                dl->closed = true;
        else
                download_free(dl);
}

void op_download_client_closed(struct client *client)
{
        struct download_session **sp =
            (struct download_session **)client_session(client, SESSION_DOWNLOAD);

        if (*sp == NULL)
                return;
        while ((*sp)->downloads != NULL)
                download_forget(*sp, (*sp)->downloads);
        free(*sp);
        *sp = NULL;
}

/* ---- download.open ---- */

static void download_opened_cb(void *data, int code, const char *message, cJSON *version)
{
        struct lookup *lk = data;
        struct request *req = lk->req;
        struct download_session **sp =
            (struct download_session **)client_session(req->client, SESSION_DOWNLOAD);
        struct download *dl = NULL;
        cJSON *rep = NULL, *pub = NULL, *a;
        int n = 0;
        int64_t bytes = 0;

        if (code != 0) {
                cJSON_Delete(version);
                request_fail(req, code, "%s", message && message[0] ? message : "look-up failed");
                lookup_free(lk);
                return;
        }
        /* Refuse a hostile version before the client writes anything. */
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(version, "assets"))
        {
                const char *lp =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "logical_path"));
                char why[256], shown[200];

                n++;
                if (listed_only(a))
                        continue;
                if (lp == NULL || proto_validate_logical_path(lp, why, sizeof(why)) != 0) {
                        proto_sanitize(shown, sizeof(shown), lp ? lp : "(none)",
                                       strlen(lp ? lp : "(none)"));
                        cJSON_Delete(version);
                        request_fail(req, FERRY_EUNSAFE,
                                     "refusing to download: the backend names a file \"%s\" "
                                     "outside the target directory",
                                     shown);
                        lookup_free(lk);
                        return;
                }
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote")))
                        bytes += asset_size(a);
                else
                        bytes += (int64_t)cJSON_GetNumberValue(
                            cJSON_GetObjectItemCaseSensitive(a, "size"));
        }
        if (*sp == NULL)
                *sp = calloc(1, sizeof(**sp));
        dl = *sp ? calloc(1, sizeof(*dl)) : NULL;
        if (dl == NULL || (dl->files = calloc((size_t)n + 1, sizeof(*dl->files))) == NULL ||
            util_random_hex(dl->token, 16) != 0 || (pub = cJSON_Duplicate(version, 1)) == NULL ||
            (rep = request_ok(req)) == NULL) {
                if (dl)
                        free(dl->files);
                free(dl);
                cJSON_Delete(pub);
                cJSON_Delete(version);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                lookup_free(lk);
                return;
        }
        dl->version = version;
        dl->spool = req->d->spool;
        dl->pinned = lk->pinned; /* the download holds the pin now */
        lk->pinned = 0;
        /* The reply is one frame whatever the version holds: download.files lists the assets. */
        cJSON_DeleteItemFromObjectCaseSensitive(pub, "assets");
        cJSON_AddNumberToObject(pub, "assets_total", n);
        cJSON_AddStringToObject(rep, "token", dl->token);
        cJSON_AddItemToObject(rep, "version", pub);
        cJSON_AddNumberToObject(rep, "count", n);
        cJSON_AddNumberToObject(rep, "bytes", (double)bytes);
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(version, "assets"))
            dl->files[dl->nfiles++] = a;
        dl->next = (*sp)->downloads;
        (*sp)->downloads = dl;
        lookup_free(lk);
        request_reply(req, rep);
}

void op_download_open(struct request *req)
{
        struct lookup *lk = lookup_new(req);

        if (lk != NULL)
                lookup_resolve(lk, download_opened_cb);
}

/* ---- download.files ---- */

struct files_req {
        struct request *req;
        struct download *dl;
        int from, count;
        int *fds;     /* per file, once available */
        char **paths; /* per file: where the backend made it available */
        int waiting;  /* fetches not back yet */
        int rc;
        char err[PROTO_ERRMSG_MAX];
};

/* Open a file the daemon keeps (registry or cache blob) without following a link. */
static int open_kept(const char *path)
{
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

        return fd >= 0 ? fd : -errno;
}

static void files_finish(struct files_req *fr)
{
        struct request *req = fr->req;
        struct download *dl = fr->dl;
        cJSON *rep = NULL, *files;
        int i, n = 0;

        dl->busy--;
        for (i = 0; fr->rc == 0 && i < fr->count; i++) {
                if (fr->fds[i] >= 0 || fr->paths[i] == NULL)
                        continue; /* opened, or a remote asset */
                fr->fds[i] = open_kept(fr->paths[i]);
                if (fr->fds[i] < 0) {
                        snprintf(fr->err, sizeof(fr->err), "cannot open %s: %s",
                                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                                     dl->files[fr->from + i], "logical_path")),
                                 strerror(-fr->fds[i]));
                        fr->fds[i] = -1;
                        fr->rc = FERRY_EIO;
                }
        }
        if (fr->rc == 0 && !dl->closed && (rep = request_ok(req)) != NULL) {
                files = cJSON_AddArrayToObject(rep, "files");
                for (i = 0; i < fr->count; i++) {
                        const cJSON *a = dl->files[fr->from + i];
                        const char *sha =
                            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "_sha256"));
                        const char *link =
                            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "link"));
                        cJSON *f = cJSON_CreateObject();

                        cJSON_AddNumberToObject(f, "index", fr->from + i);
                        cJSON_AddStringToObject(
                            f, "logical_path",
                            cJSON_GetStringValue(
                                cJSON_GetObjectItemCaseSensitive(a, "logical_path")));
                        cJSON_AddNumberToObject(f, "size", (double)asset_size(a));
                        if (fr->fds[i] < 0) { /* a remote asset: listed, nothing to read */
                                cJSON_AddTrueToObject(f, "remote");
                                if (link != NULL)
                                        cJSON_AddStringToObject(f, "link", link);
                        } else {
                                fr->fds[n] = fr->fds[i]; /* packed: the k-th sent is "fd": k */
                                cJSON_AddNumberToObject(f, "fd", n++);
                                if (link != NULL) /* a synced S3 object, fetched */
                                        cJSON_AddStringToObject(f, "link", link);
                                if (sha != NULL)
                                        cJSON_AddStringToObject(f, "sha256", sha);
                        }
                        cJSON_AddItemToArray(files, f);
                }
                cJSON_AddNumberToObject(rep, "fds", n);
                client_send_fds(req->client, rep, fr->fds, n);
                cJSON_Delete(rep);
                request_drop(req);
        } else {
                for (i = 0; i < fr->count; i++)
                        if (fr->fds[i] >= 0)
                                close(fr->fds[i]);
                if (dl->closed)
                        request_fail(req, FERRY_ECLOSED, "the download was closed");
                else if (rep == NULL && fr->rc == 0)
                        request_fail(req, FERRY_ENOMEM, "out of memory");
                else
                        request_fail(req, fr->rc, "%s", fr->err);
        }
        if (dl->closed && dl->busy == 0)
                download_free(dl);
        for (i = 0; i < fr->count; i++)
                free(fr->paths[i]);
        free(fr->paths);
        free(fr->fds);
        free(fr);
}

struct fetch_slot {
        struct files_req *fr;
        int i;
};

static void files_fetched_cb(void *data, int code, const char *message, const char *path)
{
        struct fetch_slot *slot = data;
        struct files_req *fr = slot->fr;
        int i = slot->i;

        free(slot);
        if (code != 0 && fr->rc == 0) {
                fr->rc = code;
                snprintf(fr->err, sizeof(fr->err), "cannot fetch %s: %s",
                         cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                             fr->dl->files[fr->from + i], "logical_path")),
                         message ? message : ferry_strerror(code));
                proto_utf8_trim(fr->err);
        } else if (code == 0) {
                /* Opened at once: the cache may evict the blob once we return. */
                fr->fds[i] = open_kept(path);
                if (fr->fds[i] < 0 && fr->rc == 0) {
                        fr->rc = FERRY_EIO;
                        snprintf(fr->err, sizeof(fr->err), "cannot open a fetched file: %s",
                                 strerror(-fr->fds[i]));
                }
                if (fr->fds[i] < 0)
                        fr->fds[i] = -1;
        }
        if (--fr->waiting == 0)
                files_finish(fr);
}

void op_download_files(struct request *req)
{
        static const char *const keys[] = {"id", "op", "token", "from", "count", NULL};
        struct backend *be = req->d->backend;
        char err[PROTO_ERRMSG_MAX];
        struct download *dl;
        struct files_req *fr;
        int64_t from, count;
        int i, rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) != 0 ||
            (rc = proto_get_int(req->msg, "from", true, 0, &from, err, sizeof(err))) != 0 ||
            (rc = proto_get_int(req->msg, "count", true, 0, &count, err, sizeof(err))) != 0) {
                request_fail(req, rc, "%s", err);
                return;
        }
        if ((dl = download_find(req, err, sizeof(err))) == NULL) {
                request_fail(req, FERRY_ENOTFOUND, "%s", err);
                return;
        }
        if (from < 0 || count < 1 || count > PROTO_MAX_FDS || from + count > dl->nfiles) {
                request_fail(req, FERRY_EINVAL,
                             "ask for 1 to %d of the version's %d assets, within its list",
                             PROTO_MAX_FDS, dl->nfiles);
                return;
        }
        fr = calloc(1, sizeof(*fr));
        if (fr == NULL || (fr->fds = malloc((size_t)count * sizeof(int))) == NULL ||
            (fr->paths = calloc((size_t)count, sizeof(char *))) == NULL) {
                if (fr) {
                        free(fr->fds);
                        free(fr);
                }
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        fr->req = req;
        fr->dl = dl;
        fr->from = (int)from;
        fr->count = (int)count;
        dl->busy++;
        fr->waiting = 1; /* released after the loop */
        for (i = 0; i < fr->count; i++) {
                const cJSON *a = dl->files[fr->from + i];
                const char *spool =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "_spool"));
                const char *path =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "_path"));
                struct fetch_slot *slot;

                fr->fds[i] = -1;
                if (listed_only(a))
                        continue;    /* listed in the reply, nothing to open */
                if (spool != NULL) { /* still on its way: its pinned snapshot */
                        fr->fds[i] = spool_open_file(req->d->spool, spool);
                        if (fr->fds[i] < 0 && fr->rc == 0) {
                                fr->rc = FERRY_EIO;
                                snprintf(fr->err, sizeof(fr->err),
                                         "cannot read the snapshot of an asset: %s",
                                         strerror(-fr->fds[i]));
                        }
                        if (fr->fds[i] < 0)
                                fr->fds[i] = -1;
                        continue;
                }
                if (path != NULL) { /* a file the backend keeps on the node */
                        fr->paths[i] = strdup(path);
                        continue;
                }
                slot = calloc(1, sizeof(*slot));
                if (slot == NULL) {
                        fr->rc = FERRY_ENOMEM;
                        break;
                }
                slot->fr = fr;
                slot->i = i;
                fr->waiting++;
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "remote"))) {
                        /* A synced S3 object: from the store, pinned and checked, via the cache. */
                        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(a, "metadata");
                        const cJSON *size = cJSON_GetObjectItemCaseSensitive(meta, "file_size");

                        s3_fetch(req->d->s3,
                                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "link")),
                                 cJSON_GetStringValue(
                                     cJSON_GetObjectItemCaseSensitive(meta, "version_id")),
                                 cJSON_GetStringValue(
                                     cJSON_GetObjectItemCaseSensitive(meta, "checksum")),
                                 cJSON_IsNumber(size) && size->valuedouble >= 0
                                     ? (int64_t)size->valuedouble
                                     : -1,
                                 files_fetched_cb, slot);
                        continue;
                }
                be->ops->fetch(be, a, files_fetched_cb, slot);
        }
        if (--fr->waiting == 0)
                files_finish(fr);
}

/* ---- download.close ---- */

void op_download_close(struct request *req)
{
        static const char *const keys[] = {"id", "op", "token", NULL};
        struct download_session *s = *client_session(req->client, SESSION_DOWNLOAD);
        char err[PROTO_ERRMSG_MAX];
        struct download *dl;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) != 0) {
                request_fail(req, rc, "%s", err);
                return;
        }
        if ((dl = download_find(req, err, sizeof(err))) == NULL) {
                request_fail(req, FERRY_ENOTFOUND, "%s", err);
                return;
        }
        download_forget(s, dl);
        request_reply(req, request_ok(req));
}
