/*
 * s3.c — ferryd's S3 client (see s3.h): settings, signed requests, listings
 * and fetches into the cache.
 *
 * A listing walks: GetBucketVersioning (is the bucket versioned?) -> pages of
 * ListObjectVersions (versioned) or ListObjectsV2, each page's continuation
 * token (or key and version-id markers) naming the next, until a page is not
 * truncated or more than `max` objects were found. Every request is signed
 * by libcurl (CURLOPT_AWS_SIGV4) with the payload hash S3 wants in
 * x-amz-content-sha256; the answers are parsed with expat (s3xml.c).
 * GetBucketVersioning is only a hint: a refusal of it (many policies allow
 * ListBucket but not GetBucketVersioning; s3rver does not implement it) means
 * "not versioned", unless it says the bucket or the credentials do not exist.
 */
#include "s3.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache.h"
#include "config.h"
#include "ferry_base.h"
#include "http.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S3_MAX_BODY (16 * 1024 * 1024) /* a page of 1000 keys of 1 KiB, escaped, fits */
#define S3_INI_MAX (1024 * 1024)       /* ~/.aws files larger than this are not read */
#define S3_FINISH_NOW 0

struct s3_fetch;

struct s3 {
        uv_loop_t *loop;
        struct http_engine *http;
        struct cache *cache;
        int page_size;
        struct s3_list *lists;    /* running listings */
        struct s3_fetch *fetches; /* running fetches, coalesced by cache key */
        struct s3_list *finished; /* listings whose callback is due */
        uv_timer_t defer;         /* runs those callbacks from the loop */
        void (*closed)(void *data);
        void *closed_data;
        bool closing;
};

/* ---- small strings ---- */

struct sbuf {
        char *s;
        size_t len, cap;
        bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
        if (b->oom)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 128;
                char *grown;

                while (cap < b->len + n + 1)
                        cap *= 2;
                grown = realloc(b->s, cap);
                if (grown == NULL) {
                        b->oom = true;
                        return;
                }
                b->s = grown;
                b->cap = cap;
        }
        memcpy(b->s + b->len, s, n);
        b->len += n;
        b->s[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
        sb_add(b, s, strlen(s));
}

static char *sb_take(struct sbuf *b)
{
        if (b->oom) {
                free(b->s);
                return NULL;
        }
        if (b->s == NULL)
                return strdup("");
        return b->s;
}

static void sb_encode(struct sbuf *b, const char *s, bool keep_slash)
{
        static const char hex[] = "0123456789ABCDEF";

        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
                    (keep_slash && c == '/')) {
                        sb_add(b, (const char *)&c, 1);
                } else {
                        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

                        sb_add(b, esc, 3);
                }
        }
}

char *s3_encode(const char *s, bool keep_slash)
{
        struct sbuf b = {0};

        sb_encode(&b, s, keep_slash);
        return sb_take(&b);
}

static void copy(char *dst, size_t len, const char *src)
{
        snprintf(dst, len, "%s", src ? src : "");
}

/* ---- settings ---- */

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

/* The values of the keys we use from one profile's section of an INI file. */
struct ini_profile {
        bool found;
        char access_key[256], secret_key[256], session_token[4096];
        char region[64], endpoint[1024];
};

/*
 * Read section `section` of the INI file at `path` (the AWS CLI's format:
 * "[name]", "key = value", '#' and ';' comments). Nested blocks (lines that
 * start with whitespace, as under "s3 =") are skipped. A missing file is fine.
 */
static void ini_read(const char *path, const char *section, struct ini_profile *p)
{
        FILE *f = fopen(path, "re");
        char line[8192];
        bool in = false;
        long n = 0;

        if (f == NULL)
                return;
        while (fgets(line, sizeof(line), f) != NULL && (n += (long)strlen(line)) <= S3_INI_MAX) {
                char *s, *eq, *key, *value;

                if (isspace((unsigned char)line[0]) && in && strchr(line, '=') != NULL &&
                    trim(line)[0] != '\0')
                        continue; /* a nested value ("s3 =\n  addressing_style = path") */
                s = trim(line);
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *end = strchr(s, ']');

                        if (end == NULL)
                                continue;
                        *end = '\0';
                        in = strcmp(trim(s + 1), section) == 0;
                        if (in)
                                p->found = true;
                        continue;
                }
                if (!in || (eq = strchr(s, '=')) == NULL)
                        continue;
                *eq = '\0';
                key = trim(s);
                value = trim(eq + 1);
                if (strcmp(key, "aws_access_key_id") == 0)
                        copy(p->access_key, sizeof(p->access_key), value);
                else if (strcmp(key, "aws_secret_access_key") == 0)
                        copy(p->secret_key, sizeof(p->secret_key), value);
                else if (strcmp(key, "aws_session_token") == 0)
                        copy(p->session_token, sizeof(p->session_token), value);
                else if (strcmp(key, "region") == 0)
                        copy(p->region, sizeof(p->region), value);
                else if (strcmp(key, "endpoint_url") == 0)
                        copy(p->endpoint, sizeof(p->endpoint), value);
        }
        explicit_bzero(line, sizeof(line));
        fclose(f);
}

static const char *env_nonempty(const char *(*env)(const char *), const char *name)
{
        const char *v = env(name);

        return v != NULL && v[0] != '\0' ? v : NULL;
}

