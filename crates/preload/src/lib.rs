//! `libustack_preload.so`: run an unmodified, dynamically linked program
//! with its `AF_INET` TCP and UDP sockets on ustack.
//!
//! ```sh
//! USTACK_DEVICE=tap:ust0 USTACK_IP=10.0.0.2/24 USTACK_HOST_IP=10.0.0.1/24 \
//!     LD_PRELOAD=target/debug/libustack_preload.so socat TCP4-LISTEN:7,reuseaddr PIPE
//! ```
//!
//! The library replaces libc's socket calls. A call on a ustack socket goes
//! to `ustack-capi` (see its crate documentation for the design: one stack
//! thread, a kernel eventfd as each socket's descriptor and doorbell); every
//! other call — files, pipes, `AF_UNIX`, `AF_NETLINK`, `AF_INET6`, raw
//! sockets, eventfds — goes to the next definition (libc's, found with
//! `dlsym(RTLD_NEXT)`) unchanged. The only cost for those is one lock-free
//! flag lookup per call.
//!
//! # Configuration (environment)
//!
//! | variable | meaning |
//! |---|---|
//! | `USTACK_DEVICE` | the device spec (`tap:NAME`, `af_packet:IFACE[,…]`, `af_xdp:IFACE[,…]`); unset: the library passes everything to the kernel |
//! | `USTACK_IP` | the stack's `A.B.C.D/N` (required with `USTACK_DEVICE`) |
//! | `USTACK_GATEWAY` | default gateway `A.B.C.D` (optional) |
//! | `USTACK_HOST_IP` | `tap:` only: give the kernel's side of the TAP `A.B.C.D/N` |
//! | `USTACK_FORK` | `stay` (default): a forked child's calls on inherited ustack sockets fail, the parent keeps the stack; `follow`: at the first fork the stack moves to the child (nginx's master forking one worker); `shard` (`af_packet:` only): every forked child gets a stack of its own in a fan-out group, with the parent's listeners (nginx's `worker_processes N`, see `ustack_capi`'s `shard` module) |
//! | `USTACK_TCP_BUFFER` | each TCP connection's send and receive buffer, bytes or with a `K`/`M` suffix, 16K to 64M (default 1M, `ustack_capi::DEFAULT_TCP_BUFFER`) |
//!
//! A bad setting is one line on stderr (`ustack: …`) and exit status 2
//! before `main` runs. The stack (and its device) starts at the program's
//! first `AF_INET` TCP or UDP `socket()`, so programs that never open one
//! (or children that only exec) never touch the device; a device that
//! cannot be opened then is one line and exit status 1.
//!
//! Calls interposed: socket, bind, listen, accept, accept4, connect, read,
//! write, readv, writev, send, recv, sendto, recvfrom, sendmsg, recvmsg,
//! shutdown, close, getsockname, getpeername, getsockopt, setsockopt, fcntl,
//! fcntl64, ioctl, poll, ppoll, select, pselect, epoll_ctl, epoll_wait,
//! epoll_pwait, dup, dup2, dup3, sendfile, sendfile64, and the fortified
//! `__read_chk`, `__recv_chk`, `__recvfrom_chk`, `__poll_chk`.

#![allow(clippy::missing_safety_doc)] // each function is the libc call of its name
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_long, c_ulong, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use libc::{iovec, msghdr, nfds_t, off_t, pollfd, size_t, sockaddr, socklen_t, ssize_t};
use ustack_capi::{self as capi, ffi, is_ustack, Errno};

/// The next definition of `name` (libc's), looked up once.
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static P: AtomicUsize = AtomicUsize::new(0);
        let mut p = P.load(Ordering::Relaxed);
        if p == 0 {
            // SAFETY: a NUL-terminated name; RTLD_NEXT skips this library.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr() as *const c_char) } as usize;
            if p == 0 {
                let msg = concat!("ustack: libc has no ", $name, "\n");
                // SAFETY: writes a static message to stderr, then ends the process.
                unsafe {
                    libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
                    libc::_exit(127);
                }
            }
            P.store(p, Ordering::Relaxed);
        }
        // SAFETY: `p` is libc's function of that name, whose type is `$ty`.
        unsafe { std::mem::transmute::<usize, $ty>(p) }
    }};
}

