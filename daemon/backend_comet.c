/*
 * backend_comet.c — Comet's REST API (COMET-REST.md) over the HTTP engine.
 *
 * A delivery walks: register the experiment key (logger/add/run) -> upsert
 * the version -> upload each file and remote asset -> state CLOSED. The
 * queue commits each step's outcome (backend.h) before the next step that
 * depends on it starts: uploads wait for the artifactVersionId to be
 * recorded, and the close waits for every asset to be recorded, so a
 * restart resumes exactly.
 *
 * Delivery is proven, not assumed: a step counts as done only on Comet's
 * documented answer — HTTP 2xx, Content-Type application/json, a JSON object
 * with the fields the step needs. A web page (a wrong COMET_URL_OVERRIDE, a
 * proxy, a captive portal) or any other answer is a failure with a sentence
 * the user can act on, never a delivery.
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
 *
 * "Offline" means the server cannot be reached at all: resolving or
 * connecting fails. A request that connected and then broke (a reset, a
 * timeout) is a transient failure of that request — unless the liveness
 * probe, asked right then, cannot reach Comet either.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "backend.h"
#include "cache.h"
#include "config.h"
#include "ferry_base.h"
#include "http.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "s3sync.h"
#include "spool.h"
#include "util.h"

#define COMET_URL_MAX (64 * 1024) /* longer URLs are refused, never cut */
#define COMET_ID_MAX (16 * 1024)  /* longest id ferry takes from the server */
#define COMET_REGISTERED_CACHE 64 /* experiment keys known to be registered */

struct comet_delivery;
struct comet_fetch;

struct comet_backend {
        struct backend base;
        struct http_engine *http;
        char *api_key;
        char *rest;      /* https://host/api/rest/v2/ */
        char *clientlib; /* https://host/clientlib/ */
        int uploads_per_job;
        struct comet_delivery *deliveries;
        struct comet_fetch *fetches; /* downloads in flight, coalesced by cache key */
        char registered[COMET_REGISTERED_CACHE][51];
        int registered_next;
        void (*closed)(void *data);
        void *closed_data;
};

enum comet_step { STEP_SYNC, STEP_REGISTER, STEP_UPSERT, STEP_ASSETS, STEP_CLOSE, STEP_DONE };

/* One request of a delivery. */
struct comet_call {
        struct comet_delivery *cd;
        struct http_request *req;
        int asset; /* the asset it carries, or -1 */
        struct comet_call *prev, *next;
};

struct comet_delivery {
        struct comet_backend *cb;
        struct job *job;
        enum comet_step step;
        size_t next_asset; /* next asset to start */
        int inflight;      /* requests running */
        int committing;    /* sink confirmations pending */
        bool failed;       /* a step failed: start nothing more */
        bool doomed;       /* an asset can never be delivered: the version goes to ERROR */
        bool error_sent;   /* the ERROR state change was sent */
        bool probing;      /* asking isAlive whether a broken request means offline */
        bool finished;
        struct s3sync *sync; /* the listing step in progress, or NULL */
        struct backend_result result;
        struct comet_call *calls; /* running requests, for abort */
        struct comet_delivery *next;
};

static void comet_delivery_advance(struct comet_delivery *cd);

/* ---- helpers ---- */

/* A growing string; `oom` once an append failed. */
struct strbuf {
        char *s;
        size_t len, cap;
        bool oom;
};

static void sb_add(struct strbuf *b, const char *s, size_t n)
{
        if (b->oom)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                char *grown;

                while (cap < b->len + n + 1)
                        cap *= 2;
                grown = realloc(b->s, cap);
                if (grown == NULL) {
                        b->oom = true;
                        return;
                }
                b->s = grown;
                b->cap = cap;
        }
        memcpy(b->s + b->len, s, n);
        b->len += n;
        b->s[b->len] = '\0';
}

static void sb_str(struct strbuf *b, const char *s)
{
        sb_add(b, s, strlen(s));
}

/*
 * root + path + "?k=v&k=v" from NULL-terminated key/value pairs (a NULL value
 * skips its key), every value escaped. NULL when out of memory or longer than
 * COMET_URL_MAX: a URL is never cut.
 */
static char *comet_url(const char *root, const char *path, ...)
{
        struct strbuf b = {0};
        const char *key, *value;
        char sep = '?';
        va_list ap;

        sb_str(&b, root);
        sb_str(&b, path);
        va_start(ap, path);
        while ((key = va_arg(ap, const char *)) != NULL) {
                char *esc;

                value = va_arg(ap, const char *);
                if (value == NULL)
                        continue;
                esc = curl_easy_escape(NULL, value, (int)strlen(value));
                if (esc == NULL) {
                        b.oom = true;
                        break;
                }
                sb_add(&b, &sep, 1);
                sb_str(&b, key);
                sb_add(&b, "=", 1);
                sb_str(&b, esc);
                curl_free(esc);
                sep = '&';
        }
        va_end(ap);
        if (b.oom || b.len > COMET_URL_MAX) {
                free(b.s);
                return NULL;
        }
        return b.s;
}

/* Derive the REST and clientlib roots from COMET_URL_OVERRIDE-style URLs. */
static int comet_roots(struct comet_backend *cb, const char *url)
{
        size_t n = strlen(url);
        char *base = strdup(url);

        if (base == NULL)
                return -1;
        while (n > 0 && base[n - 1] == '/')
                base[--n] = '\0';
        if (n >= 10 && strcmp(base + n - 10, "/clientlib") == 0)
                base[n - 10] = '\0';
        cb->rest = comet_url(base, "/api/rest/v2/", NULL);
        cb->clientlib = comet_url(base, "/clientlib/", NULL);
        free(base);
        return cb->rest && cb->clientlib ? 0 : -1;
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

void backend_result_set(struct backend_result *r, enum backend_outcome outcome, const char *code,
                        const char *fmt, ...)
{
        va_list ap;

        r->outcome = outcome;
        r->retry_after_ms = -1;
        snprintf(r->code, sizeof(r->code), "%s", code ? code : "");
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof(r->message), fmt, ap);
        va_end(ap);
        proto_utf8_trim(r->message);
}

