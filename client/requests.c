/* requests.c — libferry's typed requests: experiments, wait, status, get, ls, retry, recover,
 * pause, cache. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdbool.h>

#include "internal.h"

/* Check an optional workspace or project name; what is "workspace" or "project". */
static int client_check_name(struct ferry_client *c, const char *value, const char *what)
{
        if (value == NULL)
                return 0;
        return proto_validate_name(value, what, c->err, sizeof(c->err));
}

int client_check_names(struct ferry_client *c, const char *workspace, const char *project)
{
        int rc = client_check_name(c, workspace, "workspace");

        return rc != 0 ? rc : client_check_name(c, project, "project");
}

/* experiment.create with an optional key; *key_out (optional) gets the key. */
static int client_experiment(struct ferry_client *c, const char *key, const char *workspace,
                             const char *project, const char *name, char **key_out)
{
        cJSON *req, *rep = NULL;
        const char *k;
        int rc;

        if (key != NULL && proto_validate_experiment_key(key, c->err, sizeof(c->err)) != 0)
                return FERRY_EINVAL;
        if ((rc = client_check_name(c, workspace, "workspace")) != 0 ||
            (rc = client_check_name(c, project, "project")) != 0)
                return rc;
        req = client_request(c, proto_op_name(PROTO_OP_EXPERIMENT_CREATE));
        if (req == NULL || !client_add_string_opt(req, "workspace", workspace) ||
            !client_add_string_opt(req, "project", project) ||
            !client_add_string_opt(req, "name", name) || !client_add_string_opt(req, "key", key)) {
                cJSON_Delete(req);
                return client_nomem(c);
        }
        rc = client_call(c, req, c->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (proto_get_string(rep, "key", true, &k, NULL, 0) != 0 ||
            proto_validate_experiment_key(k, NULL, 0) != 0) {
                rc = client_bad_reply(c, "experiment.create", "key");
        } else if (key_out != NULL) {
                *key_out = strdup(k);
                if (*key_out == NULL)
                        rc = client_nomem(c);
        }
        cJSON_Delete(rep);
        return rc;
}

int ferry_experiment_create(struct ferry_client *client, const char *workspace, const char *project,
                            const char *name, char **key)
{
        if (key != NULL)
                *key = NULL;
        if (client == NULL || key == NULL)
                return FERRY_EINVAL;
        return client_experiment(client, NULL, workspace, project, name, key);
}

int ferry_experiment_adopt(struct ferry_client *client, const char *key, const char *workspace,
                           const char *project, const char *name)
{
        if (client == NULL)
                return FERRY_EINVAL;
        if (key == NULL)
                return client_fail(client, FERRY_EINVAL, "an experiment key is required");
        return client_experiment(client, key, workspace, project, name, NULL);
}

int ferry_wait(struct ferry_client *client, const int64_t *jobs, size_t njobs, int timeout_ms,
               char **reply_json)
{
        cJSON *req, *arr, *rep = NULL;
        const cJSON *drained;
        int64_t pending, failed;
        size_t i;
        int rc;

        if (reply_json != NULL)
                *reply_json = NULL;
        if (client == NULL || (jobs == NULL && njobs > 0))
                return FERRY_EINVAL;
        req = client_request(client, proto_op_name(PROTO_OP_WAIT));
        if (req == NULL)
                return client_nomem(client);
        if (njobs > 0) {
                arr = cJSON_AddArrayToObject(req, "jobs");
                for (i = 0; arr != NULL && i < njobs; i++) {
                        if (jobs[i] < 0) {
                                cJSON_Delete(req);
                                return client_fail(client, FERRY_EINVAL, "job id %lld is negative",
                                                   (long long)jobs[i]);
                        }
                        if (!cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)jobs[i])))
                                arr = NULL;
                }
                if (arr == NULL) {
                        cJSON_Delete(req);
                        return client_nomem(client);
                }
        }
        if (timeout_ms > 0 && !cJSON_AddNumberToObject(req, "timeout_ms", timeout_ms)) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        /* The daemon answers at its timeout; allow it some time beyond. */
        rc = client_call(client, req,
                         timeout_ms > 0 ? (timeout_ms > INT_MAX - FERRY_WAIT_GRACE_MS
                                               ? INT_MAX
                                               : timeout_ms + FERRY_WAIT_GRACE_MS)
                                        : 0,
                         &rep);
        if (rc != 0)
                return rc;
        drained = cJSON_GetObjectItemCaseSensitive(rep, "drained");
        if (!cJSON_IsBool(drained) ||
            proto_get_int(rep, "pending", false, 0, &pending, NULL, 0) != 0 ||
            proto_get_int(rep, "failed", false, 0, &failed, NULL, 0) != 0) {
                cJSON_Delete(rep);
                return client_bad_reply(client, "wait", "drained");
        }
        if (cJSON_IsFalse(drained))
                rc = client_fail(client, FERRY_ETIMEDOUT,
                                 "%lld job%s still queued or running after %g s",
                                 (long long)pending, client_plural(pending), timeout_ms / 1000.0);
        else if (failed > 0)
                rc = client_fail(client, FERRY_EFAILED, "%lld job%s failed", (long long)failed,
                                 client_plural(failed));
        if (client_reply_out(client, rep, reply_json) != 0)
                return FERRY_ENOMEM;
        return rc;
}

