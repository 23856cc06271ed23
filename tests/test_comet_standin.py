"""Tests of the Comet stand-in (tests/comet_standin.py) itself.

Run from tests/:  python3 -m unittest -v test_comet_standin
"""

import hashlib
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comet_standin  # noqa: E402
from comet_standin import StandIn, StandInClient  # noqa: E402

UPLOAD = "/api/rest/v2/write/experiment/upload-asset"
UPSERT = "/api/rest/v2/write/artifacts/upsert"
STATE = "/api/rest/v2/write/artifacts/state"
LABELS = "/api/rest/v2/write/artifacts/version/labels"
VERSION = "/api/rest/v2/artifacts/version"
FILES = "/api/rest/v2/artifacts/version/files"
GET_ASSET = "/api/rest/v2/experiment/asset/get-asset"
ADD_RUN = "/clientlib/logger/add/run"
IS_ALIVE = "/clientlib/isAlive/ver"
ACCOUNT = "/api/rest/v2/account-details"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "comet_standin.py")


def multipart(parts, boundary=None):
    """parts: [(name, filename or None, bytes)] -> (body, content type)."""
    boundary = boundary or "----standin" + uuid.uuid4().hex
    out = bytearray()
    for name, filename, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += ("Content-Disposition: %s\r\n" % disp).encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return bytes(out), "multipart/form-data; boundary=" + boundary


def qs(**params):
    return "?" + urllib.parse.urlencode(
        {k: v for k, v in params.items() if v is not None})


def read_head(f):
    """Status line and headers from a socket file -> (status, headers)."""
    status_line = f.readline()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), headers


