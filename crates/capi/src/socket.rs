//! The socket calls, in Rust types: each returns what the C call returns
//! on success, or the `errno` Linux gives.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use ustack_core::stack::DEFAULT_RX_BURST;
use ustack_core::tcp::{ConnError, Connection, RecvError, SendError, State};
use ustack_core::{ConnectError, ListenError, Socket, TcpHandle, UdpSendError};

use crate::errno::{ignored, unsupported, Errno, EAGAIN, EBADF, EINVAL, ENOTCONN};
use crate::sys::{self, lock, raw_poll, set_ustack, Inner, Kind, Sock};

fn e(v: i32) -> Errno {
    Errno(v)
}

/// Which protocol a new socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// SOCK_STREAM.
    Tcp,
    /// SOCK_DGRAM.
    Udp,
}

/// `socket(AF_INET, type, protocol)`'s checks: the protocol, or the errno
/// Linux gives. `type` may carry SOCK_NONBLOCK and SOCK_CLOEXEC.
pub fn classify(domain: i32, ty: i32, protocol: i32) -> Result<Proto, Errno> {
    if domain != libc::AF_INET {
        return Err(e(libc::EAFNOSUPPORT));
    }
    match (ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC), protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Ok(Proto::Tcp),
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Ok(Proto::Udp),
        (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => Err(e(libc::EPROTONOSUPPORT)),
        _ => Err(e(libc::ESOCKTNOSUPPORT)),
    }
}

/// Open a socket; its descriptor is a fresh eventfd (see the crate docs).
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<RawFd, Errno> {
    let proto = classify(domain, ty, protocol)?;
    let mut g = lock()?;
    let fd = g.socket_fd()?;
    let kind = match proto {
        Proto::Tcp => Kind::TcpFresh,
        Proto::Udp => Kind::Udp { h: None },
    };
    let mut sock = Sock::new(kind, ty & libc::SOCK_NONBLOCK != 0);
    sock.cloexec = ty & libc::SOCK_CLOEXEC != 0;
    g.socks.insert(fd, sock);
    set_ustack(fd, true);
    Ok(fd)
}

/// Whether `a` is an address this stack may use locally: any, or its own.
fn check_local(g: &Inner, a: &SocketAddrV4) -> Result<(), Errno> {
    if a.ip().is_unspecified() || *a.ip() == g.stack.config().ipv4.addr {
        Ok(())
    } else {
        Err(e(libc::EADDRNOTAVAIL))
    }
}

/// `bind`.
pub fn bind(fd: RawFd, addr: SocketAddrV4) -> Result<(), Errno> {
    let mut g = lock()?;
    check_local(&g, &addr)?;
    let port = addr.port();
    let me = g.sock(fd)?;
    let (is_tcp, reuse) = (matches!(me.kind, Kind::TcpFresh), me.opts.reuseaddr || me.opts.reuseport);
    // TCP ports are ours to check (the stack knows only listeners); UDP's
    // are the stack's.
    let taken = is_tcp
        && port != 0
        && g.socks.iter().any(|(&other, s)| {
            other != fd
                && match (&s.kind, s.bound) {
                    (Kind::TcpListen { port: p, .. }, _) => *p == port,
                    (Kind::TcpFresh, Some(b)) => b.port() == port && !(reuse && (s.opts.reuseaddr || s.opts.reuseport)),
                    _ => false,
                }
        });
    let s = g.sock(fd)?;
    if s.bound.is_some() {
        return Err(EINVAL);
    }
    match s.kind {
        Kind::TcpFresh => {
            if taken {
                return Err(e(libc::EADDRINUSE));
            }
            s.bound = Some(addr);
            Ok(())
        }
        Kind::Udp { h: None } => {
            let reuse = s.opts.reuseaddr || s.opts.reuseport;
            let shared = (port != 0).then(|| g.udp_members.get(&port).and_then(|m| m.first().copied())).flatten();
            let h = match shared {
                // Linux lets a port be shared when every socket on it set SO_REUSEADDR.
                Some(first) => {
                    let all_reuse = g.udp_members[&port]
                        .iter()
                        .all(|m| g.socks.get(m).is_some_and(|o| o.opts.reuseaddr || o.opts.reuseport));
                    if !(reuse && all_reuse) {
                        return Err(e(libc::EADDRINUSE));
                    }
                    match g.socks.get(&first).map(|o| &o.kind) {
                        Some(Kind::Udp { h: Some(h) }) => *h,
                        _ => return Err(e(libc::EADDRINUSE)),
                    }
                }
                None => {
                    let h = g.stack.udp_bind(port).map_err(|_| e(libc::EADDRINUSE))?;
                    g.register(Socket::Udp(h), fd);
                    h
                }
            };
            let port = g.stack.udp_local_port(h).unwrap_or(port);
            g.udp_members.entry(port).or_default().push(fd);
            let s = g.sock(fd)?;
            s.kind = Kind::Udp { h: Some(h) };
            s.bound = Some(addr);
            Ok(())
        }
        _ => Err(EINVAL),
    }
}

