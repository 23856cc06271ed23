"""The ferry CLI against a real ferryd: pause/resume, the download cache,
ls --limit, usage errors, and the progress line of `ferry download`, which is
drawn only when stderr is a terminal (here a pseudo-terminal)."""

import hashlib
import os
import pty
import re
import select
import subprocess
import time
import unittest

from ferrytest import FERRY, FerryTestCase


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PauseResume(FerryTestCase):
    def test_paused_queue_holds_then_drains(self):
        d = self.daemon
        p = d.cli("pause")
        self.assertEqual(p.stdout, "queue paused: nothing new is delivered until `ferry resume`\n")
        self.assertEqual(d.cli_json("pause"), {"paused": True})  # pausing twice is harmless
        d.cli("log", "held", self.write("held.txt", "held"))
        time.sleep(1.0)  # unpaused, the local backend would have delivered it by now

        st = d.cli_json("status")
        self.assertIs(st["paused"], True)
        self.assertEqual(st["queued"], 1)
        self.assertEqual(st["done"], 0)
        self.assertIn("paused", d.cli("status").stdout)
        # Look-ups keep working: the queued version is served from the spool.
        self.assertEqual(d.cli_json("get", "held")["state"], "QUEUED")
        w = d.cli("wait", "--timeout", "0.5", check=False)
        self.assertEqual(w.returncode, 1)
        self.assertIn("still queued", w.stderr)

        p = d.cli("resume")
        self.assertEqual(p.stdout, "queue resumed\n")
        d.cli("wait", "--timeout", "30")
        st = d.cli_json("status")
        self.assertIs(st["paused"], False)
        self.assertEqual((st["queued"], st["running"], st["done"]), (0, 0, 1))
        self.assertNotIn("paused", d.cli("status").stdout)
        self.assertEqual(d.cli_json("get", "held")["version"], "1.0.0")


class Cache(FerryTestCase):
    def test_shape_and_clear(self):
        d = self.daemon
        f = self.write("c.bin", os.urandom(100_000))
        d.cli("log", "cached", f, "--wait", "--timeout", "30")
        d.cli("download", "cached", os.path.join(self.tmp, "out"))

        rep = d.cli_json("cache")
        self.assertEqual(sorted(rep), ["blobs", "budget", "bytes", "freed", "path"])
        self.assertTrue(os.path.isabs(rep["path"]), rep)
        self.assertGreater(rep["budget"], 0)
        self.assertEqual(rep["freed"], 0)
        human = d.cli("cache").stdout
        self.assertRegex(human, r"^cache /.+: .+ in \d+ blobs?, budget \d+(\.\d)? [KMGT]?i?B\n$")

        cleared = d.cli_json("cache", "--clear")
        self.assertEqual(cleared["bytes"], 0)
        self.assertEqual(cleared["blobs"], 0)
        self.assertEqual(cleared["freed"], 0)  # the local backend reads its registry directly
        human = d.cli("cache", "--clear").stdout
        self.assertTrue(human.startswith("cleared 0 B\ncache "), human)


class LsLimit(FerryTestCase):
    def test_limit_keeps_the_newest(self):
        d = self.daemon
        d.cli("pause")
        f = self.write("x.txt", "x")
        jobs = [d.cli_json("log", "item%d" % i, f)["job"] for i in range(3)]
        items = d.cli_json("ls", "--limit", "2")["items"]
        self.assertEqual([it["job"] for it in items], jobs[1:])  # newest two, oldest first
        self.assertEqual(len(d.cli_json("ls")["items"]), 3)
        human = d.cli("ls", "--limit", "1").stdout.splitlines()
        self.assertEqual(len(human), 2, human)  # header and one row
        self.assertIn("item2", human[1])
        d.cli("resume")
        d.cli("wait", "--timeout", "30")
        self.assertEqual([it["job"] for it in d.cli_json("ls", "--all", "--limit", "1")["items"]],
                         jobs[2:])
        self.assertEqual(len(d.cli_json("ls", "--done", "--limit", "100000")["items"]), 3)


