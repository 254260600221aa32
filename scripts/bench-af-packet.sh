#!/usr/bin/env bash
# Bulk TCP and ping over one veth pair between two namespaces, in one run (as root):
#   Linux iperf3 <-> iperf3 (veth offloads on: TSO/GRO, partial checksums);
#   Linux iperf3 -c -> ustack perf -s on af_packet (and -R);
#   ustack perf -c <-> ustack perf -s, both on af_packet;
#   with the defaults (ring=v2, tso=on), tso=off and ring=v3; then ping RTTs.
# Prints Gbit/s, the sender's retransmissions and the CPU time both ends spent
# per KiB (iperf3's cpu_utilization_percent x seconds / KiB).
#
#   cargo build --release -p ustack && sudo bash scripts/bench-af-packet.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${USTACK:-target/release/ustack}
T=${1:-5}
A=ustbp-a-$$ Z=ustbp-z-$$
IA=bpa IZ=bpz
. scripts/bench-veth-lib.sh

linux() {
  setup
  ip -n "$A" addr add 10.88.0.2/24 dev bpa; ip -n "$Z" addr add 10.88.0.1/24 dev bpz
  ip netns exec "$A" iperf3 -s -1 >/dev/null 2>&1 &
  sleep 0.5
  printf '%-56s' "Linux <-> Linux"
  ip netns exec "$Z" iperf3 -c 10.88.0.2 -t "$T" -J | report
  wait
  printf '%-56s' "  ping RTT, Linux"
  ip netns exec "$Z" ping -q -c 500 -i 0.002 10.88.0.2 | tail -1
}

kernel_client() { # device options, extra iperf3 flags
  setup
  ip -n "$Z" addr add 10.88.0.1/24 dev bpz
  ip netns exec "$A" "$B" perf -s -1 --device "af_packet:bpa$1" --ip 10.88.0.2/24 >/dev/null 2>&1 &
  sleep 0.7
  printf '%-56s' "iperf3 -c $2 -> ustack perf -s, af_packet:bpa$1"
  ip netns exec "$Z" iperf3 -c 10.88.0.2 -t "$T" -J $2 | report
  wait
}

ustack_pair() { # device options
  setup
  ip netns exec "$A" "$B" perf -s -1 --device "af_packet:bpa$1" --ip 10.88.0.2/24 >/dev/null 2>&1 &
  sleep 0.7
  printf '%-56s' "ustack perf -c -> ustack perf -s, af_packet$1"
  ip netns exec "$Z" "$B" perf -c 10.88.0.2 -t "$T" -J --device "af_packet:bpz$1" --ip 10.88.0.1/24 2>/dev/null | report
  wait
}

ping_ustack() { # device options
  setup
  ip -n "$Z" addr add 10.88.0.1/24 dev bpz
  ip netns exec "$A" "$B" up --device "af_packet:bpa$1" --ip 10.88.0.2/24 >/dev/null 2>&1 &
  local pid=$!
  sleep 0.7
  printf '%-56s' "  ping RTT, ustack af_packet$1"
  ip netns exec "$Z" ping -q -c 500 -i 0.002 10.88.0.2 | tail -1
  kill -INT "$pid"; wait
}

[ -n "${ONLY:-}" ] || linux
for o in ${OPTS:-"" ",tso=off" ",ring=v3"}; do
  kernel_client "$o" ""
  kernel_client "$o" "-R"
  ustack_pair "$o"
done
for o in ${PING_OPTS:-"" ",ring=v3"}; do ping_ustack "$o"; done
