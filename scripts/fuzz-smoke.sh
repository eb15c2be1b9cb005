#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/fuzz_targets/), as CI runs it: each target starts from
# its committed corpus (fuzz/corpus/<target>/, read only) and runs for FUZZ_SECONDS (10) seconds.
# A crash (a panic, an overflow caught by debug assertions, an allocation that fails) fails the
# run; its input is left in $ARTIFACTS for a regression test.
#
# The smoke build is unoptimised and without a sanitizer (--dev -s none): after a change to
# reckon it rebuilds in seconds where the optimised address-sanitizer build took minutes (measured:
# 15 s against 340 s), and reckon forbids unsafe code, so the sanitizer has little to find in it.
# Longer searches use the default build: `cargo +nightly fuzz run <target> fuzz/corpus/<target>`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-10}"
CACHE="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}"
# The instrumented build of reckon is a build of its own: kept apart from the test build.
export CARGO_TARGET_DIR="$CACHE/target-fuzz"
# Each CI run builds a fresh clone at a new path, so incremental state is never reused: it only
# grew the cache (3.9 GB after a few runs).
export CARGO_INCREMENTAL=0
log() { echo "fuzz-smoke: $*" >&2; }

# cargo-fuzz: pinned, from crates.io, once per machine.
FUZZ_VERSION="0.13.2"
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $FUZZ_VERSION from crates.io (a few minutes, once)"
  cargo install --quiet --locked "cargo-fuzz@$FUZZ_VERSION" >&2
fi
# libFuzzer's instrumentation needs unstable compiler flags: the nightly toolchain when the
# machine has one, otherwise the stable compiler told to accept them (RUSTC_BOOTSTRAP).
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  log "no nightly toolchain: building with the stable compiler and RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
fi

ARTIFACTS="${ARTIFACTS:-$(mktemp -d)}"
t0=$(date +%s)
stamp="$(mktemp)"  # older than everything this build writes (scripts/lib/prune-target.sh)
FLAGS=(--fuzz-dir fuzz --dev --sanitizer none)
cargo "${toolchain[@]}" fuzz build "${FLAGS[@]}" >&2
log "built in $(( $(date +%s) - t0 ))s"
(cd fuzz && bash ../scripts/lib/prune-target.sh "$CARGO_TARGET_DIR" "$stamp" Cargo.toml)
rm -f "$stamp"
status=0
for target in $(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz); do
  work="$(mktemp -d)"
  out="$work/log"
  if cargo "${toolchain[@]}" fuzz run "${FLAGS[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_EACH" -artifact_prefix="$ARTIFACTS/$target-" \
      -print_final_stats=1 >"$out" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo '?')"
    log "$target: $runs inputs in ${SECONDS_EACH}s, no crash"
  else
    status=1
    log "$target: FAILED (input in $ARTIFACTS):"
    tail -n 40 "$out" >&2
  fi
  rm -rf "$work"
done
exit $status
