/* config.c — ferryd's settings. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void copy_str(char *dst, size_t len, const char *src)
{
        snprintf(dst, len, "%s", src);
}

static const char *home_dir(void)
{
        const char *h = getenv("HOME");
        struct passwd *pw;

        if (h != NULL && h[0] != '\0')
                return h;
        pw = getpwuid(getuid());
        return pw ? pw->pw_dir : "/";
}

void config_default_socket(char *buf, size_t len)
{
        const char *v = getenv("FERRY_SOCKET");
        const char *rt = getenv("XDG_RUNTIME_DIR");

        if (v != NULL && v[0] != '\0')
                snprintf(buf, len, "%s", v);
        else if (rt != NULL && rt[0] == '/')
                snprintf(buf, len, "%s/ferry/ferryd.sock", rt);
        else
                snprintf(buf, len, "/tmp/ferry-%u/ferryd.sock", (unsigned)getuid());
}

void config_default_state_dir(char *buf, size_t len)
{
        const char *v = getenv("FERRY_STATE_DIR");
        const char *xdg = getenv("XDG_STATE_HOME");

        if (v != NULL && v[0] != '\0')
                snprintf(buf, len, "%s", v);
        else if (xdg != NULL && xdg[0] == '/')
                snprintf(buf, len, "%s/ferry", xdg);
        else
                snprintf(buf, len, "%s/.local/state/ferry", home_dir());
}

int config_parse_size(const char *s, int64_t *out)
{
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || v < 0)
                return -1;
        while (*end == ' ')
                end++;
        switch (toupper((unsigned char)*end)) {
        case 'K':
                v *= 1024.0;
                end++;
                break;
        case 'M':
                v *= 1024.0 * 1024;
                end++;
                break;
        case 'G':
                v *= 1024.0 * 1024 * 1024;
                end++;
                break;
        case 'T':
                v *= 1024.0 * 1024 * 1024 * 1024;
                end++;
                break;
        default:
                break;
        }
        if (toupper((unsigned char)*end) == 'I')
                end++;
        if (toupper((unsigned char)*end) == 'B')
                end++;
        if (*end != '\0' || !(v >= 0 && v < 9.2e18)) /* also refuses inf and nan */
                return -1;
        *out = (int64_t)v;
        return 0;
}

static char *trim(char *s)
{
        char *e;

        while (isspace((unsigned char)*s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = '\0';
        return s;
}

static int parse_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
        char *end;
        long long n;

        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
                return -1;
        *out = n;
        return 0;
}

static int parse_bool(const char *v, bool *out)
{
        if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on"))
                *out = true;
        else if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
                 !strcasecmp(v, "off"))
                *out = false;
        else
                return -1;
        return 0;
}

