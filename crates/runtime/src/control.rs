//! The local control socket a running stack opens, so `ustack stats` and
//! `ustack top` can read its counters without stopping it.
//!
//! By default the socket is a Linux *abstract* Unix socket named
//! `ustack/<device>`: abstract names belong to the network namespace, so two
//! stacks in two namespaces never collide and nothing is left on disk. A
//! filesystem path can be given instead.
//!
//! The protocol is one JSON object per connection: connect, read to EOF.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use serde_json::{json, Map, Value};
use ustack_core::Stack;

/// Where a control socket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAddr {
    /// Abstract socket `ustack/<device name>` in the current network namespace.
    Device(String),
    /// A socket file.
    Path(PathBuf),
}

impl ControlAddr {
    fn socket_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ControlAddr::Device(name) => SocketAddr::from_abstract_name(format!("ustack/{name}").as_bytes()),
            ControlAddr::Path(p) => SocketAddr::from_pathname(p),
        }
    }

    /// Connect and read the stack's snapshot.
    pub fn read_snapshot(&self) -> io::Result<String> {
        let mut s = UnixStream::connect_addr(&self.socket_addr()?)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut out = String::new();
        io::Read::read_to_string(&mut s, &mut out)?;
        Ok(out)
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Device(name) => write!(f, "@ustack/{name}"),
            ControlAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The listening side of a control socket: the event loop answers each
/// connection with one snapshot of the stack's counters. A socket file it
/// created is removed when it is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: Option<PathBuf>,
    /// The stack's configuration as its owner reports it (the `config`
    /// object of every snapshot); fixed for the stack's life.
    config: Option<Value>,
}

