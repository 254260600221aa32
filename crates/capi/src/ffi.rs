//! The C functions of `include/ustack.h`: `ustack_<call>` for each BSD
//! socket call, taking and returning what the libc call does, `-1` with
//! `errno` on failure. Calls on a descriptor that is not a ustack socket
//! fail with `EBADF`, except `ustack_poll` and `ustack_epoll_*`, which take
//! any mix.
//!
//! # Safety
//!
//! Every pointer argument must be what the libc call of the same name
//! requires: null only where that call allows it, else valid for the length
//! given with it.

#![allow(clippy::missing_safety_doc)] // the module's Safety section covers every function

use std::ffi::CStr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::raw::{c_char, c_int, c_ulong, c_void};

use libc::{iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::errno::{ret, Errno, EBADF, EFAULT, EINVAL};
use crate::socket::{self as so, OptVal};
use crate::sys::{is_ustack, StartConfig};
use crate::wait;

const SOCKADDR_IN_LEN: socklen_t = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;

/// Read a `sockaddr_in`; `AF_UNSPEC` reads as 0.0.0.0:0 (connect's
/// "dissolve the association").
///
/// # Safety
/// `addr` is null or valid for `len` bytes.
pub unsafe fn read_addr(addr: *const sockaddr, len: socklen_t) -> Result<SocketAddrV4, Errno> {
    if addr.is_null() {
        return Err(EFAULT);
    }
    if len >= 2 && c_int::from((*addr).sa_family) == libc::AF_UNSPEC {
        return Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    }
    if len < SOCKADDR_IN_LEN {
        return Err(EINVAL);
    }
    let sin = &*(addr as *const libc::sockaddr_in);
    if c_int::from(sin.sin_family) != libc::AF_INET {
        return Err(Errno(libc::EAFNOSUPPORT));
    }
    Ok(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)), u16::from_be(sin.sin_port)))
}

/// Write `a` as a `sockaddr_in`, truncated to `*len`, and set `*len` to its
/// full size (as the kernel does). Null pointers write nothing.
///
/// # Safety
/// `addr` is null or valid for `*len` bytes; `len` is null or valid.
pub unsafe fn write_addr(a: SocketAddrV4, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let n = (*len).min(SOCKADDR_IN_LEN) as usize;
    std::ptr::copy_nonoverlapping(&sin as *const _ as *const u8, addr as *mut u8, n);
    *len = SOCKADDR_IN_LEN;
}

fn ours(fd: c_int) -> Result<(), Errno> {
    if is_ustack(fd) {
        Ok(())
    } else {
        Err(EBADF)
    }
}

unsafe fn opt_str(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
}

/// Start the stack on device ("tap:NAME", "af_packet:IFACE[,opts]",
/// "af_xdp:IFACE[,opts]") with address ip ("A.B.C.D/N"), an optional gateway
/// ("A.B.C.D" or NULL) and, for a TAP, an optional address for the kernel's
/// side (host_ip, "A.B.C.D/N" or NULL). Starts the stack thread. Call it once,
/// before any socket. On failure: -1, errno EINVAL, and one line on stderr
/// saying what is wrong.
#[no_mangle]
pub unsafe extern "C" fn ustack_start(
    device: *const c_char,
    ip: *const c_char,
    gateway: *const c_char,
    host_ip: *const c_char,
) -> c_int {
    let (Some(device), Some(ip)) = (opt_str(device), opt_str(ip)) else {
        Errno(libc::EINVAL).set();
        return -1;
    };
    let cfg = StartConfig {
        device,
        ip,
        gateway: opt_str(gateway),
        host_ip: opt_str(host_ip),
        follow_fork: false,
        shard_fork: false,
        tcp_buffer: None,
        busy_poll: None,
    };
    match crate::sys::start(&cfg) {
        Ok(()) => 0,
        Err(msg) => {
            crate::sys::raw_write(2, format!("ustack: {msg}\n").as_bytes());
            Errno(libc::EINVAL).set();
            -1
        }
    }
}

/// 1 if fd is a ustack socket, else 0.
#[no_mangle]
pub extern "C" fn ustack_is_socket(fd: c_int) -> c_int {
    c_int::from(is_ustack(fd))
}

