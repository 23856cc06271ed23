/*
 * output.c — what `ferry` prints: one-sentence failures and usage errors,
 * JSON documents, sizes, durations and times, aligned tables; and the
 * parsing of numbers given on the command line.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Print "ferry: <sentence>" on stderr; return EXIT_FAIL. */
int fail(const char *fmt, ...)
{
        va_list ap;

        fputs("ferry: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_FAIL;
}

void print_synopsis(FILE *f, const struct command *cmd)
{
        fprintf(f, "usage: ferry [--socket PATH] %s%s%s\n", cmd->name, cmd->synopsis[0] ? " " : "",
                cmd->synopsis);
}

/* Print the message and the command's synopsis on stderr; return EXIT_USAGE. */
int usage(const struct command *cmd, const char *fmt, ...)
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

const char *client_msg(const struct ferry_client *c, int rc)
{
        const char *msg = ferry_last_error(c);

        return msg[0] != '\0' ? msg : ferry_strerror(rc);
}

int fail_client(const struct ferry_client *c, int rc)
{
        return fail("%s", client_msg(c, rc));
}

int fail_artifact(const struct ferry_artifact *a, int rc)
{
        const char *msg = ferry_artifact_last_error(a);

        return fail("%s", msg[0] != '\0' ? msg : ferry_strerror(rc));
}

void *xnomem(void *p)
{
        if (p == NULL) {
                fail("out of memory");
                exit(EXIT_FAIL);
        }
        return p;
}

long long jint(const cJSON *obj, const char *key, long long def)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsNumber(v) ? (long long)v->valuedouble : def;
}

const char *jstr(const cJSON *obj, const char *key)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsString(v) ? v->valuestring : NULL;
}

void print_json(const cJSON *obj)
{
        cJSON *copy = xnomem(cJSON_Duplicate(obj, 1));
        char *s;

        cJSON_DeleteItemFromObjectCaseSensitive(copy, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "ok");
        s = xnomem(cJSON_Print(copy));
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(copy);
}

const char *plural(long long n)
{
        return n == 1 ? "" : "s";
}

const char *fmt_bytes(char *buf, size_t len, double n)
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

const char *fmt_duration(char *buf, size_t len, long long ms)
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
const char *fmt_time(char *buf, size_t len, long long ms)
{
        time_t t = (time_t)(ms / 1000);
        struct tm tm;

        if (localtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, len, "%lld", ms);
        return buf;
}

/* A time limit as given: "30 s", "0.5 s". */
const char *fmt_limit(char *buf, size_t len, int ms)
{
        snprintf(buf, len, "%g s", ms / 1000.0);
        return buf;
}

long long wall_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void print_warnings(const cJSON *rep)
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

char *join_strings(const cJSON *arr)
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

int parse_seconds(const char *s, int *ms)
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

int parse_count(const char *s, long long lo, long long hi, long long *out)
{
        char *end;
        long long v;

        if (s[0] < '0' || s[0] > '9')
                return -1;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < lo || v > hi)
                return -1;
        *out = v;
        return 0;
}

void table_add(struct table *t, ...)
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

void table_print(const struct table *t, const char *indent)
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

void table_free(struct table *t)
{
        size_t i;

        for (i = 0; i < t->nrows * t->ncols; i++)
                free(t->cells[i]);
        free(t->cells);
        t->cells = NULL;
        t->nrows = 0;
}
