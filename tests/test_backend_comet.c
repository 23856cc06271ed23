/*
 * test_backend_comet.c — the Comet backend (daemon/backend_comet.c over
 * http.c) against the Comet stand-in (tests/comet_standin.py, started per
 * test on 127.0.0.1 with a free port) and a fake sink that confirms each
 * step a moment later, as the queue does once the step is committed.
 *
 * Covered: a delivery registers the experiment key once, upserts the
 * version, uploads every asset once, and closes it, reported through the
 * sink in that order (registered, created, asset_done per asset, finished
 * OK with the assigned version), and the server saw the requests in that
 * order; an HTML page answering 200 is a permanent failure naming
 * COMET_URL_OVERRIDE; a 503 is transient and carries its Retry-After; a 400
 * with Comet's sdk_error_code is permanent with the server's message; a
 * delivery that failed half-way resumes where it stopped (no second upsert,
 * no asset sent twice); an unreachable server is offline, and a server whose
 * connections break is offline only when its liveness probe fails too;
 * abort() ends a delivery in flight as cancelled. One process per test
 * (tests/uvtest.h).
 */
#include "backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "config.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "spool.h"
#include "util.h"
#include "uvtest.h"

#define KEY "0123456789abcdef0123456789abcdef"
#define API_KEY "test-api-key"

extern char **environ;

/* ---- the stand-in ---- */

static pid_t standin_pid = -1;
static int standin_stdin = -1, standin_port;

static void standin_start(void)
{
        const char *src = getenv("FERRY_SOURCE_DIR");
        char script[1024], buf[128], data[600];
        char *argv[12];
        posix_spawn_file_actions_t fa;
        int in[2], out[2], rc;
        size_t len = 0;

        if (src == NULL)
                src = FERRY_TEST_SOURCE_DIR;
        snprintf(script, sizeof(script), "%s/tests/comet_standin.py", src);
        snprintf(data, sizeof(data), "%s", uvtest_path("standin"));
        if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
                perror("pipe2");
                exit(1);
        }
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        argv[0] = "/usr/bin/python3";
        argv[1] = script;
        argv[2] = "--port";
        argv[3] = "0";
        argv[4] = "--data-dir";
        argv[5] = data;
        argv[6] = "--api-key";
        argv[7] = API_KEY;
        argv[8] = "--max-seconds";
        argv[9] = "120";
        argv[10] = NULL;
        rc = posix_spawn(&standin_pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(in[0]);
        close(out[1]);
        if (rc != 0) {
                fprintf(stderr, "cannot start %s: %s\n", script, strerror(rc));
                exit(1);
        }
        standin_stdin = in[1];
        while (len < sizeof(buf) - 1 && memchr(buf, '\n', len) == NULL) {
                struct pollfd pfd = {.fd = out[0], .events = POLLIN};
                ssize_t r;

                if (poll(&pfd, 1, 15000) <= 0)
                        break;
                r = read(out[0], buf + len, sizeof(buf) - 1 - len);
                if (r <= 0)
                        break;
                len += (size_t)r;
        }
        buf[len] = '\0';
        close(out[0]);
        if (sscanf(buf, "PORT %d", &standin_port) != 1) {
                fprintf(stderr, "the stand-in did not report its port: \"%s\"\n", buf);
                exit(1);
        }
}

static void standin_stop(void)
{
        int status;

        if (standin_stdin >= 0)
                close(standin_stdin); /* it exits at EOF */
        standin_stdin = -1;
        if (standin_pid > 0) {
                kill(standin_pid, SIGTERM);
                waitpid(standin_pid, &status, 0);
        }
        standin_pid = -1;
}

