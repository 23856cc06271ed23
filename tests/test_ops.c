/*
 * test_ops.c — the operation table and its small handlers (daemon/ops.c)
 * against a real queue (store, writer, spool, scheduler, cache in a
 * temporary directory) and a fake backend that holds every delivery until
 * the test ends it. Requests come over a real connection (connection.c on a
 * socketpair) whose listener is a fake that hands them to ops_dispatch(), as
 * server.c does.
 *
 * Covered: an op not in the table gets unknown_op (its name sanitised); a
 * stopping daemon answers busy; status, ls, pause, retry, wait,
 * experiment.create and cache replies shaped as PROTOCOL.md says (every key,
 * counts that exclude the running from queued, errors and warnings) and
 * their refusals; waits answered when their jobs settle, at their timeout,
 * and forgotten when their client leaves; the cap of 4096 pending requests
 * per connection (busy for the next one, other connections unaffected).
 */
#include "ops.h"

#include <sys/socket.h>

#include "backend.h"
#include "cache.h"
#include "connection.h"
#include "daemon.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "scheduler.h"
#include "spool.h"
#include "store.h"
#include "testpeer.h"
#include "util.h"
#include "uvtest.h"
#include "writer.h"

#define KEY "0123456789abcdef0123456789abcdef"

/*
 * Known daemon bugs. Each test that shows one checks today's behaviour, so
 * that a fix makes it fail: then set the switch to 1 (or pass
 * -DFIXED_...=1) and the test checks what PROTOCOL.md says instead.
 */
#ifndef FIXED_PAUSE_REQUIRES_PAUSED
#define FIXED_PAUSE_REQUIRES_PAUSED 1 /* ops.c, op_pause: "paused" is not required */
#endif

/* main.c's; artifact.log is not exercised here. */
void daemon_log_finished(struct daemon *d)
{
        d->inflight_logs--;
}

static struct daemon d;

/* ---- a fake backend: holds deliveries until told ---- */

static struct fake {
        struct backend base;
        struct job *running[64];
        int nrunning;
        int ndelivered;
} fake;

static void fake_deliver(struct backend *be, struct job *job)
{
        fake.running[fake.nrunning++] = job;
        fake.ndelivered++;
}

static struct job *fake_take(int64_t id)
{
        int i;

        for (i = 0; i < fake.nrunning; i++) {
                if (fake.running[i]->id == id) {
                        struct job *j = fake.running[i];

                        fake.running[i] = fake.running[--fake.nrunning];
                        return j;
                }
        }
        fprintf(stderr, "fake: job %lld is not being delivered\n", (long long)id);
        check_failures++;
        return NULL;
}

static void fake_end(int64_t id, enum backend_outcome outcome, const char *msg)
{
        struct backend_sink *sink = fake.base.env.sink;
        struct job *job = fake_take(id);
        struct backend_result r;

        if (job == NULL)
                return;
        memset(&r, 0, sizeof(r));
        if (outcome == BACKEND_OK) {
                r.outcome = BACKEND_OK;
                r.retry_after_ms = -1;
                snprintf(r.assigned_version, sizeof(r.assigned_version), "1.0.0");
        } else {
                backend_result_set(&r, outcome, "http_400", "%s", msg);
        }
        sink->finished(sink, job, &r);
}

static bool fake_running(int64_t id)
{
        int i;

        for (i = 0; i < fake.nrunning; i++)
                if (fake.running[i]->id == id)
                        return true;
        return false;
}

static void fake_probe(struct backend *be, void (*done)(struct backend *, bool, const char *))
{
        done(be, true, NULL);
}

static int fake_version_exists(struct backend *be, const char *ws, const char *n, const char *v)
{
        return 0;
}

static void fake_get(struct backend *be, const char *ws, const char *name, const char *v,
                     backend_get_cb *cb, void *data)
{
        cb(data, FERRY_ENOTFOUND, "fake", NULL);
}

static void fake_fetch(struct backend *be, const cJSON *asset, backend_fetch_cb *cb, void *data)
{
        cb(data, FERRY_ENOTFOUND, "fake", NULL);
}