/* Apply one ferryd setting. Return 0, 1 for an unknown key, -1 for a bad value. */
static int config_set(struct config *cfg, const char *key, const char *v)
{
        int64_t n;
        struct group *gr;

        if (!strcmp(key, "backend")) {
                if (strcmp(v, "local") && strcmp(v, "comet"))
                        return -1;
                copy_str(cfg->backend, sizeof(cfg->backend), v);
        } else if (!strcmp(key, "socket")) {
                copy_str(cfg->socket_path, sizeof(cfg->socket_path), v);
        } else if (!strcmp(key, "state_dir")) {
                copy_str(cfg->state_dir, sizeof(cfg->state_dir), v);
        } else if (!strcmp(key, "workspace")) {
                copy_str(cfg->workspace, sizeof(cfg->workspace), v);
        } else if (!strcmp(key, "project")) {
                copy_str(cfg->project, sizeof(cfg->project), v);
        } else if (!strcmp(key, "spool_budget")) {
                return config_parse_size(v, &cfg->spool_budget);
        } else if (!strcmp(key, "spool_min_free")) {
                return config_parse_size(v, &cfg->spool_min_free);
        } else if (!strcmp(key, "log_level")) {
                if (strcmp(v, "error") && strcmp(v, "warn") && strcmp(v, "warning") &&
                    strcmp(v, "info") && strcmp(v, "debug"))
                        return -1;
                copy_str(cfg->log_level, sizeof(cfg->log_level), strcmp(v, "warning") ? v : "warn");
        } else if (!strcmp(key, "cache_budget")) {
                return config_parse_size(v, &cfg->cache_budget);
        } else if (!strcmp(key, "max_jobs")) {
                if (parse_int(v, 1, 256, &n))
                        return -1;
                cfg->max_jobs = (int)n;
        } else if (!strcmp(key, "s3_page_size")) {
                if (parse_int(v, 1, 1000, &n))
                        return -1;
                cfg->s3_page_size = (int)n;
        } else if (!strcmp(key, "max_transfers")) {
                if (parse_int(v, 1, 256, &n))
                        return -1;
                cfg->max_transfers = (int)n;
        } else if (!strcmp(key, "retry_base_ms")) {
                return parse_int(v, 1, 3600000, &cfg->retry_base_ms);
        } else if (!strcmp(key, "retry_cap_ms")) {
                return parse_int(v, 1, 86400000, &cfg->retry_cap_ms);
        } else if (!strcmp(key, "retry_slow_after")) {
                if (parse_int(v, 1, 1000000, &n))
                        return -1;
                cfg->retry_slow_after = (int)n;
        } else if (!strcmp(key, "retry_slow_cap_ms")) {
                return parse_int(v, 1, 86400000, &cfg->retry_slow_cap_ms);
        } else if (!strcmp(key, "max_attempts")) {
                if (parse_int(v, 1, 1000000, &n))
                        return -1;
                cfg->max_attempts = (int)n;
        } else if (!strcmp(key, "max_clients")) {
                if (parse_int(v, 1, 100000, &n))
                        return -1;
                cfg->max_clients = (int)n;
        } else if (!strcmp(key, "max_clients_per_uid")) {
                if (parse_int(v, 1, 100000, &n))
                        return -1;
                cfg->max_clients_per_uid = (int)n;
        } else if (!strcmp(key, "hello_timeout_ms")) {
                return parse_int(v, 100, 3600000, &cfg->hello_timeout_ms);
        } else if (!strcmp(key, "allow_group")) {
                /* A group name, or a number (a gid with no name here, as LDAP often has). */
                gr = getgrnam(v);
                if (gr != NULL) {
                        cfg->allow_gid = gr->gr_gid;
                } else {
                        if (parse_int(v, 0, (int64_t)UINT32_MAX - 1, &n))
                                return -1;
                        cfg->allow_gid = (gid_t)n;
                }
                cfg->have_allow_gid = true;
        } else if (!strcmp(key, "comet_api_key") || !strcmp(key, "api_key")) {
                copy_str(cfg->comet_api_key, sizeof(cfg->comet_api_key), v);
        } else if (!strcmp(key, "comet_url") || !strcmp(key, "url_override")) {
                copy_str(cfg->comet_url, sizeof(cfg->comet_url), v);
        } else if (!strcmp(key, "verify_tls")) {
                return parse_bool(v, &cfg->verify_tls);
        } else if (!strcmp(key, "ca_file")) {
                copy_str(cfg->ca_file, sizeof(cfg->ca_file), v);
        } else if (!strcmp(key, "connect_timeout_s")) {
                return parse_int(v, 1, 3600, &cfg->connect_timeout_s);
        } else if (!strcmp(key, "low_speed_time_s")) {
                return parse_int(v, 1, 86400, &cfg->low_speed_time_s);
        } else if (!strcmp(key, "low_speed_limit")) {
                return parse_int(v, 1, 1LL << 30, &cfg->low_speed_limit);
        } else if (!strcmp(key, "deadline_base_s")) {
                return parse_int(v, 1, 7 * 86400, &cfg->deadline_base_s);
        } else if (!strcmp(key, "min_rate_bps")) {
                return parse_int(v, 1, 1LL << 30, &cfg->min_rate_bps);
        } else if (!strcmp(key, "retry_after_cap_ms")) {
                return parse_int(v, 1, 86400000, &cfg->retry_after_cap_ms);
        } else if (!strcmp(key, "stop_grace_ms")) {
                return parse_int(v, 0, 3600000, &cfg->stop_grace_ms);
        } else {
                return 1;
        }
        return 0;
}

