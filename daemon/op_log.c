/*
 * op_log.c — artifact.log: validate everything, snapshot the files into the
 * spool on libuv's thread pool (each file synced, with its manifest), then
 * hand the version to the writer, whose batch commits it together with the
 * other logs that arrived meanwhile (one sync of the spool directory, one
 * commit); only then reply ok (the durable ack).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "backend.h"
#include "daemon.h"
#include "ferry.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "scheduler.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "writer.h"

#define LOG_MAX_ASSETS 100000

struct log_work {
        uv_work_t work;
        struct writer_op op; /* the commit */
        struct request *req;
        struct daemon *d;
        struct job *job;  /* the job to insert; asset spool names filled by the worker */
        char **sources;   /* per asset: absolute file path, or NULL */
        char **staged;    /* per asset: staging token, or NULL */
        int64_t reserved; /* bytes reserved in the spool */
        int64_t id;       /* the new job's id */
        int rc;
        char err[PROTO_ERRMSG_MAX];
};

static void log_work_free(struct log_work *w)
{
        size_t i;

        if (w == NULL)
                return;
        if (w->job != NULL) {
                for (i = 0; i < w->job->nassets; i++) {
                        free(w->sources ? w->sources[i] : NULL);
                        free(w->staged ? w->staged[i] : NULL);
                }
        }
        free(w->sources);
        free(w->staged);
        job_free(w->job);
        free(w);
}

