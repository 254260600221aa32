//! `ustack switch`: an L2 switch (or, with `--reflect`, a reflector) between
//! ports of any device kind, vhost-user ports mostly.
//!
//! Forwarding learns each unicast source MAC's port in a bounded table
//! (`--mac-table` entries; a full table learns nothing more until entries
//! age out after `--mac-age` seconds, counted as `mac_table_full`), sends a
//! frame to the port its destination was learnt on, and floods broadcast,
//! multicast and unknown destinations to every other port. A frame for the
//! port it came in on is filtered. Nothing is queued inside the switch: a
//! port that cannot take a frame now (its guest has posted no buffers)
//! drops it and counts it, so a stalled peer holds up no other port.
//!
//! `--reflect` sends every frame back out of the port (and queue) it came
//! from with its MAC addresses swapped: the reflector of the classic
//! vhost-user measurement.
//!
//! Workers: by default one thread serves every port (a vhost-user port's
//! queue pairs round-robin). With `--queues N` every port is a vhost-user
//! port of N queue pairs and worker thread k serves queue pair k of every
//! port (frames arriving on queue k leave on queue k); `--cores` with
//! fewer CPUs than queue pairs makes one worker per CPU instead, worker w
//! serving pairs w, w + workers, … in turn. The main thread serves the
//! ports' sockets (the vhost-user protocol), the control socket and the MAC
//! table's aging. The MAC table is shared: each worker
//! reads it under one read lock per round and learns new addresses under
//! the write lock after the round.

use crate::error::CliError;
use arrayvec::ArrayVec;
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant as StdInstant};
use ustack_core::phy::{Device, RxQueue, TxMeta, TxQueue};
use ustack_device::{DeviceKind, DeviceSpec, VhostUserConfig, VhostUserControl, VhostUserDevice, Waitable};
use ustack_runtime::{ControlAddr, ControlSocket, StopSignal};

#[derive(Args, Debug)]
pub struct SwitchArgs {
    /// A port, as KIND:NAME[,OPTS] like --device (repeat for each port), e.g. vhost-user:/tmp/vm1.sock,queues=2.
    #[arg(long = "port", value_name = "KIND:NAME[,OPTS]", required = true)]
    pub ports: Vec<String>,
    /// Send every frame back out of the port and queue it came from, MACs swapped.
    #[arg(long)]
    pub reflect: bool,
    /// Most MAC addresses learnt at once.
    #[arg(long = "mac-table", value_name = "N", default_value_t = 4096,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub mac_table: usize,
    /// Seconds after which a MAC address not seen again is forgotten.
    #[arg(long = "mac-age", value_name = "SECS", default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub mac_age: u64,
    /// Control socket for `ustack stats` (default: the abstract socket @ustack/switch of this network namespace).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// Worker threads, one per queue pair: every port must then be vhost-user with queues=N (set for it when absent).
    #[arg(long, value_name = "N", default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub queues: usize,
    /// Keep polling the ports for this many microseconds after the last frame before sleeping (0: sleep at once). Saves a wake-up per frame at the cost of a core.
    #[arg(long = "busy-poll", value_name = "USEC", default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub busy_poll: u64,
    /// CPUs to pin the workers to, one worker each, e.g. 0 or 2,3 (fewer CPUs than queues: each worker serves its share of the queue pairs in turn); default: one worker per queue pair, wherever the kernel puts it.
    #[arg(long, value_name = "CPU[,CPU...]", value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub time: Option<f64>,
}

/// Most ports one switch serves (each round gathers every port's queues
/// on the stack).
const MAX_PORTS: usize = 64;

/// Pin the calling worker `k` to its CPU of `cores`, if any were given.
fn pin_worker(cores: &[usize], k: usize) -> Result<(), CliError> {
    let Some(&cpu) = cores.get(k) else { return Ok(()) };
    ustack_runtime::shard::pin(cpu).map_err(|e| CliError::Switch(format!("--cores: cannot pin to CPU {cpu}: {e}")))
}

/// One port's counters, as `stats` shows them.
#[derive(Clone, Copy, Debug, Default)]
struct PortCounters {
    rx_frames: u64,
    rx_bytes: u64,
    tx_frames: u64,
    tx_bytes: u64,
    /// Frames the port refused (no room, no peer).
    tx_dropped: u64,
    /// Frames that came in and were flooded.
    flooded: u64,
    /// Frames whose destination is on the port they came from.
    filtered: u64,
    /// Frames shorter than an Ethernet header.
    runts: u64,
}

