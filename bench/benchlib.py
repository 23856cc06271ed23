"""benchlib — what ferry's benchmarks share (standard library only).

* the build to measure (FERRY_BUILD_DIR, default <repo>/build-bench) and a
  clear error when it is missing;
* servers the benchmarks start — the Comet stand-in (tests/comet_standin.py,
  run as its own process), a byte-counting / rate-limiting TCP relay, ferryd —
  each on 127.0.0.1 with a free port, each stopped by its PID at the end, also
  on Ctrl-C or SIGTERM (``run_main``);
* ``CometRest``: a small blocking client of Comet's REST API that does what the
  Comet SDK does at log time (register the experiment, upsert the version, one
  multipart upload per file, close), streaming files or — the anti-pattern —
  reading them into memory first;
* peak-RSS sampling of a PID (/proc/PID/status VmRSS every 50 ms) and tables.

``python3 bench/benchlib.py relay --upstream PORT [--rate BYTES_PER_S]`` is the
relay: it prints ``PORT <n>``, answers a line ``stats`` on stdin with one JSON
line of byte counts (``reset`` zeroes them) and exits at stdin EOF or SIGTERM.
"""

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
TESTS_DIR = os.path.join(SOURCE_DIR, "tests")
BUILD_DIR = os.environ.get("FERRY_BUILD_DIR", os.path.join(SOURCE_DIR, "build-bench"))
FERRYD = os.path.join(BUILD_DIR, "daemon", "ferryd")
FERRY = os.path.join(BUILD_DIR, "client", "ferry")
LIBFERRY = os.path.join(BUILD_DIR, "client", "libferry.so")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
STANDIN = os.path.join(TESTS_DIR, "comet_standin.py")
API_KEY = "bench-key-0123456789abcdef"
WORKSPACE = "bench"
PROJECT = "bench"
MiB = 1 << 20


class BenchError(Exception):
    """A problem the user must fix (missing build, tool, disk space...)."""


def die(msg):
    raise BenchError(msg)


def require_build(need_lib=False):
    missing = [p for p in (FERRYD, FERRY) + ((LIBFERRY,) if need_lib else ())
               if not os.access(p, os.X_OK if not p.endswith(".so") else os.R_OK)]
    if missing:
        die("the ferry build is missing: %s\n"
            "build it with ./scripts/bench.sh (or: cmake -S %s -B %s "
            "-DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build %s -j2), "
            "or point FERRY_BUILD_DIR at a build directory"
            % (", ".join(missing), SOURCE_DIR, BUILD_DIR, BUILD_DIR))
    if not os.path.exists(STANDIN):
        die("the Comet stand-in is missing: %s" % STANDIN)


def require_tool(name):
    path = shutil.which(name)
    if path is None:
        die("this benchmark needs `%s` on PATH (apt-get install %s)" % (name, name))
    return path


def require_disk(path, need, what):
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < need:
        die("%s needs about %.1f GiB free in %s, only %.1f GiB are"
            % (what, need / float(1 << 30), path, free / float(1 << 30)))


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------ process registry

_live = {}            # pid -> (Popen, stop function)
_live_lock = threading.Lock()
_cleanups = []        # callables run once at exit, last registered first
_interrupted = threading.Event()


def interrupted():
    return _interrupted.is_set()


def _register(proc, stop):
    with _live_lock:
        _live[proc.pid] = (proc, stop)


def _unregister(proc):
    with _live_lock:
        _live.pop(proc.pid, None)


def terminate(proc, timeout=10.0):
    """SIGTERM this one process by its PID, then SIGKILL when it lingers."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
    _unregister(proc)
    return proc.returncode


def at_exit(fn):
    _cleanups.append(fn)
    return fn


def run_cleanups():
    # Neither Ctrl-C nor SIGTERM may interrupt the clean-up itself (it is bounded).
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with _live_lock:
            procs = list(_live.values())
        for proc, stop in reversed(procs):
            try:
                stop()
            except Exception as e:          # keep cleaning up
                sys.stderr.write("cleanup: stopping pid %d: %r\n" % (proc.pid, e))
        while _cleanups:
            fn = _cleanups.pop()
            try:
                fn()
            except Exception as e:
                sys.stderr.write("cleanup: %r\n" % (e,))
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _on_signal(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt("signal %d" % signum)


def run_main(main):
    """Run main(); on Ctrl-C/SIGTERM/SIGHUP or an error stop everything started, by PID."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    code = 0
    try:
        main()
    except KeyboardInterrupt:
        _interrupted.set()
        sys.stderr.write("\ninterrupted: stopping what the benchmark started\n")
        code = 130
    except BenchError as e:
        sys.stderr.write("error: %s\n" % e)
        code = 2
    finally:
        run_cleanups()
    sys.exit(code)


