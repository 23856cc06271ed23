#!/usr/bin/env bash
# The main job: install, build, start ferryd on the embedded local registry,
# log a demo artifact, wait for delivery, get it and download it back.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"
build="${FERRY_BUILD_DIR:-$here/build}"   # the test suite runs this demo on its own build
"$here/scripts/build.sh" "$build"

ferryd="$build/daemon/ferryd"
ferry="$build/client/ferry"
demo="$(mktemp -d /tmp/ferry-demo.XXXXXX)"
export FERRY_SOCKET="$demo/run/ferryd.sock" FERRY_STATE_DIR="$demo/state"
unset COMET_API_KEY FERRY_BACKEND

"$ferryd" --foreground 2>"$demo/ferryd.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$FERRY_SOCKET" ] && break; sleep 0.05; done

cd "$demo"
seq 1 1000 | awk '{print $1 "," $1*$1}' > data.csv
head -c 1048576 /dev/urandom > model.pt
set -x
"$ferry" log my-data data.csv model.pt --type dataset --alias first --metadata '{"rows": 1000}'
"$ferry" wait --timeout 30
"$ferry" get my-data
"$ferry" download my-data ./out
cmp data.csv out/data.csv && cmp model.pt out/model.pt
"$ferry" log my-data data.csv
"$ferry" wait --timeout 30
"$ferry" get my-data --json
"$ferry" status
set +x
echo "demo: round trip OK (state in $demo)"
