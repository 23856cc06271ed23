/* proto.c — framing, envelopes and value rules of ferry's wire protocol. */
#include "proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        if (err == NULL || errlen == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        proto_utf8_trim(err);
}

/* ---- UTF-8 ---- */

/* Length of the well-formed UTF-8 character at s (n bytes left), or 0 when it is not one. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
        unsigned c = s[0];
        size_t len, i;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else {
                return 0;
        }
        if (n < len)
                return 0;
        for (i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        /* No overlong forms, no surrogates, nothing above U+10FFFF. */
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

bool proto_utf8_valid(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0, n;

        while (i < len) {
                if (p[i] < 0x80) {
                        i++;
                        continue;
                }
                n = utf8_char(p + i, len - i);
                if (n == 0)
                        return false;
                i += n;
        }
        return true;
}

void proto_utf8_trim(char *s)
{
        size_t n = strlen(s), start = n, back;

        /* Find the start of the last character (at most 3 continuation bytes back). */
        for (back = 0; back < 4 && start > 0; back++) {
                start--;
                if (((unsigned char)s[start] & 0xc0) != 0x80)
                        break;
        }
        if (start < n && utf8_char((const unsigned char *)s + start, n - start) == 0 &&
            (unsigned char)s[start] >= 0x80)
                s[start] = '\0';
}

size_t proto_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
        const unsigned char *p = (const unsigned char *)src;
        size_t i = 0, o = 0, n;

        if (dstlen == 0)
                return 0;
        while (i < srclen) {
                char esc[8];
                const char *piece;
                size_t plen;

                n = utf8_char(p + i, srclen - i);
                if (n == 1 && (p[i] < 0x20 || p[i] == 0x7f)) {
                        snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
                        piece = esc;
                        plen = strlen(esc);
                } else if (n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0) {
                        /* C1 controls (U+0080..U+009F) move terminals too. */
                        snprintf(esc, sizeof(esc), "\\u%04x", p[i + 1]);
                        piece = esc;
                        plen = strlen(esc);
                } else if (n == 0) {
                        snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
                        piece = esc;
                        plen = strlen(esc);
                        n = 1;
                } else {
                        piece = (const char *)p + i;
                        plen = n;
                }
                if (o + plen + 1 > dstlen)
                        break;
                memcpy(dst + o, piece, plen);
                o += plen;
                i += n;
        }
        dst[o] = '\0';
        return o;
}

/* Does the JSON text hold a NUL, raw or as a \u0000 escape in a string (C strings would cut it)? */
static bool json_has_nul_escape(const char *json, size_t len)
{
        bool in_string = false;
        size_t i;

        for (i = 0; i < len; i++) {
                char c = json[i];

                if (c == '\0')
                        return true; /* a raw NUL: invalid JSON, and cJSON ends the string there */
                if (!in_string) {
                        if (c == '"')
                                in_string = true;
                        continue;
                }
                if (c == '"') {
                        in_string = false;
                } else if (c == '\\' && i + 1 < len) {
                        if (json[i + 1] == 'u' && i + 5 < len && json[i + 2] == '0' &&
                            json[i + 3] == '0' && json[i + 4] == '0' && json[i + 5] == '0')
                                return true;
                        i++; /* skip the escaped character */
                }
        }
        return false;
}

/* ---- operations ---- */

static const char *const op_names[] = {
#define PROTO_OP_NAME(id, name) name,
    PROTO_OPS(PROTO_OP_NAME)
#undef PROTO_OP_NAME
};

const char *proto_op_name(enum proto_op op)
{
        return (unsigned)op < PROTO_OP_COUNT ? op_names[op] : "?";
}

int proto_op_from_name(const char *name)
{
        int i;

        for (i = 0; i < PROTO_OP_COUNT; i++)
                if (strcmp(op_names[i], name) == 0)
                        return i;
        return -1;
}

/* ---- framing ---- */

