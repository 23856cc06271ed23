/*
 * test_config.c — ferryd's settings (daemon/config.c): sizes, Comet's own
 * config file, ferryd.conf, the environment and their precedence, refusals;
 * and the retry backoff the settings feed (scheduler_backoff_ms). Runs with a
 * temporary HOME and working directory; every variable it touches is restored.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "ferry_base.h"
#include "log.h"
#include "scheduler.h"

static char tmpdir[] = "/tmp/ferry-test-config-XXXXXX";
static char home[600], work[600];

/* Every variable config_load reads. */
static const char *const env_names[] = {"HOME",
                                        "XDG_CONFIG_HOME",
                                        "XDG_STATE_HOME",
                                        "XDG_RUNTIME_DIR",
                                        "FERRY_SOCKET",
                                        "FERRY_STATE_DIR",
                                        "FERRY_BACKEND",
                                        "FERRY_SPOOL_BUDGET",
                                        "FERRY_SPOOL_MIN_FREE",
                                        "FERRY_LOG_LEVEL",
                                        "FERRY_CACHE_BUDGET",
                                        "FERRY_MAX_JOBS",
                                        "FERRY_MAX_TRANSFERS",
                                        "FERRY_RETRY_BASE_MS",
                                        "FERRY_RETRY_CAP_MS",
                                        "FERRY_RETRY_SLOW_AFTER",
                                        "FERRY_RETRY_SLOW_CAP_MS",
                                        "FERRY_MAX_ATTEMPTS",
                                        "FERRY_ALLOW_GROUP",
                                        "FERRY_VERIFY_TLS",
                                        "FERRY_CA_FILE",
                                        "COMET_API_KEY",
                                        "COMET_URL_OVERRIDE",
                                        "COMET_WORKSPACE",
                                        "COMET_PROJECT_NAME"};
#define NENV (sizeof(env_names) / sizeof(env_names[0]))
static char *env_saved[NENV];

/* ---- helpers -------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        int rc;

        if (f == NULL)
                return -1;
        rc = fputs(text, f) < 0 ? -1 : 0;
        return fclose(f) != 0 ? -1 : rc;
}

static const char *in(const char *dir, const char *rel)
{
        static char buf[4][1200];
        static int next;
        char *b = buf[next++ % 4];

        snprintf(b, sizeof(buf[0]), "%s/%s", dir, rel);
        return b;
}

static void env_save_and_clear(void)
{
        size_t i;

        for (i = 0; i < NENV; i++) {
                const char *v = getenv(env_names[i]);

                env_saved[i] = v ? strdup(v) : NULL;
                unsetenv(env_names[i]);
        }
}

/* Back to the test's clean state: only HOME, pointing at the temporary home. */
static void env_reset(void)
{
        size_t i;

        for (i = 0; i < NENV; i++)
                unsetenv(env_names[i]);
        setenv("HOME", home, 1);
}

static void env_restore(void)
{
        size_t i;

        for (i = 0; i < NENV; i++) {
                if (env_saved[i] != NULL)
                        setenv(env_names[i], env_saved[i], 1);
                else
                        unsetenv(env_names[i]);
                free(env_saved[i]);
        }
}

static int load(struct config *cfg, const char *file, char *err, size_t errlen)
{
        err[0] = '\0';
        memset(cfg, 0x5a, sizeof(*cfg));
        return config_load(cfg, file, err, errlen);
}

/* ---- sizes ---------------------------------------------------------------- */

