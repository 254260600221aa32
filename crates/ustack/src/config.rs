//! The config file: every tunable in one table, [`TUNABLES`], from which come
//! the parser (`--config FILE`, `--set KEY=VALUE`), the complete commented
//! file (`ustack config --defaults`), README's tunables table (`ustack config
//! --markdown`, kept equal to README by a test) and the `config` object of
//! the control socket's snapshot.
//!
//! # Adding a tunable
//!
//! One line in [`TUNABLES`]:
//!
//! ```text
//! tunable!("tcp.recv_buffer_size", stack.tcp.recv_buffer_size, bytes(2048, 1 << 30), "one-line meaning"),
//! ```
//!
//! the key (`section.name`), the field of [`Settings`] it sets, its kind
//! with the allowed range, and what it means. Its default is whatever
//! `Settings::default()` holds, that is the default of the struct the field
//! belongs to. A tunable of something that is not in `Settings` yet (a device
//! ring, an HTTP timeout) first adds that struct to `Settings` (and its
//! default to `Settings::default`) and its section to [`SECTIONS`]; the
//! command that builds the thing then takes it from `Settings`.
//!
//! Nothing is clamped: a value outside its range, of the wrong type, or under
//! an unknown key is refused with one line naming the key, the value and what
//! is allowed, before any stack starts.

use crate::error::CliError;
use clap::Args;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;
use ustack_core::ipv6::Ipv6Config;
use ustack_core::tcp::CongestionAlgorithm;
use ustack_core::{Ipv4Cidr, StackConfig};
use ustack_runtime::apps::HttpServerConfig;
use ustack_wire::EthernetAddress;

/// Everything the config file can set.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The stack's tunables. Its `mac`, `ipv4` and `gateway` come from the
    /// command's flags, not from the file; `mtu` 0 means the device's.
    pub stack: StackConfig,
    /// `ustack up --http-root`'s server. Its `max_connections` comes from
    /// `--max-connections`, which bounds every service.
    pub http: HttpServerConfig,
    /// IPv6's bounds and timers, used when `--ip6` is given. Its `mac`,
    /// `addresses`, `autoconf`, `secret` and `mtu` come from the command.
    pub ipv6: Ipv6Config,
}

impl Default for Settings {
    fn default() -> Settings {
        let mut stack = StackConfig::new(EthernetAddress::default(), Ipv4Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix_len: 0 });
        stack.mtu = 0;
        Settings { stack, http: HttpServerConfig::default(), ipv6: Ipv6Config::new(EthernetAddress::default()) }
    }
}

impl Settings {
    /// The stack's configuration for the interface `mac`, `ipv4`, on a device
    /// whose MTU is `device_mtu`. Refuses an `mtu` or `tcp.mss` the device
    /// cannot carry rather than lowering it.
    pub fn stack_config(
        &self,
        mac: EthernetAddress,
        ipv4: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        device_mtu: usize,
    ) -> Result<StackConfig, CliError> {
        let mtu = match self.stack.mtu {
            0 => device_mtu,
            mtu if mtu > device_mtu => {
                return Err(CliError::Config(format!(
                    "stack.mtu = {mtu}: the device's MTU is {device_mtu}; allowed: 0 (the device's) or 576 to {device_mtu}"
                )))
            }
            mtu => mtu,
        };
        let max_mss = mtu.saturating_sub(40);
        if usize::from(self.stack.tcp.mss) > max_mss {
            return Err(CliError::Config(format!(
                "tcp.mss = {}: more than the MTU ({mtu}) less 40 bytes of headers; allowed: 88 to {max_mss}",
                self.stack.tcp.mss
            )));
        }
        Ok(StackConfig { mac, ipv4, gateway, mtu, ..self.stack.clone() })
    }

    /// The value of every tunable as one JSON object, `{"tcp.sack": true, …}`
    /// (durations as strings with a unit, like the file).
    pub fn to_json(&self) -> serde_json::Value {
        let map = TUNABLES.iter().map(|t| (t.key.to_string(), (t.get)(self).to_json())).collect();
        serde_json::Value::Object(map)
    }
}

/// `--config FILE` and `--set KEY=VALUE`, for every command that runs a stack.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Read tunables from this TOML file (`ustack config --defaults` prints every key with its default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set one tunable, after the file: KEY=VALUE, like tcp.recv_buffer_size=65536 or tcp.congestion=newreno (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The defaults, then the file, then each `--set` in order; every value
    /// checked. Errors are [`CliError::Config`] (exit status 2).
    pub fn load(&self) -> Result<Settings, CliError> {
        let mut settings = Settings::default();
        if let Some(path) = &self.config {
            let origin = format!("config {}", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| CliError::Config(format!("{origin}: cannot read it: {e}")))?;
            apply_toml(&mut settings, &text, &origin).map_err(CliError::Config)?;
        }
        for kv in &self.set {
            apply_set(&mut settings, kv).map_err(CliError::Config)?;
        }
        cross_checks(&settings).map_err(CliError::Config)?;
        Ok(settings)
    }
}

