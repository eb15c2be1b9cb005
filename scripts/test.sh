#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (the README's test command):
#   1. provision the test environment (apt packages, the control plane build; cached): v1.20.2
#      by default, or the Go-built release with simulated nodes when RECKON_K8S_VERSION=1.37.2,
#   2. formatting and lints, and the benchmarks at a small size,
#   3. every test (unit, integration, smoke) under one local control plane started for the run
#      and stopped by PID at the end — or your cluster, when RECKON_TEST_KUBECONFIG is set.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
bin_dir="$(bash scripts/provision-testenv.sh | tail -n 1)"
# The Go-built control plane (RECKON_K8S_VERSION) brings kubectl and kustomize of its release:
# first on PATH, so nothing depends on what the machine image ships.
if [ -n "$bin_dir" ]; then export PATH="$bin_dir:$PATH"; fi
echo "test.sh: environment ready in $(( $(date +%s) - t0 ))s" >&2

# Two cores: build with both, run tests two at a time (the control plane needs CPU too).
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI clones afresh every run: keep compiled dependencies in the cache, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-run
  runner=(cargo nextest run --workspace --no-fail-fast --test-threads 2)
else
  echo "test.sh: cargo-nextest not found, using cargo test (install: cargo install cargo-nextest)" >&2
  cargo test --workspace --no-run
  runner=(cargo test --workspace --no-fail-fast)
fi
# Benchmarks at CI size: they print their tables (each compares against a baseline measured in
# the same run); the full-size figures are in docs/storage.md and docs/sources.md.
RECKON_BENCH_EVENTS=10000 cargo test -q --bench store
RECKON_BENCH_COMMITS=300 RECKON_BENCH_FILES=100 RECKON_BENCH_ITERS=3 cargo test -q --bench git_poll

cargo build -p reckon-testenv --bin reckon-testenv
# The reconciler benchmark at CI size (20 Apps; its table compares against kubectl in the same
# run, and it asserts zero writes in steady state, counted by the API server, so it runs first,
# while nothing else writes), then every test, on one control plane.
exec "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- bash -c '
  status=0
  if cargo nextest --version >/dev/null 2>&1; then
    RECKON_BENCH_APPS=20 cargo nextest run --cargo-quiet --test agent_bench --run-ignored only --no-capture || status=1
  fi
  "$@" || status=1
  bash scripts/api-contract.sh || status=1
  exit $status' test.sh "${runner[@]}"
