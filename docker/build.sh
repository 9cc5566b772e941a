#!/usr/bin/env bash
# build.sh - the build steps of the `liquidity` image, the one place they are written down.
# The Dockerfile's build stages run exactly these steps, and `scripts/docker-check.sh --build`
# runs them outside Docker on a copy of the build context, so what the check proves is what the
# image build does.
#
# usage (in the current directory, the stage's WORKDIR):
#   docker/build.sh chef        install cargo-chef (CHEF_VERSION), the dependency-layer tool
#   docker/build.sh plan        write recipe.json: the workspace's manifests and lock file only
#   docker/build.sh deps        build every dependency of the binary from recipe.json alone
#   docker/build.sh app OUT     build the binary from the full sources, install it as OUT
#
# Why cargo-chef and not a dummy main.rs: the workspace has seven crates with libraries, tests and
# benches; a hand-kept skeleton of them drifts with every new crate or target, while `cargo chef
# prepare` derives it from the manifests. The `deps` layer is a real image layer, so it is reused
# from a registry cache (`--cache-from`) on a fresh CI runner too, unlike a BuildKit cache mount.
#
# Environment: CARGO_TARGET_DIR (default ./target), CARGO_HOME as cargo uses it; CHEF_ROOT
# (default: cargo's own install root) for `chef`.
set -euo pipefail

# Pinned: the recipe format belongs to the cargo-chef version; plan and deps must agree.
CHEF_VERSION=0.1.78
# Only the binary the image ships (not tests, benches or the test-support crate).
BIN=liquidity

step=${1:-}
case "$step" in
  chef)
    cargo install cargo-chef --locked --version "$CHEF_VERSION" ${CHEF_ROOT:+--root "$CHEF_ROOT"}
    ;;
  plan)
    cargo chef prepare --recipe-path recipe.json --bin "$BIN"
    ;;
  deps)
    cargo chef cook --release --locked --recipe-path recipe.json --bin "$BIN"
    ;;
  app)
    out=${2:?usage: docker/build.sh app OUT}
    cargo build --release --locked --bin "$BIN"
    install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/$BIN" "$out"
    # the image is the place to ship, not to debug: line tables are kept in target/ only
    strip --strip-debug "$out"
    ;;
  *)
    echo "usage: docker/build.sh chef | plan | deps | app OUT" >&2
    exit 2
    ;;
esac