/// `listen`.
pub fn listen(fd: RawFd, backlog: i32) -> Result<(), Errno> {
    let mut g = lock()?;
    let s = g.sock(fd)?;
    match s.kind {
        Kind::TcpListen { .. } => return Ok(()),
        Kind::TcpFresh => {}
        Kind::TcpConn { .. } => return Err(EINVAL),
        Kind::Udp { .. } => return Err(e(libc::EOPNOTSUPP)),
    }
    let backlog = backlog.clamp(1, 4096) as usize;
    let wanted = s.bound.map_or(0, |b| b.port());
    let buffers = s.opts.buffer_sizes();
    let port = if wanted != 0 {
        g.stack.tcp_listen_with(wanted, backlog, buffers).map_err(|err| match err {
            ListenError::AddrInUse(_) => e(libc::EADDRINUSE),
            ListenError::InvalidPort => EINVAL,
        })?;
        wanted
    } else {
        // Port 0: an ephemeral port, as Linux's autobind.
        let start = 32768 + (g.now().total_micros() % 28000) as u16;
        (0..28232u16)
            .map(|i| 32768 + (start - 32768 + i) % 28232)
            .find(|&p| g.stack.tcp_listen_with(p, backlog, buffers).is_ok())
            .ok_or(e(libc::EADDRINUSE))?
    };
    let s = g.sock(fd)?;
    s.kind = Kind::TcpListen { port, pending: Default::default() };
    s.backlog = backlog;
    let ip = s.bound.map_or(Ipv4Addr::UNSPECIFIED, |b| *b.ip());
    s.bound = Some(SocketAddrV4::new(ip, port));
    g.register(Socket::Listener(port), fd);
    Ok(())
}

/// Run `op` under the lock; while it answers EAGAIN on a blocking socket,
/// sleep on the socket's doorbell and try again.
fn blocking<T>(fd: RawFd, dontwait: bool, mut op: impl FnMut(&mut Inner) -> Result<T, Errno>) -> Result<T, Errno> {
    let wait = sys::thread_wait_fd()?;
    // The device's descriptor (-1: none) once this call has slept.
    let mut slept: Option<RawFd> = None;
    // Busy polling, from the first time the call would sleep.
    let mut spin: Option<crate::wait::Spin> = None;
    loop {
        {
            let mut g = lock()?;
            if slept.is_some() {
                // Woken (perhaps by frames): take what arrived.
                g.after_call_receiving(DEFAULT_RX_BURST);
            }
            let nonblock = g.sock(fd)?.nonblock || dontwait;
            sys::drain_wait(wait);
            let r = op(&mut g);
            g.after_call();
            match r {
                Err(err) if err == EAGAIN && !nonblock => {
                    g.kick();
                    // Sleep on this thread's own eventfd, rung with the socket's.
                    let s = g.sock(fd)?;
                    if !s.waiters.contains(&wait) {
                        s.waiters.push(wait);
                    }
                    sys::arm_wait();
                    // And on the device: frames wake this thread, which takes them.
                    slept = Some(g.device_fd().unwrap_or(-1));
                }
                r => {
                    if let Some(s) = g.socks.get_mut(&fd) {
                        s.waiters.retain(|&w| w != wait);
                    }
                    return r;
                }
            }
        }
        // The socket's own descriptor too: a close from another thread
        // (POLLNVAL) ends the sleep.
        let dev = slept.unwrap_or(-1);
        let mut p = [
            libc::pollfd { fd: wait, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd, events: 0, revents: 0 },
            libc::pollfd { fd: dev, events: libc::POLLIN, revents: 0 },
        ];
        // Busy polling: look at the descriptors without sleeping, and try
        // again (taking frames) whatever they say.
        let spinning = spin.get_or_insert_with(|| crate::wait::Spin::new(-1, None)).on();
        if dev >= 0 && !spinning {
            sys::WATCHERS.fetch_add(1, Ordering::AcqRel);
        }
        let r = raw_poll(&mut p, if spinning { 0 } else { -1 });
        if dev >= 0 && !spinning {
            sys::WATCHERS.fetch_sub(1, Ordering::AcqRel);
        }
        if spinning {
            std::thread::yield_now();
        }
        if r < 0 && sys::last_errno() == libc::EINTR {
            if let Ok(mut g) = lock() {
                if let Some(s) = g.socks.get_mut(&fd) {
                    s.waiters.retain(|&w| w != wait);
                }
            }
            return Err(e(libc::EINTR));
        }
    }
}

fn conn_errno(c: ConnError) -> Errno {
    e(match c {
        ConnError::Refused => libc::ECONNREFUSED,
        ConnError::Reset => libc::ECONNRESET,
        ConnError::TimedOut => libc::ETIMEDOUT,
        ConnError::Aborted => libc::ECONNABORTED,
    })
}

/// `accept4`: the new descriptor and the peer's address. `flags` may hold
/// SOCK_NONBLOCK and SOCK_CLOEXEC.
pub fn accept4(fd: RawFd, flags: i32) -> Result<(RawFd, SocketAddrV4), Errno> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    blocking(fd, false, |g| {
        let s = g.sock(fd)?;
        let Kind::TcpListen { port, pending } = &mut s.kind else { return Err(EINVAL) };
        let port = *port;
        let nodelay = s.opts.nodelay;
        let h = match pending.pop_front() {
            Some(h) => h,
            None => g.stack.tcp_accept(port).ok_or(EAGAIN)?,
        };
        let nfd = match g.socket_fd() {
            Ok(nfd) => nfd,
            Err(err) => {
                g.stack.tcp_abort(h);
                return Err(err);
            }
        };
        let t = g.stack.tcp_connection(h).map(|c| c.four_tuple());
        let mut sock = Sock::new(Kind::TcpConn { h }, flags & libc::SOCK_NONBLOCK != 0);
        sock.cloexec = flags & libc::SOCK_CLOEXEC != 0;
        sock.opts.nodelay = nodelay;
        if nodelay {
            g.stack.tcp_set_nodelay(h, true);
        }
        let peer = t.map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |t| v4(t.remote_addr, t.remote_port));
        sock.peer = Some(peer);
        g.socks.insert(nfd, sock);
        g.register(Socket::Tcp(h), nfd);
        set_ustack(nfd, true);
        Ok((nfd, peer))
    })
}

