/*
 * cli.c — the `ferry` command: a table of commands with one small handler
 * each, all through libferry. Exit status: 0 success, 1 the operation failed
 * (one sentence on stderr, "ferry: ..."), 2 usage (message and synopsis on
 * stderr). --json prints exactly one JSON document on stdout: the daemon's
 * reply without "id" and "ok".
 */
#include "ferry.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define WAIT_TICK_MS 500
#define PROGRESS_TICK_MS 250

struct cli {
        const char *socket; /* --socket PATH, or NULL: ferry_default_socket_path() */
};

struct command {
        const char *name;
        int (*run)(const struct command *cmd, struct cli *cli, int argc, char **argv);
        const char *args;    /* synopsis after the command name */
        const char *summary; /* one line for `ferry --help` */
        const char *options; /* the option lines of `ferry COMMAND --help` */
};

/* Long options without a short form. */
enum {
        OPT_TYPE = 256,
        OPT_VERSION,
        OPT_ALIAS,
        OPT_TAG,
        OPT_METADATA,
        OPT_REMOTE,
        OPT_LOGICAL_PATH,
        OPT_EXPERIMENT,
        OPT_WORKSPACE,
        OPT_PROJECT,
        OPT_WAIT,
        OPT_TIMEOUT,
        OPT_JSON,
        OPT_ALL,
        OPT_FAILED,
        OPT_DONE,
        OPT_OVERWRITE,
        OPT_NAME,
        OPT_KEY,
        OPT_SOCKET,
        OPT_LIMIT,
        OPT_CLEAR,
        OPT_NO_SYNC,
        OPT_MAX_SYNCED,
};

static const struct command commands[];

/* ---- messages ---- */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "ferry: <sentence>" on stderr; return EXIT_FAIL. */
static int fail(const char *fmt, ...)
{
        va_list ap;

        fputs("ferry: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_FAIL;
}

/* The sentence for a libferry failure: the client's message, else the code's. */
static const char *client_msg(const struct ferry_client *c, int rc)
{
        const char *msg = ferry_last_error(c);

        return msg[0] != '\0' ? msg : ferry_strerror(rc);
}

static int fail_client(const struct ferry_client *c, int rc)
{
        return fail("%s", client_msg(c, rc));
}

static void print_synopsis(FILE *f, const struct command *cmd)
{
        fprintf(f, "usage: ferry [--socket PATH] %s%s%s\n", cmd->name, cmd->args[0] ? " " : "",
                cmd->args);
}

/* Print the message and the command's synopsis on stderr; return EXIT_USAGE. */
static int usage(const struct command *cmd, const char *fmt, ...)
{
        va_list ap;

        fputs("ferry: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        print_synopsis(stderr, cmd);
        fprintf(stderr, "Run 'ferry %s --help' for its options.\n", cmd->name);
        return EXIT_USAGE;
}

/* A refusal of the artifact builder (a value libferry checked, or a file). */
static int fail_artifact(const struct ferry_artifact *a, int rc)
{
        const char *msg = ferry_artifact_last_error(a);

        return fail("%s", msg[0] != '\0' ? msg : ferry_strerror(rc));
}

/* Describe the option getopt_long() refused with '?' or ':' into buf. */
static const char *option_error(int ch, char **argv, char *buf, size_t len)
{
        const char *arg = argv[optind - 1];

        if (ch == ':')
                snprintf(buf, len, "option %s needs a value", arg);
        else if (optopt > 0 && optopt < 256 && strncmp(arg, "--", 2) != 0)
                snprintf(buf, len, "unknown option -%c", optopt);
        else
                snprintf(buf, len, "unknown option %s", arg);
        return buf;
}

static int bad_option(const struct command *cmd, int ch, char **argv)
{
        char msg[256];

        return usage(cmd, "%s", option_error(ch, argv, msg, sizeof(msg)));
}

static int command_help(const struct command *cmd)
{
        print_synopsis(stdout, cmd);
        printf("%s\n", cmd->summary);
        if (cmd->options != NULL)
                printf("\noptions:\n%s", cmd->options);
        return 0;
}

/* The short usage for errors. */
static int main_usage_error(void)
{
        fprintf(stderr, "usage: ferry [--socket PATH] COMMAND [ARGS]\n"
                        "Run 'ferry --help' for the commands.\n");
        return EXIT_USAGE;
}

static void main_usage(FILE *f)
{
        const struct command *cmd;

        fprintf(f, "usage: ferry [--socket PATH] COMMAND [ARGS]\n"
                   "       ferry --help | --version\n\ncommands:\n");
        for (cmd = commands; cmd->name != NULL; cmd++)
                fprintf(f, "  %-11s %s\n", cmd->name, cmd->summary);
        fprintf(f, "\nThe socket is --socket, else $FERRY_SOCKET, else the default of ferryd.\n"
                   "Run 'ferry COMMAND --help' for a command's options.\n");
}

/* ---- helpers ---- */

static void *xnomem(void *p)
{
        if (p == NULL) {
                fail("out of memory");
                exit(EXIT_FAIL);
        }
        return p;
}

static int cli_connect(const struct cli *cli, struct ferry_client **c)
{
        int rc = ferry_connect(c, cli->socket, 0);

        if (rc != 0) {
                fail_client(*c, rc);
                ferry_close(*c);
                *c = NULL;
                return EXIT_FAIL;
        }
        return 0;
}

static long long jint(const cJSON *obj, const char *key, long long def)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsNumber(v) ? (long long)v->valuedouble : def;
}

static const char *jstr(const cJSON *obj, const char *key)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Parse a reply from libferry; on failure say so and return NULL. */
static cJSON *parse_reply(const char *json)
{
        cJSON *obj = json ? cJSON_Parse(json) : NULL;

        if (obj == NULL)
                fail("ferryd sent a reply that is not a JSON object");
        return obj;
}

/* Print `obj` as the one JSON document of --json, without "id" and "ok". */
static void print_json(cJSON *obj)
{
        char *s;

        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "ok");
        s = xnomem(cJSON_Print(obj));
        printf("%s\n", s);
        cJSON_free(s);
}

static const char *fmt_bytes(char *buf, size_t len, double n)
{
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        size_t u = 0;

        if (n < 1024) {
                snprintf(buf, len, "%.0f B", n);
                return buf;
        }
        n /= 1024;
        while (n >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                n /= 1024;
                u++;
        }
        snprintf(buf, len, "%.1f %s", n, units[u]);
        return buf;
}