static bool is_json_type(const char *ctype)
{
        size_t n = strlen("application/json");

        return strncasecmp(ctype, "application/json", n) == 0 &&
               (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

/* What came back instead of Comet's JSON, for messages. */
static const char *answer_kind(const struct http_response *resp)
{
        const char *b = resp->body;

        while (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t')
                b++;
        if (strcasestr(resp->content_type, "html") != NULL || strncasecmp(b, "<!doctype", 9) == 0 ||
            strncasecmp(b, "<html", 5) == 0)
                return "an HTML page";
        if (resp->content_type[0] == '\0')
                return resp->body_len ? "a body without a content type" : "an empty body";
        return is_json_type(resp->content_type) ? "malformed JSON" : "a non-JSON body";
}

/*
 * Check a Comet answer. Return true with *body (a JSON object, caller
 * deletes) when it is Comet's success; else fill r with the failure:
 * cannot connect -> offline; a broken or slow transfer, 408, 429, 5xx ->
 * transient; other statuses and any answer that is not Comet's JSON ->
 * permanent with the server's msg and sdk_error_code, or what came instead.
 */
static bool comet_answer(const struct http_response *resp, const char *what,
                         struct backend_result *r, cJSON **body)
{
        enum http_outcome o = http_classify(resp);
        cJSON *json = NULL;
        const cJSON *msg, *sdk;
        char shown[300];

        *body = NULL;
        memset(r, 0, sizeof(*r));
        r->retry_after_ms = resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
        if (resp->cancelled) {
                backend_result_set(r, BACKEND_TRANSIENT, "cancelled", "%s: cancelled", what);
                r->cancelled = true;
                return false;
        }
        if (resp->err != 0) {
                proto_sanitize(shown, sizeof(shown), resp->error, strlen(resp->error));
                backend_result_set(r,
                                   resp->unreachable            ? BACKEND_OFFLINE
                                   : o == HTTP_TRANSIENT        ? BACKEND_TRANSIENT
                                   : resp->err == FERRY_ETOOBIG ? BACKEND_PERMANENT
                                                                : BACKEND_PERMANENT,
                                   ferry_err_name(resp->err), "%s: %s", what,
                                   resp->err == FERRY_ETOOBIG
                                       ? "the answer is larger than any Comet answer; check "
                                         "COMET_URL_OVERRIDE"
                                       : (shown[0] ? shown : "the transfer failed"));
                return false;
        }
        if (resp->body_len > 0 && is_json_type(resp->content_type))
                json = cJSON_ParseWithLength(resp->body, resp->body_len);
        if (o == HTTP_OK) {
                if (cJSON_IsObject(json)) {
                        *body = json;
                        return true;
                }
                cJSON_Delete(json);
                backend_result_set(r, BACKEND_PERMANENT, "not_comet",
                                   "%s: the server answered HTTP %ld with %s, not Comet's REST "
                                   "API: check COMET_URL_OVERRIDE",
                                   what, resp->status, answer_kind(resp));
                return false;
        }
        msg = cJSON_GetObjectItemCaseSensitive(json, "msg");
        sdk = cJSON_GetObjectItemCaseSensitive(json, "sdk_error_code");
        if (cJSON_IsString(msg))
                proto_sanitize(shown, sizeof(shown), msg->valuestring, strlen(msg->valuestring));
        else
                snprintf(shown, sizeof(shown), "%s%s", json ? "error" : answer_kind(resp),
                         json ? "" : " instead of Comet's JSON error");
        if (cJSON_IsNumber(sdk) && sdk->valueint != 0)
                backend_result_set(r, o == HTTP_TRANSIENT ? BACKEND_TRANSIENT : BACKEND_PERMANENT,
                                   NULL, "%s: HTTP %ld: %s (sdk_error_code %d)", what, resp->status,
                                   shown, sdk->valueint);
        else
                backend_result_set(r, o == HTTP_TRANSIENT ? BACKEND_TRANSIENT : BACKEND_PERMANENT,
                                   NULL, "%s: HTTP %ld: %s", what, resp->status, shown);
        if (cJSON_IsNumber(sdk) && sdk->valueint != 0)
                snprintf(r->code, sizeof(r->code), "%d", sdk->valueint);
        else
                snprintf(r->code, sizeof(r->code), "http_%ld", resp->status);
        r->retry_after_ms = resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
        cJSON_Delete(json);
        return false;
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
        bool cancelled = (cd->failed && cd->result.cancelled) || r->cancelled;

        if (!cd->failed || outcome_rank(r->outcome) > outcome_rank(cd->result.outcome))
                cd->result = *r;
        cd->result.retry_after_ms = retry_after;
        cd->result.cancelled = cancelled;
        cd->failed = true;
}

static void comet_fail_msg(struct comet_delivery *cd, enum backend_outcome outcome,
                           const char *code, const char *msg)
{
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        backend_result_set(&r, outcome, code, "%s", msg);
        comet_fail(cd, &r);
}

/* ---- requests of a delivery ---- */

static int comet_submit(struct comet_delivery *cd, struct http_request *req, int asset,
                        void (*done)(struct http_request *, const struct http_response *, void *))
{
        struct comet_call *call = calloc(1, sizeof(*call));

        if (call == NULL) {
                http_request_free(req);
                return FERRY_ENOMEM;
        }
        call->cd = cd;
        call->req = req;
        call->asset = asset;
        if (http_engine_submit(cd->cb->http, req, done, call) != 0) {
                free(call);
                http_request_free(req);
                return FERRY_EINTERNAL;
        }
        call->next = cd->calls;
        if (cd->calls)
                cd->calls->prev = call;
        cd->calls = call;
        cd->inflight++;
        return 0;
}

/* Bookkeeping when a request of a delivery ends; returns its delivery. */
static struct comet_delivery *comet_call_end(void *data, int *asset)
{
        struct comet_call *call = data;
        struct comet_delivery *cd = call->cd;

        if (call->prev)
                call->prev->next = call->next;
        else
                cd->calls = call->next;
        if (call->next)
                call->next->prev = call->prev;
        cd->inflight--;
        *asset = call->asset;
        free(call);
        return cd;
}

/*
 * POST `body` (consumed) as JSON to `url` (consumed) for delivery `cd`;
 * `done` gets the answer. A failure to build or submit fails the delivery.
 */
static void comet_post_json(struct comet_delivery *cd, char *url, cJSON *body,
                            void (*done)(struct http_request *, const struct http_response *,
                                         void *))
{
        char *text = body ? cJSON_PrintUnformatted(body) : NULL;
        struct http_request *req = url ? comet_request(cd->cb, "POST", url) : NULL;

        cJSON_Delete(body);
        free(url);
        if (req == NULL || text == NULL ||
            http_request_set_body(req, "application/json", text, strlen(text)) != 0) {
                http_request_free(req);
                cJSON_free(text);
                comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory",
                               "cannot build a request (out of memory, or a URL over 64 KiB)");
                return;
        }
        cJSON_free(text);
        if (comet_submit(cd, req, -1, done) != 0)
                comet_fail_msg(cd, BACKEND_TRANSIENT, "internal", "cannot submit a request");
}

/* ---- finishing ---- */

static void comet_delivery_free(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct comet_delivery **pp;

        for (pp = &cb->deliveries; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == cd) {
                        *pp = cd->next;
                        break;
                }
        }
        free(cd);
}

static void comet_report(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct backend_sink *sink = cb->base.env.sink;
        struct job *job = cd->job;
        struct backend_result r;

        if (cd->failed) {
                r = cd->result;
        } else {
                memset(&r, 0, sizeof(r));
                r.outcome = BACKEND_OK;
                r.retry_after_ms = -1;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "%s",
                         job->assigned_version ? job->assigned_version : "");
        }
        job->delivery = NULL;
        comet_delivery_free(cd);
        sink->finished(sink, job, &r);
}

