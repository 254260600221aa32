//! Linux: N idle TCP connections over loopback, and one more connection
//! doing request/response between a client thread (this one) and a server
//! thread.
//!
//! The N are held, both ends, by helper processes forked for the purpose:
//! each connection costs two descriptors, `RLIMIT_NOFILE` is per process,
//! and raising its hard limit takes a privilege (`CAP_SYS_RESOURCE`) that
//! a bench cannot count on. A helper holds as many connections as its limit
//! allows, to a listener of its own on an address of its own (127.0.1.x),
//! so that no destination runs short of the 28,232 ephemeral ports of
//! Linux's default range; which process holds a socket does not change what
//! it costs the kernel. The helpers are forked while this process runs a
//! single thread (the rr threads are joined by then), and do nothing in the
//! child but socket calls and a write to a pipe.

use super::{proc_kib, Baseline, IdleFigures, IdleParams};
use crate::report::histogram;
use hdrhistogram::Histogram;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

/// Most connections one helper holds: below the 28,232 ports of Linux's
/// default ephemeral range (32768–60999) per destination.
const PER_HOLDER: usize = 20_000;
/// Descriptors a helper keeps for its listener, its pipe and the rest.
const SPARE_FDS: u64 = 64;
/// Connects before the matching accepts (below any listen backlog).
const BATCH: usize = 100;
/// The helpers' listeners: 127.0.1.1, 127.0.1.2, …
const FIRST_HOLDER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

pub(crate) fn run(p: &IdleParams) -> Baseline {
    let n = p.connections.min(p.linux_max);
    let limit = raise_nofile(2 * n as u64 + SPARE_FDS);
    let per_holder = ((limit.saturating_sub(SPARE_FDS) / 2) as usize).min(PER_HOLDER);
    if per_holder == 0 {
        return Baseline::Failed(format!("RLIMIT_NOFILE is {limit}: no descriptors for connections"));
    }
    let holders = n.div_ceil(per_holder);
    let mut note = format!(
        "the N held by {holders} helper process{} \
         of at most {per_holder} connections (RLIMIT_NOFILE {limit})",
        if holders == 1 { "" } else { "es" }
    );
    if n < p.connections {
        note.push_str(&format!("; capped at N = {n} (--linux-max)"));
    }
    match run_n(p, n, per_holder) {
        Ok(mut f) => {
            f.note = Some(note);
            Baseline::Ran(f)
        }
        Err(e) => Baseline::Failed(format!("{e} (N = {n})")),
    }
}

fn run_n(p: &IdleParams, n: usize, per_holder: usize) -> std::io::Result<IdleFigures> {
    // The figure with none idle is taken half before the N are opened and
    // half after they are closed, so that a drift in machine conditions
    // during the run lands on both figures.
    let mut zero = rr(p.duration / 2, p.message)?;
    let slab0 = proc_kib("/proc/meminfo", "Slab:").unwrap_or(0);
    let t = Instant::now();
    let mut holders = Vec::new();
    let mut opened = 0;
    while opened < n {
        let count = per_holder.min(n - opened);
        let addr = Ipv4Addr::from(u32::from(FIRST_HOLDER_ADDR) + holders.len() as u32);
        holders.push(Holder::spawn(addr, count)?);
        opened += count;
    }
    let open = t.elapsed();
    let slab1 = proc_kib("/proc/meminfo", "Slab:").unwrap_or(0);
    let with_idle = rr(p.duration, p.message)?;
    drop(holders);
    zero.add(rr(p.duration / 2, p.message)?).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(IdleFigures {
        connections: n,
        open,
        bytes_per_connection: super::per_endpoint(slab0, slab1, n),
        rss_bytes_per_connection: 0.0,
        rr_ns: with_idle.value_at_quantile(0.5),
        rr_ns_zero: zero.value_at_quantile(0.5),
        rr_samples: with_idle.len(),
        rr_samples_zero: zero.len(),
        memory_method: "kernel Slab delta (/proc/meminfo, system-wide) / 2N",
        note: None,
    })
}

/// A forked process holding idle connections until it is dropped.
struct Holder {
    pid: libc::pid_t,
}

