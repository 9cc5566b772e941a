#!/usr/bin/env bash
# test.sh - the full test suite: format check, clippy, then every test with cargo-nextest against
# the TEST stack (LQDTY_STACK=test: PostgreSQL 55442, Pub/Sub 8095, Temporal 7243).
# This is what .ci/run runs (CI=true, no stdin).
#
# usage: scripts/test.sh [--keep-stack] [--faults | --bench] [-- NEXTEST_ARGS... | BENCH_SCENARIOS...]
#   --keep-stack   leave the test stack running afterwards (it is otherwise stopped, but only if
#                  this script started it; a stack that was already up is left as it was)
#   --faults       run only the fault suite (crates/cli/tests/e2e/faults): it restarts shared
#                  services of the test stack, so it always runs after, never beside, the others
#   --bench        run the benchmarks instead of the checks and tests: release builds of the
#                  end-to-end process tree (crates/cli/benches/pipeline/); scenarios after --
#                  (auth, latency, capacity, login-flood, burst, temporal-ceiling, reads,
#                  relay; default all)
#
# Without --faults or --bench: fmt, clippy, every test but the fault suite, the Docker checks,
# then the fault suite.
#
# Fails fast: the first failing step ends the run with its exit code. The test stack is stopped on
# every exit path (trap), keeping the exit code of the failing step. Under CI=true a stack this
# script started is destroyed instead of stopped: CI clones into a fresh directory each run, and
# its PostgreSQL files live outside the clone (see stack.sh), so they would pile up.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG="test"

keep_stack=0
bench=0
faults=0
nextest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-stack) keep_stack=1 ;;
    --bench) bench=1 ;;
    --faults) faults=1 ;;
    --) shift; nextest_args=("$@"); break ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option: $1 (usage: scripts/test.sh [--keep-stack] [--faults | --bench] [-- ARGS...])" ;;
  esac
  shift
done

T0=$(now)
STACK="$LQDTY_ROOT/scripts/stack.sh"
export LQDTY_STACK=test
started_stack=0

finish() {
  local rc=$?
  trap - EXIT
  if [ "$started_stack" = 1 ] && [ "$keep_stack" = 0 ]; then
    if [ "${CI:-}" = true ]; then
      "$STACK" destroy || log "WARNING: test stack teardown failed"
    else
      "$STACK" down || log "WARNING: test stack teardown failed"
    fi
  elif [ "$started_stack" = 1 ]; then
    log "test stack left running (--keep-stack); stop it with: LQDTY_STACK=test scripts/stack.sh down"
  fi
  if [ "$rc" = 0 ]; then
    log "all checks passed in $(since "$T0")s"
  else
    log "FAILED (exit $rc) after $(since "$T0")s"
  fi
  exit "$rc"
}
trap finish EXIT

# step NAME CMD...: run CMD, print its duration; a failure ends the script (set -e) via the trap.
step() {
  local name=$1 t0
  shift
  t0=$(now)
  log "==> $name: $*"
  "$@"
  log "<== $name ok in $(since "$t0")s"
}

ensure_toolchain() {
  need cargo
  if ! cargo fmt --version >/dev/null 2>&1; then
    need rustup
    rustup component add rustfmt
  fi
  if ! cargo clippy --version >/dev/null 2>&1; then
    need rustup
    rustup component add clippy
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest
  fi
}

cd "$LQDTY_ROOT"
step toolchain ensure_toolchain

if "$STACK" is-up; then
  log "test stack already running: using it and leaving it up"
else
  started_stack=1
  step "test stack" "$STACK" up
fi
# only the LQDTY_TEST_* variables: tests must not pick up a dev CATALOG_DATABASE_URL by accident
eval "$("$STACK" env | grep '^export LQDTY_TEST_')"
# shellcheck disable=SC2154 # set by the eval above
log "test stack: postgres $LQDTY_TEST_PG_ADMIN_URL, pubsub $LQDTY_TEST_PUBSUB_HOST, temporal $LQDTY_TEST_TEMPORAL_ADDRESS"

if [ "$bench" = 1 ]; then
  step bench cargo bench --locked -p liquidity --bench pipeline -- "${nextest_args[@]}"
  exit 0
fi

# The fault suite's tests are named faults::*, in the e2e binary.
FAULTS='test(/^faults::/)'
if [ "$faults" = 1 ]; then
  step faults cargo nextest run --workspace --locked --profile ci -E "$FAULTS" "${nextest_args[@]}"
  exit 0
fi
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
step tests cargo nextest run --workspace --locked --profile ci -E "not $FAULTS" "${nextest_args[@]}"
# The Docker path without a Docker engine: compose file, Dockerfiles, emulator shim, and the
# rendered Debezium Server configs through the embedded engine (README: Docker).
step docker scripts/docker-check.sh
step faults cargo nextest run --workspace --locked --profile ci -E "$FAULTS" "${nextest_args[@]}"
