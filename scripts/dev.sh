#!/usr/bin/env bash
# dev.sh - run the whole of Liquidity locally: the dev stack (scripts/stack.sh), the CDC relay and
# the four services of the `liquidity` binary (sources, workflow-worker, cdc-worker, api).
#
# usage: scripts/dev.sh up|down|status|logs [NAME]
#   up       install what is missing, start everything that is not running, print the URLs and a
#            curl walk-through (register, login, me, startReport, reportStatus, report)
#   down     stop the services, the relay and the dev stack (and the stack's supervisord)
#   status   every process: supervisor state, pid, uptime, restart count, port, memory; the
#            relay's engines (state, last published LSN) and each replication slot's lag in bytes
#   logs     follow all logs, or only NAME's (api, cdc-worker, workflow-worker, sources, relay,
#            postgres, pubsub, temporal)
#
# Every process is a program of the dev stack's supervisord (README, "Supervision"), which restarts
# it when it dies; the four roles are rendered from scripts/supervisor/app.conf.in. After a
# rebuild, `up` restarts the roles on the new binary.
# LQDTY_BIN=/path/to/liquidity uses a prebuilt binary instead of `cargo build` (debug profile).
# Configuration of the services comes from .stack/dev/app.env, written on the first `up` (demo
# tenants t1..t3 with fixed ids, a random JWT secret kept across runs, a random password per
# PostgreSQL role). Edit it freely; delete it to regenerate (that also rotates JWT_SECRET,
# invalidating issued tokens, and the role passwords). Least privilege: every `up` runs
# `liquidity provision` as the PostgreSQL superuser, which only this script and stack.sh know:
# roles lqdty_catalog, lqdty_t1..3 each own their one database, lqdty_cdc is Debezium's.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LQDTY_STACK=dev
LOG_TAG="dev"

STACK="$LQDTY_ROOT/scripts/stack.sh"
STATE=$LQDTY_STATE_ROOT/dev
RUN=$STATE/run
LOGS=$STATE/logs
SV_DIR=$STATE/supervisor
APP_ENV=$STATE/app.env
# LQDTY_BIN: use this (prebuilt) binary and skip `cargo build`
BIN=${LQDTY_BIN:-$LQDTY_ROOT/target/debug/liquidity}
# supervisor programs, in start order (priorities in app.conf.in; stopped in reverse)
SERVICES=(sources workflow-worker cdc-worker api)
API_ADDR=127.0.0.1:8080

T1_ID=00000000-0000-4000-8000-000000000001
T2_ID=00000000-0000-4000-8000-000000000002
T3_ID=00000000-0000-4000-8000-000000000003

# a random password, URL-safe (base64url without padding): nothing to percent-encode in a URL
random_password() { head -c 24 /dev/urandom | base64 -w 0 | tr '+/' '-_' | tr -d '='; }

# role_url ROLE DATABASE: a URL of the dev server as ROLE, with a fresh password
role_url() { echo "postgres://$1:$(random_password)@127.0.0.1:${PG_PORT:-55432}/$2"; }

write_app_env() {
  local secret t1 t2 t3
  secret=$(head -c 48 /dev/urandom | base64 -w 0)
  t1=$(role_url lqdty_t1 lqdty_t1) t2=$(role_url lqdty_t2 lqdty_t2) t3=$(role_url lqdty_t3 lqdty_t3)
  mkdir -p "$STATE"
  (
    umask 077
    cat >"$APP_ENV" <<EOF
# Liquidity local services (scripts/dev.sh). Written once by dev.sh; edit freely, delete to regenerate.
# Sourced by bash with \`set -a\`: KEY='value', no spaces around =. See .env.example for every variable.
# Each database is owned by the role of its URL (created by \`liquidity provision\` on every up).
TENANTS_CONFIG='[{"id":"$T1_ID","name":"t1","description":"Demo tenant 1","databaseUrl":"$t1","maxConnections":10},{"id":"$T2_ID","name":"t2","description":"Demo tenant 2","databaseUrl":"$t2","maxConnections":10},{"id":"$T3_ID","name":"t3","description":"Demo tenant 3","databaseUrl":"$t3","maxConnections":10}]'
CATALOG_DATABASE_URL='$(role_url lqdty_catalog catalog)'
# Debezium's replication role: provision, migrate (grants) and the relay only; services never get it.
CDC_DATABASE_USER='lqdty_cdc'
CDC_DATABASE_PASSWORD='$(random_password)'
JWT_SECRET='$secret'
LISTEN_ADDR='$API_ADDR'
SOURCES_CONFIG='{"source_1":"http://127.0.0.1:9101","source_2":"http://127.0.0.1:9102","source_3":"http://127.0.0.1:9103"}'
PUBSUB_EMULATOR_HOST='127.0.0.1:${PUBSUB_PORT:-8085}'
PUBSUB_PROJECT='lqdty-local'
PUBSUB_TOPIC='tenant-cdc'
PUBSUB_SUBSCRIPTION='tenant-cdc-worker'
PUBSUB_DLQ_TOPIC='tenant-cdc-dlq'
# The emulator forgets topics and subscriptions when it restarts: let the CDC worker re-create them.
PUBSUB_AUTO_CREATE='true'
TEMPORAL_ADDRESS='http://127.0.0.1:${TEMPORAL_PORT:-7233}'
LOG_FORMAT='text'
EOF
  )
  log "wrote $APP_ENV (demo tenants, new JWT_SECRET, new PostgreSQL role passwords)"
}

