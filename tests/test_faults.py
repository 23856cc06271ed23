"""The reliability suite's fault matrix: a hostile server never makes ferry lie.

Every row of FAULT_MATRIX is one hostile server behaviour (stand-in fault
rules) and what ferry must do about it:

- "parked": the answer is not Comet's (a web page, JSON without the fields,
  truncated JSON, the wrong content type, a redirect, a 404 page): the job is
  parked at once with a message that says what came back, the version is
  never CLOSED on the server, the node still serves its bytes, and after the
  server behaves `ferry retry --all` delivers it exactly once;
- "retried": the failure is transient (5xx, a reset, a trickle cut by the
  low-speed limit, an endless error body, 429 with an absurd Retry-After):
  the faulted requests were answered and retried, and the version is
  delivered exactly once, byte-identical.

In no row is a job ever "done" while the stand-in holds no CLOSED version.

Then the retry-policy acceptance tests: random faults with the default
policy, a step that never succeeds parks after max_attempts while others are
delivered, a trickle is cut by the low-speed limit (and a slow drip by the
deadline), stuck transfers hold no slot forever, offline is told apart from
transient failures (a web page on isAlive is not Comet), and 4,000-character
artifactVersionIds travel whole.
"""

import json
import os
import time
import unittest

from comettest import CometTestCase, daemon_is_sanitized, sha256_file

# A server text that tries to forge a log line and to drive the terminal.
FORGED_LINE = "2026-01-01T00:00:00.000Z ferryd info: job 1 delivered"
FORGERY = "\n" + FORGED_LINE + "\x1b[2J\r\n"

LOGIN_PAGE = ("<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
              "<form action=\"/login\">Single sign-on required" + FORGERY + "</form></body></html>")
NOT_FOUND_PAGE = "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
ERROR_PAGE = "<html><body><h1>500 Internal Server Error</h1>" + FORGERY + "</body></html>"

# Settings of the matrix's ferryd (small so that a row takes seconds).
MATRIX_ENV = {
    "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "1000", "FERRY_MAX_ATTEMPTS": "10",
    "FERRY_RETRY_AFTER_CAP_MS": "2000",
    "FERRY_LOW_SPEED_LIMIT": "1000", "FERRY_LOW_SPEED_TIME_S": "2",
}


def ok(r):
    return r.get("status") is not None and 200 <= r["status"] < 300


def same_step(a, b):
    """Two logged requests of the same step: endpoint and file (uploads), by arrival order."""
    return a["endpoint"] == b["endpoint"] and a.get("fileName") == b.get("fileName")


def show(r):
    """A request-log entry, short (long ids cut) for messages."""
    r = dict(r)
    for k in ("versionId", "fileName"):
        if isinstance(r.get(k), str) and len(r[k]) > 40:
            r[k] = r[k][:16] + "...(%d chars)" % len(r[k])
    return json.dumps(r, sort_keys=True)


# ------------------------------------------------------------ row checks

def check_trickle_cut(tc, row, hits, reqs):
    """Every trickled answer was cut by the low-speed limit, not waited out."""
    limit_s = int(MATRIX_ENV["FERRY_LOW_SPEED_TIME_S"])
    for h in hits:
        took = h["done"] - h["t"]
        tc.assertGreaterEqual(took, limit_s - 0.5, "cut before the low-speed time: %s" % show(h))
        tc.assertLessEqual(took, limit_s + 4.0, "a trickle held the transfer %.1fs: %s" % (took, show(h)))
        print("\n  trickle cut after %.1fs (%d body bytes)" % (took, h.get("sent", -1)), end="")


def check_endless_cut(tc, row, hits, reqs):
    """An error body that never ends is cut (ferry keeps at most 1 MiB of it) promptly."""
    for h in hits:
        took = h["done"] - h["t"]
        tc.assertLess(took, 10.0, "an endless error body held the transfer %.1fs: %s" % (took, show(h)))
        tc.assertGreaterEqual(h.get("sent", 0), 1 << 20, "cut before 1 MiB? %s" % show(h))
        tc.assertLess(h.get("sent", 0), 64 << 20, "read far past 1 MiB: %s" % show(h))
        print("\n  endless body cut after %.2fs, %d bytes sent" % (took, h["sent"]), end="")


