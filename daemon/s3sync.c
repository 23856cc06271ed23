/* s3sync.c — the listing step of a delivery (see s3sync.h). */
#include "s3sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "s3.h"
#include "util.h"

struct s3sync {
        struct s3 *s3;
        struct backend_sink *sink;
        struct job *job;
        backend_then_cb *then;
        void (*done)(struct job *job, const struct backend_result *r);
        struct s3_list *list; /* the listing in flight, or NULL */
        int idx;              /* the asset being listed */
        bool recording;       /* waiting for the sink's then */
        bool cancelled;
};

bool s3sync_needed(const struct job *job)
{
        size_t i;

        for (i = 0; i < job->nassets; i++)
                if (job->assets[i].sync_max > 0)
                        return true;
        return false;
}

static void s3sync_finish(struct s3sync *ss, const struct backend_result *r)
{
        struct job *job = ss->job;
        void (*done)(struct job *, const struct backend_result *) = ss->done;

        free(ss);
        done(job, r);
}

static void s3sync_fail(struct s3sync *ss, enum backend_outcome o, const char *code,
                        const char *message, int64_t retry_after_ms, bool cancelled)
{
        struct backend_result r;

        memset(&r, 0, sizeof(r));
        backend_result_set(&r, o, code, "%s", message);
        r.retry_after_ms = retry_after_ms;
        r.cancelled = cancelled;
        s3sync_finish(ss, &r);
}

/* The asset's own metadata (an object), or a new empty object. NULL when out of memory. */
static cJSON *user_metadata(const struct job_asset *a)
{
        cJSON *m = a->metadata ? cJSON_Parse(a->metadata) : NULL;

        if (m != NULL && !cJSON_IsObject(m)) {
                cJSON_Delete(m);
                m = NULL;
        }
        return m ? m : cJSON_CreateObject();
}

static void set_key(cJSON *obj, const char *key, cJSON *value)
{
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        cJSON_AddItemToObject(obj, key, value);
}

/* `p` with metadata {"synced": false, "error_message": why}, nothing left to list. */
static int fallback_asset(const struct job_asset *p, const char *why, struct job_asset *out)
{
        cJSON *m = user_metadata(p);
        char *text;

        memset(out, 0, sizeof(*out));
        if (m == NULL)
                return FERRY_ENOMEM;
        set_key(m, "synced", cJSON_CreateFalse());
        set_key(m, "error_message", cJSON_CreateString(why));
        text = cJSON_PrintUnformatted(m);
        cJSON_Delete(m);
        out->logical_path = strdup(p->logical_path);
        out->uri = strdup(p->uri);
        out->metadata = text ? strdup(text) : NULL;
        cJSON_free(text);
        out->remote = true;
        out->overwrite = p->overwrite;
        snprintf(out->asset_id, sizeof(out->asset_id), "%s", p->asset_id);
        if (out->logical_path == NULL || out->uri == NULL || out->metadata == NULL) {
                job_asset_clear(out);
                return FERRY_ENOMEM;
        }
        return 0;
}

static int cmp_paths(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The listed objects as assets taking asset `idx`'s place: 0 with *out (n
 * entries); FERRY_EINVAL with a reason in why when they cannot be assets of
 * the version; FERRY_ENOMEM.
 */
static int listed_assets(const struct job *job, int idx, struct s3_list_result *r,
                         struct job_asset **out, char *why, size_t whylen)
{
        const struct job_asset *p = &job->assets[idx];
        struct job_asset *assets = calloc(r->n, sizeof(*assets));
        char **paths = calloc(job->nassets + r->n, sizeof(*paths));
        size_t i, np = 0;
        int rc = 0;

