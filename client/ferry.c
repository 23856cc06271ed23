/*
 * ferry.c — libferry, the client of ferryd: the connection (blocking
 * request/reply over the Unix socket), the typed requests, and the artifact
 * builder. Framing and value rules come from proto/; nothing here prints,
 * exits or aborts.
 */
#include "proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FERRY_CONNECT_TIMEOUT_MS 10000
/* Extra time given to the daemon to answer a wait after its own timeout. */
#define FERRY_WAIT_GRACE_MS 10000
#define FERRY_ERR_MAX 2048
#define FERRY_URI_MAX 4096
#define FERRY_RECV_CHUNK 16384
#define FERRY_START_HINT "start it with `ferryd` or `systemctl --user start ferryd`"

struct ferry_client {
        int fd;                   /* the connection, or -1 once closed */
        uint64_t next_id;         /* id of the next request; 0 is never used */
        int timeout_ms;           /* limit for typed requests; <= 0: none */
        int limit_ms;             /* limit of the request in flight, for messages */
        struct proto_decoder dec; /* bytes received and not yet consumed */
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char backend[32];        /* from the hello reply */
        char err[FERRY_ERR_MAX]; /* the last failure, one sentence */
        /* The download started by ferry_download_start() and not yet finished. */
        struct {
                uint64_t id;             /* its request id; 0: none */
                bool done;               /* its outcome is known: rc, rep, err */
                int rc;                  /* 0, or the code of its failure */
                cJSON *rep;              /* the ok reply, when rc == 0 */
                char err[FERRY_ERR_MAX]; /* the sentence of its failure */
        } dl;
};

struct ferry_artifact {
        char *name;
        char *type;      /* NULL: the daemon's default */
        char *version;   /* NULL: the backend picks one */
        cJSON *aliases;  /* array of strings */
        cJSON *tags;     /* array of strings */
        cJSON *metadata; /* object, or NULL */
        cJSON *assets;   /* array of asset objects in wire form, in order */
        char err[FERRY_ERR_MAX];
};

static const char *plural(long long n)
{
        return n == 1 ? "" : "s";
}

static int client_fail(struct ferry_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int artifact_fail(struct ferry_artifact *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the sentence for `code` on the client; return `code`. */
static int client_fail(struct ferry_client *c, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
        return code;
}

/* Record the sentence for `code` on the artifact; return `code`. */
static int artifact_fail(struct ferry_artifact *a, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(a->err, sizeof(a->err), fmt, ap);
        va_end(ap);
        return code;
}

void ferry_free(void *ptr)
{
        free(ptr);
}

/* A copy of `s` that the caller frees with ferry_free(), or NULL. */
static char *dup_string(const char *s)
{
        return s ? strdup(s) : NULL;
}

/* Serialize `obj` into a malloc'd string (not cJSON's allocator), or NULL. */
static char *json_print(const cJSON *obj)
{
        char *tmp = cJSON_PrintUnformatted(obj);
        char *s;

        if (tmp == NULL)
                return NULL;
        s = strdup(tmp);
        cJSON_free(tmp);
        return s;
}

/* ---- time ---- */

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_after(int timeout_ms)
{
        return timeout_ms > 0 ? now_ms() + timeout_ms : -1;
}

/* Milliseconds left before `deadline` as poll() takes them: -1 for none, else >= 0. */
static int time_left(int64_t deadline)
{
        int64_t left;

        if (deadline < 0)
                return -1;
        left = deadline - now_ms();
        if (left <= 0)
                return 0;
        return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait for `events` on `fd` until `deadline`: 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline)
{
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc;

        for (;;) {
                rc = poll(&pfd, 1, time_left(deadline));
                if (rc >= 0)
                        return rc > 0 ? 1 : 0;
                if (errno != EINTR)
                        return -1;
        }
}

/* ---- connection ---- */

int ferry_default_socket_path(char *buf, size_t len)
{
        const char *env;
        int n;

        if (buf == NULL || len == 0)
                return FERRY_EINVAL;
        env = getenv("FERRY_SOCKET");
        if (env != NULL && env[0] != '\0')
                n = snprintf(buf, len, "%s", env);
        else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && env[0] != '\0')
                n = snprintf(buf, len, "%s/ferry/ferryd.sock", env);
        else
                n = snprintf(buf, len, "/tmp/ferry-%u/ferryd.sock", (unsigned)getuid());
        if (n < 0 || (size_t)n >= len) {
                buf[0] = '\0';
                return FERRY_EINVAL;
        }
        return 0;
}

/* Close the connection; the client keeps its last error. */
static void client_disconnect(struct ferry_client *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        proto_decoder_free(&c->dec);
        proto_decoder_init(&c->dec);
}

/* Turn a connect() errno into a code and one sentence. */
static int client_connect_error(struct ferry_client *c, int err)
{
        switch (err) {
        case ENOENT:
        case ENOTDIR:
                return client_fail(c, FERRY_ECONNECT,
                                   "ferryd is not running (no socket at %s); " FERRY_START_HINT,
                                   c->path);
        case ECONNREFUSED:
                return client_fail(
                    c, FERRY_ECONNECT,
                    "ferryd is not running (nothing listens on %s); " FERRY_START_HINT, c->path);
        case EACCES:
        case EPERM:
                return client_fail(c, FERRY_EPERM,
                                   "permission denied connecting to ferryd at %s; the socket "
                                   "belongs to another user",
                                   c->path);
        default:
                return client_fail(c, FERRY_ECONNECT, "cannot connect to ferryd at %s: %s", c->path,
                                   strerror(err));
        }
}

/* Connect the non-blocking socket before `deadline`. Return 0 or a code. */
static int client_open(struct ferry_client *c, int64_t deadline)
{
        struct sockaddr_un sa;
        socklen_t slen;
        int fd, err, rc;

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return client_fail(c, FERRY_ECONNECT, "cannot create a socket: %s",
                                   strerror(errno));
        for (;;) {
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        break;
                err = errno;
                if (err == EAGAIN) {
                        /* The daemon's backlog is full: try again shortly. */
                        int left = time_left(deadline);

                        if (left == 0)
                                goto timeout;
                        poll(NULL, 0, left < 0 || left > 10 ? 10 : left);
                        continue;
                }
                if (err != EINPROGRESS && err != EINTR)
                        goto fail;
                rc = wait_fd(fd, POLLOUT, deadline);
                if (rc == 0)
                        goto timeout;
                err = errno;
                if (rc < 0)
                        goto fail;
                slen = sizeof(err);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &slen) != 0)
                        err = errno;
                if (err != 0)
                        goto fail;
                break;
        }
        c->fd = fd;
        return 0;
timeout:
        close(fd);
        return client_fail(c, FERRY_ETIMEDOUT,
                           "ferryd at %s did not accept the connection in time; it may be "
                           "overloaded or stuck",
                           c->path);
