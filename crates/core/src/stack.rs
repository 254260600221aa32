//! One stack: an interface and the sockets on it.
//!
//! Call order, for an event loop (see `ustack-runtime`):
//! 1. [`Stack::poll`] with the device — receive a burst, answer what needs
//!    answering, fire due timers, send what sockets queued, flush.
//! 2. Application work through the socket methods (`udp_*`, `ping_*`).
//! 3. Sleep until [`Stack::poll_timeout`] or until the device is readable.
//!
//! [`Stack::receive`], [`Stack::handle_timeout`] and [`Stack::transmit`] are
//! the pieces `poll` is made of, for callers that drive a device themselves.

use crate::config::StackConfig;
use crate::counters::Counters;
use crate::icmp::{PingSockets, TokenBucket};
use crate::ipv4_reassembly::Ipv4Reassembly;
use crate::neighbor::{NeighborCache, NeighborTimer, Resolution};
use crate::phy::{Device, GsoType, RxMeta, RxQueue, TxMeta, TxQueue};
use crate::rand::Rng;
use crate::time::Instant;
use crate::tcp_sockets::TcpSockets;
use crate::udp::UdpSockets;
use std::net::Ipv4Addr;
use ustack_wire::{
    ArpOperation, ArpPacket, ArpRepr, ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr,
    IpProtocol, Ipv4Packet, Ipv4Repr, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

/// Frames `poll` takes from the device before it turns to timers and
/// transmission, so a flood cannot starve the rest.
pub const DEFAULT_RX_BURST: usize = 64;

/// Why the stack could not send a packet it originated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EgressDrop {
    NoRoute,
    TooBig,
    TxFull,
    PendingFull,
    IncompleteFull,
}

/// The interface: our addresses, the neighbour cache, and the counters —
/// everything the IP output path needs, apart from the sockets, so a socket
/// can be borrowed while its packet is written.
pub(crate) struct Iface {
    pub(crate) cfg: StackConfig,
    pub(crate) counters: Counters,
    pub(crate) neighbors: NeighborCache,
    pub(crate) icmp_errors: TokenBucket,
    pub(crate) ip_ident: u16,
    /// The device completes TCP checksums (from its capabilities, read on every poll).
    pub(crate) tx_csum_offload: bool,
    /// The largest TCP/IPv4 super-segment the device takes (its TSO limit,
    /// read on every poll); 0 when it takes none.
    pub(crate) tso_max: usize,
    /// Where a datagram to be fragmented is written whole before it is cut
    /// (empty until the first one; then 64 KiB, kept for the stack's life).
    pub(crate) frag_scratch: Vec<u8>,
    /// MTUs that path MTU discovery lowered, by destination.
    pub(crate) path_mtus: crate::path_mtu::PathMtuCache,
}

/// The whole protocol engine for one interface: its address and neighbour
/// cache, IPv4 (with reassembly), ICMP, and the UDP, ping and TCP sockets.
///
/// Sans-IO: it makes no system call; the caller hands it the time and a
/// [`Device`] on every call (see the module's call order). One stack runs on
/// one thread; run several (one per core) for more.
pub struct Stack {
    pub(crate) iface: Iface,
    pub(crate) udp: UdpSockets,
    pub(crate) ping: PingSockets,
    pub(crate) tcp: TcpSockets,
    pub(crate) ipv4_reassembly: Ipv4Reassembly,
    pub(crate) rng: Rng,
    /// The shard this stack is, when it is one of several ([`Stack::set_shard`]).
    pub(crate) shard: Option<crate::rss::ShardHome>,
}

