#!/usr/bin/env bash
# The cost of one wait under the library, timeout 0, for each LIB given in
# turn, on af_packet over a veth in a namespace of its own (as root):
# - epoll_wait that finds nothing and asks the kernel, for two maxevents:
#   redis passes 10,128 (its maxclients plus 128), nginx 512;
# - poll over 1,000 ustack sockets and 1,000 kernel descriptors (/dev/null),
#   the ustack half ready (a fresh socket reports POLLHUP).
#
#   sudo bash scripts/bench-wait.sh [LIB.so ...]   (default: the release build)
#
# Prints one line per library and case, after the kernel's own (the same
# program without the library): wall and CPU ns per call.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-wait: run as root (a namespace, a veth)" >&2; exit 2; }
LIBS=("$@")
[ ${#LIBS[@]} -gt 0 ] || LIBS=("$PWD/target/release/libustack_preload.so")
for l in "${LIBS[@]}"; do [ -f "$l" ] || { echo "bench-wait: no $l: cargo build --release -p ustack-preload" >&2; exit 2; }; done
D=$(mktemp -d) NS=ustack-epw-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
cat >"$D/epw.c" <<'C'
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
static double ns(struct timespec a, struct timespec b) { return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec); }
static int polls(int n, int iters) {
    struct pollfd *p = calloc(2 * n, sizeof *p);
    for (int i = 0; i < 2 * n; i++) {
        p[i].fd = i % 2 ? open("/dev/null", O_RDONLY) : socket(AF_INET, SOCK_STREAM, 0);
        p[i].events = POLLIN;
        if (p[i].fd < 0) { perror("descriptors"); return 1; }
    }
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (int i = 0; i < iters; i++)
        poll(p, 2 * n, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    printf("poll, %d + %d fds:   %7.0f ns a call, %7.0f ns CPU\n", n, n, ns(t0, t1) / iters, ns(c0, c1) / iters);
    return 0;
}
int main(int argc, char **argv) {
    if (argc == 4)
        return polls(atoi(argv[2]), atoi(argv[3]));
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
    printf("epoll_wait, maxevents %5d: %7.0f ns a call, %7.0f ns CPU\n", max, ns(t0, t1) / iters, ns(c0, c1) / iters);
    return 0;
}
C
cc -O2 -o "$D/epw" "$D/epw.c"
ulimit -n 8192  # 2,000 descriptors and an eventfd per ustack socket
ip netns add "$NS"
ip -n "$NS" link add e0 type veth peer name e1
ip -n "$NS" link set e0 up
ip -n "$NS" link set e1 up
# The kernel's own figures first (no library: the same calls on kernel sockets).
for m in 10128 512; do
  printf 'kernel: '
  ip netns exec "$NS" "$D/epw" "$m" 200000
done
printf 'kernel: '
ip netns exec "$NS" "$D/epw" poll 1000 2000
for l in "${LIBS[@]}"; do
  for m in 10128 512; do
    printf '%s: ' "$l"
    ip netns exec "$NS" env LD_PRELOAD="$l" USTACK_DEVICE=af_packet:e0 USTACK_IP=10.99.0.2/24 "$D/epw" "$m" 200000
  done
  printf '%s: ' "$l"
  ip netns exec "$NS" env LD_PRELOAD="$l" USTACK_DEVICE=af_packet:e0 USTACK_IP=10.99.0.2/24 "$D/epw" poll 1000 2000
done
