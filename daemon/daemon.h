/* daemon.h — the parts of one running ferryd, shared by its modules. */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

struct store;
struct writer;
struct spool;
struct scheduler;
struct backend;
struct server;
struct cache;
struct s3;

/* What happened at start-up that the user must hear about (status, log). */
struct daemon_notices {
        char damaged[1024];    /* the queue database was damaged and set aside: where, why */
        int64_t quarantined;   /* spool files the queue did not confirm */
        char quarantine[4096]; /* ... moved into this folder */
};

struct daemon {
        uv_loop_t *loop;
        struct config cfg;
        struct store *store;         /* the queue, read on the loop thread */
        struct writer *writer;       /* the queue's one writer (group commit) */
        struct spool *spool;         /* snapshots of logged files */
        struct scheduler *scheduler; /* runs due jobs on the backend */
        struct backend *backend;     /* local registry or Comet */
        struct server *server;       /* the Unix socket */
        struct cache *cache;         /* node-wide download cache */
        struct s3 *s3;               /* S3 client: listings of s3:// assets, their downloads */
        struct daemon_notices notices;
        int64_t started_ms;
        bool stopping;
        int inflight_logs; /* logs between their snapshot and their commit's reply */
};

/* A log finished (committed or refused): the shutdown may be waiting for it. */
void daemon_log_finished(struct daemon *d);

#endif
