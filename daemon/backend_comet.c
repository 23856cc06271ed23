/*
 * backend_comet.c — Comet's REST API (COMET-REST.md) over the HTTP engine.
 *
 * A delivery walks: register the experiment key (logger/add/run) -> upsert
 * the version -> upload each file and remote asset -> state CLOSED. Each
 * step's result is committed to the queue before the next step starts, so a
 * restart resumes exactly: the artifactVersionId as soon as the upsert
 * returns, each asset as soon as the server confirms it.
 *
 * Crash windows, and what ferry does about them (the choice that loses nothing):
 * - between the server's upsert and our commit (a round trip plus a commit:
 *   milliseconds): the upsert is sent again on restart. For an explicit
 *   version Comet's upsert returns the version the first attempt created
 *   (still OPEN, same experiment), so delivery resumes it; should a server
 *   refuse with 90399 instead, the job parks visibly with that message. An
 *   automatic version leaves one empty OPEN version behind on the server;
 * - between an asset's upload and our commit: the asset is uploaded again;
 *   every upload is sent with overwrite=true (logical paths are already unique
 *   within a version, so this only makes the retry idempotent);
 * - between CLOSED and our commit: the second close gets sdk_error_code 90401
 *   (state immutable), which counts as closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "backend.h"
#include "cache.h"
#include "daemon.h"
#include "ferry.h"
#include "http.h"
#include "job.h"
#include "log.h"
#include "scheduler.h"
#include "spool.h"
#include "store.h"
#include "util.h"

#define COMET_UPLOADS_PER_JOB 4
#define COMET_URL_MAX 4096

struct comet_delivery;
struct comet_fetch;

struct comet_backend {
        struct backend base;
        struct http_engine *http;
        char *api_key;
        char rest[1024];      /* https://host/api/rest/v2/ */
        char clientlib[1024]; /* https://host/clientlib/ */
        struct comet_delivery *deliveries;
        struct comet_fetch *fetches; /* downloads in flight, coalesced by cache key */
};

enum comet_step { STEP_REGISTER, STEP_UPSERT, STEP_ASSETS, STEP_CLOSE };

struct comet_delivery {
        struct comet_backend *cb;
        struct job *job;
        backend_deliver_cb *done;
        enum comet_step step;
        size_t next_asset; /* next asset to start */
        int inflight;      /* requests running for this delivery */
        bool failed;       /* a step failed: start nothing more */
        bool doomed;       /* an asset can never be delivered: the version goes to ERROR */
        bool error_sent;   /* the ERROR state change was sent */
        struct backend_result result;
        struct http_request *requests[COMET_UPLOADS_PER_JOB + 1]; /* for abort */
        struct comet_delivery *next;
};

/* One request of a delivery: which asset it carries (-1 for none). */
struct comet_call {
        struct comet_delivery *cd;
        int asset;
        int slot;
};

static void comet_delivery_advance(struct comet_delivery *cd);

/* ---- helpers ---- */

/* Derive the REST and clientlib roots from COMET_URL_OVERRIDE-style URLs. */
static void comet_roots(struct comet_backend *cb, const char *url)
{
        char base[1024];
        size_t n;

        snprintf(base, sizeof(base), "%s", url);
        n = strlen(base);
        while (n > 0 && base[n - 1] == '/')
                base[--n] = '\0';
        if (n >= 10 && strcmp(base + n - 10, "/clientlib") == 0)
                base[n - 10] = '\0';
        snprintf(cb->rest, sizeof(cb->rest), "%s/api/rest/v2/", base);
        snprintf(cb->clientlib, sizeof(cb->clientlib), "%s/clientlib/", base);
}

/* Append "&key=escaped(value)" (or "?key=" first) to url. */
static void url_param(char *url, size_t len, const char *key, const char *value)
{
        char *esc = curl_easy_escape(NULL, value, 0);
        size_t n = strlen(url);

        snprintf(url + n, len - n, "%c%s=%s", strchr(url, '?') ? '&' : '?', key, esc ? esc : "");
        curl_free(esc);
}

static struct http_request *comet_request(struct comet_backend *cb, const char *method,
                                          const char *url)
{
        struct http_request *req = http_request_new(method, url);

        if (req == NULL)
                return NULL;
        if (http_request_add_header(req, "Authorization", cb->api_key) != 0) {
                http_request_free(req);
                return NULL;
        }
        return req;
}

/*
 * Turn a failed response into a backend result: unreachable -> offline,
 * 408/429/5xx/transport -> transient, other 4xx -> permanent with the
 * server's msg and sdk_error_code.
 */