void s3_settings_load(struct s3_settings *out, const char *(*env)(const char *name),
                      const char *home)
{
        const char *profile = env_nonempty(env, "AWS_PROFILE");
        const char *v, *ak, *sk;
        char cred_path[1024], conf_path[1024], section[300];
        struct ini_profile *cred = calloc(1, sizeof(*cred)), *conf = calloc(1, sizeof(*conf));
        size_t n;

        memset(out, 0, sizeof(*out));
        if (cred == NULL || conf == NULL) {
                free(cred);
                free(conf);
                copy(out->problem, sizeof(out->problem), "out of memory");
                return;
        }
        if (profile == NULL)
                profile = env_nonempty(env, "AWS_DEFAULT_PROFILE");
        if ((v = env_nonempty(env, "AWS_SHARED_CREDENTIALS_FILE")) != NULL)
                copy(cred_path, sizeof(cred_path), v);
        else
                snprintf(cred_path, sizeof(cred_path), "%s/.aws/credentials", home);
        if ((v = env_nonempty(env, "AWS_CONFIG_FILE")) != NULL)
                copy(conf_path, sizeof(conf_path), v);
        else
                snprintf(conf_path, sizeof(conf_path), "%s/.aws/config", home);
        ini_read(cred_path, profile ? profile : "default", cred);
        /* ~/.aws/config names profiles "[profile x]", except "[default]". */
        if (profile == NULL || strcmp(profile, "default") == 0)
                copy(section, sizeof(section), "default");
        else
                snprintf(section, sizeof(section), "profile %s", profile);
        ini_read(conf_path, section, conf);

        /* Credentials: the environment, then the credentials file, then the config file. */
        ak = env_nonempty(env, "AWS_ACCESS_KEY_ID");
        sk = env_nonempty(env, "AWS_SECRET_ACCESS_KEY");
        if (ak != NULL && sk != NULL) {
                copy(out->access_key, sizeof(out->access_key), ak);
                copy(out->secret_key, sizeof(out->secret_key), sk);
                copy(out->session_token, sizeof(out->session_token),
                     env_nonempty(env, "AWS_SESSION_TOKEN"));
                copy(out->source, sizeof(out->source), "AWS_ACCESS_KEY_ID in ferryd's environment");
                out->have_credentials = true;
        } else if (cred->access_key[0] && cred->secret_key[0]) {
                copy(out->access_key, sizeof(out->access_key), cred->access_key);
                copy(out->secret_key, sizeof(out->secret_key), cred->secret_key);
                copy(out->session_token, sizeof(out->session_token), cred->session_token);
                snprintf(out->source, sizeof(out->source), "profile \"%s\" in %s",
                         profile ? profile : "default", cred_path);
                out->have_credentials = true;
        } else if (conf->access_key[0] && conf->secret_key[0]) {
                copy(out->access_key, sizeof(out->access_key), conf->access_key);
                copy(out->secret_key, sizeof(out->secret_key), conf->secret_key);
                copy(out->session_token, sizeof(out->session_token), conf->session_token);
                snprintf(out->source, sizeof(out->source), "profile \"%s\" in %s",
                         profile ? profile : "default", conf_path);
                out->have_credentials = true;
        }
        /* Region and endpoint: the environment, then the profile in the config file. */
        if ((v = env_nonempty(env, "AWS_REGION")) != NULL ||
            (v = env_nonempty(env, "AWS_DEFAULT_REGION")) != NULL)
                copy(out->region, sizeof(out->region), v);
        else if (conf->region[0])
                copy(out->region, sizeof(out->region), conf->region);
        else
                copy(out->region, sizeof(out->region), "us-east-1");
        if ((v = env_nonempty(env, "AWS_ENDPOINT_URL_S3")) != NULL ||
            (v = env_nonempty(env, "AWS_ENDPOINT_URL")) != NULL)
                copy(out->endpoint, sizeof(out->endpoint), v);
        else if (conf->endpoint[0])
                copy(out->endpoint, sizeof(out->endpoint), conf->endpoint);
        n = strlen(out->endpoint);
        while (n > 0 && out->endpoint[n - 1] == '/')
                out->endpoint[--n] = '\0';

        if (profile != NULL && !cred->found && !conf->found && !out->have_credentials)
                snprintf(out->problem, sizeof(out->problem),
                         "the AWS profile \"%s\" (AWS_PROFILE) is in neither %s nor %s", profile,
                         cred_path, conf_path);
        else if (!out->have_credentials)
                snprintf(out->problem, sizeof(out->problem),
                         "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                         "in ferryd's environment, or a profile in %s of ferryd's user",
                         cred_path);
        else if (out->endpoint[0] && strncasecmp(out->endpoint, "http://", 7) != 0 &&
                 strncasecmp(out->endpoint, "https://", 8) != 0)
                snprintf(out->problem, sizeof(out->problem),
                         "the S3 endpoint \"%.200s\" is not an http:// or https:// URL",
                         out->endpoint);
        else if (strpbrk(out->region, "/:?#@ ") != NULL || out->region[0] == '\0')
                snprintf(out->problem, sizeof(out->problem),
                         "the AWS region \"%.60s\" is not valid", out->region);
        explicit_bzero(cred, sizeof(*cred));
        explicit_bzero(conf, sizeof(*conf));
        free(cred);
        free(conf);
}

void s3_settings_wipe(struct s3_settings *s)
{
        explicit_bzero(s->access_key, sizeof(s->access_key));
        explicit_bzero(s->secret_key, sizeof(s->secret_key));
        explicit_bzero(s->session_token, sizeof(s->session_token));
}

/* ---- URIs and URLs ---- */

bool s3_uri_is_s3(const char *uri)
{
        return uri != NULL && strncasecmp(uri, "s3://", 5) == 0;
}