def check_retry_after_capped(tc, row, hits, reqs):
    """A Retry-After of decades is honoured up to retry_after_cap_ms, not longer, not shorter."""
    cap = int(MATRIX_ENV["FERRY_RETRY_AFTER_CAP_MS"]) / 1000.0
    slack = 4.0 if tc.sanitized else 2.5
    for h in hits:
        later = [r for r in reqs if r["t"] > h["t"] and same_step(r, h)]
        tc.assertTrue(later, "never retried: %s" % show(h))
        gap = later[0]["t"] - h["done"]
        tc.assertLessEqual(gap, cap + slack, "retried %.2fs after a capped Retry-After (cap %.1fs)"
                           % (gap, cap))
        tc.assertGreaterEqual(gap, cap - 0.1, "retried %.2fs after the 429, before min(Retry-After, "
                                              "cap) = %.1fs" % (gap, cap))
        print("\n  retried %.2fs after the 429 (cap %.1fs)" % (gap, cap), end="")


PARKED, RETRIED = "parked", "retried"

# (name, fault rules, expectation, what the message must say, extra check)
# "says" is a list of alternatives: every tuple needs one of its words (case-insensitive).
FAULT_MATRIX = [
    ("html_on_upload", [{"endpoint": "uploadAsset", "html": True}],
     PARKED, [("HTML",), ("200",)], None),
    ("html_on_state", [{"endpoint": "state", "html": True}],
     PARKED, [("HTML",), ("200",)], None),
    ("html_on_upsert", [{"endpoint": "upsert", "html": True}],
     PARKED, [("HTML",), ("200",)], None),
    ("html_on_add_run", [{"endpoint": "addRun", "html": True}],
     PARKED, [("HTML",), ("200",)], None),
    ("html_everywhere", [{"endpoint": "*", "html": True}],
     PARKED, [("HTML",), ("200",)], None),
    ("empty_json_object_on_upsert", [{"endpoint": "upsert", "respond": {"status": 200, "body": "{}"}}],
     PARKED, [("artifactVersionId",)], None),
    ("truncated_json_on_upsert",
     [{"endpoint": "upsert", "respond": {"body": '{"artifactId": "4f1c0e", "artifactVersionId": "9b2e'}}],
     PARKED, [("JSON",)], None),
    ("text_plain_200_on_upload",
     [{"endpoint": "uploadAsset", "respond": {"content_type": "text/plain", "body": "OK" + FORGERY}}],
     PARKED, [("non-JSON", "not JSON", "text/plain"), ("200",)], None),
    ("no_content_type_200_on_state",
     [{"endpoint": "state", "respond": {"content_type": None, "body": "{}"}}],
     PARKED, [("content type", "content-type"), ("200",)], None),
    ("redirect_302_to_login_on_upsert",
     [{"endpoint": "upsert", "respond": {
         "status": 302, "content_type": "text/html; charset=utf-8", "body": LOGIN_PAGE,
         "headers": [["Location", "https://sso.example.com/login?next=%2Fapi%2Frest%2Fv2"]]}}],
     PARKED, [("302",), ("HTML", "redirect")], None),
    ("html_404_on_upload",
     [{"endpoint": "uploadAsset", "respond": {"status": 404, "content_type": "text/html",
                                              "body": NOT_FOUND_PAGE}}],
     PARKED, [("404",), ("HTML",)], None),
    ("html_500_twice_then_ok",
     [{"endpoint": "uploadAsset", "count": 2,
       "respond": {"status": 500, "content_type": "text/html", "body": ERROR_PAGE}}],
     RETRIED, None, None),
    ("forged_log_line_in_a_503_msg",
     [{"endpoint": "state", "status": 503, "msg": "busy" + FORGERY + "\x07\x9b31m", "count": 1}],
     RETRIED, None, None),
    ("reset_after_body_on_upload", [{"endpoint": "uploadAsset", "reset_after_body": True, "count": 2}],
     RETRIED, None, None),
    ("trickle_on_state", [{"endpoint": "state", "trickle": {"interval": 1.0}, "count": 2}],
     RETRIED, None, check_trickle_cut),
    ("endless_503_on_upsert", [{"endpoint": "upsert", "endless": {"status": 503}, "count": 1}],
     RETRIED, None, check_endless_cut),
    ("retry_after_999999999_on_429",
     [{"endpoint": "uploadAsset", "status": 429, "retry_after": "999999999", "count": 1}],
     RETRIED, None, check_retry_after_capped),
    ("retry_after_year_2100_on_429",
     [{"endpoint": "upsert", "status": 429, "retry_after": "Fri, 01 Jan 2100 00:00:00 GMT",
       "count": 1}],
     RETRIED, None, check_retry_after_capped),
]


