#!/usr/bin/env bash
# `make test`: brings up the local stack while the tests build, then runs the API contract check
# and every test (the devtools' own unit tests too).
#
# On a fresh machine `scripts/stack.sh up` builds the broker (Tansu) from source, about 8 minutes
# on 2 cores, and the tests' first build takes about 3 more. Each leaves cores idle at times (a
# crate that compiles alone, a link), so the two run side by side. librdkafka's build
# dependencies (apt) come first, since the tests' build needs them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

scripts/stack.sh tools
mkdir -p target
stack_log="target/stack-up.log"
scripts/stack.sh up >"$stack_log" 2>&1 &
stack=$!
built=0
cargo test --locked --features devtools --no-run || built=$?
stack_ok=0
wait "$stack" || stack_ok=$?
cat "$stack_log"
if ((stack_ok != 0)); then
  echo "test.sh: the stack did not come up (log above: $stack_log)" >&2
  exit "$stack_ok"
fi
((built == 0)) || exit "$built"

scripts/api-check.sh
cargo test --locked --features devtools
