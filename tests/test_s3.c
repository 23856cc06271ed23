/*
 * test_s3.c — the S3 client's pure parts: S3's XML answers (s3xml.c) including
 * hostile ones, the settings as the AWS tools read them, URIs, URLs and the
 * logical paths listed keys take.
 */
#include "s3.h"
#include "s3xml.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ferry_base.h"

static char tmpdir[] = "/tmp/ferry-test-s3-XXXXXX";

/* ---- XML ---- */

static void test_list_v2(void)
{
        static const char xml[] =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            "<Name>b</Name><Prefix>data/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
            "<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/"
            "wm36Hy4vbOwM=</NextContinuationToken>"
            "<Contents><Key>data/a &amp; b.txt</Key><LastModified>2009-10-12T17:50:30.000Z"
            "</LastModified><ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>"
            "<Size>434234</Size><StorageClass>STANDARD</StorageClass></Contents>"
            "<Contents><Key>data/sub/</Key><ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag>"
            "<Size>0</Size></Contents></ListBucketResult>";
        struct s3xml_page p;
        char err[256];

        CHECK_INT(s3xml_parse(xml, strlen(xml), &p, err, sizeof(err)), 0);
        CHECK_INT(p.kind, S3XML_LIST_V2);
        CHECK(p.truncated);
        CHECK_STR(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
        CHECK_INT(p.n, 2);
        if (p.n == 2) {
                CHECK_STR(p.objects[0].key, "data/a & b.txt");
                CHECK_STR(p.objects[0].etag, "\"fba9dede5f27731c9771645a39863328\"");
                CHECK_INT(p.objects[0].size, 434234);
                CHECK(p.objects[0].version_id == NULL);
                CHECK_STR(p.objects[1].key, "data/sub/");
                CHECK_INT(p.objects[1].size, 0);
        }
        s3xml_page_free(&p);
}

static void test_versions(void)
{
        static const char xml[] =
            "<ListVersionsResult><Name>b</Name><Prefix>d/</Prefix><KeyMarker></KeyMarker>"
            "<IsTruncated>true</IsTruncated><NextKeyMarker>d/b</NextKeyMarker>"
            "<NextVersionIdMarker>v9</NextVersionIdMarker>"
            "<Version><Key>d/a</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest>"
            "<ETag>\"e2\"</ETag><Size>5</Size></Version>"
            "<Version><Key>d/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>"
            "<ETag>\"e1\"</ETag><Size>4</Size></Version>"
            "<DeleteMarker><Key>d/b</Key><VersionId>v9</VersionId><IsLatest>true</IsLatest>"
            "</DeleteMarker></ListVersionsResult>";
        struct s3xml_page p;
        char err[256];

        CHECK_INT(s3xml_parse(xml, strlen(xml), &p, err, sizeof(err)), 0);
        CHECK_INT(p.kind, S3XML_VERSIONS);
        CHECK(p.truncated);
        CHECK_STR(p.next_key_marker, "d/b");
        CHECK_STR(p.next_version_id_marker, "v9");
        CHECK_INT(p.n, 2);
        CHECK_INT(p.delete_markers, 1);
        if (p.n == 2) {
                CHECK_STR(p.objects[0].version_id, "v2");
                CHECK(p.objects[0].is_latest);
                CHECK(!p.objects[1].is_latest);
        }
        s3xml_page_free(&p);
}

static void test_other_documents(void)
{
        static const char err_xml[] =
            "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist"
            "</Message><StringToSign>lots of text that is not kept</StringToSign></Error>";
        static const char versioning[] =
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            "<Status>Enabled</Status></VersioningConfiguration>";
        static const char never[] = "<VersioningConfiguration/>";
        struct s3xml_page p;
        char err[256];

        CHECK_INT(s3xml_parse(err_xml, strlen(err_xml), &p, err, sizeof(err)), 0);
        CHECK_INT(p.kind, S3XML_ERROR);
        CHECK_STR(p.code, "NoSuchBucket");
        CHECK_STR(p.message, "The specified bucket does not exist");
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse(versioning, strlen(versioning), &p, err, sizeof(err)), 0);
        CHECK_INT(p.kind, S3XML_VERSIONING);
        CHECK_STR(p.status, "Enabled");
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse(never, strlen(never), &p, err, sizeof(err)), 0);
        CHECK_STR(p.status, "");
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse("<html><body>hi</body></html>", 28, &p, err, sizeof(err)), 0);
        CHECK_INT(p.kind, S3XML_UNKNOWN);
        s3xml_page_free(&p);
}

