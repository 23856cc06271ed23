/*
 * backend.h — where artifact versions go: the local registry, Comet, (S3).
 *
 * The seam between the queue and a backend: ONE WRITER OF JOB STATE.
 *
 * - The queue (store + writer + scheduler) is the only code that writes a
 *   job's state. A backend never calls the store, the writer, the scheduler
 *   or the daemon struct: it gets what it needs at construction (struct
 *   backend_env) and reports through the queue's struct backend_sink.
 * - The scheduler hands a backend one job at a time through deliver(). The
 *   struct job is the queue's; it stays valid until the backend has called
 *   sink->finished() for it, and the backend may keep its own state for the
 *   delivery in job->delivery meanwhile.
 * - Each step's outcome goes to the sink as it happens:
 *     synced(job, i, assets, n, warning, then)  the listing step of asset i
 *                            (an s3:// URI to sync, see s3sync.h) is done:
 *                            the asset is replaced by the n assets given
 *                            (one per listed object, or one unsynced asset
 *                            when the listing fell back, with `warning`).
 *                            The queue commits that, updates job->assets,
 *                            then calls then(job, rc). Listing comes before
 *                            any other step, so no asset is confirmed yet;
 *     registered(job)        the experiment key is known to the backend;
 *     created(job, id, v, then)  the version exists on the backend with id
 *                            and version v (v may be NULL: not known yet), or
 *                            at least has its place in the artifact's order,
 *                            so that later versions may start. The queue
 *                            commits that durably
 *                            and then calls then(job, 0): the backend starts
 *                            no upload before, so a restart never creates the
 *                            version again (then(job, rc < 0): not recorded;
 *                            the backend finishes the delivery as failed);
 *     asset_done(job, i, then)  asset i is confirmed; committed, then
 *                            then(job, rc). The backend closes the version
 *                            only once every asset's `then` has come back, so
 *                            a restart never re-sends a confirmed asset to a
 *                            closed version;
 *     sent(bytes)            bytes that reached the backend (status rate);
 *     finished(job, result)  the delivery ended: the version is complete on
 *                            the backend (BACKEND_OK), or failed with an
 *                            outcome the queue turns into a retry, the
 *                            offline state, or a parked job.
 *   A step that succeeds resets the job's attempts: attempts count
 *   consecutive failures of a step, not of a version.
 * - Every callback runs on the loop thread.
 */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

struct backend;
struct cache;
struct config;
struct job;
struct spool;

enum backend_outcome {
        BACKEND_OK,        /* the version is complete (CLOSED) on the backend */
        BACKEND_TRANSIENT, /* try again later (5xx, 429, timeouts, resets): spends an attempt */
        BACKEND_OFFLINE,   /* the backend cannot be reached at all: wait, spend no attempt */
        BACKEND_PERMANENT, /* will not succeed as is (4xx, a wrong answer): park as failed */
};

struct backend_result {
        enum backend_outcome outcome;
        bool cancelled;         /* ended by abort(): the queue records nothing */
        int64_t retry_after_ms; /* server's Retry-After, or -1 */
        char code[48];          /* wire error name or the server's sdk_error_code */
        char message[512];      /* one sentence, the server's msg included (sanitised) */
        char assigned_version[64];
};

typedef void backend_then_cb(struct job *job, int rc);

struct job_asset;
struct s3;

struct backend_sink {
        /* `assets` (n entries, malloc'd, with what they own) is the queue's from the call on. */
        void (*synced)(struct backend_sink *sink, struct job *job, int idx,
                       struct job_asset *assets, size_t n, const char *warning,
                       backend_then_cb *then);
        void (*registered)(struct backend_sink *sink, struct job *job);
        void (*created)(struct backend_sink *sink, struct job *job, const char *remote_id,
                        const char *assigned_version, backend_then_cb *then);
        void (*asset_done)(struct backend_sink *sink, struct job *job, int idx,
                           backend_then_cb *then);
        void (*sent)(struct backend_sink *sink, int64_t bytes);
        void (*finished)(struct backend_sink *sink, struct job *job,
                         const struct backend_result *result);
};

/* What a backend may use, given at construction; all of it outlives the backend. */
struct backend_env {
        uv_loop_t *loop;
        const struct config *cfg;
        struct spool *spool; /* the snapshots it uploads (read-only) */
        struct cache *cache; /* the node-wide download cache */
        struct s3 *s3;       /* the S3 client (listing s3:// assets before delivery) */
        const char *state_dir;
        struct backend_sink *sink;
};

/* `version` (owned by the callee, may be NULL on error) as PROTOCOL.md's get reply, plus
 * per-asset private fields starting with '_' that fetch() understands. */
typedef void backend_get_cb(void *data, int code, const char *message, cJSON *version);
/* `path` is a local file holding the asset's bytes (valid during the callback). */
typedef void backend_fetch_cb(void *data, int code, const char *message, const char *path);

struct backend_ops {
        const char *name;
        /* Deliver `job` (see the seam above). Reports through the sink, at once or later. */
        void (*deliver)(struct backend *be, struct job *job);
        /* Check reachability (while offline): done(be, online, message). */
        void (*probe)(struct backend *be,
                      void (*done)(struct backend *be, bool online, const char *message));
        /* 1 if workspace/name:version exists already, 0 if not or unknown. */
        int (*version_exists)(struct backend *be, const char *workspace, const char *name,
                              const char *version);
        /* Resolve name and version-or-alias (NULL: latest). */
        void (*get)(struct backend *be, const char *workspace, const char *name,
                    const char *version_or_alias, backend_get_cb *cb, void *data);
        /* Make one asset of a get result available as a local file. */
        void (*fetch)(struct backend *be, const cJSON *asset, backend_fetch_cb *cb, void *data);
        /* Shutting down: end in-flight deliveries now; their finished() still comes, cancelled. */
        void (*abort)(struct backend *be);
        /*
         * `ferry cancel` of a job being delivered: end its delivery now. Its
         * finished() still comes: cancelled, or with the outcome it reached first
         * (a delivery already past its last step completes).
         */
        void (*cancel)(struct backend *be, struct job *job);
        /*
         * `ferry cancel` of a job whose version exists on the backend already
         * (job->remote_version_id set) and is not being delivered: mark that version
         * abandoned where the backend has such a state (Comet: ERROR). done(data,
         * note) comes once, with a sentence saying what became of the version. The
         * job is the caller's and stays valid until then. NULL: nothing to do.
         */
        void (*abandon)(struct backend *be, struct job *job,
                        void (*done)(void *data, const char *note), void *data);
        /* Release everything once no delivery is in flight; closed(data) when done. */
        void (*close)(struct backend *be, void (*closed)(void *data), void *data);
};

struct backend {
        const struct backend_ops *ops;
        struct backend_env env;
        void *priv;
};

/* Constructors: 0, or -1 with a sentence in err. */
int backend_local_new(struct backend **out, const struct backend_env *env, char *err,
                      size_t errlen);
int backend_comet_new(struct backend **out, const struct backend_env *env, char *err,
                      size_t errlen);

/* A failure result with a formatted, UTF-8-safe message. */
void backend_result_set(struct backend_result *r, enum backend_outcome outcome, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