static const char *fmt_duration(char *buf, size_t len, long long ms)
{
        long long s = ms / 1000;

        if (s < 60)
                snprintf(buf, len, "%lld s", s < 0 ? 0 : s);
        else if (s < 3600)
                snprintf(buf, len, "%lld min", s / 60);
        else if (s < 86400)
                snprintf(buf, len, "%lld h %lld min", s / 3600, s / 60 % 60);
        else
                snprintf(buf, len, "%lld d %lld h", s / 86400, s / 3600 % 24);
        return buf;
}

/* Local time of a timestamp in ms since the epoch. */
static const char *fmt_time(char *buf, size_t len, long long ms)
{
        time_t t = (time_t)(ms / 1000);
        struct tm tm;

        if (localtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, len, "%lld", ms);
        return buf;
}

/* A time limit as given: "30 s", "0.5 s". */
static const char *fmt_limit(char *buf, size_t len, int ms)
{
        snprintf(buf, len, "%g s", ms / 1000.0);
        return buf;
}

static long long wall_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *plural(long long n)
{
        return n == 1 ? "" : "s";
}

/* "--timeout SECONDS": a non-negative decimal number; *ms >= 1. Return 0 or -1. */
static int parse_seconds(const char *s, int *ms)
{
        char *end;
        double d;

        errno = 0;
        d = strtod(s, &end);
        if (errno != 0 || end == s || *end != '\0' || !(d >= 0) || d > INT_MAX / 1000.0)
                return -1;
        *ms = (int)(d * 1000 + 0.5);
        if (*ms < 1)
                *ms = 1;
        return 0;
}

/* "--limit N" of ls: 1..FERRY_LS_LIMIT_MAX. Return 0 or -1. */
static int parse_limit(const char *s, int *limit)
{
        char *end;
        long v;

        if (s[0] < '0' || s[0] > '9')
                return -1;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < 1 || v > FERRY_LS_LIMIT_MAX)
                return -1;
        *limit = (int)v;
        return 0;
}

/* "--max-synced-objects N": 1..FERRY_MAX_SYNCED_OBJECTS. Return 0 or -1. */
static int parse_max_synced(const char *s, int64_t *n)
{
        char *end;
        long long v;

        if (s[0] < '0' || s[0] > '9')
                return -1;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < 1 || v > FERRY_MAX_SYNCED_OBJECTS)
                return -1;
        *n = v;
        return 0;
}

/* Print a reply's "warnings" (strings, or {"job", "name", "message"}) to stderr. */
static void print_warnings(const cJSON *rep)
{
        const cJSON *it;

        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(rep, "warnings"))
        {
                const char *m = cJSON_IsString(it) ? it->valuestring : jstr(it, "message");
                const char *p;

                if (m == NULL)
                        continue;
                /* One line per warning: a version may carry several. */
                for (; (p = strchr(m, '\n')) != NULL; m = p + 1)
                        fprintf(stderr, "ferry: warning: %.*s\n", (int)(p - m), m);
                fprintf(stderr, "ferry: warning: %s\n", m);
        }
}

/* A job id: decimal digits. Return 0 or -1. */
static int parse_job(const char *s, int64_t *id)
{
        char *end;
        long long v;

        if (s[0] < '0' || s[0] > '9')
                return -1;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > 9007199254740992LL)
                return -1;
        *id = v;
        return 0;
}

/* A table printed with aligned columns; the last column is not padded. */
struct table {
        size_t ncols;
        size_t nrows;
        char **cells; /* nrows * ncols strings, owned */
};

static void table_add(struct table *t, ...)
{
        va_list ap;
        size_t i;

        t->cells = xnomem(realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*t->cells)));
        va_start(ap, t);
        for (i = 0; i < t->ncols; i++) {
                const char *s = va_arg(ap, const char *);

                t->cells[t->nrows * t->ncols + i] = xnomem(strdup(s ? s : "-"));
        }
        va_end(ap);
        t->nrows++;
}

static void table_print(const struct table *t, const char *indent)
{
        size_t w[16] = {0};
        size_t r, i, n;

        for (r = 0; r < t->nrows; r++)
                for (i = 0; i < t->ncols && i < 16; i++) {
                        n = strlen(t->cells[r * t->ncols + i]);
                        if (n > w[i])
                                w[i] = n;
                }
        for (r = 0; r < t->nrows; r++) {
                fputs(indent, stdout);
                for (i = 0; i < t->ncols; i++) {
                        const char *s = t->cells[r * t->ncols + i];
                        size_t j = i + 1;

                        /* No padding before empty trailing cells. */
                        while (j < t->ncols && t->cells[r * t->ncols + j][0] == '\0')
                                j++;
                        if (j == t->ncols) {
                                printf("%s\n", s);
                                break;
                        }
                        printf("%-*s  ", (int)w[i < 16 ? i : 15], s);
                }
        }
}

static void table_free(struct table *t)
{
        size_t i;

        for (i = 0; i < t->nrows * t->ncols; i++)
                free(t->cells[i]);
        free(t->cells);
        t->cells = NULL;
        t->nrows = 0;
}

/* Join the strings of a JSON array with ", "; "-" when empty. */
static char *join_strings(const cJSON *arr)
{
        const cJSON *it;
        size_t len = 2;
        char *s;

        cJSON_ArrayForEach(it, arr)
        {
                if (cJSON_IsString(it))
                        len += strlen(it->valuestring) + 2;
        }
        s = xnomem(calloc(1, len));
        cJSON_ArrayForEach(it, arr)
        {
                if (!cJSON_IsString(it))
                        continue;
                if (s[0] != '\0')
                        strcat(s, ", ");
                strcat(s, it->valuestring);
        }
        if (s[0] == '\0')
                strcpy(s, "-");
        return s;
}

/* ---- log ---- */

/* The error of failed job `job` from `ls --failed`, or NULL (caller frees with cJSON_Delete). */
static cJSON *failed_job(struct ferry_client *c, int64_t job)
{
        cJSON *rep, *items, *it;
        char *json = NULL;

        if (ferry_call(c, "ls", "{\"state\":\"failed\"}", 10000, &json) != 0)
                return NULL;
        rep = cJSON_Parse(json);
        ferry_free(json);
        items = cJSON_GetObjectItemCaseSensitive(rep, "items");
        cJSON_ArrayForEach(it, items)
        {
                if (jint(it, "job", -1) == job) {
                        cJSON_DetachItemViaPointer(items, it);
                        cJSON_Delete(rep);
                        return it;
                }
        }
        cJSON_Delete(rep);
        return NULL;
}

