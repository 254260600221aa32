//! The memory an AF_XDP socket shares with the kernel: the UMEM (the frames
//! themselves) and four single-producer single-consumer rings of indices
//! into it.
//!
//! Each ring is a power-of-two array of entries with a producer and a
//! consumer counter (free-running `u32`s, masked on access) and a flags word.
//! We produce on the fill and TX rings and consume the RX and completion
//! rings; the kernel does the opposite. Like libbpf's `xsk.h`, each side
//! caches the other side's counter and reloads it (acquire) only when the
//! cache says the ring is full or empty, and publishes its own counter
//! (release) once per batch, so a batch of frames costs two atomic accesses,
//! not two per frame.

use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// A memory mapping, unmapped on drop.
pub(super) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// `len` bytes of anonymous memory, populated now so the kernel can pin
    /// it at UMEM registration without faulting.
    pub(super) fn anonymous(len: usize) -> io::Result<Mmap> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        Self::map(len, flags, -1, 0)
    }

    /// `len` bytes of a ring of socket `fd` at page offset `pgoff`.
    pub(super) fn ring(fd: i32, len: usize, pgoff: u64) -> io::Result<Mmap> {
        Self::map(len, libc::MAP_SHARED | libc::MAP_POPULATE, fd, pgoff as libc::off_t)
    }

    fn map(len: usize, flags: i32, fd: i32, off: libc::off_t) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel; nothing aliases it yet.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mmap { ptr, len })
    }

    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no borrow of it
        // outlives `self` (the rings and the UMEM hold it by value).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Where a ring's parts lie in its mapping (the kernel's `xdp_ring_offset`).
#[derive(Clone, Copy, Debug)]
pub(super) struct RingOffsets {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(o: libc::xdp_ring_offset) -> Self {
        RingOffsets { producer: o.producer, consumer: o.consumer, desc: o.desc, flags: o.flags }
    }
}

/// The raw parts of one ring inside memory someone else keeps mapped.
struct RawRing<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    size: u32,
}

impl<T: Copy> RawRing<T> {
    /// # Safety
    /// `base` points at a live mapping of at least `off.desc + size *
    /// size_of::<T>()` bytes laid out as `off` says (counters 4-aligned,
    /// entries aligned for `T`), which outlives the ring; `size` is a power
    /// of two.
    unsafe fn new(base: *mut u8, off: RingOffsets, size: u32) -> RawRing<T> {
        debug_assert!(size.is_power_of_two());
        let at = |o: u64| NonNull::new(base.add(o as usize)).expect("mapping is not null");
        RawRing {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            size,
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `new`'s contract: a live, aligned counter.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed)
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: the mask keeps the offset inside the `size` entries.
        unsafe { self.entries.as_ptr().add((index & (self.size - 1)) as usize) }
    }
}

/// A ring we produce on (fill, TX): reserve slots, write them, submit.
pub(super) struct ProducerRing<T> {
    raw: RawRing<T>,
    /// Our producer counter, ahead of the published one by what is written
    /// but not yet submitted.
    local_producer: u32,
    /// The kernel's consumer counter as last read, plus `size`: the producer
    /// may run up to here.
    cached_limit: u32,
    _map: Option<Mmap>,
    _entry: PhantomData<T>,
}

impl<T: Copy> ProducerRing<T> {
    /// A ring in `map` (which it keeps) laid out as `off`.
    ///
    /// # Safety
    /// As [`RawRing::new`], with `map` as the mapping.
    pub(super) unsafe fn in_mapping(map: Mmap, off: RingOffsets, size: u32) -> ProducerRing<T> {
        let raw = RawRing::new(map.as_ptr(), off, size);
        let mut ring = ProducerRing::from_raw(raw);
        ring._map = Some(map);
        ring
    }

    fn from_raw(raw: RawRing<T>) -> ProducerRing<T> {
        let local_producer = raw.producer().load(Ordering::Relaxed);
        let cached_limit = raw.consumer().load(Ordering::Acquire).wrapping_add(raw.size);
        ProducerRing { raw, local_producer, cached_limit, _map: None, _entry: PhantomData }
    }

    /// Slots free for writing, reading the kernel's counter only when the
    /// cached view has fewer than `want`.
    pub(super) fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_limit.wrapping_sub(self.local_producer);
        if free >= want {
            return free;
        }
        self.cached_limit = self.raw.consumer().load(Ordering::Acquire).wrapping_add(self.raw.size);
        self.cached_limit.wrapping_sub(self.local_producer)
    }

    /// Write `entry` into the next slot; `false` when the ring is full.
    /// The kernel sees it after [`submit`](Self::submit).
    pub(super) fn push(&mut self, entry: T) -> bool {
        if self.free(1) == 0 {
            return false;
        }
        // SAFETY: the slot lies between the kernel's consumer and our
        // producer + size, so the kernel does not read it until we submit.
        unsafe { self.raw.slot(self.local_producer).write(entry) };
        self.local_producer = self.local_producer.wrapping_add(1);
        true
    }

