/*
 * test_server.c — the control socket: one connection (daemon/connection.c)
 * against a fake listener (struct client_host) over a socketpair, then the
 * listener itself (daemon/server.c) on a real Unix socket in a temporary
 * directory, its requests going to the real ops table.
 *
 * Connection: the hello rules (another protocol closes; requests before
 * hello are refused and the connection stays), frames with descriptors
 * (SCM_RIGHTS) matched to their frame and checked against "fds", bad frames
 * (bad JSON keeps the connection, a bad header or unmatched descriptors end
 * it), backpressure (a client that does not read is not read either, then
 * dropped past the cap), the host's added/gone called exactly once per
 * connection whatever ends it.
 * Listener: the socket's modes, a live daemon is not displaced and a stale
 * socket is, the hello timeout, eviction (the longest idle, never the
 * newcomer; refusal when none is idle), the per-uid cap and peers of another
 * user (as root: connections made with another effective uid), descriptors
 * of a request closed once it ends, every client closed by server_stop.
 * Every test checks that no descriptor stays open (tests/uvtest.h).
 */
#include "connection.h"

#include <grp.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "daemon.h"
#include "ferry_base.h"
#include "log.h"
#include "proto.h"
#include "server.h"
#include "testpeer.h"
#include "uvtest.h"

/*
 * Known daemon bugs. The test that shows one checks today's behaviour, so
 * that a fix makes it fail: then set the switch to 1 (or pass -DFIXED_...=1)
 * and it checks the documented behaviour instead.
 */
#ifndef FIXED_ACCEPT_EMFILE_EVICTS
#define FIXED_ACCEPT_EMFILE_EVICTS 1 /* server.c, server_accept_cb: EMFILE with nobody waiting */
#endif

/* main.c's; the ops that call it are not exercised here. */
void daemon_log_finished(struct daemon *d)
{
        d->inflight_logs--;
}

/* ---- a fake listener ---- */

struct seen_request {
        struct client *c;
        uint64_t id;
        char op[32];
        int nfds;
        ino_t ino[4]; /* what the descriptors it got are */
        bool had_fds_field;
};

enum reply_mode { REPLY_NONE, REPLY_ECHO, REPLY_BIG };

static struct fake_host {
        struct client_host host;
        struct client *clients[16];
        int added[16], gone[16];
        int n;
        struct seen_request reqs[64];
        int nreqs;
        enum reply_mode mode;
        size_t big; /* bytes of padding in REPLY_BIG replies */
        bool close_after_reply;
} fh;

/* The connection `c` is (the newest with that address: a freed one's may be reused). */
static int fh_index(struct client *c)
{
        int i;

        for (i = fh.n - 1; i >= 0; i--)
                if (fh.clients[i] == c)
                        return i;
        return -1;
}

static void fh_added(struct client_host *host, struct client *c)
{
        CHECK(host == &fh.host);
        CHECK(fh.n < 16);
        if (fh.n >= 16)
                return;
        fh.clients[fh.n] = c;
        fh.added[fh.n]++;
        fh.n++;
}

static void fh_gone(struct client_host *host, struct client *c)
{
        int i = fh_index(c);

        CHECK(i >= 0);
        if (i >= 0)
                fh.gone[i]++;
        CHECK(client_closed(c));
}

static void fh_request(struct client_host *host, struct client *c, uint64_t id, const char *op,
                       cJSON *req, int *fds, int nfds)
{
        struct seen_request *r = &fh.reqs[fh.nreqs < 64 ? fh.nreqs : 63];
        struct stat st;
        cJSON *rep;
        int i;

        CHECK(client_said_hello(c));
        memset(r, 0, sizeof(*r));
        r->c = c;
        r->id = id;
        snprintf(r->op, sizeof(r->op), "%s", op);
        r->nfds = nfds;
        r->had_fds_field = cJSON_GetObjectItemCaseSensitive(req, "fds") != NULL;
        for (i = 0; i < nfds; i++) {
                if (i < 4 && fstat(fds[i], &st) == 0)
                        r->ino[i] = st.st_ino;
                close(fds[i]);
        }
        free(fds);
        if (fh.nreqs < 64)
                fh.nreqs++;
        if (fh.mode != REPLY_NONE) {
                rep = proto_reply_ok(id);
                cJSON_AddStringToObject(rep, "op", op);
                if (fh.mode == REPLY_BIG) {
                        char *pad = malloc(fh.big + 1);

                        memset(pad, 'x', fh.big);
                        pad[fh.big] = '\0';
                        cJSON_AddStringToObject(rep, "pad", pad);
                        free(pad);
                }
                client_send(c, rep);
                cJSON_Delete(rep);
        }
        cJSON_Delete(req);
        if (fh.close_after_reply)
                client_close(c, true);
}