/* A blocking request to the stand-in's control API; the JSON answer (caller deletes) or NULL. */
static cJSON *standin(const char *method, const char *path, const char *body)
{
        struct sockaddr_in sa = {.sin_family = AF_INET};
        char req[8192], *resp = NULL;
        size_t len = 0, cap = 0;
        const char *start;
        cJSON *json = NULL;
        ssize_t n;
        int fd;

        sa.sin_port = htons((uint16_t)standin_port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                perror("connect to the stand-in");
                if (fd >= 0)
                        close(fd);
                return NULL;
        }
        snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 method, path, body ? strlen(body) : 0, body ? body : "");
        if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
                close(fd);
                return NULL;
        }
        for (;;) {
                if (len + 65536 + 1 > cap) {
                        cap = cap ? cap * 2 : 131072;
                        resp = realloc(resp, cap);
                }
                n = read(fd, resp + len, cap - len - 1);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        close(fd);
        if (resp == NULL)
                return NULL;
        resp[len] = '\0';
        start = strstr(resp, "\r\n\r\n");
        if (start != NULL)
                json = cJSON_Parse(start + 4);
        free(resp);
        return json;
}

static void standin_faults(const char *rules)
{
        char body[4096];

        snprintf(body, sizeof(body), "{\"rules\": %s}", rules);
        cJSON_Delete(standin("POST", "/_standin/faults", body));
}

static int standin_count(const cJSON *state, const char *endpoint)
{
        const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(state, "counts"), endpoint);

        return cJSON_IsNumber(v) ? v->valueint : 0;
}

/* The versions of artifact `name` in the stand-in's state. */
static const cJSON *standin_versions(const cJSON *state, const char *name)
{
        const cJSON *a;

        cJSON_ArrayForEach(a, cJSON_GetObjectItem(state, "artifacts"))
        {
                if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(a, "name")) ?: "", name) == 0)
                        return cJSON_GetObjectItem(a, "versions");
        }
        return NULL;
}

/* A TCP port on 127.0.0.1 that nobody listens on. */
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

/* ---- the sink: events in order; `then` confirmed a moment later ---- */

struct event {
        char kind; /* 'R', 'C', 'A', 'F' */
        int64_t job;
        int idx;
        char remote[80], version[64];
        struct backend_result result;
};

static struct event events[64];
static int nevents, nfinished, then_errors;
static int64_t bytes_sent;

struct pending_then {
        struct job *job;
        backend_then_cb *then;
};
static struct pending_then pending[64];
static int npending;
static uv_timer_t then_timer;

static cJSON *standin(const char *method, const char *path, const char *body);
static int standin_count(const cJSON *state, const char *endpoint);

/*
 * With `watch_steps`, each confirmation first asks the stand-in what it has
 * seen: no upload may have started before the version's creation was
 * confirmed, and no close before the last asset's.
 */
static bool watch_steps;
static int uploads_before_created = -1, closes_before_assets = -1;

static void then_timer_cb(uv_timer_t *t)
{
        struct pending_then now[64];
        int i, n = npending;

        memcpy(now, pending, sizeof(now));
        npending = 0;
        for (i = 0; i < n; i++) {
                if (watch_steps) {
                        cJSON *state = standin("GET", "/_standin/state", NULL);

                        if (uploads_before_created < 0)
                                uploads_before_created = standin_count(state, "uploadAsset");
                        else
                                closes_before_assets = standin_count(state, "state");
                        cJSON_Delete(state);
                }
                now[i].then(now[i].job, 0);
        }
}

/* The queue commits a step, then confirms it: here 50 ms later. */
static void confirm_later(struct job *job, backend_then_cb *then)
{
        pending[npending].job = job;
        pending[npending].then = then;
        npending++;
        uv_timer_start(&then_timer, then_timer_cb, 50, 0);
}

static struct event *add_event(char kind, const struct job *job)
{
        struct event *e = &events[nevents < 63 ? nevents : 63];

        memset(e, 0, sizeof(*e));
        e->kind = kind;
        e->job = job->id;
        if (nevents < 63)
                nevents++;
        return e;
}

static void sink_registered(struct backend_sink *sink, struct job *job)
{
        add_event('R', job);
}

