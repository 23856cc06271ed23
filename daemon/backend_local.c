/*
 * backend_local.c — the embedded default backend: versions go into the
 * registry under <state>/registry.
 *
 * A delivery has two stages. Storing the blobs (hash each snapshot, hard-link
 * it into the blob store) runs on libuv's thread pool, several deliveries at
 * once. Publishing runs in batches on one long-lived registry connection: the
 * committer takes every delivery whose blobs are stored, syncs their blob
 * directories once, and creates all their versions in one transaction (one
 * WAL sync), in the order the deliveries arrived within each artifact. Since
 * that order is kept here, a delivery reports "created" (its place in the
 * artifact's order) as soon as it arrives, and the next version of the same
 * artifact may start storing its blobs at once. The loop thread's own
 * connection answers look-ups.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "backend.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "registry.h"
#include "s3sync.h"
#include "spool.h"
#include "util.h"

struct local_delivery {
        struct local_backend *lb;
        struct job *job;
        uv_work_t work;
        bool stored;    /* stage one done */
        bool cancelled; /* `ferry cancel`: not published, finished as cancelled once stored */
        int rc;         /* its result, then the publish's */
        char (*shas)[65];
        char (*subdirs)[3];
        char version[64];
        char err[512];
        struct local_delivery *next; /* arrival order */
};

struct local_backend {
        struct backend base;
        struct registry *reg;               /* the loop thread's connection: look-ups */
        struct registry *pub;               /* the committer's connection */
        char *dir;                          /* <state>/registry */
        struct local_delivery *head, *tail; /* arrived, not yet published */
        struct local_delivery *batch;       /* being published */
        bool publishing;
        uv_work_t pub_work;
        int pub_rc;               /* the batch's commit */
        struct local_sync *syncs; /* deliveries listing their s3:// assets first */
        void (*closed)(void *data);
        void *closed_data;
        bool closing;
};

/* A delivery in its listing step (job->delivery meanwhile). */
struct local_sync {
        struct local_backend *lb;
        struct s3sync *ss;
        struct local_sync *next;
};

static void local_try_publish(struct local_backend *lb);
/* `ferry cancel`: a delivery not yet in a publishing batch is not published. */
static void local_cancel(struct backend *be, struct job *job)
{
        struct local_backend *lb = be->priv;
        struct local_delivery *ld = job->delivery, *b;

        if (ld == NULL)
                return;
        for (b = lb->batch; b != NULL; b = b->next)
                if (b == ld)
                        return; /* being published: it completes */
        ld->cancelled = true;
        if (ld->stored)
                local_try_publish(lb);
}

static void local_maybe_closed(struct local_backend *lb);

/* ---- stage one: blobs ---- */

static void local_store_work_cb(uv_work_t *work)
{
        struct local_delivery *ld = work->data;
        struct job *job = ld->job;
        int dirfd = spool_dirfd(ld->lb->base.env.spool);
        size_t i;

        for (i = 0; i < job->nassets && ld->rc == 0; i++) {
                const struct job_asset *a = &job->assets[i];

                if (a->remote || a->spool == NULL)
                        continue;
                ld->rc = registry_put_blob(ld->lb->dir, dirfd, a->spool, ld->shas[i],
                                           ld->subdirs[i], ld->err, sizeof(ld->err));
        }
}

static void local_store_after_cb(uv_work_t *work, int status)
{
        struct local_delivery *ld = work->data;

        if (status != 0 && ld->rc == 0) {
                ld->rc = FERRY_EINTERNAL;
                snprintf(ld->err, sizeof(ld->err), "storing the blobs was cancelled");
        }
        ld->stored = true;
        local_try_publish(ld->lb);
}

/* ---- stage two: publish in batches ---- */

