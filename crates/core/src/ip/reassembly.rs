//! The table both IP versions reassemble in: datagrams in progress found by
//! key, their data in chunks of one bounded arena, a fixed lifetime each.
//!
//! What is the same for IPv4 (RFC 791) and IPv6 (RFC 8200 §4.5) lives here:
//! the slots and the keyed map, the arena and its free chunks, the end-of-data
//! rules, storing a fragment's bytes, assembling the whole, expiry and
//! release. What differs stays with each version, in its `Meta`: what is kept
//! of fragment zero, and how an overlap is found (IPv4's block bitmap, IPv6's
//! bounded list of pieces).
//!
//! Memory is allocated once, on the first fragment, and never grown: the
//! slots, the map, the arena and the buffer a datagram is assembled in. A
//! stack that never sees a fragment pays nothing.

use crate::hash::{KeyedMap, KeyedState};
use crate::time::{Duration, Instant};
use core::hash::Hash;

/// The most data (IPv4) or payload (IPv6) one datagram carries.
pub(crate) const MAX_DATA: usize = u16::MAX as usize;
/// Fragment data is held in chunks of this many bytes from the shared arena:
/// small enough that a 576-byte fragment wastes little, large enough that the
/// per-datagram chunk map stays small.
pub(crate) const CHUNK: usize = 512;
const CHUNKS_PER_DATAGRAM: usize = MAX_DATA.div_ceil(CHUNK);
const NO_CHUNK: u32 = u32::MAX;

/// What a version keeps of a datagram beside its data; reset to its default
/// when a slot takes a new datagram.
pub(crate) trait Meta: Default {
    /// The bytes that go before the data in the assembled packet (fragment
    /// zero's header, or its unfragmentable part); empty until it comes.
    fn head(&self) -> &[u8];
}

/// Why a datagram is abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abandon {
    /// Its fragments overlap or disagree about where it ends.
    Overlap,
    /// The arena (or the version's own bound) has no room for it.
    Memory,
}

/// One datagram being reassembled.
pub(crate) struct Datagram<K, M> {
    live: bool,
    pub(crate) key: K,
    deadline: Instant,
    /// Data bytes held; fragments never overlap, so this is the sum of their lengths.
    pub(crate) received: usize,
    /// The data length, known once the last fragment has arrived.
    pub(crate) total: Option<usize>,
    /// The furthest end of data seen, to catch a last fragment that ends too early.
    pub(crate) max_end: usize,
    /// Arena chunk holding data bytes `[i * CHUNK, (i + 1) * CHUNK)`, or `NO_CHUNK`.
    chunks: [u32; CHUNKS_PER_DATAGRAM],
    pub(crate) meta: M,
}

impl<K, M> Datagram<K, M> {
    /// Copies data bytes `[offset, offset + out.len())` (all present) out of `arena`.
    pub(crate) fn copy_data(&self, arena: &[u8], offset: usize, out: &mut [u8]) {
        for_each_piece(&self.chunks, offset, out.len(), |a, d| out[d].copy_from_slice(&arena[a]));
    }

    /// Whether data bytes at `offset` are exactly `data` (all present).
    pub(crate) fn same_bytes(&self, arena: &[u8], offset: usize, data: &[u8]) -> bool {
        let mut same = true;
        for_each_piece(&self.chunks, offset, data.len(), |a, d| same &= arena[a] == data[d]);
        same
    }
}

/// Datagrams in reassembly, with their bounded memory.
pub(crate) struct Table<K, M> {
    max_datagrams: usize,
    memory: usize,
    timeout: Duration,
    hash_key: u64,
    assembled_len: usize,
    /// Everything below is empty until the first fragment arrives.
    slots: Vec<Datagram<K, M>>,
    free_slots: Vec<u32>,
    by_key: KeyedMap<K, u32>,
    arena: Vec<u8>,
    free_chunks: Vec<u32>,
    assembled: Vec<u8>,
    /// The earliest deadline among live datagrams.
    next_deadline: Option<Instant>,
}

