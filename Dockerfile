# syntax=docker/dockerfile:1
#
# The service as a small image that runs as a non-root user (docs/deploying.md):
#
#   docker build -t dry-needling-cds .
#
# Two stages: the Rust toolchain builds the binary; the image that runs it holds only that binary and the
# C runtime it links (glibc, libgcc_s, libm: see `ldd target/release/dry-needling-cds`). tests/deploy.rs checks
# what this file promises (stages, user, ports, health check).

# rust-version in Cargo.toml is 1.95. Bookworm, like the runtime image's Debian 12, so the binary links the
# same glibc it will run with. The slim image already has gcc and libc6-dev: aws-lc-sys (rustls' and
# jsonwebtoken's crypto) and ring compile their C with the `cc` crate and ship pregenerated bindings for x86_64
# and aarch64 Linux, so neither cmake, nasm, clang nor bindgen is needed. jemalloc, the binary's allocator
# (tikv-jemalloc-sys), is built with its own configure script and `make`, the one tool added here.
FROM rust:1.95-slim-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io downloads and the compiled dependencies between builds, so a change to
# the service's own code recompiles only its own crates, not every dependency (how long a clean build
# takes: docs/PERFORMANCE.md "Build time"). The target directory is a cache, not a layer, so the binary is
# copied out of it in the same step.
# `sharing=locked`: two builds at once wait for each other instead of writing the same target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin dry-needling-cds \
    && install -D -m 0755 target/release/dry-needling-cds /out/dry-needling-cds \
    && install -d -m 0700 /out/data

# Distroless: glibc, libgcc, CA certificates (for the EHRs' key URLs and FHIR servers), no shell, no
# package manager. The `nonroot` variant has the user 65532 (`nonroot`) in its /etc/passwd.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/dry-needling-cds /usr/local/bin/dry-needling-cds
# The SQLite store's directory (card log, feedback; docs/storage.md), owned by the user the service runs as.
# Mount a volume here to keep it across containers; for several containers use PostgreSQL instead
# (DRY_NEEDLING_CDS_POSTGRES_URL).
COPY --from=builder --chown=65532:65532 /out/data /var/lib/dry-needling-cds
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
# Every interface, since the container's network is its own; logs as JSON lines for a log collector. On an
# address other than loopback the service refuses to start without trusted clients in a configuration file:
# mount one and point DRY_NEEDLING_CDS_CONFIG at it (docs/deploying.md).
ENV DRY_NEEDLING_CDS_LISTEN=0.0.0.0:8080 \
    DRY_NEEDLING_CDS_LOG_FORMAT=json \
    DRY_NEEDLING_CDS_DATA_DIR=/var/lib/dry-needling-cds
VOLUME ["/var/lib/dry-needling-cds"]
# 8080: the CDS Hooks endpoints, /healthz and /readyz. 9464: Prometheus metrics at /metrics, served when
# DRY_NEEDLING_CDS_METRICS_LISTEN is set (for example to 0.0.0.0:9464).
EXPOSE 8080 9464
# No curl in a distroless image: the binary checks itself. `healthcheck` GETs /healthz on the port of
# DRY_NEEDLING_CDS_LISTEN (so change the port with that variable, not with --listen) and exits 0 on a 200.
# Kubernetes ignores this and uses its own probes (deploy/kubernetes.yaml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/dry-needling-cds", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dry-needling-cds"]
CMD ["serve"]
