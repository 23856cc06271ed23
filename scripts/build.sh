#!/usr/bin/env bash
# Build ferry: scripts/build.sh [BUILD_DIR] [extra cmake arguments...]
# BUILD_DIR defaults to ./build; -DFERRY_SANITIZE=ON gives the ASan+UBSan build.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
shift || true
cmake -S "$here" -B "$build" "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