static void sink_created(struct backend_sink *sink, struct job *job, const char *remote_id,
                         const char *assigned_version, backend_then_cb *then)
{
        struct event *e = add_event('C', job);

        snprintf(e->remote, sizeof(e->remote), "%s", remote_id);
        snprintf(e->version, sizeof(e->version), "%s", assigned_version ? assigned_version : "");
        confirm_later(job, then);
}

static void sink_asset_done(struct backend_sink *sink, struct job *job, int idx,
                            backend_then_cb *then)
{
        add_event('A', job)->idx = idx;
        confirm_later(job, then);
}

static void sink_sent(struct backend_sink *sink, int64_t bytes)
{
        bytes_sent += bytes;
}

static void sink_finished(struct backend_sink *sink, struct job *job,
                          const struct backend_result *r)
{
        add_event('F', job)->result = *r;
        CHECK_INT(npending, 0); /* no step of it waits for its confirmation any more */
        nfinished++;
}

static struct backend_sink sink = {.registered = sink_registered,
                                   .created = sink_created,
                                   .asset_done = sink_asset_done,
                                   .sent = sink_sent,
                                   .finished = sink_finished};

/* The events of job `id` as a string: "RCAAAF". */
static const char *events_of(int64_t id)
{
        static char buf[65];
        int i, n = 0;

        for (i = 0; i < nevents; i++)
                if (events[i].job == id)
                        buf[n++] = events[i].kind;
        buf[n] = '\0';
        return buf;
}

static const struct event *last_event(char kind, int64_t id)
{
        int i;

        for (i = nevents - 1; i >= 0; i--)
                if (events[i].kind == kind && events[i].job == id)
                        return &events[i];
        return NULL;
}

/* ---- fixture ---- */

static struct config cfg;
static struct spool *spool;
static struct backend *be;
static int closed_calls;

static void closed_cb(void *data)
{
        closed_calls++;
}

static struct backend *open_backend(void)
{
        struct backend_env env;
        struct backend *b = NULL;
        char err[512] = "";

        memset(&env, 0, sizeof(env));
        env.loop = uvtest_loop;
        env.cfg = &cfg;
        env.spool = spool;
        env.state_dir = uvtest_dir;
        env.sink = &sink;
        if (backend_comet_new(&b, &env, err, sizeof(err)) != 0) {
                fprintf(stderr, "backend_comet_new: %s\n", err);
                exit(1);
        }
        CHECK_STR(b->ops->name, "comet");
        return b;
}

static void setup_port(int port)
{
        char err[512] = "";

        memset(&cfg, 0, sizeof(cfg));
        snprintf(cfg.comet_api_key, sizeof(cfg.comet_api_key), "%s", API_KEY);
        snprintf(cfg.comet_url, sizeof(cfg.comet_url), "http://127.0.0.1:%d/clientlib/", port);
        cfg.max_transfers = 4;
        cfg.connect_timeout_s = 3;
        cfg.low_speed_limit = 1;
        cfg.low_speed_time_s = 30;
        cfg.deadline_base_s = 30;
        cfg.min_rate_bps = 32768;
        cfg.verify_tls = false;
        cfg.retry_after_cap_ms = 600000;
        nevents = nfinished = then_errors = npending = 0;
        bytes_sent = 0;
        closed_calls = 0;
        uv_timer_init(uvtest_loop, &then_timer);
        if (spool_open(&spool, uvtest_loop, uvtest_path("spool"), uvtest_path("quarantine"), 0, 0,
                       err, sizeof(err)) != 0) {
                fprintf(stderr, "spool_open: %s\n", err);
                exit(1);
        }
        be = open_backend();
}

static void setup(void)
{
        standin_start();
        setup_port(standin_port);
}

static void teardown(void)
{
        be->ops->close(be, closed_cb, NULL);
        UVTEST_WAIT_INT(&closed_calls, 1, 5000);
        uv_close((uv_handle_t *)&then_timer, NULL);
        spool_close(spool);
        standin_stop();
}

