/*
 * A plain C program (no ustack header) for the LD_PRELOAD test: one epoll
 * set holding a pipe, a kernel AF_UNIX socket, a ustack UDP socket and a
 * ustack TCP connection, plus a regular file (which epoll refuses with
 * EPERM, as it does on the kernel). Checks that each gets exactly its
 * events, that an idle set sleeps, and that a socket taken out of the set
 * (EPOLL_CTL_DEL), put back, or closed and its number reused behaves as on
 * the kernel.
 *
 *   mixed_epoll PEER_IP TCP_ECHO_PORT UDP_ECHO_PORT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                    \
    do {                                             \
        fprintf(stderr, "mixed_epoll: " __VA_ARGS__); \
        fprintf(stderr, " (errno %d)\n", errno);     \
        exit(1);                                     \
    } while (0)

enum { PIPE = 1, UNIX = 2, UDP = 3, TCP = 4 };

static void add(int ep, int fd, unsigned events, int tag) {
    struct epoll_event ev = {.events = events, .data.u64 = (unsigned long)tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        FAIL("epoll_ctl ADD tag %d", tag);
}

int main(int argc, char **argv) {
    if (argc != 4)
        FAIL("usage: mixed_epoll PEER_IP TCP_PORT UDP_PORT");
    struct sockaddr_in peer = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &peer.sin_addr);

    int ep = epoll_create1(EPOLL_CLOEXEC), pfd[2], ufd[2];
    if (ep < 0 || pipe(pfd) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, ufd) != 0)
        FAIL("setup");
    char path[] = "/tmp/mixed_epoll_XXXXXX";
    int file = mkstemp(path);
    if (file < 0)
        FAIL("mkstemp");
    unlink(path);
    struct epoll_event fev = {.events = EPOLLIN};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, file, &fev) != -1 || errno != EPERM)
        FAIL("a regular file must be refused with EPERM");

    int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (u < 0 || c < 0)
        FAIL("socket");
    /* The TCP echo server may not listen yet: retry a refused connect. */
    peer.sin_port = htons((unsigned short)atoi(argv[2]));
    int connected = 0;
    for (int tries = 0; tries < 50 && !connected; tries++) {
        if (connect(c, (struct sockaddr *)&peer, sizeof peer) != 0 && errno != EINPROGRESS)
            FAIL("connect");
        int e2 = epoll_create1(0);
        add(e2, c, EPOLLOUT, TCP);
        struct epoll_event ev;
        int n = epoll_wait(e2, &ev, 1, 5000);
        close(e2);
        int err = 0;
        socklen_t len = sizeof err;
        if (n != 1 || getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            FAIL("waiting for connect (n=%d)", n);
        if (err == 0) {
            connected = 1;
        } else {
            close(c);
            c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            usleep(100000);
        }
    }
    if (!connected)
        FAIL("connect never succeeded");

    add(ep, pfd[0], EPOLLIN, PIPE);
    add(ep, ufd[0], EPOLLIN, UNIX);
    add(ep, u, EPOLLIN, UDP);
    add(ep, c, EPOLLIN | EPOLLRDHUP, TCP);

    /* Idle: nothing may be reported. */
    struct epoll_event evs[16];
    int n = epoll_wait(ep, evs, 16, 200);
    if (n != 0)
        FAIL("idle set reported %d events (first tag %lu)", n, (unsigned long)evs[0].data.u64);

    /* One event source of each kind. */
    struct sockaddr_in up = peer;
    up.sin_port = htons((unsigned short)atoi(argv[3]));
    if (write(pfd[1], "p", 1) != 1 || write(ufd[1], "u", 1) != 1)
        FAIL("write pipe/unix");
    if (sendto(u, "dgram", 5, 0, (struct sockaddr *)&up, sizeof up) != 5)
        FAIL("sendto");
    if (send(c, "stream", 6, 0) != 6)
        FAIL("send");

    int seen[5] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!(seen[PIPE] && seen[UNIX] && seen[UDP] && seen[TCP])) {
        n = epoll_wait(ep, evs, 16, 10000);
        if (n <= 0)
            FAIL("epoll_wait: %d (pipe %d unix %d udp %d tcp %d)", n, seen[PIPE], seen[UNIX], seen[UDP], seen[TCP]);
        for (int i = 0; i < n; i++) {
            char buf[64];
            unsigned long tag = (unsigned long)evs[i].data.u64;
            if (!(evs[i].events & EPOLLIN))
                FAIL("tag %lu: events %#x without EPOLLIN", tag, evs[i].events);
            ssize_t r;
            switch (tag) {
            case PIPE: r = read(pfd[0], buf, sizeof buf); if (r != 1 || buf[0] != 'p') FAIL("pipe read"); break;
            case UNIX: r = read(ufd[0], buf, sizeof buf); if (r != 1 || buf[0] != 'u') FAIL("unix read"); break;
            case UDP: r = recv(u, buf, sizeof buf, 0); if (r != 5 || memcmp(buf, "dgram", 5)) FAIL("udp recv %zd", r); break;
            case TCP: r = recv(c, buf, sizeof buf, 0); if (r != 6 || memcmp(buf, "stream", 6)) FAIL("tcp recv %zd", r); break;
            default: FAIL("unknown tag %lu", tag);
            }
            if (seen[tag]++)
                FAIL("tag %lu reported twice", tag);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 20)
            FAIL("too slow");
    }
    /* Drained: idle again. */
    n = epoll_wait(ep, evs, 16, 200);
    if (n != 0)
        FAIL("drained set reported %d events (first tag %lu)", n, (unsigned long)evs[0].data.u64);

    /* Taken out and put back, as redis-benchmark does around every request:
     * no event while out, though data arrived; its event once back. */
    if (epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) != 0)
        FAIL("epoll_ctl DEL tcp");
    if (epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) != -1 || errno != ENOENT)
        FAIL("a second DEL must fail with ENOENT");
    if (send(c, "again", 5, 0) != 5)
        FAIL("send again");
    struct pollfd pc = {.fd = c, .events = POLLIN};
    if (poll(&pc, 1, 10000) != 1 || !(pc.revents & POLLIN))
        FAIL("poll for the echo");
    n = epoll_wait(ep, evs, 16, 200);
    if (n != 0)
        FAIL("a socket taken out of the set: %d events (first tag %lu)", n, (unsigned long)evs[0].data.u64);
    add(ep, c, EPOLLIN, TCP);
    struct epoll_event dup_ev = {.events = EPOLLIN};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &dup_ev) != -1 || errno != EEXIST)
        FAIL("a second ADD must fail with EEXIST");
    n = epoll_wait(ep, evs, 16, 10000);
    char buf[64];
    if (n != 1 || evs[0].data.u64 != TCP || !(evs[0].events & EPOLLIN) || recv(c, buf, sizeof buf, 0) != 5 || memcmp(buf, "again", 5))
        FAIL("the socket put back: n=%d", n);

    /* Taken out, closed, its number reused by a new ustack socket: that
     * one's doorbell is in the set once added, so its datagram wakes a
     * sleeping wait (a lost wakeup would end the wait only at its timeout).
     * The UDP socket, since the echo server answers only its first peer:
     * the new socket takes the old one's port. */
    struct sockaddr_in mine;
    socklen_t mlen = sizeof mine;
    if (getsockname(u, (struct sockaddr *)&mine, &mlen) != 0)
        FAIL("getsockname udp");
    if (epoll_ctl(ep, EPOLL_CTL_DEL, u, NULL) != 0)
        FAIL("epoll_ctl DEL udp before close");
    close(u);
    int u2 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (u2 != u)
        FAIL("the new socket took %d, not the closed number %d", u2, u);
    mine.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(u2, (struct sockaddr *)&mine, sizeof mine) != 0)
        FAIL("bind the new socket to the old port");
    add(ep, u2, EPOLLIN, UDP);
    if (sendto(u2, "reused", 6, 0, (struct sockaddr *)&up, sizeof up) != 6)
        FAIL("sendto reused");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = epoll_wait(ep, evs, 16, 30000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (n != 1 || evs[0].data.u64 != UDP || recv(u2, buf, sizeof buf, 0) != 6 || memcmp(buf, "reused", 6))
        FAIL("the reused number: n=%d", n);
    if (t1.tv_sec - t0.tv_sec >= 20)
        FAIL("the reused number's datagram did not wake the wait");
    printf("mixed epoll ok\n");
    return 0;
}