// ------------------------------------------------------------- the table ---

/// A tunable's value, as the file writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Int(u64),
    Bool(bool),
    Time(Duration),
    Name(&'static str),
    /// An IPv6 unicast address, or none (`""` in the file).
    Addr6(Option<Ipv6Addr>),
}

/// What a tunable accepts.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A number from `min` to `max`.
    Count { min: u64, max: u64 },
    /// A size in bytes from `min` to `max` (or a string like "64KiB").
    Bytes { min: u64, max: u64 },
    /// Like `Bytes`, or 0, which means `zero`.
    BytesOrZero { min: u64, max: u64, zero: &'static str },
    /// A duration, a string with a unit ("200ms", "30s").
    Time { min: Duration, max: Duration },
    Bool,
    /// One of these names.
    Choice(&'static [&'static str]),
    /// An IPv6 unicast address as a string, or `""` for none.
    Addr6,
}

/// One tunable: its key in the file, what it accepts, what it means, and how
/// to read and write it in [`Settings`].
pub struct Tunable {
    pub key: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
    pub get: fn(&Settings) -> Value,
    pub set: fn(&mut Settings, Value),
}

/// A field type a tunable can set; `from_value` gets only values its
/// tunable's [`Kind`] accepted (the table's test checks every range fits).
trait Field: Sized {
    fn value(&self) -> Value;
    fn from_value(v: Value) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn value(&self) -> Value {
                Value::Int(*self as u64)
            }
            fn from_value(v: Value) -> Self {
                match v {
                    Value::Int(n) => <$t>::try_from(n).unwrap_or(<$t>::MAX),
                    _ => 0,
                }
            }
        }
    )*};
}
int_field!(u8, u16, u32, usize);

impl Field for bool {
    fn value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: Value) -> Self {
        v == Value::Bool(true)
    }
}

impl Field for Duration {
    fn value(&self) -> Value {
        Value::Time(*self)
    }
    fn from_value(v: Value) -> Self {
        match v {
            Value::Time(d) => d,
            _ => Duration::ZERO,
        }
    }
}

impl Field for Option<Ipv6Addr> {
    fn value(&self) -> Value {
        Value::Addr6(*self)
    }
    fn from_value(v: Value) -> Self {
        match v {
            Value::Addr6(a) => a,
            _ => None,
        }
    }
}

const CONGESTION: &[&str] = &["cubic", "newreno"];

impl Field for CongestionAlgorithm {
    fn value(&self) -> Value {
        Value::Name(match self {
            CongestionAlgorithm::Cubic => "cubic",
            CongestionAlgorithm::NewReno => "newreno",
        })
    }
    fn from_value(v: Value) -> Self {
        match v {
            Value::Name("newreno") => CongestionAlgorithm::NewReno,
            _ => CongestionAlgorithm::Cubic,
        }
    }
}

macro_rules! tunable {
    ($key:literal, $($field:ident).+, $kind:expr, $doc:literal) => {
        Tunable {
            key: $key,
            kind: $kind,
            doc: $doc,
            get: |s| Field::value(&s $(.$field)+),
            set: |s, v| s $(.$field)+ = Field::from_value(v),
        }
    };
}

const fn count(min: u64, max: u64) -> Kind {
    Kind::Count { min, max }
}
const fn bytes(min: u64, max: u64) -> Kind {
    Kind::Bytes { min, max }
}
const fn time(min: Duration, max: Duration) -> Kind {
    Kind::Time { min, max }
}
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const BOOL: Kind = Kind::Bool;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The sections of the file, in order, with what they hold.
pub const SECTIONS: &[(&str, &str)] = &[
    ("stack", "The interface, ARP, IPv4, ICMP, UDP and reassembly (ustack_core::StackConfig)."),
    ("tcp", "Every TCP connection (ustack_core::tcp::TcpConfig)."),
    ("http", "The HTTP server of `ustack up --http-root` (ustack_runtime::apps::HttpServerConfig)."),
    ("ipv6", "IPv6 with `--ip6`: neighbour discovery, SLAAC, reassembly (ustack_core::ipv6::Ipv6Config)."),
];

