"""Steering the queue: `ferry cancel` on queued, running and failed items, and
the spool_min_free guard.

- A queued item goes at once: state cancelled, its snapshots freed, its
  waiters answered, the rest of the queue untouched.
- A running delivery (an upload held by the Comet stand-in) is stopped; the
  version it had opened on Comet is set to ERROR and never closed.
- A failed item (a version parked OPEN on Comet) is cancelled and its
  version set to ERROR; on the local backend there is nothing remote.
- A delivered item, an unknown id and a second cancel are refused (exit 1).
- spool_min_free: a log that would leave less free space on the spool's file
  system is refused naming both figures; nothing queued is touched.
"""

import os
import re
import signal
import subprocess
import time

from comettest import CometTestCase
from ferrytest import FERRY, FerryTestCase, wait_for


def spool_files(daemon):
    spool = os.path.join(daemon.state_dir, "spool")
    return sorted(n for n in os.listdir(spool) if len(n) == 32)


def ls_all(daemon):
    return {it["job"]: it for it in daemon.cli_json("ls", "--all")["items"]}


class CancelLocal(FerryTestCase):
    def test_queued_item_is_dropped_and_its_spool_freed(self):
        d = self.daemon
        d.cli("pause")
        a = d.cli_json("log", "keep", self.write("keep.bin", b"k" * 5000))["job"]
        b = d.cli_json("log", "drop", self.write("drop.bin", b"d" * 7000))["job"]
        self.assertEqual(len(spool_files(d)), 2)
        self.assertEqual(d.cli_json("status")["spool_bytes"], 12000)
        # A waiter on the job is answered when it is cancelled.
        waiter = subprocess.Popen([FERRY, "wait", "--timeout", "30"], env=d.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: waiter.poll() is None and (waiter.kill(), waiter.wait(10)))

        p = d.cli("cancel", b)
        self.assertEqual(p.stdout, "cancelled %d (drop, was queued)\n" % b)
        items = ls_all(d)
        self.assertEqual(items[b]["state"], "cancelled")
        self.assertEqual(items[a]["state"], "queued")
        wait_for(lambda: len(spool_files(d)) == 1, 10, what="the cancelled snapshot to go")
        st = d.cli_json("status")
        self.assertEqual((st["queued"], st["cancelled"], st["spool_bytes"]), (1, 1, 5000))
        # The other item is delivered; the waiter (on everything) ends with it.
        d.cli("resume")
        self.assertEqual(waiter.wait(30), 0)
        self.assertEqual(d.cli_json("get", "keep")["version"], "1.0.0")
        self.assertNotEqual(d.cli("get", "drop", check=False).returncode, 0)

        # Refusals: a delivered item, a cancelled one, one that never was.
        p = d.cli("cancel", a, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("job %d is delivered already: nothing to cancel" % a, p.stderr)
        p = d.cli("cancel", b, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("job %d is cancelled: nothing to cancel" % b, p.stderr)
        p = d.cli("cancel", 999, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("there is no job 999", p.stderr)
        self.assertEqual(d.cli("cancel", "x", check=False).returncode, 2)
        self.assertEqual(d.cli("cancel", check=False).returncode, 2)

    def test_json_reply(self):
        d = self.daemon
        d.cli("pause")
        job = d.cli_json("log", "j", self.write("j.bin", b"j"))["job"]
        rep = d.cli_json("cancel", job)
        self.assertEqual(rep, {"job": job, "name": "j", "was": "queued", "remote": None})

    def test_cancelled_item_survives_a_restart_as_cancelled(self):
        d = self.daemon
        d.cli("pause")
        job = d.cli_json("log", "r", self.write("r.bin", b"r" * 100))["job"]
        d.cli("cancel", job)
        d.stop()
        d.start()
        self.assertEqual(ls_all(d)[job]["state"], "cancelled")
        self.assertEqual(spool_files(d), [])
        d.cli("wait", "--timeout", "10")


class CancelComet(CometTestCase):
    def version_state(self, name):
        v = self.versions(name)
        return v[0]["state"] if v else None

    def test_running_delivery_is_stopped_and_its_version_set_to_error(self):
        d = self.daemon
        # The upload is held by the server: the delivery stays running.
        self.standin.set_faults([{"endpoint": "uploadAsset", "match_file": "slow.bin",
                                  "delay": 60}])
        job = d.cli_json("log", "slow", self.write("slow.bin", b"s" * 100000))["job"]
        wait_for(lambda: self.state()["counts"].get("uploadAsset", 0) >= 1, 20,
                 what="the upload to start")
        self.assertEqual(d.cli_json("status")["running"], 1)
        self.assertEqual(self.version_state("slow"), "OPEN")

        started = time.monotonic()
        rep = d.cli_json("cancel", job)
        self.assertLess(time.monotonic() - started, 10, "cancel waited for the held upload")
        self.assertEqual(rep["was"], "running")
        self.assertRegex(rep["remote"], r"^its version on Comet \(\w+\) was set to ERROR$")
        self.assertEqual(self.version_state("slow"), "ERROR")
        self.assertEqual(ls_all(d)[job]["state"], "cancelled")
        st = d.cli_json("status")
        self.assertEqual((st["running"], st["queued"], st["spool_bytes"]), (0, 0, 0))
        wait_for(lambda: spool_files(d) == [], 10, what="the snapshot to go")
        # The daemon goes on delivering.
        d.cli("log", "next", self.write("next.bin", b"n" * 10))
        self.wait_drained(30)
        self.assertEqual(self.version_state("next"), "CLOSED")
        self.assertEqual(self.version_state("slow"), "ERROR")
        self.assertEqual(self.versions("slow")[0]["assets"], [])
        self.assertIn("job %d: slow cancelled (it was running)" % job, d.log())

    def test_cancel_during_the_upsert_waits_for_it_and_sets_error(self):
        """A cut upsert could leave a version OPEN on Comet that the queue never heard of."""
        d = self.daemon
        self.standin.set_faults([{"endpoint": "upsert", "delay": 2, "count": 1}])
        job = d.cli_json("log", "mid-upsert", self.write("m.bin", b"m" * 10))["job"]
        wait_for(lambda: self.state()["counts"].get("upsert", 0) >= 1, 20,
                 what="the upsert to arrive")
        rep = d.cli_json("cancel", job)
        self.assertEqual(rep["was"], "running")
        self.assertRegex(rep["remote"] or "", r"was set to ERROR$")
        self.assertEqual(self.version_state("mid-upsert"), "ERROR")
        self.assertEqual(self.state()["counts"].get("uploadAsset", 0), 0)

    def test_failed_item_with_an_open_version(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "uploadAsset", "status": 400,
                                  "msg": "refused by policy"}])
        job = d.cli_json("log", "parked", self.write("p.bin", b"p" * 10))["job"]
        self.assertEqual(d.cli("wait", "--timeout", "30", check=False).returncode, 1)
        self.assertEqual(ls_all(d)[job]["state"], "failed")
        self.assertEqual(self.version_state("parked"), "OPEN")
        p = d.cli("cancel", job)
        self.assertIn("cancelled %d (parked, was failed)" % job, p.stdout)
        self.assertIn("was set to ERROR", p.stdout)
        self.assertEqual(self.version_state("parked"), "ERROR")
        self.assertEqual(d.cli_json("status")["failed"], 0)
        self.assertEqual(d.cli("wait", "--timeout", "10", check=False).returncode, 0)

    def test_queued_item_never_created_on_comet(self):
        d = self.daemon
        d.cli("pause")
        job = d.cli_json("log", "never", self.write("n.bin", b"n"))["job"]
        rep = d.cli_json("cancel", job)
        self.assertEqual((rep["was"], rep["remote"]), ("queued", None))
        d.cli("resume")
        d.cli("wait", "--timeout", "10")
        self.assertEqual(self.versions("never"), [])

    def test_comet_unreachable_leaves_it_open_and_says_so(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "uploadAsset", "status": 400, "msg": "no"}])
        job = d.cli_json("log", "orphan", self.write("o.bin", b"o"))["job"]
        d.cli("wait", "--timeout", "30", check=False)
        self.standin.set_faults([{"endpoint": "state", "status": 403, "msg": "not yours"}])
        rep = d.cli_json("cancel", job)
        self.assertRegex(rep["remote"], r"stays OPEN: setting it to ERROR failed \(.*not yours.*\)")
        self.assertEqual(self.version_state("orphan"), "OPEN")
        self.assertEqual(ls_all(d)[job]["state"], "cancelled")


