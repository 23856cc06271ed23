"""Tests of the Comet stand-in (tests/comet_standin.py) itself.

Run from tests/:  python3 -m unittest -v test_comet_standin
"""

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
            if resp.getheader("Content-Type") == "application/json":
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

    def raw_request(self, head, expect_continue=True):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(head)
        f = s.makefile("rb")
        return s, f

    def read_response(self, f):
        status_line = f.readline()
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, body

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
        # The log entry's status is written just after the response is sent.
        deadline = time.monotonic() + 10
        while True:
            reqs = [q for q in self.client.state()["requests"]
                    if q.get("fileName") == "slow"]
            if all(q["status"] is not None for q in reqs) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
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