/// Every tunable, grouped by section in [`SECTIONS`] order.
pub static TUNABLES: &[Tunable] = &[
    tunable!("stack.mtu", stack.mtu, Kind::BytesOrZero { min: 576, max: 65535, zero: "the device's MTU" },
        "largest IP packet sent"),
    tunable!("stack.ttl", stack.ttl, count(1, 255), "TTL of the packets we originate"),
    tunable!("stack.neighbor_cache_size", stack.neighbor_cache_size, count(1, 1 << 20),
        "ARP cache entries, resolved and unresolved"),
    tunable!("stack.neighbor_max_incomplete", stack.neighbor_max_incomplete, count(1, 1 << 20),
        "unresolved neighbours at once"),
    tunable!("stack.neighbor_pending_per_entry", stack.neighbor_pending_per_entry, count(1, 8),
        "packets held per unresolved neighbour"),
    tunable!("stack.neighbor_pending_total", stack.neighbor_pending_total, count(1, 4096),
        "packets held for all unresolved neighbours (MTU-sized slots allocated up front)"),
    tunable!("stack.neighbor_reachable_time", stack.neighbor_reachable_time, time(ms(100), secs(86_400)),
        "an ARP answer is trusted this long"),
    tunable!("stack.neighbor_stale_time", stack.neighbor_stale_time, time(ms(100), secs(86_400)),
        "then used while refreshing, this long"),
    tunable!("stack.neighbor_locktime", stack.neighbor_locktime, time(ms(0), secs(3_600)),
        "a changed address for a neighbour confirmed this recently is ignored (Linux's locktime)"),
    tunable!("stack.arp_retry_interval", stack.arp_retry_interval, time(ms(10), secs(60)),
        "between ARP requests for one neighbour"),
    tunable!("stack.arp_max_retries", stack.arp_max_retries, count(1, 255),
        "requests before the waiting packets are dropped"),
    tunable!("stack.icmp_error_rate", stack.icmp_error_rate, count(0, 1_000_000),
        "ICMP errors sent per second, sustained"),
    tunable!("stack.icmp_error_burst", stack.icmp_error_burst, count(0, 1_000_000),
        "ICMP errors sent back to back"),
    tunable!("stack.udp_rx_packets", stack.udp_rx_packets, count(1, 1 << 20), "one UDP socket's receive queue, datagrams"),
    tunable!("stack.udp_rx_bytes", stack.udp_rx_bytes, bytes(1, GIB), "one UDP socket's receive queue, bytes"),
    tunable!("stack.udp_tx_packets", stack.udp_tx_packets, count(1, 1 << 20), "one UDP socket's send queue, datagrams"),
    tunable!("stack.udp_tx_bytes", stack.udp_tx_bytes, bytes(1, GIB), "one UDP socket's send queue, bytes"),
    tunable!("stack.ping_rx_packets", stack.ping_rx_packets, count(1, 65536), "one ping socket's queue of replies"),
    tunable!("stack.ipv4_reassembly_max_datagrams", stack.ipv4_reassembly_max_datagrams, count(0, 4096),
        "IPv4 datagrams in reassembly at once (0: reassembly off)"),
    tunable!("stack.ipv4_reassembly_memory", stack.ipv4_reassembly_memory, bytes(512, GIB),
        "fragment data held for reassembly, in all (allocated on the first fragment)"),
    tunable!("stack.ipv4_reassembly_timeout", stack.ipv4_reassembly_timeout, time(secs(1), secs(120)),
        "a datagram's time to arrive from its first fragment"),
    tunable!("stack.pmtu_cache_size", stack.pmtu_cache_size, count(0, 1 << 20),
        "destinations whose path MTU was lowered, at most (0: none remembered)"),
    tunable!("stack.pmtu_expiry", stack.pmtu_expiry, time(secs(1), secs(86_400)),
        "a lowered path MTU is kept this long, then the link's is tried again"),
    tunable!("stack.pmtu_min", stack.pmtu_min, count(68, 65535),
        "floor under any path MTU an ICMP message may report"),
    tunable!("stack.use_device_checksums", stack.use_device_checksums, BOOL, "trust the device's checksum verdicts"),
    tunable!("stack.tcp_syn_cookies", stack.tcp_syn_cookies, BOOL,
        "answer SYNs with cookies when a listener's SYN queue is full"),
    tunable!("stack.tcp_max_connections", stack.tcp_max_connections, count(1, 1 << 24),
        "TCP connections in the table, TIME-WAIT included"),
    tunable!("tcp.send_buffer_size", stack.tcp.send_buffer_size, bytes(2 * KIB, GIB),
        "most unacknowledged bytes per connection (chunks lent by the pool)"),
    tunable!("tcp.recv_buffer_size", stack.tcp.recv_buffer_size, bytes(2 * KIB, GIB),
        "most unread bytes per connection; bounds the advertised window"),
    tunable!("tcp.buffer_pool_limit", stack.tcp.buffer_pool_limit, bytes(64 * KIB, 1024 * GIB),
        "the per-stack pool all send and receive buffers borrow from"),
    tunable!("tcp.buffer_pool_floor", stack.tcp.buffer_pool_floor, bytes(0, 1024 * GIB),
        "chunk storage the buffer pool keeps when idle; spare chunks above it are freed after a load"),
    tunable!("tcp.mss", stack.tcp.mss, count(88, 65495), "MSS we advertise and send (at most the MTU less 40)"),
    tunable!("tcp.default_peer_mss", stack.tcp.default_peer_mss, count(88, 65495),
        "peer MSS assumed without the option (RFC 9293: 536)"),
    tunable!("tcp.min_peer_mss", stack.tcp.min_peer_mss, count(48, 65495), "floor on the peer's MSS"),
    tunable!("tcp.initial_rto", stack.tcp.initial_rto, time(ms(10), secs(60)), "RTO before any RTT sample (RFC 6298)"),
    tunable!("tcp.min_rto", stack.tcp.min_rto, time(ms(1), secs(60)), "lower bound on the RTO (Linux: 200 ms)"),
    tunable!("tcp.max_rto", stack.tcp.max_rto, time(secs(1), secs(600)), "upper bound on the backed-off RTO"),
    tunable!("tcp.delayed_ack", stack.tcp.delayed_ack, time(ms(1), ms(500)), "delayed ACK timer"),
    tunable!("tcp.ack_every", stack.tcp.ack_every, count(1, 64), "ACK at least every N full segments"),
    tunable!("tcp.time_wait", stack.tcp.time_wait, time(ms(10), secs(600)), "TIME-WAIT (2 MSL)"),
    tunable!("tcp.fin_wait_2_timeout", stack.tcp.fin_wait_2_timeout, time(secs(1), secs(3600)),
        "orphaned FIN-WAIT-2 lifetime"),
    tunable!("tcp.syn_retries", stack.tcp.syn_retries, count(1, 30), "SYN retransmissions before connect fails"),
    tunable!("tcp.synack_retries", stack.tcp.synack_retries, count(1, 30),
        "SYN-ACK retransmissions before a half-open connection is dropped"),
    tunable!("tcp.max_retransmits", stack.tcp.max_retransmits, count(1, 30),
        "consecutive RTOs on data before the connection is aborted"),
    tunable!("tcp.keepalive", stack.tcp.keepalive, BOOL, "keepalive on for new connections"),
    tunable!("tcp.keepalive_idle", stack.tcp.keepalive_idle, time(secs(1), secs(864_000)), "idle time before the first probe"),
    tunable!("tcp.keepalive_interval", stack.tcp.keepalive_interval, time(secs(1), secs(3600)),
        "between unanswered probes"),
    tunable!("tcp.keepalive_count", stack.tcp.keepalive_count, count(1, 127), "unanswered probes before the peer is dead"),
    tunable!("tcp.nodelay", stack.tcp.nodelay, BOOL, "Nagle off for new connections"),
    tunable!("tcp.congestion", stack.tcp.congestion, Kind::Choice(CONGESTION), "congestion control (RFC 9438 / RFC 6582)"),
    tunable!("tcp.initial_cwnd_segments", stack.tcp.initial_cwnd_segments, count(1, 256), "initial window (RFC 6928)"),
    tunable!("tcp.sack", stack.tcp.sack, BOOL, "offer and use SACK (RFC 2018, RFC 6675)"),
    tunable!("tcp.rack_tlp", stack.tcp.rack_tlp, BOOL, "RACK-TLP loss detection when the peer SACKs (RFC 8985)"),
    tunable!("tcp.timestamps", stack.tcp.timestamps, BOOL, "offer and use timestamps (RFC 7323)"),
    tunable!("tcp.window_scaling", stack.tcp.window_scaling, BOOL, "offer and use window scaling (RFC 7323)"),
    tunable!("tcp.max_ooo_ranges", stack.tcp.max_ooo_ranges, count(1, 32),
        "out-of-order islands kept (bounds per-segment work)"),
    tunable!("tcp.max_sack_ranges", stack.tcp.max_sack_ranges, count(1, 32), "SACK scoreboard size"),
    tunable!("tcp.challenge_ack_limit", stack.tcp.challenge_ack_limit, count(0, 100_000),
        "RFC 5961 challenge ACKs per connection per second"),
    tunable!("tcp.invalid_ack_interval", stack.tcp.invalid_ack_interval, time(ms(0), secs(10)),
        "least time between replies to out-of-window ACKs and SYNs (breaks ACK loops; 0: off)"),
    tunable!("http.max_request_head", http.max_request_head, bytes(1024, 1024 * KIB),
        "largest request line and headers; longer is answered 431"),
    tunable!("http.request_timeout", http.fairness.request_timeout, time(ms(100), secs(3600)),
        "a request head must arrive whole within this, from when the connection waits for it"),
    tunable!("http.idle_timeout", http.fairness.idle_timeout, time(ms(100), secs(3600)),
        "an idle keep-alive connection is closed after this"),
    tunable!("http.max_per_source", http.fairness.max_per_source, count(1, 1 << 20),
        "connections one source address may hold at once; more are reset"),
    tunable!("ipv6.hop_limit", ipv6.hop_limit, count(1, 255), "hop limit of the packets we originate, until a router says otherwise"),
    tunable!("ipv6.neighbor_cache_size", ipv6.neighbor_cache_size, count(1, 1 << 20),
        "neighbour cache entries of any state; a full cache evicts a stale one"),
    tunable!("ipv6.neighbor_max_incomplete", ipv6.neighbor_max_incomplete, count(1, 1 << 20),
        "neighbours being resolved at once"),
    tunable!("ipv6.neighbor_pending_per_entry", ipv6.neighbor_pending_per_entry, count(1, 8),
        "packets waiting per unresolved neighbour"),
    tunable!("ipv6.neighbor_pending_total", ipv6.neighbor_pending_total, count(1, 4096),
        "packets waiting for resolution, in all"),
    tunable!("ipv6.reachable_time", ipv6.reachable_time, time(ms(100), secs(3600)),
        "how long a confirmation holds (RFC 4861 BaseReachableTime), until a router advertises another"),
    tunable!("ipv6.retrans_timer", ipv6.retrans_timer, time(ms(10), secs(60)), "between neighbour solicitations"),
    tunable!("ipv6.dad_transmits", ipv6.dad_transmits, count(0, 10),
        "duplicate address detection probes before an address is used (0: none)"),
    tunable!("ipv6.max_routers", ipv6.max_routers, count(1, 1024), "default routers remembered"),
    tunable!("ipv6.max_prefixes", ipv6.max_prefixes, count(1, 1024), "on-link prefixes remembered"),
    tunable!("ipv6.max_addresses", ipv6.max_addresses, count(2, 1024),
        "addresses of the interface, link-local and static included"),
    tunable!("ipv6.reassembly_max_datagrams", ipv6.reassembly_max_datagrams, count(0, 4096),
        "IPv6 datagrams in reassembly at once (0: reassembly off)"),
    tunable!("ipv6.reassembly_memory", ipv6.reassembly_memory, bytes(512, GIB),
        "IPv6 fragment data held for reassembly, in all"),
    tunable!("ipv6.reassembly_timeout", ipv6.reassembly_timeout, time(secs(1), secs(120)),
        "an IPv6 datagram's time to arrive from its first fragment (RFC 8200: 60 s)"),
    tunable!("ipv6.icmp_error_rate", ipv6.icmp_error_rate, count(0, 1_000_000), "ICMPv6 errors per second, sustained"),
    tunable!("ipv6.icmp_error_burst", ipv6.icmp_error_burst, count(0, 1_000_000), "ICMPv6 errors back to back"),
    tunable!("ipv6.pmtu_cache_size", ipv6.pmtu_cache_size, count(0, 1 << 20),
        "IPv6 destinations whose path MTU was lowered, at most"),
    tunable!("ipv6.gateway", ipv6.gateway, Kind::Addr6,
        "static default router beside the advertised ones (on-link; `--gateway6` overrides)"),
];

