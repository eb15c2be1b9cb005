#!/usr/bin/env bash
# reckon with a Helm chart from a chart repository, end to end (the README's second demo).
# Starts the local Kubernetes control plane (built and cached on the first run), makes chart `web`
# with the real `helm package` and `helm repo index`, serves it from a chart repository on
# loopback (a static HTTP server over the directory), and runs the agent (`reckon run`) with an
# App following `web` in the range >=1.0.0, <2: the first version is deployed (its Deployment's
# two Pods become Ready), an unchanged repository costs one conditional request per poll, a value
# changed in reckon.yaml renders the same chart revision again, a new chart version upgrades the
# App, `reckon revisions` and `reckon blame` answer with the chart versions, the repository goes
# away (the App keeps its revision) and a rollback to the first version by a prefix of its digest
# applies the recorded set without it. Then the hash-chained log verifies. The agent serves the web
# UI (`--listen` on a free loopback port, with a read and an admin token): the demo asks its
# questions and the rollback through it, prints its URL, and on a terminal keeps the agent up for
# it at the end until Enter (RECKON_DEMO_UI=0: do not wait).
# It is a smoke check too: every wait has a timeout, and the script exits non-zero when reckon
# does not do its job.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
  self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
  cd "$(dirname "$0")/.."
  bin_dir="$(bash scripts/provision-testenv.sh | tail -n 1)"
  # The Go-built control plane (RECKON_K8S_VERSION) brings kubectl and helm of its release: first
  # on PATH, so the agent renders with the pinned helm and nothing depends on the machine image.
  if [ -n "$bin_dir" ]; then export PATH="$bin_dir:$PATH"; fi
  command -v helm >/dev/null \
    || { echo "demo-helm: helm is not on PATH (scripts/provision-testenv.sh builds it, tests/testenv/k8s/helm)" >&2; exit 1; }
  command -v python3 >/dev/null \
    || { echo "demo-helm: python3 is needed to serve the chart repository (apt-get install python3)" >&2; exit 1; }
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"
  cargo build --quiet --bin reckon -p reckon
  cargo build --quiet --bin reckon-testenv -p reckon-testenv
  WORK="$(mktemp -d /tmp/reckon-demo-helm-XXXXXX)"
  trap 'rm -rf "$WORK"' EXIT
  # The control plane runs for as long as this script's second half (below) does.
  status=0
  "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- \
    bash "$self" --inside "$CARGO_TARGET_DIR/debug/reckon" "$WORK" || status=$?
  exit "$status"
fi