def make_tmp(prefix, keep_env="FERRY_BENCH_KEEP_TMP"):
    base = os.environ.get("FERRY_BENCH_TMP") or None
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    if os.environ.get(keep_env):
        at_exit(lambda: sys.stderr.write("kept %s\n" % path))
    else:
        at_exit(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def _read_port_line(proc, what, log_path, timeout=20.0):
    """The 'PORT <n>' line a server prints once it listens."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            terminate(proc)
            die("%s did not start (log: %s):\n%s" % (what, log_path, _tail(log_path)))
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("PORT "):
        terminate(proc)
        die("%s printed %r instead of its port" % (what, line))
    return int(line.split()[1])


def _tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


# ------------------------------------------------------------------- servers

# The stand-in's main(), with TCP_NODELAY on the connections it accepts (socketserver's
# disable_nagle_algorithm). http.server writes a response's headers and body in two
# send() calls; without it, Nagle on the server meets the client's delayed ACK and every
# request on a reused keep-alive connection waits ~40 ms — a stand-in artefact that
# production servers do not have and that would penalise exactly the clients that reuse
# connections.
_STANDIN_NODELAY = (
    "import sys; sys.path.insert(0, %r); sys.argv[0] = %r; import comet_standin as s; "
    "s._Handler.disable_nagle_algorithm = True; sys.exit(s.main())" % (TESTS_DIR, STANDIN))


class StandIn:
    """tests/comet_standin.py as its own process on 127.0.0.1 (a free port)."""

    def __init__(self, root, api_key=API_KEY, max_seconds=900):
        self.data_dir = os.path.join(root, "standin")
        self.log_path = os.path.join(root, "standin.log")
        self.api_key = api_key
        self.max_seconds = max_seconds
        self.proc = None
        self.port = None

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        log = open(self.log_path, "ab")
        # Its own session: a Ctrl-C reaches only the benchmark, which stops it by PID.
        # It also stops by itself at stdin EOF, i.e. if the benchmark dies.
        self.proc = subprocess.Popen(
            [PYTHON, "-c", _STANDIN_NODELAY, "--port", "0", "--data-dir", self.data_dir,
             "--api-key", self.api_key, "--max-seconds", str(self.max_seconds), "--seed", "7"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        _register(self.proc, self.stop)
        self.port = _read_port_line(self.proc, "the Comet stand-in", self.log_path)
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d/clientlib/" % self.port

    def _client(self):
        if TESTS_DIR not in sys.path:
            sys.path.insert(0, TESTS_DIR)
        from comet_standin import StandInClient
        return StandInClient(self.port, timeout=60)

    def state(self):
        return self._client().state()

    def counts(self):
        return self.state()["counts"]

    def reset_counts(self):
        self._client().reset_counts()

    def set_faults(self, rules):
        self._client().set_faults(rules)

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        terminate(self.proc)
        self.proc.stdout.close()
        self.proc = None


class Relay:
    """A TCP relay in front of the stand-in: counts bytes, optionally limits the rate.

    It is a separate process (this file, `relay` mode) so that it does not share
    a GIL with a Python uploader measured in the benchmark process.
    """

    def __init__(self, root, upstream_port, rate=None, name="relay"):
        self.upstream_port = upstream_port
        self.rate = rate
        self.log_path = os.path.join(root, name + ".log")
        self.proc = None
        self.port = None

    def start(self):
        cmd = [PYTHON, os.path.abspath(__file__), "relay", "--upstream", str(self.upstream_port)]
        if self.rate:
            cmd += ["--rate", str(int(self.rate))]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, start_new_session=True)
        log.close()
        _register(self.proc, self.stop)
        self.port = _read_port_line(self.proc, "the relay", self.log_path)
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d/clientlib/" % self.port

    def _ask(self, word):
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + 10
        while not buf.endswith(b"\n"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                die("the relay did not answer (log: %s)" % self.log_path)
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                buf += os.read(fd, 65536)
        return json.loads(buf)

    def stats(self):
        """{"up": bytes client->server, "down": bytes server->client, "connections": n}"""
        return self._ask("stats")

    def reset(self):
        return self._ask("reset")

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        terminate(self.proc)
        self.proc.stdout.close()
        self.proc = None


_libc = ctypes.CDLL(None, use_errno=True)   # loaded before any fork
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # In the child, before exec: SIGTERM when the benchmark process dies (even by SIGKILL).
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Ferryd:
    """One ferryd on the Comet backend, private socket and state directory."""

    def __init__(self, root, comet_url, env=None):
        self.root = root
        self.socket = os.path.join(root, "run", "ferryd.sock")
        self.state_dir = os.path.join(root, "state")
        self.log_path = os.path.join(root, "ferryd.log")
        self.env = {k: v for k, v in os.environ.items()
                    if not (k.startswith("COMET_") or k.startswith("FERRY_"))}
        self.env.update({
            "HOME": root,                    # no ~/.comet.config of the user's
            "FERRY_SOCKET": self.socket, "FERRY_STATE_DIR": self.state_dir,
            "FERRY_LOG_LEVEL": "warn",
            "COMET_API_KEY": API_KEY, "COMET_URL_OVERRIDE": comet_url,
            "COMET_WORKSPACE": WORKSPACE, "COMET_PROJECT_NAME": PROJECT,
        })
        self.env.update(env or {})
        self.proc = None

    def start(self, timeout=15.0):
        os.makedirs(self.root, exist_ok=True)
        log = open(self.log_path, "ab")
        # Must be called from the main thread (the death signal follows the forking thread).
        self.proc = subprocess.Popen([FERRYD, "--foreground"], env=self.env, cwd=self.root,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        _register(self.proc, self.stop)
        deadline = time.monotonic() + timeout
        while not self._connectable():
            if self.proc.poll() is not None:
                die("ferryd exited with %s (log: %s):\n%s"
                    % (self.proc.returncode, self.log_path, _tail(self.log_path)))
            if time.monotonic() > deadline:
                die("ferryd did not listen within %.0fs (log: %s)" % (timeout, self.log_path))
            time.sleep(0.02)
        return self

    def _connectable(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    @property
    def pid(self):
        return self.proc.pid

    def cli(self, *args, timeout=600, check=True):
        p = run([FERRY] + [str(a) for a in args], env=self.env, timeout=timeout, cwd=self.root)
        if check and p.returncode != 0:
            die("ferry %s exited %d\n%s%s" % (" ".join(map(str, args)), p.returncode,
                                            p.stdout, p.stderr))
        return p

    def wait_drained(self, timeout=600):
        p = self.cli("wait", "--timeout", str(timeout), timeout=timeout + 30, check=False)
        if p.returncode != 0:
            st = self.cli("status", check=False)
            die("ferry wait exited %d: %s%s\nstatus: %s\nlog: %s"
                % (p.returncode, p.stdout, p.stderr, st.stdout, _tail(self.log_path)))

    def stop(self):
        if self.proc is None:
            return
        terminate(self.proc, timeout=30)
        self.proc = None


def run(cmd, timeout=600, **kw):
    """subprocess.run, registered so that an interrupt stops it by PID; text output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    _register(proc, lambda: terminate(proc, 5))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate(proc, 5)
        die("%s took longer than %ds" % (" ".join(cmd[:3]), timeout))
    finally:
        _unregister(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ---------------------------------------------------------------- measuring

def status_kib(pid, field):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM), or None when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Peak of VmRSS of one PID, sampled every `interval` seconds in a thread.

    It also keeps the largest VmHWM seen: the kernel's high-water mark of the
    process's current image (reset by exec), exact up to the last sample. (A
    child's ru_maxrss from wait4 would not do: it includes the RSS of the
    forking benchmark process.)
    """

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.hwm_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        exe = None
        while not self._stop.is_set():
            try:
                now_exe = os.readlink("/proc/%d/exe" % self.pid)
            except OSError:
                now_exe = None
            if now_exe is not None and exe is not None and now_exe != exe:
                self.peak_kib = self.hwm_kib = 0   # it exec'd: forget the forked copy
            exe = now_exe or exe
            v = status_kib(self.pid, "VmRSS")
            h = status_kib(self.pid, "VmHWM")
            if v is not None:
                self.peak_kib = max(self.peak_kib, v)
                self.samples += 1
            if h is not None:
                self.hwm_kib = max(self.hwm_kib, h)
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peak_kib


def run_sampled(cmd, timeout=900, env=None):
    """Run cmd; returns (exit code, wall s, sampled peak VmRSS KiB, peak VmHWM KiB, output)."""
    errf = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=env,
                            start_new_session=True)
    _register(proc, lambda: terminate(proc, 5))
    sampler = RssSampler(proc.pid).start()
    deadline = t0 + timeout
    try:
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() > deadline:
                terminate(proc, 5)
                die("%s took longer than %ds" % (os.path.basename(cmd[0]), timeout))
            time.sleep(0.01)
    finally:
        sampler.stop()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    _unregister(proc)
    errf.seek(0)
    out = errf.read().decode("utf-8", "replace")
    errf.close()
    return proc.returncode, wall, sampler.peak_kib, sampler.hwm_kib, out


def parallel(fns, timeout=600):
    """Call each fn in its own thread at once; (results, wall s). Re-raises the first error."""
    results = [None] * len(fns)
    errors = []

    def call(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:          # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i, fn), daemon=True)
               for i, fn in enumerate(fns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    deadline = t0 + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            die("parallel work did not finish within %ds" % timeout)
    wall = time.monotonic() - t0
    if errors:
        raise errors[0]
    return results, wall


def make_file(path, size, seed=0):
    """`size` bytes of incompressible data, no two 8 MiB blocks alike (no holes)."""
    block = bytearray(os.urandom(min(8 * MiB, max(size, 1))))
    with open(path, "wb") as f:
        written, n = 0, 0
        while written < size:
            block[0:16] = (seed * (1 << 40) + n).to_bytes(16, "little")
            chunk = memoryview(block)[: min(len(block), size - written)]
            f.write(chunk)
            written += len(chunk)
            n += 1
    return path


def fmt_ratio(x):
    if x is None:
        return "-"
    if x == 0:
        return "0x"
    if x < 0.01:
        return "<0.01x"
    if x >= 100:
        return "%.0fx" % x
    if x >= 10:
        return "%.1fx" % x
    return "%.2fx" % x


def fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / float(size), unit)
    return "%d B" % n


def print_table(title, headers, rows, notes=(), left=1):
    """A plain-text table; the first `left` columns are left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "-+-".join("-" * w for w in widths)
    out = ["", title, "=" * len(title)]
    out.append(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    out.append(line)
    for r in cells:
        out.append(" | ".join(c.ljust(w) if i < left else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths))))
    for n in notes:
        out.append(n)
    print("\n".join(out))
    sys.stdout.flush()


