"""Acceptance 1 of the walking skeleton: the CLI round trip against the local registry."""

import hashlib
import os
import unittest

from ferrytest import FerryTestCase


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class RoundTrip(FerryTestCase):
    def test_log_wait_get_download_and_next_major(self):
        d = self.daemon
        data = self.write("data.csv", "".join("%d,%d\n" % (i, i * i) for i in range(1000)))
        model = self.write("model.pt", os.urandom(300_000))
        rep = d.cli_json("log", "my-data", data, model, "--type", "dataset", "--alias", "first",
                         "--metadata", '{"rows": 1000}')
        self.assertEqual(rep["assets"], 2)
        d.cli("wait", "--timeout", "30")

        got = d.cli_json("get", "my-data")
        self.assertEqual(got["version"], "1.0.0")
        self.assertEqual(sorted(got["aliases"]), ["Latest", "first"])
        self.assertEqual(got["type"], "dataset")
        self.assertEqual(got["metadata"], {"rows": 1000})
        self.assertEqual(got["state"], "CLOSED")
        sizes = {a["logical_path"]: a["size"] for a in got["assets"]}
        self.assertEqual(sizes, {"data.csv": os.path.getsize(data), "model.pt": 300_000})

        out = os.path.join(self.tmp, "out")
        d.cli("download", "my-data", out)
        self.assertEqual(sha256(os.path.join(out, "data.csv")), sha256(data))
        self.assertEqual(sha256(os.path.join(out, "model.pt")), sha256(model))

        d.cli("log", "my-data", data)
        d.cli("wait", "--timeout", "30")
        latest = d.cli_json("get", "my-data")
        self.assertEqual(latest["version"], "2.0.0")
        self.assertEqual(latest["aliases"], ["Latest"])
        first = d.cli_json("get", "my-data:first")
        self.assertEqual(first["version"], "1.0.0")
        self.assertEqual(first["aliases"], ["first"])  # Latest moved away
        self.assertEqual(d.cli_json("get", "my-data:1.0.0")["version"], "1.0.0")

    def test_explicit_version_alias_moves_and_workspace_spec(self):
        d = self.daemon
        f = self.write("a.txt", "a")
        d.cli("log", "art", f, "--version", "3.1.4", "--alias", "best", "--tag", "t1",
              "--workspace", "team")
        d.cli("log", "art", f, "--alias", "best", "--workspace", "team")
        d.cli("wait", "--timeout", "30")
        best = d.cli_json("get", "team/art:best")
        self.assertEqual(best["version"], "4.0.0")  # next major after 3.1.4; alias moved
        old = d.cli_json("get", "team/art:3.1.4")
        self.assertEqual(old["version_tags"], ["t1"])
        self.assertEqual(old["aliases"], [])
        self.assertEqual(d.cli_json("get", "team/art:Latest")["version"], "4.0.0")

    def test_directory_logical_paths_and_rename(self):
        d = self.daemon
        self.write("tree/a.txt", "A")
        self.write("tree/sub/b.txt", "B")
        single = self.write("single.bin", b"\x00\x01")
        d.cli("log", "tree", os.path.join(self.tmp, "tree"))
        d.cli("log", "one", single, "--logical-path", "renamed/x.bin")
        d.cli("wait", "--timeout", "30")
        paths = sorted(a["logical_path"] for a in d.cli_json("get", "tree")["assets"])
        self.assertEqual(paths, ["a.txt", "sub/b.txt"])
        one = d.cli_json("get", "one")
        self.assertEqual([a["logical_path"] for a in one["assets"]], ["renamed/x.bin"])

    def test_not_found_is_a_clear_error(self):
        p = self.daemon.cli("get", "nothing-here", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not found", p.stderr)
        self.daemon.cli("log", "x", self.write("x", "x"))
        self.daemon.cli("wait", "--timeout", "30")
        p = self.daemon.cli("get", "x:9.9.9", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("9.9.9", p.stderr)

    def test_usage_errors_exit_2(self):
        self.assertEqual(self.daemon.cli("frobnicate", check=False).returncode, 2)
        self.assertEqual(self.daemon.cli("log", check=False).returncode, 2)

    def test_status_counts(self):
        d = self.daemon
        d.cli("log", "s", self.write("s", "s"))
        d.cli("wait", "--timeout", "30")
        st = d.cli_json("status")
        self.assertEqual(st["backend"], "local")
        self.assertTrue(st["online"])
        self.assertEqual(st["done"], 1)
        self.assertEqual(st["queued"] + st["running"] + st["failed"], 0)


if __name__ == "__main__":
    unittest.main()
