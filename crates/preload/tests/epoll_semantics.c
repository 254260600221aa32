/*
 * A plain C program for the LD_PRELOAD test: epoll's three triggering
 * modes over ustack TCP sockets, and a ready list longer than maxevents.
 * Five connections to a kernel echo server each get an echoed byte; then
 *
 * - level-triggered, maxevents 2: every call reports 2 members, none twice
 *   in one call, and the members come round in turn (a reported member
 *   goes to the back of the list, as on Linux), so three calls see all 5;
 * - edge-triggered: one report per member, then none until new data
 *   arrives on one of them, which is reported alone;
 * - one-shot: one report per member, then none until EPOLL_CTL_MOD re-arms
 *   one, which is reported (it is still readable) and falls silent again.
 *
 *   epoll_semantics PEER_IP TCP_ECHO_PORT UDP_ECHO_PORT
 *
 * (the TCP echo server must take several connections; UDP is not used)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 5

#define FAIL(...)                                        \
    do {                                                 \
        fprintf(stderr, "epoll_semantics: " __VA_ARGS__); \
        fprintf(stderr, " (errno %d)\n", errno);         \
        exit(1);                                         \
    } while (0)

static int set_of(int *fds, unsigned events) {
    int ep = epoll_create1(0);
    if (ep < 0)
        FAIL("epoll_create1");
    for (int i = 0; i < N; i++) {
        struct epoll_event ev = {.events = events, .data.u64 = (unsigned long)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            FAIL("epoll_ctl ADD %d", i);
    }
    return ep;
}

/* epoll_wait with a zero timeout, checking that no member comes twice;
 * returns how many, and ORs each member's bit into *seen. */
static int look(int ep, int max, int timeout, unsigned *seen, const char *what) {
    struct epoll_event evs[16];
    int n = epoll_wait(ep, evs, max, timeout);
    if (n < 0)
        FAIL("%s: epoll_wait", what);
    unsigned here = 0;
    for (int i = 0; i < n; i++) {
        unsigned bit = 1u << evs[i].data.u64;
        if (evs[i].data.u64 >= N || here & bit)
            FAIL("%s: member %llu reported twice or unknown", what, (unsigned long long)evs[i].data.u64);
        if (!(evs[i].events & EPOLLIN))
            FAIL("%s: member %llu without EPOLLIN", what, (unsigned long long)evs[i].data.u64);
        here |= bit;
    }
    if (seen)
        *seen |= here;
    return n;
}

int main(int argc, char **argv) {
    if (argc != 4)
        FAIL("usage: epoll_semantics PEER_IP TCP_PORT UDP_PORT");
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &peer.sin_addr);

    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&peer, sizeof peer) != 0)
            FAIL("connect %d", i);
        if (write(fds[i], "x", 1) != 1)
            FAIL("write %d", i);
    }
    /* Every echo back before any set looks. */
    for (int i = 0; i < N; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 10000) != 1)
            FAIL("no echo on %d", i);
    }

    int lt = set_of(fds, EPOLLIN);
    unsigned seen = 0;
    for (int call = 0; call < 3; call++)
        if (look(lt, 2, 0, &seen, "level-triggered") != 2)
            FAIL("level-triggered: call %d did not fill maxevents 2", call);
    if (seen != (1u << N) - 1)
        FAIL("level-triggered: three calls of 2 saw members %#x, not all five", seen);

    int et = set_of(fds, EPOLLIN | EPOLLET);
    seen = 0;
    if (look(et, 16, 0, &seen, "edge-triggered") != N || seen != (1u << N) - 1)
        FAIL("edge-triggered: the first look must report all five");
    if (look(et, 16, 0, NULL, "edge-triggered again") != 0)
        FAIL("edge-triggered: nothing new, yet reported again");
    if (write(fds[3], "y", 1) != 1)
        FAIL("write y");
    seen = 0;
    if (look(et, 16, 10000, &seen, "edge-triggered, new data") != 1 || seen != 1u << 3)
        FAIL("edge-triggered: new data on member 3 must be reported alone (saw %#x)", seen);

    int os = set_of(fds, EPOLLIN | EPOLLONESHOT);
    if (look(os, 16, 0, NULL, "one-shot") != N)
        FAIL("one-shot: the first look must report all five");
    if (look(os, 16, 0, NULL, "one-shot again") != 0)
        FAIL("one-shot: reported again without EPOLL_CTL_MOD");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 2};
    if (epoll_ctl(os, EPOLL_CTL_MOD, fds[2], &ev) != 0)
        FAIL("epoll_ctl MOD");
    seen = 0;
    if (look(os, 16, 0, &seen, "one-shot re-armed") != 1 || seen != 1u << 2)
        FAIL("one-shot: the re-armed member must be reported alone (saw %#x)", seen);
    if (look(os, 16, 0, NULL, "one-shot after re-arm") != 0)
        FAIL("one-shot: reported twice after one re-arm");

    for (int i = 0; i < N; i++)
        close(fds[i]);
    printf("epoll semantics ok\n");
    return 0;
}
