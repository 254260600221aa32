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
//! Workers: every port is served by one thread here (the worker reads each
//! port's queues round-robin, so a vhost-user port's queue pairs share it).

use crate::error::CliError;
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::{Duration, Instant as StdInstant};
use ustack_core::phy::{Device, RxQueue, TxMeta, TxQueue};
use ustack_device::{AnyDevice, DeviceSpec, Waitable};
use ustack_runtime::{Clock, ControlAddr, ControlSocket, StopSignal};

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
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub time: Option<f64>,
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

struct Port {
    spec: String,
    dev: AnyDevice,
    c: PortCounters,
    tx_checksum: bool,
}

/// The learning table: MAC → (port, last seen), bounded.
struct MacTable {
    map: HashMap<[u8; 6], (usize, StdInstant)>,
    limit: usize,
    age: Duration,
    learned: u64,
    moved: u64,
    aged: u64,
    full: u64,
}

impl MacTable {
    fn learn(&mut self, mac: [u8; 6], port: usize, now: StdInstant) {
        if mac[0] & 1 != 0 {
            return; // a group address is never a source
        }
        if let Some(e) = self.map.get_mut(&mac) {
            if e.0 != port {
                self.moved += 1;
            }
            *e = (port, now);
        } else if self.map.len() < self.limit {
            self.map.insert(mac, (port, now));
            self.learned += 1;
        } else {
            self.full += 1;
        }
    }

    fn lookup(&self, mac: &[u8; 6]) -> Option<usize> {
        self.map.get(mac).map(|e| e.0)
    }

    fn sweep(&mut self, now: StdInstant) {
        let age = self.age;
        let before = self.map.len();
        self.map.retain(|_, e| now.duration_since(e.1) < age);
        self.aged += (before - self.map.len()) as u64;
    }
}

/// Frames taken from one port's receive queue per round, so one busy port
/// cannot starve the others.
const BURST: usize = 256;