        *out = NULL;
        if (assets == NULL || paths == NULL) {
                rc = FERRY_ENOMEM;
                goto done;
        }
        for (i = 0; i < r->n && rc == 0; i++) {
                const struct s3xml_object *o = &r->objects[i];
                struct job_asset *a = &assets[i];
                char reason[256], shown[300], etag[256], *uri = NULL, *text;
                size_t ulen;
                cJSON *m;

                a->logical_path = s3_logical_path(r->prefix, o->key, p->sync_under);
                if (a->logical_path == NULL) {
                        rc = FERRY_ENOMEM;
                        break;
                }
                if (proto_validate_logical_path(a->logical_path, reason, sizeof(reason)) != 0) {
                        proto_sanitize(shown, sizeof(shown), o->key, strlen(o->key));
                        snprintf(why, whylen, "the object key \"%s\" cannot be a logical path: %s",
                                 shown, reason);
                        rc = FERRY_EINVAL;
                        break;
                }
                ulen = strlen(r->bucket) + strlen(o->key) + 7;
                if ((uri = malloc(ulen)) != NULL)
                        snprintf(uri, ulen, "s3://%s/%s", r->bucket, o->key);
                snprintf(etag, sizeof(etag), "%s", o->etag ? o->etag : "");
                if (etag[0] == '"') {
                        memmove(etag, etag + 1, strlen(etag));
                        if (etag[0] && etag[strlen(etag) - 1] == '"')
                                etag[strlen(etag) - 1] = '\0';
                }
                m = user_metadata(p);
                if (uri == NULL || m == NULL) {
                        free(uri);
                        cJSON_Delete(m);
                        rc = FERRY_ENOMEM;
                        break;
                }
                /* Comet's keys, over the user's own. */
                set_key(m, "s3_platform", cJSON_CreateString("aws"));
                set_key(m, "synced", cJSON_CreateTrue());
                set_key(m, "checksum", cJSON_CreateString(etag));
                set_key(m, "file_size", cJSON_CreateNumber((double)(o->size >= 0 ? o->size : 0)));
                set_key(m, "s3_path", cJSON_CreateString(uri));
                if (o->version_id != NULL && o->version_id[0] && strcmp(o->version_id, "null"))
                        set_key(m, "version_id", cJSON_CreateString(o->version_id));
                text = cJSON_PrintUnformatted(m);
                cJSON_Delete(m);
                a->uri = uri;
                a->metadata = text ? strdup(text) : NULL;
                cJSON_free(text);
                a->remote = true;
                a->size = o->size >= 0 ? o->size : 0;
                a->overwrite = p->overwrite;
                if (a->metadata == NULL || util_random_hex(a->asset_id, 16) != 0) {
                        rc = FERRY_ENOMEM;
                        break;
                }
                paths[np++] = a->logical_path;
        }
        if (rc != 0)
                goto done;
        /* Logical paths are unique within a version: a listed one may not take another's. */
        for (i = 0; i < job->nassets; i++)
                if ((int)i != idx)
                        paths[np++] = job->assets[i].logical_path;
        qsort(paths, np, sizeof(*paths), cmp_paths);
        for (i = 1; i < np; i++) {
                if (strcmp(paths[i - 1], paths[i]) == 0) {
                        char shown[300];

                        proto_sanitize(shown, sizeof(shown), paths[i], strlen(paths[i]));
                        snprintf(why, whylen,
                                 "a listed object would take the logical path \"%s\", which "
                                 "another asset of the version has",
                                 shown);
                        rc = FERRY_EINVAL;
                        break;
                }
        }
done:
        free(paths);
        if (rc != 0 && assets != NULL) {
                for (i = 0; i < r->n; i++)
                        job_asset_clear(&assets[i]);
                free(assets);
                assets = NULL;
        }
        *out = assets;
        return rc;
}

static void s3sync_next(struct s3sync *ss);