def read_to_eof(sock, limit=None):
    """What the peer sends until it closes (or resets) the connection."""
    out = bytearray()
    while limit is None or len(out) < limit:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def wait_for(func, timeout=10.0):
    """Poll func() until it returns something true; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = func()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class StandInTestCase(unittest.TestCase):
    api_key = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="standin-test-")
        cls.si = StandIn(cls.tmp.name, api_key=cls.api_key, seed=1234)
        cls.port = cls.si.start()
        cls.client = StandInClient(cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.si.stop()
        cls.tmp.cleanup()

    def tearDown(self):
        self.client.clear_faults()
        self.client.set_down(False)
        self.client.set_config(version_id_length=None)

    # --- helpers

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def call(self, method, path, body=None, headers=None, conn=None):
        """-> (status, headers, parsed JSON or raw bytes)."""
        own = conn is None
        conn = conn or self.conn()
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            if resp.getheader("Content-Type") == "application/json" and data:
                data = json.loads(data)
            return resp.status, resp, data
        finally:
            if own:
                conn.close()

    def ok(self, method, path, body=None, headers=None, conn=None):
        status, _, data = self.call(method, path, body, headers, conn)
        self.assertEqual(status, 200, data)
        return data

    def new_experiment(self):
        key = uuid.uuid4().hex
        self.ok("POST", ADD_RUN, {"experimentKey": key, "projectName": "p",
                                  "teamName": "ws", "apiKey": self.api_key})
        return key

    def upsert(self, exp, name, **fields):
        body = {"artifactName": name, "artifactType": "model",
                "experimentKey": exp}
        body.update(fields)
        return self.call("POST", UPSERT, body)

    def upload(self, exp, vid, file_name, data=None, link=None, metadata=None,
               overwrite=None, conn=None, asset_id=None):
        parts = []
        if data is not None:
            parts.append(("file", os.path.basename(file_name), data))
        if link is not None:
            parts.append(("link", None, link.encode()))
        if metadata is not None:
            parts.append(("metadata", None, json.dumps(metadata).encode()))
        body, ctype = multipart(parts)
        path = UPLOAD + qs(experimentKey=exp, artifactVersionId=vid,
                           fileName=file_name, type="asset",
                           overwrite=overwrite, assetId=asset_id,
                           isRemote="true" if link is not None else None)
        return self.call("POST", path, body, {"Content-Type": ctype}, conn)

    def version_state(self, vid):
        for art in self.client.state()["artifacts"]:
            for v in art["versions"]:
                if v["artifactVersionId"] == vid:
                    return v
        return None

    def fresh_version(self):
        exp = self.new_experiment()
        name = "a-" + uuid.uuid4().hex[:8]
        status, _, r = self.upsert(exp, name)
        self.assertEqual(status, 200, r)
        return exp, name, r["artifactVersionId"]

    def raw_request(self, head):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(head)
        f = s.makefile("rb")
        return s, f

    def read_response(self, f):
        status, headers = read_head(f)
        body = f.read(int(headers.get("content-length", 0)))
        return status, headers, body

    def entry(self, endpoint, **match):
        """The last requests-log entry of endpoint (matching fields)."""
        for r in reversed(self.si.snapshot()["requests"]):
            if r["endpoint"] == endpoint and all(r.get(k) == v
                                                 for k, v in match.items()):
                return r
        self.fail("no %s request logged with %r" % (endpoint, match))

    def assertConnectionBroken(self, func):
        with self.assertRaises((ConnectionError, http.client.HTTPException,
                                OSError)):
            func()


class TestFlow(StandInTestCase):

    def test_full_flow(self):
        self.assertEqual(self.ok("GET", IS_ALIVE)["version"], "3.0.0-standin")
        self.assertEqual(self.ok("GET", "/api/rest/v2/account-details"),
                         {"userName": "standin",
                          "defaultWorkspaceName": "default"})
        exp = self.new_experiment()
        # add/run is idempotent
        again = self.ok("POST", ADD_RUN, {"experimentKey": exp,
                                          "teamName": "ws"})
        self.assertFalse(again["isNewExperiment"])
        self.assertEqual(again["workspaceName"], "ws")

        status, _, v1 = self.upsert(exp, "model", alias=["best"],
                                    versionTags=["t1"],
                                    versionMetadata=json.dumps({"lr": 0.1}))
        self.assertEqual(status, 200, v1)
        self.assertEqual(v1["currentVersion"], "1.0.0")
        self.assertIsNone(v1["previousVersion"])
        status, _, v2 = self.upsert(exp, "model")
        self.assertEqual((v2["currentVersion"], v2["previousVersion"]),
                         ("2.0.0", "1.0.0"))
        self.assertEqual(v2["artifactId"], v1["artifactId"])
        status, _, v3 = self.upsert(exp, "model", version="2.5.14")
        self.assertEqual((status, v3["currentVersion"]), (200, "2.5.14"))
        # The same experiment resending an upsert for its OPEN version gets it back ...
        status, _, again = self.upsert(exp, "model", version="2.0.0")
        self.assertEqual((status, again["artifactVersionId"]), (200, v2["artifactVersionId"]))
        # ... anyone else is refused.
        other = self.new_experiment()
        status, _, dup = self.upsert(other, "model", version="2.0.0")
        self.assertEqual((status, dup["sdk_error_code"]), (400, 90399))
        self.assertEqual(dup["code"], 400)
        self.assertTrue(dup["msg"])
        status, _, v4 = self.upsert(exp, "model")
        self.assertEqual((v4["currentVersion"], v4["previousVersion"]),
                         ("3.0.0", "2.5.14"))

        vid = v1["artifactVersionId"]
        data = os.urandom(300_000) + b"\r\n--" + os.urandom(1000)
        status, _, r = self.upload(exp, vid, "dir/weights.bin", data,
                                   metadata={"k": "v"})
        self.assertEqual(status, 200, r)
        self.assertEqual(r["fileName"], "dir/weights.bin")
        self.assertEqual(r["artifactVersionId"], vid)
        asset_id = r["assetId"]
        status, _, r = self.upload(exp, vid, "dir/weights.bin", b"other")
        self.assertEqual(status, 400, r)
        self.assertIn("already exists", r["msg"])
        status, _, r = self.upload(exp, vid, "remote", link="s3://b/k",
                                   metadata={"synced": False})
        self.assertEqual(status, 200, r)
        status, _, r = self.upload(exp, vid, "empty.txt", b"",
                                   asset_id="c" * 32)
        self.assertEqual((status, r["assetId"]), (200, "c" * 32))

        st = self.version_state(vid)
        self.assertEqual(st["state"], "OPEN")
        self.assertEqual(st["aliases"], ["best"])
        self.assertEqual(st["tags"], ["t1"])
        self.assertEqual(st["metadata"], {"lr": 0.1})
        self.assertEqual(st["experimentKey"], exp)
        assets = {a["fileName"]: a for a in st["assets"]}
        self.assertEqual(assets["dir/weights.bin"]["sha256"],
                         hashlib.sha256(data).hexdigest())
        self.assertEqual(assets["dir/weights.bin"]["size"], len(data))
        self.assertEqual(assets["dir/weights.bin"]["uploads"], 1)
        self.assertEqual(assets["dir/weights.bin"]["metadata"], {"k": "v"})
        self.assertTrue(assets["remote"]["remote"])
        self.assertEqual(assets["remote"]["link"], "s3://b/k")
        self.assertEqual(assets["empty.txt"]["size"], 0)

        # an OPEN version is not served by name
        status, _, r = self.call("GET", VERSION + qs(
            workspace="ws", artifactName="model", version="1.0.0"))
        self.assertEqual((status, r["sdk_error_code"]), (400, 90402))
        # close; then the state is immutable
        self.ok("POST", STATE, {"artifactVersionId": vid,
                                "experimentKey": exp, "state": "CLOSED"})
        for state in ("CLOSED", "OPEN", "ERROR"):
            status, _, r = self.call("POST", STATE, {
                "artifactVersionId": vid, "experimentKey": exp,
                "state": state})
            self.assertEqual((status, r["sdk_error_code"]), (400, 90401))
        status, _, r = self.upload(exp, vid, "late", b"x")
        self.assertEqual((status, r["sdk_error_code"]), (400, 90401))

        for sel in ({"version": "1.0.0"}, {"alias": "best"},
                    {"versionOrAlias": "best"}, {"versionOrAlias": "1.0.0"},
                    {"versionId": vid},
                    {"artifactId": v1["artifactId"], "versionId": vid}):
            got = self.ok("GET", VERSION + qs(workspace="ws",
                                               artifactName="model", **sel))
            self.assertEqual(got["artifactVersionId"], vid, sel)
            self.assertEqual(got["artifactVersion"], "1.0.0")
            self.assertEqual(got["state"], "CLOSED")
            self.assertEqual(got["alias"], ["best"])
            self.assertEqual(got["tags"], ["t1"])
            self.assertEqual(json.loads(got["metadata"]), {"lr": 0.1})
            self.assertEqual(got["experimentKey"], exp)
            self.assertEqual(got["sizeInBytes"], len(data))
            self.assertEqual(got["artifact"]["artifactName"], "model")
            self.assertEqual(got["artifact"]["artifactType"], "model")
            self.assertEqual(got["artifact"]["workspaceName"], "ws")
            self.assertEqual(got["artifact"]["artifactId"], v1["artifactId"])

        # latest (3.0.0) is still OPEN; close it and ask again
        status, _, r = self.call("GET", VERSION + qs(workspace="ws",
                                                      artifactName="model"))
        self.assertEqual((status, r["sdk_error_code"]), (400, 90402))
        self.ok("POST", STATE, {"artifactVersionId": v4["artifactVersionId"],
                                "experimentKey": exp, "state": "ERROR"})
        status, _, r = self.call("GET", VERSION + qs(
            workspace="ws", artifactName="model", alias="Latest"))
        self.assertEqual((status, r["sdk_error_code"]), (400, 90403))
        got = self.ok("GET", VERSION + qs(
            versionId=v4["artifactVersionId"]))      # by id: any state
        self.assertEqual(got["alias"], ["Latest"])
        for sel in ({"version": "9.9.9"}, {"alias": "nope"},
                    {"artifactName": "no-such-artifact"}):
            q = {"workspace": "ws", "artifactName": "model"}
            q.update(sel)
            status, _, r = self.call("GET", VERSION + qs(**q))
            self.assertEqual((status, r["sdk_error_code"]), (400, 624523))
        status, _, r = self.call("GET", VERSION + qs(versionId="f" * 32))
        self.assertEqual((status, r["sdk_error_code"]), (400, 624523))

        files = self.ok("GET", FILES + qs(workspace="ws",
                                           artifactName="model",
                                           alias="best"))["files"]
        self.assertEqual([f["fileName"] for f in files],
                         ["dir/weights.bin", "remote", "empty.txt"])
        f0, f1 = files[0], files[1]
        self.assertEqual((f0["assetId"], f0["fileSize"], f0["remote"],
                          f0["artifactVersionId"]),
                         (asset_id, len(data), False, vid))
        self.assertEqual(json.loads(f0["metadata"]), {"k": "v"})
        self.assertEqual((f1["remote"], f1["link"]), (True, "s3://b/k"))
        self.assertEqual(json.loads(f1["metadata"]), {"synced": False})
        self.assertIsNone(files[2]["metadata"])

        status, resp, body = self.call("GET", GET_ASSET + qs(
            assetId=asset_id, artifactVersionId=vid))
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Content-Type"),
                         "application/octet-stream")
        self.assertEqual(body, data)
        status, _, r = self.call("GET", GET_ASSET + qs(
            assetId=files[1]["assetId"], artifactVersionId=vid))
        self.assertEqual(status, 400)          # remote: no bytes

        counts = self.client.state()["counts"]
        for name in ("isAlive", "accountDetails", "addRun", "upsert",
                     "uploadAsset", "state", "getVersion", "getFiles",
                     "getAsset"):
            self.assertGreater(counts.get(name, 0), 0, name)

    def test_create_experiment(self):
        r = self.ok("POST", "/api/rest/v2/write/experiment/create",
                    {"workspaceName": "w2", "projectName": "p2",
                     "experimentName": "e"})
        self.assertRegex(r["experimentKey"], "^[0-9a-f]{32}$")
        self.assertEqual((r["workspaceName"], r["projectName"]), ("w2", "p2"))
        self.assertIn(r["experimentKey"], r["link"])
        exps = self.client.state()["experiments"]
        self.assertEqual(exps[r["experimentKey"]]["workspace"], "w2")
        status, _, r2 = self.upsert(r["experimentKey"], "x")
        self.assertEqual(status, 200, r2)

    def test_validation(self):
        exp = self.new_experiment()
        for key in ("short", "x" * 51, "g" * 31 + "-", 5):
            status, _, r = self.call("POST", ADD_RUN, {"experimentKey": key})
            self.assertEqual(status, 400, key)
        self.assertEqual(self.upsert(exp, "n" * 100)[0], 200)
        cases = [
            dict(artifactName="n" * 101),
            dict(artifactName=""),
            dict(experimentKey="0" * 32),
            dict(version="1.0"),
            dict(version="01.0.0"),
            dict(version="v1.0.0"),
            dict(versionMetadata={"a": 1}),
            dict(versionMetadata="[1, 2]"),
            dict(versionMetadata="{not json"),
            dict(alias="best"),
            dict(versionTags=[1]),
        ]
        for fields in cases:
            body = {"artifactName": "v", "artifactType": "t",
                    "experimentKey": exp}
            body.update(fields)
            status, _, r = self.call("POST", UPSERT, body)
            self.assertEqual(status, 400, (fields, r))
            self.assertEqual(r["code"], 400)
            self.assertIn("sdk_error_code", r)
            self.assertTrue(r["msg"])
        status, _, r = self.call("POST", UPSERT, b"not json")
        self.assertEqual(status, 400)
        status, _, r = self.call("GET", "/api/rest/v2/nope")
        self.assertEqual((status, r["code"]), (404, 404))
        status, _, r = self.call("GET", UPSERT)
        self.assertEqual(status, 405)
        # versionMetadata "null" is fine, as is prerelease/build semver
        for v in ("1.0.0-rc.1", "1.0.0-alpha", "1.0.0+build.5"):
            status, _, r = self.upsert(exp, "semver", version=v,
                                       versionMetadata="null")
            self.assertEqual(status, 200, (v, r))
        # 1.0.0+other has the precedence of 1.0.0+build.5: it exists
        status, _, r = self.upsert(self.new_experiment(), "semver", version="1.0.0+other")
        self.assertEqual((status, r["sdk_error_code"]), (400, 90399))
        status, _, r = self.upsert(exp, "semver")
        self.assertEqual((r["currentVersion"], r["previousVersion"]),
                         ("2.0.0", "1.0.0+build.5"))
        # upload validation
        _, _, v = self.upsert(exp, "up")
        vid = v["artifactVersionId"]
        status, _, r = self.upload(exp, "f" * 32, "x", b"1")
        self.assertEqual((status, r["sdk_error_code"]), (400, 624523))
        status, _, r = self.upload("0" * 32, vid, "x", b"1")
        self.assertEqual(status, 400)
        status, _, r = self.upload(exp, vid, "x")           # no file part
        self.assertEqual(status, 400)
        status, _, r = self.call("POST", UPLOAD + qs(
            experimentKey=exp, artifactVersionId=vid, fileName="x"),
            b"raw", {"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 400)
        body, ctype = multipart([("file", "x", b"1"),
                                 ("metadata", None, b"[1]")])
        status, _, r = self.call("POST", UPLOAD + qs(
            experimentKey=exp, artifactVersionId=vid, fileName="x"),
            body, {"Content-Type": ctype})
        self.assertEqual(status, 400)
        self.assertEqual(self.version_state(vid)["assets"], [])

    def test_aliases_move_and_labels(self):
        exp = self.new_experiment()
        _, _, v1 = self.upsert(exp, "al", alias=["best", "prod"])
        _, _, v2 = self.upsert(exp, "al", alias=["best", "Latest"])
        a1 = self.version_state(v1["artifactVersionId"])["aliases"]
        a2 = self.version_state(v2["artifactVersionId"])["aliases"]
        self.assertEqual(a1, ["prod"])
        self.assertEqual(a2, ["best", "Latest"])
        self.ok("POST", LABELS, {"artifactVersionId": v1["artifactVersionId"],
                                 "alias": ["best"], "versionTags": ["x"],
                                 "versionMetadata": '{"m": 1}'})
        s1 = self.version_state(v1["artifactVersionId"])
        s2 = self.version_state(v2["artifactVersionId"])
        self.assertEqual(s1["aliases"], ["best"])
        self.assertEqual(s1["tags"], ["x"])
        self.assertEqual(s1["metadata"], {"m": 1})
        self.assertEqual(s2["aliases"], ["Latest"])
        status, _, r = self.call("POST", LABELS, {
            "artifactVersionId": v1["artifactVersionId"],
            "versionMetadata": "[]"})
        self.assertEqual(status, 400)
        status, _, r = self.call("POST", LABELS, {
            "artifactVersionId": "nope", "alias": []})
        self.assertEqual((status, r["sdk_error_code"]), (400, 624523))

    def test_overwrite_counts_uploads(self):
        exp, _, vid = self.fresh_version()
        self.assertEqual(self.upload(exp, vid, "f", b"one")[0], 200)
        status, _, r = self.upload(exp, vid, "f", b"two!", overwrite="true")
        self.assertEqual(status, 200, r)
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual((asset["uploads"], asset["size"]), (2, 4))
        self.assertEqual(asset["sha256"], hashlib.sha256(b"two!").hexdigest())
        with open(asset["path"], "rb") as f:
            self.assertEqual(f.read(), b"two!")


class TestHttp(StandInTestCase):

    def test_chunked_upload(self):
        exp, _, vid = self.fresh_version()
        data = os.urandom(3 * 1024 * 1024 + 17)
        body, ctype = multipart([("file", "c.bin", data),
                                 ("metadata", None, b'{"c": true}')])
        rnd = random.Random(5)

        def pieces():
            i = 0
            while i < len(body):
                n = rnd.choice((1, 7, 100, 65536, 1 << 20))
                yield body[i:i + n]
                i += n

        conn = self.conn()
        conn.request("POST", UPLOAD + qs(experimentKey=exp,
                                          artifactVersionId=vid,
                                          fileName="c.bin", type="asset"),
                     body=pieces(), encode_chunked=True,
                     headers={"Content-Type": ctype,
                              "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200, resp.read())
        resp.read()
        # the same connection is still usable
        self.assertEqual(self.ok("GET", IS_ALIVE, conn=conn)["version"],
                         "3.0.0-standin")
        conn.close()
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual(asset["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(asset["metadata"], {"c": True})

    def test_multipart_tricky_boundaries(self):
        exp, _, vid = self.fresh_version()
        boundary = "xyzBOUNDARY"
        # data full of near-misses of the delimiter
        data = (b"\r\n--xyzBOUNDAR" + b"\r\n--xyz" + b"--xyzBOUNDARY" * 3
                + b"\r\n-" + b"\r") * 50
        body, ctype = multipart([("other", None, b"ignored"),
                                 ("file", "t.bin", data)], boundary=boundary)
        body = b"preamble text\r\n" + body + b"epilogue"
        ctype = 'multipart/form-data; boundary="%s"' % boundary
        for i, size in enumerate((1, 2, 3, 13)):
            conn = self.conn()
            conn.request("POST", UPLOAD + qs(
                experimentKey=exp, artifactVersionId=vid,
                fileName="t%d" % i),
                body=(body[j:j + size] for j in range(0, len(body), size)),
                encode_chunked=True,
                headers={"Content-Type": ctype,
                         "Transfer-Encoding": "chunked"})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200, resp.read())
            conn.close()
        for asset in self.version_state(vid)["assets"]:
            self.assertEqual(asset["sha256"], hashlib.sha256(data).hexdigest())
        # a truncated multipart body is a 400
        status, _, r = self.call("POST", UPLOAD + qs(
            experimentKey=exp, artifactVersionId=vid, fileName="trunc"),
            body[:len(body) // 2], {"Content-Type": ctype})
        self.assertEqual(status, 400, r)

    def test_expect_100_continue(self):
        exp, _, vid = self.fresh_version()
        data = os.urandom(100_000)
        body, ctype = multipart([("file", "e.bin", data)])
        path = UPLOAD + qs(experimentKey=exp, artifactVersionId=vid,
                           fileName="e.bin")
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                % (path, ctype, len(body))).encode()
        s, f = self.raw_request(head)
        status, _, _ = self.read_response(f)
        self.assertEqual(status, 100)
        s.sendall(body)
        status, headers, r = self.read_response(f)
        self.assertEqual(status, 200, r)
        self.assertNotEqual(headers.get("connection"), "close")
        # keep-alive: a second request on the same socket
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % IS_ALIVE.encode())
        status, _, r = self.read_response(f)
        self.assertEqual(status, 200)
        # refused before the body: no 100, a final answer, connection closed
        head2 = head.replace(vid.encode(), b"f" * 32)
        s.sendall(head2)
        status, headers, r = self.read_response(f)
        self.assertEqual(status, 400)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(r)["sdk_error_code"], 624523)
        self.assertEqual(f.read(), b"")       # closed by the server
        s.close()
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual(asset["sha256"], hashlib.sha256(data).hexdigest())

    def test_keep_alive_across_errors(self):
        exp, _, vid = self.fresh_version()
        conn = self.conn()
        self.ok("GET", IS_ALIVE, conn=conn)
        sock = conn.sock
        # errors after the body, and before it (body drained)
        self.assertEqual(self.upload(exp, vid, "k", b"x" * 500_000,
                                     conn=conn)[0], 200)
        self.assertEqual(self.upload(exp, vid, "k", b"y" * 500_000,
                                     conn=conn)[0], 400)
        self.assertEqual(self.upload(exp, "e" * 32, "k", b"y" * 500_000,
                                     conn=conn)[0], 400)
        self.assertEqual(self.call("POST", UPSERT, b"{", conn=conn)[0], 400)
        self.assertEqual(self.call("GET", "/nope", conn=conn)[0], 404)
        self.client.set_faults([{"endpoint": "upsert", "status": 500,
                                 "count": 1}])
        self.assertEqual(self.call("POST", UPSERT, {"x": 1}, conn=conn)[0],
                         500)
        self.ok("GET", IS_ALIVE, conn=conn)
        self.assertIs(conn.sock, sock)
        conn.close()


class TestFaults(StandInTestCase):

    def test_status_with_count(self):
        self.client.set_faults([{"endpoint": "isAlive", "status": 503,
                                 "count": 2}])
        self.client.reset_counts()
        statuses = [self.call("GET", IS_ALIVE)[0] for _ in range(4)]
        self.assertEqual(statuses, [503, 503, 200, 200])
        self.client.set_faults([{"endpoint": "isAlive", "status": 502,
                                 "msg": "bad gateway", "sdk_error_code": 7}])
        status, _, r = self.call("GET", IS_ALIVE)
        self.assertEqual(r, {"code": 502, "msg": "bad gateway",
                             "sdk_error_code": 7})
        state = self.client.state()
        self.assertEqual(state["counts"]["isAlive"], 5)
        self.assertEqual([q["status"] for q in state["requests"]],
                         [503, 503, 200, 200, 502])
        self.assertEqual(state["requests"][0]["fault"], "status")
        self.assertEqual(state["faults"][0]["status"], 502)

    def test_429_retry_after_and_arrival_times(self):
        exp, name, vid = self.fresh_version()
        self.client.set_faults([{"endpoint": "uploadAsset", "status": 429,
                                 "retry_after": 1, "count": 1,
                                 "match_file": "slow"}])
        self.client.reset_counts()
        self.assertEqual(self.upload(exp, vid, "other", b"o")[0], 200)
        status, resp, r = self.upload(exp, vid, "slow", b"s" * 1000)
        self.assertEqual((status, r["code"]), (429, 429))
        self.assertEqual(resp.getheader("Retry-After"), "1")
        self.assertEqual(self.version_state(vid)["assets"][0]["fileName"],
                         "other")           # faulted: no state change
        time.sleep(1.0)
        self.assertEqual(self.upload(exp, vid, "slow", b"s" * 1000)[0], 200)
        # The log entry's status is final before the response is sent.
        reqs = [q for q in self.client.state()["requests"]
                if q.get("fileName") == "slow"]
        self.assertEqual([q["status"] for q in reqs], [429, 200])
        self.assertEqual(reqs[0]["versionId"], vid)
        self.assertGreaterEqual(reqs[1]["t"] - reqs[0]["t"], 1.0)
        self.assertLess(abs(reqs[0]["t"] - time.time()), 30)
        assets = self.version_state(vid)["assets"]
        self.assertEqual([a["uploads"] for a in assets], [1, 1])

    def test_reset(self):
        self.client.set_faults([{"endpoint": "*", "reset": True, "count": 1}])
        self.assertConnectionBroken(lambda: self.call("GET", IS_ALIVE))
        self.ok("GET", IS_ALIVE)
        st = self.client.state()
        self.assertEqual(st["requests"][-2]["status"], 0)
        self.assertEqual(st["requests"][-2]["fault"], "reset")

    def test_reset_mid_upload(self):
        exp, _, vid = self.fresh_version()
        self.client.set_faults([{"endpoint": "uploadAsset", "reset": True,
                                 "count": 1}])
        data = os.urandom(8 << 20)
        self.assertConnectionBroken(lambda: self.upload(exp, vid, "big", data))
        self.assertEqual(self.version_state(vid)["assets"], [])
        self.assertEqual(os.listdir(os.path.join(self.tmp.name, "tmp")), [])
        status, _, r = self.upload(exp, vid, "big", data)
        self.assertEqual(status, 200, r)
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual((asset["uploads"], asset["sha256"]),
                         (1, hashlib.sha256(data).hexdigest()))

    def test_reset_mid_download(self):
        exp, _, vid = self.fresh_version()
        data = os.urandom(4 << 20)
        _, _, r = self.upload(exp, vid, "d", data)
        self.client.set_faults([{"endpoint": "getAsset", "reset": True,
                                 "count": 1}])
        path = GET_ASSET + qs(assetId=r["assetId"], artifactVersionId=vid)
        self.assertConnectionBroken(lambda: self.call("GET", path))
        self.assertEqual(self.call("GET", path)[2], data)

    def test_probability_and_delay(self):
        self.client.set_faults([
            {"endpoint": "isAlive", "status": 500, "probability": 0.0},
            {"endpoint": "isAlive", "delay": 0.3, "count": 1},
            {"endpoint": "isAlive", "status": 418},
        ])
        t0 = time.monotonic()
        self.assertEqual(self.call("GET", IS_ALIVE)[0], 200)   # delay only
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(self.call("GET", IS_ALIVE)[0], 418)
        self.client.set_faults([{"endpoint": "isAlive", "status": 503,
                                 "probability": 0.5}])
        statuses = {self.call("GET", IS_ALIVE)[0] for _ in range(40)}
        self.assertEqual(statuses, {200, 503})

    def test_status_logged_before_response(self):
        """A client that has read an answer finds its status in the log,
        even when the server thread pauses right after writing it."""

        class SlowWriter:
            def __init__(self, w):
                self.w = w

            def write(self, data):
                n = self.w.write(data)
                time.sleep(0.15)     # the server is slow to get on after it
                return n

            def __getattr__(self, name):
                return getattr(self.w, name)

        class SlowHandler(comet_standin._Handler):
            def setup(self):
                super().setup()
                self.wfile = SlowWriter(self.wfile)

        exp, _, vid = self.fresh_version()
        _, _, r = self.upload(exp, vid, "g", b"bytes")
        get_asset = GET_ASSET + qs(assetId=r["assetId"], artifactVersionId=vid)
        cases = [  # (rules, method, path, body, status, fault)
            ([], "GET", IS_ALIVE, None, 200, None),
            ([], "GET", "/nope", None, 404, None),
            ([], "POST", UPSERT, b"{", 400, None),
            ([], "GET", get_asset, None, 200, None),
            ([{"status": 503}], "GET", IS_ALIVE, None, 503, "status"),
            ([{"respond": {"body": "{}"}}], "GET", IS_ALIVE, None, 200,
             "respond"),
            ([{"html": True}], "POST", UPSERT, b"{}", 200, "html"),
            ([{"reset": True}], "GET", IS_ALIVE, None, 0, "reset"),
            ([{"reset_after_body": True}], "POST", UPSERT, b"{}", 0,
             "reset_after_body"),
            ([{"trickle": {"interval": 60}}], "GET", IS_ALIVE, None, 200,
             "trickle"),
            ([{"endless": {"status": 502}}], "GET", IS_ALIVE, None, 502,
             "endless"),
        ]
        server = self.si.server
        server.RequestHandlerClass = SlowHandler
        try:
            for rules, method, path, body, status, fault in cases:
                with self.subTest(path=path, rules=rules):
                    self.si.set_faults(rules)
                    conn = self.conn()
                    try:
                        conn.request(method, path, body=body)
                        resp = conn.getresponse()
                        got = resp.status
                        if fault not in ("trickle", "endless"):
                            resp.read()    # whole answer; headers otherwise
                    except (ConnectionError, http.client.HTTPException):
                        got = 0
                    finally:
                        last = self.si.snapshot()["requests"][-1]
                        if got:
                            resp.close()
                        conn.close()
                    self.assertEqual(got, status)
                    self.assertEqual((last["path"], last["status"],
                                      last.get("fault")),
                                     (path.split("?")[0], status, fault))
        finally:
            server.RequestHandlerClass = comet_standin._Handler
            self.si.set_faults([])
        # the streams ended with their clients
        self.assertTrue(wait_for(lambda: all(
            r["done"] for r in self.si.snapshot()["requests"])))

    def test_retry_after_strings(self):
        for value, header in (("Fri, 01 Jan 2100 00:00:00 GMT",
                               "Fri, 01 Jan 2100 00:00:00 GMT"),
                              ("999999999", "999999999"), ("soon", "soon"),
                              (2.5, "2.5"), (3.0, "3"), (7, "7")):
            self.client.set_faults([{"endpoint": "isAlive", "status": 503,
                                     "retry_after": value}])
            status, resp, r = self.call("GET", IS_ALIVE)
            self.assertEqual((status, r["code"]), (503, 503))
            self.assertEqual(resp.getheader("Retry-After"), header)
            self.assertEqual(self.client.state()["faults"][0]["retry_after"],
                             value)
        # on other answers too
        self.client.set_faults([{"endpoint": "isAlive", "retry_after": "60",
                                 "respond": {"status": 429, "body": ""}}])
        status, resp, _ = self.call("GET", IS_ALIVE)
        self.assertEqual((status, resp.getheader("Retry-After")), (429, "60"))

    def test_respond(self):
        page = "<html><body>Zugang verweigert \u2013 bitte anmelden</body></html>"
        self.client.set_faults([
            {"endpoint": "getVersion", "count": 1, "respond": {
                "status": 200, "content_type": "text/html; charset=utf-8",
                "body": page, "headers": [["X-Proxy", "squid/5"],
                                          ["Set-Cookie", "s=1; Path=/"]]}},
            {"endpoint": "getVersion", "count": 1, "respond": {
                "status": 302, "content_type": None, "body": "",
                "headers": [["Location", "http://portal.example/login"]]}},
            {"endpoint": "getVersion", "count": 1, "respond": {
                "status": 200, "content_type": "application/json",
                "body": '{"artifactVersionId": "ab'}},
            {"endpoint": "getVersion", "count": 1, "respond": {}},
        ])
        path = VERSION + qs(versionId="f" * 32)
        status, resp, body = self.call("GET", path)
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Content-Type"),
                         "text/html; charset=utf-8")
        self.assertEqual(body, page.encode("utf-8"))
        self.assertEqual(resp.getheader("Content-Length"), str(len(body)))
        self.assertEqual(resp.getheader("X-Proxy"), "squid/5")
        self.assertEqual(resp.getheader("Set-Cookie"), "s=1; Path=/")
        status, resp, body = self.call("GET", path)
        self.assertEqual((status, body), (302, b""))
        self.assertIsNone(resp.getheader("Content-Type"))
        self.assertEqual(resp.getheader("Location"),
                         "http://portal.example/login")
        conn = self.conn()
        conn.request("GET", path)
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()),
                         (200, b'{"artifactVersionId": "ab'))
        self.assertEqual(self.call("GET", path)[::2], (200, b""))  # defaults
        # rules used up: the real answer again, on the same connection
        status, _, r = self.call("GET", path, conn=conn)
        self.assertEqual((status, r["sdk_error_code"]), (400, 624523))
        conn.close()
        log = [q for q in self.client.state()["requests"]
               if q["endpoint"] == "getVersion"][-5:]
        self.assertEqual([(q["status"], q.get("fault")) for q in log],
                         [(200, "respond"), (302, "respond"),
                          (200, "respond"), (200, "respond"), (400, None)])

    def test_respond_to_upload_changes_nothing(self):
        exp, _, vid = self.fresh_version()
        self.client.set_faults([{"endpoint": "uploadAsset", "count": 2,
                                 "respond": {"status": 200, "body": "{}"}}])
        conn = self.conn()
        self.ok("GET", IS_ALIVE, conn=conn)
        sock = conn.sock
        # body drained: the keep-alive connection stays usable
        self.assertEqual(self.upload(exp, vid, "u", b"u" * 2_000_000,
                                     conn=conn)[::2], (200, {}))
        self.ok("GET", IS_ALIVE, conn=conn)
        self.assertIs(conn.sock, sock)
        conn.close()
        self.assertEqual(self.version_state(vid)["assets"], [])
        self.assertEqual(os.listdir(os.path.join(self.tmp.name, "tmp")), [])
        # with Expect: 100-continue the body is never asked for
        data = os.urandom(50_000)
        body, ctype = multipart([("file", "u", data)])
        s, f = self.raw_request((
            "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
            "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
            % (UPLOAD + qs(experimentKey=exp, artifactVersionId=vid,
                           fileName="u"), ctype, len(body))).encode())
        status, headers, r = self.read_response(f)
        self.assertEqual((status, r, headers["connection"]),
                         (200, b"{}", "close"))
        self.assertEqual(f.read(), b"")
        s.close()
        self.assertEqual(self.version_state(vid)["assets"], [])
        self.assertEqual(self.upload(exp, vid, "u", data)[0], 200)
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual(asset["uploads"], 1)
        # Connection: close among the headers closes the connection
        self.client.set_faults([{"endpoint": "isAlive", "respond": {
            "body": "{}", "headers": [["Connection", "close"]]}}])
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % IS_ALIVE.encode())
        status, headers, r = self.read_response(f)
        self.assertEqual((status, r, headers["connection"]),
                         (200, b"{}", "close"))
        self.assertEqual(f.read(), b"")
        s.close()

    def test_html(self):
        exp = self.new_experiment()
        self.client.set_faults([{"endpoint": "upsert", "html": True}])
        status, resp, body = self.call("POST", UPSERT, {
            "artifactName": "portal", "artifactType": "t",
            "experimentKey": exp})
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Content-Type"),
                         "text/html; charset=utf-8")
        text = body.decode("utf-8")
        self.assertTrue(text.startswith("<!DOCTYPE html>"), text)
        self.assertIn("<form", text)
        self.assertIn('type="password"', text)
        self.assertFalse(any(a["name"] == "portal"
                             for a in self.client.state()["artifacts"]))
        self.assertEqual(self.entry("upsert")["fault"], "html")

    def test_trickle_with_length(self):
        self.client.set_faults([{"endpoint": "getFiles", "trickle": {
            "interval": 0.1, "bytes": 12, "status": 200}, "count": 1},
            {"endpoint": "getFiles", "trickle": {
                "interval": 0.01, "bytes": 4, "status": 500}}])
        t0 = time.monotonic()
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % (FILES + qs(versionId="v" * 32)).encode())
        status, headers = read_head(f)
        self.assertEqual(status, 200)
        self.assertEqual((headers["content-type"], headers["content-length"],
                          headers["connection"]),
                         ("application/json", "12", "close"))
        body = f.read()                        # up to the server's close
        elapsed = time.monotonic() - t0
        s.close()
        self.assertEqual(body, b'{"pad":"xx"}')
        self.assertEqual(json.loads(body), {"pad": "xx"})
        self.assertGreaterEqual(elapsed, 1.15)  # 12 bytes, >= 0.1 s apart
        r = self.entry("getFiles")
        self.assertEqual((r["status"], r["fault"], r["sent"]),
                         (200, "trickle", 12))
        self.assertIsNotNone(r["versionId"])
        # fewer bytes than a whole document: a prefix of it
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % FILES.encode())
        status, headers = read_head(f)
        self.assertEqual((status, headers["content-length"]), (500, "4"))
        self.assertEqual(f.read(), b'{"pa')
        s.close()

    def test_trickle_forever_until_the_client_leaves(self):
        exp, _, vid = self.fresh_version()
        self.client.set_faults([{"endpoint": "uploadAsset", "count": 1,
                                 "trickle": {"interval": 0.05}}])
        body, ctype = multipart([("file", "t", b"t" * 300_000)])
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                "Content-Length: %d\r\n\r\n"
                % (UPLOAD + qs(experimentKey=exp, artifactVersionId=vid,
                               fileName="t"), ctype, len(body))).encode()
        s, f = self.raw_request(head + body)
        status, headers = read_head(f)
        self.assertEqual(status, 200)
        self.assertNotIn("content-length", headers)
        self.assertEqual((headers["content-type"], headers["connection"]),
                         ("application/json", "close"))
        got = b""
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            got += s.recv(100)
        self.assertGreaterEqual(len(got), 3)      # it keeps coming ...
        self.assertLessEqual(len(got), 40)        # ... one byte at a time
        expect = b'{"pad":"' + b"x" * 20
        self.assertEqual(got, expect[:len(got)])
        f.close()
        s.close()
        r = wait_for(lambda: self.entry("uploadAsset")["done"] and
                     self.entry("uploadAsset"))
        self.assertEqual((r["status"], r["fault"], r["fileName"]),
                         (200, "trickle", "t"))
        self.assertGreaterEqual(r["sent"], len(got))
        self.assertEqual(self.version_state(vid)["assets"], [])
        # A client that leaves between two bytes is noticed at once, not at
        # the next byte (a minute away).
        self.client.set_faults([{"endpoint": "isAlive",
                                 "trickle": {"interval": 60}}])
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % IS_ALIVE.encode())
        self.assertEqual(read_head(f)[0], 200)
        f.close()
        s.close()
        t0 = time.monotonic()
        r = wait_for(lambda: self.entry("isAlive")["done"] and
                     self.entry("isAlive"))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual((r["fault"], r["sent"]), ("trickle", 0))

    def test_endless(self):
        self.client.set_faults([{"endpoint": "getFiles", "retry_after": 5,
                                 "endless": {"status": 503, "chunk": 65536}}])
        conn = self.conn()
        conn.request("GET", FILES + qs(versionId="v" * 32))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 503)
        self.assertIsNone(resp.getheader("Content-Length"))
        self.assertIsNone(resp.getheader("Transfer-Encoding"))
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertEqual(resp.getheader("Retry-After"), "5")
        head = resp.read(8)
        self.assertEqual(head, b'{"pad":"')
        total = len(head)
        t0 = time.monotonic()
        while total < 32 << 20:
            data = resp.read(1 << 20)
            self.assertTrue(data)
            self.assertEqual(data.strip(b"x"), b"")
            total += len(data)
        self.assertLess(time.monotonic() - t0, 20)
        resp.close()
        conn.close()
        r = wait_for(lambda: self.entry("getFiles")["done"] and
                     self.entry("getFiles"))
        self.assertEqual((r["status"], r["fault"]), (503, "endless"))
        self.assertGreaterEqual(r["sent"], 32 << 20)

    def test_reset_after_body(self):
        exp, _, vid = self.fresh_version()
        self.client.set_faults([{"endpoint": "uploadAsset", "count": 1,
                                 "reset_after_body": True}])
        # more than the ~1 MiB a plain "reset" reads plus what socket
        # buffers can hold: sendall() completes only if all of it is read
        data = os.urandom(16 << 20)
        body, ctype = multipart([("file", "r.bin", data)])
        s, f = self.raw_request((
            "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
            "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
            % (UPLOAD + qs(experimentKey=exp, artifactVersionId=vid,
                           fileName="r.bin"), ctype, len(body))).encode())
        self.assertEqual(read_head(f)[0], 100)   # it wants the body ...
        s.sendall(body)                          # ... and reads all of it
        self.assertEqual(read_to_eof(s), b"")    # then: no answer
        f.close()
        s.close()
        r = self.entry("uploadAsset", fileName="r.bin")
        self.assertEqual((r["status"], r["fault"]), (0, "reset_after_body"))
        self.assertEqual(self.version_state(vid)["assets"], [])
        self.assertEqual(os.listdir(os.path.join(self.tmp.name, "tmp")), [])
        status, _, r = self.upload(exp, vid, "r.bin", data)
        self.assertEqual(status, 200, r)
        (asset,) = self.version_state(vid)["assets"]
        self.assertEqual((asset["uploads"], asset["sha256"]),
                         (1, hashlib.sha256(data).hexdigest()))
        # http.client sees a broken connection
        self.client.set_faults([{"endpoint": "upsert",
                                 "reset_after_body": True}])
        self.assertConnectionBroken(lambda: self.upsert(exp, "x"))

    def test_new_rule_fields_refused(self):
        good = [{"endpoint": "isAlive", "count": 1}]
        self.client.set_faults(good)
        for rule in ({"respond": {"status": 99}}, {"respond": {"status": 100}},
                     {"respond": {"status": 600}},
                     {"respond": {"status": "200"}},
                     {"respond": {"body": 5}}, {"respond": {"body": None}},
                     {"respond": {"content_type": 5}},
                     {"respond": {"content_type": "a\r\nb"}},
                     {"respond": {"colour": 1}}, {"respond": "x"},
                     {"respond": {"status": 204, "body": "x"}},
                     {"respond": {"headers": [["Content-Length", "5"]]}},
                     {"respond": {"headers": [["X", "a\r\nX-Evil: 1"]]}},
                     {"respond": {"headers": [["bad name", "v"]]}},
                     {"respond": {"headers": ["X: y"]}},
                     {"respond": {"headers": {"X": "y"}}},
                     {"html": "yes"}, {"html": 1},
                     {"reset_after_body": "true"},
                     {"trickle": {"interval": 0}}, {"trickle": {"interval": -1}},
                     {"trickle": {"interval": "1"}},
                     {"trickle": {"bytes": -1}}, {"trickle": {"bytes": 1.5}},
                     {"trickle": {"status": 204}}, {"trickle": {"status": 101}},
                     {"trickle": {"speed": 1}}, {"trickle": [1]},
                     {"endless": {"chunk": 0}}, {"endless": {"status": 304}},
                     {"endless": {"status": 700}}, {"endless": {"size": 1}},
                     {"retry_after": ""}, {"retry_after": "1\r\nX: y"},
                     {"retry_after": -1}, {"retry_after": True},
                     {"respond": {}, "status": 503},
                     {"trickle": {}, "endless": {}},
                     {"html": True, "reset": True},
                     {"reset_after_body": True, "status": 500}):
            with self.assertRaises(RuntimeError, msg=rule):
                self.client.set_faults([{"endpoint": "isAlive"}, rule])
        # nothing was changed by the refused lists
        self.assertEqual([r["count"] for r in self.client.state()["faults"]],
                         [1])
        # the defaults, as GET /_standin/faults shows them
        rules = [{"reset": True, "status": 503},   # accepted, as before
                 {"respond": {}}, {"html": True, "delay": 0.1},
                 {"trickle": {"bytes": 3}}, {"endless": {}},
                 {"reset_after_body": True, "match_file": "f"}]
        self.assertEqual(self.client.set_faults(rules), {"rules": 6})
        got = self.client._call("GET", "/_standin/faults")["rules"]
        self.assertEqual(got[1]["respond"], {
            "status": 200, "content_type": "application/json", "body": "",
            "headers": []})
        self.assertTrue(got[2]["html"])
        self.assertEqual(got[3]["trickle"], {"interval": 1.0, "bytes": 3,
                                             "status": 200})
        self.assertEqual(got[4]["endless"], {"status": 200, "chunk": 65536})
        self.assertTrue(got[5]["reset_after_body"])
        self.assertEqual((got[0]["reset"], got[0]["status"]), (True, 503))
        for r in got[1:]:
            self.assertFalse(r["reset"])

    def test_bad_rules_refused(self):
        for rule in ({"endpoint": "nope"}, {"status": 200},
                     {"probability": -1}, {"colour": "red"},
                     {"count": "3"}):
            with self.assertRaises(RuntimeError):
                self.client.set_faults([rule])
        with self.assertRaises(RuntimeError):
            self.client.set_faults({"endpoint": "*"})

    def test_down(self):
        self.client.set_down(True)
        self.assertConnectionBroken(lambda: self.call("GET", IS_ALIVE))
        self.assertConnectionBroken(lambda: self.call("POST", UPSERT, {}))
        st = self.client.state()             # control API still answers
        self.assertTrue(st["down"])
        self.assertGreaterEqual(st["down_counts"]["isAlive"], 1)
        self.client.set_down(False)
        self.ok("GET", IS_ALIVE)
        self.client.reset_counts()
        st = self.client.state()
        self.assertEqual((st["counts"], st["down_counts"], st["requests"]),
                         ({}, {}, []))


class TestApiKey(StandInTestCase):
    api_key = "secret-key"

    def test_api_key(self):
        status, _, r = self.call("POST", ADD_RUN, {"experimentKey": "a" * 32})
        self.assertEqual((status, r["code"], r["msg"]),
                         (401, 401, "Invalid API key"))
        self.assertIn("sdk_error_code", r)
        status, _, r = self.call("GET", "/api/rest/v2/account-details",
                                 headers={"Authorization": "wrong"})
        self.assertEqual(status, 401)
        status, _, r = self.call("GET", "/api/rest/v2/account-details",
                                 headers={"Authorization":
                                          "Bearer secret-key"})
        self.assertEqual(status, 401)
        self.ok("GET", IS_ALIVE)                        # no key needed
        self.ok("GET", "/api/rest/v2/account-details",
                headers={"Authorization": "secret-key"})
        self.ok("GET", "/api/rest/v2/account-details",
                headers={"Comet-Sdk-Api": "secret-key"})
        self.client.state()                             # control: no key
        self.assertEqual(self.client.state()["experiments"], {})


class TestConfig(StandInTestCase):

    def test_long_version_ids(self):
        # 100000 characters: request lines far beyond http.server's 64 KiB
        n = 100000
        self.assertEqual(self.client.set_config(version_id_length=n),
                         {"version_id_length": n})
        self.assertEqual(self.client.config(), {"version_id_length": n})
        exp = self.new_experiment()
        status, _, v = self.upsert(exp, "long", version="1.0.0")
        self.assertEqual(status, 200, v)
        vid = v["artifactVersionId"]
        self.assertRegex(vid, "^[A-Za-z0-9]{%d}$" % n)
        self.assertNotEqual(self.upsert(exp, "long")[2]["artifactVersionId"],
                            vid)
        data = os.urandom(100_000)
        name = "dir/a b+\u00fc%20.bin"
        status, _, r = self.upload(exp, vid, name, data,
                                   metadata={"m": 1})
        self.assertEqual(status, 200, r)
        self.assertEqual((r["artifactVersionId"], r["fileName"]), (vid, name))
        self.ok("POST", LABELS, {"artifactVersionId": vid, "alias": ["x"]})
        got = self.ok("GET", VERSION + qs(versionId=vid))
        self.assertEqual((got["artifactVersionId"], got["alias"]),
                         (vid, ["x"]))
        (f,) = self.ok("GET", FILES + qs(versionId=vid))["files"]
        self.assertEqual((f["fileName"], f["artifactVersionId"]), (name, vid))
        self.assertEqual(self.call("GET", GET_ASSET + qs(
            assetId=r["assetId"], artifactVersionId=vid))[2], data)
        self.ok("POST", STATE, {"artifactVersionId": vid,
                                "experimentKey": exp, "state": "CLOSED"})
        got = self.ok("GET", VERSION + qs(workspace="ws", artifactName="long",
                                          version="1.0.0"))
        self.assertEqual((got["artifactVersionId"], got["state"]),
                         (vid, "CLOSED"))
        (asset,) = self.version_state(vid)["assets"]
        with open(asset["path"], "rb") as fh:
            self.assertEqual(fh.read(), data)
        # every request names the whole id, exactly
        st = self.client.state()
        self.assertEqual(st["config"], {"version_id_length": n})
        logged = {}
        for q in st["requests"]:
            if q.get("versionId") == vid:
                logged.setdefault(q["endpoint"], q)
        self.assertEqual(sorted(logged), sorted([
            "upsert", "uploadAsset", "labels", "getVersion", "getFiles",
            "getAsset", "state"]))
        self.assertEqual(logged["uploadAsset"]["fileName"], name)
        self.assertTrue(all(q["status"] == 200 for q in logged.values()))
        # back to the default ids
        self.client.set_config(version_id_length=None)
        self.assertRegex(self.upsert(exp, "long")[2]["artifactVersionId"],
                         "^[0-9a-f]{32}$")

    def test_config_in_process_and_validation(self):
        self.assertEqual(self.si.set_config({"version_id_length": 32}),
                         {"version_id_length": 32})
        exp = self.new_experiment()
        vid = self.upsert(exp, "c")[2]["artifactVersionId"]
        self.assertRegex(vid, "^[A-Za-z0-9]{32}$")
        self.assertEqual(self.upload(exp, vid, "f", b"1")[0], 200)
        self.si.set_config(version_id_length=777)
        vid = self.upsert(exp, "c")[2]["artifactVersionId"]
        self.assertEqual(len(vid), 777)
        self.assertEqual(self.upload(exp, vid, "f", b"1")[0], 200)
        for bad in ({"version_id_length": 31},
                    {"version_id_length": 100001},
                    {"version_id_length": "64"}, {"version_id_length": 64.0},
                    {"version_id_length": True},
                    {"version_id_length": 64, "colour": "red"}):
            with self.assertRaises(RuntimeError, msg=bad):
                self.client.set_config(bad)
            with self.assertRaises(comet_standin.ApiError, msg=bad):
                self.si.set_config(bad)
        with self.assertRaises(RuntimeError):
            self.client._call("POST", "/_standin/config", [1])
        self.assertEqual(self.client.config(), {"version_id_length": 777})
        self.client.reset_counts()             # kept
        self.assertEqual(self.client.config(), {"version_id_length": 777})

    def test_log_names_ids_and_files_as_received(self):
        exp, _, vid = self.fresh_version()
        self.client.reset_counts()
        self.assertEqual(self.upload(exp, vid, "", b"1")[0], 400)
        self.assertEqual(self.upload(exp, vid, " sp%2F/\u00e9 ", b"1")[0], 200)
        self.call("GET", VERSION + qs(versionId="", artifactName="nope"))
        reqs = self.client.state()["requests"]
        self.assertEqual([(q.get("versionId"), q.get("fileName"))
                          for q in reqs],
                         [(vid, ""), (vid, " sp%2F/\u00e9 "), ("", None)])

    def test_request_line_limit(self):
        # up to 1 MiB is accepted ...
        path = IS_ALIVE + "?pad=" + "p" * ((1 << 20) - 100)
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % path.encode())
        status, _, body = self.read_response(f)
        self.assertEqual(status, 200, body)
        f.close()
        s.close()
        # ... longer: 414, and the answer is not lost to a reset
        s, f = self.raw_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % (path + "p" * 200).encode())
        self.assertEqual(read_head(f)[0], 414)
        f.close()
        s.close()


class TestStop(unittest.TestCase):
    """stop() with responses still trickling or streaming."""

    def test_stop_ends_streams(self):
        with tempfile.TemporaryDirectory(prefix="standin-stop-") as d:
            si = StandIn(d)
            port = si.start()
            try:
                si.set_faults([
                    {"endpoint": "isAlive", "trickle": {"interval": 60}},
                    {"endpoint": "accountDetails", "endless": {}},
                    {"endpoint": "addRun", "delay": 60}])
                socks = []
                for path in (IS_ALIVE, ACCOUNT, ADD_RUN):
                    s = socket.create_connection(("127.0.0.1", port),
                                                 timeout=10)
                    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % path.encode())
                    socks.append(s)
                # both streams have started; the endless one is not read
                self.assertEqual(socks[0].recv(12), b"HTTP/1.1 200")
                self.assertEqual(socks[1].recv(12), b"HTTP/1.1 200")
                self.assertTrue(wait_for(
                    lambda: len(si.snapshot()["requests"]) == 3))
                t0 = time.monotonic()
                si.stop()
                self.assertLess(time.monotonic() - t0, 3)
                for s in socks:               # all connections end
                    read_to_eof(s)
                    s.close()
                self.assertLess(time.monotonic() - t0, 8)
                reqs = wait_for(lambda: all(
                    r["done"] for r in si.snapshot()["requests"])
                    and si.snapshot()["requests"])
                self.assertTrue(reqs)
                self.assertEqual({r["path"]: r.get("fault") for r in reqs},
                                 {IS_ALIVE: "trickle", ACCOUNT: "endless",
                                  ADD_RUN: None})
                self.assertLess(max(r["done"] for r in reqs) - time.time(), 1)
            finally:
                si.stop()


class TestSubprocess(unittest.TestCase):
    """The command line: PORT line, stdin EOF, streaming to disk."""

    def test_cli(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "comet_standin.py")
        with tempfile.TemporaryDirectory(prefix="standin-cli-") as d:
            proc = subprocess.Popen(
                [sys.executable, script, "--port", "0", "--data-dir", d,
                 "--api-key", "k", "--seed", "1"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                line = proc.stdout.readline().decode()
                self.assertRegex(line, r"^PORT \d+\n$")
                port = int(line.split()[1])
                client = StandInClient(port)
                key = uuid.uuid4().hex
                hdr = {"Authorization": "k"}
                conn = http.client.HTTPConnection("127.0.0.1", port,
                                                  timeout=60)

                def post(path, obj):
                    conn.request("POST", path, json.dumps(obj).encode(), hdr)
                    resp = conn.getresponse()
                    out = json.loads(resp.read())
                    self.assertEqual(resp.status, 200, out)
                    return out

                post(ADD_RUN, {"experimentKey": key})
                vid = post(UPSERT, {"artifactName": "big",
                                    "artifactType": "t",
                                    "experimentKey": key}
                           )["artifactVersionId"]
                # 256 MiB streamed through; the stand-in must not hold it
                size, block = 256 << 20, os.urandom(1 << 20)
                boundary = "b" + uuid.uuid4().hex
                head = ('--%s\r\nContent-Disposition: form-data; name="file"; '
                        'filename="big"\r\n\r\n' % boundary).encode()
                tail = ("\r\n--%s--\r\n" % boundary).encode()
                h = hashlib.sha256()

                def gen():
                    yield head
                    for _ in range(size // len(block)):
                        h.update(block)
                        yield block
                    yield tail

                conn.request("POST", UPLOAD + qs(experimentKey=key,
                                                  artifactVersionId=vid,
                                                  fileName="big"),
                             body=gen(), headers=dict(hdr, **{
                                 "Content-Type": "multipart/form-data; "
                                 "boundary=" + boundary,
                                 "Content-Length": str(len(head) + size
                                                       + len(tail))}))
                resp = conn.getresponse()
                self.assertEqual(resp.status, 200, resp.read())
                resp.read()
                conn.close()
                with open("/proc/%d/status" % proc.pid) as f:
                    hwm = next(int(line.split()[1]) for line in f
                               if line.startswith("VmHWM:"))
                self.assertLess(hwm, 128 * 1024, "peak RSS %d kB" % hwm)
                (art,) = client.state()["artifacts"]
                (asset,) = art["versions"][0]["assets"]
                self.assertEqual((asset["size"], asset["sha256"]),
                                 (size, h.hexdigest()))
                self.assertEqual(os.path.getsize(asset["path"]), size)
                # stdin EOF stops it
                proc.stdin.close()
                self.assertEqual(proc.wait(timeout=10), 0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()

    def test_stops_with_streams_open(self):
        """SIGTERM and stdin EOF stop it although answers are trickling or
        endless."""
        for how in ("sigterm", "stdin"):
            with tempfile.TemporaryDirectory(prefix="standin-cli-") as d:
                proc = subprocess.Popen(
                    [sys.executable, SCRIPT, "--port", "0", "--data-dir", d],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                socks = []
                try:
                    port = int(proc.stdout.readline().split()[1])
                    StandInClient(port).set_faults([
                        {"endpoint": "isAlive", "trickle": {"interval": 60}},
                        {"endpoint": "*", "endless": {"chunk": 1 << 20}}])
                    for path in (IS_ALIVE, ACCOUNT):
                        s = socket.create_connection(("127.0.0.1", port),
                                                     timeout=10)
                        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                  % path.encode())
                        self.assertEqual(s.recv(12), b"HTTP/1.1 200")
                        socks.append(s)
                    if how == "sigterm":
                        proc.terminate()
                    else:
                        proc.stdin.close()
                    self.assertEqual(proc.wait(timeout=10), 0, how)
                finally:
                    for s in socks:
                        s.close()
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    if not proc.stdin.closed:
                        proc.stdin.close()
                    proc.stdout.close()

    def test_sigterm(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "comet_standin.py")
        with tempfile.TemporaryDirectory(prefix="standin-cli-") as d:
            proc = subprocess.Popen(
                [sys.executable, script, "--port", "0", "--data-dir", d],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                self.assertTrue(proc.stdout.readline().startswith(b"PORT "))
                proc.terminate()
                self.assertEqual(proc.wait(timeout=10), 0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdin.close()
                proc.stdout.close()


if __name__ == "__main__":
    unittest.main()
