//! Sending: source address selection, next-hop determination (RFC 4861
//! §5.2), neighbour resolution, and fragmentation (RFC 8200 §4.5) of
//! packets larger than the path MTU.

use super::addrs::{AddrState, AddressTable, Ipv6Address};
use super::Ipv6Layer;
use crate::counters::Counters;
use crate::ip::{enqueue_for_neighbor, resolve_next_hop, write_frame, EgressDrop};
use crate::phy::{GsoType, TxMeta, TxQueue};
use crate::time::Instant;
use std::net::Ipv6Addr;
use ustack_wire::{
    EtherType, EthernetAddress, IpProtocol, Ipv6FragmentRepr, Ipv6Packet, Ipv6Repr, ETHERNET_HEADER_LEN,
    IPV6_FRAGMENT_HEADER_LEN, IPV6_HEADER_LEN,
};

/// Why [`Ipv6Layer::send`] did not send (each is counted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6SendError {
    /// No route: off-link and no default router (`drop_no_route`).
    NoRoute,
    /// Too many neighbours being resolved (`drop_neighbor_incomplete_full`).
    IncompleteFull,
    /// The resolution queue is full (`drop_neighbor_pending_full`).
    PendingFull,
    /// The device's transmit queue is full (`drop_tx_full`).
    TxFull,
    /// Over 65,535 bytes of payload (`drop_too_big`).
    TooBig,
}

impl core::fmt::Display for Ipv6SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Ipv6SendError::NoRoute => "no route to the IPv6 destination (no default router)",
            Ipv6SendError::IncompleteFull => "too many IPv6 neighbours being resolved",
            Ipv6SendError::PendingFull => "IPv6 neighbour resolution queue full",
            Ipv6SendError::TxFull => "device transmit queue full",
            Ipv6SendError::TooBig => "IPv6 payload over 65,535 bytes",
        })
    }
}

impl std::error::Error for Ipv6SendError {}

impl From<EgressDrop> for Ipv6SendError {
    fn from(e: EgressDrop) -> Self {
        match e {
            EgressDrop::NoRoute => Ipv6SendError::NoRoute,
            EgressDrop::TooBig => Ipv6SendError::TooBig,
            EgressDrop::TxFull => Ipv6SendError::TxFull,
            EgressDrop::PendingFull => Ipv6SendError::PendingFull,
            EgressDrop::IncompleteFull => Ipv6SendError::IncompleteFull,
        }
    }
}

/// Where a packet goes on the link.
#[derive(Clone, Copy, Debug)]
enum Link {
    Mac(EthernetAddress),
    /// Wait for this neighbour to resolve.
    Wait(Ipv6Addr),
}

/// Whether `a` is link-local unicast (`fe80::/10`).
pub(crate) fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// RFC 6724, as much as a host with one interface needs: a link-local
/// source for link-local and link-scoped multicast destinations; otherwise
/// a preferred global address, one on the destination's prefix first, then
/// a deprecated one, then the link-local address.
pub(crate) fn pick_source(addrs: &AddressTable, dst: Ipv6Addr) -> Option<Ipv6Addr> {
    pick(addrs, dst, |a| a.state)
}

/// [`pick_source`] with each address in the state `state` gives it.
fn pick(addrs: &AddressTable, dst: Ipv6Addr, state: fn(&Ipv6Address) -> AddrState) -> Option<Ipv6Addr> {
    use super::AddrState::{Deprecated, Preferred, Tentative};
    let link_scope = is_link_local(dst) || (dst.is_multicast() && dst.segments()[0] & 0x000f <= 2);
    let usable = || addrs.iter().filter(move |a| state(a) != Tentative);
    let link_local = usable().find(|a| is_link_local(a.cidr.addr)).map(|a| a.cidr.addr);
    if link_scope {
        return link_local;
    }
    let global = |want| usable().filter(move |a| state(a) == want && !is_link_local(a.cidr.addr));
    global(Preferred)
        .find(|a| a.cidr.contains(dst))
        .or_else(|| global(Preferred).next())
        .or_else(|| global(Deprecated).next())
        .map(|a| a.cidr.addr)
        .or(link_local)
}

