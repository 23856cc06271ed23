"""The Python binding (client/python/ferry) against a real ferryd.

In-process tests import the binding from the source tree; the tests about
memory, concurrency and a missing daemon run it in fresh Python processes
(FERRY_LIB and PYTHONPATH from the harness), like a training job would.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import uuid

import ferrytest

PYDIR = os.path.join(ferrytest.SOURCE_DIR, "client", "python")
sys.path.insert(0, PYDIR)

import ferry  # noqa: E402
from ferry import _native  # noqa: E402

MiB = 1 << 20

# Comet's documented example, verbatim but for the import line.
COMET_EXAMPLE = """\
from comet_ml import Artifact, Experiment

experiment = Experiment(project_name="proj")
artifact = Artifact(name="my-dataset", artifact_type="dataset", metadata={"rows": 3})
artifact.add("./data.csv")
experiment.log_artifact(artifact)
experiment.end()
"""

COMET_DOWNLOAD = """\
from comet_ml import Experiment

experiment = Experiment(project_name="proj")
logged = experiment.get_artifact("my-dataset")
logged.download("./out")
"""


def binding_env(daemon, **extra):
    env = dict(daemon.env)
    env["FERRY_LIB"] = ferrytest.LIBFERRY
    env["PYTHONPATH"] = PYDIR
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


class BindingTestCase(ferrytest.FerryTestCase):
    """A running ferryd; this process's binding talks to it (FERRY_SOCKET set)."""

    def setUp(self):
        super().setUp()
        self._saved_env = dict(os.environ)
        for key in list(os.environ):
            if key.startswith("FERRY_") or key.startswith("COMET_"):
                if key not in ("FERRY_BUILD_DIR", "FERRY_SOURCE_DIR"):
                    del os.environ[key]
        os.environ["FERRY_LIB"] = ferrytest.LIBFERRY
        os.environ["FERRY_SOCKET"] = self.daemon.socket
        self._cwd = os.getcwd()
        os.chdir(self.tmp)
        _native.disconnect()

    def tearDown(self):
        _native.disconnect()
        os.chdir(self._cwd)
        os.environ.clear()
        os.environ.update(self._saved_env)
        super().tearDown()

    def run_py(self, code, env=None, timeout=120, check=True):
        p = subprocess.run([ferrytest.PYTHON, "-c", code], env=env or binding_env(self.daemon),
                           cwd=self.tmp, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            self.fail("python exited %d\nstdout: %s\nstderr: %s"
                      % (p.returncode, p.stdout, p.stderr))
        return p

    def drain(self, timeout=60):
        self.daemon.cli("wait", "--timeout", str(timeout))

    def read(self, *parts):
        with open(os.path.join(self.tmp, *parts), "rb") as f:
            return f.read()


class CometExampleTest(BindingTestCase):
    def test_comet_example_runs_with_only_the_import_changed(self):
        data = b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n"
        self.write("data.csv", data)
        ported = COMET_EXAMPLE.replace("from comet_ml import", "from ferry import")
        self.assertEqual(ported.count("ferry"), 1)
        self.run_py(ported)
        self.drain()
        self.run_py(COMET_DOWNLOAD.replace("from comet_ml import", "from ferry import"))
        self.assertEqual(self.read("out", "data.csv"), data)
        got = self.daemon.cli_json("get", "my-dataset")
        self.assertEqual((got["name"], got["type"], got["version"], got["metadata"],
                          got["project"], got["state"]),
                         ("my-dataset", "dataset", "1.0.0", {"rows": 3}, "proj", "CLOSED"))
        self.assertEqual([(a["logical_path"], a["size"]) for a in got["assets"]],
                         [("data.csv", len(data))])

    def test_the_same_in_process_with_results(self):
        data = b"x,y\n1,2\n"
        self.write("data.csv", data)
        experiment = ferry.Experiment(project_name="proj")
        self.assertRegex(experiment.get_key(), "^[0-9a-f]{32}$")
        artifact = ferry.Artifact(name="my-dataset", artifact_type="dataset",
                                  metadata={"rows": 3})
        self.assertIsNone(artifact.download_local_path)
        artifact.add("./data.csv")
        logged = experiment.log_artifact(artifact)
        # Returned as soon as the daemon has it durably: a queue job, no version yet.
        self.assertIsInstance(logged, ferry.LoggedArtifact)
        self.assertIsInstance(logged.job, int)
        self.assertEqual((logged.name, logged.artifact_type, logged.source_experiment_key,
                          logged.size, logged.metadata), ("my-dataset", "dataset",
                                                          experiment.get_key(), len(data),
                                                          {"rows": 3}))
        experiment.end(wait=True, timeout=60)
        self.assertEqual(logged.wait(timeout=60).version, "1.0.0")
        self.assertEqual(logged.state, "CLOSED")
        got = experiment.get_artifact("my-dataset")
        self.assertEqual((got.name, got.version, got.artifact_type, got.metadata, got.size,
                          got.source_experiment_key, got.workspace),
                         ("my-dataset", "1.0.0", "dataset", {"rows": 3}, len(data),
                          experiment.get_key(), experiment.workspace))
        self.assertEqual([(a.logical_path, a.size, a.remote) for a in got.assets],
                         [("data.csv", len(data), False)])
        self.assertIsInstance(got.aliases, frozenset)
        downloaded = got.download("./out")
        self.assertIsInstance(downloaded, ferry.Artifact)
        self.assertEqual(downloaded.download_local_path, os.path.join(self.tmp, "out"))
        self.assertEqual(self.read("out", "data.csv"), data)
        self.assertEqual([a.local_path_or_data for a in downloaded.assets],
                         [os.path.join(self.tmp, "out", "data.csv")])
        # The spec forms of get_artifact.
        for spec, kw in (("my-dataset:1.0.0", {}), ("my-dataset", {"version_or_alias": "1.0.0"}),
                         ("%s/my-dataset:1.0.0" % experiment.workspace, {})):
            self.assertEqual(experiment.get_artifact(spec, **kw).version, "1.0.0")
        with self.assertRaises(ferry.NotFoundError) as cm:
            experiment.get_artifact("no-such-artifact")
        self.assertEqual(cm.exception.code, "not_found")
        self.assertIsInstance(cm.exception, LookupError)


class ArgumentRulesTest(BindingTestCase):
    def log_and_fetch(self, artifact, out="out"):
        experiment = ferry.Experiment()
        logged = experiment.log_artifact(artifact)
        logged.wait(timeout=60)
        got = experiment.get_artifact(artifact.name, version_or_alias=logged.version)
        got.download(os.path.join(self.tmp, out))
        return got

    def test_name_length(self):
        with self.assertRaises(ValueError) as cm:
            ferry.Artifact("n" * 101)
        self.assertIsInstance(cm.exception, ferry.FerryError)
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertIn("100", str(cm.exception))
        for bad in ("", "a/b", "a:b", "tab\there"):
            with self.assertRaises(ferry.InvalidArgumentError, msg=repr(bad)):
                ferry.Artifact(bad)
        with self.assertRaises(ValueError):
            ferry.Artifact(None)
        name = "n" * 100
        a = ferry.Artifact(name)
        a.add(b"ok", logical_path="ok.txt")
        got = self.log_and_fetch(a)
        self.assertEqual((got.name, got.version), (name, "1.0.0"))

    def test_metadata_must_be_a_json_dict(self):
        for bad in ([1, 2], "rows=3", 3, ("a", 1)):
            with self.assertRaises(ValueError, msg=repr(bad)) as cm:
                ferry.Artifact("m", metadata=bad)
            self.assertIsInstance(cm.exception, ferry.InvalidArgumentError)
            self.assertIn("dict", str(cm.exception))
        for bad in ({"x": object()}, {"x": float("nan")}, {"x": {1, 2}}):
            with self.assertRaises(ferry.InvalidArgumentError, msg=repr(bad)):
                ferry.Artifact("m", metadata=bad)
        a = ferry.Artifact("m")
        self.assertEqual(a.metadata, {})
        with self.assertRaises(ValueError):
            a.add(b"x", logical_path="x", metadata=["not", "a", "dict"])
        with self.assertRaises(ValueError):
            a.add_remote("https://example.com/x", metadata="nope")
        self.assertEqual(a.assets, [])
        # Metadata changed after construction is checked again at log time.
        a.add(b"x", logical_path="x")
        a.metadata["bad"] = object()
        with self.assertRaises(ferry.InvalidArgumentError):
            ferry.Experiment().log_artifact(a)
        a.metadata["bad"] = {"nested": [1, 2.5, None, True]}
        got = self.log_and_fetch(a)
        self.assertEqual(got.metadata, {"bad": {"nested": [1, 2.5, None, True]}})

    def test_version_must_be_strict_semver(self):
        for bad in ("1", "1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0+", "1.0.0.0", " 1.0.0",
                    "latest"):
            with self.assertRaises(ValueError, msg=bad) as cm:
                ferry.Artifact("v", version=bad)
            self.assertEqual(cm.exception.code, "invalid_argument")
        for good in ("0.0.1", "1.2.3-rc.1", "1.2.3-rc.1+build.5", "10.20.30"):
            self.assertEqual(ferry.Artifact("v", version=good).version, good)
        a = ferry.Artifact("v", version="2.5.14")
        a.add(b"v", logical_path="v")
        self.assertEqual(self.log_and_fetch(a).version, "2.5.14")
        # The same version again: refused by the daemon, ValueError-compatible.
        b = ferry.Artifact("v", version="2.5.14")
        with self.assertRaises(ferry.ConflictError) as cm:
            ferry.Experiment().log_artifact(b)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.code, "exists")
        # No version: the next major.
        c = ferry.Artifact("v")
        self.assertIsNone(c.version)
        self.assertEqual(self.log_and_fetch(c, "out2").version, "3.0.0")

    def test_aliases_and_tags_become_sets(self):
        a = ferry.Artifact("labels", aliases=["best", "prod", "best"], version_tags=("t1", "t2"))
        self.assertEqual((type(a.aliases), a.aliases), (set, {"best", "prod"}))
        self.assertEqual((type(a.version_tags), a.version_tags), (set, {"t1", "t2"}))
        self.assertEqual(ferry.Artifact("labels", aliases="best").aliases, {"best"})
        self.assertEqual(ferry.Artifact("labels").aliases, set())
        with self.assertRaises(ValueError):
            ferry.Artifact("labels", aliases=[1])
        with self.assertRaises(ValueError):
            ferry.Artifact("labels", version_tags=["x" * 101])
        a.aliases.add("extra")
        got = self.log_and_fetch(a)
        self.assertTrue({"best", "prod", "extra"} <= got.aliases, got.aliases)
        self.assertEqual(got.version_tags, {"t1", "t2"})
        self.assertEqual(ferry.Experiment().get_artifact("labels:prod").version, "1.0.0")

    def test_duplicate_logical_path_raises_unless_overwrite(self):
        one = self.write("one.txt", b"first")
        two = self.write("sub/one.txt", b"second")
        a = ferry.Artifact("dup")
        a.add(one)
        a.add(b"zzz", logical_path="z.bin")
        with self.assertRaises(ValueError) as cm:
            a.add(two)
        self.assertIsInstance(cm.exception, ferry.ConflictError)
        self.assertIn("one.txt", str(cm.exception))
        with self.assertRaises(ferry.ConflictError):
            a.add(io.BytesIO(b"x"), logical_path="one.txt")
        with self.assertRaises(ferry.ConflictError):
            a.add_remote("https://example.com/files/one.txt")
        self.assertEqual([x.logical_path for x in a.assets], ["one.txt", "z.bin"])
        a.add(two, overwrite=True)
        self.assertEqual([(x.logical_path, x.local_path_or_data) for x in a.assets],
                         [("one.txt", two), ("z.bin", b"zzz")])
        self.log_and_fetch(a)
        self.assertEqual(self.read("out", "one.txt"), b"second")
        # Data replacing a file, at the same place.
        b = ferry.Artifact("dup2")
        b.add(one)
        b.add(io.BytesIO(b"third"), logical_path="one.txt", overwrite=True)
        self.log_and_fetch(b, "out2")
        self.assertEqual(self.read("out2", "one.txt"), b"third")

    def test_file_like_bytes_and_text(self):
        a = ferry.Artifact("mem")
        raw = io.BytesIO(b"\x00\x01binary\xff" * 1000)
        raw.read(3)  # read from the current position, as any reader would
        a.add(raw, logical_path="bin/b.dat")
        a.add(io.StringIO("héllo wörld\n" * 10), logical_path="t.txt")
        a.add(b"raw bytes", logical_path="r.bin")
        a.add(bytearray(b"array"), logical_path="a.bin")
        a.add(io.BytesIO(b"default name"))
        self.assertEqual([(x.logical_path, x.size) for x in a.assets],
                         [("bin/b.dat", 8997), ("t.txt", len("héllo wörld\n".encode()) * 10),
                          ("r.bin", 9), ("a.bin", 5), ("data", 12)])
        raw.close()  # staged at add() time: the object is not needed any more
        self.log_and_fetch(a)
        self.assertEqual(self.read("out", "bin", "b.dat"), (b"\x00\x01binary\xff" * 1000)[3:])
        self.assertEqual(self.read("out", "t.txt"), "héllo wörld\n".encode() * 10)
        self.assertEqual(self.read("out", "r.bin"), b"raw bytes")
        self.assertEqual(self.read("out", "a.bin"), b"array")
        self.assertEqual(self.read("out", "data"), b"default name")
        # copy_to_tmp=False: read at log time, so later changes are what is logged.
        late = io.BytesIO(b"before")
        b = ferry.Artifact("late")
        b.add(late, logical_path="l.txt", copy_to_tmp=False)
        late.seek(0)
        late.write(b"AFTER!")
        self.log_and_fetch(b, "out2")
        self.assertEqual(self.read("out2", "l.txt"), b"AFTER!")
        with self.assertRaises(TypeError):
            ferry.Artifact("x").add(12345)
        with self.assertRaises(FileNotFoundError) as cm:
            ferry.Artifact("x").add(os.path.join(self.tmp, "missing.csv"))
        self.assertIsInstance(cm.exception, ferry.FerryError)
        for bad in ("/abs", "../up", "a/../../b"):
            with self.assertRaises(ValueError, msg=bad):
                ferry.Artifact("x").add(b"x", logical_path=bad)

    def test_same_artifact_logged_twice(self):
        a = ferry.Artifact("twice")
        a.add(io.BytesIO(b"seekable"), logical_path="s")
        experiment = ferry.Experiment()
        first = experiment.log_artifact(a)
        second = experiment.log_artifact(a)  # staged data re-read from the object
        experiment.end(wait=True, timeout=60)
        # (Versions are assigned at delivery, which need not follow log order.)
        self.assertEqual(sorted((first.wait().version, second.wait().version)),
                         ["1.0.0", "2.0.0"])
        for logged in (first, second):
            out = os.path.join(self.tmp, "out" + logged.version)
            logged.download(out)
            self.assertEqual(self.read(out, "s"), b"seekable")

    def test_directory(self):
        self.write("tree/a.txt", b"A")
        self.write("tree/sub/b.txt", b"BB")
        self.write("tree/sub/deeper/c.txt", b"CCC")
        a = ferry.Artifact("dir")
        a.add(os.path.join(self.tmp, "tree"))
        self.assertEqual([(x.logical_path, x.size) for x in a.assets],
                         [("a.txt", 1), ("sub/b.txt", 2), ("sub/deeper/c.txt", 3)])
        b = ferry.Artifact("dir2")
        b.add("tree", logical_path="prefix")
        self.assertEqual([x.logical_path for x in b.assets],
                         ["prefix/a.txt", "prefix/sub/b.txt", "prefix/sub/deeper/c.txt"])
        self.assertEqual(b.assets[0].local_path_or_data, os.path.join(self.tmp, "tree", "a.txt"))
        with self.assertRaises(ferry.ConflictError):
            b.add("tree/sub", logical_path="prefix/sub")
        self.assertEqual(len(b.assets), 3)  # all or nothing
        self.log_and_fetch(b)
        self.assertEqual(self.read("out", "prefix", "sub", "deeper", "c.txt"), b"CCC")
        self.assertEqual(self.read("out", "prefix", "a.txt"), b"A")

    def test_remote_assets(self):
        a = ferry.Artifact("remote")
        a.add_remote("https://example.com/data/train.tgz?sig=1", metadata={"k": 1})
        a.add_remote("https://example.com", logical_path=None, asset_type="model")
        a.add_remote("s3://bucket/prefix/obj", logical_path="named", sync_mode=False)
        self.assertEqual([(x.logical_path, x.remote, x.link) for x in a.assets],
                         [("train.tgz", True, "https://example.com/data/train.tgz?sig=1"),
                          ("remote", True, "https://example.com"),
                          ("named", True, "s3://bucket/prefix/obj")])
        self.assertEqual(a.assets[1].asset_type, "model")
        got = self.log_and_fetch(a)
        self.assertEqual(sorted((x.logical_path, x.remote, x.link, x.metadata)
                                for x in got.assets),
                         [("named", True, "s3://bucket/prefix/obj", None),
                          ("remote", True, "https://example.com", None),
                          ("train.tgz", True, "https://example.com/data/train.tgz?sig=1",
                           {"k": 1})])

    def test_repr_str_and_attributes(self):
        a = ferry.Artifact("x", artifact_type="dataset")
        self.assertEqual(repr(a), "Artifact(name='x', artifact_type='dataset', version=None)")
        self.assertEqual(str(a), "Artifact('x', artifact_type='dataset')")
        self.assertEqual((a.name, a.artifact_type, a.version, a.download_local_path, a.assets),
                         ("x", "dataset", None, None, []))
        b = ferry.Artifact("y", version="1.2.3")
        self.assertEqual(repr(b), "Artifact(name='y', artifact_type=None, version='1.2.3')")

    def test_download_overwrite_strategies(self):
        a = ferry.Artifact("ow")
        a.add(b"from ferry", logical_path="f.txt")
        experiment = ferry.Experiment()
        experiment.log_artifact(a).wait(timeout=60)
        logged = experiment.get_artifact("ow")
        target = os.path.join(self.tmp, "dl")
        self.write("dl/f.txt", b"local edit")
        for strategy in (False, "FAIL", "fail"):
            with self.assertRaises(ferry.ConflictError, msg=strategy):
                logged.download(target, overwrite_strategy=strategy)
            self.assertEqual(self.read("dl", "f.txt"), b"local edit")
        logged.download(target, overwrite_strategy="PRESERVE")
        self.assertEqual(self.read("dl", "f.txt"), b"local edit")
        logged.download(target, overwrite_strategy=True)
        self.assertEqual(self.read("dl", "f.txt"), b"from ferry")
        self.write("dl/f.txt", b"again")
        logged.download(target, overwrite_strategy="OVERWRITE")
        self.assertEqual(self.read("dl", "f.txt"), b"from ferry")
        logged.download(target)  # identical file: kept, no error
        with self.assertRaises(ValueError):
            logged.download(target, overwrite_strategy="SOMETIMES")
        # No path: the current directory.
        os.makedirs(os.path.join(self.tmp, "cwd"))
        os.chdir(os.path.join(self.tmp, "cwd"))
        self.assertEqual(logged.download().download_local_path, os.path.join(self.tmp, "cwd"))
        self.assertEqual(self.read("cwd", "f.txt"), b"from ferry")

    def test_existing_experiment_and_env_key(self):
        first = ferry.Experiment(project_name="p1")
        again = ferry.ExistingExperiment(previous_experiment=first.get_key())
        self.assertEqual(again.get_key(), first.get_key())
        key = uuid.uuid4().hex + "abc"
        os.environ["FERRY_EXPERIMENT_KEY"] = key
        self.assertEqual(ferry.Experiment().get_key(), key)
        self.assertEqual(ferry.ExistingExperiment().get_key(), key)
        del os.environ["FERRY_EXPERIMENT_KEY"]
        os.environ["COMET_EXPERIMENT_KEY"] = key
        self.assertEqual(ferry.Experiment(log_code=False, auto_metric_logging=False).get_key(),
                         key)
        del os.environ["COMET_EXPERIMENT_KEY"]
        self.assertNotEqual(ferry.Experiment().get_key(), key)
        with self.assertRaises(ValueError):
            ferry.Experiment(experiment_key="short")
        with self.assertRaises(ValueError):
            ferry.ExistingExperiment()

    def test_threads_each_get_their_own_connection(self):
        experiment = ferry.Experiment()
        errors, jobs = [], []

        def worker(i):
            try:
                a = ferry.Artifact("threaded")
                a.add(io.BytesIO(b"thread %d" % i), logical_path="t.txt")
                jobs.append(experiment.log_artifact(a).job)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(set(jobs)), 6)
        ferry.wait(jobs, timeout=60)
        versions = sorted(ferry.get_artifact("threaded:%d.0.0" % n).version for n in range(1, 7))
        self.assertEqual(versions, ["%d.0.0" % n for n in range(1, 7)])

    def test_reconnects_after_daemon_restart(self):
        experiment = ferry.Experiment()
        a = ferry.Artifact("restart")
        a.add(b"one", logical_path="x")
        experiment.log_artifact(a).wait(timeout=60)
        b = ferry.Artifact("restart")
        b.add(b"two", logical_path="x")  # staged before the restart
        self.daemon.stop()
        self.daemon = self.start_daemon()
        second = experiment.log_artifact(b)  # the old connection is dead: probed, reconnected
        experiment.end(wait=True, timeout=60)
        self.assertEqual(second.wait().version, "2.0.0")
        self.assertEqual(len(self.daemon.cli_json("ls", "--all")["items"]), 2)
        second.download(os.path.join(self.tmp, "out"))
        self.assertEqual(self.read("out", "x"), b"two")
        # Repeatable requests reconnect too.
        self.daemon.stop()
        self.daemon = self.start_daemon()
        self.assertEqual(experiment.get_artifact("restart").version, "2.0.0")


