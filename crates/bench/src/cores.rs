//! The same workloads on N cores: ustack as N shards on the in-memory
//! link beside Linux with N server threads on one `SO_REUSEPORT` port, in
//! one run, for each N asked for; the figures that matter are the ratio to
//! Linux at each N and each side's scaling from the first N.
//!
//! ustack: N threads, thread `k` pinned to core `k` (of those the process
//! may use, wrapping round), each running server shard `k` and a client
//! stack on that shard's queue of a multi-queue link: the client's
//! ephemeral ports are picked so that the symmetric Toeplitz hash steers
//! every one of its flows to shard `k` (`Stack::set_shard`), which is what
//! a multi-queue device steering by that hash would deliver to the shard.
//! So each core carries the whole of its flows, client and server, and
//! nothing crosses between cores.
//!
//! Linux: N server threads, each with its own listener on one loopback
//! port (`SO_REUSEPORT`: the kernel spreads connections over them by
//! hash), and N client threads (unpinned: the kernel's softirq work runs
//! where it runs). crr's server threads serve connections one at a time
//! (short ones); rr's and stream's long ones each get a thread of their
//! own, since two of them may hash to one listener.
//!
//! Each side's count is the sum over its threads, its time the longest
//! thread's, its CPU the process's over the whole side.

use crate::report::Figures;
use crate::{cpu_time, linux, Params, Workload};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

/// ustack and Linux at one core count.
#[derive(Clone, Debug)]
pub struct CoresPoint {
    pub cores: usize,
    pub ustack: Figures,
    pub linux: Figures,
}

/// Both stacks at each of `counts` cores.
pub fn run_cores(workload: Workload, p: &Params, counts: &[usize]) -> io::Result<Vec<CoresPoint>> {
    counts
        .iter()
        .map(|&n| {
            let linux = linux_side(workload, p, n)?;
            let ustack = ustack_side(workload, p, n).map_err(io::Error::other)?;
            Ok(CoresPoint { cores: n, ustack, linux })
        })
        .collect()
}

fn combine(parts: Vec<Figures>, cpu: std::time::Duration) -> Figures {
    Figures {
        count: parts.iter().map(|f| f.count).sum(),
        elapsed: parts.iter().map(|f| f.elapsed).max().unwrap_or_default(),
        cpu,
        latency_ns: None,
    }
}

fn ustack_side(workload: Workload, p: &Params, n: usize) -> Result<Figures, String> {
    let cores = ustack_runtime::shard::available_cores();
    let cpu0 = cpu_time();
    let parts: Vec<Result<Figures, String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..n)
            .map(|k| {
                let core = cores[k % cores.len()];
                s.spawn(move || {
                    // Unpinned if the core is refused: the figure still counts.
                    let _ = ustack_runtime::shard::pin(core);
                    crate::ustack::run_shard(workload, p, true, Some((k, n)))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a shard thread panicked".into()))).collect()
    });
    let parts: Vec<Figures> = parts.into_iter().collect::<Result<_, String>>()?;
    Ok(combine(parts, cpu_time() - cpu0))
}

fn linux_side(workload: Workload, p: &Params, n: usize) -> io::Result<Figures> {
    let first = reuseport_listener(None)?;
    let addr = first.local_addr()?;
    let mut first = Some(first);
    let servers = (0..n)
        .map(|_| {
            let listener = match first.take() {
                Some(l) => l,
                None => reuseport_listener(Some(addr))?,
            };
            linux::KernelServer::spawn_concurrent(workload, p.message, listener)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cpu0 = cpu_time();
    let parts: Vec<io::Result<Figures>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..n).map(|_| s.spawn(|| linux::client(workload, addr, p))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("a client panicked")))).collect()
    });
    let cpu = cpu_time() - cpu0;
    for server in servers {
        server.stop()?;
    }
    let parts: Vec<Figures> = parts.into_iter().collect::<io::Result<_>>()?;
    Ok(combine(parts, cpu))
}

/// A loopback listener with `SO_REUSEPORT`, on `addr` or a free port.
fn reuseport_listener(addr: Option<SocketAddr>) -> io::Result<TcpListener> {
    let check = |r: libc::c_int| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) };
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it is handed to the TcpListener.
    unsafe {
        let fd = check(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEPORT, libc::SO_REUSEADDR] {
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            check(libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&one as *const libc::c_int).cast(), size))?;
        }
        let port = addr.map_or(0, |a| a.port());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), len))?;
        check(libc::listen(fd, 1024))?;
        Ok(listener)
    }
}

/// A table for people: each core count's figures, the ratio, the scaling.
pub fn cores_table(workload: Workload, points: &[CoresPoint]) -> String {
    let (unit, fig): (&str, fn(&Figures) -> f64) = match workload {
        Workload::Stream => ("Gbit/s", |f| f.per_second() * 8.0 / 1e9),
        Workload::Rr => ("transactions/s", |f| f.per_second()),
        Workload::Crr => ("connections/s", |f| f.per_second()),
    };
    let mut s = format!(
        "{} on N cores: ustack as N shards on the in-memory link, Linux with N SO_REUSEPORT server threads on loopback ({unit})\n",
        workload.name()
    );
    s.push_str(&format!(
        "{:>5} {:>14} {:>14} {:>8} {:>15} {:>14}\n",
        "cores", "ustack", "linux", "ratio", "ustack scaling", "linux scaling"
    ));
    let base = points.first();
    for p in points {
        let (u, l) = (fig(&p.ustack), fig(&p.linux));
        let scale = |x: f64, b: f64| x / b.max(1e-12);
        s.push_str(&format!(
            "{:>5} {:>14.3} {:>14.3} {:>8.2} {:>14.2}x {:>13.2}x\n",
            p.cores,
            u,
            l,
            u / l.max(1e-12),
            base.map_or(1.0, |b| scale(u, fig(&b.ustack))),
            base.map_or(1.0, |b| scale(l, fig(&b.linux))),
        ));
    }
    s
}

/// The same as JSON: `workload`, `unit` and `points`, each with `cores`,
/// `ustack`, `linux` (per second, Gbit/s for stream), `ratio` and each
/// side's `scaling` from the first point.
pub fn cores_json(workload: Workload, points: &[CoresPoint]) -> String {
    let fig = |f: &Figures| match workload {
        Workload::Stream => f.per_second() * 8.0 / 1e9,
        _ => f.per_second(),
    };
    let base = points.first().map(|b| (fig(&b.ustack), fig(&b.linux)));
    let rows: Vec<String> = points
        .iter()
        .map(|p| {
            let (u, l) = (fig(&p.ustack), fig(&p.linux));
            let (bu, bl) = base.unwrap_or((u, l));
            format!(
                "{{\"cores\":{},\"ustack\":{u:.3},\"linux\":{l:.3},\"ratio\":{:.4},\"ustack_scaling\":{:.4},\"linux_scaling\":{:.4}}}",
                p.cores,
                u / l.max(1e-12),
                u / bu.max(1e-12),
                l / bl.max(1e-12)
            )
        })
        .collect();
    format!("{{\"workload\":\"{}\",\"points\":[{}]}}", workload.name(), rows.join(","))
}
