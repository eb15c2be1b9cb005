# syntax=docker/dockerfile:1
#
# The reckon agent image. No container engine runs on the project's CI machines, so this file is
# not built there; see docs/operations.md ("Build and push the image") for how to build it.
#
#   docker build --build-arg RECKON_GIT_COMMIT=$(git rev-parse HEAD) -t REGISTRY/reckon:TAG .
#
# Stage 1 compiles the binary; stage 2 is a small Debian with what reckon shells out to: git
# (file:// and local transports run `git upload-pack`), the OpenSSH client (SSH remotes, SSH
# signature checks with ssh-keygen), gpg (GPG signature checks), CA certificates, kustomize
# (kustomize Apps) and helm (Helm Apps). It runs as a non-root user whose only writable paths are
# the volumes.
#
# helm is built from the same pinned module the tests use (tests/testenv/k8s/helm/go.mod), so the
# image renders charts with the Helm version the tests ran.

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm
ARG KUSTOMIZE_IMAGE=registry.k8s.io/kustomize/kustomize:v5.5.0

ARG GO_VERSION=1.26

FROM ${KUSTOMIZE_IMAGE} AS kustomize

FROM docker.io/library/golang:${GO_VERSION}-${DEBIAN_RELEASE} AS helm
WORKDIR /helm
COPY tests/testenv/k8s/helm/ ./
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    HELM_VERSION="$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" {print $3; exit}' go.mod)" \
 && test -n "$HELM_VERSION" \
 && go build -trimpath -o /usr/local/bin/helm \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
      helm.sh/helm/v4/cmd/helm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# build.rs reads the commit from git; the build context has no .git (see .dockerignore).
ARG RECKON_GIT_COMMIT=unknown
ENV RECKON_GIT_COMMIT=${RECKON_GIT_COMMIT}
COPY . .
# Caches keep the registry and target directory between builds; the binary is copied out of
# the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin reckon \
 && cp target/release/reckon /usr/local/bin/reckon

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client gnupg ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 reckon \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reckon \
 && mkdir -p /var/lib/reckon /etc/reckon \
 && chown 65532:65532 /var/lib/reckon
COPY --from=kustomize /app/kustomize /usr/local/bin/kustomize
COPY --from=helm /usr/local/bin/helm /usr/local/bin/helm
COPY --from=build /usr/local/bin/reckon /usr/local/bin/reckon
USER 65532:65532
ENV HOME=/tmp
WORKDIR /var/lib/reckon
VOLUME ["/var/lib/reckon"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/reckon"]
CMD ["run", "--watch-apps", "--listen=0.0.0.0:8080", "--config=/etc/reckon/reckon.yaml", "--store=/var/lib/reckon/store", "--cache=/var/lib/reckon/cache"]