static void comet_result_from(struct backend_result *r, const char *what,
                              const struct http_response *resp)
{
        cJSON *body = resp->body_len ? cJSON_ParseWithLength(resp->body, resp->body_len) : NULL;
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(body, "msg");
        const cJSON *sdk = cJSON_GetObjectItemCaseSensitive(body, "sdk_error_code");
        enum http_outcome o = http_classify(resp);

        memset(r, 0, sizeof(*r));
        r->retry_after_ms = resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
        if (resp->unreachable)
                r->outcome = BACKEND_OFFLINE;
        else if (o == HTTP_TRANSIENT)
                r->outcome = BACKEND_TRANSIENT;
        else
                r->outcome = BACKEND_PERMANENT;
        if (cJSON_IsNumber(sdk) && sdk->valueint != 0)
                snprintf(r->code, sizeof(r->code), "%d", sdk->valueint);
        else if (resp->status > 0)
                snprintf(r->code, sizeof(r->code), "http_%ld", resp->status);
        else
                snprintf(r->code, sizeof(r->code), "%s", ferry_err_name(resp->err));
        if (resp->status > 0)
                snprintf(r->message, sizeof(r->message), "%s: HTTP %ld: %s%s%s", what, resp->status,
                         cJSON_IsString(msg) ? msg->valuestring
                                             : (resp->error[0] ? resp->error : "error"),
                         cJSON_IsNumber(sdk) && sdk->valueint ? " (sdk_error_code " : "",
                         cJSON_IsNumber(sdk) && sdk->valueint ? r->code : "");
        else
                snprintf(r->message, sizeof(r->message), "%s: %s", what,
                         resp->error[0] ? resp->error : "transfer failed");
        if (cJSON_IsNumber(sdk) && sdk->valueint != 0 && r->message[0] &&
            strlen(r->message) + 1 < sizeof(r->message))
                strcat(r->message, ")");
        cJSON_Delete(body);
}

static int sdk_error_code(const struct http_response *resp)
{
        cJSON *body = cJSON_ParseWithLength(resp->body, resp->body_len);
        const cJSON *sdk = cJSON_GetObjectItemCaseSensitive(body, "sdk_error_code");
        int code = cJSON_IsNumber(sdk) ? sdk->valueint : 0;

        cJSON_Delete(body);
        return code;
}

/* How strongly an outcome decides a delivery: offline, then permanent, then transient. */
static int outcome_rank(enum backend_outcome o)
{
        return o == BACKEND_OFFLINE     ? 3
               : o == BACKEND_PERMANENT ? 2
               : o == BACKEND_TRANSIENT ? 1
                                        : 0;
}

/*
 * Record a failed step. Several requests of one delivery may fail: the
 * strongest outcome wins (offline spends no attempt and pauses the queue; a
 * permanent refusal will not heal by retrying), and the longest Retry-After
 * is kept so that no request comes back before the server allowed it.
 */
static void comet_fail(struct comet_delivery *cd, const struct backend_result *r)
{
        int64_t retry_after = cd->failed && cd->result.retry_after_ms > r->retry_after_ms
                                  ? cd->result.retry_after_ms
                                  : r->retry_after_ms;

        if (!cd->failed || outcome_rank(r->outcome) > outcome_rank(cd->result.outcome))
                cd->result = *r;
        cd->result.retry_after_ms = retry_after;
        cd->failed = true;
}

static void comet_fail_msg(struct comet_delivery *cd, enum backend_outcome outcome,
                           const char *code, const char *msg)
{
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        r.outcome = outcome;
        r.retry_after_ms = -1;
        snprintf(r.code, sizeof(r.code), "%s", code);
        snprintf(r.message, sizeof(r.message), "%s", msg);
        comet_fail(cd, &r);
}

static void comet_delivery_finish(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct comet_delivery **pp;
        struct backend_result r;

        for (pp = &cb->deliveries; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == cd) {
                        *pp = cd->next;
                        break;
                }
        }
        if (cd->failed) {
                r = cd->result;
        } else {
                memset(&r, 0, sizeof(r));
                r.outcome = BACKEND_OK;
                r.retry_after_ms = -1;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "%s",
                         cd->job->assigned_version ? cd->job->assigned_version : "");
        }
        cd->done(&cb->base, cd->job, &r);
        free(cd);
}

static int comet_submit(struct comet_delivery *cd, struct http_request *req, int asset,
                        void (*done)(struct http_request *, const struct http_response *, void *))
{
        struct comet_call *call = calloc(1, sizeof(*call));
        int slot;

        for (slot = 0; slot < COMET_UPLOADS_PER_JOB + 1; slot++)
                if (cd->requests[slot] == NULL)
                        break;
        if (call == NULL || slot == COMET_UPLOADS_PER_JOB + 1) {
                free(call);
                http_request_free(req);
                return FERRY_ENOMEM;
        }
        call->cd = cd;
        call->asset = asset;
        call->slot = slot;
        if (http_engine_submit(cd->cb->http, req, done, call) != 0) {
                free(call);
                http_request_free(req);
                return FERRY_EINTERNAL;
        }
        cd->requests[slot] = req;
        cd->inflight++;
        return 0;
}

/* Common bookkeeping when a request of a delivery ends; returns its delivery. */
static struct comet_delivery *comet_call_end(void *data, int *asset)
{
        struct comet_call *call = data;
        struct comet_delivery *cd = call->cd;

        cd->requests[call->slot] = NULL;
        cd->inflight--;
        *asset = call->asset;
        free(call);
        return cd;
}

static cJSON *comet_parse_ok(const struct http_response *resp)
{
        cJSON *body = cJSON_ParseWithLength(resp->body, resp->body_len);

        if (!cJSON_IsObject(body)) {
                cJSON_Delete(body);
                return NULL;
        }
        return body;
}

