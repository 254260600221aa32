#!/usr/bin/env bash
# Unmodified programs, Linux's stack versus libustack_preload.so, in one run,
# with the same binaries over one veth pair between two namespaces (as root):
#   Linux <-> Linux          kernel server in A, kernel client in Z (addresses
#                            on the veth, offloads as veth has them);
#   library <-> library      server and client each under the library, each
#                            its own stack on af_packet on its end of the veth
#                            (A's kernel holds no address);
#   Linux -> library         the kernel client in Z against the server under
#                            the library (where the client under the library
#                            fails, this is the comparison that remains).
# Workloads: iperf3 (bulk TCP, client sends), redis-benchmark -q (50
# connections; ping_inline, ping_mbulk, set, get, one run each) against
# redis-server, and wrk -t 2 -c 100 against nginx (master_process off, one
# process, a 27-byte static file) with keep-alive and with
# `-H 'Connection: close'`. Each cell: the figure, its ratio to Linux <->
# Linux, and the server process's CPU time (utime+stime from /proc, all its
# threads, the library's stack thread included) per operation.
#
#   cargo build --release -p ustack-preload && sudo bash scripts/bench-preload.sh [SECONDS] [REDIS_N]
#
# WORKLOADS="iperf3 redis wrk" (the default) picks what runs; LIB=path.so
# measures another build of the library; DEV=af_xdp puts the library's
# stacks on AF_XDP sockets (generic XDP, `mode=skb`, on the veth) instead of
# AF_PACKET. XDP carries no checksum metadata, and a kernel sender on a veth
# leaves its TCP/UDP checksums partial (CHECKSUM_PARTIAL), which the stack
# drops as corrupt (its drop_tcp_checksum counter): with DEV=af_xdp, Z's
# kernel completes its checksums (`ethtool -K tx off`, which also turns TSO
# off) for the runs after Linux <-> Linux; Linux <-> Linux keeps veth's
# offloads. NGINX_EXTRA adds directives to nginx's http block on both
# sides (e.g. 'open_file_cache max=64;', which spares the open, fstat and
# close of the file per request). PIN=S,C runs the servers on CPU S and
# the clients on CPU C, both sides alike.
#
# Prints a markdown table on stdout; progress and failures on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=${LIB:-$PWD/target/release/libustack_preload.so}
T=${1:-3}
N=${2:-100000}
[ "$(id -u)" = 0 ] || { echo "bench-preload: run as root (namespaces, veth)" >&2; exit 2; }
[ -f "$LIB" ] || { echo "bench-preload: no $LIB: run cargo build --release -p ustack-preload first" >&2; exit 2; }
for p in iperf3 redis-server redis-benchmark redis-cli nginx wrk curl; do
  command -v "$p" >/dev/null || { echo "bench-preload: $p is not installed" >&2; exit 2; }
done

A=ustpl-a-$$ Z=ustpl-z-$$
IA=pla$$ IZ=plz$$
NET=10.89.$(($$ % 200 + 20))
KA=$NET.2 KZ=$NET.1 # the kernels' addresses
LA=$NET.12 LZ=$NET.13 # the stacks' addresses
# setup(): namespaces A and Z, veth IA <-> IZ up, kernel IPv6 off; its trap
# deletes the namespaces until ours below replaces it.
. scripts/bench-veth-lib.sh
setup
TMP=$(mktemp -d /tmp/ustpl.XXXXXX)
HZ=$(getconf CLK_TCK)
SERVER=

stop_server() {
  [ -n "$SERVER" ] || return 0
  kill -TERM "$SERVER" 2>/dev/null || true
  # The library waits up to 5 s at exit for its FINs to be acknowledged.
  for _ in $(seq 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}
cleanup() {
  stop_server
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$Z" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip -n "$A" addr add "$KA/24" dev "$IA"
ip -n "$Z" addr add "$KZ/24" dev "$IZ"

# Runners (split into words where used): the kernel in a namespace, or the
# library in a namespace on af_packet on its veth end with its own address.
case $LIB$TMP in *[[:space:]]*) echo "bench-preload: no spaces in $LIB or $TMP, please" >&2; exit 2;; esac
K_A="ip netns exec $A" K_Z="ip netns exec $Z"
if [ -n "${PIN:-}" ]; then
  # PIN=S,C: every server (Linux's and the library's, with its stack
  # thread) on CPU S, every client on CPU C.
  IFS=, read -r PIN_S PIN_C <<<"$PIN"
  [[ $PIN_S =~ ^[0-9]+$ && $PIN_C =~ ^[0-9]+$ ]] || { echo "bench-preload: PIN=$PIN: expected two CPU numbers, like PIN=1,0" >&2; exit 2; }
  K_A="$K_A taskset -c $PIN_S" K_Z="$K_Z taskset -c $PIN_C"
fi
case ${DEV:=af_packet} in
  af_packet) OPTS=;;
  af_xdp) OPTS=,mode=skb
    command -v ethtool >/dev/null || { echo "bench-preload: DEV=af_xdp needs ethtool (the kernel peer's checksums)" >&2; exit 2; };;
  *) echo "bench-preload: DEV=$DEV: use af_packet or af_xdp" >&2; exit 2;;
