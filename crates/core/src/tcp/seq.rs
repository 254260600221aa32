//! Sequence numbers: 32-bit counters compared modulo 2^32.
//!
//! RFC 9293 §3.4: "It is essential to remember that the actual sequence number
//! space is finite, though very large ... all arithmetic dealing with sequence
//! numbers must be performed modulo 2**32." Comparisons follow RFC 1982 serial
//! number arithmetic: `a < b` when `b - a`, taken as a signed 32-bit value, is
//! positive. Two numbers exactly 2^31 apart are "undefined" in RFC 1982; here
//! both `a.lt(b)` and `b.lt(a)` are then true. Nothing in this file panics.
//!
//! `SeqNumber` deliberately does not implement `PartialOrd`: the relation is
//! not transitive across the whole space, so the explicit `lt`/`le`/`gt`/`ge`
//! methods make every comparison visible as a modular one.

use core::fmt;
use core::ops::{Add, Sub};

/// A TCP sequence (or acknowledgement) number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// `self - other` as a signed distance.
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    /// The number of octets from `earlier` up to `self`, or 0 when `self` is
    /// not after `earlier`.
    pub fn since(self, earlier: SeqNumber) -> u32 {
        let d = self.diff(earlier);
        if d > 0 {
            d as u32
        } else {
            0
        }
    }
    /// `self < other` modulo 2^32 (RFC 1982).
    pub fn lt(self, other: SeqNumber) -> bool {
        self.diff(other) < 0
    }
    /// `self <= other` modulo 2^32.
    pub fn le(self, other: SeqNumber) -> bool {
        self.diff(other) <= 0
    }
    /// `self > other` modulo 2^32.
    pub fn gt(self, other: SeqNumber) -> bool {
        self.diff(other) > 0
    }
    /// `self >= other` modulo 2^32.
    pub fn ge(self, other: SeqNumber) -> bool {
        self.diff(other) >= 0
    }
    /// The later of the two.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self.ge(other) {
            self
        } else {
            other
        }
    }
    /// The earlier of the two.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self.le(other) {
            self
        } else {
            other
        }
    }
    /// `start =< self < end`, RFC 9293's notation for "in the window".
    pub fn in_window(self, start: SeqNumber, end: SeqNumber) -> bool {
        self.ge(start) && self.lt(end)
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    /// Wrapping addition; lengths above 2^32 wrap, which no window allows.
    fn add(self, n: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n as u32))
    }
}

impl Sub<usize> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, n: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(n as u32))
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::SeqNumber as S;

    #[test]
    fn wraps() {
        assert!(S(u32::MAX).lt(S(0)));
        assert!(S(0).gt(S(u32::MAX)));
        assert_eq!(S(u32::MAX) + 2, S(1));
        assert_eq!(S(1).since(S(u32::MAX)), 2);
        assert_eq!(S(u32::MAX).since(S(1)), 0);
        assert!(S(5).in_window(S(u32::MAX - 1), S(6)));
        assert!(!S(6).in_window(S(u32::MAX - 1), S(6)));
    }

    #[test]
    fn half_space_is_panic_free() {
        let a = S(0);
        let b = S(1 << 31);
        let _ = (a.lt(b), b.lt(a), a.since(b), b.since(a), a.max(b));
    }
}
