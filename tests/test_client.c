/*
 * test_client.c — libferry and the ferry CLI without ferryd: the error table,
 * connection failures, the artifact builder, and requests against a fake
 * daemon served by a thread of this test (error replies, protocol mismatch,
 * a connection closed mid-reply, a daemon that never answers).
 */
#include "check.h"
#include "ferry.h"
#include "proto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char tmpdir[64];

static long long mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool contains(const char *haystack, const char *needle)
{
        if (haystack == NULL || strstr(haystack, needle) == NULL) {
                fprintf(stderr, "  \"%s\" does not contain \"%s\"\n",
                        haystack ? haystack : "(null)", needle);
                return false;
        }
        return true;
}

static void write_file(const char *path, const char *content)
{
        FILE *f = fopen(path, "w");

        if (f == NULL) {
                perror(path);
                exit(2);
        }
        fputs(content, f);
        fclose(f);
}

/* ---- fake daemon ---- */

enum fake_action {
        FAKE_OK,            /* ok reply with the fields of `json` */
        FAKE_ERROR,         /* error reply; `json` is {"code", "message"} */
        FAKE_STALE_THEN_OK, /* first a reply for another id, then as FAKE_OK */
        FAKE_CLOSE_MID,     /* half a reply frame, then close */
        FAKE_SILENT,        /* never answer */
        FAKE_SLOW_OK,       /* as FAKE_OK after 600 ms (requests behind it wait) */
};

struct fake_rule {
        const char *op;
        enum fake_action action;
        const char *json;
};

struct fake {
        char path[108];
        int lfd;
        pthread_t thread;
        atomic_int stop;
        int hello_protocol; /* the protocol the hello reply names */
        const struct fake_rule *rules;
        pthread_mutex_t lock;
        cJSON *requests; /* every request after hello, in order */
};

static void fake_send(int fd, const cJSON *msg)
{
        char *frame;
        size_t len, off = 0;
        ssize_t n;

        if (proto_frame_encode(msg, &frame, &len) != 0)
                return;
        while (off < len) {
                n = send(fd, frame + off, len - off, MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                off += (size_t)n;
        }
        free(frame);
}

static const struct fake_rule *fake_rule(struct fake *f, const char *op)
{
        const struct fake_rule *r;

        for (r = f->rules; r && r->op; r++)
                if (strcmp(r->op, op) == 0)
                        return r;
        return NULL;
}

static cJSON *fake_ok(uint64_t id, const char *fields)
{
        cJSON *rep = proto_reply_ok(id);
        cJSON *extra = fields ? cJSON_Parse(fields) : NULL;
        cJSON *it, *next;

        for (it = extra ? extra->child : NULL; it; it = next) {
                next = it->next;
                cJSON_DetachItemViaPointer(extra, it);
                cJSON_AddItemToObject(rep, it->string, it);
        }
        cJSON_Delete(extra);
        return rep;
}

/* Answer one request; return false to close the connection. */
static bool fake_answer(struct fake *f, int fd, cJSON *req, uint64_t id, const char *op)
{
        const struct fake_rule *r;
        cJSON *rep = NULL, *e;
        char *frame;
        size_t len;

        if (strcmp(op, "hello") == 0) {
                char fields[128];

                snprintf(fields, sizeof(fields),
                         "{\"protocol\":%d,\"daemon\":\"fake/1\",\"backend\":\"local\",\"pid\":1}",
                         f->hello_protocol);
                rep = fake_ok(id, fields);
                fake_send(fd, rep);
                cJSON_Delete(rep);
                return true;
        }
        pthread_mutex_lock(&f->lock);
        cJSON_AddItemToArray(f->requests, cJSON_Duplicate(req, 1));
        pthread_mutex_unlock(&f->lock);
        r = fake_rule(f, op);
        if (r == NULL) {
                rep = proto_reply_error(id, FERRY_EUNKNOWNOP, "unknown op \"%s\"", op);
        } else if (r->action == FAKE_ERROR) {
                e = cJSON_Parse(r->json);
                rep = proto_reply_error(
                    id, ferry_err_from_name(cJSON_GetObjectItem(e, "code")->valuestring), "%s",
                    cJSON_GetObjectItem(e, "message")->valuestring);
                cJSON_Delete(e);
        } else if (r->action == FAKE_STALE_THEN_OK) {
                rep = fake_ok(id + 1000, "{\"stale\":true}");
                fake_send(fd, rep);
                cJSON_Delete(rep);
                rep = fake_ok(id, r->json);
        } else if (r->action == FAKE_CLOSE_MID) {
                rep = fake_ok(id, r->json);
                if (proto_frame_encode(rep, &frame, &len) == 0) {
                        send(fd, frame, len / 2, MSG_NOSIGNAL);
                        free(frame);
                }
                cJSON_Delete(rep);
                return false;
        } else if (r->action == FAKE_SILENT) {
                return true;
        } else if (r->action == FAKE_SLOW_OK) {
                poll(NULL, 0, 600);
                rep = fake_ok(id, r->json);
        } else {
                rep = fake_ok(id, r->json);
        }
        fake_send(fd, rep);
        cJSON_Delete(rep);
        return true;
}

/* Serve one connection until the client leaves or the fake stops. */
static void fake_serve(struct fake *f, int fd)
{
        struct proto_decoder dec;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char buf[4096], err[256];
        const char *json, *op;
        size_t len;
        uint64_t id;
        cJSON *req;
        ssize_t n;
        bool go = true;

        proto_decoder_init(&dec);
        while (go && !atomic_load(&f->stop)) {
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                n = recv(fd, buf, sizeof(buf), 0);
                if (n <= 0)
                        break;
                proto_decoder_feed(&dec, buf, (size_t)n);
                while (go && proto_decoder_next(&dec, &json, &len) == 1) {
                        if (proto_request_parse(json, len, &req, &id, &op, err, sizeof(err)) != 0)
                                continue;
                        go = fake_answer(f, fd, req, id, op);
                        cJSON_Delete(req);
                }
        }
        proto_decoder_free(&dec);
}

static void *fake_main(void *arg)
{
        struct fake *f = arg;
        struct pollfd pfd = {.fd = f->lfd, .events = POLLIN};
        int fd;

        while (!atomic_load(&f->stop)) {
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                fd = accept(f->lfd, NULL, NULL);
                if (fd < 0)
                        continue;
                fake_serve(f, fd);
                close(fd);
        }
        return NULL;
}

static void fake_start(struct fake *f, const struct fake_rule *rules, int hello_protocol)
{
        static int seq;
        struct sockaddr_un sa;

        memset(f, 0, sizeof(*f));
        f->rules = rules;
        f->hello_protocol = hello_protocol;
        f->requests = cJSON_CreateArray();
        pthread_mutex_init(&f->lock, NULL);
        snprintf(f->path, sizeof(f->path), "%s/fake%d.sock", tmpdir, ++seq);
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
        f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            listen(f->lfd, 8) != 0) {
                perror("fake daemon");
                exit(2);
        }
        pthread_create(&f->thread, NULL, fake_main, f);
}

static void fake_stop(struct fake *f)
{
        atomic_store(&f->stop, 1);
        pthread_join(f->thread, NULL);
        close(f->lfd);
        unlink(f->path);
        cJSON_Delete(f->requests);
        pthread_mutex_destroy(&f->lock);
}

