/*
 * op_log.c — artifact.log: validate everything, snapshot the files into the
 * spool on libuv's thread pool, then commit the job in one transaction and
 * only then reply ok (the durable ack).
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

#define LOG_MAX_ASSETS 100000

struct log_work {
        uv_work_t work;
        struct request *req;
        struct job *job;  /* the job to insert; asset spool names filled by the worker */
        char **sources;   /* per asset: absolute file path, or NULL */
        char **staged;    /* per asset: staging token, or NULL */
        int64_t reserved; /* bytes reserved in the spool */
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
                        spool_remove(sp, w->job->assets[i].spool);
                        free(w->job->assets[i].spool);
                        w->job->assets[i].spool = NULL;
                }
        }
        if (w->reserved > 0)
                spool_release(sp, w->reserved);
        w->reserved = 0;
}

/* Thread pool: size the files, reserve spool bytes, snapshot. */
static void log_work_cb(uv_work_t *work)
{
        struct log_work *w = work->data;
        struct spool *sp = w->req->d->spool;
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
        job->bytes = total;
        for (i = 0; i < job->nassets; i++) {
                struct job_asset *a = &job->assets[i];

                if (w->sources[i] != NULL)
                        w->rc = spool_snapshot(sp, w->sources[i], a->size, name, w->err,
                                               sizeof(w->err));
                else if (w->staged[i] != NULL)
                        w->rc = spool_claim_staged(sp, w->staged[i], name, &a->size, w->err,
                                                   sizeof(w->err));
                else
                        continue;
                if (w->rc != 0)
                        goto fail;
                if ((a->spool = strdup(name)) == NULL) {
                        spool_remove(sp, name);
                        w->rc = FERRY_ENOMEM;
                        snprintf(w->err, sizeof(w->err), "out of memory");
                        goto fail;
                }
        }
        if (spool_sync(sp) != 0) {
                w->rc = FERRY_EIO;
                snprintf(w->err, sizeof(w->err), "cannot sync the spool directory");
                goto fail;
        }
        return;
fail:
        log_work_discard(w, sp);
}

static int log_version_taken(struct daemon *d, const struct job *job)
{
        return job->version != NULL &&
               (store_version_pending(d->store, job->workspace, job->name, job->version) ||
                d->backend->ops->version_exists(d->backend, job->workspace, job->name,
                                                job->version) == 1);
}

/* Loop thread: commit the job, then (only then) reply ok. */
static void log_after_cb(uv_work_t *work, int status)
{
        struct log_work *w = work->data;
        struct request *req = w->req;
        struct daemon *d = req->d;
        struct job *job = w->job;
        int64_t id;
        cJSON *rep;

        if (status != 0 || w->rc != 0) {
                request_fail(req, status ? FERRY_EINTERNAL : w->rc, "%s",
                             status ? "the request was cancelled" : w->err);
                goto out;
        }
        /* Another log may have taken the version while we copied. */
        if (log_version_taken(d, job)) {
                log_work_discard(w, d->spool);
                request_fail(req, FERRY_EEXIST, "%s version %s exists already", job->name,
                             job->version);
                goto out;
        }
        if (store_begin(d->store) != 0 ||
            store_experiment_insert(d->store, job->experiment, job->workspace, job->project,
                                    NULL) != 0 ||
            store_job_insert(d->store, job, &id) != 0 || store_commit(d->store) != 0) {
                store_rollback(d->store);
                log_work_discard(w, d->spool);
                request_fail(req, FERRY_EIO, "cannot commit the version to the queue database");
                goto out;
        }
        log_info("job %lld: logged %s (%zu assets, %lld bytes)", (long long)id, job->name,
                 job->nassets, (long long)job->bytes);
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddNumberToObject(rep, "job", (double)id);
                cJSON_AddStringToObject(rep, "experiment", job->experiment);
                cJSON_AddNumberToObject(rep, "assets", (double)job->nassets);
                cJSON_AddNumberToObject(rep, "bytes", (double)job->bytes);
        }
        request_reply(req, rep);
        scheduler_kick(d->scheduler);
