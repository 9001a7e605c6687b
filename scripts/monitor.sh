#!/usr/bin/env bash
# Local Prometheus (Debian's package) scraping the local service, so that the
# committed scrape configuration (observability/prometheus.yml) runs for real
# outside compose. It never touches a system prometheus service: own config,
# storage, pid and log under .stack/, listening on loopback only.
#
#   scripts/monitor.sh [up]   install prometheus if missing, start it (http://127.0.0.1:9090)
#   scripts/monitor.sh down   stop it
#   scripts/monitor.sh status exit 1 if it is not running
#
# Overrides: WM_MONITOR_PORT (9090), WM_MONITOR_TARGET (the service, 127.0.0.1:8080).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/.stack/prometheus"
pid_file="$repo/.stack/prometheus.pid"
log="$repo/.stack/prometheus.log"
port="${WM_MONITOR_PORT:-9090}"
target="${WM_MONITOR_TARGET:-127.0.0.1:8080}"

say() { printf 'monitor: %s\n' "$*"; }
die() { printf 'monitor.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# GET http://127.0.0.1:$port$1 over bash's /dev/tcp (no curl needed); true on a 200 answer.
http_ok() {
  local status
  # shellcheck disable=SC2016
  status="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" &&
    printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$1" >&3 && head -n 1 <&3' \
    "$port" "$1" 2>/dev/null)" || return 1
  [[ $status == *" 200 "* ]]
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; }

# Prints the pid of the prometheus we started, if it is still alive.
our_pid() {
  local pid
  [[ -f $pid_file ]] && pid="$(<"$pid_file")" && [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *prometheus*"$dir"* ]] && printf '%s' "$pid"
}

up() {
  local pid bin i
  if pid="$(our_pid)"; then say "already running (pid $pid) on http://127.0.0.1:$port"; return 0; fi
  bin="$(command -v prometheus || true)"
  if [[ -z $bin ]]; then
    "$repo/scripts/stack.sh" tools
    bin="$(command -v prometheus)" || die "prometheus still not on PATH after installing it"
  fi
  port_open && die "127.0.0.1:$port is taken (a system prometheus? stop it, or set WM_MONITOR_PORT)"
  mkdir -p "$dir/data"
  # The compose targets swapped for the local service; everything else as committed.
  sed -E "s/^( *- targets: ).*/\1[\"$target\"]/" "$repo/observability/prometheus.yml" >"$dir/prometheus.yml"
  grep -q "\"$target\"" "$dir/prometheus.yml" || die "observability/prometheus.yml lost its one-line '- targets:' list"
  cp "$repo/observability/alerts.yml" "$dir/alerts.yml" # rule_files is relative to the config
  [[ -f $log ]] && mv -f "$log" "$log.prev"
  # nohup: outlives the make/shell that started it (exec'd, so $! is prometheus itself);
  # fd 9 (stack.sh's lock) is not inherited.
  nohup "$bin" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=7d --web.listen-address="127.0.0.1:$port" \
    </dev/null >"$log" 2>&1 9>&- &
  echo $! >"$pid_file"
  for ((i = 0; i < 60; i++)); do
    http_ok /-/ready && break
    our_pid >/dev/null || { tail -n 20 "$log" >&2; die "prometheus exited (log: $log)"; }
    sleep 0.5
  done
  http_ok /-/ready || die "prometheus not ready after 30s (log: $log)"
  say "prometheus up on http://127.0.0.1:$port (pid $(our_pid)), scraping http://$target/metrics"
  say "targets: http://127.0.0.1:$port/targets  log: .stack/prometheus.log"
}

down() {
  local pid i
  if ! pid="$(our_pid)"; then rm -f "$pid_file"; say "not running"; return 0; fi
  kill -TERM "$pid"
  for ((i = 0; i < 30; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pid_file"
  say "stopped prometheus pid $pid"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status)
    if pid="$(our_pid)"; then say "up (pid $pid, http://127.0.0.1:$port)"; else say "down"; exit 1; fi ;;
  *) sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
