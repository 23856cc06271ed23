/* ops.c — the operation table and the small handlers. */
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cache.h"
#include "daemon.h"
#include "ferry_base.h"
#include "log.h"
#include "proto.h"
#include "recovery.h"
#include "scheduler.h"
#include "connection.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "writer.h"

cJSON *request_ok(struct request *req)
{
        return proto_reply_ok(req->id);
}

static void request_end(struct request *req)
{
        struct client_pending *p = client_pending(req->client);

        if (req->prev)
                req->prev->next = req->next;
        else if (p->head == req)
                p->head = req->next;
        if (req->next)
                req->next->prev = req->prev;
        p->count--;
        for (int i = 0; i < req->nfds; i++)
                if (req->fds[i] >= 0)
                        close(req->fds[i]);
        free(req->fds);
        client_unref(req->client);
        cJSON_Delete(req->msg);
        free(req);
}

void request_drop(struct request *req)
{
        request_end(req);
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

void ops_client_closed(struct client *client)
{
        struct client_pending *p = client_pending(client);
        struct request *req, *next;

        for (req = p->head; req != NULL; req = next) {
                next = req->next;
                if (req->cancel != NULL)
                        req->cancel(req);
        }
        op_log_client_closed(client);
        op_download_client_closed(client);
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

/* A request whose store change goes through the writer; the reply comes once it is durable. */
struct write_req {
        struct writer_op op;
        struct request *req;
        char *a, *b, *c, *e; /* the op's strings */
        int64_t n;           /* its number; its result */
};

static struct write_req *write_req_new(struct request *req,
                                       int (*run)(struct store *, struct writer_op *),
                                       void (*done)(struct writer_op *, int))
{
        struct write_req *w = calloc(1, sizeof(*w));

        if (w == NULL)
                return NULL;
        w->op.run = run;
        w->op.done = done;
        w->op.durable = true; /* its reply tells the client it is done */
        w->req = req;
        return w;
}

static void write_req_free(struct write_req *w)
{
        free(w->a);
        free(w->b);
        free(w->c);
        free(w->e);
        free(w);
}

/* ---- experiment.create ---- */

static int experiment_run(struct store *st, struct writer_op *op)
{
        struct write_req *w = (struct write_req *)op;

        return store_experiment_insert(st, w->a, w->b, w->c, w->e);
}

static void experiment_done(struct writer_op *op, int rc)
{
        struct write_req *w = (struct write_req *)op;
        struct request *req = w->req;
        char *ws = NULL, *proj = NULL;
        cJSON *rep;

        if (rc != 0 || store_experiment_get(req->d->store, w->a, &ws, &proj) != 0) {
                request_fail(req, rc ? rc : FERRY_EIO, "cannot record the experiment");
                write_req_free(w);
                return;
        }
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddStringToObject(rep, "key", w->a);
                cJSON_AddStringToObject(rep, "workspace", ws ? ws : "");
                cJSON_AddStringToObject(rep, "project", proj ? proj : "");
        }
        free(ws);
        free(proj);
        request_reply(req, rep);
        write_req_free(w);
}

static void op_experiment_create(struct request *req)
{
        struct daemon *d = req->d;
        const char *ws, *proj, *name, *key;
        char err[PROTO_ERRMSG_MAX], fresh[33];
        struct write_req *w;

        CHECK_KEYS(req, "workspace", "project", "name", "key");
        if (proto_get_string(req->msg, "workspace", false, &ws, err, sizeof(err)) ||
            proto_get_string(req->msg, "project", false, &proj, err, sizeof(err)) ||
            proto_get_string(req->msg, "name", false, &name, err, sizeof(err)) ||
            proto_get_string(req->msg, "key", false, &key, err, sizeof(err)) ||
            (ws && proto_validate_name(ws, "workspace", err, sizeof(err))) ||
            (proj && proto_validate_name(proj, "project", err, sizeof(err))) ||
            (name && proto_validate_name(name, "experiment name", err, sizeof(err))) ||
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
        w = write_req_new(req, experiment_run, experiment_done);
        if (w == NULL || (w->a = strdup(key)) == NULL ||
            (w->b = strdup(ws ? ws : d->cfg.workspace)) == NULL ||
            (w->c = strdup(proj ? proj : d->cfg.project)) == NULL ||
            (name && (w->e = strdup(name)) == NULL)) {
                if (w)
                        write_req_free(w);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        writer_submit(d->writer, &w->op);
}

/* ---- status ---- */

#define STATUS_JOB_WARNINGS 10
#define STATUS_JOB_WARNINGS_MS (24 * 3600 * 1000LL)

/* "job N (name): warning", its lines joined with "; ". */
static cJSON *job_warning_line(int64_t job, const char *name, const char *warning)
{
        char msg[1500];
        const char *w = warning ? warning : "";
        size_t n;

        n = (size_t)snprintf(msg, sizeof(msg), "job %lld (%s): ", (long long)job,
                             name ? name : "?");
        for (; *w && n + 3 < sizeof(msg); w++) {
                if (*w == '\n') {
                        msg[n++] = ';';
                        msg[n++] = ' ';
                } else {
                        msg[n++] = *w;
                }
        }
        msg[n < sizeof(msg) ? n : sizeof(msg) - 1] = '\0';
        proto_utf8_trim(msg);
        return cJSON_CreateString(msg);
}

static void status_add_warnings(struct daemon *d, cJSON *rep)
{
        cJSON *warnings = cJSON_AddArrayToObject(rep, "warnings");
        cJSON *jobs, *it;
        char msg[5000];

        /* Versions logged in the last day whose S3 listing fell back. */
        jobs =
            store_warnings(d->store, STATUS_JOB_WARNINGS, util_now_ms() - STATUS_JOB_WARNINGS_MS);
        cJSON_ArrayForEach(it, jobs)
        {
                cJSON_AddItemToArray(
                    warnings,
                    job_warning_line(
                        (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "job")),
                        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "name")),
                        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "message"))));
        }
        cJSON_Delete(jobs);

        if (d->notices.damaged[0])
                cJSON_AddItemToArray(warnings, cJSON_CreateString(d->notices.damaged));
        if (d->notices.quarantined > 0) {
                snprintf(msg, sizeof(msg),
                         "%lld spool files were not in the queue database at start-up; they were "
                         "moved to %s, not deleted: `ferry recover` re-queues them",
                         (long long)d->notices.quarantined, d->notices.quarantine);
                cJSON_AddItemToArray(warnings, cJSON_CreateString(msg));
        }
        if (store_damaged(d->store))
                cJSON_AddItemToArray(
                    warnings,
                    cJSON_CreateString("the queue database reports damage: nothing is deleted "
                                       "from the spool; restart ferryd to set the damaged file "
                                       "aside and quarantine the snapshots"));
}

