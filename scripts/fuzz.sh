#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders that read bytes from outside
# (tests/fuzz: cargo-fuzz and libFuzzer): each target runs for FUZZ_SECS
# seconds (600 by default), one after the other. `make fuzz` runs it; `make
# test` never does.
#
#   scripts/fuzz.sh [TARGET...]   every target of `cargo fuzz list` when none is named
#
# cargo-fuzz builds with the address sanitizer, a nightly-only rustc flag (-Z);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain, the only one the project's
# machines can install, accept it. Builds, logs and the inputs a run finds go
# to target/fuzz/ (not committed); the committed seeds in
# tests/fuzz/corpus/TARGET are read, never written. A crash or a mismatch is
# saved in tests/fuzz/artifacts/TARGET/ (not committed either: its input
# belongs in a unit test next to the decoder), and the script then fails after
# the remaining targets have run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
secs="${FUZZ_SECS:-600}"
fuzz_dir=tests/fuzz
out="$repo/target/fuzz"

say() { printf 'fuzz: %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# With the sanitizer on, cc-rs instruments the C code of the build too, and
# librdkafka's configure step then fails to link its test programs against
# that zstd. Only the Rust decoders are under test: the C is built plain.
export CFLAGS="${CFLAGS:+$CFLAGS }-fno-sanitize=address"
export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-fno-sanitize=address"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

failed=()
for target in "${targets[@]}"; do
  mkdir -p "$out/corpus/$target" "$out/logs"
  # One allocation over 64 MiB fails the run: no input may make a decoder
  # reserve what a declared length asks for. A single input running 30 s is
  # a hang.
  options=(-max_total_time="$secs" -timeout=30 -malloc_limit_mb=64 -print_final_stats=1)
  if [ -f "$fuzz_dir/$target.dict" ]; then
    options+=(-dict="$fuzz_dir/$target.dict")
  fi
  say "$target for ${secs}s (log: target/fuzz/logs/$target.log)"
  if ! cargo fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$out/build" "$target" \
    "$out/corpus/$target" "$fuzz_dir/corpus/$target" -- "${options[@]}" \
    2>&1 | tee "$out/logs/$target.log"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]} (inputs in $fuzz_dir/artifacts/)"
  exit 1
fi
say "no finding in: ${targets[*]}"
