#!/usr/bin/env bash
# The benchmarks (run by hand; not part of the test suite): build a release
# build into build-bench, then run bench/*.py, each printing a table of ratios
# between ferry and its peers measured in the same run. See bench/README.md.
#
#   scripts/bench.sh                      all three (a few minutes)
#   scripts/bench.sh NAME [OPTIONS...]    one of log_latency, upload_memory,
#                                         shared_download, with its options
#                                         (e.g. upload_memory --size 256M)
#
# Environment: FERRY_BUILD_DIR (default <repo>/build-bench), FERRY_BENCH_TMP
# (where scratch files go; default $TMPDIR or /tmp), FERRY_BENCH_KEEP_TMP=1.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${FERRY_BUILD_DIR:-$here/build-bench}"
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3 || true)"

all=(log_latency upload_memory shared_download)
if [ $# -gt 0 ]; then
    case "$1" in
        log_latency|upload_memory|shared_download) ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown benchmark '$1' (one of: ${all[*]})" >&2; exit 2 ;;
    esac
fi

for tool in cmake curl; do
    command -v "$tool" >/dev/null || { echo "bench.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[ -n "$python" ] || { echo "bench.sh: needs python3" >&2; exit 2; }

trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM

echo "== build (RelWithDebInfo) into $build"
mkdir -p "$build"
log="$build/bench-build.log"
if ! { cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build "$build" -j2; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "bench.sh: the build failed (full log: $log)" >&2
    exit 2
fi
export FERRY_BUILD_DIR="$build"

start=$(date +%s)
if [ $# -gt 0 ]; then
    name="$1"; shift
    echo "== $name"
    "$python" "$here/bench/$name.py" "$@"
else
    for name in "${all[@]}"; do
        echo
        echo "== $name"
        "$python" "$here/bench/$name.py"
    done
fi
echo
echo "== done in $(( $(date +%s) - start )) s (ratios are between runs on the same machine, in the same minute)"