impl Stack {
    /// A stack for `cfg`. `seed` must come from a good random source in
    /// production (the runtime reads the OS RNG); tests pass a constant to be
    /// repeatable.
    pub fn new(cfg: StackConfig, seed: u64) -> Stack {
        let mut rng = Rng::new(seed);
        let hash_key = rng.next_u64();
        let tcp_secret = rng.key();
        let tcp = TcpSockets::new(cfg.tcp, cfg.tcp_syn_cookies, cfg.tcp_max_connections, tcp_secret, hash_key ^ 0xaaaa);
        let ipv4_reassembly = Ipv4Reassembly::new(&cfg, hash_key ^ 0x3333);
        Stack {
            iface: Iface {
                neighbors: NeighborCache::new(&cfg, hash_key),
                icmp_errors: TokenBucket::new(cfg.icmp_error_rate, cfg.icmp_error_burst),
                ip_ident: rng.next_u32() as u16,
                tx_csum_offload: false,
                tso_max: 0,
                frag_scratch: Vec::new(),
                path_mtus: crate::path_mtu::PathMtuCache::new(&cfg, hash_key ^ 0x7777),
                cfg,
                counters: Counters::default(),
            },
            udp: UdpSockets::new(hash_key ^ 0x5555),
            ping: PingSockets::default(),
            tcp,
            ipv4_reassembly,
            rng,
            shard: None,
        }
    }

    /// The configuration the stack was built with.
    pub fn config(&self) -> &StackConfig {
        &self.iface.cfg
    }

    /// The stack's counters: packets in and out per protocol, and every drop by
    /// its reason.
    pub fn counters(&self) -> &Counters {
        &self.iface.counters
    }

    /// The neighbour (ARP) cache, for inspection.
    pub fn neighbors(&self) -> &NeighborCache {
        &self.iface.neighbors
    }

    /// Receive up to `budget` frames, then fire timers, transmit and flush.
    /// Returns the number of frames received.
    pub fn poll<D: Device>(&mut self, now: Instant, device: &mut D, budget: usize) -> usize {
        let caps = device.caps();
        self.iface.tx_csum_offload = caps.tx_checksum;
        self.iface.tso_max = caps.tso4_limit();
        let (mut rx, mut tx) = device.queues();
        let mut n = 0;
        while n < budget {
            let Some((frame, meta)) = rx.recv(now) else { break };
            self.receive(now, frame, meta, &mut tx);
            n += 1;
        }
        self.handle_timeout(now, &mut tx);
        self.transmit(now, &mut tx);
        tx.flush();
        n
    }

