/*
 * http.c — ferryd's HTTP engine: libcurl's multi socket API on the libuv loop.
 *
 * Shape (after curl's docs/examples/multi-uv.c): curl tells us which sockets
 * to watch (http_curl_socket_cb: one uv_poll_t per socket, attached with
 * curl_multi_assign) and when to wake it (http_curl_timer_cb: one uv_timer_t);
 * both wake-ups call curl_multi_socket_action() and then drain
 * curl_multi_info_read() (http_engine_check_done). Finished requests go to the
 * `done` list and their callbacks run from there (http_engine_deliver), after
 * curl has returned, so a callback may submit, cancel or close freely.
 *
 * Every uv handle the engine opens is counted in open_handles; the engine is
 * freed when the last one's close callback runs after http_engine_close().
 * CURLcode values are converted to FERRY_E* codes here and go no further.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ferry_base.h"
#include "log.h"

#define HTTP_USER_AGENT "ferry/" FERRY_VERSION_STRING
#define HTTP_MAX_REDIRS 5L
#define HTTP_BODY_INITIAL 16384
#define HTTP_SPEED_SLOTS 8 /* low-speed checkpoints kept per transfer */

enum http_state {
        HTTP_STATE_NEW,     /* built by the caller, not submitted */
        HTTP_STATE_QUEUED,  /* in engine->queued */
        HTTP_STATE_RUNNING, /* in engine->running, attached to the multi handle */
        HTTP_STATE_DONE,    /* in engine->done, waiting for its callback */
};

struct http_request {
        TAILQ_ENTRY(http_request) entry; /* in one of the engine's lists, by state */
        enum http_state state;
        struct http_engine *engine; /* set by submit */
        CURL *easy;                 /* owned */
        char *method;               /* owned */
        char *url;                  /* owned */
        struct curl_slist *headers; /* owned */
        char *body;                 /* owned copy of the request body, or NULL */
        size_t body_len;
        curl_mime *mime; /* owned multipart body, or NULL */

        char *sigv4_provider; /* owned; CURLOPT_AWS_SIGV4, or NULL */
        char *sigv4_user;     /* owned; the access key */
        char *sigv4_secret;   /* owned; wiped before it is freed */
        int no_redirects;     /* GET/HEAD: return a 3xx instead of following it */

        char *out_path;       /* owned; a 2xx body goes there */
        int out_fd;           /* -1 until the first 2xx body byte */
        int out_errno;        /* why writing out_path failed */
        int too_large;        /* a 2xx body exceeded max_body */
        int64_t body_bytes;   /* size of the body sent (memory body and parts) */
        int64_t expect_bytes; /* http_request_set_expected_size(), or -1 */
        int no_memory;        /* growing the body buffer failed */
        int sock_errno;       /* pending socket error seen with a poll error */

        size_t body_cap;    /* capacity of resp.body; 0 while it points to empty_body */
        curl_off_t ul_seen; /* upload progress already added to the engine's total */
        curl_off_t dl_seen;

        /* Our low-speed check: checkpoints of (time, bytes moved) a quarter of the window apart. */
        struct {
                uint64_t ms;
                curl_off_t bytes;
        } speed[HTTP_SPEED_SLOTS];
        int n_speed;  /* checkpoints in speed[], newest last */
        int too_slow; /* the check cut the transfer */

        void (*done)(struct http_request *req, const struct http_response *resp, void *data);
        void *data;
        char errbuf[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER */
        struct http_response resp;
};

TAILQ_HEAD(http_request_list, http_request);

/* One watched curl socket; poll.data points back here. Freed by its close callback. */
struct http_socket {
        uv_poll_t poll;
        curl_socket_t fd;
        CURL *easy; /* transfer that last asked for it; compared, never dereferenced */
        struct http_engine *engine;
        LIST_ENTRY(http_socket) entry;
};

struct http_engine {
        uv_loop_t *loop;
        CURLM *multi;                     /* NULL once closing */
        uv_timer_t timer;                 /* curl's timeout (CURLMOPT_TIMERFUNCTION) */
        uv_timer_t defer;                 /* runs callbacks of cancelled requests */
        struct http_config cfg;           /* cfg.ca_file points to ca_file */
        char *ca_file;                    /* owned copy */
        struct http_request_list queued;  /* FIFO of submitted requests */
        struct http_request_list running; /* attached to multi */
        struct http_request_list done;    /* finished, callback pending */
        int n_queued;
        int n_running;
        LIST_HEAD(, http_socket) sockets; /* open poll handles */
        uint64_t bytes_sent;
        uint64_t bytes_received;
        int open_handles; /* uv handles not yet closed */
        int closing;
        int delivering;
        void (*closed_cb)(void *data);
        void *closed_data;
};

static char empty_body[1];

static uint64_t http_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void http_engine_check_done(struct http_engine *engine);

/* Set resp->error, truncating a long message. */
static void __attribute__((format(printf, 2, 3)))
http_response_set_error(struct http_response *resp, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(resp->error, sizeof(resp->error), fmt, ap);
        va_end(ap);
}

void http_config_defaults(struct http_config *cfg)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->max_transfers = 16;
        cfg->connect_timeout_s = 10;
        cfg->low_speed_limit = 1024;
        cfg->low_speed_time_s = 60;
        cfg->deadline_base_s = 600;
        cfg->min_rate_bps = 32768;
        cfg->verify_tls = 1;
        cfg->ca_file = NULL;
        cfg->max_body = 1024 * 1024;
}

enum http_outcome http_classify(const struct http_response *resp)
{
        if (resp->cancelled)
                return HTTP_TRANSIENT;
        switch (resp->err) {
        case 0:
                break;
        case FERRY_ECONNECT:
        case FERRY_ETIMEDOUT:
        case FERRY_EIO:
                return HTTP_TRANSIENT;
        default:
                return HTTP_PERMANENT;
        }
        if (resp->status >= 200 && resp->status < 300)
                return HTTP_OK;
        if (resp->status == 408 || resp->status == 429 ||
            (resp->status >= 500 && resp->status < 600))
                return HTTP_TRANSIENT;
        return HTTP_PERMANENT;
}

