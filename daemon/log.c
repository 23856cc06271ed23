/* log.c — ferryd's logging. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"

static enum log_level log_level = LOG_LEVEL_INFO;

void log_set_level(enum log_level level)
{
        log_level = level;
}

void log_set_level_from_env(void)
{
        const char *v = getenv("FERRY_LOG_LEVEL");

        if (v == NULL)
                return;
        if (strcmp(v, "debug") == 0)
                log_level = LOG_LEVEL_DEBUG;
        else if (strcmp(v, "info") == 0)
                log_level = LOG_LEVEL_INFO;
        else if (strcmp(v, "warn") == 0)
                log_level = LOG_LEVEL_WARN;
        else if (strcmp(v, "error") == 0)
                log_level = LOG_LEVEL_ERROR;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        static const char *const names[] = {"error", "warn", "info", "debug"};
        char line[2048], clean[4096];
        struct timespec ts;
        struct tm tm;
        va_list ap;

        if (level > log_level)
                return;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        /* Text from peers (names, servers' messages) can forge lines or move terminals. */
        proto_sanitize(clean, sizeof(clean), line, strlen(line));
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ferryd %s: %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                names[level], clean);
}