/*
 * POST `body` (consumed) as JSON for delivery `cd`; `done` gets the answer.
 * A failure to build or submit the request fails the delivery.
 */
static void comet_post_json(struct comet_delivery *cd, const char *url, cJSON *body,
                            void (*done)(struct http_request *, const struct http_response *,
                                         void *))
{
        char *text = body ? cJSON_PrintUnformatted(body) : NULL;
        struct http_request *req = comet_request(cd->cb, "POST", url);

        cJSON_Delete(body);
        if (req == NULL || text == NULL ||
            http_request_set_body(req, "application/json", text, strlen(text)) != 0) {
                http_request_free(req);
                cJSON_free(text);
                comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                return;
        }
        cJSON_free(text);
        if (comet_submit(cd, req, -1, done) != 0)
                comet_fail_msg(cd, BACKEND_TRANSIENT, "internal", "cannot submit a request");
}

/* ---- step 1: register the experiment key ---- */

static void comet_register_cb(struct http_request *req, const struct http_response *resp,
                              void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct backend_result r;

        if (http_classify(resp) != HTTP_OK) {
                comet_result_from(&r, "registering the experiment", resp);
                comet_fail(cd, &r);
        } else {
                store_experiment_set_registered(cd->cb->base.d->store, cd->job->experiment);
                cd->job->experiment_registered = true;
                cd->step = STEP_UPSERT;
        }
        comet_delivery_advance(cd);
}

static void comet_register(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;
        char url[COMET_URL_MAX];
        cJSON *body = cJSON_CreateObject();

        snprintf(url, sizeof(url), "%slogger/add/run", cb->clientlib);
        cJSON_AddStringToObject(body, "apiKey", cb->api_key);
        cJSON_AddStringToObject(body, "experimentKey", job->experiment);
        cJSON_AddStringToObject(body, "projectName", job->project);
        cJSON_AddStringToObject(body, "teamName", job->workspace);
        cJSON_AddBoolToObject(body, "offline", 0);
        cJSON_AddNumberToObject(body, "local_timestamp", (double)util_now_ms());
        cJSON_AddStringToObject(body, "libVersion", "ferry-" FERRY_VERSION_STRING);
        if (job->experiment_name)
                cJSON_AddStringToObject(body, "experimentName", job->experiment_name);
        comet_post_json(cd, url, body, comet_register_cb);
}

/* ---- step 2: upsert the version ---- */

static void comet_upsert_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct job *job = cd->job;
        struct backend_result r;
        const cJSON *vid, *cur;
        cJSON *body;

        if (http_classify(resp) != HTTP_OK) {
                comet_result_from(&r, "creating the version", resp);
                comet_fail(cd, &r);
                comet_delivery_advance(cd);
                return;
        }
        body = comet_parse_ok(resp);
        vid = cJSON_GetObjectItemCaseSensitive(body, "artifactVersionId");
        cur = cJSON_GetObjectItemCaseSensitive(body, "currentVersion");
        if (!cJSON_IsString(vid) || vid->valuestring[0] == '\0') {
                comet_fail_msg(cd, BACKEND_TRANSIENT, "protocol_error",
                               "creating the version: the server's reply has no artifactVersionId");
        } else {
                free(job->remote_version_id);
                free(job->assigned_version);
                job->remote_version_id = strdup(vid->valuestring);
                job->assigned_version = cJSON_IsString(cur) ? strdup(cur->valuestring) : NULL;
                /* Committed before any upload starts: a restart never upserts again. */
                if (store_job_set_remote(cd->cb->base.d->store, job->id, job->remote_version_id,
                                         job->assigned_version) != 0)
                        comet_fail_msg(cd, BACKEND_TRANSIENT, "io_error",
                                       "cannot record the version id in the queue");
                else
                        cd->step = STEP_ASSETS;
                log_info("job %lld: %s version %s created (%s)", (long long)job->id, job->name,
                         job->assigned_version ? job->assigned_version : "?",
                         job->remote_version_id);
        }
        cJSON_Delete(body);
        comet_delivery_advance(cd);
}

static cJSON *json_or_null(const char *text)
{
        cJSON *v = text ? cJSON_Parse(text) : NULL;

        return v ? v : cJSON_CreateArray();
}

static void comet_upsert(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;
        char url[COMET_URL_MAX];
        cJSON *body = cJSON_CreateObject();

        snprintf(url, sizeof(url), "%swrite/artifacts/upsert", cb->rest);
        cJSON_AddStringToObject(body, "artifactName", job->name);
        cJSON_AddStringToObject(body, "artifactType", job->type);
        cJSON_AddStringToObject(body, "experimentKey", job->experiment);
        cJSON_AddStringToObject(body, "workspaceName", job->workspace);
        cJSON_AddStringToObject(body, "projectName", job->project);
        if (job->version)
                cJSON_AddStringToObject(body, "version", job->version);
        else
                cJSON_AddNullToObject(body, "version");
        cJSON_AddItemToObject(body, "alias", json_or_null(job->aliases));
        cJSON_AddItemToObject(body, "versionTags", json_or_null(job->tags));
        /* Comet wants the metadata dict as a compact JSON string. */
        if (job->metadata)
                cJSON_AddStringToObject(body, "versionMetadata", job->metadata);
        else
                cJSON_AddNullToObject(body, "versionMetadata");
        comet_post_json(cd, url, body, comet_upsert_cb);
}