/// Where a connect stands: `Ok` once established, EAGAIN while the
/// handshake runs, the connection's errno if it failed.
fn connect_status(g: &mut Inner, fd: RawFd) -> Result<(), Errno> {
    let s = g.sock(fd)?;
    let Kind::TcpConn { h } = s.kind else { return Err(EBADF) };
    let Some(c) = g.stack.tcp_connection(h) else { return Err(e(libc::ECONNREFUSED)) };
    if let Some(err) = c.error() {
        g.sock(fd)?.err_reported = true;
        return Err(conn_errno(err));
    }
    match c.state() {
        State::SynSent => Err(EAGAIN),
        State::Closed => Err(e(libc::ECONNREFUSED)),
        _ => Ok(()),
    }
}

/// `connect`.
pub fn connect(fd: RawFd, addr: SocketAddrV4) -> Result<(), Errno> {
    {
        let mut g = lock()?;
        let s = g.sock(fd)?;
        match s.kind {
            Kind::Udp { h } => {
                if addr.ip().is_unspecified() && addr.port() == 0 {
                    s.peer = None; // AF_UNSPEC-like: dissolve the association
                    return Ok(());
                }
                s.peer = Some(addr);
                if h.is_none() {
                    udp_autobind(&mut g, fd)?;
                }
                return Ok(());
            }
            Kind::TcpListen { .. } => return Err(EINVAL),
            Kind::TcpConn { h } => {
                let nonblock = s.nonblock;
                let state = g.stack.tcp_state(h);
                return match state {
                    Some(State::SynSent) if nonblock => Err(e(libc::EALREADY)),
                    Some(State::SynSent) => {
                        drop(g);
                        blocking(fd, false, |g| connect_status(g, fd))
                    }
                    _ => match connect_status(&mut g, fd) {
                        Ok(()) => Err(e(libc::EISCONN)),
                        Err(err) => Err(err),
                    },
                };
            }
            Kind::TcpFresh => {}
        }
        if addr.port() == 0 {
            return Err(e(libc::ECONNREFUSED));
        }
        if addr.ip().is_loopback() {
            return Err(unsupported("connecting to a loopback address", e(libc::ENETUNREACH)));
        }
        let now = g.now();
        let buffers = g.sock(fd)?.opts.buffer_sizes();
        let h = g.stack.tcp_connect_with(now, addr, buffers).map_err(|err| match err {
            ConnectError::NoFreePort => e(libc::EADDRNOTAVAIL),
            ConnectError::TableFull => e(libc::EAGAIN),
            ConnectError::InvalidAddress | ConnectError::NoSourceAddress => e(libc::ENETUNREACH),
        })?;
        let s = g.sock(fd)?;
        s.kind = Kind::TcpConn { h };
        s.peer = Some(addr);
        let (nodelay, nonblock) = (s.opts.nodelay, s.nonblock);
        if nodelay {
            g.stack.tcp_set_nodelay(h, true);
        }
        g.register(Socket::Tcp(h), fd);
        g.after_call();
        if nonblock {
            return Err(e(libc::EINPROGRESS));
        }
    }
    blocking(fd, false, |g| connect_status(g, fd))
}

/// Flags of `send`/`recv` this library honours; others are refused.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_MORE;
const RECV_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_WAITALL;

fn epipe(flags: i32) -> Errno {
    if flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raising a signal in our own thread, as the kernel would.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    e(libc::EPIPE)
}

/// `sendto` (and `send`, `write`: `dst` None). Returns bytes sent.
pub fn sendto(fd: RawFd, data: &[u8], flags: i32, dst: Option<SocketAddrV4>) -> Result<usize, Errno> {
    if flags & !SEND_FLAGS != 0 {
        return Err(unsupported("a send flag other than MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE", e(libc::EOPNOTSUPP)));
    }
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    let mut done = 0usize;
    loop {
        // A blocking stream send returns when everything is queued.
        let mut whole = false;
        let r = blocking(fd, dontwait, |g| {
            let r = send_some(g, fd, &data[done..], flags, dst);
            whole = g.socks.get(&fd).is_some_and(|s| matches!(s.kind, Kind::TcpConn { .. }) && !s.nonblock);
            r
        });
        match r {
            Ok(n) => {
                done += n;
                if !whole || done == data.len() || dontwait {
                    return Ok(done);
                }
            }
            Err(err) if done > 0 && err != EAGAIN => return Ok(done),
            Err(err) => return Err(err),
        }
    }
}

