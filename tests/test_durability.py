"""Durable ack and snapshot semantics (walking skeleton, acceptance 2 and 3)."""

import hashlib
import os
import time
import threading
import unittest

from ferrytest import FerryTestCase, wait_for


def sha(data):
    return hashlib.sha256(data).hexdigest()


class DurableAck(FerryTestCase):
    def test_sigkill_right_after_the_reply_loses_nothing(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        self.assertTrue(c.request("pause", paused=True)["ok"])
        payloads = {}
        for i in range(5):
            data = os.urandom(200_000 + i)
            path = self.write("f%d.bin" % i, data)
            payloads["v%d" % i] = data
            rep = c.request("artifact.log", name="v%d" % i, type="model",
                            assets=[{"logical_path": "w.bin", "file": path}])
            self.assertTrue(rep["ok"], rep)
        # Killed at once: nothing was delivered yet (the queue is paused).
        d.kill9()
        c.close()
        for i in range(5):
            os.unlink(os.path.join(self.tmp, "f%d.bin" % i))  # only the spool has them now

        d.start()
        d.cli("wait", "--timeout", "60")
        for name, data in payloads.items():
            got = d.cli_json("get", name)
            self.assertEqual(got["version"], "1.0.0")
            out = os.path.join(self.tmp, "out-" + name)
            d.cli("download", name, out)
            with open(os.path.join(out, "w.bin"), "rb") as f:
                self.assertEqual(sha(f.read()), sha(data))
        ls = d.cli_json("ls", "--all")
        self.assertEqual(sorted(i["name"] for i in ls["items"]), sorted(payloads))
        self.assertTrue(all(i["state"] == "done" for i in ls["items"]))

    def test_sigkill_during_a_stream_of_logs_keeps_every_acked_version_once(self):
        d = self.daemon
        acked = {}
        stop = threading.Event()

        def logger():
            c = d.raw()
            c.hello()
            for i in range(400):
                if stop.is_set():
                    break
                data = ("payload %d " % i).encode() * 5000
                path = self.write("s%d.bin" % i, data)
                try:
                    rep = c.request("artifact.log", name="stream",
                                    assets=[{"logical_path": "s.bin", "file": path}])
                except OSError:
                    break
                if rep is None:
                    break
                if rep["ok"]:
                    acked[rep["job"]] = sha(data)

        t = threading.Thread(target=logger)
        t.start()
        wait_for(lambda: len(acked) >= 40, 60, what="40 acked logs")
        d.kill9()
        stop.set()
        t.join(30)
        self.assertFalse(t.is_alive())

        d.start()
        d.cli("wait", "--timeout", "120")
        items = d.cli_json("ls", "--all")["items"]
        by_job = {i["job"]: i for i in items}
        for job in acked:
            self.assertIn(job, by_job, "acked job %d was lost" % job)
            self.assertEqual(by_job[job]["state"], "done")
        versions = [i["version"] for i in items]
        self.assertEqual(len(versions), len(set(versions)), "a version was created twice")
        majors = sorted(int(v.split(".")[0]) for v in versions)
        self.assertEqual(majors, list(range(1, len(majors) + 1)), "versions have gaps")
        # Byte-identical: check a sample of the acked versions.
        for job in list(acked)[:: max(1, len(acked) // 8)]:
            v = by_job[job]["version"]
            out = os.path.join(self.tmp, "o%d" % job)
            d.cli("download", "stream:" + v, out)
            with open(os.path.join(out, "s.bin"), "rb") as f:
                self.assertEqual(sha(f.read()), acked[job])


class Snapshot(FerryTestCase):
    def test_changed_and_deleted_files_upload_their_content_at_log_time(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        c.request("pause", paused=True)
        a = self.write("a.txt", "original A\n")
        b = self.write("b.txt", "original B\n")
        d.cli("log", "snap", a, b)
        with open(a, "w") as f:
            f.write("changed after log\n")
        os.unlink(b)
        c.request("pause", paused=False)
        c.close()
        d.cli("wait", "--timeout", "30")
        out = os.path.join(self.tmp, "out")
        d.cli("download", "snap", out)
        with open(os.path.join(out, "a.txt")) as f:
            self.assertEqual(f.read(), "original A\n")
        with open(os.path.join(out, "b.txt")) as f:
            self.assertEqual(f.read(), "original B\n")

    def test_spool_is_cleaned_after_delivery(self):
        d = self.daemon
        d.cli("log", "clean", self.write("x.bin", os.urandom(50_000)))
        d.cli("wait", "--timeout", "30")
        spool = os.path.join(d.state_dir, "spool")
        # Removal is deferred to the thread pool (and past any pinned reader): give it a moment.
        deadline = time.monotonic() + 10
        while [n for n in os.listdir(spool) if n != "staging"] and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = [n for n in os.listdir(spool) if n != "staging"]
        self.assertEqual(leftovers, [])
        self.assertEqual(d.cli_json("status")["spool_bytes"], 0)


class SpoolBudget(FerryTestCase):
    daemon_env = {"FERRY_SPOOL_BUDGET": "100K"}

    def test_full_spool_is_a_clear_error_and_keeps_the_queue(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        c.request("pause", paused=True)
        ok = c.request("artifact.log", name="fits",
                       assets=[{"logical_path": "a", "file": self.write("a", os.urandom(60_000))}])
        self.assertTrue(ok["ok"], ok)
        full = c.request("artifact.log", name="too-much",
                         assets=[{"logical_path": "b", "file": self.write("b", os.urandom(60_000))}])
        self.assertFalse(full["ok"])
        self.assertEqual(full["error"]["code"], "no_space")
        self.assertIn("spool", full["error"]["message"])
        c.request("pause", paused=False)
        d.cli("wait", "--timeout", "30")
        self.assertEqual([i["name"] for i in d.cli_json("ls", "--all")["items"]], ["fits"])
        # Once drained, there is room again.
        again = c.request("artifact.log", name="too-much",
                          assets=[{"logical_path": "b", "file": os.path.join(self.tmp, "b")}])
        self.assertTrue(again["ok"], again)


if __name__ == "__main__":
    unittest.main()