static int64_t snapshot(const char *text, char name[33])
{
        char err[512] = "";
        int64_t size = -1;
        int fd = open(uvtest_path("src"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        CHECK(fd >= 0);
        CHECK_INT(write(fd, text, strlen(text)), (long long)strlen(text));
        CHECK_INT(spool_snapshot_fd(spool, fd, "src", NULL, name, &size, err, sizeof(err)), 0);
        close(fd);
        return size;
}

/* A job as the store loads it: two file assets (dir/f0.txt, dir/f1.txt) and a remote one. */
static struct job *make_job(int64_t id, const char *name, const char *version)
{
        static const char *const contents[] = {"first file\n", "second, longer file\n"};
        struct job *j = calloc(1, sizeof(*j));
        char token[33];
        int i;

        util_random_hex(token, 16);
        j->id = id;
        j->token = strdup(token);
        j->experiment = strdup(KEY);
        j->workspace = strdup("default");
        j->project = strdup("general");
        j->name = strdup(name);
        j->type = strdup("model");
        j->version = version ? strdup(version) : NULL;
        j->aliases = strdup("[\"best\"]");
        j->tags = strdup("[\"t1\"]");
        j->metadata = strdup("{\"epoch\":3}");
        j->nassets = 3;
        j->assets = calloc(3, sizeof(*j->assets));
        for (i = 0; i < 2; i++) {
                struct job_asset *a = &j->assets[i];

                a->idx = i;
                a->logical_path = strdup(i == 0 ? "dir/f0.txt" : "dir/f1.txt");
                a->spool = malloc(33);
                a->size = snapshot(contents[i], a->spool);
                a->metadata = strdup("{\"rows\":10}");
                a->overwrite = true;
                util_random_hex(a->asset_id, 16);
                j->bytes += a->size;
        }
        j->assets[2].idx = 2;
        j->assets[2].logical_path = strdup("remote-link");
        j->assets[2].remote = true;
        j->assets[2].uri = strdup("s3://bucket/object");
        util_random_hex(j->assets[2].asset_id, 16);
        return j;
}

static const struct backend_result *deliver_wait(struct job *j, int timeout_ms)
{
        int before = nfinished;
        const struct event *e;

        be->ops->deliver(be, j);
        UVTEST_WAIT_INT(&nfinished, before + 1, timeout_ms);
        e = last_event('F', j->id);
        return e ? &e->result : NULL;
}

static int outcome(const struct backend_result *r)
{
        return r ? (int)r->outcome : -1;
}

/* ---- tests ---- */

/* register -> upsert -> uploads -> CLOSED, reported in order; the server saw the same. */
static void test_delivery_flow(void)
{
        const struct backend_result *r;
        const cJSON *versions, *v, *a, *req;
        int i, upsert_at = -1, state_at = -1, first_upload = 1 << 30, last_upload = -1;
        char sha[65];
        struct job *j, *k;
        cJSON *state;

        setup();
        watch_steps = true;
        j = make_job(1, "flow", NULL);
        r = deliver_wait(j, 10000);
        watch_steps = false;
        CHECK_INT(uploads_before_created, 0);
        CHECK_INT(closes_before_assets, 0);
        CHECK_INT(outcome(r), BACKEND_OK);
        CHECK_STR(r ? r->assigned_version : "", "1.0.0");
        CHECK_STR(events_of(1), "RCAAAF");
        CHECK_STR(last_event('C', 1) ? last_event('C', 1)->version : "", "1.0.0");
        CHECK_INT(strlen(last_event('C', 1) ? last_event('C', 1)->remote : ""), 32);
        CHECK_STR(j->remote_version_id, last_event('C', 1) ? last_event('C', 1)->remote : "");
        CHECK_INT(bytes_sent, j->bytes);
        for (i = 0; i < 3; i++)
                CHECK(j->assets[i].done);

        state = standin("GET", "/_standin/state", NULL);
        CHECK_INT(standin_count(state, "addRun"), 1);
        CHECK_INT(standin_count(state, "upsert"), 1);
        CHECK_INT(standin_count(state, "uploadAsset"), 3);
        CHECK_INT(standin_count(state, "state"), 1);
        versions = standin_versions(state, "flow");
        CHECK_INT(cJSON_GetArraySize(versions), 1);
        v = cJSON_GetArrayItem(versions, 0);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "state")), "CLOSED");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "version")), "1.0.0");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "artifactVersionId")),
                  j->remote_version_id);
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "assets")), 3);
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(v, "assets"))
        {
                const char *fn = cJSON_GetStringValue(cJSON_GetObjectItem(a, "fileName")) ?: "";

                CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(a, "uploads")), 1);
                if (strcmp(fn, "dir/f1.txt") == 0) {
                        util_sha256_hex("second, longer file\n", 20, sha);
                        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "sha256")), sha);
                        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "assetId")),
                                  j->assets[1].asset_id);
                } else if (strcmp(fn, "remote-link") == 0) {
                        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(a, "remote")));
                        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "link")),
                                  "s3://bucket/object");
                }
        }
        /* The server's order: upsert, then every upload, then the close. */
        i = 0;
        cJSON_ArrayForEach(req, cJSON_GetObjectItem(state, "requests"))
        {
                const char *ep = cJSON_GetStringValue(cJSON_GetObjectItem(req, "endpoint")) ?: "";

                if (strcmp(ep, "upsert") == 0)
                        upsert_at = i;
                else if (strcmp(ep, "uploadAsset") == 0) {
                        first_upload = i < first_upload ? i : first_upload;
                        last_upload = i;
                } else if (strcmp(ep, "state") == 0)
                        state_at = i;
                i++;
        }
        CHECK(upsert_at >= 0);
        CHECK(upsert_at < first_upload);
        CHECK(last_upload >= 0);
        CHECK(last_upload < state_at);
        cJSON_Delete(state);

        /* The next version: registered already, numbered next. */
        k = make_job(2, "flow", NULL);
        r = deliver_wait(k, 10000);
        CHECK_STR(r ? r->assigned_version : "", "2.0.0");
        CHECK_STR(events_of(2), "CAAAF");
        state = standin("GET", "/_standin/state", NULL);
        CHECK_INT(standin_count(state, "addRun"), 1);
        CHECK_INT(cJSON_GetArraySize(standin_versions(state, "flow")), 2);
        cJSON_Delete(state);
        job_free(j);
        job_free(k);
        teardown();
}

