#!/usr/bin/env bash
# `make bench-redis-faults`: the ingest rate while Redis misbehaves, against the rate with Redis
# up, in one run. Redis is only an accelerator: whatever it answers, a batch should cost no more
# than with nothing listening. Each fault is a redis-server of this script's own on a free port:
#
#   down          nothing listening
#   readonly      a replica whose master is gone (every write: READONLY)
#   cluster-node  one master of a 3-master Redis Cluster behind a plain redis:// URL (MOVED, CROSSSLOT)
#   oom           maxmemory 4mb under noeviction, filled (fills: OOM)
#   hang          a server stopped with SIGSTOP (connections accepted, nothing answered)
#
# and one deployment, not a fault: `cluster`, the same 3-master cluster behind its
# redis-cluster:// URL, against the standalone server.
#
# LOADING is not here: a server holds it only while it reads its dump, too briefly for a run
# (tests/it/redis_refuses.rs holds it with a large dump, for correctness).
#
# Each fault's run follows a run with the local Redis up, and each run times the service from its
# start to its last commit, then PostgreSQL's ceiling (`wm-bench ingest`, one round): the ratio to
# the ceiling is what compares across runs on a machine whose speed drifts.
# Options: EVENTS (200000), BATCH (1000), PARTITIONS (3),
# FAULTS ("down readonly cluster-node oom hang cluster").
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
events="${EVENTS:-200000}"
batch="${BATCH:-1000}"
partitions="${PARTITIONS:-3}"
faults="${FAULTS:-down readonly cluster-node oom hang cluster}"
out="target/bench-redis-faults/$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d)"
mkdir -p "$out"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do
    kill -CONT "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A free port below 50000: a cluster node also listens on its port + 10000.
free_port() {
  python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    if port < 50000: print(port); break'
}

# server PORT [options...]: a redis-server without persistence; prints nothing, records its pid.
server() {
  local port=$1
  shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis-$port.log" "$@" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && return; sleep 0.05; done
  echo "bench-redis-faults: redis-server on $port did not start" >&2
  exit 1
}

# fault NAME: starts the fault; sets `url` to the URL the service is given.
fault() {
  local port
  port=$(free_port)
  case $1 in
    down) ;;
    readonly) server "$port" --replicaof 127.0.0.1 "$(free_port)" ;;
    cluster | cluster-node)
      local ports=("$port" "$(free_port)" "$(free_port)")
      for p in "${ports[@]}"; do
        server "$p" --cluster-enabled yes --cluster-config-file "$work/nodes-$p.conf"
      done
      redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
      until redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
      if [[ $1 == cluster ]]; then
        url="redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
        return
      fi
      ;;
    oom)
      server "$port" --maxmemory 4mb --maxmemory-policy noeviction --enable-debug-command yes
      redis-cli -p "$port" DEBUG POPULATE 200000 fill 64 >/dev/null
      ;;
    hang)
      server "$port"
      kill -STOP "${pids[-1]}"
      ;;
    *) echo "bench-redis-faults: unknown fault $1" >&2; exit 2 ;;
  esac
  url="redis://127.0.0.1:$port"
}

# run NAME URL: one `wm-bench ingest` round with the service on URL; appends its figures.
run() {
  local name=$1 url=$2 log="$out/$1.log"
  WM_REDIS__URL="$url" target/release/wm-bench ingest --service target/release/warehouse-monitor \
    --events "$events" --batch-sizes "$batch" --partitions "$partitions" --rounds 1 \
    --out "$out/runs" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  local median rate ratio
  median=$(grep 'median of' "$log" | head -1)
  rate=$(grep -oE 'rounds: [0-9]+ events/s' <<<"$median" | grep -oE '[0-9]+')
  ratio=$(grep -oE 'ratio [0-9]+%' <<<"$median" | grep -oE '[0-9]+%')
  printf '%-12s %-34.34s %8s events/s  %5s of the ceiling\n' "$name" "$url" "$rate" "$ratio" | tee -a "$out/summary.txt"
}

cargo build --release --locked -p warehouse-monitor -p wm-bench
scripts/stack.sh up >/dev/null
echo "bench-redis-faults: $events events, batches of $batch, $partitions partitions; $out" | tee "$out/summary.txt"
for name in $faults; do
  run "up" "redis://127.0.0.1:6379"
  fault "$name"
  run "$name" "$url"
done
