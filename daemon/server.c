/* server.c — the control socket's listener and its housekeeping. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "connection.h"
#include "daemon.h"
#include "ferry_base.h"
#include "log.h"
#include "ops.h"
#include "proto.h"
#include "util.h"

#define SERVER_FD_RESERVE 32 /* descriptors kept free for snapshots, SQLite, curl */
#define SERVER_ACCEPTS_PER_WAKE 64
#define SERVER_PAUSE_MS 100       /* after running out of descriptors */
#define SERVER_SWEEP_MS 1000      /* housekeeping period */
#define SERVER_LOG_EVERY_MS 60000 /* a kind of refusal is logged at most this often */

enum refusal { REFUSE_UID, REFUSE_UID_CAP, REFUSE_FULL, REFUSE_EVICTED, REFUSE_HELLO, REFUSE_N };

struct server {
        struct daemon *d;
        int fd;
        uv_poll_t poll;
        uv_timer_t sweep; /* hello timeouts */
        uv_timer_t pause; /* accepting again after running out of descriptors */
        int handles;      /* open uv handles */
        bool activated;   /* the socket came from systemd (LISTEN_FDS): not ours to unlink */
        bool stopping;
        int reserve_fd; /* /dev/null, given up to accept and refuse when out of descriptors */
        struct client *clients;
        int nclients;
        int max_clients;         /* within the descriptor limit */
        struct client_host host; /* what connections see of the server */
        uint64_t round_floor;    /* connections of a serial above it came in this accept round */
        struct {
                int64_t last_ms;
                uint64_t count, logged;
        } refusals[REFUSE_N];
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static const char *const refusal_names[REFUSE_N] = {
    "a peer of another user", "a user over its connection cap", "no room for another connection",
    "an idle connection closed to make room", "a connection that never said hello"};

/* Log one kind of refusal, at most once a minute, with how many there were. */
static void server_note(struct server *srv, enum refusal kind, uid_t uid)
{
        int64_t now = util_mono_ms();

        srv->refusals[kind].count++;
        if (srv->refusals[kind].last_ms != 0 &&
            now - srv->refusals[kind].last_ms < SERVER_LOG_EVERY_MS)
                return;
        log_warn("refused %s (uid %u); %llu such refusals since the last note", refusal_names[kind],
                 (unsigned)uid,
                 (unsigned long long)(srv->refusals[kind].count - srv->refusals[kind].logged));
        srv->refusals[kind].logged = srv->refusals[kind].count;
        srv->refusals[kind].last_ms = now;
}

static struct server *host_server(struct client_host *host)
{
        return (struct server *)((char *)host - offsetof(struct server, host));
}

static void server_client_added(struct client_host *host, struct client *c)
{
        struct server *srv = host_server(host);

        client_link(c, &srv->clients);
        srv->nclients++;
}

static void server_client_gone(struct client_host *host, struct client *c)
{
        struct server *srv = host_server(host);

        client_unlink(c, &srv->clients);
        srv->nclients--;
        ops_client_closed(c);
}

static void server_client_request(struct client_host *host, struct client *c, uint64_t id,
                                  const char *op, cJSON *req, int *fds, int nfds)
{
        ops_dispatch(host_server(host)->d, c, id, op, req, fds, nfds);
}

/*
 * Is the peer allowed in? Its own user and root; members of allow_group too,
 * as their primary group or a supplementary one (SO_PEERGROUPS: the groups the
 * peer had when it connected).
 */
static bool server_peer_allowed(struct server *srv, int fd, uid_t uid, gid_t gid)
{
        const struct config *cfg = &srv->d->cfg;
        gid_t groups[256];
        socklen_t len = sizeof(groups);
        size_t i;

        if (uid == getuid() || uid == 0)
                return true;
        if (!cfg->have_allow_gid)
                return false;
        if (gid == cfg->allow_gid)
                return true;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
                return false; /* more than 256 groups, or an old kernel: the primary one only */
        for (i = 0; i < len / sizeof(gid_t); i++)
                if (groups[i] == cfg->allow_gid)
                        return true;
        return false;
}

static int server_count_uid(struct server *srv, uid_t uid)
{
        struct client *c;
        int n = 0;

        for (c = srv->clients; c != NULL; c = client_next(c))
                if (!client_closed(c) && client_uid(c) == uid)
                        n++;
        return n;
}

/*
 * Close the connection that loses least by closing, to make room: idle
 * (nothing pending, nothing queued), then by rank — never said hello, then
 * another user's, then the daemon's own — then the longest idle.
 */
static bool server_evict(struct server *srv, const struct client *keep)
{
        struct client *c, *best = NULL;
        int best_rank = 0;

        for (c = srv->clients; c != NULL; c = client_next(c)) {
                int rank;

                if (c == keep || client_serial(c) > srv->round_floor || client_closed(c) ||
                    !client_idle(c))
                        continue;
                rank = !client_said_hello(c) ? 3 : client_uid(c) != getuid() ? 2 : 1;
                /* The longest idle goes first; of those accepted in the same millisecond, the
                 * first accepted (the list runs newest first). */
                if (best == NULL || rank > best_rank ||
                    (rank == best_rank &&
                     (client_last_active_ms(c) < client_last_active_ms(best) ||
                      (client_last_active_ms(c) == client_last_active_ms(best) &&
                       client_serial(c) < client_serial(best))))) {
                        best = c;
                        best_rank = rank;
                }
        }
        if (best == NULL)
                return false;
        server_note(srv, REFUSE_EVICTED, client_uid(best));
        client_refuse(best, 0, FERRY_EBUSY,
                      "ferryd closed this idle connection to make room for a new one");
        return true;
}

static void server_accept_cb(uv_poll_t *h, int status, int events);

static void server_pause_cb(uv_timer_t *t)
{
        struct server *srv = t->data;

        if (!srv->stopping)
                uv_poll_start(&srv->poll, UV_READABLE, server_accept_cb);
}

/* Out of descriptors: make room, or take the connection only to tell it so. */
static void server_out_of_fds(struct server *srv)
{
        int fd;

        if (server_evict(srv, NULL))
                return; /* the next accept finds room */
        if (srv->reserve_fd >= 0) {
                close(srv->reserve_fd);
                srv->reserve_fd = -1;
                fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0) {
                        static const char msg[] = "ferryd has no descriptor left for another "
                                                  "connection (its open-file limit); try again";
                        cJSON *rep = proto_reply_error(0, FERRY_EBUSY, "%s", msg);
                        char *frame = NULL;
                        size_t len;

                        if (rep != NULL && proto_frame_encode(rep, &frame, &len) == 0 &&
                            send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                                log_debug("cannot tell a refused client why: %s", strerror(errno));
                        free(frame);
                        cJSON_Delete(rep);
                        close(fd);
                        server_note(srv, REFUSE_FULL, (uid_t)-1);
                }
                srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        /* Do not spin on a listener we cannot serve: wait a little. */
        uv_poll_stop(&srv->poll);
        uv_timer_start(&srv->pause, server_pause_cb, SERVER_PAUSE_MS, 0);
}

static void server_accept_one(struct server *srv, int fd)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        struct client *c;
        bool own;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
                close(fd);
                return;
        }
        c = client_new(&srv->host, fd, cred.uid, cred.gid);
        if (c == NULL)
                return;
        if (!server_peer_allowed(srv, fd, cred.uid, cred.gid)) {
                server_note(srv, REFUSE_UID, cred.uid);
                client_refuse(c, 0, FERRY_EPERM,
                              srv->d->cfg.have_allow_gid
                                  ? "permission denied: this ferryd serves its own user and the "
                                    "members of its allow_group only"
                                  : "permission denied: this ferryd serves its own user only");
                return;
        }
        own = cred.uid == getuid() || cred.uid == 0;
        if (!own && server_count_uid(srv, cred.uid) > srv->d->cfg.max_clients_per_uid) {
                server_note(srv, REFUSE_UID_CAP, cred.uid);
                client_refuse(c, 0, FERRY_EBUSY,
                              "too many connections from this user; close some and try again");
                return;
        }
        /* Room for it: the new connection counts already; an idle one may make way. */
        if (srv->nclients > srv->max_clients && !server_evict(srv, c)) {
                server_note(srv, REFUSE_FULL, cred.uid);
                client_refuse(c, 0, FERRY_EBUSY, "ferryd has too many clients; try again");
                return;
        }
        /* A client says hello as soon as it connects: read it now, so that a flood of
         * connections accepted after this one cannot take it for an idle one. */
        client_read_now(c);
}