/*
 * The skeleton of a typed request: `op` with the fields of `fields` (taken
 * over; NULL when none), the reply checked to hold `must` (a number, an array
 * or a boolean, as `is` says; NULL: nothing checked) and handed to *json.
 */
static int typed_call(struct ferry_client *client, enum proto_op op, cJSON *fields,
                      const char *must, cJSON_bool (*is)(const cJSON *), char **json)
{
        cJSON *req, *rep = NULL, *f;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL) {
                cJSON_Delete(fields);
                return FERRY_EINVAL;
        }
        req = client_request(client, proto_op_name(op));
        if (req == NULL) {
                cJSON_Delete(fields);
                return client_nomem(client);
        }
        while (fields != NULL && (f = fields->child) != NULL) {
                cJSON_DetachItemViaPointer(fields, f);
                cJSON_AddItemToObject(req, f->string, f);
        }
        cJSON_Delete(fields);
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (must != NULL && !is(cJSON_GetObjectItemCaseSensitive(rep, must))) {
                cJSON_Delete(rep);
                return client_bad_reply(client, proto_op_name(op), must);
        }
        return client_reply_out(client, rep, json);
}

/* The fields object of a typed request, or NULL when out of memory (the call then says so). */
static cJSON *fields_of(cJSON *obj, bool ok)
{
        if (!ok) {
                cJSON_Delete(obj);
                return NULL;
        }
        return obj;
}

int ferry_status(struct ferry_client *client, char **json)
{
        return typed_call(client, PROTO_OP_STATUS, NULL, NULL, NULL, json);
}

/* Check a [workspace/]name[:version_or_alias] spec before it is sent. */
int client_check_spec(struct ferry_client *c, const char *spec)
{
        char ws[PROTO_NAME_MAX + 1], name[PROTO_NAME_MAX + 1], ver[PROTO_NAME_MAX + 1];

        if (spec == NULL)
                return client_fail(c, FERRY_EINVAL, "an artifact name is required");
        return proto_spec_parse(spec, ws, sizeof(ws), name, sizeof(name), ver, sizeof(ver), c->err,
                                sizeof(c->err));
}

/* Does page `p` describe the same version as the first page `first` (same number, same job)? */
static bool get_same_version(const cJSON *first, const cJSON *p)
{
        static const char *const keys[] = {"workspace", "name", "version", "job"};
        size_t i;

        for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                const cJSON *a = cJSON_GetObjectItemCaseSensitive(first, keys[i]);
                const cJSON *b = cJSON_GetObjectItemCaseSensitive(p, keys[i]);

                if ((a == NULL) != (b == NULL) || (a != NULL && !cJSON_Compare(a, b, 1)))
                        return false;
        }
        return true;
}

/* One page of `spec`'s version: its assets from `from`. */
static int get_page(struct ferry_client *client, const char *spec, int from, cJSON **rep)
{
        cJSON *req = client_request(client, proto_op_name(PROTO_OP_GET));

        if (req == NULL || !cJSON_AddStringToObject(req, "name", spec) ||
            (from > 0 && !cJSON_AddNumberToObject(req, "assets_from", from))) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        return client_call(client, req, client->timeout_ms, rep);
}

/*
 * ferryd answers a version with many assets a page at a time (a reply is one
 * frame); the pages are put together here. Should the spec come to name
 * another version between two pages (a newer one logged meanwhile), start over.
 */