class FaultCase(CometTestCase):
    """Helpers shared by the fault tests."""

    def setUp(self):
        super().setUp()
        self.sanitized = daemon_is_sanitized(self.daemon)
        # Cleanups run last-registered first: this one before the harness stops the daemon.
        self.addCleanup(self.stop_and_check_daemon)

    def stop_and_check_daemon(self):
        """ferryd exits 0 on SIGTERM and no sanitizer complained (they report on exit)."""
        d = self.daemon
        if d.proc is None:
            return
        code = d.stop()
        log = d.log()
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            self.assertNotIn(bad, log, "ferryd's log (%s)" % d.log_path)
        self.assertEqual(code, 0, "ferryd exited %s on SIGTERM" % code)

    # -- artifacts

    def make_artifact(self, name, sizes=(3000, 11000)):
        """Files with random content; returns {logical path: local path}."""
        files = {}
        for i, size in enumerate(sizes):
            lp = "%s-%d.bin" % (name, i)
            files[lp] = self.write(os.path.join(name, lp), os.urandom(size))
        return files

    def log(self, name, files):
        return self.daemon.cli_json("log", name, *files.values())["job"]

    # -- ferryd's view

    def job_item(self, job):
        for it in self.daemon.cli_json("ls", "--all")["items"]:
            if it["job"] == job:
                return it
        return None

    def closed(self, name):
        return [v for v in self.versions(name) if v["state"] == "CLOSED"]

    def wait_job(self, job, name, want, timeout, watch=None):
        """Poll until the job's state is in `want`; a job is never done while the
        stand-in holds no CLOSED version of it, and never ends in the wrong state."""
        deadline = time.monotonic() + timeout
        while True:
            it = self.job_item(job)
            state = it["state"] if it else None
            if state == "done":
                self.assertTrue(self.closed(name), "ferry says job %d (%s) is done but the stand-in "
                                "holds no CLOSED version: %r\n%s" % (job, name, self.versions(name),
                                                                     self.evidence()))
            if state in want:
                return it
            if state in ("done", "failed", "cancelled"):
                self.fail("job %d (%s) ended %s (error %r), expected %s\n%s"
                          % (job, name, state, it.get("error"), "/".join(sorted(want)), self.evidence()))
            if watch:
                watch(it)
            if time.monotonic() > deadline:
                self.fail("job %d (%s) still %s after %ds (error %r), expected %s\n%s"
                          % (job, name, state, timeout, it and it.get("error"), "/".join(sorted(want)),
                             self.evidence()))
            time.sleep(0.1)

    def evidence(self, lines=40, requests=20):
        log = self.daemon.log().splitlines()[-lines:]
        reqs = self.state()["requests"][-requests:]
        return "--- ferryd log (tail) ---\n%s\n--- stand-in requests (tail) ---\n%s" % (
            "\n".join(log), "\n".join(show(r) for r in reqs))

    # -- assertions

    def assertSays(self, message, says):
        self.assertIsInstance(message, str)
        low = message.lower()
        for words in says:
            self.assertTrue(any(w.lower() in low for w in words),
                            "message %r says none of %r" % (message, words))

    def assertDeliveredOnce(self, name, files):
        versions = self.versions(name)
        self.assertEqual(len(versions), 1, "%s: %d versions on the stand-in: %r" % (
            name, len(versions), [(v["version"], v["state"]) for v in versions]))
        self.assertEqual(versions[0]["state"], "CLOSED")
        self.assertEqual(sorted(self.files_of(versions[0])), sorted(files))
        self.assertBytes(versions[0], files)
        return versions[0]

    def assertLogClean(self):
        log = self.daemon.log()
        self.assertNotIn("\x1b", log, "an escape sequence from the server reached the log")
        for line in log.splitlines():
            self.assertFalse(line.startswith(FORGED_LINE[:24]), "forged log line: %r" % line)

    def assertDownloadable(self, name, files):
        out = os.path.join(self.tmp, "download-" + name)
        self.daemon.cli("download", name, out)
        for lp, path in files.items():
            self.assertEqual(sha256_file(os.path.join(out, lp)), sha256_file(path),
                             "%s/%s downloaded from the node differs" % (name, lp))


