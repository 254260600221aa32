//! The data path of one split virtqueue in guest memory: taking frames out
//! of a guest's transmit ring and writing frames into its receive ring, with
//! every descriptor checked against the memory table. A chain that ends
//! early (a loop, a `next` past the table), an address or length outside
//! the mapped memory, a descriptor of the wrong direction or a frame too
//! long is refused and counted, its buffer handed back empty, and nothing
//! else happens.
//!
//! The rings are read and written here through host pointers into the
//! mapped memory rather than through `virtio-queue` and `vm-memory`'s
//! accessors: a profile of the reflector showed those (a region lookup and
//! a slice iterator per access, the used index published with a fence per
//! buffer) taking about three quarters of its time. Buffers are found in a
//! table of the regions (a few compares), the avail index is read once per
//! batch of entries, and the used index is published once per batch
//! ([`Vring::notify`], at the end of every receive pass and every flush).
//! `vm-memory` still maps the memory (see `control`) and copies the rare
//! buffer that straddles two regions. The buffers of the next few entries
//! seen are prefetched ([`Vring::prefetch_ahead`]), so that the transfers
//! of their lines from the guest's CPU overlap instead of each frame
//! waiting for its own.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::ptr::{read_volatile, write_volatile};
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::control::{feature, Control};

/// Descriptor flags (virtio 1.1, 2.7.5).
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
const DESC_INDIRECT: u16 = 4;
/// Most buffers one received frame may take (with MRG_RXBUF).
const MAX_BUFS: usize = 64;
/// Used entries published at least this often (see [`Vring::add_used`]).
/// 8, not 32: a polling guest takes its frames in smaller, earlier
/// batches (reflector, 64 B on two queues: 12.5-13.4 Mpps against
/// 12.3-13.3 with 16 and 11.8-12.6 with 32, taking turns).
const PUBLISH_EVERY: u16 = 8;
/// Entries seen in the avail ring, ahead of the one taken, whose buffers
/// are asked for early (see [`Vring::prefetch_ahead`]).
const AHEAD: u16 = 4;
/// Of each of those buffers, the first this many bytes at most.
const AHEAD_BYTES: u32 = 640;
/// `used.flags`: the device asks the driver not to kick it.
const USED_NO_NOTIFY: u16 = 1;
/// `avail.flags`: the driver asks the device not to interrupt it.
const AVAIL_NO_INTERRUPT: u16 = 1;

/// Why a descriptor chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A buffer outside the memory the frontend shared (or past its end).
    BadAddress,
    /// The chain ended early: a loop longer than the ring, or a `next`
    /// index past the descriptor table, or a head index past it (or an
    /// indirect table, which this backend does not offer).
    BadChain,
    /// A descriptor of the wrong direction (writable in a transmit chain,
    /// read-only in a receive chain), or a receive buffer too small for the header.
    BadDirection,
    /// More bytes than a frame can have.
    TooLong,
}

/// The frontend's memory as host addresses: its regions, each a guest
/// physical range and where it is mapped here.
pub(crate) struct GuestMap {
    /// Keeps the mappings alive as long as the pointers below are used.
    mem: Arc<GuestMemoryMmap>,
    /// Start (guest physical), length, host address.
    regions: Vec<(u64, u64, *mut u8)>,
    /// The region that held the last buffer looked up: tried first, as a
    /// guest's buffers mostly come from one pool (DPDK's memory is often
    /// in many regions).
    last: Cell<usize>,
}

// SAFETY: the pointers are into mappings `mem` owns and keeps alive; the
// memory is shared with the guest anyway, and is only accessed through
// volatile or atomic operations and copies of plain bytes.
unsafe impl Send for GuestMap {}

impl GuestMap {
    pub fn new(mem: Arc<GuestMemoryMmap>) -> GuestMap {
        let regions = mem
            .iter()
            .filter_map(|r| Some((r.start_addr().0, r.len(), mem.get_host_address(r.start_addr()).ok()?)))
            .collect();
        GuestMap { mem, regions, last: Cell::new(0) }
    }

    /// Where `[gpa, gpa + len)` is mapped, if one region holds all of it.
    #[inline]
    fn host(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let within = |&(start, size, host): &(u64, u64, *mut u8)| {
            let off = gpa.checked_sub(start)?;
            // SAFETY: `off + len` is within the region's mapping.
            (off.checked_add(len)? <= size).then(|| unsafe { host.add(off as usize) })
        };
        if let Some(p) = self.regions.get(self.last.get()).and_then(within) {
            return Some(p);
        }
        let (i, p) = self.regions.iter().enumerate().find_map(|(i, r)| Some((i, within(r)?)))?;
        self.last.set(i);
        Some(p)
    }

    /// Copy guest memory at `gpa` into `dst`; false if it is not all mapped.
    fn read(&self, gpa: u64, dst: &mut [u8]) -> bool {
        match self.host(gpa, dst.len() as u64) {
            // SAFETY: `host` checked that the range is mapped; the guest may
            // write it meanwhile, which only changes the bytes copied.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) },
            None => return self.mem.read_slice(dst, GuestAddress(gpa)).is_ok(),
        }
        true
    }