static void local_publish_work_cb(uv_work_t *work)
{
        struct local_backend *lb = work->data;
        struct local_delivery *ld;
        int rc;

        for (ld = lb->batch; ld != NULL; ld = ld->next)
                if (ld->rc == 0 &&
                    registry_sync_dirs(lb->dir, ld->subdirs, ld->job->nassets + 1) != 0) {
                        ld->rc = FERRY_EIO;
                        snprintf(ld->err, sizeof(ld->err), "cannot sync the registry's blobs");
                }
        lb->pub_rc = registry_begin(lb->pub);
        if (lb->pub_rc != 0)
                return;
        for (ld = lb->batch; ld != NULL; ld = ld->next)
                if (ld->rc == 0)
                        ld->rc = registry_publish(lb->pub, ld->job, ld->shas, ld->version,
                                                  sizeof(ld->version), ld->err, sizeof(ld->err));
        rc = registry_commit(lb->pub);
        if (rc != 0) {
                registry_rollback(lb->pub);
                lb->pub_rc = rc;
        }
}

static void local_delivery_free(struct local_delivery *ld)
{
        free(ld->shas);
        free(ld->subdirs);
        free(ld);
}

static void local_finish(struct local_delivery *ld, int rc)
{
        struct local_backend *lb = ld->lb;
        struct backend_sink *sink = lb->base.env.sink;
        struct job *job = ld->job;
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        r.retry_after_ms = -1;
        if (rc == 0) {
                r.outcome = BACKEND_OK;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "%s", ld->version);
                sink->sent(sink, job->bytes);
        } else {
                /* A taken version or a vanished snapshot will not get better by waiting. */
                backend_result_set(&r,
                                   rc == FERRY_EEXIST || rc == FERRY_ENOTFOUND ? BACKEND_PERMANENT
                                                                               : BACKEND_TRANSIENT,
                                   ferry_err_name(rc), "%s",
                                   ld->err[0] ? ld->err : "cannot write the registry");
        }
        job->delivery = NULL;
        local_delivery_free(ld);
        sink->finished(sink, job, &r);
}

static void local_publish_after_cb(uv_work_t *work, int status)
{
        struct local_backend *lb = work->data;
        struct local_delivery *ld, *next;
        int commit = status != 0 ? FERRY_EINTERNAL : lb->pub_rc;

        ld = lb->batch;
        lb->batch = NULL;
        lb->publishing = false;
        for (; ld != NULL; ld = next) {
                next = ld->next;
                if (commit != 0 && ld->rc == 0) {
                        snprintf(ld->err, sizeof(ld->err), "cannot commit to the registry: %s",
                                 ferry_strerror(commit));
                        local_finish(ld, commit);
                } else {
                        local_finish(ld, ld->rc);
                }
        }
        local_try_publish(lb);
        local_maybe_closed(lb);
}

/* May `ld` be published now: stored, and no earlier delivery of its artifact still waits? */
static bool local_ready(struct local_backend *lb, struct local_delivery *ld)
{
        struct local_delivery *e;

        if (!ld->stored)
                return false;
        for (e = lb->head; e != ld; e = e->next)
                if (strcmp(e->job->workspace, ld->job->workspace) == 0 &&
                    strcmp(e->job->name, ld->job->name) == 0)
                        return false;
        return true;
}

/* A cancelled delivery whose blobs are stored ends without publishing. */
static void local_finish_cancelled(struct local_delivery *ld)
{
        struct backend_sink *sink = ld->lb->base.env.sink;
        struct job *job = ld->job;
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        backend_result_set(&r, BACKEND_TRANSIENT, "cancelled", "cancelled by `ferry cancel`");
        r.cancelled = true;
        job->delivery = NULL;
        local_delivery_free(ld);
        sink->finished(sink, job, &r);
}

