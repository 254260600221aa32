//! IPv6 on the interface: the `crate::ipv6` layer (extension headers,
//! reassembly, ICMPv6, neighbour discovery, SLAAC, MLD) plugged into the IP
//! layer's receive and send paths, and the per-connection flow label.

use super::{checksum_field, EgressDrop, Iface};
use crate::ipv6::{Ipv6Delivery, Ipv6Input, Ipv6Layer, Ipv6SendError};
use crate::phy::TxQueue;
use crate::tcp::{siphash24, FourTuple};
use crate::time::Instant;
use std::net::{IpAddr, Ipv6Addr};
use ustack_wire::{IpProtocol, Ipv6Repr, IPV6_HEADER_LEN};

impl Iface {
    /// An IPv6 packet (the Ethernet payload) from [`Input::Ipv6`]: used
    /// here (neighbour discovery, echo, a fragment held...) or delivered up;
    /// the message is at `d.payload` in `packet`, or in
    /// [`Iface::take_reassembled_v6`]'s buffer when `d.reassembled`.
    pub(crate) fn receive_ipv6<T: TxQueue>(
        &mut self,
        now: Instant,
        packet: &[u8],
        link_multicast: bool,
        tx: &mut T,
    ) -> Ipv6Input {
        let Some(layer) = self.ipv6.as_mut() else {
            self.counters.drop_eth_unknown_type += 1;
            return Ipv6Input::Done;
        };
        layer.receive(now, &mut self.counters, packet, link_multicast, tx)
    }

    /// The IPv6 layer, when the interface has one.
    pub(crate) fn ipv6(&self) -> Option<&Ipv6Layer> {
        self.ipv6.as_ref()
    }

    /// The reassembled datagram's buffer of an [`Input::Ipv6`] delivery with
    /// `reassembled` set; give it back with [`Iface::restore_reassembled_v6`].
    pub(crate) fn take_reassembled_v6(&mut self) -> Vec<u8> {
        self.ipv6.as_mut().map(Ipv6Layer::take_reassembled).unwrap_or_default()
    }

    /// Return the buffer [`Iface::take_reassembled_v6`] lent.
    pub(crate) fn restore_reassembled_v6(&mut self, buffer: Vec<u8>) {
        if let Some(layer) = self.ipv6.as_mut() {
            layer.restore_reassembled(buffer);
        }
    }

    /// Lower the path MTU towards `dst` (a Packet Too Big the caller has
    /// matched to a socket of ours).
    pub(crate) fn lower_path_mtu6(&mut self, now: Instant, dst: Ipv6Addr, mtu: usize) {
        if let Some(layer) = self.ipv6.as_mut() {
            layer.lower_path_mtu(now, dst, mtu);
        }
    }

    /// The source address for a packet to `dst`; `None` without IPv6 or
    /// while every address is tentative.
    pub(crate) fn ipv6_source(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        self.ipv6.as_ref()?.select_source(dst)
    }

    /// Send an IPv6 packet we originate with an upper-layer payload of
    /// `len` bytes written by `fill` (checksum included), with `flow_label`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_ipv6<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        flow_label: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EgressDrop> {
        self.send_ipv6_offload(now, tx, src, dst, protocol, flow_label, len, false, None, |b, _| fill(b))
    }

    /// [`Iface::send_ipv6`] whose checksum the device may finish, with
    /// `offload` and a device that does (see `Ipv6Layer::send_offload`):
    /// `fill` is told whether to leave the pseudo-header sum in the checksum
    /// field (`true`) or write the whole checksum. With `gso` (segment payload, L4 header length) a
    /// TCP packet larger than the path MTU leaves as one super-segment for
    /// the device to cut.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_ipv6_offload<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        flow_label: u32,
        len: usize,
        offload: bool,
        gso: Option<(usize, usize)>,
        fill: impl FnOnce(&mut [u8], bool),
    ) -> Result<(), EgressDrop> {
        let Some(layer) = self.ipv6.as_mut() else {
            self.counters.drop_no_route += 1;
            return Err(EgressDrop::NoRoute);
        };
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: protocol,
            payload_len: len,
            hop_limit: layer.hop_limit(),
            traffic_class: 0,
            flow_label,
        };
        // The layer counts each refusal under its own drop counter.
        let csum_offset = (offload && self.tx_csum_offload).then(|| checksum_field(protocol));
        // Past the device's TSO limit (the path MTU looked up only then):
        // the core sized it for a limit the device no longer offers.
        let packet_len = IPV6_HEADER_LEN + len;
        if gso.is_some() && packet_len > self.tso6_max && packet_len > layer.path_mtu(now, dst) {
            self.counters.drop_too_big += 1;
            return Err(EgressDrop::TooBig);
        }
        layer.send_offload(now, &mut self.counters, tx, ip, csum_offset, gso, fill).map_err(|e| match e {
            Ipv6SendError::NoRoute => EgressDrop::NoRoute,
            Ipv6SendError::IncompleteFull => EgressDrop::IncompleteFull,
            Ipv6SendError::PendingFull => EgressDrop::PendingFull,
            Ipv6SendError::TxFull => EgressDrop::TxFull,
            Ipv6SendError::TooBig => EgressDrop::TooBig,
        })
    }

    /// RFC 6437 §3: a flow label per connection, "from a uniformly
    /// distributed set", stateless and the same for every packet of the
    /// flow: a keyed hash of the 4-tuple, 20 bits, never zero.
    pub(crate) fn flow_label(&self, tuple: &FourTuple) -> u32 {
        let (IpAddr::V6(l), IpAddr::V6(r)) = (tuple.local_addr, tuple.remote_addr) else { return 0 };
        let mut input = [0u8; 36];
        input[..16].copy_from_slice(&l.octets());
        input[16..18].copy_from_slice(&tuple.local_port.to_be_bytes());
        input[18..34].copy_from_slice(&r.octets());
        input[34..].copy_from_slice(&tuple.remote_port.to_be_bytes());
        let label = siphash24(&self.flow_key, &input) as u32 & 0xf_ffff;
        label.max(1)
    }
}

/// What an IPv6 delivery hands the protocols: the message, and where to
/// read it.
pub(crate) fn upper_layer<'a>(d: &Ipv6Delivery, packet: &'a [u8]) -> &'a [u8] {
    packet.get(d.payload.clone()).unwrap_or(&[])
}
