/* notify.c — systemd's readiness protocol, written out (no libsystemd). */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen;

int notify_init(char *err, size_t errlen)
{
        const char *v = getenv("NOTIFY_SOCKET");
        size_t len;

        if (v == NULL || v[0] == '\0')
                return 0;
        len = strlen(v);
        if ((v[0] != '/' && v[0] != '@') || len >= sizeof(notify_addr.sun_path)) {
                snprintf(err, errlen, "NOTIFY_SOCKET=\"%s\" is not a socket path ferryd can use",
                         v);
                return -1;
        }
        memset(&notify_addr, 0, sizeof(notify_addr));
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, v, len);
        if (v[0] == '@')
                notify_addr.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL */
        notify_addrlen =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (v[0] == '@' ? 0 : 1));
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (notify_fd < 0) {
                snprintf(err, errlen, "cannot make a socket for NOTIFY_SOCKET: %s",
                         strerror(errno));
                return -1;
        }
        unsetenv("NOTIFY_SOCKET");
        return 0;
}

bool notify_enabled(void)
{
        return notify_fd >= 0;
}

void notify_send(const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        int n;

        if (notify_fd < 0)
                return;
        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n >= sizeof(msg))
                n = (int)sizeof(msg) - 1;
        if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
                   notify_addrlen) < 0)
                log_debug("cannot tell systemd \"%.40s\": %s", msg, strerror(errno));
}

void notify_close(void)
{
        if (notify_fd >= 0)
                close(notify_fd);
        notify_fd = -1;
}