/* A copy of the n-th request the fake received (caller deletes), or NULL. */
static cJSON *fake_request(struct fake *f, int n)
{
        cJSON *r;

        pthread_mutex_lock(&f->lock);
        r = cJSON_Duplicate(cJSON_GetArrayItem(f->requests, n), 1);
        pthread_mutex_unlock(&f->lock);
        return r;
}

static const char *jstr(const cJSON *o, const char *key)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- tests without a daemon ---- */

static void test_error_table(void)
{
        static const int codes[] = {
#define XX(suffix, value, name, msg) FERRY_##suffix,
            FERRY_ERRNO_MAP(XX)
#undef XX
        };
        size_t i;

        for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
                CHECK_INT(ferry_err_from_name(ferry_err_name(codes[i])), codes[i]);
                CHECK(strcmp(ferry_strerror(codes[i]), "unknown error") != 0);
                CHECK(strcmp(ferry_err_name(codes[i]), "unknown") != 0);
        }
        CHECK_INT(i, 20);
        CHECK_STR(ferry_err_name(FERRY_ENOTFOUND), "not_found");
        CHECK_STR(ferry_strerror(12345), "unknown error");
        CHECK_STR(ferry_err_name(12345), "unknown");
        CHECK_INT(ferry_err_from_name("no_such_code"), FERRY_EINTERNAL);
}

static void test_socket_path(void)
{
        char buf[256];

        setenv("FERRY_SOCKET", "/x/y.sock", 1);
        CHECK_INT(ferry_default_socket_path(buf, sizeof(buf)), 0);
        CHECK_STR(buf, "/x/y.sock");
        CHECK_INT(ferry_default_socket_path(buf, 4), FERRY_EINVAL);
        unsetenv("FERRY_SOCKET");
        setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
        CHECK_INT(ferry_default_socket_path(buf, sizeof(buf)), 0);
        CHECK_STR(buf, "/run/user/7/ferry/ferryd.sock");
        unsetenv("XDG_RUNTIME_DIR");
        CHECK_INT(ferry_default_socket_path(buf, sizeof(buf)), 0);
        CHECK(strncmp(buf, "/tmp/ferry-", 11) == 0);
}

static void test_connect_failures(void)
{
        struct ferry_client *c = NULL;
        struct sockaddr_un sa;
        char path[100];
        int fd;

        snprintf(path, sizeof(path), "%s/missing.sock", tmpdir);
        CHECK_INT(ferry_connect(&c, path, 1000), FERRY_ECONNECT);
        CHECK(c != NULL);
        CHECK(contains(ferry_last_error(c), "ferryd is not running (no socket at "));
        CHECK(contains(ferry_last_error(c), path));
        CHECK(contains(ferry_last_error(c),
                       "start it with `ferryd` or `systemctl --user start ferryd`"));
        /* Requests on a failed client say so instead of crashing. */
        CHECK_INT(ferry_status(c, NULL), FERRY_ECLOSED);
        ferry_close(c);

        /* A stale socket: the file is there, nobody listens. */
        snprintf(path, sizeof(path), "%s/stale.sock", tmpdir);
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        close(fd);
        CHECK_INT(ferry_connect(&c, path, 1000), FERRY_ECONNECT);
        CHECK(contains(ferry_last_error(c), "ferryd is not running"));
        CHECK(contains(ferry_last_error(c), path));
        ferry_close(c);
        unlink(path);
}

static void test_builder_values(void)
{
        struct ferry_artifact *a = NULL;
        char name[102];

        memset(name, 'n', 101);
        name[101] = '\0';
        CHECK_INT(ferry_artifact_new(&a, name, NULL), FERRY_EINVAL);
        CHECK(a != NULL);
        CHECK(contains(ferry_artifact_last_error(a), "101"));
        ferry_artifact_free(a);
        name[100] = '\0';
        CHECK_INT(ferry_artifact_new(&a, name, NULL), 0);
        ferry_artifact_free(a);
        CHECK_INT(ferry_artifact_new(&a, "a/b", NULL), FERRY_EINVAL);
        ferry_artifact_free(a);
        CHECK_INT(ferry_artifact_new(&a, "", NULL), FERRY_EINVAL);
        ferry_artifact_free(a);

        CHECK_INT(ferry_artifact_new(&a, "my-data", "dataset"), 0);
        CHECK_STR(ferry_artifact_last_error(a), "");
        CHECK_INT(ferry_artifact_set_version(a, "1.2"), FERRY_EINVAL);
        CHECK(contains(ferry_artifact_last_error(a), "semantic version"));
        CHECK_INT(ferry_artifact_set_version(a, "01.2.3"), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_set_version(a, "v1.2.3"), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_set_version(a, "1.0.0-rc.1+build.5"), 0);
        CHECK_INT(ferry_artifact_set_metadata(a, "[1]"), FERRY_EINVAL);
        CHECK(contains(ferry_artifact_last_error(a), "must be a JSON object"));
        CHECK_INT(ferry_artifact_set_metadata(a, "{\"a\": 1} x"), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_set_metadata(a, "{\"rows\": 1000}"), 0);
        CHECK_INT(ferry_artifact_add_alias(a, ""), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_add_alias(a, "bad\nalias"), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_add_remote(a, "s3://b/k", "../x", 0, NULL), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_add_remote(a, "s3://b/k", "/abs", 0, NULL), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_add_remote(a, "s3://b/k", NULL, 0, "[]"), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_add_staged(a, "tok", NULL, 0, NULL), FERRY_EINVAL);
        CHECK_INT(ferry_artifact_asset_count(a), 0);
        ferry_artifact_free(a);
}

/* The logical paths of the artifact's assets joined with ' '. */
static void logical_paths(const struct ferry_artifact *a, char *out, size_t len)
{
        char *json = NULL;
        cJSON *obj, *it;

        out[0] = '\0';
        if (ferry_artifact_to_json(a, &json) != 0)
                return;
        obj = cJSON_Parse(json);
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(obj, "assets"))
        {
                if (out[0] != '\0')
                        strncat(out, " ", len - strlen(out) - 1);
                strncat(out, jstr(it, "logical_path"), len - strlen(out) - 1);
        }
        cJSON_Delete(obj);
        ferry_free(json);
}

/* The "file" of the asset at `lp` (static buffer), or NULL. */
static const char *asset_file(const struct ferry_artifact *a, const char *lp)
{
        static char file[PATH_MAX];
        char *json = NULL;
        cJSON *obj, *it;
        const char *found = NULL;

        if (ferry_artifact_to_json(a, &json) != 0)
                return NULL;
        obj = cJSON_Parse(json);
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(obj, "assets"))
        {
                if (strcmp(jstr(it, "logical_path"), lp) == 0 && jstr(it, "file") != NULL) {
                        snprintf(file, sizeof(file), "%s", jstr(it, "file"));
                        found = file;
                }
        }
        cJSON_Delete(obj);
        ferry_free(json);
        return found;
}

