/* connection.c — one client of the control socket. */
#include "connection.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "ferry_base.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#define CLIENT_WRITE_QUEUE_HIGH (1u << 20)
#define CLIENT_WRITE_QUEUE_LOW (256u << 10)
#define CLIENT_WRITE_QUEUE_MAX (32u << 20)
#define SERVER_WRITE_QUEUE_TOTAL_MAX (256u << 20)
#define CLIENT_FDS_QUEUED_MAX (4 * PROTO_MAX_FDS)
#define CLIENT_READ_ROUNDS 8 /* reads per wake-up, so one busy client cannot starve others */

/* One frame waiting to be written, with the descriptors that go with its first byte. */
struct client_out {
        TAILQ_ENTRY(client_out) entry;
        char *buf;
        size_t len, off;
        int *fds;
        int nfds;
};

TAILQ_HEAD(client_out_list, client_out);

struct client {
        struct client_host *host;
        int fd;
        uv_poll_t poll;
        int events;     /* what the poll handle watches now */
        bool poll_open; /* the poll handle is initialised and not closed */
        uid_t uid;
        gid_t gid;
        uint64_t serial;
        struct proto_decoder dec;
        struct proto_fdq fdq;
        uint64_t rx_total;    /* bytes received */
        uint64_t rx_consumed; /* bytes of the frames taken out */
        struct client_out_list out;
        size_t queued; /* bytes queued and not yet written */
        bool hello;    /* hello exchanged */
        bool closing;  /* no more reads or writes */
        bool held;     /* reading stopped until its replies drain */
        int refs;      /* the connection's own ref + pending asynchronous replies */
        struct client_pending pending;
        void *session[SESSION_N];
        int64_t opened_ms, active_ms;
        struct client *prev, *next; /* the server's list */
        char readbuf[64 * 1024];
};

static void client_update_poll(struct client *c);
static void client_process(struct client *c);
static int client_write_queue(struct client *c);

static void close_fd_cb(int fd, void *data)
{
        close(fd);
}

static void close_fds(int *fds, int n)
{
        int i;

        for (i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
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

int client_closed(const struct client *c)
{
        return c->closing;
}

uid_t client_uid(const struct client *c)
{
        return c->uid;
}

struct client_pending *client_pending(struct client *c)
{
        return &c->pending;
}

void **client_session(struct client *c, enum client_slot slot)
{
        return &c->session[slot];
}

bool client_said_hello(const struct client *c)
{
        return c->hello;
}

bool client_idle(const struct client *c)
{
        return c->pending.count == 0 && c->queued == 0 && !proto_decoder_partial(&c->dec);
}

int64_t client_last_active_ms(const struct client *c)
{
        return c->active_ms;
}

int64_t client_opened_ms(const struct client *c)
{
        return c->opened_ms;
}

uint64_t client_serial(const struct client *c)
{
        return c->serial;
}

struct client *client_next(const struct client *c)
{
        return c->next;
}

static void client_poll_close_cb(uv_handle_t *h)
{
        struct client *c = h->data;

        close(c->fd);
        c->fd = -1;
        client_unref(c);
}

void client_close(struct client *c, bool flush)
{
        struct client_out *o;

        if (c->closing)
                return;
        /* One try at the queued replies (a refusal is small), then it ends. */
        if (flush)
                client_write_queue(c);
        c->closing = true;
        c->host->gone(c->host, c);
        while ((o = TAILQ_FIRST(&c->out)) != NULL) {
                TAILQ_REMOVE(&c->out, o, entry);
                close_fds(o->fds, o->nfds);
                free(o->fds);
                free(o->buf);
                free(o);
        }
        c->host->queued -= c->queued;
        c->queued = 0;
        proto_fdq_drain(&c->fdq, close_fd_cb, NULL);
        if (c->poll_open) {
                c->poll_open = false;
                uv_poll_stop(&c->poll);
                uv_close((uv_handle_t *)&c->poll, client_poll_close_cb);
        } else {
                close(c->fd);
                c->fd = -1;
                client_unref(c);
        }
}

/* Write what is queued until the socket is full. 0, or -1 when the connection broke. */
static int client_write_queue(struct client *c)
{
        struct client_out *o;
        ssize_t n;

        while ((o = TAILQ_FIRST(&c->out)) != NULL) {
                struct iovec iov = {o->buf + o->off, o->len - o->off};
                struct msghdr msg;
                char cbuf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                if (o->nfds > 0) {
                        struct cmsghdr *cm;

                        memset(cbuf, 0, sizeof(cbuf));
                        msg.msg_control = cbuf;
                        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)o->nfds);
                        cm = CMSG_FIRSTHDR(&msg);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)o->nfds);
                        memcpy(CMSG_DATA(cm), o->fds, sizeof(int) * (size_t)o->nfds);
                }
                n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        log_debug("client %llu: write failed: %s", (unsigned long long)c->serial,
                                  strerror(errno));
                        return -1;
                }
                if (o->nfds > 0) {
                        /* They went with the first byte: ours are copies now. */
                        close_fds(o->fds, o->nfds);
                        o->nfds = 0;
                }
                o->off += (size_t)n;
                c->queued -= (size_t)n;
                c->host->queued -= (size_t)n;
                if (o->off == o->len) {
                        TAILQ_REMOVE(&c->out, o, entry);
                        free(o->fds);
                        free(o->buf);
                        free(o);
                }
        }
        return 0;
}

