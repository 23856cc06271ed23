/* server.c — the control socket. */
#include "server.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "daemon.h"
#include "ferry.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "util.h"

/*
 * A client that does not read its replies: past HIGH queued bytes ferryd stops
 * reading its requests until the queue drains below LOW; past MAX (or when
 * all clients together hold more than TOTAL_MAX) it is dropped.
 */
#define CLIENT_WRITE_QUEUE_HIGH (1u << 20)
#define CLIENT_WRITE_QUEUE_LOW (256u << 10)
#define CLIENT_WRITE_QUEUE_MAX (32u << 20)
#define SERVER_WRITE_QUEUE_TOTAL_MAX (256u << 20)

struct client {
        uv_pipe_t pipe;
        struct server *srv;
        struct proto_decoder dec;
        bool hello;                    /* hello exchanged */
        bool closing;                  /* no more reads or writes */
        bool held;                     /* reading stopped until its replies drain */
        size_t queued;                 /* bytes handed to uv_write and not yet written */
        struct client_pending pending; /* requests waiting for replies (ops.c) */
        int refs;                      /* the connection's own ref + pending asynchronous replies */
        unsigned long serial;
        uid_t uid;
        struct client *prev, *next;
        char readbuf[64 * 1024];
};

struct server {
        struct daemon *d;
        uv_pipe_t listener;
        bool listening;
        struct client *clients;
        int nclients;
        size_t queued; /* bytes queued to all clients */
        unsigned long serial;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct client_write {
        uv_write_t req;
        struct client *client;
        size_t len;
        char *frame;
};

static void client_close(struct client *c, bool flush);
static void client_process(struct client *c);
static void client_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void client_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

struct client_pending *client_pending(struct client *c)
{
        return &c->pending;
}

void client_ref(struct client *c)
{
        c->refs++;
}

void client_unref(struct client *c)
{
        if (--c->refs > 0)
                return;
        proto_decoder_free(&c->dec);
        free(c);
}

static void client_write_cb(uv_write_t *req, int status)
{
        struct client_write *w = req->data;
        struct client *c = w->client;

        c->queued -= w->len;
        c->srv->queued -= w->len;
        free(w->frame);
        free(w);
        if (status < 0 && status != UV_ECANCELED && !c->closing) {
                log_debug("client %lu: write failed: %s", c->serial, uv_strerror(status));
                client_close(c, false);
        }
        if (c->held && !c->closing && c->queued < CLIENT_WRITE_QUEUE_LOW) {
                /* Its replies drained: take its requests again. */
                c->held = false;
                client_process(c);
                if (!c->held && !c->closing)
                        uv_read_start((uv_stream_t *)&c->pipe, client_alloc_cb, client_read_cb);
        }
        client_unref(c);
}

void client_send(struct client *c, const cJSON *msg)
{
        struct client_write *w;
        uv_buf_t buf;
        int rc;

        if (c->closing)
                return;
        w = calloc(1, sizeof(*w));
        if (w == NULL)
                goto fail;
        rc = proto_frame_encode(msg, &w->frame, &w->len);
        if (rc != 0) {
                cJSON *err;

                free(w);
                /* A reply too large for a frame becomes an error reply. */
                err = proto_reply_error(
                    (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(msg, "id")), rc,
                    "the reply does not fit in one frame");
                if (rc == FERRY_ETOOBIG && err != NULL)
                        client_send(c, err);
                cJSON_Delete(err);
                if (rc != FERRY_ETOOBIG)
                        goto fail;
                return;
        }
        if (c->queued + w->len > CLIENT_WRITE_QUEUE_MAX ||
            (c->srv->queued + w->len > SERVER_WRITE_QUEUE_TOTAL_MAX &&
             c->queued > CLIENT_WRITE_QUEUE_HIGH)) {
                log_warn("client %lu does not read its replies (%zu bytes waiting); dropping it",
                         c->serial, c->queued);
                free(w->frame);
                free(w);
                client_close(c, false);
                return;
        }
        w->client = c;
        w->req.data = w;
        buf = uv_buf_init(w->frame, (unsigned)w->len);
        rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, client_write_cb);
        if (rc != 0) {
                free(w->frame);
                free(w);
                log_debug("client %lu: write failed: %s", c->serial, uv_strerror(rc));
                client_close(c, false);
                return;
        }
        c->queued += w->len;
        c->srv->queued += w->len;
        client_ref(c);
        if (c->queued > CLIENT_WRITE_QUEUE_HIGH && !c->held) {
                /* Backpressure: no more requests from it until it reads its replies. */
                c->held = true;
                uv_read_stop((uv_stream_t *)&c->pipe);
        }
        return;
fail:
        log_error("out of memory sending to client %lu", c->serial);
        client_close(c, false);
}

static void client_close_cb(uv_handle_t *h)
{
        struct client *c = h->data;

        client_unref(c);
}

