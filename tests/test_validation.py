"""Every validation rule of artifact.log: a clear error code and nothing stored (acceptance 5)."""

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
        self.assertEqual(self.spool_files(), spool_before, "a spool file was left behind")
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

    def test_missing_or_unreadable_files(self):
        self.assertRefused("not_found", "nope", name="x",
                           assets=[self.asset(file=os.path.join(self.tmp, "nope"))])
        self.assertRefused("invalid_argument", "absolute", name="x",
                           assets=[self.asset(file="relative.txt")])
        self.assertRefused("invalid_argument", "regular", name="x",
                           assets=[self.asset(file=self.tmp)])
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        self.assertRefused("invalid_argument", "regular", name="x", assets=[self.asset(file=fifo)])

    @unittest.skipIf(os.geteuid() == 0, "root reads every file: no unreadable file can exist")
    def test_unreadable_file(self):
        os.chmod(self.f, 0)
        self.assertRefused("permission_denied", None, name="x", assets=[self.asset()])

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
        self.assertRefused("not_found", "staged", name="t",
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
                                 ("download", {"name": "a", "dir": "rel"}, "invalid_argument"),
                                 ("download", {"name": "a", "dir": "/tmp", "overwrite": "x"},
                                  "invalid_argument"),
                                 ("experiment.create", {"key": "bad!"}, "invalid_argument")):
            rep = self.c.request(op, **fields)
            self.assertFalse(rep["ok"], (op, fields))
            self.assertEqual(rep["error"]["code"], code, (op, fields, rep))


if __name__ == "__main__":
    unittest.main()