static void test_parse_size(void)
{
        static const char *const bad[] = {"",    "abc",  "G",      "-1",        "-1G",
                                          "10X", "10GG", "1.5.5K", "10G extra", "1 0"};
        int64_t v;
        size_t i;

#define SIZE(s) (v = -7, config_parse_size((s), &v))
        CHECK_INT(SIZE("10G"), 0);
        CHECK_INT(v, 10LL * 1024 * 1024 * 1024);
        CHECK_INT(SIZE("512M"), 0);
        CHECK_INT(v, 512LL * 1024 * 1024);
        CHECK_INT(SIZE("1.5K"), 0);
        CHECK_INT(v, 1536);
        CHECK_INT(SIZE("100"), 0);
        CHECK_INT(v, 100);
        CHECK_INT(SIZE("0"), 0);
        CHECK_INT(v, 0);
        CHECK_INT(SIZE("2T"), 0);
        CHECK_INT(v, 2LL << 40);
        CHECK_INT(SIZE("64k"), 0);
        CHECK_INT(v, 65536);
        CHECK_INT(SIZE("1GiB"), 0);
        CHECK_INT(v, 1LL << 30);
        CHECK_INT(SIZE("3MB"), 0);
        CHECK_INT(v, 3LL << 20);
        CHECK_INT(SIZE("10 G"), 0);
        CHECK_INT(v, 10LL << 30);
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int rc = SIZE(bad[i]);

                if (rc != -1)
                        fprintf(stderr, "size \"%s\" was accepted as %lld\n", bad[i], (long long)v);
                CHECK_INT(rc, -1);
                CHECK_INT(v, -7); /* untouched on refusal */
        }
        /* Was a bug (fixed): daemon/config.c:92 converts the double to int64_t without a range
         * check, so sizes beyond INT64_MAX are accepted as INT64_MIN (a negative budget, which
         * spool_reserve then treats as "no limit"): config_parse_size("1e30"), ("10000000T"),
         * ("inf") and ("nan") return 0 with -9223372036854775808 instead of -1.
         */
        CHECK_INT(SIZE("1e30"), -1);
        CHECK_INT(SIZE("10000000T"), -1);
        CHECK_INT(SIZE("inf"), -1);
        CHECK_INT(SIZE("nan"), -1);
#undef SIZE
}

/* ---- config_load ---------------------------------------------------------- */

static void test_defaults(void)
{
        struct config cfg;
        char err[512], want[700];

        env_reset();
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.backend, "local");
        CHECK_STR(cfg.config_file, "");
        CHECK_STR(cfg.project, "general");
        CHECK(cfg.workspace[0] != '\0');
        CHECK_STR(cfg.comet_api_key, "");
        CHECK_STR(cfg.comet_url, "https://www.comet.com/clientlib/");
        CHECK_INT(cfg.spool_budget, 64LL << 30);
        CHECK_INT(cfg.cache_budget, 32LL << 30);
        CHECK_INT(cfg.max_jobs, 8);
        CHECK_INT(cfg.retry_base_ms, 1000);
        CHECK_INT(cfg.retry_cap_ms, 5000);
        CHECK_INT(cfg.retry_slow_after, 10);
        CHECK_INT(cfg.retry_slow_cap_ms, 60000);
        CHECK(cfg.verify_tls);
        CHECK(!cfg.have_allow_gid);
        snprintf(want, sizeof(want), "%s/.local/state/ferry", home);
        CHECK_STR(cfg.state_dir, want);
        snprintf(want, sizeof(want), "/tmp/ferry-%u/ferryd.sock", (unsigned)getuid());
        CHECK_STR(cfg.socket_path, want);

        /* FERRY_STATE_DIR and FERRY_SOCKET. */
        setenv("FERRY_STATE_DIR", "/srv/ferry-state", 1);
        setenv("FERRY_SOCKET", "/run/ferry.sock", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.state_dir, "/srv/ferry-state");
        CHECK_STR(cfg.socket_path, "/run/ferry.sock");
        env_reset();
}