/// socket(2) for AF_INET SOCK_STREAM/SOCK_DGRAM.
#[no_mangle]
pub extern "C" fn ustack_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    ret(so::socket(domain, ty, protocol))
}

/// bind(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    ret(ours(fd).and_then(|_| so::bind(fd, read_addr(addr, len)?)).map(|_| 0))
}

/// listen(2).
#[no_mangle]
pub extern "C" fn ustack_listen(fd: c_int, backlog: c_int) -> c_int {
    ret(ours(fd).and_then(|_| so::listen(fd, backlog)).map(|_| 0))
}

/// accept4(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    ret(ours(fd).and_then(|_| so::accept4(fd, flags)).map(|(nfd, peer)| {
        write_addr(peer, addr, len);
        nfd
    }))
}

/// accept(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    ustack_accept4(fd, addr, len, 0)
}

/// connect(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    ret(ours(fd).and_then(|_| so::connect(fd, read_addr(addr, len)?)).map(|_| 0))
}

unsafe fn slice<'a>(buf: *const c_void, n: size_t) -> Result<&'a [u8], Errno> {
    if n == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(EFAULT);
    }
    Ok(std::slice::from_raw_parts(buf as *const u8, n))
}

unsafe fn slice_mut<'a>(buf: *mut c_void, n: size_t) -> Result<&'a mut [u8], Errno> {
    if n == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(EFAULT);
    }
    Ok(std::slice::from_raw_parts_mut(buf as *mut u8, n))
}

fn sret(r: Result<usize, Errno>) -> ssize_t {
    ret(r.map(|n| n as ssize_t))
}

/// sendto(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    sret((|| {
        ours(fd)?;
        let dst = if addr.is_null() { None } else { Some(read_addr(addr, len)?) };
        so::sendto(fd, slice(buf, n)?, flags, dst)
    })())
}

/// send(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    ustack_sendto(fd, buf, n, flags, std::ptr::null(), 0)
}

/// write(2) on a ustack socket.
#[no_mangle]
pub unsafe extern "C" fn ustack_write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    ustack_sendto(fd, buf, n, 0, std::ptr::null(), 0)
}

/// recvfrom(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    sret((|| {
        ours(fd)?;
        let (got, from) = so::recvfrom(fd, slice_mut(buf, n)?, flags)?;
        match from {
            Some(from) => write_addr(from, addr, len),
            // A stream socket leaves the address alone but its length.
            None if !len.is_null() && !addr.is_null() => *len = 0,
            None => {}
        }
        Ok(got)
    })())
}

/// recv(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    ustack_recvfrom(fd, buf, n, flags, std::ptr::null_mut(), std::ptr::null_mut())
}

/// read(2) on a ustack socket.
#[no_mangle]
pub unsafe extern "C" fn ustack_read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    ustack_recv(fd, buf, n, 0)
}

unsafe fn iovecs<'a>(iov: *const iovec, cnt: c_int) -> Result<&'a [iovec], Errno> {
    if !(0..=1024).contains(&cnt) {
        return Err(EINVAL);
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(EFAULT);
    }
    Ok(std::slice::from_raw_parts(iov, cnt as usize))
}

unsafe fn gather(iov: &[iovec]) -> Result<Vec<u8>, Errno> {
    let mut v = Vec::new();
    for i in iov {
        v.extend_from_slice(slice(i.iov_base, i.iov_len)?);
    }
    Ok(v)
}

unsafe fn scatter(iov: &[iovec], mut data: &[u8]) -> Result<(), Errno> {
    for i in iov {
        let n = i.iov_len.min(data.len());
        slice_mut(i.iov_base, n)?.copy_from_slice(&data[..n]);
        data = &data[n..];
    }
    Ok(())
}

/// writev(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    sret((|| {
        ours(fd)?;
        so::sendto(fd, &gather(iovecs(iov, cnt)?)?, 0, None)
    })())
}

/// readv(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    sret((|| {
        ours(fd)?;
        let iov = iovecs(iov, cnt)?;
        let mut buf = vec![0u8; iov.iter().map(|i| i.iov_len).sum()];
        let (n, _) = so::recvfrom(fd, &mut buf, 0)?;
        scatter(iov, &buf[..n.min(buf.len())])?;
        Ok(n)
    })())
}