int s3_uri_parse(const char *uri, char *bucket, size_t blen, const char **prefix)
{
        const char *b, *slash;
        size_t n, i;

        if (!s3_uri_is_s3(uri))
                return FERRY_EINVAL;
        b = uri + 5;
        slash = strchr(b, '/');
        n = slash ? (size_t)(slash - b) : strlen(b);
        if (n == 0 || n > 255 || n >= blen)
                return FERRY_EINVAL;
        for (i = 0; i < n; i++)
                if (!isalnum((unsigned char)b[i]) && b[i] != '.' && b[i] != '-' && b[i] != '_')
                        return FERRY_EINVAL;
        memcpy(bucket, b, n);
        bucket[n] = '\0';
        *prefix = slash ? slash + 1 : b + n;
        return 0;
}

/* Can `bucket` be a host name label (virtual-hosted style)? */
static bool bucket_hostable(const char *bucket)
{
        const char *p;

        for (p = bucket; *p; p++)
                if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
                        return false;
        return bucket[0] != '-';
}

char *s3_url(const struct s3_settings *st, const char *bucket, const char *key, const char *query)
{
        struct sbuf b = {0};

        if (st->endpoint[0]) {
                sb_str(&b, st->endpoint);
                sb_add(&b, "/", 1);
                sb_encode(&b, bucket, false);
        } else if (bucket_hostable(bucket)) {
                sb_str(&b, "https://");
                sb_str(&b, bucket);
                sb_str(&b, ".s3.");
                sb_str(&b, st->region);
                sb_str(&b, ".amazonaws.com");
        } else {
                sb_str(&b, "https://s3.");
                sb_str(&b, st->region);
                sb_str(&b, ".amazonaws.com/");
                sb_encode(&b, bucket, false);
        }
        sb_add(&b, "/", 1);
        if (key != NULL)
                sb_encode(&b, key, true);
        if (query != NULL && query[0]) {
                sb_add(&b, "?", 1);
                sb_str(&b, query);
        }
        return sb_take(&b);
}

/* Is `key` the prefix itself, or below it as a folder? Folder markers ("x/") are not. */
static bool key_below(const char *prefix, const char *key)
{
        size_t n = strlen(prefix), k = strlen(key);

        if (k == 0 || key[k - 1] == '/' || strncmp(key, prefix, n) != 0)
                return false;
        return key[n] == '\0' || n == 0 || prefix[n - 1] == '/' || key[n] == '/';
}

char *s3_logical_path(const char *prefix, const char *key, const char *under)
{
        size_t n = strlen(prefix);
        const char *rel;
        struct sbuf b = {0};

        if (!key_below(prefix, key))
                return NULL;
        if (key[n] == '\0') {
                /* The URI names one object: its base name. */
                rel = strrchr(key, '/');
                rel = rel ? rel + 1 : key;
        } else {
                rel = key + n;
                while (*rel == '/')
                        rel++;
        }
        if (under != NULL && under[0]) {
                sb_str(&b, under);
                sb_add(&b, "/", 1);
        }
        sb_str(&b, rel);
        return sb_take(&b);
}

/* ---- requests ---- */

static struct http_request *s3_request(const struct s3_settings *st, const char *url)
{
        struct http_request *req = http_request_new("GET", url);
        char provider[128];

        if (req == NULL)
                return NULL;
        snprintf(provider, sizeof(provider), "aws:amz:%s:s3", st->region);
        /* S3 wants the payload's hash among the signed headers; a GET's is the empty one. */
        if (http_request_add_header(req, "x-amz-content-sha256", S3_EMPTY_SHA256) != 0 ||
            (st->session_token[0] &&
             http_request_add_header(req, "x-amz-security-token", st->session_token) != 0) ||
            http_request_set_aws_sigv4(req, provider, st->access_key, st->secret_key) != 0) {
                http_request_free(req);
                return NULL;
        }
        http_request_no_redirects(req);
        return req;
}

/*
 * A failed S3 answer into outcome, code and message: "<what>: HTTP 403
 * AccessDenied: Access Denied". Server text is sanitised.
 */
static enum s3_outcome s3_failure(const struct http_response *resp, const struct s3_settings *st,
                                  const char *what, char *code, size_t codelen, char *msg,
                                  size_t msglen)
{
        enum http_outcome o = http_classify(resp);
        struct s3xml_page page;
        char shown[300], scode[80], why[128];

        if (resp->err != 0) {
                proto_sanitize(shown, sizeof(shown), resp->error, strlen(resp->error));
                snprintf(code, codelen, "s3_%s", ferry_err_name(resp->err));
                if (resp->unreachable)
                        snprintf(msg, msglen, "%s: cannot reach %s: %s", what,
                                 st->endpoint[0] ? st->endpoint : "AWS S3", shown);
                else
                        snprintf(msg, msglen, "%s: %s", what, shown);
                return o == HTTP_TRANSIENT ? S3_TRANSIENT : S3_PERMANENT;
        }
        shown[0] = scode[0] = '\0';
        if (resp->body_len > 0 &&
            s3xml_parse(resp->body, resp->body_len, &page, why, sizeof(why)) == 0 &&
            page.kind == S3XML_ERROR) {
                proto_sanitize(scode, sizeof(scode), page.code, strlen(page.code));
                proto_sanitize(shown, sizeof(shown), page.message, strlen(page.message));
        }
        s3xml_page_free(&page);
        snprintf(code, codelen, "%s", scode[0] ? scode : "http_error");
        if (resp->status >= 300 && resp->status < 400)
                snprintf(msg, msglen,
                         "%s: HTTP %ld %s: the bucket is elsewhere (another region? set "
                         "AWS_REGION)",
                         what, resp->status, scode);
        else if (scode[0])
                snprintf(msg, msglen, "%s: HTTP %ld %s: %s", what, resp->status, scode, shown);
        else
                snprintf(msg, msglen,
                         "%s: HTTP %ld (not an S3 error document; check "
                         "AWS_ENDPOINT_URL)",
                         what, resp->status);
        if (resp->status == 403 || strcmp(scode, "InvalidAccessKeyId") == 0 ||
            strcmp(scode, "SignatureDoesNotMatch") == 0) {
                size_t len = strlen(msg);

                snprintf(msg + len, msglen - len, " (credentials from %s)", st->source);
        }
        proto_utf8_trim(msg);
        return o == HTTP_TRANSIENT ? S3_TRANSIENT : S3_PERMANENT;
}

