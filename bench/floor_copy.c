/*
 * floor_copy.c — the durable-copy floor of bench/queue_scale.py's enqueue benchmark.
 *
 * For each source file named in LIST (one path a line), in order: open it,
 * read it, create DSTDIR/<PREFIX><n> (O_CREAT|O_EXCL), write the bytes, fsync
 * the file, close it, fsync DSTDIR. That is the least a daemon must do before
 * it can acknowledge a logged file durably (no queue, no database). Each
 * copy's latency is measured with CLOCK_MONOTONIC.
 *
 * Protocol with the benchmark: print "ready" once set up, wait for one line
 * on stdin ("go"), copy, then write {"start": s, "end": s, "lat": [s, ...]}
 * (CLOCK_REALTIME seconds for start/end) to OUT. Compiled on the fly with cc.
 *
 *   floor_copy LIST DSTDIR PREFIX OUT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(clockid_t clk)
{
        struct timespec ts;

        clock_gettime(clk, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *arg)
{
        fprintf(stderr, "floor_copy: %s %s: %s\n", what, arg, strerror(errno));
        exit(1);
}

int main(int argc, char **argv)
{
        static char buf[1 << 20];
        char line[4096], name[256], go[64];
        char **paths = NULL;
        size_t n = 0, cap = 0, i;
        double *lat, start, end;
        FILE *list, *out;
        int dfd;

        if (argc != 5) {
                fprintf(stderr, "usage: floor_copy LIST DSTDIR PREFIX OUT\n");
                return 2;
        }
        list = fopen(argv[1], "r");
        if (list == NULL)
                die("cannot open", argv[1]);
        while (fgets(line, sizeof(line), list) != NULL) {
                line[strcspn(line, "\n")] = '\0';
                if (line[0] == '\0')
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 1024;
                        paths = realloc(paths, cap * sizeof(*paths));
                        if (paths == NULL)
                                die("out of memory", "");
                }
                paths[n++] = strdup(line);
        }
        fclose(list);
        lat = calloc(n ? n : 1, sizeof(*lat));
        dfd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (lat == NULL || dfd < 0)
                die("cannot open", argv[2]);

        printf("ready\n");
        fflush(stdout);
        if (fgets(go, sizeof(go), stdin) == NULL)
                return 1; /* the benchmark is gone */

        start = now(CLOCK_REALTIME);
        for (i = 0; i < n; i++) {
                double t0 = now(CLOCK_MONOTONIC);
                int in = open(paths[i], O_RDONLY | O_CLOEXEC), outfd;
                ssize_t r;

                if (in < 0)
                        die("cannot open", paths[i]);
                snprintf(name, sizeof(name), "%s%zu", argv[3], i);
                outfd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (outfd < 0)
                        die("cannot create", name);
                while ((r = read(in, buf, sizeof(buf))) > 0) {
                        char *p = buf;

                        while (r > 0) {
                                ssize_t w = write(outfd, p, (size_t)r);

                                if (w < 0)
                                        die("cannot write", name);
                                p += w;
                                r -= w;
                        }
                }
                if (r < 0)
                        die("cannot read", paths[i]);
                if (fsync(outfd) != 0)
                        die("cannot fsync", name);
                close(outfd);
                close(in);
                if (fsync(dfd) != 0)
                        die("cannot fsync", argv[2]);
                lat[i] = now(CLOCK_MONOTONIC) - t0;
        }
        end = now(CLOCK_REALTIME);

        out = fopen(argv[4], "w");
        if (out == NULL)
                die("cannot write", argv[4]);
        fprintf(out, "{\"start\": %.6f, \"end\": %.6f, \"lat\": [", start, end);
        for (i = 0; i < n; i++)
                fprintf(out, "%s%.9f", i ? "," : "", lat[i]);
        fprintf(out, "]}\n");
        if (fclose(out) != 0)
                die("cannot write", argv[4]);
        return 0;
}