static void comet_probe_after_failure_cb(struct http_request *req, const struct http_response *resp,
                                         void *data);

/* A transfer broke after connecting: offline only if Comet's liveness probe fails too. */
static bool comet_needs_probe(const struct comet_delivery *cd)
{
        return cd->failed && !cd->result.cancelled && cd->result.outcome == BACKEND_TRANSIENT &&
               strcmp(cd->result.code, "io_error") == 0;
}

static void comet_delivery_finish(struct comet_delivery *cd)
{
        char *url;
        struct http_request *req;

        if (cd->finished)
                return;
        if (comet_needs_probe(cd) && !cd->probing) {
                cd->probing = true;
                url = comet_url(cd->cb->clientlib, "isAlive/ver", NULL);
                req = url ? http_request_new("GET", url) : NULL;
                free(url);
                if (req != NULL &&
                    http_engine_submit(cd->cb->http, req, comet_probe_after_failure_cb, cd) == 0)
                        return;
                http_request_free(req);
        }
        cd->finished = true;
        comet_report(cd);
}

/* Is this Comet's own isAlive answer? (message filled when not) */
static bool comet_alive(const struct http_response *resp, char *msg, size_t len)
{
        struct backend_result r;
        cJSON *body;
        bool ok;

        if (!comet_answer(resp, "the liveness probe", &r, &body)) {
                snprintf(msg, len, "%s", r.message);
                return false;
        }
        ok = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(body, "version"));
        if (!ok)
                snprintf(msg, len,
                         "the liveness probe: the answer is JSON but not Comet's (no version); "
                         "check COMET_URL_OVERRIDE");
        cJSON_Delete(body);
        return ok;
}

static void comet_probe_after_failure_cb(struct http_request *req, const struct http_response *resp,
                                         void *data)
{
        struct comet_delivery *cd = data;
        char msg[512];

        if (!resp->cancelled && !comet_alive(resp, msg, sizeof(msg)) &&
            (resp->unreachable || resp->err != 0)) {
                cd->result.outcome = BACKEND_OFFLINE;
                log_debug("job %lld: Comet is unreachable too: %s", (long long)cd->job->id, msg);
        }
        cd->finished = true;
        comet_report(cd);
}

/* ---- step 0: list the s3:// assets to sync ---- */

static void comet_synced_cb(struct job *job, int rc)
{
        struct comet_delivery *cd = job->delivery;

        s3sync_recorded(cd->sync, rc);
}

static void comet_sync_done(struct job *job, const struct backend_result *r)
{
        struct comet_delivery *cd = job->delivery;

        cd->sync = NULL;
        if (r->outcome != BACKEND_OK)
                comet_fail(cd, r);
        else
                cd->step = STEP_REGISTER;
        comet_delivery_advance(cd);
}

/* ---- step 1: register the experiment key ---- */