static int cmd_log(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"type", required_argument, NULL, OPT_TYPE},
            {"version", required_argument, NULL, OPT_VERSION},
            {"alias", required_argument, NULL, OPT_ALIAS},
            {"tag", required_argument, NULL, OPT_TAG},
            {"metadata", required_argument, NULL, OPT_METADATA},
            {"remote", required_argument, NULL, OPT_REMOTE},
            {"no-sync", no_argument, NULL, OPT_NO_SYNC},
            {"max-synced-objects", required_argument, NULL, OPT_MAX_SYNCED},
            {"logical-path", required_argument, NULL, OPT_LOGICAL_PATH},
            {"experiment", required_argument, NULL, OPT_EXPERIMENT},
            {"workspace", required_argument, NULL, OPT_WORKSPACE},
            {"project", required_argument, NULL, OPT_PROJECT},
            {"wait", no_argument, NULL, OPT_WAIT},
            {"timeout", required_argument, NULL, OPT_TIMEOUT},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        const char *type = NULL, *version = NULL, *metadata = NULL, *logical = NULL;
        struct ferry_log_options lo = {NULL, NULL, NULL};
        const char **aliases, **tags, **remotes;
        size_t naliases = 0, ntags = 0, nremotes = 0, i;
        bool wait = false, json = false, have_timeout = false, sync = true, have_max = false;
        int64_t max_synced = 10000;
        struct ferry_artifact *a = NULL;
        struct ferry_client *c = NULL;
        char *reply = NULL, *wreply = NULL;
        cJSON *rep = NULL, *wrep = NULL, *failed;
        int timeout_ms = 0, ch, rc, npaths, status = EXIT_FAIL;
        const char *name;
        char size[32], lim[32];
        char **paths;
        int64_t job;

        aliases = xnomem(calloc((size_t)argc, sizeof(*aliases)));
        tags = xnomem(calloc((size_t)argc, sizeof(*tags)));
        remotes = xnomem(calloc((size_t)argc, sizeof(*remotes)));
        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_TYPE:
                        type = optarg;
                        break;
                case OPT_VERSION:
                        version = optarg;
                        break;
                case OPT_ALIAS:
                        aliases[naliases++] = optarg;
                        break;
                case OPT_TAG:
                        tags[ntags++] = optarg;
                        break;
                case OPT_METADATA:
                        metadata = optarg;
                        break;
                case OPT_REMOTE:
                        remotes[nremotes++] = optarg;
                        break;
                case OPT_NO_SYNC:
                        sync = false;
                        break;
                case OPT_MAX_SYNCED:
                        if (parse_max_synced(optarg, &max_synced) != 0) {
                                status =
                                    usage(cmd, "--max-synced-objects wants 1 to %d, not \"%s\"",
                                          FERRY_MAX_SYNCED_OBJECTS, optarg);
                                goto out;
                        }
                        have_max = true;
                        break;
                case OPT_LOGICAL_PATH:
                        logical = optarg;
                        break;
                case OPT_EXPERIMENT:
                        lo.experiment = optarg;
                        break;
                case OPT_WORKSPACE:
                        lo.workspace = optarg;
                        break;
                case OPT_PROJECT:
                        lo.project = optarg;
                        break;
                case OPT_WAIT:
                        wait = true;
                        break;
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, &timeout_ms) != 0) {
                                status = usage(cmd, "--timeout wants seconds, not \"%s\"", optarg);
                                goto out;
                        }
                        have_timeout = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        status = command_help(cmd);
                        goto out;
                default:
                        status = bad_option(cmd, ch, argv);
                        goto out;
                }
        }
        if (optind >= argc) {
                status = usage(cmd, "the artifact NAME is missing");
                goto out;
        }
        name = argv[optind];
        paths = argv + optind + 1;
        npaths = argc - optind - 1;
        if (npaths == 0 && nremotes == 0) {
                status = usage(cmd, "nothing to log: give at least one PATH or --remote URI");
                goto out;
        }
        if (logical != NULL && npaths != 1) {
                status = usage(cmd, "--logical-path names one file or prefixes one directory; "
                                    "give exactly one PATH");
                goto out;
        }
        if (have_timeout && !wait) {
                status = usage(cmd, "--timeout applies to --wait");
                goto out;
        }
        if ((!sync || have_max) && nremotes == 0) {
                status = usage(cmd, "--no-sync and --max-synced-objects apply to --remote");
                goto out;
        }
        if (!sync && have_max) {
                status = usage(cmd, "--max-synced-objects applies when syncing; drop --no-sync");
                goto out;
        }

        rc = ferry_artifact_new(&a, name, type);
        if (rc == 0 && version != NULL)
                rc = ferry_artifact_set_version(a, version);
        for (i = 0; rc == 0 && i < naliases; i++)
                rc = ferry_artifact_add_alias(a, aliases[i]);
        for (i = 0; rc == 0 && i < ntags; i++)
                rc = ferry_artifact_add_tag(a, tags[i]);
        if (rc == 0 && metadata != NULL)
                rc = ferry_artifact_set_metadata(a, metadata);
        for (i = 0; rc == 0 && i < (size_t)npaths; i++)
                rc = ferry_artifact_add_file(a, paths[i], logical, 0, NULL);
        for (i = 0; rc == 0 && i < nremotes; i++)
                rc = ferry_artifact_add_remote_sync(a, remotes[i], NULL, 0, NULL,
                                                    sync ? max_synced : 0);
        if (rc != 0) {
                status = fail_artifact(a, rc);
                goto out;
        }

        if (cli_connect(cli, &c) != 0)
                goto out;
        rc = ferry_log_json(c, a, &lo, &reply);
        if (rc != 0) {
                fail_client(c, rc);
                goto out;
        }
        rep = parse_reply(reply);
        if (rep == NULL)
                goto out;
        job = jint(rep, "job", -1);
        if (!json)
                printf(
                    "logged %s%s%s (%lld asset%s, %s) as job %lld\n", name, version ? " " : "",
                    version ? version : "", jint(rep, "assets", 0), plural(jint(rep, "assets", 0)),
                    fmt_bytes(size, sizeof(size), (double)jint(rep, "bytes", 0)), (long long)job);
        if (!wait) {
                if (json)
                        print_json(rep);
                status = 0;
                goto out;
        }

        fflush(stdout);
        rc = ferry_wait(c, &job, 1, timeout_ms, &wreply);
        wrep = wreply ? cJSON_Parse(wreply) : NULL;
        if (json) {
                if (wrep != NULL) {
                        cJSON_AddItemToObject(rep, "wait", wrep);
                        wrep = NULL;
                }
                print_json(rep);
        }
        if (rc == 0) {
                if (!json) {
                        printf("job %lld delivered\n", (long long)job);
                        fflush(stdout);
                        print_warnings(wrep);
                }
                status = 0;
        } else if (rc == FERRY_EFAILED) {
                failed = failed_job(c, job);
                fail("job %lld (%s) failed: %s; fix the cause, then run `ferry retry %lld`",
                     (long long)job, name,
                     jstr(failed, "error") ? jstr(failed, "error") : "see `ferry ls --failed`",
                     (long long)job);
                cJSON_Delete(failed);
        } else if (rc == FERRY_ETIMEDOUT && wreply != NULL) {
                fail("job %lld is still queued after %s; ferryd keeps it and delivers it later "
                     "(see `ferry status`)",
                     (long long)job, fmt_limit(lim, sizeof(lim), timeout_ms));
        } else {
                fail("job %lld is logged, but waiting for it failed: %s", (long long)job,
                     client_msg(c, rc));
        }
