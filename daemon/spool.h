/*
 * spool.h — snapshots of logged files, owned by the daemon until delivered.
 *
 * <state>/spool/<32 hex> are snapshots, each carrying its version's manifest
 * in the extended attribute "user.ferry.manifest" (JSON, see op_log.c), so
 * that a file the queue database cannot vouch for still says what it is;
 * <state>/quarantine/<stamp>/ holds snapshots the queue did not confirm at
 * start-up (never deleted by ferryd; `ferry recover` re-queues them).
 *
 * Files are opened relative to the spool's directory descriptor with
 * O_NOFOLLOW and created 0600, so a link planted in the spool is never
 * followed. Byte accounting and snapshots are thread-safe (snapshots run on
 * libuv's thread pool); pins and deferred removal belong to the loop thread.
 * Functions return 0 or a negative FERRY_E* code with a sentence in err.
 */
#ifndef FERRY_SPOOL_H
#define FERRY_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define SPOOL_MANIFEST_XATTR "user.ferry.manifest"
#define SPOOL_MANIFEST_MAX 3900 /* fits one ext4 xattr block with room to spare */

struct spool;

/*
 * Open the spool at `dir` (created 0700) with quarantine folders under
 * `quarantine_dir`. The directories must be owned by this uid and not
 * writable by others. `budget` bytes (0: no limit), `used` already held.
 */
int spool_open(struct spool **out, uv_loop_t *loop, const char *dir, const char *quarantine_dir,
               int64_t budget, int64_t used, char *err, size_t errlen);
/* Free the spool once no removal is pending (the loop runs them first). */
void spool_close(struct spool *sp);
const char *spool_dir(const struct spool *sp);
/* The spool directory's descriptor (for openat/linkat; the spool keeps it). */
int spool_dirfd(const struct spool *sp);
/* Full path of a spool file (caller frees), NULL on out of memory. */
char *spool_path(const struct spool *sp, const char *name);
/* Open spool file `name` read-only without following links: an fd, or a negative errno. */
int spool_open_file(const struct spool *sp, const char *name);

/* Account `bytes` against the budget: 0, or FERRY_ENOSPC with a sentence. */
int spool_reserve(struct spool *sp, int64_t bytes, char *err, size_t errlen);
void spool_release(struct spool *sp, int64_t bytes);
int64_t spool_used(struct spool *sp);
int64_t spool_budget(struct spool *sp);
/* Change the byte budget (SIGHUP); snapshots already held stay, even above it. */
void spool_set_budget(struct spool *sp, int64_t budget);
/* Free bytes a log must leave on the spool's file system (0: no minimum). */
void spool_set_min_free(struct spool *sp, int64_t min_free);
int64_t spool_min_free(struct spool *sp);
/* Bytes free for ferryd on the spool's file system, or a negative FERRY_E* code. */
int64_t spool_fs_free(const struct spool *sp);
/*
 * Would `bytes` more leave at least the minimum free on the spool's file
 * system? 0, or FERRY_ENOSPC with a sentence naming what would be left and
 * the minimum. Thread-safe.
 */
int spool_check_free(struct spool *sp, int64_t bytes, char *err, size_t errlen);

/*
 * Snapshot the open file `src_fd` (described as `what` in messages) into a
 * new spool file: reflink, else copy_file_range, else copy; attach
 * `manifest` (may be NULL); fsync the file (the directory is synced once per
 * commit by spool_sync). The file must not change during the copy (retried
 * once). *name receives the spool name, *size the bytes copied. A file whose
 * reported size is 0 (procfs and the like) is copied to its end.
 */
int spool_snapshot_fd(struct spool *sp, int src_fd, const char *what, const char *manifest,
                      char name[33], int64_t *size, char *err, size_t errlen);
/* fsync the spool directory so new names survive a power cut. Thread-safe. */
int spool_sync(void *sp);
/* Remove a snapshot at once (a log that failed before its commit). Thread-safe. */
void spool_remove_now(struct spool *sp, const char *name);

/* ---- loop thread: files of delivered versions ---- */

/* Readers of job `job`'s files hold a pin; its files outlive every pin. */
void spool_pin(struct spool *sp, int64_t job);
void spool_unpin(struct spool *sp, int64_t job);
/*
 * The queue no longer needs these files of `job` (taken over: `names` is
 * freed by the spool): remove them on the thread pool once the job is not
 * pinned, and release `bytes` from the budget.
 */
void spool_discard(struct spool *sp, int64_t job, char **names, size_t n, int64_t bytes);
/* Removals queued or running (for shutdown). */
bool spool_busy(const struct spool *sp);

/* ---- start-up ---- */

/* The snapshot names now in the spool, sorted (caller frees each and the array). */
int spool_list(struct spool *sp, char ***names, size_t *n, char *err, size_t errlen);
/*
 * Move snapshot `name` into this run's quarantine folder
 * (<quarantine_dir>/<UTC stamp>/), created on first use. 0 or a code.
 */
int spool_quarantine(struct spool *sp, const char *name, char *err, size_t errlen);
/* This run's quarantine folder, or NULL when nothing was quarantined. */
const char *spool_quarantine_folder(const struct spool *sp);
/* Remove what an older ferryd left in <spool>/staging (never-claimed in-memory data). */
int spool_clean_staging(struct spool *sp);

#endif
