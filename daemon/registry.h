/*
 * registry.h — the local backend's registry: <state>/registry/registry.db
 * (schema in registry.sql) and content-addressed blobs under
 * <state>/registry/blobs/<sha256[0:2]>/<sha256>, shared across versions.
 *
 * A struct registry is one SQLite connection with its statements prepared
 * once; use one per thread. The local backend keeps two for its whole life:
 * the loop thread's for look-ups and its committer's for new versions.
 * Functions return 0 or a negative FERRY_E* code with a sentence in err.
 */
#ifndef FERRY_REGISTRY_H
#define FERRY_REGISTRY_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct job;
struct registry;

int registry_open(struct registry **out, const char *dir, char *err, size_t errlen);
void registry_close(struct registry *r);

/*
 * Put the snapshot open as `fd` into the blob store under its SHA-256
 * (written to sha): a hard link from the spool file `spool_dirfd`/`name`
 * when the file system allows, else a copy. The blob's directory is not
 * synced here: subdir receives its two-character name for registry_sync_dirs().
 * Thread-safe.
 */
int registry_put_blob(const char *dir, int spool_dirfd, const char *name, char sha[65],
                      char subdir[3], char *err, size_t errlen);
/* fsync the blob directories named in `subdirs` (n of them, duplicates allowed). */
int registry_sync_dirs(const char *dir, char (*subdirs)[3], size_t n);

/* The committer's transaction around a batch of publishes. */
int registry_begin(struct registry *r);
int registry_commit(struct registry *r);
void registry_rollback(struct registry *r);

/*
 * Inside a transaction: create the version of `job` (its blobs already
 * stored: shas[i] for file asset i) CLOSED: next major or the requested
 * version, user aliases moved to it, Latest on it. `job->token` is the
 * version's origin: publishing it again returns the version made the first
 * time. FERRY_EEXIST when the requested version exists. On failure nothing
 * of this job is left in the transaction.
 */
int registry_publish(struct registry *r, const struct job *job, char shas[][65], char *version,
                     size_t vlen, char *err, size_t errlen);

/* 1 if workspace/name:version exists, else 0. */
int registry_version_exists(struct registry *r, const char *workspace, const char *name,
                            const char *version);

/*
 * Resolve name and version-or-alias (NULL: Latest) into *out, shaped as
 * PROTOCOL.md's get reply; each asset also carries "_path" (its blob) and
 * "_sha256". An alias matches exactly, else ignoring case ("latest").
 * FERRY_ENOTFOUND when there is no such artifact or version.
 */
int registry_get(struct registry *r, const char *workspace, const char *name,
                 const char *version_or_alias, cJSON **out, char *err, size_t errlen);

#endif