class LargeDataTest(BindingTestCase):
    SIZE = 1 << 30
    CHILD = textwrap.dedent("""\
        import hashlib, io, json, resource, sys
        from ferry import Artifact, Experiment

        SIZE = int(sys.argv[1])
        PERIOD = (1 << 20) + 7  # not a multiple of any chunk size
        PATTERN = b"".join(hashlib.sha256(i.to_bytes(8, "little")).digest()
                           for i in range(PERIOD // 32 + 1))[:PERIOD] * 2

        class Generated(io.RawIOBase):
            '''SIZE deterministic bytes, produced on demand and hashed as they are read.'''
            def __init__(self):
                self.pos = 0
                self.sha = hashlib.sha256()
            def readable(self):
                return True
            def readinto(self, b):
                n = min(len(b), SIZE - self.pos, PERIOD)
                if n <= 0:
                    return 0
                off = self.pos % PERIOD
                b[:n] = PATTERN[off:off + n]
                self.sha.update(b[:n])
                self.pos += n
                return n

        def hwm_kib():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])

        before = hwm_kib()
        experiment = Experiment()
        artifact = Artifact("big", artifact_type="model")
        stream = Generated()
        artifact.add(stream, logical_path="weights.bin")
        logged = experiment.log_artifact(artifact)
        print(json.dumps({"before_kib": before, "hwm_kib": hwm_kib(),
                          "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          "sha256": stream.sha.hexdigest(), "read": stream.pos,
                          "job": logged.job, "size": logged.size}))
        """)

    def test_one_gib_file_like_with_bounded_memory(self):
        if "libasan" in os.environ.get("LD_PRELOAD", ""):
            self.skipTest("under ASan the allocator's quarantine and shadow memory make RSS "
                          "meaningless; the release build measures it")
        started = time.monotonic()
        p = self.run_py(self.CHILD.replace("sys.argv[1]", str(self.SIZE)), timeout=300)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual((r["read"], r["size"]), (self.SIZE, self.SIZE))
        self.assertLess(r["hwm_kib"], 100 * 1024, r)
        self.assertLess(r["maxrss_kib"], 100 * 1024, r)
        self.drain(timeout=240)
        logged = ferry.get_artifact("big")
        self.assertEqual((logged.version, logged.size), ("1.0.0", self.SIZE))
        out = os.path.join(self.tmp, "out")
        logged.download(out)
        self.assertEqual(os.path.getsize(os.path.join(out, "weights.bin")), self.SIZE)
        self.assertEqual(sha256_file(os.path.join(out, "weights.bin")), r["sha256"])
        sys.stderr.write("[1 GiB: peak RSS %d KiB, %.1f s] " % (r["hwm_kib"],
                                                               time.monotonic() - started))