static bool comet_known_registered(struct comet_backend *cb, const char *key)
{
        int i;

        for (i = 0; i < COMET_REGISTERED_CACHE; i++)
                if (strcmp(cb->registered[i], key) == 0)
                        return true;
        return false;
}

static void comet_remember_registered(struct comet_backend *cb, const char *key)
{
        if (strlen(key) >= sizeof(cb->registered[0]) || comet_known_registered(cb, key))
                return;
        snprintf(cb->registered[cb->registered_next], sizeof(cb->registered[0]), "%s", key);
        cb->registered_next = (cb->registered_next + 1) % COMET_REGISTERED_CACHE;
}

static void comet_register_cb(struct http_request *req, const struct http_response *resp,
                              void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct backend_sink *sink = cd->cb->base.env.sink;
        struct backend_result r;
        cJSON *body;

        if (!comet_answer(resp, "registering the experiment", &r, &body)) {
                comet_fail(cd, &r);
        } else {
                cJSON_Delete(body);
                cd->job->experiment_registered = true;
                comet_remember_registered(cd->cb, cd->job->experiment);
                sink->registered(sink, cd->job);
                cd->step = STEP_UPSERT;
        }
        comet_delivery_advance(cd);
}

static void comet_register(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;
        cJSON *body = cJSON_CreateObject();

        cJSON_AddStringToObject(body, "apiKey", cb->api_key);
        cJSON_AddStringToObject(body, "experimentKey", job->experiment);
        cJSON_AddStringToObject(body, "projectName", job->project);
        cJSON_AddStringToObject(body, "teamName", job->workspace);
        cJSON_AddBoolToObject(body, "offline", 0);
        cJSON_AddNumberToObject(body, "local_timestamp", (double)util_now_ms());
        cJSON_AddStringToObject(body, "libVersion", "ferry-" FERRY_VERSION_STRING);
        if (job->experiment_name)
                cJSON_AddStringToObject(body, "experimentName", job->experiment_name);
        comet_post_json(cd, comet_url(cb->clientlib, "logger/add/run", NULL), body,
                        comet_register_cb);
}

/* ---- step 2: upsert the version ---- */

static void comet_created_cb(struct job *job, int rc)
{
        struct comet_delivery *cd = job->delivery;

        cd->committing--;
        if (rc != 0)
                comet_fail_msg(cd, BACKEND_TRANSIENT, ferry_err_name(rc),
                               "cannot record the new version's id in the queue");
        else if (cd->step == STEP_UPSERT)
                cd->step = STEP_ASSETS;
        comet_delivery_advance(cd);
}

static void comet_upsert_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct backend_sink *sink = cd->cb->base.env.sink;
        struct job *job = cd->job;
        struct backend_result r;
        const cJSON *vid, *cur;
        cJSON *body;

        if (!comet_answer(resp, "creating the version", &r, &body)) {
                comet_fail(cd, &r);
                comet_delivery_advance(cd);
                return;
        }
        vid = cJSON_GetObjectItemCaseSensitive(body, "artifactVersionId");
        cur = cJSON_GetObjectItemCaseSensitive(body, "currentVersion");
        if (!cJSON_IsString(vid) || vid->valuestring[0] == '\0') {
                comet_fail_msg(cd, BACKEND_PERMANENT, "protocol_error",
                               "creating the version: Comet's answer has no artifactVersionId; "
                               "check COMET_URL_OVERRIDE");
        } else if (strlen(vid->valuestring) > COMET_ID_MAX) {
                comet_fail_msg(cd, BACKEND_PERMANENT, "protocol_error",
                               "creating the version: the server's artifactVersionId is longer "
                               "than 16 KiB; ferry refuses ids it could not send back whole");
        } else {
                free(job->remote_version_id);
                free(job->assigned_version);
                job->remote_version_id = strdup(vid->valuestring);
                job->assigned_version =
                    cJSON_IsString(cur) && cur->valuestring[0] && strlen(cur->valuestring) < 64
                        ? strdup(cur->valuestring)
                        : NULL;
                if (job->remote_version_id == NULL) {
                        comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                } else {
                        log_info("job %lld: %s version %s created", (long long)job->id, job->name,
                                 job->assigned_version ? job->assigned_version : "?");
                        /* Committed before any upload starts: a restart never upserts again. */
                        cd->committing++;
                        sink->created(sink, job, job->remote_version_id, job->assigned_version,
                                      comet_created_cb);
                }
        }
        cJSON_Delete(body);
        comet_delivery_advance(cd);
}

static cJSON *json_or_array(const char *text)
{
        cJSON *v = text ? cJSON_Parse(text) : NULL;

        return v ? v : cJSON_CreateArray();
}

static void comet_upsert(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;
        cJSON *body = cJSON_CreateObject();

        cJSON_AddStringToObject(body, "artifactName", job->name);
        cJSON_AddStringToObject(body, "artifactType", job->type);
        cJSON_AddStringToObject(body, "experimentKey", job->experiment);
        cJSON_AddStringToObject(body, "workspaceName", job->workspace);
        cJSON_AddStringToObject(body, "projectName", job->project);
        if (job->version)
                cJSON_AddStringToObject(body, "version", job->version);
        else
                cJSON_AddNullToObject(body, "version");
        cJSON_AddItemToObject(body, "alias", json_or_array(job->aliases));
        cJSON_AddItemToObject(body, "versionTags", json_or_array(job->tags));
        /* Comet wants the metadata dict as a compact JSON string. */
        if (job->metadata)
                cJSON_AddStringToObject(body, "versionMetadata", job->metadata);
        else
                cJSON_AddNullToObject(body, "versionMetadata");
        comet_post_json(cd, comet_url(cb->rest, "write/artifacts/upsert", NULL), body,
                        comet_upsert_cb);
}

