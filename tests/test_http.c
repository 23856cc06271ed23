/*
 * test_http.c — the HTTP engine against tests/http_test_server.py.
 *
 * One loop for every test; each wait is bounded by a watchdog timer, and the
 * loop must close with no handle left (uv_loop_close() == 0).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "check.h"
#include "ferry_base.h"
#include "log.h"

#define MIB (1024 * 1024)
#define UPLOAD_SIZE (64 * MIB)
#define DOWNLOAD_SIZE (32 * MIB)

extern char **environ;

static uv_loop_t loop;
static uv_timer_t watchdog;    /* fails a wait that takes too long */
static uv_timer_t pause_timer; /* run_for() */
static int watchdog_fired;
static int server_port;
static pid_t server_pid = -1;
static int server_stdin = -1;
static char tmpdir[] = "/tmp/ferry-test-http-XXXXXX";

/* What one request's callback saw; copied so it outlives the response. */
struct call {
        int done;
        long status;
        int err;
        int unreachable;
        int connected;
        int body_cut;
        char content_type[128];
        int cancelled;
        long retry_after;
        enum http_outcome outcome;
        char *body;
        size_t body_len;
        char error[256];
        cJSON *json;
        uint64_t t_done; /* uv_hrtime() in the callback */
        int running;     /* engine counts seen by the callback */
        int queued;
        struct http_engine *engine;
        int *counter; /* incremented by the callback if set */
};

/* ---- helpers -------------------------------------------------------------- */

static void call_reset(struct call *c)
{
        free(c->body);
        cJSON_Delete(c->json);
        memset(c, 0, sizeof(*c));
}

static void test_done_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct call *c = data;

        c->done++;
        c->status = resp->status;
        c->err = resp->err;
        c->unreachable = resp->unreachable;
        c->connected = resp->connected;
        c->body_cut = resp->body_cut;
        snprintf(c->content_type, sizeof(c->content_type), "%s", resp->content_type);
        c->cancelled = resp->cancelled;
        c->retry_after = resp->retry_after_s;
        c->outcome = http_classify(resp);
        CHECK(resp->body != NULL);
        if (resp->body != NULL) {
                CHECK(resp->body[resp->body_len] == '\0');
                free(c->body);
                c->body = malloc(resp->body_len + 1);
                memcpy(c->body, resp->body, resp->body_len + 1);
                c->body_len = resp->body_len;
                cJSON_Delete(c->json);
                c->json = cJSON_ParseWithLength(resp->body, resp->body_len);
        }
        snprintf(c->error, sizeof(c->error), "%s", resp->error);
        if (c->engine != NULL)
                http_engine_get_counts(c->engine, &c->running, &c->queued);
        c->t_done = uv_hrtime();
        if (c->counter != NULL)
                (*c->counter)++;
}

static void watchdog_cb(uv_timer_t *timer)
{
        watchdog_fired = 1;
}

/* Run the loop until *counter >= target; fail after `seconds`. Return 0 or -1. */
static int run_until_line(const int *counter, int target, int seconds, int line)
{
        watchdog_fired = 0;
        uv_timer_start(&watchdog, watchdog_cb, (uint64_t)seconds * 1000, 0);
        while (*counter < target && !watchdog_fired)
                uv_run(&loop, UV_RUN_ONCE);
        uv_timer_stop(&watchdog);
        if (*counter < target) {
                fprintf(stderr, "%s:%d: timed out after %d s (%d of %d done)\n", __FILE__, line,
                        seconds, *counter, target);
                check_failures++;
                return -1;
        }
        return 0;
}
#define run_until(counter, target, seconds) run_until_line(counter, target, seconds, __LINE__)

static void pause_cb(uv_timer_t *timer)
{
        *(int *)timer->data = 1;
}

static void run_for(int ms)
{
        int fired = 0;

        pause_timer.data = &fired;
        uv_timer_start(&pause_timer, pause_cb, (uint64_t)ms, 0);
        run_until(&fired, 1, ms / 1000 + 5);
}

static double ms_since(uint64_t t0)
{
        return (double)(uv_hrtime() - t0) / 1e6;
}

static const char *url(const char *path)
{
        static char buf[1024];

        snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", server_port, path);
        return buf;
}

static struct http_request *new_req(const char *method, const char *path)
{
        struct http_request *req = http_request_new(method, url(path));

        CHECK(req != NULL);
        if (req == NULL)
                exit(1);
        return req;
}

static int submit(struct http_engine *engine, struct http_request *req, struct call *c)
{
        int rc;

        c->engine = engine;
        rc = http_engine_submit(engine, req, test_done_cb, c);
        CHECK_INT(rc, 0);
        if (rc < 0)
                http_request_free(req);
        return rc;
}

/* Submit req and wait for its callback. */
static void fetch(struct http_engine *engine, struct http_request *req, struct call *c, int seconds)
{
        call_reset(c);
        if (submit(engine, req, c) == 0)
                run_until(&c->done, 1, seconds);
}

