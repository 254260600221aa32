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

pub struct ControlSocket {
    listener: UnixListener,
    path: Option<PathBuf>,
    /// The stack's configuration as its owner reports it (the `config`
    /// object of every snapshot); fixed for the stack's life.
    config: Option<Value>,
}

impl ControlSocket {
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
/// - `device` (name), `uptime_us`, `neighbors` (neighbour cache entries);
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
///   records included), `time_wait_records`, and `retransmits` (segments
///   retransmitted, freed connections included);
/// - `drops`: every `drop_*` counter by reason (the name without `drop_`);
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
    let states: Map<String, Value> =
        tcp.by_state.iter().map(|(state, _)| (state.to_string(), Value::from(tcp.count(*state)))).collect();
    json!({
        "device": device,
        "uptime_us": uptime_us,
        "neighbors": stack.neighbors().len(),
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
        },
        "drops": object(&mut c.iter().filter_map(|(n, v)| n.strip_prefix("drop_").map(|n| (n, v)))),
    })
}
