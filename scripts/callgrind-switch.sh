#!/bin/bash
# Instructions `ustack switch` spends forwarding one `ustack perf -c -n BYTES`
# run between two stacks on virtio-user ports, counted by callgrind (stable
# on a noisy machine, unlike wall-clock figures). No root needed.
#
#   scripts/callgrind-switch.sh [USTACK_BINARY] [BYTES]
#
# Defaults: target/release/ustack, 33554432 (32 MiB). Needs valgrind.
set -euo pipefail
BIN=${1:-target/release/ustack}
BYTES=${2:-33554432}
D=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$BIN" switch --control "$D/ctl" \
    --port "vhost-user:$D/a" --port "vhost-user:$D/b" >"$D/switch.log" 2>&1 &
SW=$!
pids+=("$SW")
for _ in $(seq 1 300); do [ -S "$D/a" ] && [ -S "$D/b" ] && break; sleep 0.1; done
[ -S "$D/a" ] && [ -S "$D/b" ] || { cat "$D/switch.log"; echo "callgrind-switch: the switch did not start" >&2; exit 1; }
"$BIN" perf -s -1 --device "virtio-user:$D/a" --ip 10.66.0.1/24 >"$D/server.log" 2>&1 &
pids+=("$!")
sleep 1
timeout 300 "$BIN" perf -c 10.66.0.1 -n "$BYTES" --device "virtio-user:$D/b" --ip 10.66.0.2/24 --timeout 200 >"$D/client.log" 2>&1 \
    || { cat "$D/client.log"; echo "callgrind-switch: the perf client failed" >&2; exit 1; }
kill -INT "$SW"
wait "$SW" || true
total=$(callgrind_annotate "$D/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "switch instructions for $BYTES bytes: $total ($(awk -v t="$total" -v b="$BYTES" 'BEGIN { printf "%.2f", t / b }') per byte)"
