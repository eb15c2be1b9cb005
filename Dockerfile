# syntax=docker/dockerfile:1
#
# The reckon agent image. No container engine runs on the project's CI machines, so this file is
# not built there; see docs/operations.md ("Build and push the image") for how to build it.
#
#   docker build --build-arg RECKON_GIT_COMMIT=$(git rev-parse HEAD) -t REGISTRY/reckon:TAG .
#
# Stage 1 compiles the binary; stage 2 is a small Debian with what reckon shells out to: git
# (file:// and local transports run `git upload-pack`), the OpenSSH client (SSH remotes, SSH
# signature checks with ssh-keygen), gpg (GPG signature checks), CA certificates, and kustomize
# (kustomize Apps). It runs as a non-root user whose only writable paths are the volumes.

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm
ARG KUSTOMIZE_IMAGE=registry.k8s.io/kustomize/kustomize:v5.5.0

FROM ${KUSTOMIZE_IMAGE} AS kustomize

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
COPY --from=build /usr/local/bin/reckon /usr/local/bin/reckon
USER 65532:65532
ENV HOME=/tmp
WORKDIR /var/lib/reckon
VOLUME ["/var/lib/reckon"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/reckon"]
CMD ["run", "--watch-apps", "--listen=0.0.0.0:8080", "--config=/etc/reckon/reckon.yaml", "--store=/var/lib/reckon/store", "--cache=/var/lib/reckon/cache"]
