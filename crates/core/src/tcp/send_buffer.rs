//! The send buffer: bytes the application has written and the peer has not
//! yet acknowledged, in a ring whose pages are chunks of the stack's
//! [`BufferPool`].
//!
//! Byte 0 of the buffer is the oldest unacknowledged byte; the connection
//! maps sequence numbers onto offsets. A chunk is taken when the first byte
//! is written into it and given back as soon as every byte in it is
//! acknowledged, so an idle connection holds no buffer memory.

use super::pool::{BufferPool, ChunkRing};

#[derive(Debug)]
pub(crate) struct SendBuffer {
    ring: ChunkRing,
    len: u32,
}

impl SendBuffer {
    pub(crate) fn new(capacity: usize) -> SendBuffer {
        SendBuffer { ring: ChunkRing::new(capacity), len: 0 }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn free(&self) -> usize {
        self.ring.capacity() - self.len()
    }

    pub(crate) fn chunks_held(&self) -> usize {
        self.ring.chunks_held()
    }

    /// Appends as much of `data` as fits (in the capacity and in the pool);
    /// returns how much that was.
    pub(crate) fn push(&mut self, data: &[u8], pool: &mut BufferPool) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        let keep = pool.send_reserve();
        let n = self.ring.write(self.len(), &data[..n], pool, keep);
        self.len += n as u32;
        n
    }

    /// Drops the oldest `n` bytes (they were acknowledged); emptied chunks go
    /// back to the pool.
    pub(crate) fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        let n = n.min(self.len());
        if n == 0 {
            return;
        }
        self.len -= n as u32;
        self.ring.advance(n, self.len(), pool);
    }

    /// Copies bytes `offset..offset + dst.len()` into `dst`; bytes past the end
    /// of the buffer are left untouched. Returns how many were copied.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8], pool: &BufferPool) -> usize {
        if offset >= self.len() {
            return 0;
        }
        let n = dst.len().min(self.len() - offset);
        self.ring.read(offset, &mut dst[..n], pool);
        n
    }

    pub(crate) fn release(&mut self, pool: &mut BufferPool) {
        self.ring.release(pool);
        self.len = 0;
    }
}

impl SendBuffer {
    /// Its bytes out of `pool`, to move with its connection (see `ChunkRing::detach`).
    pub(crate) fn detach(&mut self, pool: &mut BufferPool) -> super::pool::DetachedPages {
        self.ring.detach(pool)
    }

    /// Its bytes back, into chunks of `pool` (see `ChunkRing::attach`).
    pub(crate) fn attach(
        &mut self,
        d: super::pool::DetachedPages,
        pool: &mut BufferPool,
    ) -> Result<(), super::pool::DetachedPages> {
        self.ring.attach(d, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::SendBuffer;
    use crate::tcp::pool::BufferPool;

    #[test]
    fn sends_leave_an_eighth_of_the_pool_for_receiving() {
        let mut pool = BufferPool::new(1024, 8 * 1024);
        let mut b = SendBuffer::new(64 * 1024);
        assert_eq!(b.push(&[1u8; 16 * 1024], &mut pool), 7 * 1024);
        assert_eq!(pool.available(), 1, "one chunk kept for receive buffers");
    }

    #[test]
    fn wraps_around() {
        let mut pool = BufferPool::new(1024, 1 << 20);
        let mut b = SendBuffer::new(8);
        assert_eq!(b.push(b"abcdef", &mut pool), 6);
        b.consume(4, &mut pool);
        assert_eq!(b.push(b"ghijklmn", &mut pool), 6);
        assert_eq!(b.len(), 8);
        let mut out = [0u8; 8];
        assert_eq!(b.copy_out(0, &mut out, &pool), 8);
        assert_eq!(&out, b"efghijkl");
        let mut out = [0u8; 4];
        assert_eq!(b.copy_out(6, &mut out, &pool), 2);
        assert_eq!(&out[..2], b"kl");
        b.consume(8, &mut pool);
        assert_eq!(pool.in_use(), 0);
    }
}
