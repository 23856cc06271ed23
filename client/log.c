/*
 * log.c — sending a version to ferryd. The caller opens every file itself
 * (with its own rights) and the descriptors travel with the request; ferryd
 * snapshots from them. A version that fits one frame (at most 250 files, a
 * frame under 1 MiB) is one artifact.log round trip; a larger one is
 * artifact.begin, artifact.add per batch, artifact.commit (artifact.abort if
 * anything fails on the way). Descriptors this side opened are closed after
 * each round trip.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define LOG_FRAME_BUDGET (900 * 1024) /* JSON bytes of assets per frame, leaving room */

/* One batch of assets on its way: their wire objects and descriptors. */
struct log_batch {
        cJSON *assets;
        int fds[PROTO_MAX_FDS];
        bool opened[PROTO_MAX_FDS]; /* this side opened it (close after sending) */
        int nfds;
        size_t bytes;
};

static void log_batch_reset(struct log_batch *b)
{
        int i;

        for (i = 0; i < b->nfds; i++)
                if (b->opened[i])
                        close(b->fds[i]);
        b->nfds = 0;
        b->bytes = 0;
        cJSON_Delete(b->assets);
        b->assets = NULL;
}

/* The wire object of one asset; its descriptor (opened now for a file) goes to the batch. */
static int log_batch_add(struct ferry_client *c, struct log_batch *b, const struct asset *as)
{
        cJSON *o = cJSON_CreateObject();
        char *text;
        int fd = -1;

        if (o == NULL || !cJSON_AddStringToObject(o, "logical_path", as->logical_path) ||
            (as->overwrite && !cJSON_AddTrueToObject(o, "overwrite")) ||
            (as->meta != NULL &&
             !cJSON_AddItemToObject(o, "metadata", cJSON_Duplicate(as->meta, 1)))) {
                cJSON_Delete(o);
                return client_nomem(c);
        }
        if (as->kind == ASSET_REMOTE) {
                if (!cJSON_AddStringToObject(o, "remote", as->uri) ||
                    (as->sync_max > 0 &&
                     (!cJSON_AddTrueToObject(o, "sync") ||
                      !cJSON_AddNumberToObject(o, "max_synced_objects", (double)as->sync_max) ||
                      (as->sync_prefix != NULL &&
                       !cJSON_AddStringToObject(o, "sync_prefix", as->sync_prefix))))) {
                        cJSON_Delete(o);
                        return client_nomem(c);
                }
        } else {
                if (as->kind == ASSET_FILE) {
                        fd = open(as->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                        if (fd < 0) {
                                int e = errno;

                                cJSON_Delete(o);
                                return client_fail(c,
                                                   e == ENOENT   ? FERRY_ENOTFOUND
                                                   : e == EACCES ? FERRY_EPERM
                                                   : e == EMFILE ? FERRY_EBUSY
                                                                 : FERRY_EIO,
                                                   "cannot log %s: %s", as->path, strerror(e));
                        }
                } else {
                        fd = as->fd;
                        /* A descriptor shares its offset: the daemon reads from 0 whatever. */
                }
                if (!cJSON_AddNumberToObject(o, "fd", b->nfds)) {
                        if (as->kind == ASSET_FILE)
                                close(fd);
                        cJSON_Delete(o);
                        return client_nomem(c);
                }
                b->fds[b->nfds] = fd;
                b->opened[b->nfds] = as->kind == ASSET_FILE;
                b->nfds++;
        }
        if (b->assets == NULL && (b->assets = cJSON_CreateArray()) == NULL) {
                cJSON_Delete(o);
                return client_nomem(c);
        }
        text = cJSON_PrintUnformatted(o);
        b->bytes += text ? strlen(text) + 1 : 0;
        cJSON_free(text);
        cJSON_AddItemToArray(b->assets, o);
        return 0;
}

/* Does asset `as` still fit the batch? */
static bool log_batch_fits(const struct log_batch *b, const struct asset *as)
{
        size_t guess = strlen(as->logical_path) + (as->uri ? strlen(as->uri) : 0) + 64;

        if (as->meta != NULL) {
                char *text = cJSON_PrintUnformatted(as->meta);

                guess += text ? strlen(text) : LOG_FRAME_BUDGET;
                cJSON_free(text);
        }

        if (as->kind != ASSET_REMOTE && b->nfds >= PROTO_MAX_FDS)
                return false;
        return b->bytes + guess < LOG_FRAME_BUDGET;
}

static int log_check_options(struct ferry_client *c, const struct ferry_log_options *o)
{
        if (o == NULL)
                return 0;
        if (o->experiment != NULL &&
            proto_validate_experiment_key(o->experiment, c->err, sizeof(c->err)) != 0)
                return FERRY_EINVAL;
        return client_check_names(c, o->workspace, o->project);
}

static bool log_fill_options(cJSON *req, const struct ferry_log_options *o)
{
        return o == NULL || (client_add_string_opt(req, "experiment", o->experiment) &&
                             client_add_string_opt(req, "workspace", o->workspace) &&
                             client_add_string_opt(req, "project", o->project));
}

/* Send `req` (consumed) with the batch's assets and descriptors; the batch is emptied. */
static int log_send(struct ferry_client *c, cJSON *req, struct log_batch *b, cJSON **rep)
{
        int rc;

        if (b->assets != NULL) {
                cJSON_AddItemToObject(req, "assets", b->assets);
                b->assets = NULL;
        }
        c->limit_ms = c->timeout_ms;
        rc = client_roundtrip_fds(c, req, b->fds, b->nfds, client_deadline_after(c->timeout_ms),
                                  rep, NULL, NULL);
        log_batch_reset(b);
        return rc;
}

static void log_abort(struct ferry_client *c, const char *token)
{
        char err[FERRY_ERR_MAX];
        cJSON *req = client_request(c, proto_op_name(PROTO_OP_ARTIFACT_ABORT)), *rep = NULL;

        /* Keep the message of what went wrong, not of the clean-up. */
        memcpy(err, c->err, sizeof(err));
        if (req != NULL && cJSON_AddStringToObject(req, "token", token) != NULL)
                client_call(c, req, c->timeout_ms, &rep);
        else
                cJSON_Delete(req);
        cJSON_Delete(rep);
        memcpy(c->err, err, sizeof(err));
}

/* A version larger than one frame: begin, add batches, commit. */
static int log_in_batches(struct ferry_client *c, const struct ferry_artifact *a,
                          const struct ferry_log_options *o, cJSON **rep)
{
        struct log_batch b;
        const char *tok;
        char token[64];
        cJSON *req, *r = NULL;
        size_t i = 0;
        int rc;

        memset(&b, 0, sizeof(b));
        req = client_request(c, proto_op_name(PROTO_OP_ARTIFACT_BEGIN));
        if (req == NULL || !client_artifact_fill_version(a, req) || !log_fill_options(req, o)) {
                cJSON_Delete(req);
                return client_nomem(c);
        }
        rc = client_call(c, req, c->timeout_ms, &r);
        if (rc != 0)
                return rc;
        if (proto_get_string(r, "token", true, &tok, NULL, 0) != 0 ||
            strlen(tok) >= sizeof(token)) {
                cJSON_Delete(r);
                return client_bad_reply(c, "artifact.begin", "token");
        }
        snprintf(token, sizeof(token), "%s", tok);
        cJSON_Delete(r);
        while (i < a->nassets) {
                while (i < a->nassets && (b.assets == NULL || log_batch_fits(&b, &a->assets[i])))
                        if ((rc = log_batch_add(c, &b, &a->assets[i++])) != 0)
                                goto fail;
                req = client_request(c, proto_op_name(PROTO_OP_ARTIFACT_ADD));
                if (req == NULL || !cJSON_AddStringToObject(req, "token", token)) {
                        cJSON_Delete(req);
                        rc = client_nomem(c);
                        goto fail;
                }
                rc = log_send(c, req, &b, &r);
                cJSON_Delete(r);
                if (rc != 0)
                        goto fail;
        }
        req = client_request(c, proto_op_name(PROTO_OP_ARTIFACT_COMMIT));
        if (req == NULL || !cJSON_AddStringToObject(req, "token", token)) {
                cJSON_Delete(req);
                rc = client_nomem(c);
                goto fail;
        }
        return client_call(c, req, c->timeout_ms, rep);
fail:
        log_batch_reset(&b);
        if (c->fd >= 0)
                log_abort(c, token);
        return rc;
}

/* Send the version; return 0 with *rep owning the reply, or a code. */
static int client_log(struct ferry_client *c, const struct ferry_artifact *a,
                      const struct ferry_log_options *o, cJSON **rep)
{
        struct log_batch b;
        cJSON *req;
        int64_t job;
        size_t i;
        int rc;

        *rep = NULL;
        if (a == NULL || a->name == NULL)
                return client_fail(c, FERRY_EINVAL, "cannot log an artifact that was refused: %s",
                                   a ? a->err : "no artifact");
        if ((rc = log_check_options(c, o)) != 0)
                return rc;
        memset(&b, 0, sizeof(b));
        /* The version's own fields (metadata, aliases, tags) share the frame. */
        {
                cJSON *probe = cJSON_CreateObject();
                char *text = NULL;

                if (probe == NULL || !client_artifact_fill_version(a, probe) ||
                    (text = cJSON_PrintUnformatted(probe)) == NULL) {
                        cJSON_Delete(probe);
                        return client_nomem(c);
                }
                b.bytes = strlen(text);
                cJSON_free(text);
                cJSON_Delete(probe);
        }
        for (i = 0; i < a->nassets && log_batch_fits(&b, &a->assets[i]); i++)
                if ((rc = log_batch_add(c, &b, &a->assets[i])) != 0) {
                        log_batch_reset(&b);
                        return rc;
                }
        if (i < a->nassets) {
                /* More than one frame holds. */
                log_batch_reset(&b);
                rc = log_in_batches(c, a, o, rep);
        } else {
                req = client_request(c, proto_op_name(PROTO_OP_ARTIFACT_LOG));
                if (req == NULL || !client_artifact_fill_version(a, req) ||
                    !log_fill_options(req, o) ||
                    (b.assets == NULL && (b.assets = cJSON_CreateArray()) == NULL)) {
                        cJSON_Delete(req);
                        log_batch_reset(&b);
                        return client_nomem(c);
                }
                rc = log_send(c, req, &b, rep);
        }
        if (rc != 0)
                return rc;
        if (proto_get_int(*rep, "job", true, 0, &job, NULL, 0) != 0 || job < 0) {
                cJSON_Delete(*rep);
                *rep = NULL;
                return client_bad_reply(c, "artifact.log", "job");
        }
        return 0;
}

int ferry_log(struct ferry_client *client, const struct ferry_artifact *artifact,
              const struct ferry_log_options *options, int64_t *job_id)
{
        cJSON *rep;
        int64_t job;
        int rc;

        if (client == NULL)
                return FERRY_EINVAL;
        rc = client_log(client, artifact, options, &rep);
        if (rc != 0)
                return rc;
        proto_get_int(rep, "job", true, 0, &job, NULL, 0);
        if (job_id != NULL)
                *job_id = job;
        cJSON_Delete(rep);
        return 0;
}

int ferry_log_json(struct ferry_client *client, const struct ferry_artifact *artifact,
                   const struct ferry_log_options *options, char **json)
{
        cJSON *rep;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        rc = client_log(client, artifact, options, &rep);
        if (rc != 0)
                return rc;
        return client_reply_out(client, rep, json);
}
