//! The IP layer of one interface: Ethernet in and out, neighbour
//! resolution (ARP now, NDP behind the same [`NeighborResolver`] trait),
//! IPv4 input and output with fragmentation and reassembly, and the ICMP
//! the network layer answers itself.
//!
//! Layers call one way. [`Iface::receive`] takes a frame and either uses it
//! here (ARP, an echo request, a fragment held for reassembly, a drop, all
//! counted) or hands a datagram up as an [`Input`] for the stack to give to
//! its protocol table; the tables get `&mut Iface` as their output handle
//! going down ([`Iface::send_ipv4`]). Nothing here knows the tables or the
//! `Stack`.

mod arp;
mod ipv4;
pub(crate) mod ipv4_reassembly;
pub(crate) mod reassembly;
mod ipv6;

pub(crate) use ipv4::Ipv4Delivery;
pub(crate) use ipv6::upper_layer;

use crate::config::StackConfig;
use crate::counters::Counters;
use crate::icmp::TokenBucket;
use crate::ipv6::Ipv6Layer;
use crate::neighbor::{NeighborCache, NeighborResolver, Resolution};
use crate::phy::{DeviceCaps, RxMeta, TxMeta, TxQueue};
use crate::time::Instant;
use ipv4_reassembly::Ipv4Reassembly;
use std::net::IpAddr;
use ustack_wire::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Repr, ETHERNET_HEADER_LEN,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

/// Why the stack could not send a packet it originated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EgressDrop {
    NoRoute,
    TooBig,
    TxFull,
    PendingFull,
    IncompleteFull,
}

/// What [`Iface::receive`] made of a frame.
pub(crate) enum Input<'a> {
    /// Used or dropped by the IP layer itself, and counted.
    Done,
    /// A datagram for a protocol table.
    Ipv4(Ipv4Delivery<'a>),
    /// A datagram reassembled from fragments: its first `len` bytes are in
    /// the buffer [`Iface::take_reassembled`] lends, its header `header_len`
    /// bytes long.
    Ipv4Reassembled {
        /// Fragment zero's header, fragment fields cleared.
        ip: Ipv4Repr,
        len: usize,
        header_len: usize,
        broadcast: bool,
    },
    /// An IPv6 packet (the Ethernet payload), for [`Iface::receive_ipv6`];
    /// `link_multicast`: sent to a group or broadcast MAC. (A second step,
    /// so the IPv4 path does not carry IPv6's delivery in its value.)
    Ipv6 { packet: &'a [u8], link_multicast: bool, meta: RxMeta },
}

/// The interface: our addresses, the neighbour cache, reassembly and the
/// counters — everything the IP paths need, apart from the sockets, so a
/// socket can be borrowed while its packet is written.
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
    /// The same for TCP/IPv6 (0 unless the device cuts IPv6 too).
    pub(crate) tso6_max: usize,
    /// Where a datagram to be fragmented is written whole before it is cut
    /// (empty until the first one; then 64 KiB, kept for the stack's life).
    pub(crate) frag_scratch: Vec<u8>,
    /// MTUs that path MTU discovery lowered, by destination.
    pub(crate) path_mtus: crate::path_mtu::PathMtuCache,
    pub(crate) ipv4_reassembly: Ipv4Reassembly,
    /// IPv6, once [`crate::Stack::enable_ipv6`] started it.
    pub(crate) ipv6: Option<Ipv6Layer>,
    /// The key of the per-connection IPv6 flow labels.
    pub(crate) flow_key: [u8; 16],
}

impl Iface {
    /// The interface for `cfg`; `hash_key` keys its tables, `ip_ident`
    /// starts the IPv4 identification counter.
    pub(crate) fn new(cfg: StackConfig, hash_key: u64, ip_ident: u16) -> Iface {
        Iface {
            neighbors: NeighborCache::new(&cfg, hash_key),
            icmp_errors: TokenBucket::new(cfg.icmp_error_rate, cfg.icmp_error_burst),
            ip_ident,
            tx_csum_offload: false,
            tso_max: 0,
            tso6_max: 0,
            frag_scratch: Vec::new(),
            path_mtus: crate::path_mtu::PathMtuCache::new(&cfg, hash_key ^ 0x7777),
            ipv4_reassembly: Ipv4Reassembly::new(&cfg, hash_key ^ 0x3333),
            ipv6: None,
            flow_key: [0; 16],
            cfg,
            counters: Counters::default(),
        }
    }

    /// Take the device's offloads as they are now (read on every poll).
    #[inline]
    pub(crate) fn set_caps(&mut self, caps: &DeviceCaps) {
        self.tx_csum_offload = caps.tx_checksum;
        self.tso_max = caps.tso4_limit();
        self.tso6_max = caps.tso6_limit();
    }