int proto_frame_encode(const cJSON *msg, char **out, size_t *out_len)
{
        char *json;
        size_t n;
        char *frame;

        json = cJSON_PrintUnformatted(msg);
        if (json == NULL)
                return FERRY_ENOMEM;
        n = strlen(json);
        if (n > PROTO_FRAME_MAX) {
                cJSON_free(json);
                return FERRY_ETOOBIG;
        }
        frame = malloc(PROTO_HEADER_LEN + n);
        if (frame == NULL) {
                cJSON_free(json);
                return FERRY_ENOMEM;
        }
        frame[0] = (char)((n >> 24) & 0xff);
        frame[1] = (char)((n >> 16) & 0xff);
        frame[2] = (char)((n >> 8) & 0xff);
        frame[3] = (char)(n & 0xff);
        memcpy(frame + PROTO_HEADER_LEN, json, n);
        cJSON_free(json);
        *out = frame;
        *out_len = PROTO_HEADER_LEN + n;
        return 0;
}

void proto_decoder_init(struct proto_decoder *dec)
{
        memset(dec, 0, sizeof(*dec));
}

void proto_decoder_free(struct proto_decoder *dec)
{
        free(dec->buf);
        memset(dec, 0, sizeof(*dec));
}

int proto_decoder_feed(struct proto_decoder *dec, const char *data, size_t len)
{
        size_t live;

        if (len == 0)
                return 0;
        /* Drop consumed bytes first so the buffer never exceeds one frame plus a read. */
        if (dec->off > 0) {
                live = dec->len - dec->off;
                memmove(dec->buf, dec->buf + dec->off, live);
                dec->len = live;
                dec->off = 0;
        }
        if (dec->len + len > dec->cap) {
                size_t cap = dec->cap ? dec->cap : 4096;
                char *nbuf;

                while (cap < dec->len + len)
                        cap *= 2;
                /* One maximal frame fits exactly; only back-to-back frames need more. */
                if (cap > PROTO_HEADER_LEN + PROTO_FRAME_MAX)
                        cap = dec->len + len > PROTO_HEADER_LEN + PROTO_FRAME_MAX
                                  ? dec->len + len
                                  : PROTO_HEADER_LEN + PROTO_FRAME_MAX;
                nbuf = realloc(dec->buf, cap);
                if (nbuf == NULL)
                        return FERRY_ENOMEM;
                dec->buf = nbuf;
                dec->cap = cap;
        }
        memcpy(dec->buf + dec->len, data, len);
        dec->len += len;
        return 0;
}

int proto_decoder_next(struct proto_decoder *dec, const char **json, size_t *len)
{
        const unsigned char *p;
        size_t avail = dec->len - dec->off;
        uint32_t n;

        if (avail < PROTO_HEADER_LEN)
                return 0;
        p = (const unsigned char *)dec->buf + dec->off;
        n = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        if (n == 0)
                return FERRY_EPROTO;
        if (n > PROTO_FRAME_MAX)
                return FERRY_ETOOBIG;
        if (avail < PROTO_HEADER_LEN + (size_t)n)
                return 0;
        *json = (const char *)p + PROTO_HEADER_LEN;
        *len = n;
        dec->off += PROTO_HEADER_LEN + n;
        if (dec->off == dec->len) {
                dec->off = 0;
                dec->len = 0;
        }
        return 1;
}

bool proto_decoder_partial(const struct proto_decoder *dec)
{
        return dec->len > dec->off;
}

/* ---- envelopes ---- */

cJSON *proto_request_new(uint64_t id, const char *op)
{
        cJSON *req = cJSON_CreateObject();

        if (req == NULL)
                return NULL;
        if (cJSON_AddNumberToObject(req, "id", (double)id) == NULL ||
            cJSON_AddStringToObject(req, "op", op) == NULL) {
                cJSON_Delete(req);
                return NULL;
        }
        return req;
}

cJSON *proto_reply_ok(uint64_t id)
{
        cJSON *rep = cJSON_CreateObject();

        if (rep == NULL)
                return NULL;
        if (cJSON_AddNumberToObject(rep, "id", (double)id) == NULL ||
            cJSON_AddBoolToObject(rep, "ok", 1) == NULL) {
                cJSON_Delete(rep);
                return NULL;
        }
        return rep;
}