class FaultMatrix(FaultCase):
    """One test per FAULT_MATRIX row (generated below), each on its own stand-in and ferryd."""

    extra_env = MATRIX_ENV

    def run_row(self, name, rules, kind, says, check):
        artifact = name.replace("_", "-")
        files = self.make_artifact(artifact)
        self.standin.set_faults(rules)
        t0 = time.monotonic()
        job = self.log(artifact, files)
        if kind == PARKED:
            self.expect_parked(job, artifact, files, rules, says)
        else:
            self.expect_retried(job, artifact, files, rules, check)
        self.assertLogClean()
        print("\n  %s: %s, %.1fs " % (name, kind, time.monotonic() - t0), end="")

    def expect_parked(self, job, name, files, rules, says):
        d = self.daemon
        item = self.wait_job(job, name, {"failed"}, 30)
        self.assertSays(item["error"], says)
        # Parked at once: no step was sent twice.
        reqs = self.state()["requests"]
        hits = [r for r in reqs if r.get("fault") and r["endpoint"] != "isAlive"]
        self.assertTrue(hits, "the fault never fired")
        steps = [(r["endpoint"], r.get("fileName")) for r in hits]
        self.assertEqual(len(steps), len(set(steps)), "a step was retried after a permanent answer:\n%s"
                         % "\n".join(show(r) for r in hits))
        # Never CLOSED while the answers were not Comet's.
        self.assertEqual(self.closed(name), [])
        # What ferry tells: ls --failed, status errors.
        failed = [i for i in d.cli_json("ls", "--failed")["items"] if i["job"] == job]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["state"], "failed")
        self.assertSays(failed[0]["error"], says)
        st = d.cli_json("status")
        self.assertEqual(st["failed"], 1)
        self.assertIn("last_error", st)
        self.assertTrue(st["online"], "an answer, even a web page, is not offline: %r" % st)
        errs = [e for e in st["errors"] if e["job"] == job]
        self.assertEqual(len(errs), 1, st["errors"])
        self.assertEqual(errs[0]["name"], name)
        self.assertTrue(errs[0]["code"])
        self.assertSays(errs[0]["message"], says)
        # The node keeps the bytes: download works while the server is still hostile.
        # (A subTest: a failure here is reported and the row goes on to the retry.)
        with self.subTest("download the parked version from the node"):
            self.assertDownloadable(name, files)
        # The server behaves again: retry delivers, exactly once.
        self.standin.set_faults([])
        rep = d.cli_json("retry", "--all")
        self.assertEqual(rep.get("requeued"), 1, rep)
        self.wait_job(job, name, {"done"}, 60)
        self.assertDeliveredOnce(name, files)
        self.assertEqual(d.cli_json("status")["failed"], 0)

    def expect_retried(self, job, name, files, rules, check):
        d = self.daemon
        waits = []  # next_attempt - now (ms) of the queued job after a 429 was answered

        def watch(it):
            if (it and it["state"] == "queued" and it.get("next_attempt") and
                    any(r.get("status") == 429 and r.get("done") for r in self.state()["requests"])):
                waits.append(it["next_attempt"] - time.time() * 1000)

        retry_after = any(r.get("retry_after") is not None for r in rules)
        self.wait_job(job, name, {"done"}, 90 if self.sanitized else 60,
                      watch=watch if retry_after else None)
        if retry_after:
            cap_ms = int(MATRIX_ENV["FERRY_RETRY_AFTER_CAP_MS"])
            self.assertTrue(all(w <= cap_ms + 250 for w in waits),
                            "next_attempt beyond retry_after_cap_ms (%d ms) of now: %r" % (cap_ms, waits))
            if waits:
                print("\n  ls next_attempt at most %.0f ms ahead (%d samples)" % (max(waits), len(waits)),
                      end="")
        self.assertDeliveredOnce(name, files)
        reqs = self.state()["requests"]
        for rule in rules:
            hits = [r for r in reqs if r.get("fault") and
                    (rule["endpoint"] == "*" or r["endpoint"] == rule["endpoint"])]
            self.assertEqual(len(hits), rule["count"], "the fault fired %d times, not %d:\n%s"
                             % (len(hits), rule["count"], "\n".join(show(r) for r in hits)))
            for h in hits:
                self.assertIsNotNone(h["done"], "the stand-in never finished: %s" % show(h))
                self.assertTrue(any(ok(r) and r["t"] > h["t"] and same_step(r, h) for r in reqs),
                                "no successful retry after %s" % show(h))
            if check:
                check(self, rule, hits, reqs)
        st = d.cli_json("status")
        self.assertEqual(st["failed"], 0)
        self.assertTrue(st["online"])


