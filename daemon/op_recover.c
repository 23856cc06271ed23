/*
 * op_recover.c — recover: re-queue the versions whose snapshots sit in
 * quarantine (recovery.h), from the manifests the snapshots carry.
 *
 * Each version keeps its token, so the local registry recognises one it has
 * already (and delivers nothing twice), and its files keep their asset ids.
 * On Comet a version with an automatic number that had been delivered before
 * the queue lost it is delivered again as a new version: ferry cannot know.
 * Files without a usable manifest stay in quarantine and are counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "daemon.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "recovery.h"
#include "scheduler.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "writer.h"

struct recover_work {
        uv_work_t work;
        struct writer_op op;
        struct request *req;
        struct daemon *d;
        struct job **jobs; /* the versions to queue */
        size_t njobs;
        int64_t files, orphans, partial;
        int64_t skipped; /* versions that could not be rebuilt */
        int64_t queued;  /* set by the commit: versions queued */
        int64_t pending; /* set by the commit: versions already waiting in the queue */
        int rc;
        char err[PROTO_ERRMSG_MAX];
};

static char *json_text(const cJSON *obj, const char *key, const char *fallback)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        if (cJSON_IsString(v))
                return strdup(v->valuestring);
        if (v != NULL && !cJSON_IsNull(v))
                return cJSON_PrintUnformatted(v);
        return fallback ? strdup(fallback) : NULL;
}

/* The job of one quarantined version, its files moved back into the spool; NULL if unusable. */
static struct job *recover_job(struct recover_work *rw, struct recovery_version *v)
{
        struct spool *sp = rw->d->spool;
        cJSON *req = cJSON_Parse(v->request);
        struct job *job = calloc(1, sizeof(*job));
        size_t i;

        if (req == NULL || job == NULL ||
            (job->assets = calloc(v->nfiles + 1, sizeof(*job->assets))) == NULL)
                goto fail;
        job->token = strdup(v->token);
        job->name = json_text(req, "name", NULL);
        job->type = json_text(req, "type", "other");
        job->experiment = json_text(req, "experiment", NULL);
        job->workspace = json_text(req, "workspace", NULL);
        job->project = json_text(req, "project", NULL);
        job->version = json_text(req, "version", NULL);
        job->aliases = json_text(req, "aliases", "[]");
        job->tags = json_text(req, "tags", "[]");
        job->metadata = json_text(req, "metadata", NULL);
        job->created_ms = util_now_ms();
        if (!job->token || !job->name || !job->type || !job->experiment || !job->workspace ||
            !job->project || !job->aliases || !job->tags)
                goto fail;
        for (i = 0; i < v->nfiles; i++) {
                struct job_asset *a = &job->assets[job->nassets];
                const char *base = strrchr(v->paths[i], '/');
                char *to;
                struct stat st;

                base = base ? base + 1 : v->paths[i];
                to = spool_path(sp, base);
                if (to == NULL || lstat(v->paths[i], &st) != 0 || !S_ISREG(st.st_mode) ||
                    rename(v->paths[i], to) != 0) {
                        free(to);
                        v->partial = true;
                        continue;
                }
                free(to);
                a->idx = (int)job->nassets;
                a->logical_path = strdup(v->logical[i]);
                a->spool = strdup(base);
                a->size = st.st_size;
                a->metadata = v->asset_meta[i] ? strdup(v->asset_meta[i]) : NULL;
                if (v->asset_ids[i] && strlen(v->asset_ids[i]) < sizeof(a->asset_id))
                        snprintf(a->asset_id, sizeof(a->asset_id), "%s", v->asset_ids[i]);
                else
                        util_random_hex(a->asset_id, 16);
                job->bytes += st.st_size;
                job->nassets++;
                rw->files++;
        }
        cJSON_Delete(req);
        if (v->partial)
                rw->partial++;
        return job;
fail:
        cJSON_Delete(req);
        job_free(job);
        return NULL;
}

static void recover_work_cb(uv_work_t *work)
{
        struct recover_work *rw = work->data;
        struct recovery_version *vs = NULL;
        char qdir[4200];
        size_t n = 0, i;

        snprintf(qdir, sizeof(qdir), "%s/quarantine", rw->d->cfg.state_dir);
        rw->rc = recovery_scan(qdir, &vs, &n, &rw->orphans, rw->err, sizeof(rw->err));
        if (rw->rc != 0)
                return;
        rw->jobs = calloc(n + 1, sizeof(*rw->jobs));
        for (i = 0; i < n; i++) {
                struct job *job = rw->jobs ? recover_job(rw, &vs[i]) : NULL;

                if (job != NULL)
                        rw->jobs[rw->njobs++] = job;
                else
                        rw->skipped++;
                recovery_version_free(&vs[i]);
        }
        free(vs);
        /* The moved names must survive a power cut before the commit refers to them. */
        if (rw->files > 0)
                spool_sync(rw->d->spool);
}

