/*
 * internal.h — what libferry's files share and callers never see: the client
 * and artifact structs, the transport (frames with descriptors over the Unix
 * socket), and small helpers. Nothing here prints, exits or aborts.
 *
 *   transport.c  connecting (the daemon verified first), frames, round trips
 *   requests.c   the typed requests (status, ls, wait, get, ...)
 *   artifact.c   the artifact builder: values, assets, the merge rule, the walk
 *   log.c        sending a version: descriptors, one frame or begin/add/commit
 *   download.c   downloads: descriptors from ferryd, files placed safely here
 */
#ifndef FERRY_CLIENT_INTERNAL_H
#define FERRY_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "ferry.h"
#include "proto.h"

#define FERRY_CONNECT_TIMEOUT_MS 10000
/* Extra time given to the daemon to answer a wait after its own timeout. */
#define FERRY_WAIT_GRACE_MS 10000
#define FERRY_ERR_MAX 2048
#define FERRY_URI_MAX 4096
#define FERRY_START_HINT "start it with `ferryd` or `systemctl --user start ferryd`"

struct ferry_download;

struct ferry_client {
        int fd;                   /* the connection, or -1 once closed */
        uint64_t next_id;         /* id of the next request; 0 is never used */
        int timeout_ms;           /* limit for typed requests; <= 0: none */
        int limit_ms;             /* limit of the request in flight, for messages */
        struct proto_decoder dec; /* bytes received and not yet consumed */
        struct proto_fdq fdq;     /* descriptors received and not yet matched to a frame */
        uint64_t rx_total;        /* bytes received */
        uint64_t rx_consumed;     /* bytes of the frames taken out */
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char backend[32];          /* from the hello reply */
        char err[FERRY_ERR_MAX];   /* the last failure, one sentence */
        struct ferry_download *dl; /* the download started and not yet finished */
        bool late;                 /* the last wait for a reply ran out of time */
};

/* One asset of an artifact being built. */
enum asset_kind { ASSET_FILE, ASSET_FD, ASSET_REMOTE };

struct asset {
        char *logical_path;
        enum asset_kind kind;
        char *path;        /* ASSET_FILE: absolute path, opened when the version is logged */
        int fd;            /* ASSET_FD: the artifact's own descriptor (dup'd or a temporary file) */
        char *uri;         /* ASSET_REMOTE */
        cJSON *meta;       /* asset metadata object, or NULL */
        bool overwrite;    /* sent as given (the daemon's merge rule sees it) */
        int64_t sync_max;  /* ASSET_REMOTE: > 0 asks ferryd to list the s3:// URI (at most this
                              many objects), 0: record the URI as it is */
        char *sync_prefix; /* ASSET_REMOTE with sync: the logical path the user gave, or NULL */
};

struct ferry_artifact {
        char *name;
        char *type;      /* NULL: the daemon's default */
        char *version;   /* NULL: the backend picks one */
        cJSON *aliases;  /* array of strings */
        cJSON *tags;     /* array of strings */
        cJSON *metadata; /* object, or NULL */
        struct asset *assets;
        size_t nassets, cap;
        size_t *index; /* logical path -> asset index + 1 (open addressing) */
        size_t index_mask;
        char err[FERRY_ERR_MAX];
};

/* ---- helpers ---- */

int client_fail(struct ferry_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int client_nomem(struct ferry_client *c);
int client_artifact_fail(struct ferry_artifact *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *client_plural(long long n);
char *client_json_print(const cJSON *obj);
int64_t client_now_ms(void);
int64_t client_deadline_after(int timeout_ms);

/* ---- transport ---- */

/* A request envelope with the client's next id, or NULL when out of memory. */
cJSON *client_request(struct ferry_client *c, const char *op);
/*
 * Send `req` (consumed) with `nfds` descriptors (not consumed: the caller
 * closes its own) and wait for its reply until `deadline`; the reply's
 * descriptors (if any) go to *rfds and *rnfds (rfds NULL: closed).
 * Return 0 with *rep owning the reply, or a code with the message set.
 */
int client_roundtrip_fds(struct ferry_client *c, cJSON *req, const int *fds, int nfds,
                         int64_t deadline, cJSON **rep, int **rfds, int *rnfds);
int client_roundtrip(struct ferry_client *c, cJSON *req, int64_t deadline, cJSON **rep);
/* Send `req` (consumed) without waiting for its reply. */
int client_send_request(struct ferry_client *c, cJSON *req, int64_t deadline);
/*
 * Wait for the reply to request `id` until `deadline`; FERRY_ETIMEDOUT with
 * client_last_wait_late() true when it did not come in time (the connection
 * stays usable: the late reply is read later).
 */
int client_wait_reply(struct ferry_client *c, uint64_t id, int64_t deadline, const char *op,
                      cJSON **rep);
bool client_last_wait_late(const struct ferry_client *c);
/* Round trip with a limit of `timeout_ms` (<= 0: none). */
int client_call(struct ferry_client *c, cJSON *req, int timeout_ms, cJSON **rep);
/* Hand the reply `rep` (consumed) to the caller without "id" and "ok". */
int client_reply_out(struct ferry_client *c, cJSON *rep, char **json);
/* A reply lacking a field the protocol promises. */
int client_bad_reply(struct ferry_client *c, const char *op, const char *field);
/* Add `value` under `key` unless it is NULL. Return false when out of memory. */
bool client_add_string_opt(cJSON *obj, const char *key, const char *value);
/* Close `n` descriptors. */
void client_close_all(const int *fds, int n);

/* Check a [workspace/]name[:version_or_alias] spec before it is sent. */
int client_check_spec(struct ferry_client *c, const char *spec);
/* Check an optional workspace or project name. */
int client_check_names(struct ferry_client *c, const char *workspace, const char *project);

/* ---- artifacts ---- */

/* Add the artifact's version fields (all but assets) to `obj`. False when out of memory. */
int client_artifact_fill_version(const struct ferry_artifact *a, cJSON *obj);

/* ---- downloads ---- */

void client_download_free(struct ferry_download *dl);

#endif