/* ---- step 3: assets ---- */

static void comet_asset_recorded_cb(struct job *job, int rc)
{
        struct comet_delivery *cd = job->delivery;

        cd->committing--;
        if (rc != 0)
                comet_fail_msg(cd, BACKEND_TRANSIENT, ferry_err_name(rc),
                               "cannot record an uploaded asset in the queue");
        comet_delivery_advance(cd);
}

static void comet_asset_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int idx;
        struct comet_delivery *cd = comet_call_end(data, &idx);
        struct backend_sink *sink = cd->cb->base.env.sink;
        struct job_asset *a = &cd->job->assets[idx];
        struct backend_result r;
        char what[300];
        cJSON *body;

        proto_sanitize(what, sizeof(what), a->logical_path, strlen(a->logical_path));
        if (!comet_answer(resp, "uploading an asset", &r, &body)) {
                char msg[sizeof(r.message)], code[sizeof(r.code)];

                snprintf(msg, sizeof(msg), "%s", r.message);
                snprintf(code, sizeof(code), "%s", r.code);
                backend_result_set(&r, r.outcome, code, "%s (%s)", msg, what);
                r.retry_after_ms = resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
                r.cancelled = resp->cancelled;
                comet_fail(cd, &r);
        } else {
                cJSON_Delete(body);
                a->done = true;
                if (!a->remote)
                        sink->sent(sink, a->size);
                cd->committing++;
                sink->asset_done(sink, cd->job, a->idx, comet_asset_recorded_cb);
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
        struct http_request *req;
        const char *base;
        char *url;
        int rc = 0, fd;

        url = comet_url(cb->rest, "write/experiment/upload-asset", "experimentKey", job->experiment,
                        "artifactVersionId", job->remote_version_id, "fileName", a->logical_path,
                        "type", "asset", "overwrite", "true", "assetId", a->asset_id,
                        a->remote ? "isRemote" : "extension",
                        a->remote ? "true" : extension_of(a->logical_path), NULL);
        if (url == NULL) {
                comet_fail_msg(cd, BACKEND_PERMANENT, "invalid_argument",
                               "cannot build the upload's URL: it would be longer than 64 KiB");
                return;
        }
        req = comet_request(cb, "POST", url);
        free(url);
        if (req == NULL) {
                comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                return;
        }
        if (a->remote) {
                rc = http_request_add_part_string(req, "link", a->uri);
        } else {
                fd = spool_open_file(cb->base.env.spool, a->spool);
                if (fd == -ENOENT) {
                        http_request_free(req);
                        /* The snapshot is gone: this asset can never be delivered. */
                        comet_fail_msg(cd, BACKEND_PERMANENT, "not_found",
                                       "the spool snapshot of an asset is missing; the version "
                                       "was set to ERROR on Comet");
                        cd->doomed = true;
                        return;
                }
                base = strrchr(a->logical_path, '/');
                rc = fd < 0 ? FERRY_EIO
                            : http_request_add_part_fd(req, "file", fd, a->size,
                                                       base ? base + 1 : a->logical_path);
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
        cJSON *body;

        if (comet_answer(resp, "closing the version", &r, &body)) {
                cJSON_Delete(body);
                cd->step = STEP_DONE;
        } else if (resp->status == 400 && sdk_error_code(resp) == 90401) {
                /* 90401: the state is immutable — we closed it before a crash. */
                log_info("job %lld: version was already closed", (long long)cd->job->id);
                cd->step = STEP_DONE;
        } else {
                comet_fail(cd, &r);
        }
        comet_delivery_advance(cd);
}

/* Set the version's final state: CLOSED, or ERROR when it can never be completed. */
static void comet_set_state(struct comet_delivery *cd, const char *state,
                            void (*done)(struct http_request *, const struct http_response *,
                                         void *))
{
        struct comet_backend *cb = cd->cb;
        cJSON *body = cJSON_CreateObject();

        cJSON_AddStringToObject(body, "artifactVersionId", cd->job->remote_version_id);
        cJSON_AddStringToObject(body, "experimentKey", cd->job->experiment);
        cJSON_AddStringToObject(body, "state", state);
        comet_post_json(cd, comet_url(cb->rest, "write/artifacts/state", NULL), body, done);
}

static void comet_error_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        int asset;
        struct comet_delivery *cd = comet_call_end(data, &asset);
        struct backend_result r;
        cJSON *body;

        if (comet_answer(resp, "setting the version to ERROR", &r, &body))
                cJSON_Delete(body);
        else
                log_warn("job %lld: %s", (long long)cd->job->id, r.message);
        comet_delivery_advance(cd);
}

