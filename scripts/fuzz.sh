#!/usr/bin/env bash
# Build the cargo-fuzz targets with libFuzzer on the stable toolchain (the
# same instrumentation cargo-fuzz uses, without needing nightly) and run each
# for the given number of seconds. With cargo-fuzz installed,
# `cargo fuzz run receive` works too.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts (as cargo-fuzz does).
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$triple"
# Where cargo put them: CARGO_TARGET_DIR when set (relative to fuzz/), else fuzz/target.
out="${CARGO_TARGET_DIR:-target}/$triple/release"
# Targets: those named after SECONDS, else every target.
targets="${*:2}"
if [ -z "$targets" ]; then
  targets="$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | tail -n +2)"
fi
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "-- fuzz target $target for ${seconds}s"
  "$out/$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" "corpus/$target"
done