static void get(struct http_engine *engine, const char *path, struct call *c)
{
        fetch(engine, new_req("GET", path), c, 30);
}

static const cJSON *jget(const cJSON *obj, const char *key)
{
        return obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static const char *jstr(const cJSON *obj, const char *key)
{
        const cJSON *item = jget(obj, key);

        return cJSON_IsString(item) ? item->valuestring : NULL;
}

static long jnum(const cJSON *obj, const char *key)
{
        const cJSON *item = jget(obj, key);

        return cJSON_IsNumber(item) ? (long)item->valuedouble : -1;
}

static void hex(const unsigned char *md, unsigned int len, char *out)
{
        for (unsigned int i = 0; i < len; i++)
                sprintf(out + 2 * i, "%02x", md[i]);
        out[2 * len] = '\0';
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;

        EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL);
        hex(md, md_len, out);
}

static void closed_cb(void *data)
{
        (*(int *)data)++;
}

static void engine_close(struct http_engine *engine)
{
        int closed = 0;

        http_engine_close(engine, closed_cb, &closed);
        run_until(&closed, 1, 10);
}

static struct http_engine *engine_new(const struct http_config *cfg)
{
        struct http_engine *engine = NULL;

        CHECK_INT(http_engine_new(&engine, &loop, cfg), 0);
        if (engine == NULL)
                exit(1);
        return engine;
}

static long proc_status_kb(const char *key)
{
        size_t n = strlen(key);
        char line[256];
        long kb = -1;
        FILE *f = fopen("/proc/self/status", "r");

        if (f == NULL)
                return -1;
        while (fgets(line, sizeof(line), f) != NULL) {
                if (strncmp(line, key, n) == 0 && line[n] == ':') {
                        kb = strtol(line + n + 1, NULL, 10);
                        break;
                }
        }
        fclose(f);
        return kb;
}

/* Reset VmHWM to the current RSS; 0 on success (Linux >= 4.0). */
static int reset_peak_rss(void)
{
        int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
        int rc;

        if (fd < 0)
                return -1;
        rc = write(fd, "5", 1) == 1 ? 0 : -1;
        close(fd);
        return rc;
}

static const char *tmp_path(const char *name)
{
        static char buf[512];

        snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
        return buf;
}

static unsigned char download_byte(uint64_t i)
{
        return (unsigned char)((i % 251) ^ ((i >> 16) & 0xff));
}

/* ---- the test server ---------------------------------------------------- */

