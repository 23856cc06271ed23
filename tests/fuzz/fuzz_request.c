/*
 * fuzz_request.c — libFuzzer target for the request decoder and what the
 * daemon does with a request's fields.
 *
 * Input: the payload of one frame. proto_request_parse reads it; a request
 * that parses goes through the checks its op gets in ferryd (the allowed
 * keys, the typed getters, the value rules), and every field of it, nested
 * ones too, through every getter and every value rule, each compared with an
 * independent reading of the rule in PROTOCOL.md. The same bytes go through
 * proto_reply_parse. Last, replies built with proto_reply_error from strings
 * of the input must encode to frames of UTF-8 JSON that read back the same.
 */
#include "proto.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ferry_base.h"
#include "fuzz_common.h"

#define MAX_DEPTH 4    /* how deep fields are walked */
#define MAX_FIELDS 256 /* fields looked at per input */
#define MAX_STRINGS 32 /* string values checked against the value rules per input */
#define MAX_SEMVERS 8  /* parsed versions compared with each other */

/* The fields of each op, as ferryd allows them (besides id and op). */
struct op_rule {
        const char *op;
        const char *const fields[12];
};

static const struct op_rule op_rules[] = {
    {"hello", {"protocol", "client", NULL}},
    {"experiment.create", {"workspace", "project", "name", "key", NULL}},
    {"stage", {NULL}},
    {"artifact.log",
     {"name", "type", "version", "aliases", "tags", "metadata", "experiment", "workspace",
      "project", "assets", NULL}},
    {"status", {NULL}},
    {"ls", {"state", "limit", NULL}},
    {"wait", {"jobs", "timeout_ms", NULL}},
    {"retry", {"job", "all", NULL}},
    {"pause", {"paused", NULL}},
    {"cache", {"clear", NULL}},
    {"get", {"name", "workspace", "version_or_alias", NULL}},
    {"download", {"name", "workspace", "version_or_alias", "dir", "overwrite", NULL}},
};

static const char *const asset_keys[] = {"logical_path", "file",     "staged", "remote",
                                         "overwrite",    "metadata", NULL};

/* Per input: what was seen, for the checks that compare values with each other. */
struct seen {
        size_t fields;
        const char *strings[MAX_STRINGS];
        size_t nstrings;
        struct proto_semver semvers[MAX_SEMVERS];
        size_t nsemvers;
};

static void check_reply(uint64_t id, int code, const char *msg);

/* An error buffer of exactly `len` bytes, so that writing past it is caught. */
static char *err_new(size_t len)
{
        char *err = malloc(len);

        FUZZ_CHECK(err != NULL);
        memset(err, 'E', len);
        return err;
}

/* After a refusal the message is a NUL-terminated string inside the buffer. */
static void err_check(const char *err, size_t len)
{
        FUZZ_CHECK(memchr(err, '\0', len) != NULL);
}

/* ---- independent readings of the value rules ---- */

/* A C0 control, DEL, or C1 control (U+0080..U+009F: c2 80..c2 9f) at s[i] of s[0..n). */
static bool control_at(const char *s, size_t n, size_t i)
{
        unsigned char c = (unsigned char)s[i];

        return c < 0x20 || c == 0x7f ||
               (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                (unsigned char)s[i + 1] < 0xa0);
}

static bool want_name(const char *s)
{
        size_t n = strlen(s), i;

        if (n == 0 || n > PROTO_NAME_MAX)
                return false;
        for (i = 0; i < n; i++)
                if (control_at(s, n, i) || s[i] == '/' || s[i] == ':')
                        return false;
        return true;
}

static bool want_logical_path(const char *s)
{
        size_t n = strlen(s), i, start = 0;

        if (n == 0 || n > PROTO_LOGICAL_PATH_MAX || s[0] == '/')
                return false;
        for (i = 0; i <= n; i++) {
                char c = s[i];

                if (i < n && (control_at(s, n, i) || c == '\\'))
                        return false;
                if (i == n || c == '/') {
                        size_t len = i - start;

                        if (len == 0 || (len == 1 && s[start] == '.') ||
                            (len == 2 && s[start] == '.' && s[start + 1] == '.'))
                                return false;
                        start = i + 1;
                }
        }
        return true;
}