/* ---- engine lifetime ----------------------------------------------------- */

/* Last uv handle closed after http_engine_close(): free the engine, tell the caller. */
static void http_engine_handle_closed(struct http_engine *engine)
{
        void (*closed_cb)(void *data) = engine->closed_cb;
        void *closed_data = engine->closed_data;

        engine->open_handles--;
        if (!engine->closing || engine->open_handles > 0)
                return;
        free(engine->ca_file);
        free(engine);
        curl_global_cleanup();
        if (closed_cb != NULL)
                closed_cb(closed_data);
}

static void http_timer_close_cb(uv_handle_t *handle)
{
        http_engine_handle_closed(handle->data);
}

static void http_socket_close_cb(uv_handle_t *handle)
{
        struct http_socket *sock = handle->data;
        struct http_engine *engine = sock->engine;

        free(sock);
        http_engine_handle_closed(engine);
}

static void http_socket_close(struct http_socket *sock)
{
        LIST_REMOVE(sock, entry);
        uv_close((uv_handle_t *)&sock->poll, http_socket_close_cb);
}

/* ---- curl <-> uv glue ---------------------------------------------------- */

/*
 * libuv reports any POLLERR as UV_EBADF and curl, told CURL_CSELECT_ERR, only
 * says "select/poll returned error": keep the socket's real error (say,
 * ECONNRESET) for the message of the transfer using it.
 */
