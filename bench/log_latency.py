#!/usr/bin/env python3
"""How long does the training process block when it logs an artifact?

N artifact versions (default 20 x 3 files of 4 MiB) are logged to the Comet
stand-in (tests/comet_standin.py) by:

  ferry `ferry log`        one CLI call per version: returns after the durable
                           snapshot; `ferry wait` then says when all is delivered
  ferry Python binding     Experiment.log_artifact per version, then .wait()
  synchronous SDK-style    what Comet's SDK does at log time, blocking, in the
                           training process: upsert, one streamed multipart
                           upload per file, close (http.client, keep-alive)
  curl CLI                 the same calls, one `curl` process per request,
                           sequentially

For the peers the process is blocked until the version is delivered, so both
columns are the same. Each method logs its own artifact names; every version
is checked on the stand-in (CLOSED, all files, right sizes) before its time
counts.

Two network scenarios (--scenarios): `loopback` talks to the stand-in
directly; `link` puts a rate-limited relay in front of it (--rate-mib MiB/s
each way, shared by all connections, like one NIC) and makes the stand-in wait
--latency-ms before answering each request.

The table prints ratios to `ferry log` measured in the same run: the machine
this runs on is shared, so absolute seconds are only indicative.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


# --------------------------------------------------------------- the workers
# Python "training processes": each times its own log loop and prints JSON.

def worker_sdk(args):
    with open(args.plan) as f:
        names_files = json.load(f)
    c = bl.CometRest(args.base)
    key = c.register()               # once per run (Experiment()), not timed
    t0 = time.monotonic()
    for name, files in names_files:
        c.log_artifact(key, name, files)
    t1 = time.monotonic()
    c.close_connection()
    print(json.dumps({"blocked": t1 - t0, "delivered": t1 - t0}))


def worker_binding(args):
    sys.path.insert(0, os.path.join(bl.SOURCE_DIR, "client", "python"))
    import ferry
    with open(args.plan) as f:
        names_files = json.load(f)
    exp = ferry.Experiment(project_name=bl.PROJECT, workspace=bl.WORKSPACE)   # not timed
    t0 = time.monotonic()
    for name, files in names_files:
        art = ferry.Artifact(name, artifact_type="model")
        for f in files:
            art.add(f)
        exp.log_artifact(art)
    t1 = time.monotonic()
    exp.end(wait=True, timeout=600)
    t2 = time.monotonic()
    print(json.dumps({"blocked": t1 - t0, "delivered": t2 - t0}))


def run_worker(root, kind, plan, env=None, base=None):
    os.makedirs(root, exist_ok=True)
    plan_path = os.path.join(root, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    cmd = [bl.PYTHON, os.path.abspath(__file__), "--worker", kind, "--plan", plan_path]
    if base:
        cmd += ["--base", base]
    p = bl.run(cmd, env=env, timeout=900)
    if p.returncode != 0:
        bl.die("the %s worker exited %d:\n%s" % (kind, p.returncode, p.stderr[-3000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- the methods

def method_ferry_cli(root, url, plan):
    d = bl.Ferryd(root, url).start()
    try:
        key = d.cli("experiment").stdout.strip()        # once per run, not timed
        t0 = time.monotonic()
        for name, files in plan:
            d.cli("log", name, *files, "--type", "model", "--experiment", key)
        t1 = time.monotonic()
        d.wait_drained(timeout=600)
        t2 = time.monotonic()
    finally:
        d.stop()
    return {"blocked": t1 - t0, "delivered": t2 - t0}


def method_ferry_binding(root, url, plan):
    d = bl.Ferryd(root, url).start()
    try:
        env = dict(d.env, FERRY_LIB=bl.LIBFERRY)
        return run_worker(root, "binding", plan, env=env)
    finally:
        d.stop()


def method_sdk(root, url, plan):
    return run_worker(root, "sdk", plan, base=url.split("/clientlib/")[0])


def method_curl(root, url, plan):
    base = url.split("/clientlib/")[0]
    c = bl.CometRest(base)
    key = c.register()               # once per run, not timed
    c.close_connection()
    auth = ["-H", "Authorization: " + bl.API_KEY]

    def curl(*args):
        p = bl.run(["curl", "-sS", "--fail-with-body"] + auth + list(args), timeout=600)
        if p.returncode != 0:
            bl.die("curl %s exited %d: %s%s" % (args[-1], p.returncode, p.stdout, p.stderr))
        return p.stdout

    t0 = time.monotonic()
    for name, files in plan:
        up = json.loads(curl("-H", "Content-Type: application/json", "--data-binary",
                             json.dumps({"artifactName": name, "artifactType": "model",
                                         "experimentKey": key, "version": None}),
                             base + "/api/rest/v2/write/artifacts/upsert"))
        vid = up["artifactVersionId"]
        for f in files:
            fn = os.path.basename(f)
            curl("-F", "file=@%s;type=application/octet-stream" % f,
                 "%s/api/rest/v2/write/experiment/upload-asset?experimentKey=%s"
                 "&artifactVersionId=%s&fileName=%s&type=asset&extension=bin"
                 % (base, key, vid, fn))
        curl("-H", "Content-Type: application/json", "--data-binary",
             json.dumps({"artifactVersionId": vid, "experimentKey": key, "state": "CLOSED"}),
             base + "/api/rest/v2/write/artifacts/state")
    t1 = time.monotonic()
    return {"blocked": t1 - t0, "delivered": t1 - t0}


METHODS = [
    ("ferry: `ferry log` per version", "ferry-cli", method_ferry_cli),
    ("ferry: Python binding log_artifact", "ferry-py", method_ferry_binding),
    ("sync SDK-style upload (http.client)", "sdk", method_sdk),
    ("curl CLI, one process per request", "curl", method_curl),
]


def check_delivered(standin, prefix, plan, file_size):
    """Every version of this method is CLOSED on the stand-in with all its files."""
    arts = {a["name"]: a for a in standin.state()["artifacts"] if a["name"].startswith(prefix)}
    for name, files in plan:
        a = arts.get(name)
        if a is None or len(a["versions"]) != 1:
            bl.die("%s: %s is not on the stand-in as one version" % (prefix, name))
        v = a["versions"][0]
        sizes = {s["fileName"]: s["size"] for s in v["assets"]}
        want = {os.path.basename(f): file_size for f in files}
        if v["state"] != "CLOSED" or sizes != want:
            bl.die("%s: %s arrived as %s with %s" % (prefix, name, v["state"], sizes))
    for name, _ in plan:                 # checked: free the stand-in's copies (disk space)
        for s in arts[name]["versions"][0]["assets"]:
            try:
                os.unlink(s["path"])
            except (OSError, TypeError):
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=int, default=20, help="versions logged (default 20)")
    ap.add_argument("--files", type=int, default=3, help="files per version (default 3)")
    ap.add_argument("--file-mib", type=float, default=4, help="MiB per file (default 4)")
    ap.add_argument("--scenarios", default="loopback,link",
                    help="comma list of loopback, link (default both)")
    ap.add_argument("--rate-mib", type=float, default=50,
                    help="link scenario: MiB/s each way (default 50)")
    ap.add_argument("--latency-ms", type=float, default=20,
                    help="link scenario: stand-in delay before each answer (default 20)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="repeat each method; the median is printed (default 3)")
    ap.add_argument("--methods", default="ferry-cli,ferry-py,sdk,curl")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:                      # a measured child process, not the benchmark
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        {"sdk": worker_sdk, "binding": worker_binding}[args.worker](args)
        return

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("loopback", "link"):
            ap.error("unknown scenario %r" % s)
    wanted = [m for m in args.methods.split(",") if m]
    methods = [m for m in METHODS if m[1] in wanted]
    if not methods or methods[0][1] != "ferry-cli":
        ap.error("--methods must start with ferry-cli (the baseline of the ratios)")
    if not (1 <= args.artifacts <= 1000 and 1 <= args.files <= 100 and args.rounds >= 1):
        ap.error("artifacts 1..1000, files 1..100, rounds >= 1")

    bl.require_build(need_lib="ferry-py" in wanted)
    bl.require_tool("curl")
    file_size = int(args.file_mib * bl.MiB)
    total = args.artifacts * args.files * file_size
    root = bl.make_tmp("ferry-bench-latency-")
    # the files, a spool's copies, the stand-in's copies of one run (dropped once checked)
    bl.require_disk(root, total * 3 + (256 << 20), "log_latency")

    print("log_latency: %d versions x %d files x %.1f MiB = %.0f MiB per method; %s"
          % (args.artifacts, args.files, args.file_mib, total / float(bl.MiB), bl.machine_line()))
    sys.stdout.flush()
    src = os.path.join(root, "files")
    os.makedirs(src)
    files = []
    for i in range(args.artifacts):
        row = []
        for j in range(args.files):
            row.append(bl.make_file(os.path.join(src, "ckpt%03d-part%d.bin" % (i, j)), file_size,
                                    seed=i * 100 + j))
        files.append(row)

    standin = bl.StandIn(root).start()
    relay = None
    for scenario in scenarios:
        if scenario == "link":
            relay = bl.Relay(root, standin.port, rate=args.rate_mib * bl.MiB).start()
            url = relay.url
            standin.set_faults([{"endpoint": "*", "delay": args.latency_ms / 1000.0}])
            what = "link: %.0f MiB/s each way through a relay, %.0f ms per request" % (
                args.rate_mib, args.latency_ms)
        else:
            url = standin.url
            standin.set_faults([])
            what = "loopback: straight to the stand-in on 127.0.0.1"
        samples = {tag: [] for _, tag, _ in methods}
        for r in range(args.rounds):           # rounds outside: drift hits every method alike
            for label, tag, fn in methods:
                if bl.interrupted():
                    raise KeyboardInterrupt
                prefix = "%s-%s-r%d-" % (scenario, tag, r)
                plan = [(prefix + "v%03d" % i, row) for i, row in enumerate(files)]
                sroot = os.path.join(root, prefix.rstrip("-"))
                res = fn(sroot, url, plan)
                check_delivered(standin, prefix, plan, file_size)
                shutil.rmtree(sroot, ignore_errors=True)
                samples[tag].append(res)
                sys.stderr.write("  %-8s %-9s round %d: blocked %6.2f s, delivered %6.2f s\n"
                                 % (scenario, tag, r + 1, res["blocked"], res["delivered"]))
        results = {tag: {k: statistics.median(s[k] for s in samples[tag])
                         for k in ("blocked", "delivered")} for tag in samples}
        base = results["ferry-cli"]
        rows = []
        for label, tag, _ in methods:
            r = results[tag]
            rows.append([label, "%.2f" % r["blocked"], "%.2f" % r["delivered"],
                         bl.fmt_ratio(r["blocked"] / base["blocked"]),
                         bl.fmt_ratio(r["delivered"] / base["delivered"])])
        bl.print_table(
            "log_latency [%s] — %d versions x %d x %.1f MiB%s" % (
                what, args.artifacts, args.files, args.file_mib,
                ", median of %d" % args.rounds if args.rounds > 1 else ""),
            ["method", "training-process blocked (s)", "until delivered (s)",
             "blocked ratio to ferry", "delivered ratio to ferry"], rows)
        if relay is not None:
            relay.stop()
            relay = None
    standin.set_faults([])
    print("\n(ratios > 1x: the training process waited that many times longer than with "
          "`ferry log`)")


if __name__ == "__main__":
    bl.run_main(main)
