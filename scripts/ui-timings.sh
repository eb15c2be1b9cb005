#!/usr/bin/env bash
# Issue 21's page timings (tests/bench/ui.rs, ui/tests/timings.mjs): every view of the web UI,
# loaded in the system's headless Chromium from an agent's router over the API benchmark's
# generated store, with per view the API's answer time and the time from that answer to the
# first screen. Fails when a view's worst render after its API answer exceeds 300 ms.
# No cluster needed: the store is generated directly (the sample stream with real manifests).
#   scripts/ui-timings.sh                                         # 10,000,000 events, 1000 Apps
#   RECKON_BENCH_EVENTS=100000 RECKON_BENCH_APPS=100 scripts/ui-timings.sh   # small
#   RECKON_BENCH_DIR=/var/tmp/api-bench scripts/ui-timings.sh     # keep/reuse the store (shared
#                                                                 # with scripts/bench-api.sh)
#   UI_RUNS=5 (loads measured per view), UI_RENDER_BUDGET_MS=300, RECKON_CHROMIUM=/usr/bin/chromium,
#   UI_VIEWS="timeline,drift (30 days)" (a subset, by the names it prints)
# Without --release (several times slower API answers; the render is the browser's):
#   cargo nextest run --test bench --run-ignored only -E 'test(/^ui::/)' --no-capture
# The store alone (e.g. to generate it once with RECKON_BENCH_BATCH=100000, then RECKON_BENCH_REUSE=1):
#   cargo nextest run --release --test bench --run-ignored only -E 'test(=api::generate_store)' --no-capture
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "ui-timings.sh: cargo-nextest is needed (cargo install cargo-nextest)" >&2
  exit 2
fi
chromium="${RECKON_CHROMIUM:-$(command -v chromium || true)}"
[ -n "$chromium" ] || { echo "ui-timings.sh: chromium is needed (apt-get install chromium)" >&2; exit 2; }
export RECKON_CHROMIUM="$chromium"
# The UI's packages (playwright-core) from ui/package-lock.json, and a check that the embedded
# assets are what the sources build to (the timings are of what the agent serves).
bash scripts/build-ui.sh --check
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Release: the API's figures are about the product; a debug build is several times slower.
echo "ui-timings.sh: building (release)" >&2
cargo nextest run --cargo-quiet --release --test bench --no-run
echo "ui-timings.sh: ${RECKON_BENCH_EVENTS:-10000000} events" >&2
cargo nextest run --release --test bench --run-ignored only -E "test(/^ui::/)" --no-capture
