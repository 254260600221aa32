//! The stack's buffer pool: fixed-size chunks that every connection's send
//! and receive buffers borrow while they hold bytes and give back as soon as
//! those bytes are acknowledged or read.
//!
//! One pool per stack (that is, per core): no locks, no sharing. Chunks are
//! allocated on first need, up to the limit, and then recycled through a free
//! list, so a connection that comes and goes, or a bulk transfer in steady
//! state, allocates nothing. An idle connection holds no chunk at all.
//!
//! The pool is passed to the engine explicitly (`on_segment`, `send`,
//! `recv`, `read_payload`, `release_buffers`): a connection only stores chunk
//! numbers. A connection dropped without `release_buffers` leaks its chunks
//! from the pool's point of view; [`BufferPool::in_use`] makes that visible
//! (the scale test checks it returns to its idle value).
//!
//! When the pool is exhausted, `send` accepts less (possibly nothing:
//! `SendError::Full`), and a receiving connection drops the bytes it cannot
//! store (counted as `DropReason::NoBuffer`; the peer retransmits). The
//! receive window is clamped to what the pool can still give when it is
//! advertised, see `Connection::window_to_advertise`.
//!
//! Memory goes back after a load: [`BufferPool::trim`], called on every
//! stack poll, frees the storage of spare chunks beyond the larger of the
//! configured floor and the most chunks in use during the last
//! [`TRIM_PERIOD`] (the hysteresis: a load that comes back within a period
//! finds its chunks), at most [`TRIM_BATCH`] per call. A freed chunk keeps
//! its number; its storage is allocated again when it is next taken.

use super::rack::SentLog;
use super::seq::SeqNumber;
use crate::time::{Duration, Instant};
use core::cell::RefCell;

/// RACK transmit logs kept for reuse. A request/response connection's
/// flight drains after every response and its log goes back here, so the
/// next flight (of this or any connection) takes one without allocating;
/// an idle connection still holds none. Beyond this many, a drained log is
/// freed: the cache is bounded by the number of flights in progress at once,
/// not by the number of connections.
const MAX_SPARE_LOGS: usize = 256;

/// How long the pool remembers its peak use before it gives spare storage
/// back.
pub const TRIM_PERIOD: Duration = Duration::from_secs(1);
/// Chunks whose storage one [`BufferPool::trim`] call frees at most.
pub const TRIM_BATCH: usize = 256;

/// Chunk number; `NO_CHUNK` marks an empty page of a buffer.
pub(crate) type ChunkId = u32;
pub(crate) const NO_CHUNK: ChunkId = u32::MAX;

/// Pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Chunks handed out.
    pub taken: u64,
    /// Chunks given back.
    pub returned: u64,
    /// Requests refused because the pool was at its limit.
    pub exhausted: u64,
}

/// Chunks of `chunk_size` bytes, at most `limit` of them.
pub struct BufferPool {
    chunk_size: usize,
    /// `chunk_size` is `1 << chunk_shift`: rings split positions with a
    /// shift and a mask, not a division, on every read and write.
    chunk_shift: u32,
    limit: usize,
    /// Chunk storage by number; empty (no allocation) for the numbers in `bare`.
    chunks: Vec<Box<[u8]>>,
    /// Spare chunks with storage.
    free: Vec<ChunkId>,
    /// Spare chunk numbers whose storage was given back.
    bare: Vec<ChunkId>,
    /// Chunks whose storage the pool keeps however idle it is.
    floor: usize,
    /// The most chunks in use since the current trim period began.
    peak: usize,
    /// When the next trim may free storage.
    trim_at: Instant,
    stats: PoolStats,
    /// A `RefCell` because logs are taken on the transmit path, which holds
    /// the pool shared (the payload is copied out of it while a segment is
    /// built); they are given back with the pool held exclusively. Boxed
    /// because a connection holds its log as a box: handing one over moves
    /// a pointer, not the 1.5 KiB log.
    #[allow(clippy::vec_box)]
    spare_logs: RefCell<Vec<Box<SentLog>>>,
}