    /// The earliest time the stack has timer work; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = earliest(self.iface.neighbors.poll_timeout(), self.tcp.poll_timeout());
        earliest(t, self.ipv4_reassembly.poll_timeout())
    }

    /// Fire every timer that is due at `now`. Harmless to call early or twice.
    pub fn handle_timeout<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        self.handle_tcp_timeouts(now, tx);
        self.tcp.trim_pool(now);
        self.expire_ipv4_fragments(now, tx);
        if !self.iface.neighbors.resolving() {
            return; // the common case: spare the batch set-up below on every poll
        }
        let mut requests = [Ipv4Addr::UNSPECIFIED; 16];
        loop {
            // Collect in small batches: the cache cannot be borrowed while we send.
            let mut n = 0;
            let mut dropped = 0;
            self.iface.neighbors.handle_timeout(now, |t| match t {
                NeighborTimer::Request(ip) if n < requests.len() => {
                    requests[n] = ip;
                    n += 1;
                }
                NeighborTimer::Request(_) => {}
                NeighborTimer::Unreachable { dropped: d } => dropped += d,
            });
            self.iface.counters.drop_neighbor_unreachable += dropped as u64;
            for &ip in &requests[..n] {
                self.iface.send_arp(tx, ArpOperation::Request, EthernetAddress::BROADCAST, EthernetAddress([0; 6]), ip);
            }
            if n < requests.len() {
                break;
            }
        }
    }

    /// Send what sockets have queued.
    pub fn transmit<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        self.transmit_tcp(now, tx);
        self.transmit_udp(now, tx);
        self.transmit_ping(now, tx);
    }

    /// Handle one received frame; replies go straight to `tx`.
    pub fn receive<T: TxQueue>(&mut self, now: Instant, frame: &[u8], meta: RxMeta, tx: &mut T) {
        self.iface.counters.rx_frames += 1;
        self.iface.counters.rx_bytes += frame.len() as u64;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.iface.counters.drop_eth_truncated += 1;
            return;
        };
        let dst = eth.dst_addr();
        if dst != self.iface.cfg.mac && !dst.is_broadcast() {
            self.iface.counters.drop_eth_other_host += 1;
            return;
        }
        // A priority tag (VLAN 0) is fine; a real VLAN is not ours.
        if eth.vlan_id().is_some_and(|v| v != 0) {
            self.iface.counters.drop_eth_unknown_type += 1;
            return;
        }
        match eth.ethertype() {
            EtherType::Arp => self.receive_arp(now, eth.payload(), dst.is_broadcast(), tx),
            EtherType::Ipv4 => self.receive_ipv4(now, eth.payload(), meta, tx),
            _ => self.iface.counters.drop_eth_unknown_type += 1,
        }
    }

    fn receive_arp<T: TxQueue>(&mut self, now: Instant, payload: &[u8], eth_broadcast: bool, tx: &mut T) {
        self.iface.counters.arp_rx += 1;
        let Ok(repr) = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) else {
            self.iface.counters.drop_arp_malformed += 1;
            return;
        };
        let (smac, sip) = (repr.source_hardware_addr, repr.source_protocol_addr);
        let ours = self.iface.cfg.ipv4.addr;
        if !smac.is_unicast() || sip == ours || sip.is_broadcast() || sip.is_multicast() {
            self.iface.counters.drop_arp_bogus_sender += 1;
            return;
        }
        // From here on the packet is used (learned, answered or deliberately
        // left unlearned); nothing below drops it.
        self.iface.counters.rx_consumed += 1;
        let for_us = repr.target_protocol_addr == ours;
        // A probe (RFC 5227) has sender 0.0.0.0: answer it, learn nothing.
        // A sender outside our subnet is never a next hop: an entry for it
        // would only be a cache slot an attacker can fill (Linux learns it
        // as STALE; see docs/conformance-differences.md).
        if !sip.is_unspecified() && !self.iface.cfg.ipv4.contains(sip) {
            self.iface.counters.arp_sender_off_subnet += 1;
        } else if !sip.is_unspecified() {
            // Linux: "Broadcast replies and request packets do not assert
            // neighbour reachability."
            let reachable = repr.operation == ArpOperation::Reply && !eth_broadcast;
            let Iface { neighbors, counters, cfg, .. } = &mut self.iface;
            let accepted = neighbors.confirm(now, sip, smac, for_us, reachable, |mac, packet| {
                let meta = TxMeta::default();
                write_frame(counters, tx, meta, cfg.mac, mac, EtherType::Ipv4, packet.len(), |b| b.copy_from_slice(packet));
            });
            if !accepted {
                counters.arp_update_locked += 1;
            }
        }
        if for_us && repr.operation == ArpOperation::Request {
            self.iface.send_arp(tx, ArpOperation::Reply, smac, smac, sip);
            self.iface.counters.arp_replies_sent += 1;
        }
    }


    fn receive_ipv4<T: TxQueue>(&mut self, now: Instant, payload: &[u8], meta: RxMeta, tx: &mut T) {
        self.iface.counters.ipv4_rx += 1;
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            self.iface.counters.drop_ipv4_malformed += 1;
            self.answer_option_problem(now, payload, tx);
            return;
        };
        let trusted = meta.csum_verified && self.iface.cfg.use_device_checksums;
        if !trusted && !packet.verify_checksum() {
            self.iface.counters.drop_ipv4_checksum += 1;
            return;
        }
        let Ok(ip) = Ipv4Repr::parse(&packet, ChecksumMode::Ignore) else {
            self.iface.counters.drop_ipv4_malformed += 1;
            return;
        };
        let ours = self.iface.cfg.ipv4.addr;
        let subnet_bcast = self.iface.cfg.ipv4.broadcast();
        let broadcast = ip.dst_addr.is_broadcast() || Some(ip.dst_addr) == subnet_bcast;
        if ip.dst_addr != ours && !broadcast {
            self.iface.counters.drop_ipv4_other_host += 1;
            return;
        }
        if self.martian(ip.src_addr) {
            self.iface.counters.drop_ipv4_martian += 1;
            return;
        }
        // RFC 7126 §4.3-4.4: source routing steers a datagram around filters
        // and lets a spoofer get the replies; Linux drops it by default
        // (accept_source_route=0), whoever it is for, and so do we.
        if has_source_route(packet.options()) {
            self.iface.counters.drop_ipv4_source_route += 1;
            return;
        }
        // The datagram without Ethernet padding, for quoting in ICMP errors.
        let datagram = &payload[..usize::from(packet.total_len())];
        if ip.more_frags || ip.frag_offset != 0 {
            self.receive_ipv4_fragment(now, &ip, datagram, packet.header_len(), broadcast, tx);
            return;
        }
        self.deliver_ipv4(now, &ip, datagram, packet.payload(), broadcast, meta, tx);
    }

    /// A source no datagram can come from: ours, broadcast, multicast,
    /// loopback, 0.0.0.0, the subnet's broadcast.
    fn martian(&self, src: Ipv4Addr) -> bool {
        src == self.iface.cfg.ipv4.addr
            || src.is_broadcast()
            || src.is_multicast()
            || src.is_loopback()
            || src.is_unspecified()
            || Some(src) == self.iface.cfg.ipv4.broadcast()
    }

    /// RFC 1122 §3.2.2.5: a datagram for us whose only fault is a malformed
    /// IP option (its header otherwise sound, its checksum right) gets a
    /// parameter problem pointing at the option, as Linux sends; never about
    /// a broadcast, a martian source, a later fragment or an ICMP error.
    fn answer_option_problem<T: TxQueue>(&mut self, now: Instant, payload: &[u8], tx: &mut T) {
        let p = Ipv4Packet::new_unchecked(payload);
        if payload.len() < IPV4_HEADER_LEN || p.version() != 4 || p.header_len() < IPV4_HEADER_LEN {
            return;
        }
        let (header_len, total) = (p.header_len(), usize::from(p.total_len()));
        if header_len > payload.len() || total < header_len || total > payload.len() || !p.verify_checksum() {
            return;
        }
        let Some(pointer) = p.option_problem() else { return };
        let src = p.src_addr();
        if p.dst_addr() != self.iface.cfg.ipv4.addr || self.martian(src) || p.frag_offset() != 0 {
            return;
        }
        let icmp_error = |t: &u8| matches!(t, 3 | 4 | 5 | 11 | 12);
        if p.protocol() == IpProtocol::Icmp && payload.get(header_len).is_none_or(icmp_error) {
            return;
        }
        self.iface.send_icmp_error(now, src, &payload[..total], [12, 0], [pointer as u8, 0, 0, 0], tx);
    }

    /// Hand a whole datagram — as received, or reassembled — to its
    /// protocol. `l4` is the part after the IP header.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn deliver_ipv4<T: TxQueue>(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        datagram: &[u8],
        l4: &[u8],
        broadcast: bool,
        meta: RxMeta,
        tx: &mut T,
    ) {
        match ip.protocol {
            IpProtocol::Icmp => self.receive_icmp(now, ip, l4, broadcast, meta, tx),
            IpProtocol::Udp => self.receive_udp(now, ip, datagram, broadcast, meta, tx),
            // TCP is unicast only (RFC 9293 §3.9.1.1 leaves no room for broadcast).
            IpProtocol::Tcp if broadcast => self.iface.counters.drop_tcp_other += 1,
            IpProtocol::Tcp => self.receive_tcp(now, ip, l4, meta, tx),
            _ => {
                self.iface.counters.drop_ipv4_unknown_protocol += 1;
                if !broadcast {
                    self.iface.send_icmp_unreachable(now, ip, datagram, crate::icmp::Unreachable::Protocol, tx);
                }
            }
        }
    }

}