static void fh_init(void)
{
        memset(&fh, 0, sizeof(fh));
        fh.host.loop = uvtest_loop;
        fh.host.backend = "testbackend";
        fh.host.added = fh_added;
        fh.host.gone = fh_gone;
        fh.host.request = fh_request;
        fh.mode = REPLY_ECHO;
}

/* A connection served by client_new() on one end of a socketpair; the peer gets the other. */
static struct client *fh_connect(struct testpeer *p)
{
        int sv[2];
        struct client *c;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
                perror("socketpair");
                exit(1);
        }
        testpeer_init(p, sv[0]);
        c = client_new(&fh.host, sv[1], getuid(), getgid());
        CHECK(c != NULL);
        return c;
}

static void say_hello(struct testpeer *p)
{
        cJSON *r = testpeer_call(p, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");

        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
}

/* A file of the test directory, open read-only. */
static int open_file(const char *name, ino_t *ino)
{
        struct stat st;
        int fd = open(uvtest_path(name), O_RDWR | O_CREAT | O_CLOEXEC, 0600);

        if (fd >= 0 && fstat(fd, &st) == 0 && ino != NULL)
                *ino = st.st_ino;
        return fd;
}

/* Every connection the fake host saw was added once and is gone once. */
static void check_each_once(void)
{
        int i;

        for (i = 0; i < fh.n; i++) {
                CHECK_INT(fh.added[i], 1);
                CHECK_INT(fh.gone[i], 1);
        }
        CHECK_INT(fh.host.queued, 0);
}

/* ---- connection tests ---- */

static void test_hello_rules(void)
{
        struct testpeer p, q;
        struct client *c;
        cJSON *r;

        fh_init();
        c = fh_connect(&p);
        CHECK_INT(fh.n, 1);
        CHECK_INT(fh.added[0], 1);
        CHECK(!client_said_hello(c));

        /* A request before hello is refused; the connection stays. */
        r = testpeer_call(&p, "{\"id\":7,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "protocol_error");
        CHECK_STR(testpeer_message(r), "say hello first");
        CHECK_INT(testpeer_id(r), 7);
        cJSON_Delete(r);
        CHECK_INT(fh.nreqs, 0);
        CHECK(!p.eof);

        r = testpeer_call(&p, "{\"id\":8,\"op\":\"hello\",\"protocol\":2,\"client\":\"t/1\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_INT(testpeer_id(r), 8);
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "protocol")), PROTO_VERSION);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "backend")), "testbackend");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "daemon")),
                  "ferryd/" FERRY_VERSION_STRING);
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "pid")), getpid());
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "uid")), getuid());
        cJSON_Delete(r);
        CHECK(client_said_hello(c));

        /* After hello, requests reach the host, in order. */
        r = testpeer_call(&p, "{\"id\":9,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        CHECK_INT(fh.nreqs, 1);
        CHECK_STR(fh.reqs[0].op, "status");
        CHECK_INT(fh.reqs[0].id, 9);
        /* A second hello is answered again, and does not reach the host. */
        r = testpeer_call(&p, "{\"id\":10,\"op\":\"hello\",\"protocol\":2}");
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        CHECK_INT(fh.nreqs, 1);
        CHECK_INT(fh.gone[0], 0);
        testpeer_close(&p);
        UVTEST_WAIT_INT(&fh.gone[0], 1, 2000);

        /* Another protocol: refused and closed. */
        c = fh_connect(&q);
        r = testpeer_call(&q, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}");
        CHECK_STR(testpeer_code(r), "protocol_mismatch");
        CHECK_STR(testpeer_message(r), "client speaks protocol 1, ferryd speaks protocol 2; use "
                                       "matching versions of ferry and ferryd");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&q, 2000));
        CHECK_INT(fh.gone[1], 1);
        testpeer_close(&q);

        /* No protocol, or not an integer: refused and closed. */
        fh_connect(&q);
        r = testpeer_call(&q, "{\"id\":2,\"op\":\"hello\"}");
        CHECK_STR(testpeer_code(r), "protocol_error");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&q, 2000));
        testpeer_close(&q);
        fh_connect(&q);
        r = testpeer_call(&q, "{\"id\":3,\"op\":\"hello\",\"protocol\":\"2\"}");
        CHECK_STR(testpeer_code(r), "protocol_error");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&q, 2000));
        testpeer_close(&q);
        CHECK_INT(fh.n, 4);
        CHECK_INT(fh.nreqs, 1);
        check_each_once();
}