static void http_socket_note_error(struct http_socket *sock)
{
        struct http_request *req;
        socklen_t len = sizeof(int);
        int err = 0;

        if (getsockopt(sock->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0)
                return;
        TAILQ_FOREACH(req, &sock->engine->running, entry)
        {
                if (req->easy == sock->easy)
                        req->sock_errno = err;
        }
}

static void http_poll_cb(uv_poll_t *poll, int status, int events)
{
        struct http_socket *sock = poll->data;
        struct http_engine *engine = sock->engine;
        int flags = 0;
        int running;

        if (engine->closing)
                return;
        if (status < 0) {
                log_debug("http: poll error on socket %d: %s", (int)sock->fd, uv_strerror(status));
                http_socket_note_error(sock);
                flags = CURL_CSELECT_ERR;
        } else {
                if (events & UV_READABLE)
                        flags |= CURL_CSELECT_IN;
                if (events & UV_WRITABLE)
                        flags |= CURL_CSELECT_OUT;
        }
        /* May close this socket (sock stays allocated until its close callback). */
        curl_multi_socket_action(engine->multi, sock->fd, flags, &running);
        http_engine_check_done(engine);
}

static void http_timeout_cb(uv_timer_t *timer)
{
        struct http_engine *engine = timer->data;
        int running;

        if (engine->closing)
                return;
        curl_multi_socket_action(engine->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        http_engine_check_done(engine);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for `what`; socketp is our http_socket or NULL. */
static int http_curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
        struct http_engine *engine = userp;
        struct http_socket *sock = socketp;
        int events = 0;
        int rc;

        if (what == CURL_POLL_REMOVE) {
                /* curl forgets the socket itself; it is closed right after this. */
                if (sock != NULL)
                        http_socket_close(sock);
                return 0;
        }
        if (engine->closing)
                return 0;
        if (sock == NULL) {
                sock = calloc(1, sizeof(*sock));
                if (sock == NULL) {
                        log_error("http: out of memory watching socket %d", (int)fd);
                        return -1;
                }
                rc = uv_poll_init_socket(engine->loop, &sock->poll, fd);
                if (rc < 0) {
                        log_error("http: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
                        free(sock);
                        return -1;
                }
                sock->poll.data = sock;
                sock->fd = fd;
                sock->engine = engine;
                engine->open_handles++;
                LIST_INSERT_HEAD(&engine->sockets, sock, entry);
                curl_multi_assign(engine->multi, fd, sock);
        }
        sock->easy = easy;
        if (what & CURL_POLL_IN)
                events |= UV_READABLE;
        if (what & CURL_POLL_OUT)
                events |= UV_WRITABLE;
        rc = uv_poll_start(&sock->poll, events, http_poll_cb);
        if (rc < 0) {
                log_error("http: cannot poll socket %d: %s", (int)fd, uv_strerror(rc));
                return -1;
        }
        return 0;
}

/* CURLMOPT_TIMERFUNCTION: call curl back after timeout_ms; -1 stops the timer. */
static int http_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
        struct http_engine *engine = userp;

        if (engine->closing)
                return 0;
        if (timeout_ms < 0)
                uv_timer_stop(&engine->timer);
        else /* 0 too goes through the loop: curl must not be re-entered from here */
                uv_timer_start(&engine->timer, http_timeout_cb, (uint64_t)timeout_ms, 0);
        return 0;
}

/* ---- per-transfer callbacks ---------------------------------------------- */

static void http_request_count_progress(struct http_request *req, curl_off_t dlnow,
                                        curl_off_t ulnow)
{
        struct http_engine *engine = req->engine;

        /* A rewind (redirect, retry on a dead connection) starts again from 0. */
        if (ulnow > req->ul_seen)
                engine->bytes_sent += (uint64_t)(ulnow - req->ul_seen);
        req->ul_seen = ulnow;
        if (dlnow > req->dl_seen)
                engine->bytes_received += (uint64_t)(dlnow - req->dl_seen);
        req->dl_seen = dlnow;
}

/*
 * libcurl's own low-speed check averages over a fixed few seconds, so a burst (the request
 * body) keeps a trickling answer alive for up to low_speed_time + 6 s. Ours compares the bytes
 * moved since a checkpoint at least low_speed_time old with the limit, checkpoints taken a
 * quarter of the window apart: a transfer that falls below the limit is cut within 1.25 times
 * the window. curl's check stays on as the timer that calls us while nothing moves.
 */
static int http_request_too_slow(struct http_request *req, curl_off_t moved)
{
        const struct http_config *cfg = &req->engine->cfg;
        uint64_t window = (uint64_t)cfg->low_speed_time_s * 1000, now = http_now_ms();
        int i, old = -1;

        if (cfg->low_speed_limit <= 0 || window == 0)
                return 0;
        if (req->n_speed > 0 && moved < req->speed[req->n_speed - 1].bytes)
                req->n_speed = 0; /* rewound (redirect, retry on a dead connection) */
        if (req->n_speed == 0 || now - req->speed[req->n_speed - 1].ms >= window / 4) {
                if (req->n_speed == HTTP_SPEED_SLOTS) {
                        memmove(&req->speed[0], &req->speed[1],
                                sizeof(req->speed[0]) * (HTTP_SPEED_SLOTS - 1));
                        req->n_speed--;
                }
                req->speed[req->n_speed].ms = now;
                req->speed[req->n_speed].bytes = moved;
                req->n_speed++;
        }
        for (i = 0; i < req->n_speed; i++)
                if (now - req->speed[i].ms >= window)
                        old = i; /* the newest checkpoint a whole window back */
        if (old < 0)
                return 0;
        /* bytes / elapsed < limit, without division */
        return (uint64_t)(moved - req->speed[old].bytes) * 1000 <
               (uint64_t)cfg->low_speed_limit * (now - req->speed[old].ms);
}

static int http_xferinfo_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                            curl_off_t ulnow)
{
        struct http_request *req = clientp;

        http_request_count_progress(req, dlnow, ulnow);
        if (http_request_too_slow(req, dlnow + ulnow)) {
                req->too_slow = 1;
                return 1; /* CURLE_ABORTED_BY_CALLBACK */
        }
        return 0;
}

/* Seconds from a Retry-After value (delta-seconds or HTTP-date), -1 if unparsable. */
static long http_parse_retry_after(const char *value)
{
        time_t when, now;
        char *end;
        long long secs;

        if (*value >= '0' && *value <= '9') {
                errno = 0;
                secs = strtoll(value, &end, 10);
                if (*end != '\0')
                        return -1;
                if (errno == ERANGE || secs > INT_MAX)
                        return INT_MAX;
                return (long)secs;
        }
        when = curl_getdate(value, NULL);
        if (when == -1)
                return -1;
        now = time(NULL);
        return when > now ? (long)(when - now) : 0;
}

/* CURLOPT_HEADERFUNCTION: one header line of any response, status lines included. */
static size_t http_header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
        static const char retry_after[] = "Retry-After:";
        static const char etag[] = "ETag:";
        struct http_request *req = userdata;
        size_t len = size * nitems;
        size_t n = sizeof(retry_after) - 1;
        char value[128];

        if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
                /* A new response (after 100 Continue or a redirect) starts over. */
                req->resp.retry_after_s = -1;
                req->resp.body_len = 0;
                req->resp.body[0] = '\0';
                req->resp.etag[0] = '\0';
                return len;
        }
        if (len > sizeof(etag) - 1 && strncasecmp(buf, etag, sizeof(etag) - 1) == 0) {
                size_t i = sizeof(etag) - 1, end = len, k = 0;

                while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
                        i++;
                while (end > i && (buf[end - 1] == '\r' || buf[end - 1] == '\n' ||
                                   buf[end - 1] == ' ' || buf[end - 1] == '\t'))
                        end--;
                /* Kept only when it fits whole and is printable: a cut ETag would mislead. */
                if (end - i < sizeof(req->resp.etag)) {
                        for (; i < end && (unsigned char)buf[i] >= 0x20 && buf[i] != 0x7f; i++)
                                req->resp.etag[k++] = buf[i];
                        req->resp.etag[i == end ? k : 0] = '\0';
                }
                return len;
        }
        if (len <= n || strncasecmp(buf, retry_after, n) != 0)
                return len;
        buf += n;
        len -= n;
        while (len > 0 && (*buf == ' ' || *buf == '\t')) {
                buf++;
                len--;
        }
        while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == '\n' || buf[len - 1] == ' ' ||
                           buf[len - 1] == '\t'))
                len--;
        if (len >= sizeof(value))
                return size * nitems; /* not a value we could parse; ignore it */
        memcpy(value, buf, len);
        value[len] = '\0';
        req->resp.retry_after_s = http_parse_retry_after(value);
        return size * nitems;
}

static size_t http_write_file(struct http_request *req, const char *ptr, size_t n)
{
        size_t off = 0;
        ssize_t w;

        if (req->out_fd < 0) {
                req->out_fd = open(req->out_path,
                                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (req->out_fd < 0) {
                        req->out_errno = errno;
                        return 0;
                }
        }
        while (off < n) {
                w = write(req->out_fd, ptr + off, n - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        req->out_errno = errno;
                        return 0;
                }
                off += (size_t)w;
        }
        return n;
}

/* Append to resp.body, keeping room for the NUL; a non-2xx body is truncated at max_body. */
static size_t http_write_memory(struct http_request *req, const char *ptr, size_t n, long status)
{
        struct http_response *resp = &req->resp;
        size_t max = req->engine->cfg.max_body;
        size_t keep = n;
        size_t cap;
        char *grown;

        if (resp->body_len + n > max) {
                if (status >= 200 && status < 300) {
                        req->too_large = 1;
                        return 0;
                }
                keep = max - resp->body_len;
                resp->body_cut = 1;
        }
        if (resp->body_len + keep + 1 > req->body_cap) {
                cap = req->body_cap ? req->body_cap : HTTP_BODY_INITIAL;
                while (cap < resp->body_len + keep + 1)
                        cap *= 2;
                if (cap > max + 1)
                        cap = max + 1;
                grown = realloc(req->body_cap ? resp->body : NULL, cap);
                if (grown == NULL) {
                        req->no_memory = 1;
                        return 0;
                }
                resp->body = grown;
                req->body_cap = cap;
        }
        memcpy(resp->body + resp->body_len, ptr, keep);
        resp->body_len += keep;
        resp->body[resp->body_len] = '\0';
        /* An error body that never ends must not hold the slot: end the transfer here. */
        return resp->body_cut ? 0 : n;
}

/* CURLOPT_WRITEFUNCTION: a 2xx body goes to the output file if any, the rest to memory. */
static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct http_request *req = userdata;
        size_t n = size * nmemb;
        long status = 0;

        curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
        if (req->out_path != NULL && status >= 200 && status < 300)
                return http_write_file(req, ptr, n);
        return http_write_memory(req, ptr, n, status);
}

