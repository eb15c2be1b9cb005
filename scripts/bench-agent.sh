#!/usr/bin/env bash
# The reconciler benchmark (tests/bench/agent.rs): `reckon run` and `reckon sync` against the peer,
# Flux's apply engine driven as kustomize-controller drives it (tests/peer/flux-ssa, built from its
# Go module by scripts/build-peer.sh), and against `kubectl apply --server-side` of the same files,
# measured in the same run on one local control plane, printed as one table with the control
# plane's CPU floor. Size: RECKON_BENCH_APPS (default 1000 Apps of 4 objects); every App's
# interval RECKON_BENCH_INTERVAL seconds (default 120, 20 up to 100 Apps).
#   scripts/bench-agent.sh                      # 1000 Apps
#   RECKON_BENCH_APPS=100 scripts/bench-agent.sh
#   scripts/bench-agent.sh --scale              # 10,000 Apps on one agent, then on 4 shards
#   RECKON_BENCH_SCALE_APPS=2000 RECKON_BENCH_SCALE_SHARDS=4 scripts/bench-agent.sh --scale
# With RECKON_TEST_KUBECONFIG set, it runs against that cluster instead (it needs metrics access).
# The full output (progress, nextest) goes to $CARGO_TARGET_DIR/bench-agent.log.
set -euo pipefail
cd "$(dirname "$0")/.."

# Which benchmark: the side-by-side one (default) or the fleet at scale (tests/bench/agent/scale.rs).
filter='test(=agent::agent_against_kubectl_server_side_apply)'
what="${RECKON_BENCH_APPS:-1000} Apps"
if [ "${1:-}" = "--scale" ]; then
  filter='test(=agent::scale::scale)'
  what="${RECKON_BENCH_SCALE_APPS:-10000} Apps on fleets of ${RECKON_BENCH_SCALE_SHARDS:-1,4} shard(s)"
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "bench-agent.sh: kubectl is needed for the baseline (https://kubernetes.io/docs/tasks/tools/)" >&2
  exit 2
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "bench-agent.sh: cargo-nextest is needed (cargo install cargo-nextest)" >&2
  exit 2
fi
bin_dir="$(bash scripts/provision-testenv.sh | tail -n 1)"
# The Go-built control plane (RECKON_K8S_VERSION) brings kubectl and kustomize of its release:
# first on PATH, so nothing depends on what the machine image ships.
if [ -n "$bin_dir" ]; then export PATH="$bin_dir:$PATH"; fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target="${CARGO_TARGET_DIR:-target}"
log="$target/bench-agent.log"
mkdir -p "$target"

# The peer: a Go build into the cache, once (stamped); its last line is the binary.
peer="$(bash scripts/build-peer.sh | tail -n 1)"
export RECKON_BENCH_PEER="$peer"

# Release: the figures are about the product, and a debug agent is several times slower.
echo "bench-agent.sh: building (release)" >&2
cargo build --release -q -p reckon-testenv --bin reckon-testenv
cargo nextest run --cargo-quiet --release --test bench --no-run

echo "bench-agent.sh: running $what (full output in $log)" >&2
status=0
"$target/release/reckon-testenv" run -- \
  cargo nextest run --release --test bench --run-ignored only -E "$filter" --no-capture \
  >"$log" 2>&1 || status=$?

# The table is the only output on success; on failure, the end of the log says why.
grep -E '^(reckon agent benchmark|\|)' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "bench-agent.sh: failed (exit $status); the end of $log:" >&2
  tail -n 40 "$log" >&2
fi
exit "$status"