/* Hostile or broken answers: an error with a sentence, never a crash. */
static void test_hostile(void)
{
        static const char bomb[] =
            "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b "
            "\"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><ListBucketResult><Contents><Key>&b;</Key>"
            "</Contents></ListBucketResult>";
        static const char nokey[] =
            "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>";
        struct s3xml_page p;
        char err[256], *big;
        size_t i, n;

        CHECK_INT(s3xml_parse(bomb, strlen(bomb), &p, err, sizeof(err)), -1);
        CHECK(strstr(err, "document type") != NULL);
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse("<ListBucketResult><Contents>", 28, &p, err, sizeof(err)), -1);
        CHECK(strstr(err, "malformed XML") != NULL);
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse("", 0, &p, err, sizeof(err)), -1);
        s3xml_page_free(&p);
        CHECK_INT(s3xml_parse(nokey, strlen(nokey), &p, err, sizeof(err)), -1);
        CHECK(strstr(err, "no Key") != NULL);
        s3xml_page_free(&p);

        /* A key longer than any S3 value. */
        n = S3XML_TEXT_MAX + 200;
        big = malloc(n + 100);
        if (big == NULL)
                return;
        strcpy(big, "<ListBucketResult><Contents><Key>");
        for (i = strlen(big); i < n; i++)
                big[i] = 'k';
        strcpy(big + n, "</Key></Contents></ListBucketResult>");
        CHECK_INT(s3xml_parse(big, strlen(big), &p, err, sizeof(err)), -1);
        CHECK(strstr(err, "longer than any S3 value") != NULL);
        s3xml_page_free(&p);
        free(big);

        /* More entries in one page than S3 ever sends. */
        {
                static const char entry[] = "<Contents><Key>k</Key></Contents>";
                char *w;

                n = (S3XML_PAGE_ENTRIES + 1) * (sizeof(entry) - 1) + 64;
                big = malloc(n);
                if (big == NULL)
                        return;
                w = big + sprintf(big, "<ListBucketResult>");
                for (i = 0; i <= S3XML_PAGE_ENTRIES; i++) {
                        memcpy(w, entry, sizeof(entry) - 1);
                        w += sizeof(entry) - 1;
                }
                strcpy(w, "</ListBucketResult>");
                CHECK_INT(s3xml_parse(big, strlen(big), &p, err, sizeof(err)), -1);
                CHECK(strstr(err, "more entries") != NULL);
                s3xml_page_free(&p);
                free(big);
        }

        /* Deep nesting. */
        big = malloc(64 * 8 + 64);
        if (big == NULL)
                return;
        big[0] = '\0';
        for (i = 0; i < 64; i++)
                strcat(big, "<a>");
        CHECK_INT(s3xml_parse(big, strlen(big), &p, err, sizeof(err)), -1);
        s3xml_page_free(&p);
        free(big);
}

/* ---- settings ---- */

static const char *fake_env[32][2];

static const char *env_lookup(const char *name)
{
        int i;

        for (i = 0; i < 32 && fake_env[i][0] != NULL; i++)
                if (strcmp(fake_env[i][0], name) == 0)
                        return fake_env[i][1];
        return NULL;
}

