//! The cores table over a multi-queue device: ustack as N shards on a
//! multi-queue TAP, one queue each (the kernel steers every flow to its
//! shard's queue with ustack's program, as under `ustack up --cores N`),
//! beside Linux with N `SO_REUSEPORT` server threads on a veth pair, in one
//! run for each N.
//!
//! The paths are those of the single-core device run ([`crate::device`]):
//! ustack's TAP and its kernel client in one private namespace; the Linux
//! server in a second, reached by the same client over a veth pair with the
//! TAP's MTU and offloads. Each side has N kernel client threads (unpinned)
//! in the client's namespace. crr's connections take the kernel's ephemeral
//! ports, so the hash spreads them over the shards; rr's and stream's N
//! long connections come from ports picked so that client `k`'s flow hashes
//! to shard `k` (on both sides: the clients are the same), so each shard
//! carries one. Linux serves each of those on a thread of its own whichever
//! listener the kernel picks, as in [`crate::cores`].
//!
//! ustack's shards are the runtime's ([`run_shards`]), pinned to the first
//! N cores the process may use, each with its own stack and device queue.
//! Each side's count is the sum over its clients, its time the longest
//! client's, its CPU the whole process's from the clients' start to the
//! last one's end (the clients' kernel work and the server, either side).

use crate::cores::{combine, reuseport_servers, CoresPoint, ShardShare};
use crate::device::{configure, DeviceSetup, Until, PORT, VETH_CLIENT, VETH_SERVER};
use crate::report::Figures;
use crate::{cpu_time, linux, netns, Params, Workload};
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use ustack_core::phy::Device;
use ustack_core::rss::{ShardHome, Toeplitz};
use ustack_core::Stack;
use ustack_runtime::apps::{TcpDiscard, TcpEcho, DEFAULT_MAX_CONNECTIONS};
use ustack_runtime::shard::{run_shards, Cores, ShardEnv, ShardSetup};
use ustack_runtime::{App, StopSignal, Waitable};

/// Run `workload` at each of `counts` cores: ustack's shards on the device
/// that `open` makes one queue at a time (shard `env.index` of
/// `env.count`, its stack on it; called inside the private namespace, in
/// shard order, the first queue's kernel side holding `setup.client`),
/// then Linux's servers on a veth pair.
pub fn run_device_cores<D, F>(
    workload: Workload,
    params: &Params,
    setup: &DeviceSetup,
    counts: &[usize],
    open: F,
) -> Result<Vec<CoresPoint>, String>
where
    D: Device + Waitable,
    F: Fn(&ShardEnv) -> Result<(Stack, D), String> + Sync,
{
    let mut points = Vec::with_capacity(counts.len());
    for &n in counts {
        // Each side on a fresh thread: its namespaces go when it ends.
        let (ustack, mtu, shards) = thread::scope(|s| {
            s.spawn(|| ustack_side(workload, params, setup, n, &open))
                .join()
                .unwrap_or_else(|_| Err("the ustack run panicked".into()))
        })?;
        let params = Params { mtu, ..*params };
        let linux = thread::scope(|s| {
            s.spawn(|| linux_side(workload, &params, setup, n).map_err(|e| e.to_string()))
                .join()
                .unwrap_or_else(|_| Err("the Linux run panicked".into()))
        })?;
        points.push(CoresPoint { cores: n, ustack, linux, shards });
    }
    Ok(points)
}