/* A web page with 200 is not Comet: a permanent failure that says where to look. */
static void test_html_answer(void)
{
        const struct backend_result *r;
        struct job *j;

        setup();
        standin_faults("[{\"endpoint\": \"upsert\", \"html\": true}]");
        j = make_job(1, "html", NULL);
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_PERMANENT);
        CHECK_STR(r ? r->code : "", "not_comet");
        CHECK_STR(r ? r->message : "",
                  "creating the version: the server answered HTTP 200 with an HTML page, not "
                  "Comet's REST API: check COMET_URL_OVERRIDE");
        CHECK_STR(events_of(1), "RF");
        CHECK(j->remote_version_id == NULL);
        job_free(j);
        teardown();
}

/* 503 is transient with its Retry-After; 400 with sdk_error_code is permanent with the msg. */
static void test_status_errors(void)
{
        const struct backend_result *r;
        struct job *j;
        cJSON *state;

        setup();
        standin_faults("[{\"endpoint\": \"upsert\", \"status\": 503, \"retry_after\": 7, "
                       "\"count\": 1}]");
        j = make_job(1, "busy", NULL);
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_TRANSIENT);
        CHECK_INT(r ? r->retry_after_ms : 0, 7000);
        CHECK_STR(r ? r->code : "", "http_503");
        CHECK(r && strncmp(r->message, "creating the version: HTTP 503", 30) == 0);
        CHECK(r && !r->cancelled);
        CHECK_STR(events_of(1), "RF");
        /* The next attempt goes through (the rule was used up); registered already. */
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_OK);
        CHECK_STR(events_of(1), "RFCAAAF");

        standin_faults("[{\"endpoint\": \"upsert\", \"status\": 400, \"sdk_error_code\": 90399, "
                       "\"msg\": \"version 3.0.0 already exists\"}]");
        job_free(j);
        j = make_job(2, "busy", "3.0.0");
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_PERMANENT);
        CHECK_STR(r ? r->code : "", "90399");
        CHECK_STR(r ? r->message : "", "creating the version: HTTP 400: version 3.0.0 already "
                                       "exists (sdk_error_code 90399)");
        CHECK_INT(r ? r->retry_after_ms : 0, -1);
        state = standin("GET", "/_standin/state", NULL);
        CHECK_INT(cJSON_GetArraySize(standin_versions(state, "busy")), 1);
        cJSON_Delete(state);
        job_free(j);
        teardown();
}

