"""The Comet backend against the stand-in (issue 3, acceptance 1, 2, 3, 6)."""

import json
import os
import time
import unittest

from comettest import CometTestCase, daemon_cpu_seconds


class CometRoundTrip(CometTestCase):
    def test_five_artifacts_three_files_each(self):
        d = self.daemon
        local = {}
        for i in range(5):
            files = []
            for j in range(3):
                files.append(self.write("a%d/f%d.bin" % (i, j), os.urandom(10_000 * (j + 1)) + b"%d" % i))
            local["art%d" % i] = files
            args = ["log", "art%d" % i] + files + ["--type", "model", "--alias", "best",
                                                   "--tag", "t%d" % i, "--metadata",
                                                   json.dumps({"i": i, "nested": {"k": [1, 2]}})]
            if i % 2 == 0:
                args += ["--version", "%d.2.3" % (i + 1)]
            d.cli(*args)
        # A second, automatic version of art1: next major.
        d.cli("log", "art1", local["art1"][0], "--alias", "best")
        self.wait_drained()

        st = self.state()
        self.assertEqual(st["counts"].get("upsert"), 6, "exactly one upsert per logged version")
        self.assertEqual(len(st["experiments"]), 6)
        for i in range(5):
            versions = self.versions("art%d" % i)
            self.assertTrue(versions)
            v = versions[0]
            self.assertEqual(v["state"], "CLOSED")
            self.assertEqual(v["version"], "%d.2.3" % (i + 1) if i % 2 == 0 else "1.0.0")
            self.assertEqual(v["tags"], ["t%d" % i])
            self.assertEqual(v["metadata"], {"i": i, "nested": {"k": [1, 2]}})
            self.assertBytes(v, {os.path.basename(p): p for p in local["art%d" % i]})
        art1 = self.versions("art1")
        self.assertEqual([v["version"] for v in art1], ["1.0.0", "2.0.0"])
        self.assertIn("best", art1[1]["aliases"])
        self.assertNotIn("best", art1[0]["aliases"])
        self.assertIn("Latest", art1[1]["aliases"])
        self.assertEqual(d.cli_json("status")["done"], 6)

    def test_remote_assets_and_asset_metadata(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        f = self.write("x.txt", "x")
        rep = c.request("artifact.log", name="mixed", assets=[
            {"logical_path": "x.txt", "file": f, "metadata": {"k": "v"}},
            {"logical_path": "weights", "remote": "s3://bucket/weights.bin"}])
        self.assertTrue(rep["ok"], rep)
        c.close()
        self.wait_drained()
        v = self.versions("mixed")[0]
        files = self.files_of(v)
        self.assertEqual(files["x.txt"]["metadata"], {"k": "v"})
        self.assertTrue(files["weights"]["remote"])
        self.assertEqual(files["weights"]["link"], "s3://bucket/weights.bin")
        self.assertEqual(v["state"], "CLOSED")

    def test_version_with_no_assets_is_closed_at_once(self):
        c = self.daemon.raw()
        c.hello()
        self.assertTrue(c.request("artifact.log", name="empty")["ok"])
        c.close()
        self.wait_drained()
        self.assertEqual(self.versions("empty")[0]["state"], "CLOSED")

    def test_shared_experiment_is_registered_once(self):
        d = self.daemon
        key = d.cli("experiment").stdout.strip()
        self.assertEqual(len(key), 32)
        for i in range(3):
            d.cli("log", "shared", self.write("s%d" % i, "s%d" % i), "--experiment", key)
        self.wait_drained()
        st = self.state()
        self.assertIn(key, st["experiments"])
        self.assertEqual(st["counts"].get("addRun"), 1)
        self.assertEqual(st["experiments"][key]["workspace"], "team")
        self.assertEqual(st["experiments"][key]["project"], "proj")


class CometFaults(CometTestCase):
    extra_env = {"FERRY_RETRY_BASE_MS": "50", "FERRY_RETRY_CAP_MS": "500", "FERRY_MAX_ATTEMPTS": "1000"}

    def test_flaky_server_every_artifact_arrives_once_and_retry_after_is_honoured(self):
        d = self.daemon
        self.standin.set_faults([
            {"endpoint": "*", "status": 503, "probability": 0.30},
            {"endpoint": "*", "status": 429, "retry_after": 1, "probability": 0.10 / 0.70},
            {"endpoint": "*", "reset": True, "probability": 0.05 / 0.60},
        ])
        local = {}
        for i in range(20):
            a = self.write("flaky/%d/a.bin" % i, os.urandom(5000 + i))
            b = self.write("flaky/%d/b.bin" % i, os.urandom(7000 + i))
            local["flaky%d" % i] = {"a.bin": a, "b.bin": b}
            d.cli("log", "flaky%d" % i, a, b)
        self.wait_drained(timeout=240)
        self.standin.set_faults([])
        st = self.state()
        for name, files in local.items():
            versions = self.versions(name)
            self.assertEqual(len(versions), 1, "%s: %d versions" % (name, len(versions)))
            self.assertEqual(versions[0]["state"], "CLOSED")
            self.assertBytes(versions[0], files)
        faults = [r for r in st["requests"] if r.get("fault")]
        self.assertGreater(len(faults), 10, "the faults did not fire")
        # No request comes back before its Retry-After: for every 429 on an upload or a
        # close, the next request for the same version and file is at least 1 s later.
        checked = 0
        reqs = st["requests"]
        for i, r in enumerate(reqs):
            if r.get("status") != 429 or not r.get("versionId"):
                continue
            key = (r["endpoint"], r["versionId"], r.get("fileName"))
            for later in reqs[i + 1:]:
                if (later["endpoint"], later.get("versionId"), later.get("fileName")) == key:
                    self.assertGreaterEqual(later["t"] - r["t"], 0.95, "retried before Retry-After: %r" % (later,))
                    checked += 1
                    break
        self.assertGreater(checked, 0, "no 429 was followed by a retry to check")

    def test_cpu_stays_idle_while_waiting_for_retry_after(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "*", "status": 429, "retry_after": 3}])
        for i in range(5):
            d.cli("log", "waiting%d" % i, self.write("w%d" % i, "w"))
        time.sleep(0.5)
        cpu0, t0 = daemon_cpu_seconds(d), time.monotonic()
        time.sleep(3)
        cpu = daemon_cpu_seconds(d) - cpu0
        wall = time.monotonic() - t0
        self.assertLess(cpu / wall, 0.05, "ferryd used %.2fs of CPU in %.1fs while waiting" % (cpu, wall))
        self.standin.set_faults([])
        self.wait_drained()
        print("\nCPU while waiting on Retry-After: %.3fs over %.1fs" % (cpu, wall))