/* ---- step 3: assets ---- */

static void comet_asset_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int idx;
        struct comet_delivery *cd = comet_call_end(data, &idx);
        struct job_asset *a = &cd->job->assets[idx];
        struct backend_result r;
        char what[1200];

        if (http_classify(resp) != HTTP_OK) {
                snprintf(what, sizeof(what), "uploading %s", a->logical_path);
                comet_result_from(&r, what, resp);
                comet_fail(cd, &r);
        } else if (store_asset_set_done(cd->cb->base.d->store, cd->job->id, a->idx) != 0) {
                comet_fail_msg(cd, BACKEND_TRANSIENT, "io_error",
                               "cannot record an uploaded asset in the queue");
        } else {
                a->done = true;
                if (!a->remote)
                        scheduler_account_bytes(cd->cb->base.d->scheduler, a->size);
        }
        comet_delivery_advance(cd);
}

static const char *extension_of(const char *lp)
{
        const char *base = strrchr(lp, '/');
        const char *dot;

        base = base ? base + 1 : lp;
        dot = strrchr(base, '.');
        return dot && dot != base ? dot + 1 : "";
}

static void comet_upload(struct comet_delivery *cd, struct job_asset *a)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;
        char url[COMET_URL_MAX];
        struct http_request *req;
        char *path = NULL;
        const char *base;
        int rc = 0;

        snprintf(url, sizeof(url), "%swrite/experiment/upload-asset", cb->rest);
        url_param(url, sizeof(url), "experimentKey", job->experiment);
        url_param(url, sizeof(url), "artifactVersionId", job->remote_version_id);
        url_param(url, sizeof(url), "fileName", a->logical_path);
        url_param(url, sizeof(url), "type", "asset");
        url_param(url, sizeof(url), "overwrite", "true");
        url_param(url, sizeof(url), "assetId", a->asset_id);
        if (a->remote)
                url_param(url, sizeof(url), "isRemote", "true");
        else
                url_param(url, sizeof(url), "extension", extension_of(a->logical_path));
        req = comet_request(cb, "POST", url);
        if (req == NULL) {
                comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                return;
        }
        if (a->remote) {
                rc = http_request_add_part_string(req, "link", a->uri);
        } else {
                path = spool_path(cb->base.d->spool, a->spool);
                base = strrchr(a->logical_path, '/');
                rc = path ? http_request_add_part_file(req, "file", path,
                                                       base ? base + 1 : a->logical_path)
                          : FERRY_ENOMEM;
                free(path);
                if (rc == FERRY_ENOTFOUND) {
                        http_request_free(req);
                        /* The snapshot is gone: this asset can never be delivered. */
                        comet_fail_msg(cd, BACKEND_PERMANENT, "not_found",
                                       "the spool snapshot of an asset is missing; the version "
                                       "was set to ERROR on Comet");
                        cd->doomed = true;
                        return;
                }
        }
        if (rc == 0 && a->metadata)
                rc = http_request_add_part_string(req, "metadata", a->metadata);
        if (rc != 0) {
                http_request_free(req);
                comet_fail_msg(cd, BACKEND_TRANSIENT, ferry_err_name(rc),
                               "cannot prepare an upload");
                return;
        }
        if (comet_submit(cd, req, (int)(a - job->assets), comet_asset_cb) != 0)
                comet_fail_msg(cd, BACKEND_TRANSIENT, "internal", "cannot submit a request");
}

/* ---- step 4: close ---- */

static void comet_close_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct backend_result r;

        if (http_classify(resp) != HTTP_OK) {
                /* 90401: the state is immutable — we closed it before a crash. */
                if (resp->status == 400 && sdk_error_code(resp) == 90401) {
                        log_info("job %lld: version was already closed", (long long)cd->job->id);
                } else {
                        comet_result_from(&r, "closing the version", resp);
                        comet_fail(cd, &r);
                }
        }
        cd->step = STEP_CLOSE + 1;
        comet_delivery_advance(cd);
}

/* Set the version's final state: CLOSED, or ERROR when it can never be completed. */
static void comet_set_state(struct comet_delivery *cd, const char *state,
                            void (*done)(struct http_request *, const struct http_response *,
                                         void *))
{
        struct comet_backend *cb = cd->cb;
        char url[COMET_URL_MAX];
        cJSON *body = cJSON_CreateObject();

        snprintf(url, sizeof(url), "%swrite/artifacts/state", cb->rest);
        cJSON_AddStringToObject(body, "artifactVersionId", cd->job->remote_version_id);
        cJSON_AddStringToObject(body, "experimentKey", cd->job->experiment);
        cJSON_AddStringToObject(body, "state", state);
        comet_post_json(cd, url, body, done);
}

