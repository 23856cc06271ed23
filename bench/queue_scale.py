#!/usr/bin/env python3
"""Queue at scale: backlog, enqueue, small files, a large file, the local backend.

Five benchmarks, each measuring ferry and its reference in the same run, in
alternating order, over --reps repetitions (min / median / max), with the
issue's targets printed next to the measurements and marked met / missed:

  backlog        N one-file 4 KiB versions of 8 artifacts, logged by 8 processes
                 while the backend is unreachable; restart until `status`
                 answers, `status` latency over the wire, the drain rate to the
                 sink once it is reachable (first and last 10 %), ferryd's RSS.
                 Then the same for one version of N small files.
  enqueue        8 processes log one-file 4 KiB versions through the Python
                 binding while deliveries run; versions/s and p50/p99 per log,
                 against the durable-copy floor (C: copy, fsync file, fsync dir).
  small_files    2,000 x 4 KiB files in 20 versions, log to delivered, against
                 the Comet SDK model (8 threads, keep-alive) and curl --parallel.
  large_file     1 GiB, log to delivered, against one `curl -F file=@...`.
  local          FERRY_BACKEND=local: 4 KiB versions delivered per second
                 against cp + sha256sum per file; 1 GiB against cp + openssl dgst.

The HTTP sink is nginx answering Comet's write endpoints with fixed JSON and
discarding the bodies (bench/scalelib.py); deliveries are counted from its
access log. Only ferry's stable interfaces are used: the `ferry` CLI, the
Python binding, the environment, the wire protocol's `hello`/`status`, HTTP.
See bench/README.md ("queue_scale") for exactly what each one runs.
"""

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import scalelib as sl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ("backlog", "enqueue", "small_files", "large_file", "local")


# ===================================================================== workers
# Child processes: a "training process" logging through the Python binding, and
# the Comet SDK model. Each prints "ready", waits for "go" on stdin (so that all
# start together), works, and writes its result as JSON to --out.

def _ready_and_wait():
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if not sys.stdin.readline():
        sys.exit(1)                              # the benchmark is gone


def worker_log(args):
    """Log one version per file of the plan through the binding; latency per log."""
    from ferry import Artifact, Experiment
    with open(args.plan) as f:
        plan = json.load(f)                      # {"versions": [[name, [paths]], ...]}
    exp = Experiment(project_name=bl.PROJECT, workspace=bl.WORKSPACE)   # one connection
    _ready_and_wait()
    lat = []
    start = time.time()
    for name, paths in plan["versions"]:
        art = Artifact(name, artifact_type="dataset")
        for p in paths:
            art.add(p)
        t0 = time.perf_counter()
        exp.log_artifact(art)
        lat.append(time.perf_counter() - t0)
    end = time.time()
    with open(args.out, "w") as f:
        json.dump({"start": start, "end": end, "lat": lat}, f)


def worker_sdk(args):
    """The Comet SDK model over keep-alive connections (http.client, TCP_NODELAY).

    mode "per-artifact": thread k logs the versions of artifacts k, k+T, ...
    one after the other (upsert, one POST per file, close), like T
    processes each calling a blocking log_artifact.
    mode "pool": the main thread upserts the versions in order (log_artifact
    returns after the upsert), every file is one POST by one of T upload
    threads, and the thread that finishes a version's last file closes it.
    """
    import queue
    with open(args.plan) as f:
        plan = json.load(f)
    versions, threads, mode = plan["versions"], plan["threads"], plan["mode"]
    main_client = bl.CometRest(args.base)
    key = main_client.register()                 # Experiment(): not timed
    errors = []
    _ready_and_wait()
    start = time.time()
    if mode == "per-artifact":
        by_name = {}
        for name, paths in versions:
            by_name.setdefault(name, []).append(paths)
        names = sorted(by_name)

        def run(k):
            c = bl.CometRest(args.base)
            try:
                for name in names[k::threads]:
                    for paths in by_name[name]:
                        c.log_artifact(key, name, paths, type_="dataset")
            except Exception as e:               # reported below
                errors.append(repr(e))
            finally:
                c.close_connection()
        ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(args.timeout)
    else:
        q = queue.Queue()
        remaining = {}
        lock = threading.Lock()
        done = threading.Event()
        closed = [0]

        def closed_one():
            with lock:
                closed[0] += 1
                if closed[0] == len(versions):
                    done.set()

        def upload_worker():
            c = bl.CometRest(args.base)
            try:
                while True:
                    item = q.get()
                    if item is None:
                        return
                    idx, vid, path = item
                    try:
                        c.upload(key, vid, path)
                        with lock:
                            remaining[idx] -= 1
                            last = remaining[idx] == 0
                        if last:
                            c.set_state(key, vid, "CLOSED")
                            closed_one()
                    except Exception as e:
                        errors.append(repr(e))
                        done.set()
            finally:
                c.close_connection()
        ts = [threading.Thread(target=upload_worker, daemon=True) for _ in range(threads)]
        for t in ts:
            t.start()
        for idx, (name, paths) in enumerate(versions):
            vid = main_client.upsert(key, name, "dataset")
            with lock:
                remaining[idx] = len(paths)
            if not paths:
                main_client.set_state(key, vid, "CLOSED")
                closed_one()
            for p in paths:
                q.put((idx, vid, p))
        done.wait(args.timeout)
        for _ in ts:
            q.put(None)
    end = time.time()
    main_client.close_connection()
    with open(args.out, "w") as f:
        json.dump({"start": start, "end": end, "errors": errors[:5]}, f)


def run_workers(cmds, env, root, what, timeout):
    """Start the workers, wait for all "ready", send "go", wait; their JSON results."""
    procs, outs, logs = [], [], []
    for i, cmd in enumerate(cmds):
        out = os.path.join(root, "%s-%d.json" % (what, i))
        log_path = os.path.join(root, "%s-%d.log" % (what, i))
        logf = open(log_path, "wb")
        argv = cmd[:-1] + [out] if cmd[-1] == "--out" else cmd + ["--out", out]
        p = subprocess.Popen(argv,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                             env=env, start_new_session=True, preexec_fn=bl._die_with_parent)
        logf.close()
        bl._register(p, lambda p=p: bl.terminate(p, 5))
        procs.append(p)
        outs.append(out)
        logs.append(log_path)
    deadline = time.monotonic() + 120
    for p, log_path in zip(procs, logs):
        buf = b""
        while b"ready\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                bl.die("%s worker did not get ready (exit %s):\n%s"
                       % (what, p.poll(), bl._tail(log_path)))
            r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
            if r:
                buf += os.read(p.stdout.fileno(), 4096)
    for p in procs:                                 # go
        p.stdin.write(b"go\n")
        p.stdin.flush()
    deadline = time.monotonic() + timeout
    results = []
    for p, out, log_path in zip(procs, outs, logs):
        try:
            rc = p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            bl.die("%s worker took longer than %ds" % (what, timeout))
        bl._unregister(p)
        p.stdin.close()
        p.stdout.close()
        if rc != 0:
            bl.die("%s worker exited %d:\n%s" % (what, rc, bl._tail(log_path)))
        with open(out) as f:
            results.append(json.load(f))
    return results