/*
 * Read an INI file. In ferryd.conf every key is a ferryd setting (sections
 * ignored); in a .comet.config only the [comet] section's api_key, workspace,
 * project_name and url_override are read.
 */
static int config_read_file(struct config *cfg, const char *path, bool comet, char *err,
                            size_t errlen)
{
        FILE *f = fopen(path, "r");
        char line[1024], section[64] = "";
        int lineno = 0;

        if (f == NULL)
                return errno == ENOENT
                           ? 1
                           : (snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno)),
                              -1);
        while (fgets(line, sizeof(line), f) != NULL) {
                char *s = trim(line), *eq, *key, *val;
                int rc;

                lineno++;
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *e = strchr(s, ']');

                        if (e)
                                *e = '\0';
                        copy_str(section, sizeof(section), trim(s + 1));
                        continue;
                }
                eq = strchr(s, '=');
                if (eq == NULL) {
                        snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
                        fclose(f);
                        return -1;
                }
                *eq = '\0';
                key = trim(s);
                val = trim(eq + 1);
                if (comet) {
                        if (strcmp(section, "comet") != 0)
                                continue;
                        if (!strcmp(key, "api_key"))
                                copy_str(cfg->comet_api_key, sizeof(cfg->comet_api_key), val);
                        else if (!strcmp(key, "workspace"))
                                copy_str(cfg->workspace, sizeof(cfg->workspace), val);
                        else if (!strcmp(key, "project_name"))
                                copy_str(cfg->project, sizeof(cfg->project), val);
                        else if (!strcmp(key, "url_override"))
                                copy_str(cfg->comet_url, sizeof(cfg->comet_url), val);
                        continue;
                }
                rc = config_set(cfg, key, val);
                if (rc != 0) {
                        snprintf(err, errlen, "%s:%d: %s setting \"%s\"", path, lineno,
                                 rc > 0 ? "unknown" : "bad value for", key);
                        fclose(f);
                        return -1;
                }
        }
        fclose(f);
        return 0;
}

static void config_defaults(struct config *cfg)
{
        struct passwd *pw = getpwuid(getuid());

        memset(cfg, 0, sizeof(*cfg));
        config_default_socket(cfg->socket_path, sizeof(cfg->socket_path));
        config_default_state_dir(cfg->state_dir, sizeof(cfg->state_dir));
        copy_str(cfg->workspace, sizeof(cfg->workspace), pw ? pw->pw_name : "local");
        copy_str(cfg->project, sizeof(cfg->project), "general");
        copy_str(cfg->comet_url, sizeof(cfg->comet_url), "https://www.comet.com/clientlib/");
        cfg->spool_budget = 64LL << 30;
        cfg->cache_budget = 32LL << 30;
        cfg->max_jobs = 8;
        cfg->max_transfers = 16;
        cfg->retry_base_ms = 1000;
        cfg->retry_cap_ms = 5000;
        cfg->retry_slow_after = 10;
        cfg->retry_slow_cap_ms = 60000;
        cfg->max_attempts = 30;
        cfg->max_clients = 1000;
        cfg->max_clients_per_uid = 64;
        cfg->hello_timeout_ms = 10000;
        cfg->verify_tls = true;
        cfg->connect_timeout_s = 10;
        cfg->low_speed_limit = 1024;
        cfg->low_speed_time_s = 60;
        cfg->deadline_base_s = 600;
        cfg->min_rate_bps = 32768;
        cfg->retry_after_cap_ms = 600000;
        cfg->stop_grace_ms = 10000;
        copy_str(cfg->log_level, sizeof(cfg->log_level), "info");
        cfg->s3_page_size = 1000;
}