static void local_try_publish(struct local_backend *lb)
{
        struct local_delivery **pp, *ld, *tail = NULL, *cancelled = NULL;
        int rc;

        /* Cancelled deliveries leave the line (their blobs stay: content-addressed, reusable). */
        for (pp = &lb->head; (ld = *pp) != NULL;) {
                if (ld->cancelled && ld->stored) {
                        *pp = ld->next;
                        ld->next = cancelled;
                        cancelled = ld;
                } else {
                        pp = &ld->next;
                }
        }
        lb->tail = NULL;
        for (ld = lb->head; ld != NULL; ld = ld->next)
                lb->tail = ld;
        while ((ld = cancelled) != NULL) {
                cancelled = ld->next;
                local_finish_cancelled(ld);
        }
        if (lb->publishing)
                return;
        /* Move every ready delivery, in arrival order, into the batch. */
        for (pp = &lb->head; (ld = *pp) != NULL;) {
                if (!local_ready(lb, ld)) {
                        pp = &ld->next;
                        continue;
                }
                *pp = ld->next;
                ld->next = NULL;
                if (tail)
                        tail->next = ld;
                else
                        lb->batch = ld;
                tail = ld;
        }
        lb->tail = NULL;
        for (ld = lb->head; ld != NULL; ld = ld->next)
                lb->tail = ld;
        if (lb->batch == NULL)
                return;
        lb->publishing = true;
        rc = uv_queue_work(lb->base.env.loop, &lb->pub_work, local_publish_work_cb,
                           local_publish_after_cb);
        if (rc != 0) {
                lb->pub_rc = FERRY_EINTERNAL;
                local_publish_after_cb(&lb->pub_work, rc);
        }
}

static void local_created_cb(struct job *job, int rc)
{
        /* Nothing waits on it: the order is kept by the committer. */
}

static void local_deliver_now(struct backend *be, struct job *job);

static void local_synced_cb(struct job *job, int rc)
{
        struct local_sync *ls = job->delivery;

        s3sync_recorded(ls->ss, rc);
}

static void local_sync_done(struct job *job, const struct backend_result *r)
{
        struct local_sync *ls = job->delivery, **pp;
        struct local_backend *lb = ls->lb;
        struct backend_sink *sink = lb->base.env.sink;

        for (pp = &lb->syncs; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == ls) {
                        *pp = ls->next;
                        break;
                }
        }
        free(ls);
        job->delivery = NULL;
        if (r->outcome == BACKEND_OK && !lb->closing)
                local_deliver_now(&lb->base, job);
        else
                sink->finished(sink, job, r);
        local_maybe_closed(lb);
}