static void test_builder_files(void)
{
        struct ferry_artifact *a = NULL;
        char d[128], p[256], q[256], paths[1024], real[PATH_MAX], cwd[PATH_MAX];

        snprintf(d, sizeof(d), "%s/tree", tmpdir);
        mkdir(d, 0755);
        snprintf(p, sizeof(p), "%s/sub", d);
        mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/sub/z", d);
        mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/b.txt", d);
        write_file(p, "b");
        snprintf(p, sizeof(p), "%s/a.txt", d);
        write_file(p, "a");
        snprintf(p, sizeof(p), "%s/A.txt", d);
        write_file(p, "A");
        snprintf(p, sizeof(p), "%s/sub/c.txt", d);
        write_file(p, "c");
        snprintf(p, sizeof(p), "%s/sub/z/y.txt", d);
        write_file(p, "y");
        snprintf(p, sizeof(p), "%s/outside.txt", tmpdir);
        write_file(p, "outside");
        snprintf(q, sizeof(q), "%s/link.txt", d);
        CHECK_INT(symlink(p, q), 0);
        snprintf(q, sizeof(q), "%s/linkdir", d);
        CHECK_INT(symlink("sub", q), 0); /* a link to a directory: skipped */
        snprintf(q, sizeof(q), "%s/dangling", d);
        CHECK_INT(symlink("nowhere", q), 0); /* skipped */
        snprintf(q, sizeof(q), "%s/pipe", d);
        CHECK_INT(mkfifo(q, 0600), 0); /* not a regular file: skipped */

        CHECK_INT(ferry_artifact_new(&a, "tree", NULL), 0);
        CHECK_INT(ferry_artifact_add_file(a, d, NULL, 0, NULL), 0);
        logical_paths(a, paths, sizeof(paths));
        CHECK_STR(paths, "A.txt a.txt b.txt link.txt sub/c.txt sub/z/y.txt");
        /* A link to a file is followed to its target. */
        realpath(p, real);
        CHECK_STR(asset_file(a, "link.txt"), real);
        snprintf(q, sizeof(q), "%s/sub/c.txt", d);
        realpath(q, real);
        CHECK_STR(asset_file(a, "sub/c.txt"), real);

        /* A second walk clashes as a whole: nothing of it is added. */
        CHECK_INT(ferry_artifact_add_file(a, p, "zzz.txt", 0, NULL), 0);
        CHECK_INT(ferry_artifact_add_file(a, d, NULL, 0, NULL), FERRY_EEXIST);
        CHECK(contains(ferry_artifact_last_error(a), "A.txt"));
        CHECK_INT(ferry_artifact_asset_count(a), 7);
        ferry_artifact_free(a);

        /* With a prefix; a relative path is made absolute. */
        CHECK_INT(ferry_artifact_new(&a, "tree", NULL), 0);
        getcwd(cwd, sizeof(cwd));
        CHECK_INT(chdir(tmpdir), 0);
        CHECK_INT(ferry_artifact_add_file(a, "tree/sub", "data", 0, "{\"k\": 1}"), 0);
        CHECK_INT(chdir(cwd), 0);
        logical_paths(a, paths, sizeof(paths));
        CHECK_STR(paths, "data/c.txt data/z/y.txt");
        snprintf(q, sizeof(q), "%s/sub/z/y.txt", d);
        realpath(q, real);
        CHECK_STR(asset_file(a, "data/z/y.txt"), real);
        ferry_artifact_free(a);

        /* Duplicates: refused, or replaced with overwrite. */
        CHECK_INT(ferry_artifact_new(&a, "dup", NULL), 0);
        snprintf(p, sizeof(p), "%s/a.txt", d);
        snprintf(q, sizeof(q), "%s/b.txt", d);
        CHECK_INT(ferry_artifact_add_file(a, p, "x.txt", 0, NULL), 0);
        CHECK_INT(ferry_artifact_add_remote(a, "s3://bucket/r", NULL, 0, NULL), 0);
        CHECK_INT(ferry_artifact_add_file(a, q, "x.txt", 0, NULL), FERRY_EEXIST);
        CHECK(contains(ferry_artifact_last_error(a), "x.txt"));
        CHECK_INT(ferry_artifact_asset_count(a), 2);
        realpath(p, real);
        CHECK_STR(asset_file(a, "x.txt"), real);
        CHECK_INT(ferry_artifact_add_file(a, q, "x.txt", 1, NULL), 0);
        CHECK_INT(ferry_artifact_asset_count(a), 2);
        realpath(q, real);
        CHECK_STR(asset_file(a, "x.txt"), real);
        logical_paths(a, paths, sizeof(paths));
        CHECK_STR(paths, "x.txt r"); /* replaced in place */
        CHECK_INT(ferry_artifact_add_staged(a, "tok", "r", 0, NULL), FERRY_EEXIST);
        CHECK_INT(ferry_artifact_add_staged(a, "tok", "r", 1, NULL), 0);
        CHECK_INT(ferry_artifact_asset_count(a), 2);

        /* Missing and unreadable files. */
        snprintf(p, sizeof(p), "%s/no-such-file.bin", tmpdir);
        CHECK_INT(ferry_artifact_add_file(a, p, NULL, 0, NULL), FERRY_ENOTFOUND);
        CHECK(contains(ferry_artifact_last_error(a), p));
        CHECK_INT(ferry_artifact_add_file(a, "", NULL, 0, NULL), FERRY_EINVAL);
        if (geteuid() != 0) {
                snprintf(p, sizeof(p), "%s/secret.txt", tmpdir);
                write_file(p, "s");
                chmod(p, 0);
                CHECK_INT(ferry_artifact_add_file(a, p, NULL, 0, NULL), FERRY_EPERM);
                CHECK(contains(ferry_artifact_last_error(a), p));
        }
        CHECK_INT(ferry_artifact_asset_count(a), 2);
        ferry_artifact_free(a);
}

static void test_to_json(void)
{
        struct ferry_artifact *a = NULL;
        char p[256], real[PATH_MAX], want[PATH_MAX + 1024];
        char *json = NULL;

        snprintf(p, sizeof(p), "%s/data.csv", tmpdir);
        write_file(p, "x,y\n1,2\n");
        realpath(p, real);
        CHECK_INT(ferry_artifact_new(&a, "my-data", "dataset"), 0);
        CHECK_INT(ferry_artifact_set_version(a, "1.2.0"), 0);
        CHECK_INT(ferry_artifact_add_alias(a, "best"), 0);
        CHECK_INT(ferry_artifact_add_alias(a, "best"), 0); /* a repeat is a no-op */
        CHECK_INT(ferry_artifact_add_tag(a, "v"), 0);
        CHECK_INT(ferry_artifact_set_metadata(a, "{\"rows\": 1000}"), 0);
        CHECK_INT(ferry_artifact_add_file(a, p, NULL, 0, "{\"split\": \"train\"}"), 0);
        CHECK_INT(
            ferry_artifact_add_remote(a, "s3://bucket/dir/model.bin?versionId=3", NULL, 0, NULL),
            0);
        CHECK_INT(ferry_artifact_add_remote(a, "s3://bucket", NULL, 0, NULL), 0);
        CHECK_INT(ferry_artifact_add_staged(a, "tok123", "mem/blob.bin", 1, NULL), 0);
        CHECK_INT(ferry_artifact_asset_count(a), 4);
        CHECK_INT(ferry_artifact_to_json(a, &json), 0);
        snprintf(want, sizeof(want),
                 "{\"name\":\"my-data\",\"type\":\"dataset\",\"version\":\"1.2.0\","
                 "\"aliases\":[\"best\"],\"tags\":[\"v\"],\"metadata\":{\"rows\":1000},"
                 "\"assets\":[{\"logical_path\":\"data.csv\",\"file\":\"%s\","
                 "\"metadata\":{\"split\":\"train\"}},"
                 "{\"logical_path\":\"model.bin\","
                 "\"remote\":\"s3://bucket/dir/model.bin?versionId=3\"},"
                 "{\"logical_path\":\"remote\",\"remote\":\"s3://bucket\"},"
                 "{\"logical_path\":\"mem/blob.bin\",\"staged\":\"tok123\",\"overwrite\":true}]}",
                 real);
        CHECK_STR(json, want);
        ferry_free(json);
        ferry_artifact_free(a);

        /* The minimal description: no type, version, labels or metadata. */
        CHECK_INT(ferry_artifact_new(&a, "empty", NULL), 0);
        CHECK_INT(ferry_artifact_to_json(a, &json), 0);
        CHECK_STR(json, "{\"name\":\"empty\",\"assets\":[]}");
        ferry_free(json);
        ferry_artifact_free(a);
}

