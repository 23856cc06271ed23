/* check.h — value-printing assertions for ferry's C tests. */
#ifndef FERRY_CHECK_H
#define FERRY_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
                        check_failures++;                                                          \
                }                                                                                  \
        } while (0)

#define CHECK_INT(a, b)                                                                            \
        do {                                                                                       \
                long long check_a_ = (long long)(a), check_b_ = (long long)(b);                    \
                if (check_a_ != check_b_) {                                                        \
                        fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,        \
                                __LINE__, #a, #b, check_a_, check_b_);                             \
                        check_failures++;                                                          \
                }                                                                                  \
        } while (0)

#define CHECK_STR(a, b)                                                                            \
        do {                                                                                       \
                const char *check_a_ = (a), *check_b_ = (b);                                       \
                if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0) {     \
                        fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,    \
                                __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                  \
                                check_b_ ? check_b_ : "(null)");                                   \
                        check_failures++;                                                          \
                }                                                                                  \
        } while (0)

/* Print the summary line and return the exit status for main(). */
#define CHECK_DONE(name)                                                                           \
        (fprintf(stderr, "%s: %s (%d failed checks)\n", name,                                      \
                 check_failures ? "FAILED" : "passed", check_failures),                            \
         check_failures ? 1 : 0)

#endif
