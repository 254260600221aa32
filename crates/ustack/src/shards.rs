//! `--cores N|all`: one stack shard per core (`ustack_runtime::shard`),
//! for the commands that run a stack on a device.

use crate::config::Settings;
use crate::error::CliError;
use crate::up::{Services, UpArgs};
use clap::Args;
use ustack_core::rss::{Toeplitz, SYMMETRIC_KEY};
use ustack_core::Stack;
use ustack_device::{DeviceChain, ShardQueue};
use ustack_runtime::shard::{run_shards, Cores, ShardEnd, ShardEnv, ShardSetup};
use ustack_runtime::{os_seed, App, ControlSocket, RunEnd, StopSignal};
use ustack_wire::EthernetAddress;

#[derive(Args, Debug, Clone)]
pub struct CoresArgs {
    /// Run one stack shard per core: N shards, or all (one per core this process may use), each a
    /// thread pinned to its core with its own stack and device queue (a multi-queue TAP, an AF_PACKET
    /// fan-out group); flows go to shards by the symmetric Toeplitz hash [default: one stack, unpinned].
    #[arg(long, value_name = "N|all")]
    pub cores: Option<Cores>,
}

impl CoresArgs {
    /// Whether `--cores` was given.
    pub fn sharded(&self) -> bool {
        self.cores.is_some()
    }

    /// The core of each shard.
    pub fn assign(&self) -> Vec<usize> {
        self.cores.unwrap_or(Cores::Count(1)).assign()
    }
}

/// The queue of `env`'s shard, steered by the symmetric key.
pub fn shard_queue(env: &ShardEnv) -> ShardQueue {
    ShardQueue { index: env.index, count: env.count, key: SYMMETRIC_KEY }
}

/// Open shard `env`'s stack on its queue of `args.dev`, with the MAC every
/// shard shares.
pub fn open_shard(
    dev: &crate::device::DeviceArgs,
    settings: &Settings,
    mac: EthernetAddress,
    env: &ShardEnv,
) -> Result<crate::device::Opened, String> {
    dev.open_queue(settings, mac, os_seed(), Some(&shard_queue(env))).map_err(|e| e.to_string())
}

/// The counters of every shard added up, in the stack's order.
pub fn total_counters<'a>(counters: impl Iterator<Item = &'a ustack_core::Counters>) -> Vec<(&'static str, u64)> {
    let mut total: Vec<(&'static str, u64)> = Vec::new();
    for c in counters {
        if total.is_empty() {
            total = c.iter().collect();
        } else {
            for (slot, (_, v)) in total.iter_mut().zip(c.iter()) {
                slot.1 += v;
            }
        }
    }
    total
}

/// One line per shard: its core and what crossed to and from it.
pub fn print_shards<S>(ends: &[ShardEnd<S>], cores: &[usize]) {
    for (k, end) in ends.iter().enumerate() {
        let pairs: Vec<String> = end.handoffs.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!("  shard {k} (core {}): {}", cores.get(k).copied().unwrap_or(0), pairs.join(", "));
    }
}

/// The first device failure among the shards, as the command's error.
pub fn failure<S>(ends: &[ShardEnd<S>]) -> Option<CliError> {
    ends.iter()
        .find(|e| e.end == RunEnd::DeviceFailed)
        .map(|e| CliError::DeviceFailed(e.failure.clone().unwrap_or_else(|| "the device failed".into())))
}

struct UpShards<'a> {
    args: &'a UpArgs,
    settings: &'a Settings,
    mac: EthernetAddress,
    banner: String,
    root: String,
}