fail:
        close(fd);
        return client_connect_error(c, err);
}

/* Describe the limit of the request in flight, for timeout messages. */
static const char *client_limit(const struct ferry_client *c, char *buf, size_t len)
{
        snprintf(buf, len, "%g s", c->limit_ms / 1000.0);
        return buf;
}

/*
 * Send all of `buf` before `deadline`. Return 0, FERRY_ECLOSED when the daemon
 * has gone (no message: the caller looks for its last words), or another code
 * with the message set.
 */
static int client_send(struct ferry_client *c, const char *buf, size_t len, int64_t deadline,
                       const char *op)
{
        size_t off = 0;
        ssize_t n;
        char lim[32];
        int rc, err;

        while (off < len) {
                n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
                if (n >= 0) {
                        off += (size_t)n;
                        continue;
                }
                err = errno;
                if (err == EINTR)
                        continue;
                if (err == EPIPE || err == ECONNRESET)
                        return FERRY_ECLOSED;
                if (err == EAGAIN || err == EWOULDBLOCK) {
                        rc = wait_fd(c->fd, POLLOUT, deadline);
                        if (rc > 0)
                                continue;
                        if (rc == 0) {
                                /* Half a frame leaves the stream unusable. */
                                if (off > 0)
                                        client_disconnect(c);
                                return client_fail(c, FERRY_ETIMEDOUT,
                                                   "ferryd did not take the \"%s\" request "
                                                   "within %s",
                                                   op, client_limit(c, lim, sizeof(lim)));
                        }
                        err = errno;
                }
                client_disconnect(c);
                return client_fail(c, FERRY_EIO, "cannot send \"%s\" to ferryd: %s", op,
                                   strerror(err));
        }
        return 0;
}

/* Keep the outcome of the pending download, read while waiting for another reply. */
static void client_keep_download(struct ferry_client *c, int rc, cJSON *rep, const char *msg)
{
        c->dl.done = true;
        c->dl.rc = rc;
        c->dl.rep = rep;
        snprintf(c->dl.err, sizeof(c->dl.err), "%s", rc != 0 ? msg : "");
}

/*
 * Read frames until the reply to request `id` arrives, before `deadline`.
 * The reply to a pending download is kept for ferry_download_finish(); replies
 * to other ids (late answers to requests that timed out) are skipped; an
 * error reply with id 0 concerns the connection and is taken. Return 0 with
 * *rep owning the reply, or a code with the message set. With `late` (may be
 * NULL), reaching the deadline sets *late and returns FERRY_ETIMEDOUT without
 * a message, so that it is told apart from the daemon's "timeout" refusal.
 */
static int client_recv(struct ferry_client *c, uint64_t id, int64_t deadline, const char *op,
                       cJSON **rep, bool *late)
{
        char buf[FERRY_RECV_CHUNK];
        char msg[PROTO_ERRMSG_MAX];
        char lim[32];
        const char *json;
        size_t len;
        uint64_t rid;
        ssize_t n;
        int rc, err;

        *rep = NULL;
        if (late != NULL)
                *late = false;
        for (;;) {
                rc = proto_decoder_next(&c->dec, &json, &len);
                if (rc < 0) {
                        client_disconnect(c);
                        return client_fail(c, rc,
                                           "ferryd sent a malformed frame (%s); the connection "
                                           "was closed",
                                           ferry_strerror(rc));
                }
                if (rc == 1) {
                        rc = proto_reply_parse(json, len, rep, &rid, msg, sizeof(msg));
                        if (rid != id && rid != 0) {
                                if (rid == c->dl.id && !c->dl.done)
                                        client_keep_download(c, rc, *rep, msg);
                                else
                                        cJSON_Delete(*rep);
                                *rep = NULL;
                                continue;
                        }
                        if (rc < 0)
                                return client_fail(c, rc, "%s", msg);
                        return 0;
                }
                rc = wait_fd(c->fd, POLLIN, deadline);
                if (rc == 0 && late != NULL) {
                        *late = true;
                        return FERRY_ETIMEDOUT;
                }
                if (rc == 0)
                        return client_fail(c, FERRY_ETIMEDOUT,
                                           "ferryd did not answer \"%s\" within %s", op,
                                           client_limit(c, lim, sizeof(lim)));
                if (rc < 0) {
                        err = errno;
                        goto io_error;
                }
                n = recv(c->fd, buf, sizeof(buf), 0);
                if (n > 0) {
                        if (proto_decoder_feed(&c->dec, buf, (size_t)n) != 0) {
                                client_disconnect(c);
                                return client_fail(c, FERRY_ENOMEM,
                                                   "out of memory reading the reply to \"%s\"", op);
                        }
                        continue;
                }
                err = n == 0 ? 0 : errno;
                if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK)
                        continue;
                if (err == 0 || err == ECONNRESET) {
                        int partial = proto_decoder_partial(&c->dec);

                        client_disconnect(c);
                        return client_fail(c, FERRY_ECLOSED,
                                           partial ? "ferryd closed the connection in the middle "
                                                     "of its reply to \"%s\""
                                                   : "ferryd closed the connection before "
                                                     "replying to \"%s\"",
                                           op);
                }
                goto io_error;
        }
io_error:
        client_disconnect(c);
        return client_fail(c, FERRY_EIO, "cannot read the reply to \"%s\" from ferryd: %s", op,
                           strerror(err));
}

/*
 * Send the request `req` (consumed) before `deadline`; *id receives its id and
 * `op` (of `oplen` bytes) its op, for the messages about its reply. Return 0,
 * or a negative code with the message in c->err (the daemon's own message
 * when it hung up after refusing).
 */
static int client_send_request(struct ferry_client *c, cJSON *req, int64_t deadline, char *op,
                               size_t oplen, uint64_t *id)
{
        const cJSON *v;
        char *frame = NULL;
        cJSON *rep = NULL;
        size_t len;
        int rc;

        v = cJSON_GetObjectItemCaseSensitive(req, "op");
        snprintf(op, oplen, "%s", cJSON_IsString(v) ? v->valuestring : "?");
        *id = (uint64_t)cJSON_GetObjectItemCaseSensitive(req, "id")->valuedouble;
        if (c->fd < 0) {
                cJSON_Delete(req);
                return client_fail(c, FERRY_ECLOSED,
                                   "not connected to ferryd: the connection was closed; connect "
                                   "again");
        }
        rc = proto_frame_encode(req, &frame, &len);
        cJSON_Delete(req);
        if (rc == FERRY_ETOOBIG)
                return client_fail(c, rc,
                                   "the \"%s\" request is larger than the %d MiB frame limit", op,
                                   PROTO_FRAME_MAX / (1024 * 1024));
        if (rc != 0)
                return client_fail(c, FERRY_ENOMEM, "out of memory encoding \"%s\"", op);
        rc = client_send(c, frame, len, deadline, op);
        free(frame);
        if (rc == FERRY_ECLOSED) {
                /* The daemon hung up: take its last words if it left a refusal. */
                rc = client_recv(c, *id, now_ms(), op, &rep, NULL);
                cJSON_Delete(rep);
                client_disconnect(c);
                if (rc == 0 || rc == FERRY_ETIMEDOUT)
                        rc = client_fail(c, FERRY_ECLOSED,
                                         "ferryd closed the connection while \"%s\" was being "
                                         "sent",
                                         op);
        }
        return rc;
}

