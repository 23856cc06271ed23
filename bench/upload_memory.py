#!/usr/bin/env python3
"""How much memory does one large upload take?

One file (default 1 GiB, --size) is uploaded to the Comet stand-in
(tests/comet_standin.py, on 127.0.0.1) by:

  ferryd               `ferry log` + `ferry wait`: the daemon snapshots the file
                       into its spool and uploads it (libcurl, streamed multipart)
  curl                 `curl -F file=@PATH` to the same upload-asset endpoint
  Python, streamed     http.client, the multipart body sent in 1 MiB reads
  Python, in memory    the anti-pattern: the file read into memory and the
                       multipart body built around it (what requests' `files=`
                       does), then sent

The resident set of the uploading process (ferryd, curl, python) is sampled
from /proc/PID/status (VmRSS) every 50 ms while it works; the kernel's own
high-water mark (ferryd: VmHWM over its whole life; others: ru_maxrss) is shown
next to it. The peers upload into a version made beforehand (upsert, not
measured) and close it after. Every upload is checked on the stand-in (size
and SHA-256).

The ratio column divides by ferryd's sampled peak measured in the same run.
"""

import argparse
import hashlib
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("a size like 1G, 512M or 1048576")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2].upper()]
    n = int(float(m[1]) * mult)
    if n < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return n


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * bl.MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def worker(args):
    """A measured child: upload one file into an existing version, then exit."""
    c = bl.CometRest(args.base)
    c.upload(args.key, args.vid, args.file, in_memory=(args.worker == "naive"))
    c.close_connection()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=1 << 30,
                    help="size of the file (default 1G; K, M, G suffixes)")
    ap.add_argument("--methods", default="ferry,curl,py-stream,py-naive",
                    help="comma list of ferry, curl, py-stream, py-naive")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--vid", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        worker(args)
        return
    methods = [m for m in args.methods.split(",") if m]
    if not methods or methods[0] != "ferry" or not set(methods) <= {
            "ferry", "curl", "py-stream", "py-naive"}:
        ap.error("--methods: ferry first (the baseline), then any of curl, py-stream, py-naive")

    bl.require_build()
    if "curl" in methods:
        bl.require_tool("curl")
    size = args.size
    root = bl.make_tmp("ferry-bench-memory-")
    # the file, ferryd's spool copy, the stand-in's copy of one upload at a time
    bl.require_disk(root, 3 * size + (512 << 20), "upload_memory --size %d" % size)

    print("upload_memory: one file of %.0f MiB; %s" % (size / float(bl.MiB), bl.machine_line()))
    sys.stdout.flush()
    path = os.path.join(root, "big.bin")
    bl.make_file(path, size)
    digest = sha256_file(path)

    standin = bl.StandIn(root).start()
    base = standin.url.split("/clientlib/")[0]
    rows, notes = [], []

    def verify_and_drop(name):
        """The upload arrived intact; then free the stand-in's copy (disk space)."""
        arts = [a for a in standin.state()["artifacts"] if a["name"] == name]
        if not arts or not arts[0]["versions"]:
            bl.die("%s did not arrive on the stand-in" % name)
        v = arts[0]["versions"][-1]
        assets = v["assets"]
        if v["state"] != "CLOSED" or len(assets) != 1 or assets[0]["size"] != size \
                or assets[0]["sha256"] != digest:
            bl.die("%s arrived wrong: state %s, assets %s" % (name, v["state"], [
                (a["fileName"], a["size"], a["sha256"]) for a in assets]))
        try:
            os.unlink(assets[0]["path"])
        except (OSError, TypeError):
            pass

    def progress(label, peak, hwm, wall):
        sys.stderr.write("  %-18s peak %.1f MiB (high-water %.1f MiB), %.2f s\n"
                         % (label, peak / 1024.0, hwm / 1024.0, wall))

    # -- ferryd
    d = bl.Ferryd(os.path.join(root, "ferry"), standin.url).start()
    time.sleep(0.5)                           # let it settle before its idle size is read
    idle = bl.status_kib(d.pid, "VmRSS") or 0
    sampler = bl.RssSampler(d.pid).start()
    t0 = time.monotonic()
    try:
        d.cli("log", "mem-ferry", path, "--type", "model", timeout=900)
        t_logged = time.monotonic()
        d.wait_drained(timeout=900)
        wall = time.monotonic() - t0
    finally:
        peak = sampler.stop()
    hwm = bl.status_kib(d.pid, "VmHWM") or 0
    d.stop()
    verify_and_drop("mem-ferry")
    progress("ferryd", peak, hwm, wall)
    ferry_peak = peak
    rows.append(["ferryd (ferry log + wait)", "%.1f" % (peak / 1024.0), "%.1f" % (hwm / 1024.0),
                 "%.2f" % wall, bl.fmt_ratio(1.0)])
    notes.append("ferryd: idle %.1f MiB before the upload; its wall time includes the durable "
                 "spool snapshot (%.2f s of `ferry log`)" % (idle / 1024.0, t_logged - t0))

    # -- the peers: one process each, uploading into a version made beforehand
    peers = [m for m in methods if m != "ferry"]
    for m in peers:
        if bl.interrupted():
            raise KeyboardInterrupt
        label = {"curl": "curl -F file=@...",
                 "py-stream": "Python, streamed (http.client)",
                 "py-naive": "Python, file read into memory"}[m]
        if m == "py-naive":
            need = int(3.3 * size) + (256 << 20)   # file + body + http.client's copy
            if bl.mem_available() < need:
                rows.append([label, "skipped", "-", "-", "-"])
                notes.append("py-naive skipped: it needs about %.1f GiB of free memory"
                             % (need / float(1 << 30)))
                continue
        c = bl.CometRest(base)
        key = c.register()
        name = "mem-" + m
        vid = c.upsert(key, name)
        url = ("%s/api/rest/v2/write/experiment/upload-asset?experimentKey=%s"
               "&artifactVersionId=%s&fileName=big.bin&type=asset&extension=bin"
               % (base, key, vid))
        if m == "curl":
            cmd = ["curl", "-sS", "--fail-with-body", "-o", "/dev/null",
                   "-H", "Authorization: " + bl.API_KEY,
                   "-F", "file=@%s;type=application/octet-stream" % path, url]
        else:
            cmd = [bl.PYTHON, os.path.abspath(__file__), "--worker",
                   "naive" if m == "py-naive" else "stream",
                   "--base", base, "--key", key, "--vid", vid, "--file", path]
        rc, wall, peak, hwm, out = bl.run_sampled(cmd, timeout=900)
        if rc != 0:
            bl.die("%s exited %d:\n%s" % (label, rc, out[-3000:]))
        c.set_state(key, vid, "CLOSED")
        c.close_connection()
        verify_and_drop(name)
        progress(m, peak, hwm, wall)
        rows.append([label, "%.1f" % (peak / 1024.0), "%.1f" % (hwm / 1024.0), "%.2f" % wall,
                     bl.fmt_ratio(peak / float(ferry_peak)) if ferry_peak else "-"])

    bl.print_table("upload_memory — one %.0f MiB file to the stand-in on 127.0.0.1"
                   % (size / float(bl.MiB)),
                   ["uploader", "peak RSS MiB (50 ms samples)", "kernel high-water MiB",
                    "wall s", "ratio to ferry (peak RSS)"], rows, notes)


if __name__ == "__main__":
    bl.run_main(main)
