#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document, under a schema-driven fuzzer (schemathesis):
# a real agent (`reckon run --listen`) reconciling a real Git repository into the control plane
# of `reckon-testenv run` (RECKON_TEST_KUBECONFIG), fuzzed once with a read-only token and once
# with an admin token. The document is the one the agent serves (/api/v1/openapi.json), so what
# is checked is what clients get. Any finding fails the script.
#   reckon-testenv run -- scripts/api-contract.sh              # as scripts/test.sh runs it
#   RECKON_CONTRACT_EXAMPLES=200 RECKON_CONTRACT_SEED=7 ...    # more cases, other cases
# Bounded: RECKON_CONTRACT_EXAMPLES cases per operation and phase (default 40: about 900
# requests and 10 s per token), each run killed after RECKON_CONTRACT_TIMEOUT seconds (default
# 600). The live event stream is left out: it answers with an endless text/event-stream that a
# fuzzer would wait on for its whole life (tests/store/api_http.rs and the browser test cover it).
# schemathesis is pinned and installed into a venv in the cache directory, never into the
# clone. Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RECKON_TEST_KUBECONFIG:?run under reckon-testenv run (or set it to your cluster)}"
command -v kubectl >/dev/null || {
  echo "api-contract.sh: kubectl is needed (see docs/operations.md; scripts/provision-testenv.sh brings one with RECKON_K8S_VERSION)" >&2
  exit 2
}

# Pinned: a newer schemathesis brings new checks and generators, which would turn a green
# suite red without a change here.
version=4.32.5
cache="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}"
venv="$cache/venv-schemathesis"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "api-contract.sh: installing schemathesis $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

# The agent, its two-commit repository and its tokens: scripts/lib/agent-fixture.sh.
. scripts/lib/agent-fixture.sh
agent_fixture_start contract
echo "api-contract.sh: agent up at $base (pid $agent_pid), revisions ${first:0:10} ${second:0:10}" >&2

# Values that exist, so that some cases get past "no such App" to the handlers' real work
# (a bound parameter still gets generated values part of the time).
cat >"$work/schemathesis.toml" <<EOF
[dictionaries.apps]
values = ["web"]
[dictionaries.revisions]
values = ["$first", "$second", "${first:0:7}", "${second:0:4}"]
[dictionaries.objects]
values = ["ConfigMap/$ns/keep", "ConfigMap/$ns/a"]
[parameters]
"path.app" = { dictionary = "apps", probability = 0.7 }
"query.app" = { dictionary = "apps", probability = 0.5 }
"path.rev" = { dictionary = "revisions", probability = 0.7 }
"query.from" = { dictionary = "revisions", probability = 0.7 }
"query.to" = { dictionary = "revisions", probability = 0.7 }
"query.revision" = { dictionary = "revisions", probability = 0.5 }
"query.object" = { dictionary = "objects", probability = 0.7 }
"body.to" = { dictionary = "revisions", probability = 0.7 }
EOF

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth
status=0
for who in read admin; do
  token="$read_token"
  [ "$who" = admin ] && token="$admin_token"
  echo "api-contract.sh: schemathesis $version, $who token" >&2
  # From the work directory: hypothesis keeps nothing (no database), and nothing lands in the
  # clone. Stateful testing needs links the document does not declare. One worker: with two,
  # hypothesis 6.170's lambda descriptions race ("AST constructor recursion depth mismatch").
  (
    cd "$work"
    timeout "${RECKON_CONTRACT_TIMEOUT:-600}" "$venv/bin/st" --config-file "$work/schemathesis.toml" \
      run "$base/api/v1/openapi.json" \
      --url "$base" \
      -H "Authorization: Bearer $token" \
      --checks "$checks" \
      --exclude-path-regex 'events/stream$' \
      --phases examples,coverage,fuzzing \
      --max-examples "${RECKON_CONTRACT_EXAMPLES:-40}" \
      --generation-database none \
      --seed "${RECKON_CONTRACT_SEED:-23}" \
      --workers 1 \
      --no-color \
      | tee "$work/$who.out"
  ) || status=1
  # The run's count, for the suite's log: "N generated, N passed" or the findings.
  summary="$(grep -E '^ +[0-9]+ generated' "$work/$who.out" | sed 's/^ *//' || true)"
  echo "api-contract.sh: $who token: ${summary:-no summary (schemathesis failed early)}" >&2
done
# How far the admin run got past refusals: the App's events in the rollback category (the
# intents its rollbacks and resumes recorded; none before it ran).
intents="$(curl -fsS -H "Authorization: Bearer $read_token" \
  "$base/api/v1/events?app=web&kind=rollback&limit=1000" 2>/dev/null | grep -o '"seq":' | wc -l || true)"
echo "api-contract.sh: rollback-category events the admin run left: $intents" >&2
if ! kill -0 "$agent_pid" 2>/dev/null; then
  echo "api-contract.sh: the agent died during the run; its log:" >&2
  tail -n 40 "$work/agent.log" >&2
  status=1
fi
[ "$status" -eq 0 ] || echo "api-contract.sh: findings (see above)" >&2
exit "$status"
