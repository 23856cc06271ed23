"""ferrytest — the harness the integration tests share.

Starts a real ``ferryd`` (built by CMake) on a private socket and state
directory, runs the real ``ferry`` CLI against it, and speaks the raw wire
protocol for the tests that need to misbehave. Every process a test starts is
stopped by its PID in tearDown; every wait is bounded.

Environment: FERRY_BUILD_DIR (set by CTest) names the CMake build directory;
it defaults to <repo>/build.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("FERRY_SOURCE_DIR", os.path.dirname(HERE))
BUILD_DIR = os.environ.get("FERRY_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
FERRYD = os.path.join(BUILD_DIR, "daemon", "ferryd")
FERRY = os.path.join(BUILD_DIR, "client", "ferry")
LIBFERRY = os.path.join(BUILD_DIR, "client", "libferry.so")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PROTOCOL = 2  # proto.h's PROTO_VERSION


def binding_env(env, **extra):
    """`env` for a python3 child that imports the binding from the source tree and loads the
    built libferry (preloading the sanitizer runtimes when the build has them)."""
    e = dict(env, FERRY_LIB=LIBFERRY, PYTHONPATH=os.path.join(SOURCE_DIR, "client", "python"),
             PYTHONDONTWRITEBYTECODE="1")
    preload = os.environ.get("FERRY_BINDING_PRELOAD")
    if preload:
        e["LD_PRELOAD"] = preload
        e["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    e.update(extra)
    return e


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Daemon:
    """One ferryd with its own socket and state directory under `root`."""

    def __init__(self, root, env=None, args=()):
        self.root = root
        self.socket = os.path.join(root, "run", "ferryd.sock")
        self.state_dir = os.path.join(root, "state")
        self.log_path = os.path.join(root, "ferryd.log")
        self.args = list(args)
        self.env = dict(os.environ)
        for key in list(self.env):
            if key.startswith(("COMET_", "FERRY_", "AWS_")):
                if key not in ("FERRY_BUILD_DIR", "FERRY_SOURCE_DIR"):
                    del self.env[key]
        self.env["HOME"] = root  # no ~/.comet.config of the user's leaks in
        self.env["FERRY_SOCKET"] = self.socket
        self.env["FERRY_STATE_DIR"] = self.state_dir
        self.env.setdefault("FERRY_LOG_LEVEL", "debug")
        if env:
            self.env.update(env)
        self.proc = None
        self._log = None

    def start(self, timeout=15.0):
        os.makedirs(self.root, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [FERRYD, "--foreground"] + self.args,
            env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            cwd=self.root)
        wait_for(self._connectable, timeout, what="ferryd to listen (log: %s)" % self.log_path)
        return self

    def _connectable(self):
        if self.proc.poll() is not None:
            raise AssertionError("ferryd exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout=20.0):
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return code

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, check=True, timeout=120, env=None, cwd=None):
        """Run the ferry CLI; returns CompletedProcess (text). check: exit code must be 0."""
        e = dict(self.env)
        if env:
            e.update(env)
        p = subprocess.run([FERRY] + [str(a) for a in args], env=e, capture_output=True,
                           text=True, timeout=timeout, cwd=cwd or self.root)
        if check and p.returncode != 0:
            raise AssertionError("ferry %s exited %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
        return p

    def cli_json(self, *args, **kw):
        p = self.cli(*(list(args) + ["--json"]), **kw)
        return json.loads(p.stdout)

    def raw(self):
        return RawClient(self.socket)


class RawClient:
    """The wire protocol by hand: 4-byte big-endian length + JSON."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.next_id = 1
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, payload, fds=()):
        """Send one frame; `fds` travel with its first byte (SCM_RIGHTS)."""
        if isinstance(payload, str):
            payload = payload.encode()
        data = struct.pack(">I", len(payload)) + payload
        if fds:
            sent = socket.send_fds(self.sock, [data], list(fds))
            data = data[sent:]
        if data:  # sendall() sends even b"", which fails once ferryd has hung up
            self.sock.sendall(data)

    def read_frame(self):
        """The next frame as a dict, or None when the daemon closed the connection."""
        while len(self.buf) < 4:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        (n,) = struct.unpack(">I", self.buf[:4])
        while len(self.buf) < 4 + n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return json.loads(payload)

    @staticmethod
    def open_files(fields):
        """Assets given as {"file": path} become {"fd": k}: the file opened here, as libferry
        does (ferryd never opens a client's path). Returns (fields, fds); close the fds."""
        assets = fields.get("assets")
        fds = []
        if not isinstance(assets, list):
            return fields, fds
        out = []
        for a in assets:
            if isinstance(a, dict) and "file" in a:
                a = dict(a)
                fds.append(os.open(a.pop("file"), os.O_RDONLY | os.O_CLOEXEC))
                a["fd"] = len(fds) - 1
            out.append(a)
        fields = dict(fields, assets=out)
        if fds:
            fields["fds"] = len(fds)
        return fields, fds

    def request(self, op, **fields):
        rid = self.next_id
        self.next_id += 1
        msg = {"id": rid, "op": op}
        fields, fds = self.open_files(fields)
        msg.update(fields)
        try:
            self.send_frame(json.dumps(msg), fds)
        finally:
            for fd in fds:
                os.close(fd)
        reply = self.read_frame()
        if reply is not None and reply.get("id") != rid:
            raise AssertionError("reply id %r for request %d" % (reply.get("id"), rid))
        return reply

    def hello(self):
        reply = self.request("hello", protocol=PROTOCOL)
        assert reply and reply["ok"], reply
        return reply


class FerryTestCase(unittest.TestCase):
    """A test case with a temporary directory and a running local-backend ferryd."""

    daemon_env = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-")
        self.addCleanup(self._remove_tmp)
        self.daemon = self.start_daemon(env=self.daemon_env)

    def start_daemon(self, env=None, args=(), root=None):
        """Start a ferryd that is stopped after the test even if setUp fails later."""
        d = Daemon(root or self.tmp, env=env, args=args)
        self.addCleanup(d.stop)
        return d.start()

    def _remove_tmp(self):
        if os.environ.get("FERRY_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return path
