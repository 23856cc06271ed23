/*
 * test_proto.c — the wire protocol (proto/proto.c, proto/errors.c): framing,
 * envelopes, strict field access, value rules, semver and specs.
 * Pure code: no loop, no files.
 */
#include "proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "ferry_base.h"

/* ---- helpers -------------------------------------------------------------- */

/* A 4-byte big-endian header announcing n bytes. */
static void put_header(char *out, uint32_t n)
{
        out[0] = (char)((n >> 24) & 0xff);
        out[1] = (char)((n >> 16) & 0xff);
        out[2] = (char)((n >> 8) & 0xff);
        out[3] = (char)(n & 0xff);
}

/* Encode a request {"id": id, "op": op}; the frame is malloc'd. */
static char *encode_request(uint64_t id, const char *op, size_t *len)
{
        cJSON *req = proto_request_new(id, op);
        char *frame = NULL;

        if (req == NULL || proto_frame_encode(req, &frame, len) != 0)
                frame = NULL;
        cJSON_Delete(req);
        return frame;
}

/* Parse a request from a C string; returns the code, fills id and op (copied). */
static int parse_req(const char *json, uint64_t *id, char *op, size_t oplen, char *err,
                     size_t errlen)
{
        cJSON *out = NULL;
        const char *o = NULL;
        int rc;

        err[0] = '\0';
        op[0] = '\0';
        rc = proto_request_parse(json, strlen(json), &out, id, &o, err, errlen);
        if (rc == 0 && o != NULL)
                snprintf(op, oplen, "%s", o);
        if (rc != 0 && (out != NULL || o != NULL)) {
                fprintf(stderr, "proto_request_parse left outputs set on failure\n");
                check_failures++;
        }
        cJSON_Delete(out);
        return rc;
}

static int parse_reply(const char *json, uint64_t *id, char *err, size_t errlen)
{
        cJSON *out = NULL;
        int rc;

        err[0] = '\0';
        rc = proto_reply_parse(json, strlen(json), &out, id, err, errlen);
        if ((rc == 0) != (out != NULL)) {
                fprintf(stderr, "proto_reply_parse: rc %d but out %p\n", rc, (void *)out);
                check_failures++;
        }
        cJSON_Delete(out);
        return rc;
}

static int semver_cmp_str(const char *a, const char *b)
{
        struct proto_semver x, y;

        if (proto_semver_parse(a, &x) != 0 || proto_semver_parse(b, &y) != 0) {
                fprintf(stderr, "semver_cmp_str: cannot parse %s or %s\n", a, b);
                check_failures++;
                return 99;
        }
        return proto_semver_cmp(&x, &y);
}

static char *repeat(char c, size_t n)
{
        char *s = malloc(n + 1);

        if (s == NULL) {
                perror("malloc");
                exit(2);
        }
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

/* ---- framing -------------------------------------------------------------- */

static void test_frame_round_trip(void)
{
        struct proto_decoder dec;
        cJSON *msg = cJSON_CreateObject();
        char *frame = NULL, *back;
        const char *json = NULL;
        size_t len = 0, jlen = 0;

        cJSON_AddNumberToObject(msg, "id", 7);
        cJSON_AddStringToObject(msg, "op", "hello");
        cJSON_AddStringToObject(msg, "text", "caf\xc3\xa9 \"quoted\"");
        CHECK_INT(proto_frame_encode(msg, &frame, &len), 0);
        back = cJSON_PrintUnformatted(msg);
        CHECK(frame != NULL);
        CHECK_INT(len, PROTO_HEADER_LEN + strlen(back));
        /* Big-endian length header, then the JSON text itself. */
        CHECK_INT((unsigned char)frame[0], 0);
        CHECK_INT((unsigned char)frame[1], 0);
        CHECK_INT((unsigned char)frame[2], (strlen(back) >> 8) & 0xff);
        CHECK_INT((unsigned char)frame[3], strlen(back) & 0xff);
        CHECK(memcmp(frame + PROTO_HEADER_LEN, back, strlen(back)) == 0);

        proto_decoder_init(&dec);
        CHECK(!proto_decoder_partial(&dec));
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 0);
        CHECK_INT(proto_decoder_feed(&dec, frame, len), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 1);
        CHECK_INT(jlen, strlen(back));
        CHECK(json != NULL && memcmp(json, back, jlen) == 0);
        CHECK(!proto_decoder_partial(&dec));
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 0);
        proto_decoder_free(&dec);
        CHECK(dec.buf == NULL);

        cJSON_free(back);
        free(frame);
        cJSON_Delete(msg);
}

