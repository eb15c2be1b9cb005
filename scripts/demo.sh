#!/usr/bin/env bash
# reckon's main job, end to end, on a fresh machine (the README's first quick-start command).
# Today: provisions the local Kubernetes control plane (cached after the first run), starts it,
# and has reckon connect to it and report its own and the cluster's version. It grows with the
# product: the reconciler will sync a demo Git repository here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-testenv.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"
cargo build --quiet --bin reckon -p reckon
cargo build --quiet --bin reckon-testenv -p reckon-testenv
RECKON="$CARGO_TARGET_DIR/debug/reckon"
exec "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- bash -c '
  set -e
  echo "== reckon version, connected to the local control plane"
  "$0" version --kubeconfig "$RECKON_TEST_KUBECONFIG"
' "$RECKON"
