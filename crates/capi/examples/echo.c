/*
 * A small C program on ustack: starts the stack on a TAP, then
 *   1. TCP client: connects to a kernel echo server, sends a message, reads it back;
 *   2. UDP: sends a datagram to a kernel UDP echo server, reads the answer;
 *   3. TCP server: listens on a port, serves one connection as an echo
 *      server, waiting with ustack_epoll_wait on the listener, the
 *      connection and a pipe (a kernel descriptor) in one set.
 *
 *   echo TAP STACK_IP/N HOST_IP/N PEER_IP TCP_PORT UDP_PORT LISTEN_PORT
 *
 * Prints one line per step; exits non-zero naming the call that failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ustack.h"

#define FAIL(what)                                                           \
    do {                                                                     \
        fprintf(stderr, "echo: %s: %s (errno %d)\n", what, strerror(errno), errno); \
        exit(1);                                                             \
    } while (0)

static struct sockaddr_in addr_of(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "echo: bad address %s\n", ip);
        exit(2);
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: echo TAP STACK_IP/N HOST_IP/N PEER_IP TCP_PORT UDP_PORT LISTEN_PORT\n");
        return 2;
    }
    char dev[64];
    snprintf(dev, sizeof dev, "tap:%s", argv[1]);
    if (ustack_start(dev, argv[2], NULL, argv[3]) != 0)
        FAIL("ustack_start");
    const char *peer = argv[4];
    int tcp_port = atoi(argv[5]), udp_port = atoi(argv[6]), listen_port = atoi(argv[7]);

    /* Errors come back as -1 and errno. */
    if (ustack_socket(AF_INET6, SOCK_STREAM, 0) != -1 || errno != EAFNOSUPPORT)
        FAIL("AF_INET6 must fail with EAFNOSUPPORT");
    if (ustack_close(0) != -1 || errno != EBADF)
        FAIL("ustack_close(0) must fail with EBADF");

    /* 1. TCP client (the kernel's side may need a moment: retry refused). */
    int c = -1;
    struct sockaddr_in pa = addr_of(peer, tcp_port);
    for (int tries = 0; tries < 50; tries++) {
        c = ustack_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0)
            FAIL("socket");
        int one = 1;
        if (ustack_setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            FAIL("setsockopt TCP_NODELAY");
        if (ustack_connect(c, (struct sockaddr *)&pa, sizeof pa) == 0)
            break;
        if (errno != ECONNREFUSED)
            FAIL("connect");
        ustack_close(c);
        c = -1;
        usleep(100000);
    }
    if (c < 0)
        FAIL("connect (refused 50 times)");
    struct sockaddr_in me;
    socklen_t melen = sizeof me;
    if (ustack_getsockname(c, (struct sockaddr *)&me, &melen) != 0)
        FAIL("getsockname");
    const char msg[] = "hello from C over ustack";
    if (ustack_write(c, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1))
        FAIL("write");
    char buf[4096];
    size_t got = 0;
    while (got < sizeof msg - 1) {
        ssize_t n = ustack_read(c, buf + got, sizeof buf - got);
        if (n <= 0)
            FAIL("read echo");
        got += (size_t)n;
    }
    if (memcmp(buf, msg, sizeof msg - 1) != 0)
        FAIL("echo differs");
    if (ustack_shutdown(c, SHUT_WR) != 0)
        FAIL("shutdown");
    if (ustack_read(c, buf, sizeof buf) != 0)
        FAIL("read end of stream");
    ustack_close(c);
    printf("tcp client ok from port %d\n", ntohs(me.sin_port));
    fflush(stdout);

    /* 2. UDP to the kernel's echo. */
    int u = ustack_socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0)
        FAIL("socket udp");
    struct sockaddr_in ua = addr_of(peer, udp_port), from;
    socklen_t fromlen = sizeof from;
    const char dg[] = "datagram";
    if (ustack_sendto(u, dg, sizeof dg - 1, 0, (struct sockaddr *)&ua, sizeof ua) != (ssize_t)(sizeof dg - 1))
        FAIL("sendto");
    struct pollfd p = {.fd = u, .events = POLLIN};
    if (ustack_poll(&p, 1, 10000) != 1 || !(p.revents & POLLIN))
        FAIL("poll udp (no answer in 10 s)");
    ssize_t n = ustack_recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
    if (n != (ssize_t)(sizeof dg - 1) || memcmp(buf, dg, (size_t)n) != 0 || from.sin_port != ua.sin_port)
        FAIL("recvfrom");
    ustack_close(u);
    printf("udp ok\n");
    fflush(stdout);

    /* 3. TCP server, driven by epoll over ustack and kernel descriptors. */
    int l = ustack_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    if (l < 0 || ustack_setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        FAIL("socket/SO_REUSEADDR");
    struct sockaddr_in la = addr_of("0.0.0.0", listen_port);
    if (ustack_bind(l, (struct sockaddr *)&la, sizeof la) != 0)
        FAIL("bind");
    if (ustack_listen(l, 16) != 0)
        FAIL("listen");
    int pipefd[2];
    if (pipe(pipefd) != 0)
        FAIL("pipe");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    if (ep < 0 || ustack_epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) != 0)
        FAIL("epoll_ctl listener");
    ev.data.fd = pipefd[0];
    if (ustack_epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev) != 0)
        FAIL("epoll_ctl pipe");
    printf("listening on %d\n", listen_port);
    fflush(stdout);
    int conn = -1, done = 0, pipe_seen = 0;
    size_t echoed = 0;
    while (!done) {
        struct epoll_event evs[8];
        int k = ustack_epoll_wait(ep, evs, 8, 20000);
        if (k <= 0)
            FAIL("epoll_wait (nothing in 20 s)");
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                struct sockaddr_in ca;
                socklen_t calen = sizeof ca;
                int a = ustack_accept4(l, (struct sockaddr *)&ca, &calen, SOCK_NONBLOCK);
                if (a < 0 && errno == EAGAIN)
                    continue;
                if (a < 0 || conn >= 0)
                    FAIL("accept4");
                conn = a;
                struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = conn};
                if (ustack_epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ce) != 0)
                    FAIL("epoll_ctl conn");
                if (write(pipefd[1], "x", 1) != 1) /* the kernel descriptor's turn */
                    FAIL("pipe write");
            } else if (fd == pipefd[0]) {
                char x;
                if (read(pipefd[0], &x, 1) != 1)
                    FAIL("pipe read");
                pipe_seen = 1;
            } else if (fd == conn) {
                for (;;) { /* edge-triggered: read until EAGAIN */
                    ssize_t r = ustack_recv(conn, buf, sizeof buf, 0);
                    if (r < 0 && errno == EAGAIN)
                        break;
                    if (r < 0)
                        FAIL("recv");
                    if (r == 0) {
                        done = 1;
                        break;
                    }
                    ssize_t off = 0;
                    while (off < r) {
                        ssize_t w = ustack_send(conn, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
                        if (w < 0 && errno == EAGAIN) {
                            struct pollfd wp = {.fd = conn, .events = POLLOUT};
                            ustack_poll(&wp, 1, 1000);
                            continue;
                        }
                        if (w < 0)
                            FAIL("send");
                        off += w;
                    }
                    echoed += (size_t)r;
                }
            }
        }
    }
    if (!pipe_seen)
        FAIL("the pipe's event never came");
    ustack_close(conn);
    ustack_close(l);
    printf("tcp server ok: echoed %zu bytes\n", echoed);
    return 0;
}
