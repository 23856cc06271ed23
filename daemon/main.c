/* main.c — ferryd: parse flags, open the queue, check the spool, serve the socket, stop cleanly. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "backend.h"
#include "cache.h"
#include "s3.h"
#include "daemon.h"
#include "ferry_base.h"
#include "log.h"
#include "notify.h"
#include "recovery.h"
#include "scheduler.h"
#include "server.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "writer.h"

#define PRUNE_INTERVAL_MS (3600 * 1000)
#define PRUNE_BATCH 1000
#define HISTORY_MS (30LL * 24 * 3600 * 1000)
#define NOTIFY_STATUS_MS 2000 /* how often systemd's STATUS= line is refreshed */

static const char usage[] =
    "usage: ferryd [--foreground] [--socket PATH] [--state-dir DIR] [--config FILE]\n"
    "              [--log-level LEVEL]\n"
    "\n"
    "The ferry daemon: keeps a durable queue of artifact versions and uploads them.\n"
    "  -f, --foreground   stay in the foreground and log to stderr (implied when\n"
    "                     systemd starts ferryd: the journal gets each line with its\n"
    "                     priority). Without it ferryd detaches and logs to\n"
    "                     <state dir>/ferryd.log, and says so once before it detaches\n"
    "  -s, --socket PATH  control socket (default $FERRY_SOCKET, else\n"
    "                     $XDG_RUNTIME_DIR/ferry/ferryd.sock, else /tmp/ferry-$UID/ferryd.sock)\n"
    "  -d, --state-dir DIR  queue, spool and local registry (default $FERRY_STATE_DIR,\n"
    "                     else $XDG_STATE_HOME/ferry, else ~/.local/state/ferry)\n"
    "  -c, --config FILE  settings file (default ~/.config/ferry/ferryd.conf if present)\n"
    "  -l, --log-level LEVEL  error, warn, info (default) or debug; beats FERRY_LOG_LEVEL\n"
    "                     and log_level in the settings file\n"
    "  -h, --help         this text\n"
    "  -V, --version      print the version\n"
    "\n"
    "SIGTERM or SIGINT stops in order; SIGHUP reloads the settings file (see ferryd(8)\n"
    "for the settings that apply at once and those that need a restart).\n";

static struct daemon daemon_state;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t prune_timer, drain_timer, notify_timer;
static bool scheduler_stopped;
/* The command line's choices, applied again over every reload. */
static const char *socket_flag, *state_flag, *config_flag, *log_flag;
static char notify_status_last[512];

/* ---- history ---- */

struct prune_op {
        struct writer_op op;
        int64_t before;
        int removed;
};

static int prune_run(struct store *st, struct writer_op *op)
{
        struct prune_op *p = (struct prune_op *)op;
        int n = store_prune_done(st, p->before, PRUNE_BATCH);

        if (n < 0)
                return n;
        p->removed = n;
        return 0;
}

static void prune_start(struct daemon *d);

static void prune_done(struct writer_op *op, int rc)
{
        struct prune_op *p = (struct prune_op *)op;
        struct daemon *d = &daemon_state;
        bool more = rc == 0 && p->removed == PRUNE_BATCH;

        if (p->removed > 0)
                log_debug("forgot %d delivered versions older than 30 days", p->removed);
        free(p);
        /* A long history goes in bounded batches, so that logs never wait behind it. */
        if (more && !d->stopping)
                prune_start(d);
}

static void prune_start(struct daemon *d)
{
        struct prune_op *p = calloc(1, sizeof(*p));

        if (p == NULL)
                return;
        p->op.run = prune_run;
        p->op.done = prune_done;
        p->before = util_now_ms() - HISTORY_MS;
        writer_submit(d->writer, &p->op);
}

static void prune_timer_cb(uv_timer_t *t)
{
        prune_start(t->data);
}

/* ---- stopping ---- */

static void daemon_close_cb(uv_handle_t *h)
{
}