/* ---- requests ------------------------------------------------------------ */

static int http_has_ctl(const char *s)
{
        for (; *s != '\0'; s++) {
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return 1;
        }
        return 0;
}

struct http_request *http_request_new(const char *method, const char *url)
{
        struct http_request *req;

        if (method == NULL || url == NULL || *method == '\0' || *url == '\0' ||
            http_has_ctl(method) || strchr(method, ' ') != NULL || http_has_ctl(url))
                return NULL;
        req = calloc(1, sizeof(*req));
        if (req == NULL)
                return NULL;
        req->out_fd = -1;
        req->expect_bytes = -1;
        req->resp.retry_after_s = -1;
        req->resp.body = empty_body;
        req->method = strdup(method);
        if (req->method == NULL)
                goto free_req;
        req->url = strdup(url);
        if (req->url == NULL)
                goto free_method;
        req->easy = curl_easy_init();
        if (req->easy == NULL)
                goto free_url;
        return req;

free_url:
        free(req->url);
free_method:
        free(req->method);
free_req:
        free(req);
        return NULL;
}

/* Free everything a request owns; it must not be attached to the multi handle. */
static void http_request_destroy(struct http_request *req)
{
        if (req->out_fd >= 0)
                close(req->out_fd);
        curl_easy_cleanup(req->easy); /* before the mime and headers it points to */
        curl_mime_free(req->mime);
        curl_slist_free_all(req->headers);
        if (req->body_cap > 0)
                free(req->resp.body);
        free(req->body);
        if (req->sigv4_secret != NULL) {
                explicit_bzero(req->sigv4_secret, strlen(req->sigv4_secret));
                free(req->sigv4_secret);
        }
        free(req->sigv4_user);
        free(req->sigv4_provider);
        free(req->out_path);
        free(req->url);
        free(req->method);
        free(req);
}

void http_request_free(struct http_request *req)
{
        if (req == NULL)
                return;
        if (req->state != HTTP_STATE_NEW) {
                log_error("http: http_request_free() on a submitted request (%s %s)", req->method,
                          req->url);
                return;
        }
        http_request_destroy(req);
}

int http_request_add_header(struct http_request *req, const char *name, const char *value)
{
        struct curl_slist *list;
        size_t len;
        char *line;

        if (req->state != HTTP_STATE_NEW || name == NULL || value == NULL || *name == '\0' ||
            strpbrk(name, ": \t") != NULL || http_has_ctl(name) || http_has_ctl(value))
                return FERRY_EINVAL;
        len = strlen(name) + strlen(value) + 3;
        line = malloc(len);
        if (line == NULL)
                return FERRY_ENOMEM;
        /* "Name;" is curl's way to send a header with an empty value. */
        if (*value == '\0')
                snprintf(line, len, "%s;", name);
        else
                snprintf(line, len, "%s: %s", name, value);
        list = curl_slist_append(req->headers, line);
        free(line);
        if (list == NULL)
                return FERRY_ENOMEM;
        req->headers = list;
        return 0;
}

int http_request_set_body(struct http_request *req, const char *content_type, const char *body,
                          size_t len)
{
        char *copy;
        int rc;

        if (req->state != HTTP_STATE_NEW || req->mime != NULL || req->body != NULL ||
            (body == NULL && len > 0))
                return FERRY_EINVAL;
        copy = malloc(len ? len : 1);
        if (copy == NULL)
                return FERRY_ENOMEM;
        if (len > 0)
                memcpy(copy, body, len);
        if (content_type != NULL) {
                rc = http_request_add_header(req, "Content-Type", content_type);
                if (rc < 0) {
                        free(copy);
                        return rc;
                }
        }
        req->body = copy;
        req->body_len = len;
        req->body_bytes += (int64_t)len;
        return 0;
}

/* A new, empty part of the multipart body, or NULL. */
static curl_mimepart *http_request_new_part(struct http_request *req, const char *name)
{
        curl_mimepart *part;

        if (req->mime == NULL) {
                req->mime = curl_mime_init(req->easy);
                if (req->mime == NULL)
                        return NULL;
        }
        part = curl_mime_addpart(req->mime);
        if (part == NULL)
                return NULL;
        if (curl_mime_name(part, name) != CURLE_OK)
                return NULL; /* the empty part stays in the mime; harmless but unnamed */
        return part;
}

int http_request_add_part_string(struct http_request *req, const char *name, const char *value)
{
        curl_mimepart *part;

        if (req->state != HTTP_STATE_NEW || req->body != NULL || name == NULL || value == NULL)
                return FERRY_EINVAL;
        part = http_request_new_part(req, name);
        if (part == NULL || curl_mime_data(part, value, CURL_ZERO_TERMINATED) != CURLE_OK)
                return FERRY_ENOMEM;
        return 0;
}