static bool want_experiment_key(const char *s)
{
        size_t n = strlen(s), i;

        if (n < 32 || n > 50)
                return false;
        for (i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= 'A' && s[i] <= 'Z')))
                        return false;
        return true;
}

static bool is_ident_char(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '-';
}

/*
 * Semver 2.0.0's grammar. *big is set when a core number has more than 18
 * digits (ferry may refuse those: they need not fit in 64 bits).
 */
static bool want_semver(const char *s, bool *big, size_t *pre_len)
{
        const char *p = s;
        int part;

        *big = false;
        *pre_len = 0;
        for (part = 0; part < 3; part++) {
                const char *start = p;

                while (*p >= '0' && *p <= '9')
                        p++;
                if (p == start || (*start == '0' && p - start > 1))
                        return false;
                if (p - start > 18)
                        *big = true;
                if (part < 2 && *p++ != '.')
                        return false;
        }
        if (*p == '-') {
                const char *pre = ++p;

                for (;;) {
                        const char *start = p;
                        bool numeric = true;

                        while (is_ident_char(*p)) {
                                if (!(*p >= '0' && *p <= '9'))
                                        numeric = false;
                                p++;
                        }
                        if (p == start || (numeric && *start == '0' && p - start > 1))
                                return false;
                        if (*p != '.')
                                break;
                        p++;
                }
                *pre_len = (size_t)(p - pre);
        }
        if (*p == '+') {
                p++;
                for (;;) {
                        const char *start = p;

                        while (is_ident_char(*p))
                                p++;
                        if (p == start)
                                return false;
                        if (*p != '.')
                                break;
                        p++;
                }
        }
        return *p == '\0';
}

/* ---- UTF-8 helpers ---- */

/*
 * proto_utf8_valid agrees with fuzz_utf8_valid; proto_utf8_trim of a UTF-8
 * string cut anywhere gives UTF-8 again, losing at most the cut character;
 * proto_sanitize writes UTF-8 without control characters that fits dstlen,
 * and copies clean text unchanged when there is room.
 */
static void check_utf8_helpers(const char *s, size_t n, size_t cut, size_t dstlen)
{
        bool valid = fuzz_utf8_valid(s, n);
        char *t, *dst;
        size_t i, len;

        FUZZ_CHECK(proto_utf8_valid(s, n) == valid);

        cut = n ? cut % (n + 1) : 0;
        t = fuzz_strndup(s, cut);
        len = strlen(t);
        proto_utf8_trim(t);
        FUZZ_CHECK(strlen(t) <= len && memcmp(t, s, strlen(t)) == 0);
        if (valid) {
                FUZZ_CHECK(fuzz_utf8_valid(t, strlen(t)));
                FUZZ_CHECK(strlen(t) + 3 >= len);
        }
        free(t);

        dst = malloc(dstlen);
        FUZZ_CHECK(dst != NULL);
        len = proto_sanitize(dst, dstlen, s, n);
        if (dstlen > 0) {
                FUZZ_CHECK(len < dstlen);
                FUZZ_CHECK_INT(strlen(dst), len);
                FUZZ_CHECK(fuzz_utf8_valid(dst, len));
                for (i = 0; i < len; i++)
                        FUZZ_CHECK(!control_at(dst, len, i));
                if (valid && n < dstlen && memchr(s, '\0', n) == NULL) {
                        bool clean = true;

                        for (i = 0; i < n; i++)
                                if (control_at(s, n, i))
                                        clean = false;
                        if (clean)
                                FUZZ_CHECK(len == n && memcmp(dst, s, n) == 0);
                }
        } else {
                FUZZ_CHECK_INT(len, 0);
        }
        free(dst);
}

