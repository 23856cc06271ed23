"""Chaos: SIGKILLs of ferryd, backend faults and outages while clients log.

The invariant (DESIGN.md, "No loss, no duplicates"): every version a client
got an ok reply for reaches the backend exactly once, CLOSED, with every asset
byte-identical -- across repeated SIGKILLs of ferryd, backend faults (503, 429
with Retry-After, connection resets) and outages (the stand-in down).

Three client threads log small random files over the raw wire protocol, each
version tagged with a unique token in its metadata (a tenth of them with an
explicit version); the main thread plays chaos for FERRY_CHAOS_SECONDS: kill -9
and restart ferryd, fault windows, down windows. Then the backend comes back,
`ferry wait` drains the queue, and the stand-in's registry is checked token by
token against what the clients were told:

* acked: exactly one CLOSED version carries the token, with the logged name,
  the requested version (if any), and exactly the logged files, byte-identical;
  ferryd's queue says done, with the backend's version; automatic versions of
  one artifact are numbered in log order (README "Order").
* no reply (the daemon died mid-request): at most one CLOSED version, and if
  so byte-identical. Never sent (the socket was already dead) or refused: none.
* nothing else: no version left OPEN with assets or in ERROR, no job failed.

Allowed by the README's documented crash windows ("Comet backend"), counted,
bounded, and each matched to a kill of ferryd between the server's success and
ferryd's repeat: an empty OPEN version left by an automatic version's upsert
re-sent after a kill (at most one per artifact per kill), and an asset
uploaded again (overwrite=true) after a kill (at most 4 per kill).

Also: ferryd never exits by itself (each exit is our SIGKILL), restarts cleanly,
shuts down with status 0 at the end, and its log has no sanitizer report.

Environment: FERRY_CHAOS_SECONDS (default 25), FERRY_CHAOS_SEED (default
time-based, printed first), FERRY_CHAOS_EXPLICIT (share of logs with an
explicit version, default 0.1), FERRY_CHAOS_LOG_LEVEL (ferryd's, default
info), FERRY_CHAOS_DUMP=FILE (write the stand-in's state, the chaos timeline
and the ledger as JSON). One "chaos summary:" JSON line goes to stderr.
"""

import collections
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
import unittest
import uuid

from comettest import CometTestCase
from ferrytest import RawClient

CHAOS_SECONDS = float(os.environ.get("FERRY_CHAOS_SECONDS", "25"))
SEED = int(os.environ.get("FERRY_CHAOS_SEED", str(time.time_ns() % (1 << 31))))
EXPLICIT_SHARE = float(os.environ.get("FERRY_CHAOS_EXPLICIT", "0.1"))
CLIENTS = 3
NAMES = ["chaos-alpha", "chaos-beta", "chaos-gamma"]
RECONNECT_SECONDS = 60.0  # a client waits this long for the socket after a kill
REPLY_TIMEOUT = 30.0      # a log reply slower than this is a hang, not chaos
# ferry wait after the chaos: the backlog grows with the chaos (offline spells hold the queue)
WAIT_TIMEOUT = int(max(180, CHAOS_SECONDS))
ARRIVAL_SLACK = 1.0       # s: how late the stand-in may stamp a request's arrival
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "runtime error:")

# Effective rates in a fault window: 30% 503, 10% 429 (Retry-After: 1), 5% reset.
# The stand-in tries the rules in order, each with its own random number, so
# the later rules carry conditional probabilities.
FAULT_RULES = [
    {"endpoint": "*", "status": 503, "probability": 0.30},
    {"endpoint": "*", "status": 429, "retry_after": 1, "probability": 0.10 / 0.70},
    {"endpoint": "*", "reset": True, "probability": 0.05 / 0.60},
]


def semver_key(v):
    """(major, minor, patch) of a strict semver string (pre-release ignored)."""
    core = v.split("+", 1)[0].split("-", 1)[0]
    return tuple(int(x) for x in core.split("."))


