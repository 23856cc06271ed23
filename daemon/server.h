/*
 * server.h — the control socket's listener and its housekeeping.
 *
 * The socket is created defensively (after OpenSMTPD's control.c): its
 * directory is made 0700 (0710 with allow_group) and must be ours, a live
 * daemon is probed before a stale socket is replaced, the umask is set around
 * bind. Every peer's credentials are checked (SO_PEERCRED). Connections are
 * capped per uid and in all, within ferryd's open-file limit with a reserve;
 * when no room is left the longest idle connection (nothing pending, nothing
 * queued; those that never said hello first, then other users') makes way for
 * the new one; connections that never say hello are closed after
 * `hello_timeout`. Each kind of refusal is logged at most once a minute.
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct daemon;
struct server;
struct client;

/* Bind and listen. 0, or -1 with a sentence in err. */
int server_start(struct server **out, struct daemon *d, char *err, size_t errlen);
/* Close the listener and every client; frees the server once handles are closed. */
void server_stop(struct server *srv);

#endif