cJSON *proto_reply_error(uint64_t id, int code, const char *fmt, ...)
{
        char msg[PROTO_ERRMSG_MAX];
        cJSON *rep, *err;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        proto_utf8_trim(msg);
        rep = cJSON_CreateObject();
        if (rep == NULL)
                return NULL;
        cJSON_AddNumberToObject(rep, "id", (double)id);
        cJSON_AddBoolToObject(rep, "ok", 0);
        err = cJSON_AddObjectToObject(rep, "error");
        if (err == NULL || cJSON_AddStringToObject(err, "code", ferry_err_name(code)) == NULL ||
            cJSON_AddStringToObject(err, "message", msg) == NULL) {
                cJSON_Delete(rep);
                return NULL;
        }
        return rep;
}

/* Parse a frame's JSON: one value and nothing after it but whitespace; NULL otherwise. */
static cJSON *parse_one(const char *json, size_t len)
{
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(json, len, &end, 0);

        if (v == NULL)
                return NULL;
        while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
                end++;
        if (end != json + len) {
                cJSON_Delete(v);
                return NULL;
        }
        return v;
}

/*
 * An id is a JSON integer in [0, 10^15): cJSON prints a number of more than 15
 * significant digits rounded to 15, so a larger id would come back changed.
 */
static int get_id(const cJSON *obj, uint64_t *id)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "id");
        double d;

        if (!cJSON_IsNumber(v))
                return -1;
        d = v->valuedouble;
        if (d < 0 || d > 999999999999999.0 || d != (double)(uint64_t)d)
                return -1;
        *id = (uint64_t)d;
        return 0;
}

int proto_request_parse(const char *json, size_t len, cJSON **out, uint64_t *id, const char **op,
                        char *err, size_t errlen)
{
        cJSON *req;
        const cJSON *v;

        *out = NULL;
        *id = 0;
        *op = NULL;
        req = parse_one(json, len);
        if (req == NULL) {
                set_err(err, errlen, "request is not valid JSON");
                return FERRY_EPROTO;
        }
        if (!proto_utf8_valid(json, len)) {
                get_id(req, id);
                set_err(err, errlen, "request is not valid UTF-8; every string must be UTF-8");
                cJSON_Delete(req);
                return FERRY_EINVAL;
        }
        if (json_has_nul_escape(json, len)) {
                get_id(req, id);
                set_err(err, errlen,
                        "strings may not contain NUL characters (\\u0000 or a raw 0 byte)");
                cJSON_Delete(req);
                return FERRY_EINVAL;
        }
        if (!cJSON_IsObject(req)) {
                set_err(err, errlen, "request must be a JSON object");
                goto fail;
        }
        if (get_id(req, id) != 0) {
                set_err(err, errlen, "request needs an integer \"id\" between 0 and 10^15 - 1");
                goto fail;
        }
        v = cJSON_GetObjectItemCaseSensitive(req, "op");
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
                set_err(err, errlen, "request needs a string \"op\"");
                goto fail;
        }
        *op = v->valuestring;
        *out = req;
        return 0;
fail:
        cJSON_Delete(req);
        return FERRY_EPROTO;
}

int proto_reply_parse(const char *json, size_t len, cJSON **out, uint64_t *id, char *err,
                      size_t errlen)
{
        cJSON *rep;
        const cJSON *ok, *e, *code, *msg;
        int rc;

        *out = NULL;
        *id = 0;
        rep = memchr(json, '\0', len) == NULL ? parse_one(json, len) : NULL;
        if (rep == NULL || !cJSON_IsObject(rep) || get_id(rep, id) != 0) {
                set_err(err, errlen, "ferryd sent a malformed reply");
                cJSON_Delete(rep);
                return FERRY_EPROTO;
        }
        ok = cJSON_GetObjectItemCaseSensitive(rep, "ok");
        if (cJSON_IsTrue(ok)) {
                *out = rep;
                return 0;
        }
        e = cJSON_GetObjectItemCaseSensitive(rep, "error");
        code = cJSON_GetObjectItemCaseSensitive(e, "code");
        msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (!cJSON_IsFalse(ok) || !cJSON_IsString(code) || !cJSON_IsString(msg)) {
                set_err(err, errlen, "ferryd sent a malformed reply");
                cJSON_Delete(rep);
                return FERRY_EPROTO;
        }
        rc = ferry_err_from_name(code->valuestring);
        set_err(err, errlen, "%s", msg->valuestring);
        cJSON_Delete(rep);
        return rc;
}

/* ---- strict field access ---- */

