/*
 * fuzz_common.h — what ferry's libFuzzer targets share: checks that abort (so
 * that libFuzzer keeps the input that broke an invariant), a strict UTF-8
 * test, exact-size copies (so that AddressSanitizer sees a read one byte past
 * the end) and a small generator that turns input bytes into chunk sizes.
 */
#ifndef FERRY_FUZZ_COMMON_H
#define FERRY_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry point, defined by each target. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: say which, then abort; libFuzzer writes the input out. */
#define FUZZ_CHECK(cond)                                                                           \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__,      \
                                #cond);                                                            \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

#define FUZZ_CHECK_INT(a, b)                                                                       \
        do {                                                                                       \
                long long fuzz_a_ = (long long)(a), fuzz_b_ = (long long)(b);                      \
                if (fuzz_a_ != fuzz_b_) {                                                          \
                        fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,        \
                                __LINE__, #a, #b, fuzz_a_, fuzz_b_);                               \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

#define FUZZ_CHECK_STR(a, b)                                                                       \
        do {                                                                                       \
                const char *fuzz_a_ = (a), *fuzz_b_ = (b);                                         \
                if (fuzz_a_ == NULL || fuzz_b_ == NULL || strcmp(fuzz_a_, fuzz_b_) != 0) {         \
                        fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,    \
                                __LINE__, #a, #b, fuzz_a_ ? fuzz_a_ : "(null)",                    \
                                fuzz_b_ ? fuzz_b_ : "(null)");                                     \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

/* A malloc'd copy of exactly n bytes (never NULL: a fuzz run out of memory aborts). */
static inline char *fuzz_dup(const void *p, size_t n)
{
        char *q = malloc(n ? n : 1);

        FUZZ_CHECK(q != NULL);
        if (n > 0)
                memcpy(q, p, n);
        return q;
}

/* A malloc'd NUL-terminated copy of the first n bytes, cut at the first NUL. */
static inline char *fuzz_strndup(const void *p, size_t n)
{
        const char *nul = memchr(p, '\0', n);
        size_t len = nul ? (size_t)(nul - (const char *)p) : n;
        char *q = malloc(len + 1);

        FUZZ_CHECK(q != NULL);
        memcpy(q, p, len);
        q[len] = '\0';
        return q;
}

/*
 * True when s[0..n) is well-formed UTF-8 (RFC 3629): no overlong forms, no
 * surrogates, nothing above U+10FFFF, no sequence cut short.
 */
static inline bool fuzz_utf8_valid(const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;

        while (i < n) {
                unsigned char c = p[i];
                size_t need, k;
                uint32_t cp;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf) {
                        need = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        need = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        need = 3;
                        cp = c & 0x07;
                } else {
                        return false;
                }
                if (n - i <= need)
                        return false;
                for (k = 1; k <= need; k++) {
                        if ((p[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i + k] & 0x3f);
                }
                if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10ffff ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += need + 1;
        }
        return true;
}

/* splitmix64: input bytes in, a reproducible stream of numbers out. */
struct fuzz_rng {
        uint64_t state;
};

static inline uint64_t fuzz_rng_next(struct fuzz_rng *r)
{
        uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* A number in [lo, hi]. */
static inline size_t fuzz_rng_range(struct fuzz_rng *r, size_t lo, size_t hi)
{
        return lo + (size_t)(fuzz_rng_next(r) % (uint64_t)(hi - lo + 1));
}

#endif /* FERRY_FUZZ_COMMON_H */
