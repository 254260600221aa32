#!/usr/bin/env bash
# ustack as N shards beside Linux with N SO_REUSEPORT server threads, at
# 1, 2, 4, 8 and 16 cores (those above the machine's count are left out),
# for crr, rr and stream, in one run per workload: each line is a core
# count's figures, ustack over Linux, and each side's scaling from 1 core.
#
# Build here, run anywhere: `cargo build --release -p ustack`, copy
# target/release/ustack and this script to the larger machine, then
#   USTACK=./ustack SECONDS_PER_POINT=5 bash bench-cores.sh
# No root needed (in-memory link and loopback). Output: the tables, and
# with JSON=1 one JSON object per workload instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ustack=${USTACK:-$here/../target/release/ustack}
secs=${SECONDS_PER_POINT:-3}
cpus=$(nproc)
counts=()
for n in 1 2 4 8 16; do
    if [ "$n" -le "$cpus" ]; then counts+=("$n"); fi
done
list=$(IFS=,; echo "${counts[*]}")
[ -x "$ustack" ] || { echo "bench-cores.sh: no ustack binary at $ustack (cargo build --release -p ustack, or set USTACK)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(uname -r), $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
for w in crr rr stream; do
    if [ "${JSON:-0}" = 1 ]; then
        "$ustack" bench "$w" --cores "$list" --seconds "$secs" --json
    else
        "$ustack" bench "$w" --cores "$list" --seconds "$secs"
    fi
done