/* Is a connection waiting on the listener? */
static bool server_pending(struct server *srv)
{
        struct pollfd p = {.fd = srv->fd, .events = POLLIN};

        return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void server_accept_cb(uv_poll_t *h, int status, int events)
{
        struct server *srv = h->data;
        int i, fd;

        /* Connections accepted from here on are never evicted in this round. */
        srv->round_floor = srv->clients != NULL ? client_serial(srv->clients) : 0;
        for (i = 0; i < SERVER_ACCEPTS_PER_WAKE && !srv->stopping; i++) {
                fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                        server_accept_one(srv, fd);
                        continue;
                }
                if (errno == EINTR || errno == ECONNABORTED)
                        continue;
                if (errno == EMFILE || errno == ENFILE) {
                        /* accept() says so before it looks: make room only for a real one. */
                        if (server_pending(srv))
                                server_out_of_fds(srv);
                        return;
                }
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                        log_warn("accept: %s", strerror(errno));
                return;
        }
}

/* Close connections that never said hello in time. */
static void server_sweep_cb(uv_timer_t *t)
{
        struct server *srv = t->data;
        int64_t now = util_mono_ms();
        struct client *c, *next;

        for (c = srv->clients; c != NULL; c = next) {
                next = client_next(c);
                if (!client_closed(c) && !client_said_hello(c) &&
                    now - client_opened_ms(c) > srv->d->cfg.hello_timeout_ms) {
                        server_note(srv, REFUSE_HELLO, client_uid(c));
                        client_refuse(c, 0, FERRY_ETIMEDOUT, "say hello first, and in time");
                }
        }
}