static void local_deliver(struct backend *be, struct job *job)
{
        struct local_backend *lb = be->priv;
        struct local_sync *ls;
        struct backend_result r;

        if (!s3sync_needed(job)) {
                local_deliver_now(be, job);
                return;
        }
        /* First the listing step: the version is created with what it found. */
        ls = calloc(1, sizeof(*ls));
        if (ls != NULL) {
                ls->lb = lb;
                job->delivery = ls;
                ls->ss =
                    s3sync_start(be->env.s3, be->env.sink, job, local_synced_cb, local_sync_done);
        }
        if (ls == NULL || ls->ss == NULL) {
                free(ls);
                job->delivery = NULL;
                memset(&r, 0, sizeof(r));
                backend_result_set(&r, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                be->env.sink->finished(be->env.sink, job, &r);
                return;
        }
        ls->next = lb->syncs;
        lb->syncs = ls;
}

static void local_deliver_now(struct backend *be, struct job *job)
{
        struct local_backend *lb = be->priv;
        struct backend_sink *sink = be->env.sink;
        struct local_delivery *ld = calloc(1, sizeof(*ld));
        struct backend_result r;

        if (ld == NULL || (ld->shas = calloc(job->nassets + 1, sizeof(*ld->shas))) == NULL ||
            (ld->subdirs = calloc(job->nassets + 1, sizeof(*ld->subdirs))) == NULL) {
                if (ld)
                        local_delivery_free(ld);
                memset(&r, 0, sizeof(r));
                backend_result_set(&r, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                sink->finished(sink, job, &r);
                return;
        }
        ld->lb = lb;
        ld->job = job;
        ld->work.data = ld;
        job->delivery = ld;
        if (lb->tail)
                lb->tail->next = ld;
        else
                lb->head = ld;
        lb->tail = ld;
        if (job->remote_version_id == NULL)
                sink->created(sink, job, job->token, NULL, local_created_cb);
        if (uv_queue_work(be->env.loop, &ld->work, local_store_work_cb, local_store_after_cb) !=
            0) {
                ld->rc = FERRY_EINTERNAL;
                snprintf(ld->err, sizeof(ld->err), "cannot start storing the blobs");
                ld->stored = true;
                local_try_publish(lb);
        }
}

static void local_probe(struct backend *be,
                        void (*done)(struct backend *be, bool online, const char *message))
{
        done(be, true, NULL);
}

static int local_version_exists(struct backend *be, const char *workspace, const char *name,
                                const char *version)
{
        struct local_backend *lb = be->priv;

        return registry_version_exists(lb->reg, workspace, name, version);
}

static void local_get(struct backend *be, const char *workspace, const char *name,
                      const char *version_or_alias, backend_get_cb *cb, void *data)
{
        struct local_backend *lb = be->priv;
        char err[512] = "";
        cJSON *v = NULL;
        int rc;

        rc = registry_get(lb->reg, workspace, name, version_or_alias, &v, err, sizeof(err));
        cb(data, rc, err, v);
}

static void local_fetch(struct backend *be, const cJSON *asset, backend_fetch_cb *cb, void *data)
{
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(asset, "_path");

        if (!cJSON_IsString(path)) {
                cb(data, FERRY_ENOTFOUND, "the asset has no stored content", NULL);
                return;
        }
        cb(data, 0, NULL, path->valuestring);
}

static void local_abort(struct backend *be)
{
        struct local_backend *lb = be->priv;
        struct local_sync *ls;

        /* Listings wait on the network: they stop. Disk work finishes on its own, promptly. */
        for (ls = lb->syncs; ls != NULL; ls = ls->next)
                s3sync_cancel(ls->ss);
}

static void local_maybe_closed(struct local_backend *lb)
{
        void (*closed)(void *);
        void *data;

        if (!lb->closing || lb->head != NULL || lb->publishing || lb->syncs != NULL)
                return;
        closed = lb->closed;
        data = lb->closed_data;
        registry_close(lb->reg);
        registry_close(lb->pub);
        free(lb->dir);
        free(lb);
        if (closed)
                closed(data);
}

static void local_close(struct backend *be, void (*closed)(void *data), void *data)
{
        struct local_backend *lb = be->priv;

        lb->closing = true;
        lb->closed = closed;
        lb->closed_data = data;
        local_maybe_closed(lb);
}

static const struct backend_ops local_ops = {
    .name = "local",
    .deliver = local_deliver,
    .probe = local_probe,
    .version_exists = local_version_exists,
    .get = local_get,
    .fetch = local_fetch,
    .abort = local_abort,
    .cancel = local_cancel,
    .abandon = NULL, /* a version is published whole, or not at all */
    .close = local_close,
};

int backend_local_new(struct backend **out, const struct backend_env *env, char *err, size_t errlen)
{
        struct local_backend *lb = calloc(1, sizeof(*lb));

        *out = NULL;
        if (lb == NULL || (lb->dir = util_path_join(env->state_dir, "registry")) == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        if (registry_open(&lb->reg, lb->dir, err, errlen) != 0 ||
            registry_open(&lb->pub, lb->dir, err, errlen) != 0)
                goto fail;
        lb->pub_work.data = lb;
        lb->base.ops = &local_ops;
        lb->base.env = *env;
        lb->base.priv = lb;
        *out = &lb->base;
        return 0;
fail:
        if (lb) {
                registry_close(lb->reg);
                registry_close(lb->pub);
                free(lb->dir);
                free(lb);
        }
        return -1;
}
