/* config.h — ferryd's settings: defaults, then the config file, then the environment, then flags.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct config {
        char socket_path[PATH_MAX]; /* FERRY_SOCKET, --socket */
        char state_dir[PATH_MAX];   /* FERRY_STATE_DIR, --state-dir: queue.db, spool/, registry/ */
        char config_file[PATH_MAX]; /* --config; "" when none was found */
        char backend[16];           /* "local" or "comet" */
        char workspace[128];        /* default workspace for logs that name none */
        char project[128];          /* default project */
        int64_t spool_budget;       /* bytes the spool may hold; 0 = no limit */
        int64_t spool_min_free;     /* a log must leave this much free on the spool's file system */
        int64_t cache_budget;       /* bytes of the download cache */
        int max_jobs;               /* versions delivered at once */
        int max_transfers;          /* concurrent HTTP transfers */
        int64_t retry_base_ms;      /* first backoff step */
        int64_t retry_cap_ms;       /* largest backoff step of a short streak of failures */
        int retry_slow_after;       /* failed attempts of one step after which ... */
        int64_t retry_slow_cap_ms;  /* ... the largest backoff step is this (an outage) */
        int max_attempts;           /* transient failures before a job is parked as failed */
        int max_clients;            /* connections served at once */
        int max_clients_per_uid;    /* ... from one user other than ferryd's own */
        int64_t hello_timeout_ms;   /* a connection that says nothing is closed after this */
        bool have_allow_gid;        /* another uid in this group may connect */
        gid_t allow_gid;
        /* Comet, read as Comet's SDK reads it. */
        char comet_api_key[256];
        char comet_url[512]; /* COMET_URL_OVERRIDE, e.g. https://www.comet.com/clientlib/ */
        bool verify_tls;
        char ca_file[PATH_MAX];
        int64_t connect_timeout_s;
        int64_t low_speed_limit;    /* bytes/s below which a transfer ... */
        int64_t low_speed_time_s;   /* ... is cut after this long */
        int64_t deadline_base_s;    /* every transfer ends within this ... */
        int64_t min_rate_bps;       /* ... plus its size at this rate */
        int64_t retry_after_cap_ms; /* the longest Retry-After obeyed */
        int64_t stop_grace_ms;      /* SIGTERM: how long running transfers may finish */
        char log_level[8];          /* "error", "warn", "info" or "debug" */
        int s3_page_size;           /* keys asked for per S3 listing page (S3 sends <= 1000) */
};

/*
 * Fill `cfg` from defaults, the config file (`file`, else
 * $XDG_CONFIG_HOME/ferry/ferryd.conf when present), Comet's own config
 * (./.comet.config, ~/.comet.config), and the environment. Flags given on the
 * command line are applied by the caller afterwards. Return 0, or -1 with a
 * sentence in err.
 */
int config_load(struct config *cfg, const char *file, char *err, size_t errlen);

/*
 * SIGHUP: copy the settings that take effect while ferryd runs from `fresh`
 * (a config_load() of the same sources) into `live`. The names of those that
 * changed go into `applied` ("" when none), comma-separated; the names of
 * changed settings that only a restart applies go into `pending` (their
 * values in `live` stay as they are). Settings that apply live: workspace,
 * project, spool_budget, spool_min_free, cache_budget, max_jobs, the retry
 * policy, max_clients_per_uid, hello_timeout_ms, stop_grace_ms, log_level.
 */
void config_reload(struct config *live, const struct config *fresh, char *applied,
                   size_t applied_len, char *pending, size_t pending_len);

/* Default socket path and state dir, as DESIGN.md names them. */
void config_default_socket(char *buf, size_t len);
void config_default_state_dir(char *buf, size_t len);

/* Parse "10G", "512M", "1024" into bytes. 0 or -1. */
int config_parse_size(const char *s, int64_t *out);

#endif