/// Relations between tunables that no single range can say.
fn cross_checks(s: &Settings) -> Result<(), String> {
    let tcp = &s.stack.tcp;
    if tcp.min_rto > tcp.max_rto {
        return Err(format!(
            "tcp.min_rto = {} is more than tcp.max_rto = {}: the lower bound must not exceed the upper",
            Value::Time(tcp.min_rto).toml(),
            Value::Time(tcp.max_rto).toml()
        ));
    }
    Ok(())
}

// ----------------------------------------------------------- parsing ---

fn find(key: &str) -> Option<&'static Tunable> {
    TUNABLES.iter().find(|t| t.key == key)
}

/// Edits (insert, delete, substitute) between two keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn unknown_key(origin: &str, key: &str) -> String {
    // A near miss, or the same name in another section.
    let close = TUNABLES.iter().min_by_key(|t| distance(t.key, key)).filter(|t| distance(t.key, key) <= 3).or_else(|| {
        TUNABLES.iter().find(|t| t.key.rsplit('.').next() == key.rsplit('.').next())
    });
    match close {
        Some(t) => format!("{origin}: unknown key {key} (did you mean {}?); `ustack config --defaults` lists every key", t.key),
        None => format!("{origin}: unknown key {key}; `ustack config --defaults` lists every key"),
    }
}