class ConcurrentProcessesTest(BindingTestCase):
    N = 8
    CHILD = textwrap.dedent("""\
        import json, os, sys, time
        from ferry import Artifact, Experiment

        rank, go = int(sys.argv[1]), sys.argv[2]
        experiment = Experiment(project_name="ranks")  # key from FERRY_EXPERIMENT_KEY
        artifact = Artifact("shared-model", artifact_type="model", metadata={"rank": rank})
        with open("rank%d.bin" % rank, "wb") as f:
            f.write(b"rank %d " % rank * 1000)
        artifact.add("rank%d.bin" % rank, logical_path="weights.bin")
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.002)
        logged = experiment.log_artifact(artifact)
        experiment.end()
        print(json.dumps({"rank": rank, "key": experiment.get_key(), "job": logged.job}))
        """)

    def test_eight_processes_share_one_experiment(self):
        key = uuid.uuid4().hex
        env = binding_env(self.daemon, FERRY_EXPERIMENT_KEY=key)
        go = os.path.join(self.tmp, "go")
        procs = [subprocess.Popen([ferrytest.PYTHON, "-c", self.CHILD, str(r), go], env=env,
                                  cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for r in range(self.N)]
        try:
            time.sleep(0.5)  # let them import and connect, then release them together
            open(go, "w").close()
            results = []
            for p in procs:
                out, err = p.communicate(timeout=120)
                self.assertEqual(p.returncode, 0, err)
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        self.assertEqual({r["key"] for r in results}, {key})
        self.assertEqual(len({r["job"] for r in results}), self.N)
        self.drain(timeout=120)
        items = [i for i in self.daemon.cli_json("ls", "--all")["items"]
                 if i["experiment"] == key]
        self.assertEqual(len(items), self.N, items)
        self.assertEqual({i["state"] for i in items}, {"done"})
        self.assertEqual({i["name"] for i in items}, {"shared-model"})
        self.assertEqual(sorted(i["version"] for i in items),
                         sorted("%d.0.0" % n for n in range(1, self.N + 1)))
        self.assertEqual(sorted(i["job"] for i in items), sorted(r["job"] for r in results))
        # Each version holds exactly one rank's data and metadata.
        ranks = set()
        for n in range(1, self.N + 1):
            got = ferry.get_artifact("shared-model:%d.0.0" % n)
            self.assertEqual(got.source_experiment_key, key)
            rank = got.metadata["rank"]
            got.download(os.path.join(self.tmp, "v%d" % n))
            self.assertEqual(self.read("v%d" % n, "weights.bin"), b"rank %d " % rank * 1000)
            ranks.add(rank)
        self.assertEqual(ranks, set(range(self.N)))


class NoDaemonTest(BindingTestCase):
    def test_daemon_not_running_says_how_to_start_it(self):
        missing = os.path.join(self.tmp, "nowhere", "ferryd.sock")
        os.environ["FERRY_SOCKET"] = missing
        _native.disconnect()
        with self.assertRaises(ferry.ConnectError) as cm:
            ferry.Experiment()
        e = cm.exception
        self.assertIsInstance(e, ferry.FerryError)
        self.assertIsInstance(e, ConnectionError)
        self.assertEqual(e.code, "connect_failed")
        self.assertIn("ferryd is not running", str(e))
        self.assertIn(missing, str(e))
        self.assertIn("start it with `ferryd`", str(e))
        # The same for a script: the last line of the traceback is the sentence.
        env = binding_env(self.daemon, FERRY_SOCKET=missing)
        p = self.run_py("import ferry\nferry.Experiment()\n", env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        last = p.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("ferry.errors.ConnectError: ferryd is not running"), last)
        self.assertIn("start it with", last)
        # A socket file nobody listens on (a crashed daemon) is explained the same way.
        self.daemon.kill9()
        os.environ["FERRY_SOCKET"] = self.daemon.socket
        with self.assertRaises(ferry.ConnectError) as cm:
            ferry.Experiment()
        self.assertIn("start it with", str(cm.exception))

    def test_data_added_while_down_is_held_by_the_binding(self):
        self.daemon.stop()
        a = ferry.Artifact("offline-add")
        stream = io.BytesIO(b"added while ferryd was down")
        a.add(stream, logical_path="d.txt")  # copy_to_tmp: copied now, no daemon needed
        stream.seek(0, io.SEEK_END)
        stream.write(b", and after")  # too late: not part of the asset
        late = io.BytesIO(b"late")
        a.add(late, logical_path="late.txt", copy_to_tmp=False)  # read at log time
        late.seek(0, io.SEEK_END)
        late.write(b", and this counts")
        self.daemon = self.start_daemon()
        experiment = ferry.Experiment()
        experiment.log_artifact(a).wait(timeout=60)
        experiment.get_artifact("offline-add").download(os.path.join(self.tmp, "out"))
        self.assertEqual(self.read("out", "d.txt"), b"added while ferryd was down")
        self.assertEqual(self.read("out", "late.txt"), b"late, and this counts")

    def test_missing_library(self):
        env = binding_env(self.daemon, FERRY_LIB=os.path.join(self.tmp, "no", "libferry.so"))
        p = self.run_py("import ferry\nferry.Artifact('x')\n", env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        last = p.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("ferry.errors.LibraryNotFoundError: cannot load libferry"),
                        last)
        self.assertIn("FERRY_LIB", last)


class PackagingTest(unittest.TestCase):
    def test_pip_install_offline(self):
        if subprocess.run([ferrytest.PYTHON, "-m", "pip", "--version"],
                          capture_output=True).returncode != 0:
            self.skipTest("pip is not installed")
        tmp = tempfile.mkdtemp(prefix="ferry-pip-")
        try:
            env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                       PYTHONDONTWRITEBYTECODE="1")
            p = subprocess.run([ferrytest.PYTHON, "-m", "pip", "install", "--no-index",
                                "--target", os.path.join(tmp, "site"), PYDIR],
                               env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            env = dict(env, PYTHONPATH=os.path.join(tmp, "site"), FERRY_LIB=ferrytest.LIBFERRY)
            p = subprocess.run([ferrytest.PYTHON, "-c",
                                "import ferry, os; print(ferry.__file__, ferry.__version__); "
                                "print(ferry.Artifact('x', version='1.0.0').version)"],
                               env=env, capture_output=True, text=True, timeout=60, cwd=tmp)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.split()
            self.assertTrue(lines[0].startswith(os.path.join(tmp, "site", "ferry")), lines)
            self.assertEqual(lines[1:], ["0.1.0", "1.0.0"])
            # No build litter in the source tree.
            litter = [x for x in os.listdir(PYDIR)
                      if x in ("build", "dist") or x.endswith(".egg-info")]
            self.assertEqual(litter, [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
