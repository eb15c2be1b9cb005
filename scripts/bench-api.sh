#!/usr/bin/env bash
# Issue 6's query benchmark (tests/bench/api.rs): history (by App, object, author, kind), blame
# and revisions through the agent's HTTP API (p50/p99 per page of 100) against the same queries
# straight on the store in the same run, and the wall time of `reckon ... --server`. One table.
# No cluster needed: the store is generated directly (the sample stream with real manifests).
#   scripts/bench-api.sh                                    # 10,000,000 events, 1000 Apps
#   RECKON_BENCH_EVENTS=100000 RECKON_BENCH_APPS=100 scripts/bench-api.sh   # CI size
#   RECKON_BENCH_DIR=/var/tmp/api-bench scripts/bench-api.sh   # keep and reuse the store
#   RECKON_BENCH_DIR=... RECKON_BENCH_REUSE=1 scripts/bench-api.sh  # whatever size it holds
# The full output goes to $CARGO_TARGET_DIR/bench-api.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "bench-api.sh: cargo-nextest is needed (cargo install cargo-nextest)" >&2
  exit 2
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target="${CARGO_TARGET_DIR:-target}"
log="$target/bench-api.log"
mkdir -p "$target"

# Release: the figures are about the product; a debug build is several times slower.
echo "bench-api.sh: building (release)" >&2
cargo nextest run --cargo-quiet --release --test bench --no-run

echo "bench-api.sh: running ${RECKON_BENCH_EVENTS:-10000000} events (full output in $log)" >&2
status=0
cargo nextest run --release --test bench --run-ignored only -E "test(/^api::/)" --no-capture >"$log" 2>&1 || status=$?

grep -E '^(reckon API benchmark|\|)' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "bench-api.sh: failed (exit $status); the end of $log:" >&2
  tail -n 40 "$log" >&2
fi
exit "$status"