/* Make the socket's directory: ours, a directory, 0700 (0710 for an allowed group). */
static int server_prepare_dir(struct server *srv, const char *sock, char *err, size_t errlen)
{
        const struct config *cfg = &srv->d->cfg;
        char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        mode_t mode = cfg->have_allow_gid ? 0710 : 0700;
        char *slash;
        struct stat st;
        int rc;

        snprintf(dir, sizeof(dir), "%s", sock);
        slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir)
                return 0;
        *slash = '\0';
        if ((rc = util_mkdir_p(dir, 0700)) != 0) {
                snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-rc));
                return -1;
        }
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
                snprintf(err, errlen,
                         "%s must be a directory owned by uid %u, and is %s (uid %u): someone "
                         "else made it; remove it or set FERRY_SOCKET elsewhere",
                         dir, (unsigned)getuid(),
                         lstat(dir, &st) != 0   ? "missing"
                         : S_ISLNK(st.st_mode)  ? "a symbolic link"
                         : !S_ISDIR(st.st_mode) ? "not a directory"
                                                : "a directory",
                         (unsigned)st.st_uid);
                return -1;
        }
        if ((st.st_mode & (S_ISVTX | 002)) != 0) {
                snprintf(err, errlen,
                         "%s is shared (mode %04o): the socket needs a directory of its own, "
                         "such as %s/ferry",
                         dir, (unsigned)(st.st_mode & 07777), dir);
                return -1;
        }
        if (cfg->have_allow_gid && st.st_gid != cfg->allow_gid &&
            chown(dir, (uid_t)-1, cfg->allow_gid) != 0) {
                snprintf(err, errlen, "cannot give %s to group %u: %s", dir,
                         (unsigned)cfg->allow_gid, strerror(errno));
                return -1;
        }
        if ((st.st_mode & 07777) != mode && chmod(dir, mode) != 0) {
                snprintf(err, errlen, "cannot make %s private: %s", dir, strerror(errno));
                return -1;
        }
        return 0;
}

/* A socket file exists: is a daemon listening there? 1 yes, 0 stale (removed), -1 error. */
static int server_probe(const char *path, char *err, size_t errlen)
{
        struct sockaddr_un sa;
        struct stat st;
        int fd, rc;

        if (lstat(path, &st) != 0)
                return 0;
        if (!S_ISSOCK(st.st_mode)) {
                snprintf(err, errlen, "%s exists and is not a socket; move it away", path);
                return -1;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                snprintf(err, errlen, "socket: %s", strerror(errno));
                return -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0) {
                snprintf(err, errlen, "another ferryd is already listening on %s", path);
                return 1;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
                snprintf(err, errlen, "cannot remove the stale socket %s: %s", path,
                         strerror(errno));
                return -1;
        }
        log_info("replaced the stale socket %s", path);
        return 0;
}

