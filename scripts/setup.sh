#!/usr/bin/env bash
# Install what ferry needs to build and test on Debian 12 (run as root, or with sudo available).
# Idempotent: does nothing when everything is present.
set -euo pipefail

PACKAGES=(build-essential cmake pkg-config git
          libuv1-dev libcurl4-openssl-dev libcjson-dev libsqlite3-dev libssl-dev libexpat1-dev
          python3 python3-pip python3-setuptools clang-format sqlite3 curl
          clang libclang-rt-14-dev llvm  # clang, libFuzzer's runtime, llvm-symbolizer: the fuzz tests
          python3-venv                   # README: the binding installed into a virtual environment
          file dpkg-dev                  # cpack -G DEB: ELF detection and dpkg-shlibdeps
          systemd                        # systemd-analyze verify, systemd-socket-activate (tests)
          groff-base man-db              # the man pages rendered and found (tests)
          python3-boto3)                 # the S3 tests' independent client
# Node.js and npm run s3rver, the S3 stand-in of the tests. A machine that has
# node and npm already (another packaging of Node.js) keeps them.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The S3 stand-in for tests (s3rver, the version pinned in tests/package.json and
# its lock file), from the npm registry, kept inside the repo's tests/ (git-ignored).
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -f "$here/tests/package.json" ]; then
    want="$(sed -n 's/.*"s3rver": *"\([^"]*\)".*/\1/p' "$here/tests/package.json")"
    have=""
    if [ -f "$here/tests/node_modules/s3rver/package.json" ]; then
        have="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
                    "$here/tests/node_modules/s3rver/package.json" | head -n 1)"
    fi
    if [ "$want" != "$have" ]; then
        echo "setup: installing s3rver $want into tests/node_modules"
        (cd "$here/tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
fi
echo "setup: dependencies present"
