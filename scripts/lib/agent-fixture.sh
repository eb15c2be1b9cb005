# Sourced by scripts/api-contract.sh and scripts/ui-test.sh: a real agent (`reckon run --listen`)
# reconciling a real two-commit Git repository into a fresh namespace of the control plane in
# RECKON_TEST_KUBECONFIG, with a read-only and an admin token. After `agent_fixture_start NAME`:
#   $work      scratch directory ($work/git is the repository, $work/agent.log the agent's log)
#   $ns        the namespace          $first $second  the two commits (the second is applied)
#   $base      http://127.0.0.1:PORT  $read_token $admin_token
#   $agent_pid the agent              $reckon  the binary     kc  kubectl with the kubeconfig
# agent_fixture_stop and agent_fixture_launch stop it and start it again (same port, same store).
# agent_extra_args (an array, set before agent_fixture_start): more `reckon run` flags.
# An EXIT trap stops the agent by PID, deletes the namespace and the scratch directory.

# Random hex from od (tr | head would die of SIGPIPE under pipefail).
rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

agent_fixture_cleanup() {
  if [ -n "${agent_pid:-}" ]; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  "${kc[@]}" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}

# Two commits by Ann: the second is what the agent follows, the first what a rollback finds.
agent_fixture_repo() {
  git init -q -b main "$work/git"
  g() { git -C "$work/git" -c user.name=Ann -c user.email=ann@example.com "$@"; }
  cm() { printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  n: "%s"\n' "$1" "$2"; }
  mkdir -p "$work/git/app"
  cm keep 1 >"$work/git/app/keep.yaml"
  cm a 1 >"$work/git/app/a.yaml"
  g add -A && g commit -qm "Add a and keep"
  first="$(g rev-parse HEAD)"
  cm keep 2 >"$work/git/app/keep.yaml"
  g add -A && g commit -qm "Change keep"
  second="$(g rev-parse HEAD)"
}

agent_fixture_config() {
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
  read_token="$1-read-$(rand 16)"
  admin_token="$1-admin-$(rand 16)"
  echo "viewer $read_token" >"$work/agent/read.tokens"
  echo "fuzzer $admin_token" >"$work/agent/admin.tokens"
}

# Waits until the agent has applied $second (or died, or 120 s passed).
agent_fixture_wait() {
  local deadline=$(( $(date +%s) + 120 ))
  until curl -fsS -H "Authorization: Bearer $read_token" "$base/api/v1/apps/web" 2>/dev/null \
    | grep -q "\"applied_revision\":\"$second\""; do
    if ! kill -0 "$agent_pid" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
      echo "$1: the agent did not apply $second; its log:" >&2
      tail -n 40 "$work/agent.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

agent_fixture_start() {
  local name="$1"
  : "${RECKON_TEST_KUBECONFIG:?run under reckon-testenv run (or set it to your cluster)}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"
  # RECKON_BIN: a reckon already built (e.g. copied out of a target directory other checkouts
  # build into too, where debug/reckon is whichever checkout built last).
  if [ -n "${RECKON_BIN:-}" ]; then
    reckon="$RECKON_BIN"
  else
    cargo build -q --bin reckon
    reckon="$CARGO_TARGET_DIR/debug/reckon"
  fi
  work="$(mktemp -d)"
  ns="reckon-$name-$(rand 4)"
  agent_pid=""
  kc=(kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG")
  trap agent_fixture_cleanup EXIT
  agent_fixture_repo
  "${kc[@]}" create namespace "$ns" >/dev/null
  agent_fixture_config "$name"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  agent_fixture_launch
  agent_fixture_wait "$name"
}

# Starts the agent (again) on $base with its store in $work/agent/reckon-store.
agent_fixture_launch() {
  (
    cd "$work/agent"
    exec env -u RECKON_STORE -u RECKON_CONFIG -u RECKON_CACHE -u RECKON_SERVER -u RECKON_TOKEN \
      RUST_LOG=warn "$reckon" run --listen "${base#http://}" \
      --api-token-file read.tokens --admin-token-file admin.tokens \
      ${agent_extra_args[@]+"${agent_extra_args[@]}"}
  ) >>"$work/agent.log" 2>&1 &
  agent_pid=$!
}

# Stops the agent (SIGTERM; it flushes its store and exits) and waits for it.
agent_fixture_stop() {
  kill -TERM "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
}