/* ---- tests against the fake daemon ---- */

static void test_fake_error_reply(void)
{
        static const struct fake_rule rules[] = {
            {"get", FAKE_ERROR,
             "{\"code\":\"not_found\",\"message\":\"artifact \\\"nope\\\" does not exist\"}"},
            {"status", FAKE_STALE_THEN_OK, "{\"queued\":3,\"running\":1}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        struct fake f;
        char *json = (char *)"untouched";
        cJSON *obj;

        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_STR(ferry_backend_name(c), "local");
        CHECK_INT(ferry_get(c, "nope", &json), FERRY_ENOTFOUND);
        CHECK(json == NULL);
        CHECK_STR(ferry_last_error(c), "artifact \"nope\" does not exist");
        /* The connection stays usable; a reply for another id is skipped. */
        CHECK_INT(ferry_status(c, &json), 0);
        obj = cJSON_Parse(json);
        CHECK_INT(cJSON_GetObjectItem(obj, "queued")->valueint, 3);
        CHECK(cJSON_GetObjectItem(obj, "id") == NULL);
        CHECK(cJSON_GetObjectItem(obj, "ok") == NULL);
        CHECK(cJSON_GetObjectItem(obj, "stale") == NULL);
        cJSON_Delete(obj);
        ferry_free(json);
        /* An unknown op is the daemon's refusal too. */
        CHECK_INT(ferry_call(c, "frobnicate", NULL, 1000, &json), FERRY_EUNKNOWNOP);
        CHECK(json == NULL);
        CHECK(contains(ferry_last_error(c), "frobnicate"));
        /* Bad specs are refused before anything is sent. */
        CHECK_INT(ferry_get(c, "w/a/b", &json), FERRY_EINVAL);
        CHECK_INT(ferry_get(c, "name:", &json), FERRY_EINVAL);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_version_mismatch(void)
{
        struct ferry_client *c = NULL;
        struct fake f;

        fake_start(&f, NULL, PROTO_VERSION + 1);
        CHECK_INT(ferry_connect(&c, f.path, 2000), FERRY_EVERSION);
        CHECK(contains(ferry_last_error(c), "protocol 2"));
        CHECK(contains(ferry_last_error(c), "protocol 1"));
        CHECK_INT(ferry_status(c, NULL), FERRY_ECLOSED);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_closed_mid_reply(void)
{
        static const struct fake_rule rules[] = {
            {"status", FAKE_CLOSE_MID, "{\"queued\":3,\"padding\":\"xxxxxxxxxxxxxxxxxxxx\"}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        struct fake f;
        char *json = NULL;

        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_status(c, &json), FERRY_ECLOSED);
        CHECK(json == NULL);
        CHECK(contains(ferry_last_error(c), "closed the connection in the middle"));
        CHECK_INT(ferry_status(c, &json), FERRY_ECLOSED);
        CHECK(contains(ferry_last_error(c), "not connected"));
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_timeout(void)
{
        static const struct fake_rule rules[] = {
            {"status", FAKE_SILENT, NULL},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        struct fake f;
        char *json = NULL;
        long long t0, dt;

        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        t0 = mono_ms();
        CHECK_INT(ferry_call(c, "status", NULL, 300, &json), FERRY_ETIMEDOUT);
        dt = mono_ms() - t0;
        CHECK(dt >= 290 && dt < 2000);
        CHECK(json == NULL);
        CHECK(contains(ferry_last_error(c), "did not answer \"status\" within 0.3 s"));
        ferry_set_timeout(c, 200);
        t0 = mono_ms();
        CHECK_INT(ferry_status(c, &json), FERRY_ETIMEDOUT);
        dt = mono_ms() - t0;
        CHECK(dt >= 190 && dt < 2000);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_requests(void)
{
        static const struct fake_rule rules[] = {
            {"artifact.log", FAKE_OK,
             "{\"job\":7,\"experiment\":\"0123456789abcdef0123456789abcdef\",\"assets\":1,"
             "\"bytes\":8}"},
            {"ls", FAKE_OK, "{\"items\":[]}"},
            {"stage", FAKE_OK, "{\"token\":\"t1\",\"path\":\"/spool/t1\"}"},
            {"experiment.create", FAKE_OK,
             "{\"key\":\"0123456789abcdef0123456789abcdef\",\"workspace\":\"w\","
             "\"project\":\"p\"}"},
            {"download", FAKE_OK, "{\"dir\":\"/d\",\"version\":\"1.0.0\",\"files\":[]}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_log_options lo = {"0123456789abcdef0123456789abcdef", "ws", NULL};
        struct ferry_artifact *a = NULL;
        struct ferry_client *c = NULL;
        char p[256], real[PATH_MAX], cwd[PATH_MAX], want[PATH_MAX + 32];
        char *json = NULL, *token = NULL, *path = NULL, *key = NULL;
        int64_t job = -1;
        struct fake f;
        cJSON *req;

        snprintf(p, sizeof(p), "%s/data.csv", tmpdir);
        write_file(p, "x,y\n1,2\n");
        realpath(p, real);
        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);

        CHECK_INT(ferry_artifact_new(&a, "my-data", "dataset"), 0);
        CHECK_INT(ferry_artifact_add_file(a, p, NULL, 0, NULL), 0);
        CHECK_INT(ferry_log(c, a, &lo, &job), 0);
        CHECK_INT(job, 7);
        req = fake_request(&f, 0);
        CHECK_STR(jstr(req, "op"), "artifact.log");
        CHECK_STR(jstr(req, "name"), "my-data");
        CHECK_STR(jstr(req, "type"), "dataset");
        CHECK_STR(jstr(req, "experiment"), lo.experiment);
        CHECK_STR(jstr(req, "workspace"), "ws");
        CHECK(cJSON_GetObjectItem(req, "project") == NULL);
        CHECK_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "assets"), 0), "file"), real);
        cJSON_Delete(req);
        CHECK_INT(ferry_log_json(c, a, NULL, &json), 0);
        CHECK_STR(json, "{\"job\":7,\"experiment\":\"0123456789abcdef0123456789abcdef\","
                        "\"assets\":1,\"bytes\":8}");
        ferry_free(json);
        lo.experiment = "short";
        CHECK_INT(ferry_log(c, a, &lo, &job), FERRY_EINVAL);
        CHECK(contains(ferry_last_error(c), "experiment key"));

        CHECK_INT(ferry_call(c, "ls", "{\"state\": \"failed\"}", 1000, &json), 0);
        CHECK(contains(json, "\"ok\":true"));
        ferry_free(json);
        req = fake_request(&f, 2);
        CHECK_STR(jstr(req, "state"), "failed");
        cJSON_Delete(req);
        CHECK_INT(ferry_call(c, "ls", "[1]", 1000, &json), FERRY_EINVAL);
        CHECK_INT(ferry_call(c, "ls", "{\"id\": 5}", 1000, &json), FERRY_EINVAL);
        CHECK_INT(ferry_call(c, "ls", "{nope", 1000, &json), FERRY_EINVAL);

        CHECK_INT(ferry_stage(c, &token, &path), 0);
        CHECK_STR(token, "t1");
        CHECK_STR(path, "/spool/t1");
        ferry_free(token);
        ferry_free(path);

        CHECK_INT(ferry_experiment_create(c, "w", NULL, "run 1", &key), 0);
        CHECK_STR(key, "0123456789abcdef0123456789abcdef");
        ferry_free(key);
        req = fake_request(&f, 4);
        CHECK_STR(jstr(req, "name"), "run 1");
        CHECK(cJSON_GetObjectItem(req, "key") == NULL);
        cJSON_Delete(req);
        CHECK_INT(ferry_experiment_adopt(c, "ABCDEFabcdef0123456789abcdef0123", NULL, NULL, NULL),
                  0);
        req = fake_request(&f, 5);
        CHECK_STR(jstr(req, "key"), "ABCDEFabcdef0123456789abcdef0123");
        cJSON_Delete(req);

        /* A relative download directory is sent absolute. */
        CHECK_INT(ferry_download(c, "w/my-data:1.0.0", "rel/dir", FERRY_OVERWRITE_PRESERVE, &json),
                  0);
        ferry_free(json);
        req = fake_request(&f, 6);
        getcwd(cwd, sizeof(cwd));
        snprintf(want, sizeof(want), "%s/rel/dir", cwd);
        CHECK_STR(jstr(req, "dir"), want);
        CHECK_STR(jstr(req, "overwrite"), "preserve");
        CHECK_STR(jstr(req, "name"), "w/my-data:1.0.0");
        cJSON_Delete(req);

        ferry_artifact_free(a);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_wait(void)
{
        static const struct fake_rule pending[] = {
            {"wait", FAKE_OK, "{\"drained\":false,\"pending\":3,\"failed\":0}"},
            {NULL, FAKE_OK, NULL},
        };
        static const struct fake_rule failed[] = {
            {"wait", FAKE_OK, "{\"drained\":true,\"pending\":0,\"failed\":2}"},
            {NULL, FAKE_OK, NULL},
        };
        static const struct fake_rule drained[] = {
            {"wait", FAKE_OK, "{\"drained\":true,\"pending\":0,\"failed\":0}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        int64_t jobs[2] = {4, 9};
        char *json = NULL;
        struct fake f;
        cJSON *req;

        fake_start(&f, pending, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_wait(c, jobs, 2, 1500, &json), FERRY_ETIMEDOUT);
        CHECK_STR(json, "{\"drained\":false,\"pending\":3,\"failed\":0}");
        CHECK(contains(ferry_last_error(c), "3 jobs still queued or running"));
        ferry_free(json);
        req = fake_request(&f, 0);
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(req, "jobs")), 2);
        CHECK_INT(cJSON_GetObjectItem(req, "timeout_ms")->valueint, 1500);
        cJSON_Delete(req);
        ferry_close(c);
        fake_stop(&f);

        fake_start(&f, failed, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_wait(c, NULL, 0, 0, &json), FERRY_EFAILED);
        CHECK(json != NULL);
        CHECK(contains(ferry_last_error(c), "2 jobs failed"));
        ferry_free(json);
        req = fake_request(&f, 0);
        CHECK(cJSON_GetObjectItem(req, "jobs") == NULL);
        CHECK(cJSON_GetObjectItem(req, "timeout_ms") == NULL);
        cJSON_Delete(req);
        ferry_close(c);
        fake_stop(&f);

        fake_start(&f, drained, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_wait(c, NULL, 0, 100, NULL), 0);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_download_steps(void)
{
        static const struct fake_rule slow[] = {
            {"download", FAKE_SLOW_OK, "{\"dir\":\"/d\",\"version\":\"1.0.0\",\"files\":[]}"},
            {"status", FAKE_OK, "{\"queued\":2}"},
            {NULL, FAKE_OK, NULL},
        };
        static const struct fake_rule refused[] = {
            {"download", FAKE_ERROR,
             "{\"code\":\"timeout\",\"message\":\"the backend timed out\"}"},
            {"status", FAKE_OK, "{\"queued\":0}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        char *json = (char *)"untouched";
        struct fake f;
        int rc, notyet = 0;
        long long t0;

        fake_start(&f, slow, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        /* Nothing started. */
        CHECK_INT(ferry_download_ready(c, 0), FERRY_EINVAL);
        CHECK_INT(ferry_download_finish(c, &json), FERRY_EINVAL);
        CHECK(json == NULL);
        CHECK(contains(ferry_last_error(c), "no download is in progress"));

        /* Ready says "not yet" while the daemon works, then 1; finish hands the reply over. */
        CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), 0);
        CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), FERRY_EBUSY);
        t0 = mono_ms();
        while ((rc = ferry_download_ready(c, 100)) == 0 && mono_ms() - t0 < 5000)
                notyet++;
        CHECK_INT(rc, 1);
        CHECK(notyet >= 3);
        CHECK_INT(ferry_download_ready(c, 0), 1); /* stays known until finished */
        CHECK_INT(ferry_download_finish(c, &json), 0);
        CHECK_STR(json, "{\"dir\":\"/d\",\"version\":\"1.0.0\",\"files\":[]}");
        ferry_free(json);
        CHECK_INT(ferry_download_ready(c, 0), FERRY_EINVAL);

        /* Other requests meanwhile: the download's reply, arriving first, is kept. */
        CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), 0);
        CHECK_INT(ferry_status(c, &json), 0);
        CHECK(contains(json, "\"queued\":2"));
        ferry_free(json);
        CHECK_INT(ferry_download_ready(c, 0), 1);
        CHECK_INT(ferry_download_finish(c, &json), 0);
        CHECK(contains(json, "\"version\":\"1.0.0\""));
        ferry_free(json);

        /* ferry_download is start + finish; its own limit abandons the download. */
        CHECK_INT(ferry_download(c, "my-data", "/d", FERRY_OVERWRITE_FAIL, &json), 0);
        ferry_free(json);
        ferry_set_timeout(c, 200);
        CHECK_INT(ferry_download(c, "my-data", "/d", FERRY_OVERWRITE_FAIL, &json), FERRY_ETIMEDOUT);
        CHECK(json == NULL);
        CHECK(contains(ferry_last_error(c), "did not answer \"download\" within 0.2 s"));
        ferry_set_timeout(c, 0);
        CHECK_INT(ferry_download_ready(c, 0), FERRY_EINVAL);
        /* The late reply is skipped. */
        CHECK_INT(ferry_status(c, &json), 0);
        CHECK(contains(json, "\"queued\":2"));
        ferry_free(json);
        ferry_close(c);
        fake_stop(&f);

        /* The daemon's own "timeout" refusal is an outcome, not "not yet". */
        fake_start(&f, refused, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), 0);
        t0 = mono_ms();
        while ((rc = ferry_download_ready(c, 100)) == 0 && mono_ms() - t0 < 5000)
                ;
        CHECK_INT(rc, 1);
        CHECK_INT(ferry_status(c, NULL), 0); /* does not disturb the kept outcome */
        CHECK_INT(ferry_download_finish(c, &json), FERRY_ETIMEDOUT);
        CHECK(json == NULL);
        CHECK_STR(ferry_last_error(c), "the backend timed out");
        /* Refused before anything is sent. */
        CHECK_INT(ferry_download_start(c, "a/b/c", "/d", FERRY_OVERWRITE_FAIL), FERRY_EINVAL);
        CHECK_INT(ferry_download_start(c, "x", "", FERRY_OVERWRITE_FAIL), FERRY_EINVAL);
        CHECK_INT(ferry_download_ready(c, 0), FERRY_EINVAL);
        ferry_close(c);
        fake_stop(&f);

        /* A connection lost meanwhile ends the download. */
        {
                static const struct fake_rule closing[] = {
                    {"download", FAKE_SILENT, NULL},
                    {"status", FAKE_CLOSE_MID, "{\"queued\":3,\"padding\":\"xxxxxxxxxxxxxxxx\"}"},
                    {NULL, FAKE_OK, NULL},
                };

                fake_start(&f, closing, PROTO_VERSION);
                CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
                CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), 0);
                CHECK_INT(ferry_download_ready(c, 50), 0);
                CHECK_INT(ferry_status(c, NULL), FERRY_ECLOSED);
                CHECK_INT(ferry_download_ready(c, 1000), 1);
                CHECK_INT(ferry_download_finish(c, &json), FERRY_ECLOSED);
                CHECK(contains(ferry_last_error(c), "closed before the download finished"));
                ferry_close(c);
                fake_stop(&f);
        }
        /* Closing with a download in flight frees what it kept. */
        fake_start(&f, slow, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_download_start(c, "my-data", "/d", FERRY_OVERWRITE_FAIL), 0);
        CHECK_INT(ferry_download_ready(c, 3000), 1);
        ferry_close(c);
        fake_stop(&f);
}

static void test_fake_pause_cache_ls(void)
{
        static const struct fake_rule rules[] = {
            {"pause", FAKE_OK, "{\"paused\":true}"},
            {"cache", FAKE_OK,
             "{\"path\":\"/s/cache\",\"bytes\":5,\"budget\":100,\"blobs\":1,\"freed\":0}"},
            {"ls", FAKE_OK, "{\"items\":[]}"},
            {NULL, FAKE_OK, NULL},
        };
        static const struct fake_rule bad[] = {
            {"pause", FAKE_OK, "{}"},
            {"cache", FAKE_OK, "{\"path\":\"/s/cache\"}"},
            {"ls", FAKE_OK, "{\"items\":{}}"},
            {NULL, FAKE_OK, NULL},
        };
        struct ferry_client *c = NULL;
        char *json = NULL;
        struct fake f;
        cJSON *req;

        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_pause(c, 1, &json), 0);
        CHECK_STR(json, "{\"paused\":true}");
        ferry_free(json);
        CHECK_INT(ferry_pause(c, 0, NULL), 0);
        req = fake_request(&f, 0);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(req, "paused")));
        cJSON_Delete(req);
        req = fake_request(&f, 1);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(req, "paused")));
        cJSON_Delete(req);

        CHECK_INT(ferry_cache(c, 0, &json), 0);
        CHECK(contains(json, "\"path\":\"/s/cache\""));
        ferry_free(json);
        CHECK_INT(ferry_cache(c, 1, NULL), 0);
        req = fake_request(&f, 2);
        CHECK(cJSON_GetObjectItem(req, "clear") == NULL);
        cJSON_Delete(req);
        req = fake_request(&f, 3);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(req, "clear")));
        cJSON_Delete(req);

        CHECK_INT(ferry_ls(c, NULL, 0, &json), 0);
        CHECK_STR(json, "{\"items\":[]}");
        ferry_free(json);
        CHECK_INT(ferry_ls(c, "all", 7, NULL), 0);
        req = fake_request(&f, 4);
        CHECK(cJSON_GetObjectItem(req, "state") == NULL);
        CHECK(cJSON_GetObjectItem(req, "limit") == NULL);
        cJSON_Delete(req);
        req = fake_request(&f, 5);
        CHECK_STR(jstr(req, "state"), "all");
        CHECK_INT(cJSON_GetObjectItem(req, "limit")->valueint, 7);
        cJSON_Delete(req);
        CHECK_INT(ferry_ls(c, "bogus", 0, &json), FERRY_EINVAL);
        CHECK(contains(ferry_last_error(c), "bogus"));
        CHECK_INT(ferry_ls(c, NULL, FERRY_LS_LIMIT_MAX + 1, &json), FERRY_EINVAL);
        CHECK(json == NULL);
        ferry_close(c);
        fake_stop(&f);

        /* Replies without the promised fields. */
        fake_start(&f, bad, PROTO_VERSION);
        CHECK_INT(ferry_connect(&c, f.path, 2000), 0);
        CHECK_INT(ferry_pause(c, 1, &json), FERRY_EPROTO);
        CHECK(json == NULL);
        CHECK_INT(ferry_cache(c, 0, &json), FERRY_EPROTO);
        CHECK_INT(ferry_ls(c, NULL, 0, &json), FERRY_EPROTO);
        CHECK(contains(ferry_last_error(c), "\"items\""));
        ferry_close(c);
        fake_stop(&f);
}