out:
        cJSON_Delete(wrep);
        cJSON_Delete(rep);
        ferry_free(wreply);
        ferry_free(reply);
        ferry_close(c);
        ferry_artifact_free(a);
        free(remotes);
        free(tags);
        free(aliases);
        return status;
}

/* ---- status, ls ---- */

/* Parse the options of commands that take only --json and further positional arguments. */
static int json_only_options(const struct command *cmd, int argc, char **argv, bool *json,
                             int *status)
{
        static const struct option opts[] = {
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        int ch;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                if (ch == OPT_JSON) {
                        *json = true;
                        continue;
                }
                *status = ch == 'h' ? command_help(cmd) : bad_option(cmd, ch, argv);
                return -1;
        }
        return 0;
}

static void print_status(const cJSON *st)
{
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(st, "errors");
        const cJSON *it;
        const char *backend = jstr(st, "backend"), *last = jstr(st, "last_error");
        long long since = jint(st, "offline_since", -1), budget = jint(st, "spool_budget", 0);
        char a[32], b[32], r[32], t[32], d[32];
        struct table tab = {3, 0, NULL};

        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "online")))
                printf("backend %s, online\n", backend ? backend : "?");
        else if (since >= 0)
                printf("backend %s, offline since %s (%s)\n", backend ? backend : "?",
                       fmt_time(t, sizeof(t), since),
                       fmt_duration(d, sizeof(d), wall_ms() - since));
        else
                printf("backend %s, offline\n", backend ? backend : "?");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "paused")))
                printf("paused      nothing new is delivered until `ferry resume`\n");
        printf("queue       %lld queued, %lld running, %lld failed, %lld done\n",
               jint(st, "queued", 0), jint(st, "running", 0), jint(st, "failed", 0),
               jint(st, "done", 0));
        printf("bytes       %s queued, %s sent, %s/s\n",
               fmt_bytes(a, sizeof(a), (double)jint(st, "bytes_queued", 0)),
               fmt_bytes(b, sizeof(b), (double)jint(st, "bytes_sent", 0)),
               fmt_bytes(r, sizeof(r), (double)jint(st, "rate_bps", 0)));
        if (budget > 0)
                printf("spool       %s of %s\n",
                       fmt_bytes(a, sizeof(a), (double)jint(st, "spool_bytes", 0)),
                       fmt_bytes(b, sizeof(b), (double)budget));
        else
                printf("spool       %s\n",
                       fmt_bytes(a, sizeof(a), (double)jint(st, "spool_bytes", 0)));
        if (last != NULL)
                printf("last error  %s\n", last);
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(st, "warnings"))
        {
                if (cJSON_IsString(it))
                        printf("warning     %s\n", it->valuestring);
        }
        if (cJSON_GetArraySize(errors) == 0)
                return;
        printf("failed items (newest first):\n");
        cJSON_ArrayForEach(it, errors)
        {
                char job[32], msg[1024];

                snprintf(job, sizeof(job), "job %lld", jint(it, "job", -1));
                snprintf(msg, sizeof(msg), "%s: %s", jstr(it, "code") ? jstr(it, "code") : "?",
                         jstr(it, "message") ? jstr(it, "message") : "");
                table_add(&tab, job, jstr(it, "name"), msg);
        }
        table_print(&tab, "  ");
        table_free(&tab);
        printf("fix the cause, then requeue them with `ferry retry --all` or `ferry retry ID`\n");
}

