/*
 * connection.h — one client of the control socket: frames in and out with the
 * descriptors that travel with them (SCM_RIGHTS), hello, backpressure, and
 * the one path by which a connection ends.
 *
 * A frame with a bad header, or descriptors that match no frame or not its
 * "fds", closes that client (the stream cannot be trusted); a frame whose
 * bounds hold but whose JSON does not gets an error reply and the
 * connection goes on. Never the daemon. Every complete
 * request after hello goes to ops_dispatch() with the descriptors its frame
 * carried. Replies are queued and written when the socket is writable; past
 * 1 MiB of unread replies the client's requests are not read until they
 * drain, past 32 MiB (or 256 MiB for all clients) it is dropped.
 */
#ifndef FERRY_CONNECTION_H
#define FERRY_CONNECTION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include <uv.h>

struct client;
struct request;

/*
 * What a connection needs from the listener that accepted it; the listener
 * keeps it alive longer than its connections. A connection knows nothing
 * else of the daemon: requests go to request(), the end of a connection to
 * gone().
 */
struct client_host {
        uv_loop_t *loop;
        const char *backend; /* named in hello's reply */
        size_t queued;       /* bytes of replies queued to all its clients */
        /* The connection is open (first) and ended (last, from client_close()). */
        void (*added)(struct client_host *host, struct client *c);
        void (*gone)(struct client_host *host, struct client *c);
        /* A request after hello, with the descriptors its frame carried (taken over). */
        void (*request)(struct client_host *host, struct client *c, uint64_t id, const char *op,
                        cJSON *req, int *fds, int nfds);
};

/* Take over the accepted socket `fd` of peer uid/gid; NULL (fd closed) when out of memory. */
struct client *client_new(struct client_host *host, int fd, uid_t uid, gid_t gid);
/* Refuse at once: one error reply, then the connection ends. */
void client_refuse(struct client *c, uint64_t id, int code, const char *msg);
/* Read and handle what the client already sent, without waiting for the loop. */
void client_read_now(struct client *c);
/* Send `msg` (not consumed) unless the client is gone. */
void client_send(struct client *c, const cJSON *msg);
/* The same with `n` descriptors, taken over (closed once sent, or when the client is gone). */
void client_send_fds(struct client *c, const cJSON *msg, int *fds, int n);
/* Hold the client across an asynchronous reply; every ref needs an unref. */
void client_ref(struct client *c);
void client_unref(struct client *c);
/* End the connection (the one path); `flush`: write what is queued first. */
void client_close(struct client *c, bool flush);
/* True once the connection has ended (replies to it are dropped). */
int client_closed(const struct client *c);
uid_t client_uid(const struct client *c);

/* The requests of a connection still waiting for their replies (kept by ops.c). */
struct client_pending {
        struct request *head;
        int count;
};
struct client_pending *client_pending(struct client *c);
/* The ops' per-connection state (open versions, downloads): theirs to set and free. */
enum client_slot { SESSION_LOG, SESSION_DOWNLOAD, SESSION_N };
void **client_session(struct client *c, enum client_slot slot);

/* For the listener's housekeeping. */
bool client_said_hello(const struct client *c);
/* Nothing pending, nothing queued: closing it loses no reply. */
bool client_idle(const struct client *c);
int64_t client_last_active_ms(const struct client *c); /* monotonic */
int64_t client_opened_ms(const struct client *c);      /* monotonic */
uint64_t client_serial(const struct client *c);
/* The listener's list (server.c keeps it). */
struct client *client_next(const struct client *c);
void client_link(struct client *c, struct client **head);
void client_unlink(struct client *c, struct client **head);

#endif