def _matrix_test(row):
    name, rules, kind, says, check = row

    def test(self):
        self.run_row(name, rules, kind, says, check)
    test.__name__ = "test_%s_%s" % (kind, name)
    test.__doc__ = "%s -> %s" % (json.dumps(rules)[:120], kind)
    return test


for _row in FAULT_MATRIX:
    _t = _matrix_test(_row)
    setattr(FaultMatrix, _t.__name__, _t)
del _row, _t


class RandomFaultsDefaultPolicy(FaultCase):
    """Acceptance: 20 artifacts x 3 files through 30% 503, 10% 429 (Retry-After 1), 5% resets,
    with ferryd's default retry policy (nothing set: 1 s base, 5 s cap for ten failures in a row,
    then 60 s, 30 attempts)."""

    def test_twenty_artifacts_arrive_once_in_time_and_retry_after_is_honoured(self):
        d = self.daemon
        # First matching rule wins: scale each rule by what the earlier ones left.
        p503, p429, preset = 0.30, 0.10, 0.05
        self.standin.set_faults([
            {"endpoint": "*", "status": 503, "probability": p503},
            {"endpoint": "*", "status": 429, "retry_after": 1, "probability": p429 / (1 - p503)},
            {"endpoint": "*", "reset": True, "probability": preset / (1 - p503 - p429)},
        ])
        local = {}
        for i in range(20):
            local["rnd%02d" % i] = {
                "r%02d-%d.bin" % (i, j): self.write("rnd/%02d/r%02d-%d.bin" % (i, i, j),
                                                    os.urandom(1000 + 997 * j + 13 * i))
                for j in range(3)}
        limit = 90.0 if self.sanitized else 45.0
        t0 = time.monotonic()
        jobs = [self.log(name, files) for name, files in local.items()]
        logged = time.monotonic() - t0
        p = d.cli("wait", "--timeout", str(int(limit + 60)), check=False, timeout=limit + 120)
        took = time.monotonic() - t0
        self.standin.set_faults([])
        st = self.state()
        reqs = st["requests"]
        fired = {}
        for r in reqs:
            if r.get("fault"):
                key = "%s %s" % (r["fault"], r["status"])
                fired[key] = fired.get(key, 0) + 1
        print("\n  drained %.1fs after the first log (logging took %.1fs, limit %.0fs); "
              "%d requests, faults %s" % (took, logged, limit, len(reqs), fired), end="")
        status = d.cli_json("status")
        if status["queued"] or status["running"]:
            left = [(i["name"], i["state"], i["attempts"], i["error"]) for i in d.cli_json("ls")["items"]]
            self.fail("not drained %.0fs after the first log (limit %.0fs): %r" % (took, limit, left))
        self.assertEqual(p.returncode, 0, "wait: %s %s; status errors %r\n%s"
                         % (p.stdout, p.stderr, status["errors"], self.evidence()))
        self.assertEqual(status["failed"], 0, status["errors"])
        for name, files in local.items():
            self.assertDeliveredOnce(name, files)
        self.assertEqual(len(jobs), 20)
        self.assertGreater(sum(fired.values()), 20, "the faults did not fire")
        # No request before its Retry-After: once a 429 for a version was answered, nothing for
        # that version arrives sooner than 1 s later (50 ms of clock slack).  Exempt: requests of
        # OTHER steps of the version (its parallel uploads) that arrive within IN_FLIGHT of the
        # answer -- ferryd had sent them before it could have read the 429.  The 429's own step
        # is never exempt.
        in_flight = 0.1 if self.sanitized else 0.025
        checked, concurrent, early = 0, 0, []
        for i, r in enumerate(reqs):
            if r.get("status") != 429 or not r.get("versionId"):
                continue
            self.assertIsNotNone(r["done"])
            for later in reqs[i + 1:]:
                if later.get("versionId") != r["versionId"] or later["t"] <= r["done"]:
                    continue
                gap = later["t"] - r["done"]
                if gap < in_flight and not same_step(later, r):
                    concurrent += 1
                    continue
                checked += 1
                if gap < 1.0 - 0.05:
                    early.append("%.3fs after %s: %s" % (gap, show(r), show(later)))
        print("; %d requests after a 429 checked, %d concurrent ones exempt" % (checked, concurrent),
              end="")
        self.assertEqual(early, [], "requests before their Retry-After:\n" + "\n".join(early))
        self.assertGreater(checked, 0, "no 429 was followed by a request to check")
        self.assertLessEqual(took, limit, "all 20 delivered, exactly once, but %.1fs after the first "
                             "log: more than %.0fs" % (took, limit))


