/* util.c — small helpers shared by the daemon's modules. */
#include "util.h"

#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ferry_base.h"

int64_t util_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int util_random_hex(char *out, size_t nbytes)
{
        static const char digits[] = "0123456789abcdef";
        unsigned char buf[64];
        size_t i;

        if (nbytes > sizeof(buf))
                return FERRY_EINVAL;
        if (getrandom(buf, nbytes, 0) != (ssize_t)nbytes)
                return FERRY_EIO;
        for (i = 0; i < nbytes; i++) {
                out[2 * i] = digits[buf[i] >> 4];
                out[2 * i + 1] = digits[buf[i] & 15];
        }
        out[2 * nbytes] = '\0';
        return 0;
}

double util_random_unit(void)
{
        uint64_t r = 0;

        if (getrandom(&r, sizeof(r), 0) != sizeof(r))
                r = (uint64_t)util_mono_ms() * 2654435761u;
        return (double)(r >> 11) / 9007199254740992.0;
}

int util_mkdir_p(const char *path, unsigned mode)
{
        char buf[4096];
        size_t n = strlen(path);
        char *p;

        if (n == 0 || n >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, path, n + 1);
        for (p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) != 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return -errno;
        return 0;
}

const char *util_user_name(uid_t uid, char *buf, size_t len)
{
        struct passwd pw, *res = NULL;
        char tmp[1024];

        if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
                snprintf(buf, len, "%s (uid %u)", res->pw_name, (unsigned)uid);
        else
                snprintf(buf, len, "uid %u", (unsigned)uid);
        return buf;
}

int util_check_private_stat(const struct stat *st, const char *path, bool dir, char *err,
                            size_t errlen)
{
        char who[160], me[160];

        if (dir ? !S_ISDIR(st->st_mode) : !S_ISREG(st->st_mode)) {
                snprintf(err, errlen,
                         "%s is not a %s%s; ferryd keeps its state only in files and "
                         "directories of its own",
                         path, dir ? "directory" : "regular file",
                         S_ISLNK(st->st_mode) ? " (a symbolic link)" : "");
                return FERRY_EPERM;
        }
        if (st->st_uid != geteuid()) {
                snprintf(err, errlen,
                         "%s belongs to %s, not to %s, whom ferryd runs as; ferryd runs only on "
                         "state it owns (move it away or give ferryd its own directory)",
                         path, util_user_name(st->st_uid, who, sizeof(who)),
                         util_user_name(geteuid(), me, sizeof(me)));
                return FERRY_EPERM;
        }
        if ((st->st_mode & 022) != 0) {
                snprintf(err, errlen,
                         "%s is writable by %s (mode %04o); ferryd runs only on state others "
                         "cannot change (chmod %s %s)",
                         path, (st->st_mode & 002) ? "others" : "its group",
                         (unsigned)(st->st_mode & 07777), dir ? "700" : "600", path);
                return FERRY_EPERM;
        }
        return 0;
}

int util_check_private_dir(const char *path, char *err, size_t errlen)
{
        struct stat st;

        if (lstat(path, &st) != 0) {
                snprintf(err, errlen, "cannot use %s: %s", path, strerror(errno));
                return errno == ENOENT ? FERRY_ENOTFOUND : FERRY_EIO;
        }
        return util_check_private_stat(&st, path, true, err, errlen);
}

int util_fsync_dir(const char *path)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) != 0)
                rc = -errno;
        close(fd);
        return rc;
}

char *util_path_join(const char *dir, const char *name)
{
        size_t dl = strlen(dir), nl = strlen(name);
        char *out = malloc(dl + nl + 2);

        if (out == NULL)
                return NULL;
        memcpy(out, dir, dl);
        out[dl] = '/';
        memcpy(out + dl + 1, name, nl + 1);
        return out;
}

const char *util_human_bytes(int64_t n, char *buf, size_t len)
{
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = (double)n;
        int u = 0;

        while (v >= 1024 && u < 4) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%lld B", (long long)n);
        else
                snprintf(buf, len, "%.1f %s", v, units[u]);
        return buf;
}

static int copy_plain(int src_fd, int dst_fd)
{
        char buf[1 << 16];

        if (lseek(src_fd, 0, SEEK_SET) < 0 || lseek(dst_fd, 0, SEEK_SET) < 0 ||
            ftruncate(dst_fd, 0) != 0)
                return -errno;
        for (;;) {
                ssize_t r = read(src_fd, buf, sizeof(buf));
                ssize_t off = 0;

                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return 0;
                while (off < r) {
                        ssize_t w = write(dst_fd, buf + off, (size_t)(r - off));

                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w < 0)
                                return -errno;
                        off += w;
                }
        }
}

int util_copy_fd(int src_fd, int dst_fd)
{
        loff_t in = 0, out = 0;

        if (ioctl(dst_fd, FICLONE, src_fd) == 0)
                return 0;
        /* A second attempt must not keep bytes of the first. */
        if (ftruncate(dst_fd, 0) != 0)
                return -errno;
        for (;;) {
                ssize_t n = copy_file_range(src_fd, &in, dst_fd, &out, 1 << 30, 0);

                if (n == 0)
                        return 0;
                if (n > 0)
                        continue;
                if (errno == EINTR)
                        continue;
                if (errno == ENOSPC || errno == EDQUOT || errno == EIO)
                        return -errno;
                break; /* EXDEV, ENOSYS, EINVAL, EOPNOTSUPP...: fall back to read/write */
        }
        return copy_plain(src_fd, dst_fd);
}

int util_sha256_fd(int fd, char out[65])
{
        static const char digits[] = "0123456789abcdef";
        unsigned char buf[1 << 16], md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0, i;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int rc = 0;

        if (ctx == NULL)
                return -ENOMEM;
        if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
                rc = -EIO;
                goto out;
        }
        for (;;) {
                ssize_t r = read(fd, buf, sizeof(buf));

                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        rc = -errno;
                        goto out;
                }
                if (r == 0)
                        break;
                EVP_DigestUpdate(ctx, buf, (size_t)r);
        }
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        for (i = 0; i < mdlen; i++) {
                out[2 * i] = digits[md[i] >> 4];
                out[2 * i + 1] = digits[md[i] & 15];
        }
        out[2 * mdlen] = '\0';
out:
        EVP_MD_CTX_free(ctx);
        return rc;
}

void util_sha256_hex(const void *data, size_t len, char out[65])
{
        static const char digits[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0, i;

        if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1)
                mdlen = 0;
        for (i = 0; i < mdlen; i++) {
                out[2 * i] = digits[md[i] >> 4];
                out[2 * i + 1] = digits[md[i] & 15];
        }
        out[2 * mdlen] = '\0';
}

int util_sha256_file(const char *path, char out[65])
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        int rc;

        if (fd < 0)
                return -errno;
        rc = util_sha256_fd(fd, out);
        close(fd);
        return rc;
}
