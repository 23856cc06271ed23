/* recovery.c — the spool checked against the queue; quarantine and its way back. */
#include "recovery.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ferry_base.h"
#include "log.h"
#include "spool.h"
#include "store.h"
#include "util.h"

struct name_set {
        char **v;
        size_t n, cap;
        bool oom;
};

static void name_set_add(void *data, const char *name)
{
        struct name_set *set = data;

        if (set->oom)
                return;
        if (set->n == set->cap) {
                size_t cap = set->cap ? set->cap * 2 : 256;
                char **grown = realloc(set->v, cap * sizeof(*grown));

                if (grown == NULL) {
                        set->oom = true;
                        return;
                }
                set->v = grown;
                set->cap = cap;
        }
        if ((set->v[set->n] = strdup(name)) == NULL) {
                set->oom = true;
                return;
        }
        set->n++;
}

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, size_t n)
{
        while (n > 0)
                free(v[--n]);
        free(v);
}

int recovery_reconcile(struct store *st, struct spool *sp, bool trust, struct recovery_report *out,
                       char *err, size_t errlen)
{
        struct name_set held = {0};
        char **names = NULL, state[16], why[512];
        size_t n = 0, i, j = 0;
        int rc;

        memset(out, 0, sizeof(*out));
        if ((rc = spool_list(sp, &names, &n, err, errlen)) != 0)
                return rc;
        /* One pass over the spool files the queue still needs. */
        if (trust && (rc = store_each_held_spool(st, name_set_add, &held)) != 0) {
                snprintf(err, errlen, "cannot read the queue's spool files");
                goto out;
        }
        if (held.oom) {
                rc = FERRY_ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
        }
        if (held.n > 1)
                qsort(held.v, held.n, sizeof(*held.v), cmp_names);
        for (i = 0; i < n; i++) {
                int c = 1;

                while (j < held.n && (c = strcmp(held.v[j], names[i])) < 0)
                        j++;
                if (j < held.n && c == 0) {
                        out->kept++;
                        continue;
                }
                /* Not held: ask who it belonged to (rare: a crash between a delivery and its
                 * clean-up, or a queue that lost rows). */
                out->looked_up++;
                rc =
                    trust ? store_spool_owner(st, names[i], state, sizeof(state)) : FERRY_ENOTFOUND;
                if (rc == 0 && (strcmp(state, "done") == 0 || strcmp(state, "cancelled") == 0)) {
                        spool_remove_now(sp, names[i]);
                        out->removed++;
                        continue;
                }
                if (rc != 0 && rc != FERRY_ENOTFOUND) {
                        snprintf(err, errlen, "cannot look up spool file %s in the queue",
                                 names[i]);
                        goto out;
                }
                if ((rc = spool_quarantine(sp, names[i], why, sizeof(why))) != 0) {
                        snprintf(err, errlen, "%s", why);
                        goto out;
                }
                out->quarantined++;
        }
        rc = 0;
out:
        free_names(held.v, held.n);
        free_names(names, n);
        return rc;
}

/* ---- ferry recover ---- */

void recovery_version_free(struct recovery_version *v)
{
        size_t i;

        if (v == NULL)
                return;
        for (i = 0; i < v->nfiles; i++) {
                free(v->paths[i]);
                free(v->logical[i]);
                free(v->asset_ids[i]);
                free(v->asset_meta[i]);
        }
        free(v->paths);
        free(v->logical);
        free(v->asset_ids);
        free(v->asset_meta);
        free(v->overwrite);
        free(v->request);
}

static struct recovery_version *find_version(struct recovery_version *vs, size_t n,
                                             const char *token)
{
        size_t i;

        for (i = 0; i < n; i++)
                if (strcmp(vs[i].token, token) == 0)
                        return &vs[i];
        return NULL;
}