static void daemon_free_all(struct daemon *d)
{
        scheduler_free(d->scheduler);
        d->scheduler = NULL;
        spool_close(d->spool);
        d->spool = NULL;
        cache_close(d->cache);
        d->cache = NULL;
        store_close(d->store);
        d->store = NULL;
        uv_close((uv_handle_t *)&sig_term, daemon_close_cb);
        uv_close((uv_handle_t *)&sig_int, daemon_close_cb);
        uv_close((uv_handle_t *)&sig_hup, daemon_close_cb);
        uv_close((uv_handle_t *)&notify_timer, daemon_close_cb);
        uv_close((uv_handle_t *)&prune_timer, daemon_close_cb);
        uv_close((uv_handle_t *)&drain_timer, daemon_close_cb);
}

/* Spool removals still running: wait for them, then free everything. */
static void drain_timer_cb(uv_timer_t *t)
{
        struct daemon *d = t->data;

        if (spool_busy(d->spool))
                return;
        uv_timer_stop(t);
        daemon_free_all(d);
}

static void s3_closed_cb(void *data)
{
        struct daemon *d = data;

        d->s3 = NULL;
        uv_timer_start(&drain_timer, drain_timer_cb, 0, 10);
}

static void backend_closed_cb(void *data)
{
        struct daemon *d = data;

        d->backend = NULL;
        s3_close(d->s3, s3_closed_cb, d);
}

static void writer_closed_cb(void *data)
{
        struct daemon *d = data;

        d->writer = NULL;
        d->backend->ops->close(d->backend, backend_closed_cb, d);
}

/* Once no delivery runs and no log is between its snapshot and its commit. */
static void daemon_close_writer(struct daemon *d)
{
        if (!scheduler_stopped || d->inflight_logs > 0 || d->writer == NULL)
                return;
        writer_close(d->writer, writer_closed_cb, d);
}

static void scheduler_stopped_cb(void *data)
{
        scheduler_stopped = true;
        /* Logs whose snapshots are under way still commit: their files are in the spool. */
        daemon_close_writer(data);
}

void daemon_log_finished(struct daemon *d)
{
        d->inflight_logs--;
        if (d->stopping)
                daemon_close_writer(d);
}

/* One line for systemd's STATUS=: where ferryd serves and how big the queue is. */
static void daemon_status_text(struct daemon *d, char *buf, size_t len)
{
        struct store_counts c;
        struct scheduler_status ss;
        int64_t queued;

        if (store_counts(d->store, &c) != 0) {
                snprintf(buf, len, "serving %s; the queue database cannot be read",
                         d->cfg.socket_path);
                return;
        }
        scheduler_status(d->scheduler, &ss);
        queued = c.queued > ss.running ? c.queued - ss.running : 0;
        snprintf(buf, len, "serving %s: %lld queued, %d running, %lld failed%s%s",
                 d->cfg.socket_path, (long long)queued, ss.running, (long long)c.failed,
                 ss.paused ? ", paused" : "", ss.online ? "" : ", backend offline");
}

static void notify_timer_cb(uv_timer_t *t)
{
        struct daemon *d = t->data;
        char text[512];

        if (d->stopping)
                return;
        daemon_status_text(d, text, sizeof(text));
        if (strcmp(text, notify_status_last) != 0) {
                notify_send("STATUS=%s", text);
                snprintf(notify_status_last, sizeof(notify_status_last), "%s", text);
        }
}

static void daemon_shutdown(struct daemon *d)
{
        if (d->stopping)
                return;
        d->stopping = true;
        notify_send("STOPPING=1\nSTATUS=stopping: running deliveries may finish for %lld ms",
                    (long long)d->cfg.stop_grace_ms);
        uv_timer_stop(&notify_timer);
        log_info("shutting down");
        server_stop(d->server);
        d->server = NULL;
        uv_timer_stop(&prune_timer);
        scheduler_stop(d->scheduler, d->cfg.stop_grace_ms, scheduler_stopped_cb, d);
}

static void signal_cb(uv_signal_t *h, int signum)
{
        daemon_shutdown(h->data);
}

/* The command line beats the files and the environment, at start and at every reload. */
static void apply_flags(struct config *cfg)
{
        if (socket_flag)
                snprintf(cfg->socket_path, sizeof(cfg->socket_path), "%s", socket_flag);
        if (state_flag)
                snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", state_flag);
        if (log_flag)
                snprintf(cfg->log_level, sizeof(cfg->log_level), "%s", log_flag);
}

static void apply_log_level(const struct config *cfg)
{
        enum log_level level;

        if (log_parse_level(cfg->log_level, &level) == 0)
                log_set_level(level);
}

