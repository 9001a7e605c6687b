#!/usr/bin/env bash
# What one idle instance costs while it holds many partitions: threads, file descriptors, TCP
# connections to the broker, and CPU over a window, read from /proc. Each run gets a fresh topic
# of N partitions and a fresh database on the local stack (`scripts/stack.sh up`).
#
#   scripts/footprint.sh [--binary PATH] [--seconds S] N [N...]
#
# Prints one line per N. Compare two builds by running it once with each `--binary`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="$repo/target/release/warehouse-monitor"
seconds=30
counts=()
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) counts+=("$1"); shift ;;
  esac
done
((${#counts[@]})) || counts=(64 256)
broker_port=9092
ticks=$(getconf CLK_TCK)

# Established TCP connections of pid $1 to port $2.
connections() {
  local pid=$1 port inodes
  port=$(printf '%04X' "$2")
  inodes=$(find "/proc/$pid/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n' | sort -u)
  awk -v port="$port" 'FNR > 1 && $4 == "01" { split($3, a, ":"); if (a[2] == port) print $10 }' \
    "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" | sort -u | comm -12 - <(echo "$inodes") | wc -l
}

# utime + stime of pid $1, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

for n in "${counts[@]}"; do
  id="fp$(date +%s%N | tail -c 9)"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$(mktemp /tmp/wm-footprint-XXXX.log)"
  WM_KAFKA__TOPIC="wm-footprint-$id" WM_KAFKA__PARTITIONS="$n" \
    WM_POSTGRES__URL="postgres://postgres@127.0.0.1:5432/wm_footprint_$id" \
    WM_HTTP__ADDR="127.0.0.1:$port" RUST_LOG=warn \
    "$binary" --config-dir "$repo/config" serve >"$log" 2>&1 &
  pid=$!
  held=0
  for _ in $(seq 1 240); do
    held=$(curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null |
      awk '/^wm_consumer_partitions_owned/ { print $NF }' | head -1 || true)
    [[ ${held:-0} == "$n" ]] && break
    sleep 0.5
  done
  if [[ ${held:-0} != "$n" ]]; then
    echo "footprint: $n partitions: only ${held:-0} held after 120 s (log: $log)" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 5 # every fetcher started
  before=$(cpu_ticks "$pid")
  sleep "$seconds"
  after=$(cpu_ticks "$pid")
  threads=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l)
  fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  conns=$(connections "$pid" "$broker_port")
  cpu=$(awk -v d=$((after - before)) -v t="$ticks" -v s="$seconds" 'BEGIN { printf "%.1f", 100 * d / t / s }')
  echo "footprint: $n partitions held, idle: $threads threads, $fds file descriptors, $conns connections to the broker, $cpu% of one core over ${seconds} s ($(basename "$binary"))"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS wm_footprint_$id" >/dev/null 2>&1 || true
  rm -f "$log"
done
