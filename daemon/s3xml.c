/* s3xml.c — S3's XML answers, parsed with expat (see s3xml.h). */
#include "s3xml.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#define S3XML_DEPTH_MAX 32

/* Which element's text is being collected. */
enum s3xml_field {
        F_NONE,
        F_TRUNCATED,
        F_NEXT_TOKEN,
        F_NEXT_KEY,
        F_NEXT_VERSION,
        F_KEY,
        F_ETAG,
        F_SIZE,
        F_VERSION_ID,
        F_IS_LATEST,
        F_STATUS,
        F_CODE,
        F_MESSAGE,
};

struct s3xml_state {
        XML_Parser parser;
        struct s3xml_page *page;
        int depth;
        bool in_entry; /* inside Contents or Version (depth 2) */
        enum s3xml_field field;
        char text[S3XML_TEXT_MAX + 1];
        size_t text_len;
        char err[256];
        bool failed;
};

static void s3xml_fail(struct s3xml_state *s, const char *msg)
{
        if (!s->failed) {
                s->failed = true;
                snprintf(s->err, sizeof(s->err), "%s", msg);
        }
        XML_StopParser(s->parser, XML_FALSE);
}

static enum s3xml_field s3xml_field_of(struct s3xml_state *s, const char *name)
{
        enum s3xml_kind k = s->page->kind;

        if (s->depth == 2 && !s->in_entry) {
                if (k == S3XML_LIST_V2 || k == S3XML_VERSIONS) {
                        if (strcmp(name, "IsTruncated") == 0)
                                return F_TRUNCATED;
                        if (k == S3XML_LIST_V2 && strcmp(name, "NextContinuationToken") == 0)
                                return F_NEXT_TOKEN;
                        if (k == S3XML_VERSIONS && strcmp(name, "NextKeyMarker") == 0)
                                return F_NEXT_KEY;
                        if (k == S3XML_VERSIONS && strcmp(name, "NextVersionIdMarker") == 0)
                                return F_NEXT_VERSION;
                } else if (k == S3XML_VERSIONING && strcmp(name, "Status") == 0) {
                        return F_STATUS;
                } else if (k == S3XML_ERROR) {
                        if (strcmp(name, "Code") == 0)
                                return F_CODE;
                        if (strcmp(name, "Message") == 0)
                                return F_MESSAGE;
                }
                return F_NONE;
        }
        if (s->depth == 3 && s->in_entry) {
                if (strcmp(name, "Key") == 0)
                        return F_KEY;
                if (strcmp(name, "ETag") == 0)
                        return F_ETAG;
                if (strcmp(name, "Size") == 0)
                        return F_SIZE;
                if (k == S3XML_VERSIONS && strcmp(name, "VersionId") == 0)
                        return F_VERSION_ID;
                if (k == S3XML_VERSIONS && strcmp(name, "IsLatest") == 0)
                        return F_IS_LATEST;
        }
        return F_NONE;
}

static void XMLCALL s3xml_start_cb(void *data, const XML_Char *name, const XML_Char **attrs)
{
        struct s3xml_state *s = data;
        struct s3xml_page *p = s->page;

        if (s->failed)
                return;
        if (++s->depth > S3XML_DEPTH_MAX) {
                s3xml_fail(s, "the XML nests deeper than any S3 answer");
                return;
        }
        if (s->depth == 1) {
                p->kind = strcmp(name, "ListBucketResult") == 0          ? S3XML_LIST_V2
                          : strcmp(name, "ListVersionsResult") == 0      ? S3XML_VERSIONS
                          : strcmp(name, "VersioningConfiguration") == 0 ? S3XML_VERSIONING
                          : strcmp(name, "Error") == 0                   ? S3XML_ERROR
                                                                         : S3XML_UNKNOWN;
                return;
        }
        if (s->depth == 2 && ((p->kind == S3XML_LIST_V2 && strcmp(name, "Contents") == 0) ||
                              (p->kind == S3XML_VERSIONS && strcmp(name, "Version") == 0))) {
                struct s3xml_object *o;

                if (p->n >= S3XML_PAGE_ENTRIES) {
                        s3xml_fail(s, "one listing page holds more entries than S3 sends");
                        return;
                }
                if (p->n == p->cap) {
                        size_t cap = p->cap ? p->cap * 2 : 64;
                        struct s3xml_object *grown = realloc(p->objects, cap * sizeof(*grown));

                        if (grown == NULL) {
                                s3xml_fail(s, "out of memory");
                                return;
                        }
                        p->objects = grown;
                        p->cap = cap;
                }
                o = &p->objects[p->n++];
                memset(o, 0, sizeof(*o));
                o->size = -1;
                s->in_entry = true;
                return;
        }
        if (s->depth == 2 && p->kind == S3XML_VERSIONS && strcmp(name, "DeleteMarker") == 0)
                p->delete_markers++;
        s->field = s3xml_field_of(s, name);
        s->text_len = 0;
}