/// The settings read before `main`, if `USTACK_DEVICE` is set.
static CONFIG: Mutex<Option<capi::StartConfig>> = Mutex::new(None);
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn fail(msg: &str, status: c_int) -> ! {
    let line = format!("ustack: {msg}\n");
    // SAFETY: writes to stderr, then ends the process without running the
    // program's exit handlers (it has not started, or cannot go on).
    unsafe {
        libc::syscall(libc::SYS_write, 2, line.as_ptr(), line.len());
        libc::_exit(status)
    }
}

extern "C" fn init() {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(device) = var("USTACK_DEVICE") else { return };
    let Some(ip) = var("USTACK_IP") else {
        fail("USTACK_DEVICE is set but USTACK_IP is not: set the stack's address, e.g. USTACK_IP=10.0.0.2/24", 2)
    };
    if let Some(cores) = var("USTACK_CORES") {
        if cores != "1" {
            fail(&format!("USTACK_CORES={cores}: this library runs one stack thread; only USTACK_CORES=1 is supported"), 2);
        }
    }
    let (follow_fork, shard_fork) = match var("USTACK_FORK").as_deref() {
        None | Some("stay") => (false, false),
        Some("follow") => (true, false),
        Some("shard") => (false, true),
        Some(other) => fail(
            &format!(
                "USTACK_FORK={other}: use 'stay' (the stack stays with the parent), 'follow' (it moves to the first forked child) or 'shard' (each forked child gets its own stack)"
            ),
            2,
        ),
    };
    let cfg = capi::StartConfig {
        device,
        ip,
        gateway: var("USTACK_GATEWAY"),
        host_ip: var("USTACK_HOST_IP"),
        follow_fork,
        shard_fork,
        tcp_buffer: var("USTACK_TCP_BUFFER"),
        busy_poll: var("USTACK_BUSY_POLL"),
    };
    if let Err(e) = cfg.check() {
        let which = if e.starts_with("device") {
            "USTACK_DEVICE"
        } else if e.starts_with("gateway") {
            "USTACK_GATEWAY"
        } else if e.starts_with("host") {
            "USTACK_HOST_IP"
        } else if e.starts_with("fork") {
            "USTACK_FORK"
        } else if e.starts_with("tcp buffer") {
            "USTACK_TCP_BUFFER"
        } else if e.starts_with("busy poll") {
            "USTACK_BUSY_POLL"
        } else {
            "USTACK_IP"
        };
        fail(&format!("{which}: {e}"), 2);
    }
    *CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
    ACTIVE.store(true, Ordering::Release);
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

thread_local! {
    /// This thread is starting the stack: the sockets opening the device
    /// takes (an ioctl socket for the TAP's address) are the kernel's.
    static STARTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Start the stack on first use (one line and exit 1 if the device fails).
fn ensure_started() {
    if capi::started() {
        return;
    }
    let mut cfg = CONFIG.lock().unwrap_or_else(|p| p.into_inner());
    if capi::started() {
        return;
    }
    if let Some(c) = cfg.as_ref() {
        STARTING.with(|s| s.set(true));
        let r = capi::start(c);
        STARTING.with(|s| s.set(false));
        if let Err(e) = r {
            fail(&format!("cannot start the stack ({}): {e}", c.device), 1);
        }
    }
    *cfg = None;
}

fn err(e: Errno) -> c_int {
    e.set();
    -1
}

// ---- sockets --------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if ACTIVE.load(Ordering::Acquire)
        && !STARTING.with(|s| s.get())
        && !capi::opening_device()
        && capi::classify(domain, ty, protocol).is_ok()
    {
        ensure_started();
        return ffi::ustack_socket(domain, ty, protocol);
    }
    real!("socket", unsafe extern "C" fn(c_int, c_int, c_int) -> c_int)(domain, ty, protocol)
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_bind(fd, addr, len);
    }
    real!("bind", unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int)(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_listen(fd, backlog);
    }
    real!("listen", unsafe extern "C" fn(c_int, c_int) -> c_int)(fd, backlog)
}

