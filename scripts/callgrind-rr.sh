#!/usr/bin/env bash
# Instructions per TCP request/response round trip on the in-memory path,
# counted by callgrind: the deterministic figure the core's reshaping
# (issue 15) is held to (IPv4 rr within 3% of docs/reshape-baseline.md).
#
# Builds crates/core/examples/rr_count.rs in release (two stacks on the
# in-memory link, 64-byte request and response, simulated clock: the run is
# deterministic), runs it under callgrind with a small and a large round-trip
# count, and prints (Ir(large) - Ir(small)) / (large - small): setup,
# connection and teardown cancel out.
#
#   scripts/callgrind-rr.sh [--check] [SMALL] [LARGE]   (defaults 2000 and 12000)
#
# --check (run by scripts/test.sh in CI) also fails when the figure is more
# than 3% above the baseline before the reshaping, 12,805 at fbefddd
# (docs/reshape-baseline.md). The count moves with the compiler, so the
# baseline holds for the toolchain this machine and CI share (rustc 1.95);
# a toolchain change re-measures it and updates the table and BASELINE here.
#
# Needs valgrind (scripts/packages.d/reshape.txt). Honours CARGO_TARGET_DIR.
# Prints one line: `instructions per round trip: N (commit C, SMALL/LARGE round trips)`.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=12805
LIMIT_PERCENT=3
check=0
if [[ "${1:-}" == "--check" ]]; then
  check=1
  shift
fi
small="${1:-2000}"
large="${2:-12000}"
if ! [[ "$small" =~ ^[0-9]+$ && "$large" =~ ^[0-9]+$ ]] || (( large <= small )); then
  echo "callgrind-rr: SMALL and LARGE must be round-trip counts with LARGE > SMALL (got '$small' '$large')" >&2
  exit 2
fi
if ! command -v valgrind >/dev/null; then
  echo "callgrind-rr: valgrind is not installed; install it (apt-get install -y valgrind) and rerun" >&2
  exit 2
fi
cargo build --release --locked -q -p ustack-core --example rr_count
bin="${CARGO_TARGET_DIR:-target}/release/examples/rr_count"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Total instructions (Ir) of one run of N round trips.
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" "$bin" "$1" >"$out/log.$1" 2>&1 || {
    echo "callgrind-rr: rr_count $1 failed under valgrind:" >&2
    tail -n 20 "$out/log.$1" >&2
    exit 1
  }
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out/cg.$1"
}

a="$(instructions "$small")"
b="$(instructions "$large")"
if [[ -z "$a" || -z "$b" ]]; then
  echo "callgrind-rr: no 'summary:' line in callgrind's output (valgrind too old?)" >&2
  exit 1
fi
per=$(( (b - a) / (large - small) ))
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
git diff --quiet HEAD -- crates 2>/dev/null || dirty="+dirty"
echo "instructions per round trip: $per (commit $commit$dirty, $small/$large round trips, totals $a/$b)"
if (( check )); then
  limit=$(( BASELINE * (100 + LIMIT_PERCENT) / 100 ))
  if (( per > limit )); then
    echo "callgrind-rr: $per instructions per round trip is more than ${LIMIT_PERCENT}% above the baseline $BASELINE (limit $limit); see docs/reshape-baseline.md" >&2
    exit 1
  fi
  echo "callgrind-rr: within ${LIMIT_PERCENT}% of the baseline $BASELINE (limit $limit): ratio $(( per * 1000 / BASELINE ))/1000"
fi
