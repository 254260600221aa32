//! Sequence numbers: 32-bit counters compared modulo 2^32.
//!
//! The engine and the wire format share one type, the wire crate's
//! [`TcpSeqNumber`](ustack_wire::TcpSeqNumber) (RFC 1982 comparisons through
//! explicit `lt`/`le`/`gt`/`ge`, no `PartialOrd`): a parsed header's numbers
//! go into a `Segment` and back out without conversion.

/// A TCP sequence (or acknowledgement) number.
pub use ustack_wire::TcpSeqNumber as SeqNumber;

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
