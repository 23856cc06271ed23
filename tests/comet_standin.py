#!/usr/bin/env python3
"""A stand-in for Comet's REST API, used by ferry's test suite.

Standard library only.  It keeps its registry in memory (nothing survives a
restart of the stand-in) and stores uploaded bytes under ``--data-dir``.
Everything described here is what other tests rely on; see
/work/shared/COMET-REST.md for the real service this imitates.

Running
=======

    python3 tests/comet_standin.py --port 0 --data-dir DIR [--api-key KEY]
                                   [--max-seconds 900] [--seed N]
                                   [--no-stdin] [--verbose]

* Binds 127.0.0.1 only; ``--port 0`` picks a free port.  As soon as it
  listens it prints exactly one line ``PORT <n>`` to stdout (flushed).
* It stops by itself when its stdin reaches EOF (hold a pipe to its stdin;
  ``--no-stdin`` disables this), after ``--max-seconds`` (default 900), and on
  SIGTERM or SIGINT.  Exit status 0.
* In-process use::

      from comet_standin import StandIn, StandInClient
      si = StandIn(data_dir, api_key=None, seed=None)
      port = si.start()          # or si.start(port=N); also a context manager
      client = StandInClient(port)
      client.set_faults([{"endpoint": "uploadAsset", "status": 503, "count": 2}])
      ...; client.state(); si.stop()

  ``si.url`` is ``http://127.0.0.1:<port>/clientlib/`` (a value for
  COMET_URL_OVERRIDE).  ``si.snapshot()``, ``si.set_faults()``,
  ``si.set_down()``, ``si.set_config()`` and ``si.reset_counts()`` work
  without HTTP.  ``si.stop()`` returns promptly even while responses are
  being trickled or streamed (see "Fault rules"): those connections are shut
  down and their handlers end.

HTTP behaviour
==============

HTTP/1.1 with keep-alive.  Every response carries Content-Length, except
the ``trickle`` (unlimited) and ``endless`` fault answers, which are
delimited by closing the connection.  Request lines (method, path and query
string) may be up to 1 MiB long (longer: 414, connection closed) -- enough
for the longest artifactVersionId that ``version_id_length`` can make.
Request bodies may use Content-Length or ``Transfer-Encoding: chunked``.
``Expect: 100-continue`` is honoured lazily: "100 Continue" is sent only when
the server actually starts reading the body; a request refused before that
(fault, validation error) gets its final response at once together with
``Connection: close``, and the client never sends the body.  Otherwise an
unread body is drained before the response so the connection stays usable.
Multipart bodies are parsed as a stream and file parts go straight to disk, so
memory does not grow with upload size.

Authentication: when an API key is configured, every REST endpoint except
``isAlive`` needs ``Authorization: <key>`` or ``Comet-Sdk-Api: <key>`` (no
"Bearer").  Otherwise 401.  Without ``--api-key`` no key is checked.

Errors are always JSON ``{"code": <http status>, "msg": "...",
"sdk_error_code": N}``.  sdk_error_code is 0 when Comet has no specific code.
Codes used:

* 624523 artifact / version not found.  Comet answers this with HTTP 400, and
  so does the stand-in (never 404 for a missing version).
* 90399  upsert of an explicit version that already exists (semver precedence
  equality, i.e. build metadata ignored) -- unless it is still OPEN and was
  created by the same experimentKey: then the upsert returns that version
  (COMET-REST.md leaves the trigger of 90399 unconfirmed; this is the reading
  that loses no data when a client resends an upsert whose answer it lost).
* 90401  artifact version state is immutable: a state change other than
  OPEN->CLOSED / OPEN->ERROR (CLOSED->CLOSED too: not idempotent), or an
  upload to a version that is not OPEN.
* 90402 / 90403  a by-name look-up (latest, version=, alias=, versionOrAlias=)
  found a version that is OPEN / ERROR.  Look-ups by versionId skip this.

Endpoints (short names in brackets are used by counts and fault rules)
======================================================================

[isAlive]          GET  /clientlib/isAlive/ver -> {"version": "3.0.0-standin"}
[accountDetails]   GET  /api/rest/v2/account-details
                   -> {"userName": "standin", "defaultWorkspaceName": "default"}
[createExperiment] POST /api/rest/v2/write/experiment/create
                   {"workspaceName"?, "projectName"?, "experimentName"?}
                   -> {"experimentKey", "workspaceName", "projectName", "link"}
                   (defaults: workspace "default", project "general")
[addRun]           POST /clientlib/logger/add/run {"experimentKey",
                   "projectName"?, "teamName"? (= workspace), ...}
                   -> {"runId", "experimentKey", "projectName", "workspaceName",
                   "isNewExperiment"}.  Key must be alphanumeric, 32-50 chars.
                   Registering a known key again returns the same answer.
[upsert]           POST /api/rest/v2/write/artifacts/upsert {"artifactName",
                   "artifactType", "experimentKey", "version": "x.y.z"|null,
                   "alias": [..]|null, "versionTags": [..]|null,
                   "versionMetadata": "<JSON object as a string>"|null}
                   -> {"artifactId", "artifactVersionId", "currentVersion",
                   "previousVersion"}.  artifactVersionId: 32 hex digits, or
                   see ``version_id_length`` under "Control API".
                   The artifact is keyed by (experiment's
                   workspace, artifactName); its type is fixed by the first
                   upsert (a different later type is ignored).  version null:
                   1.0.0, then next major of the highest version.
                   previousVersion = highest version before this one, or null.
                   New version is OPEN.  Aliases: "Latest" (any case) is
                   reserved and always names the most recently *created*
                   version; a user alias names one version per artifact and
                   moves to the version that last claimed it.
[uploadAsset]      POST /api/rest/v2/write/experiment/upload-asset
                   ?experimentKey=&artifactVersionId=&fileName=&type=asset
                   &overwrite=&extension=&isRemote=&assetId=
                   multipart/form-data: part "file" (bytes) or, with
                   isRemote=true, part "link" (URI text); optional part
                   "metadata" (JSON string of an object, or "null").  Other
                   parts are ignored.  The version must be OPEN (else 90401);
                   an existing fileName needs overwrite=true (else 400 "asset
                   already exists"); overwrite replaces the asset in place.
                   -> {"assetId", "fileName", "artifactVersionId"}.
                   assetId = the query's assetId or a new uuid4 hex.
[state]            POST /api/rest/v2/write/artifacts/state
                   {"artifactVersionId", "experimentKey", "state"} -> {}
[labels]           POST /api/rest/v2/write/artifacts/version/labels
                   {"artifactVersionId", "alias"?, "versionTags"?,
                   "versionMetadata"?}: fields present and non-null replace
                   the old ones (aliases move as in upsert) -> {}
[getVersion]       GET /api/rest/v2/artifacts/version  selectors below
                   -> {"artifactVersionId", "artifactVersion", "sizeInBytes",
                   "state", "alias": [.., "Latest"], "tags": [..],
                   "metadata": "<json string>"|null, "experimentKey",
                   "artifact": {"artifactId", "artifactName", "artifactType",
                   "workspaceName", "tags"}}
[getFiles]         GET /api/rest/v2/artifacts/version/files  same selectors
                   -> {"files": [{"assetId", "fileName", "fileSize", "link",
                   "remote", "metadata": "<json string>"|null,
                   "artifactVersionId"}]}   (in upload order)
[getAsset]         GET /api/rest/v2/experiment/asset/get-asset
                   ?assetId=&artifactVersionId=  -> the bytes
                   (application/octet-stream).  Remote asset -> 400;
                   unknown asset -> 404 (sdk_error_code 624523).
Anything else      404 JSON error [unknown]; wrong method -> 405.

Version selectors: ``versionId`` (an artifactVersionId; ``artifactId`` is
then optional but must match), or the artifact by ``artifactId`` or by
``artifactName`` + ``workspace`` (default "default"; ``project`` is ignored)
plus one of ``version=`` (exact string), ``alias=`` (exact; "latest" in any
case), ``versionOrAlias=`` (version first, then alias), or nothing (latest).

Fault rules
===========

POST /_standin/faults ``{"rules": [rule, ...]}`` replaces all rules.  Rule::

    {"endpoint": "<short name>"|"*", "status": 503, "probability": 1.0,
     "retry_after": null, "reset": false, "delay": 0.0, "count": null,
     "match_file": null, "msg": null, "sdk_error_code": 0,
     "reset_after_body": false, "respond": null, "html": false,
     "trickle": null, "endless": null}

Unknown fields (also inside ``respond``, ``trickle`` and ``endless``) and
values of the wrong type or range are refused with 400 (the whole rule list
is then left unchanged).

For each non-control request (including unknown paths) the rules are checked
in order; the FIRST matching rule applies and no further rule is looked at.
A rule matches when the endpoint matches, ``match_file`` (if set) equals the
fileName query parameter, ``count`` (if set) is > 0, and random() <
probability (the random number is drawn only if the other conditions hold).
A match decrements ``count``.  Effects, in order:

* ``delay`` seconds of sleep (cut short when the stand-in stops).  A rule
  with only a delay then lets the request proceed normally (slow response).
* ``reset``: the connection is closed with RST (SO_LINGER 0), no response.
  uploadAsset: after reading part of the body (half of Content-Length, at
  most 1 MiB; 64 KiB of a chunked body) -- "reset mid-body".  getAsset: after
  sending the headers and half of the file -- "reset mid-download".
  Others: right after the request headers.
* ``reset_after_body``: true: the whole request body is read (with
  ``Expect: 100-continue`` that sends "100 Continue") and discarded, then the
  connection is closed with RST and no response -- "the server took the
  upload and the connection died before the answer".  Meant for uploadAsset,
  works on any endpoint (without a body it is the same as ``reset``).  The
  upload is NOT stored (faulted requests change no state).
* ``respond``: ``{"status": 200, "content_type": "application/json",
  "body": "", "headers": []}`` (every key optional; these are the defaults):
  the request is answered with exactly that status (200-599; 204 and 304
  only with an empty body), that Content-Type (``null``: no Content-Type
  header), that body (a string, sent as UTF-8, with a matching
  Content-Length) and these extra headers (``[[name, value], ...]``;
  Content-Length and Transfer-Encoding are refused; ``["Connection",
  "close"]`` makes the stand-in close the connection after the answer).
  Models a web page, a captive portal, a proxy's answer, JSON that lacks
  fields (``{"status": 200, "body": "{}"}``), truncated JSON, etc.  The
  request body is drained first as for ``status`` (see "HTTP behaviour"), so
  a keep-alive connection stays usable.
* ``html``: true: shorthand for ``respond`` 200, ``text/html;
  charset=utf-8``, a small login-page-like HTML document (a captive portal).
* ``trickle``: ``{"interval": 1.0, "bytes": null, "status": 200}`` (all
  optional; interval 0 < seconds <= 86400, bytes null or an integer >= 0, status
  200-599 except 204/304).  The request body is drained (not if the client
  waits for "100 Continue": it is never asked for), then the status line and
  headers are sent at once -- ``Content-Type: application/json``,
  ``Connection: close``, ``Content-Length: <bytes>`` only when bytes is not
  null -- and then ONE byte of the body every ``interval`` seconds (the
  first one ``interval`` after the headers).  The body is the JSON document
  ``{"pad":"xxx...x"}``: with ``bytes`` N >= 10 exactly N bytes long and
  complete (N < 10: its first N bytes), after which the connection is
  closed; with ``bytes`` null it never completes and bytes keep coming until
  the client closes the connection or the stand-in stops.  Bytes the client
  sends meanwhile are read and discarded; the handler notices a client that
  closed within ~0.2 s (not at the next byte).
* ``endless``: ``{"status": 200, "chunk": 65536}`` (both optional; status
  200-599 except 204/304, chunk 1..16 MiB): like trickle (body drained,
  ``Content-Type: application/json``, no Content-Length, ``Connection:
  close``) but the body -- ``{"pad":"xxxx...`` -- never ends and is sent as
  fast as the client reads it, ``chunk`` bytes per send() call, until the
  client closes the connection or the stand-in stops.
* ``status`` (400-599): that status with a JSON error body (``msg`` /
  ``sdk_error_code`` if given).

``retry_after``: a number (seconds; integers and integral floats are sent as
integers, other numbers verbatim, e.g. "2.5") or a non-empty string sent
verbatim (an HTTP-date like "Fri, 01 Jan 2100 00:00:00 GMT", "999999999",
or garbage).  It adds ``Retry-After: <value>`` to whatever answer the rule
sends (status, respond, html, trickle, endless).

``reset``, ``reset_after_body``, ``respond``, ``html``, ``trickle``,
``endless`` and ``status`` each answer the request; a rule may have at most
one of them, except that ``reset`` together with ``status`` is still
accepted (``reset`` wins, as it always did).

Faulted requests change no state.  Random numbers come from
random.Random(seed) (``--seed``/``seed=``, default time-based) under a lock.
The requests log names the effect in ``fault``: "reset", "reset_after_body",
"respond", "html", "trickle", "endless" or "status" (a delay alone is not a
fault).  Trickle and endless entries also get ``sent``: body bytes sent.

Control API (no auth; never faulted; works while "down")
========================================================

GET  /_standin/state  -> {
  "experiments": {key: {"workspace", "project", "name", "runId"}},
  "artifacts": [{"name", "type", "workspace", "artifactId", "tags",
     "versions": [{"version", "artifactVersionId", "state",
        "aliases": [.. incl. "Latest"], "tags", "metadata": {..}|null,
        "experimentKey", "assets": [{"fileName", "size", "sha256", "remote",
           "link", "metadata": {..}|null, "assetId", "uploads", "type",
           "extension", "path"}]}]}],   (versions in creation order)
  "counts": {"<short name>": n},     requests that reached the handler,
                                     faulted ones included
  "down": bool, "down_counts": {"<short name>": n},   refused while down
  "faults": [rules, with count as remaining now],
  "config": {"version_id_length": null|n},
  "requests": [{"t", "method", "path", "endpoint", "status", "done",
                "fault"?, "sent"?, "versionId"?, "fileName"?}]}
                                     (last 10000, arrival order)

  An asset's ``uploads`` counts upload requests that succeeded for that
  fileName in that version (overwrites included), so "no asset uploaded twice"
  is ``uploads == 1``.  ``path`` is where its bytes are stored (null for
  remote assets).  A request's ``path`` has no query string; its ``t`` is
  the wall-clock time (time.time()) at which its request line arrived.
  ``status`` is null while the stand-in has not started to answer; it is
  set, final, BEFORE the first byte of the answer is sent (so a client that
  has read a response always finds its status here), and is 0 when the
  connection was reset, or lost before an answer was started (a "reset
  mid-download" is 0 although its headers said 200; a trickle or endless
  answer keeps the status it sent -- see ``sent``).  ``done`` is the
  wall-clock time at which the stand-in finished with the request (answer
  written, connection reset, or client gone), null before; it may lag the
  client's reading by a moment.  ``versionId`` / ``fileName``: the
  artifactVersionId (query ``artifactVersionId`` or ``versionId``; for
  state/labels the body's; for upsert the one it created) and fileName the
  request named, exactly as received (percent-decoded, full length, also when
  empty); absent when the request named none.
GET  /_standin/faults -> {"rules": [...]}
POST /_standin/faults {"rules": [...]}  -> {"rules": n}; invalid rule -> 400
GET  /_standin/config -> {"version_id_length": null|n}
POST /_standin/config {"version_id_length": n|null} -> the whole config.
     Keys given replace their value; unknown keys or bad values -> 400 and
     nothing changes.  ``version_id_length`` n (32..100000): upserts from now
     on create artifactVersionIds of exactly n characters [A-Za-z0-9]; null
     (the default): 32 lower-case hex digits (uuid4).  Such ids are accepted
     everywhere an id is (query strings, JSON bodies, look-ups).  Also
     ``si.set_config(version_id_length=n)`` / ``StandInClient.set_config``.
     Kept across reset-counts.
GET  /_standin/faults -> {"rules": [...]}
POST /_standin/faults {"rules": [...]}  -> {"rules": n}; invalid rule -> 400
POST /_standin/down {"down": true|false}: while down every non-control
     request's connection is closed at once with RST and no response (the
     backend is unreachable); such requests are not in counts/requests, only
     in down_counts.
POST /_standin/reset-counts: clears counts, down_counts and the requests log.
"""