/// Apply a TOML document; `origin` starts every error line.
fn apply_toml(settings: &mut Settings, text: &str, origin: &str) -> Result<(), String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))?;
    for (section, body) in &doc {
        let Some(table) = body.as_table() else {
            return Err(unknown_key(origin, section));
        };
        if !SECTIONS.iter().any(|(name, _)| name == section) {
            let names: Vec<_> = SECTIONS.iter().map(|(n, _)| format!("[{n}]")).collect();
            return Err(format!("{origin}: unknown section [{section}]; the sections are {}", names.join(", ")));
        }
        for (name, value) in table {
            let key = format!("{section}.{name}");
            let t = find(&key).ok_or_else(|| unknown_key(origin, &key))?;
            let v = t.kind.check(value).map_err(|why| format!("{origin}: {key} = {}: {why}", show(value)))?;
            (t.set)(settings, v);
        }
    }
    Ok(())
}

/// `--set KEY=VALUE`: VALUE is a TOML value, or else a bare word (so
/// `tcp.congestion=newreno` and `tcp.min_rto=200ms` need no quotes).
fn apply_set(settings: &mut Settings, kv: &str) -> Result<(), String> {
    let (key, value) = kv
        .split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .ok_or_else(|| format!("--set {kv}: expected KEY=VALUE, like tcp.recv_buffer_size=65536"))?;
    let t = find(key).ok_or_else(|| unknown_key(&format!("--set {kv}"), key))?;
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let v = t.kind.check(&parsed).map_err(|why| format!("--set {key} = {}: {why}", show(&parsed)))?;
    (t.set)(settings, v);
    Ok(())
}

