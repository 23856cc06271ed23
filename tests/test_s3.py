"""add_remote with S3 sync (issue 13), against s3rver started by the suite.

Each acceptance point of the issue has its tests here:
1. a prefix with 25 objects (some in sub-folders) and a folder marker becomes
   25 remote assets with their logical paths, sizes and ETags, on the local
   registry and on the Comet stand-in (isRemote uploads with link and metadata);
2. pagination: a prefix with more objects than one listing page;
3. max_synced_objects below the count: one unsynced asset with error_message,
   and the warning in get, status, log --wait and the Python binding's wait();
4. wrong credentials, a missing bucket, no credentials, the store down: the
   version is logged; transient failures are retried; get/status tell;
5. synced assets download byte-identical; a changed object is reported;
6. --no-sync and other schemes stay plain remote assets.
boto3 (Debian's python3-boto3) is the independent client that puts objects.
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import unittest
import uuid

import ferrytest
import s3test
from comettest import CometTestCase
from ferrytest import FerryTestCase, wait_for
from s3_standin import VersionedBucket

PYDIR = os.path.join(ferrytest.SOURCE_DIR, "client", "python")


def tree():
    """25 objects under data/ (some in sub-folders), a folder marker, and neighbours."""
    objects = {}
    for i in range(20):
        objects["data/f%02d.bin" % i] = hashlib.sha256(b"%d" % i).digest() * (i + 1)
    for i in range(3):
        objects["data/sub/a%d.txt" % i] = b"sub %d\n" % i * (7 * i + 1)
    objects["data/sub/deep/b0.csv"] = b"x,y\n1,2\n"
    objects["data/sub/deep/b1.csv"] = b""  # an empty object is an object
    objects["data/sub/"] = b""  # a folder marker: skipped
    objects["database.csv"] = b"not below data/"  # "data" lists data/..., not this
    objects["other/x.bin"] = b"elsewhere"
    return objects


def listed(objects, prefix="data/"):
    """The keys a sync of `prefix` must find: below it, folder markers skipped."""
    return {k: v for k, v in objects.items() if k.startswith(prefix) and not k.endswith("/")}


class S3Case(FerryTestCase):
    """One s3rver per class; each test gets its own bucket and a ferryd pointed at it."""

    extra_env = {}

    @classmethod
    def setUpClass(cls):
        s3test.require(cls)
        cls.server = s3test.S3rver().start()
        cls.s3 = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        cls.server.remove()

    def setUp(self):
        self.daemon_env = s3test.ferryd_env(self.server, **self.extra_env)
        super().setUp()
        self.bucket = "b" + uuid.uuid4().hex[:12]

    def put(self, objects=None, bucket=None):
        self.objects = objects if objects is not None else tree()
        self.etags = s3test.put_tree(self.s3, bucket or self.bucket, self.objects)
        return self.etags

    def check_synced(self, assets, prefix="data/", under=""):
        """`assets` (logical path -> asset as get shows it) are exactly the synced objects."""
        want = listed(self.objects, prefix)
        self.assertEqual(len(want), 25 if prefix == "data/" else len(want))
        expect = {under + k[len(prefix):]: k for k in want}
        self.assertEqual(sorted(assets), sorted(expect))
        for lp, key in expect.items():
            a = assets[lp]
            uri = "s3://%s/%s" % (self.bucket, key)
            self.assertTrue(a["remote"], lp)
            self.assertEqual(a["link"], uri)
            meta = a["metadata"]
            self.assertEqual(meta["s3_platform"], "aws")
            self.assertIs(meta["synced"], True)
            self.assertEqual(meta["checksum"], self.etags[key])
            self.assertEqual(meta["checksum"], hashlib.md5(want[key]).hexdigest())
            self.assertEqual(meta["file_size"], len(want[key]))
            self.assertEqual(meta["s3_path"], uri)
            self.assertNotIn("version_id", meta)  # s3rver's buckets are not versioned
            self.assertNotIn("error_message", meta)

    def get_assets(self, name):
        v = self.daemon.cli_json("get", name)
        return v, {a["logical_path"]: a for a in v["assets"]}


class SyncLocalTest(S3Case):
    """The local registry backend."""

    def test_prefix_becomes_one_asset_per_object(self):
        self.put()
        p = self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket,
                            "--metadata", '{"rows": 3}', "--wait", "--timeout", "60")
        self.assertNotIn("warning", p.stderr)
        v, assets = self.get_assets("ds")
        self.assertEqual(v["state"], "CLOSED")
        self.assertEqual(v["warnings"], [])
        self.check_synced(assets)
        # Sizes as objects have them; the logical path of a nested key keeps its folders.
        self.assertEqual(assets["sub/deep/b1.csv"]["size"], 0)
        self.assertEqual(assets["f19.bin"]["size"], 32 * 20)
        # The text form says which assets are synced.
        out = self.daemon.cli("get", "ds").stdout
        self.assertIn("sub/deep/b0.csv", out)
        self.assertIn("synced", out)

    def test_prefix_without_slash_is_a_folder(self):
        """s3://b/data lists data/... (not database.csv); s3://b/key names one object."""
        self.put()
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data" % self.bucket,
                        "--remote", "s3://%s/other/x.bin" % self.bucket,
                        "--wait", "--timeout", "60")
        v, assets = self.get_assets("ds")
        self.assertEqual(len(assets), 26)
        self.assertNotIn("base.csv", assets)
        self.assertEqual(assets["x.bin"]["link"], "s3://%s/other/x.bin" % self.bucket)
        self.assertEqual(assets["x.bin"]["metadata"]["checksum"], self.etags["other/x.bin"])

    def test_python_add_remote_under_logical_path(self):
        """add_remote(uri, logical_path=..., metadata=...): objects under it, metadata merged."""
        self.put()
        script = (
            "import ferry\n"
            "e = ferry.Experiment(project_name='p')\n"
            "a = ferry.Artifact('pyds', artifact_type='dataset')\n"
            "a.add_remote('s3://%s/data/sub/', logical_path='inputs', metadata={'team': 'x'})\n"
            "la = e.log_artifact(a).wait(timeout=60)\n"
            "print(sorted(x.logical_path for x in la.assets))\n"
            "got = la.download('pyout')\n"
            "print(open('pyout/inputs/deep/b0.csv').read().replace(chr(10), ' '))\n"
            "print(sorted(x.remote for x in got.assets))\n" % self.bucket)
        p = self.run_py(script)
        lines = p.stdout.strip().splitlines()
        self.assertEqual(eval(lines[0]),
                         ["inputs/a0.txt", "inputs/a1.txt", "inputs/a2.txt",
                          "inputs/deep/b0.csv", "inputs/deep/b1.csv"])
        self.assertEqual(lines[1].strip(), "x,y 1,2")  # fetched from the store by ferryd
        self.assertEqual(eval(lines[2]), [False] * 5)  # placed as files
        v, assets = self.get_assets("pyds")
        self.assertEqual(assets["inputs/deep/b0.csv"]["metadata"]["team"], "x")
        self.assertIs(assets["inputs/deep/b0.csv"]["metadata"]["synced"], True)

    def run_py(self, code, env=None):
        e = dict(self.daemon.env)
        e.update({"FERRY_LIB": ferrytest.LIBFERRY, "PYTHONPATH": PYDIR,
                  "PYTHONDONTWRITEBYTECODE": "1"})
        if os.environ.get("FERRY_TEST_PYTHON_PRELOAD"):  # an ASan build (tests/cmake/s3.cmake)
            e["LD_PRELOAD"] = os.environ["FERRY_TEST_PYTHON_PRELOAD"]
            e["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
        e.update(env or {})
        p = subprocess.run([ferrytest.PYTHON, "-c", code], env=e, cwd=self.tmp,
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            self.fail("python exited %d\nstdout: %s\nstderr: %s"
                      % (p.returncode, p.stdout, p.stderr))
        return p

    # ---- 3. more objects than max_synced_objects ----

    def test_over_max_synced_objects_is_one_unsynced_asset(self):
        self.put()
        uri = "s3://%s/data/" % self.bucket
        p = self.daemon.cli("log", "ds", "--remote", uri, "--max-synced-objects", "24",
                            "--wait", "--timeout", "60")
        self.assertIn("warning", p.stderr)
        self.assertIn("max_synced_objects (24)", p.stderr)
        v, assets = self.get_assets("ds")
        self.assertEqual(list(assets), ["remote"])  # the URI's last segment is empty
        a = assets["remote"]
        self.assertTrue(a["remote"])
        self.assertEqual(a["link"], uri)
        self.assertIs(a["metadata"]["synced"], False)
        self.assertIn("more than max_synced_objects (24)", a["metadata"]["error_message"])
        self.assertEqual(len(v["warnings"]), 1)
        self.assertIn("max_synced_objects", v["warnings"][0])
        # The CLI's get prints it, status lists it.
        self.assertIn("warning", self.daemon.cli("get", "ds").stderr)
        st = self.daemon.cli_json("status")
        self.assertTrue(any("(ds)" in w and "max_synced_objects" in w for w in st["warnings"]),
                        st["warnings"])
        self.assertIn("max_synced_objects", self.daemon.cli("status").stdout)
        # Exactly the limit is fine: 25 objects, 25 allowed.
        self.daemon.cli("log", "ds2", "--remote", uri, "--max-synced-objects", "25",
                        "--wait", "--timeout", "60")
        self.check_synced(self.get_assets("ds2")[1])

    def test_python_wait_logs_the_warning(self):
        self.put()
        script = (
            "import logging, ferry\n"
            "logging.basicConfig(level=logging.WARNING, format='%%(name)s %%(levelname)s "
            "%%(message)s')\n"
            "e = ferry.Experiment(project_name='p')\n"
            "a = ferry.Artifact('pyover')\n"
            "a.add_remote('s3://%s/data/', max_synced_objects=3)\n"
            "la = e.log_artifact(a)\n"
            "e.wait(timeout=60)\n"
            "la.refresh()\n"
            "print(la.assets[0].metadata['synced'], la.assets[0].metadata['error_message'])\n"
            % self.bucket)
        p = self.run_py(script)
        self.assertIn("ferry WARNING pyover", p.stderr)
        self.assertIn("more than max_synced_objects (3)", p.stderr)
        self.assertIn("False", p.stdout)

    # ---- 4. failures ----

    def test_wrong_credentials_fall_back_and_keep_the_secret(self):
        secret = "sekrit-" + uuid.uuid4().hex
        self.put()
        d = self.start_daemon(env=s3test.ferryd_env(
            self.server, AWS_ACCESS_KEY_ID="AKIAWRONGKEY", AWS_SECRET_ACCESS_KEY=secret,
            AWS_SESSION_TOKEN="token-" + secret), root=os.path.join(self.tmp, "wrong"))
        p = d.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket, "--wait",
                  "--timeout", "60")
        v = d.cli_json("get", "ds")
        (a,) = v["assets"]
        why = a["metadata"]["error_message"]
        self.assertIn("InvalidAccessKeyId", why)
        self.assertIn("AWS_ACCESS_KEY_ID in ferryd's environment", why)
        st = d.cli_json("status")
        self.assertTrue(any("InvalidAccessKeyId" in w for w in st["warnings"]))
        everything = p.stdout + p.stderr + json.dumps(v) + json.dumps(st) + d.log()
        self.assertNotIn(secret, everything)

    def test_missing_bucket_falls_back(self):
        self.daemon.cli("log", "ds", "--remote", "s3://no-such-bucket-%s/data/" % self.bucket,
                        "--wait", "--timeout", "60")
        v, assets = self.get_assets("ds")
        self.assertEqual(v["state"], "CLOSED")
        self.assertIn("NoSuchBucket", assets["remote"]["metadata"]["error_message"])
        self.assertIs(assets["remote"]["metadata"]["synced"], False)

    def test_no_credentials_fall_back_at_once(self):
        env = s3test.ferryd_env(self.server)
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        d = self.start_daemon(env=env, root=os.path.join(self.tmp, "nocreds"))
        d.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket, "--wait", "--timeout", "30")
        (a,) = d.cli_json("get", "ds")["assets"]
        self.assertIn("no AWS credentials", a["metadata"]["error_message"])

    def test_profile_in_aws_files(self):
        """AWS_PROFILE with ~/.aws/credentials and ~/.aws/config (endpoint_url, region)."""
        self.put()
        root = os.path.join(self.tmp, "profile")
        os.makedirs(os.path.join(root, ".aws"))
        with open(os.path.join(root, ".aws", "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id = WRONG\naws_secret_access_key = x\n\n"
                    "[ferrytest]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (s3test.ACCESS_KEY, s3test.SECRET_KEY))
        with open(os.path.join(root, ".aws", "config"), "w") as f:
            f.write("[profile ferrytest]\nregion = eu-west-1\nendpoint_url = %s\n"
                    % self.server.endpoint)
        d = self.start_daemon(env={"AWS_PROFILE": "ferrytest"}, root=root)  # HOME is root
        d.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket, "--wait", "--timeout", "60")
        v = d.cli_json("get", "ds")
        self.assertEqual(v["warnings"], [])
        self.assertEqual(len(v["assets"]), 25)
        # A profile that exists nowhere is said so.
        d.stop()
        d2 = self.start_daemon(env={"AWS_PROFILE": "nope"}, root=root)
        d2.cli("log", "ds2", "--remote", "s3://%s/data/" % self.bucket, "--wait",
               "--timeout", "60")
        (a,) = d2.cli_json("get", "ds2")["assets"]
        self.assertIn('AWS profile "nope"', a["metadata"]["error_message"])

    # ---- 5. downloads ----

    def test_download_is_byte_identical_and_a_change_is_reported(self):
        self.put()
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket,
                        "--wait", "--timeout", "60")
        out = os.path.join(self.tmp, "out")
        r = self.daemon.cli_json("download", "ds", out)
        written = [f for f in r["files"] if f["action"] == "written"]
        self.assertEqual(len(written), 25)
        for key, body in listed(self.objects).items():
            with open(os.path.join(out, key[len("data/"):]), "rb") as f:
                self.assertEqual(f.read(), body, key)
        # Another version's object changes before it is downloaded: reported, not delivered.
        self.daemon.cli("log", "other", "--remote", "s3://%s/other/" % self.bucket,
                        "--wait", "--timeout", "60")
        self.s3.put_object(Bucket=self.bucket, Key="other/x.bin", Body=b"changed!")
        out2 = os.path.join(self.tmp, "out2")
        p = self.daemon.cli("download", "other", out2, check=False)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("changed since it was logged", p.stderr)
        self.assertIn("s3://%s/other/x.bin" % self.bucket, p.stderr)
        self.assertFalse(os.path.exists(os.path.join(out2, "x.bin")))
        self.assertEqual(self.daemon.cli_json("cache")["blobs"], 25)  # nothing changed went in

    def test_cached_download_keeps_the_logged_bytes(self):
        """Once fetched, an object is served from the node's cache: the bytes that were logged."""
        self.put()
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data/sub/deep/" % self.bucket,
                        "--wait", "--timeout", "60")
        self.daemon.cli("download", "ds", os.path.join(self.tmp, "a"))
        self.s3.put_object(Bucket=self.bucket, Key="data/sub/deep/b0.csv", Body=b"new")
        self.daemon.cli("download", "ds", os.path.join(self.tmp, "b"))
        with open(os.path.join(self.tmp, "b", "b0.csv"), "rb") as f:
            self.assertEqual(f.read(), self.objects["data/sub/deep/b0.csv"])
        cache = self.daemon.cli_json("cache")
        self.assertEqual(cache["blobs"], 2)

    # ---- 6. plain remote assets ----

    def test_no_sync_and_other_schemes_stay_plain(self):
        self.put()
        before = self.server.requests()
        uris = ["s3://%s/data/" % self.bucket, "gs://bucket/prefix/model.pt",
                "https://example.invalid/file.bin"]
        args = ["log", "ds", "--no-sync"]
        for u in uris:
            args += ["--remote", u]
        self.daemon.cli(*(args + ["--wait", "--timeout", "60"]))
        # gs:// and https:// are never listed, even with sync on (the default).
        self.daemon.cli("log", "ds2", "--remote", uris[1], "--remote", uris[2],
                        "--wait", "--timeout", "60")
        for name in ("ds", "ds2"):
            v = self.daemon.cli_json("get", name)
            self.assertEqual(v["warnings"], [])
            for a in v["assets"]:
                self.assertTrue(a["remote"])
                self.assertIsNone(a["metadata"])
                self.assertIn(a["link"], uris)
            r = self.daemon.cli_json("download", name, os.path.join(self.tmp, name))
            self.assertTrue(all(f["action"] == "skipped" for f in r["files"]), r)
        self.assertEqual(self.server.requests(), before)  # nothing was listed
        # The Python binding: sync_mode=False.
        p = SyncLocalTest.run_py(self, (
            "import ferry\n"
            "e = ferry.Experiment(project_name='p')\n"
            "a = ferry.Artifact('pyplain')\n"
            "a.add_remote('s3://%s/data/', sync_mode=False)\n"
            "la = e.log_artifact(a).wait(timeout=60)\n"
            "print([(x.logical_path, x.metadata) for x in la.assets])\n" % self.bucket))
        self.assertEqual(eval(p.stdout.strip()), [("remote", None)])