static int cmd_status(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        cJSON *st;
        int rc, status = EXIT_FAIL;

        if (json_only_options(cmd, argc, argv, &json, &status) != 0)
                return status;
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_status(c, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((st = parse_reply(reply)) != NULL) {
                if (json)
                        print_json(st);
                else
                        print_status(st);
                cJSON_Delete(st);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

static void print_items(const cJSON *items, const char *state)
{
        const cJSON *it;
        struct table tab = {8, 0, NULL};
        long long now = wall_ms();

        if (cJSON_GetArraySize(items) == 0) {
                if (strcmp(state, "failed") == 0)
                        printf("no failed items\n");
                else if (strcmp(state, "done") == 0)
                        printf("no delivered items\n");
                else if (strcmp(state, "all") == 0)
                        printf("no items\n");
                else
                        printf("nothing queued, running or failed\n");
                return;
        }
        table_add(&tab, "JOB", "STATE", "NAME", "VERSION", "ASSETS", "SIZE", "CREATED", "NOTE");
        cJSON_ArrayForEach(it, items)
        {
                char job[24], assets[24], size[32], created[32], note[1024], d[32];
                const char *st = jstr(it, "state") ? jstr(it, "state") : "?";
                long long next = jint(it, "next_attempt", -1), attempts = jint(it, "attempts", 0);

                snprintf(job, sizeof(job), "%lld", jint(it, "job", -1));
                snprintf(assets, sizeof(assets), "%lld", jint(it, "assets", 0));
                fmt_bytes(size, sizeof(size), (double)jint(it, "bytes", 0));
                fmt_time(created, sizeof(created), jint(it, "created", 0));
                note[0] = '\0';
                if (jstr(it, "error") != NULL)
                        snprintf(note, sizeof(note), "%s", jstr(it, "error"));
                else if (strcmp(st, "queued") == 0 && attempts > 0 && next > now)
                        snprintf(note, sizeof(note), "attempt %lld failed, next in %s", attempts,
                                 fmt_duration(d, sizeof(d), next - now));
                table_add(&tab, job, st, jstr(it, "name"), jstr(it, "version"), assets, size,
                          created, note);
        }
        table_print(&tab, "");
        table_free(&tab);
}

static int cmd_ls(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"json", no_argument, NULL, OPT_JSON},
            {"all", no_argument, NULL, OPT_ALL},
            {"failed", no_argument, NULL, OPT_FAILED},
            {"done", no_argument, NULL, OPT_DONE},
            {"limit", required_argument, NULL, OPT_LIMIT},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        const char *state = NULL;
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        cJSON *rep;
        int ch, rc, limit = 0, status = EXIT_FAIL;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                const char *want = NULL;

                switch (ch) {
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_ALL:
                        want = "all";
                        break;
                case OPT_FAILED:
                        want = "failed";
                        break;
                case OPT_DONE:
                        want = "done";
                        break;
                case OPT_LIMIT:
                        if (parse_limit(optarg, &limit) != 0)
                                return usage(cmd, "--limit wants a number from 1 to %d, not \"%s\"",
                                             FERRY_LS_LIMIT_MAX, optarg);
                        break;
                case 'h':
                        return command_help(cmd);
                default:
                        return bad_option(cmd, ch, argv);
                }
                if (want != NULL && state != NULL && strcmp(state, want) != 0)
                        return usage(cmd, "give only one of --all, --failed and --done");
                if (want != NULL)
                        state = want;
        }
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_ls(c, state, limit, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json)
                        print_json(rep);
                else
                        print_items(cJSON_GetObjectItemCaseSensitive(rep, "items"),
                                    state ? state : "active");
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

/* ---- wait ---- */

/* One "\r3 queued, 1 running, 12.3 MiB left" line on stderr from a status request. */
static void wait_progress_line(struct ferry_client *c)
{
        char *reply = NULL;
        char left[32];
        cJSON *st;

        if (ferry_status(c, &reply) != 0)
                return;
        st = cJSON_Parse(reply);
        ferry_free(reply);
        if (st == NULL)
                return;
        fprintf(stderr, "\r%lld queued, %lld running, %s left\033[K", jint(st, "queued", 0),
                jint(st, "running", 0),
                fmt_bytes(left, sizeof(left), (double)jint(st, "bytes_queued", 0)));
        fflush(stderr);
        cJSON_Delete(st);
}

/* ferry_wait() in ticks of WAIT_TICK_MS with a progress line between them. */
static int wait_with_progress(struct ferry_client *c, int timeout_ms, char **reply)
{
        long long deadline = timeout_ms > 0 ? mono_ms() + timeout_ms : -1;
        int rc, tick;

        for (;;) {
                tick = WAIT_TICK_MS;
                if (deadline >= 0 && deadline - mono_ms() < tick)
                        tick = deadline - mono_ms() > 0 ? (int)(deadline - mono_ms()) : 1;
                ferry_free(*reply);
                *reply = NULL;
                rc = ferry_wait(c, NULL, 0, tick, reply);
                if (rc != FERRY_ETIMEDOUT || *reply == NULL)
                        break;
                if (deadline >= 0 && mono_ms() >= deadline)
                        break;
                wait_progress_line(c);
        }
        fputs("\r\033[K", stderr);
        fflush(stderr);
        return rc;
}

static int cmd_wait(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"timeout", required_argument, NULL, OPT_TIMEOUT},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        char lim[32];
        cJSON *rep = NULL;
        int ch, rc, timeout_ms = 0, status = EXIT_FAIL;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, &timeout_ms) != 0)
                                return usage(cmd, "--timeout wants seconds, not \"%s\"", optarg);
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        return command_help(cmd);
                default:
                        return bad_option(cmd, ch, argv);
                }
        }
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        if (!json && isatty(STDERR_FILENO))
                rc = wait_with_progress(c, timeout_ms, &reply);
        else
                rc = ferry_wait(c, NULL, 0, timeout_ms, &reply);
        rep = reply ? cJSON_Parse(reply) : NULL;
        if (json && rep != NULL)
                print_json(rep);
        if (rc == 0) {
                if (!json)
                        printf("queue drained: everything is delivered\n");
                status = 0;
        } else if (rc == FERRY_EFAILED) {
                fail("the queue is drained but %lld item%s failed; see `ferry ls --failed`",
                     jint(rep, "failed", 0), plural(jint(rep, "failed", 0)));
        } else if (rc == FERRY_ETIMEDOUT && rep != NULL) {
                fail("timed out after %s with %lld item%s still queued or running; ferryd keeps "
                     "delivering them",
                     fmt_limit(lim, sizeof(lim), timeout_ms), jint(rep, "pending", 0),
                     plural(jint(rep, "pending", 0)));
        } else {
                fail_client(c, rc);
        }
        cJSON_Delete(rep);
        ferry_free(reply);
        ferry_close(c);
        return status;
}

/* ---- retry ---- */

