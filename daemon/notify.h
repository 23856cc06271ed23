/*
 * notify.h — systemd's readiness protocol (sd_notify(3)) without libsystemd.
 *
 * When systemd starts ferryd with Type=notify it sets NOTIFY_SOCKET to a
 * datagram socket; ferryd sends it "READY=1" once it serves, "STATUS=..."
 * lines with the queue's size, "RELOADING=1" around a SIGHUP reload and
 * "STOPPING=1" when it begins an orderly stop. Without NOTIFY_SOCKET every
 * call does nothing. Loop thread only.
 */
#ifndef FERRY_NOTIFY_H
#define FERRY_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Read NOTIFY_SOCKET (a path, or "@name" for the abstract namespace) and
 * remove it from the environment, so that no child inherits it. 0 (also
 * when unset), or -1 with a sentence in err for an unusable address.
 */
int notify_init(char *err, size_t errlen);
/* True when systemd listens. */
bool notify_enabled(void);
/* Send one state change ("READY=1\nSTATUS=..."); failures are logged at debug level. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Close the socket. */
void notify_close(void);

#endif