static void comet_close_version(struct comet_delivery *cd)
{
        comet_set_state(cd, "CLOSED", comet_close_cb);
}

static void comet_error_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);

        if (http_classify(resp) != HTTP_OK)
                log_warn("job %lld: cannot set the version to ERROR: HTTP %ld %s",
                         (long long)cd->job->id, resp->status, resp->error);
        comet_delivery_advance(cd);
}

/* Start whatever the delivery's state allows; finish when nothing is left in flight. */
static void comet_delivery_advance(struct comet_delivery *cd)
{
        struct job *job = cd->job;

        if (!cd->failed) {
                switch (cd->step) {
                case STEP_REGISTER:
                        if (job->experiment_registered) {
                                cd->step = STEP_UPSERT;
                                comet_delivery_advance(cd);
                                return;
                        }
                        if (cd->inflight == 0)
                                comet_register(cd);
                        break;
                case STEP_UPSERT:
                        if (job->remote_version_id != NULL) {
                                cd->step = STEP_ASSETS;
                                comet_delivery_advance(cd);
                                return;
                        }
                        if (cd->inflight == 0)
                                comet_upsert(cd);
                        break;
                case STEP_ASSETS:
                        while (!cd->failed && cd->inflight < COMET_UPLOADS_PER_JOB &&
                               cd->next_asset < job->nassets) {
                                struct job_asset *a = &job->assets[cd->next_asset++];

                                if (!a->done)
                                        comet_upload(cd, a);
                        }
                        if (!cd->failed && cd->inflight == 0 && cd->next_asset >= job->nassets) {
                                cd->step = STEP_CLOSE;
                                comet_close_version(cd);
                        }
                        break;
                case STEP_CLOSE:
                        break;
                }
        }
        /* A version that can never be completed is marked ERROR (once) before the job parks. */
        if (cd->inflight == 0 && cd->failed && cd->doomed && !cd->error_sent &&
            job->remote_version_id != NULL) {
                cd->error_sent = true;
                comet_set_state(cd, "ERROR", comet_error_cb);
                if (cd->inflight > 0)
                        return;
        }
        if (cd->inflight == 0 && (cd->failed || cd->step > STEP_CLOSE))
                comet_delivery_finish(cd);
}

/* ---- the backend operations ---- */

static void comet_deliver(struct backend *be, struct job *job, backend_deliver_cb *done)
{
        struct comet_backend *cb = be->priv;
        struct comet_delivery *cd = calloc(1, sizeof(*cd));
        struct backend_result r;

        if (cd == NULL) {
                memset(&r, 0, sizeof(r));
                r.outcome = BACKEND_TRANSIENT;
                r.retry_after_ms = -1;
                snprintf(r.message, sizeof(r.message), "out of memory");
                done(be, job, &r);
                return;
        }
        cd->cb = cb;
        cd->job = job;
        cd->done = done;
        cd->step = STEP_REGISTER;
        cd->next = cb->deliveries;
        cb->deliveries = cd;
        comet_delivery_advance(cd);
}

struct comet_probe {
        struct comet_backend *cb;
        backend_probe_cb *done;
};

static void comet_probe_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_probe *p = data;
        char msg[512];

        /* Any answer at all means the server is reachable; failing requests retry on their own. */
        if (resp->unreachable || resp->cancelled || resp->status == 0) {
                snprintf(msg, sizeof(msg), "%s", resp->error[0] ? resp->error : "no answer");
                p->done(&p->cb->base, false, msg);
        } else {
                p->done(&p->cb->base, true, NULL);
        }
        free(p);
}

static void comet_probe(struct backend *be, backend_probe_cb *done)
{
        struct comet_backend *cb = be->priv;
        struct comet_probe *p = calloc(1, sizeof(*p));
        char url[COMET_URL_MAX];
        struct http_request *req;

        snprintf(url, sizeof(url), "%sisAlive/ver", cb->clientlib);
        req = http_request_new("GET", url);
        if (p == NULL || req == NULL) {
                free(p);
                http_request_free(req);
                done(be, false, "out of memory");
                return;
        }
        p->cb = cb;
        p->done = done;
        if (http_engine_submit(cb->http, req, comet_probe_cb, p) != 0) {
                free(p);
                http_request_free(req);
                done(be, false, "cannot submit the probe");
        }
}

static int comet_version_exists(struct backend *be, const char *workspace, const char *name,
                                const char *version)
{
        return 0; /* unknown until the upsert: Comet answers 90399 then */
}

static void comet_abort(struct backend *be)
{
        struct comet_backend *cb = be->priv;
        struct comet_delivery *cd;
        int i;

        for (cd = cb->deliveries; cd != NULL; cd = cd->next)
                for (i = 0; i < COMET_UPLOADS_PER_JOB + 1; i++)
                        if (cd->requests[i] != NULL)
                                http_engine_cancel(cb->http, cd->requests[i]);
}

static void comet_closed_cb(void *data)
{
        struct comet_backend *cb = data;

        free(cb->api_key);
        free(cb);
}

/* Cancelled look-ups and fetches still call back (before comet_closed_cb): keep cb till then. */
static void comet_close(struct backend *be)
{
        struct comet_backend *cb = be->priv;

        http_engine_close(cb->http, comet_closed_cb, cb);
}