#[no_mangle]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_accept4(fd, addr, len, flags);
    }
    capi::wait::before_kernel_wait();
    real!("accept4", unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int)(fd, addr, len, flags)
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_accept4(fd, addr, len, 0);
    }
    capi::wait::before_kernel_wait();
    real!("accept", unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int)(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_connect(fd, addr, len);
    }
    capi::wait::before_kernel_wait();
    real!("connect", unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int)(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_shutdown(fd, how);
    }
    real!("shutdown", unsafe extern "C" fn(c_int, c_int) -> c_int)(fd, how)
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_close(fd);
    }
    if capi::is_spare(fd) {
        // A closed socket's number, kept by the library: closed already.
        return err(Errno(libc::EBADF));
    }
    capi::wait::epoll_forget(fd);
    real!("close", unsafe extern "C" fn(c_int) -> c_int)(fd)
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_getsockname(fd, addr, len);
    }
    real!("getsockname", unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int)(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_getpeername(fd, addr, len);
    }
    real!("getpeername", unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int)(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_setsockopt(fd, level, name, val, len);
    }
    real!("setsockopt", unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int)(
        fd, level, name, val, len,
    )
}

#[no_mangle]
pub unsafe extern "C" fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_getsockopt(fd, level, name, val, len);
    }
    real!("getsockopt", unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int)(
        fd, level, name, val, len,
    )
}