static void test_decoder_byte_at_a_time(void)
{
        struct proto_decoder dec;
        size_t l1 = 0, l2 = 0, i, jlen = 0;
        char *f1 = encode_request(1, "status", &l1);
        char *f2 = encode_request(2, "ls", &l2);
        char *all = malloc(l1 + l2);
        const char *json = NULL;
        int frames = 0, early = 0, partial_wrong = 0;
        uint64_t ids[2] = {0, 0};

        CHECK(f1 != NULL && f2 != NULL && all != NULL);
        if (f1 == NULL || f2 == NULL || all == NULL)
                goto out;
        memcpy(all, f1, l1);
        memcpy(all + l1, f2, l2);
        proto_decoder_init(&dec);
        for (i = 0; i < l1 + l2; i++) {
                int rc;

                CHECK_INT(proto_decoder_feed(&dec, all + i, 1), 0);
                rc = proto_decoder_next(&dec, &json, &jlen);
                if (rc == 1) {
                        cJSON *req = NULL;
                        const char *op = NULL;
                        char err[128];

                        /* A frame must come out exactly with its last byte. */
                        if (i + 1 != (frames == 0 ? l1 : l1 + l2))
                                early++;
                        if (frames < 2 && proto_request_parse(json, jlen, &req, &ids[frames], &op,
                                                              err, sizeof(err)) == 0)
                                frames++;
                        else
                                frames = 99;
                        cJSON_Delete(req);
                        if (proto_decoder_partial(&dec))
                                partial_wrong++;
                } else {
                        CHECK_INT(rc, 0);
                        if (!proto_decoder_partial(&dec))
                                partial_wrong++;
                }
        }
        CHECK_INT(frames, 2);
        CHECK_INT(early, 0);
        CHECK_INT(partial_wrong, 0);
        CHECK_INT(ids[0], 1);
        CHECK_INT(ids[1], 2);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 0);
        proto_decoder_free(&dec);
out:
        free(all);
        free(f1);
        free(f2);
}

static void test_decoder_two_frames_one_feed(void)
{
        struct proto_decoder dec;
        size_t l1 = 0, l2 = 0, jlen = 0;
        char *f1 = encode_request(10, "first", &l1);
        char *f2 = encode_request(11, "second", &l2);
        char *all = malloc(l1 + l2 + 2);
        const char *json = NULL;

        CHECK(f1 != NULL && f2 != NULL && all != NULL);
        if (f1 == NULL || f2 == NULL || all == NULL)
                goto out;
        memcpy(all, f1, l1);
        memcpy(all + l1, f2, l2);
        /* Two frames and the first two bytes of a third header. */
        all[l1 + l2] = 0;
        all[l1 + l2 + 1] = 0;
        proto_decoder_init(&dec);
        CHECK_INT(proto_decoder_feed(&dec, all, l1 + l2 + 2), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 1);
        CHECK_INT(jlen, l1 - PROTO_HEADER_LEN);
        CHECK(jlen == l1 - PROTO_HEADER_LEN && memcmp(json, f1 + PROTO_HEADER_LEN, jlen) == 0);
        CHECK(proto_decoder_partial(&dec));
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 1);
        CHECK_INT(jlen, l2 - PROTO_HEADER_LEN);
        CHECK(jlen == l2 - PROTO_HEADER_LEN && memcmp(json, f2 + PROTO_HEADER_LEN, jlen) == 0);
        /* Half a header is buffered: more bytes needed, and the peer left mid-frame. */
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 0);
        CHECK(proto_decoder_partial(&dec));
        /* The rest of that third frame arrives in a later feed (after a compaction). */
        CHECK_INT(proto_decoder_feed(&dec, f1 + 2, l1 - 2), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 1);
        CHECK(jlen == l1 - PROTO_HEADER_LEN && memcmp(json, f1 + PROTO_HEADER_LEN, jlen) == 0);
        CHECK(!proto_decoder_partial(&dec));
        proto_decoder_free(&dec);
out:
        free(all);
        free(f1);
        free(f2);
}

static void test_decoder_limits(void)
{
        struct proto_decoder dec;
        char hdr[PROTO_HEADER_LEN];
        const char *json = NULL;
        size_t jlen = 0;
        char *big;

        /* A header announcing 0 bytes. */
        proto_decoder_init(&dec);
        put_header(hdr, 0);
        CHECK_INT(proto_decoder_feed(&dec, hdr, sizeof(hdr)), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), FERRY_EPROTO);
        proto_decoder_free(&dec);

        /* 1 MiB + 1: refused as soon as the header is in, before any payload. */
        proto_decoder_init(&dec);
        put_header(hdr, PROTO_FRAME_MAX + 1);
        CHECK_INT(proto_decoder_feed(&dec, hdr, sizeof(hdr)), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), FERRY_ETOOBIG);
        proto_decoder_free(&dec);

        /* The largest length a header can hold. */
        proto_decoder_init(&dec);
        put_header(hdr, 0xffffffffu);
        CHECK_INT(proto_decoder_feed(&dec, hdr, sizeof(hdr)), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), FERRY_ETOOBIG);
        proto_decoder_free(&dec);

        /* Exactly 1 MiB is accepted. */
        big = malloc(PROTO_HEADER_LEN + PROTO_FRAME_MAX);
        CHECK(big != NULL);
        if (big == NULL)
                return;
        put_header(big, PROTO_FRAME_MAX);
        memset(big + PROTO_HEADER_LEN, 'x', PROTO_FRAME_MAX);
        big[PROTO_HEADER_LEN + PROTO_FRAME_MAX - 1] = 'y';
        proto_decoder_init(&dec);
        CHECK_INT(proto_decoder_feed(&dec, big, PROTO_HEADER_LEN + PROTO_FRAME_MAX - 1), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 0);
        CHECK(proto_decoder_partial(&dec));
        CHECK_INT(proto_decoder_feed(&dec, big + PROTO_HEADER_LEN + PROTO_FRAME_MAX - 1, 1), 0);
        CHECK_INT(proto_decoder_next(&dec, &json, &jlen), 1);
        CHECK_INT(jlen, PROTO_FRAME_MAX);
        CHECK(jlen == PROTO_FRAME_MAX && json[0] == 'x' && json[jlen - 1] == 'y');
        /* Was a bug (fixed): proto/proto.h:43 documents cap as "at most PROTO_HEADER_LEN +
         * PROTO_FRAME_MAX", but proto_decoder_feed (proto/proto.c:81-86) doubles from 4096 without
         * a limit, so a maximal frame leaves a 2 MiB buffer (cap 2097152 > 1048580).
         */
        CHECK(dec.cap <= PROTO_HEADER_LEN + PROTO_FRAME_MAX);
        proto_decoder_free(&dec);
        free(big);
}

