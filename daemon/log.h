/*
 * log.h — ferryd's logging: one line per event to stderr.
 *
 * On a terminal or in a file each line carries a UTC time and the level. Under
 * systemd (stderr is the journal: JOURNAL_STREAM names it) each line starts
 * with its syslog priority instead ("<3>" error, "<4>" warning, "<6>" info,
 * "<7>" debug), which journald turns into the entry's priority and time.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Messages above this level are dropped. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "debug", "info", "warn" (or "warning"), "error" into *out: 0, or -1 for anything else. */
int log_parse_level(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);
/* Apply FERRY_LOG_LEVEL when it names a level (ignored otherwise). */
void log_set_level_from_env(void);

/* True when stderr is the journal (JOURNAL_STREAM matches it): lines get priority prefixes. */
bool log_detect_journal(void);
void log_set_journal(bool journal);
bool log_is_journal(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
