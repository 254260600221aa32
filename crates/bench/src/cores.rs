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
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::FromRawFd;

/// ustack and Linux at one core count.
#[derive(Clone, Debug)]
pub struct CoresPoint {
    pub cores: usize,
    pub ustack: Figures,
    pub linux: Figures,
    /// What each of ustack's shards carried, where the run reads it back
    /// from the shards (over a device); empty on the in-memory link.
    pub shards: Vec<ShardShare>,
}

/// One shard's share of a run: its own counters at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardShare {
    /// Connections it established (`tcp_established`).
    pub connections: u64,
    /// TCP segments it took in (`tcp_rx`).
    pub segments: u64,
    /// Frames its device queue received for another shard and handed over
    /// (`shard_handoffs`): zero where the device steers by ustack's hash.
    pub handoffs: u64,
}

/// Both stacks at each of `counts` cores.
pub fn run_cores(workload: Workload, p: &Params, counts: &[usize]) -> io::Result<Vec<CoresPoint>> {
    counts
        .iter()
        .map(|&n| {
            let linux = linux_side(workload, p, n)?;
            let ustack = ustack_side(workload, p, n).map_err(io::Error::other)?;
            Ok(CoresPoint { cores: n, ustack, linux, shards: Vec::new() })
        })
        .collect()
}

/// Threads' figures as one side's: counts added, the longest time.
pub(crate) fn combine(parts: Vec<Figures>, cpu: std::time::Duration) -> Figures {
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
    let servers = reuseport_servers(workload, p, Ipv4Addr::LOCALHOST, 0, n)?;
    let addr = servers[0].addr;
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

/// `n` kernel servers, each on its own `SO_REUSEPORT` listener on
/// `ip:port` (port 0: one the first listener is given).
pub(crate) fn reuseport_servers(
    workload: Workload,
    p: &Params,
    ip: Ipv4Addr,
    port: u16,
    n: usize,
) -> io::Result<Vec<linux::KernelServer>> {
    let mut port = port;
    (0..n.max(1))
        .map(|_| {
            let listener = reuseport_listener(ip, port)?;
            port = listener.local_addr()?.port();
            linux::KernelServer::spawn_concurrent(workload, p.message, listener)
        })
        .collect()
}

/// A listener with `SO_REUSEPORT` on `ip:port` (port 0: a free one).
fn reuseport_listener(ip: Ipv4Addr, port: u16) -> io::Result<TcpListener> {
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
        let sin = linux::sockaddr_in(ip, port);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), len))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {ip}:{port}: {e}")))?;
        check(libc::listen(fd, 1024))?;
        Ok(listener)
    }
}

/// The main figure of a point's side: per second (Gbit/s for stream).
fn main_figure(workload: Workload, f: &Figures) -> f64 {
    match workload {
        Workload::Stream => f.per_second() * 8.0 / 1e9,
        _ => f.per_second(),
    }
}

/// CPU per operation for people: µs per transaction or connection, ns per
/// KiB for stream.
fn cpu_per_op(workload: Workload, f: &Figures) -> f64 {
    match workload {
        Workload::Stream => f.cpu_ns_per_op() * 1024.0,
        _ => f.cpu_ns_per_op() / 1000.0,
    }
}