/* Write what is queued; take requests again once the replies have drained. */
static void client_flush(struct client *c)
{
        if (c->closing)
                return;
        if (client_write_queue(c) != 0) {
                client_close(c, false);
                return;
        }
        if (c->held && c->queued < CLIENT_WRITE_QUEUE_LOW) {
                /* Its replies drained: take its requests again. */
                c->held = false;
                client_process(c);
        }
        if (!c->closing)
                client_update_poll(c);
}

static void client_enqueue(struct client *c, const cJSON *msg, int *fds, int n)
{
        struct client_out *o;
        char *frame = NULL;
        size_t len;
        int rc;

        if (c->closing) {
                close_fds(fds, n);
                return;
        }
        rc = proto_frame_encode(msg, &frame, &len);
        if (rc != 0) {
                cJSON *err;

                close_fds(fds, n);
                if (rc != FERRY_ETOOBIG) {
                        log_error("out of memory answering client %llu",
                                  (unsigned long long)c->serial);
                        client_close(c, false);
                        return;
                }
                /* A reply too large for a frame becomes an error reply. */
                err = proto_reply_error(
                    (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(msg, "id")), rc,
                    "the reply does not fit in one frame");
                if (err != NULL)
                        client_enqueue(c, err, NULL, 0);
                cJSON_Delete(err);
                return;
        }
        if (c->queued + len > CLIENT_WRITE_QUEUE_MAX ||
            (c->host->queued + len > SERVER_WRITE_QUEUE_TOTAL_MAX &&
             c->queued > CLIENT_WRITE_QUEUE_HIGH)) {
                log_warn("client %llu does not read its replies (%zu bytes waiting); dropping it",
                         (unsigned long long)c->serial, c->queued);
                free(frame);
                close_fds(fds, n);
                client_close(c, false);
                return;
        }
        o = calloc(1, sizeof(*o));
        if (o == NULL || (n > 0 && (o->fds = malloc((size_t)n * sizeof(int))) == NULL)) {
                free(o);
                free(frame);
                close_fds(fds, n);
                client_close(c, false);
                return;
        }
        o->buf = frame;
        o->len = len;
        if (n > 0)
                memcpy(o->fds, fds, (size_t)n * sizeof(int));
        o->nfds = n;
        TAILQ_INSERT_TAIL(&c->out, o, entry);
        c->queued += len;
        c->host->queued += len;
        if (c->queued > CLIENT_WRITE_QUEUE_HIGH && !c->held)
                c->held = true; /* backpressure: no more requests until it reads */
        client_flush(c);
}

void client_send(struct client *c, const cJSON *msg)
{
        client_enqueue(c, msg, NULL, 0);
}

void client_send_fds(struct client *c, const cJSON *msg, int *fds, int n)
{
        client_enqueue(c, msg, fds, n);
}

