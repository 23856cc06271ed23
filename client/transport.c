/*
 * transport.c — libferry's connection to ferryd: verifying the daemon before
 * anything is sent, frames with the descriptors that travel with them
 * (SCM_RIGHTS), blocking round trips with deadlines, hello.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define FERRY_RECV_CHUNK 65536

/* ---- helpers the other files share ---- */

const char *client_plural(long long n)
{
        return n == 1 ? "" : "s";
}

int client_fail(struct ferry_client *c, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
        proto_utf8_trim(c->err);
        return code;
}

int client_nomem(struct ferry_client *c)
{
        return client_fail(c, FERRY_ENOMEM, "out of memory");
}

int client_artifact_fail(struct ferry_artifact *a, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(a->err, sizeof(a->err), fmt, ap);
        va_end(ap);
        proto_utf8_trim(a->err);
        return code;
}

void ferry_free(void *ptr)
{
        free(ptr);
}

/* Serialize `obj` into a malloc'd string (not cJSON's allocator), or NULL. */
char *client_json_print(const cJSON *obj)
{
        char *tmp = cJSON_PrintUnformatted(obj);
        char *s;

        if (tmp == NULL)
                return NULL;
        s = strdup(tmp);
        cJSON_free(tmp);
        return s;
}

void client_close_all(const int *fds, int n)
{
        int i;

        for (i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

static void close_fd_cb(int fd, void *data)
{
        close(fd);
}

int64_t client_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t client_deadline_after(int timeout_ms)
{
        return timeout_ms > 0 ? client_now_ms() + timeout_ms : -1;
}

/* Milliseconds left before `deadline` as poll() takes them: -1 for none, else >= 0. */
static int time_left(int64_t deadline)
{
        int64_t left;

        if (deadline < 0)
                return -1;
        left = deadline - client_now_ms();
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

/* ---- which daemon to trust ---- */

int ferry_default_socket_path(char *buf, size_t len)
{
        const char *env;
        int n;

        if (buf == NULL || len == 0)
                return FERRY_EINVAL;
        env = getenv("FERRY_SOCKET");
        if (env != NULL && env[0] != '\0')
                n = snprintf(buf, len, "%s", env);
        else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL &&
                 env[0] == '/') /* absolute only, as XDG says */
                n = snprintf(buf, len, "%s/ferry/ferryd.sock", env);
        else
                n = snprintf(buf, len, "/tmp/ferry-%u/ferryd.sock", (unsigned)getuid());
        if (n < 0 || (size_t)n >= len) {
                buf[0] = '\0';
                return FERRY_EINVAL;
        }
        return 0;
}

/* A user's name for messages ("uid 1001" when it has none). */
static const char *user_name(uid_t uid, char *buf, size_t len)
{
        struct passwd pw, *res = NULL;
        char tmp[1024];

        if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
                snprintf(buf, len, "%s (uid %u)", res->pw_name, (unsigned)uid);
        else
                snprintf(buf, len, "uid %u", (unsigned)uid);
        return buf;
}

/*
 * The uid ferryd must run as: FERRY_DAEMON_USER (a name or a number: a
 * shared ferryd of a service account), else the caller's own. root is
 * trusted too (it can read the caller's files anyway).
 */
static int client_expected_uid(struct ferry_client *c, uid_t *uid)
{
        const char *who = getenv("FERRY_DAEMON_USER");
        struct passwd pw, *res = NULL;
        char tmp[1024], *end;
        unsigned long n;

        *uid = getuid();
        if (who == NULL || who[0] == '\0')
                return 0;
        errno = 0;
        n = strtoul(who, &end, 10);
        if (*end == '\0' && errno == 0 && n < (unsigned long)(uid_t)-1) {
                *uid = (uid_t)n;
                return 0;
        }
        if (getpwnam_r(who, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL) {
                *uid = res->pw_uid;
                return 0;
        }
        return client_fail(c, FERRY_EINVAL, "FERRY_DAEMON_USER names no user: \"%s\"", who);
}

static bool trusted_uid(uid_t uid, uid_t expected)
{
        return uid == expected || uid == 0;
}

/*
 * The socket's directory must be a real directory owned by the daemon's
 * user, writable by nobody else: otherwise anyone could have put a socket
 * there first and played ferryd.
 */
static int client_verify_dir(struct ferry_client *c, uid_t expected)
{
        char dir[sizeof(c->path)], who[128], want[128];
        char *slash;
        struct stat st;

        snprintf(dir, sizeof(dir), "%s", c->path);
        slash = strrchr(dir, '/');
        if (slash == NULL)
                snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';
        if (lstat(dir, &st) != 0)
                return 0; /* no directory: connect() says ferryd is not running */
        if (!S_ISDIR(st.st_mode))
                return client_fail(
                    c, FERRY_EPERM, "refusing to talk to ferryd at %s: %s is %s, not a directory",
                    c->path, dir, S_ISLNK(st.st_mode) ? "a symbolic link" : "something else");
        if (!trusted_uid(st.st_uid, expected))
                return client_fail(c, FERRY_EPERM,
                                   "refusing to talk to ferryd at %s: its directory %s belongs to "
                                   "%s, not to %s; anyone may have put a socket there (remove "
                                   "the directory, or set FERRY_DAEMON_USER for a shared ferryd)",
                                   c->path, dir, user_name(st.st_uid, who, sizeof(who)),
                                   user_name(expected, want, sizeof(want)));
        if ((st.st_mode & 022) != 0)
                return client_fail(c, FERRY_EPERM,
                                   "refusing to talk to ferryd at %s: its directory %s is "
                                   "writable by %s (mode %04o), so anyone may have put a socket "
                                   "there",
                                   c->path, dir, (st.st_mode & 002) ? "everyone" : "its group",
                                   (unsigned)(st.st_mode & 07777));
        return 0;
}

/* The process at the other end must run as the daemon's user. */
static int client_verify_peer(struct ferry_client *c, uid_t expected)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        char who[128], want[128];

        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
                return client_fail(c, FERRY_EPERM, "cannot tell who listens on %s: %s", c->path,
                                   strerror(errno));
        if (!trusted_uid(cred.uid, expected))
                return client_fail(c, FERRY_EPERM,
                                   "refusing to talk to the process listening on %s: it runs as "
                                   "%s, not as %s (set FERRY_DAEMON_USER for a shared ferryd)",
                                   c->path, user_name(cred.uid, who, sizeof(who)),
                                   user_name(expected, want, sizeof(want)));
        return 0;
}

/* ---- the connection ---- */

/* Close the connection; the client keeps its last error. */
static void client_disconnect(struct ferry_client *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        proto_decoder_free(&c->dec);
        proto_decoder_init(&c->dec);
        proto_fdq_drain(&c->fdq, close_fd_cb, NULL);
        c->rx_total = c->rx_consumed = 0;
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
 * Send all of `buf` before `deadline`, the `nfds` descriptors with its first
 * byte. Return 0, FERRY_ECLOSED when the daemon has gone (no message: the
 * caller looks for its last words), or another code with the message set.
 */
static int client_send(struct ferry_client *c, const char *buf, size_t len, const int *fds,
                       int nfds, int64_t deadline, const char *op)
{
        char cbuf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
        size_t off = 0;
        ssize_t n;
        char lim[32];
        int rc, err;

        while (off < len) {
                struct iovec iov = {(char *)buf + off, len - off};
                struct msghdr msg;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                if (off == 0 && nfds > 0) {
                        struct cmsghdr *cm;

                        memset(cbuf, 0, sizeof(cbuf));
                        msg.msg_control = cbuf;
                        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
                        cm = CMSG_FIRSTHDR(&msg);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
                        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
                }
                n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
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

/* Read once what is there, with its descriptors. Return bytes read, 0 at EOF, -1 (errno). */
static ssize_t client_read(struct ferry_client *c, char *buf, size_t len)
{
        char cbuf[CMSG_SPACE(sizeof(int) * (PROTO_MAX_FDS + 8))];
        int fds[PROTO_MAX_FDS + 8], nfds = 0;
        struct iovec iov = {buf, len};
        struct msghdr msg;
        struct cmsghdr *cm;
        ssize_t n;

        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof(cbuf);
        n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0)
                return -1;
        for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
                size_t k, room = sizeof(fds) / sizeof(fds[0]) - (size_t)nfds;

                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                if (k > room)
                        k = room;
                memcpy(&fds[nfds], CMSG_DATA(cm), k * sizeof(int));
                nfds += (int)k;
        }
        if ((msg.msg_flags & MSG_CTRUNC) || nfds > PROTO_MAX_FDS) {
                client_close_all(fds, nfds);
                errno = EPROTO;
                return -1;
        }
        c->rx_total += (uint64_t)n;
        if (proto_fdq_push(&c->fdq, c->rx_total, fds, nfds) != 0) {
                client_close_all(fds, nfds);
                errno = ENOMEM;
                return -1;
        }
        return n;
}

/*
 * Read frames until the reply to request `id` arrives, before `deadline`.
 * Replies to other ids (late answers to requests that timed out) are
 * skipped; an error reply with id 0 concerns the connection and is taken.
 * Return 0 with *rep owning the reply and its descriptors in *fds and *nfds (or
 * closed when fds is NULL), or a code with the message set.
 */
static int client_recv(struct ferry_client *c, uint64_t id, int64_t deadline, const char *op,
                       cJSON **rep, int **fds, int *nfds)
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
        c->late = false;
        if (fds != NULL) {
                *fds = NULL;
                *nfds = 0;
        }
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
                        uint64_t start = c->rx_consumed;
                        int *got = NULL, ngot = 0;
                        int64_t declared = 0;

                        c->rx_consumed += PROTO_HEADER_LEN + len;
                        if (proto_fdq_take(&c->fdq, start, c->rx_consumed, &got, &ngot) != 0) {
                                client_disconnect(c);
                                return client_fail(c, FERRY_EPROTO,
                                                   "ferryd sent descriptors that belong to no "
                                                   "reply; the connection was closed");
                        }
                        rc = proto_reply_parse(json, len, rep, &rid, msg, sizeof(msg));
                        if (rc == 0 &&
                            (proto_get_int(*rep, "fds", false, 0, &declared, NULL, 0) != 0 ||
                             declared != ngot)) {
                                client_close_all(got, ngot);
                                free(got);
                                cJSON_Delete(*rep);
                                *rep = NULL;
                                client_disconnect(c);
                                return client_fail(c, FERRY_EPROTO,
                                                   "ferryd's reply to \"%s\" does not match the "
                                                   "descriptors that came with it",
                                                   op);
                        }
                        if (rid != id && rid != 0) {
                                client_close_all(got, ngot);
                                free(got);
                                cJSON_Delete(*rep);
                                *rep = NULL;
                                continue;
                        }
                        if (fds != NULL && rc == 0) {
                                *fds = got;
                                *nfds = ngot;
                        } else { /* an error reply's descriptors are nobody's */
                                client_close_all(got, ngot);
                                free(got);
                        }
                        if (rc < 0)
                                return client_fail(c, rc, "%s", msg);
                        cJSON_DeleteItemFromObjectCaseSensitive(*rep, "fds");
                        return 0;
                }
                rc = wait_fd(c->fd, POLLIN, deadline);
                if (rc == 0) {
                        c->late = true;
                        return client_fail(c, FERRY_ETIMEDOUT,
                                           "ferryd did not answer \"%s\" within %s", op,
                                           client_limit(c, lim, sizeof(lim)));
                }
                if (rc < 0) {
                        err = errno;
                        goto io_error;
                }
                n = client_read(c, buf, sizeof(buf));
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

/* Send `req` (consumed) with descriptors; *id and op name it for the reply. */
static int client_send_fds(struct ferry_client *c, cJSON *req, const int *fds, int nfds,
                           int64_t deadline, uint64_t *id, char *op, size_t oplen)
{
        const cJSON *v;
        char *frame = NULL;
        cJSON *rep = NULL;
        size_t len;
        int rc;

        v = cJSON_GetObjectItemCaseSensitive(req, "op");
        snprintf(op, oplen, "%s", cJSON_IsString(v) ? v->valuestring : "?");
        *id = (uint64_t)cJSON_GetObjectItemCaseSensitive(req, "id")->valuedouble;
        if (c->dl != NULL && strncmp(op, "download.", 9) != 0) {
                /* Its replies would be taken for the download's, and the download's lost. */
                cJSON_Delete(req);
                return client_fail(c, FERRY_EBUSY,
                                   "a download is in progress on this connection; finish it with "
                                   "ferry_download_finish() before \"%s\"",
                                   op);
        }
        if (c->fd < 0) {
                cJSON_Delete(req);
                return client_fail(c, FERRY_ECLOSED,
                                   "not connected to ferryd: the connection was closed; connect "
                                   "again");
        }
        if (nfds > 0 && !cJSON_AddNumberToObject(req, "fds", nfds)) {
                cJSON_Delete(req);
                return client_nomem(c);
        }
        rc = proto_frame_encode(req, &frame, &len);
        cJSON_Delete(req);
        if (rc == FERRY_ETOOBIG)
                return client_fail(c, rc,
                                   "the \"%s\" request is larger than the %d MiB frame limit", op,
                                   PROTO_FRAME_MAX / (1024 * 1024));
        if (rc != 0)
                return client_nomem(c);
        rc = client_send(c, frame, len, fds, nfds, deadline, op);
        free(frame);
        if (rc == FERRY_ECLOSED) {
                /* The daemon hung up: take its last words if it left a refusal. */
                rc = client_recv(c, *id, client_now_ms(), op, &rep, NULL, NULL);
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

int client_roundtrip_fds(struct ferry_client *c, cJSON *req, const int *fds, int nfds,
                         int64_t deadline, cJSON **rep, int **rfds, int *rnfds)
{
        char op[64];
        uint64_t id;
        int rc;

        *rep = NULL;
        if (rfds != NULL) {
                *rfds = NULL;
                *rnfds = 0;
        }
        rc = client_send_fds(c, req, fds, nfds, deadline, &id, op, sizeof(op));
        if (rc != 0)
                return rc;
        return client_recv(c, id, deadline, op, rep, rfds, rnfds);
}

int client_send_request(struct ferry_client *c, cJSON *req, int64_t deadline)
{
        char op[64];
        uint64_t id;

        return client_send_fds(c, req, NULL, 0, deadline, &id, op, sizeof(op));
}

int client_wait_reply(struct ferry_client *c, uint64_t id, int64_t deadline, const char *op,
                      cJSON **rep)
{
        if (c->fd < 0)
                return client_fail(c, FERRY_ECLOSED,
                                   "the connection to ferryd was closed before \"%s\" was "
                                   "answered",
                                   op);
        return client_recv(c, id, deadline, op, rep, NULL, NULL);
}

bool client_last_wait_late(const struct ferry_client *c)
{
        return c->late;
}

int client_roundtrip(struct ferry_client *c, cJSON *req, int64_t deadline, cJSON **rep)
{
        return client_roundtrip_fds(c, req, NULL, 0, deadline, rep, NULL, NULL);
}

cJSON *client_request(struct ferry_client *c, const char *op)
{
        return proto_request_new(c->next_id++, op);
}

int client_call(struct ferry_client *c, cJSON *req, int timeout_ms, cJSON **rep)
{
        c->limit_ms = timeout_ms;
        return client_roundtrip(c, req, client_deadline_after(timeout_ms), rep);
}

int client_reply_out(struct ferry_client *c, cJSON *rep, char **json)
{
        if (json == NULL) {
                cJSON_Delete(rep);
                return 0;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(rep, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(rep, "ok");
        *json = client_json_print(rep);
        cJSON_Delete(rep);
        return *json ? 0 : client_nomem(c);
}

int client_bad_reply(struct ferry_client *c, const char *op, const char *field)
{
        return client_fail(c, FERRY_EPROTO, "ferryd's reply to \"%s\" lacks a valid \"%s\"", op,
                           field);
}

bool client_add_string_opt(cJSON *obj, const char *key, const char *value)
{
        return value == NULL || cJSON_AddStringToObject(obj, key, value) != NULL;
}

static int client_hello(struct ferry_client *c, int64_t deadline)
{
        cJSON *req, *rep = NULL;
        const char *backend;
        int64_t protocol;
        int rc;

        req = client_request(c, proto_op_name(PROTO_OP_HELLO));
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
        uid_t expected;
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
        proto_fdq_init(&c->fdq);
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
        /* Nothing is sent to a daemon that is not the one we expect. */
        if ((rc = client_expected_uid(c, &expected)) != 0 ||
            (rc = client_verify_dir(c, expected)) != 0)
                return rc;
        if (timeout_ms <= 0)
                timeout_ms = FERRY_CONNECT_TIMEOUT_MS;
        c->limit_ms = timeout_ms;
        deadline = client_now_ms() + timeout_ms;
        rc = client_open(c, deadline);
        if (rc != 0)
                return rc;
        rc = client_verify_peer(c, expected);
        if (rc == 0)
                rc = client_hello(c, deadline);
        if (rc != 0)
                client_disconnect(c);
        return rc;
}

void ferry_close(struct ferry_client *client)
{
        if (client == NULL)
                return;
        if (client->dl != NULL)
                client_download_free(client->dl);
        client_disconnect(client);
        proto_decoder_free(&client->dec);
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
                if (strcmp(it->string, "id") == 0 || strcmp(it->string, "op") == 0 ||
                    strcmp(it->string, "fds") == 0) {
                        cJSON_Delete(args);
                        cJSON_Delete(req);
                        return client_fail(client, FERRY_EINVAL,
                                           "the arguments of \"%s\" may not set \"id\", \"op\" "
                                           "or \"fds\"",
                                           op);
                }
                cJSON_DetachItemViaPointer(args, it);
                cJSON_AddItemToObject(req, it->string, it);
        }
        cJSON_Delete(args);
        rc = client_call(client, req, timeout_ms, &rep);
        if (rc == 0 && reply_json != NULL) {
                *reply_json = client_json_print(rep);
                if (*reply_json == NULL)
                        rc = client_nomem(client);
        }
        cJSON_Delete(rep);
        return rc;
}
