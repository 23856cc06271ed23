"""SIGKILL of ferryd at each step of a version's flow, then exact resume (issue 3, acceptance 4)."""

import os
import sqlite3
import time
import unittest

from comettest import CometTestCase


class CometResume(CometTestCase):
    def log_three(self, name):
        files = {}
        for j in range(3):
            files["f%d.bin" % j] = self.write("%s/f%d.bin" % (name, j), os.urandom(30_000 + j))
        self.daemon.cli("log", name, *files.values())
        return files

    def restart_and_check(self, name, files, upserts_before):
        self.daemon.kill9()
        self.standin.set_faults([])
        self.daemon.start()
        self.wait_drained()
        versions = self.versions(name)
        self.assertEqual(len(versions), 1, "a second version was created")
        self.assertEqual(versions[0]["state"], "CLOSED")
        self.assertBytes(versions[0], files)  # every asset exactly once (uploads == 1)
        self.assertEqual(self.state()["counts"]["upsert"], upserts_before,
                         "the version was upserted again after the restart")

    def test_kill_after_the_upsert(self):
        self.standin.set_faults([{"endpoint": "uploadAsset", "delay": 30}])
        files = self.log_three("after-upsert")
        self.wait_until(lambda: self.state()["counts"].get("uploadAsset", 0) >= 1,
                        what="the first upload to start")
        self.assertEqual(self.state()["counts"]["upsert"], 1)
        self.restart_and_check("after-upsert", files, 1)

    def test_kill_between_assets(self):
        self.standin.set_faults([{"endpoint": "uploadAsset", "match_file": "f2.bin", "delay": 30}])
        files = self.log_three("between")

        def two_committed():
            # What ferryd has committed, read from its queue database.
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.daemon.state_dir, "queue.db"),
                                 uri=True, timeout=5)
            try:
                return db.execute("SELECT COUNT(*) FROM assets WHERE done = 1").fetchone()[0] == 2
            finally:
                db.close()
        self.wait_until(two_committed, what="two of three uploads committed")
        self.restart_and_check("between", files, 1)

    def test_kill_before_the_close(self):
        self.standin.set_faults([{"endpoint": "state", "delay": 30}])
        files = self.log_three("before-close")
        self.wait_until(lambda: self.state()["counts"].get("state", 0) >= 1,
                        what="the close request")
        v = self.versions("before-close")[0]
        self.assertEqual(v["state"], "OPEN")
        self.restart_and_check("before-close", files, 1)

    def test_kill_after_the_close_was_accepted(self):
        # The close succeeds on the server, but ferryd dies before it can note it:
        # the resumed close gets 90401 (already closed) and counts as done.
        files = self.log_three("closed-twice")
        self.wait_drained()
        self.daemon.kill9()
        self.daemon.start()
        self.wait_drained()
        self.assertEqual(len(self.versions("closed-twice")), 1)
        self.assertBytes(self.versions("closed-twice")[0], files)


if __name__ == "__main__":
    unittest.main()


class CometResumeExplicit(CometTestCase):
    def test_kill_after_the_server_created_an_explicit_version_unnoticed(self):
        """The upsert's answer is lost with ferryd: the resent upsert resumes the same version."""
        d = self.daemon
        self.standin.set_faults([{"endpoint": "upsert", "delay": 2.0}])
        f = self.write("w.bin", os.urandom(40_000))
        d.cli("log", "model-x", f, "--version", "3.1.4")
        self.wait_until(lambda: self.state()["counts"].get("upsert", 0) >= 1,
                        what="the upsert to reach the server")
        time.sleep(0.5)
        d.kill9()  # the server creates 3.1.4 after this; ferryd never hears of it
        self.wait_until(lambda: self.versions("model-x"), what="the server to create the version")
        self.standin.set_faults([])
        d.start()
        self.wait_drained()
        versions = self.versions("model-x")
        self.assertEqual([v["version"] for v in versions], ["3.1.4"])
        self.assertEqual(versions[0]["state"], "CLOSED")
        self.assertBytes(versions[0], {"w.bin": f})
        self.assertEqual(d.cli_json("status")["failed"], 0)

    def test_a_version_taken_by_another_experiment_still_parks(self):
        d = self.daemon
        f = self.write("t.bin", "t")
        d.cli("log", "taken", f, "--version", "1.0.0")
        self.wait_drained()
        d.cli("log", "taken", f, "--version", "1.0.0")  # a new experiment: not the owner
        self.assertEqual(d.cli("wait", "--timeout", "30", check=False).returncode, 1)
        err = d.cli_json("status")["errors"][0]
        self.assertEqual(err["code"], "90399")
        self.assertEqual(len(self.versions("taken")), 1)