impl PortCounters {
    /// Count a frame of `len` bytes that came in; false for a runt (shorter
    /// than an Ethernet header), counted and dropped.
    fn received(&mut self, len: usize) -> bool {
        self.rx_frames += 1;
        self.rx_bytes += len as u64;
        if len < 14 {
            self.runts += 1;
            return false;
        }
        true
    }

    fn add(&mut self, o: &PortCounters) {
        self.rx_frames += o.rx_frames;
        self.rx_bytes += o.rx_bytes;
        self.tx_frames += o.tx_frames;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.flooded += o.flooded;
        self.filtered += o.filtered;
        self.runts += o.runts;
    }
}

struct Port<D> {
    dev: D,
    c: PortCounters,
}

/// One learnt address: its port and when it was last seen (µs since start),
/// updated under the table's read lock.
struct MacEntry {
    port: AtomicUsize,
    seen: AtomicU64,
}

/// The learning table: MAC → (port, last seen), bounded, shared by the
/// workers behind a read-write lock.
struct MacTable {
    map: HashMap<[u8; 6], MacEntry>,
    limit: usize,
    age_us: u64,
    learned: u64,
    moved: u64,
    aged: u64,
    full: u64,
}

impl MacTable {
    /// Refresh a known address under the read lock; `false` when it must
    /// be (re)learnt under the write lock.
    fn touch(&self, mac: &[u8; 6], port: usize, now_us: u64) -> bool {
        if mac[0] & 1 != 0 {
            return true; // a group address is never a source
        }
        match self.map.get(mac) {
            Some(e) if e.port.load(Ordering::Relaxed) == port => {
                e.seen.store(now_us, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    fn learn(&mut self, mac: [u8; 6], port: usize, now_us: u64) {
        if let Some(e) = self.map.get(&mac) {
            if e.port.swap(port, Ordering::Relaxed) != port {
                self.moved += 1;
            }
            e.seen.store(now_us, Ordering::Relaxed);
        } else if self.map.len() < self.limit {
            self.map.insert(mac, MacEntry { port: AtomicUsize::new(port), seen: AtomicU64::new(now_us) });
            self.learned += 1;
        } else {
            self.full += 1;
        }
    }

    fn lookup(&self, mac: &[u8; 6]) -> Option<usize> {
        self.map.get(mac).map(|e| e.port.load(Ordering::Relaxed))
    }

    fn sweep(&mut self, now_us: u64) {
        let age = self.age_us;
        let before = self.map.len();
        self.map.retain(|_, e| now_us.saturating_sub(e.seen.load(Ordering::Relaxed)) < age);
        self.aged += (before - self.map.len()) as u64;
    }
}

/// What a worker last reported of its ports: counters, device counters.
#[derive(Default)]
struct Report {
    counters: Vec<PortCounters>,
    devices: Vec<Vec<(&'static str, u64)>>,
}

/// Frames taken from one port's receive queue per round, so one busy port
/// cannot starve the others. 32, as DPDK's bursts: reflecting testpmd's
/// frames, a busy-polling reflector and generator fall into a slow rhythm
/// (about 4 Mpps instead of 10–11, for seconds at a time) less often with
/// rounds of 32 than of 256 (slow phases in 2 of 5 runs of 18 s against 5
/// of 5); more often again, in those days, when the used index was
/// published every 16 entries instead of 32, or when the worker spun
/// without yielding between empty rounds. The cause was not found; since
/// the rings prefetch their buffers that rhythm has not been seen, and the
/// index is published every 8 (`PUBLISH_EVERY` in `vhost_user/ring.rs`).
const BURST: usize = 32;

pub fn run(args: SwitchArgs) -> Result<(), CliError> {
    if let Some((c, allowed)) = ustack_runtime::shard::not_allowed(&args.cores) {
        return Err(CliError::Switch(format!(
            "--cores {c}: this process may not run on CPU {c}; pick from {allowed:?}"
        )));
    }
    if args.ports.len() > MAX_PORTS {
        return Err(CliError::Switch(format!(
            "{} ports given; one switch serves at most {MAX_PORTS} (run another for the rest)",
            args.ports.len()
        )));
    }
    let mut specs: Vec<DeviceSpec> =
        args.ports.iter().map(|p| p.parse().map_err(CliError::DeviceSpec)).collect::<Result<_, _>>()?;
    if args.queues > 1 {
        for spec in &mut specs {
            if spec.kind != DeviceKind::VhostUser {
                return Err(CliError::Switch(format!(
                    "--queues {}: every port must be vhost-user (one worker serves queue pair k of every port); {spec} is not",
                    args.queues
                )));
            }
            match spec.options.iter().find(|(k, _)| k == "queues") {
                Some((_, v)) if v.parse::<usize>().ok() != Some(args.queues) => {
                    return Err(CliError::Switch(format!("--queues {}: {spec} has queues={v}", args.queues)));
                }
                Some(_) => {}
                None => spec.options.push(("queues".into(), args.queues.to_string())),
            }
        }
    }
    // The control socket first: a second switch started by mistake stops
    // here, before it takes over the first one's port sockets.
    let control_addr = match &args.control {
        Some(p) => ControlAddr::Path(p.clone()),
        None => ControlAddr::Device("switch".into()),
    };
    let control = ControlSocket::bind(&control_addr)
        .map_err(|source| CliError::Control { addr: control_addr.to_string(), source })?;
    let names: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    let table = RwLock::new(MacTable {
        map: HashMap::with_capacity(args.mac_table.min(65_536)),
        limit: args.mac_table,
        age_us: args.mac_age * 1_000_000,
        learned: 0,
        moved: 0,
        aged: 0,
        full: 0,
    });
    let stop = StopSignal::install();
    let started = StdInstant::now();
    let deadline = args.time.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mode = if args.reflect { "reflecting" } else { "switching" };
    // One worker per queue pair, or per CPU given when there are fewer
    // (see below).
    let workers = if args.cores.is_empty() { args.queues } else { args.queues.min(args.cores.len()) };
    let threads = if args.queues > 1 {
        format!(", {workers} worker(s) for {} queue pairs", args.queues)
    } else {
        String::new()
    };
    let banner =
        format!("ustack: switch {mode} between {} port(s){threads}: {}; Ctrl-C stops", specs.len(), names.join(" "));

    if args.queues == 1 {
        let mut ports = Vec::with_capacity(specs.len());
        for spec in &specs {
            ports.push(Port { dev: spec.open()?, c: PortCounters::default() });
        }
        pin_worker(&args.cores, 0)?;
        eprintln!("{banner}");
        let mut last_sweep = started;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(ports.len() + 1);
        let mut pending = Vec::new();
        let mut idle = Idle::new(args.busy_poll);
        let mut serve = true;
        loop {
            // One clock read a round serves all that needs the time (the
            // loop runs millions of rounds a second while it busy-polls).
            let t = StdInstant::now();
            if stop.raised() || deadline.is_some_and(|d| t >= d) {
                break;
            }
            let moved = round(&mut ports, &table, &mut pending, args.reflect, since(started, t));
            if t.duration_since(last_sweep) >= Duration::from_secs(1) {
                table.write().unwrap_or_else(|e| e.into_inner()).sweep(since(started, t));
                last_sweep = t;
                serve = true;
            }
            if serve {
                let views = || ports.iter().map(|p| (p.c, p.dev.device_stats())).collect::<Vec<_>>();
                let total = || [ports.iter().map(|p| p.c.rx_frames).sum::<u64>()];
                control.serve(|| snapshot(&names, &views(), &total(), &table, started));
                serve = false;
            }
            if idle.may_sleep(moved, t) && rearm(&mut ports) {
                // Nothing came in: sleep until a port or the control socket wakes us.
                fds.clear();
                fds.extend(ports.iter().filter_map(|p| p.dev.wait_fd()).map(pollfd));
                fds.push(pollfd(control.fd()));
                // SAFETY: poll reads and writes `fds.len()` pollfds.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                serve = fds.last().is_some_and(|f| f.revents != 0);
            }
        }
        let views: Vec<_> = ports.iter().map(|p| (p.c, p.dev.device_stats())).collect();
        print_counters(&names, &views, &table);
        return Ok(());
    }

    // Queue pair k goes to worker k mod workers, which serves its pairs in
    // turn (as one DPDK lcore serves several queues); two busy-polling
    // workers sharing a CPU would only take it from each other. The ports'
    // sockets are served here.
    let mut controls: Vec<VhostUserControl> = Vec::with_capacity(specs.len());
    let mut per_worker: Vec<Vec<Group>> =
        (0..workers).map(|w| (w..args.queues).step_by(workers).map(|_| Vec::new()).collect()).collect();
    for spec in &specs {
        let mut opts = ustack_device::Options::new(spec);
        let config = VhostUserConfig::from_options(&mut opts)?;
        opts.finish()?;
        let (control, queues) = VhostUserDevice::open(std::path::Path::new(&spec.name), config)?.split()?;
        controls.push(control);
        for (k, q) in queues.into_iter().enumerate() {
            per_worker[k % workers][k / workers].push(Port { dev: q, c: PortCounters::default() });
        }
    }
    eprintln!("{banner}");
    let done = AtomicBool::new(false);
    let reports: Vec<Mutex<Report>> = (0..workers).map(|_| Mutex::new(Report::default())).collect();
    std::thread::scope(|scope| {
        for (k, mut groups) in per_worker.into_iter().enumerate() {
            let (table, done, report, reflect, busy_poll) = (&table, &done, &reports[k], args.reflect, args.busy_poll);
            let cores = &args.cores;
            std::thread::Builder::new()
                .name(format!("switch-w{k}"))
                .spawn_scoped(scope, move || {
                    // Checked before the ports opened: pinning cannot fail here.
                    let _ = pin_worker(cores, k);
                    worker(&mut groups, table, done, report, reflect, started, busy_poll)
                })
                .expect("spawn a switch worker");
        }
        let mut last_sweep = started;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(controls.len() + 1);
        while !(stop.raised() || deadline.is_some_and(|d| StdInstant::now() >= d)) {
            fds.clear();
            fds.extend(controls.iter().map(|c| pollfd(c.wait_fd())));
            fds.push(pollfd(control.fd()));
            // SAFETY: poll reads and writes `fds.len()` pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            for c in &mut controls {
                c.service();
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                table.write().unwrap_or_else(|e| e.into_inner()).sweep(micros(started));
                last_sweep = StdInstant::now();
            }
            let per_worker = || -> Vec<u64> {
                let sum = |r: &Mutex<Report>| {
                    r.lock().unwrap_or_else(|e| e.into_inner()).counters.iter().map(|c| c.rx_frames).sum()
                };
                reports.iter().map(sum).collect()
            };
            control.serve(|| snapshot(&names, &merged(&reports, &controls), &per_worker(), &table, started));
        }
        done.store(true, Ordering::Relaxed);
    });
    print_counters(&names, &merged(&reports, &controls), &table);
    Ok(())
}

fn micros(started: StdInstant) -> u64 {
    since(started, StdInstant::now())
}

/// Microseconds from `started` to `t`: the MAC table's time and the
/// devices' (the core's `Instant`), both counted from the switch's start.
fn since(started: StdInstant, t: StdInstant) -> u64 {
    t.saturating_duration_since(started).as_micros() as u64
}

/// Queue pair k of every port: what one worker forwards between.
type Group = Vec<Port<ustack_device::VhostUserQueues>>;

/// A worker: its queue pairs of every port (`groups`, one per pair), a
/// round over each in turn, until `done`.
fn worker<D: Device + Waitable>(
    groups: &mut [Vec<Port<D>>],
    table: &RwLock<MacTable>,
    done: &AtomicBool,
    report: &Mutex<Report>,
    reflect: bool,
    started: StdInstant,
    busy_poll: u64,
) {
    let mut pending = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut last_report = StdInstant::now();
    let mut idle = Idle::new(busy_poll);
    loop {
        let stopping = done.load(Ordering::Relaxed);
        let t = StdInstant::now();
        let mut moved = 0;
        for ports in groups.iter_mut() {
            moved += round(ports, table, &mut pending, reflect, since(started, t));
        }
        if stopping || t.duration_since(last_report) >= Duration::from_millis(100) {
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            // Each port's counters, summed over this worker's queue pairs.
            let n = groups.first().map_or(0, Vec::len);
            r.counters = vec![PortCounters::default(); n];
            r.devices = vec![Vec::new(); n];
            for (i, p) in groups.iter().flatten().enumerate() {
                r.counters[i % n].add(&p.c);
                add_stats(&mut r.devices[i % n], &p.dev.device_stats());
            }
            last_report = t;
        }
        if stopping {
            return;
        }
        if idle.may_sleep(moved, t) && rearm(groups.iter_mut().flatten()) {
            fds.clear();
            fds.extend(groups.iter().flatten().filter_map(|p| p.dev.wait_fd()).map(pollfd));
            // SAFETY: poll reads and writes `fds.len()` pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        }
    }
}

/// Each port's counters summed over the workers, with its control side's.
fn merged(reports: &[Mutex<Report>], controls: &[VhostUserControl]) -> Vec<(PortCounters, Vec<(&'static str, u64)>)> {
    let mut out: Vec<(PortCounters, Vec<(&'static str, u64)>)> =
        controls.iter().map(|c| (PortCounters::default(), c.stats())).collect();
    for r in reports {
        let r = r.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (c, dev)) in r.counters.iter().zip(&r.devices).enumerate() {
            let Some((sum, stats)) = out.get_mut(i) else { continue };
            sum.add(c);
            add_stats(stats, dev);
        }
    }
    out
}

/// Add device counters `more` to `into`, by name.
fn add_stats(into: &mut Vec<(&'static str, u64)>, more: &[(&'static str, u64)]) {
    for &(k, v) in more {
        match into.iter_mut().find(|(name, _)| *name == k) {
            Some(e) => e.1 += v,
            None => into.push((k, v)),
        }
    }
}

/// When a loop may sleep: nothing moved this round, and with busy polling
/// nothing for the last `busy_poll` microseconds either (until then it
/// yields the core and looks again).
struct Idle {
    busy_poll: Duration,
    last_moved: StdInstant,
}

impl Idle {
    fn new(busy_poll_us: u64) -> Idle {
        Idle { busy_poll: Duration::from_micros(busy_poll_us), last_moved: StdInstant::now() }
    }

    /// `now`: the round's time.
    fn may_sleep(&mut self, moved: usize, now: StdInstant) -> bool {
        if moved > 0 {
            self.last_moved = now;
            return false;
        }
        if self.busy_poll.is_zero() || now.saturating_duration_since(self.last_moved) >= self.busy_poll {
            return true;
        }
        std::thread::yield_now();
        false
    }
}

/// Ask every port to wake us on its next frame; `false` if one has frames
/// already (look again instead of sleeping).
fn rearm<'a, D: Waitable + 'a>(ports: impl IntoIterator<Item = &'a mut Port<D>>) -> bool {
    let mut quiet = true;
    for p in ports {
        quiet &= p.dev.prepare_sleep(); // every port, even after one said no
    }
    quiet
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// One round over every port at `now_us` (microseconds since the start):
/// read up to [`BURST`] frames from each and forward them (or reflect
/// them); flush every port; learn what was new. Frames moved.
fn round<D: Device>(
    ports: &mut [Port<D>],
    table: &RwLock<MacTable>,
    pending: &mut Vec<([u8; 6], usize)>,
    reflect: bool,
    now_us: u64,
) -> usize {
    let now = ustack_core::Instant::from_micros(now_us);
    if reflect {
        return reflect_round(ports, now);
    }
    // Every port's queues at once (a frame goes from one port's to
    // another's), gathered on the stack: no allocation per round.
    let mut caps: ArrayVec<bool, MAX_PORTS> = ArrayVec::new();
    let mut counters: ArrayVec<&mut PortCounters, MAX_PORTS> = ArrayVec::new();
    let mut rxs: ArrayVec<_, MAX_PORTS> = ArrayVec::new();
    let mut txs: ArrayVec<_, MAX_PORTS> = ArrayVec::new();
    for Port { dev, c } in ports.iter_mut().take(MAX_PORTS) {
        caps.push(dev.caps().tx_checksum);
        let (rx, tx) = dev.queues();
        rxs.push(rx);
        txs.push(tx);
        counters.push(c);
    }
    let mut moved = 0;
    {
        let table = table.read().unwrap_or_else(|e| e.into_inner());
        for i in 0..rxs.len() {
            for _ in 0..BURST {
                let Some((frame, meta)) = rxs[i].recv(now) else { break };
                moved += 1;
                if !counters[i].received(frame.len()) {
                    continue;
                }
                let txmeta = ustack_device::vnet::forwarded(&meta);
                let dst: [u8; 6] = frame[0..6].try_into().expect("14 bytes checked");
                let src: [u8; 6] = frame[6..12].try_into().expect("14 bytes checked");
                if !table.touch(&src, i, now_us) && pending.len() < 4 * BURST {
                    pending.push((src, i));
                }
                match (dst[0] & 1 == 0).then(|| table.lookup(&dst)).flatten() {
                    Some(j) if j == i => counters[i].filtered += 1,
                    Some(j) if j < txs.len() => {
                        let sent = send(&mut txs[j], frame, txmeta, caps[j], false);
                        count_tx(counters[j], sent, frame.len());
                    }
                    _ => {
                        counters[i].flooded += 1;
                        for j in (0..txs.len()).filter(|&j| j != i) {
                            let sent = send(&mut txs[j], frame, txmeta, caps[j], false);
                            count_tx(counters[j], sent, frame.len());
                        }
                    }
                }
            }
        }
    }
    for tx in txs.iter_mut() {
        tx.flush();
    }
    if !pending.is_empty() {
        let mut table = table.write().unwrap_or_else(|e| e.into_inner());
        for (mac, port) in pending.drain(..) {
            table.learn(mac, port, now_us);
        }
    }
    moved
}

/// The reflector's round: each port's frames go back out of it, MACs
/// swapped. A port at a time, so nothing is gathered per round (the loop
/// runs millions of rounds a second while it busy-polls).
fn reflect_round<D: Device>(ports: &mut [Port<D>], now: ustack_core::Instant) -> usize {
    let mut moved = 0;
    for Port { dev, c } in ports.iter_mut() {
        let tx_checksum = dev.caps().tx_checksum;
        let (mut rx, mut tx) = dev.queues();
        for _ in 0..BURST {
            let Some((frame, meta)) = rx.recv(now) else { break };
            moved += 1;
            if !c.received(frame.len()) {
                continue;
            }
            let sent = send(&mut tx, frame, ustack_device::vnet::forwarded(&meta), tx_checksum, true);
            count_tx(c, sent, frame.len());
        }
        tx.flush();
    }
    moved
}

fn count_tx(c: &mut PortCounters, sent: bool, len: usize) {
    if sent {
        c.tx_frames += 1;
        c.tx_bytes += len as u64;
    } else {
        c.tx_dropped += 1;
    }
}

/// Send `frame` on `tx` (MACs swapped for the reflector), completing a
/// partial checksum the port cannot carry as such. A super-segment goes as
/// it is: a port whose peer takes none (a vhost-user guest without
/// GUEST_TSO4) cuts it in software.
fn send<T: TxQueue>(tx: &mut T, frame: &[u8], mut meta: TxMeta, tx_checksum: bool, swap: bool) -> bool {
    // The reflector's MACs, swapped, in a head of their own (frames are 14
    // bytes or more: runts were counted and dropped).
    let head: [u8; 12];
    let parts: [&[u8]; 2] = if swap {
        head = std::array::from_fn(|i| frame[(i + 6) % 12]);
        [&head, &frame[12..]]
    } else {
        [&frame[..12], &frame[12..]]
    };
    // A super-segment's checksums are finished by the port that cuts it.
    let complete = meta.csum_partial && !tx_checksum && meta.gso_type == ustack_core::phy::GsoType::None;
    if !complete {
        // Forwarded as it is: a port that can takes it without a staging copy.
        return tx.send_parts(&parts, meta).is_ok();
    }
    meta.csum_partial = false;
    let (start, field) = (usize::from(meta.csum_start), usize::from(meta.csum_start) + usize::from(meta.csum_offset));
    tx.send(frame.len(), meta, |buf| {
        ustack_core::phy::gather(&parts, buf);
        if field + 2 <= buf.len() && start <= buf.len() {
            let c = ustack_wire::checksum::finish(ustack_wire::checksum::sum(&buf[start..]));
            buf[field..field + 2].copy_from_slice(&c.to_be_bytes());
        }
    })
    .is_ok()
}

type PortView = (PortCounters, Vec<(&'static str, u64)>);

fn port_json(name: &str, (c, dev): &PortView) -> Value {
    let dev: serde_json::Map<String, Value> = dev.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
    json!({
        "port": name,
        "rx_frames": c.rx_frames,
        "rx_bytes": c.rx_bytes,
        "tx_frames": c.tx_frames,
        "tx_bytes": c.tx_bytes,
        "tx_dropped": c.tx_dropped,
        "flooded": c.flooded,
        "filtered": c.filtered,
        "runts": c.runts,
        "device_counters": dev,
    })
}

/// The switch's state for `ustack stats --json`: `switch` true, `ports`
/// (each port's counters and its device's), `workers` (frames each worker
/// thread took in), `mac_table`.
fn snapshot(
    names: &[String],
    views: &[PortView],
    workers: &[u64],
    table: &RwLock<MacTable>,
    started: StdInstant,
) -> Value {
    let t = table.read().unwrap_or_else(|e| e.into_inner());
    json!({
        "device": "switch",
        "switch": true,
        "uptime_us": micros(started),
        "workers": workers.iter().map(|n| json!({ "rx_frames": n })).collect::<Vec<_>>(),
        "ports": names.iter().zip(views).map(|(n, v)| port_json(n, v)).collect::<Vec<_>>(),
        "mac_table": {
            "entries": t.map.len(),
            "limit": t.limit,
            "learned": t.learned,
            "moved": t.moved,
            "aged": t.aged,
            "full": t.full,
        },
    })
}

fn print_counters(names: &[String], views: &[PortView], table: &RwLock<MacTable>) {
    for (i, (name, (c, dev))) in names.iter().zip(views).enumerate() {
        println!(
            "port {i} {name}: rx_frames {} rx_bytes {} tx_frames {} tx_bytes {} tx_dropped {} flooded {} filtered {} runts {}",
            c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.tx_dropped, c.flooded, c.filtered, c.runts
        );
        let dev: Vec<String> = dev.iter().filter(|(_, v)| *v != 0).map(|(k, v)| format!("{k} {v}")).collect();
        println!("  device: {}", dev.join(" "));
    }
    let t = table.read().unwrap_or_else(|e| e.into_inner());
    println!(
        "mac_table: entries {} learned {} moved {} aged {} full {}",
        t.map.len(),
        t.learned,
        t.moved,
        t.aged,
        t.full
    );
}

/// The per-port lines `ustack stats` prints for a switch's snapshot.
pub fn stats_lines(snap: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in snap["ports"].as_array().into_iter().flatten() {
        let mut line = format!("port {}", p["port"].as_str().unwrap_or("?"));
        for k in ["rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "tx_dropped", "flooded", "filtered", "runts"] {
            line.push_str(&format!(" {k} {}", p[k]));
        }
        out.push(line);
        let dev: Vec<String> = p["device_counters"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push(format!("  device {}", dev.join(" ")));
    }
    let t = &snap["mac_table"];
    out.push(format!(
        "mac_table entries {} / {} learned {} moved {} aged {} full {}",
        t["entries"], t["limit"], t["learned"], t["moved"], t["aged"], t["full"]
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limit: usize) -> MacTable {
        MacTable { map: HashMap::new(), limit, age_us: 1_000, learned: 0, moved: 0, aged: 0, full: 0 }
    }

    #[test]
    fn mac_table_is_bounded_ages_and_follows_moves() {
        let mut t = table(2);
        let (a, b, c) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        t.learn(a, 0, 0);
        t.learn(b, 1, 0);
        t.learn(c, 0, 0); // full: not learnt, counted
        assert_eq!((t.map.len(), t.learned, t.full), (2, 2, 1));
        assert_eq!((t.lookup(&a), t.lookup(&b), t.lookup(&c)), (Some(0), Some(1), None));
        assert!(t.touch(&a, 0, 900), "known on the same port: refreshed under the read lock");
        assert!(!t.touch(&b, 0, 900), "seen on another port: must be relearnt");
        t.learn(b, 0, 900);
        assert_eq!((t.lookup(&b), t.moved), (Some(0), 1));
        assert!(t.touch(&[0xff; 6], 3, 900), "a group source is never learnt");
        t.learn(c, 1, 950); // still full
        t.sweep(1_500); // nothing older than 1 ms yet
        assert_eq!(t.map.len(), 2);
        t.sweep(1_950);
        assert_eq!((t.map.len(), t.aged), (0, 2));
        t.learn(c, 1, 2_000);
        assert_eq!(t.lookup(&c), Some(1));
    }
}
