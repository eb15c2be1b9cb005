#!/usr/bin/env bash
# The web UI in a real browser: a real agent (`reckon run --listen`) reconciling a real Git
# repository into the control plane of `reckon-testenv run` (RECKON_TEST_KUBECONFIG), with a
# read-only and an admin token, driven by ui/tests/browser.mjs (playwright-core and axe-core from
# ui/package-lock.json) in the system's headless Chromium (Debian's `chromium` package; no
# browser download). Screenshots of each page go to $CARGO_TARGET_DIR/tmp/ui-screens.
#   reckon-testenv run --audit -- bash scripts/ui-test.sh     # as scripts/test.sh runs it
# Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RECKON_TEST_KUBECONFIG:?run under reckon-testenv run (or set it to your cluster)}"
chromium="${RECKON_CHROMIUM:-$(command -v chromium || true)}"
[ -n "$chromium" ] || { echo "ui-test.sh: chromium is needed (apt-get install chromium; scripts/provision-testenv.sh does)" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "ui-test.sh: kubectl is needed" >&2; exit 2; }

# The packages (and a check that the embedded assets are the sources' build).
bash scripts/build-ui.sh --check
# The person behind a drift: under `reckon-testenv run --audit` the API server sends the writes of
# its people (token users alice and bob; nobody else's) to an audit receiver slot, which this
# agent fills (RECKON_TEST_AUDIT_DIR: tests/testenv/src/audit.rs). On a cluster of your own,
# RECKON_UI_NO_AUDIT=1 runs the rest and says the person steps were skipped.
audit_dir="${RECKON_TEST_AUDIT_DIR:-}"
agent_extra_args=()
if [ -n "$audit_dir" ]; then
  # A drift nobody's audit event explains is recorded unattributed after --audit-wait: the
  # webhook delivers within its 1 s batch wait here, so 5 s is ample and keeps the test short.
  agent_extra_args=(--audit-listen "$(cat "$audit_dir/listen")" --audit-tls-cert "$audit_dir/tls.crt"
    --audit-tls-key "$audit_dir/tls.key" --audit-token-file "$audit_dir/tokens" --audit-wait 5s)
elif [ "${RECKON_UI_NO_AUDIT:-}" != 1 ]; then
  echo "ui-test.sh: RECKON_TEST_AUDIT_DIR is not set: run under \`reckon-testenv run --audit\` (or set RECKON_UI_NO_AUDIT=1 to skip the person steps)" >&2
  exit 2
fi
# The agent, its repository (two commits by Ann; the browser test adds a third, by Bea, live)
# and its tokens: scripts/lib/agent-fixture.sh.
. scripts/lib/agent-fixture.sh
agent_fixture_start ui
shots="$CARGO_TARGET_DIR/tmp/ui-screens"
alice_kc=""
if [ -n "$audit_dir" ]; then
  # alice may edit ConfigMaps in the test's namespace; the browser test drifts one as her.
  "${kc[@]}" -n "$ns" create role drifter --verb=get,list,patch --resource=configmaps >/dev/null
  "${kc[@]}" -n "$ns" create rolebinding drifter --role=drifter --user=alice >/dev/null
  alice_kc="$audit_dir/alice.kubeconfig"
fi
echo "ui-test.sh: agent up at $base/ui/ (pid $agent_pid)" >&2

status=0
UI_BASE="$base" UI_READ_TOKEN="$read_token" UI_ADMIN_TOKEN="$admin_token" UI_GIT="$work/git" \
  UI_NS="$ns" UI_KUBECONFIG="$RECKON_TEST_KUBECONFIG" UI_SHOTS="$shots" UI_TARGET="$second" \
  UI_ALICE_KUBECONFIG="$alice_kc" UI_CHROMIUM="$chromium" timeout "${RECKON_UI_TIMEOUT:-300}" node ui/tests/browser.mjs || status=1
# The Integrity page reports the last `reckon store verify`, which needs the store to itself:
# stop the agent, verify what the whole browser test recorded, start it again, and look.
if [ "$status" -eq 0 ]; then
  agent_fixture_stop
  "$reckon" store verify --store "$work/agent/reckon-store" || status=1
  agent_fixture_launch
  until curl -fsS "$base/healthz" >/dev/null 2>&1; do
    kill -0 "$agent_pid" 2>/dev/null || { status=1; break; }
    sleep 0.2
  done
fi
if [ "$status" -eq 0 ]; then
  UI_PHASE=verified UI_BASE="$base" UI_READ_TOKEN="$read_token" UI_ADMIN_TOKEN="$admin_token" UI_GIT="$work/git" \
    UI_NS="$ns" UI_KUBECONFIG="$RECKON_TEST_KUBECONFIG" UI_SHOTS="$shots" UI_TARGET="$second" \
    UI_CHROMIUM="$chromium" timeout 120 node ui/tests/browser.mjs || status=1
fi
if [ "$status" -ne 0 ]; then
  echo "ui-test.sh: the browser test failed; the agent's log:" >&2
  tail -n 40 "$work/agent.log" >&2
fi
exit "$status"