/// sendmsg(2) (no control messages).
#[no_mangle]
pub unsafe extern "C" fn ustack_sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    sret((|| {
        ours(fd)?;
        let m = msg.as_ref().ok_or(EFAULT)?;
        let dst = if m.msg_name.is_null() { None } else { Some(read_addr(m.msg_name as *const sockaddr, m.msg_namelen)?) };
        so::sendto(fd, &gather(iovecs(m.msg_iov, m.msg_iovlen as c_int)?)?, flags, dst)
    })())
}

/// recvmsg(2) (no control messages: msg_controllen comes back 0).
#[no_mangle]
pub unsafe extern "C" fn ustack_recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    sret((|| {
        ours(fd)?;
        let m = msg.as_mut().ok_or(EFAULT)?;
        let iov = iovecs(m.msg_iov, m.msg_iovlen as c_int)?;
        let cap: usize = iov.iter().map(|i| i.iov_len).sum();
        let mut buf = vec![0u8; cap];
        let (n, from) = so::recvfrom(fd, &mut buf, flags | libc::MSG_TRUNC)?;
        scatter(iov, &buf[..n.min(cap)])?;
        m.msg_flags = if n > cap { libc::MSG_TRUNC } else { 0 };
        m.msg_controllen = 0;
        match from {
            Some(from) => write_addr(from, m.msg_name as *mut sockaddr, &mut m.msg_namelen),
            None => m.msg_namelen = 0,
        }
        Ok(if flags & libc::MSG_TRUNC != 0 { n } else { n.min(cap) })
    })())
}

/// shutdown(2).
#[no_mangle]
pub extern "C" fn ustack_shutdown(fd: c_int, how: c_int) -> c_int {
    ret(ours(fd).and_then(|_| so::shutdown(fd, how)).map(|_| 0))
}

/// close(2) of a ustack socket.
#[no_mangle]
pub extern "C" fn ustack_close(fd: c_int) -> c_int {
    ret(ours(fd).and_then(|_| so::close(fd)).map(|_| 0))
}

/// getsockname(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    ret(ours(fd).and_then(|_| so::getsockname(fd)).map(|a| {
        write_addr(a, addr, len);
        0
    }))
}

/// getpeername(2).
#[no_mangle]
pub unsafe extern "C" fn ustack_getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    ret(ours(fd).and_then(|_| so::getpeername(fd)).map(|a| {
        write_addr(a, addr, len);
        0
    }))
}

/// setsockopt(2): SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, SO_LINGER,
/// SO_BROADCAST, TCP_NODELAY, SO_RCVBUF and SO_SNDBUF (applied), TCP
/// keepalive timers, IP_TOS and a few more (accepted); others fail with
/// ENOPROTOOPT.
///
/// SO_RCVBUF and SO_SNDBUF store what Linux stores, and getsockopt reports
/// it: the value capped at the largest buffer the stack can back (the
/// stack's TCP buffer size rounded up to a power of two, at least 32 KiB,
/// 1 MiB by default: the role of net.core.rmem_max and wmem_max), doubled,
/// at least 4096. A TCP buffer gets half of it: the bytes asked for. Set before connect or
/// listen, they size the connection, and the receive size chooses the
/// window scale its SYN or SYN-ACK offers; a listener's connections inherit
/// them, also when set after listen (for those accepted after). SO_SNDBUF
/// on a connection applies while it has no data unacknowledged. SO_RCVBUF
/// on a connection, SO_SNDBUF on one with data in flight, and both on UDP
/// sockets are stored and reported only (TCP: with a warning once).
#[no_mangle]
pub unsafe extern "C" fn ustack_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    ret((|| {
        ours(fd)?;
        let v = if (level, name) == (libc::SOL_SOCKET, libc::SO_LINGER) {
            if (len as usize) < std::mem::size_of::<libc::linger>() || val.is_null() {
                return Err(EINVAL);
            }
            let l = &*(val as *const libc::linger);
            OptVal::Linger(l.l_onoff, l.l_linger)
        } else if (level, name) == (libc::SOL_SOCKET, libc::SO_RCVTIMEO)
            || (level, name) == (libc::SOL_SOCKET, libc::SO_SNDTIMEO)
        {
            return Err(crate::errno::unsupported("SO_RCVTIMEO/SO_SNDTIMEO", Errno(libc::ENOPROTOOPT)));
        } else {
            if val.is_null() || len < 1 {
                return Err(EINVAL);
            }
            let mut b = [0u8; 4];
            let n = (len as usize).min(4);
            b[..n].copy_from_slice(std::slice::from_raw_parts(val as *const u8, n));
            OptVal::Int(if n == 4 { i32::from_ne_bytes(b) } else { i32::from(b[0]) })
        };
        so::setsockopt(fd, level, name, v).map(|_| 0)
    })())
}