static int server_start(void)
{
        const char *src = getenv("FERRY_SOURCE_DIR");
        char script[1024], buf[128];
        char *argv[3];
        posix_spawn_file_actions_t fa;
        int in[2], out[2];
        size_t len = 0;
        int rc;

        if (src == NULL)
                src = FERRY_TEST_SOURCE_DIR;
        snprintf(script, sizeof(script), "%s/tests/http_test_server.py", src);
        if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
                return -1;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        argv[0] = "/usr/bin/python3";
        argv[1] = script;
        argv[2] = NULL;
        rc = posix_spawn(&server_pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(in[0]);
        close(out[1]);
        if (rc != 0) {
                fprintf(stderr, "cannot start %s: %s\n", script, strerror(rc));
                close(in[1]);
                close(out[0]);
                return -1;
        }
        server_stdin = in[1];
        /* Read "PORT n\n", for at most 10 s. */
        while (len < sizeof(buf) - 1 && memchr(buf, '\n', len) == NULL) {
                struct pollfd pfd = {.fd = out[0], .events = POLLIN};
                ssize_t r;

                if (poll(&pfd, 1, 10000) <= 0)
                        break;
                r = read(out[0], buf + len, sizeof(buf) - 1 - len);
                if (r <= 0)
                        break;
                len += (size_t)r;
        }
        buf[len] = '\0';
        close(out[0]);
        if (sscanf(buf, "PORT %d", &server_port) != 1) {
                fprintf(stderr, "test server did not report its port: \"%s\"\n", buf);
                return -1;
        }
        return 0;
}

static void server_stop(void)
{
        int status;

        if (server_stdin >= 0)
                close(server_stdin); /* the server exits at EOF */
        if (server_pid > 0) {
                kill(server_pid, SIGTERM);
                waitpid(server_pid, &status, 0);
        }
}

/* A TCP port on 127.0.0.1 with nobody listening. */
static int closed_port(void)
{
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t sl = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int port = 1;

        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
                port = ntohs(sa.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_classify(void)
{
        struct http_response r;

        memset(&r, 0, sizeof(r));
        r.status = 204;
        CHECK_INT(http_classify(&r), HTTP_OK);
        r.status = 429;
        CHECK_INT(http_classify(&r), HTTP_TRANSIENT);
        r.status = 408;
        CHECK_INT(http_classify(&r), HTTP_TRANSIENT);
        r.status = 599;
        CHECK_INT(http_classify(&r), HTTP_TRANSIENT);
        r.status = 404;
        CHECK_INT(http_classify(&r), HTTP_PERMANENT);
        r.status = 302;
        CHECK_INT(http_classify(&r), HTTP_PERMANENT);
        r.status = 200;
        r.err = FERRY_ETOOBIG;
        CHECK_INT(http_classify(&r), HTTP_PERMANENT);
        r.status = 0;
        r.err = FERRY_ECONNECT;
        CHECK_INT(http_classify(&r), HTTP_TRANSIENT);
        r.err = FERRY_EBACKEND;
        CHECK_INT(http_classify(&r), HTTP_PERMANENT);
        r.err = FERRY_EFAILED;
        r.cancelled = 1;
        CHECK_INT(http_classify(&r), HTTP_TRANSIENT);
}

static void test_request_api(void)
{
        struct http_request *req;

        CHECK(http_request_new("GET", "") == NULL);
        CHECK(http_request_new("", "http://x/") == NULL);
        CHECK(http_request_new("GE T", "http://x/") == NULL);
        CHECK(http_request_new("GET", "http://x/\r\nHost: y") == NULL);
        req = new_req("POST", "/echo");
        CHECK_INT(http_request_add_header(req, "X-Ok", "v"), 0);
        CHECK_INT(http_request_add_header(req, "X-Bad", "a\r\nInjected: 1"), FERRY_EINVAL);
        CHECK_INT(http_request_add_header(req, "Bad Name", "v"), FERRY_EINVAL);
        CHECK_INT(http_request_add_header(req, "Bad:Name", "v"), FERRY_EINVAL);
        CHECK_INT(http_request_add_part_string(req, "metadata", "{}"), 0);
        CHECK_INT(http_request_set_body(req, "application/json", "{}", 2), FERRY_EINVAL);
        CHECK_INT(http_request_add_part_file(req, "file", tmp_path("missing"), NULL),
                  FERRY_ENOTFOUND);
        http_request_free(req);
        req = new_req("POST", "/echo");
        CHECK_INT(http_request_set_body(req, "application/json", "{}", 2), 0);
        CHECK_INT(http_request_add_part_string(req, "metadata", "{}"), FERRY_EINVAL);
        http_request_free(req);
        http_request_free(NULL);
}

static void test_get_and_post(struct http_engine *engine)
{
        static const char json[] = "{\"name\": \"model\", \"version\": \"1.0.0\"}";
        const cJSON *headers;
        struct http_request *req;
        struct call c = {0};
        char sha[65];

        get(engine, "/json", &c);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.err, 0);
        CHECK_INT(c.outcome, HTTP_OK);
        CHECK_INT(c.retry_after, -1);
        CHECK_INT(c.unreachable, 0);
        CHECK_STR(c.error, "");
        CHECK(cJSON_IsTrue(jget(c.json, "ok")));

        get(engine, "/echo", &c);
        headers = jget(c.json, "headers");
        CHECK_STR(jstr(c.json, "method"), "GET");
        CHECK_STR(jstr(headers, "user-agent"), "ferry/0.1.0");
        CHECK_INT(jnum(c.json, "body_size"), 0);

        req = new_req("POST", "/echo?x=1");
        CHECK_INT(http_request_add_header(req, "Authorization", "secret-key"), 0);
        CHECK_INT(http_request_add_header(req, "X-Empty", ""), 0);
        CHECK_INT(http_request_set_body(req, "application/json", json, strlen(json)), 0);
        fetch(engine, req, &c, 30);
        headers = jget(c.json, "headers");
        sha256_hex(json, strlen(json), sha);
        CHECK_INT(c.status, 200);
        CHECK_STR(jstr(c.json, "method"), "POST");
        CHECK_STR(jstr(headers, "content-type"), "application/json");
        CHECK_STR(jstr(headers, "authorization"), "secret-key");
        CHECK_STR(jstr(headers, "x-empty"), "");
        CHECK_INT(jnum(c.json, "body_size"), strlen(json));
        CHECK_STR(jstr(c.json, "body"), json);
        CHECK_STR(jstr(c.json, "body_sha256"), sha);

        req = new_req("PUT", "/echo");
        CHECK_INT(http_request_set_body(req, "application/json", json, strlen(json)), 0);
        fetch(engine, req, &c, 30);
        CHECK_STR(jstr(c.json, "method"), "PUT");
        CHECK_STR(jstr(c.json, "body"), json);

        fetch(engine, new_req("DELETE", "/echo"), &c, 30);
        CHECK_STR(jstr(c.json, "method"), "DELETE");
        CHECK_INT(jnum(c.json, "body_size"), 0);

        fetch(engine, new_req("POST", "/echo"), &c, 30);
        CHECK_STR(jstr(c.json, "method"), "POST");
        CHECK_INT(jnum(c.json, "body_size"), 0);

        fetch(engine, new_req("HEAD", "/json"), &c, 30);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.body_len, 0);

        /* GET follows redirects; POST gets the 3xx itself. */
        get(engine, "/redirect?to=/json", &c);
        CHECK_INT(c.status, 200);
        CHECK(cJSON_IsTrue(jget(c.json, "ok")));
        fetch(engine, new_req("POST", "/redirect?to=/json"), &c, 30);
        CHECK_INT(c.status, 302);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        call_reset(&c);
}

/* Write a file of `size` pseudo-random bytes; put its sha256 in sha. */
static int make_file(const char *path, size_t size, char sha[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        uint64_t x = 0x9e3779b97f4a7c15ull;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t block = MIB, done = 0;
        unsigned char *buf = malloc(block);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int rc = 0;

        if (ctx == NULL || buf == NULL || fd < 0) {
                rc = -1;
                goto out;
        }
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        while (done < size) {
                for (size_t i = 0; i < block; i += 8) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        memcpy(buf + i, &x, 8);
                }
                if (write(fd, buf, block) != (ssize_t)block) {
                        rc = -1;
                        goto out;
                }
                EVP_DigestUpdate(ctx, buf, block);
                done += block;
        }
        EVP_DigestFinal_ex(ctx, md, &md_len);
        hex(md, md_len, sha);
out:
        if (fd >= 0)
                close(fd);
        free(buf);
        EVP_MD_CTX_free(ctx);
        return rc;
}

static void test_upload(struct http_engine *engine)
{
        static const char metadata[] = "{\"epoch\": 3, \"loss\": 0.25}";
        const char *path = tmp_path("upload.bin");
        const cJSON *parts, *part;
        struct http_request *req;
        struct call c = {0};
        long rss_before, rss_after, peak_after, growth_kb;
        uint64_t sent_before;
        int peak_reset;
        char sha[65];

        CHECK_INT(make_file(path, UPLOAD_SIZE, sha), 0);
        /* Measure from before the request is built to after its callback. */
        sent_before = http_engine_bytes_sent(engine);
        peak_reset = reset_peak_rss();
        rss_before = proc_status_kb("VmRSS");
        req = new_req("POST", "/echo");
        CHECK_INT(http_request_add_part_string(req, "metadata", metadata), 0);
        CHECK_INT(http_request_add_part_string(req, "link", "s3://bucket/key"), 0);
        CHECK_INT(http_request_add_part_file(req, "file", path, "weights.bin"), 0);
        fetch(engine, req, &c, 120);
        rss_after = proc_status_kb("VmRSS");
        peak_after = proc_status_kb("VmHWM");

        CHECK_INT(c.status, 200);
        CHECK_INT(c.outcome, HTTP_OK);
        /* curl's default for big bodies; the server answered 100 Continue. */
        CHECK_STR(jstr(jget(c.json, "headers"), "expect"), "100-continue");
        CHECK(jstr(jget(c.json, "headers"), "content-type") != NULL &&
              strncmp(jstr(jget(c.json, "headers"), "content-type"), "multipart/form-data", 19) ==
                  0);
        parts = jget(c.json, "parts");
        CHECK_INT(cJSON_GetArraySize(parts), 3);
        part = cJSON_GetArrayItem(parts, 0);
        CHECK_STR(jstr(part, "name"), "metadata");
        CHECK_STR(jstr(part, "value"), metadata);
        part = cJSON_GetArrayItem(parts, 1);
        CHECK_STR(jstr(part, "name"), "link");
        CHECK_STR(jstr(part, "value"), "s3://bucket/key");
        part = cJSON_GetArrayItem(parts, 2);
        CHECK_STR(jstr(part, "name"), "file");
        CHECK_STR(jstr(part, "filename"), "weights.bin");
        CHECK_STR(jstr(part, "content_type"), "application/octet-stream");
        CHECK_INT(jnum(part, "size"), UPLOAD_SIZE);
        CHECK_STR(jstr(part, "sha256"), sha);
        CHECK(http_engine_bytes_sent(engine) - sent_before >= UPLOAD_SIZE);

        /* Streamed from disk: memory must not grow with the file (64 MiB). */
        growth_kb = rss_after - rss_before;
        if (peak_reset == 0 && peak_after - rss_before > growth_kb)
                growth_kb = peak_after - rss_before;
        fprintf(stderr, "upload: %d MiB file, RSS %ld -> %ld kB, peak %ld kB (%s), growth %ld kB\n",
                UPLOAD_SIZE / MIB, rss_before, rss_after, peak_after,
                peak_reset == 0 ? "reset before" : "not resettable", growth_kb);
        CHECK(rss_before > 0);
        CHECK(growth_kb < 8 * 1024);
        unlink(path);
        call_reset(&c);
}

static void test_download(struct http_engine *engine)
{
        const char *path = tmp_path("download.bin");
        unsigned char *buf = malloc(MIB);
        struct http_request *req;
        struct call c = {0};
        struct stat st;
        uint64_t received_before = http_engine_bytes_received(engine);
        uint64_t off = 0, bad = 0;
        char query[64];
        ssize_t n;
        int fd;

        snprintf(query, sizeof(query), "/download?size=%d", DOWNLOAD_SIZE);
        req = new_req("GET", query);
        CHECK_INT(http_request_set_output_file(req, path), 0);
        fetch(engine, req, &c, 120);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.outcome, HTTP_OK);
        CHECK_INT(c.body_len, 0);
        CHECK(http_engine_bytes_received(engine) - received_before >= DOWNLOAD_SIZE);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        while (fd >= 0 && buf != NULL) {
                n = read(fd, buf, MIB);
                if (n <= 0)
                        break;
                for (ssize_t i = 0; i < n; i++)
                        bad += buf[i] != download_byte(off + (uint64_t)i);
                off += (uint64_t)n;
        }
        if (fd >= 0)
                close(fd);
        CHECK_INT(off, DOWNLOAD_SIZE);
        CHECK_INT(bad, 0);
        unlink(path);

        /* A non-2xx reply keeps its body in memory and leaves the file alone. */
        path = tmp_path("notfound.bin");
        req = new_req("GET", "/status/404");
        CHECK_INT(http_request_set_output_file(req, path), 0);
        fetch(engine, req, &c, 30);
        CHECK_INT(c.status, 404);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        CHECK_INT(jnum(c.json, "code"), 404);
        CHECK(stat(path, &st) != 0 && errno == ENOENT);

        /* An output file that cannot be created fails the request, permanently. */
        req = new_req("GET", "/download?size=1000");
        CHECK_INT(http_request_set_output_file(req, tmp_path("no/such/dir")), 0);
        fetch(engine, req, &c, 30);
        CHECK_INT(c.err, FERRY_EFAILED);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        CHECK(strstr(c.error, "cannot write") != NULL);

        /* An empty 2xx body still creates the file. */
        path = tmp_path("empty.bin");
        req = new_req("GET", "/download?size=0");
        CHECK_INT(http_request_set_output_file(req, path), 0);
        fetch(engine, req, &c, 30);
        CHECK_INT(c.status, 200);
        CHECK(stat(path, &st) == 0 && st.st_size == 0);
        unlink(path);
        free(buf);
        call_reset(&c);
}

