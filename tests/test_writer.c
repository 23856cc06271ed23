/*
 * test_writer.c — the queue's one writer (daemon/writer.c) on a real libuv
 * loop and a real queue database: operations run in submission order, their
 * done callbacks run in the same order once the batch is committed, a failing
 * operation is rolled back alone, whatever arrives while a batch commits
 * forms the next batch (group commit) — also what done callbacks submit —
 * the spool is synced once per batch that asks for it (a failed sync fails
 * the batch), batches that answer a client commit with synchronous=FULL and
 * the others with NORMAL, and writer_close finishes everything first, even when called
 * from a done callback. The loop is
 * closed at the end with no handle or request left, and no file descriptor
 * may be left open.
 */
#include "writer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "job.h"
#include "log.h"
#include "store.h"

#define MAX_OPS 1200

static char tmpdir[] = "/tmp/ferry-test-writer-XXXXXX";
static char dbpath[600];
static uv_loop_t loop;
static struct store *reader; /* the loop thread's connection, as ferryd has */

/* One test operation: writes an experiment row of its own. */
struct test_op {
        struct writer_op op; /* first: the writer hands this back */
        int index;
        int fail;     /* run() returns this after its write (0: success) */
        bool bad_sql; /* run() also inserts a job of an unknown experiment */
        char key[33];
        int rc;          /* what done() was given */
        bool done;       /* done() ran */
        bool visible;    /* in done(): the row is visible to another connection */
        bool closes;     /* done() calls writer_close (as ferryd's last log at shutdown does) */
        int synchronous; /* run(): SQLite's synchronous level of its batch */
        struct test_op *then[2]; /* done() submits these (a step that leads to the next) */
        struct writer *w;
};

/* Written by run() on the thread pool (one batch at a time), read on the loop afterwards. */
static int run_order[MAX_OPS], nrun;
static int done_order[MAX_OPS], ndone;
static int syncs, sync_result, closed_calls, done_at_close, key_seq;

static void reset_order(void)
{
        nrun = ndone = 0;
}

static int test_run(struct store *st, struct writer_op *op)
{
        struct test_op *t = (struct test_op *)op;
        int rc;

        if (nrun < MAX_OPS)
                run_order[nrun++] = t->index;
        t->synchronous = store_synchronous(st);
        rc = store_experiment_insert(st, t->key, "ws", "proj", NULL);
        if (rc == 0 && t->bad_sql) {
                struct job job;
                int64_t id;

                memset(&job, 0, sizeof(job));
                job.token = "00000000000000000000000000000000";
                job.experiment = "ffffffffffffffffffffffffffffffff"; /* unknown: foreign key */
                job.workspace = job.project = job.name = job.type = "x";
                job.aliases = job.tags = "[]";
                rc = store_job_insert(st, &job, &id);
        }
        return rc != 0 ? rc : t->fail;
}

static void test_closed_cb(void *data)
{
        (void)data;
        closed_calls++;
        done_at_close = ndone;
}

static void test_done(struct writer_op *op, int rc)
{
        struct test_op *t = (struct test_op *)op;

        t->rc = rc;
        t->done = true;
        t->visible = store_experiment_get(reader, t->key, NULL, NULL) == 0;
        if (ndone < MAX_OPS)
                done_order[ndone++] = t->index;
        if (t->then[0] != NULL)
                writer_submit(t->w, &t->then[0]->op);
        if (t->then[1] != NULL)
                writer_submit(t->w, &t->then[1]->op);
        if (t->closes)
                writer_close(t->w, test_closed_cb, NULL);
}

static int test_sync(void *data)
{
        (void)data;
        syncs++;
        return sync_result;
}

static void op_init(struct test_op *t, int index, struct writer *w)
{
        memset(t, 0, sizeof(*t));
        t->index = index;
        t->w = w;
        t->rc = 12345;
        t->op.run = test_run;
        t->op.done = test_done;
        /* Unique across the whole test: every operation writes a row of its own. */
        snprintf(t->key, sizeof(t->key), "%08x%024x", (unsigned)getpid() & 0xffff, ++key_seq);
}

static struct writer *open_writer(void)
{
        struct writer *w = NULL;
        char err[512] = "";

        if (writer_open(&w, &loop, dbpath, test_sync, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "writer_open: %s\n", err);
                check_failures++;
                return NULL;
        }
        return w;
}

/* "0,1,2" of the first n entries. */
static const char *order_str(const int *v, int n)
{
        static char buf[2][4096];
        static int next;
        char *out = buf[next++ % 2];
        size_t off = 0;
        int i;

        out[0] = '\0';
        for (i = 0; i < n && off < sizeof(buf[0]); i++)
                off +=
                    (size_t)snprintf(out + off, sizeof(buf[0]) - off, "%s%d", i ? "," : "", v[i]);
        return out;
}

