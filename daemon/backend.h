/*
 * backend.h — where artifact versions go: the local registry or Comet.
 * A backend is a struct of operations; the scheduler and the ops know no
 * more of it than this. Every callback runs on the loop thread.
 */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct daemon;
struct job;
struct backend;

enum backend_outcome {
        BACKEND_OK,        /* the version is CLOSED on the backend */
        BACKEND_TRANSIENT, /* try again later (5xx, 429, timeouts) */
        BACKEND_OFFLINE,   /* the backend cannot be reached: wait, spend no attempt */
        BACKEND_PERMANENT, /* will not succeed as is (4xx): park as failed */
};

struct backend_result {
        enum backend_outcome outcome;
        int64_t retry_after_ms; /* server's Retry-After, or -1 */
        char code[48];          /* wire error name or the server's sdk_error_code */
        char message[512];      /* one sentence, the server's msg included */
        char assigned_version[64];
};

typedef void backend_deliver_cb(struct backend *be, struct job *job,
                                const struct backend_result *result);
typedef void backend_probe_cb(struct backend *be, bool online, const char *message);
/* `version` (owned by the callee, may be NULL on error) as PROTOCOL.md's get reply, plus
 * per-asset private fields starting with '_' that fetch() understands. */
typedef void backend_get_cb(void *data, int code, const char *message, cJSON *version);
/* `path` is a local file holding the asset's bytes (valid during the callback). */
typedef void backend_fetch_cb(void *data, int code, const char *message, const char *path);

struct backend_ops {
        const char *name;
        /*
         * Deliver `job` (owned by the caller until `done`): every step's result
         * is committed to the store before the next starts, so that a restart
         * resumes exactly. Calls `done` exactly once.
         */
        void (*deliver)(struct backend *be, struct job *job, backend_deliver_cb *done);
        /* Check reachability (after going offline). */
        void (*probe)(struct backend *be, backend_probe_cb *done);
        /* 1 if workspace/name:version exists already, 0 if not or unknown. */
        int (*version_exists)(struct backend *be, const char *workspace, const char *name,
                              const char *version);
        /* Resolve name and version-or-alias (NULL: latest). */
        void (*get)(struct backend *be, const char *workspace, const char *name,
                    const char *version_or_alias, backend_get_cb *cb, void *data);
        /* Make one asset of a get result available as a local file. */
        void (*fetch)(struct backend *be, const cJSON *asset, backend_fetch_cb *cb, void *data);
        /* Shutting down: end in-flight deliveries now (their `done` still runs, later). */
        void (*abort)(struct backend *be);
        /* Release everything; call only once no delivery is in flight. */
        void (*close)(struct backend *be);
};

struct backend {
        const struct backend_ops *ops;
        struct daemon *d;
        void *priv;
};

/* Constructors: 0, or -1 with a sentence in err. */
int backend_local_new(struct backend **out, struct daemon *d, char *err, size_t errlen);
int backend_comet_new(struct backend **out, struct daemon *d, char *err, size_t errlen);

#endif