/* Descriptors travel with their frame; "fds" must count them; the op never sees "fds". */
static void test_frame_descriptors(void)
{
        static const char frame_a[] = "{\"id\":21,\"op\":\"take\",\"fds\":2}";
        struct testpeer p;
        ino_t ia = 0, ib = 0;
        int fds[2], base;
        cJSON *r;

        fh_init();
        fh_connect(&p);
        say_hello(&p);
        fds[0] = open_file("a", &ia);
        fds[1] = open_file("b", &ib);
        base = count_fds();
        CHECK_INT(testpeer_send(&p, frame_a, fds, 2), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        CHECK_INT(fh.nreqs, 1);
        CHECK_INT(fh.reqs[0].nfds, 2);
        CHECK(fh.reqs[0].ino[0] == ia); /* in the order of the control message */
        CHECK(fh.reqs[0].ino[1] == ib);
        CHECK(!fh.reqs[0].had_fds_field);
        CHECK_INT(count_fds(), base); /* the daemon's copies are the host's, closed by it */

        /* Pipelined: a frame with one descriptor, then a frame without, in separate sends. */
        CHECK_INT(testpeer_send(&p, "{\"id\":22,\"op\":\"one\",\"fds\":1}", fds, 1), 0);
        CHECK_INT(testpeer_send(&p, "{\"id\":23,\"op\":\"none\"}", NULL, 0), 0);
        CHECK_INT(testpeer_send(&p, "{\"id\":24,\"op\":\"zero\",\"fds\":0}", NULL, 0), 0);
        cJSON_Delete(testpeer_recv(&p, 2000));
        cJSON_Delete(testpeer_recv(&p, 2000));
        cJSON_Delete(testpeer_recv(&p, 2000));
        CHECK_INT(fh.nreqs, 4);
        CHECK_INT(fh.reqs[1].nfds, 1);
        CHECK(fh.reqs[1].ino[0] == ia);
        CHECK_INT(fh.reqs[2].nfds, 0);
        CHECK_INT(fh.reqs[3].nfds, 0);
        CHECK_STR(fh.reqs[3].op, "zero");

        /* Not JSON: an error reply, its descriptors closed, the connection goes on. */
        CHECK_INT(testpeer_send(&p, "{\"id\":25,", fds, 1), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "protocol_error");
        CHECK_STR(testpeer_message(r), "request is not valid JSON");
        cJSON_Delete(r);
        CHECK_INT(count_fds(), base);
        CHECK(!p.eof);
        r = testpeer_call(&p, "{\"id\":26,\"op\":\"after\"}");
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        CHECK_INT(fh.nreqs, 5);

        /* More descriptors than declared: refused with the id, descriptors closed, connection
         * closed. */
        CHECK_INT(testpeer_send(&p, "{\"id\":27,\"op\":\"take\",\"fds\":1}", fds, 2), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "protocol_error");
        CHECK_INT(testpeer_id(r), 27);
        CHECK_STR(testpeer_message(r),
                  "the frame's \"fds\" does not match the descriptors that came with it");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        CHECK_INT(fh.nreqs, 5);
        CHECK_INT(count_fds(), base - 1); /* the daemon closed its end, and both descriptors */
        testpeer_close(&p);
        UVTEST_WAIT_INT(&fh.gone[0], 1, 2000);

        /* Declared but not sent. */
        fh_connect(&p);
        say_hello(&p);
        r = testpeer_call(&p, "{\"id\":28,\"op\":\"take\",\"fds\":1}");
        CHECK_STR(testpeer_code(r), "protocol_error");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        testpeer_close(&p);

        /* Two batches of descriptors in one frame: they cannot be matched. */
        fh_connect(&p);
        say_hello(&p);
        {
                char frame[64];
                uint32_t be;
                size_t len = strlen(frame_a);

                be = htonl((uint32_t)len);
                memcpy(frame, &be, 4);
                memcpy(frame + 4, frame_a, len);
                CHECK_INT(testpeer_send_raw(&p, frame, 10, &fds[0], 1), 0);
                CHECK_INT(testpeer_send_raw(&p, frame + 10, len + 4 - 10, &fds[1], 1), 0);
        }
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "protocol_error");
        CHECK_INT(testpeer_id(r), 0);
        CHECK_STR(testpeer_message(r), "descriptors arrived that belong to no request");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        CHECK_INT(count_fds(), base - 1); /* as above */
        testpeer_close(&p);

        /* A header announcing nothing, or more than a frame may hold: refused, closed. */
        fh_connect(&p);
        CHECK_INT(testpeer_send_raw(&p, "\0\0\0\0", 4, NULL, 0), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "protocol_error");
        CHECK_STR(testpeer_message(r), "frame announces an empty message");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        testpeer_close(&p);
        fh_connect(&p);
        CHECK_INT(testpeer_send_raw(&p, "\0\x10\0\x01", 4, NULL, 0), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "frame_too_large");
        CHECK_INT(testpeer_id(r), 0);
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        testpeer_close(&p);

        close(fds[0]);
        close(fds[1]);
        CHECK_INT(fh.n, 5);
        UVTEST_WAIT(fh.gone[fh.n - 1] == 1, 2000);
        check_each_once();
}

