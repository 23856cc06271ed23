/*
 * proto.h — ferry's wire protocol: the only code that knows the byte layout.
 *
 * A frame is a 4-byte big-endian length N (1 <= N <= PROTO_FRAME_MAX)
 * followed by N bytes of UTF-8 JSON holding one object. Requests carry
 * "id" (integer) and "op" (string); replies carry the same "id" and either
 * "ok": true with results or "ok": false with "error": {code, message}.
 * Pure code: no I/O. See PROTOCOL.md beside this file for every operation.
 */
#ifndef FERRY_PROTO_H
#define FERRY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ferry_base.h"

/*
 * Bump whenever the wire contract changes (ops, fields, or their meaning).
 * 2: files travel as descriptors (SCM_RIGHTS), never as paths; artifact.begin/
 *    add/commit/abort for versions larger than one frame; download.open/
 *    files/close hand the client descriptors to copy from; stage is gone.
 */
#define PROTO_VERSION 2
#define PROTO_HEADER_LEN 4
#define PROTO_FRAME_MAX (1024 * 1024)
#define PROTO_NAME_MAX 100
#define PROTO_LOGICAL_PATH_MAX 1024
#define PROTO_ERRMSG_MAX 512
/* Descriptors one frame may carry (Linux passes at most 253 per message). */
#define PROTO_MAX_FDS 250

/* ---- operations ---- */

/* Every operation of PROTOCOL.md: the one list both sides name them from. */
#define PROTO_OPS(XX)                                                                              \
        XX(HELLO, "hello")                                                                         \
        XX(EXPERIMENT_CREATE, "experiment.create")                                                 \
        XX(ARTIFACT_LOG, "artifact.log")                                                           \
        XX(ARTIFACT_BEGIN, "artifact.begin")                                                       \
        XX(ARTIFACT_ADD, "artifact.add")                                                           \
        XX(ARTIFACT_COMMIT, "artifact.commit")                                                     \
        XX(ARTIFACT_ABORT, "artifact.abort")                                                       \
        XX(STATUS, "status")                                                                       \
        XX(LS, "ls")                                                                               \
        XX(WAIT, "wait")                                                                           \
        XX(RETRY, "retry")                                                                         \
        XX(PAUSE, "pause")                                                                         \
        XX(CACHE, "cache")                                                                         \
        XX(RECOVER, "recover")                                                                     \
        XX(GET, "get")                                                                             \
        XX(DOWNLOAD_OPEN, "download.open")                                                         \
        XX(DOWNLOAD_FILES, "download.files")                                                       \
        XX(DOWNLOAD_CLOSE, "download.close")                                                       \
        XX(CANCEL, "cancel")

enum proto_op {
#define PROTO_OP_ENUM(id, name) PROTO_OP_##id,
        PROTO_OPS(PROTO_OP_ENUM)
#undef PROTO_OP_ENUM
            PROTO_OP_COUNT
};

/* The wire name of an operation. */
const char *proto_op_name(enum proto_op op);
/* The operation with wire name `name`, or -1. */
int proto_op_from_name(const char *name);

/* ---- framing ---- */

/*
 * Serialize `msg` into a newly allocated frame (header + JSON) in *out.
 * Return 0, FERRY_ETOOBIG if the JSON exceeds PROTO_FRAME_MAX, or FERRY_ENOMEM.
 */
int proto_frame_encode(const cJSON *msg, char **out, size_t *out_len);

/* Incremental decoder: feed bytes as they arrive, take whole frames out. */
struct proto_decoder {
        char *buf;  /* owned; bytes received and not yet consumed */
        size_t len; /* bytes in buf */
        size_t cap; /* allocated size of buf: one maximal frame at most, unless a read
                       brings the start of the next frame with it */
        size_t off; /* start of the first unconsumed byte */
};

void proto_decoder_init(struct proto_decoder *dec);
void proto_decoder_free(struct proto_decoder *dec);
/* Append bytes. Return 0, or FERRY_ENOMEM (decoder unchanged). */
int proto_decoder_feed(struct proto_decoder *dec, const char *data, size_t len);
/*
 * Take the next complete frame: return 1 and point *json and *len at its payload
 * (valid until the next feed/next call), 0 when more bytes are needed, or
 * FERRY_ETOOBIG / FERRY_EPROTO when the header announces a length of 0 or
 * more than PROTO_FRAME_MAX (the stream cannot be resynchronised after that).
 */
int proto_decoder_next(struct proto_decoder *dec, const char **json, size_t *len);
/* True when a partial frame is buffered (a peer that leaves now left mid-frame). */
bool proto_decoder_partial(const struct proto_decoder *dec);

/* ---- descriptors travelling with frames ---- */

/*
 * A frame may carry file descriptors (SCM_RIGHTS), attached by the sender to
 * the sendmsg() that sends the frame's first byte, and counted by the frame's
 * "fds" field. The kernel delivers them with the read that ends inside the
 * skb they came with, and never reads past that skb in the same call: so the
 * descriptors of one read belong to the frame holding the LAST byte of that
 * read. A proto_fdq keeps received batches, each tagged with the stream
 * offset just past its read, until the frame they belong to is decoded.
 * Pure bookkeeping: the caller receives and closes descriptors.
 */