def self_cmd(kind, plan_path, *extra):
    return [bl.PYTHON, os.path.abspath(__file__), "--worker", kind, "--plan", plan_path] + \
        list(extra)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def agg_workers(results):
    """(versions/s over the common span, all latencies) of logging workers."""
    lat = [x for r in results for x in r["lat"]]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return (len(lat) / span if span > 0 else None), lat, span


# ================================================================= the bench

class Bench:
    def __init__(self, args, root):
        self.args = args
        self.root = root
        self.summary = []          # rows of the final table
        self.notes = []            # lines under it
        self.files_dir = os.path.join(root, "files")
        os.makedirs(self.files_dir, exist_ok=True)
        self.n_dirs = 0

    def fresh_dir(self, name):
        self.n_dirs += 1
        path = os.path.join(self.root, "%s-%d" % (name, self.n_dirs))
        os.makedirs(path)
        return path

    def progress(self, msg):
        sys.stderr.write("  %s\n" % msg)
        sys.stderr.flush()

    def order(self, rep, pair):
        """Alternate who goes first: ferry on even repetitions, the reference on odd ones."""
        return pair if rep % 2 == 0 else list(reversed(pair))

    def add(self, bench, measure, ferry_vals, ref_name, ref_vals, unit, target, check):
        """A row of the final table; check(ferry_median, ref_median) -> bool or None."""
        fm = sl.mmm(ferry_vals)
        rm = sl.mmm(ref_vals) if ref_vals else None
        f_med = fm[1] if fm else None
        r_med = rm[1] if rm else None
        ok = None
        if f_med is not None:
            try:
                ok = check(f_med, r_med)
            except TypeError:
                ok = None
        self.summary.append([
            bench, measure, sl.fmt_mmm(ferry_vals, unit), ref_name or "-",
            sl.fmt_mmm(ref_vals, unit) if ref_vals else "-",
            bl.fmt_ratio(sl.ratio(f_med, r_med)) if rm else "-", target, sl.verdict(ok)])
        return ok

    def print_summary(self, title):
        bl.print_table(title, ["benchmark", "measure", "ferry: median (min-max)", "reference",
                               "reference: median (min-max)", "ratio ferry/ref", "target",
                               "verdict"], self.summary, self.notes, left=2)

    # ------------------------------------------------------------ file sets

    def small_set(self, tag, count, per_dir=None):
        """`count` files of --file-kib KiB under files/<tag>/ (made once, reused)."""
        d = os.path.join(self.files_dir, tag)
        marker = d + ".done"                 # beside the directory: not one of its files
        size = self.args.file_kib * 1024
        if per_dir is None:
            paths = [os.path.join(d, "%06d" % i) for i in range(count)]
            if not os.path.exists(marker):
                sl.make_small_files(d, count, size, seed=zlib.crc32(tag.encode()))
        else:
            paths = []
            for k in range((count + per_dir - 1) // per_dir):
                sub = os.path.join(d, "v%02d" % k)
                n = min(per_dir, count - k * per_dir)
                paths.append([os.path.join(sub, "%04d" % i) for i in range(n)])
                if not os.path.exists(marker):
                    sl.make_small_files(sub, n, size, seed=k, name="%04d")
        if not os.path.exists(marker):
            os.sync()                        # no dirty pages of ours left for ferry's fsyncs
        open(marker, "w").close()
        return paths

    def big_file(self, size):
        path = os.path.join(self.files_dir, "big-%d.bin" % size)
        if not os.path.exists(path):
            self.progress("making a %s file" % bl.fmt_bytes(size))
            bl.make_file(path, size)
            os.sync()
        return path

    # ------------------------------------------------------------ pieces

    def sdk_drain(self, versions, mode, tag):
        """The SDK model feeding a fresh sink; (sink summary, worker result)."""
        sink = sl.NginxSink(self.root, "sink-%s-%d" % (tag, self.n_dirs)).start()
        self.n_dirs += 1
        plan = write_json(os.path.join(self.root, "plan-%s-%d.json" % (tag, self.n_dirs)),
                          {"versions": versions, "threads": self.args.threads, "mode": mode})
        res = run_workers([self_cmd("sdk", plan, "--base", sink.base,
                                    "--timeout", str(self.args.max_seconds))],
                          None, self.root, "sdk-" + tag, self.args.max_seconds)[0]
        if res.get("errors"):
            bl.die("the SDK model failed: %s" % res["errors"])
        ents = sink.settle(states=len(versions), uploads=sum(len(v[1]) for v in versions))
        sink.stop()
        return sl.summarize_sink(ents), res

    def await_sink(self, d, sink, versions, files, tag):
        """Wait until the sink has closed `versions` versions (its access log, polled every
        0.2 s: no client of ferryd is involved, so waiting does not load the daemon), then
        confirm with `ferry wait`. Bounded by --max-seconds and by --stall-seconds without
        any new delivery."""
        a = self.args
        deadline = time.monotonic() + a.max_seconds
        last_n, last_change = -1, time.monotonic()
        while True:
            n = sink.count(sl.STATE)
            if n >= versions:
                break
            now = time.monotonic()
            if n != last_n:
                last_n, last_change = n, now
            if d.proc.poll() is not None:
                bl.die("%s: ferryd exited with %s while draining (log: %s):\n%s"
                       % (tag, d.proc.returncode, d.log_path, bl._tail(d.log_path)))
            if now > deadline or now - last_change > a.stall_seconds:
                st = d.cli("status", check=False)
                bl.die("%s: %d of %d versions delivered after %.0f s (%s)\nstatus: %s"
                       % (tag, n, versions, now - (deadline - a.max_seconds),
                          "no progress for %d s" % a.stall_seconds if now <= deadline
                          else "--max-seconds", st.stdout))
            time.sleep(0.2)
        d.wait_drained(timeout=120)

    def check_sink(self, s, versions, files, file_size, who):
        bad = []
        if s["states"] != versions:
            bad.append("%d versions closed, expected %d" % (s["states"], versions))
        if s["uploads"] != files:
            bad.append("%d files uploaded, expected %d" % (s["uploads"], files))
        if files and (s["min_upload"] or 0) < file_size:
            bad.append("an upload declared %s bytes < the file's %d" % (s["min_upload"], file_size))
        if s["non200"]:
            bad.append("%d requests were not answered 200" % s["non200"])
        if bad:
            bl.die("%s: the sink did not receive what was logged: %s" % (who, "; ".join(bad)))

    # ============================================================ 1. backlog

    def bench_backlog(self):
        a = self.args
        if a.versions:
            print("\n== backlog: %d one-file %d KiB versions of %d artifacts, %d loggers; "
                  "%d reps" % (a.versions, a.file_kib, a.artifacts, a.loggers, a.reps))
            files = self.small_set("backlog", a.versions)
            plan = [("backlog-%d" % (i % a.artifacts), [p]) for i, p in enumerate(files)]
            self._backlog("versions", plan, one_version=False)

        if a.backlog_files:
            print("\n== backlog, one version: %d files of %d KiB in one version; %d reps"
                  % (a.backlog_files, a.file_kib, a.reps))
            fdir = os.path.join(self.files_dir, "bf")
            bf = self.small_set("bf", a.backlog_files)
            self._backlog("files", [("backlog-files", bf)], one_version=True, log_dir=fdir)

    def _backlog(self, kind, plan, one_version, log_dir=None):
        a = self.args
        n_versions = len(plan)
        n_files = sum(len(p) for _, p in plan)
        fsize = a.file_kib * 1024
        tag = "backlog-" + kind
        unit_items = "files" if one_version else "versions"
        n_items = n_files if one_version else n_versions

        # -- build the backlog once, offline (the Comet URL is a closed port)
        root = self.fresh_dir(tag)
        closed = sl.reserve_closed_port()
        d = sl.Daemon(os.path.join(root, "ferry"), "comet", closed.url)
        rss = sl.DaemonRss(d).start()
        bl.at_exit(rss.stop)
        d.start()
        rss.set_phase("log")
        t0 = time.monotonic()
        log_info = ""
        if one_version:
            p = d.cli("log", "backlog-files", log_dir, "--type", "dataset",
                      timeout=a.max_seconds, check=False)
            if p.returncode != 0:
                msg = (p.stderr or p.stdout).strip().splitlines()
                msg = msg[-1] if msg else "exit %d" % p.returncode
                self.progress("one version of %d files: refused: %s" % (n_files, msg))
                self.summary.append([tag, "log one version of %d files" % n_files,
                                     "refused (*)", "-", "-", "-", "accepted", "MISSED"])
                self.notes.append("(*) %s: `ferry log backlog-files DIR` with %d files: %s"
                                  % (tag, n_files, msg))
                rss.stop()
                d.stop()
                closed.release()
                return
            log_s = time.monotonic() - t0
            log_info = "logging the version took %.2f s (`ferry log NAME DIR`)" % log_s
        else:
            per = [[] for _ in range(a.loggers)]
            # logger k logs the versions of artifacts k, k+L, ...: 8 and 8 -> one each
            for name, paths in plan:
                per[int(name.rsplit("-", 1)[1]) % a.loggers].append([name, paths])
            cmds = [self_cmd("log", write_json(os.path.join(root, "plan-%d.json" % k),
                                               {"versions": per[k]}))
                    for k in range(a.loggers) if per[k]]
            results = run_workers(cmds, d.env, root, "log", a.max_seconds)
            rate, lat, span = agg_workers(results)
            log_info = ("logging while offline: %.0f versions/s (%.1f s), per log p50 %.1f ms, "
                        "p99 %.1f ms, max %.1f ms (Python binding, %d processes)"
                        % (rate, span, sl.pct(lat, 50) * 1e3, sl.pct(lat, 99) * 1e3,
                           max(lat) * 1e3, len(cmds)))
        self.progress(log_info)
        # The first delivery attempt may still be under way (running, not yet offline).
        deadline = time.monotonic() + 30
        while True:
            st = d.status()
            if st.get("queued") == n_versions and not st.get("online"):
                break
            if time.monotonic() > deadline:
                bl.die("%s: after logging, status says queued=%s running=%s online=%s "
                       "(expected %d, false)" % (tag, st.get("queued"), st.get("running"),
                                                 st.get("online"), n_versions))
            time.sleep(0.1)
        rss.set_phase("stop")
        t0 = time.monotonic()
        d.stop()
        first_stop = time.monotonic() - t0
        closed.release()
        pristine = os.path.join(root, "state.pristine")
        os.rename(d.state_dir, pristine)
        log_rss = rss.peak_mib(["log"])
        self.progress("first SIGTERM after logging: exited in %.2f s; RSS peak while logging "
                      "%.1f MiB" % (first_stop, log_rss or 0))

        res = {k: [] for k in ("restart", "restart_stop", "restart_start", "coldstart",
                               "status_p50", "status_p99", "status_cli", "rate", "first",
                               "last", "detect", "rss", "rss_drain", "ref_restart",
                               "ref_status_p50", "ref_status_p99", "ref_rate", "ref_first",
                               "ref_last", "cpu_ms")}
        for rep in range(a.reps):
            for who in self.order(rep, ["ferry", "ref"]):
                if bl.interrupted():
                    raise KeyboardInterrupt
                if who == "ferry":
                    self._backlog_ferry_rep(d, rss, pristine, plan, n_items, fsize, one_version,
                                            res, rep, tag)
                else:
                    self._backlog_ref_rep(root, plan, n_items, fsize, one_version, res, rep, tag)
        rss.stop()

        # -- tables
        u = unit_items
        rows = [
            ["restart: SIGTERM, start, until `status` answers (s)",
             sl.fmt_mmm(res["restart"]), sl.fmt_mmm(res["ref_restart"]),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["restart"])[1], sl.mmm(res["ref_restart"])[1]))],
            ["  of which: SIGTERM until exit (s)", sl.fmt_mmm(res["restart_stop"]), "-", "-"],
            ["  of which: start until `status` answers (s)", sl.fmt_mmm(res["restart_start"]),
             "-", "-"],
            ["cold start on the backlog until `status` answers (s)",
             sl.fmt_mmm(res["coldstart"]), "-", "-"],
            ["`status` over the wire, p50 (ms)", sl.fmt_mmm(res["status_p50"], scale=1e3),
             sl.fmt_mmm(res["ref_status_p50"], scale=1e3),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["status_p50"])[1],
                                   sl.mmm(res["ref_status_p50"])[1]))],
            ["`status` over the wire, p99 (ms)", sl.fmt_mmm(res["status_p99"], scale=1e3),
             sl.fmt_mmm(res["ref_status_p99"], scale=1e3), "-"],
            ["`ferry status --json` CLI, wall (ms)", sl.fmt_mmm(res["status_cli"], scale=1e3),
             "-", "-"],
            ["drain: %s/s delivered (whole backlog)" % u, sl.fmt_mmm(res["rate"]),
             sl.fmt_mmm(res["ref_rate"]),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["rate"])[1], sl.mmm(res["ref_rate"])[1]))],
            ["drain: %s/s, first 10 %%" % u, sl.fmt_mmm(res["first"]),
             sl.fmt_mmm(res["ref_first"]), "-"],
            ["drain: %s/s, last 10 %%" % u, sl.fmt_mmm(res["last"]), sl.fmt_mmm(res["ref_last"]),
             "-"],
            ["drain: last 10 % / first 10 %",
             sl.fmt_mmm([sl.ratio(l, f) for l, f in zip(res["last"], res["first"])]),
             sl.fmt_mmm([sl.ratio(l, f) for l, f in zip(res["ref_last"], res["ref_first"])]),
             "-"],
            ["sink reachable -> its first request from ferryd (s)", sl.fmt_mmm(res["detect"]),
             "-", "-"],
            ["ferryd CPU time per %s while draining (ms)" % u[:-1], sl.fmt_mmm(res["cpu_ms"]),
             "-", "-"],
            ["ferryd RSS peak, whole repetition (MiB)", sl.fmt_mmm(res["rss"]), "-", "-"],
            ["ferryd RSS peak while draining (MiB)", sl.fmt_mmm(res["rss_drain"]), "-", "-"],
        ]
        what = ("one version of %d x %d KiB files" % (n_files, a.file_kib) if one_version
                else "%d one-file %d KiB versions, %d artifacts" % (n_versions, a.file_kib,
                                                                     len({n for n, _ in plan})))
        bl.print_table(
            "%s — %s; median (min-max) of %d" % (tag, what, a.reps),
            ["measure", "ferry", "reference", "ratio ferry/ref"], rows,
            ["references: restart and status = ferryd on an empty state dir (same procedure); "
             "drain = the Comet SDK model (%s) feeding the same nginx sink"
             % ("%d upload threads into one version" % a.threads if one_version
                else "%d threads, one per artifact: upsert, upload, close" % a.threads),
             "offline = COMET_URL_OVERRIDE pointing at a closed 127.0.0.1 port (bound, not "
             "listening); the drain starts when nginx is started on that port (no restart)",
             log_info,
             "first SIGTERM after logging took %.2f s; RSS peak while logging %.1f MiB"
             % (first_stop, log_rss or 0)])

        self.add(tag, "restart until `status` answers (s)", res["restart"],
                 "ferryd, empty state", res["ref_restart"], "", "< 1 s",
                 lambda f, r: f < 1.0)
        self.add(tag, "`status` latency p50 over the wire (ms)",
                 [x * 1e3 for x in res["status_p50"]], "ferryd, empty state",
                 [x * 1e3 for x in res["ref_status_p50"]], "", "< 5 ms",
                 lambda f, r: f < 5.0)
        self.add(tag, "drain, %s/s" % u, res["rate"], "SDK model -> nginx", res["ref_rate"], "",
                 ">= 2000/s", lambda f, r: f >= 2000)
        lf = [sl.ratio(l, f) for l, f in zip(res["last"], res["first"])]
        self.add(tag, "drain, last 10 % / first 10 %", lf, "SDK model",
                 [sl.ratio(l, f) for l, f in zip(res["ref_last"], res["ref_first"])], "",
                 ">= 0.90", lambda f, r: f >= 0.9)
        self.add(tag, "ferryd RSS peak: logging, restarts, drain (MiB)",
                 [max(x, log_rss or 0) for x in res["rss"]], None, None, "", "< 64 MiB",
                 lambda f, r: f < 64)

    def _backlog_ferry_rep(self, d, rss, pristine, plan, n_items, fsize, one_version, res,
                           rep, tag):
        a = self.args
        n_versions = len(plan)
        n_files = sum(len(p) for _, p in plan)
        sl.rmtree(d.state_dir)
        sl.copy_tree(pristine, d.state_dir)
        closed = sl.reserve_closed_port()
        d.set_url(closed.url)
        rss.peaks.clear()
        rss.set_phase("start")
        res["coldstart"].append(d.start(timeout=a.max_seconds))
        time.sleep(0.5)                              # let it settle (offline)
        rss.set_phase("restart")
        total, stop_s, start_s = d.restart(timeout=a.max_seconds)
        res["restart"].append(total)
        res["restart_stop"].append(stop_s)
        res["restart_start"].append(start_s)
        rss.set_phase("status")
        lat = sl.time_status(d.socket, a.status_requests, timeout=a.max_seconds)
        res["status_p50"].append(sl.pct(lat, 50))
        res["status_p99"].append(sl.pct(lat, 99))
        t0 = time.monotonic()
        st = d.status()
        res["status_cli"].append(time.monotonic() - t0)
        if st.get("queued", 0) + st.get("running", 0) != n_versions:
            bl.die("%s: after the restart status says queued=%s running=%s, expected %d"
                   % (tag, st.get("queued"), st.get("running"), n_versions))
        # -- the backend becomes reachable: nginx takes over the closed port
        rss.set_phase("drain")
        sink = sl.NginxSink(self.root, "sink-%s-ferry-%d" % (tag, rep)).start(closed)
        t_reach = time.time()
        cpu0 = sl.cpu_seconds(d.pid)
        self.await_sink(d, sink, n_versions, n_files, tag)
        cpu1 = sl.cpu_seconds(d.pid)
        ents = sink.settle(states=n_versions, uploads=n_files)
        sink.stop()
        s = sl.summarize_sink(ents)
        self.check_sink(s, n_versions, n_files, fsize, "%s (ferry)" % tag)
        times = s["upload_times"] if one_version else s["state_times"]
        overall, first, last = sl.window_rates(times, s["t_work"])
        res["rate"].append(overall)
        res["first"].append(first)
        res["last"].append(last)
        res["detect"].append(s["t_first"] - t_reach)
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        res["cpu_ms"].append(cpu * 1e3 / n_items if cpu is not None else None)
        curve = sl.tenths(times, s["t_work"])
        res["rss"].append(rss.peak_mib())
        res["rss_drain"].append(rss.peak_mib(["drain"]))
        d.stop()
        self.progress("ferry rep %d: restart %.3f s (stop %.3f + start %.3f), status p50 %.2f ms "
                      "p99 %.2f ms, drain %.0f %s/s (first 10%% %.0f, last 10%% %.0f) in %.1f s, "
                      "RSS peak %.1f MiB" % (
                          rep + 1, total, stop_s, start_s, sl.pct(lat, 50) * 1e3,
                          sl.pct(lat, 99) * 1e3, overall or 0,
                          "files" if one_version else "versions", first or 0, last or 0,
                          s["t_last"] - s["t_work"], rss.peak_mib() or 0))
        self.progress("            ferryd CPU %.2f ms per %s while draining; rate by tenth: %s"
                      % (res["cpu_ms"][-1] or 0, "file" if one_version else "version",
                         " ".join("%.0f" % (x or 0) for x in curve)))

    def _backlog_ref_rep(self, root, plan, n_items, fsize, one_version, res, rep, tag):
        a = self.args
        n_versions = len(plan)
        n_files = sum(len(p) for _, p in plan)
        # restart and status on an empty state dir (same procedure, offline too)
        closed = sl.reserve_closed_port()
        e = sl.Daemon(self.fresh_dir("empty"), "comet", closed.url)
        e.start()
        time.sleep(0.5)
        total, _, _ = e.restart()
        res["ref_restart"].append(total)
        lat = sl.time_status(e.socket, a.status_requests)
        res["ref_status_p50"].append(sl.pct(lat, 50))
        res["ref_status_p99"].append(sl.pct(lat, 99))
        e.stop()
        closed.release()
        sl.rmtree(e.root)
        # drain: the SDK model
        s, _ = self.sdk_drain(plan, "pool" if one_version else "per-artifact", tag)
        self.check_sink(s, n_versions, n_files, fsize, "%s (SDK model)" % tag)
        times = s["upload_times"] if one_version else s["state_times"]
        overall, first, last = sl.window_rates(times, s["t_work"])
        res["ref_rate"].append(overall)
        res["ref_first"].append(first)
        res["ref_last"].append(last)
        self.progress("ref   rep %d: restart (empty) %.3f s, status p50 %.2f ms; SDK model %.0f "
                      "%s/s (first 10%% %.0f, last 10%% %.0f) in %.1f s"
                      % (rep + 1, total, sl.pct(lat, 50) * 1e3, overall or 0,
                         "files" if one_version else "versions", first or 0, last or 0,
                         s["t_last"] - s["t_work"]))

    # ============================================================ 2. enqueue

    def bench_enqueue(self):
        a = self.args
        n = a.enqueue_versions
        print("\n== enqueue: %d processes log %d one-file %d KiB versions in all (Python "
              "binding) while deliveries run to the sink; %d reps"
              % (a.loggers, n, a.file_kib, a.reps))
        files = self.small_set("enqueue", n)
        per = [[] for _ in range(a.loggers)]
        for i, p in enumerate(files):
            per[i % a.loggers].append(p)
        floor_bin = self.compile_floor()
        res = {k: [] for k in ("rate", "p50", "p99", "ref_rate", "ref_p50", "ref_p99", "rss")}
        for rep in range(a.reps):
            for who in self.order(rep, ["ferry", "floor"]):
                if bl.interrupted():
                    raise KeyboardInterrupt
                root = self.fresh_dir("enqueue-" + who)
                if who == "ferry":
                    sink = sl.NginxSink(root, "sink").start()
                    d = sl.Daemon(os.path.join(root, "ferry"), "comet", sink.url)
                    d.start()
                    rss = sl.DaemonRss(d).start()
                    cmds = [self_cmd("log", write_json(
                        os.path.join(root, "plan-%d.json" % k),
                        {"versions": [["enqueue-%d" % k, [p]] for p in per[k]]}))
                        for k in range(a.loggers)]
                    results = run_workers(cmds, d.env, root, "log", a.max_seconds)
                    d.wait_drained(a.max_seconds)
                    rss.stop()
                    s = sl.summarize_sink(sink.settle(states=n, uploads=n))
                    d.stop()
                    sink.stop()
                    self.check_sink(s, n, n, a.file_kib * 1024, "enqueue (ferry)")
                    rate, lat, span = agg_workers(results)
                    res["rate"].append(rate)
                    res["p50"].append(sl.pct(lat, 50))
                    res["p99"].append(sl.pct(lat, 99))
                    res["rss"].append(rss.peak_mib())
                else:
                    dst = os.path.join(root, "spool")
                    os.makedirs(dst)
                    cmds = []
                    for k in range(a.loggers):
                        lst = os.path.join(root, "list-%d.txt" % k)
                        with open(lst, "w") as f:
                            f.write("\n".join(per[k]) + "\n")
                        cmds.append([floor_bin, lst, dst, "w%d-" % k, "--out"])
                    results = run_workers(cmds, None, root, "floor", a.max_seconds)
                    rate, lat, span = agg_workers(results)
                    if len(os.listdir(dst)) != n:
                        bl.die("the floor wrote %d files, expected %d" % (len(os.listdir(dst)), n))
                    res["ref_rate"].append(rate)
                    res["ref_p50"].append(sl.pct(lat, 50))
                    res["ref_p99"].append(sl.pct(lat, 99))
                self.progress("%-5s rep %d: %.0f versions/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms"
                              % (who, rep + 1, rate, sl.pct(lat, 50) * 1e3,
                                 sl.pct(lat, 99) * 1e3, max(lat) * 1e3))
                sl.rmtree(root)
        rows = [
            ["versions/s (all processes)", sl.fmt_mmm(res["rate"]), sl.fmt_mmm(res["ref_rate"]),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["rate"])[1], sl.mmm(res["ref_rate"])[1]))],
            ["per log p50 (ms)", sl.fmt_mmm(res["p50"], scale=1e3),
             sl.fmt_mmm(res["ref_p50"], scale=1e3),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["p50"])[1], sl.mmm(res["ref_p50"])[1]))],
            ["per log p99 (ms)", sl.fmt_mmm(res["p99"], scale=1e3),
             sl.fmt_mmm(res["ref_p99"], scale=1e3),
             bl.fmt_ratio(sl.ratio(sl.mmm(res["p99"])[1], sl.mmm(res["ref_p99"])[1]))],
            ["ferryd RSS peak (MiB)", sl.fmt_mmm(res["rss"]), "-", "-"],
        ]
        bl.print_table(
            "enqueue — %d processes, %d versions of one %d KiB file; median (min-max) of %d"
            % (a.loggers, n, a.file_kib, a.reps),
            ["measure", "ferry (Python binding)", "durable-copy floor (C)", "ratio ferry/floor"],
            rows,
            ["ferry: Experiment().log_artifact(Artifact(...).add(file)) per version, one "
             "connection per process, ferryd delivering to the nginx sink meanwhile",
             "floor: %d C processes (cc -O2, bench/floor_copy.c), per version: read the file, "
             "create it in one shared directory, fsync the file, fsync the directory"
             % a.loggers])
        self.add("enqueue", "versions/s", res["rate"], "durable-copy floor", res["ref_rate"], "",
                 ">= 50% of floor", lambda f, r: f >= 0.5 * r)
        self.add("enqueue", "per log p99 (ms)", [x * 1e3 for x in res["p99"]],
                 "durable-copy floor", [x * 1e3 for x in res["ref_p99"]], "",
                 "<= 3x floor", lambda f, r: f <= 3 * r)

    def compile_floor(self):
        cc = bl.require_tool("cc")
        out = os.path.join(self.root, "floor_copy")
        p = bl.run([cc, "-O2", "-std=c11", "-o", out, os.path.join(HERE, "floor_copy.c")],
                   timeout=120)
        if p.returncode != 0:
            bl.die("cc could not build bench/floor_copy.c:\n%s" % p.stderr)
        return out

    # ============================================================ 3. small files

    def bench_small_files(self):
        a = self.args
        nv = a.small_versions
        nf = a.small_files
        print("\n== small_files: %d x %d KiB files in %d versions; %d reps"
              % (nf, a.file_kib, nv, a.reps))
        dirs = self.small_set("small", nf, per_dir=(nf + nv - 1) // nv)
        nv = len(dirs)
        vdirs = [os.path.dirname(ps[0]) for ps in dirs]
        fsize = a.file_kib * 1024
        modes = [("one", "20 versions of one artifact" if nv == 20 else
                  "%d versions of one artifact" % nv),
                 ("many", "%d artifacts, one version each" % nv)]
        all_rows = []
        for mode, mode_label in modes:
            names = (["small-one"] * nv if mode == "one" else
                     ["small-%02d" % k for k in range(nv)])
            res = {"ferry": [], "sdk": [], "curl": []}
            for rep in range(a.reps):
                order = ["ferry", "sdk", "curl"]
                if rep % 2:
                    order.reverse()
                for who in order:
                    if bl.interrupted():
                        raise KeyboardInterrupt
                    root = self.fresh_dir("small-" + who)
                    if who == "sdk":
                        s, r = self.sdk_drain([[nm, ps] for nm, ps in zip(names, dirs)], "pool",
                                              "small")
                        wall = r["end"] - r["start"]
                    else:
                        sink = sl.NginxSink(root, "sink").start()
                        if who == "ferry":
                            d = sl.Daemon(os.path.join(root, "ferry"), "comet", sink.url)
                            d.start()
                            t0 = time.monotonic()
                            for name, vd in zip(names, vdirs):
                                d.cli("log", name, vd, "--type", "dataset")
                            d.wait_drained(a.max_seconds)
                            wall = time.monotonic() - t0
                            d.stop()
                        else:
                            wall = self.curl_parallel(root, sink, names, dirs)
                        s = sl.summarize_sink(sink.settle(states=nv, uploads=nf))
                        sink.stop()
                    self.check_sink(s, nv, nf, fsize, "small_files (%s)" % who)
                    res[who].append(nf / wall)
                    self.progress("%-5s %-4s rep %d: %.2f s, %.0f files/s"
                                  % (who, mode, rep + 1, wall, nf / wall))
                    sl.rmtree(root)
            f_med = sl.mmm(res["ferry"])[1]
            all_rows += [
                [mode_label, "ferry: `ferry log NAME DIR` x %d, `ferry wait`" % nv,
                 sl.fmt_mmm(res["ferry"]), sl.fmt_mmm([nf / x for x in res["ferry"]]), "1.00x"],
                ["", "Comet SDK model: %d threads, keep-alive" % a.threads,
                 sl.fmt_mmm(res["sdk"]), sl.fmt_mmm([nf / x for x in res["sdk"]]),
                 bl.fmt_ratio(sl.ratio(f_med, sl.mmm(res["sdk"])[1]))],
                ["", "curl --parallel --parallel-max 16", sl.fmt_mmm(res["curl"]),
                 sl.fmt_mmm([nf / x for x in res["curl"]]),
                 bl.fmt_ratio(sl.ratio(f_med, sl.mmm(res["curl"])[1]))],
            ]
            self.add("small_files (%s)" % mode_label, "files/s, log to delivered",
                     res["ferry"], "Comet SDK model", res["sdk"], "", ">= 2x SDK model",
                     lambda f, r: f >= 2 * r)
            self.add("small_files (%s)" % mode_label, "files/s, log to delivered",
                     res["ferry"], "curl --parallel 16", res["curl"], "", "(none)",
                     lambda f, r: None)
        bl.print_table(
            "small_files — %d x %d KiB files in %d versions; median (min-max) of %d"
            % (nf, a.file_kib, nv, a.reps),
            ["versions", "method", "files/s", "seconds", "ferry rate / method rate"], all_rows,
            ["ferry: from the first `ferry log` until `ferry wait` exits 0; SDK model: "
             "from the first upsert until the last version is closed (experiment registration "
             "not timed); curl: one curl for the upserts, one `curl --parallel --parallel-max 16` "
             "with one multipart POST per file, one curl for the closes (all timed)"], left=2)

    def curl_parallel(self, root, sink, names, dirs):
        """The curl reference of small_files; wall seconds."""
        base = sink.base
        auth = "Authorization: %s" % bl.API_KEY
        c = bl.CometRest(base)
        key = c.register()                   # the experiment: not timed
        c.close_connection()

        def config(path, sections):
            with open(path, "w") as f:
                f.write("silent\nshow-error\nparallel\nparallel-max = 16\n")
                for i, sec in enumerate(sections):
                    if i:
                        f.write("next\n")
                    f.write("fail\n")
                    f.write('header = "%s"\n' % auth)
                    for k, v in sec:
                        f.write('%s = "%s"\n' % (k, v.replace("\\", "\\\\").replace('"', '\\"')))
            return path

        def curl(cfg):
            p = bl.run(["curl", "-K", cfg], timeout=self.args.max_seconds)
            if p.returncode != 0:
                bl.die("curl -K %s exited %d: %s" % (cfg, p.returncode, p.stderr[-2000:]))

        t0 = time.monotonic()
        outs = [os.path.join(root, "upsert-%d.json" % k) for k in range(len(names))]
        curl(config(os.path.join(root, "upserts.cfg"), [
            [("url", base + sl.UPSERT), ("header", "Content-Type: application/json"),
             ("data-binary", json.dumps({"artifactName": nm, "artifactType": "dataset",
                                         "experimentKey": key, "version": None})),
             ("output", out)] for nm, out in zip(names, outs)]))
        vids = []
        for out in outs:
            with open(out) as f:
                vids.append(json.load(f)["artifactVersionId"])
        secs = []
        for vid, ps in zip(vids, dirs):
            for p in ps:
                fn = os.path.basename(p)
                secs.append([("url", "%s%s?experimentKey=%s&artifactVersionId=%s&fileName=%s"
                              "&type=asset&overwrite=false" % (base, sl.UPLOAD, key, vid, fn)),
                             ("form", "file=@%s;type=application/octet-stream" % p),
                             ("output", "/dev/null")])
        curl(config(os.path.join(root, "uploads.cfg"), secs))
        curl(config(os.path.join(root, "closes.cfg"), [
            [("url", base + sl.STATE), ("header", "Content-Type: application/json"),
             ("data-binary", json.dumps({"artifactVersionId": vid, "experimentKey": key,
                                         "state": "CLOSED"})),
             ("output", "/dev/null")] for vid in vids]))
        return time.monotonic() - t0

    # ============================================================ 4. large file

    def bench_large_file(self):
        a = self.args
        size = a.large_size
        print("\n== large_file: one %s file, log to delivered vs one curl; %d reps"
              % (bl.fmt_bytes(size), a.reps))
        bl.require_disk(self.root, 3 * size + (512 << 20), "large_file --large-size %d" % size)
        path = self.big_file(size)
        res = {"ferry": [], "curl": [], "rss": [], "hwm": [], "idle": [], "logpart": []}
        for rep in range(a.reps):
            for who in self.order(rep, ["ferry", "curl"]):
                if bl.interrupted():
                    raise KeyboardInterrupt
                root = self.fresh_dir("large-" + who)
                sink = sl.NginxSink(root, "sink").start()
                lo0 = lo_rx_bytes()
                if who == "ferry":
                    d = sl.Daemon(os.path.join(root, "ferry"), "comet", sink.url)
                    d.start()
                    time.sleep(0.3)
                    res["idle"].append((bl.status_kib(d.pid, "VmRSS") or 0) / 1024.0)
                    sampler = bl.RssSampler(d.pid).start()
                    t0 = time.monotonic()
                    d.cli("log", "large", path, "--type", "model", timeout=a.max_seconds)
                    t1 = time.monotonic()
                    d.wait_drained(a.max_seconds)
                    wall = time.monotonic() - t0
                    sampler.stop()
                    res["rss"].append(sampler.peak_kib / 1024.0)
                    res["hwm"].append((bl.status_kib(d.pid, "VmHWM") or 0) / 1024.0)
                    res["logpart"].append(t1 - t0)
                    d.stop()
                else:
                    c = bl.CometRest(sink.base)
                    key = c.register()
                    vid = c.upsert(key, "large-curl", "model")
                    url = ("%s%s?experimentKey=%s&artifactVersionId=%s&fileName=big.bin"
                           "&type=asset&overwrite=false&extension=bin"
                           % (sink.base, sl.UPLOAD, key, vid))
                    t0 = time.monotonic()
                    p = bl.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null",
                                "-H", "Authorization: " + bl.API_KEY,
                                "-F", "file=@%s;type=application/octet-stream" % path, url],
                               timeout=a.max_seconds)
                    wall = time.monotonic() - t0
                    if p.returncode != 0:
                        bl.die("curl exited %d: %s" % (p.returncode, p.stderr))
                    c.set_state(key, vid)
                    c.close_connection()
                lo = lo_rx_bytes() - lo0
                s = sl.summarize_sink(sink.settle(states=1, uploads=1))
                sink.stop()
                self.check_sink(s, 1, 1, size, "large_file (%s)" % who)
                if lo0 and lo < size:
                    bl.die("large_file (%s): only %d bytes crossed the loopback interface for a "
                           "%d-byte upload" % (who, lo, size))
                res[who].append(size / wall / sl.MiB)
                self.progress("%-5s rep %d: %.2f s, %.0f MiB/s%s" % (
                    who, rep + 1, wall, size / wall / sl.MiB,
                    ", RSS peak %.1f MiB" % res["rss"][-1] if who == "ferry" else ""))
                sl.rmtree(root)
        rows = [
            ["ferry: `ferry log` + `ferry wait`", sl.fmt_mmm(res["ferry"]),
             sl.fmt_mmm(res["rss"]), "1.00x"],
            ["curl -F file=@... (one stream)", sl.fmt_mmm(res["curl"]), "-",
             bl.fmt_ratio(sl.ratio(sl.mmm(res["ferry"])[1], sl.mmm(res["curl"])[1]))],
        ]
        bl.print_table("large_file — one %s file to the nginx sink; median (min-max) of %d"
                       % (bl.fmt_bytes(size), a.reps),
                       ["method", "MiB/s, log to delivered", "ferryd RSS peak MiB (50 ms)",
                        "ferry rate / method rate"], rows,
                       ["ferryd: idle %s MiB, kernel high-water %s MiB; `ferry log` (the durable "
                        "spool snapshot) took %s s of ferry's time"
                        % (sl.fmt_mmm(res["idle"]), sl.fmt_mmm(res["hwm"]),
                           sl.fmt_mmm(res["logpart"]))])
        self.add("large_file", "MiB/s, log to delivered", res["ferry"], "curl -F (1 stream)",
                 res["curl"], "", ">= 80% of curl", lambda f, r: f >= 0.8 * r)
        self.add("large_file", "ferryd RSS peak (MiB)", res["rss"], None, None, "", "< 32 MiB",
                 lambda f, r: f < 32)

    # ============================================================ 5. local backend

    def bench_local(self):
        a = self.args
        n = a.local_versions
        size = a.local_large_size
        print("\n== local: FERRY_BACKEND=local, %d one-file %d KiB versions; one %s file; "
              "%d reps" % (n, a.file_kib, bl.fmt_bytes(size), a.reps))
        files = self.small_set("local", n)
        res = {k: [] for k in ("deliver", "e2e", "lograte", "script", "big", "bigref")}
        for rep in range(a.reps):
            for who in self.order(rep, ["ferry", "script"]):
                if bl.interrupted():
                    raise KeyboardInterrupt
                root = self.fresh_dir("local-" + who)
                if who == "ferry":
                    d = sl.Daemon(os.path.join(root, "ferry"), "local")
                    d.start()
                    # (a) delivery only: log while paused, time resume -> wait
                    d.cli("pause")
                    plan = write_json(os.path.join(root, "plan-a.json"), {"versions": [
                        ["local-%d" % (i % a.artifacts), [p]] for i, p in enumerate(files)]})
                    r = run_workers([self_cmd("log", plan)], d.env, root, "log-a",
                                    a.max_seconds)[0]
                    res["lograte"].append(n / (r["end"] - r["start"]))
                    t0 = time.monotonic()
                    d.cli("resume")
                    d.wait_drained(a.max_seconds)
                    res["deliver"].append(n / (time.monotonic() - t0))
                    # (b) end to end: log (not paused) and wait
                    plan = write_json(os.path.join(root, "plan-b.json"), {"versions": [
                        ["local-e2e-%d" % (i % a.artifacts), [p]] for i, p in enumerate(files)]})
                    t0 = time.time()
                    run_workers([self_cmd("log", plan)], d.env, root, "log-b", a.max_seconds)
                    d.wait_drained(a.max_seconds)
                    res["e2e"].append(n / (time.time() - t0))
                    st = d.status()
                    if st.get("done") != 2 * n or st.get("failed"):
                        bl.die("local: status says done=%s failed=%s, expected %d, 0"
                               % (st.get("done"), st.get("failed"), 2 * n))
                    d.stop()
                    self.progress("ferry  rep %d: delivered %.0f versions/s (log %.0f/s), end to "
                                  "end %.0f/s" % (rep + 1, res["deliver"][-1],
                                                  res["lograte"][-1], res["e2e"][-1]))
                else:
                    dst = os.path.join(root, "dst")
                    os.makedirs(dst)
                    lst = os.path.join(root, "list.txt")
                    with open(lst, "w") as f:
                        f.write("\n".join(files) + "\n")
                    script = os.path.join(root, "copy.sh")
                    with open(script, "w") as f:
                        f.write('while IFS= read -r f; do\n'
                                '    cp "$f" "$2/"\n'
                                '    sha256sum "$2/${f##*/}"\n'
                                'done < "$1" > "$3"\n')
                    t0 = time.monotonic()
                    p = bl.run(["bash", script, lst, dst, os.path.join(root, "sums")],
                               timeout=a.max_seconds)
                    wall = time.monotonic() - t0
                    if p.returncode != 0 or len(os.listdir(dst)) != n:
                        bl.die("the cp + sha256sum script failed: %s" % p.stderr)
                    res["script"].append(n / wall)
                    self.progress("script rep %d: %.0f files/s" % (rep + 1, n / wall))
                sl.rmtree(root)
        if size:
            bl.require_disk(self.root, 3 * size + (512 << 20), "local --local-large-size")
            path = self.big_file(size)
            for rep in range(a.reps):
                for who in self.order(rep, ["ferry", "cp"]):
                    if bl.interrupted():
                        raise KeyboardInterrupt
                    root = self.fresh_dir("local-big-" + who)
                    if who == "ferry":
                        d = sl.Daemon(os.path.join(root, "ferry"), "local")
                        d.start()
                        t0 = time.monotonic()
                        d.cli("log", "local-big", path, "--type", "model", timeout=a.max_seconds)
                        d.wait_drained(a.max_seconds)
                        wall = time.monotonic() - t0
                        got = json.loads(d.cli("get", "local-big", "--json").stdout)
                        if got.get("size") != size or got.get("state") != "CLOSED":
                            bl.die("local: the 1 GiB version is %s with size %s"
                                   % (got.get("state"), got.get("size")))
                        d.stop()
                        res["big"].append(size / wall / sl.MiB)
                    else:
                        t0 = time.monotonic()
                        dst = os.path.join(root, "big.bin")
                        p1 = bl.run(["cp", path, dst], timeout=a.max_seconds)
                        p2 = bl.run(["openssl", "dgst", "-sha256", dst], timeout=a.max_seconds)
                        wall = time.monotonic() - t0
                        if p1.returncode or p2.returncode:
                            bl.die("cp + openssl failed: %s %s" % (p1.stderr, p2.stderr))
                        res["bigref"].append(size / wall / sl.MiB)
                    self.progress("%-5s big rep %d: %.2f s, %.0f MiB/s"
                                  % (who, rep + 1, wall, size / wall / sl.MiB))
                    sl.rmtree(root)
        f_med = sl.mmm(res["deliver"])[1]
        rows = [
            ["%d x %d KiB versions" % (n, a.file_kib), "ferry: delivered/s (logged paused, "
             "resume -> `ferry wait`)", sl.fmt_mmm(res["deliver"]), "1.00x"],
            ["", "ferry: end to end (1 process logs, then `ferry wait`)", sl.fmt_mmm(res["e2e"]),
             bl.fmt_ratio(sl.ratio(f_med, sl.mmm(res["e2e"])[1]))],
            ["", "ferry: logging alone (1 process, Python binding)", sl.fmt_mmm(res["lograte"]),
             bl.fmt_ratio(sl.ratio(f_med, sl.mmm(res["lograte"])[1]))],
            ["", "bash: cp FILE DIR/; sha256sum DIR/FILE (per file)", sl.fmt_mmm(res["script"]),
             bl.fmt_ratio(sl.ratio(f_med, sl.mmm(res["script"])[1]))],
        ]
        if size:
            rows += [
                ["one %s file" % bl.fmt_bytes(size), "ferry: `ferry log` + `ferry wait` (MiB/s)",
                 sl.fmt_mmm(res["big"]), "1.00x"],
                ["", "cp FILE DST; openssl dgst -sha256 DST (MiB/s)", sl.fmt_mmm(res["bigref"]),
                 bl.fmt_ratio(sl.ratio(sl.mmm(res["big"])[1], sl.mmm(res["bigref"])[1]))],
            ]
        bl.print_table("local — FERRY_BACKEND=local; median (min-max) of %d" % a.reps,
                       ["what", "method", "per second", "ratio ferry (first row) / method"],
                       rows, ["versions are spread over %d artifacts" % a.artifacts], left=2)
        self.add("local", "4 KiB versions delivered/s", res["deliver"], "cp + sha256sum per file",
                 res["script"], "", ">= 80% of script", lambda f, r: f >= 0.8 * r)
        if size:
            self.add("local", "%s: MiB/s log to delivered" % bl.fmt_bytes(size), res["big"],
                     "cp + openssl dgst", res["bigref"], "", ">= 90% of cp+dgst",
                     lambda f, r: f >= 0.9 * r)


