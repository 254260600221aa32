/*
 * A plain C program for the LD_PRELOAD test: the library keeps a closed
 * socket's descriptor (an eventfd) for the next socket instead of closing
 * it. Checks that the program sees what it would see on the kernel:
 * F_GETFD reports its SOCK_CLOEXEC, a second close or a dup of a closed
 * socket answers EBADF, the next socket takes the closed number, a reused
 * number in a new epoll set wakes that set and not the old one, dup2 onto a
 * closed socket's number gives the number to the duplicate, and exec
 * leaves no socket's number open in the new program.
 *
 *   spare_fds PEER_IP TCP_ECHO_PORT UDP_ECHO_PORT
 *   spare_fds --exec-check FD...   (the program exec'd: each FD is closed)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAIL(...)                                  \
    do {                                           \
        fprintf(stderr, "spare_fds: " __VA_ARGS__); \
        fprintf(stderr, " (errno %d)\n", errno);   \
        exit(1);                                   \
    } while (0)

static int udp_socket(void) {
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (u < 0)
        FAIL("socket udp");
    return u;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--exec-check") == 0) {
        for (int i = 2; i < argc; i++) {
            int fd = atoi(argv[i]);
            if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
                FAIL("descriptor %d is open after exec", fd);
        }
        printf("exec check ok\n");
        return 0;
    }
    if (argc != 4)
        FAIL("usage: spare_fds PEER_IP TCP_PORT UDP_PORT");
    struct sockaddr_in up = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[1], &up.sin_addr);

    /* FD_CLOEXEC as asked, and as set. */
    int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    if (a < 0 || b < 0)
        FAIL("socket tcp");
    if (fcntl(a, F_GETFD) != FD_CLOEXEC || fcntl(b, F_GETFD) != 0)
        FAIL("F_GETFD: %d and %d", fcntl(a, F_GETFD), fcntl(b, F_GETFD));
    if (fcntl(b, F_SETFD, FD_CLOEXEC) != 0 || fcntl(b, F_GETFD) != FD_CLOEXEC)
        FAIL("F_SETFD");
    if (fcntl(b, F_SETFD, 0) != 0 || fcntl(b, F_GETFD) != 0)
        FAIL("F_SETFD 0");

    /* Closed once: a second close and a dup answer EBADF, as on Linux. */
    if (close(b) != 0)
        FAIL("close");
    if (close(b) != -1 || errno != EBADF)
        FAIL("a second close must answer EBADF");
    if (dup(b) != -1 || errno != EBADF)
        FAIL("dup of a closed socket must answer EBADF");
    if (dup2(b, 100) != -1 || errno != EBADF)
        FAIL("dup2 from a closed socket must answer EBADF");

    /* The next socket takes the lowest free number, the closed one. */
    int u = udp_socket();
    if (u != b)
        FAIL("the new socket took %d, not the closed number %d", u, b);

    /* In set 1, closed, reused in set 2: a datagram for the new socket
     * wakes set 2; set 1 (which the eventfd underneath is still in) reports
     * nothing. */
    int ep1 = epoll_create1(EPOLL_CLOEXEC), ep2 = epoll_create1(EPOLL_CLOEXEC);
    if (ep1 < 0 || ep2 < 0)
        FAIL("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(ep1, EPOLL_CTL_ADD, u, &ev) != 0)
        FAIL("epoll_ctl ADD set 1");
    close(u);
    int u2 = udp_socket();
    if (u2 != u)
        FAIL("the reused number: %d, not %d", u2, u);
    ev.data.u64 = 2;
    if (epoll_ctl(ep2, EPOLL_CTL_ADD, u2, &ev) != 0)
        FAIL("epoll_ctl ADD set 2");
    if (sendto(u2, "again", 5, 0, (struct sockaddr *)&up, sizeof up) != 5)
        FAIL("sendto");
    struct epoll_event out[4];
    int n = epoll_wait(ep2, out, 4, 20000);
    if (n != 1 || out[0].data.u64 != 2)
        FAIL("set 2: n=%d", n);
    n = epoll_wait(ep1, out, 4, 200);
    if (n != 0)
        FAIL("set 1 reported %d events for a socket it no longer holds", n);
    char buf[16];
    if (recv(u2, buf, sizeof buf, 0) != 5 || memcmp(buf, "again", 5))
        FAIL("recv");

    /* dup2 onto a closed socket's number: the number is the duplicate's,
     * and the next socket does not get it. */
    int pfd[2];
    if (pipe(pfd) != 0)
        FAIL("pipe");
    close(u2);
    if (dup2(pfd[0], u2) != u2)
        FAIL("dup2 onto a closed socket's number");
    int c = udp_socket();
    if (c == u2)
        FAIL("a socket took %d, which dup2 gave to a pipe", c);
    if (write(pfd[1], "p", 1) != 1 || read(u2, buf, 1) != 1 || buf[0] != 'p')
        FAIL("the duplicate does not read the pipe");
    if (close(u2) != 0)
        FAIL("close the duplicate");

    /* exec: no socket's number stays open, with or without SOCK_CLOEXEC,
     * and no closed one either. */
    int keep = socket(AF_INET, SOCK_STREAM, 0);
    int gone = udp_socket();
    close(gone);
    char k[16], g[16];
    snprintf(k, sizeof k, "%d", keep);
    snprintf(g, sizeof g, "%d", gone);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "spare_fds", "--exec-check", k, g, (char *)NULL);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("the exec'd program found a socket's number open");
    printf("spare fds ok\n");
    return 0;
}