/* ---- listings ---- */

enum list_stage { LIST_VERSIONING, LIST_PAGES };

struct s3_list {
        struct s3 *s3;
        s3_list_cb *cb;
        void *data;
        struct s3_settings st;
        char bucket[256];
        char *uri;
        const char *prefix; /* into uri */
        int64_t max;
        enum list_stage stage;
        bool versioned;
        char *token, *key_marker, *version_marker; /* where the next page starts */
        int64_t pages, max_pages;
        struct http_request *req; /* in flight */
        bool cancel;
        struct s3_list_result res;
        struct s3xml_object *objects;
        size_t n, cap;
        struct s3_list *next; /* s3->lists, then s3->finished */
};

static void s3_list_next(struct s3_list *l);

static void s3_maybe_closed(struct s3 *s3);

static void s3_unlink_list(struct s3_list *l)
{
        struct s3_list **pp;

        for (pp = &l->s3->lists; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == l) {
                        *pp = l->next;
                        return;
                }
        }
}

static void s3_list_free(struct s3_list *l)
{
        size_t i;

        for (i = 0; i < l->n; i++) {
                free(l->objects[i].key);
                free(l->objects[i].etag);
                free(l->objects[i].version_id);
        }
        free(l->objects);
        free(l->token);
        free(l->key_marker);
        free(l->version_marker);
        free(l->uri);
        s3_settings_wipe(&l->st);
        free(l);
}

static void s3_defer_cb(uv_timer_t *t)
{
        struct s3 *s3 = t->data;
        struct s3_list *l;

        while ((l = s3->finished) != NULL) {
                s3->finished = l->next;
                l->res.objects = l->objects;
                l->res.n = l->n;
                l->res.versioned = l->versioned;
                l->res.bucket = l->bucket;
                l->res.prefix = l->prefix ? l->prefix : "";
                l->cb(l->data, &l->res);
                s3_list_free(l);
        }
        s3_maybe_closed(s3);
}

/* The listing ended (outcome in l->res): its callback runs from the loop. */
static void s3_list_finish(struct s3_list *l)
{
        struct s3 *s3 = l->s3;

        s3_unlink_list(l);
        if (l->cancel && l->res.outcome == S3_OK)
                l->res.outcome = S3_TRANSIENT;
        l->res.cancelled = l->cancel;
        if (l->res.outcome != S3_OK) {
                log_debug("s3: %s", l->res.message);
        } else {
                log_info("s3: listed %s: %zu objects in %lld pages%s", l->uri, l->n,
                         (long long)l->pages, l->versioned ? " (versioned)" : "");
        }
        l->next = s3->finished;
        s3->finished = l;
        uv_timer_start(&s3->defer, s3_defer_cb, 0, 0);
}

