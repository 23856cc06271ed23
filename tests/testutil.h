/* testutil.h — helpers the C unit tests share: leak checks and temporary trees. */
#ifndef FERRY_TESTUTIL_H
#define FERRY_TESTUTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Entries of a directory other than "." and "..", or -1 if it cannot be read. */
static inline int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (d == NULL)
                return -1;
        while ((de = readdir(d)) != NULL)
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

/* Open file descriptors of this process: compare before and after a test to catch leaks. */
static inline int count_fds(void)
{
        return count_entries("/proc/self/fd");
}

/* True when something (even a dangling symlink) exists at path. */
static inline int exists(const char *path)
{
        struct stat st;

        return lstat(path, &st) == 0;
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
