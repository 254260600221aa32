//! The data path of one virtqueue in guest memory: taking frames out of a
//! guest's transmit ring and writing frames into its receive ring, with
//! every descriptor checked against the memory table. `virtio-queue` walks
//! the available and used rings (and EVENT_IDX); the chain walk here adds
//! what a hostile guest needs: a chain that ends early (a loop, a `next`
//! past the table), an address or length outside the mapped memory, a
//! descriptor of the wrong direction or a frame too long is refused and
//! counted, its buffer handed back empty, and nothing else happens.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::control::{feature, Control};

/// Why a descriptor chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A buffer outside the memory the frontend shared (or past its end).
    BadAddress,
    /// The chain ended early: a loop longer than the ring, or a `next`
    /// index past the descriptor table, or a head index past it.
    BadChain,
    /// A descriptor of the wrong direction (writable in a transmit chain,
    /// read-only in a receive chain), or a receive buffer too small for the header.
    BadDirection,
    /// More bytes than a frame can have.
    TooLong,
}

/// One started and enabled ring.
pub(crate) struct Vring {
    pub queue: Queue,
    call: Option<File>,
    /// Used entries added since the guest was last notified.
    pending_used: bool,
}

impl Vring {
    /// The ring `index` as `ctl` configures it, if it is started, enabled
    /// and valid in the memory table; `Err` with a reason if its addresses
    /// do not fit in the memory.
    pub fn load(ctl: &Control, index: usize) -> Result<Option<Vring>, &'static str> {
        let v = &ctl.vrings[index];
        let Some(mem) = ctl.mem.as_deref() else { return Ok(None) };
        if !(v.started && v.enabled) || v.size == 0 {
            return Ok(None);
        }
        let size = u64::from(v.size);
        let (Some(desc), Some(avail), Some(used)) = (
            ctl.va_to_gpa(v.desc, 16 * size),
            ctl.va_to_gpa(v.avail, 6 + 2 * size),
            ctl.va_to_gpa(v.used, 6 + 8 * size),
        ) else {
            return Err("ring addresses outside the memory table");
        };
        let mut queue = Queue::new(super::control::MAX_RING).map_err(|_| "ring")?;
        queue.set_size(v.size);
        queue.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        queue.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        queue.set_event_idx(ctl.acked & feature::EVENT_IDX != 0);
        queue.set_ready(true);
        if !queue.is_valid(mem) {
            return Err("ring addresses misaligned or outside the memory table");
        }
        queue.set_next_avail(v.next_avail);
        let used_idx = queue.used_idx(mem, std::sync::atomic::Ordering::Acquire).map_err(|_| "used ring")?;
        queue.set_next_used(used_idx.0);
        let call = v.call.as_ref().and_then(|f| f.try_clone().ok());
        Ok(Some(Vring { queue, call, pending_used: false }))
    }

    /// Take the next frame the guest sent into `buf` (header included).
    /// `Ok(None)`: the ring is empty; `Err`: the chain was refused (and
    /// handed back).
    pub fn pop(&mut self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> Result<Option<usize>, ChainError> {
        let Some(mut chain) = self.queue.pop_descriptor_chain(mem) else { return Ok(None) };
        let head = chain.head_index();
        let (mut len, mut n, mut more) = (0usize, 0usize, false);
        let mut err = None;
        for d in &mut chain {
            n += 1;
            more = d.has_next();
            if d.is_write_only() {
                err = Some(ChainError::BadDirection);
                break;
            }
            let l = d.len() as usize;
            let Some(dst) = buf.get_mut(len..len + l) else {
                err = Some(ChainError::TooLong);
                break;
            };
            if mem.read_slice(dst, d.addr()).is_err() {
                err = Some(ChainError::BadAddress);
                break;
            }
            len += l;
        }
        if err.is_none() && (more || n == 0) {
            err = Some(ChainError::BadChain);
        }
        // A head past the table cannot be handed back; the ring moves on.
        if self.queue.add_used(mem, head, 0).is_ok() {
            self.pending_used = true;
        }
        match err {
            None => Ok(Some(len)),
            Some(e) => Err(e),
        }
    }

    /// Write `hdr` then `frame` into the guest's receive buffers: one chain,
    /// or with `mrg` as many as it takes (the header's `num_buffers` says
    /// how many). `Ok(false)`: not enough buffers now (nothing consumed).
    pub fn push(&mut self, mem: &GuestMemoryMmap, hdr: &[u8], frame: &[u8], mrg: bool) -> Result<bool, ChainError> {
        self.push_parts(mem, hdr, &[frame], mrg)
    }

    /// As [`Vring::push`], the frame given as `parts` in order (a gather
    /// list: a forwarder's rewritten head and the rest, read where it is).
    pub fn push_parts(
        &mut self,
        mem: &GuestMemoryMmap,
        hdr: &[u8],
        parts: &[&[u8]],
        mrg: bool,
    ) -> Result<bool, ChainError> {
        const MAX_BUFS: usize = 64;
        let start = self.queue.next_avail();
        let mut heads = [(0u16, 0u32); MAX_BUFS];
        let mut nbufs = 0usize;
        let total = hdr.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut done = 0usize;
        let mut hdr_at = None;
        let mut err = None;
        'chains: while done < total {
            if nbufs == MAX_BUFS || (nbufs == 1 && !mrg) {
                err = Some(ChainError::TooLong);
                break;
            }
            let Some(mut chain) = self.queue.pop_descriptor_chain(mem) else {
                // The guest has not given enough buffers: put them back.
                self.queue.set_next_avail(start);
                return Ok(false);
            };
            let head = chain.head_index();
            let (mut written, mut n, mut more) = (0u32, 0usize, false);
            for d in &mut chain {
                n += 1;
                more = d.has_next();
                if !d.is_write_only() {
                    err = Some(ChainError::BadDirection);
                } else if hdr_at.is_none() && (d.len() as usize) < hdr.len() {
                    err = Some(ChainError::BadDirection);
                } else {
                    hdr_at.get_or_insert(d.addr());
                    let room = (d.len() as usize).min(total - done);
                    if let Err(e) = write_span(mem, d.addr(), hdr, parts, done, room) {
                        err = Some(e);
                    }
                    done += room;
                    written += room as u32;
                }
                if err.is_some() || done == total {
                    break;
                }
            }
            if err.is_none() && done < total && (more || n == 0) {
                err = Some(ChainError::BadChain);
            }
            heads[nbufs] = (head, written);
            nbufs += 1;
            if err.is_some() {
                break 'chains;
            }
        }
        if err.is_some() {
            // Hand every buffer taken back empty: the frame is dropped.
            for &(head, _) in &heads[..nbufs] {
                let _ = self.queue.add_used(mem, head, 0);
            }
            self.pending_used |= nbufs > 0;
            return Err(err.unwrap_or(ChainError::BadChain));
        }
        if mrg {
            let Some(at) = hdr_at else { return Err(ChainError::BadChain) };
            let count = (nbufs as u16).to_le_bytes();
            let _ = mem.write_slice(&count, at.unchecked_add(10));
        }
        for &(head, len) in &heads[..nbufs] {
            let _ = self.queue.add_used(mem, head, len);
        }
        self.pending_used = true;
        Ok(true)
    }

    /// Tell the guest about used buffers, if it asked to be told (EVENT_IDX
    /// or the no-interrupt flag): one eventfd write.
    pub fn notify(&mut self, mem: &GuestMemoryMmap) {
        if !std::mem::take(&mut self.pending_used) {
            return;
        }
        // `needs_notification` reads `used_event` only; without EVENT_IDX
        // the driver's VRING_AVAIL_F_NO_INTERRUPT says it (virtio 1.1,
        // 2.6.7.2: the device should not notify while it is set).
        if !self.queue.event_idx_enabled() {
            let flags = mem.load::<u16>(GuestAddress(self.queue.avail_ring()), std::sync::atomic::Ordering::Acquire);
            if flags.is_ok_and(|f| u16::from_le(f) & 1 != 0) {
                return;
            }
        }
        if self.queue.needs_notification(mem).unwrap_or(true) {
            if let Some(call) = &mut self.call {
                let _ = call.write(&1u64.to_ne_bytes());
            }
        }
    }

    /// After the ring was found empty: ask the guest to kick us on its next
    /// frame. `true` if frames arrived meanwhile (poll again).
    pub fn arm(&mut self, mem: &GuestMemoryMmap) -> bool {
        self.queue.enable_notification(mem).unwrap_or(false)
    }

    /// Ask the guest not to kick us (we poll the ring, or never wait on it).
    /// With EVENT_IDX the `avail_event` left behind does it.
    pub fn disarm(&mut self, mem: &GuestMemoryMmap) {
        let _ = self.queue.disable_notification(mem);
    }

    /// Whether the guest has posted a buffer we have not taken (one read of
    /// its avail index).
    pub fn has_avail(&self, mem: &GuestMemoryMmap) -> bool {
        self.queue
            .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
            .is_ok_and(|idx| idx.0 != self.queue.next_avail())
    }

    /// The avail index ran past the ring (a broken or hostile guest): the
    /// ring cannot be served.
    pub fn broken(&self, mem: &GuestMemoryMmap) -> bool {
        match self.queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
            Ok(idx) => (idx - std::num::Wrapping(self.queue.next_avail())).0 > self.queue.size(),
            Err(_) => true,
        }
    }
}