static void s3sync_listed_cb(void *data, struct s3_list_result *r)
{
        struct s3sync *ss = data;
        struct job *job = ss->job;
        const struct job_asset *p = &job->assets[ss->idx];
        struct job_asset *assets = NULL;
        size_t n = 0;
        char why[600] = "", warning[1100], uri[300];
        int rc;

        ss->list = NULL;
        if (r->cancelled || ss->cancelled) {
                s3sync_fail(ss, BACKEND_TRANSIENT, "cancelled", "listing: cancelled", -1, true);
                return;
        }
        if (r->outcome == S3_TRANSIENT) {
                s3sync_fail(ss, BACKEND_TRANSIENT, r->code, r->message, r->retry_after_ms, false);
                return;
        }
        proto_sanitize(uri, sizeof(uri), p->uri, strlen(p->uri));
        if (r->outcome == S3_OK && r->n == 0) {
                snprintf(why, sizeof(why), "no objects under %s", uri);
        } else if (r->outcome == S3_OK) {
                rc = listed_assets(job, ss->idx, r, &assets, why, sizeof(why));
                if (rc == FERRY_ENOMEM) {
                        s3sync_fail(ss, BACKEND_TRANSIENT, "out_of_memory",
                                    "listing: out of memory", -1, false);
                        return;
                }
                n = rc == 0 ? r->n : 0;
        } else if (r->too_many) {
                snprintf(why, sizeof(why),
                         "more than max_synced_objects (%lld) objects under %s: recorded as one "
                         "remote asset",
                         (long long)p->sync_max, uri);
        } else {
                snprintf(why, sizeof(why), "%s", r->message);
        }
        if (n == 0) {
                proto_utf8_trim(why);
                assets = calloc(1, sizeof(*assets));
                if (assets == NULL || fallback_asset(p, why, assets) != 0) {
                        free(assets);
                        s3sync_fail(ss, BACKEND_TRANSIENT, "out_of_memory",
                                    "listing: out of memory", -1, false);
                        return;
                }
                n = 1;
                snprintf(warning, sizeof(warning),
                         "%s was not synced (one remote asset, "
                         "\"synced\": false): %s",
                         uri, why);
                proto_utf8_trim(warning);
                log_warn("job %lld: %s", (long long)job->id, warning);
        } else {
                log_info("job %lld: %s: %zu objects%s", (long long)job->id, uri, n,
                         r->versioned ? " with their versions" : "");
        }
        ss->recording = true;
        ss->sink->synced(ss->sink, job, ss->idx, assets, n, n == 1 && why[0] ? warning : NULL,
                         ss->then);
}

void s3sync_recorded(struct s3sync *ss, int rc)
{
        ss->recording = false;
        if (ss->cancelled) {
                s3sync_fail(ss, BACKEND_TRANSIENT, "cancelled", "listing: cancelled", -1, true);
                return;
        }
        if (rc != 0) {
                s3sync_fail(ss, BACKEND_TRANSIENT, ferry_err_name(rc),
                            "cannot record a listing in the queue", -1, false);
                return;
        }
        s3sync_next(ss);
}

/* Start the next waiting asset's listing; 0, or FERRY_ENOMEM (nothing started). */
static int s3sync_list(struct s3sync *ss)
{
        const struct job_asset *a;
        size_t i;

        for (i = 0; i < ss->job->nassets && ss->job->assets[i].sync_max <= 0; i++)
                ;
        ss->idx = (int)i;
        a = &ss->job->assets[i];
        ss->list =
            s3_list_start(ss->s3, a->uri,
                          a->sync_max > S3_MAX_SYNCED_OBJECTS ? S3_MAX_SYNCED_OBJECTS : a->sync_max,
                          s3sync_listed_cb, ss);
        return ss->list ? 0 : FERRY_ENOMEM;
}

static void s3sync_next(struct s3sync *ss)
{
        struct backend_result r;

        if (!s3sync_needed(ss->job)) {
                memset(&r, 0, sizeof(r));
                r.outcome = BACKEND_OK;
                r.retry_after_ms = -1;
                s3sync_finish(ss, &r);
                return;
        }
        if (s3sync_list(ss) != 0)
                s3sync_fail(ss, BACKEND_TRANSIENT, "out_of_memory", "listing: out of memory", -1,
                            false);
}

struct s3sync *s3sync_start(struct s3 *s3, struct backend_sink *sink, struct job *job,
                            backend_then_cb *then,
                            void (*done)(struct job *job, const struct backend_result *r))
{
        struct s3sync *ss = calloc(1, sizeof(*ss));

        if (ss == NULL)
                return NULL;
        ss->s3 = s3;
        ss->sink = sink;
        ss->job = job;
        ss->then = then;
        ss->done = done;
        if (!s3sync_needed(job) || s3sync_list(ss) != 0) {
                free(ss);
                return NULL;
        }
        return ss;
}

void s3sync_cancel(struct s3sync *ss)
{
        if (ss == NULL || ss->cancelled)
                return;
        ss->cancelled = true;
        if (ss->list != NULL)
                s3_list_cancel(ss->list);
}