static void fake_abort(struct backend *be)
{
        struct backend_sink *sink = fake.base.env.sink;
        struct backend_result r;

        while (fake.nrunning > 0) {
                struct job *j = fake.running[--fake.nrunning];

                memset(&r, 0, sizeof(r));
                backend_result_set(&r, BACKEND_TRANSIENT, "cancelled", "cancelled");
                r.cancelled = true;
                sink->finished(sink, j, &r);
        }
}

static void fake_close(struct backend *be, void (*closed)(void *), void *data)
{
        closed(data);
}

static const struct backend_ops fake_ops = {
    .name = "fake",
    .deliver = fake_deliver,
    .probe = fake_probe,
    .version_exists = fake_version_exists,
    .get = fake_get,
    .fetch = fake_fetch,
    .abort = fake_abort,
    .close = fake_close,
};

/* ---- a fake listener: requests to the ops, the end of a client to ops_client_closed ---- */

static int clients_gone;

static void host_added(struct client_host *host, struct client *c)
{
}

static void host_gone(struct client_host *host, struct client *c)
{
        clients_gone++;
        ops_client_closed(c);
}

static void host_request(struct client_host *host, struct client *c, uint64_t id, const char *op,
                         cJSON *req, int *fds, int nfds)
{
        ops_dispatch(&d, c, id, op, req, fds, nfds);
}

static struct client_host host = {
    .backend = "fake", .added = host_added, .gone = host_gone, .request = host_request};

/* A connection that said hello. */
static void connect_peer(struct testpeer *p)
{
        int sv[2];
        cJSON *r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
                perror("socketpair");
                exit(1);
        }
        testpeer_init(p, sv[0]);
        CHECK(client_new(&host, sv[1], getuid(), getgid()) != NULL);
        r = testpeer_call(p, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
}

/* ---- the queue ---- */

struct add_op {
        struct writer_op op;
        const char *name;
        int64_t bytes;
        int64_t id;
        int rc;
        bool done;
};

static int add_run(struct store *st, struct writer_op *op)
{
        struct add_op *a = (struct add_op *)op;
        struct job_asset asset;
        struct job job;
        char token[33];
        int rc;

        if ((rc = store_experiment_insert(st, KEY, "ws", "proj", NULL)) != 0)
                return rc;
        memset(&job, 0, sizeof(job));
        memset(&asset, 0, sizeof(asset));
        util_random_hex(token, 16);
        job.token = token;
        job.experiment = KEY;
        job.workspace = "ws";
        job.project = "proj";
        job.name = (char *)a->name;
        job.type = "dataset";
        job.aliases = "[]";
        job.tags = "[]";
        job.bytes = a->bytes;
        asset.logical_path = "data.csv";
        asset.remote = true;
        asset.uri = "s3://b/data.csv";
        snprintf(asset.asset_id, sizeof(asset.asset_id), "%032d", 1);
        job.assets = &asset;
        job.nassets = 1;
        return store_job_insert(st, &job, &a->id);
}

static void add_done(struct writer_op *op, int rc)
{
        struct add_op *a = (struct add_op *)op;

        a->rc = rc;
        a->done = true;
}

/* Log a version through the writer (as op_log does) and kick the scheduler. */
static int64_t add_job(const char *name, int64_t bytes)
{
        struct add_op a;

        memset(&a, 0, sizeof(a));
        a.op.run = add_run;
        a.op.done = add_done;
        a.name = name;
        a.bytes = bytes;
        writer_submit(d.writer, &a.op);
        UVTEST_WAIT(a.done, 5000);
        CHECK_INT(a.rc, 0);
        scheduler_kick(d.scheduler);
        return a.id;
}

static const char *job_state(int64_t id)
{
        static char buf[16];

        if (store_job_state(d.store, id, buf, sizeof(buf)) != 0)
                snprintf(buf, sizeof(buf), "(none)");
        return buf;
}

static int scheduler_waiters(void)
{
        struct scheduler_status st;

        scheduler_status(d.scheduler, &st);
        return st.waiters;
}

static int stopped, writer_closed;

static void stopped_cb(void *data)
{
        stopped++;
}

static void writer_closed_cb(void *data)
{
        writer_closed++;
}

