/*
 * op_log.c — logging a version: artifact.log (one frame), or artifact.begin,
 * artifact.add (as many frames as needed), artifact.commit / artifact.abort.
 *
 * Files come as descriptors the client opened (SCM_RIGHTS): ferryd reads
 * what the client could read, never a path with its own rights. Everything
 * is validated first; the files are snapshotted into the spool on libuv's
 * thread pool (each synced, with its manifest); then the version goes to the
 * writer, whose batch commits it together with the other logs that arrived
 * meanwhile (one sync of the spool directory, one commit), and only then is
 * the reply ok (the durable ack). A version begun on a connection that ends
 * before its commit is dropped with its snapshots (it was never acknowledged).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#include "scheduler.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "writer.h"

#define LOG_MAX_ASSETS 100000

/* Logical paths of a version: open addressing, FNV-1a; slots hold asset index + 1. */
struct path_index {
        size_t *slots;
        size_t mask, used;
};

/* A version being logged. */
struct log_version {
        struct job *job;      /* assets grow as batches arrive */
        size_t cap;           /* of job->assets */
        int *src;             /* per asset: the client's descriptor until snapshotted, or -1 */
        struct path_index pi; /* logical path -> asset */
        int64_t reserved;     /* spool bytes reserved for its snapshots */
        bool busy;            /* a batch is being snapshotted */
        bool dropped;         /* its connection ended during a batch: free it after */
        bool failed;          /* a batch failed: it can only be aborted */
        struct daemon *d;
        struct client *client;    /* the connection of a multi-frame version (held), or NULL */
        struct log_version *next; /* the connection's open versions */
};

/* One step on the thread pool: snapshot assets [from, to) of `v`. */
struct log_batch {
        uv_work_t work;
        struct writer_op op; /* the commit */
        struct request *req;
        struct daemon *d;
        struct log_version *v; /* may be freed before the batch */
        size_t from, to;
        bool commit; /* commit the version once the batch is in */
        int64_t id;  /* the new job's id */
        int rc;
        char err[PROTO_ERRMSG_MAX];
};

static void close_fd(int fd)
{
        if (fd >= 0)
                close(fd);
}

/* ---- the path index ---- */