class SpoolMinFree(FerryTestCase):
    """The guard uses the real free space of the test's file system, with wide margins."""

    def test_refused_naming_both_figures_queue_intact(self):
        d = self.daemon
        d.cli("pause")
        jobs = [d.cli_json("log", "q%d" % i, self.write("q%d.bin" % i, b"q" * 3000))["job"]
                for i in range(2)]
        before = spool_files(d)
        st = os.statvfs(os.path.join(d.state_dir, "spool"))
        free = st.f_bavail * st.f_frsize
        # A minimum of half the free space (set through ferryd.conf and SIGHUP, so that the
        # queue stays paused); a sparse file of three quarters of it would leave a quarter.
        self.write(".config/ferry/ferryd.conf",
                   "spool_min_free = %d\nspool_budget = 0\n" % (free // 2))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.cli_json("status")["spool_min_free"] == free // 2, 10,
                 what="the reload")
        big = os.path.join(self.tmp, "big.sparse")
        with open(big, "wb") as f:
            f.truncate(free * 3 // 4)
        p = d.cli("log", "big", big, check=False)
        self.assertEqual(p.returncode, 1)
        m = re.search(r"not logged: these ([\d.]+ \w+) would leave ([\d.]+ \w+) free on the file "
                      r"system of the spool (\S+), less than spool_min_free \(([\d.]+ \w+)\); "
                      r"nothing queued was touched", p.stderr)
        self.assertTrue(m, p.stderr)
        self.assertEqual(m.group(3), os.path.join(d.state_dir, "spool"))
        # Nothing queued was touched, and nothing of the refused log stayed.
        self.assertEqual(spool_files(d), before)
        items = ls_all(d)
        self.assertEqual(sorted(items), jobs)
        self.assertTrue(all(it["state"] == "queued" for it in items.values()))
        self.assertEqual(d.cli_json("status")["spool_bytes"], 6000)
        # A log that leaves enough passes.
        d.cli("log", "small", self.write("small.bin", b"s" * 10))
        d.cli("resume")
        d.cli("wait", "--timeout", "30")
        self.assertEqual(len(d.cli_json("ls", "--done")["items"]), 3)
