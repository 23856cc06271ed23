/*
 * registry.h — the local backend's registry: <state>/registry/registry.db
 * (schema in registry.sql) and content-addressed blobs under
 * <state>/registry/blobs/<sha256[0:2]>/<sha256>, shared across versions.
 * A struct registry is one SQLite connection: use one per thread.
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
 * Store the job's files as blobs (hard link from the spool when possible,
 * else copy; fsync), then create the version CLOSED in one transaction:
 * next major or the requested version, user aliases moved to it, Latest on
 * it. `origin` makes this idempotent: publishing the same origin again
 * returns the version created the first time. `spool_dir` holds the job's
 * spool files. FERRY_EEXIST when the requested version exists.
 */
int registry_publish(struct registry *r, const struct job *job, const char *origin,
                     const char *spool_dir, char *version, size_t vlen, char *err, size_t errlen);

/* 1 if workspace/name:version exists, else 0. */
int registry_version_exists(struct registry *r, const char *workspace, const char *name,
                            const char *version);

/*
 * Resolve name and version-or-alias (NULL: Latest) into *out, shaped as
 * PROTOCOL.md's get reply; each asset also carries "_path" (its blob) and
 * "_sha256". FERRY_ENOTFOUND when there is no such artifact or version.
 */
int registry_get(struct registry *r, const char *workspace, const char *name,
                 const char *version_or_alias, cJSON **out, char *err, size_t errlen);

#endif