impl core::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufferPool")
            .field("chunk_size", &self.chunk_size)
            .field("limit", &self.limit)
            .field("allocated", &self.chunks.len())
            .field("in_use", &self.in_use())
            .field("stats", &self.stats)
            .finish()
    }
}

impl BufferPool {
    /// A pool of `chunk_size`-byte chunks (a power of two) holding at most
    /// `limit_bytes` (rounded down to whole chunks). Nothing is allocated
    /// until a buffer needs it.
    pub fn new(chunk_size: usize, limit_bytes: usize) -> BufferPool {
        assert!(chunk_size.is_power_of_two(), "chunk size must be a power of two");
        let limit = (limit_bytes / chunk_size).min(NO_CHUNK as usize);
        BufferPool {
            chunk_size,
            chunk_shift: chunk_size.trailing_zeros(),
            limit,
            chunks: Vec::new(),
            free: Vec::new(),
            bare: Vec::new(),
            floor: 0,
            peak: 0,
            trim_at: Instant::ZERO,
            stats: PoolStats::default(),
            spare_logs: RefCell::new(Vec::new()),
        }
    }

    /// The pool for connections configured with `cfg`
    /// ([`super::TcpConfig::buffer_chunk_size`], `buffer_pool_limit`).
    pub fn for_config(cfg: &super::TcpConfig) -> BufferPool {
        let mut pool = BufferPool::new(cfg.buffer_chunk_size(), cfg.buffer_pool_limit);
        pool.set_floor(cfg.buffer_pool_floor);
        pool
    }

    /// Keep storage for `bytes` (whole chunks) however idle the pool is.
    pub fn set_floor(&mut self, bytes: usize) {
        self.floor = (bytes / self.chunk_size).min(self.limit);
    }

    /// Bytes in one chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }
    /// The largest buffer this pool's chunks can back: a buffer is a ring of
    /// at most 16 chunks.
    pub fn largest_buffer(&self) -> usize {
        self.chunk_size * PAGES
    }
    /// The most chunks the pool will hand out at once.
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// Chunks held by buffers now.
    pub fn in_use(&self) -> usize {
        self.chunks.len() - self.free.len() - self.bare.len()
    }
    /// Chunks that can still be taken.
    pub fn available(&self) -> usize {
        self.limit - self.in_use()
    }
    /// Chunks that data waiting to be sent may not take: an eighth of the
    /// pool (at least one chunk), kept for receiving. Without it, two peers
    /// whose pools fill with queued sends both advertise a zero window and
    /// neither can ever send again (the sequence fuzzer found that with
    /// small pools; the same holds for a full pool shared by many
    /// connections).
    pub fn send_reserve(&self) -> usize {
        if self.limit >= 2 {
            (self.limit / 8).max(1)
        } else {
            0
        }
    }
    /// Chunk storage allocated so far (in use or free), in bytes.
    pub fn allocated_bytes(&self) -> usize {
        (self.chunks.len() - self.bare.len()) * self.chunk_size
    }

    /// Give back the storage of spare chunks beyond the floor and the
    /// recent peak, at most `TRIM_BATCH` (256); see the module docs. Returns
    /// when it next has work (`None`: nothing to give back).
    pub fn trim(&mut self, now: Instant) -> Option<Instant> {
        self.peak = self.peak.max(self.in_use());
        // Nothing spare, or nothing above the floor: no work, and no wake-up
        // (an idle stack must not tick once a period).
        if self.free.is_empty() || self.chunks.len() - self.bare.len() <= self.floor {
            return None;
        }
        if now < self.trim_at {
            return Some(self.trim_at);
        }
        let keep = self.floor.max(self.peak);
        let stored = self.chunks.len() - self.bare.len();
        let mut n = stored.saturating_sub(keep).min(self.free.len()).min(TRIM_BATCH);
        let batch_full = n == TRIM_BATCH;
        while n > 0 {
            let Some(id) = self.free.pop() else { break };
            self.chunks[id as usize] = Box::default();
            self.bare.push(id);
            n -= 1;
        }
        if batch_full && self.chunks.len() - self.bare.len() > keep && !self.free.is_empty() {
            // More to give back: the next poll goes on, within this period.
            return Some(now);
        }
        self.peak = self.in_use();
        self.trim_at = now + TRIM_PERIOD;
        (self.chunks.len() - self.bare.len() > self.floor && !self.free.is_empty()).then_some(self.trim_at)
    }
    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// A blank RACK transmit log starting at `base`, reused when one is spare.
    pub(crate) fn take_log(&self, base: SeqNumber) -> Box<SentLog> {
        match self.spare_logs.borrow_mut().pop() {
            Some(mut log) => {
                log.reset(base);
                log
            }
            None => Box::new(SentLog::new(base)),
        }
    }