/* A listening socket handed over by systemd (LISTEN_FDS, fd 3), or -1. */
static int server_activated_fd(void)
{
        const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
        int type = 0, listening = 0;
        socklen_t len = sizeof(int);

        if (pid == NULL || fds == NULL || strtol(pid, NULL, 10) != (long)getpid() ||
            strtol(fds, NULL, 10) < 1)
                return -1;
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
            getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
                return -1;
        fcntl(3, F_SETFD, FD_CLOEXEC);
        fcntl(3, F_SETFL, fcntl(3, F_GETFL) | O_NONBLOCK);
        return 3;
}

static int server_bind(struct server *srv, char *err, size_t errlen)
{
        const struct config *cfg = &srv->d->cfg;
        struct sockaddr_un sa;
        mode_t old;
        int rc;

        if (server_prepare_dir(srv, srv->path, err, errlen) != 0 ||
            server_probe(srv->path, err, errlen) != 0)
                return -1;
        srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (srv->fd < 0) {
                snprintf(err, errlen, "socket: %s", strerror(errno));
                return -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, srv->path, strlen(srv->path) + 1);
        old = umask(0177);
        rc = bind(srv->fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (rc == 0 && cfg->have_allow_gid &&
            (chown(srv->path, (uid_t)-1, cfg->allow_gid) != 0 || chmod(srv->path, 0660) != 0))
                rc = -1;
        if (rc == 0)
                rc = listen(srv->fd, SOMAXCONN);
        if (rc != 0) {
                snprintf(err, errlen, "cannot listen on %s: %s", srv->path, strerror(errno));
                return -1;
        }
        return 0;
}

static void server_handle_closed_cb(uv_handle_t *h)
{
        struct server *srv = h->data;

        if (--srv->handles > 0)
                return;
        if (srv->fd >= 0)
                close(srv->fd);
        if (srv->reserve_fd >= 0)
                close(srv->reserve_fd);
        free(srv);
}

int server_start(struct server **out, struct daemon *d, char *err, size_t errlen)
{
        struct server *srv;
        struct rlimit rl;

        *out = NULL;
        if (strlen(d->cfg.socket_path) >= sizeof(srv->path)) {
                snprintf(err, errlen, "socket path %s is too long", d->cfg.socket_path);
                return -1;
        }
        srv = calloc(1, sizeof(*srv));
        if (srv == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
        }
        srv->d = d;
        srv->reserve_fd = -1;
        srv->host = (struct client_host){.loop = d->loop,
                                         .backend = d->cfg.backend,
                                         .added = server_client_added,
                                         .gone = server_client_gone,
                                         .request = server_client_request};
        snprintf(srv->path, sizeof(srv->path), "%s", d->cfg.socket_path);
        srv->fd = server_activated_fd();
        if (srv->fd >= 0) {
                srv->activated = true;
                log_info("serving the socket systemd passed (LISTEN_FDS)");
        } else if (server_bind(srv, err, errlen) != 0) {
                if (srv->fd >= 0)
                        close(srv->fd);
                free(srv);
                return -1;
        }
        srv->max_clients = d->cfg.max_clients;
        /* Connections may hold what the open-file limit leaves beyond a reserve. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (rlim_t)srv->max_clients + SERVER_FD_RESERVE > rl.rlim_cur)
                srv->max_clients = rl.rlim_cur > SERVER_FD_RESERVE + 4
                                       ? (int)(rl.rlim_cur - SERVER_FD_RESERVE)
                                       : 4;
        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        uv_poll_init(d->loop, &srv->poll, srv->fd);
        uv_timer_init(d->loop, &srv->sweep);
        uv_timer_init(d->loop, &srv->pause);
        srv->poll.data = srv->sweep.data = srv->pause.data = srv;
        srv->handles = 3;
        uv_poll_start(&srv->poll, UV_READABLE, server_accept_cb);
        uv_timer_start(&srv->sweep, server_sweep_cb, SERVER_SWEEP_MS, SERVER_SWEEP_MS);
        *out = srv;
        return 0;
}

void server_stop(struct server *srv)
{
        if (srv == NULL)
                return;
        srv->stopping = true;
        while (srv->clients != NULL)
                client_close(srv->clients, false);
        if (!srv->activated)
                unlink(srv->path);
        uv_close((uv_handle_t *)&srv->poll, server_handle_closed_cb);
        uv_close((uv_handle_t *)&srv->sweep, server_handle_closed_cb);
        uv_close((uv_handle_t *)&srv->pause, server_handle_closed_cb);
}