int proto_check_keys(const cJSON *obj, const char *const *allowed, char *err, size_t errlen)
{
        const cJSON *it;

        cJSON_ArrayForEach(it, obj)
        {
                const char *const *a;
                bool found = false;

                for (a = allowed; *a != NULL; a++) {
                        if (strcmp(*a, it->string) == 0) {
                                found = true;
                                break;
                        }
                }
                if (!found) {
                        set_err(err, errlen, "unknown field \"%s\"", it->string);
                        return FERRY_EINVAL;
                }
        }
        return 0;
}

/* C0 controls, DEL and C1 controls (U+0080..U+009F as UTF-8). */
static bool has_control(const char *s)
{
        const unsigned char *p;

        for (p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] < 0xa0))
                        return true;
        return false;
}

static const cJSON *get_field(const cJSON *obj, const char *key)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

        return cJSON_IsNull(v) ? NULL : v;
}

int proto_get_string(const cJSON *obj, const char *key, bool required, const char **out, char *err,
                     size_t errlen)
{
        const cJSON *v = get_field(obj, key);

        *out = NULL;
        if (v == NULL) {
                if (!required)
                        return 0;
                set_err(err, errlen, "missing field \"%s\"", key);
                return FERRY_EINVAL;
        }
        if (!cJSON_IsString(v)) {
                set_err(err, errlen, "field \"%s\" must be a string", key);
                return FERRY_EINVAL;
        }
        *out = v->valuestring;
        return 0;
}

int proto_get_int(const cJSON *obj, const char *key, bool required, int64_t def, int64_t *out,
                  char *err, size_t errlen)
{
        const cJSON *v = get_field(obj, key);
        double d;

        *out = def;
        if (v == NULL) {
                if (!required)
                        return 0;
                set_err(err, errlen, "missing field \"%s\"", key);
                return FERRY_EINVAL;
        }
        d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
        /* Range first: converting an out-of-range double to int64_t is undefined. */
        if (!cJSON_IsNumber(v) || !(d <= 9007199254740992.0 && d >= -9007199254740992.0) ||
            d != (double)(int64_t)d) {
                set_err(err, errlen, "field \"%s\" must be an integer", key);
                return FERRY_EINVAL;
        }
        *out = (int64_t)d;
        return 0;
}

int proto_get_bool(const cJSON *obj, const char *key, bool def, bool *out, char *err, size_t errlen)
{
        const cJSON *v = get_field(obj, key);

        *out = def;
        if (v == NULL)
                return 0;
        if (!cJSON_IsBool(v)) {
                set_err(err, errlen, "field \"%s\" must be true or false", key);
                return FERRY_EINVAL;
        }
        *out = cJSON_IsTrue(v);
        return 0;
}

int proto_get_string_array(const cJSON *obj, const char *key, const cJSON **out, char *err,
                           size_t errlen)
{
        const cJSON *v = get_field(obj, key);
        const cJSON *it;

        *out = NULL;
        if (v == NULL)
                return 0;
        if (!cJSON_IsArray(v)) {
                set_err(err, errlen, "field \"%s\" must be an array of strings", key);
                return FERRY_EINVAL;
        }
        cJSON_ArrayForEach(it, v)
        {
                if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
                    strlen(it->valuestring) > PROTO_NAME_MAX) {
                        set_err(err, errlen,
                                "field \"%s\" must hold non-empty strings of at most %d bytes", key,
                                PROTO_NAME_MAX);
                        return FERRY_EINVAL;
                }
                if (has_control(it->valuestring)) {
                        set_err(err, errlen, "field \"%s\" may not hold control characters", key);
                        return FERRY_EINVAL;
                }
        }
        *out = v;
        return 0;
}

int proto_get_object(const cJSON *obj, const char *key, bool required, const cJSON **out, char *err,
                     size_t errlen)
{
        const cJSON *v = get_field(obj, key);

        *out = NULL;
        if (v == NULL) {
                if (!required)
                        return 0;
                set_err(err, errlen, "missing field \"%s\"", key);
                return FERRY_EINVAL;
        }
        if (!cJSON_IsObject(v)) {
                set_err(err, errlen, "field \"%s\" must be a JSON object", key);
                return FERRY_EINVAL;
        }
        *out = v;
        return 0;
}

/* ---- value rules ---- */

