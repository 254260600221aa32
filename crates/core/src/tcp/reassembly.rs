//! Bookkeeping for out-of-order data: which islands beyond RCV.NXT we hold.
//!
//! The bytes themselves are written straight into the receive ring at their
//! offset from RCV.NXT (see `recv_buffer.rs`); this structure only records
//! the ranges. It is a fixed array of at most [`MAX_RANGES`] sorted,
//! disjoint, non-adjacent ranges. Every operation is O(limit) and allocates
//! nothing, however many segments or holes the peer sends: a segment that
//! would open one island too many is refused (the peer retransmits it once
//! the holes fill), which is the documented bound on memory and work. The
//! array is boxed and allocated on the first out-of-order segment; the
//! connection frees it (`shrink`) once it goes idle again.

use super::seq::SeqNumber;
use super::segment::SackBlock;

/// The most islands any connection can be configured to keep.
pub const MAX_RANGES: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
struct Island {
    start: SeqNumber,
    end: SeqNumber,
    /// When this island last grew, for ordering SACK blocks by recency.
    stamp: u32,
}

/// What happened to an out-of-order segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    Stored,
    /// All of it was already held.
    Duplicate,
    /// It would have opened an island beyond the limit; dropped.
    TooManyIslands,
}

#[derive(Debug)]
pub(crate) struct Reassembly {
    islands: Option<Box<[Island; MAX_RANGES]>>,
    count: u8,
    limit: u8,
    clock: u32,
}

impl Reassembly {
    pub(crate) fn new(limit: usize) -> Reassembly {
        Reassembly { islands: None, count: 0, limit: limit.clamp(1, MAX_RANGES) as u8, clock: 0 }
    }

    fn islands(&self) -> &[Island] {
        self.islands.as_deref().map_or(&[], |a| &a[..usize::from(self.count)])
    }

    /// Frees the island array if no island is held.
    pub(crate) fn shrink(&mut self) {
        if self.count == 0 {
            self.islands = None;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn island_count(&self) -> usize {
        usize::from(self.count)
    }

    /// The highest sequence number held, if any.
    #[cfg(test)]
    pub(crate) fn highest(&self) -> Option<SeqNumber> {
        self.islands().last().map(|i| i.end)
    }

    /// Records `[start, end)` (which lies beyond RCV.NXT).
    pub(crate) fn insert(&mut self, start: SeqNumber, end: SeqNumber) -> Inserted {
        if !start.lt(end) {
            return Inserted::Duplicate;
        }
        self.clock = self.clock.wrapping_add(1);
        let count = usize::from(self.count);
        let limit = usize::from(self.limit);
        let clock = self.clock;
        let islands = self.islands.get_or_insert_with(|| Box::new([Island::default(); MAX_RANGES]));
        // First island that ends at or after `start` (touching counts).
        let first = islands[..count].iter().position(|i| i.end.ge(start)).unwrap_or(count);
        // Islands [first, last) overlap or touch the new range.
        let mut last = first;
        while last < count && islands[last].start.le(end) {
            last += 1;
        }
        if first == last {
            if count == limit {
                return Inserted::TooManyIslands;
            }
            islands.copy_within(first..count, first + 1);
            islands[first] = Island { start, end, stamp: clock };
            self.count += 1;
            return Inserted::Stored;
        }
        let merged_start = islands[first].start.min(start);
        let merged_end = islands[last - 1].end.max(end);
        if last - first == 1 && merged_start == islands[first].start && merged_end == islands[first].end {
            islands[first].stamp = clock;
            return Inserted::Duplicate;
        }
        islands[first] = Island { start: merged_start, end: merged_end, stamp: clock };
        islands.copy_within(last..count, first + 1);
        self.count -= (last - first - 1) as u8;
        Inserted::Stored
    }

    /// RCV.NXT has reached `rcv_nxt`: absorbs the islands that now join the
    /// in-order data and returns the new RCV.NXT.
    pub(crate) fn advance(&mut self, mut rcv_nxt: SeqNumber) -> SeqNumber {
        let count = usize::from(self.count);
        let Some(islands) = self.islands.as_mut() else { return rcv_nxt };
        let mut gone = 0;
        while gone < count && islands[gone].start.le(rcv_nxt) {
            rcv_nxt = rcv_nxt.max(islands[gone].end);
            gone += 1;
        }
        islands.copy_within(gone..count, 0);
        self.count -= gone as u8;
        rcv_nxt
    }

    /// Up to `max` SACK blocks, most recently changed island first.
    ///
    /// RFC 2018 §4: "The first SACK block ... MUST specify the contiguous block
    /// of data containing the segment which triggered this ACK ... the SACK
    /// option SHOULD be filled out by repeating the most recently reported SACK
    /// blocks".
    pub(crate) fn sack_blocks(&self, max: usize) -> [Option<SackBlock>; 4] {
        let mut out = [None; 4];
        let islands = self.islands();
        let mut taken = [false; MAX_RANGES];
        for slot in out.iter_mut().take(max.min(4)) {
            let best = (0..islands.len()).filter(|&i| !taken[i]).max_by_key(|&i| islands[i].stamp);
            if let Some(i) = best {
                taken[i] = true;
                *slot = Some((islands[i].start, islands[i].end));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn merges_and_advances() {
        let mut r = Reassembly::new(4);
        assert_eq!(r.insert(s(20), s(30)), Inserted::Stored);
        assert_eq!(r.insert(s(40), s(50)), Inserted::Stored);
        assert_eq!(r.insert(s(25), s(28)), Inserted::Duplicate);
        assert_eq!(r.insert(s(30), s(40)), Inserted::Stored);
        assert_eq!(r.island_count(), 1);
        assert_eq!(r.advance(s(10)), s(10));
        assert_eq!(r.advance(s(20)), s(50));
        assert!(r.is_empty());
    }

    #[test]
    fn refuses_islands_beyond_the_limit() {
        let mut r = Reassembly::new(2);
        assert_eq!(r.insert(s(20), s(21)), Inserted::Stored);
        assert_eq!(r.insert(s(40), s(41)), Inserted::Stored);
        assert_eq!(r.insert(s(60), s(61)), Inserted::TooManyIslands);
        // Growing an existing island is still fine.
        assert_eq!(r.insert(s(41), s(45)), Inserted::Stored);
        assert_eq!(r.sack_blocks(3), [Some((s(40), s(45))), Some((s(20), s(21))), None, None]);
    }

    #[test]
    fn bridges_several_islands() {
        let mut r = Reassembly::new(8);
        for i in 0..5 {
            r.insert(s(100 + i * 10), s(105 + i * 10));
        }
        assert_eq!(r.insert(s(99), s(200)), Inserted::Stored);
        assert_eq!(r.island_count(), 1);
        assert_eq!(r.highest(), Some(s(200)));
    }
}