static void set_env(const char *const *pairs)
{
        int i;

        memset(fake_env, 0, sizeof(fake_env));
        for (i = 0; pairs[2 * i] != NULL && i < 31; i++) {
                fake_env[i][0] = pairs[2 * i];
                fake_env[i][1] = pairs[2 * i + 1];
        }
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");

        CHECK(f != NULL);
        if (f != NULL) {
                fputs(text, f);
                fclose(f);
        }
}

static void test_settings(void)
{
        struct s3_settings st;
        char aws[512], path[600];
        static const char *const env_creds[] = {"AWS_ACCESS_KEY_ID",
                                                "AK",
                                                "AWS_SECRET_ACCESS_KEY",
                                                "SK",
                                                "AWS_SESSION_TOKEN",
                                                "TOK",
                                                "AWS_DEFAULT_REGION",
                                                "eu-west-3",
                                                "AWS_ENDPOINT_URL",
                                                "http://127.0.0.1:9/",
                                                "AWS_PROFILE",
                                                "p",
                                                NULL};
        static const char *const none[] = {NULL};
        static const char *const profile[] = {"AWS_PROFILE", "p", NULL};
        static const char *const s3_endpoint[] = {"AWS_PROFILE",
                                                  "p",
                                                  "AWS_ENDPOINT_URL_S3",
                                                  "https://s3.example",
                                                  "AWS_ENDPOINT_URL",
                                                  "http://other",
                                                  "AWS_REGION",
                                                  "ap-south-1",
                                                  NULL};
        static const char *const missing[] = {"AWS_PROFILE", "ghost", NULL};
        static const char *const files[] = {"AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/c",
                                            "AWS_CONFIG_FILE", "/nonexistent/f", NULL};

        snprintf(aws, sizeof(aws), "%s/.aws", tmpdir);
        CHECK_INT(mkdir(aws, 0700), 0);
        snprintf(path, sizeof(path), "%s/credentials", aws);
        write_file(path, "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = "
                         "DEFSECRET\n\n[p]\naws_access_key_id=PK \naws_secret_access_key = PS\n");
        snprintf(path, sizeof(path), "%s/config", aws);
        write_file(path, "[default]\nregion = us-west-2\n[profile p]\nregion = eu-central-1\n"
                         "endpoint_url = http://minio:9000/\ns3 =\n  addressing_style = path\n"
                         "[profile only-config]\naws_access_key_id = CK\n"
                         "aws_secret_access_key = CS\n");

        /* The environment beats the files; the endpoint loses its trailing '/'. */
        set_env(env_creds);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK_STR(st.access_key, "AK");
        CHECK_STR(st.secret_key, "SK");
        CHECK_STR(st.session_token, "TOK");
        CHECK_STR(st.region, "eu-west-3");
        CHECK_STR(st.endpoint, "http://127.0.0.1:9");
        CHECK_STR(st.problem, "");
        CHECK(strstr(st.source, "AWS_ACCESS_KEY_ID") != NULL);
        CHECK(strstr(st.source, "SK") == NULL);

        /* The default profile: credentials file, region from the config file. */
        set_env(none);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK_STR(st.access_key, "DEF");
        CHECK_STR(st.region, "us-west-2");
        CHECK_STR(st.endpoint, "");
        CHECK(strstr(st.source, "profile \"default\"") != NULL);

        /* A named profile: "[p]" in credentials, "[profile p]" in config. */
        set_env(profile);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK_STR(st.access_key, "PK");
        CHECK_STR(st.secret_key, "PS");
        CHECK_STR(st.region, "eu-central-1");
        CHECK_STR(st.endpoint, "http://minio:9000");

        /* AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL and the profile; AWS_REGION wins. */
        set_env(s3_endpoint);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK_STR(st.endpoint, "https://s3.example");
        CHECK_STR(st.region, "ap-south-1");

        /* Credentials only in the config file. */
        {
                static const char *const only[] = {"AWS_PROFILE", "only-config", NULL};

                set_env(only);
                s3_settings_load(&st, env_lookup, tmpdir);
                CHECK_STR(st.access_key, "CK");
                CHECK_STR(st.region, "us-east-1");
        }

        /* A profile that is nowhere, and no credentials at all. */
        set_env(missing);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK(!st.have_credentials);
        CHECK(strstr(st.problem, "\"ghost\"") != NULL);
        set_env(files);
        s3_settings_load(&st, env_lookup, tmpdir);
        CHECK(!st.have_credentials);
        CHECK(strstr(st.problem, "no AWS credentials") != NULL);
        CHECK(strstr(st.problem, "/nonexistent/c") != NULL);
        s3_settings_wipe(&st);
        CHECK_STR(st.secret_key, "");
}

