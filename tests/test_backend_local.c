/*
 * test_backend_local.c — the local registry backend (daemon/backend_local.c
 * with registry.c) against a fake sink (the queue's side of backend.h), on
 * real spool snapshots in a temporary directory.
 *
 * Covered: each delivery reports its place in the artifact's order
 * (created) at once, then finished OK with the version the registry gave
 * it: 1.0.0, then the next major of the highest, an explicit version as
 * asked, a taken one refused for good; versions of one artifact are
 * published in delivery order; look-ups by version, alias (exactly, else
 * ignoring case), Latest, and their not-found sentences; the get reply's
 * shape and fetch; blobs content-addressed and shared by versions; a
 * delivery repeated after a restart (the queue never recorded the first)
 * finds the version it made instead of making another; a vanished snapshot
 * fails the job for good without holding up the artifact; close waits for
 * deliveries in flight. One process per test (tests/uvtest.h).
 */
#include "backend.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "config.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "spool.h"
#include "util.h"
#include "uvtest.h"

#define KEY "0123456789abcdef0123456789abcdef"

/* ---- the sink: what the backend reported, in order ---- */

struct event {
        char kind; /* 'R'egistered, 'C'reated, 'A'sset done, 'F'inished */
        int64_t job;
        char remote[64];
        struct backend_result result;
};

static struct event events[128];
static int nevents, nfinished;
static int64_t bytes_sent;

static void add_event(char kind, const struct job *job)
{
        struct event *e = &events[nevents < 127 ? nevents : 127];

        memset(e, 0, sizeof(*e));
        e->kind = kind;
        e->job = job->id;
        if (nevents < 127)
                nevents++;
}

static void sink_registered(struct backend_sink *sink, struct job *job)
{
        add_event('R', job);
}

static void sink_created(struct backend_sink *sink, struct job *job, const char *remote_id,
                         const char *assigned_version, backend_then_cb *then)
{
        add_event('C', job);
        snprintf(events[nevents - 1].remote, sizeof(events[0].remote), "%s", remote_id);
        CHECK(assigned_version == NULL); /* the number comes with the publish */
        then(job, 0);
}

static void sink_asset_done(struct backend_sink *sink, struct job *job, int idx,
                            backend_then_cb *then)
{
        add_event('A', job);
        then(job, 0);
}

static void sink_sent(struct backend_sink *sink, int64_t bytes)
{
        bytes_sent += bytes;
}

static void sink_finished(struct backend_sink *sink, struct job *job,
                          const struct backend_result *r)
{
        add_event('F', job);
        events[nevents - 1].result = *r;
        CHECK(job->delivery == NULL);
        nfinished++;
}

static struct backend_sink sink = {.registered = sink_registered,
                                   .created = sink_created,
                                   .asset_done = sink_asset_done,
                                   .sent = sink_sent,
                                   .finished = sink_finished};

/* The finished event of job `id`, or NULL. */
/* The finished event's result of job `id`; an empty one (no outcome, no strings) if none. */
static const struct backend_result *result_of(int64_t id)
{
        static const struct backend_result none = {.outcome = -1};
        int i;

        for (i = 0; i < nevents; i++)
                if (events[i].kind == 'F' && events[i].job == id)
                        return &events[i].result;
        return &none;
}

/* The outcome job `id` finished with, or -1. */
static int outcome_of(int64_t id)
{
        return (int)result_of(id)->outcome;
}

/* Position of the first event `kind` of job `id`, or -1. */
static int event_index(char kind, int64_t id)
{
        int i;

        for (i = 0; i < nevents; i++)
                if (events[i].kind == kind && events[i].job == id)
                        return i;
        return -1;
}

/* ---- fixture ---- */

static struct config cfg;
static struct spool *spool;
static struct backend *be;
static int closed_calls;

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
        if (backend_local_new(&b, &env, err, sizeof(err)) != 0) {
                fprintf(stderr, "backend_local_new: %s\n", err);
                exit(1);
        }
        CHECK_STR(b->ops->name, "local");
        return b;
}

static void closed_cb(void *data)
{
        closed_calls++;
        CHECK(data == &closed_calls);
}

static void close_backend(struct backend *b)
{
        int before = closed_calls;

        b->ops->close(b, closed_cb, &closed_calls);
        UVTEST_WAIT_INT(&closed_calls, before + 1, 5000);
}

