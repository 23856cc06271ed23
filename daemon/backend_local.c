/*
 * backend_local.c — the embedded default backend: versions go into the
 * registry under <state>/registry. Deliveries run on libuv's thread pool,
 * each with its own registry connection; look-ups use the loop's connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "backend.h"
#include "daemon.h"
#include "ferry.h"
#include "job.h"
#include "log.h"
#include "registry.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"

struct local_backend {
        struct backend base;
        struct registry *reg; /* the loop thread's connection */
        char *dir;            /* <state>/registry */
        char *spool_dir;      /* <state>/spool */
        char origin_prefix[40];
};

struct local_delivery {
        uv_work_t work;
        struct local_backend *lb;
        struct job *job;
        backend_deliver_cb *done;
        int rc;
        char version[64];
        char err[512];
};

static void local_deliver_work_cb(uv_work_t *work)
{
        struct local_delivery *ld = work->data;
        struct registry *reg;
        char origin[80];

        ld->rc = registry_open(&reg, ld->lb->dir, ld->err, sizeof(ld->err));
        if (ld->rc != 0)
                return;
        snprintf(origin, sizeof(origin), "%s:%lld", ld->lb->origin_prefix, (long long)ld->job->id);
        ld->rc = registry_publish(reg, ld->job, origin, ld->lb->spool_dir, ld->version,
                                  sizeof(ld->version), ld->err, sizeof(ld->err));
        registry_close(reg);
}

static void local_deliver_after_cb(uv_work_t *work, int status)
{
        struct local_delivery *ld = work->data;
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        r.retry_after_ms = -1;
        if (status != 0) {
                r.outcome = BACKEND_TRANSIENT;
                snprintf(r.message, sizeof(r.message), "delivery cancelled");
        } else if (ld->rc == 0) {
                r.outcome = BACKEND_OK;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "%s", ld->version);
                scheduler_account_bytes(ld->lb->base.d->scheduler, ld->job->bytes);
        } else {
                /* A taken version or a vanished spool file will not get better by waiting. */
                r.outcome = ld->rc == FERRY_EEXIST || ld->rc == FERRY_ENOTFOUND ? BACKEND_PERMANENT
                                                                                : BACKEND_TRANSIENT;
                snprintf(r.code, sizeof(r.code), "%s", ferry_err_name(ld->rc));
                snprintf(r.message, sizeof(r.message), "%s", ld->err);
        }
        ld->done(&ld->lb->base, ld->job, &r);
        free(ld);
}

static void local_deliver(struct backend *be, struct job *job, backend_deliver_cb *done)
{
        struct local_backend *lb = be->priv;
        struct local_delivery *ld = calloc(1, sizeof(*ld));
        struct backend_result r;

        if (ld != NULL) {
                ld->lb = lb;
                ld->job = job;
                ld->done = done;
                ld->work.data = ld;
                if (uv_queue_work(be->d->loop, &ld->work, local_deliver_work_cb,
                                  local_deliver_after_cb) == 0)
                        return;
                free(ld);
        }
        memset(&r, 0, sizeof(r));
        r.outcome = BACKEND_TRANSIENT;
        r.retry_after_ms = -1;
        snprintf(r.message, sizeof(r.message), "cannot start the delivery");
        done(be, job, &r);
}

static void local_probe(struct backend *be, backend_probe_cb *done)
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
        /* Thread-pool deliveries are short and finish on their own. */
}

static void local_close(struct backend *be)
{
        struct local_backend *lb = be->priv;

        registry_close(lb->reg);
        free(lb->dir);
        free(lb->spool_dir);
        free(lb);
}

static const struct backend_ops local_ops = {
    .name = "local",
    .deliver = local_deliver,
    .probe = local_probe,
    .version_exists = local_version_exists,
    .get = local_get,
    .fetch = local_fetch,
    .abort = local_abort,
    .close = local_close,
};

int backend_local_new(struct backend **out, struct daemon *d, char *err, size_t errlen)
{
        struct local_backend *lb = calloc(1, sizeof(*lb));

        *out = NULL;
        if (lb == NULL || (lb->dir = util_path_join(d->cfg.state_dir, "registry")) == NULL ||
            (lb->spool_dir = util_path_join(d->cfg.state_dir, "spool")) == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        if (registry_open(&lb->reg, lb->dir, err, errlen) != 0)
                goto fail;
        snprintf(lb->origin_prefix, sizeof(lb->origin_prefix), "%s", store_instance(d->store));
        lb->base.ops = &local_ops;
        lb->base.d = d;
        lb->base.priv = lb;
        *out = &lb->base;
        return 0;
fail:
        if (lb) {
                free(lb->dir);
                free(lb->spool_dir);
                free(lb);
        }
        return -1;
}
