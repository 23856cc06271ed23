/* ops.c — the operation table and the small handlers. */
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cache.h"
#include "daemon.h"
#include "ferry.h"
#include "log.h"
#include "proto.h"
#include "scheduler.h"
#include "server.h"
#include "spool.h"
#include "store.h"
#include "util.h"

cJSON *request_ok(struct request *req)
{
        return proto_reply_ok(req->id);
}

static void request_end(struct request *req)
{
        client_unref(req->client);
        cJSON_Delete(req->msg);
        free(req);
}

void request_reply(struct request *req, cJSON *reply)
{
        if (reply == NULL) {
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        client_send(req->client, reply);
        cJSON_Delete(reply);
        request_end(req);
}

void request_fail(struct request *req, int code, const char *fmt, ...)
{
        char msg[PROTO_ERRMSG_MAX];
        cJSON *rep;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        rep = proto_reply_error(req->id, code, "%s", msg);
        if (rep != NULL)
                client_send(req->client, rep);
        cJSON_Delete(rep);
        request_end(req);
}

/* Check the request's fields against `allowed` (id and op are always allowed). */
static int request_check_keys(struct request *req, const char *const *fields)
{
        const char *allowed[24];
        char err[PROTO_ERRMSG_MAX];
        size_t n = 0;

        allowed[n++] = "id";
        allowed[n++] = "op";
        while (*fields != NULL && n < sizeof(allowed) / sizeof(allowed[0]) - 1)
                allowed[n++] = *fields++;
        allowed[n] = NULL;
        if (proto_check_keys(req->msg, allowed, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return -1;
        }
        return 0;
}

#define CHECK_KEYS(req, ...)                                                                       \
        do {                                                                                       \
                static const char *const fields_[] = {__VA_ARGS__, NULL};                          \
                if (request_check_keys(req, fields_) != 0)                                         \
                        return;                                                                    \
        } while (0)

static void op_experiment_create(struct request *req)
{
        struct daemon *d = req->d;
        const char *ws, *proj, *name, *key;
        char err[PROTO_ERRMSG_MAX], fresh[33];
        char *have_ws = NULL, *have_proj = NULL;
        cJSON *rep;

        CHECK_KEYS(req, "workspace", "project", "name", "key");
        if (proto_get_string(req->msg, "workspace", false, &ws, err, sizeof(err)) ||
            proto_get_string(req->msg, "project", false, &proj, err, sizeof(err)) ||
            proto_get_string(req->msg, "name", false, &name, err, sizeof(err)) ||
            proto_get_string(req->msg, "key", false, &key, err, sizeof(err)) ||
            (ws && proto_validate_name(ws, "workspace", err, sizeof(err))) ||
            (proj && proto_validate_name(proj, "project", err, sizeof(err))) ||
            (key && proto_validate_experiment_key(key, err, sizeof(err)))) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        if (key == NULL) {
                if (util_random_hex(fresh, 16) != 0) {
                        request_fail(req, FERRY_EIO, "no randomness for an experiment key");
                        return;
                }
                key = fresh;
        }
        if (store_experiment_get(d->store, key, &have_ws, &have_proj) != 0) {
                if (store_experiment_insert(d->store, key, ws ? ws : d->cfg.workspace,
                                            proj ? proj : d->cfg.project, name) != 0) {
                        request_fail(req, FERRY_EIO, "cannot record the experiment");
                        return;
                }
                have_ws = strdup(ws ? ws : d->cfg.workspace);
                have_proj = strdup(proj ? proj : d->cfg.project);
        }
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddStringToObject(rep, "key", key);
                cJSON_AddStringToObject(rep, "workspace", have_ws ? have_ws : "");
                cJSON_AddStringToObject(rep, "project", have_proj ? have_proj : "");
        }
        free(have_ws);
        free(have_proj);
        request_reply(req, rep);
}

static void op_stage(struct request *req)
{
        char token[33], err[PROTO_ERRMSG_MAX];
        char *path = NULL;
        cJSON *rep;
        int rc;

        CHECK_KEYS(req, "");
        rc = spool_stage_new(req->d->spool, token, &path, err, sizeof(err));
        if (rc != 0) {
                request_fail(req, rc, "%s", err);
                return;
        }
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddStringToObject(rep, "token", token);
                cJSON_AddStringToObject(rep, "path", path);
        }
        free(path);
        request_reply(req, rep);
}

