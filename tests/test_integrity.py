"""Never lie, never lose: the integrity issue's acceptance tests that need no hostile server.

- a damaged queue database never costs an acknowledged file (quarantine, recover);
- SIGTERM in the middle of a large delivery stops cleanly and loses nothing;
- a version is readable from the moment it is logged (the spool is pinned);
- names that can never be delivered are refused at the door;
- the loop never stalls: thousands of pending waits, pending-request caps;
- text from a server is sanitised before it reaches the log;
- a full disk is named as such.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from comettest import CometTestCase, daemon_is_sanitized, sha256_file
from ferrytest import Daemon, FerryTestCase, RawClient, wait_for


def sha(data):
    return hashlib.sha256(data).hexdigest()


def hashes_under(root):
    """SHA-256 of every regular file below root (no symlinks followed)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.add(sha256_file(p))
    return out


class DamagedQueue(FerryTestCase):
    """A queue database that cannot vouch for its files never deletes them."""

    def log_paused(self, n, prefix="v"):
        """Log n versions (two files each) with deliveries paused; {name: [sha...]}"""
        d = self.daemon
        d.cli("pause")
        logged = {}
        for i in range(n):
            a = os.urandom(3000 + i)
            b = os.urandom(5000 + i)
            pa, pb = self.write("%s%d/a.bin" % (prefix, i), a), self.write("%s%d/b.bin" % (prefix, i), b)
            d.cli("log", "%s%d" % (prefix, i), pa, pb, "--alias", "first")
            logged["%s%d" % (prefix, i)] = {"a.bin": sha(a), "b.bin": sha(b)}
            os.unlink(pa)  # the spool holds the only copies now
            os.unlink(pb)
        return logged

    def assert_all_bytes_kept(self, logged):
        have = hashes_under(self.daemon.state_dir)
        for name, files in logged.items():
            for lp, h in files.items():
                self.assertIn(h, have, "the bytes of %s/%s left the state directory" % (name, lp))

    def recover_and_check(self, logged):
        d = self.daemon
        rep = d.cli_json("recover")
        self.assertEqual(rep["versions"], len(logged), rep)
        self.assertEqual(rep["files"], 2 * len(logged))
        d.cli("resume")
        d.cli("wait", "--timeout", "60")
        for name, files in logged.items():
            out = os.path.join(self.tmp, "out", name)
            d.cli("download", name, out)
            for lp, h in files.items():
                self.assertEqual(sha256_file(os.path.join(out, lp)), h)
            got = d.cli_json("get", name)
            self.assertIn("first", got["aliases"])

    def restart_after(self, damage):
        d = self.daemon
        d.stop()
        damage(os.path.join(d.state_dir, "queue.db"))
        d.start()

    def test_overwritten_assets_root_page_quarantines_instead_of_deleting(self):
        logged = self.log_paused(20)

        def damage(db):
            con = sqlite3.connect(db)
            root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'assets'").fetchone()[0]
            page = con.execute("PRAGMA page_size").fetchone()[0]
            con.close()
            with open(db, "r+b") as f:
                f.seek((root - 1) * page)
                f.write(os.urandom(page))

        self.restart_after(damage)
        self.assert_all_bytes_kept(logged)
        st = self.daemon.cli_json("status")
        text = " ".join(st["warnings"])
        self.assertIn("damaged", text)
        self.assertIn("quarantine", text)
        self.assertIn("damaged", self.daemon.log())
        aside = [n for n in os.listdir(self.daemon.state_dir) if n.startswith("queue.db.damaged-")]
        self.assertTrue(aside, "the damaged database was not kept")
        self.recover_and_check(logged)

    def test_garbage_in_the_middle_is_reported_and_nothing_is_lost(self):
        logged = self.log_paused(20)

        def damage(db):
            size = os.path.getsize(db)
            with open(db, "r+b") as f:
                f.seek(size // 2)
                f.write(b"\xde\xad\xbe\xef" * 2048)

        self.restart_after(damage)
        self.assert_all_bytes_kept(logged)
        p = self.daemon.cli("status")
        self.assertIn("damaged", p.stdout)
        self.recover_and_check(logged)

    def test_wal_lost_after_a_crash_quarantines_the_unknown_snapshots(self):
        d = self.daemon
        logged = self.log_paused(20)
        d.kill9()
        db = os.path.join(d.state_dir, "queue.db")
        for suffix in ("-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        d.start()
        self.assert_all_bytes_kept(logged)
        st = d.cli_json("status")
        self.assertTrue(any("quarantine" in w for w in st["warnings"]), st["warnings"])
        self.assertEqual(st["queued"], 0)  # the queue forgot them ...
        qdir = os.path.join(d.state_dir, "quarantine")
        self.assertEqual(sum(len(fs) for _, _, fs in os.walk(qdir)), 40)  # ... the spool did not
        self.recover_and_check(logged)
        # Recovered once is recovered: a second recover finds nothing.
        self.assertEqual(d.cli_json("recover")["versions"], 0)


class OrderlyStop(FerryTestCase):
    daemon_env = {"FERRY_STOP_GRACE_MS": "200"}

    def test_sigterm_while_a_large_version_is_stored_exits_zero_and_delivers_once(self):
        d = self.daemon
        data_path = os.path.join(self.tmp, "big.bin")
        with open(data_path, "wb") as f:
            for _ in range(300):
                f.write(os.urandom(1 << 20))
        want = sha256_file(data_path)
        d.cli("log", "big", data_path)
        time.sleep(0.05)  # storing the blob (hash + link) is under way
        t0 = time.monotonic()
        code = d.stop(timeout=60)
        self.assertEqual(code, 0, d.log())
        self.assertLess(time.monotonic() - t0, 30)
        self.assertNotIn("ERROR: AddressSanitizer", d.log())
        self.assertNotIn("runtime error", d.log())
        d.start()
        d.cli("wait", "--timeout", "120", timeout=200)
        ls = d.cli_json("ls", "--all")
        self.assertEqual([(i["name"], i["state"], i["version"]) for i in ls["items"]],
                         [("big", "done", "1.0.0")])
        out = os.path.join(self.tmp, "out")
        d.cli("download", "big", out)
        self.assertEqual(sha256_file(os.path.join(out, "big.bin")), want)


class CometOrderlyStop(CometTestCase):
    extra_env = {"FERRY_STOP_GRACE_MS": "100"}

    def test_sigterm_during_a_300_mib_upload_exits_zero_and_resumes_exactly_once(self):
        d = self.daemon
        data_path = os.path.join(self.tmp, "big.bin")
        with open(data_path, "wb") as f:
            for _ in range(300):
                f.write(os.urandom(1 << 20))
        # Slow the upload down so that it is surely in flight when SIGTERM comes.
        self.standin.set_faults([{"endpoint": "uploadAsset", "delay": 2.0, "count": 1}])
        d.cli("log", "big", data_path)
        self.wait_until(lambda: self.state()["counts"].get("uploadAsset", 0) >= 1, 60,
                        "the upload to start")
        t0 = time.monotonic()
        code = d.stop(timeout=60)
        self.assertEqual(code, 0, d.log())
        self.assertLess(time.monotonic() - t0, 20, "the stop took longer than its grace period allows")
        log = d.log()
        self.assertNotIn("AddressSanitizer", log)
        self.assertNotIn("runtime error", log)
        self.standin.set_faults([])
        d.start()
        self.wait_drained(300)
        versions = self.versions("big")
        self.assertEqual(len(versions), 1, versions)
        self.assertEqual(versions[0]["state"], "CLOSED")
        self.assertBytes(versions[0], {"big.bin": data_path})


class ReadYourWrites(FerryTestCase):
    def test_log_then_download_at_once_fifteen_times(self):
        d = self.daemon
        for i in range(15):
            files = {}
            paths = []
            for j in range(6):
                data = os.urandom(50_000 + j)
                p = self.write("r%d/f%d.bin" % (i, j), data)
                files["f%d.bin" % j] = sha(data)
                paths.append(p)
            d.cli("log", "race", *paths)
            out = os.path.join(self.tmp, "out%d" % i)
            d.cli("download", "race", out)
            for lp, h in files.items():
                self.assertEqual(sha256_file(os.path.join(out, lp)), h, "try %d, %s" % (i, lp))


class CometReadYourWrites(CometTestCase):
    def test_a_version_open_on_comet_is_served_from_the_spool(self):
        d = self.daemon
        for i in range(15):
            # Every upload waits: the version is OPEN on Comet while we read it back.
            self.standin.set_faults([{"endpoint": "uploadAsset", "delay": 1.0}])
            files = {}
            paths = []
            for j in range(3):
                data = os.urandom(40_000 + j)
                p = self.write("c%d/f%d.bin" % (i, j), data)
                files["f%d.bin" % j] = sha(data)
                paths.append(p)
            d.cli("log", "open-race", *paths)
            if i == 0:
                # Once ferryd knows the number Comet gave the version (the upsert's answer),
                # a look-up by that number is served from the node while Comet has it OPEN.
                self.wait_until(lambda: d.cli_json("ls")["items"][0]["version"] == "1.0.0", 30,
                                "ferryd to record version 1.0.0")
                self.assertEqual(self.versions("open-race")[0]["state"], "OPEN")
                got = d.cli_json("get", "open-race:1.0.0")
                self.assertEqual(got["state"], "OPEN")
            out = os.path.join(self.tmp, "out%d" % i)
            d.cli("download", "open-race", out)
            for lp, h in files.items():
                self.assertEqual(sha256_file(os.path.join(out, lp)), h, "try %d, %s" % (i, lp))
            self.standin.set_faults([])
        self.wait_drained(120)
        self.assertEqual(len(self.versions("open-race")), 15)


class RefusedAtTheDoor(FerryTestCase):
    """Invalid UTF-8, NUL and control characters never reach the queue."""

    def send(self, c, text):
        rid = c.next_id
        c.next_id += 1
        fd = os.open(os.path.join(self.tmp, "ok.bin"), os.O_RDONLY)
        try:
            c.send_frame(text.replace(b"@ID@", str(rid).encode()), [fd])
        finally:
            os.close(fd)
        return c.read_frame()

    def test_invalid_utf8_nul_and_controls_are_refused_and_nothing_is_stored(self):
        d = self.daemon
        path = self.write("ok.bin", b"data")
        c = d.raw()
        c.hello()
        base = b'{"id": @ID@, "op": "artifact.log", "name": NAME, "aliases": ALIASES, ' \
               b'"tags": TAGS, "fds": 1, "assets": [{"logical_path": LP, "fd": 0}]}'
        good = {b"NAME": b'"ok"', b"ALIASES": b'["a"]', b"TAGS": b'["t"]', b"LP": b'"ok.bin"'}
        bad_values = [b'"bad\xff"', b'"bad\xc3"', b'"\xed\xa0\x80"', b'"cut\\u0000/../../x"',
                      b'"ctl\\u001b[31m"', b'"c1\xc2\x85"']
        for field in good:
            for bad in bad_values:
                if field == b"LP" and bad == b'"ctl\\u001b[31m"':
                    pass
                frame = base
                for k, v in good.items():
                    frame = frame.replace(k, bad if k == field else v)
                rep = self.send(c, frame)
                self.assertIsNotNone(rep, "ferryd closed the connection on %r" % frame)
                self.assertFalse(rep["ok"], "accepted %s = %r" % (field, bad))
                self.assertIn(rep["error"]["code"], ("invalid_argument",), rep)
        # Still serving, and nothing was stored.
        self.assertTrue(c.request("status")["ok"])
        self.assertEqual(d.cli_json("ls", "--all")["items"], [])
        c.close()

    def test_error_messages_never_cut_a_character_in_half(self):
        c = self.daemon.raw()
        c.hello()
        for n in range(40, 200):
            name = "é" * n + "/"  # too long or a slash: the message quotes it
            c.send_frame(json.dumps({"id": n, "op": "artifact.log", "name": name},
                                    ensure_ascii=False))
            # read_frame decodes the reply as UTF-8 JSON: a cut character raises here.
            rep = c.read_frame()
            self.assertFalse(rep["ok"])
            rep["error"]["message"].encode("utf-8")
        c.close()


class LoopNeverStalls(FerryTestCase):
    def test_ten_thousand_pending_waits_leave_status_fast(self):
        d = self.daemon
        d.cli("pause")
        p = self.write("w.bin", b"w")
        job = json.loads(d.cli("log", "held", p, "--json").stdout)["job"]
        clients = []
        total = 0
        for k in range(3):
            c = d.raw()
            c.hello()
            clients.append(c)
            n = 3400 if k < 2 else 10000 - 2 * 3400
            frames = b"".join(
                struct.pack(">I", len(m)) + m for m in (
                    json.dumps({"id": 1000 + i, "op": "wait", "jobs": [job]}).encode()
                    for i in range(n)))
            c.send_raw(frames)
            total += n
        wait_for(lambda: d.cli_json("status")["waiters"] >= total, 60, what="10,000 pending waits")
        probe = d.raw()
        probe.hello()
        times = []
        for _ in range(7):
            t0 = time.monotonic()
            self.assertTrue(probe.request("status")["ok"])
            times.append(time.monotonic() - t0)
        times.sort()
        limit = 0.5 if daemon_is_sanitized(d) else 0.1
        self.assertLess(times[3], limit, "status took %s with 10,000 waits pending" % times)
        # The waits all end when the job does.
        d.cli("resume")
        for c in clients:
            c.sock.settimeout(60)
        got = 0
        for c, n in zip(clients, (3400, 3400, 10000 - 6800)):
            for _ in range(n):
                rep = c.read_frame()
                self.assertTrue(rep["ok"] and rep["drained"], rep)
                got += 1
        self.assertEqual(got, 10000)
        for c in clients + [probe]:
            c.close()

    def test_a_connection_with_too_many_pending_requests_is_told_so(self):
        d = self.daemon
        d.cli("pause")
        p = self.write("w.bin", b"w")
        job = json.loads(d.cli("log", "held", p, "--json").stdout)["job"]
        c = d.raw()
        c.hello()
        n = 4096 + 5
        c.send_raw(b"".join(
            struct.pack(">I", len(m)) + m for m in (
                json.dumps({"id": 10 + i, "op": "wait", "jobs": [job]}).encode()
                for i in range(n))))
        busy = 0
        for _ in range(5):
            rep = c.read_frame()
            self.assertFalse(rep["ok"])
            self.assertEqual(rep["error"]["code"], "busy")
            busy += 1
        self.assertEqual(busy, 5)
        self.assertTrue(d.cli_json("status")["waiters"] >= 4096)
        c.close()
        # Its waits went with it.
        wait_for(lambda: d.cli_json("status")["waiters"] == 0, 30, what="the waits to be dropped")

    def test_a_huge_frame_is_validated_quickly(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        assets = [{"logical_path": "d/f%06d.bin" % i, "remote": "s3://b/k%d" % i}
                  for i in range(15000)]
        frame = json.dumps({"id": 5, "op": "artifact.log", "name": "wide", "assets": assets})
        self.assertLess(len(frame), 1 << 20)
        t0 = time.monotonic()
        c.send_frame(frame)
        rep = c.read_frame()
        self.assertTrue(rep["ok"], rep)
        self.assertLess(time.monotonic() - t0, 10 if daemon_is_sanitized(d) else 3)
        # Duplicates among thousands are still found.
        assets.append({"logical_path": "d/f000007.bin", "remote": "s3://b/dup"})
        c.send_frame(json.dumps({"id": 6, "op": "artifact.log", "name": "wide2",
                                 "assets": assets}))
        rep = c.read_frame()
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"]["code"], "exists")
        self.assertIn("d/f000007.bin", rep["error"]["message"])
        c.close()


class LogHygiene(CometTestCase):
    def test_a_servers_message_cannot_forge_log_lines(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "upsert", "status": 400,
                                  "msg": "nope\n2026-01-01T00:00:00.000Z ferryd info: job 9 delivered\x1b[2J"}])
        d.cli("log", "forge", self.write("x.bin", b"x"))
        wait_for(lambda: d.cli_json("status")["failed"] == 1, 30, what="the job to fail")
        log = d.log()
        self.assertNotIn("\x1b", log)
        for line in log.splitlines():
            self.assertFalse(line.startswith("2026-01-01T00:00:00.000Z"), line)
        st = d.cli_json("status")
        self.assertIn("nope", st["errors"][0]["message"])


class FullDisk(unittest.TestCase):
    """A remote-only log on a full disk names the disk (root only: it mounts a small tmpfs)."""

    def setUp(self):
        if os.geteuid() != 0 or shutil.which("mount") is None:
            self.skipTest("needs root to mount a small tmpfs as a full disk")
        self.tmp = tempfile.mkdtemp(prefix="ferry-fulldisk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.mnt = os.path.join(self.tmp, "mnt")
        os.makedirs(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", self.mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], capture_output=True)

    def test_remote_only_log_on_a_full_disk_says_so(self):
        d = Daemon(self.tmp, env={"FERRY_STATE_DIR": os.path.join(self.mnt, "state")})
        d.state_dir = os.path.join(self.mnt, "state")
        d.env["FERRY_STATE_DIR"] = d.state_dir
        self.addCleanup(d.stop)
        d.start()
        d.cli("log", "r0", "--remote", "s3://bucket/first")
        # Fill the disk.
        fd = os.open(os.path.join(self.mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(1 << 12):  # 4 MiB of tmpfs: bounded, unbuffered
                os.write(fd, b"\0" * (1 << 16))
        except OSError:
            pass
        finally:
            os.close(fd)
        p = d.cli("log", "r1", "--remote", "s3://bucket/" + "k" * 3000, check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("full", p.stderr)
        # Nothing queued was touched, and ferryd still serves.
        os.unlink(os.path.join(self.mnt, "filler"))
        self.assertEqual(d.cli_json("ls", "--all")["items"][0]["name"], "r0")
        d.cli("log", "r2", "--remote", "s3://bucket/again")


if __name__ == "__main__":
    unittest.main()