/* The environment: FERRY_* for ferryd, COMET_* exactly as Comet's SDK reads them. */
static int config_read_env(struct config *cfg, char *err, size_t errlen)
{
        static const struct {
                const char *env, *key;
        } map[] = {
            {"FERRY_BACKEND", "backend"},
            {"FERRY_SPOOL_BUDGET", "spool_budget"},
            {"FERRY_SPOOL_MIN_FREE", "spool_min_free"},
            {"FERRY_LOG_LEVEL", "log_level"},
            {"FERRY_CACHE_BUDGET", "cache_budget"},
            {"FERRY_MAX_JOBS", "max_jobs"},
            {"FERRY_MAX_TRANSFERS", "max_transfers"},
            {"FERRY_RETRY_BASE_MS", "retry_base_ms"},
            {"FERRY_RETRY_CAP_MS", "retry_cap_ms"},
            {"FERRY_RETRY_SLOW_AFTER", "retry_slow_after"},
            {"FERRY_RETRY_SLOW_CAP_MS", "retry_slow_cap_ms"},
            {"FERRY_MAX_ATTEMPTS", "max_attempts"},
            {"FERRY_ALLOW_GROUP", "allow_group"},
            {"FERRY_MAX_CLIENTS", "max_clients"},
            {"FERRY_MAX_CLIENTS_PER_UID", "max_clients_per_uid"},
            {"FERRY_HELLO_TIMEOUT_MS", "hello_timeout_ms"},
            {"FERRY_VERIFY_TLS", "verify_tls"},
            {"FERRY_CA_FILE", "ca_file"},
            {"FERRY_CONNECT_TIMEOUT_S", "connect_timeout_s"},
            {"FERRY_LOW_SPEED_LIMIT", "low_speed_limit"},
            {"FERRY_LOW_SPEED_TIME_S", "low_speed_time_s"},
            {"FERRY_DEADLINE_BASE_S", "deadline_base_s"},
            {"FERRY_MIN_RATE_BPS", "min_rate_bps"},
            {"FERRY_RETRY_AFTER_CAP_MS", "retry_after_cap_ms"},
            {"FERRY_STOP_GRACE_MS", "stop_grace_ms"},
            {"FERRY_S3_PAGE_SIZE", "s3_page_size"},
            {"COMET_API_KEY", "api_key"},
            {"COMET_URL_OVERRIDE", "url_override"},
            {"COMET_WORKSPACE", "workspace"},
            {"COMET_PROJECT_NAME", "project"},
        };
        size_t i;

        for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
                const char *v = getenv(map[i].env);

                if (v == NULL || v[0] == '\0')
                        continue;
                if (config_set(cfg, map[i].key, v) != 0) {
                        snprintf(err, errlen, "bad value for %s: \"%s\"", map[i].env, v);
                        return -1;
                }
        }
        return 0;
}

int config_load(struct config *cfg, const char *file, char *err, size_t errlen)
{
        char path[PATH_MAX];
        const char *xdg = getenv("XDG_CONFIG_HOME");
        int rc;

        config_defaults(cfg);
        /* Comet's own files first (lowest precedence): ~/.comet.config, then ./.comet.config. */
        snprintf(path, sizeof(path), "%s/.comet.config", home_dir());
        if (config_read_file(cfg, path, true, err, errlen) < 0)
                return -1;
        if (config_read_file(cfg, ".comet.config", true, err, errlen) < 0)
                return -1;
        if (file != NULL) {
                copy_str(path, sizeof(path), file);
        } else if (xdg != NULL && xdg[0] == '/') {
                snprintf(path, sizeof(path), "%s/ferry/ferryd.conf", xdg);
        } else {
                snprintf(path, sizeof(path), "%s/.config/ferry/ferryd.conf", home_dir());
        }
        rc = config_read_file(cfg, path, false, err, errlen);
        if (rc < 0)
                return -1;
        if (rc > 0 && file != NULL) {
                snprintf(err, errlen, "config file %s does not exist", file);
                return -1;
        }
        if (rc == 0)
                copy_str(cfg->config_file, sizeof(cfg->config_file), path);
        if (config_read_env(cfg, err, errlen) < 0)
                return -1;
        /* FERRY_SOCKET/FERRY_STATE_DIR beat the file; flags beat both (applied by main). */
        if (getenv("FERRY_SOCKET") && getenv("FERRY_SOCKET")[0])
                config_default_socket(cfg->socket_path, sizeof(cfg->socket_path));
        if (getenv("FERRY_STATE_DIR") && getenv("FERRY_STATE_DIR")[0])
                config_default_state_dir(cfg->state_dir, sizeof(cfg->state_dir));
        /* With a Comet API key and no explicit choice, Comet is the backend. */
        if (cfg->backend[0] == '\0')
                copy_str(cfg->backend, sizeof(cfg->backend),
                         cfg->comet_api_key[0] ? "comet" : "local");
        if (cfg->retry_cap_ms < cfg->retry_base_ms)
                cfg->retry_cap_ms = cfg->retry_base_ms;
        if (cfg->retry_slow_cap_ms < cfg->retry_cap_ms)
                cfg->retry_slow_cap_ms = cfg->retry_cap_ms;
        return 0;
}