static void op_status(struct request *req)
{
        struct daemon *d = req->d;
        struct store_counts c;
        struct scheduler_status ss;
        cJSON *rep;

        CHECK_KEYS(req, "");
        if (store_counts(d->store, &c) != 0) {
                request_fail(req, FERRY_EIO, "cannot read the queue");
                return;
        }
        scheduler_status(d->scheduler, &ss);
        rep = request_ok(req);
        if (rep == NULL) {
                request_reply(req, NULL);
                return;
        }
        cJSON_AddStringToObject(rep, "backend", d->backend->ops->name);
        cJSON_AddBoolToObject(rep, "online", ss.online);
        cJSON_AddBoolToObject(rep, "paused", ss.paused);
        if (ss.online)
                cJSON_AddNullToObject(rep, "offline_since");
        else
                cJSON_AddNumberToObject(rep, "offline_since", (double)ss.offline_since_ms);
        if (ss.last_error)
                cJSON_AddStringToObject(rep, "last_error", ss.last_error);
        else
                cJSON_AddNullToObject(rep, "last_error");
        cJSON_AddNumberToObject(rep, "queued", (double)(c.queued - ss.running));
        cJSON_AddNumberToObject(rep, "running", ss.running);
        cJSON_AddNumberToObject(rep, "failed", (double)c.failed);
        cJSON_AddNumberToObject(rep, "done", (double)c.done);
        cJSON_AddNumberToObject(rep, "bytes_queued", (double)c.bytes_queued);
        cJSON_AddNumberToObject(rep, "bytes_sent", (double)ss.bytes_sent);
        cJSON_AddNumberToObject(rep, "rate_bps", (double)ss.rate_bps);
        cJSON_AddNumberToObject(rep, "spool_bytes", (double)spool_used(d->spool));
        cJSON_AddNumberToObject(rep, "spool_budget", (double)spool_budget(d->spool));
        cJSON_AddItemToObject(rep, "errors", store_errors(d->store, 20));
        request_reply(req, rep);
}