impl<K: Copy + Eq + Hash + Default, M: Meta> Table<K, M> {
    /// At most `max_datagrams` at once, `memory` bytes of data in all, each
    /// for `timeout` from its first fragment; complete ones are assembled in
    /// a buffer of `assembled_len` bytes.
    pub(crate) fn new(
        max_datagrams: usize,
        memory: usize,
        timeout: Duration,
        hash_key: u64,
        assembled_len: usize,
    ) -> Table<K, M> {
        Table {
            max_datagrams: max_datagrams.min(u32::MAX as usize),
            memory,
            timeout,
            hash_key,
            assembled_len,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_key: KeyedMap::with_hasher(KeyedState::new(hash_key)),
            arena: Vec::new(),
            free_chunks: Vec::new(),
            assembled: Vec::new(),
            next_deadline: None,
        }
    }

    /// The one allocation, on the first fragment.
    fn allocate(&mut self) {
        let n = self.max_datagrams;
        let chunks = (self.memory / CHUNK).min(NO_CHUNK as usize);
        self.slots = (0..n)
            .map(|_| Datagram {
                live: false,
                key: K::default(),
                deadline: Instant::ZERO,
                received: 0,
                total: None,
                max_end: 0,
                chunks: [NO_CHUNK; CHUNKS_PER_DATAGRAM],
                meta: M::default(),
            })
            .collect();
        self.free_slots = (0..n as u32).rev().collect();
        // Twice the room needed (and two more), so that a table churned by
        // inserts and removals is always cleaned in place, never regrown.
        self.by_key = KeyedMap::with_capacity_and_hasher(2 * n + 2, KeyedState::new(self.hash_key));
        self.arena = vec![0; chunks * CHUNK];
        self.free_chunks = (0..chunks as u32).rev().collect();
        self.assembled = vec![0; self.assembled_len];
    }

    /// Datagrams in progress.
    pub(crate) fn datagrams(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Arena bytes holding fragment data now (never above the memory limit).
    pub(crate) fn bytes_held(&self) -> usize {
        self.arena.len() - self.free_chunks.len() * CHUNK
    }

    /// When [`Table::expire`] next has work; `None` when no datagram waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The slot of the datagram `key` names, if it is in progress.
    pub(crate) fn find(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The slot of `key`'s datagram, taking a free one for a new datagram;
    /// `None` when the table is full (nothing is evicted, so a flood cannot
    /// push out a datagram that is nearly complete).
    pub(crate) fn find_or_create(&mut self, now: Instant, key: K) -> Option<u32> {
        if let Some(&slot) = self.by_key.get(&key) {
            return Some(slot);
        }
        if self.slots.is_empty() && self.max_datagrams > 0 {
            self.allocate();
        }
        let slot = self.free_slots.pop()?;
        let deadline = now + self.timeout;
        let d = &mut self.slots[slot as usize];
        d.live = true;
        d.key = key;
        d.deadline = deadline;
        d.received = 0;
        d.total = None;
        d.max_end = 0;
        d.meta = M::default();
        self.by_key.insert(key, slot);
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |t| t.min(deadline)));
        Some(slot)
    }

    pub(crate) fn datagram(&self, slot: u32) -> &Datagram<K, M> {
        &self.slots[slot as usize]
    }

    pub(crate) fn datagram_mut(&mut self, slot: u32) -> &mut Datagram<K, M> {
        &mut self.slots[slot as usize]
    }

    /// The arena the datagrams' data is in (for [`Datagram::same_bytes`]).
    pub(crate) fn arena(&self) -> &[u8] {
        &self.arena
    }

