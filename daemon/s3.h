/*
 * s3.h — ferryd's S3 client: the settings the AWS tools read, signed requests
 * (libcurl's AWS SigV4) over the HTTP engine, listing a prefix
 * (ListObjectsV2, or ListObjectVersions when the bucket is versioned) and
 * fetching one object into the node-wide cache.
 *
 * ferryd makes the requests, so the settings come from ferryd's environment
 * and its user's ~/.aws files, read afresh for every listing and fetch
 * (rotated credentials are picked up without a restart):
 *   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
 *                else the profile (AWS_PROFILE, else "default") in
 *                AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), else in
 *                AWS_CONFIG_FILE (~/.aws/config);
 *   region       AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1;
 *   endpoint     AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's
 *                endpoint_url, else AWS itself. With an endpoint, requests
 *                are path-style (http://host:port/bucket/key), as MinIO,
 *                Ceph and s3rver want.
 * Secrets never appear in a message or a log line: messages name where the
 * credentials came from, never what they are.
 *
 * Everything runs on the loop thread; callbacks never run inside the call
 * that started the operation.
 */
#ifndef FERRY_S3_H
#define FERRY_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "s3xml.h"

struct cache;
struct config;
struct s3;
struct s3_list;

#define S3_MAX_SYNCED_OBJECTS 100000 /* a version holds at most 100000 assets */

struct s3_settings {
        char access_key[256];
        char secret_key[256];
        char session_token[4096];
        char region[64];
        char endpoint[1024]; /* scheme://host[:port][/path] without a trailing '/'; "" for AWS */
        char source[512];    /* where the credentials came from (for messages), or "" */
        char problem[512];   /* why there are no usable settings, or "" */
        bool have_credentials;
};

/*
 * Read the settings as the AWS tools do. `env` looks a variable up (getenv,
 * or a stand-in in tests); `home` is the user's home directory. Never fails:
 * what is missing or wrong is said in out->problem (no credentials, a named
 * profile that exists nowhere, an endpoint that is not http(s)).
 */
void s3_settings_load(struct s3_settings *out, const char *(*env)(const char *name),
                      const char *home);
/* Wipe the secrets of `s`. */
void s3_settings_wipe(struct s3_settings *s);

/*
 * Split "s3://bucket/prefix" (scheme in any case): the bucket into `bucket`
 * (1..255 characters of letters, digits, '.', '-', '_'), *prefix points into
 * `uri` after the bucket's '/' ("" for none). 0, or FERRY_EINVAL.
 */
int s3_uri_parse(const char *uri, char *bucket, size_t blen, const char **prefix);
/* True when `uri` names an S3 location (the scheme s3://, any case). */
bool s3_uri_is_s3(const char *uri);

/*
 * The URL of `bucket`/`key` (key NULL: the bucket) with `query` (already in
 * canonical form: sorted, each name and value encoded by AWS's rule; NULL or
 * "" for none). Path-style with an endpoint, virtual-hosted on AWS (path-style
 * for bucket names a host name cannot hold). Caller frees; NULL when out of
 * memory.
 */
char *s3_url(const struct s3_settings *st, const char *bucket, const char *key, const char *query);
/* Append `s` encoded by AWS's URI rule (unreserved kept, '/' kept when keep_slash) to a new
 * string. */
char *s3_encode(const char *s, bool keep_slash);

/* The logical path a listed key takes, for the listing of `prefix` under `under`
 * (NULL: the version's root): NULL when the key is not below the prefix as a
 * folder ("data" lists "data" and "data/...", not "database"), or out of memory. */
char *s3_logical_path(const char *prefix, const char *key, const char *under);

int s3_new(struct s3 **out, uv_loop_t *loop, const struct config *cfg, struct cache *cache,
           char *err, size_t errlen);
/* Cancel what runs (callbacks still come, cancelled), free, then closed(data). */
void s3_close(struct s3 *s3, void (*closed)(void *data), void *data);

enum s3_outcome {
        S3_OK,
        S3_TRANSIENT, /* try again later: unreachable, timeouts, 408, 429, 5xx */
        S3_PERMANENT, /* will not succeed as is: no credentials, no bucket, denied, bad answers */
};

struct s3_list_result {
        enum s3_outcome outcome;
        bool cancelled;
        bool too_many;          /* S3_PERMANENT: more than `max` objects */
        bool versioned;         /* listed with ListObjectVersions */
        int64_t retry_after_ms; /* -1 if none */
        char code[48];          /* S3's error Code, or ours */
        char message[512];      /* one sentence, server text sanitised, no secret */
        const char *bucket;
        const char *prefix;
        struct s3xml_object *objects; /* S3_OK: the objects below the prefix (folder markers
                                         skipped), in key order; the callback may take
                                         their strings (set them to NULL) */
        size_t n;
};

typedef void s3_list_cb(void *data, struct s3_list_result *result);

/*
 * List the objects under `uri`, at most `max` (more is too_many). cb(data,
 * result) is called once, later. Returns the listing (for s3_list_cancel),
 * or NULL when out of memory (cb is not called then).
 */
struct s3_list *s3_list_start(struct s3 *s3, const char *uri, int64_t max, s3_list_cb *cb,
                              void *data);
/* Stop a listing: its callback comes later with cancelled set. */
void s3_list_cancel(struct s3_list *l);

/* `path` is the cached copy (valid during the callback). */
typedef void s3_fetch_cb(void *data, int code, const char *message, const char *path);

/*
 * Make the object `link` ("s3://bucket/key") available as a local file
 * through the cache: pinned to `version_id` when given, and checked against
 * `etag` (the recorded ETag, quotes optional): the answer's ETag must be it,
 * and for a single-part object (an ETag of 32 hex digits) so must the MD5 of
 * the bytes; `size` >= 0 must match too. A changed object is FERRY_EBACKEND
 * with a sentence saying so; a missing one FERRY_ENOTFOUND; an unreachable
 * store FERRY_ECONNECT. Concurrent fetches of one object share one transfer.
 */
void s3_fetch(struct s3 *s3, const char *link, const char *version_id, const char *etag,
              int64_t size, s3_fetch_cb *cb, void *data);

#endif