fn send_some(g: &mut Inner, fd: RawFd, data: &[u8], flags: i32, dst: Option<SocketAddrV4>) -> Result<usize, Errno> {
    let s = g.sock(fd)?;
    match s.kind {
        Kind::TcpFresh | Kind::TcpListen { .. } => Err(ENOTCONN),
        Kind::TcpConn { h } => {
            if s.shut_wr {
                return Err(epipe(flags));
            }
            let reported = s.err_reported;
            match g.stack.tcp_state(h) {
                Some(State::SynSent) => return Err(EAGAIN),
                None => return Err(epipe(flags)),
                _ => {}
            }
            if data.is_empty() {
                return Ok(0);
            }
            match g.stack.tcp_send(h, data) {
                Ok(0) | Err(SendError::Full) => Err(EAGAIN),
                Ok(n) => {
                    g.deferred_bytes += n;
                    Ok(n)
                }
                Err(SendError::Closing) | Err(SendError::Closed(None)) => Err(epipe(flags)),
                Err(SendError::Closed(Some(c))) if !reported => {
                    g.sock(fd)?.err_reported = true;
                    Err(conn_errno(c))
                }
                Err(SendError::Closed(Some(_))) => Err(epipe(flags)),
            }
        }
        Kind::Udp { h } => {
            let to = dst.or(s.peer).ok_or(e(libc::EDESTADDRREQ))?;
            if to.ip().is_broadcast() && !s.opts.broadcast {
                return Err(e(libc::EACCES));
            }
            let h = match h {
                Some(h) => h,
                None => udp_autobind(g, fd)?,
            };
            match g.stack.udp_send_to(h, to, data) {
                Ok(()) => {
                    g.deferred_bytes += data.len();
                    Ok(data.len())
                }
                Err(UdpSendError::WouldBlock) => Err(EAGAIN),
                Err(UdpSendError::TooBig { .. }) => Err(e(libc::EMSGSIZE)),
                Err(UdpSendError::NotBound) => Err(EBADF),
            }
        }
    }
}

/// `recvfrom` (and `recv`, `read`): bytes received (for UDP with MSG_TRUNC,
/// the datagram's length) and the sender.
pub fn recvfrom(fd: RawFd, buf: &mut [u8], flags: i32) -> Result<(usize, Option<SocketAddrV4>), Errno> {
    if flags & !RECV_FLAGS != 0 {
        return Err(unsupported("a receive flag other than MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, MSG_WAITALL", e(libc::EOPNOTSUPP)));
    }
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    let mut done = 0usize;
    loop {
        let r = blocking(fd, dontwait, |g| recv_some(g, fd, &mut buf[done..], flags));
        match r {
            Ok((n, from)) => {
                done += n;
                let waitall = flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0;
                let stream = from.is_none();
                if !(waitall && stream) || n == 0 || done == buf.len() {
                    return Ok((if stream { done } else { n }, from));
                }
            }
            Err(err) if done > 0 => {
                let _ = err;
                return Ok((done, None));
            }
            Err(err) => return Err(err),
        }
    }
}

fn recv_some(g: &mut Inner, fd: RawFd, buf: &mut [u8], flags: i32) -> Result<(usize, Option<SocketAddrV4>), Errno> {
    let peek = flags & libc::MSG_PEEK != 0;
    let s = g.sock(fd)?;
    match s.kind {
        Kind::TcpFresh | Kind::TcpListen { .. } => Err(ENOTCONN),
        Kind::TcpConn { h } => {
            if s.shut_rd {
                return Ok((0, None));
            }
            if !s.peeked_bytes.is_empty() && !buf.is_empty() {
                let n = buf.len().min(s.peeked_bytes.len());
                for (i, b) in s.peeked_bytes.iter().take(n).enumerate() {
                    buf[i] = *b;
                }
                if !peek {
                    s.peeked_bytes.drain(..n);
                }
                return Ok((n, None));
            }
            let reported = s.err_reported;
            let r = g.stack.tcp_recv(h, buf);
            match r {
                Ok(n) => {
                    if peek {
                        g.sock(fd)?.peeked_bytes.extend(&buf[..n]);
                    }
                    Ok((n, None))
                }
                Err(RecvError::WouldBlock) => Err(EAGAIN),
                Err(RecvError::Closed) => Ok((0, None)),
                Err(RecvError::Connection(c)) if !reported => {
                    g.sock(fd)?.err_reported = true;
                    Err(conn_errno(c))
                }
                Err(RecvError::Connection(_)) => Ok((0, None)),
            }
        }
        Kind::Udp { h } => {
            let Some(h) = h else { return Err(EAGAIN) };
            let (peer, trunc) = (s.peer, flags & libc::MSG_TRUNC != 0);
            udp_distribute(g, fd, h);
            let s = g.sock(fd)?;
            let mut copy = |data: &[u8], from: SocketAddrV4| {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                (if trunc { data.len() } else { n }, Some(from))
            };
            if let Some((data, from)) = s.inbox.front() {
                let r = copy(data, *from);
                if !peek {
                    let (data, _) = s.inbox.pop_front().expect("front exists");
                    s.inbox_bytes -= data.len();
                }
                return Ok(r);
            }
            loop {
                let got = if peek {
                    g.stack.udp_recv_with(h, |data, from| (data.to_vec(), from)).map(|(d, f)| (copy(&d, f), Some((d, f))))
                } else {
                    g.stack.udp_recv_with(h, |data, from| (copy(data, from), None))
                };
                let Some((r, kept)) = got else { return Err(EAGAIN) };
                let from = r.1.expect("UDP has a sender");
                if peer.is_some_and(|p| p != from) {
                    continue; // a connected UDP socket hears only its peer
                }
                if let Some((d, f)) = kept {
                    let s = g.sock(fd)?;
                    s.inbox_bytes += d.len();
                    s.inbox.push_back((d, f));
                }
                return Ok(r);
            }
        }
    }
}

