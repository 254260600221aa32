/*
 * ustack.h: the BSD socket calls over ustack (libustack_capi.so).
 *
 * Each ustack_<call> takes and returns what the libc call does: -1 with errno
 * (Linux's values) on failure. A ustack socket's descriptor is a real kernel
 * descriptor (an eventfd that rings when the socket's readiness changes), so
 * its number never clashes with the process's files, pipes or kernel sockets,
 * and ustack_poll / ustack_epoll_* take any mix of both.
 *
 * Calls other than ustack_poll and ustack_epoll_* on a descriptor that is not
 * a ustack socket fail with EBADF. Call ustack_start once before any socket.
 *
 * Kept by hand beside crates/capi/src/ffi.rs; crates/capi/tests/header.rs
 * checks that it declares exactly the library's exported functions.
 */
#ifndef USTACK_H
#define USTACK_H

#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Start the stack on device ("tap:NAME", "af_packet:IFACE[,opts]",
 * "af_xdp:IFACE[,opts]") with address ip ("A.B.C.D/N"), an optional gateway
 * ("A.B.C.D" or NULL) and, for a TAP, an optional address for the kernel's
 * side (host_ip, "A.B.C.D/N" or NULL). Starts the stack thread. On failure:
 * -1, errno EINVAL, and one line on stderr saying what is wrong. */
int ustack_start(const char *device, const char *ip, const char *gateway, const char *host_ip);

/* 1 if fd is a ustack socket, else 0. */
int ustack_is_socket(int fd);

int ustack_socket(int domain, int type, int protocol);
int ustack_bind(int fd, const struct sockaddr *addr, socklen_t len);
int ustack_listen(int fd, int backlog);
int ustack_accept(int fd, struct sockaddr *addr, socklen_t *len);
int ustack_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int ustack_connect(int fd, const struct sockaddr *addr, socklen_t len);

ssize_t ustack_read(int fd, void *buf, size_t n);
ssize_t ustack_write(int fd, const void *buf, size_t n);
ssize_t ustack_readv(int fd, const struct iovec *iov, int cnt);
ssize_t ustack_writev(int fd, const struct iovec *iov, int cnt);
ssize_t ustack_send(int fd, const void *buf, size_t n, int flags);
ssize_t ustack_recv(int fd, void *buf, size_t n, int flags);
ssize_t ustack_sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr, socklen_t len);
ssize_t ustack_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len);
/* No control messages: msg_controllen comes back 0. */
ssize_t ustack_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t ustack_recvmsg(int fd, struct msghdr *msg, int flags);

int ustack_shutdown(int fd, int how);
int ustack_close(int fd);
int ustack_getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int ustack_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
int ustack_setsockopt(int fd, int level, int name, const void *val, socklen_t len);
int ustack_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
/* F_GETFL, F_SETFL (O_NONBLOCK), F_GETFD, F_SETFD. */
int ustack_fcntl(int fd, int cmd, int arg);
/* FIONREAD, FIONBIO; arg points to an int. */
int ustack_ioctl(int fd, unsigned long req, void *arg);

/* poll(2), epoll_ctl(2), epoll_wait(2) over any mix of kernel and ustack
 * descriptors; the epoll set itself comes from epoll_create1(2). */
int ustack_poll(struct pollfd *fds, nfds_t n, int timeout_ms);
int ustack_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int ustack_epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* USTACK_H */