/* A delivery that failed after some uploads resumes there: no second upsert, nothing twice. */
static void test_resume(void)
{
        const struct backend_result *r;
        const cJSON *a;
        struct job *j;
        cJSON *state;
        char remote[80];

        setup();
        standin_faults("[{\"endpoint\": \"uploadAsset\", \"match_file\": \"dir/f1.txt\", "
                       "\"status\": 503, \"count\": 1}]");
        j = make_job(1, "resume", NULL);
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_TRANSIENT);
        CHECK(r && strstr(r->message, "(dir/f1.txt)") != NULL);
        CHECK(j->remote_version_id != NULL);
        snprintf(remote, sizeof(remote), "%s", j->remote_version_id ? j->remote_version_id : "");
        CHECK(j->assets[0].done);
        CHECK(!j->assets[1].done);
        CHECK(j->assets[2].done);
        CHECK_STR(events_of(1), "RCAAF");
        /* The retry: only the missing upload, then the close. */
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_OK);
        CHECK_STR(r ? r->assigned_version : "", "1.0.0");
        CHECK_STR(events_of(1), "RCAAFAF");
        CHECK_STR(j->remote_version_id, remote);
        state = standin("GET", "/_standin/state", NULL);
        CHECK_INT(standin_count(state, "upsert"), 1);
        CHECK_INT(standin_count(state, "uploadAsset"), 4); /* 3, plus the refused one */
        CHECK_INT(standin_count(state, "state"), 1);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(
                      cJSON_GetArrayItem(standin_versions(state, "resume"), 0), "state")),
                  "CLOSED");
        cJSON_ArrayForEach(
            a,
            cJSON_GetObjectItem(cJSON_GetArrayItem(standin_versions(state, "resume"), 0), "assets"))
        {
                CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(a, "uploads")), 1);
        }
        cJSON_Delete(state);
        job_free(j);
        teardown();
}

struct probe_seen {
        int calls;
        bool online;
        char message[512];
};
static struct probe_seen probe_seen;

static void probe_cb(struct backend *b, bool online, const char *message)
{
        probe_seen.calls++;
        probe_seen.online = online;
        snprintf(probe_seen.message, sizeof(probe_seen.message), "%s", message ? message : "");
}

/* Nothing listening: offline, spending no attempt; the probe says so too. */
static void test_unreachable(void)
{
        const struct backend_result *r;
        struct job *j;

        setup_port(closed_port());
        j = make_job(1, "away", NULL);
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_OFFLINE);
        CHECK(r && r->message[0] != '\0');
        CHECK_STR(events_of(1), "F");
        memset(&probe_seen, 0, sizeof(probe_seen));
        be->ops->probe(be, probe_cb);
        UVTEST_WAIT_INT(&probe_seen.calls, 1, 10000);
        CHECK(!probe_seen.online);
        CHECK(probe_seen.message[0] != '\0');
        job_free(j);
        be->ops->close(be, closed_cb, NULL);
        UVTEST_WAIT_INT(&closed_calls, 1, 5000);
        uv_close((uv_handle_t *)&then_timer, NULL);
        spool_close(spool);
}

