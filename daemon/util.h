/* util.h — small helpers shared by the daemon's modules: time, ids, paths, files. */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Wall-clock milliseconds since the Unix epoch. */
int64_t util_now_ms(void);
/* Monotonic milliseconds (for intervals). */
int64_t util_mono_ms(void);

/* Write 2*nbytes lowercase hex characters of randomness plus NUL into out. 0 or FERRY_EIO. */
int util_random_hex(char *out, size_t nbytes);
/* A uniformly random double in [0, 1). */
double util_random_unit(void);

/* mkdir -p with `mode` for directories it creates. 0 or a negative errno. */
int util_mkdir_p(const char *path, unsigned mode);
/*
 * A directory ferryd keeps state in: a real directory (not a link), owned by
 * this uid, not writable by group or others. 0, or FERRY_EPERM with a
 * sentence naming the directory, its owner and mode.
 */
/* "name (uid N)", or "uid N" for a uid with no name. */
const char *util_user_name(uid_t uid, char *buf, size_t len);
/* The file (or directory) `st` describes is ferryd's own and writable by no one else. */
int util_check_private_stat(const struct stat *st, const char *path, bool dir, char *err,
                            size_t errlen);
int util_check_private_dir(const char *path, char *err, size_t errlen);
/* fsync the directory at `path`. 0 or a negative errno. */
int util_fsync_dir(const char *path);
/* Join dir and name into a new string (caller frees). NULL on out of memory. */
char *util_path_join(const char *dir, const char *name);
/* Format n bytes as "1.2 MiB" into buf. */
const char *util_human_bytes(int64_t n, char *buf, size_t len);

/*
 * Copy the file `src_fd` into `dst_fd`: reflink (FICLONE) when the file system
 * allows it, else copy_file_range, else read/write. Leaves both offsets
 * unspecified. Return 0 or a negative errno.
 */
int util_copy_fd(int src_fd, int dst_fd);

/* SHA-256 of a file as 64 hex characters + NUL. 0 or a negative errno. */
int util_sha256_file(const char *path, char out[65]);
int util_sha256_fd(int fd, char out[65]);
/* SHA-256 of `len` bytes as 64 hex characters + NUL. */
void util_sha256_hex(const void *data, size_t len, char out[65]);

#endif