static void setup(void)
{
        struct scheduler_env senv;
        char err[512] = "";

        memset(&d, 0, sizeof(d));
        memset(&fake, 0, sizeof(fake));
        stopped = writer_closed = clients_gone = 0;
        d.loop = uvtest_loop;
        host.loop = uvtest_loop;
        host.queued = 0;
        snprintf(d.cfg.state_dir, sizeof(d.cfg.state_dir), "%s", uvtest_dir);
        snprintf(d.cfg.backend, sizeof(d.cfg.backend), "local");
        snprintf(d.cfg.workspace, sizeof(d.cfg.workspace), "alice");
        snprintf(d.cfg.project, sizeof(d.cfg.project), "general");
        d.cfg.max_jobs = 8;
        d.cfg.retry_base_ms = 100;
        d.cfg.retry_cap_ms = 200;
        d.cfg.retry_slow_after = 10;
        d.cfg.retry_slow_cap_ms = 1000;
        d.cfg.max_attempts = 30;
        d.cfg.retry_after_cap_ms = 1000;
        d.cfg.cache_budget = 1 << 20;
        if (store_open(&d.store, uvtest_path("queue.db"), false, NULL, err, sizeof(err)) != 0 ||
            spool_open(&d.spool, uvtest_loop, uvtest_path("spool"), uvtest_path("quarantine"),
                       5000000, 0, err, sizeof(err)) != 0 ||
            writer_open(&d.writer, uvtest_loop, uvtest_path("queue.db"), spool_sync, d.spool, err,
                        sizeof(err)) != 0 ||
            cache_open(&d.cache, uvtest_path("cache"), d.cfg.cache_budget, err, sizeof(err)) != 0) {
                fprintf(stderr, "setup: %s\n", err);
                exit(1);
        }
        senv.loop = uvtest_loop;
        senv.cfg = &d.cfg;
        senv.store = d.store;
        senv.writer = d.writer;
        senv.spool = d.spool;
        CHECK_INT(scheduler_new(&d.scheduler, &senv), 0);
        fake.base.ops = &fake_ops;
        fake.base.env.loop = uvtest_loop;
        fake.base.env.cfg = &d.cfg;
        fake.base.env.spool = d.spool;
        fake.base.env.cache = d.cache;
        fake.base.env.state_dir = uvtest_dir;
        fake.base.env.sink = scheduler_sink(d.scheduler);
        d.backend = &fake.base;
        scheduler_start(d.scheduler, d.backend);
}

static void teardown(void)
{
        scheduler_stop(d.scheduler, 0, stopped_cb, NULL);
        UVTEST_WAIT_INT(&stopped, 1, 5000);
        writer_close(d.writer, writer_closed_cb, NULL);
        UVTEST_WAIT_INT(&writer_closed, 1, 5000);
        scheduler_free(d.scheduler);
        UVTEST_WAIT(!spool_busy(d.spool), 5000);
        spool_close(d.spool);
        cache_close(d.cache);
        store_close(d.store);
}

/* The reply's keys, in order, as "a,b,c". */
static const char *keys_of(const cJSON *r)
{
        static char buf[1024];
        const cJSON *it;
        size_t off = 0;

        buf[0] = '\0';
        cJSON_ArrayForEach(it, r)
        {
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", off ? "," : "",
                                        it->string);
                if (off >= sizeof(buf))
                        break;
        }
        return buf;
}

static double num(const cJSON *r, const char *key)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, key);

        return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static const char *str(const cJSON *r, const char *key)
{
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, key));

        return s ? s : "(not a string)";
}

/* ---- tests ---- */

