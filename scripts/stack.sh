#!/usr/bin/env bash
# Local stack for warehouse-monitor: PostgreSQL, Redis and a Tansu (Kafka-compatible) broker.
#
#   scripts/stack.sh up          install (only if missing) and start everything, create the database
#   scripts/stack.sh down        stop the Tansu broker started by this script
#   scripts/stack.sh down --all  also stop PostgreSQL and Redis
#   scripts/stack.sh status      one line per service; exit 1 if any is down
#   scripts/stack.sh tools       only install the build dependencies of librdkafka and the test
#                                tools (prometheus, and a venv with confluent-kafka, the
#                                librdkafka producer of tests/it/librdkafka.rs)
#   scripts/stack.sh build-deps  only install the build dependencies of librdkafka
#   scripts/stack.sh pg-defaults give the local PostgreSQL back the settings `up` changed for
#                                sustained ingest (ALTER SYSTEM RESET; restarts it if idle)
#
# Overrides: WM_STACK_PG_HOST, WM_STACK_PG_PORT (where PostgreSQL is checked; the cluster's own port
# is set in postgresql.conf), WM_STACK_REDIS_PORT, WM_STACK_KAFKA_PORT, WM_STACK_TANSU_OPT_LEVEL
# (the opt-level Tansu is built at, 1 by default), WM_STACK_PG_TUNE=0 (leave the PostgreSQL
# settings alone).
# Tansu keeps topics in memory: they are gone once the broker stops (the service recreates its topic).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack_dir="$repo/.stack"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

pg_host="${WM_STACK_PG_HOST:-127.0.0.1}"
pg_port="${WM_STACK_PG_PORT:-5432}"
pg_db="warehouse_monitor"
redis_port="${WM_STACK_REDIS_PORT:-6379}"
kafka_port="${WM_STACK_KAFKA_PORT:-9092}"
tansu_version="0.6.0"
tansu_name="tansu$([[ $kafka_port == 9092 ]] || echo "-$kafka_port")"  # per-port files for overrides
tansu_pid_file="$stack_dir/$tansu_name.pid"
tansu_log="$stack_dir/$tansu_name.log"
wait_secs=60

say() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# Root commands (apt-get, pg_ctlcluster, pg_hba.conf edits): direct as root, else through sudo.
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else die "need root (or sudo) to run: $*"; fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  if [[ $apt_updated -eq 0 ]]; then
    say "apt: updating package lists"
    as_root apt-get update -q >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  say "apt: installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null 9>&- \
    || die "apt-get install $* failed"
}

# TCP connect check with bash's /dev/tcp (no nc needed).
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_until <seconds> <command...>: poll every 0.5 s until the command succeeds.
wait_until() {
  local secs="$1" i
  shift
  for ((i = 0; i < secs * 2; i++)); do
    "$@" && return 0
    sleep 0.5
  done
  return 1
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() {
  if command -v pg_isready >/dev/null; then pg_isready -q -h "$pg_host" -p "$pg_port"
  else tcp_open "$pg_host" "$pg_port"; fi
}
pg_psql() { psql -w -X -q -h "$pg_host" -p "$pg_port" -U postgres -d postgres "$@"; }
pg_login_ok() { pg_psql -tAc 'select 1' >/dev/null 2>&1; }
pg_db_exists() { [[ "$(pg_psql -tAc "select 1 from pg_database where datname='$pg_db'" 2>/dev/null)" == 1 ]]; }
latest() { [[ -d $1 ]] && find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1; }
pg_version() { latest /etc/postgresql; }
pg_local() { [[ $pg_host == 127.0.0.1 || $pg_host == localhost || $pg_host == ::1 ]]; }

pg_up() {
  if ! pg_ready; then
    pg_local || die "postgres: nothing answers on $pg_host:$pg_port (remote host, not starting it)"
    if ! command -v pg_ctlcluster >/dev/null || [[ -z "$(pg_version)" ]]; then
      command -v pg_ctlcluster >/dev/null || apt_install postgresql
      if [[ -z "$(pg_version)" ]]; then  # package installed without a cluster
        local v; v="$(latest /usr/lib/postgresql)"
        say "postgres: creating cluster $v/main"
        as_root pg_createcluster "$v" main >/dev/null 9>&-
      fi
    fi
    say "postgres: starting cluster $(pg_version)/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start 9>&- \
      || pg_ready || die "postgres: pg_ctlcluster start failed (see /var/log/postgresql/)"
    wait_until "$wait_secs" pg_ready \
      || die "postgres: not accepting connections on $pg_host:$pg_port after ${wait_secs}s"
  fi
  command -v psql >/dev/null || apt_install postgresql-client

  if ! pg_login_ok; then
    local hba
    hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
    if ! pg_local || [[ ! -f $hba ]]; then
      die "postgres: cannot log in as postgres on $pg_host:$pg_port without a password"
    fi
    say "postgres: switching pg_hba.conf host lines for 127.0.0.1/32 and ::1/128 to trust, reloading"
    as_root sed -Ei.bak '/^host[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]/ s/[^[:space:]]+[[:space:]]*$/trust/' "$hba"
    grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]' "$hba" \
      || echo 'host    all    all    127.0.0.1/32    trust' | as_root tee -a "$hba" >/dev/null
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload 9>&-
    wait_until 10 pg_login_ok \
      || die "postgres: trust login as postgres on $pg_host:$pg_port still fails; check $hba"
  fi

  if pg_db_exists; then
    say "postgres: up on $pg_host:$pg_port, database $pg_db present"
  else
    createdb -w -h "$pg_host" -p "$pg_port" -U postgres "$pg_db" 2>/dev/null || pg_db_exists \
      || die "postgres: createdb $pg_db failed"
    say "postgres: up on $pg_host:$pg_port, database $pg_db created"
  fi
}

