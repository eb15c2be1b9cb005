#!/usr/bin/env bash
# Removes a cached target directory's stale builds of this workspace's own crates.
#
# Usage: prune-target.sh TARGET_DIR STAMP_FILE [MANIFEST_PATH]
#
# CI builds a fresh clone every run, and runs have added new copies of reckon, reckon-testenv and
# each test binary beside the old ones without reusing them (measured: 118 copies of the reckon binary, 24 GB in the fuzz
# build's cache). Compiled dependencies from crates.io keep their hash and are reused, so they are
# left alone. What goes: an artifact, fingerprint, build-script output or incremental directory of a
# path crate (named by `cargo metadata`: reckon, its test environment, the fuzz targets) that is older than STAMP_FILE, which the caller
# touched before its build: everything this run built is newer, everything older belongs to another
# clone. A checkout that shares the target directory rebuilds its own crates once afterwards.
set -euo pipefail

target="$1"
stamp="$2"
manifest="${3:-Cargo.toml}"
[ -d "$target" ] && [ -f "$stamp" ] || exit 0

# Package names (fingerprint and build directories) and target names (artifacts, incremental
# state), each with dashes and with underscores, as cargo spells them in the different places.
names="$(cargo metadata --format-version 1 --manifest-path "$manifest" |
  python3 -c '
import json, sys
meta = json.load(sys.stdin)
names = set()
for package in meta["packages"]:
    if package["source"] is not None:
        continue  # from a registry or Git: its hash does not move with the clone
    names.add(package["name"])
    for target in package["targets"]:
        names.add(target["name"])
for name in sorted(names):
    print(name.replace("-", "_"))
    print(name.replace("_", "-"))
' | sort -u)"

removed=0
for profile in "$target"/debug "$target"/release "$target"/*/debug "$target"/*/release; do
  [ -d "$profile" ] || continue
  for name in $names; do
    # Exactly NAME-HASH (and lib NAME-HASH.ext): a crates.io crate named NAME-something stays.
    regex=".*/(lib)?${name}-[0-9a-z]{13,16}(\\.[a-z0-9.]+)?"
    for dir in deps incremental .fingerprint build; do
      [ -d "$profile/$dir" ] || continue
      while IFS= read -r -d '' stale; do
        rm -rf -- "$stale"
        removed=$((removed + 1))
      done < <(find "$profile/$dir" -mindepth 1 -maxdepth 1 -regextype posix-extended \
                 -regex "$regex" ! -newer "$stamp" -print0)
    done
  done
done
echo "prune-target: removed $removed stale builds of the workspace's crates from $target" >&2
