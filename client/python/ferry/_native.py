"""libferry through ctypes: loading the library, one connection per thread.

The protocol has a single implementation, libferry; this module only loads it,
declares the functions the binding uses, and keeps one ``struct ferry_client``
per thread (libferry clients are not thread-safe) and per process (a forked
child never shares its parent's connection).

Reconnecting: when a request finds the connection gone (ferryd restarted),
requests that can be repeated safely are sent again on a new connection. The
one request that cannot, ``artifact.log``, first asks libferry whether the
connection is still open (``ferry_is_connected``: a poll, no round trip), so
that a daemon restart between two calls is noticed before the artifact is
sent; a connection that breaks while the log request itself is in flight is
reported, since its outcome is unknown. A log is one round trip.
"""

import ctypes
import ctypes.util
import json
import os
import threading

from .errors import LibraryNotFoundError, error_for_code

__all__ = ["library", "library_path", "connect", "disconnect", "request", "log", "download",
           "artifact_builder"]

_lib = None
_lib_path = None
_lib_lock = threading.Lock()

# Time limits (ms) for requests that answer at once; 0 = none (log, wait,
# and download can take as long as the data needs).
QUICK_TIMEOUT_MS = 120000
CONNECT_TIMEOUT_MS = 10000

# Codes after which libferry has dropped the connection (a malformed frame
# from the daemon also drops it; the next request then finds it closed).
_GONE = ("connection_closed", "io_error")


def _candidates():
    """Where libferry may be, in order. FERRY_LIB, when set, is the only one."""
    env = os.environ.get("FERRY_LIB")
    if env:
        return [env]
    out = []
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (here, os.path.dirname(here)):
        for n in ("libferry.so", "libferry.so.0"):
            p = os.path.join(d, n)
            if os.path.exists(p):
                out.append(p)
    build = os.environ.get("FERRY_BUILD_DIR")
    if build:
        p = os.path.join(build, "client", "libferry.so")
        if os.path.exists(p):
            out.append(p)
    found = ctypes.util.find_library("ferry")
    if found:
        out.append(found)
    out.append("libferry.so.0")
    return out


class LogOptions(ctypes.Structure):
    """struct ferry_log_options."""
    _fields_ = [("experiment", ctypes.c_char_p), ("workspace", ctypes.c_char_p),
                ("project", ctypes.c_char_p)]