int http_request_add_part_file(struct http_request *req, const char *name, const char *path,
                               const char *filename)
{
        curl_mimepart *part;

        if (req->state != HTTP_STATE_NEW || req->body != NULL || name == NULL || path == NULL)
                return FERRY_EINVAL;
        struct stat st;

        if (access(path, R_OK) != 0 || stat(path, &st) != 0)
                return errno == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO;
        req->body_bytes += st.st_size;
        part = http_request_new_part(req, name);
        if (part == NULL)
                return FERRY_ENOMEM;
        /* curl opens the file when the transfer starts and reads it in small blocks. */
        if (curl_mime_filedata(part, path) != CURLE_OK)
                return FERRY_EIO;
        if (filename != NULL && curl_mime_filename(part, filename) != CURLE_OK)
                return FERRY_ENOMEM;
        if (curl_mime_type(part, "application/octet-stream") != CURLE_OK)
                return FERRY_ENOMEM;
        return 0;
}

/* A part streamed from a descriptor: curl's read, seek and free callbacks. */
struct http_fd_part {
        int fd;
        int64_t size;
        int64_t off;
};

static size_t http_fd_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
        struct http_fd_part *p = arg;
        size_t want = size * nitems;
        ssize_t r;

        if ((int64_t)want > p->size - p->off)
                want = (size_t)(p->size - p->off);
        if (want == 0)
                return 0;
        do {
                r = pread(p->fd, buf, want, p->off);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
                return CURL_READFUNC_ABORT;
        if (r == 0)
                return CURL_READFUNC_ABORT; /* the file shrank: never send a short body */
        p->off += r;
        return (size_t)r;
}

static int http_fd_seek_cb(void *arg, curl_off_t offset, int origin)
{
        struct http_fd_part *p = arg;

        if (origin != SEEK_SET || offset < 0 || offset > p->size)
                return CURL_SEEKFUNC_FAIL;
        p->off = offset;
        return CURL_SEEKFUNC_OK;
}

static void http_fd_free_cb(void *arg)
{
        struct http_fd_part *p = arg;

        close(p->fd);
        free(p);
}

int http_request_add_part_fd(struct http_request *req, const char *name, int fd, int64_t size,
                             const char *filename)
{
        struct http_fd_part *p;
        curl_mimepart *part;

        if (req->state != HTTP_STATE_NEW || req->body != NULL || name == NULL || fd < 0 ||
            size < 0) {
                if (fd >= 0)
                        close(fd);
                return FERRY_EINVAL;
        }
        p = calloc(1, sizeof(*p));
        part = p ? http_request_new_part(req, name) : NULL;
        if (part == NULL) {
                free(p);
                close(fd);
                return FERRY_ENOMEM;
        }
        p->fd = fd;
        p->size = size;
        if (curl_mime_data_cb(part, (curl_off_t)size, http_fd_read_cb, http_fd_seek_cb,
                              http_fd_free_cb, p) != CURLE_OK) {
                http_fd_free_cb(p);
                return FERRY_ENOMEM;
        }
        req->body_bytes += size;
        if (filename != NULL && curl_mime_filename(part, filename) != CURLE_OK)
                return FERRY_ENOMEM;
        if (curl_mime_type(part, "application/octet-stream") != CURLE_OK)
                return FERRY_ENOMEM;
        return 0;
}

int http_request_set_aws_sigv4(struct http_request *req, const char *provider,
                               const char *access_key, const char *secret)
{
        if (req->state != HTTP_STATE_NEW || provider == NULL || access_key == NULL ||
            secret == NULL || http_has_ctl(provider) || http_has_ctl(access_key))
                return FERRY_EINVAL;
        free(req->sigv4_provider);
        free(req->sigv4_user);
        if (req->sigv4_secret != NULL) {
                explicit_bzero(req->sigv4_secret, strlen(req->sigv4_secret));
                free(req->sigv4_secret);
        }
        req->sigv4_provider = strdup(provider);
        req->sigv4_user = strdup(access_key);
        req->sigv4_secret = strdup(secret);
        if (req->sigv4_provider == NULL || req->sigv4_user == NULL || req->sigv4_secret == NULL)
                return FERRY_ENOMEM;
        return 0;
}

void http_request_no_redirects(struct http_request *req)
{
        req->no_redirects = 1;
}

void http_request_set_expected_size(struct http_request *req, int64_t bytes)
{
        req->expect_bytes = bytes;
}

int http_request_set_output_file(struct http_request *req, const char *path)
{
        char *copy;

        if (req->state != HTTP_STATE_NEW || path == NULL || *path == '\0')
                return FERRY_EINVAL;
        copy = strdup(path);
        if (copy == NULL)
                return FERRY_ENOMEM;
        free(req->out_path);
        req->out_path = copy;
        return 0;
}

static void http_keep_first(CURLcode *first, CURLcode rc)
{
        if (*first == CURLE_OK)
                *first = rc;
}

