/*
 * ops.h — the operations of PROTOCOL.md: one handler each, looked up in a table.
 * A handler owns its struct request and ends it with request_reply() or
 * request_fail(), at once or later (asynchronous ops hold the client).
 */
#ifndef FERRY_OPS_H
#define FERRY_OPS_H

#include <stdint.h>

#include <cjson/cJSON.h>

struct daemon;
struct client;

struct request {
        struct daemon *d;
        struct client *client; /* held (client_ref) until the request ends */
        uint64_t id;
        cJSON *msg; /* the request object, owned */
        int *fds;   /* descriptors that came with it (SCM_RIGHTS); a handler that keeps one
                       sets its slot to -1; the rest are closed when the request ends */
        int nfds;
        /* Set by a handler that waits (wait): the client left; end the request without a
         * reply. */
        void (*cancel)(struct request *req);
        void *cancel_data;
        struct request *prev, *next; /* the client's pending requests */
};

/* Requests one connection may have waiting for their replies. */
#define OPS_MAX_PENDING 4096

/* The connection ended: cancel what waits for it (called by the server). */
void ops_client_closed(struct client *client);

/* Route a request after hello; takes ownership of `msg` and of the `nfds` descriptors `fds`. */
void ops_dispatch(struct daemon *d, struct client *client, uint64_t id, const char *op, cJSON *msg,
                  int *fds, int nfds);

/* A reply object with "id" and "ok": true, to which results are added; NULL if out of memory. */
cJSON *request_ok(struct request *req);
/* End the request without a reply (its client is gone). */
void request_drop(struct request *req);
/* Send `reply` (consumed; NULL means out of memory) and end the request. */
void request_reply(struct request *req, cJSON *reply);
/* Send an error reply and end the request. */
void request_fail(struct request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Handlers living in their own files. */
void op_log(struct request *req);
void op_log_begin(struct request *req);
void op_log_add(struct request *req);
void op_log_commit(struct request *req);
void op_log_abort(struct request *req);
void op_get(struct request *req);
void op_download_open(struct request *req);
void op_download_files(struct request *req);
void op_download_close(struct request *req);
void op_recover(struct request *req);
/* A connection ended: drop its open versions and downloads. */
void op_log_client_closed(struct client *client);
void op_download_client_closed(struct client *client);

#endif