static void setup(void)
{
        char err[512] = "";

        memset(&cfg, 0, sizeof(cfg));
        nevents = nfinished = 0;
        bytes_sent = 0;
        closed_calls = 0;
        if (spool_open(&spool, uvtest_loop, uvtest_path("spool"), uvtest_path("quarantine"), 0, 0,
                       err, sizeof(err)) != 0) {
                fprintf(stderr, "spool_open: %s\n", err);
                exit(1);
        }
        be = open_backend();
}

static void teardown(void)
{
        if (be != NULL)
                close_backend(be);
        be = NULL;
        spool_close(spool);
}

/* A snapshot in the spool holding `text`; its name into name. */
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

static char *dup_or_null(const char *s)
{
        return s ? strdup(s) : NULL;
}

/*
 * A job as the store would load it: version NULL for the next major; files:
 * NULL-terminated contents (each a file asset f<i>.txt); `remote`: add one
 * remote asset.
 */
static struct job *make_job(int64_t id, const char *name, const char *version, const char *aliases,
                            const char *const *files, bool remote)
{
        struct job *j = calloc(1, sizeof(*j));
        size_t n = 0, i;
        char token[33], lp[32];

        while (files && files[n])
                n++;
        util_random_hex(token, 16);
        j->id = id;
        j->token = strdup(token);
        j->experiment = strdup(KEY);
        j->workspace = strdup("ws");
        j->project = strdup("proj");
        j->name = strdup(name);
        j->type = strdup("model");
        j->version = dup_or_null(version);
        j->aliases = strdup(aliases ? aliases : "[]");
        j->tags = strdup("[\"t1\"]");
        j->metadata = strdup("{\"epoch\":3}");
        j->nassets = n + (remote ? 1 : 0);
        j->assets = calloc(j->nassets, sizeof(*j->assets));
        for (i = 0; i < n; i++) {
                struct job_asset *a = &j->assets[i];

                a->idx = (int)i;
                snprintf(lp, sizeof(lp), "dir/f%zu.txt", i);
                a->logical_path = strdup(lp);
                a->spool = malloc(33);
                a->size = snapshot(files[i], a->spool);
                a->metadata = i == 0 ? strdup("{\"rows\":10}") : NULL;
                util_random_hex(a->asset_id, 16);
                j->bytes += a->size;
        }
        if (remote) {
                struct job_asset *a = &j->assets[n];

                a->idx = (int)n;
                a->logical_path = strdup("link");
                a->remote = true;
                a->uri = strdup("s3://bucket/key");
                util_random_hex(a->asset_id, 16);
        }
        return j;
}

/* Deliver and wait for the finish; the job's result. */
static const struct backend_result *deliver_wait(struct job *j)
{
        int before = nfinished;

        be->ops->deliver(be, j);
        UVTEST_WAIT_INT(&nfinished, before + 1, 5000);
        return result_of(j->id);
}

struct got {
        int calls, code;
        char message[512];
        cJSON *version;
        char path[4096];
};

static void got_cb(void *data, int code, const char *message, cJSON *version)
{
        struct got *g = data;

        g->calls++;
        g->code = code;
        snprintf(g->message, sizeof(g->message), "%s", message ? message : "");
        cJSON_Delete(g->version);
        g->version = version;
}

static void fetched_cb(void *data, int code, const char *message, const char *path)
{
        struct got *g = data;

        g->calls++;
        g->code = code;
        snprintf(g->message, sizeof(g->message), "%s", message ? message : "");
        snprintf(g->path, sizeof(g->path), "%s", path ? path : "");
}

/* The version get() finds for name:sel ("" when none); the reply kept in *out if asked. */
static const char *get_version(const char *name, const char *sel, cJSON **out)
{
        static char buf[4][64];
        static int next;
        char *b = buf[next++ % 4];
        struct got g = {0};

        be->ops->get(be, "ws", name, sel, got_cb, &g);
        CHECK_INT(g.calls, 1); /* the local registry answers at once */
        b[0] = '\0';
        if (g.code == 0 && g.version != NULL)
                snprintf(b, 64, "%s",
                         cJSON_GetStringValue(cJSON_GetObjectItem(g.version, "version")) ?: "?");
        if (out != NULL)
                *out = g.version;
        else
                cJSON_Delete(g.version);
        return b;
}