static void s3_list_fail(struct s3_list *l, enum s3_outcome o, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

static void s3_list_fail(struct s3_list *l, enum s3_outcome o, const char *code, const char *fmt,
                         ...)
{
        va_list ap;

        l->res.outcome = o;
        snprintf(l->res.code, sizeof(l->res.code), "%s", code);
        va_start(ap, fmt);
        vsnprintf(l->res.message, sizeof(l->res.message), fmt, ap);
        va_end(ap);
        proto_utf8_trim(l->res.message);
        s3_list_finish(l);
}

/* Keep the page's objects that are below the prefix; false once more than max. */
static bool s3_list_take(struct s3_list *l, struct s3xml_page *page)
{
        size_t i;

        for (i = 0; i < page->n; i++) {
                struct s3xml_object *o = &page->objects[i];

                if (l->versioned && !o->is_latest)
                        continue; /* older versions of a key: the latest one is listed */
                if (!key_below(l->prefix, o->key))
                        continue;
                if ((int64_t)l->n >= l->max) {
                        l->res.too_many = true;
                        return false;
                }
                if (l->n == l->cap) {
                        size_t cap = l->cap ? l->cap * 2 : 256;
                        struct s3xml_object *grown = realloc(l->objects, cap * sizeof(*grown));

                        if (grown == NULL)
                                return false;
                        l->objects = grown;
                        l->cap = cap;
                }
                l->objects[l->n++] = *o;
                memset(o, 0, sizeof(*o)); /* taken */
        }
        return true;
}

static void s3_list_page_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct s3_list *l = data;
        struct s3xml_page page;
        char what[300], why[256], code[48], msg[512];
        enum s3_outcome o;
        bool more;

        l->req = NULL;
        snprintf(what, sizeof(what), "listing %.250s", l->uri);
        proto_utf8_trim(what);
        if (resp->cancelled || l->cancel) {
                l->cancel = true;
                s3_list_fail(l, S3_TRANSIENT, "cancelled", "%s: cancelled", what);
                return;
        }
        if (l->stage == LIST_VERSIONING && http_classify(resp) != HTTP_OK) {
                o = s3_failure(resp, &l->st, what, code, sizeof(code), msg, sizeof(msg));
                /* Decisive only when the bucket or the credentials do not exist. */
                if (o == S3_TRANSIENT || strcmp(code, "NoSuchBucket") == 0 ||
                    strcmp(code, "InvalidAccessKeyId") == 0 ||
                    strcmp(code, "SignatureDoesNotMatch") == 0 || strstr(code, "Token") != NULL) {
                        l->res.retry_after_ms =
                            resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
                        s3_list_fail(l, o, code, "%s", msg);
                        return;
                }
                l->stage = LIST_PAGES;
                s3_list_next(l);
                return;
        }
        if (http_classify(resp) != HTTP_OK) {
                o = s3_failure(resp, &l->st, what, code, sizeof(code), msg, sizeof(msg));
                l->res.retry_after_ms = resp->retry_after_s >= 0 ? resp->retry_after_s * 1000 : -1;
                s3_list_fail(l, o, code, "%s", msg);
                return;
        }
        if (s3xml_parse(resp->body, resp->body_len, &page, why, sizeof(why)) != 0 ||
            l->stage == LIST_VERSIONING) {
                if (l->stage == LIST_VERSIONING) {
                        /* A hint only: an answer that is not VersioningConfiguration (some
                         * S3-compatible stores ignore ?versioning) means "not versioned". */
                        l->versioned = page.kind == S3XML_VERSIONING &&
                                       (strcmp(page.status, "Enabled") == 0 ||
                                        strcmp(page.status, "Suspended") == 0);
                        s3xml_page_free(&page);
                        l->stage = LIST_PAGES;
                        s3_list_next(l);
                        return;
                }
                s3xml_page_free(&page);
                s3_list_fail(l, S3_PERMANENT, "not_s3",
                             "%s: the endpoint's answer is not S3's XML (%s); check "
                             "AWS_ENDPOINT_URL",
                             what, why);
                return;
        }
        if (page.kind != (l->versioned ? S3XML_VERSIONS : S3XML_LIST_V2)) {
                s3xml_page_free(&page);
                s3_list_fail(l, S3_PERMANENT, "not_s3",
                             "%s: the answer is not a listing; check AWS_ENDPOINT_URL", what);
                return;
        }
        l->pages++;
        more = s3_list_take(l, &page);
        if (!more && !l->res.too_many) {
                s3xml_page_free(&page);
                s3_list_fail(l, S3_TRANSIENT, "out_of_memory", "%s: out of memory", what);
                return;
        }
        if (l->res.too_many) {
                s3xml_page_free(&page);
                s3_list_fail(l, S3_PERMANENT, "too_many",
                             "%s: more than max_synced_objects (%lld) objects", what,
                             (long long)l->max);
                return;
        }
        if (!page.truncated) {
                s3xml_page_free(&page);
                l->res.outcome = S3_OK;
                s3_list_finish(l);
                return;
        }
        /* The next page starts where this one says; a server that does not move on is cut. */
        if (l->versioned) {
                if (page.next_key_marker == NULL || page.next_key_marker[0] == '\0' ||
                    (l->key_marker && strcmp(l->key_marker, page.next_key_marker) == 0 &&
                     l->version_marker && page.next_version_id_marker &&
                     strcmp(l->version_marker, page.next_version_id_marker) == 0)) {
                        s3xml_page_free(&page);
                        s3_list_fail(l, S3_PERMANENT, "not_s3",
                                     "%s: a truncated page without a new NextKeyMarker", what);
                        return;
                }
                free(l->key_marker);
                free(l->version_marker);
                l->key_marker = page.next_key_marker;
                l->version_marker = page.next_version_id_marker;
                page.next_key_marker = page.next_version_id_marker = NULL;
        } else {
                if (page.next_token == NULL || page.next_token[0] == '\0' ||
                    (l->token && strcmp(l->token, page.next_token) == 0)) {
                        s3xml_page_free(&page);
                        s3_list_fail(l, S3_PERMANENT, "not_s3",
                                     "%s: a truncated page without a new continuation token", what);
                        return;
                }
                free(l->token);
                l->token = page.next_token;
                page.next_token = NULL;
        }
        s3xml_page_free(&page);
        if (l->pages >= l->max_pages) {
                s3_list_fail(l, S3_PERMANENT, "not_s3",
                             "%s: the listing did not end after %lld pages", what,
                             (long long)l->pages);
                return;
        }
        s3_list_next(l);
}

static void sb_param(struct sbuf *b, const char *name, const char *value)
{
        if (b->len > 0)
                sb_add(b, "&", 1);
        sb_str(b, name);
        sb_add(b, "=", 1);
        sb_encode(b, value, false);
}

/* Send the listing's next request. */
static void s3_list_next(struct s3_list *l)
{
        struct sbuf q = {0};
        char maxkeys[16], *query, *url;

        snprintf(maxkeys, sizeof(maxkeys), "%d", l->s3->page_size);
        /* Parameters in canonical order (sorted by name), values encoded: signed as sent. */
        if (l->stage == LIST_VERSIONING) {
                sb_str(&q, "versioning=");
        } else if (l->versioned) {
                if (l->key_marker)
                        sb_param(&q, "key-marker", l->key_marker);
                sb_param(&q, "max-keys", maxkeys);
                sb_param(&q, "prefix", l->prefix);
                if (l->key_marker && l->version_marker)
                        sb_param(&q, "version-id-marker", l->version_marker);
                sb_param(&q, "versions", "");
        } else {
                if (l->token)
                        sb_param(&q, "continuation-token", l->token);
                sb_param(&q, "list-type", "2");
                sb_param(&q, "max-keys", maxkeys);
                sb_param(&q, "prefix", l->prefix);
        }
        query = sb_take(&q);
        url = query ? s3_url(&l->st, l->bucket, NULL, query) : NULL;
        free(query);
        l->req = url ? s3_request(&l->st, url) : NULL;
        free(url);
        if (l->req == NULL) {
                s3_list_fail(l, S3_TRANSIENT, "out_of_memory", "listing %.250s: out of memory",
                             l->uri);
                return;
        }
        if (http_engine_submit(l->s3->http, l->req, s3_list_page_cb, l) != 0) {
                http_request_free(l->req);
                l->req = NULL;
                s3_list_fail(l, S3_TRANSIENT, "internal", "listing %.250s: cannot submit", l->uri);
        }
}

