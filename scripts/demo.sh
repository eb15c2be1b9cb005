#!/usr/bin/env bash
# reckon's main job, end to end, on a fresh machine (the README's first quick-start command).
# Starts the local Kubernetes control plane (built and cached on the first run), creates a demo
# Git repository with commits by several authors, and runs the agent (`reckon run`) against it:
# the first sync, a change, a removed file (pruned), manual drift (corrected), a deleted object
# (re-created), a force-push, a broken commit (nothing pruned) and an unreachable remote. Then it
# verifies the hash-chained log, prints what reckon recorded as a timeline, asks the history
# questions (revisions, drift history, blame), rolls back to a commit while the remote is gone,
# and resumes following Git. The agent serves the web UI (`--listen` on a free loopback port,
# with a read and an admin token): the demo prints its URL, and on a terminal keeps the agent up
# for it at the end until Enter (RECKON_DEMO_UI=0: do not wait).
# It is a smoke check too: every wait has a timeout, and the script exits non-zero when reckon
# does not do its job.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
  self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
  cd "$(dirname "$0")/.."
  bin_dir="$(bash scripts/provision-testenv.sh | tail -n 1)"
  # The Go-built control plane (RECKON_K8S_VERSION) brings kubectl and kustomize of its release:
  # first on PATH, so nothing depends on what the machine image ships.
  if [ -n "$bin_dir" ]; then export PATH="$bin_dir:$PATH"; fi
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"
  cargo build --quiet --bin reckon -p reckon
  cargo build --quiet --bin reckon-testenv -p reckon-testenv
  WORK="$(mktemp -d /tmp/reckon-demo-XXXXXX)"
  trap 'rm -rf "$WORK"' EXIT
  # The control plane runs for as long as this script's second half (below) does.
  status=0
  "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- \
    bash "$self" --inside "$CARGO_TARGET_DIR/debug/reckon" "$WORK" || status=$?
  exit "$status"
fi

