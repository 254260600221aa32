//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is computed as `finish(combine(pseudo_header_v4(..), sum(bytes)))`
//! (or [`pseudo_header_v6`] under IPv6) and verified by checking that `fold` of
//! the sum over the bytes *including* the checksum field is `0xffff`. TCP and
//! UDP take either address family through [`PseudoHeader`].

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` read as big-endian 16-bit words (an odd trailing
/// byte is padded with zero).
///
/// The result is an unfolded accumulator value, but it is always `<= 0xffff`, so
/// up to 65 536 results can be added with plain `+` without overflowing a `u32`;
/// [`combine`] adds any two. Processes 8 bytes per step.
pub fn sum(data: &[u8]) -> u32 {
    let (chunks, rest) = data.as_chunks::<8>();
    let mut acc: u64 = 0;
    for chunk in chunks {
        // One's-complement addition of 64-bit words with end-around carry is
        // congruent to the 16-bit sum modulo 0xffff (2^16 ≡ 1), so folding later
        // gives the same result.
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(*chunk));
        acc = s + u64::from(carry);
    }
    let (words, odd) = rest.as_chunks::<2>();
    let mut tail: u64 = 0;
    for w in words {
        tail += u64::from(u16::from_be_bytes(*w));
    }
    if let [b] = odd {
        tail += u64::from(*b) << 8;
    }
    let (s, carry) = acc.overflowing_add(tail);
    acc = s + u64::from(carry);
    // Fold 64 -> 16 bits.
    let mut x = (acc & 0xffff_ffff) + (acc >> 32);
    x = (x & 0xffff_ffff) + (x >> 32);
    u32::from(fold(x as u32))
}

/// One's-complement addition of two accumulators (end-around carry; never overflows).
#[inline]
pub fn combine(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// Folds the carries of an accumulator into 16 bits. Not inverted.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for an accumulator: `!fold(sum)`.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Accumulator of the IPv4 pseudo header (RFC 793 §3.1, RFC 768) for TCP/UDP.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let w = |a: u8, b: u8| u32::from(u16::from_be_bytes([a, b]));
    w(s[0], s[1])
        + w(s[2], s[3])
        + w(d[0], d[1])
        + w(d[2], d[3])
        + u32::from(protocol)
        + (length >> 16)
        + (length & 0xffff)
}

/// Accumulator of the IPv6 pseudo header (RFC 8200 §8.1) for TCP, UDP and
/// ICMPv6: both addresses, the upper-layer packet length as 32 bits and the
/// upper-layer protocol (the last Next Header, not an extension header's).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    // Each `sum` is at most 0xffff, so the additions cannot overflow.
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(next_header) + (length >> 16) + (length & 0xffff)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

/// An address family whose pseudo header covers the TCP and UDP checksums:
/// [`Ipv4Addr`] or [`Ipv6Addr`] (sealed). The TCP and UDP views and reprs are
/// generic over it, so one code path serves both families and the IPv4
/// instance compiles to what it was before.
pub trait PseudoHeader: Copy + sealed::Sealed {
    /// Whether a zero UDP checksum means "not computed" (IPv4, RFC 768) rather
    /// than an invalid datagram (IPv6, RFC 8200 §8.1: "IPv6 receivers must
    /// discard UDP packets containing a zero checksum").
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool;
    /// The pseudo header's accumulator for `protocol` and an upper-layer
    /// `length`.
    fn pseudo_header(src: Self, dst: Self, protocol: u8, length: u32) -> u32;
}

impl PseudoHeader for Ipv4Addr {
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool = true;
    #[inline]
    fn pseudo_header(src: Self, dst: Self, protocol: u8, length: u32) -> u32 {
        pseudo_header_v4(src, dst, protocol, length)
    }
}

impl PseudoHeader for Ipv6Addr {
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool = false;
    #[inline]
    fn pseudo_header(src: Self, dst: Self, protocol: u8, length: u32) -> u32 {
        pseudo_header_v6(src, dst, protocol, length)
    }
}

/// Incrementally updates a checksum after a 16-bit word changed from `old_word` to
/// `new_word` (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let s = u32::from(!old_checksum) + u32::from(!old_word) + u32::from(new_word);
    !fold(s)
}

/// Incrementally updates a checksum after a 32-bit field (e.g. an IPv4 address or
/// a TCP sequence number) changed from `old` to `new`.
#[inline]
pub fn update32(old_checksum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!old_checksum)
        + u32::from(!((old >> 16) as u16))
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn known_ipv4_header() {
        // A textbook IPv4 header whose checksum is b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&h)), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(fold(sum(&h)), 0xffff);
    }

    #[test]
    fn all_ones_long_input_does_not_overflow() {
        let data = [0xffu8; 4096];
        assert_eq!(fold(sum(&data)), 0xffff);
    }

    #[test]
    fn pseudo_header_v6_is_the_sum_of_its_bytes() {
        // RFC 8200 §8.1's layout written out: src, dst, 32-bit length,
        // three zero bytes, next header.
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(fold(pseudo_header_v6(src, dst, 58, 70_000)), fold(sum(&bytes)));
    }

    #[test]
    fn update_matches_recompute() {
        let mut data = [0x45u8, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00];
        let old = finish(sum(&data));
        data[4] = 0xab;
        data[5] = 0xcd;
        assert_eq!(update(old, 0x1234, 0xabcd), finish(sum(&data)));
    }
}