load_app_env() {
  # written before least privilege: every service connected as the superuser
  if [ -f "$APP_ENV" ] && grep -q '://postgres:' "$APP_ENV"; then
    mv "$APP_ENV" "$APP_ENV.old"
    log "$APP_ENV connected as the PostgreSQL superuser: moved to $APP_ENV.old, writing a new one with a role per database"
  fi
  [ -f "$APP_ENV" ] || write_app_env
  set -a
  # shellcheck disable=SC1090 # generated file
  source "$APP_ENV"
  set +a
}

# the dev server's superuser URL, from stack.sh (the one place that knows it)
admin_url() { "$STACK" env | sed -n 's/^export PG_ADMIN_URL=//p'; }

# start_services: add the roles to the supervisor (or restart those whose binary was rebuilt) and
# start them; wait until the API is healthy and every role stays up.
start_services() {
  local s state end
  if [ "$(sv_state api)" != RUNNING ] && port_open "${API_ADDR##*:}"; then
    die "$API_ADDR is already in use by a process dev.sh did not start; stop it first"
  fi
  render "$LQDTY_ROOT/scripts/supervisor/app.conf.in" "$SV_DIR/conf.d/app.conf" APP_ENV="$APP_ENV" BIN="$BIN" \
    BUILD="$(stat -c %Y "$BIN")" STATE="$STATE" LOGS="$LOGS"
  sv update >/dev/null
  sv start "${SERVICES[@]}" >/dev/null 2>&1 || true # "already started" is not an error here
  end=$(($(date +%s) + 90))
  for s in "${SERVICES[@]}"; do
    # RUNNING = up for startsecs (2 s); BACKOFF = it exited during start-up (a bad config): say so
    # now, while the supervisor keeps retrying it
    until [ "$(sv_state "$s")" = RUNNING ] && { [ "$s" != api ] || curl -sf "http://$API_ADDR/healthz" >/dev/null 2>&1; }; do
      state=$(sv_state "$s")
      if [ "$state" = BACKOFF ] || [ "$state" = FATAL ] || [ "$(date +%s)" -ge "$end" ]; then
        tail -n 20 "$LOGS/$s.log" >&2 || true
        die "$s did not start (supervisor state: ${state:-none}); log: $LOGS/$s.log"
      fi
      sleep 0.2
    done
  done
}