/* A client that does not read its replies is not read either; it is read again once they drain. */
static void test_backpressure_hold(void)
{
        struct testpeer p;
        struct client *c;
        int i, held_at;
        cJSON *r;

        fh_init();
        c = fh_connect(&p);
        say_hello(&p);
        fh.mode = REPLY_BIG;
        fh.big = 300 * 1024;
        for (i = 0; i < 20; i++)
                CHECK_INT(testpeer_sendf(&p, "{\"id\":%d,\"op\":\"big\"}", 100 + i), 0);
        uvtest_run_for(100);
        held_at = fh.nreqs;
        /* Past 1 MiB of unread replies (beyond what the socket holds) it stops reading. */
        CHECK(held_at >= 4);
        CHECK(held_at < 20);
        CHECK(fh.host.queued > (1u << 20));
        CHECK(!client_idle(c));
        uvtest_run_for(100);
        CHECK_INT(fh.nreqs, held_at);
        /* The client reads: every request is handled, every reply comes, in order. */
        for (i = 0; i < 20; i++) {
                r = testpeer_recv(&p, 5000);
                CHECK_INT(testpeer_id(r), 100 + i);
                CHECK_INT(strlen(cJSON_GetStringValue(cJSON_GetObjectItem(r, "pad")) ?: ""),
                          300 * 1024);
                cJSON_Delete(r);
        }
        CHECK_INT(fh.nreqs, 20);
        CHECK_INT(fh.host.queued, 0);
        CHECK(client_idle(c));
        CHECK_INT(fh.gone[0], 0);
        testpeer_close(&p);
        UVTEST_WAIT_INT(&fh.gone[0], 1, 2000);
        check_each_once();
}

/* Past 32 MiB of unread replies the client is dropped; later sends to it are dropped too. */
static void test_backpressure_drop(void)
{
        struct testpeer p;
        struct client *c;
        cJSON *msg;
        char *pad;
        int i;

        fh_init();
        c = fh_connect(&p);
        say_hello(&p);
        client_ref(c); /* the test holds it, as a pending asynchronous reply would */
        pad = malloc(900 * 1024 + 1);
        memset(pad, 'y', 900 * 1024);
        pad[900 * 1024] = '\0';
        msg = proto_reply_ok(5);
        cJSON_AddStringToObject(msg, "pad", pad);
        free(pad);
        for (i = 0; i < 60 && !client_closed(c); i++)
                client_send(c, msg);
        CHECK(client_closed(c));
        CHECK(i > 30); /* 32 MiB: about 36 of these, less what the socket took */
        CHECK(i < 45);
        CHECK_INT(fh.gone[0], 1);
        CHECK_INT(fh.host.queued, 0);
        client_send(c, msg); /* to a closed client: dropped */
        cJSON_Delete(msg);
        client_unref(c);
        CHECK(testpeer_wait_eof(&p, 5000));
        testpeer_close(&p);
        uvtest_run_for(10);
        check_each_once();
}

/* However a connection ends, the host hears of it once; a flushed close delivers the reply. */
static void test_end_paths(void)
{
        struct testpeer p[4];
        struct client *c[4];
        cJSON *r;

        fh_init();
        /* 0: the host answers and closes with flush: the reply arrives, then the end. */
        c[0] = fh_connect(&p[0]);
        say_hello(&p[0]);
        fh.close_after_reply = true;
        r = testpeer_call(&p[0], "{\"id\":3,\"op\":\"bye\"}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_INT(testpeer_id(r), 3);
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p[0], 2000));
        CHECK_INT(fh.gone[0], 1);
        fh.close_after_reply = false;

        /* 1: the peer leaves in the middle of a frame. */
        c[1] = fh_connect(&p[1]);
        say_hello(&p[1]);
        CHECK_INT(testpeer_send_raw(&p[1], "\0\0\0\x20{\"id\"", 9, NULL, 0), 0);
        uvtest_run_for(20);
        CHECK(!client_idle(c[1])); /* a partial frame is buffered */
        testpeer_close(&p[1]);
        UVTEST_WAIT_INT(&fh.gone[1], 1, 2000);

        /* 2: the host closes twice (and the peer leaves afterwards). */
        c[2] = fh_connect(&p[2]);
        client_ref(c[2]);
        client_close(c[2], false);
        client_close(c[2], false);
        CHECK(client_closed(c[2]));
        CHECK_INT(fh.gone[2], 1);
        client_unref(c[2]);
        CHECK(testpeer_wait_eof(&p[2], 2000));
        testpeer_close(&p[2]);

        /* 3: refused: one error reply with id 0, then the end. */
        c[3] = fh_connect(&p[3]);
        client_refuse(c[3], 0, FERRY_EBUSY, "go away");
        r = testpeer_recv(&p[3], 2000);
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_STR(testpeer_message(r), "go away");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p[3], 2000));
        testpeer_close(&p[3]);
        testpeer_close(&p[0]);
        uvtest_run_for(20);
        CHECK_INT(fh.n, 4);
        check_each_once();
        (void)c;
}