/// The TAP's namespace; the shards; the clients, started once every shard
/// listens. Returns the figures, the device's MTU and each shard's share.
fn ustack_side<D, F>(
    workload: Workload,
    p: &Params,
    setup: &DeviceSetup,
    n: usize,
    open: &F,
) -> Result<(Figures, usize, Vec<ShardShare>), String>
where
    D: Device + Waitable,
    F: Fn(&ShardEnv) -> Result<(Stack, D), String> + Sync,
{
    netns::enter_private().map_err(|e| e.to_string())?;
    netns::tune_client().map_err(|e| e.to_string())?;
    let progress = Arc::new(Progress::new(n));
    let bench = BenchShards {
        workload,
        params: *p,
        setup,
        open,
        n,
        done: &progress.done,
        progress: Arc::clone(&progress),
        mtu: AtomicUsize::new(p.mtu),
        clients: Mutex::new(None),
        device: PhantomData,
    };
    let ends = run_shards(&bench, &Cores::Count(n).assign(), &Toeplitz::default(), None, &StopSignal::unarmed());
    // The clients end by themselves (their duration, or a stuck socket's
    // timeout), even when the shards stopped early.
    let clients = bench.clients.lock().unwrap_or_else(|e| e.into_inner()).take();
    let figures = clients.map(Clients::finish);
    let ends = ends.map_err(|e| format!("ustack on {}: {e}", setup.device))?;
    if let Some(e) = ends.iter().find_map(|e| e.failure.as_ref()) {
        return Err(format!("ustack on {}: {e}", setup.device));
    }
    let figures = figures
        .unwrap_or_else(|| Err(io::Error::other("the shards ended before the clients started")))
        .map_err(|e| format!("ustack on {}: {e}", setup.device))?;
    let shares = ends
        .iter()
        .map(|end| ShardShare {
            handoffs: end.handoffs.iter().find(|(name, _)| *name == "shard_handoffs").map_or(0, |&(_, v)| v),
            ..end.summary.clone()
        })
        .collect();
    Ok((figures, bench.mtu.load(Ordering::Relaxed), shares))
}

/// The shards of a device run: each opens its queue and listens; the
/// clients start once all are open.
struct BenchShards<'a, D, F> {
    workload: Workload,
    params: Params,
    setup: &'a DeviceSetup,
    open: &'a F,
    n: usize,
    /// Raised by the last client to end: every shard's loop then ends.
    done: &'a AtomicBool,
    progress: Arc<Progress>,
    /// The device's MTU, for the Linux side's veth.
    mtu: AtomicUsize,
    clients: Mutex<Option<Clients>>,
    device: PhantomData<fn() -> D>,
}

/// A shard's apps: the server (echo or sink) and the end of the run.
struct ShardApps<'a> {
    server: Box<dyn App>,
    until: Until<'a>,
}

impl<'a, D, F> ShardSetup for BenchShards<'a, D, F>
where
    D: Device + Waitable,
    F: Fn(&ShardEnv) -> Result<(Stack, D), String> + Sync,
{
    type Device = D;
    type Apps = ShardApps<'a>;
    type Summary = ShardShare;

    fn open(&self, env: &ShardEnv) -> Result<(Stack, D, ShardApps<'a>), String> {
        let (mut stack, device) = (self.open)(env)?;
        self.mtu.store(stack.config().mtu, Ordering::Relaxed);
        let listen = |e| format!("cannot listen on port {PORT}: {e}");
        let server: Box<dyn App> = match self.workload {
            Workload::Stream => {
                Box::new(TcpDiscard::listen(&mut stack, PORT, DEFAULT_MAX_CONNECTIONS).map_err(listen)?)
            }
            _ => Box::new(TcpEcho::listen(&mut stack, PORT, DEFAULT_MAX_CONNECTIONS).map_err(listen)?),
        };
        Ok((stack, device, ShardApps { server, until: Until(self.done) }))
    }

    fn apps<'b>(&self, apps: &'b mut ShardApps<'a>) -> Vec<&'b mut dyn App> {
        vec![apps.server.as_mut(), &mut apps.until]
    }

    fn finish(&self, _env: &ShardEnv, stack: &Stack, _apps: ShardApps<'a>) -> ShardShare {
        let c = stack.counters();
        ShardShare { connections: c.tcp_established, segments: c.tcp_rx, handoffs: 0 }
    }

    fn ready(&self) {
        // On the thread that runs the shards: the clients share its namespace.
        let addr = SocketAddr::new(IpAddr::V4(self.setup.server.addr), PORT);
        let clients = Clients::start(self.workload, addr, &self.params, self.setup, self.n, Arc::clone(&self.progress));
        *self.clients.lock().unwrap_or_else(|e| e.into_inner()) = Some(clients);
    }
}