/*
 * Send the request `req` (consumed) and wait for its reply until `deadline`.
 * Return 0 with *rep owning the reply object, or a negative code with the
 * message in c->err (the daemon's own message when it refused).
 */
static int client_roundtrip(struct ferry_client *c, cJSON *req, int64_t deadline, cJSON **rep)
{
        char op[64];
        uint64_t id;
        int rc;

        *rep = NULL;
        rc = client_send_request(c, req, deadline, op, sizeof(op), &id);
        if (rc != 0)
                return rc;
        return client_recv(c, id, deadline, op, rep, NULL);
}

/* A request envelope with the client's next id, or NULL when out of memory. */
static cJSON *client_request(struct ferry_client *c, const char *op)
{
        return proto_request_new(c->next_id++, op);
}

/* Round trip with a limit of `timeout_ms` (<= 0: none). */
static int client_call(struct ferry_client *c, cJSON *req, int timeout_ms, cJSON **rep)
{
        c->limit_ms = timeout_ms;
        return client_roundtrip(c, req, deadline_after(timeout_ms), rep);
}

static int client_nomem(struct ferry_client *c)
{
        return client_fail(c, FERRY_ENOMEM, "out of memory");
}

static int client_hello(struct ferry_client *c, int64_t deadline)
{
        cJSON *req, *rep = NULL;
        const char *backend;
        int64_t protocol;
        int rc;

        req = client_request(c, "hello");
        if (req == NULL || !cJSON_AddNumberToObject(req, "protocol", PROTO_VERSION) ||
            !cJSON_AddStringToObject(req, "client", "libferry/" FERRY_VERSION_STRING)) {
                cJSON_Delete(req);
                return client_nomem(c);
        }
        rc = client_roundtrip(c, req, deadline, &rep);
        if (rc != 0)
                return rc;
        if (proto_get_int(rep, "protocol", true, 0, &protocol, NULL, 0) != 0) {
                rc = client_fail(c, FERRY_EPROTO,
                                 "ferryd at %s answered hello without a protocol version", c->path);
                goto out;
        }
        if (protocol != PROTO_VERSION) {
                rc = client_fail(c, FERRY_EVERSION,
                                 "ferryd at %s speaks protocol %lld, libferry %s speaks protocol "
                                 "%d; install matching versions",
                                 c->path, (long long)protocol, FERRY_VERSION_STRING, PROTO_VERSION);
                goto out;
        }
        if (proto_get_string(rep, "backend", false, &backend, NULL, 0) == 0 && backend != NULL)
                snprintf(c->backend, sizeof(c->backend), "%s", backend);
out:
        cJSON_Delete(rep);
        return rc;
}

int ferry_connect(struct ferry_client **out, const char *socket_path, int timeout_ms)
{
        struct ferry_client *c;
        int64_t deadline;
        int rc;

        if (out == NULL)
                return FERRY_EINVAL;
        *out = NULL;
        c = calloc(1, sizeof(*c));
        if (c == NULL)
                return FERRY_ENOMEM;
        c->fd = -1;
        c->next_id = 1;
        proto_decoder_init(&c->dec);
        *out = c;
        if (socket_path == NULL) {
                if (ferry_default_socket_path(c->path, sizeof(c->path)) != 0)
                        return client_fail(c, FERRY_EINVAL,
                                           "the default socket path is longer than %zu bytes; "
                                           "set FERRY_SOCKET to a shorter one",
                                           sizeof(c->path) - 1);
        } else if (socket_path[0] == '\0' || strlen(socket_path) >= sizeof(c->path)) {
                return client_fail(c, FERRY_EINVAL,
                                   "socket path \"%s\" must be 1 to %zu bytes long", socket_path,
                                   sizeof(c->path) - 1);
        } else {
                memcpy(c->path, socket_path, strlen(socket_path) + 1);
        }
        if (timeout_ms <= 0)
                timeout_ms = FERRY_CONNECT_TIMEOUT_MS;
        c->limit_ms = timeout_ms;
        deadline = now_ms() + timeout_ms;
        rc = client_open(c, deadline);
        if (rc != 0)
                return rc;
        rc = client_hello(c, deadline);
        if (rc != 0)
                client_disconnect(c);
        return rc;
}

void ferry_close(struct ferry_client *client)
{
        if (client == NULL)
                return;
        client_disconnect(client);
        proto_decoder_free(&client->dec);
        cJSON_Delete(client->dl.rep);
        free(client);
}

const char *ferry_last_error(const struct ferry_client *client)
{
        return client ? client->err : "";
}

const char *ferry_backend_name(const struct ferry_client *client)
{
        return client ? client->backend : "";
}