/// A value as the file would spell it, on one line.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) => "a table".into(),
        other => other.to_string().replace('\n', " "),
    }
}

fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{origin}: line {line}, column {column}: not valid TOML: {message}")
        }
        None => format!("{origin}: not valid TOML: {message}"),
    }
}

impl Kind {
    /// The value, if this kind accepts it; else why not, with what is allowed.
    fn check(&self, v: &toml::Value) -> Result<Value, String> {
        let allowed = self.allowed();
        let wrong = |what: &str| {
            if what == allowed {
                format!("expected {what}")
            } else {
                format!("expected {what}; allowed: {allowed}")
            }
        };
        let out_of_range = || format!("out of range; allowed: {allowed}");
        match *self {
            Kind::Count { min, max } => {
                let n = v.as_integer().ok_or_else(|| wrong("a whole number"))?;
                u64::try_from(n).ok().filter(|n| (min..=max).contains(n)).map(Value::Int).ok_or_else(out_of_range)
            }
            Kind::Bytes { min, max } | Kind::BytesOrZero { min, max, .. } => {
                let n = match v {
                    toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| out_of_range())?,
                    toml::Value::String(s) => parse_size(s).ok_or_else(|| wrong("a size in bytes, like 65536 or \"64KiB\""))?,
                    _ => return Err(wrong("a size in bytes, like 65536 or \"64KiB\"")),
                };
                let zero_ok = matches!(self, Kind::BytesOrZero { .. }) && n == 0;
                if zero_ok || (min..=max).contains(&n) {
                    Ok(Value::Int(n))
                } else {
                    Err(out_of_range())
                }
            }
            Kind::Time { min, max } => {
                let s = v.as_str().ok_or_else(|| wrong("a duration with a unit, like \"200ms\" or \"30s\""))?;
                let d = parse_duration(s).ok_or_else(|| wrong("a duration with a unit (us, ms, s, min, h), like \"200ms\""))?;
                if (min..=max).contains(&d) {
                    Ok(Value::Time(d))
                } else {
                    Err(out_of_range())
                }
            }
            Kind::Bool => v.as_bool().map(Value::Bool).ok_or_else(|| wrong(&allowed)),
            Kind::Choice(names) => {
                let s = v.as_str().ok_or_else(|| wrong(&allowed))?;
                names.iter().find(|n| n.eq_ignore_ascii_case(s)).map(|n| Value::Name(n)).ok_or_else(|| wrong(&allowed))
            }
            Kind::Addr6 => match v.as_str() {
                Some("") => Ok(Value::Addr6(None)),
                Some(s) => match s.parse::<Ipv6Addr>() {
                    Ok(a) if !a.is_multicast() && !a.is_unspecified() => Ok(Value::Addr6(Some(a))),
                    _ => Err(wrong(&allowed)),
                },
                None => Err(wrong(&allowed)),
            },
        }
    }

    /// What this kind accepts, for people.
    pub fn allowed(&self) -> String {
        match *self {
            Kind::Count { min, max } => format!("{min} to {max}"),
            Kind::Bytes { min, max } => format!("{} to {}", human_bytes(min), human_bytes(max)),
            Kind::BytesOrZero { min, max, zero } => format!("0 ({zero}) or {} to {}", human_bytes(min), human_bytes(max)),
            Kind::Time { min, max } => format!("{} to {}", human_time(min), human_time(max)),
            Kind::Bool => "true or false".into(),
            Kind::Choice(names) => names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(" or "),
            Kind::Addr6 => "an IPv6 unicast address like \"fe80::1\", or empty for none".into(),
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let micros = match unit.trim() {
        "us" => Some(n),
        "ms" => n.checked_mul(1_000),
        "s" => n.checked_mul(1_000_000),
        "min" => n.checked_mul(60_000_000),
        "h" => n.checked_mul(3_600_000_000),
        _ => None,
    }?;
    Some(Duration::from_micros(micros))
}

/// 262144 → "256 KiB"; sizes that are not whole KiB stay a number of bytes.
fn human_bytes(n: u64) -> String {
    for (unit, scale) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= scale && n.is_multiple_of(scale) {
            return format!("{} {unit}", n / scale);
        }
    }
    n.to_string()
}