static bool has_string(const cJSON *arr, const char *s)
{
        const cJSON *it;

        cJSON_ArrayForEach(it, arr)
        {
                if (cJSON_IsString(it) && strcmp(it->valuestring, s) == 0)
                        return true;
        }
        return false;
}

/* Files under <state>/registry/blobs/xx/. */
static int count_blobs(void)
{
        char sub[600];
        DIR *dir = opendir(uvtest_path("registry/blobs"));
        struct dirent *de;
        int n = 0;

        if (dir == NULL)
                return 0;
        while ((de = readdir(dir)) != NULL) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", uvtest_path("registry/blobs"), de->d_name);
                n += count_entries(sub);
        }
        closedir(dir);
        return n;
}

/* ---- tests ---- */

/* Numbering: 1.0.0, next major of the highest, explicit as asked; delivery order kept. */
static void test_numbering(void)
{
        static const char *const one[] = {"one", NULL};
        struct job *j[8];
        const struct backend_result *r;
        int i;

        setup();
        j[0] = make_job(1, "m", NULL, NULL, one, false);
        j[1] = make_job(2, "m", NULL, NULL, one, false);
        j[2] = make_job(3, "other", NULL, NULL, one, false);
        j[3] = make_job(4, "m", "2.5.14", NULL, one, false);
        j[4] = make_job(5, "m", NULL, NULL, one, false);
        /* Delivered back to back: each one's place is reported at once. */
        for (i = 0; i < 5; i++) {
                be->ops->deliver(be, j[i]);
                CHECK_INT(events[nevents - 1].kind, 'C');
                CHECK_INT(events[nevents - 1].job, j[i]->id);
                CHECK_STR(events[nevents - 1].remote, j[i]->token);
        }
        UVTEST_WAIT_INT(&nfinished, 5, 5000);
        for (i = 0; i < 5; i++)
                CHECK_INT(outcome_of(j[i]->id), BACKEND_OK);
        CHECK_STR(result_of(1)->assigned_version, "1.0.0");
        CHECK_STR(result_of(2)->assigned_version, "2.0.0");
        CHECK_STR(result_of(3)->assigned_version, "1.0.0");
        CHECK_STR(result_of(4)->assigned_version, "2.5.14");
        CHECK_STR(result_of(5)->assigned_version, "3.0.0");
        /* Published in delivery order within the artifact. */
        CHECK(event_index('F', 1) < event_index('F', 2));
        CHECK(event_index('F', 2) < event_index('F', 4));
        CHECK(event_index('F', 4) < event_index('F', 5));
        CHECK_INT(bytes_sent, 5 * 3);
        CHECK_INT(be->ops->version_exists(be, "ws", "m", "2.5.14"), 1);
        CHECK_INT(be->ops->version_exists(be, "ws", "m", "3.0.0"), 1);
        CHECK_INT(be->ops->version_exists(be, "ws", "m", "4.0.0"), 0);
        CHECK_INT(be->ops->version_exists(be, "ws", "nope", "1.0.0"), 0);
        CHECK_INT(be->ops->version_exists(be, "other-ws", "m", "1.0.0"), 0);

        /* An explicit version that exists: refused for good, nothing published. */
        j[5] = make_job(6, "m", "2.0.0", NULL, one, false);
        r = deliver_wait(j[5]);
        CHECK_INT(r ? (int)r->outcome : -1, BACKEND_PERMANENT);
        CHECK_STR(r ? r->code : "", "exists");
        CHECK_STR(r ? r->message : "", "m version 2.0.0 exists already");
        /* The next automatic one: above the highest major. */
        j[6] = make_job(7, "m", NULL, NULL, one, false);
        r = deliver_wait(j[6]);
        CHECK_STR(r ? r->assigned_version : "", "4.0.0");
        /* A resumed job (its place already recorded) is not reported created again. */
        j[7] = make_job(8, "m", NULL, NULL, one, false);
        j[7]->remote_version_id = strdup(j[7]->token);
        r = deliver_wait(j[7]);
        CHECK_STR(r ? r->assigned_version : "", "5.0.0");
        CHECK_INT(event_index('C', 8), -1);
        CHECK_INT(event_index('R', 1), -1); /* nothing to register locally */
        CHECK_INT(event_index('A', 1), -1); /* no per-asset steps either */
        for (i = 0; i < 8; i++)
                job_free(j[i]);
        teardown();
}

