/*
 * fuzz_frame.c — libFuzzer target for the frame reader (proto_decoder_*) and
 * proto_frame_encode.
 *
 * Input: byte 0 picks how the stream is cut and fed, byte 1 seeds the chunk
 * sizes, the rest is the byte stream a peer sends (or, with FLAG_SYNTH,
 * records that expand into frames of up to 1 MiB). The stream is fed in
 * chunks, each from an exactly sized buffer, and every answer of
 * proto_decoder_next is checked against a reference reading of the whole
 * stream: the same frames in order, each 1..PROTO_FRAME_MAX bytes and only
 * once all its bytes arrived; the same error at the same header; nothing
 * after an error; bounded memory. Frames that hold JSON are re-encoded with
 * proto_frame_encode and decoded again.
 */
#include "proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ferry_base.h"
#include "fuzz_common.h"

#define FLAG_CHUNK_MASK 0x07 /* how chunk sizes are drawn: see chunk_size() */
#define FLAG_SYNTH 0x08      /* the rest is records: 4-byte header + fill byte */
#define FLAG_TOOBIG 0x10     /* also encode a message near PROTO_FRAME_MAX */
#define FLAG_LAZY 0x20       /* drain only after some feeds, as a slow reader would */

#define SYNTH_BUDGET (PROTO_HEADER_LEN + PROTO_FRAME_MAX + 70000) /* a maximal frame and a read */
#define MAX_FEEDS 10000
#define MAX_ROUNDTRIPS 8

/* What a reference reading of the whole stream finds. */
struct ref_frame {
        size_t off; /* payload offset in the stream */
        size_t len;
};

struct ref {
        struct ref_frame *frames;
        size_t nframes;
        int error;        /* 0, FERRY_EPROTO or FERRY_ETOOBIG */
        size_t error_end; /* stream offset after the bad header */
        bool partial;     /* bytes left over after the last frame (or the bad header) */
};