/// Write bytes `[from, from + len)` of `hdr ++ frame` at `addr`.
fn write_span(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
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
            mem.write_slice(&piece[lo - start..hi - start], at).map_err(|_| ChainError::BadAddress)?;
            at = at.checked_add((hi - lo) as u64).ok_or(ChainError::BadAddress)?;
        }
        start += piece.len();
        if start >= end {
            break;
        }
    }
    Ok(())
}

/// The memory of a connection, shared by its rings.
pub(crate) type Memory = Option<Arc<GuestMemoryMmap>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window of header ++ parts lands where it belongs, whichever
    /// pieces it starts and ends in.
    #[test]
    fn write_span_gathers_header_and_parts() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4096)]).unwrap();
        let (hdr, parts): (&[u8], [&[u8]; 3]) = (&[1, 2], [&[3, 4, 5], &[], &[6, 7]]);
        let whole: Vec<u8> = hdr.iter().chain(parts.iter().flat_map(|p| p.iter())).copied().collect();
        for from in 0..whole.len() {
            for len in 0..=whole.len() - from {
                mem.write_slice(&[0xee; 16], GuestAddress(100)).unwrap();
                write_span(&mem, GuestAddress(100), hdr, &parts, from, len).unwrap();
                let mut got = [0u8; 16];
                mem.read_slice(&mut got, GuestAddress(100)).unwrap();
                assert_eq!(&got[..len], &whole[from..from + len], "from {from} len {len}");
                assert!(got[len..].iter().all(|&b| b == 0xee), "from {from} len {len}: wrote past the span");
            }
        }
    }
}
