/* main.c — ferryd: parse flags, open the store, spool and backend, serve the socket. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "backend.h"
#include "cache.h"
#include "daemon.h"
#include "ferry.h"
#include "log.h"
#include "scheduler.h"
#include "server.h"
#include "spool.h"
#include "store.h"
#include "util.h"

static const char usage[] =
    "usage: ferryd [--foreground] [--socket PATH] [--state-dir DIR] [--config FILE]\n"
    "\n"
    "The ferry daemon: keeps a durable queue of artifact versions and uploads them.\n"
    "  -f, --foreground   stay in the foreground, log to stderr\n"
    "  -s, --socket PATH  control socket (default $FERRY_SOCKET, else\n"
    "                     $XDG_RUNTIME_DIR/ferry/ferryd.sock, else /tmp/ferry-$UID/ferryd.sock)\n"
    "  -d, --state-dir DIR  queue, spool and local registry (default $FERRY_STATE_DIR,\n"
    "                     else $XDG_STATE_HOME/ferry, else ~/.local/state/ferry)\n"
    "  -c, --config FILE  settings file (default ~/.config/ferry/ferryd.conf if present)\n"
    "  -h, --help         this text\n"
    "  -V, --version      print the version\n";

static struct daemon daemon_state;
static uv_signal_t sig_term, sig_int;

static void daemon_closed_cb(void *data)
{
        struct daemon *d = data;

        if (d->backend)
                d->backend->ops->close(d->backend);
        d->backend = NULL;
        spool_close(d->spool);
        d->spool = NULL;
        cache_close(d->cache);
        d->cache = NULL;
        store_close(d->store);
        d->store = NULL;
        uv_close((uv_handle_t *)&sig_term, NULL);
        uv_close((uv_handle_t *)&sig_int, NULL);
}

static void daemon_shutdown(struct daemon *d)
{
        if (d->stopping)
                return;
        d->stopping = true;
        log_info("shutting down");
        server_stop(d->server);
        d->server = NULL;
        scheduler_close(d->scheduler, daemon_closed_cb, d);
        d->scheduler = NULL;
        d->backend->ops->abort(d->backend);
}

static void signal_cb(uv_signal_t *h, int signum)
{
        daemon_shutdown(h->data);
}

/* Detach from the terminal; logs go to <state>/ferryd.log. */
static int daemonize(const char *state_dir)
{
        char path[4096];
        pid_t pid;
        int fd;

        snprintf(path, sizeof(path), "%s/ferryd.log", state_dir);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid > 0)
                _exit(0);
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

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"foreground", no_argument, NULL, 'f'},
            {"socket", required_argument, NULL, 's'},
            {"state-dir", required_argument, NULL, 'd'},
            {"config", required_argument, NULL, 'c'},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {NULL, 0, NULL, 0},
        };
        struct daemon *d = &daemon_state;
        const char *socket_flag = NULL, *state_flag = NULL, *config_flag = NULL;
        bool foreground = false;
        char err[1024], path[4096];
        struct store_counts counts;
        int c, rc;

        while ((c = getopt_long(argc, argv, "fs:d:c:hV", opts, NULL)) != -1) {
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
        log_set_level_from_env();
        if (config_load(&d->cfg, config_flag, err, sizeof(err)) != 0) {
                fprintf(stderr, "ferryd: %s\n", err);
                return 1;
        }
        if (socket_flag)
                snprintf(d->cfg.socket_path, sizeof(d->cfg.socket_path), "%s", socket_flag);
        if (state_flag)
                snprintf(d->cfg.state_dir, sizeof(d->cfg.state_dir), "%s", state_flag);
        if ((rc = util_mkdir_p(d->cfg.state_dir, 0700)) != 0) {
                fprintf(stderr, "ferryd: cannot create %s: %s\n", d->cfg.state_dir, strerror(-rc));
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        d->loop = uv_default_loop();
        d->started_ms = util_now_ms();

        snprintf(path, sizeof(path), "%s/queue.db", d->cfg.state_dir);
        if (store_open(&d->store, path, err, sizeof(err)) != 0)
                goto fail;
        /* Delivered jobs stay listed for 30 days. */
        store_prune_done(d->store, util_now_ms() - 30LL * 24 * 3600 * 1000);
        store_counts(d->store, &counts);
        snprintf(path, sizeof(path), "%s/spool", d->cfg.state_dir);
        if (spool_open(&d->spool, path, d->cfg.spool_budget, counts.bytes_held, err, sizeof(err)) !=
            0)
                goto fail;
        spool_cleanup(d->spool, d->store);
        snprintf(path, sizeof(path), "%s/cache", d->cfg.state_dir);
        if (cache_open(&d->cache, path, d->cfg.cache_budget, err, sizeof(err)) != 0)
                goto fail;
        rc = strcmp(d->cfg.backend, "comet") == 0
                 ? backend_comet_new(&d->backend, d, err, sizeof(err))
                 : backend_local_new(&d->backend, d, err, sizeof(err));
        if (rc != 0)
                goto fail;
        if (server_start(&d->server, d, err, sizeof(err)) != 0)
                goto fail;
        if (!foreground && daemonize(d->cfg.state_dir) != 0) {
                snprintf(err, sizeof(err), "cannot detach: %s", strerror(errno));
                goto fail;
        }
        if (uv_loop_fork(d->loop) != 0 && !foreground) {
                snprintf(err, sizeof(err), "cannot reinitialise the event loop after fork");
                goto fail;
        }
        if (scheduler_new(&d->scheduler, d) != 0) {
                snprintf(err, sizeof(err), "out of memory");
                goto fail;
        }
        uv_signal_init(d->loop, &sig_term);
        uv_signal_init(d->loop, &sig_int);
        sig_term.data = sig_int.data = d;
        uv_signal_start(&sig_term, signal_cb, SIGTERM);
        uv_signal_start(&sig_int, signal_cb, SIGINT);
        log_info("ferryd %s serving %s (backend %s, state %s, %lld queued)", FERRY_VERSION_STRING,
                 d->cfg.socket_path, d->cfg.backend, d->cfg.state_dir, (long long)counts.queued);
        uv_run(d->loop, UV_RUN_DEFAULT);
        rc = uv_loop_close(d->loop);
        if (rc != 0)
                log_warn("event loop closed with handles open: %s", uv_strerror(rc));
        curl_global_cleanup();
        log_info("stopped");
        return 0;
fail:
        fprintf(stderr, "ferryd: %s\n", err);
        log_error("%s", err);
        return 1;
}