static const char *env_getenv(const char *name)
{
        return getenv(name);
}

static const char *home_dir(void)
{
        const char *h = getenv("HOME");

        return h && h[0] ? h : "/";
}

struct s3_list *s3_list_start(struct s3 *s3, const char *uri, int64_t max, s3_list_cb *cb,
                              void *data)
{
        struct s3_list *l = calloc(1, sizeof(*l));

        if (l == NULL || (l->uri = strdup(uri)) == NULL) {
                free(l);
                return NULL;
        }
        l->s3 = s3;
        l->cb = cb;
        l->data = data;
        l->max = max;
        l->res.retry_after_ms = -1;
        /* A page holds at least one entry: a listing that does not end is cut. */
        l->max_pages = 1000 + max;
        l->next = s3->lists;
        s3->lists = l;
        if (s3_uri_parse(l->uri, l->bucket, sizeof(l->bucket), &l->prefix) != 0) {
                s3_list_fail(l, S3_PERMANENT, "invalid_argument",
                             "%.250s is not an s3://bucket/prefix URI ferry can list", uri);
                return l;
        }
        s3_settings_load(&l->st, env_getenv, home_dir());
        if (l->st.problem[0]) {
                s3_list_fail(l, S3_PERMANENT, "no_credentials", "listing %.200s: %s", uri,
                             l->st.problem);
                return l;
        }
        l->stage = LIST_VERSIONING;
        s3_list_next(l);
        return l;
}

void s3_list_cancel(struct s3_list *l)
{
        if (l == NULL || l->cancel)
                return;
        l->cancel = true;
        if (l->req != NULL)
                http_engine_cancel(l->s3->http, l->req);
}

/* ---- fetches ---- */

struct s3_fetch_waiter {
        s3_fetch_cb *cb;
        void *data;
        struct s3_fetch_waiter *next;
};

struct s3_fetch {
        struct s3 *s3;
        char key[65];    /* cache key */
        char tmp[4400];  /* the download in progress, inside the cache */
        char path[4400]; /* the cached blob once inserted */
        char link[1100]; /* for messages (sanitised, cut) */
        char etag[256];  /* recorded, without quotes */
        int64_t size;    /* recorded, or -1 */
        int code;
        char msg[512];
        uv_work_t work;
        struct s3_fetch_waiter *waiters;
        struct s3_fetch *next;
};

static void s3_fetch_end(struct s3_fetch *f)
{
        struct s3_fetch **pp;
        struct s3_fetch_waiter *w, *next;
        struct s3 *s3 = f->s3;

        for (pp = &s3->fetches; *pp != NULL; pp = &(*pp)->next) {
                if (*pp == f) {
                        *pp = f->next;
                        break;
                }
        }
        for (w = f->waiters; w != NULL; w = next) {
                next = w->next;
                w->cb(w->data, f->code, f->code ? f->msg : NULL, f->code ? NULL : f->path);
                free(w);
        }
        free(f);
        s3_maybe_closed(s3);
}

