#!/usr/bin/env bash
# The cost of one epoll_wait under the library that finds nothing and asks
# the kernel (timeout 0), for two maxevents: redis passes 10,128 (its
# maxclients plus 128), nginx 512. Each LIB given is measured in turn, on
# af_packet over a veth in a namespace of its own (as root):
#
#   sudo bash scripts/bench-epoll-wait.sh [LIB.so ...]   (default: the release build)
#
# Prints one line per library and maxevents: wall and CPU ns per call.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-epoll-wait: run as root (a namespace, a veth)" >&2; exit 2; }
LIBS=("$@")
[ ${#LIBS[@]} -gt 0 ] || LIBS=("$PWD/target/release/libustack_preload.so")
for l in "${LIBS[@]}"; do [ -f "$l" ] || { echo "bench-epoll-wait: no $l: cargo build --release -p ustack-preload" >&2; exit 2; }; done
D=$(mktemp -d) NS=ustack-epw-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
cat >"$D/epw.c" <<'C'
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
static double ns(struct timespec a, struct timespec b) { return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec); }
int main(int argc, char **argv) {
    int max = atoi(argv[1]), iters = atoi(argv[2]);
    /* One ustack listener with nothing pending: every call asks the kernel. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9999)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev)) { perror("epoll"); return 1; }
    struct epoll_event *evs = calloc(max, sizeof *evs);
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (int i = 0; i < iters; i++)
        epoll_wait(ep, evs, max, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    printf("maxevents %5d: %5.0f ns a call, %5.0f ns CPU\n", max, ns(t0, t1) / iters, ns(c0, c1) / iters);
    return 0;
}
C
cc -O2 -o "$D/epw" "$D/epw.c"
ip netns add "$NS"
ip -n "$NS" link add e0 type veth peer name e1
ip -n "$NS" link set e0 up
ip -n "$NS" link set e1 up
for l in "${LIBS[@]}"; do
  for m in 10128 512; do
    printf '%s: ' "$l"
    ip netns exec "$NS" env LD_PRELOAD="$l" USTACK_DEVICE=af_packet:e0 USTACK_IP=10.99.0.2/24 "$D/epw" "$m" 200000
  done
done