/* Set every option of req's easy handle; return 0 or a FERRY_E* code. */
static int http_request_setup(struct http_engine *engine, struct http_request *req)
{
        const struct http_config *cfg = &engine->cfg;
        CURL *easy = req->easy;
        CURLcode rc = CURLE_OK;
        int is_get = strcmp(req->method, "GET") == 0;
        int is_head = strcmp(req->method, "HEAD") == 0;

        if ((is_get || is_head) && (req->body != NULL || req->mime != NULL))
                return FERRY_EINVAL;
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_URL, req->url));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_PRIVATE, req));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_USERAGENT, HTTP_USER_AGENT));
        http_keep_first(&rc,
                        curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L));
        http_keep_first(&rc,
                        curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, cfg->connect_timeout_s));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, cfg->low_speed_limit));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, cfg->low_speed_time_s));
        {
                int64_t bytes = req->expect_bytes >= 0 ? req->expect_bytes : req->body_bytes;
                int64_t ms = (int64_t)cfg->deadline_base_s * 1000;

                if (cfg->min_rate_bps > 0)
                        ms += bytes / cfg->min_rate_bps * 1000;
                if (ms > 0)
                        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)ms));
        }
        http_keep_first(&rc,
                        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, cfg->verify_tls ? 1L : 0L));
        http_keep_first(&rc,
                        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, cfg->verify_tls ? 2L : 0L));
        if (cfg->ca_file != NULL)
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_CAINFO, cfg->ca_file));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, http_header_cb));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_HEADERDATA, req));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_write_cb));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_WRITEDATA, req));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, http_xferinfo_cb));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_XFERINFODATA, req));
        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L));
        if (req->sigv4_provider != NULL) {
                /* Signed by curl; the secret stays in memory, out of URLs and logs. */
                http_keep_first(&rc,
                                curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, req->sigv4_provider));
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_USERNAME, req->sigv4_user));
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_PASSWORD, req->sigv4_secret));
        }

        if (is_get || is_head) {
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L));
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_NOBODY, is_head ? 1L : 0L));
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION,
                                                      req->no_redirects ? 0L : 1L));
                http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_MAXREDIRS, HTTP_MAX_REDIRS));
                http_keep_first(&rc,
                                curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
        } else {
                if (req->mime != NULL) {
                        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_MIMEPOST, req->mime));
                } else if (strcmp(req->method, "POST") == 0 || req->body != NULL) {
                        /* POSTFIELDS points to our copy, alive until the request is freed. */
                        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                                              (curl_off_t)req->body_len));
                        http_keep_first(&rc, curl_easy_setopt(easy, CURLOPT_POSTFIELDS,
                                                              req->body ? req->body : empty_body));
                }
                if (strcmp(req->method, "POST") != 0)
                        http_keep_first(&rc,
                                        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method));
        }
        if (rc == CURLE_OUT_OF_MEMORY)
                return FERRY_ENOMEM;
        if (rc != CURLE_OK) {
                log_error("http: cannot set up %s %s: %s", req->method, req->url,
                          curl_easy_strerror(rc));
                return FERRY_EINVAL;
        }
        return 0;
}

/* The output file could not be written: disk full, or anything else. */
static void http_request_set_file_error(struct http_request *req)
{
        int e = req->out_errno;

        req->resp.err = (e == ENOSPC || e == EDQUOT) ? FERRY_ENOSPC : FERRY_EFAILED;
        http_response_set_error(&req->resp, "cannot write %s: %s", req->out_path, strerror(e));
}

/* Fill resp->err, resp->unreachable and resp->error for a failed transfer. */
static void http_request_set_failure(struct http_request *req, CURLcode result)
{
        struct http_response *resp = &req->resp;
        const char *msg = req->errbuf[0] ? req->errbuf : curl_easy_strerror(result);
        long request_size = 0;

        curl_easy_getinfo(req->easy, CURLINFO_REQUEST_SIZE, &request_size);
        switch (result) {
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
                resp->err = FERRY_ECONNECT;
                resp->unreachable = 1;
                break;
        case CURLE_OPERATION_TIMEDOUT:
                /* Unreachable only when no connection was ever made; else the transfer was slow. */
                resp->err = FERRY_ETIMEDOUT;
                resp->unreachable = !resp->connected;
                break;
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
                /* The server took the connection and dropped it: a failure of this request. */
                resp->err = FERRY_EIO;
                break;
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_HTTP3:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_WEIRD_SERVER_REPLY:
                resp->err = FERRY_EIO;
                break;
        case CURLE_WRITE_ERROR:
                if (resp->body_cut) {
                        /* An error status whose body we cut short: the status speaks. */
                        resp->err = 0;
                        http_response_set_error(resp, "server replied HTTP %ld", resp->status);
                        return;
                }
                if (req->too_large) {
                        resp->err = FERRY_ETOOBIG;
                        http_response_set_error(resp, "response body larger than %zu bytes",
                                                req->engine->cfg.max_body);
                        return;
                }
                if (req->no_memory) {
                        resp->err = FERRY_ENOMEM;
                        http_response_set_error(resp, "out of memory");
                        return;
                }
                if (req->out_errno != 0) {
                        http_request_set_file_error(req);
                        return;
                }
                resp->err = FERRY_EFAILED;
                break;
        case CURLE_READ_ERROR:
        case CURLE_ABORTED_BY_CALLBACK:
                if (req->too_slow) {
                        /* Like curl's own low-speed cut: the transfer was slow, not unreachable. */
                        resp->err = FERRY_ETIMEDOUT;
                        http_response_set_error(
                            resp, "transfer slower than %ld bytes/s for %ld s: cut off",
                            req->engine->cfg.low_speed_limit, req->engine->cfg.low_speed_time_s);
                        return;
                }
                resp->err = FERRY_EFAILED; /* e.g. an upload file vanished */
                break;
        case CURLE_OUT_OF_MEMORY:
                resp->err = FERRY_ENOMEM;
                break;
        default:
                resp->err = FERRY_EBACKEND; /* TLS, redirects, malformed URL, ... */
                break;
        }
        if (req->sock_errno != 0)
                http_response_set_error(resp, "%s: %s", msg, strerror(req->sock_errno));
        else
                http_response_set_error(resp, "%s", msg);
}