static uint32_t be32(const unsigned char *p)
{
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void ref_read(const char *s, size_t n, struct ref *r)
{
        size_t pos = 0, cap = 0;

        memset(r, 0, sizeof(*r));
        while (n - pos >= PROTO_HEADER_LEN) {
                uint32_t len = be32((const unsigned char *)s + pos);

                if (len == 0 || len > PROTO_FRAME_MAX) {
                        r->error = len == 0 ? FERRY_EPROTO : FERRY_ETOOBIG;
                        r->error_end = pos + PROTO_HEADER_LEN;
                        r->partial = true;
                        return;
                }
                if (n - pos - PROTO_HEADER_LEN < len)
                        break;
                if (r->nframes == cap) {
                        cap = cap ? 2 * cap : 16;
                        r->frames = realloc(r->frames, cap * sizeof(*r->frames));
                        FUZZ_CHECK(r->frames != NULL);
                }
                r->frames[r->nframes].off = pos + PROTO_HEADER_LEN;
                r->frames[r->nframes].len = len;
                r->nframes++;
                pos += PROTO_HEADER_LEN + len;
        }
        r->partial = pos < n;
}

/* FLAG_SYNTH: each 5-byte record is a header and a fill byte; the payload is filled in. */
static char *synth_stream(const uint8_t *d, size_t n, size_t *out_len)
{
        size_t total = 0, i;
        char *s;

        for (i = 0; i + 5 <= n; i += 5) {
                uint32_t len = be32(d + i);
                size_t body = len <= PROTO_FRAME_MAX ? len : 64;

                if (total + PROTO_HEADER_LEN + body > SYNTH_BUDGET)
                        break;
                total += PROTO_HEADER_LEN + body;
        }
        s = malloc(total + (n - i) + 1);
        FUZZ_CHECK(s != NULL);
        *out_len = 0;
        for (i = 0; i + 5 <= n; i += 5) {
                uint32_t len = be32(d + i);
                size_t body = len <= PROTO_FRAME_MAX ? len : 64;

                if (*out_len + PROTO_HEADER_LEN + body > total)
                        break;
                memcpy(s + *out_len, d + i, PROTO_HEADER_LEN);
                memset(s + *out_len + PROTO_HEADER_LEN, d[i + 4], body);
                *out_len += PROTO_HEADER_LEN + body;
        }
        memcpy(s + *out_len, d + i, n - i); /* a short tail stays as it is */
        *out_len += n - i;
        return s;
}

/* The size of the next chunk, at most `left`. */
static size_t chunk_size(struct fuzz_rng *rng, unsigned mode, size_t left)
{
        size_t c;

        switch (mode) {
        case 0:
                c = left; /* the whole stream in one read */
                break;
        case 1:
                c = 1;
                break;
        case 2:
                c = fuzz_rng_range(rng, 1, 8);
                break;
        case 3:
                c = fuzz_rng_range(rng, 1, 64);
                break;
        case 4:
                c = fuzz_rng_range(rng, 1, 4096);
                break;
        case 5:
                c = fuzz_rng_range(rng, 1, 70000); /* past the decoder's first allocation */
                break;
        case 6:
                /* a header cut in two now and then, between reads of any size */
                c = fuzz_rng_next(rng) & 1 ? fuzz_rng_range(rng, 1, 5)
                                           : fuzz_rng_range(rng, 1, 300000);
                break;
        default:
                c = (size_t)1 << fuzz_rng_range(rng, 0, 21);
                break;
        }
        /* one byte at a time through a megabyte would only be slow: keep to MAX_FEEDS */
        if (left / MAX_FEEDS >= c)
                c = left / MAX_FEEDS + 1;
        return c < left ? c : left;
}

/* Decode one encoded frame, fed in two pieces, and check it is `payload`. */
static void check_decodes_to(const char *frame, size_t frame_len, const char *payload,
                             size_t payload_len, size_t cut)
{
        struct proto_decoder dec;
        const char *json = NULL;
        size_t len = 0;
        char *a, *b;

        cut = frame_len ? cut % (frame_len + 1) : 0;
        a = fuzz_dup(frame, cut);
        b = fuzz_dup(frame + cut, frame_len - cut);
        proto_decoder_init(&dec);
        FUZZ_CHECK_INT(proto_decoder_feed(&dec, a, cut), 0);
        if (cut < frame_len) {
                FUZZ_CHECK_INT(proto_decoder_next(&dec, &json, &len), 0);
                FUZZ_CHECK(proto_decoder_partial(&dec) == (cut > 0));
        }
        FUZZ_CHECK_INT(proto_decoder_feed(&dec, b, frame_len - cut), 0);
        FUZZ_CHECK_INT(proto_decoder_next(&dec, &json, &len), 1);
        FUZZ_CHECK_INT(len, payload_len);
        FUZZ_CHECK(memcmp(json, payload, len) == 0);
        FUZZ_CHECK_INT(proto_decoder_next(&dec, &json, &len), 0);
        FUZZ_CHECK(!proto_decoder_partial(&dec));
        proto_decoder_free(&dec);
        free(a);
        free(b);
}

/* A frame that parses as JSON: encode it again; the frame must decode to the printed JSON. */
static void check_roundtrip(const char *payload, size_t len, size_t cut)
{
        cJSON *msg = cJSON_ParseWithLength(payload, len);
        cJSON *again;
        char *frame = NULL, *frame2 = NULL, *printed;
        size_t frame_len = 0, frame2_len = 0, n;
        int rc;

        if (msg == NULL)
                return;
        printed = cJSON_PrintUnformatted(msg);
        FUZZ_CHECK(printed != NULL);
        n = strlen(printed);
        rc = proto_frame_encode(msg, &frame, &frame_len);
        if (n > PROTO_FRAME_MAX) {
                /* escapes can make the printed form longer than the frame it came in */
                FUZZ_CHECK_INT(rc, FERRY_ETOOBIG);
                goto done;
        }
        FUZZ_CHECK_INT(rc, 0);
        FUZZ_CHECK_INT(frame_len, PROTO_HEADER_LEN + n);
        FUZZ_CHECK_INT(be32((const unsigned char *)frame), n);
        FUZZ_CHECK(memcmp(frame + PROTO_HEADER_LEN, printed, n) == 0);
        check_decodes_to(frame, frame_len, printed, n, cut);
        /* printing what was printed changes nothing */
        again = cJSON_ParseWithLength(frame + PROTO_HEADER_LEN, n);
        FUZZ_CHECK(again != NULL);
        FUZZ_CHECK_INT(proto_frame_encode(again, &frame2, &frame2_len), 0);
        FUZZ_CHECK_INT(frame2_len, frame_len);
        FUZZ_CHECK(memcmp(frame, frame2, frame_len) == 0);
        cJSON_Delete(again);
done:
        free(frame);
        free(frame2);
        cJSON_free(printed);
        cJSON_Delete(msg);
}

/* proto_request_new -> encode -> decode -> proto_request_parse gives the id and op back. */
static void check_request_roundtrip(const uint8_t *d, size_t n, struct fuzz_rng *rng)
{
        size_t bits = fuzz_rng_range(rng, 0, 53); /* ids of every size up to 2^53 */
        uint64_t id = fuzz_rng_next(rng) % ((UINT64_C(1) << bits) + 1), got_id;
        char *op = fuzz_strndup(d, n < 64 ? n : 64);
        cJSON *req = proto_request_new(id, op), *parsed;
        char *frame = NULL, err[PROTO_ERRMSG_MAX];
        size_t frame_len = 0;
        const char *got_op;
        int rc;

        FUZZ_CHECK(req != NULL);
        FUZZ_CHECK_INT(proto_frame_encode(req, &frame, &frame_len), 0);
        FUZZ_CHECK(frame_len > PROTO_HEADER_LEN);
        check_decodes_to(frame, frame_len, frame + PROTO_HEADER_LEN, frame_len - PROTO_HEADER_LEN,
                         (size_t)fuzz_rng_next(rng));
        rc = proto_request_parse(frame + PROTO_HEADER_LEN, frame_len - PROTO_HEADER_LEN, &parsed,
                                 &got_id, &got_op, err, sizeof(err));
        if (rc != 0 && got_id == 0 && id > UINT32_MAX) {
                /* an id this large may be refused as out of range, but never changed */
        } else if (op[0] == '\0' || !fuzz_utf8_valid(op, strlen(op))) {
                /* refused (no op, or not UTF-8), with the id read all the same */
                FUZZ_CHECK(rc < 0);
                FUZZ_CHECK_INT(got_id, id);
                FUZZ_CHECK(parsed == NULL);
        } else {
                FUZZ_CHECK_INT(rc, 0);
                FUZZ_CHECK_INT(got_id, id);
                FUZZ_CHECK_STR(got_op, op);
        }
        cJSON_Delete(parsed);
        cJSON_Delete(req);
        free(frame);
        free(op);
}

/* FLAG_TOOBIG: a string that makes the JSON just under, at or over PROTO_FRAME_MAX. */
static void check_too_big(struct fuzz_rng *rng)
{
        size_t json_len = PROTO_FRAME_MAX - 8 + fuzz_rng_range(rng, 0, 16);
        char *s = malloc(json_len - 1), *frame = NULL;
        size_t frame_len = 0;
        cJSON *msg;
        int rc;

        FUZZ_CHECK(s != NULL);
        memset(s, 'x', json_len - 2); /* the JSON is the string and its two quotes */
        s[json_len - 2] = '\0';
        msg = cJSON_CreateString(s);
        FUZZ_CHECK(msg != NULL);
        rc = proto_frame_encode(msg, &frame, &frame_len);
        if (json_len > PROTO_FRAME_MAX) {
                FUZZ_CHECK_INT(rc, FERRY_ETOOBIG);
        } else {
                FUZZ_CHECK_INT(rc, 0);
                FUZZ_CHECK_INT(frame_len, PROTO_HEADER_LEN + json_len);
                check_decodes_to(frame, frame_len, frame + PROTO_HEADER_LEN, json_len,
                                 (size_t)fuzz_rng_next(rng));
        }
        free(frame);
        cJSON_Delete(msg);
        free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct proto_decoder dec;
        struct fuzz_rng rng;
        struct ref ref;
        const char *stream;
        char *synth = NULL, *tail;
        size_t stream_len, fed = 0, next_frame = 0, max_need = 0, roundtrips = 0;
        unsigned flags;
        int error = 0;

        if (size < 2)
                return 0;
        flags = data[0];
        rng.state = ((uint64_t)data[1] << 32) ^ size;
        if (flags & FLAG_SYNTH) {
                synth = synth_stream(data + 2, size - 2, &stream_len);
                stream = synth;
        } else {
                stream = (const char *)data + 2;
                stream_len = size - 2;
        }
        ref_read(stream, stream_len, &ref);
        /* each chunk is copied to the end of `tail`, so that a read past it is caught */
        tail = fuzz_dup(stream, stream_len);

        proto_decoder_init(&dec);
        FUZZ_CHECK(!proto_decoder_partial(&dec));
        while (fed < stream_len) {
                size_t n = chunk_size(&rng, flags & FLAG_CHUNK_MASK, stream_len - fed);
                size_t live = dec.len - dec.off, len;
                const char *json;
                char *chunk;
                int rc;

                /*
                 * After an error a reader stops (ferryd closes the connection): feed what is
                 * left in one piece, to see that the error stays. (Past a maximal frame the
                 * buffer grows to the exact size at each feed: cheap with glibc's mremap,
                 * slow with ASan's realloc, which copies.)
                 */
                if (error != 0)
                        n = stream_len - fed;
                chunk = tail + stream_len - n; /* ends where the allocation ends */
                memcpy(chunk, stream + fed, n);
                FUZZ_CHECK_INT(proto_decoder_feed(&dec, chunk, n), 0);
                memset(chunk, 0xa5, n); /* the decoder must have copied it */
                fed += n;
                /* memory: one maximal frame, or what one read brought on top of what was kept */
                if (live + n > max_need)
                        max_need = live + n;
                FUZZ_CHECK(dec.len <= dec.cap);
                FUZZ_CHECK(dec.cap <= (max_need > PROTO_HEADER_LEN + PROTO_FRAME_MAX
                                           ? max_need
                                           : PROTO_HEADER_LEN + PROTO_FRAME_MAX));
                if ((flags & FLAG_LAZY) && fed < stream_len && fuzz_rng_next(&rng) % 4 != 0)
                        continue;
                while ((rc = proto_decoder_next(&dec, &json, &len)) == 1) {
                        const struct ref_frame *want;

                        FUZZ_CHECK(error == 0); /* nothing after an error */
                        FUZZ_CHECK(next_frame < ref.nframes);
                        want = &ref.frames[next_frame];
                        FUZZ_CHECK(len >= 1 && len <= PROTO_FRAME_MAX);
                        FUZZ_CHECK_INT(len, want->len);
                        FUZZ_CHECK(want->off + want->len <= fed); /* not before it arrived */
                        FUZZ_CHECK(json >= dec.buf && json + len <= dec.buf + dec.cap);
                        FUZZ_CHECK(memcmp(json, stream + want->off, len) == 0);
                        if (roundtrips < MAX_ROUNDTRIPS) {
                                roundtrips++;
                                check_roundtrip(json, len, (size_t)fuzz_rng_next(&rng));
                        }
                        next_frame++;
                }
                if (rc == 0) {
                        /* more bytes needed: the next frame or bad header is not complete yet */
                        FUZZ_CHECK(error == 0);
                        if (next_frame < ref.nframes)
                                FUZZ_CHECK(ref.frames[next_frame].off + ref.frames[next_frame].len >
                                           fed);
                        else if (ref.error != 0)
                                FUZZ_CHECK(ref.error_end > fed);
                } else {
                        /* the error stays, at the same header, whatever comes after it */
                        FUZZ_CHECK(rc == FERRY_EPROTO || rc == FERRY_ETOOBIG);
                        FUZZ_CHECK_INT(rc, ref.error);
                        FUZZ_CHECK_INT(next_frame, ref.nframes);
                        FUZZ_CHECK(ref.error_end <= fed);
                        FUZZ_CHECK(error == 0 || error == rc);
                        error = rc;
                        FUZZ_CHECK_INT(proto_decoder_next(&dec, &json, &len), rc);
                        FUZZ_CHECK(proto_decoder_partial(&dec));
                }
        }
        FUZZ_CHECK_INT(error, ref.error);
        FUZZ_CHECK_INT(next_frame, ref.nframes);
        FUZZ_CHECK(proto_decoder_partial(&dec) == ref.partial);
        proto_decoder_free(&dec);
        FUZZ_CHECK(dec.buf == NULL && dec.len == 0 && dec.cap == 0 && dec.off == 0);

        check_request_roundtrip(data + 2, size - 2, &rng);
        if (flags & FLAG_TOOBIG)
                check_too_big(&rng);
        free(ref.frames);
        free(tail);
        free(synth);
        return 0;
}