static int cmd_retry(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"all", no_argument, NULL, OPT_ALL},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        struct ferry_client *c = NULL;
        bool all = false, json = false;
        char *reply = NULL;
        char args[64];
        cJSON *rep;
        int64_t job = 0;
        long long n;
        int ch, rc, status = EXIT_FAIL;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_ALL:
                        all = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        return command_help(cmd);
                default:
                        return bad_option(cmd, ch, argv);
                }
        }
        if (all == (optind < argc))
                return usage(cmd, "give either a job ID or --all");
        if (optind + 1 < argc)
                return usage(cmd, "give one job ID");
        if (!all && parse_job(argv[optind], &job) != 0)
                return usage(cmd, "job ID \"%s\" is not a number", argv[optind]);
        if (all)
                snprintf(args, sizeof(args), "{\"all\":true}");
        else
                snprintf(args, sizeof(args), "{\"job\":%lld}", (long long)job);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_call(c, "retry", args, 0, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                n = jint(rep, "requeued", 0);
                if (json)
                        print_json(rep);
                else if (n == 0)
                        printf("no failed items to retry\n");
                else
                        printf("requeued %lld item%s\n", n, plural(n));
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

/* ---- pause, resume, cache ---- */

/* `ferry pause` and `ferry resume`: one handler, told apart by the command's name. */
static int cmd_pause(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        bool pause = strcmp(cmd->name, "pause") == 0, json = false;
        struct ferry_client *c = NULL;
        char *reply = NULL;
        cJSON *rep;
        int rc, status = EXIT_FAIL;

        if (json_only_options(cmd, argc, argv, &json, &status) != 0)
                return status;
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_pause(c, pause, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json)
                        print_json(rep);
                else if (pause)
                        printf("queue paused: nothing new is delivered until `ferry resume`\n");
                else
                        printf("queue resumed\n");
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

static int cmd_recover(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        cJSON *rep;
        int rc, status = EXIT_FAIL;

        if (json_only_options(cmd, argc, argv, &json, &status) != 0)
                return status;
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_call(c, "recover", NULL, 0, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json) {
                        print_json(rep);
                } else {
                        printf("re-queued %lld versions (%lld files) from quarantine\n",
                               jint(rep, "versions", 0), jint(rep, "files", 0));
                        if (jint(rep, "partial", 0) > 0)
                                printf("%lld of them lack some metadata or files their manifests "
                                       "name\n",
                                       jint(rep, "partial", 0));
                        if (jint(rep, "skipped", 0) > 0)
                                printf("%lld versions were skipped (their version is queued "
                                       "already, or their manifest is unreadable)\n",
                                       jint(rep, "skipped", 0));
                        if (jint(rep, "orphans", 0) > 0)
                                printf("%lld files carry no manifest and stay in quarantine\n",
                                       jint(rep, "orphans", 0));
                }
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

static int cmd_cache(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"clear", no_argument, NULL, OPT_CLEAR},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        struct ferry_client *c = NULL;
        bool clear = false, json = false;
        char *reply = NULL;
        char a[32], b[32];
        long long blobs, budget;
        cJSON *rep;
        int ch, rc, status = EXIT_FAIL;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_CLEAR:
                        clear = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        return command_help(cmd);
                default:
                        return bad_option(cmd, ch, argv);
                }
        }
        if (optind < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_cache(c, clear, &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json) {
                        print_json(rep);
                } else {
                        if (clear)
                                printf("cleared %s\n",
                                       fmt_bytes(a, sizeof(a), (double)jint(rep, "freed", 0)));
                        blobs = jint(rep, "blobs", 0);
                        budget = jint(rep, "budget", 0);
                        printf("cache %s: %s in %lld blob%s",
                               jstr(rep, "path") ? jstr(rep, "path") : "?",
                               fmt_bytes(a, sizeof(a), (double)jint(rep, "bytes", 0)), blobs,
                               plural(blobs));
                        if (budget > 0)
                                printf(", budget %s", fmt_bytes(b, sizeof(b), (double)budget));
                        printf("\n");
                }
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

/* ---- get, download ---- */

static void print_version(const cJSON *v)
{
        const cJSON *assets = cJSON_GetObjectItemCaseSensitive(v, "assets");
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(v, "metadata");
        const cJSON *it;
        const char *state = jstr(v, "state");
        char *aliases, *tags, *m = NULL;
        char size[32];
        struct table tab = {4, 0, NULL};

        aliases = join_strings(cJSON_GetObjectItemCaseSensitive(v, "aliases"));
        tags = join_strings(cJSON_GetObjectItemCaseSensitive(v, "version_tags"));
        if (cJSON_IsObject(meta) && meta->child != NULL)
                m = xnomem(cJSON_PrintUnformatted(meta));
        printf("name        %s\n", jstr(v, "name") ? jstr(v, "name") : "?");
        printf("version     %s\n", jstr(v, "version") ? jstr(v, "version") : "-");
        printf("type        %s\n", jstr(v, "type") ? jstr(v, "type") : "-");
        printf("workspace   %s\n", jstr(v, "workspace") ? jstr(v, "workspace") : "-");
        printf("project     %s\n", jstr(v, "project") ? jstr(v, "project") : "-");
        printf("aliases     %s\n", aliases);
        printf("tags        %s\n", tags);
        if (state != NULL && strcmp(state, "QUEUED") == 0)
                printf("state       QUEUED on this node, not uploaded yet (job %lld)\n",
                       jint(v, "job", -1));
        else
                printf("state       %s\n", state ? state : "?");
        printf("size        %s\n", fmt_bytes(size, sizeof(size), (double)jint(v, "size", 0)));
        printf("experiment  %s\n", jstr(v, "experiment") ? jstr(v, "experiment") : "-");
        printf("metadata    %s\n", m ? m : "-");
        printf("assets      %d\n", cJSON_GetArraySize(assets));
        if (cJSON_GetArraySize(assets) > 0) {
                table_add(&tab, "LOGICAL PATH", "SIZE", "KIND", "LINK");
                cJSON_ArrayForEach(it, assets)
                {
                        bool remote = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "remote"));
                        const cJSON *am = cJSON_GetObjectItemCaseSensitive(it, "metadata");
                        bool synced =
                            remote && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(am, "synced"));

                        fmt_bytes(
                            size, sizeof(size),
                            (double)(synced ? jint(am, "file_size", 0) : jint(it, "size", 0)));
                        table_add(&tab, jstr(it, "logical_path"), remote && !synced ? "-" : size,
                                  synced   ? "synced"
                                  : remote ? "remote"
                                           : "file",
                                  jstr(it, "link"));
                }
                table_print(&tab, "  ");
                table_free(&tab);
        }
        cJSON_free(m);
        free(tags);
        free(aliases);
}

static int cmd_get(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        cJSON *rep;
        int rc, status = EXIT_FAIL;

        if (json_only_options(cmd, argc, argv, &json, &status) != 0)
                return status;
        if (optind >= argc)
                return usage(cmd, "the artifact name is missing");
        if (optind + 1 < argc)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind + 1]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        rc = ferry_get(c, argv[optind], &reply);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json) {
                        print_json(rep);
                } else {
                        print_version(rep);
                        fflush(stdout);
                        print_warnings(rep);
                }
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