static void test_encode_limits(void)
{
        cJSON *msg;
        char *s, *frame = NULL;
        size_t len = 0;

        /* {"s":"..."} costs 8 bytes around the string. */
        s = repeat('a', PROTO_FRAME_MAX - 8);
        msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "s", s);
        CHECK_INT(proto_frame_encode(msg, &frame, &len), 0);
        CHECK_INT(len, PROTO_HEADER_LEN + PROTO_FRAME_MAX);
        CHECK(frame != NULL && (unsigned char)frame[1] == 0x10 && frame[2] == 0 && frame[3] == 0);
        free(frame);
        frame = NULL;
        cJSON_Delete(msg);
        free(s);

        s = repeat('a', PROTO_FRAME_MAX - 7);
        msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "s", s);
        CHECK_INT(proto_frame_encode(msg, &frame, &len), FERRY_ETOOBIG);
        CHECK(frame == NULL);
        free(frame);
        cJSON_Delete(msg);
        free(s);
}

/* ---- envelopes ------------------------------------------------------------ */

static void test_request_parse(void)
{
        char err[PROTO_ERRMSG_MAX], op[64];
        uint64_t id;
        const char *padded = "{\"id\":5,\"op\":\"log\"}GARBAGE";
        cJSON *out = NULL;
        const char *o = NULL;

        id = 99;
        CHECK_INT(parse_req("{\"id\":42,\"op\":\"hello\",\"x\":1}", &id, op, sizeof(op), err,
                            sizeof(err)),
                  0);
        CHECK_INT(id, 42);
        CHECK_STR(op, "hello");

        /* Only `len` bytes are parsed. */
        CHECK_INT(proto_request_parse(padded, strlen("{\"id\":5,\"op\":\"log\"}"), &out, &id, &o,
                                      err, sizeof(err)),
                  0);
        CHECK_INT(id, 5);
        CHECK_STR(o, "log");
        cJSON_Delete(out);

        id = 99;
        CHECK_INT(parse_req("{\"id\":1,", &id, op, sizeof(op), err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(id, 0);
        CHECK(strstr(err, "JSON") != NULL);

        id = 99;
        CHECK_INT(parse_req("[1,2]", &id, op, sizeof(op), err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(id, 0);
        CHECK(strstr(err, "object") != NULL);

        id = 99;
        CHECK_INT(parse_req("{\"op\":\"hello\"}", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(id, 0);
        CHECK(strstr(err, "\"id\"") != NULL);

        id = 99;
        CHECK_INT(parse_req("{\"id\":-1,\"op\":\"hello\"}", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(id, 0);

        id = 99;
        CHECK_INT(parse_req("{\"id\":1.5,\"op\":\"hello\"}", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(id, 0);

        id = 99;
        CHECK_INT(
            parse_req("{\"id\":\"3\",\"op\":\"hello\"}", &id, op, sizeof(op), err, sizeof(err)),
            FERRY_EPROTO);
        CHECK_INT(id, 0);

        /* [0, 10^15): cJSON prints larger numbers rounded, so they would come back changed. */
        CHECK_INT(parse_req("{\"id\":999999999999999,\"op\":\"x\"}", &id, op, sizeof(op), err,
                            sizeof(err)),
                  0);
        CHECK_INT(id, 999999999999999LL);
        CHECK_INT(parse_req("{\"id\":1000000000000000,\"op\":\"x\"}", &id, op, sizeof(op), err,
                            sizeof(err)),
                  FERRY_EPROTO);
        /* One object per frame: anything but whitespace after it is refused. */
        CHECK_INT(parse_req("{\"id\":7,\"op\":\"x\"} \n", &id, op, sizeof(op), err, sizeof(err)),
                  0);
        CHECK_INT(parse_req("{\"id\":7,\"op\":\"x\"} }tail", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(parse_req("{\"id\":0,\"op\":\"x\"}", &id, op, sizeof(op), err, sizeof(err)), 0);
        CHECK_INT(id, 0);

        /* Missing or ill-typed op: the id is still recovered for the reply. */
        id = 99;
        CHECK_INT(parse_req("{\"id\":7}", &id, op, sizeof(op), err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(id, 7);
        CHECK(strstr(err, "\"op\"") != NULL);
        id = 99;
        CHECK_INT(parse_req("{\"id\":8,\"op\":3}", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(id, 8);
        id = 99;
        CHECK_INT(parse_req("{\"id\":9,\"op\":\"\"}", &id, op, sizeof(op), err, sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(id, 9);

        /* A raw NUL byte inside a string would cut it short in C: refused, never truncated. */
        {
                static const char raw[] = "{\"id\":7,\"op\":\"st\0atus\"}";
                static const char rawrep[] = "{\"id\":7,\"ok\":true,\"x\":\"a\0b\"}";

                out = NULL;
                CHECK(proto_request_parse(raw, sizeof(raw) - 1, &out, &id, &o, err, sizeof(err)) !=
                      0);
                CHECK(out == NULL);
                CHECK(proto_reply_parse(rawrep, sizeof(rawrep) - 1, &out, &id, err, sizeof(err)) !=
                      0);
                CHECK(out == NULL);
        }
}

static void test_reply_parse(void)
{
        char err[PROTO_ERRMSG_MAX];
        uint64_t id = 0;
        cJSON *rep;
        char *text, *frame = NULL;
        size_t len = 0;

        CHECK_INT(parse_reply("{\"id\":3,\"ok\":true,\"jobs\":[]}", &id, err, sizeof(err)), 0);
        CHECK_INT(id, 3);

        CHECK_INT(parse_reply("{\"id\":4,\"ok\":false,\"error\":{\"code\":\"not_found\","
                              "\"message\":\"no job 12\"}}",
                              &id, err, sizeof(err)),
                  FERRY_ENOTFOUND);
        CHECK_INT(id, 4);
        CHECK_STR(err, "no job 12");

        /* A code this version does not know. */
        CHECK_INT(parse_reply("{\"id\":5,\"ok\":false,\"error\":{\"code\":\"from_the_future\","
                              "\"message\":\"m\"}}",
                              &id, err, sizeof(err)),
                  FERRY_EINTERNAL);

        /* Malformed replies. */
        CHECK_INT(parse_reply("not json", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK(err[0] != '\0');
        CHECK_INT(parse_reply("[]", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"ok\":true}", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"id\":6}", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"id\":6,\"ok\":\"yes\"}", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"id\":6,\"ok\":false}", &id, err, sizeof(err)), FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"id\":6,\"ok\":false,\"error\":{\"code\":\"busy\"}}", &id, err,
                              sizeof(err)),
                  FERRY_EPROTO);
        CHECK_INT(parse_reply("{\"id\":6,\"ok\":false,\"error\":{\"code\":1,\"message\":\"m\"}}",
                              &id, err, sizeof(err)),
                  FERRY_EPROTO);

        /* proto_reply_error -> encode -> parse gives back the code and the message. */
        rep = proto_reply_error(77, FERRY_EBUSY, "too many clients (%d)", 1000);
        CHECK(rep != NULL);
        CHECK_INT(proto_frame_encode(rep, &frame, &len), 0);
        if (frame != NULL) {
                cJSON *out = NULL;

                CHECK_INT(proto_reply_parse(frame + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &out,
                                            &id, err, sizeof(err)),
                          FERRY_EBUSY);
                CHECK_INT(id, 77);
                CHECK_STR(err, "too many clients (1000)");
                CHECK(out == NULL);
        }
        free(frame);
        cJSON_Delete(rep);

        rep = proto_reply_ok(78);
        text = cJSON_PrintUnformatted(rep);
        CHECK_INT(parse_reply(text, &id, err, sizeof(err)), 0);
        CHECK_INT(id, 78);
        cJSON_free(text);
        cJSON_Delete(rep);
}

/* ---- strict field access ------------------------------------------------- */

static void test_check_keys(void)
{
        static const char *const allowed[] = {"id", "op", "name", NULL};
        char err[PROTO_ERRMSG_MAX] = "";
        cJSON *o;

        o = cJSON_Parse("{\"id\":1,\"op\":\"x\",\"name\":\"n\"}");
        CHECK_INT(proto_check_keys(o, allowed, err, sizeof(err)), 0);
        cJSON_Delete(o);

        o = cJSON_Parse("{}");
        CHECK_INT(proto_check_keys(o, allowed, err, sizeof(err)), 0);
        cJSON_Delete(o);

        o = cJSON_Parse("{\"id\":1,\"bogus\":2,\"op\":\"x\"}");
        CHECK_INT(proto_check_keys(o, allowed, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"bogus\"") != NULL);
        cJSON_Delete(o);

        /* Keys are case-sensitive. */
        o = cJSON_Parse("{\"ID\":1}");
        CHECK_INT(proto_check_keys(o, allowed, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "ID") != NULL);
        cJSON_Delete(o);
}

static void test_getters(void)
{
        char err[PROTO_ERRMSG_MAX];
        cJSON *o = cJSON_Parse("{\"s\":\"text\",\"n\":12,\"neg\":-3,\"f\":1.5,\"big\":1e300,"
                               "\"lim\":9007199254740992,\"over\":9007199254740994,"
                               "\"b\":true,\"nul\":null,\"arr\":[\"a\",\"b\"],\"arrnum\":[1],"
                               "\"arrempty\":[\"\"],\"obj\":{\"k\":1},\"list\":[],"
                               "\"numstr\":\"5\"}");
        cJSON *longarr = cJSON_CreateObject();
        const cJSON *jv = NULL;
        const char *sv = NULL;
        int64_t iv = 0;
        bool bv = false;
        char *s101 = repeat('x', 101), *s100 = repeat('x', 100);
        cJSON *a;

        CHECK(o != NULL);
        if (o == NULL)
                goto out;

        /* strings */
        CHECK_INT(proto_get_string(o, "s", true, &sv, err, sizeof(err)), 0);
        CHECK_STR(sv, "text");
        sv = "stale";
        CHECK_INT(proto_get_string(o, "absent", false, &sv, err, sizeof(err)), 0);
        CHECK(sv == NULL);
        CHECK_INT(proto_get_string(o, "absent", true, &sv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"absent\"") != NULL);
        sv = "stale";
        CHECK_INT(proto_get_string(o, "nul", false, &sv, err, sizeof(err)), 0);
        CHECK(sv == NULL);
        CHECK_INT(proto_get_string(o, "nul", true, &sv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_string(o, "n", false, &sv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"n\"") != NULL && strstr(err, "string") != NULL);
        CHECK_INT(proto_get_string(o, "arr", false, &sv, err, sizeof(err)), FERRY_EINVAL);

        /* integers */
        CHECK_INT(proto_get_int(o, "n", true, 0, &iv, err, sizeof(err)), 0);
        CHECK_INT(iv, 12);
        CHECK_INT(proto_get_int(o, "neg", true, 0, &iv, err, sizeof(err)), 0);
        CHECK_INT(iv, -3);
        CHECK_INT(proto_get_int(o, "absent", false, 1234, &iv, err, sizeof(err)), 0);
        CHECK_INT(iv, 1234);
        CHECK_INT(proto_get_int(o, "nul", false, 55, &iv, err, sizeof(err)), 0);
        CHECK_INT(iv, 55);
        CHECK_INT(proto_get_int(o, "absent", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_int(o, "f", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "integer") != NULL);
        CHECK_INT(proto_get_int(o, "s", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_int(o, "numstr", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_int(o, "b", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_int(o, "lim", true, 0, &iv, err, sizeof(err)), 0);
        CHECK_INT(iv, 9007199254740992LL);
        CHECK_INT(proto_get_int(o, "over", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);
        /* Refused; note proto.c:332 casts 1e300 to int64_t before the range check. */
        CHECK_INT(proto_get_int(o, "big", true, 0, &iv, err, sizeof(err)), FERRY_EINVAL);

        /* booleans */
        CHECK_INT(proto_get_bool(o, "b", false, &bv, err, sizeof(err)), 0);
        CHECK(bv == true);
        CHECK_INT(proto_get_bool(o, "absent", true, &bv, err, sizeof(err)), 0);
        CHECK(bv == true);
        CHECK_INT(proto_get_bool(o, "absent", false, &bv, err, sizeof(err)), 0);
        CHECK(bv == false);
        CHECK_INT(proto_get_bool(o, "n", false, &bv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"n\"") != NULL);
        CHECK_INT(proto_get_bool(o, "s", false, &bv, err, sizeof(err)), FERRY_EINVAL);

        /* arrays of strings */
        CHECK_INT(proto_get_string_array(o, "arr", &jv, err, sizeof(err)), 0);
        CHECK(jv != NULL && cJSON_GetArraySize(jv) == 2);
        jv = (const cJSON *)o;
        CHECK_INT(proto_get_string_array(o, "absent", &jv, err, sizeof(err)), 0);
        CHECK(jv == NULL);
        CHECK_INT(proto_get_string_array(o, "list", &jv, err, sizeof(err)), 0);
        CHECK(jv != NULL && cJSON_GetArraySize(jv) == 0);
        CHECK_INT(proto_get_string_array(o, "arrnum", &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_string_array(o, "arrempty", &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_string_array(o, "s", &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_string_array(o, "obj", &jv, err, sizeof(err)), FERRY_EINVAL);
        a = cJSON_AddArrayToObject(longarr, "ok");
        cJSON_AddItemToArray(a, cJSON_CreateString(s100));
        a = cJSON_AddArrayToObject(longarr, "long");
        cJSON_AddItemToArray(a, cJSON_CreateString("fine"));
        cJSON_AddItemToArray(a, cJSON_CreateString(s101));
        CHECK_INT(proto_get_string_array(longarr, "ok", &jv, err, sizeof(err)), 0);
        CHECK_INT(proto_get_string_array(longarr, "long", &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"long\"") != NULL);

        /* objects */
        CHECK_INT(proto_get_object(o, "obj", true, &jv, err, sizeof(err)), 0);
        CHECK(cJSON_IsObject(jv) && cJSON_GetObjectItem(jv, "k") != NULL);
        CHECK_INT(proto_get_object(o, "absent", false, &jv, err, sizeof(err)), 0);
        CHECK(jv == NULL);
        CHECK_INT(proto_get_object(o, "absent", true, &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_get_object(o, "list", false, &jv, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "\"list\"") != NULL);
        CHECK_INT(proto_get_object(o, "s", false, &jv, err, sizeof(err)), FERRY_EINVAL);
out:
        cJSON_Delete(o);
        cJSON_Delete(longarr);
        free(s100);
        free(s101);
}

/* ---- value rules ---------------------------------------------------------- */

static void test_names(void)
{
        char err[PROTO_ERRMSG_MAX];
        char *n100 = repeat('n', 100), *n101 = repeat('n', 101);

        CHECK_INT(proto_validate_name("model", "artifact name", err, sizeof(err)), 0);
        CHECK_INT(
            proto_validate_name("mod\xc3\xa8le v2 (final)", "artifact name", err, sizeof(err)), 0);
        CHECK_INT(proto_validate_name(n100, "artifact name", err, sizeof(err)), 0);
        CHECK_INT(proto_validate_name(n101, "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "101") != NULL && strstr(err, "100") != NULL);
        CHECK_INT(proto_validate_name("", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "artifact name") != NULL);
        CHECK_INT(proto_validate_name(NULL, "alias", err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "alias") != NULL);
        CHECK_INT(proto_validate_name("a/b", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_validate_name("a:b", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_validate_name("a\nb", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_validate_name("a\x01", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_validate_name("a\x7f", "artifact name", err, sizeof(err)), FERRY_EINVAL);
        free(n100);
        free(n101);
}

static void test_logical_paths(void)
{
        static const char *const good[] = {"model.bin", "a/b/c.txt", "...",
                                           ".hidden/x", "dir.d/..x", "a b/c"};
        static const char *const bad[] = {"",   "/abs", "../x", "a/../b", "a/..",
                                          "..", ".",    "./a",  "a/./b",  "a//b",
                                          "a/", "a\\b", "a\tb", "a\x7f"};
        char err[PROTO_ERRMSG_MAX];
        char *max = repeat('p', PROTO_LOGICAL_PATH_MAX);
        char *over = repeat('p', PROTO_LOGICAL_PATH_MAX + 1);
        size_t i;

        for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                int rc = proto_validate_logical_path(good[i], err, sizeof(err));

                if (rc != 0)
                        fprintf(stderr, "logical path \"%s\": %s\n", good[i], err);
                CHECK_INT(rc, 0);
        }
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int rc = proto_validate_logical_path(bad[i], err, sizeof(err));

                if (rc != FERRY_EINVAL)
                        fprintf(stderr, "logical path \"%s\" was accepted\n", bad[i]);
                CHECK_INT(rc, FERRY_EINVAL);
        }
        CHECK_INT(proto_validate_logical_path("/abs", err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "relative") != NULL);
        CHECK_INT(proto_validate_logical_path(NULL, err, sizeof(err)), FERRY_EINVAL);
        /* Directories count towards the limit; the whole path is at most 1024 bytes. */
        max[10] = '/';
        CHECK_INT(proto_validate_logical_path(max, err, sizeof(err)), 0);
        CHECK_INT(proto_validate_logical_path(over, err, sizeof(err)), FERRY_EINVAL);
        CHECK(strstr(err, "1024") != NULL);
        free(max);
        free(over);
}

static void test_experiment_keys(void)
{
        char err[PROTO_ERRMSG_MAX];
        char *k31 = repeat('a', 31), *k32 = repeat('a', 32), *k50 = repeat('Z', 50),
             *k51 = repeat('9', 51);

        CHECK_INT(proto_validate_experiment_key(k32, err, sizeof(err)), 0);
        CHECK_INT(proto_validate_experiment_key(k50, err, sizeof(err)), 0);
        CHECK_INT(
            proto_validate_experiment_key("0123456789abcdefABCDEF0123456789", err, sizeof(err)), 0);
        CHECK_INT(proto_validate_experiment_key(k31, err, sizeof(err)), FERRY_EINVAL);
        CHECK(err[0] != '\0');
        CHECK_INT(proto_validate_experiment_key(k51, err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(proto_validate_experiment_key("", err, sizeof(err)), FERRY_EINVAL);
        CHECK_INT(
            proto_validate_experiment_key("0123456789abcdef-123456789abcdef0", err, sizeof(err)),
            FERRY_EINVAL);
        CHECK_INT(
            proto_validate_experiment_key("0123456789abcdef 123456789abcdef0", err, sizeof(err)),
            FERRY_EINVAL);
        /* 32 bytes, one of them part of a non-ASCII letter. */
        CHECK_INT(proto_validate_experiment_key("0123456789abcdef0123456789abcd\xc3\xa9", err,
                                                sizeof(err)),
                  FERRY_EINVAL);
        free(k31);
        free(k32);
        free(k50);
        free(k51);
}

static void test_semver_parse(void)
{
        static const char *const valid[] = {"0.0.0",
                                            "1.2.3",
                                            "10.20.30",
                                            "1.0.0-alpha",
                                            "1.0.0-alpha.1",
                                            "1.0.0-0.3.7",
                                            "1.0.0-x.7.z.92",
                                            "1.0.0-x-y-z.--",
                                            "1.0.0-0",
                                            "1.0.0-0a.01a",
                                            "1.0.0+20130313144700",
                                            "1.0.0-beta+exp.sha.5114f85",
                                            "1.0.0+21AF26D3----117B344092BD",
                                            "1.0.0+001"};
        static const char *const invalid[] = {"",
                                              "1",
                                              "1.0",
                                              "1.0.",
                                              "1..0",
                                              "01.0.0",
                                              "1.02.0",
                                              "1.0.00",
                                              "1.0.0-",
                                              "1.0.0-01",
                                              "1.0.0-alpha.01",
                                              "1.0.0+",
                                              "1.0.0-a..b",
                                              "1.0.0-a.",
                                              "1.0.0-.a",
                                              "v1.0.0",
                                              "1.0.0 ",
                                              " 1.0.0",
                                              "1.0.0-alpha_beta",
                                              "1.0.0+a+b",
                                              "1.0.0+a.",
                                              "-1.0.0",
                                              "1.0.0.0",
                                              "1.0.0-+b",
                                              "a.b.c",
                                              "99999999999999999999999.0.0"};
        struct proto_semver v;
        size_t i;

        for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
                int rc = proto_semver_parse(valid[i], &v);

                if (rc != 0)
                        fprintf(stderr, "semver \"%s\" was refused\n", valid[i]);
                CHECK_INT(rc, 0);
        }
        for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
                int rc = proto_semver_parse(invalid[i], &v);

                if (rc != FERRY_EINVAL)
                        fprintf(stderr, "semver \"%s\" was accepted\n", invalid[i]);
                CHECK_INT(rc, FERRY_EINVAL);
        }

        CHECK_INT(proto_semver_parse("10.20.30-rc.1+build.5", &v), 0);
        CHECK_INT(v.major, 10);
        CHECK_INT(v.minor, 20);
        CHECK_INT(v.patch, 30);
        CHECK_STR(v.pre, "rc.1");
        CHECK_INT(proto_semver_parse("2.0.0+meta", &v), 0);
        CHECK_STR(v.pre, "");
        CHECK_INT(v.major, 2);
}

static void test_semver_order(void)
{
        /* semver.org, section 11. */
        static const char *const order[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                            "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                                            "1.0.0-rc.1",  "1.0.0",         "1.0.1",
                                            "1.1.0",       "2.0.0",         "2.1.0",
                                            "2.1.1",       "10.0.0"};
        size_t n = sizeof(order) / sizeof(order[0]), i, j;
        int wrong = 0;

        for (i = 0; i < n; i++) {
                for (j = 0; j < n; j++) {
                        int c = semver_cmp_str(order[i], order[j]);
                        int want = i < j ? -1 : i > j ? 1 : 0;

                        if ((c < 0 ? -1 : c > 0 ? 1 : 0) != want) {
                                fprintf(stderr, "semver_cmp(%s, %s) = %d, want sign %d\n", order[i],
                                        order[j], c, want);
                                wrong++;
                        }
                }
        }
        CHECK_INT(wrong, 0);
        /* Build metadata does not take part in precedence. */
        CHECK_INT(semver_cmp_str("1.0.0+a", "1.0.0+b"), 0);
        CHECK_INT(semver_cmp_str("1.0.0-rc.1+x", "1.0.0-rc.1"), 0);
        /* Alphanumeric identifiers compare in ASCII order; a longer set ranks higher. */
        CHECK(semver_cmp_str("1.0.0-Beta", "1.0.0-alpha") < 0);
        CHECK(semver_cmp_str("1.0.0-alpha.1.2", "1.0.0-alpha.1") > 0);
        CHECK(semver_cmp_str("1.0.0-a-b", "1.0.0-a") > 0);
        CHECK(semver_cmp_str("1.0.0-9", "1.0.0-10") < 0);
        CHECK(semver_cmp_str("1.0.0-9a", "1.0.0-10") > 0);
}

static void test_spec_parse(void)
{
        char ws[64], name[128], ver[64], err[PROTO_ERRMSG_MAX];
        char small[4];
        char *n101 = repeat('n', 101), *spec;

#define SPEC(s)                                                                                    \
        proto_spec_parse((s), ws, sizeof(ws), name, sizeof(name), ver, sizeof(ver), err,           \
                         sizeof(err))
        CHECK_INT(SPEC("ws/name:1.0.0"), 0);
        CHECK_STR(ws, "ws");
        CHECK_STR(name, "name");
        CHECK_STR(ver, "1.0.0");

        CHECK_INT(SPEC("name"), 0);
        CHECK_STR(ws, "");
        CHECK_STR(name, "name");
        CHECK_STR(ver, "");

        CHECK_INT(SPEC("name:production"), 0);
        CHECK_STR(ws, "");
        CHECK_STR(name, "name");
        CHECK_STR(ver, "production");

        CHECK_INT(SPEC("team-a/name"), 0);
        CHECK_STR(ws, "team-a");
        CHECK_STR(name, "name");
        CHECK_STR(ver, "");

        /* The version part is split on the first ':' only. */
        CHECK_INT(SPEC("ws/name:a:b"), 0);
        CHECK_STR(ver, "a:b");

        CHECK_INT(SPEC("a:"), FERRY_EINVAL);
        CHECK(strstr(err, "a:") != NULL);
        CHECK_INT(SPEC("/name"), FERRY_EINVAL);
        CHECK(strstr(err, "workspace") != NULL);
        CHECK_INT(SPEC("ws/"), FERRY_EINVAL);
        CHECK_INT(SPEC(""), FERRY_EINVAL);
        CHECK_INT(SPEC(":1.0.0"), FERRY_EINVAL);
        CHECK_INT(SPEC("ws/a/b"), FERRY_EINVAL);
        CHECK_INT(SPEC("ws/name:"), FERRY_EINVAL);
        spec = malloc(strlen(n101) + 8);
        snprintf(spec, strlen(n101) + 8, "ws/%s", n101);
        CHECK_INT(SPEC(spec), FERRY_EINVAL);
        free(spec);
#undef SPEC
        /* Parts that do not fit their buffers are refused, not cut. */
        CHECK_INT(proto_spec_parse("workspace/n:v", small, sizeof(small), name, sizeof(name), ver,
                                   sizeof(ver), err, sizeof(err)),
                  FERRY_EINVAL);
        CHECK_INT(proto_spec_parse("n:version", ws, sizeof(ws), name, sizeof(name), small,
                                   sizeof(small), err, sizeof(err)),
                  FERRY_EINVAL);
        CHECK_INT(proto_spec_parse("ws/longname", ws, sizeof(ws), small, sizeof(small), ver,
                                   sizeof(ver), err, sizeof(err)),
                  FERRY_EINVAL);
        free(n101);
}

/* ---- error table ---------------------------------------------------------- */

static void test_errors(void)
{
        static const struct {
                int code;
                const char *name, *msg;
        } table[] = {
#define XX(suffix, value, wire, text) {FERRY_##suffix, wire, text},
            FERRY_ERRNO_MAP(XX)
#undef XX
        };
        size_t n = sizeof(table) / sizeof(table[0]), i, j;
        int dup = 0;

        CHECK_INT(n, 20);
        for (i = 0; i < n; i++) {
                CHECK(table[i].code < 0);
                CHECK_STR(ferry_err_name(table[i].code), table[i].name);
                CHECK_STR(ferry_strerror(table[i].code), table[i].msg);
                CHECK_INT(ferry_err_from_name(ferry_err_name(table[i].code)), table[i].code);
                for (j = i + 1; j < n; j++)
                        if (table[i].code == table[j].code ||
                            strcmp(table[i].name, table[j].name) == 0)
                                dup++;
        }
        CHECK_INT(dup, 0);
        CHECK_STR(ferry_err_name(FERRY_EUNSAFE), "unsafe_path");
        CHECK_INT(ferry_err_from_name("not_found"), FERRY_ENOTFOUND);
        CHECK_STR(ferry_strerror(0), "success");
        CHECK_STR(ferry_strerror(-999), "unknown error");
        CHECK_STR(ferry_strerror(5), "unknown error");
        CHECK_STR(ferry_err_name(-999), "unknown");
        CHECK_INT(ferry_err_from_name("no_such_code"), FERRY_EINTERNAL);
        CHECK_INT(ferry_err_from_name(""), FERRY_EINTERNAL);
        CHECK_INT(ferry_err_from_name("NOT_FOUND"), FERRY_EINTERNAL);
}

int main(void)
{
        test_frame_round_trip();
        test_decoder_byte_at_a_time();
        test_decoder_two_frames_one_feed();
        test_decoder_limits();
        test_encode_limits();
        test_request_parse();
        test_reply_parse();
        test_check_keys();
        test_getters();
        test_names();
        test_logical_paths();
        test_experiment_keys();
        test_semver_parse();
        test_semver_order();
        test_spec_parse();
        test_errors();
        return CHECK_DONE("test_proto");
}