class AttemptsAreBounded(FaultCase):
    extra_env = {"FERRY_MAX_ATTEMPTS": "5", "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "400"}

    def test_an_always_resetting_upload_parks_while_others_are_delivered_online(self):
        d = self.daemon
        self.standin.set_faults([{"endpoint": "uploadAsset", "match_file": "doomed.bin", "reset": True}])
        doomed = {"doomed.bin": self.write("doomed/doomed.bin", os.urandom(30000)),
                  "fine.bin": self.write("doomed/fine.bin", os.urandom(2000))}
        bystander = self.make_artifact("bystander")
        job = self.log("doomed", doomed)
        other = self.log("bystander", bystander)
        samples = []

        def sample(_item):
            samples.append(d.cli_json("status")["online"])

        item = self.wait_job(job, "doomed", {"failed"}, 60, watch=sample)
        self.wait_job(other, "bystander", {"done"}, 30, watch=sample)
        for _ in range(5):
            sample(None)
            time.sleep(0.1)
        self.assertIn("gave up after 5 failed attempts", item["error"])
        resets = [r for r in self.state()["requests"]
                  if r["endpoint"] == "uploadAsset" and r.get("fileName") == "doomed.bin"]
        self.assertEqual(len(resets), 5, "uploads of doomed.bin:\n" + "\n".join(map(show, resets)))
        self.assertTrue(all(r.get("fault") == "reset" for r in resets))
        self.assertGreater(len(samples), 5)
        self.assertTrue(all(samples), "status went offline while the server answered: %r" % samples)
        self.assertDeliveredOnce("bystander", bystander)
        st = d.cli_json("status")
        err = [e for e in st["errors"] if e["job"] == job]
        self.assertIn("gave up after 5 failed attempts", err[0]["message"])
        self.assertEqual(self.closed("doomed"), [])
        # The server heals: the parked job resumes and finishes, nothing sent twice.
        self.standin.set_faults([])
        d.cli("retry", "--all")
        self.wait_job(job, "doomed", {"done"}, 30)
        self.assertDeliveredOnce("doomed", doomed)
        print("\n  %d status samples, all online" % len(samples), end="")


class SlowServers(FaultCase):
    extra_env = {"FERRY_LOW_SPEED_LIMIT": "1000", "FERRY_LOW_SPEED_TIME_S": "2",
                 "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "500", "FERRY_MAX_ATTEMPTS": "3"}

    def test_a_trickled_upload_answer_is_cut_by_the_low_speed_limit_and_retried(self):
        self.standin.set_faults([{"endpoint": "uploadAsset", "trickle": {"interval": 1.0}, "count": 1}])
        files = self.make_artifact("trickled", sizes=(4000,))
        t0 = time.monotonic()
        job = self.log("trickled", files)
        self.wait_job(job, "trickled", {"done"}, 30)
        took = time.monotonic() - t0
        self.assertDeliveredOnce("trickled", files)
        reqs = self.state()["requests"]
        trickles = [r for r in reqs if r.get("fault") == "trickle"]
        self.assertEqual(len(trickles), 1)
        cut = trickles[0]["done"] - trickles[0]["t"]
        print("\n  trickle cut after %.1fs; delivered %.1fs after the log" % (cut, took), end="")
        self.assertGreaterEqual(cut, 1.5)
        self.assertLessEqual(cut, 6.0, "the trickle held the upload %.1fs: %s" % (cut, show(trickles[0])))

    def test_stuck_transfers_hold_no_slot_forever(self):
        """FERRY_MAX_JOBS=2, both taken by uploads whose answers trickle: a third artifact still goes."""
        self.daemon.stop()
        env = dict(self.daemon_env)
        env["FERRY_MAX_JOBS"] = "2"
        d = self.daemon = self.start_daemon(env=env, root=os.path.join(self.tmp, "two-slots"))
        self.standin.set_faults([
            {"endpoint": "uploadAsset", "match_file": "stuck1-0.bin", "trickle": {"interval": 1.0}},
            {"endpoint": "uploadAsset", "match_file": "stuck2-0.bin", "trickle": {"interval": 1.0}},
        ])
        stuck = {n: self.make_artifact(n, sizes=(2000,)) for n in ("stuck1", "stuck2")}
        jobs = {n: self.log(n, f) for n, f in stuck.items()}
        self.wait_until(lambda: len([r for r in self.state()["requests"] if r.get("fault") == "trickle"]) >= 2,
                        20, "both uploads to be trickled")
        free = self.make_artifact("free", sizes=(2000,))
        t0 = time.monotonic()
        job = self.log("free", free)
        self.wait_job(job, "free", {"done"}, 40)
        took = time.monotonic() - t0
        self.assertDeliveredOnce("free", free)
        for n, j in jobs.items():
            it = self.wait_job(j, n, {"failed"}, 40)
            self.assertIn("gave up after 3 failed attempts", it["error"])
            self.assertEqual(self.closed(n), [])
        print("\n  third artifact delivered %.1fs after it was logged" % took, end="")


class Deadline(FaultCase):
    # The drip (500 B/s) passes the low-speed limit; only the overall deadline can cut it.
    extra_env = {"FERRY_LOW_SPEED_LIMIT": "100", "FERRY_LOW_SPEED_TIME_S": "60",
                 "FERRY_DEADLINE_BASE_S": "3", "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "500"}

    def test_a_drip_fast_enough_for_the_low_speed_limit_is_cut_by_the_deadline(self):
        self.standin.set_faults([{"endpoint": "state", "trickle": {"interval": 0.002}, "count": 1}])
        files = self.make_artifact("dripped", sizes=(3000,))
        job = self.log("dripped", files)
        self.wait_job(job, "dripped", {"done"}, 40)
        self.assertDeliveredOnce("dripped", files)
        drips = [r for r in self.state()["requests"] if r.get("fault") == "trickle"]
        self.assertEqual(len(drips), 1)
        cut = drips[0]["done"] - drips[0]["t"]
        print("\n  drip cut after %.1fs, %d bytes" % (cut, drips[0].get("sent", -1)), end="")
        self.assertGreaterEqual(cut, 2.5)
        self.assertLessEqual(cut, 7.0, show(drips[0]))


class OfflineVersusTransient(FaultCase):
    def offline_status(self):
        st = self.daemon.cli_json("status")
        return st if not st["online"] else None

    def test_unreachable_is_offline_and_a_web_page_on_isalive_is_not_comet(self):
        d = self.daemon
        # 1. Every connection reset: offline, no attempt spent, delivered once it is back.
        self.standin.set_down(True)
        first = self.make_artifact("while-down")
        job = self.log("while-down", first)
        st = self.wait_until(self.offline_status, 10, "status to say offline")
        self.assertIsNotNone(st["offline_since"])
        self.assertTrue(st["last_error"])
        end = time.monotonic() + 3
        while time.monotonic() < end:
            it = self.job_item(job)
            self.assertEqual(it["attempts"], 0, "an attempt spent while offline: %r" % it)
            self.assertEqual(it["state"], "queued", it)
            self.assertFalse(d.cli_json("status")["online"])
            time.sleep(0.25)
        self.standin.set_down(False)
        self.wait_job(job, "while-down", {"done"}, 30)
        self.assertDeliveredOnce("while-down", first)
        self.assertTrue(d.cli_json("status")["online"])

        # 2. Offline again; the server comes back as a web page on isAlive: still offline.
        self.standin.set_down(True)
        second = self.make_artifact("behind-portal")
        job = self.log("behind-portal", second)
        self.wait_until(self.offline_status, 10, "status to say offline again")
        self.standin.set_faults([{"endpoint": "isAlive", "html": True}])
        portal_from = time.time()
        self.standin.set_down(False)
        t0 = time.monotonic()
        seen_html = None
        while time.monotonic() - t0 < 20:
            st = d.cli_json("status")
            self.assertFalse(st["online"], "a login page on isAlive made ferryd online: %r\n%s"
                             % (st, self.evidence()))
            if seen_html is None and "html" in (st["last_error"] or "").lower():
                seen_html = time.monotonic()
            if seen_html is not None and time.monotonic() - seen_html > 3 and time.monotonic() - t0 > 3:
                break
            time.sleep(0.2)
        self.assertIsNotNone(seen_html, "last_error never mentioned the HTML page: %r" % st["last_error"])
        it = self.job_item(job)
        self.assertEqual((it["state"], it["attempts"]), ("queued", 0), it)
        window = [r for r in self.state()["requests"] if r["t"] >= portal_from]
        probes = [r for r in window if r["endpoint"] == "isAlive"]
        self.assertTrue(probes and all(r.get("fault") == "html" for r in probes), window)
        held = [r for r in window if r["endpoint"] != "isAlive"]
        self.assertEqual(held, [], "requests sent while offline:\n" + "\n".join(map(show, held)))
        print("\n  offline for %.1fs behind the portal, %d probes" % (time.monotonic() - t0, len(probes)),
              end="")
        # 3. The portal goes away: online, delivered.
        self.standin.set_faults([])
        self.wait_job(job, "behind-portal", {"done"}, 30)
        self.assertDeliveredOnce("behind-portal", second)
        self.assertTrue(d.cli_json("status")["online"])


class LongVersionIds(FaultCase):
    def test_a_4000_character_artifact_version_id_is_delivered_whole(self):
        d = self.daemon
        self.standin.set_config(version_id_length=4000)
        files = self.make_artifact("long-id", sizes=(2000, 5000))
        nested = os.path.join(self.tmp, "long-id-dir")
        deep = self.write("long-id-dir/deep/er/c d.bin", os.urandom(3000))
        job = d.cli_json("log", "long-id", *files.values(), nested)["job"]
        files["deep/er/c d.bin"] = deep
        self.wait_job(job, "long-id", {"done"}, 30)
        v = self.assertDeliveredOnce("long-id", files)
        vid = v["artifactVersionId"]
        self.assertEqual(len(vid), 4000)
        reqs = self.state()["requests"]
        uploads = [r for r in reqs if r["endpoint"] == "uploadAsset"]
        self.assertEqual(len(uploads), 3, "\n".join(map(show, uploads)))
        for r in uploads:
            self.assertEqual(len(r.get("versionId") or ""), 4000, show(r))
            self.assertEqual(r["versionId"], vid)
            self.assertIn(r.get("fileName"), files, show(r))
            self.assertEqual(r["status"], 200, show(r))
        self.assertEqual(sorted(r["fileName"] for r in uploads), sorted(files))
        states = [r for r in reqs if r["endpoint"] == "state"]
        self.assertTrue(states and all(r.get("versionId") == vid for r in states))
        # And it can be read back from Comet by that id.
        out = os.path.join(self.tmp, "long-id-out")
        d.cli("download", "long-id", out)
        for lp, path in files.items():
            self.assertEqual(sha256_file(os.path.join(out, lp)), sha256_file(path), lp)


if __name__ == "__main__":
    unittest.main()