/* ---- the listener ---- */

static struct daemon d;
static struct server *srv;

static void daemon_init(void)
{
        memset(&d, 0, sizeof(d));
        d.loop = uvtest_loop;
        snprintf(d.cfg.socket_path, sizeof(d.cfg.socket_path), "%s",
                 uvtest_path("run/ferryd.sock"));
        snprintf(d.cfg.state_dir, sizeof(d.cfg.state_dir), "%s", uvtest_dir);
        snprintf(d.cfg.backend, sizeof(d.cfg.backend), "local");
        d.cfg.max_clients = 100;
        d.cfg.max_clients_per_uid = 64;
        d.cfg.hello_timeout_ms = 10000;
}

static void start_server(void)
{
        char err[512] = "";

        srv = NULL;
        if (server_start(&srv, &d, err, sizeof(err)) != 0) {
                fprintf(stderr, "server_start: %s\n", err);
                check_failures++;
        }
}

/* A connected peer (accepted when the loop next runs). */
static void peer_connect(struct testpeer *p)
{
        struct sockaddr_un sa;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.cfg.socket_path);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                perror("connect");
                check_failures++;
        }
        testpeer_init(p, fd);
}

/* Still served: an unknown op gets unknown_op. */
static bool served(struct testpeer *p, int id)
{
        cJSON *r;
        bool ok;

        testpeer_sendf(p, "{\"id\":%d,\"op\":\"nope\"}", id);
        r = testpeer_recv(p, 2000);
        ok = strcmp(testpeer_code(r), "unknown_op") == 0 && testpeer_id(r) == id;
        cJSON_Delete(r);
        return ok;
}

static void test_listener(void)
{
        struct testpeer p;
        struct server *second = NULL;
        struct stat st;
        char err[512] = "";
        cJSON *r;
        int fd;

        daemon_init();
        start_server();
        CHECK_INT(lstat(d.cfg.socket_path, &st), 0);
        CHECK(S_ISSOCK(st.st_mode));
        CHECK_INT(st.st_mode & 0777, 0600);
        CHECK_INT(lstat(uvtest_path("run"), &st), 0);
        CHECK_INT(st.st_mode & 07777, 0700);

        /* A live daemon on the path is not displaced. */
        CHECK_INT(server_start(&second, &d, err, sizeof(err)), -1);
        CHECK(strstr(err, "another ferryd is already listening on") != NULL);
        CHECK(second == NULL);

        peer_connect(&p);
        r = testpeer_call(&p, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");
        CHECK_STR(testpeer_code(r), "ok");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "backend")), "local");
        cJSON_Delete(r);
        /* After hello, requests reach the ops table. */
        r = testpeer_call(&p, "{\"id\":2,\"op\":\"frobnicate\"}");
        CHECK_STR(testpeer_code(r), "unknown_op");
        CHECK_STR(testpeer_message(r), "unknown operation \"frobnicate\"");
        cJSON_Delete(r);
        d.stopping = true;
        r = testpeer_call(&p, "{\"id\":3,\"op\":\"status\"}");
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_STR(testpeer_message(r), "ferryd is stopping");
        cJSON_Delete(r);
        d.stopping = false;

        /* The stop closes every client and removes the socket. */
        server_stop(srv);
        CHECK(testpeer_wait_eof(&p, 2000));
        testpeer_close(&p);
        CHECK(!exists(d.cfg.socket_path));

        /* A stale socket (nobody listening) is replaced; anything else is refused. */
        {
                struct sockaddr_un sa;

                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                memset(&sa, 0, sizeof(sa));
                sa.sun_family = AF_UNIX;
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.cfg.socket_path);
                CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
                close(fd);
        }
        CHECK(exists(d.cfg.socket_path));
        start_server();
        peer_connect(&p);
        say_hello(&p);
        server_stop(srv);
        testpeer_close(&p);
        fd = open(d.cfg.socket_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        close(fd);
        CHECK_INT(server_start(&second, &d, err, sizeof(err)), -1);
        CHECK(strstr(err, "exists and is not a socket") != NULL);
        unlink(d.cfg.socket_path);
}