/* Add one quarantined file with manifest `m` to its version (created on first sight). */
static int add_file(struct recovery_version **vs, size_t *n, size_t *cap, const char *path,
                    const cJSON *m)
{
        const char *token = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "token"));
        const char *lp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "logical_path"));
        const char *aid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "asset_id"));
        const cJSON *ameta = cJSON_GetObjectItemCaseSensitive(m, "asset_metadata");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(m, "version");
        const cJSON *nassets = cJSON_GetObjectItemCaseSensitive(m, "nassets");
        struct recovery_version *v;
        size_t k;

        if (token == NULL || lp == NULL || !cJSON_IsObject(req) || strlen(token) >= 80)
                return 1; /* not a manifest we can use */
        v = find_version(*vs, *n, token);
        if (v == NULL) {
                if (*n == *cap) {
                        size_t ncap = *cap ? *cap * 2 : 16;
                        struct recovery_version *grown = realloc(*vs, ncap * sizeof(*grown));

                        if (grown == NULL)
                                return FERRY_ENOMEM;
                        *vs = grown;
                        *cap = ncap;
                }
                v = &(*vs)[(*n)++];
                memset(v, 0, sizeof(*v));
                snprintf(v->token, sizeof(v->token), "%s", token);
                v->request = cJSON_PrintUnformatted(req);
                v->nassets = cJSON_IsNumber(nassets) ? (size_t)nassets->valuedouble : 0;
                v->partial = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "partial"));
                if (v->request == NULL)
                        return FERRY_ENOMEM;
        }
        k = v->nfiles;
        if ((v->paths = realloc(v->paths, (k + 1) * sizeof(char *))) == NULL ||
            (v->logical = realloc(v->logical, (k + 1) * sizeof(char *))) == NULL ||
            (v->asset_ids = realloc(v->asset_ids, (k + 1) * sizeof(char *))) == NULL ||
            (v->asset_meta = realloc(v->asset_meta, (k + 1) * sizeof(char *))) == NULL ||
            (v->overwrite = realloc(v->overwrite, (k + 1) * sizeof(int))) == NULL)
                return FERRY_ENOMEM;
        v->paths[k] = strdup(path);
        v->logical[k] = strdup(lp);
        v->asset_ids[k] = aid ? strdup(aid) : NULL;
        v->asset_meta[k] = cJSON_IsObject(ameta) ? cJSON_PrintUnformatted(ameta) : NULL;
        v->overwrite[k] = 0;
        v->nfiles++;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "partial")))
                v->partial = true;
        return v->paths[k] && v->logical[k] ? 0 : FERRY_ENOMEM;
}

static int scan_folder(const char *folder, struct recovery_version **vs, size_t *n, size_t *cap,
                       int64_t *orphans)
{
        struct dirent *de;
        DIR *d = opendir(folder);
        int rc = 0;

        if (d == NULL)
                return 0;
        while ((de = readdir(d)) != NULL && rc >= 0) {
                char value[SPOOL_MANIFEST_MAX + 1], *path;
                ssize_t len;
                cJSON *m;
                int fd;

                if (de->d_name[0] == '.')
                        continue;
                path = util_path_join(folder, de->d_name);
                if (path == NULL) {
                        rc = FERRY_ENOMEM;
                        break;
                }
                fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                len = fd >= 0 ? fgetxattr(fd, SPOOL_MANIFEST_XATTR, value, sizeof(value) - 1) : -1;
                if (fd >= 0)
                        close(fd);
                m = len > 0 ? cJSON_ParseWithLength(value, (size_t)len) : NULL;
                rc = m ? add_file(vs, n, cap, path, m) : 1;
                if (rc > 0) {
                        (*orphans)++;
                        rc = 0;
                }
                cJSON_Delete(m);
                free(path);
        }
        closedir(d);
        return rc;
}

int recovery_scan(const char *qdir, struct recovery_version **out, size_t *n, int64_t *orphans,
                  char *err, size_t errlen)
{
        struct recovery_version *vs = NULL;
        size_t cap = 0, count = 0, i;
        struct dirent *de;
        DIR *d;
        int rc = 0;

        *out = NULL;
        *n = 0;
        *orphans = 0;
        d = opendir(qdir);
        if (d == NULL)
                return errno == ENOENT
                           ? 0
                           : (snprintf(err, errlen, "cannot read %s: %s", qdir, strerror(errno)),
                              FERRY_EIO);
        while ((de = readdir(d)) != NULL && rc == 0) {
                char *folder;

                if (de->d_name[0] == '.')
                        continue;
                folder = util_path_join(qdir, de->d_name);
                if (folder == NULL) {
                        rc = FERRY_ENOMEM;
                        break;
                }
                rc = scan_folder(folder, &vs, &count, &cap, orphans);
                free(folder);
        }
        closedir(d);
        if (rc != 0) {
                for (i = 0; i < count; i++)
                        recovery_version_free(&vs[i]);
                free(vs);
                snprintf(err, errlen, "out of memory reading the quarantine");
                return rc;
        }
        for (i = 0; i < count; i++)
                if (vs[i].nassets > vs[i].nfiles + 0 && vs[i].nassets != 0)
                        vs[i].partial = vs[i].partial || vs[i].nfiles < vs[i].nassets;
        *out = vs;
        *n = count;
        return 0;
}
