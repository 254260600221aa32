#!/usr/bin/env bash
# Bulk TCP over one veth pair between two namespaces, in one run (as root):
#   Linux iperf3 <-> iperf3 with the veth's offloads on, then off;
#   Linux iperf3 -c -> ustack perf -s on af_xdp (and -R), generic and native XDP;
#   ustack perf -c <-> ustack perf -s, both on af_xdp, generic and native XDP.
# Prints Gbit/s, the sender's retransmissions and the CPU time both ends spent
# per KiB (iperf3's cpu_utilization_percent x seconds / KiB).
#
#   cargo build --release -p ustack && sudo bash scripts/bench-af-xdp.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${USTACK:-target/release/ustack}
T=${1:-5}
A=ustbx-a-$$ Z=ustbx-z-$$
IA=bxa IZ=bxz
. scripts/bench-veth-lib.sh

linux() { # offloads on|off
  setup
  ip -n "$A" addr add 10.88.0.2/24 dev bxa; ip -n "$Z" addr add 10.88.0.1/24 dev bxz
  for e in "$A bxa" "$Z bxz"; do set -- $e; ip netns exec "$1" ethtool -K "$2" tx "$off" tso "$off" gso "$off" gro "$off" >/dev/null 2>&1 || true; done
  ip netns exec "$A" iperf3 -s -1 >/dev/null 2>&1 &
  sleep 0.5
  printf '%-52s' "Linux <-> Linux, offloads $off"
  ip netns exec "$Z" iperf3 -c 10.88.0.2 -t "$T" -J | report
  wait
}

kernel_client() { # mode, extra iperf3 flags
  setup
  ip -n "$Z" addr add 10.88.0.1/24 dev bxz
  ip netns exec "$Z" ethtool -K bxz tx off >/dev/null
  ip netns exec "$A" "$B" perf -s -1 --device "af_xdp:bxa,mode=$1" --ip 10.88.0.2/24 >/dev/null 2>&1 &
  sleep 0.7
  printf '%-52s' "iperf3 -c $2 -> ustack perf -s, af_xdp mode=$1"
  ip netns exec "$Z" iperf3 -c 10.88.0.2 -t "$T" -J $2 | report
  wait
}

ustack_pair() { # mode
  setup
  ip netns exec "$A" "$B" perf -s -1 --device "af_xdp:bxa,mode=$1" --ip 10.88.0.2/24 >/dev/null 2>&1 &
  sleep 0.7
  printf '%-52s' "ustack perf -c -> ustack perf -s, af_xdp mode=$1"
  ip netns exec "$Z" "$B" perf -c 10.88.0.2 -t "$T" -J --device "af_xdp:bxz,mode=$1" --ip 10.88.0.1/24 2>/dev/null | report
  wait
}

off=on linux; off=off linux
for m in skb drv; do
  kernel_client "$m" ""
  kernel_client "$m" "-R"
  ustack_pair "$m"
done
