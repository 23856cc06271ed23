/*
 * uvtest.h — libuv's test style for the daemon's unit tests: one process per
 * test, the loop closed and no handle or descriptor leaked at the end.
 *
 * A test binary lists its tests in a table and calls uvtest_main(). Each test
 * runs in a child of its own (fork), with a fresh loop (uvtest_loop) and a
 * fresh temporary directory (uvtest_dir); the parent never touches libuv, so
 * every child starts clean. After the test function returns, the child lists
 * the handles still open with uv_walk (each one fails the test, with its
 * type), closes the loop (uv_loop_close() must return 0), compares its open
 * descriptors with those it had before the test, removes the directory, and
 * exits with the number of failed checks. A crash, a sanitizer report or a
 * hang (UVTEST_TIMEOUT_S) fails that test only. `test_x name` runs one test.
 *
 * Waiting is bounded polling of the loop, never a sleep: uvtest_run_until()
 * runs the loop until a predicate holds or a deadline passes, and
 * uvtest_run_for() runs it for a while to prove that something does NOT
 * happen.
 */
#ifndef FERRY_UVTEST_H
#define FERRY_UVTEST_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "testutil.h"

#ifndef UVTEST_TIMEOUT_S
#define UVTEST_TIMEOUT_S 60 /* a test that takes longer is killed and fails */
#endif

struct uvtest {
        const char *name;
        void (*fn)(void);
};

static uv_loop_t uvtest_loop_storage;
static uv_loop_t *const uvtest_loop = &uvtest_loop_storage;
static char uvtest_dir[256]; /* this test's temporary directory */

/* A path inside this test's temporary directory (a few rotating buffers). */
static inline const char *uvtest_path(const char *name)
{
        static char buf[8][512];
        static int next;
        char *p = buf[next++ % 8];

        snprintf(p, sizeof(buf[0]), "%s/%s", uvtest_dir, name);
        return p;
}

static void uvtest_tick_cb(uv_timer_t *t)
{
        (void)t;
}

static void uvtest_close_cb(uv_handle_t *h)
{
        (void)h;
}

/*
 * Run the loop until pred(data) is true, for at most timeout_ms. A timer ticks
 * every 2 ms meanwhile, so that each round of the loop comes back here. Return
 * whether pred held.
 */
static inline bool uvtest_run_until(bool (*pred)(void *data), void *data, int64_t timeout_ms)
{
        uv_timer_t tick;
        uint64_t deadline;
        bool ok;

        uv_update_time(uvtest_loop);
        deadline = uv_now(uvtest_loop) + (uint64_t)timeout_ms;
        uv_timer_init(uvtest_loop, &tick);
        uv_timer_start(&tick, uvtest_tick_cb, 2, 2);
        while (!(ok = pred(data)) && uv_now(uvtest_loop) < deadline)
                uv_run(uvtest_loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&tick, uvtest_close_cb);
        uv_run(uvtest_loop, UV_RUN_NOWAIT);
        return ok;
}

static inline bool uvtest_false(void *data)
{
        (void)data;
        return false;
}

/* Run the loop for ms milliseconds (to see that something does not happen). */
static inline void uvtest_run_for(int64_t ms)
{
        uvtest_run_until(uvtest_false, NULL, ms);
}

