"""Every validation rule of artifact.log: a clear error code and nothing stored (acceptance 5)."""

import json
import os
import unittest

from ferrytest import FerryTestCase


class Validation(FerryTestCase):
    def setUp(self):
        super().setUp()
        self.c = self.daemon.raw()
        self.c.hello()
        self.f = self.write("f.txt", "content")

    def tearDown(self):
        self.c.close()
        super().tearDown()

    def asset(self, **kw):
        a = {"logical_path": "f.txt", "file": self.f}
        a.update(kw)
        return a

    def assertRefused(self, code, needle=None, **fields):
        before = self.stored()
        spool_before = self.spool_files()
        rep = self.c.request("artifact.log", **fields)
        self.assertFalse(rep["ok"], "accepted: %r" % (fields,))
        self.assertEqual(rep["error"]["code"], code, rep["error"]["message"])
        self.assertTrue(rep["error"]["message"])
        if needle:
            self.assertIn(needle, rep["error"]["message"])
        self.assertEqual(self.stored(), before, "something was stored for %r" % (fields,))
        # Nothing new (a delivered version's files may go meanwhile: their removal is deferred).
        self.assertEqual(sorted(set(self.spool_files()) - set(spool_before)), [],
                         "a spool file was left behind")
        return rep

    def stored(self):
        return [(i["job"], i["name"]) for i in self.c.request("ls", state="all")["items"]]

    def spool_files(self):
        spool = os.path.join(self.daemon.state_dir, "spool")
        return sorted(n for n in os.listdir(spool) if n != "staging")

    def test_names(self):
        self.assertRefused("invalid_argument", "empty", name="", assets=[self.asset()])
        self.assertRefused("invalid_argument", "101", name="n" * 101, assets=[self.asset()])
        self.assertRefused("invalid_argument", "'/'", name="a/b", assets=[self.asset()])
        self.assertRefused("invalid_argument", "name", assets=[self.asset()])
        ok = self.c.request("artifact.log", name="n" * 100, assets=[self.asset()])
        self.assertTrue(ok["ok"], ok)

    def test_metadata_must_be_an_object(self):
        for bad in ([1], "text", 3, True):
            self.assertRefused("invalid_argument", "metadata", name="m", metadata=bad,
                               assets=[self.asset()])
        self.assertRefused("invalid_argument", "metadata", name="m",
                           assets=[self.asset(metadata=[1])])

    def test_versions_must_be_strict_semver(self):
        for bad in ("1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0", "1.0.0-01", " 1.0.0"):
            self.assertRefused("invalid_argument", "semver", name="v", version=bad,
                               assets=[self.asset()])
        for good in ("1.0.0", "0.0.1-rc.1", "2.3.4+build.5"):
            rep = self.c.request("artifact.log", name="v", version=good, assets=[self.asset()])
            self.assertTrue(rep["ok"], rep)

    def test_existing_version_is_refused_queued_or_delivered(self):
        self.c.request("pause", paused=True)
        self.assertTrue(self.c.request("artifact.log", name="e", version="1.2.3",
                                       assets=[self.asset()])["ok"])
        self.assertRefused("exists", "1.2.3", name="e", version="1.2.3", assets=[self.asset()])
        self.c.request("pause", paused=False)
        self.daemon.cli("wait", "--timeout", "30")
        self.assertRefused("exists", "1.2.3", name="e", version="1.2.3", assets=[self.asset()])

    def test_duplicate_logical_path(self):
        other = self.write("g.txt", "other")
        self.assertRefused("exists", "f.txt", name="d",
                           assets=[self.asset(), self.asset(file=other)])
        rep = self.c.request("artifact.log", name="d",
                             assets=[self.asset(), self.asset(file=other, overwrite=True)])
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["assets"], 1)
        self.daemon.cli("wait", "--timeout", "30")
        out = os.path.join(self.tmp, "out")
        self.daemon.cli("download", "d", out)
        with open(os.path.join(out, "f.txt")) as fh:
            self.assertEqual(fh.read(), "other")  # the later one replaced the earlier

    def send_fds(self, descriptors, **fields):
        """artifact.log with raw descriptors (the harness's "file" opening bypassed)."""
        rid = self.c.next_id
        self.c.next_id += 1
        msg = dict(fields, id=rid, op="artifact.log")
        if descriptors and "fds" not in msg:
            msg["fds"] = len(descriptors)
        self.c.send_frame(json.dumps(msg), descriptors)
        return self.c.read_frame()

    def assertRefusedFds(self, code, needle, descriptors, **fields):
        before = self.stored()
        rep = self.send_fds(descriptors, **fields)
        for fd in descriptors:
            os.close(fd)
        self.assertIsNotNone(rep, "ferryd closed the connection")
        self.assertFalse(rep["ok"], "accepted: %r" % (fields,))
        self.assertEqual(rep["error"]["code"], code, rep["error"]["message"])
        if needle:
            self.assertIn(needle, rep["error"]["message"])
        self.assertEqual(self.stored(), before)

    def test_descriptors_that_are_not_regular_files(self):
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        for opened in (os.open(self.tmp, os.O_RDONLY), os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)):
            self.assertRefusedFds("invalid_argument", "regular", [opened], name="x",
                                  assets=[{"logical_path": "a", "fd": 0}])

    def test_paths_are_never_taken(self):
        # A daemon that opened paths would read with its own rights: protocol 2 has no "file".
        self.assertRefused("invalid_argument", "path", name="x",
                           assets=[{"logical_path": "a", "path": self.f}])
        before = self.stored()
        rep = self.send_fds([], name="x", assets=[{"logical_path": "a", "file": self.f}])
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"]["code"], "invalid_argument")
        self.assertEqual(self.stored(), before)

    def test_descriptor_references(self):
        # An index with no descriptor, a descriptor named twice.
        self.assertRefusedFds("invalid_argument", "descriptor", [os.open(self.f, os.O_RDONLY)],
                              name="x", assets=[{"logical_path": "a", "fd": 1}])
        self.assertRefusedFds("invalid_argument", "descriptor", [os.open(self.f, os.O_RDONLY)],
                              name="x", assets=[{"logical_path": "a", "fd": 0},
                                                {"logical_path": "b", "fd": 0}])
        self.assertRefusedFds("invalid_argument", "descriptor", [], name="x",
                              assets=[{"logical_path": "a", "fd": 0}])

    def test_a_frame_whose_fds_do_not_match_closes_the_connection(self):
        fd = os.open(self.f, os.O_RDONLY)
        rep = self.send_fds([fd], name="x", fds=2, assets=[{"logical_path": "a", "fd": 0}])
        os.close(fd)
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"]["code"], "protocol_error")
        self.assertIsNone(self.c.read_frame())  # closed
        self.c = self.daemon.raw()
        self.c.hello()
        self.assertEqual(self.stored(), [])

    def test_bad_logical_paths(self):
        for bad in ("../x", "/abs", "a/../b", "a//b", "", ".", "a\\b"):
            self.assertRefused("invalid_argument", None, name="x",
                               assets=[self.asset(logical_path=bad)])

    def test_wrong_types_and_unknown_fields(self):
        self.assertRefused("invalid_argument", "string", name=5, assets=[self.asset()])
        self.assertRefused("invalid_argument", "aliases", name="t", aliases="x")
        self.assertRefused("invalid_argument", "aliases", name="t", aliases=[1])
        self.assertRefused("invalid_argument", "assets", name="t", assets={})
        self.assertRefused("invalid_argument", "overwrite", name="t",
                           assets=[self.asset(overwrite="yes")])
        self.assertRefused("invalid_argument", "unknown field", name="t", colour="blue")
        self.assertRefused("invalid_argument", "exactly one", name="t",
                           assets=[self.asset(remote="s3://b/k")])
        self.assertRefused("invalid_argument", "experiment", name="t", experiment="short")
        self.assertRefused("invalid_argument", "staged", name="t",
                           assets=[{"logical_path": "s", "staged": "0" * 32}])

    def test_unknown_op(self):
        rep = self.c.request("artifact.frobnicate")
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"]["code"], "unknown_op")
        self.assertIn("artifact.frobnicate", rep["error"]["message"])

    def test_other_ops_validate_too(self):
        for op, fields, code in (("wait", {"timeout_ms": "soon"}, "invalid_argument"),
                                 ("retry", {}, "invalid_argument"),
                                 ("retry", {"job": 12345}, "not_found"),
                                 ("ls", {"state": "bogus"}, "invalid_argument"),
                                 ("get", {"name": "a:"}, "invalid_argument"),
                                 ("download.open", {"name": "a", "dir": "/tmp"},
                                  "invalid_argument"),
                                 ("download.open", {"name": "a:"}, "invalid_argument"),
                                 ("download.files", {"token": "x", "from": 0, "count": 1},
                                  "not_found"),
                                 ("download.files", {"token": "x"}, "invalid_argument"),
                                 ("artifact.add", {"token": "nope"}, "not_found"),
                                 ("artifact.commit", {"token": "nope"}, "not_found"),
                                 ("artifact.begin", {"name": "a/b"}, "invalid_argument"),
                                 ("experiment.create", {"key": "bad!"}, "invalid_argument")):
            rep = self.c.request(op, **fields)
            self.assertFalse(rep["ok"], (op, fields))
            self.assertEqual(rep["error"]["code"], code, (op, fields, rep))


if __name__ == "__main__":
    unittest.main()
