/*
 * spool.h — snapshots of logged files, owned by the daemon until delivered.
 * <state>/spool/<32 hex> are snapshots; <state>/spool/staging/<token> are files
 * clients fill with in-memory data. Byte accounting is thread-safe; snapshot
 * functions run on libuv's thread pool. Return 0 or a negative FERRY_E* code
 * with a sentence in err.
 */
#ifndef FERRY_SPOOL_H
#define FERRY_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct spool;
struct store;

int spool_open(struct spool **out, const char *dir, int64_t budget, int64_t used, char *err,
               size_t errlen);
void spool_close(struct spool *sp);
/* Full path of a spool file (caller frees), NULL on out of memory. */
char *spool_path(const struct spool *sp, const char *name);

/* Account `bytes` against the budget: 0, or FERRY_ENOSPC with a sentence. */
int spool_reserve(struct spool *sp, int64_t bytes, char *err, size_t errlen);
void spool_release(struct spool *sp, int64_t bytes);
int64_t spool_used(struct spool *sp);
int64_t spool_budget(const struct spool *sp);

/*
 * Snapshot the regular file `src` (opened read-only, following symlinks) into
 * a new spool file: reflink, else copy_file_range, else copy; then fsync. The
 * source's size and mtime must not change during the copy (retried once).
 * *name receives the spool file name. `expect_size` >= 0 is the size accounted.
 */
int spool_snapshot(struct spool *sp, const char *src, int64_t expect_size, char name[33], char *err,
                   size_t errlen);
/* Move staging file `token` to a new spool name, fsync it; *size receives its size. */
int spool_claim_staged(struct spool *sp, const char *token, char name[33], int64_t *size, char *err,
                       size_t errlen);
/* Size of staging file `token`, or FERRY_ENOTFOUND. */
int spool_staged_size(struct spool *sp, const char *token, int64_t *size, char *err, size_t errlen);
/* Create an empty staging file (0600); *path (caller frees) and token returned. */
int spool_stage_new(struct spool *sp, char token[33], char **path, char *err, size_t errlen);
/* fsync the spool directory so new names survive a power cut. */
int spool_sync(struct spool *sp);
void spool_remove(struct spool *sp, const char *name);
/* At start-up: remove snapshots no queued/failed job references, and staging files older than an
 * hour. */
void spool_cleanup(struct spool *sp, struct store *st);

#endif