/* A connection that does not say hello in time is closed; one that did is not. */
static void test_hello_timeout(void)
{
        struct testpeer quiet, talker;
        int64_t start;
        cJSON *r;

        daemon_init();
        d.cfg.hello_timeout_ms = 100;
        start_server();
        start = uvtest_mono_ms();
        peer_connect(&quiet);
        peer_connect(&talker);
        say_hello(&talker);
        r = testpeer_recv(&quiet, 3000);
        CHECK_STR(testpeer_code(r), "timeout");
        CHECK_INT(testpeer_id(r), 0);
        CHECK_STR(testpeer_message(r), "say hello first, and in time");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&quiet, 2000));
        CHECK(uvtest_mono_ms() - start >= 100);
        CHECK(uvtest_mono_ms() - start < 2500); /* checked every second */
        uvtest_run_for(1200);
        CHECK(!talker.eof);
        CHECK(served(&talker, 5));
        server_stop(srv);
        testpeer_close(&quiet);
        testpeer_close(&talker);
}

/* Full: the longest idle connection makes way, never the one being accepted. */
static void test_eviction(void)
{
        static const char rest[] = "{\"id\":6,\"op\":\"nope\"}";
        struct testpeer a, b, c, e;
        uint32_t be;
        cJSON *r;

        daemon_init();
        d.cfg.max_clients = 2;
        start_server();
        peer_connect(&a);
        say_hello(&a);
        peer_connect(&b); /* never says hello */
        uvtest_run_for(30);
        peer_connect(&c);
        testpeer_send(&c, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}", NULL, 0);
        /* b, which never said hello, goes first. */
        r = testpeer_recv(&b, 2000);
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_INT(testpeer_id(r), 0);
        CHECK_STR(testpeer_message(r),
                  "ferryd closed this idle connection to make room for a new one");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&b, 2000));
        r = testpeer_recv(&c, 2000);
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        uvtest_run_for(20);
        CHECK(served(&a, 2)); /* a is active now, c is the longest idle */
        uvtest_run_for(20);

        /* The newcomer says nothing (it would rank first) and is still spared: c, idle the
         * longest, makes way. */
        peer_connect(&e);
        r = testpeer_recv(&c, 2000);
        CHECK_STR(testpeer_code(r), "busy");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&c, 2000));
        CHECK(!e.eof);
        CHECK(!a.eof);
        CHECK(served(&a, 3));
        say_hello(&e);
        CHECK(served(&e, 4));
        testpeer_close(&b);
        testpeer_close(&c);

        /* Nobody idle (a and e each hold a partial frame): the newcomer is refused. */
        be = htonl((uint32_t)strlen(rest));
        testpeer_send_raw(&a, &be, 4, NULL, 0);
        testpeer_send_raw(&e, &be, 4, NULL, 0);
        uvtest_run_for(30);
        peer_connect(&b);
        r = testpeer_recv(&b, 2000);
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_STR(testpeer_message(r), "ferryd has too many clients; try again");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&b, 2000));
        testpeer_close(&b);
        CHECK(!a.eof && !e.eof);
        testpeer_send_raw(&a, rest, strlen(rest), NULL, 0);
        r = testpeer_recv(&a, 2000);
        CHECK_STR(testpeer_code(r), "unknown_op");
        cJSON_Delete(r);
        server_stop(srv);
        CHECK(testpeer_wait_eof(&a, 2000));
        CHECK(testpeer_wait_eof(&e, 2000));
        testpeer_close(&a);
        testpeer_close(&e);
}

/* A socket connected to the listener (a peer made before the descriptor limit drops). */
static int connect_fd(int fd)
{
        struct sockaddr_un sa;

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.cfg.socket_path);
        return connect(fd, (struct sockaddr *)&sa, sizeof(sa));
}

/* Leave room for exactly one more descriptor (the lowest free one); the old limit in *old. */
static void limit_descriptors(struct rlimit *old)
{
        struct rlimit low;
        int lowest = dup(0);

        close(lowest);
        CHECK_INT(getrlimit(RLIMIT_NOFILE, old), 0);
        low = *old;
        low.rlim_cur = (rlim_t)lowest + 1;
        CHECK_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
}

/*
 * At the open-file limit, the connection just accepted is kept: nothing else
 * waits to be accepted, so nothing needs to make way.
 */
static void test_fd_limit_newcomer_kept(void)
{
        struct testpeer a;
        struct rlimit old;
        int fd;
        cJSON *r;

        daemon_init();
        start_server();
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        limit_descriptors(&old);
        CHECK_INT(connect_fd(fd), 0);
        testpeer_init(&a, fd);
        r = testpeer_call(&a, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        r = testpeer_recv(&a, 300);
#if FIXED_ACCEPT_EMFILE_EVICTS
        CHECK(r == NULL);
        CHECK(!a.eof);
        CHECK(served(&a, 2));
#else
        /*
         * Known bug: server_accept_cb() calls accept4() again after the last
         * pending connection; at the limit Linux fails it with EMFILE before
         * looking for a connection, and server_out_of_fds() then evicts an
         * idle connection although nobody is waiting: here the one just
         * accepted ("never the connection being accepted", PROTOCOL.md).
         */
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_STR(testpeer_message(r),
                  "ferryd closed this idle connection to make room for a new one");
        CHECK(testpeer_wait_eof(&a, 2000));
        fprintf(stderr, "test_server.fd_limit_newcomer_kept: known bug: at the open-file limit "
                        "the connection just accepted is evicted with nobody waiting\n");
#endif
        cJSON_Delete(r);
        CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), 0);
        server_stop(srv);
        testpeer_close(&a);
        uvtest_run_for(150); /* the accept pause, if any, ends with the server's handles */
}

