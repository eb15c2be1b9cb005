#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (the README's test command):
#   1. provision the test environment (apt packages, the control plane builds; cached): both ends
#      of the version matrix — the newest supported release, built from Go modules with
#      simulated nodes, and the oldest, v1.20.2, from Debian's source package,
#   2. formatting and lints, and the benchmarks at a small size,
#   3. every test (unit, integration, smoke) under one local control plane of the newest release
#      started for the run and stopped by PID at the end — or your cluster, when
#      RECKON_TEST_KUBECONFIG is set,
#   4. the live apply, plan, watch, discovery and reconcile tests again on the oldest release.
# RECKON_K8S_VERSION=<version> runs the whole suite on that one release instead (no step 4).
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
# Older than everything this run compiles: afterwards the cache's builds of this workspace's crates
# from earlier clones go (scripts/lib/prune-target.sh).
stamp="$(mktemp)"
# The floor runs when the version is not chosen by hand and no cluster of your own is used.
floor="1.20.2"
run_floor=1
if [ -n "${RECKON_K8S_VERSION:-}" ] || [ -n "${RECKON_TEST_KUBECONFIG:-}" ]; then run_floor=0; fi
floor_path="$PATH"
if [ $run_floor = 1 ]; then
  floor_bin="$(RECKON_K8S_VERSION=$floor bash scripts/provision-testenv.sh | tail -n 1)"
  floor_path="$floor_bin:$PATH"
fi
bin_dir="$(bash scripts/provision-testenv.sh | tail -n 1)"
# The Go-built control plane brings kubectl and kustomize of its release, and helm (pinned in
# tests/testenv/k8s/helm/go.mod): first on PATH, so nothing depends on what the machine image ships.
if [ -n "$bin_dir" ]; then export PATH="$bin_dir:$PATH"; fi
# The agent benchmark's peer, Flux's apply engine (tests/peer/flux-ssa): a Go build cached like
# the control plane's, so a warm run builds nothing. Without Go the benchmark leaves its column out.
if command -v go >/dev/null 2>&1; then
  peer="$(bash scripts/build-peer.sh | tail -n 1)"
  export RECKON_BENCH_PEER="$peer"
fi
echo "test.sh: environment ready in $(( $(date +%s) - t0 ))s" >&2

# Two cores: build with both, run tests two at a time (the control plane needs CPU too).
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI clones afresh every run: keep compiled dependencies in the cache, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"

bash scripts/build-ui.sh --check  # the web UI embedded in reckon is what ui/src/ builds to
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-run
  runner=(cargo nextest run --workspace --no-fail-fast --test-threads 2)
  # The floor's tests by module, in the live and process binaries (see step 4).
  floor_tests=(--test live --test process
               -E '(binary(live) & test(/^(apply|plan|watch|kube_smoke|reconcile)::/)) | (binary(process) & test(/^cli_version::/))')
else
  echo "test.sh: cargo-nextest not found, using cargo test (install: cargo install cargo-nextest)" >&2
  cargo test --workspace --no-run
  runner=(cargo test --workspace --no-fail-fast)
  floor_tests=(--test live --test process -- apply:: plan:: watch:: kube_smoke:: reconcile:: cli_version::)
fi
# Benchmarks at CI size: they print their tables (each compares against a baseline measured in
# the same run); the full-size figures are in docs/storage.md and docs/sources.md.
# Every benchmark is an ignored test of the bench binary (tests/bench/).
RECKON_BENCH_EVENTS=10000 cargo test -q --test bench -- --ignored --exact store::run --nocapture
RECKON_BENCH_COMMITS=300 RECKON_BENCH_FILES=100 RECKON_BENCH_ITERS=3 \
  cargo test -q --test bench -- --ignored --exact git_poll::run --nocapture
RECKON_BENCH_ITERS=5 cargo test -q --test bench -- --ignored --exact --test-threads 1 --nocapture \
  helm::render_against_helm_template helm::unchanged_index_of_1000_versions

# Every fuzz target for a few seconds from its committed corpus (fuzz/, docs/operations.md).
status=0
bash scripts/fuzz-smoke.sh || status=1

cargo build -p reckon-testenv --bin reckon-testenv
# The reconciler benchmarks at CI size (20 Apps; its table compares against the peer and kubectl
# in the same run, and it asserts zero writes in steady state, counted by the API server, so it runs first,
# while nothing else writes; the scale benchmark on a fleet of 4 shards), then every test, on one
# control plane.
"$CARGO_TARGET_DIR/debug/reckon-testenv" run --audit -- bash -c '
  status=0
  if cargo nextest --version >/dev/null 2>&1; then
    RECKON_BENCH_APPS=20 RECKON_BENCH_SCALE_APPS=20 RECKON_BENCH_SCALE_SHARDS=4 cargo nextest run --cargo-quiet --test bench --run-ignored only -E "test(/^agent::/)" --no-capture || status=1
  fi
  "$@" || status=1
  bash scripts/api-contract.sh || status=1
  bash scripts/ui-test.sh || status=1
  exit $status' test.sh "${runner[@]}" || status=1

# The floor of the version matrix: the tests whose behaviour depends on the server's release
# (apply and field validation, planning and scopes, watches, discovery, the reconciler end to
# end) on the oldest supported one, with its own tools first on PATH.
if [ $run_floor = 1 ]; then
  echo "test.sh: the floor of the version matrix, Kubernetes v$floor" >&2
  PATH="$floor_path" RECKON_K8S_VERSION="$floor" \
    "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- "${runner[@]}" "${floor_tests[@]}" || status=1
fi
bash scripts/lib/prune-target.sh "$CARGO_TARGET_DIR" "$stamp" || true
rm -f "$stamp"
echo "test.sh: done in $(( $(date +%s) - t0 ))s" >&2
exit $status
