/*
 * A plain C program (no ustack header) for the LD_PRELOAD test: epoll sets
 * inside epoll sets, and poll on an epoll set, where the inner set holds
 * ustack sockets (as event loops that nest a library's set in their own
 * do). The outer set must wake when a ustack socket in the inner set gets
 * data, report the inner set again while a level-triggered member still
 * has data, and stay silent when everything is drained.
 *
 *   nested_epoll PEER_IP TCP_ECHO_PORT UDP_ECHO_PORT
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

#define FAIL(...)                                     \
    do {                                              \
        fprintf(stderr, "nested_epoll: " __VA_ARGS__); \
        fprintf(stderr, " (errno %d)\n", errno);      \
        exit(1);                                      \
    } while (0)

enum { PIPE = 1, INNER = 2, UDP = 3, TCP = 4 };

static void add(int ep, int fd, unsigned events, int tag) {
    struct epoll_event ev = {.events = events, .data.u64 = (unsigned long)tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        FAIL("epoll_ctl ADD tag %d", tag);
}

/* One wait on `ep`: the tag of its only event, 0 for none; more fails. */
static int one(int ep, int timeout_ms, const char *what) {
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, timeout_ms);
    if (n < 0)
        FAIL("%s: epoll_wait", what);
    if (n > 1)
        FAIL("%s: %d events, want at most one", what, n);
    if (n == 1 && !(evs[0].events & EPOLLIN))
        FAIL("%s: events %#x without EPOLLIN", what, evs[0].events);
    return n == 0 ? 0 : (int)evs[0].data.u64;
}

static int connect_tcp(struct sockaddr_in peer) {
    /* The TCP echo server may not listen yet: retry a refused connect. */
    for (int tries = 0; tries < 50; tries++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c < 0)
            FAIL("socket");
        if (connect(c, (struct sockaddr *)&peer, sizeof peer) != 0 && errno != EINPROGRESS)
            FAIL("connect");
        struct pollfd p = {.fd = c, .events = POLLOUT};
        if (poll(&p, 1, 5000) != 1)
            FAIL("waiting for connect");
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            FAIL("SO_ERROR");
        if (err == 0)
            return c;
        close(c);
        usleep(100000);
    }
    FAIL("connect never succeeded");
}

int main(int argc, char **argv) {
    if (argc != 4)
        FAIL("usage: nested_epoll PEER_IP TCP_PORT UDP_PORT");
    struct sockaddr_in peer = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &peer.sin_addr);
    struct sockaddr_in up = peer;
    peer.sin_port = htons((unsigned short)atoi(argv[2]));
    up.sin_port = htons((unsigned short)atoi(argv[3]));

    int pfd[2];
    if (pipe(pfd) != 0)
        FAIL("pipe");
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (u < 0)
        FAIL("socket");
    int c = connect_tcp(peer);
    char buf[64];

    /* 1. The inner set joins the outer one while still empty; the ustack
     *    sockets join the inner set afterwards. */
    int outer = epoll_create1(EPOLL_CLOEXEC), inner = epoll_create1(EPOLL_CLOEXEC);
    if (outer < 0 || inner < 0)
        FAIL("epoll_create1");
    add(outer, pfd[0], EPOLLIN, PIPE);
    add(outer, inner, EPOLLIN, INNER);
    add(inner, u, EPOLLIN, UDP);
    add(inner, c, EPOLLIN, TCP);
    if (one(outer, 200, "idle") != 0)
        FAIL("idle outer set reported an event");

    if (send(c, "stream", 6, 0) != 6)
        FAIL("send");
    if (one(outer, 10000, "tcp echo") != INNER)
        FAIL("outer set did not report the inner set for the TCP echo");
    if (one(inner, 0, "inner after tcp echo") != TCP)
        FAIL("inner set did not report the TCP socket");
    /* Half the data read: the level-triggered member still has data, so
     * the inner set is still ready and the outer set says so. */
    if (recv(c, buf, 3, 0) != 3 || memcmp(buf, "str", 3))
        FAIL("tcp recv 3");
    if (one(outer, 5000, "half read") != INNER)
        FAIL("outer set did not report the inner set while TCP data is left");
    if (one(inner, 0, "inner after half read") != TCP)
        FAIL("inner set did not report the TCP socket again");
    if (recv(c, buf, sizeof buf, 0) != 3 || memcmp(buf, "eam", 3))
        FAIL("tcp recv rest");

    if (sendto(u, "dgram", 5, 0, (struct sockaddr *)&up, sizeof up) != 5)
        FAIL("sendto");
    if (one(outer, 10000, "udp echo") != INNER)
        FAIL("outer set did not report the inner set for the UDP echo");
    if (one(inner, 0, "inner after udp echo") != UDP)
        FAIL("inner set did not report the UDP socket");
    if (recv(u, buf, sizeof buf, 0) != 5 || memcmp(buf, "dgram", 5))
        FAIL("udp recv");

    /* A kernel event in the outer set still comes through. */
    if (write(pfd[1], "p", 1) != 1)
        FAIL("write pipe");
    if (one(outer, 5000, "pipe") != PIPE)
        FAIL("outer set did not report the pipe");
    if (read(pfd[0], buf, sizeof buf) != 1)
        FAIL("pipe read");
    /* Drained: both sets idle. */
    if (one(inner, 0, "drained inner") != 0)
        FAIL("drained inner set reported an event");
    if (one(outer, 200, "drained outer") != 0)
        FAIL("drained outer set reported an event");

    /* 2. The other order: a set that already holds a ustack socket with
     *    data joins an outer set, which must report it at once. */
    int outer2 = epoll_create1(0), inner2 = epoll_create1(0);
    if (outer2 < 0 || inner2 < 0)
        FAIL("epoll_create1");
    add(inner2, c, EPOLLIN | EPOLLET, TCP);
    if (send(c, "again", 5, 0) != 5)
        FAIL("send again");
    struct pollfd pc = {.fd = c, .events = POLLIN};
    if (poll(&pc, 1, 10000) != 1)
        FAIL("the echo did not come back");
    add(outer2, inner2, EPOLLIN, INNER);
    if (one(outer2, 5000, "data before the add") != INNER)
        FAIL("outer set did not report an inner set that was ready when added");
    if (one(inner2, 0, "inner2") != TCP)
        FAIL("inner2 did not report the TCP socket");
    if (recv(c, buf, sizeof buf, 0) != 5 || memcmp(buf, "again", 5))
        FAIL("tcp recv again");
    if (one(outer2, 200, "drained outer2") != 0)
        FAIL("drained outer2 reported an event");

    /* 3. poll(2) on an epoll set holding a ustack socket. */
    int inner3 = epoll_create1(0);
    if (inner3 < 0)
        FAIL("epoll_create1");
    add(inner3, u, EPOLLIN, UDP);
    struct pollfd pe = {.fd = inner3, .events = POLLIN};
    if (poll(&pe, 1, 200) != 0)
        FAIL("poll on an idle epoll set reported an event");
    if (sendto(u, "third", 5, 0, (struct sockaddr *)&up, sizeof up) != 5)
        FAIL("sendto third");
    pe.revents = 0;
    if (poll(&pe, 1, 10000) != 1 || !(pe.revents & POLLIN))
        FAIL("poll on the epoll set did not wake for the UDP echo");
    if (one(inner3, 0, "inner3") != UDP)
        FAIL("inner3 did not report the UDP socket");
    if (recv(u, buf, sizeof buf, 0) != 5 || memcmp(buf, "third", 5))
        FAIL("udp recv third");
    printf("nested epoll ok\n");
    return 0;
}
