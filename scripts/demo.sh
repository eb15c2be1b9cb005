#!/usr/bin/env bash
# reckon's main job, end to end, on a fresh machine (the README's first quick-start command).
# Today: provisions and starts the local Kubernetes control plane (cached after the first run),
# has reckon report its own and the cluster's version, then creates a demo Git repository with
# real commits by two authors, lets reckon observe it (including a force-push and an unreachable
# remote), verifies the hash-chained log and shows the events it recorded. It grows with the
# product: the reconciler will sync the demo repository into the cluster here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-testenv.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/target}"
cargo build --quiet --bin reckon -p reckon
cargo build --quiet --bin reckon-testenv -p reckon-testenv
RECKON="$CARGO_TARGET_DIR/debug/reckon"
WORK="$(mktemp -d /tmp/reckon-demo-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
exec "$CARGO_TARGET_DIR/debug/reckon-testenv" run -- bash -c '
  set -euo pipefail
  reckon="$1"; work="$2"
  echo "== reckon version, connected to the local control plane"
  "$reckon" version --kubeconfig "$RECKON_TEST_KUBECONFIG"

  echo; echo "== a demo Git repository with real commits"
  git init -q -b main "$work/repo"
  commit() { git -C "$work/repo" -c user.name="$1" -c user.email="$2" -c commit.gpgsign=false \
               commit -q --date="$3" -m "$4"; }
  mkdir -p "$work/repo/apps/web"
  printf "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {replicas: \"1\"}\n" \
    > "$work/repo/apps/web/config.yaml"
  git -C "$work/repo" add -A; commit "Ada Lovelace" ada@example.com "2026-11-20T09:00:00+01:00" "Add web"
  cat > "$work/reckon.yaml" <<YAML
apps:
  - name: web
    source:
      url: file://$work/repo
      path: apps/web
      signature: {mode: record}
YAML
  cd "$work"
  "$reckon" fetch
  sed -i "s/\"1\"/\"3\"/" repo/apps/web/config.yaml
  git -C repo add -A; commit "Grace Hopper" grace@example.com "2026-11-21T14:30:00-05:00" "Scale web to 3"
  git -C repo commit -q --allow-empty -m "Docs only" --author "Linus <linus@example.com>"
  "$reckon" fetch
  echo; echo "== a force-push rewrites history"
  git -C repo reset -q --hard HEAD~2
  sed -i "s/\"1\"/\"2\"/" repo/apps/web/config.yaml
  git -C repo add -A; commit "Ada Lovelace" ada@example.com "2026-11-22T08:15:00+01:00" "Scale web to 2 instead"
  "$reckon" fetch
  echo; echo "== the remote becomes unreachable (reckon keeps the last good revision)"
  mv repo repo.gone
  "$reckon" fetch || true
  echo; echo "== the hash-chained log verifies"
  "$reckon" store verify
  echo; echo "== what reckon recorded (kind, app, who, when, what)"
  "$reckon" store export | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if \"kind\" not in e: continue
    d = e[\"data\"]
    if e[\"kind\"] == \"CommitObserved\":
        what = \"%s %s <%s> %r\" % (d[\"sha\"][:10], d[\"author\"][\"name\"], d[\"author\"][\"email\"], d[\"message\"].strip())
    elif e[\"kind\"] == \"HistoryRewritten\":
        what = \"%s -> %s\" % (d[\"old_head\"][:10], d[\"new_head\"][:10])
    elif e[\"kind\"] == \"SourceFetchFailed\":
        what = \"%s: %s\" % (d[\"reason\"], d[\"error\"][:70])
    else:
        what = \"\"
    print(\"%4d  %-18s %-4s %s\" % (e[\"seq\"], e[\"kind\"], e[\"app\"] or \"-\", what))
"
' demo "$RECKON" "$WORK"
