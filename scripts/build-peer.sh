#!/usr/bin/env bash
# Builds the agent benchmark's peer, Flux's apply engine driven as kustomize-controller drives it
# (tests/peer/flux-ssa: our harness on github.com/fluxcd/pkg/ssa, pinned in its go.mod), into
# $RECKON_CACHE_DIR/peer/bin, and prints the binary's path on its last line of stdout (everything
# else goes to stderr). Modules and the compile cache live under the cache directory, never in the
# clone; the binary carries a stamp of the go.mod/go.sum/main.go it came from, so a warm run
# builds nothing and a changed pin rebuilds. The cold build's time is printed and kept in
# $RECKON_CACHE_DIR/peer/bin/build-times.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/tests/peer/flux-ssa"
CACHE="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}"
BIN="$CACHE/peer/bin"
log() { echo "build-peer: $*" >&2; }

command -v go >/dev/null || { log "go not found: install Go 1.26 or newer"; exit 1; }
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS="-modcacherw -mod=readonly"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" CGO_ENABLED=0
mkdir -p "$BIN"

name=flux-ssa
stamp="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-16)"
if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$BIN/$name"
  exit 0
fi
log "building $name (github.com/fluxcd/pkg/ssa $(awk '$1 == "github.com/fluxcd/pkg/ssa" {print $2}' "$SRC/go.mod"))"
start=$(date +%s)
# -p 2: two cores, shared. Build beside, then rename: a benchmark may be running the old binary.
(cd "$SRC" && go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/.$name.new" .) >&2
mv -f "$BIN/.$name.new" "$BIN/$name"
echo "$stamp" > "$BIN/.$name.stamp"
took=$(( $(date +%s) - start ))
echo "$name ${took}s $(date -u +%FT%TZ)" >> "$BIN/build-times.txt"
log "built $name in ${took}s"
echo "$BIN/$name"
