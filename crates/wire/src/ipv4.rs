//! IPv4 headers (RFC 791). Options are validated and skipped; none are emitted.
//!
//! After [`Ipv4Packet::new_checked`] returns `Ok`, no accessor panics.

use std::net::Ipv4Addr;

use crate::bytes::{get_ipv4, get_u16, set_ipv4, set_u16};
use crate::checksum;
use crate::{ChecksumMode, Error, Result};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// The IPv4 protocol field, which is also IPv6's Next Header (one IANA
/// number space): upper-layer protocols and IPv6 extension headers.
/// `Unknown` holds only numbers without a variant of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 0: IPv6 hop-by-hop options (RFC 8200 §4.3).
    HopByHop,
    /// 1
    Icmp,
    /// 6
    Tcp,
    /// 17
    Udp,
    /// 43: IPv6 routing header (RFC 8200 §4.4).
    Ipv6Route,
    /// 44: IPv6 fragment header (RFC 8200 §4.5).
    Ipv6Frag,
    /// 58: ICMPv6 (RFC 4443).
    Icmpv6,
    /// 59: no next header (RFC 8200 §4.7).
    Ipv6NoNxt,
    /// 60: IPv6 destination options (RFC 8200 §4.6).
    Ipv6Opts,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(v) => v,
        }
    }
}

const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
///
/// After [`new_checked`](Self::new_checked) (or
/// [`new_checked_header`](Self::new_checked_header)) returns `Ok`, no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer, validating: version 4, IHL ≥ 5, header within the buffer,
    /// `header_len ≤ total_len ≤ buffer length` (a longer buffer is Ethernet padding;
    /// [`payload`](Self::payload) is trimmed), and well-formed options.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_header(buffer)?;
        if usize::from(p.total_len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but allows the datagram to be cut
    /// short after its header, as in the copy quoted by an ICMP error message.
    /// [`payload`](Self::payload) then returns what is there.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 || p.header_len() < IPV4_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.header_len() > b.len() {
            return Err(Error::Truncated);
        }
        if usize::from(p.total_len()) < p.header_len() {
            return Err(Error::Malformed);
        }
        check_options(p.options())?;
        Ok(p)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }
    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[1] >> 2
    }
    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[1] & 0x03
    }
    /// Total length (header + payload).
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 4)
    }
    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), 6) & DF != 0
    }
    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), 6) & MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), 6) & OFFSET_MASK) << 3
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }
    /// Payload protocol.
    pub fn protocol(&self) -> IpProtocol {
        self.buffer.as_ref()[9].into()
    }
    /// Header checksum.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 10)
    }
    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), 12)
    }
    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), 16)
    }
    /// Option bytes (between the fixed header and `header_len`).
    pub fn options(&self) -> &[u8] {
        self.buffer.as_ref().get(IPV4_HEADER_LEN..self.header_len()).unwrap_or(&[])
    }
    /// Where the first malformed option starts, counted from the start of
    /// the header (the pointer of an ICMP parameter problem), or `None`
    /// when the options are well formed (see [`new_checked`](Self::new_checked)).
    pub fn option_problem(&self) -> Option<usize> {
        option_problem(self.options()).map(|at| IPV4_HEADER_LEN + at)
    }
    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let header = self.buffer.as_ref().get(..self.header_len()).unwrap_or(&[]);
        checksum::fold(checksum::sum(header)) == 0xffff
    }
    /// Payload bytes, trimmed to `total_len` (and to the buffer).
    pub fn payload(&self) -> &[u8] {
        payload_range(self.buffer.as_ref(), self.header_len(), self.total_len())
    }
}

fn payload_range(b: &[u8], header_len: usize, total_len: u16) -> &[u8] {
    let end = usize::from(total_len).min(b.len());
    b.get(header_len..end).unwrap_or(&[])
}

/// Walks the option list: EOL ends it, NOP is one byte, every other option has a
/// length byte ≥ 2 that stays within the header.
fn check_options(opts: &[u8]) -> Result<()> {
    option_problem(opts).map_or(Ok(()), |_| Err(Error::Malformed))
}

/// The offset in `opts` of the first option that breaks [`check_options`]'s
/// rules, if any.
fn option_problem(opts: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(&kind) = opts.get(at) {
        match kind {
            0 => return None,
            1 => at += 1,
            _ => {
                let len = opts.get(at + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || len > opts.len() - at {
                    return Some(at);
                }
                at += len;
            }
        }
    }
    None
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload (trimmed to `total_len`), borrowed for the buffer's lifetime.
    pub fn into_payload(self) -> &'a [u8] {
        payload_range(self.buffer.as_ref(), self.header_len(), self.total_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version and header length (bytes, multiple of 4).
    pub fn set_version_and_header_len(&mut self, version: u8, header_len: usize) {
        self.buffer.as_mut()[0] = (version << 4) | ((header_len / 4) as u8 & 0x0f);
    }
    /// Sets the DSCP/ECN byte.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }
    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 2, v);
    }
    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 4, v);
    }
    /// Sets the flags and fragment offset (offset in bytes; must be a multiple of 8).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, frag_offset: u16) {
        let mut v = (frag_offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= DF;
        }
        if more_frags {
            v |= MF;
        }
        set_u16(self.buffer.as_mut(), 6, v);
    }
    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[8] = v;
    }
    /// Sets the protocol.
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[9] = p.into();
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 10, v);
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_ipv4(self.buffer.as_mut(), 12, a);
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_ipv4(self.buffer.as_mut(), 16, a);
    }
    /// Computes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let header = self.buffer.as_ref().get(..hl).unwrap_or(&[]);
        let c = checksum::finish(checksum::sum(header));
        self.set_checksum(c);
    }
    /// Payload bytes (trimmed to `total_len`), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let total = self.total_len();
        let b = self.buffer.as_mut();
        let end = usize::from(total).min(b.len());
        b.get_mut(hl..end).unwrap_or(&mut [])
    }
}