int ferry_is_connected(struct ferry_client *client)
{
        struct pollfd p;
        char byte;

        if (client == NULL || client->fd < 0)
                return 0;
        p.fd = client->fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 0) < 0)
                return 0;
        if (p.revents & (POLLERR | POLLNVAL))
                return 0;
        /* Readable with nothing pending means the end of the stream: ferryd went away. */
        if ((p.revents & (POLLIN | POLLHUP)) &&
            recv(client->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
                return 0;
        return 1;
}

void ferry_set_timeout(struct ferry_client *client, int timeout_ms)
{
        if (client != NULL)
                client->timeout_ms = timeout_ms;
}

int ferry_call(struct ferry_client *client, const char *op, const char *args_json, int timeout_ms,
               char **reply_json)
{
        cJSON *req, *args = NULL, *it, *next, *rep = NULL;
        int rc;

        if (reply_json != NULL)
                *reply_json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        if (op == NULL || op[0] == '\0')
                return client_fail(client, FERRY_EINVAL, "the operation name must not be empty");
        if (args_json != NULL) {
                args = cJSON_ParseWithOpts(args_json, NULL, 1);
                if (args == NULL)
                        return client_fail(client, FERRY_EINVAL,
                                           "the arguments of \"%s\" are not valid JSON", op);
                if (!cJSON_IsObject(args)) {
                        cJSON_Delete(args);
                        return client_fail(client, FERRY_EINVAL,
                                           "the arguments of \"%s\" must be a JSON object", op);
                }
        }
        req = client_request(client, op);
        if (req == NULL) {
                cJSON_Delete(args);
                return client_nomem(client);
        }
        for (it = args ? args->child : NULL; it != NULL; it = next) {
                next = it->next;
                if (strcmp(it->string, "id") == 0 || strcmp(it->string, "op") == 0) {
                        cJSON_Delete(args);
                        cJSON_Delete(req);
                        return client_fail(client, FERRY_EINVAL,
                                           "the arguments of \"%s\" may not set \"id\" or \"op\"",
                                           op);
                }
                cJSON_DetachItemViaPointer(args, it);
                cJSON_AddItemToObject(req, it->string, it);
        }
        cJSON_Delete(args);
        rc = client_call(client, req, timeout_ms, &rep);
        if (rc == 0 && reply_json != NULL) {
                *reply_json = json_print(rep);
                if (*reply_json == NULL)
                        rc = client_nomem(client);
        }
        cJSON_Delete(rep);
        return rc;
}

/* ---- typed requests ---- */

/* Hand the reply `rep` (consumed) to the caller without "id" and "ok". */
static int client_reply_out(struct ferry_client *c, cJSON *rep, char **json)
{
        if (json == NULL) {
                cJSON_Delete(rep);
                return 0;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(rep, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(rep, "ok");
        *json = json_print(rep);
        cJSON_Delete(rep);
        return *json ? 0 : client_nomem(c);
}

/* A reply lacking a field the protocol promises. */
static int client_bad_reply(struct ferry_client *c, const char *op, const char *field)
{
        return client_fail(c, FERRY_EPROTO, "ferryd's reply to \"%s\" lacks a valid \"%s\"", op,
                           field);
}

/* Add `value` under `key` unless it is NULL. Return false when out of memory. */
static bool add_string_opt(cJSON *obj, const char *key, const char *value)
{
        return value == NULL || cJSON_AddStringToObject(obj, key, value) != NULL;
}

/* Check an optional workspace or project name; what is "workspace" or "project". */
static int client_check_name(struct ferry_client *c, const char *value, const char *what)
{
        if (value == NULL)
                return 0;
        return proto_validate_name(value, what, c->err, sizeof(c->err));
}

int ferry_stage(struct ferry_client *client, char **token, char **path)
{
        cJSON *req, *rep = NULL;
        const char *t, *p;
        int rc;

        if (client == NULL || token == NULL || path == NULL)
                return FERRY_EINVAL;
        *token = *path = NULL;
        req = client_request(client, "stage");
        if (req == NULL)
                return client_nomem(client);
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (proto_get_string(rep, "token", true, &t, NULL, 0) != 0 || t[0] == '\0') {
                rc = client_bad_reply(client, "stage", "token");
                goto out;
        }
        if (proto_get_string(rep, "path", true, &p, NULL, 0) != 0 || p[0] != '/') {
                rc = client_bad_reply(client, "stage", "path");
                goto out;
        }
        *token = strdup(t);
        *path = strdup(p);
        if (*token == NULL || *path == NULL) {
                free(*token);
                free(*path);
                *token = *path = NULL;
                rc = client_nomem(client);
        }
out:
        cJSON_Delete(rep);
        return rc;
}

static bool artifact_fill(const struct ferry_artifact *a, cJSON *obj);

/* Send artifact.log; return 0 with *rep owning the reply, or a code. */
static int client_log(struct ferry_client *c, const struct ferry_artifact *a,
                      const struct ferry_log_options *o, cJSON **rep)
{
        cJSON *req;
        int64_t job;
        int rc;

        *rep = NULL;
        if (a == NULL || a->name == NULL)
                return client_fail(c, FERRY_EINVAL, "cannot log an artifact that was refused: %s",
                                   a ? a->err : "no artifact");
        if (o != NULL) {
                if (o->experiment != NULL &&
                    proto_validate_experiment_key(o->experiment, c->err, sizeof(c->err)) != 0)
                        return FERRY_EINVAL;
                if ((rc = client_check_name(c, o->workspace, "workspace")) != 0 ||
                    (rc = client_check_name(c, o->project, "project")) != 0)
                        return rc;
        }
        req = client_request(c, "artifact.log");
        if (req == NULL || !artifact_fill(a, req) ||
            (o != NULL && (!add_string_opt(req, "experiment", o->experiment) ||
                           !add_string_opt(req, "workspace", o->workspace) ||
                           !add_string_opt(req, "project", o->project)))) {
                cJSON_Delete(req);
                return client_nomem(c);
        }
        rc = client_call(c, req, c->timeout_ms, rep);
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
        req = client_request(c, "experiment.create");
        if (req == NULL || !add_string_opt(req, "workspace", workspace) ||
            !add_string_opt(req, "project", project) || !add_string_opt(req, "name", name) ||
            !add_string_opt(req, "key", key)) {
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
        req = client_request(client, "wait");
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
                                 (long long)pending, plural(pending), timeout_ms / 1000.0);
        else if (failed > 0)
                rc = client_fail(client, FERRY_EFAILED, "%lld job%s failed", (long long)failed,
                                 plural(failed));
        if (client_reply_out(client, rep, reply_json) != 0)
                return FERRY_ENOMEM;
        return rc;
}

int ferry_status(struct ferry_client *client, char **json)
{
        cJSON *req, *rep = NULL;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        req = client_request(client, "status");
        if (req == NULL)
                return client_nomem(client);
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        return client_reply_out(client, rep, json);
}

/* Check a [workspace/]name[:version_or_alias] spec before it is sent. */
static int client_check_spec(struct ferry_client *c, const char *spec)
{
        char ws[PROTO_NAME_MAX + 1], name[PROTO_NAME_MAX + 1], ver[PROTO_NAME_MAX + 1];

        if (spec == NULL)
                return client_fail(c, FERRY_EINVAL, "an artifact name is required");
        return proto_spec_parse(spec, ws, sizeof(ws), name, sizeof(name), ver, sizeof(ver), c->err,
                                sizeof(c->err));
}

int ferry_get(struct ferry_client *client, const char *spec, char **json)
{
        cJSON *req, *rep = NULL;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        rc = client_check_spec(client, spec);
        if (rc != 0)
                return rc;
        req = client_request(client, "get");
        if (req == NULL || !cJSON_AddStringToObject(req, "name", spec)) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        return client_reply_out(client, rep, json);
}

/* Forget the pending download and whatever is known of it. */
static void client_download_clear(struct ferry_client *c)
{
        cJSON_Delete(c->dl.rep);
        memset(&c->dl, 0, sizeof(c->dl));
}

int ferry_download_start(struct ferry_client *client, const char *spec, const char *dir,
                         enum ferry_overwrite overwrite)
{
        static const char *const modes[] = {"fail", "preserve", "overwrite"};
        char cwd[PATH_MAX], abs[PATH_MAX], op[64];
        uint64_t id;
        cJSON *req;
        int rc;

        if (client == NULL)
                return FERRY_EINVAL;
        if (client->dl.id != 0)
                return client_fail(client, FERRY_EBUSY,
                                   "a download is already in progress on this connection; "
                                   "finish it with ferry_download_finish() first");
        rc = client_check_spec(client, spec);
        if (rc != 0)
                return rc;
        if ((unsigned)overwrite > FERRY_OVERWRITE_REPLACE)
                return client_fail(client, FERRY_EINVAL, "unknown overwrite strategy %d",
                                   (int)overwrite);
        if (dir == NULL || dir[0] == '\0')
                return client_fail(client, FERRY_EINVAL, "a download directory is required");
        /* The daemon writes the files, so it needs an absolute directory. */
        if (dir[0] != '/') {
                while (dir[0] == '.' && dir[1] == '/') /* "./out" reads better as "out" */
                        dir += 2;
                if (getcwd(cwd, sizeof(cwd)) == NULL)
                        return client_fail(client, FERRY_EIO,
                                           "cannot make %s absolute: the current directory is "
                                           "unknown (%s)",
                                           dir, strerror(errno));
                if ((size_t)snprintf(abs, sizeof(abs), "%s%s%s", cwd, strcmp(dir, ".") ? "/" : "",
                                     strcmp(dir, ".") ? dir : "") >= sizeof(abs))
                        return client_fail(client, FERRY_EINVAL,
                                           "download directory %s is too long", dir);
                dir = abs;
        }
        req = client_request(client, "download");
        if (req == NULL || !cJSON_AddStringToObject(req, "name", spec) ||
            !cJSON_AddStringToObject(req, "dir", dir) ||
            !cJSON_AddStringToObject(req, "overwrite", modes[overwrite])) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        client->limit_ms = client->timeout_ms;
        rc = client_send_request(client, req, deadline_after(client->timeout_ms), op, sizeof(op),
                                 &id);
        if (rc != 0)
                return rc;
        client->dl.id = id;
        return 0;
}

int ferry_download_ready(struct ferry_client *client, int timeout_ms)
{
        struct ferry_client *c = client;
        int64_t deadline;
        cJSON *rep = NULL;
        bool late;
        int rc;

        if (c == NULL)
                return FERRY_EINVAL;
        if (c->dl.id == 0)
                return client_fail(c, FERRY_EINVAL,
                                   "no download is in progress on this connection");
        if (c->dl.done)
                return 1;
        if (c->fd < 0) {
                /* Another request on this connection lost it. */
                client_keep_download(c, FERRY_ECLOSED, NULL,
                                     "the connection to ferryd was closed before the download "
                                     "finished");
                return 1;
        }
        deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
        c->limit_ms = timeout_ms;
        rc = client_recv(c, c->dl.id, deadline, "download", &rep, &late);
        if (rc == FERRY_ETIMEDOUT && late)
                return 0;
        client_keep_download(c, rc, rep, c->err);
        return 1;
}

int ferry_download_finish(struct ferry_client *client, char **json)
{
        struct ferry_client *c = client;
        char lim[32];
        cJSON *rep;
        bool late;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (c == NULL)
                return FERRY_EINVAL;
        if (c->dl.id == 0)
                return client_fail(c, FERRY_EINVAL,
                                   "no download is in progress on this connection");
        if (!c->dl.done && c->fd >= 0) {
                c->limit_ms = c->timeout_ms;
                rc = client_recv(c, c->dl.id, deadline_after(c->timeout_ms), "download", &rep,
                                 &late);
                if (rc == FERRY_ETIMEDOUT && late) {
                        /* Our own limit: give up on it; its late reply will be skipped. */
                        client_download_clear(c);
                        return client_fail(c, rc, "ferryd did not answer \"download\" within %s",
                                           client_limit(c, lim, sizeof(lim)));
                }
                client_keep_download(c, rc, rep, c->err);
        } else if (!c->dl.done) {
                client_keep_download(c, FERRY_ECLOSED, NULL,
                                     "the connection to ferryd was closed before the download "
                                     "finished");
        }
        rc = c->dl.rc;
        rep = c->dl.rep;
        c->dl.rep = NULL;
        if (rc != 0)
                snprintf(c->err, sizeof(c->err), "%s", c->dl.err);
        client_download_clear(c);
        if (rc != 0) {
                cJSON_Delete(rep);
                return rc;
        }
        return client_reply_out(c, rep, json);
}

int ferry_download(struct ferry_client *client, const char *spec, const char *dir,
                   enum ferry_overwrite overwrite, char **json)
{
        int rc;

        if (json != NULL)
                *json = NULL;
        rc = ferry_download_start(client, spec, dir, overwrite);
        if (rc != 0)
                return rc;
        return ferry_download_finish(client, json);
}

int ferry_pause(struct ferry_client *client, int paused, char **json)
{
        cJSON *req, *rep = NULL;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        req = client_request(client, "pause");
        if (req == NULL || !cJSON_AddBoolToObject(req, "paused", paused != 0)) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(rep, "paused"))) {
                cJSON_Delete(rep);
                return client_bad_reply(client, "pause", "paused");
        }
        return client_reply_out(client, rep, json);
}

int ferry_cache(struct ferry_client *client, int clear, char **json)
{
        cJSON *req, *rep = NULL;
        int64_t bytes;
        int rc;

        if (json != NULL)
                *json = NULL;
        if (client == NULL)
                return FERRY_EINVAL;
        req = client_request(client, "cache");
        if (req == NULL || (clear && !cJSON_AddTrueToObject(req, "clear"))) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (proto_get_int(rep, "bytes", true, 0, &bytes, NULL, 0) != 0) {
                cJSON_Delete(rep);
                return client_bad_reply(client, "cache", "bytes");
        }
        return client_reply_out(client, rep, json);
}

int ferry_ls(struct ferry_client *client, const char *state, int limit, char **json)
{
        static const char *const states[] = {"active", "queued", "failed", "done", "all"};
        cJSON *req, *rep = NULL;
        size_t i;
        int rc;

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
                                           "done, all",
                                           state);
        }
        if (limit > FERRY_LS_LIMIT_MAX)
                return client_fail(client, FERRY_EINVAL, "the limit must be 1 to %d, not %d",
                                   FERRY_LS_LIMIT_MAX, limit);
        req = client_request(client, "ls");
        if (req == NULL || !add_string_opt(req, "state", state) ||
            (limit > 0 && !cJSON_AddNumberToObject(req, "limit", limit))) {
                cJSON_Delete(req);
                return client_nomem(client);
        }
        rc = client_call(client, req, client->timeout_ms, &rep);
        if (rc != 0)
                return rc;
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(rep, "items"))) {
                cJSON_Delete(rep);
                return client_bad_reply(client, "ls", "items");
        }
        return client_reply_out(client, rep, json);
}

