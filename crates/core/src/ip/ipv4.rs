//! IPv4 (RFC 791): input checks and delivery up, output with
//! fragmentation, and the ICMP errors about our own input.

use super::{checksum_field, enqueue_for_neighbor, resolve_next_hop, write_frame, EgressDrop, Iface, Input};
use crate::phy::{GsoType, RxMeta, TxMeta, TxQueue};
use crate::time::Instant;
use std::net::Ipv4Addr;
use ustack_wire::{
    ArpOperation, ChecksumMode, EtherType, EthernetAddress, IpProtocol, Ipv4Packet, Ipv4Repr, ETHERNET_HEADER_LEN,
    IPV4_HEADER_LEN,
};

/// A whole IPv4 datagram for us, handed up to a protocol.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ipv4Delivery<'a> {
    pub(crate) ip: Ipv4Repr,
    /// The datagram without Ethernet padding, for quoting in ICMP errors.
    pub(crate) datagram: &'a [u8],
    /// The part after the IP header.
    pub(crate) l4: &'a [u8],
    /// Sent to a broadcast address (ours or the subnet's).
    pub(crate) broadcast: bool,
    pub(crate) meta: RxMeta,
}

impl Iface {
    /// An IPv4 packet (the Ethernet payload): checked, and handed up unless
    /// it is dropped here or held for reassembly.
    #[inline]
    pub(super) fn receive_ipv4<'a, T: TxQueue>(
        &mut self,
        now: Instant,
        payload: &'a [u8],
        meta: RxMeta,
        tx: &mut T,
    ) -> Input<'a> {
        self.counters.ipv4_rx += 1;
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            self.counters.drop_ipv4_malformed += 1;
            self.answer_option_problem(now, payload, tx);
            return Input::Done;
        };
        let trusted = meta.csum_verified && self.cfg.use_device_checksums;
        if !trusted && !packet.verify_checksum() {
            self.counters.drop_ipv4_checksum += 1;
            return Input::Done;
        }
        let Ok(ip) = Ipv4Repr::parse(&packet, ChecksumMode::Ignore) else {
            self.counters.drop_ipv4_malformed += 1;
            return Input::Done;
        };
        let ours = self.cfg.ipv4.addr;
        let subnet_bcast = self.cfg.ipv4.broadcast();
        let broadcast = ip.dst_addr.is_broadcast() || Some(ip.dst_addr) == subnet_bcast;
        if ip.dst_addr != ours && !broadcast {
            self.counters.drop_ipv4_other_host += 1;
            return Input::Done;
        }
        if self.martian(ip.src_addr) {
            self.counters.drop_ipv4_martian += 1;
            return Input::Done;
        }
        // RFC 7126 §4.3-4.4: source routing steers a datagram around filters
        // and lets a spoofer get the replies; Linux drops it by default
        // (accept_source_route=0), whoever it is for, and so do we.
        if has_source_route(packet.options()) {
            self.counters.drop_ipv4_source_route += 1;
            return Input::Done;
        }
        // The datagram without Ethernet padding, for quoting in ICMP errors.
        let datagram = &payload[..usize::from(packet.total_len())];
        if ip.more_frags || ip.frag_offset != 0 {
            return self.receive_ipv4_fragment(now, &ip, datagram, packet.header_len(), broadcast, tx);
        }
        let l4 = &datagram[packet.header_len()..];
        Input::Ipv4(Ipv4Delivery { ip, datagram, l4, broadcast, meta })
    }

    /// A source no datagram can come from: ours, broadcast, multicast,
    /// loopback, 0.0.0.0, the subnet's broadcast.
    fn martian(&self, src: Ipv4Addr) -> bool {
        src == self.cfg.ipv4.addr
            || src.is_broadcast()
            || src.is_multicast()
            || src.is_loopback()
            || src.is_unspecified()
            || Some(src) == self.cfg.ipv4.broadcast()
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
        if p.dst_addr() != self.cfg.ipv4.addr || self.martian(src) || p.frag_offset() != 0 {
            return;
        }
        let icmp_error = |t: &u8| matches!(t, 3 | 4 | 5 | 11 | 12);
        if p.protocol() == IpProtocol::Icmp && payload.get(header_len).is_none_or(icmp_error) {
            return;
        }
        self.send_icmp_error(now, src, &payload[..total], [12, 0], [pointer as u8, 0, 0, 0], tx);
    }

    /// The protocol of a datagram for us is one we do not speak: protocol
    /// unreachable, never about a broadcast.
    pub(crate) fn unknown_protocol<T: TxQueue>(&mut self, now: Instant, d: &Ipv4Delivery<'_>, tx: &mut T) {
        self.counters.drop_ipv4_unknown_protocol += 1;
        if !d.broadcast {
            self.send_icmp_unreachable(now, &d.ip, d.datagram, crate::icmp::Unreachable::Protocol, tx);
        }
    }

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
            return enqueue_for_neighbor(&mut self.neighbors, &mut self.counters, hop, ip_len, |b| write_ip(b, false));
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
        if write_frame(&mut self.counters, tx, meta, self.cfg.mac, mac, EtherType::Ipv4, ip_len, |b| {
            write_ip(b, offload)
        }) {
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
            let repr =
                Ipv4Repr { payload_len: len, more_frags: offset + len < l4_len, frag_offset: offset as u16, ..header };
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
                (None, Some(hop)) => {
                    enqueue_for_neighbor(&mut self.neighbors, &mut self.counters, hop, ip_len, write_ip)
                }
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
    #[inline]
    fn link_addr<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        next_hop: Option<Ipv4Addr>,
    ) -> Result<Option<EthernetAddress>, EgressDrop> {
        let Some(hop) = next_hop else { return Ok(Some(EthernetAddress::BROADCAST)) };
        let next = resolve_next_hop(&mut self.neighbors, &mut self.counters, now, hop)?;
        if let Some(dst) = next.solicit {
            self.send_arp(tx, ArpOperation::Request, dst, EthernetAddress([0; 6]), hop);
        }
        Ok(next.mac)
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
