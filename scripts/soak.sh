#!/usr/bin/env bash
# Soak: the chaos test (tests/test_chaos.py) for a long time on a release build.
#   scripts/soak.sh [SECONDS]          default 600 s of chaos, then the drain and the checks
# Not part of CI. FERRY_CHAOS_SEED replays a run's choices; FERRY_CHAOS_EXPLICIT sets the
# share of logs with an explicit version (default 0.1); FERRY_CHAOS_DUMP=FILE writes the
# stand-in's state, the chaos timeline and the clients' ledger for investigation.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-600}"
build="$here/build-soak"

echo "== build (release) in $build"
"$here/scripts/build.sh" "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo

log="$(mktemp /tmp/ferry-soak.XXXXXX.log)"
echo "== chaos for $seconds s (full output: $log)"
status=0
(cd "$here/tests" &&
    FERRY_BUILD_DIR="$build" FERRY_SOURCE_DIR="$here" FERRY_CHAOS_SECONDS="$seconds" \
        PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m unittest -v test_chaos) >"$log" 2>&1 ||
    status=$?

echo "== summary"
grep -E '^chaos(:| summary:)' "$log" || echo "(no summary: see $log)"
if [ "$status" -eq 0 ]; then
    echo "soak passed"
else
    echo "soak FAILED (exit $status); the failure:"
    sed -n '/^FAIL:\|^ERROR:/,$p' "$log" | head -c 20000
fi
exit "$status"