class CometOffline(CometTestCase):
    def test_backend_down_logging_stays_fast_attempts_do_not_grow(self):
        d = self.daemon
        self.standin.set_down(True)
        durations = []
        for i in range(5):
            t = time.monotonic()
            d.cli("log", "offline%d" % i, self.write("o%d" % i, os.urandom(20_000)))
            durations.append(time.monotonic() - t)
        self.assertLess(max(durations), 1.0, durations)
        st = self.wait_until(lambda: (lambda s: s if not s["online"] else None)(d.cli_json("status")),
                             what="status to say offline")
        self.assertIsNotNone(st["offline_since"])
        self.assertTrue(st["last_error"])
        time.sleep(3)  # several probe rounds
        items = d.cli_json("ls")["items"]
        self.assertEqual(len(items), 5)
        self.assertTrue(all(i["attempts"] == 0 for i in items), items)
        self.assertTrue(all(i["state"] == "queued" for i in items), items)

        back = time.monotonic()
        self.standin.set_down(False)
        self.wait_drained(timeout=60)
        took = time.monotonic() - back
        self.assertLess(took, 15, "drained %.1fs after the backend came back" % took)
        for i in range(5):
            self.assertEqual(self.versions("offline%d" % i)[0]["state"], "CLOSED")
        self.assertTrue(d.cli_json("status")["online"])
        print("\nlog while offline: max %.3fs; drained %.1fs after return" % (max(durations), took))