static void print_download(const cJSON *d, const char *spec)
{
        static const char *const actions[] = {"written", "kept", "preserved", "skipped"};
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(d, "files");
        const cJSON *it;
        long long counts[4] = {0, 0, 0, 0};
        char size[32];
        size_t i;
        bool first = true;

        cJSON_ArrayForEach(it, files)
        {
                for (i = 0; i < 4; i++)
                        if (jstr(it, "action") && strcmp(jstr(it, "action"), actions[i]) == 0)
                                counts[i]++;
        }
        if (jstr(d, "version") != NULL)
                printf("downloaded version %s of %s", jstr(d, "version"), spec);
        else
                printf("downloaded %s", spec);
        printf(" into %s:", jstr(d, "dir") ? jstr(d, "dir") : "?");
        for (i = 0; i < 4; i++) {
                if (counts[i] == 0)
                        continue;
                printf("%s %lld %s", first ? "" : ",", counts[i], actions[i]);
                first = false;
        }
        printf("%s (%s)\n", first ? " no files" : "",
               fmt_bytes(size, sizeof(size), (double)jint(d, "bytes", 0)));
        cJSON_ArrayForEach(it, files)
        {
                if (jstr(it, "note") != NULL)
                        printf("  %s: %s\n",
                               jstr(it, "logical_path") ? jstr(it, "logical_path") : "?",
                               jstr(it, "note"));
        }
}

/* The progress line of `ferry download` on a terminal, from libferry's own count. */
static void progress_draw(struct ferry_client *c, const char *spec)
{
        int64_t done = 0, total = 0;
        char a[32], b[32];

        const char *version = ferry_download_version(c);

        if (ferry_download_progress(c, &done, &total) != 0 || total <= 0)
                return;
        fprintf(stderr, "\rdownloading %s%s%s: %s of %s (%d%%)\033[K", spec, version ? " " : "",
                version ? version : "", fmt_bytes(a, sizeof(a), (double)done),
                fmt_bytes(b, sizeof(b), (double)total), (int)(done * 100 / total));
        fflush(stderr);
}

static void progress_clear(void)
{
        fputs("\r\033[K", stderr);
        fflush(stderr);
}

/* ferry_download() with a progress line on stderr, redrawn every PROGRESS_TICK_MS. */
static int download_with_progress(struct ferry_client *c, const char *spec, const char *dir,
                                  enum ferry_overwrite mode, char **reply)
{
        int rc;

        rc = ferry_download_start(c, spec, dir, mode);
        if (rc != 0)
                return rc;
        while ((rc = ferry_download_ready(c, PROGRESS_TICK_MS)) == 0)
                progress_draw(c, spec);
        progress_clear();
        return ferry_download_finish(c, reply);
}

static int cmd_download(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"overwrite", required_argument, NULL, OPT_OVERWRITE},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        enum ferry_overwrite mode = FERRY_OVERWRITE_FAIL;
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL;
        cJSON *rep;
        int ch, rc, status = EXIT_FAIL;

        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_OVERWRITE:
                        if (strcmp(optarg, "fail") == 0)
                                mode = FERRY_OVERWRITE_FAIL;
                        else if (strcmp(optarg, "preserve") == 0)
                                mode = FERRY_OVERWRITE_PRESERVE;
                        else if (strcmp(optarg, "overwrite") == 0)
                                mode = FERRY_OVERWRITE_REPLACE;
                        else
                                return usage(cmd,
                                             "--overwrite is fail, preserve or overwrite, not "
                                             "\"%s\"",
                                             optarg);
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        return command_help(cmd);
                default:
                        return bad_option(cmd, ch, argv);
                }
        }
        if (argc - optind < 2)
                return usage(cmd, "give the artifact and a target DIR");
        if (argc - optind > 2)
                return usage(cmd, "unexpected argument \"%s\"", argv[optind + 2]);
        if (cli_connect(cli, &c) != 0)
                return EXIT_FAIL;
        if (!json && isatty(STDERR_FILENO)) {
                rc = download_with_progress(c, argv[optind], argv[optind + 1], mode, &reply);
        } else {
                rc = ferry_download(c, argv[optind], argv[optind + 1], mode, &reply);
        }
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json)
                        print_json(rep);
                else
                        print_download(rep, argv[optind]);
                cJSON_Delete(rep);
                status = 0;
        }
        ferry_free(reply);
        ferry_close(c);
        return status;
}

/* ---- experiment ---- */

static int cmd_experiment(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        static const struct option opts[] = {
            {"workspace", required_argument, NULL, OPT_WORKSPACE},
            {"project", required_argument, NULL, OPT_PROJECT},
            {"name", required_argument, NULL, OPT_NAME},
            {"key", required_argument, NULL, OPT_KEY},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        struct ferry_client *c = NULL;
        bool json = false;
        char *reply = NULL, *args;
        cJSON *req, *rep;
        int ch, rc, status = EXIT_FAIL;

        req = xnomem(cJSON_CreateObject());
        while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                const char *field = NULL;

                switch (ch) {
                case OPT_WORKSPACE:
                        field = "workspace";
                        break;
                case OPT_PROJECT:
                        field = "project";
                        break;
                case OPT_NAME:
                        field = "name";
                        break;
                case OPT_KEY:
                        field = "key";
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        status = command_help(cmd);
                        goto out;
                default:
                        status = bad_option(cmd, ch, argv);
                        goto out;
                }
                if (field != NULL) {
                        cJSON_DeleteItemFromObjectCaseSensitive(req, field);
                        xnomem(cJSON_AddStringToObject(req, field, optarg));
                }
        }
        if (optind < argc) {
                status = usage(cmd, "unexpected argument \"%s\"", argv[optind]);
                goto out;
        }
        if (cli_connect(cli, &c) != 0)
                goto out;
        args = xnomem(cJSON_PrintUnformatted(req));
        rc = ferry_call(c, "experiment.create", args, 0, &reply);
        cJSON_free(args);
        if (rc != 0) {
                fail_client(c, rc);
        } else if ((rep = parse_reply(reply)) != NULL) {
                if (json)
                        print_json(rep);
                else
                        printf("%s\n", jstr(rep, "key") ? jstr(rep, "key") : "");
                cJSON_Delete(rep);
                status = 0;
        }
out:
        ferry_free(reply);
        ferry_close(c);
        cJSON_Delete(req);
        return status;
}