int proto_validate_name(const char *name, const char *what, char *err, size_t errlen)
{
        size_t n = name ? strlen(name) : 0;
        const unsigned char *p;

        if (n == 0) {
                set_err(err, errlen, "%s must not be empty", what);
                return FERRY_EINVAL;
        }
        if (n > PROTO_NAME_MAX) {
                set_err(err, errlen, "%s is %zu characters long; the limit is %d", what, n,
                        PROTO_NAME_MAX);
                return FERRY_EINVAL;
        }
        for (p = (const unsigned char *)name; *p; p++) {
                if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == ':' ||
                    (p[0] == 0xc2 && p[1] >= 0x80 && p[1] < 0xa0)) {
                        char shown[128];

                        proto_sanitize(shown, sizeof(shown), name, n);
                        set_err(err, errlen,
                                "%s \"%s\" may not contain '/', ':' or control characters", what,
                                shown);
                        return FERRY_EINVAL;
                }
        }
        return 0;
}

int proto_validate_logical_path(const char *path, char *err, size_t errlen)
{
        size_t n = path ? strlen(path) : 0;
        const char *seg, *p;

        if (n == 0 || n > PROTO_LOGICAL_PATH_MAX) {
                set_err(err, errlen, "logical path must be 1 to %d bytes long",
                        PROTO_LOGICAL_PATH_MAX);
                return FERRY_EINVAL;
        }
        if (path[0] == '/') {
                set_err(err, errlen, "logical path \"%s\" must be relative", path);
                return FERRY_EINVAL;
        }
        for (p = path; *p; p++) {
                if ((unsigned char)*p < 0x20 || *p == '\\' || *p == 0x7f ||
                    ((unsigned char)p[0] == 0xc2 && (unsigned char)p[1] >= 0x80 &&
                     (unsigned char)p[1] < 0xa0)) {
                        char shown[128];

                        proto_sanitize(shown, sizeof(shown), path, n);
                        set_err(err, errlen,
                                "logical path \"%s\" contains a backslash or control character",
                                shown);
                        return FERRY_EINVAL;
                }
        }
        seg = path;
        for (;;) {
                const char *end = strchr(seg, '/');
                size_t sl = end ? (size_t)(end - seg) : strlen(seg);

                if (sl == 0 || (sl == 1 && seg[0] == '.') ||
                    (sl == 2 && seg[0] == '.' && seg[1] == '.')) {
                        set_err(err, errlen,
                                "logical path \"%s\" has an empty, \".\" or \"..\" component",
                                path);
                        return FERRY_EINVAL;
                }
                if (end == NULL)
                        break;
                seg = end + 1;
        }
        return 0;
}

int proto_validate_experiment_key(const char *key, char *err, size_t errlen)
{
        size_t n = strlen(key);
        const char *p;

        if (n < 32 || n > 50) {
                set_err(err, errlen, "experiment key must be 32 to 50 letters and digits");
                return FERRY_EINVAL;
        }
        for (p = key; *p; p++) {
                if (!isascii((unsigned char)*p) || !isalnum((unsigned char)*p)) {
                        set_err(err, errlen, "experiment key must be 32 to 50 letters and digits");
                        return FERRY_EINVAL;
                }
        }
        return 0;
}

/* A numeric identifier: digits, no leading zero unless it is "0". */
static int parse_num(const char **sp, uint64_t *out)
{
        const char *s = *sp;
        uint64_t v = 0;

        if (!isdigit((unsigned char)*s))
                return -1;
        if (s[0] == '0' && isdigit((unsigned char)s[1]))
                return -1;
        while (isdigit((unsigned char)*s)) {
                if (v > (UINT64_MAX - 9) / 10)
                        return -1;
                v = v * 10 + (uint64_t)(*s - '0');
                s++;
        }
        *sp = s;
        *out = v;
        return 0;
}

/* Dot-separated identifiers of [0-9A-Za-z-]; numeric ones without leading zeros if `pre`. */
static int check_idents(const char *s, size_t n, bool pre)
{
        size_t i = 0;

        if (n == 0)
                return -1;
        while (i < n) {
                size_t start = i;
                bool numeric = true;

                while (i < n && s[i] != '.') {
                        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
                                return -1;
                        if (!isdigit((unsigned char)s[i]))
                                numeric = false;
                        i++;
                }
                if (i == start)
                        return -1;
                if (pre && numeric && i - start > 1 && s[start] == '0')
                        return -1;
                if (i < n) {
                        i++; /* skip '.' */
                        if (i == n)
                                return -1;
                }
        }
        return 0;
}

