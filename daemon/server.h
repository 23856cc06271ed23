/*
 * server.h — the control socket: accepts clients, frames, hello, peer checks.
 * One dispatch path: every complete request frame after hello goes to
 * ops_dispatch(); a malformed frame closes that client, never the daemon.
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct daemon;
struct server;
struct client;

/*
 * Create the socket directory (0700), probe for a live daemon, replace a
 * stale socket, bind (0600) and listen. 0, or -1 with a sentence in err.
 */
int server_start(struct server **out, struct daemon *d, char *err, size_t errlen);
/* Close the listener and every client; frees the server once handles are closed. */
void server_stop(struct server *srv);

/* Send `msg` (not consumed) to the client unless it is gone. */
void client_send(struct client *c, const cJSON *msg);
/* Hold the client across an asynchronous reply; every ref needs an unref. */
void client_ref(struct client *c);
void client_unref(struct client *c);

/* True once the connection has ended (replies to it are dropped). */
int client_closed(const struct client *c);

/* The requests of a connection still waiting for their replies (kept by ops.c). */
struct request;
struct client_pending {
        struct request *head;
        int count;
};
struct client_pending *client_pending(struct client *c);

#endif