static void test_unknown_op(void)
{
        struct testpeer p;
        cJSON *r;

        setup();
        connect_peer(&p);
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"frobnicate\"}");
        CHECK_STR(testpeer_code(r), "unknown_op");
        CHECK_INT(testpeer_id(r), 2);
        CHECK_STR(testpeer_message(r), "unknown operation \"frobnicate\"");
        cJSON_Delete(r);
        /* A name with a control character is quoted escaped, never raw. */
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"bad\\u0007name\"}");
        CHECK_STR(testpeer_code(r), "unknown_op");
        CHECK(strchr(testpeer_message(r), '\a') == NULL);
        CHECK(strncmp(testpeer_message(r), "unknown operation \"bad\\", 23) == 0);
        cJSON_Delete(r);
        /* While stopping, every request is busy. */
        d.stopping = true;
        r = testpeer_call(&p, "{\"id\":4,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_STR(testpeer_message(r), "ferryd is stopping");
        cJSON_Delete(r);
        d.stopping = false;
        testpeer_close(&p);
        UVTEST_WAIT_INT(&clients_gone, 1, 2000);
        teardown();
}

/* Jobs in every state: q1 and q2 running, q3 queued (held by a pause), f1 failed, o1 done. */
static int64_t q1, q2, q3, f1, o1;

static void populate(void)
{
        q1 = add_job("q1", 100);
        q2 = add_job("q2", 200);
        f1 = add_job("f1", 0);
        o1 = add_job("o1", 0);
        UVTEST_WAIT_INT(&fake.ndelivered, 4, 2000);
        fake_end(f1, BACKEND_PERMANENT, "HTTP 400: the artifact name is taken");
        fake_end(o1, BACKEND_OK, NULL);
        UVTEST_WAIT(strcmp(job_state(f1), "failed") == 0, 2000);
        UVTEST_WAIT(strcmp(job_state(o1), "done") == 0, 2000);
        scheduler_set_paused(d.scheduler, true);
        q3 = add_job("q3", 400);
        uvtest_run_for(20);
        CHECK(!fake_running(q3));
}

static void test_status(void)
{
        struct testpeer p, w;
        cJSON *r, *e;

        setup();
        populate();
        fake.base.env.sink->sent(fake.base.env.sink, 6000);
        connect_peer(&p);
        connect_peer(&w);
        /* A wait from another client counts as a waiter. */
        testpeer_sendf(&w, "{\"id\":5,\"op\":\"wait\",\"jobs\":[%lld]}", (long long)q1);
        UVTEST_WAIT(scheduler_waiters() == 1, 2000);
        d.notices.quarantined = 2;
        snprintf(d.notices.quarantine, sizeof(d.notices.quarantine), "/state/quarantine/T1");
        snprintf(d.notices.damaged, sizeof(d.notices.damaged), "the queue was damaged");

        r = testpeer_call(&p, "{\"id\":9,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r),
                  "id,ok,backend,online,paused,offline_since,last_error,queued,"
                  "running,failed,done,cancelled,bytes_queued,bytes_sent,rate_bps,"
                  "spool_bytes,spool_budget,spool_min_free,spool_free,waiters,errors,warnings");
        CHECK_STR(str(r, "backend"), "fake");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "online")));
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "paused")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(r, "offline_since")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(r, "last_error")));
        CHECK_INT(num(r, "queued"), 1); /* q3: the running ones are not counted again */
        CHECK_INT(num(r, "running"), 2);
        CHECK_INT(num(r, "failed"), 1);
        CHECK_INT(num(r, "done"), 1);
        CHECK_INT(num(r, "cancelled"), 0);
        CHECK_INT(num(r, "bytes_queued"), 700); /* running ones included */
        CHECK_INT(num(r, "bytes_sent"), 6000);
        CHECK_INT(num(r, "rate_bps"), 100);
        CHECK_INT(num(r, "spool_bytes"), 0);
        CHECK_INT(num(r, "spool_budget"), 5000000);
        CHECK_INT(num(r, "waiters"), 1);
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r, "errors")), 1);
        e = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "errors"), 0);
        CHECK_STR(keys_of(e), "job,name,code,message");
        CHECK_INT(num(e, "job"), f1);
        CHECK_STR(str(e, "name"), "f1");
        CHECK_STR(str(e, "code"), "http_400");
        CHECK_STR(str(e, "message"), "HTTP 400: the artifact name is taken");
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r, "warnings")), 2);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "warnings"), 0)),
                  "the queue was damaged");
        CHECK(
            strstr(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "warnings"), 1))
                       ?: "",
                   "moved to /state/quarantine/T1, not deleted: `ferry recover` re-queues them") !=
            NULL);
        cJSON_Delete(r);

        /* Unknown fields are refused. */
        r = testpeer_call(&p, "{\"id\":10,\"op\":\"status\",\"verbose\":true}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r), "unknown field \"verbose\"");
        cJSON_Delete(r);

        /* The waiter's client leaves: its wait is forgotten. */
        testpeer_close(&w);
        UVTEST_WAIT(scheduler_waiters() == 0, 2000);
        testpeer_close(&p);
        teardown();
}