    /// Copy `src` into guest memory at `gpa`; false if it is not all mapped.
    fn write(&self, gpa: u64, src: &[u8]) -> bool {
        match self.host(gpa, src.len() as u64) {
            // SAFETY: as in `read`; the buffer is the guest's to give.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) },
            None => return self.mem.write_slice(src, GuestAddress(gpa)).is_ok(),
        }
        true
    }
}

/// One descriptor, read once (the guest may change the table under us).
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// One started and enabled split ring.
pub(crate) struct Vring {
    map: GuestMap,
    /// Entries in the ring (a power of two).
    size: u16,
    /// The descriptor table (16 bytes each).
    desc: *const u8,
    /// `flags`, `idx`, `ring[size]`, `used_event`.
    avail: *const u8,
    /// `flags`, `idx`, `ring[size]` of (`id`, `len`), `avail_event`.
    used: *mut u8,
    event_idx: bool,
    next_avail: u16,
    /// The avail index as last read: the entries before it need no read.
    avail_seen: u16,
    /// The first entry (at or after `next_avail`) whose buffer was not
    /// prefetched yet.
    ahead: u16,
    /// Bytes of the last frame written into the ring (header included):
    /// how much of a buffer to be written is prefetched.
    last_written: u32,
    /// Where the next used entry goes (published with [`Vring::notify`]).
    next_used: u16,
    /// The used index the guest can see.
    published_used: u16,
    /// The used index when the guest was last considered for a call.
    signalled_used: u16,
    call: Option<File>,
    /// Scratch for [`Vring::push_parts`]: the chains one frame took.
    heads: Vec<(u16, u32)>,
}

// SAFETY: the ring pointers are into `map`'s mappings (see `GuestMap`).
unsafe impl Send for Vring {}