/* ---- the value rules on one string ---- */

static void check_semver(const char *s, struct seen *seen)
{
        struct proto_semver v, again;
        char text[256];
        bool big;
        size_t pre_len, i;
        bool want = want_semver(s, &big, &pre_len);
        int rc = proto_semver_parse(s, &v);

        FUZZ_CHECK(rc == 0 || rc == FERRY_EINVAL);
        if (rc == 0)
                FUZZ_CHECK(want); /* nothing outside the grammar is accepted */
        if (want && !big && pre_len < sizeof(v.pre))
                FUZZ_CHECK_INT(rc, 0); /* and nothing inside it refused, but for the limits */
        if (rc != 0)
                return;
        FUZZ_CHECK(memchr(v.pre, '\0', sizeof(v.pre)) != NULL);
        FUZZ_CHECK_INT(strlen(v.pre), pre_len);
        FUZZ_CHECK_INT(proto_semver_cmp(&v, &v), 0);
        /* printed without build metadata it parses to the same version */
        snprintf(text, sizeof(text), "%" PRIu64 ".%" PRIu64 ".%" PRIu64 "%s%s", v.major, v.minor,
                 v.patch, v.pre[0] ? "-" : "", v.pre);
        FUZZ_CHECK_INT(proto_semver_parse(text, &again), 0);
        FUZZ_CHECK(again.major == v.major && again.minor == v.minor && again.patch == v.patch);
        FUZZ_CHECK_STR(again.pre, v.pre);
        FUZZ_CHECK_INT(proto_semver_cmp(&v, &again), 0);
        /* precedence is an order: antisymmetric and transitive */
        for (i = 0; i < seen->nsemvers; i++) {
                const struct proto_semver *a = &seen->semvers[i];
                int ab = proto_semver_cmp(a, &v), ba = proto_semver_cmp(&v, a);
                size_t j;

                FUZZ_CHECK(ab >= -1 && ab <= 1);
                FUZZ_CHECK_INT(ab, -ba);
                for (j = 0; j < seen->nsemvers; j++) {
                        const struct proto_semver *b = &seen->semvers[j];

                        if (proto_semver_cmp(b, a) < 0 && ab < 0)
                                FUZZ_CHECK(proto_semver_cmp(b, &v) < 0);
                        if (proto_semver_cmp(b, a) == 0)
                                FUZZ_CHECK_INT(proto_semver_cmp(b, &v), ab);
                }
        }
        if (seen->nsemvers < MAX_SEMVERS)
                seen->semvers[seen->nsemvers++] = v;
}

/* spec_parse with out-buffers of the given sizes; on success the parts rebuild the spec. */
static void check_spec_sized(const char *spec, size_t wlen, size_t nlen, size_t vlen)
{
        char *ws = malloc(wlen), *name = malloc(nlen), *ver = malloc(vlen), *err = err_new(64);
        const char *slash = strchr(spec, '/');
        const char *rest = slash ? slash + 1 : spec;
        const char *colon = strchr(rest, ':');
        char *rebuilt;
        size_t n = strlen(spec);
        int rc;

        FUZZ_CHECK(ws != NULL && name != NULL && ver != NULL);
        rc = proto_spec_parse(spec, ws, wlen, name, nlen, ver, vlen, err, 64);
        FUZZ_CHECK(rc == 0 || rc == FERRY_EINVAL);
        if (rc != 0) {
                err_check(err, 64);
        } else {
                FUZZ_CHECK(want_name(name));
                FUZZ_CHECK(strchr(ws, '/') == NULL);
                FUZZ_CHECK((slash != NULL) == (ws[0] != '\0'));
                FUZZ_CHECK((colon != NULL) == (ver[0] != '\0'));
                rebuilt = malloc(n + 1);
                FUZZ_CHECK(rebuilt != NULL);
                snprintf(rebuilt, n + 1, "%s%s%s%s%s", ws, ws[0] ? "/" : "", name,
                         ver[0] ? ":" : "", ver);
                FUZZ_CHECK_STR(rebuilt, spec);
                free(rebuilt);
        }
        free(ws);
        free(name);
        free(ver);
        free(err);
}