/// Bind a UDP socket to an ephemeral port (sendto or connect before bind).
fn udp_autobind(g: &mut Inner, fd: RawFd) -> Result<ustack_core::UdpHandle, Errno> {
    let h = g.stack.udp_bind(0).map_err(|_| e(libc::EAGAIN))?;
    let port = g.stack.udp_local_port(h).unwrap_or(0);
    g.udp_members.entry(port).or_default().push(fd);
    g.sock(fd)?.kind = Kind::Udp { h: Some(h) };
    g.register(Socket::Udp(h), fd);
    Ok(h)
}

/// On a port several sockets share, move what the stack received to the
/// inboxes of the sockets it belongs to: the one connected to the sender,
/// else one not connected (Linux's choice too); ring each.
fn udp_distribute(g: &mut Inner, fd: RawFd, h: ustack_core::UdpHandle) {
    let port = g.stack.udp_local_port(h).unwrap_or(0);
    let Some(members) = g.udp_members.get(&port).filter(|m| m.len() > 1).cloned() else { return };
    let limit = g.stack.config().udp_rx_bytes;
    while let Some((data, from)) = g.stack.udp_recv_with(h, |d, f| (d.to_vec(), f)) {
        let socks = &g.socks;
        let owner = members
            .iter()
            .copied()
            .find(|m| socks.get(m).is_some_and(|s| s.peer == Some(from)))
            .or_else(|| members.iter().copied().find(|m| socks.get(m).is_some_and(|s| s.peer.is_none())));
        let Some(owner) = owner else { continue }; // connected elsewhere: dropped, as by Linux
        let Some(s) = g.socks.get_mut(&owner) else { continue };
        if s.inbox_bytes + data.len() > limit {
            continue; // that socket's queue is full: dropped, as by Linux
        }
        s.inbox_bytes += data.len();
        s.inbox.push_back((data, from));
        if owner != fd {
            g.notify(owner);
        }
    }
}

/// `shutdown`.
pub fn shutdown(fd: RawFd, how: i32) -> Result<(), Errno> {
    let mut g = lock()?;
    let s = g.sock(fd)?;
    let Kind::TcpConn { h } = s.kind else {
        return Err(ENOTCONN);
    };
    let (rd, wr) = match how {
        libc::SHUT_RD => (true, false),
        libc::SHUT_WR => (false, true),
        libc::SHUT_RDWR => (true, true),
        _ => return Err(EINVAL),
    };
    s.shut_rd |= rd;
    if wr && !s.shut_wr {
        s.shut_wr = true;
        let _ = g.stack.tcp_shutdown(h);
    }
    if rd {
        // Wake anyone blocked in a read: it now returns end of stream.
        g.notify(fd);
    }
    g.after_call();
    Ok(())
}

/// `close` of a ustack socket.
pub fn close(fd: RawFd) -> Result<(), Errno> {
    if !sys::owns_stack() {
        // A forked process closing its copy: the descriptor goes, the
        // connection (which lives in the other process) stays.
        sys::set_ustack(fd, false);
        sys::raw_close(fd);
        return Ok(());
    }
    let mut g = lock()?;
    let Some(s) = g.socks.remove(&fd) else {
        if sys::is_ustack(fd) {
            // A forked shard's copy of its parent's connection: only the
            // descriptor is ours.
            set_ustack(fd, false);
            sys::raw_close(fd);
            return Ok(());
        }
        return Err(EBADF);
    };
    // Marked spare (if kept) before it stops being ours: a second `close`
    // never reaches the kernel.
    let kept = g.keep_fd(fd);
    set_ustack(fd, false);
    match s.kind {
        Kind::TcpFresh => {}
        Kind::TcpListen { port, pending } => {
            for h in pending {
                g.stack.tcp_abort(h);
            }
            g.stack.tcp_unlisten(port);
        }
        Kind::TcpConn { h } => {
            if s.opts.linger == Some(0) {
                g.stack.tcp_abort(h);
            } else {
                g.stack.tcp_close(h);
            }
        }
        Kind::Udp { h: Some(h) } => {
            let port = g.stack.udp_local_port(h).unwrap_or(0);
            let members = g.udp_members.entry(port).or_default();
            members.retain(|&m| m != fd);
            match members.first().copied() {
                None => {
                    g.udp_members.remove(&port);
                    g.stack.udp_close(h);
                }
                // The port lives on: its events go to a remaining member.
                Some(next) => g.register(Socket::Udp(h), next),
            }
        }
        Kind::Udp { h: None } => {}
    }
    for set in g.epolls.values_mut() {
        set.members.remove(&fd);
    }
    g.after_call();
    if !kept {
        g.drop_fd(fd);
    }
    Ok(())
}

/// The socket's own address (`getsockname`).
pub fn getsockname(fd: RawFd) -> Result<SocketAddrV4, Errno> {
    let mut g = lock()?;
    let own = g.stack.config().ipv4.addr;
    let s = g.sock(fd)?;
    Ok(match &s.kind {
        Kind::TcpConn { h } => {
            let h = *h;
            match g.stack.tcp_connection(h) {
                Some(c) => v4(c.four_tuple().local_addr, c.four_tuple().local_port),
                None => SocketAddrV4::new(own, 0),
            }
        }
        Kind::Udp { h: Some(h) } => {
            let ip = if s.peer.is_some() { own } else { s.bound.map_or(Ipv4Addr::UNSPECIFIED, |b| *b.ip()) };
            let h = *h;
            SocketAddrV4::new(ip, g.stack.udp_local_port(h).unwrap_or(0))
        }
        _ => s.bound.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    })
}