static void test_statuses(struct http_engine *engine)
{
        struct call c = {0};
        char path[256], date[64];
        time_t when = time(NULL) + 5;
        struct tm tm;

        get(engine, "/status/429?retry_after=3", &c);
        CHECK_INT(c.status, 429);
        CHECK_INT(c.retry_after, 3);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        CHECK_INT(c.unreachable, 0);
        CHECK_INT(c.err, 0);
        CHECK_STR(c.error, "server replied HTTP 429");
        CHECK_INT(jnum(c.json, "code"), 429);

        /* HTTP-date form, URL-encoded: "Thu,%2001%20Jan%20..." */
        gmtime_r(&when, &tm);
        strftime(date, sizeof(date), "%a,%%20%d%%20%b%%20%Y%%20%H:%M:%S%%20GMT", &tm);
        snprintf(path, sizeof(path), "/status/503?retry_after=%s", date);
        get(engine, path, &c);
        CHECK_INT(c.status, 503);
        CHECK(c.retry_after >= 3 && c.retry_after <= 6);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);

        get(engine, "/status/503?retry_after=soon", &c);
        CHECK_INT(c.retry_after, -1);
        get(engine, "/status/503", &c);
        CHECK_INT(c.status, 503);
        CHECK_INT(c.retry_after, -1);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        get(engine, "/status/408", &c);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        get(engine, "/status/400", &c);
        CHECK_INT(c.status, 400);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        CHECK_INT(c.unreachable, 0);
        get(engine, "/status/404", &c);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        get(engine, "/status/201", &c);
        CHECK_INT(c.outcome, HTTP_OK);
        call_reset(&c);
}

