//! IPv6 headers (RFC 8200 §3). Extension headers are walked by
//! [`crate::Ipv6ExtChain`].
//!
//! After [`Ipv6Packet::new_checked`] returns `Ok`, no accessor panics.

use std::net::Ipv6Addr;

use crate::bytes::{get_ipv6, get_u16, get_u32, set_ipv6, set_u16, set_u32};
use crate::{Error, IpProtocol, Result};

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// The minimum link MTU every IPv6 link carries (RFC 8200 §5): an ICMPv6
/// error never exceeds it.
pub const IPV6_MIN_MTU: usize = 1280;

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// A zero-copy view of an IPv6 packet.
///
/// After [`new_checked`](Self::new_checked) (or
/// [`new_checked_header`](Self::new_checked_header)) returns `Ok`, no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer, validating: the 40-byte header is there, version 6, and
    /// `40 + payload_len ≤ buffer length` (a longer buffer is Ethernet padding;
    /// [`payload`](Self::payload) is trimmed). Jumbograms (payload length 0
    /// with a Jumbo Payload option, RFC 2675) are not recognised: their
    /// payload reads as empty.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_header(buffer)?;
        if IPV6_HEADER_LEN + usize::from(p.payload_len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but allows the payload to be cut
    /// short, as in the copy quoted by an ICMPv6 error message.
    /// [`payload`](Self::payload) then returns what is there.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Traffic class (DSCP in the upper 6 bits, ECN in the lower 2).
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }
    /// Flow label (20 bits, RFC 6437).
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 0) & FLOW_LABEL_MASK
    }
    /// Payload length: the bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 4)
    }
    /// Next header: the first extension header or the upper-layer protocol.
    pub fn next_header(&self) -> IpProtocol {
        self.buffer.as_ref()[6].into()
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }
    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        get_ipv6(self.buffer.as_ref(), 8)
    }
    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        get_ipv6(self.buffer.as_ref(), 24)
    }
    /// Payload bytes (extension headers and upper layer), trimmed to
    /// `payload_len` (and to the buffer).
    pub fn payload(&self) -> &[u8] {
        payload_range(self.buffer.as_ref(), self.payload_len())
    }
}

fn payload_range(b: &[u8], payload_len: u16) -> &[u8] {
    let end = (IPV6_HEADER_LEN + usize::from(payload_len)).min(b.len());
    b.get(IPV6_HEADER_LEN..end).unwrap_or(&[])
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload (trimmed to `payload_len`), borrowed for the buffer's lifetime.
    pub fn into_payload(self) -> &'a [u8] {
        payload_range(self.buffer.as_ref(), self.payload_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version, traffic class and flow label (the first 32 bits).
    pub fn set_version_tc_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let v = (u32::from(version & 0x0f) << 28) | (u32::from(traffic_class) << 20) | (flow_label & FLOW_LABEL_MASK);
        set_u32(self.buffer.as_mut(), 0, v);
    }
    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 4, v);
    }
    /// Sets the next header.
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[6] = p.into();
    }
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[7] = v;
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        set_ipv6(self.buffer.as_mut(), 8, a);
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        set_ipv6(self.buffer.as_mut(), 24, a);
    }
    /// Payload bytes (trimmed to `payload_len`), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.payload_len();
        let b = self.buffer.as_mut();
        let end = (IPV6_HEADER_LEN + usize::from(len)).min(b.len());
        b.get_mut(IPV6_HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// A parsed IPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header (an extension header or the upper-layer protocol).
    pub next_header: IpProtocol,
    /// Payload length (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits; higher bits are dropped on emit).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a checked packet. IPv6 has no header checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv6Packet<&T>) -> Result<Self> {
        // Re-validate cheaply so that a view made with `new_unchecked` cannot
        // make this panic either.
        if packet.buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header length: always 40 (extension headers are part of the payload).
    pub fn header_len(&self) -> usize {
        IPV6_HEADER_LEN
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        IPV6_HEADER_LEN + self.payload_len
    }

    /// Writes the header (not the payload). A `payload_len` over 65535 is
    /// written as 65535 (debug builds assert). Panics if the buffer is shorter
    /// than 40 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX));
        packet.set_version_tc_flow(6, self.traffic_class, self.flow_label);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "fe80::1".parse().unwrap(),
            dst_addr: "ff02::1".parse().unwrap(),
            next_header: IpProtocol::Icmpv6,
            payload_len: 8,
            hop_limit: 255,
            traffic_class: 0xb8,
            flow_label: 0xabcde,
        }
    }

    #[test]
    fn header_fields_sit_where_rfc8200_puts_them() {
        let mut b = [0u8; 60];
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..8], &[0x6b, 0x8a, 0xbc, 0xde, 0, 8, 58, 255]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8, "padding after the payload is trimmed");
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn bad_version_and_lengths() {
        let mut b = [0u8; 48];
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        assert_eq!(Ipv6Packet::new_checked(&b[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Ipv6Packet::new_checked(&b[..47]).unwrap_err(), Error::Truncated);
        assert!(Ipv6Packet::new_checked_header(&b[..47]).is_ok());
        b[0] = 0x4b;
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&b[..])).unwrap_err(), Error::Malformed);
        assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&b[..10])).unwrap_err(), Error::Truncated);
    }
}
