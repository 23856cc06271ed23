"""libferry's contract as a library, and ferryd's start-up refusals."""

import os
import sqlite3
import subprocess
import unittest

from ferrytest import BUILD_DIR, FERRYD, LIBFERRY, Daemon, FerryTestCase


class Library(unittest.TestCase):
    def test_only_ferry_symbols_are_exported(self):
        out = subprocess.run(["nm", "-D", "--defined-only", LIBFERRY], capture_output=True,
                             text=True, check=True).stdout
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        functions = [n for n in names if not n.startswith("_") and n not in ("FERRY_0",)]
        self.assertIn("ferry_connect", functions)
        self.assertIn("ferry_call", functions)
        stray = [n for n in functions if not n.startswith("ferry_")]
        self.assertEqual(stray, [], "symbols outside the ferry_ prefix are exported")

    def test_static_library_and_header_exist(self):
        self.assertTrue(os.path.exists(os.path.join(BUILD_DIR, "client", "libferry.a")))
        soname = subprocess.run(["objdump", "-p", LIBFERRY], capture_output=True, text=True,
                                check=True).stdout
        self.assertIn("SONAME               libferry.so.0", soname)


class StartUp(FerryTestCase):
    def test_queue_database_newer_than_the_code_is_refused(self):
        self.daemon.stop()
        db = sqlite3.connect(os.path.join(self.daemon.state_dir, "queue.db"))
        db.execute("PRAGMA user_version = 99")
        db.commit()
        db.close()
        p = subprocess.run([FERRYD, "--foreground"], env=self.daemon.env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("99", p.stderr)
        self.assertIn("newer", p.stderr)

    def test_bad_settings_are_refused_with_the_reason(self):
        self.daemon.stop()
        env = dict(self.daemon.env)
        env["FERRY_MAX_JOBS"] = "lots"
        p = subprocess.run([FERRYD, "--foreground"], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("FERRY_MAX_JOBS", p.stderr)
        conf = os.path.join(self.tmp, "ferryd.conf")
        with open(conf, "w") as f:
            f.write("spool_budget = 1G\nfrobnicate = yes\n")
        p = subprocess.run([FERRYD, "--foreground", "--config", conf], env=self.daemon.env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("ferryd.conf:2", p.stderr)
        self.assertIn("frobnicate", p.stderr)
        p = subprocess.run([FERRYD, "--bogus"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)

    def test_comet_without_a_key_is_refused(self):
        self.daemon.stop()
        env = dict(self.daemon.env)
        env["FERRY_BACKEND"] = "comet"
        p = subprocess.run([FERRYD, "--foreground"], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("API key", p.stderr)

    def test_sigterm_stops_cleanly_and_removes_the_socket(self):
        self.assertEqual(self.daemon.stop(), 0)
        self.assertFalse(os.path.exists(self.daemon.socket))
        self.assertIn("stopped", self.daemon.log())

    def test_detached_mode_writes_its_log_in_the_state_dir(self):
        self.daemon.stop()
        root = os.path.join(self.tmp, "bg")
        d = Daemon(root)
        p = subprocess.run([FERRYD], env=d.env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        c = None
        try:
            import time
            deadline = time.monotonic() + 10
            while not os.path.exists(d.socket) and time.monotonic() < deadline:
                time.sleep(0.02)
            c = d.raw()
            pid = c.hello()["pid"]
        finally:
            if c:
                c.close()
        self.assertTrue(os.path.exists(os.path.join(d.state_dir, "ferryd.log")))
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertFalse(os.path.exists(d.socket))


if __name__ == "__main__":
    unittest.main()