/// A table for people: each core count's figures, the ratio, the scaling,
/// the CPU per operation; `device` names ustack's multi-queue device (a
/// device run), `None` for the in-memory link.
pub fn cores_table(workload: Workload, device: Option<&str>, points: &[CoresPoint]) -> String {
    let (unit, cpu_unit) = match workload {
        Workload::Stream => ("Gbit/s", "ns/KiB"),
        Workload::Rr => ("transactions/s", "µs/op"),
        Workload::Crr => ("connections/s", "µs/op"),
    };
    let paths = match device {
        Some(d) => format!(
            "ustack as N shards on {d} with a queue each, Linux with N SO_REUSEPORT server threads on a veth pair, \
             the kernel's client on both"
        ),
        None => "ustack as N shards on the in-memory link, Linux with N SO_REUSEPORT server threads on loopback".into(),
    };
    let mut s = format!("{} on N cores: {paths} ({unit}; CPU {cpu_unit}, the whole process)\n", workload.name());
    s.push_str(&format!(
        "{:>5} {:>14} {:>14} {:>8} {:>15} {:>14} {:>11} {:>11}\n",
        "cores", "ustack", "linux", "ratio", "ustack scaling", "linux scaling", "ustack cpu", "linux cpu"
    ));
    let base = points.first();
    for p in points {
        let (u, l) = (main_figure(workload, &p.ustack), main_figure(workload, &p.linux));
        let scale = |x: f64, b: f64| x / b.max(1e-12);
        s.push_str(&format!(
            "{:>5} {:>14.3} {:>14.3} {:>8.2} {:>14.2}x {:>13.2}x {:>11.2} {:>11.2}\n",
            p.cores,
            u,
            l,
            u / l.max(1e-12),
            base.map_or(1.0, |b| scale(u, main_figure(workload, &b.ustack))),
            base.map_or(1.0, |b| scale(l, main_figure(workload, &b.linux))),
            cpu_per_op(workload, &p.ustack),
            cpu_per_op(workload, &p.linux),
        ));
    }
    for p in points.iter().filter(|p| !p.shards.is_empty()) {
        let shares: Vec<String> = p
            .shards
            .iter()
            .enumerate()
            .map(|(k, sh)| format!("shard {k} {} connections, {} handoffs", sh.connections, sh.handoffs))
            .collect();
        s.push_str(&format!("  {} cores: {}\n", p.cores, shares.join("; ")));
    }
    s
}

/// The same as JSON: `workload`, `path` and `linux_path` (`memory` and
/// `loopback`, or the device's kind and `veth`; `device` with a device),
/// and `points`, each with `cores`, `ustack`, `linux` (per second,
/// Gbit/s for stream), `ratio`, each side's `scaling` from the first point
/// and CPU ns per operation (per byte for stream), and over a device
/// `ustack_shards`: each shard's `connections`, `segments` and `handoffs`.
pub fn cores_json(workload: Workload, device: Option<&str>, points: &[CoresPoint]) -> String {
    let fig = |f: &Figures| main_figure(workload, f);
    let base = points.first().map(|b| (fig(&b.ustack), fig(&b.linux)));
    let rows: Vec<String> = points
        .iter()
        .map(|p| {
            let (u, l) = (fig(&p.ustack), fig(&p.linux));
            let (bu, bl) = base.unwrap_or((u, l));
            let shards: Vec<String> = p
                .shards
                .iter()
                .map(|s| {
                    format!(
                        "{{\"connections\":{},\"segments\":{},\"handoffs\":{}}}",
                        s.connections, s.segments, s.handoffs
                    )
                })
                .collect();
            let shards =
                if shards.is_empty() { String::new() } else { format!(",\"ustack_shards\":[{}]", shards.join(",")) };
            format!(
                "{{\"cores\":{},\"ustack\":{u:.3},\"linux\":{l:.3},\"ratio\":{:.4},\"ustack_scaling\":{:.4},\
                 \"linux_scaling\":{:.4},\"ustack_cpu_ns_per_op\":{:.3},\"linux_cpu_ns_per_op\":{:.3}{shards}}}",
                p.cores,
                u / l.max(1e-12),
                u / bu.max(1e-12),
                l / bl.max(1e-12),
                p.ustack.cpu_ns_per_op(),
                p.linux.cpu_ns_per_op(),
            )
        })
        .collect();
    let path = match device {
        Some(d) => format!(
            "\"path\":\"{}\",\"linux_path\":\"veth\",\"device\":\"{}\"",
            d.split(':').next().unwrap_or(d),
            d.replace(['"', '\\'], "")
        ),
        None => "\"path\":\"memory\",\"linux_path\":\"loopback\"".into(),
    };
    format!("{{\"workload\":\"{}\",{path},\"points\":[{}]}}", workload.name(), rows.join(","))
}