/// getsockopt(2): SO_ERROR, SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN,
/// what setsockopt keeps, TCP_MAXSEG.
#[no_mangle]
pub unsafe extern "C" fn ustack_getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    ret((|| {
        ours(fd)?;
        if val.is_null() || len.is_null() {
            return Err(EFAULT);
        }
        let bytes: Vec<u8> = match so::getsockopt(fd, level, name)? {
            OptVal::Int(v) => v.to_ne_bytes().to_vec(),
            OptVal::Linger(a, b) => [a.to_ne_bytes(), b.to_ne_bytes()].concat(),
            OptVal::Bytes(b) => b,
        };
        let n = (*len as usize).min(bytes.len());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), val as *mut u8, n);
        *len = n as socklen_t;
        Ok(0)
    })())
}

/// fcntl(2) with F_GETFL and F_SETFL (O_NONBLOCK is what counts), F_GETFD
/// and F_SETFD (FD_CLOEXEC as the program set it; a ustack socket never
/// survives `exec`).
#[no_mangle]
pub extern "C" fn ustack_fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    ret((|| {
        ours(fd)?;
        match cmd {
            libc::F_GETFL => so::get_flags(fd),
            libc::F_SETFL => so::set_nonblocking(fd, arg & libc::O_NONBLOCK != 0).map(|_| 0),
            libc::F_GETFD => so::get_fd_flags(fd),
            libc::F_SETFD => so::set_fd_flags(fd, arg).map(|_| 0),
            _ => Err(crate::errno::unsupported("fcntl other than F_GETFL/F_SETFL/F_GETFD/F_SETFD", EINVAL)),
        }
    })())
}

/// ioctl(2) with FIONREAD and FIONBIO (arg points to an int).
#[no_mangle]
pub unsafe extern "C" fn ustack_ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    ret((|| {
        ours(fd)?;
        let p = arg as *mut c_int;
        if p.is_null() {
            return Err(EFAULT);
        }
        match req {
            libc::FIONREAD => {
                *p = so::bytes_readable(fd)?.min(c_int::MAX as usize) as c_int;
                Ok(0)
            }
            libc::FIONBIO => so::set_nonblocking(fd, *p != 0).map(|_| 0),
            _ => Err(crate::errno::unsupported("ioctl other than FIONREAD/FIONBIO", Errno(libc::ENOTTY))),
        }
    })())
}

/// poll(2) over any mix of kernel and ustack descriptors.
#[no_mangle]
pub unsafe extern "C" fn ustack_poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout_ms: c_int) -> c_int {
    ret((|| {
        let fds = if n == 0 {
            &mut []
        } else if fds.is_null() {
            return Err(EFAULT);
        } else {
            std::slice::from_raw_parts_mut(fds, n as usize)
        };
        wait::poll(fds, i64::from(timeout_ms)).map(|n| n as c_int)
    })())
}

/// epoll_ctl(2) on a set holding any mix of kernel and ustack descriptors
/// (the set itself comes from epoll_create1(2)). Add kernel descriptors
/// through it too, not through epoll_ctl(2) itself: a wait that finds
/// ustack events asks the kernel for more only in sets known to hold
/// kernel descriptors.
#[no_mangle]
pub unsafe extern "C" fn ustack_epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int {
    ret(wait::epoll_ctl(epfd, op, fd, ev).map(|_| 0))
}

/// epoll_wait(2) on such a set.
#[no_mangle]
pub unsafe extern "C" fn ustack_epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout_ms: c_int) -> c_int {
    ret((|| {
        if max <= 0 {
            return Err(EINVAL);
        }
        if ev.is_null() {
            return Err(EFAULT);
        }
        let out = std::slice::from_raw_parts_mut(ev, max as usize);
        wait::epoll_wait(epfd, out, i64::from(timeout_ms)).map(|n| n as c_int)
    })())
}
