#!/usr/bin/env bash
# The project's test command: installs what is missing, starts the real components on
# 127.0.0.1 (deploy/local/stack.sh), runs every test of the workspace against them, stops them.
# Idempotent; the first run builds Tansu once (about 17 minutes), later runs reuse it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

started=0
if [ ! -f .stack/data ]; then
  deploy/local/stack.sh up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then deploy/local/stack.sh down; fi
}
trap cleanup EXIT
# shellcheck disable=SC1091
source .stack/env

# The end-to-end tests start the real binary: build it first, then run everything.
cargo build --workspace --bins
log="$(mktemp)"
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary, doc tests last),
# printed after the stack is down so it is the last line of the run.
summary="$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log")"
rm -f "$log"
trap - EXIT
cleanup
echo "$summary"
exit "$rc"