/* ---- artifact builder ---- */

static int artifact_nomem(struct ferry_artifact *a)
{
        return artifact_fail(a, FERRY_ENOMEM, "out of memory");
}

/* Types, aliases and tags: 1..PROTO_NAME_MAX bytes without control characters. */
static int artifact_check_label(struct ferry_artifact *a, const char *s, const char *what)
{
        size_t n = s ? strlen(s) : 0;
        const unsigned char *p;

        if (n == 0)
                return artifact_fail(a, FERRY_EINVAL, "%s must not be empty", what);
        if (n > PROTO_NAME_MAX)
                return artifact_fail(a, FERRY_EINVAL, "%s is %zu bytes long; the limit is %d", what,
                                     n, PROTO_NAME_MAX);
        for (p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return artifact_fail(a, FERRY_EINVAL,
                                             "%s may not contain control characters", what);
        return 0;
}

static const char *json_kind(const cJSON *v)
{
        if (cJSON_IsArray(v))
                return "an array";
        if (cJSON_IsString(v))
                return "a string";
        if (cJSON_IsNumber(v))
                return "a number";
        if (cJSON_IsBool(v))
                return "a boolean";
        return "null";
}

/* Parse `json` (NULL: none) that must be one JSON object into *out. */
static int artifact_parse_object(struct ferry_artifact *a, const char *json, const char *what,
                                 cJSON **out)
{
        cJSON *v;

        *out = NULL;
        if (json == NULL)
                return 0;
        v = cJSON_ParseWithOpts(json, NULL, 1);
        if (v == NULL)
                return artifact_fail(a, FERRY_EINVAL, "%s is not valid JSON", what);
        if (!cJSON_IsObject(v)) {
                artifact_fail(a, FERRY_EINVAL, "%s must be a JSON object, not %s", what,
                              json_kind(v));
                cJSON_Delete(v);
                return FERRY_EINVAL;
        }
        *out = v;
        return 0;
}

int ferry_artifact_new(struct ferry_artifact **out, const char *name, const char *type)
{
        struct ferry_artifact *a;

        if (out == NULL)
                return FERRY_EINVAL;
        *out = NULL;
        a = calloc(1, sizeof(*a));
        if (a == NULL)
                return FERRY_ENOMEM;
        a->aliases = cJSON_CreateArray();
        a->tags = cJSON_CreateArray();
        a->assets = cJSON_CreateArray();
        if (a->aliases == NULL || a->tags == NULL || a->assets == NULL) {
                ferry_artifact_free(a);
                return FERRY_ENOMEM;
        }
        *out = a;
        if (proto_validate_name(name, "artifact name", a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        if (type != NULL && artifact_check_label(a, type, "artifact type") != 0)
                return FERRY_EINVAL;
        a->name = strdup(name);
        a->type = dup_string(type);
        if (a->name == NULL || (type != NULL && a->type == NULL)) {
                free(a->name);
                a->name = NULL;
                return artifact_nomem(a);
        }
        return 0;
}

void ferry_artifact_free(struct ferry_artifact *artifact)
{
        if (artifact == NULL)
                return;
        free(artifact->name);
        free(artifact->type);
        free(artifact->version);
        cJSON_Delete(artifact->aliases);
        cJSON_Delete(artifact->tags);
        cJSON_Delete(artifact->metadata);
        cJSON_Delete(artifact->assets);
        free(artifact);
}

const char *ferry_artifact_last_error(const struct ferry_artifact *artifact)
{
        return artifact ? artifact->err : "";
}

int ferry_artifact_set_version(struct ferry_artifact *artifact, const char *version)
{
        struct proto_semver sv;
        char *v = NULL;

        if (artifact == NULL)
                return FERRY_EINVAL;
        if (version != NULL) {
                if (proto_semver_parse(version, &sv) != 0)
                        return artifact_fail(artifact, FERRY_EINVAL,
                                             "version \"%.*s\" is not a strict semantic version "
                                             "such as 1.2.0 or 1.0.0-rc.1",
                                             PROTO_NAME_MAX, version);
                v = strdup(version);
                if (v == NULL)
                        return artifact_nomem(artifact);
        }
        free(artifact->version);
        artifact->version = v;
        return 0;
}

/* Append `s` to the string array `arr` unless it is already there. */
static int artifact_add_label(struct ferry_artifact *a, cJSON *arr, const char *s, const char *what)
{
        const cJSON *it;
        int rc;

        rc = artifact_check_label(a, s, what);
        if (rc != 0)
                return rc;
        cJSON_ArrayForEach(it, arr)
        {
                if (strcmp(it->valuestring, s) == 0)
                        return 0;
        }
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(s)))
                return artifact_nomem(a);
        return 0;
}

int ferry_artifact_add_alias(struct ferry_artifact *artifact, const char *alias)
{
        if (artifact == NULL)
                return FERRY_EINVAL;
        return artifact_add_label(artifact, artifact->aliases, alias, "alias");
}

int ferry_artifact_add_tag(struct ferry_artifact *artifact, const char *tag)
{
        if (artifact == NULL)
                return FERRY_EINVAL;
        return artifact_add_label(artifact, artifact->tags, tag, "version tag");
}

int ferry_artifact_set_metadata(struct ferry_artifact *artifact, const char *json_object)
{
        cJSON *meta;
        int rc;

        if (artifact == NULL)
                return FERRY_EINVAL;
        rc = artifact_parse_object(artifact, json_object, "artifact metadata", &meta);
        if (rc != 0)
                return rc;
        cJSON_Delete(artifact->metadata);
        artifact->metadata = meta;
        return 0;
}

/* A new asset in wire form; `kind` is "file", "staged" or "remote". NULL: no memory. */
static cJSON *asset_new(const char *logical_path, const char *kind, const char *value,
                        bool overwrite, const cJSON *meta)
{
        cJSON *as = cJSON_CreateObject();
        cJSON *m = NULL;

        if (as == NULL)
                return NULL;
        if (cJSON_AddStringToObject(as, "logical_path", logical_path) == NULL ||
            cJSON_AddStringToObject(as, kind, value) == NULL ||
            (overwrite && cJSON_AddTrueToObject(as, "overwrite") == NULL))
                goto fail;
        if (meta != NULL) {
                m = cJSON_Duplicate(meta, 1);
                if (m == NULL || !cJSON_AddItemToObject(as, "metadata", m)) {
                        cJSON_Delete(m);
                        goto fail;
                }
        }
        return as;
fail:
        cJSON_Delete(as);
        return NULL;
}

static const char *asset_logical_path(const cJSON *asset)
{
        return cJSON_GetObjectItemCaseSensitive(asset, "logical_path")->valuestring;
}

/* The asset at `logical_path` among the assets before `stop` (NULL: all), or NULL. */
static cJSON *artifact_find(const struct ferry_artifact *a, const char *logical_path,
                            const cJSON *stop)
{
        cJSON *it;

        for (it = a->assets->child; it != NULL && it != stop; it = it->next)
                if (strcmp(asset_logical_path(it), logical_path) == 0)
                        return it;
        return NULL;
}

/*
 * Move the assets of `batch` (distinct logical paths) into the artifact: a
 * logical path already present is FERRY_EEXIST (nothing moved) unless
 * `overwrite`, when the new asset takes the old one's place.
 */
static int artifact_merge(struct ferry_artifact *a, cJSON *batch, bool overwrite)
{
        cJSON *it, *next, *old, *first_new = NULL;

        if (!overwrite) {
                cJSON_ArrayForEach(it, batch)
                {
                        const char *lp = asset_logical_path(it);

                        if (artifact_find(a, lp, NULL) != NULL)
                                return artifact_fail(a, FERRY_EEXIST,
                                                     "artifact \"%s\" already has an asset at "
                                                     "\"%s\"; add it with overwrite to replace it",
                                                     a->name, lp);
                }
        }
        for (it = batch->child; it != NULL; it = next) {
                next = it->next;
                cJSON_DetachItemViaPointer(batch, it);
                /* Only assets that were there before this batch can clash. */
                old = artifact_find(a, asset_logical_path(it), first_new);
                if (old != NULL) {
                        cJSON_ReplaceItemViaPointer(a->assets, old, it);
                } else {
                        cJSON_AddItemToArray(a->assets, it);
                        if (first_new == NULL)
                                first_new = it;
                }
        }
        return 0;
}

/* Turn the errno of a file system call on `path` into a code and a sentence. */
static int artifact_path_error(struct ferry_artifact *a, const char *path, int err)
{
        switch (err) {
        case ENOENT:
        case ENOTDIR:
                return artifact_fail(a, FERRY_ENOTFOUND, "%s does not exist", path);
        case EACCES:
        case EPERM:
                return artifact_fail(a, FERRY_EPERM, "cannot read %s: permission denied", path);
        case ENOMEM:
                return artifact_nomem(a);
        case ELOOP:
        case ENAMETOOLONG:
                return artifact_fail(a, FERRY_EINVAL, "cannot resolve %s: %s", path, strerror(err));
        default:
                return artifact_fail(a, FERRY_EIO, "cannot read %s: %s", path, strerror(err));
        }
}

/* Append the regular file `abs` (an absolute path) as `logical_path` to `batch`. */
static int artifact_batch_file(struct ferry_artifact *a, cJSON *batch, const char *abs,
                               const char *logical_path, bool overwrite, const cJSON *meta)
{
        cJSON *as;
        int fd;

        if (proto_validate_logical_path(logical_path, a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        /* Refuse now what the daemon could not snapshot. */
        fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return artifact_path_error(a, abs, errno);
        close(fd);
        as = asset_new(logical_path, "file", abs, overwrite, meta);
        if (as == NULL || !cJSON_AddItemToArray(batch, as)) {
                cJSON_Delete(as);
                return artifact_nomem(a);
        }
        return 0;
}

/* "a/b" from `dir` and `name`, or `name` alone when `dir` is NULL or empty; NULL: no memory. */
static char *path_join(const char *dir, const char *name)
{
        char *s;

        if (dir == NULL || dir[0] == '\0')
                return strdup(name);
        if (asprintf(&s, "%s/%s", dir, name) < 0)
                return NULL;
        return s;
}

static int cmp_names(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

static int artifact_walk(struct ferry_artifact *a, cJSON *batch, const char *dir, const char *rel,
                         const char *prefix, bool overwrite, const cJSON *meta);

/* Add one directory entry: recurse into directories, add regular files and links to them. */
static int artifact_walk_entry(struct ferry_artifact *a, cJSON *batch, const char *dir,
                               const char *rel, const char *name, const char *prefix,
                               bool overwrite, const cJSON *meta)
{
        char real[PATH_MAX];
        char *abs, *crel = NULL, *lp = NULL;
        struct stat st;
        int rc = 0;

        abs = path_join(dir, name);
        crel = path_join(rel, name);
        if (abs == NULL || crel == NULL) {
                rc = artifact_nomem(a);
                goto out;
        }
        if (lstat(abs, &st) != 0) {
                rc = artifact_path_error(a, abs, errno);
                goto out;
        }
        if (S_ISDIR(st.st_mode)) {
                rc = artifact_walk(a, batch, abs, crel, prefix, overwrite, meta);
                goto out;
        }
        if (S_ISLNK(st.st_mode)) {
                /* Links to files count; links to directories and dangling links do not. */
                if (stat(abs, &st) != 0 || !S_ISREG(st.st_mode))
                        goto out;
                if (realpath(abs, real) == NULL) {
                        rc = artifact_path_error(a, abs, errno);
                        goto out;
                }
        } else if (S_ISREG(st.st_mode)) {
                snprintf(real, sizeof(real), "%s", abs);
        } else {
                goto out; /* sockets, fifos, devices */
        }
        lp = path_join(prefix, crel);
        if (lp == NULL) {
                rc = artifact_nomem(a);
                goto out;
        }
        rc = artifact_batch_file(a, batch, real, lp, overwrite, meta);
out:
        free(lp);
        free(crel);
        free(abs);
        return rc;
}

/* Add every regular file below `dir` (absolute) in name order; `rel` is its path so far. */
static int artifact_walk(struct ferry_artifact *a, cJSON *batch, const char *dir, const char *rel,
                         const char *prefix, bool overwrite, const cJSON *meta)
{
        struct dirent *de;
        char **names = NULL, **grown;
        size_t n = 0, cap = 0, i;
        int rc = 0, err;
        DIR *d;

        d = opendir(dir);
        if (d == NULL)
                return artifact_path_error(a, dir, errno);
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (de == NULL) {
                        err = errno;
                        if (err != 0)
                                rc = artifact_path_error(a, dir, err);
                        break;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        grown = realloc(names, cap * sizeof(*names));
                        if (grown == NULL) {
                                rc = artifact_nomem(a);
                                break;
                        }
                        names = grown;
                }
                names[n] = strdup(de->d_name);
                if (names[n] == NULL) {
                        rc = artifact_nomem(a);
                        break;
                }
                n++;
        }
        closedir(d);
        if (rc == 0)
                qsort(names, n, sizeof(*names), cmp_names);
        for (i = 0; rc == 0 && i < n; i++)
                rc = artifact_walk_entry(a, batch, dir, rel, names[i], prefix, overwrite, meta);
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return rc;
}

/* The base name of `path` as given (a file's path never ends with '/'). */
static const char *base_name(const char *path)
{
        const char *slash = strrchr(path, '/');

        return slash ? slash + 1 : path;
}

int ferry_artifact_add_file(struct ferry_artifact *artifact, const char *path,
                            const char *logical_path, int overwrite, const char *metadata_json)
{
        struct ferry_artifact *a = artifact;
        char real[PATH_MAX];
        cJSON *meta = NULL, *batch = NULL;
        struct stat st;
        int rc;

        if (a == NULL)
                return FERRY_EINVAL;
        if (path == NULL || path[0] == '\0')
                return artifact_fail(a, FERRY_EINVAL, "the path of a file asset must not be empty");
        if (logical_path != NULL &&
            proto_validate_logical_path(logical_path, a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        rc = artifact_parse_object(a, metadata_json, "asset metadata", &meta);
        if (rc != 0)
                return rc;
        batch = cJSON_CreateArray();
        if (batch == NULL) {
                rc = artifact_nomem(a);
                goto out;
        }
        if (realpath(path, real) == NULL || stat(real, &st) != 0) {
                rc = artifact_path_error(a, path, errno);
                goto out;
        }
        if (S_ISDIR(st.st_mode))
                rc = artifact_walk(a, batch, real, "", logical_path, overwrite, meta);
        else if (S_ISREG(st.st_mode))
                rc = artifact_batch_file(
                    a, batch, real, logical_path ? logical_path : base_name(path), overwrite, meta);
        else
                rc = artifact_fail(a, FERRY_EINVAL, "%s is neither a regular file nor a directory",
                                   path);
        if (rc == 0)
                rc = artifact_merge(a, batch, overwrite);
out:
        cJSON_Delete(batch);
        cJSON_Delete(meta);
        return rc;
}

/* The default logical path of a remote asset: the URI's last path segment, or "remote". */
static void remote_logical_path(const char *uri, char *out, size_t len)
{
        const char *p = strstr(uri, "://");
        const char *end, *seg;
        size_t n;

        if (p != NULL) {
                p = strchr(p + 3, '/'); /* skip the authority */
                if (p == NULL)
                        p = "";
        } else {
                p = uri;
        }
        end = p + strcspn(p, "?#");
        for (seg = end; seg > p && seg[-1] != '/'; seg--)
                ;
        n = (size_t)(end - seg);
        if (n > 0 && n < len) {
                memcpy(out, seg, n);
                out[n] = '\0';
                if (proto_validate_logical_path(out, NULL, 0) == 0)
                        return;
        }
        snprintf(out, len, "remote");
}

/* Add one asset of `kind` ("remote" or "staged") with `value`. */
static int artifact_add_one(struct ferry_artifact *a, const char *kind, const char *value,
                            const char *logical_path, int overwrite, const char *metadata_json)
{
        cJSON *meta = NULL, *batch = NULL, *as;
        int rc;

        if (proto_validate_logical_path(logical_path, a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        rc = artifact_parse_object(a, metadata_json, "asset metadata", &meta);
        if (rc != 0)
                return rc;
        batch = cJSON_CreateArray();
        as = asset_new(logical_path, kind, value, overwrite, meta);
        if (batch == NULL || as == NULL || !cJSON_AddItemToArray(batch, as)) {
                cJSON_Delete(as);
                rc = artifact_nomem(a);
        } else {
                rc = artifact_merge(a, batch, overwrite);
        }
        cJSON_Delete(batch);
        cJSON_Delete(meta);
        return rc;
}

int ferry_artifact_add_remote(struct ferry_artifact *artifact, const char *uri,
                              const char *logical_path, int overwrite, const char *metadata_json)
{
        char lp[PROTO_LOGICAL_PATH_MAX + 1];
        size_t n = uri ? strlen(uri) : 0;
        const unsigned char *p;

        if (artifact == NULL)
                return FERRY_EINVAL;
        if (n == 0 || n > FERRY_URI_MAX)
                return artifact_fail(artifact, FERRY_EINVAL,
                                     "a remote URI must be 1 to %d bytes long", FERRY_URI_MAX);
        for (p = (const unsigned char *)uri; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return artifact_fail(artifact, FERRY_EINVAL,
                                             "remote URI may not contain control characters");
        if (logical_path == NULL) {
                remote_logical_path(uri, lp, sizeof(lp));
                logical_path = lp;
        }
        return artifact_add_one(artifact, "remote", uri, logical_path, overwrite, metadata_json);
}

int ferry_artifact_add_staged(struct ferry_artifact *artifact, const char *token,
                              const char *logical_path, int overwrite, const char *metadata_json)
{
        if (artifact == NULL)
                return FERRY_EINVAL;
        if (token == NULL || token[0] == '\0')
                return artifact_fail(artifact, FERRY_EINVAL,
                                     "a staged asset needs the token from ferry_stage()");
        if (logical_path == NULL)
                return artifact_fail(artifact, FERRY_EINVAL, "a staged asset needs a logical path");
        return artifact_add_one(artifact, "staged", token, logical_path, overwrite, metadata_json);
}

size_t ferry_artifact_asset_count(const struct ferry_artifact *artifact)
{
        return artifact ? (size_t)cJSON_GetArraySize(artifact->assets) : 0;
}

/* Add a deep copy of `v` under `key`. Return false when out of memory. */
static bool add_copy(cJSON *obj, const char *key, const cJSON *v)
{
        cJSON *copy = cJSON_Duplicate(v, 1);

        if (copy == NULL || !cJSON_AddItemToObject(obj, key, copy)) {
                cJSON_Delete(copy);
                return false;
        }
        return true;
}

/* Add the artifact's fields of artifact.log to `obj`. Return false when out of memory. */
static bool artifact_fill(const struct ferry_artifact *a, cJSON *obj)
{
        return cJSON_AddStringToObject(obj, "name", a->name) != NULL &&
               add_string_opt(obj, "type", a->type) && add_string_opt(obj, "version", a->version) &&
               (cJSON_GetArraySize(a->aliases) == 0 || add_copy(obj, "aliases", a->aliases)) &&
               (cJSON_GetArraySize(a->tags) == 0 || add_copy(obj, "tags", a->tags)) &&
               (a->metadata == NULL || add_copy(obj, "metadata", a->metadata)) &&
               add_copy(obj, "assets", a->assets);
}

int ferry_artifact_to_json(const struct ferry_artifact *artifact, char **json)
{
        cJSON *obj;

        if (json == NULL)
                return FERRY_EINVAL;
        *json = NULL;
        if (artifact == NULL || artifact->name == NULL)
                return FERRY_EINVAL;
        obj = cJSON_CreateObject();
        if (obj != NULL && artifact_fill(artifact, obj))
                *json = json_print(obj);
        cJSON_Delete(obj);
        return *json ? 0 : FERRY_ENOMEM;
}