def _declare(lib):
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    pvp = ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "ferry_strerror": (cp, [i]),
        "ferry_err_name": (cp, [i]),
        "ferry_free": (None, [vp]),
        "ferry_connect": (i, [pvp, cp, i]),
        "ferry_close": (None, [vp]),
        "ferry_last_error": (cp, [vp]),
        "ferry_backend_name": (cp, [vp]),
        "ferry_is_connected": (i, [vp]),
        "ferry_call": (i, [vp, cp, cp, i, pvp]),
        "ferry_log_json": (i, [vp, vp, ctypes.POINTER(LogOptions), pvp]),
        "ferry_download": (i, [vp, cp, cp, i, pvp]),
        "ferry_artifact_new": (i, [pvp, cp, cp]),
        "ferry_artifact_free": (None, [vp]),
        "ferry_artifact_last_error": (cp, [vp]),
        "ferry_artifact_set_version": (i, [vp, cp]),
        "ferry_artifact_add_alias": (i, [vp, cp]),
        "ferry_artifact_add_tag": (i, [vp, cp]),
        "ferry_artifact_set_metadata": (i, [vp, cp]),
        "ferry_artifact_add_file": (i, [vp, cp, cp, i, cp]),
        "ferry_artifact_add_remote": (i, [vp, cp, cp, i, cp]),
        "ferry_artifact_add_remote_sync": (i, [vp, cp, cp, i, cp, ctypes.c_int64]),
        "ferry_artifact_add_fd": (i, [vp, i, cp, i, cp]),
        "ferry_artifact_to_json": (i, [vp, pvp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def library():
    """The loaded libferry (ctypes.CDLL); raises LibraryNotFoundError."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        tried = []
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                _declare(lib)
            except (OSError, AttributeError) as e:
                tried.append("%s (%s)" % (path, e))
                continue
            _lib, _lib_path = lib, path
            return lib
        raise LibraryNotFoundError(
            "cannot load libferry.so.0, the C client library of ferryd (tried %s). Install the "
            "ferry package (apt install ./ferry_*.deb); after `cmake --install` into a "
            "directory the loader does not search yet, run `ldconfig` as root (or add the "
            "directory to LD_LIBRARY_PATH); or set FERRY_LIB to the library's path"
            % "; ".join(tried))


def library_path():
    library()
    return _lib_path


def _enc(s):
    return None if s is None else os.fsencode(s) if isinstance(s, os.PathLike) else s.encode()


def _take_string(lib, ptr):
    """Copy and free a string that libferry handed over."""
    if not ptr.value:
        return None
    try:
        return ctypes.string_at(ptr.value).decode("utf-8", "surrogateescape")
    finally:
        lib.ferry_free(ptr)


def _code_name(lib, rc):
    return lib.ferry_err_name(rc).decode()


class _Connection:
    """One struct ferry_client; owned by one thread of one process."""

    def __init__(self, lib):
        self.lib = lib
        self.ptr = ctypes.c_void_p()
        self.pid = os.getpid()
        self.used = False
        rc = lib.ferry_connect(ctypes.byref(self.ptr), None, CONNECT_TIMEOUT_MS)
        if rc != 0:
            msg = self._message(rc)
            self.close()
            raise error_for_code(_code_name(lib, rc), msg)

    def _message(self, rc):
        msg = b""
        if self.ptr.value:
            msg = self.lib.ferry_last_error(self.ptr) or b""
        if not msg:
            msg = self.lib.ferry_strerror(rc)
        return msg.decode("utf-8", "replace")

    def fail(self, rc):
        return error_for_code(_code_name(self.lib, rc), self._message(rc))

    def call(self, op, args, timeout_ms):
        reply = ctypes.c_void_p()
        payload = None if args is None else json.dumps(args, allow_nan=False).encode()
        self.used = True
        rc = self.lib.ferry_call(self.ptr, op.encode(), payload, int(timeout_ms), ctypes.byref(reply))
        if rc != 0:
            raise self.fail(rc)
        text = _take_string(self.lib, reply)
        return json.loads(text) if text else {}

    def log(self, builder, experiment, workspace, project):
        """ferry_log_json: the files are opened here and travel as descriptors."""
        reply = ctypes.c_void_p()
        opts = LogOptions(_enc(experiment), _enc(workspace), _enc(project))
        self.used = True
        rc = self.lib.ferry_log_json(self.ptr, builder.ptr, ctypes.byref(opts), ctypes.byref(reply))
        if rc != 0:
            raise self.fail(rc)
        return json.loads(_take_string(self.lib, reply))

    def download(self, spec, directory, mode):
        reply = ctypes.c_void_p()
        self.used = True
        rc = self.lib.ferry_download(self.ptr, _enc(spec), os.fsencode(directory), mode,
                                     ctypes.byref(reply))
        if rc != 0:
            raise self.fail(rc)
        return json.loads(_take_string(self.lib, reply))

    def close(self):
        ptr, self.ptr = self.ptr, ctypes.c_void_p()
        if ptr.value and self.lib is not None:
            self.lib.ferry_close(ptr)

    def __del__(self):
        # In a forked child the struct is a copy: closing it closes only the
        # child's descriptor. At interpreter exit ctypes may be gone already.
        try:
            self.close()
        except Exception:
            pass


_local = threading.local()


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is not None and conn.pid == os.getpid():
        return conn
    _local.conn = None
    conn = _Connection(library())
    _local.conn = conn
    return conn


def _drop(conn):
    if getattr(_local, "conn", None) is conn:
        _local.conn = None
    conn.close()


def disconnect():
    """Close this thread's connection (the next request opens a new one)."""
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        conn.close()


def connect():
    """Make sure this thread has a connection; raises ConnectError if ferryd is down."""
    return _connection()


def request(op, args=None, timeout_ms=QUICK_TIMEOUT_MS, repeatable=True):
    """Send `op` with the dict `args` and return the reply dict (with "id" and "ok").

    `repeatable`: the request may be sent again on a new connection when the
    old one turns out to be gone. Otherwise a reused connection is probed first.
    """
    conn = _connection()
    if not repeatable and conn.used and not conn.lib.ferry_is_connected(conn.ptr):
        _drop(conn)
        conn = _connection()
    try:
        return conn.call(op, args, timeout_ms)
    except Exception as e:
        if getattr(e, "code", None) not in _GONE:
            raise
        _drop(conn)
        if not repeatable:
            raise error_for_code(
                e.code, "%s; ferryd may or may not have stored the request, check with "
                "`ferry ls --all`" % str(e).rstrip("."))
    return _connection().call(op, args, timeout_ms)


def get(args, timeout_ms=QUICK_TIMEOUT_MS):
    """The `get` reply for `args`, its assets put together from ferryd's pages.

    A reply is one frame, so ferryd sends a version with many assets a page
    at a time (`assets_from`, `assets_total`). Should the look-up come to name
    another version between two pages (one logged meanwhile), start over.
    """
    for _ in range(5):
        first = request("get", dict(args), timeout_ms)
        assets = first.get("assets", [])
        total = first.get("assets_total", len(assets))
        same = True
        while len(assets) < total:
            page = request("get", dict(args, assets_from=len(assets)), timeout_ms)
            if any(page.get(k) != first.get(k) for k in ("workspace", "name", "version", "job")):
                same = False
                break
            if not page.get("assets"):
                raise error_for_code("protocol_error", "ferryd sent an empty page of assets")
            assets.extend(page["assets"])
        if same:
            first.pop("assets_from", None)
            return first
    raise error_for_code("busy", "the version kept changing while its assets were read; try again")


def log(builder, experiment=None, workspace=None, project=None):
    """Log the version `builder` describes; one round trip for up to 250 files.

    Not repeatable: a connection that ferryd closed is noticed (and replaced)
    before anything is sent; one that breaks while the request is in flight
    is reported, since its outcome is unknown.
    """
    conn = _connection()
    if conn.used and not conn.lib.ferry_is_connected(conn.ptr):
        _drop(conn)
        conn = _connection()
    try:
        return conn.log(builder, experiment, workspace, project)
    except Exception as e:
        if getattr(e, "code", None) in _GONE:
            _drop(conn)
            raise error_for_code(
                e.code, "%s; ferryd may or may not have stored the version, check with "
                "`ferry ls --all`" % str(e).rstrip(".")) from None
        raise


_MODES = {"fail": 0, "preserve": 1, "overwrite": 2}


def download(spec, directory, mode):
    """Download `spec` into `directory` (libferry writes the files). Repeatable."""
    conn = _connection()
    try:
        return conn.download(spec, directory, _MODES[mode])
    except Exception as e:
        if getattr(e, "code", None) not in _GONE:
            raise
        _drop(conn)
    return _connection().download(spec, directory, _MODES[mode])


class ArtifactBuilder:
    """A scratch struct ferry_artifact: libferry's own value rules and directory walk."""

    def __init__(self, name, artifact_type=None):
        self.lib = library()
        self.ptr = ctypes.c_void_p()
        rc = self.lib.ferry_artifact_new(ctypes.byref(self.ptr), _enc(name), _enc(artifact_type))
        if rc != 0:
            err = self.fail(rc)
            self.close()
            raise err

    def fail(self, rc):
        msg = b""
        if self.ptr.value:
            msg = self.lib.ferry_artifact_last_error(self.ptr) or b""
        if not msg:
            msg = self.lib.ferry_strerror(rc)
        return error_for_code(_code_name(self.lib, rc), msg.decode("utf-8", "replace"))

    def _check(self, rc):
        if rc != 0:
            raise self.fail(rc)

    def set_version(self, v):
        self._check(self.lib.ferry_artifact_set_version(self.ptr, _enc(v)))

    def add_alias(self, s):
        self._check(self.lib.ferry_artifact_add_alias(self.ptr, _enc(s)))

    def add_tag(self, s):
        self._check(self.lib.ferry_artifact_add_tag(self.ptr, _enc(s)))

    def set_metadata(self, json_text):
        self._check(self.lib.ferry_artifact_set_metadata(self.ptr, _enc(json_text)))

    def add_file(self, path, logical_path, overwrite, metadata_json):
        self._check(self.lib.ferry_artifact_add_file(
            self.ptr, os.fsencode(path), _enc(logical_path), 1 if overwrite else 0,
            _enc(metadata_json)))

    def add_remote(self, uri, logical_path, overwrite, metadata_json):
        self._check(self.lib.ferry_artifact_add_remote(
            self.ptr, _enc(uri), _enc(logical_path), 1 if overwrite else 0, _enc(metadata_json)))

    def add_remote_sync(self, uri, logical_path, overwrite, metadata_json, max_synced_objects):
        self._check(self.lib.ferry_artifact_add_remote_sync(
            self.ptr, _enc(uri), _enc(logical_path), 1 if overwrite else 0, _enc(metadata_json),
            max_synced_objects))

    def add_fd(self, fd, logical_path, overwrite, metadata_json):
        """The artifact keeps its own duplicate of `fd`."""
        self._check(self.lib.ferry_artifact_add_fd(
            self.ptr, fd, _enc(logical_path), 1 if overwrite else 0, _enc(metadata_json)))

    def to_dict(self):
        out = ctypes.c_void_p()
        self._check(self.lib.ferry_artifact_to_json(self.ptr, ctypes.byref(out)))
        return json.loads(_take_string(self.lib, out))

    def close(self):
        ptr, self.ptr = self.ptr, ctypes.c_void_p()
        if ptr.value:
            self.lib.ferry_artifact_free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def artifact_builder(name, artifact_type=None):
    return ArtifactBuilder(name, artifact_type)