static void op_status(struct request *req)
{
        struct daemon *d = req->d;
        struct store_counts c;
        struct scheduler_status ss;
        cJSON *rep;

        CHECK_KEYS(req, "");
        if (store_counts(d->store, &c) != 0) {
                request_fail(req, FERRY_EIO,
                             "cannot read the queue database (see ferryd's log); nothing is "
                             "deleted while it cannot be read");
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
        cJSON_AddNumberToObject(rep, "queued",
                                (double)(c.queued > ss.running ? c.queued - ss.running : 0));
        cJSON_AddNumberToObject(rep, "running", ss.running);
        cJSON_AddNumberToObject(rep, "failed", (double)c.failed);
        cJSON_AddNumberToObject(rep, "done", (double)c.done);
        cJSON_AddNumberToObject(rep, "cancelled", (double)c.cancelled);
        cJSON_AddNumberToObject(rep, "bytes_queued", (double)c.bytes_queued);
        cJSON_AddNumberToObject(rep, "bytes_sent", (double)ss.bytes_sent);
        cJSON_AddNumberToObject(rep, "rate_bps", (double)ss.rate_bps);
        cJSON_AddNumberToObject(rep, "spool_bytes", (double)spool_used(d->spool));
        cJSON_AddNumberToObject(rep, "spool_budget", (double)spool_budget(d->spool));
        cJSON_AddNumberToObject(rep, "spool_min_free", (double)spool_min_free(d->spool));
        {
                int64_t avail = spool_fs_free(d->spool);

                if (avail >= 0)
                        cJSON_AddNumberToObject(rep, "spool_free", (double)avail);
                else
                        cJSON_AddNullToObject(rep, "spool_free");
        }
        cJSON_AddNumberToObject(rep, "waiters", ss.waiters);
        cJSON_AddItemToObject(rep, "errors", store_errors(d->store, 20));
        status_add_warnings(d, rep);
        request_reply(req, rep);
}

/* ---- ls ---- */

static void op_ls(struct request *req)
{
        static const char *const states[] = {"active",    "queued", "failed", "done",
                                             "cancelled", "all",    NULL};
        const char *state;
        char err[PROTO_ERRMSG_MAX];
        int64_t limit;
        bool truncated = false;
        cJSON *rep, *items;
        size_t i;

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
        for (i = 0; states[i] != NULL && strcmp(states[i], state) != 0; i++)
                ;
        if (states[i] == NULL) {
                request_fail(req, FERRY_EINVAL,
                             "state must be one of active, queued, failed, done, cancelled, all");
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

/* ---- wait ---- */

#define WAIT_WARNINGS_MAX 20

/* The warnings of the jobs a wait names: [{"job", "name", "message"}], at most 20. */
static cJSON *wait_warnings(struct request *req)
{
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(req->msg, "jobs"), *it;
        cJSON *out = cJSON_CreateArray();
        int n = 0;

        cJSON_ArrayForEach(it, jobs)
        {
                char *name = NULL, *warning = NULL;
                int64_t id = (int64_t)it->valuedouble;
                cJSON *w;

                if (n >= WAIT_WARNINGS_MAX || out == NULL)
                        break;
                if (store_job_warning(req->d->store, id, &name, &warning) == 0 && warning &&
                    (w = cJSON_CreateObject()) != NULL) {
                        cJSON_AddNumberToObject(w, "job", (double)id);
                        cJSON_AddStringToObject(w, "name", name ? name : "");
                        cJSON_AddStringToObject(w, "message", warning);
                        cJSON_AddItemToArray(out, w);
                        n++;
                }
                free(name);
                free(warning);
        }
        return out;
}

static void wait_done(void *data, bool drained, int64_t pending, int64_t failed)
{
        struct request *req = data;
        cJSON *rep = request_ok(req);

        req->cancel = NULL;
        if (rep != NULL) {
                cJSON_AddBoolToObject(rep, "drained", drained);
                cJSON_AddNumberToObject(rep, "pending", (double)pending);
                cJSON_AddNumberToObject(rep, "failed", (double)failed);
                cJSON_AddItemToObject(rep, "warnings", wait_warnings(req));
        }
        request_reply(req, rep);
}

static void wait_cancel(struct request *req)
{
        scheduler_wait_cancel(req->d->scheduler, req->cancel_data);
        request_drop(req);
}

static int cmp_ids(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return x < y ? -1 : x > y;
}

static void op_wait(struct request *req)
{
        const cJSON *jobs, *it;
        int64_t timeout, *ids = NULL;
        char err[PROTO_ERRMSG_MAX];
        size_t n = 0;
        struct scheduler_wait *w;
        int rc;

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
                ids = calloc((size_t)cJSON_GetArraySize(jobs) + 1, sizeof(*ids));
                if (ids == NULL) {
                        request_fail(req, FERRY_ENOMEM, "out of memory");
                        return;
                }
                cJSON_ArrayForEach(it, jobs)
                {
                        if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
                            it->valuedouble > 9007199254740992.0 ||
                            it->valuedouble != (double)(int64_t)it->valuedouble) {
                                free(ids);
                                request_fail(req, FERRY_EINVAL,
                                             "field \"jobs\" must be an array of ids");
                                return;
                        }
                        ids[n++] = (int64_t)it->valuedouble;
                }
                if (n == 0) {
                        /* An empty list waits for nothing. */
                        free(ids);
                        wait_done(req, true, 0, 0);
                        return;
                }
                qsort(ids, n, sizeof(*ids), cmp_ids);
        }
        rc = scheduler_wait(req->d->scheduler, ids, n, timeout, wait_done, req, &w);
        free(ids);
        if (rc != 0) {
                request_fail(req, rc, "out of memory");
                return;
        }
        if (w != NULL) { /* not answered yet: cancellable when the client leaves */
                req->cancel = wait_cancel;
                req->cancel_data = w;
        }
}

/* ---- retry ---- */

static int retry_run(struct store *st, struct writer_op *op)
{
        struct write_req *w = (struct write_req *)op;
        int n = store_job_requeue(st, w->n);

        if (n < 0)
                return n;
        w->n = n;
        return 0;
}

static void retry_done(struct writer_op *op, int rc)
{
        struct write_req *w = (struct write_req *)op;
        struct request *req = w->req;
        bool all = w->b != NULL;
        int64_t id = w->e ? strtoll(w->e, NULL, 10) : -1;
        cJSON *rep;

        if (rc != 0) {
                request_fail(req, rc, "cannot update the queue");
        } else if (w->n == 0 && !all) {
                request_fail(req, FERRY_ENOTFOUND, "job %lld is not a failed job", (long long)id);
        } else {
                if (w->n > 0)
                        log_info("requeued %lld failed job%s", (long long)w->n,
                                 w->n == 1 ? "" : "s");
                scheduler_kick(req->d->scheduler);
                rep = request_ok(req);
                if (rep != NULL)
                        cJSON_AddNumberToObject(rep, "requeued", (double)w->n);
                request_reply(req, rep);
        }
        write_req_free(w);
}

static void op_retry(struct request *req)
{
        int64_t id;
        bool all;
        char err[PROTO_ERRMSG_MAX], num[32];
        struct write_req *w;

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
        w = write_req_new(req, retry_run, retry_done);
        snprintf(num, sizeof(num), "%lld", (long long)id);
        if (w == NULL || (all && (w->b = strdup("all")) == NULL) || (w->e = strdup(num)) == NULL) {
                if (w)
                        write_req_free(w);
                request_fail(req, FERRY_ENOMEM, "out of memory");
                return;
        }
        w->n = all ? -1 : id;
        writer_submit(req->d->writer, &w->op);
}

/* ---- cancel ---- */

static void cancel_done(void *data, const struct scheduler_cancel_result *r)
{
        struct request *req = data;
        long long id = (long long)r->job;
        cJSON *rep;

        req->cancel = NULL;
        req->cancel_data = NULL;
        if (r->rc == FERRY_ENOTFOUND && r->was[0] == '\0') {
                request_fail(req, FERRY_ENOTFOUND, "there is no job %lld", id);
                return;
        }
        if (r->rc == FERRY_ENOTFOUND) {
                request_fail(req, FERRY_ENOTFOUND, "job %lld is %s: nothing to cancel", id,
                             strcmp(r->was, "done") == 0 ? "delivered already" : r->was);
                return;
        }
        if (r->rc == FERRY_EBUSY) {
                request_fail(req, FERRY_EBUSY, "job %lld is being cancelled already", id);
                return;
        }
        if (r->rc != 0) {
                request_fail(req, r->rc, "cannot cancel: %s (see ferryd's log)",
                             ferry_strerror(r->rc));
                return;
        }
        rep = request_ok(req);
        if (rep != NULL) {
                cJSON_AddNumberToObject(rep, "job", (double)id);
                cJSON_AddStringToObject(rep, "name", r->name ? r->name : "");
                cJSON_AddStringToObject(rep, "was", r->was);
                if (r->note != NULL)
                        cJSON_AddStringToObject(rep, "remote", r->note);
                else
                        cJSON_AddNullToObject(rep, "remote");
        }
        request_reply(req, rep);
}

static void cancel_request_gone(struct request *req)
{
        scheduler_cancel_detach(req->cancel_data);
        request_drop(req);
}

static void op_cancel(struct request *req)
{
        struct scheduler_cancel *c;
        char err[PROTO_ERRMSG_MAX];
        int64_t id;
        int rc;

        CHECK_KEYS(req, "job");
        if (proto_get_int(req->msg, "job", true, -1, &id, err, sizeof(err)) != 0) {
                request_fail(req, FERRY_EINVAL, "%s", err);
                return;
        }
        if (id < 1) {
                request_fail(req, FERRY_EINVAL, "field \"job\" must be a job id (1 or more)");
                return;
        }
        rc = scheduler_cancel(req->d->scheduler, id, cancel_done, req, &c);
        if (rc != 0) {
                request_fail(req, rc, "out of memory");
                return;
        }
        if (c == NULL)
                return; /* answered already */
        /* Answered later: the cancel goes on if the client leaves meanwhile. */
        req->cancel = cancel_request_gone;
        req->cancel_data = c;
}

/* ---- pause, cache ---- */

static void op_pause(struct request *req)
{
        char err[PROTO_ERRMSG_MAX];
        bool paused;
        cJSON *rep;

        CHECK_KEYS(req, "paused");
        if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(req->msg, "paused"))) {
                request_fail(req, FERRY_EINVAL, "pause needs a boolean \"paused\"");
                return;
        }
        if (proto_get_bool(req->msg, "paused", false, &paused, err, sizeof(err)) != 0) {
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

/* ---- the table ---- */

/* The handler of each operation of proto.h's PROTO_OPS (hello is the connection's). */
static void (*const op_handlers[PROTO_OP_COUNT])(struct request *req) = {
    [PROTO_OP_EXPERIMENT_CREATE] = op_experiment_create,
    [PROTO_OP_ARTIFACT_LOG] = op_log,
    [PROTO_OP_ARTIFACT_BEGIN] = op_log_begin,
    [PROTO_OP_ARTIFACT_ADD] = op_log_add,
    [PROTO_OP_ARTIFACT_COMMIT] = op_log_commit,
    [PROTO_OP_ARTIFACT_ABORT] = op_log_abort,
    [PROTO_OP_STATUS] = op_status,
    [PROTO_OP_LS] = op_ls,
    [PROTO_OP_WAIT] = op_wait,
    [PROTO_OP_RETRY] = op_retry,
    [PROTO_OP_PAUSE] = op_pause,
    [PROTO_OP_CACHE] = op_cache,
    [PROTO_OP_RECOVER] = op_recover,
    [PROTO_OP_GET] = op_get,
    [PROTO_OP_DOWNLOAD_OPEN] = op_download_open,
    [PROTO_OP_DOWNLOAD_FILES] = op_download_files,
    [PROTO_OP_DOWNLOAD_CLOSE] = op_download_close,
    [PROTO_OP_CANCEL] = op_cancel,
};

void ops_dispatch(struct daemon *d, struct client *client, uint64_t id, const char *op, cJSON *msg,
                  int *fds, int nfds)
{
        struct client_pending *p = client_pending(client);
        struct request *req = calloc(1, sizeof(*req));
        int which;

        if (req == NULL) {
                for (int i = 0; i < nfds; i++)
                        close(fds[i]);
                free(fds);
                cJSON_Delete(msg);
                return;
        }
        req->d = d;
        req->client = client;
        req->id = id;
        req->msg = msg;
        req->fds = fds;
        req->nfds = nfds;
        client_ref(client);
        req->next = p->head;
        if (p->head)
                p->head->prev = req;
        p->head = req;
        p->count++;
        if (p->count > OPS_MAX_PENDING) {
                request_fail(req, FERRY_EBUSY,
                             "this connection has %d requests waiting for replies; read them "
                             "before sending more",
                             OPS_MAX_PENDING);
                return;
        }
        if (d->stopping) {
                request_fail(req, FERRY_EBUSY, "ferryd is stopping");
                return;
        }
        which = proto_op_from_name(op);
        if (which >= 0 && op_handlers[which] != NULL) {
                op_handlers[which](req);
                return;
        }
        {
                char shown[80];

                proto_sanitize(shown, sizeof(shown), op, strlen(op));
                request_fail(req, FERRY_EUNKNOWNOP, "unknown operation \"%s\"", shown);
        }
}