impl Vring {
    /// The ring `index` as `ctl` configures it, if it is started, enabled
    /// and valid in the memory table; `Err` with a reason if its addresses
    /// do not fit in the memory.
    pub fn load(ctl: &Control, index: usize) -> Result<Option<Vring>, &'static str> {
        let v = &ctl.vrings[index];
        let Some(mem) = ctl.mem.clone() else { return Ok(None) };
        if !(v.started && v.enabled) || v.size == 0 {
            return Ok(None);
        }
        let size = u64::from(v.size);
        let gpa = |va: u64, len: u64| ctl.va_to_gpa(va, len).ok_or("ring addresses outside the memory table");
        let areas = [gpa(v.desc, 16 * size)?, gpa(v.avail, 6 + 2 * size)?, gpa(v.used, 6 + 8 * size)?];
        let call = v.call.as_ref().and_then(|f| f.try_clone().ok());
        let event_idx = ctl.acked & feature::EVENT_IDX != 0;
        Vring::new(GuestMap::new(mem), v.size, areas, event_idx, v.next_avail, call).map(Some)
    }

    /// The ring of `size` entries (a power of two, as SET_VRING_NUM checks)
    /// whose descriptor table, avail and used rings are at the guest
    /// addresses `areas`, taking from `next_avail` on.
    fn new(
        map: GuestMap,
        size: u16,
        areas: [u64; 3],
        event_idx: bool,
        next_avail: u16,
        call: Option<File>,
    ) -> Result<Vring, &'static str> {
        if !size.is_power_of_two() {
            return Err("ring size not a power of two");
        }
        // Each part must sit whole in one region, aligned as virtio asks
        // (2.7: 16, 2 and 4 bytes), so a ring access is one pointer offset.
        let n = u64::from(size);
        let mut host = [std::ptr::null_mut(); 3];
        for (i, (len, align)) in [(16 * n, 16), (6 + 2 * n, 2), (6 + 8 * n, 4)].into_iter().enumerate() {
            if !areas[i].is_multiple_of(align) {
                return Err("ring addresses misaligned");
            }
            host[i] = map.host(areas[i], len).ok_or("ring addresses outside the memory table")?;
        }
        // Carry on from where the used ring is (a restarted backend).
        // SAFETY: the used ring was just checked (mapped, 4-aligned).
        let used_idx =
            u16::from_le(unsafe { AtomicU16::from_ptr(host[2].add(2) as *mut u16) }.load(Ordering::Acquire));
        Ok(Vring {
            map,
            size,
            desc: host[0],
            avail: host[1],
            used: host[2],
            event_idx,
            next_avail,
            avail_seen: next_avail,
            ahead: next_avail,
            last_written: 128,
            next_used: used_idx,
            published_used: used_idx,
            signalled_used: used_idx,
            call,
            heads: Vec::with_capacity(MAX_BUFS),
        })
    }

    /// The next entry of the available ring to take.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    fn avail_idx(&self) -> u16 {
        // SAFETY: `avail` was checked at load (mapped, 2-aligned).
        u16::from_le(unsafe { AtomicU16::from_ptr(self.avail.add(2) as *mut u16) }.load(Ordering::Acquire))
    }

    /// The head of the next chain the guest posted, if any. An avail index
    /// more than a ring ahead (see [`Vring::broken`]) reads as empty.
    fn next_head(&mut self) -> Option<u16> {
        if self.next_avail == self.avail_seen {
            let idx = self.avail_idx();
            if idx == self.next_avail || idx.wrapping_sub(self.next_avail) > self.size {
                return None;
            }
            self.avail_seen = idx;
        }
        self.prefetch_ahead();
        let head = self.avail_entry(self.next_avail);
        self.next_avail = self.next_avail.wrapping_add(1);
        Some(head)
    }

    /// The head in avail entry `at` (an entry before `avail_seen`).
    #[inline]
    fn avail_entry(&self, at: u16) -> u16 {
        let slot = usize::from(at & (self.size - 1));
        // SAFETY: `slot < size`, inside the avail ring checked at load; the
        // acquire load of the index orders this read after it.
        u16::from_le(unsafe { read_volatile(self.avail.add(4 + 2 * slot) as *const u16) })
    }

    /// Ask for the buffers of the next `AHEAD` entries seen before they
    /// are needed. Each is a line the guest's CPU wrote last: taken one at
    /// a time, every frame waits for its transfer in turn (most of a
    /// reflector's time when transfers are slow); asked for together, they
    /// overlap. A prefetch never faults; a head past the table or a buffer
    /// outside the memory is skipped here and refused when it is taken.
    #[inline]
    fn prefetch_ahead(&mut self) {
        let next = self.next_avail;
        let known = self.avail_seen.wrapping_sub(next);
        // A position behind `next` (the ring went back: see `push_parts`)
        // starts again from `next`.
        if self.ahead.wrapping_sub(next) > known {
            self.ahead = next;
        }
        let end = next.wrapping_add(known.min(AHEAD));
        while self.ahead != end {
            let head = self.avail_entry(self.ahead);
            self.ahead = self.ahead.wrapping_add(1);
            if head >= self.size {
                continue;
            }
            let d = self.desc(head);
            // A frame to read: its lines, up to `AHEAD_BYTES` (the hardware
            // prefetcher follows a long copy). A buffer to write: as many
            // as the last frame written took (its length is its room, not
            // what will be written; a stream's frames are much alike), the
            // first, the header's, to be read only (see `push_whole`).
            let write = d.flags & DESC_WRITE != 0;
            let len = if write { d.len.min(self.last_written) } else { d.len }.min(AHEAD_BYTES);
            if let Some(p) = self.map.host(d.addr, u64::from(len)) {
                // Every line from the one `p` is in (a prefetch is harmless
                // wherever it points).
                let skew = p as usize & 63;
                for off in (0..skew + len as usize).step_by(64) {
                    prefetch(p.wrapping_sub(skew).wrapping_add(off), write && off > 0);
                }
            }
        }
    }

    /// Descriptor `i` (`i < size`).
    fn desc(&self, i: u16) -> Desc {
        debug_assert!(i < self.size);
        // SAFETY: `i < size`: inside the table checked at load (16-aligned).
        unsafe {
            let p = self.desc.add(16 * usize::from(i));
            Desc {
                addr: u64::from_le(read_volatile(p as *const u64)),
                len: u32::from_le(read_volatile(p.add(8) as *const u32)),
                flags: u16::from_le(read_volatile(p.add(12) as *const u16)),
                next: u16::from_le(read_volatile(p.add(14) as *const u16)),
            }
        }
    }

    /// Hand chain `head` back with `len` bytes written (seen by the guest
    /// at the next [`Vring::notify`]). A head past the table cannot be
    /// handed back; the ring moves on without it.
    fn add_used(&mut self, head: u16, len: u32) {
        if head >= self.size {
            return;
        }
        let slot = usize::from(self.next_used & (self.size - 1));
        // SAFETY: `slot < size`, inside the used ring checked at load.
        unsafe {
            let p = self.used.add(4 + 8 * slot);
            write_volatile(p as *mut u32, u32::from(head).to_le());
            write_volatile(p.add(4) as *mut u32, len.to_le());
            if slot & 7 == 0 {
                // Ask for the used ring's line eight entries on, which the
                // guest read last, before we write it (see `prefetch_ahead`).
                prefetch(self.used.add(4 + 8 * ((slot + 8) & usize::from(self.size - 1))), true);
            }
        }
        self.next_used = self.next_used.wrapping_add(1);
        if self.next_used.wrapping_sub(self.published_used) >= PUBLISH_EVERY {
            // A guest that polls reuses its buffers this much sooner: a
            // whole ring taken before publishing would make it wait for us
            // to finish the lot, and then us for it.
            self.publish();
        }
    }

    /// Let the guest see the used entries added so far.
    fn publish(&mut self) {
        // SAFETY: `used` was checked at load (mapped, 4-aligned).
        unsafe { AtomicU16::from_ptr(self.used.add(2) as *mut u16) }.store(self.next_used.to_le(), Ordering::Release);
        self.published_used = self.next_used;
    }

    /// Walk the chain from `head`, giving each descriptor to `each` until it
    /// says stop (`Ok(true)`) or the chain ends; a chain that loops or
    /// points past the table is `BadChain`, and so is an indirect table.
    fn walk(&self, head: u16, mut each: impl FnMut(&Desc) -> Result<bool, ChainError>) -> Result<(), ChainError> {
        let mut at = head;
        // A chain of more descriptors than the table holds has a loop.
        for _ in 0..self.size {
            if at >= self.size {
                return Err(ChainError::BadChain);
            }
            let d = self.desc(at);
            if d.flags & DESC_INDIRECT != 0 {
                return Err(ChainError::BadChain);
            }
            if each(&d)? || d.flags & DESC_NEXT == 0 {
                return Ok(());
            }
            at = d.next;
        }
        Err(ChainError::BadChain)
    }

    /// Take the next frame the guest sent into `buf` (header included).
    /// `Ok(None)`: the ring is empty; `Err`: the chain was refused (and
    /// handed back).
    pub fn pop(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ChainError> {
        let Some(head) = self.next_head() else { return Ok(None) };
        if let Some(len) = self.pop_whole(head, buf) {
            self.add_used(head, 0);
            return Ok(Some(len));
        }
        let mut len = 0usize;
        let r = self.walk(head, |d| {
            if d.flags & DESC_WRITE != 0 {
                return Err(ChainError::BadDirection);
            }
            let dst = buf.get_mut(len..len + d.len as usize).ok_or(ChainError::TooLong)?;
            if !self.map.read(d.addr, dst) {
                return Err(ChainError::BadAddress);
            }
            len += d.len as usize;
            Ok(false)
        });
        self.add_used(head, 0);
        r.map(|()| Some(len))
    }

    /// The usual transmit chain, one read-only descriptor that fits `buf`,
    /// copied into `buf` (its length); `None` for
    /// anything else, which [`Vring::pop`]'s walk takes or refuses.
    #[inline]
    fn pop_whole(&self, head: u16, buf: &mut [u8]) -> Option<usize> {
        if head >= self.size {
            return None;
        }
        let d = self.desc(head);
        if d.flags & (DESC_NEXT | DESC_WRITE | DESC_INDIRECT) != 0 {
            return None;
        }
        let dst = buf.get_mut(..d.len as usize)?;
        self.map.read(d.addr, dst).then_some(dst.len())
    }

    /// The usual receive chain: `head`'s first descriptor is writable and
    /// holds the whole frame inside one region. Writes `hdr` (with
    /// `num_buffers` 1 under `mrg`) and `parts` there and returns true;
    /// false for anything else, which [`Vring::push_parts`]'s walk takes or
    /// refuses. Saves the walk's per-piece bookkeeping (a third of a
    /// reflected frame's instructions went to it).
    #[inline]
    fn push_whole(&mut self, head: u16, hdr: &[u8], parts: &[&[u8]], total: usize, mrg: bool) -> bool {
        if head >= self.size || hdr.len() > 12 {
            return false;
        }
        let d = self.desc(head);
        if d.flags & (DESC_WRITE | DESC_INDIRECT) != DESC_WRITE || (d.len as usize) < total {
            return false;
        }
        let Some(at) = self.map.host(d.addr, total as u64) else { return false };
        let hl = hdr.len();
        let mut h = [0u8; 12];
        h[..hl].copy_from_slice(hdr);
        if mrg && hl == 12 {
            h[10..].copy_from_slice(&1u16.to_le_bytes());
        }
        // The header is written only where it differs from what the buffer
        // holds. A driver that reuses its buffers (DPDK's mbufs) mostly
        // finds the same header there; a line left alone stays in its CPU's
        // cache, where it reads `num_buffers` next, instead of crossing
        // from ours (DPDK's vhost spares it the same way). Its prefetch
        // asked for that line to be read, not written (`prefetch_ahead`).
        let mut was = [0u8; 12];
        // SAFETY: `host` checked `[at, at + total)` is mapped, and the
        // pieces (header first) add up to `total`; the buffer is the
        // guest's to give, and what it writes there meanwhile is its own.
        let mut at = unsafe {
            std::ptr::copy_nonoverlapping(at, was.as_mut_ptr(), hl);
            if was[..hl] != h[..hl] {
                std::ptr::copy_nonoverlapping(h.as_ptr(), at, hl);
            }
            at.add(hl)
        };
        for piece in parts {
            // SAFETY: as above.
            unsafe {
                std::ptr::copy_nonoverlapping(piece.as_ptr(), at, piece.len());
                at = at.add(piece.len());
            }
        }
        self.add_used(head, total as u32);
        true
    }

    /// Write `hdr` then `frame` into the guest's receive buffers: one chain,
    /// or with `mrg` as many as it takes (the header's `num_buffers` says
    /// how many). `Ok(false)`: not enough buffers now (nothing consumed).
    pub fn push(&mut self, hdr: &[u8], frame: &[u8], mrg: bool) -> Result<bool, ChainError> {
        self.push_parts(hdr, &[frame], mrg)
    }

    /// As [`Vring::push`], the frame given as `parts` in order (a gather
    /// list: a forwarder's rewritten head and the rest, read where it is).
    pub fn push_parts(&mut self, hdr: &[u8], parts: &[&[u8]], mrg: bool) -> Result<bool, ChainError> {
        let start = self.next_avail;
        let total = hdr.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        self.last_written = total as u32;
        let Some(head) = self.next_head() else { return Ok(false) };
        if self.push_whole(head, hdr, parts, total, mrg) {
            return Ok(true);
        }
        // Not the usual case: take the chains from `head` on, walking each.
        self.next_avail = start;
        // Chains taken and bytes written in each (reused: no zeroing or
        // allocation per frame).
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        let mut done = 0usize;
        let mut hdr_at = None;
        let mut err = None;
        while done < total {
            if heads.len() == MAX_BUFS || (heads.len() == 1 && !mrg) {
                err = Some(ChainError::TooLong);
                break;
            }
            let Some(head) = self.next_head() else {
                // The guest has not given enough buffers: put them back.
                self.next_avail = start;
                self.heads = heads;
                return Ok(false);
            };
            let mut written = 0u32;
            let r = self.walk(head, |d| {
                if d.flags & DESC_WRITE == 0 || (hdr_at.is_none() && (d.len as usize) < hdr.len()) {
                    return Err(ChainError::BadDirection);
                }
                hdr_at.get_or_insert(d.addr);
                let room = (d.len as usize).min(total - done);
                write_span(&self.map, d.addr, hdr, parts, done, room)?;
                done += room;
                written += room as u32;
                Ok(done == total)
            });
            heads.push((head, written));
            if let Err(e) = r {
                err = Some(e);
                break;
            }
        }
        let result = match (err, hdr_at) {
            (Some(e), _) => {
                // Hand every buffer taken back empty: the frame is dropped.
                for &(head, _) in &heads {
                    self.add_used(head, 0);
                }
                Err(e)
            }
            (None, None) => Err(ChainError::BadChain),
            (None, Some(at)) => {
                if mrg {
                    // The header lies whole in the first buffer (checked above).
                    self.map.write(at.wrapping_add(10), &(heads.len() as u16).to_le_bytes());
                }
                for &(head, len) in &heads {
                    self.add_used(head, len);
                }
                Ok(true)
            }
        };
        self.heads = heads;
        result
    }

    /// Publish the used entries added since the last call and tell the
    /// guest of them, if it asked to be told (EVENT_IDX's `used_event`, or the
    /// no-interrupt flag): one eventfd write at most.
    pub fn notify(&mut self) {
        let (old, new) = (self.signalled_used, self.next_used);
        if old == new {
            return;
        }
        if self.published_used != new {
            self.publish();
        }
        self.signalled_used = new;
        // The index must be visible before we read whether the guest wants
        // to hear of it, or a guest going to sleep could miss it (2.7.10).
        fence(Ordering::SeqCst);
        let size = usize::from(self.size);
        let tell = if self.event_idx {
            // SAFETY: `used_event` follows the avail ring, checked at load.
            let event = u16::from_le(unsafe { read_volatile(self.avail.add(4 + 2 * size) as *const u16) });
            // vring_need_event: did the index just pass `used_event`?
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            // SAFETY: `avail.flags`, checked at load.
            u16::from_le(unsafe { read_volatile(self.avail as *const u16) }) & AVAIL_NO_INTERRUPT == 0
        };
        if tell {
            if let Some(call) = &mut self.call {
                let _ = call.write(&1u64.to_ne_bytes());
            }
        }
    }

    /// After the ring was found empty: ask the guest to kick us on its next
    /// frame. `true` if frames arrived meanwhile (poll again).
    pub fn arm(&mut self) -> bool {
        // SAFETY: `avail_event` follows the used ring, `used.flags` starts
        // it; both checked at load.
        unsafe {
            if self.event_idx {
                let at = self.used.add(4 + 8 * usize::from(self.size));
                write_volatile(at as *mut u16, self.next_avail.to_le());
            } else {
                write_volatile(self.used as *mut u16, 0);
            }
        }
        // The request must be visible before we look at the index again.
        fence(Ordering::SeqCst);
        self.avail_idx() != self.next_avail
    }

    /// Ask the guest not to kick us (we poll the ring, or never wait on it).
    /// With EVENT_IDX the `avail_event` left behind does it: the guest
    /// kicks when its index passes it, which it already has.
    pub fn disarm(&mut self) {
        if !self.event_idx {
            // SAFETY: `used.flags`, checked at load.
            unsafe { write_volatile(self.used as *mut u16, USED_NO_NOTIFY.to_le()) };
        }
    }

    /// Whether the guest has posted a buffer we have not taken.
    pub fn has_avail(&self) -> bool {
        self.avail_seen != self.next_avail || self.avail_idx() != self.next_avail
    }

    /// The avail index ran past the ring (a broken or hostile guest): the
    /// ring cannot be served.
    pub fn broken(&self) -> bool {
        self.avail_idx().wrapping_sub(self.next_avail) > self.size
    }
}