static void test_unreachable(struct http_engine *engine)
{
        struct http_request *req;
        struct call c = {0};
        char buf[128];

        snprintf(buf, sizeof(buf), "http://127.0.0.1:%d/json", closed_port());
        req = http_request_new("GET", buf);
        fetch(engine, req, &c, 30);
        fprintf(stderr, "refused: %s\n", c.error);
        CHECK_INT(c.status, 0);
        CHECK_INT(c.err, FERRY_ECONNECT);
        CHECK_INT(c.unreachable, 1);
        CHECK_INT(c.connected, 0);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        CHECK(strlen(c.error) > 0);

        /* A server that took the connection and reset it was reachable: a failure of this
         * request, not "offline". */
        get(engine, "/reset", &c);
        fprintf(stderr, "reset: %s\n", c.error);
        CHECK_INT(c.status, 0);
        CHECK_INT(c.err, FERRY_EIO);
        CHECK_INT(c.unreachable, 0);
        CHECK_INT(c.connected, 1);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        CHECK(strstr(c.error, "reset") != NULL);

        /* The engine is fine afterwards. */
        get(engine, "/json", &c);
        CHECK_INT(c.status, 200);
        call_reset(&c);
}

static void test_body_limit(void)
{
        struct http_config cfg;
        struct http_engine *engine;
        struct call c = {0};

        http_config_defaults(&cfg);
        cfg.max_body = 1024;
        engine = engine_new(&cfg);
        get(engine, "/download?size=100000", &c);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.err, FERRY_ETOOBIG);
        CHECK_INT(c.outcome, HTTP_PERMANENT);
        CHECK(c.body_len <= 1024);
        CHECK(strstr(c.error, "1024") != NULL);
        /* An error body is truncated, not an error. */
        get(engine, "/status/500?size=5000", &c);
        CHECK_INT(c.status, 500);
        CHECK_INT(c.err, 0);
        CHECK_INT(c.body_len, 1024);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        /* An error body that never ends is cut at the cap and the transfer ended. */
        get(engine, "/endless?status=503", &c);
        CHECK_INT(c.status, 503);
        CHECK_INT(c.err, 0);
        CHECK_INT(c.body_cut, 1);
        CHECK_INT(c.body_len, 1024);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        get(engine, "/json", &c);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.outcome, HTTP_OK);
        CHECK_STR(c.content_type, "application/json");
        CHECK_INT(c.connected, 1);
        get(engine, "/html", &c);
        CHECK_INT(c.outcome, HTTP_OK);
        CHECK_STR(c.content_type, "text/html; charset=utf-8");
        engine_close(engine);
        call_reset(&c);
}

