#!/usr/bin/env bash
# The web UI in a real browser: a real agent (`reckon run --listen`) reconciling a real Git
# repository into the control plane of `reckon-testenv run` (RECKON_TEST_KUBECONFIG), with a
# read-only and an admin token, driven by ui/tests/browser.mjs (playwright-core and axe-core from
# ui/package-lock.json) in the system's headless Chromium (Debian's `chromium` package; no
# browser download). Screenshots of each page go to $CARGO_TARGET_DIR/tmp/ui-screens.
#   reckon-testenv run -- bash scripts/ui-test.sh     # as scripts/test.sh runs it
# Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RECKON_TEST_KUBECONFIG:?run under reckon-testenv run (or set it to your cluster)}"
chromium="${RECKON_CHROMIUM:-$(command -v chromium || true)}"
[ -n "$chromium" ] || { echo "ui-test.sh: chromium is needed (apt-get install chromium; scripts/provision-testenv.sh does)" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "ui-test.sh: kubectl is needed" >&2; exit 2; }

cache="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# The packages (and a check that the embedded assets are the sources' build).
bash scripts/build-ui.sh --check
cargo build -q --bin reckon
reckon="$CARGO_TARGET_DIR/debug/reckon"
shots="$CARGO_TARGET_DIR/tmp/ui-screens"

work="$(mktemp -d)"
rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
ns="reckon-ui-$(rand 4)"
agent_pid=""
kc=(kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG")
cleanup() {
  if [ -n "$agent_pid" ]; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  "${kc[@]}" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A Git repository with two commits by Ann; the browser test adds a third (by Bea) live.
git init -q -b main "$work/git"
g() { git -C "$work/git" -c user.name=Ann -c user.email=ann@example.com "$@"; }
mkdir -p "$work/git/app"
cm() { printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  n: "%s"\n' "$1" "$2"; }
cm keep 1 >"$work/git/app/keep.yaml"
cm a 1 >"$work/git/app/a.yaml"
g add -A && g commit -qm "Add a and keep"
first="$(g rev-parse HEAD)"
cm keep 2 >"$work/git/app/keep.yaml"
g add -A && g commit -qm "Change keep"
second="$(g rev-parse HEAD)"

"${kc[@]}" create namespace "$ns" >/dev/null
mkdir -p "$work/agent"
cat >"$work/agent/reckon.yaml" <<YAML
apps:
  - name: web
    source:
      url: file://$work/git
      path: app
      interval: 1s
    target:
      kubeconfig: $RECKON_TEST_KUBECONFIG
      namespace: $ns
YAML
read_token="ui-read-$(rand 16)"
admin_token="ui-admin-$(rand 16)"
echo "viewer $read_token" >"$work/agent/read.tokens"
echo "fuzzer $admin_token" >"$work/agent/admin.tokens"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
(
  cd "$work/agent"
  exec env -u RECKON_STORE -u RECKON_CONFIG -u RECKON_CACHE -u RECKON_SERVER -u RECKON_TOKEN \
    RUST_LOG=warn "$reckon" run --listen "127.0.0.1:$port" \
    --api-token-file read.tokens --admin-token-file admin.tokens
) >"$work/agent.log" 2>&1 &
agent_pid=$!

deadline=$(( $(date +%s) + 120 ))
until curl -fsS -H "Authorization: Bearer $read_token" "$base/api/v1/apps/web" 2>/dev/null \
  | grep -q "\"applied_revision\":\"$second\""; do
  if ! kill -0 "$agent_pid" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
    echo "ui-test.sh: the agent did not apply $second; its log:" >&2
    tail -n 40 "$work/agent.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "ui-test.sh: agent up at $base/ui/ (pid $agent_pid)" >&2

status=0
UI_BASE="$base" UI_READ_TOKEN="$read_token" UI_ADMIN_TOKEN="$admin_token" UI_GIT="$work/git" \
  UI_NS="$ns" UI_KUBECONFIG="$RECKON_TEST_KUBECONFIG" UI_SHOTS="$shots" UI_TARGET="$second" \
  UI_CHROMIUM="$chromium" timeout "${RECKON_UI_TIMEOUT:-300}" node ui/tests/browser.mjs || status=1
if [ "$status" -ne 0 ]; then
  echo "ui-test.sh: the browser test failed; the agent's log:" >&2
  tail -n 40 "$work/agent.log" >&2
fi
exit "$status"