def machine_line():
    try:
        load = os.getloadavg()
    except OSError:
        load = (0, 0, 0)
    return "machine: %d CPU(s), load average %.2f %.2f %.2f (shared: read the ratios, " \
           "not the absolute numbers)" % (os.cpu_count() or 0, load[0], load[1], load[2])


# ----------------------------------------------- a blocking Comet REST client

class CometError(Exception):
    pass


class CometRest:
    """What Comet's SDK does over HTTP, blocking, one keep-alive connection.

    base: "http://127.0.0.1:PORT" (no path). Files are streamed in 1 MiB reads
    unless `in_memory` is set, in which case the whole multipart body is built
    in memory first (what requests' files= does).
    """

    def __init__(self, base, api_key=API_KEY, timeout=300):
        import http.client
        import urllib.parse
        self._http = http.client
        self._quote = urllib.parse.urlencode
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.api_key = api_key
        self.timeout = timeout
        self.conn = None

    def close_connection(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = self._http.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.connect()
            # As urllib3 (under requests, under Comet's SDK) does: no Nagle stalls.
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def _finish(self, what):
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.close_connection()
        if resp.status != 200:
            raise CometError("%s: HTTP %d %s" % (what, resp.status, data[:300]))
        return data

    def _json(self, method, path, body=None, query=None):
        if query:
            path += "?" + self._quote(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": self.api_key}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._conn()
        conn.request(method, path, body=data, headers=headers)
        return json.loads(self._finish(path) or b"null")

    # Comet's SDK generates the experiment key itself and registers it.
    def register(self, key=None, workspace=WORKSPACE, project=PROJECT):
        key = key or uuid.uuid4().hex
        self._json("POST", "/clientlib/logger/add/run",
                   {"apiKey": self.api_key, "experimentKey": key, "projectName": project,
                    "teamName": workspace, "offline": False,
                    "local_timestamp": int(time.time() * 1000), "libVersion": "bench"})
        return key

    def upsert(self, key, name, type_="model", version=None):
        r = self._json("POST", "/api/rest/v2/write/artifacts/upsert",
                       {"artifactName": name, "artifactType": type_, "experimentKey": key,
                        "version": version, "alias": None, "versionTags": None,
                        "versionMetadata": None})
        return r["artifactVersionId"]

    def set_state(self, key, vid, state="CLOSED"):
        self._json("POST", "/api/rest/v2/write/artifacts/state",
                   {"artifactVersionId": vid, "experimentKey": key, "state": state})

    def upload(self, key, vid, path, file_name=None, in_memory=False):
        file_name = file_name or os.path.basename(path)
        ext = file_name.rsplit(".", 1)[1] if "." in file_name else ""
        q = self._quote({"experimentKey": key, "artifactVersionId": vid, "fileName": file_name,
                         "type": "asset", "overwrite": "false", "extension": ext})
        target = "/api/rest/v2/write/experiment/upload-asset?" + q
        boundary = uuid.uuid4().hex
        head = ('--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
                'Content-Type: application/octet-stream\r\n\r\n'
                % (boundary, os.path.basename(file_name))).encode()
        tail = ("\r\n--%s--\r\n" % boundary).encode()
        headers = {"Authorization": self.api_key,
                   "Content-Type": "multipart/form-data; boundary=%s" % boundary}
        conn = self._conn()
        if in_memory:
            with open(path, "rb") as f:
                data = f.read()
            body = head + data + tail       # a second full copy, as requests' files= makes
            del data
            conn.request("POST", target, body=body, headers=headers)
            del body
        else:
            size = os.path.getsize(path)
            conn.putrequest("POST", target, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(head) + size + len(tail)))
            conn.endheaders(message_body=head)
            with open(path, "rb") as f:
                sent = 0
                while sent < size:
                    chunk = f.read(min(MiB, size - sent))
                    if not chunk:
                        raise CometError("%s shrank while uploading" % path)
                    conn.send(chunk)
                    sent += len(chunk)
            conn.send(tail)
        return json.loads(self._finish("upload %s" % file_name))

    def log_artifact(self, key, name, paths, type_="model"):
        """The whole of a synchronous log_artifact: upsert, upload each file, close."""
        vid = self.upsert(key, name, type_)
        for p in paths:
            self.upload(key, vid, p)
        self.set_state(key, vid, "CLOSED")
        return vid

    def get_files(self, name, workspace=WORKSPACE):
        return self._json("GET", "/api/rest/v2/artifacts/version/files",
                          query={"artifactName": name, "workspace": workspace})["files"]


# ---------------------------------------------------------------- the relay

def _relay_main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="benchlib.py relay")
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--rate", type=int, default=0, help="bytes/s per direction, 0 = unlimited")
    ap.add_argument("--max-seconds", type=float, default=900)
    args = ap.parse_args(argv)

    lock = threading.Lock()
    counts = {"up": 0, "down": 0, "connections": 0}

    class Link:
        """One direction of a shared link: chunks are paced FIFO at `rate` bytes/s."""

        def __init__(self, rate):
            self.rate = rate
            self.next_free = 0.0
            self.lock = threading.Lock()

        def pace(self, n):
            if not self.rate:
                return
            with self.lock:
                now = time.monotonic()
                start = max(now, self.next_free)
                self.next_free = start + n / float(self.rate)
                wait = self.next_free - now
            if wait > 0:
                time.sleep(wait)

    links = {"up": Link(args.rate), "down": Link(args.rate)}
    chunk_size = 64 << 10 if args.rate else 256 << 10

    def pump(src, dst, direction):
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                links[direction].pace(n)
                dst.sendall(view[:n])
                with lock:
                    counts[direction] += n
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def handle(client):
        try:
            upstream = socket.create_connection(("127.0.0.1", args.upstream), timeout=30)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with lock:
            counts["connections"] += 1
        t = threading.Thread(target=pump, args=(upstream, client, "down"), daemon=True)
        t.start()
        pump(client, upstream, "up")
        t.join()
        client.close()
        upstream.close()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    sys.stdout.write("PORT %d\n" % srv.getsockname()[1])
    sys.stdout.flush()

    def accept_loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())

    def control():
        # stdin: "stats" / "reset" lines; EOF (the benchmark is gone) stops the relay.
        for line in sys.stdin:
            word = line.strip()
            with lock:
                snap = dict(counts)
                if word == "reset":
                    counts.update(up=0, down=0, connections=0)
            sys.stdout.write(json.dumps(snap) + "\n")
            sys.stdout.flush()
        stop.set()

    threading.Thread(target=control, daemon=True).start()
    stop.wait(args.max_seconds)
    srv.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        sys.exit(_relay_main(sys.argv[2:]))
    sys.stderr.write("usage: benchlib.py relay --upstream PORT [--rate BYTES_PER_S]\n")
    sys.exit(2)