/* Start whatever the delivery's state allows; finish when nothing is left in flight. */
static void comet_delivery_advance(struct comet_delivery *cd)
{
        struct comet_backend *cb = cd->cb;
        struct job *job = cd->job;

        if (!cd->failed) {
                switch (cd->step) {
                case STEP_SYNC:
                        if (cd->sync != NULL)
                                break; /* listing */
                        if (!s3sync_needed(job)) {
                                cd->step = STEP_REGISTER;
                                comet_delivery_advance(cd);
                                return;
                        }
                        cd->sync = s3sync_start(cb->base.env.s3, cb->base.env.sink, job,
                                                comet_synced_cb, comet_sync_done);
                        if (cd->sync == NULL)
                                comet_fail_msg(cd, BACKEND_TRANSIENT, "out_of_memory",
                                               "cannot start listing (out of memory)");
                        break;
                case STEP_REGISTER:
                        if (job->experiment_registered ||
                            comet_known_registered(cb, job->experiment)) {
                                cd->step = STEP_UPSERT;
                                comet_delivery_advance(cd);
                                return;
                        }
                        if (cd->inflight == 0)
                                comet_register(cd);
                        break;
                case STEP_UPSERT:
                        if (job->remote_version_id != NULL && cd->committing == 0) {
                                cd->step = STEP_ASSETS;
                                comet_delivery_advance(cd);
                                return;
                        }
                        if (cd->inflight == 0 && cd->committing == 0)
                                comet_upsert(cd);
                        break;
                case STEP_ASSETS:
                        while (!cd->failed && cd->inflight < cb->uploads_per_job &&
                               cd->next_asset < job->nassets) {
                                struct job_asset *a = &job->assets[cd->next_asset++];

                                if (!a->done)
                                        comet_upload(cd, a);
                        }
                        if (!cd->failed && cd->inflight == 0 && cd->committing == 0 &&
                            cd->next_asset >= job->nassets) {
                                cd->step = STEP_CLOSE;
                                comet_set_state(cd, "CLOSED", comet_close_cb);
                        }
                        break;
                case STEP_CLOSE:
                case STEP_DONE:
                        break;
                }
        }
        /* A version that can never be completed is marked ERROR (once) before the job parks. */
        if (cd->inflight == 0 && cd->committing == 0 && cd->failed && cd->doomed &&
            !cd->error_sent && job->remote_version_id != NULL && !cd->result.cancelled) {
                cd->error_sent = true;
                comet_set_state(cd, "ERROR", comet_error_cb);
                if (cd->inflight > 0)
                        return;
        }
        if (cd->inflight == 0 && cd->committing == 0 && cd->sync == NULL &&
            (cd->failed || cd->step == STEP_DONE))
                comet_delivery_finish(cd);
}

/* ---- the backend operations ---- */

static void comet_deliver(struct backend *be, struct job *job)
{
        struct comet_backend *cb = be->priv;
        struct comet_delivery *cd = calloc(1, sizeof(*cd));
        struct backend_result r;

        if (cd == NULL) {
                memset(&r, 0, sizeof(r));
                backend_result_set(&r, BACKEND_TRANSIENT, "out_of_memory", "out of memory");
                be->env.sink->finished(be->env.sink, job, &r);
                return;
        }
        cd->cb = cb;
        cd->job = job;
        cd->step = STEP_SYNC;
        cd->next = cb->deliveries;
        cb->deliveries = cd;
        job->delivery = cd;
        comet_delivery_advance(cd);
}

struct comet_probe {
        struct comet_backend *cb;
        void (*done)(struct backend *be, bool online, const char *message);
};

static void comet_probe_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_probe *p = data;
        char msg[512];

        /* Only Comet's own answer counts: a web page on that address is not Comet. */
        if (comet_alive(resp, msg, sizeof(msg)))
                p->done(&p->cb->base, true, NULL);
        else
                p->done(&p->cb->base, false, msg);
        free(p);
}

static void comet_probe(struct backend *be,
                        void (*done)(struct backend *be, bool online, const char *message))
{
        struct comet_backend *cb = be->priv;
        struct comet_probe *p = calloc(1, sizeof(*p));
        char *url = comet_url(cb->clientlib, "isAlive/ver", NULL);
        struct http_request *req = url ? http_request_new("GET", url) : NULL;

        free(url);
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
        struct comet_call *call;

        for (cd = cb->deliveries; cd != NULL; cd = cd->next) {
                s3sync_cancel(cd->sync);
                for (call = cd->calls; call != NULL; call = call->next)
                        http_engine_cancel(cb->http, call->req);
        }
}

/* `ferry cancel` of a running delivery: stop its requests; finished() comes, cancelled. */
static void comet_cancel(struct backend *be, struct job *job)
{
        struct comet_backend *cb = be->priv;
        struct comet_delivery *cd = job->delivery;
        struct comet_call *call;
        struct backend_result r;

        /* Closing is its last step: a version being closed completes rather than half-stop. */
        if (cd == NULL || cd->finished || cd->step >= STEP_CLOSE)
                return;
        memset(&r, 0, sizeof(r));
        backend_result_set(&r, BACKEND_TRANSIENT, "cancelled", "cancelled by `ferry cancel`");
        r.cancelled = true;
        comet_fail(cd, &r);
        /* Their callbacks come later (deferred), each ending its call. An upsert in flight
         * may create the version: its answer is awaited, so that the version is recorded
         * and then set to ERROR instead of staying OPEN on Comet unknown to the queue. */
        if (cd->step != STEP_UPSERT)
                for (call = cd->calls; call != NULL; call = call->next)
                        http_engine_cancel(cb->http, call->req);
        if (cd->inflight == 0 && cd->committing == 0 && !cd->probing)
                comet_delivery_advance(cd);
}

struct comet_abandon {
        void (*done)(void *data, const char *note);
        void *data;
        char id[80]; /* the artifactVersionId, shortened for messages */
};

static void comet_abandon_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct comet_abandon *a = data;
        struct backend_result r;
        char note[800];
        cJSON *body;

        if (comet_answer(resp, "setting the version to ERROR", &r, &body)) {
                cJSON_Delete(body);
                snprintf(note, sizeof(note), "its version on Comet (%s) was set to ERROR", a->id);
        } else if (resp->status == 400 && sdk_error_code(resp) == 90401) {
                snprintf(note, sizeof(note),
                         "its version on Comet (%s) was closed or in ERROR already (its state "
                         "cannot change): left as it is",
                         a->id);
        } else {
                snprintf(note, sizeof(note),
                         "its version on Comet (%s) stays OPEN: setting it to ERROR failed (%s); "
                         "delete it in Comet's UI",
                         a->id, r.message);
        }
        proto_utf8_trim(note);
        a->done(a->data, note);
        free(a);
}

