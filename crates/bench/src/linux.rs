//! Linux kernel TCP: the baseline's server and, for every run, the client.
//!
//! The client is the same code whichever server it measures (a kernel server
//! on loopback or over a veth, or ustack on a TAP), so the ratio compares
//! servers and paths, never two clients.

use crate::report::{timed_transactions, Figures};
use crate::{cpu_time, Params, Workload};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a socket waits for the other side before the run is declared
/// stuck: bounds a run against a server that stopped answering.
const STUCK: Duration = Duration::from_secs(10);

/// The loopback baseline: a kernel server and the client on 127.0.0.1, or
/// on ::1 for an IPv6 run.
pub(crate) fn run(workload: Workload, p: &Params) -> io::Result<Figures> {
    let at = if p.ip6 { "[::1]:0" } else { "127.0.0.1:0" };
    let server = KernelServer::spawn(workload, p.message, move || {
        TcpListener::bind(at).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {at}: {e}")))
    })?;
    let figures = client(workload, server.addr, p);
    server.stop()?;
    figures
}

/// A kernel server on its own thread, one connection at a time until
/// stopped: a sink for stream, an echo of `message`-byte requests for rr and
/// crr.
pub(crate) struct KernelServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl KernelServer {
    /// `setup` runs first on the server's thread (it may enter a namespace
    /// and configure a link there) and gives the listener; this returns once
    /// the server listens.
    pub(crate) fn spawn<F>(workload: Workload, message: usize, setup: F) -> io::Result<KernelServer>
    where
        F: FnOnce() -> io::Result<TcpListener> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = Arc::clone(&stop);
        let thread = thread::spawn(move || -> io::Result<()> {
            let listener = match setup().and_then(|l| l.local_addr().map(|a| (l, a))) {
                Ok((l, addr)) => {
                    let _ = tx.send(Ok(addr));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            serve(&listener, workload, message, &server_stop, false)
        });
        match rx.recv() {
            Ok(Ok(addr)) => Ok(KernelServer { addr, stop, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(join(thread).err().unwrap_or_else(|| io::Error::other("the server thread ended early"))),
        }
    }

    /// A server on `listener` (made already, e.g. one of several sharing a
    /// port with `SO_REUSEPORT`). rr's and stream's connections each get a
    /// thread of their own, as several may come to one listener at once;
    /// crr's short ones are served in turn.
    pub(crate) fn spawn_concurrent(
        workload: Workload,
        message: usize,
        listener: TcpListener,
    ) -> io::Result<KernelServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = Arc::clone(&stop);
        let spread = workload != Workload::Crr;
        let thread = thread::spawn(move || serve(&listener, workload, message, &server_stop, spread));
        Ok(KernelServer { addr, stop, thread })
    }

    /// Stop accepting and wait for the thread (at most a poll interval, or
    /// [`STUCK`] when a connection is still being served).
    pub(crate) fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        join(self.thread)
    }
}

fn join(thread: thread::JoinHandle<io::Result<()>>) -> io::Result<()> {
    thread.join().unwrap_or_else(|_| Err(io::Error::other("the kernel server thread panicked")))
}

/// How often a waiting server looks at its stop flag.
const STOP_POLL_MS: libc::c_int = 50;

fn serve(
    listener: &TcpListener,
    workload: Workload,
    message: usize,
    stop: &AtomicBool,
    spread: bool,
) -> io::Result<()> {
    // Non-blocking, so that stopping needs no wake-up connection (which a
    // broken path could not deliver).
    listener.set_nonblocking(true)?;
    let mut buf = vec![0u8; message.max(1)];
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; an interrupted poll just loops.
        unsafe { libc::poll(&mut pfd, 1, STOP_POLL_MS) };
        match listener.accept() {
            // A connection that fails ends; the server goes on to the next,
            // as a real one would.
            Ok((s, _)) if spread => {
                thread::spawn(move || {
                    let mut buf = vec![0u8; message.max(1)];
                    let _ = s.set_nonblocking(false).and_then(|()| handle(s, workload, &mut buf));
                });
            }
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false).and_then(|()| handle(s, workload, &mut buf));
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn handle(mut s: TcpStream, workload: Workload, buf: &mut [u8]) -> io::Result<()> {
    s.set_read_timeout(Some(STUCK))?;
    s.set_write_timeout(Some(STUCK))?;
    if workload == Workload::Stream {
        let mut sink = vec![0u8; 256 * 1024];
        while s.read(&mut sink)? > 0 {}
        return Ok(());
    }
    s.set_nodelay(true)?;
    // Echo until the client closes (crr: waiting for its close, as a server would).
    while s.read_exact(buf).is_ok() {
        s.write_all(buf)?;
    }
    Ok(())
}

/// Run `workload` against the server at `addr` for `p.duration`.
pub(crate) fn client(workload: Workload, addr: SocketAddr, p: &Params) -> io::Result<Figures> {
    client_from(workload, addr, p, None)
}

/// Which client port a connection comes from: the kernel's pick (`None`),
/// or the first free one from 1024 up that the filter accepts (the way a
/// benchmark puts rr's and stream's one connection on a given shard).
pub(crate) type PortPick<'a> = Option<&'a (dyn Fn(u16) -> bool + Sync)>;

/// [`client`], with rr's and stream's connection from a port `pick`
/// accepts; crr's many connections always take the kernel's ports.
pub(crate) fn client_from(workload: Workload, addr: SocketAddr, p: &Params, pick: PortPick) -> io::Result<Figures> {
    let (result, what) = match workload {
        Workload::Stream => (stream(addr, p, pick), "stream to"),
        Workload::Rr => (rr(addr, p, pick), "rr with"),
        Workload::Crr => (crr(addr, p), "crr with"),
    };
    result.map_err(|e| io::Error::new(e.kind(), format!("{what} {addr}: {e}")))
}

fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<TcpStream> {
    connect_from(addr, nodelay, None)
}

fn connect_from(addr: SocketAddr, nodelay: bool, pick: PortPick) -> io::Result<TcpStream> {
    let s = match pick {
        None => TcpStream::connect(addr)?,
        Some(pick) => connect_picked(addr, pick)?,
    };
    s.set_nodelay(nodelay)?;
    s.set_read_timeout(Some(STUCK))?;
    s.set_write_timeout(Some(STUCK))?;
    Ok(s)
}

/// `SO_SNDBUF` (which also turns the kernel's send-buffer autotuning off).
fn set_send_buffer(s: &TcpStream, size: usize) -> io::Result<()> {
    set_socket_option(s, libc::SO_SNDBUF, &libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX))
}

/// `setsockopt(SOL_SOCKET, name, value)` on `s`.
pub(crate) fn set_socket_option<T>(s: &TcpStream, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the descriptor is open for the lifetime of `s`; the option
    // value is a `T` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn stream(addr: SocketAddr, p: &Params, pick: PortPick) -> io::Result<Figures> {
    let mut c = connect_from(addr, false, pick)?;
    if let Some(size) = p.send_buffer {
        set_send_buffer(&c, size)?;
    }
    let chunk = vec![0x5au8; p.write_size.max(1)];
    let mut sent = 0u64;
    let cpu0 = cpu_time();
    let start = Instant::now();
    while start.elapsed() < p.duration {
        c.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    c.shutdown(Shutdown::Write)?;
    // The server closes once it has read everything: only then is every
    // byte counted here delivered.
    let mut rest = [0u8; 64];
    while c.read(&mut rest)? > 0 {}
    Ok(Figures { count: sent, elapsed: start.elapsed(), cpu: cpu_time() - cpu0, latency_ns: None })
}

fn rr(addr: SocketAddr, p: &Params, pick: PortPick) -> io::Result<Figures> {
    let mut c = connect_from(addr, true, pick)?;
    let req = vec![0x11u8; p.message];
    let mut resp = vec![0u8; p.message];
    timed_transactions(p.duration, || {
        c.write_all(&req)?;
        c.read_exact(&mut resp)
    })
}

fn crr(addr: SocketAddr, p: &Params) -> io::Result<Figures> {
    let req = vec![0x22u8; p.message];
    let mut resp = vec![0u8; p.message];
    timed_transactions(p.duration, || {
        let mut c = connect(addr, true)?;
        c.write_all(&req)?;
        c.read_exact(&mut resp)?;
        drop(c); // the client closes first, within the timed transaction
        Ok(())
    })
}

/// Connect to `addr` (IPv4) from the first free client port that `pick`
/// accepts.
fn connect_picked(addr: SocketAddr, pick: &(dyn Fn(u16) -> bool + Sync)) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = addr else {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "a picked client port is IPv4 only"));
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    for port in (1024..=u16::MAX).filter(|&port| pick(port)) {
        // SAFETY: a plain socket call; the descriptor is owned by the
        // TcpStream at once, which closes it on every path.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = unsafe { TcpStream::from_raw_fd(fd) };
        let from = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED, port);
        // SAFETY: a valid sockaddr_in of the length given, on an open socket.
        if unsafe { libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) } != 0 {
            match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                e => return Err(e),
            }
        }
        let to = sockaddr_in(*to.ip(), to.port());
        // SAFETY: as for bind.
        if unsafe { libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) } != 0 {
            match io::Error::last_os_error() {
                e if matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)) => continue,
                e => return Err(e),
            }
        }
        return Ok(s);
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no free client port that the bench's pick accepts"))
}

/// `ip:port` as the socket calls take it.
pub(crate) fn sockaddr_in(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}