int ferry_get(struct ferry_client *client, const char *spec, char **json)
{
        cJSON *first = NULL, *page = NULL, *assets, *more, *a;
        int rc, tries = 0;
        int64_t total;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        rc = client_check_spec(client, spec);
        if (rc != 0)
                return rc;
again:
        cJSON_Delete(first);
        if ((rc = get_page(client, spec, 0, &first)) != 0)
                return rc;
        assets = cJSON_GetObjectItemCaseSensitive(first, "assets");
        if (proto_get_int(first, "assets_total", false, -1, &total, NULL, 0) != 0 ||
            !cJSON_IsArray(assets)) {
                cJSON_Delete(first);
                return client_bad_reply(client, "get", "assets");
        }
        while (total >= 0 && cJSON_GetArraySize(assets) < total) {
                int have = cJSON_GetArraySize(assets);

                if ((rc = get_page(client, spec, have, &page)) != 0) {
                        cJSON_Delete(first);
                        return rc;
                }
                more = cJSON_GetObjectItemCaseSensitive(page, "assets");
                if (!get_same_version(first, page)) {
                        cJSON_Delete(page);
                        if (++tries < 5)
                                goto again;
                        cJSON_Delete(first);
                        return client_fail(client, FERRY_EBUSY,
                                           "the version %s names kept changing while its assets "
                                           "were read; try again",
                                           spec);
                }
                if (!cJSON_IsArray(more) || cJSON_GetArraySize(more) == 0) {
                        cJSON_Delete(page);
                        cJSON_Delete(first);
                        return client_bad_reply(client, "get", "assets");
                }
                while ((a = more->child) != NULL) {
                        cJSON_DetachItemViaPointer(more, a);
                        cJSON_AddItemToArray(assets, a);
                }
                cJSON_Delete(page);
        }
        cJSON_DeleteItemFromObjectCaseSensitive(first, "assets_from");
        return client_reply_out(client, first, json);
}

int ferry_retry(struct ferry_client *client, int64_t job, char **json)
{
        cJSON *f = cJSON_CreateObject();

        f = fields_of(f, f != NULL &&
                             (job < 0 ? cJSON_AddTrueToObject(f, "all") != NULL
                                      : cJSON_AddNumberToObject(f, "job", (double)job) != NULL));
        if (f == NULL && client != NULL)
                return client_nomem(client);
        return typed_call(client, PROTO_OP_RETRY, f, "requeued", cJSON_IsNumber, json);
}

int ferry_cancel(struct ferry_client *client, int64_t job, char **json)
{
        cJSON *f = cJSON_CreateObject();

        f = fields_of(f, f != NULL && cJSON_AddNumberToObject(f, "job", (double)job) != NULL);
        if (f == NULL && client != NULL)
                return client_nomem(client);
        return typed_call(client, PROTO_OP_CANCEL, f, "was", cJSON_IsString, json);
}

int ferry_recover(struct ferry_client *client, char **json)
{
        return typed_call(client, PROTO_OP_RECOVER, NULL, "versions", cJSON_IsNumber, json);
}

int ferry_pause(struct ferry_client *client, int paused, char **json)
{
        cJSON *f = cJSON_CreateObject();

        f = fields_of(f, f != NULL && cJSON_AddBoolToObject(f, "paused", paused != 0) != NULL);
        if (f == NULL && client != NULL)
                return client_nomem(client);
        return typed_call(client, PROTO_OP_PAUSE, f, "paused", cJSON_IsBool, json);
}

int ferry_cache(struct ferry_client *client, int clear, char **json)
{
        cJSON *f = cJSON_CreateObject();

        f = fields_of(f, f != NULL && (!clear || cJSON_AddTrueToObject(f, "clear") != NULL));
        if (f == NULL && client != NULL)
                return client_nomem(client);
        return typed_call(client, PROTO_OP_CACHE, f, "bytes", cJSON_IsNumber, json);
}

int ferry_ls(struct ferry_client *client, const char *state, int limit, char **json)
{
        static const char *const states[] = {"active", "queued",    "failed",
                                             "done",   "cancelled", "all"};
        cJSON *f;
        size_t i;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        if (state != NULL) {
                for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
                        if (strcmp(state, states[i]) == 0)
                                break;
                if (i == sizeof(states) / sizeof(states[0]))
                        return client_fail(client, FERRY_EINVAL,
                                           "state \"%s\" is not one of active, queued, failed, "
                                           "done, cancelled, all",
                                           state);
        }
        if (limit > FERRY_LS_LIMIT_MAX)
                return client_fail(client, FERRY_EINVAL, "the limit must be 1 to %d, not %d",
                                   FERRY_LS_LIMIT_MAX, limit);
        f = cJSON_CreateObject();
        f = fields_of(f, f != NULL && client_add_string_opt(f, "state", state) &&
                             (limit <= 0 || cJSON_AddNumberToObject(f, "limit", limit) != NULL));
        if (f == NULL)
                return client_nomem(client);
        return typed_call(client, PROTO_OP_LS, f, "items", cJSON_IsArray, json);
}