// ---- data -------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_read(fd, buf, n);
    }
    capi::wait::before_kernel_wait();
    real!("read", unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t)(fd, buf, n)
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t {
    if is_ustack(fd) && n <= buflen {
        return ffi::ustack_read(fd, buf, n);
    }
    capi::wait::before_kernel_wait();
    real!("__read_chk", unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t) -> ssize_t)(fd, buf, n, buflen)
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_write(fd, buf, n);
    }
    real!("write", unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t)(fd, buf, n)
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_readv(fd, iov, cnt);
    }
    capi::wait::before_kernel_wait();
    real!("readv", unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t)(fd, iov, cnt)
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_writev(fd, iov, cnt);
    }
    real!("writev", unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t)(fd, iov, cnt)
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_send(fd, buf, n, flags);
    }
    real!("send", unsafe extern "C" fn(c_int, *const c_void, size_t, c_int) -> ssize_t)(fd, buf, n, flags)
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_recv(fd, buf, n, flags);
    }
    capi::wait::before_kernel_wait();
    real!("recv", unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int) -> ssize_t)(fd, buf, n, flags)
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t {
    if is_ustack(fd) && n <= buflen {
        return ffi::ustack_recv(fd, buf, n, flags);
    }
    capi::wait::before_kernel_wait();
    real!("__recv_chk", unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int) -> ssize_t)(fd, buf, n, buflen, flags)
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_sendto(fd, buf, n, flags, addr, len);
    }
    real!("sendto", unsafe extern "C" fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t)(
        fd, buf, n, flags, addr, len,
    )
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_recvfrom(fd, buf, n, flags, addr, len);
    }
    capi::wait::before_kernel_wait();
    real!("recvfrom", unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t)(
        fd, buf, n, flags, addr, len,
    )
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if is_ustack(fd) && n <= buflen {
        return ffi::ustack_recvfrom(fd, buf, n, flags, addr, len);
    }
    capi::wait::before_kernel_wait();
    real!(
        "__recvfrom_chk",
        unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t
    )(fd, buf, n, buflen, flags, addr, len)
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_sendmsg(fd, msg, flags);
    }
    real!("sendmsg", unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t)(fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if is_ustack(fd) {
        return ffi::ustack_recvmsg(fd, msg, flags);
    }
    capi::wait::before_kernel_wait();
    real!("recvmsg", unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t)(fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, v: *mut libc::mmsghdr, n: u32, flags: c_int) -> c_int {
    if is_ustack(fd) {
        return err(capi::unsupported("sendmmsg", Errno(libc::EOPNOTSUPP)));
    }
    real!("sendmmsg", unsafe extern "C" fn(c_int, *mut libc::mmsghdr, u32, c_int) -> c_int)(fd, v, n, flags)
}

#[no_mangle]
pub unsafe extern "C" fn recvmmsg(fd: c_int, v: *mut libc::mmsghdr, n: u32, flags: c_int, t: *mut libc::timespec) -> c_int {
    if is_ustack(fd) {
        return err(capi::unsupported("recvmmsg", Errno(libc::EOPNOTSUPP)));
    }
    capi::wait::before_kernel_wait();
    real!("recvmmsg", unsafe extern "C" fn(c_int, *mut libc::mmsghdr, u32, c_int, *mut libc::timespec) -> c_int)(
        fd, v, n, flags, t,
    )
}

/// sendfile(2) to a ustack socket: read from `in_fd` (pread at `*offset`
/// when given) and send, 64 KiB at a time, until `count` or a short send.
unsafe fn sendfile_ustack(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    let mut buf = vec![0u8; count.min(65536)];
    let mut done = 0usize;
    while done < count {
        let want = (count - done).min(buf.len());
        let got = if offset.is_null() {
            real!("read", unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t)(in_fd, buf.as_mut_ptr().cast(), want)
        } else {
            real!("pread64", unsafe extern "C" fn(c_int, *mut c_void, size_t, off_t) -> ssize_t)(
                in_fd,
                buf.as_mut_ptr().cast(),
                want,
                *offset,
            )
        };
        if got < 0 {
            return if done > 0 { done as ssize_t } else { -1 };
        }
        if got == 0 {
            break;
        }
        let sent = ffi::ustack_write(out_fd, buf.as_ptr().cast(), got as usize);
        if sent < 0 {
            return if done > 0 { done as ssize_t } else { -1 };
        }
        done += sent as usize;
        if offset.is_null() {
            if sent < got {
                // Put back what the socket did not take.
                libc::lseek(in_fd, (sent - got) as off_t, libc::SEEK_CUR);
            }
        } else {
            *offset += sent as off_t;
        }
        if (sent as usize) < want {
            break;
        }
    }
    done as ssize_t
}

#[no_mangle]
pub unsafe extern "C" fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    if is_ustack(in_fd) {
        return err(capi::unsupported("sendfile from a ustack socket", Errno(libc::EINVAL))) as ssize_t;
    }
    if is_ustack(out_fd) {
        return sendfile_ustack(out_fd, in_fd, offset, count);
    }
    real!("sendfile", unsafe extern "C" fn(c_int, c_int, *mut off_t, size_t) -> ssize_t)(out_fd, in_fd, offset, count)
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    sendfile(out_fd, in_fd, offset, count)
}

// ---- descriptors --------------------------------------------------------------

unsafe fn fcntl_any(name_is_64: bool, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if is_ustack(fd) {
        return match cmd {
            libc::F_GETFL | libc::F_SETFL | libc::F_GETFD | libc::F_SETFD => ffi::ustack_fcntl(fd, cmd, arg as c_int),
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => err(capi::unsupported("duplicating a ustack socket", Errno(libc::EOPNOTSUPP))),
            _ => err(capi::unsupported("fcntl other than F_GETFL/F_SETFL/F_GETFD/F_SETFD", Errno(libc::EINVAL))),
        };
    }
    if name_is_64 {
        real!("fcntl64", unsafe extern "C" fn(c_int, c_int, ...) -> c_int)(fd, cmd, arg)
    } else {
        real!("fcntl", unsafe extern "C" fn(c_int, c_int, ...) -> c_int)(fd, cmd, arg)
    }
}