static uint64_t path_hash(const char *s)
{
        uint64_t h = 1469598103934665603ULL;

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

static size_t *path_index_slot(struct path_index *pi, const struct job *job, const char *lp)
{
        size_t i = (size_t)path_hash(lp) & pi->mask;

        while (pi->slots[i] != 0 && strcmp(job->assets[pi->slots[i] - 1].logical_path, lp) != 0)
                i = (i + 1) & pi->mask;
        return &pi->slots[i];
}

/* Keep the index under half full. 0 or FERRY_ENOMEM. */
static int path_index_grow(struct path_index *pi, const struct job *job, size_t want)
{
        size_t cap = pi->mask ? pi->mask + 1 : 16, i;
        size_t *old = pi->slots, oldcap = pi->mask ? pi->mask + 1 : 0;

        if (old != NULL && want * 2 <= cap)
                return 0;
        while (cap < want * 2)
                cap *= 2;
        pi->slots = calloc(cap, sizeof(*pi->slots));
        if (pi->slots == NULL) {
                pi->slots = old;
                return FERRY_ENOMEM;
        }
        pi->mask = cap - 1;
        for (i = 0; i < oldcap; i++)
                if (old[i] != 0)
                        *path_index_slot(pi, job, job->assets[old[i] - 1].logical_path) = old[i];
        free(old);
        return 0;
}

/* ---- versions ---- */

static void log_version_free(struct log_version *v)
{
        size_t i;

        if (v == NULL)
                return;
        if (v->job != NULL)
                for (i = 0; i < v->job->nassets; i++)
                        close_fd(v->src[i]);
        free(v->src);
        free(v->pi.slots);
        job_free(v->job);
        if (v->client != NULL)
                client_unref(v->client);
        free(v);
}

/* Remove the snapshots of a version that will not be committed, and its reservation. */
static void log_version_discard(struct log_version *v)
{
        struct spool *sp = v->d->spool;
        size_t i;

        for (i = 0; i < v->job->nassets; i++) {
                if (v->job->assets[i].spool != NULL) {
                        spool_remove_now(sp, v->job->assets[i].spool);
                        free(v->job->assets[i].spool);
                        v->job->assets[i].spool = NULL;
                }
        }
        if (v->reserved > 0)
                spool_release(sp, v->reserved);
        v->reserved = 0;
}

static char *dup_json(const cJSON *v, const char *fallback)
{
        return v ? cJSON_PrintUnformatted(v) : (fallback ? strdup(fallback) : NULL);
}

/*
 * A new version from the request's version fields (every field of
 * artifact.log but assets). 0 or a code with err.
 */
static int log_version_new(struct request *req, struct log_version **out, char *err, size_t errlen)
{
        struct daemon *d = req->d;
        const char *name, *type, *version, *exp, *ws, *proj;
        const cJSON *aliases, *tags, *meta;
        char key[33], token[33];
        char *exp_ws = NULL, *exp_proj = NULL;
        struct proto_semver sv;
        struct log_version *v;
        struct job *job;
        int rc;

        *out = NULL;
        if ((rc = proto_get_string(req->msg, "name", true, &name, err, errlen)) ||
            (rc = proto_validate_name(name, "artifact name", err, errlen)) ||
            (rc = proto_get_string(req->msg, "type", false, &type, err, errlen)) ||
            (rc = proto_get_string(req->msg, "version", false, &version, err, errlen)) ||
            (rc = proto_get_string_array(req->msg, "aliases", &aliases, err, errlen)) ||
            (rc = proto_get_string_array(req->msg, "tags", &tags, err, errlen)) ||
            (rc = proto_get_object(req->msg, "metadata", false, &meta, err, errlen)) ||
            (rc = proto_get_string(req->msg, "experiment", false, &exp, err, errlen)) ||
            (rc = proto_get_string(req->msg, "workspace", false, &ws, err, errlen)) ||
            (rc = proto_get_string(req->msg, "project", false, &proj, err, errlen)))
                return rc;
        if ((type && (rc = proto_validate_name(type, "artifact type", err, errlen))) ||
            (ws && (rc = proto_validate_name(ws, "workspace", err, errlen))) ||
            (proj && (rc = proto_validate_name(proj, "project", err, errlen))) ||
            (exp && (rc = proto_validate_experiment_key(exp, err, errlen))))
                return rc;
        if (version != NULL && proto_semver_parse(version, &sv) != 0) {
                char shown[80];

                proto_sanitize(shown, sizeof(shown), version, strlen(version));
                snprintf(err, errlen, "version \"%s\" is not strict semver (MAJOR.MINOR.PATCH)",
                         shown);
                return FERRY_EINVAL;
        }
        if (util_random_hex(token, 16) != 0 || (exp == NULL && util_random_hex(key, 16) != 0)) {
                snprintf(err, errlen, "no randomness for a version token");
                return FERRY_EIO;
        }
        if (exp == NULL)
                exp = key;
        else
                store_experiment_get(d->store, exp, &exp_ws, &exp_proj);
        v = calloc(1, sizeof(*v));
        job = v ? calloc(1, sizeof(*job)) : NULL;
        if (job == NULL) {
                free(v);
                free(exp_ws);
                free(exp_proj);
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        v->d = d;
        v->job = job;
        /* An experiment's own workspace and project win over the daemon's defaults. */
        job->token = strdup(token);
        job->created_ms = util_now_ms();
        job->experiment = strdup(exp);
        job->workspace = strdup(ws ? ws : exp_ws ? exp_ws : d->cfg.workspace);
        job->project = strdup(proj ? proj : exp_proj ? exp_proj : d->cfg.project);
        free(exp_ws);
        free(exp_proj);
        job->name = strdup(name);
        job->type = strdup(type ? type : "other");
        job->version = version ? strdup(version) : NULL;
        job->aliases = dup_json(aliases, "[]");
        job->tags = dup_json(tags, "[]");
        job->metadata = dup_json(meta, NULL);
        if (!job->token || !job->experiment || !job->workspace || !job->project || !job->name ||
            !job->type || (version && !job->version) || !job->aliases || !job->tags ||
            (meta && !job->metadata) || path_index_grow(&v->pi, job, 8) != 0) {
                log_version_free(v);
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        *out = v;
        return 0;
}

/* Room for `more` assets. */
static int log_version_reserve(struct log_version *v, size_t more)
{
        size_t want = v->job->nassets + more, cap = v->cap ? v->cap : 8, i;
        struct job_asset *assets;
        int *src;

        if (want > LOG_MAX_ASSETS)
                return FERRY_EINVAL;
        if (path_index_grow(&v->pi, v->job, want) != 0)
                return FERRY_ENOMEM;
        if (want <= v->cap)
                return 0;
        while (cap < want)
                cap *= 2;
        assets = realloc(v->job->assets, cap * sizeof(*assets));
        if (assets == NULL)
                return FERRY_ENOMEM;
        v->job->assets = assets;
        src = realloc(v->src, cap * sizeof(*src));
        if (src == NULL)
                return FERRY_ENOMEM;
        v->src = src;
        for (i = v->cap; i < cap; i++)
                v->src[i] = -1;
        v->cap = cap;
        return 0;
}

/* Parse one asset object into slot `a`; its descriptor (if any) taken from fds into *src. */
static int log_parse_asset(const cJSON *obj, struct job_asset *a, int *src, int *fds, int nfds,
                           char *err, size_t errlen)
{
        static const char *const keys[] = {"logical_path",       "fd",          "remote",
                                           "overwrite",          "metadata",    "sync",
                                           "max_synced_objects", "sync_prefix", NULL};
        const char *lp, *remote, *sync_prefix;
        const cJSON *meta, *fdv;
        bool overwrite, sync;
        int64_t k = -1, max_synced;
        int rc;

        if (!cJSON_IsObject(obj)) {
                snprintf(err, errlen, "each asset must be a JSON object");
                return FERRY_EINVAL;
        }
        if ((rc = proto_check_keys(obj, keys, err, errlen)) ||
            (rc = proto_get_string(obj, "logical_path", true, &lp, err, errlen)) ||
            (rc = proto_get_string(obj, "remote", false, &remote, err, errlen)) ||
            (rc = proto_get_bool(obj, "overwrite", false, &overwrite, err, errlen)) ||
            (rc = proto_get_object(obj, "metadata", false, &meta, err, errlen)) ||
            (rc = proto_get_bool(obj, "sync", false, &sync, err, errlen)) ||
            (rc = proto_get_int(obj, "max_synced_objects", false, 10000, &max_synced, err,
                                errlen)) ||
            (rc = proto_get_string(obj, "sync_prefix", false, &sync_prefix, err, errlen)) ||
            (rc = proto_validate_logical_path(lp, err, errlen)))
                return rc;
        if (max_synced < 1 || max_synced > S3_MAX_SYNCED_OBJECTS) {
                snprintf(err, errlen, "max_synced_objects of \"%s\" must be 1 to %d", lp,
                         S3_MAX_SYNCED_OBJECTS);
                return FERRY_EINVAL;
        }
        if (sync_prefix != NULL && (rc = proto_validate_logical_path(sync_prefix, err, errlen)))
                return rc;
        fdv = cJSON_GetObjectItemCaseSensitive(obj, "fd");
        if (fdv != NULL && (rc = proto_get_int(obj, "fd", true, -1, &k, err, errlen)) != 0)
                return rc;
        if ((fdv != NULL) + (remote != NULL) != 1) {
                snprintf(err, errlen, "asset \"%s\" needs exactly one of fd, remote", lp);
                return FERRY_EINVAL;
        }
        if (remote == NULL && (sync || sync_prefix != NULL)) {
                snprintf(err, errlen, "asset \"%s\": sync and sync_prefix are for remote assets",
                         lp);
                return FERRY_EINVAL;
        }
        if (fdv != NULL && (k < 0 || k >= nfds || fds[k] < 0)) {
                snprintf(err, errlen,
                         "asset \"%s\" names descriptor %lld, which did not come with the "
                         "request (or is named twice)",
                         lp, (long long)k);
                return FERRY_EINVAL;
        }
        if (remote != NULL) {
                const unsigned char *p;

                if (remote[0] == '\0' || strlen(remote) > 4096) {
                        snprintf(err, errlen, "remote URI of \"%s\" must be 1 to 4096 bytes", lp);
                        return FERRY_EINVAL;
                }
                for (p = (const unsigned char *)remote; *p; p++) {
                        if (*p < 0x20 || *p == 0x7f) {
                                snprintf(err, errlen,
                                         "remote URI of \"%s\" may not hold control characters",
                                         lp);
                                return FERRY_EINVAL;
                        }
                }
        }
        memset(a, 0, sizeof(*a));
        a->logical_path = strdup(lp);
        a->remote = remote != NULL;
        a->uri = remote ? strdup(remote) : NULL;
        a->metadata = dup_json(meta, NULL);
        a->overwrite = overwrite;
        /* Only s3:// is listed; other schemes (gs://, https://, ...) stay one remote asset. */
        if (sync && s3_uri_is_s3(remote)) {
                a->sync_max = max_synced;
                a->sync_under = sync_prefix ? strdup(sync_prefix) : NULL;
        }
        if (a->logical_path == NULL || (remote && !a->uri) || (meta && !a->metadata) ||
            (sync_prefix && a->sync_max > 0 && !a->sync_under) ||
            util_random_hex(a->asset_id, 16) != 0) {
                job_asset_clear(a);
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        if (fdv != NULL) {
                *src = fds[k];
                fds[k] = -1;
        }
        return 0;
}

/*
 * Append the request's "assets" to the version; a later asset with overwrite
 * replaces an earlier one (a snapshot it had is removed). Linear in the
 * number of assets. *first receives the index of the first new asset slot.
 */
static int log_add_assets(struct log_version *v, struct request *req, size_t *first, char *err,
                          size_t errlen)
{
        const cJSON *assets = cJSON_GetObjectItemCaseSensitive(req->msg, "assets"), *it;
        struct job *job = v->job;
        int n, rc = 0;

        *first = job->nassets;
        if (assets == NULL || cJSON_IsNull(assets))
                return 0;
        if (!cJSON_IsArray(assets)) {
                snprintf(err, errlen, "field \"assets\" must be an array");
                return FERRY_EINVAL;
        }
        n = cJSON_GetArraySize(assets);
        rc = log_version_reserve(v, (size_t)n);
        if (rc == FERRY_EINVAL)
                snprintf(err, errlen, "at most %d assets per version", LOG_MAX_ASSETS);
        else if (rc != 0)
                snprintf(err, errlen, "out of memory");
        if (rc != 0)
                return rc;
        cJSON_ArrayForEach(it, assets)
        {
                size_t slot = job->nassets, j, *found;

                v->src[slot] = -1;
                rc = log_parse_asset(it, &job->assets[slot], &v->src[slot], req->fds, req->nfds,
                                     err, errlen);
                if (rc != 0)
                        break;
                job->nassets++;
                found = path_index_slot(&v->pi, job, job->assets[slot].logical_path);
                if (*found == 0) {
                        *found = slot + 1;
                        continue;
                }
                if (!job->assets[slot].overwrite) {
                        char shown[200];

                        proto_sanitize(shown, sizeof(shown), job->assets[slot].logical_path,
                                       strlen(job->assets[slot].logical_path));
                        snprintf(err, errlen,
                                 "two assets have the logical path \"%s\"; set overwrite to "
                                 "replace the first",
                                 shown);
                        rc = FERRY_EEXIST;
                        break;
                }
                /* The later asset takes the earlier one's place (the index keeps pointing there).
                 */
                j = *found - 1;
                if (job->assets[j].spool != NULL) {
                        spool_remove_now(v->d->spool, job->assets[j].spool);
                        spool_release(v->d->spool, job->assets[j].size);
                        v->reserved -= job->assets[j].size;
                        job->bytes -= job->assets[j].size;
                }
                job_asset_clear(&job->assets[j]);
                close_fd(v->src[j]);
                job->assets[j] = job->assets[slot];
                v->src[j] = v->src[slot];
                memset(&job->assets[slot], 0, sizeof(job->assets[slot]));
                v->src[slot] = -1;
                job->nassets--;
                if (j < *first)
                        /* A replaced earlier asset is snapshotted with this batch. */
                        *first = j;
        }
        for (size_t i = 0; i < job->nassets; i++)
                job->assets[i].idx = (int)i;
        return rc;
}

/*
 * The manifest a snapshot carries (spool.h): enough to re-queue its version
 * if the queue database ever loses it. Large metadata is left out (marked
 * "partial") so that it fits one extended attribute.
 */
static char *log_manifest(const struct job *job, const struct job_asset *a)
{
        char *text;
        int pass;

        for (pass = 0; pass < 3; pass++) {
                cJSON *m = cJSON_CreateObject();
                cJSON *v = m ? cJSON_AddObjectToObject(m, "version") : NULL;

                if (v == NULL) {
                        cJSON_Delete(m);
                        return NULL;
                }
                cJSON_AddNumberToObject(m, "v", 1);
                cJSON_AddStringToObject(m, "token", job->token);
                cJSON_AddStringToObject(m, "logical_path", a->logical_path);
                cJSON_AddStringToObject(m, "asset_id", a->asset_id);
                cJSON_AddNumberToObject(m, "logged_ms", (double)job->created_ms);
                if (pass == 0 && a->metadata)
                        cJSON_AddItemToObject(m, "asset_metadata", cJSON_Parse(a->metadata));
                if (pass > 0)
                        cJSON_AddTrueToObject(m, "partial");
                cJSON_AddStringToObject(v, "name", job->name);
                cJSON_AddStringToObject(v, "type", job->type);
                cJSON_AddStringToObject(v, "experiment", job->experiment);
                cJSON_AddStringToObject(v, "workspace", job->workspace);
                cJSON_AddStringToObject(v, "project", job->project);
                if (job->version)
                        cJSON_AddStringToObject(v, "version", job->version);
                if (pass < 2) {
                        cJSON_AddItemToObject(v, "aliases", cJSON_Parse(job->aliases));
                        cJSON_AddItemToObject(v, "tags", cJSON_Parse(job->tags));
                }
                if (pass == 0 && job->metadata)
                        cJSON_AddItemToObject(v, "metadata", cJSON_Parse(job->metadata));
                text = cJSON_PrintUnformatted(m);
                cJSON_Delete(m);
                if (text != NULL && strlen(text) <= SPOOL_MANIFEST_MAX)
                        return text;
                cJSON_free(text);
        }
        return NULL;
}

/* Thread pool: size, reserve and snapshot the batch's files. */
static void log_batch_work_cb(uv_work_t *work)
{
        struct log_batch *b = work->data;
        struct log_version *v = b->v;
        struct spool *sp = v->d->spool;
        struct job *job = v->job;
        int64_t want = 0, got = 0, reserved;
        size_t i;
        char name[33];

        for (i = b->from; i < b->to; i++) {
                struct stat st;

                if (v->src[i] < 0)
                        continue;
                if (fstat(v->src[i], &st) != 0 || !S_ISREG(st.st_mode)) {
                        char shown[200];

                        proto_sanitize(shown, sizeof(shown), job->assets[i].logical_path,
                                       strlen(job->assets[i].logical_path));
                        b->rc = FERRY_EINVAL;
                        snprintf(b->err, sizeof(b->err),
                                 "cannot log \"%s\": what was sent is not a regular file", shown);
                        return;
                }
                want += st.st_size;
        }
        /* The file system keeps its minimum free, whatever the budget allows. */
        if ((b->rc = spool_check_free(sp, want, b->err, sizeof(b->err))) != 0 ||
            (b->rc = spool_reserve(sp, want, b->err, sizeof(b->err))) != 0)
                return;
        reserved = want;
        for (i = b->from; i < b->to; i++) {
                struct job_asset *a = &job->assets[i];
                char *manifest;

                if (v->src[i] < 0)
                        continue;
                manifest = log_manifest(job, a);
                b->rc = spool_snapshot_fd(sp, v->src[i], a->logical_path, manifest, name, &a->size,
                                          b->err, sizeof(b->err));
                cJSON_free(manifest);
                if (b->rc != 0)
                        break;
                close(v->src[i]);
                v->src[i] = -1;
                if ((a->spool = strdup(name)) == NULL) {
                        spool_remove_now(sp, name);
                        b->rc = FERRY_ENOMEM;
                        snprintf(b->err, sizeof(b->err), "out of memory");
                        break;
                }
                got += a->size;
        }
        /* What was copied counts (a procfs file reports no size before it is read). */
        spool_release(sp, reserved);
        if (b->rc == 0)
                b->rc = spool_reserve(sp, got, b->err, sizeof(b->err));
        if (b->rc != 0) {
                /* This batch's snapshots go; earlier batches' stay with the version. */
                for (i = b->from; i < b->to; i++) {
                        if (job->assets[i].spool != NULL) {
                                spool_remove_now(sp, job->assets[i].spool);
                                free(job->assets[i].spool);
                                job->assets[i].spool = NULL;
                        }
                }
                return;
        }
        v->reserved += got;
        job->bytes += got;
}

static int log_version_taken(struct daemon *d, const struct job *job)
{
        return job->version != NULL &&
               (store_version_pending(d->store, job->workspace, job->name, job->version) ||
                d->backend->ops->version_exists(d->backend, job->workspace, job->name,
                                                job->version) == 1);
}

static void log_batch_free(struct log_batch *b)
{
        free(b);
}

/* The log ended (committed, refused or dropped): the shutdown may be waiting for it. */
static void log_finished(struct log_batch *b)
{
        struct daemon *d = b->d;

        log_batch_free(b);
        daemon_log_finished(d);
}

static void log_reply_committed(struct log_batch *b)
{
        struct request *req = b->req;
        struct job *job = b->v->job;
        cJSON *rep;

        log_info("job %lld: logged %s (%zu assets, %lld bytes)", (long long)b->id, job->name,
                 job->nassets, (long long)job->bytes);
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddNumberToObject(rep, "job", (double)b->id);
                cJSON_AddStringToObject(rep, "experiment", job->experiment);
                cJSON_AddNumberToObject(rep, "assets", (double)job->nassets);
                cJSON_AddNumberToObject(rep, "bytes", (double)job->bytes);
        }
        request_reply(req, rep);
}

/* Writer thread, inside the batch: the version's rows, unless its version was taken meanwhile. */
static int log_commit_run(struct store *st, struct writer_op *op)
{
        struct log_batch *b = (struct log_batch *)((char *)op - offsetof(struct log_batch, op));
        struct job *job = b->v->job;
        int rc;

        if (job->version != NULL &&
            store_version_pending(st, job->workspace, job->name, job->version))
                return FERRY_EEXIST;
        rc = store_experiment_insert(st, job->experiment, job->workspace, job->project, NULL);
        if (rc == 0)
                rc = store_job_insert(st, job, &b->id);
        return rc;
}

static void log_commit_done(struct writer_op *op, int rc)
{
        struct log_batch *b = (struct log_batch *)((char *)op - offsetof(struct log_batch, op));
        struct log_version *v = b->v;
        struct daemon *d = v->d;
        char path[4200];

        if (rc == 0) {
                log_reply_committed(b);
                scheduler_kick(d->scheduler);
        } else {
                log_version_discard(v);
                snprintf(path, sizeof(path), "%s/queue.db", d->cfg.state_dir);
                if (rc == FERRY_EEXIST)
                        request_fail(b->req, FERRY_EEXIST, "%s version %s exists already",
                                     v->job->name, v->job->version);
                else if (rc == FERRY_ENOSPC)
                        request_fail(b->req, FERRY_ENOSPC,
                                     "the disk holding the queue database %s is full: the version "
                                     "was not logged; free some space and log it again",
                                     path);
                else
                        request_fail(b->req, rc,
                                     "cannot commit the version to the queue database %s (%s); "
                                     "it was not logged",
                                     path, ferry_strerror(rc));
        }
        log_version_free(v);
        log_finished(b);
}

/* Hand the version to the writer (its snapshots are all made). */
static void log_commit(struct log_batch *b)
{
        struct log_version *v = b->v;

        if (log_version_taken(v->d, v->job)) {
                log_version_discard(v);
                request_fail(b->req, FERRY_EEXIST, "%s version %s exists already", v->job->name,
                             v->job->version);
                log_version_free(v);
                log_finished(b);
                return;
        }
        b->op.run = log_commit_run;
        b->op.done = log_commit_done;
        b->op.sync_spool = true;
        writer_submit(v->d->writer, &b->op);
}

static void log_batch_after_cb(uv_work_t *work, int status)
{
        struct log_batch *b = work->data;
        struct log_version *v = b->v;
        cJSON *rep;

        v->busy = false;
        if (status != 0 && b->rc == 0) {
                b->rc = FERRY_EINTERNAL;
                snprintf(b->err, sizeof(b->err), "the request was cancelled");
        }
        if (v->dropped) {
                /* Its connection ended while we copied: it was never acknowledged. */
                log_version_discard(v);
                if (b->req != NULL)
                        request_fail(b->req, FERRY_ECLOSED, "the connection ended");
                log_version_free(v);
                log_finished(b);
                return;
        }
        if (b->rc != 0) {
                if (b->commit) { /* one frame: nothing of it stays */
                        log_version_discard(v);
                        log_version_free(v);
                } else {
                        v->failed = true; /* its assets are half in: only abort is left */
                }
                request_fail(b->req, b->rc, "%s", b->err);
                log_finished(b);
                return;
        }
        if (b->commit) {
                log_commit(b);
                return;
        }
        rep = request_ok(b->req);
        if (rep != NULL) {
                cJSON_AddNumberToObject(rep, "assets", (double)v->job->nassets);
                cJSON_AddNumberToObject(rep, "bytes", (double)v->job->bytes);
        }
        request_reply(b->req, rep);
        log_finished(b);
}

/* Snapshot assets [from, nassets) of `v` and answer `req`; with `commit`, commit after. */
static void log_run_batch(struct request *req, struct log_version *v, size_t from, bool commit)
{
        struct daemon *d = req->d;
        struct log_batch *b;
        int rc;

        if (d->stopping) {
                if (commit)
                        log_version_free(v);
                request_fail(req, FERRY_EBUSY, "ferryd is stopping; log again once it is back");
                return;
        }
        b = calloc(1, sizeof(*b));
        if (b == NULL) {
                if (commit)
                        log_version_free(v);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        b->req = req;
        b->v = v;
        b->d = v->d;
        b->from = from;
        b->to = v->job->nassets;
        b->commit = commit;
        b->work.data = b;
        v->busy = true;
        d->inflight_logs++;
        if (from == b->to && commit) { /* nothing to copy: straight to the commit */
                log_commit(b);
                return;
        }
        rc = uv_queue_work(d->loop, &b->work, log_batch_work_cb, log_batch_after_cb);
        if (rc != 0) {
                b->rc = FERRY_EINTERNAL;
                snprintf(b->err, sizeof(b->err), "cannot queue the snapshot: %s", uv_strerror(rc));
                log_batch_after_cb(&b->work, 0);
        }
}

/* ---- artifact.log: one frame ---- */

void op_log(struct request *req)
{
        static const char *const keys[] = {
            "id",       "op",         "name",      "type",    "version", "aliases", "tags",
            "metadata", "experiment", "workspace", "project", "assets",  NULL};
        char err[PROTO_ERRMSG_MAX];
        struct log_version *v = NULL;
        size_t first;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) ||
            (rc = log_version_new(req, &v, err, sizeof(err))) ||
            (rc = log_add_assets(v, req, &first, err, sizeof(err))))
                goto fail;
        if (log_version_taken(req->d, v->job)) {
                rc = FERRY_EEXIST;
                snprintf(err, sizeof(err), "%s version %s exists already", v->job->name,
                         v->job->version);
                goto fail;
        }
        log_run_batch(req, v, 0, true);
        return;
fail:
        log_version_free(v);
        request_fail(req, rc, "%s", err);
}

/* ---- artifact.begin / add / commit / abort: a version in many frames ---- */

/* The open versions of a connection: ops' session (client_session). */
struct log_session {
        struct log_version *versions;
};

static struct log_version *log_find(struct request *req, const char **token, char *err,
                                    size_t errlen)
{
        struct log_session *s = *client_session(req->client, SESSION_LOG);
        struct log_version *v;

        if (proto_get_string(req->msg, "token", true, token, err, errlen) != 0)
                return NULL;
        for (v = s ? s->versions : NULL; v != NULL; v = v->next)
                if (strcmp(v->job->token, *token) == 0)
                        return v;
        snprintf(err, errlen, "no version being logged on this connection has token \"%.40s\"",
                 *token);
        proto_utf8_trim(err);
        return NULL;
}

static void log_unlink(struct request *req, struct log_version *v)
{
        struct log_session *s = *client_session(req->client, SESSION_LOG);
        struct log_version **pp;

        for (pp = s ? &s->versions : NULL; pp != NULL && *pp != NULL; pp = &(*pp)->next) {
                if (*pp == v) {
                        *pp = v->next;
                        v->next = NULL;
                        return;
                }
        }
}

void op_log_begin(struct request *req)
{
        static const char *const keys[] = {"id",         "op",        "name",    "type",
                                           "version",    "aliases",   "tags",    "metadata",
                                           "experiment", "workspace", "project", NULL};
        struct log_session **sp = (struct log_session **)client_session(req->client, SESSION_LOG);
        char err[PROTO_ERRMSG_MAX];
        struct log_version *v = NULL;
        cJSON *rep;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) ||
            (rc = log_version_new(req, &v, err, sizeof(err)))) {
                request_fail(req, rc, "%s", err);
                return;
        }
        if (log_version_taken(req->d, v->job)) {
                request_fail(req, FERRY_EEXIST, "%s version %s exists already", v->job->name,
                             v->job->version);
                log_version_free(v);
                return;
        }
        if (*sp == NULL && (*sp = calloc(1, sizeof(**sp))) == NULL) {
                log_version_free(v);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        v->client = req->client;
        client_ref(v->client);
        v->next = (*sp)->versions;
        (*sp)->versions = v;
        rep = request_ok(req);
        if (rep != NULL)
                cJSON_AddStringToObject(rep, "token", v->job->token);
        request_reply(req, rep);
}

void op_log_add(struct request *req)
{
        static const char *const keys[] = {"id", "op", "token", "assets", NULL};
        char err[PROTO_ERRMSG_MAX];
        struct log_version *v;
        const char *token;
        size_t first;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) != 0 ||
            (v = log_find(req, &token, err, sizeof(err))) == NULL) {
                request_fail(req, rc ? rc : FERRY_ENOTFOUND, "%s", err);
                return;
        }
        if (v->busy) {
                request_fail(req, FERRY_EBUSY,
                             "the previous artifact.add of this version is still being copied; "
                             "wait for its reply");
                return;
        }
        if (v->failed) {
                request_fail(req, FERRY_EFAILED,
                             "an artifact.add of this version failed; abort it and log it again");
                return;
        }
        if ((rc = log_add_assets(v, req, &first, err, sizeof(err))) != 0) {
                /* Part of the frame may be in the version already: only an abort can follow. */
                v->failed = true;
                request_fail(req, rc, "%s", err);
                return;
        }
        log_run_batch(req, v, first, false);
}