esac
L_A="$K_A env LD_PRELOAD=$LIB USTACK_DEVICE=$DEV:$IA$OPTS USTACK_IP=$LA/24"
L_Z="$K_Z env LD_PRELOAD=$LIB USTACK_DEVICE=$DEV:$IZ$OPTS USTACK_IP=$LZ/24"
# Server CPU time in seconds (all threads). `ip netns exec` and `env` exec,
# so $! is the server itself.
cpu() { sed 's/.*) //' "/proc/$SERVER/stat" | awk -v hz="$HZ" '{ printf "%.2f", ($12 + $13) / hz }'; }
start_server() { # name, runner..., program...
  local name=$1; shift
  # Each stack picks a fresh random MAC (and announces it with gratuitous
  # ARPs); forget the previous server's MAC for the same address anyway, so
  # no run depends on when the announcement lands.
  ip -n "$Z" neigh flush dev "$IZ"; ip -n "$A" neigh flush dev "$IA"
  "$@" >"$TMP/$name.log" 2>&1 &
  SERVER=$!
}
server_dead() { kill -0 "$SERVER" 2>/dev/null && return 1; echo "bench-preload: $1 exited: $(tail -5 "$TMP/$1.log")" >&2; }
fail() { echo "bench-preload: $1 failed: $(printf '%s' "$2" | tr '\r' '\n' | tail -5)" >&2; }

declare -A R # R[workload,config] = "figure|cpu per op"

# ---- iperf3 ----------------------------------------------------------------
iperf() { # config, server runner, server address, client runner
  local cfg=$1 srun=$2 sip=$3 crun=$4 out c0 c1
  start_server "iperf3-$cfg" $srun iperf3 -s -4 --forceflush
  for _ in $(seq 100); do grep -q "Server listening" "$TMP/iperf3-$cfg.log" && break; server_dead "iperf3-$cfg" && { stop_server; return; }; sleep 0.1; done
  c0=$(cpu)
  if out=$(timeout $((T + 30)) $crun iperf3 -c "$sip" -t "$T" -J --connect-timeout 5000 2>&1); then
    c1=$(cpu)
    R[iperf3,$cfg]=$(printf '%s' "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)["end"]["sum_received"]; cpu = float(sys.argv[1])
print("%.2f|%.0f" % (r["bits_per_second"] / 1e9, cpu / (r["bytes"] / 1024) * 1e9))' "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')") || fail "iperf3 $cfg" "$out"
  else fail "iperf3 $cfg" "$out"; fi
  stop_server
}