/* ---- the CLI ---- */

/* Drain `fd` into `out` (truncated to `len`). */
static void read_all(int fd, char *out, size_t len)
{
        size_t off = 0;
        ssize_t n;
        char sink[4096];

        for (;;) {
                if (off + 1 < len)
                        n = read(fd, out + off, len - off - 1);
                else
                        n = read(fd, sink, sizeof(sink));
                if (n <= 0)
                        break;
                if (off + 1 < len)
                        off += (size_t)n;
        }
        out[off] = '\0';
}

/* Run the ferry CLI with `args` (NULL-terminated); return its exit status. */
static int run_cli(const char *const *args, char *out, size_t outlen, char *err, size_t errlen)
{
        posix_spawn_file_actions_t fa;
        char *argv[32];
        int po[2], pe[2], status;
        pid_t pid;
        size_t i;

        argv[0] = (char *)FERRY_CLI_PATH;
        for (i = 0; args[i] != NULL && i < 30; i++)
                argv[i + 1] = (char *)args[i];
        argv[i + 1] = NULL;
        if (pipe(po) != 0 || pipe(pe) != 0)
                return -1;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, po[1], 1);
        posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
        posix_spawn_file_actions_addclose(&fa, po[0]);
        posix_spawn_file_actions_addclose(&fa, pe[0]);
        if (posix_spawn(&pid, FERRY_CLI_PATH, &fa, NULL, argv, environ) != 0)
                return -1;
        posix_spawn_file_actions_destroy(&fa);
        close(po[1]);
        close(pe[1]);
        read_all(po[0], out, outlen);
        read_all(pe[0], err, errlen);
        close(po[0]);
        close(pe[0]);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
                return -1;
        return WEXITSTATUS(status);
}