/*
 * Out of descriptors with no idle connection to make way: the reserved
 * descriptor takes the connection only to tell it why, and accepting pauses.
 */
static void test_out_of_descriptors(void)
{
        static const char rest[] = "{\"id\":2,\"op\":\"nope\"}";
        struct testpeer a, c;
        struct rlimit old;
        uint32_t be = htonl((uint32_t)strlen(rest));
        int fda, fdc;
        cJSON *r;

        daemon_init();
        start_server();
        fda = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        fdc = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        limit_descriptors(&old);
        /* a takes the last descriptor and is busy: hello, and half a request. */
        CHECK_INT(connect_fd(fda), 0);
        testpeer_init(&a, fda);
        testpeer_send(&a, "{\"id\":1,\"op\":\"hello\",\"protocol\":2}", NULL, 0);
        testpeer_send_raw(&a, &be, 4, NULL, 0);
        r = testpeer_recv(&a, 2000);
        CHECK_STR(testpeer_code(r), "ok");
        cJSON_Delete(r);
        uvtest_run_for(150);
        CHECK_INT(connect_fd(fdc), 0);
        testpeer_init(&c, fdc);
        r = testpeer_recv(&c, 2000);
        CHECK_STR(testpeer_code(r), "busy");
        CHECK_INT(testpeer_id(r), 0);
        CHECK_STR(testpeer_message(r), "ferryd has no descriptor left for another connection "
                                       "(its open-file limit); try again");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&c, 2000));
        CHECK(!a.eof);
        CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), 0);
        testpeer_send_raw(&a, rest, strlen(rest), NULL, 0);
        r = testpeer_recv(&a, 2000);
        CHECK_STR(testpeer_code(r), "unknown_op");
        cJSON_Delete(r);
        server_stop(srv);
        testpeer_close(&a);
        testpeer_close(&c);
        uvtest_run_for(150); /* the accept pause timer was closed with the server */
}

/*
 * Connect `n` sockets as uid `uid`, gid `gid`, from a child that keeps root's
 * capabilities (so the socket's directory does not stop it), and hand them
 * back. SO_PEERCRED records the credentials at connect time.
 */