/* ---- help ---- */

static const struct command *command_find(const char *name)
{
        const struct command *cmd;

        for (cmd = commands; cmd->name != NULL; cmd++)
                if (strcmp(cmd->name, name) == 0)
                        return cmd;
        return NULL;
}

static int cmd_help(const struct command *cmd, struct cli *cli, int argc, char **argv)
{
        const struct command *which;

        if (argc < 2) {
                main_usage(stdout);
                return 0;
        }
        which = command_find(argv[1]);
        if (which == NULL)
                return usage(cmd, "unknown command \"%s\"", argv[1]);
        return command_help(which);
}

static const struct command commands[] = {
    {"log", cmd_log, "NAME PATH... [options]",
     "log an artifact version: files, directories and remote URIs",
     "  --type T            artifact type (default: other)\n"
     "  --version V         strict semantic version (default: the backend's next)\n"
     "  --alias A           an alias; repeatable\n"
     "  --tag T             a version tag; repeatable\n"
     "  --metadata JSON     version metadata, a JSON object\n"
     "  --remote URI        a remote asset (recorded, not uploaded); repeatable. ferryd\n"
     "                      lists an s3:// URI and records each object under it\n"
     "  --no-sync           record each --remote URI as one remote asset, unlisted\n"
     "  --max-synced-objects N  at most N objects per s3:// URI (default 10000); more\n"
     "                      records the URI as one unsynced remote asset\n"
     "  --logical-path P    the name of the one file PATH, or the prefix of the one\n"
     "                      directory PATH\n"
     "  --experiment KEY    log into this experiment (see `ferry experiment`)\n"
     "  --workspace W       workspace (default: ferryd's configuration)\n"
     "  --project P         project (default: ferryd's configuration)\n"
     "  --wait              wait until the version is delivered; exit 1 if it fails\n"
     "  --timeout SECONDS   give up waiting after this long (with --wait)\n"
     "  --json              print the reply as JSON\n"},
    {"status", cmd_status, "[--json]",
     "queue counts, bytes, rate, online/offline, last error, failed items",
     "  --json              print the reply as JSON\n"},
    {"ls", cmd_ls, "[--all|--failed|--done] [--limit N] [--json]",
     "list queued, running and failed items (oldest first)",
     "  --all               every item, delivered ones too\n"
     "  --failed            failed items only\n"
     "  --done              delivered items only\n"
     "  --limit N           the newest N items (1 to 100000; default 1000)\n"
     "  --json              print the reply as JSON\n"},
    {"wait", cmd_wait, "[--timeout SECONDS] [--json]",
     "wait until the queue is drained; exit 1 on timeout or failed items",
     "  --timeout SECONDS   give up after this long (default: never)\n"
     "  --json              print the reply as JSON\n"},
    {"retry", cmd_retry, "ID|--all [--json]", "requeue a failed item, or all of them",
     "  --all               requeue every failed item\n"
     "  --json              print the reply as JSON\n"},
    {"recover", cmd_recover, "[--json]",
     "re-queue the versions whose snapshots ferryd put in quarantine",
     "  --json              print the reply as JSON\n"},
    {"pause", cmd_pause, "[--json]",
     "hold deliveries until `ferry resume`; logging and downloads keep working",
     "  --json              print the reply as JSON\n"},
    {"resume", cmd_pause, "[--json]", "resume deliveries held by `ferry pause`",
     "  --json              print the reply as JSON\n"},
    {"get", cmd_get, "[WORKSPACE/]NAME[:VERSION_OR_ALIAS] [--json]",
     "show an artifact version (the latest without VERSION_OR_ALIAS)",
     "  --json              print the reply as JSON\n"},
    {"download", cmd_download,
     "[WORKSPACE/]NAME[:VERSION_OR_ALIAS] DIR [--overwrite MODE] [--json]",
     "download an artifact version's files into DIR (created if missing)",
     "  --overwrite MODE    for files already in DIR: fail (default; identical files\n"
     "                      are kept), preserve or overwrite\n"
     "  --json              print the reply as JSON (and no progress line)\n"},
    {"cache", cmd_cache, "[--clear] [--json]",
     "show the node's download cache: where, how full, its budget",
     "  --clear             empty the cache first\n"
     "  --json              print the reply as JSON\n"},
    {"experiment", cmd_experiment, "[--workspace W] [--project P] [--name N] [--key K]",
     "print a new experiment key, to share one experiment between processes",
     "  --workspace W       workspace (default: ferryd's configuration)\n"
     "  --project P         project (default: ferryd's configuration)\n"
     "  --name N            experiment name\n"
     "  --key K             adopt this key (32 to 50 letters and digits)\n"
     "  --json              print the reply as JSON\n"},
    {"help", cmd_help, "[COMMAND]", "show this help, or a command's", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"socket", required_argument, NULL, OPT_SOCKET},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, OPT_VERSION},
            {NULL, 0, NULL, 0},
        };
        struct cli cli = {NULL};
        const struct command *cmd;
        char msg[256];
        int ch;

        opterr = 0;
        /* '+': global options stop at the command name. */
        while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
                switch (ch) {
                case OPT_SOCKET:
                        if (optarg[0] == '\0') {
                                fprintf(stderr, "ferry: --socket needs a path\n");
                                return main_usage_error();
                        }
                        cli.socket = optarg;
                        break;
                case 'h':
                        main_usage(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("ferry %s\n", FERRY_VERSION_STRING);
                        return 0;
                default:
                        fprintf(stderr, "ferry: %s\n", option_error(ch, argv, msg, sizeof(msg)));
                        return main_usage_error();
                }
        }
        if (optind >= argc) {
                fprintf(stderr, "ferry: no command given\n");
                return main_usage_error();
        }
        cmd = command_find(argv[optind]);
        if (cmd == NULL) {
                fprintf(stderr, "ferry: unknown command \"%s\"\n", argv[optind]);
                return main_usage_error();
        }
        /* Each command parses its own options from its name on (optind 0 resets getopt). */
        argc -= optind;
        argv += optind;
        optind = 0;
        return cmd->run(cmd, &cli, argc, argv);
}