static void check_string(const char *s, struct seen *seen)
{
        char *err = err_new(PROTO_ERRMSG_MAX);
        size_t n = strlen(s);
        int rc;

        rc = proto_validate_name(s, "name", err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, want_name(s) ? 0 : FERRY_EINVAL);
        if (rc != 0) {
                err_check(err, PROTO_ERRMSG_MAX);
                check_reply(2, rc, err);
        }
        rc = proto_validate_logical_path(s, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, want_logical_path(s) ? 0 : FERRY_EINVAL);
        rc = proto_validate_experiment_key(s, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, want_experiment_key(s) ? 0 : FERRY_EINVAL);
        /* short error buffers: the message is cut, never overflowed */
        if (proto_validate_name(s, "artifact name", err, 1) != 0)
                FUZZ_CHECK_INT(err[0], '\0');
        if (proto_validate_logical_path(s, err, 7) != 0)
                err_check(err, 7);
        free(err);

        check_utf8_helpers(s, n, n - n / 3, 1 + n / 2);
        check_semver(s, seen);
        /* ferryd's buffers, then ones just big enough, then ones a byte short */
        check_spec_sized(s, PROTO_NAME_MAX + 1, PROTO_NAME_MAX + 1, PROTO_NAME_MAX + 1);
        check_spec_sized(s, n + 1, n + 1, n + 1);
        check_spec_sized(s, 1 + n / 3, 1 + n / 2, 1 + n / 4);
}

/* ---- the getters on every field ---- */

static void check_getters(const cJSON *obj, const cJSON *field, struct seen *seen)
{
        const char *key = field->string;
        const cJSON *item;
        bool absent, integer;
        char *err = err_new(PROTO_ERRMSG_MAX);
        const char *str;
        const cJSON *sub;
        int64_t i64;
        double d;
        bool b;
        int rc;

        /* duplicated keys: the getters read the first one */
        field = cJSON_GetObjectItemCaseSensitive(obj, key);
        FUZZ_CHECK(field != NULL);
        absent = cJSON_IsNull(field);

        rc = proto_get_string(obj, key, false, &str, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, absent || cJSON_IsString(field) ? 0 : FERRY_EINVAL);
        FUZZ_CHECK(str == (rc == 0 && !absent ? field->valuestring : NULL));
        rc = proto_get_string(obj, key, true, &str, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, cJSON_IsString(field) ? 0 : FERRY_EINVAL);
        if (rc != 0)
                err_check(err, PROTO_ERRMSG_MAX);

        /* an integer: a number without a fraction, within +-2^53 (tested before the cast) */
        d = cJSON_IsNumber(field) ? field->valuedouble : 0.5;
        integer = cJSON_IsNumber(field) && d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
                  d == (double)(int64_t)d;
        rc = proto_get_int(obj, key, !absent, -7, &i64, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, absent || integer ? 0 : FERRY_EINVAL);
        if (rc != 0)
                err_check(err, PROTO_ERRMSG_MAX);
        else if (absent)
                FUZZ_CHECK_INT(i64, -7);
        else
                FUZZ_CHECK((double)i64 == d);

        rc = proto_get_bool(obj, key, true, &b, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, absent || cJSON_IsBool(field) ? 0 : FERRY_EINVAL);
        if (rc == 0)
                FUZZ_CHECK(b == (absent ? true : cJSON_IsTrue(field) != 0));

        rc = proto_get_string_array(obj, key, &sub, err, PROTO_ERRMSG_MAX);
        if (rc == 0) {
                FUZZ_CHECK(sub == (absent ? NULL : field));
                cJSON_ArrayForEach(item, sub)
                {
                        FUZZ_CHECK(cJSON_IsString(item));
                        FUZZ_CHECK(strlen(item->valuestring) >= 1 &&
                                   strlen(item->valuestring) <= PROTO_NAME_MAX);
                }
        } else {
                FUZZ_CHECK_INT(rc, FERRY_EINVAL);
                FUZZ_CHECK(sub == NULL);
                err_check(err, PROTO_ERRMSG_MAX);
        }

        rc = proto_get_object(obj, key, !absent, &sub, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, absent || cJSON_IsObject(field) ? 0 : FERRY_EINVAL);
        FUZZ_CHECK(sub == (rc == 0 && !absent ? field : NULL));
        free(err);

        if (cJSON_IsString(field) && seen->nstrings < MAX_STRINGS) {
                seen->strings[seen->nstrings++] = field->valuestring;
                check_string(field->valuestring, seen);
        }
}