/* Predicates for the common cases: an int (or int64) reaching a value. */
struct uvtest_wait_int {
        const int *p;
        int at_least;
};
static inline bool uvtest_int_reached(void *data)
{
        const struct uvtest_wait_int *w = data;

        return *w->p >= w->at_least;
}
/* Run until *p >= n (for at most timeout_ms); CHECK that it got there. */
#define UVTEST_WAIT_INT(p, n, timeout_ms)                                                          \
        do {                                                                                       \
                struct uvtest_wait_int uvtest_w_ = {(p), (n)};                                     \
                if (!uvtest_run_until(uvtest_int_reached, &uvtest_w_, (timeout_ms))) {             \
                        fprintf(stderr, "%s:%d: waited %d ms for %s >= %d; it is %d\n", __FILE__,  \
                                __LINE__, (int)(timeout_ms), #p, (int)(n), *(p));                  \
                        check_failures++;                                                          \
                }                                                                                  \
        } while (0)

/* Run until cond (an expression) holds, for at most timeout_ms; CHECK that it did. */
#define UVTEST_WAIT(cond, timeout_ms)                                                              \
        do {                                                                                       \
                uv_timer_t uvtest_tick_;                                                           \
                uint64_t uvtest_deadline_;                                                         \
                uv_update_time(uvtest_loop);                                                       \
                uvtest_deadline_ = uv_now(uvtest_loop) + (uint64_t)(timeout_ms);                   \
                uv_timer_init(uvtest_loop, &uvtest_tick_);                                         \
                uv_timer_start(&uvtest_tick_, uvtest_tick_cb, 2, 2);                               \
                while (!(cond) && uv_now(uvtest_loop) < uvtest_deadline_)                          \
                        uv_run(uvtest_loop, UV_RUN_ONCE);                                          \
                uv_close((uv_handle_t *)&uvtest_tick_, uvtest_close_cb);                           \
                uv_run(uvtest_loop, UV_RUN_NOWAIT);                                                \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: waited %d ms for %s\n", __FILE__, __LINE__,        \
                                (int)(timeout_ms), #cond);                                         \
                        check_failures++;                                                          \
                }                                                                                  \
        } while (0)

static void uvtest_walk_cb(uv_handle_t *h, void *arg)
{
        int *leaked = arg;

        if (uv_is_closing(h))
                return;
        fprintf(stderr, "leaked handle: %s %p (active %d)\n", uv_handle_type_name(h->type),
                (void *)h, uv_is_active(h));
        (*leaked)++;
        uv_close(h, NULL);
}

/* Fail on every handle still open, close them, and close the loop (which must succeed). */
static inline void uvtest_close_loop(void)
{
        int leaked = 0, rc;

        /* Let close callbacks and finished work run first. */
        uv_run(uvtest_loop, UV_RUN_NOWAIT);
        uv_walk(uvtest_loop, uvtest_walk_cb, &leaked);
        CHECK_INT(leaked, 0);
        uv_run(uvtest_loop, UV_RUN_DEFAULT);
        rc = uv_loop_close(uvtest_loop);
        if (rc != 0)
                fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
        CHECK_INT(rc, 0);
}

/* The child: one test, start to finish. */
static inline void uvtest_child(const char *suite, const struct uvtest *t)
{
        int fds;

        alarm(UVTEST_TIMEOUT_S);
        snprintf(uvtest_dir, sizeof(uvtest_dir), "/tmp/ferry-%s-%s-XXXXXX", suite, t->name);
        if (mkdtemp(uvtest_dir) == NULL) {
                fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
                exit(1);
        }
        /* libuv opens a process-wide descriptor with its first loop, for good: count after. */
        if (uv_loop_init(uvtest_loop) == 0)
                uv_loop_close(uvtest_loop);
        fds = count_fds();
        if (uv_loop_init(uvtest_loop) != 0) {
                fprintf(stderr, "uv_loop_init failed\n");
                exit(1);
        }
        t->fn();
        uvtest_close_loop();
        CHECK_INT(count_fds(), fds);
        rm_rf(uvtest_dir);
        CHECK_INT(exists(uvtest_dir), 0);
        exit(check_failures > 100 ? 100 : check_failures);
}

static inline int64_t uvtest_mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Run every test of `tests` (NULL-terminated by name) in a child of its own,
 * or only the one named by argv[1]. Return the exit status for main().
 */
static inline int uvtest_main(int argc, char **argv, const char *suite, const struct uvtest *tests)
{
        int failed = 0, ran = 0, status;
        const struct uvtest *t;

        signal(SIGPIPE, SIG_IGN);
        for (t = tests; t->name != NULL; t++) {
                int64_t start = uvtest_mono_ms();
                pid_t pid;

                if (argc > 1 && strcmp(argv[1], t->name) != 0)
                        continue;
                ran++;
                fflush(NULL);
                pid = fork();
                if (pid < 0) {
                        fprintf(stderr, "fork: %s\n", strerror(errno));
                        return 1;
                }
                if (pid == 0)
                        uvtest_child(suite, t);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                        fprintf(stderr, "ok     %s.%s (%lld ms)\n", suite, t->name,
                                (long long)(uvtest_mono_ms() - start));
                        continue;
                }
                failed++;
                if (WIFEXITED(status))
                        fprintf(stderr, "FAILED %s.%s: %d failed checks (%lld ms)\n", suite,
                                t->name, WEXITSTATUS(status),
                                (long long)(uvtest_mono_ms() - start));
                else
                        fprintf(stderr, "FAILED %s.%s: killed by signal %d%s (%lld ms)\n", suite,
                                t->name, WTERMSIG(status),
                                WTERMSIG(status) == SIGALRM ? " (timed out)" : "",
                                (long long)(uvtest_mono_ms() - start));
        }
        if (ran == 0) {
                fprintf(stderr, "%s: no test named %s\n", suite, argc > 1 ? argv[1] : "(none)");
                return 1;
        }
        fprintf(stderr, "%s: %s (%d of %d tests failed)\n", suite, failed ? "FAILED" : "passed",
                failed, ran);
        return failed ? 1 : 0;
}

#endif