pub fn run(args: SwitchArgs) -> Result<(), CliError> {
    let specs: Vec<DeviceSpec> =
        args.ports.iter().map(|p| p.parse().map_err(CliError::DeviceSpec)).collect::<Result<_, _>>()?;
    // The control socket first: a second switch started by mistake stops
    // here, before it takes over the first one's port sockets.
    let control_addr = match &args.control {
        Some(p) => ControlAddr::Path(p.clone()),
        None => ControlAddr::Device("switch".into()),
    };
    let control = ControlSocket::bind(&control_addr)
        .map_err(|source| CliError::Control { addr: control_addr.to_string(), source })?;
    let mut ports = Vec::with_capacity(specs.len());
    for spec in &specs {
        let dev = spec.open()?;
        ports.push(Port { spec: spec.to_string(), dev, c: PortCounters::default(), tx_checksum: false });
    }
    let mut table = MacTable {
        map: HashMap::with_capacity(args.mac_table.min(65_536)),
        limit: args.mac_table,
        age: Duration::from_secs(args.mac_age),
        learned: 0,
        moved: 0,
        aged: 0,
        full: 0,
    };
    let mode = if args.reflect { "reflecting" } else { "switching" };
    let names: Vec<&str> = ports.iter().map(|p| p.spec.as_str()).collect();
    eprintln!("ustack: switch {mode} between {} port(s): {}; Ctrl-C stops", ports.len(), names.join(" "));

    let stop = StopSignal::install();
    let clock = Clock::new();
    let started = StdInstant::now();
    let deadline = args.time.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut last_sweep = started;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(ports.len() + 1);
    loop {
        if stop.raised() || deadline.is_some_and(|d| StdInstant::now() >= d) {
            break;
        }
        let moved = round(&mut ports, &mut table, args.reflect, clock.now());
        let now = StdInstant::now();
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            table.sweep(now);
            last_sweep = now;
        }
        control.serve(|| snapshot(&ports, &table, started));
        if moved == 0 {
            // Nothing came in: sleep until a port or the control socket wakes us.
            fds.clear();
            fds.extend(ports.iter().filter_map(|p| p.dev.wait_fd()).map(pollfd));
            fds.push(pollfd(control.fd()));
            // SAFETY: poll reads and writes `fds.len()` pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        }
    }
    print_counters(&ports, &table);
    Ok(())
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// One round over every port: read up to [`BURST`] frames from each and
/// forward them; flush every port. Frames moved.
fn round(ports: &mut [Port], table: &mut MacTable, reflect: bool, now: ustack_core::Instant) -> usize {
    for p in ports.iter_mut() {
        p.tx_checksum = p.dev.caps().tx_checksum;
    }
    let caps: Vec<bool> = ports.iter().map(|p| p.tx_checksum).collect();
    let mut counters: Vec<&mut PortCounters> = Vec::with_capacity(ports.len());
    let mut rxs = Vec::with_capacity(ports.len());
    let mut txs = Vec::with_capacity(ports.len());
    for p in ports.iter_mut() {
        let (rx, tx) = p.dev.queues();
        rxs.push(rx);
        txs.push(tx);
        counters.push(&mut p.c);
    }
    let seen = StdInstant::now();
    let mut moved = 0;
    for i in 0..rxs.len() {
        for _ in 0..BURST {
            let Some((frame, meta)) = rxs[i].recv(now) else { break };
            moved += 1;
            counters[i].rx_frames += 1;
            counters[i].rx_bytes += frame.len() as u64;
            if frame.len() < 14 {
                counters[i].runts += 1;
                continue;
            }
            let txmeta = TxMeta {
                csum_partial: meta.csum_partial,
                csum_start: meta.csum_start,
                csum_offset: meta.csum_offset,
                gso_type: meta.gso_type,
                gso_size: meta.gso_size,
                hdr_len: meta.hdr_len,
                ..Default::default()
            };
            if reflect {
                let sent = send(&mut txs[i], frame, txmeta, caps[i], true);
                count_tx(counters[i], sent, frame.len());
                continue;
            }
            let dst: [u8; 6] = frame[0..6].try_into().expect("14 bytes checked");
            let src: [u8; 6] = frame[6..12].try_into().expect("14 bytes checked");
            table.learn(src, i, seen);
            match (dst[0] & 1 == 0).then(|| table.lookup(&dst)).flatten() {
                Some(j) if j == i => counters[i].filtered += 1,
                Some(j) => {
                    let sent = send(&mut txs[j], frame, txmeta, caps[j], false);
                    count_tx(counters[j], sent, frame.len());
                }
                None => {
                    counters[i].flooded += 1;
                    for j in (0..txs.len()).filter(|&j| j != i) {
                        let sent = send(&mut txs[j], frame, txmeta, caps[j], false);
                        count_tx(counters[j], sent, frame.len());
                    }
                }
            }
        }
    }
    for tx in txs.iter_mut() {
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

/// Copy `frame` into `tx` (MACs swapped for the reflector), completing a
/// partial checksum the port cannot carry as such.
fn send<T: TxQueue>(tx: &mut T, frame: &[u8], mut meta: TxMeta, tx_checksum: bool, swap: bool) -> bool {
    let complete = meta.csum_partial && !tx_checksum;
    if complete {
        meta.csum_partial = false;
    }
    let (start, field) = (usize::from(meta.csum_start), usize::from(meta.csum_start) + usize::from(meta.csum_offset));
    tx.send(frame.len(), meta, |buf| {
        buf.copy_from_slice(frame);
        if swap {
            buf[0..6].copy_from_slice(&frame[6..12]);
            buf[6..12].copy_from_slice(&frame[0..6]);
        }
        if complete && field + 2 <= buf.len() && start <= buf.len() {
            let c = ustack_wire::checksum::finish(ustack_wire::checksum::sum(&buf[start..]));
            buf[field..field + 2].copy_from_slice(&c.to_be_bytes());
        }
    })
    .is_ok()
}

fn port_json(p: &Port) -> Value {
    let c = p.c;
    let dev: serde_json::Map<String, Value> =
        p.dev.device_stats().into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
    json!({
        "port": p.spec,
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
/// (each port's counters and its device's), `mac_table`.
fn snapshot(ports: &[Port], table: &MacTable, started: StdInstant) -> Value {
    json!({
        "device": "switch",
        "switch": true,
        "uptime_us": started.elapsed().as_micros() as u64,
        "ports": ports.iter().map(port_json).collect::<Vec<_>>(),
        "mac_table": {
            "entries": table.map.len(),
            "limit": table.limit,
            "learned": table.learned,
            "moved": table.moved,
            "aged": table.aged,
            "full": table.full,
        },
    })
}

fn print_counters(ports: &[Port], table: &MacTable) {
    for (i, p) in ports.iter().enumerate() {
        let c = p.c;
        println!(
            "port {i} {}: rx_frames {} rx_bytes {} tx_frames {} tx_bytes {} tx_dropped {} flooded {} filtered {} runts {}",
            p.spec, c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.tx_dropped, c.flooded, c.filtered, c.runts
        );
        let dev: Vec<String> =
            p.dev.device_stats().into_iter().filter(|(_, v)| *v != 0).map(|(k, v)| format!("{k} {v}")).collect();
        println!("  device: {}", dev.join(" "));
    }
    println!(
        "mac_table: entries {} learned {} moved {} aged {} full {}",
        table.map.len(),
        table.learned,
        table.moved,
        table.aged,
        table.full
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