/* ---- URIs, URLs, logical paths ---- */

static void test_uris_and_urls(void)
{
        struct s3_settings st;
        char bucket[256];
        const char *prefix = NULL;
        char *s;

        CHECK_INT(s3_uri_parse("s3://bkt/data/x", bucket, sizeof(bucket), &prefix), 0);
        CHECK_STR(bucket, "bkt");
        CHECK_STR(prefix, "data/x");
        CHECK_INT(s3_uri_parse("S3://bkt", bucket, sizeof(bucket), &prefix), 0);
        CHECK_STR(prefix, "");
        CHECK_INT(s3_uri_parse("s3:///key", bucket, sizeof(bucket), &prefix), FERRY_EINVAL);
        CHECK_INT(s3_uri_parse("s3://b?x/k", bucket, sizeof(bucket), &prefix), FERRY_EINVAL);
        CHECK_INT(s3_uri_parse("gs://b/k", bucket, sizeof(bucket), &prefix), FERRY_EINVAL);
        CHECK(s3_uri_is_s3("s3://b"));
        CHECK(!s3_uri_is_s3("https://b"));

        s = s3_encode("a b/c~d+e=f&é", true);
        CHECK_STR(s, "a%20b/c~d%2Be%3Df%26%C3%A9");
        free(s);
        s = s3_encode("a/b", false);
        CHECK_STR(s, "a%2Fb");
        free(s);

        memset(&st, 0, sizeof(st));
        snprintf(st.region, sizeof(st.region), "eu-west-1");
        s = s3_url(&st, "bkt", "dir/a b.txt", NULL);
        CHECK_STR(s, "https://bkt.s3.eu-west-1.amazonaws.com/dir/a%20b.txt");
        free(s);
        s = s3_url(&st, "my.bucket", NULL, "list-type=2&prefix=d%2F");
        CHECK_STR(s, "https://s3.eu-west-1.amazonaws.com/my.bucket/?list-type=2&prefix=d%2F");
        free(s);
        snprintf(st.endpoint, sizeof(st.endpoint), "http://127.0.0.1:4568");
        s = s3_url(&st, "bkt", "k", "versionId=3");
        CHECK_STR(s, "http://127.0.0.1:4568/bkt/k?versionId=3");
        free(s);

        /* The logical path a key takes. */
        s = s3_logical_path("data/", "data/sub/a.txt", NULL);
        CHECK_STR(s, "sub/a.txt");
        free(s);
        s = s3_logical_path("data", "data/a.txt", "in");
        CHECK_STR(s, "in/a.txt");
        free(s);
        s = s3_logical_path("data/a.txt", "data/a.txt", NULL);
        CHECK_STR(s, "a.txt");
        free(s);
        s = s3_logical_path("", "top.bin", NULL);
        CHECK_STR(s, "top.bin");
        free(s);
        CHECK(s3_logical_path("data", "database.csv", NULL) == NULL);
        CHECK(s3_logical_path("data/", "data/folder/", NULL) == NULL);
}

int main(void)
{
        if (mkdtemp(tmpdir) == NULL) {
                fprintf(stderr, "test_s3: mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        test_list_v2();
        test_versions();
        test_other_documents();
        test_hostile();
        test_settings();
        test_uris_and_urls();
        {
                char cmd[600];

                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
                if (system(cmd) != 0)
                        check_failures++;
        }
        return CHECK_DONE("test_s3");
}