static void op_ls(struct request *req)
{
        const char *state;
        char err[PROTO_ERRMSG_MAX];
        int64_t limit;
        bool truncated = false;
        cJSON *rep, *items;

        CHECK_KEYS(req, "state", "limit");
        if (proto_get_string(req->msg, "state", false, &state, err, sizeof(err)) != 0 ||
            proto_get_int(req->msg, "limit", false, 1000, &limit, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        if (limit < 1 || limit > 100000) {
                request_fail(req, FERRY_EINVAL, "limit must be between 1 and 100000");
                return;
        }
        if (state == NULL)
                state = "active";
        if (strcmp(state, "active") && strcmp(state, "failed") && strcmp(state, "done") &&
            strcmp(state, "all") && strcmp(state, "queued")) {
                request_fail(req, FERRY_EINVAL,
                             "state must be one of active, queued, failed, done, all");
                return;
        }
        items = store_list(req->d->store, state, (int)limit, PROTO_FRAME_MAX - 4096, &truncated);
        rep = request_ok(req);
        if (rep == NULL || items == NULL) {
                cJSON_Delete(items);
                cJSON_Delete(rep);
                request_reply(req, NULL);
                return;
        }
        cJSON_AddItemToObject(rep, "items", items);
        cJSON_AddBoolToObject(rep, "truncated", truncated);
        request_reply(req, rep);
}

static void op_wait(struct request *req)
{
        const cJSON *jobs, *it;
        int64_t timeout;
        char err[PROTO_ERRMSG_MAX];
        char *jobs_json = NULL;

        CHECK_KEYS(req, "jobs", "timeout_ms");
        if (proto_get_int(req->msg, "timeout_ms", false, -1, &timeout, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        jobs = cJSON_GetObjectItemCaseSensitive(req->msg, "jobs");
        if (jobs != NULL && !cJSON_IsNull(jobs)) {
                if (!cJSON_IsArray(jobs)) {
                        request_fail(req, FERRY_EINVAL, "field \"jobs\" must be an array of ids");
                        return;
                }
                cJSON_ArrayForEach(it, jobs)
                {
                        if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
                            it->valuedouble != (double)(int64_t)it->valuedouble) {
                                request_fail(req, FERRY_EINVAL,
                                             "field \"jobs\" must be an array of ids");
                                return;
                        }
                }
                jobs_json = cJSON_PrintUnformatted(jobs);
                if (jobs_json == NULL) {
                        request_fail(req, FERRY_ENOMEM, "out of memory");
                        return;
                }
        }
        scheduler_add_waiter(req->d->scheduler, req, jobs_json, timeout);
        cJSON_free(jobs_json);
}

static void op_retry(struct request *req)
{
        int64_t id;
        bool all;
        char err[PROTO_ERRMSG_MAX];
        int n;
        cJSON *rep;

        CHECK_KEYS(req, "job", "all");
        if (proto_get_int(req->msg, "job", false, -1, &id, err, sizeof(err)) != 0 ||
            proto_get_bool(req->msg, "all", false, &all, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        if ((id < 0) == !all) {
                request_fail(req, FERRY_EINVAL, "give either \"job\" or \"all\": true");
                return;
        }
        n = store_job_requeue(req->d->store, all ? -1 : id);
        if (n < 0) {
                request_fail(req, FERRY_EIO, "cannot update the queue");
                return;
        }
        if (n == 0 && !all) {
                request_fail(req, FERRY_ENOTFOUND, "job %lld is not a failed job", (long long)id);
                return;
        }
        if (n > 0)
                log_info("requeued %d failed job%s", n, n == 1 ? "" : "s");
        scheduler_kick(req->d->scheduler);
        rep = request_ok(req);
        if (rep != NULL)
                cJSON_AddNumberToObject(rep, "requeued", n);
        request_reply(req, rep);
}

static void op_pause(struct request *req)
{
        char err[PROTO_ERRMSG_MAX];
        bool paused;
        cJSON *rep;

        CHECK_KEYS(req, "paused");
        if (proto_get_bool(req->msg, "paused", true, &paused, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        scheduler_set_paused(req->d->scheduler, paused);
        rep = request_ok(req);
        if (rep != NULL)
                cJSON_AddBoolToObject(rep, "paused", paused);
        request_reply(req, rep);
}

static void op_cache(struct request *req)
{
        char err[PROTO_ERRMSG_MAX];
        struct cache_usage u;
        int64_t freed = 0;
        bool clear;
        cJSON *rep;

        CHECK_KEYS(req, "clear");
        if (proto_get_bool(req->msg, "clear", false, &clear, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        if ((clear && cache_clear(req->d->cache, &freed) != 0) ||
            cache_usage(req->d->cache, &u) != 0) {
                request_fail(req, FERRY_EIO, "cannot read the cache");
                return;
        }
        rep = request_ok(req);
        if (rep != NULL) {
                char *path = util_path_join(req->d->cfg.state_dir, "cache");

                cJSON_AddStringToObject(rep, "path", path ? path : "");
                free(path);
                cJSON_AddNumberToObject(rep, "bytes", (double)u.bytes);
                cJSON_AddNumberToObject(rep, "budget", (double)u.budget);
                cJSON_AddNumberToObject(rep, "blobs", (double)u.blobs);
                cJSON_AddNumberToObject(rep, "freed", (double)freed);
        }
        request_reply(req, rep);
}

static const struct {
        const char *op;
        void (*handler)(struct request *req);
} op_table[] = {
    {"experiment.create", op_experiment_create},
    {"stage", op_stage},
    {"artifact.log", op_log},
    {"status", op_status},
    {"ls", op_ls},
    {"wait", op_wait},
    {"retry", op_retry},
    {"pause", op_pause},
    {"cache", op_cache},
    {"get", op_get},
    {"download", op_download},
};

void ops_dispatch(struct daemon *d, struct client *client, uint64_t id, const char *op, cJSON *msg)
{
        struct request *req = calloc(1, sizeof(*req));
        size_t i;

        if (req == NULL) {
                cJSON_Delete(msg);
                return;
        }
        req->d = d;
        req->client = client;
        req->id = id;
        req->msg = msg;
        client_ref(client);
        for (i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
                if (strcmp(op_table[i].op, op) == 0) {
                        op_table[i].handler(req);
                        return;
                }
        }
        request_fail(req, FERRY_EUNKNOWNOP, "unknown operation \"%.64s\"", op);
}