static void client_shutdown_cb(uv_shutdown_t *req, int status)
{
        struct client *c = req->data;

        free(req);
        uv_close((uv_handle_t *)&c->pipe, client_close_cb);
}

/* The one path by which a connection ends. `flush`: deliver queued replies first. */
static void client_close(struct client *c, bool flush)
{
        struct server *srv = c->srv;
        uv_shutdown_t *req;

        if (c->closing)
                return;
        c->closing = true;
        uv_read_stop((uv_stream_t *)&c->pipe);
        ops_client_closed(c);
        if (c->prev)
                c->prev->next = c->next;
        else
                srv->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        srv->nclients--;
        if (flush && (req = calloc(1, sizeof(*req))) != NULL) {
                req->data = c;
                if (uv_shutdown(req, (uv_stream_t *)&c->pipe, client_shutdown_cb) == 0)
                        return;
                free(req);
        }
        uv_close((uv_handle_t *)&c->pipe, client_close_cb);
}

/* Reply with an error and end the connection once it is written. */
static void client_refuse(struct client *c, uint64_t id, int code, const char *msg)
{
        cJSON *rep = proto_reply_error(id, code, "%s", msg);

        if (rep != NULL)
                client_send(c, rep);
        cJSON_Delete(rep);
        client_close(c, true);
}

static void client_hello(struct client *c, uint64_t id, cJSON *req)
{
        struct daemon *d = c->srv->d;
        char err[PROTO_ERRMSG_MAX];
        int64_t version;
        cJSON *rep;

        if (proto_get_int(req, "protocol", true, 0, &version, err, sizeof(err)) != 0) {
                client_refuse(c, id, FERRY_EPROTO, err);
                return;
        }
        if (version != PROTO_VERSION) {
                snprintf(err, sizeof(err),
                         "client speaks protocol %lld, ferryd speaks protocol %d; use matching "
                         "versions of ferry and ferryd",
                         (long long)version, PROTO_VERSION);
                client_refuse(c, id, FERRY_EVERSION, err);
                return;
        }
        c->hello = true;
        rep = proto_reply_ok(id);
        if (rep == NULL)
                return;
        cJSON_AddNumberToObject(rep, "protocol", PROTO_VERSION);
        cJSON_AddStringToObject(rep, "daemon", "ferryd/" FERRY_VERSION_STRING);
        cJSON_AddStringToObject(rep, "backend", d->cfg.backend);
        cJSON_AddNumberToObject(rep, "pid", getpid());
        client_send(c, rep);
        cJSON_Delete(rep);
}

static void client_handle_frame(struct client *c, const char *json, size_t len)
{
        char err[PROTO_ERRMSG_MAX];
        int rc;
        const char *op;
        uint64_t id;
        cJSON *req;
        cJSON *rep;

        if ((rc = proto_request_parse(json, len, &req, &id, &op, err, sizeof(err))) != 0) {
                rep = proto_reply_error(id, rc, "%s", err);
                if (rep != NULL)
                        client_send(c, rep);
                cJSON_Delete(rep);
                return;
        }
        if (strcmp(op, "hello") == 0) {
                client_hello(c, id, req);
                cJSON_Delete(req);
                return;
        }
        if (!c->hello) {
                rep = proto_reply_error(id, FERRY_EPROTO, "say hello first");
                if (rep != NULL)
                        client_send(c, rep);
                cJSON_Delete(rep);
                cJSON_Delete(req);
                return;
        }
        ops_dispatch(c->srv->d, c, id, op, req);
}

static void client_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct client *c = h->data;

        buf->base = c->readbuf;
        buf->len = sizeof(c->readbuf);
}

/* Handle the complete frames buffered, until none is left or the client is held. */
static void client_process(struct client *c)
{
        const char *json;
        size_t len;
        int rc;

        client_ref(c); /* a handler may close the client while frames remain */
        while (!c->closing && !c->held && (rc = proto_decoder_next(&c->dec, &json, &len)) != 0) {
                if (rc < 0) {
                        log_info("client %lu sent a bad frame header; dropping it", c->serial);
                        client_refuse(c, 0, rc,
                                      rc == FERRY_ETOOBIG
                                          ? "frame announces more than 1 MiB; larger data "
                                            "travels as files"
                                          : "frame announces an empty message");
                        break;
                }
                client_handle_frame(c, json, len);
        }
        client_unref(c);
}

static void client_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
        struct client *c = stream->data;

        if (nread == 0)
                return;
        if (nread < 0) {
                if (proto_decoder_partial(&c->dec))
                        log_info("client %lu left in the middle of a frame", c->serial);
                else if (nread != UV_EOF)
                        log_debug("client %lu: %s", c->serial, uv_strerror((int)nread));
                client_close(c, false);
                return;
        }
        if (proto_decoder_feed(&c->dec, buf->base, (size_t)nread) != 0) {
                client_refuse(c, 0, FERRY_ENOMEM, "out of memory");
                return;
        }
        client_process(c);
}