/*
 * The committer keeps each artifact's order even when a later version's blobs
 * are stored first: a large first version, a tiny second one.
 */
static void test_order_kept(void)
{
        static const char *const tiny[] = {"t", NULL};
        const struct backend_result *r1, *r2;
        struct job *big, *small, *other;
        char *text = malloc((48u << 20) + 1);

        setup();
        memset(text, 'z', 48u << 20);
        text[48u << 20] = '\0';
        {
                const char *files[] = {text, NULL};

                big = make_job(1, "m", NULL, NULL, files, false);
        }
        free(text);
        small = make_job(2, "m", NULL, NULL, tiny, false);
        other = make_job(3, "n", NULL, NULL, tiny, false);
        be->ops->deliver(be, big);
        be->ops->deliver(be, small);
        be->ops->deliver(be, other);
        UVTEST_WAIT_INT(&nfinished, 3, 10000);
        r1 = result_of(1);
        r2 = result_of(2);
        CHECK_STR(r1 ? r1->assigned_version : "", "1.0.0");
        CHECK_STR(r2 ? r2->assigned_version : "", "2.0.0");
        CHECK(event_index('F', 1) < event_index('F', 2));
        /* Another artifact does not wait for it. */
        CHECK(event_index('F', 3) < event_index('F', 1));
        job_free(big);
        job_free(small);
        job_free(other);
        teardown();
}

/* Look-ups: Latest, by version, by alias exactly and then ignoring case; the reply's shape. */
static void test_get_aliases(void)
{
        static const char *const files[] = {"alpha", "beta-beta", NULL};
        struct job *j1, *j2, *j3;
        const cJSON *a;
        struct got g = {0};
        cJSON *v = NULL;
        char sha[65];

        setup();
        j1 = make_job(1, "m", NULL, "[\"best\",\"Prod\"]", files, true);
        j2 = make_job(2, "m", NULL, "[\"best\"]", files, false);
        j3 = make_job(3, "m", "1.1.0", "[\"Best\"]", files, false);
        deliver_wait(j1);
        deliver_wait(j2);
        deliver_wait(j3);
        /* Latest is the most recently delivered, whatever its number. */
        CHECK_STR(get_version("m", NULL, NULL), "1.1.0");
        CHECK_STR(get_version("m", "Latest", NULL), "1.1.0");
        CHECK_STR(get_version("m", "latest", NULL), "1.1.0");
        CHECK_STR(get_version("m", "1.0.0", NULL), "1.0.0");
        CHECK_STR(get_version("m", "2.0.0", NULL), "2.0.0");
        /* "best" moved to the newest version that claimed it; "Best" is another alias. */
        CHECK_STR(get_version("m", "best", NULL), "2.0.0");
        CHECK_STR(get_version("m", "Best", NULL), "1.1.0");
        CHECK_STR(get_version("m", "Prod", NULL), "1.0.0");
        CHECK_STR(get_version("m", "prod", NULL), "1.0.0"); /* no exact match: case folded */
        CHECK_STR(get_version("m", "PROD", NULL), "1.0.0");
        /* Not found, with a sentence. */
        be->ops->get(be, "ws", "m", "nope", got_cb, &g);
        CHECK_INT(g.code, FERRY_ENOTFOUND);
        CHECK_STR(g.message, "ws/m has no version or alias \"nope\"");
        CHECK(g.version == NULL);
        be->ops->get(be, "ws", "zzz", NULL, got_cb, &g);
        CHECK_INT(g.code, FERRY_ENOTFOUND);
        CHECK_STR(g.message, "artifact ws/zzz not found");
        be->ops->get(be, "ws2", "m", NULL, got_cb, &g);
        CHECK_INT(g.code, FERRY_ENOTFOUND);

        /* The reply (PROTOCOL.md's get, plus _path and _sha256 per stored asset). */
        CHECK_STR(get_version("m", "1.0.0", &v), "1.0.0");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "name")), "m");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "workspace")), "ws");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "type")), "model");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "state")), "CLOSED");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(v, "experiment")), KEY);
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(v, "size")), 5 + 9);
        CHECK_INT(
            cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(v, "metadata"), "epoch")),
            3);
        CHECK(has_string(cJSON_GetObjectItem(v, "aliases"), "Prod"));
        CHECK(!has_string(cJSON_GetObjectItem(v, "aliases"), "best"));
        CHECK(!has_string(cJSON_GetObjectItem(v, "aliases"), "Latest"));
        CHECK(has_string(cJSON_GetObjectItem(v, "version_tags"), "t1"));
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "assets")), 3);
        a = cJSON_GetArrayItem(cJSON_GetObjectItem(v, "assets"), 0);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "logical_path")), "dir/f0.txt");
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(a, "size")), 5);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(a, "remote")));
        CHECK_INT(
            cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "metadata"), "rows")),
            10);
        util_sha256_hex("alpha", 5, sha);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "_sha256")), sha);
        /* fetch: the blob itself, holding the bytes. */
        memset(&g, 0, sizeof(g));
        be->ops->fetch(be, a, fetched_cb, &g);
        CHECK_INT(g.calls, 1);
        CHECK_INT(g.code, 0);
        CHECK_STR(g.path, cJSON_GetStringValue(cJSON_GetObjectItem(a, "_path")));
        {
                char got_sha[65] = "";

                CHECK_INT(util_sha256_file(g.path, got_sha), 0);
                CHECK_STR(got_sha, sha);
        }
        /* The remote asset: its link, no stored content. */
        a = cJSON_GetArrayItem(cJSON_GetObjectItem(v, "assets"), 2);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(a, "remote")));
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "link")), "s3://bucket/key");
        CHECK(cJSON_GetObjectItem(a, "_path") == NULL);
        memset(&g, 0, sizeof(g));
        be->ops->fetch(be, a, fetched_cb, &g);
        CHECK_INT(g.code, FERRY_ENOTFOUND);
        cJSON_Delete(v);
        v = NULL;
        CHECK_STR(get_version("m", NULL, &v), "1.1.0");
        CHECK(has_string(cJSON_GetObjectItem(v, "aliases"), "Latest"));
        CHECK(has_string(cJSON_GetObjectItem(v, "aliases"), "Best"));
        cJSON_Delete(v);
        job_free(j1);
        job_free(j2);
        job_free(j3);
        teardown();
}

