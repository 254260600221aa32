# Shared by the veth benchmarks (bench-af-xdp.sh, bench-af-packet.sh); sourced,
# not run. The caller sets A and Z (namespace names) and IA and IZ (the veth
# ends in them).

cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$Z" 2>/dev/null || true; }
trap cleanup EXIT

# A fresh pair: namespaces A and Z, veth IA (in A) <-> IZ (in Z), both up,
# kernel IPv6 off on both ends.
setup() {
  cleanup
  ip netns add "$A"; ip netns add "$Z"
  ip link add "$IA" netns "$A" type veth peer name "$IZ" netns "$Z"
  for e in "$A $IA" "$Z $IZ"; do
    set -- $e
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1"
    ip -n "$1" link set "$2" up
  done
}

# One line from an iperf3 -J document on stdin: Gbit/s, the sender's
# retransmissions, and the CPU time both ends spent per KiB received.
report() {
  python3 -c '
import json, sys
d = json.load(sys.stdin); e = d["end"]; r = e["sum_received"]; c = e.get("cpu_utilization_percent", {})
cpu = (c.get("host_total", 0) + c.get("remote_total", 0)) / 100 * r["seconds"]
print("%5.2f Gbit/s  retr %-5s  CPU %5.0f ns/KiB" % (r["bits_per_second"] / 1e9, e["sum_sent"].get("retransmits", "-"), cpu / (r["bytes"] / 1024) * 1e9))'
}