void op_log_commit(struct request *req)
{
        static const char *const keys[] = {"id", "op", "token", NULL};
        char err[PROTO_ERRMSG_MAX];
        struct log_version *v;
        const char *token;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) != 0 ||
            (v = log_find(req, &token, err, sizeof(err))) == NULL) {
                request_fail(req, rc ? rc : FERRY_ENOTFOUND, "%s", err);
                return;
        }
        if (v->busy) {
                request_fail(req, FERRY_EBUSY,
                             "an artifact.add of this version is still being copied; wait for "
                             "its reply");
                return;
        }
        if (v->failed) {
                request_fail(req, FERRY_EFAILED,
                             "an artifact.add of this version failed; abort it and log it again");
                return;
        }
        log_unlink(req, v);
        client_unref(v->client);
        v->client = NULL;
        log_run_batch(req, v, v->job->nassets, true);
}

void op_log_abort(struct request *req)
{
        static const char *const keys[] = {"id", "op", "token", NULL};
        char err[PROTO_ERRMSG_MAX];
        struct log_version *v;
        const char *token;
        int rc;

        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) != 0 ||
            (v = log_find(req, &token, err, sizeof(err))) == NULL) {
                request_fail(req, rc ? rc : FERRY_ENOTFOUND, "%s", err);
                return;
        }
        log_unlink(req, v);
        if (v->busy) {
                v->dropped = true; /* freed when its batch comes back */
        } else {
                log_version_discard(v);
                log_version_free(v);
        }
        request_reply(req, request_ok(req));
}

void op_log_client_closed(struct client *client)
{
        struct log_session **sp = (struct log_session **)client_session(client, SESSION_LOG);
        struct log_version *v, *next;

        if (*sp == NULL)
                return;
        for (v = (*sp)->versions; v != NULL; v = next) {
                next = v->next;
                v->next = NULL;
                if (v->busy) {
                        v->dropped = true;
                } else {
                        log_version_discard(v);
                        log_version_free(v);
                }
        }
        free(*sp);
        *sp = NULL;
}
