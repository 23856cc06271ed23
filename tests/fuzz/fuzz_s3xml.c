/*
 * fuzz_s3xml.c — libFuzzer target for the parser of S3's XML answers
 * (daemon/s3xml.c), which reads what an object store (or anything at
 * AWS_ENDPOINT_URL) sends back to ferryd.
 *
 * Input: the body of an answer, parsed from an exactly sized copy. Checked:
 * a failure leaves a sentence; a success keeps its caps (at most
 * S3XML_PAGE_ENTRIES entries, each with a key, no value longer than
 * S3XML_TEXT_MAX); nothing leaks (s3xml_page_free whatever the outcome).
 */
#include "s3xml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct s3xml_page page;
        char err[256];
        char *copy = malloc(size ? size : 1);
        size_t i;
        int rc;

        if (copy == NULL)
                return 0;
        memcpy(copy, data, size);
        err[0] = '\0';
        rc = s3xml_parse(copy, size, &page, err, sizeof(err));
        if (rc != 0) {
                FUZZ_CHECK(rc == -1);
                FUZZ_CHECK(err[0] != '\0');
        } else {
                FUZZ_CHECK(page.n <= S3XML_PAGE_ENTRIES);
                FUZZ_CHECK(page.n <= page.cap || page.cap == 0);
                for (i = 0; i < page.n; i++) {
                        FUZZ_CHECK(page.objects[i].key != NULL);
                        FUZZ_CHECK(strlen(page.objects[i].key) <= S3XML_TEXT_MAX);
                        FUZZ_CHECK(page.objects[i].etag == NULL ||
                                   strlen(page.objects[i].etag) <= S3XML_TEXT_MAX);
                }
                FUZZ_CHECK(page.next_token == NULL || strlen(page.next_token) <= S3XML_TEXT_MAX);
                FUZZ_CHECK(strlen(page.code) < sizeof(page.code));
        }
        s3xml_page_free(&page);
        free(copy);
        return 0;
}
