/*
 * http.h — ferryd's HTTP engine: libcurl's multi interface driven by the libuv loop.
 *
 * An engine runs at most `max_transfers` requests at once and queues the rest
 * (FIFO); connections are kept alive and reused. Request bodies are copied or,
 * for multipart file parts, streamed from disk; responses go to memory (capped
 * at `max_body`) or, for a 2xx, to an output file. GET and HEAD follow up to 5
 * redirects; other methods return the 3xx. Single-threaded: call everything
 * from the loop's thread.
 *
 * Ownership: a request belongs to the caller until http_engine_submit()
 * succeeds, then to the engine. The engine calls `done` exactly once, on the
 * loop and never from inside an http_* call, and frees the request and its
 * response when `done` returns. Strings passed in are copied.
 * Functions return 0 or a negative FERRY_E* code (ferry.h).
 */
#ifndef FERRY_HTTP_H
#define FERRY_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_config {
        int max_transfers;      /* transfers running at once (16) */
        long connect_timeout_s; /* per connection attempt (10) */
        long low_speed_limit;   /* abort below this many bytes/s ... (1024) */
        long low_speed_time_s;  /* ... sustained for this long (60) */
        long deadline_base_s;   /* every transfer ends within this (600) ... */
        long min_rate_bps;      /* ... plus its known size at this rate (32768) */
        int verify_tls;         /* verify peer and host name (1) */
        const char *ca_file;    /* CA bundle instead of the system's (NULL); copied */
        size_t max_body;        /* cap on a response body kept in memory (1 MiB) */
};

struct http_response {
        long status;            /* final HTTP status; 0 when no response arrived */
        int err;                /* 0, or why the transfer failed, see http_classify() */
        int unreachable;        /* the server could not be reached at all (resolve or connect) */
        int cancelled;          /* stopped by http_engine_cancel() or http_engine_close() */
        int connected;          /* a connection to the server was made */
        long retry_after_s;     /* Retry-After of the final response in seconds, -1 if none */
        char content_type[128]; /* of the final response, "" if none */
        char *body;             /* NUL-terminated, never NULL; "" for a 2xx sent to a file.
                                   A non-2xx body over max_body is cut there and the transfer
                                   ended: a body that never ends cannot hold a slot. */
        size_t body_len;
        int body_cut;    /* the body was cut at max_body */
        char error[256]; /* one sentence when err != 0 or status is not 2xx, else "" */
        char etag[256];  /* ETag of the final response as sent (quotes kept), "" if none */
};

enum http_outcome { HTTP_OK, HTTP_TRANSIENT, HTTP_PERMANENT };

/*
 * HTTP_OK: 2xx and err == 0. HTTP_TRANSIENT (retry later): cancelled, err
 * FERRY_ECONNECT (unreachable), FERRY_ETIMEDOUT (connect or low-speed timeout),
 * FERRY_EIO (connection broke), status 408, 429 or 5xx. HTTP_PERMANENT: any
 * other status, or err FERRY_ETOOBIG (2xx body over max_body), FERRY_EBACKEND
 * (TLS, redirects, protocol), FERRY_ENOSPC / FERRY_EFAILED (local file).
 */
enum http_outcome http_classify(const struct http_response *resp);

struct http_engine;
struct http_request;

void http_config_defaults(struct http_config *cfg);
/* cfg NULL: defaults; copied. Calls curl_global_init(). Release with http_engine_close(). */
int http_engine_new(struct http_engine **out, uv_loop_t *loop, const struct http_config *cfg);
/*
 * Cancel every request, close all uv handles, free the engine, then call
 * closed_cb(data) (may be NULL). The cancelled requests' `done` callbacks run
 * later, from the loop, before closed_cb: what they use must live until then.
 * Until closed_cb, submit returns FERRY_EINVAL and cancel FERRY_ENOTFOUND.
 */
void http_engine_close(struct http_engine *engine, void (*closed_cb)(void *data), void *data);

/*
 * Queue req; on success the engine owns it and calls done(req, resp, data).
 * On error req is unchanged and still the caller's.
 */
int http_engine_submit(struct http_engine *engine, struct http_request *req,
                       void (*done)(struct http_request *req, const struct http_response *resp,
                                    void *data),
                       void *data);
/*
 * Stop a queued or running request: its `done` runs later from the loop with
 * resp->cancelled set. FERRY_ENOTFOUND if it has already finished (`done` then
 * reports the real outcome). req is valid only until its `done` has returned.
 */
int http_engine_cancel(struct http_engine *engine, struct http_request *req);
/* Body bytes sent and received since the engine started (for rate displays). */
uint64_t http_engine_bytes_sent(const struct http_engine *engine);
uint64_t http_engine_bytes_received(const struct http_engine *engine);
void http_engine_get_counts(const struct http_engine *engine, int *running, int *queued);

/* NULL when out of memory or method/url is empty or holds control characters. */
struct http_request *http_request_new(const char *method, const char *url);
/* Free a request that was never submitted (or whose submit failed). */
void http_request_free(struct http_request *req);
int http_request_add_header(struct http_request *req, const char *name, const char *value);
/* A body held in memory, copied; the body and the parts are exclusive (FERRY_EINVAL). */
int http_request_set_body(struct http_request *req, const char *content_type, const char *body,
                          size_t len);
/* multipart/form-data parts: a string, or a file streamed from disk at send time. */
int http_request_add_part_string(struct http_request *req, const char *name, const char *value);
/* filename NULL: the path's base name. FERRY_ENOTFOUND / FERRY_EIO if unreadable now. */
int http_request_add_part_file(struct http_request *req, const char *name, const char *path,
                               const char *filename);
/*
 * A file part read from the open descriptor `fd` (the request takes it over,
 * also on failure): `size` bytes from offset 0, sent as `filename`.
 */
int http_request_add_part_fd(struct http_request *req, const char *name, int fd, int64_t size,
                             const char *filename);
/*
 * Bytes the transfer is expected to move (body sent or received): its
 * deadline becomes deadline_base_s + bytes / min_rate_bps. Without it the
 * deadline is deadline_base_s plus the size of the body parts.
 */
void http_request_set_expected_size(struct http_request *req, int64_t bytes);
/*
 * Sign the request with AWS Signature Version 4 (libcurl's CURLOPT_AWS_SIGV4):
 * `provider` as curl takes it ("aws:amz:<region>:s3"), the access key and
 * the secret (copied; wiped when the request is freed). Never logged.
 */
int http_request_set_aws_sigv4(struct http_request *req, const char *provider,
                               const char *access_key, const char *secret);
/* GET/HEAD: do not follow redirects (the 3xx comes back as the answer). */
void http_request_no_redirects(struct http_request *req);
/*
 * Write a 2xx response body to path (created or truncated, mode 0666 & ~umask)
 * instead of memory; other statuses stay in memory and leave path untouched.
 * On failure a partial file may remain: the caller removes it.
 */
int http_request_set_output_file(struct http_request *req, const char *path);

#endif
