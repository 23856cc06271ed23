#!/usr/bin/env bash
# Fuzz the wire protocol for longer than CI does: scripts/fuzz.sh [SECONDS] [TARGET...]
# Each libFuzzer target of tests/fuzz/ (fuzz_frame, fuzz_request by default) runs SECONDS
# (default 600) in turn, growing a corpus kept in the build directory ($FERRY_FUZZ_BUILD,
# default ./build-fuzz), then a summary is printed. FERRY_FUZZ_PARALLEL=1 runs the targets
# at once (one core each). Exit status: 0 when nothing was found, 1 when a target found a
# crash, leak, undefined behaviour or timeout (the input is named in the summary), 2 when
# the targets cannot be built (clang and libclang-rt-14-dev are needed).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_frame fuzz_request)
build="${FERRY_FUZZ_BUILD:-$here/build-fuzz}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

cmake -S "$here" -B "$build" | grep '^-- fuzz:' || true
if ! cmake --build "$build" --target ferry_fuzzers >"$build/fuzz-build.log" 2>&1; then
    tail -n 30 "$build/fuzz-build.log" >&2
    echo "fuzz: the fuzz targets did not build (log: $build/fuzz-build.log)" >&2
    exit 2
fi

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

# run TARGET: fuzz it for $seconds; the output goes to $build/fuzz/TARGET.log.
run() {
    local t="$1" dir="$build/fuzz"
    local corpora=("$dir/corpus/$t" "$here/tests/fuzz/seeds/$t")
    [ -d "$here/tests/fuzz/regressions/$t" ] && corpora+=("$here/tests/fuzz/regressions/$t")
    mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
    "$dir/$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$here/tests/fuzz/ferry.dict" -artifact_prefix="$dir/artifacts/$t/" \
        "${corpora[@]}" >"$dir/$t.log" 2>&1
}

for t in "${targets[@]}"; do
    if [ ! -x "$build/fuzz/$t" ]; then
        echo "fuzz: no target $t in $build/fuzz (see the configure message above)" >&2
        exit 2
    fi
done
start=$(date +%s)
declare -A status
marker="$build/fuzz/.started"
touch "$marker"
if [ "${FERRY_FUZZ_PARALLEL:-0}" = 1 ]; then
    declare -A pids
    echo "fuzz: ${targets[*]} for ${seconds} s, at once"
    for t in "${targets[@]}"; do
        run "$t" &
        pids[$t]=$!
    done
    for t in "${targets[@]}"; do
        status[$t]=0
        wait "${pids[$t]}" || status[$t]=$?
    done
else
    for t in "${targets[@]}"; do
        echo "fuzz: $t for ${seconds} s (log: $build/fuzz/$t.log)"
        status[$t]=0
        run "$t" || status[$t]=$?
    done
fi

echo
echo "== fuzz summary ($(($(date +%s) - start)) s)"
printf '%-14s %-8s %12s %8s %8s %8s  %s\n' target result execs exec/s cov corpus found
failed=0
for t in "${targets[@]}"; do
    log="$build/fuzz/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -ao 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    corpus=$(find "$build/fuzz/corpus/$t" -type f | wc -l)
    found=$(find "$build/fuzz/artifacts/$t" -type f -newer "$marker" | tr '\n' ' ')
    result=ok
    if [ "${status[$t]}" != 0 ] || [ -n "$found" ]; then
        result=FAILED
        failed=1
    fi
    printf '%-14s %-8s %12s %8s %8s %8s  %s\n' "$t" "$result" "${execs:--}" "${rate:--}" \
        "${cov:--}" "$corpus" "${found:-none}"
done
for t in "${targets[@]}"; do
    why=$(grep -a -m 1 -E 'FUZZ_CHECK|failed:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
        "$build/fuzz/$t.log" || true)
    [ -z "$why" ] || echo "$t: $why"
done
if [ "$failed" = 1 ]; then
    echo "fuzz: a target failed (its log says more); replay an input with" \
        "$build/fuzz/TARGET INPUT, and keep it under tests/fuzz/regressions/TARGET/"
fi
exit "$failed"