# ---- redis -----------------------------------------------------------------
redis() { # config, server runner, server address, client runner
  local cfg=$1 srun=$2 sip=$3 crun=$4 out c0 c1 t
  start_server "redis-$cfg" $srun redis-server --bind 0.0.0.0 --port 6379 --save '' --appendonly no --protected-mode no --dir "$TMP"
  for _ in $(seq 100); do
    timeout 3 $K_Z redis-cli -h "$sip" ping 2>/dev/null | grep -q PONG && break
    server_dead "redis-$cfg" && { stop_server; return; }; sleep 0.2
  done
  for t in ping_inline ping_mbulk set get; do
    c0=$(cpu)
    if out=$(timeout 180 $crun redis-benchmark -h "$sip" -q -n "$N" -t "$t" 2>&1) && rps=$(printf '%s' "$out" | tr '\r' '\n' | grep 'requests per second' | tail -1 | sed 's/.*: \([0-9.]*\) requests per second.*/\1/') && [ -n "$rps" ]; then
      c1=$(cpu)
      R[redis-$t,$cfg]=$(awk -v r="$rps" -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN { printf "%.0f|%.1f", r, (b - a) * 1e6 / n }')
    else fail "redis-benchmark -t $t $cfg" "$out"; fi
  done
  stop_server
}

# ---- nginx + wrk -------------------------------------------------------------
mkdir -p "$TMP/html"
printf 'hello from nginx on ustack\n' >"$TMP/html/small"
cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/error.log warn;
pid $TMP/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  ${NGINX_EXTRA:-}
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  server { listen 8081; root $TMP/html; }
}
EOF
nginx_wrk() { # config, server runner, server address, client runner
  local cfg=$1 srun=$2 sip=$3 crun=$4 out c0 c1 mode hdr n rps
  start_server "nginx-$cfg" $srun nginx -c "$TMP/nginx.conf" -p "$TMP"
  timeout 30 $K_Z curl -sS --fail --max-time 2 --retry 20 --retry-connrefused --retry-delay 1 -o /dev/null "http://$sip:8081/small" \
    || { server_dead "nginx-$cfg" || echo "bench-preload: nginx $cfg never answered" >&2; stop_server; return; }
  for mode in keepalive close; do
    hdr=(); [ "$mode" = close ] && hdr=(-H 'Connection: close')
    c0=$(cpu)
    if out=$(timeout $((T + 30)) $crun wrk -t 2 -c 100 -d "$T" --timeout 5 "${hdr[@]}" "http://$sip:8081/small" 2>&1); then
      c1=$(cpu)
      n=$(printf '%s' "$out" | sed -n 's/^ *\([0-9]*\) requests in .*/\1/p')
      rps=$(printf '%s' "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
      if [ -n "$n" ] && [ "$n" -gt 0 ] && [ -n "$rps" ]; then
        R[wrk-$mode,$cfg]=$(awk -v r="$rps" -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.0f|%.1f", r, (b - a) * 1e6 / n }')
        if printf '%s' "$out" | grep -qE 'Socket errors|Non-2xx'; then
          R[wrk-$mode,$cfg]+="|$(printf '%s' "$out" | grep -E 'Socket errors|Non-2xx' | tr -s ' ' | tr '\n' ';')"
        fi
      else fail "wrk $mode $cfg" "$out"; fi
    else fail "wrk $mode $cfg" "$out"; fi
  done
  stop_server
}

# ---- the run -----------------------------------------------------------------
WORKLOADS=${WORKLOADS:-iperf3 redis wrk}
each() { # config, server runner, server address, client runner
  case " $WORKLOADS " in *" iperf3 "*) iperf "$@";; esac
  case " $WORKLOADS " in *" redis "*) redis "$@";; esac
  case " $WORKLOADS " in *" wrk "*) nginx_wrk "$@";; esac
}
echo "bench-preload: Linux <-> Linux" >&2
each linux "$K_A" "$KA" "$K_Z"
# From here on A's kernel holds no address: only the library answers there.
ip -n "$A" addr flush dev "$IA"
if [ "$DEV" = af_xdp ]; then
  # Z's kernel talks to the library's stacks from here on (the kernel
  # clients, the readiness probes): full checksums, no TSO (see the top).
  ip netns exec "$Z" ethtool -K "$IZ" tx off >/dev/null
fi
echo "bench-preload: library <-> library" >&2
each lib "$L_A" "$LA" "$L_Z"
echo "bench-preload: Linux client -> library server" >&2
each mixed "$L_A" "$LA" "$K_Z"

cell() { # workload, config, unit, cpu unit
  local v=${R[$1,$2]:-} base=${R[$1,linux]:-} ratio=""
  [ -n "$v" ] || { printf 'did not run'; return; }
  IFS='|' read -r fig c err <<<"$v"
  [ "$2" = linux ] || [ -z "$base" ] || ratio=$(awk -v a="${fig}" -v b="${base%%|*}" 'BEGIN { if (b > 0) printf " (%.2f×)", a / b }')
  printf '%s %s%s, %s %s' "$(printf '%s' "$fig" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" "$3" "$ratio" "$c" "$4"
  [ -z "${err:-}" ] || printf ', %s' "$err"
}
echo "| workload | Linux ↔ Linux | library ↔ library | Linux client → library server |"
echo "|---|---|---|---|"
row() { # label, workload, unit, cpu unit
  [ -n "${R[$2,linux]:-}${R[$2,lib]:-}${R[$2,mixed]:-}" ] || case " $WORKLOADS " in *" ${2%%-*} "*) ;; *) return 0;; esac
  printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$2" linux "$3" "$4")" "$(cell "$2" lib "$3" "$4")" "$(cell "$2" mixed "$3" "$4")"
}
row "iperf3, one TCP stream" iperf3 "Gbit/s" "ns server CPU/KiB"
for t in ping_inline ping_mbulk set get; do
  row "redis-benchmark -t $t -n $N" "redis-$t" "req/s" "µs server CPU/req"
done
row "wrk -t 2 -c 100 nginx, keep-alive" wrk-keepalive "req/s" "µs server CPU/req"
row "wrk -t 2 -c 100 nginx, Connection: close" wrk-close "req/s" "µs server CPU/req"
