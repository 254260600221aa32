//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is computed as `finish(combine(pseudo_header_v4(..), sum(bytes)))`
//! and verified by checking that `fold` of the sum over the bytes *including* the
//! checksum field is `0xffff`.

use std::net::Ipv4Addr;

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
    fn update_matches_recompute() {
        let mut data = [0x45u8, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00];
        let old = finish(sum(&data));
        data[4] = 0xab;
        data[5] = 0xcd;
        assert_eq!(update(old, 0x1234, 0xabcd), finish(sum(&data)));
    }
}