static void test_comet_config(void)
{
        struct config cfg;
        char err[512];

        env_reset();
        CHECK_INT(write_file(in(home, ".comet.config"),
                             "# Comet's own file\n"
                             "[comet]\n"
                             "api_key = abc123\n"
                             "workspace = filews\n"
                             "project_name = fileproj\n"
                             "url_override = https://comet.example/clientlib/\n"
                             "unrelated = ignored\n"
                             "\n"
                             "[other]\n"
                             "api_key = wrong\n"
                             "workspace = wrong\n"),
                  0);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.backend, "comet"); /* an API key and no explicit choice */
        CHECK_STR(cfg.comet_api_key, "abc123");
        CHECK_STR(cfg.workspace, "filews");
        CHECK_STR(cfg.project, "fileproj");
        CHECK_STR(cfg.comet_url, "https://comet.example/clientlib/");
        CHECK_STR(cfg.config_file, ""); /* Comet's file is not ferryd's config file */

        /* FERRY_BACKEND chooses. */
        setenv("FERRY_BACKEND", "local", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.backend, "local");
        CHECK_STR(cfg.comet_api_key, "abc123");
        unsetenv("FERRY_BACKEND");

        /* Comet's environment beats Comet's file. */
        setenv("COMET_WORKSPACE", "envws", 1);
        setenv("COMET_PROJECT_NAME", "envproj", 1);
        setenv("COMET_API_KEY", "envkey", 1);
        setenv("COMET_URL_OVERRIDE", "https://env.example/clientlib/", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.workspace, "envws");
        CHECK_STR(cfg.project, "envproj");
        CHECK_STR(cfg.comet_api_key, "envkey");
        CHECK_STR(cfg.comet_url, "https://env.example/clientlib/");
        /* An empty variable counts as unset. */
        setenv("COMET_WORKSPACE", "", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.workspace, "filews");
        env_reset();

        /* ./.comet.config beats ~/.comet.config. */
        CHECK_INT(write_file(in(work, ".comet.config"), "[comet]\nworkspace = cwdws\n"), 0);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.workspace, "cwdws");
        CHECK_STR(cfg.comet_api_key, "abc123");
        CHECK_INT(unlink(in(work, ".comet.config")), 0);

        /* Without an API key the backend stays local. */
        CHECK_INT(write_file(in(home, ".comet.config"), "[comet]\nworkspace = filews\n"), 0);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.backend, "local");
        CHECK_STR(cfg.workspace, "filews");
        CHECK_INT(unlink(in(home, ".comet.config")), 0);
}