import argparse
import collections
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import string
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

CHUNK = 1 << 20              # body read size
JSON_LIMIT = 16 << 20        # largest JSON body accepted
FIELD_LIMIT = 16 << 20       # largest non-file multipart part kept in memory
LOG_LIMIT = 10000            # requests log length
REQUEST_LINE_LIMIT = 1 << 20 # longest request line accepted (else 414)
POLL = 0.2                   # how often streaming handlers look for stop
VERSION_ID_MIN, VERSION_ID_MAX = 32, 100000   # config version_id_length

# Body of trickle/endless answers: {"pad":"xxx..."}; complete when cut to n.
PAD_HEAD, PAD_TAIL = b'{"pad":"', b'"}'

# Answer of {"html": true}: what a captive portal or an SSO proxy sends.
LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in – Guest Network</title></head>
<body>
<h1>Sign in to continue</h1>
<p>You must accept the terms of use before you can access the Internet.</p>
<form method="post" action="/login">
<label>User name <input name="username" autocomplete="username"></label>
<label>Password <input type="password" name="password"></label>
<label><input type="checkbox" name="accept"> I accept the terms</label>
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""

# Error codes Comet's SDKs know.
SDK_NOT_FOUND = 624523
SDK_VERSION_EXISTS = 90399
SDK_STATE_IMMUTABLE = 90401
SDK_VERSION_NOT_CLOSED = 90402
SDK_VERSION_IN_ERROR = 90403