/* A cancelled job's version exists on Comet (OPEN): set it to ERROR, once, best effort. */
static void comet_abandon(struct backend *be, struct job *job,
                          void (*done)(void *data, const char *note), void *data)
{
        struct comet_backend *cb = be->priv;
        struct comet_abandon *a = calloc(1, sizeof(*a));
        cJSON *body = cJSON_CreateObject();
        char *url = comet_url(cb->rest, "write/artifacts/state", NULL), *text = NULL;
        struct http_request *req = url ? comet_request(cb, "POST", url) : NULL;

        free(url);
        if (body != NULL) {
                cJSON_AddStringToObject(body, "artifactVersionId", job->remote_version_id);
                cJSON_AddStringToObject(body, "experimentKey", job->experiment);
                cJSON_AddStringToObject(body, "state", "ERROR");
                text = cJSON_PrintUnformatted(body);
        }
        cJSON_Delete(body);
        if (a == NULL || req == NULL || text == NULL ||
            http_request_set_body(req, "application/json", text, strlen(text)) != 0) {
                free(a);
                http_request_free(req);
                cJSON_free(text);
                done(data, "its version on Comet stays OPEN: ferryd could not build the request "
                           "to set it to ERROR (out of memory)");
                return;
        }
        cJSON_free(text);
        a->done = done;
        a->data = data;
        snprintf(a->id, sizeof(a->id), "%.64s%s", job->remote_version_id,
                 strlen(job->remote_version_id) > 64 ? "..." : "");
        if (http_engine_submit(cb->http, req, comet_abandon_cb, a) != 0) {
                http_request_free(req);
                free(a);
                done(data, "its version on Comet stays OPEN: ferryd is stopping and could not "
                           "set it to ERROR; delete it in Comet's UI");
        }
}

static void comet_closed_cb(void *data)
{
        struct comet_backend *cb = data;
        void (*closed)(void *) = cb->closed;
        void *closed_data = cb->closed_data;

        free(cb->api_key);
        free(cb->rest);
        free(cb->clientlib);
        free(cb);
        if (closed)
                closed(closed_data);
}

/* Cancelled look-ups and fetches still call back (before comet_closed_cb): keep cb till then. */
static void comet_close(struct backend *be, void (*closed)(void *data), void *data)
{
        struct comet_backend *cb = be->priv;

        cb->closed = closed;
        cb->closed_data = data;
        http_engine_close(cb->http, comet_closed_cb, cb);
}

/* ---- get: the version and files endpoints ---- */

struct comet_get {
        struct comet_backend *cb;
        backend_get_cb *cb_fn;
        void *data;
        cJSON *version; /* the result being built */
        char *artifact_id;
        char *version_id;
};