/* Close the output file; an empty 2xx body still creates it. */
static void http_request_close_output(struct http_request *req, int success)
{
        if (req->out_path == NULL)
                return;
        if (req->out_fd < 0 && success) {
                req->out_fd = open(req->out_path,
                                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (req->out_fd < 0)
                        req->out_errno = errno;
        }
        if (req->out_fd >= 0 && close(req->out_fd) != 0 && req->out_errno == 0)
                req->out_errno = errno;
        req->out_fd = -1;
}

/* Whether a connection was made, and the response's content type. */
static void http_request_note_connection(struct http_request *req)
{
        curl_off_t connect_us = 0;
        long status = 0, request_size = 0;
        char *ctype = NULL;

        /* A reused connection has no connect time: the request's bytes sent tell it was used. */
        curl_easy_getinfo(req->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(req->easy, CURLINFO_REQUEST_SIZE, &request_size);
        req->resp.connected = connect_us > 0 || status > 0 || request_size > 0;
        if (curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype)
                snprintf(req->resp.content_type, sizeof(req->resp.content_type), "%s", ctype);
}

/* Move a finished or cancelled request to the done list; engine-side state only. */
static void http_request_retire(struct http_request *req)
{
        struct http_engine *engine = req->engine;

        req->state = HTTP_STATE_DONE;
        TAILQ_INSERT_TAIL(&engine->done, req, entry);
}

/* A running transfer ended with `result`: detach it and fill its response. */
static void http_request_complete(struct http_request *req, CURLcode result)
{
        struct http_engine *engine = req->engine;
        struct http_response *resp = &req->resp;
        curl_off_t ul = 0, dl = 0;
        long status = 0;
        int ok2xx;

        curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(req->easy, CURLINFO_SIZE_UPLOAD_T, &ul);
        curl_easy_getinfo(req->easy, CURLINFO_SIZE_DOWNLOAD_T, &dl);
        http_request_count_progress(req, dl, ul);
        http_request_note_connection(req);
        curl_multi_remove_handle(engine->multi, req->easy);
        TAILQ_REMOVE(&engine->running, req, entry);
        engine->n_running--;

        resp->status = status;
        ok2xx = status >= 200 && status < 300;
        http_request_close_output(req, result == CURLE_OK && ok2xx);
        if (result != CURLE_OK) {
                http_request_set_failure(req, result);
        } else if (req->out_errno != 0) {
                http_request_set_file_error(req);
        } else if (!ok2xx) {
                http_response_set_error(resp, "server replied HTTP %ld", status);
        }
        if (resp->err != 0)
                log_debug("http: %s %s failed: %s", req->method, req->url, resp->error);
        http_request_retire(req);
}

/* ---- engine -------------------------------------------------------------- */

/* Run the callbacks of finished requests, then free them. */
static void http_engine_deliver(struct http_engine *engine)
{
        struct http_request *req;

        if (engine->delivering)
                return; /* the outer call picks up what was added */
        engine->delivering = 1;
        for (;;) {
                req = TAILQ_FIRST(&engine->done);
                if (req == NULL)
                        break;
                TAILQ_REMOVE(&engine->done, req, entry);
                req->done(req, &req->resp, req->data);
                http_request_destroy(req);
        }
        engine->delivering = 0;
}

static void http_defer_cb(uv_timer_t *timer)
{
        struct http_engine *engine = timer->data;

        http_engine_deliver(engine);
        if (engine->closing && !uv_is_closing((uv_handle_t *)timer))
                uv_close((uv_handle_t *)timer, http_timer_close_cb);
}

/* Callbacks of requests finished outside the loop's callbacks run on the next turn. */
static void http_engine_defer(struct http_engine *engine)
{
        if (!uv_is_closing((uv_handle_t *)&engine->defer))
                uv_timer_start(&engine->defer, http_defer_cb, 0, 0);
}

/* Start queued requests while there is room. */
static void http_engine_start_queued(struct http_engine *engine)
{
        struct http_request *req;
        CURLMcode mrc;

        while (!engine->closing && engine->n_running < engine->cfg.max_transfers) {
                req = TAILQ_FIRST(&engine->queued);
                if (req == NULL)
                        break;
                TAILQ_REMOVE(&engine->queued, req, entry);
                engine->n_queued--;
                mrc = curl_multi_add_handle(engine->multi, req->easy);
                if (mrc != CURLM_OK) {
                        req->resp.err = mrc == CURLM_OUT_OF_MEMORY ? FERRY_ENOMEM : FERRY_EINTERNAL;
                        http_response_set_error(&req->resp, "cannot start: %s",
                                                curl_multi_strerror(mrc));
                        http_request_retire(req);
                        http_engine_defer(engine);
                        continue;
                }
                req->state = HTTP_STATE_RUNNING;
                TAILQ_INSERT_TAIL(&engine->running, req, entry);
                engine->n_running++;
        }
}

/* Detach a queued or running request and retire it as cancelled; its callback is deferred. */
static int http_request_cancel(struct http_request *req)
{
        struct http_engine *engine = req->engine;
        curl_off_t ul = 0, dl = 0;

        switch (req->state) {
        case HTTP_STATE_QUEUED:
                TAILQ_REMOVE(&engine->queued, req, entry);
                engine->n_queued--;
                break;
        case HTTP_STATE_RUNNING:
                curl_easy_getinfo(req->easy, CURLINFO_SIZE_UPLOAD_T, &ul);
                curl_easy_getinfo(req->easy, CURLINFO_SIZE_DOWNLOAD_T, &dl);
                http_request_count_progress(req, dl, ul);
                curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->resp.status);
                curl_multi_remove_handle(engine->multi, req->easy);
                TAILQ_REMOVE(&engine->running, req, entry);
                engine->n_running--;
                http_request_close_output(req, 0);
                break;
        default:
                return FERRY_ENOTFOUND;
        }
        req->resp.cancelled = 1;
        req->resp.err = FERRY_EFAILED;
        http_response_set_error(&req->resp, "cancelled");
        http_request_retire(req);
        http_engine_defer(engine);
        return 0;
}

/* Collect finished transfers, refill the running set, run callbacks. */
static void http_engine_check_done(struct http_engine *engine)
{
        struct http_request *req;
        CURLMsg *msg;
        CURLcode result;
        void *priv;
        int pending;

        for (;;) {
                msg = curl_multi_info_read(engine->multi, &pending);
                if (msg == NULL)
                        break;
                if (msg->msg != CURLMSG_DONE)
                        continue;
                result = msg->data.result; /* msg dies with curl_multi_remove_handle() */
                priv = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
                req = priv;
                http_request_complete(req, result);
        }
        http_engine_start_queued(engine);
        http_engine_deliver(engine);
}

int http_engine_new(struct http_engine **out, uv_loop_t *loop, const struct http_config *cfg)
{
        struct http_engine *engine;
        CURLMcode mrc = CURLM_OK;
        int rc = FERRY_ENOMEM;

        *out = NULL;
        if (cfg != NULL && (cfg->max_transfers < 1 || cfg->connect_timeout_s < 0 ||
                            cfg->low_speed_limit < 0 || cfg->low_speed_time_s < 0))
                return FERRY_EINVAL;
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return FERRY_EINTERNAL;
        engine = calloc(1, sizeof(*engine));
        if (engine == NULL)
                goto cleanup_global;
        if (cfg != NULL)
                engine->cfg = *cfg;
        else
                http_config_defaults(&engine->cfg);
        if (engine->cfg.ca_file != NULL) {
                engine->ca_file = strdup(engine->cfg.ca_file);
                if (engine->ca_file == NULL)
                        goto free_engine;
        }
        engine->cfg.ca_file = engine->ca_file;
        engine->loop = loop;
        TAILQ_INIT(&engine->queued);
        TAILQ_INIT(&engine->running);
        TAILQ_INIT(&engine->done);
        LIST_INIT(&engine->sockets);

        engine->multi = curl_multi_init();
        if (engine->multi == NULL)
                goto free_engine;
        mrc = curl_multi_setopt(engine->multi, CURLMOPT_SOCKETFUNCTION, http_curl_socket_cb);
        if (mrc == CURLM_OK)
                mrc = curl_multi_setopt(engine->multi, CURLMOPT_SOCKETDATA, engine);
        if (mrc == CURLM_OK)
                mrc = curl_multi_setopt(engine->multi, CURLMOPT_TIMERFUNCTION, http_curl_timer_cb);
        if (mrc == CURLM_OK)
                mrc = curl_multi_setopt(engine->multi, CURLMOPT_TIMERDATA, engine);
        /* Keep one idle connection per transfer slot for reuse. */
        if (mrc == CURLM_OK)
                mrc = curl_multi_setopt(engine->multi, CURLMOPT_MAXCONNECTS,
                                        (long)engine->cfg.max_transfers);
        if (mrc != CURLM_OK) {
                log_error("http: cannot set up the multi handle: %s", curl_multi_strerror(mrc));
                rc = FERRY_EINTERNAL;
                goto cleanup_multi;
        }

        /* uv_timer_init() cannot fail; after this point the engine only closes asynchronously. */
        uv_timer_init(loop, &engine->timer);
        engine->timer.data = engine;
        uv_timer_init(loop, &engine->defer);
        engine->defer.data = engine;
        engine->open_handles = 2;
        *out = engine;
        return 0;

cleanup_multi:
        curl_multi_cleanup(engine->multi);
free_engine:
        free(engine->ca_file);
        free(engine);
cleanup_global:
        curl_global_cleanup();
        return rc;
}

void http_engine_close(struct http_engine *engine, void (*closed_cb)(void *data), void *data)
{
        struct http_request *req;
        struct http_socket *sock;

        if (engine->closing)
                return;
        engine->closed_cb = closed_cb;
        engine->closed_data = data;
        /* Queued first, so that no cancel starts one of them; curl is still alive. */
        for (;;) {
                req = TAILQ_FIRST(&engine->queued);
                if (req == NULL)
                        req = TAILQ_FIRST(&engine->running);
                if (req == NULL)
                        break;
                http_request_cancel(req);
        }
        engine->closing = 1;
        /* curl first: closing its connections may still call http_curl_socket_cb. */
        curl_multi_cleanup(engine->multi);
        engine->multi = NULL;
        for (;;) {
                sock = LIST_FIRST(&engine->sockets);
                if (sock == NULL)
                        break;
                http_socket_close(sock);
        }
        uv_close((uv_handle_t *)&engine->timer, http_timer_close_cb);
        /* The defer timer runs the cancelled callbacks, then closes itself. */
        uv_timer_start(&engine->defer, http_defer_cb, 0, 0);
}

int http_engine_submit(struct http_engine *engine, struct http_request *req,
                       void (*done)(struct http_request *req, const struct http_response *resp,
                                    void *data),
                       void *data)
{
        int rc;

        if (engine->closing || req == NULL || req->state != HTTP_STATE_NEW || done == NULL)
                return FERRY_EINVAL;
        req->engine = engine; /* http_request_setup() needs it */
        rc = http_request_setup(engine, req);
        if (rc < 0) {
                req->engine = NULL;
                return rc;
        }
        req->done = done;
        req->data = data;
        req->state = HTTP_STATE_QUEUED;
        TAILQ_INSERT_TAIL(&engine->queued, req, entry);
        engine->n_queued++;
        /* Adding to the multi handle only arms curl's timer: no callback runs from here. */
        http_engine_start_queued(engine);
        return 0;
}

int http_engine_cancel(struct http_engine *engine, struct http_request *req)
{
        int rc;

        if (req == NULL || req->engine != engine)
                return FERRY_EINVAL;
        if (engine->closing)
                return FERRY_ENOTFOUND; /* close has cancelled everything already */
        rc = http_request_cancel(req);
        if (rc < 0)
                return rc;
        http_engine_start_queued(engine);
        return 0;
}

uint64_t http_engine_bytes_sent(const struct http_engine *engine)
{
        return engine->bytes_sent;
}

uint64_t http_engine_bytes_received(const struct http_engine *engine)
{
        return engine->bytes_received;
}

void http_engine_get_counts(const struct http_engine *engine, int *running, int *queued)
{
        if (running != NULL)
                *running = engine->n_running;
        if (queued != NULL)
                *queued = engine->n_queued;
}