/* ---- get: the version and files endpoints ---- */

struct comet_get {
        struct comet_backend *cb;
        backend_get_cb *cb_fn;
        void *data;
        cJSON *version; /* the result being built */
        char artifact_id[128];
        char version_id[128];
};

/* Map a failed look-up to a code and sentence. */
static int comet_get_error(const struct http_response *resp, const char *what, char *msg,
                           size_t len)
{
        struct backend_result r;
        int sdk = resp->status == 400 ? sdk_error_code(resp) : 0;

        comet_result_from(&r, what, resp);
        snprintf(msg, len, "%s", r.message);
        if (resp->unreachable)
                return FERRY_ECONNECT;
        if (sdk == 624523 || resp->status == 404)
                return FERRY_ENOTFOUND;
        if (sdk == 90402 || sdk == 90403) {
                snprintf(msg, len, "%s: the version is %s on Comet, not CLOSED yet", what,
                         sdk == 90402 ? "still OPEN (uploading)" : "in ERROR");
                return FERRY_ENOTREADY;
        }
        return FERRY_EBACKEND;
}

static void comet_get_end(struct comet_get *g, int code, const char *msg)
{
        if (code != 0) {
                cJSON_Delete(g->version);
                g->version = NULL;
        }
        g->cb_fn(g->data, code, msg, g->version);
        free(g);
}

static cJSON *parse_json_string(const cJSON *s)
{
        cJSON *v = cJSON_IsString(s) ? cJSON_Parse(s->valuestring) : NULL;

        return v ? v : cJSON_CreateNull();
}

static cJSON *dup_or(const cJSON *v, cJSON *fallback)
{
        if (v == NULL || cJSON_IsNull(v))
                return fallback;
        cJSON_Delete(fallback);
        return cJSON_Duplicate(v, 1);
}

static void comet_files_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_get *g = data;
        cJSON *body, *assets;
        const cJSON *files, *f;
        char msg[512];

        if (http_classify(resp) != HTTP_OK) {
                int code = comet_get_error(resp, "listing the version's files", msg, sizeof(msg));

                comet_get_end(g, code, msg);
                return;
        }
        body = comet_parse_ok(resp);
        files = cJSON_GetObjectItemCaseSensitive(body, "files");
        assets = cJSON_AddArrayToObject(g->version, "assets");
        cJSON_ArrayForEach(f, files)
        {
                cJSON *a = cJSON_CreateObject();
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "fileName");
                const cJSON *link = cJSON_GetObjectItemCaseSensitive(f, "link");
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(f, "assetId");

                if (!cJSON_IsString(name) || !cJSON_IsString(id)) {
                        cJSON_Delete(a);
                        continue;
                }
                cJSON_AddStringToObject(a, "logical_path", name->valuestring);
                cJSON_AddNumberToObject(
                    a, "size",
                    cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(f, "fileSize")));
                cJSON_AddBoolToObject(a, "remote",
                                      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "remote")));
                cJSON_AddItemToObject(a, "link", dup_or(link, cJSON_CreateNull()));
                cJSON_AddItemToObject(
                    a, "metadata",
                    parse_json_string(cJSON_GetObjectItemCaseSensitive(f, "metadata")));
                cJSON_AddStringToObject(a, "_asset_id", id->valuestring);
                cJSON_AddStringToObject(a, "_version_id", g->version_id);
                cJSON_AddItemToArray(assets, a);
        }
        cJSON_Delete(body);
        comet_get_end(g, 0, NULL);
}