/// The largest unit that states the duration exactly: "30s", "200ms", "500us".
fn human_time(d: Duration) -> String {
    let us = d.as_micros();
    if us > 0 && us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

impl Value {
    /// As the file writes it.
    fn toml(&self) -> String {
        match *self {
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Time(d) => format!("\"{}\"", human_time(d)),
            Value::Name(n) => format!("\"{n}\""),
            Value::Addr6(a) => format!("\"{}\"", a.map_or(String::new(), |a| a.to_string())),
        }
    }

    fn to_json(self) -> serde_json::Value {
        match self {
            Value::Int(n) => n.into(),
            Value::Bool(b) => b.into(),
            Value::Time(d) => human_time(d).into(),
            Value::Name(n) => n.into(),
            Value::Addr6(a) => a.map_or(String::new(), |a| a.to_string()).into(),
        }
    }
}

// ---------------------------------------------------------- rendering ---

/// The complete file with `settings`' values and a one-line comment each.
pub fn render_toml(settings: &Settings) -> String {
    let mut s = String::new();
    s.push_str("# ustack configuration: every tunable, one line of comment each.\n");
    s.push_str("# Read by `ustack up|get|perf|bench|demo --config FILE`; `--set KEY=VALUE` overrides a key\n");
    s.push_str("# (like --set tcp.congestion=newreno). Sizes are bytes (or strings like \"64KiB\"); durations\n");
    s.push_str("# are strings with a unit: us, ms, s, min, h. Keys left out keep their defaults.\n");
    for (section, about) in SECTIONS {
        let _ = write!(s, "\n# {about}\n[{section}]\n");
        for t in TUNABLES.iter().filter(|t| t.key.split_once('.').map(|(sec, _)| sec) == Some(section)) {
            let name = t.key.split_once('.').map_or(t.key, |(_, n)| n);
            let _ = write!(s, "# {}; allowed: {}\n{name} = {}\n", t.doc, t.kind.allowed(), (t.get)(settings).toml());
        }
    }
    s
}

/// README's table of tunables, with their defaults.
pub fn render_markdown() -> String {
    let defaults = Settings::default();
    let mut s = String::from("| key | default | allowed | meaning |\n|---|---|---|---|\n");
    for t in TUNABLES {
        let value = (t.get)(&defaults);
        let shown = match (value, t.kind) {
            (Value::Int(0), Kind::BytesOrZero { zero, .. }) => format!("0 ({zero})"),
            (Value::Addr6(None), _) => "none".into(),
            (Value::Int(n), Kind::Bytes { .. }) if n >= KIB => format!("{n} ({})", human_bytes(n)),
            (v, _) => v.toml().replace('"', ""),
        };
        let _ = writeln!(s, "| `{}` | {shown} | {} | {} |", t.key, t.kind.allowed().replace('"', "`"), t.doc);
    }
    s
}

/// `ustack config`: print the file (defaults, or what `--config`/`--set` make
/// of them) or README's table.
#[derive(Args, Debug)]
pub struct ConfigCmdArgs {
    /// Print every tunable with its default (ignores --config and --set).
    #[arg(long, conflicts_with = "markdown")]
    pub defaults: bool,
    /// Print README's table of tunables instead of the file.
    #[arg(long)]
    pub markdown: bool,
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

pub fn run(args: ConfigCmdArgs) -> Result<(), CliError> {
    if args.markdown {
        print!("{}", render_markdown());
        return Ok(());
    }
    let settings = if args.defaults { Settings::default() } else { args.cfg.load()? };
    print!("{}", render_toml(&settings));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extremes(kind: Kind) -> Vec<Value> {
        match kind {
            Kind::Count { min, max } | Kind::Bytes { min, max } => vec![Value::Int(min), Value::Int(max)],
            Kind::BytesOrZero { min, max, .. } => vec![Value::Int(0), Value::Int(min), Value::Int(max)],
            Kind::Time { min, max } => vec![Value::Time(min), Value::Time(max)],
            Kind::Bool => vec![Value::Bool(false), Value::Bool(true)],
            Kind::Choice(names) => names.iter().map(|n| Value::Name(n)).collect(),
            Kind::Addr6 => vec![Value::Addr6(None), Value::Addr6(Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)))],
        }
    }

    /// Every allowed extreme survives a trip through its field: no range is
    /// wider than its type, so nothing is clamped on the way in.
    #[test]
    fn every_range_fits_its_field() {
        for t in TUNABLES {
            for v in extremes(t.kind) {
                let mut s = Settings::default();
                (t.set)(&mut s, v);
                assert_eq!((t.get)(&s), v, "{}", t.key);
            }
        }
    }

    /// Every field of StackConfig, TcpConfig and the HTTP server's config has its key. The patterns
    /// are exhaustive: a new field fails to compile here until it is named,
    /// which is the reminder to give it a line in TUNABLES.
    #[test]
    fn every_field_has_a_tunable() {
        macro_rules! names {
            ($ty:ident { $($skip:ident),* ; $($field:ident),* $(,)? }) => {{
                let $ty { $($skip: _,)* $($field: _,)* } = <$ty>::default_for_test();
                [$(stringify!($field)),*]
            }};
        }
        trait DefaultForTest {
            fn default_for_test() -> Self;
        }
        impl DefaultForTest for StackConfig {
            fn default_for_test() -> Self {
                Settings::default().stack
            }
        }
        impl DefaultForTest for ustack_core::tcp::TcpConfig {
            fn default_for_test() -> Self {
                Default::default()
            }
        }
        impl DefaultForTest for HttpServerConfig {
            fn default_for_test() -> Self {
                Default::default()
            }
        }
        impl DefaultForTest for ustack_runtime::apps::FairnessConfig {
            fn default_for_test() -> Self {
                Default::default()
            }
        }
        use ustack_core::tcp::TcpConfig;
        use ustack_runtime::apps::FairnessConfig;
        // mac, ipv4 and gateway are flags; tcp is the [tcp] section.
        let stack = names!(StackConfig { mac, ipv4, gateway, tcp;
            mtu, ttl, neighbor_cache_size, neighbor_max_incomplete, neighbor_pending_per_entry,
            neighbor_pending_total, neighbor_reachable_time, neighbor_stale_time, neighbor_locktime, arp_retry_interval,
            arp_max_retries, icmp_error_rate, icmp_error_burst, udp_rx_packets, udp_rx_bytes, udp_tx_packets,
            udp_tx_bytes, ping_rx_packets, ipv4_reassembly_max_datagrams, ipv4_reassembly_memory,
            ipv4_reassembly_timeout, pmtu_cache_size, pmtu_expiry, pmtu_min, use_device_checksums, tcp_syn_cookies,
            tcp_max_connections });
        let tcp = names!(TcpConfig { ;
            send_buffer_size, recv_buffer_size, buffer_pool_limit, buffer_pool_floor, mss, default_peer_mss, min_peer_mss,
            initial_rto, min_rto, max_rto, delayed_ack, ack_every, time_wait, fin_wait_2_timeout, syn_retries,
            synack_retries, max_retransmits, keepalive, keepalive_idle, keepalive_interval, keepalive_count,
            nodelay, congestion, initial_cwnd_segments, sack, rack_tlp, timestamps, window_scaling,
            max_ooo_ranges, max_sack_ranges, challenge_ack_limit, invalid_ack_interval });
        // max_connections is --max-connections; fairness is flattened into [http].
        let http = names!(HttpServerConfig { max_connections, fairness; max_request_head });
        let fairness = names!(FairnessConfig { ; request_timeout, idle_timeout, max_per_source });
        let keys = stack.iter().map(|f| format!("stack.{f}")).chain(tcp.iter().map(|f| format!("tcp.{f}")));
        for key in keys.chain(http.iter().chain(&fairness).map(|f| format!("http.{f}"))) {
            assert!(find(&key).is_some(), "no tunable {key}: add its line to TUNABLES");
        }
    }

    #[test]
    fn keys_are_unique_and_in_known_sections() {
        for (i, t) in TUNABLES.iter().enumerate() {
            let (section, _) = t.key.split_once('.').expect("section.name");
            assert!(SECTIONS.iter().any(|(s, _)| *s == section), "{}", t.key);
            assert!(TUNABLES[..i].iter().all(|u| u.key != t.key), "{} twice", t.key);
        }
    }

    /// Every default is inside its own range, and the printed file reads
    /// back to exactly the defaults.
    #[test]
    fn defaults_are_allowed_and_round_trip() {
        let text = render_toml(&Settings::default());
        let mut s = Settings::default();
        // Start from different values so the file must set every one.
        for t in TUNABLES {
            let other = extremes(t.kind).into_iter().find(|v| *v != (t.get)(&s)).expect("two values");
            (t.set)(&mut s, other);
        }
        apply_toml(&mut s, &text, "defaults").expect("the defaults parse");
        let d = Settings::default();
        for t in TUNABLES {
            assert_eq!((t.get)(&s), (t.get)(&d), "{}", t.key);
        }
        assert_eq!(render_toml(&s), text);
    }

    #[test]
    fn bad_values_name_key_value_and_range() {
        let mut s = Settings::default();
        let e = apply_toml(&mut s, "[tcp]\nrecv_buffer_size = 100\n", "f").unwrap_err();
        assert_eq!(e, "f: tcp.recv_buffer_size = 100: out of range; allowed: 2 KiB to 1 GiB");
        let e = apply_toml(&mut s, "[tcp]\nsack = \"yes\"\n", "f").unwrap_err();
        assert_eq!(e, "f: tcp.sack = \"yes\": expected true or false");
        let e = apply_toml(&mut s, "[tcp]\nrecv_bufer_size = 1\n", "f").unwrap_err();
        assert!(e.starts_with("f: unknown key tcp.recv_bufer_size"), "{e}");
        let e = apply_toml(&mut s, "[tcp\n", "f").unwrap_err();
        assert!(e.starts_with("f: line 1, column") && !e.contains('\n'), "{e}");
        let e = apply_set(&mut s, "tcp.congestion=vegas").unwrap_err();
        assert!(e.contains("\"cubic\" or \"newreno\""), "{e}");
        apply_set(&mut s, "tcp.congestion=newreno").unwrap();
        apply_set(&mut s, "tcp.min_rto=5ms").unwrap();
        apply_set(&mut s, "tcp.recv_buffer_size=\"64KiB\"").unwrap();
        assert_eq!(s.stack.tcp.congestion, CongestionAlgorithm::NewReno);
        assert_eq!(s.stack.tcp.min_rto, ms(5));
        assert_eq!(s.stack.tcp.recv_buffer_size, 65536);
        apply_set(&mut s, "tcp.min_rto=2s").unwrap();
        apply_set(&mut s, "tcp.max_rto=1s").unwrap();
        assert!(cross_checks(&s).is_err());
    }
}
