/* testutil.h — helpers the C unit tests share: leak checks and temporary trees. */
#ifndef FERRY_TESTUTIL_H
#define FERRY_TESTUTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

/* Open file descriptors of this process: compare before and after a test to catch leaks. */
static inline int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int n = 0;

        if (d == NULL)
                return -1;
        while ((de = readdir(d)) != NULL)
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

static inline int testutil_rm_entry(const char *path, const struct stat *sb, int flag,
                                    struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

/* Remove a temporary tree (no symlink is followed). */
static inline void rm_rf(const char *path)
{
        nftw(path, testutil_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
