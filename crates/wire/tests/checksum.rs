//! Checksum properties: incremental update (RFC 1624) equals recomputation.

use proptest::prelude::*;
use ustack_wire::checksum;

/// Straightforward RFC 1071 reference: 16-bit words into a u64, then fold.
fn reference(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    for w in data.chunks(2) {
        let hi = u64::from(w[0]) << 8;
        let lo = w.get(1).map_or(0, |b| u64::from(*b));
        acc += hi | lo;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Two checksum values are equivalent if equal, or both represent zero.
fn same(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

proptest! {
    #[test]
    fn fast_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let fast = checksum::fold(checksum::sum(&data));
        let slow = reference(&data);
        // Both are one's-complement sums; 0 and 0xffff are the same number.
        prop_assert!(same(fast, slow) || (fast == slow));
    }

    #[test]
    fn sum_is_split_invariant(data in proptest::collection::vec(any::<u8>(), 0..500), cut in 0usize..250) {
        let cut = (cut * 2).min(data.len() & !1);
        let whole = checksum::fold(checksum::sum(&data));
        let parts = checksum::fold(checksum::combine(checksum::sum(&data[..cut]), checksum::sum(&data[cut..])));
        prop_assert!(same(whole, parts));
    }

    #[test]
    fn incremental_update16(mut data in proptest::collection::vec(any::<u8>(), 4..200), idx in any::<usize>(), new in any::<u16>()) {
        // Checksum lives in words 0..2; the changed word is elsewhere.
        let words = data.len() / 2;
        prop_assume!(words >= 2);
        let w = 1 + idx % (words - 1);
        data[0] = 0;
        data[1] = 0;
        let c = checksum::finish(checksum::sum(&data));
        let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
        data[2 * w..2 * w + 2].copy_from_slice(&new.to_be_bytes());
        let recomputed = checksum::finish(checksum::sum(&data));
        let updated = checksum::update(c, old, new);
        prop_assert!(same(updated, recomputed), "updated {:04x} recomputed {:04x}", updated, recomputed);
        // And the updated checksum verifies.
        data[0..2].copy_from_slice(&updated.to_be_bytes());
        prop_assert_eq!(checksum::fold(checksum::sum(&data)), 0xffff);
    }

    #[test]
    fn incremental_update32(mut data in proptest::collection::vec(any::<u8>(), 8..200), idx in any::<usize>(), new in any::<u32>()) {
        let dwords = (data.len() - 2) / 4;
        prop_assume!(dwords >= 1);
        let at = 2 + 4 * (idx % dwords);
        data[0] = 0;
        data[1] = 0;
        let c = checksum::finish(checksum::sum(&data));
        let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        data[at..at + 4].copy_from_slice(&new.to_be_bytes());
        let recomputed = checksum::finish(checksum::sum(&data));
        let updated = checksum::update32(c, old, new);
        prop_assert!(same(updated, recomputed), "updated {:04x} recomputed {:04x}", updated, recomputed);
        data[0..2].copy_from_slice(&updated.to_be_bytes());
        prop_assert_eq!(checksum::fold(checksum::sum(&data)), 0xffff);
    }

    #[test]
    fn pseudo_header_matches_bytes(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>(), len in any::<u16>()) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&[0, proto]);
        bytes.extend_from_slice(&len.to_be_bytes());
        let p = checksum::pseudo_header_v4(src.into(), dst.into(), proto, u32::from(len));
        prop_assert!(same(checksum::fold(p), reference(&bytes)));
    }
}
