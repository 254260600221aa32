//! UDP datagrams (RFC 768).
//!
//! After [`UdpPacket::new_checked`] returns `Ok`, no accessor panics.

use crate::bytes::{get_u16, set_u16};
use crate::checksum::{self, PseudoHeader};
use crate::{ChecksumMode, Error, Result};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

const PROTO_UDP: u8 = 17;

/// A zero-copy view of a UDP datagram (the IP payload).
///
/// After [`new_checked`](Self::new_checked) returns `Ok`, no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }
    /// Wraps a buffer, checking `8 ≤ len ≤ buffer length`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let n = p.buffer.as_ref().len();
        if n < UDP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(p.len());
        if len < UDP_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > n {
            return Err(Error::Truncated);
        }
        Ok(p)
    }
    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }
    /// Length field (header + payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 4)
    }
    /// Checksum field (0 = none).
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 6)
    }
    /// The datagram as the length field delimits it (header included).
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..usize::from(self.len())).unwrap_or(b)
    }
    /// Payload, trimmed to the length field.
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(UDP_HEADER_LEN..).unwrap_or(&[])
    }
    /// Whether the checksum verifies. A zero checksum means "none" and passes
    /// over IPv4 (RFC 768); over IPv6 it fails (RFC 8200 §8.1).
    pub fn verify_checksum<A: PseudoHeader>(&self, src: A, dst: A) -> bool {
        if self.checksum() == 0 {
            return A::UDP_ZERO_CHECKSUM_MEANS_NONE;
        }
        let d = self.datagram();
        let pseudo = A::pseudo_header(src, dst, PROTO_UDP, d.len() as u32);
        checksum::fold(checksum::combine(pseudo, checksum::sum(d))) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload (trimmed to the length field), borrowed for the buffer's lifetime.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        let end = usize::from(self.len()).min(b.len());
        b.get(UDP_HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 0, v);
    }
    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 2, v);
    }
    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 4, v);
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 6, v);
    }
    /// Payload (trimmed to the length field), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        let b = self.buffer.as_mut();
        let end = len.min(b.len());
        b.get_mut(UDP_HEADER_LEN..end).unwrap_or(&mut [])
    }
    /// Computes and writes the checksum; a computed 0 is sent as 0xffff (RFC 768).
    pub fn fill_checksum<A: PseudoHeader>(&mut self, src: A, dst: A) {
        self.set_checksum(0);
        let d = self.datagram();
        let pseudo = A::pseudo_header(src, dst, PROTO_UDP, d.len() as u32);
        let c = checksum::finish(checksum::combine(pseudo, checksum::sum(d)));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// A parsed UDP header (the payload stays in the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a checked datagram; with `ChecksumMode::Verify` a bad (non-zero)
    /// checksum is `Error::Checksum` (over IPv6 a zero checksum is one too).
    pub fn parse<T: AsRef<[u8]> + ?Sized, A: PseudoHeader>(
        packet: &UdpPacket<&T>,
        src: A,
        dst: A,
        checksum: ChecksumMode,
    ) -> Result<Self> {
        if packet.buffer.as_ref().len() < UDP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if checksum == ChecksumMode::Verify && !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(UdpRepr { src_port: packet.src_port(), dst_port: packet.dst_port() })
    }

    /// Header length: 8.
    pub fn header_len(&self) -> usize {
        UDP_HEADER_LEN
    }

    /// Writes the header, lets `fill_payload` write the `payload_len` payload bytes
    /// in place, then (with `ChecksumMode::Verify`) computes the checksum; with
    /// `Ignore` it is left zero. Panics if the buffer is shorter than
    /// `8 + payload_len`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>, A: PseudoHeader>(
        &self,
        packet: &mut UdpPacket<T>,
        src: A,
        dst: A,
        payload_len: usize,
        fill_payload: impl FnOnce(&mut [u8]),
        checksum: ChecksumMode,
    ) {
        let len = UDP_HEADER_LEN + payload_len;
        debug_assert!(len <= usize::from(u16::MAX));
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(u16::try_from(len).unwrap_or(u16::MAX));
        packet.set_checksum(0);
        fill_payload(&mut packet.buffer.as_mut()[UDP_HEADER_LEN..len]);
        if checksum == ChecksumMode::Verify {
            packet.fill_checksum(src, dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn zero_checksum_is_sent_as_ffff_and_zero_passes() {
        let src = Ipv4Addr::new(0, 0, 0, 0);
        let dst = Ipv4Addr::new(0, 0, 0, 0);
        let mut b = [0u8; 10];
        // Choose a payload that makes the sum 0xffff so the checksum computes to 0.
        // pseudo: proto 17 + len 10 (twice: pseudo and header) = 17 + 10 + 10 = 37.
        let repr = UdpRepr { src_port: 0, dst_port: 0 };
        let fill = |p: &mut [u8]| p.copy_from_slice(&(0xffffu16 - 37).to_be_bytes());
        repr.emit(&mut UdpPacket::new_unchecked(&mut b[..]), src, dst, 2, fill, ChecksumMode::Verify);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(src, dst));
        b[6] = 0;
        b[7] = 0;
        assert!(UdpPacket::new_checked(&b[..]).unwrap().verify_checksum(src, dst));
    }

    #[test]
    fn zero_checksum_fails_over_ipv6() {
        let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        let mut b = [0u8; 10];
        let repr = UdpRepr { src_port: 1, dst_port: 2 };
        repr.emit(&mut UdpPacket::new_unchecked(&mut b[..]), src, dst, 2, |p| p.fill(7), ChecksumMode::Verify);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, Ipv6Addr::UNSPECIFIED));
        b[6] = 0;
        b[7] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum(src, dst));
        assert_eq!(UdpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap_err(), Error::Checksum);
    }

    #[test]
    fn lengths() {
        let mut b = [0u8; 12];
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[5] = 13;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        b[5] = 10;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap().payload().len(), 2);
    }
}