out:
        log_work_free(w);
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
                snprintf(err, errlen, "file \"%s\" must be an absolute path", file);
                return FERRY_EINVAL;
        }
        if (remote != NULL && (remote[0] == '\0' || strlen(remote) > 4096)) {
                snprintf(err, errlen, "remote URI of \"%s\" must be 1 to 4096 bytes", lp);
                return FERRY_EINVAL;
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

/* Parse the assets array; a later asset with overwrite replaces an earlier one. */
static int log_parse_assets(struct log_work *w, const cJSON *assets, char *err, size_t errlen)
{
        struct job *job = w->job;
        int n = cJSON_GetArraySize(assets), rc;
        const cJSON *it;

        if (n > LOG_MAX_ASSETS) {
                snprintf(err, errlen, "at most %d assets per version", LOG_MAX_ASSETS);
                return FERRY_EINVAL;
        }
        job->assets = calloc((size_t)n + 1, sizeof(*job->assets));
        w->sources = calloc((size_t)n + 1, sizeof(char *));
        w->staged = calloc((size_t)n + 1, sizeof(char *));
        if (job->assets == NULL || w->sources == NULL || w->staged == NULL) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        cJSON_ArrayForEach(it, assets)
        {
                size_t slot = job->nassets, j;

                job->nassets++;
                rc = log_parse_asset(it, &job->assets[slot], &w->sources[slot], &w->staged[slot],
                                     err, errlen);
                if (rc != 0)
                        return rc;
                for (j = 0; j < slot; j++) {
                        if (strcmp(job->assets[j].logical_path, job->assets[slot].logical_path))
                                continue;
                        if (!job->assets[slot].overwrite) {
                                snprintf(err, errlen,
                                         "two assets have the logical path \"%s\"; set "
                                         "overwrite to replace the first",
                                         job->assets[slot].logical_path);
                                return FERRY_EEXIST;
                        }
                        /* The later asset takes the earlier one's place. */
                        job_asset_clear(&job->assets[j]);
                        free(w->sources[j]);
                        free(w->staged[j]);
                        job->assets[j] = job->assets[slot];
                        w->sources[j] = w->sources[slot];
                        w->staged[j] = w->staged[slot];
                        memset(&job->assets[slot], 0, sizeof(job->assets[slot]));
                        w->sources[slot] = w->staged[slot] = NULL;
                        job->nassets--;
                        break;
                }
        }
        for (size_t i = 0; i < job->nassets; i++)
                job->assets[i].idx = (int)i;
        return 0;
}

void op_log(struct request *req)
{
        static const char *const keys[] = {
            "id",       "op",         "name",      "type",    "version", "aliases", "tags",
            "metadata", "experiment", "workspace", "project", "assets",  NULL};
        struct daemon *d = req->d;
        char err[PROTO_ERRMSG_MAX], key[33];
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
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err),
                         "version \"%.64s\" is not strict semver (MAJOR.MINOR.PATCH)", version);
                goto fail;
        }
        assets = cJSON_GetObjectItemCaseSensitive(req->msg, "assets");
        if (assets != NULL && !cJSON_IsNull(assets) && !cJSON_IsArray(assets)) {
                rc = FERRY_EINVAL;
                snprintf(err, sizeof(err), "field \"assets\" must be an array");
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
        if (!job->experiment || !job->workspace || !job->project || !job->name || !job->type ||
            (version && !job->version) || !job->aliases || !job->tags || (meta && !job->metadata)) {
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
        w->work.data = w;
        rc = uv_queue_work(d->loop, &w->work, log_work_cb, log_after_cb);
        if (rc == 0)
                return;
        snprintf(err, sizeof(err), "cannot queue the snapshot: %s", uv_strerror(rc));
        rc = FERRY_EINTERNAL;
fail:
        request_fail(req, rc, "%s", err);
        log_work_free(w);
}