/// The peer's address (`getpeername`).
pub fn getpeername(fd: RawFd) -> Result<SocketAddrV4, Errno> {
    let mut g = lock()?;
    let s = g.sock(fd)?;
    if let Kind::TcpConn { h } = s.kind {
        if g.stack.tcp_state(h).is_none_or(|st| !st.is_synchronized()) {
            return Err(ENOTCONN);
        }
    }
    g.sock(fd)?.peer.ok_or(ENOTCONN)
}

/// `fcntl(F_GETFL)`: O_RDWR, with O_NONBLOCK when set.
pub fn get_flags(fd: RawFd) -> Result<i32, Errno> {
    let mut g = lock()?;
    Ok(libc::O_RDWR | if g.sock(fd)?.nonblock { libc::O_NONBLOCK } else { 0 })
}

/// `fcntl(F_GETFD)`: `FD_CLOEXEC` as the program set it (the eventfd
/// underneath is always close-on-exec: see `crate::spare`).
pub fn get_fd_flags(fd: RawFd) -> Result<i32, Errno> {
    let mut g = lock()?;
    Ok(if g.sock(fd)?.cloexec { libc::FD_CLOEXEC } else { 0 })
}

/// `fcntl(F_SETFD)`: stores `FD_CLOEXEC`; a ustack socket never survives
/// `exec` either way (the new program could not use it).
pub fn set_fd_flags(fd: RawFd, flags: i32) -> Result<(), Errno> {
    let mut g = lock()?;
    g.sock(fd)?.cloexec = flags & libc::FD_CLOEXEC != 0;
    Ok(())
}

/// `fcntl(F_SETFL)` / `ioctl(FIONBIO)`: only O_NONBLOCK matters.
pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), Errno> {
    let mut g = lock()?;
    g.sock(fd)?.nonblock = on;
    Ok(())
}

/// `ioctl(FIONREAD)`: bytes a read would return now (TCP), or the size of
/// the next datagram (UDP, 0 when none).
pub fn bytes_readable(fd: RawFd) -> Result<usize, Errno> {
    let mut g = lock()?;
    let s = g.sock(fd)?;
    match &s.kind {
        Kind::TcpConn { h } => {
            let (h, extra) = (*h, s.peeked_bytes.len());
            Ok(extra + g.stack.tcp_connection(h).map_or(0, |c| c.recv_queue()))
        }
        Kind::Udp { h: Some(h) } => {
            let h = *h;
            udp_distribute(&mut g, fd, h);
            if let Some((d, _)) = g.sock(fd)?.inbox.front() {
                return Ok(d.len());
            }
            match g.stack.udp_recv_with(h, |d, from| (d.to_vec(), from)) {
                Some((d, from)) => {
                    let n = d.len();
                    let s = g.sock(fd)?;
                    s.inbox_bytes += n;
                    s.inbox.push_back((d, from));
                    Ok(n)
                }
                None => Ok(0),
            }
        }
        _ => Ok(0),
    }
}

/// A socket option's value, as an int (every option handled here is one,
/// but SO_LINGER, which is two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptVal {
    /// An `int` option.
    Int(i32),
    /// `struct linger { l_onoff, l_linger }`.
    Linger(i32, i32),
    /// Bytes: `TCP_INFO`'s `struct tcp_info`, `TCP_CONGESTION`'s name.
    Bytes(Vec<u8>),
}

/// The smallest SO_RCVBUF/SO_SNDBUF value stored: 2 KiB of buffer, doubled
/// (Linux's floors are 2,304 and 4,608).
pub const MIN_SOCKET_BUFFER: i32 = 4096;

/// What `setsockopt(SO_RCVBUF or SO_SNDBUF, asked)` stores and `getsockopt`
/// reports, Linux's way (`sock_setsockopt`): `asked` capped at `max` (the
/// role of `net.core.rmem_max`/`wmem_max`; here the largest buffer the
/// stack's pool can back, `Stack::tcp_largest_buffer`), then doubled, then
/// raised to [`MIN_SOCKET_BUFFER`]. The buffer itself gets half of it: the
/// bytes asked for, as Linux's data room is about half of what it stores.
pub fn stored_buffer_size(asked: i32, max: usize) -> i32 {
    let max = max.min(i32::MAX as usize / 2) as i32;
    asked.min(max).saturating_mul(2).max(MIN_SOCKET_BUFFER)
}

