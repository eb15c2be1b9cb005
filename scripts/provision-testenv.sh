#!/usr/bin/env bash
# Provision everything reckon's tests need on a fresh Debian 12 machine, idempotently:
#   - Debian packages: etcd-server, golang-1.19-go, rsync (k8s build), openssh-server (SSH git
#     server), git, openssl, kubectl check.
#   - the control plane named by RECKON_K8S_VERSION, cached in $RECKON_CACHE_DIR (default
#     ~/.cache/reckon) under k8s-<version>/bin so the second run is instant:
#       the release pinned in tests/testenv/k8s/kubernetes/go.mod (the default, the newest
#               supported): kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
#               kustomize, KWOK and helm built from Go modules by scripts/build-k8s-go.sh;
#       1.20.2 (the oldest supported, the floor of the version matrix): kube-apiserver and
#               kube-controller-manager built from Debian's own source package (etcd from
#               Debian); no scheduler and no nodes.
# Honours KUBEBUILDER_ASSETS (prebuilt binaries) and RECKON_TEST_KUBECONFIG (an existing cluster):
# with either, the Kubernetes build is skipped.
# Prints the directory holding the binaries on its last line of stdout (everything else to stderr).
set -euo pipefail

CACHE="${RECKON_CACHE_DIR:-$HOME/.cache/reckon}"
# The newest release is pinned in one place, the go.mod its build uses.
NEWEST="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' \
  "$(dirname "$0")/../tests/testenv/k8s/kubernetes/go.mod")"
