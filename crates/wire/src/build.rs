//! Whole-frame builders: Ethernet + IPv4 + {ICMPv4, UDP, TCP} in one call.
//!
//! Each `*_frame` function writes into the front of `buf` (which must be at least
//! the matching `*_frame_len` long, else `Error::Truncated`), computes every
//! checksum, and returns the frame length. The EtherType is forced to IPv4, and the
//! IPv4 protocol and payload length are taken from the upper layer, so callers need
//! not keep them consistent by hand. A datagram too big for IPv4's 16-bit total
//! length is `Error::Malformed`.

use crate::{
    ChecksumMode, Error, EtherType, EthernetFrame, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Result, TcpPacket, TcpRepr, UdpPacket, UdpRepr, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};

/// Length of an Ethernet + IPv4 + UDP frame carrying `payload_len` bytes.
pub fn udp_frame_len(eth: &EthernetRepr, payload_len: usize) -> usize {
    eth.header_len() + IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len
}

/// Length of an Ethernet + IPv4 + ICMPv4 frame.
pub fn icmpv4_frame_len(eth: &EthernetRepr, icmp: &Icmpv4Repr<'_>) -> usize {
    eth.header_len() + IPV4_HEADER_LEN + icmp.buffer_len()
}

/// Length of an Ethernet + IPv4 + TCP frame.
pub fn tcp_frame_len(eth: &EthernetRepr, tcp: &TcpRepr<'_>) -> usize {
    eth.header_len() + IPV4_HEADER_LEN + tcp.buffer_len()
}

/// Writes the Ethernet and IPv4 headers; returns the IPv4 payload region.
fn write_l2_l3<'b>(
    buf: &'b mut [u8],
    eth: &EthernetRepr,
    ip: &Ipv4Repr,
    protocol: IpProtocol,
    l4_len: usize,
) -> Result<&'b mut [u8]> {
    let eth_len = eth.header_len();
    let total = eth_len + IPV4_HEADER_LEN + l4_len;
    if IPV4_HEADER_LEN + l4_len > usize::from(u16::MAX) {
        return Err(Error::Malformed);
    }
    let frame = buf.get_mut(..total).ok_or(Error::Truncated)?;
    let eth = EthernetRepr { ethertype: EtherType::Ipv4, ..*eth };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut *frame));
    let ip = Ipv4Repr { protocol, payload_len: l4_len, ..*ip };
    let (_, l3) = frame.split_at_mut(eth_len);
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut *l3), ChecksumMode::Verify);
    Ok(&mut l3[IPV4_HEADER_LEN..])
}

/// Writes an Ethernet + IPv4 + UDP frame; returns its length.
pub fn udp_frame(buf: &mut [u8], eth: &EthernetRepr, ip: &Ipv4Repr, udp: &UdpRepr, payload: &[u8]) -> Result<usize> {
    let l4_len = UDP_HEADER_LEN + payload.len();
    let l4 = write_l2_l3(buf, eth, ip, IpProtocol::Udp, l4_len)?;
    udp.emit(
        &mut UdpPacket::new_unchecked(l4),
        ip.src_addr,
        ip.dst_addr,
        payload.len(),
        |p| p.copy_from_slice(payload),
        ChecksumMode::Verify,
    );
    Ok(udp_frame_len(eth, payload.len()))
}

/// Writes an Ethernet + IPv4 + ICMPv4 frame; returns its length.
pub fn icmpv4_frame(buf: &mut [u8], eth: &EthernetRepr, ip: &Ipv4Repr, icmp: &Icmpv4Repr<'_>) -> Result<usize> {
    let l4 = write_l2_l3(buf, eth, ip, IpProtocol::Icmp, icmp.buffer_len())?;
    icmp.emit(&mut Icmpv4Packet::new_unchecked(l4), ChecksumMode::Verify);
    Ok(icmpv4_frame_len(eth, icmp))
}

/// Writes an Ethernet + IPv4 + TCP frame; returns its length.
pub fn tcp_frame(buf: &mut [u8], eth: &EthernetRepr, ip: &Ipv4Repr, tcp: &TcpRepr<'_>) -> Result<usize> {
    let l4 = write_l2_l3(buf, eth, ip, IpProtocol::Tcp, tcp.buffer_len())?;
    tcp.emit(&mut TcpPacket::new_unchecked(l4), ip.src_addr, ip.dst_addr, ChecksumMode::Verify);
    Ok(tcp_frame_len(eth, tcp))
}
