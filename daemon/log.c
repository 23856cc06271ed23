/* log.c — ferryd's logging. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "proto.h"

static enum log_level log_level = LOG_LEVEL_INFO;
static bool log_journal;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_priorities[] = {3, 4, 6, 7};

void log_set_level(enum log_level level)
{
        log_level = level;
}

enum log_level log_get_level(void)
{
        return log_level;
}

int log_parse_level(const char *name, enum log_level *out)
{
        size_t i;

        if (name == NULL)
                return -1;
        if (strcmp(name, "warning") == 0) {
                *out = LOG_LEVEL_WARN;
                return 0;
        }
        for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
                if (strcmp(name, level_names[i]) == 0) {
                        *out = (enum log_level)i;
                        return 0;
                }
        }
        return -1;
}

const char *log_level_name(enum log_level level)
{
        return level_names[level];
}

void log_set_level_from_env(void)
{
        enum log_level level;

        if (log_parse_level(getenv("FERRY_LOG_LEVEL"), &level) == 0)
                log_level = level;
}

bool log_detect_journal(void)
{
        const char *v = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        /* systemd sets "device:inode" of the stream it connected; stderr may be redirected. */
        if (v == NULL || sscanf(v, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_set_journal(bool journal)
{
        log_journal = journal;
}

bool log_is_journal(void)
{
        return log_journal;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        char line[2048], clean[4096];
        struct timespec ts;
        struct tm tm;
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        /* Text from peers (names, servers' messages) can forge lines or move terminals. */
        proto_sanitize(clean, sizeof(clean), line, strlen(line));
        if (log_journal) {
                fprintf(stderr, "<%d>%s\n", level_priorities[level], clean);
                return;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ferryd %s: %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                level_names[level], clean);
}