/* The ids of an ls reply's items, as "1,2,3". */
static const char *item_ids(const cJSON *r)
{
        static char buf[256];
        const cJSON *it;
        size_t off = 0;

        buf[0] = '\0';
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(r, "items"))
        {
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%lld", off ? "," : "",
                                        (long long)num(it, "job"));
                if (off >= sizeof(buf))
                        break;
        }
        return buf;
}

static const char *ids(int n, ...)
{
        static char buf[256];
        size_t off = 0;
        va_list ap;
        int i;

        buf[0] = '\0';
        va_start(ap, n);
        for (i = 0; i < n; i++)
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%lld", i ? "," : "",
                                        (long long)va_arg(ap, int64_t));
        va_end(ap);
        return buf;
}

static void test_ls(void)
{
        struct testpeer p;
        const cJSON *it;
        char want[256];
        cJSON *r;

        setup();
        populate();
        connect_peer(&p);
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"ls\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r), "id,ok,items,truncated");
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(r, "truncated")));
        /* active: queued (running included) and failed, oldest first. */
        snprintf(want, sizeof(want), "%s", ids(4, q1, q2, f1, q3));
        CHECK_STR(item_ids(r), want);
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(r, "items"))
        {
                CHECK_STR(keys_of(it), "job,name,type,version,state,attempts,next_attempt,bytes,"
                                       "assets,experiment,created,error");
                CHECK_STR(str(it, "type"), "dataset");
                CHECK_STR(str(it, "experiment"), KEY);
                CHECK_INT(num(it, "assets"), 1);
                CHECK(cJSON_IsNull(cJSON_GetObjectItem(it, "version")));
                if (num(it, "job") == f1) {
                        CHECK_STR(str(it, "state"), "failed");
                        CHECK(cJSON_IsNull(cJSON_GetObjectItem(it, "next_attempt")));
                        CHECK_STR(str(it, "error"), "HTTP 400: the artifact name is taken");
                } else {
                        CHECK_STR(str(it, "state"), "queued"); /* running shows as queued */
                        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(it, "next_attempt")));
                        CHECK(cJSON_IsNull(cJSON_GetObjectItem(it, "error")));
                }
        }
        CHECK_INT(num(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "items"), 3), "bytes"), 400);
        cJSON_Delete(r);

        r = testpeer_call(&p, "{\"id\":3,\"op\":\"ls\",\"state\":\"done\"}");
        snprintf(want, sizeof(want), "%s", ids(1, o1));
        CHECK_STR(item_ids(r), want);
        CHECK_STR(str(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "items"), 0), "version"), "1.0.0");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":4,\"op\":\"ls\",\"state\":\"all\"}");
        snprintf(want, sizeof(want), "%s", ids(5, q1, q2, f1, o1, q3));
        CHECK_STR(item_ids(r), want);
        cJSON_Delete(r);
        /* The newest `limit`, oldest first. */
        r = testpeer_call(&p, "{\"id\":5,\"op\":\"ls\",\"state\":\"all\",\"limit\":2}");
        snprintf(want, sizeof(want), "%s", ids(2, o1, q3));
        CHECK_STR(item_ids(r), want);
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":6,\"op\":\"ls\",\"state\":\"failed\"}");
        snprintf(want, sizeof(want), "%s", ids(1, f1));
        CHECK_STR(item_ids(r), want);
        cJSON_Delete(r);

        /* Refusals. */
        r = testpeer_call(&p, "{\"id\":7,\"op\":\"ls\",\"limit\":0}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r), "limit must be between 1 and 100000");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":8,\"op\":\"ls\",\"limit\":100001}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":9,\"op\":\"ls\",\"state\":\"running\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r),
                  "state must be one of active, queued, failed, done, cancelled, all");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":10,\"op\":\"ls\",\"limit\":\"ten\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

