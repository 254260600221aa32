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
        Ok(ControlSocket { listener, path })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Answer every waiting client with `snapshot`. Never blocks the loop:
    /// a client that does not read is dropped.
    pub fn serve(&self, snapshot: impl Fn() -> String) {
        while let Ok((mut client, _)) = self.listener.accept() {
            let _ = client.set_nonblocking(true);
            let _ = client.write_all(snapshot().as_bytes());
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
/// - `drops`: every `drop_*` counter by reason (the name without `drop_`).
///
/// Building it scans the TCP table ([`Stack::tcp_states`]); clients ask
/// about once a second.
pub fn snapshot_json(stack: &Stack, device: &str, uptime_us: u64, device_stats: &[(&'static str, u64)]) -> String {
    use std::fmt::Write as _;
    let device: String = device.chars().filter(|c| !matches!(c, '"' | '\\') && !c.is_control()).collect();
    let c = stack.counters();
    let mut s = String::with_capacity(4096);
    let _ = write!(s, "{{\"device\":\"{device}\",\"uptime_us\":{uptime_us},\"neighbors\":{},", stack.neighbors().len());
    s.push_str("\"counters\":");
    push_object(&mut s, c.iter());

    let _ = write!(
        s,
        ",\"interfaces\":[{{\"name\":\"{device}\",\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{},\"device_counters\":",
        c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes
    );
    push_object(&mut s, device_stats.iter().copied());
    s.push_str("}]");

    let pool = stack.tcp_buffer_pool();
    let cfg = stack.config();
    let _ = write!(
        s,
        ",\"pools\":{{\"tcp_buffers\":{{\"in_use\":{},\"allocated\":{},\"limit\":{},\"chunk_size\":{},\"exhausted\":{}}},\
         \"neighbor_pending\":{{\"in_use\":{},\"limit\":{}}}}}",
        pool.in_use(),
        pool.allocated_bytes() / pool.chunk_size().max(1),
        pool.limit(),
        pool.chunk_size(),
        pool.stats().exhausted,
        stack.neighbors().pending_len(),
        cfg.neighbor_pending_total,
    );

    let tcp = stack.tcp_states();
    let _ = write!(
        s,
        ",\"tcp\":{{\"connections\":{},\"listeners\":{},\"states\":{{",
        stack.tcp_connections(),
        tcp.listeners
    );
    for (i, (state, _)) in tcp.by_state.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{state}\":{}", tcp.count(*state));
    }
    let _ = write!(s, "}},\"time_wait_records\":{},\"retransmits\":{}}}", tcp.time_wait_records, tcp.retransmits);

    s.push_str(",\"drops\":");
    push_object(&mut s, c.iter().filter_map(|(n, v)| n.strip_prefix("drop_").map(|n| (n, v))));
    s.push_str("}\n");
    s
}

/// `{"name":value,...}`; names are Rust identifiers, so need no escaping.
fn push_object<'a>(s: &mut String, fields: impl Iterator<Item = (&'a str, u64)>) {
    use std::fmt::Write as _;
    s.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{name}\":{value}");
    }
    s.push('}');
}
