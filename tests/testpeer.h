/*
 * testpeer.h — the client's end of a control-socket connection in a unit
 * test (uvtest.h): frames out with their descriptors (SCM_RIGHTS), frames
 * in, while the test's loop runs the daemon's side in the same process.
 *
 * The peer's socket is non-blocking; sending and receiving run the loop
 * whenever the other side must act first, always within a deadline.
 */
#ifndef FERRY_TESTPEER_H
#define FERRY_TESTPEER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "uvtest.h"

struct testpeer {
        int fd;
        struct proto_decoder dec;
        cJSON **frames; /* received and not taken yet, oldest first */
        size_t nframes, cap;
        int fds_received; /* descriptors that came with replies (closed at once) */
        bool eof;         /* the daemon closed the connection */
};

static inline void testpeer_init(struct testpeer *p, int fd)
{
        memset(p, 0, sizeof(*p));
        p->fd = fd;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        proto_decoder_init(&p->dec);
}

static inline void testpeer_close(struct testpeer *p)
{
        size_t i;

        if (p->fd >= 0)
                close(p->fd);
        p->fd = -1;
        for (i = 0; i < p->nframes; i++)
                cJSON_Delete(p->frames[i]);
        free(p->frames);
        p->frames = NULL;
        p->nframes = p->cap = 0;
        proto_decoder_free(&p->dec);
}

/* Read whatever is there without waiting; decode complete frames. */
static inline void testpeer_pump(struct testpeer *p)
{
        char buf[65536], cbuf[CMSG_SPACE(sizeof(int) * 256)];
        const char *json;
        size_t len;

        while (!p->eof && p->fd >= 0) {
                struct iovec iov = {buf, sizeof(buf)};
                struct msghdr msg;
                struct cmsghdr *cm;
                ssize_t n;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf;
                msg.msg_controllen = sizeof(cbuf);
                n = recvmsg(p->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        break;
                for (cm = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm != NULL;
                     cm = CMSG_NXTHDR(&msg, cm)) {
                        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)), i, fd;

                        for (i = 0; i < k; i++) {
                                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                                close(fd);
                                p->fds_received++;
                        }
                }
                if (n <= 0) {
                        p->eof = true; /* 0: closed; < 0: reset */
                        break;
                }
                if (proto_decoder_feed(&p->dec, buf, (size_t)n) != 0)
                        break;
        }
        while (proto_decoder_next(&p->dec, &json, &len) == 1) {
                if (p->nframes == p->cap) {
                        size_t cap = p->cap ? p->cap * 2 : 64;
                        cJSON **grown = realloc(p->frames, cap * sizeof(*grown));

                        if (grown == NULL)
                                break;
                        p->frames = grown;
                        p->cap = cap;
                }
                p->frames[p->nframes++] = cJSON_ParseWithLength(json, len);
        }
}

static inline bool testpeer_has_frame(void *data)
{
        struct testpeer *p = data;

        testpeer_pump(p);
        return p->nframes > 0 || p->eof;
}

static inline bool testpeer_at_eof(void *data)
{
        struct testpeer *p = data;

        testpeer_pump(p);
        return p->eof;
}

/* The next frame (the caller deletes it), running the loop up to timeout_ms; NULL if none. */
static inline cJSON *testpeer_recv(struct testpeer *p, int64_t timeout_ms)
{
        cJSON *f;

        uvtest_run_until(testpeer_has_frame, p, timeout_ms);
        if (p->nframes == 0)
                return NULL;
        f = p->frames[0];
        memmove(p->frames, p->frames + 1, (p->nframes - 1) * sizeof(*p->frames));
        p->nframes--;
        return f;
}

/* Run the loop until the daemon closed the connection (frames before it are kept). */
static inline bool testpeer_wait_eof(struct testpeer *p, int64_t timeout_ms)
{
        return uvtest_run_until(testpeer_at_eof, p, timeout_ms);
}

/*
 * Send `len` bytes, the descriptors with the first sendmsg(). The loop runs
 * while the socket is full. 0, or -1 when the connection broke.
 */
static inline int testpeer_send_raw(struct testpeer *p, const void *buf, size_t len, const int *fds,
                                    int nfds)
{
        char cbuf[CMSG_SPACE(sizeof(int) * 256)];
        size_t off = 0;
        int64_t deadline = uvtest_mono_ms() + 10000;

        while (off < len || nfds > 0) {
                struct iovec iov = {(char *)buf + off, len - off};
                struct msghdr msg;
                ssize_t n;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                if (nfds > 0) {
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
                n = sendmsg(p->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        if (uvtest_mono_ms() > deadline)
                                return -1;
                        uvtest_run_for(1); /* let the daemon read */
                        continue;
                }
                if (n < 0)
                        return -1;
                off += (size_t)n;
                nfds = 0;
        }
        return 0;
}

/* One frame holding `json`, with its descriptors. */
static inline int testpeer_send(struct testpeer *p, const char *json, const int *fds, int nfds)
{
        size_t len = strlen(json);
        char *frame = malloc(len + PROTO_HEADER_LEN);
        uint32_t be = htonl((uint32_t)len);
        int rc;

        if (frame == NULL)
                return -1;
        memcpy(frame, &be, PROTO_HEADER_LEN);
        memcpy(frame + PROTO_HEADER_LEN, json, len);
        rc = testpeer_send_raw(p, frame, len + PROTO_HEADER_LEN, fds, nfds);
        free(frame);
        return rc;
}

/* A frame built by printf. */
static inline int testpeer_sendf(struct testpeer *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int testpeer_sendf(struct testpeer *p, const char *fmt, ...)
{
        char json[8192];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(json, sizeof(json), fmt, ap);
        va_end(ap);
        return testpeer_send(p, json, NULL, 0);
}

/* Send a request and take the next frame. */
static inline cJSON *testpeer_call(struct testpeer *p, const char *json)
{
        if (testpeer_send(p, json, NULL, 0) != 0)
                return NULL;
        return testpeer_recv(p, 5000);
}

/* "ok", or the error code of a reply; "(none)" for no reply. */
static inline const char *testpeer_code(const cJSON *r)
{
        const cJSON *err;

        if (r == NULL)
                return "(none)";
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")))
                return "ok";
        err = cJSON_GetObjectItemCaseSensitive(r, "error");
        return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "code"))
                   ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "code"))
                   : "(no code)";
}

/* The error message of a reply, or "". */
static inline const char *testpeer_message(const cJSON *r)
{
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"));

        return m ? m : "";
}

/* A reply's "id", or -1. */
static inline int64_t testpeer_id(const cJSON *r)
{
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id");

        return cJSON_IsNumber(id) ? (int64_t)id->valuedouble : -1;
}

#endif