    /// A drained transmit log, kept for the next flight (up to a bound).
    pub(crate) fn give_log(&mut self, log: Box<SentLog>) {
        let spare = self.spare_logs.get_mut();
        if spare.len() < MAX_SPARE_LOGS {
            spare.push(log);
        }
    }

    pub(crate) fn take(&mut self) -> Option<ChunkId> {
        if let Some(id) = self.free.pop() {
            self.stats.taken += 1;
            return Some(id);
        }
        if let Some(id) = self.bare.pop() {
            self.chunks[id as usize] = vec![0u8; self.chunk_size].into_boxed_slice();
            self.stats.taken += 1;
            return Some(id);
        }
        if self.chunks.len() >= self.limit {
            self.stats.exhausted += 1;
            return None;
        }
        self.chunks.push(vec![0u8; self.chunk_size].into_boxed_slice());
        self.stats.taken += 1;
        Some((self.chunks.len() - 1) as ChunkId)
    }

    pub(crate) fn give(&mut self, id: ChunkId) {
        debug_assert!((id as usize) < self.chunks.len() && !self.free.contains(&id));
        self.stats.returned += 1;
        self.free.push(id);
    }

    pub(crate) fn chunk(&self, id: ChunkId) -> &[u8] {
        &self.chunks[id as usize]
    }

    pub(crate) fn chunk_mut(&mut self, id: ChunkId) -> &mut [u8] {
        &mut self.chunks[id as usize]
    }
}

/// `pos % cap` for the positions rings compute (a position below the
/// capacity plus an offset or count of at most the capacity): one compare
/// and subtract instead of a division; the division stays as a fallback.
fn wrap(pos: usize, cap: usize) -> usize {
    if pos < cap {
        pos
    } else if pos - cap < cap {
        pos - cap
    } else {
        pos % cap
    }
}

/// Pages per buffer: a buffer's capacity is at most `PAGES` chunks.
pub(crate) const PAGES: usize = 16;

/// A ring of `capacity` bytes whose storage is `PAGES` optional chunks:
/// ring position `p` lives in page `p / chunk_size`. A page is taken from
/// the pool when a byte is written into it and given back when no live byte
/// is left in it. The owner says which bytes are live (`advance`).
#[derive(Debug)]
pub(crate) struct ChunkRing {
    pages: [ChunkId; PAGES],
    capacity: u32,
    /// Ring position of offset 0.
    head: u32,
}