void client_refuse(struct client *c, uint64_t id, int code, const char *msg)
{
        cJSON *rep = proto_reply_error(id, code, "%s", msg);

        if (rep != NULL)
                client_send(c, rep);
        cJSON_Delete(rep);
        client_close(c, true);
}

static void client_hello(struct client *c, uint64_t id, cJSON *req)
{
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
        cJSON_AddStringToObject(rep, "backend", c->host->backend);
        cJSON_AddNumberToObject(rep, "pid", getpid());
        cJSON_AddNumberToObject(rep, "uid", (double)getuid());
        client_send(c, rep);
        cJSON_Delete(rep);
}

/* One frame with its descriptors (taken over). */
static void client_handle_frame(struct client *c, const char *json, size_t len, int *fds, int n)
{
        char err[PROTO_ERRMSG_MAX];
        const char *op;
        uint64_t id;
        int64_t declared;
        cJSON *req;
        int rc;

        if ((rc = proto_request_parse(json, len, &req, &id, &op, err, sizeof(err))) != 0) {
                cJSON *rep = proto_reply_error(id, rc, "%s", err);

                /* The frame's bounds hold, so the stream does: its descriptors go unused. */
                close_fds(fds, n);
                free(fds);

                if (rep != NULL)
                        client_send(c, rep);
                cJSON_Delete(rep);
                return;
        }
        if (proto_get_int(req, "fds", false, 0, &declared, err, sizeof(err)) != 0 ||
            declared != n) {
                close_fds(fds, n);
                free(fds);
                cJSON_Delete(req);
                client_refuse(c, id, FERRY_EPROTO,
                              "the frame's \"fds\" does not match the descriptors that came with "
                              "it");
                return;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(req, "fds");
        if (strcmp(op, "hello") == 0) {
                close_fds(fds, n);
                free(fds);
                client_hello(c, id, req);
                cJSON_Delete(req);
                return;
        }
        if (!c->hello) {
                cJSON *rep = proto_reply_error(id, FERRY_EPROTO, "say hello first");

                close_fds(fds, n);
                free(fds);
                if (rep != NULL)
                        client_send(c, rep);
                cJSON_Delete(rep);
                cJSON_Delete(req);
                return;
        }
        c->host->request(c->host, c, id, op, req, fds, n);
}

/* Handle the complete frames buffered, until none is left or the client is held. */
static void client_process(struct client *c)
{
        const char *json;
        size_t len;
        int rc;

        client_ref(c); /* a handler may close the client while frames remain */
        while (!c->closing && !c->held && (rc = proto_decoder_next(&c->dec, &json, &len)) != 0) {
                uint64_t start = c->rx_consumed;
                int *fds = NULL, n = 0;

                if (rc < 0) {
                        log_info("client %llu sent a bad frame header; dropping it",
                                 (unsigned long long)c->serial);
                        client_refuse(c, 0, rc,
                                      rc == FERRY_ETOOBIG
                                          ? "frame announces more than 1 MiB; larger data "
                                            "travels as files"
                                          : "frame announces an empty message");
                        break;
                }
                c->rx_consumed += PROTO_HEADER_LEN + len;
                if (proto_fdq_take(&c->fdq, start, c->rx_consumed, &fds, &n) != 0) {
                        log_info("client %llu sent descriptors that belong to no frame; "
                                 "dropping it",
                                 (unsigned long long)c->serial);
                        client_refuse(c, 0, FERRY_EPROTO,
                                      "descriptors arrived that belong to no request");
                        break;
                }
                client_handle_frame(c, json, len, fds, n);
        }
        client_unref(c);
}

/* Read what is there (a few reads at most), with any descriptors. */
static void client_read(struct client *c)
{
        int round;

        for (round = 0; round < CLIENT_READ_ROUNDS && !c->closing && !c->held; round++) {
                char cbuf[CMSG_SPACE(sizeof(int) * (PROTO_MAX_FDS + 8))];
                struct iovec iov = {c->readbuf, sizeof(c->readbuf)};
                int fds[PROTO_MAX_FDS + 8], nfds = 0;
                struct msghdr msg;
                struct cmsghdr *cm;
                ssize_t n;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf;
                msg.msg_controllen = sizeof(cbuf);
                n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                for (cm = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm != NULL;
                     cm = CMSG_NXTHDR(&msg, cm)) {
                        size_t k, room = sizeof(fds) / sizeof(fds[0]) - (size_t)nfds;

                        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                                continue;
                        k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        if (k > room)
                                k = room; /* the kernel never sends more than we made room for */
                        memcpy(&fds[nfds], CMSG_DATA(cm), k * sizeof(int));
                        nfds += (int)k;
                }
                if (n < 0) {
                        log_debug("client %llu: %s", (unsigned long long)c->serial,
                                  strerror(errno));
                        client_close(c, false);
                        return;
                }
                if (n == 0) {
                        close_fds(fds, nfds);
                        if (proto_decoder_partial(&c->dec))
                                log_info("client %llu left in the middle of a frame",
                                         (unsigned long long)c->serial);
                        client_close(c, false);
                        return;
                }
                c->active_ms = util_mono_ms();
                if ((msg.msg_flags & MSG_CTRUNC) || nfds > PROTO_MAX_FDS ||
                    c->fdq.count + nfds > CLIENT_FDS_QUEUED_MAX) {
                        close_fds(fds, nfds);
                        client_refuse(c, 0, FERRY_EINVAL,
                                      "too many descriptors at once (at most 250 a frame, and "
                                      "within ferryd's open-file limit)");
                        return;
                }
                c->rx_total += (uint64_t)n;
                if (proto_fdq_push(&c->fdq, c->rx_total, fds, nfds) != 0 ||
                    proto_decoder_feed(&c->dec, c->readbuf, (size_t)n) != 0) {
                        close_fds(fds, nfds);
                        client_refuse(c, 0, FERRY_ENOMEM, "out of memory");
                        return;
                }
                client_process(c);
        }
}

static void client_poll_cb(uv_poll_t *h, int status, int events)
{
        struct client *c = h->data;

        if (c->closing)
                return;
        client_ref(c);
        if (status < 0 && !(events & (UV_READABLE | UV_WRITABLE))) {
                client_close(c, false);
        } else {
                if (events & UV_WRITABLE)
                        client_flush(c);
                if (!c->closing && (events & (UV_READABLE | UV_DISCONNECT)))
                        client_read(c);
                if (!c->closing)
                        client_update_poll(c);
        }
        client_unref(c);
}

/* Watch for reads unless held, for writes while something is queued. */
static void client_update_poll(struct client *c)
{
        int want = 0;

        if (!c->poll_open || c->closing)
                return;
        if (!c->held)
                want |= UV_READABLE | UV_DISCONNECT;
        if (!TAILQ_EMPTY(&c->out))
                want |= UV_WRITABLE;
        if (want == c->events)
                return;
        c->events = want;
        if (want == 0)
                uv_poll_stop(&c->poll);
        else
                uv_poll_start(&c->poll, want, client_poll_cb);
}

void client_read_now(struct client *c)
{
        client_ref(c);
        if (!c->closing)
                client_read(c);
        client_unref(c);
}

struct client *client_new(struct client_host *host, int fd, uid_t uid, gid_t gid)
{
        struct client *c = calloc(1, sizeof(*c));
        static uint64_t serial;

        if (c == NULL) {
                close(fd);
                return NULL;
        }
        c->host = host;
        c->fd = fd;
        c->uid = uid;
        c->gid = gid;
        c->refs = 1;
        c->serial = ++serial;
        c->opened_ms = c->active_ms = util_mono_ms();
        TAILQ_INIT(&c->out);
        proto_decoder_init(&c->dec);
        proto_fdq_init(&c->fdq);
        host->added(host, c);
        if (uv_poll_init(host->loop, &c->poll, fd) == 0) {
                c->poll.data = c;
                c->poll_open = true;
                client_update_poll(c);
        } else {
                client_close(c, false);
                return NULL;
        }
        return c;
}

void client_link(struct client *c, struct client **head)
{
        c->prev = NULL;
        c->next = *head;
        if (*head)
                (*head)->prev = c;
        *head = c;
}

void client_unlink(struct client *c, struct client **head)
{
        if (c->prev)
                c->prev->next = c->next;
        else if (*head == c)
                *head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
}