static int connect_as(uid_t uid, gid_t gid, int n, int *out)
{
        int sv[2], i, got = 0, status;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
                return -1;
        pid = fork();
        if (pid == 0) {
                int fds[8];

                close(sv[0]);
                if (setgroups(0, NULL) != 0 ||
                    prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP) != 0 || setegid(gid) != 0 ||
                    seteuid(uid) != 0)
                        _exit(2);
                for (i = 0; i < n && i < 8; i++) {
                        struct sockaddr_un sa;

                        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                        memset(&sa, 0, sizeof(sa));
                        sa.sun_family = AF_UNIX;
                        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.cfg.socket_path);
                        if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) != 0)
                                _exit(3);
                }
                {
                        char cbuf[CMSG_SPACE(sizeof(int) * 8)], byte = 'x';
                        struct iovec iov = {&byte, 1};
                        struct msghdr msg;
                        struct cmsghdr *cm;

                        memset(&msg, 0, sizeof(msg));
                        memset(cbuf, 0, sizeof(cbuf));
                        msg.msg_iov = &iov;
                        msg.msg_iovlen = 1;
                        msg.msg_control = cbuf;
                        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
                        cm = CMSG_FIRSTHDR(&msg);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
                        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)n);
                        _exit(sendmsg(sv[1], &msg, 0) == 1 ? 0 : 4);
                }
        }
        close(sv[1]);
        if (pid > 0) {
                char cbuf[CMSG_SPACE(sizeof(int) * 8)], byte;
                struct iovec iov = {&byte, 1};
                struct msghdr msg;
                struct cmsghdr *cm;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf;
                msg.msg_controllen = sizeof(cbuf);
                if (recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC) == 1 &&
                    (cm = CMSG_FIRSTHDR(&msg)) != NULL) {
                        got = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                        memcpy(out, CMSG_DATA(cm), sizeof(int) * (size_t)got);
                }
                waitpid(pid, &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        fprintf(stderr, "connect_as: the child exited with %d\n",
                                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        close(sv[0]);
        return got;
}

/* Another user: refused unless in allow_group, and then capped per uid. Needs root. */
static void test_other_users(void)
{
        struct testpeer p[4];
        int fds[8], i, n;
        cJSON *r;

        if (getuid() != 0) {
                fprintf(stderr, "test_server.other_users: skipped (needs root to connect as "
                                "another uid)\n");
                return;
        }
        daemon_init();
        start_server();
        /* Without allow_group: permission denied. */
        n = connect_as(65534, 65534, 1, fds);
        CHECK_INT(n, 1);
        if (n == 1) {
                testpeer_init(&p[0], fds[0]);
                r = testpeer_recv(&p[0], 2000);
                CHECK_STR(testpeer_code(r), "permission_denied");
                CHECK_STR(testpeer_message(r),
                          "permission denied: this ferryd serves its own user only");
                cJSON_Delete(r);
                CHECK(testpeer_wait_eof(&p[0], 2000));
                testpeer_close(&p[0]);
        }
        server_stop(srv);
        uvtest_run_for(10);

        /* With allow_group 65534 and a cap of 2 per uid. */
        d.cfg.have_allow_gid = true;
        d.cfg.allow_gid = 65534;
        d.cfg.max_clients_per_uid = 2;
        start_server();
        n = connect_as(65534, 65534, 3, fds);
        CHECK_INT(n, 3);
        n += connect_as(65534, 65533, 1, fds + n); /* same uid, not of the group */
        CHECK_INT(n, 4);
        for (i = 0; i < n; i++)
                testpeer_init(&p[i], fds[i]);
        if (n == 4) {
                r = testpeer_call(&p[0], "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");
                CHECK_STR(testpeer_code(r), "ok");
                cJSON_Delete(r);
                r = testpeer_call(&p[1], "{\"id\":1,\"op\":\"hello\",\"protocol\":2}");
                CHECK_STR(testpeer_code(r), "ok");
                cJSON_Delete(r);
                r = testpeer_recv(&p[2], 2000);
                CHECK_STR(testpeer_code(r), "busy");
                CHECK_STR(testpeer_message(r),
                          "too many connections from this user; close some and try again");
                cJSON_Delete(r);
                CHECK(testpeer_wait_eof(&p[2], 2000));
                r = testpeer_recv(&p[3], 2000);
                CHECK_STR(testpeer_code(r), "permission_denied");
                CHECK_STR(testpeer_message(r), "permission denied: this ferryd serves its own "
                                               "user and the members of its allow_group only");
                cJSON_Delete(r);
                CHECK(served(&p[0], 2));
                CHECK(served(&p[1], 2));
        }
        server_stop(srv);
        for (i = 0; i < n; i++)
                testpeer_close(&p[i]);
        uvtest_run_for(10);
}

/* A request's descriptors are closed once it ends; a mismatch closes the connection. */
static void test_server_descriptors(void)
{
        struct testpeer p;
        int fd, base;
        cJSON *r;

        daemon_init();
        start_server();
        fd = open_file("f", NULL);
        base = count_fds();
        peer_connect(&p);
        say_hello(&p);
        CHECK_INT(testpeer_send(&p, "{\"id\":2,\"op\":\"nope\",\"fds\":1}", &fd, 1), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "unknown_op");
        cJSON_Delete(r);
        CHECK_INT(count_fds(), base + 2); /* the two ends of the connection */
        CHECK_INT(testpeer_send(&p, "{\"id\":3,\"op\":\"nope\",\"fds\":2}", &fd, 1), 0);
        r = testpeer_recv(&p, 2000);
        CHECK_STR(testpeer_code(r), "protocol_error");
        cJSON_Delete(r);
        CHECK(testpeer_wait_eof(&p, 2000));
        CHECK_INT(count_fds(), base + 1); /* the peer's end */
        close(fd);
        testpeer_close(&p);
        server_stop(srv);
}

static const struct uvtest tests[] = {
    {"hello_rules", test_hello_rules},
    {"frame_descriptors", test_frame_descriptors},
    {"backpressure_hold", test_backpressure_hold},
    {"backpressure_drop", test_backpressure_drop},
    {"end_paths", test_end_paths},
    {"listener", test_listener},
    {"hello_timeout", test_hello_timeout},
    {"eviction", test_eviction},
    {"other_users", test_other_users},
    {"fd_limit_newcomer_kept", test_fd_limit_newcomer_kept},
    {"out_of_descriptors", test_out_of_descriptors},
    {"server_descriptors", test_server_descriptors},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
        log_set_level(LOG_LEVEL_ERROR);
        log_set_level_from_env();
        return uvtest_main(argc, argv, "test_server", tests);
}