static void test_pause(void)
{
        struct testpeer p;
        int64_t j;
        cJSON *r;

        setup();
        connect_peer(&p);
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"pause\",\"paused\":true}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r), "id,ok,paused");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "paused")));
        cJSON_Delete(r);
        j = add_job("held", 0);
        uvtest_run_for(100);
        CHECK_INT(fake.ndelivered, 0);
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"status\"}");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "paused")));
        CHECK_INT(num(r, "queued"), 1);
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":4,\"op\":\"pause\",\"paused\":false}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(r, "paused")));
        cJSON_Delete(r);
        UVTEST_WAIT(fake_running(j), 2000);
        /* paused is required (PROTOCOL.md), and a boolean. */
        r = testpeer_call(&p, "{\"id\":5,\"op\":\"pause\"}");
#if FIXED_PAUSE_REQUIRES_PAUSED
        CHECK_STR(testpeer_code(r), "invalid_argument");
#else
        /* Known bug: op_pause passes `true` to proto_get_bool() as if it meant "required", but
         * that argument is the default: a pause without "paused" pauses. This checks today's
         * behaviour so that the fix is noticed: then set FIXED_PAUSE_REQUIRES_PAUSED to 1. */
        CHECK_STR(testpeer_code(r), "ok");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "paused")));
        fprintf(stderr, "test_ops.pause: known bug: {\"op\":\"pause\"} without \"paused\" is "
                        "accepted (and pauses)\n");
#endif
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":6,\"op\":\"pause\",\"paused\":1}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