class Usage(FerryTestCase):
    def test_usage_errors_exit_2(self):
        d = self.daemon
        for args in (["ls", "--limit", "0"], ["ls", "--limit", "100001"], ["ls", "--limit", "ten"],
                     ["ls", "--limit"], ["ls", "--limit", "-3"], ["pause", "now"],
                     ["resume", "--all"], ["cache", "--bogus"], ["cache", "extra"],
                     ["download", "name", "dir", "extra"]):
            p = d.cli(*args, check=False)
            self.assertEqual(p.returncode, 2, (args, p.stdout, p.stderr))
            self.assertEqual(p.stdout, "", args)
            self.assertIn("usage: ferry", p.stderr, args)
        help_text = d.cli("--help").stdout
        for name in ("pause", "resume", "cache"):
            self.assertRegex(help_text, r"\n  %s +\S" % name)
        self.assertIn("--limit N", d.cli("ls", "--help").stdout)
        self.assertIn("--clear", d.cli("cache", "--help").stdout)
        self.assertIn("ferry resume", d.cli("help", "pause").stdout)


class DownloadProgress(FerryTestCase):
    def run_on_pty(self, *args, timeout=120):
        """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; (exit code, output)."""
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([FERRY] + [str(a) for a in args], env=self.daemon.env,
                                    stdin=slave, stdout=slave, stderr=slave, cwd=self.tmp)
        finally:
            os.close(slave)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("ferry %s did not finish; output so far: %r"
                                         % (" ".join(map(str, args)), out))
                ready, _, _ = select.select([master], [], [], left)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                out += data
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            os.close(master)
        return code, out.decode("utf-8", "replace")

    def setUp(self):
        super().setUp()
        self.big = self.write("big.bin", os.urandom(30 * 1024 * 1024))
        self.daemon.cli("log", "big", self.big, self.write("small.txt", "s"),
                        "--remote", "s3://bucket/elsewhere.bin", "--wait", "--timeout", "60")

    def test_progress_line_on_a_terminal(self):
        out_dir = os.path.join(self.tmp, "out")
        code, out = self.run_on_pty("download", "big", out_dir)
        self.assertEqual(code, 0, out)
        self.assertIn("\rdownloading big 1.0.0: ", out)
        self.assertIn("%", out)
        self.assertRegex(out, r"of 30\.0 MiB \(\d+%\)")  # the remote asset is not counted
        self.assertIn("\r\x1b[K", out)  # the line is cleared at the end
        self.assertIn("downloaded version 1.0.0 of big", out)
        self.assertEqual(sha256(os.path.join(out_dir, "big.bin")), sha256(self.big))
        self.assertEqual([n for n in os.listdir(out_dir) if n.startswith(".ferry-tmp-")], [])

    def test_no_progress_with_json_or_without_a_terminal(self):
        code, out = self.run_on_pty("download", "big", os.path.join(self.tmp, "j"), "--json")
        self.assertEqual(code, 0, out)
        self.assertNotIn("downloading", out)
        self.assertNotIn("\x1b[K", out)
        p = self.daemon.cli("download", "big", os.path.join(self.tmp, "plain"))
        self.assertNotIn("\r", p.stdout + p.stderr)
        self.assertEqual(p.stderr, "")
        self.assertTrue(p.stdout.startswith("downloaded version 1.0.0 of big"), p.stdout)

    def test_failure_on_a_terminal_clears_the_line(self):
        code, out = self.run_on_pty("download", "big:9.9.9", os.path.join(self.tmp, "none"))
        self.assertEqual(code, 1, out)
        self.assertNotIn("downloading", out)  # the version cannot be read: no progress
        self.assertIn("ferry: ", out)
        # An existing file with other content: the daemon refuses after the progress began.
        target = os.path.join(self.tmp, "clash")
        os.makedirs(target)
        with open(os.path.join(target, "big.bin"), "wb") as f:
            f.write(b"other content")
        code, out = self.run_on_pty("download", "big", target)
        self.assertEqual(code, 1, out)
        self.assertIn("downloading big 1.0.0", out)
        self.assertRegex(out, r"\r\x1b\[Kferry: .*exists with different content")


if __name__ == "__main__":
    unittest.main()