class CometPermanent(CometTestCase):
    def test_permanent_error_parks_then_retry_delivers(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "uploadAsset", "match_file": "bad.bin", "status": 400,
                                  "msg": "file rejected by policy", "sdk_error_code": 12345,
                                  "count": 1}])
        good = self.write("good.bin", "good")
        bad = self.write("bad.bin", "bad")
        rep = d.cli_json("log", "parked", good, bad)
        job = rep["job"]
        d.cli("log", "other", good)
        p = d.cli("wait", "--timeout", "30", check=False)
        self.assertEqual(p.returncode, 1)  # drained, with a failure
        self.assertEqual(self.versions("other")[0]["state"], "CLOSED")  # not held up
        st = d.cli_json("status")
        self.assertEqual(st["failed"], 1)
        self.assertIn("file rejected by policy", st["errors"][0]["message"])
        self.assertEqual(st["errors"][0]["code"], "12345")
        human = d.cli("status").stdout
        self.assertIn("file rejected by policy", human)

        d.cli("retry", str(job))
        self.wait_drained()
        v = self.versions("parked")
        self.assertEqual(len(v), 1, "retry must resume the same version, not upsert again")
        self.assertEqual(v[0]["state"], "CLOSED")
        self.assertBytes(v[0], {"good.bin": good, "bad.bin": bad})
        self.assertEqual(self.state()["counts"]["upsert"], 2)

    def test_bad_api_key_is_permanent_with_the_servers_message(self):
        self.daemon.stop()
        env = dict(self.daemon_env)
        env["COMET_API_KEY"] = "wrong-key"
        d = self.start_daemon(env=env, root=os.path.join(self.tmp, "second"))
        d.cli("log", "denied", self.write("d", "d"))
        d.cli("wait", "--timeout", "30", check=False)
        st = d.cli_json("status")
        self.assertEqual(st["failed"], 1)
        self.assertIn("401", st["errors"][0]["message"])


if __name__ == "__main__":
    unittest.main()


class CometConfigFiles(CometTestCase):
    def test_comet_config_file_selects_and_configures_the_backend(self):
        """No COMET_* variables: ~/.comet.config alone makes ferryd talk to Comet."""
        self.daemon.stop()
        root = os.path.join(self.tmp, "cfg")
        os.makedirs(root)
        with open(os.path.join(root, ".comet.config"), "w") as f:
            f.write("[comet]\napi_key = %s\nurl_override = %s\nworkspace = fromfile\n"
                    "project_name = p2\n" % (self.daemon_env["COMET_API_KEY"], self.standin.url))
        env = {"FERRY_RETRY_BASE_MS": "100"}
        d = self.start_daemon(env=env, root=root)
        self.assertEqual(d.cli_json("status")["backend"], "comet")
        d.cli("log", "configured", self.write("c.txt", "c"))
        d.cli("wait", "--timeout", "30")
        arts = [a for a in self.state()["artifacts"] if a["name"] == "configured"]
        self.assertEqual(arts[0]["workspace"], "fromfile")
        self.assertEqual(arts[0]["versions"][0]["state"], "CLOSED")

    def test_forced_local_backend_ignores_the_key(self):
        self.daemon.stop()
        env = dict(self.daemon_env)
        env["FERRY_BACKEND"] = "local"
        d = self.start_daemon(env=env, root=os.path.join(self.tmp, "forced"))
        self.assertEqual(d.cli_json("status")["backend"], "local")


class CometUndeliverable(CometTestCase):
    def test_lost_snapshot_sets_the_version_to_error(self):
        d = self.daemon
        c = d.raw()
        c.hello()
        # Let the upsert happen, then hold the uploads while the snapshot disappears.
        self.standin.set_faults([{"endpoint": "uploadAsset", "status": 503, "retry_after": 2,
                                  "count": 1}])
        d.cli("log", "doomed", self.write("gone.bin", os.urandom(1000)))
        self.wait_until(lambda: self.versions("doomed"), what="the upsert")
        c.request("pause", paused=True)
        spool = os.path.join(d.state_dir, "spool")
        for name in os.listdir(spool):
            if name != "staging":
                os.unlink(os.path.join(spool, name))
        c.request("pause", paused=False)
        c.close()
        p = d.cli("wait", "--timeout", "30", check=False)
        self.assertEqual(p.returncode, 1)
        self.wait_until(lambda: self.versions("doomed")[0]["state"] == "ERROR",
                        what="the version to be set to ERROR")
        err = d.cli_json("status")["errors"][0]
        self.assertIn("snapshot", err["message"])