# path -> (method, short name)
ROUTES = {
    "/clientlib/isAlive/ver": ("GET", "isAlive"),
    "/api/rest/v2/account-details": ("GET", "accountDetails"),
    "/api/rest/v2/write/experiment/create": ("POST", "createExperiment"),
    "/clientlib/logger/add/run": ("POST", "addRun"),
    "/api/rest/v2/write/artifacts/upsert": ("POST", "upsert"),
    "/api/rest/v2/write/experiment/upload-asset": ("POST", "uploadAsset"),
    "/api/rest/v2/write/artifacts/state": ("POST", "state"),
    "/api/rest/v2/write/artifacts/version/labels": ("POST", "labels"),
    "/api/rest/v2/artifacts/version": ("GET", "getVersion"),
    "/api/rest/v2/artifacts/version/files": ("GET", "getFiles"),
    "/api/rest/v2/experiment/asset/get-asset": ("GET", "getAsset"),
}
SHORT_NAMES = {short for _, short in ROUTES.values()} | {"unknown"}

EXPERIMENT_KEY_RE = re.compile(r"^[A-Za-z0-9]{32,50}$")
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
PARAM_RE = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')

OPEN, CLOSED, ERROR = "OPEN", "CLOSED", "ERROR"
LATEST = "Latest"


class ApiError(Exception):
    """An error answered as JSON {"code", "msg", "sdk_error_code"}."""

    def __init__(self, status, msg, sdk_error_code=0, headers=()):
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.sdk_error_code = sdk_error_code
        self.headers = list(headers)


class BadBody(Exception):
    """The request body is malformed; the connection cannot be reused."""


class ClientGone(Exception):
    """The client closed the connection in the middle of a request body."""


# ---------------------------------------------------------------- helpers

def semver_key(version):
    """Precedence key of a strict semver string (build metadata ignored)."""
    m = SEMVER_RE.match(version)
    if not m:
        raise ValueError(version)
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                for p in pre.split("."))
    return (major, minor, patch, 0, ids)


def header_params(value):
    """'a/b; x=1; y="q"' -> ('a/b', {'x': '1', 'y': 'q'}) (keys lower-cased)."""
    head, _, _ = value.partition(";")
    params = {}
    for m in PARAM_RE.finditer(value[len(head):]):
        v = m[2].strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        params[m[1].lower()] = v
    return head.strip().lower(), params


def str_list(value, field):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ApiError(400, "%s must be a list of strings" % field)
    return list(value)