static void test_ferryd_conf(void)
{
        struct config cfg;
        char err[512], dir[700], xdg[700], conf[800];

        env_reset();
        snprintf(dir, sizeof(dir), "%s/.config/ferry", home);
        CHECK_INT(mkdir(in(home, ".config"), 0700), 0);
        CHECK_INT(mkdir(dir, 0700), 0);
        snprintf(conf, sizeof(conf), "%s/ferryd.conf", dir);
        CHECK_INT(write_file(in(home, ".comet.config"),
                             "[comet]\napi_key = abc123\nworkspace = filews\n"),
                  0);
        CHECK_INT(write_file(conf, "# ferryd settings\n"
                                   "[daemon]\n"
                                   "backend = local\n"
                                   "  workspace   =   confws  \n"
                                   "max_jobs = 3\n"
                                   "spool_budget = 10G\n"
                                   "verify_tls = no\n"
                                   "retry_base_ms = 5000\n"
                                   "retry_cap_ms = 1000\n"
                                   "; a comment\n"),
                  0);
        /* Found in ~/.config/ferry by default. */
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.config_file, conf);
        CHECK_STR(cfg.backend, "local");    /* explicit, despite the API key */
        CHECK_STR(cfg.workspace, "confws"); /* ferryd.conf beats Comet's file */
        CHECK_INT(cfg.max_jobs, 3);
        CHECK_INT(cfg.spool_budget, 10LL << 30);
        CHECK(!cfg.verify_tls);
        CHECK_INT(cfg.retry_base_ms, 5000);
        CHECK_INT(cfg.retry_cap_ms, 5000); /* never below the base */
        CHECK_INT(cfg.retry_slow_cap_ms, 60000);
        setenv("FERRY_RETRY_SLOW_CAP_MS", "10", 1);
        setenv("FERRY_RETRY_SLOW_AFTER", "3", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_INT(cfg.retry_slow_after, 3);
        CHECK_INT(cfg.retry_slow_cap_ms, 5000); /* never below the short-streak cap */
        unsetenv("FERRY_RETRY_SLOW_CAP_MS");
        unsetenv("FERRY_RETRY_SLOW_AFTER");

        /* The environment beats the file. */
        setenv("COMET_WORKSPACE", "envws", 1);
        setenv("FERRY_MAX_JOBS", "5", 1);
        setenv("FERRY_SPOOL_BUDGET", "1G", 1);
        setenv("FERRY_BACKEND", "comet", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_STR(cfg.workspace, "envws");
        CHECK_INT(cfg.max_jobs, 5);
        CHECK_INT(cfg.spool_budget, 1LL << 30);
        CHECK_STR(cfg.backend, "comet");
        env_reset();

        /* $XDG_CONFIG_HOME/ferry/ferryd.conf instead, when XDG_CONFIG_HOME is set. */
        snprintf(xdg, sizeof(xdg), "%s/xdg", tmpdir);
        CHECK_INT(mkdir(xdg, 0700), 0);
        CHECK_INT(mkdir(in(xdg, "ferry"), 0700), 0);
        CHECK_INT(write_file(in(xdg, "ferry/ferryd.conf"), "max_jobs = 7\n"), 0);
        setenv("XDG_CONFIG_HOME", xdg, 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), 0);
        CHECK_INT(cfg.max_jobs, 7);
        CHECK_STR(cfg.config_file, in(xdg, "ferry/ferryd.conf"));
        env_reset();

        /* An explicit file wins over the default location. */
        CHECK_INT(write_file(in(tmpdir, "explicit.conf"), "max_jobs = 9\n"), 0);
        CHECK_INT(load(&cfg, in(tmpdir, "explicit.conf"), err, sizeof(err)), 0);
        CHECK_INT(cfg.max_jobs, 9);
        CHECK_STR(cfg.config_file, in(tmpdir, "explicit.conf"));
        CHECK_INT(unlink(conf), 0);
        CHECK_INT(unlink(in(home, ".comet.config")), 0);
}