#define RUN(...)                                                                                   \
        run_cli((const char *const[]){__VA_ARGS__, NULL}, out, sizeof(out), err, sizeof(err))

static void test_cli_usage(void)
{
        char out[8192], err[8192], path[128];

        CHECK_INT(RUN("--version"), 0);
        CHECK_STR(out, "ferry " FERRY_VERSION_STRING "\n");
        CHECK_INT(RUN("--help"), 0);
        CHECK(contains(out, "download"));
        CHECK_INT(RUN("log", "--help"), 0);
        CHECK(contains(out, "--logical-path"));
        CHECK_INT(RUN("bogus"), 2);
        CHECK(contains(err, "ferry: unknown command \"bogus\""));
        CHECK_INT(RUN("--bogus", "status"), 2);
        CHECK_INT(RUN("log", "--bogus", "n", "f"), 2);
        CHECK(contains(err, "ferry: unknown option --bogus"));
        CHECK_INT(RUN("log"), 2);
        CHECK_INT(RUN("log", "name"), 2);
        CHECK_INT(RUN("log", "name", "a", "b", "--logical-path", "x"), 2);
        CHECK_INT(RUN("log", "name", "a", "--timeout", "3"), 2);
        CHECK_INT(RUN("log", "name", "a", "--type"), 2);
        CHECK(contains(err, "needs a value"));
        CHECK_INT(RUN("wait", "--timeout", "soon"), 2);
        CHECK_INT(RUN("retry"), 2);
        CHECK_INT(RUN("retry", "x"), 2);
        CHECK_INT(RUN("retry", "3", "--all"), 2);
        CHECK_INT(RUN("ls", "--failed", "--done"), 2);
        CHECK_INT(RUN("download", "name"), 2);
        CHECK_INT(RUN("download", "name", "dir", "--overwrite", "maybe"), 2);
        CHECK_INT(RUN("status", "extra"), 2);
        CHECK_INT(RUN("ls", "--limit", "0"), 2);
        CHECK(contains(err, "--limit wants a number from 1 to 100000"));
        CHECK_INT(RUN("ls", "--limit", "100001"), 2);
        CHECK_INT(RUN("ls", "--limit", "ten"), 2);
        CHECK_INT(RUN("ls", "--limit"), 2);
        CHECK_INT(RUN("pause", "now"), 2);
        CHECK_INT(RUN("resume", "--bogus"), 2);
        CHECK_INT(RUN("cache", "--clear", "x"), 2);
        CHECK_INT(RUN("cache", "--bogus"), 2);
        CHECK_INT(RUN("--help"), 0);
        CHECK(contains(out, "pause"));
        CHECK(contains(out, "resume"));
        CHECK(contains(out, "cache"));
        CHECK_INT(RUN("ls", "--help"), 0);
        CHECK(contains(out, "--limit N"));
        CHECK_INT(RUN("cache", "--help"), 0);
        CHECK(contains(out, "--clear"));
        CHECK_INT(RUN(NULL), 2); /* no command */

        /* Values libferry refuses, and files, fail the operation (1). */
        CHECK_INT(RUN("log", "name", "/no/such/file"), 1);
        CHECK(contains(err, "ferry: /no/such/file does not exist"));
        CHECK_INT(RUN("log", "name", "--remote", "s3://b/k", "--version", "1.2"), 1);
        CHECK(contains(err, "semantic version"));

        snprintf(path, sizeof(path), "%s/missing.sock", tmpdir);
        CHECK_INT(RUN("--socket", path, "status"), 1);
        CHECK(contains(err, "ferry: ferryd is not running (no socket at "));
        CHECK(contains(err, path));
        CHECK(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
        setenv("FERRY_SOCKET", path, 1);
        CHECK_INT(RUN("ls"), 1);
        CHECK(contains(err, path));
        unsetenv("FERRY_SOCKET");
}

static void test_cli_with_fake(void)
{
        static const struct fake_rule rules[] = {
            {"status", FAKE_OK,
             "{\"backend\":\"local\",\"online\":false,\"offline_since\":1700000000000,"
             "\"last_error\":\"connection refused\",\"queued\":3,\"running\":1,\"failed\":1,"
             "\"done\":12,\"bytes_queued\":12897490,\"bytes_sent\":5,\"rate_bps\":0,"
             "\"spool_bytes\":100,\"spool_budget\":1073741824,\"errors\":[{\"job\":5,"
             "\"name\":\"ckpt\",\"code\":\"backend_error\",\"message\":\"HTTP 400\"}]}"},
            {"artifact.log", FAKE_OK,
             "{\"job\":12,\"experiment\":\"0123456789abcdef0123456789abcdef\",\"assets\":2,"
             "\"bytes\":1258291}"},
            {"wait", FAKE_OK, "{\"drained\":true,\"pending\":0,\"failed\":1}"},
            {"ls", FAKE_OK,
             "{\"items\":[{\"job\":12,\"name\":\"my-data\",\"type\":\"dataset\","
             "\"version\":null,\"state\":\"failed\",\"attempts\":1,\"next_attempt\":null,"
             "\"bytes\":1258291,\"assets\":2,\"experiment\":\"k\",\"created\":1700000000000,"
             "\"error\":\"workspace \\\"w\\\" does not exist\"}]}"},
            {"get", FAKE_ERROR,
             "{\"code\":\"not_found\",\"message\":\"artifact \\\"nope\\\" does not exist\"}"},
            {"retry", FAKE_OK, "{\"requeued\":2}"},
            {"experiment.create", FAKE_OK,
             "{\"key\":\"0123456789abcdef0123456789abcdef\",\"workspace\":\"w\","
             "\"project\":\"p\"}"},
            {NULL, FAKE_OK, NULL},
        };
        char out[8192], err[8192], d[128], p[256], real[PATH_MAX];
        struct fake f;
        cJSON *obj, *req;

        snprintf(d, sizeof(d), "%s/cli", tmpdir);
        mkdir(d, 0755);
        snprintf(p, sizeof(p), "%s/one.bin", d);
        write_file(p, "12345");
        snprintf(p, sizeof(p), "%s/two.bin", d);
        write_file(p, "678");
        realpath(p, real);
        fake_start(&f, rules, PROTO_VERSION);

        CHECK_INT(RUN("--socket", f.path, "status", "--json"), 0);
        obj = cJSON_Parse(out);
        CHECK(obj != NULL);
        CHECK(cJSON_GetObjectItem(obj, "id") == NULL);
        CHECK(cJSON_GetObjectItem(obj, "ok") == NULL);
        CHECK_INT(cJSON_GetObjectItem(obj, "queued")->valueint, 3);
        cJSON_Delete(obj);
        CHECK_INT(RUN("--socket", f.path, "status"), 0);
        CHECK(contains(out, "backend local, offline since "));
        CHECK(contains(out, "3 queued, 1 running, 1 failed, 12 done"));
        CHECK(contains(out, "12.3 MiB queued"));
        CHECK(contains(out, "last error  connection refused"));
        CHECK(contains(out, "backend_error: HTTP 400"));

        CHECK_INT(RUN("--socket", f.path, "log", "my-data", d, "--type", "dataset", "--alias",
                      "best", "--alias", "v", "--tag", "t", "--metadata", "{\"rows\":1}",
                      "--remote", "s3://b/x.bin", "--workspace", "w"),
                  0);
        CHECK_STR(out, "logged my-data (2 assets, 1.2 MiB) as job 12\n");
        req = fake_request(&f, 2);
        CHECK_STR(jstr(req, "op"), "artifact.log");
        CHECK_STR(jstr(req, "type"), "dataset");
        CHECK_STR(jstr(req, "workspace"), "w");
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(req, "aliases")), 2);
        CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(req, "assets")), 3);
        CHECK_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "assets"), 1), "file"), real);
        CHECK_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "assets"), 1), "logical_path"),
                  "two.bin");
        CHECK_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "assets"), 2), "remote"),
                  "s3://b/x.bin");
        cJSON_Delete(req);

        /* --logical-path renames the one file. */
        CHECK_INT(
            RUN("--socket", f.path, "log", "my-data", p, "--logical-path", "w/x.bin", "--json"), 0);
        obj = cJSON_Parse(out);
        CHECK(obj != NULL && cJSON_GetObjectItem(obj, "job")->valueint == 12);
        cJSON_Delete(obj);
        req = fake_request(&f, 3);
        CHECK_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "assets"), 0), "logical_path"),
                  "w/x.bin");
        cJSON_Delete(req);

        /* --wait: the job failed, with the reason from ls. */
        CHECK_INT(RUN("--socket", f.path, "log", "my-data", p, "--wait"), 1);
        CHECK(contains(err, "ferry: job 12 (my-data) failed: workspace \"w\" does not exist"));
        CHECK(contains(err, "ferry retry 12"));
        req = fake_request(&f, 5);
        CHECK_STR(jstr(req, "op"), "wait");
        CHECK_INT(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "jobs"), 0)->valueint, 12);
        cJSON_Delete(req);

        CHECK_INT(RUN("--socket", f.path, "wait"), 1);
        CHECK(contains(err, "1 item failed; see `ferry ls --failed`"));
        CHECK_INT(RUN("--socket", f.path, "ls", "--failed"), 0);
        CHECK(contains(out, "JOB"));
        CHECK(contains(out, "workspace \"w\" does not exist"));
        CHECK_INT(RUN("--socket", f.path, "get", "nope"), 1);
        CHECK_STR(err, "ferry: artifact \"nope\" does not exist\n");
        CHECK_INT(RUN("--socket", f.path, "retry", "--all"), 0);
        CHECK_STR(out, "requeued 2 items\n");
        CHECK_INT(RUN("--socket", f.path, "experiment", "--project", "p"), 0);
        CHECK_STR(out, "0123456789abcdef0123456789abcdef\n");
        fake_stop(&f);
}