/* Every transfer ends: the deadline grows with the size, and a connected slow one times out. */
static void test_deadline(void)
{
        struct http_config cfg;
        struct http_engine *engine;
        struct http_request *req;
        struct call c = {0};

        http_config_defaults(&cfg);
        cfg.deadline_base_s = 1;
        cfg.min_rate_bps = 1 << 20;
        engine = engine_new(&cfg);
        get(engine, "/slow?ms=3000", &c);
        fprintf(stderr, "deadline: %s\n", c.error);
        CHECK_INT(c.err, FERRY_ETIMEDOUT);
        CHECK_INT(c.unreachable, 0);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        /* 4 MiB expected at 1 MiB/s: a 3 s answer fits in 1 + 4 s. */
        req = new_req("GET", "/slow?ms=3000");
        http_request_set_expected_size(req, 4 << 20);
        fetch(engine, req, &c, 30);
        CHECK_INT(c.status, 200);
        CHECK_INT(c.err, 0);
        engine_close(engine);
        call_reset(&c);
}

/* A file part read from a descriptor (the spool's O_NOFOLLOW opens). */
static void test_upload_fd(struct http_engine *engine)
{
        const char *path = tmp_path("fd.bin");
        const cJSON *part;
        struct http_request *req;
        struct call c = {0};
        char sha[65];
        int fd;

        CHECK_INT(make_file(path, 3 * MIB, sha), 0);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        req = new_req("POST", "/echo");
        CHECK_INT(http_request_add_part_fd(req, "file", fd, 3 * MIB, "fd.bin"), 0);
        fetch(engine, req, &c, 60);
        CHECK_INT(c.status, 200);
        part = cJSON_GetArrayItem(jget(c.json, "parts"), 0);
        CHECK_STR(jstr(part, "filename"), "fd.bin");
        CHECK_INT(jnum(part, "size"), 3 * MIB);
        CHECK_STR(jstr(part, "sha256"), sha);
        /* A bad descriptor is refused (and nothing leaks). */
        req = new_req("POST", "/echo");
        CHECK_INT(http_request_add_part_fd(req, "file", -1, 10, "x"), FERRY_EINVAL);
        http_request_free(req);
        unlink(path);
        call_reset(&c);
}