/// fcntl(2): variadic in C; its one optional argument arrives in the
/// register a third fixed argument would (x86-64 and AArch64 Linux ABIs).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_any(false, fd, cmd, arg)
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_any(true, fd, cmd, arg)
}

/// ioctl(2), variadic in C like fcntl.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_ioctl(fd, req, arg);
    }
    real!("ioctl", unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int)(fd, req, arg)
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    if is_ustack(fd) {
        return err(capi::unsupported("duplicating a ustack socket", Errno(libc::EOPNOTSUPP)));
    }
    if capi::is_spare(fd) {
        return err(Errno(libc::EBADF));
    }
    real!("dup", unsafe extern "C" fn(c_int) -> c_int)(fd)
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    dup3_any(old, new, None)
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    dup3_any(old, new, Some(flags))
}

unsafe fn dup3_any(old: c_int, new: c_int, flags: Option<c_int>) -> c_int {
    if is_ustack(old) {
        return err(capi::unsupported("duplicating a ustack socket", Errno(libc::EOPNOTSUPP)));
    }
    if capi::is_spare(old) {
        return err(Errno(libc::EBADF));
    }
    if old != new && is_ustack(new) {
        // dup2 closes what `new` was: here, a ustack socket.
        ffi::ustack_close(new);
    }
    if old != new {
        // A closed socket's eventfd the library kept under that number goes.
        capi::replacing(new);
    }
    match flags {
        None => real!("dup2", unsafe extern "C" fn(c_int, c_int) -> c_int)(old, new),
        Some(f) => real!("dup3", unsafe extern "C" fn(c_int, c_int, c_int) -> c_int)(old, new, f),
    }
}

// ---- waiting --------------------------------------------------------------------

/// Whether `fds` holds a ustack socket. On the way, epoll sets holding
/// ustack sockets are marked polled, and when the kernel alone will wait,
/// their bells are brought up to date (see `capi::wait::before_kernel_wait`).
fn has_ustack(fds: &[pollfd]) -> bool {
    if !capi::started() {
        return false;
    }
    let mut ours = false;
    for p in fds {
        ours |= is_ustack(p.fd);
        capi::wait::polled(p.fd);
    }
    if !ours {
        capi::wait::before_kernel_wait();
    }
    ours
}

unsafe fn fds_of<'a>(fds: *mut pollfd, n: nfds_t) -> &'a mut [pollfd] {
    if fds.is_null() || n == 0 {
        &mut []
    } else {
        std::slice::from_raw_parts_mut(fds, n as usize)
    }
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if has_ustack(fds_of(fds, n)) {
        return ffi::ustack_poll(fds, n, timeout);
    }
    real!("poll", unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int)(fds, n, timeout)
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, len: size_t) -> c_int {
    if has_ustack(fds_of(fds, n)) && (n as usize) * std::mem::size_of::<pollfd>() <= len {
        return ffi::ustack_poll(fds, n, timeout);
    }
    real!("__poll_chk", unsafe extern "C" fn(*mut pollfd, nfds_t, c_int, size_t) -> c_int)(fds, n, timeout, len)
}