/* MD5 of a file as 32 hex digits. 0 or -1. */
static int md5_file(const char *path, char out[33])
{
        unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0, i;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc = -1;
        ssize_t r;

        if (ctx == NULL || fd < 0 || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1)
                goto out;
        while ((r = read(fd, buf, sizeof(buf))) > 0)
                if (EVP_DigestUpdate(ctx, buf, (size_t)r) != 1)
                        goto out;
        if (r < 0 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
                goto out;
        for (i = 0; i < mdlen && i < 16; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
        rc = 0;
out:
        if (fd >= 0)
                close(fd);
        EVP_MD_CTX_free(ctx);
        return rc;
}

static bool single_part_etag(const char *etag)
{
        size_t i;

        for (i = 0; etag[i]; i++)
                if (!isxdigit((unsigned char)etag[i]))
                        return false;
        return i == 32;
}

static void s3_fetch_insert_work_cb(uv_work_t *work)
{
        struct s3_fetch *f = work->data;
        struct stat st;
        char md5[33];

        if (stat(f->tmp, &st) != 0) {
                f->code = FERRY_EIO;
                snprintf(f->msg, sizeof(f->msg), "the download of %s vanished", f->link);
                return;
        }
        if (f->size >= 0 && st.st_size != f->size) {
                f->code = FERRY_EBACKEND;
                snprintf(f->msg, sizeof(f->msg),
                         "%s changed since it was logged: %lld bytes now, %lld recorded", f->link,
                         (long long)st.st_size, (long long)f->size);
                unlink(f->tmp);
                return;
        }
        if (single_part_etag(f->etag)) {
                if (md5_file(f->tmp, md5) != 0) {
                        f->code = FERRY_EIO;
                        snprintf(f->msg, sizeof(f->msg), "cannot read the download of %s", f->link);
                        unlink(f->tmp);
                        return;
                }
                if (strcasecmp(md5, f->etag) != 0) {
                        f->code = FERRY_EBACKEND;
                        snprintf(f->msg, sizeof(f->msg),
                                 "%s changed since it was logged: its bytes have MD5 %s, the "
                                 "recorded ETag is %s",
                                 f->link, md5, f->etag);
                        unlink(f->tmp);
                        return;
                }
        }
        f->code = cache_insert(f->s3->cache, f->key, f->tmp, f->path, sizeof(f->path), f->msg,
                               sizeof(f->msg));
}

static void s3_fetch_insert_after_cb(uv_work_t *work, int status)
{
        struct s3_fetch *f = work->data;

        if (status != 0 && f->code == 0) {
                f->code = FERRY_EINTERNAL;
                snprintf(f->msg, sizeof(f->msg), "the cache insert was cancelled");
        }
        s3_fetch_end(f);
}

/* An ETag without its quotes (and a weak "W/" mark) into out. */
static void etag_bare(const char *etag, char *out, size_t len)
{
        size_t n;

        if (strncmp(etag, "W/", 2) == 0)
                etag += 2;
        if (*etag == '"')
                etag++;
        snprintf(out, len, "%s", etag);
        n = strlen(out);
        if (n > 0 && out[n - 1] == '"')
                out[n - 1] = '\0';
}

static void s3_fetch_done_cb(struct http_request *req, const struct http_response *resp, void *data)
{
        struct s3_fetch *f = data;
        struct s3_settings st;
        char code[48], got[256];

        if (http_classify(resp) != HTTP_OK) {
                memset(&st, 0, sizeof(st));
                snprintf(st.source, sizeof(st.source), "ferryd's AWS settings");
                if (resp->status == 412) {
                        f->code = FERRY_EBACKEND;
                        snprintf(f->msg, sizeof(f->msg),
                                 "%s changed since it was logged: its ETag is no longer %s",
                                 f->link, f->etag);
                } else {
                        char what[1200];

                        snprintf(what, sizeof(what), "downloading %s", f->link);
                        s3_failure(resp, &st, what, code, sizeof(code), f->msg, sizeof(f->msg));
                        f->code = resp->cancelled       ? FERRY_ECLOSED
                                  : resp->unreachable   ? FERRY_ECONNECT
                                  : resp->status == 404 ? FERRY_ENOTFOUND
                                                        : FERRY_EBACKEND;
                }
                unlink(f->tmp);
                s3_fetch_end(f);
                return;
        }
        etag_bare(resp->etag, got, sizeof(got));
        if (f->etag[0] && got[0] && strcmp(got, f->etag) != 0) {
                f->code = FERRY_EBACKEND;
                proto_sanitize(code, sizeof(code), got, strlen(got));
                snprintf(f->msg, sizeof(f->msg),
                         "%s changed since it was logged: its ETag is %s now, %s was recorded",
                         f->link, code, f->etag);
                unlink(f->tmp);
                s3_fetch_end(f);
                return;
        }
        /* Check, hash and adopt on the thread pool: large objects must not stall the loop. */
        f->work.data = f;
        if (uv_queue_work(f->s3->loop, &f->work, s3_fetch_insert_work_cb,
                          s3_fetch_insert_after_cb) != 0) {
                f->code = FERRY_EINTERNAL;
                snprintf(f->msg, sizeof(f->msg), "cannot queue the cache insert");
                unlink(f->tmp);
                s3_fetch_end(f);
        }
}

/* Fail a fetch that never started: the callback still runs from the loop. */
struct s3_fetch_late {
        uv_timer_t timer;
        s3_fetch_cb *cb;
        void *data;
        int code;
        char msg[512];
};

static void s3_fetch_late_closed_cb(uv_handle_t *h)
{
        free(h->data);
}

static void s3_fetch_late_cb(uv_timer_t *t)
{
        struct s3_fetch_late *late = t->data;

        late->cb(late->data, late->code, late->msg, NULL);
        uv_close((uv_handle_t *)&late->timer, s3_fetch_late_closed_cb);
}

static void s3_fetch_fail_later(struct s3 *s3, s3_fetch_cb *cb, void *data, int code,
                                const char *msg)
{
        struct s3_fetch_late *late = calloc(1, sizeof(*late));

        if (late == NULL) {
                cb(data, FERRY_ENOMEM, "out of memory", NULL); /* nothing better is left */
                return;
        }
        late->cb = cb;
        late->data = data;
        late->code = code;
        snprintf(late->msg, sizeof(late->msg), "%s", msg);
        uv_timer_init(s3->loop, &late->timer);
        late->timer.data = late;
        uv_timer_start(&late->timer, s3_fetch_late_cb, 0, 0);
}

void s3_fetch(struct s3 *s3, const char *link, const char *version_id, const char *etag,
              int64_t size, s3_fetch_cb *cb, void *data)
{
        struct s3_settings st;
        struct s3_fetch_waiter *w;
        struct s3_fetch *f;
        struct http_request *req = NULL;
        char bucket[256], key[65], path[4400], bare[256], msg[700], shown[1100], *url, *id;
        const char *objkey;
        struct sbuf b = {0};

        proto_sanitize(shown, sizeof(shown), link, strlen(link));
        if (s3->closing) {
                s3_fetch_fail_later(s3, cb, data, FERRY_ECLOSED, "ferryd is stopping");
                return;
        }
        if (s3_uri_parse(link, bucket, sizeof(bucket), &objkey) != 0 || objkey[0] == '\0') {
                snprintf(msg, sizeof(msg), "%s is not an s3://bucket/key URI", shown);
                s3_fetch_fail_later(s3, cb, data, FERRY_EINVAL, msg);
                return;
        }
        s3_settings_load(&st, env_getenv, home_dir());
        if (st.problem[0]) {
                snprintf(msg, sizeof(msg), "downloading %s: %s", shown, st.problem);
                s3_fetch_fail_later(s3, cb, data, FERRY_EPERM, msg);
                s3_settings_wipe(&st);
                return;
        }
        etag_bare(etag ? etag : "", bare, sizeof(bare));
        /* The cache names an object by where it lives and which bytes it was. */
        sb_str(&b, "s3\n");
        sb_str(&b, st.endpoint[0] ? st.endpoint : "aws");
        sb_add(&b, "\n", 1);
        sb_str(&b, link + 5);
        sb_add(&b, "\n", 1);
        sb_str(&b, version_id ? version_id : "");
        sb_add(&b, "\n", 1);
        sb_str(&b, bare);
        if ((id = sb_take(&b)) == NULL || (w = calloc(1, sizeof(*w))) == NULL) {
                free(id);
                s3_settings_wipe(&st);
                s3_fetch_fail_later(s3, cb, data, FERRY_ENOMEM, "out of memory");
                return;
        }
        util_sha256_hex(id, strlen(id), key);
        free(id);
        w->cb = cb;
        w->data = data;
        if (cache_lookup(s3->cache, key, path, sizeof(path)) == 0) {
                /* Cached: the bytes that were recorded, checked when they came in. */
                s3_settings_wipe(&st);
                free(w);
                cb(data, 0, NULL, path);
                return;
        }
        for (f = s3->fetches; f != NULL; f = f->next) {
                if (strcmp(f->key, key) == 0) { /* join the transfer in flight */
                        s3_settings_wipe(&st);
                        w->next = f->waiters;
                        f->waiters = w;
                        return;
                }
        }
        f = calloc(1, sizeof(*f));
        if (f == NULL || cache_temp_path(s3->cache, f->tmp, sizeof(f->tmp)) != 0) {
                free(f);
                free(w);
                s3_settings_wipe(&st);
                s3_fetch_fail_later(s3, cb, data, FERRY_EIO, "cannot prepare the cache");
                return;
        }
        f->s3 = s3;
        f->size = size;
        snprintf(f->key, sizeof(f->key), "%s", key);
        snprintf(f->link, sizeof(f->link), "%s", shown);
        snprintf(f->etag, sizeof(f->etag), "%s", bare);
        f->waiters = w;
        if (version_id != NULL && version_id[0]) {
                struct sbuf q = {0};
                char *query;

                sb_param(&q, "versionId", version_id);
                query = sb_take(&q);
                url = query ? s3_url(&st, bucket, objkey, query) : NULL;
                free(query);
        } else {
                url = s3_url(&st, bucket, objkey, NULL);
        }
        req = url ? s3_request(&st, url) : NULL;
        free(url);
        if (req != NULL && bare[0]) {
                char quoted[300];

                /* S3 answers 412 when the object is no longer these bytes. */
                snprintf(quoted, sizeof(quoted), "\"%s\"", bare);
                if (http_request_add_header(req, "If-Match", quoted) != 0) {
                        http_request_free(req);
                        req = NULL;
                }
        }
        if (req != NULL && size >= 0)
                http_request_set_expected_size(req, size);
        s3_settings_wipe(&st);
        if (req == NULL || http_request_set_output_file(req, f->tmp) != 0 ||
            http_engine_submit(s3->http, req, s3_fetch_done_cb, f) != 0) {
                http_request_free(req);
                free(f);
                free(w);
                s3_fetch_fail_later(s3, cb, data, FERRY_ENOMEM, "cannot start the download");
                return;
        }
        f->next = s3->fetches;
        s3->fetches = f;
}

/* ---- lifetime ---- */

int s3_new(struct s3 **out, uv_loop_t *loop, const struct config *cfg, struct cache *cache,
           char *err, size_t errlen)
{
        struct s3 *s3 = calloc(1, sizeof(*s3));
        struct http_config hc;

        *out = NULL;
        if (s3 == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
        }
        http_config_defaults(&hc);
        hc.max_transfers = cfg->max_transfers;
        hc.connect_timeout_s = (long)cfg->connect_timeout_s;
        hc.low_speed_time_s = (long)cfg->low_speed_time_s;
        hc.low_speed_limit = (long)cfg->low_speed_limit;
        hc.deadline_base_s = (long)cfg->deadline_base_s;
        hc.min_rate_bps = (long)cfg->min_rate_bps;
        hc.verify_tls = cfg->verify_tls;
        hc.ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL;
        hc.max_body = S3_MAX_BODY;
        if (http_engine_new(&s3->http, loop, &hc) != 0) {
                free(s3);
                snprintf(err, errlen, "cannot start the HTTP engine for S3");
                return -1;
        }
        s3->loop = loop;
        s3->cache = cache;
        s3->page_size = cfg->s3_page_size > 0 ? cfg->s3_page_size : 1000;
        uv_timer_init(loop, &s3->defer);
        s3->defer.data = s3;
        *out = s3;
        return 0;
}

static void s3_defer_closed_cb(uv_handle_t *h)
{
        struct s3 *s3 = h->data;
        void (*closed)(void *) = s3->closed;
        void *data = s3->closed_data;

        free(s3);
        if (closed)
                closed(data);
}

static void s3_http_closed_cb(void *data)
{
        struct s3 *s3 = data;

        s3->http = NULL;
        /* Cancelled requests' callbacks have run: the last listings wait on the timer. */
        s3_defer_cb(&s3->defer);
}

static void s3_maybe_closed(struct s3 *s3)
{
        if (!s3->closing || s3->http != NULL || s3->lists != NULL || s3->fetches != NULL ||
            s3->finished != NULL || uv_is_closing((uv_handle_t *)&s3->defer))
                return;
        uv_close((uv_handle_t *)&s3->defer, s3_defer_closed_cb);
}

void s3_close(struct s3 *s3, void (*closed)(void *data), void *data)
{
        struct s3_list *l;

        if (s3 == NULL) {
                if (closed)
                        closed(data);
                return;
        }
        s3->closing = true;
        s3->closed = closed;
        s3->closed_data = data;
        for (l = s3->lists; l != NULL; l = l->next)
                l->cancel = true;
        /* Cancels every request; their callbacks run before s3_http_closed_cb. */
        http_engine_close(s3->http, s3_http_closed_cb, s3);
}