pg_down() {
  if pg_ready && pg_local && [[ -n "$(pg_version)" ]]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main stop
    say "postgres: stopped"
  else
    say "postgres: not running"
  fi
}

# ---------------------------------------------------------------- PostgreSQL for sustained ingest

# pg_tune, pg_defaults: the settings `up` gives the local cluster (docs/postgresql.md).
# shellcheck source=scripts/stack-postgres-settings.sh
source "$repo/scripts/stack-postgres-settings.sh"

# ---------------------------------------------------------------- Redis

# PING over /dev/tcp so the check works without redis-cli.
redis_cmd() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$redis_port" || return 1
  printf '%s\r\n' "$1" >&3
  IFS= read -r -t 2 reply <&3 || true
  exec 3>&-
  printf '%s' "$reply"
}
redis_ready() { [[ "$(redis_cmd PING 2>/dev/null)" == +PONG* ]]; }
redis_gone() { ! tcp_open 127.0.0.1 "$redis_port"; }

redis_up() {
  if ! redis_ready; then
    command -v redis-server >/dev/null || apt_install redis-server
    if ! redis_ready; then  # the package may have started it
      local dir=/var/lib/redis logdir=/var/log/redis
      if [[ $EUID -ne 0 ]]; then dir="$stack_dir/redis"; logdir="$stack_dir"; fi
      mkdir -p "$dir" "$logdir"
      say "redis: starting on 127.0.0.1:$redis_port"
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" --save "" \
        --appendonly no --dir "$dir" --logfile "$logdir/ci.log" 9>&- \
        || die "redis: redis-server failed to start (see $logdir/ci.log)"
      wait_until "$wait_secs" redis_ready \
        || die "redis: no PONG on 127.0.0.1:$redis_port after ${wait_secs}s (see $logdir/ci.log)"
    fi
  fi
  say "redis: up on 127.0.0.1:$redis_port"
}

redis_down() {
  if redis_ready; then
    if command -v redis-cli >/dev/null; then redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    else redis_cmd 'SHUTDOWN NOSAVE' >/dev/null 2>&1 || true; fi
    wait_until 10 redis_gone || die "redis: still running after shutdown"
    say "redis: stopped"
  else
    say "redis: not running"
  fi
}

# ---------------------------------------------------------------- Tansu (Kafka)

kafka_ready() { tcp_open 127.0.0.1 "$kafka_port"; }

# Prints the pid of the broker we started, if it is still alive.
tansu_pid() {
  local pid cmd
  [[ -f $tansu_pid_file ]] || return 1
  pid="$(<"$tansu_pid_file")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ $cmd == *tansu*broker* ]] && printf '%s' "$pid"
}

