"""get and download on both backends, the node-wide cache, path safety (issue 4)."""

import hashlib
import http.client
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse

from comettest import API_KEY, CometTestCase, sha256_file
import ferrytest
from ferrytest import FerryTestCase


def rest(port, method, path, query=None, body=None, multipart=None):
    """One request to the stand-in's REST API, as a foreign client would send it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"Authorization": API_KEY}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if multipart is not None:
        boundary = "ferrytestboundary"
        parts = []
        for name, value in multipart.items():
            parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"x\"\r\n"
                          "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name)).encode()
                         + value + b"\r\n")
        data = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
        headers["Content-Type"] = "multipart/form-data; boundary=" + boundary
    conn.request(method, url, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, json.loads(payload) if payload else None


def foreign_version(port, name, files, close=True, workspace="team"):
    """Create a version the way another SDK would: files maps fileName -> bytes."""
    key = hashlib.md5(name.encode()).hexdigest()
    rest(port, "POST", "/clientlib/logger/add/run",
         body={"apiKey": API_KEY, "experimentKey": key, "projectName": "proj", "teamName": workspace})
    status, up = rest(port, "POST", "/api/rest/v2/write/artifacts/upsert",
                      body={"artifactName": name, "artifactType": "dataset", "experimentKey": key,
                            "version": None, "alias": [], "versionTags": [], "versionMetadata": None})
    assert status == 200, up
    vid = up["artifactVersionId"]
    for fname, data in files.items():
        status, rep = rest(port, "POST", "/api/rest/v2/write/experiment/upload-asset",
                           query={"experimentKey": key, "artifactVersionId": vid, "fileName": fname,
                                  "type": "asset", "overwrite": "false"},
                           multipart={"file": data})
        assert status == 200, rep
    if close:
        rest(port, "POST", "/api/rest/v2/write/artifacts/state",
             body={"artifactVersionId": vid, "experimentKey": key, "state": "CLOSED"})
    return vid


class LocalDownload(FerryTestCase):
    def test_overwrite_strategies(self):
        d = self.daemon
        a = self.write("src/a.txt", "version one\n")
        d.cli("log", "ow", a)
        d.cli("wait", "--timeout", "30")
        out = os.path.join(self.tmp, "out")
        os.makedirs(out)
        target = os.path.join(out, "a.txt")

        # fail (default): an identical file is kept ...
        with open(target, "w") as f:
            f.write("version one\n")
        rep = d.cli_json("download", "ow", out)
        self.assertEqual(rep["files"][0]["action"], "kept")
        # ... a different one is an error and stays untouched.
        with open(target, "w") as f:
            f.write("local edits\n")
        p = d.cli("download", "ow", out, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("different content", p.stderr)
        with open(target) as f:
            self.assertEqual(f.read(), "local edits\n")
        # preserve keeps it, without error.
        rep = d.cli_json("download", "ow", out, "--overwrite", "preserve")
        self.assertEqual(rep["files"][0]["action"], "preserved")
        with open(target) as f:
            self.assertEqual(f.read(), "local edits\n")
        # overwrite replaces it.
        rep = d.cli_json("download", "ow", out, "--overwrite", "overwrite")
        self.assertEqual(rep["files"][0]["action"], "written")
        with open(target) as f:
            self.assertEqual(f.read(), "version one\n")
        self.assertEqual([n for n in os.listdir(out) if n.startswith(".ferry-tmp")], [])

    def test_missing_target_directory_is_created(self):
        d = self.daemon
        d.cli("log", "nested", self.write("n.txt", "n"), "--logical-path", "deep/er/n.txt")
        d.cli("wait", "--timeout", "30")
        out = os.path.join(self.tmp, "does", "not", "exist")
        d.cli("download", "nested", out)
        with open(os.path.join(out, "deep", "er", "n.txt")) as f:
            self.assertEqual(f.read(), "n")

    def test_planted_symlink_is_refused_and_nothing_escapes(self):
        d = self.daemon
        d.cli("log", "sym", self.write("s.txt", "payload"), "--logical-path", "sub/s.txt")
        d.cli("log", "sym2", self.write("t.txt", "payload"))
        d.cli("wait", "--timeout", "30")
        outside = os.path.join(self.tmp, "outside")
        os.makedirs(outside)
        out = os.path.join(self.tmp, "out")
        os.makedirs(out)
        os.symlink(outside, os.path.join(out, "sub"))  # directory symlink
        os.symlink(os.path.join(outside, "t.txt"), os.path.join(out, "t.txt"))  # file symlink
        p = d.cli("download", "sym", out, "--overwrite", "overwrite", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("symlink", p.stderr)
        p = d.cli("download", "sym2", out, "--overwrite", "overwrite", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(os.listdir(outside), [])

    def test_queued_version_is_found_and_downloaded_from_the_spool(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        c.request("pause", paused=True)
        data = os.urandom(123_456)
        d.cli("log", "pending", self.write("p.bin", data), "--alias", "fresh")
        got = d.cli_json("get", "pending")
        self.assertEqual(got["state"], "QUEUED")
        self.assertFalse(got["uploaded"])
        self.assertEqual(d.cli_json("get", "pending:fresh")["state"], "QUEUED")
        out = os.path.join(self.tmp, "out")
        d.cli("download", "pending", out)
        with open(os.path.join(out, "p.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        c.request("pause", paused=False)
        c.close()


class ManyAssets(FerryTestCase):
    """A version whose asset list is larger than one frame (1 MiB): get and download page it."""

    N = 6000
    DEEP = "/".join(["a-rather-long-folder-name-%02d" % i for i in range(6)])  # ~170 bytes

    def make(self):
        root = os.path.join(self.tmp, "many")
        files = {}
        for i in range(self.N):
            rel = "%s/f%05d.bin" % (self.DEEP, i)
            path = os.path.join(root, rel)
            if i == 0:
                os.makedirs(os.path.dirname(path))
            data = b"%08d" % i
            with open(path, "wb") as f:
                f.write(data)
            files[rel] = data
        return root, files

    def check_version(self, d, name, files, state):
        p = d.cli("get", name, "--json")
        info = json.loads(p.stdout)
        self.assertGreater(len(p.stdout), 1 << 20, "the test needs a version larger than a frame")
        self.assertEqual(info["state"], state)
        self.assertEqual(info["assets_total"], self.N)
        self.assertEqual(sorted(a["logical_path"] for a in info["assets"]), sorted(files))
        out = os.path.join(self.tmp, "out-" + state)
        d.cli("download", name, out)
        got = 0
        for rel, data in files.items():
            with open(os.path.join(out, rel), "rb") as f:
                self.assertEqual(f.read(), data, rel)
            got += 1
        self.assertEqual(got, self.N)
        code = ("import ferry, sys\n"
                "a = ferry.Experiment().get_artifact(sys.argv[1])\n"
                "print(len(a.assets))\n")
        r = subprocess.run([ferrytest.PYTHON, "-c", code, name], env=ferrytest.binding_env(d.env),
                           capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout), self.N)

    def test_queued_then_delivered(self):
        d = self.daemon
        root, files = self.make()
        d.cli("pause")
        d.cli("log", "many", root)
        self.check_version(d, "many", files, "QUEUED")  # from the spool, pinned
        d.cli("resume")
        d.cli("wait", "--timeout", "120")
        self.check_version(d, "many", files, "CLOSED")  # from the registry


class CometDownload(CometTestCase):
    def test_get_by_name_version_alias_and_workspace(self):
        d = self.daemon
        f = self.write("g.txt", "g")
        d.cli("log", "getme", f, "--alias", "prod", "--tag", "x", "--metadata", '{"a": 1}')
        d.cli("log", "getme", f)
        self.wait_drained()
        self.assertEqual(d.cli_json("get", "getme")["version"], "2.0.0")
        self.assertEqual(d.cli_json("get", "getme:1.0.0")["version"], "1.0.0")
        prod = d.cli_json("get", "getme:prod")
        self.assertEqual(prod["version"], "1.0.0")
        self.assertEqual(prod["metadata"], {"a": 1})
        self.assertEqual(prod["version_tags"], ["x"])
        self.assertEqual(prod["assets"][0]["logical_path"], "g.txt")
        self.assertEqual(prod["assets"][0]["size"], 1)
        self.assertEqual(d.cli_json("get", "team/getme:Latest")["version"], "2.0.0")
        p = d.cli("get", "nothing", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not found", p.stderr.lower())
        p = d.cli("get", "getme:7.7.7", check=False)
        self.assertEqual(p.returncode, 1)

    def test_version_not_closed_is_reported(self):
        foreign_version(self.port, "halfway", {"a.txt": b"a"}, close=False)
        p = self.daemon.cli("get", "halfway", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not CLOSED", p.stderr)

    def test_download_byte_identical_and_overwrite_strategies(self):
        d = self.daemon
        a = self.write("c/a.bin", os.urandom(300_000))
        b = self.write("c/sub/b.bin", os.urandom(1000))
        d.cli("log", "dl", os.path.join(self.tmp, "c"))
        self.wait_drained()
        out = os.path.join(self.tmp, "out")
        d.cli("download", "dl", out)
        self.assertEqual(sha256_file(os.path.join(out, "a.bin")), sha256_file(a))
        self.assertEqual(sha256_file(os.path.join(out, "sub", "b.bin")), sha256_file(b))
        with open(os.path.join(out, "a.bin"), "wb") as f:
            f.write(b"edited")
        self.assertEqual(d.cli("download", "dl", out, check=False).returncode, 1)
        d.cli("download", "dl", out, "--overwrite", "preserve")
        with open(os.path.join(out, "a.bin"), "rb") as f:
            self.assertEqual(f.read(), b"edited")
        d.cli("download", "dl", out, "--overwrite", "overwrite")
        self.assertEqual(sha256_file(os.path.join(out, "a.bin")), sha256_file(a))
        # Every download after the first is served from the cache.
        self.assertEqual(self.state()["counts"]["getAsset"], 2)

    def test_eight_clients_one_transfer_per_asset(self):
        d = self.daemon
        big = self.write("big/a.bin", b"")
        with open(big, "wb") as f:
            for i in range(150):
                f.write(os.urandom(1 << 20))
        small = self.write("big/b.bin", os.urandom(50 << 20))
        d.cli("log", "shared-data", os.path.join(self.tmp, "big"))
        self.wait_drained(timeout=300)
        self.standin.reset_counts()
        # Slow the stand-in a little so that all eight requests overlap.
        self.standin.set_faults([{"endpoint": "getAsset", "delay": 0.5}])
        results = [None] * 8

        def client(n):
            out = os.path.join(self.tmp, "out%d" % n)
            results[n] = d.cli("download", "shared-data", out, check=False, timeout=300)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertTrue(all(r is not None and r.returncode == 0 for r in results),
                        [r.stderr for r in results if r is not None and r.returncode])
        counts = self.state()["counts"]
        self.assertEqual(counts.get("getAsset"), 2, "each asset must be fetched once: %r" % counts)
        want = {"a.bin": sha256_file(big), "b.bin": sha256_file(small)}
        for n in range(8):
            for name, digest in want.items():
                self.assertEqual(sha256_file(os.path.join(self.tmp, "out%d" % n, name)), digest)

    def test_logged_while_down_is_available_at_once(self):
        d = self.daemon
        self.standin.set_down(True)
        data = os.urandom(64_000)
        d.cli("log", "offline-read", self.write("o.bin", data))
        got = d.cli_json("get", "offline-read")
        self.assertEqual(got["state"], "QUEUED")
        out = os.path.join(self.tmp, "out")
        t = time.monotonic()
        d.cli("download", "offline-read", out)
        self.assertLess(time.monotonic() - t, 5)
        with open(os.path.join(out, "o.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.standin.set_down(False)
        self.wait_drained()

    def test_hostile_file_names_write_nothing_outside(self):
        d = self.daemon
        for i, bad in enumerate(("../x", "/etc/x", "a/../../x")):
            name = "hostile%d" % i
            foreign_version(self.port, name, {"fine.txt": b"fine", bad: b"evil"})
            box = os.path.join(self.tmp, "box%d" % i)
            os.makedirs(box)
            out = os.path.join(box, "target")
            p = d.cli("download", name, out, check=False)
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("outside the target", p.stderr)
            self.assertEqual(sorted(os.listdir(box)), [], "something was written: %r" % os.listdir(box))
        self.assertFalse(os.path.exists("/etc/x"))


class CometCacheBudget(CometTestCase):
    extra_env = {"FERRY_CACHE_BUDGET": "3M"}

    def test_cache_stays_within_budget(self):
        d = self.daemon
        for i in range(8):
            d.cli("log", "c%d" % i, self.write("c%d.bin" % i, os.urandom(1 << 20)))
        self.wait_drained()
        c = d.raw()
        c.hello()
        for i in range(8):
            d.cli("download", "c%d" % i, os.path.join(self.tmp, "o%d" % i))
            usage = c.request("cache")
            self.assertLessEqual(usage["bytes"], 3 << 20, usage)
        self.assertGreaterEqual(usage["blobs"], 2)
        # The most recent download is still cached: no new transfer for it.
        before = self.state()["counts"]["getAsset"]
        d.cli("download", "c7", os.path.join(self.tmp, "again"))
        self.assertEqual(self.state()["counts"]["getAsset"], before)
        # The oldest was evicted: it is fetched again.
        d.cli("download", "c0", os.path.join(self.tmp, "again0"))
        self.assertEqual(self.state()["counts"]["getAsset"], before + 1)
        cleared = c.request("cache", clear=True)
        self.assertGreater(cleared["freed"], 0)
        self.assertEqual(cleared["bytes"], 0)
        c.close()


if __name__ == "__main__":
    unittest.main()
