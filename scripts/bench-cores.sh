#!/usr/bin/env bash
# ustack as N shards beside Linux with N SO_REUSEPORT server threads, at
# 1, 2, 4, 8 and 16 cores (those above the machine's count are left out),
# for crr, rr and stream, in one run per workload: each line is a core
# count's figures, ustack over Linux, each side's scaling from 1 core and
# its CPU per operation. Two tables per workload:
#   - in-memory: ustack's shards on the in-memory link, Linux on loopback;
#   - device (as root): ustack's shards on a multi-queue TAP, one queue
#     each, against N kernel clients, Linux's servers on a veth pair (each
#     side in private namespaces the bench makes and that vanish with it).
#
# Build here, run anywhere: `cargo build --release -p ustack`, copy
# target/release/ustack and this script to the larger machine, then
#   USTACK=./ustack SECONDS_PER_POINT=5 sudo -E bash bench-cores.sh
# Without root only the in-memory tables run (DEVICE=0 skips the device
# ones as root). Output: the tables, or with JSON=1 one JSON object per
# workload and path instead.
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
device=${DEVICE:-1}
if [ "$device" != 0 ] && [ "$(id -u)" != 0 ]; then
    echo "# the device tables need root (sudo -E bash $0); running the in-memory ones only" >&2
    device=0
fi
json=()
if [ "${JSON:-0}" = 1 ]; then json=(--json); fi
echo "# $(date -u +%FT%TZ) $(uname -r), $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
for w in crr rr stream; do
    "$ustack" bench "$w" --cores "$list" --seconds "$secs" "${json[@]}"
    if [ "$device" != 0 ]; then
        # The TAP lives in the bench's own namespace: the name is free here.
        "$ustack" bench "$w" --cores "$list" --seconds "$secs" --device tap:ubcores0 "${json[@]}"
    fi
done
echo "# done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
