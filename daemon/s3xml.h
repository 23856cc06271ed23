/*
 * s3xml.h — the XML answers of S3's REST API, parsed with expat: a page of
 * ListObjectsV2 (ListBucketResult), a page of ListObjectVersions
 * (ListVersionsResult), GetBucketVersioning (VersioningConfiguration), and
 * an error document (Error). Pure code: no I/O.
 *
 * The parser trusts nothing: a document type declaration (and so any entity)
 * is refused, element text is capped (S3 keys are at most 1024 bytes; other
 * values far less), so are nesting and the entries of one page. Anything
 * else is an error with one sentence, never a crash.
 */
#ifndef FERRY_S3XML_H
#define FERRY_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define S3XML_TEXT_MAX 4096      /* longest element text kept */
#define S3XML_PAGE_ENTRIES 10000 /* S3 sends at most 1000 entries a page */

enum s3xml_kind {
        S3XML_UNKNOWN,    /* a well-formed document of another kind */
        S3XML_LIST_V2,    /* ListBucketResult */
        S3XML_VERSIONS,   /* ListVersionsResult */
        S3XML_VERSIONING, /* VersioningConfiguration */
        S3XML_ERROR,      /* Error */
};

struct s3xml_object {
        char *key;        /* as S3 sends it (UTF-8) */
        char *etag;       /* with its quotes, as sent; NULL if absent */
        int64_t size;     /* -1 if absent or not a number */
        char *version_id; /* ListObjectVersions only; NULL otherwise */
        bool is_latest;   /* ListObjectVersions: IsLatest */
};

struct s3xml_page {
        enum s3xml_kind kind;
        struct s3xml_object *objects; /* Contents / Version entries, in document order */
        size_t n, cap;
        size_t delete_markers; /* ListObjectVersions: DeleteMarker entries (skipped) */
        bool truncated;        /* IsTruncated */
        char *next_token;      /* NextContinuationToken (V2) */
        char *next_key_marker; /* NextKeyMarker (versions) */
        char *next_version_id_marker;
        char status[32];   /* VersioningConfiguration/Status: "", "Enabled", "Suspended" */
        char code[64];     /* Error/Code */
        char message[256]; /* Error/Message */
};

/*
 * Parse `len` bytes of XML into *page (zeroed first; free it with
 * s3xml_page_free() whatever the outcome). Return 0, or -1 with a sentence in
 * err (malformed XML, a DOCTYPE, a value over its cap, too many entries,
 * out of memory).
 */
int s3xml_parse(const char *xml, size_t len, struct s3xml_page *page, char *err, size_t errlen);
void s3xml_page_free(struct s3xml_page *page);

#endif