    /// The end-of-data rules for a fragment ending at `end`: a last fragment
    /// fixes the end, and a second, different end, or data already beyond
    /// it (Linux's rule too), means the fragments contradict each other.
    pub(crate) fn check_end(&mut self, slot: u32, end: usize, last: bool) -> Result<(), Abandon> {
        let d = &mut self.slots[slot as usize];
        if last {
            if d.total.is_some_and(|t| t != end) || d.max_end > end {
                return Err(Abandon::Overlap);
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            return Err(Abandon::Overlap);
        }
        Ok(())
    }

    /// Hold `data` at `offset` (already known not to overlap), taking the
    /// chunks it needs: `Err(Memory)` when the arena has too few.
    pub(crate) fn store(&mut self, slot: u32, offset: usize, data: &[u8]) -> Result<(), Abandon> {
        let d = &mut self.slots[slot as usize];
        let end = offset + data.len();
        if !data.is_empty() {
            let range = offset / CHUNK..=(end - 1) / CHUNK;
            let needed = d.chunks[range.clone()].iter().filter(|&&c| c == NO_CHUNK).count();
            if needed > self.free_chunks.len() {
                return Err(Abandon::Memory);
            }
            for c in &mut d.chunks[range] {
                if *c == NO_CHUNK {
                    *c = self.free_chunks.pop().expect("counted above");
                }
            }
            let arena = &mut self.arena;
            for_each_piece(&d.chunks, offset, data.len(), |a, o| arena[a].copy_from_slice(&data[o]));
        }
        d.received += data.len();
        d.max_end = d.max_end.max(end);
        Ok(())
    }

    /// Whether the datagram has its head and all of its data.
    pub(crate) fn complete(&self, slot: u32) -> bool {
        let d = &self.slots[slot as usize];
        !d.meta.head().is_empty() && d.total.is_some_and(|t| d.received == t)
    }

    /// Copies a complete datagram's head and data into the assembly buffer
    /// and releases it; returns the buffer and the whole length, for the
    /// version to patch its header fields.
    pub(crate) fn assemble(&mut self, slot: u32) -> (&mut [u8], usize) {
        let d = &self.slots[slot as usize];
        let head = d.meta.head();
        let len = head.len() + d.received;
        self.assembled[..head.len()].copy_from_slice(head);
        d.copy_data(&self.arena, 0, &mut self.assembled[head.len()..len]);
        self.release(slot);
        (&mut self.assembled[..len], len)
    }

    /// The buffer a complete datagram was assembled in, lent out so the
    /// stack can be borrowed while the datagram is delivered; give it back
    /// with [`Table::restore_assembled`].
    pub(crate) fn take_assembled(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.assembled)
    }

    pub(crate) fn restore_assembled(&mut self, buffer: Vec<u8>) {
        self.assembled = buffer;
    }

    #[cfg(test)]
    pub(crate) fn assembled(&self) -> &[u8] {
        &self.assembled
    }

    #[cfg(test)]
    pub(crate) fn earliest_live_deadline(&self) -> Option<Instant> {
        self.slots.iter().filter(|d| d.live).map(|d| d.deadline).min()
    }

    /// Forget a datagram and return its chunks.
    pub(crate) fn release(&mut self, slot: u32) {
        let d = &mut self.slots[slot as usize];
        if !d.live {
            return;
        }
        d.live = false;
        for c in &mut d.chunks {
            if *c != NO_CHUNK {
                self.free_chunks.push(*c);
                *c = NO_CHUNK;
            }
        }
        self.by_key.remove(&d.key);
        self.free_slots.push(slot);
        if self.next_deadline == Some(d.deadline) {
            self.next_deadline = self.slots.iter().filter(|d| d.live).map(|d| d.deadline).min();
        }
    }

    /// Abandon every datagram whose time is up at `now`; `expired` sees each
    /// (with the arena its data is in) before it goes.
    pub(crate) fn expire(&mut self, now: Instant, mut expired: impl FnMut(&Datagram<K, M>, &[u8])) {
        if self.next_deadline.is_none_or(|t| t > now) {
            return;
        }
        for slot in 0..self.slots.len() {
            let d = &self.slots[slot];
            if !d.live || d.deadline > now {
                continue;
            }
            expired(d, &self.arena);
            self.release(slot as u32);
        }
    }
}

/// Visit the arena pieces behind data bytes `[offset, offset + len)`:
/// `f(arena_range, data_range)`.
fn for_each_piece(
    chunks: &[u32],
    offset: usize,
    len: usize,
    mut f: impl FnMut(core::ops::Range<usize>, core::ops::Range<usize>),
) {
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let within = pos % CHUNK;
        let n = (CHUNK - within).min(end - pos);
        let base = chunks[pos / CHUNK] as usize * CHUNK + within;
        f(base..base + n, pos - offset..pos - offset + n);
        pos += n;
    }
}
