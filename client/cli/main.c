/*
 * main.c — the runner of `ferry`: global options, then for every command
 * alike: parse its options, check its arguments, connect, call, print,
 * clean up (see cli.h). The commands themselves are in commands.c.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define OPT_BASE 256 /* getopt values of the long options: OPT_BASE + enum cli_option */

static const struct {
        const char *name;
        int has_arg;
} option_names[OPT_COUNT] = {
#define XX(id, name, arg) [OPT_##id] = {name, arg},
    CLI_OPTIONS(XX)
#undef XX
};

bool args_has(const struct run *r, enum cli_option o)
{
        return o < OPT_COUNT && r->args.count[o] > 0;
}

const char *args_get(const struct run *r, enum cli_option o)
{
        return args_has(r, o) ? r->args.values[o][r->args.count[o] - 1] : NULL;
}

const char **args_all(const struct run *r, enum cli_option o, size_t *n)
{
        *n = o < OPT_COUNT ? (size_t)r->args.count[o] : 0;
        return *n > 0 ? r->args.values[o] : NULL;
}

static void args_free(struct args *a)
{
        int i;

        for (i = 0; i < OPT_COUNT; i++)
                free(a->values[i]);
}

const struct command *command_find(const char *name)
{
        const struct command *cmd;

        for (cmd = commands; cmd->name != NULL; cmd++)
                if (strcmp(cmd->name, name) == 0)
                        return cmd;
        return NULL;
}

int command_help(const struct command *cmd)
{
        print_synopsis(stdout, cmd);
        printf("%s\n", cmd->summary);
        if (cmd->help != NULL)
                printf("\noptions:\n%s", cmd->help);
        return 0;
}

/* The short usage for errors. */
static int main_usage_error(void)
{
        fprintf(stderr, "usage: ferry [--socket PATH] COMMAND [ARGS]\n"
                        "Run 'ferry --help' for the commands.\n");
        return EXIT_USAGE;
}

void main_usage(FILE *f)
{
        const struct command *cmd;

        fprintf(f, "usage: ferry [--socket PATH] COMMAND [ARGS]\n"
                   "       ferry --help | --version\n\ncommands:\n");
        for (cmd = commands; cmd->name != NULL; cmd++)
                fprintf(f, "  %-11s %s\n", cmd->name, cmd->summary);
        fprintf(f, "\nThe socket is --socket, else $FERRY_SOCKET, else the default of ferryd.\n"
                   "Run 'ferry COMMAND --help' for a command's options.\n");
}

/* Describe the option getopt_long() refused with '?' or ':' into buf. */
static const char *option_error(int ch, char **argv, char *buf, size_t len)
{
        const char *arg = argv[optind - 1];

        if (ch == ':')
                snprintf(buf, len, "option %s needs a value", arg);
        else if (optopt > 0 && optopt < OPT_BASE && strncmp(arg, "--", 2) != 0)
                snprintf(buf, len, "unknown option -%c", optopt);
        else
                snprintf(buf, len, "unknown option %s", arg);
        return buf;
}

/* getopt_long()'s table for `cmd`: its options, --json when it takes it, --help. */
static struct option *command_options(const struct command *cmd)
{
        struct option *opts = xnomem(calloc(OPT_COUNT + 3, sizeof(*opts)));
        const enum cli_option *o;
        int n = 0;

        for (o = cmd->options; o != NULL && *o != OPT_COUNT; o++)
                opts[n++] =
                    (struct option){option_names[*o].name,
                                    option_names[*o].has_arg ? required_argument : no_argument,
                                    NULL, OPT_BASE + (int)*o};
        if (cmd->flags & CMD_JSON)
                opts[n++] = (struct option){"json", no_argument, NULL, OPT_BASE + OPT_JSON};
        opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
        return opts;
}

/* Parse the command's options and count its arguments: -1 to go on, else the exit status. */
static int command_parse(struct run *r, int argc, char **argv)
{
        const struct command *cmd = r->cmd;
        struct option *opts = command_options(cmd);
        char msg[256];
        int ch, status = -1, n;

        optind = 0; /* each command parses from its name on; 0 resets getopt */
        while (status < 0 && (ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                int o = ch - OPT_BASE;

                if (ch == 'h') {
                        status = command_help(cmd);
                } else if (o == OPT_JSON) {
                        r->json = true;
                } else if (o >= 0 && o < OPT_COUNT) {
                        r->args.values[o] =
                            xnomem(realloc(r->args.values[o], (size_t)(r->args.count[o] + 1) *
                                                                  sizeof(*r->args.values[o])));
                        r->args.values[o][r->args.count[o]++] = optarg;
                } else {
                        status = usage(cmd, "%s", option_error(ch, argv, msg, sizeof(msg)));
                }
        }
        free(opts);
        if (status >= 0)
                return status;
        r->argc = n = argc - optind;
        r->argv = argv + optind;
        if (n < cmd->min_args)
                return usage(cmd, "%s", cmd->missing);
        if (cmd->max_args >= 0 && n > cmd->max_args)
                return usage(cmd, "unexpected argument \"%s\"", r->argv[cmd->max_args]);
        return -1;
}

/* Parse, check, connect, call, print, clean up. */
static int command_run(const struct command *cmd, const char *socket, int argc, char **argv)
{
        struct run r;
        struct ferry_client *c = NULL;
        char *reply = NULL;
        cJSON *rep = NULL;
        int rc, status;

        memset(&r, 0, sizeof(r));
        r.cmd = cmd;
        r.socket = socket;
        if ((status = command_parse(&r, argc, argv)) >= 0)
                goto out;
        if (cmd->check != NULL && (status = cmd->check(&r)) != 0)
                goto out;
        status = EXIT_FAIL;
        if (cmd->flags & CMD_CONNECT) {
                rc = ferry_connect(&c, socket, 0);
                if (rc != 0) {
                        fail_client(c, rc);
                        goto out;
                }
        }
        rc = cmd->call(&r, c, &reply);
        rep = reply != NULL ? cJSON_Parse(reply) : NULL;
        if (rc != 0) {
                if (cmd->failed != NULL)
                        cmd->failed(&r, c, rc, rep);
                else
                        fail_client(c, rc);
        } else if (reply != NULL && rep == NULL) {
                fail("ferryd sent a reply that is not a JSON object");
        } else {
                if (r.json && rep != NULL)
                        print_json(rep);
                else if (cmd->print != NULL)
                        cmd->print(&r, rep);
                status = 0;
        }
out:
        cJSON_Delete(rep);
        ferry_free(reply);
        ferry_close(c);
        args_free(&r.args);
        free(r.data);
        return status;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"socket", required_argument, NULL, 's'},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {NULL, 0, NULL, 0},
        };
        const char *socket = NULL;
        const struct command *cmd;
        char msg[256];
        int ch;

        opterr = 0;
        /* '+': global options stop at the command name. */
        while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
                switch (ch) {
                case 's':
                        if (optarg[0] == '\0') {
                                fprintf(stderr, "ferry: --socket needs a path\n");
                                return main_usage_error();
                        }
                        socket = optarg;
                        break;
                case 'h':
                        main_usage(stdout);
                        return 0;
                case 'V':
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
        return command_run(cmd, socket, argc - optind, argv + optind);
}