# ---- inside the control plane: RECKON_TEST_KUBECONFIG is set ------------------------------
reckon="$2"; work="$3"
cd "$work"
export RUST_LOG="${RUST_LOG:-info}"
k() { kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG" -n demo "$@"; }
step() { echo; echo "== $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

agent=""
repo_server=""
agent_log="$work/agent.log"
repo_log="$work/chart-repo.log"
fail() {
  echo "FAIL: $*" >&2
  if [ -s "$agent_log" ]; then
    echo "--- the agent's log (last 30 lines):" >&2
    tail -n 30 "$agent_log" >&2
  fi
  exit 1
}
# The agent serves the HTTP API and the web UI on a free loopback port, with a read and an admin
# token (files in $work, which the demo deletes at its end). The demo's questions and its rollback
# go through that API while the agent runs (`--server`): the agent holds the store.
ui_port="$(free_port)"
server="http://127.0.0.1:$ui_port"
ui_url="$server/ui/"
read_token="demo-read-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
admin_token="demo-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
echo "viewer $read_token" >"$work/read.tokens"
echo "demo-admin $admin_token" >"$work/admin.tokens"
chmod 600 "$work/read.tokens" "$work/admin.tokens"
ask() { "$reckon" "$@" --server "$server" --token "$read_token"; }
start_agent() {
  NO_COLOR=1 "$reckon" run --listen "127.0.0.1:$ui_port" \
    --api-token-file "$work/read.tokens" --admin-token-file "$work/admin.tokens" >>"$agent_log" 2>&1 &
  agent=$!
  echo "agent started (pid $agent, interval 2s, log $agent_log); web UI: $ui_url"
  wait_until 30 "the agent's API answers" curl -fsS -H "Authorization: Bearer $read_token" "$server/api/v1/apps"
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
stop_repo() {
  local pid="$repo_server"
  [ -n "$pid" ] || return 0
  repo_server=""
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
    kill -TERM "$agent" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent" 2>/dev/null || true
  fi
  stop_repo
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
cm_is() { [ "$(k get configmap web -o "jsonpath={.data.$1}")" = "$2" ]; }
chart_is() { [ "$(k get configmap web -o 'jsonpath={.metadata.annotations.reckon\.dev/helm-chart}')" = "$1" ]; }
values_digest() { k get configmap web -o 'jsonpath={.metadata.annotations.reckon\.dev/helm-values-digest}'; }
image_is() { [ "$(k get deployment web -o 'jsonpath={.spec.template.spec.containers[0].image}')" = "$1" ]; }
replicas_are() { [ "$(k get deployment web -o 'jsonpath={.spec.replicas}')" = "$1" ]; }
# Ready for the rollout that is current: every replica updated and available. Where the demo plays
# the kubelet (below), each check first starts the Pods the rollout created since the last one.
rolled_out() {
  local want="$1" s
  [ -z "$play_kubelet" ] || kubelet_pass
  s=$(k get deployment web -o 'jsonpath={.spec.replicas} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}')
  [ "$s" = "$want $want $want $want" ]
}
applied_revision_is() {
  [ "$(ask status web -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
s = s[0] if isinstance(s, list) else s
print(s.get("applied_revision") or "")
')" = "$1" ]
}
# Deployment web's Pods must become Running and Ready. On a cluster whose nodes run Pods (the
# simulated nodes of the Go-built control plane), that happens by itself; on one without (the
# Debian-built v1.20 control plane has no kubelet), the demo plays the kubelet of one Node: it binds
# each new Pod to it and writes its status, as a kubelet would, at every check of a rollout.
play_kubelet=""
kc() { kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG" "$@"; }
nodes_or_play_kubelet() {
  local ready now
  ready=$(kc get nodes -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  if [ "$ready" -gt 0 ]; then
    echo "the cluster has $ready ready node(s): its kubelets start the Pods"
  else
    echo "no node runs Pods here: the demo plays the kubelet of Node reckon-demo-node"
    play_kubelet=1
    printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"reckon-demo-node"}}' | kc create -f - >/dev/null
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    kc patch node reckon-demo-node --subresource=status --type merge \
      -p "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"KubeletReady\",\"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
  fi
}
kubelet_pass() {
  local now pod
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pod in $(k get pods -l app=web -o 'jsonpath={range .items[?(@.status.phase=="Pending")]}{.metadata.name}{" "}{end}'); do
    printf '{"apiVersion":"v1","kind":"Binding","metadata":{"name":"%s"},"target":{"apiVersion":"v1","kind":"Node","name":"reckon-demo-node"}}' "$pod" \
      | kc create --raw "/api/v1/namespaces/demo/pods/$pod/binding" -f - >/dev/null 2>&1 || true
    k patch pod "$pod" --subresource=status --type merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$now\",\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"True\"},{\"type\":\"Initialized\",\"status\":\"True\"},{\"type\":\"ContainersReady\",\"status\":\"True\"},{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}],\"containerStatuses\":[{\"name\":\"web\",\"image\":\"nginx\",\"imageID\":\"\",\"ready\":true,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null 2>&1 || true
  done
}
# logged_after LINES TEXT: the agent logged TEXT after its log's first LINES lines.
logged_after() { tail -n "+$(($1 + 1))" "$agent_log" | grep -qF "$2"; }
repo_answered() { grep -qF "\"GET /$1 HTTP/1.1\" $2" "$repo_log"; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---- the chart ----------------------------------------------------------------------------
src="$work/chart-src"      # chart sources, one directory per version
stage="$work/chart-stage"  # where helm packages and indexes
charts="$work/charts"      # what the repository serves
mkdir -p "$src" "$stage" "$charts"
# make_chart VERSION APP_VERSION THEME: chart `web` at VERSION; its default theme THEME.
make_chart() {
  local dir="$src/web-$1"
  mkdir -p "$dir/templates"
  cat >"$dir/Chart.yaml" <<YAML
apiVersion: v2
name: web
description: the reckon Helm demo's web application
version: $1
appVersion: "$2"
YAML
  cat >"$dir/values.yaml" <<YAML
replicas: 2
greeting: hello
theme: $3
YAML
  cat >"$dir/templates/configmap.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
  theme: {{ .Values.theme | quote }}
  chart: {{ .Chart.Version | quote }}
YAML
  cat >"$dir/templates/service.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector:
    app: {{ .Release.Name }}
  ports:
    - port: 80
      targetPort: 8080
YAML
  cat >"$dir/templates/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: web
          image: "nginx:{{ .Chart.AppVersion }}"
YAML
}
# publish VERSION: packages chart VERSION with the real helm, indexes every archive, and puts the
# archive, then the index (an atomic rename), where the repository serves them: a poll never
# reads a half-written index or an index naming an archive not there yet.
publish() {
  helm package --destination "$stage" "$src/web-$1" >/dev/null
  helm repo index "$stage"
  cp "$stage/web-$1.tgz" "$charts/"
  cp "$stage/index.yaml" "$charts/.index.yaml.new"
  mv "$charts/.index.yaml.new" "$charts/index.yaml"
  sha256 "$charts/web-$1.tgz"
}

step "reckon version, connected to the local control plane; helm for packaging and rendering"
"$reckon" version --kubeconfig "$RECKON_TEST_KUBECONFIG"
echo "helm $(helm version --short)"
kubectl --kubeconfig "$RECKON_TEST_KUBECONFIG" create namespace demo
nodes_or_play_kubelet

step "a chart repository on loopback, serving chart web 1.0.0 (a ConfigMap from values, a Service, a Deployment with 2 replicas)"
make_chart 1.0.0 1.25 light
r1=$(publish 1.0.0)
repo_port="$(free_port)"
repo_url="http://127.0.0.1:$repo_port"
# A static HTTP server over the directory, as charts are served from object stores and pages: it
# answers If-Modified-Since with 304, so an unchanged index costs one empty answer.
python3 -m http.server "$repo_port" --bind 127.0.0.1 --directory "$charts" >"$repo_log" 2>&1 &
repo_server=$!
wait_until 20 "the chart repository serves index.yaml" curl -fsS "$repo_url/index.yaml"
echo "repository $repo_url (server pid $repo_server); web 1.0.0 is revision $r1 (the archive's SHA-256)"
curl -fsS "$repo_url/index.yaml" | grep -E '^\s+(version|digest|appVersion):' | sed 's/^/  index.yaml: /'
cat >reckon.yaml <<YAML
apps:
  - name: web
    source:
      url: $repo_url
      chart: {name: web, version: ">=1.0.0, <2"}
      interval: 2s
    target:
      kubeconfig: $RECKON_TEST_KUBECONFIG
      namespace: demo
    health_timeout: 30s
YAML
cat reckon.yaml

step "the agent observes web 1.0.0, renders it with helm and applies it"
start_agent
wait_until 60 "ConfigMap web, Service web, Deployment web exist" \
  k get configmap/web service/web deployment/web
k get configmaps,services,deployments -l reckon.dev/app=web
chart_is web-1.0.0 || fail "ConfigMap web is not annotated as rendered from chart web-1.0.0"
cm_is greeting hello || fail "ConfigMap web's greeting is not the chart's default \"hello\""
cm_is theme light || fail "ConfigMap web's theme is not chart 1.0.0's default \"light\""
image_is nginx:1.25 || fail "Deployment web's image is not nginx:1.25 (chart 1.0.0's appVersion)"
wait_until 60 "Deployment web has 2 replicas ready" rolled_out 2
wait_until 20 "reckon's status names web 1.0.0's revision as applied" applied_revision_is "$r1"

step "an unchanged repository: a poll is one conditional request answered 304, and observes nothing new"
wait_until 20 "the repository answered a poll of index.yaml with 304 Not Modified" repo_answered index.yaml 304
grep -c '"GET /index.yaml HTTP/1.1" 304' "$repo_log" | sed 's/^/  index.yaml answered 304 so far: /'
observed=$(ask history web --kind commit -o jsonl | grep -c '"ChartObserved"' || true)
[ "$observed" = 1 ] || fail "reckon history --kind commit shows $observed ChartObserved events (expected 1: web 1.0.0)"

step "a value changes in reckon.yaml (helm.values: greeting, replicas): the same chart revision renders again"
# The agent reads reckon.yaml when it starts: stop it, change the file, start it again.
stop_agent
before_digest=$(values_digest)
cat >>reckon.yaml <<'YAML'
    helm:
      values: {greeting: "hello from reckon.yaml", replicas: 3}
YAML
sed -n '/helm:/,$p' reckon.yaml
echo "-- reckon diff web (exit 1: there are changes)"
rc=0; "$reckon" diff web || rc=$?
[ "$rc" = 1 ] || fail "reckon diff exited $rc after the values change (expected 1)"
start_agent
wait_until 30 "ConfigMap web has greeting \"hello from reckon.yaml\"" cm_is greeting "hello from reckon.yaml"
wait_until 20 "Deployment web has replicas 3" replicas_are 3
wait_until 60 "Deployment web has 3 replicas ready" rolled_out 3
chart_is web-1.0.0 || fail "the values change moved the chart off web-1.0.0"
[ "$(values_digest)" != "$before_digest" ] || fail "the values digest on ConfigMap web did not change with the values"
echo "  values digest $before_digest -> $(values_digest)"
applied_revision_is "$r1" || fail "the values change moved the App off web 1.0.0's revision"

step "chart web 1.1.0 is published (appVersion 1.27, default theme dark): the agent upgrades"
make_chart 1.1.0 1.27 dark
r2=$(publish 1.1.0)
echo "web 1.1.0 is revision $r2"
wait_until 30 "ConfigMap web has theme \"dark\" from chart 1.1.0" cm_is theme dark
wait_until 20 "Deployment web runs nginx:1.27" image_is nginx:1.27
chart_is web-1.1.0 || fail "ConfigMap web is not annotated as rendered from chart web-1.1.0"
cm_is chart 1.1.0 || fail "ConfigMap web's chart key is not 1.1.0"
cm_is greeting "hello from reckon.yaml" || fail "the upgrade lost the value set in reckon.yaml"
wait_until 60 "Deployment web's 3 replicas are rolled out on nginx:1.27" rolled_out 3
wait_until 20 "reckon's status names web 1.1.0's revision as applied" applied_revision_is "$r2"

step "the questions, asked of the running agent: every chart revision, and who set each field"
ask revisions web
ask revisions web -o json | R1="$r1" R2="$r2" python3 -c '
import json, os, sys
rows = json.load(sys.stdin)
got = [(r["sha"], (r.get("chart") or {}).get("version")) for r in rows]
want = [(os.environ["R2"], "1.1.0"), (os.environ["R1"], "1.0.0")]
assert got == want, got
assert all(r.get("applied_at") for r in rows), rows
' || fail "reckon revisions does not list web 1.1.0 and 1.0.0, both applied, by their digests"
echo "-- reckon history web --kind commit"
ask history web --kind commit
echo "-- reckon diff web --from 1.0.0 --to 1.1.0 (exit 1: the revisions differ)"
rc=0; ask diff web --from "${r1:0:12}" --to "${r2:0:12}" || rc=$?
[ "$rc" = 1 ] || fail "reckon diff --from web 1.0.0 --to 1.1.0 exited $rc (expected 1)"
echo "-- reckon blame ConfigMap/demo/web"
ask blame ConfigMap/demo/web
echo "-- reckon blame Deployment.apps/demo/web --field /spec/template/spec/containers/0/image"
ask blame Deployment.apps/demo/web --field /spec/template/spec/containers/0/image
blamed_on() {
  ask blame "$1" --field "$2" -o json | R2="$r2" python3 -c '
import json, os, sys
b = json.load(sys.stdin)
f = [f for f in b["fields"] if f["path"] == sys.argv[1]]
assert f, b
s = f[0]["set_by"]
assert s["revision"] == os.environ["R2"], s
assert (s["chart"]["name"], s["chart"]["version"]) == ("web", "1.1.0"), s
assert s["chart"]["digest"] == "sha256:" + os.environ["R2"], s
' "$2"
}
blamed_on ConfigMap/demo/web /data/theme \
  || fail "reckon blame does not credit /data/theme of ConfigMap web to the ChartObserved of web 1.1.0"
blamed_on Deployment.apps/demo/web /spec/template/spec/containers/0/image \
  || fail "reckon blame does not credit the Deployment's image to the ChartObserved of web 1.1.0"
# The greeting came from reckon.yaml's values: blame credits it to the inline values — the
# later apply of web 1.0.0's revision that the values change made, not the apply that created
# the ConfigMap, and not 1.0.0's ChartObserved.
echo "-- reckon blame ConfigMap/demo/web --field /data/greeting (set by the values in reckon.yaml)"
ask blame ConfigMap/demo/web --field /data/greeting
ask blame ConfigMap/demo/web -o json | R1="$r1" python3 -c '
import json, os, sys
f = {f["path"]: f["set_by"] for f in json.load(sys.stdin)["fields"]}
g, created = f["/data/greeting"], f["/metadata/name"]
assert g["revision"] == os.environ["R1"] == created["revision"], (g, created)
assert g["applied_seq"] > created["applied_seq"], (g, created)
# reckon.yaml had no values before: the layer is added.
assert g["summary"] == "values: inline values added", g
layers = g["values"]["layers"]
assert g["values"]["with_revision"] is False, g
assert [(l["source"], l["change"], l["from"]) for l in layers] == [("inline values", "added", None)], g
assert layers[0]["to"].startswith("hmac-sha256:"), g
assert g["author_email"] is None and g["chart"] is None, g
' || fail "reckon blame does not credit /data/greeting to the inline values of reckon.yaml"

step "the chart repository goes away: the App keeps web 1.1.0"
mark=$(wc -l <"$agent_log")
stop_repo
wait_until 30 "the agent reports the failed fetch" logged_after "$mark" "fetch failed"
k get configmap/web service/web deployment/web >/dev/null || fail "objects changed while the repository was gone"
cm_is theme dark || fail "ConfigMap web changed while the repository was gone"
applied_revision_is "$r2" || fail "the App left web 1.1.0's revision while the repository was gone"

step "roll back to web 1.0.0 by a prefix of its digest, through the agent, the repository still gone"
"$reckon" rollback web --to "${r1:0:12}" --reason "1.1.0's dark theme breaks checkout" \
  --server "$server" --token "$admin_token"
wait_until 30 "ConfigMap web has theme \"light\" again" cm_is theme light
wait_until 20 "Deployment web runs nginx:1.25 again" image_is nginx:1.25
chart_is web-1.0.0 || fail "the rollback did not restore the objects of chart web-1.0.0"
cm_is greeting "hello from reckon.yaml" \
  || fail "the rollback did not apply web 1.0.0's latest recorded render (with the values of reckon.yaml)"
wait_until 60 "Deployment web's 3 replicas are rolled out on nginx:1.25" rolled_out 3
wait_until 20 "reckon's status names web 1.0.0's revision as applied" applied_revision_is "$r1"
ask status web
ask status web -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
s = s[0] if isinstance(s, list) else s
assert s["pinned"], s
' || fail "reckon status does not show web as pinned"
ask history web --kind rollback

step "stop the agent and the hash-chained log verifies"
stop_agent
"$reckon" store verify
"$reckon" store export | R1="$r1" R2="$r2" python3 -c '
import json, os, sys
r1, r2 = os.environ["R1"], os.environ["R2"]
observed, renders, problems, kinds, fetch_failed = [], {}, [], set(), []
for line in sys.stdin:
    e = json.loads(line)
    if "kind" not in e or e.get("app") != "web":
        continue
    k, d = e["kind"], e["data"]
    kinds.add(k)
    if k == "ChartObserved":
        observed.append((d["version"], d["revision"], d["verified"]))
    elif k == "RenderSucceeded":
        renders[d["revision"]] = renders.get(d["revision"], 0) + 1
    elif k == "SourceFetchFailed":
        fetch_failed.append(d["reason"])
    elif k == "SyncFinished" and d["outcome"] != "Succeeded":
        problems.append("SyncFinished #%d: %s" % (e["seq"], d["outcome"]))
print("  ChartObserved: %s" % ", ".join("%s %s" % (v, r[:12]) for v, r, _ in observed))
print("  RenderSucceeded per revision: %s" % ", ".join("%s x%d" % (r[:12], n) for r, n in renders.items()))
if observed != [("1.0.0", r1, True), ("1.1.0", r2, True)]:
    problems.append("ChartObserved events %r (expected web 1.0.0 then 1.1.0, both verified)" % observed)
# Two renders of 1.0.0 (its defaults, then the values change) and none for the rollback, which
# applies the recorded set.
if renders.get(r1, 0) != 2:
    problems.append("web 1.0.0 rendered %d time(s) (expected 2: its defaults, then the values change)" % renders.get(r1, 0))
if renders.get(r2, 0) != 1:
    problems.append("web 1.1.0 rendered %d time(s) (expected 1)" % renders.get(r2, 0))
print("  SourceFetchFailed: %s" % ", ".join(fetch_failed))
if fetch_failed != ["Unreachable"]:
    problems.append("SourceFetchFailed reasons %r (expected one Unreachable while the repository was gone)" % fetch_failed)
if "IntentRecorded" not in kinds:
    problems.append("no IntentRecorded event for the rollback")
if problems:
    print("FAIL: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
' || fail "the recorded events are not what this demo expects"

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
echo; echo "demo OK: reckon deployed chart web 1.0.0 from a chart repository, re-rendered it for a values change, upgraded to 1.1.0, blamed its fields on that version, kept it while the repository was gone, and rolled back to 1.0.0 from the record"