static void comet_version_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_get *g = data;
        struct comet_backend *cb = g->cb;
        const cJSON *art, *vid, *aid;
        cJSON *body, *v;
        struct http_request *next;
        char url[COMET_URL_MAX], msg[512];

        if (http_classify(resp) != HTTP_OK) {
                int code = comet_get_error(resp, "looking up the version", msg, sizeof(msg));

                comet_get_end(g, code, msg);
                return;
        }
        body = comet_parse_ok(resp);
        art = cJSON_GetObjectItemCaseSensitive(body, "artifact");
        vid = cJSON_GetObjectItemCaseSensitive(body, "artifactVersionId");
        aid = cJSON_GetObjectItemCaseSensitive(art, "artifactId");
        if (!cJSON_IsString(vid) || !cJSON_IsString(aid)) {
                cJSON_Delete(body);
                comet_get_end(g, FERRY_EBACKEND, "Comet's version reply lacks its ids");
                return;
        }
        snprintf(g->version_id, sizeof(g->version_id), "%s", vid->valuestring);
        snprintf(g->artifact_id, sizeof(g->artifact_id), "%s", aid->valuestring);
        v = g->version = cJSON_CreateObject();
        cJSON_AddItemToObject(
            v, "workspace",
            dup_or(cJSON_GetObjectItemCaseSensitive(art, "workspaceName"), cJSON_CreateString("")));
        cJSON_AddStringToObject(v, "project", "");
        cJSON_AddItemToObject(
            v, "name",
            dup_or(cJSON_GetObjectItemCaseSensitive(art, "artifactName"), cJSON_CreateString("")));
        cJSON_AddItemToObject(
            v, "type",
            dup_or(cJSON_GetObjectItemCaseSensitive(art, "artifactType"), cJSON_CreateString("")));
        cJSON_AddItemToObject(
            v, "version",
            dup_or(cJSON_GetObjectItemCaseSensitive(body, "artifactVersion"), cJSON_CreateNull()));
        cJSON_AddItemToObject(
            v, "aliases",
            dup_or(cJSON_GetObjectItemCaseSensitive(body, "alias"), cJSON_CreateArray()));
        cJSON_AddItemToObject(
            v, "version_tags",
            dup_or(cJSON_GetObjectItemCaseSensitive(body, "tags"), cJSON_CreateArray()));
        cJSON_AddItemToObject(
            v, "artifact_tags",
            dup_or(cJSON_GetObjectItemCaseSensitive(art, "tags"), cJSON_CreateArray()));
        cJSON_AddItemToObject(
            v, "metadata", parse_json_string(cJSON_GetObjectItemCaseSensitive(body, "metadata")));
        cJSON_AddNumberToObject(
            v, "size", cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(body, "sizeInBytes")));
        cJSON_AddItemToObject(
            v, "experiment",
            dup_or(cJSON_GetObjectItemCaseSensitive(body, "experimentKey"), cJSON_CreateNull()));
        cJSON_AddItemToObject(
            v, "state",
            dup_or(cJSON_GetObjectItemCaseSensitive(body, "state"), cJSON_CreateString("CLOSED")));
        cJSON_AddBoolToObject(v, "uploaded", 1);
        cJSON_AddNullToObject(v, "job");
        cJSON_Delete(body);

        snprintf(url, sizeof(url), "%sartifacts/version/files", cb->rest);
        url_param(url, sizeof(url), "artifactId", g->artifact_id);
        url_param(url, sizeof(url), "versionId", g->version_id);
        next = comet_request(cb, "GET", url);
        if (next == NULL || http_engine_submit(cb->http, next, comet_files_cb, g) != 0) {
                http_request_free(next);
                comet_get_end(g, FERRY_ENOMEM, "cannot list the version's files");
        }
}

static void comet_get(struct backend *be, const char *workspace, const char *name,
                      const char *version_or_alias, backend_get_cb *cb_fn, void *data)
{
        struct comet_backend *cb = be->priv;
        struct comet_get *g = calloc(1, sizeof(*g));
        char url[COMET_URL_MAX];
        struct http_request *req;

        if (g == NULL) {
                cb_fn(data, FERRY_ENOMEM, "out of memory", NULL);
                return;
        }
        g->cb = cb;
        g->cb_fn = cb_fn;
        g->data = data;
        snprintf(url, sizeof(url), "%sartifacts/version", cb->rest);
        url_param(url, sizeof(url), "workspace", workspace);
        url_param(url, sizeof(url), "artifactName", name);
        if (version_or_alias)
                url_param(url, sizeof(url), "versionOrAlias", version_or_alias);
        req = comet_request(cb, "GET", url);
        if (req == NULL || http_engine_submit(cb->http, req, comet_version_cb, g) != 0) {
                http_request_free(req);
                comet_get_end(g, FERRY_ENOMEM, "cannot look up the version");
        }
}

/* ---- fetch: asset bytes into the node's cache, one transfer per asset ---- */

struct comet_fetch_waiter {
        backend_fetch_cb *cb;
        void *data;
        struct comet_fetch_waiter *next;
};

struct comet_fetch {
        struct comet_backend *cb;
        char key[300];   /* "<versionId>-<assetId>" */
        char tmp[4400];  /* the download in progress, inside the cache */
        char path[4400]; /* the cached blob once inserted */
        int code;
        char msg[512];
        uv_work_t work;
        struct comet_fetch_waiter *waiters;
        struct comet_fetch *next;
};

static void comet_fetch_end(struct comet_fetch *f)
{
        struct comet_fetch **pp;
        struct comet_fetch_waiter *w, *next;

        for (pp = &f->cb->fetches; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == f) {
                        *pp = f->next;
                        break;
                }
        }
        for (w = f->waiters; w != NULL; w = next) {
                next = w->next;
                w->cb(w->data, f->code, f->code ? f->msg : NULL, f->code ? NULL : f->path);
                free(w);
        }
        free(f);
}

static void comet_fetch_insert_work_cb(uv_work_t *work)
{
        struct comet_fetch *f = work->data;

        f->code = cache_insert(f->cb->base.d->cache, f->key, f->tmp, f->path, sizeof(f->path),
                               f->msg, sizeof(f->msg));
}

static void comet_fetch_insert_after_cb(uv_work_t *work, int status)
{
        struct comet_fetch *f = work->data;

        if (status != 0 && f->code == 0) {
                f->code = FERRY_EINTERNAL;
                snprintf(f->msg, sizeof(f->msg), "the cache insert was cancelled");
        }
        comet_fetch_end(f);
}