impl Holder {
    /// Forks a helper that opens `count` connections to a listener of its
    /// own on `addr`, and returns once they are all open (or with the
    /// helper's error).
    fn spawn(addr: Ipv4Addr, count: usize) -> std::io::Result<Holder> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and belong to no one else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: this process runs one thread here (see the module docs);
        // the child only makes socket calls, writes to the pipe and exits
        // with _exit, never returning into the parent's code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(rd);
            hold(parent, addr, count, wr);
        }
        let holder = Holder { pid };
        drop(wr);
        // The helper writes one status byte (0: open) and an error message
        // after anything else, then lets go of its end of the pipe.
        let mut answer = Vec::new();
        File::from(rd).read_to_end(&mut answer)?;
        match answer.split_first() {
            Some((0, _)) => Ok(holder),
            Some((_, msg)) => Err(std::io::Error::other(format!("helper on {addr}: {}", String::from_utf8_lossy(msg)))),
            None => Err(std::io::Error::other(format!("helper on {addr} exited before its connections were open"))),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The helper's life, in the child of `fork`: open the connections, say
/// so, and wait for SIGKILL (from the parent, or on its death).
fn hold(parent: libc::pid_t, addr: Ipv4Addr, count: usize, wr: OwnedFd) -> ! {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; getppid
    // and _exit have no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    let mut out = File::from(wr);
    match open_pairs(addr, count) {
        Ok(held) => {
            let _ = out.write_all(&[0]);
            drop(out);
            loop {
                // SAFETY: pause has no preconditions; it returns only after
                // a caught signal, and the loop keeps waiting.
                unsafe { libc::pause() };
                std::hint::black_box(&held);
            }
        }
        Err(e) => {
            let _ = out.write_all(format!("\u{1}{e}").as_bytes());
            // SAFETY: _exit ends the child without running the parent's
            // destructors or flushing its buffers.
            unsafe { libc::_exit(1) }
        }
    }
}

/// `count` connections to a new listener on `addr`, both ends, each set to
/// close with a RST.
fn open_pairs(addr: Ipv4Addr, count: usize) -> std::io::Result<Vec<TcpStream>> {
    let listener = TcpListener::bind(SocketAddrV4::new(addr, 0))?;
    let to = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * count);
    let mut opened = 0;
    while opened < count {
        let batch = BATCH.min(count - opened);
        for _ in 0..batch {
            held.push(TcpStream::connect(to)?);
        }
        for _ in 0..batch {
            held.push(listener.accept()?.0);
        }
        opened += batch;
    }
    for s in &held {
        abort_on_close(s);
    }
    Ok(held)
}

/// Linger 0: close with a RST, so that the N leave no TIME-WAIT sockets
/// behind to hold loopback ports for a minute after the run (a helper's
/// sockets close when it is killed).
fn abort_on_close(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // A failure only means a TIME-WAIT socket, so it is ignored.
    let _ = crate::linux::set_socket_option(s, libc::SO_LINGER, &linger);
}

/// Request/response on a fresh loopback connection for `duration`.
fn rr(duration: Duration, size: usize) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let req = vec![0x11u8; size];
    let mut resp = vec![0u8; size];
    for _ in 0..100 {
        c.write_all(&req)?;
        c.read_exact(&mut resp)?;
    }
    let mut h = histogram();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut resp)?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    drop(c);
    server.join().expect("server thread")?;
    Ok(h)
}

/// Raise the soft descriptor limit towards `wanted`, up to the hard limit
/// (and past it where the process may: root with `CAP_SYS_RESOURCE`, up to
/// `fs.nr_open`). Returns the limit in force.
fn raise_nofile(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    let (cur, max) = (rl.rlim_cur, rl.rlim_max);
    if cur >= wanted {
        return cur;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    let ceiling = wanted.min(nr_open.unwrap_or(max).max(max));
    for to in [ceiling, wanted.min(max)] {
        let want = libc::rlimit { rlim_cur: to, rlim_max: to.max(max) };
        if to > cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return to;
        }
    }
    cur
}
