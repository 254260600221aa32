//! A hierarchical timing wheel: every socket timer in one structure, with
//! O(1) arm, re-arm and cancel, and expiry work proportional to the timers
//! that fire (plus at most one cascade per level they pass through).
//!
//! Timers are data (quinn's lesson): each socket keeps its own deadlines and
//! tells the wheel only the earliest, under the socket's dense key. The wheel
//! answers "what is the next deadline" for the event loop's sleep and "which
//! keys are due" for `handle_timeout`.
//!
//! Layout (as in the Linux and tokio timer wheels): levels of 64 slots; a
//! slot at level L spans 64^L ticks of 1 ms. Deadlines reach 2^36 ms ahead
//! (over two years; later ones are clamped to that horizon and simply
//! re-armed when they fire early), which six levels cover; a seventh holds
//! the deadlines whose tick crosses a multiple of 2^36 from now (they differ
//! from it in bit 36 or above however near they are). A timer lives at the
//! level of the highest
//! 6-bit group in which its deadline differs from the wheel's current tick;
//! when time reaches its slot it cascades to a lower level, until it fires at
//! level 0. A bitmap per level finds the next occupied slot in one
//! instruction, so jumping idle time costs nothing per tick.

use crate::time::Instant;

const LEVELS: usize = 7;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const NIL: u32 = u32::MAX;
/// The furthest tick the wheel holds relative to now: within it, a deadline
/// differs from now in bit 36 at most, which the top level takes.
const HORIZON: u64 = (1 << (SLOT_BITS as usize * (LEVELS - 1))) - 1;

#[derive(Clone, Copy, Debug)]
struct Node {
    /// Deadline in ticks (ms, rounded up); meaningful only while armed.
    tick: u64,
    /// Slot index (`level * SLOTS + slot`) or NIL when not armed.
    slot: u32,
    prev: u32,
    next: u32,
}

const UNARMED: Node = Node { tick: 0, slot: NIL, prev: NIL, next: NIL };

/// The wheel: one deadline per key (a socket's dense index), 1 ms ticks.
#[derive(Debug)]
pub struct TimerWheel {
    nodes: Vec<Node>,
    heads: Box<[u32; LEVELS * SLOTS]>,
    occupied: [u64; LEVELS],
    /// Every deadline at or before this tick has fired.
    now: u64,
    /// No occupied slot starts before this tick (`u64::MAX`: none is
    /// occupied), so an `expire` before it has nothing to fire or cascade.
    /// A lower bound: cancelling leaves it, `link` lowers it, a full
    /// `expire` makes it exact. It spares the slot search on most polls.
    due: u64,
    armed: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel::new()
    }
}

/// Ticks are whole milliseconds, rounded up so a timer never fires early.
fn to_tick(t: Instant) -> u64 {
    t.total_micros().div_ceil(1000)
}

impl TimerWheel {
    /// An empty wheel; its node table grows with the highest key armed.
    pub fn new() -> TimerWheel {
        TimerWheel {
            nodes: Vec::new(),
            heads: Box::new([NIL; LEVELS * SLOTS]),
            occupied: [0; LEVELS],
            now: 0,
            due: u64::MAX,
            armed: 0,
        }
    }

    /// Timers armed.
    pub fn len(&self) -> usize {
        self.armed
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.armed == 0
    }

    /// Arm `key` for `deadline`, move it, or cancel it (`None`). O(1).
    pub fn set(&mut self, key: u32, deadline: Option<Instant>) {
        let k = key as usize;
        if k >= self.nodes.len() {
            if deadline.is_none() {
                return;
            }
            self.nodes.resize(k + 1, UNARMED);
        }
        let tick = deadline.map(|d| to_tick(d).max(self.now));
        if self.nodes[k].slot != NIL {
            if tick == Some(self.nodes[k].tick) {
                return; // unchanged: the common case for a busy socket
            }
            self.unlink(key);
            self.armed -= 1;
        }
        if let Some(tick) = tick {
            self.nodes[k].tick = tick;
            self.link(key);
            self.armed += 1;
        }
    }

    /// The deadline `key` is armed for (to the millisecond), if any.
    pub fn deadline(&self, key: u32) -> Option<Instant> {
        self.nodes.get(key as usize).filter(|n| n.slot != NIL).map(|n| Instant::from_millis(n.tick))
    }

