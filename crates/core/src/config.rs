//! Tunables of one stack, each with its documented default.
//!
//! Capacities are runtime configuration, not Cargo features: one binary serves
//! a small embedded test and a million-connection shard.

use crate::tcp::TcpConfig;
use crate::time::Duration;
use std::net::Ipv4Addr;
use ustack_wire::EthernetAddress;

// The subnet types live in the wire crate beside their IPv6 and dual-stack
// counterparts; the core's public paths stay.
pub use ustack_wire::{CidrParseError, Ipv4Cidr};

/// Everything a stack needs to know about its interface and its limits.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Our link-layer address.
    pub mac: EthernetAddress,
    /// Our address and subnet.
    pub ipv4: Ipv4Cidr,
    /// Next hop for destinations outside the subnet; without one they are
    /// dropped and counted as `drop_no_route`.
    pub gateway: Option<Ipv4Addr>,
    /// Largest IP packet we send (the device's MTU). Default 1500.
    pub mtu: usize,
    /// TTL of the packets we originate. Default 64, like Linux.
    pub ttl: u8,
    /// Neighbour (ARP) cache entries, resolved and unresolved. Default 1024.
    pub neighbor_cache_size: usize,
    /// Unresolved neighbours at once; a flood of new destinations cannot take
    /// more. Default 256.
    pub neighbor_max_incomplete: usize,
    /// Packets held while their neighbour resolves, per neighbour (at most 8).
    /// Default 3, like Linux's `unres_qlen` in packets.
    pub neighbor_pending_per_entry: usize,
    /// Packets held while any neighbour resolves, in total. Default 64.
    pub neighbor_pending_total: usize,
    /// How long an ARP answer is trusted before it is refreshed. Default 30 s.
    pub neighbor_reachable_time: Duration,
    /// How long a stale entry is kept (and used while refreshing) before it is
    /// forgotten. Default 60 s.
    pub neighbor_stale_time: Duration,
    /// An ARP packet that would change a neighbour's hardware address within
    /// this time of its last confirmation is ignored: the first answer wins
    /// (Linux's `locktime`). Default 1 s, Linux's.
    pub neighbor_locktime: Duration,
    /// Interval between ARP requests for one neighbour. Default 1 s.
    pub arp_retry_interval: Duration,
    /// Requests before giving up and dropping what waits. Default 3.
    pub arp_max_retries: u8,
    /// ICMP errors (port unreachable, …) per second, sustained. Default 1000.
    pub icmp_error_rate: u32,
    /// ICMP errors sent back to back before the rate applies. Default 50.
    pub icmp_error_burst: u32,
    /// Datagrams waiting in one UDP socket's receive queue. Default 256.
    pub udp_rx_packets: usize,
    /// Bytes waiting in one UDP socket's receive queue. Default 256 KiB.
    pub udp_rx_bytes: usize,
    /// Datagrams waiting in one UDP socket's send queue. Default 256.
    pub udp_tx_packets: usize,
    /// Bytes waiting in one UDP socket's send queue. Default 256 KiB.
    pub udp_tx_bytes: usize,
    /// Echo replies waiting in one ping socket. Default 64.
    pub ping_rx_packets: usize,
    /// IPv4 datagrams being reassembled at once; a fragment of another
    /// datagram is dropped while the table is full (`drop_ipv4_reasm_table_full`).
    /// 0 turns reassembly off. Default 16.
    pub ipv4_reassembly_max_datagrams: usize,
    /// Bytes of fragment data held for reassembly, in all (512-byte chunks of
    /// one arena, allocated with the table on the first fragment). A datagram
    /// that needs more is abandoned (`drop_ipv4_reasm_memory`). Default 256 KiB.
    pub ipv4_reassembly_memory: usize,
    /// How long a datagram may take to arrive, from its first fragment;
    /// then it is abandoned and, if fragment zero came, answered with ICMP
    /// time exceeded. Default 30 s, like Linux's `ipfrag_time` (RFC 791
    /// suggests 15 s as a lower bound).
    pub ipv4_reassembly_timeout: Duration,
    /// Destinations whose path MTU discovery lowered the MTU, at most
    /// (RFC 1191's cache; a full one forgets the entry expiring first). With
    /// 0 nothing is remembered, and only the connection the message was
    /// about shrinks its segments. Default 256.
    pub pmtu_cache_size: usize,
    /// How long a lowered path MTU is kept before the link's is tried again
    /// (RFC 1191 §6.3 suggests 10 minutes). Default 10 min, like Linux's
    /// `mtu_expires`.
    pub pmtu_expiry: Duration,
    /// The floor under any path MTU an ICMP message may report: a forged
    /// "fragmentation needed" cannot shrink segments below this. Default 552,
    /// like Linux's `min_pmtu`.
    pub pmtu_min: usize,
    /// Trust the device's checksum verdicts ([`crate::phy::RxMeta`]). Default true.
    pub use_device_checksums: bool,
    /// Every TCP connection's tunables (buffers, timers, options, congestion
    /// control); see [`TcpConfig`] for the defaults.
    pub tcp: TcpConfig,
    /// Answer SYNs with SYN cookies when a listener's SYN queue is full. Default true.
    pub tcp_syn_cookies: bool,
    /// TCP connections in the table at once, TIME-WAIT included. Default 1,048,576.
    pub tcp_max_connections: usize,
}

impl StackConfig {
    /// Defaults for the interface at `mac`, `ipv4`.
    pub fn new(mac: EthernetAddress, ipv4: Ipv4Cidr) -> StackConfig {
        StackConfig {
            mac,
            ipv4,
            gateway: None,
            mtu: 1500,
            ttl: 64,
            neighbor_cache_size: 1024,
            neighbor_max_incomplete: 256,
            neighbor_pending_per_entry: 3,
            neighbor_pending_total: 64,
            neighbor_reachable_time: Duration::from_secs(30),
            neighbor_stale_time: Duration::from_secs(60),
            neighbor_locktime: Duration::from_secs(1),
            arp_retry_interval: Duration::from_secs(1),
            arp_max_retries: 3,
            icmp_error_rate: 1000,
            icmp_error_burst: 50,
            udp_rx_packets: 256,
            udp_rx_bytes: 256 * 1024,
            udp_tx_packets: 256,
            udp_tx_bytes: 256 * 1024,
            ping_rx_packets: 64,
            ipv4_reassembly_max_datagrams: 16,
            ipv4_reassembly_memory: 256 * 1024,
            ipv4_reassembly_timeout: Duration::from_secs(30),
            pmtu_cache_size: 256,
            pmtu_expiry: Duration::from_secs(600),
            pmtu_min: 552,
            use_device_checksums: true,
            tcp: TcpConfig::default(),
            tcp_syn_cookies: true,
            tcp_max_connections: 1 << 20,
        }
    }
}