/// Ask for the cache line at `p`, to be read or (`write`) written.
#[inline(always)]
fn prefetch(p: *const u8, write: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into registers and
    // never faults. `prefetchw` runs as a no-op on CPUs without it.
    unsafe {
        if write {
            std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
        } else {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, write);
}

/// Write bytes `[from, from + len)` of `hdr ++ frame` at `addr`.
fn write_span(
    map: &GuestMap,
    addr: u64,
    hdr: &[u8],
    parts: &[&[u8]],
    from: usize,
    len: usize,
) -> Result<(), ChainError> {
    let (mut at, end) = (addr, from + len);
    // Bytes `[from, end)` of hdr ++ parts, each piece where it lies.
    let mut start = 0usize;
    for piece in std::iter::once(hdr).chain(parts.iter().copied()) {
        let (lo, hi) = (start.max(from), (start + piece.len()).min(end));
        if lo < hi {
            if !map.write(at, &piece[lo - start..hi - start]) {
                return Err(ChainError::BadAddress);
            }
            at = at.checked_add((hi - lo) as u64).ok_or(ChainError::BadAddress)?;
        }
        start += piece.len();
        if start >= end {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "ring_hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    const SIZE: u16 = 8;
    const DESC: u64 = 0x0;
    const AVAIL: u64 = 0x1000;
    const USED: u64 = 0x2000;
    const BUFS: u64 = 0x4000;
    const MEM: usize = 0x10000;

    /// The driver's side of a split ring in a guest memory of its own.
    struct Driver {
        mem: Arc<GuestMemoryMmap>,
        avail_idx: u16,
    }

    impl Driver {
        fn new() -> Driver {
            let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
            Driver { mem, avail_idx: 0 }
        }

        fn ring(&self, event_idx: bool, call: Option<File>) -> Vring {
            Vring::new(GuestMap::new(Arc::clone(&self.mem)), SIZE, [DESC, AVAIL, USED], event_idx, 0, call).unwrap()
        }

        fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = GuestAddress(DESC + 16 * u64::from(i));
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            self.mem.write_slice(&d, at).unwrap();
        }

        /// Post the chain starting at descriptor `head`.
        fn post(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % SIZE);
            self.mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.set_avail_idx(self.avail_idx);
        }

        fn set_avail_idx(&self, idx: u16) {
            self.mem.write_obj(idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
        }

        fn used_idx(&self) -> u16 {
            self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
        }

        fn used(&self, i: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(i % SIZE);
            (self.mem.read_obj(GuestAddress(at)).unwrap(), self.mem.read_obj(GuestAddress(at + 4)).unwrap())
        }

        fn bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
            v
        }
    }

    #[test]
    fn a_chain_is_read_whole_and_handed_back_at_notify() {
        let mut drv = Driver::new();
        let mut ring = drv.ring(false, None);
        drv.mem.write_slice(&[1; 12], GuestAddress(BUFS)).unwrap();
        drv.mem.write_slice(&[2; 60], GuestAddress(BUFS + 0x100)).unwrap();
        drv.desc(3, BUFS, 12, DESC_NEXT, 5);
        drv.desc(5, BUFS + 0x100, 60, 0, 0);
        drv.post(3);
        assert!(ring.has_avail());
        let mut buf = [0u8; 2048];
        assert_eq!(ring.pop(&mut buf), Ok(Some(72)));
        assert_eq!(&buf[..12], &[1; 12]);
        assert_eq!(&buf[12..72], &[2; 60]);
        assert_eq!(ring.pop(&mut buf), Ok(None));
        // Published once per batch, not per buffer.
        assert_eq!(drv.used_idx(), 0);
        ring.notify();
        assert_eq!(drv.used_idx(), 1);
        assert_eq!(drv.used(0), (3, 0));
        // One descriptor (the usual chain) is read whole too; one longer
        // than the buffer is refused and handed back.
        drv.desc(6, BUFS + 0x100, 60, 0, 0);
        drv.post(6);
        assert_eq!(ring.pop(&mut buf[..100]), Ok(Some(60)));
        assert_eq!(&buf[..60], &[2; 60]);
        drv.post(6);
        assert_eq!(ring.pop(&mut buf[..59]), Err(ChainError::TooLong));
        ring.notify();
        assert_eq!([drv.used(1), drv.used(2)], [(6, 0), (6, 0)]);
    }

    #[test]
    fn a_long_batch_is_published_as_it_goes() {
        let mut drv = Driver::new();
        let mut ring = drv.ring(false, None);
        drv.desc(0, BUFS, 64, 0, 0);
        let mut buf = [0u8; 2048];
        for i in 0..PUBLISH_EVERY {
            drv.post(0);
            assert_eq!(ring.pop(&mut buf), Ok(Some(64)));
            let published = if i + 1 < PUBLISH_EVERY { 0 } else { PUBLISH_EVERY };
            assert_eq!(drv.used_idx(), published, "after {} buffers", i + 1);
        }
    }

    #[test]
    fn bad_chains_are_refused_handed_back_and_the_ring_goes_on() {
        let mut drv = Driver::new();
        let mut ring = drv.ring(false, None);
        let mut buf = [0u8; 256];
        let good = |drv: &mut Driver, ring: &mut Vring, buf: &mut [u8]| {
            drv.desc(7, BUFS, 64, 0, 0);
            drv.post(7);
            assert_eq!(ring.pop(buf), Ok(Some(64)));
        };
        // A loop: 0 -> 1 -> 0.
        drv.desc(0, BUFS, 10, DESC_NEXT, 1);
        drv.desc(1, BUFS, 10, DESC_NEXT, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadChain));
        good(&mut drv, &mut ring, &mut buf);
        // A `next` past the table.
        drv.desc(0, BUFS, 10, DESC_NEXT, SIZE);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadChain));
        // An address past the memory, and one that runs past its end.
        drv.desc(0, MEM as u64 + 0x1000, 10, 0, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadAddress));
        drv.desc(0, MEM as u64 - 4, 10, 0, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadAddress));
        // A writable buffer in a transmit chain; an indirect table.
        drv.desc(0, BUFS, 10, DESC_WRITE, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadDirection));
        drv.desc(0, BUFS, 16, DESC_INDIRECT, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadChain));
        // Longer than a frame can be.
        drv.desc(0, BUFS, 4096, 0, 0);
        drv.post(0);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::TooLong));
        good(&mut drv, &mut ring, &mut buf);
        // Every refused chain came back empty, in order.
        ring.notify();
        assert_eq!(drv.used_idx(), 9);
        assert_eq!(drv.used(1), (7, 0));
        assert_eq!(drv.used(7), (0, 0));
        assert_eq!(drv.used(8), (7, 0));
        // A head past the table cannot be handed back: the ring moves on.
        drv.post(SIZE + 3);
        assert_eq!(ring.pop(&mut buf), Err(ChainError::BadChain));
        good(&mut drv, &mut ring, &mut buf);
        ring.notify();
        assert_eq!(drv.used_idx(), 10);
    }

    #[test]
    fn a_frame_spreads_over_merged_buffers_or_waits_for_them() {
        let mut drv = Driver::new();
        let mut ring = drv.ring(false, None);
        for i in 0..3u16 {
            drv.desc(i, BUFS + 0x100 * u64::from(i), 32, DESC_WRITE, 0);
        }
        let hdr = [9u8; 12];
        let frame: Vec<u8> = (0..60).collect();
        // Two buffers posted, three needed: nothing is taken.
        drv.post(0);
        drv.post(1);
        assert_eq!(ring.push_parts(&hdr, &[&frame[..10], &frame[10..]], true), Ok(false));
        assert_eq!(ring.next_avail(), 0);
        drv.post(2);
        assert_eq!(ring.push_parts(&hdr, &[&frame[..10], &frame[10..]], true), Ok(true));
        ring.notify();
        assert_eq!(drv.used_idx(), 3);
        assert_eq!([drv.used(0), drv.used(1), drv.used(2)], [(0, 32), (1, 32), (2, 8)]);
        let mut got = drv.bytes(BUFS, 32);
        got.extend(drv.bytes(BUFS + 0x100, 32));
        got.extend(drv.bytes(BUFS + 0x200, 8));
        // num_buffers (header bytes 10..12) says three.
        assert_eq!(&got[..10], &hdr[..10]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3);
        assert_eq!(&got[12..], &frame[..]);
        // Without MRG_RXBUF a frame must fit one chain: refused, handed back.
        drv.post(0);
        assert_eq!(ring.push(&hdr, &frame, false), Err(ChainError::TooLong));
        // A read-only buffer in a receive chain.
        drv.desc(3, BUFS, 128, 0, 0);
        drv.post(3);
        assert_eq!(ring.push(&hdr, &frame, false), Err(ChainError::BadDirection));
        ring.notify();
        assert_eq!(drv.used_idx(), 5);
        assert_eq!(drv.used(3), (0, 0));
    }

    #[test]
    fn a_frame_that_fits_the_first_buffer_is_written_there_whole() {
        let mut drv = Driver::new();
        let mut ring = drv.ring(false, None);
        // A chain of two writable descriptors whose first holds it all.
        drv.desc(0, BUFS, 128, DESC_WRITE | DESC_NEXT, 1);
        drv.desc(1, BUFS + 0x100, 128, DESC_WRITE, 0);
        drv.desc(2, BUFS + 0x200, 128, DESC_WRITE, 0);
        drv.post(0);
        drv.post(2);
        let hdr = [9u8; 12];
        let frame: Vec<u8> = (0..60).collect();
        assert_eq!(ring.push_parts(&hdr, &[&frame[..12], &[], &frame[12..]], true), Ok(true));
        assert_eq!(ring.push_parts(&hdr[..10], &[&frame], false), Ok(true));
        ring.notify();
        assert_eq!([drv.used(0), drv.used(1)], [(0, 72), (2, 70)]);
        let got = drv.bytes(BUFS, 72);
        assert_eq!(&got[..10], &hdr[..10]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[12..], &frame[..]);
        assert_eq!(drv.bytes(BUFS + 0x200, 70), [&hdr[..10], &frame[..]].concat());
    }

    #[test]
    fn with_event_idx_the_guest_is_called_only_past_used_event() {
        let mut drv = Driver::new();
        // SAFETY: eventfd2 takes a count and flags; the File owns the result.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor, owned by nobody else.
        let call = unsafe { File::from_raw_fd(fd) };
        let reader = call.try_clone().unwrap();
        // The eventfd's count (0 when nothing was written: EAGAIN).
        let calls = || {
            let mut v = [0u8; 8];
            (&reader).read_exact(&mut v).map_or(0, |()| u64::from_ne_bytes(v))
        };
        let mut ring = drv.ring(true, Some(call));
        let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE));
        drv.desc(0, BUFS, 64, 0, 0);
        let mut buf = [0u8; 128];
        // used_event 0: the first used entry passes it.
        drv.post(0);
        ring.pop(&mut buf).unwrap();
        ring.notify();
        assert_eq!(calls(), 1);
        // used_event 4: entries 2 and 3 do not reach it, the fifth passes it.
        drv.mem.write_obj(4u16.to_le(), used_event).unwrap();
        for _ in 0..2 {
            drv.post(0);
            ring.pop(&mut buf).unwrap();
        }
        ring.notify();
        assert_eq!(calls(), 0);
        for _ in 0..2 {
            drv.post(0);
            ring.pop(&mut buf).unwrap();
        }
        ring.notify();
        assert_eq!(calls(), 1);
        // Arming writes avail_event where the guest looks for it.
        assert!(!ring.arm());
        let avail_event: u16 = drv.mem.read_obj(GuestAddress(USED + 4 + 8 * u64::from(SIZE))).unwrap();
        assert_eq!(avail_event, 5);
    }

    #[test]
    fn an_avail_index_more_than_a_ring_ahead_is_broken() {
        let drv = Driver::new();
        let mut ring = drv.ring(false, None);
        drv.set_avail_idx(SIZE + 1);
        assert_eq!(ring.pop(&mut [0u8; 64]), Ok(None));
        assert!(ring.broken());
        drv.set_avail_idx(SIZE);
        assert!(!ring.broken());
    }

    #[test]
    fn rings_outside_the_memory_or_misaligned_are_refused() {
        let drv = Driver::new();
        let map = || GuestMap::new(Arc::clone(&drv.mem));
        let far = MEM as u64 - 8;
        assert!(Vring::new(map(), SIZE, [far, AVAIL, USED], false, 0, None).is_err());
        assert!(Vring::new(map(), SIZE, [DESC + 8, AVAIL, USED], false, 0, None).is_err());
        assert!(Vring::new(map(), SIZE, [DESC, AVAIL + 1, USED], false, 0, None).is_err());
        assert!(Vring::new(map(), SIZE, [DESC, AVAIL, USED + 2], false, 0, None).is_err());
        assert!(Vring::new(map(), 6, [DESC, AVAIL, USED], false, 0, None).is_err());
    }

    /// Every window of header ++ parts lands where it belongs, whichever
    /// pieces it starts and ends in.
    #[test]
    fn write_span_gathers_header_and_parts() {
        let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4096)]).unwrap());
        let map = GuestMap::new(Arc::clone(&mem));
        let (hdr, parts): (&[u8], [&[u8]; 3]) = (&[1, 2], [&[3, 4, 5], &[], &[6, 7]]);
        let whole: Vec<u8> = hdr.iter().chain(parts.iter().flat_map(|p| p.iter())).copied().collect();
        for from in 0..whole.len() {
            for len in 0..=whole.len() - from {
                mem.write_slice(&[0xee; 16], GuestAddress(100)).unwrap();
                write_span(&map, 100, hdr, &parts, from, len).unwrap();
                let mut got = [0u8; 16];
                mem.read_slice(&mut got, GuestAddress(100)).unwrap();
                assert_eq!(&got[..len], &whole[from..from + len], "from {from} len {len}");
                assert!(got[len..].iter().all(|&b| b == 0xee), "from {from} len {len}: wrote past the span");
            }
        }
    }
}
