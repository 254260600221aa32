//! A bounded pool of fixed-size frame buffers that recycles them on drop.
//!
//! A [`Frame`] is an owned value: it holds its buffer and a handle to the pool
//! it came from, and gives the buffer back when dropped. There is no manual
//! free to forget, so a frame can never leak out of the pool's accounting.
//!
//! Buffers are allocated lazily, one at a time, until the pool's bound is
//! reached; after that every [`FramePool::alloc`] is served from the free
//! list, so a link in steady state allocates nothing per packet. When all
//! `capacity` buffers are out, `alloc` returns `None`: the pool never grows
//! past its bound.
//!
//! The pool is single-threaded (`Rc`), like the event loop that drives a device.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

struct PoolInner {
    /// Buffers not in use, each exactly `buf_size` bytes long.
    free: Vec<Box<[u8]>>,
    buf_size: usize,
    capacity: usize,
    /// Buffers allocated so far (in use + free); never exceeds `capacity`.
    allocated: usize,
}

/// A bounded, recycling pool of frame buffers. Cloning gives another handle
/// to the same pool.
#[derive(Clone)]
pub struct FramePool {
    inner: Rc<RefCell<PoolInner>>,
}

impl FramePool {
    /// A pool of at most `capacity` buffers of `buf_size` bytes each. Nothing
    /// is allocated until frames are asked for, except room for the free list.
    pub fn new(buf_size: usize, capacity: usize) -> FramePool {
        FramePool {
            inner: Rc::new(RefCell::new(PoolInner {
                free: Vec::with_capacity(capacity),
                buf_size,
                capacity,
                allocated: 0,
            })),
        }
    }

    /// A frame of `len` bytes (contents unspecified: stale data from an earlier
    /// use, or zeros). `None` when `len` exceeds [`buf_size`](Self::buf_size)
    /// or all `capacity` buffers are in use.
    pub fn alloc(&self, len: usize) -> Option<Frame> {
        let mut inner = self.inner.borrow_mut();
        if len > inner.buf_size {
            return None;
        }
        let buf = match inner.free.pop() {
            Some(buf) => buf,
            None if inner.allocated < inner.capacity => {
                inner.allocated += 1;
                vec![0u8; inner.buf_size].into_boxed_slice()
            }
            None => return None,
        };
        drop(inner);
        Some(Frame { buf: Some(buf), len, pool: Rc::clone(&self.inner) })
    }

    /// Allocate buffers now, up to `n` in all (never past the bound), so that
    /// later `alloc`s never allocate. For benchmarks that must not see a
    /// lazy allocation at a new peak of frames in use.
    pub fn prefill(&self, n: usize) {
        let mut inner = self.inner.borrow_mut();
        while inner.allocated < n.min(inner.capacity) {
            let buf = vec![0u8; inner.buf_size].into_boxed_slice();
            inner.free.push(buf);
            inner.allocated += 1;
        }
    }

    /// Size of every buffer: the largest frame this pool can hold.
    pub fn buf_size(&self) -> usize {
        self.inner.borrow().buf_size
    }

    /// Most buffers this pool will ever hold.
    pub fn capacity(&self) -> usize {
        self.inner.borrow().capacity
    }

    /// Buffers allocated so far (in use and free).
    pub fn allocated(&self) -> usize {
        self.inner.borrow().allocated
    }

    /// Buffers ready to be handed out without allocating.
    pub fn free(&self) -> usize {
        self.inner.borrow().free.len()
    }

    /// Frames currently out of the pool.
    pub fn in_use(&self) -> usize {
        let inner = self.inner.borrow();
        inner.allocated - inner.free.len()
    }
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("FramePool")
            .field("buf_size", &inner.buf_size)
            .field("capacity", &inner.capacity)
            .field("allocated", &inner.allocated)
            .field("free", &inner.free.len())
            .finish()
    }
}

/// A frame buffer on loan from a [`FramePool`]; returns to it when dropped.
/// Dereferences to its first `len` bytes.
pub struct Frame {
    /// Always `Some` until `drop` takes it back to the pool.
    buf: Option<Box<[u8]>>,
    len: usize,
    pool: Rc<RefCell<PoolInner>>,
}

impl Frame {
    /// Length of the frame in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Largest length this frame's buffer can take.
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }

    /// Shorten or lengthen the frame within its buffer. Returns `false` (and
    /// changes nothing) if `len` exceeds [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        self.len = len;
        true
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf[..self.len],
            None => &[],
        }
    }
}

impl DerefMut for Frame {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(buf) => &mut buf[..self.len],
            None => &mut [],
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The free list was sized for `capacity` buffers up front, so this
            // push never reallocates. A pool that is being torn down at the same
            // time cannot be borrowed already: both live on this thread and no
            // pool method holds the borrow across a call that could drop a frame.
            self.pool.borrow_mut().free.push(buf);
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_frame_returns_to_pool() {
        let pool = FramePool::new(64, 4);
        let mut frame = pool.alloc(10).unwrap();
        frame.copy_from_slice(&[7; 10]);
        assert_eq!((pool.allocated(), pool.in_use(), pool.free()), (1, 1, 0));
        drop(frame);
        assert_eq!((pool.allocated(), pool.in_use(), pool.free()), (1, 0, 1));
        // The same buffer comes back: no new allocation, stale contents kept.
        let frame = pool.alloc(10).unwrap();
        assert_eq!(pool.allocated(), 1);
        assert_eq!(&frame[..], &[7; 10]);
    }

    #[test]
    fn pool_is_bounded() {
        let pool = FramePool::new(64, 3);
        let frames: Vec<Frame> = (0..3).map(|_| pool.alloc(64).unwrap()).collect();
        assert!(pool.alloc(1).is_none(), "a fourth frame must be refused");
        assert_eq!(pool.allocated(), 3);
        drop(frames);
        assert_eq!(pool.free(), 3);
        for _ in 0..100 {
            let a = pool.alloc(1).unwrap();
            let b = pool.alloc(1).unwrap();
            drop((a, b));
        }
        assert_eq!(pool.allocated(), 3, "recycling never allocates past the bound");
    }

    #[test]
    fn prefill_allocates_up_front_within_bound() {
        let pool = FramePool::new(16, 4);
        pool.prefill(2);
        assert_eq!((pool.allocated(), pool.free()), (2, 2));
        pool.prefill(10);
        assert_eq!((pool.allocated(), pool.free()), (4, 4));
        let frames: Vec<Frame> = (0..4).map(|_| pool.alloc(16).unwrap()).collect();
        assert_eq!(pool.allocated(), 4);
        drop(frames);
    }

    #[test]
    fn oversized_request_refused() {
        let pool = FramePool::new(64, 3);
        assert!(pool.alloc(65).is_none());
        let mut frame = pool.alloc(64).unwrap();
        assert!(!frame.set_len(65));
        assert!(frame.set_len(20));
        assert_eq!(frame.len(), 20);
    }

    #[test]
    fn frame_outlives_pool_handle() {
        let pool = FramePool::new(8, 1);
        let frame = pool.alloc(8).unwrap();
        drop(pool);
        assert_eq!(frame.len(), 8);
        drop(frame); // returns to the pool's storage, which the frame kept alive
    }
}