/// `setsockopt` for the options programs commonly set.
pub fn setsockopt(fd: RawFd, level: i32, name: i32, val: OptVal) -> Result<(), Errno> {
    let mut g = lock()?;
    let largest_buffer = g.stack.tcp_largest_buffer();
    let s = g.sock(fd)?;
    let int = match val {
        OptVal::Int(v) => v,
        OptVal::Bytes(_) => return Err(unsupported("setsockopt with a value that is not an int", e(libc::ENOPROTOOPT))),
        OptVal::Linger(on, secs) => {
            if (level, name) != (libc::SOL_SOCKET, libc::SO_LINGER) {
                return Err(EINVAL);
            }
            s.opts.linger = (on != 0).then_some(secs);
            return Ok(());
        }
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => s.opts.reuseaddr = int != 0,
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => s.opts.reuseport = int != 0,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => s.opts.keepalive = int != 0,
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => s.opts.broadcast = int != 0,
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            let stored = stored_buffer_size(int, largest_buffer);
            let recv = name == libc::SO_RCVBUF;
            *(if recv { &mut s.opts.rcvbuf } else { &mut s.opts.sndbuf }) = stored;
            let buffers = s.opts.buffer_sizes();
            match s.kind {
                // Connections accepted from now on get it, as on Linux.
                Kind::TcpListen { port, .. } => {
                    g.stack.tcp_set_listen_buffers(port, buffers);
                }
                // The window is advertised already and the buffer's
                // storage cannot grow: stored and reported, not applied.
                Kind::TcpConn { .. } if recv => {
                    ignored("SO_RCVBUF on a connected TCP socket (it applies when set before connect or listen)");
                }
                Kind::TcpConn { h } => {
                    if !g.stack.tcp_set_send_buffer_size(h, (stored / 2) as usize) {
                        ignored("SO_SNDBUF on a TCP connection with data unacknowledged (it applies while none is)");
                    }
                }
                Kind::TcpFresh | Kind::Udp { .. } => {}
            }
        }
        (libc::SOL_SOCKET, libc::SO_RCVLOWAT | libc::SO_SNDLOWAT | libc::SO_PRIORITY | libc::SO_OOBINLINE) => {}
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            s.opts.nodelay = int != 0;
            if let Kind::TcpConn { h } = s.kind {
                g.stack.tcp_set_nodelay(h, int != 0);
            }
        }
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT | libc::TCP_QUICKACK | libc::TCP_DEFER_ACCEPT
            | libc::TCP_FASTOPEN | libc::TCP_CORK,
        ) => {}
        (libc::IPPROTO_IP, libc::IP_TOS | libc::IP_TTL | libc::IP_RECVERR | libc::IP_MTU_DISCOVER) => {}
        _ => return Err(unsupported("a socket option other than the common SOL_SOCKET/TCP/IP ones", e(libc::ENOPROTOOPT))),
    }
    Ok(())
}

/// `getsockopt`.
pub fn getsockopt(fd: RawFd, level: i32, name: i32) -> Result<OptVal, Errno> {
    fn conn(g: &Inner, h: Option<TcpHandle>) -> Option<&Connection> {
        h.and_then(|h| g.stack.tcp_connection(h))
    }
    let mut g = lock()?;
    let s = g.sock(fd)?;
    let b = |v: bool| OptVal::Int(i32::from(v));
    let o = s.opts;
    let h = match s.kind {
        Kind::TcpConn { h } => Some(h),
        _ => None,
    };
    Ok(match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            let mut err = 0;
            if let Kind::TcpConn { h } = s.kind {
                if !s.err_reported {
                    if let Some(c) = g.stack.tcp_connection(h).and_then(|c| c.error()) {
                        err = conn_errno(c).0;
                        g.sock(fd)?.err_reported = true;
                    }
                }
            }
            OptVal::Int(err)
        }
        (libc::SOL_SOCKET, libc::SO_TYPE) => {
            OptVal::Int(if matches!(s.kind, Kind::Udp { .. }) { libc::SOCK_DGRAM } else { libc::SOCK_STREAM })
        }
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => OptVal::Int(libc::AF_INET),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => {
            OptVal::Int(if matches!(s.kind, Kind::Udp { .. }) { libc::IPPROTO_UDP } else { libc::IPPROTO_TCP })
        }
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => b(matches!(s.kind, Kind::TcpListen { .. })),
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => b(o.reuseaddr),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => b(o.reuseport),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => b(o.keepalive),
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => b(o.broadcast),
        (libc::SOL_SOCKET, libc::SO_LINGER) => OptVal::Linger(i32::from(o.linger.is_some()), o.linger.unwrap_or(0)),
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            let bytes = conn(&g, h).map_or(g.stack.config().tcp.recv_buffer_size, Connection::recv_buffer_size);
            reported_buffer(o.rcvbuf, bytes)
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
            let bytes = conn(&g, h).map_or(g.stack.config().tcp.send_buffer_size, Connection::send_buffer_size);
            reported_buffer(o.sndbuf, bytes)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => b(o.nodelay),
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            // Linux's names for the two algorithms the stack has.
            let name = match g.stack.config().tcp.congestion {
                ustack_core::tcp::CongestionAlgorithm::Cubic => "cubic",
                ustack_core::tcp::CongestionAlgorithm::NewReno => "reno",
            };
            OptVal::Bytes(name.as_bytes().to_vec())
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => OptVal::Bytes(tcp_info(&mut g, fd)?),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            OptVal::Int(conn(&g, h).map_or(usize::from(g.stack.config().tcp.mss), Connection::mss) as i32)
        }
        _ => return Err(unsupported("getsockopt of an option other than the common SOL_SOCKET/TCP ones", e(libc::ENOPROTOOPT))),
    })
}

/// SO_RCVBUF/SO_SNDBUF as `getsockopt` reports them: the stored value, or
/// else twice the buffer's `bytes` (the connection's, which an accepted one
/// has from its listener, or the stack's), as Linux reports.
fn reported_buffer(stored: i32, bytes: usize) -> OptVal {
    OptVal::Int(if stored > 0 { stored } else { bytes.saturating_mul(2).min(i32::MAX as usize) as i32 })
}

