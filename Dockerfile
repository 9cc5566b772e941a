# syntax=docker/dockerfile:1
# The `liquidity` image: one binary, every role (`docker run IMAGE api|cdc-worker|...`).
# Build steps live in docker/build.sh (also run by scripts/docker-check.sh --build, outside
# Docker); this file only orders them into cacheable layers. README, "Docker".
#
#   docker build -t liquidity:local .
#
# Base images: the Rust of the dev and CI machines (1.95; the workspace needs >= 1.94) on Debian 12,
# the Debian of the runtime image, so the binary links against the glibc it runs with.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- cargo-chef, once per toolchain ----
FROM ${RUST_IMAGE} AS chef
WORKDIR /src
COPY docker/build.sh /usr/local/bin/lqdty-build
RUN lqdty-build chef

# ---- the recipe: manifests and lock file only, so the next stage's cache key is the dependencies ----
FROM chef AS planner
COPY . .
RUN lqdty-build plan

# ---- dependencies (cached until Cargo.toml/Cargo.lock change), then our crates ----
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN lqdty-build deps
COPY . .
RUN lqdty-build app /out/liquidity

# ---- runtime: the binary, CA roots (Google Pub/Sub over TLS) and curl for health checks ----
FROM ${RUNTIME_IMAGE} AS runtime
# Unpinned apt versions (DL3008): bookworm's security updates replace the exact versions, which would
# break the build; the base image tag is what pins the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 liquidity \
    && useradd --system --uid 10001 --gid liquidity --no-create-home --shell /usr/sbin/nologin liquidity \
    && install -d -o liquidity -g liquidity -m 0750 /var/lib/liquidity
COPY --from=builder /out/liquidity /usr/local/bin/liquidity
# /var/lib/liquidity: the one writable directory, owned by the service user, so that a volume
# mounted there starts owned by it (docker-compose.yml: the rendered Debezium configs).
WORKDIR /var/lib/liquidity
USER 10001:10001
ENTRYPOINT ["liquidity"]
CMD ["--help"]