/// A parsed IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length (`total_len - header_len`).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag (the core decides what to do with fragments).
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// The DSCP (upper 6 bits) and ECN (lower 2 bits) byte.
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    /// Parses a checked packet; with `ChecksumMode::Verify` a bad header checksum
    /// is `Error::Checksum`. Fragments are reported, not rejected.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>, checksum: ChecksumMode) -> Result<Self> {
        // Re-validate cheaply so that a view made with `new_unchecked` cannot
        // make this panic either.
        let b = packet.buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN || packet.header_len() > b.len() {
            return Err(Error::Truncated);
        }
        if packet.version() != 4 || packet.header_len() < IPV4_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if checksum == ChecksumMode::Verify && !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Self::from_header(packet))
    }

    /// Reads the fields of a header whose fixed part is known to be present.
    pub(crate) fn from_header<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Self {
        Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
            dscp_ecn: packet.buffer.as_ref()[1],
        }
    }

    /// Header length on emit: always 20 (no options are emitted).
    pub fn header_len(&self) -> usize {
        IPV4_HEADER_LEN
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        IPV4_HEADER_LEN + self.payload_len
    }

    /// Writes the header (not the payload). With `ChecksumMode::Verify` the
    /// checksum is computed, with `Ignore` it is left zero. A `payload_len` too big
    /// for the 16-bit total length is written as 65535 (debug builds assert).
    /// Panics if the buffer is shorter than 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>, checksum: ChecksumMode) {
        debug_assert!(self.buffer_len() <= usize::from(u16::MAX));
        packet.set_version_and_header_len(4, IPV4_HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.set_ident(self.ident);
        packet.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.set_checksum(0);
        if checksum == ChecksumMode::Verify {
            packet.fill_checksum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 24] {
        let mut b = [0u8; 24];
        let repr = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Udp,
            payload_len: 4,
            ttl: 64,
            ident: 7,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            dscp_ecn: 0,
        };
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), ChecksumMode::Verify);
        b
    }

    #[test]
    fn padding_is_trimmed() {
        let mut b = [0u8; 60];
        b[..24].copy_from_slice(&header());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert!(p.verify_checksum());
    }

    #[test]
    fn option_problems_are_located() {
        let mut b = [0u8; 28];
        b[0] = 0x47; // IHL 7: two words of options at 20..28
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[20..28].copy_from_slice(&[1, 1, 7, 1, 0, 0, 0, 0]); // NOP, NOP, option 7 with length 1
        assert_eq!(Ipv4Packet::new_unchecked(&b[..]).option_problem(), Some(22));
        assert!(Ipv4Packet::new_checked(&b[..]).is_err());
        b[20..28].copy_from_slice(&[1, 7, 3, 4, 0, 0, 0, 0]); // NOP, option 7 (3 bytes), EOL
        assert_eq!(Ipv4Packet::new_unchecked(&b[..]).option_problem(), None);
        b[20..28].copy_from_slice(&[1, 1, 1, 1, 1, 1, 1, 68]); // a kind without its length byte
        assert_eq!(Ipv4Packet::new_unchecked(&b[..]).option_problem(), Some(27));
    }

    #[test]
    fn options_are_walked() {
        let mut b = [0u8; 28];
        b[..24].copy_from_slice(&header());
        b[0] = 0x46; // IHL 6: one word of options at 20..24
        b[3] = 28;
        b[20..24].copy_from_slice(&[1, 7, 3, 0]); // NOP, then option 7 with len 3
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
        b[20..24].copy_from_slice(&[7, 5, 0, 0]); // runs past the header
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[20..24].copy_from_slice(&[7, 1, 0, 0]); // length 1
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[20..24].copy_from_slice(&[1, 1, 1, 7]); // length byte missing
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[20..24].copy_from_slice(&[0, 9, 9, 9]); // EOL ends the walk
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn bad_lengths() {
        let mut b = header();
        b[3] = 19;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[3] = 25;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        b[3] = 24;
        b[10] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p, ChecksumMode::Verify).unwrap_err(), Error::Checksum);
        assert!(Ipv4Repr::parse(&p, ChecksumMode::Ignore).is_ok());
    }
}
