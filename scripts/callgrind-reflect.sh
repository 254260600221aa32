#!/bin/bash
# Instructions `ustack switch --reflect` spends per frame reflected to
# dpdk-testpmd (virtio-user, flowgen) for SECONDS, counted by callgrind: the
# switch's whole run (start-up and idle looks included) over the frames it
# sent back. Stable to a few percent on a noisy machine, unlike Mpps.
#
#   scripts/callgrind-reflect.sh [USTACK_BINARY] [FRAME_BYTES] [SECONDS]
#
# Defaults: target/release/ustack, 64, 4. Needs valgrind and dpdk-testpmd
# (scripts/packages.d); testpmd runs without hugepages.
set -euo pipefail
BIN=${1:-target/release/ustack}
SIZE=${2:-64}
SECS=${3:-4}
D=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$BIN" switch --reflect \
    --port "vhost-user:$D/s" >"$D/switch.log" 2>&1 &
SW=$!
pids+=("$SW")
for _ in $(seq 1 300); do [ -S "$D/s" ] && break; sleep 0.1; done
[ -S "$D/s" ] || { cat "$D/switch.log"; echo "callgrind-reflect: the switch did not start" >&2; exit 1; }
(echo start; sleep "$SECS"; echo stop; echo quit) | timeout $((SECS + 60)) dpdk-testpmd -l 0-1 --no-huge -m 512 \
    --no-pci --file-prefix "cgrefl$$" --vdev "net_virtio_user0,mac=02:00:00:00:00:01,path=$D/s,queues=1" -- \
    --no-numa --total-num-mbufs=16384 --forward-mode=flowgen --txpkts="$SIZE" -i >"$D/gen.log" 2>&1 \
    || { tail -20 "$D/gen.log"; echo "callgrind-reflect: testpmd failed" >&2; exit 1; }
kill -INT "$SW"
wait "$SW" || true
total=$(callgrind_annotate "$D/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
frames=$(grep -o 'tx_frames [0-9]*' "$D/switch.log" | head -1 | awk '{ print $2 }')
[ "${frames:-0}" -gt 0 ] || { cat "$D/switch.log"; echo "callgrind-reflect: nothing was reflected" >&2; exit 1; }
echo "reflected $frames frames of $SIZE bytes: $total instructions ($((total / frames)) per frame)"