static void test_retry(void)
{
        struct testpeer p;
        char req[128], msg[128];
        int64_t a, b, c;
        cJSON *r;

        setup();
        a = add_job("ra", 0);
        b = add_job("rb", 0);
        c = add_job("rc", 0);
        UVTEST_WAIT_INT(&fake.ndelivered, 3, 2000);
        fake_end(a, BACKEND_PERMANENT, "refused");
        fake_end(b, BACKEND_PERMANENT, "refused");
        UVTEST_WAIT(strcmp(job_state(b), "failed") == 0, 2000);
        connect_peer(&p);

        /* One failed job back to queued: it is delivered again. */
        snprintf(req, sizeof(req), "{\"id\":2,\"op\":\"retry\",\"job\":%lld}", (long long)a);
        r = testpeer_call(&p, req);
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r), "id,ok,requeued");
        CHECK_INT(num(r, "requeued"), 1);
        cJSON_Delete(r);
        CHECK_STR(job_state(a), "queued");
        UVTEST_WAIT(fake_running(a), 2000);
        /* A job that is not failed. */
        snprintf(req, sizeof(req), "{\"id\":3,\"op\":\"retry\",\"job\":%lld}", (long long)c);
        r = testpeer_call(&p, req);
        CHECK_STR(testpeer_code(r), "not_found");
        snprintf(msg, sizeof(msg), "job %lld is not a failed job", (long long)c);
        CHECK_STR(testpeer_message(r), msg);
        cJSON_Delete(r);
        /* All of them. */
        fake_end(a, BACKEND_PERMANENT, "refused");
        UVTEST_WAIT(strcmp(job_state(a), "failed") == 0, 2000);
        r = testpeer_call(&p, "{\"id\":4,\"op\":\"retry\",\"all\":true}");
        CHECK_INT(num(r, "requeued"), 2);
        cJSON_Delete(r);
        UVTEST_WAIT(fake_running(a) && fake_running(b), 2000);
        r = testpeer_call(&p, "{\"id\":5,\"op\":\"retry\",\"all\":true}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_INT(num(r, "requeued"), 0);
        cJSON_Delete(r);
        /* Exactly one of job and all. */
        r = testpeer_call(&p, "{\"id\":6,\"op\":\"retry\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r), "give either \"job\" or \"all\": true");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":7,\"op\":\"retry\",\"job\":1,\"all\":true}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

static void test_wait(void)
{
        struct testpeer p;
        char req[160];
        int64_t a, b, start;
        cJSON *r;

        setup();
        a = add_job("wa", 0);
        b = add_job("wb", 0);
        UVTEST_WAIT_INT(&fake.ndelivered, 2, 2000);
        fake_end(b, BACKEND_PERMANENT, "refused");
        UVTEST_WAIT(strcmp(job_state(b), "failed") == 0, 2000);
        connect_peer(&p);

        /* Timeout: not drained, one pending. */
        start = uvtest_mono_ms();
        snprintf(req, sizeof(req), "{\"id\":2,\"op\":\"wait\",\"jobs\":[%lld],\"timeout_ms\":50}",
                 (long long)a);
        r = testpeer_call(&p, req);
        CHECK_STR(keys_of(r), "id,ok,drained,pending,failed,warnings");
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(r, "drained")));
        CHECK_INT(num(r, "pending"), 1);
        CHECK_INT(num(r, "failed"), 0);
        CHECK(uvtest_mono_ms() - start >= 50);
        cJSON_Delete(r);
        /* Nothing to wait for, or only a failed job: at once. */
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"wait\",\"jobs\":[]}");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "drained")));
        cJSON_Delete(r);
        snprintf(req, sizeof(req), "{\"id\":4,\"op\":\"wait\",\"jobs\":[%lld,%lld,123456]}",
                 (long long)b, (long long)b);
        r = testpeer_call(&p, req);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "drained")));
        CHECK_INT(num(r, "failed"), 1);
        cJSON_Delete(r);
        /* Answered when the job settles; the whole queue's wait then too. */
        snprintf(req, sizeof(req), "{\"id\":5,\"op\":\"wait\",\"jobs\":[%lld]}", (long long)a);
        testpeer_send(&p, req, NULL, 0);
        testpeer_send(&p, "{\"id\":6,\"op\":\"wait\"}", NULL, 0);
        UVTEST_WAIT(scheduler_waiters() == 2, 2000);
        CHECK(testpeer_recv(&p, 50) == NULL);
        fake_end(a, BACKEND_OK, NULL);
        r = testpeer_recv(&p, 2000);
        CHECK_INT(testpeer_id(r), 5);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "drained")));
        CHECK_INT(num(r, "failed"), 0);
        cJSON_Delete(r);
        r = testpeer_recv(&p, 2000);
        CHECK_INT(testpeer_id(r), 6);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "drained")));
        CHECK_INT(num(r, "pending"), 0);
        CHECK_INT(num(r, "failed"), 1); /* the queue's failed count */
        cJSON_Delete(r);
        /* Refusals. */
        r = testpeer_call(&p, "{\"id\":7,\"op\":\"wait\",\"jobs\":\"all\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r), "field \"jobs\" must be an array of ids");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":8,\"op\":\"wait\",\"jobs\":[1.5]}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

