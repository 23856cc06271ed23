/*
 * commands.c — the commands of `ferry`: a row of the table at the end for
 * each, with the few functions it needs (cli.h says what the runner does
 * around them).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define WAIT_TICK_MS 500
#define PROGRESS_TICK_MS 250

/* A reply object made here (the commands whose libferry call returns no JSON). */
static int reply_of(cJSON *obj, char **reply)
{
        char *s = xnomem(cJSON_PrintUnformatted(obj));

        cJSON_Delete(obj);
        *reply = xnomem(strdup(s));
        cJSON_free(s);
        return 0;
}

/* ---- log ---- */

struct log_state {
        struct ferry_artifact *artifact;
        int64_t job; /* once logged, else -1 */
};

/* Build the artifact before connecting: a refused value or file fails without ferryd. */
static int log_check(struct run *r)
{
        const char *name = r->argv[0], *logical = args_get(r, OPT_LOGICAL_PATH);
        const char **list;
        struct log_state *st;
        long long max_synced = 10000;
        size_t n, i;
        int rc, npaths = r->argc - 1;

        if (npaths == 0 && !args_has(r, OPT_REMOTE))
                return usage(r->cmd, "nothing to log: give at least one PATH or --remote URI");
        if (logical != NULL && npaths != 1)
                return usage(r->cmd, "--logical-path names one file or prefixes one directory; "
                                     "give exactly one PATH");
        if (args_has(r, OPT_TIMEOUT) &&
            parse_seconds(args_get(r, OPT_TIMEOUT), &r->timeout_ms) != 0)
                return usage(r->cmd, "--timeout wants seconds, not \"%s\"",
                             args_get(r, OPT_TIMEOUT));
        if (args_has(r, OPT_TIMEOUT) && !args_has(r, OPT_WAIT))
                return usage(r->cmd, "--timeout applies to --wait");
        if (args_has(r, OPT_MAX_SYNCED) &&
            parse_count(args_get(r, OPT_MAX_SYNCED), 1, FERRY_MAX_SYNCED_OBJECTS, &max_synced) != 0)
                return usage(r->cmd, "--max-synced-objects wants 1 to %d, not \"%s\"",
                             FERRY_MAX_SYNCED_OBJECTS, args_get(r, OPT_MAX_SYNCED));
        if ((args_has(r, OPT_NO_SYNC) || args_has(r, OPT_MAX_SYNCED)) && !args_has(r, OPT_REMOTE))
                return usage(r->cmd, "--no-sync and --max-synced-objects apply to --remote");
        if (args_has(r, OPT_NO_SYNC) && args_has(r, OPT_MAX_SYNCED))
                return usage(r->cmd, "--max-synced-objects applies when syncing; drop --no-sync");
        st = r->data = xnomem(calloc(1, sizeof(*st)));
        st->job = -1;
        rc = ferry_artifact_new(&st->artifact, name, args_get(r, OPT_TYPE));
        if (rc == 0 && args_has(r, OPT_VERSION))
                rc = ferry_artifact_set_version(st->artifact, args_get(r, OPT_VERSION));
        list = args_all(r, OPT_ALIAS, &n);
        for (i = 0; rc == 0 && i < n; i++)
                rc = ferry_artifact_add_alias(st->artifact, list[i]);
        list = args_all(r, OPT_TAG, &n);
        for (i = 0; rc == 0 && i < n; i++)
                rc = ferry_artifact_add_tag(st->artifact, list[i]);
        if (rc == 0 && args_has(r, OPT_METADATA))
                rc = ferry_artifact_set_metadata(st->artifact, args_get(r, OPT_METADATA));
        for (i = 1; rc == 0 && i < (size_t)r->argc; i++)
                rc = ferry_artifact_add_file(st->artifact, r->argv[i], logical, 0, NULL);
        list = args_all(r, OPT_REMOTE, &n);
        for (i = 0; rc == 0 && i < n; i++)
                rc = ferry_artifact_add_remote_sync(st->artifact, list[i], NULL, 0, NULL,
                                                    args_has(r, OPT_NO_SYNC) ? 0 : max_synced);
        if (rc != 0) {
                rc = fail_artifact(st->artifact, rc);
                ferry_artifact_free(st->artifact);
                st->artifact = NULL;
                return rc;
        }
        return 0;
}