static void test_cli_pause_cache_ls(void)
{
        static const struct fake_rule rules[] = {
            {"status", FAKE_OK,
             "{\"backend\":\"local\",\"online\":true,\"paused\":true,\"offline_since\":null,"
             "\"last_error\":null,\"queued\":1,\"running\":0,\"failed\":0,\"done\":0,"
             "\"bytes_queued\":5,\"bytes_sent\":0,\"rate_bps\":0,\"spool_bytes\":5,"
             "\"spool_budget\":0,\"errors\":[]}"},
            {"pause", FAKE_OK, "{\"paused\":false}"},
            {"cache", FAKE_OK,
             "{\"path\":\"/s/cache\",\"bytes\":1288490189,\"budget\":34359738368,"
             "\"blobs\":37,\"freed\":1288490189}"},
            {"ls", FAKE_OK, "{\"items\":[]}"},
            {NULL, FAKE_OK, NULL},
        };
        char out[8192], err[8192];
        struct fake f;
        cJSON *req;

        fake_start(&f, rules, PROTO_VERSION);
        CHECK_INT(RUN("--socket", f.path, "status"), 0);
        CHECK(contains(out, "paused"));
        CHECK(contains(out, "1 queued"));
        CHECK_INT(RUN("--socket", f.path, "pause"), 0);
        CHECK_STR(out, "queue paused: nothing new is delivered until `ferry resume`\n");
        req = fake_request(&f, 1);
        CHECK_STR(jstr(req, "op"), "pause");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(req, "paused")));
        cJSON_Delete(req);
        CHECK_INT(RUN("--socket", f.path, "resume"), 0);
        CHECK_STR(out, "queue resumed\n");
        req = fake_request(&f, 2);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(req, "paused")));
        cJSON_Delete(req);
        CHECK_INT(RUN("--socket", f.path, "resume", "--json"), 0);
        CHECK(contains(out, "\"paused\":\tfalse"));

        CHECK_INT(RUN("--socket", f.path, "cache"), 0);
        CHECK_STR(out, "cache /s/cache: 1.2 GiB in 37 blobs, budget 32.0 GiB\n");
        req = fake_request(&f, 4);
        CHECK_STR(jstr(req, "op"), "cache");
        CHECK(cJSON_GetObjectItem(req, "clear") == NULL);
        cJSON_Delete(req);
        CHECK_INT(RUN("--socket", f.path, "cache", "--clear"), 0);
        CHECK(contains(out, "cleared 1.2 GiB\n"));
        req = fake_request(&f, 5);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(req, "clear")));
        cJSON_Delete(req);
        CHECK_INT(RUN("--socket", f.path, "cache", "--json"), 0);
        CHECK(contains(out, "\"blobs\":\t37"));

        CHECK_INT(RUN("--socket", f.path, "ls", "--limit", "5", "--failed"), 0);
        CHECK_STR(out, "no failed items\n");
        req = fake_request(&f, 7);
        CHECK_STR(jstr(req, "op"), "ls");
        CHECK_STR(jstr(req, "state"), "failed");
        CHECK_INT(cJSON_GetObjectItem(req, "limit")->valueint, 5);
        cJSON_Delete(req);
        CHECK_INT(RUN("--socket", f.path, "ls"), 0);
        req = fake_request(&f, 8);
        CHECK(cJSON_GetObjectItem(req, "limit") == NULL);
        CHECK(cJSON_GetObjectItem(req, "state") == NULL);
        cJSON_Delete(req);
        fake_stop(&f);
}

int main(void)
{
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/ferry-test-client-XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
                perror("mkdtemp");
                return 2;
        }
        test_error_table();
        test_socket_path();
        test_connect_failures();
        test_builder_values();
        test_builder_files();
        test_to_json();
        test_fake_error_reply();
        test_fake_version_mismatch();
        test_fake_closed_mid_reply();
        test_fake_timeout();
        test_fake_requests();
        test_fake_wait();
        test_fake_download_steps();
        test_fake_pause_cache_ls();
        test_cli_usage();
        test_cli_with_fake();
        test_cli_pause_cache_ls();
        {
                char cmd[128];

                snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", tmpdir);
        }
        return CHECK_DONE("test_client");
}