/// How far a side's clients are.
struct Progress {
    /// Clients still running.
    left: AtomicUsize,
    /// Raised when the last one ends.
    done: AtomicBool,
    /// The process's CPU time then.
    cpu_at_end: Mutex<Option<Duration>>,
}

impl Progress {
    fn new(n: usize) -> Progress {
        Progress { left: AtomicUsize::new(n), done: AtomicBool::new(false), cpu_at_end: Mutex::new(None) }
    }

    fn client_ended(&self) {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.cpu_at_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(cpu_time());
            self.done.store(true, Ordering::SeqCst);
        }
    }
}

/// A side's `n` kernel clients, each on a thread of its own in the
/// namespace of the thread that starts them.
struct Clients {
    threads: Vec<thread::JoinHandle<io::Result<Figures>>>,
    progress: Arc<Progress>,
    cpu_at_start: Duration,
}

impl Clients {
    fn start(
        workload: Workload,
        addr: SocketAddr,
        p: &Params,
        setup: &DeviceSetup,
        n: usize,
        progress: Arc<Progress>,
    ) -> Clients {
        let cpu_at_start = cpu_time();
        let threads = (0..n)
            .map(|k| {
                let (p, progress, pick) = (*p, Arc::clone(&progress), shard_ports(setup, k, n));
                thread::spawn(move || {
                    let figures = linux::client_from(workload, addr, &p, Some(&pick));
                    progress.client_ended();
                    figures
                })
            })
            .collect();
        Clients { threads, progress, cpu_at_start }
    }

    /// Wait for every client; the side's figures.
    fn finish(self) -> io::Result<Figures> {
        let parts: Vec<io::Result<Figures>> = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("a client panicked"))))
            .collect();
        let parts = parts.into_iter().collect::<io::Result<Vec<_>>>()?;
        let end = self.progress.cpu_at_end.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or_else(cpu_time);
        Ok(combine(parts, end.saturating_sub(self.cpu_at_start)))
    }
}

/// Client `k`'s ports: those whose flow to the server the symmetric
/// Toeplitz hash gives shard `k` of `n` (every port when `n` is 1).
fn shard_ports(setup: &DeviceSetup, k: usize, n: usize) -> impl Fn(u16) -> bool + Sync + Send + 'static {
    let home = ShardHome::new(Toeplitz::default(), k, n);
    let (server, client) = (setup.server.addr, setup.client.addr);
    move |port| home.shard_of(server, PORT, client, port) == k
}

/// The client's namespace; the `n` kernel servers in their own, joined by
/// a veth pair that the servers' setup thread makes.
fn linux_side(workload: Workload, p: &Params, setup: &DeviceSetup, n: usize) -> io::Result<Figures> {
    netns::enter_private()?;
    netns::tune_client()?;
    let client_ns = netns::thread_id().to_string();
    let mtu = p.mtu.to_string();
    let offload = setup.offload();
    let servers = thread::scope(|s| {
        s.spawn(|| {
            // The servers' threads start here and so live in this namespace.
            netns::enter_private()?;
            #[rustfmt::skip]
            netns::ip(&["link", "add", VETH_SERVER, "mtu", &mtu, "type", "veth",
                "peer", "name", VETH_CLIENT, "mtu", &mtu, "netns", &client_ns])?;
            configure(VETH_SERVER, &setup.server.to_string(), offload)?;
            reuseport_servers(workload, p, setup.server.addr, PORT, n)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the Linux servers' setup panicked")))
    })?;
    let addr = SocketAddr::new(IpAddr::V4(setup.server.addr), PORT);
    let figures = configure(VETH_CLIENT, &setup.client.to_string(), offload)
        .and_then(|()| Clients::start(workload, addr, p, setup, n, Arc::new(Progress::new(n))).finish());
    // Every server stopped, whatever the first one says.
    let stopped: Vec<io::Result<()>> = servers.into_iter().map(|s| s.stop()).collect();
    let figures = figures?;
    stopped.into_iter().collect::<io::Result<()>>()?;
    Ok(figures)
}
