#!/usr/bin/env python3
"""Eight ranks on one node fetch the same dataset: what reaches the backend?

A dataset version (default 2 files, 100 MiB in all) is put on the Comet
stand-in (tests/comet_standin.py) beforehand. Then 8 ranks fetch it at once:

  ferry, cold node cache   8 concurrent `ferry download` through one ferryd
                           with an empty cache
  ferry, warm node cache   8 more, later, through the same ferryd (the next
                           job on the node)
  8 independent curls      each rank on its own, like 8 SDK processes: one
                           `curl` for the version's file list, then one
                           `curl` get-asset per file

Requests are the stand-in's own counts (getAsset, and all endpoints). Bytes
are counted by a TCP relay between the downloaders and the stand-in: every
byte the backend sent, HTTP headers included. Every rank's copy is checked
(size and SHA-256).

Scenarios (--scenarios): `loopback` (the relay only counts) and `link` (the
relay also limits the backend's link to --rate-mib MiB/s each way, shared by
all connections like one NIC, and the stand-in waits --latency-ms before each
answer).

Ratios divide by `ferry, cold node cache` in the same run.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

DATASET = "shared-dataset"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * bl.MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def check_copies(dirs, expected):
    """Each rank's directory holds exactly the dataset's files, byte-identical."""
    for d in dirs:
        have = sorted(os.listdir(d)) if os.path.isdir(d) else []
        if have != sorted(expected):
            bl.die("%s holds %s, not %s" % (d, have, sorted(expected)))
        for name, (size, digest) in expected.items():
            p = os.path.join(d, name)
            if os.path.getsize(p) != size or sha256_file(p) != digest:
                bl.die("%s differs from what was uploaded" % p)


def ferry_ranks(d, dirs, timeout=600):
    """Start one `ferry download` per rank at once; wait for all; wall seconds."""
    procs = []
    t0 = time.monotonic()
    for out in dirs:
        p = subprocess.Popen([bl.FERRY, "download", DATASET, out], env=d.env, cwd=d.root,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
        bl._register(p, lambda p=p: bl.terminate(p, 5))
        procs.append(p)
    deadline = t0 + timeout
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            bl.die("ferry download took longer than %ds" % timeout)
        bl._unregister(p)
        if p.returncode != 0:
            bl.die("ferry download exited %d: %s" % (p.returncode, err.decode()[-2000:]))
    return time.monotonic() - t0


def curl_rank(base, out):
    """One independent downloader: list the version's files, fetch each."""
    auth = ["-H", "Authorization: " + bl.API_KEY]
    p = bl.run(["curl", "-sS", "--fail-with-body"] + auth +
               ["%s/api/rest/v2/artifacts/version/files?artifactName=%s&workspace=%s"
                % (base, DATASET, bl.WORKSPACE)], timeout=600)
    if p.returncode != 0:
        bl.die("curl (file list) exited %d: %s%s" % (p.returncode, p.stdout, p.stderr))
    os.makedirs(out, exist_ok=True)
    for f in json.loads(p.stdout)["files"]:
        q = bl.run(["curl", "-sS", "--fail-with-body"] + auth +
                   ["-o", os.path.join(out, f["fileName"]),
                    "%s/api/rest/v2/experiment/asset/get-asset?assetId=%s&artifactVersionId=%s"
                    % (base, f["assetId"], f["artifactVersionId"])], timeout=600)
        if q.returncode != 0:
            bl.die("curl (get-asset) exited %d: %s" % (q.returncode, q.stderr))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=8, help="downloaders (default 8)")
    ap.add_argument("--files", type=int, default=2, help="files in the dataset (default 2)")
    ap.add_argument("--total-mib", type=float, default=100,
                    help="dataset size in MiB (default 100)")
    ap.add_argument("--scenarios", default="loopback,link",
                    help="comma list of loopback, link (default both)")
    ap.add_argument("--rate-mib", type=float, default=50,
                    help="link scenario: MiB/s each way (default 50)")
    ap.add_argument("--latency-ms", type=float, default=20,
                    help="link scenario: stand-in delay before each answer (default 20)")
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or any(s not in ("loopback", "link") for s in scenarios):
        ap.error("--scenarios: loopback and/or link")
    if not (1 <= args.ranks <= 64 and 1 <= args.files <= 100 and args.total_mib > 0):
        ap.error("ranks 1..64, files 1..100, total-mib > 0")

    bl.require_build()
    bl.require_tool("curl")
    total = int(args.total_mib * bl.MiB)
    root = bl.make_tmp("ferry-bench-download-")
    # source + stand-in copy + per scenario: ferry cache + 2 x ranks ferry copies + ranks curl
    bl.require_disk(root, total * (2 + len(scenarios) * (1 + 3 * args.ranks)) + (256 << 20),
                    "shared_download")

    print("shared_download: %d ranks fetch one version of %d files, %.0f MiB; %s"
          % (args.ranks, args.files, total / float(bl.MiB), bl.machine_line()))
    sys.stdout.flush()
    src = os.path.join(root, "src")
    os.makedirs(src)
    expected, paths = {}, []
    left = total
    for i in range(args.files):
        size = left // (args.files - i)
        left -= size
        p = bl.make_file(os.path.join(src, "shard-%02d.bin" % i), size, seed=i)
        paths.append(p)
        expected[os.path.basename(p)] = (size, sha256_file(p))

    standin = bl.StandIn(root).start()
    direct = bl.CometRest(standin.url.split("/clientlib/")[0])
    key = direct.register()
    direct.log_artifact(key, DATASET, paths, type_="dataset")
    direct.close_connection()

    for scenario in scenarios:
        if bl.interrupted():
            raise KeyboardInterrupt
        rate = args.rate_mib * bl.MiB if scenario == "link" else None
        relay = bl.Relay(root, standin.port, rate=rate, name="relay-" + scenario).start()
        if scenario == "link":
            standin.set_faults([{"endpoint": "*", "delay": args.latency_ms / 1000.0}])
            what = "link: %.0f MiB/s each way, %.0f ms per request" % (args.rate_mib,
                                                                       args.latency_ms)
        else:
            standin.set_faults([])
            what = "loopback"
        base = relay.url.split("/clientlib/")[0]
        sroot = os.path.join(root, scenario)
        results = []

        def measure(label, run):
            standin.reset_counts()
            relay.reset()
            wall = run()
            counts = standin.counts()
            stats = relay.stats()
            res = {"label": label, "wall": wall, "get": counts.get("getAsset", 0),
                   "all": sum(counts.values()), "bytes": stats["down"]}
            sys.stderr.write("  %-8s %-28s %2d getAsset / %3d requests, %8.1f MiB, %.2f s\n"
                             % (scenario, label, res["get"], res["all"],
                                res["bytes"] / float(bl.MiB), wall))
            results.append(res)

        d = bl.Ferryd(os.path.join(sroot, "ferry"), relay.url).start()
        cold = [os.path.join(sroot, "ferry-cold", "rank%d" % r) for r in range(args.ranks)]
        warm = [os.path.join(sroot, "ferry-warm", "rank%d" % r) for r in range(args.ranks)]
        measure("ferry, cold node cache", lambda: ferry_ranks(d, cold))
        check_copies(cold, expected)
        measure("ferry, warm node cache", lambda: ferry_ranks(d, warm))
        check_copies(warm, expected)
        d.stop()

        indep = [os.path.join(sroot, "curl", "rank%d" % r) for r in range(args.ranks)]
        measure("%d independent curl ranks" % args.ranks,
                lambda: bl.parallel([lambda o=o: curl_rank(base, o) for o in indep])[1])
        check_copies(indep, expected)
        relay.stop()

        ref = results[0]
        rows = []
        for r in results:
            rows.append([r["label"], "%d / %d" % (r["get"], r["all"]),
                         bl.fmt_bytes(r["bytes"]), "%.2f" % r["wall"],
                         bl.fmt_ratio(r["bytes"] / float(ref["bytes"])) if ref["bytes"] else "-",
                         bl.fmt_ratio(r["wall"] / ref["wall"])])
        bl.print_table(
            "shared_download [%s] — %d ranks, %d files, %.0f MiB"
            % (what, args.ranks, args.files, total / float(bl.MiB)),
            ["method", "requests to the backend (getAsset / all)", "bytes from the backend",
             "wall s", "bytes ratio to ferry", "wall ratio to ferry"], rows)
    standin.set_faults([])


if __name__ == "__main__":
    bl.run_main(main)