/// Whether IPv4 `options` (already checked well-formed by the parser)
/// hold Loose (131) or Strict (137) Source and Record Route.
fn has_source_route(mut options: &[u8]) -> bool {
    while let [kind, rest @ ..] = options {
        match kind {
            0 => return false,
            1 => options = rest,
            131 | 137 => return true,
            _ => {
                let len = rest.first().map_or(0, |&l| usize::from(l));
                if len < 2 || len > options.len() {
                    return false;
                }
                options = &options[len..];
            }
        }
    }
    false
}

impl Iface {
    pub(crate) fn send_arp<T: TxQueue>(
        &mut self,
        tx: &mut T,
        operation: ArpOperation,
        eth_dst: EthernetAddress,
        target_mac: EthernetAddress,
        target_ip: Ipv4Addr,
    ) {
        let repr = ArpRepr {
            operation,
            source_hardware_addr: self.cfg.mac,
            source_protocol_addr: self.cfg.ipv4.addr,
            target_hardware_addr: target_mac,
            target_protocol_addr: target_ip,
        };
        if operation == ArpOperation::Request {
            self.counters.arp_requests_sent += 1;
        }
        write_frame(&mut self.counters, tx, TxMeta::default(), self.cfg.mac, eth_dst, EtherType::Arp, repr.buffer_len(), |b| {
            repr.emit(&mut ArpPacket::new_unchecked(b))
        });
    }
    /// Send an IPv4 packet we originate, with an L4 payload of `l4_len` bytes
    /// written in place by `fill` (which also computes the L4 checksum).
    pub(crate) fn send_ipv4<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        l4_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EgressDrop> {
        self.send_ipv4_offload(now, tx, dst, protocol, l4_len, None, |b, _| fill(b))
    }

