/*
 * cli.h — the `ferry` command: what the runner (main.c), the output helpers
 * (output.c) and the commands (commands.c) share.
 *
 * A command is a row of the table in commands.c: its name, the options it
 * takes, how many arguments, whether it talks to ferryd, and up to four
 * small functions. main.c does the rest for every command alike, as tmux's
 * cmd-*.c entries and smtpctl's actions do: parse the options into `struct
 * args`, check the argument count, check() the values, connect, call() ferryd,
 * then print the reply — as JSON with --json, else by print() — and clean up.
 *
 * Exit status: 0 success, 1 the operation failed (one sentence on stderr,
 * "ferry: ..."), 2 usage (message and synopsis on stderr). --json prints
 * exactly one JSON document on stdout: the daemon's reply without "id" and
 * "ok".
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "ferry.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Every option any command takes; a command lists the ones it accepts. */
#define CLI_OPTIONS(XX)                                                                            \
        XX(TYPE, "type", 1)                                                                        \
        XX(VERSION, "version", 1)                                                                  \
        XX(ALIAS, "alias", 1)                                                                      \
        XX(TAG, "tag", 1)                                                                          \
        XX(METADATA, "metadata", 1)                                                                \
        XX(REMOTE, "remote", 1)                                                                    \
        XX(NO_SYNC, "no-sync", 0)                                                                  \
        XX(MAX_SYNCED, "max-synced-objects", 1)                                                    \
        XX(LOGICAL_PATH, "logical-path", 1)                                                        \
        XX(EXPERIMENT, "experiment", 1)                                                            \
        XX(WORKSPACE, "workspace", 1)                                                              \
        XX(PROJECT, "project", 1)                                                                  \
        XX(WAIT, "wait", 0)                                                                        \
        XX(TIMEOUT, "timeout", 1)                                                                  \
        XX(ALL, "all", 0)                                                                          \
        XX(FAILED, "failed", 0)                                                                    \
        XX(DONE, "done", 0)                                                                        \
        XX(OVERWRITE, "overwrite", 1)                                                              \
        XX(NAME, "name", 1)                                                                        \
        XX(KEY, "key", 1)                                                                          \
        XX(LIMIT, "limit", 1)                                                                      \
        XX(CLEAR, "clear", 0)

enum cli_option {
#define XX(id, name, arg) OPT_##id,
        CLI_OPTIONS(XX)
#undef XX
            OPT_COUNT,
        OPT_JSON = OPT_COUNT, /* every command that prints a reply takes --json */
        OPT_HELP,
};

/* The options given: how often each, and its values in order. */
struct args {
        int count[OPT_COUNT];
        const char **values[OPT_COUNT]; /* count[o] values (argv strings), or NULL */
};

struct run;

/* Flags of a command. */
#define CMD_CONNECT 0x1 /* talks to ferryd: the runner connects before call() */
#define CMD_JSON 0x2    /* takes --json */

struct command {
        const char *name;
        const char *synopsis;           /* after the command name */
        const char *summary;            /* one line for `ferry --help` */
        const char *help;               /* the option lines of `ferry COMMAND --help`, or NULL */
        const enum cli_option *options; /* the options it takes (--json aside), ending with
                                           OPT_COUNT */
        int min_args, max_args;         /* positional arguments; max -1: no limit */
        const char *missing;            /* usage message when fewer than min_args are given */
        unsigned flags;
        /* Values the argument count cannot check: 0, or return usage(). */
        int (*check)(struct run *r);
        /* Ask ferryd (or do the work); 0 and *reply, or a libferry code. */
        int (*call)(struct run *r, struct ferry_client *c, char **reply);
        /* Human output of a successful reply (--json prints the reply itself). */
        void (*print)(struct run *r, const cJSON *reply);
        /* Say why call() failed, when more than libferry's sentence is worth saying (NULL:
         * the sentence); `reply` is what came back with the failure, or NULL. */
        void (*failed)(struct run *r, struct ferry_client *c, int rc, const cJSON *reply);
};

/* One invocation of a command. */
struct run {
        const struct command *cmd;
        const char *socket; /* --socket PATH, or NULL */
        struct args args;
        bool json;
        int argc; /* the positional arguments */
        char **argv;
        /* Values check() derived from the options, for call() and print(). */
        int timeout_ms;
        int limit;
        int64_t job;
        enum ferry_overwrite overwrite;
        const char *state;
        void *data; /* a command's own, freed by the runner with free() */
};

/* ---- commands.c ---- */

extern const struct command commands[]; /* ends with a row whose name is NULL */

/* ---- main.c ---- */

const struct command *command_find(const char *name);
int command_help(const struct command *cmd);
void main_usage(FILE *f);
bool args_has(const struct run *r, enum cli_option o);
/* The last value given for `o`, or NULL. */
const char *args_get(const struct run *r, enum cli_option o);
/* All values given for `o`, in order; *n their count. */
const char **args_all(const struct run *r, enum cli_option o, size_t *n);

/* ---- output.c ---- */

int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int usage(const struct command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void print_synopsis(FILE *f, const struct command *cmd);
/* The sentence for a libferry failure: the client's message, else the code's. */
const char *client_msg(const struct ferry_client *c, int rc);
int fail_client(const struct ferry_client *c, int rc);
/* A refusal of the artifact builder (a value libferry checked, or a file). */
int fail_artifact(const struct ferry_artifact *a, int rc);
/* Exit with "out of memory" when p is NULL; else p. */
void *xnomem(void *p);

long long jint(const cJSON *obj, const char *key, long long def);
const char *jstr(const cJSON *obj, const char *key);
/* Print `obj` as the one JSON document of --json, without "id" and "ok". */
void print_json(const cJSON *obj);
const char *plural(long long n);
const char *fmt_bytes(char *buf, size_t len, double n);
const char *fmt_duration(char *buf, size_t len, long long ms);
const char *fmt_time(char *buf, size_t len, long long ms);
const char *fmt_limit(char *buf, size_t len, int ms);
long long wall_ms(void);
long long mono_ms(void);
/* Print a reply's "warnings" (strings, or {"job", "name", "message"}) to stderr. */
void print_warnings(const cJSON *rep);
/* Join the strings of a JSON array with ", "; "-" when empty (caller frees). */
char *join_strings(const cJSON *arr);

/* "--timeout SECONDS": a non-negative decimal number; *ms >= 1. 0 or -1. */
int parse_seconds(const char *s, int *ms);
/* A whole number in [lo, hi], decimal digits only. 0 or -1. */
int parse_count(const char *s, long long lo, long long hi, long long *out);

/* A table printed with aligned columns; the last column is not padded. */
struct table {
        size_t ncols;
        size_t nrows;
        char **cells; /* nrows * ncols strings, owned */
};
void table_add(struct table *t, ...);
void table_print(const struct table *t, const char *indent);
void table_free(struct table *t);

#endif