static int peer_allowed(struct server *srv, int fd, uid_t *uid)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
                return 0;
        *uid = cred.uid;
        if (cred.uid == getuid() || cred.uid == 0)
                return 1;
        return srv->d->cfg.have_allow_gid && cred.gid == srv->d->cfg.allow_gid;
}

static void server_connection_cb(uv_stream_t *listener, int status)
{
        struct server *srv = listener->data;
        struct client *c;
        uv_os_fd_t fd;

        if (status < 0) {
                log_warn("accept: %s", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
                log_error("out of memory accepting a client");
                return;
        }
        c->srv = srv;
        c->refs = 1;
        c->serial = ++srv->serial;
        proto_decoder_init(&c->dec);
        uv_pipe_init(srv->d->loop, &c->pipe, 0);
        c->pipe.data = c;
        c->next = srv->clients;
        if (srv->clients)
                srv->clients->prev = c;
        srv->clients = c;
        srv->nclients++;
        if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
                client_close(c, false);
                return;
        }
        if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 || !peer_allowed(srv, fd, &c->uid)) {
                log_warn("refused a connection from uid %u", (unsigned)c->uid);
                client_refuse(c, 0, FERRY_EPERM,
                              "permission denied: this ferryd serves its own user only");
                return;
        }
        if (srv->nclients > srv->d->cfg.max_clients) {
                client_refuse(c, 0, FERRY_EBUSY, "ferryd has too many clients; try again");
                return;
        }
        uv_read_start((uv_stream_t *)&c->pipe, client_alloc_cb, client_read_cb);
}

/* Make the socket's directory: ours, a directory, mode 0700. */
static int server_prepare_dir(const char *sock, char *err, size_t errlen)
{
        char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char *slash;
        struct stat st;
        int rc;

        snprintf(dir, sizeof(dir), "%s", sock);
        slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir)
                return 0;
        *slash = '\0';
        if ((rc = util_mkdir_p(dir, 0700)) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-rc));
                return -1;
        }
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
                snprintf(err, errlen, "%s must be a directory owned by uid %u", dir,
                         (unsigned)getuid());
                return -1;
        }
        if ((st.st_mode & 077) != 0 && chmod(dir, 0700) != 0) {
                snprintf(err, errlen, "cannot make %s private: %s", dir, strerror(errno));
                return -1;
        }
        return 0;
}

/* A socket file exists: is a daemon listening there? 1 yes, 0 stale (removed), -1 error. */
static int server_probe(const char *path, char *err, size_t errlen)
{
        struct sockaddr_un sa;
        struct stat st;
        int fd, rc;

        if (lstat(path, &st) != 0)
                return 0;
        if (!S_ISSOCK(st.st_mode)) {
                snprintf(err, errlen, "%s exists and is not a socket; move it away", path);
                return -1;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                snprintf(err, errlen, "socket: %s", strerror(errno));
                return -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0) {
                snprintf(err, errlen, "another ferryd is already listening on %s", path);
                return 1;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
                snprintf(err, errlen, "cannot remove the stale socket %s: %s", path,
                         strerror(errno));
                return -1;
        }
        log_info("replaced the stale socket %s", path);
        return 0;
}

static void server_listener_close_cb(uv_handle_t *h)
{
        free(h->data);
}

int server_start(struct server **out, struct daemon *d, char *err, size_t errlen)
{
        struct server *srv;
        mode_t old;
        int rc;

        *out = NULL;
        if (strlen(d->cfg.socket_path) >= sizeof(srv->path)) {
                snprintf(err, errlen, "socket path %s is too long", d->cfg.socket_path);
                return -1;
        }
        if (server_prepare_dir(d->cfg.socket_path, err, errlen) != 0 ||
            server_probe(d->cfg.socket_path, err, errlen) != 0)
                return -1;
        srv = calloc(1, sizeof(*srv));
        if (srv == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
        }
        srv->d = d;
        snprintf(srv->path, sizeof(srv->path), "%s", d->cfg.socket_path);
        uv_pipe_init(d->loop, &srv->listener, 0);
        srv->listener.data = srv;
        old = umask(0177);
        rc = uv_pipe_bind(&srv->listener, srv->path);
        umask(old);
        if (rc == 0 && chmod(srv->path, 0600) != 0)
                rc = -errno;
        if (rc == 0)
                rc = uv_listen((uv_stream_t *)&srv->listener, SOMAXCONN, server_connection_cb);
        if (rc != 0) {
                snprintf(err, errlen, "cannot listen on %s: %s", srv->path, uv_strerror(rc));
                uv_close((uv_handle_t *)&srv->listener, server_listener_close_cb);
                return -1;
        }
        srv->listening = true;
        *out = srv;
        return 0;
}

void server_stop(struct server *srv)
{
        if (srv == NULL)
                return;
        while (srv->clients != NULL)
                client_close(srv->clients, false);
        unlink(srv->path);
        uv_close((uv_handle_t *)&srv->listener, server_listener_close_cb);
}

int client_closed(const struct client *c)
{
        return c->closing;
}