    /// As [`Iface::send_ipv4`], but `fill` is told whether the device will
    /// complete the L4 checksum (then it writes only the pseudo-header sum,
    /// CHECKSUM_PARTIAL style). A datagram larger than the MTU leaves as
    /// fragments ([`Iface::send_ipv4_fragments`]), unless it is a TCP
    /// super-segment (`gso`: the payload per segment and the TCP header's
    /// length) within the device's TSO limit: then the device cuts it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_ipv4_offload<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        l4_len: usize,
        gso: Option<(usize, usize)>,
        fill: impl FnOnce(&mut [u8], bool),
    ) -> Result<(), EgressDrop> {
        let ip_len = IPV4_HEADER_LEN + l4_len;
        let mtu = self.path_mtu(now, dst);
        let super_segment = gso.is_some() && ip_len > mtu;
        if super_segment && (protocol != IpProtocol::Tcp || ip_len > self.tso_max) {
            // The core sized it for a TSO limit the device no longer offers.
            self.counters.drop_too_big += 1;
            return Err(EgressDrop::TooBig);
        }
        if ip_len > mtu && !super_segment {
            return self.send_ipv4_fragments(now, tx, dst, protocol, l4_len, mtu, |b| fill(b, false));
        }
        let next_hop = self.next_hop(dst)?;
        let repr = self.ipv4_header(dst, protocol, l4_len);
        // Only TCP's `fill` writes a partial checksum when told to; the
        // others always write a full one, and a device asked to complete a
        // full checksum would spoil it.
        let offload = self.tx_csum_offload && protocol == IpProtocol::Tcp;
        let write_ip = move |b: &mut [u8], partial: bool| {
            fill(&mut b[IPV4_HEADER_LEN..], partial);
            repr.emit(&mut Ipv4Packet::new_unchecked(b), ChecksumMode::Verify);
        };
        let Some(mac) = self.link_addr(now, tx, next_hop)? else {
            let hop = next_hop.expect("only a unicast next hop waits for ARP");
            if super_segment {
                // The queue holds frames of MTU size without metadata; TCP
                // resends once the neighbour answers.
                self.counters.drop_neighbor_pending_full += 1;
                return Err(EgressDrop::PendingFull);
            }
            return self.enqueue_for_neighbor(hop, ip_len, |b| write_ip(b, false));
        };
        let l4_start = (ETHERNET_HEADER_LEN + IPV4_HEADER_LEN) as u16;
        let mut meta = TxMeta::default();
        if offload {
            meta.csum_partial = true;
            meta.csum_start = l4_start;
            meta.csum_offset = checksum_field(protocol);
        }
        if let Some((size, l4_header)) = gso.filter(|_| super_segment) {
            meta.gso_type = GsoType::TcpV4;
            meta.gso_size = size as u16;
            meta.hdr_len = l4_start + l4_header as u16;
        }
        if write_frame(&mut self.counters, tx, meta, self.cfg.mac, mac, EtherType::Ipv4, ip_len, |b| write_ip(b, offload)) {
            Ok(())
        } else {
            Err(EgressDrop::TxFull)
        }
    }

    /// Send a datagram larger than `mtu` (the path's) as IPv4 fragments (RFC 791 §3.2).
    /// The L4 part is written once into a scratch buffer owned by the
    /// interface (allocated on the first fragmented datagram, 64 KiB, kept),
    /// then each fragment copies its slice into its own frame: nothing is
    /// allocated per fragment. TCP is never fragmented (it sends DF and sizes
    /// its segments to the MSS); a datagram that cannot fit even as fragments
    /// (over 65,535 bytes) is dropped and counted as `drop_too_big`.
    #[allow(clippy::too_many_arguments)]
    fn send_ipv4_fragments<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        l4_len: usize,
        mtu: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EgressDrop> {
        // RFC 791: every fragment but the last carries a multiple of 8 bytes.
        let per_fragment = mtu.saturating_sub(IPV4_HEADER_LEN) & !7;
        if protocol == IpProtocol::Tcp || IPV4_HEADER_LEN + l4_len > usize::from(u16::MAX) || per_fragment == 0 {
            self.counters.drop_too_big += 1;
            return Err(EgressDrop::TooBig);
        }
        let next_hop = self.next_hop(dst)?;
        let mac = self.link_addr(now, tx, next_hop)?;
        let header = Ipv4Repr { dont_frag: false, ..self.ipv4_header(dst, protocol, l4_len) };
        let mut scratch = core::mem::take(&mut self.frag_scratch);
        if scratch.len() < l4_len {
            scratch = vec![0; usize::from(u16::MAX)];
        }
        // Fragments leave with full checksums: a device cannot complete a
        // checksum over a datagram it sees only in pieces.
        fill(&mut scratch[..l4_len]);
        let mut result = Ok(());
        let mut offset = 0;
        while offset < l4_len {
            let len = per_fragment.min(l4_len - offset);
            let repr = Ipv4Repr {
                payload_len: len,
                more_frags: offset + len < l4_len,
                frag_offset: offset as u16,
                ..header
            };
            let data = &scratch[offset..offset + len];
            let write_ip = |b: &mut [u8]| {
                b[IPV4_HEADER_LEN..].copy_from_slice(data);
                repr.emit(&mut Ipv4Packet::new_unchecked(b), ChecksumMode::Verify);
            };
            let ip_len = IPV4_HEADER_LEN + len;
            result = match (mac, next_hop) {
                (Some(mac), _) => {
                    let meta = TxMeta::default();
                    if write_frame(&mut self.counters, tx, meta, self.cfg.mac, mac, EtherType::Ipv4, ip_len, write_ip) {
                        Ok(())
                    } else {
                        Err(EgressDrop::TxFull)
                    }
                }
                (None, Some(hop)) => self.enqueue_for_neighbor(hop, ip_len, write_ip),
                (None, None) => unreachable!("a broadcast needs no ARP"),
            };
            if result.is_err() {
                // The rest is useless without this fragment: the receiver
                // would time the datagram out. Stop here (the drop is counted).
                break;
            }
            self.counters.ipv4_frag_tx += 1;
            offset += len;
        }
        self.frag_scratch = scratch;
        if result.is_ok() {
            self.counters.ipv4_fragmented += 1;
        }
        result
    }

    /// The header of a datagram we originate, with the next identification.
    fn ipv4_header(&mut self, dst: Ipv4Addr, protocol: IpProtocol, l4_len: usize) -> Ipv4Repr {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        Ipv4Repr {
            src_addr: self.cfg.ipv4.addr,
            dst_addr: dst,
            protocol,
            payload_len: l4_len,
            ttl: self.cfg.ttl,
            ident: self.ip_ident,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            dscp_ecn: 0,
        }
    }

    /// The neighbour a packet to `dst` goes to: `None` for a broadcast.
    fn next_hop(&mut self, dst: Ipv4Addr) -> Result<Option<Ipv4Addr>, EgressDrop> {
        let subnet = self.cfg.ipv4;
        if dst.is_broadcast() || Some(dst) == subnet.broadcast() {
            Ok(None)
        } else if subnet.contains(dst) {
            Ok(Some(dst))
        } else if let Some(gw) = self.cfg.gateway {
            Ok(Some(gw))
        } else {
            self.counters.drop_no_route += 1;
            Err(EgressDrop::NoRoute)
        }
    }

    /// The link address for `next_hop` (broadcast for `None`), sending ARP as
    /// the cache asks; `Ok(None)` when the packet must wait for resolution.
    fn link_addr<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        next_hop: Option<Ipv4Addr>,
    ) -> Result<Option<EthernetAddress>, EgressDrop> {
        let Some(hop) = next_hop else { return Ok(Some(EthernetAddress::BROADCAST)) };
        match self.neighbors.resolve(now, hop) {
            Resolution::Send(mac) => Ok(Some(mac)),
            Resolution::SendAndRefresh(mac) => {
                self.send_arp(tx, ArpOperation::Request, mac, EthernetAddress([0; 6]), hop);
                Ok(Some(mac))
            }
            Resolution::Queue { request } => {
                if request {
                    self.send_arp(tx, ArpOperation::Request, EthernetAddress::BROADCAST, EthernetAddress([0; 6]), hop);
                }
                Ok(None)
            }
            Resolution::Full => {
                self.counters.drop_neighbor_incomplete_full += 1;
                Err(EgressDrop::IncompleteFull)
            }
        }
    }

    /// Hold an IP packet of `ip_len` bytes until `hop` resolves. Packets
    /// that wait always carry full checksums: they leave later, through a
    /// path that carries no metadata.
    fn enqueue_for_neighbor(&mut self, hop: Ipv4Addr, ip_len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EgressDrop> {
        if self.neighbors.enqueue(hop, ip_len, fill) {
            self.counters.neighbor_pending_queued += 1;
            Ok(())
        } else {
            self.counters.drop_neighbor_pending_full += 1;
            Err(EgressDrop::PendingFull)
        }
    }
}

/// Where an L4 checksum field sits in its header (virtio's `csum_offset`).
fn checksum_field(protocol: IpProtocol) -> u16 {
    match protocol {
        IpProtocol::Udp => 6,
        IpProtocol::Icmp => 2,
        _ => 16, // TCP, the only one the core leaves partial
    }
}

/// Queue one Ethernet frame whose payload `fill` writes; counts it either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_frame<T: TxQueue>(
    counters: &mut Counters,
    tx: &mut T,
    meta: TxMeta,
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EtherType,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> bool {
    let len = ETHERNET_HEADER_LEN + payload_len;
    let eth = EthernetRepr { src_addr: src, dst_addr: dst, ethertype, vlan_id: None };
    let sent = tx.send(len, meta, |b| {
        fill(&mut b[ETHERNET_HEADER_LEN..]);
        eth.emit(&mut EthernetFrame::new_unchecked(b));
    });
    match sent {
        Ok(()) => {
            counters.tx_frames += 1;
            counters.tx_bytes += len as u64;
            true
        }
        Err(_) => {
            counters.drop_tx_full += 1;
            false
        }
    }
}