static void recover_free(struct recover_work *rw)
{
        size_t i;

        for (i = 0; i < rw->njobs; i++)
                job_free(rw->jobs[i]);
        free(rw->jobs);
        free(rw);
}

static int recover_commit_run(struct store *st, struct writer_op *op)
{
        struct recover_work *rw =
            (struct recover_work *)((char *)op - offsetof(struct recover_work, op));
        size_t i;
        int64_t id;
        int rc;

        rw->queued = rw->pending = 0; /* a group commit may run this again */
        for (i = 0; i < rw->njobs; i++) {
                struct job *job = rw->jobs[i];

                if (job->version != NULL &&
                    store_version_pending(st, job->workspace, job->name, job->version)) {
                        rw->pending++;
                        continue;
                }
                if ((rc = store_experiment_insert(st, job->experiment, job->workspace, job->project,
                                                  NULL)) != 0 ||
                    (rc = store_job_insert(st, job, &id)) != 0)
                        return rc;
                log_info("job %lld: recovered %s from quarantine (%zu files)", (long long)id,
                         job->name, job->nassets);
                rw->queued++;
        }
        return 0;
}

static void recover_commit_done(struct writer_op *op, int rc)
{
        struct recover_work *rw =
            (struct recover_work *)((char *)op - offsetof(struct recover_work, op));
        struct request *req = rw->req;
        struct daemon *d = rw->d;
        cJSON *rep;

        if (rc != 0) {
                request_fail(req, rc, "cannot queue the recovered versions (%s)",
                             ferry_strerror(rc));
        } else {
                rep = request_ok(req);
                if (rep != NULL) {
                        cJSON_AddNumberToObject(rep, "versions", (double)rw->queued);
                        cJSON_AddNumberToObject(rep, "files", (double)rw->files);
                        cJSON_AddNumberToObject(rep, "partial", (double)rw->partial);
                        cJSON_AddNumberToObject(rep, "skipped",
                                                (double)(rw->skipped + rw->pending));
                        cJSON_AddNumberToObject(rep, "orphans", (double)rw->orphans);
                }
                request_reply(req, rep);
                scheduler_kick(d->scheduler);
        }
        recover_free(rw);
        daemon_log_finished(d);
}

static void recover_after_cb(uv_work_t *work, int status)
{
        struct recover_work *rw = work->data;
        struct daemon *d = rw->d;
        int64_t bytes = 0;
        size_t i;

        if (status != 0 || rw->rc != 0) {
                request_fail(rw->req, status ? FERRY_EINTERNAL : rw->rc, "%s",
                             status ? "cancelled" : rw->err);
                recover_free(rw);
                daemon_log_finished(d);
                return;
        }
        for (i = 0; i < rw->njobs; i++)
                bytes += rw->jobs[i]->bytes;
        /* The files count against the spool again (they may exceed the budget: they are ours). */
        if (bytes > 0 && spool_reserve(d->spool, bytes, rw->err, sizeof(rw->err)) != 0)
                log_warn("recovered snapshots exceed the spool budget: %s", rw->err);
        rw->op.run = recover_commit_run;
        rw->op.done = recover_commit_done;
        rw->op.sync_spool = true;
        writer_submit(d->writer, &rw->op);
}

void op_recover(struct request *req)
{
        static const char *const keys[] = {"id", "op", NULL};
        struct recover_work *rw;
        char err[PROTO_ERRMSG_MAX];
        int rc;

        if (proto_check_keys(req->msg, keys, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        rw = calloc(1, sizeof(*rw));
        if (rw == NULL) {
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        rw->req = req;
        rw->d = req->d;
        rw->work.data = rw;
        rc = uv_queue_work(req->d->loop, &rw->work, recover_work_cb, recover_after_cb);
        if (rc != 0) {
                free(rw);
                request_fail(req, FERRY_EINTERNAL, "cannot start: %s", uv_strerror(rc));
                return;
        }
        req->d->inflight_logs++;
}
