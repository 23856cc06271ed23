#!/usr/bin/env bash
# The full test suite: set up, check formatting, then build and run every test
# twice — a normal build and an ASan+UBSan build.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"

echo "== clang-format"
files=$(cd "$here" && git ls-files '*.c' '*.h' 2>/dev/null || find daemon client proto tests -name '*.[ch]')
(cd "$here" && clang-format --dry-run --Werror $files)

jobs=2
status=0
for variant in release asan; do
    build="$here/build-test-$variant"
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    # The fuzzers carry their own sanitizers: the second build only replays their corpus.
    [ "$variant" = asan ] && args=(-DCMAKE_BUILD_TYPE=Debug -DFERRY_SANITIZE=ON -DFERRY_FUZZ_SECONDS=0)
    echo "== build ($variant)"
    "$here/scripts/build.sh" "$build" "${args[@]}"
    echo "== tests ($variant)"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    (cd "$build" && ctest --output-on-failure -j"$jobs" --timeout 600) || status=1
done
exit $status