int proto_semver_parse(const char *s, struct proto_semver *out)
{
        const char *p = s;
        const char *pre = NULL, *build = NULL;
        size_t pre_len = 0;

        memset(out, 0, sizeof(*out));
        if (parse_num(&p, &out->major) || *p++ != '.' || parse_num(&p, &out->minor) ||
            *p++ != '.' || parse_num(&p, &out->patch))
                return FERRY_EINVAL;
        if (*p == '-') {
                pre = ++p;
                while (*p && *p != '+')
                        p++;
                pre_len = (size_t)(p - pre);
                if (check_idents(pre, pre_len, true) || pre_len >= sizeof(out->pre))
                        return FERRY_EINVAL;
                memcpy(out->pre, pre, pre_len);
                out->pre[pre_len] = '\0';
        }
        if (*p == '+') {
                build = ++p;
                if (check_idents(build, strlen(build), false))
                        return FERRY_EINVAL;
                p += strlen(p);
        }
        return *p == '\0' ? 0 : FERRY_EINVAL;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
        return a < b ? -1 : a > b ? 1 : 0;
}

static bool all_digits(const char *s, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                if (!isdigit((unsigned char)s[i]))
                        return false;
        return true;
}

int proto_semver_cmp(const struct proto_semver *a, const struct proto_semver *b)
{
        const char *pa, *pb;
        int c;

        if ((c = cmp_u64(a->major, b->major)) || (c = cmp_u64(a->minor, b->minor)) ||
            (c = cmp_u64(a->patch, b->patch)))
                return c;
        /* A version without pre-release ranks above one with it. */
        if (a->pre[0] == '\0' || b->pre[0] == '\0')
                return (a->pre[0] == '\0') - (b->pre[0] == '\0');
        pa = a->pre;
        pb = b->pre;
        for (;;) {
                size_t la = strcspn(pa, "."), lb = strcspn(pb, ".");
                bool na = all_digits(pa, la), nb = all_digits(pb, lb);

                if (na && nb) {
                        if (la != lb)
                                return la < lb ? -1 : 1;
                        c = memcmp(pa, pb, la);
                } else if (na != nb) {
                        c = na ? -1 : 1; /* numeric identifiers rank lower */
                } else {
                        c = strncmp(pa, pb, la < lb ? la : lb);
                        if (c == 0 && la != lb)
                                c = la < lb ? -1 : 1;
                }
                if (c)
                        return c < 0 ? -1 : 1;
                pa += la;
                pb += lb;
                if (*pa == '\0' || *pb == '\0')
                        return (*pa != '\0') - (*pb != '\0');
                pa++;
                pb++;
        }
}

static int copy_part(char *dst, size_t dlen, const char *src, size_t n)
{
        if (n >= dlen)
                return -1;
        memcpy(dst, src, n);
        dst[n] = '\0';
        return 0;
}

int proto_spec_parse(const char *spec, char *workspace, size_t wlen, char *name, size_t nlen,
                     char *version, size_t vlen, char *err, size_t errlen)
{
        const char *slash = strchr(spec, '/');
        const char *rest = spec;
        const char *colon;

        workspace[0] = name[0] = version[0] = '\0';
        if (slash != NULL) {
                if (copy_part(workspace, wlen, spec, (size_t)(slash - spec)) ||
                    workspace[0] == '\0') {
                        set_err(err, errlen, "bad workspace in \"%s\"", spec);
                        return FERRY_EINVAL;
                }
                rest = slash + 1;
        }
        colon = strchr(rest, ':');
        if (copy_part(name, nlen, rest, colon ? (size_t)(colon - rest) : strlen(rest))) {
                set_err(err, errlen, "artifact name in \"%s\" is too long", spec);
                return FERRY_EINVAL;
        }
        if (colon != NULL &&
            (copy_part(version, vlen, colon + 1, strlen(colon + 1)) || version[0] == '\0')) {
                set_err(err, errlen, "bad version or alias in \"%s\"", spec);
                return FERRY_EINVAL;
        }
        return proto_validate_name(name, "artifact name", err, errlen);
}
