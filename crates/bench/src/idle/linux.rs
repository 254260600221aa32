//! Linux: N idle TCP connections over loopback held by this process (both
//! ends), and one more connection doing request/response between a client
//! thread (this one) and a server thread.

use super::{proc_kib, Baseline, IdleFigures, IdleParams};
use crate::report::histogram;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

/// Connections to one listener address: below the 28,232 ports of Linux's
/// default ephemeral range (32768–60999) per destination.
const PER_ADDRESS: usize = 20_000;
/// Descriptors kept for the rr connection, listeners and the rest.
const SPARE_FDS: u64 = 64;
/// Connects before the matching accepts (below any listen backlog).
const BATCH: usize = 100;

pub(crate) fn run(p: &IdleParams) -> Baseline {
    let wanted = 2 * p.connections.min(p.linux_max) as u64 + SPARE_FDS;
    let (limit, raised) = raise_nofile(wanted);
    let fd_cap = (limit.saturating_sub(SPARE_FDS) / 2) as usize;
    let n = p.connections.min(p.linux_max).min(fd_cap);
    let mut note = String::from("kernel memory: system-wide /proc/meminfo Slab delta / 2N");
    if n < p.connections {
        if n == fd_cap {
            note.push_str(&format!(
                "; capped at N = {n}: RLIMIT_NOFILE is {limit} (2 descriptors per connection; {})",
                if raised { "raised as far as allowed" } else { "could not raise it" }
            ));
        } else {
            note.push_str(&format!("; capped at N = {n} (--linux-max)"));
        }
    }
    match run_n(p, n) {
        Ok(mut f) => {
            f.note = Some(note);
            Baseline::Ran(f)
        }
        Err(e) => Baseline::Failed(format!("{e} (N = {n})")),
    }
}

fn run_n(p: &IdleParams, n: usize) -> std::io::Result<IdleFigures> {
    // The figure with none idle is taken half before the N are opened and
    // half after they are closed, so that a drift in machine conditions
    // during the run lands on both figures.
    let mut zero = rr(p.duration / 2, p.message)?;
    let listeners: Vec<TcpListener> = (0..n.div_ceil(PER_ADDRESS).max(1))
        .map(|i| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1 + i as u8), 0)))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
    let mut held: Vec<TcpStream> = Vec::with_capacity(2 * n);
    let slab0 = proc_kib("/proc/meminfo", "Slab:").unwrap_or(0);
    let t = Instant::now();
    let mut opened = 0;
    while opened < n {
        let batch = BATCH.min(n - opened);
        let mut per_listener = vec![0usize; listeners.len()];
        for i in opened..opened + batch {
            let k = i % listeners.len();
            held.push(TcpStream::connect(addrs[k])?);
            per_listener[k] += 1;
        }
        for (k, count) in per_listener.into_iter().enumerate() {
            for _ in 0..count {
                held.push(listeners[k].accept()?.0);
            }
        }
        opened += batch;
    }
    let open = t.elapsed();
    let slab1 = proc_kib("/proc/meminfo", "Slab:").unwrap_or(0);
    let with_idle = rr(p.duration, p.message)?;
    for s in &held {
        abort_on_close(s);
    }
    drop(held);
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

/// Linger 0: close with a RST, so that the N leave no TIME-WAIT sockets
/// behind to hold loopback ports for a minute after the run.
fn abort_on_close(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the descriptor is open for the lifetime of `s`; the option
    // value is a `linger` of the size given. A failure only means a
    // TIME-WAIT socket, so it is ignored.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
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

/// Raise the descriptor limit towards `wanted`: the soft limit up to the
/// hard one, and where the process may (root), the hard limit too, up to
/// the system's `fs.nr_open`. Returns the limit in force and whether it is
/// as high as this process can make it.
fn raise_nofile(wanted: u64) -> (u64, bool) {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return (1024, false);
    }
    let (cur, max) = (rl.rlim_cur, rl.rlim_max);
    if cur >= wanted {
        return (cur, true);
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    let ceiling = wanted.min(nr_open.unwrap_or(max).max(max));
    for to in [ceiling, max] {
        let want = libc::rlimit { rlim_cur: to, rlim_max: to.max(max) };
        if to > cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return (to, true);
        }
    }
    (cur, false)
}