static void test_concurrency(void)
{
        enum { N = 10 };
        struct http_config cfg;
        struct http_engine *engine;
        struct call calls[N];
        long max_active = 0;
        int finished = 0, running = -1, queued = -1;
        uint64_t t0;
        double elapsed;

        memset(calls, 0, sizeof(calls));
        http_config_defaults(&cfg);
        cfg.max_transfers = 2;
        engine = engine_new(&cfg);
        t0 = uv_hrtime();
        for (int i = 0; i < N; i++) {
                calls[i].counter = &finished;
                submit(engine, new_req("GET", "/slow?ms=300&group=conc"), &calls[i]);
        }
        http_engine_get_counts(engine, &running, &queued);
        CHECK_INT(running, 2);
        CHECK_INT(queued, N - 2);
        run_until(&finished, N, 30);
        elapsed = ms_since(t0);
        fprintf(stderr, "concurrency: %d x 300 ms with 2 slots took %.0f ms\n", N, elapsed);
        CHECK(elapsed >= 1400); /* 5 rounds of 300 ms */
        for (int i = 0; i < N; i++) {
                long seq = jnum(calls[i].json, "seq");

                CHECK_INT(calls[i].status, 200);
                CHECK(calls[i].running <= 2);
                if (jnum(calls[i].json, "active") > max_active)
                        max_active = jnum(calls[i].json, "active");
                CHECK(jnum(calls[i].json, "max_active") <= 2);
                /* FIFO: request i is the (i+1)th to start, give or take its slot mate. */
                CHECK(seq >= i && seq <= i + 2);
                call_reset(&calls[i]);
        }
        CHECK_INT(max_active, 2);
        engine_close(engine);
}

static void test_reuse(struct http_engine *engine)
{
        enum { N = 20 };
        struct http_engine *other;
        struct call c = {0};
        long ids[N], conns_before, distinct = 0;

        get(engine, "/stats", &c);
        conns_before = jnum(c.json, "connections");
        for (int i = 0; i < N; i++) {
                get(engine, "/echo", &c);
                CHECK_INT(c.status, 200);
                ids[i] = jnum(c.json, "conn_id");
                CHECK(ids[i] > 0);
        }
        for (int i = 0; i < N; i++) {
                int seen = 0;

                for (int j = 0; j < i; j++)
                        seen |= ids[j] == ids[i];
                distinct += !seen;
        }
        get(engine, "/stats", &c);
        fprintf(stderr, "reuse: %d sequential requests used %ld connection(s), %ld new\n", N,
                distinct, jnum(c.json, "connections") - conns_before);
        CHECK(distinct >= 1 && distinct <= 2);
        CHECK(jnum(c.json, "connections") - conns_before <= 2);

        /* The counter does tell connections apart: another engine has its own pool. */
        other = engine_new(NULL);
        get(other, "/echo", &c);
        for (int i = 0; i < N; i++)
                CHECK(jnum(c.json, "conn_id") != ids[i]);
        engine_close(other);
        call_reset(&c);
}

static void test_cancel(struct http_engine *engine)
{
        struct http_config cfg;
        struct http_engine *one;
        struct http_request *req, *queued_req;
        struct call a = {0}, b = {0}, c = {0};
        int running = -1, queued = -1;
        uint64_t t0;

        /* A running transfer. */
        req = new_req("GET", "/slow?ms=5000&group=cancel");
        submit(engine, req, &a);
        run_for(300);
        CHECK_INT(a.done, 0);
        t0 = uv_hrtime();
        CHECK_INT(http_engine_cancel(engine, req), 0);
        CHECK_INT(a.done, 0); /* never from inside an http_* call */
        run_until(&a.done, 1, 5);
        CHECK_INT(a.done, 1);
        CHECK_INT(a.cancelled, 1);
        CHECK_INT(a.outcome, HTTP_TRANSIENT);
        CHECK(ms_since(t0) < 1000);
        get(engine, "/json", &c);
        CHECK_INT(c.status, 200);

        /* A queued one, behind a running one. */
        http_config_defaults(&cfg);
        cfg.max_transfers = 1;
        one = engine_new(&cfg);
        call_reset(&a);
        submit(one, new_req("GET", "/slow?ms=1000&group=cancel2"), &a);
        queued_req = new_req("GET", "/json");
        submit(one, queued_req, &b);
        http_engine_get_counts(one, &running, &queued);
        CHECK_INT(running, 1);
        CHECK_INT(queued, 1);
        CHECK_INT(http_engine_cancel(one, queued_req), 0);
        http_engine_get_counts(one, &running, &queued);
        CHECK_INT(queued, 0);
        run_until(&b.done, 1, 5);
        CHECK_INT(b.cancelled, 1);
        CHECK_INT(b.status, 0);
        CHECK_INT(a.done, 0);
        run_until(&a.done, 1, 10);
        CHECK_INT(a.status, 200);
        CHECK_INT(a.cancelled, 0);
        CHECK_INT(b.done, 1);
        engine_close(one);
        call_reset(&a);
        call_reset(&b);
        call_reset(&c);
}

static void test_low_speed(void)
{
        struct http_config cfg;
        struct http_engine *engine;
        struct call c = {0};
        uint64_t t0;

        http_config_defaults(&cfg);
        cfg.low_speed_time_s = 1;
        engine = engine_new(&cfg);
        t0 = uv_hrtime();
        get(engine, "/slow?ms=6000&group=lowspeed", &c);
        fprintf(stderr, "low speed: %s after %.0f ms\n", c.error, ms_since(t0));
        CHECK_INT(c.err, FERRY_ETIMEDOUT);
        CHECK_INT(c.unreachable, 0);
        CHECK_INT(c.outcome, HTTP_TRANSIENT);
        CHECK(ms_since(t0) < 4500);
        engine_close(engine);
        call_reset(&c);
}