static void XMLCALL s3xml_text_cb(void *data, const XML_Char *text, int len)
{
        struct s3xml_state *s = data;

        if (s->failed || s->field == F_NONE || len <= 0)
                return;
        if (s->text_len + (size_t)len > S3XML_TEXT_MAX) {
                s3xml_fail(s, "an element of the XML is longer than any S3 value");
                return;
        }
        memcpy(s->text + s->text_len, text, (size_t)len);
        s->text_len += (size_t)len;
}

/* The collected text as a new string, or NULL (failure recorded). */
static char *s3xml_take(struct s3xml_state *s)
{
        char *v = malloc(s->text_len + 1);

        if (v == NULL) {
                s3xml_fail(s, "out of memory");
                return NULL;
        }
        memcpy(v, s->text, s->text_len);
        v[s->text_len] = '\0';
        return v;
}

static void s3xml_set(struct s3xml_state *s, char **slot)
{
        free(*slot);
        *slot = s3xml_take(s);
}

static int64_t s3xml_size(const char *t)
{
        char *end;
        long long v;

        if (*t < '0' || *t > '9')
                return -1;
        errno = 0;
        v = strtoll(t, &end, 10);
        return errno != 0 || *end != '\0' ? -1 : (int64_t)v;
}

static void XMLCALL s3xml_end_cb(void *data, const XML_Char *name)
{
        struct s3xml_state *s = data;
        struct s3xml_page *p = s->page;
        struct s3xml_object *o = p->n > 0 ? &p->objects[p->n - 1] : NULL;

        if (s->failed)
                return;
        if (s->field != F_NONE) {
                s->text[s->text_len] = '\0';
                switch (s->field) {
                case F_TRUNCATED:
                        p->truncated = strcmp(s->text, "true") == 0;
                        break;
                case F_NEXT_TOKEN:
                        s3xml_set(s, &p->next_token);
                        break;
                case F_NEXT_KEY:
                        s3xml_set(s, &p->next_key_marker);
                        break;
                case F_NEXT_VERSION:
                        s3xml_set(s, &p->next_version_id_marker);
                        break;
                case F_KEY:
                        s3xml_set(s, &o->key);
                        break;
                case F_ETAG:
                        s3xml_set(s, &o->etag);
                        break;
                case F_SIZE:
                        o->size = s3xml_size(s->text);
                        break;
                case F_VERSION_ID:
                        s3xml_set(s, &o->version_id);
                        break;
                case F_IS_LATEST:
                        o->is_latest = strcmp(s->text, "true") == 0;
                        break;
                case F_STATUS:
                        snprintf(p->status, sizeof(p->status), "%s", s->text);
                        break;
                case F_CODE:
                        snprintf(p->code, sizeof(p->code), "%s", s->text);
                        break;
                case F_MESSAGE:
                        snprintf(p->message, sizeof(p->message), "%s", s->text);
                        break;
                case F_NONE:
                        break;
                }
                s->field = F_NONE;
        }
        if (s->depth == 2 && s->in_entry) {
                s->in_entry = false;
                if (o != NULL && o->key == NULL && !s->failed)
                        s3xml_fail(s, "a listing entry has no Key");
        }
        s->depth--;
}

static void XMLCALL s3xml_doctype_cb(void *data, const XML_Char *name, const XML_Char *sysid,
                                     const XML_Char *pubid, int has_internal_subset)
{
        /* S3 never sends one; a document that does may be an entity bomb. */
        s3xml_fail(data, "the XML declares a document type, which S3 never does");
}

int s3xml_parse(const char *xml, size_t len, struct s3xml_page *page, char *err, size_t errlen)
{
        struct s3xml_state *s;
        int rc = 0;

        memset(page, 0, sizeof(*page));
        if (len > (size_t)INT32_MAX) {
                snprintf(err, errlen, "the XML is too large");
                return -1;
        }
        s = calloc(1, sizeof(*s));
        if (s == NULL || (s->parser = XML_ParserCreate("UTF-8")) == NULL) {
                free(s);
                snprintf(err, errlen, "out of memory");
                return -1;
        }
        s->page = page;
        XML_SetUserData(s->parser, s);
        XML_SetElementHandler(s->parser, s3xml_start_cb, s3xml_end_cb);
        XML_SetCharacterDataHandler(s->parser, s3xml_text_cb);
        XML_SetStartDoctypeDeclHandler(s->parser, s3xml_doctype_cb);
        if (XML_Parse(s->parser, xml, (int)len, XML_TRUE) == XML_STATUS_ERROR || s->failed) {
                if (s->failed)
                        snprintf(err, errlen, "%s", s->err);
                else
                        snprintf(err, errlen, "malformed XML (line %lu: %s)",
                                 (unsigned long)XML_GetCurrentLineNumber(s->parser),
                                 XML_ErrorString(XML_GetErrorCode(s->parser)));
                rc = -1;
        }
        XML_ParserFree(s->parser);
        free(s);
        return rc;
}

void s3xml_page_free(struct s3xml_page *page)
{
        size_t i;

        for (i = 0; i < page->n; i++) {
                free(page->objects[i].key);
                free(page->objects[i].etag);
                free(page->objects[i].version_id);
        }
        free(page->objects);
        free(page->next_token);
        free(page->next_key_marker);
        free(page->next_version_id_marker);
        memset(page, 0, sizeof(*page));
}