class PaginationTest(S3Case):
    """2. A prefix with more objects than one listing page yields all of them."""

    extra_env = {"FERRY_S3_PAGE_SIZE": "10"}

    def test_pages_of_ten(self):
        self.put()
        before = self.server.requests()
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket,
                        "--wait", "--timeout", "60")
        self.check_synced(self.get_assets("ds")[1])
        self.assertIn("25 objects in 3 pages", self.daemon.log())
        # s3rver served the pages (its getBucket also answers ?versioning, hence >=).
        self.assertGreaterEqual(self.server.requests() - before, 3)


class DefaultPageTest(S3Case):
    """2. With S3's own page size (1000): 1005 objects take two pages."""

    def test_more_than_a_thousand(self):
        objects = {"big/k%04d" % i: b"%d" % i for i in range(1005)}
        self.put(objects)
        self.daemon.cli("log", "big", "--remote", "s3://%s/big/" % self.bucket,
                        "--wait", "--timeout", "120", timeout=180)
        v = self.daemon.cli_json("get", "big")
        self.assertEqual(v["assets_total"], 1005)
        self.assertIn("1005 objects in 2 pages", self.daemon.log())


class StoreDownTest(S3Case):
    """4. The store down: the version is logged at once, the listing retried until it is back."""

    extra_env = {"FERRY_MAX_ATTEMPTS": "1000"}

    def test_outage_then_delivery(self):
        self.put()
        self.server.stop()
        self.addCleanup(self._restart)
        p = self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket)
        self.assertIn("as job 1", p.stdout)  # acknowledged while the store is down
        item = wait_for(lambda: next((i for i in self.daemon.cli_json("ls")["items"]
                                      if i["attempts"] >= 2), None), 30, what="retries")
        self.assertIn("cannot reach %s" % self.server.endpoint, item["error"])
        self.assertEqual(item["state"], "queued")
        st = self.daemon.cli_json("status")
        self.assertIn("cannot reach", st["last_error"])
        v = self.daemon.cli_json("get", "ds")
        self.assertEqual(v["state"], "QUEUED")
        self.assertEqual([a["link"] for a in v["assets"]], ["s3://%s/data/" % self.bucket])
        self.assertEqual(self.daemon.cli("wait", "--timeout", "1", check=False).returncode, 1)
        self.server.start()  # same port, same data
        self.daemon.cli("wait", "--timeout", "60")
        self.check_synced(self.get_assets("ds")[1])

    def _restart(self):
        if self.server.proc is None:
            self.server.start()