/// `struct tcp_info` with what the connection knows (the rest zero).
fn tcp_info(g: &mut Inner, fd: RawFd) -> Result<Vec<u8>, Errno> {
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    let mut t: libc::tcp_info = unsafe { std::mem::zeroed() };
    let s = g.sock(fd)?;
    let conn = match s.kind {
        Kind::TcpConn { h } => g.stack.tcp_connection(h),
        Kind::TcpListen { .. } => {
            t.tcpi_state = 10;
            None
        }
        _ => {
            t.tcpi_state = 7;
            None
        }
    };
    if let Some(c) = conn {
        // Linux's numbering of the states (include/net/tcp_states.h).
        t.tcpi_state = match c.state() {
            State::Established => 1,
            State::SynSent => 2,
            State::SynReceived => 3,
            State::FinWait1 => 4,
            State::FinWait2 => 5,
            State::TimeWait => 6,
            State::Closed => 7,
            State::CloseWait => 8,
            State::LastAck => 9,
            State::Listen => 10,
            State::Closing => 11,
        };
        let mss = c.mss().max(1);
        let st = c.stats();
        t.tcpi_rto = c.rto().as_micros() as u32;
        t.tcpi_snd_mss = mss as u32;
        t.tcpi_rcv_mss = mss as u32;
        t.tcpi_advmss = mss as u32;
        t.tcpi_pmtu = (mss + 40) as u32;
        t.tcpi_rtt = c.srtt().map_or(0, |d| d.as_micros() as u32);
        t.tcpi_snd_cwnd = (c.cwnd() / mss) as u32;
        t.tcpi_snd_ssthresh = (c.ssthresh() / mss).min(u32::MAX as usize) as u32;
        t.tcpi_total_retrans = st.retransmits as u32;
        t.tcpi_bytes_acked = st.bytes_acked;
        t.tcpi_bytes_received = st.bytes_in;
        t.tcpi_segs_out = st.segments_out as u32;
        t.tcpi_segs_in = st.segments_in as u32;
        t.tcpi_notsent_bytes = c.send_queue() as u32;
    }
    // SAFETY: reading the bytes of a plain struct.
    let bytes = unsafe {
        std::slice::from_raw_parts(&t as *const libc::tcp_info as *const u8, std::mem::size_of::<libc::tcp_info>())
    };
    Ok(bytes.to_vec())
}

/// poll(2) bits of a socket now. With `want_out`, a socket that cannot take
/// data re-arms the stack's WRITABLE edge, so its return rings the doorbell.
pub(crate) fn poll_bits(g: &mut Inner, fd: RawFd, want_out: bool) -> i16 {
    let (pin, pout, phup, perr, prdhup) = (libc::POLLIN, libc::POLLOUT, libc::POLLHUP, libc::POLLERR, libc::POLLRDHUP);
    let Some(s) = g.socks.get_mut(&fd) else { return libc::POLLNVAL };
    match &mut s.kind {
        Kind::TcpFresh => pout | phup,
        Kind::TcpListen { port, pending } => {
            if pending.is_empty() {
                if let Some(h) = g.stack.tcp_accept(*port) {
                    pending.push_back(h);
                }
            }
            if pending.is_empty() { 0 } else { pin }
        }
        Kind::TcpConn { h } => {
            let h = *h;
            let (shut_rd, peeked, reported) = (s.shut_rd, !s.peeked_bytes.is_empty(), s.err_reported);
            let Some(c) = g.stack.tcp_connection(h) else { return pin | phup };
            let mut bits = 0;
            if c.is_readable() || shut_rd || peeked {
                bits |= pin;
            }
            let state = c.state();
            if state.is_synchronized() && c.is_writable() {
                bits |= pout;
            }
            if matches!(state, State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed) {
                bits |= prdhup | pin;
            }
            if c.error().is_some() {
                bits |= pin | pout | phup | if reported { 0 } else { perr };
            } else if state == State::Closed {
                bits |= phup;
            }
            if want_out && bits & pout == 0 && state.is_synchronized() && c.error().is_none() {
                // Re-arm WRITABLE: the probe finds the buffer full (and takes nothing).
                let _ = g.stack.tcp_send(h, &[0]);
            }
            bits
        }
        Kind::Udp { h } => {
            let Some(h) = *h else { return pout };
            udp_distribute(g, fd, h);
            let shared = g.udp_members.get(&g.stack.udp_local_port(h).unwrap_or(0)).is_some_and(|m| m.len() > 1);
            let Some(s) = g.socks.get(&fd) else { return libc::POLLNVAL };
            let readable = !s.inbox.is_empty() || (!shared && g.stack.udp_rx_queued(h) > 0);
            pout | if readable { pin } else { 0 }
        }
    }
}

/// An AF_INET socket address for a connection's address (0.0.0.0 for an
/// IPv6 one, which this AF_INET API cannot name).
fn v4(addr: std::net::IpAddr, port: u16) -> SocketAddrV4 {
    match addr {
        std::net::IpAddr::V4(a) => SocketAddrV4::new(a, port),
        std::net::IpAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::{stored_buffer_size, MIN_SOCKET_BUFFER};

    #[test]
    fn buffer_sizes_are_stored_doubled_capped_and_floored_as_linux_does() {
        let max = 1 << 20;
        assert_eq!(stored_buffer_size(65536, max), 131072);
        // Capped before doubling, as at net.core.rmem_max.
        assert_eq!(stored_buffer_size(8 << 20, max), 2 << 20);
        assert_eq!(stored_buffer_size(i32::MAX, usize::MAX), i32::MAX - 1);
        // Floored after doubling; zero and negative values get the floor.
        for asked in [1, 0, -5, i32::MIN] {
            assert_eq!(stored_buffer_size(asked, max), MIN_SOCKET_BUFFER);
        }
    }
}