impl ChunkRing {
    pub(crate) fn new(capacity: usize) -> ChunkRing {
        ChunkRing { pages: [NO_CHUNK; PAGES], capacity: capacity.clamp(1, u32::MAX as usize) as u32, head: 0 }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Chunks held now.
    // Out of line on purpose: on its own it compiles to a few vector
    // compares, inlined into the window computation it became a scalar
    // loop over the 16 pages (callgrind: +250 instructions per exchange).
    #[inline(never)]
    pub(crate) fn chunks_held(&self) -> usize {
        self.pages.iter().filter(|&&c| c != NO_CHUNK).count()
    }

    fn pos(&self, offset: usize) -> usize {
        wrap(self.head as usize + offset, self.capacity())
    }

    /// Writes `data` at `offset` (which, with `data`, must lie within the
    /// capacity), taking pages as needed but leaving `keep` chunks in the
    /// pool. Returns how many leading bytes were written: fewer than
    /// `data.len()` only when the pool ran dry (down to `keep`).
    pub(crate) fn write(&mut self, offset: usize, data: &[u8], pool: &mut BufferPool, keep: usize) -> usize {
        let (cs, shift) = (pool.chunk_size(), pool.chunk_shift);
        let mut done = 0;
        while done < data.len() {
            let pos = self.pos(offset + done);
            let page = pos >> shift;
            if page >= PAGES {
                break; // a capacity this pool's chunks cannot back
            }
            let within = pos & (cs - 1);
            let n = (data.len() - done).min(cs - within).min(self.capacity() - pos);
            if self.pages[page] == NO_CHUNK {
                if pool.available() <= keep {
                    pool.stats.exhausted += 1;
                    break;
                }
                match pool.take() {
                    Some(c) => self.pages[page] = c,
                    None => break,
                }
            }
            pool.chunk_mut(self.pages[page])[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        done
    }

    /// Copies the bytes at `offset..offset + dst.len()` into `dst`.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8], pool: &BufferPool) {
        let (cs, shift) = (pool.chunk_size(), pool.chunk_shift);
        let mut done = 0;
        while done < dst.len() {
            let pos = self.pos(offset + done);
            let (page, within) = (pos >> shift, pos & (cs - 1));
            let n = (dst.len() - done).min(cs - within).min(self.capacity() - pos);
            match self.pages.get(page) {
                Some(&c) if c != NO_CHUNK => dst[done..done + n].copy_from_slice(&pool.chunk(c)[within..within + n]),
                // Never happens for live bytes; keep the output defined.
                _ => dst[done..done + n].fill(0),
            }
            done += n;
        }
    }

    /// Drops the first `n` bytes: offset `n` becomes offset 0. `live` bytes
    /// from the new offset 0 are still in use; every page holding none of
    /// them goes back to the pool. With `live == 0` the ring is empty and
    /// restarts at position 0.
    pub(crate) fn advance(&mut self, n: usize, live: usize, pool: &mut BufferPool) {
        if live == 0 {
            self.release(pool);
            return;
        }
        if n == 0 {
            return;
        }
        let (cs, shift) = (pool.chunk_size(), pool.chunk_shift);
        let cap = self.capacity();
        let old = self.head as usize;
        self.head = wrap(old + n, cap) as u32;
        // Pages the dropped bytes touched, in ring order.
        let first = old >> shift;
        let last = wrap(old + n.min(cap) - 1, cap) >> shift;
        let pages = (cap + cs - 1) >> shift;
        let mut page = first;
        loop {
            if page < PAGES && self.pages[page] != NO_CHUNK && !self.page_live(page, live, cs) {
                pool.give(self.pages[page]);
                self.pages[page] = NO_CHUNK;
            }
            if page == last {
                break;
            }
            page += 1;
            if page == pages {
                page = 0;
            }
        }
    }

    /// Whether page `page` holds any of the `live` bytes from offset 0.
    fn page_live(&self, page: usize, live: usize, cs: usize) -> bool {
        let cap = self.capacity();
        if live >= cap {
            return true;
        }
        let (ps, pe) = (page * cs, ((page + 1) * cs).min(cap));
        let (ls, le) = (self.head as usize, self.head as usize + live);
        let overlaps = |a: usize, b: usize| a < pe && ps < b;
        overlaps(ls, le.min(cap)) || (le > cap && overlaps(0, le - cap))
    }

    /// Gives back every page holding none of the `live` bytes from offset 0
    /// (bytes written beyond them are forgotten).
    pub(crate) fn trim(&mut self, live: usize, pool: &mut BufferPool) {
        if live == 0 {
            self.release(pool);
            return;
        }
        let cs = pool.chunk_size();
        for page in 0..PAGES {
            if self.pages[page] != NO_CHUNK && !self.page_live(page, live, cs) {
                pool.give(self.pages[page]);
                self.pages[page] = NO_CHUNK;
            }
        }
    }

    /// Gives every page back; the ring is empty.
    pub(crate) fn release(&mut self, pool: &mut BufferPool) {
        // Every drained buffer comes here: find the held pages with one
        // vectorised pass over the array, then visit only those.
        let mut held = self.pages.iter().enumerate().fold(0u32, |m, (i, &c)| m | u32::from(c != NO_CHUNK) << i);
        while held != 0 {
            let page = held.trailing_zeros() as usize;
            held &= held - 1;
            pool.give(self.pages[page]);
            self.pages[page] = NO_CHUNK;
        }
        self.head = 0;
    }
}

/// A ring's bytes out of any pool, page by page: what a buffer carries
/// while its connection moves to another stack (every stack has its own
/// pool, so chunk numbers mean nothing there).
#[derive(Debug, Default)]
pub(crate) struct DetachedPages {
    /// (page, the chunk's bytes) for every page the ring held.
    pages: Vec<(usize, Box<[u8]>)>,
    chunk_size: usize,
}

impl ChunkRing {
    /// Copy every held page out of `pool` and give its chunk back; the
    /// ring keeps its positions and holds no chunk afterwards. Allocates:
    /// a connection moves rarely, never per packet.
    pub(crate) fn detach(&mut self, pool: &mut BufferPool) -> DetachedPages {
        let mut pages = Vec::new();
        for (page, id) in self.pages.iter_mut().enumerate() {
            if *id != NO_CHUNK {
                pages.push((page, Box::from(pool.chunk(*id))));
                pool.give(*id);
                *id = NO_CHUNK;
            }
        }
        DetachedPages { pages, chunk_size: pool.chunk_size() }
    }

    /// Put detached pages back, into chunks of `pool`. Gives them back
    /// untouched when the pool's chunks are of another size or it has too
    /// few to spare.
    pub(crate) fn attach(&mut self, d: DetachedPages, pool: &mut BufferPool) -> Result<(), DetachedPages> {
        if d.chunk_size != pool.chunk_size() || pool.available() < d.pages.len() {
            return Err(d);
        }
        for (page, bytes) in d.pages {
            let id = pool.take().expect("checked: the pool has this many chunks to spare");
            pool.chunk_mut(id).copy_from_slice(&bytes);
            self.pages[page] = id;
        }
        Ok(())
    }
}

impl DetachedPages {
    /// Chunks these pages need.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_and_go_with_the_bytes() {
        let mut pool = BufferPool::new(1024, 64 * 1024);
        let mut r = ChunkRing::new(4096);
        assert_eq!(r.write(0, &[1u8; 1500], &mut pool, 0), 1500);
        assert_eq!(pool.in_use(), 2);
        // Bytes 1000..1500 stay live: both pages stay.
        r.advance(1000, 500, &mut pool);
        assert_eq!(pool.in_use(), 2);
        // Bytes 1100..1500: page 0 goes, page 1 stays.
        r.advance(100, 400, &mut pool);
        assert_eq!(pool.in_use(), 1);
        let mut out = [0u8; 400];
        r.read(0, &mut out, &pool);
        assert_eq!(out, [1u8; 400]);
        r.advance(400, 0, &mut pool);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.stats().taken, pool.stats().returned);
    }

    #[test]
    fn wraps_around_the_ring() {
        let mut pool = BufferPool::new(1024, 64 * 1024);
        let mut r = ChunkRing::new(3000);
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        assert_eq!(r.write(0, &data, &mut pool, 0), 2500);
        r.advance(2000, 500, &mut pool);
        assert_eq!(r.write(500, &data[..2000], &mut pool, 0), 2000);
        let mut out = vec![0u8; 2500];
        r.read(0, &mut out, &pool);
        assert_eq!(&out[..500], &data[2000..2500]);
        assert_eq!(&out[500..], &data[..2000]);
        r.advance(2500, 0, &mut pool);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_dry_pool_writes_less() {
        let mut pool = BufferPool::new(1024, 2048);
        let mut r = ChunkRing::new(8192);
        assert_eq!(r.write(0, &[7u8; 4000], &mut pool, 0), 2048);
        assert_eq!(pool.available(), 0);
        assert_eq!(pool.stats().exhausted, 1);
        r.release(&mut pool);
        assert_eq!(pool.available(), 2);
    }
}
