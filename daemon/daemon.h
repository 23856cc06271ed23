/* daemon.h — the parts of one running ferryd, shared by its modules. */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

struct store;
struct spool;
struct scheduler;
struct backend;
struct server;
struct cache;

struct daemon {
        uv_loop_t *loop;
        struct config cfg;
        struct store *store;         /* the durable queue */
        struct spool *spool;         /* snapshots of logged files */
        struct scheduler *scheduler; /* runs due jobs on the backend */
        struct backend *backend;     /* local registry or Comet */
        struct server *server;       /* the Unix socket */
        struct cache *cache;         /* node-wide download cache */
        int64_t started_ms;
        bool stopping;
};

#endif
