#!/usr/bin/env bash
# Build the Debian package: scripts/package.sh [BUILD_DIR] (default ./build-deb).
# Configures a release build for the /usr prefix and runs `cpack -G DEB` in it;
# the package is BUILD_DIR/ferry_<version>_<arch>.deb. Install it with
#   apt install ./build-deb/ferry_*.deb
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build-deb}"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
      -DFERRY_SANITIZE=OFF -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target ferryd ferry ferry_shared ferry_static >/dev/null
(cd "$build" && cpack -G DEB >/dev/null)
ls "$build"/ferry_*.deb