impl ShardSetup for UpShards<'_> {
    type Device = DeviceChain;
    type Apps = Services;
    type Summary = (ustack_core::Counters, Vec<(String, u64)>);

    fn open(&self, env: &ShardEnv) -> Result<(Stack, DeviceChain, Services), String> {
        let opened = open_shard(&self.args.dev, self.settings, self.mac, env)?;
        let mut stack = opened.stack;
        let mut services = Services::start(&mut stack, self.args, self.settings).map_err(|e| e.to_string())?;
        if let Some(bytes) = self.args.move_every {
            services.move_echo_every(&env.moves, bytes);
        }
        Ok((stack, opened.device, services))
    }

    fn apps<'a>(&self, apps: &'a mut Services) -> Vec<&'a mut dyn App> {
        apps.apps()
    }

    fn finish(&self, _env: &ShardEnv, stack: &Stack, apps: Services) -> Self::Summary {
        (stack.counters().clone(), apps.report())
    }

    fn flow_steering(&self, device: &DeviceChain) -> Option<std::sync::Arc<ustack_device::steer_bpf::FlowSteering>> {
        device.device().as_tap().and_then(|t| ustack_device::steer_bpf::tap_flow_steering(t.name()))
    }

    fn ready(&self) {
        eprintln!("{}", self.banner);
        // Every shard runs the same services, each listening on every shard.
        let a = self.args;
        for (what, ports) in [("UDP echo", &a.udp_echo), ("TCP echo", &a.tcp_echo), ("TCP discard", &a.tcp_discard)] {
            for p in ports {
                eprintln!("ustack: {what} on port {p}");
            }
        }
        if a.http_root.is_some() {
            let ports = if a.http_port.is_empty() { vec![80] } else { a.http_port.clone() };
            for p in ports {
                eprintln!("ustack: HTTP on port {p} serving {}", self.root);
            }
        }
    }
}

/// `ustack up --cores N`.
pub fn up(args: &UpArgs, settings: &Settings) -> Result<(), CliError> {
    let cores = args.cores.assign();
    let mac = args.dev.mac_or_random(os_seed());
    let label = args.dev.spec()?.to_string();
    let control_addr = crate::up::control_addr(args, &label);
    let mut control = ControlSocket::bind(&control_addr)
        .map_err(|source| CliError::Control { addr: control_addr.to_string(), source })?;
    control.set_config(settings.to_json());
    if let Some(addr) = args.metrics {
        let bound = crate::metrics::serve(addr, control_addr.clone())?;
        eprintln!("ustack: Prometheus metrics at http://{bound}/metrics");
    }
    let stop = StopSignal::install();
    let banner = format!(
        "ustack: up on {label} as {} ({mac}) with {} shards on cores {cores:?}; Ctrl-C stops",
        args.dev.ip,
        cores.len()
    );
    let root = args.http_root.as_ref().map(|r| r.display().to_string()).unwrap_or_default();
    let setup = UpShards { args, settings, mac, banner, root };
    let ends = run_shards(&setup, &cores, &Toeplitz::default(), Some((control, label)), &stop)
        .map_err(CliError::DeviceFailed)?;
    println!("counters:");
    for (name, value) in total_counters(ends.iter().map(|e| &e.summary.0)).into_iter().filter(|&(_, v)| v != 0) {
        println!("  {name:<32} {value}");
    }
    let mut lines: Vec<(String, u64)> = Vec::new();
    for end in &ends {
        for (i, (name, n)) in end.summary.1.iter().enumerate() {
            match lines.get_mut(i) {
                Some(l) => l.1 += n,
                None => lines.push((name.clone(), *n)),
            }
        }
    }
    for (name, n) in lines {
        println!("  {name:<32} {n}");
    }
    print_shards(&ends, &cores);
    failure(&ends).map_or(Ok(()), Err)
}

/// One shard's share of `ustack get --cores N`: its runs of URLs, fetched
/// in order from its own stack, bodies kept for the main thread to write
/// in URL order.
struct ShardGet {
    runs: std::collections::VecDeque<(std::net::SocketAddrV4, Vec<String>)>,
    current: Option<ustack_runtime::apps::HttpClient<Vec<u8>>>,
    body: Vec<u8>,
    urls_done: usize,
    error: Option<String>,
    deadline: ustack_core::Instant,
}

impl App for ShardGet {
    fn poll(&mut self, stack: &mut Stack, now: ustack_core::Instant, events: &[ustack_core::Event]) {
        if self.finished() {
            return;
        }
        if now >= self.deadline {
            self.error = Some(format!("gave up (--timeout) with {} of this shard's URLs done", self.urls_done));
            return;
        }
        if self.current.is_none() {
            let Some((server, paths)) = self.runs.pop_front() else { return };
            let body = std::mem::take(&mut self.body);
            self.current = Some(ustack_runtime::apps::HttpClient::new(server, paths, body));
        }
        let client = self.current.as_mut().expect("just set");
        client.poll(stack, now, events);
        if client.finished() {
            let client = self.current.take().expect("checked");
            let answered = client.responses.len();
            let (outcome, body) = client.into_result();
            self.body = body;
            self.urls_done += answered;
            if let Some(Err(e)) = outcome {
                self.error = Some(e.to_string());
            } else if !self.runs.is_empty() {
                // The next run connects on the next turn.
                self.poll(stack, now, &[]);
            }
        }
    }