/*
 * SIGHUP: read the settings again and apply those that can change while
 * ferryd runs. A file with a mistake changes nothing. Settings only a
 * restart applies are named in a warning.
 */
static void daemon_reload(struct daemon *d)
{
        struct config fresh;
        char err[2048], applied[1024], pending[1024], text[512];
        const char *file;

        if (d->stopping)
                return;
        notify_send("RELOADING=1\nSTATUS=reloading the settings");
        if (config_load(&fresh, config_flag, err, sizeof(err)) != 0) {
                log_error("reload refused, the settings in force stay: %s", err);
        } else {
                apply_flags(&fresh);
                config_reload(&d->cfg, &fresh, applied, sizeof(applied), pending, sizeof(pending));
                apply_log_level(&d->cfg);
                spool_set_budget(d->spool, d->cfg.spool_budget);
                spool_set_min_free(d->spool, d->cfg.spool_min_free);
                cache_set_budget(d->cache, d->cfg.cache_budget);
                scheduler_kick(d->scheduler);
                file = d->cfg.config_file[0] ? d->cfg.config_file : "no settings file";
                log_info("reloaded the settings (%s): %s%s", file,
                         applied[0] ? "applied " : "nothing changed", applied[0] ? applied : "");
                log_debug("settings in force: log_level %s, workspace %s, project %s, "
                          "spool_budget %lld, spool_min_free %lld, cache_budget %lld, max_jobs %d",
                          d->cfg.log_level, d->cfg.workspace, d->cfg.project,
                          (long long)d->cfg.spool_budget, (long long)d->cfg.spool_min_free,
                          (long long)d->cfg.cache_budget, d->cfg.max_jobs);
                if (pending[0])
                        log_warn("changed but applied only by a restart (the old values stay "
                                 "until then): %s",
                                 pending);
        }
        daemon_status_text(d, text, sizeof(text));
        notify_send("READY=1\nSTATUS=%s", text);
}

static void sighup_cb(uv_signal_t *h, int signum)
{
        daemon_reload(h->data);
}

/* ---- starting ---- */

/* Detach from the terminal; logs go to <state>/ferryd.log, as the one line before says. */
static int daemonize(const struct config *cfg)
{
        char path[4096];
        pid_t pid;
        int fd;

        snprintf(path, sizeof(path), "%s/ferryd.log", cfg->state_dir);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid > 0) {
                fprintf(stderr,
                        "ferryd: serving %s in the background (pid %ld); it logs to %s (run "
                        "with --foreground to log here)\n",
                        cfg->socket_path, (long)pid, path);
                _exit(0);
        }
        setsid();
        fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
                dup2(fd, 0);
                dup2(fd, 1);
                close(fd);
        }
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
                dup2(fd, 2);
                close(fd);
        }
        return 0;
}

/* Move a damaged queue aside (with its WAL and shared memory); never delete it. */
static int set_aside(const char *db, char *where, size_t len, char *err, size_t errlen)
{
        static const char *const suffixes[] = {"", "-wal", "-shm"};
        char stamp[32], from[4200], to[4300];
        time_t now = time(NULL);
        struct tm tm;
        size_t i;

        gmtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
        snprintf(where, len, "%s.damaged-%s", db, stamp);
        for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
                snprintf(from, sizeof(from), "%s%s", db, suffixes[i]);
                snprintf(to, sizeof(to), "%s%s", where, suffixes[i]);
                if (rename(from, to) != 0 && errno != ENOENT) {
                        snprintf(err, errlen, "cannot move %s aside: %s", from, strerror(errno));
                        return -1;
                }
        }
        return 0;
}

/*
 * Open the queue, checking it first. A damaged file is moved aside and a
 * fresh queue started: *trust is then false (the spool is all quarantined).
 */
static int open_queue(struct daemon *d, const char *path, bool *trust, char *err, size_t errlen)
{
        char where[4400], why[1024];
        bool damaged = false;

        *trust = true;
        if (store_open(&d->store, path, true, &damaged, why, sizeof(why)) == 0)
                return 0;
        if (!damaged) {
                snprintf(err, errlen, "%s", why);
                return -1;
        }
        if (set_aside(path, where, sizeof(where), err, errlen) != 0)
                return -1;
        snprintf(d->notices.damaged, sizeof(d->notices.damaged),
                 "%s; it was moved to %s and a new queue started: nothing was deleted, and the "
                 "spool's snapshots are in quarantine (ferry recover re-queues them)",
                 why, where);
        log_error("%s", d->notices.damaged);
        *trust = false;
        return store_open(&d->store, path, true, NULL, err, errlen) == 0 ? 0 : -1;
}