# ---- inside the control plane: RECKON_TEST_KUBECONFIG is set ------------------------------
reckon="$2"; work="$3"; repo="$work/repo"
cd "$work"
export RUST_LOG="${RUST_LOG:-info}"
k() { kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG" -n demo "$@"; }
step() { echo; echo "== $*"; }

agent=""
agent_log="$work/agent.log"
fail() {
  echo "FAIL: $*" >&2
  if [ -s "$agent_log" ]; then
    echo "--- the agent's log (last 30 lines):" >&2
    tail -n 30 "$agent_log" >&2
  fi
  exit 1
}
# The agent serves the HTTP API and the web UI on a free loopback port, with a read and an admin
# token (files in $work, which the demo deletes at its end).
ui_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ui_url="http://127.0.0.1:$ui_port/ui/"
read_token="demo-read-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
admin_token="demo-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
echo "viewer $read_token" >"$work/read.tokens"
echo "demo-admin $admin_token" >"$work/admin.tokens"
chmod 600 "$work/read.tokens" "$work/admin.tokens"
start_agent() {
  NO_COLOR=1 "$reckon" run --listen "127.0.0.1:$ui_port" \
    --api-token-file "$work/read.tokens" --admin-token-file "$work/admin.tokens" >>"$agent_log" 2>&1 &
  agent=$!
  echo "agent started (pid $agent, interval 2s, log $agent_log); web UI: $ui_url"
}
# SIGTERM, then wait (bounded) for a clean exit: passes in flight finish, the store is flushed.
stop_agent() {
  local pid="$agent" deadline=$((SECONDS + 30)) rc=0
  [ -n "$pid" ] || return 0
  agent=""
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      fail "the agent did not stop within 30s of SIGTERM"
    fi
    sleep 0.1
  done
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || fail "the agent exited with status $rc after SIGTERM (expected 0)"
  echo "agent stopped (SIGTERM, exit 0)"
}
cleanup() {
  if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
    kill -TERM "$agent" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# wait_until SECONDS WHAT CMD...: polls CMD every 0.2s; fails with WHAT after SECONDS.
now() { date +%s.%N; }
wait_until() {
  local limit="$1" what="$2" t0 deadline
  shift 2
  t0=$(now); deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$agent" ] && ! kill -0 "$agent" 2>/dev/null; then fail "the agent died while waiting: $what"; fi
    ((SECONDS < deadline)) || fail "$what: not within ${limit}s"
    sleep 0.2
  done
  echo "  ok after $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s: $what"
}
greeting_is() { [ "$(k get configmap web -o 'jsonpath={.data.greeting}')" = "$1" ]; }
replicas_are() { [ "$(k get deployment web -o 'jsonpath={.spec.replicas}')" = "$1" ]; }
available_is() { [ "$(k get deployment web -o 'jsonpath={.status.availableReplicas}')" = "$1" ]; }
# Makes Deployment web's Pods Running and Ready. On a cluster whose nodes run Pods, that happens
# by itself; on one without (the Debian-built v1.20 control plane has no kubelet), the demo plays
# the kubelet of one Node: it binds the Pods to it and writes their status, as a kubelet would.
make_pods_ready() {
  local kc=(kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG") ready now pod
  ready=$("${kc[@]}" get nodes -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  if [ "$ready" -gt 0 ] && ! "${kc[@]}" get node reckon-demo-node >/dev/null 2>&1; then
    echo "  the cluster has $ready ready node(s): its kubelets start the Pod"
    return 0
  fi
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "  no node runs Pods here: playing the kubelet of Node reckon-demo-node"
  "${kc[@]}" get node reckon-demo-node >/dev/null 2>&1 \
    || printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"reckon-demo-node"}}' | "${kc[@]}" create -f - >/dev/null
  "${kc[@]}" patch node reckon-demo-node --subresource=status --type merge \
    -p "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"KubeletReady\",\"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
  wait_until 20 "a Pod of Deployment web exists" k get pods -l app=web -o name
  for pod in $(k get pods -l app=web -o 'jsonpath={.items[*].metadata.name}'); do
    printf '{"apiVersion":"v1","kind":"Binding","metadata":{"name":"%s"},"target":{"apiVersion":"v1","kind":"Node","name":"reckon-demo-node"}}' "$pod" \
      | "${kc[@]}" create --raw "/api/v1/namespaces/demo/pods/$pod/binding" -f - >/dev/null 2>&1 || true
    k patch pod "$pod" --subresource=status --type merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$now\",\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\"},{\"type\":\"Initialized\",\"status\":\"True\"},{\"type\":\"ContainersReady\",\"status\":\"True\"},{\"type\":\"Ready\",\"status\":\"True\"}],\"containerStatuses\":[{\"name\":\"web\",\"image\":\"nginx:1.25\",\"imageID\":\"\",\"ready\":true,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null
  done
}
absent() { local out; out=$(k get "$@" 2>&1) && return 1; grep -q NotFound <<<"$out"; }
logged() { grep -qF "$1" "$agent_log"; }
commit() { git -C "$repo" -c user.name="$1" -c user.email="$2" -c commit.gpgsign=false \
             commit -q --date="$3" -m "$4"; git -C "$repo" rev-parse --short=12 HEAD; }

step "reckon version, connected to the local control plane"
"$reckon" version --kubeconfig "$RECKON_TEST_KUBECONFIG"
kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG" create namespace demo

step "a demo Git repository: a ConfigMap, a Service, a Deployment with one replica"
git init -q -b main "$repo"
mkdir -p "$repo/apps/web"
cat > "$repo/apps/web/config.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {greeting: hello}
YAML
cat > "$repo/apps/web/service.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
YAML
cat > "$repo/apps/web/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    # The test cluster's simulated kubelets start this Pod 10 s late, like a slow image pull
    # (longer than the App's 5 s health timeout); a real kubelet ignores the annotation.
    metadata: {labels: {app: web}, annotations: {reckon.test/ready-after: 10s}}
    spec:
      containers: [{name: web, image: "nginx:1.25"}]
YAML
cat > "$repo/apps/web/legacy.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: legacy}
data: {mode: old}
YAML
git -C "$repo" add -A
echo "commit $(commit "Ada Lovelace" ada@example.com "2026-11-20T09:00:00+01:00" "Add web")"
cat > reckon.yaml <<YAML
apps:
  - name: web
    source:
      url: file://$repo
      path: apps/web
      interval: 2s
      signature: {mode: record}
    target:
      kubeconfig: $RECKON_TEST_KUBECONFIG
      namespace: demo
    health_timeout: 5s
YAML

step "reckon diff before the first sync (exit 1: there are changes)"
rc=0; "$reckon" diff web || rc=$?
[ "$rc" = 1 ] || fail "reckon diff exited $rc before the first sync (expected 1)"

step "the agent syncs the repository into the cluster"
start_agent
wait_until 60 "ConfigMaps web and legacy, Service web, Deployment web exist" \
  k get configmap/web configmap/legacy service/web deployment/web
k get configmaps,services,deployments -l reckon.dev/app=web

step "reckon diff after the sync (exit 0: nothing to change); the agent holds the store, so it stops meanwhile"
stop_agent
"$reckon" diff web || fail "reckon diff exited $? after the sync (expected 0)"

step "applied is not healthy: the Pod is not ready yet, and the revision is the applied one all the same"
"$reckon" status web
"$reckon" status web -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
s = s[0] if isinstance(s, list) else s
assert s["applied_revision"], s
' || fail "reckon status does not show the first commit as applied while its Pod is not ready"
start_agent

step "the Pod becomes Ready after the health timeout: reckon records the App healthy, without another sync"
make_pods_ready
wait_until 30 "Deployment web has 1 available replica" available_is 1

step "Grace changes a value in Git"
sed -i 's/greeting: hello/greeting: hello from Grace/' "$repo/apps/web/config.yaml"
git -C "$repo" add -A
grace=$(commit "Grace Hopper" grace@example.com "2026-11-21T14:30:00-05:00" "Greet properly")
echo "commit $grace"
wait_until 20 "ConfigMap web has greeting \"hello from Grace\"" greeting_is "hello from Grace"

step "Linus removes a file in Git: its object is pruned"
git -C "$repo" rm -q apps/web/legacy.yaml
echo "commit $(commit "Linus Torvalds" linus@example.com "2026-11-22T10:00:00+02:00" "Drop legacy settings")"
wait_until 20 "ConfigMap legacy is gone" absent configmap legacy

step "manual drift: kubectl scale deployment web --replicas=3 (Git says 1)"
k scale deployment web --replicas=3
wait_until 20 "Deployment web is back to replicas 1" replicas_are 1

step "manual drift: kubectl patch configmap web (a hand edit of the greeting)"
k patch configmap web --type merge -p '{"data": {"greeting": "edited by hand"}}'
wait_until 20 "ConfigMap web is back to greeting \"hello from Grace\"" greeting_is "hello from Grace"

step "kubectl delete service web: a managed object disappears"
k delete service web --wait=false
wait_until 20 "Service web is re-created" k get service web

step "a force-push rewrites the last commit"
git -C "$repo" reset -q --hard HEAD~1
git -C "$repo" rm -q apps/web/legacy.yaml
sed -i 's/greeting: hello from Grace/greeting: bonjour/' "$repo/apps/web/config.yaml"
git -C "$repo" add -A
echo "commit $(commit "Ada Lovelace" ada@example.com "2026-11-22T08:15:00+01:00" "Drop legacy settings, greet in French")"
wait_until 20 "ConfigMap web has greeting \"bonjour\"" greeting_is bonjour

step "a commit with broken YAML: nothing is applied, nothing is pruned"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: "half-finished\n' \
  > "$repo/apps/web/config.yaml"
git -C "$repo" add -A
broken=$(commit "Grace Hopper" grace@example.com "2026-11-23T16:45:00-05:00" "WIP")
echo "commit $broken"
wait_until 20 "the agent reports the render failure of $broken" logged "render failed"
sleep 3 # a few more polls of the broken head: it must stay harmless
k get configmaps,services,deployments -l reckon.dev/app=web
greeting_is bonjour || fail "ConfigMap web changed although the head does not render"
k get service/web deployment/web >/dev/null || fail "an object was removed although the head does not render"

step "the remote becomes unreachable (reckon keeps the last good revision)"
mv "$repo" "$repo.gone"
wait_until 20 "the agent reports the failed fetch" logged "fetch failed"
k get configmap/web service/web deployment/web >/dev/null || fail "objects changed while the remote was gone"

step "stop the agent"
stop_agent

step "the hash-chained log verifies"
"$reckon" store verify

step "what reckon recorded"
cat > timeline.py <<'PY'
import json, sys

def obj(o):
    ns = o.get("namespace")
    return "%s %s" % (o["kind"], "%s/%s" % (ns, o["name"]) if ns else o["name"])

def person(p):
    return "%s <%s>" % (p["name"], p["email"])

def short(v, n=60):
    v = str(v)
    return v if len(v) <= n else v[: n - 1] + "…"

seen, problems, by_object, broken, after_broken, health_healthy = {}, [], set(), set(), [], []
for line in sys.stdin:
    e = json.loads(line)
    if "kind" not in e:
        continue
    k, d = e["kind"], e["data"]
    seen[k] = seen.get(k, 0) + 1
    if "object" in d and d["object"]:
        by_object.add((k, obj(d["object"])))
    if k == "RenderFailed":
        broken.add(d["revision"])
    elif k in ("ObjectApplied", "ObjectPruned") and d["revision"] in broken:
        after_broken.append("%s #%d for a revision that did not render" % (k, e["seq"]))
    what = ""
    if k == "AgentStarted":
        what = "pid %s" % d["pid"]
    elif k == "CommitObserved":
        what = "%s %s %r" % (d["sha"][:10], person(d["author"]), d["message"].strip())
    elif k == "HistoryRewritten":
        what = "%s -> %s" % (d["old_head"][:10], d["new_head"][:10])
    elif k == "SourceFetchFailed":
        what = "%s: %s" % (d["reason"], short(d["error"]))
    elif k == "RenderSucceeded":
        what = "%s: %d object(s)" % (d["revision"][:10], d["object_count"])
    elif k == "RenderFailed":
        what = "%s: %s" % (d["revision"][:10], short(d["error"], 90))
    elif k == "SyncStarted":
        what = d["revision"][:10]
    elif k == "ObjectApplied":
        what = "%s %s" % (d["action"], obj(d["object"]))
        if d["changed_fields"]:
            what += " (%s)" % ", ".join(d["changed_fields"])
    elif k == "ApplyFailed":
        what = "%s: %s" % (obj(d["object"]), short(d["error"]))
        problems.append("ApplyFailed #%d" % e["seq"])
    elif k == "DriftDetected":
        diffs = ", ".join("%s: %s -> %s" % (x["path"], x.get("expected") or "(absent)",
                                             x.get("actual") or "(absent)") if x["path"]
                          else "deleted" for x in d["diffs"])
        mgrs = ", ".join("%s (%s)" % (m["manager"], m["operation"]) for m in d["managers"])
        what = "%s %s%s" % (obj(d["object"]), diffs or "(deleted)", "; by " + mgrs if mgrs else "")
    elif k == "DriftCorrected":
        what = "%s (%s)" % (obj(d["object"]), ", ".join(f or "re-created" for f in d["fields"]))
    elif k == "ObjectPruned":
        what = obj(d["object"])
    elif k == "PruneSkipped":
        what = "%s: %s" % (obj(d["object"]), d["reason"])
    elif k == "SyncFinished":
        c = d["counts"]
        what = "%s: %d created, %d configured, %d unchanged, %d pruned, %d prune skipped, %d failed (%d ms)" % (
            d["outcome"], c["created"], c["configured"], c["unchanged"], c["pruned"],
            c["prune_skipped"], c["failed"], d["duration_ms"])
        if d["outcome"] != "Succeeded":
            problems.append("SyncFinished #%d: %s" % (e["seq"], d["outcome"]))
    elif k == "HealthChanged":
        if not d.get("object") and d["to"] == "Healthy":
            health_healthy.append((k, d["from"] == "Progressing"))
        what = "%s: %s -> %s" % (obj(d["object"]) if d.get("object") else "the App", d["from"], d["to"])
        if d.get("message"):
            what += " (%s)" % short(d["message"])
    print("%4d %s  %-17s %-4s %s" % (e["seq"], e["time"][11:23], k, e["app"] or "-", what))

expected = ["AgentStarted", "CommitObserved", "RenderSucceeded", "SyncStarted", "ObjectApplied",
            "SyncFinished", "ObjectPruned", "DriftDetected", "DriftCorrected", "RenderFailed",
            "PruneSkipped", "HistoryRewritten", "SourceFetchFailed"]
problems += ["no %s event" % k for k in expected if k not in seen]
for k, o in [("ObjectPruned", "ConfigMap demo/legacy"), ("DriftCorrected", "Deployment demo/web"),
             ("DriftCorrected", "ConfigMap demo/web"), ("DriftCorrected", "Service demo/web")]:
    if (k, o) not in by_object:
        problems.append("no %s for %s" % (k, o))
if not any(k == "HealthChanged" and v for k, v in health_healthy):
    problems.append("no HealthChanged of the App to Healthy after its Pod became ready")
problems += after_broken
if problems:
    print("FAIL: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
"$reckon" store export | python3 timeline.py || fail "the recorded events are not what this demo expects"

step "the questions users come with: every revision, the App's recent drift, who set each field"
"$reckon" revisions web
"$reckon" revisions web -o json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
authors = {r.get("author_email") for r in rows}
assert {"grace@example.com", "linus@example.com", "ada@example.com"} <= authors, authors
' || fail "reckon revisions does not list the three authors' commits"
"$reckon" history web --kind drift
drifts=$("$reckon" history web --kind drift -o jsonl | grep -c DriftDetected || true)
[ "$drifts" -ge 3 ] || fail "reckon history --kind drift shows $drifts DriftDetected events (expected the 3 drifts)"
"$reckon" blame ConfigMap/demo/web
"$reckon" blame Deployment.apps/demo/web --field /spec/replicas

step "roll back to Grace's $grace: Linus's prune is undone, although the remote is gone and the next commit was force-pushed away"
"$reckon" rollback web --to "$grace" --actor demo --reason "the French greeting confused users"
greeting_is "hello from Grace" || fail "the rollback did not restore Grace's greeting"
k get configmap legacy >/dev/null || fail "the rollback did not re-create ConfigMap legacy (present at $grace)"
"$reckon" status web
"$reckon" status web -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
s = s[0] if isinstance(s, list) else s
assert s["pinned"], s
' || fail "reckon status does not show web as pinned"

step "the remote is back with a fixed commit; resume: follow Git again"
mv "$repo.gone" "$repo"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: bonjour}\n' \
  > "$repo/apps/web/config.yaml"
git -C "$repo" add -A
echo "commit $(commit "Ada Lovelace" ada@example.com "2026-11-24T09:00:00+01:00" "Fix the YAML")"
"$reckon" resume web --actor demo --reason "the YAML is fixed"
greeting_is bonjour || fail "resume did not return to the followed head's greeting"
absent configmap legacy || fail "resume did not prune ConfigMap legacy again"
"$reckon" history web --kind rollback
"$reckon" store verify
echo
echo "The web UI: $ui_url  (sign in with the read token $read_token,"
echo "  or the admin token $admin_token for rollback and resume)"
# On a terminal the agent stays up for the UI until Enter (RECKON_DEMO_UI=0: do not wait); in CI
# (no terminal) the demo ends here.
if [ -t 0 ] && [ "${RECKON_DEMO_UI:-1}" != 0 ]; then
  start_agent
  wait_until 30 "the web UI answers" curl -fsS "$ui_url"
  read -r -p "The agent serves the UI at $ui_url until you press Enter. " _ || true
  stop_agent
fi
echo; echo "demo OK: reckon synced, pruned, corrected drift, re-created, kept the cluster through a broken commit and an unreachable remote, answered who changed what, and rolled back to a commit the remote no longer has"
