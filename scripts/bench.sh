#!/usr/bin/env bash
# The benchmarks (run by hand; not part of the test suite): build a release
# build into build-bench, then run bench/*.py, each printing a table of ratios
# between ferry and its peers measured in the same run. See bench/README.md.
#
#   scripts/bench.sh                      the first three (a few minutes)
#   scripts/bench.sh NAME [OPTIONS...]    one of log_latency, upload_memory,
#                                         shared_download, queue_scale, with its
#                                         options (e.g. upload_memory --size 256M,
#                                         queue_scale --versions 20000)
#   scripts/bench.sh queue_scale          the five "queue at scale" benchmarks
#                                         (long at the default sizes; --quick)
#   scripts/bench.sh all                  all four scripts at their defaults
#
# queue_scale needs nginx (its HTTP sink): when missing it is installed here
# (as root: apt-get install nginx-light, else nginx; its service is not started).
# Environment: FERRY_BUILD_DIR (default <repo>/build-bench), FERRY_BENCH_NO_BUILD=1
# (measure that build as it is, without rebuilding), FERRY_BENCH_TMP (where
# scratch files go; default $TMPDIR or /tmp), FERRY_BENCH_KEEP_TMP=1.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${FERRY_BUILD_DIR:-$here/build-bench}"
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3 || true)"

default=(log_latency upload_memory shared_download)
all=(log_latency upload_memory shared_download queue_scale)
run=("${default[@]}")
if [ $# -gt 0 ]; then
    case "$1" in
        log_latency|upload_memory|shared_download|queue_scale) run=("$1") ;;
        all) run=("${all[@]}"); shift
             [ $# -eq 0 ] || { echo "bench.sh: 'all' takes no options" >&2; exit 2; } ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown benchmark '$1' (one of: ${all[*]}, all)" >&2; exit 2 ;;
    esac
fi

# nginx, the HTTP sink of queue_scale: installed on demand, never started as a service.
have_nginx() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}
ensure_nginx() {
    have_nginx && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench.sh: queue_scale needs nginx (its HTTP sink) and it is not installed;" >&2
        echo "          run this as root to install it, or: sudo apt-get install -y nginx-light" >&2
        exit 2
    fi
    command -v apt-get >/dev/null 2>&1 || {
        echo "bench.sh: queue_scale needs nginx and there is no apt-get to install it; install nginx" >&2
        exit 2; }
    echo "== installing nginx (the HTTP sink of queue_scale)"
    # Keep the package from starting its own nginx on port 80 (invoke-rc.d honours
    # policy-rc.d; exit 101 = "action forbidden"). Only a file we created is removed.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# bench.sh: no service starts while nginx is installed\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d; echo "bench.sh: interrupted" >&2; exit 130' INT TERM
    fi
    local ok=""
    apt-get update -qq >/dev/null 2>&1 || true
    for pkg in nginx-light nginx; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
                >"$build/nginx-install.log" 2>&1; then
            ok=1
            break
        fi
    done
    if [ -n "$made_policy" ]; then
        rm -f "$policy"
        trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM
    fi
    if [ -z "$ok" ] || ! have_nginx; then
        tail -n 20 "$build/nginx-install.log" >&2 || true
        echo "bench.sh: could not install nginx (apt-get install nginx-light / nginx failed; log: $build/nginx-install.log)" >&2
        exit 2
    fi
}

for tool in cmake curl; do
    command -v "$tool" >/dev/null || { echo "bench.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[ -n "$python" ] || { echo "bench.sh: needs python3" >&2; exit 2; }

trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM

mkdir -p "$build"
for name in "${run[@]}"; do
    [ "$name" != queue_scale ] || ensure_nginx
done
if [ -n "${FERRY_BENCH_NO_BUILD:-}" ]; then
    # Measure an existing build as it is (e.g. a "before" build kept aside).
    echo "== using the existing build in $build (FERRY_BENCH_NO_BUILD)"
else
    echo "== build (RelWithDebInfo) into $build"
    log="$build/bench-build.log"
    if ! { cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
           cmake --build "$build" -j2; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "bench.sh: the build failed (full log: $log)" >&2
        exit 2
    fi
fi
export FERRY_BUILD_DIR="$build"

start=$(date +%s)
if [ ${#run[@]} -eq 1 ] && [ $# -gt 0 ]; then
    name="$1"; shift
    echo "== $name"
    "$python" "$here/bench/$name.py" "$@"
else
    for name in "${run[@]}"; do
        echo
        echo "== $name"
        "$python" "$here/bench/$name.py"
    done
fi
echo
echo "== done in $(( $(date +%s) - start )) s (ratios are between runs on the same machine, in the same minute)"
