#!/usr/bin/env bash
# `make test`: brings up the local stack while the tests build, then runs the API contract check
# and every test of the workspace (the developer tools' own unit tests too).
#
# On a fresh machine `scripts/stack.sh up` builds the broker (Tansu) from source, and the tests'
# first build takes a few minutes more; each leaves cores idle at times (a crate that compiles
# alone, a link), so the two run side by side, and the test tools (apt, pip) download meanwhile.
# librdkafka's build dependencies (apt) come first, since the tests' build needs them. Each phase
# prints the seconds since the start.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

phase() { printf 'test.sh: %s at %d s\n' "$*" "$SECONDS"; }

scripts/stack.sh build-deps
mkdir -p target
stack_log="target/stack-up.log"
venv_log="target/api-check-install.log"
scripts/stack.sh up >"$stack_log" 2>&1 &
stack=$!
scripts/api-check.sh install >"$venv_log" 2>&1 &
venv=$!
phase "building the tests"
built=0
cargo test --locked --workspace --features warehouse-monitor/faults --no-run || built=$?
phase "tests built (status $built); waiting for the stack"
stack_ok=0
wait "$stack" || stack_ok=$?
cat "$stack_log"
venv_ok=0
wait "$venv" || venv_ok=$?
cat "$venv_log"
phase "stack up (status $stack_ok)"
if ((stack_ok != 0)); then
  echo "test.sh: the stack did not come up (log above: $stack_log)" >&2
  exit "$stack_ok"
fi
((built == 0)) || exit "$built"
((venv_ok == 0)) || { echo "test.sh: schemathesis did not install (log above: $venv_log)" >&2; exit "$venv_ok"; }

# The service binary the tests' build just made: `cargo build` alone would build it again, since
# the test build's dependencies carry the dev-dependencies' features.
service="$repo/target/debug/warehouse-monitor"
if [[ -x $service ]]; then WM_API_CHECK_BINARY="$service" scripts/api-check.sh; else scripts/api-check.sh; fi
phase "API contract checked"
cargo test --locked --workspace --features warehouse-monitor/faults
phase "tests passed"
