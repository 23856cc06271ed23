"""ferryd as systemd and an operator see it: readiness (sd_notify), socket
activation, SIGHUP reload, log lines for the journal, --log-level, where a
detached ferryd logs, and a second ferryd's single error line.

Readiness is checked against a datagram socket of the test's own, as
systemd's NOTIFY_SOCKET; socket activation through systemd-socket-activate
(skipped when it is not installed: Debian's `systemd` package has it).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from ferrytest import FERRY, FERRYD, PROTOCOL, Daemon, FerryTestCase, RawClient, wait_for


class Notifier:
    """A NOTIFY_SOCKET of our own: collects what ferryd tells systemd."""

    def __init__(self, root):
        self.path = os.path.join(root, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def close(self):
        self.sock.close()

    def collect(self, timeout=0.0):
        """Read what has arrived (waiting up to `timeout` for the first one)."""
        self.sock.settimeout(timeout if timeout > 0 else 0.001)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
                self.sock.settimeout(0.001)
        except (socket.timeout, BlockingIOError):
            pass
        return self.messages

    def wait_for(self, needle, timeout=15.0):
        """The first message containing the line `needle` (e.g. "READY=1")."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self.collect(0.1)
            for m in self.messages[seen:]:
                if needle in m.split("\n"):
                    return m
            seen = len(self.messages)
            if time.monotonic() > deadline:
                raise AssertionError("no %s from ferryd within %.0f s; got %r"
                                     % (needle, timeout, self.messages))

    def status_lines(self):
        return [line[len("STATUS="):] for m in self.messages for line in m.split("\n")
                if line.startswith("STATUS=")]


def hello_ok(path):
    c = RawClient(path, timeout=10)
    try:
        return c.request("hello", protocol=PROTOCOL)["ok"]
    finally:
        c.close()