/*
 * Connections that break (the server resets them) are offline only because the
 * liveness probe fails too; once the server is back, the probe says online.
 */
static void test_down_and_back(void)
{
        const struct backend_result *r;
        struct job *j;

        setup();
        cJSON_Delete(standin("POST", "/_standin/down", "{\"down\": true}"));
        j = make_job(1, "down", NULL);
        r = deliver_wait(j, 15000);
        CHECK_INT(outcome(r), BACKEND_OFFLINE);
        memset(&probe_seen, 0, sizeof(probe_seen));
        be->ops->probe(be, probe_cb);
        UVTEST_WAIT_INT(&probe_seen.calls, 1, 10000);
        CHECK(!probe_seen.online);
        cJSON_Delete(standin("POST", "/_standin/down", "{\"down\": false}"));
        be->ops->probe(be, probe_cb);
        UVTEST_WAIT_INT(&probe_seen.calls, 2, 10000);
        CHECK(probe_seen.online);
        /* A web page where isAlive should be is not Comet: still offline. */
        standin_faults("[{\"endpoint\": \"isAlive\", \"html\": true}]");
        be->ops->probe(be, probe_cb);
        UVTEST_WAIT_INT(&probe_seen.calls, 3, 10000);
        CHECK(!probe_seen.online);
        CHECK(strstr(probe_seen.message, "COMET_URL_OVERRIDE") != NULL);
        /* JSON, but not Comet's isAlive answer (no version): not Comet either. */
        standin_faults("[{\"endpoint\": \"isAlive\", \"respond\": {\"status\": 200, "
                       "\"body\": \"{}\"}}]");
        be->ops->probe(be, probe_cb);
        UVTEST_WAIT_INT(&probe_seen.calls, 4, 10000);
        CHECK(!probe_seen.online);
        CHECK_STR(probe_seen.message, "the liveness probe: the answer is JSON but not Comet's (no "
                                      "version); check COMET_URL_OVERRIDE");
        standin_faults("[]");
        r = deliver_wait(j, 10000);
        CHECK_INT(outcome(r), BACKEND_OK);
        job_free(j);
        teardown();
}

/* abort() ends a delivery in flight at once, as cancelled. */
static void test_abort(void)
{
        const struct backend_result *r;
        struct job *j;
        int64_t start;

        setup();
        standin_faults("[{\"endpoint\": \"upsert\", \"delay\": 20}]");
        j = make_job(1, "slow", NULL);
        be->ops->deliver(be, j);
        UVTEST_WAIT(last_event('R', 1) != NULL, 10000);
        uvtest_run_for(200);
        CHECK_INT(nfinished, 0);
        start = uvtest_mono_ms();
        be->ops->abort(be);
        UVTEST_WAIT_INT(&nfinished, 1, 5000);
        CHECK(uvtest_mono_ms() - start < 3000);
        r = last_event('F', 1) ? &last_event('F', 1)->result : NULL;
        CHECK(r && r->cancelled);
        CHECK_INT(outcome(r), BACKEND_TRANSIENT);
        job_free(j);
        teardown();
}

static const struct uvtest tests[] = {
    {"delivery_flow", test_delivery_flow},
    {"html_answer", test_html_answer},
    {"status_errors", test_status_errors},
    {"resume", test_resume},
    {"unreachable", test_unreachable},
    {"down_and_back", test_down_and_back},
    {"abort", test_abort},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
        int rc;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = uvtest_main(argc, argv, "test_backend_comet", tests);
        curl_global_cleanup();
        return rc;
}
