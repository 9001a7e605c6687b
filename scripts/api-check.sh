#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document, checked by a client we did not
# write: schemathesis (PyPI, in a virtualenv under target/) with every check,
# against the service running on the local stack with a fresh database and topic.
#
#   scripts/api-check.sh            build the service (debug), run it, exit 1 on any failure
#   scripts/api-check.sh install    only install schemathesis (make test does it while it builds)
#
# Overrides: WM_API_CHECK_BINARY (the service binary), WM_API_CHECK_EXAMPLES
# (schemathesis --max-examples, default 50).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

venv="$repo/target/api-check-venv"
schemathesis_version="4.32.5"
binary="${WM_API_CHECK_BINARY:-$repo/target/debug/warehouse-monitor}"
examples="${WM_API_CHECK_EXAMPLES:-50}"

say() { printf 'api-check: %s\n' "$*"; }

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  say "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$schemathesis_version" </dev/null
fi
[[ ${1:-} == install ]] && exit 0
if [[ -z ${WM_API_CHECK_BINARY:-} ]]; then
  # Up to date with the sources (a no-op when it is), with the features make test builds with.
  cargo build --locked --features faults --bin warehouse-monitor
fi
# The service reads every WM_* variable as a setting and refuses unknown ones.
unset WM_API_CHECK_BINARY WM_API_CHECK_EXAMPLES

id="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$repo/target/api-check-service.log"
database="wm_api_check_$id"
WM_HTTP__ADDR="127.0.0.1:$port" \
  WM_KAFKA__TOPIC="wm-api-check-$id" \
  WM_POSTGRES__URL="postgres://postgres@127.0.0.1:5432/$database" \
  RUST_LOG=warn "$binary" serve >"$log" 2>&1 &
service=$!
cleanup() {
  kill "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  psql -w -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# GET /health/live over bash's /dev/tcp (no curl needed): true on a 200.
live() {
  local status
  exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
  printf 'GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 2 status <&3 || true
  exec 3>&-
  [[ $status == *" 200 "* ]]
}

for _ in $(seq 1 120); do
  if live; then break; fi
  kill -0 "$service" 2>/dev/null || { say "the service exited; see $log"; exit 1; }
  sleep 0.5
done
say "service up on 127.0.0.1:$port; running schemathesis with every check"
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" --checks all \
  --max-examples "$examples" --no-color