/* Append `name` to the comma-separated list in buf. */
static void list_add(char *buf, size_t len, const char *name)
{
        size_t used = strlen(buf);

        snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", name);
}

void config_reload(struct config *live, const struct config *fresh, char *applied,
                   size_t applied_len, char *pending, size_t pending_len)
{
        applied[0] = pending[0] = '\0';
/* A setting that applies live: copied, and named when it changed. */
#define LIVE_NUM(field, name)                                                                      \
        do {                                                                                       \
                if (live->field != fresh->field) {                                                 \
                        live->field = fresh->field;                                                \
                        list_add(applied, applied_len, name);                                      \
                }                                                                                  \
        } while (0)
#define LIVE_STR(field, name)                                                                      \
        do {                                                                                       \
                if (strcmp(live->field, fresh->field) != 0) {                                      \
                        copy_str(live->field, sizeof(live->field), fresh->field);                  \
                        list_add(applied, applied_len, name);                                      \
                }                                                                                  \
        } while (0)
/* A setting only a restart applies: named when it changed, left as it is. */
#define RESTART_NUM(field, name)                                                                   \
        do {                                                                                       \
                if (live->field != fresh->field)                                                   \
                        list_add(pending, pending_len, name);                                      \
        } while (0)
#define RESTART_STR(field, name)                                                                   \
        do {                                                                                       \
                if (strcmp(live->field, fresh->field) != 0)                                        \
                        list_add(pending, pending_len, name);                                      \
        } while (0)
        LIVE_STR(workspace, "workspace");
        LIVE_STR(project, "project");
        LIVE_NUM(spool_budget, "spool_budget");
        LIVE_NUM(spool_min_free, "spool_min_free");
        LIVE_NUM(cache_budget, "cache_budget");
        LIVE_NUM(max_jobs, "max_jobs");
        LIVE_NUM(retry_base_ms, "retry_base_ms");
        LIVE_NUM(retry_cap_ms, "retry_cap_ms");
        LIVE_NUM(retry_slow_after, "retry_slow_after");
        LIVE_NUM(retry_slow_cap_ms, "retry_slow_cap_ms");
        LIVE_NUM(max_attempts, "max_attempts");
        LIVE_NUM(retry_after_cap_ms, "retry_after_cap_ms");
        LIVE_NUM(max_clients_per_uid, "max_clients_per_uid");
        LIVE_NUM(hello_timeout_ms, "hello_timeout_ms");
        LIVE_NUM(stop_grace_ms, "stop_grace_ms");
        LIVE_STR(log_level, "log_level");
        copy_str(live->config_file, sizeof(live->config_file), fresh->config_file);
        RESTART_STR(socket_path, "socket");
        RESTART_STR(state_dir, "state_dir");
        RESTART_STR(backend, "backend");
        RESTART_STR(comet_api_key, "api_key");
        RESTART_STR(comet_url, "url_override");
        RESTART_NUM(verify_tls, "verify_tls");
        RESTART_STR(ca_file, "ca_file");
        RESTART_NUM(connect_timeout_s, "connect_timeout_s");
        RESTART_NUM(low_speed_limit, "low_speed_limit");
        RESTART_NUM(low_speed_time_s, "low_speed_time_s");
        RESTART_NUM(deadline_base_s, "deadline_base_s");
        RESTART_NUM(min_rate_bps, "min_rate_bps");
        RESTART_NUM(max_transfers, "max_transfers");
        RESTART_NUM(max_clients, "max_clients");
        RESTART_NUM(have_allow_gid, "allow_group");
        if (live->have_allow_gid && fresh->have_allow_gid && live->allow_gid != fresh->allow_gid)
                list_add(pending, pending_len, "allow_group");
#undef LIVE_NUM
#undef LIVE_STR
#undef RESTART_NUM
#undef RESTART_STR
}