struct proto_fd_batch {
        uint64_t end; /* stream offset just past the read that brought them */
        int *fds;
        int n;
        struct proto_fd_batch *next;
};

struct proto_fdq {
        struct proto_fd_batch *head, *tail;
        int count; /* descriptors queued */
};

void proto_fdq_init(struct proto_fdq *q);
/* Queue `n` descriptors (copied) received with the read that ended at `end`. 0 or ENOMEM. */
int proto_fdq_push(struct proto_fdq *q, uint64_t end, const int *fds, int n);
/*
 * The descriptors of the frame occupying stream bytes [start, end): 0 with
 * *fds (malloc'd, the caller's; NULL when none) and *n; FERRY_EPROTO when a
 * batch came with a read that ended before this frame (a frame that declared
 * none got some) or two batches fall in one frame — the stream is not
 * trustworthy: close the connection.
 */
int proto_fdq_take(struct proto_fdq *q, uint64_t start, uint64_t end, int **fds, int *n);
/* Hand every queued descriptor to fn (to close) and empty the queue. */
void proto_fdq_drain(struct proto_fdq *q, void (*fn)(int fd, void *data), void *data);

/* ---- UTF-8 ---- */

/* True when the `len` bytes at s are well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
bool proto_utf8_valid(const char *s, size_t len);
/* Cut an incomplete character off the end of s (after a truncating snprintf). */
void proto_utf8_trim(char *s);
/*
 * Copy text from a peer (a server's message, a client's name) into dst for a
 * log line or a message: control characters (C0, DEL, C1) and bytes that are
 * not UTF-8 become visible escapes (\xNN, \uNNNN), the result is cut at a
 * character boundary to fit dstlen. Returns the length written.
 */
size_t proto_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);

/* ---- envelopes ---- */

cJSON *proto_request_new(uint64_t id, const char *op);
cJSON *proto_reply_ok(uint64_t id);
/* A refusal; `fmt` formats the message. Never returns NULL unless out of memory. */
cJSON *proto_reply_error(uint64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Parse a request frame. On success return 0 with *out owning the object and
 * *id, *op pointing into it. On failure return FERRY_EPROTO (not JSON, not an
 * object, missing/ill-typed id or op) or FERRY_EINVAL (not UTF-8, or a string
 * holding NUL) with a message in err; *id is the request's id when it could
 * be read, else 0.
 */
int proto_request_parse(const char *json, size_t len, cJSON **out, uint64_t *id, const char **op,
                        char *err, size_t errlen);

/*
 * Parse a reply frame: return 0 for "ok": true (*out owns the object), the
 * negative code of the error for "ok": false (message copied to err), or
 * FERRY_EPROTO when it is not a well-formed reply.
 */
int proto_reply_parse(const char *json, size_t len, cJSON **out, uint64_t *id, char *err,
                      size_t errlen);

/* ---- strict field access: each returns 0 or FERRY_EINVAL with a message ---- */

/* Fail with the first key of `obj` not in the NULL-terminated `allowed` list. */
int proto_check_keys(const cJSON *obj, const char *const *allowed, char *err, size_t errlen);
/* *out is NULL when absent and not required. JSON null counts as absent. */
int proto_get_string(const cJSON *obj, const char *key, bool required, const char **out, char *err,
                     size_t errlen);
int proto_get_int(const cJSON *obj, const char *key, bool required, int64_t def, int64_t *out,
                  char *err, size_t errlen);
int proto_get_bool(const cJSON *obj, const char *key, bool def, bool *out, char *err,
                   size_t errlen);
/* An array of strings (each non-empty, at most PROTO_NAME_MAX bytes). */
int proto_get_string_array(const cJSON *obj, const char *key, const cJSON **out, char *err,
                           size_t errlen);
/* A JSON object (for metadata); *out NULL when absent. */
int proto_get_object(const cJSON *obj, const char *key, bool required, const cJSON **out, char *err,
                     size_t errlen);

/* ---- value rules shared by client and daemon ---- */

/* Artifact names: 1..100 bytes of UTF-8, no '/', ':' or control characters. */
int proto_validate_name(const char *name, const char *what, char *err, size_t errlen);
/*
 * Logical paths: relative, '/'-separated, no empty, "." or ".." component,
 * no backslash or control character, at most PROTO_LOGICAL_PATH_MAX bytes.
 */
int proto_validate_logical_path(const char *path, char *err, size_t errlen);
/* Experiment keys: 32..50 ASCII letters and digits. */
int proto_validate_experiment_key(const char *key, char *err, size_t errlen);

struct proto_semver {
        uint64_t major, minor, patch;
        char pre[128]; /* pre-release identifiers without '-', "" if none */
};
/* Strict semver 2.0.0 (build metadata accepted and ignored). 0 or FERRY_EINVAL. */
int proto_semver_parse(const char *s, struct proto_semver *out);
/* <0, 0, >0 by semver precedence. */
int proto_semver_cmp(const struct proto_semver *a, const struct proto_semver *b);

/*
 * Split "[workspace/]name[:version_or_alias]" on the first '/', then the first
 * ':'. Each out-buffer gets "" when the part is absent. Return 0 or FERRY_EINVAL.
 */
int proto_spec_parse(const char *spec, char *workspace, size_t wlen, char *name, size_t nlen,
                     char *version, size_t vlen, char *err, size_t errlen);

#endif /* FERRY_PROTO_H */