static void test_refusals(void)
{
        struct config cfg;
        char err[512], f[700];

        snprintf(f, sizeof(f), "%s/bad.conf", tmpdir);
        env_reset();
        /* An unknown key, named with its line. */
        CHECK_INT(write_file(f, "# settings\nmax_jobs = 4\nmax_jobz = 4\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK(strstr(err, "bad.conf:3:") != NULL);
        CHECK(strstr(err, "unknown") != NULL);
        CHECK(strstr(err, "\"max_jobz\"") != NULL);
        if (strstr(err, "bad.conf:3:") == NULL)
                fprintf(stderr, "message was: %s\n", err);

        /* Bad values. */
        CHECK_INT(write_file(f, "\nmax_jobs = 0\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK(strstr(err, "bad.conf:2:") != NULL && strstr(err, "bad value") != NULL);
        CHECK(strstr(err, "\"max_jobs\"") != NULL);
        CHECK_INT(write_file(f, "backend = s3\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK(strstr(err, "bad.conf:1:") != NULL && strstr(err, "\"backend\"") != NULL);
        CHECK_INT(write_file(f, "spool_budget = lots\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK(strstr(err, "spool_budget") != NULL);
        CHECK_INT(write_file(f, "verify_tls = maybe\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK_INT(write_file(f, "max_transfers = 12abc\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK_INT(write_file(f, "retry_base_ms = 3600001\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK_INT(write_file(f, "allow_group = no-such-group-for-ferry-tests\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        /* Not key = value. */
        CHECK_INT(write_file(f, "max_jobs 4\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), -1);
        CHECK(strstr(err, "bad.conf:1:") != NULL && strstr(err, "key = value") != NULL);
        /* A file that was asked for must exist. */
        CHECK_INT(load(&cfg, in(tmpdir, "missing.conf"), err, sizeof(err)), -1);
        CHECK(strstr(err, "missing.conf") != NULL);
        /* The limits themselves are fine. */
        CHECK_INT(write_file(f, "max_jobs = 256\nretry_base_ms = 3600000\n"), 0);
        CHECK_INT(load(&cfg, f, err, sizeof(err)), 0);
        CHECK_INT(cfg.max_jobs, 256);

        /* Bad values in the environment name the variable. */
        setenv("FERRY_MAX_JOBS", "many", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), -1);
        CHECK(strstr(err, "FERRY_MAX_JOBS") != NULL && strstr(err, "many") != NULL);
        env_reset();
        setenv("FERRY_BACKEND", "ftp", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), -1);
        CHECK(strstr(err, "FERRY_BACKEND") != NULL);
        env_reset();
        setenv("FERRY_VERIFY_TLS", "2", 1);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), -1);
        CHECK(strstr(err, "FERRY_VERIFY_TLS") != NULL);
        env_reset();
        /* A bad line in Comet's own file is refused too. */
        CHECK_INT(write_file(in(home, ".comet.config"), "[comet]\njust words\n"), 0);
        CHECK_INT(load(&cfg, NULL, err, sizeof(err)), -1);
        CHECK(strstr(err, ".comet.config:2:") != NULL);
        CHECK_INT(unlink(in(home, ".comet.config")), 0);
        CHECK_INT(unlink(f), 0);
}

/* ---- backoff -------------------------------------------------------------- */

static void test_backoff(void)
{
        static const int64_t cases[][2] = {{2000, 60000}, {100, 150}, {1, 1000000}, {2000, 1000}};
        size_t c;
        int n, i;

        for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
                int64_t base = cases[c][0], cap = cases[c][1];

                for (n = 1; n <= 25; n++) {
                        int64_t ceiling = base, lo = INT64_MAX, hi = -1, first = -1;
                        int out_of_range = 0, distinct = 0;

                        for (i = 1; i < n && ceiling < cap; i++)
                                ceiling *= 2;
                        if (ceiling > cap)
                                ceiling = cap;
                        for (i = 0; i < 2000; i++) {
                                int64_t d = scheduler_backoff_ms(base, cap, n);

                                if (d < 0 || d > ceiling)
                                        out_of_range++;
                                if (d < lo)
                                        lo = d;
                                if (d > hi)
                                        hi = d;
                                if (i == 0)
                                        first = d;
                                else if (d != first)
                                        distinct = 1;
                        }
                        if (out_of_range || (ceiling >= 10 && (!distinct || hi < ceiling * 9 / 10 ||
                                                               lo > ceiling / 10)))
                                fprintf(stderr,
                                        "backoff(%lld, %lld, %d): ceiling %lld, samples in "
                                        "[%lld, %lld], %d out of range\n",
                                        (long long)base, (long long)cap, n, (long long)ceiling,
                                        (long long)lo, (long long)hi, out_of_range);
                        CHECK_INT(out_of_range, 0);
                        /* Full jitter: spread over the whole range, not a constant. */
                        if (ceiling >= 10) {
                                CHECK(distinct);
                                CHECK(hi >= ceiling * 9 / 10);
                                CHECK(lo <= ceiling / 10);
                        }
                }
        }
        /* Was a bug (fixed): daemon/scheduler.c:65-66 doubles `ceiling` until it reaches the cap,
         * which overflows int64_t when the cap is near INT64_MAX: scheduler_backoff_ms(2000,
         * INT64_MAX, 60) returns a negative delay (e.g. -1056225712496987136) and attempts
         * >= 61 return 0 (signed overflow, undefined behaviour; UBSan aborts). Expected a
         * value in [0, INT64_MAX].
         */
        CHECK(scheduler_backoff_ms(2000, INT64_MAX, 60) >= 0);
}

/* ---- config_reload (SIGHUP) ------------------------------------------------ */

static void test_reload(void)
{
        struct config live, fresh;
        char err[512], applied[1024], pending[1024], conf[700];

        snprintf(conf, sizeof(conf), "%s", in(tmpdir, "reload.conf"));
        CHECK_INT(write_file(conf, "spool_budget = 1G\nmax_jobs = 2\nlog_level = info\n"
                                   "workspace = a\nmax_transfers = 4\n"),
                  0);
        CHECK_INT(load(&live, conf, err, sizeof(err)), 0);
        CHECK_INT(live.spool_min_free, 0);
        CHECK_STR(live.log_level, "info");
        /* Nothing changed: nothing named. */
        CHECK_INT(load(&fresh, conf, err, sizeof(err)), 0);
        config_reload(&live, &fresh, applied, sizeof(applied), pending, sizeof(pending));
        CHECK_STR(applied, "");
        CHECK_STR(pending, "");
        CHECK_INT(write_file(conf, "spool_budget = 2G\nmax_jobs = 3\nlog_level = warning\n"
                                   "workspace = b\nspool_min_free = 10M\nmax_transfers = 8\n"
                                   "backend = comet\nhello_timeout_ms = 500\n"),
                  0);
        CHECK_INT(load(&fresh, conf, err, sizeof(err)), 0);
        config_reload(&live, &fresh, applied, sizeof(applied), pending, sizeof(pending));
        CHECK_STR(applied, "workspace, spool_budget, spool_min_free, max_jobs, hello_timeout_ms, "
                           "log_level");
        CHECK_STR(pending, "backend, max_transfers");
        CHECK_INT(live.spool_budget, 2LL << 30);
        CHECK_INT(live.spool_min_free, 10LL << 20);
        CHECK_INT(live.max_jobs, 3);
        CHECK_INT(live.hello_timeout_ms, 500);
        CHECK_STR(live.workspace, "b");
        CHECK_STR(live.log_level, "warn");
        /* Restart-only settings keep their values until then. */
        CHECK_INT(live.max_transfers, 4);
        CHECK_STR(live.backend, "local");
        /* A bad log level is refused, as any bad value. */
        CHECK_INT(write_file(conf, "log_level = loud\n"), 0);
        CHECK_INT(load(&fresh, conf, err, sizeof(err)), -1);
        CHECK(strstr(err, "bad value for setting \"log_level\"") != NULL);
        setenv("FERRY_LOG_LEVEL", "debug", 1);
        CHECK_INT(write_file(conf, "log_level = error\n"), 0);
        CHECK_INT(load(&fresh, conf, err, sizeof(err)), 0);
        CHECK_STR(fresh.log_level, "debug"); /* the environment beats the file */
        unsetenv("FERRY_LOG_LEVEL");
        CHECK_INT(unlink(conf), 0);
}

int main(void)
{
        int fds, cwd;

        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_config: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        fds = count_fds();
        cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(home, sizeof(home), "%s/home", tmpdir);
        snprintf(work, sizeof(work), "%s/work", tmpdir);
        CHECK_INT(mkdir(home, 0700), 0);
        CHECK_INT(mkdir(work, 0700), 0);
        /* config_load reads ./.comet.config: run where there is none but ours. */
        CHECK_INT(chdir(work), 0);
        env_save_and_clear();

        test_parse_size();
        test_defaults();
        test_comet_config();
        test_ferryd_conf();
        test_refusals();
        test_backoff();
        test_reload();

        env_restore();
        if (cwd >= 0) {
                CHECK_INT(fchdir(cwd), 0);
                close(cwd);
        }
        CHECK_INT(count_fds(), fds);
        rm_rf(tmpdir);
        CHECK_INT(access(tmpdir, F_OK), -1);
        return CHECK_DONE("test_config");
}
