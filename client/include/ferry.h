/*
 * ferry.h — the public API of libferry, the client of ferryd.
 *
 * Every function returns 0 (or a count) on success and a negative FERRY_E*
 * code on failure; ferry_last_error() then holds one plain sentence saying
 * what went wrong (the daemon's own message when the daemon refused).
 * The library never prints, exits or aborts. Strings returned through
 * `char **` out-parameters are owned by the caller and freed with ferry_free().
 * A struct ferry_client is not thread-safe: use one per thread.
 */
#ifndef FERRY_H
#define FERRY_H

#include <stddef.h>
#include <stdint.h>

#include "ferry_base.h" /* FERRY_VERSION_STRING, the FERRY_E* codes */

#ifdef __cplusplus
extern "C" {
#endif

/* Free a string or buffer that libferry handed to the caller. */
void ferry_free(void *ptr);

/* ---- connection --------------------------------------------------------- */

struct ferry_client;

/*
 * Write the socket path used when none is given: $FERRY_SOCKET, else
 * $XDG_RUNTIME_DIR/ferry/ferryd.sock, else /tmp/ferry-$UID/ferryd.sock.
 * Return 0, or FERRY_EINVAL when `len` is too small.
 */
int ferry_default_socket_path(char *buf, size_t len);

/*
 * Connect to ferryd at `socket_path` (NULL: the default) and say hello.
 * Waits at most `timeout_ms` (<= 0: 10 s). On success *out owns the connection.
 * On failure *out is still set (so that ferry_last_error() can be read) unless
 * memory ran out; close it with ferry_close().
 *
 * Nothing is sent before the daemon is verified: the socket's directory must
 * be a real directory owned by the daemon's user and writable by no one else,
 * and the process listening must run as that user (SO_PEERCRED). The daemon's
 * user is the caller's own, or FERRY_DAEMON_USER (a name or uid) for a shared
 * ferryd of a service account; root is trusted too. Anything else is
 * FERRY_EPERM with a sentence naming the owner found and the one expected.
 */
int ferry_connect(struct ferry_client **out, const char *socket_path, int timeout_ms);
void ferry_close(struct ferry_client *client);
/* The sentence describing the last failure on this client; "" if none. */
const char *ferry_last_error(const struct ferry_client *client);
/*
 * 1 while the connection to ferryd is open, 0 once ferryd has closed it (it
 * stopped or restarted) or it failed. Sends nothing: a caller about to send
 * a request that must not be repeated can reconnect first instead of
 * finding out halfway.
 */
int ferry_is_connected(struct ferry_client *client);
/* Daemon facts from the hello reply: "local" or "comet". */
const char *ferry_backend_name(const struct ferry_client *client);
/*
 * Time limit for the replies of the typed requests below (ferry_log, ferry_experiment_*,
 * ferry_status, ferry_ls, ferry_pause, ferry_cache, ferry_get, ferry_download, and each of
 * ferry_download_start and ferry_download_finish); <= 0: none, the default. ferry_call, ferry_wait
 * and ferry_download_ready take their own limit. After a timeout the connection stays usable: the
 * late reply is skipped.
 */
void ferry_set_timeout(struct ferry_client *client, int timeout_ms);

/*
 * Generic request: send `op` with the fields of the JSON object `args_json`
 * (NULL: none), wait at most `timeout_ms` (<= 0: no limit) for the reply.
 * On success *reply_json (if not NULL) receives the whole reply object.
 * On a refusal the daemon's code is returned and its message is in
 * ferry_last_error(); *reply_json is then NULL.
 */
int ferry_call(struct ferry_client *client, const char *op, const char *args_json, int timeout_ms,
               char **reply_json);

/* ---- artifacts ---------------------------------------------------------- */

/*
 * The artifact builder validates every value as it is added; a refused value
 * leaves the artifact unchanged and its message in ferry_artifact_last_error().
 */
struct ferry_artifact;

/*
 * A new artifact version description. `type` may be NULL (the daemon's
 * default, "other"). Like ferry_connect(), on a refusal *out is still set so
 * that the message can be read; free it with ferry_artifact_free().
 */
int ferry_artifact_new(struct ferry_artifact **out, const char *name, const char *type);
void ferry_artifact_free(struct ferry_artifact *artifact);
/* The sentence describing the last refusal of this artifact's builder; "" if none. */
const char *ferry_artifact_last_error(const struct ferry_artifact *artifact);
/* Strict semver ("1.2.3", "1.0.0-rc.1"); NULL lets the backend pick the next major. */
int ferry_artifact_set_version(struct ferry_artifact *artifact, const char *version);
/* Aliases and version tags: 1..100 bytes, no control characters; a repeat is a no-op. */
int ferry_artifact_add_alias(struct ferry_artifact *artifact, const char *alias);
int ferry_artifact_add_tag(struct ferry_artifact *artifact, const char *tag);
/* `json_object` must be a JSON object (NULL: none); it replaces earlier metadata. */
int ferry_artifact_set_metadata(struct ferry_artifact *artifact, const char *json_object);
/*
 * Add a local file, or every regular file below a directory (logical paths
 * relative to it, under `logical_path` when given). `logical_path` NULL: the
 * file's base name. A logical path already present is FERRY_EEXIST unless
 * `overwrite`, in which case the new asset replaces the earlier one.
 * `metadata_json` NULL or a JSON object. The path is made absolute; a
 * directory is walked in name order, following symbolic links to files (not
 * to directories) and skipping anything that is not a regular file. A missing
 * path is FERRY_ENOTFOUND, an unreadable one FERRY_EPERM; either way nothing
 * of the directory is added.
 */
int ferry_artifact_add_file(struct ferry_artifact *artifact, const char *path,
                            const char *logical_path, int overwrite, const char *metadata_json);
/*
 * Add a remote asset (a URI that is recorded, not uploaded). `logical_path`
 * NULL: the URI's last path segment, or "remote".
 */
int ferry_artifact_add_remote(struct ferry_artifact *artifact, const char *uri,
                              const char *logical_path, int overwrite, const char *metadata_json);

/* The most objects one synced URI may become (a version holds at most 100000 assets). */
#define FERRY_MAX_SYNCED_OBJECTS 100000

/*
 * Add a remote asset as Comet's add_remote(sync_mode=True) does: an s3://
 * URI is listed by ferryd as the first step of the version's delivery (with
 * ferryd's AWS credentials, see README), and each object under it becomes
 * one remote asset with its ETag, size and version (logical paths: the keys
 * below the prefix, under `logical_path` when given). More than
 * `max_synced_objects` (1..FERRY_MAX_SYNCED_OBJECTS) objects, or a listing
 * that fails for good, leaves one remote asset for the URI with "synced":
 * false and "error_message" in its metadata, and a warning on the version.
 * `max_synced_objects` 0, or a URI that is not s3://, is ferry_artifact_add_remote().
 */
int ferry_artifact_add_remote_sync(struct ferry_artifact *artifact, const char *uri,
                                   const char *logical_path, int overwrite,
                                   const char *metadata_json, int64_t max_synced_objects);
/*
 * Add the regular file open as `fd` (the artifact keeps its own duplicate;
 * the caller may close `fd`). Its bytes are read from offset 0 when the
 * version is logged. `logical_path` is required.
 */
int ferry_artifact_add_fd(struct ferry_artifact *artifact, int fd, const char *logical_path,
                          int overwrite, const char *metadata_json);
/* Add `len` bytes of in-memory data (copied now); `logical_path` is required. */
int ferry_artifact_add_data(struct ferry_artifact *artifact, const void *data, size_t len,
                            const char *logical_path, int overwrite, const char *metadata_json);
/* Number of assets; the description as JSON (caller frees). */
size_t ferry_artifact_asset_count(const struct ferry_artifact *artifact);
int ferry_artifact_to_json(const struct ferry_artifact *artifact, char **json);

/* ---- typed requests ----------------------------------------------------- */

/*
 * The JSON out-parameters of the typed requests hold the daemon's reply object
 * without its "id" and "ok" members, as documented in proto/PROTOCOL.md.
 */

struct ferry_log_options {
        const char *experiment; /* experiment key; NULL: a new experiment */
        const char *workspace;  /* NULL: the daemon's configured workspace */
        const char *project;    /* NULL: the daemon's configured project */
};

/*
 * Log a version: returns once the daemon has committed it durably (files
 * snapshotted into its spool). Every file is opened here, with the caller's
 * rights, and its descriptor handed to ferryd (which never opens a caller's
 * path itself): a file the caller cannot read is FERRY_EPERM naming it. A
 * version of more than 250 files, or too large for one frame, goes in
 * several round trips (artifact.begin/add/commit). *job_id (if not NULL)
 * receives the queue id.
 */
int ferry_log(struct ferry_client *client, const struct ferry_artifact *artifact,
              const struct ferry_log_options *options, int64_t *job_id);
/* As ferry_log(); *json receives the reply: {"job", "experiment", "assets", "bytes"}. */
int ferry_log_json(struct ferry_client *client, const struct ferry_artifact *artifact,
                   const struct ferry_log_options *options, char **json);

/*
 * Create an experiment; *key receives its key (32 hex characters). Any of
 * `workspace`, `project` and `name` may be NULL. To share one experiment
 * between processes, pass the key to the others, which adopt it with
 * ferry_experiment_adopt() or ferry_log_options.experiment.
 */
int ferry_experiment_create(struct ferry_client *client, const char *workspace, const char *project,
                            const char *name, char **key);
/* Adopt the experiment `key` (32..50 letters and digits), recording it if it is new. */
int ferry_experiment_adopt(struct ferry_client *client, const char *key, const char *workspace,
                           const char *project, const char *name);

/*
 * Wait until the jobs (all jobs when njobs == 0) are no longer queued or
 * running, or `timeout_ms` passes (<= 0: no limit). Returns 0 when drained
 * without failures, FERRY_EFAILED when drained with failed jobs,
 * FERRY_ETIMEDOUT on timeout. *reply_json (optional) gets the counts
 * ({"drained", "pending", "failed"}) in these three cases.
 */
int ferry_wait(struct ferry_client *client, const int64_t *jobs, size_t njobs, int timeout_ms,
               char **reply_json);

/* Queue state, as the JSON object documented in proto/PROTOCOL.md. */
int ferry_status(struct ferry_client *client, char **json);

/* The largest `limit` of ferry_ls(), as ferryd allows. */
#define FERRY_LS_LIMIT_MAX 100000

/*
 * Queue items: `state` is "active" (queued, running and failed; also when
 * NULL), "queued", "failed", "done" or "all"; `limit` (1..FERRY_LS_LIMIT_MAX,
 * <= 0: ferryd's default of 1000) keeps the newest items. *json receives
 * {"items": [...]}, oldest first.
 */
int ferry_ls(struct ferry_client *client, const char *state, int limit, char **json);

/*
 * Hold (`paused` != 0) or resume deliveries. While paused ferryd starts no
 * delivery (running ones finish); logging, get and download keep working.
 * The pause lasts until resumed or until ferryd restarts; ferry_status()
 * reports it as "paused". *json (optional) receives {"paused": bool}.
 */
int ferry_pause(struct ferry_client *client, int paused, char **json);

/*
 * The node-wide download cache (content-addressed, least recently used blobs
 * evicted under a byte budget). `clear` != 0 empties it first. *json
 * (optional) receives {"path", "bytes", "budget", "blobs", "freed"}: its
 * directory, bytes held, byte budget, number of blobs, and bytes freed by
 * `clear`.
 */
int ferry_cache(struct ferry_client *client, int clear, char **json);

/*
 * Requeue failed job `job`, or every failed job when `job` < 0. *json
 * (optional) receives {"requeued": n}.
 */
int ferry_retry(struct ferry_client *client, int64_t job, char **json);

/*
 * Re-queue the versions whose snapshots ferryd set aside in quarantine, from
 * the manifests the files carry. *json (optional) receives {"versions",
 * "files", "partial", "skipped", "orphans"} (see `ferry recover`).
 */
int ferry_recover(struct ferry_client *client, char **json);

/*
 * Cancel queued, running or failed job `job`: it is dropped and its
 * snapshots freed (a version OPEN on Comet is set to ERROR). *json
 * (optional) receives {"job", "name", "was", "remote"} (see PROTOCOL.md).
 */
int ferry_cancel(struct ferry_client *client, int64_t job, char **json);

/* `spec` is [workspace/]name[:version_or_alias]. *json is the version. */
int ferry_get(struct ferry_client *client, const char *spec, char **json);

enum ferry_overwrite {
        FERRY_OVERWRITE_FAIL = 0,
        FERRY_OVERWRITE_PRESERVE,
        FERRY_OVERWRITE_REPLACE
};

/*
 * Download the version named by `spec` into `dir` (created if missing; a
 * relative `dir` is taken relative to the current directory). ferryd hands
 * over descriptors of the files; libferry writes each, with the caller's
 * rights, through a temporary ".ferry-tmp-*" name in its directory, syncs
 * it and renames it into place; no symlink is followed and nothing lands
 * outside `dir` (FERRY_EUNSAFE). *json receives {"dir", "version",
 * "files", "bytes"}. The same as ferry_download_start() then
 * ferry_download_finish().
 */
int ferry_download(struct ferry_client *client, const char *spec, const char *dir,
                   enum ferry_overwrite overwrite, char **json);

/*
 * A download in steps, for callers that do something while it runs (such as
 * drawing progress): ferry_download_start() sends the request and returns;
 * ferry_download_ready() does the work (waiting for ferryd, copying files)
 * for about `timeout_ms` (< 0: until done) and returns 1 once the outcome is
 * known, 0 while the download still runs, FERRY_EINVAL when none was
 * started; ferry_download_progress() tells the bytes written so far and in
 * all, and ferry_download_version() the version being fetched (NULL until
 * ferryd answered; ready() returns 0 once right after that answer);
 * ferry_download_finish() returns the outcome as ferry_download() would
 * (finishing the work first) and ends the download. One download at a time
 * per client (else FERRY_EBUSY); no other request may be made on the client
 * until it is finished.
 */
int ferry_download_start(struct ferry_client *client, const char *spec, const char *dir,
                         enum ferry_overwrite overwrite);
int ferry_download_ready(struct ferry_client *client, int timeout_ms);
int ferry_download_progress(struct ferry_client *client, int64_t *done, int64_t *total);
const char *ferry_download_version(const struct ferry_client *client);
int ferry_download_finish(struct ferry_client *client, char **json);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
