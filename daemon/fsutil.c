/* fsutil.c — safe placement of downloaded files. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry_base.h"
#include "proto.h"
#include "util.h"

/*
 * Open (creating) the parent directories of `path` below dirfd without
 * following symlinks; *leaf points at the last component. Returns an fd or a
 * negative FERRY_E* code.
 */
static int open_parent(int dirfd, char *path, char **leaf, char *err, size_t errlen)
{
        int fd = dup(dirfd);
        char *seg = path, *slash;

        if (fd < 0)
                return FERRY_EIO;
        while ((slash = strchr(seg, '/')) != NULL) {
                int next;

                *slash = '\0';
                next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0 && errno == ENOENT) {
                        if (mkdirat(fd, seg, 0755) != 0 && errno != EEXIST) {
                                snprintf(err, errlen, "cannot create directory %s: %s", seg,
                                         strerror(errno));
                                close(fd);
                                return FERRY_EIO;
                        }
                        next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                }
                if (next < 0) {
                        int e = errno;

                        close(fd);
                        if (e == ELOOP || e == ENOTDIR) {
                                snprintf(err, errlen,
                                         "refusing to write through \"%s\": it is a symlink or "
                                         "not a directory",
                                         seg);
                                return FERRY_EUNSAFE;
                        }
                        snprintf(err, errlen, "cannot open directory %s: %s", seg, strerror(e));
                        return FERRY_EIO;
                }
                close(fd);
                fd = next;
                *slash = '/';
                seg = slash + 1;
        }
        *leaf = seg;
        return fd;
}

int fsutil_place_file(int dirfd, const char *dir, const char *logical_path, int in,
                      const char *src_sha, enum fsutil_overwrite mode, enum fsutil_action *action,
                      char *err, size_t errlen)
{
        char *path = strdup(logical_path), *leaf;
        char tmp[96], rnd[17], have[65], want[65];
        struct stat st;
        int pfd = -1, out = -1, rc = 0;

        if (path == NULL)
                return FERRY_ENOMEM;
        if (proto_validate_logical_path(logical_path, err, errlen) != 0) {
                free(path);
                return FERRY_EUNSAFE;
        }
        pfd = open_parent(dirfd, path, &leaf, err, errlen);
        if (pfd < 0) {
                rc = pfd;
                pfd = -1;
                goto out;
        }
        if (fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISREG(st.st_mode)) {
                        snprintf(err, errlen,
                                 "refusing to replace %s/%s: it is a symlink or not a file", dir,
                                 logical_path);
                        rc = FERRY_EUNSAFE;
                        goto out;
                }
                if (mode == FSUTIL_PRESERVE) {
                        *action = FSUTIL_PRESERVED;
                        goto out;
                }
                if (mode == FSUTIL_FAIL) {
                        int fd = openat(pfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

                        if (fd < 0 || util_sha256_fd(fd, have) != 0 ||
                            (src_sha == NULL &&
                             (lseek(in, 0, SEEK_SET) != 0 || util_sha256_fd(in, want) != 0))) {
                                if (fd >= 0)
                                        close(fd);
                                snprintf(err, errlen, "cannot compare %s/%s", dir, logical_path);
                                rc = FERRY_EIO;
                                goto out;
                        }
                        close(fd);
                        if (strcmp(have, src_sha ? src_sha : want) == 0) {
                                *action = FSUTIL_KEPT;
                                goto out;
                        }
                        snprintf(err, errlen,
                                 "%s/%s exists with different content; choose --overwrite "
                                 "overwrite or preserve",
                                 dir, logical_path);
                        rc = FERRY_EEXIST;
                        goto out;
                }
        }
        if (util_random_hex(rnd, 8) != 0) {
                rc = FERRY_EIO;
                goto out;
        }
        snprintf(tmp, sizeof(tmp), ".ferry-tmp-%s", rnd);
        out = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (out < 0) {
                snprintf(err, errlen, "cannot write %s/%s: %s", dir, logical_path, strerror(errno));
                rc = errno == ENOSPC ? FERRY_ENOSPC : FERRY_EIO;
                goto out;
        }
        if ((rc = util_copy_fd(in, out)) != 0 || fsync(out) != 0) {
                int e = rc ? -rc : errno;

                snprintf(err, errlen, "cannot write %s/%s: %s", dir, logical_path, strerror(e));
                rc = e == ENOSPC ? FERRY_ENOSPC : FERRY_EIO;
                unlinkat(pfd, tmp, 0);
                goto out;
        }
        /* rename replaces a name, never follows it: the real name appears complete. */
        if (renameat(pfd, tmp, pfd, leaf) != 0) {
                snprintf(err, errlen, "cannot write %s/%s: %s", dir, logical_path, strerror(errno));
                unlinkat(pfd, tmp, 0);
                rc = FERRY_EIO;
                goto out;
        }
        fsync(pfd);
        *action = FSUTIL_WRITTEN;
out:
        if (out >= 0)
                close(out);
        if (pfd >= 0)
                close(pfd);
        free(path);
        return rc;
}
