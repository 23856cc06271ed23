/*
 * artifact.c — libferry's artifact builder: names, versions, labels and
 * metadata checked by proto's rules as they are given; assets (files,
 * directories walked in name order, descriptors, in-memory data, remote
 * URIs) kept in order with the merge rule (a logical path appears once; a
 * later asset replaces an earlier one only with `overwrite`), indexed by
 * logical path so that a version of 100,000 files builds in linear time.
 * Files are opened when the version is logged (log.c), by the caller, with
 * the caller's rights.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static void asset_clear(struct asset *as)
{
        free(as->logical_path);
        free(as->path);
        free(as->uri);
        free(as->sync_prefix);
        cJSON_Delete(as->meta);
        if (as->fd >= 0)
                close(as->fd);
        memset(as, 0, sizeof(*as));
        as->fd = -1;
}

/* A version string for a message: control characters escaped, cut whole. */
static const char *shown_version(const char *v)
{
        static __thread char buf[128];

        proto_sanitize(buf, sizeof(buf), v, strlen(v));
        return buf;
}

static int artifact_nomem(struct ferry_artifact *a)
{
        return client_artifact_fail(a, FERRY_ENOMEM, "out of memory");
}

/* Types, aliases and tags: 1..PROTO_NAME_MAX bytes without control characters. */
static int artifact_check_label(struct ferry_artifact *a, const char *s, const char *what)
{
        size_t n = s ? strlen(s) : 0;
        const unsigned char *p;

        if (n == 0)
                return client_artifact_fail(a, FERRY_EINVAL, "%s must not be empty", what);
        if (n > PROTO_NAME_MAX)
                return client_artifact_fail(a, FERRY_EINVAL,
                                            "%s is %zu bytes long; the limit is %d", what, n,
                                            PROTO_NAME_MAX);
        for (p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return client_artifact_fail(a, FERRY_EINVAL,
                                                    "%s may not contain control characters", what);
        return 0;
}

static const char *json_kind(const cJSON *v)
{
        if (cJSON_IsArray(v))
                return "an array";
        if (cJSON_IsString(v))
                return "a string";
        if (cJSON_IsNumber(v))
                return "a number";
        if (cJSON_IsBool(v))
                return "a boolean";
        return "null";
}

/* Parse `json` (NULL: none) that must be one JSON object into *out. */
static int artifact_parse_object(struct ferry_artifact *a, const char *json, const char *what,
                                 cJSON **out)
{
        cJSON *v;

        *out = NULL;
        if (json == NULL)
                return 0;
        v = cJSON_ParseWithOpts(json, NULL, 1);
        if (v == NULL)
                return client_artifact_fail(a, FERRY_EINVAL, "%s is not valid JSON", what);
        if (!cJSON_IsObject(v)) {
                client_artifact_fail(a, FERRY_EINVAL, "%s must be a JSON object, not %s", what,
                                     json_kind(v));
                cJSON_Delete(v);
                return FERRY_EINVAL;
        }
        *out = v;
        return 0;
}

int ferry_artifact_new(struct ferry_artifact **out, const char *name, const char *type)
{
        struct ferry_artifact *a;

        if (out == NULL)
                return FERRY_EINVAL;
        *out = NULL;
        a = calloc(1, sizeof(*a));
        if (a == NULL)
                return FERRY_ENOMEM;
        a->aliases = cJSON_CreateArray();
        a->tags = cJSON_CreateArray();
        if (a->aliases == NULL || a->tags == NULL) {
                ferry_artifact_free(a);
                return FERRY_ENOMEM;
        }
        *out = a;
        if (proto_validate_name(name, "artifact name", a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        if (type != NULL && artifact_check_label(a, type, "artifact type") != 0)
                return FERRY_EINVAL;
        a->name = strdup(name);
        a->type = type ? strdup(type) : NULL;
        if (a->name == NULL || (type != NULL && a->type == NULL)) {
                free(a->name);
                a->name = NULL;
                return artifact_nomem(a);
        }
        return 0;
}

void ferry_artifact_free(struct ferry_artifact *artifact)
{
        size_t i;

        if (artifact == NULL)
                return;
        free(artifact->name);
        free(artifact->type);
        free(artifact->version);
        cJSON_Delete(artifact->aliases);
        cJSON_Delete(artifact->tags);
        cJSON_Delete(artifact->metadata);
        for (i = 0; i < artifact->nassets; i++)
                asset_clear(&artifact->assets[i]);
        free(artifact->assets);
        free(artifact->index);
        free(artifact);
}

const char *ferry_artifact_last_error(const struct ferry_artifact *artifact)
{
        return artifact ? artifact->err : "";
}

int ferry_artifact_set_version(struct ferry_artifact *artifact, const char *version)
{
        struct proto_semver sv;
        char *v = NULL;

        if (artifact == NULL)
                return FERRY_EINVAL;
        if (version != NULL) {
                if (proto_semver_parse(version, &sv) != 0)
                        return client_artifact_fail(
                            artifact, FERRY_EINVAL,
                            "version \"%s\" is not a strict semantic version "
                            "such as 1.2.0 or 1.0.0-rc.1",
                            shown_version(version));
                v = strdup(version);
                if (v == NULL)
                        return artifact_nomem(artifact);
        }
        free(artifact->version);
        artifact->version = v;
        return 0;
}

/* Append `s` to the string array `arr` unless it is already there. */
static int artifact_add_label(struct ferry_artifact *a, cJSON *arr, const char *s, const char *what)
{
        const cJSON *it;
        int rc;

        rc = artifact_check_label(a, s, what);
        if (rc != 0)
                return rc;
        cJSON_ArrayForEach(it, arr)
        {
                if (strcmp(it->valuestring, s) == 0)
                        return 0;
        }
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(s)))
                return artifact_nomem(a);
        return 0;
}

int ferry_artifact_add_alias(struct ferry_artifact *artifact, const char *alias)
{
        if (artifact == NULL)
                return FERRY_EINVAL;
        return artifact_add_label(artifact, artifact->aliases, alias, "alias");
}

int ferry_artifact_add_tag(struct ferry_artifact *artifact, const char *tag)
{
        if (artifact == NULL)
                return FERRY_EINVAL;
        return artifact_add_label(artifact, artifact->tags, tag, "version tag");
}

int ferry_artifact_set_metadata(struct ferry_artifact *artifact, const char *json_object)
{
        cJSON *meta;
        int rc;

        if (artifact == NULL)
                return FERRY_EINVAL;
        rc = artifact_parse_object(artifact, json_object, "artifact metadata", &meta);
        if (rc != 0)
                return rc;
        cJSON_Delete(artifact->metadata);
        artifact->metadata = meta;
        return 0;
}

/* ---- assets ---- */

static uint64_t path_hash(const char *s)
{
        uint64_t h = 1469598103934665603ULL;

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

/* The index slot of `lp`: 0 (absent) or the asset's index + 1. */
static size_t *artifact_slot(struct ferry_artifact *a, const char *lp)
{
        size_t i = (size_t)path_hash(lp) & a->index_mask;

        while (a->index[i] != 0 && strcmp(a->assets[a->index[i] - 1].logical_path, lp) != 0)
                i = (i + 1) & a->index_mask;
        return &a->index[i];
}

/* Room for `more` assets (and the index under half full). */
static int artifact_reserve(struct ferry_artifact *a, size_t more)
{
        size_t want = a->nassets + more, cap = a->cap ? a->cap : 8, icap, i;
        struct asset *grown;
        size_t *old = a->index, oldn = a->index ? a->index_mask + 1 : 0;

        if (want > a->cap) {
                while (cap < want)
                        cap *= 2;
                grown = realloc(a->assets, cap * sizeof(*grown));
                if (grown == NULL)
                        return artifact_nomem(a);
                a->assets = grown;
                a->cap = cap;
        }
        icap = oldn ? oldn : 16;
        while (icap < want * 2)
                icap *= 2;
        if (icap == oldn)
                return 0;
        a->index = calloc(icap, sizeof(*a->index));
        if (a->index == NULL) {
                a->index = old;
                return artifact_nomem(a);
        }
        a->index_mask = icap - 1;
        for (i = 0; i < oldn; i++)
                if (old[i] != 0)
                        *artifact_slot(a, a->assets[old[i] - 1].logical_path) = old[i];
        free(old);
        return 0;
}

/* A batch of new assets (distinct logical paths among themselves). */
struct batch {
        struct asset *v;
        size_t n, cap;
};

static void batch_free(struct batch *b)
{
        size_t i;

        for (i = 0; i < b->n; i++)
                asset_clear(&b->v[i]);
        free(b->v);
}

/* Append an asset to the batch (fields taken over). */
static int batch_add(struct ferry_artifact *a, struct batch *b, struct asset *as)
{
        if (b->n == b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 8;
                struct asset *grown = realloc(b->v, cap * sizeof(*grown));

                if (grown == NULL) {
                        asset_clear(as);
                        return artifact_nomem(a);
                }
                b->v = grown;
                b->cap = cap;
        }
        b->v[b->n++] = *as;
        return 0;
}

/*
 * Move the batch's assets into the artifact: a logical path already present
 * is FERRY_EEXIST (nothing moved) unless `overwrite`, when the new asset
 * takes the old one's place.
 */
static int artifact_merge(struct ferry_artifact *a, struct batch *b, bool overwrite)
{
        size_t i, *slot;
        int rc;

        if ((rc = artifact_reserve(a, b->n)) != 0)
                return rc;
        if (!overwrite) {
                for (i = 0; i < b->n; i++)
                        if (*artifact_slot(a, b->v[i].logical_path) != 0)
                                return client_artifact_fail(
                                    a, FERRY_EEXIST,
                                    "artifact \"%s\" already has an asset at "
                                    "\"%s\"; add it with overwrite to replace it",
                                    a->name, b->v[i].logical_path);
        }
        for (i = 0; i < b->n; i++) {
                slot = artifact_slot(a, b->v[i].logical_path);
                if (*slot != 0) {
                        asset_clear(&a->assets[*slot - 1]);
                        a->assets[*slot - 1] = b->v[i];
                } else {
                        a->assets[a->nassets] = b->v[i];
                        *slot = ++a->nassets;
                }
        }
        b->n = 0; /* taken over */
        return 0;
}

static int asset_init(struct ferry_artifact *a, struct asset *as, const char *logical_path,
                      bool overwrite, const cJSON *meta)
{
        memset(as, 0, sizeof(*as));
        as->fd = -1;
        as->overwrite = overwrite;
        if (proto_validate_logical_path(logical_path, a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        as->logical_path = strdup(logical_path);
        as->meta = meta ? cJSON_Duplicate(meta, 1) : NULL;
        if (as->logical_path == NULL || (meta != NULL && as->meta == NULL)) {
                asset_clear(as);
                return artifact_nomem(a);
        }
        return 0;
}

/* Turn the errno of a file system call on `path` into a code and a sentence. */
static int artifact_path_error(struct ferry_artifact *a, const char *path, int err)
{
        switch (err) {
        case ENOENT:
        case ENOTDIR:
                return client_artifact_fail(a, FERRY_ENOTFOUND, "%s does not exist", path);
        case EACCES:
        case EPERM:
                return client_artifact_fail(a, FERRY_EPERM, "cannot read %s: permission denied",
                                            path);
        case ENOMEM:
                return artifact_nomem(a);
        case ELOOP:
        case ENAMETOOLONG:
                return client_artifact_fail(a, FERRY_EINVAL, "cannot resolve %s: %s", path,
                                            strerror(err));
        default:
                return client_artifact_fail(a, FERRY_EIO, "cannot read %s: %s", path,
                                            strerror(err));
        }
}

/* Add the regular file `abs` (an absolute path) as `logical_path` to the batch. */
static int artifact_batch_file(struct ferry_artifact *a, struct batch *b, const char *abs,
                               const char *logical_path, bool overwrite, const cJSON *meta)
{
        struct asset as;
        int fd, rc;

        if ((rc = asset_init(a, &as, logical_path, overwrite, meta)) != 0)
                return rc;
        /* Refuse now what cannot be read when the version is logged. */
        fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                asset_clear(&as);
                return artifact_path_error(a, abs, errno);
        }
        close(fd);
        as.kind = ASSET_FILE;
        as.path = strdup(abs);
        if (as.path == NULL) {
                asset_clear(&as);
                return artifact_nomem(a);
        }
        return batch_add(a, b, &as);
}

/* "a/b" from `dir` and `name`, or `name` alone when `dir` is NULL or empty; NULL: no memory. */
static char *path_join(const char *dir, const char *name)
{
        char *s;

        if (dir == NULL || dir[0] == '\0')
                return strdup(name);
        if (asprintf(&s, "%s/%s", dir, name) < 0)
                return NULL;
        return s;
}

static int cmp_names(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

static int artifact_walk(struct ferry_artifact *a, struct batch *b, const char *dir,
                         const char *rel, const char *prefix, bool overwrite, const cJSON *meta);

/* Add one directory entry: recurse into directories, add regular files and links to them. */
static int artifact_walk_entry(struct ferry_artifact *a, struct batch *b, const char *dir,
                               const char *rel, const char *name, const char *prefix,
                               bool overwrite, const cJSON *meta)
{
        char real[PATH_MAX];
        char *abs, *crel = NULL, *lp = NULL;
        struct stat st;
        int rc = 0;

        abs = path_join(dir, name);
        crel = path_join(rel, name);
        if (abs == NULL || crel == NULL) {
                rc = artifact_nomem(a);
                goto out;
        }
        if (lstat(abs, &st) != 0) {
                rc = artifact_path_error(a, abs, errno);
                goto out;
        }
        if (S_ISDIR(st.st_mode)) {
                rc = artifact_walk(a, b, abs, crel, prefix, overwrite, meta);
                goto out;
        }
        if (S_ISLNK(st.st_mode)) {
                /* Links to files count; links to directories and dangling links do not. */
                if (stat(abs, &st) != 0 || !S_ISREG(st.st_mode))
                        goto out;
                if (realpath(abs, real) == NULL) {
                        rc = artifact_path_error(a, abs, errno);
                        goto out;
                }
        } else if (S_ISREG(st.st_mode)) {
                snprintf(real, sizeof(real), "%s", abs);
        } else {
                goto out; /* sockets, fifos, devices */
        }
        lp = path_join(prefix, crel);
        if (lp == NULL) {
                rc = artifact_nomem(a);
                goto out;
        }
        rc = artifact_batch_file(a, b, real, lp, overwrite, meta);
out:
        free(lp);
        free(crel);
        free(abs);
        return rc;
}

/* Add every regular file below `dir` (absolute) in name order; `rel` is its path so far. */
static int artifact_walk(struct ferry_artifact *a, struct batch *b, const char *dir,
                         const char *rel, const char *prefix, bool overwrite, const cJSON *meta)
{
        struct dirent *de;
        char **names = NULL, **grown;
        size_t n = 0, cap = 0, i;
        int rc = 0, err;
        DIR *d;

        d = opendir(dir);
        if (d == NULL)
                return artifact_path_error(a, dir, errno);
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (de == NULL) {
                        err = errno;
                        if (err != 0)
                                rc = artifact_path_error(a, dir, err);
                        break;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        grown = realloc(names, cap * sizeof(*names));
                        if (grown == NULL) {
                                rc = artifact_nomem(a);
                                break;
                        }
                        names = grown;
                }
                names[n] = strdup(de->d_name);
                if (names[n] == NULL) {
                        rc = artifact_nomem(a);
                        break;
                }
                n++;
        }
        closedir(d);
        if (rc == 0 && n > 1)
                qsort(names, n, sizeof(*names), cmp_names);
        for (i = 0; rc == 0 && i < n; i++)
                rc = artifact_walk_entry(a, b, dir, rel, names[i], prefix, overwrite, meta);
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return rc;
}

/* The base name of `path` as given (a file's path never ends with '/'). */
static const char *base_name(const char *path)
{
        const char *slash = strrchr(path, '/');

        return slash ? slash + 1 : path;
}

int ferry_artifact_add_file(struct ferry_artifact *artifact, const char *path,
                            const char *logical_path, int overwrite, const char *metadata_json)
{
        struct ferry_artifact *a = artifact;
        struct batch b = {0};
        char real[PATH_MAX];
        cJSON *meta = NULL;
        struct stat st;
        int rc;

        if (a == NULL)
                return FERRY_EINVAL;
        if (path == NULL || path[0] == '\0')
                return client_artifact_fail(a, FERRY_EINVAL,
                                            "the path of a file asset must not be empty");
        if (logical_path != NULL &&
            proto_validate_logical_path(logical_path, a->err, sizeof(a->err)) != 0)
                return FERRY_EINVAL;
        rc = artifact_parse_object(a, metadata_json, "asset metadata", &meta);
        if (rc != 0)
                return rc;
        if (realpath(path, real) == NULL || stat(real, &st) != 0) {
                rc = artifact_path_error(a, path, errno);
                goto out;
        }
        if (S_ISDIR(st.st_mode))
                rc = artifact_walk(a, &b, real, "", logical_path, overwrite, meta);
        else if (S_ISREG(st.st_mode))
                rc = artifact_batch_file(a, &b, real, logical_path ? logical_path : base_name(path),
                                         overwrite, meta);
        else
                rc = client_artifact_fail(a, FERRY_EINVAL,
                                          "%s is neither a regular file nor a directory", path);
        if (rc == 0)
                rc = artifact_merge(a, &b, overwrite);
out:
        batch_free(&b);
        cJSON_Delete(meta);
        return rc;
}

/* Add one asset (fields taken over by the artifact on success, cleared on failure). */
static int artifact_add_one(struct ferry_artifact *a, struct asset *as, bool overwrite)
{
        struct batch b = {0};
        int rc;

        if ((rc = batch_add(a, &b, as)) != 0)
                return rc;
        rc = artifact_merge(a, &b, overwrite);
        batch_free(&b);
        return rc;
}

/* The default logical path of a remote asset: the URI's last path segment, or "remote". */
static void remote_logical_path(const char *uri, char *out, size_t len)
{
        const char *p = strstr(uri, "://");
        const char *end, *seg;
        size_t n;

        if (p != NULL) {
                p = strchr(p + 3, '/'); /* skip the authority */
                if (p == NULL)
                        p = "";
        } else {
                p = uri;
        }
        end = p + strcspn(p, "?#");
        for (seg = end; seg > p && seg[-1] != '/'; seg--)
                ;
        n = (size_t)(end - seg);
        if (n > 0 && n < len) {
                memcpy(out, seg, n);
                out[n] = '\0';
                if (proto_validate_logical_path(out, NULL, 0) == 0)
                        return;
        }
        snprintf(out, len, "remote");
}

int ferry_artifact_add_remote(struct ferry_artifact *artifact, const char *uri,
                              const char *logical_path, int overwrite, const char *metadata_json)
{
        return ferry_artifact_add_remote_sync(artifact, uri, logical_path, overwrite, metadata_json,
                                              0);
}

int ferry_artifact_add_remote_sync(struct ferry_artifact *artifact, const char *uri,
                                   const char *logical_path, int overwrite,
                                   const char *metadata_json, int64_t max_synced_objects)
{
        const char *given = logical_path;
        char lp[PROTO_LOGICAL_PATH_MAX + 1];
        size_t n = uri ? strlen(uri) : 0;
        const unsigned char *p;
        struct asset as;
        cJSON *meta = NULL;
        int rc;

        if (artifact == NULL)
                return FERRY_EINVAL;
        if (max_synced_objects < 0 || max_synced_objects > FERRY_MAX_SYNCED_OBJECTS)
                return client_artifact_fail(artifact, FERRY_EINVAL,
                                            "max_synced_objects must be 1 to %d (0: do not sync)",
                                            FERRY_MAX_SYNCED_OBJECTS);
        if (n == 0 || n > FERRY_URI_MAX)
                return client_artifact_fail(artifact, FERRY_EINVAL,
                                            "a remote URI must be 1 to %d bytes long",
                                            FERRY_URI_MAX);
        if (!proto_utf8_valid(uri, n))
                return client_artifact_fail(artifact, FERRY_EINVAL, "a remote URI must be UTF-8");
        for (p = (const unsigned char *)uri; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return client_artifact_fail(
                            artifact, FERRY_EINVAL,
                            "remote URI may not contain control characters");
        if (logical_path == NULL) {
                remote_logical_path(uri, lp, sizeof(lp));
                logical_path = lp;
        }
        rc = artifact_parse_object(artifact, metadata_json, "asset metadata", &meta);
        if (rc == 0)
                rc = asset_init(artifact, &as, logical_path, overwrite, meta);
        cJSON_Delete(meta);
        if (rc != 0)
                return rc;
        as.kind = ASSET_REMOTE;
        as.uri = strdup(uri);
        /* Only s3:// is listed (by ferryd); other schemes stay one remote asset. */
        if (max_synced_objects > 0 && strncasecmp(uri, "s3://", 5) == 0) {
                as.sync_max = max_synced_objects;
                if (given != NULL && (as.sync_prefix = strdup(given)) == NULL) {
                        asset_clear(&as);
                        return artifact_nomem(artifact);
                }
        }
        if (as.uri == NULL) {
                asset_clear(&as);
                return artifact_nomem(artifact);
        }
        return artifact_add_one(artifact, &as, overwrite);
}

/* Add the artifact's own descriptor `fd` (taken over) of a regular file. */
static int artifact_add_own_fd(struct ferry_artifact *a, int fd, const char *logical_path,
                               int overwrite, const char *metadata_json)
{
        struct asset as;
        cJSON *meta = NULL;
        int rc;

        if (logical_path == NULL) {
                close(fd);
                return client_artifact_fail(a, FERRY_EINVAL, "data needs a logical path");
        }
        rc = artifact_parse_object(a, metadata_json, "asset metadata", &meta);
        if (rc == 0)
                rc = asset_init(a, &as, logical_path, overwrite, meta);
        cJSON_Delete(meta);
        if (rc != 0) {
                close(fd);
                return rc;
        }
        as.kind = ASSET_FD;
        as.fd = fd;
        return artifact_add_one(a, &as, overwrite);
}

int ferry_artifact_add_fd(struct ferry_artifact *artifact, int fd, const char *logical_path,
                          int overwrite, const char *metadata_json)
{
        struct stat st;
        int own;

        if (artifact == NULL)
                return FERRY_EINVAL;
        if (fd < 0 || fstat(fd, &st) != 0)
                return client_artifact_fail(artifact, FERRY_EINVAL, "descriptor %d is not open",
                                            fd);
        if (!S_ISREG(st.st_mode))
                return client_artifact_fail(artifact, FERRY_EINVAL,
                                            "descriptor %d is not a regular file", fd);
        own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (own < 0)
                return client_artifact_fail(artifact, FERRY_EIO, "cannot keep descriptor %d: %s",
                                            fd, strerror(errno));
        return artifact_add_own_fd(artifact, own, logical_path, overwrite, metadata_json);
}

int ferry_artifact_add_data(struct ferry_artifact *artifact, const void *data, size_t len,
                            const char *logical_path, int overwrite, const char *metadata_json)
{
        const char *p = data;
        size_t off = 0;
        ssize_t n;
        int fd;

        if (artifact == NULL || (data == NULL && len > 0))
                return FERRY_EINVAL;
        /* A file in memory that the daemon copies from; gone when the artifact is freed. */
        fd = memfd_create("ferry-data", MFD_CLOEXEC);
        if (fd < 0)
                return client_artifact_fail(artifact, FERRY_EIO, "cannot hold the data: %s",
                                            strerror(errno));
        while (off < len) {
                n = write(fd, p + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = errno;

                        close(fd);
                        return client_artifact_fail(artifact,
                                                    e == ENOSPC ? FERRY_ENOSPC : FERRY_EIO,
                                                    "cannot hold the data: %s", strerror(e));
                }
                off += (size_t)n;
        }
        return artifact_add_own_fd(artifact, fd, logical_path, overwrite, metadata_json);
}

size_t ferry_artifact_asset_count(const struct ferry_artifact *artifact)
{
        return artifact ? artifact->nassets : 0;
}

/* Add a deep copy of `v` under `key`. Return false when out of memory. */
static bool add_copy(cJSON *obj, const char *key, const cJSON *v)
{
        cJSON *copy = cJSON_Duplicate(v, 1);

        if (copy == NULL || !cJSON_AddItemToObject(obj, key, copy)) {
                cJSON_Delete(copy);
                return false;
        }
        return true;
}

int client_artifact_fill_version(const struct ferry_artifact *a, cJSON *obj)
{
        return cJSON_AddStringToObject(obj, "name", a->name) != NULL &&
               client_add_string_opt(obj, "type", a->type) &&
               client_add_string_opt(obj, "version", a->version) &&
               (cJSON_GetArraySize(a->aliases) == 0 || add_copy(obj, "aliases", a->aliases)) &&
               (cJSON_GetArraySize(a->tags) == 0 || add_copy(obj, "tags", a->tags)) &&
               (a->metadata == NULL || add_copy(obj, "metadata", a->metadata));
}

int ferry_artifact_to_json(const struct ferry_artifact *artifact, char **json)
{
        cJSON *obj, *assets;
        size_t i;
        bool ok;

        if (json == NULL)
                return FERRY_EINVAL;
        *json = NULL;
        if (artifact == NULL || artifact->name == NULL)
                return FERRY_EINVAL;
        obj = cJSON_CreateObject();
        ok = obj != NULL && client_artifact_fill_version(artifact, obj) &&
             (assets = cJSON_AddArrayToObject(obj, "assets")) != NULL;
        for (i = 0; ok && i < artifact->nassets; i++) {
                const struct asset *as = &artifact->assets[i];
                cJSON *o = cJSON_CreateObject();

                ok = o != NULL && cJSON_AddItemToArray(assets, o) &&
                     cJSON_AddStringToObject(o, "logical_path", as->logical_path) != NULL &&
                     (as->kind != ASSET_FILE || cJSON_AddStringToObject(o, "file", as->path)) &&
                     (as->kind != ASSET_FD || cJSON_AddTrueToObject(o, "data")) &&
                     (as->kind != ASSET_REMOTE || cJSON_AddStringToObject(o, "remote", as->uri)) &&
                     (as->sync_max == 0 ||
                      (cJSON_AddTrueToObject(o, "sync") &&
                       cJSON_AddNumberToObject(o, "max_synced_objects", (double)as->sync_max))) &&
                     (as->sync_prefix == NULL ||
                      cJSON_AddStringToObject(o, "sync_prefix", as->sync_prefix)) &&
                     (!as->overwrite || cJSON_AddTrueToObject(o, "overwrite")) &&
                     (as->meta == NULL || add_copy(o, "metadata", as->meta));
        }
        if (ok)
                *json = client_json_print(obj);
        cJSON_Delete(obj);
        return *json ? 0 : FERRY_ENOMEM;
}