    /// A time at or before the earliest deadline (exact when that deadline
    /// is within 64 ms of the wheel's time); `None` when nothing is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_slot().map(|(_, _, tick)| Instant::from_millis(tick))
    }

    /// Fire every timer due at `now`: their keys are appended to `fired`
    /// (disarmed). Harmless to call twice.
    #[inline]
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<u32>) {
        if !self.idle_until(now) {
            self.expire_slots(now.total_micros() / 1000, fired);
        }
    }

    /// When nothing can fire by `now` (the common case), moves the wheel's
    /// time there, exactly as `expire` would, and returns true; otherwise
    /// changes nothing and returns false (call `expire`).
    #[inline]
    pub fn idle_until(&mut self, now: Instant) -> bool {
        let target = now.total_micros() / 1000;
        if target < self.due {
            // Nothing starts by `target`: what the slot search in
            // `expire_slots` would conclude, without it.
            self.now = self.now.max(target);
            return true;
        }
        false
    }

    fn expire_slots(&mut self, target: u64, fired: &mut Vec<u32>) {
        self.due = u64::MAX;
        while let Some((level, slot, tick)) = self.next_slot() {
            if tick > target {
                self.due = tick;
                break;
            }
            self.now = self.now.max(tick);
            let idx = level * SLOTS + slot;
            let mut key = self.heads[idx];
            self.heads[idx] = NIL;
            self.occupied[level] &= !(1 << slot);
            while key != NIL {
                let next = self.nodes[key as usize].next;
                self.nodes[key as usize].slot = NIL;
                if level == 0 || self.nodes[key as usize].tick <= target {
                    self.armed -= 1;
                    fired.push(key);
                } else {
                    self.link(key); // cascade to a lower level
                }
                key = next;
            }
        }
        self.now = self.now.max(target);
    }

    /// The first occupied slot in time order: (level, slot, its start tick).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        // Every timer at a lower level is due before any at a higher one:
        // lower levels hold only deadlines inside the current span of the
        // level above.
        for level in 0..LEVELS {
            let bits = self.occupied[level];
            if bits == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_span = 1u64 << shift;
            let level_span = slot_span << SLOT_BITS;
            let now_slot = ((self.now >> shift) as usize) & (SLOTS - 1);
            let slot = (bits.rotate_right(now_slot as u32).trailing_zeros() as usize + now_slot) & (SLOTS - 1);
            let mut tick = (self.now & !(level_span - 1)) + slot as u64 * slot_span;
            if tick + slot_span <= self.now {
                tick += level_span;
            }
            return Some((level, slot, tick.max(self.now)));
        }
        None
    }

    fn link(&mut self, key: u32) {
        let tick = self.nodes[key as usize].tick.min(self.now + HORIZON);
        let diff = (tick ^ self.now) | 1;
        // Crossing a multiple of 2^42 flips bits above the top level too;
        // within the horizon the top level's slot is still the right one.
        let level = (((63 - diff.leading_zeros()) / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((tick >> (SLOT_BITS as usize * level)) as usize) & (SLOTS - 1);
        let idx = level * SLOTS + slot;
        let head = self.heads[idx];
        let n = &mut self.nodes[key as usize];
        n.slot = idx as u32;
        n.prev = NIL;
        n.next = head;
        if head != NIL {
            self.nodes[head as usize].prev = key;
        }
        self.heads[idx] = key;
        self.occupied[level] |= 1 << slot;
        // The slot starts at `tick` with the bits below its level cleared.
        self.due = self.due.min(tick & !((1u64 << (SLOT_BITS as usize * level)) - 1));
    }

    fn unlink(&mut self, key: u32) {
        let Node { slot, prev, next, .. } = self.nodes[key as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.heads[slot as usize] = next;
            if next == NIL {
                let (level, s) = (slot as usize / SLOTS, slot as usize % SLOTS);
                self.occupied[level] &= !(1 << s);
            }
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        self.nodes[key as usize] = Node { tick: self.nodes[key as usize].tick, ..UNARMED };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ms(m: u64) -> Instant {
        Instant::from_millis(m)
    }

    #[test]
    fn fires_in_order_and_only_when_due() {
        let mut w = TimerWheel::new();
        w.set(1, Some(ms(100)));
        w.set(2, Some(ms(5)));
        w.set(3, Some(ms(70_000)));
        let mut fired = Vec::new();
        w.expire(ms(4), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.poll_timeout(), Some(ms(5)));
        w.expire(ms(5), &mut fired);
        assert_eq!(fired, [2]);
        w.expire(ms(69_999), &mut fired);
        assert_eq!(fired, [2, 1]);
        assert!(w.poll_timeout().unwrap() <= ms(70_000));
        w.expire(ms(70_000), &mut fired);
        assert_eq!(fired, [2, 1, 3]);
        assert!(w.is_empty());
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn rearm_and_cancel() {
        let mut w = TimerWheel::new();
        w.set(7, Some(ms(10)));
        w.set(7, Some(ms(20)));
        w.set(8, Some(ms(15)));
        w.set(8, None);
        let mut fired = Vec::new();
        w.expire(ms(19), &mut fired);
        assert!(fired.is_empty());
        w.expire(ms(20), &mut fired);
        assert_eq!(fired, [7]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn sub_millisecond_deadlines_round_up() {
        let mut w = TimerWheel::new();
        w.set(0, Some(Instant::from_micros(1500)));
        let mut fired = Vec::new();
        w.expire(Instant::from_micros(1999), &mut fired);
        assert!(fired.is_empty(), "never early");
        w.expire(ms(2), &mut fired);
        assert_eq!(fired, [0]);
    }

    #[test]
    fn deadlines_across_the_top_level_boundaries() {
        // A timer armed just before a multiple of 2^36 (or 2^42) ticks and
        // due just after differs from `now` in bit 36 (or 36 to 42).
        for edge in [1u64 << 36, 1u64 << 42, 3u64 << 42] {
            let mut w = TimerWheel::new();
            let mut fired = Vec::new();
            w.expire(ms(edge - 10), &mut fired);
            w.set(1, Some(ms(edge + 5)));
            w.set(2, Some(ms(edge - 3)));
            assert!(w.poll_timeout().unwrap() <= ms(edge - 3));
            w.expire(ms(edge - 3), &mut fired);
            assert_eq!(fired, [2]);
            w.expire(ms(edge + 4), &mut fired);
            assert_eq!(fired, [2]);
            assert!(w.poll_timeout().unwrap() <= ms(edge + 5));
            w.expire(ms(edge + 5), &mut fired);
            assert_eq!(fired, [2, 1]);
            assert!(w.is_empty());
        }
    }

    #[test]
    fn deadlines_past_the_horizon_are_held() {
        let mut w = TimerWheel::new();
        let mut fired = Vec::new();
        w.expire(ms(12_345), &mut fired);
        let far = ms(12_345 + (1 << 40));
        w.set(1, Some(far));
        assert!(w.poll_timeout().unwrap() <= far);
        w.expire(ms(12_345 + HORIZON - 1), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.deadline(1), Some(far));
    }

    proptest! {
        /// Against a sorted-map model: every timer fires exactly once, at the
        /// first expire whose time reaches its deadline, and poll_timeout never
        /// reports a time later than the earliest deadline.
        #[test]
        fn matches_model(
            start in prop::sample::select(vec![0u64, (1 << 36) - 2_000_000, (1 << 42) - 2_000_000]),
            ops in prop::collection::vec((0u32..32, 0u64..200_000, any::<bool>(), 0u64..50_000), 1..300),
        ) {
            // Starting near 2^36 or 2^42 ticks, the run crosses the top
            // level's boundaries.
            let mut w = TimerWheel::new();
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = start;
            let mut fired = Vec::new();
            w.expire(ms(now), &mut fired);
            for (key, delta, cancel, advance) in ops {
                if cancel {
                    w.set(key, None);
                    model.remove(&key);
                } else {
                    w.set(key, Some(ms(now + delta)));
                    model.insert(key, now + delta);
                }
                if let Some(earliest) = model.values().min() {
                    prop_assert!(w.poll_timeout().unwrap() <= ms(*earliest));
                }
                now += advance;
                fired.clear();
                w.expire(ms(now), &mut fired);
                fired.sort_unstable();
                let mut due: Vec<u32> = model.iter().filter(|(_, &d)| d <= now).map(|(&k, _)| k).collect();
                due.sort_unstable();
                prop_assert_eq!(&fired, &due);
                model.retain(|_, d| *d > now);
                prop_assert_eq!(w.len(), model.len());
            }
        }
    }
}