def lo_rx_bytes():
    try:
        with open("/sys/class/net/lo/statistics/rx_bytes") as f:
            return int(f.read())
    except OSError:
        return 0


# ===================================================================== main

def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("a size like 1G, 512M or 1048576")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2].upper()]
    return int(float(m[1]) * mult)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="benchmarks: " + ", ".join(BENCHES))
    ap.add_argument("--only", default=",".join(BENCHES),
                    help="comma list of benchmarks to run (default: all)")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of every measurement (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and one repetition: a smoke run of a few minutes")
    ap.add_argument("--versions", type=int, default=None,
                    help="backlog: one-file versions queued offline (default 100000; 0 skips "
                         "this half)")
    ap.add_argument("--backlog-files", type=int, default=None,
                    help="backlog: files of the one-version backlog (default = --versions; "
                         "0 skips it)")
    ap.add_argument("--enqueue-versions", type=int, default=None,
                    help="enqueue: versions logged in all (default 8000)")
    ap.add_argument("--small-files", type=int, default=2000, help="small_files: files (2000)")
    ap.add_argument("--small-versions", type=int, default=20,
                    help="small_files: versions they are split into (20)")
    ap.add_argument("--large-size", type=parse_size, default=None,
                    help="large_file: size (default 1G)")
    ap.add_argument("--local-versions", type=int, default=None,
                    help="local: one-file versions (default 2000)")
    ap.add_argument("--local-large-size", type=parse_size, default=None,
                    help="local: size of the large file (default 1G; 0 skips it)")
    ap.add_argument("--file-kib", type=int, default=4, help="size of the small files (4 KiB)")
    ap.add_argument("--loggers", type=int, default=8, help="logging processes (8)")
    ap.add_argument("--artifacts", type=int, default=8, help="backlog/local: artifacts (8)")
    ap.add_argument("--threads", type=int, default=8, help="SDK model: threads (8)")
    ap.add_argument("--status-requests", type=int, default=200,
                    help="backlog: status requests timed per repetition (200)")
    ap.add_argument("--max-seconds", type=int, default=3600,
                    help="bound of any one wait (log, drain, upload); default 3600")
    ap.add_argument("--stall-seconds", type=int, default=300,
                    help="backlog: give up when the sink sees no delivery for this long (300)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=3600, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        {"log": worker_log, "sdk": worker_sdk}[args.worker](args)
        return

    only = [b for b in args.only.split(",") if b]
    bad = [b for b in only if b not in BENCHES]
    if bad:
        ap.error("--only: unknown %s (choose from %s)" % (", ".join(bad), ", ".join(BENCHES)))
    q = args.quick
    if args.reps is None:
        args.reps = 1 if q else 3
    if args.versions is None:
        args.versions = 2000 if q else 100000
    if args.backlog_files is None:
        args.backlog_files = args.versions
    if args.enqueue_versions is None:
        args.enqueue_versions = 800 if q else 8000
    if args.large_size is None:
        args.large_size = (256 << 20) if q else (1 << 30)
    if args.local_versions is None:
        args.local_versions = 400 if q else 2000
    if args.local_large_size is None:
        args.local_large_size = (256 << 20) if q else (1 << 30)
    if args.reps < 1 or not (args.versions == 0 or args.versions >= 10) or args.loggers < 1 \
            or args.threads < 1:
        ap.error("--reps >= 1, --versions 0 or >= 10, --loggers/--threads >= 1")

    bl.require_build(need_lib=True)
    bl.require_tool("curl")
    sl.find_nginx()
    if "local" in only:
        bl.require_tool("sha256sum")
        if args.local_large_size:
            bl.require_tool("openssl")
    if "enqueue" in only:
        bl.require_tool("cc")
    root = bl.make_tmp("ferry-bench-scale-")
    fk = args.file_kib * 1024
    need = 0
    if "backlog" in only:
        need += 3 * (args.versions + args.backlog_files) * (fk + 4096)
    if "large_file" in only:
        need += 3 * args.large_size
    if "local" in only:
        need += 3 * args.local_large_size
    bl.require_disk(root, need + (1 << 30), "queue_scale")
    print("queue_scale: %s; reps %d; %s" % (", ".join(only), args.reps, bl.machine_line()))
    print("measuring the build in %s with the Python binding in %s; nginx %s"
          % (bl.BUILD_DIR, sl.binding_dir(), sl.find_nginx()))
    sys.stdout.flush()
    b = Bench(args, root)
    t0 = time.monotonic()
    try:
        for name in BENCHES:
            if name in only:
                getattr(b, "bench_" + name)()
                # scratch of the finished benchmark (its source files stay for reuse)
    finally:
        if b.summary:
            b.print_summary("queue_scale — summary (median (min-max) of %d; ratio of medians; "
                            "%.0f s)" % (args.reps, time.monotonic() - t0))


if __name__ == "__main__":
    bl.run_main(main)
