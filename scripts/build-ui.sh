#!/usr/bin/env bash
# Builds the web UI (ui/, TypeScript + Preact, bundled by esbuild) into ui/dist/, which is
# committed and compiled into the agent (src/ui.rs), so cargo builds without node.
#   scripts/build-ui.sh           # rebuild ui/dist/ after changing ui/src/
#   scripts/build-ui.sh --check   # build afresh elsewhere and fail unless ui/dist/ is that build
# (scripts/test.sh runs --check: the committed assets are what the sources and lockfile give.)
# Packages come exactly from ui/package-lock.json (npm ci) into ui/node_modules (git-ignored);
# npm's download cache lives under ${RECKON_CACHE_DIR:-~/.cache/reckon}, outside the clone.
set -euo pipefail
cd "$(dirname "$0")/../ui"
command -v node >/dev/null || { echo "build-ui.sh: node (20 or newer) and npm are needed" >&2; exit 2; }
export npm_config_cache="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}/npm"
# npm ci empties node_modules first: only when the lockfile changed since the last install.
stamp=node_modules/.reckon-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
node_modules/.bin/tsc --noEmit -p .
# The pure parts of the UI, unit-tested without a browser.
node --test --test-reporter=dot tests/drift.test.mjs
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  node build.mjs "$out"
  if ! diff -r "$out" dist >/dev/null; then
    echo "build-ui.sh: ui/dist/ is not what ui/src/ builds to; run scripts/build-ui.sh and commit ui/dist/" >&2
    diff -r "$out" dist | head -n 20 >&2 || true
    exit 1
  fi
  echo "build-ui.sh: ui/dist/ matches a fresh build" >&2
else
  rm -rf dist
  node build.mjs dist
fi