static int check_spool(struct daemon *d, bool trust, char *err, size_t errlen)
{
        struct recovery_report rep;
        int staged;

        if (recovery_reconcile(d->store, d->spool, trust, &rep, err, errlen) != 0)
                return -1;
        staged = spool_clean_staging(d->spool);
        if (rep.removed > 0 || staged > 0)
                log_info("removed %lld spool files of delivered versions and %d stale staging "
                         "files",
                         (long long)rep.removed, staged);
        if (rep.quarantined > 0) {
                d->notices.quarantined = rep.quarantined;
                snprintf(d->notices.quarantine, sizeof(d->notices.quarantine), "%s",
                         spool_quarantine_folder(d->spool));
                log_warn("%lld spool files are not in the queue database: moved to %s, not "
                         "deleted; `ferry recover` re-queues them",
                         (long long)rep.quarantined, d->notices.quarantine);
        }
        log_debug("spool check: %lld kept, %lld removed, %lld quarantined, %lld looked up",
                  (long long)rep.kept, (long long)rep.removed, (long long)rep.quarantined,
                  (long long)rep.looked_up);
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"foreground", no_argument, NULL, 'f'},      {"socket", required_argument, NULL, 's'},
            {"state-dir", required_argument, NULL, 'd'}, {"config", required_argument, NULL, 'c'},
            {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
        };
        struct daemon *d = &daemon_state;
        struct scheduler_env senv;
        struct backend_env benv;
        bool foreground = false, trust;
        enum log_level level;
        char err[2048], path[4096], qdir[4096], spooldir[4096];
        struct store_counts counts;
        int c, rc;

        while ((c = getopt_long(argc, argv, "fs:d:c:l:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'f':
                        foreground = true;
                        break;
                case 's':
                        socket_flag = optarg;
                        break;
                case 'd':
                        state_flag = optarg;
                        break;
                case 'c':
                        config_flag = optarg;
                        break;
                case 'l':
                        if (log_parse_level(optarg, &level) != 0) {
                                fprintf(stderr,
                                        "ferryd: --log-level must be error, warn, info or debug, "
                                        "not \"%s\"\n%s",
                                        optarg, usage);
                                return 2;
                        }
                        log_flag = log_level_name(level);
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                case 'V':
                        puts("ferryd " FERRY_VERSION_STRING);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "ferryd: unexpected argument \"%s\"\n%s", argv[optind], usage);
                return 2;
        }
        /* Under systemd: stay in the foreground (Type=notify, socket activation), and when
         * stderr is the journal, give every line its priority instead of a time. */
        if (getenv("INVOCATION_ID") || getenv("NOTIFY_SOCKET") || getenv("LISTEN_FDS"))
                foreground = true;
        log_set_journal(log_detect_journal());
        if (config_load(&d->cfg, config_flag, err, sizeof(err)) != 0) {
                fprintf(stderr, "ferryd: %s\n", err);
                return 1;
        }
        apply_flags(&d->cfg);
        apply_log_level(&d->cfg);
        if (notify_init(err, sizeof(err)) != 0) {
                fprintf(stderr, "ferryd: %s\n", err);
                return 1;
        }
        umask(077);
        if ((rc = util_mkdir_p(d->cfg.state_dir, 0700)) != 0) {
                fprintf(stderr, "ferryd: cannot create %s: %s\n", d->cfg.state_dir, strerror(-rc));
                return 1;
        }
        if (util_check_private_dir(d->cfg.state_dir, err, sizeof(err)) != 0) {
                fprintf(stderr, "ferryd: %s\n", err);
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        /* Snapshots, commits, blob stores and downloads share libuv's pool. */
        setenv("UV_THREADPOOL_SIZE", "16", 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        d->loop = uv_default_loop();
        d->started_ms = util_now_ms();

        snprintf(path, sizeof(path), "%s/queue.db", d->cfg.state_dir);
        if (open_queue(d, path, &trust, err, sizeof(err)) != 0)
                goto fail;
        store_counts(d->store, &counts);
        snprintf(spooldir, sizeof(spooldir), "%s/spool", d->cfg.state_dir);
        snprintf(qdir, sizeof(qdir), "%s/quarantine", d->cfg.state_dir);
        if (spool_open(&d->spool, d->loop, spooldir, qdir, d->cfg.spool_budget, counts.bytes_held,
                       err, sizeof(err)) != 0)
                goto fail;
        spool_set_min_free(d->spool, d->cfg.spool_min_free);
        if (writer_open(&d->writer, d->loop, path, spool_sync, d->spool, err, sizeof(err)) != 0)
                goto fail;
        if (check_spool(d, trust, err, sizeof(err)) != 0)
                goto fail;
        snprintf(path, sizeof(path), "%s/cache", d->cfg.state_dir);
        if (cache_open(&d->cache, path, d->cfg.cache_budget, err, sizeof(err)) != 0)
                goto fail;
        if (s3_new(&d->s3, d->loop, &d->cfg, d->cache, err, sizeof(err)) != 0)
                goto fail;
        senv.loop = d->loop;
        senv.cfg = &d->cfg;
        senv.store = d->store;
        senv.writer = d->writer;
        senv.spool = d->spool;
        if (scheduler_new(&d->scheduler, &senv) != 0) {
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        benv.loop = d->loop;
        benv.cfg = &d->cfg;
        benv.spool = d->spool;
        benv.cache = d->cache;
        benv.s3 = d->s3;
        benv.state_dir = d->cfg.state_dir;
        benv.sink = scheduler_sink(d->scheduler);
        rc = strcmp(d->cfg.backend, "comet") == 0
                 ? backend_comet_new(&d->backend, &benv, err, sizeof(err))
                 : backend_local_new(&d->backend, &benv, err, sizeof(err));
        if (rc != 0)
                goto fail;
        if (server_start(&d->server, d, err, sizeof(err)) != 0)
                goto fail;
        if (!foreground && daemonize(&d->cfg) != 0) {
                snprintf(err, sizeof(err), "cannot detach: %s", strerror(errno));
                goto fail;
        }
        if (uv_loop_fork(d->loop) != 0 && !foreground) {
                snprintf(err, sizeof(err), "cannot reinitialise the event loop after fork");
                goto fail;
        }
        uv_signal_init(d->loop, &sig_term);
        uv_signal_init(d->loop, &sig_int);
        uv_signal_init(d->loop, &sig_hup);
        sig_term.data = sig_int.data = sig_hup.data = d;
        uv_signal_start(&sig_term, signal_cb, SIGTERM);
        uv_signal_start(&sig_int, signal_cb, SIGINT);
        uv_signal_start(&sig_hup, sighup_cb, SIGHUP);
        uv_timer_init(d->loop, &prune_timer);
        uv_timer_init(d->loop, &drain_timer);
        uv_timer_init(d->loop, &notify_timer);
        prune_timer.data = drain_timer.data = notify_timer.data = d;
        uv_timer_start(&prune_timer, prune_timer_cb, 0, PRUNE_INTERVAL_MS);
        scheduler_start(d->scheduler, d->backend);
        log_info("ferryd %s serving %s (backend %s, state %s, %lld queued)", FERRY_VERSION_STRING,
                 d->cfg.socket_path, d->cfg.backend, d->cfg.state_dir, (long long)counts.queued);
        /* Ready: the socket accepts and the queue is checked. */
        if (notify_enabled()) {
                daemon_status_text(d, notify_status_last, sizeof(notify_status_last));
                notify_send("READY=1\nSTATUS=%s", notify_status_last);
                uv_timer_start(&notify_timer, notify_timer_cb, NOTIFY_STATUS_MS, NOTIFY_STATUS_MS);
        }
        uv_run(d->loop, UV_RUN_DEFAULT);
        rc = uv_loop_close(d->loop);
        if (rc != 0)
                log_warn("event loop closed with handles open: %s", uv_strerror(rc));
        curl_global_cleanup();
        notify_close();
        log_info("stopped");
        return 0;
fail:
        /* Said once: to the journal with its priority, else as one plain line. */
        if (log_is_journal())
                log_error("%s", err);
        else
                fprintf(stderr, "ferryd: %s\n", err);
        notify_close();
        return 1;
}