    /// The earliest time the IP layer has timer work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let v4 = earliest(self.neighbors.poll_timeout(), self.ipv4_reassembly.poll_timeout());
        earliest(v4, self.ipv6.as_ref().and_then(Ipv6Layer::poll_timeout))
    }

    /// Fire the IP layer's due timers: reassembly deadlines, ARP retries.
    pub(crate) fn handle_timeout<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        self.expire_ipv4_fragments(now, tx);
        self.handle_arp_timeout(now, tx);
        if let Some(layer) = self.ipv6.as_mut() {
            layer.handle_timeout(now, &mut self.counters, tx);
        }
    }

    /// Handle one received frame: what the IP layer does not use itself
    /// comes back as an [`Input`] for the protocols. Replies go to `tx`.
    #[inline]
    pub(crate) fn receive<'a, T: TxQueue>(
        &mut self,
        now: Instant,
        frame: &'a [u8],
        meta: RxMeta,
        tx: &mut T,
    ) -> Input<'a> {
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += frame.len() as u64;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop_eth_truncated += 1;
            return Input::Done;
        };
        let dst = eth.dst_addr();
        let ours = dst == self.cfg.mac;
        if !ours && !dst.is_broadcast() && !self.ipv6.as_ref().is_some_and(|l| l.accepts_mac(dst)) {
            self.counters.drop_eth_other_host += 1;
            return Input::Done;
        }
        // A priority tag (VLAN 0) is fine; a real VLAN is not ours.
        if eth.vlan_id().is_some_and(|v| v != 0) {
            self.counters.drop_eth_unknown_type += 1;
            return Input::Done;
        }
        match eth.ethertype() {
            EtherType::Arp => {
                self.receive_arp(now, eth.payload(), dst.is_broadcast(), tx);
                Input::Done
            }
            EtherType::Ipv4 => self.receive_ipv4(now, eth.into_payload(), meta, tx),
            EtherType::Ipv6 => Input::Ipv6 { packet: eth.into_payload(), link_multicast: !ours, meta },
            _ => {
                self.counters.drop_eth_unknown_type += 1;
                Input::Done
            }
        }
    }

    /// Whether `addr` is one of ours (a unicast address a connection can use).
    #[inline]
    pub(crate) fn is_local(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => a == self.cfg.ipv4.addr,
            IpAddr::V6(a) => !a.is_multicast() && self.ipv6.as_ref().is_some_and(|l| l.accepts(a)),
        }
    }

    /// The largest IP packet to send towards `dst` now, and the length of
    /// the IP header it leaves with.
    #[inline]
    pub(crate) fn path_mtu_to(&self, now: Instant, dst: IpAddr) -> (usize, usize) {
        match dst {
            IpAddr::V4(a) => (self.path_mtu(now, a), IPV4_HEADER_LEN),
            IpAddr::V6(a) => (self.ipv6.as_ref().map_or(self.cfg.mtu, |l| l.path_mtu(now, a)), IPV6_HEADER_LEN),
        }
    }

    /// The buffer a reassembled datagram ([`Input::Ipv4Reassembled`]) is in;
    /// give it back with [`Iface::restore_reassembled`].
    pub(crate) fn take_reassembled(&mut self) -> Vec<u8> {
        self.ipv4_reassembly.take_assembled()
    }

    /// Return the buffer [`Iface::take_reassembled`] lent.
    pub(crate) fn restore_reassembled(&mut self, buffer: Vec<u8>) {
        self.ipv4_reassembly.restore_assembled(buffer);
    }
}

/// How to reach a next hop now, whichever resolver (ARP, NDP) was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NextHop {
    /// The link address to send to; `None`: queue the packet until it resolves.
    pub(crate) mac: Option<EthernetAddress>,
    /// Send a solicitation (ARP request, neighbour solicitation) now, to
    /// this link address (unicast to refresh, broadcast to find).
    pub(crate) solicit: Option<EthernetAddress>,
}

/// Ask `neighbors` how to reach `hop`; a full table of unresolved
/// neighbours drops the packet (counted).
#[inline]
pub(crate) fn resolve_next_hop<N: NeighborResolver>(
    neighbors: &mut N,
    counters: &mut Counters,
    now: Instant,
    hop: N::Addr,
) -> Result<NextHop, EgressDrop> {
    match neighbors.resolve(now, hop) {
        Resolution::Send(mac) => Ok(NextHop { mac: Some(mac), solicit: None }),
        Resolution::SendAndRefresh(mac) => Ok(NextHop { mac: Some(mac), solicit: Some(mac) }),
        Resolution::Queue { request } => {
            Ok(NextHop { mac: None, solicit: request.then_some(EthernetAddress::BROADCAST) })
        }
        Resolution::Full => {
            counters.drop_neighbor_incomplete_full += 1;
            Err(EgressDrop::IncompleteFull)
        }
    }
}

/// Hold an IP packet of `ip_len` bytes until `hop` resolves. Packets
/// that wait always carry full checksums: they leave later, through a
/// path that carries no metadata.
pub(crate) fn enqueue_for_neighbor<N: NeighborResolver>(
    neighbors: &mut N,
    counters: &mut Counters,
    hop: N::Addr,
    ip_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<(), EgressDrop> {
    if neighbors.enqueue(hop, ip_len, fill) {
        counters.neighbor_pending_queued += 1;
        Ok(())
    } else {
        counters.drop_neighbor_pending_full += 1;
        Err(EgressDrop::PendingFull)
    }
}

/// Where an L4 checksum field sits in its header (virtio's `csum_offset`).
pub(crate) fn checksum_field(protocol: IpProtocol) -> u16 {
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