print_info() {
  cat <<EOF

Liquidity is up (dev stack).
  GraphQL       POST http://$API_ADDR/graphql   (header: Authorization: Bearer <token>)
  GraphiQL      http://$API_ADDR/graphql  (open in a browser)
  Temporal UI   http://127.0.0.1:${TEMPORAL_UI_PORT:-8233}
  Pub/Sub       emulator 127.0.0.1:${PUBSUB_PORT:-8085}, project lqdty-local, topic tenant-cdc -> subscription tenant-cdc-worker
  PostgreSQL    127.0.0.1:${PG_PORT:-55432}: catalog, lqdty_t1, lqdty_t2, lqdty_t3, each owned by its own role
                (lqdty_catalog, lqdty_t1..3; URLs with passwords in the config below); Debezium: lqdty_cdc
                admin only: $(admin_url)
  Logs          $LOGS   (scripts/dev.sh logs [name])
  Config        $APP_ENV
  Demo tenants  t1 $T1_ID   t2 $T2_ID   t3 $T3_ID

Try it (needs curl and jq; paste line by line):
EOF
  cat <<'EOF'
  API=http://127.0.0.1:8080/graphql
  curl -s "$API" -H 'content-type: application/json' -d "$(jq -nc '{query: "mutation($i: RegisterInput!) { register(input: $i) { user { id tenantId username taxId } token } }", variables: {i: {tenantId: "00000000-0000-4000-8000-000000000001", username: "alice", password: "correct-horse-battery", taxId: "TAX-0001"}}}')" | jq .
  TOKEN=$(curl -s "$API" -H 'content-type: application/json' -d "$(jq -nc '{query: "mutation($i: LoginInput!) { login(input: $i) { token } }", variables: {i: {username: "alice", password: "correct-horse-battery"}}}')" | jq -r .data.login.token)
  curl -s "$API" -H 'content-type: application/json' -H "Authorization: Bearer $TOKEN" -d '{"query":"{ me { id tenantId username taxId } }"}' | jq .
  REPORT=$(curl -s "$API" -H 'content-type: application/json' -H "Authorization: Bearer $TOKEN" -d '{"query":"mutation { startReport { reportId } }"}' | jq -r .data.startReport.reportId); echo "report $REPORT"
  for i in $(seq 60); do S=$(curl -s "$API" -H 'content-type: application/json' -H "Authorization: Bearer $TOKEN" -d "$(jq -nc --arg id "$REPORT" '{query: "query($id: ID!) { reportStatus(id: $id) { status } }", variables: {id: $id}}')" | jq -r '.data.reportStatus.status | ascii_downcase'); echo "status: $S"; [ "$S" = in_progress ] || break; sleep 5; done
  curl -s "$API" -H 'content-type: application/json' -H "Authorization: Bearer $TOKEN" -d "$(jq -nc --arg id "$REPORT" '{query: "query($id: ID!) { report(id: $id) { id tenantId userId status startedAt finishedAt contents { id source status data createdAt lastRunAt } } }", variables: {id: $id}}')" | jq .
EOF
}

cmd_up() {
  local t0 t1 cold=warm
  t0=$(now)
  mkdir -p "$RUN" "$LOGS"
  "$STACK" is-up || cold=cold
  t1=$(now)
  "$STACK" up
  log "stack ($cold) in $(since "$t1")s"

  if [ -z "${LQDTY_BIN:-}" ]; then
    need cargo
    t1=$(now)
    log "cargo build --locked --bin liquidity"
    (cd "$LQDTY_ROOT" && cargo build --locked --bin liquidity)
    log "build in $(since "$t1")s"
  fi
  [ -x "$BIN" ] || die "binary not found: $BIN"
  BIN=$(readlink -f "$BIN") # the supervisor runs it from another directory

  load_app_env
  t1=$(now)
  # the superuser URL goes to this one command only, never into app.env or a service
  PG_ADMIN_URL=$(admin_url) "$BIN" provision
  "$BIN" migrate
  log "provision + migrate in $(since "$t1")s"

  t1=$(now)
  # only provision and the relay need Debezium's password: the roles drop it (app.conf.in).
  # relay-up creates the Pub/Sub topics and renders the relay's config with this binary.
  LQDTY_BIN=$BIN "$STACK" relay-up
  log "relay in $(since "$t1")s"

  t1=$(now)
  start_services
  log "services in $(since "$t1")s; api healthy"
  print_info
  log "dev up ($cold stack) in $(since "$t0")s"
}

# the stack's down stops every program of its supervisord (roles, relay, infrastructure) and it
cmd_down() { "$STACK" down; }

cmd_status() {
  "$STACK" status
  "$STACK" relay-status
  if curl -sf "http://$API_ADDR/healthz" >/dev/null 2>&1; then echo "api healthz: ok (http://$API_ADDR)"; fi
}

cmd_logs() {
  mkdir -p "$LOGS"
  if [ -n "${1:-}" ]; then
    [ -e "$LOGS/$1.log" ] || die "no log $LOGS/$1.log (have: $(cd "$LOGS" && printf '%s ' *.log))"
    exec tail -n 100 -F "$LOGS/$1.log"
  fi
  shopt -s nullglob
  local files=("$LOGS"/*.log)
  [ "${#files[@]}" -gt 0 ] || die "no logs yet in $LOGS"
  exec tail -n 20 -F "${files[@]}"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-}" ;;
  *)
    echo "usage: $0 up|down|status|logs [name]" >&2
    exit 2
    ;;
esac