impl Ipv6Layer {
    /// The source address for a packet to `dst` (RFC 6724, simplified);
    /// `None` while every address is tentative.
    pub fn select_source(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        pick_source(&self.addrs, dst)
    }

    /// The source address `dst` gets once duplicate address detection is
    /// over, if it is usable now; `None` while it is still tentative. A
    /// connection keeps the source it starts with, so one opened now from
    /// the link-local address (all [`Ipv6Layer::select_source`] may offer
    /// for a while) would keep a source that a peer off the link cannot answer.
    pub fn settled_source(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        let settled = |a: &Ipv6Address| match a.state {
            AddrState::Tentative => AddrState::Preferred,
            s => s,
        };
        pick(&self.addrs, dst, settled).filter(|&a| self.addrs.is_usable(a))
    }

    /// Send an upper-layer message of `payload_len` bytes, written by
    /// `fill`, from `src` to `dst` with the layer's hop limit. A packet
    /// larger than the path MTU leaves as fragments; one whose neighbour is
    /// unresolved waits in the neighbour cache. `fill` writes the whole
    /// payload (checksum included: the pseudo header uses `src` and `dst`).
    #[allow(clippy::too_many_arguments)]
    pub fn send<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Ipv6SendError> {
        let hop_limit = self.hop_limit;
        self.send_with(
            now,
            counters,
            tx,
            Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header,
                payload_len,
                hop_limit,
                traffic_class: 0,
                flow_label: 0,
            },
            fill,
        )
    }

    /// [`Ipv6Layer::send`] with the whole header given (neighbour discovery
    /// sends with hop limit 255, MLD with 1).
    pub(crate) fn send_with<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        ip: Ipv6Repr,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Ipv6SendError> {
        self.send_offload(now, counters, tx, ip, None, None, |b, _| fill(b))
    }

    /// [`Ipv6Layer::send_with`] for an upper layer whose checksum the device
    /// may finish: with `csum_offset` (where the checksum field is in the
    /// payload) and a packet that leaves whole to a known neighbour, `fill`
    /// is told (`true`) to leave the pseudo-header sum in the field for the
    /// device to complete; otherwise (`false`) it writes the whole checksum
    /// (a packet waiting for its neighbour is queued without metadata, and
    /// fragments are summed whole). With `gso` (segment payload, L4 header
    /// length; the caller checked the device's limit) a packet larger than
    /// the path MTU leaves as one TCP super-segment, checksum partial.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_offload<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        ip: Ipv6Repr,
        csum_offset: Option<u16>,
        gso: Option<(usize, usize)>,
        fill: impl FnOnce(&mut [u8], bool),
    ) -> Result<(), Ipv6SendError> {
        if ip.payload_len > usize::from(u16::MAX) {
            counters.drop_too_big += 1;
            return Err(Ipv6SendError::TooBig);
        }
        let link = self.link_for(now, counters, tx, ip.dst_addr)?;
        let mtu = self.path_mtu(now, ip.dst_addr);
        let len = IPV6_HEADER_LEN + ip.payload_len;
        let super_segment = len > mtu && csum_offset.is_some() && gso.is_some();
        if super_segment && matches!(link, Link::Wait(_)) {
            // The queue holds frames of MTU size without metadata; TCP
            // resends once the neighbour answers.
            counters.drop_neighbor_pending_full += 1;
            return Err(Ipv6SendError::PendingFull);
        }
        if len <= mtu || super_segment {
            let mut meta = TxMeta::default();
            if let (Some(offset), Link::Mac(_)) = (csum_offset, link) {
                meta.csum_partial = true;
                meta.csum_start = (ETHERNET_HEADER_LEN + IPV6_HEADER_LEN) as u16;
                meta.csum_offset = offset;
            }
            // A super-segment has both: its checksum offset and its neighbour.
            if let Some((size, l4_header)) = gso.filter(|_| super_segment) {
                meta.gso_type = GsoType::TcpV6;
                meta.gso_size = size as u16;
                meta.hdr_len = (ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + l4_header) as u16;
            }
            let partial = meta.csum_partial;
            return self.emit(counters, tx, link, meta, len, |b| {
                ip.emit(&mut Ipv6Packet::new_unchecked(&mut b[..IPV6_HEADER_LEN]));
                fill(&mut b[IPV6_HEADER_LEN..], partial);
            });
        }
        // RFC 8200 §4.5: fragments of the largest multiple of 8 that fits.
        if self.scratch.is_empty() {
            self.scratch = vec![0; usize::from(u16::MAX)];
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        fill(&mut scratch[..ip.payload_len], false);
        let per = (mtu - IPV6_HEADER_LEN - IPV6_FRAGMENT_HEADER_LEN) & !7;
        self.frag_ident = self.frag_ident.wrapping_add(1);
        let ident = self.frag_ident;
        let mut result = Ok(());
        let mut offset = 0;
        while offset < ip.payload_len && result.is_ok() {
            let n = per.min(ip.payload_len - offset);
            let frag = Ipv6FragmentRepr {
                next_header: ip.next_header,
                frag_offset: offset as u16,
                more_frags: offset + n < ip.payload_len,
                ident,
            };
            let header =
                Ipv6Repr { next_header: IpProtocol::Ipv6Frag, payload_len: IPV6_FRAGMENT_HEADER_LEN + n, ..ip };
            let data = &scratch[offset..offset + n];
            result = self.emit(counters, tx, link, TxMeta::default(), IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN + n, |b| {
                header.emit(&mut Ipv6Packet::new_unchecked(&mut b[..IPV6_HEADER_LEN]));
                frag.emit(&mut b[IPV6_HEADER_LEN..]);
                b[IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN..].copy_from_slice(data);
            });
            if result.is_ok() {
                counters.ipv6_frag_tx += 1;
            }
            offset += n;
        }
        self.scratch = scratch;
        result
    }

    /// The neighbour a packet to `dst` goes to (RFC 4861 §5.2): itself when
    /// on-link (link-local, or on one of our prefixes), else a default router
    /// (the advertised ones, then the static [`Ipv6Config::gateway`]), one
    /// not known unreachable first.
    ///
    /// [`Ipv6Config::gateway`]: super::Ipv6Config::gateway
    fn next_hop(&self, now: Instant, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        if is_link_local(dst) || self.addrs.on_link(dst) || self.prefixes.contains(dst) {
            return Some(dst);
        }
        let resolving =
            |r: Ipv6Addr| matches!(self.neighbors.get(now, r), None | Some((super::ndp::NudState::Incomplete, _)));
        let routers = || self.routers.iter().chain(self.cfg.gateway);
        routers().find(|&r| !resolving(r)).or_else(|| routers().next())
    }

    fn link_for<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        dst: Ipv6Addr,
    ) -> Result<Link, Ipv6SendError> {
        if dst.is_multicast() {
            return Ok(Link::Mac(EthernetAddress::from_ipv6_multicast(dst)));
        }
        let Some(hop) = self.next_hop(now, dst) else {
            counters.drop_no_route += 1;
            return Err(Ipv6SendError::NoRoute);
        };
        let next = resolve_next_hop(&mut self.neighbors, counters, now, hop)?;
        if let (None, Some(_)) = (next.mac, next.solicit) {
            self.send_solicit(now, counters, tx, hop, None);
        }
        Ok(next.mac.map_or(Link::Wait(hop), Link::Mac))
    }

    fn emit<T: TxQueue>(
        &mut self,
        counters: &mut Counters,
        tx: &mut T,
        link: Link,
        meta: TxMeta,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Ipv6SendError> {
        match link {
            Link::Mac(mac) => {
                if write_frame(counters, tx, meta, self.cfg.mac, mac, EtherType::Ipv6, len, fill) {
                    Ok(())
                } else {
                    Err(Ipv6SendError::TxFull)
                }
            }
            Link::Wait(hop) => Ok(enqueue_for_neighbor(&mut self.neighbors, counters, hop, len, fill)?),
        }
    }
}