class Readiness(FerryTestCase):
    """Type=notify: READY=1 once serving, STATUS= with the queue, STOPPING=1 on SIGTERM."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-")
        self.addCleanup(self._remove_tmp)
        self.notifier = Notifier(self.tmp)
        self.addCleanup(self.notifier.close)

    def test_ready_status_stopping(self):
        d = Daemon(self.tmp, env={"NOTIFY_SOCKET": self.notifier.path})
        self.addCleanup(d.stop)
        d.start()
        ready = self.notifier.wait_for("READY=1")
        # READY comes once the socket serves: a client gets in at once.
        self.assertTrue(hello_ok(d.socket))
        self.assertIn("STATUS=serving %s: 0 queued, 0 running, 0 failed" % d.socket, ready)
        # STATUS follows the queue (refreshed every 2 s).
        d.cli("pause")
        d.cli("log", "held", self.write("a.bin", b"a" * 1000))
        wait_for(lambda: any("1 queued" in s and "paused" in s
                             for s in (self.notifier.collect(0.2) and self.notifier.status_lines())),
                 timeout=10, what="STATUS= with 1 queued")
        d.proc.send_signal(signal.SIGTERM)
        stopping = self.notifier.wait_for("STOPPING=1")
        self.assertIn("STATUS=stopping", stopping)
        self.assertEqual(d.proc.wait(20), 0)

    def test_no_daemonizing_under_systemd(self):
        """INVOCATION_ID (set by systemd for every service) keeps a plain `ferryd` attached."""
        env = dict(os.environ, HOME=self.tmp, FERRY_SOCKET=os.path.join(self.tmp, "run", "s.sock"),
                   FERRY_STATE_DIR=os.path.join(self.tmp, "state"), INVOCATION_ID="0" * 32,
                   NOTIFY_SOCKET=self.notifier.path)
        env.pop("JOURNAL_STREAM", None)
        p = subprocess.Popen([FERRYD], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        self.notifier.wait_for("READY=1")
        self.assertIsNone(p.poll(), "ferryd detached although systemd started it")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(20), 0)
        self.assertNotIn(b"in the background", p.stderr.read())
        p.stderr.close()


@unittest.skipUnless(shutil.which("systemd-socket-activate"),
                     "systemd-socket-activate is not installed (Debian package: systemd)")
class SocketActivation(unittest.TestCase):
    """As ferryd.socket would: systemd listens, ferryd serves the socket it is passed."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.notifier = Notifier(self.tmp)
        self.addCleanup(self.notifier.close)

    def test_serves_passed_socket_ready_and_stopping(self):
        run = os.path.join(self.tmp, "run")
        os.mkdir(run, 0o700)
        sock = os.path.join(run, "ferryd.sock")
        log = open(os.path.join(self.tmp, "ferryd.log"), "wb")
        self.addCleanup(log.close)
        # systemd-socket-activate gives the program a fresh environment: -E passes ours.
        cmd = ["systemd-socket-activate", "-l", sock]
        for k, v in (("HOME", self.tmp), ("FERRY_STATE_DIR", os.path.join(self.tmp, "state")),
                     ("FERRY_SOCKET", os.path.join(self.tmp, "elsewhere", "unused.sock")),
                     ("NOTIFY_SOCKET", self.notifier.path), ("FERRY_LOG_LEVEL", "debug")):
            cmd += ["-E", "%s=%s" % (k, v)]
        p = subprocess.Popen(cmd + [FERRYD, "--foreground"], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        wait_for(lambda: os.path.exists(sock), 10, what="systemd-socket-activate to listen")
        self.assertEqual(self.notifier.collect(0.2), [], "ferryd runs before a connection came")
        # The first connection starts ferryd (exec'd in place: same pid), which accepts it.
        c = RawClient(sock, timeout=20)
        self.addCleanup(c.close)
        self.assertTrue(c.request("hello", protocol=PROTOCOL)["ok"])
        ready = self.notifier.wait_for("READY=1")
        self.assertIn("STATUS=serving", ready)
        status = c.request("status")
        self.assertTrue(status["ok"], status)
        # It never made a socket of its own at FERRY_SOCKET.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "elsewhere")))
        with open(log.name, "rb") as f:
            self.assertIn(b"serving the socket systemd passed (LISTEN_FDS)", f.read())
        c.close()
        p.send_signal(signal.SIGTERM)
        self.notifier.wait_for("STOPPING=1")
        self.assertEqual(p.wait(20), 0)
        # The socket is systemd's: ferryd leaves it for the next activation.
        self.assertTrue(os.path.exists(sock))


class Reload(FerryTestCase):
    """SIGHUP applies the live settings from the changed file; the rest waits for a restart."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-")
        self.addCleanup(self._remove_tmp)
        self.notifier = Notifier(self.tmp)
        self.addCleanup(self.notifier.close)
        self.conf = os.path.join(self.tmp, "ferryd.conf")
        self.write_conf(spool_budget="100M", cache_budget="50M", max_jobs="2", log_level="info",
                        workspace="before")
        self.daemon = Daemon(self.tmp, env={"NOTIFY_SOCKET": self.notifier.path},
                             args=["--config", self.conf])
        del self.daemon.env["FERRY_LOG_LEVEL"]  # the file's log_level is what is tested
        self.addCleanup(self.daemon.stop)
        self.daemon.start()
        self.notifier.wait_for("READY=1")

    def write_conf(self, **settings):
        with open(self.conf, "w") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))

    def hup_and_wait(self):
        before = len(self.notifier.collect())
        self.daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any("READY=1" in m.split("\n")
                             for m in self.notifier.collect(0.1)[before:]),
                 10, what="READY=1 after the reload")
        return self.notifier.messages[before:]

    def test_reload_applies_live_settings(self):
        d = self.daemon
        st = d.cli_json("status")
        self.assertEqual(st["spool_budget"], 100 << 20)
        self.assertEqual(st["spool_min_free"], 0)
        self.assertEqual(d.cli_json("cache")["budget"], 50 << 20)
        self.assertNotIn("debug:", d.log())
        d.cli("log", "before-reload", self.write("a.bin", b"x"), "--wait", "--timeout", "30")
        self.assertEqual(d.cli_json("get", "before/before-reload")["version"], "1.0.0")

        self.write_conf(spool_budget="200M", cache_budget="70M", max_jobs="3", log_level="debug",
                        workspace="after", spool_min_free="1K",
                        backend="comet", api_key="not-applied-live", max_transfers="4")
        msgs = self.hup_and_wait()
        self.assertTrue(any("RELOADING=1" in m.split("\n") for m in msgs), msgs)
        st = d.cli_json("status")
        self.assertEqual(st["spool_budget"], 200 << 20)
        self.assertEqual(st["spool_min_free"], 1024)
        self.assertEqual(d.cli_json("cache")["budget"], 70 << 20)
        # The default workspace of new logs moved.
        d.cli("log", "after-reload", self.write("b.bin", b"y"), "--wait", "--timeout", "30")
        self.assertEqual(d.cli_json("get", "after/after-reload")["version"], "1.0.0")
        log = d.log()
        m = re.search(r"reloaded the settings \(%s\): applied (.*)" % re.escape(self.conf), log)
        self.assertTrue(m, log)
        for name in ("spool_budget", "spool_min_free", "cache_budget", "max_jobs", "workspace",
                     "log_level"):
            self.assertIn(name, m.group(1))
        # Debug lines appear from now on.
        self.assertIn("ferryd debug: settings in force: log_level debug, workspace after", log)
        # Restart-only settings are named and left alone: still the local backend.
        self.assertRegex(log, r"applied only by a restart .*: backend, api_key, max_transfers\n")
        self.assertNotIn("not-applied-live", log)
        self.assertEqual(d.cli_json("status")["backend"], "local")

    def test_bad_file_changes_nothing(self):
        d = self.daemon
        with open(self.conf, "w") as f:
            f.write("spool_budget = 300M\nmax_jobs = many\n")
        self.hup_and_wait()
        self.assertIn("reload refused, the settings in force stay", d.log())
        self.assertIn('bad value for setting "max_jobs"', d.log())
        self.assertEqual(d.cli_json("status")["spool_budget"], 100 << 20)
        self.assertTrue(d.alive())


class Logging(unittest.TestCase):
    """Where the lines go and what they look like; --log-level; a second ferryd."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FERRY_", "COMET_", "JOURNAL_", "NOTIFY_", "LISTEN_",
                                         "INVOCATION_"))}
        self.env.update(HOME=self.tmp, FERRY_SOCKET=os.path.join(self.tmp, "run", "ferryd.sock"),
                        FERRY_STATE_DIR=os.path.join(self.tmp, "state"))

    def start(self, args, env=None, stderr_path=None):
        path = stderr_path or os.path.join(self.tmp, "stderr.log")
        err = open(path, "ab")
        self.addCleanup(err.close)
        p = subprocess.Popen([FERRYD, "--foreground"] + args, env=dict(self.env, **(env or {})),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        wait_for(lambda: os.path.exists(self.env["FERRY_SOCKET"]) and hello_ok_quiet(
            self.env["FERRY_SOCKET"]), 15, what="ferryd to serve")
        return p, path

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(20), 0)

    def test_journal_priority_prefixes(self):
        path = os.path.join(self.tmp, "journal.log")
        open(path, "w").close()
        st = os.stat(path)
        # systemd names the stream it connected as device:inode; here it is our file.
        p, _ = self.start(["--log-level", "debug"],
                          env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)},
                          stderr_path=path)
        self.stop(p)
        lines = read_or_empty(path).splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[3467]>[^<]")
        self.assertTrue(any(line.startswith("<6>ferryd 0.1.0 serving") for line in lines), lines)
        self.assertTrue(any(line.startswith("<7>") for line in lines), lines)

    def test_stderr_elsewhere_keeps_times(self):
        # JOURNAL_STREAM set, but stderr is not that stream (redirected): plain lines.
        p, path = self.start([], env={"JOURNAL_STREAM": "1:1"})
        self.stop(p)
        for line in read_or_empty(path).splitlines():
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ferryd (info|warn|error|debug): ")

    def test_log_level_flag(self):
        p, path = self.start(["--log-level", "warn"], env={"FERRY_LOG_LEVEL": "debug"})
        self.stop(p)
        self.assertNotIn("info:", read_or_empty(path))
        self.assertNotIn("debug:", read_or_empty(path))
        bad = subprocess.run([FERRYD, "--log-level", "loud"], env=self.env, capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(bad.returncode, 2)
        self.assertIn('--log-level must be error, warn, info or debug, not "loud"', bad.stderr)

    def test_second_ferryd_says_it_once(self):
        p, _ = self.start([])
        second = subprocess.run([FERRYD, "--foreground"], env=self.env, capture_output=True,
                                text=True, timeout=30)
        self.assertEqual(second.returncode, 1)
        self.assertEqual(second.stderr,
                         "ferryd: another ferryd is already listening on %s\n"
                         % self.env["FERRY_SOCKET"])
        self.stop(p)

    def test_detached_ferryd_says_where_it_logs(self):
        r = subprocess.run([FERRYD], env=self.env, capture_output=True, text=True, timeout=30)
        m = re.fullmatch(r"ferryd: serving (\S+) in the background \(pid (\d+)\); it logs to (\S+) "
                         r"\(run with --foreground to log here\)\n", r.stderr)
        self.assertTrue(m, r.stderr)
        pid = int(m.group(2))
        self.addCleanup(kill_quietly, pid)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(m.group(1), self.env["FERRY_SOCKET"])
        self.assertEqual(m.group(3), os.path.join(self.env["FERRY_STATE_DIR"], "ferryd.log"))
        wait_for(lambda: "serving" in read_or_empty(m.group(3)), 10, what="the detached log")
        help_text = subprocess.run([FERRYD, "--help"], capture_output=True, text=True).stdout
        self.assertIn("<state dir>/ferryd.log", help_text)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or zombie(pid), 20,
                 what="the detached ferryd to stop")


def hello_ok_quiet(path):
    try:
        return hello_ok(path)
    except OSError:
        return False


def read_or_empty(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


if __name__ == "__main__":
    unittest.main()