class Ledger:
    """What the clients were told, per token."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}        # token -> {"name", "version", "files": {lp: sha256}, "client"}
        self.acked = {}       # token -> job id (ok reply)
        self.unknown = set()  # sent, no reply (ferryd died): may exist, never twice
        self.unsent = set()   # sending failed (ferryd already gone): must not exist
        self.refused = {}     # token -> error reply: must not exist (and is unexpected)
        self.hangs = []       # tokens whose reply took longer than REPLY_TIMEOUT
        self.errors = []      # client failures that ended a client thread


class Chaos(CometTestCase):
    extra_env = {"FERRY_LOG_LEVEL": os.environ.get("FERRY_CHAOS_LOG_LEVEL", "info")}

    # ---- clients

    def connect(self):
        """A hello'd RawClient, retrying while ferryd restarts (bounded)."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        last = None
        while time.monotonic() < deadline:
            c = None
            try:
                c = RawClient(self.daemon.socket, timeout=REPLY_TIMEOUT)
                rep = c.request("hello", protocol=2)
                if rep is not None and rep.get("ok"):
                    return c
                last = "hello: %r" % (rep,)
            except OSError as e:
                last = "%s: %s" % (type(e).__name__, e)
            if c is not None:
                c.close()
            time.sleep(0.05)
        raise OSError("cannot reach ferryd for %.0f s (last: %s)" % (RECONNECT_SECONDS, last))

    def client(self, n, ledger, stop):
        rng = random.Random(SEED * 31 + n)
        workdir = os.path.join(self.tmp, "client%d" % n)
        os.makedirs(workdir, exist_ok=True)
        c = None
        i = 0
        try:
            while not stop.is_set():
                if c is None:
                    c = self.connect()
                token = uuid.UUID(int=rng.getrandbits(128), version=4).hex
                name = rng.choice(NAMES)
                version = None
                if rng.random() < EXPLICIT_SHARE:
                    version = "%d.0.0-t%s" % (rng.randint(1, 60), token[:8])
                files, assets, paths = {}, [], []
                for j in range(rng.randint(1, 3)):
                    # Log-uniform sizes from 2 KiB to 1 MiB: mostly small, some large.
                    data = rng.randbytes(int(2048 * 2 ** rng.uniform(0, 9)))
                    lp = "part%d.bin" % j if rng.random() < 0.8 else "sub/dir/part%d.bin" % j
                    path = os.path.join(workdir, "%s-%d.bin" % (token, j))
                    with open(path, "wb") as f:
                        f.write(data)
                    paths.append(path)
                    files[lp] = hashlib.sha256(data).hexdigest()
                    assets.append({"logical_path": lp, "file": path})
                rid = c.next_id
                c.next_id += 1
                req = {"id": rid, "op": "artifact.log", "name": name, "type": "model",
                       "assets": assets, "metadata": {"token": token, "client": n, "i": i}}
                if version:
                    req["version"] = version
                with ledger.lock:
                    ledger.sent[token] = {"name": name, "version": version, "files": files,
                                          "client": n}
                rep, sent = None, False
                t0 = time.monotonic()
                fields, fds = c.open_files(req)  # the files travel as descriptors
                try:
                    try:
                        c.send_frame(json.dumps(fields), fds)
                    finally:
                        for fd in fds:
                            os.close(fd)
                    sent = True
                    rep = c.read_frame()  # None: ferryd closed the connection (killed)
                except TimeoutError:
                    with ledger.lock:
                        ledger.hangs.append(token)
                except OSError:
                    pass
                if rep is not None and rep.get("id") != rid:
                    raise AssertionError("reply id %r for request %d" % (rep.get("id"), rid))
                with ledger.lock:
                    if rep is not None and time.monotonic() - t0 > REPLY_TIMEOUT:
                        ledger.hangs.append(token)
                    if not sent:
                        ledger.unsent.add(token)
                    elif rep is None:
                        ledger.unknown.add(token)
                    elif rep.get("ok"):
                        ledger.acked[token] = rep["job"]
                    else:
                        ledger.refused[token] = rep
                for p in paths:
                    os.unlink(p)  # the spool has them (or the log never happened)
                if rep is None:  # ferryd is gone: wait for the next one
                    c.close()
                    c = None
                i += 1
                stop.wait(rng.uniform(0.05, 0.5))
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            with ledger.lock:
                ledger.errors.append("client %d: %s: %s" % (n, type(e).__name__, e))
        finally:
            if c is not None:
                c.close()

    # ---- chaos

    def note(self, stats, what):
        stats["timeline"].append((time.time(), what))

    def kill_and_restart(self, stats):
        """SIGKILL ferryd, which must still be running (it never exits by itself); restart it."""
        proc = self.daemon.proc
        if proc is None or proc.poll() is not None:
            stats["crashes"].append("ferryd exited by itself with status %r before kill %d"
                                    % (proc.returncode if proc else None, stats["kills"] + 1))
            return False
        stats["kill_times"].append(time.time())
        self.note(stats, "kill -9 %d" % proc.pid)
        self.daemon.kill9()
        if proc.returncode != -signal.SIGKILL:
            stats["crashes"].append("kill %d: ferryd's exit status was %r, not SIGKILL"
                                    % (stats["kills"] + 1, proc.returncode))
        stats["kills"] += 1
        try:
            self.daemon.start()
        except AssertionError as e:
            stats["crashes"].append("restart after kill %d failed: %s" % (stats["kills"], e))
            return False
        return True

    def play_chaos(self, rng, stats):
        """Kill, fault and down events for CHAOS_SECONDS, at most one per 0.5 s."""
        end = time.monotonic() + CHAOS_SECONDS
        max_events = int(CHAOS_SECONDS * 2) + 1
        next_event = time.monotonic() + rng.uniform(0.5, 3.0)
        faults_until = down_until = None
        events = 0
        try:
            while time.monotonic() < end and events < max_events:
                now = time.monotonic()
                if faults_until is not None and now >= faults_until:
                    self.standin.set_faults([])
                    faults_until = None
                    self.note(stats, "faults off")
                if down_until is not None and now >= down_until:
                    self.standin.set_down(False)
                    down_until = None
                    self.note(stats, "up")
                if self.daemon.proc is None or self.daemon.proc.poll() is not None:
                    stats["crashes"].append("ferryd exited by itself with status %r" % (
                        self.daemon.proc.returncode if self.daemon.proc else None))
                    return
                if now >= next_event:
                    events += 1
                    roll = rng.random()
                    if 0.45 <= roll < 0.75 and faults_until is None:
                        self.standin.set_faults(FAULT_RULES)
                        faults_until = now + rng.uniform(2.0, 5.0)
                        stats["fault_windows"] += 1
                        self.note(stats, "faults on")
                    elif roll >= 0.75 and down_until is None:
                        self.standin.set_down(True)
                        down_until = now + rng.uniform(1.0, 3.0)
                        stats["down_windows"] += 1
                        self.note(stats, "down")
                    elif not self.kill_and_restart(stats):
                        return
                    next_event = time.monotonic() + rng.uniform(0.5, 3.0)
                time.sleep(0.02)
        finally:
            self.standin.set_faults([])
            self.standin.set_down(False)
            self.note(stats, "chaos over")

    # ---- the test

    def test_every_acked_version_reaches_comet_exactly_once(self):
        rng = random.Random(SEED)
        ledger = Ledger()
        stats = {"kills": 0, "fault_windows": 0, "down_windows": 0, "crashes": [],
                 "kill_times": [], "timeline": []}
        stop = threading.Event()
        sys.stderr.write("\nchaos: seed %d (FERRY_CHAOS_SEED replays the choices), %.0f s, "
                         "%d clients, explicit versions %.0f%%\n"
                         % (SEED, CHAOS_SECONDS, CLIENTS, EXPLICIT_SHARE * 100))
        threads = [threading.Thread(target=self.client, args=(n, ledger, stop),
                                    name="chaos-client-%d" % n) for n in range(CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            self.play_chaos(rng, stats)
        finally:
            stop.set()
            for t in threads:
                t.join(RECONNECT_SECONDS + REPLY_TIMEOUT + 10)
        chaos_elapsed = time.monotonic() - started
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread did not stop")
        self.assertEqual(stats["crashes"], [], "ferryd died by itself:\n" + self.log_tail())
        self.assertEqual(ledger.errors, [], "a client could not go on")

        t0 = time.monotonic()
        waited = self.daemon.cli("wait", "--timeout", str(WAIT_TIMEOUT), check=False,
                                 timeout=WAIT_TIMEOUT + 30)
        wait_seconds = time.monotonic() - t0
        c = self.daemon.raw()
        c.hello()
        ls = c.request("ls", state="all", limit=100000)
        c.close()
        snap = self.standin.snapshot()
        exit_code = self.daemon.stop()  # a clean shutdown after all that
        log = self.daemon.log()

        summary, problems = self.check(ledger, stats, snap, ls)
        if waited.returncode != 0:
            problems.insert(0, "ferry wait exited %d: %s" % (waited.returncode,
                                                             waited.stderr.strip()))
        if exit_code != 0:
            problems.insert(0, "ferryd exited %r on SIGTERM after the chaos" % (exit_code,))
        for marker in SANITIZER_MARKERS:
            if marker in log:
                at = log.index(marker)
                problems.insert(0, "ferryd's log has a sanitizer report (%r):\n%s"
                                % (marker, log[max(0, at - 2000):at + 6000]))
        if ledger.hangs:
            problems.append("log replies slower than %.0f s: tokens %s"
                            % (REPLY_TIMEOUT, ledger.hangs))
        for token, rep in ledger.refused.items():
            problems.append("log of token %s refused: %s" % (token, rep))
        if not ledger.acked:
            problems.append("no log was acknowledged")
        summary.update(seed=SEED, chaos_seconds=round(chaos_elapsed, 1),
                       wait_seconds=round(wait_seconds, 1), wait_exit=waited.returncode,
                       requests=snap["counts"],
                       refused_while_down=sum(snap["down_counts"].values()),
                       problems=len(problems))
        sys.stderr.write("chaos summary: %s\n" % json.dumps(summary, sort_keys=True))
        if os.environ.get("FERRY_CHAOS_DUMP"):
            with open(os.environ["FERRY_CHAOS_DUMP"], "w") as f:
                json.dump({"summary": summary, "problems": problems, "stats": stats,
                           "snapshot": snap, "ls": ls,
                           "ledger": {"sent": ledger.sent, "acked": ledger.acked,
                                      "unknown": sorted(ledger.unknown),
                                      "unsent": sorted(ledger.unsent),
                                      "refused": ledger.refused}}, f)
        if problems:
            self.fail("seed %d, %d problem(s):\n%s" % (SEED, len(problems),
                                                      "\n".join(problems[:40])))

    def log_tail(self, n=12000):
        return self.daemon.log()[-n:]

    # ---- the checks

    def check(self, ledger, stats, snap, ls):
        """Compare the ledger with the stand-in's registry; returns (summary, problems)."""
        problems = []
        by_token = collections.defaultdict(list)  # token -> [version]
        leftover, reuploads = [], []              # crash-window traces: (version, fileName)
        closed = 0
        for art in snap["artifacts"]:
            for v in art["versions"]:
                token = (v["metadata"] or {}).get("token")
                sent = ledger.sent.get(token)
                where = "%s %s (%s, id %s)" % (art["name"], v["version"], v["state"],
                                               v["artifactVersionId"])
                if sent is None:
                    problems.append("%s carries token %r that no client sent" % (where, token))
                    continue
                by_token[token].append(v)
                if token in ledger.refused or token in ledger.unsent:
                    problems.append("%s: its log was %s, yet it is on the backend" % (
                        where, "refused" if token in ledger.refused else "never sent"))
                if sent["name"] != art["name"]:
                    problems.append("%s: token %s was logged as %s" % (where, token, sent["name"]))
                if v["state"] == "CLOSED":
                    closed += 1
                    reuploads += [(v, a["fileName"]) for a in v["assets"]
                                  for _ in range(a["uploads"] - 1)]
                elif v["state"] == "OPEN" and not v["assets"] and sent["version"] is None:
                    leftover.append((v, None))  # an automatic upsert re-sent after a kill
                else:
                    problems.append("%s: left %s with %d asset(s) (token %s, %s)%s" % (
                        where, v["state"], len(v["assets"]), token, self.fate(ledger, token),
                        self.diagnose(snap, stats, v)))

        for token, vs in by_token.items():
            closed_vs = [v for v in vs if v["state"] == "CLOSED"]
            if not closed_vs and token not in ledger.acked:
                # ferryd had committed this log (it sent the upsert): it must finish it.
                problems.append("token %s (%s) is on the backend but in no CLOSED version: %s"
                                % (token, self.fate(ledger, token),
                                   [(v["version"], v["state"], len(v["assets"])) for v in vs]))
            if len(closed_vs) > 1:
                problems.append("token %s (%s) is in %d CLOSED versions: %s" % (
                    token, self.fate(ledger, token), len(closed_vs),
                    [v["version"] for v in closed_vs]))
            sent = ledger.sent[token]
            for v in closed_vs:
                got = {a["fileName"]: a["sha256"] for a in v["assets"]}
                if got != sent["files"]:
                    problems.append("token %s, version %s: the assets differ: sent %s, "
                                    "stored %s" % (token, v["version"], sent["files"], got))
                if sent["version"] is not None and v["version"] != sent["version"]:
                    problems.append("token %s: asked for version %s, got %s"
                                    % (token, sent["version"], v["version"]))

        items = {i["job"]: i for i in ls.get("items", [])}
        per_name = collections.defaultdict(list)
        for token, job in sorted(ledger.acked.items(), key=lambda kv: kv[1]):
            closed_vs = [v for v in by_token.get(token, []) if v["state"] == "CLOSED"]
            item = items.get(job)
            if not closed_vs:
                error = (item or {}).get("error") or ""
                problems.append(
                    "acked token %s (job %d, %s %s) has no CLOSED version; ferryd: %s; on the "
                    "backend: %s%s" % (
                        token, job, ledger.sent[token]["name"],
                        ledger.sent[token]["version"] or "(automatic)",
                        "%s %s" % (item["state"], error) if item else "?",
                        [(v["version"], v["state"], len(v["assets"]))
                         for v in by_token.get(token, [])],
                        " -- the explicit-version upsert crash window (README \"Comet "
                        "backend\"): the upsert succeeded, ferryd was killed before it "
                        "committed the version id, the re-sent upsert got 90399; this acked "
                        "version can never be delivered (ferry retry gets 90399 again)"
                        if "90399" in error else ""))
            if item is None:
                if not ls.get("truncated"):
                    problems.append("acked job %d (token %s) is not in ferryd's queue"
                                    % (job, token))
                continue
            if item["state"] != "done":
                if closed_vs:
                    problems.append("acked job %d (token %s) is %s: %s"
                                    % (job, token, item["state"], item.get("error")))
            elif len(closed_vs) == 1 and item["version"] != closed_vs[0]["version"]:
                problems.append("job %d: ferryd recorded version %s, the backend has %s"
                                % (job, item["version"], closed_vs[0]["version"]))
            if len(closed_vs) == 1 and ledger.sent[token]["version"] is None:
                per_name[ledger.sent[token]["name"]].append((job, closed_vs[0]["version"]))
        for item in ls.get("items", []):
            if item["state"] != "done" and item["job"] not in ledger.acked.values():
                problems.append("job %d (%s, no reply to its log) is %s: %s" % (
                    item["job"], item["name"], item["state"], item.get("error")))
        # README "Order": automatic versions of an artifact are numbered in log order.
        for name, jobs in per_name.items():
            for (j1, v1), (j2, v2) in zip(jobs, jobs[1:]):
                if not semver_key(v1) < semver_key(v2):
                    problems.append("%s: job %d got %s but the later job %d got %s"
                                    % (name, j1, v1, j2, v2))

        # Crash-window traces: bounded, and each one explained by a kill.
        kills = stats["kills"]
        if len(leftover) > kills * len(NAMES):
            problems.append("%d empty OPEN versions left behind: more than one per artifact "
                            "per kill (%d kills)" % (len(leftover), kills))
        if len(reuploads) > kills * 4:
            problems.append("%d asset uploads repeated: more than 4 per kill (%d kills)"
                            % (len(reuploads), kills))
        # Each trace needs a kill between the server's first success and ferryd's repeat:
        # the next successful upload of that file to that version, or the upsert of the
        # version that was delivered with the token. Without a kill in between, ferryd
        # repeated something it had been told succeeded: not a documented crash window.
        # (The stand-in stamps a request when its thread reads the request line, which can
        # be after the sender was killed: hence ARRIVAL_SLACK before the first success.)
        gaps = {"upsert": [], "upload": []}  # ms from the first success's arrival to the kill
        unmatched = 0
        for what, traces in (("upsert", leftover), ("upload", reuploads)):
            distinct = {(v["artifactVersionId"], f): v for v, f in traces}
            for (vid, file_name), v in distinct.items():
                if file_name is None:
                    first = self.successes(snap, "upsert", vid, None)
                    token = v["metadata"]["token"]
                    repeat = [t for other in by_token[token] if other is not v
                              for t in self.successes(snap, "upsert",
                                                      other["artifactVersionId"], None)]
                else:
                    first = self.successes(snap, "uploadAsset", vid, file_name)
                    repeat = first[1:]
                if not first or not repeat:
                    unmatched += 1  # beyond the stand-in's request log (10000 requests)
                    continue
                t0 = first[0]
                t1 = min((t for t in repeat if t > t0), default=None)
                kills_between = [k for k in stats["kill_times"] if t0 - ARRIVAL_SLACK <= k and
                                 (t1 is None or k <= t1)]
                gaps[what].append(round(min((k - t0 for k in kills_between), key=abs) * 1000, 1)
                                  if kills_between else None)
                if t1 is None or not kills_between:
                    problems.append(
                        "%s %s of %s (id %s) was repeated with no kill of ferryd in between: "
                        "not a documented crash window%s" % (
                            what, file_name or "", v["version"], vid,
                            self.diagnose(snap, stats, v)))
        summary = {
            "acked": len(ledger.acked),
            "acked_explicit": sum(1 for t in ledger.acked if ledger.sent[t]["version"]),
            "no_reply": len(ledger.unknown),
            "no_reply_delivered": sum(1 for t in ledger.unknown if any(
                v["state"] == "CLOSED" for v in by_token.get(t, []))),
            "never_sent": len(ledger.unsent), "refused": len(ledger.refused),
            "kills": kills, "fault_windows": stats["fault_windows"],
            "down_windows": stats["down_windows"], "closed_versions": closed,
            "leftover_open_empty": len(leftover), "assets_reuploaded": len(reuploads),
            "crash_window_ms": gaps, "traces_beyond_request_log": unmatched,
        }
        return summary, problems

    @staticmethod
    def fate(ledger, token):
        if token in ledger.acked:
            return "acked as job %d" % ledger.acked[token]
        return "no reply" if token in ledger.unknown else "never sent"

    @staticmethod
    def successes(snap, endpoint, version_id, file_name):
        """Arrival times of the successful requests to endpoint for that version (and file)."""
        return [r["t"] for r in snap["requests"]
                if r["endpoint"] == endpoint and r.get("versionId") == version_id and
                r.get("status") == 200 and (file_name is None or r.get("fileName") == file_name)]

    @staticmethod
    def diagnose(snap, stats, v):
        """The version's requests and the chaos events around them, for a failure message."""
        reqs = [r for r in snap["requests"] if r.get("versionId") == v["artifactVersionId"]]
        if not reqs:
            return ""
        t0 = reqs[0]["t"]
        lines = ["%+.3f s %s %s -> %s%s" % (r["t"] - t0, r["endpoint"], r.get("fileName") or "",
                                            r.get("status"), " (fault)" if r.get("fault") else "")
                 for r in reqs]
        lines += ["%+.3f s chaos: %s" % (t - t0, what) for t, what in stats["timeline"]
                  if -3 < t - t0 < 5]
        return "\n    " + "\n    ".join(sorted(lines, key=lambda s: float(s.split()[0])))


if __name__ == "__main__":
    unittest.main()