# Installed, the pinned version, and built with the dynostore feature (needed for memory://).
tansu_ok() {
  local version help
  command -v tansu >/dev/null || return 1
  version="$(tansu --version 2>/dev/null)" && help="$(tansu --help 2>/dev/null)" || return 1
  [[ $version == *" $tansu_version"* && $help == *dynostore* ]]
}

tansu_install() {
  tansu_ok && return 0
  command -v cargo >/dev/null || die "kafka: cargo not found (install Rust with rustup), needed to install tansu"
  if command -v pgrep >/dev/null && pgrep -f 'cargo install .*tansu' >/dev/null; then
    say "kafka: another 'cargo install tansu' is running; waiting for it (up to 45 min)"
    local i
    for ((i = 0; i < 45 * 6; i++)); do
      pgrep -f 'cargo install .*tansu' >/dev/null || break
      ((i % 6 == 5)) && say "kafka: still waiting for the tansu install ($(((i + 1) / 6)) min)"
      sleep 10
    done
    tansu_ok && return 0
  fi
  local force=()
  command -v tansu >/dev/null && force=(--force)  # wrong version or built without dynostore
  # At opt-level 1 the build takes markedly less time than at the release profile's 3, and
  # the broker does little work per record (WM_STACK_TANSU_OPT_LEVEL=3 for a full build).
  local opt="${WM_STACK_TANSU_OPT_LEVEL:-1}"
  say "kafka: installing tansu $tansu_version with cargo at opt-level $opt (about 9 min on 2 cores)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" \
    cargo install tansu --version "$tansu_version" --locked --features dynostore "${force[@]}" </dev/null 9>&- \
    || die "kafka: cargo install tansu failed"
  tansu_ok || die "kafka: tansu installed but 'tansu --help' does not work or lacks dynostore"
}

kafka_up() {
  local pid
  if kafka_ready; then
    if pid="$(tansu_pid)"; then say "kafka: up on 127.0.0.1:$kafka_port (tansu pid $pid)"
    else say "kafka: up on 127.0.0.1:$kafka_port (a broker not started by stack.sh; using it)"; fi
    return 0
  fi
  if pid="$(tansu_pid)"; then  # alive but not listening: hung or still binding; restart it
    say "kafka: tansu pid $pid is not listening; restarting it"
    tansu_stop
  fi
  tansu_install
  rm -f "$tansu_pid_file"
  if [[ -f $tansu_log ]]; then mv -f "$tansu_log" "$tansu_log.prev"; fi
  say "kafka: starting tansu broker on 127.0.0.1:$kafka_port (log: .stack/$tansu_name.log)"
  # cwd / so tansu's dotenv does not read a .env from the repo; flags win over env variables.
  # The inner bash writes its own pid (= tansu's after exec) so setsid forking cannot fool us, and
  # closes inherited fds above 2 (lock, callers' pipes) so the broker never holds them open.
  # shellcheck disable=SC2016
  (
    cd /
    exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u DATA_LAKE \
      RUST_LOG="${WM_STACK_TANSU_RUST_LOG:-warn}" \
      setsid nohup bash -c 'echo $$ >"$0"
        for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-"; fi; done
        exec "$@"' "$tansu_pid_file" \
      tansu broker \
      --cluster-id warehouse-monitor-local \
      --listener-url "tcp://127.0.0.1:$kafka_port" \
      --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
      --storage-engine memory://tansu/
  ) </dev/null >"$tansu_log" 2>&1 9>&- &
  local i
  for ((i = 0; i < wait_secs * 2; i++)); do
    kafka_ready && break
    if ((i > 2)) && ! tansu_pid >/dev/null; then
      tail -n 20 "$tansu_log" >&2 || true
      die "kafka: tansu exited during startup (log: $tansu_log)"
    fi
    sleep 0.5
  done
  kafka_ready || die "kafka: tansu not accepting connections on 127.0.0.1:$kafka_port after ${wait_secs}s (log: $tansu_log)"
  say "kafka: up on 127.0.0.1:$kafka_port (tansu pid $(tansu_pid || echo '?'))"
}

tansu_stop() {
  local pid i
  if ! pid="$(tansu_pid)"; then
    rm -f "$tansu_pid_file"
    if kafka_ready; then say "kafka: not started by stack.sh (something else listens on $kafka_port); left alone"
    else say "kafka: not running"; fi
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$tansu_pid_file"
  say "kafka: stopped tansu pid $pid"
}

# ---------------------------------------------------------------- monitoring tools