    /// Entries written since the last submit.
    pub(super) fn unsubmitted(&self) -> u32 {
        self.local_producer.wrapping_sub(self.raw.producer().load(Ordering::Relaxed))
    }

    /// Publish every written entry to the kernel (one release store).
    pub(super) fn submit(&mut self) {
        self.raw.producer().store(self.local_producer, Ordering::Release);
    }

    /// Entries submitted that the kernel has not consumed yet.
    pub(super) fn in_flight(&self) -> u32 {
        self.raw.producer().load(Ordering::Relaxed).wrapping_sub(self.raw.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks to be woken (a `sendto`/`recvfrom`) to process it.
    pub(super) fn needs_wakeup(&self) -> bool {
        self.raw.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    pub(super) fn size(&self) -> u32 {
        self.raw.size
    }
}

/// A ring we consume from (RX, completion): take entries, release them.
pub(super) struct ConsumerRing<T> {
    raw: RawRing<T>,
    /// Our consumer counter, ahead of the published one by what is read but
    /// not yet released.
    local_consumer: u32,
    /// The kernel's producer counter as last read.
    cached_producer: u32,
    _map: Option<Mmap>,
    _entry: PhantomData<T>,
}

impl<T: Copy> ConsumerRing<T> {
    /// A ring in `map` (which it keeps) laid out as `off`.
    ///
    /// # Safety
    /// As [`RawRing::new`], with `map` as the mapping.
    pub(super) unsafe fn in_mapping(map: Mmap, off: RingOffsets, size: u32) -> ConsumerRing<T> {
        let raw = RawRing::new(map.as_ptr(), off, size);
        let mut ring = ConsumerRing::from_raw(raw);
        ring._map = Some(map);
        ring
    }

    fn from_raw(raw: RawRing<T>) -> ConsumerRing<T> {
        let local_consumer = raw.consumer().load(Ordering::Relaxed);
        ConsumerRing { raw, local_consumer, cached_producer: local_consumer, _map: None, _entry: PhantomData }
    }

    /// Entries ready to take, reading the kernel's counter only when the
    /// cached view is empty.
    pub(super) fn ready(&mut self) -> u32 {
        if self.cached_producer == self.local_consumer {
            self.cached_producer = self.raw.producer().load(Ordering::Acquire);
        }
        self.cached_producer.wrapping_sub(self.local_consumer)
    }

    /// The next entry, if one is ready. Its slot stays ours until
    /// [`release`](Self::release).
    pub(super) fn pop(&mut self) -> Option<T> {
        if self.ready() == 0 {
            return None;
        }
        // SAFETY: the slot lies between our consumer and the kernel's
        // producer, which the acquire load made visible.
        let entry = unsafe { self.raw.slot(self.local_consumer).read() };
        self.local_consumer = self.local_consumer.wrapping_add(1);
        Some(entry)
    }

    /// Hand every taken slot back to the kernel (one release store).
    pub(super) fn release(&mut self) {
        self.raw.consumer().store(self.local_consumer, Ordering::Release);
    }
}

// SAFETY: the rings are plain memory plus counters; the device that owns them
// is used from one thread at a time, and the kernel side is synchronised by
// the atomics.
unsafe impl<T: Send> Send for ProducerRing<T> {}
unsafe impl<T: Send> Send for ConsumerRing<T> {}

/// A ring in ordinary memory with the kernel's side played by a test, for
/// the rings' tests and the queues' (`super::tests`).
#[cfg(test)]
pub(super) mod fake {
    use super::*;

    const OFF: RingOffsets = RingOffsets { producer: 0, consumer: 64, flags: 128, desc: 192 };

    /// The memory of one ring of `size` entries of `T`. Every access goes
    /// through the one raw pointer, as the kernel's does. The rings made
    /// from it must be dropped first (declare the `FakeRing` before them).
    pub struct FakeRing<T> {
        base: *mut u64,
        words: usize,
        size: u32,
        _entry: PhantomData<T>,
    }

    impl<T: Copy> FakeRing<T> {
        pub fn new(size: u32) -> FakeRing<T> {
            assert!(size.is_power_of_two() && std::mem::align_of::<T>() <= 8);
            let words = OFF.desc as usize / 8 + (size as usize * std::mem::size_of::<T>()).div_ceil(8);
            let base = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<u64>();
            FakeRing { base, words, size, _entry: PhantomData }
        }

        fn raw(&self) -> RawRing<T> {
            // SAFETY: the allocation holds the counters and `size` entries at `OFF`.
            unsafe { RawRing::new(self.base.cast(), OFF, self.size) }
        }

        /// Our side of a ring we produce on.
        pub fn producer(&self) -> ProducerRing<T> {
            ProducerRing::from_raw(self.raw())
        }

        /// Our side of a ring we consume from.
        pub fn consumer(&self) -> ConsumerRing<T> {
            ConsumerRing::from_raw(self.raw())
        }

        pub fn counter(&self, at: u64) -> u32 {
            // SAFETY: an aligned u32 inside the allocation.
            unsafe { self.base.cast::<u8>().add(at as usize).cast::<u32>().read() }
        }

        pub fn set_counter(&self, at: u64, v: u32) {
            // SAFETY: as above.
            unsafe { self.base.cast::<u8>().add(at as usize).cast::<u32>().write(v) }
        }

        pub fn entry(&self, i: u32) -> T {
            // SAFETY: the mask keeps the slot inside the allocation.
            unsafe { self.raw().slot(i).read() }
        }

        /// The kernel publishes `v` on a ring we consume; `false` when full.
        pub fn kernel_produce(&self, v: T) -> bool {
            let (prod, cons) = (self.counter(OFF.producer), self.counter(OFF.consumer));
            if prod.wrapping_sub(cons) == self.size {
                return false;
            }
            // SAFETY: a slot the consumer has released.
            unsafe { self.raw().slot(prod).write(v) };
            self.set_counter(OFF.producer, prod.wrapping_add(1));
            true
        }

        /// The kernel takes the next entry of a ring we produce on.
        pub fn kernel_consume(&self) -> Option<T> {
            let (prod, cons) = (self.counter(OFF.producer), self.counter(OFF.consumer));
            if prod == cons {
                return None;
            }
            let v = self.entry(cons);
            self.set_counter(OFF.consumer, cons.wrapping_add(1));
            Some(v)
        }

        pub fn set_need_wakeup(&self, on: bool) {
            self.set_counter(OFF.flags, if on { libc::XDP_RING_NEED_WAKEUP } else { 0 });
        }
    }

    impl<T> Drop for FakeRing<T> {
        fn drop(&mut self) {
            // SAFETY: the allocation `new` leaked, with its length.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.base, self.words)) });
        }
    }

    pub const PRODUCER: u64 = OFF.producer;
    pub const CONSUMER: u64 = OFF.consumer;
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeRing, CONSUMER, PRODUCER};

    #[test]
    fn producer_fills_submits_and_waits_for_the_consumer() {
        let m = FakeRing::<u64>::new(4);
        let mut ring = m.producer();
        for v in 10..14 {
            assert!(ring.push(v));
        }
        assert!(!ring.push(99), "a full ring refuses");
        assert_eq!(m.counter(PRODUCER), 0, "nothing visible before submit");
        assert_eq!(ring.unsubmitted(), 4);
        ring.submit();
        assert_eq!((m.counter(PRODUCER), ring.unsubmitted(), ring.in_flight()), (4, 0, 4));
        assert_eq!((0..4).map(|i| m.entry(i)).collect::<Vec<_>>(), [10, 11, 12, 13]);
        // The "kernel" consumes two; the producer sees room again and wraps.
        m.set_counter(CONSUMER, 2);
        assert_eq!(ring.free(1), 2);
        assert!(ring.push(14) && ring.push(15) && !ring.push(16));
        ring.submit();
        assert_eq!((m.entry(4), m.entry(5)), (14, 15));
    }

    #[test]
    fn counters_wrap_around_u32() {
        let m = FakeRing::<u64>::new(4);
        m.set_counter(PRODUCER, u32::MAX - 1);
        m.set_counter(CONSUMER, u32::MAX - 1);
        let mut ring = m.producer();
        assert_eq!(ring.free(4), 4);
        for v in 0..4 {
            assert!(ring.push(v));
        }
        ring.submit();
        assert_eq!(m.counter(PRODUCER), 2);
        let mut cons = m.consumer();
        assert_eq!(cons.ready(), 4);
        assert_eq!((0..4).map(|_| cons.pop().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(cons.pop(), None);
        cons.release();
        assert_eq!(m.counter(CONSUMER), 2);
    }

    #[test]
    fn consumer_takes_what_is_published_and_releases_in_one_store() {
        let m = FakeRing::<u64>::new(8);
        let mut ring = m.consumer();
        assert_eq!(ring.pop(), None);
        for v in [7u64, 8, 9] {
            assert!(m.kernel_produce(v));
        }
        assert_eq!(ring.ready(), 3);
        assert_eq!(ring.pop(), Some(7));
        assert_eq!(ring.pop(), Some(8));
        assert_eq!(m.counter(CONSUMER), 0, "not released yet");
        ring.release();
        assert_eq!(m.counter(CONSUMER), 2);
        assert_eq!(ring.pop(), Some(9));
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn the_wakeup_flag_is_read_from_the_flags_word() {
        let m = FakeRing::<u64>::new(4);
        let ring = m.producer();
        assert!(!ring.needs_wakeup());
        m.set_need_wakeup(true);
        assert!(ring.needs_wakeup());
    }
}