/* proto_check_keys against a list; the answer must match a plain reading. */
static void check_keys(const cJSON *obj, const char *const *allowed)
{
        char *err = err_new(PROTO_ERRMSG_MAX);
        const cJSON *it;
        bool want = true;
        int rc;

        cJSON_ArrayForEach(it, obj)
        {
                const char *const *a;
                bool found = false;

                for (a = allowed; *a != NULL; a++)
                        if (strcmp(*a, it->string) == 0)
                                found = true;
                if (!found)
                        want = false;
        }
        rc = proto_check_keys(obj, allowed, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(rc, want ? 0 : FERRY_EINVAL);
        if (rc != 0) {
                err_check(err, PROTO_ERRMSG_MAX);
                check_reply(1, rc, err); /* ferryd's answer names the field */
        }
        free(err);
}

/* Every field of every object, arrays included, down to MAX_DEPTH. */
static void walk(const cJSON *v, int depth, struct seen *seen)
{
        static const char *const none[] = {NULL};
        const cJSON *it;

        if (depth > MAX_DEPTH)
                return;
        if (cJSON_IsObject(v)) {
                check_keys(v, none);
                check_keys(v, asset_keys);
        }
        cJSON_ArrayForEach(it, v)
        {
                if (seen->fields++ >= MAX_FIELDS)
                        return;
                if (cJSON_IsObject(v))
                        check_getters(v, it, seen);
                else if (cJSON_IsString(it) && seen->nstrings < MAX_STRINGS) {
                        seen->strings[seen->nstrings++] = it->valuestring;
                        check_string(it->valuestring, seen);
                }
                if (cJSON_IsObject(it) || cJSON_IsArray(it))
                        walk(it, depth + 1, seen);
        }
}

/* ---- the request as ferryd takes it ---- */

static void check_as_ferryd(const cJSON *req, const char *op)
{
        const char *allowed[16];
        const struct op_rule *rule = NULL;
        char *err = err_new(PROTO_ERRMSG_MAX);
        const char *s;
        const cJSON *arr, *it;
        size_t i, n = 0;
        int64_t i64;
        bool b;

        for (i = 0; i < sizeof(op_rules) / sizeof(op_rules[0]); i++)
                if (strcmp(op_rules[i].op, op) == 0)
                        rule = &op_rules[i];
        if (rule == NULL)
                goto done;
        allowed[n++] = "id";
        allowed[n++] = "op";
        for (i = 0; rule->fields[i] != NULL; i++)
                allowed[n++] = rule->fields[i];
        allowed[n] = NULL;
        check_keys(req, allowed);

        if (strcmp(op, "hello") == 0) {
                proto_get_int(req, "protocol", true, 0, &i64, err, PROTO_ERRMSG_MAX);
        } else if (strcmp(op, "artifact.log") == 0) {
                if (proto_get_string(req, "name", true, &s, err, PROTO_ERRMSG_MAX) == 0)
                        proto_validate_name(s, "artifact name", err, PROTO_ERRMSG_MAX);
                if (proto_get_string_array(req, "aliases", &arr, err, PROTO_ERRMSG_MAX) == 0)
                        cJSON_ArrayForEach(it, arr)
                            proto_validate_name(it->valuestring, "alias", err, PROTO_ERRMSG_MAX);
                if (proto_get_string(req, "version", false, &s, err, PROTO_ERRMSG_MAX) == 0 && s) {
                        struct proto_semver v;

                        proto_semver_parse(s, &v);
                }
                arr = cJSON_GetObjectItemCaseSensitive(req, "assets");
                if (!cJSON_IsArray(arr))
                        arr = NULL;
                cJSON_ArrayForEach(it, arr)
                {
                        if (!cJSON_IsObject(it))
                                continue;
                        check_keys(it, asset_keys);
                        if (proto_get_string(it, "logical_path", true, &s, err, PROTO_ERRMSG_MAX) ==
                            0)
                                proto_validate_logical_path(s, err, PROTO_ERRMSG_MAX);
                        proto_get_bool(it, "overwrite", false, &b, err, PROTO_ERRMSG_MAX);
                }
        } else if (strcmp(op, "get") == 0 || strcmp(op, "download") == 0) {
                char ws[PROTO_NAME_MAX + 1], name[PROTO_NAME_MAX + 1], ver[PROTO_NAME_MAX + 1];

                if (proto_get_string(req, "name", true, &s, err, PROTO_ERRMSG_MAX) == 0)
                        proto_spec_parse(s, ws, sizeof(ws), name, sizeof(name), ver, sizeof(ver),
                                         err, PROTO_ERRMSG_MAX);
        }
done:
        free(err);
}

/* ---- envelopes ---- */

/* A frame holds one JSON value and nothing after it but JSON whitespace. */
static bool one_value(const char *json, size_t len)
{
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(json, len, &end, 0);

        if (v == NULL)
                return false;
        cJSON_Delete(v);
        for (; end < json + len; end++)
                if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
                        return false;
        return true;
}

/* ---- replies ---- */

static const int codes[] = {FERRY_EINVAL,
                            FERRY_ENOTFOUND,
                            FERRY_EPROTO,
                            FERRY_EUNKNOWNOP,
                            FERRY_ETOOBIG,
                            FERRY_EINTERNAL,
                            0,
                            1234};

/*
 * proto_reply_error(id, code, "%s", msg): the frame is UTF-8 JSON (when msg is
 * UTF-8) whose message is msg, or as much of it as fits PROTO_ERRMSG_MAX cut
 * at a character boundary; proto_reply_parse gives the code and message back.
 */
static void check_reply(uint64_t id, int code, const char *msg)
{
        char *err = err_new(PROTO_ERRMSG_MAX), *frame = NULL, *json;
        cJSON *rep = proto_reply_error(id, code, "%s", msg), *back, *out;
        size_t frame_len = 0, len, n = strlen(msg),
               fits = n < PROTO_ERRMSG_MAX ? n : PROTO_ERRMSG_MAX - 1;
        const char *got;
        const cJSON *e;
        uint64_t got_id;
        int rc;

        FUZZ_CHECK(rep != NULL);
        FUZZ_CHECK_INT(proto_frame_encode(rep, &frame, &frame_len), 0);
        FUZZ_CHECK(frame_len > PROTO_HEADER_LEN);
        len = frame_len - PROTO_HEADER_LEN;
        FUZZ_CHECK_INT(((size_t)(unsigned char)frame[0] << 24) |
                           ((size_t)(unsigned char)frame[1] << 16) |
                           ((size_t)(unsigned char)frame[2] << 8) | (unsigned char)frame[3],
                       len);
        json = fuzz_dup(frame + PROTO_HEADER_LEN, len);
        if (fuzz_utf8_valid(msg, n) && !fuzz_utf8_valid(json, len)) {
                fprintf(stderr, "reply to a UTF-8 message is not UTF-8: %.*s\n", (int)len, json);
                FUZZ_CHECK(!"reply frame is valid UTF-8");
        }
        back = cJSON_ParseWithLength(json, len);
        FUZZ_CHECK(back != NULL);
        e = cJSON_GetObjectItemCaseSensitive(back, "error");
        FUZZ_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(back, "ok")));
        FUZZ_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code")),
                       ferry_err_name(code));
        got = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message"));
        FUZZ_CHECK(got != NULL);
        FUZZ_CHECK(strlen(got) <= fits && memcmp(got, msg, strlen(got)) == 0);
        if (fuzz_utf8_valid(msg, n))
                FUZZ_CHECK(strlen(got) + 3 >= fits); /* cut, if at all, in the last character */

        rc = proto_reply_parse(json, len, &out, &got_id, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK_INT(got_id, id);
        FUZZ_CHECK(out == NULL);
        FUZZ_CHECK_INT(rc, strcmp(ferry_err_name(code), "unknown") == 0 ? FERRY_EINTERNAL : code);
        if (fuzz_utf8_valid(got, strlen(got)))
                FUZZ_CHECK_STR(err, got);
        cJSON_Delete(back);
        free(json);
        free(frame);
        free(err);
        cJSON_Delete(rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* errlen varies with the input, down to 1 byte: the message is cut, never overflowed */
        size_t errlen = size % 3 == 0 ? 1 + size % 40 : PROTO_ERRMSG_MAX;
        char *json = fuzz_dup(data, size), *err = err_new(errlen), *raw;
        struct seen seen = {0};
        const char *op;
        cJSON *req, *rep;
        uint64_t id;
        size_t i;
        int rc;

        check_utf8_helpers(json, size, size ? (size_t)data[0] * 7 : 0, size % 64);
        rc = proto_request_parse(json, size, &req, &id, &op, err, errlen);
        FUZZ_CHECK(id <= (UINT64_C(1) << 53));
        if (rc != 0) {
                FUZZ_CHECK(rc == FERRY_EPROTO || rc == FERRY_EINVAL);
                FUZZ_CHECK(req == NULL && op == NULL);
                err_check(err, errlen);
                if (errlen == PROTO_ERRMSG_MAX)
                        check_reply(id, rc, err); /* ferryd answers with the message */
        } else {
                FUZZ_CHECK(fuzz_utf8_valid(json, size)); /* "N bytes of UTF-8 JSON" */
                FUZZ_CHECK(one_value(json, size));       /* "holding exactly one object" */
                FUZZ_CHECK(cJSON_IsObject(req));
                FUZZ_CHECK(op != NULL && op[0] != '\0');
                FUZZ_CHECK_STR(op,
                               cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "op")));
                FUZZ_CHECK((double)id ==
                           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(req, "id")));
                check_as_ferryd(req, op);
                walk(req, 0, &seen);
        }

        /* the same bytes as a reply */
        free(err);
        err = err_new(PROTO_ERRMSG_MAX);
        rc = proto_reply_parse(json, size, &rep, &id, err, PROTO_ERRMSG_MAX);
        FUZZ_CHECK(id <= (UINT64_C(1) << 53));
        if (rc == 0) {
                FUZZ_CHECK(one_value(json, size));
                FUZZ_CHECK(cJSON_IsObject(rep));
                FUZZ_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok")));
        } else {
                FUZZ_CHECK(rep == NULL);
                FUZZ_CHECK(strcmp(ferry_err_name(rc), "unknown") != 0);
                err_check(err, PROTO_ERRMSG_MAX);
        }
        cJSON_Delete(rep);

        /* replies carrying strings of the input: the op, the fields, the raw bytes */
        raw = fuzz_strndup(data, size);
        check_reply(id, codes[size % (sizeof(codes) / sizeof(codes[0]))], raw);
        if (req != NULL) {
                check_reply(id, FERRY_EUNKNOWNOP, op);
                for (i = 0; i < seen.nstrings; i++)
                        check_reply(id, codes[i % (sizeof(codes) / sizeof(codes[0]))],
                                    seen.strings[i]);
        }
        free(raw);
        free(err);
        cJSON_Delete(req);
        free(json);
        return 0;
}