def metadata_string(value, field):
    """Validate a JSON-string-encoded object; returns (dict|None, str|None)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise ApiError(400, "%s must be a JSON string encoding an object, "
                       "or null" % field)
    try:
        obj = json.loads(value)
    except ValueError:
        raise ApiError(400, "%s is not valid JSON" % field) from None
    if obj is None:
        return None, None
    if not isinstance(obj, dict):
        raise ApiError(400, "%s must encode a JSON object" % field)
    return obj, value


def query_bool(value):
    return value is not None and value.strip().lower() in ("true", "1", "yes")


_ID_CHARS = (string.ascii_letters + string.digits).encode()
_ID_TABLE = bytes(_ID_CHARS[i % len(_ID_CHARS)] for i in range(256))
_ID_DROP = bytes(range(256 - 256 % len(_ID_CHARS), 256))   # no modulo bias


def random_id(length):
    """A random string of exactly `length` characters [A-Za-z0-9]."""
    out = b""
    while len(out) < length:
        out += os.urandom(length - len(out) + 16).translate(_ID_TABLE,
                                                            _ID_DROP)
    return out[:length].decode()


def pad_body(n):
    """The trickle body cut to n bytes: complete JSON when n >= 10."""
    doc = PAD_HEAD + b"x" * max(0, n - len(PAD_HEAD) - len(PAD_TAIL)) + PAD_TAIL
    return doc[:n]


# ------------------------------------------------------------ body reading

class BodyReader:
    """Reads one request body (Content-Length or chunked) in pieces.

    read() returns b"" once the body is complete.  ``before_read`` is called
    once, before the first byte is read (used to send "100 Continue").
    """

    def __init__(self, rfile, length=0, chunked=False, before_read=None):
        self.rfile = rfile
        self.remaining = length
        self.chunked = chunked
        self.chunk_left = 0
        self.done = not chunked and length == 0
        self.started = False
        self.before_read = before_read

    def _start(self):
        if not self.started:
            self.started = True
            if self.before_read is not None:
                self.before_read()

    def read(self, n=CHUNK):
        if self.done:
            return b""
        self._start()
        try:
            if not self.chunked:
                data = self.rfile.read(min(n, self.remaining))
                if not data:
                    raise ClientGone("connection closed mid-body")
                self.remaining -= len(data)
                if self.remaining == 0:
                    self.done = True
                return data
            if self.chunk_left == 0:
                line = self.rfile.readline(4096)
                if not line:
                    raise ClientGone("connection closed mid-body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadBody("bad chunk size line") from None
                if size < 0:
                    raise BadBody("bad chunk size")
                if size == 0:
                    while True:                       # trailers
                        line = self.rfile.readline(65536)
                        if not line:
                            raise ClientGone("connection closed in trailers")
                        if line in (b"\r\n", b"\n"):
                            break
                    self.done = True
                    return b""
                self.chunk_left = size
            data = self.rfile.read(min(n, self.chunk_left))
            if not data:
                raise ClientGone("connection closed mid-chunk")
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BadBody("chunk not followed by CRLF")
            return data
        except OSError as e:
            raise ClientGone(str(e)) from None

    def read_all(self, limit):
        out = bytearray()
        while True:
            data = self.read()
            if not data:
                return bytes(out)
            out += data
            if len(out) > limit:
                raise ApiError(413, "request body too large")

    def drain(self):
        while self.read():
            pass


class MultipartParser:
    """Streaming multipart/form-data parser.

    for part in MultipartParser(body, boundary).parts():
        part.name, part.filename, part.headers; for chunk in part.data: ...
    A part's data must be consumed (or is skipped) before the next part.
    """

    class Part:
        def __init__(self, headers, data):
            self.headers = headers
            self.data = data
            _, params = header_params(headers.get("content-disposition", ""))
            self.name = params.get("name")
            self.filename = params.get("filename")

    def __init__(self, body, boundary):
        self.body = body
        self.sep = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")   # so the first delimiter looks like the rest

    def _fill(self):
        data = self.body.read(CHUNK)
        if not data:
            raise BadBody("multipart body ends before its closing boundary")
        self.buf += data

    def _skip_preamble(self):
        keep = len(self.sep) - 1
        while True:
            i = self.buf.find(self.sep)
            if i >= 0:
                del self.buf[:i + len(self.sep)]
                return
            if len(self.buf) > keep:
                del self.buf[:len(self.buf) - keep]
            self._fill()

    def _after_delimiter(self):
        """After a delimiter: True if a part follows, False at the end."""
        while len(self.buf) < 2:
            self._fill()
        if self.buf[:2] == b"--":
            self.body.drain()         # epilogue
            self.buf.clear()
            return False
        while True:                   # rest of the line (transport padding)
            i = self.buf.find(b"\r\n")
            if i >= 0:
                if self.buf[:i].strip(b" \t"):
                    raise BadBody("garbage after multipart boundary")
                del self.buf[:i + 2]
                return True
            if len(self.buf) > 1024:
                raise BadBody("garbage after multipart boundary")
            self._fill()

    def _read_headers(self):
        while True:
            if len(self.buf) >= 2 and self.buf[:2] == b"\r\n":
                del self.buf[:2]
                return {}
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                raw = bytes(self.buf[:i]).decode("utf-8", "replace")
                del self.buf[:i + 4]
                break
            if len(self.buf) > 65536:
                raise BadBody("multipart part headers too large")
            self._fill()
        headers = {}
        for line in raw.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise BadBody("bad multipart header line")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _data(self):
        keep = len(self.sep) - 1
        while True:
            i = self.buf.find(self.sep)
            if i >= 0:
                if i:
                    yield bytes(self.buf[:i])
                del self.buf[:i + len(self.sep)]
                return
            if len(self.buf) > keep:
                n = len(self.buf) - keep
                yield bytes(self.buf[:n])
                del self.buf[:n]
            self._fill()

    def parts(self):
        self._skip_preamble()
        while self._after_delimiter():
            part = self.Part(self._read_headers(), self._data())
            yield part
            for _ in part.data:        # skip whatever the consumer left
                pass


# -------------------------------------------------------------- the model

class Experiment:
    def __init__(self, key, workspace, project, name=None):
        self.key = key
        self.workspace = workspace
        self.project = project
        self.name = name
        self.run_id = uuid.uuid4().hex


class Artifact:
    def __init__(self, workspace, name, type_):
        self.artifact_id = uuid.uuid4().hex
        self.workspace = workspace
        self.name = name
        self.type = type_
        self.tags = []
        self.versions = []             # creation order; the last is "Latest"


class Version:
    def __init__(self, artifact, version, experiment_key, id_=None):
        self.id = id_ or uuid.uuid4().hex
        # Directory of its blobs: long ids do not fit in a file name.
        self.blob_dir = (self.id if len(self.id) <= 64 else
                         hashlib.sha256(self.id.encode()).hexdigest())
        self.artifact = artifact
        self.version = version
        self.key = semver_key(version)
        self.state = OPEN
        self.aliases = []              # user aliases ("Latest" is computed)
        self.tags = []
        self.metadata = None           # dict or None
        self.metadata_str = None       # the string as received
        self.experiment_key = experiment_key
        self.assets = {}               # fileName -> Asset, upload order
        self.created = time.time()

    def is_latest(self):
        return self.artifact.versions[-1] is self

    def all_aliases(self):
        return self.aliases + ([LATEST] if self.is_latest() else [])


class Asset:
    def __init__(self, file_name, asset_id):
        self.file_name = file_name
        self.asset_id = asset_id
        self.size = 0
        self.sha256 = None
        self.remote = False
        self.link = None
        self.metadata = None
        self.metadata_str = None
        self.uploads = 0
        self.path = None
        self.type = None
        self.extension = None


class Fault:
    FIELDS = {"endpoint", "status", "probability", "retry_after", "reset",
              "delay", "count", "match_file", "msg", "sdk_error_code",
              "reset_after_body", "respond", "html", "trickle", "endless"}
    # Fields that answer the request; at most one per rule (but see below).
    ANSWERS = ("reset", "reset_after_body", "respond", "html", "trickle",
               "endless", "status")

    def __init__(self, rule):
        if not isinstance(rule, dict):
            raise ApiError(400, "a fault rule must be an object")
        unknown = set(rule) - self.FIELDS
        if unknown:
            raise ApiError(400, "unknown fault rule field(s): %s"
                           % ", ".join(sorted(unknown)))
        self.endpoint = rule.get("endpoint", "*")
        if self.endpoint != "*" and self.endpoint not in SHORT_NAMES:
            raise ApiError(400, "unknown endpoint %r in fault rule"
                           % (self.endpoint,))
        self.status = rule.get("status")
        if self.status is not None and (type(self.status) is not int
                                        or not 400 <= self.status <= 599):
            raise ApiError(400, "fault status must be an integer 400-599")
        self.probability = self._number(rule, "probability", 1.0)
        self.retry_after = rule.get("retry_after")
        if isinstance(self.retry_after, str):
            if (not self.retry_after.strip()
                    or re.search(r"[\x00-\x1f\x7f]", self.retry_after)):
                raise ApiError(400, "fault retry_after string must be "
                               "non-empty, without control characters")
        elif self.retry_after is not None:
            self._number(rule, "retry_after", 0)
        self.reset = bool(rule.get("reset", False))
        self.delay = self._number(rule, "delay", 0.0)
        self.count = rule.get("count")
        if self.count is not None and type(self.count) is not int:
            raise ApiError(400, "fault count must be an integer or null")
        self.match_file = rule.get("match_file")
        self.msg = rule.get("msg") or "stand-in fault injection"
        self.sdk_error_code = rule.get("sdk_error_code", 0)
        self.reset_after_body = self._flag(rule, "reset_after_body")
        self.html = self._flag(rule, "html")
        self.respond = self._respond(rule.get("respond"))
        self.trickle = self._sub(rule, "trickle", {
            "interval": (1.0, lambda v: self._is_number(v) and 0 < v <= 86400,
                         "a number of seconds > 0"),
            "bytes": (None, lambda v: v is None or (type(v) is int and v >= 0),
                      "null or an integer >= 0"),
            "status": (200, self._stream_status, "an integer 200-599, not "
                       "204/304")})
        self.endless = self._sub(rule, "endless", {
            "status": (200, self._stream_status, "an integer 200-599, not "
                       "204/304"),
            "chunk": (65536, lambda v: type(v) is int and 1 <= v <= 16 << 20,
                      "an integer 1..16777216")})
        answers = [f for f in self.ANSWERS
                   if rule.get(f) not in (None, False)]
        if len(answers) > 1 and set(answers) != {"reset", "status"}:
            raise ApiError(400, "a fault rule can have only one of %s (got "
                           "%s)" % (", ".join(self.ANSWERS),
                                    ", ".join(answers)))

    @staticmethod
    def _is_number(v):
        return not isinstance(v, bool) and isinstance(v, (int, float))

    @staticmethod
    def _stream_status(v):
        return type(v) is int and 200 <= v <= 599 and v not in (204, 304)

    @staticmethod
    def _flag(rule, field):
        v = rule.get(field, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise ApiError(400, "fault %s must be true or false" % field)
        return v

    @staticmethod
    def _sub(rule, field, spec):
        """Validate an object-valued effect; returns it with defaults, or
        None.  spec: key -> (default, check, what the check wants)."""
        v = rule.get(field)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise ApiError(400, "fault %s must be an object or null" % field)
        unknown = set(v) - set(spec)
        if unknown:
            raise ApiError(400, "unknown field(s) in fault %s: %s"
                           % (field, ", ".join(sorted(unknown))))
        out = {}
        for key, (default, check, what) in spec.items():
            out[key] = v.get(key, default)
            if not check(out[key]):
                raise ApiError(400, "fault %s.%s must be %s"
                               % (field, key, what))
        return out

    @classmethod
    def _respond(cls, v):
        if v is None:
            return None
        out = cls._sub({"respond": v}, "respond", {
            "status": (200, lambda x: type(x) is int and 200 <= x <= 599,
                       "an integer 200-599"),
            "content_type": ("application/json",
                             lambda x: x is None or (isinstance(x, str)
                                                     and cls._header_ok(x)),
                             "a string (no control characters) or null"),
            "body": ("", lambda x: isinstance(x, str), "a string"),
            "headers": ([], lambda x: isinstance(x, list), "a list")})
        if out["status"] in (204, 304) and out["body"]:
            raise ApiError(400, "fault respond: status %d cannot have a body"
                           % out["status"])
        headers = []
        for h in out["headers"]:
            if (not isinstance(h, list) or len(h) != 2
                    or not all(isinstance(x, str) for x in h)
                    or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", h[0])
                    or not cls._header_ok(h[1])):
                raise ApiError(400, "fault respond.headers must be [[name, "
                               "value], ...] (valid names, values without "
                               "control characters)")
            if h[0].lower() in ("content-length", "transfer-encoding"):
                raise ApiError(400, "fault respond.headers: %s is set by the "
                               "stand-in" % h[0])
            headers.append((h[0], h[1]))
        out["headers"] = headers
        return out

    @staticmethod
    def _header_ok(value):
        return not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value)

    @staticmethod
    def _number(rule, field, default):
        v = rule.get(field, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ApiError(400, "fault %s must be a non-negative number" % field)
        return v

    def retry_after_header(self):
        ra = self.retry_after
        if isinstance(ra, float) and ra.is_integer():
            ra = int(ra)
        return str(ra)

    def extra_headers(self):
        """Headers every answer of this rule carries."""
        if self.retry_after is None:
            return []
        return [("Retry-After", self.retry_after_header())]

    def describe(self):
        respond = None
        if self.respond is not None:
            respond = dict(self.respond,
                           headers=[list(h) for h in self.respond["headers"]])
        return {"endpoint": self.endpoint, "status": self.status,
                "probability": self.probability,
                "retry_after": self.retry_after, "reset": self.reset,
                "delay": self.delay, "count": self.count,
                "match_file": self.match_file, "msg": self.msg,
                "sdk_error_code": self.sdk_error_code,
                "reset_after_body": self.reset_after_body,
                "respond": respond, "html": self.html,
                "trickle": None if self.trickle is None else dict(self.trickle),
                "endless": None if self.endless is None else dict(self.endless)}


# ------------------------------------------------------------- the server

class StandIn:
    """The stand-in: registry, fault rules, and the HTTP server around them."""

    def __init__(self, data_dir, api_key=None, seed=None, verbose=False):
        self.data_dir = os.path.abspath(data_dir)
        self.api_key = api_key
        self.verbose = verbose
        self.lock = threading.RLock()
        self.rng = random.Random(seed if seed is not None else time.time_ns())
        self.experiments = {}
        self.artifacts = {}            # (workspace, name) -> Artifact
        self.artifacts_by_id = {}
        self.versions = {}             # artifactVersionId -> Version
        self.faults = []
        self.down = False
        self.counts = collections.Counter()
        self.down_counts = collections.Counter()
        self.requests = collections.deque(maxlen=LOG_LIMIT)
        self.config = {"version_id_length": None}
        self.connections = set()
        self.stopping = threading.Event()   # tells streaming handlers to end
        self.server = None
        self.thread = None
        self.port = None
        os.makedirs(os.path.join(self.data_dir, "blobs"), exist_ok=True)
        os.makedirs(os.path.join(self.data_dir, "tmp"), exist_ok=True)

    # --- lifecycle

    def start(self, port=0):
        self.stopping.clear()
        self.server = _Server(("127.0.0.1", port), self)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       name="comet-standin", daemon=True)
        self.thread.start()
        return self.port

    def stop(self):
        if self.server is None:
            return
        self.stopping.set()
        self.server.shutdown()
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()
        self.thread.join(5)
        self.server = None

    def __enter__(self):
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "http://127.0.0.1:%d/clientlib/" % self.port

    # --- control

    def set_faults(self, rules):
        if not isinstance(rules, list):
            raise ApiError(400, "rules must be a list")
        faults = [Fault(r) for r in rules]
        with self.lock:
            self.faults = faults

    def set_down(self, down):
        with self.lock:
            self.down = bool(down)

    def set_config(self, config=None, **settings):
        """Change settings (see POST /_standin/config); returns all of them.
        Raises ApiError (400) on unknown keys or bad values, changing
        nothing."""
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ApiError(400, "config must be a JSON object")
        config = dict(config, **settings)
        unknown = set(config) - set(self.config)
        if unknown:
            raise ApiError(400, "unknown config key(s): %s"
                           % ", ".join(sorted(unknown)))
        n = config.get("version_id_length")
        if n is not None and (type(n) is not int
                              or not VERSION_ID_MIN <= n <= VERSION_ID_MAX):
            raise ApiError(400, "version_id_length must be null or an "
                           "integer %d..%d" % (VERSION_ID_MIN, VERSION_ID_MAX))
        with self.lock:
            self.config.update(config)
            return dict(self.config)

    def new_version_id(self):
        """An unused artifactVersionId, as configured (under lock)."""
        while True:
            n = self.config["version_id_length"]
            vid = uuid.uuid4().hex if n is None else random_id(n)
            if vid not in self.versions:
                return vid

    def reset_counts(self):
        with self.lock:
            self.counts.clear()
            self.down_counts.clear()
            self.requests.clear()

    def pick_fault(self, short, file_name):
        with self.lock:
            for f in self.faults:
                if f.endpoint != "*" and f.endpoint != short:
                    continue
                if f.match_file is not None and f.match_file != file_name:
                    continue
                if f.count is not None and f.count <= 0:
                    continue
                if f.probability < 1.0 and not self.rng.random() < f.probability:
                    continue
                if f.count is not None:
                    f.count -= 1
                return f
        return None

    def log_request(self, entry):
        with self.lock:
            self.counts[entry["endpoint"]] += 1
            self.requests.append(entry)

    def update_request(self, entry, **fields):
        with self.lock:
            entry.update(fields)

    def finish_request(self, entry, status):
        """The handler is done with a request: its status, if none was
        logged yet (0: no response), and the time."""
        with self.lock:
            if entry["status"] is None:
                entry["status"] = status or 0
            entry["done"] = time.time()

    def snapshot(self):
        """The registry, counters and requests log, as GET /_standin/state."""
        with self.lock:
            return {
                "experiments": {k: {"workspace": e.workspace,
                                    "project": e.project, "name": e.name,
                                    "runId": e.run_id}
                                for k, e in self.experiments.items()},
                "artifacts": [self._artifact_state(a)
                              for a in self.artifacts.values()],
                "counts": dict(self.counts),
                "down": self.down,
                "down_counts": dict(self.down_counts),
                "faults": [f.describe() for f in self.faults],
                "config": dict(self.config),
                "requests": [dict(r) for r in self.requests],
            }

    @staticmethod
    def _artifact_state(a):
        return {
            "name": a.name, "type": a.type, "workspace": a.workspace,
            "artifactId": a.artifact_id, "tags": list(a.tags),
            "versions": [{
                "version": v.version, "artifactVersionId": v.id,
                "state": v.state, "aliases": v.all_aliases(),
                "tags": list(v.tags), "metadata": v.metadata,
                "experimentKey": v.experiment_key,
                "assets": [{
                    "fileName": s.file_name, "size": s.size,
                    "sha256": s.sha256, "remote": s.remote, "link": s.link,
                    "metadata": s.metadata, "assetId": s.asset_id,
                    "uploads": s.uploads, "type": s.type,
                    "extension": s.extension, "path": s.path,
                } for s in v.assets.values()],
            } for v in a.versions],
        }

    # --- REST logic (called with parsed input; raise ApiError)

    def api_create_experiment(self, body):
        ws = body.get("workspaceName") or "default"
        project = body.get("projectName") or "general"
        if not isinstance(ws, str) or not isinstance(project, str):
            raise ApiError(400, "workspaceName and projectName must be strings")
        key = uuid.uuid4().hex
        with self.lock:
            self.experiments[key] = Experiment(key, ws, project,
                                               body.get("experimentName"))
        return {"experimentKey": key, "workspaceName": ws,
                "projectName": project,
                "link": "http://127.0.0.1:%s/%s/%s/%s" % (self.port, ws,
                                                          project, key)}

    def api_add_run(self, body):
        key = body.get("experimentKey")
        if not isinstance(key, str) or not EXPERIMENT_KEY_RE.match(key):
            raise ApiError(400, "invalid experimentKey: must be alphanumeric, "
                           "32-50 characters")
        ws = body.get("teamName") or body.get("workspaceName") or "default"
        project = body.get("projectName") or "general"
        with self.lock:
            exp = self.experiments.get(key)
            new = exp is None
            if new:
                exp = self.experiments[key] = Experiment(key, str(ws),
                                                         str(project))
            return {"runId": exp.run_id, "experimentKey": key,
                    "projectName": exp.project, "workspaceName": exp.workspace,
                    "isNewExperiment": new}

    def api_upsert(self, body):
        name = body.get("artifactName")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "artifactName is required")
        if len(name) > 100:
            raise ApiError(400, "artifactName is longer than 100 characters")
        type_ = body.get("artifactType")
        if type_ is not None and not isinstance(type_, str):
            raise ApiError(400, "artifactType must be a string")
        version = body.get("version")
        if version is not None:
            if not isinstance(version, str) or not SEMVER_RE.match(version):
                raise ApiError(400, "version %r is not a strict semantic "
                               "version" % (version,))
        aliases = [a for a in str_list(body.get("alias"), "alias")
                   if a.lower() != LATEST.lower()]
        tags = str_list(body.get("versionTags"), "versionTags")
        meta, meta_str = metadata_string(body.get("versionMetadata"),
                                         "versionMetadata")
        exp_key = body.get("experimentKey")
        with self.lock:
            exp = self.experiments.get(exp_key) if isinstance(exp_key, str) else None
            if exp is None:
                raise ApiError(400, "unknown experimentKey %r" % (exp_key,))
            art = self.artifacts.get((exp.workspace, name))
            highest = (max(art.versions, key=lambda v: v.key)
                       if art and art.versions else None)
            if version is None:
                version = ("%d.0.0" % (highest.key[0] + 1)) if highest else "1.0.0"
            elif art and any(v.key == semver_key(version) for v in art.versions):
                same = next(v for v in art.versions if v.key == semver_key(version))
                # An upsert: the same experiment asking again for its own
                # version that is still OPEN gets that version back (a client
                # that crashed before it could note the answer resumes it).
                # Anything else is refused with 90399.
                if same.state == OPEN and same.experiment_key == exp_key:
                    lower = [x for x in art.versions if x.key < same.key]
                    prev = max(lower, key=lambda x: x.key) if lower else None
                    return {"artifactId": art.artifact_id,
                            "artifactVersionId": same.id,
                            "currentVersion": same.version,
                            "previousVersion": prev.version if prev else None}
                raise ApiError(400, "artifact %s version %s already exists"
                               % (name, version), SDK_VERSION_EXISTS)
            if art is None:
                art = Artifact(exp.workspace, name, type_)
                self.artifacts[(exp.workspace, name)] = art
                self.artifacts_by_id[art.artifact_id] = art
            elif art.type is None:
                art.type = type_
            v = Version(art, version, exp_key, self.new_version_id())
            art.versions.append(v)
            self.versions[v.id] = v
            v.tags = tags
            v.metadata, v.metadata_str = meta, meta_str
            self._set_aliases(v, aliases)
            return {"artifactId": art.artifact_id, "artifactVersionId": v.id,
                    "currentVersion": version,
                    "previousVersion": highest.version if highest else None}

    @staticmethod
    def _set_aliases(version, aliases):
        """Give `version` these user aliases, taking them from siblings."""
        uniq = list(dict.fromkeys(a for a in aliases
                                  if a.lower() != LATEST.lower()))
        for other in version.artifact.versions:
            if other is not version:
                other.aliases = [a for a in other.aliases if a not in uniq]
        version.aliases = uniq

    def _version_by_id(self, vid):
        v = self.versions.get(vid) if isinstance(vid, str) else None
        if v is None:
            raise ApiError(400, "artifact version %r not found" % (vid,),
                           SDK_NOT_FOUND)
        return v

    def api_state(self, body):
        state = body.get("state")
        with self.lock:
            v = self._version_by_id(body.get("artifactVersionId"))
            if v.state != OPEN or state not in (CLOSED, ERROR):
                raise ApiError(400, "artifact version state is immutable: "
                               "%s -> %s" % (v.state, state),
                               SDK_STATE_IMMUTABLE)
            v.state = state
        return {}

    def api_labels(self, body):
        aliases = body.get("alias")
        tags = body.get("versionTags")
        aliases = None if aliases is None else str_list(aliases, "alias")
        tags = None if tags is None else str_list(tags, "versionTags")
        meta = None
        if body.get("versionMetadata") is not None:
            meta = metadata_string(body["versionMetadata"], "versionMetadata")
        with self.lock:
            v = self._version_by_id(body.get("artifactVersionId"))
            if aliases is not None:
                self._set_aliases(v, aliases)
            if tags is not None:
                v.tags = tags
            if meta is not None:
                v.metadata, v.metadata_str = meta
        return {}

    def find_version(self, q):
        """Resolve the version selectors of getVersion/getFiles (under lock)."""
        vid = q.get("versionId") or q.get("artifactVersionId")
        aid = q.get("artifactId")
        if vid:
            v = self.versions.get(vid)
            if v is None or (aid and v.artifact.artifact_id != aid):
                raise ApiError(400, "artifact version %r not found" % vid,
                               SDK_NOT_FOUND)
            return v
        if aid:
            art = self.artifacts_by_id.get(aid)
            what = "artifact id %r" % aid
        else:
            name = q.get("artifactName") or q.get("name")
            if not name:
                raise ApiError(400, "artifactName or artifactId is required")
            ws = q.get("workspace") or q.get("workspaceName") or "default"
            art = self.artifacts.get((ws, name))
            what = "artifact %s/%s" % (ws, name)
        if art is None or not art.versions:
            raise ApiError(400, "%s not found" % what, SDK_NOT_FOUND)
        version, alias = q.get("version"), q.get("alias")
        voa = q.get("versionOrAlias")
        v = None
        if version:
            v = next((x for x in art.versions if x.version == version), None)
        elif alias or voa:
            if voa:
                v = next((x for x in art.versions if x.version == voa), None)
            name = alias or voa
            if v is None and name.lower() == LATEST.lower():
                v = art.versions[-1]
            if v is None:
                v = next((x for x in art.versions if name in x.aliases), None)
        else:
            v = art.versions[-1]
        if v is None:
            raise ApiError(400, "%s: version or alias %r not found"
                           % (what, version or alias or voa), SDK_NOT_FOUND)
        if v.state == OPEN:
            raise ApiError(400, "artifact version %s %s is not closed yet"
                           % (art.name, v.version), SDK_VERSION_NOT_CLOSED)
        if v.state == ERROR:
            raise ApiError(400, "artifact version %s %s is in state ERROR"
                           % (art.name, v.version), SDK_VERSION_IN_ERROR)
        return v

    def api_get_version(self, q):
        with self.lock:
            v = self.find_version(q)
            a = v.artifact
            return {
                "artifactVersionId": v.id, "artifactVersion": v.version,
                "sizeInBytes": sum(s.size for s in v.assets.values()
                                   if not s.remote),
                "state": v.state, "alias": v.all_aliases(),
                "tags": list(v.tags), "metadata": v.metadata_str,
                "experimentKey": v.experiment_key,
                "createdAt": int(v.created * 1000),
                "artifact": {"artifactId": a.artifact_id,
                             "artifactName": a.name, "artifactType": a.type,
                             "workspaceName": a.workspace,
                             "tags": list(a.tags)},
            }

    def api_get_files(self, q):
        with self.lock:
            v = self.find_version(q)
            return {"files": [{
                "assetId": s.asset_id, "fileName": s.file_name,
                "fileSize": s.size, "link": s.link, "remote": s.remote,
                "metadata": s.metadata_str, "artifactVersionId": v.id,
            } for s in v.assets.values()]}

    def find_asset(self, q):
        asset_id, vid = q.get("assetId"), q.get("artifactVersionId")
        with self.lock:
            if vid:
                candidates = [self.versions[vid]] if vid in self.versions else []
            else:
                candidates = list(self.versions.values())
            for v in candidates:
                for s in v.assets.values():
                    if s.asset_id == asset_id:
                        if s.remote:
                            raise ApiError(400, "asset %s is remote; it has "
                                           "no stored bytes" % asset_id)
                        return s
        raise ApiError(404, "asset %r not found" % (asset_id,), SDK_NOT_FOUND)

    def upload_check(self, q):
        """Validation of an upload before and after its body is read."""
        exp_key = q.get("experimentKey")
        if not exp_key or exp_key not in self.experiments:
            raise ApiError(400, "unknown experimentKey %r" % (exp_key,))
        vid = q.get("artifactVersionId")
        if not vid:
            raise ApiError(400, "artifactVersionId is required")
        v = self._version_by_id(vid)
        if v.state != OPEN:
            raise ApiError(400, "artifact version %s is %s; it takes no more "
                           "assets" % (v.version, v.state), SDK_STATE_IMMUTABLE)
        name = q.get("fileName")
        if not name:
            raise ApiError(400, "fileName is required")
        if name in v.assets and not query_bool(q.get("overwrite")):
            raise ApiError(400, "asset already exists: %s (use overwrite=true)"
                           % name)
        return v

    def upload_commit(self, q, v, tmp_path, size, sha256, link, meta):
        """Record a received asset (under lock); returns the response."""
        with self.lock:
            self.upload_check(q)
            name = q["fileName"]
            old = v.assets.get(name)
            s = Asset(name, q.get("assetId") or uuid.uuid4().hex)
            s.uploads = (old.uploads if old else 0) + 1
            s.type = q.get("type")
            s.extension = q.get("extension")
            s.metadata, s.metadata_str = meta
            if link is not None:
                s.remote, s.link = True, link
            else:
                d = os.path.join(self.data_dir, "blobs", v.blob_dir)
                os.makedirs(d, exist_ok=True)
                s.path = os.path.join(d, uuid.uuid4().hex)
                os.replace(tmp_path, s.path)
                s.size, s.sha256 = size, sha256
            if old is not None and old.path:
                try:
                    os.unlink(old.path)
                except OSError:
                    pass
            v.assets[name] = s
            return {"assetId": s.asset_id, "fileName": name,
                    "artifactVersionId": v.id}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, standin):
        self.standin = standin
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ClientGone)):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "comet-standin/1.0"
    timeout = 600

    # --- plumbing

    def setup(self):
        super().setup()
        self.standin = self.server.standin
        with self.standin.lock:
            self.standin.connections.add(self.connection)

    def finish(self):
        if self.linger and not self.detached:
            self._lingering_close()
        try:
            super().finish()
        except OSError:
            pass
        finally:
            with self.standin.lock:
                self.standin.connections.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.standin.verbose:
            sys.stderr.write("standin: %s %s\n" % (self.address_string(),
                                                   fmt % args))

    linger = False            # close gracefully, discarding unread input
    detached = False          # socket already closed by _reset()
    entry = None              # the current request's log entry, if logged

    def handle_one_request(self):
        # http.server's own, but with request lines up to REQUEST_LINE_LIMIT
        # instead of 64 KiB (long artifactVersionIds in query strings).
        try:
            self.raw_requestline = self.rfile.readline(REQUEST_LINE_LIMIT + 1)
            if len(self.raw_requestline) > REQUEST_LINE_LIMIT:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.linger = True    # the rest of the line is still coming
                self.send_error(http.HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            mname = "do_" + self.command
            if not hasattr(self, mname):
                self.send_error(http.HTTPStatus.NOT_IMPLEMENTED,
                                "Unsupported method (%r)" % self.command)
                return
            getattr(self, mname)()
            self.wfile.flush()
        except TimeoutError as e:
            self.log_error("Request timed out: %r", e)
            self.close_connection = True

    def parse_request(self):
        self.arrived = time.time()
        self.expect_pending = False
        self.body_broken = False
        self.entry = None
        return super().parse_request()

    def _set_status(self, status):
        """Log the status of the answer; called BEFORE its first byte is
        sent, so that a client that has read it finds it in the log."""
        self.resp_status = status
        if self.entry is not None:
            self.standin.update_request(self.entry, status=status)

    def _lingering_close(self):
        """Half-close, then discard input for a while, so that a body the
        client is still sending cannot turn our close into an RST that
        destroys the response before the client has read it."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                self.connection.settimeout(max(0.01,
                                               deadline - time.monotonic()))
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def handle_expect_100(self):
        # Deferred: "100 Continue" goes out when the body is first read.
        self.expect_pending = True
        return True

    def _send_continue(self):
        if self.expect_pending:
            self.expect_pending = False
            self.send_response_only(100)
            self.end_headers()

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _make_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te:
            if te.strip().lower() != "chunked":
                raise ApiError(501, "unsupported Transfer-Encoding %r" % te)
            return BodyReader(self.rfile, chunked=True,
                              before_read=self._send_continue)
        cl = self.headers.get("Content-Length")
        length = 0
        if cl is not None:
            try:
                length = int(cl)
                if length < 0:
                    raise ValueError
            except ValueError:
                raise ApiError(400, "bad Content-Length") from None
        return BodyReader(self.rfile, length, before_read=self._send_continue)

    def _reset(self):
        """Close the connection with RST and no response."""
        self._set_status(0)
        self.close_connection = True
        self.detached = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        with self.standin.lock:
            self.standin.connections.discard(self.connection)
        try:
            os.close(self.connection.detach())
        except OSError:
            pass

    def _finish_body(self):
        """Make the connection consistent before a response is sent."""
        if self.body.done:
            return
        if self.expect_pending or self.body_broken:
            # Without "100 Continue" the client does not send the body; a
            # broken body cannot be skipped.  Either way: answer and close.
            self.close_connection = True
            self.linger = True
            return
        try:
            self.body.drain()
        except BadBody:
            self.close_connection = True
            self.linger = True
        except ClientGone:
            self.close_connection = True

    def _send_json(self, status, obj, headers=()):
        self._finish_body()
        data = json.dumps(obj).encode()
        self._set_status(status)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _send_error(self, e):
        self._send_json(e.status, {"code": e.status, "msg": e.msg,
                                   "sdk_error_code": e.sdk_error_code},
                        e.headers)

    def _json_body(self):
        data = self.body.read_all(JSON_LIMIT)
        try:
            obj = json.loads(data)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "request body must be a JSON object")
        return obj

    # --- dispatch

    def _dispatch(self):
        si = self.standin
        self.resp_status = None
        self.entry = None
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(
            split.query, keep_blank_values=True).items()}
        try:
            self.body = self._make_body()
        except ApiError as e:
            self.body = BodyReader(self.rfile)
            self.body_broken = True
            self.body.done = False
            self._send_error(e)
            return
        if path.startswith("/_standin/"):
            self._control(path)
            return

        method, short = ROUTES.get(path, (None, "unknown"))
        if si.down:
            with si.lock:
                si.down_counts[short] += 1
            self._reset()
            return
        entry = {"t": self.arrived, "method": self.command, "path": path,
                 "endpoint": short, "status": None, "done": None}
        for qk, ek in (("artifactVersionId", "versionId"),
                       ("versionId", "versionId"), ("fileName", "fileName")):
            if qk in self.query:
                entry[ek] = self.query[qk]
        self.entry = entry
        si.log_request(entry)
        try:
            fault = si.pick_fault(short, self.query.get("fileName"))
            if fault is not None and self._apply_fault(fault, short):
                return
            if method is None:
                raise ApiError(404, "no such endpoint: %s" % path)
            if method != self.command:
                raise ApiError(405, "%s needs %s" % (path, method))
            if si.api_key is not None and short != "isAlive":
                keys = (self.headers.get("Authorization"),
                        self.headers.get("Comet-Sdk-Api"))
                if si.api_key not in keys:
                    raise ApiError(401, "Invalid API key")
            result = getattr(self, "h_" + short)()
            if result is not None:
                self._send_json(200, result)
        except ApiError as e:
            self._send_error(e)
        except BadBody as e:
            self.body_broken = True
            self._send_error(ApiError(400, "malformed request body: %s" % e))
        except ClientGone:
            self.close_connection = True
        except Exception as e:               # a bug in the stand-in
            traceback.print_exc()
            self.body_broken = True
            if self.resp_status is None:
                self._send_error(ApiError(500, "stand-in internal error: %r"
                                          % e))
            else:
                self.close_connection = True
        finally:
            si.finish_request(entry, self.resp_status)

    def _apply_fault(self, fault, short):
        """Apply a fault rule; True if the request was answered by it."""
        si = self.standin
        if fault.delay:
            si.stopping.wait(fault.delay)
        if fault.reset:
            si.update_request(self.entry, fault="reset")
            if short == "uploadAsset":
                try:
                    want = (min(max(self.body.remaining // 2, 1), CHUNK)
                            if not self.body.chunked else 64 << 10)
                    got = 0
                    while got < want:
                        data = self.body.read(want - got)
                        if not data:
                            break
                        got += len(data)
                except (BadBody, ClientGone):
                    pass
            elif short == "getAsset":
                self._get_asset(reset_midway=True)
            self._reset()
            return True
        if fault.reset_after_body:
            si.update_request(self.entry, fault="reset_after_body")
            try:
                self.body.drain()
            except (BadBody, ClientGone):
                pass
            self._reset()
            return True
        if fault.respond is not None or fault.html:
            r = fault.respond or {"status": 200, "body": LOGIN_PAGE,
                                  "content_type": "text/html; charset=utf-8",
                                  "headers": []}
            si.update_request(self.entry,
                              fault="html" if fault.html else "respond")
            self._send_raw(r["status"], r["content_type"],
                           r["body"].encode("utf-8"),
                           fault.extra_headers() + r["headers"])
            return True
        if fault.trickle is not None:
            si.update_request(self.entry, fault="trickle")
            self._trickle(fault)
            return True
        if fault.endless is not None:
            si.update_request(self.entry, fault="endless")
            self._endless(fault)
            return True
        if fault.status is not None:
            si.update_request(self.entry, fault="status")
            self._send_error(ApiError(fault.status, fault.msg,
                                      fault.sdk_error_code,
                                      fault.extra_headers()))
            return True
        return False

    def _send_raw(self, status, content_type, data, headers=()):
        """Answer with exactly this status, Content-Type (None: none) and
        body, plus headers; the request body is dealt with first."""
        self._finish_body()
        self._set_status(status)
        try:
            self.send_response(status)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            if self.close_connection and not any(
                    k.lower() == "connection" for k, _ in headers):
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _start_stream(self, fault, status, length=None):
        """Status line and headers of a trickle/endless answer, which ends
        with the connection.  False if the client is already gone."""
        self._finish_body()
        self.close_connection = True
        self._set_status(status)
        self.standin.update_request(self.entry, sent=0)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if length is not None:
                self.send_header("Content-Length", str(length))
            for k, v in fault.extra_headers():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            return True
        except OSError:
            return False

    def _client_present(self, timeout):
        """Wait up to `timeout` seconds, discarding what the client sends.
        False as soon as the client has closed the connection (or it broke)
        or the stand-in is stopping; True after the wait otherwise."""
        sock = self.connection
        deadline = time.monotonic() + timeout
        while not self.standin.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                readable, _, _ = select.select([sock], [], [], min(left, POLL))
                if readable and not sock.recv(65536):
                    return False
            except (OSError, ValueError):
                return False
        return False

    def _trickle(self, fault):
        t = fault.trickle
        n = t["bytes"]
        sent = 0
        if self._start_stream(fault, t["status"], n):
            body = pad_body(n) if n is not None else PAD_HEAD
            while n is None or sent < n:
                if not self._client_present(t["interval"]):
                    break
                byte = body[sent:sent + 1] if sent < len(body) else b"x"
                try:
                    self.connection.sendall(byte)
                except OSError:
                    break
                sent += 1
            else:
                self.linger = True       # complete: let the client read it
        self.standin.update_request(self.entry, sent=sent)

    def _endless(self, fault):
        e = fault.endless
        sock = self.connection
        sent = 0
        if self._start_stream(fault, e["status"]):
            chunk = b"x" * e["chunk"]
            try:
                sock.sendall(PAD_HEAD)
                sent = len(PAD_HEAD)
                while not self.standin.stopping.is_set():
                    readable, writable, _ = select.select([sock], [sock], [],
                                                          POLL)
                    if readable and not sock.recv(65536):
                        break              # the client closed
                    if writable:
                        sent += sock.send(chunk)
            except (OSError, ValueError):
                pass
        self.standin.update_request(self.entry, sent=sent)

    def _control(self, path):
        si = self.standin
        cmd = self.command
        try:
            if path == "/_standin/state" and cmd == "GET":
                result = si.snapshot()
            elif path == "/_standin/faults" and cmd == "GET":
                result = {"rules": si.snapshot()["faults"]}
            elif path == "/_standin/faults" and cmd == "POST":
                rules = self._json_body().get("rules")
                si.set_faults(rules)
                result = {"rules": len(rules)}
            elif path == "/_standin/down" and cmd == "POST":
                down = self._json_body().get("down")
                if not isinstance(down, bool):
                    raise ApiError(400, "down must be true or false")
                si.set_down(down)
                result = {"down": down}
            elif path == "/_standin/config" and cmd == "GET":
                result = si.snapshot()["config"]
            elif path == "/_standin/config" and cmd == "POST":
                result = si.set_config(self._json_body())
            elif path == "/_standin/reset-counts" and cmd == "POST":
                self.body.drain()
                si.reset_counts()
                result = {}
            else:
                raise ApiError(404, "no such control endpoint: %s %s"
                               % (cmd, path))
            self._send_json(200, result)
        except ApiError as e:
            self._send_error(e)
        except BadBody as e:
            self.body_broken = True
            self._send_error(ApiError(400, "malformed request body: %s" % e))
        except ClientGone:
            self.close_connection = True

    # --- endpoint handlers: return a JSON-able result, or None if answered

    def h_isAlive(self):
        return {"version": "3.0.0-standin"}

    def h_accountDetails(self):
        return {"userName": "standin", "defaultWorkspaceName": "default"}

    def h_createExperiment(self):
        return self.standin.api_create_experiment(self._json_body())

    def h_addRun(self):
        return self.standin.api_add_run(self._json_body())

    def h_upsert(self):
        result = self.standin.api_upsert(self._json_body())
        self.standin.update_request(self.entry,
                                    versionId=result["artifactVersionId"])
        return result

    def _note_version(self, body):
        if isinstance(body.get("artifactVersionId"), str):
            self.standin.update_request(self.entry,
                                        versionId=body["artifactVersionId"])
        return body

    def h_state(self):
        return self.standin.api_state(self._note_version(self._json_body()))

    def h_labels(self):
        return self.standin.api_labels(self._note_version(self._json_body()))

    def h_getVersion(self):
        return self.standin.api_get_version(self.query)

    def h_getFiles(self):
        return self.standin.api_get_files(self.query)

    def h_getAsset(self):
        self._get_asset()

    def _get_asset(self, reset_midway=False):
        try:
            asset = self.standin.find_asset(self.query)
            f = open(asset.path, "rb")
        except (ApiError, OSError):
            if reset_midway:
                return
            raise
        with f:
            size = os.fstat(f.fileno()).st_size
            self._finish_body()
            # A reset mid-download ends as "no response": 0, logged now.
            self._set_status(0 if reset_midway else 200)
            count = size // 2 if reset_midway else size
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if count:
                    self.connection.sendfile(f, 0, count)
            except OSError:
                self.close_connection = True

    def h_uploadAsset(self):
        si = self.standin
        q = self.query
        with si.lock:
            version = si.upload_check(q)
        remote = query_bool(q.get("isRemote"))
        ctype, params = header_params(self.headers.get("Content-Type", ""))
        if ctype != "multipart/form-data" or not params.get("boundary"):
            raise ApiError(400, "upload-asset needs a multipart/form-data body")
        boundary = params["boundary"].encode("latin-1", "replace")
        tmp_path = os.path.join(si.data_dir, "tmp", uuid.uuid4().hex)
        size, digest, have_file, fields = 0, None, False, {}
        try:
            for part in MultipartParser(self.body, boundary).parts():
                if part.name == "file" and remote:
                    continue                  # skipped by the parser
                if part.name == "file":
                    if have_file:
                        raise ApiError(400, "more than one file part")
                    have_file = True
                    h = hashlib.sha256()
                    with open(tmp_path, "wb") as out:
                        for chunk in part.data:
                            out.write(chunk)
                            h.update(chunk)
                            size += len(chunk)
                    digest = h.hexdigest()
                else:
                    data = bytearray()
                    for chunk in part.data:
                        data += chunk
                        if len(data) > FIELD_LIMIT:
                            raise ApiError(413, "form field %r too large"
                                           % part.name)
                    if part.name is not None:
                        fields[part.name] = bytes(data)
            link = None
            if remote:
                link = fields.get("link", b"").decode("utf-8", "replace").strip()
                if not link:
                    raise ApiError(400, "isRemote=true needs a non-empty "
                                   "'link' part")
            elif not have_file:
                raise ApiError(400, "no 'file' part in the upload")
            meta = (None, None)
            if "metadata" in fields:
                meta = metadata_string(fields["metadata"].decode("utf-8",
                                                                 "replace"),
                                       "metadata part")
            return si.upload_commit(q, version, tmp_path, size, digest,
                                    link, meta)
        finally:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass


# -------------------------------------------------------------- the client

class StandInClient:
    """Calls the control API of a stand-in at 127.0.0.1:port."""

    def __init__(self, port, host="127.0.0.1", timeout=30):
        self.host, self.port, self.timeout = host, port, timeout

    def _call(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            out = json.loads(resp.read() or b"null")
            if resp.status != 200:
                raise RuntimeError("stand-in %s %s -> %d %s"
                                   % (method, path, resp.status, out))
            return out
        finally:
            conn.close()

    def state(self):
        return self._call("GET", "/_standin/state")

    def set_faults(self, rules):
        return self._call("POST", "/_standin/faults", {"rules": rules})

    def clear_faults(self):
        return self.set_faults([])

    def set_down(self, down):
        return self._call("POST", "/_standin/down", {"down": bool(down)})

    def config(self):
        return self._call("GET", "/_standin/config")

    def set_config(self, config=None, **settings):
        """set_config(version_id_length=500); None restores the default."""
        return self._call("POST", "/_standin/config",
                          dict(config or {}, **settings))

    def reset_counts(self):
        return self._call("POST", "/_standin/reset-counts", {})


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description="Stand-in for Comet's REST API "
                                 "(ferry tests).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--api-key")
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-stdin", action="store_true",
                    help="do not stop when stdin reaches EOF")
    ap.add_argument("--verbose", action="store_true",
                    help="log every request to stderr")
    args = ap.parse_args(argv)

    stop = threading.Event()
    standin = StandIn(args.data_dir, api_key=args.api_key, seed=args.seed,
                      verbose=args.verbose)

    def on_signal(signum, frame):
        stop.set()

    # Handlers first: whoever reads PORT may signal us at once.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = standin.start(args.port)
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()

    if not args.no_stdin:
        def watch_stdin():
            # os.read on the raw fd: a thread blocked inside sys.stdin's
            # BufferedReader would abort the interpreter at exit.
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    deadline = time.monotonic() + args.max_seconds
    while not stop.wait(0.2):
        if time.monotonic() >= deadline:
            break
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