/* Blobs are content-addressed: the same bytes in two versions are one blob. */
static void test_blobs_shared(void)
{
        static const char *const f1[] = {"same bytes", "only in one", NULL};
        static const char *const f2[] = {"same bytes", "only in two", "same bytes", NULL};
        struct job *j1, *j2;
        cJSON *v1 = NULL, *v2 = NULL;
        const char *p1, *p2;

        setup();
        j1 = make_job(1, "m", NULL, NULL, f1, false);
        j2 = make_job(2, "n", NULL, NULL, f2, false);
        deliver_wait(j1);
        deliver_wait(j2);
        CHECK_INT(count_blobs(), 3);
        get_version("m", NULL, &v1);
        get_version("n", NULL, &v2);
        p1 = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(v1, "assets"), 0), "_path"));
        p2 = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(v2, "assets"), 2), "_path"));
        CHECK_STR(p1, p2);
        cJSON_Delete(v1);
        cJSON_Delete(v2);
        job_free(j1);
        job_free(j2);
        teardown();
}

/*
 * ferryd died after the registry committed a version and before the queue
 * recorded it: the job is delivered again after the restart and finds the
 * version it made (the token is its origin); nothing is duplicated.
 */
static void test_redelivery(void)
{
        static const char *const files[] = {"payload", NULL};
        const struct backend_result *r;
        struct job *j, *again, *next;
        size_t i;

        setup();
        j = make_job(1, "m", NULL, "[\"a1\"]", files, false);
        r = deliver_wait(j);
        CHECK_STR(r ? r->assigned_version : "", "1.0.0");
        CHECK_INT(count_blobs(), 1);
        /* The restart: a new backend on the same registry, the job as the queue still has it
         * (created, since "created" was committed; not done). */
        close_backend(be);
        be = open_backend();
        again = make_job(1, "m", NULL, "[\"a1\"]", files, false);
        free(again->token);
        again->token = strdup(j->token);
        again->remote_version_id = strdup(j->token);
        for (i = 0; i < again->nassets; i++)
                snprintf(again->assets[i].asset_id, sizeof(again->assets[i].asset_id), "%s",
                         j->assets[i].asset_id);
        nevents = nfinished = 0;
        r = deliver_wait(again);
        CHECK_INT(r ? (int)r->outcome : -1, BACKEND_OK);
        CHECK_STR(r ? r->assigned_version : "", "1.0.0");
        CHECK_INT(event_index('C', 1), -1);
        CHECK_INT(count_blobs(), 1);
        CHECK_STR(get_version("m", NULL, NULL), "1.0.0");
        CHECK_INT(be->ops->version_exists(be, "ws", "m", "2.0.0"), 0);
        /* Had it been published twice, the next would be 3.0.0. */
        next = make_job(2, "m", NULL, NULL, files, false);
        r = deliver_wait(next);
        CHECK_STR(r ? r->assigned_version : "", "2.0.0");
        job_free(j);
        job_free(again);
        job_free(next);
        teardown();
}