# tests/it/monitoring runs Debian's prometheus (scripts/monitor.sh too); it reads the YAML
# files with serde_yaml, so needs no Python. Installed only, never started here.

# tests/it/librdkafka.rs produces with librdkafka (confluent-kafka wheels bundle it, with every codec).
venv="$stack_dir/venv"
confluent_version="2.16.1"
venv_ok() { "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; }

venv_install() {
  venv_ok && { say "tools: confluent-kafka present in $venv"; return 0; }
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; } \
    || die "cannot create $venv"
  say "tools: installing confluent-kafka $confluent_version into $venv"
  "$venv/bin/pip" install -q "confluent-kafka==$confluent_version" </dev/null 9>&- \
    || die "pip install confluent-kafka failed"
}

# The service builds librdkafka from its crate (rdkafka-sys, features ssl and zstd):
# a C compiler, make, perl (its configure script), OpenSSL's headers and zlib's.
build_deps_install() {
  local pkgs=()
  command -v cc >/dev/null || pkgs+=(gcc)
  command -v c++ >/dev/null || pkgs+=(g++)
  command -v make >/dev/null || pkgs+=(make)
  command -v perl >/dev/null || pkgs+=(perl)
  command -v pkg-config >/dev/null || pkgs+=(pkg-config)
  [[ -f /usr/include/openssl/ssl.h ]] || pkgs+=(libssl-dev)
  [[ -f /usr/include/zlib.h ]] || pkgs+=(zlib1g-dev)
  if ((${#pkgs[@]} == 0)); then say "build: librdkafka's build dependencies present"; return 0; fi
  apt_install --no-install-recommends "${pkgs[@]}"
}

tools_install() {
  build_deps_install
  venv_install
  local pkgs=()
  command -v prometheus >/dev/null || pkgs+=(prometheus)
  if ((${#pkgs[@]} == 0)); then say "tools: prometheus present"; return 0; fi
  apt_install --no-install-recommends "${pkgs[@]}"
  # On a host with systemd the package starts a system prometheus on :9090; ours runs on its own.
  if [[ ${pkgs[0]} == prometheus && -d /run/systemd/system ]] \
    && systemctl is-active --quiet prometheus 2>/dev/null; then
    say "tools: stopping and disabling the system prometheus service the package started"
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- main

lock() {  # serialise concurrent up/down runs (fd 9 is closed for every started daemon)
  mkdir -p "$stack_dir"
  command -v flock >/dev/null || return 0
  exec 9>"$stack_dir/lock"
  flock -n 9 && return 0
  say "stack: another stack.sh run holds $stack_dir/lock; waiting"
  flock -w 3600 9 || die "stack: timed out waiting for $stack_dir/lock"
}

status() {
  local down=0 pid
  if ! pg_ready; then say "postgres: down ($pg_host:$pg_port)"; down=1
  elif ! pg_db_exists; then say "postgres: up ($pg_host:$pg_port) but database $pg_db missing"; down=1
  else say "postgres: up ($pg_host:$pg_port, database $pg_db)"; fi
  if redis_ready; then say "redis: up (127.0.0.1:$redis_port)"
  else say "redis: down (127.0.0.1:$redis_port)"; down=1; fi
  if kafka_ready; then
    if pid="$(tansu_pid)"; then say "kafka: up (127.0.0.1:$kafka_port, tansu pid $pid)"
    else say "kafka: up (127.0.0.1:$kafka_port, not started by stack.sh)"; fi
  else say "kafka: down (127.0.0.1:$kafka_port)"; down=1; fi
  return "$down"
}

usage() { sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

case "${1:-}" in
  up)
    lock
    pg_up
    pg_tune
    redis_up
    # On a fresh machine the tools (apt, pip) install while Tansu compiles.
    tools_install &
    tools=$!
    kafka_up
    wait "$tools" || die "tools: install failed (output above)"
    ;;
  tools)
    lock
    tools_install
    ;;
  build-deps)
    lock
    build_deps_install
    ;;
  pg-defaults)
    lock
    pg_defaults
    ;;
  down)
    [[ -z ${2:-} || ${2:-} == --all ]] || { usage >&2; exit 2; }
    lock
    tansu_stop
    if [[ ${2:-} == --all ]]; then
      redis_down
      pg_down
    fi
    ;;
  status) status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