K8S_VERSION="${RECKON_K8S_VERSION:-${NEWEST#v}}"
K8S_VERSION="${K8S_VERSION#v}"
K8S_VERSION_DEB="1.20.5+really1.20.2-1.1+deb12u1"
BIN="$CACHE/k8s-1.20.2/bin"
log() { echo "provision: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Git servers (git daemon, http-backend ship with git), sshd for ssh://, openssl for TLS certs,
# curl for readiness probes, gpg (+ gpg-agent, which signing needs) for GPG-signed fixtures and
# signature verification, python3-venv for the API contract fuzzer's virtual environment
# (scripts/api-contract.sh), chromium for the web UI's browser test (scripts/ui-test.sh).
apt_install git openssh-server openssh-client openssl ca-certificates curl gpg gpg-agent python3-venv chromium

# The test runner scripts/test.sh prefers (it falls back to cargo test without it): pinned, so
# every machine runs the same one.
NEXTEST_VERSION="0.9.151"
if command -v cargo >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest $NEXTEST_VERSION from crates.io (a few minutes, once)"
  cargo install --quiet --locked "cargo-nextest@$NEXTEST_VERSION" >&2 \
    || log "WARNING: installing cargo-nextest failed; scripts/test.sh uses cargo test instead"
fi

# The Go-built control plane brings its own kubectl; the v1.20 one uses the machine's.
if [ "$K8S_VERSION" = 1.20.2 ] && ! command -v kubectl >/dev/null; then
  log "WARNING: kubectl not found; tests that shell out to it will fail."
  log "  install it with: apt-get install kubernetes-client (Debian) or from your vendor,"
  log "  or use the newest release (RECKON_K8S_VERSION unset), whose build includes kubectl"
fi

if [ -n "${RECKON_TEST_KUBECONFIG:-}" ]; then
  log "RECKON_TEST_KUBECONFIG set: using the existing cluster, no control plane build"
  echo ""
  exit 0
fi

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  for b in etcd kube-apiserver; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || { log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks $b"; exit 1; }
  done
  log "using prebuilt binaries from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

if [ "$K8S_VERSION" != 1.20.2 ]; then
  exec bash "$(dirname "$0")/build-k8s-go.sh" "$K8S_VERSION"
fi

apt_install etcd-server
mkdir -p "$BIN"
[ -x "$BIN/etcd" ] || ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$BIN/etcd"

# Bumped whenever the source patches below change, so that cached binaries built without
# them are rebuilt.
PATCH_LEVEL="reflect2-go1.18-mapiterinit"
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] \
   && [ "$(cat "$BIN/.patch-level" 2>/dev/null)" = "$PATCH_LEVEL" ]; then
  log "cached control plane binaries in $BIN"
  echo "$BIN"
  exit 0
fi

apt_install golang-1.19-go rsync make dpkg-dev
SRC="$CACHE/src"
mkdir -p "$SRC"
if ! ls "$SRC"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding a deb-src entry for bookworm"
    $SUDO tee /etc/apt/sources.list.d/reckon-debsrc.sources >/dev/null <<'SRCS'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRCS
    $SUDO apt-get update -qq >&2
  fi
  log "downloading Debian source package kubernetes=$K8S_VERSION_DEB"
  (cd "$SRC" && apt-get source --download-only "kubernetes=$K8S_VERSION_DEB" >&2 \
     || apt-get source --download-only kubernetes >&2)
fi

TREE="$SRC/tree"
if [ ! -f "$TREE/Makefile" ]; then
  rm -rf "$TREE" && mkdir -p "$TREE"
  log "unpacking source"
  tar -xzf "$(ls "$SRC"/kubernetes_*.orig.tar.gz | head -1)" -C "$TREE" --strip-components=1
fi

# Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which calls the runtime's
# reflect.mapiterinit with the pre-Go-1.18 signature. Built with Go 1.19, kube-apiserver then
# dies with "fatal error: fault" (SIGSEGV in mapiternext) on the first write of any custom
# resource: the apiextensions handler JSON-encodes its metadata map through reflect2. This is
# the fix reflect2 v1.0.2 made: pass a full-size hiter to the three-argument mapiterinit.
R2="$TREE/vendor/github.com/modern-go/reflect2"
if ! grep -q "checkBucket" "$R2/unsafe_link.go"; then
  log "patching vendored reflect2 for Go 1.18+ (mapiterinit)"
  perl -0pi -e 's/func mapiterinit\(rtype unsafe\.Pointer, m unsafe\.Pointer\) \*hiter/func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)/' "$R2/unsafe_link.go"
  perl -0pi -e 's/type hiter struct \{.*?\n\}/type hiter struct {\n\tkey         unsafe.Pointer\n\tvalue       unsafe.Pointer\n\tt           unsafe.Pointer\n\th           unsafe.Pointer\n\tbuckets     unsafe.Pointer\n\tbptr        unsafe.Pointer\n\toverflow    *[]unsafe.Pointer\n\toldoverflow *[]unsafe.Pointer\n\tstartBucket uintptr\n\toffset      uint8\n\twrapped     bool\n\tB           uint8\n\ti           uint8\n\tbucket      uintptr\n\tcheckBucket uintptr\n}/s' "$R2/unsafe_link.go"
  perl -0pi -e 's/\treturn &UnsafeMapIterator\{\n\t\thiter:      mapiterinit\(type2\.rtype, \*\(\*unsafe\.Pointer\)\(obj\)\),/\tvar it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n\treturn &UnsafeMapIterator{\n\t\thiter:      &it,/' "$R2/unsafe_map.go"
  grep -q "checkBucket" "$R2/unsafe_link.go" && grep -q "&it)" "$R2/unsafe_map.go" \
    || { log "patching reflect2 failed"; exit 1; }
fi

export PATH="/usr/lib/go-1.19/bin:$PATH"
export GOFLAGS="-mod=vendor"
export GOCACHE="$CACHE/gocache"
cd "$TREE"
start=$(date +%s)
if [ ! -f "$TREE/.generated" ]; then
  log "make generated_files (about 1 min)"
  make generated_files >&2
  touch "$TREE/.generated"
fi
log "building kube-apiserver (about 4-5 min cold)"
make WHAT=cmd/kube-apiserver >&2
log "building kube-controller-manager"
make WHAT=cmd/kube-controller-manager >&2
# Copy beside, then rename: copying over a binary that a running control plane executes fails
# with "Text file busy", and a rename replaces it without disturbing the running process.
for b in kube-apiserver kube-controller-manager; do
  cp "_output/bin/$b" "$BIN/.$b.new"
  mv -f "$BIN/.$b.new" "$BIN/$b"
done
echo "$PATCH_LEVEL" > "$BIN/.patch-level"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