    fn next_deadline(&self) -> Option<ustack_core::Instant> {
        Some(self.deadline)
    }

    fn finished(&self) -> bool {
        self.error.is_some() || (self.current.is_none() && self.runs.is_empty())
    }
}

/// The URLs of shard `k` of `n`: a contiguous share, in order, as runs of
/// consecutive URLs to one server (one connection each).
pub fn get_share(
    urls: &[(std::net::SocketAddrV4, String)],
    k: usize,
    n: usize,
) -> Vec<(std::net::SocketAddrV4, Vec<String>)> {
    let share = &urls[k * urls.len() / n..(k + 1) * urls.len() / n];
    let mut runs: Vec<(std::net::SocketAddrV4, Vec<String>)> = Vec::new();
    for (server, path) in share {
        match runs.last_mut() {
            Some((s, paths)) if s == server => paths.push(path.clone()),
            _ => runs.push((*server, vec![path.clone()])),
        }
    }
    runs
}

struct GetShards<'a> {
    args: &'a crate::get::GetArgs,
    settings: &'a Settings,
    mac: EthernetAddress,
    urls: &'a [(std::net::SocketAddrV4, String)],
}

impl ShardSetup for GetShards<'_> {
    type Device = DeviceChain;
    type Apps = ShardGet;
    type Summary = (Vec<u8>, usize, Option<String>);

    fn open(&self, env: &ShardEnv) -> Result<(Stack, DeviceChain, ShardGet), String> {
        let opened = open_shard(&self.args.dev, self.settings, self.mac, env)?;
        let timeout = ustack_core::Duration::from_secs(self.args.timeout.min(1 << 32));
        let app = ShardGet {
            runs: get_share(self.urls, env.index, env.count).into(),
            current: None,
            body: Vec::new(),
            urls_done: 0,
            error: None,
            // The shard's loop clock starts when it does, at about this time.
            deadline: ustack_core::Instant::ZERO + timeout,
        };
        Ok((opened.stack, opened.device, app))
    }

    fn apps<'a>(&self, apps: &'a mut ShardGet) -> Vec<&'a mut dyn App> {
        vec![apps]
    }

    fn finish(&self, _env: &ShardEnv, _stack: &Stack, apps: ShardGet) -> Self::Summary {
        (apps.body, apps.urls_done, apps.error)
    }
}

/// `ustack get --cores N`: the URLs shared out in order, shard `k` taking
/// the `k`-th contiguous share over its own connections (active opens that
/// stay home), the bodies written in URL order. Returns the body bytes.
pub fn get(
    args: &crate::get::GetArgs,
    settings: &Settings,
    urls: &[(std::net::SocketAddrV4, String)],
    sink: &mut impl std::io::Write,
) -> Result<u64, CliError> {
    let cores = args.cores.assign();
    let mac = args.dev.mac_or_random(os_seed());
    let stop = StopSignal::install();
    let setup = GetShards { args, settings, mac, urls };
    let ends = run_shards(&setup, &cores, &Toeplitz::default(), None, &stop).map_err(CliError::DeviceFailed)?;
    if let Some(e) = failure(&ends) {
        return Err(e);
    }
    let mut bytes = 0;
    for end in &ends {
        if let Some(e) = &end.summary.2 {
            return Err(CliError::Url(e.clone()));
        }
    }
    let done: usize = ends.iter().map(|e| e.summary.1).sum();
    if done < urls.len() {
        return Err(CliError::Interrupted { done, total: urls.len() });
    }
    for end in &ends {
        sink.write_all(&end.summary.0).map_err(|source| CliError::Output { path: "the output".into(), source })?;
        bytes += end.summary.0.len() as u64;
    }
    for (k, end) in ends.iter().enumerate() {
        let pairs: Vec<String> = end.handoffs.iter().map(|(n, v)| format!("{n} {v}")).collect();
        eprintln!("ustack: shard {k} (core {}): {} URLs, {}", cores[k], end.summary.1, pairs.join(", "));
    }
    Ok(bytes)
}