static void comet_fetch_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_fetch *f = data;
        struct backend_result r;

        if (http_classify(resp) != HTTP_OK) {
                comet_result_from(&r, "downloading an asset", resp);
                snprintf(f->msg, sizeof(f->msg), "%s", r.message);
                f->code = resp->unreachable     ? FERRY_ECONNECT
                          : resp->status == 404 ? FERRY_ENOTFOUND
                          : resp->status == 400 ? FERRY_ENOTFOUND
                                                : FERRY_EBACKEND;
                unlink(f->tmp);
                comet_fetch_end(f);
                return;
        }
        /* Hash and adopt on the thread pool: large files must not stall the loop. */
        f->work.data = f;
        if (uv_queue_work(f->cb->base.d->loop, &f->work, comet_fetch_insert_work_cb,
                          comet_fetch_insert_after_cb) != 0) {
                f->code = FERRY_EINTERNAL;
                snprintf(f->msg, sizeof(f->msg), "cannot queue the cache insert");
                unlink(f->tmp);
                comet_fetch_end(f);
        }
}

static void comet_fetch(struct backend *be, const cJSON *asset, backend_fetch_cb *cb_fn, void *data)
{
        struct comet_backend *cb = be->priv;
        const char *aid =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(asset, "_asset_id"));
        const char *vid =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(asset, "_version_id"));
        struct comet_fetch_waiter *w = calloc(1, sizeof(*w));
        struct comet_fetch *f;
        char key[300], path[4400], url[COMET_URL_MAX];
        struct http_request *req;

        if (w == NULL || aid == NULL || vid == NULL || strlen(aid) + strlen(vid) > 250 ||
            strchr(aid, '/') || strchr(vid, '/')) {
                free(w);
                cb_fn(data, FERRY_EBACKEND, "the asset has no usable id", NULL);
                return;
        }
        w->cb = cb_fn;
        w->data = data;
        snprintf(key, sizeof(key), "%s-%s", vid, aid);
        if (cache_lookup(be->d->cache, key, path, sizeof(path)) == 0) {
                free(w); /* cached: a local copy, no transfer */
                cb_fn(data, 0, NULL, path);
                return;
        }
        for (f = cb->fetches; f != NULL; f = f->next) {
                if (strcmp(f->key, key) == 0) { /* join the transfer in flight */
                        w->next = f->waiters;
                        f->waiters = w;
                        return;
                }
        }
        f = calloc(1, sizeof(*f));
        if (f == NULL || cache_temp_path(be->d->cache, f->tmp, sizeof(f->tmp)) != 0) {
                free(f);
                free(w);
                cb_fn(data, FERRY_EIO, "cannot prepare the cache", NULL);
                return;
        }
        f->cb = cb;
        snprintf(f->key, sizeof(f->key), "%s", key);
        f->waiters = w;
        snprintf(url, sizeof(url), "%sexperiment/asset/get-asset", cb->rest);
        url_param(url, sizeof(url), "assetId", aid);
        url_param(url, sizeof(url), "artifactVersionId", vid);
        req = comet_request(cb, "GET", url);
        if (req == NULL || http_request_set_output_file(req, f->tmp) != 0 ||
            http_engine_submit(cb->http, req, comet_fetch_cb, f) != 0) {
                http_request_free(req);
                free(f);
                free(w);
                cb_fn(data, FERRY_ENOMEM, "cannot start the download", NULL);
                return;
        }
        f->next = cb->fetches;
        cb->fetches = f;
}

static const struct backend_ops comet_ops = {
    .name = "comet",
    .deliver = comet_deliver,
    .probe = comet_probe,
    .version_exists = comet_version_exists,
    .get = comet_get,
    .fetch = comet_fetch,
    .abort = comet_abort,
    .close = comet_close,
};

int backend_comet_new(struct backend **out, struct daemon *d, char *err, size_t errlen)
{
        struct comet_backend *cb = calloc(1, sizeof(*cb));
        struct http_config hc;

        *out = NULL;
        if (d->cfg.comet_api_key[0] == '\0') {
                snprintf(err, errlen,
                         "the comet backend needs an API key: set COMET_API_KEY or api_key in "
                         "~/.comet.config");
                free(cb);
                return -1;
        }
        if (cb == NULL || (cb->api_key = strdup(d->cfg.comet_api_key)) == NULL) {
                snprintf(err, errlen, "out of memory");
                free(cb);
                return -1;
        }
        comet_roots(cb, d->cfg.comet_url);
        http_config_defaults(&hc);
        hc.max_transfers = d->cfg.max_transfers;
        hc.connect_timeout_s = (long)d->cfg.connect_timeout_s;
        hc.low_speed_time_s = (long)d->cfg.low_speed_time_s;
        hc.verify_tls = d->cfg.verify_tls;
        hc.ca_file = d->cfg.ca_file[0] ? d->cfg.ca_file : NULL;
        if (http_engine_new(&cb->http, d->loop, &hc) != 0) {
                snprintf(err, errlen, "cannot start the HTTP engine");
                free(cb->api_key);
                free(cb);
                return -1;
        }
        cb->base.ops = &comet_ops;
        cb->base.d = d;
        cb->base.priv = cb;
        *out = &cb->base;
        log_info("comet backend: %s", cb->rest);
        return 0;
}