static bool ascending(const int *v, int n, int first)
{
        int i;

        for (i = 0; i < n; i++)
                if (v[i] != first + i)
                        return false;
        return true;
}

static void close_writer(struct writer *w)
{
        int before = closed_calls;

        writer_close(w, test_closed_cb, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(closed_calls, before + 1);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_order_and_rollback(void)
{
        struct writer *w = open_writer();
        struct test_op ops[6];
        struct store_counts c;
        uint64_t batches = 99, nops = 99;
        int i;

        if (w == NULL)
                return;
        reset_order();
        writer_stats(w, &batches, &nops);
        CHECK_INT(batches, 0);
        CHECK_INT(nops, 0);
        CHECK(writer_idle(w));
        for (i = 0; i < 6; i++)
                op_init(&ops[i], i, w);
        ops[3].fail = FERRY_EINVAL; /* writes its row, then fails: the row must go */
        ops[4].bad_sql = true;      /* a statement fails inside the batch */
        /* ops[0] starts a batch at once; 1..5 arrive while it commits: the next batch. */
        for (i = 0; i < 6; i++)
                writer_submit(w, &ops[i].op);
        CHECK(!writer_idle(w));
        CHECK(!ops[0].done); /* never before the commit, never inline */
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(writer_idle(w));

        CHECK_STR(order_str(run_order, nrun), "0,1,2,3,4,5");
        CHECK_STR(order_str(done_order, ndone), "0,1,2,3,4,5");
        for (i = 0; i < 6; i++)
                CHECK(ops[i].done);
        CHECK_INT(ops[0].rc, 0);
        CHECK_INT(ops[1].rc, 0);
        CHECK_INT(ops[2].rc, 0);
        CHECK_INT(ops[3].rc, FERRY_EINVAL);
        CHECK(ops[4].rc < 0);
        CHECK_INT(ops[5].rc, 0);
        /* Committed when done() ran: another connection saw each row... */
        CHECK(ops[0].visible && ops[1].visible && ops[2].visible && ops[5].visible);
        /* ...except those of the failed operations, rolled back alone. */
        CHECK(!ops[3].visible);
        CHECK(!ops[4].visible);
        CHECK_INT(store_experiment_get(reader, ops[3].key, NULL, NULL), FERRY_ENOTFOUND);
        CHECK_INT(store_experiment_get(reader, ops[4].key, NULL, NULL), FERRY_ENOTFOUND);
        CHECK_INT(store_counts(reader, &c), 0);
        CHECK_INT(c.queued, 0);
        writer_stats(w, &batches, &nops);
        CHECK_INT(batches, 2);
        CHECK_INT(nops, 6);
        CHECK_INT(syncs, 0); /* nobody asked */
        close_writer(w);
}

static struct writer *burst_writer;
static struct test_op *burst_ops;

static void burst_close_cb(uv_handle_t *h)
{
        (void)h;
}

/* From the loop: 1,000 operations at once, as 1,000 clients logging together. */
static void burst_timer_cb(uv_timer_t *t)
{
        int i;

        for (i = 0; i < 1000; i++)
                writer_submit(burst_writer, &burst_ops[i].op);
        uv_close((uv_handle_t *)t, burst_close_cb);
}

static void test_group_commit(void)
{
        struct writer *w = open_writer();
        uv_timer_t timer;
        uint64_t batches = 0, nops = 0;
        int i, visible = 0, ok = 0;

        burst_ops = calloc(1000, sizeof(*burst_ops));
        if (w == NULL || burst_ops == NULL) {
                free(burst_ops);
                if (w != NULL)
                        close_writer(w);
                return;
        }
        reset_order();
        for (i = 0; i < 1000; i++)
                op_init(&burst_ops[i], i, w);
        burst_writer = w;
        CHECK_INT(uv_timer_init(&loop, &timer), 0);
        CHECK_INT(uv_timer_start(&timer, burst_timer_cb, 0, 0), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        writer_stats(w, &batches, &nops);
        CHECK_INT(nops, 1000);
        /* The first starts a batch alone; the 999 that came while it committed share one. */
        CHECK_INT(batches, 2);
        CHECK(batches * 100 < nops);
        CHECK_INT(nrun, 1000);
        CHECK_INT(ndone, 1000);
        CHECK(ascending(run_order, nrun, 0));
        CHECK(ascending(done_order, ndone, 0));
        for (i = 0; i < 1000; i++) {
                visible += burst_ops[i].visible;
                ok += burst_ops[i].rc == 0;
        }
        CHECK_INT(visible, 1000);
        CHECK_INT(ok, 1000);
        close_writer(w);
        free(burst_ops);
        burst_ops = NULL;
}

static void test_sync_spool(void)
{
        struct writer *w = open_writer();
        struct test_op ops[9];
        uint64_t batches = 0, nops = 0;
        int i;

        if (w == NULL)
                return;
        reset_order();
        syncs = 0;
        sync_result = 0;
        for (i = 0; i < 9; i++)
                op_init(&ops[i], i, w);
        /* Batch 1: [0]; batch 2: [1 sync, 2 sync, 3]: one sync for the batch. */
        ops[1].op.sync_spool = true;
        ops[2].op.sync_spool = true;
        for (i = 0; i < 4; i++)
                writer_submit(w, &ops[i].op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(syncs, 1);
        for (i = 0; i < 4; i++)
                CHECK_INT(ops[i].rc, 0);
        /* A batch that does not ask is not synced. */
        writer_submit(w, &ops[4].op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(syncs, 1);
        CHECK_INT(ops[4].rc, 0);

        /* The sync fails (disk full): nothing of that batch is committed, every op is told. */
        sync_result = FERRY_ENOSPC;
        ops[6].op.sync_spool = true;
        writer_submit(w, &ops[5].op); /* batch [5], no sync asked: commits */
        writer_submit(w, &ops[6].op); /* batch [6 sync, 7]: the sync fails */
        writer_submit(w, &ops[7].op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(syncs, 2);
        CHECK_INT(ops[5].rc, 0);
        CHECK(ops[5].visible);
        CHECK_INT(ops[6].rc, FERRY_ENOSPC);
        CHECK_INT(ops[7].rc, FERRY_ENOSPC);
        CHECK(ops[6].done && !ops[6].visible);
        CHECK(ops[7].done && !ops[7].visible);
        CHECK_INT(store_experiment_get(reader, ops[7].key, NULL, NULL), FERRY_ENOTFOUND);
        /* The writer goes on once the disk has room again. */
        sync_result = 0;
        ops[8].op.sync_spool = true;
        writer_submit(w, &ops[8].op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(ops[8].rc, 0);
        CHECK(ops[8].visible);
        CHECK_INT(syncs, 3);
        CHECK_STR(order_str(done_order, ndone), "0,1,2,3,4,5,6,7,8");
        writer_stats(w, &batches, &nops);
        CHECK_INT(batches, 6); /* [0] [1 2 3] [4] [5] [6 7] [8] */
        CHECK_INT(nops, 9);
        close_writer(w);
}

/* Operations submitted by done callbacks arrive while the writer is busy: they share a batch. */
/* Batches that answer a client commit with synchronous=FULL, delivery outcomes with NORMAL. */
static void test_durability_levels(void)
{
        struct writer *w = open_writer();
        struct test_op a, b, c, d;

        if (w == NULL)
                return;
        op_init(&a, 0, w); /* an outcome, alone */
        writer_submit(w, &a.op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(a.done);
        CHECK_INT(a.rc, 0);
        CHECK_INT(a.synchronous, 1);
        op_init(&b, 1, w); /* an acknowledged write, alone */
        b.op.durable = true;
        writer_submit(w, &b.op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(b.done);
        CHECK_INT(b.synchronous, 2);
        /* A log (its spool synced) and an outcome that arrive while a batch commits share
         * the next batch: durable. */
        op_init(&a, 2, w);
        op_init(&c, 3, w);
        op_init(&d, 4, w);
        c.op.sync_spool = true;
        writer_submit(w, &a.op);
        writer_submit(w, &c.op);
        writer_submit(w, &d.op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(d.done);
        CHECK_INT(a.synchronous, 1);
        CHECK_INT(c.synchronous, 2);
        CHECK_INT(d.synchronous, 2);
        op_init(&a, 5, w); /* and back */
        writer_submit(w, &a.op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(a.done);
        CHECK_INT(a.synchronous, 1);
        close_writer(w);
}

static void test_submit_from_done(void)
{
        struct writer *w = open_writer();
        struct test_op ops[6];
        uint64_t batches = 0, nops = 0;
        int i;

        if (w == NULL)
                return;
        reset_order();
        for (i = 0; i < 6; i++)
                op_init(&ops[i], i, w);
        /* [0] then [1, 2]; 1 and 2 each submit two more: [3, 4, 5] form one batch. */
        ops[1].then[0] = &ops[3];
        ops[1].then[1] = &ops[4];
        ops[2].then[0] = &ops[5];
        for (i = 0; i < 3; i++)
                writer_submit(w, &ops[i].op);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_STR(order_str(run_order, nrun), "0,1,2,3,4,5");
        CHECK_STR(order_str(done_order, ndone), "0,1,2,3,4,5");
        for (i = 0; i < 6; i++) {
                CHECK_INT(ops[i].rc, 0);
                CHECK(ops[i].visible);
        }
        writer_stats(w, &batches, &nops);
        CHECK_INT(nops, 6);
        CHECK_INT(batches, 3); /* [0] [1 2] [3 4 5] */
        close_writer(w);
}

static void test_close_flushes(void)
{
        struct writer *w = open_writer();
        struct test_op ops[5];
        int i;

        if (w == NULL)
                return;
        reset_order();
        closed_calls = 0;
        for (i = 0; i < 5; i++) {
                op_init(&ops[i], i, w);
                writer_submit(w, &ops[i].op);
        }
        /* Closing at once: everything submitted still runs, then closed() comes, once. */
        writer_close(w, test_closed_cb, NULL);
        CHECK_INT(closed_calls, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(closed_calls, 1);
        CHECK_INT(done_at_close, 5);
        for (i = 0; i < 5; i++) {
                CHECK_INT(ops[i].rc, 0);
                CHECK(ops[i].visible);
        }
        CHECK_STR(order_str(done_order, ndone), "0,1,2,3,4");

        /* An idle writer closes at once. */
        w = open_writer();
        if (w != NULL) {
                writer_close(w, test_closed_cb, NULL);
                uv_run(&loop, UV_RUN_DEFAULT);
                CHECK_INT(closed_calls, 2);
        }
        /* A writer on a database that cannot be opened. */
        {
                char err[512] = "";

                w = (struct writer *)&w;
                CHECK(writer_open(&w, &loop, "/nonexistent-dir/q.db", test_sync, NULL, err,
                                  sizeof(err)) < 0);
                CHECK(w == NULL);
                CHECK(err[0] != '\0');
        }
}

/*
 * ferryd closes the writer from a done callback: the last log that commits
 * during shutdown calls daemon_log_finished() -> daemon_close_writer() ->
 * writer_close(). The writer must not be touched after it is freed. Run in
 * a child process so that a sanitizer's abort is reported as one failed
 * check rather than ending this test.
 */
static void test_close_from_done(void)
{
        pid_t pid;
        int status = 0;

        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "fork: %s\n", strerror(errno));
                check_failures++;
                return;
        }
        if (pid == 0) {
                struct test_op ops[3];
                struct writer *w;
                int i;

                if (uv_loop_init(&loop) != 0 ||
                    store_open(&reader, dbpath, false, NULL, (char[256]){0}, 256) != 0)
                        _exit(2);
                w = open_writer();
                if (w == NULL)
                        _exit(2);
                closed_calls = 0;
                for (i = 0; i < 3; i++)
                        op_init(&ops[i], 100 + i, w);
                ops[1].closes = true; /* batch [0], then [1 closes, 2] */
                for (i = 0; i < 3; i++)
                        writer_submit(w, &ops[i].op);
                uv_run(&loop, UV_RUN_DEFAULT);
                store_close(reader);
                if (!ops[2].done || closed_calls != 1 || done_at_close != 3 ||
                    uv_loop_close(&loop) != 0)
                        _exit(3);
                _exit(0);
        }
        if (waitpid(pid, &status, 0) != pid) {
                fprintf(stderr, "waitpid: %s\n", strerror(errno));
                check_failures++;
                return;
        }
        /*
         * Was a bug (fixed while these tests were written): writer_after_cb
         * cleared `busy` before the done callbacks, so a writer_close() from
         * one of them freed the writer inside writer_start(), and the loop
         * went on with w->ops++ and writer_start(w) on freed memory.
         */
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr,
                        "writer_close() from a done callback: the child %s %d (exit 3: closed "
                        "too early or twice, or a later op never finished)\n",
                        WIFEXITED(status) ? "exited with" : "was killed by signal",
                        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

int main(void)
{
        char err[512] = "";
        int fds;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_writer: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        snprintf(dbpath, sizeof(dbpath), "%s/queue.db", tmpdir);
        /* First, while this process has no threads: the child of fork() gets a clean slate. */
        if (store_open(&reader, dbpath, false, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "store_open: %s\n", err);
                return 1;
        }
        store_close(reader);
        reader = NULL;
        test_close_from_done();

        /* libuv opens a process-wide pipe on its first loop, for good: count after it. */
        if (uv_loop_init(&loop) == 0)
                uv_loop_close(&loop);
        fds = count_fds();
        CHECK_INT(uv_loop_init(&loop), 0);
        if (store_open(&reader, dbpath, false, NULL, err, sizeof(err)) != 0) {
                fprintf(stderr, "store_open: %s\n", err);
                return 1;
        }
        test_order_and_rollback();
        test_group_commit();
        test_sync_spool();
        test_durability_levels();
        test_submit_from_done();
        test_close_flushes();
        store_close(reader);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_INT(uv_loop_close(&loop), 0);
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_writer");
}