static void log_print_logged(const struct run *r, const cJSON *rep)
{
        const char *version = args_get(r, OPT_VERSION);
        char size[32];

        printf("logged %s%s%s (%lld asset%s, %s) as job %lld\n", r->argv[0], version ? " " : "",
               version ? version : "", jint(rep, "assets", 0), plural(jint(rep, "assets", 0)),
               fmt_bytes(size, sizeof(size), (double)jint(rep, "bytes", 0)), jint(rep, "job", -1));
}

/* Log; with --wait, say so, then wait: the reply is the log's, with the wait's as "wait". */
static int log_call(struct run *r, struct ferry_client *c, char **reply)
{
        struct log_state *st = r->data;
        char *lreply = NULL, *wreply = NULL;
        cJSON *rep, *wrep;
        int rc;

        rc = ferry_log_json(c, st->artifact,
                            &(struct ferry_log_options){args_get(r, OPT_EXPERIMENT),
                                                        args_get(r, OPT_WORKSPACE),
                                                        args_get(r, OPT_PROJECT)},
                            &lreply);
        ferry_artifact_free(st->artifact);
        st->artifact = NULL;
        if (rc != 0)
                return rc;
        rep = cJSON_Parse(lreply);
        ferry_free(lreply);
        if (rep == NULL) {
                *reply = xnomem(strdup("not JSON"));
                return 0; /* the runner says so */
        }
        st->job = jint(rep, "job", -1);
        if (!args_has(r, OPT_WAIT))
                return reply_of(rep, reply);
        if (!r->json) {
                log_print_logged(r, rep);
                fflush(stdout);
        }
        rc = ferry_wait(c, &st->job, 1, r->timeout_ms, &wreply);
        wrep = wreply != NULL ? cJSON_Parse(wreply) : NULL;
        ferry_free(wreply);
        if (wrep != NULL)
                cJSON_AddItemToObject(rep, "wait", wrep);
        reply_of(rep, reply);
        return rc;
}

static void log_print(struct run *r, const cJSON *rep)
{
        if (args_has(r, OPT_WAIT)) {
                printf("job %lld delivered\n", jint(rep, "job", -1));
                fflush(stdout);
                print_warnings(cJSON_GetObjectItemCaseSensitive(rep, "wait"));
        } else {
                log_print_logged(r, rep);
        }
}