/* 4096 requests may wait for their replies on one connection; one more is busy. */
static void test_pending_cap(void)
{
        struct testpeer p, other;
        char req[128];
        int64_t j;
        int i, drained = 0;
        cJSON *r;

        setup();
        j = add_job("cap", 0);
        UVTEST_WAIT(fake_running(j), 2000);
        connect_peer(&p);
        connect_peer(&other);
        for (i = 0; i < OPS_MAX_PENDING; i++) {
                snprintf(req, sizeof(req), "{\"id\":%d,\"op\":\"wait\",\"jobs\":[%lld]}", 100 + i,
                         (long long)j);
                CHECK_INT(testpeer_send(&p, req, NULL, 0), 0);
        }
        UVTEST_WAIT(scheduler_waiters() == OPS_MAX_PENDING, 5000);
        CHECK(testpeer_recv(&p, 20) == NULL);
        /* One more on the same connection is refused; the request is not kept. */
        r = testpeer_call(&p, "{\"id\":99,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_INT(testpeer_id(r), 99);
        CHECK_STR(testpeer_message(r), "this connection has 4096 requests waiting for replies; "
                                       "read them before sending more");
        cJSON_Delete(r);
        CHECK_INT(scheduler_waiters(), OPS_MAX_PENDING);
        /* Another connection is not affected. */
        r = testpeer_call(&other, "{\"id\":2,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_INT(num(r, "waiters"), OPS_MAX_PENDING);
        cJSON_Delete(r);
        /* The job settles: every wait is answered, and the connection takes requests again. */
        fake_end(j, BACKEND_OK, NULL);
        for (i = 0; i < OPS_MAX_PENDING; i++) {
                r = testpeer_recv(&p, 5000);
                drained += cJSON_IsTrue(cJSON_GetObjectItem(r, "drained"));
                cJSON_Delete(r);
        }
        CHECK_INT(drained, OPS_MAX_PENDING);
        r = testpeer_call(&p, "{\"id\":100000,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_INT(num(r, "waiters"), 0);
        cJSON_Delete(r);

        /* A client with many waits leaves: they are all forgotten, no reply is attempted. */
        j = add_job("cap", 0);
        UVTEST_WAIT(fake_running(j), 2000);
        for (i = 0; i < 100; i++) {
                snprintf(req, sizeof(req), "{\"id\":%d,\"op\":\"wait\",\"jobs\":[%lld]}", 200 + i,
                         (long long)j);
                testpeer_send(&p, req, NULL, 0);
        }
        UVTEST_WAIT(scheduler_waiters() == 100, 2000);
        testpeer_close(&p);
        UVTEST_WAIT(scheduler_waiters() == 0, 2000);
        fake_end(j, BACKEND_OK, NULL);
        UVTEST_WAIT(strcmp(job_state(j), "done") == 0, 2000);
        testpeer_close(&other);
        UVTEST_WAIT_INT(&clients_gone, 2, 2000);
        teardown();
}

static void test_experiment_create(void)
{
        struct testpeer p;
        const char *key;
        cJSON *r;

        setup();
        connect_peer(&p);
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"experiment.create\",\"name\":\"run-7\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r), "id,ok,key,workspace,project");
        key = str(r, "key");
        CHECK_INT(strlen(key), 32);
        CHECK_INT(strspn(key, "0123456789abcdef"), 32);
        CHECK_STR(str(r, "workspace"), "alice"); /* the daemon's defaults */
        CHECK_STR(str(r, "project"), "general");
        cJSON_Delete(r);
        /* A given key is recorded; given again, the recorded workspace wins. */
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"experiment.create\",\"key\":\"" KEY
                              "\",\"workspace\":\"w1\",\"project\":\"p1\"}");
        CHECK_STR(str(r, "key"), KEY);
        CHECK_STR(str(r, "workspace"), "w1");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":4,\"op\":\"experiment.create\",\"key\":\"" KEY
                              "\",\"workspace\":\"w2\"}");
        CHECK_STR(str(r, "workspace"), "w1");
        CHECK_STR(str(r, "project"), "p1");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":5,\"op\":\"experiment.create\",\"key\":\"short\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        CHECK_STR(testpeer_message(r), "experiment key must be 32 to 50 letters and digits");
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":6,\"op\":\"experiment.create\",\"workspace\":\"a/b\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

static void test_cache(void)
{
        struct testpeer p;
        cJSON *r;

        setup();
        connect_peer(&p);
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"cache\",\"clear\":true}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(keys_of(r), "id,ok,path,bytes,budget,blobs,freed");
        CHECK_STR(str(r, "path"), uvtest_path("cache"));
        CHECK_INT(num(r, "bytes"), 0);
        CHECK_INT(num(r, "budget"), 1 << 20);
        CHECK_INT(num(r, "blobs"), 0);
        CHECK_INT(num(r, "freed"), 0);
        cJSON_Delete(r);
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"cache\",\"clear\":\"yes\"}");
        CHECK_STR(testpeer_code(r), "invalid_argument");
        cJSON_Delete(r);
        testpeer_close(&p);
        teardown();
}

static const struct uvtest tests[] = {
    {"unknown_op", test_unknown_op},
    {"status", test_status},
    {"ls", test_ls},
    {"pause", test_pause},
    {"retry", test_retry},
    {"wait", test_wait},
    {"pending_cap", test_pending_cap},
    {"experiment_create", test_experiment_create},
    {"cache", test_cache},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        return uvtest_main(argc, argv, "test_ops", tests);
}