struct close_watch {
        int closed;
        int calls_before_close;
        struct call *a;
        struct call *b;
};

static void close_watch_cb(void *data)
{
        struct close_watch *w = data;

        w->closed++;
        w->calls_before_close = w->a->done + w->b->done;
}

static void test_close_in_flight(void)
{
        struct http_config cfg;
        struct http_engine *engine;
        struct http_request *late;
        struct call a = {0}, b = {0};
        struct close_watch w = {.a = &a, .b = &b};

        http_config_defaults(&cfg);
        cfg.max_transfers = 1;
        engine = engine_new(&cfg);
        submit(engine, new_req("GET", "/slow?ms=3000&group=close"), &a);
        submit(engine, new_req("GET", "/json"), &b);
        run_for(200);
        http_engine_close(engine, close_watch_cb, &w);
        CHECK_INT(a.done + b.done, 0);
        late = new_req("GET", "/json");
        CHECK_INT(http_engine_submit(engine, late, test_done_cb, &a), FERRY_EINVAL);
        http_request_free(late);
        run_until(&w.closed, 1, 5);
        CHECK_INT(w.closed, 1);
        CHECK_INT(w.calls_before_close, 2);
        CHECK_INT(a.cancelled, 1);
        CHECK_INT(b.cancelled, 1);
        call_reset(&a);
        call_reset(&b);
}

/* Callbacks that submit and close from inside a callback. */
struct chain {
        struct http_engine *engine;
        struct call first;
        struct call second;
        struct call slow;
        int closed;
        int submit_rc;
};

static void chain_second_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct chain *ch = data;

        test_done_cb(req, resp, &ch->second);
        CHECK_INT(ch->slow.done, 0);
        http_engine_close(ch->engine, closed_cb, &ch->closed);
        CHECK_INT(ch->slow.done, 0); /* cancelled, but its callback comes later */
        CHECK_INT(ch->closed, 0);
}

static void chain_first_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct chain *ch = data;

        test_done_cb(req, resp, &ch->first);
        ch->submit_rc =
            http_engine_submit(ch->engine, new_req("GET", "/json"), chain_second_cb, ch);
}

static void test_reentrant_callbacks(void)
{
        struct chain ch;

        memset(&ch, 0, sizeof(ch));
        ch.engine = engine_new(NULL);
        submit(ch.engine, new_req("GET", "/slow?ms=3000&group=chain"), &ch.slow);
        CHECK_INT(http_engine_submit(ch.engine, new_req("GET", "/echo"), chain_first_cb, &ch), 0);
        run_until(&ch.closed, 1, 10);
        CHECK_INT(ch.submit_rc, 0);
        CHECK_INT(ch.first.status, 200);
        CHECK_INT(ch.second.status, 200);
        CHECK_INT(ch.slow.done, 1);
        CHECK_INT(ch.slow.cancelled, 1);
        CHECK_INT(ch.closed, 1);
        call_reset(&ch.first);
        call_reset(&ch.second);
        call_reset(&ch.slow);
}

static void walk_cb(uv_handle_t *handle, void *arg)
{
        fprintf(stderr, "leaked uv handle: %s%s\n", uv_handle_type_name(handle->type),
                uv_is_closing(handle) ? " (closing)" : "");
}

int main(void)
{
        static const char *const proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                              "all_proxy", "ALL_PROXY"};
        struct http_engine *engine;
        int rc;

        signal(SIGPIPE, SIG_IGN);
        for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
                unsetenv(proxies[i]);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL || server_start() != 0) {
                fprintf(stderr, "test_http: cannot set up: %s\n", strerror(errno));
                server_stop();
                return 1;
        }
        uv_loop_init(&loop);
        uv_timer_init(&loop, &watchdog);
        uv_timer_init(&loop, &pause_timer);

        test_classify();
        test_request_api();
        engine = engine_new(NULL);
        test_upload(engine); /* first, so that nothing else has raised the peak RSS */
        test_get_and_post(engine);
        test_download(engine);
        test_statuses(engine);
        test_unreachable(engine);
        test_upload_fd(engine);
        test_reuse(engine);
        test_cancel(engine);
        engine_close(engine);
        test_body_limit();
        test_deadline();
        test_concurrency();
        test_low_speed();
        test_close_in_flight();
        test_reentrant_callbacks();

        uv_close((uv_handle_t *)&watchdog, NULL);
        uv_close((uv_handle_t *)&pause_timer, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = uv_loop_close(&loop);
        if (rc != 0)
                uv_walk(&loop, walk_cb, NULL);
        CHECK_INT(rc, 0);
        server_stop();
        rmdir(tmpdir);
        return CHECK_DONE("test_http");
}