class VersionedSigV4Test(FerryTestCase):
    """What s3rver cannot show: every request's SigV4 signature recomputed by an independent
    implementation (session token and payload hash signed), a versioned bucket listed with
    ListObjectVersions across pages (markers with spaces and UTF-8 signed as sent), version_id
    recorded, and downloads pinned to it."""

    def setUp(self):
        self.bucket = VersionedBucket("vbkt", "SIGAK", "sig/secret+Xy=", "FQoGZXIvYXdzE+/tok==",
                                      "eu-central-1").start()
        self.addCleanup(self.bucket.stop)
        self.daemon_env = {
            "AWS_ACCESS_KEY_ID": "SIGAK", "AWS_SECRET_ACCESS_KEY": "sig/secret+Xy=",
            "AWS_SESSION_TOKEN": "FQoGZXIvYXdzE+/tok==", "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_ENDPOINT_URL_S3": self.bucket.endpoint, "FERRY_S3_PAGE_SIZE": "2",
            "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "500"}
        super().setUp()

    def test_versioned_listing_signed_and_pinned(self):
        b = self.bucket
        b.put("models/a b+c.bin", b"old a")
        pinned = b.put("models/a b+c.bin", b"new a")
        b.put("models/\u00fc/x.txt", b"x1")
        b.put("models/gone.txt", b"g")
        b.put("models/gone.txt", None)  # deleted: its latest version is a delete marker
        b.put("models/z.txt", b"z")
        b.put("other/o.txt", b"o")
        self.daemon.cli("log", "vds", "--remote", "s3://vbkt/models/", "--wait", "--timeout", "60")
        v = self.daemon.cli_json("get", "vds")
        self.assertEqual(v["warnings"], [], v)
        assets = {a["logical_path"]: a for a in v["assets"]}
        self.assertEqual(sorted(assets), ["a b+c.bin", "z.txt", "\u00fc/x.txt"])
        meta = assets["a b+c.bin"]["metadata"]
        self.assertEqual(meta["version_id"], pinned)
        self.assertEqual(meta["checksum"], hashlib.md5(b"new a").hexdigest())
        self.assertEqual(meta["s3_path"], "s3://vbkt/models/a b+c.bin")
        pages = [r for r in b.requests if "versions" in r[1]]
        self.assertGreaterEqual(len(pages), 3)  # 5 versions and a marker, 2 a page
        # A newer version of the object: the download still gets the pinned one.
        b.put("models/a b+c.bin", b"newest")
        out = os.path.join(self.tmp, "out")
        self.daemon.cli("download", "vds", out)
        with open(os.path.join(out, "a b+c.bin"), "rb") as f:
            self.assertEqual(f.read(), b"new a")
        with open(os.path.join(out, "\u00fc", "x.txt"), "rb") as f:
            self.assertEqual(f.read(), b"x1")
        self.assertTrue(any("versionId=" + pinned in r[1] for r in b.requests))
        self.assertNotIn("sig/secret+Xy=", self.daemon.log())

    def test_a_bad_signature_is_refused(self):
        """The stand-in does check: the wrong secret is SignatureDoesNotMatch, a fallback."""
        self.bucket.put("models/z.txt", b"z")
        d = self.start_daemon(env=dict(self.daemon_env, AWS_SECRET_ACCESS_KEY="wrong"),
                              root=os.path.join(self.tmp, "bad"))
        d.cli("log", "vds", "--remote", "s3://vbkt/models/", "--wait", "--timeout", "60")
        (a,) = d.cli_json("get", "vds")["assets"]
        self.assertIn("SignatureDoesNotMatch", a["metadata"]["error_message"])


class SyncCometTest(CometTestCase):
    """1. and 5. on the Comet stand-in: isRemote uploads with link and metadata."""

    @classmethod
    def setUpClass(cls):
        s3test.require(cls)
        cls.server = s3test.S3rver().start()
        cls.s3 = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        cls.server.remove()

    def setUp(self):
        self.extra_env = s3test.ferryd_env(self.server, FERRY_RETRY_BASE_MS="100",
                                           FERRY_RETRY_CAP_MS="1000")
        super().setUp()
        self.bucket = "c" + uuid.uuid4().hex[:12]

    def test_prefix_becomes_remote_uploads(self):
        objects = tree()
        etags = s3test.put_tree(self.s3, self.bucket, objects)
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket,
                        "--wait", "--timeout", "60")
        (version,) = self.versions("ds")
        self.assertEqual(version["state"], "CLOSED")
        files = self.files_of(version)
        want = listed(objects)
        self.assertEqual(sorted(files), sorted(k[len("data/"):] for k in want))
        for key, body in want.items():
            f = files[key[len("data/"):]]
            uri = "s3://%s/%s" % (self.bucket, key)
            self.assertTrue(f["remote"])
            self.assertEqual(f["link"], uri)
            self.assertEqual(f["uploads"], 1)
            self.assertEqual(f["metadata"]["checksum"], etags[key])
            self.assertEqual(f["metadata"]["file_size"], len(body))
            self.assertEqual(f["metadata"]["s3_path"], uri)
            self.assertEqual(f["metadata"]["s3_platform"], "aws")
            self.assertIs(f["metadata"]["synced"], True)
        # 5. on Comet: get reads the metadata back from Comet, download fetches from S3.
        out = os.path.join(self.tmp, "out")
        r = self.daemon.cli_json("download", "ds", out)
        self.assertEqual(sum(f["action"] == "written" for f in r["files"]), 25)
        for key, body in want.items():
            with open(os.path.join(out, key[len("data/"):]), "rb") as fh:
                self.assertEqual(fh.read(), body)

    def test_fallback_is_one_remote_upload(self):
        s3test.put_tree(self.s3, self.bucket, tree())
        self.daemon.cli("log", "ds", "--remote", "s3://%s/data/" % self.bucket,
                        "--max-synced-objects", "2", "--wait", "--timeout", "60")
        (version,) = self.versions("ds")
        (f,) = version["assets"]
        self.assertTrue(f["remote"])
        self.assertEqual(f["link"], "s3://%s/data/" % self.bucket)
        self.assertIs(f["metadata"]["synced"], False)
        self.assertIn("max_synced_objects (2)", f["metadata"]["error_message"])
        v = self.daemon.cli_json("get", "ds")  # read back from Comet
        self.assertEqual(len(v["warnings"]), 1)


if __name__ == "__main__":
    logging.basicConfig()
    unittest.main()