fn ms_of_timespec(t: *const libc::timespec) -> c_int {
    // SAFETY: `t` is null or a valid timespec (the caller's).
    match unsafe { t.as_ref() } {
        None => -1,
        Some(t) => (t.tv_sec * 1000 + (t.tv_nsec as u64).div_ceil(1_000_000) as i64).clamp(0, i32::MAX as i64) as c_int,
    }
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if has_ustack(fds_of(fds, n)) {
        if !mask.is_null() {
            capi::unsupported("ppoll's signal mask (ignored while ustack sockets are polled)", Errno(0));
        }
        return ffi::ustack_poll(fds, n, ms_of_timespec(t));
    }
    real!("ppoll", unsafe extern "C" fn(*mut pollfd, nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int)(
        fds, n, t, mask,
    )
}

unsafe fn sets_have_ustack(nfds: c_int, sets: [*mut libc::fd_set; 3]) -> bool {
    if !capi::started() {
        return false;
    }
    let mut ours = false;
    for fd in 0..nfds.clamp(0, libc::FD_SETSIZE as c_int) {
        if sets.iter().any(|s| !s.is_null() && libc::FD_ISSET(fd, *s)) {
            ours |= is_ustack(fd);
            capi::wait::polled(fd);
        }
    }
    if !ours {
        capi::wait::before_kernel_wait();
    }
    ours
}

unsafe fn select_ustack(nfds: c_int, rd: *mut libc::fd_set, wr: *mut libc::fd_set, ex: *mut libc::fd_set, ms: c_int) -> c_int {
    match capi::wait::select(nfds, rd, wr, ex, i64::from(ms)) {
        Ok(n) => n as c_int,
        Err(e) => err(e),
    }
}

#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    t: *mut libc::timeval,
) -> c_int {
    if sets_have_ustack(nfds, [rd, wr, ex]) {
        let ms = match t.as_ref() {
            None => -1,
            Some(t) => (t.tv_sec * 1000 + (t.tv_usec as u64).div_ceil(1000) as i64).clamp(0, i32::MAX as i64) as c_int,
        };
        return select_ustack(nfds, rd, wr, ex, ms);
    }
    real!(
        "select",
        unsafe extern "C" fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int
    )(nfds, rd, wr, ex, t)
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if sets_have_ustack(nfds, [rd, wr, ex]) {
        if !mask.is_null() {
            capi::unsupported("pselect's signal mask (ignored while ustack sockets are polled)", Errno(0));
        }
        return select_ustack(nfds, rd, wr, ex, ms_of_timespec(t));
    }
    real!(
        "pselect",
        unsafe extern "C" fn(
            c_int,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *const libc::timespec,
            *const libc::sigset_t,
        ) -> c_int
    )(nfds, rd, wr, ex, t, mask)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int {
    if is_ustack(fd) {
        return ffi::ustack_epoll_ctl(epfd, op, fd, ev);
    }
    let r = real!("epoll_ctl", unsafe extern "C" fn(c_int, c_int, c_int, *mut libc::epoll_event) -> c_int)(epfd, op, fd, ev);
    if r == 0 {
        capi::wait::kernel_member(epfd, op);
    }
    if r == 0 && op == libc::EPOLL_CTL_ADD && ACTIVE.load(Ordering::Relaxed) {
        // An epoll set inside another one is watched (it may hold ustack sockets).
        capi::wait::watched_by_epoll(fd);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int {
    if capi::is_ustack_epoll(epfd) {
        return ffi::ustack_epoll_wait(epfd, ev, max, timeout);
    }
    capi::wait::before_kernel_wait();
    real!("epoll_wait", unsafe extern "C" fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int)(epfd, ev, max, timeout)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    if capi::is_ustack_epoll(epfd) {
        if !mask.is_null() {
            capi::unsupported("epoll_pwait's signal mask (ignored for sets with ustack sockets)", Errno(0));
        }
        return ffi::ustack_epoll_wait(epfd, ev, max, timeout);
    }
    capi::wait::before_kernel_wait();
    real!("epoll_pwait", unsafe extern "C" fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int)(
        epfd, ev, max, timeout, mask,
    )
}

// sendfile64 shares sendfile's body: off_t is 64 bits on the targets this builds for.
const _: () = assert!(std::mem::size_of::<off_t>() == std::mem::size_of::<c_long>());