impl ControlSocket {
    /// Listen at `addr` (non-blocking). A socket file left by a dead stack is
    /// replaced; one a live stack answers on is not (the bind fails with
    /// `AddrInUse`).
    pub fn bind(addr: &ControlAddr) -> io::Result<ControlSocket> {
        let path = match addr {
            ControlAddr::Path(p) => {
                // A socket file left by a stack that died is stale; one that
                // answers belongs to a live stack and must not be taken over.
                if p.exists() && UnixStream::connect(p).is_err() {
                    let _ = std::fs::remove_file(p);
                }
                Some(p.clone())
            }
            ControlAddr::Device(_) => None,
        };
        let listener = UnixListener::bind_addr(&addr.socket_addr()?)?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { listener, path, config: None })
    }

    /// Report `config` (one JSON object, e.g. every tunable by key) as the
    /// snapshot's `config`.
    pub fn set_config(&mut self, config: Value) {
        self.config = Some(config);
    }

    /// The listening descriptor, for the loop's poll(2) set.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Answer every waiting client with `snapshot` (see [`snapshot_json`]).
    /// Never blocks the loop: a client that does not read is dropped.
    pub fn serve(&self, snapshot: impl Fn() -> Value) {
        while let Ok((mut client, _)) = self.listener.accept() {
            let _ = client.set_nonblocking(true);
            let mut snap = snapshot();
            if let (Some(config), Some(obj)) = (&self.config, snap.as_object_mut()) {
                obj.insert("config".into(), config.clone());
            }
            let mut text = snap.to_string();
            text.push('\n');
            let _ = client.write_all(text.as_bytes());
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The stack's state as one JSON object, for `ustack stats` and `ustack top`:
///
/// - `device` (name), `uptime_us`, `neighbors` (neighbour cache entries),
///   `path_mtu_entries` (destinations whose path MTU discovery lowered,
///   bounded by `stack.pmtu_cache_size`);
/// - `counters`: every [`ustack_core::Counters`] field by name;
/// - `interfaces`: one object per device: `name`, the stack's `rx_packets`,
///   `rx_bytes`, `tx_packets`, `tx_bytes`, and `device_counters`, the
///   device's own counters ([`crate::Waitable::device_stats`]; `{}` if none;
///   a TAP's include its transmit ring, `tx_ring_in_use` of `tx_ring_size`);
/// - `pools`: occupancy of what the stack holds bounded: `tcp_buffers`
///   (`in_use`, `allocated`, `limit` in chunks of `chunk_size` bytes, and
///   `exhausted`, requests refused at the limit) and `neighbor_pending`
///   (packets waiting for ARP: `in_use`, `limit`);
/// - `tcp`: `connections` (in the table, TIME-WAIT records included),
///   `listeners`, `states` (connections per RFC 9293 state name, TIME-WAIT
///   records included), `time_wait_records`, `retransmits` (segments
///   retransmitted, freed connections included), and the listeners'
///   counters summed: `syns`, `syn_queue_overflows`,
///   `accept_queue_overflows`, and `syn_cookies` (`sent`, `accepted`,
///   `rejected`);
/// - `drops`: every `drop_*` counter by reason (the name without `drop_`);
/// - `ipv6`, when the stack speaks it: `addresses` (`address`, `state`,
///   `origin`), `neighbors`, `neighbors_incomplete`, `neighbor_pending`,
///   `default_routers`, `prefixes`, `reassembly_datagrams`,
///   `reassembly_bytes`, `path_mtu_entries`, and the configured `limits`
///   each is bounded by;
/// - `config`, when the stack's owner gave one ([`ControlSocket::set_config`]).
///
/// Building it scans the TCP table ([`Stack::tcp_states`]); clients ask
/// about once a second.
pub fn snapshot_json(stack: &Stack, device: &str, uptime_us: u64, device_stats: &[(&'static str, u64)]) -> Value {
    let c = stack.counters();
    let object = |fields: &mut dyn Iterator<Item = (&str, u64)>| -> Value {
        Value::Object(fields.map(|(name, value)| (name.to_string(), Value::from(value))).collect())
    };
    let pool = stack.tcp_buffer_pool();
    let tcp = stack.tcp_states();
    let listen = stack.tcp_listeners_stats();
    let states: Map<String, Value> =
        tcp.by_state.iter().map(|(state, _)| (state.to_string(), Value::from(tcp.count(*state)))).collect();
    json!({
        "device": device,
        "uptime_us": uptime_us,
        "neighbors": stack.neighbors().len(),
        "path_mtu_entries": stack.path_mtu_entries(),
        "counters": object(&mut c.iter()),
        "interfaces": [{
            "name": device,
            "rx_packets": c.rx_frames,
            "rx_bytes": c.rx_bytes,
            "tx_packets": c.tx_frames,
            "tx_bytes": c.tx_bytes,
            "device_counters": object(&mut device_stats.iter().copied()),
        }],
        "pools": {
            "tcp_buffers": {
                "in_use": pool.in_use(),
                "allocated": pool.allocated_bytes() / pool.chunk_size().max(1),
                "limit": pool.limit(),
                "chunk_size": pool.chunk_size(),
                "exhausted": pool.stats().exhausted,
            },
            "neighbor_pending": {
                "in_use": stack.neighbors().pending_len(),
                "limit": stack.config().neighbor_pending_total,
            },
        },
        "tcp": {
            "connections": stack.tcp_connections(),
            "listeners": tcp.listeners,
            "states": states,
            "time_wait_records": tcp.time_wait_records,
            "retransmits": tcp.retransmits,
            "syns": listen.syns,
            "syn_queue_overflows": listen.syn_queue_overflows,
            "accept_queue_overflows": listen.accept_queue_overflows,
            "syn_cookies": {
                "sent": listen.cookies_sent,
                "accepted": listen.cookies_accepted,
                "rejected": listen.cookies_rejected,
            },
        },
        "drops": object(&mut c.iter().filter_map(|(n, v)| n.strip_prefix("drop_").map(|n| (n, v)))),
        "ipv6": stack.ipv6().map(ipv6_json),
    })
}

/// The `ipv6` object of [`snapshot_json`].
fn ipv6_json(l: &ustack_core::ipv6::Ipv6Layer) -> Value {
    let cfg = l.config();
    let addresses: Vec<Value> = l
        .addresses()
        .map(|a| json!({ "address": a.cidr.to_string(), "state": format!("{:?}", a.state), "origin": format!("{:?}", a.origin) }))
        .collect();
    let (datagrams, bytes) = l.reassembly_held();
    json!({
        "addresses": addresses,
        "neighbors": l.neighbors().len(),
        "neighbors_incomplete": l.neighbors().incomplete_len(),
        "neighbor_pending": l.neighbors().pending_len(),
        "default_routers": l.default_routers().map(|r| r.to_string()).collect::<Vec<_>>(),
        "prefixes": l.prefixes().map(|p| p.to_string()).collect::<Vec<_>>(),
        "reassembly_datagrams": datagrams,
        "reassembly_bytes": bytes,
        "path_mtu_entries": l.path_mtu_entries(),
        "limits": {
            "neighbors": cfg.neighbor_cache_size,
            "neighbors_incomplete": cfg.neighbor_max_incomplete,
            "neighbor_pending": cfg.neighbor_pending_total,
            "default_routers": cfg.max_routers,
            "prefixes": cfg.max_prefixes,
            "addresses": cfg.max_addresses,
            "reassembly_datagrams": cfg.reassembly_max_datagrams,
            "reassembly_bytes": cfg.reassembly_memory,
        },
    })
}

/// A snapshot ([`snapshot_json`]) in Prometheus's text exposition format
/// (0.0.4), for `ustack stats --prometheus` and `ustack up --metrics`:
///
/// - every counter of [`ustack_core::Counters`] as `ustack_<name>_total`,
///   except the drops, which are one family `ustack_drops_total{reason}`;
/// - each device's own counters as `ustack_device_<name>_total`, and its
///   fill levels (names ending in `_in_use` or `_size`) as gauges
///   `ustack_device_<name>`; the label `device` names the device;
/// - the pools' fill levels as gauges `ustack_pool_<field>{pool}` (in the
///   pool's unit: chunks for `tcp_buffers`, packets for `neighbor_pending`)
///   and their refusals as `ustack_pool_exhausted_total{pool}`, the chunk
///   size as `ustack_pool_chunk_size_bytes{pool}`;
/// - `ustack_tcp_connections`, `ustack_tcp_listeners`,
///   `ustack_tcp_time_wait_records`, `ustack_tcp_connections_by_state{state}`,
///   `ustack_tcp_retransmits_total`, `ustack_tcp_syns_total`,
///   `ustack_tcp_syn_queue_overflows_total`, `ustack_tcp_accept_queue_overflows_total`,
///   `ustack_tcp_syn_cookies_total{outcome}` (sent, accepted, rejected);
///   `ustack_neighbors`, `ustack_path_mtu_entries`, `ustack_uptime_seconds`.
///
/// Every sample carries `device`; a per-shard label joins it when shards exist.
pub fn prometheus_text(snap: &Value) -> String {
    let device = snap["device"].as_str().unwrap_or("");
    let mut x = Exposition::default();
    let base = [("device", device)];
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    for (name, value) in snap["counters"].as_object().into_iter().flatten() {
        match name.strip_prefix("drop_") {
            Some(reason) => x.add(
                "ustack_drops_total",
                "counter",
                "Packets dropped, by reason (ustack_core::Counters drop_*).",
                &[("device", device), ("reason", reason)],
                num(value),
            ),
            None => x.add(
                &format!("ustack_{name}_total"),
                "counter",
                &format!("The stack's counter {name} (ustack_core::Counters)."),
                &base,
                num(value),
            ),
        }
    }
    for iface in snap["interfaces"].as_array().into_iter().flatten() {
        let dev = iface["name"].as_str().unwrap_or(device);
        for (name, value) in iface["device_counters"].as_object().into_iter().flatten() {
            if name.ends_with("_in_use") || name.ends_with("_size") {
                let help = format!("The device's fill level {name}.");
                x.add(&format!("ustack_device_{name}"), "gauge", &help, &[("device", dev)], num(value));
            } else {
                let help = format!("The device's own counter {name}.");
                x.add(&format!("ustack_device_{name}_total"), "counter", &help, &[("device", dev)], num(value));
            }
        }
    }
    for (pool, fields) in snap["pools"].as_object().into_iter().flatten() {
        for (field, value) in fields.as_object().into_iter().flatten() {
            let labels = [("device", device), ("pool", pool.as_str())];
            if field == "exhausted" {
                let help = "Requests a pool refused at its limit.";
                x.add("ustack_pool_exhausted_total", "counter", help, &labels, num(value));
            } else if field == "chunk_size" {
                x.add("ustack_pool_chunk_size_bytes", "gauge", "A pool's chunk size.", &labels, num(value));
            } else {
                let help = format!("A pool's {field} (tcp_buffers: in chunks; neighbor_pending: in packets).");
                x.add(&format!("ustack_pool_{field}"), "gauge", &help, &labels, num(value));
            }
        }
    }
    let tcp = &snap["tcp"];
    for (field, help) in [
        ("connections", "TCP connections in the table, TIME-WAIT records included."),
        ("listeners", "TCP listeners."),
        ("time_wait_records", "TCP connections in TIME-WAIT (compact records)."),
    ] {
        x.add(&format!("ustack_tcp_{field}"), "gauge", help, &base, num(&tcp[field]));
    }
    for (state, value) in tcp["states"].as_object().into_iter().flatten() {
        let help = "TCP connections by RFC 9293 state.";
        x.add("ustack_tcp_connections_by_state", "gauge", help, &[("device", device), ("state", state)], num(value));
    }
    let help = "TCP segments retransmitted, freed connections included.";
    x.add("ustack_tcp_retransmits_total", "counter", help, &base, num(&tcp["retransmits"]));
    for (field, help) in [
        ("syns", "SYNs that reached a listener."),
        ("syn_queue_overflows", "SYNs that found a listener's SYN queue full."),
        ("accept_queue_overflows", "Handshakes that found a listener's accept queue full."),
    ] {
        x.add(&format!("ustack_tcp_{field}_total"), "counter", help, &base, num(&tcp[field]));
    }
    for outcome in ["sent", "accepted", "rejected"] {
        let help = "SYN cookies sent, and cookie ACKs accepted or rejected.";
        let labels = [("device", device), ("outcome", outcome)];
        x.add("ustack_tcp_syn_cookies_total", "counter", help, &labels, num(&tcp["syn_cookies"][outcome]));
    }
    x.add("ustack_neighbors", "gauge", "Neighbour (ARP) cache entries.", &base, num(&snap["neighbors"]));
    let help = "Destinations in the path MTU cache.";
    x.add("ustack_path_mtu_entries", "gauge", help, &base, num(&snap["path_mtu_entries"]));
    let uptime = num(&snap["uptime_us"]) as f64 / 1e6;
    x.add("ustack_uptime_seconds", "gauge", "Seconds since the stack started.", &base, uptime);
    x.render()
}

/// Metric families in order of first appearance, each with its samples
/// together, as the exposition format requires.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    name: String,
    kind: &'static str,
    help: String,
    samples: Vec<String>,
}

impl Exposition {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name: name.into(), kind, help: help.into(), samples: Vec::new() });
                self.families.len() - 1
            }
        };
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
        self.families[i].samples.push(format!("{name}{{{}}} {value}", labels.join(",")));
    }

    fn render(&self) -> String {
        let mut s = String::with_capacity(16 * 1024);
        for f in &self.families {
            s.push_str(&format!("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.kind));
            for sample in &f.samples {
                s.push_str(sample);
                s.push('\n');
            }
        }
        s
    }
}

/// A label value as the exposition format quotes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}