/* The error of failed job `job` from `ls --failed`, or NULL (caller frees with cJSON_Delete). */
static cJSON *failed_job(struct ferry_client *c, int64_t job)
{
        cJSON *rep, *items, *it;
        char *json = NULL;

        ferry_set_timeout(c, 10000);
        if (ferry_ls(c, "failed", 0, &json) != 0)
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

static void log_failed(struct run *r, struct ferry_client *c, int rc, const cJSON *rep)
{
        const struct log_state *st = r->data;
        long long job = (long long)st->job;
        char lim[32];
        cJSON *failed;

        if (job < 0) { /* the log itself */
                fail_client(c, rc);
                return;
        }
        if (r->json && rep != NULL)
                print_json(rep);
        if (rc == FERRY_EFAILED) {
                failed = failed_job(c, st->job);
                fail("job %lld (%s) failed: %s; fix the cause, then run `ferry retry %lld`", job,
                     r->argv[0],
                     jstr(failed, "error") ? jstr(failed, "error") : "see `ferry ls --failed`",
                     job);
                cJSON_Delete(failed);
        } else if (rc == FERRY_ETIMEDOUT && cJSON_GetObjectItemCaseSensitive(rep, "wait")) {
                fail("job %lld is still queued after %s; ferryd keeps it and delivers it later "
                     "(see `ferry status`)",
                     job, fmt_limit(lim, sizeof(lim), r->timeout_ms));
        } else {
                fail("job %lld is logged, but waiting for it failed: %s", job, client_msg(c, rc));
        }
}

/* ---- status ---- */

static int status_call(struct run *r, struct ferry_client *c, char **reply)
{
        (void)r;
        return ferry_status(c, reply);
}

static void status_print(struct run *r, const cJSON *st)
{
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(st, "errors");
        const cJSON *it;
        const char *backend = jstr(st, "backend"), *last = jstr(st, "last_error");
        long long since = jint(st, "offline_since", -1), budget = jint(st, "spool_budget", 0);
        char a[32], b[32], rate[32], t[32], d[32];
        struct table tab = {3, 0, NULL};

        (void)r;
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
               fmt_bytes(rate, sizeof(rate), (double)jint(st, "rate_bps", 0)));
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

/* ---- ls ---- */

static int ls_check(struct run *r)
{
        static const struct {
                enum cli_option option;
                const char *state;
        } states[] = {{OPT_ALL, "all"}, {OPT_FAILED, "failed"}, {OPT_DONE, "done"}};
        long long limit;
        size_t i;

        for (i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
                if (!args_has(r, states[i].option))
                        continue;
                if (r->state != NULL)
                        return usage(r->cmd, "give only one of --all, --failed and --done");
                r->state = states[i].state;
        }
        if (args_has(r, OPT_LIMIT)) {
                if (parse_count(args_get(r, OPT_LIMIT), 1, FERRY_LS_LIMIT_MAX, &limit) != 0)
                        return usage(r->cmd, "--limit wants a number from 1 to %d, not \"%s\"",
                                     FERRY_LS_LIMIT_MAX, args_get(r, OPT_LIMIT));
                r->limit = (int)limit;
        }
        return 0;
}

static int ls_call(struct run *r, struct ferry_client *c, char **reply)
{
        return ferry_ls(c, r->state, r->limit, reply);
}

static void ls_print(struct run *r, const cJSON *rep)
{
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(rep, "items"), *it;
        const char *state = r->state ? r->state : "active";
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

/* ---- wait ---- */

static int timeout_check(struct run *r)
{
        if (args_has(r, OPT_TIMEOUT) &&
            parse_seconds(args_get(r, OPT_TIMEOUT), &r->timeout_ms) != 0)
                return usage(r->cmd, "--timeout wants seconds, not \"%s\"",
                             args_get(r, OPT_TIMEOUT));
        return 0;
}

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

static int wait_call(struct run *r, struct ferry_client *c, char **reply)
{
        if (!r->json && isatty(STDERR_FILENO))
                return wait_with_progress(c, r->timeout_ms, reply);
        return ferry_wait(c, NULL, 0, r->timeout_ms, reply);
}

static void wait_print(struct run *r, const cJSON *rep)
{
        (void)r;
        (void)rep;
        printf("queue drained: everything is delivered\n");
}

static void wait_failed(struct run *r, struct ferry_client *c, int rc, const cJSON *rep)
{
        char lim[32];

        if (r->json && rep != NULL)
                print_json(rep);
        if (rc == FERRY_EFAILED)
                fail("the queue is drained but %lld item%s failed; see `ferry ls --failed`",
                     jint(rep, "failed", 0), plural(jint(rep, "failed", 0)));
        else if (rc == FERRY_ETIMEDOUT && rep != NULL)
                fail("timed out after %s with %lld item%s still queued or running; ferryd keeps "
                     "delivering them",
                     fmt_limit(lim, sizeof(lim), r->timeout_ms), jint(rep, "pending", 0),
                     plural(jint(rep, "pending", 0)));
        else
                fail_client(c, rc);
}

/* ---- retry ---- */

static int retry_check(struct run *r)
{
        long long job;

        if (args_has(r, OPT_ALL) == (r->argc > 0))
                return usage(r->cmd, "give either a job ID or --all");
        if (r->argc > 1)
                return usage(r->cmd, "give one job ID");
        r->job = -1;
        if (r->argc == 1) {
                if (parse_count(r->argv[0], 0, 9007199254740992LL, &job) != 0)
                        return usage(r->cmd, "job ID \"%s\" is not a number", r->argv[0]);
                r->job = job;
        }
        return 0;
}

static int retry_call(struct run *r, struct ferry_client *c, char **reply)
{
        return ferry_retry(c, r->job, reply);
}

static void retry_print(struct run *r, const cJSON *rep)
{
        long long n = jint(rep, "requeued", 0);

        (void)r;
        if (n == 0)
                printf("no failed items to retry\n");
        else
                printf("requeued %lld item%s\n", n, plural(n));
}

/* ---- cancel ---- */

struct cancel_state {
        int64_t *jobs;
        int n;
};

static int cancel_check(struct run *r)
{
        struct cancel_state *st = r->data = xnomem(calloc(1, sizeof(*st)));
        long long job;
        int i;

        st->jobs = xnomem(calloc((size_t)r->argc, sizeof(*st->jobs)));
        for (i = 0; i < r->argc; i++) {
                if (parse_count(r->argv[i], 0, 9007199254740992LL, &job) != 0) {
                        free(st->jobs);
                        st->jobs = NULL;
                        return usage(r->cmd, "job ID \"%s\" is not a number", r->argv[i]);
                }
                st->jobs[st->n++] = job;
        }
        return 0;
}

/* One request per ID; a refusal is said at once and the others go on. The reply: the one
 * item, or an array of them. */
static int cancel_call(struct run *r, struct ferry_client *c, char **reply)
{
        struct cancel_state *st = r->data;
        cJSON *all = xnomem(cJSON_CreateArray()), *one;
        char *json = NULL;
        int i, rc, failed = 0;

        for (i = 0; i < st->n; i++) {
                rc = ferry_cancel(c, st->jobs[i], &json);
                if (rc != 0 || (one = cJSON_Parse(json)) == NULL) {
                        fail_client(c, rc != 0 ? rc : FERRY_EPROTO);
                        failed++;
                } else {
                        cJSON_AddItemToArray(all, one);
                }
                ferry_free(json);
                json = NULL;
        }
        free(st->jobs);
        st->jobs = NULL;
        if (cJSON_GetArraySize(all) == 1)
                reply_of(xnomem(cJSON_DetachItemFromArray(all, 0)), reply);
        else if (cJSON_GetArraySize(all) > 1)
                reply_of(cJSON_Duplicate(all, 1), reply);
        cJSON_Delete(all);
        return failed > 0 ? FERRY_EFAILED : 0;
}

static void cancel_print(struct run *r, const cJSON *rep)
{
        const cJSON *it;

        (void)r;
        if (cJSON_IsObject(rep)) {
                printf("cancelled %lld (%s, was %s)\n", jint(rep, "job", -1),
                       jstr(rep, "name") ? jstr(rep, "name") : "?",
                       jstr(rep, "was") ? jstr(rep, "was") : "?");
                if (jstr(rep, "remote") != NULL)
                        printf("  %s\n", jstr(rep, "remote"));
                return;
        }
        cJSON_ArrayForEach(it, rep)
        {
                cancel_print(r, it);
        }
}

/* Those that failed said so; the others are shown all the same. */
static void cancel_failed(struct run *r, struct ferry_client *c, int rc, const cJSON *rep)
{
        (void)c;
        (void)rc;
        if (rep == NULL)
                return;
        if (r->json)
                print_json(rep);
        else
                cancel_print(r, rep);
}

/* ---- recover ---- */

static int recover_call(struct run *r, struct ferry_client *c, char **reply)
{
        (void)r;
        return ferry_recover(c, reply);
}

static void recover_print(struct run *r, const cJSON *rep)
{
        (void)r;
        printf("re-queued %lld versions (%lld files) from quarantine\n", jint(rep, "versions", 0),
               jint(rep, "files", 0));
        if (jint(rep, "partial", 0) > 0)
                printf("%lld of them lack some metadata or files their manifests name\n",
                       jint(rep, "partial", 0));
        if (jint(rep, "skipped", 0) > 0)
                printf("%lld versions were skipped (their version is queued already, or their "
                       "manifest is unreadable)\n",
                       jint(rep, "skipped", 0));
        if (jint(rep, "orphans", 0) > 0)
                printf("%lld files carry no manifest and stay in quarantine\n",
                       jint(rep, "orphans", 0));
}

/* ---- pause, resume ---- */

/* `ferry pause` and `ferry resume`: one handler, told apart by the command's name. */
static int pause_call(struct run *r, struct ferry_client *c, char **reply)
{
        return ferry_pause(c, strcmp(r->cmd->name, "pause") == 0, reply);
}

static void pause_print(struct run *r, const cJSON *rep)
{
        (void)rep;
        if (strcmp(r->cmd->name, "pause") == 0)
                printf("queue paused: nothing new is delivered until `ferry resume`\n");
        else
                printf("queue resumed\n");
}

/* ---- cache ---- */

static int cache_call(struct run *r, struct ferry_client *c, char **reply)
{
        return ferry_cache(c, args_has(r, OPT_CLEAR), reply);
}

static void cache_print(struct run *r, const cJSON *rep)
{
        long long blobs = jint(rep, "blobs", 0), budget = jint(rep, "budget", 0);
        char a[32], b[32];

        if (args_has(r, OPT_CLEAR))
                printf("cleared %s\n", fmt_bytes(a, sizeof(a), (double)jint(rep, "freed", 0)));
        printf("cache %s: %s in %lld blob%s", jstr(rep, "path") ? jstr(rep, "path") : "?",
               fmt_bytes(a, sizeof(a), (double)jint(rep, "bytes", 0)), blobs, plural(blobs));
        if (budget > 0)
                printf(", budget %s", fmt_bytes(b, sizeof(b), (double)budget));
        printf("\n");
}

/* ---- get ---- */

static int get_call(struct run *r, struct ferry_client *c, char **reply)
{
        return ferry_get(c, r->argv[0], reply);
}

static void get_print(struct run *r, const cJSON *v)
{
        const cJSON *assets = cJSON_GetObjectItemCaseSensitive(v, "assets");
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(v, "metadata");
        const cJSON *it;
        const char *state = jstr(v, "state");
        char *aliases, *tags, *m = NULL;
        char size[32];
        struct table tab = {4, 0, NULL};

        (void)r;
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
        fflush(stdout);
        print_warnings(v);
}

/* ---- download ---- */

static int download_check(struct run *r)
{
        static const struct {
                const char *name;
                enum ferry_overwrite mode;
        } modes[] = {{"fail", FERRY_OVERWRITE_FAIL},
                     {"preserve", FERRY_OVERWRITE_PRESERVE},
                     {"overwrite", FERRY_OVERWRITE_REPLACE}};
        const char *want = args_get(r, OPT_OVERWRITE);
        size_t i;

        r->overwrite = FERRY_OVERWRITE_FAIL;
        if (want == NULL)
                return 0;
        for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
                if (strcmp(want, modes[i].name) == 0) {
                        r->overwrite = modes[i].mode;
                        return 0;
                }
        return usage(r->cmd, "--overwrite is fail, preserve or overwrite, not \"%s\"", want);
}

/* The progress line of `ferry download` on a terminal, from libferry's own count. */
static void progress_draw(struct ferry_client *c, const char *spec)
{
        const char *version = ferry_download_version(c);
        int64_t done = 0, total = 0;
        char a[32], b[32];

        if (ferry_download_progress(c, &done, &total) != 0 || total <= 0)
                return;
        fprintf(stderr, "\rdownloading %s%s%s: %s of %s (%d%%)\033[K", spec, version ? " " : "",
                version ? version : "", fmt_bytes(a, sizeof(a), (double)done),
                fmt_bytes(b, sizeof(b), (double)total), (int)(done * 100 / total));
        fflush(stderr);
}

static int download_call(struct run *r, struct ferry_client *c, char **reply)
{
        const char *spec = r->argv[0], *dir = r->argv[1];
        int rc;

        if (r->json || !isatty(STDERR_FILENO))
                return ferry_download(c, spec, dir, r->overwrite, reply);
        /* A progress line on stderr, redrawn every PROGRESS_TICK_MS. */
        rc = ferry_download_start(c, spec, dir, r->overwrite);
        if (rc != 0)
                return rc;
        while ((rc = ferry_download_ready(c, PROGRESS_TICK_MS)) == 0)
                progress_draw(c, spec);
        fputs("\r\033[K", stderr);
        fflush(stderr);
        return ferry_download_finish(c, reply);
}

static void download_print(struct run *r, const cJSON *d)
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
                printf("downloaded version %s of %s", jstr(d, "version"), r->argv[0]);
        else
                printf("downloaded %s", r->argv[0]);
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

/* ---- experiment ---- */

static int experiment_call(struct run *r, struct ferry_client *c, char **reply)
{
        const char *ws = args_get(r, OPT_WORKSPACE), *project = args_get(r, OPT_PROJECT);
        const char *name = args_get(r, OPT_NAME), *key = args_get(r, OPT_KEY);
        char *made = NULL;
        cJSON *rep;
        int rc;

        if (key != NULL)
                rc = ferry_experiment_adopt(c, key, ws, project, name);
        else
                rc = ferry_experiment_create(c, ws, project, name, &made);
        if (rc != 0)
                return rc;
        rep = xnomem(cJSON_CreateObject());
        xnomem(cJSON_AddStringToObject(rep, "key", key != NULL ? key : made));
        ferry_free(made);
        return reply_of(rep, reply);
}

static void experiment_print(struct run *r, const cJSON *rep)
{
        (void)r;
        printf("%s\n", jstr(rep, "key") ? jstr(rep, "key") : "");
}

/* ---- help ---- */

static int help_check(struct run *r)
{
        if (r->argc == 1 && command_find(r->argv[0]) == NULL)
                return usage(r->cmd, "unknown command \"%s\"", r->argv[0]);
        return 0;
}

static int help_call(struct run *r, struct ferry_client *c, char **reply)
{
        (void)c;
        (void)reply;
        if (r->argc == 0)
                main_usage(stdout);
        else
                command_help(command_find(r->argv[0]));
        return 0;
}

/* ---- the table ---- */

#define OPTIONS(...) ((const enum cli_option[]){__VA_ARGS__ OPT_COUNT})

const struct command commands[] = {
    {"log", "NAME PATH... [options]", "log an artifact version: files, directories and remote URIs",
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
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_TYPE, OPT_VERSION, OPT_ALIAS, OPT_TAG, OPT_METADATA, OPT_REMOTE, OPT_NO_SYNC,
             OPT_MAX_SYNCED, OPT_LOGICAL_PATH, OPT_EXPERIMENT, OPT_WORKSPACE, OPT_PROJECT, OPT_WAIT,
             OPT_TIMEOUT, ),
     1, -1, "the artifact NAME is missing", CMD_CONNECT | CMD_JSON, log_check, log_call, log_print,
     log_failed},
    {"status", "[--json]", "queue counts, bytes, rate, online/offline, last error, failed items",
     "  --json              print the reply as JSON\n", NULL, 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     NULL, status_call, status_print, NULL},
    {"ls", "[--all|--failed|--done] [--limit N] [--json]",
     "list queued, running and failed items (oldest first)",
     "  --all               every item, delivered ones too\n"
     "  --failed            failed items only\n"
     "  --done              delivered items only\n"
     "  --limit N           the newest N items (1 to 100000; default 1000)\n"
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_ALL, OPT_FAILED, OPT_DONE, OPT_LIMIT, ), 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     ls_check, ls_call, ls_print, NULL},
    {"wait", "[--timeout SECONDS] [--json]",
     "wait until the queue is drained; exit 1 on timeout or failed items",
     "  --timeout SECONDS   give up after this long (default: never)\n"
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_TIMEOUT, ), 0, 0, NULL, CMD_CONNECT | CMD_JSON, timeout_check, wait_call,
     wait_print, wait_failed},
    {"retry", "ID|--all [--json]", "requeue a failed item, or all of them",
     "  --all               requeue every failed item\n"
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_ALL, ), 0, -1, NULL, CMD_CONNECT | CMD_JSON, retry_check, retry_call, retry_print,
     NULL},
    {"cancel", "ID... [--json]", "drop queued, running or failed items: their snapshots are freed",
     "  --json              print the reply as JSON\n", NULL, 1, -1,
     "give the ID of the item to cancel (see `ferry ls`)", CMD_CONNECT | CMD_JSON, cancel_check,
     cancel_call, cancel_print, cancel_failed},
    {"recover", "[--json]", "re-queue the versions whose snapshots ferryd put in quarantine",
     "  --json              print the reply as JSON\n", NULL, 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     NULL, recover_call, recover_print, NULL},
    {"pause", "[--json]",
     "hold deliveries until `ferry resume`; logging and downloads keep working",
     "  --json              print the reply as JSON\n", NULL, 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     NULL, pause_call, pause_print, NULL},
    {"resume", "[--json]", "resume deliveries held by `ferry pause`",
     "  --json              print the reply as JSON\n", NULL, 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     NULL, pause_call, pause_print, NULL},
    {"get", "[WORKSPACE/]NAME[:VERSION_OR_ALIAS] [--json]",
     "show an artifact version (the latest without VERSION_OR_ALIAS)",
     "  --json              print the reply as JSON\n", NULL, 1, 1, "the artifact name is missing",
     CMD_CONNECT | CMD_JSON, NULL, get_call, get_print, NULL},
    {"download", "[WORKSPACE/]NAME[:VERSION_OR_ALIAS] DIR [--overwrite MODE] [--json]",
     "download an artifact version's files into DIR (created if missing)",
     "  --overwrite MODE    for files already in DIR: fail (default; identical files\n"
     "                      are kept), preserve or overwrite\n"
     "  --json              print the reply as JSON (and no progress line)\n",
     OPTIONS(OPT_OVERWRITE, ), 2, 2, "give the artifact and a target DIR", CMD_CONNECT | CMD_JSON,
     download_check, download_call, download_print, NULL},
    {"cache", "[--clear] [--json]", "show the node's download cache: where, how full, its budget",
     "  --clear             empty the cache first\n"
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_CLEAR, ), 0, 0, NULL, CMD_CONNECT | CMD_JSON, NULL, cache_call, cache_print, NULL},
    {"experiment", "[--workspace W] [--project P] [--name N] [--key K]",
     "print a new experiment key, to share one experiment between processes",
     "  --workspace W       workspace (default: ferryd's configuration)\n"
     "  --project P         project (default: ferryd's configuration)\n"
     "  --name N            experiment name\n"
     "  --key K             adopt this key (32 to 50 letters and digits)\n"
     "  --json              print the reply as JSON\n",
     OPTIONS(OPT_WORKSPACE, OPT_PROJECT, OPT_NAME, OPT_KEY, ), 0, 0, NULL, CMD_CONNECT | CMD_JSON,
     NULL, experiment_call, experiment_print, NULL},
    {"help", "[COMMAND]", "show this help, or a command's", NULL, NULL, 0, 1, NULL, 0, help_check,
     help_call, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, 0, NULL, NULL, NULL, NULL},
};