/* A snapshot that vanished: failed for good, nothing published, the artifact goes on. */
static void test_missing_snapshot(void)
{
        static const char *const files[] = {"x", NULL};
        const struct backend_result *r;
        struct job *j, *k;

        setup();
        j = make_job(1, "m", NULL, NULL, files, false);
        k = make_job(2, "m", NULL, NULL, files, false);
        {
                char *path = spool_path(spool, j->assets[0].spool);

                CHECK_INT(unlink(path), 0);
                free(path);
        }
        be->ops->deliver(be, j);
        be->ops->deliver(be, k);
        UVTEST_WAIT_INT(&nfinished, 2, 5000);
        r = result_of(1);
        CHECK_INT(r ? (int)r->outcome : -1, BACKEND_PERMANENT);
        CHECK_STR(r ? r->code : "", "not_found");
        CHECK(r && strstr(r->message, "cannot read spool file") != NULL);
        r = result_of(2);
        CHECK_STR(r ? r->assigned_version : "", "1.0.0");
        CHECK_INT(bytes_sent, 1);
        job_free(j);
        job_free(k);
        teardown();
}

static int probe_calls;
static bool probe_online;

static void probe_cb(struct backend *b, bool online, const char *message)
{
        probe_calls++;
        probe_online = online;
}

/* close() waits for the deliveries in flight; probe says online at once. */
static void test_close_and_probe(void)
{
        static const char *const files[] = {"1", "22", "333", NULL};
        struct job *j[3];
        int i;

        setup();
        for (i = 0; i < 3; i++) {
                j[i] = make_job(i + 1, i == 1 ? "b" : "a", NULL, NULL, files, false);
                be->ops->deliver(be, j[i]);
        }
        be->ops->abort(be); /* local work is not cut: it finishes */
        be->ops->close(be, closed_cb, &closed_calls);
        be = NULL;
        CHECK_INT(closed_calls, 0);
        UVTEST_WAIT_INT(&closed_calls, 1, 5000);
        CHECK_INT(nfinished, 3);
        for (i = 0; i < 3; i++)
                CHECK_INT(outcome_of(i + 1), BACKEND_OK);
        CHECK_INT(nevents, 6);
        for (i = 0; i < 3; i++)
                job_free(j[i]);
        /* Reopened: what was published is there; the probe answers at once. */
        be = open_backend();
        CHECK_STR(get_version("a", NULL, NULL), "2.0.0");
        CHECK_STR(get_version("b", NULL, NULL), "1.0.0");
        be->ops->probe(be, probe_cb);
        CHECK_INT(probe_calls, 1);
        CHECK(probe_online);
        teardown();
}

static const struct uvtest tests[] = {
    {"numbering", test_numbering},
    {"order_kept", test_order_kept},
    {"get_aliases", test_get_aliases},
    {"blobs_shared", test_blobs_shared},
    {"redelivery", test_redelivery},
    {"missing_snapshot", test_missing_snapshot},
    {"close_and_probe", test_close_and_probe},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        return uvtest_main(argc, argv, "test_backend_local", tests);
}