/* Map a failed look-up to a code and sentence. */
static int comet_get_error(const struct http_response *resp, const struct backend_result *r,
                           const char *what, char *msg, size_t len)
{
        int sdk = resp->status == 400 ? sdk_error_code(resp) : 0;

        snprintf(msg, len, "%s", r->message);
        if (r->outcome == BACKEND_OFFLINE)
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
        free(g->artifact_id);
        free(g->version_id);
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
        struct backend_result r;
        cJSON *body, *assets;
        const cJSON *files, *f;
        char msg[512];

        if (!comet_answer(resp, "listing the version's files", &r, &body)) {
                int code =
                    comet_get_error(resp, &r, "listing the version's files", msg, sizeof(msg));

                comet_get_end(g, code, msg);
                return;
        }
        files = cJSON_GetObjectItemCaseSensitive(body, "files");
        if (!cJSON_IsArray(files)) {
                cJSON_Delete(body);
                comet_get_end(g, FERRY_EBACKEND,
                              "listing the version's files: Comet's answer has no files list");
                return;
        }
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
        struct backend_result r;
        const cJSON *art, *vid, *aid;
        cJSON *body, *v;
        struct http_request *next;
        char msg[512], *url;

        if (!comet_answer(resp, "looking up the version", &r, &body)) {
                int code = comet_get_error(resp, &r, "looking up the version", msg, sizeof(msg));

                comet_get_end(g, code, msg);
                return;
        }
        art = cJSON_GetObjectItemCaseSensitive(body, "artifact");
        vid = cJSON_GetObjectItemCaseSensitive(body, "artifactVersionId");
        aid = cJSON_GetObjectItemCaseSensitive(art, "artifactId");
        if (!cJSON_IsString(vid) || !cJSON_IsString(aid)) {
                cJSON_Delete(body);
                comet_get_end(g, FERRY_EBACKEND, "Comet's version reply lacks its ids");
                return;
        }
        g->version_id = strdup(vid->valuestring);
        g->artifact_id = strdup(aid->valuestring);
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
        if (g->version_id == NULL || g->artifact_id == NULL) {
                comet_get_end(g, FERRY_ENOMEM, "out of memory");
                return;
        }
        url = comet_url(cb->rest, "artifacts/version/files", "artifactId", g->artifact_id,
                        "versionId", g->version_id, NULL);
        next = url ? comet_request(cb, "GET", url) : NULL;
        free(url);
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
        struct http_request *req;
        char *url;

        if (g == NULL) {
                cb_fn(data, FERRY_ENOMEM, "out of memory", NULL);
                return;
        }
        g->cb = cb;
        g->cb_fn = cb_fn;
        g->data = data;
        url = comet_url(cb->rest, "artifacts/version", "workspace", workspace, "artifactName", name,
                        "versionOrAlias", version_or_alias, NULL);
        req = url ? comet_request(cb, "GET", url) : NULL;
        free(url);
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
        char key[65];    /* SHA-256 of "<versionId>\n<assetId>" */
        char tmp[4400];  /* the download in progress, inside the cache */
        char path[4400]; /* the cached blob once inserted */
        int64_t size;    /* the size Comet listed, or -1 */
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
        struct stat st;

        if (f->size >= 0 && (stat(f->tmp, &st) != 0 || st.st_size != f->size)) {
                f->code = FERRY_EBACKEND;
                snprintf(f->msg, sizeof(f->msg),
                         "the server sent %lld bytes for an asset Comet lists with %lld",
                         (long long)st.st_size, (long long)f->size);
                unlink(f->tmp);
                return;
        }
        f->code = cache_insert(f->cb->base.env.cache, f->key, f->tmp, f->path, sizeof(f->path),
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
        cJSON *body;

        if (http_classify(resp) != HTTP_OK || strcasestr(resp->content_type, "html") != NULL) {
                if (http_classify(resp) == HTTP_OK) {
                        snprintf(f->msg, sizeof(f->msg),
                                 "downloading an asset: the server answered with an HTML page, "
                                 "not the asset's bytes: check COMET_URL_OVERRIDE");
                        f->code = FERRY_EBACKEND;
                } else {
                        comet_answer(resp, "downloading an asset", &r, &body);
                        cJSON_Delete(body);
                        snprintf(f->msg, sizeof(f->msg), "%s", r.message);
                        f->code = resp->unreachable                            ? FERRY_ECONNECT
                                  : resp->status == 404 || resp->status == 400 ? FERRY_ENOTFOUND
                                                                               : FERRY_EBACKEND;
                }
                unlink(f->tmp);
                comet_fetch_end(f);
                return;
        }
        /* Check, hash and adopt on the thread pool: large files must not stall the loop. */
        f->work.data = f;
        if (uv_queue_work(f->cb->base.env.loop, &f->work, comet_fetch_insert_work_cb,
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
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(asset, "size");
        struct comet_fetch_waiter *w = calloc(1, sizeof(*w));
        struct comet_fetch *f;
        char key[65], path[4400], *url, *both;
        struct http_request *req;
        size_t n;

        if (w == NULL || aid == NULL || vid == NULL) {
                free(w);
                cb_fn(data, FERRY_EBACKEND, "the asset has no usable id", NULL);
                return;
        }
        w->cb = cb_fn;
        w->data = data;
        n = strlen(vid) + strlen(aid) + 2;
        both = malloc(n);
        if (both == NULL) {
                free(w);
                cb_fn(data, FERRY_ENOMEM, "out of memory", NULL);
                return;
        }
        snprintf(both, n, "%s\n%s", vid, aid);
        util_sha256_hex(both, strlen(both), key);
        free(both);
        if (cache_lookup(be->env.cache, key, path, sizeof(path)) == 0) {
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
        if (f == NULL || cache_temp_path(be->env.cache, f->tmp, sizeof(f->tmp)) != 0) {
                free(f);
                free(w);
                cb_fn(data, FERRY_EIO, "cannot prepare the cache", NULL);
                return;
        }
        f->cb = cb;
        f->size = cJSON_IsNumber(size) && size->valuedouble >= 0 ? (int64_t)size->valuedouble : -1;
        snprintf(f->key, sizeof(f->key), "%s", key);
        f->waiters = w;
        url = comet_url(cb->rest, "experiment/asset/get-asset", "assetId", aid, "artifactVersionId",
                        vid, NULL);
        req = url ? comet_request(cb, "GET", url) : NULL;
        free(url);
        if (req != NULL && f->size >= 0)
                http_request_set_expected_size(req, f->size);
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
    .cancel = comet_cancel,
    .abandon = comet_abandon,
    .close = comet_close,
};

int backend_comet_new(struct backend **out, const struct backend_env *env, char *err, size_t errlen)
{
        const struct config *cfg = env->cfg;
        struct comet_backend *cb;
        struct http_config hc;

        *out = NULL;
        if (cfg->comet_api_key[0] == '\0') {
                snprintf(err, errlen,
                         "the comet backend needs an API key: set COMET_API_KEY or api_key in "
                         "~/.comet.config");
                return -1;
        }
        cb = calloc(1, sizeof(*cb));
        if (cb == NULL || (cb->api_key = strdup(cfg->comet_api_key)) == NULL ||
            comet_roots(cb, cfg->comet_url) != 0) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        http_config_defaults(&hc);
        hc.max_transfers = cfg->max_transfers;
        hc.connect_timeout_s = (long)cfg->connect_timeout_s;
        hc.low_speed_time_s = (long)cfg->low_speed_time_s;
        hc.low_speed_limit = (long)cfg->low_speed_limit;
        hc.deadline_base_s = (long)cfg->deadline_base_s;
        hc.min_rate_bps = (long)cfg->min_rate_bps;
        hc.verify_tls = cfg->verify_tls;
        hc.ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL;
        cb->uploads_per_job = cfg->max_transfers;
        if (http_engine_new(&cb->http, env->loop, &hc) != 0) {
                snprintf(err, errlen, "cannot start the HTTP engine");
                goto fail;
        }
        cb->base.ops = &comet_ops;
        cb->base.env = *env;
        cb->base.priv = cb;
        *out = &cb->base;
        log_info("comet backend: %s", cb->rest);
        return 0;
fail:
        if (cb) {
                free(cb->api_key);
                free(cb->rest);
                free(cb->clientlib);
                free(cb);
        }
        return -1;
}
