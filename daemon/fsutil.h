/*
 * fsutil.h — writing downloaded files inside a target directory safely:
 * no component may be a symlink, nothing lands outside the directory, and a
 * file appears under its real name only once complete (temporary name, fsync,
 * rename). Used from libuv's thread pool.
 */
#ifndef FERRY_FSUTIL_H
#define FERRY_FSUTIL_H

#include <stddef.h>

enum fsutil_overwrite { FSUTIL_FAIL, FSUTIL_PRESERVE, FSUTIL_OVERWRITE };

enum fsutil_action { FSUTIL_WRITTEN, FSUTIL_KEPT, FSUTIL_PRESERVED };

/*
 * Place a copy of the open file `src_fd` (the caller's; SHA-256 `src_sha`,
 * or NULL to compute it when needed) at `dir`/`logical_path`. Return 0 with *action set, or a
 * negative FERRY_E* code with a sentence in err: FERRY_EUNSAFE for paths that escape or pass
 * through a symlink, FERRY_EEXIST for FAIL with different content.
 */
int fsutil_place_file(int dirfd, const char *dir, const char *logical_path, int src_fd,
                      const char *src_sha, enum fsutil_overwrite mode, enum fsutil_action *action,
                      char *err, size_t errlen);

#endif
