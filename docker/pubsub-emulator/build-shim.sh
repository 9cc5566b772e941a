#!/usr/bin/env bash
# build-shim.sh - compile the one-class grpc shim of the Pub/Sub emulator against its jar.
#
# usage: build-shim.sh EMULATOR_JAR OUT_DIR   (OUT_DIR/io/grpc/InternalStatus.class)
#
# The emulator 0.8.20 calls io.grpc.InternalStatus.asRuntimeException(Status, Metadata, boolean),
# which the grpc bundled in its jar lacks: every client stream cancel throws NoSuchMethodError and
# the subscription stops delivering. The shim, ahead of the jar on the classpath, supplies it.
# Run by docker/pubsub-emulator/Dockerfile and by scripts/docker-check.sh against the local jar.
set -euo pipefail
jar=${1:?usage: build-shim.sh EMULATOR_JAR OUT_DIR}
out=${2:?usage: build-shim.sh EMULATOR_JAR OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# --release 11: the emulator images run Java 11 or later
javac -nowarn --release 11 -cp "$jar" -d "$out" "$here/InternalStatus.java"