/* Remove the snapshots this request made (on any failure before the commit). */
static void log_work_discard(struct log_work *w, struct spool *sp)
{
        size_t i;

        for (i = 0; i < w->job->nassets; i++) {
                if (w->job->assets[i].spool != NULL) {
                        spool_remove_now(sp, w->job->assets[i].spool);
                        free(w->job->assets[i].spool);
                        w->job->assets[i].spool = NULL;
                }
        }
        if (w->reserved > 0)
                spool_release(sp, w->reserved);
        w->reserved = 0;
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
                cJSON_AddNumberToObject(m, "nassets", (double)job->nassets);
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

/* Thread pool: size the files, reserve spool bytes, snapshot. */
static void log_work_cb(uv_work_t *work)
{
        struct log_work *w = work->data;
        struct spool *sp = w->d->spool;
        struct job *job = w->job;
        int64_t total = 0;
        size_t i;
        char name[33];

        for (i = 0; i < job->nassets; i++) {
                struct job_asset *a = &job->assets[i];
                struct stat st;

                if (w->sources[i] != NULL) {
                        if (stat(w->sources[i], &st) != 0) {
                                w->rc = errno == ENOENT || errno == ENOTDIR ? FERRY_ENOTFOUND
                                        : errno == EACCES                   ? FERRY_EPERM
                                                                            : FERRY_EIO;
                                snprintf(w->err, sizeof(w->err), "cannot log %s: %s", w->sources[i],
                                         strerror(errno));
                                return;
                        }
                        if (!S_ISREG(st.st_mode)) {
                                w->rc = FERRY_EINVAL;
                                snprintf(w->err, sizeof(w->err),
                                         "cannot log %s: not a regular file", w->sources[i]);
                                return;
                        }
                        if (access(w->sources[i], R_OK) != 0) {
                                w->rc = FERRY_EPERM;
                                snprintf(w->err, sizeof(w->err), "cannot log %s: %s", w->sources[i],
                                         strerror(errno));
                                return;
                        }
                        a->size = st.st_size;
                } else if (w->staged[i] != NULL) {
                        w->rc =
                            spool_staged_size(sp, w->staged[i], &a->size, w->err, sizeof(w->err));
                        if (w->rc != 0)
                                return;
                }
                total += a->size;
        }
        w->rc = spool_reserve(sp, total, w->err, sizeof(w->err));
        if (w->rc != 0)
                return;
        w->reserved = total;
        total = 0;
        for (i = 0; i < job->nassets; i++) {
                struct job_asset *a = &job->assets[i];
                char *manifest;

                if (w->sources[i] == NULL && w->staged[i] == NULL)
                        continue;
                manifest = log_manifest(job, a);
                if (w->sources[i] != NULL)
                        w->rc = spool_snapshot(sp, w->sources[i], manifest, name, &a->size, w->err,
                                               sizeof(w->err));
                else
                        w->rc = spool_claim_staged(sp, w->staged[i], manifest, name, &a->size,
                                                   w->err, sizeof(w->err));
                cJSON_free(manifest);
                if (w->rc != 0)
                        goto fail;
                total += a->size;
                if ((a->spool = strdup(name)) == NULL) {
                        spool_remove_now(sp, name);
                        w->rc = FERRY_ENOMEM;
                        snprintf(w->err, sizeof(w->err), "out of memory");
                        goto fail;
                }
        }
        /* What was copied counts (a procfs file reports no size before it is read). */
        if (total != w->reserved) {
                spool_release(sp, w->reserved);
                w->reserved = 0;
                if ((w->rc = spool_reserve(sp, total, w->err, sizeof(w->err))) != 0)
                        goto fail;
                w->reserved = total;
        }
        job->bytes = total;
        return;
fail:
        log_work_discard(w, sp);
}

static void log_reply(struct log_work *w, int rc)
{
        struct request *req = w->req;
        struct daemon *d = w->d;
        struct job *job = w->job;
        char path[4200];
        cJSON *rep;

        if (rc == FERRY_EEXIST) {
                log_work_discard(w, d->spool);
                request_fail(req, FERRY_EEXIST, "%s version %s exists already", job->name,
                             job->version);
        } else if (rc != 0) {
                log_work_discard(w, d->spool);
                snprintf(path, sizeof(path), "%s/queue.db", d->cfg.state_dir);
                if (rc == FERRY_ENOSPC)
                        request_fail(req, FERRY_ENOSPC,
                                     "the disk holding the queue database %s is full: the version "
                                     "was not logged; free some space and log it again",
                                     path);
                else
                        request_fail(req, rc,
                                     "cannot commit the version to the queue database %s (%s); "
                                     "it was not logged",
                                     path, ferry_strerror(rc));
        } else {
                log_info("job %lld: logged %s (%zu assets, %lld bytes)", (long long)w->id,
                         job->name, job->nassets, (long long)job->bytes);
                rep = request_ok(req);
                if (rep != NULL) {
                        cJSON_AddNumberToObject(rep, "job", (double)w->id);
                        cJSON_AddStringToObject(rep, "experiment", job->experiment);
                        cJSON_AddNumberToObject(rep, "assets", (double)job->nassets);
                        cJSON_AddNumberToObject(rep, "bytes", (double)job->bytes);
                }
                request_reply(req, rep);
                scheduler_kick(d->scheduler);
        }
        log_work_free(w);
        daemon_log_finished(d);
}

/* Writer thread, inside the batch: the version's rows, unless its version was taken meanwhile. */
static int log_commit_run(struct store *st, struct writer_op *op)
{
        struct log_work *w = (struct log_work *)((char *)op - offsetof(struct log_work, op));
        struct job *job = w->job;
        int rc;

        if (job->version != NULL &&
            store_version_pending(st, job->workspace, job->name, job->version))
                return FERRY_EEXIST;
        rc = store_experiment_insert(st, job->experiment, job->workspace, job->project, NULL);
        if (rc == 0)
                rc = store_job_insert(st, job, &w->id);
        return rc;
}

static void log_commit_done(struct writer_op *op, int rc)
{
        struct log_work *w = (struct log_work *)((char *)op - offsetof(struct log_work, op));

        log_reply(w, rc);
}

static int log_version_taken(struct daemon *d, const struct job *job)
{
        return job->version != NULL &&
               (store_version_pending(d->store, job->workspace, job->name, job->version) ||
                d->backend->ops->version_exists(d->backend, job->workspace, job->name,
                                                job->version) == 1);
}

/* Loop thread: the snapshots are made; hand the version to the writer. */
static void log_after_cb(uv_work_t *work, int status)
{
        struct log_work *w = work->data;
        struct daemon *d = w->d;

        if (status != 0 || w->rc != 0) {
                request_fail(w->req, status ? FERRY_EINTERNAL : w->rc, "%s",
                             status ? "the request was cancelled" : w->err);
                log_work_free(w);
                daemon_log_finished(d);
                return;
        }
        /* The registry may have got the version while we copied (the queue is checked in the
         * commit itself). */
        if (log_version_taken(d, w->job)) {
                log_reply(w, FERRY_EEXIST);
                return;
        }
        w->op.run = log_commit_run;
        w->op.done = log_commit_done;
        w->op.sync_spool = true;
        writer_submit(d->writer, &w->op);
}

static char *dup_json(const cJSON *v, const char *fallback)
{
        return v ? cJSON_PrintUnformatted(v) : (fallback ? strdup(fallback) : NULL);
}

/* Parse one asset object into slot `a` (and its source). 0 or a code with err. */
static int log_parse_asset(const cJSON *obj, struct job_asset *a, char **source, char **staged,
                           char *err, size_t errlen)
{
        static const char *const keys[] = {"logical_path", "file",     "staged", "remote",
                                           "overwrite",    "metadata", NULL};
        const char *lp, *file, *tok, *remote;
        const cJSON *meta;
        bool overwrite;
        int rc;

        if (!cJSON_IsObject(obj)) {
                snprintf(err, errlen, "each asset must be a JSON object");
                return FERRY_EINVAL;
        }
        if ((rc = proto_check_keys(obj, keys, err, errlen)) ||
            (rc = proto_get_string(obj, "logical_path", true, &lp, err, errlen)) ||
            (rc = proto_get_string(obj, "file", false, &file, err, errlen)) ||
            (rc = proto_get_string(obj, "staged", false, &tok, err, errlen)) ||
            (rc = proto_get_string(obj, "remote", false, &remote, err, errlen)) ||
            (rc = proto_get_bool(obj, "overwrite", false, &overwrite, err, errlen)) ||
            (rc = proto_get_object(obj, "metadata", false, &meta, err, errlen)) ||
            (rc = proto_validate_logical_path(lp, err, errlen)))
                return rc;
        if ((file != NULL) + (tok != NULL) + (remote != NULL) != 1) {
                snprintf(err, errlen, "asset \"%s\" needs exactly one of file, staged, remote", lp);
                return FERRY_EINVAL;
        }
        if (file != NULL && file[0] != '/') {
                char shown[200];

                proto_sanitize(shown, sizeof(shown), file, strlen(file));
                snprintf(err, errlen, "file \"%s\" must be an absolute path", shown);
                return FERRY_EINVAL;
        }
        if (remote != NULL && (remote[0] == '\0' || strlen(remote) > 4096)) {
                snprintf(err, errlen, "remote URI of \"%s\" must be 1 to 4096 bytes", lp);
                return FERRY_EINVAL;
        }
        if (remote != NULL) {
                const unsigned char *p;

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
        *source = file ? strdup(file) : NULL;
        *staged = tok ? strdup(tok) : NULL;
        if (a->logical_path == NULL || (remote && !a->uri) || (meta && !a->metadata) ||
            (file && !*source) || (tok && !*staged) || util_random_hex(a->asset_id, 16) != 0) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        return 0;
}

static void job_asset_clear(struct job_asset *a)
{
        free(a->logical_path);
        free(a->uri);
        free(a->metadata);
        free(a->spool);
        memset(a, 0, sizeof(*a));
}

/* Logical paths seen so far: open addressing, FNV-1a; slots hold asset indexes + 1. */
struct path_index {
        size_t *slots;
        size_t mask;
};

static uint64_t path_hash(const char *s)
{
        uint64_t h = 1469598103934665603ULL;

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

/* The slot for `lp`: empty (0) or the asset index + 1 holding that path. */
static size_t *path_index_slot(struct path_index *pi, const struct job *job, const char *lp)
{
        size_t i = (size_t)path_hash(lp) & pi->mask;

        while (pi->slots[i] != 0 && strcmp(job->assets[pi->slots[i] - 1].logical_path, lp) != 0)
                i = (i + 1) & pi->mask;
        return &pi->slots[i];
}

/*
 * Parse the assets array; a later asset with overwrite replaces an earlier
 * one. Linear in the number of assets (a frame may hold tens of thousands).
 */
static int log_parse_assets(struct log_work *w, const cJSON *assets, char *err, size_t errlen)
{
        struct job *job = w->job;
        int n = cJSON_GetArraySize(assets), rc = 0;
        struct path_index pi;
        size_t cap = 16;
        const cJSON *it;

        if (n > LOG_MAX_ASSETS) {
                snprintf(err, errlen, "at most %d assets per version", LOG_MAX_ASSETS);
                return FERRY_EINVAL;
        }
        while (cap < (size_t)n * 2)
                cap *= 2;
        pi.slots = calloc(cap, sizeof(*pi.slots));
        pi.mask = cap - 1;
        job->assets = calloc((size_t)n + 1, sizeof(*job->assets));
        w->sources = calloc((size_t)n + 1, sizeof(char *));
        w->staged = calloc((size_t)n + 1, sizeof(char *));
        if (pi.slots == NULL || job->assets == NULL || w->sources == NULL || w->staged == NULL) {
                free(pi.slots);
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        cJSON_ArrayForEach(it, assets)
        {
                size_t slot = job->nassets, j, *found;

                job->nassets++;
                rc = log_parse_asset(it, &job->assets[slot], &w->sources[slot], &w->staged[slot],
                                     err, errlen);
                if (rc != 0)
                        break;
                found = path_index_slot(&pi, job, job->assets[slot].logical_path);
                if (*found == 0) {
                        *found = slot + 1;
                        continue;
                }
                if (!job->assets[slot].overwrite) {
                        snprintf(err, errlen,
                                 "two assets have the logical path \"%s\"; set overwrite to "
                                 "replace the first",
                                 job->assets[slot].logical_path);
                        proto_utf8_trim(err);
                        rc = FERRY_EEXIST;
                        break;
                }
                /* The later asset takes the earlier one's place (the index keeps pointing there).
                 */
                j = *found - 1;
                job_asset_clear(&job->assets[j]);
                free(w->sources[j]);
                free(w->staged[j]);
                job->assets[j] = job->assets[slot];
                w->sources[j] = w->sources[slot];
                w->staged[j] = w->staged[slot];
                memset(&job->assets[slot], 0, sizeof(job->assets[slot]));
                w->sources[slot] = w->staged[slot] = NULL;
                job->nassets--;
        }
        free(pi.slots);
        for (size_t i = 0; i < job->nassets; i++)
                job->assets[i].idx = (int)i;
        return rc;
}

void op_log(struct request *req)
{
        static const char *const keys[] = {
            "id",       "op",         "name",      "type",    "version", "aliases", "tags",
            "metadata", "experiment", "workspace", "project", "assets",  NULL};
        struct daemon *d = req->d;
        char err[PROTO_ERRMSG_MAX], key[33], token[33];
        const char *name, *type, *version, *exp, *ws, *proj;
        const cJSON *aliases, *tags, *meta, *assets;
        struct proto_semver sv;
        struct log_work *w;
        struct job *job;
        char *exp_ws = NULL, *exp_proj = NULL;
        int rc;

        w = calloc(1, sizeof(*w));
        if (w == NULL || (w->job = calloc(1, sizeof(*w->job))) == NULL) {
                free(w);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        job = w->job;
        w->req = req;
        w->d = d;
        if ((rc = proto_check_keys(req->msg, keys, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "name", true, &name, err, sizeof(err))) ||
            (rc = proto_validate_name(name, "artifact name", err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "type", false, &type, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "version", false, &version, err, sizeof(err))) ||
            (rc = proto_get_string_array(req->msg, "aliases", &aliases, err, sizeof(err))) ||
            (rc = proto_get_string_array(req->msg, "tags", &tags, err, sizeof(err))) ||
            (rc = proto_get_object(req->msg, "metadata", false, &meta, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "experiment", false, &exp, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "workspace", false, &ws, err, sizeof(err))) ||
            (rc = proto_get_string(req->msg, "project", false, &proj, err, sizeof(err))))
                goto fail;
        if ((type && (rc = proto_validate_name(type, "artifact type", err, sizeof(err)))) ||
            (ws && (rc = proto_validate_name(ws, "workspace", err, sizeof(err)))) ||
            (proj && (rc = proto_validate_name(proj, "project", err, sizeof(err)))) ||
            (exp && (rc = proto_validate_experiment_key(exp, err, sizeof(err)))))
                goto fail;
        if (version != NULL && proto_semver_parse(version, &sv) != 0) {
                char shown[80];

                proto_sanitize(shown, sizeof(shown), version, strlen(version));
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err),
                         "version \"%s\" is not strict semver (MAJOR.MINOR.PATCH)", shown);
                goto fail;
        }
        assets = cJSON_GetObjectItemCaseSensitive(req->msg, "assets");
        if (assets != NULL && !cJSON_IsNull(assets) && !cJSON_IsArray(assets)) {
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err), "field \"assets\" must be an array");
                goto fail;
        }
        if (util_random_hex(token, 16) != 0) {
                rc = FERRY_EIO;
                snprintf(err, sizeof(err), "no randomness for a version token");
                goto fail;
        }
        if (exp == NULL) {
                if (util_random_hex(key, 16) != 0) {
                        rc = FERRY_EIO;
                        snprintf(err, sizeof(err), "no randomness for an experiment key");
                        goto fail;
                }
                exp = key;
        } else {
                store_experiment_get(d->store, exp, &exp_ws, &exp_proj);
        }
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
            (meta && !job->metadata)) {
                rc = FERRY_ENOMEM;
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        if (assets != NULL && cJSON_IsArray(assets) &&
            (rc = log_parse_assets(w, assets, err, sizeof(err))) != 0)
                goto fail;
        if (w->sources == NULL && ((w->sources = calloc(1, sizeof(char *))) == NULL ||
                                   (w->staged = calloc(1, sizeof(char *))) == NULL)) {
                rc = FERRY_ENOMEM;
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        if (log_version_taken(d, job)) {
                rc = FERRY_EEXIST;
                snprintf(err, sizeof(err), "%s version %s exists already", job->name, job->version);
                goto fail;
        }
        if (d->stopping) {
                rc = FERRY_EBUSY;
                snprintf(err, sizeof(err), "ferryd is stopping; log again once it is back");
                goto fail;
        }
        w->work.data = w;
        rc = uv_queue_work(d->loop, &w->work, log_work_cb, log_after_cb);
        if (rc == 0) {
                d->inflight_logs++;
                return;
        }
        snprintf(err, sizeof(err), "cannot queue the snapshot: %s", uv_strerror(rc));
        rc = FERRY_EINTERNAL;
fail:
        request_fail(req, rc, "%s", err);
        log_work_free(w);
}
